//! `taskfold bench restart`: fills a log with tasks through the engine (the path createTask
//! takes, without HTTP), so that a restart on it can be timed.

use futures::StreamExt;
use serde_json::json;

use super::Engine;
use crate::model::{ApiError, CreateTaskRequest, Slugid, Timestamp};

/// Creates `tasks` pending tasks (each its own group) through `engine`, `concurrency` at a
/// time, and waits until the snapshots they caused are written. Returns how many were created.
pub async fn fill(engine: &Engine, tasks: u64, concurrency: usize) -> Result<u64, ApiError> {
    let task_queue_id = "bench/restart";
    let created = futures::stream::iter(0..tasks)
        .map(|_| {
            let engine = engine.clone();
            async move {
                let now = Timestamp::now();
                let task_id = Slugid::nice();
                let body = json!({
                    "taskQueueId": task_queue_id,
                    "created": now,
                    "deadline": now.plus_millis(24 * 3_600_000),
                    "payload": {"image": "debian:stable", "command": ["make", "-j8", "check"]},
                    "metadata": {
                        "name": "restart bench",
                        "description": "a task that waits in the queue",
                        "owner": "bench@taskfold.invalid",
                        "source": "https://taskfold.invalid/bench"
                    }
                });
                let request = CreateTaskRequest::from_json(body.to_string().as_bytes())?;
                let definition = request.into_definition(task_id)?;
                engine.create_task(task_id, definition).await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .fold(Ok::<u64, ApiError>(0), |count, outcome| async move {
            outcome?;
            Ok(count? + 1)
        })
        .await?;
    engine.snapshots_written().await;
    Ok(created)
}
