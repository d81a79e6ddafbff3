//! What nodes ask each other: a call about one partition's entities, answered by the node that
//! owns the partition, or a call about the node itself (its part of a list, its pending work).
//! On the wire in the log's own encoding (`log::codec`), version byte first, so that nodes of
//! different builds in a rolling upgrade refuse what they cannot read instead of misreading it.

use serde::{Deserialize, Serialize};

use crate::engine::history::HistoryPage;
use crate::engine::index::{Listing, Position};
use crate::engine::workers::{
    ListProvisioners, ListTaskQueues, ListWorkers, WorkerInfo, WorkerName,
};
use crate::log::Offset;
use crate::model::group::GroupCommand;
use crate::model::task::{Command, ResolvedDependency};
use crate::model::{
    ApiError, Document, DocumentCommand, DocumentKind, Slugid, Task, TaskGroup, Timestamp, Worker,
    WorkerCommand,
};

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
    /// A worker's record changed (quarantined, declared) on another node: for this node's
    /// directory, which claimWork checks.
    WorkerRecorded {
        name: WorkerName,
        record: Worker,
        at: Timestamp,
    },
    /// What the node's directory knows of a worker.
    LookupWorker {
        name: WorkerName,
    },
    /// The node's directory's part of a list of workers, task queues or provisioners, and of
    /// a task queue: each node saw the workers that called it.
    ListWorkers(ListWorkers),
    ListTaskQueues(ListTaskQueues),
    ListProvisioners(ListProvisioners),
    LookupTaskQueue {
        task_queue_id: String,
    },
    /// Unresolved tasks of a task group in the node's partitions.
    GroupUnresolved {
        task_group_id: Slugid,
    },
    /// The task groups the node's partitions hold unresolved tasks of, and those resolved
    /// there lately.
    RecentGroups,
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
    /// A command on a document (a secret, an index entry).
    Document {
        kind: DocumentKind,
        name: String,
        command: DocumentCommand,
        client_id: Option<String>,
    },
    GetDocument {
        kind: DocumentKind,
        name: String,
    },
    /// The node's part of a list of documents: store keys starting with `prefix`, after
    /// `after`.
    ListDocuments {
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    },
    /// The node's part of a list of the index's namespaces under `parent`.
    ListNamespaces {
        parent: String,
        after: Option<String>,
        limit: usize,
    },
    /// A document every node keeps a table of (a client, a role) changed on another node.
    DocumentChanged {
        kind: DocumentKind,
        name: String,
        document: Option<Document>,
    },
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
            Call::Document { kind, name, .. } | Call::GetDocument { kind, name } => {
                Some(crate::model::document::partition_key(*kind, name))
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
            | Call::WorkerRecorded { .. }
            | Call::LookupWorker { .. }
            | Call::ListWorkers(_)
            | Call::ListTaskQueues(_)
            | Call::ListProvisioners(_)
            | Call::LookupTaskQueue { .. }
            | Call::GroupUnresolved { .. }
            | Call::RecentGroups
            | Call::ListDocuments { .. }
            | Call::ListNamespaces { .. }
            | Call::DocumentChanged { .. }
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
    /// A node's count of a group's unresolved tasks, with the partitions it covers.
    Unresolved(crate::engine::group_tracker::Unresolved),
    RecentGroups(Vec<crate::engine::group_tracker::RecentGroup>),
    WorkerInfo(Option<WorkerInfo>),
    Workers(Vec<WorkerInfo>),
    /// Task queues or provisioners, each with when it was last active.
    Active(Vec<(String, Timestamp)>),
    MaybeActive(Option<Timestamp>),
    /// Claimed runs: each task with the id of the run claimed.
    Claimed(Vec<(Task, u32)>),
    Done,
    Document(Option<Document>),
    /// Documents by name.
    Documents(Vec<(String, Document)>),
    /// Namespaces of the index, each with when it expires.
    Namespaces(Vec<(String, Timestamp)>),
}

/// A node's reply to a call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Answer(Answer),
    /// The call's own error, as the API reports it.
    Failed(Failure),
    /// The node does not own the partition (any more): ask its owner.
    NotHere,
}

/// An [`ApiError`] on the wire: its details (arbitrary JSON) as JSON text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    code: crate::model::ErrorCode,
    message: String,
    details: Option<String>,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            code: error.code,
            message: error.message,
            details: error.details.map(|details| details.to_string()),
        }
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        let error = ApiError::new(failure.code, failure.message);
        match failure
            .details
            .and_then(|details| serde_json::from_str(&details).ok())
        {
            Some(details) => error.with_details(details),
            None => error,
        }
    }
}

impl crate::log::codec::Versioned for Call {}
impl crate::log::codec::Versioned for Reply {}

/// An answer of another kind than the call asks for.
pub fn unexpected(answer: &Answer) -> ApiError {
    ApiError::new(
        crate::model::ErrorCode::InternalServerError,
        format!("a node answered a call with {answer:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::codec;

    /// A task with artifacts (a map keyed by run and name) and an error with JSON details make
    /// the trip between nodes whole.
    #[test]
    fn calls_and_replies_make_the_trip() {
        let body = serde_json::json!({
            "taskQueueId": "proj/queue",
            "created": "2030-01-01T00:00:00.000Z",
            "deadline": "2030-01-01T01:00:00.000Z",
            "payload": {"command": ["true"], "nested": {"n": 1}},
            "metadata": {"name": "n", "description": "d", "owner": "o@example.com",
                         "source": "https://example.com"},
        });
        let task_id: Slugid = "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
        let request = crate::model::task::CreateTaskRequest::from_json(body.to_string().as_bytes())
            .expect("a createTask body");
        let definition = request.into_definition(task_id).expect("a definition");
        let mut task = Task::new(task_id, std::sync::Arc::new(definition));
        task.artifacts.insert(
            (0, "public/a.txt".into()),
            crate::model::Artifact {
                content_type: "text/plain".into(),
                expires: crate::model::Timestamp::from_millis(1_900_000_000_000),
                storage: crate::model::Storage::S3 {
                    content_length: Some(5),
                },
            },
        );
        let reply = Reply::Answer(Answer::Task(task.clone()));
        let back: Reply = codec::decode(&codec::encode(&reply).unwrap()).unwrap();
        assert!(matches!(back, Reply::Answer(Answer::Task(found)) if found == task));

        let error = ApiError::input("no").with_details(serde_json::json!({"missing": ["x"]}));
        let reply = Reply::Failed(error.clone().into());
        let Reply::Failed(back) = codec::decode(&codec::encode(&reply).unwrap()).unwrap() else {
            panic!("not a failure");
        };
        assert_eq!(ApiError::from(back), error);

        let call = Call::Execute {
            task_id,
            command: Command::Define {
                definition: task.definition.clone(),
                resolved_dependencies: Vec::new(),
            },
            join: None,
            client_id: Some("me".into()),
        };
        let back: Call = codec::decode(&codec::encode(&call).unwrap()).unwrap();
        assert!(
            matches!(back, Call::Execute { command: Command::Define { definition, .. }, .. }
            if definition == task.definition)
        );
    }
}
