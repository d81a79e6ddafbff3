//! The public messages of Taskcluster's queue exchanges (reference §7; their names are
//! [`crate::model::exchange`]), derived from committed events and the state they fold into. Bodies, routing keys and CC routes are Taskcluster's
//! exactly; `schemas/asyncapi.yaml` documents them and the tests check every message against
//! it. The internal events never reach users: this module is the only translation.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::model::binding::Binding;
use crate::model::exchange::{Exchange, MessageId};
use crate::model::{
    Entities, Envelope, Event, Priority, ReasonResolved, RunState, Slugid, Storage, Task,
    TaskGroup, TaskState, TaskStatus, Timestamp,
};

/// The last word of every routing key: declared by Taskcluster for future use, never set.
const RESERVED_WORD: &str = "_";
/// The word standing for an absent value in a routing key.
const ABSENT_WORD: &str = "_";

/// One exchange message.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: MessageId,
    pub exchange: Exchange,
    /// The task's id, or the group's for group exchanges: the Kafka key.
    pub subject: Slugid,
    pub routing_key: String,
    /// The task's routes, without the `route.` prefix their CC keys have.
    pub routes: Arc<[String]>,
    /// When the event was decided.
    pub at: Timestamp,
    body: Arc<Body>,
}

/// A message's JSON body, `version: 1` included, rendered once for every consumer. A task
/// message's body is rendered when a consumer first asks for it: with no listener and no
/// exchange topics, most messages are never rendered.
// Group messages are few and every body sits behind its message's `Arc`: the small variant's
// unused bytes cost nothing worth a second allocation for every task message.
#[allow(clippy::large_enum_variant)]
enum Body {
    Rendered(Box<RawValue>),
    Task {
        body: TaskBody,
        rendered: OnceLock<Box<RawValue>>,
    },
}

impl fmt::Debug for Body {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rendered = match self {
            Body::Rendered(rendered) => Some(rendered),
            Body::Task { rendered, .. } => rendered.get(),
        };
        match rendered {
            Some(rendered) => formatter.write_str(rendered.get()),
            None => formatter.write_str("(not rendered yet)"),
        }
    }
}

impl Message {
    /// A message as another process published it (read back from its exchange topic).
    pub fn received(
        id: MessageId,
        exchange: Exchange,
        subject: Slugid,
        routing_key: String,
        routes: Vec<String>,
        at: Timestamp,
        body: Box<RawValue>,
    ) -> Message {
        Message {
            id,
            exchange,
            subject,
            routing_key,
            routes: routes.into(),
            at,
            body: Arc::new(Body::Rendered(body)),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> &RawValue {
        match &*self.body {
            Body::Rendered(rendered) => rendered,
            Body::Task { body, rendered } => rendered.get_or_init(|| render(body)),
        }
    }

    /// The CC routing keys: `route.<route>` for each route.
    pub fn cc(&self) -> impl Iterator<Item = String> + '_ {
        self.routes.iter().map(|route| format!("route.{route}"))
    }

    /// Whether any of `bindings` matches (a message reaches a listener once however many
    /// match).
    pub fn matches_any(&self, bindings: &[Binding]) -> bool {
        bindings
            .iter()
            .any(|binding| binding.matches_keys(self.exchange, &self.routing_key, &self.routes))
    }
}

/// The fields of a task routing key that vary by message.
#[derive(Default)]
struct RunWords<'a> {
    run_id: Option<u32>,
    worker_group: Option<&'a str>,
    worker_id: Option<&'a str>,
}

impl RunWords<'_> {
    /// A run with no worker named.
    fn run(run_id: u32) -> Self {
        RunWords {
            run_id: Some(run_id),
            ..RunWords::default()
        }
    }
}

/// `primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisionerId>.<workerType>.<schedulerId>.<taskGroupId>._`
fn task_routing_key(task: &Task, words: &RunWords<'_>) -> String {
    let definition = &task.definition;
    let run_id = words.run_id.map(|run_id| run_id.to_string());
    [
        "primary",
        &task.task_id.to_string(),
        run_id.as_deref().unwrap_or(ABSENT_WORD),
        words.worker_group.unwrap_or(ABSENT_WORD),
        words.worker_id.unwrap_or(ABSENT_WORD),
        &definition.provisioner_id,
        &definition.worker_type,
        &definition.scheduler_id,
        &definition.task_group_id.to_string(),
        RESERVED_WORD,
    ]
    .join(".")
}

/// `primary.<taskGroupId>.<schedulerId>._`
fn group_routing_key(group: &TaskGroup) -> String {
    format!(
        "primary.{}.{}.{RESERVED_WORD}",
        group.task_group_id, group.scheduler_id
    )
}

/// What deriving an event needs from the state before it was applied.
#[derive(Clone, Copy, Debug, Default)]
pub struct Before {
    /// The task's priority, for `task-priority-changed`.
    priority: Option<Priority>,
}

impl Before {
    pub fn capture(state: &Entities, envelope: &Envelope) -> Before {
        match envelope.event {
            Event::PriorityChanged { .. } => Before {
                priority: task_of(state, envelope).map(|task| task.priority),
            },
            _ => Before::default(),
        }
    }
}

fn task_of<'a>(state: &'a Entities, envelope: &Envelope) -> Option<&'a Task> {
    envelope.key.parse().ok().and_then(|id| state.task(id))
}

/// The messages of the event at `offset` of `partition`, read from `state` once every event
/// of its commit is applied (as Taskcluster publishes the status after the whole change, so
/// the `task-exception` of a retried run already shows the retry).
pub fn derive(
    partition: u32,
    offset: u64,
    envelope: &Envelope,
    before: Before,
    state: &Entities,
) -> Vec<Message> {
    let mut derived = Vec::new();
    let mut id = MessageId {
        partition,
        offset,
        index: 0,
    };
    let mut push = |exchange, subject, routing_key, routes: Arc<[String]>, body: Body| {
        derived.push(Message {
            id,
            exchange,
            subject,
            routing_key,
            routes,
            at: envelope.at,
            body: Arc::new(body),
        });
        id.index += 1;
    };
    let group_message = match envelope.event {
        Event::TaskGroupSealed => Some(Exchange::TaskGroupSealed),
        Event::TaskGroupResolved => Some(Exchange::TaskGroupResolved),
        Event::TaskGroupPriorityChanged { .. } => Some(Exchange::TaskGroupPriorityChanged),
        _ => None,
    };
    if let Some(exchange) = group_message {
        if let Some(group) = envelope.key.parse().ok().and_then(|id| state.group(id)) {
            let body = match envelope.event {
                Event::TaskGroupPriorityChanged {
                    priority,
                    tasks_affected,
                } => json!({
                    "version": 1,
                    "taskGroupId": group.task_group_id,
                    "schedulerId": group.scheduler_id,
                    "newPriority": priority,
                    "tasksAffected": tasks_affected,
                }),
                _ => group_body(group),
            };
            push(
                exchange,
                group.task_group_id,
                group_routing_key(group),
                Arc::from([]),
                Body::Rendered(render(&body)),
            );
        }
        return derived;
    }
    let Some(task) = task_of(state, envelope) else {
        return derived;
    };
    let routes: Arc<[String]> = task.definition.routes.clone().into();
    let tags = Some(Tags(task.definition.clone()));
    let run = |run_id: u32| task.runs.get(run_id as usize);
    let worker_of = |run_id: u32| {
        run(run_id).and_then(|run| run.worker_group.as_deref().zip(run.worker_id.as_deref()))
    };
    let mut message = |exchange, words: RunWords<'_>, body: TaskBody| {
        let worker = words.worker_group.zip(words.worker_id);
        let body = TaskBody {
            run_id: words.run_id,
            worker_group: worker.map(|(group, _)| group.to_owned()),
            worker_id: worker.map(|(_, id)| id.to_owned()),
            ..body
        };
        let key = task_routing_key(task, &words);
        let body = Body::Task {
            body,
            rendered: OnceLock::new(),
        };
        push(exchange, task.task_id, key, routes.clone(), body);
    };
    match &envelope.event {
        Event::TaskDefined { .. } => {
            // The status as the task was defined: no runs yet.
            let mut status = task.status();
            status.runs.clear();
            status.state = TaskState::Unscheduled;
            status.priority = task.definition.priority;
            status.retries_left = task.definition.retries;
            message(
                Exchange::TaskDefined,
                RunWords::default(),
                TaskBody {
                    task: tags,
                    ..TaskBody::new(status)
                },
            );
        }
        Event::RunPending { run_id, .. } => message(
            Exchange::TaskPending,
            RunWords::run(*run_id),
            TaskBody {
                task: tags,
                ..TaskBody::new(task.status())
            },
        ),
        Event::RunClaimed {
            run_id,
            worker_group,
            worker_id,
            taken_until,
        } => message(
            Exchange::TaskRunning,
            RunWords {
                run_id: Some(*run_id),
                worker_group: Some(worker_group),
                worker_id: Some(worker_id),
            },
            TaskBody {
                task: tags,
                taken_until: Some(*taken_until),
                ..TaskBody::new(task.status())
            },
        ),
        Event::RunResolved { run_id, reason } => {
            let exchange = match reason.final_state() {
                RunState::Completed => Exchange::TaskCompleted,
                RunState::Failed => Exchange::TaskFailed,
                _ => Exchange::TaskException,
            };
            // Taskcluster's deadline resolver names no worker, even if one held the run.
            let worker = worker_of(*run_id).filter(|_| *reason != ReasonResolved::DeadlineExceeded);
            message(
                exchange,
                RunWords {
                    run_id: Some(*run_id),
                    worker_group: worker.map(|(group, _)| group),
                    worker_id: worker.map(|(_, id)| id),
                },
                TaskBody {
                    task: tags,
                    ..TaskBody::new(task.status())
                },
            );
        }
        Event::ExceptionRunAdded { run_id, .. } => message(
            Exchange::TaskException,
            RunWords::run(*run_id),
            TaskBody {
                task: tags,
                ..TaskBody::new(task.status())
            },
        ),
        Event::ArtifactCreated {
            run_id,
            name,
            artifact,
        } => {
            // Artifacts are created by the run's worker, so the run has one; the message
            // cannot be formed without it. Taskcluster announces no `s3` artifact.
            if let Some((group, worker)) = worker_of(*run_id)
                && !matches!(artifact.storage, Storage::S3 { .. })
            {
                let artifact = ArtifactBody {
                    storage_type: artifact.storage.type_name(),
                    name: name.clone(),
                    expires: artifact.expires,
                    content_type: artifact.content_type.clone(),
                };
                message(
                    Exchange::ArtifactCreated,
                    RunWords {
                        run_id: Some(*run_id),
                        worker_group: Some(group),
                        worker_id: Some(worker),
                    },
                    TaskBody {
                        artifact: Some(artifact),
                        ..TaskBody::new(task.status())
                    },
                );
            }
        }
        Event::PriorityChanged { priority } => message(
            Exchange::TaskPriorityChanged,
            RunWords::default(),
            TaskBody {
                new_priority: Some(*priority),
                old_priority: before.priority,
                ..TaskBody::new(task.status())
            },
        ),
        // `changeTaskGroupPriority` publishes only its summary, as Taskcluster does.
        Event::RunReclaimed { .. }
        | Event::PriorityChangedWithGroup { .. }
        | Event::DependencySatisfied { .. }
        | Event::TaskGroupJoined { .. }
        | Event::TaskGroupSealed
        | Event::TaskGroupResolved
        | Event::TaskGroupPriorityChanged { .. }
        | Event::TaskExpired
        | Event::TaskGroupExpired
        | Event::DocumentPut { .. }
        | Event::DocumentRemoved { .. }
        | Event::WorkerQuarantined { .. }
        | Event::WorkerDeclared { .. }
        | Event::SessionOpened { .. }
        | Event::SessionClosed { .. }
        | Event::InputRequested { .. }
        | Event::InputAnswered { .. } => {}
    }
    derived
}

/// The body of a task exchange message; which fields it has depends on the exchange.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskBody {
    status: TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    taken_until: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact: Option<ArtifactBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_priority: Option<Priority>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_priority: Option<Priority>,
    version: u32,
}

impl TaskBody {
    fn new(status: TaskStatus) -> Self {
        TaskBody {
            status,
            run_id: None,
            worker_group: None,
            worker_id: None,
            taken_until: None,
            task: None,
            artifact: None,
            new_priority: None,
            old_priority: None,
            version: 1,
        }
    }
}

/// The `task` of a message: `{tags}`.
struct Tags(Arc<crate::model::TaskDefinition>);

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut task = serializer.serialize_struct("Tags", 1)?;
        task.serialize_field("tags", &self.0.tags)?;
        task.end()
    }
}

/// The `artifact` of `artifact-created`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactBody {
    storage_type: &'static str,
    name: String,
    expires: Timestamp,
    content_type: String,
}

/// A body rendered once for every consumer.
fn render(body: &impl Serialize) -> Box<RawValue> {
    // The bodies hold strings, numbers and maps with string keys: rendering cannot fail.
    serde_json::value::to_raw_value(body).expect("message bodies render")
}

/// `task-group-changed-message`: `{version, taskGroupId, schedulerId, expires, sealed?}`.
fn group_body(group: &TaskGroup) -> Value {
    let mut body = group.to_json();
    body["version"] = json!(1);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{Artifact, ReasonCreated, Storage};

    struct Log {
        state: Entities,
        task_id: Slugid,
        offset: u64,
    }

    impl Log {
        fn new(routes: &[&str]) -> Log {
            let task_id = Slugid::nice();
            let mut definition = sample_definition(task_id);
            definition.routes = routes.iter().map(|route| route.to_string()).collect();
            let mut log = Log {
                state: Entities::default(),
                task_id,
                offset: 0,
            };
            log.commit(&[Event::TaskDefined {
                task_id,
                definition: Arc::new(definition),
            }]);
            log
        }

        /// Run 0 pending, then claimed by `wg/w1`.
        fn claim_first_run(&mut self) {
            self.commit(&[
                Event::RunPending {
                    run_id: 0,
                    reason: ReasonCreated::Scheduled,
                },
                Event::RunClaimed {
                    run_id: 0,
                    worker_group: "wg".into(),
                    worker_id: "w1".into(),
                    taken_until: Timestamp::from_millis(5_000),
                },
            ]);
        }

        /// Applies `events` as one commit and derives their messages.
        fn commit(&mut self, events: &[Event]) -> Vec<Message> {
            let envelopes: Vec<Envelope> = events
                .iter()
                .map(|event| Envelope {
                    key: self.task_id.to_string(),
                    at: Timestamp::from_millis(1_000),
                    client_id: None,
                    event: event.clone(),
                })
                .collect();
            let befores: Vec<Before> = envelopes
                .iter()
                .map(|envelope| {
                    let before = Before::capture(&self.state, envelope);
                    self.state.apply(envelope);
                    before
                })
                .collect();
            let mut messages = Vec::new();
            for (envelope, before) in envelopes.iter().zip(befores) {
                messages.extend(derive(3, self.offset, envelope, before, &self.state));
                self.offset += 1;
            }
            messages
        }
    }

    fn body(message: &Message) -> Value {
        serde_json::from_str(message.body().get()).unwrap()
    }

    #[test]
    fn a_lifecycle_gives_taskcluster_messages_with_routing_keys_and_cc() {
        let mut log = Log::new(&["index.project.latest", "notify.email.a@b.c.on-failed"]);
        let task_id = log.task_id;
        let pending = log.commit(&[Event::RunPending {
            run_id: 0,
            reason: ReasonCreated::Scheduled,
        }]);
        assert_eq!(pending.len(), 1);
        let pending = &pending[0];
        assert_eq!(pending.exchange, Exchange::TaskPending);
        assert_eq!(pending.id.to_string(), "3-1-0");
        assert_eq!(
            pending.routing_key,
            format!("primary.{task_id}.0._._.proj-taskfold.linux-build.-.{task_id}._")
        );
        assert_eq!(
            pending.cc().collect::<Vec<_>>(),
            [
                "route.index.project.latest",
                "route.notify.email.a@b.c.on-failed"
            ]
        );
        assert_eq!(body(pending)["runId"], 0);
        assert_eq!(body(pending)["version"], 1);
        assert_eq!(body(pending)["status"]["state"], "pending");

        let running = log.commit(&[Event::RunClaimed {
            run_id: 0,
            worker_group: "wg".into(),
            worker_id: "w1".into(),
            taken_until: Timestamp::from_millis(5_000),
        }]);
        assert_eq!(running[0].exchange, Exchange::TaskRunning);
        assert!(running[0].routing_key.contains(".0.wg.w1."));
        assert_eq!(body(&running[0])["workerId"], "w1");
        assert!(body(&running[0])["takenUntil"].is_string());

        let artifact = log.commit(&[Event::ArtifactCreated {
            run_id: 0,
            name: "public/a.txt".into(),
            artifact: Artifact {
                content_type: "text/plain".into(),
                expires: Timestamp::from_millis(9_000),
                storage: Storage::Link {
                    artifact: "public/b.txt".into(),
                },
            },
        }]);
        let artifact_body = body(&artifact[0]);
        assert_eq!(artifact[0].exchange, Exchange::ArtifactCreated);
        assert_eq!(artifact_body["artifact"]["storageType"], "link");
        assert_eq!(artifact_body["artifact"]["name"], "public/a.txt");
        assert!(artifact_body.get("task").is_none());

        let completed = log.commit(&[Event::RunResolved {
            run_id: 0,
            reason: ReasonResolved::Completed,
        }]);
        assert_eq!(completed[0].exchange, Exchange::TaskCompleted);
        assert_eq!(body(&completed[0])["status"]["state"], "completed");
        assert_eq!(body(&completed[0])["workerGroup"], "wg");
    }

    #[test]
    fn task_defined_shows_the_task_before_its_first_run() {
        let task_id = Slugid::nice();
        let mut state = Entities::default();
        let envelopes = [
            Event::TaskDefined {
                task_id,
                definition: Arc::new(sample_definition(task_id)),
            },
            Event::RunPending {
                run_id: 0,
                reason: ReasonCreated::Scheduled,
            },
        ]
        .map(|event| Envelope {
            key: task_id.to_string(),
            at: Timestamp::from_millis(1),
            client_id: None,
            event,
        });
        for envelope in &envelopes {
            state.apply(envelope);
        }
        let defined = derive(0, 7, &envelopes[0], Before::default(), &state);
        let defined_body = body(&defined[0]);
        assert_eq!(defined[0].exchange, Exchange::TaskDefined);
        assert_eq!(defined_body["status"]["state"], "unscheduled");
        assert_eq!(defined_body["status"]["runs"], json!([]));
        assert!(defined_body.get("runId").is_none());
        assert!(
            defined[0]
                .routing_key
                .starts_with(&format!("primary.{task_id}._._._."))
        );
        assert_eq!(defined_body["task"]["tags"], json!({}));
    }

    #[test]
    fn a_retried_exception_shows_the_retry_and_deadlines_name_no_worker() {
        let mut log = Log::new(&[]);
        log.claim_first_run();
        let expired = log.commit(&[
            Event::RunResolved {
                run_id: 0,
                reason: ReasonResolved::ClaimExpired,
            },
            Event::RunPending {
                run_id: 1,
                reason: ReasonCreated::Retry,
            },
        ]);
        let exchanges: Vec<_> = expired.iter().map(|message| message.exchange).collect();
        assert_eq!(exchanges, [Exchange::TaskException, Exchange::TaskPending]);
        assert_eq!(body(&expired[0])["status"]["runs"][1]["state"], "pending");
        assert_eq!(body(&expired[0])["workerId"], "w1");
        assert_eq!(body(&expired[1])["runId"], 1);
        assert!(expired[0].cc().next().is_none());

        log.commit(&[Event::RunClaimed {
            run_id: 1,
            worker_group: "wg".into(),
            worker_id: "w2".into(),
            taken_until: Timestamp::from_millis(5_000),
        }]);
        let deadline = log.commit(&[Event::RunResolved {
            run_id: 1,
            reason: ReasonResolved::DeadlineExceeded,
        }]);
        assert!(body(&deadline[0]).get("workerId").is_none());
        assert!(deadline[0].routing_key.contains(".1._._."));
    }

    #[test]
    fn priority_changes_carry_the_old_priority() {
        let mut log = Log::new(&[]);
        let changed = log.commit(&[Event::PriorityChanged {
            priority: Priority::High,
        }]);
        assert_eq!(changed[0].exchange, Exchange::TaskPriorityChanged);
        assert_eq!(body(&changed[0])["oldPriority"], "lowest");
        assert_eq!(body(&changed[0])["newPriority"], "high");
        // A group's change publishes only the group's summary.
        let with_group = log.commit(&[Event::PriorityChangedWithGroup {
            priority: Priority::Low,
        }]);
        assert!(with_group.is_empty());
        let reclaimed = log.commit(&[Event::RunReclaimed {
            run_id: 0,
            taken_until: Timestamp::from_millis(1),
        }]);
        assert!(reclaimed.is_empty());
    }

    #[test]
    fn group_messages_carry_the_group_and_its_key() {
        let group_id = Slugid::nice();
        let mut state = Entities::default();
        let events = [
            Event::TaskGroupJoined {
                task_group_id: group_id,
                scheduler_id: "sched".into(),
                expires: Timestamp::from_millis(9_000),
            },
            Event::TaskGroupSealed,
            Event::TaskGroupResolved,
            Event::TaskGroupPriorityChanged {
                priority: Priority::VeryHigh,
                tasks_affected: 3,
            },
        ];
        let mut derived = Vec::new();
        for (offset, event) in events.into_iter().enumerate() {
            let envelope = Envelope {
                key: group_id.to_string(),
                at: Timestamp::from_millis(5),
                client_id: None,
                event,
            };
            state.apply(&envelope);
            derived.extend(derive(
                1,
                offset as u64,
                &envelope,
                Before::default(),
                &state,
            ));
        }
        let exchanges: Vec<_> = derived.iter().map(|message| message.exchange).collect();
        assert_eq!(
            exchanges,
            [
                Exchange::TaskGroupSealed,
                Exchange::TaskGroupResolved,
                Exchange::TaskGroupPriorityChanged
            ]
        );
        for message in &derived {
            assert_eq!(message.subject, group_id);
            assert_eq!(message.routing_key, format!("primary.{group_id}.sched._"));
            assert!(message.routes.is_empty());
            let body = body(message);
            assert_eq!(body["taskGroupId"], group_id.to_string());
            assert_eq!(body["version"], 1);
        }
        assert!(body(&derived[0])["sealed"].is_string());
        assert_eq!(
            body(&derived[2]),
            json!({
                "version": 1,
                "taskGroupId": group_id,
                "schedulerId": "sched",
                "newPriority": "very-high",
                "tasksAffected": 3,
            })
        );
    }

    #[test]
    fn s3_artifacts_are_not_announced() {
        let mut log = Log::new(&[]);
        log.claim_first_run();
        let artifact = |storage| Event::ArtifactCreated {
            run_id: 0,
            name: "public/x".into(),
            artifact: Artifact {
                content_type: "text/plain".into(),
                expires: Timestamp::from_millis(9_000),
                storage,
            },
        };
        assert!(
            log.commit(&[artifact(Storage::S3 {
                content_length: None
            })])
            .is_empty()
        );
        let reference = log.commit(&[artifact(Storage::Reference {
            url: "https://example.com/x".into(),
        })]);
        assert_eq!(body(&reference[0])["artifact"]["storageType"], "reference");
    }
}
