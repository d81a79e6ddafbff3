//! Task status as Taskcluster returns it (`task-status.yml`), and the run vocabulary.

use serde::{Deserialize, Serialize};

use super::{Priority, Slugid, Timestamp};

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub task_id: Slugid,
    pub provisioner_id: String,
    pub worker_type: String,
    pub task_queue_id: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: Slugid,
    pub priority: Priority,
    pub deadline: Timestamp,
    pub expires: Timestamp,
    pub retries_left: u32,
    pub state: TaskState,
    pub runs: Vec<RunStatus>,
}

/// One run as the API shows it; optional fields are absent until the run reaches them.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub run_id: u32,
    pub state: RunState,
    pub reason_created: ReasonCreated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_resolved: Option<ReasonResolved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_until: Option<Timestamp>,
    pub scheduled: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Timestamp>,
}

/// The state of a task: the state of its last run, or `unscheduled` before the first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Unscheduled,
    Pending,
    Running,
    Completed,
    Failed,
    Exception,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Pending,
    Running,
    Completed,
    Failed,
    Exception,
}

impl RunState {
    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Exception
        )
    }
}

impl From<RunState> for TaskState {
    fn from(state: RunState) -> Self {
        match state {
            RunState::Pending => TaskState::Pending,
            RunState::Running => TaskState::Running,
            RunState::Completed => TaskState::Completed,
            RunState::Failed => TaskState::Failed,
            RunState::Exception => TaskState::Exception,
        }
    }
}

/// Why a run was created.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCreated {
    /// The first run: no dependencies, dependencies satisfied, or `scheduleTask`.
    Scheduled,
    /// Automatic retry after `claim-expired` or `worker-shutdown`.
    Retry,
    /// Automatic retry after `intermittent-task`.
    TaskRetry,
    /// `rerunTask`.
    Rerun,
    /// A run made only to record the cancellation or deadline of an unscheduled task.
    Exception,
}

impl ReasonCreated {
    /// Whether creating such a run uses up one of the task's `retries`.
    pub fn consumes_retry(self) -> bool {
        matches!(self, ReasonCreated::Retry | ReasonCreated::TaskRetry)
    }
}

/// Why a run was resolved; each reason implies the run's final state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonResolved {
    Completed,
    Failed,
    DeadlineExceeded,
    Canceled,
    Superseded,
    ClaimExpired,
    WorkerShutdown,
    MalformedPayload,
    ResourceUnavailable,
    InternalError,
    IntermittentTask,
}

impl ReasonResolved {
    pub fn final_state(self) -> RunState {
        match self {
            ReasonResolved::Completed => RunState::Completed,
            ReasonResolved::Failed => RunState::Failed,
            _ => RunState::Exception,
        }
    }
}

/// The reasons a worker may give to `reportException` (`task-exception-request.yml`); the
/// others (`canceled`, `claim-expired`, `deadline-exceeded`, …) are the queue's own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionReason {
    WorkerShutdown,
    MalformedPayload,
    ResourceUnavailable,
    InternalError,
    IntermittentTask,
}

impl ExceptionReason {
    /// The reason the new run gets when this exception is retried automatically, if it is.
    pub fn retry(self) -> Option<ReasonCreated> {
        match self {
            ExceptionReason::WorkerShutdown => Some(ReasonCreated::Retry),
            ExceptionReason::IntermittentTask => Some(ReasonCreated::TaskRetry),
            ExceptionReason::MalformedPayload
            | ExceptionReason::ResourceUnavailable
            | ExceptionReason::InternalError => None,
        }
    }
}

impl From<ExceptionReason> for ReasonResolved {
    fn from(reason: ExceptionReason) -> Self {
        match reason {
            ExceptionReason::WorkerShutdown => ReasonResolved::WorkerShutdown,
            ExceptionReason::MalformedPayload => ReasonResolved::MalformedPayload,
            ExceptionReason::ResourceUnavailable => ReasonResolved::ResourceUnavailable,
            ExceptionReason::InternalError => ReasonResolved::InternalError,
            ExceptionReason::IntermittentTask => ReasonResolved::IntermittentTask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_run_fields_are_omitted() {
        let run = RunStatus {
            run_id: 0,
            state: RunState::Pending,
            reason_created: ReasonCreated::Scheduled,
            reason_resolved: None,
            worker_group: None,
            worker_id: None,
            taken_until: None,
            scheduled: Timestamp::from_millis(0),
            started: None,
            resolved: None,
        };
        assert_eq!(
            serde_json::to_value(&run).unwrap(),
            serde_json::json!({
                "runId": 0, "state": "pending", "reasonCreated": "scheduled",
                "scheduled": "1970-01-01T00:00:00.000Z"
            })
        );
    }

    #[test]
    fn reasons_use_kebab_case() {
        assert_eq!(
            serde_json::to_string(&ReasonResolved::DeadlineExceeded).unwrap(),
            "\"deadline-exceeded\""
        );
        assert_eq!(
            serde_json::to_string(&ReasonCreated::TaskRetry).unwrap(),
            "\"task-retry\""
        );
    }
}
