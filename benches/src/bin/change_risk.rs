//! Change control part 2 (issue 7) on the large estate: a risk assessment plus the approval
//! policy's decision for a change touching 20 CIs, end to end as the server makes it (facts
//! from the graph at the head, the formula, the policy input, the Rego evaluation). Also writes
//! a `whatIf` query file for `loadgen` with the same kind of scopes.
//!
//!     cargo run --release -p cmdb-benches --bin change_risk -- DIR [--query-file whatif.txt] [--assessments-only]
//!
//! `--assessments-only` leaves out the figure of one CI at random positions (20,000 walks).
//! The allocator is mimalloc, the server's.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use cmdb_core::access::AccessState;
use cmdb_core::change::decide::PolicyInput;
use cmdb_core::change::risk::{self, DEFAULT_RISK_HISTORY_DAYS};
use cmdb_core::change::{At, ChangeDetails, ChangeDrafted, ChangeRecord, ChangeType, Scope, Window};
use cmdb_core::ci::{ChangeId, CiClass, CiId, CiSnapshot};
use cmdb_core::policy::{self, PolicyRecord};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{EventStore, Timestamp};
use cmdb_projections::calendar::DEFAULT_CONFLICT_MAX_DEPTH;
use cmdb_projections::facts::{FactSettings, risk_facts};
use cmdb_projections::graph::CiFilter;
use cmdb_projections::runner::{RunnerOptions, start};
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// The server's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCOPE_CIS: usize = 20;
const SAMPLES: usize = 2_000;
const QUERY_LINES: usize = 500;

fn report(name: &str, histogram: &Histogram<u64>) {
    println!(
        "{name}: {} samples, ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        histogram.len(),
        histogram.value_at_quantile(0.5) as f64 / 1e6,
        histogram.value_at_quantile(0.9) as f64 / 1e6,
        histogram.value_at_quantile(0.99) as f64 / 1e6,
        histogram.value_at_quantile(0.999) as f64 / 1e6,
        histogram.max() as f64 / 1e6
    );
}

/// Part 3's first figure: the services a single random CI reaches at a random position.
fn one_ci_at_random_positions(
    graph: &cmdb_projections::graph::TemporalGraph,
    head: u64,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<()> {
    let mut one_ci = Histogram::<u64>::new(3)?;
    let mut at_head = Histogram::<u64>::new(3)?;
    let mut one_ci_services = Vec::new();
    let ids: Vec<CiId> = graph.cis_at(head, &CiFilter::default(), None, usize::MAX).0.iter().map(|c| c.id).collect();
    for _ in 0..20_000 {
        let id = ids[rng.random_range(0..ids.len())];
        let registered = graph.history(id).and_then(|(v, _)| v.first()).map_or(1, |v| v.from);
        let position = rng.random_range(registered..=head);
        let t = Instant::now();
        let reach = graph.reach(&[id], position)?;
        one_ci.record(t.elapsed().as_nanos() as u64)?;
        one_ci_services.push(reach.services.len());
        let t = Instant::now();
        std::hint::black_box(graph.reach(&[id], head)?);
        at_head.record(t.elapsed().as_nanos() as u64)?;
    }
    report("services reached by one random CI at a random position", &one_ci);
    println!(
        "  (the head index holds from position {:?}; the head is {head}; epochs of past hops and where they end: {:?})",
        graph.head_hops_valid_from(),
        graph.past_hops_epochs()
    );
    report("services reached by the same CIs at the head", &at_head);
    one_ci_services.sort_unstable();
    println!(
        "  services reached: median {} p99 {} max {}",
        one_ci_services[one_ci_services.len() / 2],
        one_ci_services[one_ci_services.len() * 99 / 100],
        one_ci_services[one_ci_services.len() - 1]
    );
    Ok(())
}

/// How much a 20-CI change reaches: CIs, services, services down.
fn print_sizes(mut reached_cis: Vec<u32>, mut reached_services: Vec<usize>, mut down_services: Vec<usize>) {
    reached_cis.sort_unstable();
    reached_services.sort_unstable();
    down_services.sort_unstable();
    println!(
        "  of those services down (the rest degraded): median {} p99 {} max {}",
        down_services[SAMPLES / 2],
        down_services[SAMPLES * 99 / 100],
        down_services[SAMPLES - 1]
    );
    println!(
        "reached per change: CIs median {} max {}; business services median {} max {}",
        reached_cis[SAMPLES / 2],
        reached_cis[SAMPLES - 1],
        reached_services[SAMPLES / 2],
        reached_services[SAMPLES - 1]
    );
}

/// `QUERY_LINES` `whatIf` queries of the same shape as the samples, for `loadgen`.
fn write_query_file(path: &std::path::Path, candidates: &[CiId], rng: &mut rand::rngs::StdRng) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path)?;
    for _ in 0..QUERY_LINES {
        let ids: Vec<String> = candidates.choose_multiple(rng, SCOPE_CIS).map(|id| format!("\"{id}\"")).collect();
        writeln!(
            file,
            "{{ at {{ whatIf(input: {{ type: NORMAL, title: \"what if\", scope: {{ cis: [{}] }}, window: {{ start: \"2030-01-08T22:00:00Z\", end: \"2030-01-09T00:00:00Z\" }} }}) {{ assessment {{ score level }} decision {{ autoApprove deny approvals {{ role principals count }} }} }} }} }}",
            ids.join(", ")
        )?;
    }
    println!("wrote {QUERY_LINES} whatIf queries to {}", path.display());
    Ok(())
}

/// What `change_risk` reads from its command line.
#[derive(clap::Parser)]
#[command(about = "Risk assessments and decisions on an estate, and one CI's reach at random positions")]
struct Args {
    /// The data directory of the estate
    data_dir: std::path::PathBuf,
    /// Also write whatIf queries of random 20-CI changes to this file, for loadgen
    #[arg(long)]
    query_file: Option<std::path::PathBuf>,
    /// Leave out the figure of one CI at random positions (20,000 walks)
    #[arg(long)]
    assessments_only: bool,
}

/// What `severityPath` on an assessment's listed services costs: one fixpoint, every chain read.
fn time_severity_paths(
    graph: &cmdb_projections::graph::TemporalGraph,
    scope: &[CiId],
    listed: &[CiId],
    head: u64,
    paths: &mut Histogram<u64>,
    chain_steps: &mut Vec<usize>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let chains = graph.severity_chains(scope, listed, head)?;
    paths.record(t.elapsed().as_nanos() as u64)?;
    chain_steps.extend(chains.iter().filter_map(|c| c.as_ref().ok()?.as_ref().map(Vec::len)));
    Ok(())
}

fn report_severity_paths(paths: &Histogram<u64>, mut chain_steps: Vec<usize>) {
    report("severity paths of the listed services (one fixpoint, after the decision)", paths);
    chain_steps.sort_unstable();
    if let (Some(median), Some(max)) = (chain_steps.get(chain_steps.len() / 2), chain_steps.last()) {
        println!("  steps per path: median {median} max {max}, {} paths", chain_steps.len());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { data_dir: dir, query_file, assessments_only } = clap::Parser::parse();
    let one_ci = !assessments_only;
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&dir, SqliteOptions::default())?);
    let started = Instant::now();
    let handle = start::<cmdb_projections::graph::TemporalGraph>(store.clone(), RunnerOptions::default()).await?;
    println!("graph ready in {:.1}s", started.elapsed().as_secs_f64());
    let access: AccessState = cmdb_core::access::load_state(store.as_ref()).await?;
    let graph = handle.read();
    let head = graph.applied();
    let now = graph.time_of(head).unwrap_or(Timestamp::from_micros(0));
    let technical = vec![CiClass::Application, CiClass::Database, CiClass::Host];
    let technical = [technical, vec![CiClass::VirtualMachine, CiClass::Container, CiClass::NetworkDevice]].concat();
    let filter = CiFilter { classes: Some(technical), ..CiFilter::default() };
    let candidates: Vec<CiId> = graph.cis_at(head, &filter, None, usize::MAX).0.iter().map(|c| c.id).collect();
    println!("{} technical CIs at head {head}", candidates.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let policy = PolicyRecord::default_policy();
    policy::compiled(&policy.text)?;

    let (mut total, mut facts_only, mut decide_only) =
        (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    let mut levels: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut truncated = 0;
    let mut reach_only = Histogram::<u64>::new(3)?;
    let (mut paths, mut chain_steps) = (Histogram::<u64>::new(3)?, Vec::new());
    // The formula, the policy input, the decision.
    let mut steps = [Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?];
    if one_ci {
        one_ci_at_random_positions(&graph, head, &mut rng)?;
    }
    let (mut reached_cis, mut reached_services, mut down_services) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..SAMPLES {
        let scope_cis: Vec<CiId> = candidates.choose_multiple(&mut rng, SCOPE_CIS).copied().collect();
        let start_hour = rng.random_range(0..24 * 30) as i64;
        let window = Window {
            start: now.saturating_add_micros(start_hour * 3_600_000_000),
            end: now.saturating_add_micros((start_hour + 2) * 3_600_000_000),
            time_zone: "Europe/Berlin".into(),
        };
        let details = ChangeDetails {
            title: format!("bench change {n}"),
            window: Some(window),
            implementer: Some("bench".into()),
            scope: Scope { cis: scope_cis.clone(), planned: vec![] },
            ..ChangeDetails::default()
        };
        let drafted = ChangeDrafted {
            change_id: ChangeId(uuid::Uuid::nil()),
            change_type: ChangeType::Normal,
            template_id: None,
            requester: "bench".into(),
            details,
        };
        let t = Instant::now();
        std::hint::black_box(graph.reach(&scope_cis, head)?);
        reach_only.record(t.elapsed().as_nanos() as u64)?;
        let t = Instant::now();
        // What the server does for an assessment: scope snapshots, facts, formula, policy.
        let cis: BTreeMap<CiId, Option<CiSnapshot>> =
            scope_cis.iter().map(|id| (*id, graph.ci_at(*id, head).map(|c| (*c).clone()))).collect();
        let record = ChangeRecord::drafted(&drafted, At { position: head, recorded_at: now });
        // With the calendar around the window, as the server's assessment has it.
        let settings =
            FactSettings { history_days: DEFAULT_RISK_HISTORY_DAYS, conflict_max_depth: DEFAULT_CONFLICT_MAX_DEPTH };
        let facts = risk_facts(&graph, None, &record.details, head, now, settings)?;
        let facts_done = t.elapsed();
        truncated += usize::from(facts.truncated);
        reached_cis.push(facts.downstream_cis);
        reached_services.push(facts.services.len() + facts.other_services.len());
        down_services.push(facts.services_with(cmdb_core::model::Severity::Down));
        let listed: Vec<CiId> = facts.services.iter().map(|s| s.id).collect();
        let assessment = risk::assess(facts, ChangeType::Normal, record.details.window.as_ref());
        let assessed = t.elapsed();
        let input = PolicyInput::new(&record, Some(&assessment), &access, &cis, now);
        let input_built = t.elapsed();
        let decision = policy::decide(&policy, &input)?;
        let elapsed = t.elapsed();
        steps[0].record((assessed - facts_done).as_nanos() as u64)?;
        steps[1].record((input_built - assessed).as_nanos() as u64)?;
        steps[2].record((elapsed - input_built).as_nanos() as u64)?;
        total.record(elapsed.as_nanos() as u64)?;
        facts_only.record(facts_done.as_nanos() as u64)?;
        decide_only.record((elapsed - facts_done).as_nanos() as u64)?;
        *levels.entry(assessment.level.as_str()).or_default() += 1;
        std::hint::black_box(decision);
        time_severity_paths(&graph, &scope_cis, &listed, head, &mut paths, &mut chain_steps)?;
    }
    report("assessment + decision, 20 CIs, end to end", &total);
    report("  of which facts from the graph", &facts_only);
    report("  (the walk alone, measured apart)", &reach_only);
    report("  of which formula, policy input and Rego decision", &decide_only);
    report("    the formula (risk::assess)", &steps[0]);
    report("    the policy input", &steps[1]);
    report("    the decision (policy::decide)", &steps[2]);
    report_severity_paths(&paths, chain_steps);
    println!("levels: {levels:?}; downstream walks truncated: {truncated} of {SAMPLES}");
    print_sizes(reached_cis, reached_services, down_services);

    if let Some(path) = query_file {
        write_query_file(&path, &candidates, &mut rng)?;
    }
    Ok(())
}
