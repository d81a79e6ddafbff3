//! Projections: what is derived from committed events for those who watch the queue rather
//! than call it (DESIGN.md, projections and listeners): Taskcluster's exchange messages, the
//! in-process bus that carries them to listeners, the Kafka exchange topics and the AMQP
//! exchanges of a Pulse broker. The names they share with listeners are the model's
//! ([`crate::model::exchange`], [`crate::model::binding`]); the Prometheus metrics are
//! [`crate::metrics`], which the shards count into as they apply events.

pub mod bus;
pub mod exchanges;
pub mod kafka;
pub mod pulse;
