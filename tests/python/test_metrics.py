"""`GET /metrics` of the real `taskfold serve`: Prometheus's text format (checked by the official
Python client's parser), and the numbers move as a task flows through the queue."""

import uuid

import requests
import taskcluster
from prometheus_client.parser import text_string_to_metric_families

from worker_helpers import create_task


def scrape(server):
    response = requests.get(f"{server.root_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("taskfold_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_move_as_a_task_flows(server):
    queue = server.queue()
    task_queue_id = f"proj-metrics/q-{uuid.uuid4().hex[:8]}"
    before = scrape(server)
    assert [v for (name, _), v in before.items() if name == "taskfold_build_info"] == [1.0]

    task_id = create_task(queue, task_queue_id)
    claim = queue.claimWork(task_queue_id, {"workerGroup": "g", "workerId": "w", "tasks": 1})
    run = claim["tasks"][0]
    worker = taskcluster.Queue({"rootUrl": server.root_url, "credentials": run["credentials"],
                                "maxRetries": 0})
    worker.reportFailed(task_id, str(run["runId"]))
    after = scrape(server)

    assert value(after, "taskfold_tasks_created_total", task_queue=task_queue_id) == 1
    assert value(after, "taskfold_runs_resolved_total", task_queue=task_queue_id,
                 state="failed", reason="failed") == 1
    assert value(after, "taskfold_task_pending_seconds_count", task_queue=task_queue_id) == 1
    assert value(after, "taskfold_run_duration_seconds_count", task_queue=task_queue_id) == 1
    assert (value(after, "taskfold_events_applied_total")
            >= value(before, "taskfold_events_applied_total") + 4)
    assert (value(after, "taskfold_claim_work_wait_seconds_count")
            >= value(before, "taskfold_claim_work_wait_seconds_count") + 1)
    # Requests are labelled by route template, never by a path holding ids.
    created = {"method": "PUT", "route": "/api/queue/v1/task/{taskId}", "status": "200"}
    assert (value(after, "taskfold_http_request_duration_seconds_count", **created)
            >= value(before, "taskfold_http_request_duration_seconds_count", **created) + 1)
    assert not any(task_id in str(labels) for (_, labels) in after)
