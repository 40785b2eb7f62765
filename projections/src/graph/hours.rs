//! Service hours read from `service_hours` attribute values, shared by pattern (CH-2).
//!
//! Business services share a few weekly patterns. Reading one from its JSON value costs more
//! than comparing the value with those already read, and an assessment compares each listed
//! service's hours with the change's window: services of one pattern share one
//! [`ServiceHours`], compared by pointer first.

use std::sync::Arc;

use cmdb_core::change::risk::{MAX_HOURS_PATTERNS, ServiceHours};

/// The patterns read so far, at most [`MAX_HOURS_PATTERNS`]; beyond, each value is read on its own.
#[derive(Clone, Debug, Default)]
pub(crate) struct HoursPatterns(Vec<(serde_json::Value, Option<Arc<ServiceHours>>)>);

impl HoursPatterns {
    /// The hours `value` holds (none if it is not a valid `service_hours` value), shared with
    /// the services of the same pattern read before.
    pub(crate) fn read(&mut self, value: &serde_json::Value) -> Option<Arc<ServiceHours>> {
        if let Some(hours) = self.known(value) {
            return hours;
        }
        self.read_new(value)
    }

    /// The hours of `value` if it is a pattern read before (`Some(None)`: read, and not valid).
    pub(crate) fn known(&self, value: &serde_json::Value) -> Option<Option<Arc<ServiceHours>>> {
        self.0.iter().find(|(known, _)| known == value).map(|(_, hours)| hours.clone())
    }

    /// Reads `value`, not among the patterns, and keeps it if there is room.
    fn read_new(&mut self, value: &serde_json::Value) -> Option<Arc<ServiceHours>> {
        let hours = ServiceHours::from_attribute(value).map(Arc::new);
        if self.0.len() < MAX_HOURS_PATTERNS {
            self.0.push((value.clone(), hours.clone()));
        }
        debug_assert!(self.0.len() <= MAX_HOURS_PATTERNS, "the patterns stay bounded");
        hours
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office(zone: &str) -> serde_json::Value {
        serde_json::json!({"time_zone": zone, "weekly": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]})
    }

    #[test]
    fn one_pattern_is_read_once_and_shared() {
        let mut patterns = HoursPatterns::default();
        let first = patterns.read(&office("UTC")).expect("a valid pattern");
        let again = patterns.read(&office("UTC")).expect("the same pattern");
        assert!(Arc::ptr_eq(&first, &again));
        let other = patterns.read(&office("Europe/Paris")).expect("another pattern");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(patterns.read(&serde_json::json!("always")), None, "not a service_hours value");
    }

    #[test]
    fn past_the_bound_values_are_still_read_but_not_kept() {
        let mut patterns = HoursPatterns::default();
        for n in 0..MAX_HOURS_PATTERNS + 3 {
            let mut value = office(&format!("Etc/GMT+{}", n % 12));
            value["weekly"][0]["start"] = serde_json::json!(format!("09:{:02}", n));
            assert!(patterns.read(&value).is_some(), "pattern {n} read");
        }
        assert_eq!(patterns.0.len(), MAX_HOURS_PATTERNS);
    }
}
