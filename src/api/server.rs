//! `taskfold serve`: the HTTP server of the Queue API under `<rootUrl>/api/queue/v1/`.
//! Handlers share one [`State`]: the engine they send commands to, and the clients they
//! authenticate against.

use std::path::Path;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;

use super::access::Access;
use super::blobs::{self, BlobStore};
use super::live_logs::{self, LiveLogs};
use super::{events, response, routes, sessions};
use crate::engine::Engine;
use crate::projections::metrics::{METRICS, WORKER_METRICS};
use crate::settings::Settings;

/// Where the server listens and how it is reached.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: String,
    /// The deployment's root URL; clients build `<rootUrl>/api/queue/v1/...` from it.
    pub root_url: String,
}

/// Workers expect a claimWork answer within Taskcluster's 20 s.
const MAX_CLAIM_WORK_TIMEOUT_SECONDS: u64 = 20;

/// What every handler uses.
pub struct State {
    pub engine: Engine,
    pub access: Access,
    /// Where `s3` artifacts are kept, and how their URLs are signed.
    pub blobs: BlobStore,
    /// Logs workers push while their tasks run.
    pub live_logs: std::sync::Arc<LiveLogs>,
    /// Interactive sessions open in this process.
    pub sessions: std::sync::Arc<super::sessions::registry::Registry>,
    /// The deployment's root URL, for the URLs the API hands out.
    pub root_url: String,
    /// How long claimWork waits for work (`api.claim_work_timeout_seconds`).
    pub claim_work_timeout: Duration,
    /// How far in the future a new task's deadline may be (`queue.max_deadline_days`).
    pub max_deadline: Duration,
    /// Largest request body (`api.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Largest task definition (`api.max_task_bytes`).
    pub max_task_bytes: usize,
    started: Instant,
}

impl State {
    pub fn new(
        engine: Engine,
        access: Access,
        settings: &Settings,
        data_dir: &Path,
        root_url: &str,
    ) -> State {
        let blobs = BlobStore::new(
            data_dir,
            access.queue_credentials.access_token.clone(),
            root_url,
        );
        State {
            engine,
            access,
            blobs,
            live_logs: std::sync::Arc::new(LiveLogs::new(data_dir)),
            sessions: super::sessions::registry(settings),
            root_url: root_url.trim_end_matches('/').to_owned(),
            claim_work_timeout: Duration::from_secs(
                settings
                    .api
                    .claim_work_timeout_seconds
                    .min(MAX_CLAIM_WORK_TIMEOUT_SECONDS),
            ),
            max_deadline: settings.queue.task_settings().max_deadline,
            max_body_bytes: settings.api.max_body_bytes,
            max_task_bytes: settings.api.max_task_bytes,
            started: Instant::now(),
        }
    }
}

/// Serves until the process is stopped (SIGTERM, SIGINT).
pub async fn serve(options: Options, state: State) -> std::io::Result<()> {
    serve_until(options, state, stop_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Serves until `stop` resolves, then finishes the requests in flight. `taskfold up` stops its
/// worker first this way, which still reports to the queue as it stops.
pub async fn serve_until(
    options: Options,
    state: State,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let state = web::Data::new(state);
    let bus = state.engine.bus().clone();
    tracing::info!(
        listen = options.listen.as_str(),
        root_url = options.root_url.as_str(),
        "serving the queue"
    );
    let server = HttpServer::new(move || {
        App::new()
            .configure(|config| app(config, state.clone()))
            .wrap(actix_web::middleware::Compress::default())
            .wrap_fn(|request, service| {
                let started = Instant::now();
                let response = service.call(request);
                async move {
                    let response = response.await?;
                    // The route template (never the path, which holds task ids), known only
                    // once the request was routed.
                    let method = response.request().method().as_str().to_owned();
                    let route = response
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_owned());
                    METRICS
                        .http_request_duration_seconds
                        .with_label_values(&[
                            method.as_str(),
                            route.as_str(),
                            response.status().as_str(),
                        ])
                        .observe(started.elapsed().as_secs_f64());
                    Ok(response)
                }
            })
    })
    .on_connect(super::connection::remember_socket)
    .bind(&options.listen)?
    .disable_signals()
    .run();
    let handle = server.handle();
    let running = actix_web::rt::spawn(server);
    stop.await;
    // Listeners would hold the graceful stop until they go away on their own.
    bus.close();
    handle.stop(true).await;
    running.await.map_err(std::io::Error::other)?
}

/// The whole application: the API under its base path, the monitoring routes, and the 404 of
/// everything else.
pub fn app(config: &mut web::ServiceConfig, state: web::Data<State>) {
    let max_body_bytes = state.max_body_bytes;
    config
        .app_data(state)
        .app_data(web::PayloadConfig::new(max_body_bytes))
        .service(
            web::scope("/api/queue/v1")
                .wrap(response::api_headers())
                .route("/ping", web::get().to(ping))
                .configure(monitoring)
                .configure(routes::configure),
        )
        .service(
            web::resource("/blobs/{taskId}/{runId}/{name:.+}")
                .route(web::put().to(blobs::put))
                .route(web::get().to(blobs::get))
                .route(web::head().to(blobs::get))
                .default_service(web::to(|| async { response::not_found() })),
        )
        .service(
            web::resource("/livelog/{taskId}/{runId}")
                .route(web::post().to(live_logs::push))
                .route(web::get().to(live_logs::follow))
                .default_service(web::to(|| async { response::not_found() })),
        )
        .route("/shell", web::get().to(sessions::page::page_directory))
        .route("/shell/", web::get().to(sessions::page::page))
        .route(
            "/shell/xterm/{path:.+}",
            web::get().to(sessions::page::xterm),
        )
        .service(
            web::scope("/api/events/v1")
                .route("/listen", web::get().to(events::listen))
                .route("/sse", web::get().to(events::sse)),
        )
        .route("/metrics", web::get().to(metrics))
        .configure(monitoring)
        .default_service(web::to(|| async { response::not_found() }));
}

/// Dockerflow's monitoring routes, at the root and, as the official clients call them, under
/// the API's base path.
fn monitoring(config: &mut web::ServiceConfig) {
    config
        .route("/__lbheartbeat__", web::get().to(heartbeat))
        .route("/__heartbeat__", web::get().to(heartbeat))
        .route("/__version__", web::get().to(version));
}

async fn ping(state: web::Data<State>) -> HttpResponse {
    response::json(
        StatusCode::OK,
        &json!({"alive": true, "uptime": state.started.elapsed().as_secs_f64()}),
    )
}

/// Prometheus's text format.
async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(if WORKER_METRICS.is_active() {
            METRICS.render() + &WORKER_METRICS.render()
        } else {
            METRICS.render()
        })
}

async fn heartbeat() -> HttpResponse {
    response::json(StatusCode::OK, &json!({}))
}

async fn version() -> HttpResponse {
    response::json(
        StatusCode::OK,
        &json!({"source": "taskfold", "version": env!("CARGO_PKG_VERSION")}),
    )
}
