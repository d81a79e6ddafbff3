"""The exchange messages of the real `taskfold serve` through its listener API: the websocket
(`/api/events/v1/listen`), Server-Sent Events (`/api/events/v1/sse`) and `taskfold listen`.

Every message frame any test here receives is checked against schemas/asyncapi.yaml (the frame,
its payload against its exchange's schema, and its routing key against the one Taskcluster would
build from the payload). Negative checks ("this listener gets nothing else") never rest on a
timeout: a later marker message that the listener does match closes the window, and it is only
sent once a listener bound to everything has seen the messages in question (the server's stream
is totally ordered, so whatever a listener matched before the marker has reached it by then).
"""

import concurrent.futures
import datetime
import glob
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import time
import urllib.parse
import uuid
import zlib

import pytest
import requests
import websocket

import exchange_schemas
from conftest import (BINARY, claim, date_in, make_server, make_until_exit, new_task_id,
                      task_definition, watch_logs)

PREFIX = exchange_schemas.EXCHANGE_PREFIX
GROUP_EXCHANGES = exchange_schemas.GROUP_EXCHANGES
TASK_EXCHANGES = tuple(name for name in exchange_schemas.exchanges() if name not in GROUP_EXCHANGES)
# Every exchange the server publishes on (task-group-resolved is bindable before it is emitted).
ALL_EXCHANGES = TASK_EXCHANGES + GROUP_EXCHANGES
# How long any single wait for a frame or an event may take.
WAIT = 10
CURSOR = re.compile(r"^(\d+)\.(\d+)$")
MESSAGE_ID = re.compile(r"^\d+-\d+-\d+$")
EVERYTHING = [(exchange, "#") for exchange in ALL_EXCHANGES]


# Listeners and streams a test opened, closed after it even when it fails (an open one would
# hold the server's stop up for its whole shutdown timeout).
OPEN = []


@pytest.fixture(autouse=True)
def close_listeners():
    yield
    while OPEN:
        OPEN.pop().close()


# --- servers ---------------------------------------------------------------------------------


def serve(tmp_path_factory, config):
    """worker_helpers.serve, but the stop does not wait out the server's shutdown timeout: an
    SSE stream whose client has gone holds a graceful stop up until its next write (see
    test_stopping_the_server_closes_listeners_with_1001)."""
    server = make_server(tmp_path_factory, config)
    watch_logs(os.path.join(glob.escape(server.log_dir), "server-*.log"))
    server.start()
    yield server
    server.process.terminate()
    try:
        server.process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    server.log.close()


@pytest.fixture(scope="module")
def events_server(tmp_path_factory):
    """A server of this module's own, so that nothing else publishes while a test listens."""
    yield from serve(tmp_path_factory, "")


# A listener may fall 50 messages behind.
SLOW_CONFIG = """
[events]
listener_buffer_messages = 50
"""


@pytest.fixture
def slow_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SLOW_CONFIG)


# Only the last 3 messages are kept for resuming.
SHORT_MEMORY_CONFIG = """
[events]
resume_messages = 3
"""


@pytest.fixture
def short_memory_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_MEMORY_CONFIG)


def new_task_queue():
    return f"listen/q{uuid.uuid4().hex[:16]}"


def create(queue, task_queue_id, task_id=None, **overrides):
    task_id = task_id or new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, **overrides))
    return task_id


# --- checking messages -----------------------------------------------------------------------


def short(exchange):
    assert exchange.startswith(PREFIX), exchange
    return exchange[len(PREFIX):]


def cursor_sequence(cursor):
    match = CURSOR.match(cursor)
    assert match, f"cursor {cursor!r} is not <epoch>.<sequence>"
    return int(match.group(1)), int(match.group(2))


def check_event(event):
    """What every delivered message (websocket frame without `type`, or SSE data) must be."""
    exchange_schemas.validate(event["exchange"], event["payload"])
    assert event["routingKey"] == exchange_schemas.routing_key(event["exchange"],
                                                               event["payload"]), event
    assert MESSAGE_ID.match(event["id"]), event["id"]
    cursor_sequence(event["cursor"])
    if short(event["exchange"]) in GROUP_EXCHANGES:
        assert event["routes"] == [], event


def check_frame(frame):
    exchange_schemas.validate_listener_message(frame)
    assert frame["type"] == "message"
    check_event(frame)


def subject(frame):
    """The task (or, for group exchanges, the group) a message is about."""
    payload = frame["payload"]
    return payload["status"]["taskId"] if "status" in payload else payload["taskGroupId"]


def summary(frame):
    """(short exchange, subject): enough to tell the messages of a test apart."""
    return short(frame["exchange"]), subject(frame)


def topic_matches(pattern, key):
    """AMQP topic matching, written independently of the server's."""
    def match(words, key_words):
        if not words:
            return not key_words
        first, rest = words[0], words[1:]
        if first == "#":
            return any(match(rest, key_words[skip:]) for skip in range(len(key_words) + 1))
        if not key_words:
            return False
        return (first == "*" or first == key_words[0]) and match(rest, key_words[1:])
    return match(pattern.split("."), key.split("."))


def binding_matches(bindings, frame):
    """Whether a Pulse queue with these bindings would get the message."""
    keys = [frame["routingKey"]] + [f"route.{route}" for route in frame["routes"]]
    return any((exchange if exchange.startswith(PREFIX) else PREFIX + exchange)
               == frame["exchange"] and any(topic_matches(pattern, key) for key in keys)
               for exchange, pattern in bindings)


def task_key(task_id, task_queue_id, group_id=None, run_id="_", worker_group="_",
             worker_id="_", scheduler_id="-"):
    """The primary routing key of a task message, spelled out."""
    provisioner_id, worker_type = task_queue_id.split("/")
    return ".".join(["primary", task_id, str(run_id), worker_group, worker_id, provisioner_id,
                     worker_type, scheduler_id, group_id or task_id, "_"])


# --- the websocket listener ------------------------------------------------------------------


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


def ws_url(server):
    return server.root_url.replace("http://", "ws://") + "/api/events/v1/listen"


def read_frame(ws, timeout=WAIT):
    """The next text frame as JSON; `Closed` when the server closes."""
    ws.settimeout(timeout)
    opcode, frame = ws.recv_data_frame(control_frame=False)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        payload = frame.data
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        raise Closed(code, payload[2:].decode("utf-8", "replace"))
    assert opcode == websocket.ABNF.OPCODE_TEXT, opcode
    return json.loads(frame.data)


class Listener:
    """One websocket listener: subscribed (its `ready` frame read and checked) on creation."""

    def __init__(self, server, bindings, cursor=None, sockopt=()):
        self.bindings = list(bindings)
        self.ws = websocket.create_connection(ws_url(server), timeout=WAIT, sockopt=sockopt,
                                              skip_utf8_validation=True)
        OPEN.append(self)
        request = {"bindings": [{"exchange": exchange, "routingKeyPattern": pattern}
                                for exchange, pattern in self.bindings]}
        if cursor is not None:
            request["cursor"] = cursor
        exchange_schemas.validate_listen_request(request)
        self.ws.send(json.dumps(request))
        self.ready = read_frame(self.ws)
        exchange_schemas.validate_listener_ready(self.ready)
        assert self.ready["type"] == "ready", self.ready
        if cursor is not None:
            # Documented as the requested cursor: test_a_resumed_listener_is_ready_at_its_cursor.
            assert cursor_sequence(self.ready["cursor"]) >= cursor_sequence(cursor)
        self.received = []

    def message(self, timeout=WAIT):
        frame = read_frame(self.ws, timeout)
        check_frame(frame)
        if self.received:
            epoch, sequence = cursor_sequence(frame["cursor"])
            last_epoch, last_sequence = cursor_sequence(self.received[-1]["cursor"])
            assert epoch == last_epoch and sequence > last_sequence, (self.received[-1], frame)
        self.received.append(frame)
        return frame

    def read_until(self, condition, timeout=WAIT):
        """Frames up to and including the first for which `condition` holds."""
        deadline = time.monotonic() + timeout
        frames = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                frame = self.message(max(remaining, 0.01))
            except websocket.WebSocketTimeoutException:
                raise AssertionError(
                    f"no matching frame within {timeout} s; got {[summary(f) for f in frames]}")
            frames.append(frame)
            if condition(frame):
                return frames

    def read(self, count, timeout=WAIT):
        frames = []
        deadline = time.monotonic() + timeout
        while len(frames) < count:
            try:
                frames.append(self.message(max(deadline - time.monotonic(), 0.01)))
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"{len(frames)} of {count} frames within {timeout} s: "
                                     f"{[summary(f) for f in frames]}")
        return frames

    def close(self):
        # The server answers no close frame (see test_a_client_close_is_answered), so do not
        # wait for one.
        self.ws.close(timeout=0)


def refused(server, request):
    """What the server answers a listen request (JSON-encoded unless a str): the error frame,
    the close code and the close reason."""
    ws = websocket.create_connection(ws_url(server), timeout=WAIT)
    try:
        ws.send(request if isinstance(request, str) else json.dumps(request))
        frame = read_frame(ws)
        with pytest.raises(Closed) as closed:
            read_frame(ws)
    finally:
        ws.close(timeout=0)
    exchange_schemas.validate_schema("ListenerError", frame)
    return frame, closed.value.code, closed.value.reason


def seen_all(witness, wanted):
    """Reads the witness (bound to everything) until it has seen every (exchange, subject) in
    `wanted`; from then on the server has published them all."""
    wanted = set(wanted)
    seen = {summary(frame) for frame in witness.received}

    def done(frame):
        seen.add(summary(frame))
        return wanted <= seen

    if not wanted <= seen:
        witness.read_until(done)


# --- Server-Sent Events ----------------------------------------------------------------------


class Sse:
    """One `GET /api/events/v1/sse` stream, read event by event."""

    def __init__(self, server, pairs, cursor=None, last_event_id=None):
        query = []
        for exchange, pattern in pairs:
            query += [("exchange", exchange), ("routingKeyPattern", pattern)]
        if cursor is not None:
            query.append(("cursor", cursor))
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
        OPEN.append(self)
        self.connection.request("GET", "/api/events/v1/sse?" + urllib.parse.urlencode(query),
                                headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200, (self.response.status, self.response.read())
        assert self.response.getheader("Content-Type").startswith("text/event-stream")
        comments, fields = self.block()
        assert fields == [] and len(comments) == 1 and comments[0].startswith(" ready "), \
            (comments, fields)
        self.ready = comments[0][len(" ready "):]
        cursor_sequence(self.ready)

    def block(self):
        """The comments and fields up to the next blank line."""
        comments, fields = [], []
        while True:
            line = self.response.readline()
            assert line, "the stream ended"
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                return comments, fields
            if line.startswith(":"):
                comments.append(line[1:])
            else:
                name, _, value = line.partition(":")
                fields.append((name, value[1:] if value.startswith(" ") else value))

    def event(self):
        """The next event (keepalive comments skipped): its fields as a dict, data parsed."""
        while True:
            comments, fields = self.block()
            if fields:
                break
            assert all(comment.strip() == "keepalive" for comment in comments), comments
        names = [name for name, _ in fields]
        assert sorted(names) == ["data", "event", "id"], fields
        event = dict(fields)
        event["data"] = json.loads(event["data"])
        assert event["event"] == "message", event
        exchange_schemas.validate_sse_data(event["data"])
        check_event(event["data"])
        assert event["id"] == event["data"]["cursor"], event
        return event

    def close(self):
        self.connection.close()


def sse_error(server, query, headers=None):
    response = requests.get(f"{server.root_url}/api/events/v1/sse", params=query,
                            headers=headers or {}, timeout=WAIT, stream=True)
    try:
        return response.status_code, response.json()
    finally:
        response.close()


# --- 1. every exchange through a whole lifecycle ---------------------------------------------


def test_every_exchange_through_task_lifecycles(events_server):
    queue = events_server.queue()
    # Half the bindings by full exchange name, half by short name.
    bindings = [(PREFIX + exchange if i % 2 else exchange, "#")
                for i, exchange in enumerate(ALL_EXCHANGES)]
    listener = Listener(events_server, bindings)
    group = new_task_id()
    queues = {}
    expected = {}  # task id -> [(exchange, primary routing key)]

    def new(name, routes=(), **overrides):
        task_queue_id = new_task_queue()
        task_id = create(queue, task_queue_id, taskGroupId=group, routes=list(routes),
                         **overrides)
        queues[name] = (task_id, task_queue_id)
        return task_id, task_queue_id

    def key(name, **words):
        task_id, task_queue_id = queues[name]
        return task_key(task_id, task_queue_id, group, **words)

    # Completed, with three artifacts.
    t1, q1 = new("completed", routes=["index.x.y", "notify.a"], tags={"kind": "lifecycle"})
    [claimed] = claim(queue, q1, worker_id="w1")
    assert claimed["status"]["taskId"] == t1
    expires = date_in(datetime.timedelta(days=1))
    # Taskcluster publishes artifact-created for these; for `s3` see
    # test_an_s3_artifact_publishes_no_artifact_created.
    queue.createArtifact(t1, "0", "public/ref.txt",
                         {"storageType": "reference", "url": "https://example.com/ref",
                          "contentType": "text/plain", "expires": expires})
    queue.createArtifact(t1, "0", "public/missing.txt",
                         {"storageType": "error", "reason": "file-missing-on-worker",
                          "message": "no such file", "expires": expires})
    queue.createArtifact(t1, "0", "public/link.txt",
                         {"storageType": "link", "artifact": "public/ref.txt",
                          "expires": expires})
    queue.reportCompleted(t1, "0")
    w1 = dict(run_id=0, worker_group="wg", worker_id="w1")
    expected[t1] = [("task-defined", key("completed")),
                    ("task-pending", key("completed", run_id=0)),
                    ("task-running", key("completed", **w1)),
                    ("artifact-created", key("completed", **w1)),
                    ("artifact-created", key("completed", **w1)),
                    ("artifact-created", key("completed", **w1)),
                    ("task-completed", key("completed", **w1))]

    # Failed.
    t2, q2 = new("failed", routes=["notify.b.c"])
    [claimed2] = claim(queue, q2, worker_id="w2")
    queue.reportFailed(t2, "0")
    w2 = dict(run_id=0, worker_group="wg", worker_id="w2")
    expected[t2] = [("task-defined", key("failed")),
                    ("task-pending", key("failed", run_id=0)),
                    ("task-running", key("failed", **w2)),
                    ("task-failed", key("failed", **w2))]

    # An exception that is retried, then the retry canceled while pending.
    t3, q3 = new("retried", retries=1)
    [claimed3] = claim(queue, q3, worker_id="w3")
    retried = queue.reportException(t3, "0", {"reason": "worker-shutdown"})["status"]
    assert retried["state"] == "pending"
    canceled3 = queue.cancelTask(t3)["status"]
    w3 = dict(run_id=0, worker_group="wg", worker_id="w3")
    expected[t3] = [("task-defined", key("retried")),
                    ("task-pending", key("retried", run_id=0)),
                    ("task-running", key("retried", **w3)),
                    ("task-exception", key("retried", **w3)),
                    ("task-pending", key("retried", run_id=1)),
                    ("task-exception", key("retried", run_id=1))]

    # A running task canceled.
    t4, q4 = new("canceled-running")
    [claimed4] = claim(queue, q4, worker_id="w4")
    queue.cancelTask(t4)
    w4 = dict(run_id=0, worker_group="wg", worker_id="w4")
    expected[t4] = [("task-defined", key("canceled-running")),
                    ("task-pending", key("canceled-running", run_id=0)),
                    ("task-running", key("canceled-running", **w4)),
                    ("task-exception", key("canceled-running", **w4))]

    # An unscheduled task (its dependency failed) canceled: no task-pending ever.
    t5, _ = new("canceled-unscheduled", dependencies=[t2])
    assert queue.status(t5)["status"]["state"] == "unscheduled"
    queue.cancelTask(t5)
    expected[t5] = [("task-defined", key("canceled-unscheduled")),
                    ("task-exception", key("canceled-unscheduled", run_id=0))]

    # A priority change.
    t6, _ = new("reprioritized", priority="low")
    queue.changeTaskPriority(t6, {"newPriority": "high"})
    expected[t6] = [("task-defined", key("reprioritized")),
                    ("task-pending", key("reprioritized", run_id=0)),
                    ("task-priority-changed", key("reprioritized"))]
    # A group's priority change: one summary message for the group, none for its tasks (t6 is
    # its only unresolved task).
    group_change = queue.changeTaskGroupPriority(group, {"newPriority": "very-high"})
    assert (group_change["tasksAffected"], group_change["taskIds"]) == (1, [t6])

    sealed = queue.sealTaskGroup(group)

    # The group resolves (as Taskcluster's dependency tracker has it) each time its last
    # unresolved task resolves: after t1, t2, t3's cancel, t4 and t5, but not after t6 (still
    # pending). These messages come from the group's shard once it hears, so their place among
    # the task messages is not fixed; their number is.
    resolutions = 5
    wanted = sum(len(messages) for messages in expected.values()) + 2 + resolutions
    frames = listener.read(wanted)
    # Nothing else about these tasks or this group: a marker, published after all of them,
    # arrives next.
    marker = create(queue, new_task_queue())
    after = listener.read_until(lambda f: summary(f) == ("task-pending", marker))
    assert [summary(f) for f in after] == [("task-defined", marker), ("task-pending", marker)]

    by_task = {}
    for frame in frames:
        if short(frame["exchange"]) in GROUP_EXCHANGES:
            continue
        by_task.setdefault(subject(frame), []).append(frame)
    assert set(by_task) == set(expected)
    for task_id, messages in expected.items():
        assert [(short(f["exchange"]), f["routingKey"]) for f in by_task[task_id]] == messages, \
            task_id

    # Ids are unique; the marker's messages come after everything else.
    ids = [frame["id"] for frame in listener.received]
    assert len(set(ids)) == len(ids)

    # The group messages: on the group's key, without routes.
    group_frames = [f for f in frames if short(f["exchange"]) in GROUP_EXCHANGES]
    assert sorted(short(f["exchange"]) for f in group_frames) == \
        ["task-group-priority-changed"] + ["task-group-resolved"] * resolutions + \
        ["task-group-sealed"]
    for frame in group_frames:
        assert frame["routingKey"] == f"primary.{group}.-._"
        assert frame["routes"] == []
        assert (frame["payload"]["taskGroupId"], frame["payload"]["schedulerId"]) == (group, "-")
    [group_frame] = [f for f in group_frames if short(f["exchange"]) == "task-group-sealed"]
    assert group_frame["routes"] == []
    assert group_frame["payload"] == {"version": 1, "taskGroupId": group, "schedulerId": "-",
                                      "expires": sealed["expires"], "sealed": sealed["sealed"]}
    [priority_frame] = [f for f in group_frames
                        if short(f["exchange"]) == "task-group-priority-changed"]
    assert priority_frame["payload"] == {"version": 1, "taskGroupId": group, "schedulerId": "-",
                                         "newPriority": "very-high", "tasksAffected": 1}

    # Routes: the task's, without the `route.` prefix.
    for task_id, routes in ((t1, ["index.x.y", "notify.a"]), (t2, ["notify.b.c"]), (t3, [])):
        assert all(f["routes"] == routes for f in by_task[task_id]), task_id

    # task-defined: the status as defined, before any run.
    defined = by_task[t1][0]["payload"]
    assert "runId" not in defined and "workerGroup" not in defined
    assert defined["status"]["state"] == "unscheduled" and defined["status"]["runs"] == []
    assert defined["task"] == {"tags": {"kind": "lifecycle"}}
    assert defined["version"] == 1
    pending = by_task[t1][1]["payload"]
    assert pending["runId"] == 0 and "workerId" not in pending
    assert [run["state"] for run in pending["status"]["runs"]] == ["pending"]
    running = by_task[t1][2]["payload"]
    assert (running["runId"], running["workerGroup"], running["workerId"]) == (0, "wg", "w1")
    assert running["takenUntil"] == claimed["takenUntil"]
    assert running["status"]["runs"][0]["state"] == "running"
    artifacts = [f["payload"]["artifact"] for f in by_task[t1][3:6]]
    assert [(a["storageType"], a["name"], a["expires"]) for a in artifacts] == [
        ("reference", "public/ref.txt", expires), ("error", "public/missing.txt", expires),
        ("link", "public/link.txt", expires)]
    assert artifacts[0]["contentType"] == "text/plain"
    listed = {a["name"]: a for a in queue.listArtifacts(t1, "0")["artifacts"]}
    assert artifacts == [listed[a["name"]] for a in artifacts]
    assert all((f["payload"]["workerGroup"], f["payload"]["workerId"]) == ("wg", "w1")
               for f in by_task[t1][3:6])
    completed = by_task[t1][6]["payload"]
    assert completed["status"] == queue.status(t1)["status"]
    assert completed["status"]["runs"][0]["reasonResolved"] == "completed"
    assert by_task[t2][3]["payload"]["status"] == queue.status(t2)["status"]

    # The retried exception's message already shows the new pending run.
    exception = by_task[t3][3]["payload"]
    assert exception["status"] == retried
    assert [(run["state"], run.get("reasonResolved"), run["reasonCreated"])
            for run in exception["status"]["runs"]] == [
        ("exception", "worker-shutdown", "scheduled"), ("pending", None, "retry")]
    assert by_task[t3][4]["payload"]["runId"] == 1
    assert by_task[t3][5]["payload"]["status"] == canceled3
    assert canceled3["runs"][1]["reasonResolved"] == "canceled"
    assert "workerId" not in by_task[t3][5]["payload"]

    assert by_task[t4][3]["payload"]["status"]["runs"][0]["reasonResolved"] == "canceled"
    assert [(run["state"], run["reasonCreated"], run.get("reasonResolved"))
            for run in by_task[t5][1]["payload"]["status"]["runs"]] == \
        [("exception", "exception", "canceled")]

    changed = by_task[t6][2]["payload"]
    assert (changed["oldPriority"], changed["newPriority"]) == ("low", "high")
    assert changed["status"]["priority"] == "high"
    assert "runId" not in changed
    listener.close()


def artifact_messages_of(listener, task_id, last):
    """artifact-created messages of `task_id` up to the one of artifact `last`."""
    frames = listener.read_until(lambda f: subject(f) == task_id
                                 and f["payload"]["artifact"]["name"] == last)
    return [f["payload"]["artifact"]["name"] for f in frames if subject(f) == task_id]


def test_an_s3_artifact_publishes_no_artifact_created(events_server):
    queue = events_server.queue()
    task_queue_id = new_task_queue()
    task_id = create(queue, task_queue_id)
    listener = Listener(events_server, [("artifact-created", f"primary.{task_id}.#")])
    claim(queue, task_queue_id)
    expires = date_in(datetime.timedelta(days=1))
    queue.createArtifact(task_id, "0", "public/upload.txt",
                         {"storageType": "s3", "contentType": "text/plain", "expires": expires})
    # The marker: a reference artifact, which does publish.
    queue.createArtifact(task_id, "0", "public/marker.txt",
                         {"storageType": "reference", "url": "https://example.com/m",
                          "contentType": "text/plain", "expires": expires})
    assert artifact_messages_of(listener, task_id, "public/marker.txt") == ["public/marker.txt"]
    listener.close()


def test_a_resumed_listener_is_ready_at_its_cursor(events_server):
    queue = events_server.queue()
    task_queue_id = new_task_queue()
    pattern = f"primary.*.*.*.*.{task_queue_id.replace('/', '.')}.#"
    bindings = [("task-defined", pattern)]
    listener = Listener(events_server, bindings)
    create(queue, task_queue_id)
    create(queue, task_queue_id)
    first, second = listener.read(2)
    resumed = Listener(events_server, bindings, cursor=first["cursor"])
    stream = Sse(events_server, bindings, last_event_id=first["cursor"])
    assert (resumed.ready["cursor"], stream.ready) == (first["cursor"], first["cursor"])
    assert resumed.read(1) == [second]
    stream.close()
    resumed.close()
    listener.close()


def test_a_client_close_is_answered(events_server):
    listener = Listener(events_server, [("task-defined", "primary.nothing")])
    listener.ws.send(struct.pack("!H", 1000) + b"done", websocket.ABNF.OPCODE_CLOSE)
    with pytest.raises(Closed) as closed:
        read_frame(listener.ws, timeout=3)
    assert closed.value.code == 1000


def test_stopping_the_server_closes_listeners_with_1001(tmp_path_factory):
    server = make_server(tmp_path_factory).start()
    try:
        listener = Listener(server, EVERYTHING)
        server.process.terminate()
        with pytest.raises(Closed) as closed:
            listener.message(timeout=3)
        assert closed.value.code == 1001
        server.process.wait(timeout=5)
    finally:
        if server.process.poll() is None:
            server.kill()
        else:
            server.log.close()


# --- 2. bindings -----------------------------------------------------------------------------


def test_bindings_match_primary_and_cc_keys_with_star_and_hash(events_server):
    queue = events_server.queue()
    witness = Listener(events_server, EVERYTHING)
    a, b = new_task_id(), new_task_id()
    qa, qb = new_task_queue(), new_task_queue()
    pa, wa = qa.split("/")
    marker_route = f"marker.{uuid.uuid4().hex}"
    marker_binding = ("task-defined", f"route.{marker_route}")
    # bindings -> the (exchange, task) pairs of A and B it must receive.
    cases = [
        ([("task-defined", f"primary.{a}.#")], [("task-defined", a)]),
        ([("task-pending", "primary.*.0.#")], [("task-pending", a), ("task-pending", b)]),
        ([("task-defined", f"*.{a}.*.*.*.*.*.*.*._")], [("task-defined", a)]),
        ([("task-defined", f"primary.{a}._._._.{pa}.{wa}.-.{a}._.#")], [("task-defined", a)]),
        ([("task-defined", f"#.{b}._")], [("task-defined", b)]),
        ([(PREFIX + "task-defined", "route.index.#")], [("task-defined", a)]),
        ([("task-pending", "route.notify.*")], [("task-pending", a)]),
        ([("task-pending", "route.*.x.#")], [("task-pending", a)]),
        # Several bindings matching one message: it arrives once.
        ([("task-defined", "#"), ("task-defined", "route.index.#"),
          ("task-defined", f"primary.{a}.#"), ("task-defined", "route.notify.*")],
         [("task-defined", a), ("task-defined", b)]),
        # Nothing: wrong word counts, literal mismatches, other exchanges.
        ([("task-defined", "route.notify"), ("task-defined", "route.index.*"),
          ("task-defined", f"primary.{a}.*._"), ("task-defined", f"*.{a}.0.#"),
          ("task-pending", f"primary.{a}._.#"), ("task-defined", f"primary.{a}"),
          ("task-defined", "*.*.*.*.*.*.*.*.*"), ("task-defined", "route.notify.a.*"),
          ("task-running", "#"), ("task-completed", "route.index.#"),
          ("task-pending", f"#.{wa}.-.{b}.#")],
         []),
    ]
    listeners = [Listener(events_server, bindings + [marker_binding]) for bindings, _ in cases]

    create(queue, qa, a, routes=["index.x.y", "notify.a"])
    create(queue, qb, b)
    everything = [("task-defined", a), ("task-pending", a), ("task-defined", b),
                  ("task-pending", b)]
    seen_all(witness, everything)
    marker = create(queue, new_task_queue(), routes=[marker_route])

    order = [summary(f) for f in witness.received]
    for listener, (bindings, wanted) in zip(listeners, cases):
        frames = listener.read_until(lambda f: summary(f) == ("task-defined", marker))
        got = [f for f in frames if subject(f) in (a, b)]
        assert [summary(f) for f in got] == sorted(wanted, key=order.index), bindings
        # What this module's own matcher says about the witness's messages agrees.
        assert [summary(f) for f in witness.received
                if subject(f) in (a, b) and binding_matches(bindings, f)] == \
            [summary(f) for f in got], bindings
        for frame in got:
            # The primary key, also when the message matched through a CC key.
            assert frame["routingKey"].startswith(f"primary.{subject(frame)}.")
            assert frame["routes"] == (["index.x.y", "notify.a"] if subject(frame) == a else [])
            assert frame in witness.received
        listener.close()
    witness.close()


# --- 3. resuming with a cursor ---------------------------------------------------------------


def test_reconnecting_with_the_cursor_loses_and_repeats_nothing(events_server):
    queue = events_server.queue()
    task_queue_id = new_task_queue()
    provisioner_id, worker_type = task_queue_id.split("/")
    pattern = f"primary.*.*.*.*.{provisioner_id}.{worker_type}.#"
    bindings = [("task-defined", pattern), ("task-pending", pattern)]
    steady = Listener(events_server, bindings)
    resuming = Listener(events_server, bindings)

    first_tasks = [create(queue, task_queue_id) for _ in range(3)]
    before = resuming.read(6)
    assert {subject(f) for f in before} == set(first_tasks)
    cursor = before[-1]["cursor"]
    resuming.close()

    later_tasks = [create(queue, task_queue_id) for _ in range(4)]
    reference = steady.read(14)
    assert {subject(f) for f in reference} == set(first_tasks + later_tasks)

    resumed = Listener(events_server, bindings, cursor=cursor)
    after = resumed.read(8)
    assert before + after == reference

    # Resuming from the middle starts right after the cursor given.
    middle = Listener(events_server, bindings, cursor=reference[3]["cursor"])
    assert middle.read(10) == reference[4:]

    # Nothing more: the next message is the marker's.
    marker = create(queue, task_queue_id)
    for listener in (steady, resumed, middle):
        assert [summary(f) for f in listener.read(2)] == [("task-defined", marker),
                                                          ("task-pending", marker)]
        listener.close()

    # A listener resuming from a cursor also receives messages published after it connected.
    assert resumed.received[-2:] == steady.received[-2:] == middle.received[-2:]


# --- 4. a listener that does not read --------------------------------------------------------


# Big messages: 64 routes and 16 kB of tags per task, so that the kernel's socket buffers
# cannot absorb the stream of a listener that does not read.
BIG_ROUTES = [f"index.{i:02d}.{'r' * 230}" for i in range(64)]
BIG_TAGS = {f"tag{i}": "t" * 4000 for i in range(4)}


def slow_task_count():
    """Tasks enough that their messages (two each, ~31 kB) are twice what can be held between
    the server and a client that does not read: the server's socket send buffer (at most
    tcp_wmem's maximum), actix-ws's channel (32 frames) and the listener's buffer (64)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            send_buffer = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        send_buffer = 4 << 20
    return send_buffer // 30_000 + 32 + 64


SLOW_TASKS = slow_task_count()


def test_a_listener_that_falls_behind_is_closed_with_its_cursor_and_resumes(slow_server):
    queue = slow_server.queue()
    task_queue_id = new_task_queue()
    # A small receive buffer, so that little of the stream waits in the kernel.
    slow = Listener(slow_server, EVERYTHING,
                    sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 8192),))
    start = cursor_sequence(slow.ready["cursor"])

    durations = []

    def create_one(_):
        began = time.monotonic()
        task_id = create(queue, task_queue_id, routes=BIG_ROUTES, tags=BIG_TAGS)
        durations.append(time.monotonic() - began)
        return task_id

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        task_ids = list(pool.map(create_one, range(SLOW_TASKS)))
    elapsed = time.monotonic() - began
    # The queue did not wait for the listener.
    assert max(durations) < 5, max(durations)
    assert elapsed < 30, elapsed

    with pytest.raises(Closed) as closed:
        while True:
            slow.message()
    code, reason = closed.value.code, closed.value.reason
    assert code == 1008, (code, reason)
    assert "fell behind" in reason, reason
    match = re.search(r"cursor (\d+\.\d+)", reason)
    assert match, reason
    cursor = match.group(1)
    delivered = slow.received
    assert len(delivered) < 2 * SLOW_TASKS, "the listener never fell behind"
    # The cursor to resume from is that of the last message delivered (or the start).
    assert cursor == (delivered[-1]["cursor"] if delivered else slow.ready["cursor"])
    slow.close()

    resumed = Listener(slow_server, EVERYTHING, cursor=cursor)
    rest = resumed.read(2 * SLOW_TASKS - len(delivered), timeout=60)
    every = delivered + rest
    # Nothing lost, nothing repeated: the listener is bound to everything on a server that
    # publishes nothing else, so its cursors are consecutive.
    assert [cursor_sequence(f["cursor"]) for f in every] == \
        [(start[0], start[1] + i) for i in range(1, 2 * SLOW_TASKS + 1)]
    assert sorted(summary(f) for f in every) == sorted(
        (exchange, task_id) for task_id in task_ids
        for exchange in ("task-defined", "task-pending"))
    for task_id in task_ids:
        assert [short(f["exchange"]) for f in every if subject(f) == task_id] == \
            ["task-defined", "task-pending"]
    assert every[0]["routes"] == BIG_ROUTES
    assert every[0]["payload"]["task"]["tags"] == BIG_TAGS
    metrics = requests.get(f"{slow_server.root_url}/metrics", timeout=WAIT).text
    assert re.search(r"^taskfold_listeners_dropped_total 1(\.0)?$", metrics, re.M), metrics
    resumed.close()


# --- 5. refused requests ---------------------------------------------------------------------


def test_invalid_listen_requests_get_an_error_frame_and_1008(events_server):
    ready = Listener(events_server, [("task-defined", "#")]).ready["cursor"]
    epoch, sequence = cursor_sequence(ready)
    one = [{"exchange": "task-defined", "routingKeyPattern": "#"}]
    cases = [
        ({"bindings": [{"exchange": "task-nothing", "routingKeyPattern": "#"}]},
         "InvalidRequestArguments", "task-nothing"),
        ({"bindings": [{"exchange": "exchange/taskcluster-queue/v2/task-defined",
                        "routingKeyPattern": "#"}]}, "InvalidRequestArguments", "v2"),
        ({"bindings": []}, "InvalidRequestArguments", "binding"),
        ({"bindings": [{"exchange": "task-defined", "routingKeyPattern": "a.b*"}]},
         "InvalidRequestArguments", "a.b*"),
        ({"bindings": [{"exchange": "task-defined", "routingKeyPattern": ""}]},
         "InvalidRequestArguments", "empty"),
        ({"bindings": one, "cursor": "not-a-cursor"}, "InvalidRequestArguments",
         "not-a-cursor"),
        ({"bindings": one, "cursor": "1.5"}, "ResourceExpired", "1.5"),
        ({"bindings": one, "cursor": f"{epoch}.{sequence + 1000}"}, "ResourceExpired",
         f"{epoch}.{sequence + 1000}"),
        ({"bindings": one, "extra": 1}, "InvalidRequestArguments", "extra"),
        ({"cursor": ready}, "InvalidRequestArguments", "bindings"),
        ("not json", "InvalidRequestArguments", None),
    ]
    for request, code, mentioned in cases:
        frame, close_code, reason = refused(events_server, request)
        assert (frame["type"], frame["code"], close_code) == ("error", code, 1008), \
            (request, frame, close_code)
        if mentioned is not None:
            assert mentioned in frame["message"], (request, frame)
        assert reason, request


def test_a_cursor_older_than_the_kept_messages_is_refused(short_memory_server):
    queue = short_memory_server.queue()
    listener = Listener(short_memory_server, EVERYTHING)
    epoch, start = cursor_sequence(listener.ready["cursor"])
    for _ in range(3):
        create(queue, new_task_queue())
    frames = listener.read(6)
    sequences = [cursor_sequence(f["cursor"])[1] for f in frames]
    assert sequences == list(range(start + 1, start + 7))

    # The last 3 are kept: resuming after the 3rd-last-but-one works, before it does not.
    kept = Listener(short_memory_server, EVERYTHING, cursor=frames[2]["cursor"])
    assert kept.read(3) == frames[3:]
    kept.close()
    frame, code, reason = refused(short_memory_server, {
        "bindings": [{"exchange": "task-defined", "routingKeyPattern": "#"}],
        "cursor": frames[1]["cursor"]})
    assert (frame["code"], code) == ("ResourceExpired", 1008), frame
    assert frames[1]["cursor"] in frame["message"]
    # SSE refuses it the same way, with Taskcluster's error body.
    status, body = sse_error(short_memory_server,
                             {"exchange": "task-defined", "routingKeyPattern": "#"},
                             headers={"Last-Event-ID": frames[1]["cursor"]})
    assert (status, body["code"]) == (410, "ResourceExpired"), body
    listener.close()


def test_invalid_sse_requests_are_400_with_taskclusters_error(events_server):
    cases = [
        [("exchange", "task-defined"), ("exchange", "task-pending"),
         ("routingKeyPattern", "#")],
        [("exchange", "task-defined")],
        [],
        [("exchange", "task-nothing"), ("routingKeyPattern", "#")],
        [("exchange", "task-defined"), ("routingKeyPattern", "a.#b")],
        [("exchange", "task-defined"), ("routingKeyPattern", "#"), ("cursor", "nope")],
        [("exchange", "task-defined"), ("routingKeyPattern", "#"), ("other", "x")],
    ]
    for query in cases:
        status, body = sse_error(events_server, query)
        assert status == 400, (query, status, body)
        assert body["code"] == "InvalidRequestArguments", (query, body)
        assert body["message"], query
    status, body = sse_error(events_server, [("exchange", "task-defined"),
                                             ("routingKeyPattern", "#"), ("cursor", "1.5")])
    assert (status, body["code"]) == (410, "ResourceExpired"), body


# --- 6. Server-Sent Events -------------------------------------------------------------------


def test_sse_delivers_what_the_websocket_does_and_resumes_with_last_event_id(events_server):
    queue = events_server.queue()
    task_queue_id = new_task_queue()
    provisioner_id, worker_type = task_queue_id.split("/")
    pairs = [("task-defined", f"primary.*._._._.{provisioner_id}.{worker_type}.#"),
             ("task-pending", f"*.*.0.#.{worker_type}.#")]
    listener = Listener(events_server, pairs)
    stream = Sse(events_server, pairs)
    tasks = [create(queue, task_queue_id) for _ in range(3)]
    frames = listener.read(6)
    assert {subject(f) for f in frames} == set(tasks)
    events = [stream.event() for _ in range(6)]
    assert [event["data"] for event in events] == \
        [{k: v for k, v in frame.items() if k != "type"} for frame in frames]
    assert cursor_sequence(stream.ready) < cursor_sequence(events[0]["id"])

    # Resuming after the 2nd: by Last-Event-ID, by `cursor`, and the header winning.
    for resume in ({"last_event_id": events[1]["id"]}, {"cursor": events[1]["id"]},
                   {"last_event_id": events[1]["id"], "cursor": "1.5"}):
        resumed = Sse(events_server, pairs, **resume)
        assert [resumed.event() for _ in range(4)] == events[2:], resume
        resumed.close()

    # Nothing more than the websocket got: the next event on both is the marker's.
    marker = create(queue, task_queue_id)
    assert [summary(f) for f in listener.read(2)] == [("task-defined", marker),
                                                      ("task-pending", marker)]
    assert [summary(stream.event()["data"]) for _ in range(2)] == \
        [("task-defined", marker), ("task-pending", marker)]
    stream.close()
    listener.close()


# --- 7. taskfold listen ----------------------------------------------------------------------


def run_listen(server, *args):
    return subprocess.Popen(
        [BINARY, "listen", "--root-url", server.root_url, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_taskfold_listen_prints_json_lines(events_server):
    queue = events_server.queue()
    task_queue_id = new_task_queue()
    task_id = new_task_id()
    bindings = [("task-defined", f"primary.{task_id}.#"),
                ("task-pending", f"primary.{task_id}.#")]
    reference = Listener(events_server, bindings)
    # Starting from this cursor, the CLI cannot miss the task whenever it connects.
    cursor = reference.ready["cursor"]
    process = run_listen(events_server, "--exchange", "task-defined",
                         "--routing-key", f"primary.{task_id}.#",
                         "--exchange", PREFIX + "task-pending",
                         "--routing-key", f"primary.{task_id}.#",
                         "--count", "2", "--cursor", cursor)
    create(queue, task_queue_id, task_id, routes=["index.cli.test"])
    try:
        stdout, stderr = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    frames = reference.read(2)
    assert lines == [{key: frame[key] for key in ("exchange", "routingKey", "payload", "routes")}
                     for frame in frames]
    for line in lines:
        assert set(line) == {"exchange", "routingKey", "payload", "routes"}
        exchange_schemas.validate(line["exchange"], line["payload"])
        assert line["routingKey"] == exchange_schemas.routing_key(line["exchange"],
                                                                  line["payload"])
        assert line["routes"] == ["index.cli.test"]
    assert [short(line["exchange"]) for line in lines] == ["task-defined", "task-pending"]
    reference.close()


def test_taskfold_listen_without_a_cursor_prints_what_comes_after_it_connects(events_server):
    queue = events_server.queue()
    route = f"cli.{uuid.uuid4().hex}"
    process = run_listen(events_server, "--exchange", "task-pending",
                         "--routing-key", f"route.{route}", "--count", "1")
    # It prints the first task made once it listens; make them until it has.
    stdout, stderr, created = make_until_exit(
        process, lambda: create(queue, new_task_queue(), routes=[route]), WAIT)
    assert process.returncode == 0, stderr
    [line] = [json.loads(line) for line in stdout.splitlines()]
    assert line["exchange"] == PREFIX + "task-pending"
    assert line["payload"]["status"]["taskId"] in created
    assert line["routes"] == [route]


# --- permessage-deflate (RFC 7692), spoken byte by byte --------------------------------------


class RawSocket:
    """A websocket client on a plain socket, for what websocket-client cannot negotiate."""

    def __init__(self, server, extensions):
        url = urllib.parse.urlparse(ws_url(server))
        self.sock = socket.create_connection((url.hostname, url.port), timeout=WAIT)
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        self.sock.sendall((
            f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{offer}\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed during the handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines
        self.headers = {name.lower(): value.strip()
                        for name, value in (line.split(":", 1) for line in lines[1:])}
        OPEN.append(self)

    def send_text(self, payload, compressed):
        """A masked text frame; compressed with RSV1 set when asked."""
        if compressed:
            deflater = zlib.compressobj(wbits=-15)
            payload = deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH)
            assert payload.endswith(b"\x00\x00\xff\xff")
            payload = payload[:-4]
        first = 0x80 | (0x40 if compressed else 0) | 0x1
        assert len(payload) < 0x10000
        header = bytes([first, 0x80 | 126]) + struct.pack("!H", len(payload)) \
            if len(payload) > 125 else bytes([first, 0x80 | len(payload)])
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _take(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def frame(self):
        """The next frame: (compressed, opcode, payload)."""
        first, second = self._take(2)
        assert not second & 0x80, "a server's frames are not masked"
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        return bool(first & 0x40), first & 0x0F, self._take(length)

    def close(self):
        self.sock.close()


def inflate_message(payload, inflater=None):
    """A compressed message: on its own, as `server_no_context_takeover` promises, or in the
    context `inflater` kept of the messages before."""
    inflater = inflater or zlib.decompressobj(wbits=-15)
    return inflater.decompress(payload + b"\x00\x00\xff\xff")


def test_permessage_deflate_compresses_every_message_on_its_own_when_asked(events_server):
    raw = RawSocket(events_server,
                    "permessage-deflate; server_no_context_takeover; client_max_window_bits")
    assert raw.headers.get("sec-websocket-extensions") == \
        "permessage-deflate; server_no_context_takeover", raw.headers
    # The client's own messages may be compressed too.
    subscription = {"bindings": [{"exchange": PREFIX + "task-defined", "routingKeyPattern": "#"},
                                 {"exchange": PREFIX + "task-pending", "routingKeyPattern": "#"}]}
    raw.send_text(json.dumps(subscription).encode(), compressed=True)
    compressed, opcode, payload = raw.frame()
    assert opcode == 0x1 and not compressed
    ready = json.loads(payload)
    exchange_schemas.validate_listener_ready(ready)
    queue = events_server.queue()
    task_queue_id = new_task_queue()
    task_ids = [create(queue, task_queue_id) for _ in range(3)]
    seen = []
    while len(seen) < 6:
        compressed, opcode, payload = raw.frame()
        if opcode != 0x1:
            continue
        assert compressed, "a message frame went out uncompressed"
        frame = json.loads(inflate_message(payload))
        check_frame(frame)
        seen.append((short(frame["exchange"]), frame["payload"]["status"]["taskId"]))
    assert sorted(seen) == sorted([("task-defined", task_id) for task_id in task_ids]
                                  + [("task-pending", task_id) for task_id in task_ids])


def test_permessage_deflate_in_context_inflates_for_early_and_late_listeners(events_server):
    """Without `server_no_context_takeover`, messages lean on the ones before them. Listeners
    that bind alike share those frames; one that joins later gets frames that stand alone
    until the shared context restarts (every 256 KiB of text), then shares them too."""
    offer = "permessage-deflate; client_max_window_bits"
    bindings = {"bindings": [{"exchange": PREFIX + "task-defined", "routingKeyPattern": "#"},
                             {"exchange": PREFIX + "task-pending", "routingKeyPattern": "#"}]}

    def connect():
        raw = RawSocket(events_server, offer)
        assert raw.headers.get("sec-websocket-extensions") == "permessage-deflate", raw.headers
        raw.send_text(json.dumps(bindings).encode(), compressed=False)
        compressed, opcode, payload = raw.frame()
        assert (compressed, opcode) == (False, 0x1) and json.loads(payload)["type"] == "ready"
        return raw

    def read(raw, inflater, count):
        """(exchange, taskId, compressed size) of the next `count` messages."""
        seen = []
        while len(seen) < count:
            compressed, opcode, payload = raw.frame()
            if opcode != 0x1:
                continue
            assert compressed, "a message frame went out uncompressed"
            frame = json.loads(inflate_message(payload, inflater))
            check_frame(frame)
            seen.append((short(frame["exchange"]), frame["payload"]["status"]["taskId"],
                         len(payload)))
        return seen

    queue = events_server.queue()
    task_queue_id = new_task_queue()
    early, early_inflater = connect(), zlib.decompressobj(wbits=-15)
    first = [create(queue, task_queue_id) for _ in range(20)]
    late, late_inflater = connect(), zlib.decompressobj(wbits=-15)
    # Enough text for the shared context to restart at least once after the late listener.
    second = [create(queue, task_queue_id) for _ in range(400)]
    early_seen = read(early, early_inflater, 2 * (len(first) + len(second)))
    late_seen = read(late, late_inflater, 2 * len(second))
    expected = sorted((exchange, task_id) for task_id in first + second
                      for exchange in ("task-defined", "task-pending"))
    assert sorted((exchange, task_id) for exchange, task_id, _ in early_seen) == expected
    assert sorted((exchange, task_id) for exchange, task_id, _ in late_seen) == \
        [pair for pair in expected if pair[1] in second]
    # A message on its own compresses to several hundred bytes, leaning on others to far less.
    for seen in (early_seen, late_seen):
        tail = [size for _, _, size in seen[-100:]]
        assert sum(tail) / len(tail) < 200, tail


def test_a_deflate_offer_the_server_cannot_honour_gets_plain_frames(events_server):
    # It would have to compress with a 1 KiB window.
    raw = RawSocket(events_server, "permessage-deflate; server_max_window_bits=10")
    assert "sec-websocket-extensions" not in raw.headers, raw.headers
    raw.send_text(json.dumps({"bindings": [{"exchange": PREFIX + "task-defined",
                                            "routingKeyPattern": "#"}]}).encode(),
                  compressed=False)
    compressed, opcode, payload = raw.frame()
    assert (compressed, opcode) == (False, 0x1)
    assert json.loads(payload)["type"] == "ready"
    task_id = create(events_server.queue(), new_task_queue())
    compressed, opcode, payload = raw.frame()
    assert (compressed, opcode) == (False, 0x1)
    assert json.loads(payload)["payload"]["status"]["taskId"] == task_id
