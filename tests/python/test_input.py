"""Cloudomation's INPUT task kind, end to end: a real server and a real
`taskfold worker --engine rest,input`. The worker publishes each task's request on the queue
and waits; the tests read it (anonymously, as the task's readers may), answer it through the
official Python client's generic call, through `taskfold input answer` and through the web
console's form (headless Chromium, cdp.py; skipped without it), let one expire, refuse
answers without the scope and second answers, and restart the server (killed, then stopped)
between the request and the answer and after it, reading the same request back.

What the worker and the server logged during a test is printed when that test fails.
"""

import json
import os
import subprocess
import uuid

import pytest

from cdp import CHROMIUM, Chromium
from conftest import (BINARY, ROOT_CLIENT, ROOT_TOKEN, failure, limited_queue, make_server,
                      watch_logs)
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, WorkerProcess, assert_in_log, assert_run,
                            create_task, fetch, serve, wait_resolved, wait_until)

BACKING_LOG = "public/logs/live_backing.log"
OUTPUTS = "public/outputs.json"
EXPIRED = "input request expired"
# How long the console may take to show what it was asked for.
PAGE_TIMEOUT = 30

# The routes as the client's API references describe theirs, so that `_makeApiCall` builds
# and signs them as it does any generated method.
GET_INPUT = {"args": ["taskId", "runId"], "method": "get", "name": "getInput",
             "route": "/task/<taskId>/runs/<runId>/input", "stability": "experimental",
             "type": "function", "query": []}
ANSWER_INPUT = {**GET_INPUT, "method": "post", "name": "answerInput",
                "input": "answer-input-request.json"}
LIST_INPUT = {"args": ["taskQueueId"], "method": "get", "name": "listInput",
              "route": "/task-queues/<taskQueueId>/input", "stability": "experimental",
              "type": "function", "query": []}


def get_input(queue, task_id, run_id=0):
    return queue._makeApiCall(GET_INPUT, task_id, str(run_id))


def answer(queue, task_id, response, run_id=0):
    return queue._makeApiCall(ANSWER_INPUT, task_id, str(run_id), {"response": response})


def question(timeout=10, **more):
    payload = {"kind": "input", "request": f"deploy {uuid.uuid4().hex[:6]}?",
               "reference": {"ticket": 42, "tags": ["a"]}, "timeout": timeout}
    payload.update(more)
    return payload


def waiting(queue, task_id, run_id=0):
    """The run's request once the worker has published it."""

    def published():
        try:
            return get_input(queue, task_id, run_id)
        except Exception:  # 404 until the worker asks
            return None

    request = wait_until(published)
    assert request is not None, f"{task_id} asked for no input"
    return request


def outcome(server, queue, task_id):
    """(status, backing log, outputs) once run 0 is resolved."""
    status = wait_resolved(queue, task_id)
    log = fetch(server, task_id, 0, BACKING_LOG)
    outputs = json.loads(fetch(server, task_id, 0, OUTPUTS))
    return status, log, outputs


@pytest.fixture(scope="module")
def input_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def worker(input_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("input-worker")
    worker = WorkerProcess(input_server, "rest,input", base / "data", base,
                           task_queue_id=f"proj-tests/input-{uuid.uuid4().hex[:8]}",
                           worker_group="input-tests",
                           worker_id=f"input-{uuid.uuid4().hex[:10]}", capacity=4).start()
    yield worker
    worker.stop()


@pytest.fixture
def queue(input_server):
    return input_server.queue()


def test_answered_through_the_api(input_server, queue, worker):
    payload = question()
    task_id = create_task(queue, worker.task_queue_id, payload=payload)
    # Anyone who may read the task reads its request: here, anonymously.
    request = waiting(input_server.queue(credentials={}), task_id)
    assert request["taskId"] == task_id and request["runId"] == 0
    assert (request["request"], request["reference"]) == (payload["request"],
                                                           payload["reference"])
    assert request["state"] == "waiting"
    assert request["requested"] < request["expires"]
    assert "response" not in request
    listed = queue._makeApiCall(LIST_INPUT, worker.task_queue_id)["inputs"]
    assert [entry["taskId"] for entry in listed] == [task_id]

    answered = answer(queue, task_id, {"approved": True, "by": "ops"})
    assert answered["state"] == "answered"
    assert answered["response"] == {"approved": True, "by": "ops"}
    assert answered["clientId"] == ROOT_CLIENT
    status, log, outputs = outcome(input_server, queue, task_id)
    assert_run(status, 0, "completed", "completed")
    assert outputs == {"response": {"approved": True, "by": "ops"},
                       "reference": payload["reference"]}
    assert_in_log(log, f"Input requested: {payload['request']}", f"Answered by {ROOT_CLIENT}",
                  "Outputs:", '"approved": true')
    # Answered once: a second answer is refused, and the request stays as it was answered.
    second = failure(answer, queue, task_id, "no")
    assert second.status_code == 409, second
    assert "already answered" in second.body["message"]
    assert get_input(queue, task_id)["response"] == {"approved": True, "by": "ops"}
    assert queue._makeApiCall(LIST_INPUT, worker.task_queue_id)["inputs"] == []
    kinds = [event["kind"] for event in queue._makeApiCall(
        {"args": ["taskId"], "method": "get", "name": "taskHistory", "query": [],
         "route": "/task/<taskId>/history", "type": "function"}, task_id)["events"]]
    assert kinds.index("input-requested") < kinds.index("input-answered")


def test_answered_through_the_cli(input_server, queue, worker, tmp_path):
    payload = {"kind": "input", "request": "which colour?", "timeout": 10}
    task_id = create_task(queue, worker.task_queue_id, payload=payload)
    waiting(queue, task_id)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("TASKCLUSTER_")}
    env.update(TASKCLUSTER_ROOT_URL=input_server.root_url, TASKCLUSTER_CLIENT_ID=ROOT_CLIENT,
               TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN)

    def cli(*args):
        done = subprocess.run([BINARY, "input", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = cli("list", "--queue", worker.task_queue_id)
    assert f"{task_id}\t0\twaiting\t" in listed and "which colour?" in listed
    assert "waiting" in cli("list", "--task", task_id)
    # Without either, every task queue's: this one's request among them.
    assert f"{task_id}\t0\twaiting\t" in cli("list")
    answered = json.loads(cli("answer", task_id, "blue"))
    assert (answered["state"], answered["response"]) == ("answered", "blue")
    status, _, outputs = outcome(input_server, queue, task_id)
    assert_run(status, 0, "completed", "completed")
    assert outputs == {"response": "blue", "reference": None}
    # A request that is answered is refused again, with the queue's 409.
    again = subprocess.run([BINARY, "input", "answer", task_id, "--run", "0", '{"n": 1}'],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert again.returncode != 0 and "409 Conflict" in again.stderr, again.stderr


def test_expires_when_not_answered(input_server, queue, worker):
    task_id = create_task(queue, worker.task_queue_id, payload=question(timeout=0.05))
    waiting(queue, task_id)
    status, log, outputs = outcome(input_server, queue, task_id)
    assert_run(status, 0, "failed", "failed")
    assert outputs == {"error": EXPIRED, "reference": {"ticket": 42, "tags": ["a"]}}
    assert_in_log(log, EXPIRED)
    assert get_input(queue, task_id)["state"] == "expired"
    late = failure(answer, queue, task_id, "yes")
    assert late.status_code == 409, late


def test_malformed_payloads(input_server, queue, worker):
    task_id = create_task(queue, worker.task_queue_id,
                          payload={"kind": "input", "request": 5, "timeout": -1, "bogus": 1})
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "exception", "malformed-payload")
    assert_in_log(fetch(input_server, task_id, 0, BACKING_LOG),
                  "the task's payload is not valid:", "payload/request", "payload/timeout",
                  "bogus")
    # The run asked for nothing.
    missing = failure(get_input, queue, task_id)
    assert missing.status_code == 404 and missing.body["code"] == "ResourceNotFound", missing
    assert "asked for no input" in missing.body["message"]


def test_answers_need_the_scope_and_a_body(input_server, queue, worker):
    task_id = create_task(queue, worker.task_queue_id, payload=question())
    waiting(queue, task_id)
    reader = limited_queue(input_server, ["queue:get-task:*"])
    refused = failure(answer, reader, task_id, "yes")
    assert refused.status_code == 403 and refused.body["code"] == "InsufficientScopes", refused
    assert f"queue:answer-input:{worker.task_queue_id}" in refused.body["message"]
    for body in [{}, {"response": 1, "extra": 2}]:
        bad = failure(queue._makeApiCall, ANSWER_INPUT, task_id, "0", body)
        assert bad.status_code == 400, bad
    assert get_input(queue, task_id)["state"] == "waiting"
    answerer = limited_queue(input_server, [f"queue:answer-input:{worker.task_queue_id}"])
    assert answer(answerer, task_id, 7)["state"] == "answered"
    status, _, outputs = outcome(input_server, queue, task_id)
    assert_run(status, 0, "completed", "completed")
    assert outputs["response"] == 7


# The queue signs task credentials with the same key after a restart, so that the worker keeps
# its run across them.
RESTART_CONFIG = SHORT_CLAIM_WORK_CONFIG + f"""
[auth]
queue_access_token = "queue-token-{uuid.uuid4().hex}"
"""


def test_the_request_and_its_answer_survive_restarts(tmp_path_factory):
    server = make_server(tmp_path_factory, RESTART_CONFIG)
    watch_logs(os.path.join(server.log_dir, "server-*.log"))
    server.start()
    base = tmp_path_factory.mktemp("input-restart-worker")
    worker = WorkerProcess(server, "input", base / "data", base).start()
    try:
        queue = server.queue()
        task_id = create_task(queue, worker.task_queue_id, payload=question())
        before = waiting(queue, task_id)
        # Killed between the request and the answer: the log alone has the request.
        server.kill()
        server.start(port=server.port)
        assert get_input(queue, task_id) == before
        answered = answer(queue, task_id, "after the restart")
        status, _, outputs = outcome(server, queue, task_id)
        assert_run(status, 0, "completed", "completed")
        assert outputs["response"] == "after the restart"
        # Stopped after the answer: the same answer is read back.
        server.stop()
        server.start(port=server.port)
        assert get_input(queue, task_id) == answered
        server.kill()
        server.start(port=server.port)
        assert get_input(queue, task_id) == answered
    finally:
        worker.stop()
        server.stop()


# --- the web console -----------------------------------------------------------------------


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no chromium at {CHROMIUM}")
def test_the_console_shows_the_request_and_answers_it_when_allowed(input_server, queue, worker):
    task_id = create_task(queue, worker.task_queue_id, payload=question())
    request = waiting(queue, task_id)
    with Chromium(window_size=(1280, 800)) as browser:
        page = browser.new_page()
        try:
            page.navigate(f"{input_server.root_url}/tasks/{task_id}")
            page.wait_for("document.querySelector('[data-testid=input-question]') !== null",
                          PAGE_TIMEOUT)
            assert page.text("[data-testid=input-question]") == request["request"]
            assert page.text("[data-testid=input-state]") == "waiting"
            # Anonymous visitors, and clients without the scope, get no form.
            assert page.count("[data-testid=input-form]") == 0
            page.click("button[data-action=sign-in]")
            page.wait_for_selector("input[name=clientId]", PAGE_TIMEOUT, visible=True)
            page.fill("input[name=clientId]", ROOT_CLIENT)
            page.fill("input[name=accessToken]", ROOT_TOKEN)
            page.click("form:has(input[name=clientId]) button[type=submit]")
            page.wait_for_selector("[data-testid=input-form]", PAGE_TIMEOUT, visible=True)
            page.fill("textarea[name=response]", '{"ok": 1}')
            page.click("[data-testid=input-form] button[type=submit]")
            page.wait_for("document.querySelector('[data-testid=input-state]')"
                          ".textContent.trim() === 'answered'", PAGE_TIMEOUT)
            assert page.count("[data-testid=input-form]") == 0
        finally:
            for line in page.console_messages():
                print(f"page: {line}")
            browser.close_page(page)
    assert get_input(queue, task_id)["response"] == {"ok": 1}
    status, _, outputs = outcome(input_server, queue, task_id)
    assert_run(status, 0, "completed", "completed")
    assert outputs["response"] == {"ok": 1}
