//! The task definition in the form Taskcluster stores and returns it (`task.yml`): every field
//! present, defaults applied, dates normalized to milliseconds; and the `createTask` request
//! (`create-task-request.yml`) with the normalization that turns one into the other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{ApiError, ErrorCode, Json, Slugid, Timestamp};

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinition {
    pub provisioner_id: String,
    pub worker_type: String,
    /// `<provisionerId>/<workerType>`; the two legacy halves are kept beside it because every
    /// response carries all three.
    pub task_queue_id: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: Slugid,
    pub dependencies: Vec<Slugid>,
    pub requires: Requires,
    pub routes: Vec<String>,
    pub priority: Priority,
    pub retries: u32,
    pub created: Timestamp,
    pub deadline: Timestamp,
    pub expires: Timestamp,
    pub scopes: Vec<String>,
    pub payload: Json,
    pub metadata: Metadata,
    pub tags: BTreeMap<String, String>,
    pub extra: Json,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub source: String,
}

/// When a task with dependencies becomes pending.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Requires {
    /// Every dependency resolved `completed`.
    #[default]
    AllCompleted,
    /// Every dependency resolved, whatever the outcome.
    AllResolved,
}

/// Task priority; the pending queue orders by it (highest first), then by age.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    Highest,
    VeryHigh,
    High,
    Medium,
    Low,
    VeryLow,
    #[default]
    Lowest,
}

impl Priority {
    pub const ALL: [Priority; 7] = [
        Priority::Highest,
        Priority::VeryHigh,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::VeryLow,
        Priority::Lowest,
    ];

    /// Taskcluster's numeric rank: highest = 7 … lowest = 1.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Highest => 7,
            Priority::VeryHigh => 6,
            Priority::High => 5,
            Priority::Medium => 4,
            Priority::Low => 3,
            Priority::VeryLow => 2,
            Priority::Lowest => 1,
        }
    }
}

/// How far `created` may be from the server's clock, and the slack on the deadline cap.
const CLOCK_DRIFT_MILLIS: i64 = 15 * 60 * 1000;

/// The default bound on how far in the future a deadline may be (`MAX_TASK_DEADLINE_DAYS`).
pub const DEFAULT_MAX_DEADLINE: Duration = Duration::from_secs(5 * 24 * 60 * 60);

/// Schema limits of `task.yml`, `task-metadata.yml` and `constants.yml`.
const MAX_ID_CHARS: usize = 38;
const MAX_PROJECT_ID_CHARS: usize = 500;
const MAX_DEPENDENCIES: usize = 10_000;
const MAX_ROUTES: usize = 64;
const MAX_ROUTE_CHARS: usize = 249;
const MAX_RETRIES: i64 = 49;
const MAX_TAG_CHARS: usize = 4096;
const MAX_NAME_CHARS: usize = 255;
const MAX_DESCRIPTION_CHARS: usize = 32_768;
const MAX_OWNER_CHARS: usize = 255;
const MAX_SOURCE_CHARS: usize = 4096;

/// The body of `createTask` as a client sends it: the queue identifiers in either form, and
/// optional fields that [`CreateTaskRequest::into_definition`] fills with Taskcluster's
/// defaults. Strings are checked there rather than typed here, so that a bad value gets an
/// error naming its field.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTaskRequest {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub provisioner_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub worker_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_queue_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduler_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub project_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_group_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub dependencies: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub requires: Option<Requires>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub routes: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<Priority>,
    /// Wider than the schema's 0..49 so that a negative value gets the range message.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub retries: Option<i64>,
    pub created: Timestamp,
    pub deadline: Timestamp,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<Timestamp>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub scopes: Option<Vec<String>>,
    /// Read straight into its compact text, never held as a tree (see [`Json`]).
    #[serde(deserialize_with = "Json::deserialize_object")]
    pub payload: Json,
    pub metadata: Metadata,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "present_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub extra: Option<Json>,
}

/// An optional field that, when present, must hold a value: the schema allows leaving a field
/// out but not `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// [`present`] for a JSON object kept as text.
fn present_object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize_object(deserializer).map(Some)
}

impl CreateTaskRequest {
    /// Reads a request body's JSON text; a body of the wrong shape is Taskcluster's schema
    /// failure.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|error| {
            ApiError::new(
                ErrorCode::InputValidationError,
                format!("the request does not match create-task-request: {error}"),
            )
        })
    }

    /// Steps 1–3 of `createTask` (reference §3.2): the schema's patterns and limits (400
    /// `InputValidationError`), then the reconciliation of `provisionerId`/`workerType` with
    /// `taskQueueId` (400 `InputError`), then every default. The result is what the caller is
    /// authorized against; [`TaskDefinition::check_new`] does the clock-dependent rest.
    pub fn into_definition(self, task_id: Slugid) -> Result<TaskDefinition, ApiError> {
        let mut problems = Problems::default();
        if let Some(provisioner_id) = &self.provisioner_id {
            problems.check(
                is_identifier(provisioner_id, MAX_ID_CHARS),
                "provisionerId",
                "must match `^[a-zA-Z0-9-_]{1,38}$`",
            );
        }
        if let Some(worker_type) = &self.worker_type {
            problems.check(
                is_worker_type(worker_type),
                "workerType",
                "must match `^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`",
            );
        }
        if let Some(task_queue_id) = &self.task_queue_id {
            problems.check(
                split_task_queue_id(task_queue_id).is_some(),
                "taskQueueId",
                "must match `^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`",
            );
        }
        if let Some(scheduler_id) = &self.scheduler_id {
            problems.check(
                is_identifier(scheduler_id, MAX_ID_CHARS),
                "schedulerId",
                "must be 1 to 38 characters of `[a-zA-Z0-9-_]`",
            );
        }
        if let Some(project_id) = &self.project_id {
            let length = project_id.chars().count();
            problems.check(
                (1..=MAX_PROJECT_ID_CHARS).contains(&length)
                    && project_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')),
                "projectId",
                "must be 1 to 500 characters of `[a-zA-Z0-9._/-]`",
            );
        }
        let task_group_id = match &self.task_group_id {
            None => Some(task_id),
            Some(text) => {
                let parsed = text.parse::<Slugid>().ok();
                problems.check(parsed.is_some(), "taskGroupId", "must be a slugid");
                parsed
            }
        };
        let mut dependencies = Vec::new();
        if let Some(texts) = &self.dependencies {
            problems.check(
                texts.len() <= MAX_DEPENDENCIES,
                "dependencies",
                "must have at most 10000 items",
            );
            let mut seen = BTreeSet::new();
            for (index, text) in texts.iter().enumerate() {
                match text.parse::<Slugid>() {
                    Ok(dependency) => {
                        problems.check(
                            seen.insert(dependency),
                            &format!("dependencies[{index}]"),
                            "must not repeat an earlier item",
                        );
                        dependencies.push(dependency);
                    }
                    Err(_) => problems.add(&format!("dependencies[{index}]"), "must be a slugid"),
                }
            }
        }
        if let Some(routes) = &self.routes {
            problems.check(
                routes.len() <= MAX_ROUTES,
                "routes",
                "must have at most 64 items",
            );
            let mut seen = BTreeSet::new();
            for (index, route) in routes.iter().enumerate() {
                let field = format!("routes[{index}]");
                problems.check(
                    (1..=MAX_ROUTE_CHARS).contains(&route.chars().count()),
                    &field,
                    "must be 1 to 249 characters long",
                );
                problems.check(
                    seen.insert(route),
                    &field,
                    "must not repeat an earlier item",
                );
            }
        }
        if let Some(retries) = self.retries {
            problems.check(
                (0..=MAX_RETRIES).contains(&retries),
                "retries",
                "must be an integer from 0 to 49",
            );
        }
        if let Some(scopes) = &self.scopes {
            for (index, scope) in scopes.iter().enumerate() {
                problems.check(
                    scope.chars().all(|c| (' '..='~').contains(&c)),
                    &format!("scopes[{index}]"),
                    "must be printable ASCII",
                );
            }
        }
        let metadata = &self.metadata;
        for (field, value, limit) in [
            ("metadata.name", &metadata.name, MAX_NAME_CHARS),
            (
                "metadata.description",
                &metadata.description,
                MAX_DESCRIPTION_CHARS,
            ),
            ("metadata.owner", &metadata.owner, MAX_OWNER_CHARS),
            ("metadata.source", &metadata.source, MAX_SOURCE_CHARS),
        ] {
            problems.check(
                value.chars().count() <= limit,
                field,
                &format!("must be at most {limit} characters long"),
            );
        }
        problems.check(
            ["http://", "https://", "ssh://", "git@"]
                .iter()
                .any(|prefix| metadata.source.starts_with(prefix)),
            "metadata.source",
            "must start with `http://`, `https://`, `ssh://` or `git@`",
        );
        for (key, value) in self.tags.iter().flatten() {
            problems.check(
                value.chars().count() <= MAX_TAG_CHARS,
                &format!("tags.{key}"),
                "must be at most 4096 characters long",
            );
        }
        problems.into_result()?;

        let (provisioner_id, worker_type, task_queue_id) =
            reconcile_task_queue_id(self.provisioner_id, self.worker_type, self.task_queue_id)?;
        let deadline = self.deadline;
        Ok(TaskDefinition {
            provisioner_id,
            worker_type,
            task_queue_id,
            scheduler_id: self.scheduler_id.unwrap_or_else(|| "-".into()),
            project_id: self.project_id.unwrap_or_else(|| "none".into()),
            task_group_id: task_group_id.unwrap_or(task_id),
            dependencies,
            requires: self.requires.unwrap_or_default(),
            routes: self.routes.unwrap_or_default(),
            priority: self.priority.unwrap_or_default(),
            retries: self.retries.map_or(5, |retries| retries as u32),
            created: self.created,
            deadline,
            expires: self.expires.unwrap_or_else(|| deadline.plus_one_year()),
            scopes: self.scopes.unwrap_or_default(),
            payload: self.payload,
            metadata: self.metadata,
            tags: self.tags.unwrap_or_default(),
            extra: self.extra.unwrap_or_default(),
        })
    }
}

impl TaskDefinition {
    /// Whether the payload asks for interactive sessions (`features.interactive: true`, in
    /// docker-worker's payload and the SSH payload alike).
    pub fn interactive(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(self.payload.as_str())
            .is_ok_and(|payload| payload["features"]["interactive"] == true)
    }

    /// The bytes of the definition's compact JSON text (as kept, and as `task` returns it
    /// but for the indentation), counted without writing the text out.
    pub fn encoded_len(&self) -> usize {
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        match serde_json::to_writer(&mut counter, self) {
            Ok(()) => counter.0,
            // Only a writer's error could stop it, and counting has none.
            Err(_) => usize::MAX,
        }
    }

    /// Refuses a definition of more than `max_bytes` (`[api] max_task_bytes`): 413
    /// `InputTooLarge`, naming the limit.
    pub fn check_size(&self, max_bytes: usize) -> Result<(), ApiError> {
        let bytes = self.encoded_len();
        if bytes <= max_bytes {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::InputTooLarge,
            format!(
                "the task definition takes {bytes} bytes as JSON, more than the {max_bytes} \
                 bytes this queue accepts for one task (`[api] max_task_bytes`)"
            ),
        )
        .with_details(serde_json::json!({ "taskBytes": bytes, "maxTaskBytes": max_bytes })))
    }

    /// The whole normalization of a `createTask` body (reference §3.2 steps 1–6) for callers
    /// that authorize elsewhere or not at all.
    pub fn from_request(
        task_id: Slugid,
        request: CreateTaskRequest,
        now: Timestamp,
        max_deadline: Duration,
    ) -> Result<Self, ApiError> {
        let definition = request.into_definition(task_id)?;
        definition.check_new(now, max_deadline)?;
        Ok(definition)
    }

    /// Steps 5–6 of `createTask`: the checks that need the clock, in Taskcluster's order and
    /// with its messages (400 `InputError`), then the refusal of scopes ending in `**`.
    pub fn check_new(&self, now: Timestamp, max_deadline: Duration) -> Result<(), ApiError> {
        let (created, deadline, expires) = (self.created, self.deadline, self.expires);
        let date_error = |message: String, details: serde_json::Value| {
            Err(ApiError::input(message).with_details(details))
        };
        if created < now.plus_millis(-CLOCK_DRIFT_MILLIS) {
            return date_error(
                "`created` cannot be in the past (max 15min drift)".into(),
                serde_json::json!({ "created": created }),
            );
        }
        if created > now.plus_millis(CLOCK_DRIFT_MILLIS) {
            return date_error(
                "`created` cannot be in the future (max 15min drift)".into(),
                serde_json::json!({ "created": created }),
            );
        }
        if created > deadline {
            // Taskcluster's wording, backwards as it is (reference §15.11).
            return date_error(
                "`deadline` cannot be later than `created`".into(),
                serde_json::json!({ "created": created, "deadline": deadline }),
            );
        }
        if deadline < now {
            return date_error(
                "`deadline` cannot be in the past".into(),
                serde_json::json!({ "deadline": deadline }),
            );
        }
        let max_deadline_millis = i64::try_from(max_deadline.as_millis()).unwrap_or(i64::MAX);
        if deadline
            > now
                .plus_millis(max_deadline_millis)
                .plus_millis(CLOCK_DRIFT_MILLIS)
        {
            return date_error(
                format!(
                    "`deadline` cannot be more than {} into the future",
                    describe_duration(max_deadline)
                ),
                serde_json::json!({ "deadline": deadline }),
            );
        }
        if expires < deadline {
            return date_error(
                "`expires` cannot be before `deadline`".into(),
                serde_json::json!({ "deadline": deadline, "expires": expires }),
            );
        }
        if self.scopes.iter().any(|scope| scope.ends_with("**")) {
            return Err(ApiError::input("scopes must not end with `**`"));
        }
        Ok(())
    }
}

/// Schema problems, gathered so that one answer names all of them.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, field: &str, rule: &str) {
        self.0.push(format!("`{field}` {rule}"));
    }

    fn check(&mut self, ok: bool, field: &str, rule: &str) {
        if !ok {
            self.add(field, rule);
        }
    }

    fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::InputValidationError,
            format!(
                "the request does not match create-task-request:\n{}",
                self.0.join("\n")
            ),
        ))
    }
}

/// Taskcluster accepts the legacy pair, the `taskQueueId`, or both if they agree; a lone half
/// beside a `taskQueueId` is overwritten by the split id, as Taskcluster does.
fn reconcile_task_queue_id(
    provisioner_id: Option<String>,
    worker_type: Option<String>,
    task_queue_id: Option<String>,
) -> Result<(String, String, String), ApiError> {
    match (provisioner_id, worker_type, task_queue_id) {
        (Some(provisioner_id), Some(worker_type), Some(task_queue_id)) => {
            if format!("{provisioner_id}/{worker_type}") != task_queue_id {
                return Err(
                    ApiError::input("taskQueueId must match \"provisionerId/workerType\"")
                        .with_details(serde_json::json!({
                            "provisionerId": provisioner_id,
                            "workerType": worker_type,
                            "taskQueueId": task_queue_id,
                        })),
                );
            }
            Ok((provisioner_id, worker_type, task_queue_id))
        }
        (Some(provisioner_id), Some(worker_type), None) => {
            let task_queue_id = format!("{provisioner_id}/{worker_type}");
            Ok((provisioner_id, worker_type, task_queue_id))
        }
        (_, _, Some(task_queue_id)) => {
            let (provisioner_id, worker_type) = split_task_queue_id(&task_queue_id)
                .map(|(left, right)| (left.to_owned(), right.to_owned()))
                .ok_or_else(|| {
                    ApiError::input("taskQueueId must be \"provisionerId/workerType\"")
                })?;
            Ok((provisioner_id, worker_type, task_queue_id))
        }
        _ => Err(ApiError::input(
            "at least a provisionerId and a workerType or a taskQueueId must be provided",
        )),
    }
}

/// `<provisionerId>/<workerType>`, if the id has that form.
pub fn split_task_queue_id(task_queue_id: &str) -> Option<(&str, &str)> {
    let (provisioner_id, worker_type) = task_queue_id.split_once('/')?;
    (is_identifier(provisioner_id, MAX_ID_CHARS) && is_worker_type(worker_type))
        .then_some((provisioner_id, worker_type))
}

/// Taskcluster's identifier pattern (provisionerId, workerGroup, workerId): `^[a-zA-Z0-9-_]{1,38}$`.
pub fn is_worker_identifier(text: &str) -> bool {
    is_identifier(text, MAX_ID_CHARS)
}

/// `^[a-zA-Z0-9-_]{1,max}$`.
fn is_identifier(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`.
fn is_worker_type(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= MAX_ID_CHARS
        && first.is_ascii_lowercase()
        && *last != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn describe_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds % 86_400 {
        0 if seconds == 86_400 => "1 day".into(),
        0 => format!("{} days", seconds / 86_400),
        _ => format!("{seconds} seconds"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A realistic definition, about 1 KiB encoded, as a docker-worker build task would have.
    pub fn sample_definition(task_group_id: Slugid) -> TaskDefinition {
        let created: Timestamp = "2026-11-22T10:00:00.000Z".parse().unwrap();
        TaskDefinition {
            provisioner_id: "proj-taskfold".into(),
            worker_type: "linux-build".into(),
            task_queue_id: "proj-taskfold/linux-build".into(),
            scheduler_id: "-".into(),
            project_id: "none".into(),
            task_group_id,
            dependencies: vec![],
            requires: Requires::AllCompleted,
            routes: vec!["index.project.taskfold.latest".into()],
            priority: Priority::Lowest,
            retries: 5,
            created,
            deadline: created.plus_millis(86_400_000),
            expires: created.plus_millis(365 * 86_400_000),
            scopes: vec![],
            payload: Json::from_value(
                &serde_json::json!({"image": "debian:12", "command": ["true"], "maxRunTime": 600}),
            ),
            metadata: Metadata {
                name: "build".into(),
                description: "compile".into(),
                owner: "dev@example.com".into(),
                source: "https://example.com/repo".into(),
            },
            tags: BTreeMap::new(),
            extra: Json::empty_object(),
        }
    }

    #[test]
    fn json_uses_taskcluster_field_names() {
        let id = Slugid::nice();
        let json = serde_json::to_value(sample_definition(id)).unwrap();
        assert_eq!(json["taskQueueId"], "proj-taskfold/linux-build");
        assert_eq!(json["taskGroupId"], id.to_string());
        assert_eq!(json["priority"], "lowest");
        assert_eq!(json["requires"], "all-completed");
        assert_eq!(json["created"], "2026-11-22T10:00:00.000Z");
        let back: TaskDefinition = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample_definition(id));
    }

    fn task_id() -> Slugid {
        "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap()
    }

    fn now() -> Timestamp {
        "2026-11-22T10:00:00.000Z".parse().unwrap()
    }

    /// The smallest body Taskcluster accepts.
    fn minimal_body() -> serde_json::Value {
        serde_json::json!({
            "taskQueueId": "proj-taskfold/linux-build",
            "created": "2026-11-22T10:00:00Z",
            "deadline": "2026-11-23T10:00:00.5+00:00",
            "payload": {"command": ["true"], "image": "debian:12"},
            "metadata": {
                "name": "build", "description": "compile", "owner": "dev@example.com",
                "source": "https://example.com/repo",
            },
        })
    }

    fn with(mut body: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
        body[key] = value;
        body
    }

    fn without(mut body: serde_json::Value, key: &str) -> serde_json::Value {
        body.as_object_mut().unwrap().remove(key);
        body
    }

    fn normalize(body: serde_json::Value) -> Result<TaskDefinition, ApiError> {
        let request = CreateTaskRequest::from_json(body.to_string().as_bytes())?;
        TaskDefinition::from_request(task_id(), request, now(), DEFAULT_MAX_DEADLINE)
    }

    fn code_and_message(body: serde_json::Value) -> (ErrorCode, String) {
        let error = normalize(body).unwrap_err();
        (error.code, error.message)
    }

    #[test]
    fn a_minimal_request_gets_taskclusters_defaults() {
        let definition = normalize(minimal_body()).unwrap();
        let json = serde_json::to_value(&definition).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "provisionerId": "proj-taskfold",
                "workerType": "linux-build",
                "taskQueueId": "proj-taskfold/linux-build",
                "schedulerId": "-",
                "projectId": "none",
                "taskGroupId": "fN1SbArXTPSVFNUvaOlinQ",
                "dependencies": [],
                "requires": "all-completed",
                "routes": [],
                "priority": "lowest",
                "retries": 5,
                "created": "2026-11-22T10:00:00.000Z",
                "deadline": "2026-11-23T10:00:00.500Z",
                "expires": "2027-11-23T10:00:00.500Z",
                "scopes": [],
                "payload": {"command": ["true"], "image": "debian:12"},
                "metadata": {
                    "name": "build", "description": "compile", "owner": "dev@example.com",
                    "source": "https://example.com/repo",
                },
                "tags": {},
                "extra": {},
            })
        );
    }

    #[test]
    fn given_fields_are_kept() {
        let body = serde_json::json!({
            "provisionerId": "p", "workerType": "w", "schedulerId": "taskcluster-github",
            "projectId": "my/project", "taskGroupId": "fN1SbArXTPSVFNUvaOlinQ",
            "dependencies": ["fN1SbArXTPSVFNUvaOlinQ"], "requires": "all-resolved",
            "routes": ["index.a.b"], "priority": "very-high", "retries": 0,
            "created": "2026-11-22T10:00:00Z", "deadline": "2026-11-22T11:00:00Z",
            "expires": "2026-11-22T11:00:00Z", "scopes": ["secrets:get:x", "secrets:get:x"],
            "payload": {}, "tags": {"kind": "build"}, "extra": {"index": {"rank": 3}},
            "metadata": {"name": "", "description": "", "owner": "", "source": "git@host:repo"},
        });
        let definition = normalize(body).unwrap();
        assert_eq!(definition.task_queue_id, "p/w");
        assert_eq!(definition.priority, Priority::VeryHigh);
        assert_eq!(definition.requires, Requires::AllResolved);
        assert_eq!(definition.retries, 0);
        assert_eq!(definition.expires, definition.deadline);
        assert_eq!(definition.scopes.len(), 2, "duplicate scopes are allowed");
        assert_eq!(definition.extra.as_str(), r#"{"index":{"rank":3}}"#);
    }

    #[test]
    fn queue_identifiers_are_reconciled() {
        let legacy = with(
            with(
                without(minimal_body(), "taskQueueId"),
                "provisionerId",
                "p".into(),
            ),
            "workerType",
            "w".into(),
        );
        assert_eq!(normalize(legacy.clone()).unwrap().task_queue_id, "p/w");

        let both = with(legacy.clone(), "taskQueueId", "p/w".into());
        assert_eq!(normalize(both).unwrap().worker_type, "w");

        let mismatch = with(legacy, "taskQueueId", "p/other".into());
        assert_eq!(
            code_and_message(mismatch),
            (
                ErrorCode::InputError,
                "taskQueueId must match \"provisionerId/workerType\"".into()
            )
        );

        // A lone half beside a taskQueueId is overwritten, as Taskcluster does.
        let lone = with(minimal_body(), "provisionerId", "elsewhere".into());
        assert_eq!(normalize(lone).unwrap().provisioner_id, "proj-taskfold");

        let neither = with(
            without(minimal_body(), "taskQueueId"),
            "workerType",
            "w".into(),
        );
        assert_eq!(code_and_message(neither).0, ErrorCode::InputError);
    }

    #[test]
    fn schema_violations_are_input_validation_errors() {
        let long = |n: usize| serde_json::Value::from("x".repeat(n));
        let metadata = |field: &str, value: serde_json::Value| {
            let mut body = minimal_body();
            body["metadata"][field] = value;
            body
        };
        let cases = [
            with(minimal_body(), "taskQueueId", "no-slash".into()),
            with(minimal_body(), "taskQueueId", "p/Upper".into()),
            with(minimal_body(), "taskQueueId", "p/trailing-".into()),
            with(
                minimal_body(),
                "taskQueueId",
                format!("{}/w", "p".repeat(39)).into(),
            ),
            with(minimal_body(), "workerType", "under_score".into()),
            with(minimal_body(), "provisionerId", "".into()),
            with(minimal_body(), "schedulerId", "".into()),
            with(minimal_body(), "schedulerId", "a:b".into()),
            with(minimal_body(), "projectId", long(501)),
            with(minimal_body(), "projectId", "a b".into()),
            with(minimal_body(), "taskGroupId", "not-a-slugid".into()),
            with(minimal_body(), "dependencies", serde_json::json!(["nope"])),
            with(
                minimal_body(),
                "dependencies",
                serde_json::json!(["fN1SbArXTPSVFNUvaOlinQ", "fN1SbArXTPSVFNUvaOlinQ"]),
            ),
            with(minimal_body(), "routes", serde_json::json!(["a", "a"])),
            with(minimal_body(), "routes", serde_json::json!([""])),
            with(minimal_body(), "routes", serde_json::json!([long(250)])),
            with(
                minimal_body(),
                "routes",
                serde_json::json!(
                    vec!["r"; 65]
                        .iter()
                        .enumerate()
                        .map(|(i, r)| format!("{r}{i}"))
                        .collect::<Vec<_>>()
                ),
            ),
            with(minimal_body(), "retries", 50.into()),
            with(minimal_body(), "retries", (-1).into()),
            with(minimal_body(), "priority", "normal".into()),
            with(minimal_body(), "requires", "some-completed".into()),
            with(minimal_body(), "scopes", serde_json::json!(["tab\there"])),
            with(minimal_body(), "tags", serde_json::json!({"k": long(4097)})),
            with(minimal_body(), "payload", serde_json::json!([])),
            with(minimal_body(), "extra", serde_json::json!("text")),
            with(minimal_body(), "schedulerId", serde_json::Value::Null),
            with(minimal_body(), "unknownField", 1.into()),
            with(minimal_body(), "deadline", "tomorrow".into()),
            without(minimal_body(), "created"),
            without(minimal_body(), "payload"),
            metadata("name", long(256)),
            metadata("description", long(32_769)),
            metadata("owner", long(256)),
            metadata("source", "ftp://example.com".into()),
            metadata("source", format!("https://{}", "x".repeat(4090)).into()),
        ];
        for body in cases {
            let (code, message) = code_and_message(body.clone());
            assert_eq!(code, ErrorCode::InputValidationError, "{body}: {message}");
        }
    }

    #[test]
    fn every_schema_problem_is_named() {
        let body = with(
            with(minimal_body(), "retries", 99.into()),
            "routes",
            serde_json::json!(["", "ok"]),
        );
        let (_, message) = code_and_message(body);
        assert!(message.contains("`retries`"), "{message}");
        assert!(message.contains("`routes[0]`"), "{message}");
    }

    #[test]
    fn dates_are_checked_against_the_clock_with_taskclusters_messages() {
        let at = |body: serde_json::Value, created: &str, deadline: &str| {
            with(
                with(body, "created", created.into()),
                "deadline",
                deadline.into(),
            )
        };
        let cases = [
            (
                at(
                    minimal_body(),
                    "2026-11-22T09:44:59.999Z",
                    "2026-11-22T11:00:00Z",
                ),
                "`created` cannot be in the past (max 15min drift)",
            ),
            (
                at(
                    minimal_body(),
                    "2026-11-22T10:15:00.001Z",
                    "2026-11-22T11:00:00Z",
                ),
                "`created` cannot be in the future (max 15min drift)",
            ),
            (
                at(
                    minimal_body(),
                    "2026-11-22T10:10:00Z",
                    "2026-11-22T10:05:00Z",
                ),
                "`deadline` cannot be later than `created`",
            ),
            (
                at(
                    minimal_body(),
                    "2026-11-22T09:50:00Z",
                    "2026-11-22T09:59:59.999Z",
                ),
                "`deadline` cannot be in the past",
            ),
            (
                at(
                    minimal_body(),
                    "2026-11-22T10:00:00Z",
                    "2026-11-27T10:15:00.001Z",
                ),
                "`deadline` cannot be more than 5 days into the future",
            ),
            (
                with(minimal_body(), "expires", "2026-11-23T10:00:00.499Z".into()),
                "`expires` cannot be before `deadline`",
            ),
            (
                with(minimal_body(), "scopes", serde_json::json!(["queue:**"])),
                "scopes must not end with `**`",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                code_and_message(body),
                (ErrorCode::InputError, expected.to_owned())
            );
        }
        // The limits themselves are allowed.
        let edges = at(
            minimal_body(),
            "2026-11-22T09:45:00Z",
            "2026-11-27T10:15:00Z",
        );
        assert!(normalize(edges).is_ok());
        let edges = at(
            minimal_body(),
            "2026-11-22T10:15:00Z",
            "2026-11-22T10:15:00Z",
        );
        assert!(normalize(edges).is_ok());
    }

    #[test]
    fn schema_errors_come_before_queue_errors_and_queue_errors_before_dates() {
        let body = with(
            with(without(minimal_body(), "taskQueueId"), "retries", 99.into()),
            "created",
            "2020-01-01T00:00:00Z".into(),
        );
        assert_eq!(
            code_and_message(body.clone()).0,
            ErrorCode::InputValidationError
        );
        let body = with(body, "retries", 1.into());
        let request = CreateTaskRequest::from_json(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            request.into_definition(task_id()).unwrap_err().code,
            ErrorCode::InputError
        );
    }

    #[test]
    fn sizes_are_counted_as_the_compact_text_and_bounded() {
        let definition = normalize(minimal_body()).unwrap();
        let bytes = serde_json::to_vec(&definition).unwrap().len();
        assert_eq!(definition.encoded_len(), bytes);
        assert!(definition.check_size(bytes).is_ok());
        let error = definition.check_size(bytes - 1).unwrap_err();
        assert_eq!(
            (error.code, error.status()),
            (ErrorCode::InputTooLarge, 413)
        );
        assert!(
            error.message.contains("max_task_bytes"),
            "{}",
            error.message
        );
    }

    #[test]
    fn equal_requests_normalize_to_equal_definitions() {
        let a = normalize(minimal_body()).unwrap();
        let mut body = minimal_body();
        body["payload"] = serde_json::json!({"image": "debian:12", "command": ["true"]});
        body["deadline"] = "2026-11-23T11:00:00.500+01:00".into();
        body["expires"] = "2027-11-23T10:00:00.500Z".into();
        body["scopes"] = serde_json::json!([]);
        assert_eq!(normalize(body).unwrap(), a);
    }
}
