//! The relay of one session: the user's websocket and the worker's dial-back, each served by
//! its own half on its own connection's thread, each writing into the other's bounded output
//! (`[sessions] relay_buffer_frames`), so a slow side slows the other instead of growing
//! memory. Frames pass as they are to a user who speaks the session's own protocol; the relay
//! only watches for the ones that end a session. For a user who speaks Taskcluster's current
//! shell protocol (`v2`) it is also the one place that translates: the user's `0x01`/`0x02`
//! frames become stdin and resize, the shell's output goes out as raw bytes, and what v2 has no
//! form for is dropped (the end is the socket's close). A v2 user sends at once, so its frames
//! are read only once the worker's shell takes input (its first `resume`); until then they wait
//! in the connection.

use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::{self, CloseCode};
use actix_web::web::{Bytes, Data};

use super::registry::{Ending, RunKey, Shared, UserAttach};
use crate::api::server::State;
use crate::api::websocket::{Incoming, Reader, Writer, close_reason};
use crate::model::interactive::{self, Control, Frame, Framing, v2};
use crate::model::task::Command;
use crate::model::{ApiError, SessionEnd, Slugid};

/// How often both sides are pinged.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// A side silent this long is gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// Claims the session's end, once: the first caller gets `true` and then records it with
/// [`record_end`].
pub fn claim_end(shared: &Shared, ending: Ending) -> bool {
    shared.end(ending)
}

/// Records a claimed end in the log, and only then forgets the session here: until its end is
/// durable the session is listed as open, never as closed without its reason. `client_id`:
/// who closed it (`None` when its relay ended).
pub async fn record_end(
    state: &State,
    shared: &Shared,
    ending: Ending,
    client_id: Option<String>,
) -> Result<crate::model::Task, ApiError> {
    let command = close_command(shared.session_id, ending);
    let recorded = state.engine.execute(shared.run.0, command, client_id).await;
    state.sessions.forget(shared.session_id);
    recorded
}

/// The end as a command for the session's task.
pub fn close_command(session_id: Slugid, ending: Ending) -> Command {
    Command::CloseSession {
        session_id,
        end: ending.end,
        exit_status: ending.exit_status,
    }
}

/// Ends the session for `ending` if nothing ended it yet, recording it in the background.
fn end_session(state: &Data<State>, shared: &Arc<Shared>, ending: Ending) {
    if claim_end(shared, ending) {
        let (state, shared) = (state.clone(), shared.clone());
        actix_web::rt::spawn(async move {
            if let Err(error) = record_end(&state, &shared, ending, None).await {
                tracing::warn!(%error, "recording the end of a session");
            }
        });
    }
}

fn ended(end: SessionEnd) -> Ending {
    Ending {
        end,
        exit_status: None,
    }
}

/// The user's half: waits for the worker to dial back, then passes the user's frames to it.
pub async fn serve_user(state: Data<State>, attach: UserAttach, mut reader: Reader, user: Writer) {
    let shared = attach.shared;
    let attach_timeout = Duration::from_secs(state.sessions.settings.worker_attach_seconds);
    let worker = tokio::select! {
        worker = tokio::time::timeout(attach_timeout, attach.worker) => worker.ok().and_then(Result::ok),
        _ = shared.ended() => None,
    };
    let Some(worker) = worker else {
        if shared.ending().is_none() {
            tracing::warn!(session = %shared.session_id, "the worker did not dial back for a session");
        }
        end_session(&state, &shared, ended(SessionEnd::WorkerGone));
        state
            .sessions
            .tell_worker_to_close(shared.run, shared.session_id);
        close_user(user, shared.ending(), shared.framing).await;
        return;
    };
    let heard = reader.heard();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    // A v1 user waits for `resume` itself; a v2 user's frames wait until the shell is ready.
    let mut ready = shared.framing == Framing::V1;
    loop {
        tokio::select! {
            () = shared.wait_ready(), if !ready => ready = true,
            incoming = reader.receive(), if ready => match incoming {
                Incoming::Binary(bytes) => {
                    let bytes = match from_user(shared.framing, bytes) {
                        Ok(bytes) => bytes,
                        Err(refusal) if shared.framing == Framing::V1 => {
                            let frame = Frame::Error(refusal).encode();
                            if user.send_binary(Bytes::from(frame)).await.is_err() {
                                end_session(&state, &shared, ended(SessionEnd::Disconnected));
                                break;
                            }
                            continue;
                        }
                        Err(refusal) => {
                            tracing::debug!(session = %shared.session_id, refusal, "a v2 frame ignored");
                            continue;
                        }
                    };
                    if worker.send_binary(bytes).await.is_err() {
                        tracing::warn!(session = %shared.session_id, "a session's worker stopped reading");
                        end_session(&state, &shared, ended(SessionEnd::WorkerGone));
                        break;
                    }
                }
                Incoming::Ping(bytes) => {
                    let _ = user.send(ws::Message::Pong(bytes)).await;
                }
                Incoming::Text(_) => {}
                Incoming::Close(_) => {
                    end_session(&state, &shared, ended(SessionEnd::ClosedByUser));
                    break;
                }
                Incoming::Gone | Incoming::Violation(_) => {
                    end_session(&state, &shared, ended(SessionEnd::Disconnected));
                    break;
                }
            },
            _ = shared.ended() => break,
            _ = keepalive.tick() => {
                if heard.get().elapsed() > SILENCE_LIMIT {
                    end_session(&state, &shared, ended(SessionEnd::Disconnected));
                    break;
                }
                let _ = user.send(ws::Message::Ping(Bytes::new())).await;
            }
        }
    }
    close_user(user, shared.ending(), shared.framing).await;
}

/// A user's frame as the worker gets it, or why it is not passed on.
fn from_user(framing: Framing, bytes: Bytes) -> Result<Bytes, String> {
    match framing {
        Framing::V1 => match refuse_from_user(&bytes) {
            Some(refusal) => Err(refusal),
            None => Ok(bytes),
        },
        Framing::V2 => v2::decode(&bytes)
            .map(|frame| Bytes::from(frame.encode()))
            .map_err(|error| error.to_string()),
    }
}

/// A frame of the worker's as the user gets it (`None`: it has no form in the user's
/// protocol).
fn to_user(framing: Framing, bytes: Bytes, frame: Option<&Frame>) -> Option<Bytes> {
    match framing {
        Framing::V1 => Some(bytes),
        Framing::V2 => frame
            .and_then(v2::to_user)
            .filter(|bytes| !bytes.is_empty())
            .map(Bytes::from),
    }
}

/// Why a frame from the user is not passed on, if it is not.
fn refuse_from_user(bytes: &[u8]) -> Option<String> {
    match bytes.first() {
        Some(
            &(interactive::STDIN
            | interactive::RESIZE
            | interactive::RESUME
            | interactive::PAUSE
            | interactive::END),
        ) => None,
        Some(opcode) => Some(format!("opcode {opcode} is not one a user sends; ignored")),
        None => Some("an empty frame; ignored".to_owned()),
    }
}

/// Closes the user's websocket as the session's end asks.
async fn close_user(user: Writer, ending: Option<Ending>, framing: Framing) {
    let end = ending.map_or(SessionEnd::WorkerGone, |ending| ending.end);
    let (code, reason) = match end {
        SessionEnd::Exited => (CloseCode::Normal, "the command exited".to_owned()),
        SessionEnd::ClosedByUser => (CloseCode::Normal, "the session was closed".to_owned()),
        SessionEnd::Disconnected => (CloseCode::Normal, "the user went away".to_owned()),
        SessionEnd::RunResolved => (CloseCode::Normal, "the run was resolved".to_owned()),
        SessionEnd::WorkerShutdown => (CloseCode::Away, "the worker is shutting down".to_owned()),
        // The worker already said why in an error frame.
        SessionEnd::Failed => (
            CloseCode::Error,
            "the shell failed on the worker".to_owned(),
        ),
        SessionEnd::WorkerGone | SessionEnd::ServerRestart => {
            let reason = "the worker went away or did not dial back";
            let frame = Frame::Error(reason.to_owned());
            let bytes = Bytes::from(frame.encode());
            if let Some(bytes) = to_user(framing, bytes, Some(&frame)) {
                let _ = user.send_binary(bytes).await;
            }
            (CloseCode::Error, reason.to_owned())
        }
    };
    user.close(close_reason(code, reason)).await;
}

/// The worker's half: passes the shell's frames to the user, watching for the end.
pub async fn serve_worker(
    state: Data<State>,
    shared: Arc<Shared>,
    user: Writer,
    mut reader: Reader,
    worker: Writer,
) {
    let heard = reader.heard();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let mut exit_status = None;
    let mut shutdown = false;
    let mut failed = false;
    loop {
        tokio::select! {
            incoming = reader.receive() => match incoming {
                Incoming::Binary(bytes) => {
                    let frame = Frame::decode(&bytes).ok();
                    match &frame {
                        Some(Frame::Stopped(status)) => exit_status = Some(*status),
                        Some(Frame::Shutdown) => shutdown = true,
                        Some(Frame::Error(_)) => failed = true,
                        Some(Frame::Resume) => shared.mark_ready(),
                        _ => {}
                    }
                    let Some(bytes) = to_user(shared.framing, bytes, frame.as_ref()) else {
                        continue;
                    };
                    if user.send_binary(bytes).await.is_err() {
                        end_session(&state, &shared, ended(SessionEnd::Disconnected));
                        break;
                    }
                }
                Incoming::Ping(bytes) => {
                    let _ = worker.send(ws::Message::Pong(bytes)).await;
                }
                Incoming::Text(_) => {}
                incoming @ (Incoming::Close(_) | Incoming::Gone | Incoming::Violation(_)) => {
                    // A worker closes normally on its own only when the run ended.
                    let normal = matches!(
                        &incoming,
                        Incoming::Close(Some(reason)) if reason.code == CloseCode::Normal
                    );
                    let ending = if exit_status.is_some() {
                        Ending { end: SessionEnd::Exited, exit_status }
                    } else if shutdown {
                        ended(SessionEnd::WorkerShutdown)
                    } else if normal {
                        ended(SessionEnd::RunResolved)
                    } else if failed {
                        ended(SessionEnd::Failed)
                    } else {
                        let how = match &incoming {
                            Incoming::Close(reason) => format!("closed with {reason:?}"),
                            _ => "its connection broke".to_owned(),
                        };
                        tracing::warn!(session = %shared.session_id, how, "a session's worker went away");
                        ended(SessionEnd::WorkerGone)
                    };
                    end_session(&state, &shared, ending);
                    break;
                }
            },
            _ = shared.ended() => break,
            _ = keepalive.tick() => {
                if heard.get().elapsed() > SILENCE_LIMIT {
                    end_session(&state, &shared, ended(SessionEnd::WorkerGone));
                    break;
                }
                let _ = worker.send(ws::Message::Ping(Bytes::new())).await;
            }
        }
    }
    worker
        .close(close_reason(CloseCode::Normal, "the session ended"))
        .await;
}

/// A run's control channel: passes the queue's opens and closes to the worker until either
/// side goes away.
pub async fn serve_control(state: Data<State>, run: RunKey, mut reader: Reader, worker: Writer) {
    let (id, mut messages) = state.sessions.connect_control(run);
    let heard = reader.heard();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    loop {
        tokio::select! {
            message = messages.recv() => {
                let Some(message): Option<Control> = message else { break };
                let text = serde_json::to_string(&message).unwrap_or_default();
                if worker.send_text(text).await.is_err() {
                    break;
                }
            }
            incoming = reader.receive() => match incoming {
                Incoming::Ping(bytes) => {
                    let _ = worker.send(ws::Message::Pong(bytes)).await;
                }
                Incoming::Close(_) | Incoming::Gone | Incoming::Violation(_) => break,
                Incoming::Text(_) | Incoming::Binary(_) => {}
            },
            _ = keepalive.tick() => {
                if heard.get().elapsed() > SILENCE_LIMIT {
                    break;
                }
                let _ = worker.send(ws::Message::Ping(Bytes::new())).await;
            }
        }
    }
    state.sessions.disconnect_control(run, id);
    worker.close(close_reason(CloseCode::Normal, "bye")).await;
}
