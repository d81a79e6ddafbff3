//! Interactive sessions on the worker (`schemas/interactive.md`). For a run whose task enabled
//! `features.interactive`, the worker keeps a control channel to the queue; for each session
//! the queue announces there, it dials back a websocket, starts a shell through the engine
//! ([`Shells`]: `docker exec` with a TTY, or a PTY over SSH) and passes frames between the two.
//! No inbound port is needed. After the task's command exits, [`Interactive::linger`] keeps
//! the run while sessions are attached, and a while after ([`Linger`]).
//!
//! Every interactive run has the reference artifacts of the queue's browser page
//! (`private/taskfold/shell.html`) and of Taskcluster's shell page (generic-worker's
//! `private/generic-worker/shell.html`); a Docker run also has docker-worker's
//! (`private/docker-worker/interactive.sock` and `interactive.html`). The queue mints a
//! session's ticket each time one that leads to a new session is resolved, so the URL stored
//! for those is only where to ask for one: the artifact itself.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::resolution::{Abort, Outcome};
use super::task_run::{RunContext, SharedClient};
use crate::client::{Error, QueueClient, WebSocket};
use crate::model::interactive::{
    Control, DOCKER_WORKER_PAGE_ARTIFACT, DOCKER_WORKER_SOCKET_ARTIFACT, Frame,
    GENERIC_WORKER_SHELL_ARTIFACT, MAX_DATA, STDERR, TASKFOLD_SHELL_ARTIFACT,
};

/// The queue's browser page for a run's sessions.
pub fn shell_page_url(root_url: &str, task_id: &str, run_id: u64) -> String {
    format!("{root_url}/shell/?taskId={task_id}&runId={run_id}")
}

/// The getArtifact URL of a run's artifact: what a session artifact stores, since the queue
/// answers it with a freshly minted session URL.
fn artifact_url(root_url: &str, task_id: &str, run_id: u64, name: &str) -> String {
    format!("{root_url}/api/queue/v1/task/{task_id}/runs/{run_id}/artifacts/{name}")
}

/// How long a run stays for its sessions after its command exited, within the bound that
/// [`Interactive::finish`] is given (maxRunTime and the deadline): while a session is attached,
/// and then until the latest of `after_exit` past the later of the exit and the last session's
/// end, `after_session` past the last session's end, and `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger {
    /// `[worker.interactive] linger_seconds`.
    pub after_exit: Duration,
    /// Docker tasks: `docker_after_session_seconds` (docker-worker's `expirationAfterSession`).
    pub after_session: Duration,
    /// Docker tasks: the container's start plus `docker_min_seconds` (docker-worker's
    /// `minTime`).
    pub until: Option<Instant>,
}

impl From<Duration> for Linger {
    /// `linger_seconds` alone.
    fn from(after_exit: Duration) -> Linger {
        Linger {
            after_exit,
            after_session: Duration::ZERO,
            until: None,
        }
    }
}

impl Linger {
    /// When the run may end, with no session attached: the command exited at `exited`, the last
    /// session ended at `last_end`.
    fn end(&self, exited: Instant, last_end: Option<Instant>) -> Instant {
        let since = last_end.map_or(exited, |end| end.max(exited));
        let mut end = since + self.after_exit;
        if let Some(last_end) = last_end {
            end = end.max(last_end + self.after_session);
        }
        if let Some(until) = self.until {
            end = end.max(until);
        }
        end
    }
}

/// Wait before the control channel is dialed again after it dropped.
const RECONNECT: Duration = Duration::from_secs(1);
/// How long stopping waits for the sessions to say goodbye.
const GOODBYE: Duration = Duration::from_secs(2);
/// How long a session's socket stays open after its close frame, for the queue's answer: the
/// queue answers once it has read everything sent before, and a socket dropped earlier may
/// lose that tail (the queue may be slowed by a slow user).
const CLOSE_ANSWER: Duration = Duration::from_secs(30);

/// What a session asks the engine to run.
#[derive(Clone, Debug)]
pub struct ShellRequest {
    pub command: Vec<String>,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
}

/// A started shell: its output (stdout or stderr opcode, bytes), its stdin, and its process.
pub struct Shell {
    pub output: LocalBoxStream<'static, std::io::Result<(u8, Vec<u8>)>>,
    pub input: Pin<Box<dyn AsyncWrite>>,
    pub process: Box<dyn ShellProcess>,
}

/// The process behind a shell.
pub trait ShellProcess {
    fn resize(&self, rows: u16, cols: u16) -> LocalBoxFuture<'_, Result<(), String>>;
    /// Its exit status, once its output ended.
    fn exit_status(&self) -> LocalBoxFuture<'_, i32>;
    /// Ends it early (the user went away, or the session was closed).
    fn kill(&self) -> LocalBoxFuture<'_, ()>;
}

/// How an engine starts shells for one run.
pub trait Shells {
    fn open(&self, request: ShellRequest) -> LocalBoxFuture<'static, Result<Shell, String>>;
}

/// Why the worker ends the sessions of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The worker is shutting down: sessions get `shutdown`.
    Shutdown,
    /// The run is over: sessions get an error saying so.
    RunEnded,
}

struct Attached {
    count: usize,
    /// When the last session ended.
    last_end: Option<Instant>,
}

/// The sessions of one run.
pub struct Interactive {
    attached: Rc<RefCell<Attached>>,
    changed: Rc<Notify>,
    stop: watch::Sender<Option<Stop>>,
    control: tokio::task::JoinHandle<()>,
    /// Sessions still running, for stopping to wait on.
    running: Rc<Cell<usize>>,
}

impl Interactive {
    /// Dials the run's control channel and serves the sessions the queue announces on it;
    /// publishes the browser page as the run's `private/taskfold/shell.html` and Taskcluster's
    /// shell page as `private/generic-worker/shell.html`.
    pub fn start(run: &RunContext, shells: Rc<dyn Shells>) -> Interactive {
        let root_url = &run.identity.root_url;
        let page = shell_page_url(root_url, &run.task_id, run.run_id);
        let generic_worker_page = artifact_url(
            root_url,
            &run.task_id,
            run.run_id,
            GENERIC_WORKER_SHELL_ARTIFACT,
        );
        publish(
            run,
            vec![
                (TASKFOLD_SHELL_ARTIFACT, page, "text/html"),
                (
                    GENERIC_WORKER_SHELL_ARTIFACT,
                    generic_worker_page,
                    "text/html",
                ),
            ],
        );
        let client = run.publisher.client.clone();
        let (task_id, run_id) = (&run.task_id, run.run_id);
        let attached = Rc::new(RefCell::new(Attached {
            count: 0,
            last_end: None,
        }));
        let changed = Rc::new(Notify::new());
        let (stop, stopping) = watch::channel(None);
        let running = Rc::new(Cell::new(0));
        let channel = ControlChannel {
            client,
            resource: format!("/api/queue/v1/task/{task_id}/runs/{run_id}/interactive"),
            shells,
            attached: attached.clone(),
            changed: changed.clone(),
            stopping,
            running: running.clone(),
            closers: Rc::new(RefCell::new(HashMap::new())),
        };
        let control = actix_web::rt::spawn(channel.run());
        Interactive {
            attached,
            changed,
            stop,
            control,
            running,
        }
    }

    /// docker-worker's artifacts of an interactive Docker run: the socket
    /// (`private/docker-worker/interactive.sock`, for docker-exec-websocket-server's client)
    /// and the browser page (`private/docker-worker/interactive.html`).
    pub fn publish_docker_worker_artifacts(run: &RunContext) {
        let root_url = &run.identity.root_url;
        let socket = artifact_url(
            root_url,
            &run.task_id,
            run.run_id,
            DOCKER_WORKER_SOCKET_ARTIFACT,
        );
        let page = shell_page_url(root_url, &run.task_id, run.run_id);
        publish(
            run,
            vec![
                (
                    DOCKER_WORKER_SOCKET_ARTIFACT,
                    socket,
                    "application/octet-stream",
                ),
                (DOCKER_WORKER_PAGE_ARTIFACT, page, "text/html"),
            ],
        );
    }

    /// After the task's command exited: returns once no session is attached and `linger`'s
    /// time has come, or at `bound`.
    pub async fn linger(&self, linger: Linger, bound: Instant) {
        let exited = Instant::now();
        loop {
            let changed = self.changed.notified();
            let until = {
                let attached = self.attached.borrow();
                (attached.count == 0).then(|| linger.end(exited, attached.last_end))
            };
            let wake = until.map_or(bound, |until| until.min(bound));
            if Instant::now() >= wake {
                return;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// After the payload: lingers while its command ended on its own (neither timed out nor
    /// aborted), within `bound` (the task's maxRunTime and deadline); then ends every session.
    /// The command's result stands; only a cancel during the linger overrides it.
    pub async fn finish(
        self,
        run: &mut RunContext,
        outcome: &mut Outcome,
        linger: impl Into<Linger>,
        bound: Instant,
    ) {
        if outcome.exit_code.is_some() && !outcome.timed_out && outcome.abort.is_none() {
            tokio::select! {
                () = self.linger(linger.into(), bound) => {}
                abort = run.aborted() => {
                    if abort == Abort::Canceled {
                        outcome.abort = Some(abort);
                    }
                }
            }
        }
        let why = match outcome.abort {
            Some(Abort::WorkerShutdown) => Stop::Shutdown,
            _ => Stop::RunEnded,
        };
        self.stop(why).await;
    }

    /// Ends every session (telling each user why) and the control channel.
    pub async fn stop(self, why: Stop) {
        self.stop.send_replace(Some(why));
        let deadline = Instant::now() + GOODBYE;
        while self.running.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Creates reference artifacts of the run (name, URL, content type) in the background, one
/// after the other.
fn publish(run: &RunContext, references: Vec<(&'static str, String, &'static str)>) {
    let publisher = run.publisher.clone();
    actix_web::rt::spawn(async move {
        for (name, url, content_type) in references {
            if let Err(error) = publisher.reference(name, &url, content_type).await {
                tracing::warn!(%error, name, "creating an interactive run's artifact");
            }
        }
    });
}

impl Drop for Interactive {
    /// A run that ends without [`Interactive::stop`] (an early error) still ends its
    /// sessions and its control channel.
    fn drop(&mut self) {
        self.stop.send_if_modified(|stop| {
            if stop.is_none() {
                *stop = Some(Stop::RunEnded);
                true
            } else {
                false
            }
        });
        self.control.abort();
    }
}

struct ControlChannel {
    client: SharedClient,
    resource: String,
    shells: Rc<dyn Shells>,
    attached: Rc<RefCell<Attached>>,
    changed: Rc<Notify>,
    stopping: watch::Receiver<Option<Stop>>,
    running: Rc<Cell<usize>>,
    /// The sessions running, by id, for the queue's closes.
    closers: Rc<RefCell<HashMap<String, Rc<Notify>>>>,
}

impl ControlChannel {
    async fn run(self) {
        loop {
            let client = self.client.borrow().clone();
            let resource = client.resource(&self.resource);
            match client.websocket(&resource).await {
                Ok(socket) => self.serve(socket).await,
                Err(error @ Error::Api { .. }) => {
                    // The queue says no: the run is no longer running.
                    tracing::info!(%error, "no control channel for the run's sessions");
                    return;
                }
                Err(error) => tracing::warn!(%error, "connecting the run's control channel"),
            }
            if self.stopping.borrow().is_some() {
                return;
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    async fn serve(&self, mut socket: WebSocket) {
        while let Some(message) = socket.next().await {
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => continue,
            };
            match serde_json::from_str::<Control>(&text) {
                Ok(Control::Open {
                    session_id,
                    command,
                    tty,
                    rows,
                    cols,
                }) => self.open(
                    session_id,
                    ShellRequest {
                        command,
                        tty,
                        rows,
                        cols,
                    },
                ),
                Ok(Control::Close { session_id }) => {
                    if let Some(closer) = self.closers.borrow().get(&session_id) {
                        closer.notify_one();
                    }
                }
                Err(error) => tracing::warn!(%error, "an unreadable control message"),
            }
        }
    }

    fn open(&self, session_id: String, request: ShellRequest) {
        let closer = Rc::new(Notify::new());
        self.closers
            .borrow_mut()
            .insert(session_id.clone(), closer.clone());
        self.attached.borrow_mut().count += 1;
        self.running.set(self.running.get() + 1);
        self.changed.notify_waiters();
        let session = Session {
            client: self.client.borrow().clone(),
            session_id: session_id.clone(),
            shells: self.shells.clone(),
            stopping: self.stopping.clone(),
            closer,
        };
        let (attached, changed, running, closers) = (
            self.attached.clone(),
            self.changed.clone(),
            self.running.clone(),
            self.closers.clone(),
        );
        actix_web::rt::spawn(async move {
            session.serve(request).await;
            closers.borrow_mut().remove(&session_id);
            {
                let mut attached = attached.borrow_mut();
                attached.count -= 1;
                attached.last_end = Some(Instant::now());
            }
            running.set(running.get() - 1);
            changed.notify_waiters();
        });
    }
}

/// One session on the worker: the dial-back websocket and the shell.
struct Session {
    client: QueueClient,
    session_id: String,
    shells: Rc<dyn Shells>,
    stopping: watch::Receiver<Option<Stop>>,
    closer: Rc<Notify>,
}

/// How a session's loop ended.
enum Ended {
    Exited,
    UserGone,
    Closed,
    Stopped(Stop),
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;
type Stream = futures::stream::SplitStream<WebSocket>;

async fn send(sink: &mut Sink, frame: Frame) -> Result<(), ()> {
    sink.send(Message::Binary(frame.encode().into()))
        .await
        .map_err(drop)
}

/// Sends a close frame, then waits (bounded) for the queue's, so nothing sent before is lost.
async fn close(sink: &mut Sink, stream: &mut Stream, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if sink.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let answered = async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(_) = message {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_ANSWER, answered).await;
}

impl Session {
    async fn serve(mut self, request: ShellRequest) {
        let resource = self.client.resource(&format!(
            "/api/queue/v1/sessions/{}/worker",
            self.session_id
        ));
        let socket = match self.client.websocket(&resource).await {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, session = self.session_id, "dialing back for a session");
                return;
            }
        };
        let (mut sink, mut stream) = socket.split();
        let Shell {
            mut output,
            mut input,
            process,
        } = match self.shells.open(request).await {
            Ok(shell) => shell,
            Err(error) => {
                tracing::warn!(
                    error,
                    session = self.session_id,
                    "starting a session's shell"
                );
                let _ = send(&mut sink, Frame::Error(error)).await;
                close(
                    &mut sink,
                    &mut stream,
                    CloseCode::Error,
                    "the shell did not start",
                )
                .await;
                return;
            }
        };
        if send(&mut sink, Frame::Resume).await.is_err() {
            process.kill().await;
            return;
        }
        let mut paused = false;
        let ended = loop {
            tokio::select! {
                chunk = output.next(), if !paused => match chunk {
                    Some(Ok((opcode, bytes))) => {
                        let mut sent = Ok(());
                        for piece in bytes.chunks(MAX_DATA) {
                            let frame = if opcode == STDERR {
                                Frame::Stderr(piece.to_vec())
                            } else {
                                Frame::Stdout(piece.to_vec())
                            };
                            sent = send(&mut sink, frame).await;
                            if sent.is_err() {
                                break;
                            }
                        }
                        if sent.is_err() {
                            break Ended::UserGone;
                        }
                    }
                    Some(Err(_)) | None => break Ended::Exited,
                },
                message = stream.next() => match message {
                    Some(Ok(Message::Binary(bytes))) => match Frame::decode(&bytes) {
                        Ok(Frame::Stdin(data)) => {
                            if input.write_all(&data).await.is_ok() {
                                let _ = input.flush().await;
                            }
                        }
                        Ok(Frame::Resize { rows, cols }) => {
                            if let Err(error) = process.resize(rows, cols).await {
                                let _ = send(&mut sink, Frame::Error(error)).await;
                            }
                        }
                        Ok(Frame::Pause) => paused = true,
                        Ok(Frame::Resume) => paused = false,
                        Ok(Frame::End) => {
                            let _ = input.shutdown().await;
                        }
                        Ok(other) => {
                            let reason = format!("opcode {} is not one a user sends", other.opcode());
                            let _ = send(&mut sink, Frame::Error(reason)).await;
                        }
                        Err(error) => {
                            let _ = send(&mut sink, Frame::Error(error.to_string())).await;
                        }
                    },
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break Ended::UserGone,
                    Some(Ok(_)) => {}
                },
                () = self.closer.notified() => break Ended::Closed,
                Ok(_) = self.stopping.changed() => {
                    if let Some(stop) = *self.stopping.borrow() {
                        break Ended::Stopped(stop);
                    }
                }
            }
        };
        let (code, reason) = match ended {
            Ended::Exited => {
                let status = process.exit_status().await;
                let _ = send(&mut sink, Frame::Stopped(status)).await;
                (CloseCode::Normal, "the command exited")
            }
            Ended::UserGone | Ended::Closed => {
                process.kill().await;
                (CloseCode::Normal, "the session was closed")
            }
            Ended::Stopped(Stop::Shutdown) => {
                let _ = send(&mut sink, Frame::Shutdown).await;
                process.kill().await;
                (CloseCode::Away, "the worker is shutting down")
            }
            Ended::Stopped(Stop::RunEnded) => {
                process.kill().await;
                (CloseCode::Normal, "the task's run ended")
            }
        };
        close(&mut sink, &mut stream, code, reason).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linger_alone_counts_from_the_later_of_the_exit_and_the_last_end() {
        let exited = Instant::now();
        let linger = Linger::from(Duration::from_secs(5));
        assert_eq!(linger.end(exited, None), exited + Duration::from_secs(5));
        let later = exited + Duration::from_secs(10);
        assert_eq!(
            linger.end(exited, Some(later)),
            later + Duration::from_secs(5)
        );
        let earlier = exited - Duration::from_secs(3);
        assert_eq!(
            linger.end(exited, Some(earlier)),
            exited + Duration::from_secs(5)
        );
    }

    #[test]
    fn docker_workers_rules_add_a_minimum_and_a_time_after_the_last_session() {
        let started = Instant::now();
        let exited = started + Duration::from_secs(1);
        let linger = Linger {
            after_exit: Duration::from_secs(2),
            after_session: Duration::from_secs(900),
            until: Some(started + Duration::from_secs(180)),
        };
        // Nobody connected: the minimum after the start.
        assert_eq!(linger.end(exited, None), started + Duration::from_secs(180));
        // A session that ended: 15 minutes after it.
        let ended = started + Duration::from_secs(60);
        assert_eq!(
            linger.end(exited, Some(ended)),
            ended + Duration::from_secs(900)
        );
        // A command that ran past the minimum: linger_seconds after its exit.
        let late = started + Duration::from_secs(300);
        assert_eq!(linger.end(late, None), late + Duration::from_secs(2));
    }
}
