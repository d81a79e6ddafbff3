//! A task shard: the single writer of one log partition. It owns the folded state of every
//! task in the partition and runs each command as decide → apply → append → reply, replying
//! only once the log says the events are durable. Timers (claim expiry, deadlines) live here
//! too, derived from state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{mpsc, watch};

use super::dependencies::{self, DependencyResolver};
use super::dispatcher::{Dispatcher, NotPending, Pending};
use super::group::{self, GroupCommand};
use super::group_tracker::{self, Census, CensusEntry, GroupTracker};
use super::health::LogHealth;
use super::index::{Indexes, Listing, Position};
use super::outbox::{self, KafkaSink, Outgoing};
use super::pending::PendingRun;
use super::task::{self, Command, ResolvedDependency};
use super::workers::{self, WorkerDirectory, WorkerName};
use crate::log::{Entry, EventLog, Offset, codec, snapshot};
use crate::metrics::{METRICS, Metrics};
use crate::model::{ApiError, ErrorCode};
use crate::model::{
    Entities, Envelope, Event, RunState, Slugid, Storage, Task, TaskGroup, Timestamp, Worker,
    worker_key,
};
use crate::projections::bus::Bus;
use crate::projections::exchanges::{self, Message};
use crate::projections::kafka::{Checkpoint, ExchangeTopics};

/// What the shard needs besides its state.
#[derive(Clone)]
pub struct ShardContext {
    pub log: Arc<dyn EventLog>,
    pub data_dir: PathBuf,
    pub task_settings: task::Settings,
    /// A snapshot is taken after this many events since the last one.
    pub snapshot_every_events: u64,
    pub dispatcher: Addr<Dispatcher>,
    pub resolver: Addr<DependencyResolver>,
    pub directory: Addr<WorkerDirectory>,
    pub groups: Addr<GroupTracker>,
    /// Where the exchange messages of committed events go.
    pub bus: Arc<Bus>,
    /// The exchange topics, with the Kafka backend.
    pub exchange_topics: Option<Arc<ExchangeTopics>>,
    /// Set by the first failed append: from then on the shard refuses everything.
    pub health: LogHealth,
}

type Barrier = Shared<BoxFuture<'static, Result<(), String>>>;

/// A shard's answer to a command: the shard has decided, applied and handed the events to the
/// log when it returns this; the caller awaits it on its own thread, and it resolves once the
/// events are durable. So the log's completion wakes the caller directly, not through the
/// shard's thread.
pub type Reply<T> = BoxFuture<'static, Result<T, ApiError>>;

pub struct TaskShard {
    partition: u32,
    context: ShardContext,
    state: Entities,
    indexes: Indexes,
    /// Resolves when everything appended so far is durable; replies that change nothing wait
    /// on it too, so no reply ever shows state a crash could lose.
    barrier: Option<Barrier>,
    /// The offset the next appended record will get: this shard is its partition's only
    /// writer, so it can tell which offset a snapshot of its current state stands for.
    next_offset: Offset,
    events_since_snapshot: u64,
    /// The snapshot write started last, until it is done.
    last_snapshot: Option<Shared<BoxFuture<'static, ()>>>,
    timers: BinaryHeap<Reverse<(Timestamp, Slugid, Timer)>>,
    /// When each `s3` artifact expires (task, run, name): its blob file is deleted then, as
    /// Taskcluster's `expire-artifacts` does; the artifact itself (410 once expired) stays
    /// with its task.
    blob_expiries: BinaryHeap<Reverse<(Timestamp, Slugid, u32, String)>>,
    /// The exchange messages of each commit, published in order once durable.
    outbox: Option<mpsc::UnboundedSender<Outgoing>>,
    /// With exchange topics: where the replay left their publishing, and the messages it
    /// found undelivered; taken when the shard starts.
    recovered: Option<(Checkpoint, Vec<Message>)>,
    /// With exchange topics: the offset before which every message is delivered, as
    /// checkpointed; a snapshot never passes it, so a restart can re-derive the rest.
    exchange_progress: Option<watch::Receiver<Offset>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    ClaimExpiry {
        run_id: u32,
        taken_until: Timestamp,
    },
    Deadline,
    /// The task's `expires`.
    Expiry,
    /// The group's `expires` as it was when set (the key is the group's id); a group that a
    /// later task outlived sets it again.
    GroupExpiry,
}

/// How often due timers are checked.
const TIMER_TICK: Duration = Duration::from_millis(250);

impl TaskShard {
    /// Replays the partition (newest snapshot, then the log after it). Blocking.
    pub fn replay(partition: u32, context: ShardContext) -> Result<Self, crate::log::Error> {
        let log_end = context.log.high_watermark(partition)?;
        let (start, mut state) =
            match snapshot::load_newest::<Entities>(&context.data_dir, partition, log_end)? {
                Some((offset, state)) => (offset, state),
                None => (0, Entities::default()),
            };
        let recovery = match &context.exchange_topics {
            Some(topics) => Some(topics.recover(partition, start)?),
            None => None,
        };
        let mut rederiving = recovery.as_ref().map(|recovery| Rederiving {
            partition,
            from: recovery.checkpoint.offset,
            run: Vec::new(),
            messages: Vec::new(),
        });
        let end = context.log.read(partition, start, &mut |offset, payload| {
            let envelope = codec::decode::<Envelope>(payload)?;
            match &mut rederiving {
                Some(rederiving) if offset >= rederiving.from => {
                    rederiving.apply(&mut state, offset, envelope)
                }
                _ => state.apply(&envelope),
            }
            Ok(())
        })?;
        let recovered = recovery.zip(rederiving).map(|(recovery, mut rederiving)| {
            rederiving.finish_run(&state);
            let messages: Vec<Message> = rederiving
                .messages
                .into_iter()
                .filter(|message| !recovery.delivered.contains(&message.id))
                .collect();
            tracing::info!(
                partition,
                republished = messages.len(),
                "exchange messages to publish again"
            );
            (recovery.checkpoint, messages)
        });
        tracing::info!(
            partition,
            snapshot = start,
            end,
            tasks = state.tasks.len(),
            "replayed"
        );
        Ok(TaskShard {
            partition,
            context,
            state,
            indexes: Indexes::default(),
            barrier: None,
            next_offset: end,
            events_since_snapshot: end - start,
            last_snapshot: None,
            timers: BinaryHeap::new(),
            blob_expiries: BinaryHeap::new(),
            outbox: None,
            recovered,
            exchange_progress: None,
        })
    }

    fn task(&self, task_id: Slugid) -> Option<&Task> {
        self.state.task(task_id)
    }

    fn group(&self, task_group_id: Slugid) -> Option<&TaskGroup> {
        self.state.group(task_group_id)
    }

    /// Re-derives timers, pending hints, dependency registrations, indexes and the worker
    /// directory from the state.
    fn announce_all(&mut self) {
        let now = Timestamp::now();
        for (key, worker) in &self.state.workers {
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
        let task_ids: Vec<Slugid> = self.state.tasks.values().map(|task| task.task_id).collect();
        for task_id in task_ids {
            self.announce(task_id, true);
        }
        let mut census: HashMap<Slugid, CensusEntry> = HashMap::new();
        for task in self.state.tasks.values() {
            let entry = census.entry(task.definition.task_group_id).or_default();
            match resolution(task) {
                None => entry.unresolved += 1,
                Some(at) => entry.latest_resolution = entry.latest_resolution.max(Some(at)),
            }
        }
        for group in self.state.groups.values() {
            census.entry(group.task_group_id).or_default().recorded = group.resolved;
            self.timers.push(Reverse((
                group.expires,
                group.task_group_id,
                Timer::GroupExpiry,
            )));
        }
        self.context.groups.do_send(Census(census));
    }

    /// Tells the timers, the dispatcher and the resolver what the task's state now means.
    fn announce(&mut self, task_id: Slugid, defined_now: bool) {
        let Some(task) = self.state.task(task_id) else {
            return;
        };
        if defined_now {
            self.indexes.defined(task);
        }
        self.indexes.changed(task);
        let queue = task.definition.task_queue_id.clone();
        let resolved = task.runs.last().is_some_and(|run| run.state.is_resolved());
        let deadline = task.definition.deadline;
        let mut timers = Vec::new();
        if defined_now {
            timers.push((task.definition.expires, Timer::Expiry));
            // Found in a replay: its artifacts' blobs expire too (new ones are added on commit).
            for ((run_id, name), artifact) in &task.artifacts {
                if let Storage::S3 { .. } = artifact.storage {
                    let blob = (artifact.expires, task_id, *run_id, name.clone());
                    self.blob_expiries.push(Reverse(blob));
                }
            }
        }
        if defined_now && !resolved {
            timers.push((deadline, Timer::Deadline));
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
                if let (RunState::Running, Some(taken_until)) = (run.state, run.taken_until) {
                    timers.push((
                        taken_until,
                        Timer::ClaimExpiry {
                            run_id,
                            taken_until,
                        },
                    ));
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
        for (at, timer) in timers {
            self.timers.push(Reverse((at, task_id, timer)));
        }
    }

    /// Decides and applies `command` (after `join`, the group decision of a task being
    /// created whose group lives in this partition too), hands the events to the log, and
    /// returns what the reply waits for.
    fn run(
        &mut self,
        task_id: Slugid,
        command: Command,
        join: Option<GroupCommand>,
    ) -> Reply<Task> {
        let now = Timestamp::now();
        let defines = matches!(command, Command::Define { .. });
        let expiring = match command {
            Command::Expire => self.state.tasks.get(&task_id).cloned(),
            _ => None,
        };
        let decided = self.decide_joined(task_id, command, join, now);
        let was_resolved = self.task(task_id).map(resolution);
        let committed = decided.and_then(|events| {
            let changed = !events.is_empty();
            self.commit(now, events)?;
            match expiring {
                Some(task) if self.task(task_id).is_none() => self.forget(&task),
                _ if changed => {
                    self.announce(task_id, defines);
                    self.tell_group_tracker(task_id, was_resolved);
                }
                _ => {}
            }
            Ok(())
        });
        if let Err(error) = committed {
            return futures::future::ready(Err(error)).boxed();
        }
        let task = self.task(task_id).cloned();
        self.reply(task, move || {
            ApiError::not_found(format!("task `{task_id}` not found"))
        })
    }

    /// Takes an expired task out of the indexes and the resolver, and deletes its blobs once
    /// its expiry is durable (a crash before that leaves the files, never a task without
    /// them).
    fn forget(&mut self, task: &Task) {
        self.indexes.removed(task);
        self.context
            .resolver
            .do_send(dependencies::Forget(task.task_id));
        let blobs = crate::blob_files::task_dir(&self.context.data_dir, task.task_id);
        let durable = self.when_durable(());
        actix::spawn(async move {
            if durable.await.is_err() {
                return;
            }
            let removed = tokio::task::spawn_blocking(move || {
                delete_quietly(&blobs, std::fs::remove_dir_all(&blobs))
            });
            let _ = removed.await;
        });
    }

    /// Forgets the group if it is past its expiry, or sets its timer again for the expiry a
    /// later task gave it.
    fn expire_group(&mut self, task_group_id: Slugid, now: Timestamp) {
        let expired = group::decide(
            task_group_id,
            self.group(task_group_id),
            GroupCommand::Expire { now },
        );
        match expired {
            Ok(events) if events.is_empty() => {
                if let Some(group) = self.group(task_group_id) {
                    let at = group.expires;
                    self.timers
                        .push(Reverse((at, task_group_id, Timer::GroupExpiry)));
                }
            }
            Ok(events) => {
                let key = task_group_id.to_string();
                let events = events.into_iter().map(|event| (key.clone(), event));
                // A failed append marks the log failed; there is no caller to tell.
                let _ = self.commit(now, events.collect());
            }
            Err(_) => {}
        }
    }

    /// Tells the group tracker when the task joined its group (`was`: it did not exist),
    /// resolved, or became unresolved again (a rerun).
    fn tell_group_tracker(&self, task_id: Slugid, was: Option<Option<Timestamp>>) {
        let Some(task) = self.task(task_id) else {
            return;
        };
        let now = resolution(task);
        if was.is_some_and(|was| was.is_some() == now.is_some()) {
            return;
        }
        self.context.groups.do_send(group_tracker::Changed {
            group: task.definition.task_group_id,
            resolved: now,
        });
    }

    /// The events of a task command, each with its key, preceded by the events of the group
    /// join `join` when it is given; either decision's error is the answer.
    fn decide_joined(
        &self,
        task_id: Slugid,
        command: Command,
        join: Option<GroupCommand>,
        now: Timestamp,
    ) -> Result<Vec<(String, Event)>, ApiError> {
        let mut events = Vec::new();
        if let (Some(join), Command::Define { definition, .. }) = (join, &command) {
            let group_id = definition.task_group_id;
            let group_events = group::decide(group_id, self.group(group_id), join)?;
            let key = group_id.to_string();
            events.extend(group_events.into_iter().map(|event| (key.clone(), event)));
        }
        let task_events = task::decide(
            task_id,
            self.task(task_id),
            command,
            now,
            &self.context.task_settings,
        )?;
        let key = task_id.to_string();
        events.extend(task_events.into_iter().map(|event| (key.clone(), event)));
        Ok(events)
    }

    /// Applies `events` to the state and hands them to the log as one append; the barrier
    /// then stands for them.
    fn commit(&mut self, now: Timestamp, events: Vec<(String, Event)>) -> Result<(), ApiError> {
        // After a failed append the state may hold events the log does not.
        if self.context.health.is_failed() {
            return Err(restart_required());
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::with_capacity(events.len());
        let mut applied = Vec::with_capacity(events.len());
        for (key, event) in events {
            let envelope = Envelope {
                key,
                at: now,
                event,
            };
            let payload = codec::encode(&envelope).map_err(internal)?;
            let before = exchanges::Before::capture(&self.state, &envelope);
            let new_group = match envelope.event {
                Event::TaskGroupJoined {
                    task_group_id,
                    expires,
                    ..
                } if self.state.group(task_group_id).is_none() => Some((task_group_id, expires)),
                _ => None,
            };
            self.state.apply(&envelope);
            if let Some((task_group_id, expires)) = new_group {
                self.timers
                    .push(Reverse((expires, task_group_id, Timer::GroupExpiry)));
            }
            if let Event::ArtifactCreated {
                run_id,
                name,
                artifact,
            } = &envelope.event
                && let Storage::S3 { .. } = artifact.storage
                && let Ok(task_id) = envelope.key.parse()
            {
                self.blob_expiries.push(Reverse((
                    artifact.expires,
                    task_id,
                    *run_id,
                    name.clone(),
                )));
            }
            let task = Metrics::task_key(&envelope).and_then(|task_id| self.state.task(task_id));
            METRICS.applied(&envelope, task);
            entries.push(Entry {
                key: envelope.key.clone(),
                payload,
            });
            applied.push((envelope, before));
        }
        // Messages show the state after the whole commit, as Taskcluster publishes them.
        let messages: Vec<Message> = applied
            .iter()
            .zip(self.next_offset..)
            .flat_map(|((envelope, before), offset)| {
                exchanges::derive(self.partition, offset, envelope, *before, &self.state)
            })
            .collect();
        let count = entries.len() as u64;
        let appending = self.context.log.append(self.partition, entries);
        let appended = Instant::now();
        let health = self.context.health.clone();
        // Appends to one partition become durable in order (see `EventLog::append`), so the
        // newest append stands for all before it.
        let barrier: Barrier = async move {
            let durable = appending.await;
            METRICS
                .log_append_seconds
                .observe(appended.elapsed().as_secs_f64());
            durable.map(drop).map_err(|error| {
                let reason = error.to_string();
                health.fail(&reason);
                reason
            })
        }
        .boxed()
        .shared();
        // Exchange topics checkpoint by log offset, so they hear of every commit.
        if (!messages.is_empty() || self.context.exchange_topics.is_some())
            && let Some(outbox) = &self.outbox
        {
            let durable = barrier.clone().map(|appended| appended.is_ok()).boxed();
            // The receiver lives as long as the shard's arbiter.
            let _ = outbox.send(Outgoing {
                durable,
                end: self.next_offset + count,
                messages,
            });
        }
        self.barrier = Some(barrier);
        self.next_offset += count;
        self.events_since_snapshot += count;
        Ok(())
    }

    /// `value` once everything appended so far is durable (so a reply never shows state a
    /// crash could lose); an error if an append failed.
    fn when_durable<T: Send + 'static>(&self, value: T) -> Reply<T> {
        let barrier = self.barrier.clone();
        let health = self.context.health.clone();
        async move {
            if let Some(barrier) = barrier {
                barrier.await.map_err(|_| restart_required())?;
            }
            // Another shard's failed append counts too: the process is about to restart.
            if health.is_failed() {
                return Err(restart_required());
            }
            Ok(value)
        }
        .boxed()
    }

    /// A reply of `value` once it is durable; `missing` is the error when there is no value.
    fn reply<T: Send + 'static>(
        &self,
        value: Option<T>,
        missing: impl FnOnce() -> ApiError + Send + 'static,
    ) -> Reply<T> {
        self.when_durable(value)
            .map(|durable| durable.and_then(|value| value.ok_or_else(missing)))
            .boxed()
    }

    fn maybe_snapshot(&mut self) {
        if self.events_since_snapshot < self.context.snapshot_every_events {
            return;
        }
        self.events_since_snapshot = 0;
        let (partition, offset) = (self.partition, self.next_offset);
        // A copy is cheap next to encoding (definitions are shared, not copied), so the shard
        // pays only for the copy and the encoding happens on a blocking thread.
        let copied = Instant::now();
        let state = self.state.clone();
        tracing::debug!(partition, offset, elapsed = ?copied.elapsed(), "copied the state for a snapshot");
        let barrier = self.barrier.clone();
        let data_dir = self.context.data_dir.clone();
        let mut exchange_progress = self.exchange_progress.clone();
        let writing = async move {
            // The snapshot stands for every event before `offset`: write it only once they
            // are all durable, and their exchange messages delivered (a restart re-derives
            // messages only from the snapshot on).
            if let Some(barrier) = barrier
                && barrier.await.is_err()
            {
                return;
            }
            if let Some(progress) = &mut exchange_progress
                && progress
                    .wait_for(|delivered| *delivered >= offset)
                    .await
                    .is_err()
            {
                return;
            }
            let written = tokio::task::spawn_blocking(move || {
                let encoded = snapshot::encode(partition, offset, &state)?;
                snapshot::write_encoded(&data_dir, partition, offset, &encoded)
            })
            .await;
            match written {
                Ok(Ok(path)) => {
                    tracing::info!(partition, offset, path = %path.display(), "wrote a snapshot")
                }
                Ok(Err(error)) => tracing::error!(partition, %error, "cannot write a snapshot"),
                Err(error) => tracing::error!(partition, %error, "snapshot writer failed"),
            }
        }
        .boxed()
        .shared();
        actix::spawn(writing.clone());
        self.last_snapshot = Some(writing);
    }

    fn fire_due_timers(&mut self, context: &mut Context<Self>) {
        let now = Timestamp::now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, task_id, timer))) = self.timers.pop() else {
                break;
            };
            let command = match timer {
                Timer::ClaimExpiry {
                    run_id,
                    taken_until,
                } => Command::ExpireClaim {
                    run_id,
                    taken_until,
                },
                Timer::Deadline => Command::ExceedDeadline,
                Timer::Expiry => Command::Expire,
                Timer::GroupExpiry => {
                    self.expire_group(task_id, now);
                    continue;
                }
            };
            let reply = self.run(task_id, command, None);
            // Timer commands have no caller; an error (a raced state) is expected and harmless.
            context.spawn(reply.map(|_| ()).into_actor(self));
        }
        self.delete_expired_blobs(now);
        self.maybe_snapshot();
    }

    /// Deletes the blob files of the `s3` artifacts expired at `now` (unless the artifact was
    /// made again with a later expiry since).
    fn delete_expired_blobs(&mut self, now: Timestamp) {
        let mut files = Vec::new();
        while let Some(Reverse((at, ..))) = self.blob_expiries.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, task_id, run_id, name))) = self.blob_expiries.pop() else {
                break;
            };
            let expired = self
                .task(task_id)
                .and_then(|task| task.artifacts.get(&(run_id, name.clone())))
                .is_some_and(|artifact| {
                    matches!(artifact.storage, Storage::S3 { .. }) && artifact.expires <= now
                });
            if expired {
                files.push(crate::blob_files::blob_file(
                    &self.context.data_dir,
                    task_id,
                    run_id,
                    &name,
                ));
            }
        }
        if files.is_empty() {
            return;
        }
        actix::spawn(async move {
            let deleting = tokio::task::spawn_blocking(move || {
                for file in files {
                    delete_quietly(&file, std::fs::remove_file(&file));
                }
            });
            let _ = deleting.await;
        });
    }
}

/// Logs a failed deletion of expired blobs (one already gone is no failure).
fn delete_quietly(path: &std::path::Path, deleted: std::io::Result<()>) {
    if let Err(error) = deleted
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not delete expired blobs");
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

/// Re-deriving exchange messages during a replay, from the checkpoint on. A commit's messages
/// show the state after the whole commit; a replay cannot see commits, so it takes each run of
/// consecutive events with the same key and instant for one (the events of one commit share
/// both).
struct Rederiving {
    partition: u32,
    from: Offset,
    run: Vec<(Offset, Envelope, exchanges::Before)>,
    messages: Vec<Message>,
}

impl Rederiving {
    fn apply(&mut self, state: &mut Entities, offset: Offset, envelope: Envelope) {
        if self
            .run
            .last()
            .is_some_and(|(_, last, _)| last.key != envelope.key || last.at != envelope.at)
        {
            self.finish_run(state);
        }
        let before = exchanges::Before::capture(state, &envelope);
        state.apply(&envelope);
        self.run.push((offset, envelope, before));
    }

    fn finish_run(&mut self, state: &Entities) {
        for (offset, envelope, before) in self.run.drain(..) {
            self.messages.extend(exchanges::derive(
                self.partition,
                offset,
                &envelope,
                before,
                state,
            ));
        }
    }
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InternalServerError, error.to_string())
}

fn restart_required() -> ApiError {
    internal("the event log failed; this server must restart")
}

impl Actor for TaskShard {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Context<Self>) {
        let (outbox, pending) = mpsc::unbounded_channel();
        let kafka = match (&self.context.exchange_topics, self.recovered.take()) {
            (Some(topics), Some((checkpoint, messages))) => {
                let (progress, watching) = watch::channel(checkpoint.offset);
                self.exchange_progress = Some(watching);
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
        actix::spawn(outbox::forward(
            self.partition,
            pending,
            self.context.bus.clone(),
            kafka,
        ));
        self.outbox = Some(outbox);
        self.announce_all();
        context.run_interval(TIMER_TICK, |shard, context| shard.fire_due_timers(context));
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
}

impl Handler<Execute> for TaskShard {
    type Result = MessageResult<Execute>;

    fn handle(&mut self, message: Execute, _: &mut Context<Self>) -> Self::Result {
        let reply = self.run(message.task_id, message.command, message.join);
        self.maybe_snapshot();
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
        let task = self.task(message.task_id).cloned();
        MessageResult(self.when_durable(task))
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
}

impl Handler<ExecuteGroup> for TaskShard {
    type Result = MessageResult<ExecuteGroup>;

    fn handle(&mut self, message: ExecuteGroup, _: &mut Context<Self>) -> Self::Result {
        let group_id = message.task_group_id;
        let key = group_id.to_string();
        let decided = group::decide(group_id, self.group(group_id), message.command);
        let committed = decided.and_then(|events| {
            let events = events.into_iter().map(|event| (key.clone(), event));
            self.commit(Timestamp::now(), events.collect())
        });
        if let Err(error) = committed {
            return MessageResult(futures::future::ready(Err(error)).boxed());
        }
        self.maybe_snapshot();
        let group = self.group(group_id).cloned();
        MessageResult(self.reply(group, move || group::group_not_found(group_id)))
    }
}

/// Records what the log keeps of a worker: a quarantine or a declared expiry.
#[derive(Message)]
#[rtype(result = "Reply<Worker>")]
pub struct RecordWorker {
    pub name: WorkerName,
    pub event: Event,
}

impl Handler<RecordWorker> for TaskShard {
    type Result = MessageResult<RecordWorker>;

    fn handle(&mut self, message: RecordWorker, _: &mut Context<Self>) -> Self::Result {
        let name = message.name;
        let key = worker_key(&name.task_queue_id, &name.worker_group, &name.worker_id);
        let now = Timestamp::now();
        if let Err(error) = self.commit(now, vec![(key.clone(), message.event)]) {
            return MessageResult(futures::future::ready(Err(error)).boxed());
        }
        self.maybe_snapshot();
        let worker = self.state.workers.get(&key).cloned();
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
        let group = self.group(message.task_group_id).cloned();
        MessageResult(self.when_durable(group))
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
        let tasks: Vec<(Position, Task)> = self
            .indexes
            .page(&message.listing, message.after, message.limit)
            .into_iter()
            .filter_map(|position| Some((position, self.task(position.1)?.clone())))
            .collect();
        Box::pin(self.when_durable(tasks).map(Result::unwrap_or_default))
    }
}

/// How many tasks of this shard a listing has.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count(pub Listing);

impl Handler<Count> for TaskShard {
    type Result = usize;

    fn handle(&mut self, Count(listing): Count, _: &mut Context<Self>) -> usize {
        self.indexes.count(&listing)
    }
}

/// Resolves once the snapshot write started last has finished (at once if there is none).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotWritten;

impl Handler<SnapshotWritten> for TaskShard {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: SnapshotWritten, _: &mut Context<Self>) -> Self::Result {
        let last = self.last_snapshot.clone();
        Box::pin(async move {
            if let Some(last) = last {
                last.await;
            }
        })
    }
}

/// How many tasks this shard holds.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct TaskCount;

impl Handler<TaskCount> for TaskShard {
    type Result = u64;

    fn handle(&mut self, _: TaskCount, _: &mut Context<Self>) -> u64 {
        self.state.tasks.len() as u64
    }
}
