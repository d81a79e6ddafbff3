"""Taskfold's own clients against an https:// deployment: `taskfold serve` behind a
TLS-terminating proxy, as operators run it, with a certificate from a private CA (made by
`trustme`) that the clients are told to trust through `SSL_CERT_FILE`.

- `taskfold worker` claims, runs and completes a Docker task over https: its claims, reclaims,
  live log, artifact uploads (to the signed URLs, also https) and report all pass the proxy.
- A worker that does not trust the CA refuses the server: it claims nothing.
- A shell into a running task: the worker dials back over wss://, and so does the user.
- `taskfold listen` follows the exchanges over wss://.
"""

import asyncio
import glob
import json
import os
import re
import ssl
import subprocess
import threading
import time
import uuid

import pytest
import requests
import taskcluster
import trustme

from conftest import (BINARY, ROOT_CLIENT, ROOT_TOKEN, free_port, make_server, make_until_exit,
                      watch_logs)
from shell_client import ShellClient
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, assert_in_log,
                            assert_run, create_task, new_task_queue_id, remove_containers,
                            wait_resolved, wait_until)

IMAGE = "taskfold-test/busybox:1"


class TlsProxy:
    """Terminates TLS on a port of its own and passes the bytes on to `target` (host, port),
    Host header and all: what a deployment's load balancer does."""

    def __init__(self, certificate):
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.target = None
        self.connections = 0
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self.handle, "127.0.0.1", self.port, ssl=context))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10), "the TLS proxy did not start"

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                # Either side's end ends the connection: HTTP clients do not half-close.
                for end in (writer, upstream_writer):
                    end.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    """The private CA, and the file of its certificate."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, authority):
    """`taskfold serve` with an https:// root URL, behind the proxy."""
    ca, _ = authority
    proxy = TlsProxy(ca.issue_cert("127.0.0.1"))
    server = make_server(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)
    server.args = ["--root-url", proxy.url]
    watch_logs(os.path.join(glob.escape(server.log_dir), "server-*.log"))
    server.start()
    proxy.target = ("127.0.0.1", server.port)
    yield server, proxy
    server.stop()
    proxy.close()


@pytest.fixture
def queue(deployment, authority, monkeypatch):
    """The official client, over https (requests trusts the CA through REQUESTS_CA_BUNDLE)."""
    _, proxy = deployment
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", authority[1])
    return taskcluster.Queue({"rootUrl": proxy.url, "maxRetries": 0,
                              "credentials": {"clientId": ROOT_CLIENT, "accessToken": ROOT_TOKEN}})


def start_worker(deployment, tmp_path_factory, env):
    server, proxy = deployment
    base = tmp_path_factory.mktemp("tls-worker")
    return WorkerProcess(server, "docker", base / "data", base, root_url=proxy.url,
                         env=env).start()


def test_a_worker_runs_a_task_over_https(deployment, authority, queue, tmp_path_factory):
    server, proxy = deployment
    worker = start_worker(deployment, tmp_path_factory, {"SSL_CERT_FILE": authority[1]})
    try:
        task_id = create_task(queue, worker.task_queue_id, payload={
            "image": IMAGE, "maxRunTime": 60,
            "command": ["sh", "-c", "echo hello-over-tls; mkdir -p /work/out; "
                                    "printf 'sealed content' > /work/out/result.txt"],
            "artifacts": {"public/result.txt": {"type": "file", "path": "/work/out/result.txt"}},
        })
        status = wait_resolved(queue, task_id)
        assert_run(status, 0, "completed", "completed")
        # The artifacts went up to the signed https:// URLs and come back through them.
        def read(name):
            url = queue.buildUrl("getLatestArtifact", task_id, name)
            response = requests.get(url, timeout=30, verify=authority[1])
            assert response.status_code == 200, (name, response.status_code, response.text)
            assert response.url.startswith(proxy.url), response.url
            return response.text

        assert read("public/result.txt") == "sealed content"
        assert_in_log(read("public/logs/live_backing.log"), "hello-over-tls")
    finally:
        worker.stop()
        remove_containers(f"taskfold.worker={worker.label}", worker.label)


def test_a_worker_that_does_not_trust_the_certificate_claims_nothing(
        deployment, queue, tmp_path_factory):
    # Only the system's roots: the private CA is not among them.
    worker = start_worker(deployment, tmp_path_factory,
                          {"SSL_CERT_FILE": None, "SSL_CERT_DIR": None})
    try:
        task_id = create_task(queue, worker.task_queue_id, payload={
            "image": IMAGE, "maxRunTime": 60, "command": ["true"]})

        def refused():
            with open(worker.log_path) as log:
                return "certificate" in log.read().lower()

        assert wait_until(refused, 15), "the worker did not say why it cannot reach the server"
        # A worker that trusted it would have claimed the task within a second.
        time.sleep(2)
        assert queue.status(task_id)["status"]["state"] == "pending"
    finally:
        worker.stop()


def test_a_shell_into_a_running_task_over_wss(deployment, authority, queue, tmp_path_factory,
                                              monkeypatch):
    _, proxy = deployment
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", authority[1])
    worker = start_worker(deployment, tmp_path_factory, {"SSL_CERT_FILE": authority[1]})
    shell = None
    try:
        task_id = create_task(queue, worker.task_queue_id, payload={
            "image": IMAGE, "maxRunTime": 60, "command": ["sh", "-c", "sleep 60"],
            "features": {"interactive": True}})

        def running():
            runs = queue.status(task_id)["status"]["runs"]
            return runs and runs[0]["state"] == "running"

        assert wait_until(running), queue.status(task_id)
        session = queue._makeHttpRequest("post", f"task/{task_id}/runs/0/sessions", {})
        assert session["socketUrl"].startswith(proxy.url.replace("https://", "wss://")), session
        shell = ShellClient(session["socketUrl"], timeout=TIMEOUT)
        shell.wait_ready()
        shell.run("echo secure-$((6*7)); exit 3")
        shell.read_until(re.compile(rb"secure-42\r?\n"))
        assert shell.wait_stopped() == 3, shell.describe()
        queue.cancelTask(task_id)
    finally:
        if shell is not None:
            shell.close()
        worker.stop()
        remove_containers(f"taskfold.worker={worker.label}", worker.label)


def test_taskfold_listen_follows_the_exchanges_over_wss(deployment, authority, queue):
    _, proxy = deployment
    route = f"tls.{uuid.uuid4().hex}"
    env = dict(os.environ, SSL_CERT_FILE=authority[1])
    process = subprocess.Popen(
        [BINARY, "listen", "--root-url", proxy.url, "--exchange", "task-pending",
         "--routing-key", f"route.{route}", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # It prints the first task made once it listens; make them until it has.
    stdout, stderr, created = make_until_exit(
        process, lambda: create_task(queue, new_task_queue_id("tls"), routes=[route]), TIMEOUT)
    assert process.returncode == 0, stderr
    [line] = [json.loads(line) for line in stdout.splitlines()]
    assert line["exchange"].endswith("task-pending")
    assert line["payload"]["status"]["taskId"] in created
