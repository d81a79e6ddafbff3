"""The web console (`<rootUrl>/`, the Preact bundle embedded in the binary) end to end, in headless
Chromium driven over the DevTools protocol (cdp.py), against the real `taskfold serve` and a real
`taskfold worker` on the local Docker engine. Tasks are made with the official Python client
and checked through the API; the pages are read only through their DOM contract (`data-testid`,
`data-*` attributes, `button[data-action=…]`, `input[name=…]`), never their styling.

What is tested:
- a group of 200 dependent tasks run by a Docker worker: the group page counts them all and its
  counts move from unscheduled/pending to completed live, without a reload (a marker set on
  `window` survives); its state filter and search; the task pages link dependencies both ways;
- a running task's page: its log grows while it runs (`data-lines`), then the run timeline
  (state, reason, worker), the artifacts and the history are those the API reports;
- a signed-in client reruns a failed task and cancels a pending one by clicking the page's
  buttons (checked through the API), and signs out; anonymous visitors and a client without the
  scopes see no action buttons, and a private artifact's link is refused to them (403) while
  the signed-in link (a signed URL) opens;
- the shell opens from the page of an interactive Docker task and echoes what is typed;
- bad input (an unknown taskId, a malformed one, a group with no tasks, a 50 MB log) shows a
  clear message in bounded time (`[data-testid=message]`; for the log, the viewer's notice
  `[data-testid=log-notice]`), and the tab keeps answering (`Runtime.evaluate` within 2 s);
- the task page is HTML over plain HTTP and its script is served gzipped when asked;
- every page is screenshotted (1280×800, and 375×812 for a few) into
  `$TASKFOLD_TEST_ARTIFACTS/console/` (default `<repo>/target/test-artifacts/console/`), and
  axe-core finds no `serious` or `critical` accessibility violation on it (they are printed).

Needs Debian's chromium, a Docker engine, the local image of TASKFOLD_TEST_IMAGE (nothing is
pulled) and axe-core's `axe.min.js` (npm's axe-core, at TASKFOLD_AXE_JS). tests/run.sh installs
them all and sets TASKFOLD_TEST_IMAGE; without that variable, a machine lacking any of them
skips this module, with it every test here fails saying what is missing.
"""

import datetime
import gzip
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from urllib.parse import urljoin

import pytest
import requests
import slugid

from cdp import CHROMIUM, Chromium
from conftest import (LIMITED_CLIENT, LIMITED_TOKEN, REPO, ROOT_CLIENT, ROOT_TOKEN, date_in,
                      walk)
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, create_task,
                            new_task_queue_id, remove_containers, serve, wait_resolved,
                            wait_until)

IMAGE = os.environ.get("TASKFOLD_TEST_IMAGE", "taskfold-test/busybox:1")
AXE_JS = os.environ.get("TASKFOLD_AXE_JS", os.path.join(
    REPO, "target", "node-interop", "node_modules", "axe-core", "axe.min.js"))
ARTIFACTS = os.path.join(os.environ.get("TASKFOLD_TEST_ARTIFACTS")
                         or os.path.join(REPO, "target", "test-artifacts"), "console")

DESKTOP = (1280, 800)
PHONE = (375, 812)
# How long a page may take to show what it was asked for (a state, a message, a count).
PAGE_TIMEOUT = 30
# How long a page that answers at all must take to answer a trivial evaluation.
RESPONSIVE_SECONDS = 2
# The action buttons of the task page, none of which an anonymous visitor may see.
TASK_ACTIONS = ("rerun", "cancel", "priority", "shell", "copy")
GROUP_STATES = ("total", "unscheduled", "pending", "running", "completed", "failed", "exception")
# The size of the group that a Docker worker runs, and how many of its tasks have no
# dependency (each other task depends on the one `ROOTS` before it).
GROUP_SIZE = 200
ROOTS = 20
# The log that is too large to show whole: 50 MB of 64-byte lines.
BIG_LOG_BYTES = 50 * 1024 * 1024
# The endpoint of a task's history (a Taskfold extension), as the client's API references
# describe theirs, so that `_makeApiCall` signs and builds it.
DAY = datetime.timedelta(days=1)
TASK_HISTORY = {"args": ["taskId"], "method": "get", "name": "taskHistory",
                "query": ["continuationToken", "limit"], "route": "/task/<taskId>/history",
                "stability": "experimental", "type": "function"}


def missing_prerequisites():
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"chromium ({CHROMIUM})")
    if shutil.which("docker") is None:
        missing.append("docker")
    elif subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        missing.append(f"the image {IMAGE} (tests/setup/busybox-image.sh)")
    if not os.path.isfile(AXE_JS):
        missing.append(f"axe-core's axe.min.js ({AXE_JS}, TASKFOLD_AXE_JS)")
    return missing


MISSING = missing_prerequisites()
if MISSING and not os.environ.get("TASKFOLD_TEST_IMAGE"):
    pytest.skip(f"missing: {', '.join(MISSING)} (tests/run.sh installs them)",
                allow_module_level=True)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def worker(console_server, tmp_path_factory):
    """The Docker worker of this module's single tasks (the 200-task group has its own)."""
    assert not MISSING, f"missing: {', '.join(MISSING)} (tests/run.sh installs them)"
    base = tmp_path_factory.mktemp("console-worker")
    worker = WorkerProcess(console_server, "docker", base / "data", base, capacity=3).start()
    yield worker
    worker.stop()
    remove_containers(f"taskfold.worker={worker.label}", worker.label)


@pytest.fixture(scope="module")
def browser():
    assert not MISSING, f"missing: {', '.join(MISSING)} (tests/run.sh installs them)"
    with Chromium(window_size=DESKTOP) as chromium:
        yield chromium


@pytest.fixture
def page(browser):
    """A tab of its own at 1280×800; what the page logged is printed (shown when the test
    fails)."""
    page = browser.new_page()
    page.set_viewport(*DESKTOP)
    yield page
    for line in page.console_messages():
        print(f"page: {line}")
    browser.close_page(page)


@pytest.fixture(scope="module")
def finished_task(console_server, worker):
    """A completed Docker task with a public and a private artifact: (taskId, the private
    artifact's content)."""
    queue = console_server.queue()
    secret = f"the private artifact {uuid.uuid4().hex}"
    task_id = create_task(queue, worker.task_queue_id, payload={
        "image": IMAGE,
        "command": ["sh", "-c", f"echo '{secret}' >/tmp/secret.txt; echo public >/tmp/public.txt;"
                                " echo done"],
        "maxRunTime": 60,
        "artifacts": {"private/console/secret.txt": {"type": "file", "path": "/tmp/secret.txt"},
                      "public/console/public.txt": {"type": "file", "path": "/tmp/public.txt"}},
    })
    status = wait_resolved(queue, task_id)
    assert status["state"] == "completed", status
    return task_id, secret


@pytest.fixture
def pending_task(console_server):
    """A task pending on a task queue that no worker serves."""
    return create_task(console_server.queue(), new_task_queue_id("nobody"))


# --- page helpers --------------------------------------------------------------------------


def url(server, path):
    return f"{server.root_url}{path}"


def open_page(page, address, ready="main h1"):
    """Navigates to `address` and waits until the console has rendered (`ready` matches)."""
    page.navigate(address)
    wait_page(page, f"document.querySelector({js(ready)}) !== null",
              f"{address} showed no {ready}")


def wait_page(page, expression, what, timeout=PAGE_TIMEOUT):
    """Waits until `expression` is true in the page; fails saying `what` did not happen, with
    the page's text, if it is not."""
    try:
        return page.wait_for(expression, timeout)
    except TimeoutError:
        body = page.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
        pytest.fail(f"{what} within {timeout} s; the page says:\n{body}")


def js(value):
    return json.dumps(value)


def text_of(selector):
    """An expression: the trimmed text of the first element matching `selector`, or ''."""
    return f"((document.querySelector({js(selector)}) || {{}}).textContent || '').trim()"


def mark(page):
    """Sets a marker on `window` that a reload would lose; `still_marked` checks it."""
    token = uuid.uuid4().hex
    page.evaluate(f"window.__taskfoldTestMarker = {js(token)}")
    return token


def still_marked(page, token):
    return page.evaluate("window.__taskfoldTestMarker") == token


def sign_in(page, client_id, access_token):
    """Signs in with the page's form and waits until the page says who is signed in."""
    page.click("button[data-action=sign-in]")
    page.wait_for_selector("input[name=clientId]", PAGE_TIMEOUT, visible=True)
    page.fill("input[name=clientId]", client_id)
    page.fill("input[name=accessToken]", access_token)
    page.click("form:has(input[name=clientId]) button[type=submit]")
    wait_page(page, f"{text_of('[data-testid=signed-in-as]')}.includes({js(client_id)})",
              f"the page did not say {client_id} is signed in")


def action_buttons(page, actions=TASK_ACTIONS):
    """The `data-action`s among `actions` that the page has a button for."""
    present = page.evaluate("Array.from(document.querySelectorAll('button[data-action]'),"
                            " b => b.getAttribute('data-action'))")
    return sorted(set(present) & set(actions))


def group_counts(page):
    """state → the number the group page shows for it (absent states are left out)."""
    counts = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('[data-testid=group-count]'),"
        " e => [e.getAttribute('data-state'), e.textContent.trim()]))")
    numbers = {}
    for state, text in counts.items():
        digits = re.sub(r"[^\d]", "", text)
        numbers[state] = int(digits) if digits else None
    return numbers


def message(page):
    """The text and role of the page's message element, or None when it has none."""
    return page.evaluate("(e => e && e.textContent.trim() ? {text: e.textContent.trim(),"
                         " role: e.getAttribute('role')} : null)"
                         "(document.querySelector('[data-testid=message]'))")


def assert_page_shape(page):
    """What every page has: a <main>, exactly one h1."""
    assert page.count("main") >= 1, "the page has no <main>"
    assert page.count("h1") == 1, f"the page has {page.count('h1')} h1 elements, not one"


def screenshot(page, name, phone=False):
    """Saves `<name>-desktop.png` (1280×800) and, with `phone`, `<name>-phone.png` (375×812)
    under ARTIFACTS; the page is left at 1280×800."""
    page.set_viewport(*DESKTOP)
    page.screenshot(os.path.join(ARTIFACTS, f"{name}-desktop.png"))
    if phone:
        page.set_viewport(*PHONE, mobile=True)
        # Two frames, so that the layout for the new width is painted.
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.screenshot(os.path.join(ARTIFACTS, f"{name}-phone.png"))
        page.set_viewport(*DESKTOP)


def serious_accessibility_violations(page):
    """axe-core's `serious` and `critical` violations on the page as it is (axe-core injected
    through the DevTools protocol, which the page's CSP does not govern)."""
    if not page.evaluate("typeof window.axe === 'object'"):
        with open(AXE_JS) as source:
            page.run_script(source.read())
    return page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5)"
        ".map(n => n.target.join(' ') + ': ' + n.html.slice(0, 160))})))")


def assert_accessible(page, name):
    violations = serious_accessibility_violations(page)
    assert not violations, f"axe-core on the {name} page:\n" + "\n".join(
        f"- {v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"])
        for v in violations)


def wait_message(page, what, timeout=PAGE_TIMEOUT):
    """Waits until the page shows its message element, checking all the while that the tab
    answers within RESPONSIVE_SECONDS; the message."""
    deadline = time.monotonic() + timeout
    while True:
        assert page.responsive(RESPONSIVE_SECONDS), \
            f"{what}: the tab did not answer within {RESPONSIVE_SECONDS} s (hung)"
        found = message(page)
        if found:
            return found
        if time.monotonic() > deadline:
            body = page.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
            pytest.fail(f"{what}: no [data-testid=message] within {timeout} s; the page says:\n"
                        f"{body!r}")
        time.sleep(0.2)


def task_history_kinds(queue, task_id):
    events = queue._makeApiCall(TASK_HISTORY, task_id, query={"limit": 1000})["events"]
    return [event["kind"] for event in events]


def wait_running(queue, task_id):
    def running():
        runs = queue.status(task_id)["status"]["runs"]
        return runs and runs[-1]["state"] == "running"

    assert wait_until(running), f"{task_id} not running within {TIMEOUT} s: " \
                                f"{queue.status(task_id)}"


# --- plain HTTP ----------------------------------------------------------------------------


def test_the_task_page_is_html_over_plain_http_and_its_script_is_gzipped(console_server,
                                                                         pending_task):
    response = requests.get(url(console_server, f"/tasks/{pending_task}"), timeout=10)
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert response.headers.get("Content-Type", "").startswith("text/html"), response.headers
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", response.text)
    assert scripts, f"no <script src> in the page:\n{response.text[:1000]}"
    for script in scripts:
        script_url = urljoin(response.url, script)
        zipped = requests.get(script_url, headers={"Accept-Encoding": "gzip"}, stream=True,
                              timeout=10)
        assert zipped.status_code == 200, (script_url, zipped.status_code)
        assert "javascript" in zipped.headers.get("Content-Type", ""), zipped.headers
        assert zipped.headers.get("Content-Encoding") == "gzip", (script_url, zipped.headers)
        body = gzip.decompress(zipped.raw.read())
        assert len(body) > 1000, f"{script_url}: {len(body)} bytes"
        # Without Accept-Encoding: the plain script, the same bytes.
        plain = requests.get(script_url, headers={"Accept-Encoding": "identity"}, timeout=10)
        assert plain.headers.get("Content-Encoding") in (None, "identity"), plain.headers
        assert plain.content == body


# --- the group of 200 ----------------------------------------------------------------------


def test_a_group_of_200_dependent_tasks_is_counted_and_updates_live(console_server, page,
                                                                    tmp_path_factory):
    queue = console_server.queue()
    task_queue_id = new_task_queue_id("docker")
    group_id = slugid.nice()
    # ROOTS tasks without dependencies; each other one depends on the task ROOTS before it,
    # so most start unscheduled and become pending as their dependency completes.
    task_ids = []
    for index in range(GROUP_SIZE):
        dependencies = [task_ids[index - ROOTS]] if index >= ROOTS else []
        task_ids.append(create_task(queue, task_queue_id, taskGroupId=group_id,
                                    dependencies=dependencies, payload={
                                        "image": IMAGE, "command": ["true"], "maxRunTime": 60},
                                    metadata={"name": f"console group task {index}",
                                              "description": "a task of the 200",
                                              "owner": "tests@example.com",
                                              "source": "https://example.com/console"}))

    open_page(page, url(console_server, f"/groups/{group_id}"),
              "[data-testid=group-count][data-state=total]")
    assert_page_shape(page)
    wait_page(page, "document.querySelector('[data-testid=group-count][data-state=total]')"
                    ".textContent.trim() === '200'", "the group page did not count 200 tasks")
    counts = group_counts(page)
    assert set(GROUP_STATES) <= set(counts), f"counts shown: {counts}"
    assert counts["unscheduled"] == GROUP_SIZE - ROOTS and counts["pending"] == ROOTS \
        and counts["completed"] == 0, counts
    rows = page.attributes("[data-testid=group-row]", "data-task-id", "data-state")
    assert rows, "the group page shows no rows"
    assert {row["data-task-id"] for row in rows} <= set(task_ids), rows
    # Windowed: not every row of a long group is in the DOM.
    assert len(rows) <= GROUP_SIZE
    # No actions for anonymous visitors.
    assert action_buttons(page, ("seal", "cancel-group")) == []
    screenshot(page, "group-pending", phone=True)
    marker = mark(page)

    # A worker runs them; the counts must move without a reload.
    base = tmp_path_factory.mktemp("console-group-worker")
    worker = WorkerProcess(console_server, "docker", base / "data", base,
                           task_queue_id=task_queue_id, capacity=4).start()
    seen = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            counts = group_counts(page)
            if not seen or seen[-1] != counts:
                seen.append(counts)
            if counts.get("completed") == GROUP_SIZE:
                break
            assert worker.alive(), "the worker exited"
            time.sleep(0.25)
    finally:
        worker.stop()
        remove_containers(f"taskfold.worker={worker.label}", worker.label)
    assert seen[-1].get("completed") == GROUP_SIZE, \
        f"the page did not count {GROUP_SIZE} completed tasks; it went {seen[-8:]}; API: " \
        f"{[queue.status(t)['status']['state'] for t in task_ids[:5]]}…"
    assert still_marked(page, marker), "the page reloaded"
    intermediate = [c["completed"] for c in seen if 0 < (c.get("completed") or 0) < GROUP_SIZE]
    assert intermediate, f"the completed count never showed progress between 0 and " \
                         f"{GROUP_SIZE}: {seen}"
    final = {state: seen[-1].get(state) for state in GROUP_STATES}
    assert final == {"total": GROUP_SIZE, "unscheduled": 0, "pending": 0, "running": 0,
                     "completed": GROUP_SIZE, "failed": 0, "exception": 0}, seen[-1]
    # Every task is completed in the API too, and the rows shown say so.
    listed = [task for listing in walk(queue.listTaskGroup, group_id, limit=100)
              for task in listing["tasks"]]
    assert {t["status"]["state"] for t in listed} == {"completed"} and len(listed) == GROUP_SIZE
    wait_page(page, "Array.from(document.querySelectorAll('[data-testid=group-row]'))"
                    ".every(r => r.getAttribute('data-state') === 'completed')",
              "rows still not all completed")
    screenshot(page, "group-completed")
    assert_accessible(page, "group")

    # The state filter: no failed task, every completed one.
    page.select_option("select[name=state]", "failed")
    wait_page(page, "document.querySelectorAll('[data-testid=group-row]').length === 0",
              "the `failed` filter still shows rows")
    page.select_option("select[name=state]", "completed")
    wait_page(page, "document.querySelectorAll('[data-testid=group-row]').length > 0",
              "the `completed` filter shows no rows")
    # The search: one taskId, one row.
    wanted = task_ids[137]
    page.fill("input[name=search]", wanted)
    wait_page(page, "(rows => rows.length === 1 && rows[0].getAttribute('data-task-id') === "
                    f"{js(wanted)})(document.querySelectorAll('[data-testid=group-row]'))",
              f"searching for {wanted} did not show its row alone")

    # Dependencies link both ways on the task pages.
    open_page(page, url(console_server, f"/tasks/{task_ids[ROOTS]}"), "[data-testid=task-state]")
    wait_page(page, f"Array.from(document.querySelectorAll('[data-testid=dependency]'))"
                    f".some(a => (a.getAttribute('href') || '').includes({js(task_ids[0])}))",
              f"no dependency link to {task_ids[0]}")
    open_page(page, url(console_server, f"/tasks/{task_ids[0]}"), "[data-testid=task-state]")
    wait_page(page, f"Array.from(document.querySelectorAll('[data-testid=dependent]'))"
                    f".some(a => (a.getAttribute('href') || '').includes({js(task_ids[ROOTS])}))",
              f"no dependent link to {task_ids[ROOTS]}")


# --- a running task, then its record -------------------------------------------------------


def test_a_running_task_log_grows_then_runs_artifacts_and_history_are_right(console_server,
                                                                             worker, page):
    queue = console_server.queue()
    task_id = create_task(queue, worker.task_queue_id, payload={
        "image": IMAGE,
        "command": ["sh", "-c", "echo artifact >/tmp/out.txt; "
                                "for i in $(seq 1 30); do echo \"line $i of the log\"; "
                                "sleep 0.3; done"],
        "maxRunTime": 120,
        "artifacts": {"public/console/out.txt": {"type": "file", "path": "/tmp/out.txt"}},
    })
    wait_running(queue, task_id)
    open_page(page, url(console_server, f"/tasks/{task_id}"), "[data-testid=task-state]")
    assert_page_shape(page)
    marker = mark(page)
    # While the task runs, the log's line count must grow.
    lines_while_running = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        sample = page.evaluate(
            "({state: " + text_of("[data-testid=task-state]") + ","
            " lines: (e => e ? Number(e.getAttribute('data-lines')) : null)"
            "(document.querySelector('[data-testid=log]'))})")
        if sample["state"] != "running":
            if lines_while_running or sample["state"] not in ("pending", ""):
                break
        elif sample["lines"] is not None:
            lines_while_running.append(sample["lines"])
        time.sleep(0.2)
    if len(lines_while_running) > 3:
        screenshot(page, "task-running")
    growth = sorted(set(lines_while_running))
    assert len([n for n in growth if n > 0]) >= 2, \
        f"data-lines did not grow while the task ran: {lines_while_running}"
    assert lines_while_running == sorted(lines_while_running), \
        f"data-lines went down: {lines_while_running}"

    status = wait_resolved(queue, task_id)
    assert status["state"] == "completed", status
    wait_page(page, f"{text_of('[data-testid=task-state]')} === 'completed'",
              "the page did not show the task completed")
    wait_page(page, "(e => e && e.getAttribute('data-complete') === 'true')"
                    "(document.querySelector('[data-testid=log]'))",
              "the log viewer did not say the log is complete")
    assert page.evaluate("Number(document.querySelector('[data-testid=log]')"
                         ".getAttribute('data-lines'))") >= 30
    page.click("button[data-action=log-end]")
    wait_page(page, "Array.from(document.querySelectorAll('[data-testid=log-line]'))"
                    ".some(l => l.textContent.includes('line 30 of the log'))",
              "the log's last line is not shown after `log-end`")
    page.fill("input[name=log-search]", "line 13 of")
    wait_page(page, "Array.from(document.querySelectorAll('[data-testid=log-line]'))"
                    ".some(l => l.textContent.includes('line 13 of the log'))",
              "searching the log did not show the line")
    assert still_marked(page, marker), "the page reloaded"

    # The run timeline: one run, as the API says, by this worker.
    def runs_shown():
        return page.attributes("[data-testid=run]", "data-run-id", "data-state",
                               "data-reason-resolved", "data-worker-id")

    wait_page(page, "document.querySelectorAll('[data-testid=run]').length === 1",
              "not one run shown")
    run = status["runs"][0]
    assert runs_shown() == [{"data-run-id": "0", "data-state": run["state"],
                             "data-reason-resolved": run["reasonResolved"],
                             "data-worker-id": run["workerId"]}], status
    assert run["workerId"] == worker.worker_id
    # The artifacts the API lists, each a link.
    listed = {a["name"] for a in queue.listArtifacts(task_id, "0")["artifacts"]}
    assert "public/console/out.txt" in listed and "public/logs/live_backing.log" in listed
    wait_page(page, f"document.querySelectorAll('[data-testid=artifact]').length === "
                    f"{len(listed)}", f"not the {len(listed)} artifacts {sorted(listed)}")
    shown = page.attributes("[data-testid=artifact]", "data-name", "href")
    assert {a["data-name"] for a in shown} == listed, shown
    assert all(a["href"] for a in shown), shown
    out = next(a["href"] for a in shown if a["data-name"] == "public/console/out.txt")
    fetched = requests.get(urljoin(page.evaluate("location.href"), out), timeout=10)
    assert (fetched.status_code, fetched.text.strip()) == (200, "artifact")
    # The history: the API's events, in order.
    kinds = task_history_kinds(queue, task_id)
    wait_page(page, f"document.querySelectorAll('[data-testid=history-event]').length === "
                    f"{len(kinds)}", f"not the {len(kinds)} history events {kinds}")
    shown_kinds = [e["data-kind"] for e in page.attributes("[data-testid=history-event]",
                                                             "data-kind")]
    assert shown_kinds == kinds
    screenshot(page, "task-completed", phone=True)
    assert_accessible(page, "task")


# --- actions -------------------------------------------------------------------------------


def test_a_signed_in_client_reruns_a_failed_task_and_cancels_a_pending_one(
        console_server, worker, pending_task, page):
    queue = console_server.queue()
    failed = create_task(queue, worker.task_queue_id, payload={
        "image": IMAGE, "command": ["sh", "-c", "echo failing; exit 1"], "maxRunTime": 60})
    assert wait_resolved(queue, failed)["state"] == "failed"

    open_page(page, url(console_server, f"/tasks/{failed}"), "[data-testid=task-state]")
    wait_page(page, f"{text_of('[data-testid=task-state]')} === 'failed'",
              "the page did not show the task failed")
    assert action_buttons(page) == [], "an anonymous visitor sees action buttons"
    sign_in(page, ROOT_CLIENT, ROOT_TOKEN)
    screenshot(page, "task-failed-signed-in")
    page.click("button[data-action=rerun]")
    assert wait_until(lambda: len(queue.status(failed)["status"]["runs"]) == 2), \
        f"clicking rerun made no new run: {queue.status(failed)}"
    assert queue.status(failed)["status"]["runs"][1]["reasonCreated"] == "rerun"
    # The new run appears without a reload.
    wait_page(page, "document.querySelectorAll('[data-testid=run]').length === 2",
              "the page did not show the second run")

    # The session holds across pages of the tab; cancel the pending task.
    open_page(page, url(console_server, f"/tasks/{pending_task}"), "[data-testid=task-state]")
    wait_page(page, f"{text_of('[data-testid=task-state]')} === 'pending'",
              "the page did not show the task pending")
    assert page.count("[data-testid=signed-in-as]") == 1, "signed out by a navigation"
    page.click("button[data-action=cancel]")
    assert wait_until(lambda: queue.status(pending_task)["status"]["state"] == "exception"), \
        f"clicking cancel did not cancel: {queue.status(pending_task)}"
    status = queue.status(pending_task)["status"]
    assert status["runs"][-1]["reasonResolved"] == "canceled", status
    wait_page(page, f"{text_of('[data-testid=task-state]')} === 'exception'",
              "the page did not show the task canceled")

    # Signing out takes the actions away.
    page.click("button[data-action=sign-out]")
    page.wait_for_selector("button[data-action=sign-in]", PAGE_TIMEOUT)
    assert action_buttons(page) == [] and page.count("[data-testid=signed-in-as]") == 0
    wait_resolved(queue, failed, run_id=1)


def test_anonymous_visitors_see_no_actions_and_cannot_open_a_private_artifact(
        console_server, worker, finished_task, page):
    task_id, secret = finished_task
    open_page(page, url(console_server, f"/tasks/{task_id}"), "[data-testid=task-state]")
    wait_page(page, "document.querySelector("
                    "'[data-testid=artifact][data-name=\"private/console/secret.txt\"]') !== null",
              "no link to the private artifact")
    assert page.count("button[data-action=sign-in]") == 1
    assert action_buttons(page) == []
    private = page.evaluate("document.querySelector('[data-testid=artifact]"
                            "[data-name=\"private/console/secret.txt\"]').href")
    # Opened anonymously (as a new tab or curl would), the server refuses it.
    refused = requests.get(private, timeout=10)
    assert refused.status_code == 403, (private, refused.status_code, refused.text[:300])
    assert secret not in refused.text
    # And from the page itself.
    in_page = page.evaluate(f"fetch({js(private)}).then(r => r.status)")
    assert in_page == 403, in_page
    # The public one opens.
    public = page.evaluate("document.querySelector('[data-testid=artifact]"
                           "[data-name=\"public/console/public.txt\"]').href")
    assert requests.get(public, timeout=10).text.strip() == "public"
    screenshot(page, "task-anonymous")

    # Signed in, the link is a signed URL that opens.
    sign_in(page, ROOT_CLIENT, ROOT_TOKEN)
    wait_page(page, "(a => a && a.href !== " + js(private) + ")(document.querySelector("
                    "'[data-testid=artifact][data-name=\"private/console/secret.txt\"]'))",
              "the private artifact's link did not change to a signed URL")
    signed = page.evaluate("document.querySelector('[data-testid=artifact]"
                           "[data-name=\"private/console/secret.txt\"]').href")
    opened = requests.get(signed, timeout=10)
    assert (opened.status_code, opened.text.strip()) == (200, secret), \
        (signed, opened.status_code, opened.text[:300])
    assert "rerun" in action_buttons(page)


def test_a_client_without_the_scopes_sees_no_actions(console_server, pending_task, page):
    open_page(page, url(console_server, f"/tasks/{pending_task}"), "[data-testid=task-state]")
    sign_in(page, LIMITED_CLIENT, LIMITED_TOKEN)
    wait_page(page, f"{text_of('[data-testid=task-state]')} === 'pending'",
              "the page did not show the task pending")
    # Give the page a moment to settle its scopes, then check: nothing it may not do.
    time.sleep(1)
    assert action_buttons(page) == [], "a client without the scopes sees action buttons"


def test_group_and_queue_pages_offer_actions_only_when_allowed(console_server, worker,
                                                               finished_task, page):
    queue = console_server.queue()
    group_id = queue.task(finished_task[0])["taskGroupId"]
    open_page(page, url(console_server, f"/groups/{group_id}"), "[data-testid=group-row]")
    assert action_buttons(page, ("seal", "cancel-group")) == []
    # Anonymous visitors may not list a queue's workers (the anonymous role has no
    # queue:list-workers), let alone quarantine one.
    open_page(page, url(console_server, f"/queues/{worker.task_queue_id}"), "main h1")
    time.sleep(1)
    assert action_buttons(page, ("quarantine",)) == []
    sign_in(page, ROOT_CLIENT, ROOT_TOKEN)
    wait_page(page, f"document.querySelector("
                    f"{js(f'[data-testid=worker-row][data-worker-id={js(worker.worker_id)}]')})"
                    " !== null", f"no row for the worker {worker.worker_id}")
    page.wait_for_selector("button[data-action=quarantine]", PAGE_TIMEOUT)
    open_page(page, url(console_server, f"/groups/{group_id}"), "[data-testid=group-row]")
    page.wait_for_selector("button[data-action=seal]", PAGE_TIMEOUT)
    page.wait_for_selector("button[data-action=cancel-group]", PAGE_TIMEOUT)


# --- the shell -----------------------------------------------------------------------------


def test_the_shell_opens_from_the_task_page_and_echoes_input(console_server, worker, page):
    queue = console_server.queue()
    task_id = create_task(queue, worker.task_queue_id, payload={
        "image": IMAGE, "command": ["sh", "-c", "sleep 120"], "maxRunTime": 180,
        "features": {"interactive": True}})
    try:
        wait_running(queue, task_id)
        open_page(page, url(console_server, f"/tasks/{task_id}"), "[data-testid=task-state]")
        wait_page(page, f"{text_of('[data-testid=task-state]')} === 'running'",
                  "the page did not show the task running")
        assert page.count("button[data-action=shell]") == 0, "a shell button for anonymous"
        sign_in(page, ROOT_CLIENT, ROOT_TOKEN)
        page.click("button[data-action=shell]")
        page.wait_for_selector("[data-testid=shell] .xterm-helper-textarea", PAGE_TIMEOUT)
        rows = "[data-testid=shell] .xterm-rows"
        # The shell's prompt (anything on the terminal) says the session is open.
        wait_page(page, f"{text_of(rows)}.length > 0", "the terminal showed no prompt")
        page.focus("[data-testid=shell] .xterm-helper-textarea")
        page.type_text("echo hel''lo-from-the-console\n")
        # The output on a row of its own (the typed command shows `hel''lo`, not this).
        wait_page(page, f"Array.from(document.querySelectorAll({js(rows + ' > div')}))"
                        ".some(r => r.textContent.trim() === 'hello-from-the-console')",
                  "the shell did not echo the typed command's output")
        screenshot(page, "task-shell")
    finally:
        queue.cancelTask(task_id)
        wait_resolved(queue, task_id)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("what, path", [
    ("an unknown taskId", lambda: f"/tasks/{slugid.nice()}"),
    ("a malformed taskId", lambda: "/tasks/not-a-task-id!"),
    ("a group with no tasks", lambda: f"/groups/{slugid.nice()}"),
], ids=["unknown-task", "malformed-task", "empty-group"])
def test_bad_input_shows_a_message_in_bounded_time(console_server, page, what, path):
    open_page(page, url(console_server, path()), "main")
    found = wait_message(page, what)
    assert found["role"] == "alert", found
    assert page.count("h1") == 1
    assert page.responsive(RESPONSIVE_SECONDS)
    screenshot(page, "message-" + what.replace(" ", "-"))


def test_a_50_mb_log_shows_the_viewers_notice_and_the_tab_keeps_answering(console_server,
                                                                         worker, page):
    queue = console_server.queue()
    # 50 MB of 64-byte lines (63 characters and a newline).
    line = ("a line of the 50 MB log, " * 3)[:63]
    task_id = create_task(queue, worker.task_queue_id, payload={
        "image": IMAGE, "maxRunTime": 300,
        "command": ["sh", "-c", f"yes '{line}' | head -c {BIG_LOG_BYTES}"]})
    status = wait_resolved(queue, task_id, timeout=300)
    assert status["state"] == "completed", status
    open_page(page, url(console_server, f"/tasks/{task_id}"), "[data-testid=task-state]")
    # The viewer must have read the log (`data-complete`), or the page must say why not, within
    # the bounded time, and the tab must answer all the while.
    deadline = time.monotonic() + 60
    state = {}
    while time.monotonic() < deadline:
        assert page.responsive(RESPONSIVE_SECONDS), \
            f"the tab did not answer within {RESPONSIVE_SECONDS} s while loading a 50 MB log"
        state = page.evaluate("({log: (e => e && {lines: e.getAttribute('data-lines'),"
                              " complete: e.getAttribute('data-complete')})"
                              "(document.querySelector('[data-testid=log]')),"
                              " message: " + text_of("[data-testid=message]") + "})")
        if state["message"] or (state["log"] or {}).get("complete") == "true":
            break
        time.sleep(0.25)
    assert state.get("message") or (state.get("log") or {}).get("complete") == "true", \
        f"the 50 MB log was neither read nor refused within 60 s: {state}"
    # Then the viewer's notice (`[data-testid=log-notice]`) says what it shows of the log, or
    # the page's message says why it shows none.
    notice = "[data-testid=log-notice], [data-testid=message]"
    shown = page.evaluate(f"Array.from(document.querySelectorAll({js(notice)}),"
                          " e => e.textContent.trim()).filter(Boolean)")
    assert shown, f"no notice about the 50 MB log: {state}"
    print(f"the 50 MB log: {state}; notice: {shown}")
    # The tab still answers after a while, and jumping to the end works.
    time.sleep(2)
    assert page.responsive(RESPONSIVE_SECONDS)
    page.click("button[data-action=log-end]")
    assert page.responsive(RESPONSIVE_SECONDS)
    page.wait_for_selector("[data-testid=log-line]", PAGE_TIMEOUT)
    screenshot(page, "task-50mb-log")


# --- every page: screenshots and accessibility ---------------------------------------------


@pytest.fixture(scope="module")
def every_page_data(console_server, worker, finished_task):
    """Something on each page: a finished task (and its group, its worker's queue), a secret,
    an index entry, a hook, a client and a role."""
    task_id, _ = finished_task
    group_id = console_server.queue().task(task_id)["taskGroupId"]
    suffix = uuid.uuid4().hex[:8]
    console_server.client("Secrets").set(f"project/console/{suffix}",
                                         {"secret": {"k": "v"}, "expires": date_in(
                                             DAY)})
    console_server.client("Index").insertTask(f"project.console.{suffix}.latest", {
        "taskId": task_id, "rank": 0, "data": {},
        "expires": date_in(DAY)})
    console_server.client("Hooks").createHook("project-console", f"hook-{suffix}", {
        "metadata": {"name": "a console hook", "description": "a hook for the console's pages",
                     "owner": "tests@example.com"},
        "task": {"taskQueueId": worker.task_queue_id,
                 "payload": {"image": IMAGE, "command": ["true"], "maxRunTime": 60},
                 "metadata": {"name": "hooked", "description": "made by a hook",
                              "owner": "tests@example.com",
                              "source": "https://example.com/console"}},
        "triggerSchema": {"type": "object"}})
    console_server.client("Auth").createClient(f"project/console/{suffix}", {
        "expires": date_in(DAY),
        "description": "a client for the console's pages", "scopes": ["queue:get-task:*"]})
    console_server.client("Auth").createRole(f"project:console:{suffix}", {
        "description": "a role for the console's pages", "scopes": ["queue:status:*"]})
    return {"task": task_id, "group": group_id, "queue": worker.task_queue_id}


# name → (its path from the data, what shows it has its content anonymously and signed in,
# whether to take a phone screenshot too). An anonymous visitor may not list the task queues,
# a queue's workers, the secrets, clients or roles: those pages ask them to sign in instead.
PAGES = {
    "home": (lambda d: "/", "input[name=q]", "input[name=q]", True),
    "task": (lambda d: f"/tasks/{d['task']}", "[data-testid=run]", "[data-testid=run]", True),
    "group": (lambda d: f"/groups/{d['group']}", "[data-testid=group-row]",
              "[data-testid=group-row]", True),
    "queues": (lambda d: "/queues", "main h1", "[data-testid=queue-row]", False),
    "queue": (lambda d: f"/queues/{d['queue']}", "main h1", "[data-testid=worker-row]", False),
    "index": (lambda d: "/index", "main h1", "main h1", False),
    "hooks": (lambda d: "/hooks", "main h1", "main h1", False),
    "secrets": (lambda d: "/secrets", "main h1", "main h1", False),
    "clients": (lambda d: "/clients", "main h1", "main h1", False),
    "roles": (lambda d: "/roles", "main h1", "main h1", False),
}


@pytest.mark.parametrize("name", list(PAGES))
@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_every_page_is_screenshotted_and_has_no_serious_accessibility_violations(
        console_server, every_page_data, page, name, signed_in):
    path, anonymous_ready, signed_in_ready, phone = PAGES[name]
    open_page(page, url(console_server, "/"))
    if signed_in:
        sign_in(page, ROOT_CLIENT, ROOT_TOKEN)
    open_page(page, url(console_server, path(every_page_data)),
              signed_in_ready if signed_in else anonymous_ready)
    assert_page_shape(page)
    assert page.count("nav a") >= 1, "no <nav> with links"
    # Let data-driven parts settle (lists, counts) before the screenshot and the scan.
    time.sleep(1)
    if signed_in:
        found = message(page)
        assert not found, f"the {name} page shows an error to the root client: {found}"
    suffix = "-signed-in" if signed_in else ""
    screenshot(page, f"page-{name}{suffix}", phone=phone)
    assert_accessible(page, name + suffix)
    assert page.responsive(RESPONSIVE_SECONDS)


def test_the_home_page_searches_and_links_recent_groups(console_server, finished_task, page):
    task_id, _ = finished_task
    open_page(page, url(console_server, "/"), "input[name=q]")
    # The task's group is the task itself (no taskGroupId given): either page will do.
    page.fill("input[name=q]", task_id)
    page.press_enter()
    wait_page(page, f"[{js('/tasks/' + task_id)}, {js('/groups/' + task_id)}]"
                    ".some(p => location.pathname.endsWith(p))",
              "searching a taskId on the home page did not open its page")
    # Recent groups: links to group pages.
    open_page(page, url(console_server, "/"), "input[name=q]")
    wait_page(page, "document.querySelectorAll('[data-testid=recent-group]').length > 0",
              "the home page lists no recent group")
    links = page.attributes("[data-testid=recent-group]", "href")
    assert all("/groups/" in (link["href"] or "") for link in links), links
