//! `taskfold bench shell`: what a session costs, through the queue's relay and a worker on
//! this machine. Keystrokes go one at a time to `cat` on a raw terminal, each timed until its
//! echo is back; then a session streams `--bulk-mib` of output without a terminal.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::QueueClient;
use super::lifecycle::CallLatencies;
use super::shell::{Connection, End, create_session};
use super::tasks::{RunOptions, definition};
use crate::model::Slugid;
use crate::model::interactive::Frame;

pub struct Options {
    pub task_queue_id: String,
    pub image: String,
    pub keystrokes: usize,
    pub bulk_bytes: u64,
}

pub struct Report {
    pub keystrokes: CallLatencies,
    pub bulk_bytes: u64,
    pub bulk_elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let millis = |fraction: f64| self.keystrokes.percentile(fraction).as_secs_f64() * 1000.0;
        writeln!(
            f,
            "keystroke echo ({} keys): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.keystrokes.samples.len(),
            millis(0.5),
            millis(0.99),
            millis(1.0),
        )?;
        let mib = self.bulk_bytes as f64 / f64::from(1 << 20);
        write!(
            f,
            "bulk output: {mib:.0} MiB in {:.2} s = {:.1} MiB/s",
            self.bulk_elapsed.as_secs_f64(),
            mib / self.bulk_elapsed.as_secs_f64().max(1e-9)
        )
    }
}

pub async fn run(client: &QueueClient, options: Options) -> anyhow::Result<Report> {
    let task_id = Slugid::nice();
    let task = RunOptions {
        image: options.image.clone(),
        task_queue_id: options.task_queue_id.clone(),
        command: ["sh", "-c", "sleep 3600"].map(str::to_owned).to_vec(),
        max_run_time: 3600,
        interactive: true,
    };
    client
        .create_task::<serde::de::IgnoredAny>(task_id, &definition(task_id, &task))
        .await?;
    let task_id = task_id.to_string();
    let result = measure(client, &task_id, &options).await;
    let _ = client
        .call(
            awc::http::Method::POST,
            &format!("/task/{task_id}/cancel"),
            None,
        )
        .await;
    result
}

async fn measure(client: &QueueClient, task_id: &str, options: &Options) -> anyhow::Result<Report> {
    wait_running(client, task_id).await?;
    // Keystrokes: `cat` on a raw terminal without echo sends each byte straight back.
    let request = json!({"command": ["sh", "-c", "stty raw -echo; echo ready; exec cat"]});
    let mut session = open(client, task_id, &request).await?;
    read_until(&mut session, b"ready").await?;
    let mut keystrokes = CallLatencies {
        method: "keystroke",
        samples: Vec::with_capacity(options.keystrokes),
    };
    for index in 0..options.keystrokes {
        let key = b'a' + (index % 26) as u8;
        let sent = Instant::now();
        session.send(Frame::Stdin(vec![key])).await?;
        read_until(&mut session, &[key]).await?;
        keystrokes.samples.push(sent.elapsed());
    }
    session.send(Frame::End).await?;
    // Bulk: output without a terminal, so nothing is translated on the way.
    let request = json!({
        "command": ["head", "-c", options.bulk_bytes.to_string(), "/dev/zero"],
        "tty": false,
    });
    let mut session = open(client, task_id, &request).await?;
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut errors = Vec::new();
    loop {
        match session.next().await {
            Ok(Frame::Stdout(data) | Frame::Stderr(data)) => bytes += data.len() as u64,
            Ok(Frame::Stopped(_)) => break,
            Ok(Frame::Error(reason)) => errors.push(reason),
            Ok(_) => {}
            Err(end) => anyhow::bail!(
                "the bulk session ended early after {bytes} bytes: {end:?} (errors: {errors:?})"
            ),
        }
    }
    let bulk_elapsed = started.elapsed();
    anyhow::ensure!(
        bytes == options.bulk_bytes,
        "the bulk session sent {bytes} bytes, not {}",
        options.bulk_bytes
    );
    Ok(Report {
        keystrokes,
        bulk_bytes: bytes,
        bulk_elapsed,
    })
}

async fn open(
    client: &QueueClient,
    task_id: &str,
    request: &serde_json::Value,
) -> anyhow::Result<Connection> {
    let session = create_session(client, task_id, Some(0), request).await?;
    let socket_url = session["socketUrl"]
        .as_str()
        .context("the queue's answer has no socketUrl")?;
    Connection::connect(socket_url).await
}

/// Reads the session's output until `wanted` is in it.
async fn read_until(session: &mut Connection, wanted: &[u8]) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    loop {
        match session.next().await {
            Ok(Frame::Stdout(data)) => {
                seen.extend_from_slice(&data);
                if seen.windows(wanted.len()).any(|window| window == wanted) {
                    return Ok(());
                }
            }
            Ok(Frame::Stopped(status)) => anyhow::bail!("the session exited with {status}"),
            Ok(_) => {}
            Err(End::Closed(reason)) => anyhow::bail!("the session ended: {reason}"),
            Err(end) => anyhow::bail!("the session ended: {end:?}"),
        }
    }
}

async fn wait_running(client: &QueueClient, task_id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let status = client.status(task_id).await?;
        match status["status"]["runs"][0]["state"].as_str() {
            Some("running") => return Ok(()),
            Some("pending") | None => tokio::time::sleep(Duration::from_millis(100)).await,
            Some(state) => anyhow::bail!("the bench's task is {state}"),
        }
    }
    anyhow::bail!("the bench's task did not start within 120 s: is a worker serving the queue?")
}
