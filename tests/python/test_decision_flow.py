"""The decision-task flow of a Taskcluster farm, end to end, on the real server, a real
`taskfold worker` and a real Docker engine: a hook (triggered, as a push would) creates a
decision task; the decision task, a Docker task with `taskclusterProxy`, reads a secret and
creates three dependent tasks with busybox `wget` through `$TASKCLUSTER_PROXY_URL` (which
signs with the task's own credentials, so a secret outside the task's scopes is refused 403,
and signs a URL through `/bewit`);
the dependents run, and their `index.` routes make them findable with `findTask`, their
artifact downloaded with `findArtifactFromTask`."""

import json
import os
import uuid

import pytest
import requests

from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, WorkerProcess, fetch, new_task_id,
                            remove_containers, serve, wait_resolved, wait_until)

IMAGE = "taskfold-test/busybox:1"

# The decision task: read the greeting from the secret, check that the proxy refuses what the
# task may not read, then create one dependent task per id in $DEPENDENTS.
DECISION = r"""
set -eu
P="$TASKCLUSTER_PROXY_URL"
greeting=$(wget -q -O - "$P/api/secrets/v1/secret/$SECRET" | grep -o '"greeting": *"[^"]*"' \
    | sed 's/.*: *"\(.*\)"/\1/')
echo "the secret says $greeting"
if wget -q -O /dev/null "$P/api/secrets/v1/secret/forbidden%2Fsecret" 2>/tmp/err; then
    echo "the proxy let the task read a secret outside its scopes"; exit 1
fi
grep -q 403 /tmp/err && echo "the proxy refused the secret outside the task's scopes: 403"
# /bewit answers 303 to the signed URL; busybox follows a redirect with the same POST, so the
# URL is read from the answer's headers (-S) and fetched with a GET.
signed=$(wget -S -O /dev/null --post-data "$TASKCLUSTER_ROOT_URL/api/secrets/v1/secret/$SECRET" \
    "$P/bewit" 2>&1 | sed -n 's/^ *[Ll]ocation: *//p' | head -n 1 | tr -d '\r')
wget -q -O /tmp/signed.json "$signed"
grep -q "$greeting" /tmp/signed.json && echo "a URL signed through /bewit read the secret"
created=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
deadline=$(date -u -d @$(( $(date +%s) + 3600 )) +%Y-%m-%dT%H:%M:%S.000Z)
n=0
for id in $DEPENDENTS; do
    n=$((n + 1))
    body='{"taskQueueId": "'"$QUEUE"'", "taskGroupId": "'"$TASK_ID"'",
      "dependencies": ["'"$TASK_ID"'"], "routes": ["index.'"$NAMESPACE"'.dep'"$n"'"],
      "created": "'"$created"'", "deadline": "'"$deadline"'",
      "payload": {"image": "'"$IMAGE"'", "maxRunTime": 60,
        "command": ["sh", "-c", "echo '"$greeting"' dependent '"$n"' > /out.txt"],
        "artifacts": {"public/out.txt": {"type": "file", "path": "/out.txt"}}},
      "metadata": {"name": "dependent '"$n"'", "description": "made by the decision task",
        "owner": "tests@example.com", "source": "https://example.com/decision"}}'
    wget -q -O - --header 'Content-Type: application/json' \
        --header 'X-HTTP-Method-Override: PUT' --post-data "$body" "$P/api/queue/v1/task/$id"
    echo
    echo "created dependent $n: $id"
done
"""


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def flow_worker(flow_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("flow-worker")
    worker = WorkerProcess(flow_server, "docker", base / "data", base, capacity=4).start()
    yield worker
    worker.stop()
    remove_containers(f"taskfold.worker={worker.label}", worker.label)


def test_a_hook_s_decision_task_makes_a_graph_that_runs_and_is_indexed(flow_server,
                                                                        flow_worker):
    server, queue_id = flow_server, flow_worker.task_queue_id
    auth, hooks, secrets, index = (server.client(name)
                                   for name in ("Auth", "Hooks", "Secrets", "Index"))
    queue = server.queue()
    unique = uuid.uuid4().hex[:8]
    group, namespace = f"flow{unique}", f"flow{unique}.graph"
    secret_name = f"proj/decision-{unique}"
    greeting = f"hello-{unique}"
    secrets.set(secret_name, {"secret": {"greeting": greeting},
                              "expires": "2100-01-01T00:00:00.000Z"})
    secrets.set("forbidden/secret", {"secret": {"no": 1}, "expires": "2100-01-01T00:00:00.000Z"})
    decision_scopes = [f"secrets:get:{secret_name}", f"queue:create-task:highest:{queue_id}",
                       "queue:scheduler-id:-", "queue:create-task:project:none",
                       f"queue:route:index.{namespace}.*"]
    auth.createRole(f"hook-id:{group}/decision", {"description": "the decision task's",
                                                  "scopes": decision_scopes})
    dependents = [new_task_id() for _ in range(3)]
    hooks.createHook(group, "decision", {
        "metadata": {"name": "decision", "description": "the push's decision task",
                     "owner": "tests@example.com"},
        "triggerSchema": {"type": "object", "required": ["dependents"],
                          "properties": {"dependents": {"type": "string"}}},
        "task": {
            "taskQueueId": queue_id,
            "scopes": decision_scopes,
            "payload": {
                "image": IMAGE, "maxRunTime": 120, "features": {"taskclusterProxy": True},
                "env": {"DEPENDENTS": "${payload.dependents}", "QUEUE": queue_id,
                        "NAMESPACE": namespace, "IMAGE": IMAGE,
                        "SECRET": secret_name.replace("/", "%2F")},
                "command": ["sh", "-c", DECISION],
            },
            "metadata": {"name": "decision", "description": "fired by ${firedBy}",
                         "owner": "tests@example.com", "source": "https://example.com/hooks"},
        },
    })
    decision = hooks.triggerHook(group, "decision", {"dependents": " ".join(dependents)})["taskId"]
    status = wait_resolved(queue, decision)
    log = fetch(server, decision, 0, "public/logs/live_backing.log")
    assert status["state"] == "completed", log
    assert f"the secret says {greeting}" in log
    assert "the proxy refused the secret outside the task's scopes: 403" in log
    assert "a URL signed through /bewit read the secret" in log
    for task_id in dependents:
        done = wait_resolved(queue, task_id)
        assert done["state"] == "completed", done
        assert queue.task(task_id)["taskGroupId"] == decision
    assert [t["status"]["taskId"] for t in queue.listTaskGroup(decision)["tasks"]].count(
        decision) == 1
    for n, task_id in enumerate(dependents, start=1):
        path = f"{namespace}.dep{n}"
        assert index.findTask(path)["taskId"] == task_id
        url = index.buildUrl("findArtifactFromTask", path, "public/out.txt")
        assert requests.get(url, timeout=30).text.strip() == f"{greeting} dependent {n}"
    assert hooks.listLastFires(group, "decision")["lastFires"][0]["taskId"] == decision
