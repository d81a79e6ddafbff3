//! `taskfold shell`: a terminal into a running task through the queue's session relay
//! (`schemas/interactive.md`). The local terminal goes raw, keystrokes go out as stdin frames,
//! window changes as resizes, and the command exits with the remote shell's status.

use std::io::Write;

use anyhow::Context;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use super::{QueueClient, WebSocket};
use crate::model::interactive::Frame;

/// Opens a session on `run_id` of `task_id` (the latest run when `None`); the queue's answer.
pub async fn create_session(
    client: &QueueClient,
    task_id: &str,
    run_id: Option<u64>,
    request: &Value,
) -> anyhow::Result<Value> {
    let run_id = match run_id {
        Some(run_id) => run_id,
        None => {
            let status = client.status(task_id).await?;
            let runs = status["status"]["runs"].as_array().map_or(0, Vec::len);
            anyhow::ensure!(runs > 0, "task {task_id} has no runs yet");
            runs as u64 - 1
        }
    };
    let path = format!("/task/{task_id}/runs/{run_id}/sessions");
    Ok(client
        .call(awc::http::Method::POST, &path, Some(request))
        .await?)
}

/// How a session's stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Shutdown,
    Closed(String),
}

/// The user's side of a session's websocket.
pub struct Connection {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
}

impl Connection {
    /// Connects to a session's `socketUrl` and waits until the shell is ready.
    pub async fn connect(socket_url: &str) -> anyhow::Result<Connection> {
        let socket = super::connect_websocket(socket_url)
            .await
            .context("connecting to the session")?;
        let (sink, stream) = socket.split();
        let mut connection = Connection { sink, stream };
        match connection.next().await {
            Ok(Frame::Resume) => Ok(connection),
            Ok(Frame::Error(reason)) => anyhow::bail!("the session failed: {reason}"),
            Ok(other) => anyhow::bail!("the session began with {other:?}"),
            Err(end) => anyhow::bail!("the session ended before it began: {end:?}"),
        }
    }

    pub async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.sink
            .send(Message::Binary(frame.encode().into()))
            .await
            .context("the session's connection broke")
    }

    /// The next frame, or how the stream ended.
    pub async fn next(&mut self) -> Result<Frame, End> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Binary(bytes))) => match Frame::decode(&bytes) {
                    Ok(frame) => return Ok(frame),
                    Err(error) => return Err(End::Closed(format!("a bad frame: {error}"))),
                },
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame.map_or_else(String::new, |frame| frame.reason.to_string());
                    return Err(End::Closed(reason));
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(End::Closed(error.to_string())),
                None => return Err(End::Closed("the connection ended".to_owned())),
            }
        }
    }
}

/// Restores the terminal when dropped.
struct RawMode(bool);

impl RawMode {
    fn enable(tty: bool) -> RawMode {
        RawMode(tty && crossterm::terminal::enable_raw_mode().is_ok())
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Runs `command` (the shell when empty) in the task, attached to this terminal; the
/// remote command's exit status.
pub async fn shell(
    client: &QueueClient,
    task_id: &str,
    run_id: Option<u64>,
    command: Vec<String>,
) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let tty = std::io::stdin().is_terminal();
    let mut request = json!({ "tty": tty });
    if !command.is_empty() {
        request["command"] = json!(command);
    }
    if let Ok((cols, rows)) = crossterm::terminal::size() {
        request["cols"] = json!(cols.max(1));
        request["rows"] = json!(rows.max(1));
    }
    let session = create_session(client, task_id, run_id, &request).await?;
    let socket_url = session["socketUrl"]
        .as_str()
        .context("the queue's answer has no socketUrl")?;
    let mut connection = Connection::connect(socket_url).await?;
    let raw = RawMode::enable(tty);
    let mut window_changes =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdin = tokio::io::stdin();
    let mut input = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut paused = false;
    let end = loop {
        tokio::select! {
            read = stdin.read(&mut input), if stdin_open && !paused => match read {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    connection.send(Frame::End).await?;
                }
                Ok(n) => connection.send(Frame::Stdin(input[..n].to_vec())).await?,
            },
            _ = window_changes.recv() => {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    connection.send(Frame::Resize { rows, cols }).await?;
                }
            }
            frame = connection.next() => match frame {
                Ok(Frame::Stdout(bytes)) => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
                Ok(Frame::Stderr(bytes)) => {
                    let mut stderr = std::io::stderr().lock();
                    stderr.write_all(&bytes)?;
                    stderr.flush()?;
                }
                Ok(Frame::Pause) => paused = true,
                Ok(Frame::Resume) => paused = false,
                Ok(Frame::Stopped(status)) => break End::Exited(status),
                Ok(Frame::Shutdown) => break End::Shutdown,
                Ok(Frame::Error(reason)) => {
                    drop_line(&raw);
                    eprint!("taskfold shell: {reason}");
                    drop_line(&raw);
                }
                Ok(_) => {}
                Err(end) => break end,
            },
        }
    };
    drop(raw);
    match end {
        End::Exited(status) => Ok(status),
        End::Shutdown => anyhow::bail!("the worker is shutting down; the session ended"),
        End::Closed(reason) => anyhow::bail!("the session ended: {reason}"),
    }
}

/// A line break that works in raw mode too.
fn drop_line(raw: &RawMode) {
    eprint!("{}", if raw.0 { "\r\n" } else { "\n" });
}
