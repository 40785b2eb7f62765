//! Checking attribute values against a class's schema (built-in and declared attributes):
//! unknown attributes are refused, every value is typed, required ones are present.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use serde_json::Value;

use super::builtin::{AttrType, MAX_ATTRIBUTES, MAX_LIST_ITEMS, MAX_SERVICE_INTERVALS, MAX_TEXT_BYTES};
use super::registry::{AttrRef, DeclaredType, SchemaRegistry};
use crate::ci::CiError;
use crate::model::CiClass;

fn text_ok(text: &str) -> Result<(), String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!("{} bytes; the bound is {MAX_TEXT_BYTES} (max_text_bytes)", text.len()));
    }
    Ok(())
}

fn date_ok(text: &str) -> bool {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

fn url_ok(text: &str) -> bool {
    ["http://", "https://", "ssh://", "git@", "git://"].iter().any(|p| text.starts_with(p))
        && text.len() > 8
        && !text.chars().any(char::is_whitespace)
}

fn hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    // 24:00 is allowed as an end.
    ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
}

fn service_hours_ok(value: &Value) -> Result<(), String> {
    let object = value.as_object().ok_or("not an object")?;
    if let Some(extra) = object.keys().find(|k| *k != "time_zone" && *k != "weekly") {
        return Err(format!("unknown key {extra:?}"));
    }
    let zone = object
        .get("time_zone")
        .and_then(Value::as_str)
        .ok_or("time_zone (an IANA zone such as Europe/Berlin) is missing")?;
    chrono_tz::Tz::from_str(zone).map_err(|_| format!("{zone:?} is not an IANA time zone"))?;
    let weekly = object.get("weekly").and_then(Value::as_array).ok_or("weekly (a list of intervals) is missing")?;
    if weekly.is_empty() || weekly.len() > MAX_SERVICE_INTERVALS {
        return Err(format!("weekly must hold 1 to {MAX_SERVICE_INTERVALS} intervals"));
    }
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    for (index, interval) in weekly.iter().enumerate() {
        let days =
            interval.get("days").and_then(Value::as_array).ok_or(format!("interval {index}: days is missing"))?;
        if days.is_empty() || days.iter().any(|d| d.as_str().is_none_or(|d| !DAYS.contains(&d))) {
            return Err(format!(
                "interval {index}: days must be a non-empty list of mon, tue, wed, thu, fri, sat, sun"
            ));
        }
        let start = interval.get("start").and_then(Value::as_str).and_then(hhmm);
        let end = interval.get("end").and_then(Value::as_str).and_then(hhmm);
        match (start, end) {
            (Some(start), Some(end)) if start < end => {}
            _ => return Err(format!("interval {index}: start and end must be HH:MM with start before end")),
        }
    }
    Ok(())
}

/// A type to check a value against: the built-in and declared types meet here.
enum Check<'a> {
    Text,
    Integer { min: i64, max: i64 },
    Number { min: f64, max: f64 },
    Boolean,
    Choice(Vec<&'a str>),
    TextList,
    IpAddressList,
    Date,
    Url,
    ServiceHours,
}

impl<'a> Check<'a> {
    fn of(attribute: &AttrRef<'a>) -> Check<'a> {
        match attribute {
            AttrRef::Builtin(spec) => match spec.attr_type {
                AttrType::Text => Check::Text,
                AttrType::Integer { min, max } => Check::Integer { min, max },
                AttrType::Number { min, max } => Check::Number { min, max },
                AttrType::Boolean => Check::Boolean,
                AttrType::Choice(choices) => Check::Choice(choices.to_vec()),
                AttrType::TextList => Check::TextList,
                AttrType::IpAddressList => Check::IpAddressList,
                AttrType::Date => Check::Date,
                AttrType::Url => Check::Url,
                AttrType::ServiceHours => Check::ServiceHours,
            },
            AttrRef::Declared(declared) => match &declared.attr_type {
                DeclaredType::Text => Check::Text,
                DeclaredType::Integer { min, max } => Check::Integer { min: *min, max: *max },
                DeclaredType::Number { min, max } => Check::Number { min: *min, max: *max },
                DeclaredType::Boolean => Check::Boolean,
                DeclaredType::Choice { choices } => Check::Choice(choices.iter().map(String::as_str).collect()),
                DeclaredType::TextList => Check::TextList,
                DeclaredType::IpAddressList => Check::IpAddressList,
                DeclaredType::Date => Check::Date,
                DeclaredType::Url => Check::Url,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Check::Text => "text".into(),
            Check::Integer { min, max } => format!("an integer from {min} to {max}"),
            Check::Number { min, max } => format!("a number from {min} to {max}"),
            Check::Boolean => "true or false".into(),
            Check::Choice(choices) => format!("one of {}", choices.join(", ")),
            Check::TextList => "a list of text".into(),
            Check::IpAddressList => "a list of IP addresses".into(),
            Check::Date => "a date YYYY-MM-DD".into(),
            Check::Url => "a URL (http, https, ssh or git)".into(),
            Check::ServiceHours => AttrType::ServiceHours.describe(),
        }
    }

    fn check(&self, value: &Value) -> Result<(), String> {
        match self {
            Check::Text => value.as_str().ok_or_else(|| "not text".to_string()).and_then(text_ok),
            Check::Integer { min, max } => match value.as_i64() {
                Some(n) if (*min..=*max).contains(&n) => Ok(()),
                Some(n) => Err(format!("{n} is out of range")),
                None => Err("not an integer".into()),
            },
            Check::Number { min, max } => match value.as_f64() {
                Some(n) if n >= *min && n <= *max => Ok(()),
                Some(n) => Err(format!("{n} is out of range")),
                None => Err("not a number".into()),
            },
            Check::Boolean => {
                if value.is_boolean() {
                    Ok(())
                } else {
                    Err("not a boolean".into())
                }
            }
            Check::Choice(choices) => match value.as_str() {
                Some(text) if choices.contains(&text) => Ok(()),
                _ => Err(format!("{value} is not one of the choices")),
            },
            Check::TextList | Check::IpAddressList => {
                let items = value.as_array().ok_or("not a list")?;
                if items.len() > MAX_LIST_ITEMS {
                    return Err(format!("{} items; the bound is {MAX_LIST_ITEMS} (max_list_items)", items.len()));
                }
                for item in items {
                    let text = item.as_str().ok_or_else(|| format!("{item} is not text"))?;
                    text_ok(text)?;
                    if matches!(self, Check::IpAddressList) && IpAddr::from_str(text).is_err() {
                        return Err(format!("{text:?} is not an IP address"));
                    }
                }
                Ok(())
            }
            Check::Date => match value.as_str() {
                Some(text) if date_ok(text) => Ok(()),
                _ => Err(format!("{value} is not a date YYYY-MM-DD")),
            },
            Check::Url => match value.as_str() {
                Some(text) if url_ok(text) && text.len() <= MAX_TEXT_BYTES => Ok(()),
                _ => Err(format!("{value} is not a URL")),
            },
            Check::ServiceHours => service_hours_ok(value),
        }
    }
}

/// Checks one attribute value against the class's schema in `registry`.
pub fn check_value(registry: &SchemaRegistry, class: CiClass, name: &str, value: &Value) -> Result<(), CiError> {
    let attribute = registry.attribute(class, name).ok_or_else(|| CiError::UnknownAttribute {
        class,
        attribute: name.to_owned(),
        known: registry.attributes(class).iter().map(|a| a.name().to_owned()).collect::<Vec<_>>().join(", "),
    })?;
    let check = Check::of(&attribute);
    check.check(value).map_err(|detail| CiError::InvalidAttribute {
        class,
        attribute: name.to_owned(),
        expected: check.describe(),
        detail,
    })
}

/// Checks a complete attribute set (registration): every value typed, every required present.
pub fn check_complete(
    registry: &SchemaRegistry,
    class: CiClass,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), CiError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(CiError::TooManyAttributes { count: attributes.len() });
    }
    // Every fault at once: each value's, then each required attribute missing.
    let mut problems = crate::problems::Problems::new();
    for (name, value) in attributes {
        problems.check(check_value(registry, class, name, value));
    }
    for missing in registry.attributes(class).into_iter().filter(|a| a.required() && !attributes.contains_key(a.name()))
    {
        problems.push(CiError::MissingAttribute {
            class,
            attribute: missing.name().to_owned(),
            expected: Check::of(&missing).describe(),
        });
    }
    problems.finish(|problems| CiError::Invalid { problems })
}

#[cfg(test)]
mod tests {
    use super::super::builtin::{COMMON_ATTRIBUTES, class_attributes};
    use super::*;
    use crate::ci::tests::attrs;
    use serde_json::json;

    #[test]
    fn a_complete_host_passes_and_each_fault_is_named() {
        let host = json!({"hostname": "web-01", "ip_addresses": ["10.0.0.1", "fe80::1"], "os": "debian-12", "cpu_cores": 8, "memory_mib": 32768});
        assert_eq!(check_complete(&SchemaRegistry::default(), CiClass::Host, &attrs(host.clone())), Ok(()));
        let mut missing = attrs(host.clone());
        missing.remove("os");
        assert!(
            matches!(check_complete(&SchemaRegistry::default(), CiClass::Host, &missing), Err(CiError::MissingAttribute { attribute, .. }) if attribute == "os")
        );
        let mut mistyped = attrs(host.clone());
        mistyped.insert("cpu_cores".into(), json!("eight"));
        let error = check_complete(&SchemaRegistry::default(), CiClass::Host, &mistyped).expect_err("mistyped");
        assert!(error.to_string().contains("cpu_cores") && error.to_string().contains("integer"), "{error}");
        let mut bad_ip = attrs(host.clone());
        bad_ip.insert("ip_addresses".into(), json!(["10.0.0.300"]));
        assert!(check_complete(&SchemaRegistry::default(), CiClass::Host, &bad_ip).is_err());
        let mut unknown = attrs(host);
        unknown.insert("colour".into(), json!("red"));
        let error = check_complete(&SchemaRegistry::default(), CiClass::Host, &unknown).expect_err("unknown");
        assert!(matches!(error, CiError::UnknownAttribute { .. }));
        assert!(error.to_string().contains("hostname"), "lists the known ones: {error}");
    }

    #[test]
    fn service_hours_need_a_real_zone_and_sane_intervals() {
        let good = json!({"time_zone": "Europe/Berlin", "weekly": [{"days": ["mon","tue","wed","thu","fri"], "start": "08:00", "end": "18:00"}]});
        assert!(check_value(&SchemaRegistry::default(), CiClass::BusinessService, "service_hours", &good).is_ok());
        let all_day = json!({"time_zone": "UTC", "weekly": [{"days": ["sun"], "start": "00:00", "end": "24:00"}]});
        assert!(check_value(&SchemaRegistry::default(), CiClass::BusinessService, "service_hours", &all_day).is_ok());
        for bad in [
            json!({"time_zone": "Mars/Olympus", "weekly": [{"days": ["mon"], "start": "08:00", "end": "18:00"}]}),
            json!({"time_zone": "UTC", "weekly": []}),
            json!({"time_zone": "UTC", "weekly": [{"days": ["monday"], "start": "08:00", "end": "18:00"}]}),
            json!({"time_zone": "UTC", "weekly": [{"days": ["mon"], "start": "18:00", "end": "08:00"}]}),
            json!({"time_zone": "UTC", "weekly": [{"days": ["mon"], "start": "8:00", "end": "18:00"}]}),
            json!("24x7"),
        ] {
            assert!(
                check_value(&SchemaRegistry::default(), CiClass::BusinessService, "service_hours", &bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn tiers_are_one_to_four() {
        for (tier, ok) in [(0, false), (1, true), (4, true), (5, false)] {
            assert_eq!(
                check_value(&SchemaRegistry::default(), CiClass::BusinessService, "criticality_tier", &json!(tier))
                    .is_ok(),
                ok,
                "{tier}"
            );
        }
    }

    #[test]
    fn every_class_has_a_schema_without_duplicate_names() {
        for class in CiClass::BUILTIN {
            let mut names: Vec<&str> =
                class_attributes(*class).iter().chain(COMMON_ATTRIBUTES).map(|s| s.name).collect();
            let total = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), total, "{class}");
        }
    }
}
