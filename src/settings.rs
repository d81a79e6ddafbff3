//! Configuration: `config/default.toml` (built in, documenting every key), then the file given
//! with `--config`, then environment variables `TASKFOLD__SECTION__KEY`, then command-line flags.
//! A part that owns its settings defines their types itself (the log's are `log::Settings`);
//! the sections here are read into them.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Client, Role};

/// The built-in defaults; the file is also the documentation of every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub log: crate::log::Settings,
    pub queue: QueueSettings,
    pub api: ApiSettings,
    pub auth: AuthSettings,
    pub worker: WorkerSettings,
    pub events: EventsSettings,
    pub kafka: KafkaAlias,
    pub sessions: SessionSettings,
    pub metrics: MetricsSettings,
    pub blobs: BlobSettings,
    pub cluster: crate::engine::cluster::Settings,
    pub store: StoreSettings,
    pub console: ConsoleSettings,
}

/// The partition stores (`[store]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// The block cache of the partition stores, all partitions together, in MiB.
    pub cache_mb: u64,
}

/// Prometheus metrics (`[metrics]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Task queues labelled by name; the others are counted as `other`.
    pub max_task_queues: usize,
}

/// The blob store of `s3` artifacts (`[blobs]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSettings {
    /// The base URL of blob URLs, an origin other than the API's; empty: the root URL.
    pub public_url: String,
    /// Largest upload accepted.
    pub max_upload_bytes: u64,
    /// Where blobs live: files under the data directory, or an S3-compatible store.
    pub backend: crate::blobs::Backend,
    /// `[blobs.s3]`, for `backend = "s3"`.
    pub s3: crate::blobs::S3Settings,
}

/// Interactive sessions on the queue (`[sessions]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub ticket_seconds: u64,
    pub max_per_run: usize,
    pub relay_buffer_frames: usize,
    pub worker_attach_seconds: u64,
    pub xterm_dir: std::path::PathBuf,
}

/// The web console (`[console]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve the console's files from this directory instead of the built-in ones (empty: the
    /// built-in ones).
    pub dir: std::path::PathBuf,
}

/// Exchange messages and their listeners (`[events]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    pub resume_messages: usize,
    pub listener_buffer_messages: usize,
    pub listener_flush_ms: u64,
    pub kafka_publish: bool,
    pub kafka_topic_prefix: String,
    /// The AMQP broker exchange messages also go to; empty: none.
    pub amqp_url: String,
    pub amqp_exchange_prefix: String,
}

/// `[kafka] brokers`: the brokers of `[log.kafka]` under a shorter name; when set, it wins.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaAlias {
    pub brokers: String,
}

/// `taskfold worker` (`[worker]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub ssh: SshSettings,
    pub interactive: InteractiveSettings,
    pub proxy: ProxySettings,
}

/// taskcluster-proxy for Docker tasks that ask for it (`[worker.proxy]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// The address each run's proxy listens on, and the host of `TASKCLUSTER_PROXY_URL`.
    pub listen: String,
    /// The Docker network mode of a container whose task has the proxy; empty: Docker's
    /// default.
    pub network: String,
}

/// Interactive sessions on the worker (`[worker.interactive]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractiveSettings {
    /// Every interactive run: after the later of the command's exit and the last session's end.
    pub linger_seconds: u64,
    /// Docker tasks (docker-worker's payload): at least this long after the container started,
    /// with or without a session (docker-worker's `minTime`).
    pub docker_min_seconds: u64,
    /// Docker tasks: this long after the last session ended (docker-worker's
    /// `expirationAfterSession`).
    pub docker_after_session_seconds: u64,
    pub busybox: std::path::PathBuf,
}

/// The SSH engine (`[worker.ssh]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// Seconds to wait for a target's SSH server to answer.
    pub connect_timeout_seconds: u64,
    /// `[[worker.ssh.targets]]`: the hosts SSH payloads may name.
    pub targets: Vec<SshTarget>,
}

/// A host SSH tasks run on, named by payloads (which never give an address themselves).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTarget {
    pub name: String,
    pub host: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    pub user: String,
    /// The host's public key, `<type> <base64>` as in `known_hosts`; any other key is refused.
    pub host_key: String,
    /// The private key the worker logs in with.
    pub identity_file: std::path::PathBuf,
}

fn default_ssh_port() -> u16 {
    22
}

/// The queue's rules and the engine that keeps them (`[queue]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub claim_timeout_seconds: u64,
    pub max_deadline_days: u64,
    pub snapshot_every_events: u64,
}

/// The HTTP API (`[api]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub claim_work_timeout_seconds: u64,
    pub max_body_bytes: usize,
    pub max_waiting_claims: usize,
    /// Largest task definition, as its compact JSON text.
    pub max_task_bytes: usize,
}

/// Who may call the API (`[auth]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub queue_access_token: String,
    /// The key the access tokens of API-made clients are derived with (see the default
    /// configuration's notes); filled in at start when empty.
    pub token_key: String,
    /// `[[auth.clients]]`: static clients (`client_id`, `access_token`, `scopes`, optional
    /// `expires`, `disabled`).
    pub clients: Vec<Client>,
    /// `[[auth.roles]]`: roles (`role_id`, `scopes`).
    pub roles: Vec<Role>,
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
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if !settings.kafka.brokers.is_empty() {
            settings.log.kafka.brokers = settings.kafka.brokers.clone();
        }
        Ok(settings)
    }
}

impl Settings {
    /// What the engine needs of the settings.
    pub fn engine_settings(&self) -> crate::engine::EngineSettings {
        crate::engine::EngineSettings {
            task: self.queue.task_settings(),
            flush_every_events: self.queue.snapshot_every_events,
            store_cache_bytes: self.store.cache_mb << 20,
            clock: crate::engine::clock::Clock::System,
            log_retention: self.log.retention(),
            cluster: (self.cluster.enabled() && self.log.backend == crate::log::Backend::Kafka)
                .then(|| (self.cluster.clone(), self.log.kafka_options())),
            bus: crate::projections::bus::BusOptions {
                resume_messages: self.events.resume_messages,
                listener_buffer_messages: self.events.listener_buffer_messages,
                listener_flush: std::time::Duration::from_millis(self.events.listener_flush_ms),
            },
        }
    }
}

impl QueueSettings {
    /// The task decisions' knobs.
    pub fn task_settings(&self) -> crate::model::task::Settings {
        crate::model::task::Settings {
            claim_timeout: Duration::from_secs(self.claim_timeout_seconds),
            max_deadline: Duration::from_secs(self.max_deadline_days.saturating_mul(86_400)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Backend, embedded, kafka};

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
        assert_eq!(
            settings.queue.task_settings(),
            crate::model::task::Settings::default()
        );
        assert_eq!(settings.api.claim_work_timeout_seconds, 20);
        assert!(settings.auth.clients.is_empty());
        let anonymous = &settings.auth.roles[0];
        assert_eq!(anonymous.role_id, "anonymous");
        assert!(anonymous.scopes.contains(&"queue:status:*".to_owned()));
    }

    #[test]
    fn clients_and_roles_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taskfold.toml");
        std::fs::write(
            &file,
            "[[auth.clients]]\nclient_id = \"project/ci\"\naccess_token = \"secret\"\n\
             scopes = [\"queue:status:*\"]\nexpires = \"2030-01-01T00:00:00Z\"\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        let client = settings.auth.clients[0].clone();
        assert_eq!(client.client_id, "project/ci");
        assert_eq!(client.scopes, ["queue:status:*"]);
        assert!(!client.disabled);
        assert_eq!(
            client.expires,
            Some("2030-01-01T00:00:00.000Z".parse().unwrap())
        );
        // The default roles stay when a file only adds clients, and go when it sets roles.
        assert_eq!(settings.auth.roles[0].role_id, "anonymous");
        std::fs::write(&file, "[[auth.roles]]\nrole_id = \"x\"\nscopes = []\n").unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        let roles: Vec<&str> = settings
            .auth
            .roles
            .iter()
            .map(|r| r.role_id.as_str())
            .collect();
        assert_eq!(roles, ["x"]);
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

    #[test]
    fn the_blob_backend_is_files_unless_set_to_s3() {
        let defaults = Settings::load_layers(None, false).unwrap();
        assert_eq!(defaults.blobs.backend, crate::blobs::Backend::Files);
        assert_eq!(defaults.blobs.s3.region, "us-east-1");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taskfold.toml");
        std::fs::write(
            &file,
            "[blobs]\nbackend = \"s3\"\n[blobs.s3]\nbucket = \"b\"\nprefix = \"tf/\"\n",
        )
        .unwrap();
        let settings = Settings::load_layers(Some(&file), false).unwrap();
        assert_eq!(settings.blobs.backend, crate::blobs::Backend::S3);
        assert_eq!(
            (
                settings.blobs.s3.bucket.as_str(),
                settings.blobs.s3.prefix.as_str()
            ),
            ("b", "tf/")
        );
        std::fs::write(&file, "[blobs]\nbackend = \"gcs\"\n").unwrap();
        let error = Settings::load_layers(Some(&file), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("gcs"), "{error}");
    }
}
