"""What the tests of real workers share (test_worker_docker.py, test_worker_ssh.py,
test_task_cli.py): the `taskfold worker` process, the servers they serve, the waits, the task
creation and the artifact fetches. A plain module, so that conftest.py stays about the server.
"""

import glob
import os
import signal
import subprocess
import uuid

import requests

from conftest import (BINARY, ROOT_CLIENT, ROOT_TOKEN, make_server, new_task_id, task_definition,
                      wait_for, watch_logs)

# How long a worker test waits for anything (a run to resolve, a container, a farm to answer).
TIMEOUT = 60
RESOLVED = ("completed", "failed", "exception")
# claimWork answers within 2 s, so a SIGTERMed worker (or `taskfold up`) stops quickly.
SHORT_CLAIM_WORK_CONFIG = """
[api]
claim_work_timeout_seconds = 2
"""


# --- processes -----------------------------------------------------------------------------


def wait_until(condition, timeout=TIMEOUT, interval=0.2):
    """conftest's `wait_for` with the longer timeout and slower poll that real runs need."""
    return wait_for(condition, timeout, interval=interval)


def stop_process(process, timeout, name):
    """SIGTERM, then SIGKILL if `process` has not exited within `timeout` s: a clean stop
    when it can, and no teardown that hangs when it cannot."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} ignored SIGTERM for {timeout} s; killing it")
        process.kill()
        process.wait()


class WorkerProcess:
    """One `taskfold worker --engine ENGINE` process, on a task queue of its own unless given
    one. Each start logs (RUST_LOG=info) to a file of its own in `log_dir`, which conftest's
    autouse fixture prints after each test."""

    def __init__(self, server, engine, data_dir, log_dir, task_queue_id=None, worker_group=None,
                 worker_id=None, capacity=1, options=(), stop_timeout=60, root_url=None,
                 env=None):
        self.server = server
        # The server's own URL unless the worker reaches it another way (a proxy).
        self.root_url = root_url or server.root_url
        # Environment to add (None: remove the variable).
        self.env = dict(env or {})
        self.task_queue_id = task_queue_id or new_task_queue_id(engine)
        self.engine = engine
        self.data_dir = str(data_dir)
        self.log_dir = str(log_dir)
        self.worker_group = worker_group or f"{engine}-tests"
        self.worker_id = worker_id or f"{engine}-{uuid.uuid4().hex[:10]}"
        self.capacity = capacity
        self.options = list(options)
        self.stop_timeout = stop_timeout
        self.process = None
        self.starts = 0
        self.log_path = None
        watch_logs(os.path.join(glob.escape(self.log_dir), f"worker-{self.worker_id}-*.log"))

    @property
    def label(self):
        return f"{self.worker_group}/{self.worker_id}"

    def start(self):
        self.starts += 1
        self.log_path = os.path.join(self.log_dir, f"worker-{self.worker_id}-{self.starts}.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ, TASKCLUSTER_CLIENT_ID=ROOT_CLIENT,
                   TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN, RUST_LOG="info")
        env.pop("TASKCLUSTER_CERTIFICATE", None)
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        self.process = subprocess.Popen(
            [BINARY, "worker", "--root-url", self.root_url,
             "--task-queue-id", self.task_queue_id, "--worker-group", self.worker_group,
             "--worker-id", self.worker_id, "--capacity", str(self.capacity),
             "--engine", self.engine, "--data-dir", self.data_dir, *self.options],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        return self

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        """SIGKILL: what it started (containers, SSH sessions) stays behind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited within `stop_timeout` s."""
        if self.alive():
            stop_process(self.process, self.stop_timeout, f"worker {self.label}")
        if self.process is not None and not self.log.closed:
            self.log.close()


def new_task_queue_id(engine):
    """A task queue of its own, so that this worker claims only its test's tasks even when
    another suite's workers share the server or the Docker engine."""
    return f"proj-tests/{engine}-{uuid.uuid4().hex[:8]}"


def serve(tmp_path_factory, config):
    """The body of a server fixture (`yield from serve(…)`): a started server whose log
    conftest's autouse fixture prints after each test, stopped at teardown."""
    server = make_server(tmp_path_factory, config)
    watch_logs(os.path.join(glob.escape(server.log_dir), "server-*.log"))
    server.start()
    yield server
    server.stop()


def docker_ps(*filters):
    """Ids of every container (running or not) matching all `label=` filters."""
    command = ["docker", "ps", "-a", "-q"]
    for label in filters:
        command += ["--filter", f"label={label}"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def remove_containers(label, owner):
    """Removes every container labelled `label` (left by `owner`, a killed worker or a farm
    stopped mid-task), so that tests leave nothing on the shared Docker engine."""
    ids = docker_ps(label)
    if ids:
        print(f"removing containers left by {owner}: {ids}")
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


# --- tasks and their artifacts -------------------------------------------------------------


def create_task(queue, task_queue_id, **overrides):
    """Creates a task of conftest's standard definition (with `overrides`); its taskId."""
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, **overrides))
    return task_id


def wait_resolved(queue, task_id, run_id=0, timeout=TIMEOUT):
    """The task's status once run `run_id` exists and is resolved."""

    def resolved():
        status = queue.status(task_id)["status"]
        runs = status["runs"]
        if len(runs) > run_id and runs[run_id]["state"] in RESOLVED:
            return status
        return None

    status = wait_until(resolved, timeout)
    assert status is not None, \
        f"run {run_id} of {task_id} not resolved within {timeout} s: {queue.status(task_id)}"
    return status


def assert_run(status, run_id, state, reason_resolved, reason_created=None):
    run = status["runs"][run_id]
    assert (run["state"], run.get("reasonResolved")) == (state, reason_resolved), status
    if reason_created is not None:
        assert run["reasonCreated"] == reason_created, status


def artifact_url(server, task_id, run_id, name):
    return server.api(f"/task/{task_id}/runs/{run_id}/artifacts/{name}")


def artifacts(queue, task_id, run_id=0):
    """name → storageType of the run's artifacts."""
    listing = queue.listArtifacts(task_id, str(run_id))["artifacts"]
    return {entry["name"]: entry["storageType"] for entry in listing}


def fetch(server, task_id, run_id, name):
    """An artifact's content, following the queue's redirect (as a browser or curl -L would)."""
    response = requests.get(artifact_url(server, task_id, run_id, name), timeout=30)
    assert response.status_code == 200, \
        f"GET {name} of {task_id}/{run_id}: {response.status_code} {response.text}"
    return response.text


def assert_in_log(log, *lines):
    for line in lines:
        assert line in log, f"{line!r} not in the log:\n{log}"
