"""`taskfold shell` in a real terminal: tmux runs the CLI against a real queue and Docker
worker; keys go in with `send-keys`, the screen comes back with `capture-pane`. The session
follows the tmux window's size, and the CLI exits with the remote command's status.
"""

import os
import re
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import BINARY, ROOT_CLIENT, ROOT_TOKEN
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, create_task,
                            remove_containers, serve, wait_resolved, wait_until)

IMAGE = os.environ.get("TASKFOLD_TEST_IMAGE", "taskfold-test/busybox:1")

if shutil.which("tmux") is None and not os.environ.get("TASKFOLD_TEST_IMAGE"):
    pytest.skip("tmux is missing (tests/run.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def cli_worker(cli_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("shell-cli-worker")
    worker = WorkerProcess(cli_server, "docker", base / "data", base).start()
    yield worker
    worker.stop()
    remove_containers(f"taskfold.worker={worker.label}", worker.label)


@pytest.fixture
def interactive_task(cli_server, cli_worker):
    queue = cli_server.queue()
    task_id = create_task(queue, cli_worker.task_queue_id, payload={
        "image": IMAGE,
        "command": ["sh", "-c", "sleep 60"],
        "maxRunTime": 120,
        "features": {"interactive": True},
    })

    def running():
        runs = queue.status(task_id)["status"]["runs"]
        return runs and runs[0]["state"] == "running"

    assert wait_until(running), queue.status(task_id)
    yield task_id
    queue.cancelTask(task_id)
    wait_resolved(queue, task_id)


class Tmux:
    """A tmux server of its own (its own socket), one window running a command."""

    def __init__(self, command, env, cols=100, rows=30):
        self.socket = f"taskfold-test-{uuid.uuid4().hex[:8]}"
        self.exit_file = f"/tmp/{self.socket}.exit"
        shell_command = " ".join(f"'{part}'" for part in command)
        # The window's command records the CLI's exit status, then stays for capture-pane.
        script = f"{shell_command}; echo $? > {self.exit_file}; sleep 600"
        self.tmux("new-session", "-d", "-x", str(cols), "-y", str(rows), "sh", "-c", script,
                  env=env)

    def tmux(self, *args, env=None):
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True, env=env).stdout

    def keys(self, *keys):
        self.tmux("send-keys", *keys)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-J")

    def wait_screen(self, pattern, what):
        found = wait_until(lambda: re.search(pattern, self.screen(), re.M), timeout=TIMEOUT)
        assert found, f"{what}; the screen:\n{self.screen()}"

    def exit_status(self):
        assert wait_until(lambda: os.path.exists(self.exit_file), timeout=TIMEOUT), \
            f"the CLI did not exit; the screen:\n{self.screen()}"
        with open(self.exit_file) as file:
            return int(file.read().strip())

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
        if os.path.exists(self.exit_file):
            os.remove(self.exit_file)


@pytest.fixture
def terminal_env(cli_server):
    return dict(os.environ, TASKCLUSTER_ROOT_URL=cli_server.root_url,
                TASKCLUSTER_CLIENT_ID=ROOT_CLIENT, TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN,
                TERM="xterm")


def test_a_shell_in_tmux_runs_commands_follows_resizes_and_exits_with_the_remote_status(
        interactive_task, terminal_env):
    tmux = Tmux([BINARY, "shell", interactive_task], terminal_env, cols=100, rows=30)
    try:
        tmux.wait_screen(r"# $", "no prompt")
        tmux.keys("echo hel''lo-from-tmux", "Enter")
        tmux.wait_screen(r"^hello-from-tmux$", "the command's output did not show")
        tmux.keys("stty size", "Enter")
        tmux.wait_screen(r"^30 100$", "the first size is not the window's")
        tmux.tmux("resize-window", "-x", "132", "-y", "40")
        # The resize travels beside the keys, not in them: ask until it shows (within seconds).
        deadline = time.monotonic() + 10
        tries = 0
        while not re.search(r"^40 132$", tmux.screen(), re.M):
            assert time.monotonic() < deadline, \
                f"the resize did not reach the shell; the screen:\n{tmux.screen()}"
            tries += 1
            tmux.keys(f"stty size; echo asked-$(({tries}+100))", "Enter")
            tmux.wait_screen(rf"^asked-{tries + 100}$", "stty size did not answer")
            time.sleep(0.2)
        tmux.keys("exit 5", "Enter")
        assert tmux.exit_status() == 5, tmux.screen()
    finally:
        tmux.close()


def test_a_command_after_the_double_dash_runs_instead_of_the_shell(
        interactive_task, terminal_env):
    tmux = Tmux([BINARY, "shell", interactive_task, "--run", "0", "--",
                 "sh", "-c", "echo one-shot; exit 7"], terminal_env)
    try:
        assert tmux.exit_status() == 7, tmux.screen()
        assert "one-shot" in tmux.screen()
    finally:
        tmux.close()


def test_the_shell_bench_runs_and_reports_both_numbers(cli_server, cli_worker, terminal_env):
    """`taskfold bench shell` end to end, tiny (its numbers are reported, never asserted)."""
    result = subprocess.run(
        [BINARY, "bench", "shell", "--root-url", cli_server.root_url,
         "--task-queue-id", cli_worker.task_queue_id, "--image", IMAGE,
         "--keystrokes", "20", "--bulk-mib", "2"],
        env=terminal_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert re.search(r"keystroke echo \(20 keys\): p50 [\d.]+ ms", result.stdout), result.stdout
    assert re.search(r"bulk output: 2 MiB in [\d.]+ s", result.stdout), result.stdout
