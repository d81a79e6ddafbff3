//! What nodes ask each other: a call about one partition's entities, answered by the node that
//! owns the partition, or a call about the node itself (its part of a list, its pending work).
//! JSON on the wire, since task definitions carry arbitrary JSON.

use serde::{Deserialize, Serialize};

use crate::engine::history::HistoryPage;
use crate::engine::index::{Listing, Position};
use crate::engine::workers::WorkerName;
use crate::log::Offset;
use crate::model::group::GroupCommand;
use crate::model::task::{Command, ResolvedDependency};
use crate::model::{ApiError, Slugid, Task, TaskGroup, Worker, WorkerCommand};

/// The route nodes call each other on, outside the API; only a caller with the cluster's
/// secret is answered.
pub const PATH: &str = "/__node__/v1/call";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Call {
    Execute {
        task_id: Slugid,
        command: Command,
        join: Option<GroupCommand>,
        client_id: Option<String>,
    },
    Task {
        task_id: Slugid,
    },
    ExecuteGroup {
        task_group_id: Slugid,
        command: GroupCommand,
        client_id: Option<String>,
    },
    TaskGroup {
        task_group_id: Slugid,
    },
    History {
        task_id: Slugid,
        after: Option<Offset>,
        limit: usize,
    },
    RecordWorker {
        name: WorkerName,
        command: WorkerCommand,
        client_id: Option<String>,
    },
    /// The node's part of a list: its own partitions only.
    List {
        listing: Listing,
        after: Option<Position>,
        limit: usize,
    },
    Count {
        listing: Listing,
    },
    /// Unresolved tasks of a task group in the node's partitions.
    GroupUnresolved {
        task_group_id: Slugid,
    },
    /// Runs pending in a task queue on the node's partitions.
    PendingCount {
        task_queue_id: String,
    },
    /// claimWork on the node's own pending work, without waiting.
    Claim {
        task_queue_id: String,
        worker_group: String,
        worker_id: String,
        tasks: u32,
        client_id: Option<String>,
    },
    /// Answers once the node has pending work in the task queue, or after `wait_ms`, taking
    /// none; `token` lets the caller end the wait early with [`Call::EndWait`].
    AwaitWork {
        token: Slugid,
        task_queue_id: String,
        wait_ms: u64,
    },
    /// Ends the wait `token` at once.
    EndWait {
        token: Slugid,
    },
    /// Tasks of the caller's partitions reached final resolutions: their dependents here may
    /// be satisfied.
    Resolved(Vec<ResolvedDependency>),
}

impl Call {
    /// The entity key whose partition owns the call, for calls about one entity.
    pub fn key(&self) -> Option<String> {
        match self {
            Call::Execute { task_id, .. }
            | Call::Task { task_id }
            | Call::History { task_id, .. } => Some(task_id.to_string()),
            Call::ExecuteGroup { task_group_id, .. } | Call::TaskGroup { task_group_id } => {
                Some(task_group_id.to_string())
            }
            Call::RecordWorker { name, .. } => Some(crate::model::worker_key(
                &name.task_queue_id,
                &name.worker_group,
                &name.worker_id,
            )),
            Call::List { .. }
            | Call::Count { .. }
            | Call::Claim { .. }
            | Call::AwaitWork { .. }
            | Call::EndWait { .. }
            | Call::PendingCount { .. }
            | Call::GroupUnresolved { .. }
            | Call::Resolved(_) => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Answer {
    Task(Task),
    MaybeTask(Option<Task>),
    Group(TaskGroup),
    MaybeGroup(Option<TaskGroup>),
    History(Option<HistoryPage>),
    Worker(Worker),
    List(Vec<(Position, Task)>),
    Count(u64),
    /// Claimed runs: each task with the id of the run claimed.
    Claimed(Vec<(Task, u32)>),
    Done,
}

/// A node's reply to a call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Answer(Answer),
    /// The call's own error, as the API reports it.
    Failed(ApiError),
    /// The node does not own the partition (any more): ask its owner.
    NotHere,
}

/// An answer of another kind than the call asks for.
pub fn unexpected(answer: &Answer) -> ApiError {
    ApiError::new(
        crate::model::ErrorCode::InternalServerError,
        format!("a node answered a call with {answer:?}"),
    )
}
