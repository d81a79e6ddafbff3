"""The one-machine farm and its command line: `taskfold up` (the queue plus a Docker worker,
credentials made once in `<data-dir>/credentials.json`) and `taskfold task run|status|log|
artifacts` against it, with the real Docker engine and the local image `taskfold-test/busybox:1`
(TASKFOLD_TEST_IMAGE; nothing is ever pulled).

One `taskfold up` (capacity 2, default data directory `./taskfold-data` under a directory of
its own, which is also the working directory of the `task` commands) serves most tests; the
restart tests have a farm of their own on an explicit `--data-dir`, which they stop with
SIGTERM while a task runs and start again: the tokens stay, the run was ended worker-shutdown
before the queue stopped, the restarted farm runs the retry, and the stopping worker did not
claim (and at once end) that retry itself.

`task run` exits 0 when the task completed, 1 when it failed, 3 on an exception and 2 on an
error of its own; it says `task <taskId> on <queue>: …` on stderr and streams the log to stdout.

What each `up` process logged (RUST_LOG=info) during a test is printed when that test fails.
"""

import glob
import json
import os
import queue as queues
import re
import stat
import subprocess
import threading
import time

import pytest
import requests
import taskcluster

from conftest import BINARY, ROOT_CLIENT, free_port, new_task_id, watch_logs
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, create_task, remove_containers,
                            stop_process, wait_until)

IMAGE = os.environ.get("TASKFOLD_TEST_IMAGE", "taskfold-test/busybox:1")
DEFAULT_QUEUE = "taskfold/docker"
CREDENTIAL_KEYS = {"rootUrl", "rootAccessToken", "queueAccessToken"}

# Every task the module created, so that teardown can remove containers left behind.
TASKS = set()


def clean_env(**extra):
    """The environment without any Taskcluster deployment or credentials, plus `extra`."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("TASKCLUSTER_")}
    env.update(extra)
    return env


class Farm:
    """One `taskfold up` process; stdout (the welcome) and stderr (its log) go to files."""

    def __init__(self, cwd, data_dir=None, config=None, capacity=2):
        self.cwd = str(cwd)
        self.data_dir = str(data_dir) if data_dir else os.path.join(self.cwd, "taskfold-data")
        self.explicit_data_dir = data_dir is not None
        self.config = config
        self.capacity = capacity
        self.process = None
        self.starts = 0
        watch_logs(os.path.join(glob.escape(self.cwd), "up-*.log"))

    def start(self):
        self.starts += 1
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.out_path = os.path.join(self.cwd, f"up-{self.starts}.out")
        self.log_path = os.path.join(self.cwd, f"up-{self.starts}.log")
        self.out = open(self.out_path, "w")
        self.log = open(self.log_path, "w")
        command = [BINARY, "up", "--listen", f"127.0.0.1:{self.port}",
                   "--capacity", str(self.capacity)]
        if self.explicit_data_dir:
            command += ["--data-dir", self.data_dir]
        if self.config:
            command += ["--config", str(self.config)]
        self.process = subprocess.Popen(command, cwd=self.cwd, stdout=self.out,
                                        stderr=self.log, env=clean_env(RUST_LOG="info"))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.close_files()
                pytest.fail(f"taskfold up exited with {self.process.returncode}:\n"
                            f"{self.output()}\n{self.logged()}")
            try:
                ping = requests.get(f"{self.root_url}/api/queue/v1/ping", timeout=1)
                if ping.status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"taskfold up did not answer /ping within {TIMEOUT} s:\n{self.logged()}")

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def output(self):
        with open(self.out_path) as out:
            return out.read()

    def logged(self):
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def credentials(self):
        with open(os.path.join(self.data_dir, "credentials.json")) as file:
            return json.load(file)

    def queue(self):
        token = self.credentials()["rootAccessToken"]
        return taskcluster.Queue({"rootUrl": self.root_url, "maxRetries": 0,
                                  "credentials": {"clientId": ROOT_CLIENT, "accessToken": token}})

    def close_files(self):
        for file in (self.out, self.log):
            if not file.closed:
                file.close()

    def stop(self, timeout=30):
        """SIGTERM; SIGKILL if it has not exited within `timeout` s. Its exit status."""
        if self.alive():
            stop_process(self.process, timeout, "taskfold up")
        self.close_files()
        return self.process.returncode if self.process else None


def remove_containers_of_our_tasks():
    for task_id in sorted(TASKS):
        remove_containers(f"taskfold.task-id={task_id}", f"task {task_id}")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """`taskfold up` with its default data directory, in a working directory of its own."""
    farm = Farm(tmp_path_factory.mktemp("farm")).start()
    yield farm
    farm.stop()
    remove_containers_of_our_tasks()


# --- running the command line --------------------------------------------------------------


TASK_LINE = re.compile(r"^task (\S+) on (\S+): ", re.MULTILINE)


class Ran:
    """A finished `taskfold task …`: its exit status, stdout (TTY `\\r\\n` made `\\n`) and
    stderr, and the taskId it announced, if any."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode = returncode
        self.stdout = stdout.replace("\r\n", "\n")
        self.stderr = stderr
        found = TASK_LINE.search(stderr)
        self.task_id, self.task_queue_id = found.groups() if found else (None, None)
        if self.task_id:
            TASKS.add(self.task_id)

    def __repr__(self):
        return (f"exit status {self.returncode}\n--- stdout ---\n{self.stdout}"
                f"\n--- stderr ---\n{self.stderr}")


def task_cli(*args, cwd, env=None, timeout=TIMEOUT):
    """Runs `taskfold task ARGS` in `cwd` (without TASKCLUSTER_* unless `env` gives them)."""
    done = subprocess.run([BINARY, "task", *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, env=env or clean_env())
    return Ran(done.returncode, done.stdout, done.stderr)


def task_run(*command, cwd, options=(), env=None):
    return task_cli("run", "--image", IMAGE, *options, "--", *command, cwd=cwd, env=env)


def lines(text):
    return [line.rstrip("\r") for line in text.splitlines()]


class Follower:
    """A `taskfold task run` under Popen whose stdout lines are collected as they arrive,
    each with the time it arrived."""

    def __init__(self, command, cwd, env=None):
        self.process = subprocess.Popen(
            [BINARY, "task", "run", "--image", IMAGE, "--", *command], cwd=str(cwd),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or clean_env())
        self.lines = queues.Queue()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True) \
            .start()

    def _read(self):
        for raw in self.process.stdout:
            self.lines.put((time.monotonic(), raw.decode(errors="replace").rstrip("\r\n")))
        self.lines.put((time.monotonic(), None))

    def next_line(self, timeout):
        """The next (arrival time, line), or None at the timeout; line None means EOF."""
        try:
            return self.lines.get(timeout=timeout)
        except queues.Empty:
            return None

    def wait_for_line(self, wanted, timeout=TIMEOUT):
        """Reads lines until one equals `wanted`; (its arrival time, lines read before)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.next_line(max(0.0, deadline - time.monotonic()))
            if got is None:
                break
            arrived, line = got
            if line is None:
                raise AssertionError(f"stdout ended before {wanted!r}: {seen}")
            if line == wanted:
                return arrived, seen
            seen.append(line)
        raise AssertionError(f"no {wanted!r} within {timeout} s: {seen}")

    def stderr_text(self):
        return b"".join(self.stderr).decode(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        found = TASK_LINE.search(self.stderr_text())
        if found:
            TASKS.add(found.group(1))


# --- `taskfold up` -------------------------------------------------------------------------


def test_up_prints_and_keeps_its_credentials(farm):
    credentials = farm.credentials()
    assert set(credentials) == CREDENTIAL_KEYS, credentials
    assert credentials["rootUrl"] == farm.root_url
    assert credentials["rootAccessToken"] != credentials["queueAccessToken"]
    path = os.path.join(farm.data_dir, "credentials.json")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, f"credentials.json has mode {mode:o}"

    printed = lines(farm.output())
    for line in (f"export TASKCLUSTER_ROOT_URL={farm.root_url}",
                 f"export TASKCLUSTER_CLIENT_ID={ROOT_CLIENT}",
                 f"export TASKCLUSTER_ACCESS_TOKEN={credentials['rootAccessToken']}"):
        assert line in [printed_line.strip() for printed_line in printed], \
            f"{line!r} not printed:\n{farm.output()}"

    # The root token is the root client's: it may create tasks (on a queue nobody serves).
    queue = farm.queue()
    task_id = create_task(queue, "taskfold-tests/nobody")
    assert queue.status(task_id)["status"]["state"] == "pending"
    queue.cancelTask(task_id)
    wrong = taskcluster.Queue({"rootUrl": farm.root_url, "maxRetries": 0, "credentials": {
        "clientId": ROOT_CLIENT, "accessToken": credentials["queueAccessToken"]}})
    with pytest.raises((taskcluster.exceptions.TaskclusterAuthFailure,
                        taskcluster.exceptions.TaskclusterRestFailure)) as refused:
        create_task(wrong, "taskfold-tests/nobody")
    assert refused.value.status_code == 401, refused.value


# --- `taskfold task run` -------------------------------------------------------------------


def test_a_completed_task_exits_0_with_its_output(farm):
    ran = task_run("sh", "-c", "echo hello; exit 0", cwd=farm.cwd)
    assert ran.returncode == 0, ran
    assert "hello" in lines(ran.stdout), ran
    assert ran.task_id, ran
    assert ran.task_queue_id == DEFAULT_QUEUE, ran
    status = farm.queue().status(ran.task_id)["status"]
    assert status["state"] == "completed", status
    assert status["taskQueueId"] == DEFAULT_QUEUE
    assert status["runs"][0]["workerGroup"] == "local", status


def test_a_failed_task_exits_1(farm):
    ran = task_run("sh", "-c", "echo about-to-fail; exit 3", cwd=farm.cwd)
    assert ran.returncode == 1, ran
    assert "about-to-fail" in lines(ran.stdout), ran
    assert "Unsuccessful task run with exit code: 3" in ran.stdout, ran
    status = farm.queue().status(ran.task_id)["status"]
    assert (status["state"], status["runs"][0]["reasonResolved"]) == ("failed", "failed"), status


def test_a_task_with_a_malformed_payload_exits_3(farm):
    # maxRunTime's minimum is 1: the worker refuses the payload, an exception.
    ran = task_run("sh", "-c", "echo must-not-run", cwd=farm.cwd, options=("--max-run-time", "0"))
    assert ran.returncode == 3, ran
    assert ran.task_id, ran
    assert "must-not-run" not in lines(ran.stdout), ran
    assert "maxRunTime" in ran.stdout, ran
    status = farm.queue().status(ran.task_id)["status"]
    assert (status["state"], status["runs"][0]["reasonResolved"]) == \
        ("exception", "malformed-payload"), status


def test_task_run_streams_the_log_while_the_task_runs(farm):
    follower = Follower(["sh", "-c", "echo first; sleep 3; echo second"], farm.cwd)
    try:
        first_at, before = follower.wait_for_line("first")
        assert follower.process.poll() is None, "task run ended before its output streamed"
        assert "second" not in before
        second_at, between = follower.wait_for_line("second")
        assert "first" not in between
        # `first` was on stdout while the task still slept.
        assert second_at - first_at >= 2, \
            f"first and second arrived {second_at - first_at:.1f} s apart: not streamed"
        assert follower.process.wait(timeout=TIMEOUT) == 0, follower.stderr_text()
    finally:
        follower.stop()


def test_status_artifacts_and_log_of_a_finished_task(farm):
    ran = task_run("sh", "-c", "echo line-one; echo line-two", cwd=farm.cwd)
    assert ran.returncode == 0, ran
    task_id = ran.task_id

    status = task_cli("status", task_id, cwd=farm.cwd)
    assert status.returncode == 0, status
    printed = json.loads(status.stdout)
    assert printed == farm.queue().status(task_id)["status"]
    assert (printed["taskId"], printed["state"], printed["runs"][0]["state"]) == \
        (task_id, "completed", "completed"), printed

    expected = {
        ("public/logs/live.log", "link", "text/plain; charset=utf-8"),
        ("public/logs/live_backing.log", "s3", "text/plain; charset=utf-8"),
    }
    for run_option in ((), ("--run", "0")):
        listed = task_cli("artifacts", task_id, *run_option, cwd=farm.cwd)
        assert listed.returncode == 0, listed
        rows = {tuple(line.split("\t")) for line in lines(listed.stdout) if line}
        assert expected <= rows, listed
        assert all(len(row) == 3 for row in rows), listed

    for run_option in ((), ("--run", "0")):
        log = task_cli("log", task_id, *run_option, cwd=farm.cwd)
        assert log.returncode == 0, log
        assert ["line-one", "line-two"] == [line for line in lines(log.stdout)
                                            if line.startswith("line-")], log
        assert f"Task ID: {task_id}" in log.stdout, log
        assert "Successful task run with exit code: 0" in log.stdout, log

    unknown = task_cli("status", new_task_id(), cwd=farm.cwd)
    assert unknown.returncode == 2, unknown


def test_task_commands_take_the_deployment_from_the_environment(farm, tmp_path):
    # Elsewhere, with no farm in the working directory and nothing in the environment.
    lost = task_run("echo", "must-not-run", cwd=tmp_path)
    assert lost.returncode == 2, lost
    assert lost.task_id is None, lost

    token = farm.credentials()["rootAccessToken"]
    env = clean_env(TASKCLUSTER_ROOT_URL=farm.root_url, TASKCLUSTER_CLIENT_ID=ROOT_CLIENT,
                    TASKCLUSTER_ACCESS_TOKEN=token)
    ran = task_run("sh", "-c", "echo from-the-environment", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran
    assert "from-the-environment" in lines(ran.stdout), ran
    status = task_cli("status", ran.task_id, cwd=tmp_path, env=env)
    assert json.loads(status.stdout)["state"] == "completed", status

    # The environment's credentials win over the farm's file in the working directory.
    wrong = dict(env, TASKCLUSTER_ACCESS_TOKEN=token + "x")
    refused = task_run("echo", "must-not-run", cwd=farm.cwd, env=wrong)
    assert refused.returncode == 2, refused
    assert refused.task_id is None, refused


# --- restarting `taskfold up` --------------------------------------------------------------


@pytest.fixture
def stopped_while_running(tmp_path):
    """A farm on an explicit `--data-dir`, stopped with SIGTERM while a task of 4 s runs and
    started again on the same data directory. Yields (farm, task_id, credentials before the
    restart, the environment naming the first start's deployment)."""
    config = tmp_path / "fast-stop.toml"
    config.write_text(SHORT_CLAIM_WORK_CONFIG)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    farm = Farm(cwd, data_dir=tmp_path / "state", config=config).start()
    follower = None
    try:
        first = farm.credentials()
        assert set(first) == CREDENTIAL_KEYS
        assert first["rootUrl"] == farm.root_url
        assert not os.path.exists(cwd / "taskfold-data"), "--data-dir was not used"
        env = clean_env(TASKCLUSTER_ROOT_URL=farm.root_url, TASKCLUSTER_CLIENT_ID=ROOT_CLIENT,
                        TASKCLUSTER_ACCESS_TOKEN=first["rootAccessToken"])
        follower = Follower(["sh", "-c", "echo started; sleep 4; echo finished"], cwd, env=env)
        follower.wait_for_line("started")
        task_id = TASK_LINE.search(follower.stderr_text()).group(1)
        TASKS.add(task_id)
        assert farm.stop() == 0, "taskfold up did not exit 0 on SIGTERM"
        follower.stop()
        farm.start()
        yield farm, task_id, first, env
    finally:
        if follower is not None:
            follower.stop()
        farm.stop()
        remove_containers_of_our_tasks()


def test_a_restart_keeps_the_credentials_and_sigterm_stops_the_worker_first(
        stopped_while_running):
    farm, task_id, first, env = stopped_while_running
    second = farm.credentials()
    assert second["rootAccessToken"] == first["rootAccessToken"]
    assert second["queueAccessToken"] == first["queueAccessToken"]
    assert second["rootUrl"] == farm.root_url != first["rootUrl"]
    path = os.path.join(farm.data_dir, "credentials.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert f"export TASKCLUSTER_ACCESS_TOKEN={first['rootAccessToken']}" in farm.output()

    # SIGTERM stopped the worker first: it ended the running task (worker-shutdown) and the
    # queue, still up, recorded that before it stopped too.
    queue = farm.queue()
    status = queue.status(task_id)["status"]
    assert (status["runs"][0]["state"], status["runs"][0].get("reasonResolved")) == \
        ("exception", "worker-shutdown"), status
    assert status["runs"][-1]["reasonCreated"] == "retry", status

    # The restarted farm runs the retry, with claims signed by the kept queue token.
    done = wait_until(lambda: queue.status(task_id)["status"]["state"] in
                      ("completed", "failed", "exception"), 30)
    status = queue.status(task_id)["status"]
    assert done and status["state"] == "completed", status
    last = status["runs"][-1]
    assert (last["reasonCreated"], last["reasonResolved"]) == ("retry", "completed"), status
    log = task_cli("log", task_id, "--run", str(last["runId"]), cwd=farm.cwd,
                   env=dict(env, TASKCLUSTER_ROOT_URL=farm.root_url))
    assert log.returncode == 0, log
    assert "finished" in lines(log.stdout), log


def test_a_stopping_farm_does_not_claim_the_retry_of_the_task_it_stopped(
        stopped_while_running):
    """The stopping worker says "no new claims"; the retry of the run it ended with
    worker-shutdown is for the next worker, not for itself to end at once (which spends one
    more of the task's retries on nothing)."""
    farm, task_id, _, _ = stopped_while_running
    runs = farm.queue().status(task_id)["status"]["runs"]
    with open(farm.log_path.replace("up-2.log", "up-1.log"), errors="replace") as log:
        stopping = [line for line in log if "run finished" in line]
    assert [(run["reasonCreated"], run.get("reasonResolved")) for run in runs[:2]] == \
        [("scheduled", "worker-shutdown"), ("retry", None)], \
        f"runs after the restart: {runs}\nthe stopping farm finished: {stopping}"
