//! `taskfold task run|status|log|artifacts|history`: a user's view of tasks from the terminal.
//! `run` creates a Docker task, follows its live log to standard output run after run, and
//! exits with the task's result: 0 completed, 1 failed, 3 exception.

use std::io::Write;
use std::time::Duration;

use awc::http::{Method, StatusCode};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Error, QueueClient};
use crate::model::{Slugid, Timestamp};

/// How often `run` and `log` look for a run's log or resolution.
const POLL: Duration = Duration::from_millis(200);

/// What `task run` creates.
pub struct RunOptions {
    pub image: String,
    pub task_queue_id: String,
    pub command: Vec<String>,
    pub max_run_time: u64,
    /// `features.interactive`: sessions may be opened into the running task.
    pub interactive: bool,
}

/// The process exit status for a task's state.
pub fn exit_status(state: &str) -> u8 {
    match state {
        "completed" => 0,
        "failed" => 1,
        _ => 3,
    }
}

fn date_in(millis: i64) -> String {
    Timestamp::now().plus_millis(millis).to_string()
}

/// Creates the task and follows it to its end; returns its final state.
/// The definition of a docker-worker task of `options`.
pub fn definition(task_id: Slugid, options: &RunOptions) -> Value {
    let mut definition = json!({
        "taskQueueId": options.task_queue_id,
        "schedulerId": "taskfold-cli",
        "taskGroupId": task_id.to_string(),
        "created": date_in(0),
        "deadline": date_in(24 * 3600 * 1000),
        "expires": date_in(30 * 24 * 3600 * 1000),
        "payload": {
            "image": options.image,
            "command": options.command,
            "maxRunTime": options.max_run_time,
        },
        "metadata": {
            "name": format!("taskfold task run {}", options.image),
            "description": options.command.join(" "),
            "owner": "taskfold-cli@localhost",
            "source": "https://taskfold.invalid/cli",
        },
    });
    if options.interactive {
        definition["payload"]["features"] = json!({ "interactive": true });
    }
    definition
}

pub async fn run(client: &QueueClient, options: RunOptions) -> Result<String, Error> {
    let task_id = Slugid::nice();
    let definition = definition(task_id, &options);
    client
        .create_task::<serde::de::IgnoredAny>(task_id, &definition)
        .await?;
    eprintln!(
        "task {task_id} on {}: {}/tasks/{task_id}",
        options.task_queue_id,
        client.root_url()
    );
    follow(client, &task_id.to_string(), None).await
}

/// Streams the log of run `run` (default: every run, as each starts) to standard output, and
/// returns the task's final state.
pub async fn follow(
    client: &QueueClient,
    task_id: &str,
    only_run: Option<u64>,
) -> Result<String, Error> {
    let mut run_id = only_run.unwrap_or(0);
    loop {
        // Wait for the run to exist and to have started (or ended without starting).
        let status = loop {
            let status = client.status(task_id).await?["status"].clone();
            let runs = status["runs"].as_array().cloned().unwrap_or_default();
            match runs.get(run_id as usize).map(|run| run["state"].as_str()) {
                Some(Some("pending")) | None if !is_resolved(&status) => {
                    tokio::time::sleep(POLL).await
                }
                _ => break status,
            }
        };
        if status["runs"]
            .as_array()
            .is_some_and(|runs| runs.len() > run_id as usize)
        {
            if run_id > 0 || only_run.is_some() {
                eprintln!("--- run {run_id} ---");
            }
            if let Some(printed) = stream_log(client, task_id, run_id).await? {
                // The live stream broke off: the rest will be in the backing log.
                run_end(client, task_id, run_id).await?;
                let backing = format!(
                    "{}/artifacts/public/logs/live_backing.log",
                    run_path(task_id, run_id)
                );
                copy_artifact(client, &backing, printed).await?;
            }
        }
        let status = run_end(client, task_id, run_id).await?;
        let runs = status["runs"].as_array().map_or(0, Vec::len) as u64;
        if only_run.is_some() || run_id + 1 >= runs && is_resolved(&status) {
            let run = &status["runs"][run_id as usize];
            let state = status["state"].as_str().unwrap_or("exception").to_owned();
            eprintln!(
                "task {task_id}: {state} ({})",
                run["reasonResolved"].as_str().unwrap_or("")
            );
            return Ok(state);
        }
        run_id += 1;
    }
}

fn is_resolved(status: &Value) -> bool {
    matches!(
        status["state"].as_str(),
        Some("completed" | "failed" | "exception")
    )
}

fn run_path(task_id: &str, run_id: u64) -> String {
    format!("/task/{task_id}/runs/{run_id}")
}

/// The task's status once run `run_id` is neither pending nor running.
async fn run_end(client: &QueueClient, task_id: &str, run_id: u64) -> Result<Value, Error> {
    loop {
        if let Some(status) = ended(client, task_id, run_id).await? {
            return Ok(status);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The task's status if run `run_id` is neither pending nor running (any more).
async fn ended(client: &QueueClient, task_id: &str, run_id: u64) -> Result<Option<Value>, Error> {
    let status = client.status(task_id).await?["status"].clone();
    let state = status["runs"][run_id as usize]["state"]
        .as_str()
        .unwrap_or("");
    Ok((state != "running" && state != "pending").then_some(status))
}

/// Copies run `run_id`'s log to standard output: the live log while the run runs (the
/// artifact redirects there), or the backing log once it is done. `Some(bytes printed)` when
/// the stream broke off before its end.
async fn stream_log(
    client: &QueueClient,
    task_id: &str,
    run_id: u64,
) -> Result<Option<u64>, Error> {
    let path = format!(
        "{}/artifacts/public/logs/live.log",
        run_path(task_id, run_id)
    );
    loop {
        match copy_artifact(client, &path, 0).await? {
            Copied::Whole => return Ok(None),
            Copied::BrokeAfter(printed) => return Ok(Some(printed)),
            Copied::Absent => {}
        }
        // The worker creates the log artifact right after its claim.
        if ended(client, task_id, run_id).await?.is_some() {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

enum Copied {
    Whole,
    BrokeAfter(u64),
    /// The artifact does not exist (yet).
    Absent,
}

/// Copies an artifact's content, from byte `skip` on, to standard output.
async fn copy_artifact(client: &QueueClient, path: &str, skip: u64) -> Result<Copied, Error> {
    let url = format!("{}{path}", client.api_url());
    let transport = |reason: String| Error::Transport {
        method: Method::GET,
        path: path.to_owned(),
        reason,
    };
    let mut response = client
        .http()
        .get(&url)
        .timeout(Duration::from_secs(24 * 3600))
        .send()
        .await
        .map_err(|error| transport(error.to_string()))?;
    if response.status() != StatusCode::OK {
        return Ok(Copied::Absent);
    }
    let mut stdout = std::io::stdout();
    let mut seen = 0u64;
    let mut printed = 0u64;
    while let Some(chunk) = response.next().await {
        let Ok(chunk) = chunk else {
            return Ok(Copied::BrokeAfter(printed));
        };
        let start = skip.saturating_sub(seen).min(chunk.len() as u64) as usize;
        seen += chunk.len() as u64;
        let _ = stdout.write_all(&chunk[start..]);
        let _ = stdout.flush();
        printed = seen;
    }
    Ok(Copied::Whole)
}

/// The artifacts of a run (default: the latest), one per line.
pub async fn artifacts(
    client: &QueueClient,
    task_id: &str,
    run_id: Option<u64>,
) -> Result<Vec<Value>, Error> {
    let path = match run_id {
        Some(run_id) => format!("/task/{task_id}/runs/{run_id}/artifacts"),
        None => format!("/task/{task_id}/artifacts"),
    };
    every_page(client, &path, "artifacts").await
}

/// Every event of the task's history (`GET /task/<taskId>/history`), in order.
pub async fn history(client: &QueueClient, task_id: &str) -> Result<Vec<Value>, Error> {
    every_page(client, &format!("/task/{task_id}/history"), "events").await
}

/// The items under `field` of every page of the listing at `path`, following
/// `continuationToken`.
pub(super) async fn every_page(
    client: &QueueClient,
    path: &str,
    field: &str,
) -> Result<Vec<Value>, Error> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page_path = match &token {
            Some(token) => format!("{path}?continuationToken={token}"),
            None => path.to_owned(),
        };
        let page = client.call(Method::GET, &page_path, None).await?;
        items.extend(page[field].as_array().cloned().unwrap_or_default());
        match page["continuationToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return Ok(items),
        }
    }
}

/// One event of a task's history as a line: time, kind, what it concerns, who caused it
/// (`queue` for the queue itself) and where the log holds it.
pub fn history_line(event: &Value) -> String {
    let text = |name: &str| event[name].as_str();
    let mut line = format!(
        "{}  {:<20}",
        text("time").unwrap_or("-"),
        text("kind").unwrap_or("-")
    );
    if let Some(run_id) = event["runId"].as_u64() {
        line.push_str(&format!("  run {run_id}"));
    }
    for (label, name) in [
        ("reason", "reasonCreated"),
        ("reason", "reasonResolved"),
        ("dependency", "dependency"),
        ("priority", "priority"),
        ("artifact", "name"),
        ("session", "sessionId"),
    ] {
        if let Some(value) = text(name) {
            line.push_str(&format!("  {label} {value}"));
        }
    }
    if let (Some(group), Some(worker)) = (text("workerGroup"), text("workerId")) {
        line.push_str(&format!("  worker {group}/{worker}"));
    }
    line.push_str(&format!(
        "  by {}  (partition {}, offset {})",
        text("clientId").unwrap_or("queue"),
        event["partition"],
        event["offset"]
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_line_says_what_who_and_where() {
        let claimed = json!({
            "kind": "run-claimed", "time": "2025-11-22T08:26:40.000Z", "clientId": "worker/w1",
            "workerGroup": "wg", "workerId": "w1", "runId": 0, "partition": 2, "offset": 41,
        });
        assert_eq!(
            history_line(&claimed),
            "2025-11-22T08:26:40.000Z  run-claimed           run 0  worker wg/w1  by worker/w1  \
             (partition 2, offset 41)"
        );
        let expired = json!({
            "kind": "run-resolved", "time": "2025-11-22T08:46:40.000Z", "runId": 0,
            "reasonResolved": "claim-expired", "workerGroup": "wg", "workerId": "w1",
            "partition": 2, "offset": 42,
        });
        assert_eq!(
            history_line(&expired),
            "2025-11-22T08:46:40.000Z  run-resolved          run 0  reason claim-expired  \
             worker wg/w1  by queue  (partition 2, offset 42)"
        );
    }
}
