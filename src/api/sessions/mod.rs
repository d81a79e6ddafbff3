//! Interactive sessions on the queue (`schemas/interactive.md`): the REST calls that open,
//! list and close them, the user's websocket, and the worker's control channel and
//! dial-back. The queue relays bytes; the worker never needs an inbound port. The artifacts
//! that lead to a session (docker-worker's `interactive.sock`, generic-worker's `shell.html`)
//! mint a ticket each time they are resolved ([`session_artifact_url`]), and the websocket that
//! spends it opens the session ([`ticket_socket`]), as createSession does.

pub mod page;
pub mod registry;
mod relay;

use std::sync::LazyLock;

use actix_web::web::{Bytes, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use super::call::{Body, Call};
use super::response;
use super::routes::template;
use super::routes::work::RECLAIM_TASK;
use super::server::State;
use super::websocket;
use crate::auth::ScopeExpression;
use crate::model::interactive::{Control, Framing, MAX_DATA, SessionArtifact, session_artifact};
use crate::model::task::Command;
use crate::model::{ApiError, ErrorCode, RunState, Session, SessionEnd, Slugid, Task, Timestamp};
use registry::{Ending, Registry, RunKey, bad_ticket};

static CREATE_SESSION: LazyLock<ScopeExpression> = LazyLock::new(|| session_scopes("create"));
static LIST_SESSIONS: LazyLock<ScopeExpression> = LazyLock::new(|| session_scopes("list"));
static CLOSE_SESSION: LazyLock<ScopeExpression> = LazyLock::new(|| session_scopes("close"));

/// `queue:<action>-session(s):<taskId>` or the same in the whole task queue.
fn session_scopes(action: &str) -> ScopeExpression {
    let noun = if action == "list" {
        "sessions"
    } else {
        "session"
    };
    template(json!({"AnyOf": [
        format!("queue:{action}-{noun}:<taskId>"),
        format!("queue:{action}-{noun}-in-queue:<taskQueueId>"),
    ]}))
}

/// The shell a session runs when the request names none.
const DEFAULT_COMMAND: &str = "sh";
/// A terminal's first size when the request gives none.
const DEFAULT_ROWS: u16 = 24;
const DEFAULT_COLS: u16 = 80;
/// Largest frame either side may send (a paste can be large; data frames the worker sends
/// hold at most 64 KiB).
const MAX_FRAME: usize = 1 << 20;
/// Chunks waiting to be written to a control channel.
const CONTROL_BUFFER: usize = 16;

/// The body of createSession; every field is optional.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateSessionRequest {
    command: Option<Vec<String>>,
    tty: Option<bool>,
    rows: Option<u16>,
    cols: Option<u16>,
}

/// A session as the API shows it; `live` says whether it is open in this process (one the
/// log says is open but that is not was cut short by a restart).
fn session_json(session: &Session, task_id: Slugid, live: bool) -> Value {
    let mut value = json!({
        "sessionId": session.session_id,
        "taskId": task_id,
        "runId": session.run_id,
        "clientId": session.client_id,
        "command": session.command,
        "tty": session.tty,
        "opened": session.opened,
    });
    if session.is_open() && live {
        value["state"] = json!("open");
    } else {
        value["state"] = json!("closed");
        let end = session.end.unwrap_or(SessionEnd::ServerRestart);
        value["reason"] = json!(end);
        if let Some(closed) = session.closed {
            value["closed"] = json!(closed);
        }
        if let Some(status) = session.exit_status {
            value["exitStatus"] = json!(status);
        }
    }
    value
}

/// Checks a session scope of `task` (by its id or its task queue).
fn authorize<'c>(
    call: &'c mut Call,
    state: &State,
    template: &ScopeExpression,
    task: &Task,
) -> Result<&'c crate::auth::Authenticated, ApiError> {
    let task_id = task.task_id.to_string();
    call.authorize(
        &state.access.clients(),
        template,
        &[
            ("taskId", &task_id),
            ("taskQueueId", &task.definition.task_queue_id),
        ],
    )
}

/// The task, or Taskcluster's 404.
async fn find_task(state: &State, task_id: Slugid) -> Result<Task, ApiError> {
    state.engine.task(task_id).await.ok_or_else(|| {
        ApiError::not_found(format!("Task `{task_id}` not found"))
            .with_details(json!({ "taskId": task_id }))
    })
}

fn websocket_url(root_url: &str) -> String {
    if let Some(rest) = root_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = root_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        root_url.to_owned()
    }
}

/// What a new session runs, and its terminal's first size.
struct Opening {
    command: Vec<String>,
    tty: bool,
    rows: u16,
    cols: u16,
}

/// A session just opened: the task with its `SessionOpened`, and the session's ticket.
struct Opened {
    task: Task,
    session_id: Slugid,
    ticket: String,
}

/// Opens a session of a run, the one way every session opens (createSession, and the
/// websockets of the tickets that session artifacts mint): reserves it here (refused past
/// `max_per_run`), records `SessionOpened` for `client_id` (refused unless the run is a running
/// interactive one), and ends it if its user never connects with its ticket. `caller`: who
/// caused it, for the task's history.
async fn open_session(
    state: &Data<State>,
    (task_id, run_id): RunKey,
    client_id: String,
    opening: Opening,
    framing: Framing,
    caller: Option<String>,
) -> Result<Opened, ApiError> {
    let Opening {
        command,
        tty,
        rows,
        cols,
    } = opening;
    if command.is_empty() || command[0].is_empty() {
        return Err(ApiError::input("`command` must name a program to run"));
    }
    if rows == 0 || cols == 0 {
        return Err(ApiError::input("`rows` and `cols` must be at least 1"));
    }
    let (shared, ticket) = state
        .sessions
        .create((task_id, run_id), framing, |session_id| Control::Open {
            session_id: session_id.to_string(),
            command: command.clone(),
            tty,
            rows,
            cols,
        })?;
    let session_id = shared.session_id;
    let opened = state
        .engine
        .execute(
            task_id,
            Command::OpenSession {
                run_id,
                session_id,
                client_id,
                command,
                tty,
            },
            caller,
        )
        .await;
    let task = match opened {
        Ok(task) => task,
        Err(error) => {
            state.sessions.forget(session_id);
            return Err(error);
        }
    };
    expire_unclaimed(state.clone(), session_id);
    Ok(Opened {
        task,
        session_id,
        ticket,
    })
}

/// `POST /task/<taskId>/runs/<runId>/sessions`.
pub async fn create_session(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("createSession", request, body)
        .answer(async |call| {
            let task_id = call.slugid_param("taskId")?;
            let run_id = call.run_id_param()?;
            let input: CreateSessionRequest = if call.body().is_empty() {
                CreateSessionRequest::default()
            } else {
                call.input("create-session-request")?
            };
            let task = find_task(&state, task_id).await?;
            let client_id = authorize(call, &state, &CREATE_SESSION, &task)?
                .client_id
                .clone()
                .unwrap_or_default();
            let opening = Opening {
                command: input
                    .command
                    .unwrap_or_else(|| vec![DEFAULT_COMMAND.to_owned()]),
                tty: input.tty.unwrap_or(true),
                rows: input.rows.unwrap_or(DEFAULT_ROWS),
                cols: input.cols.unwrap_or(DEFAULT_COLS),
            };
            let Opened {
                task,
                session_id,
                ticket,
            } = open_session(
                &state,
                (task_id, run_id),
                client_id,
                opening,
                Framing::V1,
                call.client_id(),
            )
            .await?;
            let session = task
                .session(session_id)
                .ok_or_else(|| ApiError::new(ErrorCode::InternalServerError, "session lost"))?;
            let mut reply = session_json(session, task_id, true);
            let socket_url = format!(
                "{}/api/queue/v1/sessions/{session_id}/socket?ticket={ticket}",
                websocket_url(&state.root_url)
            );
            let ticket_expires = Timestamp::now().plus_millis(
                i64::try_from(state.sessions.ticket_lifetime().as_millis()).unwrap_or(i64::MAX),
            );
            reply["shellUrl"] = json!(shell_page_url(
                &state.root_url,
                task_id,
                run_id,
                Some(&socket_url)
            ));
            reply["socketUrl"] = json!(socket_url);
            reply["ticketExpires"] = json!(ticket_expires);
            Ok(response::json(actix_web::http::StatusCode::OK, &reply))
        })
        .await
}

/// Where a resolved artifact of an interactive run leads when it is a session artifact
/// (`schemas/interactive.md`): each call mints a new grant for `client_id` (the caller, whose
/// `queue:get-artifact:<name>` was checked), and answers a websocket URL with the grant's ticket
/// in its path, or the shell page (`v=2`) given one. `None` for every other artifact.
pub fn session_artifact_url(
    state: &State,
    (task_id, run_id): RunKey,
    name: &str,
    interactive: bool,
    client_id: Option<String>,
) -> Option<String> {
    let artifact = session_artifact(name).filter(|_| interactive)?;
    let ticket = state
        .sessions
        .grant((task_id, run_id), client_id.unwrap_or_default());
    let socket = |framing: Framing| {
        format!(
            "{}/api/queue/v1/task/{task_id}/runs/{run_id}/socket/{}/{ticket}",
            websocket_url(&state.root_url),
            framing.name()
        )
    };
    Some(match artifact {
        SessionArtifact::Socket(framing) => socket(framing),
        SessionArtifact::Page(framing) => {
            let encoded: String =
                form_urlencoded::byte_serialize(socket(framing).as_bytes()).collect();
            format!(
                "{}/shell/?v=2&socketUrl={encoded}&taskId={task_id}&runId={run_id}",
                state.root_url
            )
        }
    })
}

/// `GET /task/<taskId>/runs/<runId>/socket/<v1|v2>/<ticket>[?tty=…&command=…]`: the websocket
/// of a grant's ticket, which opens a session for the clientId it was minted for and connects
/// to it at once, speaking the framing of the path. docker-exec-websocket-server's client adds
/// `tty` (`true` for a TTY; without it, a TTY) and `command` (repeated for each argument;
/// without it, `sh`). A wrong, used or expired ticket is a 401 before the upgrade, a run that
/// is not running a 409.
pub async fn ticket_socket(
    state: Data<State>,
    request: HttpRequest,
    body: Payload,
) -> HttpResponse {
    Call::new("sessionTicketSocket", request.clone(), Ok(Bytes::new()))
        .answer(async |call| {
            let Some(framing) = Framing::from_name(call.param("framing")) else {
                return Err(ApiError::not_found(format!(
                    "No session protocol `{}`: `v1` or `v2`.",
                    call.param("framing")
                )));
            };
            let run = (
                call.slugid_param("taskId").map_err(|_| bad_ticket())?,
                call.run_id_param().map_err(|_| bad_ticket())?,
            );
            let opening = ticket_opening(request.query_string());
            let (response, reader, writer) = websocket::accept(
                &request,
                body,
                MAX_FRAME,
                state.sessions.settings.relay_buffer_frames,
            )?;
            let client_id = state
                .sessions
                .spend_grant(run, call.param("ticket"))
                .map_err(|_| bad_ticket())?;
            let caller = Some(client_id.clone()).filter(|client_id| !client_id.is_empty());
            let opened = open_session(&state, run, client_id, opening, framing, caller).await?;
            let attach = state
                .sessions
                .attach_user(opened.session_id, &opened.ticket, writer.clone())
                .map_err(|_| bad_ticket())?;
            actix_web::rt::spawn(relay::serve_user(state.clone(), attach, reader, writer));
            Ok(response)
        })
        .await
}

/// The session a ticket's websocket asks for in its query: `tty` and `command` as
/// docker-exec-websocket-server's client sends them.
fn ticket_opening(query: &str) -> Opening {
    let mut command = Vec::new();
    let mut tty = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "command" => command.push(value.into_owned()),
            "tty" => tty = Some(value.eq_ignore_ascii_case("true")),
            _ => {}
        }
    }
    if command.is_empty() {
        command.push(DEFAULT_COMMAND.to_owned());
    }
    Opening {
        command,
        tty: tty.unwrap_or(true),
        rows: DEFAULT_ROWS,
        cols: DEFAULT_COLS,
    }
}

/// The browser page for a run, connecting to `socket_url` when given.
pub fn shell_page_url(
    root_url: &str,
    task_id: Slugid,
    run_id: u32,
    socket_url: Option<&str>,
) -> String {
    let mut url = format!("{root_url}/shell/?taskId={task_id}&runId={run_id}");
    if let Some(socket_url) = socket_url {
        let encoded: String = form_urlencoded::byte_serialize(socket_url.as_bytes()).collect();
        url.push_str("&socketUrl=");
        url.push_str(&encoded);
    }
    url
}

/// A session whose user never connects ends when its ticket expires.
fn expire_unclaimed(state: Data<State>, session_id: Slugid) {
    let wait = state.sessions.ticket_lifetime() + std::time::Duration::from_secs(1);
    actix_web::rt::spawn(async move {
        tokio::time::sleep(wait).await;
        if !state.sessions.unclaimed(session_id) {
            return;
        }
        let Some(shared) = state.sessions.shared(session_id) else {
            return;
        };
        let ending = Ending {
            end: SessionEnd::Disconnected,
            exit_status: None,
        };
        if relay::claim_end(&shared, ending)
            && let Err(error) = relay::record_end(&state, &shared, ending, None).await
        {
            tracing::warn!(%error, "recording the end of an unused session");
        }
    });
}

/// `GET /task/<taskId>/runs/<runId>/sessions`.
pub async fn list_sessions(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listSessions", request, body)
        .answer(async |call| {
            let task_id = call.slugid_param("taskId")?;
            let run_id = call.run_id_param()?;
            let task = find_task(&state, task_id).await?;
            authorize(call, &state, &LIST_SESSIONS, &task)?;
            if task.runs.get(run_id as usize).is_none() {
                return Err(run_not_found(task_id, run_id));
            }
            let sessions: Vec<Value> = task
                .sessions
                .iter()
                .filter(|session| session.run_id == run_id)
                .map(|session| {
                    session_json(session, task_id, state.sessions.is_live(session.session_id))
                })
                .collect();
            Ok(response::json(
                actix_web::http::StatusCode::OK,
                &json!({ "sessions": sessions }),
            ))
        })
        .await
}

fn run_not_found(task_id: Slugid, run_id: u32) -> ApiError {
    ApiError::not_found(format!("Run {run_id} not found on task `{task_id}`."))
        .with_details(json!({ "taskId": task_id, "runId": run_id }))
}

/// `POST /task/<taskId>/runs/<runId>/sessions/<sessionId>/close`.
pub async fn close_session(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("closeSession", request, body)
        .answer(async |call| {
            let task_id = call.slugid_param("taskId")?;
            let run_id = call.run_id_param()?;
            let session_id = call.slugid_param("sessionId")?;
            let task = find_task(&state, task_id).await?;
            authorize(call, &state, &CLOSE_SESSION, &task)?;
            let Some(session) = task
                .session(session_id)
                .filter(|session| session.run_id == run_id)
            else {
                return Err(ApiError::not_found(format!(
                    "Session `{session_id}` not found on run {run_id} of task `{task_id}`."
                ))
                .with_details(
                    json!({ "taskId": task_id, "runId": run_id, "sessionId": session_id }),
                ));
            };
            let ending = Ending {
                end: session.end.unwrap_or(SessionEnd::ClosedByUser),
                exit_status: session.exit_status,
            };
            let task = match state.sessions.shared(session_id) {
                Some(shared) => {
                    state.sessions.tell_worker_to_close(shared.run, session_id);
                    relay::claim_end(&shared, ending);
                    relay::record_end(&state, &shared, ending, call.client_id()).await?
                }
                None => {
                    let command = relay::close_command(session_id, ending);
                    state
                        .engine
                        .execute(task_id, command, call.client_id())
                        .await?
                }
            };
            let session = task
                .session(session_id)
                .ok_or_else(|| ApiError::new(ErrorCode::InternalServerError, "session lost"))?;
            Ok(response::json(
                actix_web::http::StatusCode::OK,
                &session_json(session, task_id, false),
            ))
        })
        .await
}

/// `GET /sessions/<sessionId>/socket?ticket=…`: the user's websocket. A wrong, used or
/// expired ticket is a 401 before the upgrade.
pub async fn user_socket(state: Data<State>, request: HttpRequest, body: Payload) -> HttpResponse {
    Call::new("sessionSocket", request.clone(), Ok(Bytes::new()))
        .answer(async |call| {
            let session_id = call.slugid_param("sessionId").map_err(|_| bad_ticket())?;
            let ticket = call.query("ticket").unwrap_or_default();
            let (response, reader, writer) = websocket::accept(
                &request,
                body,
                MAX_FRAME,
                state.sessions.settings.relay_buffer_frames,
            )?;
            let attach = state
                .sessions
                .attach_user(session_id, &ticket, writer.clone())
                .map_err(|_| bad_ticket())?;
            actix_web::rt::spawn(relay::serve_user(state.clone(), attach, reader, writer));
            Ok(response)
        })
        .await
}

/// `GET /sessions/<sessionId>/worker`: the worker's dial-back, signed with the run's
/// credentials.
pub async fn worker_socket(
    state: Data<State>,
    request: HttpRequest,
    body: Payload,
) -> HttpResponse {
    Call::new("sessionWorkerSocket", request.clone(), Ok(Bytes::new()))
        .answer(async |call| {
            let session_id = call.slugid_param("sessionId")?;
            let not_waiting = || {
                ApiError::not_found(format!(
                    "Session `{session_id}` is not waiting for its worker."
                ))
            };
            let (task_id, run_id) = state.sessions.run_of(session_id).ok_or_else(not_waiting)?;
            let (task_id_text, run_id_text) = (task_id.to_string(), run_id.to_string());
            call.authorize(
                &state.access.clients(),
                &RECLAIM_TASK,
                &[("taskId", &task_id_text), ("runId", &run_id_text)],
            )?;
            let (response, reader, writer) = websocket::accept(
                &request,
                body,
                MAX_FRAME,
                state.sessions.settings.relay_buffer_frames,
            )?;
            let (shared, user) = state
                .sessions
                .attach_worker(session_id, writer.clone())
                .ok_or_else(not_waiting)?;
            actix_web::rt::spawn(relay::serve_worker(
                state.clone(),
                shared,
                user,
                reader,
                writer,
            ));
            Ok(response)
        })
        .await
}

/// `GET /task/<taskId>/runs/<runId>/interactive`: a worker's control channel for a running
/// interactive run, signed with the run's credentials.
pub async fn control_socket(
    state: Data<State>,
    request: HttpRequest,
    body: Payload,
) -> HttpResponse {
    Call::new("sessionControl", request.clone(), Ok(Bytes::new()))
        .answer(async |call| {
            let task_id = call.slugid_param("taskId")?;
            let run_id = call.run_id_param()?;
            call.authorize_url(&state.access.clients(), &RECLAIM_TASK)?;
            let task = find_task(&state, task_id).await?;
            let run = task
                .runs
                .get(run_id as usize)
                .ok_or_else(|| run_not_found(task_id, run_id))?;
            if run.state != RunState::Running || !task.definition.interactive() {
                return Err(ApiError::conflict(format!(
                    "Run {run_id} of task `{task_id}` is not a running interactive run."
                )));
            }
            let (response, reader, writer) =
                websocket::accept(&request, body, MAX_DATA, CONTROL_BUFFER)?;
            actix_web::rt::spawn(relay::serve_control(
                state.clone(),
                (task_id, run_id),
                reader,
                writer,
            ));
            Ok(response)
        })
        .await
}

/// The registry a server starts with.
pub fn registry(settings: &crate::settings::Settings) -> std::sync::Arc<Registry> {
    std::sync::Arc::new(Registry::new(settings.sessions.clone()))
}
