//! Live logs: a worker pushes its run's log here while the task runs, and any number of readers
//! follow it as one streamed HTTP response. No one needs to reach the worker's address, and the
//! worker needs no inbound port (DESIGN.md, artifacts and logs).
//!
//! `POST <rootUrl>/livelog/<taskId>/<runId>?offset=N[&name=…][&final=true]` appends the body at
//! byte `offset`, Hawk-signed with the run's credentials (`queue:create-artifact:<taskId>/<runId>`),
//! while the run is running (else 409). A push is idempotent: bytes the server already has are
//! skipped, and the answer `{"length": N}` says where the log ends, so that a worker whose push
//! would leave a gap resends from there.
//! `GET <rootUrl>/livelog/<taskId>/<runId>` streams the log from the start and ends when the
//! worker's final push arrives (or the run is resolved without one).
//!
//! A live log is a convenience, not a record: the worker uploads the whole log as
//! `public/logs/live_backing.log` at the end, and the file here is removed a while later; the
//! file of a run that resolved without a final push goes at the next sweep (every minute, and
//! when the server starts). The artifact name a log was pushed under decides who may read it,
//! so it is kept beside the file (`<taskId>.<runId>.name`) and outlives a restart: a log whose
//! name is unknown is not served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use super::call::{Body, Call};
use super::routes::artifacts::{CREATE_ARTIFACT, GET_ARTIFACT};
use super::server::State;
use crate::engine::Engine;
use crate::model::artifact::DEFAULT_LIVE_LOG_NAME;
use crate::model::{ApiError, ErrorCode, RunState, Slugid, Storage, Task};

/// Bytes sent to a reader at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How long a finished log stays readable here (by then readers follow the backing log).
const KEEP_FINISHED: Duration = Duration::from_secs(10 * 60);
/// How often a reader waiting for bytes checks that the run still runs, so that a worker
/// that died without its final push does not hold readers forever.
const READER_IDLE_CHECK: Duration = Duration::from_secs(30);
/// How often the files of runs that are no longer running are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How far a live log has come.
#[derive(Clone, Debug, PartialEq)]
struct Progress {
    length: u64,
    finished: bool,
}

struct LiveLog {
    /// The artifact name the log is published under; decides who may read it.
    name: String,
    progress: watch::Sender<Progress>,
    /// Serializes appends to the file.
    writer: tokio::sync::Mutex<()>,
}

/// Every live log this server holds, by run.
pub struct LiveLogs {
    dir: PathBuf,
    logs: Mutex<HashMap<(Slugid, u32), Arc<LiveLog>>>,
}

impl LiveLogs {
    pub fn new(data_dir: &Path) -> LiveLogs {
        LiveLogs {
            dir: data_dir.join("livelogs"),
            logs: Mutex::new(HashMap::new()),
        }
    }

    fn file(&self, task_id: Slugid, run_id: u32) -> PathBuf {
        self.dir.join(format!("{task_id}.{run_id}.log"))
    }

    /// Where the artifact name of a run's log is kept.
    fn name_file(&self, task_id: Slugid, run_id: u32) -> PathBuf {
        self.dir.join(format!("{task_id}.{run_id}.name"))
    }

    /// The artifact name the run's log was pushed under, as this server or an earlier one
    /// recorded it.
    async fn recorded_name(&self, task_id: Slugid, run_id: u32) -> Option<String> {
        if let Some(log) = self.get(task_id, run_id) {
            return Some(log.name.clone());
        }
        tokio::fs::read_to_string(self.name_file(task_id, run_id))
            .await
            .ok()
            .filter(|name| !name.is_empty())
    }

    /// Removes the run's log, its recorded name, and what this server holds of it.
    async fn remove(&self, task_id: Slugid, run_id: u32) {
        self.logs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&(task_id, run_id));
        for path in [self.file(task_id, run_id), self.name_file(task_id, run_id)] {
            if let Err(error) = tokio::fs::remove_file(&path).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %error, "cannot remove a live log file");
            }
        }
    }

    fn get(&self, task_id: Slugid, run_id: u32) -> Option<Arc<LiveLog>> {
        let logs = self
            .logs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        logs.get(&(task_id, run_id)).cloned()
    }

    /// The log of a run, made on its first push (continuing a file a restart left behind).
    async fn open(
        &self,
        task_id: Slugid,
        run_id: u32,
        name: &str,
    ) -> std::io::Result<Arc<LiveLog>> {
        if let Some(log) = self.get(task_id, run_id) {
            return Ok(log);
        }
        tokio::fs::create_dir_all(&self.dir).await?;
        // The name is recorded before any byte of the log is, so that no file is ever served
        // without it. A name recorded earlier wins: it is what the log was first pushed as.
        let name = match self.recorded_name(task_id, run_id).await {
            Some(recorded) => recorded,
            None => {
                let (path, recorded) = (self.name_file(task_id, run_id), name.to_owned());
                tokio::task::spawn_blocking(move || {
                    crate::log::durable_file::write_atomically(&path, recorded.as_bytes())
                })
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
                name.to_owned()
            }
        };
        let length = match tokio::fs::metadata(self.file(task_id, run_id)).await {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        let mut logs = self
            .logs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let log = logs.entry((task_id, run_id)).or_insert_with(|| {
            Arc::new(LiveLog {
                name,
                progress: watch::Sender::new(Progress {
                    length,
                    finished: false,
                }),
                writer: tokio::sync::Mutex::new(()),
            })
        });
        Ok(log.clone())
    }

    fn forget_later(self: &Arc<Self>, task_id: Slugid, run_id: u32) {
        let logs = self.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(KEEP_FINISHED).await;
            logs.remove(task_id, run_id).await;
        });
    }

    /// Removes the logs of runs that are no longer running and did not end with a final push
    /// (those go `KEEP_FINISHED` after it), every `SWEEP_EVERY`, starting now. After a restart
    /// that is every log of a run no longer running: what waited to be removed was forgotten.
    pub async fn sweep_forever(self: Arc<Self>, engine: Engine) {
        loop {
            if let Err(error) = self.sweep(&engine).await {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot sweep the live logs");
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    }

    async fn sweep(&self, engine: &Engine) -> std::io::Result<()> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let mut runs = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some((task_id, run_id)) = name.to_str().and_then(parse_file_name) else {
                continue;
            };
            let finished = self
                .get(task_id, run_id)
                .is_some_and(|log| log.progress.borrow().finished);
            if !finished && !runs.contains(&(task_id, run_id)) {
                runs.push((task_id, run_id));
            }
        }
        for (task_id, run_id) in runs {
            if !is_running(engine, task_id, run_id).await {
                tracing::debug!(%task_id, run_id, "removing the live log of a run that ended");
                self.remove(task_id, run_id).await;
            }
        }
        Ok(())
    }
}

/// The run of a live log's file or name file: `<taskId>.<runId>.log` or `.name`.
fn parse_file_name(name: &str) -> Option<(Slugid, u32)> {
    let stem = name
        .strip_suffix(".log")
        .or_else(|| name.strip_suffix(".name"))?;
    let (task_id, run_id) = stem.split_once('.')?;
    Some((task_id.parse().ok()?, run_id.parse().ok()?))
}

async fn is_running(engine: &Engine, task_id: Slugid, run_id: u32) -> bool {
    engine
        .task(task_id)
        .await
        .is_some_and(|task| run_is_running(&task, run_id))
}

fn run_is_running(task: &Task, run_id: u32) -> bool {
    task.runs
        .get(run_id as usize)
        .is_some_and(|run| run.state == RunState::Running)
}

fn run_of(call: &Call) -> Result<(Slugid, u32), ApiError> {
    Ok((call.slugid_param("taskId")?, call.run_id_param()?))
}

fn io_error(error: std::io::Error) -> ApiError {
    ApiError::new(
        ErrorCode::InternalServerError,
        format!("writing the live log: {error}"),
    )
}

/// `POST <rootUrl>/livelog/<taskId>/<runId>?offset=N`: the worker's push.
pub async fn push(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("pushLiveLog", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &CREATE_ARTIFACT)?;
            let (task_id, run_id) = run_of(call)?;
            let offset: u64 = call
                .query("offset")
                .unwrap_or_default()
                .parse()
                .map_err(|_| ApiError::input("`offset` must be a byte offset"))?;
            let finished = call.query("final").is_some_and(|value| value == "true");
            let name = call
                .query("name")
                .unwrap_or_else(|| DEFAULT_LIVE_LOG_NAME.to_owned());
            let task = state
                .engine
                .task(task_id)
                .await
                .ok_or_else(|| ApiError::not_found(format!("task `{task_id}` not found")))?;
            if !run_is_running(&task, run_id) {
                return Err(ApiError::conflict(format!(
                    "run {run_id} of task `{task_id}` is not running"
                )));
            }
            let log = state
                .live_logs
                .open(task_id, run_id, &name)
                .await
                .map_err(io_error)?;
            let _writing = log.writer.lock().await;
            let length = log.progress.borrow().length;
            let bytes = call.body();
            let end = offset + bytes.len() as u64;
            // A push past the end would leave a gap: nothing is written, and the answer says
            // where the log ends so that the worker resends from there.
            if offset > length {
                return Ok(super::response::json(
                    StatusCode::OK,
                    &json!({"length": length}),
                ));
            }
            if end > length {
                let new = &bytes[(length - offset) as usize..];
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(state.live_logs.file(task_id, run_id))
                    .await
                    .map_err(io_error)?;
                file.write_all(new).await.map_err(io_error)?;
                // Tokio's file writes finish on a blocking thread; readers are told of the new
                // length only once the bytes are in the file.
                file.flush().await.map_err(io_error)?;
            }
            let length = end.max(length);
            log.progress.send_replace(Progress { length, finished });
            if finished {
                state.live_logs.forget_later(task_id, run_id);
            }
            Ok(super::response::json(
                StatusCode::OK,
                &json!({"length": length}),
            ))
        })
        .await
}

/// `GET <rootUrl>/livelog/<taskId>/<runId>`: the log so far, then every byte as it arrives.
pub async fn follow(state: Data<State>, request: HttpRequest) -> HttpResponse {
    Call::new("liveLog", request, Ok(Bytes::new()))
        .answer(async |call| {
            let (task_id, run_id) = run_of(call)?;
            let path = state.live_logs.file(task_id, run_id);
            let log = match state.live_logs.get(task_id, run_id) {
                Some(log) => Some(log),
                // A reader may come between the worker's announcing the log and its first
                // push: it waits for the bytes like any other reader.
                None => match announced(&state, task_id, run_id).await {
                    Some(name) => {
                        let log = state
                            .live_logs
                            .open(task_id, run_id, &name)
                            .await
                            .map_err(io_error)?;
                        tokio::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)
                            .await
                            .map_err(io_error)?;
                        Some(log)
                    }
                    None => None,
                },
            };
            // Without a name nobody can say who may read the log: it is not served.
            let name = match &log {
                Some(log) => Some(log.name.clone()),
                None => state.live_logs.recorded_name(task_id, run_id).await,
            }
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "run {run_id} of task `{task_id}` has no live log here"
                ))
            })?;
            if !super::blobs::is_public(&name) {
                call.authorize(&state.access.clients(), &GET_ARTIFACT, &[("name", &name)])?;
            }
            let file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ApiError::not_found(format!(
                        "run {run_id} of task `{task_id}` has no live log here"
                    )));
                }
                Err(error) => return Err(io_error(error)),
            };
            let reader = Reader {
                state: state.clone(),
                task_id,
                run_id,
                file,
                position: 0,
                progress: log.map(|log| log.progress.subscribe()),
            };
            Ok(HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                // Compressing would hold bytes back until a block fills.
                .insert_header((header::CONTENT_ENCODING, "identity"))
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .streaming(futures::stream::unfold(reader, Reader::next)))
        })
        .await
}

/// The name of the `reference` artifact a running run announced this live log under, if any.
async fn announced(state: &State, task_id: Slugid, run_id: u32) -> Option<String> {
    let task = state.engine.task(task_id).await?;
    if !run_is_running(&task, run_id) {
        return None;
    }
    let url_end = format!("/livelog/{task_id}/{run_id}");
    task.artifacts
        .iter()
        .find(|((run, _), artifact)| {
            *run == run_id
                && matches!(&artifact.storage, Storage::Reference { url } if url.ends_with(&url_end))
        })
        .map(|((_, name), _)| name.clone())
}

/// One reader of one live log.
struct Reader {
    state: Data<State>,
    task_id: Slugid,
    run_id: u32,
    file: tokio::fs::File,
    position: u64,
    /// `None` for a log no worker is pushing to here (left by an earlier server): the file is
    /// all there is.
    progress: Option<watch::Receiver<Progress>>,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Reader)> {
        loop {
            let available = match &self.progress {
                Some(progress) => progress.borrow().clone(),
                None => Progress {
                    length: self.file.metadata().await.ok()?.len(),
                    finished: true,
                },
            };
            if self.position < available.length {
                let wanted = (available.length - self.position).min(READ_CHUNK_BYTES as u64);
                let mut chunk = vec![0; wanted as usize];
                let read = async {
                    self.file
                        .seek(std::io::SeekFrom::Start(self.position))
                        .await?;
                    self.file.read_exact(&mut chunk).await
                }
                .await;
                return match read {
                    Ok(_) => {
                        self.position += wanted;
                        Some((Ok(Bytes::from(chunk)), self))
                    }
                    Err(error) => Some((Err(error), self.end())),
                };
            }
            if available.finished {
                return None;
            }
            let progress = self.progress.as_mut()?;
            match tokio::time::timeout(READER_IDLE_CHECK, progress.changed()).await {
                Ok(Ok(())) => {}
                // The log was forgotten: nothing more will come.
                Ok(Err(_)) => return None,
                Err(_) => {
                    if !is_running(&self.state.engine, self.task_id, self.run_id).await {
                        return None;
                    }
                }
            }
        }
    }

    /// A reader that ends after the error it just returned.
    fn end(mut self) -> Reader {
        self.progress = None;
        self.position = u64::MAX;
        self
    }
}
