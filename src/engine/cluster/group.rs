//! Partition ownership through a Kafka consumer group over the log topic itself, with
//! cooperative rebalancing: the group coordinator assigns every partition to exactly one
//! member, nodes join and leave without configuration, and a member that stops heartbeating
//! for `session_timeout_ms` loses its partitions to the others. The consumer never reads
//! records (its partitions are paused as they come): it exists for its assignment.
//!
//! A revocation blocks the rebalance until the node has stopped serving the partitions (the
//! coordinator hands them on only after), so a graceful hand-over never has two writers; a
//! node that was paused or cut off loses them without being asked, and the fencing of the log
//! writer (`log::kafka`) keeps it from writing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc;

use crate::log::Error;
use crate::log::kafka::{self, TracingContext};

/// What the group decided for this node.
pub enum Change {
    Gained(Vec<u32>),
    /// Stop serving these now; `done` is answered once they are stopped.
    Revoked {
        partitions: Vec<u32>,
        done: std::sync::mpsc::Sender<()>,
    },
}

/// How long a revocation waits for the node to stop serving before it lets the group go on.
const REVOKE_WAIT: Duration = Duration::from_secs(30);
/// How long joining waits for the group's first answer (an assignment, or a refusal) before
/// it lets the node start anyway.
const JOIN_WAIT: Duration = Duration::from_secs(30);

struct GroupContext {
    changes: mpsc::UnboundedSender<Change>,
    /// Until the group first answers: told of the first rebalance, or of why the group
    /// refuses this member.
    joined: Mutex<Option<std::sync::mpsc::Sender<Result<(), String>>>>,
}

impl GroupContext {
    fn answered(&self, answer: Result<(), String>) {
        if let Some(joined) = self.joined.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = joined.send(answer);
        }
    }

    /// A refusal that no retry mends: the broker's bounds on the session timeout.
    fn refused(&self, error: &KafkaError) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidSessionTimeout) {
            self.answered(Err(format!(
                "{error}: the brokers' `group.min.session.timeout.ms` and \
                 `group.max.session.timeout.ms` must allow `[cluster] session_timeout_ms`"
            )));
        }
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        TracingContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.refused(&error);
        TracingContext.error(error, reason);
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<u32> {
    list.elements()
        .iter()
        .filter_map(|element| u32::try_from(element.partition()).ok())
        .collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.answered(Ok(()));
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions(list);
            if revoked.is_empty() {
                return;
            }
            tracing::info!(partitions = ?revoked, "the group revokes partitions");
            let (done, stopped) = std::sync::mpsc::channel();
            if self
                .changes
                .send(Change::Revoked {
                    partitions: revoked,
                    done,
                })
                .is_ok()
            {
                let _ = stopped.recv_timeout(REVOKE_WAIT);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let gained = partitions(list);
            if gained.is_empty() {
                return;
            }
            // The assignment is what counts; the records are read by the shards.
            if let Err(error) = consumer.pause(list) {
                tracing::warn!(%error, "cannot pause the assigned partitions");
            }
            tracing::info!(partitions = ?gained, "the group assigns partitions");
            let _ = self.changes.send(Change::Gained(gained));
        }
    }
}

/// This node's membership of the group; leaving hands its partitions over.
pub struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Membership {
    /// Joins the group of the log topic, and waits for the group's first answer: a broker
    /// that refuses the member (its session timeout out of the brokers' bounds) is an error.
    /// Blocking.
    pub fn join(
        options: &kafka::Options,
        node_id: &str,
        session_timeout: Duration,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Result<Membership, Error> {
        let topic = options.topic.clone();
        let error = |error: KafkaError| Error::Kafka {
            context: format!("joining the node group of kafka topic `{topic}`"),
            reason: error.to_string(),
        };
        let (joined, answer) = std::sync::mpsc::channel();
        let consumer: BaseConsumer<GroupContext> = kafka::base_config(options)
            .set("group.id", format!("taskfold.{}", options.topic))
            .set("client.id", format!("taskfold-node-{node_id}"))
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (session_timeout.as_millis() / 5).max(100).to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .create_with_context(GroupContext {
                changes,
                joined: Mutex::new(Some(joined)),
            })
            .map_err(error)?;
        consumer.subscribe(&[&options.topic]).map_err(error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-group".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    // Records never come (the partitions are paused); polling serves the
                    // group's heartbeats and rebalances, and reports the group's errors.
                    if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                        consumer.context().refused(&error);
                    }
                }
                // Leaving revokes every partition first (through the callback above), so
                // the others take them over at once instead of after the session timeout.
                consumer.unsubscribe();
                for _ in 0..20 {
                    let _ = consumer.poll(Duration::from_millis(50));
                }
                drop(consumer);
            })
            .map_err(|error| Error::io("starting the group member of", "kafka", error))?;
        let membership = Membership {
            stop,
            thread: Some(thread),
        };
        match answer.recv_timeout(JOIN_WAIT) {
            Ok(Err(reason)) => Err(Error::Kafka {
                context: format!("joining the node group of kafka topic `{topic}`"),
                reason,
            }),
            Ok(Ok(())) => Ok(membership),
            Err(_) => {
                tracing::warn!(
                    topic = %options.topic,
                    "the node group has not answered yet; serving what it assigns later"
                );
                Ok(membership)
            }
        }
    }

    /// Leaves the group, handing every partition over. Blocking.
    pub fn leave(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave();
    }
}
