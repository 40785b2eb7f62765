//! The Relay `Node` interface: one lookup, `node(id:)`, for everything with a global id. Every
//! id the engine makes is a UUIDv7, unique across CIs, changes and releases, so the id is used
//! as it is (no type prefix); `node` finds which kind it names.

use async_graphql::{Context, ID, Interface, Object};
use cmdb_core::access::Operation;

use super::change_views::Change;
use super::cis::Ci;
use super::context::{Requires, state};
use super::releases::Release;

/// Something with a globally unique id.
#[allow(clippy::large_enum_variant, reason = "one per node(id:) answer, never stored")]
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "Globally unique: every id the engine makes is a UUIDv7."))]
pub enum Node {
    /// A configuration item.
    Ci(Ci),
    /// A change request.
    Change(Change),
    /// A release.
    Release(Release),
}

/// `node(id:)`: the CI, change or release with that id as it stood at `position`; null when
/// none has it there (like every single lookup), or when the id is not an id at all.
pub fn node_at(ctx: &Context<'_>, id: &ID, position: u64) -> Option<Node> {
    let uuid: uuid::Uuid = id.parse().ok()?;
    let graph = state(ctx).graph.read();
    if let Some(ci) = graph.ci_at(cmdb_core::ci::CiId(uuid), position) {
        return Some(Node::Ci(Ci::new(&graph, ci, position)));
    }
    if let Some(record) = graph.change_book().change_at(cmdb_core::ci::ChangeId(uuid), position) {
        return Some(Node::Change(Change::new(record, position)));
    }
    let release = graph.release_book().release_at(cmdb_core::ids::ReleaseId(uuid), position)?;
    Some(Node::Release(Release::new(release, state(ctx).settings.release_review_days, position)))
}

/// `node` inside `at`.
pub struct NodeAt {
    pub(super) position: u64,
}

#[Object]
impl NodeAt {
    /// The CI, change or release with this id as it stood here (Relay's `node`); null if none.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Option<Node> {
        node_at(ctx, &id, self.position)
    }
}
