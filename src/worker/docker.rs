//! The Docker engine: runs docker-worker's payload in a container of a local Docker engine
//! (through bollard, at `DOCKER_HOST` or the default socket).
//!
//! Like docker-worker, a container has a TTY (stdout and stderr merged in the order written),
//! and artifacts are copied out of the stopped container through the archive API. Unlike it,
//! a container killed at maxRunTime still has its artifacts and log collected, and failures
//! around the user's command are exceptions, not failures. Every container is labelled with
//! its task, run and worker, so a restarted worker removes what an earlier one left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use bollard::container::LogOutput;
use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures::future::LocalBoxFuture;
use std::rc::Rc;

use super::artifacts::Missing;
use super::caches::{Caches, Lease};
use super::interactive::{Interactive, Linger, Shell, ShellProcess, ShellRequest, Shells};
use super::payload::{DockerArtifact, DockerPayload, PathKind};
use super::proxy::Proxy;
use super::resolution::{Abort, Artifacts, Outcome, Phase, Problem};
use super::task_run::RunContext;
use crate::model::interactive::{MAX_DATA, STDERR, STDOUT};
use crate::settings::{InteractiveSettings, ProxySettings};

/// Label names on every container the worker makes.
const LABEL_TASK: &str = "taskfold.task-id";
const LABEL_RUN: &str = "taskfold.run-id";
const LABEL_WORKER: &str = "taskfold.worker";
/// How long a pull may take before the image counts as unavailable.
const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// After the container stopped, how long its output may pause before the rest counts as lost.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// Where an interactive container has the worker's static busybox, and the directory it
/// shares with the worker.
const LINGER_BUSYBOX: &str = "/.taskfold/busybox";
const LINGER_DIR: &str = "/.taskfold/run";
/// The entrypoint of an interactive container: runs the task's command, records its status
/// for the worker, and waits until the worker releases the container (once no session needs
/// it), then exits with the command's status. The task's own argv follows as `$@`.
const LINGER_SCRIPT: &str = r#""$@"
status=$?
echo "$status" > /.taskfold/run/status.tmp && /.taskfold/busybox mv /.taskfold/run/status.tmp /.taskfold/run/status
while [ ! -e /.taskfold/run/release ]; do /.taskfold/busybox sleep 0.1; done
exit "$status""#;
/// How often the worker looks for the command's status in an interactive container.
const STATUS_POLL: Duration = Duration::from_millis(100);
/// After the release, how long the container may take to exit before it is killed.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

pub struct DockerEngine {
    api: bollard::Docker,
    caches: Caches,
    /// `[worker.interactive]`: how interactive containers linger.
    interactive: InteractiveSettings,
    /// `[worker.proxy]`: where taskcluster-proxy listens and how containers reach it.
    proxy: ProxySettings,
    /// One pull at a time: parallel pulls of one image raced in docker-worker.
    pulling: tokio::sync::Mutex<()>,
}

impl DockerEngine {
    /// Connects to the engine and checks it answers.
    pub async fn connect(
        data_dir: &Path,
        interactive: InteractiveSettings,
        proxy: ProxySettings,
    ) -> anyhow::Result<DockerEngine> {
        let api = bollard::Docker::connect_with_local_defaults()?;
        api.ping().await?;
        Ok(DockerEngine {
            api,
            caches: Caches::open(&data_dir.join("caches"))?,
            interactive,
            proxy,
            pulling: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether an engine answers at `DOCKER_HOST` (or the default socket).
    pub async fn probe() -> anyhow::Result<()> {
        let api = bollard::Docker::connect_with_local_defaults()?;
        api.ping().await?;
        Ok(())
    }

    /// Removes the containers an earlier process of this worker left behind; their runs'
    /// claims expire and the queue retries them.
    pub async fn reap(&self, worker: &str) -> anyhow::Result<usize> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_WORKER}={worker}")])]);
        let leftovers = self
            .api
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await?;
        for container in &leftovers {
            if let Some(id) = &container.id {
                tracing::info!(container = id.as_str(), "removing a container left behind");
                remove(&self.api, id).await;
            }
        }
        Ok(leftovers.len())
    }

    async fn kill(&self, container: &str) {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        // A container that already stopped cannot be killed; that is fine.
        let _ = self.api.kill_container(container, Some(options)).await;
    }

    /// The image, from the engine's store or pulled.
    async fn ensure_image(&self, image: &str, run: &RunContext) -> Result<(), String> {
        let _pulling = self.pulling.lock().await;
        if self.api.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        run.log.info(&format!("Pulling image {image}"));
        let (name, tag) = split_tag(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = async {
            let mut progress = self.api.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step.map_err(|error| error.to_string())?;
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("pulling image {image} failed: {error}")),
            Err(_) => Err(format!(
                "pulling image {image} took longer than {} s",
                PULL_TIMEOUT.as_secs()
            )),
        }
    }

    /// Runs one claimed run's payload to its end.
    pub async fn execute(&self, run: &mut RunContext) -> Outcome {
        let mut outcome = Outcome::new(Phase::Preparing);
        let payload = match DockerPayload::read(&run.definition["payload"], &run.task_scopes) {
            Ok(payload) => payload,
            Err(invalid) => return run.malformed_payload(&invalid),
        };
        outcome.retry_exit_codes = payload.on_exit_status.retry.clone();
        run.log.info(&format!("Image: {}", payload.image.name()));
        if let Err(error) = self.ensure_image(payload.image.name(), run).await {
            run.log.error(&error);
            outcome.problem = Some(Problem::ResourceUnavailable(error));
            return outcome;
        }
        let mut leases = Vec::new();
        for (name, mount) in &payload.cache {
            match self.caches.acquire(name) {
                Ok((lease, fresh)) => {
                    let state = if fresh { "new" } else { "reused" };
                    run.log
                        .info(&format!("using cache \"{name}\" -> {mount} ({state})"));
                    leases.push((lease, mount.clone()));
                }
                Err(error) => {
                    outcome.problem = Some(Problem::Internal(format!("cache `{name}`: {error}")));
                    self.release(leases, false);
                    return outcome;
                }
            }
        }
        // The run's taskcluster-proxy, serving until the run ends.
        let proxy = if payload.feature("taskclusterProxy") {
            match Proxy::start(
                &self.proxy.listen,
                &run.identity.root_url,
                run.credentials.clone(),
            ) {
                Ok(proxy) => {
                    run.log.info(&format!("taskcluster-proxy at {}", proxy.url));
                    Some(proxy)
                }
                Err(error) => {
                    let error = format!(
                        "starting taskcluster-proxy on {}: {error}",
                        self.proxy.listen
                    );
                    run.log.error(&error);
                    outcome.problem = Some(Problem::Internal(error));
                    self.release(leases, false);
                    return outcome;
                }
            }
        } else {
            None
        };
        let container = match self.create(run, &payload, &leases, proxy.as_ref()).await {
            Ok(container) => container,
            Err(error) => {
                run.log.error(&format!("creating the container: {error}"));
                outcome.problem = Some(Problem::Internal(error.to_string()));
                self.release(leases, false);
                return outcome;
            }
        };
        self.run_container(run, &payload, &container, &mut outcome)
            .await;
        if !matches!(outcome.abort, Some(Abort::Canceled | Abort::WorkerShutdown))
            && outcome.reached >= Phase::Running
        {
            outcome.reached = Phase::Collecting;
            if !self.collect(run, &payload, &container).await {
                outcome.artifacts = Artifacts::UploadFailed;
            }
        }
        // The container is stopped and everything wanted is out of it: removing it need not
        // delay the run's report (about a fifth of a trivial task's time here).
        let api = self.api.clone();
        actix_web::rt::spawn(async move { remove(&api, &container).await });
        let purge = outcome
            .exit_code
            .is_some_and(|code| code != 0 && payload.on_exit_status.purge_caches.contains(&code));
        if purge {
            run.log
                .info("purging the task's caches (onExitStatus.purgeCaches)");
        }
        self.release(leases, purge);
        outcome
    }

    fn release(&self, leases: Vec<(Lease, String)>, purge: bool) {
        for (lease, _) in leases {
            self.caches.release(lease, purge);
        }
    }

    async fn create(
        &self,
        run: &RunContext,
        payload: &DockerPayload,
        leases: &[(Lease, String)],
        proxy: Option<&Proxy>,
    ) -> Result<String, bollard::errors::Error> {
        let mut env: Vec<String> = payload
            .env
            .iter()
            .filter(|(name, _)| !run.identity.is_reserved_variable(name))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        env.extend(
            run.identity
                .reserved_variables(&run.task_id, run.run_id)
                .into_iter()
                .map(|(name, value)| format!("{name}={value}")),
        );
        if let Some(proxy) = proxy {
            env.push(format!("TASKCLUSTER_PROXY_URL={}", proxy.url));
        }
        let network_mode = proxy
            .map(|_| self.proxy.network.clone())
            .filter(|network| !network.is_empty());
        let labels = HashMap::from([
            (LABEL_TASK.to_owned(), run.task_id.clone()),
            (LABEL_RUN.to_owned(), run.run_id.to_string()),
            (LABEL_WORKER.to_owned(), run.identity.worker()),
        ]);
        let mut binds: Vec<String> = leases
            .iter()
            .map(|(lease, mount)| format!("{}:{mount}", lease.path.display()))
            .collect();
        let mut entrypoint = None;
        let mut cmd = (!payload.command.is_empty()).then(|| payload.command.clone());
        if payload.feature("interactive") {
            // The task's argv becomes the arguments of the linger script.
            let image = self.api.inspect_image(payload.image.name()).await?;
            let config = image.config.unwrap_or_default();
            let mut argv = config.entrypoint.unwrap_or_default();
            argv.extend(cmd.take().or(config.cmd).unwrap_or_default());
            entrypoint = Some(
                [LINGER_BUSYBOX, "sh", "-c", LINGER_SCRIPT, "taskfold-linger"]
                    .map(str::to_owned)
                    .to_vec(),
            );
            cmd = Some(argv);
            let busybox = std::path::absolute(&self.interactive.busybox)
                .unwrap_or_else(|_| self.interactive.busybox.clone());
            binds.push(format!("{}:{LINGER_BUSYBOX}:ro", busybox.display()));
            binds.push(format!("{}:{LINGER_DIR}", linger_dir(run).display()));
        }
        let cap_add = payload
            .feature("allowPtrace")
            .then(|| vec!["SYS_PTRACE".to_owned()]);
        let body = ContainerCreateBody {
            image: Some(payload.image.name().to_owned()),
            entrypoint,
            cmd,
            env: Some(env),
            labels: Some(labels),
            tty: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                binds: Some(binds),
                cap_add,
                extra_hosts: Some(vec!["localhost.localdomain:127.0.0.1".to_owned()]),
                network_mode,
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let name = format!("taskfold-{}-{}", run.task_id, run.run_id);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        match self
            .api
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(created) => Ok(created.id),
            // A container of this name is a leftover of an attempt that did not finish.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                remove(&self.api, &name).await;
                let created = self.api.create_container(Some(options), body).await?;
                Ok(created.id)
            }
            Err(error) => Err(error),
        }
    }

    /// Starts the container and waits for its end, its maxRunTime, or an abort; an
    /// interactive one then lingers for its sessions.
    async fn run_container(
        &self,
        run: &mut RunContext,
        payload: &DockerPayload,
        container: &str,
        outcome: &mut Outcome,
    ) {
        let interactive = payload.feature("interactive");
        if interactive && let Err(error) = std::fs::create_dir_all(linger_dir(run)) {
            outcome.problem = Some(Problem::Internal(format!(
                "making the interactive container's directory: {error}"
            )));
            return;
        }
        run.payload_starting();
        let started = Instant::now();
        if let Err(error) = self.api.start_container(container, None).await {
            // The image's command could not start (not found, not executable): the task's
            // own doing, as a shell's 127 would be.
            run.log
                .error(&format!("the container did not start: {error}"));
            outcome.reached = Phase::Running;
            outcome.exit_code = Some(-1);
            return;
        }
        outcome.reached = Phase::Running;
        let sessions = interactive.then(|| {
            let shells = Rc::new(DockerShells {
                api: self.api.clone(),
                container: container.to_owned(),
                linger_dir: linger_dir(run),
                opened: std::cell::Cell::new(0),
            });
            Interactive::publish_docker_worker_artifacts(run);
            Interactive::start(run, shells)
        });
        let logs = self.api.logs(
            container,
            Some(
                LogsOptionsBuilder::default()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let log = run.log.clone();
        // Output read so far, in chunks: the drain below waits while it still grows.
        let chunks = Rc::new(std::cell::Cell::new(0u64));
        let read = chunks.clone();
        let mut streaming = actix_web::rt::spawn(async move {
            let mut logs = std::pin::pin!(logs);
            while let Some(output) = logs.next().await {
                match output {
                    Ok(output) => log.write(&output.into_bytes()),
                    Err(error) => {
                        log.error(&format!("reading the container's output failed: {error}"));
                        break;
                    }
                }
                read.set(read.get() + 1);
            }
        });
        let max_run_time = Duration::from_secs(payload.max_run_time);
        let status_file = linger_dir(run).join("status");
        let command_ended = async {
            if interactive {
                self.command_status(container, &status_file).await
            } else {
                self.wait(container).await
            }
        };
        outcome.exit_code = run
            .bounded(
                command_ended,
                max_run_time,
                ". Force killing container.",
                outcome,
            )
            .await;
        if let Some(sessions) = sessions {
            // The container stays for the sessions a while after the command, and by
            // docker-worker's rules a while after its start and after the last session.
            let settings = &self.interactive;
            let linger = Linger {
                after_exit: Duration::from_secs(settings.linger_seconds),
                after_session: Duration::from_secs(settings.docker_after_session_seconds),
                until: Some(started + Duration::from_secs(settings.docker_min_seconds)),
            };
            let bound = (started + max_run_time).min(run.deadline());
            sessions.finish(run, outcome, linger, bound).await;
            if outcome.exit_code.is_some() && outcome.abort.is_none() {
                let _ = std::fs::write(linger_dir(run).join("release"), b"");
                if tokio::time::timeout(RELEASE_GRACE, self.wait(container))
                    .await
                    .is_err()
                {
                    self.kill(container).await;
                }
            }
        }
        if outcome.exit_code.is_none() || outcome.abort.is_some() {
            self.kill(container).await;
            if outcome.timed_out {
                outcome.exit_code = Some(self.wait(container).await);
            }
        }
        // The stream ends once Docker has handed over the container's last output, which may
        // be well after it stopped when it wrote faster than the log is read: wait as long as
        // output keeps coming.
        loop {
            let before = chunks.get();
            if tokio::time::timeout(LOG_DRAIN, &mut streaming)
                .await
                .is_ok()
            {
                break;
            }
            if chunks.get() == before {
                streaming.abort();
                run.log.error("the container's last output did not arrive");
                break;
            }
        }
        run.log
            .task_finished(outcome.exit_code, outcome.timed_out, started.elapsed());
    }

    /// The exit status of an interactive container's command: what the linger script
    /// recorded, or the container's own if it stopped first.
    async fn command_status(&self, container: &str, status_file: &Path) -> i64 {
        let recorded = async {
            loop {
                if let Ok(text) = tokio::fs::read_to_string(status_file).await
                    && let Ok(status) = text.trim().parse()
                {
                    return status;
                }
                tokio::time::sleep(STATUS_POLL).await;
            }
        };
        tokio::select! {
            status = recorded => status,
            status = self.wait(container) => status,
        }
    }

    /// The container's exit status, once it stopped.
    async fn wait(&self, container: &str) -> i64 {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waiting = std::pin::pin!(self.api.wait_container(container, Some(options)));
        match waiting.next().await {
            Some(Ok(response)) => response.status_code,
            // bollard reports a non-zero status as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(error)) => {
                tracing::warn!(container, %error, "waiting for a container");
                -1
            }
            None => -1,
        }
    }

    /// Copies every artifact out of the stopped container and publishes it; `false` if an
    /// upload failed (missing outputs are recorded as `error` artifacts, not failures).
    async fn collect(&self, run: &RunContext, payload: &DockerPayload, container: &str) -> bool {
        let mut uploaded = true;
        for (index, (name, artifact)) in payload.artifacts.iter().enumerate() {
            let spool = run.work_dir.join(format!("artifact-{index}"));
            let result = self
                .collect_one(run, container, name, artifact, &spool)
                .await;
            let _ = tokio::fs::remove_dir_all(&spool).await;
            if let Err(error) = result {
                run.log.error(&error);
                uploaded = false;
            }
        }
        uploaded
    }

    async fn collect_one(
        &self,
        run: &RunContext,
        container: &str,
        name: &str,
        artifact: &DockerArtifact,
        spool: &Path,
    ) -> Result<(), String> {
        tokio::fs::create_dir_all(spool)
            .await
            .map_err(|error| format!("spooling `{name}`: {error}"))?;
        let archive = spool.join("archive.tar");
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(&artifact.path)
            .build();
        let mut download =
            std::pin::pin!(self.api.download_from_container(container, Some(options)));
        let mut file = tokio::fs::File::create(&archive)
            .await
            .map_err(|error| format!("spooling `{name}`: {error}"))?;
        while let Some(chunk) = download.next().await {
            match chunk {
                Ok(bytes) => file
                    .write_all(&bytes)
                    .await
                    .map_err(|error| format!("spooling `{name}`: {error}"))?,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    let message = format!("{} was not found in the container", artifact.path);
                    run.log.error(&format!("artifact `{name}`: {message}"));
                    return run
                        .publisher
                        .missing(name, Missing::FileMissing, &message)
                        .await;
                }
                Err(error) => return Err(format!("copying `{name}` out: {error}")),
            }
        }
        file.flush()
            .await
            .map_err(|error| format!("spooling `{name}`: {error}"))?;
        drop(file);
        let kind = artifact.kind;
        let out = spool.join("files");
        let extracted = tokio::task::spawn_blocking(move || unpack(&archive, &out, kind))
            .await
            .map_err(|error| format!("unpacking `{name}`: {error}"))?;
        let files = match extracted {
            Ok(files) => files,
            Err(Unpacked::WrongKind(found)) => {
                let message = format!(
                    "{} is a {found}, but the artifact's type is {}",
                    artifact.path,
                    if kind == PathKind::File {
                        "file"
                    } else {
                        "directory"
                    }
                );
                run.log.error(&format!("artifact `{name}`: {message}"));
                return run
                    .publisher
                    .missing(name, Missing::InvalidResource, &message)
                    .await;
            }
            Err(Unpacked::Io(error)) => return Err(format!("unpacking `{name}`: {error}")),
        };
        let expires = artifact.expires.as_deref();
        for (relative, path) in files {
            let artifact_name = match &relative {
                None => name.to_owned(),
                Some(relative) => format!("{}/{relative}", name.trim_end_matches('/')),
            };
            run.publisher
                .file(&artifact_name, &path, None, expires)
                .await?;
        }
        Ok(())
    }
}

/// The directory an interactive container shares with the worker.
fn linger_dir(run: &RunContext) -> PathBuf {
    // Docker takes a relative bind source for a volume name.
    let dir = run.work_dir.join("interactive");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Shells in a task's container, through `docker exec`.
struct DockerShells {
    api: bollard::Docker,
    container: String,
    /// [`LINGER_DIR`] as the worker sees it.
    linger_dir: PathBuf,
    /// Shells opened so far, to name each one's pid file.
    opened: std::cell::Cell<u64>,
}

/// Runs a session's command after giving its terminal its first size (`$1` rows, `$2`
/// columns; this engine's API ignores an exec's console size, and a resize after the start can
/// come after a quick command ended) and then writing its pid where the worker finds it
/// (Docker cannot kill an exec, so ending a session kills that pid). The pid file appearing
/// also says the first size is set, so a user's resize is not undone by it.
const SESSION_SCRIPT: &str = r#"if [ -n "$1" ]; then /.taskfold/busybox stty rows "$1" cols "$2"; fi
echo $$ > "$0"
shift 2
exec "$@""#;

/// How long a resize waits for a session's first size to be set before it is applied anyway.
const FIRST_SIZE_WAIT: Duration = Duration::from_secs(2);

impl Shells for DockerShells {
    fn open(&self, request: ShellRequest) -> LocalBoxFuture<'static, Result<Shell, String>> {
        let (api, container) = (self.api.clone(), self.container.clone());
        let number = self.opened.get() + 1;
        self.opened.set(number);
        let pid_name = format!("session-{number}.pid");
        let pid_file = format!("{LINGER_DIR}/{pid_name}");
        let first_size_set = self.linger_dir.join(pid_name);
        Box::pin(async move {
            let (rows, cols) = if request.tty {
                (request.rows.to_string(), request.cols.to_string())
            } else {
                (String::new(), String::new())
            };
            let mut command = [
                LINGER_BUSYBOX,
                "sh",
                "-c",
                SESSION_SCRIPT,
                &pid_file,
                &rows,
                &cols,
            ]
            .map(str::to_owned)
            .to_vec();
            command.extend(request.command.iter().cloned());
            let config = ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(request.tty),
                cmd: Some(command),
                env: Some(vec!["TERM=xterm-256color".to_owned()]),
                ..ExecConfig::default()
            };
            let exec = api
                .create_exec(&container, config)
                .await
                .map_err(|error| format!("docker exec {:?}: {error}", request.command))?
                .id;
            // The start request's `tty` decides whether Docker multiplexes the stream; it
            // must be the exec's.
            let options = StartExecOptions {
                detach: false,
                tty: request.tty,
                output_capacity: Some(MAX_DATA),
            };
            let StartExecResults::Attached { output, input } = api
                .start_exec(&exec, Some(options))
                .await
                .map_err(|error| format!("docker exec {:?}: {error}", request.command))?
            else {
                return Err("docker exec started detached".to_owned());
            };
            let process = DockerExec {
                api: api.clone(),
                container,
                exec,
                pid_file,
                first_size_set: std::cell::RefCell::new(Some(first_size_set)),
                tty: request.tty,
            };
            let output = output
                .filter_map(|chunk| async move {
                    match chunk {
                        Ok(LogOutput::StdErr { message }) => Some(Ok((STDERR, message.to_vec()))),
                        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                            Some(Ok((STDOUT, message.to_vec())))
                        }
                        Ok(LogOutput::StdIn { .. }) => None,
                        Err(error) => Some(Err(std::io::Error::other(error))),
                    }
                })
                .boxed_local();
            Ok(Shell {
                output,
                input: input as std::pin::Pin<Box<dyn tokio::io::AsyncWrite>>,
                process: Box::new(process),
            })
        })
    }
}

struct DockerExec {
    api: bollard::Docker,
    container: String,
    exec: String,
    /// Where the session's command wrote its pid, in the container.
    pid_file: String,
    /// That file as the worker sees it, until it has been seen: it says the first size is set.
    first_size_set: std::cell::RefCell<Option<PathBuf>>,
    tty: bool,
}

impl DockerExec {
    /// Waits (a moment, at most [`FIRST_SIZE_WAIT`]) until the session script has set the
    /// terminal's first size, which would otherwise undo a resize that came before it, and
    /// written the pid a kill needs.
    async fn first_size_set(&self) {
        let Some(path) = self.first_size_set.borrow_mut().take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + FIRST_SIZE_WAIT;
        while !tokio::fs::try_exists(&path).await.unwrap_or(true)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl ShellProcess for DockerExec {
    fn resize(&self, rows: u16, cols: u16) -> LocalBoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if !self.tty {
                return Err("cannot resize, not a tty instance".to_owned());
            }
            self.first_size_set().await;
            let size = ResizeExecOptions {
                height: rows,
                width: cols,
            };
            self.api
                .resize_exec(&self.exec, size)
                .await
                .map_err(|error| format!("resizing the terminal: {error}"))
        })
    }

    fn exit_status(&self) -> LocalBoxFuture<'_, i32> {
        Box::pin(async move {
            // The stream can end a moment before Docker records the exit.
            for _ in 0..50 {
                match self.api.inspect_exec(&self.exec).await {
                    Ok(inspected) if inspected.running != Some(true) => {
                        if let Some(code) = inspected.exit_code {
                            return i32::try_from(code).unwrap_or(-1);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return -1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            -1
        })
    }

    fn kill(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            // The command's end hangs up its terminal, and with it what runs in the
            // foreground. Its pid is written once its first size is set.
            self.first_size_set().await;
            let script = format!("kill -KILL $(cat {})", self.pid_file);
            let config = ExecConfig {
                cmd: Some(
                    [LINGER_BUSYBOX, "sh", "-c", &script]
                        .map(str::to_owned)
                        .to_vec(),
                ),
                ..ExecConfig::default()
            };
            let started = match self.api.create_exec(&self.container, config).await {
                Ok(exec) => {
                    let detached = StartExecOptions {
                        detach: true,
                        tty: false,
                        output_capacity: None,
                    };
                    self.api
                        .start_exec(&exec.id, Some(detached))
                        .await
                        .map(drop)
                }
                Err(error) => Err(error),
            };
            if let Err(error) = started {
                tracing::warn!(%error, "killing a session's command");
            }
        })
    }
}

async fn remove(api: &bollard::Docker, container: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    if let Err(error) = api.remove_container(container, Some(options)).await {
        tracing::warn!(container, %error, "removing a container");
    }
}

enum Unpacked {
    /// The path is not what the artifact said (`file` vs `directory`).
    WrongKind(&'static str),
    Io(std::io::Error),
}

/// Unpacks the archive Docker made of `kind` at a path into files under `out`: for a file, the
/// file (name `None`); for a directory, every regular file under it with its path below the
/// directory (the archive's first component is the directory's own name).
fn unpack(
    archive: &Path,
    out: &Path,
    kind: PathKind,
) -> Result<Vec<(Option<String>, PathBuf)>, Unpacked> {
    let io = Unpacked::Io;
    std::fs::create_dir_all(out).map_err(io)?;
    let mut archive = tar::Archive::new(std::fs::File::open(archive).map_err(io)?);
    let mut files = Vec::new();
    for (index, entry) in archive.entries().map_err(io)?.enumerate() {
        let mut entry = entry.map_err(io)?;
        let entry_type = entry.header().entry_type();
        if index == 0 {
            let found = if entry_type.is_dir() {
                Some("directory")
            } else if entry_type.is_file() {
                None
            } else {
                Some("special file")
            };
            match (kind, found) {
                (PathKind::File, None) | (PathKind::Directory, Some("directory")) => {}
                (_, found) => return Err(Unpacked::WrongKind(found.unwrap_or("file"))),
            }
        }
        if !entry_type.is_file() {
            continue;
        }
        let relative = {
            let path = entry.path().map_err(io)?;
            let mut components = path.components();
            components.next();
            components.as_path().to_string_lossy().into_owned()
        };
        let target = out.join(files.len().to_string());
        entry.unpack(&target).map_err(io)?;
        let name = match kind {
            PathKind::File => None,
            PathKind::Directory => Some(relative),
        };
        files.push((name, target));
        if kind == PathKind::File {
            break;
        }
    }
    Ok(files)
}

/// `name:tag` → (`name`, `tag`), `latest` when none; a registry port is not a tag.
fn split_tag(image: &str) -> (&str, &str) {
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => (
            &image[..name_start + colon],
            &image[name_start + colon + 1..],
        ),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_tag("registry:5000/team/img:v2"),
            ("registry:5000/team/img", "v2")
        );
        assert_eq!(
            split_tag("registry:5000/team/img"),
            ("registry:5000/team/img", "latest")
        );
    }

    #[test]
    fn unpacking_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let archive_path = dir.path().join("a.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&archive_path).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o755);
        builder
            .append_data(&mut header, "out/", std::io::empty())
            .unwrap();
        for (path, content) in [("out/a.txt", "A"), ("out/sub/b.txt", "BB")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
        builder.finish().unwrap();
        drop(builder);
        let files = unpack(&archive_path, &dir.path().join("x"), PathKind::Directory)
            .ok()
            .unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|(name, _)| name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a.txt", "sub/b.txt"]);
        assert_eq!(std::fs::read_to_string(&files[1].1).unwrap(), "BB");
        assert!(matches!(
            unpack(&archive_path, &dir.path().join("y"), PathKind::File),
            Err(Unpacked::WrongKind("directory"))
        ));
    }
}
