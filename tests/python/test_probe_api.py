"""What an outside probe of the API found, each checked against the real `taskfold serve`:
metric labels that any client could grow without bound, task authors' HTML served on the
API's own origin, signed upload URLs that outlived their run, unbounded uploads, and errors
that were not in Taskcluster's shape."""

import datetime
import glob
import json
import os
import socket
import uuid

import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

import conftest
from conftest import claim, date_in, make_server, new_task_id, task_definition, wait_for

# The methods `taskfold_http_request_duration_seconds` may name.
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
                 "other"}


def series(server):
    """Every sample of `/metrics`: (name, labels) pairs."""
    text = requests.get(f"{server.root_url}/metrics", timeout=10).text
    return [(sample.name, dict(sample.labels))
            for family in text_string_to_metric_families(text)
            for sample in family.samples]


def raw_request(server, data):
    """Sends `data` on a connection of its own; the answer's status and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def assert_taskcluster_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert "requestInfo" in body, body
    return body


# --- metric labels come from closed sets ----------------------------------------------------


def test_invented_and_long_methods_add_no_series(server):
    def request_series():
        return [labels for name, labels in series(server)
                if name == "taskfold_http_request_duration_seconds_count"]

    before = len(request_series())
    for number in range(60):
        requests.request(f"INVENTED{number}", server.api("/ping"), timeout=10)
    for number in range(5):
        requests.request("X" * 7000 + str(number), f"{server.root_url}/nowhere/{number}",
                         timeout=10)
    after = request_series()
    assert {labels["method"] for labels in after} <= KNOWN_METHODS
    assert all(len(value) <= 100 for labels in after for value in labels.values())
    # Whatever was invented fits in a handful of series (method `other`, a few statuses).
    assert len(after) - before <= 5, after


@pytest.fixture(scope="module")
def few_queues_server(tmp_path_factory):
    server = make_server(tmp_path_factory, "[metrics]\nmax_task_queues = 3\n").start()
    yield server
    server.stop()


def test_task_queues_past_the_bound_fold_into_other(few_queues_server):
    queue = few_queues_server.queue()
    invented = [f"probe/q{number}-{uuid.uuid4().hex[:8]}" for number in range(12)]
    for task_queue_id in invented:
        queue.createTask(new_task_id(), task_definition(task_queue_id))
    labelled = {labels["task_queue"] for name, labels in series(few_queues_server)
                if "task_queue" in labels}
    assert len(labelled - {"other"}) <= 3, labelled
    assert "other" in labelled
    created = {labels["task_queue"]: None for name, labels in series(few_queues_server)
               if name == "taskfold_tasks_created_total"}
    assert set(created) <= set(invented) | {"other"}
    # Nothing is lost: the folded queues are counted under `other`.
    total = sum(value for family in text_string_to_metric_families(
        requests.get(f"{few_queues_server.root_url}/metrics", timeout=10).text)
        for value in [sample.value for sample in family.samples
                      if sample.name == "taskfold_tasks_created_total"])
    assert total == len(invented)
    pending = {labels["task_queue"] for name, labels in series(few_queues_server)
               if name == "taskfold_pending_tasks"}
    assert len(pending - {"other"}) <= 3


def test_pending_tasks_of_folded_queues_add_up_under_other(few_queues_server):
    def pending_other():
        text = requests.get(f"{few_queues_server.root_url}/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == "taskfold_pending_tasks"
                   and sample.labels.get("task_queue") == "other")

    queue = few_queues_server.queue()
    # The bound is reached by the test before, or by these.
    for number in range(4):
        queue.createTask(new_task_id(), task_definition(f"probe/fill{number}"))
    before = pending_other()
    folded = [f"probe/folded{number}-{uuid.uuid4().hex[:8]}" for number in range(3)]
    for task_queue_id in folded:
        queue.createTask(new_task_id(), task_definition(task_queue_id))
    assert wait_for(lambda: pending_other() == before + 3), pending_other()
    claim(queue, folded[0])
    assert wait_for(lambda: pending_other() == before + 2), pending_other()


# --- blobs are not active content on the API's origin ---------------------------------------


def s3(content_type, **extra):
    return {"storageType": "s3", "contentType": content_type,
            "expires": date_in(datetime.timedelta(days=1)), **extra}


def running_task(queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    return task_id


def blob_of(server, queue, task_id, name, content_type, data):
    put_url = queue.createArtifact(task_id, "0", name, s3(content_type))["putUrl"]
    uploaded = requests.put(put_url, data=data, headers={"Content-Type": content_type},
                            timeout=10)
    assert uploaded.status_code == 200, uploaded.text
    found = requests.get(server.api(f"/task/{task_id}/runs/0/artifacts/{name}"),
                         allow_redirects=False, timeout=10)
    assert found.status_code == 303, found.text
    return found.headers["Location"]


def test_blobs_are_sandboxed_and_active_types_downloaded(server, task_queue_id):
    queue = server.queue()
    task_id = running_task(queue, task_queue_id)
    page = b"<html><script>document.title = 'stolen'</script></html>"
    for content_type in ("text/html", "text/html; charset=utf-8", "image/svg+xml",
                         "application/xhtml+xml", "text/xml", "application/javascript",
                         "TEXT/HTML", "not a type"):
        name = f"public/page-{uuid.uuid4().hex[:6]}"
        url = blob_of(server, queue, task_id, name, content_type, page)
        for method in ("GET", "HEAD"):
            response = requests.request(method, url, timeout=10)
            assert response.status_code == 200, (content_type, response.text)
            headers = response.headers
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in headers["Content-Security-Policy"], content_type
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert headers.get("Content-Disposition", "").startswith("attachment"), content_type
    url = blob_of(server, queue, task_id, "public/notes.txt", "text/plain", b"plain text")
    response = requests.get(url, timeout=10)
    assert response.content == b"plain text"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert "Content-Disposition" not in response.headers


@pytest.fixture(scope="module")
def blob_origin_server(tmp_path_factory):
    """A server whose blobs have an origin of their own: `localhost` beside the API's
    `127.0.0.1`, on the same port."""
    port = conftest.free_port()
    server = make_server(tmp_path_factory, f'[blobs]\npublic_url = "http://localhost:{port}/"\n')
    original = conftest.free_port
    conftest.free_port = lambda: port
    try:
        server.start()
    finally:
        conftest.free_port = original
    yield server
    server.stop()


def test_a_blob_origin_of_their_own_serves_active_types_inline(blob_origin_server, task_queue_id):
    server = blob_origin_server
    queue = server.queue()
    task_id = running_task(queue, task_queue_id)
    put_url = queue.createArtifact(task_id, "0", "private/page.html", s3("text/html"))["putUrl"]
    assert put_url.startswith(f"http://localhost:{server.port}/blobs/"), put_url
    assert requests.put(put_url, data=b"<p>hi</p>", headers={"Content-Type": "text/html"},
                        timeout=10).status_code == 200
    url = queue.getArtifact(task_id, "0", "private/page.html")["url"]
    assert url.startswith(f"http://localhost:{server.port}/blobs/"), url
    inline = requests.get(url, timeout=10)
    assert inline.content == b"<p>hi</p>"
    assert "Content-Disposition" not in inline.headers
    assert "sandbox" in inline.headers["Content-Security-Policy"]
    # The same blob through the API's origin is still a download.
    on_api_origin = requests.get(url.replace("localhost", "127.0.0.1"), timeout=10)
    assert on_api_origin.headers["Content-Disposition"].startswith("attachment")


def test_the_shell_page_cannot_be_framed_and_runs_only_its_own_scripts(server):
    response = requests.get(f"{server.root_url}/shell/?taskId=x&runId=0", timeout=10)
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    script_src = next(part for part in policy.split(";") if part.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src
    assert "'sha256-" in script_src


@pytest.mark.parametrize("socket_url", [
    "ws://attacker.example/api/queue/v1/sessions/x/socket",
    "wss://127.0.0.1.attacker.example/socket",
    "javascript:alert(1)",
])
def test_the_shell_page_refuses_a_socket_url_of_another_origin(server, socket_url):
    response = requests.get(f"{server.root_url}/shell/", timeout=10,
                            params={"taskId": "x", "runId": "0", "socketUrl": socket_url})
    assert response.status_code == 400
    assert "socketUrl" in response.text
    own = server.root_url.replace("http://", "ws://") + "/api/queue/v1/sessions/x/socket?t=1"
    response = requests.get(f"{server.root_url}/shell/", timeout=10,
                            params={"taskId": "x", "runId": "0", "socketUrl": own})
    assert response.status_code == 200


# --- uploads --------------------------------------------------------------------------------


def test_a_put_url_stops_working_once_the_blob_is_whole_or_the_run_resolved(server,
                                                                          task_queue_id):
    queue = server.queue()
    task_id = running_task(queue, task_queue_id)
    put_url = queue.createArtifact(task_id, "0", "public/once", s3("text/plain"))["putUrl"]
    later = queue.createArtifact(task_id, "0", "public/later", s3("text/plain"))["putUrl"]
    headers = {"Content-Type": "text/plain"}
    assert requests.put(put_url, data=b"first", headers=headers, timeout=10).status_code == 200
    again = requests.put(put_url, data=b"rewritten", headers=headers, timeout=10)
    assert_taskcluster_error(again, 409, "RequestConflict")
    queue.reportCompleted(task_id, "0")
    after = requests.put(later, data=b"too late", headers=headers, timeout=10)
    body = assert_taskcluster_error(after, 409, "RequestConflict")
    assert "resolved" in body["message"]
    assert requests.get(server.api(f"/task/{task_id}/runs/0/artifacts/public/once"),
                        timeout=10).content == b"first"


@pytest.fixture(scope="module")
def small_uploads_server(tmp_path_factory):
    server = make_server(tmp_path_factory, "[blobs]\nmax_upload_bytes = 1000\n").start()
    yield server
    server.stop()


def test_uploads_without_a_declared_length_are_capped(small_uploads_server, task_queue_id):
    queue = small_uploads_server.queue()
    task_id = running_task(queue, task_queue_id)
    headers = {"Content-Type": "application/octet-stream"}
    put_url = queue.createArtifact(task_id, "0", "public/big",
                                   s3("application/octet-stream"))["putUrl"]
    refused = requests.put(put_url, data=b"x" * 1001, headers=headers, timeout=10)
    assert_taskcluster_error(refused, 413, "InputTooLarge")
    assert requests.put(put_url, data=b"x" * 1000, headers=headers,
                        timeout=10).status_code == 200


# --- errors in Taskcluster's shape ----------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("GET", "/no/such/route"),
    ("POST", "/no/such/route"),
    ("DELETE", "/task/fN1SbArXTPSVFNUvaOlinQ"),
    ("PATCH", "/ping"),
])
def test_unknown_routes_and_methods_answer_resource_not_found(server, method, path):
    response = requests.request(method, server.api(path), timeout=10)
    assert_taskcluster_error(response, 404, "ResourceNotFound")


def test_blob_errors_have_request_info(server, task_queue_id):
    response = requests.get(f"{server.root_url}/blobs/{new_task_id()}/0/private/x?expires=1"
                            "&signature=nope", timeout=10)
    assert_taskcluster_error(response, 401, "AuthenticationFailed")
    response = requests.get(f"{server.root_url}/blobs/{new_task_id()}/0/public/x", timeout=10)
    assert_taskcluster_error(response, 404, "ResourceNotFound")


def test_every_get_route_answers_head(server, task_queue_id):
    queue = server.queue()
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    for url in (server.api("/ping"), server.api(f"/task/{task_id}"),
                server.api(f"/task/{task_id}/status"), server.api("/__heartbeat__"),
                f"{server.root_url}/metrics", f"{server.root_url}/__version__",
                f"{server.root_url}/shell/"):
        got = requests.get(url, timeout=10)
        head = requests.head(url, timeout=10)
        assert head.status_code == got.status_code == 200, url
        assert head.content == b""
        assert head.headers["Content-Type"] == got.headers["Content-Type"]
    missing = requests.head(server.api(f"/task/{new_task_id()}"), timeout=10)
    assert missing.status_code == 404


def test_a_malformed_json_body_is_a_taskcluster_error(server, task_queue_id):
    response = requests.put(server.api(f"/task/{new_task_id()}"), data=b"{not json",
                            headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["code"] in ("MalformedPayload", "AuthenticationFailed")
    response = requests.post(server.api("/claim-work/a/b"), data=b"[",
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code in (400, 401)
    assert "code" in response.json()


def test_a_subscription_too_large_is_closed_with_a_reason(server):
    url = server.root_url.replace("http://", "ws://") + "/api/events/v1/listen"
    connection = websocket.create_connection(url, timeout=10)
    bindings = [{"exchange": "exchange/taskcluster-queue/v1/task-completed",
                 "routingKeyPattern": f"route.probe.{number}.#"} for number in range(1000)]
    connection.send(json.dumps({"bindings": bindings}))
    opcode, data = connection.recv_data(control_frame=True)
    while opcode not in (websocket.ABNF.OPCODE_CLOSE,):
        opcode, data = connection.recv_data(control_frame=True)
    code = int.from_bytes(data[:2], "big")
    assert code in (1008, 1009), code
    assert data[2:], "the close frame gives a reason"
    connection.close()


def test_a_blob_that_cannot_be_stored_is_logged(server, task_queue_id):
    queue = server.queue()
    task_id = running_task(queue, task_queue_id)
    put_url = queue.createArtifact(task_id, "0", "public/unstorable", s3("text/plain"))["putUrl"]
    # The run's blob directory is a file: storing fails as a permission problem would.
    run_dir = os.path.join(server.data_dir, "blobs", task_id, "0")
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    with open(run_dir, "w") as blocker:
        blocker.write("in the way")
    response = requests.put(put_url, data=b"data", headers={"Content-Type": "text/plain"},
                            timeout=10)
    assert_taskcluster_error(response, 500, "InternalServerError")

    def logged():
        text = "".join(open(path, errors="replace").read()
                       for path in glob.glob(os.path.join(server.log_dir, "server-*.log")))
        return "ERROR" in text and run_dir in text
    assert wait_for(logged, timeout=5), "the failure is logged with the blob's path"
