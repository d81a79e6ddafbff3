"""Taskcluster's queue exchange messages on Kafka: with the Kafka backend, `taskfold serve`
publishes every exchange message to the topic `<[events] kafka_topic_prefix><exchange>` (one
topic per exchange, `[log] partitions` partitions each, a message derived from log partition p
in partition p), key = the taskId (the taskGroupId for task-group-* exchanges), value = the
JSON body, headers = the routing key, one `taskcluster-cc` per route and CloudEvents' binary
mode `ce_*` attributes; exactly once, across restarts and `kill -9` too.

The topics are read back with the official `confluent_kafka` consumer (every partition
assigned from its start and read up to the high watermark `get_watermark_offsets` reports) and
with `taskfold listen --kafka` (the Rust rdkafka consumer). Every record read is checked
against schemas/asyncapi.yaml (exchange_schemas.validate and validate_headers).

The broker is TASKFOLD_TEST_KAFKA_BROKERS (tests/run.sh starts Apache Kafka and sets it);
without it every test here is skipped. Each server gets a log topic and a topic prefix of its own, so
tests sharing the broker never read each other's messages; only the configuration test that
checks the default topic names uses the default prefix, and it looks only at its own tasks.
"""

import collections
import datetime
import glob
import json
import os
import re
import subprocess
import threading
import time
import uuid

import pytest
import taskcluster

import exchange_schemas
from conftest import (BINARY, CONFIG, Server, claim, date_in, new_task_id, task_definition,
                      wait_for, watch_logs)

confluent_kafka = pytest.importorskip(
    "confluent_kafka", reason="confluent-kafka is not installed (tests/run.sh installs it)")

BROKERS = os.environ.get("TASKFOLD_TEST_KAFKA_BROKERS", "").strip()
pytestmark = pytest.mark.skipif(
    not BROKERS,
    reason="no Kafka broker: TASKFOLD_TEST_KAFKA_BROKERS is not set (tests/run.sh starts "
           "Apache Kafka and sets it to its bootstrap address)")

EXCHANGES = tuple(exchange_schemas.exchanges())
GROUP_EXCHANGES = exchange_schemas.GROUP_EXCHANGES
DEFAULT_PREFIX = "taskcluster-queue.v1."
DEFAULT_PARTITIONS = 4
CE_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
# How long the published messages may take to reach their topics.
PUBLISH_TIMEOUT = 30

# claimWork answers within 1 s, so load threads notice a stop quickly; frequent snapshots, so
# that a restart loads snapshots and replays (and re-derives messages of) the events after them.
QUICK_CONFIG = """
[queue]
snapshot_every_events = 25

[api]
claim_work_timeout_seconds = 1
"""


# --- servers on the Kafka backend ------------------------------------------------------------


class KafkaServer(Server):
    """conftest's Server with extra environment variables (`TASKFOLD__…`) for its process."""

    def __init__(self, data_dir, config, env):
        super().__init__(data_dir, config)
        self.env = dict(env)
        self.root_urls = []

    def start(self):
        saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        try:
            super().start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self.root_urls.append(self.root_url)
        return self


def unique(label):
    return f"tf-kx-{label}-{uuid.uuid4().hex[:10]}"


def kafka_server(tmp_path_factory, config="", env=None):
    """A server (not started) whose log is printed after each test; `config` goes into its
    file, `env` into its environment."""
    base = tmp_path_factory.mktemp("taskfold-kafka")
    config_path = base / "taskfold.toml"
    config_path.write_text(config + CONFIG)
    (base / "data").mkdir()
    server = KafkaServer(base / "data", config_path, env or {})
    watch_logs(os.path.join(glob.escape(server.log_dir), "server-*.log"))
    return server


def env_configured(prefix, log_topic):
    """The Kafka backend configured entirely through the environment."""
    return {
        "TASKFOLD__LOG__BACKEND": "kafka",
        "TASKFOLD__KAFKA__BROKERS": BROKERS,
        "TASKFOLD__LOG__KAFKA__TOPIC": log_topic,
        "TASKFOLD__EVENTS__KAFKA_TOPIC_PREFIX": prefix,
    }


# --- Kafka's partitioner ---------------------------------------------------------------------


def murmur2(data):
    """Kafka's murmur2 (the Java client's `Utils.murmur2`), as an unsigned 32-bit value."""
    mask, m = 0xFFFFFFFF, 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = data[whole:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


# Kafka's own UtilsTest.testMurmur2 expectations, so a wrong helper cannot pass silently.
assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
assert murmur2(b"abc") == 479470107


def partition_for(key, partitions):
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


# --- reading the topics with confluent-kafka ------------------------------------------------

Record = collections.namedtuple(
    "Record", "topic exchange partition offset key body routing_key cc headers ce_id")


def consumer():
    return confluent_kafka.Consumer({
        "bootstrap.servers": BROKERS,
        "group.id": unique("reader"),
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })


def topic_partitions(prefix, exchanges=EXCHANGES):
    """topic -> its partition count, for every exchange topic (all must exist)."""
    reader = consumer()
    try:
        metadata = reader.list_topics(timeout=10)
    finally:
        reader.close()
    found = {}
    for exchange in exchanges:
        topic = prefix + exchange
        assert topic in metadata.topics, \
            f"no topic {topic}; topics with the prefix: " \
            f"{sorted(t for t in metadata.topics if t.startswith(prefix))}"
        assert metadata.topics[topic].error is None, metadata.topics[topic].error
        found[topic] = len(metadata.topics[topic].partitions)
    return found


def watermarks(reader, topics):
    """(topic, partition) -> (low, high) for every partition of `topics` (topic -> count)."""
    return {(topic, partition): reader.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=10)
            for topic, count in topics.items() for partition in range(count)}


def message_count(prefix, exchanges=EXCHANGES):
    topics = topic_partitions(prefix, exchanges)
    reader = consumer()
    try:
        return sum(high - low for low, high in watermarks(reader, topics).values())
    finally:
        reader.close()


def wait_for_messages(prefix, expected, exchanges=EXCHANGES):
    """Waits until the topics hold `expected` messages (or more), then a moment longer so that
    any extra message has a chance to show; returns the count."""
    reached = wait_for(lambda: message_count(prefix, exchanges) >= expected,
                       timeout=PUBLISH_TIMEOUT, interval=0.2)
    if reached:
        time.sleep(0.5)
    return message_count(prefix, exchanges)


def read_all(prefix, exchanges=EXCHANGES):
    """Every record of the exchange topics, each partition from its start up to the high
    watermark it had when reading began, decoded and checked against the schemas."""
    topics = topic_partitions(prefix, exchanges)
    reader = consumer()
    try:
        ends = {}
        assignment = []
        for (topic, partition), (low, high) in watermarks(reader, topics).items():
            if high > low:
                ends[(topic, partition)] = high
                assignment.append(confluent_kafka.TopicPartition(topic, partition, low))
        records = []
        if not assignment:
            return records
        reader.assign(assignment)
        deadline = time.monotonic() + PUBLISH_TIMEOUT
        while ends and time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            place = (message.topic(), message.partition())
            if place not in ends or message.offset() >= ends[place]:
                continue
            records.append(decode(prefix, message))
            if message.offset() + 1 >= ends[place]:
                del ends[place]
        assert not ends, f"partitions not read to their high watermark: {ends}"
        return records
    finally:
        reader.close()


def decode(prefix, message):
    """A record as read, after checking it against schemas/asyncapi.yaml."""
    topic = message.topic()
    assert topic.startswith(prefix), topic
    exchange = topic[len(prefix):]
    body = json.loads(message.value())
    exchange_schemas.validate(exchange, body)
    headers = exchange_schemas.validate_headers(exchange, message.headers(),
                                                key=message.key(), payload=body)
    match = CE_ID.match(headers["ce_id"])
    assert match, f"ce_id {headers['ce_id']!r} is not <partition>-<offset>-<index>"
    return Record(topic=topic, exchange=exchange, partition=message.partition(),
                  offset=message.offset(), key=message.key().decode(), body=body,
                  routing_key=headers["taskcluster-routing-key"],
                  cc=headers.get("taskcluster-cc", []), headers=headers,
                  ce_id=tuple(int(match.group(i)) for i in (1, 2, 3)))


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_records(records, root_urls, partitions=DEFAULT_PARTITIONS):
    """What every record must be, whatever the scenario: key and subject, partition, ce_*."""
    now = datetime.datetime.now(datetime.timezone.utc)
    sources = {f"{root_url}/api/queue/v1" for root_url in root_urls}
    for record in records:
        body, headers = record.body, record.headers
        assert body["version"] == 1, record
        if record.exchange in GROUP_EXCHANGES:
            assert record.key == body["taskGroupId"], record
            assert record.cc == [], record
        else:
            assert record.key == body["status"]["taskId"], record
        assert headers["ce_subject"] == record.key, record
        assert headers["ce_specversion"] == "1.0", record
        assert headers["ce_type"] == DEFAULT_PREFIX + record.exchange, record
        assert headers["content-type"] == "application/json", record
        assert headers["ce_source"] in sources, (headers["ce_source"], sources)
        assert abs(parse_time(headers["ce_time"]) - now) < datetime.timedelta(minutes=10), record
        # A message goes to the partition of the log partition its event is in: the key's.
        assert record.ce_id[0] == record.partition, record
        assert record.partition == partition_for(record.key, partitions), record
    ids = collections.Counter(record.headers["ce_id"] for record in records)
    assert not {i: n for i, n in ids.items() if n > 1}, \
        f"ce_id repeated: {({i: n for i, n in ids.items() if n > 1})}"
    # Within a topic partition the messages are in the order of the log.
    by_place = collections.defaultdict(list)
    for record in records:
        by_place[(record.topic, record.partition)].append(record)
    for place, placed in by_place.items():
        placed.sort(key=lambda record: record.offset)
        order = [record.ce_id for record in placed]
        assert order == sorted(order), f"{place}: ce_ids out of log order: {order}"


def identity(exchange, routing_key, body):
    return (exchange, routing_key, json.dumps(body, sort_keys=True))


def assert_no_content_duplicates(records):
    seen = collections.Counter(identity(r.exchange, r.routing_key, r.body) for r in records)
    twice = [key for key, n in seen.items() if n > 1]
    assert not twice, f"messages published more than once: {twice[:5]}"


# --- 1. a lifecycle, read with confluent-kafka ----------------------------------------------


def routing_key(task_id, run_id, worker, task_queue_id, group_id):
    """The primary routing key written out by hand (schedulerId `-`, absent words `_`)."""
    worker_group, worker_id = worker or ("_", "_")
    provisioner_id, worker_type = task_queue_id.split("/")
    run = "_" if run_id is None else str(run_id)
    words = [task_id, run, worker_group, worker_id, provisioner_id, worker_type, "-", group_id]
    return ".".join(["primary", *words, "_"])


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    """A server configured through the environment, taken through a lifecycle: in one group,
    tasks completed, failed, retried after worker-shutdown, canceled and reprioritized, and
    the group sealed (it stays unresolved); in a group of its own, a task canceled, which
    resolves its group. Yields what was done and every record of its topics."""
    prefix = unique("life") + "."
    server = kafka_server(tmp_path_factory, QUICK_CONFIG,
                          env_configured(prefix, unique("life-log")))
    server.start()
    try:
        queue = server.queue()
        group_id = new_task_id()
        base = f"proj-kx/q{uuid.uuid4().hex[:12]}"
        done = {"group_id": group_id, "prefix": prefix, "server": server, "queues": {},
                "tasks": {}}

        def create(name, **overrides):
            task_id = new_task_id()
            task_queue_id = base + name
            queue.createTask(task_id, task_definition(task_queue_id, taskGroupId=group_id,
                                                      **overrides))
            done["tasks"][name] = task_id
            done["queues"][name] = task_queue_id
            return task_id, task_queue_id

        # A: claimed, two artifacts (one announced), completed; it has routes and tags.
        a, queue_a = create("a", routes=["index.x.y", "notify.a"], tags={"k": "v"})
        [claimed_a] = claim(queue, queue_a, worker_id="w1")
        assert claimed_a["status"]["taskId"] == a
        done["claimed_a"] = claimed_a
        artifact = {"storageType": "reference", "url": "https://example.com/ref.txt",
                    "contentType": "text/plain", "expires": date_in(datetime.timedelta(days=1))}
        queue.createArtifact(a, "0", "public/ref.txt", artifact)
        done["artifact"] = artifact
        # Taskcluster announces no `s3` artifact (its upload is not known to have happened).
        queue.createArtifact(a, "0", "public/upload.bin", {
            "storageType": "s3", "contentType": "application/octet-stream",
            "expires": date_in(datetime.timedelta(days=1))})
        queue.reportCompleted(a, "0")
        # B: failed.
        b, queue_b = create("b")
        assert claim(queue, queue_b, worker_id="w2")[0]["status"]["taskId"] == b
        queue.reportFailed(b, "0")
        # C: worker-shutdown, retried.
        c, queue_c = create("c", retries=2)
        assert claim(queue, queue_c, worker_id="w3")[0]["status"]["taskId"] == c
        status = queue.reportException(c, "0", {"reason": "worker-shutdown"})["status"]
        assert [run["state"] for run in status["runs"]] == ["exception", "pending"]
        # D: canceled while pending; E: reprioritized while pending.
        d, _ = create("d")
        queue.cancelTask(d)
        e, _ = create("e")
        queue.changeTaskPriority(e, {"newPriority": "high"})
        sealed = queue.sealTaskGroup(group_id)
        done["sealed"] = sealed
        # F: alone in its group (taskGroupId = its taskId); canceling it resolves the group.
        f = new_task_id()
        done["tasks"]["f"], done["queues"]["f"] = f, base + "f"
        queue.createTask(f, task_definition(base + "f"))
        queue.cancelTask(f)
        done["statuses"] = {name: queue.status(task_id)["status"]
                            for name, task_id in done["tasks"].items()}
        done["count"] = wait_for_messages(prefix, LIFECYCLE_MESSAGES)
        done["group_f"] = queue.getTaskGroup(f)
        done["records"] = read_all(prefix)
        done["partitions"] = topic_partitions(prefix)
        yield done
    finally:
        server.stop()


# What the lifecycle publishes: A 5, B 4, C 5, D 3, E 3, their group 3 (resolved twice, then
# sealed), F 3 + its group 1.
LIFECYCLE_MESSAGES = 27


def expected_lifecycle(done):
    """subject -> [(exchange, routing key)] in the order the messages must have."""
    tasks, queues, group_id = done["tasks"], done["queues"], done["group_id"]

    def key(name, run_id=None, worker=None):
        group = tasks["f"] if name == "f" else group_id
        return routing_key(tasks[name], run_id, worker, queues[name], group)

    w1, w2, w3 = ("wg", "w1"), ("wg", "w2"), ("wg", "w3")
    return {
        tasks["a"]: [("task-defined", key("a")), ("task-pending", key("a", 0)),
                     ("task-running", key("a", 0, w1)), ("artifact-created", key("a", 0, w1)),
                     ("task-completed", key("a", 0, w1))],
        tasks["b"]: [("task-defined", key("b")), ("task-pending", key("b", 0)),
                     ("task-running", key("b", 0, w2)), ("task-failed", key("b", 0, w2))],
        tasks["c"]: [("task-defined", key("c")), ("task-pending", key("c", 0)),
                     ("task-running", key("c", 0, w3)), ("task-exception", key("c", 0, w3)),
                     ("task-pending", key("c", 1))],
        tasks["d"]: [("task-defined", key("d")), ("task-pending", key("d", 0)),
                     ("task-exception", key("d", 0))],
        tasks["e"]: [("task-defined", key("e")), ("task-pending", key("e", 0)),
                     ("task-priority-changed", key("e"))],
        # The group resolves whenever its last unresolved task resolves: after A (then alone
        # in it) and after B; C's retry keeps it unresolved from then on.
        group_id: [("task-group-resolved", f"primary.{group_id}.-._"),
                   ("task-group-resolved", f"primary.{group_id}.-._"),
                   ("task-group-sealed", f"primary.{group_id}.-._")],
        # F's group has F's id: its messages share F's key and partition, the group's last.
        tasks["f"]: [("task-defined", key("f")), ("task-pending", key("f", 0)),
                     ("task-exception", key("f", 0)),
                     ("task-group-resolved", f"primary.{tasks['f']}.-._")],
    }


def in_log_order(records):
    """subject -> its records in log order (one log partition per subject: by ce_id)."""
    by_subject = collections.defaultdict(list)
    for record in records:
        by_subject[record.key].append(record)
    for subject_records in by_subject.values():
        subject_records.sort(key=lambda record: record.ce_id)
    return by_subject


def test_every_exchange_has_a_topic_with_the_logs_partitions(lifecycle):
    assert lifecycle["partitions"] == {lifecycle["prefix"] + exchange: DEFAULT_PARTITIONS
                                       for exchange in EXCHANGES}


def test_lifecycle_messages_are_on_their_topics_in_task_order_with_exact_routing_keys(lifecycle):
    records = lifecycle["records"]
    expected = expected_lifecycle(lifecycle)
    got = {subject: [(r.exchange, r.routing_key) for r in subject_records]
           for subject, subject_records in in_log_order(records).items()}
    assert got == expected
    assert lifecycle["count"] == len(records) == LIFECYCLE_MESSAGES
    for record in records:
        assert record.topic == lifecycle["prefix"] + record.exchange


def test_lifecycle_records_have_keys_partitions_cc_and_cloudevents_headers(lifecycle):
    records = lifecycle["records"]
    check_records(records, lifecycle["server"].root_urls)
    assert len({r.headers["ce_id"] for r in records}) == len(records) == LIFECYCLE_MESSAGES
    # All of a task's messages are in one partition number, whatever their topic.
    partitions = collections.defaultdict(set)
    for record in records:
        partitions[record.key].add(record.partition)
    assert all(len(numbers) == 1 for numbers in partitions.values()), partitions
    # CC: one header per route, in the task's order, on every message of the task.
    a = lifecycle["tasks"]["a"]
    for record in records:
        if record.key == a:
            assert record.cc == ["route.index.x.y", "route.notify.a"], record
        else:
            assert record.cc == [], record
            assert "taskcluster-cc" not in record.headers, record


def test_lifecycle_bodies_are_taskclusters(lifecycle):
    tasks, statuses = lifecycle["tasks"], lifecycle["statuses"]
    ordered = in_log_order(lifecycle["records"])
    bodies = {name: [r.body for r in ordered[task_id] if r.exchange not in GROUP_EXCHANGES]
              for name, task_id in tasks.items()}

    for name in tasks:
        defined = bodies[name][0]
        assert defined["status"]["state"] == "unscheduled", defined
        assert defined["status"]["runs"] == [], defined
        assert "runId" not in defined, defined
        assert bodies[name][1]["runId"] == 0
        assert bodies[name][1]["status"]["runs"][0]["state"] == "pending", bodies[name][1]
        # The last message of each task shows the status the queue reports now.
        assert bodies[name][-1]["status"] == statuses[name], (name, bodies[name][-1])
    assert bodies["a"][0]["task"] == {"tags": {"k": "v"}}
    assert bodies["b"][0]["task"] == {"tags": {}}

    _, _, running, artifact, completed = bodies["a"]
    claimed = lifecycle["claimed_a"]
    assert (running["runId"], running["workerGroup"], running["workerId"]) == (0, "wg", "w1")
    assert running["takenUntil"] == claimed["takenUntil"]
    assert running["status"]["runs"][0]["state"] == "running"
    given = lifecycle["artifact"]
    assert artifact["artifact"] == {"storageType": "reference", "name": "public/ref.txt",
                                    "contentType": "text/plain", "expires": given["expires"]}
    assert (artifact["runId"], artifact["workerId"]) == (0, "w1")
    assert (completed["runId"], completed["workerId"]) == (0, "w1")
    # ce_time is when the event happened: here, when the run resolved.
    [completed_record] = [r for r in ordered[tasks["a"]] if r.exchange == "task-completed"]
    assert completed_record.headers["ce_time"] == statuses["a"]["runs"][0]["resolved"]

    failed = bodies["b"][-1]
    assert (failed["status"]["state"], failed["workerId"]) == ("failed", "w2")

    exception, retry = bodies["c"][3:]
    assert (exception["runId"], exception["workerId"]) == (0, "w3")
    # Published after the whole change: the exception already shows the retry run.
    assert [(run["state"], run.get("reasonResolved"), run["reasonCreated"])
            for run in exception["status"]["runs"]] == [
        ("exception", "worker-shutdown", "scheduled"), ("pending", None, "retry")]
    assert retry["runId"] == 1

    canceled = bodies["d"][-1]
    assert canceled["status"]["runs"][0]["reasonResolved"] == "canceled"
    assert canceled["runId"] == 0
    assert "workerId" not in canceled and "workerGroup" not in canceled, canceled

    changed = bodies["e"][-1]
    assert (changed["oldPriority"], changed["newPriority"]) == ("lowest", "high")

    *resolved, sealed = ordered[lifecycle["group_id"]]
    assert sealed.body == dict(lifecycle["sealed"], version=1)
    for record in resolved:
        assert record.exchange == "task-group-resolved"
        assert {k: record.body[k] for k in ("taskGroupId", "schedulerId", "version")} == \
            {"taskGroupId": lifecycle["group_id"], "schedulerId": "-", "version": 1}
        assert "sealed" not in record.body, record.body
    resolved = ordered[tasks["f"]][-1]
    assert resolved.exchange == "task-group-resolved"
    assert resolved.body == dict(lifecycle["group_f"], version=1)
    assert resolved.body["taskGroupId"] == tasks["f"]


# --- 2. the same messages through `taskfold listen --kafka` ---------------------------------


def run_listen(prefix, count, *bindings):
    """`taskfold listen --kafka` from the beginning; its JSON lines."""
    arguments = [BINARY, "listen", "--kafka", BROKERS, "--from-beginning",
                 "--topic-prefix", prefix, "--count", str(count)]
    for exchange, pattern in bindings:
        arguments += ["--exchange", exchange, "--routing-key", pattern]
    try:
        result = subprocess.run(arguments, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as timeout:
        raise AssertionError(f"taskfold listen printed {timeout.stdout!r} and did not stop "
                             f"within 30 s; stderr: {timeout.stderr!r}") from None
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_taskfold_listen_kafka_reads_what_confluent_kafka_read(lifecycle):
    records = lifecycle["records"]
    lines = run_listen(lifecycle["prefix"], len(records),
                       *[(exchange, "#") for exchange in EXCHANGES])
    for line in lines:
        assert set(line) == {"exchange", "routingKey", "payload", "routes"}, line
        exchange_schemas.validate(line["exchange"], line["payload"])
        assert line["routingKey"] == exchange_schemas.routing_key(line["exchange"],
                                                                  line["payload"])
    listened = collections.Counter(
        identity(exchange_schemas.short_name(line["exchange"]), line["routingKey"],
                 line["payload"]) + (tuple(line["routes"]),)
        for line in lines)
    read = collections.Counter(
        identity(r.exchange, r.routing_key, r.body) + (tuple(c[len("route."):] for c in r.cc),)
        for r in records)
    assert listened == read
    assert all(line["exchange"].startswith(exchange_schemas.EXCHANGE_PREFIX) for line in lines)


def test_taskfold_listen_kafka_filters_by_routing_key_and_cc(lifecycle):
    tasks = lifecycle["tasks"]
    # A CC route selects A's messages; a primary pattern selects C's two pending runs.
    lines = run_listen(lifecycle["prefix"], 3,
                       ("task-completed", "route.index.x.y"),
                       ("task-pending", f"primary.{tasks['c']}.#"))
    got = sorted((exchange_schemas.short_name(line["exchange"]),
                  line["payload"]["status"]["taskId"], line["payload"]["runId"])
                 for line in lines)
    assert got == sorted([("task-completed", tasks["a"], 0), ("task-pending", tasks["c"], 0),
                          ("task-pending", tasks["c"], 1)])


# --- 3. exactly once across kill -9 and SIGTERM ---------------------------------------------


class Load:
    """Threads that each create a task, claim it and complete it, over and over, recording
    what was sent and what was acknowledged."""

    THREADS = 4

    def __init__(self, task_queue_base):
        self.task_queue_base = task_queue_base
        self.lock = threading.Lock()
        self.sent = set()           # taskIds whose createTask was sent
        self.created = set()        # ... acknowledged
        self.claimed = {}           # taskId -> workerId, claim acknowledged
        self.completed = set()      # taskIds whose reportCompleted was acknowledged
        self.unexpected = []
        self.phase = 0

    def run(self, server, until_completed, stop_server=None):
        """Runs the threads until `until_completed` more tasks are completed, then calls
        `stop_server` (if any) while they are still going and waits for them to give up."""
        self.phase += 1
        stopping = threading.Event()
        target = len(self.completed) + until_completed
        threads = [threading.Thread(target=self.thread, args=(server, i, stopping))
                   for i in range(self.THREADS)]
        for thread in threads:
            thread.start()
        try:
            reached = wait_for(lambda: len(self.completed) >= target, timeout=30, interval=0.02)
            assert reached, f"only {len(self.completed)} of {target} tasks completed in 30 s"
        finally:
            stopping.set()
            if stop_server is not None:
                stop_server()
            for thread in threads:
                thread.join()
        assert not self.unexpected, self.unexpected

    def thread(self, server, index, stopping):
        client = server.queue()
        # A task queue per thread and phase, so the claim gets the task just created (and not
        # one an earlier phase left pending).
        task_queue_id = f"{self.task_queue_base}p{self.phase}t{index}"
        worker_id = f"w{self.phase}-{index}"
        while not stopping.is_set():
            task_id = new_task_id()
            try:
                with self.lock:
                    self.sent.add(task_id)
                client.createTask(task_id, task_definition(task_queue_id))
                with self.lock:
                    self.created.add(task_id)
                reply = client.claimWork(task_queue_id, {"workerGroup": "kx",
                                                         "workerId": worker_id, "tasks": 1})
                got = [(c["status"]["taskId"], c["runId"]) for c in reply["tasks"]]
                if got != [(task_id, 0)]:
                    raise AssertionError(f"claimWork gave {got}, not [({task_id}, 0)]")
                with self.lock:
                    self.claimed[task_id] = worker_id
                client.reportCompleted(task_id, "0")
                with self.lock:
                    self.completed.add(task_id)
            except Exception as error:
                # Once the server is being stopped, errors are expected; before, not.
                if not stopping.is_set():
                    with self.lock:
                        self.unexpected.append(repr(error))
                return


def status_or_none(queue, task_id):
    try:
        return queue.status(task_id)["status"]
    except taskcluster.exceptions.TaskclusterRestFailure as error:
        if error.status_code == 404:
            return None
        raise


def expected_from_statuses(load, statuses):
    """What the queue holds decides what must have been published, once each:
    (exchange, taskId or taskGroupId, runId) -> 1. Checks the acknowledged calls against the
    statuses."""
    expected = collections.Counter()
    for task_id, status in statuses.items():
        if task_id in load.created:
            assert status is not None, f"acknowledged createTask of {task_id} lost"
        if status is None:
            continue
        runs = status["runs"]
        assert len(runs) == 1, status
        assert runs[0]["state"] in ("pending", "running", "completed"), status
        if task_id in load.claimed:
            assert runs[0]["state"] in ("running", "completed"), status
            assert runs[0]["workerId"] == load.claimed[task_id], status
        if task_id in load.completed:
            assert runs[0]["state"] == "completed", status
        expected[("task-defined", task_id, None)] += 1
        expected[("task-pending", task_id, 0)] += 1
        if runs[0]["state"] in ("running", "completed"):
            expected[("task-running", task_id, 0)] += 1
        if runs[0]["state"] == "completed":
            expected[("task-completed", task_id, 0)] += 1
            # Each task is alone in its group (taskGroupId = taskId): completing it resolves
            # the group, once, even when a kill came between the two.
            expected[("task-group-resolved", task_id, None)] += 1
    return expected


def test_every_message_is_published_exactly_once_across_kill_and_restart(tmp_path_factory):
    prefix = unique("once") + "."
    server = kafka_server(tmp_path_factory, QUICK_CONFIG,
                          env_configured(prefix, unique("once-log")))
    load = Load(f"proj-kx/once{uuid.uuid4().hex[:8]}")
    try:
        server.start()
        load.run(server, 50, stop_server=server.kill)        # kill -9 mid-load
        server.start()
        load.run(server, 50, stop_server=server.stop)        # SIGTERM mid-load
        server.start()
        load.run(server, 50)
        queue = server.queue()
        statuses = {task_id: status_or_none(queue, task_id) for task_id in load.sent}
        expected = expected_from_statuses(load, statuses)
        # Give the last messages time to be published (and any extra one time to show).
        wait_for_messages(prefix, sum(expected.values()))
    finally:
        server.stop()
    assert len(load.completed) >= 150

    records = read_all(prefix)
    check_records(records, server.root_urls)
    assert_no_content_duplicates(records)
    got = collections.Counter((r.exchange, r.key, r.body.get("runId")) for r in records)
    missing = expected - got
    extra = got - expected
    assert not missing and not extra, (
        f"{len(records)} messages for {sum(expected.values())} expected; missing "
        f"{sum(missing.values())}: {sorted(missing.items())[:10]}; extra (repeated or for "
        f"events the queue does not have) {sum(extra.values())}: {sorted(extra.items())[:10]}")
    for record in records:
        if record.exchange in ("task-running", "task-completed"):
            assert record.body["workerId"] == statuses[record.key]["runs"][0]["workerId"]
    # Every process published: messages name each of the three root URLs the server had.
    sources = {r.headers["ce_source"] for r in records}
    assert sources == {f"{url}/api/queue/v1" for url in server.root_urls}, sources


# --- 4. configuration through a file ---------------------------------------------------------


# The log's brokers under `[log.kafka]`, with 3 partitions and a prefix of its own.
LOG_KAFKA_BROKERS = """
[log]
backend = "kafka"
partitions = 3

[log.kafka]
brokers = "{brokers}"
topic = "{log_topic}"

[events]
kafka_topic_prefix = "{prefix}"
"""

# `[kafka] brokers` wins over a `[log.kafka] brokers` where no broker listens; the default
# topic prefix and partition count.
KAFKA_ALIAS_BROKERS = """
[log]
backend = "kafka"

[log.kafka]
brokers = "127.0.0.1:1"
topic = "{log_topic}"

[kafka]
brokers = "{brokers}"
"""


@pytest.mark.parametrize("style", ["log.kafka", "kafka"])
def test_brokers_from_a_config_file(tmp_path_factory, style):
    if style == "log.kafka":
        prefix, partitions = unique("file") + ".", 3
        config = LOG_KAFKA_BROKERS.format(brokers=BROKERS, log_topic=unique("file-log"),
                                          prefix=prefix)
    else:
        prefix, partitions = DEFAULT_PREFIX, DEFAULT_PARTITIONS
        config = KAFKA_ALIAS_BROKERS.format(brokers=BROKERS, log_topic=unique("alias-log"))
    server = kafka_server(tmp_path_factory, config)
    try:
        server.start()
        queue = server.queue()
        task_queue_id = f"proj-kx/file{uuid.uuid4().hex[:8]}"
        task_id = new_task_id()
        queue.createTask(task_id, task_definition(task_queue_id, routes=["index.file"]))
        [claimed] = claim(queue, task_queue_id)
        assert claimed["status"]["taskId"] == task_id
        queue.reportCompleted(task_id, "0")
        exchanges = ("task-defined", "task-pending", "task-running", "task-completed",
                     "task-group-resolved")

        # Other servers on this broker may publish under the default prefix too: only this
        # task's messages count.
        def mine():
            return [r for r in read_all(prefix, exchanges) if r.key == task_id]

        wait_for(lambda: len(mine()) >= 5, timeout=PUBLISH_TIMEOUT, interval=0.2)
        time.sleep(0.5)
        records = sorted(mine(), key=lambda record: record.ce_id)
        topics = topic_partitions(prefix)
    finally:
        server.stop()
    assert topics == {prefix + exchange: partitions for exchange in EXCHANGES}
    check_records(records, server.root_urls, partitions)
    assert [(r.exchange, r.routing_key) for r in records] == [
        ("task-defined", routing_key(task_id, None, None, task_queue_id, task_id)),
        ("task-pending", routing_key(task_id, 0, None, task_queue_id, task_id)),
        ("task-running", routing_key(task_id, 0, ("wg", "w1"), task_queue_id, task_id)),
        ("task-completed", routing_key(task_id, 0, ("wg", "w1"), task_queue_id, task_id)),
        # The task is alone in its group (taskGroupId = taskId), which it resolves.
        ("task-group-resolved", f"primary.{task_id}.-._"),
    ]
    assert [r.cc for r in records] == [["route.index.file"]] * 4 + [[]]
    assert all(r.topic == prefix + r.exchange for r in records)
