"""Taskcluster's queue exchange messages on an AMQP broker (Pulse): with `[events] amqp_url`,
`taskfold serve` publishes every exchange message to the durable topic exchange
`exchange/taskcluster-queue/v1/<exchange>` of the broker, persistent JSON with the task's routes
as CC keys, on a confirm channel, resuming from a cursor per partition.

Two consumers of Taskcluster's world listen the way their documentation says: a Node program
(tests/node/pulse.mjs) with `consume()` of npm `taskcluster-lib-pulse` and bindings from the
official client's `QueueEvents`, and kombu (as Treeherder consumes Pulse). Each binds
`task-completed` for tasks by taskId and by a CC route, and each must get exactly one message
per completion, with Taskcluster's body, routing key and routes, across a restart of Taskfold and
a restart of the broker.

The broker is a RabbitMQ of the test's own (tests/setup/rabbitmq.sh, Debian's rabbitmq-server,
which tests/run.sh installs); without rabbitmq-server every test here is skipped.
"""

import collections
import glob
import json
import os
import queue as queues
import subprocess
import threading
import time
import uuid

import pytest
import requests

from conftest import (REPO, ROOT_CLIENT, ROOT_TOKEN, claim, make_server, new_task_id,
                      task_definition, wait_for, watch_logs)

kombu = pytest.importorskip("kombu", reason="kombu is not installed (tests/run.sh installs it)")
import kombu.mixins  # noqa: E402 - once kombu is known to be there

SCRIPT = os.path.join(REPO, "tests", "setup", "rabbitmq.sh")
NODE_LISTENER = os.path.join(REPO, "tests", "node", "pulse.mjs")
pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server"),
    reason="no RabbitMQ: Debian's rabbitmq-server is not installed (tests/run.sh installs it)")

EXCHANGE = "exchange/taskcluster-queue/v1/task-completed"
EXCHANGES = ["task-defined", "task-pending", "task-running", "artifact-created",
             "task-completed", "task-failed", "task-exception", "task-group-resolved",
             "task-group-sealed", "task-priority-changed", "task-group-priority-changed"]
# How long a message may take from the completion to a consumer, a reconnection included.
DELIVERY_TIMEOUT = 60
# How long to wait for messages that should not come.
QUIET = 2


class Broker:
    """A private RabbitMQ under `directory`, stopped and started on the same port and data."""

    def __init__(self, directory):
        self.directory = str(directory)
        self.url = None

    def start(self):
        done = subprocess.run(["bash", SCRIPT, "start", self.directory], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        self.url = done.stdout.strip().splitlines()[-1]
        return self

    def stop(self):
        done = subprocess.run(["bash", SCRIPT, "stop", self.directory], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("rabbitmq")).start()
    watch_logs(os.path.join(glob.escape(broker.directory), "log", "*.log"))
    yield broker
    broker.stop()


class KombuListener:
    """kombu's ConsumerMixin (which reconnects on its own) on a durable queue bound to
    `bindings` (exchange, routing key pattern); every message lands in `messages` with the
    fields a Taskcluster listener gets."""

    def __init__(self, url, queue_name, bindings):
        self.queue = kombu.Queue(
            queue_name, durable=True, auto_delete=False,
            bindings=[kombu.binding(kombu.Exchange(exchange, type="topic", durable=True),
                                    routing_key=key)
                      for exchange, key in bindings])
        self.url = url
        self.messages = queues.Queue()
        self.ready = threading.Event()
        listener = self

        class Consumer(kombu.mixins.ConsumerMixin):
            def __init__(self, connection):
                self.connection = connection

            def get_consumers(self, consumer_class, channel):
                return [consumer_class(queues=[listener.queue], callbacks=[listener.on_message],
                                       accept=["json"])]

            def on_consume_ready(self, connection, channel, consumers, **kwargs):
                listener.ready.set()

        self.connection = kombu.Connection(url, heartbeat=0)
        self.consumer = Consumer(self.connection)
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)

    def start(self):
        self.thread.start()
        assert self.ready.wait(30), "kombu did not start consuming"
        return self

    def on_message(self, body, message):
        cc = (message.headers or {}).get("CC", [])
        self.messages.put({
            "exchange": message.delivery_info["exchange"],
            "routingKey": message.delivery_info["routing_key"],
            "routes": [key[len("route."):] for key in cc if key.startswith("route.")],
            "payload": body,
            "properties": {name: message.properties.get(name)
                           for name in ("content_type", "content_encoding", "delivery_mode")},
            "id": message.properties.get("message_id"),
        })
        message.ack()

    def stop(self):
        self.consumer.should_stop = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.connection.release()


class NodeListener:
    """tests/node/pulse.mjs, whose stdout lines land in `messages`; it runs from `start()`."""

    def __init__(self, server, broker, queue_name, task_ids, route):
        self.server, self.broker = server, broker
        self.queue_name, self.task_ids, self.route = queue_name, task_ids, route
        self.process = None
        self.messages = queues.Queue()
        self.ready = threading.Event()
        self.errors = []

    def start(self):
        modules = os.environ.get("TASKFOLD_NODE_MODULES")
        assert modules and os.path.isdir(os.path.join(modules, "taskcluster-lib-pulse")), \
            "TASKFOLD_NODE_MODULES must name a node_modules with taskcluster-lib-pulse " \
            "(tests/run.sh)"
        env = dict(os.environ, TASKCLUSTER_ROOT_URL=self.server.root_url,
                   TASKCLUSTER_CLIENT_ID=ROOT_CLIENT, TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN,
                   TASKFOLD_AMQP_URL=self.broker.url,
                   TASKFOLD_PULSE_TASK_IDS=",".join(self.task_ids),
                   TASKFOLD_PULSE_ROUTE=self.route, TASKFOLD_PULSE_QUEUE=self.queue_name)
        self.process = subprocess.Popen(["node", NODE_LISTENER], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        threading.Thread(target=self.read, daemon=True).start()
        threading.Thread(target=self.read_errors, daemon=True).start()
        ready = self.ready.wait(60)
        assert ready, f"the Node listener did not bind: {''.join(self.errors)}"
        return self

    def read(self):
        for line in self.process.stdout:
            if line.strip() == "ready":
                self.ready.set()
            elif line.strip():
                self.messages.put(json.loads(line))

    def read_errors(self):
        for line in self.process.stderr:
            self.errors.append(line)

    def stop(self):
        if self.process is None:
            return
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def collect(listener, counts, until, timeout=DELIVERY_TIMEOUT):
    """Takes `listener`'s messages into `counts` (by taskId) until `until(counts)` holds, then a
    little longer, so that copies that should not come have the chance to; returns them."""
    received = []
    deadline = time.monotonic() + timeout
    settled = None
    while time.monotonic() < (settled or deadline):
        try:
            message = listener.messages.get(timeout=0.1)
        except queues.Empty:
            if settled is None and until(counts):
                settled = time.monotonic() + QUIET
            continue
        counts[message["payload"]["status"]["taskId"]] += 1
        received.append(message)
    return received


def complete(queue, task_queue_id, task_id, routes):
    queue.createTask(task_id, task_definition(task_queue_id, routes=routes))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    queue.reportCompleted(task_id, "0")


def check(message, task_id, routes):
    """A task-completed message as Taskcluster sends it."""
    assert message["exchange"] == EXCHANGE
    status = message["payload"]["status"]
    assert status["taskId"] == task_id
    assert status["state"] == "completed"
    assert status["runs"][0]["state"] == "completed"
    assert message["payload"]["runId"] == 0
    words = message["routingKey"].split(".")
    assert words[:3] == ["primary", task_id, "0"]
    assert words[3:5] == ["wg", "w1"]
    assert words[-1] == "_"
    assert message["routes"] == routes


PULSE_CONFIG = """
[queue]
snapshot_every_events = 25

[events]
amqp_url = "{url}"
"""


def test_pulse_consumers_get_each_completion_once_across_restarts(tmp_path_factory, broker,
                                                                   task_queue_id):
    server = make_server(tmp_path_factory, PULSE_CONFIG.format(url=broker.url))
    watch_logs(os.path.join(glob.escape(server.log_dir), "server-*.log"))
    route = f"index.taskfold-tests.pulse.{uuid.uuid4().hex[:12]}"
    by_id = [new_task_id() for _ in range(3)]
    by_route = new_task_id()
    # The first task is bound both ways: a message still reaches a queue once.
    routes = {by_id[0]: [route, "tc-treeherder.v2.x"], by_id[1]: [], by_id[2]: [],
              by_route: [route]}
    node = NodeListener(server, broker, f"node-{uuid.uuid4().hex[:8]}", by_id, route)
    keys = [f"primary.{task_id}.#" for task_id in by_id] + [f"route.{route}"]
    python = KombuListener(broker.url, f"queue/taskfold-tests/kombu-{uuid.uuid4().hex[:8]}",
                           [(EXCHANGE, key) for key in keys])
    listeners = {"node": node, "kombu": python}
    counts = {name: collections.Counter() for name in listeners}
    received = {name: [] for name in listeners}

    def expect(task_ids):
        for name, listener in listeners.items():
            received[name] += collect(listener, counts[name],
                                      lambda seen: all(seen[task_id] for task_id in task_ids))
            assert counts[name] == collections.Counter(task_ids), \
                f"{name}: {dict(counts[name])}; node stderr: {''.join(node.errors)}"

    try:
        server.start()
        node.start()
        python.start()
        queue = server.queue()
        complete(queue, task_queue_id, by_id[0], routes[by_id[0]])
        expect([by_id[0]])

        # Taskfold stops and starts between two completions.
        server.stop()
        server.start()
        queue = server.queue()
        complete(queue, task_queue_id, by_route, routes[by_route])
        expect([by_id[0], by_route])

        # The broker goes away while a task completes, and comes back.
        broker.stop()
        complete(queue, task_queue_id, by_id[1], routes[by_id[1]])
        broker.start()
        expect([by_id[0], by_route, by_id[1]])

        # And once everyone is connected again, publishing goes on.
        complete(queue, task_queue_id, by_id[2], routes[by_id[2]])
        expect([by_id[0], by_route, by_id[1], by_id[2]])

        for name in listeners:
            for message in received[name]:
                task_id = message["payload"]["status"]["taskId"]
                check(message, task_id, routes[task_id])
        for message in received["kombu"]:
            assert message["properties"] == {"content_type": "application/json",
                                              "content_encoding": "utf-8", "delivery_mode": 2}
        metrics = server_metrics(server)
        assert metrics["taskfold_amqp_reconnects_total"] >= 1
        assert metrics["taskfold_amqp_messages_published_total"] >= \
            metrics["taskfold_amqp_confirms_total"] > 0
    finally:
        node.stop()
        python.stop()
        server.stop()


def server_metrics(server):
    """The sums of the server's AMQP metrics, by name (labels added up)."""
    text = requests.get(f"{server.root_url}/metrics", timeout=10).text
    sums = collections.Counter()
    for line in text.splitlines():
        if line.startswith("taskfold_amqp_"):
            name, value = line.rsplit(" ", 1)
            sums[name.split("{")[0]] += float(value)
    return sums


def test_every_exchange_is_a_durable_topic_exchange_once_taskfold_starts(tmp_path_factory,
                                                                        broker):
    server = make_server(tmp_path_factory, PULSE_CONFIG.format(url=broker.url))
    watch_logs(os.path.join(glob.escape(server.log_dir), "server-*.log"))
    server.start()
    try:
        with kombu.Connection(broker.url) as connection:

            def declared(name):
                # A failed declaration closes its channel: one channel per try.
                with connection.channel() as channel:
                    try:
                        channel.exchange_declare(name, "topic", passive=True)
                    except kombu.exceptions.OperationalError:
                        raise
                    except Exception:  # noqa: BLE001 - NOT_FOUND, the exchange is not there
                        return False
                # Declaring it again as durable topic succeeds only if it is one.
                with connection.channel() as channel:
                    channel.exchange_declare(name, "topic", durable=True, auto_delete=False)
                return True

            for exchange in EXCHANGES:
                name = f"exchange/taskcluster-queue/v1/{exchange}"
                assert wait_for(lambda: declared(name), timeout=30), name
    finally:
        server.stop()


def test_the_broker_gets_what_the_kafka_topics_get_across_a_restart(tmp_path_factory, broker,
                                                                    task_queue_id):
    """With the Kafka backend, both publishers side by side: the broker gets every message the
    exchange topics hold, with the same ids (`ce_id` there, the message id here), once."""
    if not os.environ.get("TASKFOLD_TEST_KAFKA_BROKERS", "").strip():
        pytest.skip("no Kafka broker: TASKFOLD_TEST_KAFKA_BROKERS is not set (tests/run.sh "
                    "starts Apache Kafka and sets it)")
    pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed")
    from test_kafka_exchanges import env_configured, kafka_server, read_all, unique

    prefix = unique("pulse") + "."
    server = kafka_server(tmp_path_factory, PULSE_CONFIG.format(url=broker.url),
                          env_configured(prefix, unique("log")))
    listener = KombuListener(
        broker.url, f"queue/taskfold-tests/all-{uuid.uuid4().hex[:8]}",
        [(f"exchange/taskcluster-queue/v1/{exchange}", "#") for exchange in EXCHANGES])
    try:
        server.start()
        listener.start()
        for _ in range(2):
            complete(server.queue(), task_queue_id, new_task_id(), [])
        server.stop()
        server.start()
        for _ in range(2):
            complete(server.queue(), task_queue_id, new_task_id(), [])
        # At least defined, pending, running and completed per task (the groups' follow).
        expected = 4 * 4
        ids = collections.Counter()

        def heard():
            while True:
                try:
                    ids[listener.messages.get_nowait()["id"]] += 1
                except queues.Empty:
                    return sum(ids.values()) >= expected

        assert wait_for(heard, timeout=DELIVERY_TIMEOUT), dict(ids)
        time.sleep(QUIET)
        heard()
        on_kafka = collections.Counter("-".join(map(str, record.ce_id))
                                       for record in read_all(prefix))
        assert on_kafka == ids
        assert set(ids.values()) == {1}
    finally:
        listener.stop()
        server.stop()


def test_a_stop_while_the_broker_is_away_ends_and_loses_nothing(tmp_path_factory, broker,
                                                                 task_queue_id):
    server = make_server(tmp_path_factory, PULSE_CONFIG.format(url=broker.url))
    watch_logs(os.path.join(glob.escape(server.log_dir), "server-*.log"))
    listener = KombuListener(broker.url, f"queue/taskfold-tests/away-{uuid.uuid4().hex[:8]}",
                             [(EXCHANGE, "#")])
    try:
        server.start()
        listener.start()
        task_id = new_task_id()
        broker.stop()
        complete(server.queue(), task_queue_id, task_id, [])
        # SIGTERM ends the server though its messages cannot reach the broker.
        server.process.terminate()
        server.process.wait(timeout=30)
        broker.start()
        server.start()
        counts = collections.Counter()
        collect(listener, counts, lambda seen: seen[task_id])
        assert counts == {task_id: 1}
    finally:
        listener.stop()
        server.stop()
