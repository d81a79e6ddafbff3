//! Crash test: a `taskfold bench log` child appends from many tasks concurrently and prints
//! every acknowledged record; it is SIGKILLed at random moments, 50 times. After every kill the
//! log must reopen, hold every acknowledged record exactly once and at its acknowledged offset,
//! keep each key's records in order, and hold no record twice.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::RngExt;
use taskfold::log::embedded::{EmbeddedLog, Options};
use taskfold::log::{EventLog, codec};
use taskfold::model::Envelope;

const ROUNDS: usize = 50;
const PARTITIONS: u32 = 3;

/// `(key, at-millis)`, unique per appended event: appenders own their keys and `at` grows by
/// one per event.
type EventId = (String, i64);

#[test]
fn sigkill_never_loses_or_duplicates_an_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acknowledged: HashMap<EventId, (u32, u64)> = HashMap::new();
    let mut recoveries = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskfold"))
            .args(["bench", "log", "--report-acks", "--appenders", "24"])
            .args(["--keys-per-appender", "3", "--events", "100000000"])
            .args(["--partitions", &PARTITIONS.to_string()])
            // Small segments and preallocation steps, so kills also land in rolls.
            .args(["--segment-bytes", "65536", "--preallocate-bytes", "16384"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // Only complete lines count: a line cut by the kill was never fully reported.
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with('\n') {
                    lines.push(std::mem::take(&mut line));
                }
                line.clear();
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(20..250)));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 5, "ack line {line:?}");
            let id = (fields[1].to_owned(), fields[2].parse().unwrap());
            let place = (fields[3].parse().unwrap(), fields[4].parse().unwrap());
            assert!(
                acknowledged.insert(id, place).is_none(),
                "acknowledged twice: {line}"
            );
        }
        recoveries += check(dir.path(), &acknowledged, round);
    }
    eprintln!(
        "{ROUNDS} kills, {} acknowledged records, {recoveries} torn tails truncated",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() > ROUNDS * 100,
        "the child appended too little to test anything"
    );

    let inspect = Command::new(env!("CARGO_BIN_EXE_taskfold"))
        .args(["log", "inspect", "--verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "inspect --verify failed:\n{}",
        String::from_utf8_lossy(&inspect.stdout)
    );
}

/// Reopens the log and checks it against everything acknowledged so far; returns how many
/// partitions needed a torn tail truncated.
fn check(data_dir: &Path, acknowledged: &HashMap<EventId, (u32, u64)>, round: usize) -> usize {
    let log = EmbeddedLog::open(
        data_dir,
        Options {
            partitions: PARTITIONS,
            ..Options::default()
        },
    )
    .unwrap_or_else(|error| panic!("round {round}: the log does not reopen: {error}"));
    let mut found: HashMap<EventId, (u32, u64)> = HashMap::new();
    let mut last_at: HashMap<String, i64> = HashMap::new();
    for partition in 0..PARTITIONS {
        log.read(partition, 0, &mut |offset, payload| {
            let envelope: Envelope = codec::decode(payload)?;
            if let Some(previous) = last_at.insert(envelope.key.clone(), envelope.at.millis()) {
                assert!(
                    previous < envelope.at.millis(),
                    "round {round}: key {} out of order at offset {offset}",
                    envelope.key
                );
            }
            let id = (envelope.key, envelope.at.millis());
            assert!(
                found.insert(id.clone(), (partition, offset)).is_none(),
                "round {round}: {id:?} is in the log twice"
            );
            Ok(())
        })
        .unwrap();
    }
    for (id, place) in acknowledged {
        assert_eq!(
            found.get(id),
            Some(place),
            "round {round}: acknowledged {id:?} is not where it was acknowledged"
        );
    }
    log.recoveries().len()
}
