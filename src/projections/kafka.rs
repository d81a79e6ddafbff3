//! Exchange messages on Kafka: one topic per exchange (`<prefix><exchange>`, with as many
//! partitions as the log), key = the task's (or group's) id, value = the JSON body, headers = the
//! routing key, the CC keys and CloudEvents' binary-mode `ce_*` attributes.
//!
//! Exactly once across restarts: a message derived from the event at (partition p, offset o)
//! always goes to partition p of its topic with `ce_id` = `p-o-i`, through one idempotent
//! producer, so within a topic partition messages are in log order. A checkpoint per partition
//! (`<data dir>/exchanges/partition-<p>.json`) records an offset X before which every message is
//! delivered, and for each topic where the messages of events from X on begin. A restart
//! re-derives the messages of events from X on (snapshots are never ahead of the checkpoint),
//! reads what each topic holds past its recorded position, and publishes only the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;
use serde::{Deserialize, Serialize};

use super::bus::Bus;
use super::exchanges::Message;
use crate::log::durable_file::write_atomically;
use crate::log::kafka::{self, TracingContext};
use crate::log::{Error, Offset};
use crate::model::exchange::{
    CC_HEADER, DEFAULT_TOPIC_PREFIX, Exchange, MessageId, ROUTING_KEY_HEADER,
};

/// The CloudEvents header naming a message for good.
const ID_HEADER: &str = "ce_id";
/// How long the exchange producer waits to fill a batch.
const EXCHANGE_LINGER_MS: u32 = 20;
/// How long to wait before retrying a record the producer's full queue refused.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

pub struct ExchangeTopics {
    options: kafka::Options,
    prefix: String,
    /// `ce_source`: the queue's API base URL.
    source: String,
    producer: FutureProducer<TracingContext>,
    checkpoints: PathBuf,
}

/// Where a partition's publishing stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every message of an event before this log offset is delivered.
    pub offset: Offset,
    /// Per topic: no message of an event at or after `offset` is before this topic offset.
    pub topics: BTreeMap<String, Offset>,
}

/// What a restarted partition must publish again.
pub struct Recovery {
    pub checkpoint: Checkpoint,
    /// Messages of events at or after the checkpoint that their topics already hold.
    pub delivered: HashSet<MessageId>,
}

impl ExchangeTopics {
    /// Connects and makes sure every exchange's topic exists with the log's partition count.
    /// Blocking.
    pub fn open(
        options: kafka::Options,
        prefix: &str,
        root_url: &str,
        data_dir: &Path,
    ) -> Result<ExchangeTopics, Error> {
        let producer: FutureProducer<TracingContext> = kafka::base_config(&options)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Nobody waits on these deliveries but the next checkpoint: fuller batches cost
            // the broker and this process far less than the log's short linger would.
            .set(
                "linger.ms",
                EXCHANGE_LINGER_MS.max(options.linger_ms).to_string(),
            )
            // Never give up on a record: a later one of the same partition must not be
            // delivered past an undelivered earlier one.
            .set("message.timeout.ms", "0")
            .create_with_context(TracingContext)
            .map_err(|error| Error::Kafka {
                context: "creating the exchange producer".into(),
                reason: error.to_string(),
            })?;
        let topics = ExchangeTopics {
            source: format!("{}/api/queue/v1", root_url.trim_end_matches('/')),
            prefix: prefix.to_owned(),
            checkpoints: data_dir.join("exchanges"),
            options,
            producer,
        };
        for exchange in Exchange::ALL {
            kafka::ensure_topic(
                topics.producer.client(),
                &topics.options,
                &topics.topic(exchange),
            )?;
        }
        std::fs::create_dir_all(&topics.checkpoints)
            .map_err(|error| Error::io("creating", &topics.checkpoints, error))?;
        Ok(topics)
    }

    pub fn topic(&self, exchange: Exchange) -> String {
        format!("{}{}", self.prefix, exchange.name())
    }

    fn checkpoint_path(&self, partition: u32) -> PathBuf {
        self.checkpoints.join(format!("partition-{partition}.json"))
    }

    pub fn save(&self, partition: u32, checkpoint: &Checkpoint) -> Result<(), Error> {
        let bytes =
            serde_json::to_vec(checkpoint).map_err(|error| Error::Corrupt(error.to_string()))?;
        write_atomically(&self.checkpoint_path(partition), &bytes)
    }

    /// Where partition `partition` resumes, given the offset its state was loaded at (a
    /// snapshot's): the checkpoint, and what the topics already hold past it. Blocking.
    pub fn recover(&self, partition: u32, snapshot: Offset) -> Result<Recovery, Error> {
        let path = self.checkpoint_path(partition);
        let mut checkpoint = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Checkpoint>(&bytes)
                .map_err(|error| Error::Corrupt(format!("{}: {error}", path.display())))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(error) => return Err(Error::io("reading", &path, error)),
        };
        if snapshot > checkpoint.offset {
            // Only a log written before exchanges were published gets here: the events in
            // between cannot be derived any more.
            tracing::warn!(
                partition,
                snapshot,
                checkpoint = checkpoint.offset,
                "no exchange messages for events before the snapshot"
            );
            checkpoint.offset = snapshot;
        }
        let mut delivered = HashSet::new();
        let kafka_partition = partition as i32;
        for exchange in Exchange::ALL {
            let topic = self.topic(exchange);
            let (low, high) = kafka::watermarks(
                self.producer.client(),
                &self.options,
                &topic,
                kafka_partition,
            )?;
            let from = checkpoint
                .topics
                .get(&topic)
                .copied()
                .unwrap_or(low)
                .max(low);
            kafka::scan(
                &self.options,
                &topic,
                kafka_partition,
                from,
                high,
                &mut |_, record| {
                    let id = record.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|header| header.key == ID_HEADER)
                            .and_then(|header| header.value)
                            .and_then(|value| std::str::from_utf8(value).ok())
                            .and_then(|value| value.parse::<MessageId>().ok())
                    });
                    if let Some(id) = id
                        && id.partition == partition
                        && id.offset >= checkpoint.offset
                    {
                        delivered.insert(id);
                    }
                    Ok(())
                },
            )?;
        }
        tracing::info!(
            partition,
            from = checkpoint.offset,
            already_delivered = delivered.len(),
            "recovered exchange publishing"
        );
        Ok(Recovery {
            checkpoint,
            delivered,
        })
    }

    /// Feeds `bus` with every message the exchange topics receive from now on, whichever
    /// process published it: with several nodes, each node's listeners hear of every
    /// partition. Runs on a thread of its own until the bus closes. Blocking (to start).
    pub fn tail(&self, bus: Arc<Bus>) -> Result<std::thread::JoinHandle<()>, Error> {
        let consumer: BaseConsumer<TracingContext> = kafka::base_config(&self.options)
            .set("group.id", "taskfold-listeners")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create_with_context(TracingContext)
            .map_err(|error| Error::Kafka {
                context: "creating the exchange reader".into(),
                reason: error.to_string(),
            })?;
        let mut assignment = TopicPartitionList::new();
        let mut exchanges = HashMap::new();
        for exchange in Exchange::ALL {
            let topic = self.topic(exchange);
            for partition in 0..self.options.partitions as i32 {
                let (_, high) =
                    kafka::watermarks(consumer.client(), &self.options, &topic, partition)?;
                assignment
                    .add_partition_offset(&topic, partition, rdkafka::Offset::Offset(high as i64))
                    .map_err(|error| Error::Kafka {
                        context: format!("reading exchange topic `{topic}`"),
                        reason: error.to_string(),
                    })?;
            }
            exchanges.insert(topic, exchange);
        }
        consumer.assign(&assignment).map_err(|error| Error::Kafka {
            context: "reading the exchange topics".into(),
            reason: error.to_string(),
        })?;
        std::thread::Builder::new()
            .name("exchange-tail".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while !bus.is_closed() {
                    let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let mut next = Some(polled);
                    while let Some(polled) = next.take() {
                        match polled {
                            Ok(record) => {
                                let exchange = exchanges.get(record.topic()).copied();
                                if let Some(message) =
                                    exchange.and_then(|exchange| received(exchange, &record))
                                {
                                    batch.push(message);
                                }
                            }
                            Err(error) => tracing::warn!(%error, "reading the exchange topics"),
                        }
                        if batch.len() < 1024 {
                            next = consumer.poll(Duration::ZERO);
                        }
                    }
                    if !batch.is_empty() {
                        bus.publish(std::mem::take(&mut batch));
                    }
                }
            })
            .map_err(|error| Error::io("starting the exchange reader", "kafka", error))
    }

    /// Hands one message to the producer (into partition `partition` of its topic), waiting
    /// while the producer's queue is full.
    pub async fn enqueue(
        &self,
        partition: u32,
        message: &Message,
    ) -> Result<DeliveryFuture, KafkaError> {
        let topic = self.topic(message.exchange);
        let key = message.subject.to_string();
        let id = message.id.to_string();
        let at = message.at.to_string();
        let ce_type = format!("{}{}", DEFAULT_TOPIC_PREFIX, message.exchange);
        let cc: Vec<String> = message.cc().collect();
        let mut headers = OwnedHeaders::new_with_capacity(8 + cc.len());
        for (name, value) in [
            (ROUTING_KEY_HEADER, message.routing_key.as_str()),
            ("ce_specversion", "1.0"),
            (ID_HEADER, id.as_str()),
            ("ce_source", self.source.as_str()),
            ("ce_type", ce_type.as_str()),
            ("ce_time", at.as_str()),
            ("ce_subject", key.as_str()),
            ("content-type", "application/json"),
        ] {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        for cc in &cc {
            headers = headers.insert(Header {
                key: CC_HEADER,
                value: Some(cc.as_str()),
            });
        }
        let mut record = FutureRecord::to(&topic)
            .partition(partition as i32)
            .key(key.as_str())
            .payload(message.body().get())
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}

/// A message read back from its exchange topic; `None` for a record that is not one of ours.
fn received(exchange: Exchange, record: &BorrowedMessage<'_>) -> Option<Message> {
    let headers = record.headers()?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|header| header.key == name)
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    };
    let id = header(ID_HEADER)?.parse::<MessageId>().ok()?;
    let routing_key = header(ROUTING_KEY_HEADER)?.to_owned();
    let at = header("ce_time")?.parse().ok()?;
    let subject = std::str::from_utf8(record.key()?).ok()?.parse().ok()?;
    let routes = headers
        .iter()
        .filter(|header| header.key == CC_HEADER)
        .filter_map(|header| std::str::from_utf8(header.value?).ok())
        .filter_map(|cc| cc.strip_prefix("route."))
        .map(str::to_owned)
        .collect();
    let body = serde_json::value::RawValue::from_string(
        std::str::from_utf8(record.payload()?).ok()?.to_owned(),
    )
    .ok()?;
    Some(Message::received(
        id,
        exchange,
        subject,
        routing_key,
        routes,
        at,
        body,
    ))
}
