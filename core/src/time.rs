//! Time as the log sees it: UTC microseconds since the Unix epoch, from an injected [`Clock`]
//! so that tests are deterministic.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision, stored as i64 microseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A string that is not an RFC 3339 timestamp, or one outside the representable range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp (e.g. 2026-11-25T09:30:00Z): {input:?}")]
pub struct TimestampParseError {
    /// The text given.
    pub input: String,
}

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// From microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// From a `chrono` time.
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Timestamp(at.timestamp_micros())
    }

    /// The instant as a chrono value; `None` only for values outside chrono's range
    /// (about +/- 262,000 years), which the store never produces.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(self.0).single()
    }

    /// RFC 3339 with microseconds and a `Z` suffix, e.g. `2026-11-25T09:30:00.000000Z`.
    pub fn to_rfc3339(self) -> String {
        match self.to_datetime() {
            Some(at) => at.to_rfc3339_opts(SecondsFormat::Micros, true),
            None => format!("@{}us", self.0),
        }
    }

    /// Parses RFC 3339 (any offset; converted to UTC). Sub-microsecond digits are truncated.
    pub fn parse_rfc3339(input: &str) -> Result<Self, TimestampParseError> {
        DateTime::parse_from_rfc3339(input.trim())
            .map(|at| Timestamp(at.with_timezone(&Utc).timestamp_micros()))
            .map_err(|_| TimestampParseError { input: input.to_owned() })
    }

    /// Moved by `micros`, saturating.
    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Timestamp(self.0.saturating_add(micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = TimestampParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(s)
    }
}

/// RFC 3339 text in human-readable formats (JSON), i64 microseconds in binary ones
/// (projection checkpoints).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_rfc3339())
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(Timestamp)
        }
    }
}

/// Where "now" comes from. Injected everywhere so tests can pin time.
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(Utc::now())
    }
}

/// A clock that only moves when told to: for deterministic tests.
#[derive(Debug)]
pub struct ManualClock {
    now_micros: AtomicI64,
}

impl ManualClock {
    /// A new one.
    pub fn new(start: Timestamp) -> Self {
        ManualClock { now_micros: AtomicI64::new(start.as_micros()) }
    }

    /// Sets the time.
    pub fn set(&self, at: Timestamp) {
        self.now_micros.store(at.as_micros(), Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance_micros(&self, micros: i64) {
        self.now_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.now_micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_microseconds() {
        let at = Timestamp::parse_rfc3339("2026-11-25T09:30:00.123456Z").expect("valid");
        assert_eq!(at.to_rfc3339(), "2026-11-25T09:30:00.123456Z");
        let offset = Timestamp::parse_rfc3339("2026-11-25T10:30:00.123456+01:00").expect("valid");
        assert_eq!(at, offset);
    }

    #[test]
    fn bad_timestamps_are_refused_with_the_input_named() {
        let err = Timestamp::parse_rfc3339("yesterday").expect_err("invalid");
        assert!(err.to_string().contains("yesterday"));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_micros(10));
        assert_eq!(clock.now(), Timestamp::from_micros(10));
        clock.advance_micros(5);
        assert_eq!(clock.now(), Timestamp::from_micros(15));
    }
}
