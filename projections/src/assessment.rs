//! The facts a change's risk assessment needs (CH-2), read from the temporal graph and the
//! change book at one position: the CIs and business services reached downstream of the
//! scope, the services' tiers, hours and owners, and the scope's recent failed changes. Core
//! holds no graph, so these facts enter the assess command as input
//! ([`cmdb_core::change::risk`] scores them).

use std::sync::Arc;

use cmdb_core::change::Scope;
use cmdb_core::change::risk::{
    AssessmentFacts, CiFailures, MAX_ASSESSED_SERVICES, MAX_RISK_HISTORY_DAYS, ServiceBrief, ServiceFact, ServiceHours,
};
use cmdb_core::ci::{CiClass, CiId, CiSnapshot, RelType};
use cmdb_core::model::Severity;
use cmdb_core::time::Timestamp;

use crate::graph::{GraphError, HoursPatterns, ServiceReached, TemporalGraph, criticality_tier};

/// People listed as a service's owners at most.
pub const MAX_OWNER_CONTACTS: usize = 50;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A service listed in full, with the version read for it and that version's service hours.
type Listed = (ServiceReached, Arc<CiSnapshot>, Option<Arc<ServiceHours>>);

/// Computes the facts for `scope` at `position`; `now` bounds the history window.
pub fn assessment_facts(
    graph: &TemporalGraph,
    scope: &Scope,
    position: u64,
    now: Timestamp,
    history_days: u32,
) -> Result<AssessmentFacts, GraphError> {
    let history_days = history_days.clamp(1, MAX_RISK_HISTORY_DAYS);
    let reach = graph.reach(&scope.cis, position)?;
    // A service in scope is down at depth 0.
    let mut services: Vec<ServiceReached> = scope
        .cis
        .iter()
        .filter_map(|id| graph.ci_and_node_at(*id, position))
        .filter(|(ci, _)| ci.class == CiClass::BusinessService)
        .map(|(ci, node)| ServiceReached {
            id: ci.id,
            tier: criticality_tier(&ci),
            depth: 0,
            severity: Severity::Down,
            node,
        })
        .chain(reach.services)
        .collect();
    let (listed, other_services) = rank_services(graph, &mut services, position);
    // Services share owners (a team owns many): each owner's contacts are looked up once.
    let mut contacts_of: rustc_hash::FxHashMap<CiId, Vec<String>> = rustc_hash::FxHashMap::default();
    let services = listed
        .into_iter()
        .map(|(ServiceReached { tier, depth, severity, .. }, ci, service_hours)| ServiceFact {
            id: ci.id,
            name: ci.name.to_string(),
            tier: tier.filter(|t| *t <= 4),
            service_hours,
            owner_contacts: ci
                .owner
                .map(|owner| contacts_of.entry(owner).or_insert_with(|| owner_contacts(graph, owner, position)).clone())
                .unwrap_or_default(),
            depth,
            severity,
        })
        .collect();
    let since = now.saturating_add_micros(-i64::from(history_days) * MICROS_PER_DAY);
    let failures = scope
        .cis
        .iter()
        .filter_map(|ci| {
            let (failed, backed_out) = graph.change_book().failures_of(*ci, position, since, now);
            (failed + backed_out > 0).then_some(CiFailures { ci: *ci, failed, backed_out })
        })
        .collect();
    Ok(AssessmentFacts {
        position,
        computed_at: now,
        downstream_cis: u32::try_from(reach.cis).unwrap_or(u32::MAX),
        truncated: false,
        services,
        services_not_listed: other_services.len() as u32,
        other_services,
        history_days,
        failures,
        calendar: None,
    })
}

/// Ranks the services reached: down before degraded, most critical (no tier last), nearest,
/// then by name and id. The first [`MAX_ASSESSED_SERVICES`] are listed in full, with their
/// versions; the rest are briefed in the same order with their ids in place of their names.
///
/// Names are read only where the rank needs them: the services are first ordered by
/// (severity, tier, depth, id) from what the walk found, which is the order of the briefs;
/// then the listed ones, and the ones tied with the last of them on (severity, tier, depth),
/// are read and ordered by name within their rank. Reading the versions of 4,500 services to
/// compare names was most of an assessment's time beyond the walk.
fn rank_services(
    graph: &TemporalGraph,
    services: &mut [ServiceReached],
    position: u64,
) -> (Vec<Listed>, Vec<ServiceBrief>) {
    // The rank packed in one `u64` and the id compared as a `u128` (the same order as the
    // tuple and the id's bytes, with two compares instead of five and a `memcmp` call).
    let rank = packed_rank;
    services.sort_unstable_by_key(|s| (rank(s), s.id.0.as_u128()));
    let listed_count = services.len().min(MAX_ASSESSED_SERVICES);
    // The services that may be listed: those before the last listed one's rank, and all of that rank.
    let read_count = match listed_count.checked_sub(1).map(|last| rank(&services[last])) {
        Some(last_rank) => listed_count + services[listed_count..].iter().take_while(|s| rank(s) == last_rank).count(),
        None => 0,
    };
    // The hours of versions older than the services' newest are read here, shared by pattern.
    let mut patterns = HoursPatterns::default();
    let mut read: Vec<Listed> = services[..read_count]
        .iter()
        .filter_map(|s| {
            let (ci, hours) = graph.service_version(s.node, position, &mut patterns)?;
            Some((*s, ci, hours))
        })
        .collect();
    read.sort_unstable_by(|(a, a_ci, _), (b, b_ci, _)| {
        rank(a).cmp(&rank(b)).then_with(|| a_ci.name.cmp(&b_ci.name)).then_with(|| a.id.cmp(&b.id))
    });
    let not_listed = read.split_off(listed_count.min(read.len()));
    // Those of the last listed rank left out come before every later rank: ordered by id.
    let mut briefed: Vec<ServiceReached> = not_listed.into_iter().map(|(s, ..)| s).collect();
    briefed.sort_unstable_by_key(|s| s.id.0.as_u128());
    briefed.extend_from_slice(&services[read_count..]);
    debug_assert!(briefed.is_sorted_by_key(|s| (rank(s), s.id)), "the briefs keep the rank, then the id");
    let briefs = briefed
        .into_iter()
        .map(|s| ServiceBrief { id: s.id, tier: s.tier.filter(|t| *t <= 4), depth: s.depth, severity: s.severity })
        .collect();
    (read, briefs)
}

/// `(down first, tier with none last, depth)` as one number ordered the same way, and equal
/// exactly when the tuple is (each part has its own bits).
#[inline]
fn packed_rank(s: &ServiceReached) -> u64 {
    let severity = match s.severity {
        Severity::Down => 0,
        Severity::Degraded => 1,
    };
    severity << 40 | u64::from(s.tier.unwrap_or(u8::MAX)) << 32 | u64::from(s.depth)
}

fn email(ci: &CiSnapshot) -> Option<String> {
    ci.attributes.get("email").and_then(|v| v.as_str()).map(str::to_owned)
}

/// The owner's e-mail if a person; the e-mails of the people `part_of` it if a team.
fn owner_contacts(graph: &TemporalGraph, owner: CiId, position: u64) -> Vec<String> {
    let Some(owner_ci) = graph.ci_at(owner, position) else { return Vec::new() };
    match owner_ci.class {
        CiClass::Person => email(&owner_ci).into_iter().collect(),
        CiClass::Team => {
            let mut contacts: Vec<String> = graph
                .relationships_at(position, Some(owner), Some(&[RelType::PartOf]))
                .into_iter()
                .filter(|rel| rel.target == owner)
                .filter_map(|rel| graph.ci_at(rel.source, position))
                .filter(|ci| ci.class == CiClass::Person)
                .filter_map(|ci| email(&ci))
                .collect();
            contacts.sort();
            contacts.dedup();
            contacts.truncate(MAX_OWNER_CONTACTS);
            contacts
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petgraph::stable_graph::NodeIndex;

    /// The packed rank orders services as the tuple it stands for, at the ends of each range.
    #[test]
    fn the_packed_rank_orders_as_the_tuple() {
        let mut services = Vec::new();
        for severity in [Severity::Down, Severity::Degraded] {
            for tier in [None, Some(0), Some(1), Some(4), Some(u8::MAX - 1), Some(u8::MAX)] {
                for depth in [0, 1, 7, u32::MAX - 1, u32::MAX] {
                    let id = CiId(uuid::Uuid::from_u128(services.len() as u128));
                    services.push(ServiceReached { id, tier, depth, severity, node: NodeIndex::new(0) });
                }
            }
        }
        let rank = |s: &ServiceReached| (std::cmp::Reverse(s.severity), s.tier.unwrap_or(u8::MAX), s.depth);
        for a in &services {
            for b in &services {
                assert_eq!(packed_rank(a).cmp(&packed_rank(b)), rank(a).cmp(&rank(b)), "{a:?} against {b:?}");
            }
        }
    }
}
