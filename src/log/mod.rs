//! The event log: the only durable state of Taskfold.
//!
//! Shards append the events they decide and reply to callers only when the log says the events
//! are durable; on start they open their partition store (`engine::store`) and replay the log
//! after the offset it reflects. Two backends
//! implement [`EventLog`] and partition keys identically: [`embedded`] (segment files on one
//! machine, the default) and [`kafka`] (a Kafka topic, for more than one machine).
//!
//! ## The partition store, chosen by measurement
//!
//! Each partition's folded state lives in an embedded store (state and log offset committed
//! together, lagging the log, never synced per request; see `engine::store`). The candidates,
//! measured on the project's
//! 2-core machine: 100,000 realistic tasks (5.9 KB of JSON each), 64 per commit, no sync per
//! commit, then 100,000 random point reads after reopening; two runs each.
//!
//! | store | tasks/s written | commit p50 / p99 | read p50 / p99 | disk per task | clean build |
//! |---|---|---|---|---|---|
//! | RocksDB 0.25 (LZ4) | 79k–84k | 0.63 / 4.6 ms | 5.7 / 70 µs | 2.9 KB | 632 s, C++, needs libclang |
//! | fjall 3.1 (defaults) | 60k–62k | 0.67 / 6.1 ms | 6.0 / 13 µs | 5.7 KB | 18 s |
//! | redb 5.0 (synced every 256 commits) | 35k–41k | 0.87 / 1.3–4.6 ms | 5.3 / 11 µs | 11.4 KB | 13 s |
//!
//! The queue's own rate is about 10,000 lifecycles/s, so every store writes fast enough. fjall
//! has the better read tail, builds in seconds in pure Rust, and takes half of redb's disk:
//! Taskfold uses fjall.

pub mod codec;
pub(crate) mod durable_file;
pub mod embedded;
pub mod inspect;
pub mod kafka;
pub mod load;
pub mod partition;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use partition::partition_for;
pub use settings::{Backend, Settings};

/// Opens the log the settings choose; an embedded log lives under `data_dir`.
pub fn open(settings: &Settings, data_dir: &std::path::Path) -> Result<Arc<dyn EventLog>, Error> {
    Ok(match settings.backend {
        Backend::Embedded => Arc::new(embedded::EmbeddedLog::open(
            data_dir,
            settings.embedded_options(),
        )?),
        Backend::Kafka => Arc::new(kafka::KafkaLog::open(settings.kafka_options())?),
    })
}

/// Position of a record within its partition; the first record of a partition is at 0.
pub type Offset = u64;

/// A record to append: the entity key (Kafka's message key; the embedded log keeps only the
/// payload, which carries the key inside its envelope) and the encoded envelope.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub payload: Vec<u8>,
}

/// Resolves to the offsets of the appended records once they are durable.
pub type Appending = BoxFuture<'static, Result<Vec<Offset>, Error>>;

/// A partitioned, append-only log of encoded events.
pub trait EventLog: Send + Sync {
    /// How many partitions the log has; fixed for the life of the log.
    fn partitions(&self) -> u32;

    /// The partition that owns `key`.
    fn partition_of(&self, key: &str) -> u32 {
        partition_for(key.as_bytes(), self.partitions())
    }

    /// Appends `entries`, in order, to `partition`. The records are ordered after every earlier
    /// `append` to the same partition as soon as this call returns; the returned future
    /// resolves when they are durable, never before. Appends to one partition become durable
    /// in the order they were made: once one resolves `Ok`, every earlier one has too.
    fn append(&self, partition: u32, entries: Vec<Entry>) -> Appending;

    /// Makes this process the one writer of `partition` before it appends there: with Kafka,
    /// every earlier writer of it, in any process, is fenced (nothing it appends from now on
    /// lands). The embedded log has one process by construction. Blocking.
    fn acquire(&self, partition: u32) -> Result<(), Error> {
        let _ = partition;
        Ok(())
    }

    /// Gives `partition` up: what was appended is kept, nothing more can be. Blocking.
    fn release(&self, partition: u32) {
        let _ = partition;
    }

    /// Ends the batch the writer of `partition` keeps open, ordered after every earlier
    /// append; a writer calls it every few seconds while it appends. Returns how many offsets
    /// the end takes in the partition (Kafka: 1, the marker that commits the writer's
    /// transaction; the embedded log keeps no batches: 0), and what resolves once it is done.
    fn end_batch(&self, partition: u32) -> (u64, BoxFuture<'static, Result<(), Error>>) {
        let _ = partition;
        (0, Box::pin(futures::future::ready(Ok(()))))
    }

    /// The offset the next appended record of `partition` will get.
    fn high_watermark(&self, partition: u32) -> Result<Offset, Error>;

    /// Calls `visit` with every durable record of `partition` from offset `from` up to the
    /// high watermark as of the call, in order. Returns the offset after the last record
    /// visited. Blocking: run it off async executors.
    fn read(&self, partition: u32, from: Offset, visit: &mut Visitor<'_>) -> Result<Offset, Error>;

    /// Deletes the records of `partition` that lie wholly below `offset` and were written
    /// before `older_than`, in whole segments, as far as the backend keeps them itself; returns
    /// how many records went. The caller has made sure nothing needs them any more (its state
    /// below `offset` is durable elsewhere). Kafka keeps its topic's own retention, so by
    /// default nothing is deleted. Blocking.
    fn delete_before(
        &self,
        partition: u32,
        offset: Offset,
        older_than: std::time::SystemTime,
    ) -> Result<u64, Error> {
        let _ = (partition, offset, older_than);
        Ok(0)
    }
}

/// Refuses payloads a log cannot hold: empty ones (a record without a payload reads back as
/// damage) and ones over `max_bytes`.
pub(crate) fn check_payloads(entries: &[Entry], max_bytes: usize) -> Result<(), Error> {
    match entries
        .iter()
        .find(|entry| entry.payload.is_empty() || entry.payload.len() > max_bytes)
    {
        Some(entry) => Err(Error::Config(format!(
            "a record payload must hold 1 to {max_bytes} bytes, not {}",
            entry.payload.len()
        ))),
        None => Ok(()),
    }
}

/// Receives `(offset, payload)`; an error stops the read and is returned from it.
pub type Visitor<'a> = dyn FnMut(Offset, &[u8]) -> Result<(), Error> + 'a;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{location}: {configured} partitions configured but {found} found")]
    PartitionCountMismatch {
        location: String,
        configured: u32,
        found: u32,
    },
    #[error("partition {partition} does not exist (the log has {partitions})")]
    NoSuchPartition { partition: u32, partitions: u32 },
    #[error(
        "offset {requested} of partition {partition} is not in the log (it holds {start}..{end})"
    )]
    OffsetOutOfRange {
        partition: u32,
        requested: Offset,
        start: Offset,
        end: Offset,
    },
    #[error("corrupt log: {0}")]
    Corrupt(String),
    /// Damage that valid records follow: cutting at it would drop acknowledged records, so
    /// the log is not opened and nothing on disk is changed.
    #[error("{0}")]
    Damaged(Box<Damage>),
    #[error("codec: {0}")]
    Codec(Arc<codec::Error>),
    #[error("kafka: {context}: {reason}")]
    Kafka { context: String, reason: String },
    /// Another process took the partition; this one may append to it no more.
    #[error("partition {partition} has another writer now: {reason}")]
    Fenced { partition: u32, reason: String },
    /// An append's records landed at other offsets than its writer expected them at.
    #[error(
        "partition {partition}: the log placed records at offset {found:?} where {expected} was expected"
    )]
    OffsetsMoved {
        partition: u32,
        expected: Offset,
        found: Option<Offset>,
    },
    /// An append to a partition this process has not acquired.
    #[error("partition {partition} is not held by this process")]
    NotHeld { partition: u32 },
    #[error("the log writer of partition {partition} has stopped: {reason}")]
    WriterStopped { partition: u32, reason: String },
    #[error("invalid log configuration: {0}")]
    Config(String),
}

/// Where a log is damaged with valid records after the damage, and how to go on.
#[derive(Debug, Clone)]
pub struct Damage {
    pub partition: u32,
    pub segment: PathBuf,
    /// The byte of `segment` where the damage starts.
    pub position: u64,
    /// The log offset of the first record the damage hides.
    pub offset: Offset,
    pub reason: String,
    /// Where the first valid record after the damage is (segment, byte); `None` when the
    /// search for one gave up on bytes unlike any record, which counts as one following.
    pub next: Option<(PathBuf, u64)>,
    pub data_dir: PathBuf,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the log is damaged: partition {}, segment {}, byte {} (the record at log offset \
             {}): {}; ",
            self.partition,
            self.segment.display(),
            self.position,
            self.offset,
            self.reason,
        )?;
        match &self.next {
            Some((segment, position)) => write!(
                f,
                "valid records follow it (byte {position} of {})",
                segment.display()
            )?,
            None => write!(
                f,
                "valid records may follow it (the bytes after it are not a torn write)"
            )?,
        }
        write!(
            f,
            ", so nothing was changed. `taskfold log repair --data-dir {}` keeps every record \
             before the damage and copies the rest aside",
            self.data_dir.display()
        )
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

impl From<codec::Error> for Error {
    fn from(error: codec::Error) -> Self {
        Error::Codec(Arc::new(error))
    }
}
