//! The disk's own limit: how many small durable appends (a 4 KiB write followed by fsync) the
//! file system takes per second. Every durable append figure is reported as a fraction of it.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn fsync_4k(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let mut file = OpenOptions::new().create(true).append(true).open(dir.path().join("probe")).expect("open");
    let block = vec![0x5Au8; 4096];
    let mut group = c.benchmark_group("disk");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.bench_function("write_4KiB_fsync", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                file.write_all(&block).expect("write");
                file.sync_all().expect("fsync");
            }
            started.elapsed()
        })
    });
    group.bench_function("write_4KiB_fdatasync", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                file.write_all(&block).expect("write");
                file.sync_data().expect("fdatasync");
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, fsync_4k);
criterion_main!(benches);
