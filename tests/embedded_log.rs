//! The embedded log against real files: torn and damaged tails, bad data directories, and the
//! fold giving the same state before and after a round trip through the log.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::log_suite::{self, Volume};
use futures::executor::block_on;
use proptest::prelude::*;
use taskfold::log::embedded::{self, EmbeddedLog, Options};
use taskfold::log::{Entry, Error, EventLog, codec};
use taskfold::model::{
    Entities, Envelope, Event, Json, Metadata, Priority, ReasonCreated, ReasonResolved, Requires,
    Slugid, TaskDefinition, Timestamp,
};

/// The behavioural suite every backend passes, on a fresh embedded log.
fn open_for_suite(partitions: u32) -> (tempfile::TempDir, Arc<dyn EventLog>) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), options(partitions)).unwrap();
    (dir, Arc::new(log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_log_suite() {
    let (_dir, log) = open_for_suite(4);
    log_suite::ordering_per_key(
        log,
        Volume {
            keys: 500,
            events_per_key: 40,
            writers: 16,
            batch: 8,
        },
    )
    .await;
    let (_dir, log) = open_for_suite(4);
    log_suite::replay_from_offset(log, 200).await;
    let (_dir, log) = open_for_suite(4);
    log_suite::high_watermark_counts_appends(log).await;
    let (_dir, log) = open_for_suite(4);
    log_suite::rejects_partitions_out_of_range(log).await;
    let (_dir, log) = open_for_suite(4);
    log_suite::volume(log, 20_000).await;
}

fn options(partitions: u32) -> Options {
    Options {
        partitions,
        ..Options::default()
    }
}

fn reclaim(key: Slugid, millis: i64) -> Envelope {
    Envelope {
        key: key.to_string(),
        at: Timestamp::from_millis(millis),
        client_id: None,
        event: Event::RunReclaimed {
            run_id: 0,
            taken_until: Timestamp::from_millis(millis + 1_200_000),
        },
    }
}

fn append_all(log: &EmbeddedLog, envelopes: &[Envelope]) {
    for envelope in envelopes {
        let entry = Entry {
            key: envelope.key.clone(),
            payload: codec::encode(envelope).unwrap(),
        };
        block_on(log.append(log.partition_of(&envelope.key), vec![entry])).unwrap();
    }
}

fn read_all(log: &EmbeddedLog, partition: u32) -> Vec<Envelope> {
    let mut envelopes = Vec::new();
    log.read(partition, 0, &mut |_, payload| {
        envelopes.push(codec::decode(payload)?);
        Ok(())
    })
    .unwrap();
    envelopes
}

fn only_segment(data_dir: &Path) -> std::path::PathBuf {
    let dir = embedded::partition_dir(data_dir, 0);
    let (segments, _) = embedded::segment::list(&dir).unwrap();
    segments.last().unwrap().path.clone()
}

/// Byte length of the valid records of the last segment, found by scanning.
fn valid_bytes(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    embedded::segment::scan::<()>(&bytes, |_, _| Ok(()))
        .unwrap()
        .valid_bytes
}

#[test]
fn torn_and_flipped_tails_are_truncated_and_earlier_records_survive() {
    let key = Slugid::nice();
    let written: Vec<Envelope> = (0..20).map(|i| reclaim(key, i)).collect();
    let last_record_bytes = codec::encode(&written[19]).unwrap().len() as u64 + 8;
    // Each damage: a cut inside the last record, a flipped bit in it, and garbage after it.
    type Damage = Box<dyn Fn(&Path, u64)>;
    let damages: Vec<(&str, Damage, usize)> = vec![
        (
            "cut 1 byte",
            Box::new(|path, valid| cut(path, valid - 1)),
            19,
        ),
        (
            "cut header",
            Box::new(move |path, valid| cut(path, valid - last_record_bytes + 3)),
            19,
        ),
        (
            "cut to header end",
            Box::new(move |path, valid| cut(path, valid - last_record_bytes + 8)),
            19,
        ),
        (
            "flip payload",
            Box::new(|path, valid| flip(path, valid - 2)),
            19,
        ),
        (
            "flip length",
            Box::new(move |path, valid| flip(path, valid - last_record_bytes)),
            19,
        ),
        (
            "flip crc",
            Box::new(move |path, valid| flip(path, valid - last_record_bytes + 5)),
            19,
        ),
        (
            "garbage after",
            Box::new(|path, valid| write_at(path, valid, b"\x07garbage")),
            20,
        ),
    ];
    for (name, damage, survivors) in damages {
        for preallocate_bytes in [0, 4096] {
            let dir = tempfile::tempdir().unwrap();
            let options = Options {
                preallocate_bytes,
                ..options(1)
            };
            append_all(
                &EmbeddedLog::open(dir.path(), options.clone()).unwrap(),
                &written,
            );
            let segment = only_segment(dir.path());
            damage(&segment, valid_bytes(&segment));

            let log = EmbeddedLog::open(dir.path(), options.clone()).unwrap();
            assert_eq!(log.recoveries().len(), 1, "{name}: recovery reported");
            assert_eq!(read_all(&log, 0), written[..survivors], "{name}");
            assert_eq!(log.high_watermark(0).unwrap(), survivors as u64, "{name}");
            // The log goes on from the truncation point, and reopens cleanly.
            append_all(&log, &written[19..]);
            drop(log);
            let log = EmbeddedLog::open(dir.path(), options).unwrap();
            assert!(log.recoveries().is_empty(), "{name}: second open is clean");
            assert_eq!(read_all(&log, 0).len(), survivors + 1, "{name}");
        }
    }
}

fn cut(path: &Path, length: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(length)
        .unwrap();
}

fn flip(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn write_at(path: &Path, position: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(data, position).unwrap();
}

#[test]
fn damage_before_the_tail_is_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: 1024,
        ..options(1)
    };
    let key = Slugid::nice();
    append_all(
        &EmbeddedLog::open(dir.path(), options.clone()).unwrap(),
        &(0..100).map(|i| reclaim(key, i)).collect::<Vec<_>>(),
    );
    let (segments, _) = embedded::segment::list(&embedded::partition_dir(dir.path(), 0)).unwrap();
    assert!(segments.len() > 3, "rolled into several segments");
    flip(&segments[1].path, 20);
    match EmbeddedLog::open(dir.path(), options) {
        Err(error @ Error::Damaged(_)) => {
            let message = error.to_string();
            assert!(message.contains("nothing was changed"), "{message}")
        }
        other => panic!("expected a corruption error, got {:?}", other.err()),
    }
}

#[test]
fn segments_roll_and_replay_from_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: 2048,
        preallocate_bytes: 1024,
        ..options(1)
    };
    let key = Slugid::nice();
    let written: Vec<Envelope> = (0..200).map(|i| reclaim(key, i)).collect();
    append_all(
        &EmbeddedLog::open(dir.path(), options.clone()).unwrap(),
        &written,
    );
    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    assert!(log.recoveries().is_empty());
    for from in [0u64, 1, 57, 120, 199, 200] {
        let mut seen = Vec::new();
        let end = log
            .read(0, from, &mut |offset, payload| {
                seen.push((offset, codec::decode::<Envelope>(payload)?));
                Ok(())
            })
            .unwrap();
        assert_eq!(end, 200);
        let expected: Vec<(u64, Envelope)> = (from..200)
            .map(|o| (o, written[o as usize].clone()))
            .collect();
        assert_eq!(seen, expected, "from {from}");
    }
    assert!(matches!(
        log.read(0, 201, &mut |_, _| Ok(())),
        Err(Error::OffsetOutOfRange {
            requested: 201,
            end: 200,
            ..
        })
    ));
}

#[test]
fn a_log_has_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedLog::open(dir.path(), options(2)).unwrap();
    let error = EmbeddedLog::open(dir.path(), options(2))
        .err()
        .expect("a second open of a log in use fails");
    assert!(
        error.to_string().contains("open in another process"),
        "{error}"
    );
    drop(first);
    EmbeddedLog::open(dir.path(), options(2)).expect("the log reopens once closed");
}

#[test]
fn bad_data_directories_give_clear_errors_or_logged_recovery() {
    // Stray files beside the segments are ignored.
    let dir = tempfile::tempdir().unwrap();
    let key = Slugid::nice();
    append_all(
        &EmbeddedLog::open(dir.path(), options(2)).unwrap(),
        &[reclaim(key, 1)],
    );
    let partition = taskfold::log::partition_for(key.to_string().as_bytes(), 2);
    std::fs::write(
        embedded::partition_dir(dir.path(), partition).join("notes.txt"),
        "hello",
    )
    .unwrap();
    std::fs::write(
        embedded::partition_dir(dir.path(), partition).join("1.seg"),
        "junk",
    )
    .unwrap();
    let log = EmbeddedLog::open(dir.path(), options(2)).unwrap();
    assert_eq!(read_all(&log, partition), vec![reclaim(key, 1)]);
    drop(log);

    // A different partition count names both numbers.
    let error = EmbeddedLog::open(dir.path(), options(3)).err().unwrap();
    assert!(matches!(
        error,
        Error::PartitionCountMismatch {
            configured: 3,
            found: 2,
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains('2') && message.contains('3'), "{message}");

    // A garbage description of the log is an error, not a guess.
    std::fs::write(embedded::log_dir(dir.path()).join("meta.json"), "{not json").unwrap();
    assert!(matches!(
        EmbeddedLog::open(dir.path(), options(2)),
        Err(Error::Corrupt(_))
    ));

    // A segment that is nothing but garbage is a damaged tail: truncated and reported.
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedLog::open(dir.path(), options(1)).unwrap());
    std::fs::write(only_segment(dir.path()), vec![0xab; 100]).unwrap();
    let log = EmbeddedLog::open(dir.path(), options(1)).unwrap();
    assert_eq!(log.recoveries()[0].dropped_bytes, 100);
    assert_eq!(log.high_watermark(0).unwrap(), 0);

    // A damaged segment after the last record (no valid record in it) is removed and reported.
    drop(log);
    let key = Slugid::nice();
    append_all(
        &EmbeddedLog::open(dir.path(), options(1)).unwrap(),
        &[reclaim(key, 1)],
    );
    let stray = embedded::partition_dir(dir.path(), 0).join(embedded::segment::file_name(1));
    std::fs::write(&stray, vec![0x5c; 64]).unwrap();
    let log = EmbeddedLog::open(dir.path(), options(1)).unwrap();
    assert_eq!(log.recoveries().len(), 1);
    assert_eq!(log.recoveries()[0].segment, stray);
    assert!(!stray.exists());
    assert_eq!(read_all(&log, 0), vec![reclaim(key, 1)]);

    // Empty payloads and unknown partitions are refused at the call.
    assert!(
        block_on(log.append(
            0,
            vec![Entry {
                key: "k".into(),
                payload: vec![]
            }]
        ))
        .is_err()
    );
    assert!(matches!(
        block_on(log.append(
            7,
            vec![Entry {
                key: "k".into(),
                payload: vec![1]
            }]
        )),
        Err(Error::NoSuchPartition {
            partition: 7,
            partitions: 1
        })
    ));
}

fn definition(task_group_id: Slugid, retries: u32) -> TaskDefinition {
    let created = Timestamp::from_millis(1_763_800_000_000);
    TaskDefinition {
        provisioner_id: "proj".into(),
        worker_type: "linux".into(),
        task_queue_id: "proj/linux".into(),
        scheduler_id: "-".into(),
        project_id: "none".into(),
        task_group_id,
        dependencies: vec![],
        requires: Requires::AllResolved,
        routes: vec!["index.a.b".into()],
        priority: Priority::Low,
        retries,
        created,
        deadline: created.plus_millis(3_600_000),
        expires: created.plus_millis(7_200_000),
        scopes: vec!["queue:route:index.a.b".into()],
        payload: Json::from_value(
            &serde_json::json!({"command": ["echo", "ü"], "n": 1.5, "nested": {"a": [null, true]}}),
        ),
        metadata: Metadata {
            name: "n".into(),
            description: "d".into(),
            owner: "o@example.com".into(),
            source: "https://example.com".into(),
        },
        tags: [("kind".to_owned(), "build".to_owned())].into(),
        extra: Json::empty_object(),
    }
}

fn any_event(task_ids: Vec<Slugid>) -> impl Strategy<Value = (usize, Event)> {
    let keys = task_ids.len();
    let created = [
        ReasonCreated::Scheduled,
        ReasonCreated::Retry,
        ReasonCreated::TaskRetry,
        ReasonCreated::Rerun,
        ReasonCreated::Exception,
    ];
    let resolved = [
        ReasonResolved::Completed,
        ReasonResolved::Failed,
        ReasonResolved::Canceled,
        ReasonResolved::ClaimExpired,
        ReasonResolved::WorkerShutdown,
        ReasonResolved::IntermittentTask,
        ReasonResolved::DeadlineExceeded,
    ];
    // `Err(retries)` stands for a definition, which needs the task id chosen below.
    let event = prop_oneof![
        (0..6u32).prop_map(Err::<Event, u32>),
        (0..3u32, prop::sample::select(created.to_vec()))
            .prop_map(|(run_id, reason)| Ok(Event::RunPending { run_id, reason })),
        (0..3u32, "[a-z]{1,8}", "[a-z0-9-]{1,12}", 0..10_000i64).prop_map(
            |(run_id, worker_group, worker_id, until)| Ok(Event::RunClaimed {
                run_id,
                worker_group,
                worker_id,
                taken_until: Timestamp::from_millis(until),
            })
        ),
        (0..3u32, 0..10_000i64).prop_map(|(run_id, until)| Ok(Event::RunReclaimed {
            run_id,
            taken_until: Timestamp::from_millis(until),
        })),
        (0..3u32, prop::sample::select(resolved.to_vec()))
            .prop_map(|(run_id, reason)| Ok(Event::RunResolved { run_id, reason })),
        prop::sample::select(Priority::ALL.to_vec())
            .prop_map(|priority| Ok(Event::PriorityChanged { priority })),
        Just(Ok::<Event, u32>(Event::DependencySatisfied {
            dependency: Slugid::from_random_bytes([7; 16])
        })),
    ];
    (0..keys, event).prop_map(move |(key, event)| {
        let event = event.unwrap_or_else(|retries| Event::TaskDefined {
            task_id: task_ids[key],
            definition: Arc::new(definition(task_ids[0], retries)),
        });
        (key, event)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn folding_before_and_after_the_log_gives_identical_state(
        steps in prop::collection::vec(any_event(vec![
            Slugid::from_random_bytes([1; 16]),
            Slugid::from_random_bytes([2; 16]),
            Slugid::from_random_bytes([3; 16]),
        ]), 1..120),
    ) {
        let task_ids = [
            Slugid::from_random_bytes([1; 16]),
            Slugid::from_random_bytes([2; 16]),
            Slugid::from_random_bytes([3; 16]),
        ];
        let envelopes: Vec<Envelope> = steps
            .into_iter()
            .enumerate()
            .map(|(i, (key, event))| Envelope {
                key: task_ids[key].to_string(),
                at: Timestamp::from_millis(1_763_800_000_000 + i as i64),
                client_id: None,
                event,
            })
            .collect();
        let mut direct = Entities::default();
        for envelope in &envelopes {
            direct.apply(envelope);
        }

        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), options(2)).unwrap();
        // Appended in chunks, as shards batch them.
        for chunk in envelopes.chunks(7) {
            for partition in 0..2 {
                let entries: Vec<Entry> = chunk
                    .iter()
                    .filter(|envelope| log.partition_of(&envelope.key) == partition)
                    .map(|envelope| Entry { key: envelope.key.clone(), payload: codec::encode(envelope).unwrap() })
                    .collect();
                if !entries.is_empty() {
                    block_on(log.append(partition, entries)).unwrap();
                }
            }
        }
        drop(log);
        let log = EmbeddedLog::open(dir.path(), options(2)).unwrap();
        let mut replayed = Entities::default();
        for partition in 0..2 {
            for envelope in read_all(&log, partition) {
                replayed.apply(&envelope);
            }
        }
        prop_assert_eq!(&replayed, &direct);
        for (key, task) in &direct.tasks {
            prop_assert_eq!(
                serde_json::to_value(task.status()).unwrap(),
                serde_json::to_value(replayed.tasks[key].status()).unwrap()
            );
        }
    }
}

/// Retention deletes whole sealed segments below the offset asked and older than the time
/// asked, never the active one; the log then starts later, keeps its offsets, reopens, and
/// takes appends as before.
#[test]
fn retention_deletes_old_segments_below_an_offset_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: 2048,
        preallocate_bytes: 0,
        ..options(1)
    };
    let key = Slugid::nice();
    let written: Vec<Envelope> = (0..200).map(|i| reclaim(key, i)).collect();
    let log = EmbeddedLog::open(dir.path(), options.clone()).unwrap();
    append_all(&log, &written);
    let segments = || {
        embedded::segment::list(&embedded::partition_dir(dir.path(), 0))
            .unwrap()
            .0
    };
    let before = segments();
    assert!(before.len() > 4, "{} segments", before.len());

    // Too recent: nothing goes.
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    assert_eq!(log.delete_before(0, 150, an_hour_ago).unwrap(), 0);
    assert_eq!(segments().len(), before.len());

    // Old enough: every segment wholly below offset 150 goes, and no other.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    let deleted = log.delete_before(0, 150, later).unwrap();
    let after = segments();
    assert!(!after.is_empty() && after.len() < before.len());
    let start = after[0].base;
    assert!(start <= 150, "{start}");
    assert_eq!(deleted, start);
    assert!(before.iter().any(|segment| segment.base == start));
    // Everything from the start is there; before it, the log says what it holds.
    let mut seen = Vec::new();
    log.read(0, start, &mut |offset, payload| {
        seen.push((offset, codec::decode::<Envelope>(payload)?));
        Ok(())
    })
    .unwrap();
    let expected: Vec<(u64, Envelope)> = (start..200)
        .map(|o| (o, written[o as usize].clone()))
        .collect();
    assert_eq!(seen, expected);
    assert!(matches!(
        log.read(0, 0, &mut |_, _| Ok(())),
        Err(Error::OffsetOutOfRange { start: kept, .. }) if kept == start
    ));
    // Even past the end, the active segment stays.
    log.delete_before(0, 10_000, later).unwrap();
    assert_eq!(segments().last().unwrap().base, after.last().unwrap().base);
    drop(log);

    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    assert!(log.recoveries().is_empty());
    assert_eq!(log.high_watermark(0).unwrap(), 200);
    append_all(&log, &[reclaim(key, 200)]);
    assert_eq!(log.high_watermark(0).unwrap(), 201);
}
