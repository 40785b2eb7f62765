//! Change analysis over GraphQL (CH-10): counts, ratios and mean times per day, week or month, the
//! CIs and services changed most, failures by class.

use super::cis::Ci;
use super::context::state;
use super::scalars::DateTime;
use crate::server::errors::bad_input;
use async_graphql::{Context, Enum, Object, SimpleObject};
use cmdb_projections::reports::{self, Figures, Period};

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReportPeriod {
    Day,
    Week,
    Month,
}

/// The figures of one period (UTC) or of the whole range.
#[derive(SimpleObject)]
pub struct PeriodFigures {
    pub start: Option<DateTime>,
    pub end: Option<DateTime>,
    /// Changes submitted (or recorded retrospectively) in the period.
    pub total: u32,
    pub standard: u32,
    pub normal: u32,
    pub emergency: u32,
    /// Closed without failing.
    pub successful: u32,
    /// Failed or backed out.
    pub failed: u32,
    pub rejected: u32,
    pub cancelled: u32,
    pub open: u32,
    /// successful / (successful + failed).
    pub success_rate: Option<f64>,
    pub emergency_ratio: Option<f64>,
    /// Emergency changes recorded after the work (unauthorised at the time), over all.
    pub retrospective_ratio: Option<f64>,
    pub retrospective: u32,
    pub overdue_reviews: u32,
    /// Changes scheduled into a freeze window (emergency changes pass, flagged).
    pub in_freeze: u32,
    /// Changes followed by an incident on one of their CIs within `--incident-link-hours` of
    /// their deployment (or implementation).
    pub followed_by_incidents: u32,
    /// Deployments observed with no change covering them, recorded in the period (CM-3).
    pub unauthorised: u32,
    /// Findings of configuration audits no change authorised, in the first audit of each
    /// discovery run recorded in the period (CM-7).
    pub unauthorised_drift: u32,
    pub mean_hours_to_approval: Option<f64>,
    pub mean_hours_to_implementation: Option<f64>,
}

impl From<&Figures> for PeriodFigures {
    fn from(f: &Figures) -> Self {
        PeriodFigures {
            start: f.start.map(DateTime),
            end: f.end.map(DateTime),
            total: f.total,
            standard: f.standard,
            normal: f.normal,
            emergency: f.emergency,
            successful: f.successful,
            failed: f.failed,
            rejected: f.rejected,
            cancelled: f.cancelled,
            open: f.open,
            success_rate: f.success_rate(),
            emergency_ratio: f.emergency_ratio(),
            retrospective_ratio: f.retrospective_ratio(),
            retrospective: f.retrospective,
            overdue_reviews: f.overdue_reviews,
            in_freeze: f.in_freeze,
            followed_by_incidents: f.followed_by_incidents,
            unauthorised: f.unauthorised,
            unauthorised_drift: f.unauthorised_drift,
            mean_hours_to_approval: f.mean_hours_to_approval(),
            mean_hours_to_implementation: f.mean_hours_to_implementation(),
        }
    }
}

#[derive(SimpleObject)]
pub struct ChangedCi {
    pub ci: Option<Ci>,
    pub ci_id: async_graphql::ID,
    pub changes: u32,
}

#[derive(SimpleObject)]
pub struct ClassCount {
    pub class: String,
    pub failed_changes: u32,
}

#[derive(SimpleObject)]
pub struct ChangeReport {
    pub periods: Vec<PeriodFigures>,
    pub totals: PeriodFigures,
    pub cis_changed_most: Vec<ChangedCi>,
    pub services_changed_most: Vec<ChangedCi>,
    pub failed_by_class: Vec<ClassCount>,
}

/// How far back a change report reaches when `from` is not given, in days.
pub const DEFAULT_REPORT_DAYS: i64 = 180;

pub fn change_report_at(
    ctx: &Context<'_>,
    position: u64,
    from: DateTime,
    to: DateTime,
    period: ReportPeriod,
    now: Option<DateTime>,
) -> async_graphql::Result<ChangeReport> {
    let app = state(ctx);
    let period = match period {
        ReportPeriod::Day => Period::Day,
        ReportPeriod::Week => Period::Week,
        ReportPeriod::Month => Period::Month,
    };
    let now = now.map_or_else(|| app.clock.now(), |n| n.0);
    let graph = app.graph.read();
    let report =
        reports::change_report_linking(&graph, position, from.0, to.0, period, now, app.settings.incident_link_hours)
            .map_err(|e| bad_input(e.to_string()))?;
    let changed = |list: &[(cmdb_core::ci::CiId, u32)]| {
        list.iter()
            .map(|(id, n)| ChangedCi {
                ci: graph.ci_at(*id, position).map(|c| Ci::new(&graph, c, position)),
                ci_id: async_graphql::ID(id.to_string()),
                changes: *n,
            })
            .collect()
    };
    Ok(ChangeReport {
        periods: report.buckets.iter().map(Into::into).collect(),
        totals: (&report.totals).into(),
        cis_changed_most: changed(&report.top_cis),
        services_changed_most: changed(&report.top_services),
        failed_by_class: report
            .failed_by_class
            .iter()
            .map(|(class, n)| ClassCount { class: class.as_str().to_owned(), failed_changes: *n })
            .collect(),
    })
}

/// Change analysis at one position (CH-10).
pub struct ReportsAt {
    pub(super) position: u64,
}

#[Object]
impl ReportsAt {
    /// Change analysis (CH-10) for changes submitted in [from, to), per UTC day, week or
    /// month, as known here; `now` (default: the server's clock) decides what is overdue.
    async fn change_report(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Start of the report; default: 180 days before `to`.")] from: Option<DateTime>,
        #[graphql(desc = "End of the report; default: now.")] to: Option<DateTime>,
        #[graphql(default_with = "super::reports::ReportPeriod::Month")] period: super::reports::ReportPeriod,
        now: Option<DateTime>,
    ) -> async_graphql::Result<super::reports::ChangeReport> {
        let to = to.unwrap_or(DateTime(state(ctx).clock.now()));
        let from = from.unwrap_or(DateTime(to.0.saturating_add_micros(-DEFAULT_REPORT_DAYS * 86_400_000_000)));
        super::reports::change_report_at(ctx, self.position, from, to, period, now)
    }
}
