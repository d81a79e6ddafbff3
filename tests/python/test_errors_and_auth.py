"""Taskcluster's error shapes and statuses, and who may do what: anonymous reads, wrong tokens,
clients without the scopes, and task credentials that work for their own run only."""

import datetime
import re
import threading
import time
from urllib.parse import quote

import mohawk
import requests
import taskcluster

from conftest import (LIMITED_CLIENT, LIMITED_TOKEN, ROOT_TOKEN, claim, failure, new_task_id,
                      task_definition)


def test_unknown_task_is_a_404_with_taskclusters_error_body(queue):
    task_id = new_task_id()
    error = failure(queue.status, task_id)
    assert error.status_code == 404
    body = error.body
    assert body["code"] == "ResourceNotFound"
    assert task_id in body["message"]
    assert "\n\n---\n\n* method:     status\n* errorCode:  ResourceNotFound\n" \
           "* statusCode: 404\n* time:       " in body["message"]
    info = body["requestInfo"]
    assert info["method"] == "status"
    assert info["params"] == {"taskId": task_id}
    assert info["payload"] == {}
    assert info["time"].endswith("Z")
    assert failure(queue.task, task_id).status_code == 404
    for call in (queue.cancelTask, queue.scheduleTask, queue.rerunTask):
        assert failure(call, task_id).body["code"] == "ResourceNotFound"
    error = failure(queue.reportCompleted, task_id, "0")
    assert (error.status_code, error.body["requestInfo"]["params"]) == \
        (404, {"taskId": task_id, "runId": "0"})


def test_bad_input_is_a_400(queue, task_queue_id):
    # Not a slugid: the URL parameter is refused.
    error = failure(queue.status, "not-a-task-id")
    assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    error = failure(queue.createTask, "not-a-task-id", task_definition(task_queue_id))
    assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    error = failure(queue.pendingTasks, "no-slash")
    assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")

    # Schema: a required field missing, an unknown field, a bad value.
    definition = task_definition(task_queue_id)
    del definition["metadata"]
    for body in (definition, task_definition(task_queue_id, surprise=1),
                 task_definition(task_queue_id, priority="normal")):
        error = failure(queue.createTask, new_task_id(), body)
        assert (error.status_code, error.body["code"]) == (400, "InputValidationError")
        assert error.body["requestInfo"]["payload"] == body

    # Semantics: a deadline in the past.
    past = taskcluster.stringDate(taskcluster.fromNow("-1 hour"))
    error = failure(queue.createTask, new_task_id(),
                    task_definition(task_queue_id, created=past, deadline=past))
    assert (error.status_code, error.body["code"]) == (400, "InputError")

    error = failure(queue.claimWork, task_queue_id,
                    {"workerGroup": "wg", "workerId": "w1", "tasks": 33})
    assert (error.status_code, error.body["code"]) == (400, "InputValidationError")


def test_raw_http_errors(server, task_queue_id):
    # Unknown routes, and known ones with another method: Taskcluster's 404 in its shape.
    for response in (requests.get(server.api("/no/such/route")),
                     requests.delete(server.api(f"/task/{new_task_id()}"))):
        assert response.status_code == 404
        assert response.json()["code"] == "ResourceNotFound"
        assert "requestInfo" in response.json()

    # A body that is not sent as JSON, and one that does not parse.
    url = server.api("/claim-work/" + task_queue_id.replace("/", "%2F"))
    response = requests.post(url, data='{"workerGroup": "wg", "workerId": "w1"}',
                             headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.json()["code"]) == (400, "MalformedPayload")
    response = requests.post(url, data="{", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (400, "MalformedPayload")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_anonymous_reads_but_may_not_write(server, queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    anonymous = server.queue(credentials={})
    assert anonymous.status(task_id)["status"]["state"] == "pending"
    assert anonymous.task(task_id)["taskQueueId"] == task_queue_id
    assert anonymous.pendingTasks(task_queue_id)["pendingTasks"] == 1
    error = failure(anonymous.createTask, new_task_id(), task_definition(task_queue_id))
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    error = failure(anonymous.cancelTask, task_id)
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert queue.status(task_id)["status"]["state"] == "pending"


def test_wrong_token_is_a_401(server, task_queue_id):
    wrong = server.queue(credentials={"clientId": "static/taskcluster/root",
                                      "accessToken": "not-the-root-token"})
    error = failure(wrong.status, new_task_id())
    assert (error.status_code, error.body["code"]) == (401, "AuthenticationFailed")
    error = failure(wrong.createTask, new_task_id(), task_definition(task_queue_id))
    assert (error.status_code, error.body["code"]) == (401, "AuthenticationFailed")
    unknown = server.queue(credentials={"clientId": "nobody", "accessToken": ROOT_TOKEN})
    assert failure(unknown.status, new_task_id()).status_code == 401

    # The header Taskcluster adds to every 401.
    url = server.api(f"/task/{new_task_id()}/status")
    sender = mohawk.Sender({"id": "static/taskcluster/root", "key": "wrong",
                            "algorithm": "sha256"}, url, "GET", content="", content_type="")
    response = requests.get(url, headers={"Authorization": sender.request_header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "hawk"


def test_client_without_scopes_is_a_403_naming_what_is_missing(server, task_queue_id):
    limited = server.queue(credentials={"clientId": LIMITED_CLIENT, "accessToken": LIMITED_TOKEN})
    error = failure(limited.createTask, new_task_id(), task_definition(task_queue_id))
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    message = error.body["message"]
    assert LIMITED_CLIENT in message
    assert "queue:scheduler-id:-" in message
    assert f"queue:create-task:lowest:{task_queue_id}" in message
    # What it has is not reported missing.
    missing = message.split("This request requires")[0]
    assert "queue:scheduler-id:-" in missing
    assert "queue:create-task:project:none" not in missing
    error = failure(limited.claimWork, task_queue_id, {"workerGroup": "wg", "workerId": "w1"})
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")


def test_task_credentials_work_for_their_run_only(server, queue, task_queue_id):
    first, second = new_task_id(), new_task_id()
    queue.createTask(first, task_definition(task_queue_id))
    queue.createTask(second, task_definition(task_queue_id))
    claims = claim(queue, task_queue_id, tasks=2)
    if len(claims) < 2:
        claims += claim(queue, task_queue_id)
    by_task = {c["status"]["taskId"]: c for c in claims}
    worker = server.queue(credentials=by_task[first]["credentials"])

    # Another task's run, and another run of this task, are out of reach.
    for call, args in ((worker.reclaimTask, (second, "0")),
                       (worker.reportCompleted, (second, "0")),
                       (worker.reportFailed, (first, "1")),
                       (worker.cancelTask, (first,))):
        error = failure(call, *args)
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes"), call
    # Its own run: reclaim (which hands out fresh credentials), then resolve with those.
    reclaimed = worker.reclaimTask(first, "0")
    fresh = server.queue(credentials=reclaimed["credentials"])
    assert fresh.reportCompleted(first, "0")["status"]["state"] == "completed"
    # Reads that anyone may make still work with them.
    assert worker.status(second)["status"]["state"] == "running"


def test_task_scopes_are_granted_to_the_run(server, queue, task_queue_id):
    task_id = new_task_id()
    other = new_task_id()
    queue.createTask(other, task_definition(task_queue_id, priority="lowest"))
    queue.createTask(task_id, task_definition(
        task_queue_id, priority="highest", scopes=[f"queue:cancel-task:-/{other}/{other}"]))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    worker = server.queue(credentials=claimed["credentials"])
    assert worker.cancelTask(other)["status"]["state"] == "exception"


def test_claim_work_long_poll_wakes_when_work_arrives(server, queue, task_queue_id):
    result = {}

    def worker():
        started = time.monotonic()
        result["tasks"] = claim(server.queue(), task_queue_id)
        result["waited"] = time.monotonic() - started

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(1)  # let the claim park
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    thread.join(timeout=30)
    assert [t["status"]["taskId"] for t in result["tasks"]] == [task_id]
    # Woken by the task, not by the end of the 20 s poll.
    assert result["waited"] < 15


def test_signed_urls_temporary_credentials_and_authorized_scopes(server, queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))

    # A bewit: a signed GET that needs no header.
    url = queue.buildSignedUrl("status", task_id)
    assert "bewit=" in url
    assert requests.get(url).json()["status"]["taskId"] == task_id
    error = requests.get(url.replace("bewit=", "bewit=x"))
    assert (error.status_code, error.json()["code"]) == (401, "AuthenticationFailed")

    # Temporary credentials may do what their certificate says, and no more.
    now = datetime.datetime.now(datetime.timezone.utc)
    temporary = taskcluster.createTemporaryCredentials(
        "static/taskcluster/root", ROOT_TOKEN, now - datetime.timedelta(minutes=1),
        now + datetime.timedelta(hours=1), [f"queue:cancel-task:-/{task_id}/{task_id}"])
    limited = server.queue(credentials=temporary)
    error = failure(limited.createTask, new_task_id(), task_definition(task_queue_id))
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert limited.cancelTask(task_id)["status"]["state"] == "exception"

    # authorizedScopes narrow even the root client.
    narrowed = server.queue(authorizedScopes=["queue:rerun-task:*"])
    error = failure(narrowed.createTask, new_task_id(), task_definition(task_queue_id))
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert narrowed.rerunTask(task_id)["status"]["state"] == "pending"


def test_task_queue_ids_arrive_encoded_or_with_a_literal_slash(server, queue, task_queue_id):
    queue.createTask(new_task_id(), task_definition(task_queue_id))
    encoded = requests.get(server.api("/pending/" + task_queue_id.replace("/", "%2F"))).json()
    literal = requests.get(server.api("/pending/" + task_queue_id)).json()
    assert encoded == literal
    assert literal["pendingTasks"] == 1
    assert literal["taskQueueId"] == task_queue_id
    # Anonymous callers may count, but not claim.
    response = requests.post(server.api("/claim-work/" + task_queue_id),
                             json={"workerGroup": "wg", "workerId": "w1"})
    assert (response.status_code, response.json()["code"]) == (403, "InsufficientScopes")


def test_a_body_over_the_limit_is_a_413(server, task_queue_id):
    url = server.api(f"/task/{new_task_id()}")
    body = '{"payload": "' + "x" * (11 * 1024 * 1024) + '"}'
    response = requests.put(url, data=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (413, "InputTooLarge")


def test_every_method_of_the_official_client_reaches_its_endpoint(quick_server):
    """Each method, called with made-up arguments, is answered by its own endpoint: a success,
    or an error whose `requestInfo` names the method (never the 404 of an unknown route)."""
    queue = quick_server.queue()
    values = {"taskId": new_task_id(), "taskGroupId": new_task_id(), "runId": "0",
              "name": "public/made-up", "taskQueueId": "interop/wroutes",
              "provisionerId": "interop", "workerType": "wroutes", "workerGroup": "wg",
              "workerId": "w1"}
    reached = []
    for name, info in sorted(taskcluster.Queue.funcinfo.items()):
        route = re.sub(r"<(\w+)>", lambda match: quote(values[match.group(1)], safe=""),
                       info["route"])
        payload = {} if info.get("input") else None
        try:
            queue._makeHttpRequest(info["method"], route, payload)
        except (taskcluster.exceptions.TaskclusterRestFailure,
                taskcluster.exceptions.TaskclusterAuthFailure) as error:
            body = error.body if isinstance(error.body, dict) else {}
            method = body.get("requestInfo", {}).get("method")
            assert method == name, (name, route, error.status_code, error.body)
        reached.append(name)
    assert len(reached) == len(taskcluster.Queue.funcinfo)
