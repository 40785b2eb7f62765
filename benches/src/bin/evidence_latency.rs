//! Issue 18's evidence figures, from HDR histograms:
//! - inclusion and consistency proofs of random events / sizes in a 3-million-event tree
//!   (target p99 <= 1 ms each);
//! - verification as `cmdb proof verify` does it, excluding process start: read the proof and
//!   the signed checkpoint from files, check the note's signature, the proof, and re-hash the
//!   event (target p99 <= 1 ms);
//! - append throughput of 1 writer x batches of 100 x 500 B to the embedded log, with and
//!   without the evidence projection following it (target: no more than 5 % below);
//! - append throughput with a random salt per payload (chain version 2, what every append
//!   does since redaction) against the same appends sealed as version 1 (no salt), the cost of
//!   the salted commitment.
//!
//! `cargo run --release -p cmdb-benches --bin evidence_latency [-- --leaves 3000000]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cmdb_benches::bench_event;
use cmdb_core::merkle::{self, MerkleTree};
use cmdb_core::note::{Checkpoint, NoteSigner};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{AppendRequest, EventStore, ExpectedVersion, PayloadSeal, StreamId};
use cmdb_projections::evidence::EvidenceLog;
use cmdb_projections::runner::{self, RunnerOptions};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// Leaves in the tree the proofs are taken from.
    #[arg(long, default_value_t = 3_000_000)]
    leaves: u64,
    /// Proofs of each kind measured.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Events appended in each throughput run.
    #[arg(long, default_value_t = 300_000)]
    append_events: u64,
    /// Throughput runs of each kind (alternating, the best of each kept).
    #[arg(long, default_value_t = 8)]
    append_runs: usize,
    /// Only the append comparisons (no proofs).
    #[arg(long)]
    appends_only: bool,
}

fn timed<T>(histogram: &mut Histogram<u64>, work: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = std::hint::black_box(work());
    histogram.record(start.elapsed().as_nanos() as u64).expect("record");
    out
}

fn proofs(args: &Args) {
    let started = Instant::now();
    let mut tree = MerkleTree::default();
    for n in 0..args.leaves {
        tree.push(blake3::hash(&n.to_be_bytes()).as_bytes());
    }
    println!("tree of {} leaves built in {:?}", tree.size(), started.elapsed());
    // What a restart costs: the tree is most of the evidence projection's checkpoint.
    let started = Instant::now();
    let bytes = postcard::to_allocvec(&tree).expect("serialise");
    let saved = started.elapsed();
    let started = Instant::now();
    let loaded: MerkleTree = postcard::from_bytes(&bytes).expect("deserialise");
    println!(
        "tree checkpoint: {} MiB, serialised in {saved:?}, loaded in {:?}",
        bytes.len() / (1024 * 1024),
        started.elapsed()
    );
    assert_eq!(loaded.size(), tree.size());
    let size = tree.size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let (mut inclusion, mut consistency) = (Histogram::<u64>::new(3).expect("h"), Histogram::<u64>::new(3).expect("h"));
    let (mut verify_inclusion, mut verify_consistency) =
        (Histogram::<u64>::new(3).expect("h"), Histogram::<u64>::new(3).expect("h"));
    let root = tree.root(size).expect("root");
    for _ in 0..args.samples {
        let index = rng.random_range(0..size);
        let proof = timed(&mut inclusion, || tree.inclusion_proof(index, size).expect("proof"));
        let leaf = tree.leaf(index).expect("leaf");
        timed(&mut verify_inclusion, || merkle::verify_inclusion(index, size, &leaf, &proof, &root).expect("ok"));
        let from = rng.random_range(1..size);
        // As a caller asks: the proof and the older root (both from the tree).
        let (proof, old) = timed(&mut consistency, || {
            (tree.consistency_proof(from, size).expect("proof"), tree.root(from).expect("root"))
        });
        timed(&mut verify_consistency, || merkle::verify_consistency(from, size, &old, &root, &proof).expect("ok"));
    }
    cmdb_benches::report_micros("inclusion proof (3M tree)", &inclusion);
    cmdb_benches::report_micros("consistency proof + old root (3M tree)", &consistency);
    cmdb_benches::report_micros("verify inclusion (hashes only)", &verify_inclusion);
    cmdb_benches::report_micros("verify consistency (hashes only)", &verify_consistency);
    cli_verify(args, &tree);
}

/// What `cmdb proof verify` does after the process starts: read the files, parse, check the
/// signature and the proof, re-hash the event.
fn cli_verify(args: &Args, tree: &MerkleTree) {
    use cmdb_api::evidence_cli::VerifyInputs;
    let dir = tempfile::tempdir().expect("dir");
    let signer = NoteSigner::generate("bench.example/log", [9; 32]).expect("key");
    let size = tree.size();
    let note = signer
        .sign(&Checkpoint { origin: "bench.example/log".into(), size, root: tree.root(size).expect("root") }.text())
        .expect("sign");
    let note_path = dir.path().join("checkpoint");
    std::fs::write(&note_path, &note).expect("write");
    let verifier = signer.verifier().to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let mut histogram = Histogram::<u64>::new(3).expect("h");
    let proof_path = dir.path().join("proof.json");
    for _ in 0..args.samples.min(5_000) {
        let index = rng.random_range(0..size);
        let leaf_input = blake3::hash(&index.to_be_bytes());
        let file = serde_json::json!({
            "kind": "inclusion",
            "position": index + 1,
            "tree_size": size,
            "leaf_input": leaf_input.to_hex().to_string(),
            "hashes": tree.inclusion_proof(index, size).expect("proof"),
            "checkpoint": null,
            "event": null,
        });
        std::fs::write(&proof_path, file.to_string()).expect("write");
        timed(&mut histogram, || {
            let inputs = VerifyInputs::read(&verifier, &proof_path, Some(&note_path), None).expect("inputs");
            inputs.verify().expect("verified")
        });
    }
    cmdb_benches::report_micros("cmdb proof verify, in process (read files, signature, proof)", &histogram);
}

/// Appends `events` in batches of 100; `unsalted` seals them as chain version 1 (no salt).
fn append_run(store: &SqliteStore, runtime: &tokio::runtime::Runtime, events: u64, unsalted: bool) -> f64 {
    runtime.block_on(async {
        let started = Instant::now();
        let mut n = 0;
        while n < events {
            let batch = (0..100).map(|i| bench_event(500, n + i)).collect();
            let stream = StreamId::new(format!("ci-{}", n % 1000)).expect("stream");
            let mut request = AppendRequest::single(stream, ExpectedVersion::Any, batch);
            if unsalted {
                request.seals = vec![PayloadSeal::Plain; 100];
            }
            store.append(request).await.expect("append");
            n += 100;
        }
        events as f64 / started.elapsed().as_secs_f64()
    })
}

fn appends(args: &Args) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for run in 0..args.append_runs {
        // Alternate which goes first, so neither always meets a colder disk.
        for with_tree in if run % 2 == 0 { [false, true] } else { [true, false] } {
            let dir = tempfile::tempdir().expect("dir");
            let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
            let follower = with_tree.then(|| {
                let dyn_store: Arc<dyn EventStore> = store.clone();
                runtime.block_on(runner::start::<EvidenceLog>(dyn_store, RunnerOptions::default())).expect("projection")
            });
            let rate = append_run(&store, &runtime, args.append_events, false);
            if let Some(log) = follower {
                let caught_up = runtime.block_on(log.wait_for(args.append_events, Duration::from_secs(60)));
                assert!(caught_up, "the tree follows the log");
                assert_eq!(log.read().size(), args.append_events);
                with.push(rate);
            } else {
                without.push(rate);
            }
            println!(
                "run {run}: {} {rate:.0} events/s",
                if with_tree { "with the tree following" } else { "without the tree" }
            );
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let best = |rates: &[f64]| rates.iter().copied().fold(0f64, f64::max);
    let (best_without, best_with) = (best(&without), best(&with));
    let (median_without, median_with) = (median(&mut without), median(&mut with));
    println!(
        "append 1 writer x 100 x 500 B, {} runs each: median without {median_without:.0} events/s, with the tree {median_with:.0} ({:+.1} %); best {best_without:.0} / {best_with:.0} ({:+.1} %)",
        args.append_runs,
        (median_with / median_without - 1.0) * 100.0,
        (best_with / best_without - 1.0) * 100.0
    );
}

/// Salted (version 2) against unsalted (version 1) appends, alternating, without the tree.
fn salts(args: &Args) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let (mut plain, mut salted) = (Vec::new(), Vec::new());
    for run in 0..args.append_runs {
        for unsalted in if run % 2 == 0 { [true, false] } else { [false, true] } {
            let dir = tempfile::tempdir().expect("dir");
            let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
            let rate = append_run(&store, &runtime, args.append_events, unsalted);
            println!("run {run}: {} {rate:.0} events/s", if unsalted { "unsalted (v1)" } else { "salted (v2)" });
            if unsalted { plain.push(rate) } else { salted.push(rate) }
        }
    }
    plain.sort_by(f64::total_cmp);
    salted.sort_by(f64::total_cmp);
    let (median_plain, median_salted) = (plain[plain.len() / 2], salted[salted.len() / 2]);
    println!(
        "append 1 writer x 100 x 500 B, {} runs each: median unsalted (v1) {median_plain:.0} events/s, salted (v2) {median_salted:.0} ({:+.1} %)",
        args.append_runs,
        (median_salted / median_plain - 1.0) * 100.0
    );
}

fn main() {
    let args = Args::parse();
    if !args.appends_only {
        proofs(&args);
    }
    salts(&args);
    appends(&args);
}
