"""Several `taskfold serve` nodes over one topic of a real Apache Kafka broker.

Each node joins with `--node-id` and `--advertise`; the Kafka consumer group gives every
partition to one node, and any node answers any call, forwarding to the owner. The official
Python client drives the nodes: lifecycles spread over all of them, a node killed with
`kill -9` (its partitions served again elsewhere, nothing acknowledged lost, no run claimed
twice), a node paused past the group's session timeout and woken up (nothing it appends lands),
a node leaving with SIGTERM and one joining.

Needs `TASKFOLD_TEST_KAFKA_BROKERS` (tests/run.sh starts a broker); skipped without it.
`TASKFOLD_TEST_FAILOVER_ROUNDS` sets the rounds of the kill test (default 3).
"""

import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import slugid
import taskcluster

from conftest import (ROOT_CLIENT, ROOT_TOKEN, Server, failure, free_port, new_task_id,
                      task_definition, wait_for)
from test_kafka_exchanges import read_all

BROKERS = os.environ.get("TASKFOLD_TEST_KAFKA_BROKERS", "").strip()
pytestmark = pytest.mark.skipif(not BROKERS, reason="TASKFOLD_TEST_KAFKA_BROKERS is not set")

SECRET = "a-cluster-secret-for-the-tests"
# A node the group does not hear from for 6 s (the broker's least) loses its partitions.
CONFIG = """
[cluster]
session_timeout_ms = 6000
heartbeat_ms = 500

[log]
partitions = 6
"""


class Node(Server):
    """A `taskfold serve --node-id` of the cluster on `topic`, on a port it keeps."""

    def __init__(self, base, node_id, topic, extra_config=""):
        data_dir = base / node_id
        data_dir.mkdir()
        config = base / f"{node_id}.toml"
        config.write_text(CONFIG + extra_config)
        super().__init__(data_dir, config)
        self.node_id = node_id
        self.topic = topic
        self.fixed_port = free_port()
        self.env = {
            "TASKFOLD__LOG__BACKEND": "kafka",
            "TASKFOLD__KAFKA__BROKERS": BROKERS,
            "TASKFOLD__LOG__KAFKA__TOPIC": topic,
            "TASKFOLD__CLUSTER__SECRET": SECRET,
            "TASKFOLD__EVENTS__KAFKA_TOPIC_PREFIX": f"{topic}.",
        }
        self.log_dir = str(base / f"{node_id}-logs")
        os.makedirs(self.log_dir, exist_ok=True)

    def start(self):
        url = f"http://127.0.0.1:{self.fixed_port}"
        self.args = ["--node-id", self.node_id, "--advertise", url]
        return super().start(port=self.fixed_port)

    def cluster(self):
        return requests.get(self.api("/__cluster__"), timeout=10).json()


def client(node):
    return taskcluster.Queue({"rootUrl": f"http://127.0.0.1:{node.fixed_port}",
                              "credentials": {"clientId": ROOT_CLIENT, "accessToken": ROOT_TOKEN},
                              "maxRetries": 5})


def s3_config():
    """The `[blobs]` of the s3 backend on the tests' S3 store, with a prefix of its own; `None`
    without one."""
    endpoint = os.environ.get("TASKFOLD_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    return f"""
[blobs]
backend = "s3"

[blobs.s3]
endpoint = "{endpoint}"
bucket = "{os.environ["TASKFOLD_TEST_S3_BUCKET"]}"
access_key_id = "{os.environ["TASKFOLD_TEST_S3_ACCESS_KEY_ID"]}"
secret_access_key = "{os.environ["TASKFOLD_TEST_S3_SECRET_ACCESS_KEY"]}"
prefix = "cluster-{uuid.uuid4().hex[:10]}/"
allow_http = true
"""


def start_cluster(tmp_path_factory, extra_config=""):
    base = tmp_path_factory.mktemp("cluster")
    topic = f"tf-cluster-{uuid.uuid4().hex[:10]}"
    nodes = [Node(base, f"node-{index}", topic, extra_config) for index in range(3)]
    for node in nodes:
        node.start()
    wait_until_served(nodes[0], {node.node_id for node in nodes})
    return nodes


def stop_cluster(nodes):
    for node in nodes:
        if node.process and node.process.poll() is None:
            try:
                node.process.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
        node.stop()


@pytest.fixture
def cluster(tmp_path_factory):
    nodes = start_cluster(tmp_path_factory)
    yield nodes
    stop_cluster(nodes)


@pytest.fixture(params=["files", "s3"])
def blob_cluster(request, tmp_path_factory):
    """A cluster whose blobs are on each node's disk, or in the S3 store."""
    if request.param == "s3":
        config = s3_config()
        if config is None:
            pytest.skip("TASKFOLD_TEST_S3_ENDPOINT is not set: no S3 server (tests/setup/s3.sh)")
    else:
        config = ""
    nodes = start_cluster(tmp_path_factory, config)
    yield nodes
    stop_cluster(nodes)


def wait_until_served(node, by, timeout=30):
    """Waits until every partition has an owner among the node ids `by`, all of them used;
    the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            view = node.cluster()
        except requests.RequestException:
            time.sleep(0.2)
            continue
        owners = [partition["owner"] for partition in view["partitions"]]
        if all(owner in by for owner in owners) and set(owners) == set(by):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"partitions not served by {by} within {timeout} s: {node.cluster()}")


def queue_id():
    return f"cluster/w{uuid.uuid4().hex[:12]}"


class Load:
    """Lifecycles (create → claimWork → reportCompleted) on randomly chosen live nodes, each
    step on another node, recording every acknowledged create and claim."""

    def __init__(self, nodes, queue, threads=3):
        self.nodes = nodes
        self.queue = queue
        self.live = set(range(len(nodes)))
        self.created = set()
        self.claims = []
        self.completed = set()
        self.empty_claims = 0
        # Calls that failed (a node killed or paused under them).
        self.failures = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def node(self):
        with self.lock:
            return self.nodes[random.choice(sorted(self.live))]

    def run(self):
        worker = f"w{uuid.uuid4().hex[:8]}"
        while not self.stopping.is_set():
            task_id = new_task_id()
            try:
                client(self.node()).createTask(task_id, task_definition(self.queue))
            except Exception:  # a node going away mid-call: not acknowledged
                self.failed()
                continue
            with self.lock:
                self.created.add(task_id)
            try:
                claimed = client(self.node()).claimWork(
                    self.queue, {"workerGroup": "load", "workerId": worker, "tasks": 1})["tasks"]
            except Exception:
                self.failed()
                continue
            if not claimed:
                with self.lock:
                    self.empty_claims += 1
                continue
            for run in claimed:
                with self.lock:
                    self.claims.append((run["status"]["taskId"], run["runId"]))
                try:
                    client(self.node()).reportCompleted(run["status"]["taskId"], run["runId"])
                    with self.lock:
                        self.completed.add(run["status"]["taskId"])
                except Exception:
                    self.failed()

    def failed(self):
        with self.lock:
            self.failures += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def check(self, reader):
        """Nothing acknowledged is lost, no run was claimed twice, and what was reported
        completed is completed."""
        assert len(self.claims) == len(set(self.claims)), "a run was claimed twice"
        queue = client(reader)
        for task_id in self.created:
            state = queue.status(task_id)["status"]["state"]
            if task_id in self.completed:
                assert state == "completed", (task_id, state)


def test_three_nodes_serve_every_call_of_any_task(cluster):
    a, b, c = cluster
    view = a.cluster()
    assert {node["nodeId"] for node in view["nodes"] if node["live"]} == {"node-0", "node-1", "node-2"}
    queue = queue_id()
    tasks = []
    for index in range(12):
        task_id = new_task_id()
        client(cluster[index % 3]).createTask(task_id, task_definition(queue))
        tasks.append(task_id)
    # Every task is readable through every node.
    for task_id in tasks:
        for node in cluster:
            assert client(node).status(task_id)["status"]["state"] == "pending"
    # Claimed through one node, reported through another, read through the third.
    for index in range(len(tasks)):
        claimed = client(cluster[(index + 1) % 3]).claimWork(
            queue, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"]
        assert len(claimed) == 1
        run = claimed[0]
        client(cluster[(index + 2) % 3]).reportCompleted(run["status"]["taskId"], run["runId"])
    for task_id in tasks:
        assert client(c).status(task_id)["status"]["state"] == "completed"
    assert client(b).pendingTasks(queue)["pendingTasks"] == 0
    # Metrics per node.
    metrics = requests.get(f"http://127.0.0.1:{a.fixed_port}/metrics", timeout=10).text
    assert "taskfold_partitions_owned" in metrics
    assert "taskfold_forwarded_calls_total" in metrics
    # Load through all three at once.
    with Load(cluster, queue_id()) as load:
        time.sleep(8)
    assert load.completed, "the load completed nothing"
    load.check(a)


def test_claim_work_on_one_node_wakes_for_work_created_on_another(cluster):
    a, b, _ = cluster
    queue = queue_id()
    outcome = {}

    def wait():
        started = time.monotonic()
        outcome["tasks"] = client(a).claimWork(
            queue, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"]
        outcome["seconds"] = time.monotonic() - started

    # Tasks whose partitions node-0 does not serve, so the work arrives elsewhere.
    waiting = threading.Thread(target=wait)
    waiting.start()
    time.sleep(1)
    task_id = new_task_id()
    client(b).createTask(task_id, task_definition(queue))
    waiting.join(timeout=30)
    assert [run["status"]["taskId"] for run in outcome["tasks"]] == [task_id]
    assert outcome["seconds"] < 10


def test_failover_after_kill_9(cluster):
    rounds = int(os.environ.get("TASKFOLD_TEST_FAILOVER_ROUNDS", "3"))
    queue = queue_id()
    times = []
    with Load(cluster, queue) as load:
        for round_ in range(rounds):
            victim = round_ % 3
            survivor = cluster[(victim + 1) % 3]
            time.sleep(2)
            with load.lock:
                load.live.discard(victim)
            cluster[victim].kill()
            killed = time.monotonic()
            others = {node.node_id for index, node in enumerate(cluster) if index != victim}
            wait_until_served(survivor, others, timeout=30)
            # The first claim of a task in a moved partition: create one and claim it.
            probe_queue = queue_id()
            task_id = new_task_id()
            client(survivor).createTask(task_id, task_definition(probe_queue))
            claimed = client(survivor).claimWork(
                probe_queue, {"workerGroup": "wg", "workerId": "probe", "tasks": 1})["tasks"]
            assert [run["status"]["taskId"] for run in claimed] == [task_id]
            times.append(time.monotonic() - killed)
            cluster[victim].start()
            with load.lock:
                load.live.add(victim)
            wait_until_served(survivor, {node.node_id for node in cluster}, timeout=30)
    print(f"failover seconds over {rounds} rounds: {sorted(times)}; "
          f"{len(load.completed)} lifecycles, {load.empty_claims} empty claims, "
          f"{load.failures} failed calls")
    assert max(times) < 15, times
    load.check(cluster[0])
    # Exchanges stay exactly once across the ownership changes: every completion is
    # published, none twice.
    prefix = f"{cluster[0].topic}."

    def published():
        return read_all(prefix, exchanges=["task-completed"])

    assert wait_for(lambda: load.completed <= {
        record.body["status"]["taskId"] for record in published()}, timeout=30)
    ids = [record.ce_id for record in published()]
    assert len(ids) == len(set(ids)), "an exchange message was published twice"


def test_dependencies_across_nodes(cluster):
    a, b, c = cluster
    queue, dependents_queue = queue_id(), queue_id()
    pairs = []
    for index in range(8):
        dependency, dependent = new_task_id(), new_task_id()
        client(cluster[index % 3]).createTask(dependency, task_definition(queue))
        client(cluster[(index + 1) % 3]).createTask(
            dependent, task_definition(dependents_queue, dependencies=[dependency]))
        pairs.append((dependency, dependent))
    for dependency, dependent in pairs:
        assert client(c).status(dependent)["status"]["state"] == "unscheduled"
    completed = set()
    for index in range(len(pairs)):
        claimed = client(cluster[index % 3]).claimWork(
            queue, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"]
        assert len(claimed) == 1
        task_id = claimed[0]["status"]["taskId"]
        client(cluster[(index + 2) % 3]).reportCompleted(task_id, claimed[0]["runId"])
        completed.add(task_id)
    assert completed == {dependency for dependency, _ in pairs}
    for _, dependent in pairs:
        assert wait_for(lambda: client(a).status(dependent)["status"]["state"] == "pending",
                        timeout=15), dependent


def test_a_paused_node_cannot_append_after_its_partitions_move(cluster):
    a, b, c = cluster
    queue = queue_id()
    with Load([a, b], queue, threads=2) as load:
        time.sleep(2)
        c.process.send_signal(signal.SIGSTOP)
        wait_until_served(a, {"node-0", "node-1"}, timeout=30)
        c.process.send_signal(signal.SIGCONT)
        # A client still sending the woken node requests: they are answered (forwarded to
        # the new owners, or by partitions it is given again) or fail, never double-claim.
        woken = client(c)
        created = []
        for _ in range(10):
            task_id = new_task_id()
            try:
                woken.createTask(task_id, task_definition(queue))
                created.append(task_id)
            except Exception:
                pass
        time.sleep(3)
    load.check(a)
    for task_id in created:
        assert client(a).status(task_id)["status"]["state"] in ("pending", "running", "completed")


def test_a_node_leaving_hands_over_and_a_node_joining_takes_partitions(cluster, tmp_path_factory):
    a, b, c = cluster
    queue = queue_id()
    with Load([a, b], queue, threads=2) as load:
        time.sleep(2)
        c.stop()
        took = wait_until_served(a, {"node-0", "node-1"}, timeout=15)
        time.sleep(1)
    # A graceful stop hands over at once rather than after the session timeout, and fails no
    # call in flight.
    assert took < 4, took
    assert load.failures == 0, f"{load.failures} calls failed while a node left"
    load.check(a)
    c.start()
    wait_until_served(a, {"node-0", "node-1", "node-2"}, timeout=30)
    task_id = new_task_id()
    client(c).createTask(task_id, task_definition(queue_id()))
    assert client(a).status(task_id)["status"]["state"] == "pending"


def test_node_calls_need_the_cluster_secret(cluster):
    a = cluster[0]
    url = f"http://127.0.0.1:{a.fixed_port}/__node__/v1/call"
    body = b"\x01not a call"
    assert requests.post(url, data=body, timeout=10).status_code == 401
    assert requests.post(url, data=body, headers={"authorization": "Bearer wrong"},
                         timeout=10).status_code == 401
    # With the secret, what is not a call is refused as such.
    answer = requests.post(url, data=body, headers={"authorization": f"Bearer {SECRET}"},
                           timeout=10)
    assert answer.status_code == 400
    assert answer.json()["code"] == "InputError"


def test_a_listener_on_any_node_hears_every_partition(cluster):
    from test_listeners import PREFIX, Listener, subject

    listener = Listener(cluster[0], [(PREFIX + "task-defined", "#")])
    try:
        created = set()
        queue = queue_id()
        for index in range(12):
            task_id = new_task_id()
            client(cluster[index % 3]).createTask(task_id, task_definition(queue))
            created.add(task_id)
        heard = set()

        def all_heard(frame):
            heard.add(subject(frame))
            return created <= heard

        listener.read_until(all_heard, timeout=30)
    finally:
        listener.close()


def test_a_group_spread_over_nodes_resolves_once_all_its_tasks_have(cluster):
    from test_listeners import PREFIX, Listener, subject

    group = new_task_id()
    listener = Listener(cluster[0], [(PREFIX + "task-group-resolved", f"primary.{group}.#")])
    try:
        queue = queue_id()
        tasks = [new_task_id() for _ in range(9)]
        for index, task_id in enumerate(tasks):
            client(cluster[index % 3]).createTask(
                task_id, task_definition(queue, taskGroupId=group))

        def finish(count):
            for index in range(count):
                claimed = client(cluster[index % 3]).claimWork(
                    queue, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"]
                assert len(claimed) == 1
                client(cluster[(index + 1) % 3]).reportCompleted(
                    claimed[0]["status"]["taskId"], claimed[0]["runId"])

        finish(len(tasks) - 1)
        # Every node but one may have seen all of its own tasks resolve: no resolution yet.
        with pytest.raises(AssertionError):
            listener.read(1, timeout=3)
        finish(1)
        [frame] = listener.read(1, timeout=20)
        assert subject(frame) == group
    finally:
        listener.close()


def test_artifacts_uploaded_through_one_node_download_through_another(blob_cluster):
    a, b, c = blob_cluster
    queue = queue_id()
    names = []
    for index in range(6):
        task_id = new_task_id()
        client(blob_cluster[index % 3]).createTask(task_id, task_definition(queue))
        [claimed] = client(a).claimWork(
            queue, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"]
        # The worker's task credentials, issued by one node, work on the others.
        worker = taskcluster.Queue({"rootUrl": f"http://127.0.0.1:{b.fixed_port}",
                                    "credentials": claimed["credentials"], "maxRetries": 0})
        name = f"public/build/{index}.txt"
        artifact = worker.createArtifact(
            claimed["status"]["taskId"], str(claimed["runId"]), name,
            {"storageType": "s3", "contentType": "text/plain",
             "expires": taskcluster.stringDate(taskcluster.fromNow("1 day"))})
        body = f"artifact {index} of {claimed['status']['taskId']}".encode()
        assert requests.put(artifact["putUrl"], data=body,
                            headers={"Content-Type": "text/plain"}).ok
        names.append((claimed["status"]["taskId"], claimed["runId"], name, body))
    for task_id, run_id, name, body in names:
        for node in (a, c):
            url = client(node).getArtifact(task_id, str(run_id), name)["url"]
            got = requests.get(url, timeout=10)
            assert got.status_code == 200, got.text
            assert got.content == body


def test_a_worker_quarantined_through_one_node_gets_no_work_through_another(tmp_path_factory):
    nodes = start_cluster(tmp_path_factory, "\n[api]\nclaim_work_timeout_seconds = 2\n")
    try:
        a, b, _ = nodes
        queue = queue_id()
        task_id = new_task_id()
        client(a).createTask(task_id, task_definition(queue))
        provisioner, worker_type = queue.split("/")
        # The worker is known to the queue once it asked for work.
        client(a).claimWork(queue, {"workerGroup": "wg", "workerId": "other", "tasks": 1})
        client(b).claimWork(queue + "x", {"workerGroup": "wg", "workerId": "bad", "tasks": 1})
        client(a).quarantineWorker(
            provisioner, worker_type + "x", "wg", "bad",
            {"quarantineUntil": taskcluster.stringDate(taskcluster.fromNow("1 hour"))})
        second = new_task_id()
        client(a).createTask(second, task_definition(queue + "x"))
        assert client(b).claimWork(
            queue + "x", {"workerGroup": "wg", "workerId": "bad", "tasks": 1})["tasks"] == []
        claimed = client(b).claimWork(
            queue + "x", {"workerGroup": "wg", "workerId": "good", "tasks": 1})["tasks"]
        assert [run["status"]["taskId"] for run in claimed] == [second]
    finally:
        stop_cluster(nodes)


def test_a_group_resolves_when_its_tasks_finish_after_their_partitions_moved(cluster):
    from test_listeners import PREFIX, Listener, subject

    a, b, c = cluster
    group = new_task_id()
    queue = queue_id()
    tasks = [new_task_id() for _ in range(12)]
    for task_id in tasks:
        client(c).createTask(task_id, task_definition(queue, taskGroupId=group))
    # The partitions node-2 served, with their unresolved tasks, move to the others.
    c.stop()
    wait_until_served(a, {"node-0", "node-1"}, timeout=15)
    listener = Listener(a, [(PREFIX + "task-group-resolved", f"primary.{group}.#")])
    try:
        def finish(count):
            for index in range(count):
                node = cluster[index % 2]
                claimed = client(node).claimWork(
                    queue, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"]
                assert len(claimed) == 1
                client(node).reportCompleted(claimed[0]["status"]["taskId"], claimed[0]["runId"])

        # Each node counts the moved tasks with its own: none resolves the group early...
        finish(len(tasks) - 1)
        with pytest.raises(AssertionError):
            listener.read(1, timeout=3)
        # ...and the last one resolves it.
        finish(1)
        [frame] = listener.read(1, timeout=20)
        assert subject(frame) == group
    finally:
        listener.close()


def test_workers_and_task_queues_are_listed_whichever_node_they_called(cluster):
    queue = queue_id()
    provisioner, worker_type = queue.split("/")
    for index, node in enumerate(cluster):
        client(node).createTask(new_task_id(), task_definition(queue))
    for index, node in enumerate(cluster):
        claimed = client(node).claimWork(
            queue, {"workerGroup": "wg", "workerId": f"w{index}", "tasks": 1})["tasks"]
        assert len(claimed) == 1
    for node in cluster:
        queue_client = client(node)
        workers = queue_client.listWorkers(provisioner, worker_type)["workers"]
        assert [worker["workerId"] for worker in workers] == ["w0", "w1", "w2"]
        # Pages merge across nodes in order.
        first = queue_client.listWorkers(provisioner, worker_type, query={"limit": 2})
        assert [worker["workerId"] for worker in first["workers"]] == ["w0", "w1"]
        rest = queue_client.listWorkers(provisioner, worker_type, query={
            "limit": 2, "continuationToken": first["continuationToken"]})
        assert [worker["workerId"] for worker in rest["workers"]] == ["w2"]
        assert "continuationToken" not in rest
        assert queue_client.getTaskQueue(queue)["taskQueueId"] == queue
        queues = [entry["taskQueueId"] for entry in queue_client.listTaskQueues()["taskQueues"]]
        assert queues.count(queue) == 1
        types = queue_client.listWorkerTypes(provisioner)["workerTypes"]
        assert [entry["workerType"] for entry in types].count(worker_type) == 1
        provisioners = queue_client.listProvisioners()["provisioners"]
        assert [entry["provisionerId"] for entry in provisioners].count(provisioner) == 1


def test_a_session_timeout_the_brokers_refuse_stops_the_node_at_start(tmp_path):
    topic = f"tf-cluster-{uuid.uuid4().hex[:10]}"
    # Under the brokers' `group.min.session.timeout.ms` (6 s).
    node = Node(tmp_path, "node-0", topic, "")
    Path(node.config).write_text(CONFIG.replace("session_timeout_ms = 6000",
                                                "session_timeout_ms = 1000"))
    with pytest.raises(RuntimeError) as refused:
        node.start()
    assert "group.min.session.timeout.ms" in str(refused.value)
    assert node.process.returncode != 0


def test_auth_secrets_and_the_index_are_shared_by_every_node(cluster):
    """A client or role made through one node authenticates on every node at once, a secret
    set through one is read through another, an index entry made through one is found and
    listed through every one, and a node started later loads them all."""
    def service(node, name, credentials=None):
        return getattr(taskcluster, name)({
            "rootUrl": f"http://127.0.0.1:{node.fixed_port}", "maxRetries": 5,
            "credentials": credentials or {"clientId": ROOT_CLIENT, "accessToken": ROOT_TOKEN}})

    expires = taskcluster.stringDate(taskcluster.fromNow("1 hour"))
    made = service(cluster[0], "Auth").createClient("cluster/reader", {
        "expires": expires, "description": "d", "scopes": ["assume:cluster-reader"]})
    service(cluster[1], "Auth").createRole("cluster-reader", {
        "description": "r", "scopes": ["secrets:get:shared/*", "index:find-task:shared.*"]})
    reader = {"clientId": "cluster/reader", "accessToken": made["accessToken"]}
    names = [f"shared/{i}" for i in range(12)]
    for i, name in enumerate(names):
        service(cluster[i % 3], "Secrets").set(name, {"secret": {"i": i}, "expires": expires})
        service(cluster[(i + 1) % 3], "Index").insertTask(f"shared.n{i:02d}.task", {
            "taskId": slugid.nice(), "rank": 0, "data": {}, "expires": expires})
    for node in cluster:
        secrets = service(node, "Secrets", reader)
        assert [secrets.get(name)["secret"]["i"] for name in names] == list(range(12))
        index = service(node, "Index", reader)
        assert index.findTask("shared.n03.task")["namespace"] == "shared.n03.task"
        listed = service(node, "Index").listNamespaces("shared")["namespaces"]
        assert [ns["name"] for ns in listed] == [f"n{i:02d}" for i in range(12)]
        assert sorted(service(node, "Secrets").list()["secrets"]) == sorted(names)
    service(cluster[2], "Auth").disableClient("cluster/reader")
    for node in cluster:
        assert failure(service(node, "Secrets", reader).get, names[0]).status_code == 401
    # A node that starts again loads what the others made.
    cluster[1].stop()
    cluster[1].start()
    wait_until_served(cluster[0], {node.node_id for node in cluster})
    assert service(cluster[1], "Auth").client("cluster/reader")["disabled"] is True
    assert "secrets:get:shared/*" in service(cluster[1], "Auth").role("cluster-reader")[
        "expandedScopes"]
