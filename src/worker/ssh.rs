//! The SSH engine: runs a payload's script on one of the worker's configured targets, through
//! the system `ssh` (the openssh crate, one master connection per target, kept across runs;
//! commands go to the master over its multiplexing protocol, without an `ssh` process each). A payload names a
//! target; addresses, users, keys and the pinned host key come from the worker's
//! configuration only, so a task can never point the worker at a host of its choosing.
//!
//! The script runs in a session of its own on the target (`setsid`), its pid written to a file,
//! so that maxRunTime, a cancel or a shutdown can kill it and everything it started: closing
//! an SSH channel does not stop a remote process.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncReadExt;

use futures::StreamExt;
use futures::future::LocalBoxFuture;

use super::artifacts::Missing;
use super::interactive::{Interactive, Shell, ShellProcess, ShellRequest, Shells};
use super::payload::{Invalid, SshPayload};
use super::pty::Pty;
use super::resolution::{Abort, Artifacts, Outcome, Phase, Problem};
use super::task_run::RunContext;
use crate::model::interactive::{MAX_DATA, STDOUT};
use crate::settings::InteractiveSettings;
use crate::settings::{SshSettings, SshTarget};

/// Runs the script as the target user's `sh`, in its own session, stderr into stdout, its pid
/// in the file named by `$1`; exits with the script's status.
const WRAPPER: &str = r#"pidfile=$1; script=$2
setsid sh -c 'echo $$ > "$0"; exec sh -c "$1" 2>&1' "$pidfile" "$script" &
child=$!
wait $child
status=$?
rm -f "$pidfile"
exit $status"#;

/// A master connection that has been idle this long exits by itself, so none outlives a
/// worker that stopped without closing it.
const MASTER_IDLE_SECONDS: usize = 300;

pub struct SshEngine {
    settings: SshSettings,
    /// `[worker.interactive]`: how interactive runs linger.
    interactive: InteractiveSettings,
    /// Where the pinned `known_hosts` files are written.
    dir: PathBuf,
    /// One master connection per target, kept warm across runs: connecting is most of a
    /// short script's time.
    sessions: RefCell<HashMap<String, Rc<Session>>>,
}

impl SshEngine {
    pub fn new(
        settings: SshSettings,
        interactive: InteractiveSettings,
        data_dir: &Path,
    ) -> SshEngine {
        SshEngine {
            settings,
            interactive,
            dir: data_dir.join("ssh"),
            sessions: RefCell::new(HashMap::new()),
        }
    }

    /// The target's master connection, made when there is none.
    async fn session(&self, target: &SshTarget) -> Result<Rc<Session>, String> {
        if let Some(session) = self.sessions.borrow().get(&target.name) {
            return Ok(session.clone());
        }
        let session = Rc::new(self.connect(target).await?);
        self.sessions
            .borrow_mut()
            .insert(target.name.clone(), session.clone());
        Ok(session)
    }

    /// Drops a master connection that failed, so that the next run connects again.
    fn forget(&self, target: &SshTarget) {
        self.sessions.borrow_mut().remove(&target.name);
    }

    fn target(&self, name: &str) -> Option<&SshTarget> {
        self.settings
            .targets
            .iter()
            .find(|target| target.name == name)
    }

    async fn connect(&self, target: &SshTarget) -> Result<Session, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|error| format!("creating {}: {error}", self.dir.display()))?;
        let known_hosts = self.dir.join(format!("{}.known_hosts", target.name));
        let host_pattern = if target.port == 22 {
            target.host.clone()
        } else {
            format!("[{}]:{}", target.host, target.port)
        };
        std::fs::write(
            &known_hosts,
            format!("{host_pattern} {}\n", target.host_key.trim()),
        )
        .map_err(|error| format!("writing known_hosts: {error}"))?;
        let mut builder = SessionBuilder::default();
        builder
            .user(target.user.clone())
            .port(target.port)
            .keyfile(&target.identity_file)
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&known_hosts)
            .connect_timeout(Duration::from_secs(self.settings.connect_timeout_seconds))
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(MASTER_IDLE_SECONDS).unwrap_or(NonZeroUsize::MIN),
            ))
            // Unix socket paths are short; the run's directory may be deep.
            .control_directory(std::env::temp_dir());
        builder
            .connect_mux(&target.host)
            .await
            .map_err(|error| format!("{error}"))
    }

    pub async fn execute(&self, run: &mut RunContext) -> Outcome {
        let mut outcome = Outcome::new(Phase::Preparing);
        let payload = match SshPayload::read(&run.definition["payload"]) {
            Ok(payload) => payload,
            Err(invalid) => return run.malformed_payload(&invalid),
        };
        let Some(target) = self.target(&payload.target) else {
            let known: Vec<&str> = self
                .settings
                .targets
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            let problem = format!(
                "payload/target: `{}` is not a target of this worker (it has: {})",
                payload.target,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            return run.malformed_payload(&Invalid(vec![problem]));
        };
        run.log.info(&format!(
            "Target: {} ({}@{}:{})",
            target.name, target.user, target.host, target.port
        ));
        let pidfile = format!("/tmp/taskfold-{}-{}.pid", run.task_id, run.run_id);
        let mut retried = false;
        let session = loop {
            let session = match self.session(target).await {
                Ok(session) => session,
                Err(error) => {
                    let message = format!("cannot reach target `{}`: {error}", target.name);
                    run.log.error(&message);
                    outcome.problem = Some(Problem::ResourceUnavailable(message));
                    return outcome;
                }
            };
            outcome.problem = None;
            self.run_script(run, &session, &payload, &pidfile, &mut outcome)
                .await;
            // A kept connection may have died since its last run, so that the script never
            // started: one try on a fresh connection.
            if outcome.reached < Phase::Running && outcome.problem.is_some() && !retried {
                self.forget(target);
                retried = true;
                continue;
            }
            break session;
        };
        if outcome.problem.is_some() {
            // The connection may be what failed.
            self.forget(target);
        }
        if !matches!(outcome.abort, Some(Abort::Canceled | Abort::WorkerShutdown))
            && outcome.reached >= Phase::Running
        {
            outcome.reached = Phase::Collecting;
            if !collect(run, &session, &payload).await {
                outcome.artifacts = Artifacts::UploadFailed;
            }
        }
        outcome
    }

    async fn run_script(
        &self,
        run: &mut RunContext,
        session: &Session,
        payload: &SshPayload,
        pidfile: &str,
        outcome: &mut Outcome,
    ) {
        let mut script = String::new();
        for (name, value) in &payload.env {
            script.push_str(&format!("export {name}={}\n", shell_quote(value)));
        }
        for (name, value) in run.identity.reserved_variables(&run.task_id, run.run_id) {
            script.push_str(&format!("export {name}={}\n", shell_quote(&value)));
        }
        script.push_str(&payload.script);
        run.payload_starting();
        let started = Instant::now();
        let mut child = match session
            .command("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("taskfold")
            .arg(pidfile)
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .await
        {
            Ok(child) => child,
            Err(error) => {
                let message = format!("starting the script: {error}");
                run.log.error(&message);
                outcome.problem = Some(Problem::ResourceUnavailable(message));
                return;
            }
        };
        outcome.reached = Phase::Running;
        let sessions = payload.features.interactive.then(|| {
            let shells = Rc::new(SshShells {
                control_socket: session.control_socket().to_owned(),
            });
            Interactive::start(run, shells)
        });
        let mut stdout = child.stdout().take();
        let log = run.log.clone();
        let streaming = async move {
            let Some(stdout) = stdout.as_mut() else {
                return;
            };
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(read) = stdout.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                log.write(&buffer[..read]);
            }
        };
        let finished = async {
            streaming.await;
            child.wait().await
        };
        let max_run_time = Duration::from_secs(payload.max_run_time);
        let mut finished = std::pin::pin!(finished);
        let stopped = run
            .bounded(
                &mut finished,
                max_run_time,
                ". Killing the script.",
                outcome,
            )
            .await;
        let status = match stopped {
            Some(status) => status,
            None => {
                kill(session, pidfile).await;
                match tokio::time::timeout(Duration::from_secs(10), finished).await {
                    Ok(status) => status,
                    Err(_) => Err(openssh::Error::Disconnected),
                }
            }
        };
        outcome.exit_code = Some(match status {
            Ok(status) => status.code().map_or(-1, i64::from),
            // The remote `sh` reports a killed script as 128 + signal; the crate reports
            // 255 (ssh's own failure code) and a vanished process as errors.
            Err(openssh::Error::RemoteProcessTerminated) => 255,
            Err(error) => {
                if outcome.timed_out || outcome.abort.is_some() {
                    137
                } else {
                    run.log.error(&format!("lost the script: {error}"));
                    outcome.problem = Some(Problem::ResourceUnavailable(error.to_string()));
                    return;
                }
            }
        });
        if let Some(sessions) = sessions {
            // The run stays for the sessions a while after the script.
            let linger = Duration::from_secs(self.interactive.linger_seconds);
            let bound = (started + max_run_time).min(run.deadline());
            sessions.finish(run, outcome, linger, bound).await;
        }
        run.log
            .task_finished(outcome.exit_code, outcome.timed_out, started.elapsed());
    }
}

/// PTY shells on a target, through the run's master connection: `ssh -tt` on a local
/// pseudo-terminal, whose window changes ssh passes on.
struct SshShells {
    control_socket: PathBuf,
}

impl Shells for SshShells {
    fn open(&self, request: ShellRequest) -> LocalBoxFuture<'static, Result<Shell, String>> {
        let control_socket = self.control_socket.clone();
        Box::pin(async move {
            let remote: Vec<String> = request.command.iter().map(|arg| shell_quote(arg)).collect();
            let mut args = vec![
                "-S".to_owned(),
                control_socket.display().to_string(),
                if request.tty { "-tt" } else { "-T" }.to_owned(),
                "-o".to_owned(),
                "LogLevel=ERROR".to_owned(),
                // The master knows the host; this name only fills the argument.
                "taskfold-target".to_owned(),
                "--".to_owned(),
            ];
            args.push(remote.join(" "));
            let (pty, child) = Pty::spawn("ssh", &args, request.rows, request.cols)
                .map_err(|error| format!("starting ssh on a terminal: {error}"))?;
            let (reader, writer) = pty
                .files()
                .map_err(|error| format!("opening the terminal: {error}"))?;
            let output = futures::stream::unfold(reader, |mut reader| async move {
                let mut buffer = vec![0; MAX_DATA];
                match reader.read(&mut buffer).await {
                    // The terminal reads EIO once the last process on it is gone.
                    Ok(0) | Err(_) => None,
                    Ok(read) => {
                        buffer.truncate(read);
                        Some((Ok((STDOUT, buffer)), reader))
                    }
                }
            })
            .boxed_local();
            Ok(Shell {
                output,
                input: Box::pin(writer),
                process: Box::new(SshShell {
                    pty,
                    child: tokio::sync::Mutex::new(child),
                }),
            })
        })
    }
}

struct SshShell {
    pty: Pty,
    child: tokio::sync::Mutex<tokio::process::Child>,
}

impl ShellProcess for SshShell {
    fn resize(&self, rows: u16, cols: u16) -> LocalBoxFuture<'_, Result<(), String>> {
        let resized = self
            .pty
            .resize(rows, cols)
            .map_err(|error| format!("resizing the terminal: {error}"));
        Box::pin(async move { resized })
    }

    fn exit_status(&self) -> LocalBoxFuture<'_, i32> {
        Box::pin(async move {
            let status = self.child.lock().await.wait().await;
            status.ok().and_then(|status| status.code()).unwrap_or(-1)
        })
    }

    fn kill(&self) -> LocalBoxFuture<'_, ()> {
        if let Ok(mut child) = self.child.try_lock() {
            let _ = child.start_kill();
        }
        Box::pin(async {})
    }
}

/// Kills the script's whole session on the target (`pkill -s`: shells disagree on how `kill`
/// names a process group).
async fn kill(session: &Session, pidfile: &str) {
    let command = format!(
        "sid=$(cat {pidfile} 2>/dev/null) && pkill -KILL -s \"$sid\"; rm -f {pidfile}",
        pidfile = shell_quote(pidfile)
    );
    if let Err(error) = session.command("sh").arg("-c").arg(&command).status().await {
        tracing::warn!(%error, "killing the script on the target");
    }
}

/// Copies every artifact from the target and publishes it; `false` if an upload failed.
async fn collect(run: &RunContext, session: &Session, payload: &SshPayload) -> bool {
    let mut uploaded = true;
    for (index, artifact) in payload.artifacts.iter().enumerate() {
        let output = session
            .command("cat")
            .arg("--")
            .arg(&artifact.path)
            .stdin(Stdio::null())
            .output()
            .await;
        let result = match output {
            Ok(output) if output.status.success() => {
                let spool = run.work_dir.join(format!("artifact-{index}"));
                match tokio::fs::write(&spool, &output.stdout).await {
                    Ok(()) => {
                        let result = run.publisher.file(&artifact.name, &spool, None, None).await;
                        let _ = tokio::fs::remove_file(&spool).await;
                        result
                    }
                    Err(error) => Err(format!("spooling `{}`: {error}", artifact.name)),
                }
            }
            Ok(output) => {
                let message = format!(
                    "{} could not be read on the target: {}",
                    artifact.path,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                run.log
                    .error(&format!("artifact `{}`: {message}", artifact.name));
                run.publisher
                    .missing(&artifact.name, Missing::FileMissing, &message)
                    .await
            }
            Err(error) => Err(format!("copying `{}`: {error}", artifact.name)),
        };
        if let Err(error) = result {
            run.log.error(&error);
            uploaded = false;
        }
    }
    uploaded
}

/// `value` as one word for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
    }
}
