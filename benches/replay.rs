//! Replay: read a partition of the embedded log, check every CRC, decode every envelope and
//! fold it into a trivial state (a per-key event count), as a shard does on start.

use std::collections::HashMap;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;
use taskfold::log::embedded::{EmbeddedLog, Options};
use taskfold::log::load::ClaimEvents;
use taskfold::log::{Entry, EventLog, codec};
use taskfold::model::{Envelope, Slugid, Timestamp};

/// The allocator the `taskfold` binary runs with, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: u64 = 1_000_000;

fn replay(c: &mut Criterion) {
    let dir = match std::env::var_os("TASKFOLD_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let log = EmbeddedLog::open(
        dir.path(),
        Options {
            partitions: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let claims = ClaimEvents::new(200);
    let keys: Vec<Slugid> = (0..10_000).map(|_| Slugid::nice()).collect();
    for chunk in 0..EVENTS / 1000 {
        let entries = (0..1000)
            .map(|i| {
                let sequence = chunk * 1000 + i;
                let envelope = claims.event(
                    keys[sequence as usize % keys.len()],
                    Timestamp::from_millis(sequence as i64),
                );
                Entry {
                    key: envelope.key.clone(),
                    payload: codec::encode(&envelope).unwrap(),
                }
            })
            .collect();
        block_on(log.append(0, entries)).unwrap();
    }

    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("read_crc_decode_fold_1M_200B", |b| {
        b.iter(|| {
            let mut counts: HashMap<String, u64> = HashMap::with_capacity(keys.len());
            let end = log
                .read(0, 0, &mut |_, payload| {
                    let envelope: Envelope = codec::decode(payload)?;
                    *counts.entry(envelope.key).or_default() += 1;
                    Ok(())
                })
                .unwrap();
            assert_eq!(end, EVENTS);
            counts
        })
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
