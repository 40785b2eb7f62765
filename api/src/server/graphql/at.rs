//! `at(position:, time:)`: the composition root of every read at one moment. Each domain
//! contributes its own part (merged into one GraphQL type, `At`); this module only resolves the
//! moment.

use async_graphql::{Context, MergedObject, Object};

use super::calendar::CalendarAt;
use super::changes::ChangesAt;
use super::cis::CisAt;
use super::context::state;
use super::policy::PolicyAt;
use super::releases::ReleasesAt;
use super::reports::ReportsAt;
use super::scalars::{DateTime, Position};
use super::tooling::ToolingAt;
use crate::server::errors::{Code, bad_input, coded, graph_error};

/// The configuration, the changes and the calendar as they were at one position of the log:
/// every read inside happens at that one position.
#[derive(MergedObject)]
pub struct At(
    AtMoment,
    CisAt,
    ChangesAt,
    CalendarAt,
    PolicyAt,
    ReportsAt,
    ReleasesAt,
    ToolingAt,
    super::node::NodeAt,
    super::discovery::DiscoveryAt,
);

impl At {
    /// The view at `position`, asked as `requested`.
    fn new(position: u64, requested: u64) -> At {
        At(
            AtMoment { position, requested },
            CisAt { position },
            ChangesAt { position },
            CalendarAt { position },
            PolicyAt { position },
            ReportsAt { position },
            ReleasesAt { position },
            ToolingAt { position },
            super::node::NodeAt { position },
            super::discovery::DiscoveryAt { position },
        )
    }
}
/// Resolves `at(position:, time:, minPosition:)` to a position the graph has applied.
pub async fn resolve_at(
    ctx: &Context<'_>,
    position: Option<Position>,
    time: Option<DateTime>,
    min_position: Option<Position>,
) -> async_graphql::Result<At> {
    let app = state(ctx);
    if let Some(min) = min_position {
        // Looks at the log's head first: minPosition may come from a write through another server.
        if app.app.wait_for_graph(min.0).await.is_err() {
            return Err(coded(
                Code::Unavailable,
                format!("the graph has applied position {}, not yet minPosition {}; retry", app.graph.applied(), min.0),
            ));
        }
    }
    let graph = app.graph.read();
    let position = match (position, time) {
        (Some(_), Some(_)) => return Err(bad_input("give position or time, not both")),
        (Some(p), None) => {
            graph.check_position(p.0).map_err(graph_error)?;
            p.0
        }
        (None, Some(t)) => graph.position_at(t.0).map_err(graph_error)?,
        (None, None) => graph.applied(),
    };
    // Never inside one command's append: a state between its events never existed.
    Ok(At::new(graph.whole_commit(position), position))
}

/// Where the view is.
pub struct AtMoment {
    pub(super) position: u64,
    /// The position asked for (or that the time resolved to), before snapping to a commit.
    pub(super) requested: u64,
}

#[Object]
impl AtMoment {
    /// The position every read in this view happens at: the end of an atomic append (a
    /// commit). A position asked inside a commit of several events is snapped to its end
    /// (or, while the commit is still being applied, to the position before it).
    async fn position(&self) -> Position {
        Position(self.position)
    }

    /// The position asked for (or the one a `time` resolved to), before snapping.
    async fn requested_position(&self) -> Position {
        Position(self.requested)
    }

    /// Whether the position asked for was inside a commit and the view moved to its end.
    async fn snapped_to_commit(&self) -> bool {
        self.position != self.requested
    }

    /// When the event at this position was recorded.
    async fn time(&self, ctx: &Context<'_>) -> Option<DateTime> {
        state(ctx).graph.read().time_of(self.position).map(DateTime)
    }
}
