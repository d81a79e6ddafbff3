//! The engine: the actors of DESIGN.md ("decide → append → apply → reply") and the pure
//! decisions they run. Each entity has a `decide` that turns a command into events or into the
//! Taskcluster error the caller gets; the fold in `model` says what the events mean.

pub mod pending;
pub mod task;
