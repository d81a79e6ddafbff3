//! `taskfold input list|answer`: the requests for input of INPUT tasks, seen and answered from
//! the terminal through the queue's input routes (`schemas/input-payload.json`).

use awc::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::tasks::every_page;
use super::{Error, QueueClient};

/// Which requests `input list` shows.
pub enum Listed {
    /// Those waiting in every task queue (`listTaskQueues`, then each queue's).
    All,
    /// Those waiting in a task queue.
    Queue(String),
    /// Those of every run of a task, whatever their state.
    Task(String),
}

/// The requests `listed` names, as the queue shows them.
pub async fn list(client: &QueueClient, listed: &Listed) -> Result<Vec<Value>, Error> {
    match listed {
        Listed::All => {
            let mut inputs = Vec::new();
            for task_queue_id in task_queues(client).await? {
                inputs.extend(waiting_in(client, &task_queue_id).await?);
            }
            Ok(inputs)
        }
        Listed::Queue(task_queue_id) => waiting_in(client, task_queue_id).await,
        Listed::Task(task_id) => {
            let status = client.status(task_id).await?;
            let runs = status["status"]["runs"].as_array().map_or(0, Vec::len);
            let mut inputs = Vec::new();
            for run_id in 0..runs {
                match client
                    .call(Method::GET, &input_path(task_id, run_id as u64), None)
                    .await
                {
                    Ok(input) => inputs.push(input),
                    Err(error) if error.status() == Some(StatusCode::NOT_FOUND) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(inputs)
        }
    }
}

/// The requests waiting in one task queue.
async fn waiting_in(client: &QueueClient, task_queue_id: &str) -> Result<Vec<Value>, Error> {
    let queue = task_queue_id.replace('/', "%2F");
    every_page(client, &format!("/task-queues/{queue}/input"), "inputs").await
}

/// Every task queue the queue knows.
async fn task_queues(client: &QueueClient) -> Result<Vec<String>, Error> {
    let listed = every_page(client, "/task-queues", "taskQueues").await?;
    Ok(listed
        .iter()
        .filter_map(|queue| queue["taskQueueId"].as_str().map(str::to_owned))
        .collect())
}

/// One request as a line: task, run, state, when it expires, and the question.
pub fn line(input: &Value) -> String {
    let text = |field: &str| input[field].as_str().unwrap_or_default().to_owned();
    format!(
        "{}\t{}\t{}\t{}\t{}",
        text("taskId"),
        input["runId"],
        text("state"),
        text("expires"),
        text("request")
    )
}

/// Answers the request of run `run_id` (default: the task's latest run) with `response`:
/// JSON when it reads as JSON, else the text itself. The request as it is then.
pub async fn answer(
    client: &QueueClient,
    task_id: &str,
    run_id: Option<u64>,
    response: &str,
) -> Result<Value, Error> {
    let run_id = match run_id {
        Some(run_id) => run_id,
        None => {
            let status = client.status(task_id).await?;
            let runs = status["status"]["runs"].as_array().map_or(0, Vec::len);
            runs.saturating_sub(1) as u64
        }
    };
    let response: Value =
        serde_json::from_str(response).unwrap_or_else(|_| Value::String(response.to_owned()));
    client
        .call(
            Method::POST,
            &input_path(task_id, run_id),
            Some(&json!({ "response": response })),
        )
        .await
}

fn input_path(task_id: &str, run_id: u64) -> String {
    format!("/task/{task_id}/runs/{run_id}/input")
}
