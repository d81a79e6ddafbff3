"""Runs the real `taskfold serve` binary and points the official Taskcluster Python client at it.

The binary comes from `TASKFOLD_BINARY` (tests/run.sh builds it), else `target/debug/taskfold`.
Each server gets a free port, a fresh data directory and a root token; its log is printed when a
test fails to start it.
"""

import datetime
import glob
import os
import signal
import socket
import subprocess
import time
import uuid

import pytest
import requests
import slugid
import taskcluster

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("TASKFOLD_BINARY", os.path.join(REPO, "target", "debug", "taskfold"))
ROOT_CLIENT = "static/taskcluster/root"
ROOT_TOKEN = "root-token-for-the-python-interop-tests"
LIMITED_CLIENT = "tests/limited"
LIMITED_TOKEN = "limited-token-for-the-python-interop-tests"

# A client that may create tasks in project `none` and nothing else: it lacks the scheduler,
# priority and queue scopes that createTask also requires.
CONFIG = f"""
[[auth.clients]]
client_id = "{LIMITED_CLIENT}"
access_token = "{LIMITED_TOKEN}"
scopes = ["queue:create-task:project:none"]
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `taskfold serve` process on a data directory that outlives it."""

    def __init__(self, data_dir, config):
        self.data_dir = str(data_dir)
        self.config = str(config)
        self.process = None
        self.log_dir = os.path.dirname(self.data_dir)
        self.starts = 0
        # More command-line arguments for `taskfold serve` (e.g. a --root-url of a proxy).
        self.args = []
        # Run in the child before `taskfold serve` starts (e.g. to set resource limits).
        self.preexec = None
        # More environment for `taskfold serve`.
        self.env = {}

    def start(self, port=None):
        self.port = port or free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.starts += 1
        log_path = os.path.join(self.log_dir, f"server-{self.starts}.log")
        self.log = open(log_path, "w")
        env = dict(os.environ, TASKFOLD_ROOT_ACCESS_TOKEN=ROOT_TOKEN, RUST_LOG="warn", **self.env)
        self.process = subprocess.Popen(
            [BINARY, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", self.data_dir, "--config", self.config, *self.args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=self.preexec,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"taskfold exited with {self.process.returncode}:\n"
                                   + open(log_path).read())
            try:
                if requests.get(self.api("/ping"), timeout=1).status_code == 200:
                    return self
            # A ping that times out, on a loaded machine, is one more try.
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.05)
        raise RuntimeError("taskfold did not answer /ping within 60 s:\n" + open(log_path).read())

    def api(self, path):
        return f"{self.root_url}/api/queue/v1{path}"

    def kill(self):
        """`kill -9`: no chance to flush or say goodbye."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def queue(self, credentials=None, **options):
        """The official Queue client; `credentials=None` means the root client, `{}`
        anonymous."""
        return self.client("Queue", credentials, **options)

    def client(self, service, credentials=None, **options):
        """The official client of `service` (`Queue`, `Secrets`, `Index`, ...), as `queue`."""
        if credentials is None:
            credentials = {"clientId": ROOT_CLIENT, "accessToken": ROOT_TOKEN}
        return getattr(taskcluster, service)({"rootUrl": self.root_url,
                                              "credentials": credentials,
                                              "maxRetries": 0, **options})


def make_server(tmp_path_factory, extra_config=""):
    base = tmp_path_factory.mktemp("taskfold")
    config = base / "taskfold.toml"
    config.write_text(extra_config + CONFIG)
    (base / "data").mkdir()
    return Server(base / "data", config)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    server = make_server(tmp_path_factory).start()
    yield server
    server.stop()


# Frequent snapshots, so that a restart loads snapshots and replays the tail after them.
SNAPSHOT_CONFIG = """
[queue]
snapshot_every_events = 25
"""


@pytest.fixture
def fresh_server(tmp_path_factory):
    """A server of the test's own, for tests that kill it; it snapshots every 25 events."""
    server = make_server(tmp_path_factory, SNAPSHOT_CONFIG)
    yield server
    server.stop()


@pytest.fixture
def fresh_quick_server(tmp_path_factory):
    """A server of the test's own with the short timers of `QUICK_CONFIG`."""
    server = make_server(tmp_path_factory, QUICK_CONFIG)
    yield server
    server.stop()


# Short timers, so that expiry and the end of a long poll happen within a test.
QUICK_CONFIG = """
[queue]
claim_timeout_seconds = 2

[api]
claim_work_timeout_seconds = 1
"""


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory):
    """A server whose claims expire after 2 s and whose claimWork waits 1 s."""
    server = make_server(tmp_path_factory, QUICK_CONFIG).start()
    yield server
    server.stop()


def wait_for(condition, timeout=15, interval=0.1):
    """Polls `condition` until it returns something true; that value, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


# Glob patterns of the log files of processes the tests started (servers, workers, farms).
WATCHED_LOGS = set()


def watch_logs(pattern):
    """Has `print_new_log_output` print, after each test, what the files matching `pattern`
    gained during it."""
    WATCHED_LOGS.add(pattern)


@pytest.fixture(autouse=True)
def print_new_log_output():
    """Prints what each watched log gained during the test (pytest shows it when the test
    fails). Until a test watches a log, it does nothing."""

    def paths():
        return sorted({path for pattern in WATCHED_LOGS for path in glob.glob(pattern)})

    offsets = {path: os.path.getsize(path) for path in paths()}
    yield
    for path in paths():
        with open(path, errors="replace") as log:
            log.seek(offsets.get(path, 0))
            text = log.read()
        if text:
            print(f"===== {path} =====\n{text}")


@pytest.fixture
def queue(server):
    return server.queue()


@pytest.fixture
def task_queue_id():
    """A task queue no other test uses, so claims only see this test's tasks."""
    return f"interop/w{uuid.uuid4().hex[:20]}"


def task_definition(task_queue_id, **overrides):
    now = datetime.datetime.now(datetime.timezone.utc)
    definition = {
        "taskQueueId": task_queue_id,
        "created": taskcluster.stringDate(now),
        "deadline": taskcluster.stringDate(now + datetime.timedelta(hours=1)),
        "payload": {"command": ["true"]},
        "metadata": {
            "name": "interop",
            "description": "a task made by the Python interop tests",
            "owner": "tests@example.com",
            "source": "https://example.com/taskfold/tests/python",
        },
    }
    definition.update(overrides)
    return definition


def new_task_id():
    return slugid.nice()


def failure(call, *args):
    """The error the client raised for `call(*args)`: its status and Taskcluster's body."""
    with pytest.raises((taskcluster.exceptions.TaskclusterRestFailure,
                        taskcluster.exceptions.TaskclusterAuthFailure)) as raised:
        call(*args)
    return raised.value


def claim(queue, task_queue_id, worker_id="w1", tasks=1):
    return queue.claimWork(task_queue_id, {"workerGroup": "wg", "workerId": worker_id,
                                           "tasks": tasks})["tasks"]


def date_in(delta):
    """A date `delta` from now in Taskcluster's JSON form (milliseconds, `Z`)."""
    when = datetime.datetime.now(datetime.timezone.utc) + delta
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def walk(call, *args, limit, **query):
    """Every page of a paginated listing, following continuationToken."""
    pages, page_query = [], {"limit": limit, **query}
    for _ in range(1000):
        page = call(*args, query=page_query)
        pages.append(page)
        if "continuationToken" not in page:
            return pages
        page_query = {"limit": limit, **query, "continuationToken": page["continuationToken"]}
    raise AssertionError("the listing did not end within 1000 pages")


def make_until_exit(process, make, timeout):
    """Calls `make()` every 0.2 s until `process` exits (a CLI that waits for what it is
    shown, e.g. `taskfold listen --count 1`); (its stdout, its stderr, what `make` made)."""
    made = []
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            made.append(make())
            time.sleep(0.2)
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return stdout, stderr, made


def limited_queue(server, scopes):
    """A client with temporary credentials holding only `scopes`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    credentials = taskcluster.createTemporaryCredentials(
        ROOT_CLIENT, ROOT_TOKEN, now - datetime.timedelta(minutes=1),
        now + datetime.timedelta(hours=1), scopes)
    return server.queue(credentials=credentials)
