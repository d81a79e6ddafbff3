//! Interactive sessions as a task's events record them (`schemas/interactive.md`): who opened
//! a shell into which run, with what command, and how it ended. The bytes of a session never
//! touch the log; only its opening and closing do.

use serde::{Deserialize, Serialize};

use super::{Slugid, Timestamp};

/// A session of a run, folded from `SessionOpened` and `SessionClosed`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Session {
    pub session_id: Slugid,
    pub run_id: u32,
    /// Who opened it.
    pub client_id: String,
    pub command: Vec<String>,
    pub tty: bool,
    pub opened: Timestamp,
    pub closed: Option<Timestamp>,
    pub end: Option<SessionEnd>,
    /// The command's exit status, when it exited.
    pub exit_status: Option<i32>,
}

/// Why a session ended, as `listSessions` names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionEnd {
    /// The shell's command exited.
    Exited,
    /// `closeSession`, or the user closed the websocket.
    ClosedByUser,
    /// The user's connection broke, or the user never connected before the ticket expired.
    Disconnected,
    /// The worker's connection broke, or it never dialed back.
    WorkerGone,
    /// The worker is shutting down.
    WorkerShutdown,
    /// The run was resolved.
    RunResolved,
    /// The worker could not start the shell.
    Failed,
    /// The server stopped while the session was open (never recorded: derived on reading).
    ServerRestart,
}

impl Session {
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }
}
