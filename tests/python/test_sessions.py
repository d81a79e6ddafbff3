"""Interactive sessions (schemas/interactive.md) end to end: the real `taskfold serve`, real
`taskfold worker --engine docker` processes and a Docker engine running the local busybox image
of TASKFOLD_TEST_IMAGE; the user's side speaks the binary websocket protocol through
shell_client.py.

Two servers, each with a docker worker of its own (linger 5 s): `main` with the default session
settings, and `strict` with `[sessions] ticket_seconds = 3, max_per_run = 2`, for the expired
ticket and the session limit. The tests that stop or kill a worker start one of their own.
Every test cancels the tasks it made, so the workers stay free.

Shell output is awaited as the command's output, not as the typed line echoed back by the TTY:
commands print `$((…))` arithmetic or `$(…)` substitutions whose result is not in the line
typed.
"""

import datetime
import os
import re
import threading
import time

import pytest
import requests

from conftest import failure, limited_queue
from shell_client import ShellClient, handshake_failure
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, artifacts,
                            create_task, remove_containers, serve, wait_resolved, wait_until)

IMAGE = os.environ.get("TASKFOLD_TEST_IMAGE", "taskfold-test/busybox:1")
LINGER = 5
# linger_seconds alone: docker-worker's rules for Docker tasks (test_interactive_protocols.py)
# are off here.
WORKER_CONFIG = f"""
[worker.interactive]
linger_seconds = {LINGER}
docker_min_seconds = 0
docker_after_session_seconds = 0
"""
TICKET_SECONDS = 3
MAX_PER_RUN = 2
STRICT_CONFIG = SHORT_CLAIM_WORK_CONFIG + f"""
[sessions]
ticket_seconds = {TICKET_SECONDS}
max_per_run = {MAX_PER_RUN}
"""
# How long a shell wait (a resume, a command's output, a stopped frame) may take.
SHELL_TIMEOUT = 30
SLEEP = ["sh", "-c", "sleep 90"]
SHELL_ARTIFACT = "private/taskfold/shell.html"


# --- the harness ---------------------------------------------------------------------------


class Sessions:
    """One test's view of a server and its worker: tasks it creates (canceled at the end),
    sessions through the REST API, and shells (closed at the end)."""

    def __init__(self, server, worker):
        self.server = server
        self.worker = worker
        self.queue = server.queue()
        self.tasks = []
        self.shells = []

    # tasks

    def task(self, command=SLEEP, interactive=True, task_queue_id=None, running=True,
             max_run_time=120):
        payload = {"image": IMAGE, "command": list(command), "maxRunTime": max_run_time}
        if interactive:
            payload["features"] = {"interactive": True}
        if task_queue_id is None:
            assert self.worker.alive(), "the worker process exited"
            task_queue_id = self.worker.task_queue_id
        task_id = create_task(self.queue, task_queue_id, payload=payload)
        self.tasks.append(task_id)
        if running:
            self.wait_running(task_id)
        return task_id

    def run_state(self, task_id, run_id=0):
        runs = self.queue.status(task_id)["status"]["runs"]
        return runs[run_id]["state"] if len(runs) > run_id else None

    def wait_running(self, task_id, run_id=0):
        assert wait_until(lambda: self.run_state(task_id, run_id) == "running"), \
            f"run {run_id} of {task_id} not running within {TIMEOUT} s: " \
            f"{self.queue.status(task_id)}"

    # the REST API

    def create(self, task_id, run_id=0, queue=None, **body):
        return (queue or self.queue)._makeHttpRequest(
            "post", f"task/{task_id}/runs/{run_id}/sessions", body)

    def list(self, task_id, run_id=0, queue=None):
        return (queue or self.queue)._makeHttpRequest(
            "get", f"task/{task_id}/runs/{run_id}/sessions", None)["sessions"]

    def entry(self, task_id, session_id, run_id=0):
        entries = {entry["sessionId"]: entry for entry in self.list(task_id, run_id)}
        assert session_id in entries, f"session {session_id} not listed: {entries}"
        return entries[session_id]

    def wait_entry_closed(self, task_id, session_id, run_id=0, timeout=15):
        def closed():
            entry = self.entry(task_id, session_id, run_id)
            return entry if entry["state"] == "closed" else None

        entry = wait_until(closed, timeout)
        assert entry, f"session {session_id} not closed within {timeout} s: " \
            f"{self.entry(task_id, session_id, run_id)}"
        return entry

    def close_session(self, task_id, session_id, run_id=0, queue=None):
        return (queue or self.queue)._makeHttpRequest(
            "post", f"task/{task_id}/runs/{run_id}/sessions/{session_id}/close", {})

    # shells

    def connect(self, session):
        shell = ShellClient(session["socketUrl"], timeout=SHELL_TIMEOUT)
        self.shells.append(shell)
        return shell

    def open(self, task_id, run_id=0, **body):
        """A session whose shell is ready: (createSession's answer, its ShellClient)."""
        session = self.create(task_id, run_id, **body)
        shell = self.connect(session)
        shell.wait_ready()
        return session, shell

    def cleanup(self):
        for shell in self.shells:
            shell.close()
        for task_id in self.tasks:
            try:
                status = self.queue.status(task_id)["status"]
                if status["state"] in ("pending", "running", "unscheduled"):
                    self.queue.cancelTask(task_id)
            except Exception as error:  # the test's own failure matters more
                print(f"canceling {task_id}: {error}")
        for task_id in self.tasks:
            try:
                wait_until(lambda: self.queue.status(task_id)["status"]["state"]
                           not in ("pending", "running"), 30)
            except Exception as error:
                print(f"waiting for {task_id}: {error}")


def expect_output(shell, pattern, start=0):
    """The regex `pattern` (str) in the shell's stdout after `start`; the match."""
    return shell.read_until(re.compile(pattern.encode()), start=start)


def expect_exit(shell, status):
    got = shell.wait_stopped()
    assert got == status, shell.describe()
    code, reason = shell.wait_closed(10)
    assert code == 1000, shell.describe()


def parse_date(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def start_worker(server, tmp_path_factory, name):
    base = tmp_path_factory.mktemp(name)
    config = base / "worker.toml"
    config.write_text(WORKER_CONFIG)
    return WorkerProcess(server, "docker", base / "data", base, capacity=4,
                         options=["--config", str(config)]).start()


def stop_worker(worker):
    worker.stop()
    remove_containers(f"taskfold.worker={worker.label}", worker.label)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def main_worker(main_server, tmp_path_factory):
    worker = start_worker(main_server, tmp_path_factory, "sessions-worker")
    yield worker
    stop_worker(worker)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    yield from serve(tmp_path_factory, STRICT_CONFIG)


@pytest.fixture(scope="module")
def strict_worker(strict_server, tmp_path_factory):
    worker = start_worker(strict_server, tmp_path_factory, "strict-worker")
    yield worker
    stop_worker(worker)


@pytest.fixture
def main(main_server, main_worker):
    sessions = Sessions(main_server, main_worker)
    yield sessions
    sessions.cleanup()


@pytest.fixture
def strict(strict_server, strict_worker):
    sessions = Sessions(strict_server, strict_worker)
    yield sessions
    sessions.cleanup()


# --- 1. a shell in a running container -------------------------------------------------------


def test_a_shell_runs_commands_in_the_running_container(main):
    task_id = main.task()
    session = main.create(task_id, rows=30, cols=100)
    assert session["state"] == "open", session
    assert session["command"] == ["sh"] and session["tty"] is True, session
    assert (session["taskId"], session["runId"]) == (task_id, 0), session
    assert session["socketUrl"].startswith("ws://127.0.0.1:"), session
    assert "ticket=" in session["socketUrl"], session
    assert session["shellUrl"].startswith(f"{main.server.root_url}/shell/?"), session
    for absent in ("socketUrl", "ticketExpires", "shellUrl"):
        assert absent not in main.entry(task_id, session["sessionId"]), absent

    shell = main.connect(session).wait_ready()
    assert shell.frames[0] == ("resume", b""), shell.describe()
    shell.run("echo hello-$((40+2))")
    expect_output(shell, r"hello-42\r?\n")
    mark = shell.mark()
    shell.run("cd /tmp && pwd")
    expect_output(shell, r"\n/tmp\r?\n", mark)
    # The task's container: its command (`sleep 90`) is one of its processes.
    mark = shell.mark()
    shell.run('ps | grep -q "[s]leep 90" && echo has-$((1))-sleep; echo "cwd=$(pwd)"')
    expect_output(shell, r"\nhas-1-sleep\r?\ncwd=/tmp\r?\n", mark)
    shell.run("exit")
    expect_exit(shell, 0)
    entry = main.wait_entry_closed(task_id, session["sessionId"])
    assert (entry["reason"], entry.get("exitStatus")) == ("exited", 0), entry
    assert main.run_state(task_id) == "running"


# --- 2. the terminal's size -------------------------------------------------------------------


def stty_size(shell, tag):
    """What `stty size` prints in the shell now (its line of output)."""
    mark = shell.mark()
    shell.run(f"stty size; echo size-$(({tag}+1000))")
    expect_output(shell, rf"size-{tag + 1000}\r?\n", mark)
    lines = bytes(shell.output[mark:]).replace(b"\r", b"").decode(errors="replace").split("\n")
    # stty's line is the one before the marker's (the banner may come first).
    marker = lines.index(f"size-{tag + 1000}")
    return lines[marker - 1] if marker > 0 else ""


def test_stty_size_is_the_first_size_of_create_session(main):
    task_id = main.task()
    session, shell = main.open(task_id, rows=30, cols=100)
    assert stty_size(shell, 1) == "30 100", shell.describe()
    # Not a matter of time: a second later it is still the first size.
    time.sleep(1)
    assert stty_size(shell, 2) == "30 100", shell.describe()
    shell.run("exit 0")
    expect_exit(shell, 0)

    # The same for a command that is not a shell and exits at once.
    session = main.create(task_id, command=["stty", "size"], rows=31, cols=101)
    shell = main.connect(session).wait_ready()
    assert shell.wait_stopped() == 0, shell.describe()
    assert bytes(shell.output).strip() == b"31 101", shell.describe()


def test_stty_size_follows_a_resize(main):
    task_id = main.task()
    session, shell = main.open(task_id, rows=30, cols=100)
    # A resize is applied beside the input stream, not in it: ask until it shows (it must
    # within seconds).
    for tag, (rows, cols) in enumerate([(50, 132), (20, 60)]):
        shell.resize(rows, cols)
        deadline = time.monotonic() + 10
        tries = 0
        while True:
            tries += 1
            size = stty_size(shell, 10 * tag + tries)
            if size == f"{rows} {cols}":
                break
            assert time.monotonic() < deadline, \
                f"stty size never said {rows} {cols} (last: {size!r}): {shell.describe()}"
            time.sleep(0.3)
        print(f"the resize to {rows}x{cols} showed at the {tries}. `stty size`")
    shell.run("exit 0")
    expect_exit(shell, 0)


# --- 3. exit statuses -------------------------------------------------------------------------


@pytest.mark.parametrize("line, status", [("exit 42", 42), ("exit 255", 255),
                                          ("false; exit", 1)])
def test_the_shells_exit_status_is_the_stopped_frame_and_the_listed_exit_status(main, line,
                                                                                 status):
    task_id = main.task()
    session, shell = main.open(task_id)
    shell.run(line)
    expect_exit(shell, status)
    entry = main.wait_entry_closed(task_id, session["sessionId"])
    assert (entry["state"], entry["reason"], entry.get("exitStatus")) == \
        ("closed", "exited", status), entry
    assert "closed" in entry, entry
    # The run goes on.
    assert main.run_state(task_id) == "running"


# --- 4. two sessions at once ------------------------------------------------------------------


def test_two_concurrent_sessions_on_one_run_each_see_their_own_output(main):
    task_id = main.task()
    first, a = main.open(task_id)
    second, b = main.open(task_id)
    assert first["sessionId"] != second["sessionId"]

    a.run("X=alpha; echo a-$((1+1))")
    b.run("X=beta; echo b-$((2+2))")
    expect_output(b, r"b-4\r?\n")
    expect_output(a, r"a-2\r?\n")
    for round_ in range(3):
        a_mark, b_mark = a.mark(), b.mark()
        a.run(f'echo "a{round_}=$X"')
        b.run(f'echo "b{round_}=$X"')
        expect_output(a, rf"a{round_}=alpha\r?\n", a_mark)
        expect_output(b, rf"b{round_}=beta\r?\n", b_mark)
    assert b"beta" not in bytes(a.output) and b"b-4" not in bytes(a.output), a.describe()
    assert b"alpha" not in bytes(b.output) and b"a-2" not in bytes(b.output), b.describe()

    listed = main.list(task_id)
    assert [e["sessionId"] for e in listed] == [first["sessionId"], second["sessionId"]], listed
    assert all(e["state"] == "open" for e in listed), listed

    b.run("exit 4")
    expect_exit(b, 4)
    # The other session is still alive.
    mark = a.mark()
    a.run("echo still-$((3*3))")
    expect_output(a, r"still-9\r?\n", mark)
    a.run("exit 3")
    expect_exit(a, 3)
    entries = {e["sessionId"]: e for e in main.list(task_id)}
    assert (entries[first["sessionId"]].get("exitStatus"),
            entries[second["sessionId"]].get("exitStatus")) == (3, 4), entries


# --- 5. the linger window ---------------------------------------------------------------------


def test_a_session_in_the_linger_window_keeps_the_run_and_the_result_is_the_commands(main):
    task_id = main.task(["sh", "-c", "echo done"])
    session, shell = main.open(task_id)
    opened = time.monotonic()
    shell.run("echo alive-$((6*7))")
    expect_output(shell, r"alive-42\r?\n")
    # Attached: the run stays past the linger time (the command exited before we opened).
    while time.monotonic() - opened < LINGER + 2:
        assert main.run_state(task_id) == "running", main.queue.status(task_id)
        mark = shell.mark()
        shell.run("echo tick-$((1+1))")
        expect_output(shell, r"tick-2\r?\n", mark)
        time.sleep(1)
    shell.run("exit")
    expect_exit(shell, 0)
    ended = time.monotonic()
    entry = main.wait_entry_closed(task_id, session["sessionId"])
    assert (entry["reason"], entry.get("exitStatus")) == ("exited", 0), entry
    # The run lingers after the session's end too, then resolves with the command's result.
    time.sleep(1.5)
    assert main.run_state(task_id) == "running", \
        f"resolved within 1.5 s of the session's end: {main.queue.status(task_id)}"
    status = wait_resolved(main.queue, task_id)
    waited = time.monotonic() - ended
    run = status["runs"][0]
    assert (run["state"], run["reasonResolved"]) == ("completed", "completed"), status
    assert waited >= LINGER - 1, f"resolved {waited:.1f} s after the session ended"
    listed = artifacts(main.queue, task_id)
    assert SHELL_ARTIFACT in listed, listed


def test_a_failing_command_fails_the_run_even_if_a_session_exits_0(main):
    task_id = main.task(["sh", "-c", "echo failing; exit 1"])
    session, shell = main.open(task_id)
    shell.run("echo fine-$((1+1)); exit 0")
    expect_output(shell, r"fine-2\r?\n")
    expect_exit(shell, 0)
    status = wait_resolved(main.queue, task_id)
    run = status["runs"][0]
    assert (run["state"], run["reasonResolved"]) == ("failed", "failed"), status
    entry = main.entry(task_id, session["sessionId"])
    assert (entry["reason"], entry.get("exitStatus")) == ("exited", 0), entry
    # Once resolved, no new session.
    error = failure(lambda: main.create(task_id))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict"), error.body


def test_the_linger_is_bounded_by_max_run_time_and_keeps_the_commands_result(main):
    max_run_time = 8
    task_id = main.task(["sh", "-c", "echo quick"], max_run_time=max_run_time)
    started = time.monotonic()
    session, shell = main.open(task_id)
    shell.run("echo held-$((2+5))")
    expect_output(shell, r"held-7\r?\n")
    # Attached all along, yet the run ends at maxRunTime (counted from the container's start,
    # a little after `running`).
    code, reason = shell.wait_closed(max_run_time + 20)
    ended = time.monotonic() - started
    print(f"the session ended {ended:.1f} s after the run was running: {shell.describe()}")
    assert ended >= max_run_time - 1.5, f"ended after {ended:.1f} s"
    assert shell.exit_status is None, shell.describe()
    status = wait_resolved(main.queue, task_id)
    run = status["runs"][0]
    assert (run["state"], run["reasonResolved"]) == ("completed", "completed"), status
    entry = main.wait_entry_closed(task_id, session["sessionId"])
    assert entry["reason"] == "run-resolved", entry


# --- 6. runs that have no sessions ------------------------------------------------------------


def test_a_run_without_the_interactive_feature_has_no_sessions(main):
    task_id = main.task(interactive=False)
    error = failure(lambda: main.create(task_id))
    assert (error.status_code, error.body["code"]) == (400, "InputError"), error.body
    assert SHELL_ARTIFACT not in artifacts(main.queue, task_id)


def test_a_resolved_or_pending_run_has_no_new_sessions(main):
    task_id = main.task()
    main.queue.cancelTask(task_id)
    status = wait_resolved(main.queue, task_id)
    assert status["runs"][0]["state"] == "exception", status
    error = failure(lambda: main.create(task_id))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict"), error.body

    # A pending run (a task queue no worker claims from).
    pending = main.task(task_queue_id="proj-tests/no-worker-here", running=False)
    assert main.run_state(pending) == "pending"
    error = failure(lambda: main.create(pending))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict"), error.body


# --- 7. scopes --------------------------------------------------------------------------------


def test_creating_listing_and_closing_sessions_need_their_scopes(main):
    task_id = main.task()
    server, tq = main.server, main.worker.task_queue_id
    other_task = "AAAAAAAAAAAAAAAAAAAAAA"

    for scopes in ([], [f"queue:create-session:{other_task}"],
                   [f"queue:create-session-in-queue:{tq}-other"],
                   [f"queue:list-sessions:{task_id}", f"queue:close-session:{task_id}",
                    f"queue:get-task:{task_id}"]):
        error = failure(lambda: main.create(task_id, queue=limited_queue(server, scopes)))
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes"), \
            (scopes, error.body)
    assert main.list(task_id) == [], "a refused createSession made a session"

    by_task = main.create(task_id, queue=limited_queue(
        server, [f"queue:create-session:{task_id}"]))
    by_queue = main.create(task_id, queue=limited_queue(
        server, [f"queue:create-session-in-queue:{tq}"]))
    for session, marker in ((by_task, "by-task"), (by_queue, "by-queue")):
        shell = main.connect(session).wait_ready()
        shell.run(f"echo {marker}-$((5+5))")
        expect_output(shell, rf"{marker}-10\r?\n")

    # listSessions
    error = failure(lambda: main.list(task_id, queue=limited_queue(
        server, [f"queue:create-session:{task_id}"])))
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes"), error.body
    for scope in (f"queue:list-sessions:{task_id}", f"queue:list-sessions-in-queue:{tq}"):
        listed = main.list(task_id, queue=limited_queue(server, [scope]))
        assert [e["sessionId"] for e in listed] == \
            [by_task["sessionId"], by_queue["sessionId"]], (scope, listed)

    # closeSession
    error = failure(lambda: main.close_session(task_id, by_task["sessionId"], queue=limited_queue(
        server, [f"queue:create-session:{task_id}", f"queue:list-sessions:{task_id}"])))
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes"), error.body
    assert main.entry(task_id, by_task["sessionId"])["state"] == "open"
    for session, scope in ((by_task, f"queue:close-session:{task_id}"),
                           (by_queue, f"queue:close-session-in-queue:{tq}")):
        closed = main.close_session(task_id, session["sessionId"],
                                    queue=limited_queue(server, [scope]))
        assert (closed["state"], closed["reason"]) == ("closed", "closed-by-user"), closed


# --- 8. the socket URL is a single-use, expiring capability -----------------------------------


def assert_ticket_refused(socket_url):
    refused = handshake_failure(socket_url)
    assert refused.status == 401, (refused.status, refused.body)
    body = refused.json()
    assert body.get("code") == "AuthenticationFailed", body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def test_a_used_wrong_or_expired_socket_url_is_refused(strict):
    task_id = strict.task()
    session = strict.create(task_id)
    expires = parse_date(session["ticketExpires"])
    now = datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(0) < expires - now <= datetime.timedelta(
        seconds=TICKET_SECONDS + 1), (session["ticketExpires"], now)

    # A wrong ticket, then the right one (still unused), then the right one again.
    url = session["socketUrl"]
    wrong = re.sub(r"ticket=([^&]*)", lambda m: "ticket=" + m.group(1)[::-1], url)
    assert wrong != url
    assert_ticket_refused(wrong)
    shell = strict.connect(session).wait_ready()
    assert_ticket_refused(url)
    shell.run("echo used-$((2+3))")
    expect_output(shell, r"used-5\r?\n")
    shell.run("exit 7")
    expect_exit(shell, 7)
    assert_ticket_refused(url)

    # Expired: not connected within ticket_seconds.
    late = strict.create(task_id)
    time.sleep(TICKET_SECONDS + 1)
    assert_ticket_refused(late["socketUrl"])
    entry = strict.wait_entry_closed(task_id, late["sessionId"], timeout=10)
    assert entry["reason"] == "disconnected", entry
    assert "exitStatus" not in entry, entry


# --- 9. a worker that stops ends its sessions -------------------------------------------------


def test_a_stopping_worker_ends_sessions_with_shutdown_and_1001(main_server, tmp_path_factory):
    worker = start_worker(main_server, tmp_path_factory, "restart-worker")
    sessions = Sessions(main_server, worker)
    try:
        task_id = sessions.task()
        session, shell = sessions.open(task_id)
        shell.run("echo before-$((8+8))")
        expect_output(shell, r"before-16\r?\n")

        stopping = threading.Thread(target=worker.stop)
        stopping.start()
        try:
            shell.wait(lambda: shell.shutdown, "no shutdown frame", timeout=TIMEOUT)
            code, reason = shell.wait_closed(TIMEOUT)
        finally:
            stopping.join(TIMEOUT + 10)
        assert not worker.alive(), "the worker did not exit after SIGTERM"
        assert worker.process.returncode == 0, worker.process.returncode
        assert code == 1001, shell.describe()
        assert shell.exit_status is None and shell.error is None, shell.describe()
        assert [name for name, _ in shell.frames if name in ("shutdown", "stopped", "error")] \
            == ["shutdown"], shell.describe()
        assert shell.frames[-1][0] == "close", shell.describe()
        assert shell.frames[-2] == ("shutdown", b""), shell.describe()
        entry = sessions.wait_entry_closed(task_id, session["sessionId"])
        assert entry["reason"] == "worker-shutdown", entry
        status = wait_resolved(sessions.queue, task_id)
        run = status["runs"][0]
        assert (run["state"], run["reasonResolved"]) == ("exception", "worker-shutdown"), status

        # The worker comes back: it takes the task's next run, which has sessions again.
        worker.start()
        assert len(status["runs"]) > 1 or wait_until(
            lambda: len(sessions.queue.status(task_id)["status"]["runs"]) > 1, 15), \
            sessions.queue.status(task_id)
        sessions.wait_running(task_id, run_id=1)
        again, shell = sessions.open(task_id, run_id=1)
        shell.run("echo after-$((9+9))")
        expect_output(shell, r"after-18\r?\n")
        shell.run("exit 5")
        expect_exit(shell, 5)
        entry = sessions.wait_entry_closed(task_id, again["sessionId"], run_id=1)
        assert (entry["reason"], entry.get("exitStatus")) == ("exited", 5), entry
    finally:
        sessions.cleanup()
        stop_worker(worker)


def test_a_killed_worker_ends_sessions_as_worker_gone(main_server, tmp_path_factory):
    worker = start_worker(main_server, tmp_path_factory, "killed-worker")
    sessions = Sessions(main_server, worker)
    try:
        task_id = sessions.task()
        session, shell = sessions.open(task_id)
        shell.run("echo doomed-$((4+4))")
        expect_output(shell, r"doomed-8\r?\n")
        worker.kill()
        code, reason = shell.wait_closed(TIMEOUT)
        print(f"after SIGKILL of the worker the user's socket got: {shell.describe()}")
        assert shell.error is not None, shell.describe()
        assert code == 1011, shell.describe()
        entry = sessions.wait_entry_closed(task_id, session["sessionId"])
        assert entry["reason"] == "worker-gone", entry
    finally:
        sessions.cleanup()
        stop_worker(worker)


# --- 10. closeSession and the session limit ---------------------------------------------------


def test_close_session_ends_the_users_socket(main):
    task_id = main.task()
    session, shell = main.open(task_id)
    shell.run('echo "open-$((1+2)) pid=$$"')
    killed_pid = expect_output(shell, r"open-3 pid=(\d+)\r?\n")

    closed = main.close_session(task_id, session["sessionId"])
    assert closed["sessionId"] == session["sessionId"], closed
    assert (closed["state"], closed["reason"]) == ("closed", "closed-by-user"), closed
    assert "closed" in closed, closed
    shell.wait_closed(15)
    print(f"after closeSession the user's socket got: {shell.describe()}")
    entry = main.entry(task_id, session["sessionId"])
    assert (entry["state"], entry["reason"]) == ("closed", "closed-by-user"), entry

    # The shell itself was killed.
    assert_shell_gone(main, task_id, int(killed_pid.group(1)))


def assert_shell_gone(sessions, task_id, pid, within=5):
    """Within `within` s, the process `pid` (a closed session's `sh`, its `$$`) is no longer
    in the task's container, as a new session's `ps` sees it."""
    probe, shell = sessions.open(task_id)
    deadline = time.monotonic() + within
    while True:
        mark = shell.mark()
        shell.run("ps -o pid,ppid,args; echo ps-$((7*7))")
        expect_output(shell, r"ps-49\r?\n", mark)
        table = bytes(shell.output[mark:]).decode(errors="replace")
        pids = {int(line.split()[0]) for line in table.splitlines()
                if re.match(r"\s*\d+\s", line)}
        if pid not in pids:
            break
        assert time.monotonic() < deadline, \
            f"the closed session's shell (pid {pid}) still runs {within} s later:\n{table}"
        time.sleep(0.5)
    shell.run("exit")
    expect_exit(shell, 0)


@pytest.mark.parametrize("how, reason", [("drop", "disconnected"), ("close", "closed-by-user")])
def test_a_user_who_goes_away_ends_the_session_and_its_shell(main, how, reason):
    """A connection dropped without a websocket close is `disconnected`; a user's own
    websocket close is `closed-by-user` (as the queue's relay names them)."""
    task_id = main.task()
    session, shell = main.open(task_id)
    shell.run('echo "gone-$((1+2)) pid=$$"')
    pid = int(expect_output(shell, r"gone-3 pid=(\d+)\r?\n").group(1))
    getattr(shell, how)()
    entry = main.wait_entry_closed(task_id, session["sessionId"])
    assert entry["reason"] == reason, entry
    assert "exitStatus" not in entry, entry
    assert_shell_gone(main, task_id, pid)


def test_canceling_the_task_ends_its_sessions(main):
    task_id = main.task()
    session, shell = main.open(task_id)
    shell.run("echo cancel-$((2+2))")
    expect_output(shell, r"cancel-4\r?\n")
    main.queue.cancelTask(task_id)
    code, reason = shell.wait_closed(TIMEOUT)
    print(f"after cancelTask the user's socket got: {shell.describe()}")
    status = wait_resolved(main.queue, task_id)
    run = status["runs"][0]
    assert (run["state"], run["reasonResolved"]) == ("exception", "canceled"), status
    entry = main.wait_entry_closed(task_id, session["sessionId"])
    assert entry["reason"] == "run-resolved", entry
    assert shell.exit_status is None, shell.describe()
    # The spec: an `error` frame ends the session with close code 1011.
    if shell.error is not None:
        assert code == 1011, shell.describe()
    else:
        assert code in (1000, 1001), shell.describe()


def test_pause_holds_the_output_and_resume_releases_all_of_it(main):
    task_id = main.task()
    session, shell = main.open(task_id)
    shell.run("stty -echo; echo quiet-$((3+3))")
    expect_output(shell, r"quiet-6\r?\n")
    shell.pause()
    mark = shell.mark()
    # ~1.3 MB of output, then a marker.
    shell.run("seq 1 200000; echo end-$((5*5))")
    # Paused: the output does not come (apart from what was on its way); read for 3 s.
    shell.read_for(3)
    held = len(shell.output) - mark
    assert b"end-25" not in bytes(shell.output[mark:]), \
        f"{held} bytes arrived while paused, the end too"
    assert held < 1_300_000, f"{held} bytes arrived while paused"
    print(f"{held} bytes arrived while paused")
    shell.resume()
    expect_output(shell, r"\n200000\r?\nend-25\r?\n", mark)
    output = bytes(shell.output[mark:])
    # The numbers start on a line of their own or after the prompt and line editor's codes.
    first = re.search(rb"(?<![0-9])1\r?\n2\r?\n3\r?\n", output)
    assert first, f"no 1, 2, 3 in the output; it began {output[:300]!r}"
    lines = output[first.start():].replace(b"\r", b"").split(b"\n")
    numbers = lines[:lines.index(b"end-25")]
    assert numbers == [str(n).encode() for n in range(1, 200001)], \
        f"{len(numbers)} lines, some lost or reordered; the output began " \
        f"{bytes(shell.output[mark:mark + 300])!r}"
    shell.run("exit")
    expect_exit(shell, 0)


def test_a_session_without_a_tty_has_stderr_and_end_closes_its_stdin(main):
    task_id = main.task()
    command = ["sh", "-c", "echo started; cat; echo eof-$((1+1)) >&2; exit 9"]
    session = main.create(task_id, command=command, tty=False)
    assert (session["command"], session["tty"]) == (command, False), session
    shell = main.connect(session).wait_ready()
    assert shell.frames[0][0] == "resume", shell.describe()
    shell.read_until(b"started\n")
    shell.send_input("through-cat\n")
    shell.read_until(b"started\nthrough-cat\n")
    assert shell.errors_output == b"", shell.describe()
    shell.end_input()
    assert shell.wait_stopped() == 9, shell.describe()
    assert bytes(shell.errors_output) == b"eof-2\n", shell.describe()
    assert bytes(shell.output) == b"started\nthrough-cat\n", shell.describe()
    assert shell.wait_closed(10)[0] == 1000, shell.describe()
    entry = main.wait_entry_closed(task_id, session["sessionId"])
    assert (entry["reason"], entry.get("exitStatus"), entry["command"], entry["tty"]) == \
        ("exited", 9, command, False), entry


def test_a_run_has_at_most_max_per_run_open_sessions(strict):
    task_id = strict.task()
    first, a = strict.open(task_id)
    second, b = strict.open(task_id)
    error = failure(lambda: strict.create(task_id))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict"), error.body
    assert len(strict.list(task_id)) == MAX_PER_RUN

    # Closing one makes room for another.
    strict.close_session(task_id, first["sessionId"])
    a.wait_closed(15)
    third, c = strict.open(task_id)
    c.run("echo third-$((1+2))")
    expect_output(c, r"third-3\r?\n")
    error = failure(lambda: strict.create(task_id))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict"), error.body
    for shell in (b, c):
        shell.run("exit")
        expect_exit(shell, 0)


# --- 11. the shell page's artifact ------------------------------------------------------------


def test_an_interactive_run_has_the_shell_page_as_a_reference_artifact(main):
    task_id = main.task()
    listed = wait_until(lambda: (lambda a: a if SHELL_ARTIFACT in a else None)(
        artifacts(main.queue, task_id)), 15)
    assert listed, artifacts(main.queue, task_id)
    assert listed[SHELL_ARTIFACT] == "reference", listed

    url = main.queue.buildSignedUrl("getArtifact", task_id, "0", SHELL_ARTIFACT)
    response = requests.get(url, allow_redirects=False, timeout=10)
    assert response.status_code in (302, 303), (response.status_code, response.text)
    expected = f"{main.server.root_url}/shell/?taskId={task_id}&runId=0"
    assert response.headers["Location"] == expected, response.headers
    # It is private: anonymous callers do not get it.
    anonymous = requests.get(main.server.api(f"/task/{task_id}/runs/0/artifacts/"
                                              f"{SHELL_ARTIFACT}"),
                             allow_redirects=False, timeout=10)
    assert anonymous.status_code == 403, (anonymous.status_code, anonymous.text)
