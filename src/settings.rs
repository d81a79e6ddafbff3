//! Configuration: `config/default.toml` (built in, documenting every key), then the file given
//! with `--config`, then environment variables `TASKFOLD__SECTION__KEY`, then command-line flags.

use std::path::Path;

use serde::Deserialize;

use crate::log::{embedded, kafka};

/// The built-in defaults; the file is also the documentation of every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub log: LogSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub backend: Backend,
    pub partitions: u32,
    pub embedded: embedded::Options,
    pub kafka: kafka::Options,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Embedded,
    Kafka,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct Error(#[from] config::ConfigError);

impl Settings {
    /// The built-in defaults alone.
    pub fn defaults() -> &'static Settings {
        static DEFAULT_SETTINGS: std::sync::LazyLock<Settings> = std::sync::LazyLock::new(|| {
            Settings::load_layers(None, false)
                .expect("config/default.toml is valid (checked by a unit test)")
        });
        &DEFAULT_SETTINGS
    }

    /// Layers the defaults, `file` (if given) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        Self::load_layers(file, true)
    }

    fn load_layers(file: Option<&Path>, environment: bool) -> Result<Self, Error> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        if environment {
            builder = builder.add_source(
                config::Environment::with_prefix("TASKFOLD")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let settings = builder.build()?.try_deserialize()?;
        Ok(settings)
    }
}

impl LogSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_load() {
        let settings = Settings::load_layers(None, false).unwrap();
        assert_eq!(settings.log.backend, Backend::Embedded);
        assert_eq!(
            embedded::Options::default().partitions,
            settings.log.partitions
        );
        assert_eq!(
            kafka::Options::default().partitions,
            settings.log.partitions
        );
        assert!(embedded::Options::default().segment_bytes > 0);
    }

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taskfold.toml");
        std::fs::write(
            &file,
            "[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"b:9\"\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.log.backend, Backend::Kafka);
        assert_eq!(settings.log.kafka.brokers, "b:9");

        std::fs::write(&file, "[log.embedded]\npartitions = 3\n").unwrap();
        let error = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("partitions"), "{error}");
    }
}
