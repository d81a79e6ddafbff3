"""Cloudomation's task kinds as worker engines, end to end: a real server and one real
`taskfold worker --engine rest,smtp --engine redis` (a list and a repeated flag), calling real
servers on loopback that each test module starts itself:

- REST: an HTTPS server (Python's http.server) with a certificate of a private CA made by
  `trustme`, which the payloads pass as `cacert`;
- SMTP: `aiosmtpd`, plain and with STARTTLS required (a second private CA, which the worker
  trusts through SSL_CERT_FILE as it would the system's roots), both asking for a login;
- REDIS: Debian's `redis-server` on a free port, without persistence.

Each checks the outputs (`public/outputs.json` and the log), how the run resolves, and that
a malformed payload is `exception/malformed-payload` with the schema's errors in the log.
Credentials come from the Secrets service through the task's own scopes, and the tests check
they appear in no log and no artifact.

What the worker logged (RUST_LOG=info) during a test is printed when that test fails.
"""

import datetime
import json
import shutil
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import taskcluster
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import free_port
from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, WorkerProcess, assert_in_log, assert_run,
                            create_task, fetch, serve, wait_resolved, wait_until)

BACKING_LOG = "public/logs/live_backing.log"
OUTPUTS = "public/outputs.json"
# What the secret holds: it must reach the servers and nothing else.
API_TOKEN = "tok-" + uuid.uuid4().hex
SMTP_PASSWORD = "pw-" + uuid.uuid4().hex
SECRET = "tests/task-kinds"


# --- the servers the tasks call ------------------------------------------------------------


class Api(BaseHTTPRequestHandler):
    """A small HTTPS API: JSON, text, a 404, and an endpoint that checks what it was sent
    without echoing the credential."""

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type, headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        if self.path == "/hello":
            self.answer(200, json.dumps({"hello": "world", "n": [1, 2]}),
                        "application/json; charset=utf-8",
                        [("Set-Cookie", "session=abc123; Path=/; HttpOnly"),
                         ("Set-Cookie", "theme=dark"), ("X-Api", "v1")])
        elif self.path == "/text":
            self.answer(200, "plain words", "text/plain")
        else:
            self.answer(404, "no such thing", "text/plain; charset=utf-8")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.answer(201, json.dumps({
            "authorized": self.headers.get("Authorization") == f"Bearer {API_TOKEN}",
            "cookie": self.headers.get("Cookie", "").replace(API_TOKEN, "<token>"),
            "content_type": self.headers.get("Content-Type"),
            "body": json.loads(body) if body.startswith("{") else body,
        }), "application/json")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The HTTPS API: its base URL and its CA's PEM."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"https://127.0.0.1:{httpd.server_address[1]}",
           "cacert": ca.cert_pem.bytes().decode()}
    httpd.shutdown()


class Mailbox:
    """aiosmtpd's handler: keeps what it was sent."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                              "data": envelope.content.decode("utf8", "replace"),
                              "login": session.auth_data})
        return "250 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"robot" and auth_data.password == SMTP_PASSWORD.encode()
    # `handled=False`: aiosmtpd answers a refusal itself (535) only when told so.
    return AuthResult(success=ok, handled=False,
                      auth_data=auth_data.login.decode() if ok else None)


@pytest.fixture(scope="module")
def smtp_ca():
    """The CA of the STARTTLS server, which the worker trusts as a system root."""
    return trustme.CA()


@pytest.fixture(scope="module")
def smtp(smtp_ca):
    """Two SMTP servers asking for a login: `plain` (no TLS) and `tls` (STARTTLS required);
    their ports and the mailbox they share."""
    mailbox = Mailbox()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    smtp_ca.issue_cert("127.0.0.1").configure_cert(context)
    plain = Controller(mailbox, hostname="127.0.0.1", port=free_port(),
                       authenticator=authenticate, auth_require_tls=False)
    tls = Controller(mailbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
                     require_starttls=True, authenticator=authenticate, auth_require_tls=True)
    plain.start()
    tls.start()
    yield {"plain": plain.port, "tls": tls.port, "mailbox": mailbox}
    plain.stop()
    tls.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """A `redis-server` of the module's own on a free port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("the REDIS tests need redis-server (tests/run.sh installs Debian's)",
                    pytrace=False)
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready():
        try:
            return subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(port),
                                   "ping"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() == "PONG"
        except (OSError, subprocess.TimeoutExpired):
            return False

    assert wait_until(ready, 20), "redis-server did not start"
    yield port
    process.terminate()
    process.wait(timeout=10)


# --- the queue, the worker and the secret --------------------------------------------------


@pytest.fixture(scope="module")
def kinds_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def worker(kinds_server, smtp_ca, tmp_path_factory):
    base = tmp_path_factory.mktemp("kinds-worker")
    ca_file = base / "roots.pem"
    smtp_ca.cert_pem.write_to_path(str(ca_file))
    worker = WorkerProcess(kinds_server, "rest,smtp", base / "data", base,
                           task_queue_id=f"proj-tests/kinds-{uuid.uuid4().hex[:8]}",
                           worker_group="kinds-tests",
                           worker_id=f"kinds-{uuid.uuid4().hex[:10]}", capacity=4,
                           options=("--engine", "redis"),
                           env={"SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": None}).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def secret(kinds_server):
    expires = taskcluster.stringDate(datetime.datetime.now(datetime.timezone.utc)
                                     + datetime.timedelta(days=1))
    kinds_server.client("Secrets").set(SECRET, {
        "secret": {"token": API_TOKEN, "authorization": f"Bearer {API_TOKEN}",
                   "login": "robot", "password": SMTP_PASSWORD},
        "expires": expires})
    return SECRET


@pytest.fixture
def queue(kinds_server):
    return kinds_server.queue()


@pytest.fixture
def run_to_end(kinds_server, queue, worker, secret):
    """Creates a task with `payload` (and the scope to read the test secret) and waits for
    its run: (status, backing log, outputs or None)."""

    def run(payload, scopes=(f"secrets:get:{SECRET}",)):
        assert worker.alive(), "the worker process exited"
        task_id = create_task(queue, worker.task_queue_id, payload=payload, scopes=list(scopes))
        status = wait_resolved(queue, task_id)
        log = fetch(kinds_server, task_id, 0, BACKING_LOG)
        names = {entry["name"] for entry in queue.listArtifacts(task_id, "0")["artifacts"]}
        outputs = json.loads(fetch(kinds_server, task_id, 0, OUTPUTS)) if OUTPUTS in names \
            else None
        for artifact in names:
            if artifact != "public/logs/live.log":
                text = fetch(kinds_server, task_id, 0, artifact)
                assert API_TOKEN not in text and SMTP_PASSWORD not in text, artifact
        return status, log, outputs

    return run


def assert_malformed(status, log, *errors):
    assert_run(status, 0, "exception", "malformed-payload")
    assert_in_log(log, "the task's payload is not valid:", *errors)


# --- REST ----------------------------------------------------------------------------------


def test_rest_json_answer_with_a_private_ca(api, run_to_end):
    status, log, outputs = run_to_end({"kind": "rest", "url": api["url"] + "/hello",
                                       "cacert": api["cacert"]})
    assert_run(status, 0, "completed", "completed")
    assert outputs["status_code"] == 200
    assert outputs["json"] == {"hello": "world", "n": [1, 2]}
    assert "text" not in outputs
    assert outputs["encoding"] == "utf-8"
    assert outputs["cookies"] == {"session": "abc123", "theme": "dark"}
    assert outputs["headers"]["x-api"] == "v1"
    assert_in_log(log, f"Calling: GET {api['url']}/hello", "Outputs:", '"hello": "world"')


def test_rest_text_answer(api, run_to_end):
    status, _, outputs = run_to_end({"url": api["url"] + "/text", "cacert": api["cacert"]})
    assert_run(status, 0, "completed", "completed")
    assert (outputs["text"], outputs["encoding"]) == ("plain words", None)
    assert "json" not in outputs


def test_rest_post_with_secrets_in_headers_and_cookies(api, run_to_end):
    status, log, outputs = run_to_end({
        "url": api["url"] + "/things", "method": "POST", "cacert": api["cacert"],
        "data": {"name": "thing", "size": 3},
        "headers": {"Authorization": {"secret": SECRET, "key": "authorization"},
                    "X-Trace": "t1"},
        "cookies": {"token": {"secret": SECRET, "key": "token"}, "lang": "en"},
        "expected_status_code": 201,
    })
    assert_run(status, 0, "completed", "completed")
    assert outputs["status_code"] == 201
    assert outputs["json"] == {"authorized": True, "cookie": "lang=en; token=<token>",
                               "content_type": "application/json",
                               "body": {"name": "thing", "size": 3}}
    assert_in_log(log, f"Calling: POST {api['url']}/things")
    assert API_TOKEN not in log


def test_rest_unexpected_status_fails_with_its_outputs(api, run_to_end):
    status, log, outputs = run_to_end({"url": api["url"] + "/nothing", "cacert": api["cacert"]})
    assert_run(status, 0, "failed", "failed")
    assert (outputs["status_code"], outputs["text"]) == (404, "no such thing")
    assert_in_log(log, "the answer's status is 404 Not Found, not the expected 2xx")
    status, _, outputs = run_to_end({"url": api["url"] + "/nothing", "cacert": api["cacert"],
                                     "expected_status_code": [200, 404]})
    assert_run(status, 0, "completed", "completed")


def test_rest_without_the_ca_fails(api, run_to_end):
    status, log, outputs = run_to_end({"url": api["url"] + "/hello"})
    assert_run(status, 0, "failed", "failed")
    assert outputs is None
    assert_in_log(log, f"calling {api['url']}/hello")


def test_rest_malformed_payloads(api, run_to_end):
    status, log, _ = run_to_end({"url": "ftp://example.com", "method": "FETCH",
                                 "expected_status_code": "200", "bogus": 1})
    assert_malformed(status, log, "payload/url", "payload/method",
                     "payload/expected_status_code", "bogus")
    status, log, _ = run_to_end({"url": api["url"], "cacert": "not a certificate"})
    assert_malformed(status, log, "payload/cacert")
    status, log, _ = run_to_end({"url": api["url"], "headers": {
        "Authorization": {"secret": "tests/no-such-secret", "key": "token"}}},
        scopes=["secrets:get:tests/*"])
    assert_malformed(status, log, "secret `tests/no-such-secret` does not exist")
    status, log, _ = run_to_end({"url": api["url"], "headers": {
        "Authorization": {"secret": SECRET, "key": "token"}}}, scopes=[])
    assert_malformed(status, log, f"the task may not read secret `{SECRET}`")


def test_a_kind_the_worker_does_not_serve(run_to_end):
    status, log, _ = run_to_end({"kind": "docker", "image": "busybox", "maxRunTime": 5})
    assert_malformed(status, log, "payload/kind: \"docker\" is not a kind this worker serves "
                                  "(it serves rest, smtp, redis)")


# --- SMTP ----------------------------------------------------------------------------------


def message(port, use_tls, **more):
    subject = f"report {uuid.uuid4().hex[:8]}"
    payload = {"kind": "smtp", "from": "Robot <robot@example.com>",
               "to": ["ops@example.com", "dev@example.com"], "subject": subject,
               "body": "all green\nsee you", "smtp_host": "127.0.0.1", "smtp_port": port,
               "use_tls": use_tls, "login": {"secret": SECRET, "key": "login"},
               "password": {"secret": SECRET, "key": "password"}}
    payload.update(more)
    return payload


def delivered(mailbox, subject):
    found = [m for m in mailbox.messages if f"Subject: {subject}" in m["data"]]
    assert len(found) == 1, mailbox.messages
    return found[0]


@pytest.mark.parametrize("server", ["plain", "tls"])
def test_smtp_sends_with_a_login_from_a_secret(smtp, run_to_end, server):
    payload = message(smtp[server], server == "tls")
    status, log, outputs = run_to_end(payload)
    assert_run(status, 0, "completed", "completed")
    sent = delivered(smtp["mailbox"], payload["subject"])
    assert sent["from"] == "robot@example.com"
    assert sent["to"] == ["ops@example.com", "dev@example.com"]
    assert sent["login"] == "robot"
    assert "all green" in sent["data"]
    assert outputs == {"code": 250, "message": "Message accepted for delivery"}
    assert_in_log(log, "Sending: to ops@example.com, dev@example.com through 127.0.0.1:")
    assert SMTP_PASSWORD not in log


def test_smtp_refusals_fail_the_task(smtp, run_to_end):
    # A wrong password: the server refuses the login.
    status, log, outputs = run_to_end(message(smtp["plain"], False, password="wrong"))
    assert_run(status, 0, "failed", "failed")
    assert outputs is None
    assert_in_log(log, "sending the message:")
    # STARTTLS required by the payload, not offered by the server.
    status, log, _ = run_to_end(message(smtp["plain"], True))
    assert_run(status, 0, "failed", "failed")


def test_smtp_malformed_payloads(smtp, run_to_end):
    status, log, _ = run_to_end({"kind": "smtp", "from": "a@example.com", "to": [],
                                 "subject": 5, "smtp_host": "127.0.0.1", "login": "x"})
    assert_malformed(status, log, "payload/to", "payload/subject", "password")
    status, log, _ = run_to_end(message(smtp["plain"], False, to="not an address"))
    assert_malformed(status, log, "payload/to: `not an address` is not an address")


# --- REDIS ---------------------------------------------------------------------------------


def command(port, command, *args):
    return {"kind": "redis", "host": "127.0.0.1", "port": port, "command": command,
            "args": list(args)}


def test_redis_commands_and_their_results(redis, run_to_end):
    key = f"k-{uuid.uuid4().hex[:8]}"
    cases = [
        (command(redis, "SET", key, "value one"), "OK"),
        (command(redis, "GET", key), "value one"),
        (command(redis, "RPUSH", key + "-list", "a", "b", 3), 3),
        (command(redis, "LRANGE", key + "-list", 0, -1), ["a", "b", "3"]),
        (command(redis, "GET", key + "-missing"), None),
        (command(redis, "CONFIG GET", "appendonly"), ["appendonly", "no"]),
    ]
    for payload, result in cases:
        status, log, outputs = run_to_end(payload)
        assert_run(status, 0, "completed", "completed")
        assert outputs == {"result": result}, payload
        assert_in_log(log, f"Command: {payload['command']} ({len(payload['args'])} arguments)")


def test_redis_error_fails_the_task(redis, run_to_end):
    key = f"k-{uuid.uuid4().hex[:8]}"
    run_to_end(command(redis, "SET", key, "text"))
    status, log, outputs = run_to_end(command(redis, "HGET", key, "field"))
    assert_run(status, 0, "failed", "failed")
    assert outputs["error"].startswith("WRONGTYPE"), outputs
    assert_in_log(log, "Redis answered an error: WRONGTYPE")
    status, log, outputs = run_to_end(command(free_port(), "PING"))
    assert_run(status, 0, "failed", "failed")
    assert_in_log(log, "connecting to 127.0.0.1:")


def test_redis_malformed_payload(run_to_end):
    status, log, _ = run_to_end({"kind": "redis", "host": "", "port": 0, "args": [{}]})
    assert_malformed(status, log, "command", "payload/host", "payload/port", "payload/args/0")
