//! A task shard: the single writer of one log partition. It runs each command as decide →
//! apply → append → reply, replying only once the log says the events are durable, and folds
//! what it applies into its partition store.
//!
//! - `commit`: a command's path: fault in, decide, apply, append, reply once durable.
//! - `documents`: the same for the documents of the services beside the queue.
//! - `state`: the partition store, and in memory only live work and unflushed changes.
//! - `replay`: a start opens the store and replays the log after the store's offset.
//! - `timers`: deadlines and claim expiries of live tasks; the shard sleeps until the next.
//! - `upkeep`: flushes (every `flush_every_events` events, and at least every second, the
//!   changes go to the store with their offset once they are durable), expiry from the store's
//!   expiry-ordered index, firing timers, and the log's retention.
//!
//! Here: the actor, announcing state to the other actors, and the messages it answers.

mod commit;
mod documents;
mod replay;
mod state;
mod timers;
mod upkeep;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{mpsc, watch};

use super::clock::Clock;
use super::dependencies::{self, DependencyResolver};
use super::dispatcher::{Dispatcher, NotPending, Pending};
use super::group_tracker::{self, Census, CensusEntry, GroupTracker};
use super::health::LogHealth;
use super::history::HistoryPage;
use super::index::{Indexes, Listing, Position};
use super::outbox::{self, KafkaSink, Outgoing};
use super::pending::PendingRun;
use super::store::{self, Expiring, Expiry, Relation};
use super::workers::{self, WorkerDirectory, WorkerName};
use crate::log::{Entry, EventLog, Offset, codec};
use crate::metrics::{METRICS, Metrics};
use crate::model::group::{self, GroupCommand};
use crate::model::task::{self, Command, ResolvedDependency};
use crate::model::worker::{self, WorkerCommand};
use crate::model::{ApiError, DocumentCommand, ErrorCode};
use crate::model::{
    Envelope, Event, RunState, Slugid, Storage, Task, TaskGroup, Timestamp, Worker, worker_key,
};
use crate::projections::bus::Bus;
use crate::projections::exchanges::{self, Message};
use crate::projections::kafka::{Checkpoint, ExchangeTopics};
use crate::projections::pulse::{Committed, PulseExchanges};
pub use documents::{ExecuteDocument, GetDocument, ListDocuments, ListNamespaces};
use state::{PartitionState, is_resolved};
use timers::{Timer, Timers};

/// What the shard needs besides its state.
#[derive(Clone)]
pub struct ShardContext {
    pub log: Arc<dyn EventLog>,
    pub data_dir: PathBuf,
    /// Where the blobs of `s3` artifacts live, deleted when they expire.
    pub blobs: crate::blobs::Store,
    pub task_settings: task::Settings,
    /// Changes go to the store after at most this many events (and at least every second).
    pub flush_every_events: u64,
    /// The store's block cache, per partition.
    pub store_cache_bytes: u64,
    pub dispatcher: Addr<Dispatcher>,
    pub resolver: Addr<DependencyResolver>,
    pub directory: Addr<WorkerDirectory>,
    pub groups: Addr<GroupTracker>,
    /// Where the exchange messages of committed events go to this server's listeners; `None`
    /// where the listeners hear of them from the exchange topics instead (several nodes).
    pub bus: Option<Arc<Bus>>,
    /// The exchange topics, with the Kafka backend.
    pub exchange_topics: Option<Arc<ExchangeTopics>>,
    /// The AMQP broker's exchanges (`[events] amqp_url`).
    pub pulse: Option<Arc<PulseExchanges>>,
    /// Set by the first failed append: from then on the shard refuses everything.
    pub health: LogHealth,
    pub clock: Clock,
    /// How long the log keeps records the store no longer needs; `None`: for ever.
    pub log_retention: Option<Duration>,
}

impl ShardContext {
    /// Whether a publisher keeps its place by log offset (exchange topics, AMQP broker), and so
    /// must hear of every commit, those without messages too.
    fn checkpoints_by_offset(&self) -> bool {
        self.exchange_topics.is_some() || self.pulse.is_some()
    }
}

type Barrier = Shared<BoxFuture<'static, Result<(), String>>>;

/// A shard's answer to a command: the shard has decided, applied and handed the events to the
/// log when it returns this; the caller awaits it on its own thread, and it resolves once the
/// events are durable. So the log's completion wakes the caller directly, not through the
/// shard's thread.
pub type Reply<T> = BoxFuture<'static, Result<T, ApiError>>;

/// How often the shard looks for changes to flush and for due expiries.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Every how many housekeeping rounds the log's retention is applied.
const RETENTION_ROUNDS: u64 = 10;
/// Most expiry entries handled per housekeeping round.
const EXPIRIES_PER_ROUND: usize = 1_000;

pub struct TaskShard {
    partition: u32,
    context: ShardContext,
    state: PartitionState,
    /// The pending and running lists of live tasks.
    indexes: Indexes,
    /// Resolves when everything appended so far is durable; replies that change nothing wait
    /// on it too, so no reply ever shows state a crash could lose.
    barrier: Option<Barrier>,
    /// The offset the next appended record will get: this shard is its partition's only
    /// writer, so it can tell which offset its state stands for.
    next_offset: Offset,
    events_since_flush: u64,
    /// The flush being written, until it is, and what it carries.
    flushing: Option<Shared<BoxFuture<'static, ()>>>,
    in_flight: Option<state::Taken>,
    timers: Timers,
    /// When the shard wakes for the next timer, and the handle to cancel that wake-up.
    wake: Option<(Timestamp, SpawnHandle)>,
    /// Expiry entries handled and not yet removed from the store by a flush.
    expiring: HashSet<Expiry>,
    /// Housekeeping rounds so far.
    rounds: u64,
    /// Whether a deletion of old log segments is under way.
    retaining: bool,
    self_address: Option<Addr<TaskShard>>,
    /// The exchange messages of each commit, published in order once durable.
    outbox: Option<mpsc::UnboundedSender<Outgoing>>,
    /// With exchange topics: where the replay left their publishing, and the messages it
    /// found undelivered; taken when the shard starts.
    recovered: Option<(Checkpoint, Vec<Message>)>,
    /// With the AMQP broker: where the replay left its publishing, and the messages it
    /// re-derived from there; taken when the shard starts.
    pulse_recovered: Option<(Offset, Vec<Message>)>,
    /// Per publisher that checkpoints (exchange topics, AMQP broker): the offset before which
    /// every message is delivered, as checkpointed; a flush never passes any, so a restart
    /// can re-derive the rest.
    exchange_progress: Vec<watch::Receiver<Offset>>,
    /// Whether anything was appended since the log's batch last ended.
    batch_open: bool,
    /// Why the partition is no longer this shard's, once another writer took it: the shard
    /// then refuses everything, and its owner stops it.
    lost: Arc<watch::Sender<Option<Loss>>>,
}

impl TaskShard {
    fn now(&self) -> Timestamp {
        self.context.clock.now()
    }

    fn task(&self, task_id: Slugid) -> Option<&Task> {
        self.state.entities.task(task_id)
    }

    fn group(&self, task_group_id: Slugid) -> Option<&TaskGroup> {
        self.state.entities.group(task_group_id)
    }

    /// Re-derives timers, pending hints, dependency registrations, lists and the worker
    /// directory from the live state, and reports the group census.
    fn announce_all(&mut self) {
        let now = self.now();
        for (key, worker) in &self.state.entities.workers {
            if let Some(name) = WorkerName::from_key(key) {
                // As of its last change, not of this restart: a worker long gone is not made
                // active again.
                self.context.directory.do_send(workers::Recorded {
                    name,
                    record: worker.clone(),
                    at: worker.changed().unwrap_or(now).min(now),
                });
            }
        }
        let task_ids: Vec<Slugid> = self.state.entities.tasks.keys().copied().collect();
        for task_id in task_ids {
            self.announce(task_id, true);
        }
        let mut census: HashMap<Slugid, CensusEntry> = HashMap::new();
        for task in self.state.entities.tasks.values() {
            let entry = census.entry(task.definition.task_group_id).or_default();
            match resolution(task) {
                None => entry.unresolved += 1,
                Some(at) => entry.latest_resolution = entry.latest_resolution.max(Some(at)),
            }
        }
        // Groups whose tasks resolved lately: a crash may have kept their resolution from
        // being recorded (the group tracker records it again, idempotently).
        match self.state.store.settling(Timestamp::from_millis(i64::MIN)) {
            Ok(settling) => {
                for (at, group) in settling {
                    let entry = census.entry(group).or_default();
                    entry.latest_resolution = entry.latest_resolution.max(Some(at));
                }
            }
            Err(error) => {
                tracing::warn!(partition = self.partition, %error, "cannot read recent resolutions")
            }
        }
        self.context.groups.do_send(Census {
            partition: self.partition,
            groups: census,
        });
    }

    /// Tells the timers, the lists, the dispatcher and the resolver what the task's state now
    /// means.
    fn announce(&mut self, task_id: Slugid, defined_now: bool) {
        let Some(task) = self.state.entities.task(task_id) else {
            return;
        };
        self.indexes.changed(task);
        self.timers.follow(task);
        let queue = task.definition.task_queue_id.clone();
        if defined_now && !is_resolved(task) {
            let waiting: Vec<Slugid> = task
                .definition
                .dependencies
                .iter()
                .filter(|dependency| !task.satisfied_dependencies.contains(dependency))
                .copied()
                .collect();
            if task.runs.is_empty() && !waiting.is_empty() {
                self.context.resolver.do_send(dependencies::Register {
                    dependent: task_id,
                    dependencies: waiting,
                });
            }
        }
        match task.runs.last() {
            Some(run) if run.state == RunState::Pending => {
                self.context.dispatcher.do_send(Pending {
                    task_queue_id: queue,
                    run: PendingRun {
                        task_id,
                        run_id: task.runs.len() as u32 - 1,
                    },
                    priority: task.priority,
                });
            }
            Some(run) => {
                let run_id = task.runs.len() as u32 - 1;
                self.context.dispatcher.do_send(NotPending {
                    task_queue_id: queue.clone(),
                    run: PendingRun { task_id, run_id },
                });
                if let (RunState::Running, Some(worker_group), Some(worker_id)) =
                    (run.state, &run.worker_group, &run.worker_id)
                {
                    self.context.directory.do_send(workers::Claimed {
                        name: WorkerName {
                            task_queue_id: queue.clone(),
                            worker_group: worker_group.clone(),
                            worker_id: worker_id.clone(),
                        },
                        task_id,
                        run_id,
                        at: run.started.unwrap_or(run.scheduled),
                    });
                }
                if run.state.is_resolved() {
                    self.context
                        .resolver
                        .do_send(dependencies::Resolved(ResolvedDependency {
                            task_id,
                            state: run.state,
                        }));
                }
            }
            None => {}
        }
    }
}

/// When the task resolved, if its latest run is resolved (a retry or rerun makes it
/// unresolved again).
fn resolution(task: &Task) -> Option<Timestamp> {
    task.runs
        .last()
        .filter(|run| run.state.is_resolved())
        .map(|run| run.resolved.unwrap_or(run.scheduled))
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InternalServerError, error.to_string())
}

fn store_failed(error: store::Error) -> ApiError {
    internal(error)
}

fn restart_required() -> ApiError {
    internal("the event log failed; this server must restart")
}

/// The answer of a shard whose partition another node took: the caller may try again, and
/// will reach the new owner.
fn moved(partition: u32, reason: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("partition {partition} moved to another node ({reason}); try again"),
    )
    .with_details(serde_json::json!({ MOVED: partition }))
}

/// The detail that marks the answer of a shard whose partition moved.
pub const MOVED: &str = "partitionMoved";

/// Whether `error` is the answer of a shard whose partition moved (ask its new owner).
pub fn is_moved(error: &ApiError) -> bool {
    error
        .details
        .as_ref()
        .is_some_and(|details| details.get(MOVED).is_some())
}

impl Actor for TaskShard {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Context<Self>) {
        let (outbox, pending) = mpsc::unbounded_channel();
        let kafka = match (&self.context.exchange_topics, self.recovered.take()) {
            (Some(topics), Some((checkpoint, messages))) => {
                let (progress, watching) = watch::channel(checkpoint.offset);
                self.exchange_progress.push(watching);
                // What the replay found undelivered goes first.
                let _ = outbox.send(Outgoing {
                    durable: futures::future::ready(true).boxed(),
                    end: self.next_offset,
                    messages,
                });
                Some(KafkaSink {
                    topics: topics.clone(),
                    checkpoint,
                    progress,
                })
            }
            _ => None,
        };
        let pulse = match (&self.context.pulse, self.pulse_recovered.take()) {
            (Some(exchanges), Some((cursor, messages))) => {
                let (progress, watching) = watch::channel(cursor);
                self.exchange_progress.push(watching);
                let (committed, publishing) = mpsc::unbounded_channel();
                // What the replay re-derived goes first.
                let _ = committed.send(Committed {
                    end: self.next_offset,
                    messages,
                });
                exchanges.start(self.partition, cursor, publishing, progress);
                Some(committed)
            }
            _ => None,
        };
        actix::spawn(outbox::forward(
            self.partition,
            pending,
            self.context.bus.clone(),
            kafka,
            pulse,
        ));
        self.outbox = Some(outbox);
        self.self_address = Some(context.address());
        self.announce_all();
        self.rearm(context);
        context.run_interval(HOUSEKEEPING, |shard, context| shard.housekeeping(context));
    }
}

/// Runs one command for one task of this shard.
#[derive(Message)]
#[rtype(result = "Reply<Task>")]
pub struct Execute {
    pub task_id: Slugid,
    pub command: Command,
    /// For a `Define` whose task group lives in this partition: the group decision, made
    /// first and appended together with the task's events.
    pub join: Option<GroupCommand>,
    /// Who asked: the clientId of the API call, `None` for the queue's own commands.
    pub client_id: Option<String>,
}

impl Handler<Execute> for TaskShard {
    type Result = MessageResult<Execute>;

    fn handle(&mut self, message: Execute, context: &mut Context<Self>) -> Self::Result {
        let reply = self.run(
            message.task_id,
            message.command,
            message.join,
            message.client_id,
        );
        self.after_command(context);
        MessageResult(reply)
    }
}

/// Reads one task, as of everything durable.
#[derive(Message)]
#[rtype(result = "Reply<Option<Task>>")]
pub struct Get {
    pub task_id: Slugid,
}

impl Handler<Get> for TaskShard {
    type Result = MessageResult<Get>;

    fn handle(&mut self, message: Get, _: &mut Context<Self>) -> Self::Result {
        match self.state.read_task(message.task_id) {
            Ok(task) => MessageResult(self.when_durable(task)),
            Err(error) => MessageResult(futures::future::ready(Err(store_failed(error))).boxed()),
        }
    }
}

/// The unscheduled tasks of this shard that still wait for dependencies, with those
/// dependencies.
#[derive(Message)]
#[rtype(result = "Vec<(Slugid, Vec<Slugid>)>")]
pub struct Waiting;

impl Handler<Waiting> for TaskShard {
    type Result = Vec<(Slugid, Vec<Slugid>)>;

    fn handle(&mut self, _: Waiting, _: &mut Context<Self>) -> Self::Result {
        self.state
            .entities
            .tasks
            .values()
            .filter(|task| task.runs.is_empty())
            .map(|task| {
                let waiting = task
                    .definition
                    .dependencies
                    .iter()
                    .filter(|dependency| !task.satisfied_dependencies.contains(dependency))
                    .copied()
                    .collect::<Vec<_>>();
                (task.task_id, waiting)
            })
            .filter(|(_, waiting)| !waiting.is_empty())
            .collect()
    }
}

/// Runs one command for one task group of this shard.
#[derive(Message)]
#[rtype(result = "Reply<TaskGroup>")]
pub struct ExecuteGroup {
    pub task_group_id: Slugid,
    pub command: GroupCommand,
    /// Who asked: the clientId of the API call, `None` for the queue's own commands.
    pub client_id: Option<String>,
}

impl Handler<ExecuteGroup> for TaskShard {
    type Result = MessageResult<ExecuteGroup>;

    fn handle(&mut self, message: ExecuteGroup, context: &mut Context<Self>) -> Self::Result {
        let group_id = message.task_group_id;
        if let Err(error) = self.state.fault_group(group_id) {
            return MessageResult(futures::future::ready(Err(store_failed(error))).boxed());
        }
        let key = group_id.to_string();
        let decided = group::decide(group_id, self.group(group_id), message.command);
        let committed = decided.and_then(|events| {
            let events = events.into_iter().map(|event| (key.clone(), event));
            self.commit(self.now(), message.client_id, events.collect())
        });
        if let Err(error) = committed {
            return MessageResult(futures::future::ready(Err(error)).boxed());
        }
        self.after_command(context);
        let group = self.group(group_id).cloned();
        MessageResult(self.reply(group, move || group::group_not_found(group_id)))
    }
}

/// Records what the log keeps of a worker: a quarantine or a declared expiry.
#[derive(Message)]
#[rtype(result = "Reply<Worker>")]
pub struct RecordWorker {
    pub name: WorkerName,
    pub command: WorkerCommand,
    /// Who asked: the clientId of the API call.
    pub client_id: Option<String>,
}

impl Handler<RecordWorker> for TaskShard {
    type Result = MessageResult<RecordWorker>;

    fn handle(&mut self, message: RecordWorker, context: &mut Context<Self>) -> Self::Result {
        let name = message.name;
        let key = worker_key(&name.task_queue_id, &name.worker_group, &name.worker_id);
        let now = self.now();
        let events = worker::decide(message.command, now)
            .into_iter()
            .map(|event| (key.clone(), event))
            .collect();
        if let Err(error) = self.commit(now, message.client_id, events) {
            return MessageResult(futures::future::ready(Err(error)).boxed());
        }
        self.after_command(context);
        let worker = self.state.entities.workers.get(&key).cloned();
        if let Some(record) = &worker {
            self.context.directory.do_send(workers::Recorded {
                name,
                record: record.clone(),
                at: now,
            });
        }
        MessageResult(self.reply(worker, || internal("the worker record was not applied")))
    }
}

/// Reads one task group, as of everything durable.
#[derive(Message)]
#[rtype(result = "Reply<Option<TaskGroup>>")]
pub struct GetGroup {
    pub task_group_id: Slugid,
}

impl Handler<GetGroup> for TaskShard {
    type Result = MessageResult<GetGroup>;

    fn handle(&mut self, message: GetGroup, _: &mut Context<Self>) -> Self::Result {
        match self.state.read_group(message.task_group_id) {
            Ok(group) => MessageResult(self.when_durable(group)),
            Err(error) => MessageResult(futures::future::ready(Err(store_failed(error))).boxed()),
        }
    }
}

/// This shard's part of a listing: up to `limit` tasks after `after`, in order, each with
/// its position.
#[derive(Message)]
#[rtype(result = "Vec<(Position, Task)>")]
pub struct List {
    pub listing: Listing,
    pub after: Option<Position>,
    pub limit: usize,
}

impl Handler<List> for TaskShard {
    type Result = ResponseFuture<Vec<(Position, Task)>>;

    fn handle(&mut self, message: List, _: &mut Context<Self>) -> Self::Result {
        let tasks: Vec<(Position, Task)> = match &message.listing {
            Listing::Members(of) | Listing::Dependents(of) => {
                let after = message.after.map(|(_, task_id)| task_id);
                match self
                    .state
                    .listed(relation(&message.listing), *of, after, message.limit)
                {
                    Ok(tasks) => tasks
                        .into_iter()
                        .map(|task| ((0, task.task_id), task))
                        .collect(),
                    Err(error) => {
                        tracing::warn!(partition = self.partition, %error, "cannot list tasks");
                        Vec::new()
                    }
                }
            }
            Listing::Pending(_) | Listing::Running(_) => self
                .indexes
                .page(&message.listing, message.after, message.limit)
                .into_iter()
                .filter_map(|position| Some((position, self.task(position.1)?.clone())))
                .collect(),
        };
        Box::pin(self.when_durable(tasks).map(Result::unwrap_or_default))
    }
}

/// The store's list behind a group or dependency listing.
fn relation(listing: &Listing) -> Relation {
    match listing {
        Listing::Dependents(_) => Relation::Dependents,
        _ => Relation::Members,
    }
}

/// How many tasks of this shard a listing has.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count(pub Listing);

impl Handler<Count> for TaskShard {
    type Result = usize;

    fn handle(&mut self, Count(listing): Count, _: &mut Context<Self>) -> usize {
        match &listing {
            Listing::Members(of) | Listing::Dependents(of) => self
                .state
                .listed(relation(&listing), *of, None, usize::MAX)
                .map_or(0, |tasks| tasks.len()),
            Listing::Pending(_) | Listing::Running(_) => self.indexes.count(&listing),
        }
    }
}

/// A deletion of old log segments finished.
#[derive(Message)]
#[rtype(result = "()")]
struct RetentionDone;

impl Handler<RetentionDone> for TaskShard {
    type Result = ();

    fn handle(&mut self, _: RetentionDone, _: &mut Context<Self>) {
        self.retaining = false;
    }
}

/// Resolves once everything changed so far is in the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flushed;

impl Handler<Flushed> for TaskShard {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flushed, context: &mut Context<Self>) -> Self::Result {
        self.flush(context);
        let earlier = self.flushed();
        let address = context.address();
        Box::pin(async move {
            earlier.await;
            // A flush already being written may not hold the latest changes: one more.
            if let Ok(latest) = address.send(FlushNow).await {
                latest.await;
            }
        })
    }
}

/// Resolves once everything changed so far is in the store and its memtables are written out
/// as tables: the last thing a stopping server does.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Seal;

/// Why a shard no longer serves its partition; it refuses everything from then on.
#[derive(Clone, Debug)]
pub enum Loss {
    /// Handed over (`Release`).
    Released,
    /// Another writer took the partition.
    Fenced(String),
    /// A Kafka append failed, or its records landed at other offsets than the state applied
    /// them at: the state in memory may differ from the log, so the shard is made again from
    /// its store and the log (a crash of this shard alone, where the embedded log stops the
    /// process).
    Resync(String),
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Released => f.write_str("handed over"),
            Loss::Fenced(reason) | Loss::Resync(reason) => f.write_str(reason),
        }
    }
}

/// Stops the shard for a hand-over: it refuses new commands, waits for its appends, ends the
/// log's batch, writes its store, and stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release;

impl Handler<Release> for TaskShard {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Release, context: &mut Context<Self>) -> Self::Result {
        self.end_batch();
        self.lost
            .send_if_modified(|lost| lost.replace(Loss::Released).is_none());
        let sealed = self.handle(Seal, context);
        Box::pin(sealed.into_actor(self).map(|(), _, context| context.stop()))
    }
}

/// The offset the shard's next record will get.
#[derive(Message)]
#[rtype(result = "Offset")]
pub struct NextOffset;

impl Handler<NextOffset> for TaskShard {
    type Result = Offset;

    fn handle(&mut self, _: NextOffset, _: &mut Context<Self>) -> Offset {
        self.next_offset
    }
}

impl TaskShard {
    /// Resolves with the reason once another writer has taken the partition.
    pub fn lost(&self) -> watch::Receiver<Option<Loss>> {
        self.lost.subscribe()
    }
}

impl Handler<Seal> for TaskShard {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Seal, context: &mut Context<Self>) -> Self::Result {
        let flushed = self.handle(Flushed, context);
        let store = self.state.store.clone();
        let partition = self.partition;
        Box::pin(async move {
            flushed.await;
            let sealed = tokio::task::spawn_blocking(move || store.seal()).await;
            if let Ok(Err(error)) = sealed {
                tracing::warn!(partition, %error, "cannot write the store's memtables out");
            }
        })
    }
}

/// Starts a flush (or returns the one being written).
#[derive(Message)]
#[rtype(result = "Shared<BoxFuture<'static, ()>>")]
struct FlushNow;

impl Handler<FlushNow> for TaskShard {
    type Result = MessageResult<FlushNow>;

    fn handle(&mut self, _: FlushNow, context: &mut Context<Self>) -> Self::Result {
        self.flush(context);
        MessageResult(self.flushed())
    }
}

/// How many tasks this shard holds.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct TaskCount;

impl Handler<TaskCount> for TaskShard {
    type Result = u64;

    fn handle(&mut self, _: TaskCount, _: &mut Context<Self>) -> u64 {
        self.state.task_count()
    }
}

/// One page of a task's history: its records after the offset `after`, at most `limit`, as of
/// everything durable; `None` if there is no such task.
#[derive(Message)]
#[rtype(result = "Reply<Option<HistoryPage>>")]
pub struct History {
    pub task_id: Slugid,
    pub after: Option<Offset>,
    pub limit: usize,
}

impl Handler<History> for TaskShard {
    type Result = MessageResult<History>;

    fn handle(&mut self, message: History, _: &mut Context<Self>) -> Self::Result {
        let read = self
            .state
            .read_task(message.task_id)
            .and_then(|task| match task {
                None => Ok(None),
                Some(_) => {
                    let limit = message.limit.max(1);
                    let mut records = self.state.history(
                        message.task_id,
                        message.after,
                        limit.saturating_add(1),
                    )?;
                    let more = records.len() > limit;
                    records.truncate(limit);
                    Ok(Some(HistoryPage { records, more }))
                }
            });
        match read {
            Ok(page) => MessageResult(self.when_durable(page)),
            Err(error) => MessageResult(futures::future::ready(Err(store_failed(error))).boxed()),
        }
    }
}
