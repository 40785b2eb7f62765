//! Risk assessment (CH-2): the facts a projection computed from the impact graph at one
//! position, and the documented formula that turns them into a score and a level. Pure: the
//! facts arrive as input (core holds no graph) and are stored in the event with the position
//! they were computed at, so an assessment can always be recomputed from its record.
//!
//! ## The formula (version [`RISK_FORMULA_VERSION`])
//!
//! | factor | points |
//! |---|---|
//! | change type | standard 0, normal 10, emergency 20 |
//! | most critical service reached downstream (the scope's CIs included) | down: tier 1: 25, tier 2: 15, tier 3: 8, tier 4: 3; degraded: tier 1: 12, tier 2: 8, tier 3: 4, tier 4: 2; none: 0 (the most points of any service) |
//! | more services reached | 2 per service after the first, at most 10 |
//! | CIs reached downstream | 0: 0, 1-10: 5, 11-100: 10, 101-1,000: 15, more or truncated: 20 |
//!
//! Version 2 (issue 15) weighs a service the change leaves degraded (a redundant group below
//! it loses members but survives) at about half one it takes down; version 1 counted every
//! service reached as down. Assessments keep the version they were computed with.
//! | failed or backed-out changes on the scope's CIs in the last `history_days` | 10 each, at most 20 |
//! | the requested window and service hours | touches a tier-1 service's hours: 20; another reached service's hours: 10; no window yet: 5 |
//!
//! The score is the sum, at most 100. Level: below 25 low, below 50 medium, below 75 high,
//! otherwise critical.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Weekday};
use serde::{Deserialize, Serialize};

use crate::ci::CiId;
use crate::model::Severity;
use crate::time::Timestamp;

use super::{ChangeType, Window};

/// Bumped when the formula changes; stored with every assessment.
pub const RISK_FORMULA_VERSION: u32 = 2;
/// Failed or backed-out changes counted back this many days by default.
pub const DEFAULT_RISK_HISTORY_DAYS: u32 = 90;
/// The most days of history an assessment may look back.
pub const MAX_RISK_HISTORY_DAYS: u32 = 3_650;
/// Services described in full (hours, owners) in one assessment's facts, down before
/// degraded, most critical first; every further one is listed briefly in `other_services`.
pub const MAX_ASSESSED_SERVICES: usize = 500;
/// Score at or above which a level starts: medium, high, critical.
pub const LEVEL_THRESHOLDS: [u32; 3] = [25, 50, 75];
/// The highest risk score.
pub const MAX_SCORE: u32 = 100;

/// Distinct service-hours patterns an assessment remembers, both the reading of an attribute
/// value and the window check (beyond them, each service's hours are read and checked on their
/// own: the same answers, more slowly).
pub const MAX_HOURS_PATTERNS: usize = 32;

/// The weekly hours a business service is used in, in its own time zone (the CI schema's
/// `service_hours` attribute).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHours {
    /// An IANA time zone name.
    pub time_zone: String,
    /// Weekly intervals.
    pub weekly: Vec<WeeklyHours>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// Days of the week and the hours between `start` and `end` (HH:MM, `24:00` allowed as an end).
pub struct WeeklyHours {
    /// mon, tue, wed, thu, fri, sat, sun.
    pub days: Vec<String>,
    /// HH:MM.
    pub start: String,
    /// HH:MM; 24:00 allowed.
    pub end: String,
}

impl ServiceHours {
    /// Reads the schema's attribute value; `None` if it is absent or malformed.
    pub fn from_attribute(value: &serde_json::Value) -> Option<ServiceHours> {
        // Read in place: cloning the value first was a tenth of an assessment (issue 15).
        ServiceHours::deserialize(value).ok()
    }
}

/// A business service the change reaches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFact {
    /// Its id.
    pub id: CiId,
    /// The name.
    pub name: String,
    /// `criticality_tier`, 1 (most critical) to 4.
    pub tier: Option<u8>,
    /// Service hours of the services shown. Shared: services share a few patterns, and
    /// 500 listed services each with their own copy were 5,000 allocations an assessment.
    pub service_hours: Option<Arc<ServiceHours>>,
    /// E-mail addresses of the people who own the service: the owning person, or the people
    /// `part_of` the owning team. The decision maps them to principals.
    pub owner_contacts: Vec<String>,
    /// Hops from the nearest scope CI (0: the scope names the service itself).
    pub depth: u32,
    /// How badly the change's failure reaches it (down for assessments of formula 1).
    #[serde(default = "down")]
    pub severity: Severity,
}

fn down() -> Severity {
    Severity::Down
}

/// A reached service beyond the ones described in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBrief {
    /// Its id.
    pub id: CiId,
    /// `criticality_tier`, 1 to 4.
    pub tier: Option<u8>,
    /// Hops from the nearest scope CI.
    pub depth: u32,
    /// How badly the change's failure reaches it.
    pub severity: Severity,
}

/// Failed and backed-out changes on one scope CI within the history window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiFailures {
    /// The CI.
    pub ci: CiId,
    /// How many failed.
    pub failed: u32,
    /// How many were backed out.
    pub backed_out: u32,
}

/// What the projection computed, at `position`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessmentFacts {
    /// The log position.
    pub position: u64,
    /// When the facts were computed.
    pub computed_at: Timestamp,
    /// Distinct CIs reached downstream of the scope's CIs (the scope excluded).
    pub downstream_cis: u32,
    /// A bound cut the traversal short: more CIs (and maybe services) lie beyond.
    pub truncated: bool,
    /// The business services reached, described in full: at most [`MAX_ASSESSED_SERVICES`],
    /// down before degraded, most critical and nearest first.
    pub services: Vec<ServiceFact>,
    /// How many reached services are not in `services` (each is in `other_services`).
    pub services_not_listed: u32,
    /// Every reached service beyond `services`, briefly, in the same order with ids in place
    /// of names (empty in assessments before issue 15, which only counted them).
    #[serde(default)]
    pub other_services: Vec<ServiceBrief>,
    /// Days of history.
    pub history_days: u32,
    /// Scope CIs with at least one failed or backed-out change in the window.
    pub failures: Vec<CiFailures>,
    /// The change calendar around the requested window (CH-5), when there is a window.
    #[serde(default)]
    pub calendar: Option<super::CalendarFacts>,
}

/// Risk levels, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// 0 to 24 points.
    Low,
    /// 25 to 49 points.
    Medium,
    /// 50 to 74 points.
    High,
    /// 75 points and more.
    Critical,
}

impl RiskLevel {
    /// The value's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    /// The level of a score.
    pub fn of_score(score: u32) -> RiskLevel {
        match score {
            s if s >= LEVEL_THRESHOLDS[2] => RiskLevel::Critical,
            s if s >= LEVEL_THRESHOLDS[1] => RiskLevel::High,
            s if s >= LEVEL_THRESHOLDS[0] => RiskLevel::Medium,
            _ => RiskLevel::Low,
        }
    }
}

impl AssessmentFacts {
    /// The severity of every reached service: those described in full, then the others.
    pub fn service_severities(&self) -> impl Iterator<Item = Severity> + '_ {
        self.services.iter().map(|s| s.severity).chain(self.other_services.iter().map(|s| s.severity))
    }

    /// How many reached services have `severity`.
    pub fn services_with(&self, severity: Severity) -> usize {
        self.service_severities().filter(|s| *s == severity).count()
    }
}

/// One factor of the score, with the reason it counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factor {
    /// The name.
    pub name: String,
    /// Points it adds to the score.
    pub points: u32,
    /// Why, in words.
    pub why: String,
}

/// An assessment: the facts, what the formula made of them, and the window facts it used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// The version of the risk formula.
    pub formula_version: u32,
    /// Standard, normal or emergency.
    pub change_type: ChangeType,
    /// The requested window.
    pub window: Option<Window>,
    /// The facts it was computed from.
    pub facts: AssessmentFacts,
    /// Reached services whose service hours the requested window touches.
    pub window_in_service_hours: Vec<CiId>,
    /// The risk score, 0 to 100.
    pub score: u32,
    /// The risk level.
    pub level: RiskLevel,
    /// What the score is made of.
    pub factors: Vec<Factor>,
}

fn tier_points(tier: u8, severity: Severity) -> u32 {
    match (severity, tier) {
        (Severity::Down, 1) => 25,
        (Severity::Down, 2) => 15,
        (Severity::Down, 3) => 8,
        (Severity::Down, _) => 3,
        (Severity::Degraded, 1) => 12,
        (Severity::Degraded, 2) => 8,
        (Severity::Degraded, 3) => 4,
        (Severity::Degraded, _) => 2,
    }
}

fn downstream_points(count: u32, truncated: bool) -> u32 {
    match count {
        _ if truncated => 20,
        0 => 0,
        1..=10 => 5,
        11..=100 => 10,
        101..=1000 => 15,
        _ => 20,
    }
}

/// Applies the formula. Pure and total: every input gives an assessment.
pub fn assess(facts: AssessmentFacts, change_type: ChangeType, window: Option<&Window>) -> Assessment {
    let mut factors = Vec::new();
    let mut factor = |name: &str, points: u32, why: String| {
        factors.push(Factor { name: name.to_owned(), points, why });
    };
    let type_points = match change_type {
        ChangeType::Standard => 0,
        ChangeType::Normal => 10,
        ChangeType::Emergency => 20,
    };
    factor("change_type", type_points, format!("a {} change", change_type.as_str()));

    let briefs = facts.other_services.iter().map(|s| (s.tier, s.severity, s.depth, None));
    let weighed = facts.services.iter().map(|s| (s.tier, s.severity, s.depth, Some(s.name.as_str()))).chain(briefs);
    let worst = weighed
        .filter_map(|(tier, severity, depth, name)| tier.map(|t| (tier_points(t, severity), t, severity, depth, name)))
        // The first of the most points: the services come down first, most critical, nearest.
        .fold(None, |best: Option<(u32, u8, Severity, u32, Option<&str>)>, hit| match best {
            Some(b) if b.0 >= hit.0 => Some(b),
            _ => Some(hit),
        });
    match worst {
        Some((points, tier, severity, depth, name)) => factor(
            "service_tier",
            points,
            format!(
                "leaves tier-{tier} service {} {} at depth {depth}",
                name.unwrap_or("(beyond the listed services)"),
                if severity == Severity::Down { "down" } else { "degraded" }
            ),
        ),
        None => factor("service_tier", 0, "reaches no business service".into()),
    }
    let service_count = facts.services.len() as u32 + facts.services_not_listed;
    let more = service_count.saturating_sub(1).saturating_mul(2).min(10);
    factor("services_reached", more, format!("{service_count} business services reached"));

    factor(
        "downstream_cis",
        downstream_points(facts.downstream_cis, facts.truncated),
        if facts.truncated {
            format!("more than {} CIs depend on the scope (traversal bounded)", facts.downstream_cis)
        } else {
            format!("{} CIs depend on the scope", facts.downstream_cis)
        },
    );

    let failures: u32 = facts.failures.iter().map(|f| f.failed + f.backed_out).sum();
    factor(
        "recent_failures",
        failures.saturating_mul(10).min(20),
        format!("{failures} failed or backed-out changes on the scope's CIs in the last {} days", facts.history_days),
    );

    let mut in_hours = Vec::new();
    if let Some(window) = window {
        let tier1;
        (in_hours, tier1) = services_in_hours(window, &facts.services);
        match (tier1, in_hours.first()) {
            (Some(service), _) => factor(
                "service_hours",
                20,
                format!("the window touches the service hours of tier-1 service {}", service.name),
            ),
            (None, Some(first)) => {
                let name = facts.services.iter().find(|s| s.id == *first).map(|s| s.name.as_str()).unwrap_or("?");
                factor("service_hours", 10, format!("the window touches the service hours of {name}"))
            }
            (None, None) => factor("service_hours", 0, "the window is outside every reached service's hours".into()),
        }
    } else {
        factor("service_hours", 5, "no window requested yet: timing unknown".into());
    }

    let score = factors.iter().map(|f| f.points).sum::<u32>().min(MAX_SCORE);
    Assessment {
        formula_version: RISK_FORMULA_VERSION,
        change_type,
        window: window.cloned(),
        window_in_service_hours: in_hours,
        level: RiskLevel::of_score(score),
        score,
        factors,
        facts,
    }
}

/// The listed services whose hours the window touches, in their order, and the first of them
/// of tier 1.
fn services_in_hours<'a>(window: &Window, services: &'a [ServiceFact]) -> (Vec<CiId>, Option<&'a ServiceFact>) {
    let (mut in_hours, mut tier1) = (Vec::new(), None);
    // Services share their hours (a team's few patterns across an estate): each pattern is
    // checked against the window once, not once per service (issue 15).
    let mut checked: Vec<(&Arc<ServiceHours>, bool)> = Vec::new();
    for service in services {
        let Some(hours) = service.service_hours.as_ref() else { continue };
        // `Arc`'s equality of an `Eq` value compares the pointers first: services of one
        // pattern share it, so a match is one pointer comparison.
        let touches = match checked.iter().find(|(known, _)| *known == hours) {
            Some((_, touches)) => *touches,
            None => {
                let touches = window_touches(window, hours);
                if checked.len() < MAX_HOURS_PATTERNS {
                    checked.push((hours, touches));
                }
                touches
            }
        };
        if touches {
            in_hours.push(service.id);
            if tier1.is_none() && service.tier == Some(1) {
                tier1 = Some(service);
            }
        }
    }
    (in_hours, tier1)
}

fn weekday(day: &str) -> Option<Weekday> {
    Some(match day {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

fn minutes(hhmm: &str) -> Option<i64> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) || (h == 24 && m == 0)).then_some(h * 60 + m)
}

/// The instant a local wall-clock time happens in `zone` (a time skipped by a DST jump moves
/// to the first instant after the gap; a repeated one takes its first occurrence).
fn local_instant(zone: chrono_tz::Tz, date: NaiveDate, minute_of_day: i64) -> Option<i64> {
    let midnight = date.and_time(NaiveTime::MIN);
    let local = midnight + Duration::minutes(minute_of_day);
    for shift in 0..=2 {
        if let Some(at) = zone.from_local_datetime(&(local + Duration::hours(shift))).earliest() {
            let at = at.with_timezone(&chrono::Utc);
            return Some(at.timestamp_micros());
        }
    }
    None
}

/// The intervals of `hours` overlapping [from, to), in time order, at most `limit` (the
/// calendar's maintenance view: outside them is where work disturbs nobody).
pub fn service_hours_between(
    hours: &ServiceHours,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Vec<(Timestamp, Timestamp)> {
    let Ok(zone) = chrono_tz::Tz::from_str(&hours.time_zone) else { return Vec::new() };
    let (Some(start), Some(end)) = (from.to_datetime(), to.to_datetime()) else { return Vec::new() };
    if end <= start {
        return Vec::new();
    }
    let mut date = start.with_timezone(&zone).date_naive() - Duration::days(1);
    let last = end.with_timezone(&zone).date_naive() + Duration::days(1);
    let mut found = Vec::new();
    while date <= last && found.len() < limit {
        for interval in &hours.weekly {
            if !interval.days.iter().filter_map(|d| weekday(d)).any(|d| d == date.weekday()) {
                continue;
            }
            let (Some(a), Some(b)) = (minutes(&interval.start), minutes(&interval.end)) else { continue };
            let (Some(open), Some(close)) = (local_instant(zone, date, a), local_instant(zone, date, b)) else {
                continue;
            };
            if open < to.as_micros() && from.as_micros() < close && found.len() < limit {
                found.push((Timestamp::from_micros(open), Timestamp::from_micros(close)));
            }
        }
        date += Duration::days(1);
    }
    found.sort();
    found
}

/// Whether [start, end) of the window overlaps any weekly interval of the service hours, in
/// the service's own time zone (IANA). Bounded: the window is at most
/// [`super::MAX_WINDOW_HOURS`] long, so at most ~33 local days are examined.
pub fn window_touches(window: &Window, hours: &ServiceHours) -> bool {
    let Ok(zone) = chrono_tz::Tz::from_str(&hours.time_zone) else { return false };
    let (Some(start), Some(end)) = (window.start.to_datetime(), window.end.to_datetime()) else { return false };
    if end <= start {
        return false;
    }
    let (start_us, end_us) = (window.start.as_micros(), window.end.as_micros());
    let first = start.with_timezone(&zone).date_naive() - Duration::days(1);
    let last = end.with_timezone(&zone).date_naive() + Duration::days(1);
    let max_days = super::MAX_WINDOW_HOURS / 24 + 3;
    let mut date = first;
    let mut examined = 0;
    while date <= last && examined <= max_days {
        for interval in &hours.weekly {
            if !interval.days.iter().filter_map(|d| weekday(d)).any(|d| d == date.weekday()) {
                continue;
            }
            let (Some(from), Some(to)) = (minutes(&interval.start), minutes(&interval.end)) else { continue };
            let (Some(open), Some(close)) = (local_instant(zone, date, from), local_instant(zone, date, to)) else {
                continue;
            };
            if open < end_us && start_us < close {
                return true;
            }
        }
        date += Duration::days(1);
        examined += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("time")
    }

    fn window(start: &str, end: &str) -> Window {
        Window { start: at(start), end: at(end), time_zone: "UTC".into() }
    }

    fn office(zone: &str) -> ServiceHours {
        ServiceHours {
            time_zone: zone.into(),
            weekly: vec![WeeklyHours {
                days: ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec(),
                start: "08:00".into(),
                end: "18:00".into(),
            }],
        }
    }

    fn service(tier: u8, hours: Option<ServiceHours>) -> ServiceFact {
        ServiceFact {
            id: CiId(uuid::Uuid::from_u128(u128::from(tier))),
            name: format!("tier{tier}"),
            tier: Some(tier),
            service_hours: hours.map(Arc::new),
            owner_contacts: vec![],
            depth: 2,
            severity: Severity::Down,
        }
    }

    fn facts() -> AssessmentFacts {
        AssessmentFacts {
            position: 7,
            computed_at: at("2030-01-01T00:00:00Z"),
            downstream_cis: 0,
            truncated: false,
            services: vec![],
            services_not_listed: 0,
            other_services: vec![],
            history_days: DEFAULT_RISK_HISTORY_DAYS,
            failures: vec![],
            calendar: None,
        }
    }

    fn points(assessment: &Assessment, name: &str) -> u32 {
        assessment.factors.iter().find(|f| f.name == name).map(|f| f.points).expect(name)
    }

    #[test]
    fn service_hours_follow_the_services_time_zone_and_dst() {
        let berlin = office("Europe/Berlin");
        // Monday 2030-01-07 07:30 UTC is 08:30 in Berlin (UTC+1): inside.
        assert!(window_touches(&window("2030-01-07T07:30:00Z", "2030-01-07T07:45:00Z"), &berlin));
        // 06:30 UTC is 07:30 in Berlin: outside; 17:30 UTC is 18:30: outside.
        assert!(!window_touches(&window("2030-01-07T06:30:00Z", "2030-01-07T06:59:00Z"), &berlin));
        assert!(!window_touches(&window("2030-01-07T17:00:00Z", "2030-01-07T22:00:00Z"), &berlin));
        // In summer (UTC+2) 06:30 UTC is 08:30: inside.
        assert!(window_touches(&window("2030-07-01T06:30:00Z", "2030-07-01T06:45:00Z"), &berlin));
        // A weekend is outside; a window spanning the weekend into Monday morning is inside.
        assert!(!window_touches(&window("2030-01-05T00:00:00Z", "2030-01-06T23:00:00Z"), &berlin));
        assert!(window_touches(&window("2030-01-05T00:00:00Z", "2030-01-07T07:01:00Z"), &berlin));
        // The end is exclusive: a window ending as the hours open does not touch them.
        assert!(!window_touches(&window("2030-01-07T05:00:00Z", "2030-01-07T07:00:00Z"), &berlin));
        // Tokyo's Monday morning is Sunday night in UTC.
        assert!(window_touches(&window("2030-01-06T23:30:00Z", "2030-01-06T23:45:00Z"), &office("Asia/Tokyo")));
        // An unknown zone never matches (the schema refuses it on the CI).
        assert!(!window_touches(&window("2030-01-07T09:00:00Z", "2030-01-07T10:00:00Z"), &office("Mars/Base")));
    }

    #[test]
    fn each_factor_moves_the_score_as_documented() {
        let base = assess(facts(), ChangeType::Normal, None);
        assert_eq!(points(&base, "change_type"), 10);
        assert_eq!(points(&base, "service_hours"), 5, "no window yet");
        assert_eq!(base.score, 15);
        assert_eq!(base.level, RiskLevel::Low);
        assert_eq!(assess(facts(), ChangeType::Standard, None).score, 5);
        assert_eq!(assess(facts(), ChangeType::Emergency, None).score, 25);

        let mut reach = facts();
        reach.services = vec![service(2, None), service(1, None), service(3, None)];
        let reached = assess(reach.clone(), ChangeType::Normal, None);
        assert_eq!(points(&reached, "service_tier"), 25, "the most critical service counts");
        assert_eq!(points(&reached, "services_reached"), 4);

        // Formula 2: a degraded service weighs about half a down one; a down tier-2 service
        // outweighs a degraded tier-1 one; services listed briefly count as much.
        let mut degraded = facts();
        degraded.services = vec![service(1, None)];
        degraded.services[0].severity = Severity::Degraded;
        assert_eq!(points(&assess(degraded.clone(), ChangeType::Normal, None), "service_tier"), 12);
        degraded.services.push(service(2, None));
        assert_eq!(points(&assess(degraded.clone(), ChangeType::Normal, None), "service_tier"), 15);
        degraded.services_not_listed = 1;
        degraded.other_services = vec![ServiceBrief {
            id: CiId(uuid::Uuid::from_u128(9)),
            tier: Some(1),
            depth: 4,
            severity: Severity::Down,
        }];
        let with_brief = assess(degraded, ChangeType::Normal, None);
        assert_eq!(points(&with_brief, "service_tier"), 25);
        assert_eq!(points(&with_brief, "services_reached"), 4, "three services");

        for (count, truncated, expected) in [
            (0, false, 0),
            (1, false, 5),
            (10, false, 5),
            (11, false, 10),
            (1000, false, 15),
            (1001, false, 20),
            (3, true, 20),
        ] {
            let mut f = facts();
            f.downstream_cis = count;
            f.truncated = truncated;
            assert_eq!(points(&assess(f, ChangeType::Normal, None), "downstream_cis"), expected, "{count}");
        }

        let mut failing = facts();
        failing.failures = vec![CiFailures { ci: CiId(uuid::Uuid::nil()), failed: 1, backed_out: 0 }];
        assert_eq!(points(&assess(failing.clone(), ChangeType::Normal, None), "recent_failures"), 10);
        failing.failures[0].backed_out = 5;
        assert_eq!(points(&assess(failing, ChangeType::Normal, None), "recent_failures"), 20, "capped");

        let mut hours = facts();
        hours.services = vec![service(1, Some(office("UTC"))), service(3, Some(office("UTC")))];
        let inside = window("2030-01-07T09:00:00Z", "2030-01-07T10:00:00Z");
        let outside = window("2030-01-07T20:00:00Z", "2030-01-07T21:00:00Z");
        let touched = assess(hours.clone(), ChangeType::Normal, Some(&inside));
        assert_eq!(points(&touched, "service_hours"), 20);
        assert_eq!(touched.window_in_service_hours.len(), 2);
        assert_eq!(points(&assess(hours.clone(), ChangeType::Normal, Some(&outside)), "service_hours"), 0);
        hours.services[0].service_hours = None;
        assert_eq!(points(&assess(hours, ChangeType::Normal, Some(&inside)), "service_hours"), 10);
    }

    #[test]
    fn shared_hours_patterns_give_each_service_its_own_answer_at_and_past_the_bound() {
        // Twice the remembered patterns, each used by two services: an opening hour per pattern
        // (09:00 to 09:39 UTC), so the 09:20-09:30 window touches the first 30 patterns only.
        let patterns = 2 * MAX_HOURS_PATTERNS;
        let hours = |n: usize| {
            let mut h = office("UTC");
            h.weekly[0].start = format!("09:{:02}", n % 60);
            h.weekly[0].end = "09:59".into();
            if n >= 60 {
                h.weekly[0].days = vec!["sun".into()];
            }
            h
        };
        let services: Vec<ServiceFact> = (0..2 * patterns)
            .map(|n| {
                let mut s = service(if n % 3 == 0 { 1 } else { 2 }, Some(hours(n % patterns)));
                s.id = CiId(uuid::Uuid::from_u128(n as u128 + 100));
                s
            })
            .collect();
        let inside = window("2030-01-07T09:20:00Z", "2030-01-07T09:30:00Z");
        let (in_hours, tier1) = services_in_hours(&inside, &services);
        let expected: Vec<CiId> = services
            .iter()
            .filter(|s| s.service_hours.as_ref().is_some_and(|h| window_touches(&inside, h)))
            .map(|s| s.id)
            .collect();
        assert_eq!(in_hours, expected, "the same services as checking each on its own");
        assert_eq!(in_hours.len(), 2 * 30);
        let first_tier1 = services.iter().find(|s| s.tier == Some(1) && expected.contains(&s.id)).map(|s| s.id);
        assert_eq!(tier1.map(|s| s.id), first_tier1);
    }

    #[test]
    fn levels_follow_the_thresholds_and_the_score_is_capped() {
        assert_eq!(RiskLevel::of_score(24), RiskLevel::Low);
        assert_eq!(RiskLevel::of_score(25), RiskLevel::Medium);
        assert_eq!(RiskLevel::of_score(50), RiskLevel::High);
        assert_eq!(RiskLevel::of_score(75), RiskLevel::Critical);
        let mut worst = facts();
        worst.services = (1..=8).map(|n| service(if n == 1 { 1 } else { 2 }, Some(office("UTC")))).collect();
        worst.truncated = true;
        worst.failures = vec![CiFailures { ci: CiId(uuid::Uuid::nil()), failed: 3, backed_out: 0 }];
        let assessment =
            assess(worst, ChangeType::Emergency, Some(&window("2030-01-07T09:00:00Z", "2030-01-07T10:00:00Z")));
        assert_eq!(assessment.score, MAX_SCORE);
        assert_eq!(assessment.level, RiskLevel::Critical);
    }
}
