//! `taskfold bench tasks`: whole tasks through a queue and its workers. Creates `tasks` tasks
//! with one payload, `concurrency` at a time, and reports each task's time from scheduled to
//! resolved as the queue recorded them (so polling the status adds nothing to it), and the
//! throughput. `--baseline CMD` runs a shell command as many times, one after another, for the
//! side-by-side figure: the same work without the queue (e.g. `docker run --rm IMG true`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::lifecycle::CallLatencies;
use super::{Error, QueueClient};
use crate::model::{Slugid, Timestamp};

/// How often a waiting task's status is read.
const POLL: Duration = Duration::from_millis(25);

pub struct Options {
    pub task_queue_id: String,
    pub payload: Value,
    pub tasks: u64,
    pub concurrency: usize,
    pub baseline: Option<String>,
}

pub struct Report {
    pub tasks: u64,
    pub elapsed: Duration,
    /// Scheduled → resolved, by the queue's clock.
    pub latencies: CallLatencies,
    pub not_completed: u64,
    pub baseline: Option<(String, CallLatencies)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} tasks in {:.2} s: {:.2} tasks/s ({} not completed)",
            self.tasks,
            self.elapsed.as_secs_f64(),
            self.tasks as f64 / self.elapsed.as_secs_f64(),
            self.not_completed
        )?;
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, latencies: &CallLatencies| {
            writeln!(
                f,
                "  {name:<22} p50 {:>9.2?}  p90 {:>9.2?}  max {:>9.2?}  ({} runs)",
                latencies.percentile(0.5),
                latencies.percentile(0.9),
                latencies.percentile(1.0),
                latencies.samples.len()
            )
        };
        line(f, "scheduled → resolved", &self.latencies)?;
        if let Some((command, baseline)) = &self.baseline {
            line(f, "baseline", baseline)?;
            writeln!(
                f,
                "  overhead ratio (p50): {:.2}  [baseline: {command}]",
                self.latencies.percentile(0.5).as_secs_f64()
                    / baseline.percentile(0.5).as_secs_f64()
            )?;
        }
        Ok(())
    }
}

pub async fn run(client: QueueClient, options: Options) -> Result<Report, Error> {
    let next = Rc::new(RefCell::new(0u64));
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let not_completed = Rc::new(RefCell::new(0u64));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..options.concurrency.max(1) {
        let (client, next, latencies, not_completed) = (
            client.clone(),
            next.clone(),
            latencies.clone(),
            not_completed.clone(),
        );
        let (queue, payload, tasks) = (
            options.task_queue_id.clone(),
            options.payload.clone(),
            options.tasks,
        );
        clients.push(actix_web::rt::spawn(async move {
            loop {
                {
                    let mut next = next.borrow_mut();
                    if *next >= tasks {
                        return Ok::<(), Error>(());
                    }
                    *next += 1;
                }
                let (took, state) = one_task(&client, &queue, &payload).await?;
                latencies.borrow_mut().push(took);
                if state != "completed" {
                    *not_completed.borrow_mut() += 1;
                }
            }
        }));
    }
    for client in clients {
        client
            .await
            .map_err(|error| Error::Bench(error.to_string()))??;
    }
    let elapsed = started.elapsed();
    let baseline = match &options.baseline {
        Some(command) => Some((command.clone(), baseline(command, options.tasks).await?)),
        None => None,
    };
    Ok(Report {
        tasks: options.tasks,
        elapsed,
        latencies: CallLatencies {
            method: "task",
            samples: latencies.take(),
        },
        not_completed: not_completed.take(),
        baseline,
    })
}

/// Creates one task and waits for it; its scheduled → resolved time and final state.
async fn one_task(
    client: &QueueClient,
    task_queue_id: &str,
    payload: &Value,
) -> Result<(Duration, String), Error> {
    let task_id = Slugid::nice();
    let now = Timestamp::now();
    let definition = json!({
        "taskQueueId": task_queue_id,
        "schedulerId": "taskfold-bench",
        "taskGroupId": task_id.to_string(),
        "created": now.to_string(),
        "deadline": now.plus_millis(3_600_000).to_string(),
        "expires": now.plus_millis(86_400_000).to_string(),
        "payload": payload,
        "metadata": {"name": "bench", "description": "taskfold bench tasks",
                     "owner": "bench@taskfold.invalid", "source": "https://taskfold.invalid"},
    });
    client
        .create_task::<serde::de::IgnoredAny>(task_id, &definition)
        .await?;
    loop {
        let status = client.status(&task_id.to_string()).await?["status"].clone();
        let state = status["state"].as_str().unwrap_or_default();
        if matches!(state, "completed" | "failed" | "exception") {
            let run = &status["runs"][0];
            let at = |field: &str| {
                run[field]
                    .as_str()
                    .and_then(|text| text.parse::<Timestamp>().ok())
                    .map_or(0, Timestamp::millis)
            };
            let took = Duration::from_millis((at("resolved") - at("scheduled")).max(0) as u64);
            return Ok((took, state.to_owned()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `command` with `sh -c` `times` times, one after another.
async fn baseline(command: &str, times: u64) -> Result<CallLatencies, Error> {
    let mut samples = Vec::new();
    for _ in 0..times {
        let started = Instant::now();
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .map_err(|error| Error::Bench(format!("running `{command}`: {error}")))?;
        if !status.success() {
            return Err(Error::Bench(format!("`{command}` failed: {status}")));
        }
        samples.push(started.elapsed());
    }
    Ok(CallLatencies {
        method: "baseline",
        samples,
    })
}
