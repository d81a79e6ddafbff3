//! `taskfold serve`: the HTTP server of the Queue API under `<rootUrl>/api/queue/v1/`.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;

use super::response;

/// Where the server listens and how it is reached.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: String,
    /// The deployment's root URL; clients build `<rootUrl>/api/queue/v1/...` from it.
    pub root_url: String,
}

struct ServerState {
    started: Instant,
}

/// Serves until the process is stopped.
pub async fn serve(options: Options) -> std::io::Result<()> {
    let state = web::Data::new(ServerState {
        started: Instant::now(),
    });
    tracing::info!(
        listen = options.listen.as_str(),
        root_url = options.root_url.as_str(),
        "serving the queue"
    );
    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::Compress::default())
            .service(
                web::scope("/api/queue/v1")
                    .wrap(response::api_headers())
                    .route("/ping", web::get().to(ping)),
            )
            .route("/__lbheartbeat__", web::get().to(heartbeat))
            .route("/__heartbeat__", web::get().to(heartbeat))
            .route("/__version__", web::get().to(version))
            .default_service(web::to(|| async { response::not_found() }))
    })
    .bind(&options.listen)?
    .run()
    .await
}

async fn ping(state: web::Data<ServerState>) -> HttpResponse {
    response::json(
        StatusCode::OK,
        &json!({"alive": true, "uptime": state.started.elapsed().as_secs_f64()}),
    )
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
