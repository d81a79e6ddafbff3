//! Prometheus metrics, served at `GET /metrics`. Every metric of the queue has its name, help,
//! labels and buckets defined here and nowhere else (a worker's are in `worker::metrics`);
//! names carry the `taskfold_` prefix and their unit, and no label ever holds a task id (one
//! series per task would sink any Prometheus). The log, the engine and the API count here, so
//! this module sits below them all and imports only the model.
//!
//! Task and run metrics are counted as the task shards apply events, so they follow the log:
//! whatever a reply could have shown is counted once.
//!
//! Every label value comes from a closed set, since each new value is a series kept for the
//! life of the process: an HTTP method the server does not know is `other`, a request that
//! matched no route is `unmatched`, and task queues, which any client may invent, are labelled
//! by name only up to `[metrics] max_task_queues` of them; the rest are counted under `other`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::exchange::Exchange;
use crate::model::{Envelope, Event, Slugid, Task, Timestamp};

/// Seconds from a few milliseconds (claims, API calls) to hours (queue waits, builds).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 14400.0,
];

/// Events per batch, from one to the tens of thousands a group commit can carry.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

/// The label of whatever falls outside a closed set: task queues past the bound, unknown
/// HTTP methods. No task queue has this name (their ids hold a `/`).
pub const OTHER: &str = "other";

/// The `route` of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// HTTP methods labelled by name; any other is [`OTHER`].
const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
];

/// How many task queues are labelled by name unless configured (`[metrics] max_task_queues`).
const DEFAULT_MAX_TASK_QUEUES: usize = 1000;

/// `method` as the `method` label names it.
pub fn method_label(method: &str) -> &'static str {
    HTTP_METHODS
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or(OTHER)
}

/// The task queues labelled by name: the first `max` seen since the process started.
struct TaskQueueLabels {
    max: AtomicUsize,
    named: Mutex<HashSet<String>>,
}

impl TaskQueueLabels {
    /// `task_queue_id` itself while it is, or still can be, one of the named; else [`OTHER`].
    /// Once folded, a queue stays folded, so a gauge of it moves under one label only.
    fn label<'a>(&self, task_queue_id: &'a str) -> &'a str {
        let mut named = self
            .named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if named.contains(task_queue_id) {
            return task_queue_id;
        }
        if named.len() < self.max.load(Ordering::Relaxed) {
            named.insert(task_queue_id.to_owned());
            return task_queue_id;
        }
        OTHER
    }
}

pub struct Metrics {
    registry: Registry,
    task_queues: TaskQueueLabels,
    pub tasks_created: IntCounterVec,
    pub runs_resolved: IntCounterVec,
    pub task_pending_seconds: HistogramVec,
    pub run_duration_seconds: HistogramVec,
    pub events_applied: IntCounter,
    pub http_request_duration_seconds: HistogramVec,
    pub claim_work_wait_seconds: Histogram,
    pub exchange_messages: IntCounterVec,
    pub listeners: IntGauge,
    pub listeners_dropped: IntCounter,
    pub kafka_consumer_lag: IntGaugeVec,
    pub amqp_messages_published: IntCounter,
    pub amqp_confirms: IntCounterVec,
    pub amqp_reconnects: IntCounter,
    pub amqp_lag: IntGaugeVec,
    pub pending_tasks: IntGaugeVec,
    pub log_append_seconds: Histogram,
    pub log_append_batch_events: Histogram,
    pub replay_seconds: Gauge,
    pub store_flush_seconds: Histogram,
    pub store_resident_tasks: IntGaugeVec,
    pub partitions_owned: IntGauge,
    pub partition_catch_up_seconds: Histogram,
    pub partition_lag: IntGaugeVec,
    pub forwarded_calls: IntCounter,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The registries of other parts of this process whose metrics the queue's `/metrics` serves
/// after its own (see [`serve_also`]).
static ALSO_SERVED: Mutex<Vec<Registry>> = Mutex::new(Vec::new());

/// Serves `registry` at the queue's `/metrics` too, after the queue's own metrics: a worker
/// running in the queue's process (`taskfold up`) adds its own this way.
pub fn serve_also(registry: Registry) {
    ALSO_SERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(registry);
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let seconds = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec())
        };
        let metrics = Metrics {
            tasks_created: IntCounterVec::new(
                Opts::new(
                    "taskfold_tasks_created_total",
                    "Tasks created, by task queue.",
                ),
                &["task_queue"],
            )
            .expect("a valid metric"),
            runs_resolved: IntCounterVec::new(
                Opts::new(
                    "taskfold_runs_resolved_total",
                    "Runs resolved, by task queue, final state and reason.",
                ),
                &["task_queue", "state", "reason"],
            )
            .expect("a valid metric"),
            task_pending_seconds: HistogramVec::new(
                seconds(
                    "taskfold_task_pending_seconds",
                    "How long runs waited in their queue: pending until claimed.",
                ),
                &["task_queue"],
            )
            .expect("a valid metric"),
            run_duration_seconds: HistogramVec::new(
                seconds(
                    "taskfold_run_duration_seconds",
                    "How long claimed runs took: claimed until resolved.",
                ),
                &["task_queue"],
            )
            .expect("a valid metric"),
            events_applied: IntCounter::new(
                "taskfold_events_applied_total",
                "Events applied by the task shards (replay excluded).",
            )
            .expect("a valid metric"),
            http_request_duration_seconds: HistogramVec::new(
                seconds(
                    "taskfold_http_request_duration_seconds",
                    "HTTP requests, by method, route template and status.",
                ),
                &["method", "route", "status"],
            )
            .expect("a valid metric"),
            claim_work_wait_seconds: Histogram::with_opts(seconds(
                "taskfold_claim_work_wait_seconds",
                "How long claimWork calls waited before answering (with work or none).",
            ))
            .expect("a valid metric"),
            exchange_messages: IntCounterVec::new(
                Opts::new(
                    "taskfold_exchange_messages_total",
                    "Exchange messages published (once their events are durable), by exchange.",
                ),
                &["exchange"],
            )
            .expect("a valid metric"),
            listeners: IntGauge::new(
                "taskfold_listeners",
                "Connected event listeners (websocket and server-sent events).",
            )
            .expect("a valid metric"),
            listeners_dropped: IntCounter::new(
                "taskfold_listeners_dropped_total",
                "Listeners disconnected for falling too far behind.",
            )
            .expect("a valid metric"),
            kafka_consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "taskfold_kafka_consumer_lag",
                    "Events in the Kafka log whose exchange messages are not yet delivered to \
                     the exchange topics, by log partition.",
                ),
                &["partition"],
            )
            .expect("a valid metric"),
            amqp_messages_published: IntCounter::new(
                "taskfold_amqp_messages_published_total",
                "Exchange messages handed to the AMQP broker, those published again after a \
                 lost connection included.",
            )
            .expect("a valid metric"),
            amqp_confirms: IntCounterVec::new(
                Opts::new(
                    "taskfold_amqp_confirms_total",
                    "The AMQP broker's publisher confirms, by outcome (ack, nack).",
                ),
                &["outcome"],
            )
            .expect("a valid metric"),
            amqp_reconnects: IntCounter::new(
                "taskfold_amqp_reconnects_total",
                "Connections to the AMQP broker made again after the previous one broke.",
            )
            .expect("a valid metric"),
            amqp_lag: IntGaugeVec::new(
                Opts::new(
                    "taskfold_amqp_lag",
                    "Events in the log whose exchange messages the AMQP broker has not yet \
                     confirmed, by log partition.",
                ),
                &["partition"],
            )
            .expect("a valid metric"),
            pending_tasks: IntGaugeVec::new(
                Opts::new(
                    "taskfold_pending_tasks",
                    "Runs pending (waiting for a worker), by task queue.",
                ),
                &["task_queue"],
            )
            .expect("a valid metric"),
            log_append_seconds: Histogram::with_opts(seconds(
                "taskfold_log_append_seconds",
                "How long the shards' appends took to become durable.",
            ))
            .expect("a valid metric"),
            log_append_batch_events: Histogram::with_opts(
                HistogramOpts::new(
                    "taskfold_log_append_batch_events",
                    "Events made durable together: per fsync of the embedded log, per append \
                     to the Kafka log.",
                )
                .buckets(BATCH_BUCKETS.to_vec()),
            )
            .expect("a valid metric"),
            replay_seconds: Gauge::new(
                "taskfold_replay_seconds",
                "How long the last start spent opening the partition stores and replaying the \
                 log after them.",
            )
            .expect("a valid metric"),
            partitions_owned: IntGauge::new(
                "taskfold_partitions_owned",
                "Partitions of the log this node serves.",
            )
            .expect("a valid metric"),
            partition_catch_up_seconds: Histogram::with_opts(seconds(
                "taskfold_partition_catch_up_seconds",
                "How long a partition took from being assigned to this node to being served: \
                 taking its writer, opening its store and replaying the log after it.",
            ))
            .expect("a valid metric"),
            partition_lag: IntGaugeVec::new(
                Opts::new(
                    "taskfold_partition_lag_records",
                    "Records of the log a partition's shard has not yet written (other nodes' \
                     records before it took the partition, transaction markers).",
                ),
                &["partition"],
            )
            .expect("a valid metric"),
            forwarded_calls: IntCounter::new(
                "taskfold_forwarded_calls_total",
                "Calls about entities of another node's partitions, forwarded to that node.",
            )
            .expect("a valid metric"),
            store_flush_seconds: Histogram::with_opts(seconds(
                "taskfold_store_flush_seconds",
                "How long writing a shard's changes to its partition store took.",
            ))
            .expect("a valid metric"),
            store_resident_tasks: IntGaugeVec::new(
                Opts::new(
                    "taskfold_store_resident_tasks",
                    "Tasks a partition holds in memory (its unresolved ones, and those changed \
                     since its last flush), after each flush.",
                ),
                &["partition"],
            )
            .expect("a valid metric"),
            registry,
            task_queues: TaskQueueLabels {
                max: AtomicUsize::new(DEFAULT_MAX_TASK_QUEUES),
                named: Mutex::new(HashSet::new()),
            },
        };
        let build_info = IntGaugeVec::new(
            Opts::new(
                "taskfold_build_info",
                "The running Taskfold's version (always 1).",
            ),
            &["version"],
        )
        .expect("a valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let registry = &metrics.registry;
        for collector in [
            Box::new(metrics.tasks_created.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.runs_resolved.clone()),
            Box::new(metrics.task_pending_seconds.clone()),
            Box::new(metrics.run_duration_seconds.clone()),
            Box::new(metrics.events_applied.clone()),
            Box::new(metrics.http_request_duration_seconds.clone()),
            Box::new(metrics.claim_work_wait_seconds.clone()),
            Box::new(metrics.exchange_messages.clone()),
            Box::new(metrics.listeners.clone()),
            Box::new(metrics.listeners_dropped.clone()),
            Box::new(metrics.kafka_consumer_lag.clone()),
            Box::new(metrics.amqp_messages_published.clone()),
            Box::new(metrics.amqp_confirms.clone()),
            Box::new(metrics.amqp_reconnects.clone()),
            Box::new(metrics.amqp_lag.clone()),
            Box::new(metrics.pending_tasks.clone()),
            Box::new(metrics.log_append_seconds.clone()),
            Box::new(metrics.log_append_batch_events.clone()),
            Box::new(metrics.replay_seconds.clone()),
            Box::new(metrics.store_flush_seconds.clone()),
            Box::new(metrics.store_resident_tasks.clone()),
            Box::new(metrics.partitions_owned.clone()),
            Box::new(metrics.partition_catch_up_seconds.clone()),
            Box::new(metrics.partition_lag.clone()),
            Box::new(metrics.forwarded_calls.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        metrics
    }

    /// How many task queues get a label of their own (`[metrics] max_task_queues`); set once,
    /// before the engine starts counting.
    pub fn set_max_task_queues(&self, max: usize) {
        self.task_queues.max.store(max, Ordering::Relaxed);
    }

    /// The `task_queue` label of `task_queue_id`.
    pub fn task_queue_label<'a>(&self, task_queue_id: &'a str) -> &'a str {
        self.task_queues.label(task_queue_id)
    }

    /// An HTTP request answered after `seconds` with `status` (one the server chose, never
    /// the client); `route` is its route's template, if it matched one.
    pub fn http_request(&self, method: &str, route: Option<&str>, status: &str, seconds: f64) {
        self.http_request_duration_seconds
            .with_label_values(&[
                method_label(method),
                route.unwrap_or(UNMATCHED_ROUTE),
                status,
            ])
            .observe(seconds);
    }

    /// The number of runs pending in `task_queue_id` went from `before` to `after`. A queue
    /// with a label of its own is set; the folded ones add up under [`OTHER`].
    pub fn pending_changed(&self, task_queue_id: &str, before: usize, after: usize) {
        let label = self.task_queue_label(task_queue_id);
        let gauge = self.pending_tasks.with_label_values(&[label]);
        if label == OTHER {
            gauge.add(after as i64 - before as i64);
        } else {
            gauge.set(after as i64);
        }
    }

    /// Counts an event the shard just applied; `task` is its task's state after it.
    pub fn applied(&self, envelope: &Envelope, task: Option<&Task>) {
        self.events_applied.inc();
        let seconds = |from: Option<Timestamp>, to: Option<Timestamp>| match (from, to) {
            (Some(from), Some(to)) => Some((to.millis() - from.millis()).max(0) as f64 / 1000.0),
            _ => None,
        };
        match (&envelope.event, task) {
            (Event::TaskDefined { definition, .. }, _) => self
                .tasks_created
                .with_label_values(&[self.task_queue_label(&definition.task_queue_id)])
                .inc(),
            (Event::RunClaimed { run_id, .. }, Some(task)) => {
                if let Some(run) = task.runs.get(*run_id as usize)
                    && let Some(waited) = seconds(Some(run.scheduled), run.started)
                {
                    self.task_pending_seconds
                        .with_label_values(&[self.task_queue_label(&task.definition.task_queue_id)])
                        .observe(waited);
                }
            }
            (Event::RunResolved { run_id, reason }, Some(task)) => {
                let state = name_of(&reason.final_state());
                let reason = name_of(reason);
                let task_queue = self.task_queue_label(&task.definition.task_queue_id);
                self.runs_resolved
                    .with_label_values(&[task_queue, state.as_str(), reason.as_str()])
                    .inc();
                if let Some(run) = task.runs.get(*run_id as usize)
                    && let Some(took) = seconds(run.started, run.resolved)
                {
                    self.run_duration_seconds
                        .with_label_values(&[task_queue])
                        .observe(took);
                }
            }
            _ => {}
        }
    }

    pub fn exchange_message(&self, exchange: Exchange) {
        self.exchange_messages
            .with_label_values(&[exchange.name()])
            .inc();
    }

    /// The task an event's key names, if it names one.
    pub fn task_key(envelope: &Envelope) -> Option<Slugid> {
        match envelope.event {
            Event::RunClaimed { .. } | Event::RunResolved { .. } => envelope.key.parse().ok(),
            _ => None,
        }
    }

    /// The text exposition format: these metrics, then those of the other parts of the
    /// process that [`serve_also`] added.
    pub fn render(&self) -> String {
        let mut text = render(&self.registry);
        for registry in ALSO_SERVED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            text += &render(registry);
        }
        text
    }
}

/// The text exposition format of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut text = Vec::new();
    // Encoding into memory fails only on metrics that break the format's rules, which
    // `new` cannot register.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// A state or reason as the API spells it (`completed`, `deadline-exceeded`, …).
fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("get"), OTHER);
        assert_eq!(method_label(&"X".repeat(7000)), OTHER);
    }

    #[test]
    fn task_queues_past_the_bound_fold_into_other_for_good() {
        let labels = TaskQueueLabels {
            max: AtomicUsize::new(2),
            named: Mutex::new(HashSet::new()),
        };
        assert_eq!(labels.label("p/a"), "p/a");
        assert_eq!(labels.label("p/b"), "p/b");
        assert_eq!(labels.label("p/c"), OTHER);
        assert_eq!(labels.label("p/a"), "p/a");
        labels.max.store(3, Ordering::Relaxed);
        assert_eq!(labels.label("p/d"), "p/d");
        assert_eq!(labels.label("p/e"), OTHER);
    }

    #[test]
    fn every_metric_renders_with_its_prefix() {
        let text = METRICS.render();
        assert!(text.contains("taskfold_build_info{version="));
        for line in text.lines().filter(|line| line.starts_with("# TYPE")) {
            assert!(line.starts_with("# TYPE taskfold_"), "{line}");
        }
    }
}
