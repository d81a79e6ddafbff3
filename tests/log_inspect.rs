//! `taskfold log inspect` as an operator runs it: what it reports about healthy and damaged
//! data directories, and its exit status.

use std::path::Path;
use std::process::{Command, Output};

use futures::executor::block_on;
use taskfold::log::embedded::{EmbeddedLog, Options};
use taskfold::log::{Entry, EventLog, codec};
use taskfold::model::{Envelope, Event, Slugid, Timestamp};

fn inspect(data_dir: &Path, verify: bool) -> (Output, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskfold"));
    command.args(["log", "inspect", "--data-dir"]).arg(data_dir);
    if verify {
        command.arg("--verify");
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

fn entry(key: Slugid, millis: i64) -> Entry {
    let envelope = Envelope {
        key: key.to_string(),
        at: Timestamp::from_millis(millis),
        client_id: None,
        event: Event::RunReclaimed {
            run_id: 0,
            taken_until: Timestamp::from_millis(millis),
        },
    };
    Entry {
        key: envelope.key.clone(),
        payload: codec::encode(&envelope).unwrap(),
    }
}

/// A one-partition log under `dir` holding `entries`, closed again.
fn write_log(dir: &Path, entries: Vec<Entry>) {
    let options = Options {
        partitions: 1,
        ..Options::default()
    };
    let log = EmbeddedLog::open(dir, options).unwrap();
    block_on(log.append(0, entries)).unwrap();
}

#[test]
fn reports_partitions_segments_offsets_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = Slugid::nice();
    write_log(dir.path(), (0..25).map(|i| entry(key, i)).collect());
    let (output, text) = inspect(dir.path(), false);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("store: none (a start builds it from the log)"),
        "{text}"
    );
    // A store made now reflects nothing of the log yet.
    drop(taskfold::engine::store::PartitionStore::open(dir.path(), 0, 1 << 20, 25).unwrap());

    let (output, text) = inspect(dir.path(), true);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 partitions"), "{text}");
    assert!(
        text.contains("offsets 0..25 (25 records in 1 segments)"),
        "{text}"
    );
    assert!(
        text.contains("store: reflects offsets ..0 (25 behind the log's end)"),
        "{text}"
    );
    assert!(text.contains("verified: 25 records decoded"), "{text}");
    assert!(!text.contains("PROBLEM"), "{text}");
}

#[test]
fn verify_fails_on_records_that_do_not_decode_and_on_damage() {
    let dir = tempfile::tempdir().unwrap();
    let key = Slugid::nice();
    let mut future_format = entry(key, 2);
    future_format.payload[0] = 9;
    write_log(
        dir.path(),
        vec![entry(key, 1), future_format, entry(key, 3)],
    );
    // A store that does not open is reported as unusable, not believed.
    let store = taskfold::engine::store::partition_dir(dir.path(), 0);
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("layout"), b"1\n").unwrap();
    std::fs::create_dir_all(store.join("fjall")).unwrap();
    std::fs::write(store.join("fjall").join("version"), b"not a store").unwrap();

    let (output, text) = inspect(dir.path(), false);
    assert!(
        output.status.success(),
        "without --verify only damage counts: {text}"
    );
    assert!(text.contains("store: cannot be read"), "{text}");

    let (output, text) = inspect(dir.path(), true);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("offset 1: unknown codec version 9"), "{text}");
}

#[test]
fn a_directory_without_a_log_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (output, text) = inspect(dir.path(), false);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("holds no Taskfold log"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
