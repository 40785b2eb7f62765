//! `/api/v1/calendar.ics`: the change calendar as an iCalendar feed (RFC 5545) for calendar
//! applications (CH-5): one event per change whose window falls in the range, one per freeze
//! occurrence. A viewer token is enough; as calendar applications cannot send headers, the
//! token may also come as the `access_token` query parameter (RFC 6750 section 2.3; prefer a
//! token made for this, as URLs end up in logs).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use cmdb_core::Timestamp;
use cmdb_core::access::{Operation, permits};
use cmdb_projections::calendar::{CalendarFilter, MAX_CALENDAR_DAYS, calendar};
use icalendar::{Component, EventLike};
use serde::Deserialize;

use super::ServerState;
use super::auth::authenticate_header;
use super::errors::ApiError;

/// Days shown before now when the range is not given (the feed and `calendar`).
pub const DEFAULT_PAST_DAYS: i64 = 7;
/// Days shown after now when the range is not given.
pub const DEFAULT_FUTURE_DAYS: i64 = 90;
/// A day in microseconds.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// The feed's query string.
#[derive(Deserialize)]
pub struct CalendarQuery {
    from: Option<String>,
    to: Option<String>,
    access_token: Option<String>,
}

/// User text made fit for an iCalendar TEXT value (RFC 5545 section 3.3.11): line breaks of
/// any kind (CR LF, CR, LF) become LF, which the writer escapes as `\n`; other control
/// characters, which TEXT does not allow, are dropped. Commas, semicolons and backslashes are
/// escaped by the writer. So no text can end a line or start a property.
pub fn ics_text(text: &str) -> String {
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    unified.chars().filter(|c| *c == '\n' || *c == '\t' || !c.is_control()).collect()
}

fn utc(t: Timestamp) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    t.to_datetime().ok_or_else(|| ApiError::BadRequest(format!("{t} is out of range")))
}

/// `GET /api/v1/calendar.ics`.
pub async fn calendar_ics(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Query(query): Query<CalendarQuery>,
) -> Result<Response, ApiError> {
    let app = &state.app;
    let from_query = query.access_token.as_ref().map(|t| format!("Bearer {t}"));
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned).or(from_query);
    let caller = authenticate_header(&app.access, header.as_deref(), app.clock.now())?;
    if !permits(&caller.roles, Operation::ReadConfiguration) {
        return Err(ApiError::Forbidden(Operation::ReadConfiguration));
    }
    let now = app.clock.now();
    let parse = |text: Option<&String>, default: Timestamp, name: &str| match text {
        Some(text) => Timestamp::parse_rfc3339(text)
            .map_err(|e| ApiError::BadRequest(format!("{name}: {e} (an RFC 3339 time, e.g. 2026-12-01T00:00:00Z)"))),
        None => Ok(default),
    };
    let from = parse(query.from.as_ref(), now.saturating_add_micros(-DEFAULT_PAST_DAYS * DAY_MICROS), "from")?;
    let to = parse(query.to.as_ref(), now.saturating_add_micros(DEFAULT_FUTURE_DAYS * DAY_MICROS), "to")?;
    if to <= from {
        return Err(ApiError::BadRequest(format!("to ({to}) must be after from ({from})")));
    }
    if (to.as_micros() - from.as_micros()) / DAY_MICROS > MAX_CALENDAR_DAYS {
        return Err(ApiError::BadRequest(format!("the range is longer than max_calendar_days ({MAX_CALENDAR_DAYS})")));
    }
    let mut ics = icalendar::Calendar::new();
    ics.name("cmdb change calendar");
    {
        let graph = app.graph.read();
        let position = graph.applied();
        let page = calendar(&graph, position, from, to, &CalendarFilter::default(), app.settings.conflict_max_depth)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        for entry in &page.entries {
            let change = &entry.change;
            let Some(window) = &change.details.window else { continue };
            let mut description = format!(
                "{} change, {}; requested by {}; implementer {}; {} CIs in scope",
                change.change_type,
                change.state,
                change.requester,
                change.details.implementer.as_deref().unwrap_or("-"),
                change.details.scope.cis.len()
            );
            if let Some(assessment) = change.assessment() {
                description.push_str(&format!(
                    "; risk {} ({})",
                    assessment.assessment.level.as_str(),
                    assessment.assessment.score
                ));
            }
            for conflict in &entry.conflicts {
                description.push_str(&format!("; CONFLICT with {}: {}", conflict.other_label, conflict.reason));
            }
            if !change.in_freeze.is_empty() {
                description.push_str("; scheduled into a freeze window (emergency)");
            }
            let event = icalendar::Event::new()
                .uid(&format!("change-{}@cmdb", change.change_id))
                .summary(&ics_text(&format!("{} {}", change.label(), change.details.title)))
                .description(&ics_text(&description))
                .starts(utc(window.start)?)
                .ends(utc(window.end)?)
                .add_property(
                    "STATUS",
                    if change.state == cmdb_core::change::ChangeState::Cancelled { "CANCELLED" } else { "CONFIRMED" },
                )
                .add_property("CATEGORIES", "CHANGE")
                .done();
            ics.push(event);
        }
        for freeze in &page.freezes {
            for (n, (start, end)) in freeze.occurrences.iter().enumerate() {
                let event = icalendar::Event::new()
                    .uid(&format!("freeze-{}-{n}-{}@cmdb", freeze.freeze.freeze.freeze_id, start.as_micros()))
                    .summary(&ics_text(&format!("FREEZE {}", freeze.freeze.freeze.name)))
                    .description(&ics_text(&freeze.freeze.freeze.reason))
                    .starts(utc(*start)?)
                    .ends(utc(*end)?)
                    .add_property("CATEGORIES", "FREEZE")
                    .done();
                ics.push(event);
            }
        }
    }
    let body = ics.done().to_string();
    Ok(([(header::CONTENT_TYPE, "text/calendar; charset=utf-8")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use icalendar::Component;
    use proptest::prelude::*;

    fn render(summary: &str, description: &str) -> String {
        let mut calendar = icalendar::Calendar::new();
        calendar.push(
            icalendar::Event::new()
                .uid("one@cmdb")
                .summary(&ics_text(summary))
                .description(&ics_text(description))
                .done(),
        );
        calendar.done().to_string()
    }

    #[test]
    fn the_reported_injection_stays_inside_its_property() {
        let ics = render("f\rEND:VEVENT\rBEGIN:VEVENT\rSUMMARY:X", "r\rATTACH:http://evil.example/x");
        assert_eq!(ics.split("\r\n").filter(|line| line.starts_with("BEGIN:VEVENT")).count(), 1, "{ics}");
        assert!(!ics.lines().any(|line| line.trim_end_matches('\r').starts_with("ATTACH")), "{ics}");
        assert!(ics.contains("SUMMARY:f\\nEND:VEVENT\\nBEGIN:VEVENT\\nSUMMARY:X"), "{ics}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// No text, whatever its characters, adds a line, a property or an event: every line
        /// ends with CR LF, the only lines are the writer's own or folded continuations, and a
        /// calendar parser reads back the text as given (line breaks as LF, controls dropped).
        #[test]
        fn no_text_can_add_a_line(summary in any::<String>(), description in "[\\r\\n;,:\\\\A-Za-z\\x00-\\x1f ]{0,80}") {
            let ics = render(&summary, &description);
            let body = ics.strip_suffix("\r\n").unwrap_or(&ics);
            for line in body.split("\r\n") {
                prop_assert!(!line.contains('\r') && !line.contains('\n'), "bare line break in {line:?}");
                let known = ["BEGIN:", "END:", "VERSION:", "PRODID:", "CALSCALE:", "UID:", "SUMMARY:", "DESCRIPTION:", "DTSTAMP:", " "];
                prop_assert!(known.iter().any(|k| line.starts_with(k)), "unexpected line {line:?}");
            }
            prop_assert_eq!(ics.matches("\r\nBEGIN:VEVENT\r\n").count(), 1);
            let parsed: icalendar::Calendar = ics.parse().map_err(|e: String| TestCaseError::fail(e))?;
            let events: Vec<_> = parsed.components.iter().filter_map(|c| c.as_event()).collect();
            prop_assert_eq!(events.len(), 1);
            let (summary, description) = (ics_text(&summary), ics_text(&description));
            prop_assert_eq!(events[0].get_summary(), Some(summary.as_str()));
            prop_assert_eq!(events[0].get_description(), Some(description.as_str()));
        }
    }
}
