//! The `taskfold` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use taskfold::api::{access, server};
use taskfold::engine::Engine;
use taskfold::log;
use taskfold::model::exchange::Exchange;
use taskfold::projections::kafka::ExchangeTopics;
use taskfold::settings::Settings;

/// Events are allocated on runtime threads and freed on the log writer thread. The system
/// allocator serializes such cross-thread frees on its arena locks; mimalloc does not (about
/// +20 % durable appends/s with 1024 appenders, measured with `taskfold bench log`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "taskfold",
    version,
    about = "A task-execution platform on an event log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Queue API under `<rootUrl>/api/queue/v1/`.
    Serve(Serve),
    /// Claim tasks from a task queue and run them (credentials from `TASKCLUSTER_CLIENT_ID` /
    /// `TASKCLUSTER_ACCESS_TOKEN` [/ `TASKCLUSTER_CERTIFICATE`]).
    Worker(WorkerArgs),
    /// The whole farm on this machine: the queue on the embedded log in `./taskfold-data` and a
    /// Docker worker, with credentials made once and printed.
    Up(Up),
    /// Run, follow and inspect tasks (the deployment from `TASKCLUSTER_ROOT_URL` and the
    /// credentials from `TASKCLUSTER_CLIENT_ID` / `TASKCLUSTER_ACCESS_TOKEN`, else the local
    /// farm of `taskfold up` in `./taskfold-data`).
    #[command(subcommand)]
    Task(TaskCommand),
    /// Print the queue's exchange messages (task-defined, task-completed, …) as JSON lines,
    /// from the listener API or, with `--kafka`, from the Kafka topics.
    Listen(ListenArgs),
    /// A terminal into a running task that enabled `features.interactive` (the deployment and
    /// credentials as for `taskfold task`); exits with the remote command's status.
    Shell(ShellArgs),
    /// See and answer the requests of INPUT tasks (the deployment and credentials as for
    /// `taskfold task`).
    #[command(subcommand)]
    Input(InputCommand),
    /// Look into the event log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
struct ShellArgs {
    task_id: String,
    /// The run (default: the latest).
    #[arg(long = "run")]
    run_id: Option<u64>,
    /// The command to run instead of `sh`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct Serve {
    /// Address to listen on, `HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where the embedded log and blobs live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Configuration file, layered over the built-in defaults (`config/default.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The deployment's root URL (default `http://<listen>`).
    #[arg(long)]
    root_url: Option<String>,
    /// With the Kafka log: join the cluster of nodes sharing its topic under this id
    /// (`[cluster] node_id`).
    #[arg(long)]
    node_id: Option<String>,
    /// With `--node-id`: the URL the other nodes reach this one at (`[cluster] advertise`).
    #[arg(long)]
    advertise: Option<String>,
}

#[derive(Args)]
struct ListenArgs {
    /// The deployment's root URL (default: `TASKCLUSTER_ROOT_URL`).
    #[arg(long)]
    root_url: Option<String>,
    /// An exchange, `task-completed` or `exchange/taskcluster-queue/v1/task-completed`;
    /// repeat it, each with its `--routing-key`.
    #[arg(long = "exchange", required = true)]
    exchanges: Vec<String>,
    /// The routing key pattern of the `--exchange` in the same place (`*` one word, `#` any
    /// number), matched against the primary routing key and the `route.<route>` CC keys.
    #[arg(long = "routing-key", default_value = "#")]
    routing_keys: Vec<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Resume after this cursor (from an earlier listener's messages).
    #[arg(long)]
    cursor: Option<String>,
    /// Read the exchange topics on these Kafka brokers instead of the listener API.
    #[arg(long)]
    kafka: Option<String>,
    /// With `--kafka`: the prefix of the exchange topics.
    #[arg(long, default_value = taskfold::model::exchange::DEFAULT_TOPIC_PREFIX)]
    topic_prefix: String,
    /// With `--kafka`: read the topics from their start instead of from now.
    #[arg(long)]
    from_beginning: bool,
}

#[derive(Args)]
struct Up {
    /// Address to listen on, `HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where the log, blobs, caches and credentials live.
    #[arg(long, default_value = taskfold::local::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Configuration file, layered over the built-in defaults (`config/default.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The task queue the local worker claims from.
    #[arg(long, default_value = taskfold::local::DEFAULT_TASK_QUEUE)]
    task_queue_id: String,
    /// Tasks the local worker runs at once.
    #[arg(long, default_value_t = 4)]
    capacity: usize,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Create a Docker task, follow its log, and exit with its result (0 completed, 1 failed,
    /// 3 exception).
    Run {
        #[arg(long)]
        image: String,
        /// The task queue, `<provisionerId>/<workerType>`.
        #[arg(long = "queue", default_value = taskfold::local::DEFAULT_TASK_QUEUE)]
        task_queue_id: String,
        /// Seconds the command may run.
        #[arg(long, default_value_t = 3600)]
        max_run_time: u64,
        /// Let `taskfold shell` (and the browser page) open sessions into the task.
        #[arg(long)]
        interactive: bool,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The task's status, as JSON.
    Status { task_id: String },
    /// Print a run's log (default: every run, following the one that runs).
    Log {
        task_id: String,
        #[arg(long)]
        run: Option<u64>,
    },
    /// List a run's artifacts (default: the latest run).
    Artifacts {
        task_id: String,
        #[arg(long)]
        run: Option<u64>,
    },
    /// The task's history: every event, in order, one per line, with who caused it.
    History { task_id: String },
}

#[derive(Subcommand)]
enum InputCommand {
    /// The requests waiting in every task queue (needs `queue:list-task-queues` too), in one
    /// task queue, or every request of a task, one per line: task, run, state, expiry,
    /// question.
    List {
        /// The task queue, `<provisionerId>/<workerType>` (needs
        /// `queue:claimed-list:<taskQueueId>`).
        #[arg(long = "queue", conflicts_with = "task_id")]
        task_queue_id: Option<String>,
        /// A task: the requests of each of its runs, whatever their state.
        #[arg(long = "task")]
        task_id: Option<String>,
    },
    /// Answer a request (needs `queue:answer-input:<taskQueueId>`); prints it as answered.
    Answer {
        task_id: String,
        /// The run (default: the latest).
        #[arg(long = "run")]
        run_id: Option<u64>,
        /// The response: JSON, or else text.
        response: String,
    },
}

#[derive(Args)]
struct WorkerArgs {
    /// The deployment's root URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    root_url: String,
    /// The task queue to claim from, `<provisionerId>/<workerType>`.
    #[arg(long)]
    task_queue_id: String,
    #[arg(long)]
    worker_group: String,
    #[arg(long)]
    worker_id: String,
    /// Runs at once.
    #[arg(long, default_value_t = 1)]
    capacity: usize,
    /// What runs the payloads: `docker` (the engine at `DOCKER_HOST`, or the default socket),
    /// `ssh` (the `[[worker.ssh.targets]]` of the configuration), or one call per task: `rest`,
    /// `smtp`, `redis`. Repeat it or list several (`--engine docker,rest`) to serve several: a
    /// payload names its engine in `kind`, and one without runs with the first.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "docker")]
    engine: Vec<taskfold::worker::EngineKind>,
    /// Where runs keep their files and caches live.
    #[arg(long, default_value = "taskfold-worker")]
    data_dir: PathBuf,
    /// Configuration file, layered over the built-in defaults (`config/default.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve the worker's Prometheus metrics at `http://<HOST:PORT>/metrics`.
    #[arg(long)]
    metrics_listen: Option<String>,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Partitions, segments, record counts and offsets of an embedded log, and the offset
    /// each partition store reflects.
    Inspect {
        #[arg(long)]
        data_dir: PathBuf,
        /// Decode every record and check it belongs to its partition (checksums are always
        /// checked); exit with status 1 if anything is wrong.
        #[arg(long)]
        verify: bool,
    },
    /// Make a damaged embedded log open again: in each partition, keep every record before
    /// the first damage and copy everything after it to `<data-dir>/log/set-aside/` before
    /// cutting it (a partition store past the new end is rebuilt by the next start). Run it
    /// only with the server stopped,
    /// after `serve` refused to start on damage; it prints what it set aside.
    Repair {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable appends from concurrent appenders, each waiting for its append to be durable.
    Log(BenchLog),
    /// Full task lifecycles over HTTP (createTask → claimWork → reportCompleted), Hawk-signed
    /// with `TASKCLUSTER_CLIENT_ID` / `TASKCLUSTER_ACCESS_TOKEN`.
    Lifecycle(BenchLifecycle),
    /// Whole tasks through a queue and its workers: scheduled → resolved times and
    /// throughput, beside a baseline command run as many times.
    Tasks(BenchTasks),
    /// Fill a log with pending tasks through the engine, then time a restart on it (the
    /// partition stores, then the log after them).
    Restart(BenchRestart),
    /// Fill a data directory with tasks through the engine (pending, or with `--resolved`
    /// claimed and completed), restart a `taskfold serve` on it and report its memory, the disk
    /// per task, the time to ready, point reads, and lifecycles/s beside an empty directory.
    Retain(BenchRetain),
    /// Interactive sessions through the queue's relay and a worker: keystroke echo round
    /// trips and bulk output, in an interactive Docker task the bench creates.
    Shell(BenchShell),
    /// The services beside the queue over HTTP: findTask and findArtifactFromTask on a filled
    /// index, a Hawk-signed call as API-made clients beside a static one, and createTask
    /// through taskcluster-proxy beside a direct one (credentials holding `*` from
    /// `TASKCLUSTER_CLIENT_ID` / `TASKCLUSTER_ACCESS_TOKEN`).
    Services(BenchServices),
}

#[derive(Args)]
struct BenchServices {
    /// The deployment's root URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    root_url: String,
    /// Index entries to insert before timing the reads.
    #[arg(long, default_value_t = 1_000_000)]
    index_entries: u64,
    /// Clients to make through the Auth API.
    #[arg(long, default_value_t = 10_000)]
    clients: u64,
    /// Roles to make through the Auth API.
    #[arg(long, default_value_t = 1_000)]
    roles: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds each timed phase runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// createTask calls each way through the proxy and directly.
    #[arg(long, default_value_t = 200)]
    proxy_tasks: usize,
    /// The server's pid, to report its resident memory after each phase.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct BenchShell {
    /// The deployment's root URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    root_url: String,
    /// The task queue a Docker worker serves.
    #[arg(long)]
    task_queue_id: String,
    /// The image of the task (it needs `sh`, `stty`, `cat` and `head`).
    #[arg(long)]
    image: String,
    /// Keystrokes whose echo is timed.
    #[arg(long, default_value_t = 1000)]
    keystrokes: usize,
    /// MiB of output streamed through a session.
    #[arg(long, default_value_t = 100)]
    bulk_mib: u64,
}

#[derive(Args)]
struct BenchTasks {
    /// The deployment's root URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    root_url: String,
    /// The task queue a worker serves.
    #[arg(long)]
    task_queue_id: String,
    /// The payload of every task, as JSON.
    #[arg(long)]
    payload: String,
    #[arg(long, default_value_t = 20)]
    tasks: u64,
    /// Tasks in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// A shell command run `--tasks` times after the tasks, for comparison (e.g.
    /// `docker run --rm IMAGE true`).
    #[arg(long)]
    baseline: Option<String>,
}

#[derive(Args)]
struct BenchRestart {
    /// Where the embedded log lives; tasks already in it count too.
    #[arg(long)]
    data_dir: PathBuf,
    /// Configuration file, layered over the built-in defaults (`config/default.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tasks to create before the restart.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u64,
    /// Creations in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

#[derive(Args)]
struct BenchRetain {
    /// Where the embedded log and the state live; tasks already in it count too.
    #[arg(long)]
    data_dir: PathBuf,
    /// Configuration file of the fill and the servers, layered over the built-in defaults
    /// (`config/default.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tasks to create before the restart.
    #[arg(long)]
    tasks: u64,
    /// The createTask body of every task, as JSON; `taskGroupId`, `created`, `deadline` and
    /// `expires` are set per task, and strings holding `{{taskId}}`, `{{taskGroupId}}`,
    /// `{{created}}`, `{{deadline}}` or `{{expires}}` get the task's value there (default: a
    /// small definition of about 400 bytes).
    #[arg(long)]
    task_file: Option<PathBuf>,
    /// Claim every task through claimWork and report it completed, instead of leaving it
    /// pending.
    #[arg(long)]
    resolved: bool,
    /// Tasks per task group (1: each task its own group).
    #[arg(long, default_value_t = 1)]
    group_size: u64,
    /// Tasks in flight at once during the fill.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// `GET task/<id>` and `GET task/<id>/status` of random filled tasks after the restart,
    /// this many of each, one at a time.
    #[arg(long, default_value_t = 2000)]
    reads: usize,
    /// Lifecycles (createTask → claimWork → reportCompleted over HTTP) against the restarted
    /// server and against one on an empty directory.
    #[arg(long, default_value_t = 20_000)]
    lifecycles: u64,
    /// Clients running lifecycles at once.
    #[arg(long, default_value_t = 64)]
    lifecycle_concurrency: usize,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchLifecycle {
    /// The deployment's root URL, e.g. `http://127.0.0.1:8080`; repeat it to spread the
    /// clients over several nodes of one cluster, round robin.
    #[arg(long = "root-url", required = true)]
    root_url: Vec<String>,
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// Clients running lifecycles at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Start at most this many lifecycles per second (default: as fast as they go), to
    /// measure latency below saturation.
    #[arg(long)]
    rate: Option<f64>,
    /// After the load, this many rounds of a claimWork parked on the empty queue and woken
    /// by one createTask; reports the time from sending the createTask to the claim's answer.
    #[arg(long, default_value_t = 20)]
    wakeup_rounds: u32,
    /// Run the load twice: as is, then with this many websocket listeners bound to `#` on
    /// every exchange (each counting what it receives); reports both rates and the drop.
    #[arg(long, default_value_t = 0)]
    listeners: usize,
    /// The exchanges the `--listeners` bind (repeat it; default: every exchange).
    #[arg(long = "listener-exchange")]
    listener_exchanges: Vec<String>,
}

#[derive(Args)]
struct BenchLog {
    /// Where the embedded log lives (unused with the Kafka backend).
    #[arg(long)]
    data_dir: PathBuf,
    /// Configuration file, layered over the built-in defaults (`config/default.toml`); the
    /// backend and its settings come from `[log]`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Events in total.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    #[arg(long, default_value_t = 4)]
    keys_per_appender: usize,
    #[arg(long, default_value_t = 200)]
    event_bytes: usize,
    /// Overrides `log.partitions`.
    #[arg(long)]
    partitions: Option<u32>,
    /// Overrides `log.embedded.segment_bytes`.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Overrides `log.embedded.preallocate_bytes`.
    #[arg(long)]
    preallocate_bytes: Option<u64>,
    /// Print `ack <key> <at-millis> <partition> <offset>` for every durable event.
    #[arg(long)]
    report_acks: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("taskfold: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints a report to standard output; a reader that went away (`| head`) is not an error.
fn print_report(report: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = write!(std::io::stdout().lock(), "{report}");
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Log(LogCommand::Inspect { data_dir, verify }) => {
            let mut report = log::inspect::inspect(&data_dir, verify)?;
            for partition in &mut report.partitions {
                let offset = taskfold::engine::store::peek_offset(&data_dir, partition.partition);
                partition.store = Some(offset.map_err(|error| error.to_string()));
            }
            print_report(&report);
            Ok(if verify && report.has_problems() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Log(LogCommand::Repair { data_dir }) => {
            print_report(&log::embedded::repair(&data_dir)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Log(bench)) => bench_log(bench),
        Command::Bench(BenchCommand::Lifecycle(bench)) => bench_lifecycle(bench),
        Command::Bench(BenchCommand::Restart(bench)) => bench_restart(bench),
        Command::Bench(BenchCommand::Retain(bench)) => bench_retain(bench),
        Command::Bench(BenchCommand::Tasks(bench)) => bench_tasks(bench),
        Command::Bench(BenchCommand::Shell(bench)) => bench_shell(bench),
        Command::Bench(BenchCommand::Services(bench)) => bench_services(bench),
        Command::Serve(serve) => serve_queue(serve),
        Command::Worker(worker) => run_worker(worker),
        Command::Up(up) => run_up(up),
        Command::Task(command) => run_task_command(command),
        Command::Listen(listen) => run_listen(listen),
        Command::Shell(shell) => run_shell(shell),
        Command::Input(command) => run_input_command(command),
    }
}

/// The queue's engine and handler state on a data directory.
async fn start_queue(
    settings: &Settings,
    access: access::Access,
    data_dir: &std::path::Path,
    root_url: &str,
) -> anyhow::Result<server::State> {
    let log = log::open(&settings.log, data_dir)
        .with_context(|| format!("opening the {:?} log", settings.log.backend))?;
    let engine_settings = settings.engine_settings();
    taskfold::metrics::METRICS.set_max_task_queues(settings.metrics.max_task_queues);
    let exchange_topics = match settings.log.backend {
        taskfold::log::Backend::Kafka if settings.events.kafka_publish => {
            let options = settings.log.kafka_options();
            let prefix = settings.events.kafka_topic_prefix.clone();
            let (root_url, data_dir) = (root_url.to_owned(), data_dir.to_owned());
            let topics = tokio::task::spawn_blocking(move || {
                ExchangeTopics::open(options, &prefix, &root_url, &data_dir)
            })
            .await?
            .context("opening the exchange topics")?;
            Some(std::sync::Arc::new(topics))
        }
        _ => None,
    };
    let pulse = if settings.events.amqp_url.is_empty() {
        None
    } else {
        let options = taskfold::projections::pulse::Options {
            url: settings.events.amqp_url.clone(),
            exchange_prefix: settings.events.amqp_exchange_prefix.clone(),
        };
        let exchanges = taskfold::projections::pulse::PulseExchanges::open(options, data_dir)
            .context("starting the AMQP publishers")?;
        Some(std::sync::Arc::new(exchanges))
    };
    let blobs = &settings.blobs;
    let blob_store = taskfold::blobs::Store::open(blobs.backend, &blobs.s3, data_dir)
        .await
        .context("opening the blob store")?;
    let engine = Engine::start(
        log,
        data_dir.to_owned(),
        blob_store.clone(),
        engine_settings,
        exchange_topics,
        pulse,
    )
    .await
    .context("starting the engine (replaying the log, joining the cluster)")?;
    access.watch(&engine);
    access
        .load(&engine)
        .await
        .context("loading the clients and roles made through the Auth API")?;
    Ok(server::State::new(
        engine, access, settings, data_dir, blob_store, root_url,
    ))
}

/// `[auth] token_key` when it is not configured: the cluster's, or the data directory's own.
fn fill_token_key(settings: &mut Settings, data_dir: &std::path::Path) -> anyhow::Result<()> {
    if settings.auth.token_key.is_empty() {
        settings.auth.token_key = if settings.cluster.enabled() {
            settings.cluster.token_key()
        } else {
            access::data_dir_token_key(data_dir)
                .with_context(|| format!("keeping the token key in {}", data_dir.display()))?
        };
    }
    Ok(())
}

fn serve_queue(serve: Serve) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(serve.config.as_deref())?;
    if let Some(node_id) = serve.node_id {
        settings.cluster.node_id = node_id;
    }
    if let Some(advertise) = serve.advertise {
        settings.cluster.advertise = advertise;
    }
    settings.cluster.check().map_err(anyhow::Error::msg)?;
    if settings.cluster.enabled() && settings.log.backend != log::Backend::Kafka {
        anyhow::bail!(
            "a cluster of nodes (`--node-id`) needs the Kafka log (`[log] backend = \"kafka\"`)"
        );
    }
    // Every node signs task credentials and blob URLs alike, and takes the others'.
    if settings.cluster.enabled() && settings.auth.queue_access_token.is_empty() {
        settings.auth.queue_access_token = settings.cluster.queue_access_token();
    }
    fill_token_key(&mut settings, &serve.data_dir)?;
    let root_access_token = std::env::var(access::ROOT_ACCESS_TOKEN_VARIABLE).ok();
    let access = access::Access::from_settings(&settings.auth, root_access_token.as_deref())?;
    let options = server::Options {
        root_url: serve
            .root_url
            .unwrap_or_else(|| format!("http://{}", serve.listen)),
        listen: serve.listen,
    };
    actix_web::rt::System::new().block_on(async {
        let state = start_queue(&settings, access, &serve.data_dir, &options.root_url).await?;
        server::serve(options, state).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn run_up(up: Up) -> anyhow::Result<ExitCode> {
    use taskfold::local::LocalFarm;
    let mut settings = Settings::load(up.config.as_deref())?;
    let root_url = format!("http://{}", up.listen);
    let farm = LocalFarm::load_or_create(&up.data_dir, &root_url)
        .with_context(|| format!("keeping credentials in {}", up.data_dir.display()))?;
    if settings.auth.queue_access_token.is_empty() {
        settings.auth.queue_access_token = farm.queue_access_token.clone();
    }
    fill_token_key(&mut settings, &up.data_dir)?;
    let access = access::Access::from_settings(&settings.auth, Some(&farm.root_access_token))?;
    let options = server::Options {
        root_url: root_url.clone(),
        listen: up.listen.clone(),
    };
    let worker_options = taskfold::worker::Options {
        root_url: root_url.clone(),
        task_queue_id: up.task_queue_id.clone(),
        worker_group: "local".to_owned(),
        worker_id: taskfold::local::worker_id(&up.data_dir),
        capacity: up.capacity.max(1),
        engines: vec![taskfold::worker::EngineKind::Docker],
        data_dir: up.data_dir.join("worker"),
        credentials: Some(farm.root_credentials()),
        ssh: settings.worker.ssh.clone(),
        interactive: settings.worker.interactive.clone(),
        proxy: settings.worker.proxy.clone(),
    };
    actix_web::rt::System::new().block_on(async {
        let state = start_queue(&settings, access, &up.data_dir.join("queue"), &root_url).await?;
        let shutdown = taskfold::worker::shutdown_signal();
        let docker = taskfold::worker::docker::DockerEngine::probe().await;
        print_welcome(&up, &farm, docker.as_ref().err());
        let stopped = {
            let mut shutdown = shutdown.clone();
            async move {
                match docker {
                    Ok(()) => {
                        if let Err(error) = taskfold::worker::run(worker_options, shutdown).await {
                            eprintln!("taskfold: the worker stopped: {error:#}");
                        }
                    }
                    Err(_) => {
                        let _ = shutdown.wait_for(|stopping| *stopping).await;
                    }
                }
            }
        };
        server::serve_until(options, state, stopped).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_welcome(up: &Up, farm: &taskfold::local::LocalFarm, docker: Option<&anyhow::Error>) {
    let data_dir = up.data_dir.display();
    println!(
        "Taskfold console: {}/ (sign in there with the client id and access token below)",
        farm.root_url
    );
    println!(
        "Taskfold is up: {}/api/queue/v1/ (data in {data_dir})",
        farm.root_url
    );
    match docker {
        None => println!(
            "A Docker worker claims from task queue {} ({} at a time).",
            up.task_queue_id, up.capacity
        ),
        Some(error) => println!(
            "No Docker engine is reachable ({error}), so no worker runs: the queue works alone.\n\
             To run tasks here, install and start one (Debian: `apt-get install docker.io`, then\n\
             `dockerd`), or point DOCKER_HOST at one, and start `taskfold up` again."
        ),
    }
    let taskfold = this_command();
    println!(
        "\nCredentials (kept in {data_dir}/credentials.json):\n\
         \x20 export TASKCLUSTER_ROOT_URL={}\n\
         \x20 export TASKCLUSTER_CLIENT_ID={}\n\
         \x20 export TASKCLUSTER_ACCESS_TOKEN={}\n\
         \nTry (each task's page is at {}/tasks/TASK_ID):\n\
         \x20 {taskfold} task run --image busybox -- echo hello\n\
         \x20 {taskfold} task status TASK_ID\n\
         \x20 {taskfold} task log TASK_ID\n",
        farm.root_url,
        taskfold::local::ROOT_CLIENT_ID,
        farm.root_access_token,
        farm.root_url,
    );
}

/// How to call this binary from the current directory: `taskfold` when that is what the
/// `PATH` finds, else its own path (as after `cargo run`, which puts it under `target/`).
fn this_command() -> String {
    let Ok(this) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "taskfold".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::canonicalize(dir.join("taskfold")).is_ok_and(|found| found == this))
    });
    if on_path {
        return "taskfold".to_owned();
    }
    let relative = std::env::current_dir()
        .ok()
        .and_then(|dir| this.strip_prefix(dir).ok().map(|path| path.to_path_buf()));
    match relative {
        Some(path) => format!("./{}", path.display()),
        None => this.display().to_string(),
    }
}

/// The deployment `taskfold task …` talks to.
fn task_client() -> anyhow::Result<taskfold::client::QueueClient> {
    let local =
        taskfold::local::LocalFarm::load(std::path::Path::new(taskfold::local::DEFAULT_DATA_DIR))?;
    let root_url = std::env::var("TASKCLUSTER_ROOT_URL")
        .ok()
        .or_else(|| local.as_ref().map(|farm| farm.root_url.clone()))
        .context(
            "no deployment: set TASKCLUSTER_ROOT_URL (and credentials), or run `taskfold up` here",
        )?;
    let credentials = credentials_from_env().or_else(|| {
        local
            .filter(|farm| farm.root_url == root_url)
            .map(|farm| farm.root_credentials())
    });
    Ok(taskfold::client::QueueClient::new(
        &root_url,
        credentials,
        4,
    )?)
}

fn run_shell(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let client = task_client()?;
    // The process exits from inside: dropping the runtime would wait for its blocked read of
    // the terminal.
    let system = actix_web::rt::System::new();
    let status = system.block_on(taskfold::client::shell::shell(
        &client,
        &args.task_id,
        args.run_id,
        args.command,
    ));
    match status {
        // A process exit code holds the status's low byte, as a shell reports it.
        Ok(status) => std::process::exit(i32::from(status as u8)),
        Err(error) => {
            eprintln!("taskfold shell: {error:#}");
            std::process::exit(1)
        }
    }
}

fn run_listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    use taskfold::client::listen;
    let routing_keys = match args.routing_keys.len() {
        // One pattern (or the default) serves every exchange.
        1 => vec![args.routing_keys[0].clone(); args.exchanges.len()],
        n if n == args.exchanges.len() => args.routing_keys,
        n => anyhow::bail!(
            "{} --exchange but {n} --routing-key: give one pattern for all or one per exchange",
            args.exchanges.len()
        ),
    };
    let root_url = args
        .root_url
        .or_else(|| std::env::var("TASKCLUSTER_ROOT_URL").ok());
    let root_url = match (root_url, &args.kafka) {
        (Some(root_url), _) => root_url,
        (None, Some(_)) => String::new(),
        (None, None) => anyhow::bail!("give --root-url (or TASKCLUSTER_ROOT_URL), or --kafka"),
    };
    let options = listen::Options {
        root_url,
        bindings: args.exchanges.into_iter().zip(routing_keys).collect(),
        count: args.count,
        cursor: args.cursor,
        kafka: args.kafka,
        topic_prefix: args.topic_prefix,
        from_beginning: args.from_beginning,
    };
    actix_web::rt::System::new().block_on(listen::listen(options))?;
    Ok(ExitCode::SUCCESS)
}

fn run_task_command(command: TaskCommand) -> anyhow::Result<ExitCode> {
    use taskfold::client::tasks;
    let client = task_client()?;
    actix_web::rt::System::new().block_on(async move {
        match command {
            TaskCommand::Run {
                image,
                task_queue_id,
                max_run_time,
                interactive,
                command,
            } => {
                let options = tasks::RunOptions {
                    image,
                    task_queue_id,
                    command,
                    max_run_time,
                    interactive,
                };
                let state = tasks::run(&client, options).await?;
                Ok(ExitCode::from(tasks::exit_status(&state)))
            }
            TaskCommand::Status { task_id } => {
                let status = client.status(&task_id).await?;
                println!("{}", serde_json::to_string_pretty(&status["status"])?);
                Ok(ExitCode::SUCCESS)
            }
            TaskCommand::Log { task_id, run } => {
                tasks::follow(&client, &task_id, run).await?;
                Ok(ExitCode::SUCCESS)
            }
            TaskCommand::Artifacts { task_id, run } => {
                for artifact in tasks::artifacts(&client, &task_id, run).await? {
                    println!(
                        "{}\t{}\t{}",
                        artifact["name"].as_str().unwrap_or_default(),
                        artifact["storageType"].as_str().unwrap_or_default(),
                        artifact["contentType"].as_str().unwrap_or_default()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            TaskCommand::History { task_id } => {
                for event in tasks::history(&client, &task_id).await? {
                    println!("{}", tasks::history_line(&event));
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn run_input_command(command: InputCommand) -> anyhow::Result<ExitCode> {
    use taskfold::client::input;
    let client = task_client()?;
    actix_web::rt::System::new().block_on(async move {
        match command {
            InputCommand::List {
                task_queue_id,
                task_id,
            } => {
                let listed = match (task_queue_id, task_id) {
                    (_, Some(task_id)) => input::Listed::Task(task_id),
                    (Some(task_queue_id), None) => input::Listed::Queue(task_queue_id),
                    (None, None) => input::Listed::All,
                };
                for request in input::list(&client, &listed).await? {
                    println!("{}", input::line(&request));
                }
                Ok(ExitCode::SUCCESS)
            }
            InputCommand::Answer {
                task_id,
                run_id,
                response,
            } => {
                let answered = input::answer(&client, &task_id, run_id, &response).await?;
                println!("{}", serde_json::to_string_pretty(&answered)?);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn bench_restart(bench: BenchRestart) -> anyhow::Result<ExitCode> {
    use taskfold::engine::load;
    let settings = Settings::load(bench.config.as_deref())?;
    let start = || async {
        load::start(&settings, &bench.data_dir)
            .await
            .with_context(|| {
                format!(
                    "opening the {:?} log and replaying it",
                    settings.log.backend
                )
            })
    };
    // Each phase in a System of its own: when it ends, its actors and the log are gone, as
    // in a process that stops.
    let started = std::time::Instant::now();
    let created = actix_web::rt::System::new().block_on(async {
        let engine = start().await?;
        let fill = load::Fill {
            tasks: bench.tasks,
            concurrency: bench.concurrency,
            template: &load::TaskTemplate::small(),
            group_size: 1,
            resolve: false,
            sample: 0,
        };
        let filled = load::fill(&engine, &fill, |_| {})
            .await
            .context("creating tasks")?;
        anyhow::Ok(filled.tasks)
    })?;
    let fill = started.elapsed();
    println!(
        "created {created} tasks in {:.1} s ({:.0} tasks/s)",
        fill.as_secs_f64(),
        created as f64 / fill.as_secs_f64()
    );
    let restarted = std::time::Instant::now();
    let tasks = actix_web::rt::System::new().block_on(async {
        let engine = start().await?;
        anyhow::Ok(engine.task_count().await)
    })?;
    println!(
        "restart: ready with {tasks} tasks in {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    if tasks < created {
        anyhow::bail!("the restarted engine lost tasks: {created} created, {tasks} after restart");
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_retain(bench: BenchRetain) -> anyhow::Result<ExitCode> {
    use taskfold::engine::load::TaskTemplate;
    let template = match &bench.task_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            TaskTemplate::from_json(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => TaskTemplate::small(),
    };
    let options = taskfold::bench::retain::Options {
        data_dir: bench.data_dir,
        config: bench.config,
        tasks: bench.tasks,
        concurrency: bench.concurrency,
        template,
        group_size: bench.group_size,
        resolve: bench.resolved,
        reads: bench.reads,
        lifecycles: bench.lifecycles,
        lifecycle_concurrency: bench.lifecycle_concurrency,
        server_binary: std::env::current_exe().context("finding this binary")?,
        progress: true,
    };
    let report = taskfold::bench::retain::run(options)?;
    if bench.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Credentials from the environment, by the Taskcluster clients' convention.
fn credentials_from_env() -> Option<taskfold::auth::Credentials> {
    match (
        std::env::var("TASKCLUSTER_CLIENT_ID"),
        std::env::var("TASKCLUSTER_ACCESS_TOKEN"),
    ) {
        (Ok(client_id), Ok(access_token)) => Some(taskfold::auth::Credentials {
            client_id,
            access_token,
            certificate: std::env::var("TASKCLUSTER_CERTIFICATE").ok(),
        }),
        _ => None,
    }
}

fn run_worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    let options = taskfold::worker::Options {
        root_url: args.root_url,
        task_queue_id: args.task_queue_id,
        worker_group: args.worker_group,
        worker_id: args.worker_id,
        capacity: args.capacity.max(1),
        engines: args.engine,
        data_dir: args.data_dir,
        credentials: credentials_from_env(),
        ssh: settings.worker.ssh,
        interactive: settings.worker.interactive,
        proxy: settings.worker.proxy,
    };
    actix_web::rt::System::new().block_on(async {
        if let Some(listen) = &args.metrics_listen {
            taskfold::worker::serve_metrics(listen)
                .with_context(|| format!("serving metrics on {listen}"))?;
        }
        let shutdown = taskfold::worker::shutdown_signal();
        taskfold::worker::run(options, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn bench_lifecycle(bench: BenchLifecycle) -> anyhow::Result<ExitCode> {
    let credentials = credentials_from_env();
    let per_node = bench.concurrency.div_ceil(bench.root_url.len()).max(1);
    let nodes = bench
        .root_url
        .iter()
        .map(|root_url| taskfold::client::QueueClient::new(root_url, credentials.clone(), per_node))
        .collect::<Result<Vec<_>, _>>()?;
    let client = nodes[0].clone();
    let options = taskfold::client::lifecycle::Options {
        tasks: bench.tasks,
        concurrency: bench.concurrency,
        rate: bench.rate,
        wakeup_rounds: bench.wakeup_rounds,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    if bench.listeners == 0 {
        let report = actix_web::rt::System::new()
            .block_on(taskfold::client::lifecycle::run_spread(nodes, options))?;
        print_report(&report);
        return Ok(ExitCode::SUCCESS);
    }
    let exchanges = if bench.listener_exchanges.is_empty() {
        Exchange::ALL.to_vec()
    } else {
        bench
            .listener_exchanges
            .iter()
            .map(|name| {
                Exchange::parse(name).ok_or_else(|| anyhow::anyhow!("unknown exchange `{name}`"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let comparison =
        actix_web::rt::System::new().block_on(taskfold::client::lifecycle::compare_listeners(
            client,
            options,
            &bench.root_url[0],
            bench.listeners,
            exchanges,
        ))?;
    print_report(&comparison);
    Ok(ExitCode::SUCCESS)
}

fn bench_tasks(bench: BenchTasks) -> anyhow::Result<ExitCode> {
    let client = taskfold::client::QueueClient::new(
        &bench.root_url,
        credentials_from_env(),
        bench.concurrency,
    )?;
    let options = taskfold::client::bench_tasks::Options {
        task_queue_id: bench.task_queue_id,
        payload: serde_json::from_str(&bench.payload).context("--payload is not JSON")?,
        tasks: bench.tasks,
        concurrency: bench.concurrency,
        baseline: bench.baseline,
    };
    let report = actix_web::rt::System::new()
        .block_on(taskfold::client::bench_tasks::run(client, options))?;
    print_report(&report);
    Ok(ExitCode::SUCCESS)
}

fn bench_services(bench: BenchServices) -> anyhow::Result<ExitCode> {
    let credentials = credentials_from_env().context(
        "the bench needs TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN (with scope `*`)",
    )?;
    let options = taskfold::bench::services::Options {
        root_url: bench.root_url,
        credentials,
        index_entries: bench.index_entries,
        clients: bench.clients,
        roles: bench.roles,
        concurrency: bench.concurrency,
        seconds: bench.seconds,
        proxy_tasks: bench.proxy_tasks,
        server_pid: bench.server_pid,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = actix_web::rt::System::new().block_on(taskfold::bench::services::run(options))?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn bench_shell(bench: BenchShell) -> anyhow::Result<ExitCode> {
    let client = taskfold::client::QueueClient::new(&bench.root_url, credentials_from_env(), 4)?;
    let options = taskfold::client::bench_shell::Options {
        task_queue_id: bench.task_queue_id,
        image: bench.image,
        keystrokes: bench.keystrokes,
        bulk_bytes: bench.bulk_mib << 20,
    };
    let report = actix_web::rt::System::new()
        .block_on(taskfold::client::bench_shell::run(&client, options))?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn bench_log(bench: BenchLog) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(bench.config.as_deref())?.log;
    settings.partitions = bench.partitions.unwrap_or(settings.partitions);
    let embedded = &mut settings.embedded;
    embedded.segment_bytes = bench.segment_bytes.unwrap_or(embedded.segment_bytes);
    embedded.preallocate_bytes = bench
        .preallocate_bytes
        .unwrap_or(embedded.preallocate_bytes);
    let log = log::open(&settings, &bench.data_dir)
        .with_context(|| format!("opening the {:?} log", settings.backend))?;
    let load = log::load::Options {
        appenders: bench.appenders,
        events: bench.events,
        keys_per_appender: bench.keys_per_appender,
        event_bytes: bench.event_bytes,
        report_acks: bench.report_acks,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(log::load::run(log, load))?;
    eprintln!("{report}");
    Ok(ExitCode::SUCCESS)
}
