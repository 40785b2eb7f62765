//! Freeze (blackout) windows (CH-5): intervals or recurrences (RFC 5545 RRULE, expanded with
//! the `rrule` crate in the freeze's own IANA time zone, so "every Friday 18:00 Berlin" stays
//! 18:00 Berlin across daylight-saving changes), for everything, one environment or one
//! business service (and whatever reaches it). Created and lifted by events on one stream,
//! `change-freezes`. A normal change cannot be scheduled into a freeze that covers its scope;
//! standard changes follow a setting; emergency changes pass and are flagged.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{NaiveDateTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::ci::{CiId, Environment};
use crate::event::{FoldRecord, Metadata, NewEvent, StreamId};
use crate::time::Timestamp;

use super::{At, ChangeError, Window};

/// The stream holding every freeze window.
pub const FREEZES_STREAM: &str = "change-freezes";
/// Longest freeze interval, in hours (a quarter).
pub const MAX_FREEZE_INTERVAL_HOURS: i64 = 92 * 24;
/// Longest occurrence of a recurring freeze, in minutes (a week).
pub const MAX_FREEZE_OCCURRENCE_MINUTES: u32 = 7 * 24 * 60;
/// Longest RRULE text, in bytes.
pub const MAX_RRULE_BYTES: usize = 300;
/// Occurrences expanded for one question (a calendar page, a schedule check).
pub const MAX_OCCURRENCES_PER_QUERY: u16 = 1_000;
/// Freezes in force at once.
pub const MAX_ACTIVE_FREEZES: usize = 1_000;
/// Longest freeze name, in bytes.
pub const MAX_FREEZE_NAME_BYTES: usize = 100;

/// The stream holding every freeze window.
pub fn freezes_stream() -> StreamId {
    StreamId::new(FREEZES_STREAM).expect("the freezes stream id is valid")
}

pub use crate::ids::FreezeId;

/// What a freeze covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FreezeScope {
    /// Every change.
    Global,
    /// Changes with a CI in this environment in scope.
    /// CIs in one environment.
    Environment {
        /// The environment.
        environment: Environment,
    },
    /// Changes whose scope is, or reaches downstream, this business service.
    /// A business service and what reaches it.
    Service {
        /// The business service.
        service: CiId,
    },
}

/// When a freeze holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FreezeSchedule {
    /// One interval.
    Interval {
        /// Where it starts.
        start: Timestamp,
        /// Where it ends.
        end: Timestamp,
    },
    /// Occurrences start at `start_local` (YYYY-MM-DDTHH:MM wall-clock time in `time_zone`) and
    /// repeat by `rrule` (e.g. `FREQ=WEEKLY;BYDAY=FR`), each lasting `duration_minutes`.
    Recurring {
        /// An RFC 5545 recurrence rule.
        rrule: String,
        /// The first occurrence's start, as wall-clock time in the zone.
        start_local: String,
        /// An IANA time zone name.
        time_zone: String,
        /// How long each occurrence lasts, in minutes.
        duration_minutes: u32,
    },
}

impl FreezeSchedule {
    fn rrule_set(&self) -> Result<Option<rrule::RRuleSet>, ChangeError> {
        let FreezeSchedule::Recurring { rrule, start_local, time_zone, .. } = self else { return Ok(None) };
        let bad = |why: String| ChangeError::InvalidRecurrence(why);
        let zone = chrono_tz::Tz::from_str(time_zone).map_err(|_| ChangeError::UnknownTimeZone(time_zone.clone()))?;
        let rule = rrule.trim().trim_start_matches("RRULE:");
        if rule.is_empty() || rule.len() > MAX_RRULE_BYTES {
            return Err(bad(format!("the rule must be 1 to {MAX_RRULE_BYTES} bytes")));
        }
        if !rule.chars().all(|c| c.is_ascii_alphanumeric() || "=;,:+-".contains(c)) {
            return Err(bad(format!(
                "{rule:?} holds characters an RRULE does not (one rule line, e.g. FREQ=WEEKLY;BYDAY=FR)"
            )));
        }
        let local = NaiveDateTime::parse_from_str(start_local, "%Y-%m-%dT%H:%M")
            .map_err(|_| bad(format!("start_local {start_local:?} is not YYYY-MM-DDTHH:MM")))?;
        if zone.from_local_datetime(&local).earliest().is_none() {
            return Err(bad(format!("{start_local} does not exist in {time_zone} (a daylight-saving gap)")));
        }
        let text = format!("DTSTART;TZID={time_zone}:{}\nRRULE:{rule}", local.format("%Y%m%dT%H%M%S"));
        text.parse::<rrule::RRuleSet>().map(Some).map_err(|e| bad(format!("{rule}: {e}")))
    }

    /// Checks the schedule; the error names what is wrong.
    pub fn validate(&self) -> Result<(), ChangeError> {
        match self {
            FreezeSchedule::Interval { start, end } => {
                if end <= start {
                    return Err(ChangeError::WindowEndsBeforeStart { start: *start, end: *end });
                }
                let hours = (end.as_micros() - start.as_micros()) / 3_600_000_000;
                if hours > MAX_FREEZE_INTERVAL_HOURS {
                    return Err(ChangeError::InvalidRecurrence(format!(
                        "a freeze interval is at most {MAX_FREEZE_INTERVAL_HOURS} hours; this one is {hours}"
                    )));
                }
                Ok(())
            }
            FreezeSchedule::Recurring { duration_minutes, .. } => {
                if *duration_minutes == 0 || *duration_minutes > MAX_FREEZE_OCCURRENCE_MINUTES {
                    return Err(ChangeError::InvalidRecurrence(format!(
                        "duration_minutes must be 1 to {MAX_FREEZE_OCCURRENCE_MINUTES}"
                    )));
                }
                self.rrule_set().map(|_| ())
            }
        }
    }

    /// The occurrences that overlap [from, to), at most `limit` (`true` if cut there).
    pub fn occurrences(
        &self,
        from: Timestamp,
        to: Timestamp,
        limit: u16,
    ) -> Result<(Vec<(Timestamp, Timestamp)>, bool), ChangeError> {
        match self {
            FreezeSchedule::Interval { start, end } => {
                Ok((if *start < to && from < *end { vec![(*start, *end)] } else { Vec::new() }, false))
            }
            FreezeSchedule::Recurring { duration_minutes, .. } => {
                let Some(set) = self.rrule_set()? else { return Ok((Vec::new(), false)) };
                let duration_us = i64::from(*duration_minutes) * 60_000_000;
                let utc = |t: Timestamp| {
                    chrono::DateTime::from_timestamp_micros(t.as_micros())
                        .map(|d| d.with_timezone(&rrule::Tz::UTC))
                        .ok_or_else(|| ChangeError::InvalidRecurrence(format!("{t} is out of range")))
                };
                let result =
                    set.after(utc(from.saturating_add_micros(-duration_us))?).before(utc(to)?).all(limit.max(1));
                let found = result
                    .dates
                    .iter()
                    .map(|d| {
                        let start = Timestamp::from_micros(d.timestamp_micros());
                        (start, start.saturating_add_micros(duration_us))
                    })
                    .filter(|(start, end)| *start < to && from < *end)
                    .collect();
                Ok((found, result.limited))
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A freeze window was created.
pub struct FreezeCreated {
    /// The freeze window.
    pub freeze_id: FreezeId,
    /// The name.
    pub name: String,
    /// The CIs it touches and the CIs it plans.
    pub scope: FreezeScope,
    /// When it applies.
    pub schedule: FreezeSchedule,
    /// Why.
    pub reason: String,
    /// Who did it (a principal name).
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A freeze window was lifted.
pub struct FreezeLifted {
    /// The freeze window.
    pub freeze_id: FreezeId,
    /// Why.
    pub reason: String,
    /// Who did it (a principal name).
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A freeze-window event.
pub enum FreezeEvent {
    /// The [`FreezeCreated`] event.
    Created(FreezeCreated),
    /// The [`FreezeLifted`] event.
    Lifted(FreezeLifted),
}

impl FreezeEvent {
    /// The type of the event `freeze.created`.
    pub const CREATED: &'static str = "freeze.created";
    /// The type of the event `freeze.lifted`.
    pub const LIFTED: &'static str = "freeze.lifted";

    /// The event as it is appended, carrying `metadata`.
    pub fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let (event_type, data) = match self {
            FreezeEvent::Created(e) => (Self::CREATED, serde_json::to_vec(e)),
            FreezeEvent::Lifted(e) => (Self::LIFTED, serde_json::to_vec(e)),
        };
        NewEvent::raw(event_type, data.unwrap_or_default(), metadata)
    }

    /// Reads a stored event of this kind; fails if it is another kind or cannot be decoded.
    pub fn from_record(record: &FoldRecord) -> Result<FreezeEvent, ChangeError> {
        let bad = |e: serde_json::Error| ChangeError::Undecodable { position: record.position, detail: e.to_string() };
        Ok(match record.event_type.as_str() {
            Self::CREATED => FreezeEvent::Created(record.data_as().map_err(bad)?),
            Self::LIFTED => FreezeEvent::Lifted(record.data_as().map_err(bad)?),
            other => {
                return Err(ChangeError::Undecodable {
                    position: record.position,
                    detail: format!("{other} is not a freeze event"),
                });
            }
        })
    }
}

/// A freeze as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeRecord {
    /// The freeze window.
    pub freeze: FreezeCreated,
    /// When it was created.
    pub created: At,
    /// When and why it was lifted, if it was.
    pub lifted: Option<(FreezeLifted, At)>,
}

impl FreezeRecord {
    /// In force at `position`: created by then and not lifted by then.
    pub fn in_force_at(&self, position: u64) -> bool {
        self.created.position <= position && self.lifted.as_ref().is_none_or(|(_, at)| at.position > position)
    }

    /// Whether it covers a change whose scope has CIs in `environments` and reaches `services`.
    pub fn covers(&self, environments: &[Environment], services: &[CiId]) -> bool {
        match &self.freeze.scope {
            FreezeScope::Global => true,
            FreezeScope::Environment { environment } => environments.contains(environment),
            FreezeScope::Service { service } => services.contains(service),
        }
    }
}

/// Every freeze, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freezes {
    /// Every one, by id.
    pub records: BTreeMap<FreezeId, FreezeRecord>,
    /// The stream version folded.
    pub version: Option<u64>,
}

impl Freezes {
    /// Folds one stored event.
    pub fn apply(&mut self, record: &FoldRecord) -> Result<(), ChangeError> {
        let at = At::of(record);
        match FreezeEvent::from_record(record)? {
            FreezeEvent::Created(created) => {
                self.records.insert(created.freeze_id, FreezeRecord { freeze: created, created: at, lifted: None });
            }
            FreezeEvent::Lifted(lifted) => {
                if let Some(existing) = self.records.get_mut(&lifted.freeze_id) {
                    existing.lifted = Some((lifted, at));
                }
            }
        }
        debug_assert!(self.version.is_none_or(|v| v < record.stream_version), "a version only grows");
        self.version = Some(record.stream_version);
        Ok(())
    }

    /// Whether a freeze not lifted is scoped to a business service: only then does
    /// [`hits`] read the services a scope reaches.
    pub fn any_scoped_to_a_service(&self) -> bool {
        self.records.values().any(|r| r.lifted.is_none() && matches!(r.freeze.scope, FreezeScope::Service { .. }))
    }

    /// The freezes in force at `position` (created, not yet lifted).
    pub fn in_force_at(&self, position: u64) -> impl Iterator<Item = &FreezeRecord> {
        self.records.values().filter(move |r| r.in_force_at(position))
    }
}

/// A freeze a window falls into: the freeze and the occurrence met first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeHit {
    /// The freeze window.
    pub freeze_id: FreezeId,
    /// The name.
    pub name: String,
    /// Where it starts.
    pub start: Timestamp,
    /// Where it ends.
    pub end: Timestamp,
}

/// The freezes in force now that cover the scope and overlap the window.
pub fn hits(
    freezes: &Freezes,
    window: &Window,
    environments: &[Environment],
    services: &[CiId],
) -> Result<Vec<FreezeHit>, ChangeError> {
    let mut found = Vec::new();
    for record in freezes.records.values().filter(|r| r.lifted.is_none()) {
        if !record.covers(environments, services) {
            continue;
        }
        let (occurrences, _) = record.freeze.schedule.occurrences(window.start, window.end, 1)?;
        if let Some((start, end)) = occurrences.first() {
            found.push(FreezeHit {
                freeze_id: record.freeze.freeze_id,
                name: record.freeze.name.clone(),
                start: *start,
                end: *end,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("time")
    }

    fn fridays(zone: &str) -> FreezeSchedule {
        FreezeSchedule::Recurring {
            rrule: "FREQ=WEEKLY;BYDAY=FR".into(),
            start_local: "2030-01-04T18:00".into(),
            time_zone: zone.into(),
            duration_minutes: 14 * 60,
        }
    }

    #[test]
    fn a_weekly_freeze_keeps_its_wall_clock_time_across_daylight_saving() {
        let schedule = fridays("Europe/Berlin");
        schedule.validate().expect("valid");
        // Winter: 18:00 Berlin is 17:00 UTC; summer: 16:00 UTC.
        let (winter, _) = schedule.occurrences(at("2030-01-10T00:00:00Z"), at("2030-01-12T00:00:00Z"), 10).expect("ok");
        assert_eq!(winter, vec![(at("2030-01-11T17:00:00Z"), at("2030-01-12T07:00:00Z"))]);
        let (summer, _) = schedule.occurrences(at("2030-07-01T00:00:00Z"), at("2030-07-07T00:00:00Z"), 10).expect("ok");
        assert_eq!(summer, vec![(at("2030-07-05T16:00:00Z"), at("2030-07-06T06:00:00Z"))]);
        // The week of the spring change (2030-03-31): the Friday before is still winter time.
        let (march, _) = schedule.occurrences(at("2030-03-25T00:00:00Z"), at("2030-04-06T00:00:00Z"), 10).expect("ok");
        assert_eq!(
            march.iter().map(|o| o.0).collect::<Vec<_>>(),
            vec![at("2030-03-29T17:00:00Z"), at("2030-04-05T16:00:00Z")]
        );
        // An occurrence that began before the range but still runs overlaps it.
        let (running, _) =
            schedule.occurrences(at("2030-01-12T06:00:00Z"), at("2030-01-12T06:30:00Z"), 10).expect("ok");
        assert_eq!(running.len(), 1);
        // New York's Friday evening is Saturday in UTC.
        let (ny, _) = fridays("America/New_York")
            .occurrences(at("2030-01-11T00:00:00Z"), at("2030-01-13T00:00:00Z"), 10)
            .expect("ok");
        assert_eq!(ny[0].0, at("2030-01-11T23:00:00Z"));
        // Bounded: a year of a daily freeze cut at the limit says so.
        let daily = FreezeSchedule::Recurring {
            rrule: "FREQ=DAILY".into(),
            start_local: "2030-01-01T00:00".into(),
            time_zone: "UTC".into(),
            duration_minutes: 60,
        };
        let (some, limited) =
            daily.occurrences(at("2030-01-01T00:00:00Z"), at("2031-01-01T00:00:00Z"), 10).expect("ok");
        assert_eq!(some.len(), 10);
        assert!(limited);
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        let recurring = |rrule: &str, start: &str, zone: &str, minutes: u32| FreezeSchedule::Recurring {
            rrule: rrule.into(),
            start_local: start.into(),
            time_zone: zone.into(),
            duration_minutes: minutes,
        };
        for (schedule, needle) in [
            (recurring("FREQ=SOMETIMES", "2030-01-04T18:00", "UTC", 60), "FREQ=SOMETIMES"),
            (recurring("FREQ=WEEKLY\nDTSTART:19700101", "2030-01-04T18:00", "UTC", 60), "characters"),
            (recurring("", "2030-01-04T18:00", "UTC", 60), "1 to"),
            (recurring("FREQ=WEEKLY", "friday evening", "UTC", 60), "YYYY-MM-DDTHH:MM"),
            (recurring("FREQ=WEEKLY", "2030-01-04T18:00", "Mars/Base", 60), "Mars/Base"),
            (recurring("FREQ=WEEKLY", "2030-03-31T02:30", "Europe/Berlin", 60), "daylight-saving gap"),
            (recurring("FREQ=WEEKLY", "2030-01-04T18:00", "UTC", 0), "duration_minutes"),
            (
                recurring("FREQ=WEEKLY", "2030-01-04T18:00", "UTC", MAX_FREEZE_OCCURRENCE_MINUTES + 1),
                "duration_minutes",
            ),
            (FreezeSchedule::Interval { start: at("2030-01-02T00:00:00Z"), end: at("2030-01-01T00:00:00Z") }, "ends"),
            (
                FreezeSchedule::Interval { start: at("2030-01-01T00:00:00Z"), end: at("2031-01-01T00:00:00Z") },
                "at most",
            ),
        ] {
            let error = schedule.validate().expect_err("refused");
            assert!(error.to_string().contains(needle), "{schedule:?}: {error}");
        }
        recurring("FREQ=WEEKLY", "2030-01-04T18:00", "UTC", MAX_FREEZE_OCCURRENCE_MINUTES)
            .validate()
            .expect("at the bound");
    }
}
