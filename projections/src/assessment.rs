//! The facts a change's risk assessment needs (CH-2), read from the temporal graph and the
//! change book at one position: the CIs and business services reached downstream of the
//! scope, the services' tiers, hours and owners, and the scope's recent failed changes. Core
//! holds no graph, so these facts enter the assess command as input
//! ([`cmdb_core::change::risk`] scores them).

use cmdb_core::change::Scope;
use cmdb_core::change::risk::{
    AssessmentFacts, CiFailures, MAX_ASSESSED_SERVICES, MAX_RISK_HISTORY_DAYS, ServiceBrief, ServiceFact, ServiceHours,
};
use cmdb_core::ci::{CiClass, CiId, CiSnapshot, RelType};
use cmdb_core::model::Severity;
use cmdb_core::time::Timestamp;

use crate::graph::{GraphError, TemporalGraph};

/// People listed as a service's owners at most.
pub const MAX_OWNER_CONTACTS: usize = 50;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A service reached: (service, tier, depth, severity).
type Fact = (std::sync::Arc<CiSnapshot>, Option<u8>, u32, Severity);

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
    // (service, tier, depth, severity): a service in scope is down at depth 0.
    let mut services: Vec<Fact> = scope
        .cis
        .iter()
        .filter_map(|id| graph.ci_at(*id, position))
        .filter(|ci| ci.class == CiClass::BusinessService)
        .map(|ci| (ci, 0, Severity::Down))
        .chain(reach.services.into_iter().map(|s| (s.ci, s.depth, s.severity)))
        .map(|(ci, depth, severity)| {
            let tier = tier(&ci);
            (ci, tier, depth, severity)
        })
        .collect();
    // Listed in full: down before degraded, then most critical, nearest, by name. The rest
    // (briefs, without names) in the same order with ids for names: comparing the names of
    // thousands of services tied on severity, tier and depth was a tenth of an assessment.
    let listed_in_full = |(a, ta, da, sa): &Fact, (b, tb, db, sb): &Fact| {
        sb.cmp(sa)
            .then_with(|| ta.unwrap_or(u8::MAX).cmp(&tb.unwrap_or(u8::MAX)))
            .then_with(|| da.cmp(db))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.id.cmp(&b.id))
    };
    if services.len() > MAX_ASSESSED_SERVICES {
        services.select_nth_unstable_by(MAX_ASSESSED_SERVICES, listed_in_full);
    }
    let listed_count = services.len().min(MAX_ASSESSED_SERVICES);
    let (listed, briefed) = services.split_at_mut(listed_count);
    listed.sort_unstable_by(listed_in_full);
    briefed.sort_unstable_by_key(|(ci, tier, depth, severity)| {
        (std::cmp::Reverse(*severity), tier.unwrap_or(u8::MAX), *depth, ci.id)
    });
    let other_services: Vec<ServiceBrief> = services
        .iter()
        .skip(MAX_ASSESSED_SERVICES)
        .map(|(ci, tier, depth, severity)| ServiceBrief {
            id: ci.id,
            tier: tier.filter(|t| *t <= 4),
            depth: *depth,
            severity: *severity,
        })
        .collect();
    services.truncate(MAX_ASSESSED_SERVICES);
    // Services share owners (a team owns many): each owner's contacts are looked up once.
    let mut contacts_of: rustc_hash::FxHashMap<CiId, Vec<String>> = rustc_hash::FxHashMap::default();
    let services = services
        .into_iter()
        .map(|(ci, tier, depth, severity)| ServiceFact {
            id: ci.id,
            name: ci.name.to_string(),
            tier: tier.filter(|t| *t <= 4),
            service_hours: ci.attributes.get("service_hours").and_then(ServiceHours::from_attribute),
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

fn tier(ci: &CiSnapshot) -> Option<u8> {
    ci.attributes.get("criticality_tier").and_then(|v| v.as_u64()).and_then(|t| u8::try_from(t).ok())
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
