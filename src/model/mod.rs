//! The model: identifiers, the Taskcluster status types with their exact JSON shapes, the
//! internal events that the log stores, and the entities those events are about. Each entity
//! has one home holding its definition, its folded state, its `decide` (command → events or
//! error) and its `apply` (event → state): [`task`], [`group`] and [`worker`]; [`entities`]
//! holds a partition's worth of them. No I/O lives here.
//!
//! It is also the vocabulary the layers above share, so that none of them reaches into another
//! for it: the error table every call answers with ([`error`]), and the names of the exchanges
//! and how listeners bind to them ([`exchange`], [`binding`]).

pub mod artifact;
pub mod binding;
pub mod document;
pub mod entities;
pub mod error;
pub mod event;
pub mod exchange;
pub mod group;
pub mod history;
pub mod hook;
pub mod ids;
pub mod input;
pub mod interactive;
pub mod json;
pub mod session;
pub mod status;
pub mod task;
pub mod time;
pub mod worker;

pub use artifact::{Artifact, Storage};
pub use document::{Document, DocumentCommand, DocumentKind};
pub use entities::Entities;
pub use error::{ApiError, ErrorCode};
pub use event::{Envelope, Event};
pub use group::TaskGroup;
pub use history::{Caller, HistoryEvent, HistoryRecord};
pub use ids::Slugid;
pub use input::{InputAnswer, InputRequest, InputState};
pub use json::Json;
pub use session::{Session, SessionEnd};
pub use status::{
    ExceptionReason, ReasonCreated, ReasonResolved, RunState, RunStatus, TaskState, TaskStatus,
};
pub use task::{
    CreateTaskRequest, Metadata, Priority, Requires, Run, Task, TaskDefinition, split_task_queue_id,
};
pub use time::Timestamp;
pub use worker::{QuarantineChange, Worker, WorkerCommand, worker_key};
