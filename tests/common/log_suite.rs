//! Behaviour every `EventLog` backend must show, as plain functions a backend's test file calls
//! with a log it opened: per-key order under concurrent appends, agreement with
//! `partition_for`, replay of a suffix, and high watermarks that count what was appended.
//! Each function works on a log that already holds records: it measures from the high
//! watermarks it finds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use taskfold::log::{Entry, Error, EventLog, Offset, codec, partition_for};
use taskfold::model::{Envelope, Event, Slugid, Timestamp};

/// How much a scenario writes; backends with small retention (the mock cluster) want less.
#[derive(Clone, Copy, Debug)]
pub struct Volume {
    /// Distinct entity keys, spread over every partition.
    pub keys: usize,
    /// Events appended per key, in order.
    pub events_per_key: usize,
    /// Tokio tasks appending at once; each owns a disjoint set of keys.
    pub writers: usize,
    /// Most entries in one `append` call.
    pub batch: usize,
}

impl Volume {
    pub const SMALL: Volume = Volume {
        keys: 64,
        events_per_key: 12,
        writers: 4,
        batch: 8,
    };
}

const FIRST_INSTANT_MILLIS: i64 = 1_763_800_000_000;

/// The `sequence`th event of `key`: a reclaim whose `at` grows with the sequence, so order
/// mistakes show up in the decoded events themselves.
pub fn envelope(key: &str, sequence: usize) -> Envelope {
    let at = Timestamp::from_millis(FIRST_INSTANT_MILLIS + sequence as i64);
    Envelope {
        key: key.to_owned(),
        at,
        client_id: None,
        event: Event::RunReclaimed {
            run_id: sequence as u32,
            taken_until: at.plus_millis(20 * 60 * 1000),
        },
    }
}

pub fn entry(envelope: &Envelope) -> Entry {
    Entry {
        key: envelope.key.clone(),
        payload: codec::encode(envelope).expect("an envelope encodes"),
    }
}

pub fn fresh_keys(count: usize) -> Vec<String> {
    (0..count).map(|_| Slugid::nice().to_string()).collect()
}

pub fn high_watermarks(log: &dyn EventLog) -> Vec<Offset> {
    (0..log.partitions())
        .map(|partition| log.high_watermark(partition).expect("high watermark"))
        .collect()
}

/// Reads `partition` from `from` and decodes every record; returns them with the offset the
/// read reported as its end.
pub fn read_envelopes(
    log: &dyn EventLog,
    partition: u32,
    from: Offset,
) -> Result<(Vec<(Offset, Envelope)>, Offset), Error> {
    let mut records = Vec::new();
    let end = log.read(partition, from, &mut |offset, payload| {
        records.push((offset, codec::decode::<Envelope>(payload)?));
        Ok(())
    })?;
    Ok((records, end))
}

/// `read_envelopes` on a blocking thread, as the trait asks of async callers.
pub async fn read_envelopes_blocking(
    log: &Arc<dyn EventLog>,
    partition: u32,
    from: Offset,
) -> Result<(Vec<(Offset, Envelope)>, Offset), Error> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || read_envelopes(log.as_ref(), partition, from))
        .await
        .expect("the reading thread panicked")
}

/// Appends `events_per_key` events for each key from several tasks at once, each task keeping
/// many appends in flight, then reads every partition back: each key's events come back
/// exactly once and in append order, each from the partition `partition_for` names, at the
/// offsets the appends returned, and the high watermarks moved by exactly what was appended.
pub async fn ordering_per_key(log: Arc<dyn EventLog>, volume: Volume) {
    let partitions = log.partitions();
    let before = high_watermarks(log.as_ref());
    let keys = fresh_keys(volume.keys);

    let mut writers = Vec::new();
    for writer in 0..volume.writers {
        let own_keys: Vec<String> = keys
            .iter()
            .skip(writer)
            .step_by(volume.writers)
            .cloned()
            .collect();
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            // Round-robin over the task's keys, so one append mixes keys and each key's events
            // are spread over many appends whose deliveries overlap.
            let mut pending: HashMap<u32, Vec<Envelope>> = HashMap::new();
            let mut appends = Vec::new();
            for sequence in 0..volume.events_per_key {
                for key in &own_keys {
                    let partition = partition_for(key.as_bytes(), partitions);
                    let queue = pending.entry(partition).or_default();
                    queue.push(envelope(key, sequence));
                    if queue.len() >= volume.batch {
                        let batch = std::mem::take(queue);
                        appends.push(start_append(log.as_ref(), partition, batch));
                    }
                }
                // Yield now and then so the writers interleave on the runtime.
                tokio::task::yield_now().await;
            }
            for (partition, batch) in pending {
                if !batch.is_empty() {
                    appends.push(start_append(log.as_ref(), partition, batch));
                }
            }
            let mut written = Vec::new();
            for (partition, batch, appending) in appends {
                let offsets = appending.await.expect("append");
                assert_eq!(offsets.len(), batch.len(), "one offset per appended record");
                written.extend(
                    offsets
                        .into_iter()
                        .zip(batch)
                        .map(|(offset, envelope)| (partition, offset, envelope)),
                );
            }
            written
        }));
    }

    let mut appended: BTreeMap<(u32, Offset), Envelope> = BTreeMap::new();
    for writer in writers {
        for (partition, offset, envelope) in writer.await.expect("writer task") {
            let previous = appended.insert((partition, offset), envelope);
            assert!(
                previous.is_none(),
                "two appended records got offset {offset} of partition {partition}"
            );
        }
    }
    assert_eq!(appended.len(), volume.keys * volume.events_per_key);

    let mut next_sequence: HashMap<String, usize> = HashMap::new();
    for partition in 0..partitions {
        let (records, end) = read_envelopes_blocking(&log, partition, before[partition as usize])
            .await
            .expect("read");
        let appended_here = appended.range((partition, 0)..(partition + 1, 0)).count();
        assert_eq!(
            records.len(),
            appended_here,
            "partition {partition} holds what was appended to it"
        );
        assert_eq!(
            end,
            before[partition as usize] + appended_here as Offset,
            "the read of partition {partition} ends at the high watermark"
        );
        assert_eq!(
            log.high_watermark(partition).expect("high watermark"),
            end,
            "partition {partition}: the high watermark moved by the records appended"
        );
        let mut previous_offset = None;
        for (offset, envelope) in records {
            assert!(
                previous_offset.is_none_or(|previous| previous < offset),
                "offsets of partition {partition} increase"
            );
            previous_offset = Some(offset);
            assert_eq!(
                partition_for(envelope.key.as_bytes(), partitions),
                partition,
                "key {} was read from partition {partition}",
                envelope.key
            );
            assert_eq!(
                appended.get(&(partition, offset)),
                Some(&envelope),
                "the record at offset {offset} of partition {partition} is the one whose append returned that offset"
            );
            let sequence = next_sequence.entry(envelope.key.clone()).or_default();
            assert_eq!(
                envelope,
                self::envelope(&envelope.key, *sequence),
                "events of key {} in append order, each once",
                envelope.key
            );
            *sequence += 1;
        }
    }
    assert_eq!(next_sequence.len(), volume.keys, "every key was read back");
    for (key, count) in next_sequence {
        assert_eq!(count, volume.events_per_key, "all events of key {key}");
    }
}

type StartedAppend = (u32, Vec<Envelope>, taskfold::log::Appending);

fn start_append(log: &dyn EventLog, partition: u32, batch: Vec<Envelope>) -> StartedAppend {
    let entries = batch.iter().map(entry).collect();
    let appending = log.append(partition, entries);
    (partition, batch, appending)
}

/// Appends `count` events of fresh keys to one partition and checks that a read from any
/// offset in between yields exactly the suffix from there, and that reads outside the log
/// are `OffsetOutOfRange`.
pub async fn replay_from_offset(log: Arc<dyn EventLog>, count: usize) {
    let keys = fresh_keys(count.max(8));
    let partition = log.partition_of(&keys[0]);
    let keys: Vec<&String> = keys
        .iter()
        .filter(|key| log.partition_of(key) == partition)
        .collect();
    let start = log.high_watermark(partition).expect("high watermark");
    let envelopes: Vec<Envelope> = (0..count)
        .map(|sequence| envelope(keys[sequence % keys.len()], sequence / keys.len()))
        .collect();
    let offsets = log
        .append(partition, envelopes.iter().map(entry).collect())
        .await
        .expect("append");
    assert_eq!(offsets.len(), count);
    let end = log.high_watermark(partition).expect("high watermark");
    assert_eq!(end, start + count as Offset);

    let (whole, whole_end) = read_envelopes_blocking(&log, partition, start)
        .await
        .expect("read from the start");
    assert_eq!(whole_end, end);
    let expected: Vec<(Offset, Envelope)> = offsets.iter().copied().zip(envelopes).collect();
    assert_eq!(whole, expected, "the whole range reads back as appended");

    for from in [start + 1, start + count as Offset / 2, end - 1, end] {
        let (suffix, suffix_end) = read_envelopes_blocking(&log, partition, from)
            .await
            .expect("read from the middle");
        assert_eq!(suffix_end, end);
        let skipped = (from - start) as usize;
        assert_eq!(
            suffix,
            whole[skipped..],
            "reading from offset {from} yields the suffix"
        );
    }

    let beyond = read_envelopes_blocking(&log, partition, end + 1).await;
    assert!(
        matches!(beyond, Err(Error::OffsetOutOfRange { requested, .. }) if requested == end + 1),
        "reading past the high watermark is out of range, not {beyond:?}"
    );
}

/// The high watermark starts where it is, moves by exactly the records appended, and only for
/// the partition appended to.
pub async fn high_watermark_counts_appends(log: Arc<dyn EventLog>) {
    let before = high_watermarks(log.as_ref());
    let key = Slugid::nice().to_string();
    let partition = log.partition_of(&key);
    let mut appended = 0;
    for batch in [1, 5, 17] {
        let entries = (0..batch)
            .map(|sequence| entry(&envelope(&key, appended + sequence)))
            .collect();
        let offsets = log.append(partition, entries).await.expect("append");
        let first = before[partition as usize] + appended as Offset;
        assert_eq!(
            offsets,
            (first..first + batch as Offset).collect::<Vec<_>>(),
            "offsets are consecutive from the high watermark"
        );
        appended += batch;
        let mut expected = before.clone();
        expected[partition as usize] += appended as Offset;
        assert_eq!(high_watermarks(log.as_ref()), expected);
    }
}

/// Partitions outside the log are errors for every operation, never panics.
pub async fn rejects_partitions_out_of_range(log: Arc<dyn EventLog>) {
    let missing = log.partitions();
    let entries = vec![entry(&envelope("key", 0))];
    let is_missing = |error: &Error| matches!(error, Error::NoSuchPartition { partition, .. } if *partition == missing);
    let appended = log.append(missing, entries).await;
    assert!(
        appended.as_ref().is_err_and(is_missing),
        "append: {appended:?}"
    );
    let watermark = log.high_watermark(missing);
    assert!(
        watermark.as_ref().is_err_and(is_missing),
        "high watermark: {watermark:?}"
    );
    let read = log.read(missing, 0, &mut |_, _| Ok(()));
    assert!(read.as_ref().is_err_and(is_missing), "read: {read:?}");
}

/// Appends `total` events over many keys with many appends in flight, then replays every
/// partition from its first offset and counts exactly `total` new records, each key's in
/// order. For backends that keep everything (not the mock cluster).
pub async fn volume(log: Arc<dyn EventLog>, total: usize) {
    let partitions = log.partitions();
    let before = high_watermarks(log.as_ref());
    let keys = fresh_keys(500);
    let mut batches: HashMap<u32, Vec<Envelope>> = HashMap::new();
    let mut appends = Vec::new();
    for index in 0..total {
        let key = &keys[index % keys.len()];
        let partition = partition_for(key.as_bytes(), partitions);
        let batch = batches.entry(partition).or_default();
        batch.push(envelope(key, index / keys.len()));
        if batch.len() >= 50 {
            appends.push(start_append(log.as_ref(), partition, std::mem::take(batch)));
        }
    }
    for (partition, batch) in batches {
        if !batch.is_empty() {
            appends.push(start_append(log.as_ref(), partition, batch));
        }
    }
    let results =
        futures::future::join_all(appends.into_iter().map(|(_, _, appending)| appending)).await;
    let appended: usize = results
        .into_iter()
        .map(|offsets| offsets.expect("append").len())
        .sum();
    assert_eq!(appended, total);

    let mut read = 0;
    let mut next_sequence: HashMap<String, usize> = HashMap::new();
    for partition in 0..partitions {
        // From the very first offset: a full replay, records of earlier tests included.
        let (records, end) = read_envelopes_blocking(&log, partition, 0)
            .await
            .expect("replay");
        assert_eq!(end, log.high_watermark(partition).expect("high watermark"));
        assert_eq!(
            records.len() as Offset,
            end,
            "partition {partition} replays completely"
        );
        for (_, envelope) in records
            .into_iter()
            .skip(before[partition as usize] as usize)
        {
            let sequence = next_sequence.entry(envelope.key.clone()).or_default();
            assert_eq!(envelope.at, self::envelope(&envelope.key, *sequence).at);
            *sequence += 1;
            read += 1;
        }
    }
    assert_eq!(read, total, "every appended record replayed exactly once");
}
