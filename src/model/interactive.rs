//! The interactive-session wire protocol (`schemas/interactive.md`): binary frames whose first
//! byte is an opcode of docker-exec-websocket-server, with a full 32-bit exit status, and the
//! control messages the queue sends a worker. The queue's relay, the worker and `taskfold
//! shell` all speak it through these types. A user may also speak Taskcluster's current shell
//! protocol ([`v2`]), which the queue's relay translates; the artifacts that lead users to
//! sessions are named here too, for the worker that makes them and the queue that resolves them.

use serde::{Deserialize, Serialize};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 50;
pub const RESUME: u8 = 100;
pub const PAUSE: u8 = 101;
pub const END: u8 = 102;
pub const STOPPED: u8 = 200;
pub const SHUTDOWN: u8 = 201;
pub const ERROR: u8 = 202;

/// Most payload bytes in one data frame.
pub const MAX_DATA: usize = 64 * 1024;

/// One frame of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Resize {
        rows: u16,
        cols: u16,
    },
    Resume,
    Pause,
    /// Close the shell's stdin.
    End,
    /// The shell exited with this status.
    Stopped(i32),
    /// The worker is shutting down.
    Shutdown,
    Error(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an empty frame")]
    Empty,
    #[error("opcode {0} is not one of the protocol's")]
    UnknownOpcode(u8),
    #[error("frame {opcode} needs {needs} payload bytes, not {got}")]
    Length {
        opcode: u8,
        needs: usize,
        got: usize,
    },
}

impl Frame {
    pub fn opcode(&self) -> u8 {
        match self {
            Frame::Stdin(_) => STDIN,
            Frame::Stdout(_) => STDOUT,
            Frame::Stderr(_) => STDERR,
            Frame::Resize { .. } => RESIZE,
            Frame::Resume => RESUME,
            Frame::Pause => PAUSE,
            Frame::End => END,
            Frame::Stopped(_) => STOPPED,
            Frame::Shutdown => SHUTDOWN,
            Frame::Error(_) => ERROR,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![self.opcode()];
        match self {
            Frame::Stdin(data) | Frame::Stdout(data) | Frame::Stderr(data) => {
                bytes.extend_from_slice(data);
            }
            Frame::Resize { rows, cols } => {
                bytes.extend_from_slice(&rows.to_le_bytes());
                bytes.extend_from_slice(&cols.to_le_bytes());
            }
            Frame::Stopped(status) => bytes.extend_from_slice(&status.to_le_bytes()),
            Frame::Error(reason) => bytes.extend_from_slice(reason.as_bytes()),
            Frame::Resume | Frame::Pause | Frame::End | Frame::Shutdown => {}
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let (&opcode, payload) = bytes.split_first().ok_or(FrameError::Empty)?;
        let exact = |needs: usize| {
            if payload.len() == needs {
                Ok(payload)
            } else {
                Err(FrameError::Length {
                    opcode,
                    needs,
                    got: payload.len(),
                })
            }
        };
        Ok(match opcode {
            STDIN => Frame::Stdin(payload.to_vec()),
            STDOUT => Frame::Stdout(payload.to_vec()),
            STDERR => Frame::Stderr(payload.to_vec()),
            RESIZE => {
                let size = exact(4)?;
                Frame::Resize {
                    rows: u16::from_le_bytes([size[0], size[1]]),
                    cols: u16::from_le_bytes([size[2], size[3]]),
                }
            }
            RESUME => Frame::Resume,
            PAUSE => Frame::Pause,
            END => Frame::End,
            STOPPED => {
                let status = exact(4)?;
                Frame::Stopped(i32::from_le_bytes([
                    status[0], status[1], status[2], status[3],
                ]))
            }
            SHUTDOWN => Frame::Shutdown,
            ERROR => Frame::Error(String::from_utf8_lossy(payload).into_owned()),
            other => return Err(FrameError::UnknownOpcode(other)),
        })
    }
}

/// How a user's websocket frames a session: which protocol the user speaks. The worker always
/// speaks [`Frame`]s; the queue's relay translates for a [`Framing::V2`] user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// [`Frame`]s, docker-exec-websocket-server's opcodes (Taskcluster's shell page's `v=1`).
    V1,
    /// Taskcluster's current shell protocol ([`v2`]; the shell page's `v=2`).
    V2,
}

impl Framing {
    /// As the socket routes name it (`v1`, `v2`).
    pub fn name(self) -> &'static str {
        match self {
            Framing::V1 => "v1",
            Framing::V2 => "v2",
        }
    }

    pub fn from_name(name: &str) -> Option<Framing> {
        match name {
            "v1" => Some(Framing::V1),
            "v2" => Some(Framing::V2),
            _ => None,
        }
    }
}

/// Taskcluster's current shell protocol (generic-worker's, which Taskcluster's UI opens at
/// `/shell/?v=2&socketUrl=…`). The user sends `0x01` + bytes (stdin) and `0x02`, `u16le rows`,
/// `u16le cols` (resize) and sends at once, without waiting for a `resume`; the server sends
/// the shell's output (stdout and stderr alike) as the frame's raw bytes, with no opcode, and
/// has no exit message: it closes the socket when the shell ends.
pub mod v2 {
    use super::{Frame, FrameError};

    pub const STDIN: u8 = 0x01;
    pub const RESIZE: u8 = 0x02;

    /// A v2 user's frame as a session frame (stdin or resize).
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let (&opcode, payload) = bytes.split_first().ok_or(FrameError::Empty)?;
        match opcode {
            STDIN => Ok(Frame::Stdin(payload.to_vec())),
            RESIZE if payload.len() == 4 => Ok(Frame::Resize {
                rows: u16::from_le_bytes([payload[0], payload[1]]),
                cols: u16::from_le_bytes([payload[2], payload[3]]),
            }),
            RESIZE => Err(FrameError::Length {
                opcode,
                needs: 4,
                got: payload.len(),
            }),
            other => Err(FrameError::UnknownOpcode(other)),
        }
    }

    /// What a v2 user sends for `frame` (only stdin and resize have a v2 form).
    pub fn encode(frame: &Frame) -> Option<Vec<u8>> {
        match frame {
            Frame::Stdin(data) => Some([&[STDIN], data.as_slice()].concat()),
            Frame::Resize { rows, cols } => {
                let mut bytes = vec![RESIZE];
                bytes.extend_from_slice(&rows.to_le_bytes());
                bytes.extend_from_slice(&cols.to_le_bytes());
                Some(bytes)
            }
            _ => None,
        }
    }

    /// What a v2 user gets of a frame the shell's side sent: output as its raw bytes, an error
    /// as its text on a line of its own (as generic-worker reports errors); nothing else has a
    /// v2 form.
    pub fn to_user(frame: &Frame) -> Option<Vec<u8>> {
        match frame {
            Frame::Stdout(data) | Frame::Stderr(data) => Some(data.clone()),
            Frame::Error(reason) => Some(format!("\r\n[{reason}]\r\n").into_bytes()),
            _ => None,
        }
    }
}

/// The reference artifact every interactive run has: the queue's browser page for the run.
pub const TASKFOLD_SHELL_ARTIFACT: &str = "private/taskfold/shell.html";
/// docker-worker's reference artifacts of an interactive Docker run: a websocket URL for
/// docker-exec-websocket-server's client, and the browser page.
pub const DOCKER_WORKER_SOCKET_ARTIFACT: &str = "private/docker-worker/interactive.sock";
pub const DOCKER_WORKER_PAGE_ARTIFACT: &str = "private/docker-worker/interactive.html";
/// generic-worker's reference artifact of an interactive run: Taskcluster's shell page (`v=2`).
pub const GENERIC_WORKER_SHELL_ARTIFACT: &str = "private/generic-worker/shell.html";

/// What the queue does when it resolves a reference artifact of an interactive run that leads
/// to a new session: each resolution mints a fresh single-use ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionArtifact {
    /// Redirect to a websocket URL of this framing.
    Socket(Framing),
    /// Redirect to the shell page (`v=2`), given a websocket URL of this framing.
    Page(Framing),
}

/// Which artifacts mint a session's ticket when resolved, and how.
pub fn session_artifact(name: &str) -> Option<SessionArtifact> {
    match name {
        DOCKER_WORKER_SOCKET_ARTIFACT => Some(SessionArtifact::Socket(Framing::V1)),
        GENERIC_WORKER_SHELL_ARTIFACT => Some(SessionArtifact::Page(Framing::V2)),
        _ => None,
    }
}

/// What the queue tells a worker on a run's control channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum Control {
    /// Dial back for this session and start its shell.
    Open {
        session_id: String,
        command: Vec<String>,
        tty: bool,
        rows: u16,
        cols: u16,
    },
    /// End this session's shell.
    Close { session_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Stdin(b"ls\r".to_vec()),
            Frame::Stdout(vec![0xff, 0]),
            Frame::Stderr(vec![]),
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::Resume,
            Frame::Pause,
            Frame::End,
            Frame::Stopped(-1),
            Frame::Stopped(300),
            Frame::Shutdown,
            Frame::Error("no".to_owned()),
        ];
        for frame in frames {
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn wire_layout_follows_docker_exec_with_a_full_exit_status() {
        assert_eq!(
            Frame::Resize { rows: 24, cols: 80 }.encode(),
            [50, 24, 0, 80, 0]
        );
        assert_eq!(Frame::Stopped(256).encode(), [200, 0, 1, 0, 0]);
        assert_eq!(
            Frame::decode(&[1, b'h', b'i']),
            Ok(Frame::Stdout(b"hi".to_vec()))
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[7]), Err(FrameError::UnknownOpcode(7)));
        assert_eq!(
            Frame::decode(&[RESIZE, 1]),
            Err(FrameError::Length {
                opcode: RESIZE,
                needs: 4,
                got: 1
            })
        );
    }

    #[test]
    fn v2_frames_become_session_frames_and_output_is_raw() {
        assert_eq!(
            v2::decode(&[1, b'l', b's']),
            Ok(Frame::Stdin(b"ls".to_vec()))
        );
        assert_eq!(
            v2::decode(&[2, 37, 0, 101, 0]),
            Ok(Frame::Resize {
                rows: 37,
                cols: 101
            })
        );
        assert_eq!(
            v2::decode(&[2, 37]),
            Err(FrameError::Length {
                opcode: 2,
                needs: 4,
                got: 1
            })
        );
        assert_eq!(v2::decode(&[0, b'x']), Err(FrameError::UnknownOpcode(0)));
        assert_eq!(v2::decode(&[]), Err(FrameError::Empty));
        for frame in [
            Frame::Stdin(b"x".to_vec()),
            Frame::Resize { rows: 1, cols: 2 },
        ] {
            assert_eq!(v2::decode(&v2::encode(&frame).unwrap()), Ok(frame));
        }
        assert_eq!(
            v2::to_user(&Frame::Stdout(b"hi".to_vec())),
            Some(b"hi".to_vec())
        );
        assert_eq!(
            v2::to_user(&Frame::Stderr(b"oops".to_vec())),
            Some(b"oops".to_vec())
        );
        assert_eq!(v2::to_user(&Frame::Stopped(0)), None);
        assert_eq!(v2::to_user(&Frame::Resume), None);
    }

    #[test]
    fn the_artifacts_that_mint_sessions() {
        assert_eq!(
            session_artifact("private/docker-worker/interactive.sock"),
            Some(SessionArtifact::Socket(Framing::V1))
        );
        assert_eq!(
            session_artifact("private/generic-worker/shell.html"),
            Some(SessionArtifact::Page(Framing::V2))
        );
        assert_eq!(session_artifact(DOCKER_WORKER_PAGE_ARTIFACT), None);
        assert_eq!(session_artifact(TASKFOLD_SHELL_ARTIFACT), None);
        assert_eq!(Framing::from_name("v2"), Some(Framing::V2));
        assert_eq!(Framing::from_name(Framing::V1.name()), Some(Framing::V1));
        assert_eq!(Framing::from_name("v3"), None);
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let open = Control::Open {
            session_id: "s".to_owned(),
            command: vec!["sh".to_owned()],
            tty: true,
            rows: 24,
            cols: 80,
        };
        let text = serde_json::to_string(&open).unwrap();
        assert_eq!(
            text,
            r#"{"type":"open","sessionId":"s","command":["sh"],"tty":true,"rows":24,"cols":80}"#
        );
        assert_eq!(serde_json::from_str::<Control>(&text).unwrap(), open);
    }
}
