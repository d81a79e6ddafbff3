//! The Taskcluster Queue v1 HTTP API and the services beside it (`services`: Secrets, Index):
//! routes, Taskcluster's error shapes (the error table is [`crate::model::error`]),
//! pagination.
//! Handlers turn requests into commands for the engine; nothing here changes state itself.

pub mod access;
pub mod audience;
pub mod blobs;
mod call;
mod connection;
pub mod console;
pub mod events;
pub mod live_logs;
mod node;
pub mod pagination;
pub mod response;
mod routes;
pub mod server;
mod services;
pub mod sessions;
pub mod websocket;
