//! The engine: the actors of DESIGN.md ("decide → append → apply → reply") and their
//! orchestration. The decisions they run are pure and live with their entities in `model`
//! (`model::task`, `model::group`, `model::worker`): each entity's `decide` turns a command into
//! events or into the Taskcluster error the caller gets, and its `apply` says what they mean.
//!
//! [`Engine`] is the cheap handle the API holds: it routes each command to the shard that owns
//! the task's partition, parks claimWork calls at the dispatcher, and checks dependencies at
//! creation.

pub mod clock;
pub mod dependencies;
pub mod dispatcher;
pub mod group_tracker;
pub mod health;
pub mod history;
pub mod index;
pub mod load;
pub mod outbox;
pub mod pending;
pub mod shard;
pub mod store;
pub mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde_json::json;

use crate::log::{EventLog, Offset};
use crate::metrics::METRICS;
use crate::model::group::GroupCommand;
use crate::model::task::{self, Command, ResolvedDependency};
use crate::model::{ApiError, ErrorCode};
use crate::model::{RunState, Slugid, Task, TaskDefinition, TaskGroup, Worker, WorkerCommand};
use crate::projections::bus::{Bus, BusOptions};
use crate::projections::kafka::ExchangeTopics;
use dependencies::DependencyResolver;
use dispatcher::{CountPending, Dispatcher, Restore, Take, TakeOrPark};
use group_tracker::GroupTracker;
use history::HistoryPage;
use index::{Listing, Position};
use shard::{
    Count, Execute, ExecuteGroup, Flushed, Get, GetGroup, List, RecordWorker, ShardContext,
    TaskShard, Waiting,
};
use workers::{WorkerDirectory, WorkerName};

/// The engine's settings (the `[queue]` section of the configuration).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub task: task::Settings,
    /// A shard writes its changes to its partition store after at most this many events
    /// (`[queue] snapshot_every_events`), and at least every second.
    pub flush_every_events: u64,
    /// The partition stores' block cache, over all partitions (`[store] cache_mb`).
    pub store_cache_bytes: u64,
    /// The exchange bus for listeners.
    pub bus: BusOptions,
    /// Where the engine reads the time.
    pub clock: clock::Clock,
    /// How long the log keeps what the stores no longer need (`[log] retention_hours`).
    pub log_retention: Option<std::time::Duration>,
}

#[derive(Clone)]
pub struct Engine {
    shards: Arc<[Addr<TaskShard>]>,
    log: Arc<dyn EventLog>,
    dispatcher: Addr<Dispatcher>,
    directory: Addr<WorkerDirectory>,
    bus: Arc<Bus>,
    health: health::LogHealth,
    clock: clock::Clock,
}

/// A claimWork call.
#[derive(Clone, Debug)]
pub struct ClaimWork {
    pub task_queue_id: String,
    pub worker_group: String,
    pub worker_id: String,
    pub tasks: u32,
    /// The clientId of the call, recorded as the cause of the claims.
    pub client_id: Option<String>,
}

/// A run claimed for a worker: `task.runs[run_id]` is running, with its `taken_until`.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub task: Task,
    pub run_id: u32,
}

impl Engine {
    /// Replays every partition and starts the actors; must run inside an actix System.
    /// `exchange_topics`: where exchange messages go besides this server's listeners (the
    /// Kafka backend's topics).
    pub async fn start(
        log: Arc<dyn EventLog>,
        data_dir: PathBuf,
        blobs: crate::blobs::Store,
        settings: EngineSettings,
        exchange_topics: Option<Arc<ExchangeTopics>>,
    ) -> Result<Engine, crate::log::Error> {
        let started = Instant::now();
        let dispatcher = Dispatcher::default().start();
        let resolver = DependencyResolver::default().start();
        let directory = WorkerDirectory::default().start();
        let bus = Arc::new(Bus::new(settings.bus));
        let groups = GroupTracker::default().start();
        let health = health::LogHealth::default();
        let snapshots = data_dir.join("snapshots");
        let context = ShardContext {
            health: health.clone(),
            bus: bus.clone(),
            exchange_topics,
            groups: groups.clone(),
            log: log.clone(),
            data_dir,
            blobs,
            task_settings: settings.task,
            flush_every_events: settings.flush_every_events.max(1),
            clock: settings.clock,
            log_retention: settings.log_retention,
            store_cache_bytes: settings.store_cache_bytes / u64::from(log.partitions().max(1)),
            dispatcher: dispatcher.clone(),
            resolver: resolver.clone(),
            directory: directory.clone(),
        };
        // Partitions replay in parallel, each on a blocking thread.
        let replays: Vec<_> = (0..log.partitions())
            .map(|partition| {
                let context = context.clone();
                tokio::task::spawn_blocking(move || TaskShard::replay(partition, context))
            })
            .collect();
        let mut shards = Vec::new();
        for replay in replays {
            let shard = replay
                .await
                .map_err(|error| crate::log::Error::Config(format!("replay failed: {error}")))??;
            shards.push(shard.start());
        }
        // Full-state snapshots of versions before the partition stores: every store now
        // stands on its own, so they are of no more use.
        if snapshots.exists() {
            match std::fs::remove_dir_all(&snapshots) {
                Ok(()) => tracing::info!(
                    path = %snapshots.display(),
                    "removed the full-state snapshots of an older version (the partition stores replace them)"
                ),
                Err(error) => {
                    tracing::warn!(path = %snapshots.display(), %error, "cannot remove old snapshots")
                }
            }
        }
        let engine = Engine {
            shards: shards.into(),
            log,
            dispatcher,
            directory,
            bus,
            health,
            clock: settings.clock,
        };
        let replayed = started.elapsed();
        METRICS.replay_seconds.set(replayed.as_secs_f64());
        resolver.do_send(dependencies::Attach(engine.clone()));
        engine.recheck_waiting_dependents().await;
        // Every shard has handled messages since it started, so every census is in the
        // tracker's mailbox ahead of this.
        groups.do_send(group_tracker::Attach(engine.clone()));
        tracing::info!(
            replayed = ?replayed,
            ready = ?started.elapsed(),
            "the engine is ready"
        );
        Ok(engine)
    }

    /// After a replay, shards announce resolutions and registrations in no particular order
    /// across partitions, so a dependency that resolved just before a crash, before its
    /// dependent heard of it, would go unnoticed: look at every waiting dependency once.
    async fn recheck_waiting_dependents(&self) {
        for shard in self.shards.iter() {
            let Ok(waiting) = shard.send(Waiting).await else {
                continue;
            };
            for (dependent, dependencies) in waiting {
                for dependency in dependencies {
                    if let Some(resolved) = self
                        .task(dependency)
                        .await
                        .as_ref()
                        .and_then(final_resolution)
                    {
                        self.notify(dependent, Command::SatisfyDependency(resolved));
                    }
                }
            }
        }
    }

    fn shard(&self, task_id: Slugid) -> &Addr<TaskShard> {
        self.shard_of(&task_id.to_string())
    }

    fn shard_of(&self, key: &str) -> &Addr<TaskShard> {
        &self.shards[self.log.partition_of(key) as usize]
    }

    /// Where exchange messages reach this server's listeners.
    pub fn bus(&self) -> &Arc<Bus> {
        &self.bus
    }

    /// Whether the event log still takes appends; the server stops once it does not.
    pub fn health(&self) -> &health::LogHealth {
        &self.health
    }

    /// The worker directory, for the API's worker and task-queue reads.
    pub fn directory(&self) -> &Addr<WorkerDirectory> {
        &self.directory
    }

    /// Runs one command on the task's shard; resolves once its events are durable, with the
    /// task's state after it. `client_id`: who asked (the API call's clientId), recorded with
    /// the events; `None` for the queue's own commands.
    pub async fn execute(
        &self,
        task_id: Slugid,
        command: Command,
        client_id: Option<String>,
    ) -> Result<Task, ApiError> {
        self.shard(task_id)
            .send(Execute {
                task_id,
                command,
                join: None,
                client_id,
            })
            .await
            .map_err(mailbox_error)?
            .await
    }

    /// Sends a command of the queue's own whose outcome nobody waits for (timers, dependency
    /// resolution).
    pub fn notify(&self, task_id: Slugid, command: Command) {
        let shard = self.shard(task_id).clone();
        actix::spawn(async move {
            let _ = shard
                .send(Execute {
                    task_id,
                    command,
                    join: None,
                    client_id: None,
                })
                .await;
        });
    }

    /// The task's state as of everything durable, or `None`.
    pub async fn task(&self, task_id: Slugid) -> Option<Task> {
        self.shard(task_id)
            .send(Get { task_id })
            .await
            .ok()?
            .await
            .ok()
            .flatten()
    }

    /// createTask for `client_id`: every dependency must exist and outlive the new task's
    /// deadline (400 otherwise, naming them); dependencies already resolved count at once, and
    /// ones that resolve while the task is being created are caught by a second look
    /// afterwards (the queue's own doing).
    pub async fn create_task(
        &self,
        task_id: Slugid,
        definition: TaskDefinition,
        client_id: Option<String>,
    ) -> Result<Task, ApiError> {
        let mut missing = Vec::new();
        let mut expiring = Vec::new();
        let mut resolved_dependencies = Vec::new();
        for &dependency in &definition.dependencies {
            match self.task(dependency).await {
                None => missing.push(dependency.to_string()),
                Some(found) if found.definition.expires < definition.deadline => {
                    expiring.push(dependency.to_string())
                }
                Some(found) => resolved_dependencies.extend(final_resolution(&found)),
            }
        }
        if !missing.is_empty() || !expiring.is_empty() {
            let mut message = String::new();
            if !missing.is_empty() {
                message.push_str(&format!(
                    "`task.dependencies` references non-existing tasks: {}. ",
                    missing.join(", ")
                ));
            }
            if !expiring.is_empty() {
                message.push_str(&format!(
                    "`task.dependencies` references tasks that expire before the task's deadline: {}.",
                    expiring.join(", ")
                ));
            }
            return Err(ApiError::input(message.trim_end()).with_details(json!({
                "missingTaskDependencies": missing,
                "expiringTaskDependencies": expiring,
            })));
        }
        let dependencies = definition.dependencies.clone();
        let group_id = definition.task_group_id;
        let join = GroupCommand::Join {
            scheduler_id: definition.scheduler_id.clone(),
            task_expires: definition.expires,
        };
        let command = Command::Define {
            definition: Arc::new(definition),
            resolved_dependencies,
        };
        // The group must accept the task first (Taskcluster's `ensureTaskGroup`). When the
        // group lives in the task's partition (a group named after one of its tasks), both
        // decisions are one append.
        let join = if self.log.partition_of(&group_id.to_string())
            == self.log.partition_of(&task_id.to_string())
        {
            Some(join)
        } else {
            self.execute_group(group_id, join, client_id.clone())
                .await?;
            None
        };
        let mut created = self
            .shard(task_id)
            .send(Execute {
                task_id,
                command,
                join,
                client_id,
            })
            .await
            .map_err(mailbox_error)?
            .await?;
        // The second look: a dependency that resolved after the first look but before this
        // task registered with the resolver would otherwise go unnoticed.
        if created.runs.is_empty() {
            for dependency in dependencies {
                if created.satisfied_dependencies.contains(&dependency) {
                    continue;
                }
                if let Some(resolved) = self
                    .task(dependency)
                    .await
                    .as_ref()
                    .and_then(final_resolution)
                {
                    created = self
                        .execute(task_id, Command::SatisfyDependency(resolved), None)
                        .await?;
                }
            }
        }
        Ok(created)
    }

    /// claimWork: claims up to `request.tasks` pending runs of the queue, waiting until
    /// `until` for work to arrive. Every claim is durable before it is returned.
    pub async fn claim_work(&self, request: ClaimWork, until: Instant) -> Vec<Claimed> {
        self.claim_work_unless(request, until, std::future::pending())
            .await
    }

    /// [`Engine::claim_work`] for a caller that may go away: once `gone` resolves, a parked
    /// claim stops waiting, so no task is claimed for a caller that cannot receive it.
    pub async fn claim_work_unless(
        &self,
        request: ClaimWork,
        until: Instant,
        gone: impl std::future::Future<Output = ()>,
    ) -> Vec<Claimed> {
        let mut gone = std::pin::pin!(gone);
        let wanted = request.tasks.clamp(1, 32) as usize;
        let name = WorkerName {
            task_queue_id: request.task_queue_id.clone(),
            worker_group: request.worker_group.clone(),
            worker_id: request.worker_id.clone(),
        };
        // A quarantined worker is answered as if there were no work, after the full wait.
        if self.seen_quarantined(name).await {
            tokio::time::sleep_until(until.into()).await;
            return Vec::new();
        }
        loop {
            let take = self.dispatcher.send(TakeOrPark {
                task_queue_id: request.task_queue_id.clone(),
                wanted,
            });
            let hints = match take.await {
                Ok(Take::Hints(hints)) => hints,
                Ok(Take::Parked(mut parked)) => {
                    let received = tokio::select! {
                        received = &mut parked => Some(received),
                        () = tokio::time::sleep_until(until.into()) => None,
                        () = &mut gone => None,
                    };
                    match received {
                        Some(Ok(hints)) => hints,
                        Some(Err(_)) => return Vec::new(),
                        None => {
                            // Hints may have been sent just as the wait ended: close the
                            // channel and give back whatever made it in, so none is stranded.
                            parked.close();
                            if let Ok(hints) = parked.try_recv() {
                                self.dispatcher.do_send(Restore {
                                    task_queue_id: request.task_queue_id.clone(),
                                    hints,
                                });
                            }
                            return Vec::new();
                        }
                    }
                }
                Err(_) => return Vec::new(),
            };
            // Every claim is sent before any is awaited: a caller that goes away now cannot
            // strand a hint, since each one is already on its way to its shard.
            let attempts: Vec<_> = hints
                .into_iter()
                .map(|hint| {
                    let hint = hint.run;
                    let command = Command::Claim {
                        run_id: hint.run_id,
                        worker_group: request.worker_group.clone(),
                        worker_id: request.worker_id.clone(),
                    };
                    let sent = self.shard(hint.task_id).send(Execute {
                        task_id: hint.task_id,
                        command,
                        join: None,
                        client_id: request.client_id.clone(),
                    });
                    async move {
                        let outcome = match sent.await {
                            Ok(reply) => reply.await,
                            Err(error) => Err(mailbox_error(error)),
                        };
                        (hint.run_id, outcome)
                    }
                })
                .collect();
            let claimed: Vec<Claimed> = futures::future::join_all(attempts)
                .await
                .into_iter()
                .filter_map(|(run_id, outcome)| outcome.ok().map(|task| Claimed { task, run_id }))
                .collect();
            if !claimed.is_empty() || Instant::now() >= until {
                return claimed;
            }
        }
    }

    /// The deprecated claimTask: claims run `run_id` of `task` for `worker_group/worker_id`,
    /// durably, as asked by `client_id`. `None` when the worker is quarantined (Taskcluster
    /// then answers `{}`).
    pub async fn claim_task(
        &self,
        task: &Task,
        run_id: u32,
        worker_group: String,
        worker_id: String,
        client_id: Option<String>,
    ) -> Result<Option<Task>, ApiError> {
        let name = WorkerName {
            task_queue_id: task.definition.task_queue_id.clone(),
            worker_group: worker_group.clone(),
            worker_id: worker_id.clone(),
        };
        // Past its deadline the claim is refused to anyone, quarantined or not (Taskcluster
        // checks the deadline first); the claim command says so.
        let past_deadline = task.definition.deadline <= self.clock.now();
        if !past_deadline && self.seen_quarantined(name).await {
            return Ok(None);
        }
        let command = Command::Claim {
            run_id,
            worker_group,
            worker_id,
        };
        self.execute(task.task_id, command, client_id)
            .await
            .map(Some)
    }

    /// Notes that a worker asked for work now; whether it is quarantined.
    async fn seen_quarantined(&self, name: WorkerName) -> bool {
        let now = self.clock.now();
        self.directory.do_send(workers::Seen {
            name: name.clone(),
            at: now,
        });
        matches!(
            self.directory
                .send(workers::Quarantined { name, now })
                .await,
            Ok(true)
        )
    }

    /// Runs one command on a task group's shard, for `client_id`.
    pub async fn execute_group(
        &self,
        task_group_id: Slugid,
        command: GroupCommand,
        client_id: Option<String>,
    ) -> Result<TaskGroup, ApiError> {
        self.shard(task_group_id)
            .send(ExecuteGroup {
                task_group_id,
                command,
                client_id,
            })
            .await
            .map_err(mailbox_error)?
            .await
    }

    /// The task group as of everything durable, or `None`.
    pub async fn task_group(&self, task_group_id: Slugid) -> Option<TaskGroup> {
        self.shard(task_group_id)
            .send(GetGroup { task_group_id })
            .await
            .ok()?
            .await
            .ok()
            .flatten()
    }

    /// Up to `limit` records of the task's history after the log offset `after`, as of
    /// everything durable; `None` for a task that does not exist.
    pub async fn history(
        &self,
        task_id: Slugid,
        after: Option<Offset>,
        limit: usize,
    ) -> Result<Option<HistoryPage>, ApiError> {
        self.shard(task_id)
            .send(shard::History {
                task_id,
                after,
                limit,
            })
            .await
            .map_err(mailbox_error)?
            .await
    }

    /// Up to `limit` tasks of a listing after the position `after`, in order, gathered from
    /// every shard, each with its position; `true` when more follow.
    pub async fn list(
        &self,
        listing: Listing,
        after: Option<Position>,
        limit: usize,
    ) -> (Vec<(Position, Task)>, bool) {
        // One more than asked from each shard: all that follow may be in one shard.
        let parts = self.shards.iter().map(|shard| {
            shard.send(List {
                listing: listing.clone(),
                after,
                limit: limit + 1,
            })
        });
        let mut tasks: Vec<(Position, Task)> = futures::future::join_all(parts)
            .await
            .into_iter()
            .flat_map(Result::unwrap_or_default)
            .collect();
        tasks.sort_by_key(|(position, _)| *position);
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        (tasks, more)
    }

    /// How many tasks a listing has, over every shard.
    pub async fn count(&self, listing: Listing) -> u64 {
        let parts = self
            .shards
            .iter()
            .map(|shard| shard.send(Count(listing.clone())));
        futures::future::join_all(parts)
            .await
            .into_iter()
            .map(|count| count.unwrap_or(0) as u64)
            .sum()
    }

    /// Records a quarantine or a declared expiry in the worker's shard, for `client_id`.
    pub async fn record_worker(
        &self,
        name: WorkerName,
        command: WorkerCommand,
        client_id: Option<String>,
    ) -> Result<Worker, ApiError> {
        let key =
            crate::model::worker_key(&name.task_queue_id, &name.worker_group, &name.worker_id);
        self.shard_of(&key)
            .send(RecordWorker {
                name,
                command,
                client_id,
            })
            .await
            .map_err(mailbox_error)?
            .await
    }

    /// Everything in the partition stores and their memtables written out: for a clean stop,
    /// after which a start reads nothing back into memory.
    pub async fn seal(&self) {
        let waits = self.shards.iter().map(|shard| shard.send(shard::Seal));
        futures::future::join_all(waits).await;
    }

    /// Resolves once every change so far is in the partition stores.
    pub async fn flushed(&self) {
        let waits = self.shards.iter().map(|shard| shard.send(Flushed));
        futures::future::join_all(waits).await;
    }

    /// Tasks in the state of every shard.
    pub async fn task_count(&self) -> u64 {
        let parts = self.shards.iter().map(|shard| shard.send(shard::TaskCount));
        futures::future::join_all(parts)
            .await
            .into_iter()
            .map(|count| count.unwrap_or(0))
            .sum()
    }

    pub async fn pending_count(&self, task_queue_id: &str) -> u64 {
        self.dispatcher
            .send(CountPending {
                task_queue_id: task_queue_id.to_owned(),
            })
            .await
            .unwrap_or(0)
    }
}

/// How a task counts for its dependents, if it has reached a final resolution.
fn final_resolution(task: &Task) -> Option<ResolvedDependency> {
    let state = task.runs.last()?.state;
    (state != RunState::Pending && state != RunState::Running).then_some(ResolvedDependency {
        task_id: task.task_id,
        state,
    })
}

fn mailbox_error(error: MailboxError) -> ApiError {
    ApiError::new(
        ErrorCode::InternalServerError,
        format!("the engine is not running: {error}"),
    )
}
