"""The Hooks service (`/api/hooks/v1/`) driven by the official Python client against the real
server: hooks made, read, listed, updated and removed; triggered (with a token too), their task
templates rendered with JSON-e and created as the hook's role; trigger schemas, last fires and
status; cron schedules that fire on time and once, across a restart; bad input refused with
nothing stored."""

import datetime
import os
import time

import pytest
import taskcluster

from conftest import claim, failure, task_definition, wait_for

HOUR = datetime.timedelta(hours=1)


def unique():
    return f"g{os.urandom(4).hex()}"


def template(task_queue_id, extra=None):
    """A task template: the payload's `message` goes into the task's payload."""
    task = {
        "taskQueueId": task_queue_id,
        "payload": {"command": ["echo", "${payload.message}"], "firedBy": "${firedBy}"},
        "metadata": {"name": "hooked", "description": "made by a hook",
                     "owner": "tests@example.com", "source": "https://example.com/hooks"},
    }
    task.update(extra or {})
    return task


def hook_body(task, **fields):
    body = {"metadata": {"name": "h", "description": "a hook", "owner": "tests@example.com"},
            "task": task,
            "triggerSchema": {"type": "object", "properties": {"message": {"type": "string"}},
                              "additionalProperties": True}}
    body.update(fields)
    return body


def grant_role(server, group, hook_id, task_queue_id):
    server.client("Auth").createRole(f"hook-id:{group}/{hook_id}", {
        "description": "what the hook's tasks may do",
        "scopes": [f"queue:create-task:highest:{task_queue_id}", "queue:scheduler-id:-",
                   "queue:create-task:project:none"]})


def test_a_hook_is_made_read_listed_updated_and_removed(server, task_queue_id):
    hooks = server.client("Hooks")
    group = unique()
    made = hooks.createHook(group, "nightly/linux", hook_body(template(task_queue_id)))
    assert (made["hookGroupId"], made["hookId"]) == (group, "nightly/linux")
    assert made["schedule"] == [] and made["metadata"]["emailOnError"] is True
    # The answer is the request as defaulted (no bindings were given); the hook has them.
    assert "bindings" not in made
    assert hooks.hook(group, "nightly/linux") == {**made, "bindings": []}
    # The same again is no conflict; another definition is.
    hooks.createHook(group, "nightly/linux", hook_body(template(task_queue_id)))
    error = failure(hooks.createHook, group, "nightly/linux",
                    hook_body(template(task_queue_id), schedule=["@daily"]))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")
    hooks.createHook(group, "other", hook_body(template(task_queue_id)))
    assert [h["hookId"] for h in hooks.listHooks(group)["hooks"]] == ["nightly/linux", "other"]
    assert group in hooks.listHookGroups()["groups"]
    updated = hooks.updateHook(group, "other", hook_body(template(task_queue_id),
                                                         schedule=["0 0 * * *"]))
    assert updated["schedule"] == ["0 0 * * *"]
    status = hooks.getHookStatus(group, "other")
    assert status["lastFire"] == {"result": "no-fire"}
    assert status["nextScheduledDate"].endswith("T00:00:00.000Z")
    hooks.removeHook(group, "other")
    assert failure(hooks.hook, group, "other").status_code == 404
    hooks.removeHook(group, "nightly/linux")
    assert failure(hooks.listHooks, group).status_code == 404
    error = failure(hooks.createHook, group, "x", {**hook_body({}), "hookId": "y"})
    assert (error.status_code, error.body["code"]) == (400, "InputError")


def test_a_trigger_renders_the_template_and_creates_the_task_as_the_hook_role(
        server, task_queue_id):
    hooks, queue = server.client("Hooks"), server.queue()
    group = unique()
    hooks.createHook(group, "build", hook_body(template(task_queue_id)))
    # Without the role's scopes the task is refused, and the fire says why.
    error = failure(hooks.triggerHook, group, "build", {"message": "hi"})
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert "hook-id:" in error.body["message"]
    grant_role(server, group, "build", task_queue_id)
    fired = hooks.triggerHook(group, "build", {"message": "hello"})
    task_id = fired["taskId"]
    assert fired == {"taskId": task_id, "status": {"taskId": task_id}}
    task = queue.task(task_id)
    assert task["payload"] == {"command": ["echo", "hello"], "firedBy": "triggerHook"}
    assert task["taskGroupId"] == task_id and task["taskQueueId"] == task_queue_id
    # The trigger schema is checked; a taskId in the payload is the task's.
    error = failure(hooks.triggerHook, group, "build", {"message": 5})
    assert (error.status_code, error.body["code"]) == (400, "InputError")
    chosen = taskcluster.slugid.nice()
    assert hooks.triggerHook(group, "build", {"message": "x", "taskId": chosen})["taskId"] == chosen
    fires = hooks.listLastFires(group, "build")["lastFires"]
    assert [f["result"] for f in fires] == ["success", "success", "error"]
    assert fires[0]["taskId"] == chosen and fires[0]["taskState"] == "pending"
    assert fires[0]["firedBy"] == "triggerHook" and fires[2]["error"]
    assert hooks.getHookStatus(group, "build")["lastFire"]["taskId"] == chosen
    # A template that renders to nothing declines: no task, no fire.
    hooks.createHook(group, "maybe", hook_body({"$if": "payload.message == 'go'",
                                                "then": template(task_queue_id)}))
    grant_role(server, group, "maybe", task_queue_id)
    assert hooks.triggerHook(group, "maybe", {"message": "stop"}) == {}
    assert failure(hooks.listLastFires, group, "maybe").status_code == 404
    assert "taskId" in hooks.triggerHook(group, "maybe", {"message": "go"})


def test_trigger_tokens(server, task_queue_id):
    hooks = server.client("Hooks")
    group = unique()
    hooks.createHook(group, "tokened", hook_body(template(task_queue_id)))
    grant_role(server, group, "tokened", task_queue_id)
    token = hooks.getTriggerToken(group, "tokened")["token"]
    anonymous = server.client("Hooks", credentials={})
    fired = anonymous.triggerHookWithToken(group, "tokened", token, {"message": "t"})
    assert server.queue().task(fired["taskId"])["payload"]["firedBy"] == "triggerHookWithToken"
    error = failure(anonymous.triggerHookWithToken, group, "tokened", "wrong", {})
    assert (error.status_code, error.body["code"]) == (401, "AuthenticationFailed")
    new_token = hooks.resetTriggerToken(group, "tokened")["token"]
    assert new_token != token
    assert failure(anonymous.triggerHookWithToken, group, "tokened", token, {}).status_code == 401
    assert "taskId" in anonymous.triggerHookWithToken(group, "tokened", new_token, {"message": "2"})


def test_bad_hooks_are_refused_and_nothing_is_stored(server, task_queue_id):
    hooks = server.client("Hooks")
    group = unique()
    cases = [
        (hook_body(template(task_queue_id), schedule=["not a cron"]), "InputError"),
        (hook_body(template(task_queue_id), schedule=["61 * * * *"]), "InputError"),
        (hook_body(template(task_queue_id), triggerSchema={"type": "nonsense"}), "InputError"),
        (hook_body({"$nonsense": 1}), "InputError"),
        (hook_body({"a": "${1 +}"}), "InputError"),
        (hook_body(template(task_queue_id), bindings=[
            {"exchange": "exchange/taskcluster-queue/v1/task-created",
             "routingKeyPattern": "#"}]), "InputError"),
        (hook_body("not an object"), "InputValidationError"),
        ({"metadata": {"name": "h"}, "task": {}}, "InputValidationError"),
    ]
    for body, code in cases:
        error = failure(hooks.createHook, group, "bad", body)
        assert (error.status_code, error.body["code"]) == (400, code), body
    for hook_id in ["x" * 1001, "has:colon"]:
        error = failure(hooks.createHook, group, hook_id, hook_body({}))
        assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    assert failure(hooks.hook, group, "bad").status_code == 404
    assert failure(hooks.listHooks, group).status_code == 404


def test_a_schedule_fires_on_time_and_once_across_a_restart(fresh_server, task_queue_id):
    server = fresh_server.start()
    hooks = server.client("Hooks")
    group = unique()
    grant_role(server, group, "cron", task_queue_id)
    hooks.createHook(group, "cron", hook_body(template(task_queue_id, {
        "payload": {"command": ["true"], "at": "${now}", "firedBy": "${firedBy}"}}),
        schedule=["*/2 * * * * *"]))

    def fires():
        try:
            return hooks.listLastFires(group, "cron")["lastFires"]
        except taskcluster.exceptions.TaskclusterRestFailure:
            return []

    wait_for(lambda: len(fires()) >= 2, timeout=15)
    server.stop()
    time.sleep(3)
    server.start()
    hooks = server.client("Hooks")
    before = len(fires())
    wait_for(lambda: len(fires()) >= before + 2, timeout=15)
    queue = server.queue()
    seen = fires()
    times = [f["taskCreateTime"] for f in seen]
    assert len(times) == len(set(times)), "one fire per scheduled time"
    for fire in seen:
        assert fire["result"] == "success" and fire["firedBy"] == "schedule"
        task = queue.task(fire["taskId"])
        # The template's `now` and the task's `created` are the scheduled time, on an
        # even second.
        assert task["payload"]["at"] == fire["taskCreateTime"] == task["created"]
        assert int(task["created"][17:19]) % 2 == 0
    assert hooks.getHookStatus(group, "cron")["nextScheduledDate"] > times[0]


def test_a_binding_fires_the_hook_on_a_matching_message(server, task_queue_id):
    """A hook bound to Taskfold's own task-completed exchange fires, with the message as its
    payload, when a task with a matching route completes."""
    hooks, queue = server.client("Hooks"), server.queue()
    group = unique()
    grant_role(server, group, "on-done", task_queue_id)
    hooks.createHook(group, "on-done", hook_body(
        template(task_queue_id, {"payload": {"after": "${payload.status.taskId}",
                                             "firedBy": "${firedBy}"}}),
        bindings=[{"exchange": "exchange/taskcluster-queue/v1/task-completed",
                   "routingKeyPattern": f"route.{group}.#"}],
        triggerSchema={"type": "object"}))
    task_id = taskcluster.slugid.nice()
    queue.createTask(task_id, task_definition(task_queue_id, routes=[f"{group}.done"]))
    other = taskcluster.slugid.nice()
    queue.createTask(other, task_definition(task_queue_id, routes=["elsewhere"]))
    for claimed in claim(queue, task_queue_id, tasks=2):
        queue.reportCompleted(claimed["status"]["taskId"], claimed["runId"])

    def fired():
        try:
            return hooks.listLastFires(group, "on-done")["lastFires"]
        except taskcluster.exceptions.TaskclusterRestFailure:
            return None

    fires = wait_for(fired, timeout=15)
    assert len(fires) == 1 and fires[0]["firedBy"] == "pulseMessage", fires
    made = queue.task(fires[0]["taskId"])
    assert made["payload"] == {"after": task_id, "firedBy": "pulseMessage"}
