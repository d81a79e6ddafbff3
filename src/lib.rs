//! Taskfold: a task-execution platform whose state is an append-only event log folded into
//! actors. See `DESIGN.md` in the shared project notes for the picture; this crate holds the
//! model (pure types), the log (embedded segments or Kafka) and, as they land, the engine, the
//! API, the worker and the projections.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod client;
pub mod engine;
pub mod local;
pub mod log;
pub mod model;
pub mod projections;
pub mod settings;
pub mod worker;
