"""The Kafka backend losing a broker: a cluster of three Apache Kafka nodes (kafka_helpers), a
log topic of replication factor 3 and `min.insync.replicas` 2, and `taskfold serve` on it under
load from the official client (threads that create tasks, claim them and report them
completed). One node is killed with `kill -9` mid-load.

Requests in flight around the kill may fail or be retried; what the server acknowledged must
never be lost. So every task whose createTask answered is then found, and every task whose
reportCompleted answered is found completed: through the same server, and through a new server
on an empty data directory, which knows only what it rebuilds from the topic.

Skipped without Apache Kafka installed (TASKFOLD_TEST_KAFKA_HOME; tests/run.sh sets it).
"""

import glob
import threading
import time
import uuid

import pytest
import taskcluster

import kafka_helpers
from conftest import CONFIG, Server, claim, new_task_id, task_definition, watch_logs

pytestmark = pytest.mark.skipif(kafka_helpers.available() is not None,
                                reason=f"no Apache Kafka: {kafka_helpers.available()}")

# How long the load runs before the kill, and after it.
LOAD_BEFORE_KILL = 6
LOAD_AFTER_KILL = 14
THREADS = 4

SERVER_CONFIG = """
[log]
backend = "kafka"

[log.kafka]
brokers = "{brokers}"
topic = "{topic}"
replication_factor = 3
min_insync_replicas = 2

[events]
kafka_topic_prefix = "{topic}."

[api]
claim_work_timeout_seconds = 1
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = kafka_helpers.KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"), nodes=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def new_server(tmp_path_factory, config):
    """A server (not started) on a fresh data directory, its log printed after each test."""
    base = tmp_path_factory.mktemp("taskfold-brokers")
    config_path = base / "taskfold.toml"
    config_path.write_text(config + CONFIG)
    (base / "data").mkdir()
    server = Server(base / "data", config_path)
    watch_logs(str(glob.escape(str(base)) + "/server-*.log"))
    return server


class Load:
    """Threads that each create a task, claim it and report it completed, over and over,
    remembering which calls the server acknowledged. Failures are counted, not raised: a
    request in flight when a broker dies may fail."""

    def __init__(self, server):
        self.server = server
        self.created = set()
        self.completed = set()
        self.failures = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self, index):
        # Retries are the client's own (with its backoff); an acknowledged retry counts.
        queue = self.server.queue(maxRetries=2)
        task_queue_id = f"proj-brokers/t{index}{uuid.uuid4().hex[:8]}"
        while not self.stopping.is_set():
            task_id = new_task_id()
            if not self.call(queue.createTask, task_id, task_definition(task_queue_id)):
                continue
            with self.lock:
                self.created.add(task_id)
            claimed = self.call(claim, queue, task_queue_id, f"w{index}")
            if not claimed:
                continue
            for run in claimed:
                claimed_id = run["status"]["taskId"]
                worker = taskcluster.Queue({"rootUrl": self.server.root_url,
                                            "credentials": run["credentials"], "maxRetries": 2})
                if self.call(worker.reportCompleted, claimed_id, str(run["runId"])):
                    with self.lock:
                        self.completed.add(claimed_id)

    def call(self, method, *args):
        """What `method(*args)` answered (an empty claim is `[]`), or None when it failed."""
        try:
            return method(*args)
        except (taskcluster.exceptions.TaskclusterRestFailure,
                taskcluster.exceptions.TaskclusterConnectionError) as error:
            with self.lock:
                self.failures.append(f"{getattr(method, '__name__', method)}: {error}")
            return None


def missing_after_load(queue, created, completed):
    """Acknowledged tasks the queue does not have, and acknowledged completions it does not
    show, as readable lines."""
    lost = []
    # A task whose createTask failed in flight may still exist, and then be claimed and
    # completed; its acknowledged completion counts too.
    for task_id in sorted(created | completed):
        try:
            status = queue.status(task_id)["status"]
        except taskcluster.exceptions.TaskclusterRestFailure as error:
            lost.append(f"{task_id}: acknowledged, but its status fails: {error}")
            continue
        if task_id in completed and status["state"] != "completed":
            lost.append(f"{task_id}: reported completed but is {status['state']}: {status}")
    return lost


def test_acknowledged_tasks_survive_the_loss_of_a_broker(cluster, tmp_path_factory):
    topic = f"tf-brokers-{uuid.uuid4().hex[:10]}"
    config = SERVER_CONFIG.format(brokers=cluster.bootstrap, topic=topic)
    server = new_server(tmp_path_factory, config).start()
    rebuilt = new_server(tmp_path_factory, config)
    try:
        load = Load(server)
        threads = [threading.Thread(target=load.run, args=(index,), daemon=True)
                   for index in range(THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_BEFORE_KILL)
        with load.lock:
            before_kill = len(load.completed)
        # Node 1 is the first of the bootstrap list; any of the three would do.
        cluster.kill(1)
        time.sleep(LOAD_AFTER_KILL)
        load.stopping.set()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a load thread hung"

        with load.lock:
            created, completed = set(load.created), set(load.completed)
        assert before_kill > 0, f"nothing completed before the kill: {load.failures[:5]}"
        assert len(completed) > before_kill, (
            f"nothing completed after a broker was lost ({before_kill} before); failures: "
            f"{load.failures[-5:]}\n" + cluster.logs())

        assert server.process.poll() is None, \
            f"the server exited with {server.process.returncode} (its log follows the test)"
        # Retries with the client's backoff: only an answer may count as a loss.
        lost = missing_after_load(server.queue(maxRetries=5), created, completed)
        assert not lost, f"{len(lost)} acknowledged calls lost (same server):\n" \
            + "\n".join(lost[:10])
        server.stop()

        # A server that has only the topic (two of its three replicas left) to go by.
        rebuilt.start()
        lost = missing_after_load(rebuilt.queue(maxRetries=5), created, completed)
        assert not lost, f"{len(lost)} acknowledged calls lost (rebuilt from the topic):\n" \
            + "\n".join(lost[:10])
        print(f"{len(created)} created and {len(completed)} completed ({before_kill} before the "
              f"kill), {len(load.failures)} failed calls")
    finally:
        server.stop()
        if rebuilt.process:
            rebuilt.stop()
