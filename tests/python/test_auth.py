"""The Auth service (`/api/auth/v1/`) driven by the official Python client against the real
server: clients and roles made through the API authenticate, are refused and change scopes at
once, on every service, and all of it survives a restart; a caller cannot grant scopes it
lacks; static clients and roles cannot be changed; expandScopes, currentScopes,
testAuthenticate, testAuthenticateGet and authenticateHawk answer as Taskcluster's."""

import datetime
import os

import pytest
import requests
import taskcluster

from conftest import LIMITED_CLIENT, ROOT_CLIENT, ROOT_TOKEN, date_in, failure, walk

HOUR = datetime.timedelta(hours=1)


def unique(prefix):
    return f"{prefix}/{os.urandom(4).hex()}"


def as_client(server, service, client_id, token):
    return server.client(service, credentials={"clientId": client_id, "accessToken": token})


def create(auth, client_id, scopes, **fields):
    return auth.createClient(client_id, {"expires": date_in(HOUR), "description": "a test client",
                                         "scopes": scopes, **fields})


def test_a_client_made_through_the_api_works_at_once_and_stops_at_once(server):
    auth = server.client("Auth")
    client_id = unique("project/ci")
    made = create(auth, client_id, ["secrets:get:proj/*", "auth:current-scopes"])
    token = made["accessToken"]
    assert len(token) >= 22 and made["clientId"] == client_id and made["disabled"] is False
    assert set(made) == {"clientId", "description", "expires", "deleteOnExpiration", "created",
                         "lastModified", "lastDateUsed", "lastRotated", "scopes",
                         "expandedScopes", "disabled", "accessToken"}
    # The token is answered once: reading the client shows none.
    assert "accessToken" not in auth.client(client_id)
    server.client("Secrets").set("proj/a", {"secret": {"v": 1}, "expires": date_in(HOUR)})
    mine = as_client(server, "Secrets", client_id, token)
    assert mine.get("proj/a")["secret"] == {"v": 1}
    assert failure(mine.get, "other/a").status_code == 403
    assert "secrets:get:proj/*" in as_client(server, "Auth", client_id, token) \
        .currentScopes()["scopes"]
    # Disabled: refused at once; enabled again: accepted at once.
    assert auth.disableClient(client_id)["disabled"] is True
    error = failure(mine.get, "proj/a")
    assert (error.status_code, error.body["code"]) == (401, "AuthenticationFailed")
    auth.enableClient(client_id)
    assert mine.get("proj/a")["secret"] == {"v": 1}
    # A new token: the old one stops at once.
    new_token = auth.resetAccessToken(client_id)["accessToken"]
    assert new_token != token
    assert failure(mine.get, "proj/a").status_code == 401
    assert as_client(server, "Secrets", client_id, new_token).get("proj/a")["secret"] == {"v": 1}
    # Deleted: refused at once, and gone.
    auth.deleteClient(client_id)
    assert failure(as_client(server, "Secrets", client_id, new_token).get, "proj/a") \
        .status_code == 401
    assert failure(auth.client, client_id).status_code == 404
    auth.deleteClient(client_id)


def test_a_caller_cannot_grant_scopes_it_lacks(server):
    auth = server.client("Auth")
    creator_id = unique("project/creator")
    creator = create(auth, creator_id, ["auth:create-client:project/made/*",
                                        "auth:update-client:project/made/*", "queue:a:*"])
    theirs = as_client(server, "Auth", creator_id, creator["accessToken"])
    made_id = unique("project/made")
    assert create(theirs, made_id, ["queue:a:1"])["scopes"] == ["queue:a:1"]
    for scopes in (["queue:b"], ["queue:a:1", "*"]):
        error = failure(create, theirs, unique("project/made"), scopes)
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    error = failure(create, theirs, unique("project/elsewhere"), [])
    assert error.status_code == 403
    # An update needs only the scopes it adds.
    update = {"expires": date_in(HOUR), "description": "d", "scopes": ["queue:a:1", "queue:a:2"]}
    assert theirs.updateClient(made_id, update)["scopes"] == ["queue:a:1", "queue:a:2"]
    update["scopes"] = ["queue:a:2", "queue:c"]
    assert failure(theirs.updateClient, made_id, update).status_code == 403


def test_a_role_change_takes_effect_at_once(server):
    auth = server.client("Auth")
    role_id = unique("project-role")
    client_id = unique("project/role-user")
    token = create(auth, client_id, [f"assume:{role_id}"])["accessToken"]
    index = as_client(server, "Index", client_id, token)
    path = f"roles.{os.urandom(4).hex()}.x"
    server.client("Index").insertTask(path, {"taskId": "fN1SbArXTPSVFNUvaOlinQ", "rank": 0,
                                             "data": {}, "expires": date_in(HOUR)})
    assert failure(index.findTask, path).status_code == 403
    role = auth.createRole(role_id, {"description": "r", "scopes": ["index:find-task:roles.*"]})
    assert role["roleId"] == role_id and f"assume:{role_id}" in role["expandedScopes"]
    assert "index:find-task:roles.*" in role["expandedScopes"]
    assert index.findTask(path)["namespace"] == path
    assert "index:find-task:roles.*" in auth.client(client_id)["expandedScopes"]
    auth.updateRole(role_id, {"description": "r", "scopes": ["index:find-task:nothing"]})
    assert failure(index.findTask, path).status_code == 403
    assert role_id in auth.listRoleIds()["roleIds"]
    assert any(r["roleId"] == role_id for r in auth.listRoles())
    auth.deleteRole(role_id)
    assert failure(auth.role, role_id).status_code == 404
    auth.deleteRole(role_id)


def test_roles_are_checked_and_static_ones_are_the_configurations(server):
    auth = server.client("Auth")
    a, b = unique("cycle-a"), unique("cycle-b")
    auth.createRole(a, {"description": "a", "scopes": [f"assume:{b}"]})
    error = failure(auth.createRole, b, {"description": "b", "scopes": [f"assume:{a}"]})
    assert (error.status_code, error.body["code"]) == (400, "InputError")
    assert failure(auth.role, b).status_code == 404
    role = {"description": "x", "scopes": ["q:**"]}
    assert failure(auth.createRole, unique("stars"), role).body["code"] == "InputError"
    # The same create again is no conflict; a different one is.
    auth.createRole(a, {"description": "a", "scopes": [f"assume:{b}"]})
    assert failure(auth.createRole, a, {"description": "other", "scopes": []}).status_code == 409
    # Static clients cannot be changed through the API.
    for call, args in [(auth.deleteClient, (ROOT_CLIENT,)),
                       (auth.resetAccessToken, (LIMITED_CLIENT,)),
                       (auth.disableClient, ("static/anything",))]:
        error = failure(call, *args)
        assert (error.status_code, error.body["code"]) == (400, "InputError"), call
    assert auth.client(ROOT_CLIENT)["scopes"] == ["*"]
    listed = [c["clientId"] for page in walk(auth.listClients, limit=3) for c in page["clients"]]
    assert ROOT_CLIENT in listed and LIMITED_CLIENT in listed and listed == sorted(listed)
    assert [c["clientId"] for c in auth.listClients(query={"prefix": "static/"})["clients"]] \
        == sorted(c for c in listed if c.startswith("static/"))


def test_bad_input_is_refused_and_nothing_is_stored(server):
    auth = server.client("Auth")
    client_id = unique("project/bad")
    for body in [{"description": "d"}, {"expires": date_in(HOUR)},
                 {"expires": date_in(HOUR), "description": "d", "scopes": ["\t"]},
                 {"expires": date_in(HOUR), "description": "x" * 10241},
                 {"expires": date_in(HOUR), "description": "d", "extra": 1}]:
        error = failure(auth.createClient, client_id, body)
        assert (error.status_code, error.body["code"]) == (400, "InputValidationError"), body
    error = failure(create, auth, client_id, ["a:**"])
    assert (error.status_code, error.body["code"]) == (400, "InputError")
    for bad_id in ["has space", "x" * 1025]:
        error = failure(create, auth, bad_id, [])
        assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    error = failure(auth.createRole, "r" * 4097, {"description": "d", "scopes": []})
    assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    assert failure(auth.client, client_id).status_code == 404
    assert failure(auth.expandScopes, {"scopes": "no"}).status_code == 400


def test_expand_and_current_scopes(server):
    auth = server.client("Auth")
    role_id = unique("expand-me")
    auth.createRole(role_id, {"description": "e", "scopes": ["b:1", "a:*", "a:1"]})
    assert auth.expandScopes({"scopes": [f"assume:{role_id}"]}) == \
        {"scopes": ["a:*", f"assume:{role_id}", "b:1"]}
    now = datetime.datetime.now(datetime.timezone.utc)
    limited = server.client("Auth", authorizedScopes=["myapi:a", "auth:current-scopes"])
    scopes = limited.currentScopes()["scopes"]
    assert "myapi:a" in scopes and "assume:anonymous" in scopes and "*" not in scopes
    temporary = taskcluster.createTemporaryCredentials(
        ROOT_CLIENT, ROOT_TOKEN, now - datetime.timedelta(minutes=1), now + HOUR,
        ["auth:current-scopes", "x:y"])
    assert "x:y" in server.client("Auth", credentials=temporary).currentScopes()["scopes"]


def test_test_authenticate_and_its_get_form(server):
    tester = server.client("Auth", credentials={"clientId": "tester", "accessToken": "no-secret"})
    answer = tester.testAuthenticate({"clientScopes": ["test:a", "test:b*"],
                                      "requiredScopes": ["test:b1"]})
    assert answer["clientId"] == "tester" and "test:b*" in answer["scopes"]
    error = failure(tester.testAuthenticate, {"clientScopes": ["test:a"],
                                              "requiredScopes": ["test:c"]})
    assert error.status_code == 403
    wrong = server.client("Auth", credentials={"clientId": "tester", "accessToken": "wrong"})
    assert failure(wrong.testAuthenticate, {}).status_code == 401
    assert tester.testAuthenticateGet()["clientId"] == "tester"
    signed = tester.buildSignedUrl("testAuthenticateGet")
    response = requests.get(signed)
    assert response.status_code == 200 and response.json()["clientId"] == "tester"


def test_authenticate_hawk_checks_what_another_server_received(server):
    auth = server.client("Auth")
    client_id = unique("project/hawk")
    token = create(auth, client_id, ["x:y"])["accessToken"]
    # Sign a request as the Python client would, for another server.
    resource = "/api/other/v1/thing?a=1"
    url = f"http://example.com:8080{resource}"
    header = taskcluster.utils.makeHawkHeader(url, "GET", client_id, token) \
        if hasattr(taskcluster.utils, "makeHawkHeader") else None
    if header is None:
        import mohawk
        header = mohawk.Sender({"id": client_id, "key": token, "algorithm": "sha256"}, url,
                               "GET", always_hash_content=False).request_header
    base = {"method": "get", "resource": resource, "host": "example.com", "port": 8080}
    answer = auth.authenticateHawk({**base, "authorization": header})
    assert answer["status"] == "auth-success" and answer["clientId"] == client_id
    assert "x:y" in answer["scopes"] and answer["scheme"] == "hawk"
    answer = auth.authenticateHawk({**base, "port": 8081, "authorization": header})
    assert answer["status"] == "auth-failed" and answer["message"]
    answer = auth.authenticateHawk(base)
    assert answer["status"] == "no-auth" and "assume:anonymous" in answer["scopes"]


def test_clients_and_roles_survive_a_restart(fresh_server):
    server = fresh_server.start()
    auth = server.client("Auth")
    tokens = {}
    for i in range(20):
        tokens[f"keep/c{i}"] = create(auth, f"keep/c{i}", [f"assume:keep-role-{i % 3}"])[
            "accessToken"]
    for i in range(3):
        auth.createRole(f"keep-role-{i}", {"description": "k",
                                           "scopes": [f"secrets:get:keep/{i}"]})
    auth.disableClient("keep/c0")
    auth.deleteClient("keep/c1")
    server.stop()
    server.start()
    auth = server.client("Auth")
    assert auth.client("keep/c0")["disabled"] is True
    assert failure(auth.client, "keep/c1").status_code == 404
    for i in range(2, 20):
        mine = as_client(server, "Auth", f"keep/c{i}", tokens[f"keep/c{i}"])
        assert failure(mine.currentScopes).status_code == 403  # authenticated, not allowed
        assert f"secrets:get:keep/{i % 3}" in auth.client(f"keep/c{i}")["expandedScopes"]
    secrets = server.client("Secrets")
    secrets.set("keep/2", {"secret": {"k": 2}, "expires": date_in(HOUR)})
    assert as_client(server, "Secrets", "keep/c2", tokens["keep/c2"]).get("keep/2")["secret"] \
        == {"k": 2}
    assert failure(as_client(server, "Secrets", "keep/c0", tokens["keep/c0"]).get,
                   "keep/0").status_code == 401
