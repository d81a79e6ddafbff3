//! The services a farm runs beside the queue, each under `<rootUrl>/api/<service>/v1/` with
//! the queue's conventions (Taskcluster's error shape, Hawk, pagination): [`auth`],
//! [`secrets`], [`index`] and [`hooks`]. What they keep are documents of the log (`model::document`), so they are
//! replayed, stored per partition and shared by the nodes like tasks.

pub mod auth;
pub mod hooks;
pub mod index;
pub mod secrets;
