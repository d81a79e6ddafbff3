"""The browser shell (`<rootUrl>/shell/`, src/api/shell/index.html) end to end: headless Chromium
(driven by cdp.py) opens the page on an interactive docker task of a real worker, types
`echo hello` and sees `hello`, the command's output on a line of its own.

Three ways in: the `shellUrl` that createSession answers (the page connects to its `socketUrl`),
the bare page with the credentials form (the page signs createSession with Hawk itself), and
Taskcluster's shell address (`?v=2&socketUrl=…`) that `private/generic-worker/shell.html`
redirects to (the page speaks the v2 framing).

Needs Debian's chromium, a Docker engine, the local image of TASKFOLD_TEST_IMAGE (nothing is
pulled) and xterm.js (the npm package, in TASKFOLD__SESSIONS__XTERM_DIR). tests/run.sh installs them all and sets
TASKFOLD_TEST_IMAGE; without that variable, a machine lacking any of them skips this module,
with it every test here fails saying what is missing.
"""

import json
import os
import re
import shutil

import pytest
import requests

from cdp import CHROMIUM, Chromium
from conftest import ROOT_CLIENT, ROOT_TOKEN
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, create_task,
                            remove_containers, serve, wait_resolved, wait_until)

IMAGE = os.environ.get("TASKFOLD_TEST_IMAGE", "taskfold-test/busybox:1")
# Where the server takes xterm.js from: tests/run.sh unpacks the npm package and sets this.
XTERM_DIR = os.environ.get("TASKFOLD__SESSIONS__XTERM_DIR", "/usr/share/javascript/xterm")
# The terminal's input element: xterm.js's hidden textarea, or the page's own when xterm.js
# did not load.
TERMINAL_INPUT = ".xterm-helper-textarea, .plain-terminal-input"
# `hello` as the command's output, not as the typed `echo hello` echoed back.
HELLO = re.compile(r"\nhello\r?\n")


def missing_prerequisites():
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"chromium ({CHROMIUM})")
    if shutil.which("docker") is None:
        missing.append("docker")
    for name, folder in (("xterm.js", "lib"), ("xterm.css", "css")):
        if not any(os.path.exists(os.path.join(XTERM_DIR, where, name)) for where in ("", folder)):
            missing.append(f"{name} in {XTERM_DIR} (TASKFOLD__SESSIONS__XTERM_DIR)")
    return missing


MISSING = missing_prerequisites()
if MISSING and not os.environ.get("TASKFOLD_TEST_IMAGE"):
    pytest.skip(f"missing: {', '.join(MISSING)} (tests/run.sh installs them)",
                allow_module_level=True)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shell_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def shell_worker(shell_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("shell-worker")
    worker = WorkerProcess(shell_server, "docker", base / "data", base, capacity=2).start()
    yield worker
    worker.stop()
    remove_containers(f"taskfold.worker={worker.label}", worker.label)


@pytest.fixture(scope="module")
def browser():
    assert not MISSING, f"missing: {', '.join(MISSING)} (tests/run.sh installs them)"
    with Chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser):
    """A tab of its own; what the page logged is printed (shown when the test fails)."""
    page = browser.new_page()
    yield page
    for line in page.console_messages():
        print(f"page: {line}")
    browser.close_page(page)


@pytest.fixture
def interactive_task(shell_server, shell_worker):
    """The taskId of a running interactive docker task; canceled afterwards, so that the
    worker ends its run."""
    queue = shell_server.queue()
    assert shell_worker.alive(), "the worker process exited"
    task_id = create_task(queue, shell_worker.task_queue_id, payload={
        "image": IMAGE,
        "command": ["sh", "-c", "sleep 60"],
        "maxRunTime": 120,
        "features": {"interactive": True},
    })
    wait_running(queue, task_id)
    yield task_id
    queue.cancelTask(task_id)
    status = wait_resolved(queue, task_id)
    assert status["runs"][0]["state"] == "exception", status


# --- helpers -------------------------------------------------------------------------------


def wait_running(queue, task_id, run_id=0):
    def running():
        runs = queue.status(task_id)["status"]["runs"]
        return len(runs) > run_id and runs[run_id]["state"] == "running"

    assert wait_until(running), \
        f"run {run_id} of {task_id} not running within {TIMEOUT} s: {queue.status(task_id)}"


def shell_state(page):
    return json.loads(page.evaluate("JSON.stringify(window.taskfoldShell)"))


def wait_page(page, expression, what):
    """Waits until `expression` is true in the page; fails with the shell's state if not."""
    try:
        return page.wait_for(expression, TIMEOUT)
    except TimeoutError:
        pytest.fail(f"{what} within {TIMEOUT} s; window.taskfoldShell = {shell_state(page)}")


def echo_hello(page):
    """Once the session is ready, types `echo hello` + Enter and waits for `hello`."""
    wait_page(page, "window.taskfoldShell.ready || window.taskfoldShell.state == 'closed'",
              "the session was not ready")
    state = shell_state(page)
    assert state["state"] == "open" and state["ready"], state
    assert state["terminal"] == "xterm", f"xterm.js did not load: {state}"
    page.focus(TERMINAL_INPUT)
    page.type_text("echo hello")
    page.press_enter()
    wait_page(page, "/\\nhello\\r?\\n/.test(window.taskfoldShell.output)",
              "`hello` did not appear on a line of its own")
    assert HELLO.search(shell_state(page)["output"])


# --- tests ---------------------------------------------------------------------------------


def test_the_page_and_the_xterm_files_are_served(shell_server):
    for path, content_type in (("/shell/", "text/html"),
                               ("/shell/xterm/xterm.js", "javascript"),
                               ("/shell/xterm/xterm.css", "text/css")):
        response = requests.get(f"{shell_server.root_url}{path}", timeout=10)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
        assert content_type in response.headers.get("Content-Type", ""), \
            (path, response.headers.get("Content-Type"))
    # `/shell` sends the browser to the directory, relatively (a proxy may add a path prefix).
    response = requests.get(f"{shell_server.root_url}/shell?taskId=x", allow_redirects=False,
                            timeout=10)
    assert (response.status_code, response.headers["Location"]) == (301, "shell/?taskId=x")
    followed = requests.get(f"{shell_server.root_url}/shell?taskId=x", timeout=10)
    assert (followed.status_code, followed.url) == (200, f"{shell_server.root_url}/shell/?taskId=x")


def test_typing_echo_hello_in_the_shell_url_shows_hello(shell_server, interactive_task, page):
    queue = shell_server.queue()
    session = queue._makeHttpRequest("post", f"task/{interactive_task}/runs/0/sessions", {})
    assert session["shellUrl"].startswith(f"{shell_server.root_url}/shell/?"), session
    page.navigate(session["shellUrl"])
    echo_hello(page)


def test_the_credentials_form_creates_a_session_and_shows_hello(shell_server, interactive_task,
                                                                 page):
    page.navigate(f"{shell_server.root_url}/shell/?taskId={interactive_task}&runId=0")
    wait_page(page, "!document.getElementById('login').hidden", "no credentials form")
    page.focus("#clientId")
    page.type_text(ROOT_CLIENT)
    page.focus("#accessToken")
    page.type_text(ROOT_TOKEN)
    page.press_enter()   # the command stays empty: the queue's default, `sh`
    wait_page(page, "window.taskfoldShell.state == 'open' || "
                    "document.getElementById('login-error').textContent",
              "the form opened no session")
    error = page.evaluate("document.getElementById('login-error').textContent")
    assert not error, f"createSession failed: {error}"
    echo_hello(page)


def test_the_page_speaks_v2_from_generic_workers_shell_html(shell_server, interactive_task, page):
    """Taskcluster's shell page address (`?v=2&socketUrl=…`), as the run's
    `private/generic-worker/shell.html` redirects to it: the page speaks the v2 framing."""
    queue = shell_server.queue()
    url = queue.buildSignedUrl("getArtifact", interactive_task, "0",
                               "private/generic-worker/shell.html")

    def location():
        response = requests.get(url, allow_redirects=False, timeout=10)
        return response.headers.get("Location") if response.status_code == 303 else None

    shell_url = wait_until(location, 20)
    assert shell_url and shell_url.startswith(f"{shell_server.root_url}/shell/?v=2&"), shell_url
    page.navigate(shell_url)
    echo_hello(page)
    assert shell_state(page)["protocol"] == 2, shell_state(page)
