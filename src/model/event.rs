//! Internal events: what the log stores and what the fold applies.
//!
//! These never reach users as they are; projections derive Taskcluster's public messages from
//! them. New variants go at the end of the enum (the codec identifies variants by position);
//! any other change to an existing variant, or to the envelope, needs a new codec format
//! version (`log::codec`, which still decodes the older ones).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::document::{Document, DocumentKind};
use super::{
    Artifact, Json, Priority, QuarantineChange, ReasonCreated, ReasonResolved, SessionEnd, Slugid,
    TaskDefinition, Timestamp,
};

/// One record of the log: which entity it belongs to, when it happened, and what happened.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The entity id; the log partitions by it, so every event of an entity is in one
    /// partition, in order.
    pub key: String,
    /// The instant the command that produced the event was decided. Replay reads time only
    /// from here, never from the clock.
    pub at: Timestamp,
    /// Who caused the event: the clientId of the authenticated API call whose command decided
    /// it, or `None` for what the queue does on its own (deadlines, claim expiry, dependency
    /// resolution, expiry), for anonymous calls, and for events logged before this was kept.
    /// Every event of one commit has the same.
    pub client_id: Option<String>,
    pub event: Event,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Event {
    /// A task was created with this definition (defaults applied, dates normalized). Shared
    /// with the task the event creates, so a large definition is held once.
    TaskDefined {
        task_id: Slugid,
        definition: Arc<TaskDefinition>,
    },
    /// A new run was added in state `pending`.
    RunPending { run_id: u32, reason: ReasonCreated },
    /// A worker claimed the pending run.
    RunClaimed {
        run_id: u32,
        worker_group: String,
        worker_id: String,
        taken_until: Timestamp,
    },
    /// The worker holding the run extended its claim.
    RunReclaimed { run_id: u32, taken_until: Timestamp },
    /// The run reached a final state; the reason implies which.
    RunResolved { run_id: u32, reason: ReasonResolved },
    /// A dependency of this task resolved in a way that satisfies it.
    DependencySatisfied { dependency: Slugid },
    /// `changeTaskPriority`.
    PriorityChanged { priority: Priority },
    /// A run was added already resolved, to record that a task without runs was canceled or
    /// passed its deadline (its `reasonCreated` is `exception`). It was never pending, so no
    /// worker could see it.
    ExceptionRunAdded { run_id: u32, reason: ReasonResolved },
    /// `createArtifact` made or replaced the artifact `name` of the run.
    ArtifactCreated {
        run_id: u32,
        name: String,
        artifact: Artifact,
    },
    /// A task joined the group (keyed by the group id): the first one creates it, and a
    /// later-expiring one moves its expiry.
    TaskGroupJoined {
        task_group_id: Slugid,
        scheduler_id: String,
        expires: Timestamp,
    },
    /// `sealTaskGroup`.
    TaskGroupSealed,
    /// `quarantineWorker` (keyed by the worker's key).
    WorkerQuarantined { change: QuarantineChange },
    /// `declareWorker`.
    WorkerDeclared { expires: Timestamp },
    /// Every task of the group (keyed by the group's id) is resolved.
    TaskGroupResolved,
    /// `createSession`: an interactive session into a running run was opened.
    SessionOpened {
        run_id: u32,
        session_id: Slugid,
        client_id: String,
        command: Vec<String>,
        tty: bool,
    },
    /// The session ended; `exit_status` when its command exited.
    SessionClosed {
        session_id: Slugid,
        end: SessionEnd,
        exit_status: Option<i32>,
    },
    /// `changeTaskGroupPriority` changed this task's priority. It folds as `PriorityChanged`
    /// does, but only the group's summary (`TaskGroupPriorityChanged`) is published.
    PriorityChangedWithGroup { priority: Priority },
    /// `changeTaskGroupPriority` (keyed by the group's id) is done: `tasks_affected` of its
    /// unresolved tasks now have `priority`.
    TaskGroupPriorityChanged {
        priority: Priority,
        tasks_affected: u32,
    },
    /// The task passed its `expires`: it is forgotten, with its runs and artifacts.
    TaskExpired,
    /// The group (keyed by its id) passed its `expires`, after all of its tasks: forgotten.
    TaskGroupExpired,
    /// A document of a service beside the queue (a secret, an index entry) was put, replacing
    /// any of the same kind and name; keyed by [`partition_key`](super::document::partition_key).
    DocumentPut { name: String, document: Document },
    /// The document was removed, or expired.
    DocumentRemoved { kind: DocumentKind, name: String },
    /// The run's worker asked a person for input (an INPUT task), answerable until
    /// `expires`.
    InputRequested {
        run_id: u32,
        request: String,
        reference: Option<Json>,
        expires: Timestamp,
    },
    /// Someone (`client_id`, when the call had credentials) answered the run's request.
    InputAnswered {
        run_id: u32,
        response: Json,
        client_id: Option<String>,
    },
}
