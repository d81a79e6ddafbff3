//! The cluster's directory: which nodes there are, where they are reached and which
//! partitions each serves. Every node publishes its record to the topic `<log topic>.nodes`
//! (one partition, keyed by node id) whenever its partitions change and every heartbeat, and
//! every node reads that topic as it grows. The consumer group decides who owns what; the
//! directory only tells the others, so a stale entry costs a retry, never a wrong write.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::TopicPartitionList;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::log::Error;
use crate::log::kafka::{self, TracingContext};

/// How far back a node starts reading the directory: enough for every live node's latest
/// record many times over.
const READ_BACK: i64 = 10_000;

/// One node as it last described itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    /// Where other nodes call it (`--advertise`).
    pub url: String,
    /// Its partitions, each with when it took it (ms since the epoch) and how many records of
    /// the log its store has yet to fold.
    pub partitions: BTreeMap<u32, Held>,
    /// When it wrote this (ms since the epoch, by its clock).
    pub at: i64,
    /// It is stopping: it serves nothing any more.
    #[serde(default)]
    pub leaving: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub since: i64,
    #[serde(default)]
    pub lag: u64,
}

struct Seen {
    record: NodeRecord,
    /// When this node read it, by its own clock: staleness is judged without comparing clocks.
    received: Instant,
}

pub struct Directory {
    me: String,
    topic: String,
    nodes: RwLock<HashMap<String, Seen>>,
    changed: watch::Sender<u64>,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// A node not heard from for this long is taken for gone.
    stale_after: Duration,
    stop: Arc<AtomicBool>,
    reader: std::sync::Mutex<Option<JoinHandle<()>>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl Directory {
    /// Opens (or creates) the directory topic and starts reading it. Blocking.
    pub fn open(
        options: &kafka::Options,
        me: &str,
        stale_after: Duration,
    ) -> Result<Arc<Directory>, Error> {
        let topic = format!("{}.nodes", options.topic);
        let single = kafka::Options {
            topic: topic.clone(),
            partitions: 1,
            ..options.clone()
        };
        let producer: ThreadedProducer<DefaultProducerContext> = kafka::base_config(options)
            .set("linger.ms", "0")
            .create()
            .map_err(|error| kafka_error(&topic, error))?;
        kafka::ensure_topic(producer.client(), &single, &topic)?;
        let consumer: BaseConsumer<TracingContext> = kafka::base_config(options)
            .set("group.id", "taskfold-directory")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create_with_context(TracingContext)
            .map_err(|error| kafka_error(&topic, error))?;
        let (low, high) = consumer
            .fetch_watermarks(&topic, 0, Duration::from_millis(options.timeout_ms))
            .map_err(|error| kafka_error(&topic, error))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                &topic,
                0,
                rdkafka::Offset::Offset(low.max(high - READ_BACK)),
            )
            .and_then(|()| consumer.assign(&assignment))
            .map_err(|error| kafka_error(&topic, error))?;
        let directory = Arc::new(Directory {
            me: me.to_owned(),
            topic,
            nodes: RwLock::new(HashMap::new()),
            changed: watch::Sender::new(0),
            producer,
            stale_after,
            stop: Arc::new(AtomicBool::new(false)),
            reader: std::sync::Mutex::new(None),
        });
        let reading = directory.clone();
        let stop = directory.stop.clone();
        let reader = std::thread::Builder::new()
            .name("cluster-directory".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) => {
                            let record = message
                                .payload()
                                .and_then(|payload| serde_json::from_slice(payload).ok());
                            if let Some(record) = record {
                                reading.heard(record);
                            }
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "reading the cluster directory")
                        }
                        None => {}
                    }
                }
            })
            .map_err(|error| Error::io("starting the directory reader of", "kafka", error))?;
        *directory.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
        Ok(directory)
    }

    fn heard(&self, record: NodeRecord) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let changed = nodes.get(&record.node_id).is_none_or(|seen| {
            seen.record.partitions != record.partitions
                || seen.record.url != record.url
                || seen.record.leaving != record.leaving
        });
        nodes.insert(
            record.node_id.clone(),
            Seen {
                record,
                received: Instant::now(),
            },
        );
        drop(nodes);
        if changed {
            self.changed.send_modify(|version| *version += 1);
        }
    }

    /// Publishes this node's record; fire and forget (the next heartbeat repeats it).
    pub fn publish(&self, record: &NodeRecord) {
        let Ok(payload) = serde_json::to_vec(record) else {
            return;
        };
        let sent = self.producer.send(
            BaseRecord::to(&self.topic)
                .key(record.node_id.as_str())
                .payload(&payload),
        );
        if let Err((error, _)) = sent {
            tracing::warn!(%error, "cannot publish this node's directory record");
        }
        // Our own record counts at once, without the round trip.
        self.heard(record.clone());
    }

    /// Waits for the directory to change after `seen` (a version from [`Directory::watch`]).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn is_live(&self, seen: &Seen) -> bool {
        !seen.record.leaving && seen.received.elapsed() < self.stale_after
    }

    /// The node that serves `partition`, by the latest claim among live nodes: its id and URL.
    pub fn owner(&self, partition: u32) -> Option<(String, String)> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .values()
            .filter(|seen| self.is_live(seen) || seen.record.node_id == self.me)
            .filter_map(|seen| {
                let held = seen.record.partitions.get(&partition)?;
                Some((held.since, &seen.record))
            })
            .max_by_key(|(since, _)| *since)
            .map(|(_, record)| (record.node_id.clone(), record.url.clone()))
    }

    /// The other live nodes that serve at least one partition: their URLs.
    pub fn peers(&self) -> Vec<String> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .values()
            .filter(|seen| {
                seen.record.node_id != self.me
                    && self.is_live(seen)
                    && !seen.record.partitions.is_empty()
            })
            .map(|seen| seen.record.url.clone())
            .collect()
    }

    /// Every node heard of, with whether it is live and how long ago it was heard from.
    pub fn nodes(&self) -> Vec<(NodeRecord, bool, Duration)> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = nodes
            .values()
            .map(|seen| {
                (
                    seen.record.clone(),
                    self.is_live(seen),
                    seen.received.elapsed(),
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.node_id.cmp(&b.0.node_id));
        all
    }

    /// Stops reading; what was published is delivered first.
    pub fn close(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = reader.join();
        }
    }
}

fn kafka_error(topic: &str, error: rdkafka::error::KafkaError) -> Error {
    Error::Kafka {
        context: format!("the cluster directory `{topic}`"),
        reason: error.to_string(),
    }
}
