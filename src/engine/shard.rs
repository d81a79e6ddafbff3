//! A task shard: the single writer of one log partition. It owns the folded state of every
//! task in the partition and runs each command as decide → apply → append → reply, replying
//! only once the log says the events are durable. Timers (claim expiry, deadlines) live here
//! too, derived from state.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::dependencies::{self, DependencyResolver};
use super::dispatcher::{Dispatcher, NotPending, Pending};
use super::pending::PendingRun;
use super::task::{self, Command, ResolvedDependency};
use crate::api::{ApiError, ErrorCode};
use crate::log::{Entry, EventLog, Offset, codec, snapshot};
use crate::model::{Envelope, RunState, Slugid, Task, Tasks, Timestamp};

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
}

type Barrier = Shared<BoxFuture<'static, Result<(), String>>>;

pub struct TaskShard {
    partition: u32,
    context: ShardContext,
    tasks: Tasks,
    /// Resolves when everything appended so far is durable; replies that change nothing wait
    /// on it too, so no reply ever shows state a crash could lose.
    barrier: Option<Barrier>,
    /// The offset the next appended record will get: this shard is its partition's only
    /// writer, so it can tell which offset a snapshot of its current state stands for.
    next_offset: Offset,
    events_since_snapshot: u64,
    timers: BinaryHeap<Reverse<(Timestamp, Slugid, Timer)>>,
    /// Set after a failed append: the state may hold events the log does not, so the shard
    /// refuses everything until the process restarts and replays.
    failed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    ClaimExpiry { run_id: u32, taken_until: Timestamp },
    Deadline,
}

/// How often due timers are checked.
const TIMER_TICK: Duration = Duration::from_millis(250);

impl TaskShard {
    /// Replays the partition (newest snapshot, then the log after it). Blocking.
    pub fn replay(partition: u32, context: ShardContext) -> Result<Self, crate::log::Error> {
        let (offset, mut tasks) =
            match snapshot::load_newest::<Tasks>(&context.data_dir, partition)? {
                Some((offset, tasks)) => (offset, tasks),
                None => (0, Tasks::default()),
            };
        let start = context
            .log
            .high_watermark(partition)
            .map(|end| offset.min(end))?;
        let end = context.log.read(partition, start, &mut |_, payload| {
            tasks.apply(&codec::decode::<Envelope>(payload)?);
            Ok(())
        })?;
        tracing::info!(
            partition,
            snapshot = offset,
            end,
            tasks = tasks.by_key.len(),
            "replayed"
        );
        Ok(TaskShard {
            partition,
            context,
            tasks,
            barrier: None,
            next_offset: end,
            events_since_snapshot: end - start,
            timers: BinaryHeap::new(),
            failed: false,
        })
    }

    fn task(&self, task_id: Slugid) -> Option<&Task> {
        self.tasks.by_key.get(&task_id.to_string())
    }

    /// Re-derives timers, pending hints and dependency registrations from the state.
    fn announce_all(&mut self) {
        let task_ids: Vec<Slugid> = self
            .tasks
            .by_key
            .values()
            .map(|task| task.task_id)
            .collect();
        for task_id in task_ids {
            self.announce(task_id, true);
        }
    }

    /// Tells the timers, the dispatcher and the resolver what the task's state now means.
    fn announce(&mut self, task_id: Slugid, defined_now: bool) {
        let Some(task) = self.task(task_id) else {
            return;
        };
        let queue = task.definition.task_queue_id.clone();
        let resolved = task.runs.last().is_some_and(|run| run.state.is_resolved());
        let deadline = task.definition.deadline;
        let mut timers = Vec::new();
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
                    task_queue_id: queue,
                    run: PendingRun { task_id, run_id },
                });
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

    /// Decides and applies `command`, hands its events to the log, and returns what the reply
    /// waits for.
    fn run(
        &mut self,
        task_id: Slugid,
        command: Command,
    ) -> BoxFuture<'static, Result<Task, ApiError>> {
        if self.failed {
            return futures::future::ready(Err(restart_required())).boxed();
        }
        let now = Timestamp::now();
        let defines = matches!(command, Command::Define { .. });
        let events = match task::decide(
            task_id,
            self.task(task_id),
            command,
            now,
            &self.context.task_settings,
        ) {
            Ok(events) => events,
            Err(error) => return futures::future::ready(Err(error)).boxed(),
        };
        if !events.is_empty() {
            let key = task_id.to_string();
            let mut entries = Vec::with_capacity(events.len());
            for event in events {
                let envelope = Envelope {
                    key: key.clone(),
                    at: now,
                    event,
                };
                let payload = match codec::encode(&envelope) {
                    Ok(payload) => payload,
                    Err(error) => return futures::future::ready(Err(internal(error))).boxed(),
                };
                self.tasks.apply(&envelope);
                entries.push(Entry {
                    key: key.clone(),
                    payload,
                });
            }
            let count = entries.len() as u64;
            let appending = self.context.log.append(self.partition, entries);
            // Appends to one partition become durable in order (see `EventLog::append`), so
            // the newest append stands for all before it.
            let barrier: Barrier =
                async move { appending.await.map(drop).map_err(|error| error.to_string()) }
                    .boxed()
                    .shared();
            self.barrier = Some(barrier);
            self.next_offset += count;
            self.events_since_snapshot += count;
            self.announce(task_id, defines);
        }
        let barrier = self.barrier.clone();
        let task = self.task(task_id).cloned();
        async move {
            if let Some(barrier) = barrier {
                barrier.await.map_err(|reason| {
                    tracing::error!(%reason, "an append failed; the process must restart");
                    restart_required()
                })?;
            }
            task.ok_or_else(|| ApiError::not_found(format!("task `{task_id}` not found")))
        }
        .boxed()
    }

    fn maybe_snapshot(&mut self) {
        if self.events_since_snapshot < self.context.snapshot_every_events {
            return;
        }
        self.events_since_snapshot = 0;
        let (partition, offset) = (self.partition, self.next_offset);
        let encoded = match snapshot::encode(partition, offset, &self.tasks) {
            Ok(encoded) => encoded,
            Err(error) => {
                tracing::error!(partition, %error, "cannot encode a snapshot");
                return;
            }
        };
        let barrier = self.barrier.clone();
        let data_dir = self.context.data_dir.clone();
        actix::spawn(async move {
            // The snapshot stands for every event before `offset`: write it only once they
            // are all durable.
            if let Some(barrier) = barrier
                && barrier.await.is_err()
            {
                return;
            }
            let written = tokio::task::spawn_blocking(move || {
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
        });
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
            };
            let reply = self.run(task_id, command);
            // Timer commands have no caller; an error (a raced state) is expected and harmless.
            context.spawn(reply.map(|_| ()).into_actor(self));
        }
        self.maybe_snapshot();
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
        self.announce_all();
        context.run_interval(TIMER_TICK, |shard, context| shard.fire_due_timers(context));
    }
}

/// Runs one command for one task of this shard.
#[derive(Message)]
#[rtype(result = "Result<Task, ApiError>")]
pub struct Execute {
    pub task_id: Slugid,
    pub command: Command,
}

impl Handler<Execute> for TaskShard {
    type Result = ResponseFuture<Result<Task, ApiError>>;

    fn handle(&mut self, message: Execute, _: &mut Context<Self>) -> Self::Result {
        let reply = self.run(message.task_id, message.command);
        self.maybe_snapshot();
        reply
    }
}

/// Reads one task, as of everything durable.
#[derive(Message)]
#[rtype(result = "Option<Task>")]
pub struct Get {
    pub task_id: Slugid,
}

impl Handler<Get> for TaskShard {
    type Result = ResponseFuture<Option<Task>>;

    fn handle(&mut self, message: Get, _: &mut Context<Self>) -> Self::Result {
        let task = self.task(message.task_id).cloned();
        let barrier = self.barrier.clone();
        Box::pin(async move {
            match barrier {
                Some(barrier) => barrier.await.ok().and(task),
                None => task,
            }
        })
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
        self.tasks
            .by_key
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
