//! The Queue API's endpoints, grouped as Taskcluster's reference groups them. Each handler
//! checks the request in Taskcluster's order (see [`Call`](super::call::Call)), turns it into
//! a command for the engine, and replies with Taskcluster's response shape.

mod tasks;
mod work;

use actix_web::web;

use super::response;
use crate::auth::ScopeExpression;

/// Registers every endpoint under the API's base path. A path that exists with another method
/// answers as an unknown route does (Taskcluster's router knows no 405).
pub fn configure(config: &mut web::ServiceConfig) {
    let resource = |path: &str| {
        web::resource(path).default_service(web::to(|| async { response::not_found() }))
    };
    config
        .service(
            resource("/task/{taskId}")
                .route(web::get().to(tasks::task))
                .route(web::put().to(tasks::create_task)),
        )
        .service(resource("/task/{taskId}/status").route(web::get().to(tasks::status)))
        .service(resource("/task/{taskId}/schedule").route(web::post().to(tasks::schedule_task)))
        .service(resource("/task/{taskId}/rerun").route(web::post().to(tasks::rerun_task)))
        .service(resource("/task/{taskId}/cancel").route(web::post().to(tasks::cancel_task)))
        .service(resource("/claim-work/{taskQueueId:.+}").route(web::post().to(work::claim_work)))
        .service(
            resource("/task/{taskId}/runs/{runId}/reclaim")
                .route(web::post().to(work::reclaim_task)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/completed")
                .route(web::post().to(work::report_completed)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/failed")
                .route(web::post().to(work::report_failed)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/exception")
                .route(web::post().to(work::report_exception)),
        )
        .service(resource("/pending/{taskQueueId:.+}").route(web::get().to(work::pending_tasks)));
}

/// An endpoint's scope template, from Taskcluster's JSON form (for `static` templates).
fn template(json: serde_json::Value) -> ScopeExpression {
    ScopeExpression::from_json(&json).expect("endpoint scope templates are valid")
}
