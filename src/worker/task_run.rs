//! One claimed run, from claim to resolution: `Claimed → Preparing → Running → Collecting →
//! Resolving` (DESIGN.md, workers). The run owns its log, its credentials (swapped on every
//! reclaim) and its abort signal; the engine does the phases in between, and
//! [`resolution::resolve`] decides what the queue is told.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::artifacts::Publisher;
use super::live_log::LiveLog;
use super::metrics::{INTERNAL_ERROR, RESOURCE_UNAVAILABLE, WORKER_METRICS};
use super::payload::{Invalid, log_names};
use super::resolution::{self, Abort, Artifacts, Outcome, Phase, Problem, Resolution};
use super::{Identity, Worker};
use crate::auth::{Credentials, ScopeSet};
use crate::client::{Error, QueueClient};
use crate::model::Timestamp;

/// The client of a run, signing with the run's current credentials.
pub type SharedClient = Rc<RefCell<QueueClient>>;

/// How long the end of a run waits for the queue to take the rest of its live log.
const LOG_FLUSH: Duration = Duration::from_secs(10);
/// Wait after a failed reclaim before the next try.
const RECLAIM_RETRY: Duration = Duration::from_secs(5);

/// What an engine gets to run one run.
pub struct RunContext {
    pub task_id: String,
    pub run_id: u64,
    /// The task definition, as the claim carried it.
    pub definition: Value,
    /// The scopes the task was given (features and caches need some).
    pub task_scopes: ScopeSet,
    pub log: LiveLog,
    pub publisher: Publisher,
    /// A directory of this run's own, removed when it ends.
    pub work_dir: PathBuf,
    pub identity: Rc<Identity>,
    /// The run's credentials as they are now (each reclaim brings new ones).
    pub credentials: watch::Receiver<Credentials>,
    abort: watch::Receiver<Option<Abort>>,
    /// When the run was claimed, for the payload start time.
    claimed: Instant,
}

impl RunContext {
    /// The payload is about to start: the log says so, and the time since the claim counts.
    pub fn payload_starting(&self) {
        self.log.task_started();
        WORKER_METRICS
            .payload_start_seconds
            .observe(self.claimed.elapsed().as_secs_f64());
    }

    /// The outcome of a run whose payload cannot run, every problem listed in the log.
    pub fn malformed_payload(&self, invalid: &Invalid) -> Outcome {
        self.log.error("the task's payload is not valid:");
        for problem in &invalid.0 {
            self.log.write(format!("  {problem}\n").as_bytes());
        }
        Outcome {
            problem: Some(Problem::MalformedPayload(invalid.to_string())),
            ..Outcome::new(Phase::Preparing)
        }
    }

    /// The task's deadline, as an instant of this process's clock.
    pub fn deadline(&self) -> Instant {
        let deadline = self.definition["deadline"]
            .as_str()
            .and_then(|text| text.parse::<Timestamp>().ok())
            .map_or(0, Timestamp::millis);
        let left = u64::try_from(deadline - Timestamp::now().millis()).unwrap_or(0);
        Instant::now() + Duration::from_millis(left)
    }

    /// `work`'s result, or `None` when the run's time is up first (logged as `Task timeout
    /// after <seconds> seconds<then>` and marked in `outcome`) or the run is aborted first
    /// (logged and kept in `outcome`): the bound every engine puts on a payload.
    pub async fn bounded<T>(
        &mut self,
        work: impl Future<Output = T>,
        max_run_time: Duration,
        then: &str,
        outcome: &mut Outcome,
    ) -> Option<T> {
        tokio::select! {
            ended = work => Some(ended),
            () = tokio::time::sleep(max_run_time) => {
                self.log.error(&format!(
                    "Task timeout after {} seconds{then}",
                    max_run_time.as_secs()
                ));
                outcome.timed_out = true;
                None
            }
            abort = self.aborted() => {
                self.log.error(&format!("the run was aborted: {}", abort.describe()));
                outcome.abort = Some(abort);
                None
            }
        }
    }

    /// Resolves when the run is aborted from outside (cancel, shutdown, lost claim).
    pub async fn aborted(&mut self) -> Abort {
        loop {
            if let Some(abort) = self.abort.borrow_and_update().clone() {
                return abort;
            }
            if self.abort.changed().await.is_err() {
                // No one can abort any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Abort {
    pub fn describe(&self) -> String {
        match self {
            Abort::Canceled => "the run was resolved by the queue (canceled?)".to_owned(),
            Abort::WorkerShutdown => "the worker is shutting down".to_owned(),
            Abort::ReclaimFailed(error) => format!("the claim could not be renewed: {error}"),
        }
    }
}

/// Runs one entry of a claimWork answer to its end.
/// Counts a run in `taskfold_worker_tasks_running` for as long as it lives.
struct Running;

impl Running {
    fn counted() -> Running {
        WORKER_METRICS.tasks_running.inc();
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        WORKER_METRICS.tasks_running.dec();
    }
}

pub async fn run(worker: Rc<Worker>, claim: Value, shutdown: watch::Receiver<bool>) {
    let claimed = Instant::now();
    let _running = Running::counted();
    let task_id = claim["status"]["taskId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let run_id = claim["runId"].as_u64().unwrap_or_default();
    let credentials: Credentials = match serde_json::from_value(claim["credentials"].clone()) {
        Ok(credentials) => credentials,
        Err(error) => {
            tracing::error!(%error, "the claim's credentials are unreadable; the claim will expire");
            return;
        }
    };
    let (renewed, current_credentials) = watch::channel(credentials.clone());
    let client = match worker.queue.with_credentials(credentials) {
        Ok(client) => Rc::new(RefCell::new(client)),
        Err(error) => {
            tracing::error!(%error, "the claim's credentials are unusable; the claim will expire");
            return;
        }
    };
    let definition = claim["task"].clone();
    let work_dir = worker
        .data_dir
        .join("runs")
        .join(format!("{task_id}-{run_id}"));
    let (live_name, backing_name) = log_names(definition["payload"]["log"].as_str());
    let log = match std::fs::create_dir_all(&work_dir).and_then(|()| {
        LiveLog::start(
            &work_dir.join("live.log"),
            client.clone(),
            task_id.clone(),
            run_id,
            live_name.clone(),
        )
    }) {
        Ok(log) => log,
        Err(error) => {
            tracing::error!(%error, "cannot keep the run's log; reporting internal-error");
            let internal = Resolution::Exception(crate::model::ExceptionReason::InternalError);
            report(&client, &task_id, run_id, internal).await;
            return;
        }
    };
    let publisher = Publisher {
        client: client.clone(),
        task_id: task_id.clone(),
        run_id,
        expires: definition["expires"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let live_url = format!("{}/livelog/{task_id}/{run_id}", client.borrow().root_url());
    // Announced while the run prepares; awaited before the log is published at the end.
    let announcing = {
        let (publisher, live_name) = (publisher.clone(), live_name.clone());
        actix_web::rt::spawn(async move {
            if let Err(error) = publisher
                .reference(&live_name, &live_url, "text/plain; charset=utf-8")
                .await
            {
                tracing::warn!(%error, "creating the live log artifact");
            }
        })
    };
    let identity = worker.identity.clone();
    log.info(&format!("Task ID: {task_id}"));
    log.info(&format!("Run ID: {run_id}"));
    log.info(&format!("Worker ID: {}", identity.worker_id));
    log.info(&format!("Worker Group: {}", identity.worker_group));
    log.info(&format!("Worker Pool: {}", identity.task_queue_id));
    log.info(&format!(
        "Worker Version: taskfold {}",
        env!("CARGO_PKG_VERSION")
    ));

    let (abort, aborts) = watch::channel(None);
    let abort = Rc::new(abort);
    let taken_until = claim["takenUntil"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(Timestamp::now);
    let reclaimer = actix_web::rt::spawn(reclaim(
        client.clone(),
        renewed,
        task_id.clone(),
        run_id,
        taken_until,
        abort.clone(),
    ));
    let watcher = actix_web::rt::spawn(watch_for_aborts(log.clone(), shutdown, abort.clone()));

    let task_scopes = ScopeSet::new(
        definition["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    );
    let mut context = RunContext {
        task_id: task_id.clone(),
        run_id,
        definition,
        task_scopes,
        log: log.clone(),
        publisher,
        work_dir: work_dir.clone(),
        identity,
        credentials: current_credentials,
        abort: aborts,
        claimed,
    };
    let (engine, mut outcome) = worker.engines.execute(&mut context).await;
    let engine_error = match &outcome.problem {
        Some(Problem::ResourceUnavailable(_)) => Some(RESOURCE_UNAVAILABLE),
        Some(Problem::Internal(_)) => Some(INTERNAL_ERROR),
        Some(Problem::MalformedPayload(_)) | None => None,
    };
    if let (Some(engine), Some(kind)) = (engine, engine_error) {
        WORKER_METRICS
            .engine_errors
            .with_label_values(&[engine.name(), kind])
            .inc();
    }
    reclaimer.abort();
    watcher.abort();
    let _ = announcing.await;
    if outcome.abort.is_none() && *context.abort.borrow() == Some(Abort::Canceled) {
        outcome.abort = Some(Abort::Canceled);
    }
    if outcome.abort != Some(Abort::Canceled) {
        publish_log(&context, &live_name, &backing_name, &mut outcome).await;
    } else {
        log.finish(Duration::ZERO).await;
    }
    let resolution = resolution::resolve(&outcome);
    tracing::info!(?resolution, exit_code = outcome.exit_code, "run finished");
    report(&client, &task_id, run_id, resolution).await;
    if let Err(error) = tokio::fs::remove_dir_all(&work_dir).await {
        tracing::warn!(%error, "removing the run's directory");
    }
}

/// Uploads the backing log and turns the live log into a link to it.
async fn publish_log(
    context: &RunContext,
    live_name: &str,
    backing_name: &str,
    outcome: &mut Outcome,
) {
    context.log.finish(LOG_FLUSH).await;
    let content_type = "text/plain; charset=utf-8";
    let uploaded = context
        .publisher
        .file(
            backing_name,
            context.log.backing_file(),
            Some(content_type),
            None,
        )
        .await;
    match uploaded {
        Ok(()) => {
            if let Err(error) = context
                .publisher
                .link(live_name, backing_name, content_type)
                .await
            {
                tracing::warn!(%error, "linking the live log to the backing log");
            }
        }
        Err(error) => {
            tracing::error!(error, "uploading the backing log");
            outcome.artifacts = Artifacts::UploadFailed;
        }
    }
}

async fn report(client: &SharedClient, task_id: &str, run_id: u64, resolution: Resolution) {
    let client = client.borrow().clone();
    let result = match resolution {
        Resolution::Completed => client.report_completed(task_id, run_id).await,
        Resolution::Failed => client.report_failed(task_id, run_id).await,
        Resolution::Exception(reason) => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default();
            client.report_exception(task_id, run_id, &reason).await
        }
        Resolution::Abandon => return,
    };
    if let Err(error) = result {
        tracing::warn!(%error, "reporting the run's resolution");
    }
}

/// Renews the claim halfway to its end, with the fresh credentials each reclaim brings.
async fn reclaim(
    client: SharedClient,
    renewed_credentials: watch::Sender<Credentials>,
    task_id: String,
    run_id: u64,
    mut taken_until: Timestamp,
    abort: Rc<watch::Sender<Option<Abort>>>,
) {
    loop {
        let remaining = (taken_until.millis() - Timestamp::now().millis()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis((remaining / 2).max(1000))).await;
        let current = client.borrow().clone();
        match current.reclaim_task(&task_id, run_id).await {
            Ok(answer) => {
                let renewed = serde_json::from_value::<Credentials>(answer["credentials"].clone())
                    .map_err(|error| error.to_string())
                    .and_then(|credentials| {
                        current
                            .with_credentials(credentials.clone())
                            .map(|client| (client, credentials))
                            .map_err(|error| error.to_string())
                    });
                match renewed {
                    Ok((renewed, credentials)) => {
                        *client.borrow_mut() = renewed;
                        renewed_credentials.send_replace(credentials);
                    }
                    Err(error) => tracing::warn!(error, "the reclaim's credentials are unusable"),
                }
                if let Some(until) = answer["takenUntil"].as_str().and_then(|t| t.parse().ok()) {
                    taken_until = until;
                }
            }
            Err(error @ Error::Api { .. })
                if error.status() == Some(awc::http::StatusCode::CONFLICT) =>
            {
                tracing::info!("reclaim refused: the run is no longer ours");
                abort.send_replace(Some(Abort::Canceled));
                return;
            }
            Err(error) => {
                if Timestamp::now().millis() >= taken_until.millis() {
                    abort.send_replace(Some(Abort::ReclaimFailed(error.to_string())));
                    return;
                }
                tracing::warn!(%error, "reclaim failed; trying again");
                tokio::time::sleep(RECLAIM_RETRY).await;
            }
        }
    }
}

/// Turns a worker shutdown, or the queue saying the run is gone, into the run's abort.
async fn watch_for_aborts(
    log: LiveLog,
    mut shutdown: watch::Receiver<bool>,
    abort: Rc<watch::Sender<Option<Abort>>>,
) {
    let reason = tokio::select! {
        Ok(_) = shutdown.wait_for(|stopping| *stopping) => Abort::WorkerShutdown,
        _ = log.run_gone() => Abort::Canceled,
    };
    abort.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(reason);
            true
        } else {
            false
        }
    });
}
