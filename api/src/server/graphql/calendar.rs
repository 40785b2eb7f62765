//! The change calendar over GraphQL (CH-5): changes in a period, freeze windows and their
//! occurrences, conflicts, tier-1 service hours; the freeze mutations.

use super::change_views::Change;
use super::change_views::Conflict;
use super::change_views::conflicts_of;
use super::changes::change_at;
use super::cis::Environment;
use super::context::{Requires, app, metadata, parse_id, state};
use super::scalars::{DateTime, Position};
use crate::server::errors::{Code, app_error, bad_input, coded};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use cmdb_core::access::Operation;
use cmdb_core::change::ChangeCommand;
use cmdb_core::change::freeze::{FreezeId, FreezeRecord, FreezeSchedule, FreezeScope};
use cmdb_core::ci::CiId;
use cmdb_projections::calendar::{self as projection, CalendarFilter, MAX_CALENDAR_DAYS};

#[derive(SimpleObject)]
pub struct Interval {
    pub start: DateTime,
    pub end: DateTime,
}

/// A freeze (blackout) window.
pub struct Freeze {
    record: FreezeRecord,
    occurrences: Vec<(cmdb_core::Timestamp, cmdb_core::Timestamp)>,
    truncated: bool,
}

#[Object]
impl Freeze {
    async fn id(&self) -> ID {
        ID(self.record.freeze.freeze_id.to_string())
    }
    async fn name(&self) -> &str {
        &self.record.freeze.name
    }
    async fn reason(&self) -> &str {
        &self.record.freeze.reason
    }
    /// GLOBAL, ENVIRONMENT or SERVICE.
    async fn scope(&self) -> &'static str {
        match self.record.freeze.scope {
            FreezeScope::Global => "GLOBAL",
            FreezeScope::Environment { .. } => "ENVIRONMENT",
            FreezeScope::Service { .. } => "SERVICE",
        }
    }
    async fn environment(&self) -> Option<Environment> {
        match &self.record.freeze.scope {
            FreezeScope::Environment { environment } => Some((*environment).into()),
            _ => None,
        }
    }
    async fn service_id(&self) -> Option<ID> {
        match &self.record.freeze.scope {
            FreezeScope::Service { service } => Some(ID(service.to_string())),
            _ => None,
        }
    }
    /// The RRULE of a recurring freeze.
    async fn rrule(&self) -> Option<&str> {
        match &self.record.freeze.schedule {
            FreezeSchedule::Recurring { rrule, .. } => Some(rrule),
            FreezeSchedule::Interval { .. } => None,
        }
    }
    async fn time_zone(&self) -> Option<&str> {
        match &self.record.freeze.schedule {
            FreezeSchedule::Recurring { time_zone, .. } => Some(time_zone),
            FreezeSchedule::Interval { .. } => None,
        }
    }
    /// Occurrences within the range asked (for `freezes`: the next 90 days).
    async fn occurrences(&self) -> Vec<Interval> {
        self.occurrences.iter().map(|(s, e)| Interval { start: DateTime(*s), end: DateTime(*e) }).collect()
    }
    /// More occurrences than listed.
    async fn truncated(&self) -> bool {
        self.truncated
    }
    async fn created_by(&self) -> &str {
        &self.record.freeze.by
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.record.created.recorded_at)
    }
    async fn lifted_at(&self) -> Option<DateTime> {
        self.record.lifted.as_ref().map(|(_, at)| DateTime(at.recorded_at))
    }
}

/// A change on the calendar.
pub struct CalendarChange {
    entry: projection::CalendarEntry,
    position: u64,
}

#[Object]
impl CalendarChange {
    async fn change(&self) -> Change {
        Change::new(self.entry.change.clone(), self.position)
    }
    async fn start(&self) -> Option<DateTime> {
        self.entry.change.details.window.as_ref().map(|w| DateTime(w.start))
    }
    async fn end(&self) -> Option<DateTime> {
        self.entry.change.details.window.as_ref().map(|w| DateTime(w.end))
    }
    /// Scope in a line: how many CIs, and the first few names.
    async fn scope_summary(&self, ctx: &Context<'_>) -> String {
        let graph = state(ctx).graph.read();
        let cis = &self.entry.change.details.scope.cis;
        let names: Vec<String> =
            cis.iter().take(3).filter_map(|id| graph.ci_at(*id, self.position).map(|c| c.name.to_string())).collect();
        let planned = self.entry.change.details.scope.planned.len();
        format!(
            "{} CIs{}{}",
            cis.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({}{})", names.join(", "), if cis.len() > 3 { ", ..." } else { "" })
            },
            if planned > 0 { format!(", {planned} planned") } else { String::new() }
        )
    }
    async fn risk_level(&self) -> Option<super::risk::RiskLevel> {
        self.entry.change.assessment().map(|a| a.assessment.level.into())
    }
    async fn conflicts(&self) -> Vec<Conflict> {
        conflicts_of(self.entry.conflicts.clone(), self.position)
    }
    /// Freeze windows it was scheduled into (emergency changes pass, flagged).
    async fn in_freeze(&self) -> Vec<String> {
        self.entry.change.in_freeze.iter().map(|h| h.name.clone()).collect()
    }
    /// Tier-1 services whose hours its window touches (flagged for normal changes).
    async fn tier1_hours_touched(&self) -> &[String] {
        &self.entry.tier1_hours_touched
    }
}

#[derive(SimpleObject)]
pub struct ServiceHoursEntry {
    pub service_id: ID,
    pub name: String,
    pub tier: Option<i64>,
    /// When the service is in use; maintenance belongs outside these.
    pub hours: Vec<Interval>,
}

#[derive(SimpleObject)]
pub struct CalendarView {
    pub from: DateTime,
    pub to: DateTime,
    pub changes: Vec<CalendarChange>,
    pub freezes: Vec<Freeze>,
    pub service_hours: Vec<ServiceHoursEntry>,
    /// More changes matched than one page lists.
    pub truncated: bool,
}

pub fn check_range(from: DateTime, to: DateTime) -> async_graphql::Result<()> {
    if to.0 <= from.0 {
        return Err(bad_input(format!("to ({}) must be after from ({})", to.0, from.0)));
    }
    let days = (to.0.as_micros() - from.0.as_micros()) / 86_400_000_000;
    if days > MAX_CALENDAR_DAYS {
        return Err(crate::server::errors::limit_exceeded("max_calendar_days", days as u64, MAX_CALENDAR_DAYS as u64));
    }
    Ok(())
}

/// `calendar` inside `at`.
pub fn calendar_at(
    ctx: &Context<'_>,
    position: u64,
    from: DateTime,
    to: DateTime,
    environment: Option<Environment>,
    service: Option<ID>,
) -> async_graphql::Result<CalendarView> {
    check_range(from, to)?;
    let app = state(ctx);
    let filter = CalendarFilter {
        environment: environment.map(Into::into),
        service: service.as_ref().map(parse_id::<CiId>).transpose()?,
    };
    let graph = app.graph.read();
    let calendar = projection::calendar(&graph, position, from.0, to.0, &filter, app.settings.conflict_max_depth)
        .map_err(|e| bad_input(e.to_string()))?;
    Ok(CalendarView {
        from,
        to,
        changes: calendar.entries.into_iter().map(|entry| CalendarChange { entry, position }).collect(),
        freezes: calendar
            .freezes
            .into_iter()
            .map(|f| Freeze { record: f.freeze, occurrences: f.occurrences, truncated: f.truncated })
            .collect(),
        service_hours: calendar
            .service_hours
            .into_iter()
            .map(|s| ServiceHoursEntry {
                service_id: ID(s.service.to_string()),
                name: s.name,
                tier: s.tier,
                hours: s.hours.into_iter().map(|(a, b)| Interval { start: DateTime(a), end: DateTime(b) }).collect(),
            })
            .collect(),
        truncated: calendar.truncated,
    })
}

/// `conflicts(change:)` inside `at`: the change's conflicts with the changes scheduled then.
pub async fn conflicts_at(ctx: &Context<'_>, id: &ID, position: u64) -> async_graphql::Result<Vec<Conflict>> {
    let Some(change) = change_at(ctx, id, position)? else {
        return Err(coded(Code::NotFound, format!("no change {} at position {position}", id.as_str())));
    };
    let app = state(ctx);
    let graph = app.graph.read();
    let found = projection::conflicts_of_change(&graph, position, change.record(), app.settings.conflict_max_depth);
    Ok(conflicts_of(found, position))
}

/// `freezes` inside `at`: in force then, with occurrences over the next `days` (default 90).
pub fn freezes_at(ctx: &Context<'_>, position: u64, include_lifted: bool) -> async_graphql::Result<Vec<Freeze>> {
    let app = state(ctx);
    let graph = app.graph.read();
    let from = graph.time_of(position).unwrap_or_else(|| app.clock.now());
    let to = from.saturating_add_micros(90 * 86_400_000_000);
    let mut out = Vec::new();
    for record in graph.change_book().freezes().records.values() {
        if record.created.position > position || (!include_lifted && !record.in_force_at(position)) {
            continue;
        }
        let (occurrences, truncated) = record
            .freeze
            .schedule
            .occurrences(from, to, cmdb_core::change::freeze::MAX_OCCURRENCES_PER_QUERY)
            .map_err(|e| bad_input(e.to_string()))?;
        out.push(Freeze { record: record.clone(), occurrences, truncated });
    }
    Ok(out)
}

#[derive(InputObject)]
pub struct RecurrenceInput {
    /// An RFC 5545 RRULE, e.g. `FREQ=WEEKLY;BYDAY=FR`.
    pub rrule: String,
    /// The first occurrence's wall-clock start, `YYYY-MM-DDTHH:MM`, in `timeZone`.
    pub start_local: String,
    /// An IANA time zone.
    pub time_zone: String,
    pub duration_minutes: u32,
}

#[derive(InputObject)]
pub struct IntervalInput {
    pub start: DateTime,
    pub end: DateTime,
}

#[derive(InputObject)]
pub struct FreezeInput {
    pub name: String,
    pub reason: String,
    /// Freeze one environment (else everything, or `service`).
    pub environment: Option<Environment>,
    /// Freeze one business service and whatever reaches it.
    pub service: Option<ID>,
    /// One interval, or
    pub interval: Option<IntervalInput>,
    /// a recurrence.
    pub recurrence: Option<RecurrenceInput>,
}

#[derive(SimpleObject)]
pub struct FreezeResult {
    pub position: Position,
    pub id: ID,
}

#[derive(Default)]
pub struct CalendarMutation;

#[Object]
impl CalendarMutation {
    /// Creates a freeze (blackout) window: one interval or a recurrence, for everything, one
    /// environment or one business service (CH-5).
    #[graphql(guard = "Requires(Operation::ManageChanges)")]
    async fn create_freeze(&self, ctx: &Context<'_>, input: FreezeInput) -> async_graphql::Result<FreezeResult> {
        let scope = match (input.environment, input.service.as_ref()) {
            (None, None) => FreezeScope::Global,
            (Some(environment), None) => FreezeScope::Environment { environment: environment.into() },
            (None, Some(service)) => FreezeScope::Service { service: parse_id::<CiId>(service)? },
            (Some(_), Some(_)) => return Err(bad_input("give environment or service, not both")),
        };
        let schedule = match (input.interval, input.recurrence) {
            (Some(i), None) => FreezeSchedule::Interval { start: i.start.0, end: i.end.0 },
            (None, Some(r)) => FreezeSchedule::Recurring {
                rrule: r.rrule,
                start_local: r.start_local,
                time_zone: r.time_zone,
                duration_minutes: r.duration_minutes,
            },
            _ => return Err(bad_input("give exactly one of interval and recurrence")),
        };
        let freeze_id = FreezeId(state(ctx).ids.next_id());
        let command =
            ChangeCommand::CreateFreeze { freeze_id, name: input.name, scope, schedule, reason: input.reason };
        let position = app(ctx).change(&command, metadata(ctx)?).await.map_err(app_error)?.last_position;
        Ok(FreezeResult { position: Position(position), id: ID(freeze_id.to_string()) })
    }

    /// Lifts a freeze window, with the reason.
    #[graphql(guard = "Requires(Operation::ManageChanges)")]
    async fn lift_freeze(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, reason}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, reason}")] reason: Option<String>,
        input: Option<LiftFreezeInput>,
    ) -> async_graphql::Result<FreezeResult> {
        let any_loose = id.is_some() || reason.is_some();
        let loose = id.zip(reason).map(|(id, reason)| LiftFreezeInput { id, reason });
        let LiftFreezeInput { id, reason } = super::inputs::input_or(input, loose, any_loose, "{id, reason}")?;
        let freeze_id: FreezeId = parse_id(&id)?;
        let command = ChangeCommand::LiftFreeze { freeze_id, reason };
        let position = app(ctx).change(&command, metadata(ctx)?).await.map_err(app_error)?.last_position;
        Ok(FreezeResult { position: Position(position), id })
    }
}

/// The change calendar at one position (CH-5).
pub struct CalendarAt {
    pub(super) position: u64,
}

#[Object]
impl CalendarAt {
    /// The change calendar between two times (at most max_calendar_days apart; CH-5): changes
    /// whose window overlaps, with state, scope summary, risk and conflicts; freeze
    /// occurrences; the hours of tier-1 services (or of `service`).
    async fn calendar(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Start of the range; default: a week before now (as the .ics feed).")] from: Option<DateTime>,
        #[graphql(desc = "End of the range; default: 90 days after now.")] to: Option<DateTime>,
        environment: Option<Environment>,
        service: Option<ID>,
    ) -> async_graphql::Result<super::calendar::CalendarView> {
        let now = state(ctx).clock.now();
        let day = crate::server::ics::DAY_MICROS;
        let from = from.unwrap_or(DateTime(now.saturating_add_micros(-crate::server::ics::DEFAULT_PAST_DAYS * day)));
        let to = to.unwrap_or(DateTime(now.saturating_add_micros(crate::server::ics::DEFAULT_FUTURE_DAYS * day)));
        super::calendar::calendar_at(ctx, self.position, from, to, environment, service)
    }

    /// One change's conflicts with the changes scheduled here.
    async fn conflicts(
        &self,
        ctx: &Context<'_>,
        change: ID,
    ) -> async_graphql::Result<Vec<super::change_views::Conflict>> {
        super::calendar::conflicts_at(ctx, &change, self.position).await
    }

    /// Freeze windows in force here (all ever created with `includeLifted`), with their
    /// occurrences over the following 90 days.
    async fn freezes(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] include_lifted: bool,
    ) -> async_graphql::Result<Vec<super::calendar::Freeze>> {
        super::calendar::freezes_at(ctx, self.position, include_lifted)
    }
}

/// `liftFreeze(input:)`.
#[derive(async_graphql::InputObject)]
pub struct LiftFreezeInput {
    id: ID,
    reason: String,
}
