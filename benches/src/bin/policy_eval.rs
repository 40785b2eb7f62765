//! Where a policy decision's time goes (issue 15, part 3: the Rego decision alone took 5 ms of
//! a 20-CI change's assessment on the large estate). The default policy on an input shaped as
//! the engine builds it, with `--services` business services in the assessment (the engine
//! lists at most 500): the whole `policy::decide`, then its steps apart.
//!
//!     cargo run --release -p cmdb-benches --bin policy_eval -- --services 500

use std::time::Instant;

use clap::Parser;
use cmdb_core::policy::{DECISION_RULE, DEFAULT_POLICY, PolicyRecord, decide};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Business services in the assessment.
    #[arg(long, default_value_t = 500)]
    services: usize,
    /// Decisions timed.
    #[arg(long, default_value_t = 300)]
    samples: usize,
}

fn input(services: usize) -> Value {
    let services: Vec<Value> = (0..services)
        .map(|i| {
            json!({"id": format!("00000000-0000-7000-8000-{i:012}"), "name": format!("service-{i}"),
                "tier": 1 + i % 3, "depth": 1 + i % 6, "severity": if i % 4 == 0 { "down" } else { "degraded" },
                "window_in_service_hours": i % 5 == 0, "owners": [format!("owner-{}", i % 40)]})
        })
        .collect();
    let scope: Vec<Value> = (0..20)
        .map(
            |i| json!({"id": format!("00000000-0000-7000-9000-{i:012}"), "class": "host", "name": format!("host-{i}")}),
        )
        .collect();
    json!({
        "now": "2026-12-04T10:00:00Z", "now_ns": 1_796_378_400_000_000_000_i64,
        "change": {"id": "00000000-0000-7000-8000-00000000ffff", "number": "CHG-000001", "type": "normal",
            "title": "t", "requester": "r", "implementer": "i", "template": null, "window": null,
            "scope": {"cis": scope, "planned": []}},
        "requester_roles": ["editor"],
        "assessment": {"score": 80, "level": "critical", "formula_version": 2, "position": 1, "downstream_cis": 26000,
            "truncated": false, "services": services, "services_not_listed": 4000, "services_down": 1100,
            "services_degraded": 3400, "recent_failures": 0, "history_days": 90,
            "factors": [{"name": "change_type", "points": 10, "why": "normal"}]},
        "calendar": null,
    })
}

fn time<T>(histogram: &mut Histogram<u64>, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = work();
    histogram.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)).ok();
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let input = input(args.services);
    let policy = PolicyRecord::default_policy();
    decide(&policy, &input)?; // compiles and keeps the policy
    let mut engine = regorus::Engine::new();
    engine.add_policy("policy.rego".into(), DEFAULT_POLICY.to_owned()).map_err(anyhow::Error::msg)?;
    let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let (mut whole, mut text, mut parse, mut clone, mut eval) = (new()?, new()?, new()?, new()?, new()?);
    let (mut native, mut interpreted) = (new()?, new()?);
    let compiled = cmdb_core::policy::compiled(DEFAULT_POLICY)?;
    anyhow::ensure!(cmdb_core::policy::native::decision(&input).is_some(), "the native policy declines this input");
    for _ in 0..args.samples {
        time(&mut whole, || decide(&policy, &input))?;
        time(&mut native, || cmdb_core::policy::native::decision(&input));
        time(&mut interpreted, || compiled.evaluate(&input))?;
        let serialised = time(&mut text, || input.to_string());
        let value = time(&mut parse, || regorus::Value::from_json_str(&serialised)).map_err(anyhow::Error::msg)?;
        let mut copy = time(&mut clone, || engine.clone());
        copy.set_input(value);
        time(&mut eval, || copy.eval_rule(DECISION_RULE.into())).map_err(anyhow::Error::msg)?;
    }
    let p = |h: &Histogram<u64>| {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3
        )
    };
    println!("default policy, {} services, {} samples:", args.services, args.samples);
    println!("  policy::decide, whole:       {}", p(&whole));
    println!("  native::decision (what decide runs for the default): {}", p(&native));
    println!("  Policy::evaluate (the interpreter, what replay runs): {}", p(&interpreted));
    println!("  input to JSON text (x2 in decide): {}", p(&text));
    println!("  text to a regorus value:     {}", p(&parse));
    println!("  engine clone:                {}", p(&clone));
    println!("  eval_rule(decision):         {}", p(&eval));
    Ok(())
}
