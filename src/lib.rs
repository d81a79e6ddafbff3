//! Taskfold: a task-execution platform whose state is an append-only event log folded into
//! actors. See `DESIGN.md` in the shared project notes for the picture; this crate holds the
//! model (pure types), the log (embedded segments or Kafka) and, as they land, the engine, the
//! API, the worker and the projections.
//!
//! ## What is never lost
//!
//! - No call is answered before its events are durable: the embedded log replies after the
//!   group commit's `fdatasync`, Kafka after `acks=all` (`engine::shard`).
//! - Opening the embedded log cuts only a torn tail, bytes that no valid record follows. Damage
//!   that a valid record follows refuses the start and changes nothing; `taskfold log repair`
//!   keeps the records before it and copies the rest aside (`log::embedded::recovery`).
//! - A failed append is crash-only: from then on nothing answers from the state in memory, and
//!   the server exits so that a restart replays what the log holds (`engine::health`).
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod blob_files;
pub mod client;
pub mod engine;
pub mod local;
pub mod log;
pub mod metrics;
pub mod model;
pub mod projections;
pub mod settings;
pub mod worker;
