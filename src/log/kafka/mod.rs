//! The Kafka log: one topic whose partitions are the log's partitions, for deployments of more
//! than one machine. Records go to the partition our murmur2 hash names (the same as Kafka's
//! default partitioner, so other clients agree), keyed by entity id, with `acks=all` and many
//! deliveries in flight, each partition through the transactional producer of its one writer
//! (`writer`): a process appends only to partitions it has acquired, and acquiring fences the
//! previous writer. Replay reads `read_uncommitted` with a plain assigned consumer (no group,
//! no commits) from the store's offset up to the high watermark.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::topic_partition_list::TopicPartitionList;
use serde::{Deserialize, Serialize};

use super::{Appending, Entry, Error, EventLog, Offset, Visitor};
use writer::Writer;

mod writer;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Connection and topic settings of the Kafka log; `config/default.toml` documents each key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Where the client first connects; it learns the rest of the cluster from there.
    pub brokers: String,
    /// The one topic that holds the whole log, so a deployment's history is in one place.
    pub topic: String,
    /// Must equal the topic's partition count: keys are hashed modulo it, so a different
    /// count would send an entity's events to a partition its earlier events are not in.
    /// Set from `log.partitions`, the one place the count is configured.
    #[serde(skip)]
    pub partitions: u32,
    /// Used only when this process creates the topic; events are the only copy of the state,
    /// so production clusters want 3.
    pub replication_factor: i32,
    /// The `min.insync.replicas` of a topic this process creates; 0 leaves the broker's
    /// default. With `acks=all`, an append is acknowledged only once this many replicas hold
    /// it, so 2 of 3 keeps every acknowledged event through the loss of one broker.
    pub min_insync_replicas: u32,
    /// Creates a missing topic on open, which suits development and tests; turn it off where
    /// topics are provisioned by an operator and a typo should fail instead of making a new one.
    pub create_topic: bool,
    /// How long the producer waits to fill a batch: a little latency buys far fewer requests
    /// when many shards append at once.
    pub linger_ms: u32,
    /// Bounds each metadata, watermark and topic-creation request, and a replay that stops
    /// receiving records, so a missing broker is an error instead of a hang.
    pub timeout_ms: u64,
    /// How long an append may take, from enqueueing to the broker's acknowledgement of every
    /// record, before it fails; callers are waiting for their reply meanwhile.
    pub delivery_timeout_ms: u64,
}

impl Default for Options {
    /// The built-in defaults of `config/default.toml`.
    fn default() -> Self {
        crate::settings::Settings::defaults().log.kafka_options()
    }
}

/// How long `append` sleeps when librdkafka's local queue is full before trying again.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// How long one consumer poll blocks during a replay; the replay's own deadline is
/// `timeout_ms` without progress.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The group id replay consumers carry; see `read`.
const REPLAY_GROUP: &str = "taskfold-replay";

/// Routes librdkafka's own log lines and errors into `tracing`, with the rest of ours.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
    }
}

impl ConsumerContext for TracingContext {}

pub struct KafkaLog {
    options: Options,
    /// Metadata and watermarks; never subscribes or reads.
    client: BaseConsumer<TracingContext>,
    /// The writer of each partition this process holds.
    writers: Vec<Mutex<Option<Arc<Writer>>>>,
}

impl KafkaLog {
    /// Connects, checks (or creates) the topic and its partition count. Blocking: run it off
    /// async executors.
    pub fn open(options: Options) -> Result<Self, Error> {
        validate(&options)?;
        let topic = options.topic.clone();
        let client: BaseConsumer<TracingContext> = base_config(&options)
            .set("group.id", REPLAY_GROUP)
            // A watermark is the log's end, open transactions included (see `scan`).
            .set("isolation.level", "read_uncommitted")
            .create_with_context(TracingContext)
            .map_err(|error| kafka_error("creating the kafka client", error))?;
        ensure_topic(client.client(), &options, &topic)?;
        tracing::info!(
            brokers = options.brokers.as_str(),
            topic = topic.as_str(),
            partitions = options.partitions,
            "opened the kafka log"
        );
        let writers = (0..options.partitions).map(|_| Mutex::new(None)).collect();
        Ok(KafkaLog {
            options,
            client,
            writers,
        })
    }

    fn check_partition(&self, partition: u32) -> Result<i32, Error> {
        if partition < self.options.partitions {
            // `validate` bounds the partition count by i32::MAX.
            Ok(partition as i32)
        } else {
            Err(Error::NoSuchPartition {
                partition,
                partitions: self.options.partitions,
            })
        }
    }

    fn watermarks(&self, partition: i32) -> Result<(Offset, Offset), Error> {
        watermarks(
            self.client.client(),
            &self.options,
            &self.options.topic,
            partition,
        )
    }

    fn writer(&self, partition: u32) -> Result<Arc<Writer>, Error> {
        self.check_partition(partition)?;
        lock(&self.writers[partition as usize])
            .clone()
            .ok_or(Error::NotHeld { partition })
    }
}

impl EventLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.options.partitions
    }

    fn append(&self, partition: u32, entries: Vec<Entry>) -> Appending {
        let writer = match self.writer(partition) {
            Ok(writer) => writer,
            Err(error) => return futures::future::ready(Err(error)).boxed(),
        };
        // Larger records fail at the broker anyway (its `message.max.bytes`), with its reason.
        if let Err(error) = super::check_payloads(&entries, usize::MAX) {
            return futures::future::ready(Err(error)).boxed();
        }
        writer.append(entries, self.options.topic.clone())
    }

    fn acquire(&self, partition: u32) -> Result<(), Error> {
        self.check_partition(partition)?;
        let writer = Writer::acquire(&self.options, partition)?;
        *lock(&self.writers[partition as usize]) = Some(Arc::new(writer));
        tracing::info!(
            partition,
            topic = self.options.topic.as_str(),
            "acquired the partition's writer"
        );
        Ok(())
    }

    fn release(&self, partition: u32) {
        if let Ok(index) = self.check_partition(partition) {
            // The writer's thread ends the open batch as the last reference goes.
            lock(&self.writers[index as usize]).take();
        }
    }

    fn end_batch(&self, partition: u32) -> (u64, BoxFuture<'static, Result<(), Error>>) {
        match self.writer(partition) {
            Ok(writer) => (1, writer.end_batch()),
            Err(error) => (0, futures::future::ready(Err(error)).boxed()),
        }
    }

    fn high_watermark(&self, partition: u32) -> Result<Offset, Error> {
        let kafka_partition = self.check_partition(partition)?;
        Ok(self.watermarks(kafka_partition)?.1)
    }

    fn read(&self, partition: u32, from: Offset, visit: &mut Visitor<'_>) -> Result<Offset, Error> {
        let kafka_partition = self.check_partition(partition)?;
        let topic = self.options.topic.as_str();
        let (start, end) = self.watermarks(kafka_partition)?;
        if from < start || from > end {
            return Err(Error::OffsetOutOfRange {
                partition,
                requested: from,
                start,
                end,
            });
        }
        if from == end {
            return Ok(end);
        }
        scan(
            &self.options,
            topic,
            kafka_partition,
            from,
            end,
            &mut |offset, message| {
                let payload = message.payload().ok_or_else(|| {
                Error::Corrupt(format!(
                    "record {offset} of partition {partition} of kafka topic `{topic}` has no payload"
                ))
            })?;
                visit(offset, payload)
            },
        )?;
        Ok(end)
    }
}

/// Resolves once every delivery has an outcome, so that when an append fails none of its
/// records is still in flight; the first failure is the error.
pub(super) fn await_deliveries(
    topic: String,
    partition: i32,
    deliveries: Vec<DeliveryFuture>,
) -> BoxFuture<'static, Result<Vec<Offset>, Error>> {
    async move {
        let context = || format!("delivering to partition {partition} of kafka topic `{topic}`");
        let outcomes = futures::future::join_all(deliveries).await;
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(Ok(delivery)) if delivery.partition == partition => {
                    Offset::try_from(delivery.offset).map_err(|_| Error::Kafka {
                        context: context(),
                        reason: format!("the broker acknowledged offset {}", delivery.offset),
                    })
                }
                Ok(Ok(delivery)) => Err(Error::Kafka {
                    context: context(),
                    reason: format!("the record landed in partition {}", delivery.partition),
                }),
                Ok(Err((KafkaError::MessageProduction(code), _message)))
                    if writer::is_fencing(code) =>
                {
                    Err(Error::Fenced {
                        partition: partition as u32,
                        reason: code.to_string(),
                    })
                }
                Ok(Err((error, _message))) => Err(kafka_error(context(), error)),
                Err(_canceled) => Err(Error::Kafka {
                    context: context(),
                    reason: "the producer closed before the delivery was reported".into(),
                }),
            })
            .collect()
    }
    .boxed()
}

fn validate(options: &Options) -> Result<(), Error> {
    if options.partitions == 0 || i32::try_from(options.partitions).is_err() {
        return Err(Error::Config(format!(
            "kafka partitions must be between 1 and {}, not {}",
            i32::MAX,
            options.partitions
        )));
    }
    if options.topic.is_empty() || options.brokers.is_empty() {
        return Err(Error::Config(
            "kafka brokers and topic must not be empty".into(),
        ));
    }
    if options.replication_factor == 0 || options.replication_factor < -1 {
        return Err(Error::Config(format!(
            "kafka replication_factor must be positive (or -1 for the broker's default), not {}",
            options.replication_factor
        )));
    }
    if options.timeout_ms == 0 || options.delivery_timeout_ms == 0 {
        return Err(Error::Config(
            "kafka timeout_ms and delivery_timeout_ms must be positive".into(),
        ));
    }
    Ok(())
}

/// The records of `partition` of `topic` from offset `from` up to `end` (a high watermark read
/// before), in order, each with its offset. A fresh consumer per call: reads are rare (a shard
/// starting), and an assignment of its own keeps concurrent reads of partitions apart.
pub(crate) fn scan(
    options: &Options,
    topic: &str,
    partition: i32,
    from: Offset,
    end: Offset,
    visit: &mut dyn FnMut(Offset, &BorrowedMessage<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    if from >= end {
        return Ok(());
    }
    let timeout = Duration::from_millis(options.timeout_ms);
    let context =
        || format!("reading partition {partition} of kafka topic `{topic}` from offset {from}");
    // A fresh consumer per read: replays are rare (a shard starting), and an assignment of
    // its own keeps concurrent replays of different partitions apart.
    let consumer: BaseConsumer<TracingContext> = base_config(options)
        // librdkafka refuses `assign` without a group id, but an assigned consumer never
        // joins the group, and with commits off it never writes to it either.
        .set("group.id", REPLAY_GROUP)
        .set("enable.partition.eof", "true")
        // Records stay part of the log when the transaction they were written in is aborted
        // by the fencing of their writer (see `writer`): they were durable, and perhaps
        // acknowledged, before it.
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A start offset the broker no longer holds must fail, never silently skip.
        .set("auto.offset.reset", "error")
        .create_with_context(TracingContext)
        .map_err(|error| kafka_error(context(), error))?;
    let mut assignment = TopicPartitionList::with_capacity(1);
    assignment
        .add_partition_offset(topic, partition, rdkafka::Offset::Offset(from as i64))
        .and_then(|()| consumer.assign(&assignment))
        .map_err(|error| kafka_error(context(), error))?;

    let mut next = from;
    let mut last_progress = Instant::now();
    while next < end {
        let record = match consumer.poll(POLL_INTERVAL) {
            // Nothing yet, or librdkafka telling of a connection it lost (to a dead broker of
            // the bootstrap list, say) while it retries by itself: only a lack of progress fails.
            None
            | Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
            ))) => {
                if last_progress.elapsed() > timeout {
                    return Err(Error::Kafka {
                        context: context(),
                        reason: format!(
                            "no record arrived for {} ms at offset {next} (the high watermark is {end})",
                            options.timeout_ms
                        ),
                    });
                }
                continue;
            }
            // The partition ends before the watermark only when its tail holds no data
            // records (transaction markers), so there is nothing more to visit.
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(error)) => return Err(kafka_error(context(), error)),
            Some(Ok(record)) => record,
        };
        last_progress = Instant::now();
        let offset = Offset::try_from(record.offset())
                .ok()
                .filter(|&offset| offset >= next)
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "partition {partition} of kafka topic `{topic}` returned offset {} when offset {next} or later was due",
                        record.offset()
                    ))
                })?;
        if offset >= end {
            break;
        }
        visit(offset, &record)?;
        next = offset + 1;
    }
    Ok(())
}

/// (low, high) watermarks of a partition of `topic`: the first offset still held and the next
/// offset to be written.
pub(crate) fn watermarks<C: ClientContext>(
    client: &Client<C>,
    options: &Options,
    topic: &str,
    partition: i32,
) -> Result<(Offset, Offset), Error> {
    let context =
        || format!("fetching the watermarks of partition {partition} of kafka topic `{topic}`");
    let (low, high) = client
        .fetch_watermarks(topic, partition, Duration::from_millis(options.timeout_ms))
        .map_err(|error| kafka_error(context(), error))?;
    match (Offset::try_from(low), Offset::try_from(high)) {
        (Ok(low), Ok(high)) if low <= high => Ok((low, high)),
        _ => Err(Error::Kafka {
            context: context(),
            reason: format!("the broker answered low {low} and high {high}"),
        }),
    }
}

/// Makes sure `topic` exists with the log's partition count: creates it when it is missing
/// and `create_topic` is on, and refuses a topic with another count.
pub(crate) fn ensure_topic<C: ClientContext>(
    client: &Client<C>,
    options: &Options,
    topic: &str,
) -> Result<(), Error> {
    let found = match topic_partitions(client, options, topic)? {
        Some(found) => found,
        None if options.create_topic => {
            create_topic(options, topic)?;
            wait_for_topic(client, options, topic)?
        }
        None => {
            return Err(Error::Kafka {
                context: format!("opening kafka topic `{topic}`"),
                reason: "the topic does not exist and create_topic is off".into(),
            });
        }
    };
    if found != options.partitions {
        return Err(Error::PartitionCountMismatch {
            location: format!("kafka topic `{topic}`"),
            configured: options.partitions,
            found,
        });
    }
    Ok(())
}

/// Settings every client of the log shares.
pub(crate) fn base_config(options: &Options) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", "taskfold")
        // Only `create_topic` may create the topic, with the configured partition count; a
        // broker's auto-creation would pick its own.
        .set("allow.auto.create.topics", "false");
    config
}

/// The topic's partition count, or `None` when the topic does not exist.
fn topic_partitions<C: ClientContext>(
    client: &Client<C>,
    options: &Options,
    topic: &str,
) -> Result<Option<u32>, Error> {
    let context = || format!("fetching the metadata of kafka topic `{topic}`");
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_millis(options.timeout_ms))
        .map_err(|error| kafka_error(context(), error))?;
    let Some(found) = metadata.topics().iter().find(|found| found.name() == topic) else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
        Some(code) => {
            return Err(Error::Kafka {
                context: context(),
                reason: code.to_string(),
            });
        }
    }
    match found.partitions().len() {
        // Some brokers list a topic they are still creating without partitions.
        0 => Ok(None),
        count => Ok(Some(u32::try_from(count).unwrap_or(u32::MAX))),
    }
}

fn create_topic(options: &Options, topic: &str) -> Result<(), Error> {
    let context = || format!("creating kafka topic `{topic}`");
    let admin: AdminClient<TracingContext> = base_config(options)
        .create_with_context(TracingContext)
        .map_err(|error| kafka_error(context(), error))?;
    let timeout = Duration::from_millis(options.timeout_ms);
    let admin_options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    // `validate` bounds the partition count by i32::MAX.
    let min_insync_replicas = options.min_insync_replicas.to_string();
    let mut new_topic = NewTopic::new(
        topic,
        options.partitions as i32,
        TopicReplication::Fixed(options.replication_factor),
    );
    if options.min_insync_replicas > 0 {
        new_topic = new_topic.set("min.insync.replicas", &min_insync_replicas);
    }
    // The admin client answers from its own thread, so blocking on it needs no runtime.
    let results = futures::executor::block_on(admin.create_topics([&new_topic], &admin_options))
        .map_err(|error| kafka_error(context(), error))?;
    for result in results {
        match result {
            Ok(_) => {
                tracing::info!(
                    topic,
                    partitions = options.partitions,
                    replication_factor = options.replication_factor,
                    min_insync_replicas = options.min_insync_replicas,
                    "created kafka topic"
                );
            }
            // Another process created it first; the partition count check still applies.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::Kafka {
                    context: context(),
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Waits until a topic just created shows up in the metadata; brokers create asynchronously.
fn wait_for_topic<C: ClientContext>(
    client: &Client<C>,
    options: &Options,
    topic: &str,
) -> Result<u32, Error> {
    let started = Instant::now();
    loop {
        if let Some(found) = topic_partitions(client, options, topic)? {
            return Ok(found);
        }
        if started.elapsed() > Duration::from_millis(options.timeout_ms) {
            return Err(Error::Kafka {
                context: format!("creating kafka topic `{topic}`"),
                reason: format!("the topic did not appear within {} ms", options.timeout_ms),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kafka_error(context: impl Into<String>, error: KafkaError) -> Error {
    Error::Kafka {
        context: context.into(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_config_errors() {
        for options in [
            Options {
                partitions: 0,
                ..Options::default()
            },
            Options {
                partitions: u32::MAX,
                ..Options::default()
            },
            Options {
                topic: String::new(),
                ..Options::default()
            },
            Options {
                replication_factor: 0,
                ..Options::default()
            },
        ] {
            assert!(matches!(KafkaLog::open(options), Err(Error::Config(_))));
        }
    }
}
