//! `taskfold serve`: the HTTP server of the Queue API under `<rootUrl>/api/queue/v1/`.
//! Handlers share one [`State`]: the engine they send commands to, and the clients they
//! authenticate against.

use std::path::Path;
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BodyStream, BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;

use super::access::Access;
use super::audience::Audiences;
use super::blobs::{self, BlobEndpoint};
use super::live_logs::{self, LiveLogs};
use super::response::CallInfo;
use super::routes::{self, get};
use super::{connection, events, response, sessions};
use crate::engine::Engine;
use crate::engine::health::LogHealth;
use crate::metrics::METRICS;
use crate::model::{ApiError, ErrorCode, Timestamp};
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
    pub blobs: BlobEndpoint,
    /// Logs workers push while their tasks run.
    pub live_logs: std::sync::Arc<LiveLogs>,
    /// The audiences of the event listeners: listeners that bind alike share one.
    pub audiences: Audiences,
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
    /// claimWork calls waiting at once, and how many may (`api.max_waiting_claims`, lowered
    /// to what the open-file limit allows).
    pub waiting_claims: connection::WaitingClaims,
    /// Largest task definition (`api.max_task_bytes`).
    pub max_task_bytes: usize,
    /// Where the console's files are read from instead of the built-in ones
    /// (`console.dir`; empty: the built-in ones).
    pub console_dir: std::path::PathBuf,
    started: Instant,
}

impl State {
    pub fn new(
        engine: Engine,
        access: Access,
        settings: &Settings,
        data_dir: &Path,
        blob_store: crate::blobs::Store,
        root_url: &str,
    ) -> State {
        let blobs = BlobEndpoint::new(
            blob_store,
            access.queue_credentials.access_token.clone(),
            root_url,
            &settings.blobs,
        );
        State {
            engine,
            access,
            blobs,
            live_logs: std::sync::Arc::new(LiveLogs::new(data_dir)),
            audiences: Audiences::default(),
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
            waiting_claims: connection::WaitingClaims::new(settings.api.max_waiting_claims),
            max_task_bytes: settings.api.max_task_bytes,
            console_dir: settings.console.dir.clone(),
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
    let health = state.engine.health().clone();
    let engine = state.engine.clone();
    actix_web::rt::spawn(state.live_logs.clone().sweep_forever(state.engine.clone()));
    super::services::hooks::start_scheduler(state.clone());
    super::services::hooks::start_binding_listener(state.clone());
    tracing::info!(
        listen = options.listen.as_str(),
        root_url = options.root_url.as_str(),
        "serving the queue"
    );
    let server = HttpServer::new(move || {
        let health = state.engine.health().clone();
        App::new()
            .configure(|config| app(config, state.clone()))
            .wrap(actix_web::middleware::Compress::default())
            .wrap_fn(move |request, service| {
                let started = Instant::now();
                let response = service.call(request);
                let health = health.clone();
                async move {
                    let response = response.await?;
                    // The route template (never the path, which holds task ids), known only
                    // once the request was routed.
                    let request = response.request();
                    METRICS.http_request(
                        request.method().as_str(),
                        request.match_pattern().as_deref(),
                        response.status().as_str(),
                        started.elapsed().as_secs_f64(),
                    );
                    Ok(unless_failed(without_stream_for_head(response), &health))
                }
            })
    })
    .on_connect(super::connection::remember_socket)
    .bind(&options.listen)?
    .disable_signals()
    .run();
    let handle = server.handle();
    let running = actix_web::rt::spawn(server);
    tokio::select! {
        () = stop => {}
        reason = health.failed() => {
            // Crash-only: the state in memory may hold events the log lost, so nothing more is
            // answered from it; a restart rebuilds it from the log.
            bus.close();
            handle.stop(false).await;
            return Err(std::io::Error::other(format!(
                "the event log failed ({reason}); exiting so that a restart recovers from the log"
            )));
        }
    }
    // A cluster node hands its partitions over first, while it still forwards what it is
    // asked to their new owners.
    engine.leave().await;
    // Listeners would hold the graceful stop until they go away on their own.
    bus.close();
    handle.stop(true).await;
    let served = running.await.map_err(std::io::Error::other)?;
    // The partition stores catch up, so the next start has no log or journal to replay.
    engine.seal().await;
    served
}

/// The server leaves the body out of an answer to HEAD; a streamed one (a live log, server-sent
/// events) is dropped at once rather than read to its end for nothing.
fn without_stream_for_head<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> ServiceResponse<BoxBody> {
    let head = response.request().method() == Method::HEAD;
    response.map_body(|_, body| {
        if head && body.size() == BodySize::Stream {
            BoxBody::new(BodyStream::new(futures::stream::empty::<
                Result<actix_web::web::Bytes, std::convert::Infallible>,
            >()))
        } else {
            body.boxed()
        }
    })
}

/// After a failed append no answer may come from the state in memory, whatever a handler made
/// of it (a task missing from a failed shard would read as a 404): it is replaced by a 503 while
/// the process exits.
fn unless_failed(
    response: ServiceResponse<BoxBody>,
    health: &LogHealth,
) -> ServiceResponse<BoxBody> {
    let Some(reason) = health.failure() else {
        return response;
    };
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        return response;
    }
    let error = ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("the event log failed ({reason}); this server is restarting"),
    );
    let call = CallInfo {
        method: "unknown",
        ..CallInfo::default()
    };
    response.into_response(response::error(&error, &call, Timestamp::now()))
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
                .route("/ping", get().to(ping))
                .route("/__cluster__", get().to(super::node::cluster))
                .configure(monitoring)
                .configure(routes::configure),
        )
        .service(
            web::scope("/api/auth/v1")
                .wrap(response::api_headers())
                .route("/ping", get().to(ping))
                .configure(monitoring)
                .configure(super::services::auth::configure),
        )
        .service(
            web::scope("/api/hooks/v1")
                .wrap(response::api_headers())
                .route("/ping", get().to(ping))
                .configure(monitoring)
                .configure(super::services::hooks::configure),
        )
        .service(
            web::scope("/api/secrets/v1")
                .wrap(response::api_headers())
                .route("/ping", get().to(ping))
                .configure(monitoring)
                .configure(super::services::secrets::configure),
        )
        .service(
            web::scope("/api/index/v1")
                .wrap(response::api_headers())
                .route("/ping", get().to(ping))
                .configure(monitoring)
                .configure(super::services::index::configure),
        )
        .service(
            web::resource("/blobs/{taskId}/{runId}/{name:.+}")
                .wrap_fn(super::node::to_owner)
                .route(web::put().to(blobs::put))
                .route(get().to(blobs::get))
                .default_service(web::to(response::not_found)),
        )
        .service(
            web::resource("/livelog/{taskId}/{runId}")
                .wrap_fn(super::node::to_owner)
                .route(web::post().to(live_logs::push))
                .route(get().to(live_logs::follow))
                .default_service(web::to(response::not_found)),
        )
        .route("/shell", get().to(sessions::page::page_directory))
        .route("/shell/", get().to(sessions::page::page))
        .route("/shell/xterm/{path:.+}", get().to(sessions::page::xterm))
        .service(
            web::scope("/api/events/v1")
                .route("/listen", get().to(events::listen))
                .route("/sse", get().to(events::sse)),
        )
        .route(
            crate::engine::cluster::wire::PATH,
            web::post().to(super::node::call),
        )
        .route("/metrics", get().to(metrics))
        .configure(monitoring)
        .configure(super::console::configure)
        .default_service(web::to(response::not_found));
}

/// Dockerflow's monitoring routes, at the root and, as the official clients call them, under
/// the API's base path.
fn monitoring(config: &mut web::ServiceConfig) {
    config
        .route("/__lbheartbeat__", get().to(heartbeat))
        .route("/__heartbeat__", get().to(heartbeat))
        .route("/__version__", get().to(version));
}

/// 503 once the event log has failed (the process is about to exit), for the health routes.
fn unhealthy(state: &State) -> Option<HttpResponse> {
    let reason = state.engine.health().failure()?;
    Some(response::json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"alive": false, "message": format!("the event log failed: {reason}")}),
    ))
}

async fn ping(state: web::Data<State>) -> HttpResponse {
    if let Some(unhealthy) = unhealthy(&state) {
        return unhealthy;
    }
    response::json(
        StatusCode::OK,
        &json!({"alive": true, "uptime": state.started.elapsed().as_secs_f64()}),
    )
}

/// Prometheus's text format.
async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(METRICS.render())
}

async fn heartbeat(state: web::Data<State>) -> HttpResponse {
    unhealthy(&state).unwrap_or_else(|| response::json(StatusCode::OK, &json!({})))
}

async fn version() -> HttpResponse {
    response::json(
        StatusCode::OK,
        &json!({"source": "taskfold", "version": env!("CARGO_PKG_VERSION")}),
    )
}
