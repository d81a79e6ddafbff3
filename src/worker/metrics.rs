//! A worker's Prometheus metrics: what `taskfold worker --metrics-listen` serves, and what the
//! queue's `/metrics` adds when a worker runs in its process (`taskfold up`). Names carry the
//! `taskfold_worker_` prefix and their unit; the buckets and the text format are the queue's
//! ([`crate::metrics`]).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics;

/// A worker's metrics, in a registry of their own.
pub struct WorkerMetrics {
    registry: Registry,
    /// Whether a worker runs in this process (see [`WorkerMetrics::activate`]).
    active: AtomicBool,
    pub tasks_running: IntGauge,
    pub payload_start_seconds: Histogram,
    pub engine_errors: IntCounterVec,
}

pub static WORKER_METRICS: LazyLock<WorkerMetrics> = LazyLock::new(WorkerMetrics::new);

/// Kinds of engine error, as `taskfold_worker_engine_errors_total` labels them.
pub const RESOURCE_UNAVAILABLE: &str = "resource-unavailable";
pub const INTERNAL_ERROR: &str = "internal-error";
const ENGINE_ERROR_KINDS: [&str; 2] = [RESOURCE_UNAVAILABLE, INTERNAL_ERROR];

impl WorkerMetrics {
    fn new() -> WorkerMetrics {
        let metrics = WorkerMetrics {
            registry: Registry::new(),
            active: AtomicBool::new(false),
            tasks_running: IntGauge::new(
                "taskfold_worker_tasks_running",
                "Runs this worker is running (claimed and not yet reported).",
            )
            .expect("a valid metric"),
            payload_start_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "taskfold_worker_payload_start_seconds",
                    "From claiming a run to starting its payload (validation, image, caches, \
                     connection).",
                )
                .buckets(metrics::SECONDS_BUCKETS.to_vec()),
            )
            .expect("a valid metric"),
            engine_errors: IntCounterVec::new(
                Opts::new(
                    "taskfold_worker_engine_errors_total",
                    "Runs ended by the engine rather than the task, by engine and kind \
                     (resource-unavailable: an image or host not available; internal-error).",
                ),
                &["engine", "kind"],
            )
            .expect("a valid metric"),
        };
        for collector in [
            Box::new(metrics.tasks_running.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.payload_start_seconds.clone()),
            Box::new(metrics.engine_errors.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("each metric is registered once");
        }
        metrics
    }

    /// A worker with `engine` runs in this process: its series exist from now on, at zero,
    /// and a queue in the same process serves them too.
    pub fn activate(&self, engine: &str) {
        if !self.active.swap(true, Ordering::Relaxed) {
            metrics::serve_also(self.registry.clone());
        }
        for kind in ENGINE_ERROR_KINDS {
            self.engine_errors.with_label_values(&[engine, kind]);
        }
    }

    pub fn render(&self) -> String {
        metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_in_the_process_is_served_once_at_the_queues_metrics() {
        WORKER_METRICS.activate("docker");
        WORKER_METRICS.activate("docker");
        let text = metrics::METRICS.render();
        assert_eq!(
            text.matches("# TYPE taskfold_worker_tasks_running gauge")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains(
            "taskfold_worker_engine_errors_total{engine=\"docker\",kind=\"internal-error\"} 0"
        ));
        assert!(text.contains("taskfold_build_info{version="));
    }
}
