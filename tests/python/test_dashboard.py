"""The Grafana dashboard of docker/ (docker/grafana/dashboards/taskfold.json) against the real
binaries: every metric its PromQL queries is one that `taskfold serve` or `taskfold worker`
exposes, so a renamed or missing metric fails here instead of leaving an empty panel.

The dashboard's own shape is checked first (no process needed): schemaVersion 39, every panel
on the data source of uid `prometheus`, and a panel for each metric of the contract below.

Then a queue on the embedded log and a Docker worker (`--metrics-listen` on a port of its own,
image `taskfold-test/busybox:1` from TASKFOLD_TEST_IMAGE; nothing is pulled) run one task that
completes and one whose image reference the engine refuses (an engine error, answered at once
without a registry), because labelled families appear only once they have a sample. Both
`/metrics` are then read (Prometheus's text format, parsed by the official Python client) until
every metric the dashboard names is there, for at most `SCRAPE_TIMEOUT` seconds (gauges that
are updated periodically may need a moment). A PromQL name is checked exactly as queried:
`X_bucket`, `X_sum` and `X_count` must be samples of the histogram family `X`, counters are
queried with their `_total`, and a histogram's family name alone matches no sample.

The Kafka-only metrics (`KAFKA_ONLY`) are checked against a queue on the Kafka backend, on the
broker of TASKFOLD_TEST_KAFKA_BROKERS (tests/run.sh starts Apache Kafka and sets it), else on a
broker this module starts when Apache Kafka is installed (TASKFOLD_TEST_KAFKA_HOME), else that
test is skipped saying so.

What the server and worker processes logged during a test is printed when that test fails.
"""

import json
import os
import re
import uuid

import pytest
import requests
import taskcluster
from prometheus_client.parser import text_string_to_metric_families

import kafka_helpers
from conftest import REPO, free_port, wait_for
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, assert_run,
                            create_task, remove_containers, serve, wait_resolved, wait_until)

DASHBOARD = os.path.join(REPO, "docker", "grafana", "dashboards", "taskfold.json")
DATASOURCE_UID = "prometheus"
IMAGE = os.environ.get("TASKFOLD_TEST_IMAGE", "taskfold-test/busybox:1")
# An image reference Docker refuses outright (repository names are lowercase): the engine
# answers with an error at once, without looking for a registry.
REFUSED_IMAGE = "taskfold-test/Not-A-Valid-Reference:1"
# How long the metrics may take to show everything the dashboard names.
SCRAPE_TIMEOUT = 30

# The contract: each metric has at least one panel querying it, under this PromQL name.
PANEL_METRICS = [
    "taskfold_task_pending_seconds_bucket",  # queue wait p50/p95 per task queue
    "taskfold_runs_resolved_total",  # runs resolved by state and reason
    "taskfold_tasks_created_total",  # tasks created per second by task queue
    "taskfold_events_applied_total",  # events applied per second
    "taskfold_pending_tasks",  # pending tasks per task queue
    "taskfold_run_duration_seconds_bucket",  # run duration p50/p95
    "taskfold_claim_work_wait_seconds_bucket",  # claimWork waits p50/p95
    "taskfold_log_append_seconds_bucket",  # log append latency p50/p99
    "taskfold_log_append_batch_events_bucket",  # log append batch size
    "taskfold_http_request_duration_seconds_bucket",  # HTTP latency p95 by route
    "taskfold_kafka_consumer_lag",  # Kafka consumer lag
    "taskfold_worker_tasks_running",  # tasks running on workers
    "taskfold_worker_payload_start_seconds_bucket",  # payload start time p50/p95
    "taskfold_worker_engine_errors_total",  # engine errors per second
    "taskfold_replay_seconds",  # replay time
    "taskfold_build_info",  # build info
]
# Histograms and the quantiles the dashboard shows of each.
QUANTILES = {
    "taskfold_task_pending_seconds": (0.5, 0.95),
    "taskfold_run_duration_seconds": (0.5, 0.95),
    "taskfold_claim_work_wait_seconds": (0.5, 0.95),
    "taskfold_log_append_seconds": (0.5, 0.99),
    "taskfold_http_request_duration_seconds": (0.95,),
    "taskfold_worker_payload_start_seconds": (0.5, 0.95),
}
# Queries the dashboard must hold word for word.
EXACT_QUERIES = [
    "histogram_quantile(0.5, sum by (le, task_queue) "
    "(rate(taskfold_task_pending_seconds_bucket[5m])))",
    "histogram_quantile(0.95, sum by (le, task_queue) "
    "(rate(taskfold_task_pending_seconds_bucket[5m])))",
    "sum by (state, reason) (rate(taskfold_runs_resolved_total[5m]))",
    "rate(taskfold_worker_engine_errors_total[5m])",
]
# Registered only by a queue on the Kafka backend.
KAFKA_ONLY = {"taskfold_kafka_consumer_lag"}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_NAME = re.compile(r"\btaskfold_[A-Za-z0-9_]*")


# --- the dashboard ---------------------------------------------------------------------------


def load_dashboard():
    with open(DASHBOARD) as file:
        return json.load(file)


def all_panels(panels):
    """Every panel, including those inside rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def panel_queries(dashboard):
    """(panel title, PromQL) of every query of every panel."""
    for panel in all_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]


def variable_queries(dashboard):
    """The PromQL of the template variables (a string, or an object with `query`)."""
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query:
            yield query


def metric_names(expr):
    return set(METRIC_NAME.findall(expr))


def dashboard_metrics(dashboard):
    """PromQL name → titles of the panels (or `templating`) querying it."""
    used = {}
    for title, expr in panel_queries(dashboard):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(title)
    for expr in variable_queries(dashboard):
        for name in metric_names(expr):
            used.setdefault(name, set()).add("templating")
    return used


def family_of(name):
    """The family a PromQL name belongs to: a histogram's samples without their suffix."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_dashboard_has_its_panels():
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] == 39
    assert dashboard.get("uid"), "the dashboard needs a fixed uid for links"

    for panel in all_panels(dashboard["panels"]):
        if panel.get("type") == "row":
            continue
        title = panel.get("title")
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, title
        assert panel.get("targets"), f"panel {title!r} has no queries"
        for target in panel["targets"]:
            assert target.get("expr"), f"panel {title!r} has a query without expr"
            source = target.get("datasource", panel["datasource"])
            assert source.get("uid") == DATASOURCE_UID, title

    queries = [expr for _, expr in panel_queries(dashboard)]
    used = dashboard_metrics(dashboard)
    missing = [name for name in PANEL_METRICS if name not in used]
    assert not missing, f"no panel queries {missing}"
    for histogram, quantiles in QUANTILES.items():
        for quantile in quantiles:
            pattern = re.compile(rf"histogram_quantile\(\s*{re.escape(str(quantile))}\s*,"
                                 rf".*\b{histogram}_bucket\b")
            assert any(pattern.search(expr) for expr in queries), \
                f"no panel shows the {quantile} quantile of {histogram}"
    for query in EXACT_QUERIES:
        assert any(query in expr for expr in queries), f"no panel queries {query!r}"


# --- the exposition --------------------------------------------------------------------------


class Exposition:
    """One read of a `/metrics`: the samples' names and the families by name and type."""

    def __init__(self, text):
        self.samples = set()
        self.families = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                self.samples.add(sample.name)

    def has(self, name):
        return name in self.samples

    def describe(self, name):
        """What this exposition has of `name`'s family, when it is not `name` itself."""
        base = family_of(name)
        if base.endswith("_total"):
            base = base[: -len("_total")]
        kind = self.families.get(base) or self.families.get(family_of(name))
        return f"a {kind} family {base}" if kind else None


def read_metrics(url):
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text}"
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    return Exposition(response.text)


def read_until_present(sources, wanted, timeout=SCRAPE_TIMEOUT):
    """Reads every source (label → /metrics URL) until the union of their samples holds every
    name in `wanted`, or the timeout passes; the last reads."""
    latest = {}

    def complete():
        for label, url in sources.items():
            latest[label] = read_metrics(url)
        return all(any(exposition.has(name) for exposition in latest.values())
                   for name in wanted)

    wait_for(complete, timeout, interval=0.5)
    return latest


def absent(expositions, wanted, used):
    """One line for each name in `wanted` that no exposition has, saying who queries it and
    what (if anything) of its family was found instead."""
    lines = []
    for name in sorted(wanted):
        if any(exposition.has(name) for exposition in expositions.values()):
            continue
        found = [f"{label} has {description}" for label, exposition in expositions.items()
                 if (description := exposition.describe(name))]
        panels = ", ".join(sorted(used.get(name, ())))
        lines.append(f"  {name} (panels: {panels})"
                     + (f"; {'; '.join(found)}" if found else "; exposed by nobody"))
    return lines


def exposed_families(expositions):
    return "\n".join(f"  {label}: {sorted(exposition.families)}"
                     for label, exposition in expositions.items())


# --- processes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory):
    """A queue on the embedded log."""
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def metrics_worker(dashboard_server, tmp_path_factory):
    """A Docker worker serving its metrics on a port of its own; it is ready once they answer."""
    base = tmp_path_factory.mktemp("dashboard-worker")
    port = free_port()
    worker = WorkerProcess(dashboard_server, "docker", base / "data", base,
                           options=["--metrics-listen", f"127.0.0.1:{port}"])
    worker.metrics_url = f"http://127.0.0.1:{port}/metrics"
    worker.start()

    def answering():
        if not worker.alive():
            with open(worker.log_path) as log:
                raise AssertionError(f"the worker exited with {worker.process.returncode}:\n"
                                     + log.read())
        try:
            return requests.get(worker.metrics_url, timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        assert wait_until(answering), \
            f"the worker's metrics did not answer at {worker.metrics_url} within {TIMEOUT} s"
        yield worker
    finally:
        worker.stop()
        remove_containers(f"taskfold.worker={worker.label}", worker.label)


@pytest.fixture(scope="module")
def ran_tasks(dashboard_server, metrics_worker):
    """One task that completes and one the engine cannot start, through queue and worker."""
    queue = dashboard_server.queue()
    completes = create_task(queue, metrics_worker.task_queue_id,
                            payload={"image": IMAGE, "command": ["true"], "maxRunTime": 60})
    assert_run(wait_resolved(queue, completes), 0, "completed", "completed")
    refused = create_task(queue, metrics_worker.task_queue_id,
                          payload={"image": REFUSED_IMAGE, "command": ["true"],
                                   "maxRunTime": 60})
    status = wait_resolved(queue, refused)
    assert status["runs"][0]["state"] != "completed", status
    return completes, refused


@pytest.fixture(scope="module")
def kafka_brokers(tmp_path_factory):
    """The bootstrap address of a Kafka broker: TASKFOLD_TEST_KAFKA_BROKERS, else one of this
    module's own (as tests/run.sh starts one), else the test is skipped."""
    brokers = os.environ.get("TASKFOLD_TEST_KAFKA_BROKERS", "").strip()
    if brokers:
        yield brokers
        return
    missing = kafka_helpers.available()
    if missing:
        pytest.skip("no Kafka broker to check the Kafka-only metrics "
                    f"{sorted(KAFKA_ONLY)} against: TASKFOLD_TEST_KAFKA_BROKERS is not set and "
                    f"{missing}")
    broker = kafka_helpers.KafkaCluster(tmp_path_factory.mktemp("kafka"), nodes=1)
    try:
        yield broker.start().bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka_server(kafka_brokers, tmp_path_factory):
    """A queue on the Kafka backend, on a topic of its own."""
    config = f"""
[log]
backend = "kafka"

[log.kafka]
brokers = "{kafka_brokers}"
topic = "taskfold-dashboard-{uuid.uuid4().hex[:12]}"
""" + SHORT_CLAIM_WORK_CONFIG
    yield from serve(tmp_path_factory, config)


# --- the metrics behind the dashboard --------------------------------------------------------


def test_every_metric_the_dashboard_queries_is_exposed(dashboard_server, metrics_worker,
                                                       ran_tasks):
    used = dashboard_metrics(load_dashboard())
    assert used, "the dashboard queries no taskfold_ metric"
    wanted = set(used) - KAFKA_ONLY
    sources = {"the queue": f"{dashboard_server.root_url}/metrics",
               "the worker": metrics_worker.metrics_url}
    expositions = read_until_present(sources, wanted)
    missing = absent(expositions, wanted, used)
    assert not missing, (
        "the dashboard queries metrics that neither the queue (embedded log) nor the worker "
        "exposes:\n" + "\n".join(missing) + "\nfamilies exposed:\n" + exposed_families(expositions))


def test_kafka_metrics_are_exposed_by_a_queue_on_kafka(kafka_server):
    used = dashboard_metrics(load_dashboard())
    wanted = KAFKA_ONLY & set(used)
    assert wanted, f"the dashboard no longer queries {sorted(KAFKA_ONLY)}; update KAFKA_ONLY"
    # A task's whole life, so that the log is appended to and read.
    queue = kafka_server.queue()
    task_queue_id = f"proj-dashboard/kafka-{uuid.uuid4().hex[:8]}"
    task_id = create_task(queue, task_queue_id)
    claimed = queue.claimWork(task_queue_id, {"workerGroup": "g", "workerId": "w", "tasks": 1})
    assert [run["status"]["taskId"] for run in claimed["tasks"]] == [task_id], claimed
    run = claimed["tasks"][0]
    worker = taskcluster.Queue({"rootUrl": kafka_server.root_url,
                                "credentials": run["credentials"], "maxRetries": 0})
    worker.reportCompleted(task_id, str(run["runId"]))

    expositions = read_until_present({"the queue on Kafka": f"{kafka_server.root_url}/metrics"},
                                     wanted)
    missing = absent(expositions, wanted, used)
    assert not missing, (
        "the dashboard queries Kafka metrics that a queue on Kafka does not expose:\n"
        + "\n".join(missing) + "\nfamilies exposed:\n" + exposed_families(expositions))
