"""docker-worker's interactive artifacts, Taskcluster's current shell protocol (v2) and
docker-worker's linger rules (schemas/interactive.md), end to end: the real `taskfold serve`, a
real `taskfold worker --engine docker` and a Docker engine running the local busybox image of
TASKFOLD_TEST_IMAGE.

- docker-worker's interactive tutorial in Node (tests/node/interactive.mjs: taskcluster-client and
  docker-exec-websocket-server@1.4.0's `DockerExecClient`, which tests/run.sh installs);
- the session artifacts: each GET of `private/docker-worker/interactive.sock` mints a single-use,
  expiring ticket in a websocket URL's path, whose socket opens a session as createSession does
  (its `tty` and `command` from the query); `private/generic-worker/shell.html` leads to the
  shell page with `v=2` and such a URL; a used, wrong or expired ticket is a 401, a run that is
  not running a 409;
- a v2 client (0x01 stdin, 0x02 resize, raw output, the end is the close) that sends at once;
- the linger rules, with small values: a run whose command exits at once stays the minimum after
  its start, and a while after its last session.
"""

import os
import re
import struct
import subprocess
import time
import urllib.parse

import pytest
import requests
import websocket

from conftest import REPO, ROOT_CLIENT, ROOT_TOKEN
from shell_client import ShellClient, handshake_failure
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, artifacts,
                            create_task, remove_containers, serve, wait_resolved, wait_until)

IMAGE = os.environ.get("TASKFOLD_TEST_IMAGE", "taskfold-test/busybox:1")
NODE_SCRIPT = os.path.join(REPO, "tests", "node", "interactive.mjs")
SOCKET = "private/docker-worker/interactive.sock"
PAGE = "private/docker-worker/interactive.html"
GENERIC_WORKER_SHELL = "private/generic-worker/shell.html"
TASKFOLD_SHELL = "private/taskfold/shell.html"
TICKET_SECONDS = 10
# docker-worker's rules, small: at least MIN_SECONDS after the container's start, and
# AFTER_SESSION_SECONDS after the last session; linger_seconds (after the exit) is shorter.
MIN_SECONDS = 10
AFTER_SESSION_SECONDS = 8
LINGER_SECONDS = 1
SERVER_CONFIG = SHORT_CLAIM_WORK_CONFIG + f"""
[sessions]
ticket_seconds = {TICKET_SECONDS}
"""
WORKER_CONFIG = f"""
[worker.interactive]
linger_seconds = {LINGER_SECONDS}
docker_min_seconds = {MIN_SECONDS}
docker_after_session_seconds = {AFTER_SESSION_SECONDS}
"""
SHELL_TIMEOUT = 30
SLEEP = ["sh", "-c", "sleep 90"]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve(tmp_path_factory, SERVER_CONFIG)


@pytest.fixture(scope="module")
def worker(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("interactive-worker")
    config = base / "worker.toml"
    config.write_text(WORKER_CONFIG)
    worker = WorkerProcess(server, "docker", base / "data", base, capacity=4,
                           options=["--config", str(config)]).start()
    yield worker
    worker.stop()
    remove_containers(f"taskfold.worker={worker.label}", worker.label)


@pytest.fixture
def tasks(server, worker):
    """Makes interactive tasks on the worker's queue; cancels what is still running after."""
    queue = server.queue()
    made = []

    def make(command=SLEEP, max_run_time=120, running=True):
        assert worker.alive(), "the worker process exited"
        task_id = create_task(queue, worker.task_queue_id, payload={
            "image": IMAGE, "command": list(command), "maxRunTime": max_run_time,
            "features": {"interactive": True}})
        made.append(task_id)
        if running:
            wait_running(queue, task_id)
        return task_id

    yield make
    for task_id in made:
        try:
            if queue.status(task_id)["status"]["state"] in ("pending", "running"):
                queue.cancelTask(task_id)
            wait_until(lambda: queue.status(task_id)["status"]["state"]
                       not in ("pending", "running"), 30)
        except Exception as error:  # the test's own failure matters more
            print(f"canceling {task_id}: {error}")


# --- helpers -------------------------------------------------------------------------------


def run_state(queue, task_id, run_id=0):
    runs = queue.status(task_id)["status"]["runs"]
    return runs[run_id]["state"] if len(runs) > run_id else None


def wait_running(queue, task_id):
    assert wait_until(lambda: run_state(queue, task_id) == "running"), \
        f"{task_id} not running within {TIMEOUT} s: {queue.status(task_id)}"


def redirect(server, task_id, name, run_id=0, latest=False):
    """Where a signed GET of the artifact redirects (303), once the worker has made it."""
    queue = server.queue()
    if latest:
        url = queue.buildSignedUrl("getLatestArtifact", task_id, name)
    else:
        url = queue.buildSignedUrl("getArtifact", task_id, str(run_id), name)

    def answered():
        response = requests.get(url, allow_redirects=False, timeout=10)
        return response if response.status_code != 404 else None

    response = wait_until(answered, 30)
    assert response is not None, f"{name} of {task_id} still missing"
    assert response.status_code == 303, (response.status_code, response.text)
    location = response.headers["Location"]
    assert response.json() == {"storageType": "reference", "url": location}, response.text
    return location


def socket_url(server, task_id, run_id=0):
    """A fresh websocket URL of the run (v1 framing), from interactive.sock."""
    return redirect(server, task_id, SOCKET, run_id)


def with_query(url, **query):
    return url + "?" + urllib.parse.urlencode(query, doseq=True)


def refused(url, status, code):
    failure = handshake_failure(url)
    assert failure.status == status, (failure.status, failure.body)
    body = failure.json()
    assert body["code"] == code, body
    assert "message" in body and "requestInfo" in body, body
    return body


class V2Client:
    """A user of Taskcluster's current shell protocol: sends `0x01` + bytes and `0x02` + rows +
    cols, and reads the output as raw bytes until the socket closes."""

    def __init__(self, url, timeout=SHELL_TIMEOUT):
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.output = bytearray()
        self.kinds = set()
        self.closed = False
        self.close_code = None

    def send_input(self, text):
        self.ws.send_binary(b"\x01" + text.encode())

    def resize(self, rows, cols):
        self.ws.send_binary(b"\x02" + struct.pack("<HH", rows, cols))

    def _receive(self, deadline):
        self.ws.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            self.closed = True
            return
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            if len(data) >= 2:
                self.close_code = struct.unpack("!H", data[:2])[0]
            self.closed = True
        elif opcode in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT):
            self.kinds.add(opcode)
            data = frame.data
            self.output += data.encode() if isinstance(data, str) else data

    def read_until(self, pattern, timeout=SHELL_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, bytes(self.output)):
            assert not self.closed and time.monotonic() < deadline, \
                f"{pattern!r} not seen; closed={self.closed} output={bytes(self.output)!r}"
            self._receive(deadline)

    def wait_closed(self, timeout=SHELL_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not self.closed:
            assert time.monotonic() < deadline, f"not closed; output={bytes(self.output)!r}"
            self._receive(deadline)

    def close(self):
        try:
            self.ws.close(timeout=2)
        except Exception:
            pass


# --- docker-worker's interactive tutorial, in Node -----------------------------------------


def test_the_interactive_tutorial_runs_in_node_unmodified(server, worker):
    modules = os.environ.get("TASKFOLD_NODE_MODULES")
    assert modules and os.path.isdir(os.path.join(modules, "docker-exec-websocket-server")), \
        "TASKFOLD_NODE_MODULES must name a node_modules with taskcluster-client and " \
        "docker-exec-websocket-server (tests/run.sh)"
    env = dict(os.environ, TASKCLUSTER_ROOT_URL=server.root_url,
               TASKCLUSTER_CLIENT_ID=ROOT_CLIENT, TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN,
               TASKFOLD_TASK_QUEUE_ID=worker.task_queue_id, TASKFOLD_TEST_IMAGE=IMAGE)
    env.pop("TASKCLUSTER_CERTIFICATE", None)
    done = subprocess.run(["node", NODE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=150)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the interactive tutorial works as written" in done.stdout


# --- the session artifacts -----------------------------------------------------------------


def test_an_interactive_docker_run_has_the_session_artifacts(server, tasks):
    task_id = tasks()
    wanted = (SOCKET, PAGE, GENERIC_WORKER_SHELL, TASKFOLD_SHELL)
    listed = wait_until(lambda: (lambda found: found if all(name in found for name in wanted)
                                 else None)(artifacts(server.queue(), task_id)), 20)
    assert listed, artifacts(server.queue(), task_id)
    assert all(listed[name] == "reference" for name in wanted), listed

    page = f"{server.root_url}/shell/?taskId={task_id}&runId=0"
    assert redirect(server, task_id, PAGE) == page
    assert redirect(server, task_id, TASKFOLD_SHELL) == page
    ws_root = server.root_url.replace("http://", "ws://")
    socket_path = f"{ws_root}/api/queue/v1/task/{task_id}/runs/0/socket"
    first, second = socket_url(server, task_id), redirect(server, task_id, SOCKET, latest=True)
    for url in (first, second):
        assert re.fullmatch(re.escape(socket_path) + r"/v1/[A-Za-z0-9_-]{44}", url), url
    assert first != second, "each GET mints a new ticket"

    shell_page = redirect(server, task_id, GENERIC_WORKER_SHELL)
    assert shell_page.startswith(f"{server.root_url}/shell/?"), shell_page
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(shell_page).query)
    assert (query["v"], query["taskId"], query["runId"]) == (["2"], [task_id], ["0"]), query
    assert re.fullmatch(re.escape(socket_path) + r"/v2/[A-Za-z0-9_-]{44}",
                        query["socketUrl"][0]), query
    # The page the redirect names is served (its socketUrl is this queue's).
    assert requests.get(shell_page, timeout=10).status_code == 200

    # Private: without the scope there is no ticket.
    anonymous = requests.get(server.api(f"/task/{task_id}/runs/0/artifacts/{SOCKET}"),
                             allow_redirects=False, timeout=10)
    assert anonymous.status_code == 403, (anonymous.status_code, anonymous.text)


def test_a_ticket_opens_one_session_with_the_querys_command_and_tty(server, tasks):
    queue = server.queue()
    task_id = tasks()
    url = socket_url(server, task_id)
    command = ["sh", "-c", "echo answer-$((6*7)); echo oops >&2; exit 5"]
    shell = ShellClient(with_query(url, tty="false", command=command), timeout=SHELL_TIMEOUT)
    try:
        shell.wait_ready()
        shell.read_until(b"answer-42\n")
        assert shell.wait_stopped() == 5, shell.describe()
        # No TTY: stderr comes apart.
        shell.wait(lambda: b"oops" in shell.errors_output, "no stderr")
        code, _ = shell.wait_closed(10)
        assert code == 1000, shell.describe()
    finally:
        shell.close()
    # The session was opened as createSession opens one: listed, and in the task's history,
    # for the caller of getArtifact.
    sessions = queue._makeHttpRequest("get", f"task/{task_id}/runs/0/sessions", None)["sessions"]
    [session] = sessions
    assert (session["command"], session["tty"], session["clientId"]) == \
        (command, False, ROOT_CLIENT), session
    assert wait_until(lambda: queue._makeHttpRequest(
        "get", f"task/{task_id}/runs/0/sessions", None)["sessions"][0]["state"] == "closed", 15)
    history = queue._makeHttpRequest("get", f"task/{task_id}/history", None)["events"]
    opened = [event for event in history if event["kind"] == "session-opened"]
    assert [event.get("clientId") for event in opened] == [ROOT_CLIENT], history

    # Without a query: `sh` with a TTY.
    shell = ShellClient(socket_url(server, task_id), timeout=SHELL_TIMEOUT)
    try:
        shell.wait_ready()
        shell.run("tty >/dev/null && echo a-$((1+1))-tty")
        shell.read_until(re.compile(rb"a-2-tty\r\n"))
        shell.run("exit")
        assert shell.wait_stopped() == 0, shell.describe()
    finally:
        shell.close()


def test_a_used_wrong_or_expired_ticket_is_a_401_and_a_run_not_running_a_409(server, tasks):
    queue = server.queue()
    task_id = tasks()
    url = socket_url(server, task_id)
    shell = ShellClient(url, timeout=SHELL_TIMEOUT)
    try:
        shell.wait_ready()
        # Used.
        body = refused(url, 401, "AuthenticationFailed")
        assert "ticket" in body["message"], body
        refused(with_query(url, tty="true", command="sh"), 401, "AuthenticationFailed")
    finally:
        shell.close()
    # Wrong: another secret, another run, no ticket at all, a framing that does not exist.
    fresh = socket_url(server, task_id)
    wrong = fresh[:-1] + ("A" if fresh[-1] != "A" else "B")
    refused(wrong, 401, "AuthenticationFailed")
    refused(fresh.replace("/runs/0/", "/runs/1/"), 401, "AuthenticationFailed")
    refused(fresh.replace("/socket/v1/", "/socket/v3/"), 404, "ResourceNotFound")
    # The wrong tries did not spend it.
    shell = ShellClient(fresh, timeout=SHELL_TIMEOUT)
    shell.wait_ready()
    shell.close()
    # Expired.
    expiring = socket_url(server, task_id)
    time.sleep(TICKET_SECONDS + 1)
    refused(expiring, 401, "AuthenticationFailed")

    # Once the run is over, a ticket still comes, but its socket is a 409.
    queue.cancelTask(task_id)
    wait_resolved(queue, task_id)
    refused(socket_url(server, task_id), 409, "RequestConflict")


# --- Taskcluster's current shell protocol (v2) -------------------------------------------------


def v2_socket_url(server, task_id):
    page = redirect(server, task_id, GENERIC_WORKER_SHELL)
    return urllib.parse.parse_qs(urllib.parse.urlsplit(page).query)["socketUrl"][0]


def test_a_v2_client_gets_output_and_its_resize_through_shell_html(server, tasks):
    task_id = tasks()
    client = V2Client(v2_socket_url(server, task_id))
    try:
        # At once, without waiting for anything: the queue holds it until the shell is ready.
        client.resize(37, 101)
        client.send_input("stty size; echo v2-$((40+2))\n")
        client.read_until(rb"37 101\r\n")
        client.read_until(rb"v2-42\r\n")
        client.resize(50, 120)
        client.send_input("stty size\n")
        client.read_until(rb"50 120\r\n")
        # The end is the socket's close: no exit message.
        client.send_input("exit 3\n")
        client.wait_closed()
        assert client.close_code == 1000, client.close_code
        assert client.kinds == {websocket.ABNF.OPCODE_BINARY}, client.kinds
        # Output only: no opcode of the v1 protocol (resume, stopped) came through.
        assert not re.search(rb"^[\x64\xc8]", bytes(client.output)), bytes(client.output)
    finally:
        client.close()
    sessions = server.queue()._makeHttpRequest(
        "get", f"task/{task_id}/runs/0/sessions", None)["sessions"]
    assert wait_until(lambda: server.queue()._makeHttpRequest(
        "get", f"task/{task_id}/runs/0/sessions", None)["sessions"][0].get("exitStatus") == 3,
        15), sessions


def test_a_v2_ticket_is_single_use_too(server, tasks):
    task_id = tasks()
    url = v2_socket_url(server, task_id)
    client = V2Client(url)
    try:
        client.send_input("echo once\n")
        client.read_until(rb"once\r\n")
        refused(url, 401, "AuthenticationFailed")
    finally:
        client.close()


# --- docker-worker's linger rules ------------------------------------------------------------


def test_a_run_whose_command_exits_at_once_stays_the_minimum_after_its_start(server, tasks):
    queue = server.queue()
    task_id = tasks(["true"])
    running = time.monotonic()
    # Nobody connects: it stays (the container started a moment after `running`).
    while time.monotonic() - running < MIN_SECONDS - 2:
        assert run_state(queue, task_id) == "running", queue.status(task_id)
        time.sleep(0.5)
    status = wait_resolved(queue, task_id, timeout=MIN_SECONDS + 20)
    waited = time.monotonic() - running
    run = status["runs"][0]
    assert (run["state"], run["reasonResolved"]) == ("completed", "completed"), status
    assert waited < MIN_SECONDS + 15, f"resolved {waited:.1f} s after running"


def test_the_run_stays_a_while_after_its_last_session(server, tasks):
    queue = server.queue()
    task_id = tasks(["true"])
    running = time.monotonic()
    shell = ShellClient(socket_url(server, task_id), timeout=SHELL_TIMEOUT)
    try:
        shell.wait_ready()
        # Attached past the minimum: the run stays.
        while time.monotonic() - running < MIN_SECONDS + 2:
            assert run_state(queue, task_id) == "running", queue.status(task_id)
            mark = shell.mark()
            shell.run("echo tick-$((1+1))")
            shell.read_until(re.compile(rb"tick-2\r?\n"), start=mark)
            time.sleep(1)
        shell.run("exit")
        assert shell.wait_stopped() == 0, shell.describe()
        ended = time.monotonic()
    finally:
        shell.close()
    # After the session: AFTER_SESSION_SECONDS, though linger_seconds is shorter and the
    # minimum passed.
    while time.monotonic() - ended < AFTER_SESSION_SECONDS - 2:
        assert run_state(queue, task_id) == "running", queue.status(task_id)
        time.sleep(0.5)
    status = wait_resolved(queue, task_id, timeout=AFTER_SESSION_SECONDS + 20)
    waited = time.monotonic() - ended
    run = status["runs"][0]
    assert (run["state"], run["reasonResolved"]) == ("completed", "completed"), status
    assert waited < AFTER_SESSION_SECONDS + 15, f"resolved {waited:.1f} s after the session"
