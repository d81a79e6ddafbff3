//! End-to-end checks of [`authenticate`] and [`authorize`] against what the official clients
//! really send.
//!
//! The Python vectors below were produced at development time with `pip install taskcluster`
//! (taskcluster 113.2.0, mohawk 1.1.0) in a throw-away venv: a script pointed
//! `taskcluster.Queue` at a capture server on 127.0.0.1:40943, fixed mohawk's clock to
//! ts 1767225600 (2026-01-01T00:00:00Z) and its nonces to `nonce1`, `nonce2`, …, fixed the
//! seed generator of `taskcluster.createTemporaryCredentials` (start
//! 2025-12-31T23:55:00Z, expiry 2026-01-01T01:00:00Z), and recorded each request line,
//! `Host`, `Authorization`, `Content-Type` and body, and the URLs of `buildSignedUrl` with
//! `time.time()` fixed to the same instant. The JS vectors came the same way from npm
//! `taskcluster-client` (see `javascript_client_requests_authenticate`). Nothing was edited
//! afterwards.

use super::credentials::{
    TemporaryCredentialsRequest, certificate_signature, certificate_signing_string,
    create_temporary_credentials_with_seed,
};
use super::*;
use serde_json::{Value, json};

const TS: i64 = 1_767_225_600;
const HOST: &str = "127.0.0.1:40943";
const KEY: &str = "no-secret-tester-token-0123456789abcdefghij";
const TASK: &str = "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ";

const GET_TASK: &str = "Hawk mac=\"a1Y0cNP07jxhp4gg/WEGQNgC3UjlKIJHlyOqnXYbreg=\", hash=\"B0weSUXsMcb5UhL41FZbrUJCAotzSI3HawE1NPLRUz8=\", id=\"tester\", ts=\"1767225600\", nonce=\"nonce1\", ext=\"e30=\"";
const POST_EMPTY: &str = "Hawk mac=\"maNgtzypFhomg2WDgFZGDV88uFzWQTyhX6rEgROcRa4=\", hash=\"B0weSUXsMcb5UhL41FZbrUJCAotzSI3HawE1NPLRUz8=\", id=\"tester\", ts=\"1767225600\", nonce=\"nonce3\", ext=\"e30=\"";
const POST_BODY_TARGET: &str =
    "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ/runs/0/artifacts/public%2Flogs%2Flive.log";
const POST_BODY: &str = "Hawk mac=\"ezz5q5mxfoLF1r5XeCxRWsGpg+8gSOYxqURpf7R1nDo=\", hash=\"pT1rVLMyEGCA9AWlv5UkPl/ai9YM64osTlakZQdqCnA=\", id=\"tester\", ts=\"1767225600\", nonce=\"nonce4\", ext=\"e30=\"";
const POST_BODY_JSON: &str = "{\"storageType\":\"reference\",\"expires\":\"2026-02-01T00:00:00.000Z\",\"contentType\":\"text/plain\",\"url\":\"https://example.com/\\u00fc\"}";
/// With `authorizedScopes: ["queue:get-artifact:private/*"]` in the client options.
const AUTHORIZED_SCOPES: &str = "Hawk mac=\"iCOEtr7ikTOeU5izUQNWkj0j/9i7C4J+SexmWtXcC/4=\", hash=\"B0weSUXsMcb5UhL41FZbrUJCAotzSI3HawE1NPLRUz8=\", id=\"tester\", ts=\"1767225600\", nonce=\"nonce5\", ext=\"eyJhdXRob3JpemVkU2NvcGVzIjpbInF1ZXVlOmdldC1hcnRpZmFjdDpwcml2YXRlLyoiXX0=\"";
/// Unnamed temporary credentials with scopes `queue:get-artifact:*`, `assume:worker:x`.
const UNNAMED_TEMPORARY: &str = "Hawk mac=\"5OLvu0moHPrl08/k5B4Fhtl1g0yzmum1KI3CYSsN/+w=\", hash=\"B0weSUXsMcb5UhL41FZbrUJCAotzSI3HawE1NPLRUz8=\", id=\"tester\", ts=\"1767225600\", nonce=\"nonce6\", ext=\"eyJjZXJ0aWZpY2F0ZSI6eyJ2ZXJzaW9uIjoxLCJzY29wZXMiOlsicXVldWU6Z2V0LWFydGlmYWN0OioiLCJhc3N1bWU6d29ya2VyOngiXSwic3RhcnQiOjE3NjcyMjUzMDAwMDAsImV4cGlyeSI6MTc2NzIyOTIwMDAwMCwic2VlZCI6InNlZWRBQUFBQUFBQUFBQUFBQUFBQUFzZWVkQkJCQkJCQkJCQkJCQkJCQkJCIiwic2lnbmF0dXJlIjoiUU9IRys3L0cyNXlFSGtCUXROV2lONjYrcWg0cGN2MGNieHRnaTFwVk1PVT0ifX0=\"";
/// Named temporary credentials `tester/temporary` with scope `queue:create-artifact:*`.
const NAMED_TEMPORARY: &str = "Hawk mac=\"+I7oCEZ2+Iezc9vznATSGKfD7gPzSmllqwJCMbW7MaA=\", hash=\"B0weSUXsMcb5UhL41FZbrUJCAotzSI3HawE1NPLRUz8=\", id=\"tester/temporary\", ts=\"1767225600\", nonce=\"nonce7\", ext=\"eyJjZXJ0aWZpY2F0ZSI6eyJ2ZXJzaW9uIjoxLCJzY29wZXMiOlsicXVldWU6Y3JlYXRlLWFydGlmYWN0OioiXSwic3RhcnQiOjE3NjcyMjUzMDAwMDAsImV4cGlyeSI6MTc2NzIyOTIwMDAwMCwic2VlZCI6InNlZWRDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NzZWVkREREREREREREREREREREREREIiwiaXNzdWVyIjoidGVzdGVyIiwic2lnbmF0dXJlIjoiUG5BQWc3ZHVwanFVanlhS0RnOU1jRFZnWjVhSTVsOTFiUGxlNkVBOUU3TT0ifX0=\"";
/// `buildSignedUrl('getArtifact', taskId, '0', 'private/build/a b.txt')`, expiring at
/// ts + 900 (the default 15 minutes).
const BEWIT_TARGET: &str = "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ/runs/0/artifacts/private%2Fbuild%2Fa%20b.txt?bewit=dGVzdGVyXDE3NjcyMjY1MDBcV2tnekUrWngwL25YRDBiMFRFSXhDeURzZ0U2b1RScUNMS0JYdlpSMjl6TT1cZTMwPQ";
/// `buildSignedUrl('getLatestArtifact', …, expiration=600)` with the named temporary
/// credentials.
const TEMPORARY_BEWIT_TARGET: &str = "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ/artifacts/private%2Fx?bewit=dGVzdGVyL3RlbXBvcmFyeVwxNzY3MjI2MjAwXDJmZ3hoc1dQVDVyVUo3SHZ4SWY3b1NVNmxRTDNvaVFNTUswYmREY1NxSHc9XGV5SmpaWEowYVdacFkyRjBaU0k2ZXlKMlpYSnphVzl1SWpveExDSnpZMjl3WlhNaU9sc2ljWFZsZFdVNlkzSmxZWFJsTFdGeWRHbG1ZV04wT2lvaVhTd2ljM1JoY25RaU9qRTNOamN5TWpVek1EQXdNREFzSW1WNGNHbHllU0k2TVRjMk56SXlPVEl3TURBd01Dd2ljMlZsWkNJNkluTmxaV1JEUTBORFEwTkRRME5EUTBORFEwTkRRME56WldWa1JFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRUlpd2lhWE56ZFdWeUlqb2lkR1Z6ZEdWeUlpd2ljMmxuYm1GMGRYSmxJam9pVUc1QlFXYzNaSFZ3YW5GVmFubGhTMFJuT1UxalJGWm5XalZoU1RWc09URmlVR3hsTmtWQk9VVTNUVDBpZlgwPQ";

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_millis(seconds * 1000)
}

fn roles() -> Vec<Role> {
    vec![
        Role {
            role_id: "anonymous".into(),
            scopes: vec!["queue:ping".into(), "queue:get-artifact:public/*".into()],
        },
        Role {
            role_id: "worker:*".into(),
            scopes: vec!["queue:worker-id:<..>".into()],
        },
    ]
}

fn clients_with(tester_scopes: &[&str], tester_token: &str) -> Clients {
    Clients::new(
        [
            Client {
                client_id: "tester".into(),
                access_token: tester_token.into(),
                scopes: tester_scopes.iter().map(|s| (*s).to_owned()).collect(),
                expires: None,
                disabled: false,
            },
            Client {
                client_id: "limited".into(),
                access_token: "limited-token".into(),
                scopes: vec!["queue:get-task:*".into()],
                expires: None,
                disabled: false,
            },
        ],
        roles(),
    )
    .unwrap()
}

fn clients() -> Clients {
    clients_with(
        &["queue:*", "assume:worker:*", "auth:create-client:tester/*"],
        KEY,
    )
}

fn get(
    resource: &'static str,
    authorization: Option<&'static str>,
) -> RequestToAuthenticate<'static> {
    RequestToAuthenticate {
        method: "GET",
        resource,
        host: Some(HOST),
        authorization,
        ..RequestToAuthenticate::default()
    }
}

fn refused(result: Result<Authenticated, ApiError>, fragment: &str) {
    let error = result.expect_err("authentication should fail");
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert_eq!(error.status(), 401);
    assert!(
        error.message.contains(fragment),
        "`{}` does not mention `{fragment}`",
        error.message
    );
}

#[test]
fn python_client_request_authenticates() {
    let clients = clients();
    let authenticated = authenticate(&get(TASK, Some(GET_TASK)), &clients, at(TS)).unwrap();
    assert_eq!(authenticated.client_id.as_deref(), Some("tester"));
    assert_eq!(authenticated.scheme, Scheme::Hawk);
    assert_eq!(authenticated.expires, None);
    for scope in ["queue:get-task:x", "queue:ping", "queue:worker-id:any/one"] {
        assert!(authenticated.scopes.satisfies_scope(scope), "{scope}");
    }
    assert!(!authenticated.scopes.satisfies_scope("secrets:get:x"));

    let post = RequestToAuthenticate {
        method: "POST",
        resource: "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ/runs/0/completed",
        ..get(TASK, Some(POST_EMPTY))
    };
    assert!(authenticate(&post, &clients, at(TS)).is_ok());

    let with_body = RequestToAuthenticate {
        method: "POST",
        resource: POST_BODY_TARGET,
        content_type: Some("application/json"),
        body: POST_BODY_JSON.as_bytes(),
        ..get(TASK, Some(POST_BODY))
    };
    assert!(authenticate(&with_body, &clients, at(TS)).is_ok());
}

#[test]
fn timestamps_outside_fifteen_minutes_are_stale() {
    let clients = clients();
    let request = get(TASK, Some(GET_TASK));
    assert!(authenticate(&request, &clients, at(TS + 900)).is_ok());
    assert!(authenticate(&request, &clients, at(TS - 900)).is_ok());
    refused(
        authenticate(&request, &clients, at(TS + 901)),
        "stale timestamp",
    );
    refused(
        authenticate(&request, &clients, at(TS - 901)),
        "stale timestamp",
    );
}

#[test]
fn wrong_token_tampered_mac_or_request_is_refused() {
    let wrong_token = clients_with(&["*"], "some-other-token-some-other-token-some-oth");
    refused(
        authenticate(&get(TASK, Some(GET_TASK)), &wrong_token, at(TS)),
        "bad mac",
    );
    let clients = clients();
    let tampered_mac = GET_TASK.replace("mac=\"a1Y0", "mac=\"a1Y1");
    let tampered_mac: &'static str = Box::leak(tampered_mac.into_boxed_str());
    refused(
        authenticate(&get(TASK, Some(tampered_mac)), &clients, at(TS)),
        "bad mac",
    );
    refused(
        authenticate(
            &get("/api/queue/v1/task/other", Some(GET_TASK)),
            &clients,
            at(TS),
        ),
        "bad mac",
    );
    let other_port = RequestToAuthenticate {
        host: Some("127.0.0.1:40944"),
        ..get(TASK, Some(GET_TASK))
    };
    refused(authenticate(&other_port, &clients, at(TS)), "bad mac");
    let unknown = GET_TASK.replace("id=\"tester\"", "id=\"nobody\"");
    let unknown: &'static str = Box::leak(unknown.into_boxed_str());
    refused(
        authenticate(&get(TASK, Some(unknown)), &clients, at(TS)),
        "not found",
    );
    // The error never shows the MAC the server computed.
    let error = authenticate(&get(TASK, Some(tampered_mac)), &clients, at(TS)).unwrap_err();
    assert!(!error.message.contains("a1Y0cNP07jxhp4gg"));
}

#[test]
fn tampered_payload_is_refused() {
    let clients = clients();
    let request = |content_type, body: &'static str| RequestToAuthenticate {
        method: "POST",
        resource: POST_BODY_TARGET,
        content_type,
        body: body.as_bytes(),
        ..get(TASK, Some(POST_BODY))
    };
    assert!(
        authenticate(
            &request(Some("application/json; charset=utf-8"), POST_BODY_JSON),
            &clients,
            at(TS)
        )
        .is_ok()
    );
    refused(
        authenticate(
            &request(Some("application/json"), "{\"storageType\":\"s3\"}"),
            &clients,
            at(TS),
        ),
        "payload hash",
    );
    refused(
        authenticate(
            &request(Some("text/plain"), POST_BODY_JSON),
            &clients,
            at(TS),
        ),
        "payload hash",
    );
    refused(
        authenticate(&request(None, POST_BODY_JSON), &clients, at(TS)),
        "payload hash",
    );
    // The hash itself is signed: changing it breaks the MAC first.
    let swapped = POST_BODY.replace("hash=\"pT1r", "hash=\"pT1s");
    let swapped: &'static str = Box::leak(swapped.into_boxed_str());
    let request = RequestToAuthenticate {
        authorization: Some(swapped),
        ..request(Some("application/json"), POST_BODY_JSON)
    };
    refused(authenticate(&request, &clients, at(TS)), "bad mac");
}

#[test]
fn authorized_scopes_restrict_and_must_be_held() {
    let authenticated =
        authenticate(&get(TASK, Some(AUTHORIZED_SCOPES)), &clients(), at(TS)).unwrap();
    assert!(
        authenticated
            .scopes
            .satisfies_scope("queue:get-artifact:private/x")
    );
    // The anonymous role comes back after the restriction.
    assert!(authenticated.scopes.satisfies_scope("queue:ping"));
    assert!(!authenticated.scopes.satisfies_scope("queue:get-task:x"));
    assert!(!authenticated.scopes.satisfies_scope("queue:worker-id:x"));

    let lacking = clients_with(&["queue:get-task:*"], KEY);
    refused(
        authenticate(&get(TASK, Some(AUTHORIZED_SCOPES)), &lacking, at(TS)),
        "authorizedScopes",
    );
}

#[test]
fn python_temporary_credentials_authenticate() {
    let clients = clients();
    let unnamed = authenticate(&get(TASK, Some(UNNAMED_TEMPORARY)), &clients, at(TS)).unwrap();
    assert_eq!(unnamed.client_id.as_deref(), Some("tester"));
    assert_eq!(
        unnamed.expires,
        Some(Timestamp::from_millis(1_767_229_200_000))
    );
    for scope in ["queue:get-artifact:x", "queue:worker-id:x", "queue:ping"] {
        assert!(unnamed.scopes.satisfies_scope(scope), "{scope}");
    }
    for scope in ["queue:get-task:x", "queue:worker-id:y"] {
        assert!(!unnamed.scopes.satisfies_scope(scope), "{scope}");
    }

    let named = authenticate(&get(TASK, Some(NAMED_TEMPORARY)), &clients, at(TS)).unwrap();
    assert_eq!(named.client_id.as_deref(), Some("tester/temporary"));
    assert!(named.scopes.satisfies_scope("queue:create-artifact:x/0"));
    assert!(!named.scopes.satisfies_scope("queue:get-task:x"));

    // The issuer must be allowed to create the named client, and hold every scope.
    let no_create = clients_with(&["queue:*", "assume:worker:*"], KEY);
    refused(
        authenticate(&get(TASK, Some(NAMED_TEMPORARY)), &no_create, at(TS)),
        "auth:create-client:tester/temporary",
    );
    let fewer = clients_with(
        &["queue:get-artifact:*", "auth:create-client:tester/*"],
        KEY,
    );
    refused(
        authenticate(&get(TASK, Some(UNNAMED_TEMPORARY)), &fewer, at(TS)),
        "doesn't satisfy all certificate scopes",
    );
}

/// Signs a GET of [`TASK`] at `ts` with a client-side header.
fn signed(id: &str, key: &str, ext: Option<&str>, ts: i64) -> String {
    hawk::client_header(
        &hawk::Signing {
            id,
            key,
            ts,
            nonce: "n0nce",
            hash: None,
            ext,
        },
        &hawk::RequestLine {
            method: "GET",
            resource: TASK,
            host: "127.0.0.1",
            port: 40943,
        },
    )
}

fn authenticate_signed(
    header: &str,
    clients: &Clients,
    now: i64,
) -> Result<Authenticated, ApiError> {
    let request = RequestToAuthenticate {
        method: "GET",
        resource: TASK,
        host: Some(HOST),
        authorization: Some(header),
        ..RequestToAuthenticate::default()
    };
    authenticate(&request, clients, at(now))
}

/// A certificate signed correctly by `issuer_token`, whatever its contents.
fn certificate(
    issuer_token: &str,
    named: Option<(&str, &str)>,
    start: i64,
    expiry: i64,
    scopes: &[&str],
) -> Value {
    let seed = "seedEEEEEEEEEEEEEEEEEEseedFFFFFFFFFFFFFFFFFF";
    let signature = certificate_signature(
        issuer_token,
        &certificate_signing_string(named, seed, &start.to_string(), &expiry.to_string(), scopes),
    );
    let mut certificate = json!({
        "version": 1, "scopes": scopes, "start": start, "expiry": expiry,
        "seed": seed, "signature": signature,
    });
    if let Some((_, issuer)) = named {
        certificate["issuer"] = json!(issuer);
    }
    certificate
}

fn ext_of(certificate: &Value) -> String {
    encoding::encode_base64(json!({ "certificate": certificate }).to_string().as_bytes())
}

fn temporary_key(issuer_token: &str) -> String {
    credentials::temporary_access_token(
        issuer_token,
        "seedEEEEEEEEEEEEEEEEEEseedFFFFFFFFFFFFFFFFFF",
    )
}

#[test]
fn certificate_time_window() {
    let clients = clients();
    let now = TS;
    let ms = |seconds: i64| seconds * 1000;
    let try_window = |start: i64, expiry: i64| {
        let certificate = certificate(KEY, None, start, expiry, &["queue:ping"]);
        let header = signed(
            "tester",
            &temporary_key(KEY),
            Some(&ext_of(&certificate)),
            now,
        );
        authenticate_signed(&header, &clients, now)
    };
    assert!(try_window(ms(now - 60), ms(now + 3600)).is_ok());
    // Five minutes of skew either way.
    assert!(try_window(ms(now + 299), ms(now + 3600)).is_ok());
    refused(try_window(ms(now + 301), ms(now + 3600)), "start > now");
    assert!(try_window(ms(now - 3600), ms(now - 299)).is_ok());
    refused(try_window(ms(now - 3600), ms(now - 301)), "expiry < now");
    // At most 31 days.
    let day = 24 * 3600;
    assert!(try_window(ms(now - day), ms(now + 30 * day)).is_ok());
    refused(
        try_window(ms(now - day), ms(now + 30 * day + 1)),
        "longer than 31 days",
    );
}

#[test]
fn forged_certificates_are_refused() {
    let clients = clients();
    let now = TS;
    let (start, expiry) = ((now - 60) * 1000, (now + 3600) * 1000);
    let attempt = |id: &str, key: &str, certificate: &Value| {
        let header = signed(id, key, Some(&ext_of(certificate)), now);
        authenticate_signed(&header, &clients, now)
    };
    let genuine = certificate(KEY, None, start, expiry, &["queue:ping"]);
    assert!(attempt("tester", &temporary_key(KEY), &genuine).is_ok());

    // More scopes than were signed.
    let mut more = genuine.clone();
    more["scopes"] = json!(["queue:ping", "queue:create-task:*"]);
    refused(
        attempt("tester", &temporary_key(KEY), &more),
        "signature is not valid",
    );
    // A later expiry than was signed.
    let mut later = genuine.clone();
    later["expiry"] = json!(expiry + 1000);
    refused(
        attempt("tester", &temporary_key(KEY), &later),
        "signature is not valid",
    );
    // Signed with a key that is not the issuer's.
    let forged = certificate("guessed", None, start, expiry, &["queue:ping"]);
    refused(
        attempt("tester", &temporary_key("guessed"), &forged),
        "signature is not valid",
    );
    // Genuine certificate, but the request signed with the permanent token.
    refused(attempt("tester", KEY, &genuine), "bad mac");
    // Properly signed by an issuer that lacks what it grants.
    let escalating = certificate(
        "limited-token",
        None,
        start,
        expiry,
        &["queue:create-task:*"],
    );
    refused(
        attempt("limited", &temporary_key("limited-token"), &escalating),
        "doesn't satisfy all certificate scopes",
    );
    // Named credentials under another name than the one signed.
    let named = certificate(
        KEY,
        Some(("tester/one", "tester")),
        start,
        expiry,
        &["queue:ping"],
    );
    assert!(attempt("tester/one", &temporary_key(KEY), &named).is_ok());
    refused(
        attempt("tester/two", &temporary_key(KEY), &named),
        "wrong clientId provided",
    );
    // An issuer naming itself, and a `clientId` without an issuer.
    let mut self_issued = named.clone();
    self_issued["issuer"] = json!("tester/one");
    refused(
        attempt("tester/one", &temporary_key(KEY), &self_issued),
        "must differ from the supplied clientId",
    );
    let mut with_client_id = genuine.clone();
    with_client_id["clientId"] = json!("tester/one");
    refused(
        attempt("tester", &temporary_key(KEY), &with_client_id),
        "clientId must only be used with ext.certificate.issuer",
    );
    // Malformed certificates.
    for (change, message) in [
        (json!({"version": 2}), "version must be 1"),
        (json!({"seed": "short"}), "seed must be 44 characters"),
        (json!({"seed": 5}), "seed must be a string"),
        (json!({"start": "soon"}), "start must be a number"),
        (json!({"expiry": null}), "expiry must be a number"),
        (json!({"scopes": "queue:ping"}), "scopes must be an array"),
        (json!({"scopes": ["tab\t"]}), "array of valid scopes"),
        (json!({"signature": 5}), "signature is not valid"),
    ] {
        let mut broken = genuine.clone();
        for (key, value) in change.as_object().unwrap() {
            broken[key] = value.clone();
        }
        refused(attempt("tester", &temporary_key(KEY), &broken), message);
    }
    refused(
        attempt(
            "tester",
            &temporary_key(KEY),
            &json!(["not", "an", "object"]),
        ),
        "must be a JSON object",
    );
    refused(
        attempt("tester", &temporary_key(KEY), &json!("certificate")),
        "must be a JSON object",
    );
}

#[test]
fn task_credentials_work_for_the_worker() {
    let queue_token = "queue-token-queue-token-queue-token-queue-t";
    let clients = Clients::new(
        [Client {
            client_id: "static/taskcluster/queue".into(),
            access_token: queue_token.into(),
            scopes: vec!["*".into()],
            expires: None,
            disabled: false,
        }],
        roles(),
    )
    .unwrap();
    let queue = Credentials {
        client_id: "static/taskcluster/queue".into(),
        access_token: queue_token.into(),
        certificate: None,
    };
    let run = credentials::ClaimedRun {
        task_id: "dSlITZ4yQgmvxxAi4A8fHQ",
        run_id: 0,
        worker_group: "wg",
        worker_id: "wid",
        taken_until: at(TS + 1200),
    };
    let task_credentials =
        credentials::task_credentials(&run, &["secrets:get:x".into()], &queue, at(TS)).unwrap();
    let ext = credentials::hawk_ext(&task_credentials, None).unwrap();
    let header = signed(
        &task_credentials.client_id,
        &task_credentials.access_token,
        ext.as_deref(),
        TS + 60,
    );
    let authenticated = authenticate_signed(&header, &clients, TS + 60).unwrap();
    assert_eq!(
        authenticated.client_id.as_deref(),
        Some("task-client/dSlITZ4yQgmvxxAi4A8fHQ/0/on/wg/wid/until/1767226800")
    );
    assert_eq!(authenticated.expires, Some(at(TS + 1200)));
    let reclaim = ScopeExpression::scope("queue:reclaim-task:<taskId>/<runId>");
    let params = [("taskId", "dSlITZ4yQgmvxxAi4A8fHQ"), ("runId", "0")];
    assert!(authorize(&authenticated, &reclaim, &params).is_ok());
    assert!(authenticated.scopes.satisfies_scope("secrets:get:x"));
    assert!(
        authorize(
            &authenticated,
            &reclaim,
            &[("taskId", "other"), ("runId", "0")]
        )
        .is_err()
    );
    // Past takenUntil (and the five minutes of grace), they stop working.
    let late = signed(
        &task_credentials.client_id,
        &task_credentials.access_token,
        ext.as_deref(),
        TS + 1200 + 301,
    );
    refused(
        authenticate_signed(&late, &clients, TS + 1200 + 301),
        "expiry < now",
    );
    // And a worker proxying for the task narrows them to the task's scopes.
    let narrowed_ext =
        credentials::hawk_ext(&task_credentials, Some(&["secrets:get:x".to_owned()])).unwrap();
    let narrowed = signed(
        &task_credentials.client_id,
        &task_credentials.access_token,
        narrowed_ext.as_deref(),
        TS + 60,
    );
    let narrowed = authenticate_signed(&narrowed, &clients, TS + 60).unwrap();
    assert!(authorize(&narrowed, &reclaim, &params).is_err());
}

#[test]
fn python_bewits_authenticate() {
    let clients = clients();
    let authenticated = authenticate(&get(BEWIT_TARGET, None), &clients, at(TS)).unwrap();
    assert_eq!(authenticated.client_id.as_deref(), Some("tester"));
    assert_eq!(authenticated.scheme, Scheme::Bewit);
    let head = RequestToAuthenticate {
        method: "HEAD",
        ..get(BEWIT_TARGET, None)
    };
    assert!(authenticate(&head, &clients, at(TS)).is_ok());

    let temporary =
        authenticate(&get(TEMPORARY_BEWIT_TARGET, None), &clients, at(TS + 599)).unwrap();
    assert_eq!(temporary.client_id.as_deref(), Some("tester/temporary"));
    assert!(temporary.scopes.satisfies_scope("queue:create-artifact:x"));
    assert!(!temporary.scopes.satisfies_scope("queue:get-task:x"));
}

/// What the official JS client (npm `taskcluster-client` 55.3.2, Node's `hawk`) sent to a
/// capture server on 127.0.0.1:42861 with `Date.now` fixed to ts 1767225600: no payload
/// hash (the body is not bound), `ext` in standard base64, named temporary credentials
/// `tester/js` it made itself (random seed), with `authorizedScopes`, and a signed URL.
#[test]
fn javascript_client_requests_authenticate() {
    const HOST: &str = "127.0.0.1:42861";
    const POST_TARGET: &str =
        "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ/runs/0/artifacts/public%2Fx.log";
    const POST: &str = "Hawk id=\"tester\", ts=\"1767225600\", nonce=\"aPmjpw\", mac=\"xdx9tPugRqBVhLa8b4K4AWzw6IIcSA843ukG8+cAnvc=\"";
    const TEMPORARY: &str = "Hawk id=\"tester/js\", ts=\"1767225600\", nonce=\"MkdDx-\", ext=\"eyJjZXJ0aWZpY2F0ZSI6eyJ2ZXJzaW9uIjoxLCJzY29wZXMiOlsicXVldWU6Y3JlYXRlLWFydGlmYWN0OioiLCJxdWV1ZTpnZXQtYXJ0aWZhY3Q6cHJpdmF0ZS8rPy8iXSwic3RhcnQiOjE3NjcyMjUzMDAwMDAsImV4cGlyeSI6MTc2NzIyOTIwMDAwMCwic2VlZCI6IkF6enNveXNFUzAtck54V1RkOTZ5Y2dpZEpUcy1QdlJvV1R5VWwzWmVlX0tRIiwic2lnbmF0dXJlIjoiYk9KbTNxQTIyaWtzcnJhaTZhZ2R3UjVuRnhUMFkydjRGeVV5MXJDZExRRT0iLCJpc3N1ZXIiOiJ0ZXN0ZXIifSwiYXV0aG9yaXplZFNjb3BlcyI6WyJxdWV1ZTpnZXQtYXJ0aWZhY3Q6cHJpdmF0ZS8rPy8iXX0=\", mac=\"xWdnPuvMiSlxYHpkevzK5d9MD4JAx8DduFHFOguOqgo=\"";
    const BEWIT: &str = "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ/artifacts/private%2Fa%20b?bewit=dGVzdGVyL2pzXDE3NjcyMjYyMDBcU3dHeDVUVDU4NnhhZnVOMFlIbVNWZVlHM2dLdFQ3RldrQm4xSVNKNHpXQT1cZXlKalpYSjBhV1pwWTJGMFpTSTZleUoyWlhKemFXOXVJam94TENKelkyOXdaWE1pT2xzaWNYVmxkV1U2WTNKbFlYUmxMV0Z5ZEdsbVlXTjBPaW9pTENKeGRXVjFaVHBuWlhRdFlYSjBhV1poWTNRNmNISnBkbUYwWlM4clB5OGlYU3dpYzNSaGNuUWlPakUzTmpjeU1qVXpNREF3TURBc0ltVjRjR2x5ZVNJNk1UYzJOekl5T1RJd01EQXdNQ3dpYzJWbFpDSTZJa0Y2ZW5OdmVYTkZVekF0Y2s1NFYxUmtPVFo1WTJkcFpFcFVjeTFRZGxKdlYxUjVWV3d6V21WbFgwdFJJaXdpYzJsbmJtRjBkWEpsSWpvaVlrOUtiVE54UVRJeWFXdHpjbkpoYVRaaFoyUjNValZ1Um5oVU1Ga3lkalJHZVZWNU1YSkRaRXhSUlQwaUxDSnBjM04xWlhJaU9pSjBaWE4wWlhJaWZTd2lZWFYwYUc5eWFYcGxaRk5qYjNCbGN5STZXeUp4ZFdWMVpUcG5aWFF0WVhKMGFXWmhZM1E2Y0hKcGRtRjBaUzhyUHk4aVhYMD0";
    let clients = clients();
    let post = RequestToAuthenticate {
        method: "POST",
        resource: POST_TARGET,
        host: Some(HOST),
        authorization: Some(POST),
        content_type: Some("application/json"),
        body: br#"{"storageType":"s3"}"#,
        ..RequestToAuthenticate::default()
    };
    // Without a `hash` attribute the body may be anything.
    assert!(authenticate(&post, &clients, at(TS)).is_ok());

    let temporary = RequestToAuthenticate {
        method: "GET",
        resource: TASK,
        authorization: Some(TEMPORARY),
        ..post
    };
    let authenticated = authenticate(&temporary, &clients, at(TS)).unwrap();
    assert_eq!(authenticated.client_id.as_deref(), Some("tester/js"));
    assert!(
        authenticated
            .scopes
            .satisfies_scope("queue:get-artifact:private/+?/")
    );
    // `authorizedScopes` dropped the certificate's other scope.
    assert!(
        !authenticated
            .scopes
            .satisfies_scope("queue:create-artifact:x")
    );

    let bewit = RequestToAuthenticate {
        method: "GET",
        resource: BEWIT,
        host: Some(HOST),
        ..RequestToAuthenticate::default()
    };
    let authenticated = authenticate(&bewit, &clients, at(TS)).unwrap();
    assert_eq!(authenticated.client_id.as_deref(), Some("tester/js"));
    assert_eq!(authenticated.scheme, Scheme::Bewit);
    refused(
        authenticate(&bewit, &clients, at(TS + 600)),
        "bewit expired",
    );
}

#[test]
fn bewits_expire_and_resist_tampering() {
    let clients = clients();
    // Valid until 900 s after creation, to the millisecond, with no skew.
    assert!(
        authenticate(
            &get(BEWIT_TARGET, None),
            &clients,
            Timestamp::from_millis((TS + 900) * 1000 - 1)
        )
        .is_ok()
    );
    refused(
        authenticate(&get(BEWIT_TARGET, None), &clients, at(TS + 900)),
        "bewit expired",
    );
    refused(
        authenticate(&get(TEMPORARY_BEWIT_TARGET, None), &clients, at(TS + 600)),
        "bewit expired",
    );
    // Another resource with the same bewit.
    let moved = BEWIT_TARGET.replace("a%20b.txt", "c.txt");
    let moved: &'static str = Box::leak(moved.into_boxed_str());
    refused(authenticate(&get(moved, None), &clients, at(TS)), "bad mac");
    // Extra query parameters are signed too.
    let extended: &'static str = Box::leak(format!("{BEWIT_TARGET}&x=1").into_boxed_str());
    refused(
        authenticate(&get(extended, None), &clients, at(TS)),
        "bad mac",
    );
    // A later expiry with the old MAC.
    let value = BEWIT_TARGET.split("bewit=").nth(1).unwrap();
    let mut bewit = bewit::Bewit::decode(value).unwrap();
    bewit.exp += 3600;
    let later: &'static str = Box::leak(
        BEWIT_TARGET
            .replace(value, &bewit.encode())
            .into_boxed_str(),
    );
    refused(authenticate(&get(later, None), &clients, at(TS)), "bad mac");
    // Wrong methods, two schemes, a token that is not the client's.
    let post = RequestToAuthenticate {
        method: "POST",
        ..get(BEWIT_TARGET, None)
    };
    refused(
        authenticate(&post, &clients, at(TS)),
        "only valid for GET and HEAD",
    );
    refused(
        authenticate(&get(BEWIT_TARGET, Some(GET_TASK)), &clients, at(TS)),
        "two authentication schemes",
    );
    let wrong_token = clients_with(&["*"], "some-other-token-some-other-token-some-oth");
    refused(
        authenticate(&get(BEWIT_TARGET, None), &wrong_token, at(TS)),
        "bad mac",
    );
    refused(
        authenticate(&get("/api/queue/v1/x?bewit=%%%", None), &clients, at(TS)),
        "invalid bewit",
    );
    let trailing: &'static str = Box::leak(format!("{BEWIT_TARGET}&").into_boxed_str());
    refused(
        authenticate(&get(trailing, None), &clients, at(TS)),
        "malformed bewit parameter",
    );
}

#[test]
fn server_made_bewits_round_trip() {
    let clients = clients();
    let tester = Credentials {
        client_id: "tester".into(),
        access_token: KEY.into(),
        certificate: None,
    };
    let place = bewit::Place {
        resource_without_bewit: "/api/queue/v1/task/x/artifacts/private%2Flog?a=1",
        host: "127.0.0.1",
        port: 40943,
    };
    let target = bewit::sign_resource(&tester, &place, TS + 60).unwrap();
    assert!(target.starts_with("/api/queue/v1/task/x/artifacts/private%2Flog?a=1&bewit="));
    let target: &'static str = Box::leak(target.into_boxed_str());
    let authenticated = authenticate(&get(target, None), &clients, at(TS)).unwrap();
    assert_eq!(authenticated.scheme, Scheme::Bewit);
    // The same as the Python client's for the same inputs.
    let python_place = bewit::Place {
        resource_without_bewit: "/api/queue/v1/task/dSlITZ4yQgmvxxAi4A8fHQ/runs/0/artifacts/private%2Fbuild%2Fa%20b.txt",
        host: "127.0.0.1",
        port: 40943,
    };
    let python_bewit = bewit::Bewit::decode(BEWIT_TARGET.split("bewit=").nth(1).unwrap()).unwrap();
    let ours = bewit::create_with_ext(
        "tester",
        KEY,
        &python_place,
        TS + 900,
        Some("e30=".to_owned()),
    );
    assert_eq!(ours, BEWIT_TARGET.split("bewit=").nth(1).unwrap());
    assert_eq!(bewit::Bewit::decode(&ours).unwrap(), python_bewit);

    // Temporary credentials carry their certificate in the bewit's ext.
    let temporary = create_temporary_credentials_with_seed(
        &tester,
        &TemporaryCredentialsRequest {
            name: Some("tester/download".into()),
            start: at(TS),
            expiry: at(TS + 600),
            scopes: vec!["queue:get-artifact:private/*".into()],
        },
        "seedGGGGGGGGGGGGGGGGGGseedHHHHHHHHHHHHHHHHHH",
    )
    .unwrap();
    let target = bewit::sign_resource(&temporary, &place, TS + 60).unwrap();
    let target: &'static str = Box::leak(target.into_boxed_str());
    let authenticated = authenticate(&get(target, None), &clients, at(TS)).unwrap();
    assert_eq!(authenticated.client_id.as_deref(), Some("tester/download"));
    assert!(
        authenticated
            .scopes
            .satisfies_scope("queue:get-artifact:private/log")
    );
    assert!(!authenticated.scopes.satisfies_scope("queue:get-task:x"));
}

#[test]
fn anonymous_requests_get_the_anonymous_role() {
    let clients = clients();
    let anonymous = authenticate(&get(TASK, None), &clients, at(TS)).unwrap();
    assert_eq!(anonymous, Authenticated::anonymous(&clients));
    assert_eq!(anonymous.scheme, Scheme::None);
    let public = ScopeExpression::scope("queue:get-artifact:<name>");
    assert!(authorize(&anonymous, &public, &[("name", "public/logs/live.log")]).is_ok());
    let error = authorize(&anonymous, &public, &[("name", "private/x")]).unwrap_err();
    assert_eq!(error.code, ErrorCode::InsufficientScopes);
    assert_eq!(error.status(), 403);
    assert_eq!(
        error.message,
        "This request requires Taskcluster credentials that satisfy the following scope expression:\n\n```\nqueue:get-artifact:private/x\n```"
    );
}

#[test]
fn insufficient_scopes_name_what_is_missing() {
    let limited = Authenticated {
        client_id: Some("limited".into()),
        scopes: ScopeSet::new(["queue:create-task:proj/*", "queue:scheduler-id:s"]),
        expires: None,
        scheme: Scheme::Hawk,
    };
    let template = ScopeExpression::all_of([
        ScopeExpression::scope("queue:create-task:<taskQueueId>"),
        ScopeExpression::scope("queue:scheduler-id:<schedulerId>"),
        ScopeExpression::any_of(["queue:route:a", "queue:route:*"]),
    ]);
    let params = [("taskQueueId", "other/type"), ("schedulerId", "s")];
    let error = authorize(&limited, &template, &params).unwrap_err();
    assert_eq!(error.code, ErrorCode::InsufficientScopes);
    assert_eq!(
        error.message,
        "Client ID limited does not have sufficient scopes and is missing the following scopes:\n\n```\n{\n  \"AllOf\": [\n    \"queue:create-task:other/type\",\n    {\n      \"AnyOf\": [\n        \"queue:route:a\",\n        \"queue:route:*\"\n      ]\n    }\n  ]\n}\n```\n\nThis request requires the client to satisfy the following scope expression:\n\n```\n{\n  \"AllOf\": [\n    \"queue:create-task:other/type\",\n    \"queue:scheduler-id:s\",\n    {\n      \"AnyOf\": [\n        \"queue:route:a\",\n        \"queue:route:*\"\n      ]\n    }\n  ]\n}\n```"
    );
    assert_eq!(
        error.details,
        Some(json!({
            "required": {"AllOf": [
                "queue:create-task:other/type",
                "queue:scheduler-id:s",
                {"AnyOf": ["queue:route:a", "queue:route:*"]}
            ]},
            "unsatisfied": {"AllOf": [
                "queue:create-task:other/type",
                {"AnyOf": ["queue:route:a", "queue:route:*"]}
            ]}
        }))
    );
    assert!(
        authorize(
            &limited,
            &template,
            &[("taskQueueId", "proj/x"), ("schedulerId", "s")]
        )
        .is_err()
    );
    let ok = ScopeExpression::all_of(["queue:create-task:<taskQueueId>"]);
    assert!(authorize(&limited, &ok, &[("taskQueueId", "proj/x")]).is_ok());
    // A template parameter the handler forgot is a server error, not a refusal.
    let error = authorize(&limited, &ok, &[]).unwrap_err();
    assert_eq!(error.code, ErrorCode::InternalServerError);
}

#[test]
fn host_and_port_as_taskcluster_derives_them() {
    let derive = |host: Option<&'static str>,
                  port: Option<&'static str>,
                  proto: Option<&'static str>,
                  tls: bool| {
        signed_host_and_port(&RequestToAuthenticate {
            host,
            forwarded_port: port,
            forwarded_proto: proto,
            tls,
            ..RequestToAuthenticate::default()
        })
    };
    let ok = |host: &str, port: u16| Ok((host.to_owned(), port));
    assert_eq!(
        derive(Some("127.0.0.1:8080"), None, None, false),
        ok("127.0.0.1", 8080)
    );
    assert_eq!(
        derive(Some("Queue.Example.com"), None, None, false),
        ok("Queue.Example.com", 80)
    );
    assert_eq!(
        derive(Some("queue.example.com"), None, None, true),
        ok("queue.example.com", 443)
    );
    assert_eq!(
        derive(Some("queue.example.com:8080"), None, Some("https"), false),
        ok("queue.example.com", 443)
    );
    assert_eq!(
        derive(
            Some("queue.example.com"),
            Some("8443"),
            Some("https"),
            false
        ),
        ok("queue.example.com", 8443)
    );
    assert_eq!(
        derive(Some("queue.example.com"), Some("443, 80"), None, false),
        ok("queue.example.com", 443)
    );
    assert_eq!(
        derive(Some("queue.example.com:8080"), None, Some("http"), false),
        ok("queue.example.com", 8080)
    );
    assert_eq!(
        derive(Some("[::1]:8080"), None, None, false),
        ok("[::1]", 8080)
    );
    assert_eq!(derive(Some("[::1]"), None, None, false), ok("[::1]", 80));
    for bad in [
        None,
        Some(""),
        Some(":80"),
        Some("h:"),
        Some("h:80x"),
        Some("h:99999"),
        Some("[::1"),
        Some("[::1]x"),
    ] {
        assert!(derive(bad, None, None, false).is_err(), "{bad:?}");
    }
    assert!(derive(Some("h"), Some("x"), None, false).is_err());
    // Host matters only once there are credentials to check.
    let no_host = RequestToAuthenticate {
        host: None,
        ..get(TASK, None)
    };
    assert!(authenticate(&no_host, &clients(), at(TS)).is_ok());
    let no_host = RequestToAuthenticate {
        host: None,
        ..get(TASK, Some(GET_TASK))
    };
    refused(authenticate(&no_host, &clients(), at(TS)), "Host header");
}

#[test]
fn garbage_is_refused_without_panicking() {
    let clients = clients();
    let ext_header = |ext: &str| {
        format!("Hawk id=\"tester\", ts=\"{TS}\", nonce=\"n\", ext=\"{ext}\", mac=\"bWFj\"")
    };
    for (header, fragment) in [
        ("".to_owned(), "invalid hawk authorization header"),
        ("Bearer abc".to_owned(), "not use the hawk scheme"),
        ("Hawk id=\"tester\"".to_owned(), "missing attributes"),
        (ext_header("%%%"), "failed to parse ext"),
        (ext_header("bm90IGpzb24="), "failed to parse ext"),
        (ext_header("WzFd"), "failed to parse ext"),
        (
            ext_header("eyJjZXJ0aWZpY2F0ZSI6NX0="),
            "must be a JSON object",
        ),
        (
            ext_header("eyJhdXRob3JpemVkU2NvcGVzIjoiYSJ9"),
            "authorizedScopes must be an array",
        ),
        (ext_header("e30="), "bad mac"),
    ] {
        let header: &'static str = Box::leak(header.into_boxed_str());
        refused(
            authenticate(&get(TASK, Some(header)), &clients, at(TS)),
            fragment,
        );
    }

    // Every truncation and many single-byte changes of real headers and bewits: errors
    // (or, rarely, an equivalent header), never a panic.
    let mut inputs: Vec<(String, Option<String>)> = Vec::new();
    for header in [
        GET_TASK,
        NAMED_TEMPORARY,
        UNNAMED_TEMPORARY,
        AUTHORIZED_SCOPES,
    ] {
        for end in 0..header.len() {
            inputs.push((TASK.to_owned(), Some(header[..end].to_owned())));
        }
        for (index, _) in header.char_indices().step_by(3) {
            for replacement in ["\"", "\\", "=", "ü", ",", " ", "A", "\n", "*"] {
                let mut mutated = header.to_owned();
                mutated.replace_range(index..index + 1, replacement);
                inputs.push((TASK.to_owned(), Some(mutated)));
            }
        }
    }
    for target in [BEWIT_TARGET, TEMPORARY_BEWIT_TARGET] {
        for end in 0..target.len() {
            inputs.push((target[..end].to_owned(), None));
        }
        for (index, _) in target.char_indices().step_by(7) {
            for replacement in ["&", "?", "$", "-", "_", "\\", "%"] {
                let mut mutated = target.to_owned();
                mutated.replace_range(index..index + 1, replacement);
                inputs.push((mutated, None));
            }
        }
    }
    for (resource, authorization) in &inputs {
        let request = RequestToAuthenticate {
            method: "GET",
            resource,
            host: Some(HOST),
            authorization: authorization.as_deref(),
            ..RequestToAuthenticate::default()
        };
        let _ = authenticate(&request, &clients, at(TS));
    }
    for (resource, authorization) in &inputs {
        if let Some(authorization) = authorization
            && authorization.len() < GET_TASK.len() / 2
        {
            let request = get(TASK, None);
            let request = RequestToAuthenticate {
                resource,
                authorization: Some(authorization),
                ..request
            };
            assert!(authenticate(&request, &clients, at(TS)).is_err());
        }
    }
}
