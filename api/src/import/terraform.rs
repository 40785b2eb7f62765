//! Terraform state (format 4, written by Terraform 0.12 and later): every instance of every
//! managed resource becomes an item addressed as Terraform addresses it
//! (`module.net.aws_subnet.private[1]`), with the instance's scalar attributes as fields;
//! each recorded dependency becomes a `depends_on` relationship. Data sources are reads, not
//! things that exist, and are skipped. The state's lineage is the run's scope.
//!
//! The state is read as a stream: one resource is held at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Carried, FileFacts, ImportError, RawItem, RawRelationship, Sink, put_text};

/// The only state format read.
pub const SUPPORTED_FORMAT: u64 = 4;

/// Reads a state file.
pub fn read(input: impl BufRead, sink: &mut dyn Sink) -> Result<FileFacts, ImportError> {
    let mut carried = Carried(None);
    let mut header = Header::default();
    let mut deserializer = serde_json::Deserializer::from_reader(input);
    let visitor = StateVisitor { sink, carried: &mut carried, header: &mut header };
    if let Err(error) = deserializer.deserialize_map_with(visitor) {
        return Err(carried.or("Terraform state JSON", &error));
    }
    deserializer.end().map_err(|e| super::json_error("Terraform state JSON", &e))?;
    check_header(&header)?;
    Ok(FileFacts { scope: header.lineage, observed_at: None })
}

#[derive(Debug, Default)]
struct Header {
    version: Option<u64>,
    terraform_version: Option<String>,
    lineage: Option<String>,
}

fn check_header(header: &Header) -> Result<(), ImportError> {
    let Some(version) = header.version else {
        return Err(ImportError::Invalid("the file has no \"version\": it is not a Terraform state".into()));
    };
    if version != SUPPORTED_FORMAT {
        return Err(ImportError::Unsupported(format!(
            "Terraform state format {version} is not supported; only format {SUPPORTED_FORMAT} (Terraform 0.12 and later) is read: run `terraform state pull` with a current Terraform to upgrade it"
        )));
    }
    if let Some(tf) = &header.terraform_version
        && let Some((major, minor)) = major_minor(tf)
        && (major, minor) < (0, 12)
    {
        return Err(ImportError::Unsupported(format!(
            "the state says format 4 but was written by Terraform {tf}; format 4 is written by Terraform 0.12 and later, so the file is not a state Terraform wrote"
        )));
    }
    Ok(())
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

trait DeserializeMapWith<'de> {
    fn deserialize_map_with<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, serde_json::Error>;
}

impl<'de, R: serde_json::de::Read<'de>> DeserializeMapWith<'de> for serde_json::Deserializer<R> {
    fn deserialize_map_with<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, serde_json::Error> {
        serde::Deserializer::deserialize_map(self, visitor)
    }
}

struct StateVisitor<'a> {
    sink: &'a mut dyn Sink,
    carried: &'a mut Carried,
    header: &'a mut Header,
}

impl<'de> Visitor<'de> for StateVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Terraform state object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => self.header.version = Some(map.next_value()?),
                "terraform_version" => self.header.terraform_version = map.next_value()?,
                "lineage" => self.header.lineage = map.next_value()?,
                "resources" => map.next_value_seed(Resources { sink: &mut *self.sink, carried: &mut *self.carried })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Resources<'a> {
    sink: &'a mut dyn Sink,
    carried: &'a mut Carried,
}

impl<'de> DeserializeSeed<'de> for Resources<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Resources<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of resources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(resource) = seq.next_element::<Resource>()? {
            if let Err(error) = emit(&resource, self.sink) {
                return Err(self.carried.stop(error));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    module: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(rename = "type")]
    resource_type: String,
    name: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    instances: Vec<Instance>,
}

#[derive(Deserialize)]
struct Instance {
    #[serde(default)]
    index_key: Option<Value>,
    #[serde(default)]
    attributes: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// The resource's address without an instance key.
fn resource_address(resource: &Resource) -> String {
    match &resource.module {
        Some(module) if !module.is_empty() => format!("{module}.{}.{}", resource.resource_type, resource.name),
        _ => format!("{}.{}", resource.resource_type, resource.name),
    }
}

/// `provider["registry.terraform.io/hashicorp/aws"]` (or `provider.aws`) as the provider's name.
fn provider_name(provider: &str) -> &str {
    let inner = provider.strip_prefix("provider[\"").and_then(|p| p.split_once("\"]")).map(|(name, _)| name);
    inner.or_else(|| provider.strip_prefix("provider.")).unwrap_or(provider)
}

fn emit(resource: &Resource, sink: &mut dyn Sink) -> Result<(), ImportError> {
    if resource.mode.as_deref() == Some("data") {
        return Ok(());
    }
    let base = resource_address(resource);
    for instance in &resource.instances {
        let address = match &instance.index_key {
            Some(Value::Number(n)) => format!("{base}[{n}]"),
            Some(Value::String(key)) => format!("{base}[{}]", serde_json::to_string(key).unwrap_or_default()),
            _ => base.clone(),
        };
        let mut fields = BTreeMap::new();
        if let Some(attributes) = &instance.attributes {
            for (name, value) in attributes {
                if matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    fields.insert(name.clone(), value.clone());
                }
            }
        }
        fields.insert("address".into(), Value::String(address.clone()));
        fields.insert("type".into(), Value::String(resource.resource_type.clone()));
        fields.insert("resource_name".into(), Value::String(resource.name.clone()));
        put_text(&mut fields, "module", resource.module.as_deref());
        put_text(&mut fields, "provider", resource.provider.as_deref().map(provider_name));
        for dependency in &instance.dependencies {
            sink.relationship(RawRelationship {
                kind: "depends_on".into(),
                from: address.clone(),
                to: dependency.clone(),
            })?;
        }
        sink.item(RawItem { source_type: resource.resource_type.clone(), local_ref: address, fields })?;
    }
    Ok(())
}

/// The references an item answers to besides its own: a resource's address without an
/// instance key names its instances (dependencies are recorded per resource).
pub fn aliases(local_ref: &str) -> Option<&str> {
    local_ref.ends_with(']').then(|| local_ref.rfind('[').map(|i| &local_ref[..i])).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::Counter;

    #[test]
    fn provider_names_are_read_from_both_notations() {
        assert_eq!(
            provider_name("provider[\"registry.terraform.io/hashicorp/aws\"]"),
            "registry.terraform.io/hashicorp/aws"
        );
        assert_eq!(provider_name("provider.aws"), "aws");
        assert_eq!(aliases("aws_subnet.a[1]"), Some("aws_subnet.a"));
        assert_eq!(aliases("aws_subnet.a"), None);
    }

    #[test]
    fn older_formats_are_refused_naming_the_version() {
        let state = br#"{"version": 3, "terraform_version": "0.11.14", "serial": 1, "modules": []}"#;
        let error = read(&state[..], &mut Counter::default()).expect_err("format 3");
        assert!(error.to_string().contains("format 3 is not supported"), "{error}");
        let not_state = br#"{"resources": []}"#;
        assert!(read(&not_state[..], &mut Counter::default()).is_err());
        let truncated = br#"{"version": 4, "resources": [{"type": "a", "name": "b", "instances": ["#;
        let error = read(&truncated[..], &mut Counter::default()).expect_err("truncated");
        assert!(matches!(error, ImportError::Syntax { .. }), "{error}");
    }
}
