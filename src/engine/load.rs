//! `taskfold bench restart` and `bench retain`: fill a data directory with tasks through the
//! engine (the paths createTask, claimWork and reportCompleted take, without HTTP), so that a
//! restart on it can be timed and the server on it measured.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::{ClaimWork, Engine};
use crate::model::task::Command;
use crate::model::{ApiError, CreateTaskRequest, ErrorCode, Slugid, TaskDefinition, Timestamp};
use crate::settings::Settings;

/// Replays the log in `data_dir` (or the Kafka topics `settings` name) and starts the engine
/// on it, as `taskfold serve` does; must run inside an actix System.
pub async fn start(settings: &Settings, data_dir: &Path) -> Result<Engine, crate::log::Error> {
    let log = crate::log::open(&settings.log, data_dir)?;
    // The bench's tasks have no `s3` artifacts: no blob store to reach.
    let blobs = crate::blobs::Store::files(data_dir);
    Engine::start(
        log,
        data_dir.to_owned(),
        blobs,
        settings.engine_settings(),
        None,
        None,
    )
    .await
}

/// Why a task definition file cannot serve as a template.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the task definition is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the task definition is not a JSON object")]
    NotAnObject,
    #[error("the task definition is refused: {0}")]
    Refused(ApiError),
}

/// A createTask body with the values that differ per task left as placeholders: a string
/// holding `{{taskId}}`, `{{taskGroupId}}`, `{{created}}`, `{{deadline}}` or `{{expires}}` gets
/// the task's value there. The top-level `taskGroupId`, `created`, `deadline` and `expires` are
/// always the task's own (created now, due in a day, expiring a year after the deadline),
/// whatever the file says.
#[derive(Clone, Debug)]
pub struct TaskTemplate {
    /// The body's compact JSON text, cut at the placeholders.
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    TaskId,
    TaskGroupId,
    Created,
    Deadline,
    Expires,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::TaskId,
        Field::TaskGroupId,
        Field::Created,
        Field::Deadline,
        Field::Expires,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::TaskId => "taskId",
            Field::TaskGroupId => "taskGroupId",
            Field::Created => "created",
            Field::Deadline => "deadline",
            Field::Expires => "expires",
        }
    }

    fn placeholder(self) -> String {
        format!("{{{{{}}}}}", self.name())
    }
}

/// How long after its creation a filled task's deadline is.
const DEADLINE_MILLIS: i64 = 24 * 3_600_000;

impl TaskTemplate {
    /// The small task `bench restart` has always created: a short Docker-style payload and
    /// the metadata, about 400 bytes of JSON.
    pub fn small() -> TaskTemplate {
        TaskTemplate::from_body(json!({
            "taskQueueId": "bench/restart",
            "payload": {"image": "debian:stable", "command": ["make", "-j8", "check"]},
            "metadata": {
                "name": "restart bench",
                "description": "a task that waits in the queue",
                "owner": "bench@taskfold.invalid",
                "source": "https://taskfold.invalid/bench"
            }
        }))
        .expect("the built-in task definition is valid")
    }

    /// A template from a task definition file's text (see [`TaskTemplate`]); one the engine
    /// would refuse fails here, before any task is created.
    pub fn from_json(text: &str) -> Result<TaskTemplate, Error> {
        TaskTemplate::from_body(serde_json::from_str(text)?)
    }

    fn from_body(mut body: Value) -> Result<TaskTemplate, Error> {
        let object = body.as_object_mut().ok_or(Error::NotAnObject)?;
        for field in [
            Field::TaskGroupId,
            Field::Created,
            Field::Deadline,
            Field::Expires,
        ] {
            object.insert(field.name().to_owned(), field.placeholder().into());
        }
        let template = TaskTemplate {
            parts: cut_at_placeholders(&body.to_string()),
        };
        let task_id = Slugid::nice();
        template
            .definition(task_id, task_id, Timestamp::now())
            .map_err(Error::Refused)?;
        Ok(template)
    }

    /// The createTask body of task `task_id` in group `task_group_id`, created at `now`.
    pub fn render(&self, task_id: Slugid, task_group_id: Slugid, now: Timestamp) -> String {
        let deadline = now.plus_millis(DEADLINE_MILLIS);
        let mut body = String::with_capacity(self.len_hint());
        for part in &self.parts {
            match part {
                Part::Text(text) => body.push_str(text),
                Part::Field(field) => {
                    let value = match field {
                        Field::TaskId => task_id.to_string(),
                        Field::TaskGroupId => task_group_id.to_string(),
                        Field::Created => now.to_string(),
                        Field::Deadline => deadline.to_string(),
                        Field::Expires => deadline.plus_one_year().to_string(),
                    };
                    body.push_str(&value);
                }
            }
        }
        body
    }

    /// The task's definition, normalized as createTask normalizes it.
    pub fn definition(
        &self,
        task_id: Slugid,
        task_group_id: Slugid,
        now: Timestamp,
    ) -> Result<TaskDefinition, ApiError> {
        let body = self.render(task_id, task_group_id, now);
        CreateTaskRequest::from_json(body.as_bytes())?.into_definition(task_id)
    }

    fn len_hint(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.len(),
                Part::Field(_) => 24,
            })
            .sum()
    }
}

/// `text` as text parts and the placeholders between them; a `{{…}}` that names no field
/// stays text.
fn cut_at_placeholders(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = text;
    let mut literal = String::new();
    while let Some(start) = rest.find("{{") {
        let found = Field::ALL
            .into_iter()
            .find(|field| rest[start..].starts_with(&field.placeholder()));
        match found {
            Some(field) => {
                literal.push_str(&rest[..start]);
                parts.push(Part::Text(std::mem::take(&mut literal)));
                parts.push(Part::Field(field));
                rest = &rest[start + field.placeholder().len()..];
            }
            None => {
                literal.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
            }
        }
    }
    literal.push_str(rest);
    parts.push(Part::Text(literal));
    parts
}

/// What [`fill`] creates.
pub struct Fill<'a> {
    pub tasks: u64,
    /// Tasks in flight at once.
    pub concurrency: usize,
    pub template: &'a TaskTemplate,
    /// Tasks per task group, created one group after another; each group is named after its
    /// first task, as a decision task names its graph (1: every task its own group).
    pub group_size: u64,
    /// Claim each task through claimWork and report it completed, rather than leave it
    /// pending.
    pub resolve: bool,
    /// How many of the created tasks' ids to return, picked uniformly at random.
    pub sample: usize,
}

/// What [`fill`] did.
pub struct Filled {
    pub tasks: u64,
    /// Ids of created tasks, uniformly at random (`Fill::sample` of them, or every one when
    /// fewer were created).
    pub sample: Vec<Slugid>,
}

/// How long a claim of a filled task may wait for its hint to reach the dispatcher.
const CLAIM_WAIT: Duration = Duration::from_secs(60);

/// Creates `fill.tasks` tasks through `engine` (and with `fill.resolve`, claims and completes
/// as many), `fill.concurrency` at a time, calling `progress` with the count done after each;
/// then waits until they are in the partition stores.
pub async fn fill(
    engine: &Engine,
    fill: &Fill<'_>,
    mut progress: impl FnMut(u64),
) -> Result<Filled, ApiError> {
    let concurrency = fill.concurrency.max(1);
    let group_size = fill.group_size.max(1);
    let mut group = None;
    let mut outcomes = futures::stream::iter(0..fill.tasks)
        .map(|index| {
            let task_id = Slugid::nice();
            if index % group_size == 0 {
                group = Some(task_id);
            }
            let task_group_id = group.unwrap_or(task_id);
            let worker_id = format!("worker-{}", index % concurrency as u64);
            async move {
                let definition =
                    fill.template
                        .definition(task_id, task_group_id, Timestamp::now())?;
                let task_queue_id = definition.task_queue_id.clone();
                engine.create_task(task_id, definition, None).await?;
                if fill.resolve {
                    resolve_one(engine, task_queue_id, worker_id).await?;
                }
                Ok::<Slugid, ApiError>(task_id)
            }
        })
        .buffer_unordered(concurrency);
    let mut done = 0u64;
    let mut sample = Vec::with_capacity(fill.sample.min(fill.tasks as usize));
    while let Some(outcome) = outcomes.next().await {
        let task_id = outcome?;
        // Reservoir sampling: every created task ends up in the sample with equal chance.
        if sample.len() < fill.sample {
            sample.push(task_id);
        } else {
            let slot = rand::random_range(0..=done);
            if let Some(kept) = sample.get_mut(slot as usize) {
                *kept = task_id;
            }
        }
        done += 1;
        progress(done);
    }
    engine.seal().await;
    Ok(Filled {
        tasks: done,
        sample,
    })
}

/// Claims one pending task of the queue, as a worker's claimWork does (not necessarily the
/// one just created: any that is pending), and reports it completed.
async fn resolve_one(
    engine: &Engine,
    task_queue_id: String,
    worker_id: String,
) -> Result<(), ApiError> {
    let request = ClaimWork {
        task_queue_id,
        worker_group: "bench".to_owned(),
        worker_id,
        tasks: 1,
        client_id: None,
    };
    let claimed = engine
        .claim_work(request, Instant::now() + CLAIM_WAIT)
        .await;
    let Some(claimed) = claimed.first() else {
        return Err(ApiError::new(
            ErrorCode::InternalServerError,
            "claimWork found no pending task although one was just created",
        ));
    };
    engine
        .execute(
            claimed.task.task_id,
            Command::ReportCompleted {
                run_id: claimed.run_id,
            },
            None,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_gets_its_own_ids_and_times() {
        let template = TaskTemplate::from_json(
            r#"{"taskQueueId": "p/w", "taskGroupId": "{{taskGroupId}}", "created": "2020-01-01T00:00:00Z",
                "routes": ["index.{{taskId}}.x", "{{unknown}}", "a{{b"],
                "payload": {"artifacts": {"public": {"expires": "{{expires}}"}}},
                "metadata": {"name": "n", "description": "d", "owner": "o@x.invalid", "source": "https://x.invalid"}}"#,
        )
        .unwrap();
        let (task_id, task_group_id) = (Slugid::nice(), Slugid::nice());
        let now = Timestamp::now();
        let body: Value =
            serde_json::from_str(&template.render(task_id, task_group_id, now)).unwrap();
        let deadline = now.plus_millis(DEADLINE_MILLIS);
        assert_eq!(body["taskGroupId"], task_group_id.to_string());
        assert_eq!(body["created"], now.to_string());
        assert_eq!(body["deadline"], deadline.to_string());
        assert_eq!(body["expires"], deadline.plus_one_year().to_string());
        assert_eq!(
            body["payload"]["artifacts"]["public"]["expires"],
            deadline.plus_one_year().to_string()
        );
        assert_eq!(
            body["routes"],
            json!([format!("index.{task_id}.x"), "{{unknown}}", "a{{b"])
        );
        let definition = template.definition(task_id, task_group_id, now).unwrap();
        assert_eq!(definition.task_group_id, task_group_id);
        assert_eq!(definition.created, now);
    }

    #[test]
    fn a_definition_the_engine_refuses_fails_at_once() {
        assert!(matches!(
            TaskTemplate::from_json(r#"{"taskQueueId": "no slash"}"#),
            Err(Error::Refused(_))
        ));
        assert!(matches!(
            TaskTemplate::from_json("[]"),
            Err(Error::NotAnObject)
        ));
    }

    #[test]
    fn the_small_definition_is_what_bench_restart_created() {
        let task_id = Slugid::nice();
        let definition = TaskTemplate::small()
            .definition(task_id, task_id, Timestamp::now())
            .unwrap();
        assert_eq!(definition.task_queue_id, "bench/restart");
        assert_eq!(definition.task_group_id, task_id);
    }
}
