//! The engine on a real embedded log: commands reply only once durable, claimWork parks and
//! wakes the moment work arrives, dependencies schedule their dependents, and a restart
//! replays everything acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskfold::engine::{ClaimWork, Engine, EngineSettings};
use taskfold::log::EventLog;
use taskfold::log::embedded::{EmbeddedLog, Options};
use taskfold::model::task::{self, Command};
use taskfold::model::{
    CreateTaskRequest, RunState, Slugid, Task, TaskDefinition, TaskState, Timestamp,
};

fn settings() -> EngineSettings {
    EngineSettings {
        task: task::Settings::default(),
        flush_every_events: 50,
        store_cache_bytes: 16 << 20,
        clock: taskfold::engine::clock::Clock::System,
        log_retention: None,
        ..taskfold::settings::Settings::defaults().engine_settings()
    }
}

async fn start(dir: &std::path::Path) -> Engine {
    start_with(dir, settings()).await
}

async fn start_with(dir: &std::path::Path, settings: EngineSettings) -> Engine {
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(
            dir,
            Options {
                partitions: 3,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let blobs = taskfold::blobs::Store::files(dir);
    Engine::start(log, dir.to_owned(), blobs, settings, None, None)
        .await
        .unwrap()
}

fn definition(task_id: Slugid, queue: &str, dependencies: &[Slugid]) -> TaskDefinition {
    let now = Timestamp::now();
    let body = serde_json::json!({
        "taskQueueId": queue,
        "created": now.to_string(),
        "deadline": now.plus_millis(3_600_000).to_string(),
        "dependencies": dependencies.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        "payload": {},
        "metadata": {"name": "t", "description": "d", "owner": "o@example.com", "source": "https://example.com"},
    });
    let request = CreateTaskRequest::from_json(body.to_string().as_bytes()).unwrap();
    request.into_definition(task_id).unwrap()
}

fn claim(queue: &str, tasks: u32) -> ClaimWork {
    ClaimWork {
        task_queue_id: queue.into(),
        worker_group: "wg".into(),
        worker_id: "w1".into(),
        tasks,
        client_id: None,
    }
}

/// Each phase runs in an actix System of its own; when it ends, its actors and the log are
/// gone, as in a process that stopped (the log refuses a second writer while the first lives).
#[test]
fn lifecycle_long_poll_dependencies_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ids = actix_web::rt::System::new().block_on(before_restart(dir.path()));
    let stored: u64 = (0..3)
        .map(|partition| {
            taskfold::engine::store::peek_offset(dir.path(), partition)
                .unwrap()
                .unwrap_or(0)
        })
        .sum();
    assert!(stored > 0, "the shards wrote their partition stores");
    actix_web::rt::System::new().block_on(after_restart(dir.path(), ids));
}

async fn before_restart(dir: &std::path::Path) -> Vec<Slugid> {
    let engine = start(dir).await;

    // A parked claimWork wakes as soon as a task arrives.
    let parked = {
        let engine = engine.clone();
        actix_web::rt::spawn(async move {
            let started = Instant::now();
            let claimed = engine
                .claim_work(claim("p/w", 4), Instant::now() + Duration::from_secs(10))
                .await;
            (claimed, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = Slugid::nice();
    let created = engine
        .create_task(first, definition(first, "p/w", &[]), None)
        .await
        .unwrap();
    assert_eq!(created.state(), TaskState::Pending);
    let (claimed, waited) = parked.await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    assert_eq!(claimed[0].task.runs[0].state, RunState::Running);

    // A dependent waits for its dependency, then becomes pending by itself.
    let dependent = Slugid::nice();
    let waiting = engine
        .create_task(dependent, definition(dependent, "p/w", &[first]), None)
        .await
        .unwrap();
    assert_eq!(waiting.state(), TaskState::Unscheduled);
    let missing = Slugid::nice();
    let error = engine
        .create_task(
            Slugid::nice(),
            definition(Slugid::nice(), "p/w", &[missing]),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), 400);
    engine
        .execute(first, Command::ReportCompleted { run_id: 0 }, None)
        .await
        .unwrap();
    let mut scheduled = None;
    for _ in 0..100 {
        let task = engine.task(dependent).await.unwrap();
        if task.state() == TaskState::Pending {
            scheduled = Some(task);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(scheduled.is_some(), "the dependent was never scheduled");
    assert_eq!(engine.pending_count("p/w").await, 1);

    // Many tasks, so that the stores are written; then a restart opens them.
    let mut ids = Vec::new();
    for _ in 0..120 {
        let id = Slugid::nice();
        engine
            .create_task(id, definition(id, "q/w", &[]), None)
            .await
            .unwrap();
        ids.push(id);
    }
    let claimed = engine
        .claim_work(claim("q/w", 32), Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(claimed.len(), 32);
    engine.flushed().await;
    ids
}

async fn after_restart(dir: &std::path::Path, ids: Vec<Slugid>) {
    let restarted = start(dir).await;
    for id in &ids {
        assert!(restarted.task(*id).await.is_some(), "task {id} lost");
    }
    assert_eq!(restarted.pending_count("q/w").await, 120 - 32);
    let again = restarted
        .claim_work(claim("q/w", 32), Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(
        again.len(),
        32,
        "pending tasks are claimable after a restart"
    );
    assert!(
        again.iter().all(|claimed| !claimed.task.runs.is_empty()),
        "claims carry their task"
    );
}

/// A dependency that resolved just before a crash, before its dependent was told: after the
/// restart the dependent is scheduled all the same.
#[actix_web::test]
async fn a_restart_schedules_dependents_of_tasks_resolved_before_the_crash() {
    use taskfold::log::{Entry, codec};
    use taskfold::model::{Envelope, Event, ReasonCreated, ReasonResolved};

    let dir = tempfile::tempdir().unwrap();
    // The dependency's shard announces first, before the dependent's shard registers it.
    let in_partition = |partition| loop {
        let id = Slugid::nice();
        if taskfold::log::partition_for(id.to_string().as_bytes(), 3) == partition {
            break id;
        }
    };
    let (dependency, dependent) = (in_partition(0), in_partition(2));
    {
        let log = EmbeddedLog::open(
            dir.path(),
            Options {
                partitions: 3,
                ..Options::default()
            },
        )
        .unwrap();
        let now = Timestamp::now();
        let history = [
            (
                dependency,
                Event::TaskDefined {
                    task_id: dependency,
                    definition: Arc::new(definition(dependency, "p/w", &[])),
                },
            ),
            (
                dependency,
                Event::RunPending {
                    run_id: 0,
                    reason: ReasonCreated::Scheduled,
                },
            ),
            (
                dependency,
                Event::RunClaimed {
                    run_id: 0,
                    worker_group: "wg".into(),
                    worker_id: "w".into(),
                    taken_until: now.plus_millis(60_000),
                },
            ),
            (
                dependency,
                Event::RunResolved {
                    run_id: 0,
                    reason: ReasonResolved::Completed,
                },
            ),
            (
                dependent,
                Event::TaskDefined {
                    task_id: dependent,
                    definition: Arc::new(definition(dependent, "p/w", &[dependency])),
                },
            ),
        ];
        for (task_id, event) in history {
            let envelope = Envelope {
                key: task_id.to_string(),
                at: now,
                client_id: None,
                event,
            };
            let entry = Entry {
                key: envelope.key.clone(),
                payload: codec::encode(&envelope).unwrap(),
            };
            log.append(log.partition_of(&envelope.key), vec![entry])
                .await
                .unwrap();
        }
    }
    let engine = start(dir.path()).await;
    for _ in 0..100 {
        if engine.task(dependent).await.unwrap().state() == TaskState::Pending {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the dependent was not scheduled after the restart");
}

/// A page of a listing says more follow even when all that follow are in one shard.
#[actix_web::test]
async fn a_listing_pages_through_tasks_that_share_a_partition() {
    use taskfold::engine::index::Listing;

    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    let group = Slugid::nice();
    let mut created = Vec::new();
    while created.len() < 5 {
        let id = Slugid::nice();
        if taskfold::log::partition_for(id.to_string().as_bytes(), 3) != 1 {
            continue;
        }
        let mut definition = definition(id, "p/w", &[]);
        definition.task_group_id = group;
        engine.create_task(id, definition, None).await.unwrap();
        created.push(id);
    }
    created.sort();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = engine.list(Listing::Members(group), after, 2).await;
        listed.extend(page.iter().map(|(_, task)| task.task_id));
        after = page.last().map(|(position, _)| *position);
        if !more {
            break;
        }
    }
    assert_eq!(listed, created);
}

/// Polls `task_id` until `done` holds for it (two seconds at most).
async fn wait_until(engine: &Engine, task_id: Slugid, done: impl Fn(&Task) -> bool) -> Task {
    for _ in 0..100 {
        let task = engine.task(task_id).await.unwrap();
        if done(&task) {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.task(task_id).await.unwrap()
}

/// A failure does not satisfy an `all-completed` dependent, which then waits for the
/// dependency's rerun to complete (as in Taskcluster).
#[actix_web::test]
async fn a_dependent_waits_through_a_failure_for_a_rerun_that_completes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    let (dependency, dependent) = (Slugid::nice(), Slugid::nice());
    engine
        .create_task(dependency, definition(dependency, "r/w", &[]), None)
        .await
        .unwrap();
    engine
        .create_task(dependent, definition(dependent, "r/d", &[dependency]), None)
        .await
        .unwrap();
    let engine = &engine;
    let run = |run_id| async move {
        let claimed = engine
            .claim_work(claim("r/w", 1), Instant::now() + Duration::from_secs(1))
            .await;
        assert_eq!(
            (claimed[0].task.task_id, claimed[0].run_id),
            (dependency, run_id)
        );
    };
    run(0).await;
    engine
        .execute(dependency, Command::ReportFailed { run_id: 0 }, None)
        .await
        .unwrap();
    // The resolver has had its chance to schedule the dependent (it must not).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        engine.task(dependent).await.unwrap().state(),
        TaskState::Unscheduled
    );
    engine
        .execute(dependency, Command::Rerun, None)
        .await
        .unwrap();
    run(1).await;
    engine
        .execute(dependency, Command::ReportCompleted { run_id: 1 }, None)
        .await
        .unwrap();
    let task = wait_until(engine, dependent, |task| !task.runs.is_empty()).await;
    assert_eq!(task.state(), TaskState::Pending);
}

/// A data directory written before the log recorded callers (codec version 1) replays, and
/// the histories show its events as caused by no known caller, followed by newer ones that
/// name theirs.
#[test]
fn a_log_of_version_1_records_replays_with_its_history() {
    use taskfold::log::Entry;
    use taskfold::model::{Caller, Event, HistoryEvent, ReasonCreated};

    /// The envelope as version 1 wrote it.
    #[derive(serde::Serialize)]
    struct EnvelopeVersion1 {
        key: String,
        at: Timestamp,
        event: Event,
    }

    let dir = tempfile::tempdir().unwrap();
    let task_id = Slugid::nice();
    let now = Timestamp::now();
    {
        let log = EmbeddedLog::open(
            dir.path(),
            Options {
                partitions: 3,
                ..Options::default()
            },
        )
        .unwrap();
        let events = [
            Event::TaskDefined {
                task_id,
                definition: Arc::new(definition(task_id, "v/w", &[])),
            },
            Event::RunPending {
                run_id: 0,
                reason: ReasonCreated::Scheduled,
            },
        ];
        let entries = events
            .into_iter()
            .map(|event| {
                let old = EnvelopeVersion1 {
                    key: task_id.to_string(),
                    at: now,
                    event,
                };
                let mut payload = vec![1];
                payload.extend(
                    bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap(),
                );
                Entry {
                    key: task_id.to_string(),
                    payload,
                }
            })
            .collect();
        let partition = log.partition_of(&task_id.to_string());
        futures::executor::block_on(log.append(partition, entries)).unwrap();
    }
    let callers = |history: Option<taskfold::engine::history::HistoryPage>| {
        let records = history.expect("the task has a history").records;
        let callers: Vec<Caller> = records.iter().map(|record| record.caller.clone()).collect();
        let kinds: Vec<&str> = records.iter().map(|record| record.event.kind()).collect();
        (kinds.join(" "), callers)
    };
    actix_web::rt::System::new().block_on(async {
        let engine = start(dir.path()).await;
        assert_eq!(
            engine.task(task_id).await.unwrap().state(),
            TaskState::Pending
        );
        let history = engine.history(task_id, None, 10).await.unwrap();
        assert_eq!(
            history.as_ref().unwrap().records[0].event,
            HistoryEvent::TaskDefined
        );
        assert_eq!(
            callers(history),
            (
                "task-defined run-pending".into(),
                vec![Caller::Queue, Caller::Queue]
            )
        );
        engine
            .execute(task_id, Command::Cancel, Some("ci/canceler".into()))
            .await
            .unwrap();
    });
    // Both versions in one log.
    actix_web::rt::System::new().block_on(async {
        let engine = start(dir.path()).await;
        assert_eq!(
            callers(engine.history(task_id, None, 10).await.unwrap()),
            (
                "task-defined run-pending run-resolved".into(),
                vec![
                    Caller::Queue,
                    Caller::Queue,
                    Caller::Client("ci/canceler".into())
                ]
            )
        );
        assert_eq!(
            engine.history(Slugid::nice(), None, 10).await.unwrap(),
            None
        );
    });
}

/// Timers on tokio's paused time: a claim that is not renewed expires and its run is retried,
/// and a task past its deadline is resolved, without the test waiting for either.
#[test]
fn claims_expire_and_deadlines_pass_on_paused_time() {
    let dir = tempfile::tempdir().unwrap();
    actix_web::rt::System::new().block_on(async {
        tokio::time::pause();
        let claim_timeout = Duration::from_secs(1200);
        let engine = start_with(
            dir.path(),
            EngineSettings {
                task: task::Settings {
                    claim_timeout,
                    ..task::Settings::default()
                },
                clock: taskfold::engine::clock::Clock::tokio(),
                ..settings()
            },
        )
        .await;
        let task_id = Slugid::nice();
        engine
            .create_task(task_id, definition(task_id, "paused/w", &[]), None)
            .await
            .unwrap();
        let claimed = engine
            .claim_work(
                claim("paused/w", 1),
                Instant::now() + Duration::from_secs(1),
            )
            .await;
        assert_eq!(claimed.len(), 1);

        // Twenty minutes pass in no time: the claim expired, the run is retried.
        tokio::time::sleep(claim_timeout + Duration::from_secs(1)).await;
        let task = engine.task(task_id).await.unwrap();
        assert_eq!(task.runs[0].state, RunState::Exception, "{task:?}");
        assert_eq!(task.runs.len(), 2, "{task:?}");
        assert_eq!(task.runs[1].state, RunState::Pending);

        // So does the rest of the hour to the deadline.
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        let task = engine.task(task_id).await.unwrap();
        assert_eq!(task.state(), TaskState::Exception, "{task:?}");
        assert_eq!(
            task.runs.last().unwrap().reason_resolved,
            Some(taskfold::model::ReasonResolved::DeadlineExceeded)
        );
    });
}
