//! A run's log on the worker: every line goes to a local backing file (the truth, uploaded as
//! `public/logs/live_backing.log` at the end) and is pushed to the queue's live log as soon as
//! no other push is in flight, so readers see output within a round trip. A push that fails
//! is retried from the backing file; a queue without live logs (a Taskcluster deployment)
//! answers 404, after which the worker only keeps the backing file.
//!
//! Pushes double as the worker's quick way to learn that its run was resolved elsewhere (a
//! cancel, say): the queue refuses a push to a run that is not running, and an idle log sends
//! an empty push every [`HEARTBEAT`] to ask.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use awc::http::{Method, StatusCode};
use tokio::sync::Notify;

use super::task_run::SharedClient;
use crate::model::Timestamp;

/// Most bytes in one push.
const MAX_PUSH_BYTES: usize = 1 << 20;
/// How often an idle log asks the queue whether its run still runs.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Wait after a failed push before the next try.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What the queue said about the run while taking the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunGone {
    /// The run is no longer running: canceled, or resolved by the queue.
    NotRunning,
}

struct State {
    file: std::fs::File,
    /// Bytes written to the backing file.
    written: u64,
    /// Bytes the queue has.
    pushed: u64,
    finished: bool,
    /// Live pushes are off (the queue has no live logs, or the run is gone).
    pushing: bool,
    gone: Option<RunGone>,
}

/// One run's log. Cheap to clone; all clones write to the same log.
#[derive(Clone)]
pub struct LiveLog {
    state: Rc<RefCell<State>>,
    wake: Rc<Notify>,
    /// Told when pushing stops: the log is all pushed, or the queue said the run is gone.
    stopped: Rc<Notify>,
    path: PathBuf,
}

impl LiveLog {
    /// Creates the backing file at `path` and starts pushing to the queue's live log of the
    /// run under artifact name `name`.
    pub fn start(
        path: &Path,
        client: SharedClient,
        task_id: String,
        run_id: u64,
        name: String,
    ) -> std::io::Result<LiveLog> {
        // Read back by the pusher too, so a push that failed is sent again from the file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let log = LiveLog {
            state: Rc::new(RefCell::new(State {
                file,
                written: 0,
                pushed: 0,
                finished: false,
                pushing: true,
                gone: None,
            })),
            wake: Rc::new(Notify::new()),
            stopped: Rc::new(Notify::new()),
            path: path.to_owned(),
        };
        let pusher = Pusher {
            log: log.clone(),
            client,
            resource_base: format!("/livelog/{task_id}/{run_id}"),
            name,
        };
        actix_web::rt::spawn(pusher.run());
        Ok(log)
    }

    pub fn backing_file(&self) -> &Path {
        &self.path
    }

    /// Appends raw output.
    pub fn write(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.state.borrow_mut();
        if state.finished {
            return;
        }
        // The backing file is local; a failing local disk leaves the log short, which the
        // final upload shows.
        if state.file.write_all(bytes).is_ok() {
            state.written += bytes.len() as u64;
        }
        drop(state);
        self.wake.notify_one();
    }

    /// A line of the worker's own, framed as docker-worker frames them.
    pub fn info(&self, message: &str) {
        self.write(format!("[taskcluster {}] {message}\n", Timestamp::now()).as_bytes());
    }

    /// An error line; the leading newline puts it at the start of a line whatever the task
    /// printed last (as docker-worker does, for log parsers).
    pub fn error(&self, message: &str) {
        self.write(format!("\n[taskcluster:error] {message}\n").as_bytes());
    }

    /// The line before the task's own output.
    pub fn task_started(&self) {
        self.info("=== Task Starting ===");
    }

    /// The lines after the task's own output, as docker-worker ends a log.
    pub fn task_finished(&self, exit_code: Option<i64>, timed_out: bool, took: Duration) {
        self.info("=== Task Finished ===");
        if let Some(code) = exit_code {
            let verdict = if code == 0 && !timed_out {
                "Successful"
            } else {
                "Unsuccessful"
            };
            self.info(&format!(
                "{verdict} task run with exit code: {code} completed in {:.3} seconds",
                took.as_secs_f64()
            ));
        }
    }

    /// Resolves when the queue has said the run is no longer running.
    pub async fn run_gone(&self) -> RunGone {
        loop {
            let stopped = self.stopped.notified();
            if let Some(gone) = self.state.borrow().gone {
                return gone;
            }
            stopped.await;
        }
    }

    /// Ends the log: no more writes; waits (bounded) until the queue has every byte, and
    /// closes the live log there. Returns the backing log's length.
    pub async fn finish(&self, wait: Duration) -> u64 {
        {
            let mut state = self.state.borrow_mut();
            state.finished = true;
            let _ = state.file.flush();
        }
        self.wake.notify_one();
        let _ = tokio::time::timeout(wait, async {
            loop {
                let stopped = self.stopped.notified();
                if !self.state.borrow().pushing {
                    return;
                }
                stopped.await;
            }
        })
        .await;
        self.state.borrow().written
    }
}

struct Pusher {
    log: LiveLog,
    client: SharedClient,
    resource_base: String,
    name: String,
}

impl Pusher {
    async fn run(self) {
        loop {
            let (pushed, written, finished) = {
                let state = self.log.state.borrow();
                if !state.pushing {
                    return;
                }
                (state.pushed, state.written, state.finished)
            };
            if pushed == written && !finished {
                // Idle: wait for output, or ask after a heartbeat whether the run still runs.
                let woken = tokio::time::timeout(HEARTBEAT, self.log.wake.notified()).await;
                if woken.is_ok() {
                    continue;
                }
            }
            let chunk = match self.read_from(pushed, written) {
                Ok(chunk) => chunk,
                Err(_) => {
                    self.stop(None);
                    return;
                }
            };
            let last = finished && pushed + chunk.len() as u64 == written;
            let mut resource = format!(
                "{}?offset={pushed}&name={}",
                self.resource_base,
                percent_encoding::utf8_percent_encode(
                    &self.name,
                    percent_encoding::NON_ALPHANUMERIC
                )
            );
            if last {
                resource.push_str("&final=true");
            }
            let client = self.client.borrow().clone();
            let result = client
                .send(
                    Method::POST,
                    &client.resource(&resource),
                    Some(("application/octet-stream", chunk)),
                )
                .await;
            match result {
                Ok(answer) => {
                    // Where the queue's copy ends: past this push, or before it after a gap
                    // (then the next push resends from there).
                    let length = answer["length"].as_u64().unwrap_or(pushed);
                    self.log.state.borrow_mut().pushed = length;
                    if last && length >= written {
                        self.stop(None);
                        return;
                    }
                }
                Err(error) => match error.status() {
                    // Not a Taskfold queue: the backing log will do.
                    Some(StatusCode::NOT_FOUND) => {
                        tracing::info!(
                            "the queue keeps no live logs; only the backing log is kept"
                        );
                        self.stop(None);
                        return;
                    }
                    Some(StatusCode::CONFLICT) => {
                        self.stop(Some(RunGone::NotRunning));
                        return;
                    }
                    _ => {
                        tracing::debug!(%error, "live log push failed; retrying");
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                },
            }
        }
    }

    /// Up to [`MAX_PUSH_BYTES`] of the backing file from `from`.
    fn read_from(&self, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let length = (to - from).min(MAX_PUSH_BYTES as u64) as usize;
        let mut chunk = vec![0; length];
        self.log
            .state
            .borrow()
            .file
            .read_exact_at(&mut chunk, from)?;
        Ok(chunk)
    }

    fn stop(&self, gone: Option<RunGone>) {
        {
            let mut state = self.log.state.borrow_mut();
            state.pushing = false;
            state.gone = gone;
        }
        self.log.stopped.notify_waiters();
    }
}
