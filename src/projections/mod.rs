//! Projections: what is derived from committed events for those who watch the queue rather
//! than call it (DESIGN.md, projections and listeners): Taskcluster's exchange messages, the
//! in-process bus that carries them to listeners, and Prometheus metrics.

pub mod bus;
pub mod exchanges;
pub mod kafka;
pub mod metrics;
