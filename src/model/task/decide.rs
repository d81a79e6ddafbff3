//! The task entity's decisions: given the folded task (if it exists), one command and the
//! time, which events happen, or which Taskcluster error the caller gets.
//!
//! `decide` is pure and never reads the clock: the engine's `TaskShard` calls it with `now`,
//! wraps the events in envelopes whose `at` is that same `now`, applies them with
//! [`Task::apply`] and appends them to the log. Commands from users (HTTP) answer with errors;
//! commands from the engine's own background work (`ExpireClaim`, `ExceedDeadline`,
//! `SatisfyDependency`, `Expire`) are advisory and answer "nothing to do" when they no longer
//! fit the state.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::MAX_RUNS_PER_TASK;
use crate::model::{
    ApiError, Artifact, ErrorCode, Event, ExceptionReason, InputState, Json, Priority,
    ReasonCreated, ReasonResolved, Requires, Run, RunState, SessionEnd, Slugid, Task,
    TaskDefinition, Timestamp,
};

/// The knobs of the task decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a claim (or reclaim) holds a run before it expires (`TASK_CLAIM_TIMEOUT`).
    pub claim_timeout: Duration,
    /// How far in the future a new task's deadline may be (`MAX_TASK_DEADLINE_DAYS`).
    pub max_deadline: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            claim_timeout: Duration::from_secs(1200),
            max_deadline: super::DEFAULT_MAX_DEADLINE,
        }
    }
}

/// A dependency's final resolution, as the dependency resolver reports it to a dependent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedDependency {
    pub task_id: Slugid,
    /// The state of the dependency's last run; only resolved states can satisfy anything.
    pub state: RunState,
}

/// What can be asked of one task.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// `createTask`, with a definition normalized by [`TaskDefinition::from_request`] (the
    /// clock-dependent checks of `TaskDefinition::check_new` are repeated here, so a late
    /// repeat is the same 400 Taskcluster gives). `resolved_dependencies` are dependencies
    /// the caller found already resolved, so that creation and scheduling are one decision.
    /// That every dependency exists and outlives the deadline is the caller's check (§5).
    Define {
        definition: Arc<TaskDefinition>,
        resolved_dependencies: Vec<ResolvedDependency>,
    },
    /// `scheduleTask`: run 0 now, whatever the dependencies.
    Schedule,
    /// `rerunTask`.
    Rerun,
    /// `cancelTask`.
    Cancel,
    /// `claimWork` (through the dispatcher) or the deprecated `claimTask`.
    Claim {
        run_id: u32,
        worker_group: String,
        worker_id: String,
    },
    /// `reclaimTask`.
    Reclaim { run_id: u32 },
    /// `reportCompleted`.
    ReportCompleted { run_id: u32 },
    /// `reportFailed` (or `reportCompleted` with the legacy body `{success: false}`).
    ReportFailed { run_id: u32 },
    /// `reportException`; also what the engine sends for runs of a worker that went away.
    ReportException {
        run_id: u32,
        reason: ExceptionReason,
    },
    /// The claim timer: the claim that ends at `taken_until` has expired. Sent at or after
    /// `taken_until` by the clock that gives `now`; an early one changes nothing, so a timer
    /// that fired early must fire again.
    ExpireClaim { run_id: u32, taken_until: Timestamp },
    /// The deadline timer; like `ExpireClaim`, it changes nothing before the deadline.
    ExceedDeadline,
    /// The expiry timer: past its `expires`, the task is forgotten (Taskcluster's
    /// `expire-tasks`); like `ExpireClaim`, it changes nothing before then.
    Expire,
    /// The dependency resolver: a dependency of this task reached a final resolution.
    SatisfyDependency(ResolvedDependency),
    /// `changeTaskPriority`.
    ChangePriority { priority: Priority },
    /// `changeTaskGroupPriority`, for one task of the group: as `ChangePriority`, but what it
    /// records publishes no message of its own.
    ChangePriorityWithGroup { priority: Priority },
    /// `createArtifact`.
    CreateArtifact {
        run_id: u32,
        name: String,
        artifact: Box<Artifact>,
    },
    /// `createSession`: a shell into the running run `run_id` of a task that enabled
    /// `features.interactive`.
    OpenSession {
        run_id: u32,
        session_id: Slugid,
        client_id: String,
        command: Vec<String>,
        tty: bool,
    },
    /// A session ended (its relay ended, or `closeSession`); nothing if it already had.
    CloseSession {
        session_id: Slugid,
        end: SessionEnd,
        exit_status: Option<i32>,
    },
    /// The worker of the running run `run_id` asks a person for input, answerable for
    /// `timeout` (or until the deadline, which also bounds it). The same request again
    /// changes nothing, so that a worker may retry it.
    RequestInput {
        run_id: u32,
        request: String,
        reference: Option<Json>,
        timeout: Option<Duration>,
    },
    /// Someone answers the run's request for input, once, while it waits.
    AnswerInput {
        run_id: u32,
        response: Json,
        client_id: Option<String>,
    },
}

/// Decides `command` for the task `task_id`, whose folded state is `task` (`None` if it was
/// never defined). The events are to be applied in order, all stamped with `now`; an empty
/// list means the command succeeds without changing anything (an idempotent repeat).
pub fn decide(
    task_id: Slugid,
    task: Option<&Task>,
    command: Command,
    now: Timestamp,
    settings: &Settings,
) -> Result<Vec<Event>, ApiError> {
    let decision = Decision {
        task_id,
        now,
        settings,
    };
    match command {
        Command::Define {
            definition,
            resolved_dependencies,
        } => decision.define(task, definition, &resolved_dependencies),
        Command::Schedule => decision.schedule(task),
        Command::Rerun => decision.rerun(task),
        Command::Cancel => decision.cancel(task),
        Command::Claim {
            run_id,
            worker_group,
            worker_id,
        } => decision.claim(task, run_id, worker_group, worker_id),
        Command::Reclaim { run_id } => decision.reclaim(task, run_id),
        Command::ReportCompleted { run_id } => {
            decision.report_final(task, run_id, ReasonResolved::Completed)
        }
        Command::ReportFailed { run_id } => {
            decision.report_final(task, run_id, ReasonResolved::Failed)
        }
        Command::ReportException { run_id, reason } => {
            decision.report_exception(task, run_id, reason)
        }
        Command::ExpireClaim {
            run_id,
            taken_until,
        } => Ok(decision.expire_claim(task, run_id, taken_until)),
        Command::ExceedDeadline => Ok(decision.exceed_deadline(task)),
        Command::Expire => Ok(match task {
            Some(task) if now >= task.definition.expires => vec![Event::TaskExpired],
            _ => vec![],
        }),
        Command::SatisfyDependency(dependency) => Ok(task
            .map(|task| decision.satisfy(task, &[dependency]))
            .unwrap_or_default()),
        Command::ChangePriority { priority } => {
            decision.change_priority(task, priority, Event::PriorityChanged { priority })
        }
        Command::ChangePriorityWithGroup { priority } => {
            decision.change_priority(task, priority, Event::PriorityChangedWithGroup { priority })
        }
        Command::CreateArtifact {
            run_id,
            name,
            artifact,
        } => super::create_artifact::decide(task, run_id, name, *artifact, now),
        Command::OpenSession {
            run_id,
            session_id,
            client_id,
            command,
            tty,
        } => decision.open_session(task, run_id, session_id, client_id, command, tty),
        Command::CloseSession {
            session_id,
            end,
            exit_status,
        } => Ok(task
            .and_then(|task| task.session(session_id))
            .filter(|session| session.is_open())
            .map(|_| {
                vec![Event::SessionClosed {
                    session_id,
                    end,
                    exit_status,
                }]
            })
            .unwrap_or_default()),
        Command::RequestInput {
            run_id,
            request,
            reference,
            timeout,
        } => decision.request_input(task, run_id, request, reference, timeout),
        Command::AnswerInput {
            run_id,
            response,
            client_id,
        } => decision.answer_input(task, run_id, response, client_id),
    }
}

/// One decision's context, so the rules below read as Taskcluster's handlers do.
struct Decision<'a> {
    task_id: Slugid,
    now: Timestamp,
    settings: &'a Settings,
}

impl Decision<'_> {
    fn define(
        &self,
        task: Option<&Task>,
        definition: Arc<TaskDefinition>,
        resolved_dependencies: &[ResolvedDependency],
    ) -> Result<Vec<Event>, ApiError> {
        // Dates are checked before the taskId is looked at, as Taskcluster does (§3.2): a
        // repeat that comes too late is a 400, not a success.
        definition.check_new(self.now, self.settings.max_deadline)?;
        if let Some(existing) = task {
            if *existing.definition != *definition {
                return Err(ApiError::conflict(format!(
                    "taskId `{}` already used by another task.\n\
                     This could be the result of faulty idempotency!",
                    self.task_id
                ))
                .with_details(serde_json::json!({ "taskId": self.task_id })));
            }
            // The same task again: adopt it, and take what the caller learned about its
            // dependencies, which may have resolved since the first attempt.
            return Ok(self.satisfy(existing, resolved_dependencies));
        }
        let scheduling =
            self.satisfaction(&definition, &BTreeSet::new(), true, resolved_dependencies);
        let mut events = vec![Event::TaskDefined {
            task_id: self.task_id,
            definition,
        }];
        events.extend(scheduling);
        Ok(events)
    }

    fn satisfy(&self, task: &Task, resolved: &[ResolvedDependency]) -> Vec<Event> {
        self.satisfaction(
            &task.definition,
            &task.satisfied_dependencies,
            task.runs.is_empty(),
            resolved,
        )
    }

    /// Records the dependencies that `resolved` satisfies and, once every dependency is
    /// satisfied, schedules run 0 of a task that has none yet (a task with no dependencies is
    /// satisfied at once). Past the deadline nothing is scheduled: the deadline timer resolves
    /// the task instead.
    fn satisfaction(
        &self,
        definition: &TaskDefinition,
        already_satisfied: &BTreeSet<Slugid>,
        unscheduled: bool,
        resolved: &[ResolvedDependency],
    ) -> Vec<Event> {
        let satisfying: BTreeSet<Slugid> = resolved
            .iter()
            .filter(|dependency| match definition.requires {
                Requires::AllCompleted => dependency.state == RunState::Completed,
                Requires::AllResolved => dependency.state.is_resolved(),
            })
            .map(|dependency| dependency.task_id)
            .collect();
        // In the definition's order, so that the events do not depend on the caller's; a
        // task may declare 10000 dependencies, hence the set.
        let mut events: Vec<Event> = if satisfying.is_empty() {
            vec![]
        } else {
            definition
                .dependencies
                .iter()
                .filter(|dependency| {
                    satisfying.contains(dependency) && !already_satisfied.contains(dependency)
                })
                .map(|&dependency| Event::DependencySatisfied { dependency })
                .collect()
        };
        // Definitions have unique dependencies and only declared ones are ever recorded, so
        // counting is enough to know whether all of them are satisfied.
        let satisfied = already_satisfied.len() + events.len();
        let before_deadline = self.now < definition.deadline;
        if satisfied == definition.dependencies.len() && unscheduled && before_deadline {
            events.push(Event::RunPending {
                run_id: 0,
                reason: ReasonCreated::Scheduled,
            });
        }
        events
    }

    fn schedule(&self, task: Option<&Task>) -> Result<Vec<Event>, ApiError> {
        let task = self.found(
            task,
            format!(
                "taskId `{}` not found. Are you sure it exists?",
                self.task_id
            ),
        )?;
        if self.past_deadline(task) {
            return Err(self.deadline_conflict(task, "can't be scheduled past its deadline at"));
        }
        if !task.runs.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![Event::RunPending {
            run_id: 0,
            reason: ReasonCreated::Scheduled,
        }])
    }

    fn rerun(&self, task: Option<&Task>) -> Result<Vec<Event>, ApiError> {
        let task = self.found(
            task,
            format!(
                "`{}` does not correspond to a task that exists.\n\
                 Are you sure this task has been submitted before?",
                self.task_id
            ),
        )?;
        if self.past_deadline(task) {
            return Err(self.deadline_conflict(task, "can't be rescheduled past its deadline of"));
        }
        if task.runs.last().is_some_and(|run| !run.state.is_resolved()) {
            return Ok(vec![]);
        }
        let run_id = run_count(task);
        if run_id >= MAX_RUNS_PER_TASK {
            return Err(ApiError::conflict(format!(
                "Maximum number of runs reached ({MAX_RUNS_PER_TASK})."
            ))
            .with_details(serde_json::json!({ "max_runs_allowed": MAX_RUNS_PER_TASK })));
        }
        Ok(vec![Event::RunPending {
            run_id,
            reason: ReasonCreated::Rerun,
        }])
    }

    fn cancel(&self, task: Option<&Task>) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        if self.past_deadline(task) {
            return Err(self.deadline_conflict(task, "can't be canceled past its deadline of"));
        }
        Ok(resolve_unresolved(task, ReasonResolved::Canceled))
    }

    fn claim(
        &self,
        task: Option<&Task>,
        run_id: u32,
        worker_group: String,
        worker_id: String,
    ) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        if self.past_deadline(task) {
            return Err(self.deadline_conflict(task, "can't be claimed past its deadline of"));
        }
        let run = self.run(task, run_id)?;
        if !is_latest(task, run_id) || run.state != RunState::Pending {
            return Err(ApiError::conflict(format!(
                "Run {run_id} was already claimed by another worker."
            ))
            .with_details(serde_json::json!({ "runId": run_id })));
        }
        Ok(vec![Event::RunClaimed {
            run_id,
            worker_group,
            worker_id,
            taken_until: self.claim_expiry(),
        }])
    }

    fn reclaim(&self, task: Option<&Task>, run_id: u32) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        let run = self.run(task, run_id)?;
        if self.past_deadline(task) {
            return Err(self.deadline_conflict(task, "can't be reclaimed past its deadline of"));
        }
        if !is_latest(task, run_id) || run.state != RunState::Running {
            return Err(self.resolved_or_not_running(run_id));
        }
        Ok(vec![Event::RunReclaimed {
            run_id,
            taken_until: self.claim_expiry(),
        }])
    }

    /// `reportCompleted` / `reportFailed`: only a running run can be resolved, but a repeat on
    /// a run already in the target state succeeds while that run is still the latest.
    fn report_final(
        &self,
        task: Option<&Task>,
        run_id: u32,
        reason: ReasonResolved,
    ) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        let run = self.run(task, run_id)?;
        let target = reason.final_state();
        if run.state != RunState::Running && run.state != target {
            let target_name = if target == RunState::Completed {
                "completed"
            } else {
                "failed"
            };
            return Err(ApiError::conflict(format!(
                "Run {run_id} of task `{}` is not running or {target_name}.",
                self.task_id
            ))
            .with_details(serde_json::json!({
                "taskId": self.task_id, "runId": run_id, "targetState": target_name,
            })));
        }
        if !is_latest(task, run_id) {
            return Err(self.resolved_or_not_running(run_id));
        }
        if run.state == target {
            return Ok(vec![]);
        }
        Ok(vec![Event::RunResolved { run_id, reason }])
    }

    /// `reportException`: resolves the running run, retrying `worker-shutdown` and
    /// `intermittent-task` while retries are left. A repeat with the same reason succeeds
    /// while the run is the latest or followed only by its retry.
    fn report_exception(
        &self,
        task: Option<&Task>,
        run_id: u32,
        reason: ExceptionReason,
    ) -> Result<Vec<Event>, ApiError> {
        let task = self.found(
            task,
            format!("Task `{}` not found. Are you sure it exists?", self.task_id),
        )?;
        let run = self.run(task, run_id)?;
        let resolved = ReasonResolved::from(reason);
        if run.state == RunState::Running && is_latest(task, run_id) {
            let mut events = vec![Event::RunResolved {
                run_id,
                reason: resolved,
            }];
            events.extend(self.retry(task, run_id, reason.retry()));
            return Ok(events);
        }
        let repeat = run.state == RunState::Exception
            && run.reason_resolved == Some(resolved)
            && run_count(task) <= run_id + 2;
        if repeat {
            return Ok(vec![]);
        }
        Err(self.resolved_or_not_running(run_id))
    }

    /// The claim timer. Nothing happens unless the run is still the latest, still running and
    /// still held by exactly the claim that expired (a reclaim moves `takenUntil`), and the
    /// deadline has not come: a run past its deadline is the deadline timer's to resolve.
    fn expire_claim(&self, task: Option<&Task>, run_id: u32, taken_until: Timestamp) -> Vec<Event> {
        let Some(task) = task else {
            return vec![];
        };
        let Some(run) = task.runs.get(run_id as usize) else {
            return vec![];
        };
        let expired = is_latest(task, run_id)
            && run.state == RunState::Running
            && run.taken_until == Some(taken_until)
            && self.now >= taken_until
            && self.now < task.definition.deadline;
        if !expired {
            return vec![];
        }
        let mut events = vec![Event::RunResolved {
            run_id,
            reason: ReasonResolved::ClaimExpired,
        }];
        events.extend(self.retry(task, run_id, Some(ReasonCreated::Retry)));
        events
    }

    /// The deadline timer: whatever is unresolved becomes `exception/deadline-exceeded`.
    fn exceed_deadline(&self, task: Option<&Task>) -> Vec<Event> {
        match task {
            Some(task) if self.now >= task.definition.deadline => {
                resolve_unresolved(task, ReasonResolved::DeadlineExceeded)
            }
            _ => vec![],
        }
    }

    /// Records `change` (which sets `priority`) unless the task already has that priority.
    fn change_priority(
        &self,
        task: Option<&Task>,
        priority: Priority,
        change: Event,
    ) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        if self.past_deadline(task) {
            return Err(self
                .deadline_conflict(task, "can't have its priority changed past its deadline of"));
        }
        if task.runs.last().is_some_and(|run| run.state.is_resolved()) {
            return Err(ApiError::conflict(format!(
                "Task `{}` is resolved; only unresolved tasks can change priority.",
                self.task_id
            ))
            .with_details(serde_json::json!({ "taskId": self.task_id })));
        }
        if task.priority == priority {
            return Ok(vec![]);
        }
        Ok(vec![change])
    }

    fn open_session(
        &self,
        task: Option<&Task>,
        run_id: u32,
        session_id: Slugid,
        client_id: String,
        command: Vec<String>,
        tty: bool,
    ) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        let run = self.run(task, run_id)?;
        if !task.definition.interactive() {
            return Err(ApiError::new(
                ErrorCode::InputError,
                format!(
                    "Task `{}` did not enable `features.interactive`; its runs have no sessions.",
                    self.task_id
                ),
            )
            .with_details(serde_json::json!({ "taskId": self.task_id })));
        }
        if run.state != RunState::Running {
            return Err(self.resolved_or_not_running(run_id));
        }
        Ok(vec![Event::SessionOpened {
            run_id,
            session_id,
            client_id,
            command,
            tty,
        }])
    }

    fn request_input(
        &self,
        task: Option<&Task>,
        run_id: u32,
        request: String,
        reference: Option<Json>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        let run = self.run(task, run_id)?;
        if let Some(asked) = task.input(run_id) {
            if asked.request == request && asked.reference == reference {
                return Ok(vec![]);
            }
            return Err(ApiError::conflict(format!(
                "Run {run_id} of task `{}` already asked for input.",
                self.task_id
            ))
            .with_details(serde_json::json!({ "taskId": self.task_id, "runId": run_id })));
        }
        if !is_latest(task, run_id) || run.state != RunState::Running {
            return Err(self.resolved_or_not_running(run_id));
        }
        let deadline = task.definition.deadline;
        let expires = match timeout {
            Some(timeout) => {
                let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
                self.now.plus_millis(millis).min(deadline)
            }
            None => deadline,
        };
        Ok(vec![Event::InputRequested {
            run_id,
            request,
            reference,
            expires,
        }])
    }

    fn answer_input(
        &self,
        task: Option<&Task>,
        run_id: u32,
        response: Json,
        client_id: Option<String>,
    ) -> Result<Vec<Event>, ApiError> {
        let task = self.found(task, self.not_created())?;
        let run = self.run(task, run_id)?;
        let input = task
            .input(run_id)
            .ok_or_else(|| no_input(self.task_id, run_id))?;
        let details = serde_json::json!({ "taskId": self.task_id, "runId": run_id });
        let refused = |why: &str| {
            ApiError::conflict(format!(
                "The input request of run {run_id} of task `{}` {why}.",
                self.task_id
            ))
            .with_details(details.clone())
        };
        let running = is_latest(task, run_id) && run.state == RunState::Running;
        match input.state(running, self.now) {
            InputState::Waiting => Ok(vec![Event::InputAnswered {
                run_id,
                response,
                client_id,
            }]),
            InputState::Answered => Err(refused("was already answered")),
            InputState::Expired if running => Err(refused("expired")),
            InputState::Expired => Err(self.resolved_or_not_running(run_id)),
        }
    }

    /// The new pending run after a retrying resolution of `run_id`, if one is due: retries
    /// left, room under the run cap, and time before the deadline (a run nobody may claim
    /// any more would only wait for the deadline timer).
    fn retry(&self, task: &Task, run_id: u32, reason: Option<ReasonCreated>) -> Option<Event> {
        let reason = reason?;
        let next = run_id + 1;
        let due = task.retries_left > 0
            && next < MAX_RUNS_PER_TASK
            && self.now < task.definition.deadline;
        due.then_some(Event::RunPending {
            run_id: next,
            reason,
        })
    }

    fn found<'t>(&self, task: Option<&'t Task>, message: String) -> Result<&'t Task, ApiError> {
        task.ok_or_else(|| {
            ApiError::not_found(message).with_details(serde_json::json!({ "taskId": self.task_id }))
        })
    }

    fn run<'t>(&self, task: &'t Task, run_id: u32) -> Result<&'t Run, ApiError> {
        task.runs.get(run_id as usize).ok_or_else(|| {
            ApiError::not_found(format!(
                "Run {run_id} not found on task `{}`.",
                self.task_id
            ))
            .with_details(serde_json::json!({ "taskId": self.task_id, "runId": run_id }))
        })
    }

    fn not_created(&self) -> String {
        format!(
            "Task `{}` not found. Are you sure it was created?",
            self.task_id
        )
    }

    fn resolved_or_not_running(&self, run_id: u32) -> ApiError {
        ApiError::conflict(format!(
            "Run {run_id} on task `{}` is resolved or not running.",
            self.task_id
        ))
        .with_details(serde_json::json!({ "taskId": self.task_id, "runId": run_id }))
    }

    fn deadline_conflict(&self, task: &Task, what: &str) -> ApiError {
        let deadline = task.definition.deadline;
        ApiError::conflict(format!("Task `{}` {what} {deadline}.", self.task_id))
            .with_details(serde_json::json!({ "taskId": self.task_id, "deadline": deadline }))
    }

    /// From its deadline on, a task only ever gets resolved: nothing may schedule, rerun,
    /// claim, reclaim, cancel or reprioritize it. Taskcluster refuses claims at the deadline
    /// but the others only after it; refusing all of them at the deadline means that once the
    /// deadline timer has resolved a task, nothing can make it unresolved again.
    fn past_deadline(&self, task: &Task) -> bool {
        task.definition.deadline <= self.now
    }

    fn claim_expiry(&self) -> Timestamp {
        let millis = i64::try_from(self.settings.claim_timeout.as_millis()).unwrap_or(i64::MAX);
        self.now.plus_millis(millis)
    }
}

/// The 404 of a run that asked for no input (an answer to it, or reading its request).
pub fn no_input(task_id: Slugid, run_id: u32) -> ApiError {
    ApiError::not_found(format!(
        "Run {run_id} of task `{task_id}` asked for no input."
    ))
    .with_details(serde_json::json!({ "taskId": task_id, "runId": run_id }))
}

/// Resolves the latest run if it is unresolved, or records a resolved run on a task that has
/// none; a resolved task is left alone (cancel and deadline share this).
fn resolve_unresolved(task: &Task, reason: ReasonResolved) -> Vec<Event> {
    match task.runs.last() {
        None => vec![Event::ExceptionRunAdded { run_id: 0, reason }],
        Some(run) if !run.state.is_resolved() => vec![Event::RunResolved {
            run_id: run_count(task) - 1,
            reason,
        }],
        Some(_) => vec![],
    }
}

fn run_count(task: &Task) -> u32 {
    // At most MAX_RUNS_PER_TASK runs ever exist, so this never truncates.
    task.runs.len() as u32
}

fn is_latest(task: &Task, run_id: u32) -> bool {
    run_id + 1 == run_count(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::codec;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{Entities, Envelope, ErrorCode, TaskState, TaskStatus};
    use proptest::prelude::*;

    const MINUTE: i64 = 60_000;
    /// `sample_definition`'s deadline, in minutes after its `created`.
    const DEADLINE: i64 = 24 * 60;

    fn created() -> Timestamp {
        sample_definition(Slugid::nice()).created
    }

    fn minutes(minutes: i64) -> Timestamp {
        created().plus_millis(minutes * MINUTE)
    }

    fn definition() -> TaskDefinition {
        sample_definition("fN1SbArXTPSVFNUvaOlinQ".parse().unwrap())
    }

    fn with_dependencies(dependencies: &[Slugid], requires: Requires) -> TaskDefinition {
        TaskDefinition {
            dependencies: dependencies.to_vec(),
            requires,
            ..definition()
        }
    }

    fn define(definition: TaskDefinition) -> Command {
        Command::Define {
            definition: Arc::new(definition),
            resolved_dependencies: vec![],
        }
    }

    fn claim(run_id: u32) -> Command {
        Command::Claim {
            run_id,
            worker_group: "wg".into(),
            worker_id: "w1".into(),
        }
    }

    fn exception(run_id: u32, reason: ExceptionReason) -> Command {
        Command::ReportException { run_id, reason }
    }

    fn satisfy(task_id: Slugid, state: RunState) -> Command {
        Command::SatisfyDependency(ResolvedDependency { task_id, state })
    }

    fn pending(run_id: u32, reason: ReasonCreated) -> Event {
        Event::RunPending { run_id, reason }
    }

    fn resolved(run_id: u32, reason: ReasonResolved) -> Event {
        Event::RunResolved { run_id, reason }
    }

    /// One task driven the way its shard drives it: decide, stamp with `now`, apply, log.
    struct Harness {
        task_id: Slugid,
        settings: Settings,
        tasks: Entities,
        log: Vec<Envelope>,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                task_id: Slugid::nice(),
                settings: Settings::default(),
                tasks: Entities::default(),
                log: Vec::new(),
            }
        }

        /// A task defined at minute 0.
        fn defined(definition: TaskDefinition) -> Self {
            let mut harness = Harness::new();
            harness.at(0, define(definition)).unwrap();
            harness
        }

        fn task(&self) -> Option<&Task> {
            self.tasks.task(self.task_id)
        }

        fn status(&self) -> TaskStatus {
            self.task().unwrap().status()
        }

        fn send(&mut self, command: Command, now: Timestamp) -> Result<Vec<Event>, ApiError> {
            let events = decide(self.task_id, self.task(), command, now, &self.settings)?;
            for event in &events {
                let before = self.task().cloned();
                let envelope = Envelope {
                    key: self.task_id.to_string(),
                    at: now,
                    client_id: None,
                    event: event.clone(),
                };
                self.tasks.apply(&envelope);
                // decide and the fold agree: no event is emitted that the fold would ignore.
                assert_ne!(before.as_ref(), self.task(), "{event:?} changed nothing");
                self.log.push(envelope);
            }
            Ok(events)
        }

        fn at(&mut self, minute: i64, command: Command) -> Result<Vec<Event>, ApiError> {
            self.send(command, minutes(minute))
        }

        /// Claims the latest run at `minute` and resolves it with `command`.
        fn claim_and(&mut self, minute: i64, command: Command) {
            let run_id = self.task().unwrap().runs.len() as u32 - 1;
            self.at(minute, claim(run_id)).unwrap();
            self.at(minute, command).unwrap();
        }
    }

    fn assert_error(result: Result<Vec<Event>, ApiError>, code: ErrorCode, message: &str) {
        let error = result.unwrap_err();
        assert_eq!(error.code, code, "{error}");
        assert!(
            error.message.contains(message),
            "`{}` does not contain `{message}`",
            error.message
        );
    }

    #[test]
    fn define_creates_a_pending_task_and_repeats_are_idempotent() {
        let mut harness = Harness::new();
        let events = harness.at(0, define(definition())).unwrap();
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[0], Event::TaskDefined { task_id, .. } if *task_id == harness.task_id)
        );
        assert_eq!(events[1], pending(0, ReasonCreated::Scheduled));
        assert_eq!(harness.status().state, TaskState::Pending);

        assert_eq!(harness.at(1, define(definition())).unwrap(), vec![]);
        let other = TaskDefinition {
            priority: Priority::High,
            ..definition()
        };
        assert_error(
            harness.at(1, define(other)),
            ErrorCode::RequestConflict,
            &format!("taskId `{}` already used by another task.", harness.task_id),
        );
        // The dates are checked first, as Taskcluster does: a late repeat is a 400.
        assert_error(
            harness.at(16, define(definition())),
            ErrorCode::InputError,
            "`created` cannot be in the past",
        );
        assert_eq!(harness.log.len(), 2);
    }

    #[test]
    fn dependencies_hold_a_task_until_its_requirement_is_met() {
        let (a, b, stranger) = (Slugid::nice(), Slugid::nice(), Slugid::nice());
        let mut harness = Harness::new();
        let events = harness
            .at(
                0,
                Command::Define {
                    definition: Arc::new(with_dependencies(&[a, b], Requires::AllCompleted)),
                    resolved_dependencies: vec![ResolvedDependency {
                        task_id: a,
                        state: RunState::Completed,
                    }],
                },
            )
            .unwrap();
        assert_eq!(events[1..], [Event::DependencySatisfied { dependency: a }]);
        assert_eq!(harness.status().state, TaskState::Unscheduled);

        for ignored in [
            satisfy(b, RunState::Failed),
            satisfy(b, RunState::Exception),
            satisfy(b, RunState::Running),
            satisfy(stranger, RunState::Completed),
            satisfy(a, RunState::Completed),
        ] {
            assert_eq!(harness.at(1, ignored).unwrap(), vec![]);
        }
        assert_eq!(
            harness.at(2, satisfy(b, RunState::Completed)).unwrap(),
            vec![
                Event::DependencySatisfied { dependency: b },
                pending(0, ReasonCreated::Scheduled),
            ]
        );
        assert_eq!(
            harness.at(3, satisfy(b, RunState::Completed)).unwrap(),
            vec![]
        );
        assert_eq!(harness.status().state, TaskState::Pending);
    }

    #[test]
    fn all_resolved_counts_failures_but_not_past_the_deadline() {
        let a = Slugid::nice();
        let mut harness = Harness::defined(with_dependencies(&[a], Requires::AllResolved));
        assert_eq!(harness.status().state, TaskState::Unscheduled);
        assert_eq!(
            harness
                .at(DEADLINE + 1, satisfy(a, RunState::Exception))
                .unwrap(),
            vec![Event::DependencySatisfied { dependency: a }]
        );
        assert_eq!(harness.status().state, TaskState::Unscheduled);

        let mut harness = Harness::defined(with_dependencies(&[a], Requires::AllResolved));
        assert_eq!(
            harness.at(5, satisfy(a, RunState::Failed)).unwrap(),
            vec![
                Event::DependencySatisfied { dependency: a },
                pending(0, ReasonCreated::Scheduled),
            ]
        );
        // Unknown tasks are no one's business.
        let stranger = Harness::new();
        assert_eq!(
            decide(
                stranger.task_id,
                None,
                satisfy(a, RunState::Completed),
                minutes(0),
                &stranger.settings,
            )
            .unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_repeated_define_takes_dependencies_resolved_since() {
        let a = Slugid::nice();
        let mut harness = Harness::defined(with_dependencies(&[a], Requires::AllCompleted));
        let repeat = Command::Define {
            definition: Arc::new(with_dependencies(&[a], Requires::AllCompleted)),
            resolved_dependencies: vec![ResolvedDependency {
                task_id: a,
                state: RunState::Completed,
            }],
        };
        assert_eq!(
            harness.at(1, repeat).unwrap(),
            vec![
                Event::DependencySatisfied { dependency: a },
                pending(0, ReasonCreated::Scheduled),
            ]
        );
    }

    #[test]
    fn schedule_starts_an_unscheduled_task_once() {
        let mut harness = Harness::new();
        assert_error(
            harness.at(0, Command::Schedule),
            ErrorCode::ResourceNotFound,
            &format!(
                "taskId `{}` not found. Are you sure it exists?",
                harness.task_id
            ),
        );
        let dependency = Slugid::nice();
        let mut harness =
            Harness::defined(with_dependencies(&[dependency], Requires::AllCompleted));
        assert_eq!(
            harness.at(1, Command::Schedule).unwrap(),
            vec![pending(0, ReasonCreated::Scheduled)]
        );
        assert_eq!(harness.at(2, Command::Schedule).unwrap(), vec![]);
        harness.claim_and(3, Command::ReportCompleted { run_id: 0 });
        assert_eq!(harness.at(4, Command::Schedule).unwrap(), vec![]);
        assert_eq!(harness.status().state, TaskState::Completed);

        let mut late = Harness::defined(with_dependencies(&[dependency], Requires::AllCompleted));
        assert_eq!(late.at(DEADLINE - 1, Command::Schedule).unwrap().len(), 1);
        let mut late = Harness::defined(with_dependencies(&[dependency], Requires::AllCompleted));
        assert_error(
            late.at(DEADLINE, Command::Schedule),
            ErrorCode::RequestConflict,
            "can't be scheduled past its deadline at 2026-11-23T10:00:00.000Z.",
        );
    }

    #[test]
    fn rerun_adds_a_run_to_resolved_and_unscheduled_tasks() {
        let mut harness = Harness::new();
        assert_error(
            harness.at(0, Command::Rerun),
            ErrorCode::ResourceNotFound,
            "does not correspond to a task that exists.",
        );
        let mut harness = Harness::defined(definition());
        assert_eq!(harness.at(1, Command::Rerun).unwrap(), vec![]);
        harness.at(1, claim(0)).unwrap();
        assert_eq!(harness.at(2, Command::Rerun).unwrap(), vec![]);

        harness
            .at(3, exception(0, ExceptionReason::WorkerShutdown))
            .unwrap();
        harness.claim_and(4, Command::ReportFailed { run_id: 1 });
        assert_eq!(harness.status().retries_left, 4);
        assert_eq!(
            harness.at(5, Command::Rerun).unwrap(),
            vec![pending(2, ReasonCreated::Rerun)]
        );
        let status = harness.status();
        assert_eq!(status.state, TaskState::Pending);
        assert_eq!(status.retries_left, 5, "a rerun restores the retries");

        let mut unscheduled =
            Harness::defined(with_dependencies(&[Slugid::nice()], Requires::AllCompleted));
        assert_eq!(
            unscheduled.at(1, Command::Rerun).unwrap(),
            vec![pending(0, ReasonCreated::Rerun)]
        );

        harness.at(6, Command::Cancel).unwrap();
        assert_error(
            harness.at(DEADLINE + 1, Command::Rerun),
            ErrorCode::RequestConflict,
            "can't be rescheduled past its deadline of 2026-11-23T10:00:00.000Z.",
        );
    }

    #[test]
    fn rerun_stops_at_fifty_runs_and_retries_fit_under_the_cap() {
        let mut harness = Harness::defined(definition());
        for run_id in 0..MAX_RUNS_PER_TASK - 1 {
            harness.at(1, Command::Cancel).unwrap();
            assert_eq!(
                harness.at(1, Command::Rerun).unwrap(),
                vec![pending(run_id + 1, ReasonCreated::Rerun)]
            );
            let room = MAX_RUNS_PER_TASK - 2 - run_id;
            assert_eq!(harness.status().retries_left, room.min(5));
        }
        // Run 49 may not be retried: the cap holds for automatic retries too.
        harness.claim_and(2, exception(49, ExceptionReason::WorkerShutdown));
        assert_eq!(harness.status().runs.len(), 50);
        assert_eq!(harness.status().state, TaskState::Exception);
        assert_error(
            harness.at(3, Command::Rerun),
            ErrorCode::RequestConflict,
            "Maximum number of runs reached (50).",
        );
    }

    #[test]
    fn cancel_resolves_whatever_is_unresolved() {
        let mut harness = Harness::new();
        assert_error(
            harness.at(0, Command::Cancel),
            ErrorCode::ResourceNotFound,
            &format!(
                "Task `{}` not found. Are you sure it was created?",
                harness.task_id
            ),
        );

        let mut pending_task = Harness::defined(definition());
        assert_eq!(
            pending_task.at(1, Command::Cancel).unwrap(),
            vec![resolved(0, ReasonResolved::Canceled)]
        );
        assert_eq!(pending_task.at(2, Command::Cancel).unwrap(), vec![]);

        let mut running = Harness::defined(definition());
        running.at(1, claim(0)).unwrap();
        assert_eq!(
            running.at(2, Command::Cancel).unwrap(),
            vec![resolved(0, ReasonResolved::Canceled)]
        );
        assert_eq!(
            running.status().retries_left,
            5,
            "a cancel is never retried"
        );

        let mut unscheduled =
            Harness::defined(with_dependencies(&[Slugid::nice()], Requires::AllCompleted));
        assert_eq!(
            unscheduled.at(3, Command::Cancel).unwrap(),
            vec![Event::ExceptionRunAdded {
                run_id: 0,
                reason: ReasonResolved::Canceled,
            }]
        );
        let run = serde_json::to_value(&unscheduled.status().runs[0]).unwrap();
        assert_eq!(
            run,
            serde_json::json!({
                "runId": 0, "state": "exception", "reasonCreated": "exception",
                "reasonResolved": "canceled", "scheduled": "2026-11-22T10:03:00.000Z",
                "resolved": "2026-11-22T10:03:00.000Z",
            })
        );
        assert_eq!(unscheduled.at(4, Command::Schedule).unwrap(), vec![]);

        let mut late = Harness::defined(definition());
        assert_error(
            late.at(DEADLINE + 1, Command::Cancel),
            ErrorCode::RequestConflict,
            "can't be canceled past its deadline of",
        );
    }

    #[test]
    fn claim_takes_the_latest_pending_run_until_the_claim_timeout() {
        let mut harness = Harness::new();
        assert_error(
            harness.at(0, claim(0)),
            ErrorCode::ResourceNotFound,
            "not found. Are you sure it was created?",
        );
        let mut harness = Harness::defined(definition());
        assert_error(
            harness.at(1, claim(1)),
            ErrorCode::ResourceNotFound,
            &format!("Run 1 not found on task `{}`.", harness.task_id),
        );
        assert_eq!(
            harness.at(1, claim(0)).unwrap(),
            vec![Event::RunClaimed {
                run_id: 0,
                worker_group: "wg".into(),
                worker_id: "w1".into(),
                taken_until: minutes(21),
            }]
        );
        let run = &harness.status().runs[0];
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.started, Some(minutes(1)));
        assert_eq!(run.worker_id.as_deref(), Some("w1"));
        assert_error(
            harness.at(2, claim(0)),
            ErrorCode::RequestConflict,
            "Run 0 was already claimed by another worker.",
        );

        let mut late = Harness::defined(definition());
        assert_error(
            late.at(DEADLINE, claim(0)),
            ErrorCode::RequestConflict,
            "can't be claimed past its deadline of",
        );
    }

    #[test]
    fn reclaim_extends_only_the_running_latest_run() {
        let mut harness = Harness::defined(definition());
        assert_error(
            harness.at(1, Command::Reclaim { run_id: 0 }),
            ErrorCode::RequestConflict,
            &format!(
                "Run 0 on task `{}` is resolved or not running.",
                harness.task_id
            ),
        );
        assert_error(
            harness.at(1, Command::Reclaim { run_id: 3 }),
            ErrorCode::ResourceNotFound,
            "Run 3 not found",
        );
        harness.at(1, claim(0)).unwrap();
        assert_eq!(
            harness.at(10, Command::Reclaim { run_id: 0 }).unwrap(),
            vec![Event::RunReclaimed {
                run_id: 0,
                taken_until: minutes(30),
            }]
        );
        assert_eq!(harness.status().runs[0].taken_until, Some(minutes(30)));
        assert_error(
            harness.at(DEADLINE, Command::Reclaim { run_id: 0 }),
            ErrorCode::RequestConflict,
            "can't be reclaimed past its deadline of",
        );
        harness
            .at(11, exception(0, ExceptionReason::WorkerShutdown))
            .unwrap();
        harness.at(12, claim(1)).unwrap();
        assert_error(
            harness.at(13, Command::Reclaim { run_id: 0 }),
            ErrorCode::RequestConflict,
            "is resolved or not running.",
        );
    }

    #[test]
    fn completed_and_failed_resolve_running_runs_and_repeat_quietly() {
        let mut harness = Harness::defined(definition());
        assert_error(
            harness.at(1, Command::ReportCompleted { run_id: 0 }),
            ErrorCode::RequestConflict,
            &format!(
                "Run 0 of task `{}` is not running or completed.",
                harness.task_id
            ),
        );
        harness.at(1, claim(0)).unwrap();
        assert_eq!(
            harness
                .at(2, Command::ReportCompleted { run_id: 0 })
                .unwrap(),
            vec![resolved(0, ReasonResolved::Completed)]
        );
        assert_eq!(
            harness
                .at(3, Command::ReportCompleted { run_id: 0 })
                .unwrap(),
            vec![]
        );
        assert_error(
            harness.at(3, Command::ReportFailed { run_id: 0 }),
            ErrorCode::RequestConflict,
            "is not running or failed.",
        );
        harness.at(4, Command::Rerun).unwrap();
        assert_error(
            harness.at(5, Command::ReportCompleted { run_id: 0 }),
            ErrorCode::RequestConflict,
            "is resolved or not running.",
        );

        let mut failing = Harness::defined(definition());
        failing.at(1, claim(0)).unwrap();
        assert_eq!(
            failing.at(2, Command::ReportFailed { run_id: 0 }).unwrap(),
            vec![resolved(0, ReasonResolved::Failed)]
        );
        assert_eq!(
            failing.at(3, Command::ReportFailed { run_id: 0 }).unwrap(),
            vec![]
        );
        assert_eq!(failing.status().state, TaskState::Failed);
        assert_error(
            Harness::new().at(0, Command::ReportFailed { run_id: 0 }),
            ErrorCode::ResourceNotFound,
            "Are you sure it was created?",
        );
    }

    #[test]
    fn exceptions_retry_infrastructure_failures_while_retries_last() {
        let mut harness = Harness::defined(TaskDefinition {
            retries: 1,
            ..definition()
        });
        assert_error(
            harness.at(1, exception(0, ExceptionReason::WorkerShutdown)),
            ErrorCode::RequestConflict,
            "is resolved or not running.",
        );
        harness.at(1, claim(0)).unwrap();
        assert_eq!(
            harness
                .at(2, exception(0, ExceptionReason::WorkerShutdown))
                .unwrap(),
            vec![
                resolved(0, ReasonResolved::WorkerShutdown),
                pending(1, ReasonCreated::Retry),
            ]
        );
        assert_eq!(harness.status().retries_left, 0);
        // The same report again, even with the retry after it, succeeds quietly.
        assert_eq!(
            harness
                .at(3, exception(0, ExceptionReason::WorkerShutdown))
                .unwrap(),
            vec![]
        );
        assert_error(
            harness.at(3, exception(0, ExceptionReason::InternalError)),
            ErrorCode::RequestConflict,
            "is resolved or not running.",
        );
        harness.at(4, claim(1)).unwrap();
        assert_eq!(
            harness
                .at(5, exception(1, ExceptionReason::IntermittentTask))
                .unwrap(),
            vec![resolved(1, ReasonResolved::IntermittentTask)],
            "no retries left"
        );
        assert_eq!(harness.status().state, TaskState::Exception);

        let mut intermittent = Harness::defined(definition());
        intermittent.at(1, claim(0)).unwrap();
        assert_eq!(
            intermittent
                .at(2, exception(0, ExceptionReason::IntermittentTask))
                .unwrap(),
            vec![
                resolved(0, ReasonResolved::IntermittentTask),
                pending(1, ReasonCreated::TaskRetry),
            ]
        );

        let mut malformed = Harness::defined(definition());
        malformed.at(1, claim(0)).unwrap();
        assert_eq!(
            malformed
                .at(2, exception(0, ExceptionReason::MalformedPayload))
                .unwrap(),
            vec![resolved(0, ReasonResolved::MalformedPayload)]
        );

        // Past the deadline a retry could never be claimed, so none is made.
        let mut late = Harness::defined(definition());
        late.at(DEADLINE - 1, claim(0)).unwrap();
        assert_eq!(
            late.at(DEADLINE + 1, exception(0, ExceptionReason::WorkerShutdown))
                .unwrap(),
            vec![resolved(0, ReasonResolved::WorkerShutdown)]
        );
        assert_error(
            Harness::new().at(0, exception(0, ExceptionReason::WorkerShutdown)),
            ErrorCode::ResourceNotFound,
            "Are you sure it exists?",
        );
    }

    #[test]
    fn an_expired_claim_resolves_and_retries_unless_superseded() {
        let expire = |run_id, minute| Command::ExpireClaim {
            run_id,
            taken_until: minutes(minute),
        };
        let mut harness = Harness::defined(definition());
        harness.at(0, claim(0)).unwrap();
        assert_eq!(harness.at(19, expire(0, 20)).unwrap(), vec![], "too early");
        assert_eq!(
            harness.at(20, expire(1, 20)).unwrap(),
            vec![],
            "no such run"
        );
        assert_eq!(
            harness.at(20, expire(0, 20)).unwrap(),
            vec![
                resolved(0, ReasonResolved::ClaimExpired),
                pending(1, ReasonCreated::Retry),
            ]
        );
        assert_eq!(
            harness.at(21, expire(0, 20)).unwrap(),
            vec![],
            "already resolved"
        );
        assert_eq!(harness.status().retries_left, 4);

        let mut reclaimed = Harness::defined(definition());
        reclaimed.at(0, claim(0)).unwrap();
        reclaimed.at(10, Command::Reclaim { run_id: 0 }).unwrap();
        assert_eq!(reclaimed.at(20, expire(0, 20)).unwrap(), vec![]);
        assert_eq!(reclaimed.at(30, expire(0, 30)).unwrap().len(), 2);

        let mut late = Harness::defined(definition());
        late.at(DEADLINE - 10, claim(0)).unwrap();
        assert_eq!(
            late.at(DEADLINE + 10, expire(0, DEADLINE + 10)).unwrap(),
            vec![]
        );
        let nobody = Harness::new();
        assert_eq!(
            decide(
                nobody.task_id,
                None,
                expire(0, 0),
                minutes(0),
                &nobody.settings
            )
            .unwrap(),
            vec![]
        );
    }

    #[test]
    fn the_deadline_resolves_every_unresolved_task() {
        let mut pending_task = Harness::defined(definition());
        assert_eq!(
            pending_task
                .at(DEADLINE - 1, Command::ExceedDeadline)
                .unwrap(),
            vec![],
            "too early"
        );
        assert_eq!(
            pending_task.at(DEADLINE, Command::ExceedDeadline).unwrap(),
            vec![resolved(0, ReasonResolved::DeadlineExceeded)]
        );
        assert_eq!(
            pending_task
                .at(DEADLINE + 1, Command::ExceedDeadline)
                .unwrap(),
            vec![]
        );

        let mut running = Harness::defined(definition());
        running.at(5, claim(0)).unwrap();
        assert_eq!(
            running.at(DEADLINE + 1, Command::ExceedDeadline).unwrap(),
            vec![resolved(0, ReasonResolved::DeadlineExceeded)]
        );

        let mut unscheduled =
            Harness::defined(with_dependencies(&[Slugid::nice()], Requires::AllCompleted));
        assert_eq!(
            unscheduled
                .at(DEADLINE + 1, Command::ExceedDeadline)
                .unwrap(),
            vec![Event::ExceptionRunAdded {
                run_id: 0,
                reason: ReasonResolved::DeadlineExceeded,
            }]
        );
        assert_eq!(
            unscheduled.status().runs[0].reason_created,
            ReasonCreated::Exception
        );

        let mut completed = Harness::defined(definition());
        completed.claim_and(1, Command::ReportCompleted { run_id: 0 });
        assert_eq!(
            completed.at(DEADLINE, Command::ExceedDeadline).unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_task_is_forgotten_at_its_expiry_and_not_before() {
        let mut harness = Harness::defined(definition());
        let expires = harness.task().unwrap().definition.expires;
        assert_eq!(
            harness
                .send(Command::Expire, expires.plus_millis(-1))
                .unwrap(),
            vec![]
        );
        assert_eq!(
            harness.send(Command::Expire, expires).unwrap(),
            vec![Event::TaskExpired]
        );
        assert!(harness.task().is_none());
        assert_eq!(
            harness.send(Command::Expire, expires).unwrap(),
            vec![],
            "already forgotten"
        );
    }

    #[test]
    fn priority_changes_only_for_unresolved_tasks_before_the_deadline() {
        let high = || Command::ChangePriority {
            priority: Priority::High,
        };
        assert_error(
            Harness::new().at(0, high()),
            ErrorCode::ResourceNotFound,
            "not found",
        );
        let mut harness = Harness::defined(definition());
        assert_eq!(
            harness.at(1, high()).unwrap(),
            vec![Event::PriorityChanged {
                priority: Priority::High,
            }]
        );
        assert_eq!(harness.status().priority, Priority::High);
        assert_eq!(harness.at(2, high()).unwrap(), vec![]);
        // A group's change records its own event, which folds the same way.
        let very_high = Command::ChangePriorityWithGroup {
            priority: Priority::VeryHigh,
        };
        assert_eq!(
            harness.at(2, very_high).unwrap(),
            vec![Event::PriorityChangedWithGroup {
                priority: Priority::VeryHigh,
            }]
        );
        assert_eq!(harness.status().priority, Priority::VeryHigh);
        assert_error(
            harness.at(DEADLINE + 1, high()),
            ErrorCode::RequestConflict,
            "past its deadline of",
        );
        harness.at(3, Command::Cancel).unwrap();
        assert_error(
            harness.at(
                4,
                Command::ChangePriority {
                    priority: Priority::Low,
                },
            ),
            ErrorCode::RequestConflict,
            "is resolved",
        );
    }

    /// Which run a generated command names, resolved against the state when it is sent.
    #[derive(Clone, Debug)]
    enum Pick {
        Latest,
        Previous,
        Number(u32),
    }

    #[derive(Clone, Debug)]
    enum Step {
        Define { same: bool },
        Schedule,
        Rerun,
        Cancel,
        Claim(Pick),
        Reclaim(Pick),
        Completed(Pick),
        Failed(Pick),
        Exception(Pick, ExceptionReason),
        ExpireClaim { run: Pick, current: bool },
        ExceedDeadline,
        Satisfy { dependency: usize, state: RunState },
        ChangePriority(Priority),
    }

    fn pick() -> impl Strategy<Value = Pick> {
        prop_oneof![
            4 => Just(Pick::Latest),
            1 => Just(Pick::Previous),
            1 => (0u32..55).prop_map(Pick::Number),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let reason = prop::sample::select(vec![
            ExceptionReason::WorkerShutdown,
            ExceptionReason::MalformedPayload,
            ExceptionReason::ResourceUnavailable,
            ExceptionReason::InternalError,
            ExceptionReason::IntermittentTask,
        ]);
        let state = prop::sample::select(vec![
            RunState::Completed,
            RunState::Failed,
            RunState::Exception,
            RunState::Running,
        ]);
        prop_oneof![
            1 => any::<bool>().prop_map(|same| Step::Define { same }),
            1 => Just(Step::Schedule),
            8 => Just(Step::Rerun),
            6 => Just(Step::Cancel),
            6 => pick().prop_map(Step::Claim),
            2 => pick().prop_map(Step::Reclaim),
            2 => pick().prop_map(Step::Completed),
            2 => pick().prop_map(Step::Failed),
            4 => (pick(), reason).prop_map(|(run, reason)| Step::Exception(run, reason)),
            3 => (pick(), any::<bool>())
                .prop_map(|(run, current)| Step::ExpireClaim { run, current }),
            2 => Just(Step::ExceedDeadline),
            2 => (0usize..4, state)
                .prop_map(|(dependency, state)| Step::Satisfy { dependency, state }),
            1 => prop::sample::select(Priority::ALL.to_vec()).prop_map(Step::ChangePriority),
        ]
    }

    /// Milliseconds between two commands: mostly moments, sometimes hours, so that runs reach
    /// the run cap before the deadline in some cases and pass the deadline in others.
    fn advance() -> impl Strategy<Value = i64> {
        prop_oneof![
            40 => 0..2 * MINUTE,
            1 => 0..180 * MINUTE,
        ]
    }

    fn dependency(index: usize) -> Slugid {
        Slugid::from_random_bytes([index as u8 + 1; 16])
    }

    fn command(
        step: &Step,
        task: Option<&Task>,
        original: &TaskDefinition,
        now: Timestamp,
    ) -> Command {
        let runs = task.map_or(0, |task| task.runs.len() as u32);
        let run_id = |pick: &Pick| match pick {
            Pick::Latest => runs.saturating_sub(1),
            Pick::Previous => runs.saturating_sub(2),
            Pick::Number(number) => *number,
        };
        match step {
            Step::Define { same: true } => define(original.clone()),
            Step::Define { same: false } => define(TaskDefinition {
                retries: (original.retries + 1) % 50,
                ..original.clone()
            }),
            Step::Schedule => Command::Schedule,
            Step::Rerun => Command::Rerun,
            Step::Cancel => Command::Cancel,
            Step::Claim(pick) => claim(run_id(pick)),
            Step::Reclaim(pick) => Command::Reclaim {
                run_id: run_id(pick),
            },
            Step::Completed(pick) => Command::ReportCompleted {
                run_id: run_id(pick),
            },
            Step::Failed(pick) => Command::ReportFailed {
                run_id: run_id(pick),
            },
            Step::Exception(pick, reason) => exception(run_id(pick), *reason),
            Step::ExpireClaim { run, current } => {
                let run_id = run_id(run);
                let held = task
                    .and_then(|task| task.runs.get(run_id as usize))
                    .and_then(|run| run.taken_until);
                let taken_until = match (current, held) {
                    (true, Some(taken_until)) => taken_until,
                    (false, Some(taken_until)) => taken_until.plus_millis(-1),
                    (_, None) => now,
                };
                Command::ExpireClaim {
                    run_id,
                    taken_until,
                }
            }
            Step::ExceedDeadline => Command::ExceedDeadline,
            Step::Satisfy {
                dependency: index,
                state,
            } => satisfy(dependency(*index), *state),
            Step::ChangePriority(priority) => Command::ChangePriority {
                priority: *priority,
            },
        }
    }

    /// What must hold between the state before a command and the state after it.
    fn check_transition(before: Option<&Task>, after: Option<&Task>, events: &[Event]) {
        let Some(after) = after else {
            assert!(before.is_none(), "a task disappeared");
            return;
        };
        let runs = &after.runs;
        assert!(
            runs.len() <= MAX_RUNS_PER_TASK as usize,
            "{} runs",
            runs.len()
        );
        if let Some((_, earlier)) = runs.split_last() {
            assert!(
                earlier.iter().all(|run| run.state.is_resolved()),
                "only the latest run may be pending or running: {runs:?}"
            );
        }
        assert!(
            after.retries_left as usize + runs.len() <= MAX_RUNS_PER_TASK as usize,
            "retries would overrun the run cap"
        );
        assert!(
            after
                .satisfied_dependencies
                .iter()
                .all(|dependency| after.definition.dependencies.contains(dependency))
        );
        let Some(before) = before else {
            return;
        };
        assert_eq!(before.definition, after.definition);
        assert!(runs.len() >= before.runs.len());
        for (old, new) in before.runs.iter().zip(runs) {
            if old.state.is_resolved() {
                assert_eq!(old, new, "a resolved run changed");
            }
        }
        let rerun = events.iter().find_map(|event| match event {
            Event::RunPending {
                run_id,
                reason: ReasonCreated::Rerun,
            } => Some(*run_id),
            _ => None,
        });
        match rerun {
            Some(run_id) => assert_eq!(
                after.retries_left,
                after.definition.retries.min(MAX_RUNS_PER_TASK - 1 - run_id)
            ),
            None => assert!(
                after.retries_left <= before.retries_left,
                "retriesLeft grew without a rerun"
            ),
        }
    }

    fn fold(log: &[Envelope]) -> Entities {
        let mut tasks = Entities::default();
        for envelope in log {
            tasks.apply(envelope);
        }
        tasks
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_commands_keep_the_task_invariants(
            retries in 0u32..50,
            dependencies in 0usize..4,
            all_resolved in any::<bool>(),
            deadline_minutes in 30i64..(5 * 24 * 60),
            steps in prop::collection::vec((step(), advance()), 1..600),
        ) {
            let original = TaskDefinition {
                retries,
                dependencies: (0..dependencies).map(dependency).collect(),
                requires: if all_resolved { Requires::AllResolved } else { Requires::AllCompleted },
                deadline: minutes(deadline_minutes),
                ..definition()
            };
            let mut harness = Harness::new();
            // A short claim timeout, so that claims expire within the generated time span.
            harness.settings.claim_timeout = Duration::from_secs(120);
            harness.at(0, define(original.clone())).unwrap();
            let mut now = minutes(0);
            let mut deadline_timer_fired = false;
            for (step, advance) in &steps {
                now = now.plus_millis(*advance);
                let before = harness.task().cloned();
                let command = command(step, before.as_ref(), &original, now);
                let result = harness.send(command, now);
                let events = result.as_deref().unwrap_or_default();
                check_transition(before.as_ref(), harness.task(), events);
                if result.is_err() {
                    prop_assert_eq!(before.as_ref(), harness.task());
                }
                deadline_timer_fired |= matches!(step, Step::ExceedDeadline) && now >= original.deadline;
                if deadline_timer_fired {
                    // Past its deadline a task, once resolved, stays resolved: no timer needs
                    // to fire twice.
                    let state = harness.task().unwrap().state();
                    prop_assert!(
                        matches!(state, TaskState::Completed | TaskState::Failed | TaskState::Exception),
                        "{:?} after the deadline", state
                    );
                }
            }

            // Replay: folding the log from scratch, twice and through the codec, gives the
            // state the commands built.
            let once = fold(&harness.log);
            let twice = fold(&harness.log);
            prop_assert_eq!(&once, &twice);
            prop_assert_eq!(&once, &harness.tasks);
            let decoded: Vec<Envelope> = harness
                .log
                .iter()
                .map(|envelope| codec::decode(&codec::encode(envelope).unwrap()).unwrap())
                .collect();
            prop_assert_eq!(&fold(&decoded), &once);
        }
    }

    fn open_session(session_id: Slugid) -> Command {
        Command::OpenSession {
            run_id: 0,
            session_id,
            client_id: "someone".into(),
            command: vec!["sh".into()],
            tty: true,
        }
    }

    #[test]
    fn sessions_open_only_on_a_running_run_of_an_interactive_task() {
        let plain = Harness::defined(definition()).at(1, open_session(Slugid::nice()));
        assert_error(
            plain,
            ErrorCode::InputError,
            "did not enable `features.interactive`",
        );
        let interactive = TaskDefinition {
            payload: crate::model::Json::from_value(&serde_json::json!({
                "image": "i", "maxRunTime": 1, "features": {"interactive": true}
            })),
            ..definition()
        };
        let mut harness = Harness::defined(interactive);
        assert_error(
            harness.at(1, open_session(Slugid::nice())),
            ErrorCode::RequestConflict,
            "is resolved or not running",
        );
        harness.at(1, claim(0)).unwrap();
        let session_id = Slugid::nice();
        harness.at(2, open_session(session_id)).unwrap();
        let close = |end| Command::CloseSession {
            session_id,
            end,
            exit_status: Some(3),
        };
        assert_eq!(harness.at(3, close(SessionEnd::Exited)).unwrap().len(), 1);
        // Closing again changes nothing: the first end stands.
        assert!(
            harness
                .at(4, close(SessionEnd::ClosedByUser))
                .unwrap()
                .is_empty()
        );
        let session = harness.task().unwrap().session(session_id).unwrap().clone();
        assert_eq!(session.end, Some(SessionEnd::Exited));
        assert_eq!(session.exit_status, Some(3));
        assert_eq!(
            (session.opened, session.closed),
            (minutes(2), Some(minutes(3)))
        );
    }

    fn request_input(timeout_minutes: Option<u64>) -> Command {
        Command::RequestInput {
            run_id: 0,
            request: "deploy?".into(),
            reference: Some(crate::model::Json::from_value(
                &serde_json::json!({"ticket": 7}),
            )),
            timeout: timeout_minutes.map(|minutes| Duration::from_secs(minutes * 60)),
        }
    }

    fn answer_input(response: &str) -> Command {
        Command::AnswerInput {
            run_id: 0,
            response: crate::model::Json::from_value(&serde_json::json!(response)),
            client_id: Some("someone".into()),
        }
    }

    #[test]
    fn a_running_run_asks_once_and_is_answered_once_before_it_expires() {
        let mut harness = Harness::defined(definition());
        assert_error(
            harness.at(1, request_input(Some(10))),
            ErrorCode::RequestConflict,
            "is resolved or not running",
        );
        assert_error(
            harness.at(1, answer_input("yes")),
            ErrorCode::ResourceNotFound,
            "asked for no input",
        );
        harness.at(1, claim(0)).unwrap();
        assert_eq!(harness.at(2, request_input(Some(10))).unwrap().len(), 1);
        // The worker's retry of the same request changes nothing; another request is refused.
        assert!(harness.at(3, request_input(Some(10))).unwrap().is_empty());
        assert_error(
            harness.at(
                3,
                Command::RequestInput {
                    run_id: 0,
                    request: "another?".into(),
                    reference: None,
                    timeout: None,
                },
            ),
            ErrorCode::RequestConflict,
            "already asked for input",
        );
        let input = harness.task().unwrap().input(0).unwrap().clone();
        assert_eq!((input.requested, input.expires), (minutes(2), minutes(12)));
        assert_eq!(input.state(true, minutes(11)), InputState::Waiting);
        harness.at(4, answer_input("yes")).unwrap();
        assert_error(
            harness.at(5, answer_input("no")),
            ErrorCode::RequestConflict,
            "already answered",
        );
        let answer = harness.task().unwrap().input(0).unwrap().answer.clone();
        let answer = answer.unwrap();
        assert_eq!(answer.response.as_str(), "\"yes\"");
        assert_eq!(
            (answer.answered, answer.client_id.as_deref()),
            (minutes(4), Some("someone"))
        );
    }

    #[test]
    fn an_input_request_expires_at_its_timeout_or_the_deadline() {
        let mut harness = Harness::defined(definition());
        harness.at(1, claim(0)).unwrap();
        harness.at(2, request_input(Some(10))).unwrap();
        assert_error(
            harness.at(12, answer_input("late")),
            ErrorCode::RequestConflict,
            "expired",
        );
        // Without a timeout, or with one beyond the deadline, the deadline bounds it.
        let mut unbounded = Harness::defined(definition());
        unbounded.at(1, claim(0)).unwrap();
        unbounded.at(2, request_input(Some(100_000))).unwrap();
        let expires = unbounded.task().unwrap().input(0).unwrap().expires;
        assert_eq!(expires, minutes(DEADLINE));
        // A run that ended cannot be answered any more.
        unbounded
            .at(3, Command::ReportFailed { run_id: 0 })
            .unwrap();
        assert_error(
            unbounded.at(4, answer_input("yes")),
            ErrorCode::RequestConflict,
            "is resolved or not running",
        );
    }
}
