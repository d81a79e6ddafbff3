//! The partition store: each log partition's folded state in an embedded disk store (fjall,
//! an LSM tree; chosen by measurement, see `log`'s module notes), so that retained history
//! costs disk, not memory.
//!
//! One fjall database per partition, under `<data-dir>/store/partition-<N>/fjall/` beside a
//! `layout` file naming the layout of what it holds, with these
//! keyspaces (ids are the 16 raw bytes of a slugid, numbers big-endian so that byte order is
//! numeric order):
//!
//! | keyspace      | key                                   | value                         |
//! |---------------|---------------------------------------|-------------------------------|
//! | `definitions` | task                                  | the definition, written once  |
//! | `tasks`       | task                                  | the rest of the folded task   |
//! | `live`        | task                                  | — (the task is unresolved)    |
//! | `members`     | group · task                          | —                             |
//! | `dependents`  | dependency · task                     | —                             |
//! | `groups`      | group                                 | the task group                |
//! | `workers`     | worker key                            | the worker record             |
//! | `expiry`      | expires · kind · id [· run · name]     | — (a hint: the shard decides) |
//! | `history`     | task · log offset                     | the event's history record    |
//! | `settling`    | resolved at · group                   | — (recent task resolutions)   |
//! | `documents`   | kind · name ([`store_key`])            | the document (secret, …)      |
//! | `namespaces`  | parent namespace · 0 · name           | expires (the index's tree)    |
//! | `meta`        | `offset`                              | a number                      |
//!
//! A [`Flush`] is one atomic batch: the entities changed since the last one and the log offset
//! they reflect, so the state and its offset never disagree. Batches are written to the OS,
//! never fsynced per request: the log is the source of truth, and a crash replays it from the
//! store's offset. The shard writes a flush only once every event before its offset is durable,
//! so the store never runs ahead of the log.
//!
//! Measured with `taskfold bench retain` (release build, this project's 2-core machine), one
//! million resolved realistic tasks (5.3 KB definitions): 3.2 KB of store per task, ready
//! 2.4 s after a restart at 264 MiB RSS, random `task`/`status` reads p99 0.8/0.5 ms, and
//! lifecycles 94 % of the rate on an empty directory; ten million small ones: 376 B of store
//! per task, ready in 2.1 s at 616 MiB. Before the stores, 200,000 realistic tasks took
//! 1.9 GiB at ready and a million did not fit in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::log::{Offset, codec};
use crate::model::document::{self, store_key};
use crate::model::{
    Artifact, Document, DocumentKind, InputRequest, Priority, Run, Session, Slugid, Task,
    TaskDefinition, TaskGroup, Timestamp, Worker,
};

/// Journal bytes after which a store writes its memtables out as tables (fjall's least; its default is
/// 512 MiB, all of which a start would read back into memory).
const JOURNAL_BYTES: u64 = 64 << 20;
/// Largest memtable of one keyspace.
const MEMTABLE_BYTES: u64 = 8 << 20;

/// The layout this build writes. A store of another layout is rebuilt from the log.
pub const LAYOUT: u64 = 1;

/// The store directory of one partition.
pub fn partition_dir(data_dir: &Path, partition: u32) -> PathBuf {
    data_dir
        .join("store")
        .join(format!("partition-{partition}"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("partition store: {0}")]
    Store(#[from] fjall::Error),
    #[error("partition store: a value does not decode: {0}")]
    Codec(#[from] codec::Error),
    #[error("partition store: {0}")]
    Io(#[from] std::io::Error),
    #[error("partition store: {0}")]
    Damaged(String),
    #[error("partition store {0} is in use by another process")]
    InUse(String),
}

/// What expires at an [`Expiry`] key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expiring {
    Task(Slugid),
    Group(Slugid),
    /// The blob of an `s3` artifact: task, run, name.
    Blob(Slugid, u32, String),
    /// A document: kind and name.
    Document(DocumentKind, String),
    /// A namespace of the index: parent and name.
    Namespace(String, String),
}

/// An entry of the expiry-ordered index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Expiry {
    pub at: Timestamp,
    pub what: Expiring,
}

impl Expiry {
    fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(8 + 1 + 16 + 4 + 16);
        key.extend_from_slice(&ordered(self.at.millis()));
        match &self.what {
            Expiring::Task(id) => {
                key.push(0);
                key.extend_from_slice(id.as_bytes());
            }
            Expiring::Group(id) => {
                key.push(1);
                key.extend_from_slice(id.as_bytes());
            }
            Expiring::Blob(id, run_id, name) => {
                key.push(2);
                key.extend_from_slice(id.as_bytes());
                key.extend_from_slice(&run_id.to_be_bytes());
                key.extend_from_slice(name.as_bytes());
            }
            Expiring::Document(kind, name) => {
                key.push(3);
                key.extend_from_slice(&store_key(*kind, name));
            }
            Expiring::Namespace(parent, name) => {
                key.push(4);
                key.extend_from_slice(&namespace_key(parent, name));
            }
        }
        key
    }

    fn from_key(key: &[u8]) -> Option<Expiry> {
        let at = Timestamp::from_millis(unordered(key.get(..8)?.try_into().ok()?));
        let id = || slugid(key.get(9..25)?);
        let what = match key.get(8)? {
            0 => Expiring::Task(id()?),
            1 => Expiring::Group(id()?),
            2 => {
                let run_id = u32::from_be_bytes(key.get(25..29)?.try_into().ok()?);
                let name = String::from_utf8(key.get(29..)?.to_vec()).ok()?;
                Expiring::Blob(id()?, run_id, name)
            }
            3 => {
                let (kind, name) = document::from_store_key(key.get(9..)?)?;
                Expiring::Document(kind, name)
            }
            4 => {
                let (parent, name) = from_namespace_key(key.get(9..)?)?;
                Expiring::Namespace(parent, name)
            }
            _ => return None,
        };
        Some(Expiry { at, what })
    }
}

/// A task as the `tasks` keyspace keeps it: everything but its id and definition.
#[derive(serde::Serialize)]
struct TaskStateRef<'a> {
    retries_left: u32,
    priority: Priority,
    runs: &'a [Run],
    satisfied_dependencies: &'a BTreeSet<Slugid>,
    artifacts: &'a BTreeMap<(u32, String), Artifact>,
    sessions: &'a [Session],
    inputs: &'a [InputRequest],
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TaskState {
    retries_left: u32,
    priority: Priority,
    runs: Vec<Run>,
    satisfied_dependencies: BTreeSet<Slugid>,
    artifacts: BTreeMap<(u32, String), Artifact>,
    sessions: Vec<Session>,
    inputs: Vec<InputRequest>,
}

/// Version 2 added the runs' requests for input (`inputs`); a version-1 task was written
/// before any run could ask, so it has none.
impl codec::Versioned for TaskState {
    const VERSION: u8 = 2;

    fn decode_older(version: u8, body: &[u8]) -> Result<Self, codec::Error> {
        match version {
            1 => {
                let TaskStateVersion1 {
                    retries_left,
                    priority,
                    runs,
                    satisfied_dependencies,
                    artifacts,
                    sessions,
                } = codec::decode_body(body)?;
                Ok(TaskState {
                    retries_left,
                    priority,
                    runs,
                    satisfied_dependencies,
                    artifacts,
                    sessions,
                    inputs: Vec::new(),
                })
            }
            found => Err(codec::Error::UnknownVersion { found }),
        }
    }
}

/// [`TaskState`] as format version 1 wrote it.
#[derive(serde::Deserialize)]
struct TaskStateVersion1 {
    retries_left: u32,
    priority: Priority,
    runs: Vec<Run>,
    satisfied_dependencies: BTreeSet<Slugid>,
    artifacts: BTreeMap<(u32, String), Artifact>,
    sessions: Vec<Session>,
}

/// The lists the store keeps of a task group's members and of a task's dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The tasks of a task group.
    Members,
    /// The tasks that list a task in `dependencies`.
    Dependents,
}

impl Relation {
    /// Whether `task` is in the list of `of`.
    pub fn holds(self, task: &Task, of: Slugid) -> bool {
        match self {
            Relation::Members => task.definition.task_group_id == of,
            Relation::Dependents => task.definition.dependencies.contains(&of),
        }
    }
}

/// One change of a task in a [`Flush`].
pub enum TaskChange {
    /// The task as it is now; `new`: it is not in the store yet (its definition and list
    /// entries are written too); `replaces`: the store may still hold an expired task of the
    /// same id, whose list entries and history go.
    Put {
        task: Arc<Task>,
        new: bool,
        replaces: bool,
    },
    /// The task expired.
    Remove(Slugid),
}

/// A document's kind and name.
pub type DocumentName = (DocumentKind, String);

/// Everything a shard changed since its last flush, and the offset of the first event it does
/// not reflect.
#[derive(Default)]
pub struct Flush {
    pub offset: Offset,
    pub tasks: Vec<TaskChange>,
    /// Groups as they are now (`None`: expired).
    pub groups: Vec<(Slugid, Option<Arc<TaskGroup>>)>,
    pub workers: Vec<(String, Worker)>,
    pub expiries: Vec<Expiry>,
    /// Expiry keys handled since: removed.
    pub expired: Vec<Expiry>,
    /// Each task's history records (encoded), by log offset.
    pub history: Vec<(Slugid, Offset, Vec<u8>)>,
    /// Groups in which a task resolved, and when.
    pub settling: Vec<(Timestamp, Slugid)>,
    /// Documents as they are now (`None`: removed).
    pub documents: Vec<(DocumentName, Option<Arc<Document>>)>,
    /// Namespaces of the index (parent, name) and when they expire (`None`: swept).
    pub namespaces: Vec<((String, String), Option<Timestamp>)>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.groups.is_empty()
            && self.workers.is_empty()
            && self.expiries.is_empty()
            && self.expired.is_empty()
            && self.history.is_empty()
            && self.settling.is_empty()
            && self.documents.is_empty()
            && self.namespaces.is_empty()
    }
}

/// How a partition's store was found when opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Usable, reflecting the log before this offset.
    At(Offset),
    /// None there: a new data directory, or one from before the store.
    Missing,
    /// Set aside and made again empty, for this reason (a replay from the log's start rebuilds
    /// it).
    Rebuilt(String),
}

/// One partition's store. Cheap to clone; reads and writes are blocking.
#[derive(Clone)]
pub struct PartitionStore {
    database: Database,
    definitions: Keyspace,
    tasks: Keyspace,
    live: Keyspace,
    members: Keyspace,
    dependents: Keyspace,
    groups: Keyspace,
    workers: Keyspace,
    expiry: Keyspace,
    history: Keyspace,
    settling: Keyspace,
    documents: Keyspace,
    namespaces: Keyspace,
    meta: Keyspace,
}

const OFFSET: &str = "offset";
/// The file beside the database that names the store's layout.
const LAYOUT_FILE: &str = "layout";

impl PartitionStore {
    /// Opens the partition's store, making it if missing. A store that cannot be opened, of
    /// another layout, or ahead of the log (`log_end`) is deleted and made again empty: the
    /// caller replays the whole log into it. One in use by another process is an error.
    pub fn open(
        data_dir: &Path,
        partition: u32,
        cache_bytes: u64,
        log_end: Offset,
    ) -> Result<(PartitionStore, Found), Error> {
        let dir = partition_dir(data_dir, partition);
        if is_empty_dir(&dir) {
            return Ok((Self::create(&dir, cache_bytes)?, Found::Missing));
        }
        let reason = match read_layout(&dir) {
            Err(reason) => reason,
            Ok(()) => match Self::open_dir(&dir, cache_bytes) {
                Ok(store) => match store.check(log_end) {
                    Ok(offset) => return Ok((store, Found::At(offset))),
                    Err(reason) => reason,
                },
                // Another process holding it, or no permission: not damage, so not rebuilt.
                Err(Error::Store(fjall::Error::Locked)) => {
                    return Err(Error::InUse(dir.display().to_string()));
                }
                Err(Error::Io(error)) | Err(Error::Store(fjall::Error::Io(error)))
                    if error.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    return Err(Error::Io(error));
                }
                Err(error) => format!("it does not open: {error}"),
            },
        };
        std::fs::remove_dir_all(&dir)?;
        Ok((Self::create(&dir, cache_bytes)?, Found::Rebuilt(reason)))
    }

    /// Makes an empty store of this build's layout, reflecting no event yet.
    fn create(dir: &Path, cache_bytes: u64) -> Result<PartitionStore, Error> {
        let store = Self::open_dir(dir, cache_bytes)?;
        let mut batch = store
            .database
            .batch()
            .durability(Some(PersistMode::SyncAll));
        batch.insert(&store.meta, OFFSET, 0u64.to_be_bytes());
        batch.commit()?;
        let layout = dir.join(LAYOUT_FILE);
        let mut file = std::fs::File::create(&layout)?;
        std::io::Write::write_all(&mut file, format!("{LAYOUT}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(store)
    }

    fn open_dir(dir: &Path, cache_bytes: u64) -> Result<PartitionStore, Error> {
        let path = dir.join("fjall");
        std::fs::create_dir_all(&path)?;
        // Memory and the start's work stay small whatever the history: the journal is
        // flushed into tables at JOURNAL_BYTES, so a start replays at most that much of it
        // into memtables, and every level of the tables is compressed.
        let database = Database::builder(&path)
            .cache_size(cache_bytes.max(1 << 20))
            .worker_threads(1)
            .max_journaling_size(JOURNAL_BYTES)
            .open()?;
        let options = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
        };
        let keyspace = |name: &str| database.keyspace(name, options);
        Ok(PartitionStore {
            definitions: keyspace("definitions")?,
            tasks: keyspace("tasks")?,
            live: keyspace("live")?,
            members: keyspace("members")?,
            dependents: keyspace("dependents")?,
            groups: keyspace("groups")?,
            workers: keyspace("workers")?,
            expiry: keyspace("expiry")?,
            history: keyspace("history")?,
            settling: keyspace("settling")?,
            documents: keyspace("documents")?,
            namespaces: keyspace("namespaces")?,
            meta: keyspace("meta")?,
            database,
        })
    }

    /// The store's offset, or why it cannot serve.
    fn check(&self, log_end: Offset) -> Result<Offset, String> {
        let number = |key: &str| -> Result<Option<u64>, String> {
            match self.meta.get(key) {
                Ok(Some(bytes)) => bytes
                    .as_ref()
                    .try_into()
                    .map(|bytes| Some(u64::from_be_bytes(bytes)))
                    .map_err(|_| format!("its `{key}` is not a number")),
                Ok(None) => Ok(None),
                Err(error) => Err(format!("its `{key}` does not read: {error}")),
            }
        };
        let offset = number(OFFSET)?.ok_or("it has no offset")?;
        if offset > log_end {
            return Err(format!(
                "it reflects the log up to offset {offset}, past the log's end {log_end}"
            ));
        }
        // Every table must open and read: a truncated file fails here, not in a request.
        for keyspace in [&self.tasks, &self.definitions, &self.live, &self.groups] {
            if let Some(Err(error)) = keyspace.iter().next().map(|guard| guard.into_inner()) {
                return Err(format!("it does not read: {error}"));
            }
        }
        Ok(offset)
    }

    /// The offset of the first log event the store does not reflect.
    pub fn offset(&self) -> Result<Offset, Error> {
        let bytes = self
            .meta
            .get(OFFSET)?
            .ok_or_else(|| Error::Damaged("no offset".into()))?;
        let bytes: [u8; 8] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| Error::Damaged("the offset is not a number".into()))?;
        Ok(u64::from_be_bytes(bytes))
    }

    pub fn task(&self, task_id: Slugid) -> Result<Option<Task>, Error> {
        let key = task_id.as_bytes();
        let Some(state) = self.tasks.get(key)? else {
            return Ok(None);
        };
        let definition = self
            .definitions
            .get(key)?
            .ok_or_else(|| Error::Damaged(format!("task `{task_id}` has no definition")))?;
        let definition: TaskDefinition = codec::decode(&definition)?;
        let state: TaskState = codec::decode(&state)?;
        Ok(Some(Task {
            task_id,
            definition: Arc::new(definition),
            retries_left: state.retries_left,
            priority: state.priority,
            runs: state.runs,
            satisfied_dependencies: state.satisfied_dependencies,
            artifacts: state.artifacts,
            sessions: state.sessions,
            inputs: state.inputs,
        }))
    }

    pub fn group(&self, task_group_id: Slugid) -> Result<Option<TaskGroup>, Error> {
        match self.groups.get(task_group_id.as_bytes())? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every unresolved task.
    pub fn live_tasks(&self) -> Result<Vec<Task>, Error> {
        let mut tasks = Vec::new();
        for guard in self.live.iter() {
            let key = guard.key()?;
            let task_id = slugid(&key).ok_or_else(|| Error::Damaged("a bad live key".into()))?;
            tasks.extend(self.task(task_id)?);
        }
        Ok(tasks)
    }

    pub fn workers(&self) -> Result<Vec<(String, Worker)>, Error> {
        let mut workers = Vec::new();
        for guard in self.workers.iter() {
            let (key, value) = guard.into_inner()?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| Error::Damaged("a worker key is not text".into()))?;
            workers.push((key, codec::decode(&value)?));
        }
        Ok(workers)
    }

    /// Up to `limit` tasks in the `relation` list of `of` after `after`, in id order.
    pub fn listed(
        &self,
        relation: Relation,
        of: Slugid,
        after: Option<Slugid>,
        limit: usize,
    ) -> Result<Vec<Slugid>, Error> {
        let keyspace = match relation {
            Relation::Members => &self.members,
            Relation::Dependents => &self.dependents,
        };
        let start = match after {
            Some(after) => Bound::Excluded(pair(of, after)),
            None => Bound::Included(pair(of, Slugid::MIN)),
        };
        let end = Bound::Included(pair(of, Slugid::MAX));
        let mut found = Vec::new();
        for guard in keyspace.range::<Vec<u8>, _>((start, end)).take(limit) {
            let key = guard.key()?;
            found.push(slugid(&key[16..]).ok_or_else(|| Error::Damaged("a bad list key".into()))?);
        }
        Ok(found)
    }

    /// Up to `limit` expiry entries due at `now`, oldest first, after `after`.
    pub fn due(
        &self,
        now: Timestamp,
        after: Option<&Expiry>,
        limit: usize,
    ) -> Result<Vec<Expiry>, Error> {
        let start = match after {
            Some(after) => Bound::Excluded(after.key()),
            None => Bound::Unbounded,
        };
        let end = Bound::Excluded(ordered(now.millis().saturating_add(1)).to_vec());
        let mut due = Vec::new();
        for guard in self.expiry.range::<Vec<u8>, _>((start, end)).take(limit) {
            let key = guard.key()?;
            match Expiry::from_key(&key) {
                Some(expiry) => due.push(expiry),
                None => tracing::warn!("ignoring a malformed expiry key"),
            }
        }
        Ok(due)
    }

    /// The task's history after the record at `after`, up to `limit` records.
    pub fn history(
        &self,
        task_id: Slugid,
        after: Option<Offset>,
        limit: usize,
    ) -> Result<Vec<(Offset, Vec<u8>)>, Error> {
        let first = after.map_or(0, |after| after.saturating_add(1));
        let start = history_key(task_id, first);
        let end = history_key(task_id, u64::MAX);
        let mut records = Vec::new();
        for guard in self.history.range(start..=end).take(limit) {
            let (key, value) = guard.into_inner()?;
            let offset = u64::from_be_bytes(
                key.get(16..24)
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| Error::Damaged("a bad history key".into()))?,
            );
            records.push((offset, value.to_vec()));
        }
        Ok(records)
    }

    pub fn document(&self, kind: DocumentKind, name: &str) -> Result<Option<Document>, Error> {
        self.documents
            .get(store_key(kind, name))?
            .map(|bytes| codec::decode(&bytes).map_err(Error::from))
            .transpose()
    }

    /// Up to `limit` documents whose store keys start with `prefix`, after the key `after`,
    /// in key order.
    pub fn documents(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Document)>, Error> {
        let start = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut found = Vec::new();
        for guard in self
            .documents
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (key, value) = guard.into_inner()?;
            if !key.starts_with(prefix) || found.len() == limit {
                break;
            }
            found.push((key.to_vec(), codec::decode(&value)?));
        }
        Ok(found)
    }

    /// When the namespace `name` under `parent` expires, if the index has it.
    pub fn namespace(&self, parent: &str, name: &str) -> Result<Option<Timestamp>, Error> {
        self.namespaces
            .get(namespace_key(parent, name))?
            .map(|bytes| expires_value(&bytes))
            .transpose()
    }

    /// Up to `limit` namespaces under `parent` after the one named `after`, in name order,
    /// with when each expires.
    pub fn namespaces(
        &self,
        parent: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Timestamp)>, Error> {
        let prefix = namespace_key(parent, "");
        let start = match after {
            Some(after) => Bound::Excluded(namespace_key(parent, after)),
            None => Bound::Included(prefix.clone()),
        };
        let mut found = Vec::new();
        for guard in self
            .namespaces
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (key, value) = guard.into_inner()?;
            if !key.starts_with(&prefix) || found.len() == limit {
                break;
            }
            let (_, name) = from_namespace_key(&key)
                .ok_or_else(|| Error::Damaged("a bad namespace key".into()))?;
            found.push((name, expires_value(&value)?));
        }
        Ok(found)
    }

    /// The groups in which a task resolved at `since` or later.
    pub fn settling(&self, since: Timestamp) -> Result<Vec<(Timestamp, Slugid)>, Error> {
        let mut found = Vec::new();
        for guard in self.settling.range(ordered(since.millis()).to_vec()..) {
            let key = guard.key()?;
            let at = Timestamp::from_millis(unordered(
                key[..8]
                    .try_into()
                    .map_err(|_| Error::Damaged("a bad settling key".into()))?,
            ));
            found.push((
                at,
                slugid(&key[8..]).ok_or_else(|| Error::Damaged("a bad settling key".into()))?,
            ));
        }
        Ok(found)
    }

    /// Writes a flush as one atomic batch (to the OS, not synced: see the module notes).
    pub fn write(&self, flush: &Flush, settled_before: Option<Timestamp>) -> Result<(), Error> {
        let mut batch = self.database.batch().durability(Some(PersistMode::Buffer));
        for change in &flush.tasks {
            match change {
                TaskChange::Put {
                    task,
                    new,
                    replaces,
                } => {
                    let key = task.task_id.as_bytes();
                    if *replaces {
                        self.remove_stale(&mut batch, task)?;
                    }
                    if *new {
                        batch.insert(&self.definitions, key, codec::encode(&*task.definition)?);
                        let group = task.definition.task_group_id;
                        batch.insert(&self.members, pair(group, task.task_id), []);
                        for dependency in &task.definition.dependencies {
                            batch.insert(&self.dependents, pair(*dependency, task.task_id), []);
                        }
                        let expiry = Expiry {
                            at: task.definition.expires,
                            what: Expiring::Task(task.task_id),
                        };
                        batch.insert(&self.expiry, expiry.key(), []);
                    }
                    let state = TaskStateRef {
                        retries_left: task.retries_left,
                        priority: task.priority,
                        runs: &task.runs,
                        satisfied_dependencies: &task.satisfied_dependencies,
                        artifacts: &task.artifacts,
                        sessions: &task.sessions,
                        inputs: &task.inputs,
                    };
                    batch.insert(&self.tasks, key, codec::encode_as::<TaskState, _>(&state)?);
                    if task.runs.last().is_some_and(|run| run.state.is_resolved()) {
                        batch.remove(&self.live, key);
                    } else {
                        batch.insert(&self.live, key, []);
                    }
                }
                TaskChange::Remove(task_id) => self.remove_task(&mut batch, *task_id)?,
            }
        }
        for (group_id, group) in &flush.groups {
            let key = group_id.as_bytes();
            match group {
                Some(group) => batch.insert(&self.groups, key, codec::encode(&**group)?),
                None => batch.remove(&self.groups, key),
            }
        }
        for (key, worker) in &flush.workers {
            batch.insert(&self.workers, key.as_bytes(), codec::encode(worker)?);
        }
        for expiry in &flush.expiries {
            batch.insert(&self.expiry, expiry.key(), []);
        }
        for expiry in &flush.expired {
            batch.remove(&self.expiry, expiry.key());
        }
        for (task_id, offset, record) in &flush.history {
            batch.insert(
                &self.history,
                history_key(*task_id, *offset),
                record.as_slice(),
            );
        }
        for (at, group) in &flush.settling {
            let mut key = ordered(at.millis()).to_vec();
            key.extend_from_slice(group.as_bytes());
            batch.insert(&self.settling, key, []);
        }
        if let Some(before) = settled_before {
            for guard in self
                .settling
                .range(..ordered(before.millis()).to_vec())
                .take(10_000)
            {
                batch.remove(&self.settling, guard.key()?);
            }
        }
        for ((kind, name), document) in &flush.documents {
            let key = store_key(*kind, name);
            match document {
                Some(document) => batch.insert(&self.documents, key, codec::encode(&**document)?),
                None => batch.remove(&self.documents, key),
            }
        }
        for ((parent, name), expires) in &flush.namespaces {
            let key = namespace_key(parent, name);
            match expires {
                Some(expires) => {
                    batch.insert(&self.namespaces, key, expires.millis().to_be_bytes())
                }
                None => batch.remove(&self.namespaces, key),
            }
        }
        batch.insert(&self.meta, OFFSET, flush.offset.to_be_bytes());
        batch.commit()?;
        Ok(())
    }

    fn remove_task(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        task_id: Slugid,
    ) -> Result<(), Error> {
        let key = task_id.as_bytes();
        if let Some(definition) = self.definitions.get(key)? {
            let definition: TaskDefinition = codec::decode(&definition)?;
            batch.remove(&self.members, pair(definition.task_group_id, task_id));
            for dependency in &definition.dependencies {
                batch.remove(&self.dependents, pair(*dependency, task_id));
            }
        }
        for table in [&self.definitions, &self.tasks, &self.live] {
            batch.remove(table, key);
        }
        for guard in self.history.prefix(key) {
            batch.remove(&self.history, guard.key()?);
        }
        Ok(())
    }

    /// Removes what the store holds of an expired task that `task` replaces, except the keys
    /// `task` writes again (one batch must not both remove and write a key).
    fn remove_stale(&self, batch: &mut fjall::OwnedWriteBatch, task: &Task) -> Result<(), Error> {
        let task_id = task.task_id;
        let Some(definition) = self.definitions.get(task_id.as_bytes())? else {
            return Ok(());
        };
        let stale: TaskDefinition = codec::decode(&definition)?;
        if stale.task_group_id != task.definition.task_group_id {
            batch.remove(&self.members, pair(stale.task_group_id, task_id));
        }
        for dependency in &stale.dependencies {
            if !task.definition.dependencies.contains(dependency) {
                batch.remove(&self.dependents, pair(*dependency, task_id));
            }
        }
        for guard in self.history.prefix(task_id.as_bytes()) {
            batch.remove(&self.history, guard.key()?);
        }
        Ok(())
    }

    /// Writes the memtables out as tables, so that the next start has no journal to read back
    /// into memory (a clean stop does this).
    pub fn seal(&self) -> Result<(), Error> {
        for keyspace in [
            &self.definitions,
            &self.tasks,
            &self.live,
            &self.members,
            &self.dependents,
            &self.groups,
            &self.workers,
            &self.expiry,
            &self.history,
            &self.settling,
            &self.documents,
            &self.namespaces,
            &self.meta,
        ] {
            keyspace.rotate_memtable_and_wait()?;
        }
        self.sync()
    }

    /// Writes everything written so far to disk (before the log below the offset is deleted).
    pub fn sync(&self) -> Result<(), Error> {
        self.database.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// How many tasks the store holds.
    pub fn task_count(&self) -> u64 {
        self.tasks.len().unwrap_or(0) as u64
    }

    /// Bytes the store takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.database.disk_space().unwrap_or(0)
    }
}

/// Whether the store in `dir` is of this build's layout, or why not.
fn read_layout(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join(LAYOUT_FILE))
        .map_err(|error| format!("its layout file does not read: {error}"))?;
    match text.trim().parse::<u64>() {
        Ok(LAYOUT) => Ok(()),
        Ok(other) => Err(format!(
            "it has layout {other}, this build reads layout {LAYOUT}"
        )),
        Err(_) => Err(format!("its layout file holds `{}`", text.trim())),
    }
}

/// The offset a partition's store reflects, read without opening it for writing (for
/// `taskfold log inspect`): `None` if there is no store.
pub fn peek_offset(data_dir: &Path, partition: u32) -> Result<Option<Offset>, Error> {
    let dir = partition_dir(data_dir, partition);
    if !dir.exists() || is_empty_dir(&dir) {
        return Ok(None);
    }
    read_layout(&dir).map_err(Error::Damaged)?;
    let store = PartitionStore::open_dir(&dir, 1 << 20)?;
    Ok(Some(store.offset()?))
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

fn pair(first: Slugid, second: Slugid) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(first.as_bytes());
    key.extend_from_slice(second.as_bytes());
    key
}

/// The key of a namespace of the index: its parent, a zero byte, its name (neither holds a
/// zero byte: index paths are checked).
pub fn namespace_key(parent: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(parent.len() + 1 + name.len());
    key.extend_from_slice(parent.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

fn from_namespace_key(key: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(key).ok()?;
    let (parent, name) = text.split_once('\0')?;
    Some((parent.to_owned(), name.to_owned()))
}

fn expires_value(bytes: &[u8]) -> Result<Timestamp, Error> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Damaged("a bad namespace expiry".into()))?;
    Ok(Timestamp::from_millis(i64::from_be_bytes(bytes)))
}

fn history_key(task_id: Slugid, offset: Offset) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(task_id.as_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

fn slugid(bytes: &[u8]) -> Option<Slugid> {
    let bytes: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
    Some(Slugid::from_bytes(bytes))
}

/// Milliseconds as bytes whose order is the numbers' (the sign bit flipped).
fn ordered(millis: i64) -> [u8; 8] {
    ((millis as u64) ^ (1 << 63)).to_be_bytes()
}

fn unordered(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_order_by_time_and_round_trip() {
        let id = Slugid::nice();
        let early = Expiry {
            at: Timestamp::from_millis(-5),
            what: Expiring::Blob(id, 3, "public/x.log".into()),
        };
        let late = Expiry {
            at: Timestamp::from_millis(1_000),
            what: Expiring::Task(id),
        };
        assert!(early.key() < late.key());
        assert_eq!(Expiry::from_key(&early.key()), Some(early));
        assert_eq!(Expiry::from_key(&late.key()), Some(late));
        for what in [
            Expiring::Document(DocumentKind::Secret, "a/b".into()),
            Expiring::Document(DocumentKind::IndexedTask, "a.b.c".into()),
            Expiring::Namespace("a.b".into(), "c".into()),
            Expiring::Namespace(String::new(), "a".into()),
        ] {
            let expiry = Expiry {
                at: Timestamp::from_millis(7),
                what,
            };
            assert_eq!(Expiry::from_key(&expiry.key()), Some(expiry));
        }
    }

    #[test]
    fn a_task_state_written_before_input_requests_still_reads() {
        /// The shape version 1 wrote, written here again so that the test does not move
        /// with `TaskState`.
        #[derive(serde::Serialize)]
        struct Written {
            retries_left: u32,
            priority: Priority,
            runs: Vec<Run>,
            satisfied_dependencies: BTreeSet<Slugid>,
            artifacts: BTreeMap<(u32, String), Artifact>,
            sessions: Vec<Session>,
        }
        let written = Written {
            retries_left: 4,
            priority: Priority::High,
            runs: vec![],
            satisfied_dependencies: BTreeSet::from([Slugid::nice()]),
            artifacts: BTreeMap::new(),
            sessions: vec![],
        };
        let mut bytes = vec![1u8];
        bytes.extend(bincode::serde::encode_to_vec(&written, bincode::config::standard()).unwrap());
        let state: TaskState = codec::decode(&bytes).unwrap();
        assert_eq!((state.retries_left, state.priority), (4, Priority::High));
        assert_eq!(state.satisfied_dependencies, written.satisfied_dependencies);
        assert!(state.inputs.is_empty());
        // What this build writes is version 2 and reads back whole.
        let encoded = codec::encode(&state).unwrap();
        assert_eq!(encoded[0], 2);
        assert!(codec::decode::<TaskState>(&encoded).is_ok());
    }
}
