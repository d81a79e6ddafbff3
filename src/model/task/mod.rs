//! The task entity, all in one place: its definition as Taskcluster stores it
//! ([`definition`]), its state as folded from its events ([`state`]), and the decisions that
//! turn a command into events or into the error the caller gets ([`decide`](mod@decide), with
//! `createArtifact`'s rules in [`create_artifact`]).
//!
//! The engine's shards carry the decisions out: decide → append → apply → reply.

pub mod create_artifact;
pub mod decide;
pub mod definition;
pub mod state;

pub use decide::{Command, ResolvedDependency, Settings, decide, no_input};
pub use definition::{
    CreateTaskRequest, DEFAULT_MAX_DEADLINE, Metadata, Priority, Requires, TaskDefinition,
    is_worker_identifier, split_task_queue_id,
};
pub use state::{MAX_RUNS_PER_TASK, Run, Task};
