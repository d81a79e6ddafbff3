//! Projections: what is derived from committed events for those who watch the queue rather
//! than call it (DESIGN.md, projections and listeners). So far: Prometheus metrics.

pub mod metrics;
