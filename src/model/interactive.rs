//! The interactive-session wire protocol (`schemas/interactive.md`): binary frames whose first
//! byte is an opcode of docker-exec-websocket-server, with a full 32-bit exit status, and the
//! control messages the queue sends a worker. The queue's relay, the worker and `taskfold
//! shell` all speak it through these types.

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
