//! `taskfold bench lifecycle`: full task lifecycles over real HTTP, Hawk-signed, against any
//! Queue API (Taskfold's or Taskcluster's): createTask → claimWork → reportCompleted, from
//! `concurrency` clients at once. Reports lifecycles per second and each call's latency.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::listen::Counter;
use super::{Error, QueueClient};
use crate::model::exchange::Exchange;
use crate::model::{Slugid, Timestamp};

#[derive(Clone, Debug)]
pub struct Options {
    pub tasks: u64,
    pub concurrency: usize,
    /// Lifecycles started per second at most (lifecycle `i` starts no earlier than `i / rate`
    /// seconds into the run); `None` runs flat out.
    pub rate: Option<f64>,
    /// After the load: rounds of a claimWork parked on an empty queue, fed by one createTask.
    pub wakeup_rounds: u32,
    /// Show a progress bar on standard error.
    pub progress: bool,
}

/// Latencies of one API method.
#[derive(Debug, Default)]
pub struct CallLatencies {
    pub method: &'static str,
    pub samples: Vec<Duration>,
}

impl CallLatencies {
    pub fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        sorted
            .get(((sorted.len() as f64 * fraction) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Report {
    pub lifecycles: u64,
    pub elapsed: Duration,
    pub calls: [CallLatencies; 3],
    /// claimWork calls that came back with no task although this client had just created one.
    pub empty_claims: u64,
    /// For each wake-up round: from sending the createTask to the parked claimWork's answer.
    pub wakeups: CallLatencies,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} lifecycles in {:.2} s: {:.0} lifecycles/s ({} empty claims)",
            self.lifecycles,
            self.elapsed.as_secs_f64(),
            self.lifecycles as f64 / self.elapsed.as_secs_f64(),
            self.empty_claims
        )?;
        let wakeups = (!self.wakeups.samples.is_empty()).then_some(&self.wakeups);
        for call in self.calls.iter().chain(wakeups) {
            writeln!(
                f,
                "  {:<16} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  ({} calls)",
                call.method,
                call.percentile(0.5),
                call.percentile(0.99),
                call.percentile(1.0),
                call.samples.len()
            )?;
        }
        Ok(())
    }
}

/// A task for the bench queue: minimal, valid, due within the hour.
fn definition(task_queue_id: &str) -> Value {
    let now = Timestamp::now();
    json!({
        "taskQueueId": task_queue_id,
        "created": now.to_string(),
        "deadline": now.plus_millis(3_600_000).to_string(),
        "payload": {},
        "metadata": {
            "name": "lifecycle bench",
            "description": "createTask, claimWork, reportCompleted",
            "owner": "bench@taskfold.invalid",
            "source": "https://taskfold.invalid/bench"
        }
    })
}

/// Runs the load; must run inside an actix System (the HTTP client is single-threaded).
/// What the bench reads of a claimWork answer; the rest is skipped unread.
#[derive(Deserialize)]
struct Claimed {
    tasks: Vec<ClaimedTask>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimedTask {
    status: ClaimedStatus,
    run_id: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimedStatus {
    task_id: String,
}

pub async fn run(client: QueueClient, options: Options) -> Result<Report, Error> {
    run_spread(vec![client], options).await
}

/// [`run`] with the bench clients spread over several queue nodes, round robin (one cluster
/// reached through each of its nodes). `nodes` must not be empty.
pub async fn run_spread(nodes: Vec<QueueClient>, options: Options) -> Result<Report, Error> {
    let client = nodes[0].clone();
    // A queue of its own, so the claims take only this run's tasks.
    let worker_type = format!(
        "lifecycle-{}",
        Slugid::nice().to_string().to_lowercase().replace('_', "-")
    );
    let worker_type: String = worker_type
        .chars()
        .take(38)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned();
    let task_queue_id = format!("taskfold-bench/{worker_type}");
    let started_tasks = Rc::new(Cell::new(0u64));
    let finished = Rc::new(Cell::new(0u64));
    let empty_claims = Rc::new(Cell::new(0u64));
    let calls = Rc::new(RefCell::new([
        CallLatencies {
            method: "createTask",
            samples: Vec::new(),
        },
        CallLatencies {
            method: "claimWork",
            samples: Vec::new(),
        },
        CallLatencies {
            method: "reportCompleted",
            samples: Vec::new(),
        },
    ]));
    let progress = if options.progress {
        indicatif::ProgressBar::new(options.tasks)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let begun = Instant::now();
    let mut clients = Vec::new();
    for worker in 0..options.concurrency.max(1) {
        let client = nodes[worker % nodes.len()].clone();
        let task_queue_id = task_queue_id.clone();
        let (started_tasks, finished, empty_claims, calls, progress) = (
            started_tasks.clone(),
            finished.clone(),
            empty_claims.clone(),
            calls.clone(),
            progress.clone(),
        );
        let tasks = options.tasks;
        let rate = options.rate.filter(|rate| *rate > 0.0);
        clients.push(actix_web::rt::spawn(async move {
            let claim =
                json!({"workerGroup": "bench", "workerId": format!("worker-{worker}"), "tasks": 1});
            while started_tasks.get() < tasks {
                let index = started_tasks.get();
                started_tasks.set(index + 1);
                if let Some(rate) = rate {
                    let due = begun + Duration::from_secs_f64(index as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let timed = Instant::now();
                client
                    .create_task::<IgnoredAny>(Slugid::nice(), &definition(&task_queue_id))
                    .await?;
                calls.borrow_mut()[0].samples.push(timed.elapsed());

                let timed = Instant::now();
                let claimed: Claimed = client.claim_work(&task_queue_id, &claim).await?;
                calls.borrow_mut()[1].samples.push(timed.elapsed());
                let Some(task) = claimed.tasks.first() else {
                    empty_claims.set(empty_claims.get() + 1);
                    continue;
                };

                let timed = Instant::now();
                client
                    .report_completed::<IgnoredAny>(&task.status.task_id, task.run_id)
                    .await?;
                calls.borrow_mut()[2].samples.push(timed.elapsed());
                finished.set(finished.get() + 1);
                progress.inc(1);
            }
            Ok::<(), Error>(())
        }));
    }
    for client in clients {
        client.await.map_err(|error| Error::Transport {
            method: awc::http::Method::GET,
            path: String::new(),
            reason: format!("a bench client failed: {error}"),
        })??;
    }
    progress.finish_and_clear();
    let elapsed = begun.elapsed();
    let calls = Rc::try_unwrap(calls)
        .map(RefCell::into_inner)
        .unwrap_or_default();
    let wakeups = wakeups(&client, &task_queue_id, options.wakeup_rounds).await?;
    Ok(Report {
        lifecycles: finished.get(),
        elapsed,
        calls,
        empty_claims: empty_claims.get(),
        wakeups,
    })
}

/// How long after a createTask a parked claimWork answers with it: each round parks a
/// claimWork on the (now empty) queue, waits until it must be parked, then creates one task
/// and takes the time from sending the createTask to the claim's answer.
async fn wakeups(
    client: &QueueClient,
    task_queue_id: &str,
    rounds: u32,
) -> Result<CallLatencies, Error> {
    /// Long enough for the claimWork to reach the server and park.
    const PARK: Duration = Duration::from_millis(100);
    let mut latencies = CallLatencies {
        method: "wake-up",
        samples: Vec::new(),
    };
    let claim = json!({"workerGroup": "bench", "workerId": "parked", "tasks": 1});
    for _ in 0..rounds {
        let parked = {
            let (client, queue, claim) = (client.clone(), task_queue_id.to_owned(), claim.clone());
            actix_web::rt::spawn(async move {
                let claimed = client.claim_work::<Claimed>(&queue, &claim).await;
                (Instant::now(), claimed)
            })
        };
        tokio::time::sleep(PARK).await;
        let sent = Instant::now();
        client
            .create_task::<IgnoredAny>(Slugid::nice(), &definition(task_queue_id))
            .await?;
        let (answered, claimed) = parked.await.map_err(|error| Error::Transport {
            method: awc::http::Method::POST,
            path: String::new(),
            reason: format!("the parked claimWork failed: {error}"),
        })?;
        if let Some(task) = claimed?.tasks.first() {
            latencies
                .samples
                .push(answered.saturating_duration_since(sent));
            client
                .report_completed::<IgnoredAny>(&task.status.task_id, task.run_id)
                .await?;
        }
    }
    Ok(latencies)
}

/// The load without listeners, then with `listeners` websocket listeners bound to `#` on
/// `exchanges`, each counting what it receives.
pub struct ListenerComparison {
    pub without: Report,
    pub with: Report,
    pub listeners: usize,
    pub exchanges: Vec<Exchange>,
    /// Messages each listener should have received.
    pub expected: u64,
    /// Messages all listeners received.
    pub received: u64,
    /// Listeners the server disconnected.
    pub disconnected: usize,
}

/// Runs the load twice on one server, without and with listeners (wake-up rounds off).
pub async fn compare_listeners(
    client: QueueClient,
    options: Options,
    root_url: &str,
    listeners: usize,
    exchanges: Vec<Exchange>,
) -> anyhow::Result<ListenerComparison> {
    let quiet = Options {
        progress: false,
        wakeup_rounds: 0,
        ..options
    };
    let without = run(client.clone(), quiet.clone()).await?;
    let bindings: Vec<(String, String)> = exchanges
        .iter()
        .map(|exchange| (exchange.name().to_owned(), "#".to_owned()))
        .collect();
    // The listeners stand for consumers elsewhere: they read on a thread of their own, so
    // they take no turns from the load's clients on this one.
    let listening = ListenerThread::start()?;
    let mut counters = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        let (root_url, bindings) = (root_url.to_owned(), bindings.clone());
        let counter = listening
            .spawn(async move { Counter::connect(&root_url, &bindings).await })
            .await??;
        counters.push(counter);
    }
    let with = run(client, quiet).await?;
    // Every lifecycle publishes one message on each of task-defined, task-pending,
    // task-running, task-completed and (its one-task group's) task-group-resolved.
    let per_lifecycle = exchanges
        .iter()
        .filter(|exchange| {
            matches!(
                exchange,
                Exchange::TaskDefined
                    | Exchange::TaskPending
                    | Exchange::TaskRunning
                    | Exchange::TaskCompleted
                    | Exchange::TaskGroupResolved
            )
        })
        .count() as u64;
    let expected = with.lifecycles * per_lifecycle;
    let waiting = Instant::now();
    while counters
        .iter()
        .any(|counter| counter.received() < expected && counter.closed().is_none())
        && waiting.elapsed() < LISTENER_DRAIN_TIMEOUT
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ListenerComparison {
        without,
        with,
        listeners,
        exchanges,
        expected,
        received: counters.iter().map(Counter::received).sum(),
        disconnected: counters
            .iter()
            .filter(|counter| counter.closed().is_some())
            .count(),
    })
}

/// The bench's listeners' runtime, on a thread of its own; shut down without waiting when
/// dropped (dropping a runtime inside another one's task would panic).
struct ListenerThread(Option<tokio::runtime::Runtime>);

impl ListenerThread {
    fn start() -> std::io::Result<ListenerThread> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-listeners")
            .enable_all()
            .build()?;
        Ok(ListenerThread(Some(runtime)))
    }
}

impl std::ops::Deref for ListenerThread {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the runtime lives until dropped")
    }
}

impl Drop for ListenerThread {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// How long the listeners may take to receive what the load published.
const LISTENER_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Display for ListenerComparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |report: &Report| report.lifecycles as f64 / report.elapsed.as_secs_f64();
        let names: Vec<&str> = self
            .exchanges
            .iter()
            .map(|exchange| exchange.name())
            .collect();
        let expected = self.expected * self.listeners as u64;
        writeln!(f, "without listeners:\n{}", self.without)?;
        writeln!(
            f,
            "with {} listeners bound to `#` on {}:\n{}",
            self.listeners,
            names.join(", "),
            self.with
        )?;
        writeln!(
            f,
            "listeners received {} messages ({:.0}% of {expected} expected), {} disconnected",
            self.received,
            100.0 * self.received as f64 / expected.max(1) as f64,
            self.disconnected
        )?;
        writeln!(
            f,
            "throughput with {} listeners: {:.0}/s vs {:.0}/s without ({:+.1}%)",
            self.listeners,
            rate(&self.with),
            rate(&self.without),
            100.0 * (rate(&self.with) / rate(&self.without) - 1.0)
        )
    }
}
