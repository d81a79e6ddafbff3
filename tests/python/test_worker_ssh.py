"""`taskfold worker --engine ssh` end to end: a real server, a real worker process and a real
SSH server (tests/setup/sshd.sh, started by tests/run.sh on 127.0.0.1) that the worker's
targets point at.

The SSH server is described by TASKFOLD_TEST_SSH_PORT, TASKFOLD_TEST_SSH_KEY (the client's
private key, authorized for root) and TASKFOLD_TEST_SSH_HOST_KEY (the server's public key,
`type base64`); without them every test here fails rather than skips. The worker has three
targets: `build-host` (the real one), `wrong-key` (the same server, pinned to a key it does not
have: the client's own public key) and `nowhere` (a port nobody listens on).

Each acceptance point is one test: success (output, environment, a file artifact), a missing
artifact, a failing exit code, a host-key mismatch, an unreachable target, an unknown target, a
schema error, and maxRunTime killing the script with everything it started. The SSH server runs
on this machine, so what the script started can be looked for with `pgrep`.

What the worker logged (RUST_LOG=info) during a test is printed when that test fails.
"""

import os
import signal
import struct
import subprocess
import time
import re
import uuid

import pytest
import requests
import websocket

from conftest import free_port
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, WorkerProcess, artifact_url, artifacts,
                            assert_in_log, assert_run, create_task, fetch, serve, wait_resolved,
                            wait_until, TIMEOUT)

BACKING_LOG = "public/logs/live_backing.log"


# --- the SSH server, the worker and its server ---------------------------------------------


@pytest.fixture(scope="module")
def sshd():
    """The test SSH server's port, client key and host key, from the environment."""
    names = ("TASKFOLD_TEST_SSH_PORT", "TASKFOLD_TEST_SSH_KEY", "TASKFOLD_TEST_SSH_HOST_KEY")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"the SSH engine's tests need an SSH server: {', '.join(missing)} not set "
            "(tests/run.sh starts one with tests/setup/sshd.sh and exports them)",
            pytrace=False)
    key = os.environ["TASKFOLD_TEST_SSH_KEY"]
    if not os.path.isfile(key) or not os.path.isfile(key + ".pub"):
        pytest.fail(f"TASKFOLD_TEST_SSH_KEY={key}: the key or its .pub is missing", pytrace=False)
    with open(key + ".pub") as public:
        client_public_key = " ".join(public.read().split()[:2])
    return {
        "port": int(os.environ["TASKFOLD_TEST_SSH_PORT"]),
        "key": key,
        "host_key": " ".join(os.environ["TASKFOLD_TEST_SSH_HOST_KEY"].split()[:2]),
        # A key the server does not have: pinned as `wrong-key`'s host key.
        "wrong_host_key": client_public_key,
    }


def target(name, port, host_key, key):
    return f"""
[[worker.ssh.targets]]
name = "{name}"
host = "127.0.0.1"
port = {port}
user = "root"
host_key = "{host_key}"
identity_file = "{key}"
"""


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def ssh_worker(sshd, ssh_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("ssh-worker")
    config = (target("build-host", sshd["port"], sshd["host_key"], sshd["key"])
              + target("wrong-key", sshd["port"], sshd["wrong_host_key"], sshd["key"])
              + target("nowhere", free_port(), sshd["host_key"], sshd["key"]))
    (base / "worker.toml").write_text(config)
    worker = WorkerProcess(ssh_server, "ssh", base / "data", base, capacity=2,
                           options=("--config", str(base / "worker.toml")),
                           stop_timeout=30).start()
    yield worker
    worker.stop()
    # The SSH master connections it kept name its data directory (their known_hosts): none
    # may outlive a worker that stopped cleanly.
    left = processes(worker.data_dir)
    if left:
        kill_all(left)
        pytest.fail(f"processes outlived the SSH worker: {left}")


@pytest.fixture
def queue(ssh_server):
    return ssh_server.queue()


@pytest.fixture
def run_task(ssh_worker, queue):
    """Creates a task with an SSH payload for the worker; its taskId."""

    def create(payload):
        assert ssh_worker.alive(), "the SSH worker process exited"
        return create_task(queue, ssh_worker.task_queue_id, payload=payload)

    return create


@pytest.fixture
def run_to_end(ssh_server, queue, run_task):
    """Creates a task as `run_task` does and waits for its run to resolve: (taskId, status,
    backing log), for the tests that only look at the outcome."""

    def run(payload):
        task_id = run_task(payload)
        status = wait_resolved(queue, task_id)
        return task_id, status, fetch(ssh_server, task_id, 0, BACKING_LOG)

    return run


# --- helpers -------------------------------------------------------------------------------


def assert_only_run(status, state, reason_resolved):
    """Run 0 ended so, and it is the task's only run: the task ended with it."""
    assert_run(status, 0, state, reason_resolved)
    assert status["state"] == state, status
    assert len(status["runs"]) == 1, f"the run was retried: {status}"


def processes(marker):
    """`pid command line` of every process whose command line contains `marker`."""
    found = subprocess.run(["pgrep", "-a", "-f", marker], capture_output=True, text=True)
    return found.stdout.strip().splitlines()


def kill_all(found):
    """SIGKILLs each process of a `processes` listing, by its pid."""
    for line in found:
        try:
            os.kill(int(line.split(" ", 1)[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


# --- the acceptance points -----------------------------------------------------------------


def test_a_successful_script_completes_with_its_output_env_and_artifact(
        sshd, ssh_server, ssh_worker, queue, run_to_end, tmp_path):
    out = tmp_path / "out.txt"
    tricky = "it's \"quoted\" $HOME `uname` \\ and  two  spaces; $(echo no)"
    task_id, status, log = run_to_end({
        "target": "build-host",
        "script": (
            "echo hello-from-ssh\n"
            "echo \"TASK_ID=$TASK_ID\"\n"
            "echo \"RUN_ID=$RUN_ID\"\n"
            "echo \"ROOT_URL=$TASKCLUSTER_ROOT_URL\"\n"
            "echo \"POOL=$TASKCLUSTER_WORKER_POOL\"\n"
            "printf 'TRICKY=[%s]\\n' \"$TRICKY\"\n"
            "echo an-error-line >&2\n"
            f"printf 'artifact content' > {out}\n"
        ),
        "env": {"TRICKY": tricky},
        "maxRunTime": 60,
        "artifacts": [{"name": "public/out.txt", "path": str(out), "type": "file"}],
    })
    assert_only_run(status, "completed", "completed")
    assert_in_log(
        log, f"Task ID: {task_id}",
        f"Target: build-host (root@127.0.0.1:{sshd['port']})",
        "=== Task Starting ===", "hello-from-ssh", "an-error-line",
        f"TASK_ID={task_id}\n", "RUN_ID=0\n", f"ROOT_URL={ssh_server.root_url}\n",
        f"POOL={ssh_worker.task_queue_id}\n", f"TRICKY=[{tricky}]\n",
        "=== Task Finished ===", "Successful task run with exit code: 0")
    assert log.index("=== Task Starting ===") < log.index("hello-from-ssh") \
        < log.index("=== Task Finished ===")

    listed = artifacts(queue, task_id)
    assert listed[BACKING_LOG] == "s3", listed
    assert listed["public/logs/live.log"] == "link", listed
    assert listed["public/out.txt"] == "s3", listed
    assert fetch(ssh_server, task_id, 0, "public/out.txt") == "artifact content"
    # Once the run is over, the live log leads to the backing log.
    assert fetch(ssh_server, task_id, 0, "public/logs/live.log") == log


def test_a_missing_artifact_becomes_an_error_artifact(ssh_server, queue, run_to_end, tmp_path):
    missing = tmp_path / "never-written.txt"
    task_id, status, log = run_to_end({
        "target": "build-host", "script": "echo no-file-made", "maxRunTime": 60,
        "artifacts": [{"name": "public/missing.txt", "path": str(missing), "type": "file"}],
    })
    assert_only_run(status, "completed", "completed")
    listed = artifacts(queue, task_id)
    assert listed.get("public/missing.txt") == "error", listed
    response = requests.get(artifact_url(ssh_server, task_id, 0, "public/missing.txt"),
                            timeout=30)
    assert response.status_code == 424, (response.status_code, response.text)
    assert "no-file-made" in log


def test_a_non_zero_exit_code_fails_the_run(run_to_end):
    _, status, log = run_to_end({"target": "build-host", "script": "echo about-to-fail; exit 3",
                                 "maxRunTime": 60})
    assert_only_run(status, "failed", "failed")
    assert_in_log(log, "about-to-fail", "=== Task Finished ===",
                  "Unsuccessful task run with exit code: 3")


def test_a_host_key_mismatch_is_resource_unavailable(run_to_end):
    _, status, log = run_to_end({"target": "wrong-key", "script": "echo must-not-run",
                                 "maxRunTime": 60})
    assert_only_run(status, "exception", "resource-unavailable")
    assert "wrong-key" in log
    assert "must-not-run" not in log.replace("echo must-not-run", "")
    assert "=== Task Starting ===" not in log, log


def test_an_unreachable_target_is_resource_unavailable(run_to_end):
    _, status, log = run_to_end({"target": "nowhere", "script": "echo must-not-run",
                                 "maxRunTime": 60})
    assert_only_run(status, "exception", "resource-unavailable")
    assert "cannot reach target `nowhere`" in log, log


def test_an_unknown_target_is_a_malformed_payload(run_to_end):
    _, status, log = run_to_end({"target": "elsewhere", "script": "echo must-not-run",
                                 "maxRunTime": 60})
    assert_only_run(status, "exception", "malformed-payload")
    assert "elsewhere" in log, log
    assert "=== Task Starting ===" not in log, log


def test_an_unknown_payload_field_is_a_malformed_payload(run_to_end):
    # A payload never gives an address: `host` is not a field.
    _, status, log = run_to_end({"target": "build-host", "host": "10.0.0.1",
                                 "script": "echo must-not-run", "maxRunTime": 60})
    assert_only_run(status, "exception", "malformed-payload")
    assert "host" in log.split("payload is not valid", 1)[-1], log
    assert "=== Task Starting ===" not in log, log


def test_max_run_time_kills_the_script_and_what_it_started(ssh_server, queue, run_task):
    # A sleep no other process runs, so that pgrep finds this test's processes only.
    marker = f"60.{uuid.uuid4().int % 10**9:09d}"
    task_id = run_task({"target": "build-host",
                        "script": f"echo start; sleep {marker} & sleep {marker}",
                        "maxRunTime": 3})
    try:
        # Both sleeps run (the background one and the foreground one).
        def sleeps():
            return [line for line in processes(marker)
                    if line.split(" ", 1)[-1] == f"sleep {marker}"]

        started = wait_until(lambda: len(sleeps()) >= 2, 30)
        assert started, f"the script's sleeps never ran: {processes(marker)}"
        began = time.monotonic()
        status = wait_resolved(queue, task_id, timeout=45)
        took = time.monotonic() - began
        log = fetch(ssh_server, task_id, 0, BACKING_LOG)
        assert_only_run(status, "failed", "failed")
        assert took < 30, f"the run took {took:.0f} s to end after its sleeps started"
        assert_in_log(log, "start\n", "Task timeout after 3 seconds",
                      "=== Task Finished ===", "Unsuccessful task run with exit code:")
        # Nothing the script started survives it (give the kill a moment to land).
        assert wait_until(lambda: not processes(marker), 10) is not None, \
            f"processes of the timed-out script survive: {processes(marker)}"
    finally:
        kill_all(processes(marker))


# --- interactive sessions ------------------------------------------------------------------


def read_until(socket, pattern, timeout=TIMEOUT):
    """Stdout of a session until `pattern` (bytes regex) matches it; then the text."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        socket.settimeout(max(0.1, deadline - time.monotonic()))
        frame = socket.recv_data()[1]
        if frame[:1] == b"\x01":
            seen += frame[1:]
            if re.search(pattern, seen):
                return seen
        elif frame[:1] == b"\xc8":
            return seen + b"[stopped " + str(struct.unpack("<i", frame[1:])[0]).encode() + b"]"
    raise AssertionError(f"{pattern!r} not in the session's output: {seen!r}")


def test_a_pty_shell_on_the_target_follows_resizes_and_reports_its_exit_status(
        queue, run_task):
    task_id = run_task({"target": "build-host", "script": "sleep 60", "maxRunTime": 120,
                        "features": {"interactive": True}})
    assert wait_until(lambda: queue.status(task_id)["status"]["runs"][:1]
                      and queue.status(task_id)["status"]["runs"][0]["state"] == "running")
    session = queue._makeHttpRequest("post", f"task/{task_id}/runs/0/sessions",
                                     {"rows": 33, "cols": 111})
    socket = websocket.create_connection(session["socketUrl"], timeout=TIMEOUT)
    try:
        assert socket.recv_data()[1] == b"\x64", "the session did not begin with resume"
        socket.send_binary(b"\x00stty size; tty\n")
        read_until(socket, rb"33 111\r\n/dev/pts/")
        socket.send_binary(b"\x32" + struct.pack("<HH", 45, 140))
        socket.send_binary(b"\x00stty size\n")
        read_until(socket, rb"45 140\r\n")
        socket.send_binary(b"\x00exit 4\n")
        assert read_until(socket, rb"\[stopped 4\]").endswith(b"[stopped 4]")
    finally:
        socket.close()
    sessions = queue._makeHttpRequest("get", f"task/{task_id}/runs/0/sessions", None)
    assert [(s["reason"], s.get("exitStatus")) for s in sessions["sessions"]] == [("exited", 4)]
    queue.cancelTask(task_id)
    wait_resolved(queue, task_id)
