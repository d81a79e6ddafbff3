//! Durable appends to the embedded log with 1, 64 and 1024 concurrent appenders of 200-byte
//! events (each waits for its append to be durable before the next, as a caller of the queue
//! does), and beside them, in the same run, the raw limits of the disk underneath: sequential
//! 4 KiB writes each followed by `fdatasync`, and the bandwidth of large writes with one
//! `fdatasync` at the end.
//!
//! Files go to `TASKFOLD_BENCH_DIR` (default: the system temporary directory), which should be
//! on the disk whose numbers matter.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskfold::log::embedded::{EmbeddedLog, Options};
use taskfold::log::load::ClaimEvents;
use taskfold::log::{Entry, EventLog, codec};
use taskfold::model::{Slugid, Timestamp};

/// The allocator the `taskfold` binary runs with, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENT_BYTES: usize = 200;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("TASKFOLD_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// How appenders use one log.
#[derive(Clone, Copy)]
struct Load {
    appenders: u64,
    /// Events per `append` call: 1 for callers acknowledged one by one; more for a shard that
    /// appends the events of many commands at once.
    batch: u64,
    /// All appenders on this partition, or each on the partition its key hashes to.
    partition: Option<u32>,
}

/// Runs the load until `total` events are durable; returns the time it took.
fn append_events(
    runtime: &tokio::runtime::Runtime,
    log: &Arc<EmbeddedLog>,
    load: Load,
    total: u64,
) -> Duration {
    let Load {
        appenders,
        batch,
        partition,
    } = load;
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for appender in 0..appenders {
            let log = log.clone();
            let events = total / appenders + u64::from(appender < total % appenders);
            tasks.push(tokio::spawn(async move {
                let key = Slugid::nice();
                let claims = ClaimEvents::new(EVENT_BYTES);
                let partition = partition.unwrap_or_else(|| log.partition_of(&key.to_string()));
                let mut sequence = 0;
                while sequence < events {
                    let count = batch.min(events - sequence);
                    let entries = (sequence..sequence + count)
                        .map(|sequence| {
                            let envelope =
                                claims.event(key, Timestamp::from_millis(sequence as i64));
                            let payload = codec::encode(&envelope).unwrap();
                            Entry {
                                key: envelope.key,
                                payload,
                            }
                        })
                        .collect();
                    log.append(partition, entries).await.unwrap();
                    sequence += count;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    started.elapsed()
}

fn durable_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("embedded_append_200B");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    let partitions = |partitions| Options {
        partitions,
        ..Options::default()
    };
    let one_by_one = |appenders| Load {
        appenders,
        batch: 1,
        partition: Some(0),
    };
    let cases = [
        ("1_partition", one_by_one(1), partitions(1)),
        ("1_partition", one_by_one(64), partitions(1)),
        ("1_partition", one_by_one(1024), partitions(1)),
        (
            "1_partition_no_prealloc",
            one_by_one(64),
            Options {
                preallocate_bytes: 0,
                ..partitions(1)
            },
        ),
        (
            "4_partitions",
            Load {
                partition: None,
                ..one_by_one(1024)
            },
            partitions(4),
        ),
        (
            "1_partition_batches_of_64",
            Load {
                batch: 64,
                ..one_by_one(64)
            },
            partitions(1),
        ),
    ];
    for (name, load, options) in cases {
        let dir = bench_dir();
        let log = Arc::new(EmbeddedLog::open(dir.path(), options).unwrap());
        let id = BenchmarkId::new(name, format!("{}_appenders", load.appenders));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| append_events(&runtime, &log, load, iters))
        });
    }
    group.finish();
}

fn raw_disk(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_disk");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let dir = bench_dir();

    group.throughput(Throughput::Bytes(4096));
    group.bench_function("sequential_4KiB_write_fdatasync", |b| {
        let mut file = File::create(dir.path().join("small")).unwrap();
        let block = vec![0x5a; 4096];
        b.iter(|| {
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
        })
    });

    const LARGE: usize = 256 << 20;
    group.throughput(Throughput::Bytes(LARGE as u64));
    group.bench_function("256MiB_of_1MiB_writes_one_fdatasync", |b| {
        let block = vec![0x5a; 1 << 20];
        b.iter(|| {
            let mut file = File::create(dir.path().join("large")).unwrap();
            for _ in 0..LARGE / block.len() {
                file.write_all(&block).unwrap();
            }
            file.sync_data().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, durable_append, raw_disk);
criterion_main!(benches);
