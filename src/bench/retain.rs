//! `taskfold bench retain`: what a queue's history costs the server that keeps it. Fills a
//! data directory with tasks through the engine (pending, or claimed and completed), then
//! restarts on it as an operator would, with a separate `taskfold serve` process, and reports
//! that process's memory, the disk the history takes, the time until the queue answers, point
//! reads of filled tasks, and lifecycle throughput beside a server on an empty directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use awc::http::Method;
use serde::Serialize;
use serde::de::IgnoredAny;

use crate::api::access::{ROOT_ACCESS_TOKEN_VARIABLE, ROOT_CLIENT_ID};
use crate::auth::Credentials;
use crate::client::lifecycle::{self, CallLatencies};
use crate::client::{Error, QueueClient};
use crate::engine::load::{self, Fill, TaskTemplate};
use crate::model::{Slugid, Timestamp};
use crate::settings::Settings;

pub struct Options {
    pub data_dir: PathBuf,
    /// Configuration file of the fill and of both servers.
    pub config: Option<PathBuf>,
    pub tasks: u64,
    /// Fill operations in flight at once.
    pub concurrency: usize,
    pub template: TaskTemplate,
    pub group_size: u64,
    /// Claim and complete every filled task.
    pub resolve: bool,
    /// Reads of each kind after the restart.
    pub reads: usize,
    pub lifecycles: u64,
    pub lifecycle_concurrency: usize,
    /// The `taskfold` binary the servers run.
    pub server_binary: PathBuf,
    /// Report each phase and the fill's progress on standard error.
    pub progress: bool,
}

/// Every figure of a run; the JSON of `--json` is this, serialized.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tasks_filled: u64,
    /// Tasks in the engine's state after the fill (more when the directory held some).
    pub tasks_in_store: u64,
    /// Of those, the ones pending in the filled tasks' queue.
    pub tasks_pending: u64,
    pub resolved: bool,
    pub group_size: u64,
    /// One filled task's createTask body.
    pub definition_bytes: usize,
    pub fill_seconds: f64,
    pub fill_tasks_per_second: f64,
    /// This process's peak while it filled (the engine ran in it).
    pub fill_peak_rss_bytes: u64,
    pub disk: Vec<DiskUsage>,
    pub disk_total_bytes: u64,
    /// From starting `taskfold serve` on the directory to its first answer about a task.
    pub ready_seconds: f64,
    /// The restarted server's resident memory when it first answered, and its peak so far
    /// (the replay's).
    pub ready_rss_bytes: u64,
    pub ready_peak_rss_bytes: u64,
    pub read_task: Latencies,
    pub read_status: Latencies,
    pub lifecycles_with_history: LifecycleRun,
    pub lifecycles_empty: LifecycleRun,
}

/// Bytes under one top-level entry of the data directory (`log`, `snapshots`, a store, …).
#[derive(Debug, Serialize)]
pub struct DiskUsage {
    pub name: String,
    pub bytes: u64,
    pub bytes_per_task: f64,
}

#[derive(Debug, Serialize)]
pub struct Latencies {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl From<&CallLatencies> for Latencies {
    fn from(latencies: &CallLatencies) -> Latencies {
        Latencies {
            count: latencies.samples.len(),
            p50_ms: latencies.percentile(0.5).as_secs_f64() * 1e3,
            p99_ms: latencies.percentile(0.99).as_secs_f64() * 1e3,
        }
    }
}

/// The lifecycle load on one server.
#[derive(Debug, Serialize)]
pub struct LifecycleRun {
    pub lifecycles: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub empty_claims: u64,
    pub create_task_p50_ms: f64,
    pub claim_work_p50_ms: f64,
    pub report_completed_p50_ms: f64,
    /// The server's resident memory after the load, and its peak since it started.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// How often the fill reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often a starting server is asked whether it answers.
const READY_POLL: Duration = Duration::from_millis(10);
/// A server that takes longer than this to answer is taken for hung.
const READY_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(options: Options) -> anyhow::Result<Report> {
    let settings = Settings::load(options.config.as_deref())?;
    let data_dir = &options.data_dir;

    let fill = Fill {
        tasks: options.tasks,
        concurrency: options.concurrency,
        template: &options.template,
        group_size: options.group_size,
        resolve: options.resolve,
        sample: options.reads.max(1),
    };
    let filling = Instant::now();
    let mut last_progress = Instant::now();
    let progress = |done: u64| {
        if options.progress && (last_progress.elapsed() >= PROGRESS_EVERY || done == fill.tasks) {
            last_progress = Instant::now();
            eprintln!(
                "filled {done}/{} tasks ({:.0} tasks/s)",
                fill.tasks,
                done as f64 / filling.elapsed().as_secs_f64()
            );
        }
    };
    // The engine lives in a System of its own: when the fill ends, its actors and the log are
    // gone, as in a process that stops.
    let task_id = Slugid::nice();
    let sample_definition = options
        .template
        .definition(task_id, task_id, Timestamp::now())?;
    let definition_bytes = options
        .template
        .render(task_id, task_id, Timestamp::now())
        .len();
    let (filled, tasks_in_store, tasks_pending) = actix_web::rt::System::new().block_on(async {
        let engine = load::start(&settings, data_dir)
            .await
            .with_context(|| format!("starting the engine on {}", data_dir.display()))?;
        let filled = load::fill(&engine, &fill, progress)
            .await
            .context("filling the data directory")?;
        let pending = engine.pending_count(&sample_definition.task_queue_id).await;
        anyhow::Ok((filled, engine.task_count().await, pending))
    })?;
    let fill_seconds = filling.elapsed().as_secs_f64();
    let fill_peak_rss_bytes = Memory::of(std::process::id())?.peak_bytes;
    let per_task = |bytes: u64| bytes as f64 / tasks_in_store.max(1) as f64;
    let disk: Vec<DiskUsage> = disk_usage(data_dir)?
        .into_iter()
        .map(|(name, bytes)| DiskUsage {
            name,
            bytes,
            bytes_per_task: per_task(bytes),
        })
        .collect();
    let disk_total_bytes = disk.iter().map(|usage| usage.bytes).sum();

    if options.progress {
        eprintln!("restarting: taskfold serve on {}", data_dir.display());
    }
    let lifecycle_options = lifecycle::Options {
        tasks: options.lifecycles,
        concurrency: options.lifecycle_concurrency,
        rate: None,
        wakeup_rounds: 0,
        // A progress bar only where it can redraw itself.
        progress: options.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let history = actix_web::rt::System::new().block_on(async {
        let mut server = Server::start(&options, data_dir)?;
        let client = server.client(options.lifecycle_concurrency)?;
        let probe = filled.sample.first().copied();
        let ready = server.wait_ready(&client, probe).await?;
        let at_ready = server.memory()?;
        if options.progress {
            eprintln!("ready in {:.2} s; reading tasks", ready.as_secs_f64());
        }
        let (read_task, read_status) = point_reads(&client, &filled.sample, options.reads).await?;
        if options.progress {
            eprintln!("running lifecycles with the history");
        }
        let load = lifecycle::run(client, lifecycle_options.clone()).await?;
        let lifecycles = LifecycleRun::new(&load, server.memory()?);
        server.stop();
        anyhow::Ok((ready, at_ready, read_task, read_status, lifecycles))
    })?;
    let (ready, at_ready, read_task, read_status, lifecycles_with_history) = history;

    // Beside the data directory, so that both servers write to the same disk.
    let empty = EmptyDirectory::beside(data_dir)?;
    if options.progress {
        eprintln!("running lifecycles on an empty directory");
    }
    let lifecycles_empty = actix_web::rt::System::new().block_on(async {
        let mut server = Server::start(&options, &empty.0)?;
        let client = server.client(options.lifecycle_concurrency)?;
        server.wait_ready(&client, None).await?;
        let load = lifecycle::run(client, lifecycle_options).await?;
        let lifecycles = LifecycleRun::new(&load, server.memory()?);
        server.stop();
        anyhow::Ok(lifecycles)
    })?;

    Ok(Report {
        tasks_filled: filled.tasks,
        tasks_in_store,
        tasks_pending,
        resolved: options.resolve,
        group_size: options.group_size.max(1),
        definition_bytes,
        fill_seconds,
        fill_tasks_per_second: filled.tasks as f64 / fill_seconds,
        fill_peak_rss_bytes,
        disk,
        disk_total_bytes,
        ready_seconds: ready.as_secs_f64(),
        ready_rss_bytes: at_ready.bytes,
        ready_peak_rss_bytes: at_ready.peak_bytes,
        read_task: Latencies::from(&read_task),
        read_status: Latencies::from(&read_status),
        lifecycles_with_history,
        lifecycles_empty,
    })
}

impl LifecycleRun {
    fn new(report: &lifecycle::Report, memory: Memory) -> LifecycleRun {
        let seconds = report.elapsed.as_secs_f64();
        let p50 = |call: usize| report.calls[call].percentile(0.5).as_secs_f64() * 1e3;
        LifecycleRun {
            lifecycles: report.lifecycles,
            seconds,
            per_second: report.lifecycles as f64 / seconds,
            empty_claims: report.empty_claims,
            create_task_p50_ms: p50(0),
            claim_work_p50_ms: p50(1),
            report_completed_p50_ms: p50(2),
            rss_bytes: memory.bytes,
            peak_rss_bytes: memory.peak_bytes,
        }
    }
}

/// `reads` rounds of `GET task/<id>`, then `GET task/<id>/status`, one request at a time, each
/// round on the next task of `sample` (from its start again when it runs out).
async fn point_reads(
    client: &QueueClient,
    sample: &[Slugid],
    reads: usize,
) -> Result<(CallLatencies, CallLatencies), Error> {
    let mut task = CallLatencies {
        method: "task",
        samples: Vec::with_capacity(reads),
    };
    let mut status = CallLatencies {
        method: "status",
        samples: Vec::with_capacity(reads),
    };
    for task_id in sample.iter().cycle().take(reads) {
        for (latencies, path) in [
            (&mut task, format!("/task/{task_id}")),
            (&mut status, format!("/task/{task_id}/status")),
        ] {
            let timed = Instant::now();
            client
                .call_as::<IgnoredAny>(Method::GET, &path, None)
                .await?;
            latencies.samples.push(timed.elapsed());
        }
    }
    Ok((task, status))
}

/// A `taskfold serve` child process on a data directory; killed if dropped while it runs.
struct Server {
    child: Child,
    root_url: String,
    access_token: String,
    started: Instant,
}

impl Server {
    fn start(options: &Options, data_dir: &Path) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let access_token = Slugid::nice().to_string();
        let mut command = std::process::Command::new(&options.server_binary);
        command
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(data_dir)
            .env(ROOT_ACCESS_TOKEN_VARIABLE, &access_token)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(config) = &options.config {
            command.arg("--config").arg(config);
        }
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {} serve", options.server_binary.display()))?;
        Ok(Server {
            child,
            root_url: format!("http://{listen}"),
            access_token,
            started,
        })
    }

    fn client(&self, connections: usize) -> Result<QueueClient, Error> {
        let credentials = Credentials {
            client_id: ROOT_CLIENT_ID.to_owned(),
            access_token: self.access_token.clone(),
            certificate: None,
        };
        QueueClient::new(&self.root_url, Some(credentials), connections)
    }

    /// Waits until the server answers `GET task/<probe>` (a task it must know), or `ping`
    /// without a probe; the time since it was started.
    async fn wait_ready(
        &mut self,
        client: &QueueClient,
        probe: Option<Slugid>,
    ) -> anyhow::Result<Duration> {
        let path = match probe {
            Some(task_id) => format!("/task/{task_id}"),
            None => "/ping".to_owned(),
        };
        loop {
            match client.call_as::<IgnoredAny>(Method::GET, &path, None).await {
                Ok(_) => return Ok(self.started.elapsed()),
                Err(error) if error.status().is_some() => {
                    anyhow::bail!("the restarted server answered GET {path} with {error}")
                }
                // Not listening yet.
                Err(_) => {}
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the server exited before it answered: {status}");
            }
            if self.started.elapsed() > READY_TIMEOUT {
                anyhow::bail!("the server did not answer within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.child.id())
    }

    /// Stops the server as an operator does, with SIGTERM, and waits for it to exit.
    fn stop(mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let stopping = Instant::now();
        while stopping.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drop kills it.
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's resident memory, now and at its peak, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug)]
struct Memory {
    bytes: u64,
    peak_bytes: u64,
}

impl Memory {
    fn of(pid: u32) -> anyhow::Result<Memory> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kib| kib * 1024)
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok(Memory {
            bytes: field("VmRSS:")?,
            peak_bytes: field("VmHWM:")?,
        })
    }
}

/// Bytes of the files under each top-level entry of `data_dir`, by name.
fn disk_usage(data_dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    fn bytes_under(path: &Path) -> std::io::Result<u64> {
        let metadata = std::fs::symlink_metadata(path)?;
        if !metadata.is_dir() {
            return Ok(metadata.len());
        }
        let mut total = 0;
        for entry in std::fs::read_dir(path)? {
            total += bytes_under(&entry?.path())?;
        }
        Ok(total)
    }
    let mut usage = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        usage.push((
            entry.file_name().to_string_lossy().into_owned(),
            bytes_under(&entry.path())?,
        ));
    }
    usage.sort();
    Ok(usage)
}

/// A directory beside another, on the same disk, removed when dropped.
struct EmptyDirectory(PathBuf);

impl EmptyDirectory {
    fn beside(data_dir: &Path) -> anyhow::Result<EmptyDirectory> {
        let name = data_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = match data_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let path = parent.join(format!(".{name}-empty-{}", Slugid::nice()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(EmptyDirectory(path))
    }
}

impl Drop for EmptyDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes in binary units, three significant figures or so.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<34} {value}")
        };
        writeln!(
            f,
            "{} tasks in the store, {} pending ({} filled{}, {} per group, {} B definitions)",
            self.tasks_in_store,
            self.tasks_pending,
            self.tasks_filled,
            if self.resolved { " and resolved" } else { "" },
            self.group_size,
            self.definition_bytes
        )?;
        row(
            f,
            "fill",
            format!(
                "{:.1} s, {:.0} tasks/s",
                self.fill_seconds, self.fill_tasks_per_second
            ),
        )?;
        row(f, "fill process peak RSS", size(self.fill_peak_rss_bytes))?;
        for usage in &self.disk {
            row(
                f,
                &format!("disk {}/", usage.name),
                format!(
                    "{:>10}  {:>8.0} B/task",
                    size(usage.bytes),
                    usage.bytes_per_task
                ),
            )?;
        }
        row(
            f,
            "disk total",
            format!(
                "{:>10}  {:>8.0} B/task",
                size(self.disk_total_bytes),
                self.disk_total_bytes as f64 / self.tasks_in_store.max(1) as f64
            ),
        )?;
        row(f, "time to ready", format!("{:.2} s", self.ready_seconds))?;
        row(
            f,
            "server RSS at ready (peak)",
            format!(
                "{} ({})",
                size(self.ready_rss_bytes),
                size(self.ready_peak_rss_bytes)
            ),
        )?;
        for (name, latencies) in [
            ("GET task/<id>", &self.read_task),
            ("GET task/<id>/status", &self.read_status),
        ] {
            row(
                f,
                name,
                format!(
                    "p50 {:.3} ms  p99 {:.3} ms  ({} reads)",
                    latencies.p50_ms, latencies.p99_ms, latencies.count
                ),
            )?;
        }
        for (name, run) in [
            ("lifecycles with the history", &self.lifecycles_with_history),
            ("lifecycles on an empty directory", &self.lifecycles_empty),
        ] {
            row(
                f,
                name,
                format!(
                    "{:.0}/s ({} in {:.1} s, {} empty claims), server RSS after {} (peak {})",
                    run.per_second,
                    run.lifecycles,
                    run.seconds,
                    run.empty_claims,
                    size(run.rss_bytes),
                    size(run.peak_rss_bytes)
                ),
            )?;
        }
        row(
            f,
            "throughput with the history",
            format!(
                "{:+.1}% against the empty directory",
                100.0
                    * (self.lifecycles_with_history.per_second / self.lifecycles_empty.per_second
                        - 1.0)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.50 KiB");
        assert_eq!(size(3 << 30), "3.00 GiB");
    }

    #[test]
    fn disk_usage_sums_each_top_level_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("log/p0")).unwrap();
        std::fs::write(dir.path().join("log/p0/a"), [0; 100]).unwrap();
        std::fs::write(dir.path().join("log/b"), [0; 20]).unwrap();
        std::fs::create_dir(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("lock"), [0; 3]).unwrap();
        assert_eq!(
            disk_usage(dir.path()).unwrap(),
            vec![
                ("lock".to_owned(), 3),
                ("log".to_owned(), 120),
                ("store".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let memory = Memory::of(std::process::id()).unwrap();
        assert!(memory.bytes > 0 && memory.peak_bytes >= memory.bytes);
    }
}
