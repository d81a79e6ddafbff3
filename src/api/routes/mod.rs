//! The Queue API's endpoints, grouped as Taskcluster's reference groups them. Each handler
//! checks the request in Taskcluster's order (see [`Call`](super::call::Call)), turns it into
//! a command for the engine, and replies with Taskcluster's response shape.

pub(super) mod artifacts;
mod groups;
mod history;
mod input;
mod queues;
pub(super) mod tasks;
pub(super) mod work;

use actix_web::{guard, web};

use super::response;
use super::sessions;
use crate::auth::ScopeExpression;
use crate::model::{ApiError, ErrorCode};

/// Registers every endpoint under the API's base path. A path that exists with another method
/// answers as an unknown route does (Taskcluster's router knows no 405).
pub fn configure(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(response::not_found));
    // Resources are tried in order, so a task's lifecycle (createTask, claimWork, reclaimTask,
    // reportCompleted), which carries most of the traffic, comes first.
    config
        .service(
            resource("/task/{taskId}")
                .route(get().to(tasks::task))
                .route(web::put().to(tasks::create_task)),
        )
        .service(resource("/claim-work/{taskQueueId:.+}").route(web::post().to(work::claim_work)))
        .service(
            resource("/task/{taskId}/runs/{runId}/reclaim")
                .route(web::post().to(work::reclaim_task)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/claim").route(web::post().to(work::claim_task)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/completed")
                .route(web::post().to(work::report_completed)),
        )
        .service(resource("/task/{taskId}/status").route(get().to(tasks::status)))
        .service(resource("/task/{taskId}/schedule").route(web::post().to(tasks::schedule_task)))
        .service(resource("/task/{taskId}/rerun").route(web::post().to(tasks::rerun_task)))
        .service(resource("/task/{taskId}/cancel").route(web::post().to(tasks::cancel_task)))
        .service(
            resource("/task/{taskId}/runs/{runId}/failed")
                .route(web::post().to(work::report_failed)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/exception")
                .route(web::post().to(work::report_exception)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/sessions")
                .route(web::post().to(sessions::create_session))
                .route(get().to(sessions::list_sessions)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/sessions/{sessionId}/close")
                .route(web::post().to(sessions::close_session)),
        )
        .service(
            resource("/sessions/{sessionId}/socket").route(get().to(sessions::user_socket)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/socket/{framing}/{ticket}")
                .route(get().to(sessions::ticket_socket)),
        )
        .service(
            resource("/sessions/{sessionId}/worker").route(get().to(sessions::worker_socket)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/interactive")
                .route(get().to(sessions::control_socket)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/input")
                .route(get().to(input::get_input))
                .route(web::put().to(input::request_input))
                .route(web::post().to(input::answer_input)),
        )
        .service(resource("/pending/{taskQueueId:.+}").route(get().to(work::pending_tasks)))
        .service(
            resource("/task/{taskId}/priority").route(web::post().to(tasks::change_task_priority)),
        )
        .service(resource("/tasks").route(web::post().to(tasks::tasks)))
        .service(resource("/tasks/status").route(web::post().to(tasks::statuses)))
        .service(
            resource("/task/{taskId}/dependents").route(get().to(tasks::list_dependent_tasks)),
        )
        .service(resource("/task/{taskId}/history").route(get().to(history::task_history)))
        .service(
            resource("/task-group/{taskGroupId}/list")
                .route(get().to(groups::list_task_group)),
        )
        .service(resource("/task-group/{taskGroupId}").route(get().to(groups::get_task_group)))
        .service(resource("/task-groups").route(get().to(groups::list_recent_task_groups)))
        .service(
            resource("/task-group/{taskGroupId}/seal")
                .route(web::post().to(groups::seal_task_group)),
        )
        .service(
            resource("/task-group/{taskGroupId}/cancel")
                .route(web::post().to(groups::cancel_task_group)),
        )
        .service(
            resource("/task-group/{taskGroupId}/priority")
                .route(web::post().to(groups::change_task_group_priority)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/artifacts/{name:.+}")
                .route(web::post().to(artifacts::create_artifact))
                .route(web::put().to(artifacts::finish_artifact))
                .route(get().to(artifacts::get_artifact)),
        )
        .service(
            resource("/task/{taskId}/artifacts/{name:.+}")
                .route(get().to(artifacts::get_latest_artifact)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/artifacts")
                .route(get().to(artifacts::list_artifacts)),
        )
        .service(
            resource("/task/{taskId}/artifacts")
                .route(get().to(artifacts::list_latest_artifacts)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/artifact-info/{name:.+}")
                .route(get().to(artifacts::artifact_info)),
        )
        .service(
            resource("/task/{taskId}/artifact-info/{name:.+}")
                .route(get().to(artifacts::latest_artifact_info)),
        )
        .service(
            resource("/task/{taskId}/runs/{runId}/artifact-content/{name:.+}")
                .route(get().to(artifacts::artifact)),
        )
        .service(
            resource("/task/{taskId}/artifact-content/{name:.+}")
                .route(get().to(artifacts::latest_artifact)),
        )
        // The task queue id holds a `/`: the longer routes go first.
        .service(
            resource("/task-queues/counts")
                .route(web::post().to(queues::task_queue_counts_batch)),
        )
        .service(
            resource("/task-queues/{taskQueueId:.+}/counts")
                .route(get().to(queues::task_queue_counts)),
        )
        .service(
            resource("/task-queues/{taskQueueId:.+}/pending")
                .route(get().to(queues::list_pending_tasks)),
        )
        .service(
            resource("/task-queues/{taskQueueId:.+}/claimed")
                .route(get().to(queues::list_claimed_tasks)),
        )
        .service(
            resource("/task-queues/{taskQueueId:.+}/input").route(get().to(input::list_input)),
        )
        .service(resource("/task-queues").route(get().to(queues::list_task_queues)))
        .service(
            resource("/task-queues/{taskQueueId:.+}").route(get().to(queues::get_task_queue)),
        )
        .service(resource("/provisioners").route(get().to(queues::list_provisioners)))
        .service(
            resource("/provisioners/{provisionerId}")
                .route(get().to(queues::get_provisioner)),
        )
        .service(
            resource("/provisioners/{provisionerId}/worker-types")
                .route(get().to(queues::list_worker_types)),
        )
        .service(
            resource("/provisioners/{provisionerId}/worker-types/{workerType}")
                .route(get().to(queues::get_worker_type)),
        )
        .service(
            resource("/provisioners/{provisionerId}/worker-types/{workerType}/workers")
                .route(get().to(queues::list_workers)),
        )
        .service(
            resource(
                "/provisioners/{provisionerId}/worker-types/{workerType}/workers/{workerGroup}/{workerId}",
            )
            .route(get().to(queues::get_worker))
            .route(web::put().to(queues::quarantine_worker)),
        )
        .service(
            resource("/provisioners/{provisionerId}/worker-types/{workerType}/{workerGroup}/{workerId}")
                .route(web::put().to(queues::declare_worker)),
        );
}

/// A GET route that answers HEAD too, as Taskcluster's framework does: the same status and
/// headers, no body (the server leaves it out).
pub(super) fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// `InputValidationError` naming the input schema and each problem, if there are any.
pub(super) fn input_problems(schema: &str, problems: Vec<String>) -> Result<(), ApiError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InputValidationError,
        format!(
            "the request does not match {schema}:\n{}",
            problems.join("\n")
        ),
    ))
}

/// An endpoint's scope template, from Taskcluster's JSON form (for `static` templates).
pub(super) fn template(json: serde_json::Value) -> ScopeExpression {
    ScopeExpression::from_json(&json).expect("endpoint scope templates are valid")
}
