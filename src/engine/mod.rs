//! The engine: the actors of DESIGN.md ("decide → append → apply → reply") and the pure
//! decisions they run. Each entity has a `decide` that turns a command into events or into the
//! Taskcluster error the caller gets; the fold in `model` says what the events mean.
//!
//! [`Engine`] is the cheap handle the API holds: it routes each command to the shard that owns
//! the task's partition, parks claimWork calls at the dispatcher, and checks dependencies at
//! creation.

pub mod dependencies;
pub mod dispatcher;
pub mod pending;
pub mod shard;
pub mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde_json::json;

use crate::api::{ApiError, ErrorCode};
use crate::log::EventLog;
use crate::model::{RunState, Slugid, Task, TaskDefinition};
use dependencies::DependencyResolver;
use dispatcher::{CountPending, Dispatcher, Restore, Take, TakeOrPark};
use shard::{Execute, Get, ShardContext, TaskShard, Waiting};
use task::{Command, ResolvedDependency};

/// The engine's settings (the `[queue]` section of the configuration).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub task: task::Settings,
    /// A shard writes a snapshot after this many events since its last one.
    pub snapshot_every_events: u64,
}

#[derive(Clone)]
pub struct Engine {
    shards: Arc<[Addr<TaskShard>]>,
    log: Arc<dyn EventLog>,
    dispatcher: Addr<Dispatcher>,
}

/// A claimWork call.
#[derive(Clone, Debug)]
pub struct ClaimWork {
    pub task_queue_id: String,
    pub worker_group: String,
    pub worker_id: String,
    pub tasks: u32,
}

/// A run claimed for a worker: `task.runs[run_id]` is running, with its `taken_until`.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub task: Task,
    pub run_id: u32,
}

impl Engine {
    /// Replays every partition and starts the actors; must run inside an actix System.
    pub async fn start(
        log: Arc<dyn EventLog>,
        data_dir: PathBuf,
        settings: EngineSettings,
    ) -> Result<Engine, crate::log::Error> {
        let dispatcher = Dispatcher::default().start();
        let resolver = DependencyResolver::default().start();
        let context = ShardContext {
            log: log.clone(),
            data_dir,
            task_settings: settings.task,
            snapshot_every_events: settings.snapshot_every_events.max(1),
            dispatcher: dispatcher.clone(),
            resolver: resolver.clone(),
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
        let engine = Engine {
            shards: shards.into(),
            log,
            dispatcher,
        };
        resolver.do_send(dependencies::Attach(engine.clone()));
        engine.recheck_waiting_dependents().await;
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
        let partition = self.log.partition_of(&task_id.to_string());
        &self.shards[partition as usize]
    }

    /// Runs one command on the task's shard; resolves once its events are durable, with the
    /// task's state after it.
    pub async fn execute(&self, task_id: Slugid, command: Command) -> Result<Task, ApiError> {
        self.shard(task_id)
            .send(Execute { task_id, command })
            .await
            .unwrap_or_else(|error| Err(mailbox_error(error)))
    }

    /// Sends a command whose outcome nobody waits for (timers, dependency resolution).
    pub fn notify(&self, task_id: Slugid, command: Command) {
        let shard = self.shard(task_id).clone();
        actix::spawn(async move {
            let _ = shard.send(Execute { task_id, command }).await;
        });
    }

    /// The task's state as of everything durable, or `None`.
    pub async fn task(&self, task_id: Slugid) -> Option<Task> {
        self.shard(task_id)
            .send(Get { task_id })
            .await
            .ok()
            .flatten()
    }

    /// createTask: every dependency must exist and outlive the new task's deadline (400
    /// otherwise, naming them); dependencies already resolved count at once, and ones that
    /// resolve while the task is being created are caught by a second look afterwards.
    pub async fn create_task(
        &self,
        task_id: Slugid,
        definition: TaskDefinition,
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
        let command = Command::Define {
            definition: Box::new(definition),
            resolved_dependencies,
        };
        let mut created = self.execute(task_id, command).await?;
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
                        .execute(task_id, Command::SatisfyDependency(resolved))
                        .await?;
                }
            }
        }
        Ok(created)
    }

    /// claimWork: claims up to `request.tasks` pending runs of the queue, waiting until
    /// `until` for work to arrive. Every claim is durable before it is returned.
    pub async fn claim_work(&self, request: ClaimWork, until: Instant) -> Vec<Claimed> {
        let wanted = request.tasks.clamp(1, 32) as usize;
        loop {
            let take = self.dispatcher.send(TakeOrPark {
                task_queue_id: request.task_queue_id.clone(),
                wanted,
            });
            let hints = match take.await {
                Ok(Take::Hints(hints)) => hints,
                Ok(Take::Parked(mut parked)) => {
                    match tokio::time::timeout_at(until.into(), &mut parked).await {
                        Ok(Ok(hints)) => hints,
                        Ok(Err(_)) => return Vec::new(),
                        Err(_elapsed) => {
                            // Hints may have been sent just as time ran out: close the channel
                            // and give back whatever made it in, so none is stranded.
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
                    });
                    async move { (hint.run_id, sent.await) }
                })
                .collect();
            let claimed: Vec<Claimed> = futures::future::join_all(attempts)
                .await
                .into_iter()
                .filter_map(|(run_id, outcome)| match outcome {
                    Ok(Ok(task)) => Some(Claimed { task, run_id }),
                    _ => None,
                })
                .collect();
            if !claimed.is_empty() || Instant::now() >= until {
                return claimed;
            }
        }
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
