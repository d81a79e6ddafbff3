//! The task as folded from its events: a pure, total function of them.
//!
//! [`Task::apply`] never fails and never reads the clock: an event that does not fit the state
//! (a claim of a run that is not pending, say) changes nothing. Which events happen is
//! [`decide`](fn@super::decide)'s business; this module only says what they mean.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    Artifact, Event, InputAnswer, InputRequest, Priority, ReasonCreated, ReasonResolved, RunState,
    RunStatus, Session, Slugid, TaskDefinition, TaskState, TaskStatus, Timestamp,
};

/// Most runs a task may have (Taskcluster's `MAX_RUNS_ALLOWED`): `rerunTask` refuses to add
/// more, and a rerun gives back only as many retries as still fit under it.
pub const MAX_RUNS_PER_TASK: u32 = 50;

/// A task as folded from its events.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Task {
    pub task_id: Slugid,
    /// Shared, never changed after creation: the replies that carry a task's state copy it
    /// often, and the definition is most of a task's bytes.
    pub definition: Arc<TaskDefinition>,
    /// Starts at `definition.retries`; automatic retries use it up.
    pub retries_left: u32,
    /// Current priority; `changeTaskPriority` moves it away from the definition's.
    pub priority: Priority,
    pub runs: Vec<Run>,
    pub satisfied_dependencies: BTreeSet<Slugid>,
    /// Every artifact of every run, by run and name (so a run's are in name order).
    pub artifacts: BTreeMap<(u32, String), Artifact>,
    /// Every interactive session of every run, in opening order.
    pub sessions: Vec<Session>,
    /// The requests for input of its runs (INPUT tasks), at most one per run, in run order.
    pub inputs: Vec<InputRequest>,
}

/// A run inside the folded task. Unlike [`RunStatus`], every field is always encoded, so the
/// type can live in binary snapshots.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Run {
    pub state: RunState,
    pub reason_created: ReasonCreated,
    pub reason_resolved: Option<ReasonResolved>,
    pub worker_group: Option<String>,
    pub worker_id: Option<String>,
    pub taken_until: Option<Timestamp>,
    pub scheduled: Timestamp,
    pub started: Option<Timestamp>,
    pub resolved: Option<Timestamp>,
}

impl Task {
    pub fn new(task_id: Slugid, definition: Arc<TaskDefinition>) -> Self {
        Task {
            task_id,
            retries_left: definition.retries,
            priority: definition.priority,
            definition,
            runs: Vec::new(),
            satisfied_dependencies: BTreeSet::new(),
            artifacts: BTreeMap::new(),
            sessions: Vec::new(),
            inputs: Vec::new(),
        }
    }

    /// The request for input of run `run_id`, if it asked for one.
    pub fn input(&self, run_id: u32) -> Option<&InputRequest> {
        self.inputs.iter().find(|input| input.run_id == run_id)
    }

    pub fn session(&self, session_id: Slugid) -> Option<&Session> {
        self.sessions
            .iter()
            .find(|session| session.session_id == session_id)
    }

    fn session_mut(&mut self, session_id: Slugid) -> Option<&mut Session> {
        self.sessions
            .iter_mut()
            .find(|session| session.session_id == session_id)
    }

    pub fn state(&self) -> TaskState {
        self.runs
            .last()
            .map_or(TaskState::Unscheduled, |run| run.state.into())
    }

    /// Applies one event of this task, at the instant the envelope records.
    pub fn apply(&mut self, at: Timestamp, event: &Event) {
        let latest = self.runs.len().checked_sub(1);
        let latest_run = |run_id: u32| latest.filter(|&index| index == run_id as usize);
        match event {
            // A task is defined once; a repeat changes nothing.
            Event::TaskDefined { .. } => {}
            Event::RunPending { run_id, reason } => {
                let previous_resolved = self.runs.last().is_none_or(|run| run.state.is_resolved());
                if *run_id as usize == self.runs.len() && previous_resolved {
                    if reason.consumes_retry() {
                        self.retries_left = self.retries_left.saturating_sub(1);
                    }
                    if *reason == ReasonCreated::Rerun {
                        // A rerun restores the retries, but never beyond the run cap: the new
                        // run and all its retries together stay within MAX_RUNS_PER_TASK.
                        let room = (MAX_RUNS_PER_TASK - 1).saturating_sub(*run_id);
                        self.retries_left = self.definition.retries.min(room);
                    }
                    self.runs.push(Run {
                        state: RunState::Pending,
                        reason_created: *reason,
                        reason_resolved: None,
                        worker_group: None,
                        worker_id: None,
                        taken_until: None,
                        scheduled: at,
                        started: None,
                        resolved: None,
                    });
                }
            }
            Event::RunClaimed {
                run_id,
                worker_group,
                worker_id,
                taken_until,
            } => {
                if let Some(run) = latest_run(*run_id).map(|index| &mut self.runs[index])
                    && run.state == RunState::Pending
                {
                    run.state = RunState::Running;
                    run.worker_group = Some(worker_group.clone());
                    run.worker_id = Some(worker_id.clone());
                    run.taken_until = Some(*taken_until);
                    run.started = Some(at);
                }
            }
            Event::RunReclaimed {
                run_id,
                taken_until,
            } => {
                if let Some(run) = latest_run(*run_id).map(|index| &mut self.runs[index])
                    && run.state == RunState::Running
                {
                    run.taken_until = Some(*taken_until);
                }
            }
            Event::RunResolved { run_id, reason } => {
                if let Some(run) = latest_run(*run_id).map(|index| &mut self.runs[index])
                    && !run.state.is_resolved()
                {
                    run.state = reason.final_state();
                    run.reason_resolved = Some(*reason);
                    run.resolved = Some(at);
                }
            }
            Event::DependencySatisfied { dependency } => {
                self.satisfied_dependencies.insert(*dependency);
            }
            Event::PriorityChanged { priority } | Event::PriorityChangedWithGroup { priority } => {
                self.priority = *priority
            }
            Event::ArtifactCreated {
                run_id,
                name,
                artifact,
            } => {
                if (*run_id as usize) < self.runs.len() {
                    self.artifacts
                        .insert((*run_id, name.clone()), artifact.clone());
                }
            }
            Event::SessionOpened {
                run_id,
                session_id,
                client_id,
                command,
                tty,
            } => {
                if (*run_id as usize) < self.runs.len() {
                    self.sessions.push(Session {
                        session_id: *session_id,
                        run_id: *run_id,
                        client_id: client_id.clone(),
                        command: command.clone(),
                        tty: *tty,
                        opened: at,
                        closed: None,
                        end: None,
                        exit_status: None,
                    });
                }
            }
            Event::SessionClosed {
                session_id,
                end,
                exit_status,
            } => {
                if let Some(session) = self.session_mut(*session_id)
                    && session.is_open()
                {
                    session.closed = Some(at);
                    session.end = Some(*end);
                    session.exit_status = *exit_status;
                }
            }
            Event::InputRequested {
                run_id,
                request,
                reference,
                expires,
            } => {
                if (*run_id as usize) < self.runs.len() && self.input(*run_id).is_none() {
                    self.inputs.push(InputRequest {
                        run_id: *run_id,
                        request: request.clone(),
                        reference: reference.clone(),
                        requested: at,
                        expires: *expires,
                        answer: None,
                    });
                }
            }
            Event::InputAnswered {
                run_id,
                response,
                client_id,
            } => {
                if let Some(input) = self.inputs.iter_mut().find(|input| input.run_id == *run_id)
                    && input.answer.is_none()
                {
                    input.answer = Some(InputAnswer {
                        response: response.clone(),
                        answered: at,
                        client_id: client_id.clone(),
                    });
                }
            }
            // Events of other entities.
            Event::TaskGroupJoined { .. }
            | Event::TaskGroupSealed
            | Event::TaskGroupResolved
            | Event::TaskGroupPriorityChanged { .. }
            | Event::TaskExpired
            | Event::TaskGroupExpired
            | Event::DocumentPut { .. }
            | Event::DocumentRemoved { .. }
            | Event::WorkerQuarantined { .. }
            | Event::WorkerDeclared { .. } => {}
            Event::ExceptionRunAdded { run_id, reason } => {
                let previous_resolved = self.runs.last().is_none_or(|run| run.state.is_resolved());
                if *run_id as usize == self.runs.len() && previous_resolved {
                    self.runs.push(Run {
                        state: reason.final_state(),
                        reason_created: ReasonCreated::Exception,
                        reason_resolved: Some(*reason),
                        worker_group: None,
                        worker_id: None,
                        taken_until: None,
                        scheduled: at,
                        started: None,
                        resolved: Some(at),
                    });
                }
            }
        }
    }

    /// The status as the API returns it.
    pub fn status(&self) -> TaskStatus {
        let definition = &self.definition;
        TaskStatus {
            task_id: self.task_id,
            provisioner_id: definition.provisioner_id.clone(),
            worker_type: definition.worker_type.clone(),
            task_queue_id: definition.task_queue_id.clone(),
            scheduler_id: definition.scheduler_id.clone(),
            project_id: definition.project_id.clone(),
            task_group_id: definition.task_group_id,
            priority: self.priority,
            deadline: definition.deadline,
            expires: definition.expires,
            retries_left: self.retries_left,
            state: self.state(),
            runs: self
                .runs
                .iter()
                .enumerate()
                .map(|(run_id, run)| RunStatus {
                    run_id: run_id as u32,
                    state: run.state,
                    reason_created: run.reason_created,
                    reason_resolved: run.reason_resolved,
                    worker_group: run.worker_group.clone(),
                    worker_id: run.worker_id.clone(),
                    taken_until: run.taken_until,
                    scheduled: run.scheduled,
                    started: run.started,
                    resolved: run.resolved,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{Entities, Envelope};

    fn envelope(task: Slugid, millis: i64, event: Event) -> Envelope {
        Envelope {
            key: task.to_string(),
            at: Timestamp::from_millis(millis),
            client_id: None,
            event,
        }
    }

    #[test]
    fn a_run_lifecycle_folds_into_taskcluster_status() {
        let task_id = Slugid::nice();
        let mut tasks = Entities::default();
        let events = [
            Event::TaskDefined {
                task_id,
                definition: Arc::new(sample_definition(task_id)),
            },
            Event::RunPending {
                run_id: 0,
                reason: ReasonCreated::Scheduled,
            },
            Event::RunClaimed {
                run_id: 0,
                worker_group: "wg".into(),
                worker_id: "w1".into(),
                taken_until: Timestamp::from_millis(1_200_000),
            },
            Event::RunResolved {
                run_id: 0,
                reason: ReasonResolved::WorkerShutdown,
            },
            Event::RunPending {
                run_id: 1,
                reason: ReasonCreated::Retry,
            },
            // Not the latest run: ignored.
            Event::RunClaimed {
                run_id: 0,
                worker_group: "wg".into(),
                worker_id: "w2".into(),
                taken_until: Timestamp::from_millis(9),
            },
        ];
        for (millis, event) in events.into_iter().enumerate() {
            tasks.apply(&envelope(task_id, millis as i64, event));
        }
        let status = tasks.tasks[&task_id].status();
        assert_eq!(status.state, TaskState::Pending);
        assert_eq!(status.retries_left, 4);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["runs"][0]["state"], "exception");
        assert_eq!(json["runs"][0]["reasonResolved"], "worker-shutdown");
        assert_eq!(json["runs"][0]["workerId"], "w1");
        assert_eq!(json["runs"][1]["reasonCreated"], "retry");
        assert!(json["runs"][1].get("workerId").is_none());
    }
}
