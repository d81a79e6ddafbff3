//! The live side of interactive sessions (DESIGN.md, interactive sessions): which sessions are
//! open in this process, their single-use tickets, the runs' control channels to their
//! workers, and the meeting point where a user's websocket and the worker's dial-back find
//! each other. Besides a session's ticket, a run may have grants: single-use tickets minted
//! when a session artifact is resolved, which open a session when their websocket connects.
//! Opening and closing are the task's events; nothing here is durable, so after a restart
//! every session is over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::websocket::Writer;
use crate::model::interactive::{Control, Framing};
use crate::model::{ApiError, ErrorCode, SessionEnd, Slugid};
use crate::settings::SessionSettings;

/// A run, as sessions and control channels are keyed.
pub type RunKey = (Slugid, u32);

/// How a session ended, decided once by whichever side saw it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub end: SessionEnd,
    pub exit_status: Option<i32>,
}

/// What both halves of a session's relay share.
pub struct Shared {
    pub session_id: Slugid,
    pub run: RunKey,
    /// What the user's websocket speaks.
    pub framing: Framing,
    /// Set once; both halves stop when it is.
    ending: watch::Sender<Option<Ending>>,
    /// Whether the worker's shell takes input (its first `resume` came).
    ready: watch::Sender<bool>,
}

impl Shared {
    /// Records how the session ended unless it already had; `true` for the first caller,
    /// which records it in the log.
    pub fn end(&self, ending: Ending) -> bool {
        self.ending.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(ending);
                true
            } else {
                false
            }
        })
    }

    pub fn ending(&self) -> Option<Ending> {
        *self.ending.borrow()
    }

    /// Notes the worker's first `resume`: its shell takes input.
    pub fn mark_ready(&self) {
        self.ready
            .send_if_modified(|ready| !std::mem::replace(ready, true));
    }

    /// Resolves once the worker's shell takes input (at once if it does).
    pub async fn wait_ready(&self) {
        let mut watching = self.ready.subscribe();
        if watching.wait_for(|ready| *ready).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the session has ended.
    pub async fn ended(&self) -> Ending {
        let mut watching = self.ending.subscribe();
        loop {
            if let Some(ending) = *watching.borrow_and_update() {
                return ending;
            }
            if watching.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

struct Live {
    shared: Arc<Shared>,
    ticket: String,
    ticket_expires: Instant,
    ticket_used: bool,
    /// What the worker is told to open.
    open: Control,
    /// Once the user is connected: where the worker's dial-back hands its writer, and the
    /// user's writer it gets back.
    meeting: Option<(oneshot::Sender<Writer>, Writer)>,
}

struct ControlChannel {
    id: u64,
    messages: mpsc::UnboundedSender<Control>,
}

/// A ticket that opens a new session of `run` for `client_id` (minted when a session
/// artifact was resolved).
struct Grant {
    run: RunKey,
    secret: String,
    client_id: String,
    expires: Instant,
}

/// Characters of a grant's ticket that name it; the rest is its secret.
const GRANT_ID_CHARS: usize = 22;

#[derive(Default)]
struct Inner {
    live: HashMap<Slugid, Live>,
    /// Grants by the first [`GRANT_ID_CHARS`] characters of their ticket.
    grants: HashMap<String, Grant>,
    controls: HashMap<RunKey, ControlChannel>,
    /// Opens waiting for their run's control channel to connect.
    waiting_opens: HashMap<RunKey, Vec<Control>>,
    next_control: u64,
}

pub struct Registry {
    pub settings: SessionSettings,
    inner: Mutex<Inner>,
}

/// Why a ticket was refused (all are the same 401 to the caller).
#[derive(Debug)]
pub struct BadTicket;

/// A user's side of a session whose ticket was accepted.
pub struct UserAttach {
    pub shared: Arc<Shared>,
    /// The worker's writer, once it dialed back.
    pub worker: oneshot::Receiver<Writer>,
}

impl Registry {
    pub fn new(settings: SessionSettings) -> Registry {
        Registry {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn ticket_lifetime(&self) -> Duration {
        Duration::from_secs(self.settings.ticket_seconds)
    }

    /// Reserves a new session of `run` (refused past `max_per_run` open ones); returns its id
    /// and ticket.
    pub fn create(
        &self,
        run: RunKey,
        framing: Framing,
        open: impl FnOnce(Slugid) -> Control,
    ) -> Result<(Arc<Shared>, String), ApiError> {
        let mut inner = self.inner();
        let open_now = inner
            .live
            .values()
            .filter(|live| live.shared.run == run)
            .count();
        if open_now >= self.settings.max_per_run {
            return Err(ApiError::conflict(format!(
                "Run {} of task `{}` has {open_now} open sessions, the most a run may have.",
                run.1, run.0
            ))
            .with_details(serde_json::json!({"taskId": run.0, "runId": run.1})));
        }
        let session_id = Slugid::nice();
        let ticket = format!("{}{}", Slugid::nice(), Slugid::nice());
        let shared = Arc::new(Shared {
            session_id,
            run,
            framing,
            ending: watch::Sender::new(None),
            ready: watch::Sender::new(false),
        });
        inner.live.insert(
            session_id,
            Live {
                shared: shared.clone(),
                ticket: ticket.clone(),
                ticket_expires: Instant::now() + self.ticket_lifetime(),
                ticket_used: false,
                open: open(session_id),
                meeting: None,
            },
        );
        Ok((shared, ticket))
    }

    /// Mints a grant: a single-use ticket, expiring after `ticket_seconds`, that opens a new
    /// session of `run` for `client_id` when its websocket connects. Expired grants are
    /// dropped here.
    pub fn grant(&self, run: RunKey, client_id: String) -> String {
        let mut inner = self.inner();
        let now = Instant::now();
        inner.grants.retain(|_, grant| grant.expires > now);
        let (id, secret) = (Slugid::nice().to_string(), Slugid::nice().to_string());
        let ticket = format!("{id}{secret}");
        inner.grants.insert(
            id,
            Grant {
                run,
                secret,
                client_id,
                expires: now + self.ticket_lifetime(),
            },
        );
        ticket
    }

    /// Spends a grant's ticket for `run`: the clientId it was minted for. A ticket that is
    /// wrong, used, expired or of another run is refused.
    pub fn spend_grant(&self, run: RunKey, ticket: &str) -> Result<String, BadTicket> {
        let mut inner = self.inner();
        let (id, secret) = (
            ticket.get(..GRANT_ID_CHARS).ok_or(BadTicket)?,
            ticket.get(GRANT_ID_CHARS..).ok_or(BadTicket)?,
        );
        let grant = inner.grants.get(id).ok_or(BadTicket)?;
        let matches: bool = grant.secret.as_bytes().ct_eq(secret.as_bytes()).into();
        if !matches || grant.run != run {
            return Err(BadTicket);
        }
        let grant = inner.grants.remove(id).ok_or(BadTicket)?;
        if Instant::now() >= grant.expires {
            return Err(BadTicket);
        }
        Ok(grant.client_id)
    }

    /// Whether the session is open in this process.
    pub fn is_live(&self, session_id: Slugid) -> bool {
        self.inner().live.contains_key(&session_id)
    }

    pub fn shared(&self, session_id: Slugid) -> Option<Arc<Shared>> {
        self.inner()
            .live
            .get(&session_id)
            .map(|live| live.shared.clone())
    }

    /// The session's run, if it is open here.
    pub fn run_of(&self, session_id: Slugid) -> Option<RunKey> {
        self.inner()
            .live
            .get(&session_id)
            .map(|live| live.shared.run)
    }

    pub fn forget(&self, session_id: Slugid) {
        self.inner().live.remove(&session_id);
    }

    /// Spends the session's ticket for the user's websocket, whose writer the worker will
    /// get, and asks the run's worker to open the shell.
    pub fn attach_user(
        &self,
        session_id: Slugid,
        ticket: &str,
        user: Writer,
    ) -> Result<UserAttach, BadTicket> {
        let mut inner = self.inner();
        let live = inner.live.get_mut(&session_id).ok_or(BadTicket)?;
        let matches: bool = live.ticket.as_bytes().ct_eq(ticket.as_bytes()).into();
        if !matches || live.ticket_used || Instant::now() >= live.ticket_expires {
            return Err(BadTicket);
        }
        live.ticket_used = true;
        let (handing, worker) = oneshot::channel();
        live.meeting = Some((handing, user));
        let shared = live.shared.clone();
        let open = live.open.clone();
        let run = shared.run;
        match inner.controls.get(&run) {
            Some(control) if control.messages.send(open.clone()).is_ok() => {}
            _ => inner.waiting_opens.entry(run).or_default().push(open),
        }
        Ok(UserAttach { shared, worker })
    }

    /// The worker dialed back for the session: hands its writer to the user's side and
    /// returns the user's writer.
    pub fn attach_worker(
        &self,
        session_id: Slugid,
        worker: Writer,
    ) -> Option<(Arc<Shared>, Writer)> {
        let mut inner = self.inner();
        let live = inner.live.get_mut(&session_id)?;
        let (handing, user) = live.meeting.take()?;
        handing.send(worker).ok()?;
        Some((live.shared.clone(), user))
    }

    /// Whether the ticket was never spent (the session waits for its user).
    pub fn unclaimed(&self, session_id: Slugid) -> bool {
        self.inner()
            .live
            .get(&session_id)
            .is_some_and(|live| !live.ticket_used)
    }

    /// Registers the run's control channel (replacing an older one of the run) and hands it
    /// the opens that waited for it.
    pub fn connect_control(&self, run: RunKey) -> (u64, mpsc::UnboundedReceiver<Control>) {
        let mut inner = self.inner();
        let (messages, receiver) = mpsc::unbounded_channel();
        for open in inner.waiting_opens.remove(&run).unwrap_or_default() {
            let _ = messages.send(open);
        }
        inner.next_control += 1;
        let id = inner.next_control;
        inner.controls.insert(run, ControlChannel { id, messages });
        (id, receiver)
    }

    pub fn disconnect_control(&self, run: RunKey, id: u64) {
        let mut inner = self.inner();
        if inner
            .controls
            .get(&run)
            .is_some_and(|control| control.id == id)
        {
            inner.controls.remove(&run);
        }
    }

    /// Tells the run's worker to end the session's shell (if it has a control channel).
    pub fn tell_worker_to_close(&self, run: RunKey, session_id: Slugid) {
        let mut inner = self.inner();
        if let Some(waiting) = inner.waiting_opens.get_mut(&run) {
            waiting.retain(|open| !matches!(open, Control::Open { session_id: id, .. } if *id == session_id.to_string()));
        }
        if let Some(control) = inner.controls.get(&run) {
            let _ = control.messages.send(Control::Close {
                session_id: session_id.to_string(),
            });
        }
    }
}

/// The error every refused ticket gets.
pub fn bad_ticket() -> ApiError {
    ApiError::new(
        ErrorCode::AuthenticationFailed,
        "The session's URL is not valid: its ticket is wrong, was already used, or expired. \
         Create a new session.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(ticket_seconds: u64) -> Registry {
        let mut settings = crate::settings::Settings::defaults().sessions.clone();
        settings.ticket_seconds = ticket_seconds;
        Registry::new(settings)
    }

    #[test]
    fn a_grant_is_spent_once_for_its_own_run() {
        let registry = registry(60);
        let run = (Slugid::nice(), 0);
        let ticket = registry.grant(run, "someone".to_owned());
        assert!(registry.spend_grant((run.0, 1), &ticket).is_err());
        assert!(registry.spend_grant((Slugid::nice(), 0), &ticket).is_err());
        let mut wrong = ticket.clone();
        wrong.pop();
        wrong.push(if ticket.ends_with('A') { 'B' } else { 'A' });
        assert!(registry.spend_grant(run, &wrong).is_err());
        assert!(registry.spend_grant(run, "short").is_err());
        assert_eq!(registry.spend_grant(run, &ticket).unwrap(), "someone");
        assert!(registry.spend_grant(run, &ticket).is_err());
    }

    #[test]
    fn an_expired_grant_is_refused_and_dropped() {
        let registry = registry(0);
        let run = (Slugid::nice(), 0);
        let ticket = registry.grant(run, String::new());
        assert!(registry.spend_grant(run, &ticket).is_err());
        registry.grant(run, String::new());
        assert_eq!(registry.inner().grants.len(), 1);
    }
}
