//! The log's settings, `[log]` of the configuration: the backend, the partition count and each
//! backend's tuning. `config/default.toml` documents every key; the configuration as a whole
//! (`crate::settings`) reads this section into these types.

use serde::Deserialize;

use super::{embedded, kafka};

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub backend: Backend,
    pub partitions: u32,
    /// Hours after which embedded-log segments the stores no longer need are deleted; 0 keeps
    /// everything.
    pub retention_hours: f64,
    pub embedded: embedded::Options,
    pub kafka: kafka::Options,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Embedded,
    Kafka,
}

impl Settings {
    /// How long the log keeps records that the stores no longer need; `None`: for ever.
    pub fn retention(&self) -> Option<std::time::Duration> {
        (self.retention_hours > 0.0)
            .then(|| std::time::Duration::from_secs_f64(self.retention_hours * 3600.0))
    }

    pub fn embedded_options(&self) -> embedded::Options {
        embedded::Options {
            partitions: self.partitions,
            ..self.embedded.clone()
        }
    }

    pub fn kafka_options(&self) -> kafka::Options {
        kafka::Options {
            partitions: self.partitions,
            ..self.kafka.clone()
        }
    }
}
