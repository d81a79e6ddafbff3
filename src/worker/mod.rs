//! `taskfold worker`: a client of the Queue API, exactly like Taskcluster's docker-worker and
//! generic-worker (DESIGN.md, workers and engines). It claims up to `capacity` runs at a time
//! from one task queue, runs each as a [`task_run`] with one of its engines, and on SIGTERM
//! stops claiming, aborts what runs with `exception/worker-shutdown` and exits once every run
//! is reported.
//!
//! Engines run programs (Docker, SSH) or make one call (REST, SMTP, REDIS: Cloudomation's
//! task kinds, [`calls`]; INPUT, whose one call is a question to a person, asked and answered
//! through the queue). A worker may serve several: a payload names its engine in `kind`,
//! and one without `kind` runs with the worker's first.

pub mod artifacts;
pub mod caches;
pub mod calls;
pub mod docker;
pub mod input;
pub mod interactive;
pub mod live_log;
pub mod metrics;
pub mod payload;
pub mod proxy;
pub mod pty;
pub mod redis;
pub mod resolution;
pub mod rest;
pub mod secrets;
pub mod smtp;
pub mod ssh;
pub mod task_run;

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::auth::Credentials;
use crate::client::QueueClient;
use docker::DockerEngine;
use metrics::WORKER_METRICS;
use payload::Invalid;
use resolution::Outcome;
use task_run::RunContext;

/// Most tasks one claimWork call may ask for (Taskcluster's limit).
const MAX_CLAIM: usize = 32;
/// Wait after a failed claimWork before the next.
const CLAIM_RETRY: Duration = Duration::from_secs(2);

/// An engine a worker may serve; its name is the `--engine` value and a payload's `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    Docker,
    Ssh,
    Rest,
    Smtp,
    Redis,
    Input,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Ssh => "ssh",
            EngineKind::Rest => "rest",
            EngineKind::Smtp => "smtp",
            EngineKind::Redis => "redis",
            EngineKind::Input => "input",
        }
    }
}

pub struct Options {
    pub root_url: String,
    pub task_queue_id: String,
    pub worker_group: String,
    pub worker_id: String,
    pub capacity: usize,
    /// The engines it serves (at least one); the first runs payloads without a `kind`.
    pub engines: Vec<EngineKind>,
    /// Run directories and caches.
    pub data_dir: PathBuf,
    pub credentials: Option<Credentials>,
    /// `[worker.ssh]`: the SSH engine's targets.
    pub ssh: crate::settings::SshSettings,
    /// `[worker.interactive]`: how runs linger for their sessions.
    pub interactive: crate::settings::InteractiveSettings,
    /// `[worker.proxy]`: where taskcluster-proxy listens and how containers reach it.
    pub proxy: crate::settings::ProxySettings,
}

/// Who the worker is, as tasks see it.
pub struct Identity {
    pub root_url: String,
    pub task_queue_id: String,
    pub worker_group: String,
    pub worker_id: String,
}

/// Environment variables the worker sets in every task, which a payload cannot override.
const RESERVED_VARIABLES: [&str; 6] = [
    "TASK_ID",
    "RUN_ID",
    "TASKCLUSTER_ROOT_URL",
    "TASKCLUSTER_WORKER_GROUP",
    "TASKCLUSTER_WORKER_POOL",
    "TASKCLUSTER_WORKER_TYPE",
];

impl Identity {
    /// `<workerGroup>/<workerId>`, the worker's label on its containers.
    pub fn worker(&self) -> String {
        format!("{}/{}", self.worker_group, self.worker_id)
    }

    pub fn is_reserved_variable(&self, name: &str) -> bool {
        RESERVED_VARIABLES.contains(&name)
    }

    pub fn reserved_variables(&self, task_id: &str, run_id: u64) -> Vec<(&'static str, String)> {
        let worker_type = self
            .task_queue_id
            .split_once('/')
            .map_or(self.task_queue_id.as_str(), |(_, worker_type)| worker_type);
        let values = [
            task_id.to_owned(),
            run_id.to_string(),
            self.root_url.clone(),
            self.worker_group.clone(),
            self.task_queue_id.clone(),
            worker_type.to_owned(),
        ];
        RESERVED_VARIABLES.into_iter().zip(values).collect()
    }
}

/// An engine a worker runs payloads with.
pub enum Engine {
    Docker(DockerEngine),
    Ssh(ssh::SshEngine),
    Rest,
    Smtp,
    Redis,
    Input,
}

impl Engine {
    fn kind(&self) -> EngineKind {
        match self {
            Engine::Docker(_) => EngineKind::Docker,
            Engine::Ssh(_) => EngineKind::Ssh,
            Engine::Rest => EngineKind::Rest,
            Engine::Smtp => EngineKind::Smtp,
            Engine::Redis => EngineKind::Redis,
            Engine::Input => EngineKind::Input,
        }
    }

    async fn execute(&self, run: &mut RunContext) -> Outcome {
        match self {
            Engine::Docker(docker) => docker.execute(run).await,
            Engine::Ssh(ssh) => ssh.execute(run).await,
            Engine::Rest => rest::execute(run).await,
            Engine::Smtp => smtp::execute(run).await,
            Engine::Redis => redis::execute(run).await,
            Engine::Input => input::execute(run).await,
        }
    }
}

/// The engines of a worker, the first for payloads that name none.
pub struct Engines(Vec<Engine>);

impl Engines {
    /// The engine the payload's `kind` names, or the first.
    fn select(&self, payload: &Value) -> Result<&Engine, Invalid> {
        let Some(kind) = payload.get("kind") else {
            return self
                .0
                .first()
                .ok_or_else(|| Invalid(vec!["this worker serves no engine".to_owned()]));
        };
        let serves = || {
            self.0
                .iter()
                .map(|engine| engine.kind().name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found = kind
            .as_str()
            .and_then(|kind| self.0.iter().find(|engine| engine.kind().name() == kind));
        found.ok_or_else(|| {
            Invalid(vec![format!(
                "payload/kind: {kind} is not a kind this worker serves (it serves {})",
                serves()
            )])
        })
    }

    /// Runs the payload with its engine; the outcome and the engine's kind (`None` when the
    /// payload names none the worker serves).
    async fn execute(&self, run: &mut RunContext) -> (Option<EngineKind>, Outcome) {
        match self.select(&run.definition["payload"]) {
            Ok(engine) => (Some(engine.kind()), engine.execute(run).await),
            Err(invalid) => (None, run.malformed_payload(&invalid)),
        }
    }
}

/// What every run of the worker shares.
pub struct Worker {
    pub queue: QueueClient,
    pub identity: Rc<Identity>,
    pub engines: Engines,
    pub data_dir: PathBuf,
}

/// Serves the worker's Prometheus metrics at `GET http://<listen>/metrics` until the process
/// ends.
pub fn serve_metrics(listen: &str) -> std::io::Result<()> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let server = HttpServer::new(|| {
        App::new().route(
            "/metrics",
            web::get().to(|| async {
                HttpResponse::Ok()
                    .content_type("text/plain; version=0.0.4; charset=utf-8")
                    .body(WORKER_METRICS.render())
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?
    .run();
    actix_web::rt::spawn(server);
    tracing::info!(listen, "serving the worker's metrics at /metrics");
    Ok(())
}

/// Connects the engines, removes what an earlier process left, and claims and runs tasks until
/// `shutdown` turns true; then waits for every run to be reported.
pub async fn run(options: Options, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)?;
    let identity = Rc::new(Identity {
        root_url: options.root_url.trim_end_matches('/').to_owned(),
        task_queue_id: options.task_queue_id.clone(),
        worker_group: options.worker_group.clone(),
        worker_id: options.worker_id.clone(),
    });
    anyhow::ensure!(
        !options.engines.is_empty(),
        "a worker serves at least one engine"
    );
    let mut engines: Vec<Engine> = Vec::new();
    for kind in &options.engines {
        if engines.iter().any(|engine| engine.kind() == *kind) {
            continue;
        }
        engines.push(connect(*kind, &options, &identity).await?);
        WORKER_METRICS.activate(kind.name());
    }
    let queue = QueueClient::new(&options.root_url, options.credentials, 64)?;
    // Runs left by an earlier process are gone with their containers.
    let runs_dir = options.data_dir.join("runs");
    let _ = std::fs::remove_dir_all(&runs_dir);
    let worker = Rc::new(Worker {
        queue,
        identity,
        engines: Engines(engines),
        data_dir: options.data_dir,
    });
    tracing::info!(
        task_queue_id = worker.identity.task_queue_id.as_str(),
        worker = worker.identity.worker().as_str(),
        capacity = options.capacity,
        engines = ?options.engines,
        "the worker is claiming tasks"
    );
    claim_and_run(&worker, options.capacity, &mut shutdown).await;
    Ok(())
}

/// Makes the engine of `kind` ready to run payloads.
async fn connect(
    kind: EngineKind,
    options: &Options,
    identity: &Identity,
) -> anyhow::Result<Engine> {
    Ok(match kind {
        EngineKind::Docker => {
            let docker = DockerEngine::connect(
                &options.data_dir,
                options.interactive.clone(),
                options.proxy.clone(),
            )
            .await
            .map_err(|error| anyhow::anyhow!("connecting to the Docker engine: {error}"))?;
            let reaped = docker.reap(&identity.worker()).await?;
            if reaped > 0 {
                tracing::info!(reaped, "removed containers an earlier worker left");
            }
            Engine::Docker(docker)
        }
        EngineKind::Ssh => {
            if options.ssh.targets.is_empty() {
                tracing::warn!("no [[worker.ssh.targets]] are configured: every task will fail");
            }
            Engine::Ssh(ssh::SshEngine::new(
                options.ssh.clone(),
                options.interactive.clone(),
                &options.data_dir,
            ))
        }
        EngineKind::Rest => Engine::Rest,
        EngineKind::Smtp => Engine::Smtp,
        EngineKind::Redis => Engine::Redis,
        EngineKind::Input => Engine::Input,
    })
}

/// Claims and runs tasks until `shutdown` turns true; then aborts the runs and waits for
/// every one to be reported.
async fn claim_and_run(worker: &Rc<Worker>, capacity: usize, shutdown: &mut watch::Receiver<bool>) {
    let running = Rc::new(Cell::new(0usize));
    // Runs are aborted only once no claimWork is in flight: a run ended with worker-shutdown
    // while one waits would have its retry claimed by this very worker, which is stopping.
    let (abort_runs, runs_aborted) = watch::channel(false);
    let finished = Rc::new(Notify::new());
    let request = |free: usize| {
        json!({
            "tasks": free.min(MAX_CLAIM),
            "workerGroup": worker.identity.worker_group,
            "workerId": worker.identity.worker_id,
        })
    };
    while !*shutdown.borrow() {
        let free = capacity.saturating_sub(running.get());
        if free == 0 {
            tokio::select! {
                () = finished.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        // An answer is always awaited, even when a shutdown begins meanwhile: the queue may
        // already have claimed runs for it, and those are reported, not left to expire.
        let answer = worker
            .queue
            .claim_work::<serde_json::Value>(&worker.identity.task_queue_id, &request(free))
            .await;
        let claims = match answer {
            Ok(answer) => answer["tasks"].as_array().cloned().unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%error, "claimWork failed");
                tokio::select! {
                    () = tokio::time::sleep(CLAIM_RETRY) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        for claim in claims {
            start_run(worker, claim, &runs_aborted, &running, &finished);
        }
    }
    tracing::info!(
        running = running.get(),
        "shutting down: aborting running tasks"
    );
    abort_runs.send_replace(true);
    while running.get() > 0 {
        finished.notified().await;
    }
}

fn start_run(
    worker: &Rc<Worker>,
    claim: Value,
    shutdown: &watch::Receiver<bool>,
    running: &Rc<Cell<usize>>,
    finished: &Rc<Notify>,
) {
    let span = tracing::info_span!(
        "run",
        task_id = claim["status"]["taskId"].as_str().unwrap_or_default(),
        run_id = claim["runId"].as_u64().unwrap_or_default()
    );
    running.set(running.get() + 1);
    let (worker, shutdown, running, finished) = (
        worker.clone(),
        shutdown.clone(),
        running.clone(),
        finished.clone(),
    );
    actix_web::rt::spawn(
        async move {
            task_run::run(worker, claim, shutdown).await;
            running.set(running.get() - 1);
            finished.notify_one();
        }
        .instrument(span),
    );
}

/// A watch that turns true on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    actix_web::rt::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(terminate) => terminate,
                Err(error) => {
                    tracing::error!(%error, "cannot watch for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping: no new claims, running tasks end with worker-shutdown");
        sender.send_replace(true);
        // Keep the channel open until the process exits.
        std::future::pending::<()>().await;
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_engine_or_runs_with_the_first() {
        let engines = Engines(vec![Engine::Rest, Engine::Redis]);
        let kind = |payload: Value| engines.select(&payload).map(Engine::kind).ok();
        assert_eq!(kind(json!({"url": "http://x"})), Some(EngineKind::Rest));
        assert_eq!(kind(json!({"kind": "redis"})), Some(EngineKind::Redis));
        for unserved in [json!({"kind": "smtp"}), json!({"kind": 5})] {
            let Err(Invalid(errors)) = engines.select(&unserved) else {
                panic!("{unserved} was given an engine");
            };
            assert!(errors[0].ends_with("(it serves rest, redis)"), "{errors:?}");
        }
    }
}
