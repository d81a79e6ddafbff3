//! The writer of one partition: a transactional producer whose `transactional.id` names the
//! topic and the partition, so that the partition has one writer in the whole cluster. A node
//! that takes the partition over calls `init_transactions` under the same id; the broker then
//! aborts the transaction its predecessor left open and refuses every record the predecessor
//! sends from then on (`PRODUCER_FENCED`): a paused node that wakes up can get nothing appended.
//!
//! The transaction is the fence, not the unit of durability. A record is durable, and
//! acknowledged, once all in-sync replicas hold it (`acks=all`), inside a transaction that is
//! still open; the log is read `read_uncommitted`, so a record stays part of the log even when
//! its transaction is later aborted by the fencing. The shard ends the transaction itself
//! ([`Writer::end_batch`]) about every few seconds, well inside `transaction.timeout.ms`, and
//! counts the one offset its commit marker takes, so it always knows the offset of its next
//! record.
//!
//! librdkafka's transactional calls block and no record may be produced while a commit runs,
//! so each writer has a thread of its own and takes its work in order from a channel.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::oneshot;

use super::{Options, QUEUE_FULL_BACKOFF, TracingContext, base_config, kafka_error};
use crate::log::{Appending, Entry, Error};

/// How long a transaction may stay open before the broker aborts it; a writer ends its
/// batches long before that.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

enum Work {
    Append {
        entries: Vec<Entry>,
        queued: oneshot::Sender<Result<Vec<DeliveryFuture>, Error>>,
    },
    EndBatch(oneshot::Sender<Result<(), Error>>),
}

/// The writer of one owned partition; dropping it ends the open batch and stops the thread.
pub struct Writer {
    partition: u32,
    work: Option<mpsc::Sender<Work>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Takes the partition: fences every earlier writer of it (its open transaction is aborted
    /// and its later records refused) and opens this writer's first batch. Blocking.
    pub fn acquire(options: &Options, partition: u32) -> Result<Writer, Error> {
        let context = || {
            format!(
                "taking partition {partition} of kafka topic `{}`",
                options.topic
            )
        };
        let producer: FutureProducer<TracingContext> = base_config(options)
            .set("transactional.id", transactional_id(options, partition))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", options.linger_ms.to_string())
            .set(
                "message.timeout.ms",
                options.delivery_timeout_ms.to_string(),
            )
            .set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            )
            .create_with_context(TracingContext)
            .map_err(|error| kafka_error(context(), error))?;
        let timeout = Duration::from_millis(options.timeout_ms);
        producer
            .init_transactions(timeout)
            .and_then(|()| producer.begin_transaction())
            .map_err(|error| classify(partition, context(), error))?;
        let (work, queue) = mpsc::channel();
        let thread = WriterThread {
            options: options.clone(),
            partition,
            producer,
            fenced: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("log-writer-{partition}"))
            .spawn(move || thread.run(queue))
            .map_err(|error| Error::io("starting the writer thread of", "kafka", error))?;
        Ok(Writer {
            partition,
            work: Some(work),
            thread: Some(thread),
        })
    }

    /// Appends `entries` in the open batch; see `EventLog::append`.
    pub fn append(&self, entries: Vec<Entry>, topic: String) -> Appending {
        let (queued, deliveries) = oneshot::channel();
        let sent = self
            .work
            .as_ref()
            .is_some_and(|work| work.send(Work::Append { entries, queued }).is_ok());
        let partition = self.partition;
        async move {
            if !sent {
                return Err(stopped(partition));
            }
            let deliveries = deliveries.await.map_err(|_| stopped(partition))??;
            super::await_deliveries(topic, partition as i32, deliveries).await
        }
        .boxed()
    }

    /// Ends the open batch (commits the transaction, whose marker takes one offset when the
    /// batch holds records) and opens the next; ordered after every earlier append.
    pub fn end_batch(&self) -> futures::future::BoxFuture<'static, Result<(), Error>> {
        let (done, ended) = oneshot::channel();
        let sent = self
            .work
            .as_ref()
            .is_some_and(|work| work.send(Work::EndBatch(done)).is_ok());
        let partition = self.partition;
        async move {
            if !sent {
                return Err(stopped(partition));
            }
            ended.await.map_err(|_| stopped(partition))?
        }
        .boxed()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued, end the batch and stop.
        self.work.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The transactional id of a partition's writer: the same on every node, which is what fences.
fn transactional_id(options: &Options, partition: u32) -> String {
    format!("taskfold.{}.{partition}", options.topic)
}

fn stopped(partition: u32) -> Error {
    Error::WriterStopped {
        partition,
        reason: "the partition's writer has stopped".into(),
    }
}

struct WriterThread {
    options: Options,
    partition: u32,
    producer: FutureProducer<TracingContext>,
    /// Why this writer may write no more, once another took the partition.
    fenced: Option<Error>,
}

impl WriterThread {
    fn run(mut self, queue: mpsc::Receiver<Work>) {
        while let Ok(work) = queue.recv() {
            match work {
                Work::Append { entries, queued } => {
                    let _ = queued.send(self.enqueue_all(&entries));
                }
                Work::EndBatch(done) => {
                    let _ = done.send(self.end_batch());
                }
            }
        }
        if self.fenced.is_none()
            && let Err(error) = self.end_batch()
        {
            tracing::warn!(partition = self.partition, %error, "the last batch did not end");
        }
    }

    fn context(&self) -> String {
        format!(
            "writing partition {} of kafka topic `{}`",
            self.partition, self.options.topic
        )
    }

    fn end_batch(&mut self) -> Result<(), Error> {
        if let Some(fenced) = &self.fenced {
            return Err(fenced.clone());
        }
        let timeout = Duration::from_millis(self.options.delivery_timeout_ms);
        let ended = self
            .producer
            .commit_transaction(timeout)
            .and_then(|()| self.producer.begin_transaction());
        ended.map_err(|error| {
            let error = classify(self.partition, self.context(), error);
            if matches!(error, Error::Fenced { .. }) {
                self.fenced = Some(error.clone());
            }
            error
        })
    }

    /// Hands every record to librdkafka in order, waiting while its queue is full.
    fn enqueue_all(&mut self, entries: &[Entry]) -> Result<Vec<DeliveryFuture>, Error> {
        if let Some(fenced) = &self.fenced {
            return Err(fenced.clone());
        }
        let topic = self.options.topic.as_str();
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut record = FutureRecord::to(topic)
                .partition(self.partition as i32)
                .key(entry.key.as_str())
                .payload(entry.payload.as_slice());
            let mut waiting_since: Option<Instant> = None;
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        let since = *waiting_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(self.options.delivery_timeout_ms)
                        {
                            return Err(Error::Kafka {
                                context: self.context(),
                                reason: format!(
                                    "the producer queue stayed full for {} ms",
                                    self.options.delivery_timeout_ms
                                ),
                            });
                        }
                        record = returned;
                        std::thread::sleep(QUEUE_FULL_BACKOFF);
                    }
                    Err((error, _)) => {
                        let error = classify(self.partition, self.context(), error);
                        if matches!(error, Error::Fenced { .. }) {
                            self.fenced = Some(error.clone());
                        }
                        return Err(error);
                    }
                }
            }
        }
        crate::metrics::METRICS
            .log_append_batch_events
            .observe(entries.len() as f64);
        Ok(deliveries)
    }
}

/// Whether a Kafka error says another writer took the partition.
pub(super) fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::InvalidProducerIdMapping
    )
}

fn classify(partition: u32, context: String, error: KafkaError) -> Error {
    let fencing = match &error {
        KafkaError::Transaction(error) => error.is_fatal() || is_fencing(error.code()),
        other => other.rdkafka_error_code().is_some_and(is_fencing),
    };
    if fencing {
        Error::Fenced {
            partition,
            reason: error.to_string(),
        }
    } else {
        kafka_error(context, error)
    }
}
