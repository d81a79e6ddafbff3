//! Task payloads, as each engine reads them. The JSON schemas in `schemas/` are the contract
//! with users and the one definition of what is valid: a payload is checked against its schema
//! first (every error listed, with its place), and only a valid one is read into these types.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use crate::auth::ScopeSet;
use crate::model::artifact::DEFAULT_LIVE_LOG_NAME;

static DOCKER_SCHEMA: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile(include_str!("../../schemas/docker-worker-payload.json")));
static SSH_SCHEMA: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile(include_str!("../../schemas/ssh-payload.json")));
static REST_SCHEMA: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile(include_str!("../../schemas/rest-payload.json")));
static SMTP_SCHEMA: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile(include_str!("../../schemas/smtp-payload.json")));
static REDIS_SCHEMA: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile(include_str!("../../schemas/redis-payload.json")));
static INPUT_SCHEMA: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile(include_str!("../../schemas/input-payload.json")));

/// The schemas that payload schemas refer to, by their `$id`: a field that may come from a
/// secret is defined once, in `schemas/secret-string.json`.
static SHARED_SCHEMAS: LazyLock<jsonschema::Registry<'static>> = LazyLock::new(|| {
    let secret_string = include_str!("../../schemas/secret-string.json");
    let secret_string: Value =
        serde_json::from_str(secret_string).expect("a payload schema is JSON");
    jsonschema::Registry::new()
        .add(
            "https://taskfold.dev/schemas/secret-string.json",
            jsonschema::Resource::from_contents(secret_string),
        )
        .and_then(jsonschema::RegistryBuilder::prepare)
        .expect("the shared payload schemas are valid")
});

fn compile(schema: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(schema).expect("a payload schema is JSON");
    jsonschema::options()
        .with_registry(&SHARED_SCHEMAS)
        .build(&schema)
        .expect("a payload schema is a valid JSON schema")
}

/// Why a payload cannot run, as lines for the task's log.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub Vec<String>);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

fn validate<T: serde::de::DeserializeOwned>(
    schema: &jsonschema::Validator,
    payload: &Value,
) -> Result<T, Invalid> {
    let errors: Vec<String> = schema
        .iter_errors(payload)
        .map(|error| {
            let place = error.instance_path().to_string();
            let place = if place.is_empty() { "/" } else { &place };
            format!("payload{place}: {error}")
        })
        .collect();
    if !errors.is_empty() {
        return Err(Invalid(errors));
    }
    serde_json::from_value(payload.clone()).map_err(|error| Invalid(vec![error.to_string()]))
}

/// docker-worker's payload (`schemas/docker-worker-payload.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerPayload {
    pub image: Image,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub max_run_time: u64,
    #[serde(default)]
    pub artifacts: BTreeMap<String, DockerArtifact>,
    #[serde(default)]
    pub cache: BTreeMap<String, String>,
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    #[serde(default)]
    pub on_exit_status: OnExitStatus,
    pub log: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Image {
    Name(String),
    Named { name: String },
}

impl Image {
    pub fn name(&self) -> &str {
        match self {
            Image::Name(name) | Image::Named { name } => name,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    File,
    Directory,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DockerArtifact {
    #[serde(rename = "type")]
    pub kind: PathKind,
    pub path: String,
    pub expires: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnExitStatus {
    #[serde(default)]
    pub retry: Vec<i64>,
    #[serde(default)]
    pub purge_caches: Vec<i64>,
}

/// The features this worker offers, and the task scope each needs (if any). Any other feature
/// of docker-worker's is refused when requested.
const OFFERED_FEATURES: &[(&str, Option<&str>)] = &[
    ("localLiveLog", None),
    ("artifacts", None),
    ("allowPtrace", Some("docker-worker:feature:allowPtrace")),
    // Like docker-worker, no scope: who may open a session is decided by the queue.
    ("interactive", None),
    // Like docker-worker's, no scope: the proxy signs with the task's own credentials.
    ("taskclusterProxy", None),
];

impl DockerPayload {
    /// Reads a payload, checking it against the schema, the features this worker offers and
    /// the scopes the task was given.
    pub fn read(payload: &Value, task_scopes: &ScopeSet) -> Result<DockerPayload, Invalid> {
        let payload: DockerPayload = validate(&DOCKER_SCHEMA, payload)?;
        let mut problems = Vec::new();
        for (feature, requested) in &payload.features {
            if !requested {
                continue;
            }
            match OFFERED_FEATURES.iter().find(|(name, _)| name == feature) {
                None => problems.push(format!(
                    "feature `{feature}` is not enabled on this worker (it offers {})",
                    OFFERED_FEATURES
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Some((_, Some(scope))) if !task_scopes.satisfies_scope(scope) => problems.push(
                    format!("feature `{feature}` needs the task scope `{scope}`"),
                ),
                Some(_) => {}
            }
        }
        for name in payload.cache.keys() {
            let scope = format!("docker-worker:cache:{name}");
            if !task_scopes.satisfies_scope(&scope) {
                problems.push(format!("cache `{name}` needs the task scope `{scope}`"));
            }
        }
        for name in payload.artifacts.keys() {
            if let Err(problem) = check_artifact_name(name) {
                problems.push(problem);
            }
        }
        if problems.is_empty() {
            Ok(payload)
        } else {
            Err(Invalid(problems))
        }
    }

    pub fn feature(&self, name: &str) -> bool {
        self.features.get(name).copied().unwrap_or(false)
    }
}

/// Refuses artifact names the queue would refuse only after the task ran (reference workers
/// §8.3: a `..` in a name once left a task stuck until its claim expired).
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|part| part == ".." || part == ".")
    {
        Err(format!(
            "artifact name `{name}` is not a valid artifact name"
        ))
    } else {
        Ok(())
    }
}

/// The live log's artifact name and its backing log's: `_backing` goes before the last
/// extension (`public/logs/live.log` → `public/logs/live_backing.log`), as docker-worker names
/// them.
pub fn log_names(live: Option<&str>) -> (String, String) {
    let live = live.unwrap_or(DEFAULT_LIVE_LOG_NAME).to_owned();
    let file_start = live.rfind('/').map_or(0, |slash| slash + 1);
    let backing = match live[file_start..].rfind('.') {
        Some(dot) => {
            let dot = file_start + dot;
            format!("{}_backing{}", &live[..dot], &live[dot..])
        }
        None => format!("{live}_backing"),
    };
    (live, backing)
}

/// The SSH engine's payload (`schemas/ssh-payload.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshPayload {
    pub target: String,
    pub script: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub max_run_time: u64,
    #[serde(default)]
    pub artifacts: Vec<SshArtifact>,
    #[serde(default)]
    pub features: SshFeatures,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SshFeatures {
    #[serde(default)]
    pub interactive: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SshArtifact {
    pub name: String,
    pub path: String,
}

impl SshPayload {
    pub fn read(payload: &Value) -> Result<SshPayload, Invalid> {
        let payload: SshPayload = validate(&SSH_SCHEMA, payload)?;
        let problems: Vec<String> = payload
            .artifacts
            .iter()
            .filter_map(|artifact| check_artifact_name(&artifact.name).err())
            .collect();
        if problems.is_empty() {
            Ok(payload)
        } else {
            Err(Invalid(problems))
        }
    }
}

/// A field that may hold a credential (`schemas/secret-string.json`): the string itself, or a
/// field of a secret, read when the task runs ([`super::secrets`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SecretString {
    Plain(String),
    Secret { secret: String, key: String },
}

/// Seconds a call (REST, SMTP, REDIS) may take when its payload does not say.
const DEFAULT_CALL_SECONDS: u64 = 60;

/// The REST engine's payload (`schemas/rest-payload.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestPayload {
    pub url: String,
    #[serde(default = "get")]
    pub method: String,
    pub data: Option<Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, SecretString>,
    #[serde(default)]
    pub cookies: BTreeMap<String, SecretString>,
    pub cacert: Option<String>,
    #[serde(rename = "expected_status_code")]
    pub expected_status_code: Option<ExpectedStatus>,
    #[serde(default = "default_call_seconds")]
    pub max_run_time: u64,
}

fn get() -> String {
    "GET".to_owned()
}

fn default_call_seconds() -> u64 {
    DEFAULT_CALL_SECONDS
}

/// `expected_status_code`: one status or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ExpectedStatus {
    One(u16),
    Any(Vec<u16>),
}

impl RestPayload {
    pub fn read(payload: &Value) -> Result<RestPayload, Invalid> {
        validate(&REST_SCHEMA, payload)
    }

    /// Whether the answer's status is one the payload expects (any 2xx when it names none).
    pub fn expects(&self, status: u16) -> bool {
        match &self.expected_status_code {
            None => (200..300).contains(&status),
            Some(ExpectedStatus::One(expected)) => status == *expected,
            Some(ExpectedStatus::Any(expected)) => expected.contains(&status),
        }
    }

    /// What `expected_status_code` asks for, for the log.
    pub fn expected(&self) -> String {
        match &self.expected_status_code {
            None => "2xx".to_owned(),
            Some(ExpectedStatus::One(expected)) => expected.to_string(),
            Some(ExpectedStatus::Any(expected)) => expected
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

/// The SMTP engine's payload (`schemas/smtp-payload.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct SmtpPayload {
    pub from: String,
    pub to: Recipients,
    pub subject: String,
    #[serde(default)]
    pub body: String,
    pub login: Option<SecretString>,
    pub password: Option<SecretString>,
    pub smtp_host: String,
    pub smtp_port: Option<u16>,
    #[serde(default = "yes")]
    pub use_tls: bool,
    #[serde(default = "default_call_seconds", rename = "maxRunTime")]
    pub max_run_time: u64,
}

fn yes() -> bool {
    true
}

/// `to`: one recipient or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Recipients {
    One(String),
    Several(Vec<String>),
}

impl Recipients {
    pub fn list(&self) -> &[String] {
        match self {
            Recipients::One(recipient) => std::slice::from_ref(recipient),
            Recipients::Several(recipients) => recipients,
        }
    }
}

impl SmtpPayload {
    pub fn read(payload: &Value) -> Result<SmtpPayload, Invalid> {
        validate(&SMTP_SCHEMA, payload)
    }

    /// The server's port: the submission port with STARTTLS, SMTP's own without.
    pub fn port(&self) -> u16 {
        self.smtp_port
            .unwrap_or(if self.use_tls { 587 } else { 25 })
    }
}

/// The REDIS engine's payload (`schemas/redis-payload.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct RedisPayload {
    pub host: String,
    #[serde(default = "redis_port")]
    pub port: u16,
    pub command: String,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default = "default_call_seconds", rename = "maxRunTime")]
    pub max_run_time: u64,
}

fn redis_port() -> u16 {
    6379
}

impl RedisPayload {
    pub fn read(payload: &Value) -> Result<RedisPayload, Invalid> {
        validate(&REDIS_SCHEMA, payload)
    }

    /// The command's words and its arguments, as the strings sent to the server.
    pub fn words(&self) -> Vec<String> {
        let command = self.command.split_whitespace().map(str::to_owned);
        let args = self.args.iter().map(|arg| match arg {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        command.chain(args).collect()
    }
}

/// The INPUT engine's payload (`schemas/input-payload.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct InputPayload {
    pub request: String,
    pub reference: Option<Value>,
    /// Minutes; without it, the request waits until the deadline.
    pub timeout: Option<f64>,
}

impl InputPayload {
    pub fn read(payload: &Value) -> Result<InputPayload, Invalid> {
        validate(&INPUT_SCHEMA, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scopes(scopes: &[&str]) -> ScopeSet {
        ScopeSet::new(scopes.iter().copied())
    }

    #[test]
    fn a_minimal_payload_reads() {
        let payload = DockerPayload::read(
            &json!({"image": "busybox", "maxRunTime": 60, "command": ["true"]}),
            &scopes(&[]),
        )
        .unwrap();
        assert_eq!(payload.image.name(), "busybox");
        let named = DockerPayload::read(
            &json!({"image": {"type": "docker-image", "name": "x:1"}, "maxRunTime": 1}),
            &scopes(&[]),
        )
        .unwrap();
        assert_eq!(named.image.name(), "x:1");
    }

    #[test]
    fn every_schema_error_is_listed_with_its_place() {
        let Invalid(errors) = DockerPayload::read(
            &json!({"image": 5, "maxRunTime": 0, "bogus": true, "env": {"A": 1}}),
            &scopes(&[]),
        )
        .unwrap_err();
        let text = errors.join("\n");
        for expected in [
            "payload/image",
            "payload/maxRunTime",
            "bogus",
            "payload/env/A",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
    }

    #[test]
    fn features_and_caches_are_checked_against_the_worker_and_the_scopes() {
        let payload = json!({
            "image": "i", "maxRunTime": 1,
            "features": {"interactive": true, "allowPtrace": true, "dind": true},
            "cache": {"cargo": "/cache"}
        });
        let Invalid(errors) = DockerPayload::read(&payload, &scopes(&[])).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("`allowPtrace` needs the task scope"));
        assert!(errors[1].contains("`dind` is not enabled"));
        assert!(errors[2].contains("docker-worker:cache:cargo"));
        let allowed = scopes(&["docker-worker:cache:*", "docker-worker:feature:allowPtrace"]);
        let payload = json!({
            "image": "i", "maxRunTime": 1,
            "features": {"allowPtrace": true}, "cache": {"cargo": "/cache"}
        });
        assert!(DockerPayload::read(&payload, &allowed).is_ok());
        let unknown = json!({"image": "i", "maxRunTime": 1, "features": {"teleport": true}});
        assert!(DockerPayload::read(&unknown, &allowed).is_err());
    }

    #[test]
    fn artifact_names_are_checked_before_running() {
        let payload = json!({
            "image": "i", "maxRunTime": 1,
            "artifacts": {"public/../x": {"type": "file", "path": "/x"}}
        });
        assert!(DockerPayload::read(&payload, &scopes(&[])).is_err());
    }

    #[test]
    fn backing_log_names() {
        assert_eq!(
            log_names(None),
            (
                "public/logs/live.log".to_owned(),
                "public/logs/live_backing.log".to_owned()
            )
        );
        assert_eq!(
            log_names(Some("apple/banana.log.txt")).1,
            "apple/banana.log_backing.txt"
        );
        assert_eq!(log_names(Some("a.b/log")).1, "a.b/log_backing");
    }

    #[test]
    fn each_schema_names_the_engine_that_reads_it() {
        use crate::worker::EngineKind;
        let schemas = [
            (
                include_str!("../../schemas/docker-worker-payload.json"),
                EngineKind::Docker,
            ),
            (
                include_str!("../../schemas/ssh-payload.json"),
                EngineKind::Ssh,
            ),
            (
                include_str!("../../schemas/rest-payload.json"),
                EngineKind::Rest,
            ),
            (
                include_str!("../../schemas/smtp-payload.json"),
                EngineKind::Smtp,
            ),
            (
                include_str!("../../schemas/redis-payload.json"),
                EngineKind::Redis,
            ),
            (
                include_str!("../../schemas/input-payload.json"),
                EngineKind::Input,
            ),
        ];
        for (schema, kind) in schemas {
            let schema: Value = serde_json::from_str(schema).unwrap();
            assert_eq!(schema["properties"]["kind"]["const"], kind.name());
        }
    }

    #[test]
    fn secret_strings_are_a_string_or_a_secret_s_key() {
        let read =
            |headers: Value| RestPayload::read(&json!({"url": "http://x", "headers": headers}));
        let payload = read(json!({"A": "plain", "B": {"secret": "s", "key": "k"}})).unwrap();
        assert!(matches!(&payload.headers["A"], SecretString::Plain(text) if text == "plain"));
        assert!(matches!(
            &payload.headers["B"],
            SecretString::Secret { secret, key } if secret == "s" && key == "k"
        ));
        for wrong in [
            json!({"A": 1}),
            json!({"A": {"secret": "s"}}),
            json!({"A": {"secret": "s", "key": "k", "x": 1}}),
        ] {
            assert!(read(wrong.clone()).is_err(), "{wrong}");
        }
    }

    #[test]
    fn ssh_payloads() {
        let payload = SshPayload::read(&json!({
            "target": "build-host", "script": "echo hi", "maxRunTime": 5,
            "artifacts": [{"name": "public/out.txt", "path": "/tmp/out.txt", "type": "file"}]
        }))
        .unwrap();
        assert_eq!(payload.artifacts[0].name, "public/out.txt");
        assert!(SshPayload::read(&json!({"target": "h", "script": "x"})).is_err());
        assert!(
            SshPayload::read(
                &json!({"target": "h", "script": "x", "maxRunTime": 1, "host": "10.0.0.1"})
            )
            .is_err()
        );
    }
}
