//! The model: identifiers, the Taskcluster task definition and status types with their exact
//! JSON shapes, and the internal events that the log stores. No I/O lives here.

pub mod event;
pub mod fold;
pub mod ids;
pub mod json;
pub mod status;
pub mod task;
pub mod time;

pub use event::{Envelope, Event};
pub use fold::{Run, Task, Tasks};
pub use ids::Slugid;
pub use json::Json;
pub use status::{
    ExceptionReason, ReasonCreated, ReasonResolved, RunState, RunStatus, TaskState, TaskStatus,
};
pub use task::{CreateTaskRequest, Metadata, Priority, Requires, TaskDefinition};
pub use time::Timestamp;
