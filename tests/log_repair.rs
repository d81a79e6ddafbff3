//! Damage in an embedded log, as an operator meets it: a torn tail is truncated and reported;
//! any damage that valid records follow refuses the open without changing a byte, and
//! `taskfold log repair` (the real binary) then keeps every record before the damage and sets
//! the rest aside.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures::executor::block_on;
use taskfold::log::embedded::{self, EmbeddedLog, Options, segment};
use taskfold::log::{Entry, Error, EventLog, codec};
use taskfold::model::{Envelope, Event, Slugid, Timestamp};

/// Small segments, so that 120 records make several sealed ones and an active one.
fn options() -> Options {
    Options {
        partitions: 1,
        segment_bytes: 1024,
        preallocate_bytes: 512,
        ..Options::default()
    }
}

fn envelope(key: Slugid, index: i64) -> Envelope {
    Envelope {
        key: key.to_string(),
        at: Timestamp::from_millis(index),
        client_id: None,
        event: Event::RunReclaimed {
            run_id: 0,
            taken_until: Timestamp::from_millis(index),
        },
    }
}

/// A log of `count` records, appended one at a time, closed again.
fn write_log(dir: &Path, count: i64) -> Vec<Envelope> {
    let key = Slugid::nice();
    let written: Vec<Envelope> = (0..count).map(|index| envelope(key, index)).collect();
    let log = EmbeddedLog::open(dir, options()).unwrap();
    for envelope in &written {
        let entry = Entry {
            key: envelope.key.clone(),
            payload: codec::encode(envelope).unwrap(),
        };
        block_on(log.append(0, vec![entry])).unwrap();
    }
    written
}

fn segments(dir: &Path) -> Vec<segment::SegmentFile> {
    segment::list(&embedded::partition_dir(dir, 0)).unwrap().0
}

/// Each record of a segment: its log offset and where it starts and ends in the file.
fn records(file: &segment::SegmentFile) -> Vec<(u64, u64, u64)> {
    let bytes = std::fs::read(&file.path).unwrap();
    let mut position = 0u64;
    let mut found = Vec::new();
    segment::scan::<()>(&bytes, |index, payload| {
        let end = position + segment::HEADER_BYTES as u64 + payload.len() as u64;
        found.push((file.base + index, position, end));
        position = end;
        Ok(())
    })
    .unwrap();
    found
}

fn read_all(log: &EmbeddedLog) -> Vec<Envelope> {
    let mut envelopes = Vec::new();
    log.read(0, 0, &mut |_, payload| {
        envelopes.push(codec::decode(payload)?);
        Ok(())
    })
    .unwrap();
    envelopes
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().unwrap() != "lock" {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn flip(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn repair(dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_taskfold"))
        .args(["log", "repair", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "repair failed: {text}");
    text
}

/// Which record to damage and how.
#[derive(Clone, Copy, Debug)]
enum Which {
    First,
    Middle,
    Last,
}

fn pick(records: &[(u64, u64, u64)], which: Which) -> (u64, u64, u64) {
    match which {
        Which::First => records[0],
        Which::Middle => records[records.len() / 2],
        Which::Last => *records.last().unwrap(),
    }
}

/// Opening refuses, names the file and byte, and changes nothing; the repair keeps exactly the
/// records before `first_lost` and sets the rest aside; the log then opens cleanly.
fn assert_refused_then_repaired(
    dir: &Path,
    written: &[Envelope],
    damaged: &Path,
    position: u64,
    first_lost: u64,
    case: &str,
) {
    let before = contents(dir);
    match EmbeddedLog::open(dir, options()) {
        Err(error @ Error::Damaged(_)) => {
            let message = error.to_string();
            assert!(
                message.contains(&damaged.display().to_string())
                    && message.contains(&format!("byte {position}"))
                    && message.contains("taskfold log repair"),
                "{case}: {message}"
            );
        }
        Err(other) => panic!("{case}: expected damage to refuse the open, got {other}"),
        Ok(_) => panic!("{case}: a damaged log opened"),
    }
    assert!(
        before == contents(dir),
        "{case}: the refused open changed bytes"
    );

    let report = repair(dir);
    assert!(report.contains("set aside"), "{case}: {report}");
    let log = EmbeddedLog::open(dir, options()).unwrap();
    assert!(
        log.recoveries().is_empty(),
        "{case}: repaired log opens cleanly"
    );
    assert_eq!(
        read_all(&log),
        written[..first_lost as usize],
        "{case}: every record before the damage is kept"
    );
    // What was cut is on disk, beside the log.
    let set_aside = embedded::log_dir(dir).join("set-aside");
    let copies = contents(&set_aside);
    assert!(!copies.is_empty(), "{case}: nothing set aside");
    let lost_bytes: usize = copies.values().map(Vec::len).sum();
    assert!(lost_bytes > 0, "{case}");
    // The log goes on from where the repair left it.
    let entry = Entry {
        key: written[0].key.clone(),
        payload: codec::encode(&written[0]).unwrap(),
    };
    assert_eq!(
        block_on(log.append(0, vec![entry])).unwrap(),
        vec![first_lost]
    );
}

#[test]
fn damage_in_the_active_segment_before_its_last_record_is_refused_then_repaired() {
    for which in [Which::First, Which::Middle] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_log(dir.path(), 120);
        let active = segments(dir.path()).pop().unwrap();
        let records = records(&active);
        assert!(
            records.len() >= 3,
            "the active segment holds several records"
        );
        let (offset, start, end) = pick(&records, which);
        // A flip in the payload: the length still says where the next record starts.
        flip(&active.path, end - 2);
        assert_refused_then_repaired(
            dir.path(),
            &written,
            &active.path,
            start,
            offset,
            &format!("active {which:?}"),
        );
    }
}

#[test]
fn damage_anywhere_in_a_sealed_segment_is_refused_then_repaired() {
    for which in [Which::First, Which::Middle, Which::Last] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_log(dir.path(), 120);
        let all = segments(dir.path());
        assert!(all.len() >= 3, "several segments");
        let sealed = &all[1];
        let (offset, start, _) = pick(&records(sealed), which);
        // A flip in the length: nothing says where the next record starts.
        flip(&sealed.path, start);
        assert_refused_then_repaired(
            dir.path(),
            &written,
            &sealed.path,
            start,
            offset,
            &format!("sealed {which:?}"),
        );
    }
}

#[test]
fn a_cut_out_middle_is_refused_then_repaired() {
    // Bytes removed from the middle of the active segment: the records after them are
    // misaligned, not gone.
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path(), 120);
    let active = segments(dir.path()).pop().unwrap();
    let in_active = records(&active);
    let (offset, start, _) = in_active[in_active.len() / 2];
    let mut bytes = std::fs::read(&active.path).unwrap();
    bytes.drain(start as usize + 3..start as usize + 10);
    std::fs::write(&active.path, bytes).unwrap();
    assert_refused_then_repaired(dir.path(), &written, &active.path, start, offset, "cut out");

    // A sealed segment cut short in its middle: the later segments hold records.
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path(), 120);
    let sealed = segments(dir.path())[1].clone();
    let in_sealed = records(&sealed);
    let (offset, start, _) = in_sealed[in_sealed.len() / 2];
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sealed.path)
        .unwrap()
        .set_len(start + 5)
        .unwrap();
    assert_refused_then_repaired(
        dir.path(),
        &written,
        &sealed.path,
        start,
        offset,
        "cut short",
    );
}

#[test]
fn torn_tails_are_truncated_and_reported() {
    // A flip in the last record of the active segment: no valid record follows it, which is
    // what a crash in the middle of the last write leaves.
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path(), 120);
    let active = segments(dir.path()).pop().unwrap();
    let (offset, start, end) = *records(&active).last().unwrap();
    flip(&active.path, end - 1);
    let log = EmbeddedLog::open(dir.path(), options()).unwrap();
    assert_eq!(log.recoveries().len(), 1);
    assert_eq!(log.recoveries()[0].position, start);
    assert_eq!(read_all(&log), written[..offset as usize]);
    drop(log);

    // Garbage after the last record: every record stays.
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path(), 120);
    let active = segments(dir.path()).pop().unwrap();
    let (_, _, end) = *records(&active).last().unwrap();
    let mut bytes = std::fs::read(&active.path).unwrap();
    bytes.truncate(end as usize);
    bytes.extend_from_slice(b"\x07\x00\x00\x00garbage after the end");
    std::fs::write(&active.path, bytes).unwrap();
    let log = EmbeddedLog::open(dir.path(), options()).unwrap();
    assert_eq!(log.recoveries().len(), 1);
    assert_eq!(log.recoveries()[0].position, end);
    assert_eq!(read_all(&log), written);
    drop(log);

    // Random bytes after the end, as much as one preallocation step: still a torn tail.
    let active = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&active.path).unwrap();
    bytes.truncate(end as usize);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    bytes.extend((0..1 << 20).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    std::fs::write(&active.path, bytes).unwrap();
    let log = EmbeddedLog::open(dir.path(), options()).unwrap();
    assert_eq!(log.recoveries()[0].dropped_bytes, 1 << 20);
    assert_eq!(read_all(&log), written);
}

#[test]
fn repair_leaves_a_healthy_log_alone_and_keeps_what_precedes_damage() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path(), 120);
    let report = repair(dir.path());
    assert!(report.contains("no damage found"), "{report}");

    let sealed = segments(dir.path())[1].clone();
    let (offset, start, _) = records(&sealed)[0];
    flip(&sealed.path, start + 9);
    let report = repair(dir.path());
    assert!(!report.contains("no damage found"), "{report}");
    let log = EmbeddedLog::open(dir.path(), options()).unwrap();
    assert_eq!(read_all(&log), written[..offset as usize]);
}
