//! Credentials, and temporary credentials made the way Taskcluster's clients make them.
//!
//! Temporary credentials are a certificate signed by an issuing client, plus an access token
//! derived from the issuer's token and the certificate's random seed, so the server can check
//! them without storing anything. The queue issues them to a worker on every claim and reclaim
//! (reference §4.2), signed with the queue's own credentials; [`ext`](super::ext) checks them.
//!
//! The certificate signature is HMAC-SHA256, keyed with the issuer's access token, over these
//! lines joined by `\n` (no final newline): `version:1`, then for *named* credentials
//! `clientId:<name>` and `issuer:<issuer>`, then `seed:<seed>`, `start:<ms>`, `expiry:<ms>`,
//! `scopes:` and one line per scope. The temporary access token is the URL-safe, unpadded
//! base64 of HMAC-SHA256(issuer's access token, seed).

use serde::{Deserialize, Serialize};

use super::encoding::{encode_base64, encode_base64_url_no_pad, hmac_sha256};
use super::scopes::is_valid_scope;
use crate::model::{Slugid, Timestamp};

/// Temporary credentials may last at most this long (`expiry − start`).
pub const MAX_TEMPORARY_CREDENTIALS_MILLIS: i64 = 31 * 24 * 60 * 60 * 1000;

/// A client's credentials, in Taskcluster's JSON shape (`task-credentials.yml` when the
/// certificate is present). `certificate` is the certificate as a JSON *string*.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub client_id: String,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// Why temporary credentials could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "temporary credentials cannot be used to make new temporary credentials; the issuer must have no certificate"
    )]
    IssuerIsTemporary,
    #[error("temporary credentials cannot span more than 31 days")]
    TooLong,
    #[error("the name of temporary credentials must differ from the issuer's clientId")]
    NameIsIssuer,
    #[error("`{0}` is not a valid scope")]
    InvalidScope(String),
    #[error("the certificate of these credentials is not a JSON object")]
    InvalidCertificate,
}

/// What temporary credentials to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemporaryCredentialsRequest {
    /// The clientId of *named* temporary credentials; `None` makes unnamed ones, which carry the
    /// issuer's clientId.
    pub name: Option<String>,
    pub start: Timestamp,
    pub expiry: Timestamp,
    pub scopes: Vec<String>,
}

/// The certificate as it is serialized, fields in the order the JS client writes them.
#[derive(Serialize)]
struct CertificateJson<'a> {
    version: u32,
    scopes: &'a [String],
    start: i64,
    expiry: i64,
    seed: &'a str,
    signature: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
}

/// The text a certificate signature covers; `named` is `(temporary clientId, issuer)` for
/// named credentials. `start` and `expiry` are the certificate's numbers as JavaScript prints
/// them (see [`ext`](super::ext)).
pub fn certificate_signing_string<S: AsRef<str>>(
    named: Option<(&str, &str)>,
    seed: &str,
    start: &str,
    expiry: &str,
    scopes: &[S],
) -> String {
    let mut lines: Vec<&str> = Vec::with_capacity(6 + scopes.len());
    let named_lines;
    lines.push("version:1");
    if let Some((client_id, issuer)) = named {
        named_lines = [format!("clientId:{client_id}"), format!("issuer:{issuer}")];
        lines.extend(named_lines.iter().map(String::as_str));
    }
    let seed_line = format!("seed:{seed}");
    let start_line = format!("start:{start}");
    let expiry_line = format!("expiry:{expiry}");
    lines.extend([
        seed_line.as_str(),
        start_line.as_str(),
        expiry_line.as_str(),
        "scopes:",
    ]);
    lines.extend(scopes.iter().map(AsRef::as_ref));
    lines.join("\n")
}

/// base64(HMAC-SHA256(issuer's access token, signing string)).
pub fn certificate_signature(issuer_access_token: &str, signing_string: &str) -> String {
    encode_base64(&hmac_sha256(issuer_access_token, signing_string.as_bytes()))
}

/// The access token of temporary credentials with this `seed`.
pub fn temporary_access_token(issuer_access_token: &str, seed: &str) -> String {
    encode_base64_url_no_pad(&hmac_sha256(issuer_access_token, seed.as_bytes()))
}

/// A fresh 44-character seed: two slugids.
pub fn random_seed() -> String {
    format!("{}{}", Slugid::nice(), Slugid::nice())
}

/// Makes temporary credentials signed by `issuer`, with a random seed.
pub fn create_temporary_credentials(
    issuer: &Credentials,
    request: &TemporaryCredentialsRequest,
) -> Result<Credentials, Error> {
    create_temporary_credentials_with_seed(issuer, request, &random_seed())
}

/// Makes temporary credentials with the given `seed` (which must be secret and random; this
/// form exists for tests and reproducible vectors).
pub fn create_temporary_credentials_with_seed(
    issuer: &Credentials,
    request: &TemporaryCredentialsRequest,
    seed: &str,
) -> Result<Credentials, Error> {
    if issuer.certificate.is_some() {
        return Err(Error::IssuerIsTemporary);
    }
    if request
        .expiry
        .millis()
        .saturating_sub(request.start.millis())
        > MAX_TEMPORARY_CREDENTIALS_MILLIS
    {
        return Err(Error::TooLong);
    }
    if request.name.as_deref() == Some(issuer.client_id.as_str()) {
        return Err(Error::NameIsIssuer);
    }
    if let Some(scope) = request.scopes.iter().find(|scope| !is_valid_scope(scope)) {
        return Err(Error::InvalidScope(scope.clone()));
    }
    let named = request
        .name
        .as_deref()
        .map(|name| (name, issuer.client_id.as_str()));
    let start = request.start.millis();
    let expiry = request.expiry.millis();
    let signing_string = certificate_signing_string(
        named,
        seed,
        &start.to_string(),
        &expiry.to_string(),
        &request.scopes,
    );
    let signature = certificate_signature(&issuer.access_token, &signing_string);
    let certificate = CertificateJson {
        version: 1,
        scopes: &request.scopes,
        start,
        expiry,
        seed,
        signature: &signature,
        issuer: named.map(|(_, issuer)| issuer),
    };
    Ok(Credentials {
        client_id: request
            .name
            .clone()
            .unwrap_or_else(|| issuer.client_id.clone()),
        access_token: temporary_access_token(&issuer.access_token, seed),
        certificate: Some(
            serde_json::to_string(&certificate).map_err(|_| Error::InvalidCertificate)?,
        ),
    })
}

/// The run a worker claimed, for the credentials the queue gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimedRun<'a> {
    pub task_id: &'a str,
    pub run_id: u32,
    pub worker_group: &'a str,
    pub worker_id: &'a str,
    pub taken_until: Timestamp,
}

impl ClaimedRun<'_> {
    /// `task-client/<taskId>/<runId>/on/<workerGroup>/<workerId>/until/<takenUntil in seconds>`,
    /// the seconds printed as JavaScript prints `ms / 1000` (`1767226800`, `1767226800.5`).
    pub fn client_id(&self) -> String {
        format!(
            "task-client/{}/{}/on/{}/{}/until/{}",
            self.task_id,
            self.run_id,
            self.worker_group,
            self.worker_id,
            seconds_as_javascript_prints_them(self.taken_until.millis())
        )
    }

    /// The scopes of the run's credentials: reclaim, resolve and create artifacts for this
    /// run, then the task's own scopes.
    pub fn scopes(&self, task_scopes: &[String]) -> Vec<String> {
        let run = format!("{}/{}", self.task_id, self.run_id);
        [
            format!("queue:reclaim-task:{run}"),
            format!("queue:resolve-task:{run}"),
            format!("queue:create-artifact:{run}"),
        ]
        .into_iter()
        .chain(task_scopes.iter().cloned())
        .collect()
    }
}

/// The credentials issued with a claim or reclaim: named temporary credentials from `now` to
/// `takenUntil`, signed with the queue's own (permanent) credentials.
pub fn task_credentials(
    run: &ClaimedRun<'_>,
    task_scopes: &[String],
    queue: &Credentials,
    now: Timestamp,
) -> Result<Credentials, Error> {
    create_temporary_credentials(
        queue,
        &TemporaryCredentialsRequest {
            name: Some(run.client_id()),
            start: now,
            expiry: run.taken_until,
            scopes: run.scopes(task_scopes),
        },
    )
}

/// `millis / 1000` as JavaScript's `Number#toString` prints it: no fraction when whole,
/// otherwise the shortest decimals.
fn seconds_as_javascript_prints_them(millis: i64) -> String {
    let sign = if millis < 0 { "-" } else { "" };
    let millis = millis.unsigned_abs();
    let (seconds, fraction) = (millis / 1000, millis % 1000);
    if fraction == 0 {
        format!("{sign}{seconds}")
    } else {
        let digits = format!("{fraction:03}");
        format!("{sign}{seconds}.{}", digits.trim_end_matches('0'))
    }
}

/// The Hawk `ext` a client sends with these credentials: base64 of `{"certificate": {…},
/// "authorizedScopes": […]}` (either part only when there is one), `None` when there is
/// nothing to say. Standard base64, as the JS client sends it.
pub fn hawk_ext(
    credentials: &Credentials,
    authorized_scopes: Option<&[String]>,
) -> Result<Option<String>, Error> {
    let mut ext = serde_json::Map::new();
    if let Some(certificate) = &credentials.certificate {
        let certificate: serde_json::Value =
            serde_json::from_str(certificate).map_err(|_| Error::InvalidCertificate)?;
        if !certificate.is_object() {
            return Err(Error::InvalidCertificate);
        }
        ext.insert("certificate".to_owned(), certificate);
    }
    if let Some(scopes) = authorized_scopes {
        ext.insert("authorizedScopes".to_owned(), serde_json::json!(scopes));
    }
    if ext.is_empty() {
        return Ok(None);
    }
    let json = serde_json::Value::Object(ext).to_string();
    Ok(Some(encode_base64(json.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn tester() -> Credentials {
        Credentials {
            client_id: "tester".to_owned(),
            access_token: "no-secret-tester-token-0123456789abcdefghij".to_owned(),
            certificate: None,
        }
    }

    fn certificate_json(credentials: &Credentials) -> Value {
        serde_json::from_str(credentials.certificate.as_deref().unwrap()).unwrap()
    }

    /// Made by the official Python client, `taskcluster.createTemporaryCredentials('tester',
    /// <token>, start, expiry, scopes[, name])` with its seed generator fixed, start
    /// 2025-12-31T23:55:00Z and expiry 2026-01-01T01:00:00Z. Our credentials must be the same
    /// bytes: same access token, same signature (the certificate's field order differs, which
    /// does not matter to anyone).
    #[test]
    fn same_as_the_python_client() {
        let start = Timestamp::from_millis(1_767_225_300_000);
        let expiry = Timestamp::from_millis(1_767_229_200_000);

        let unnamed = create_temporary_credentials_with_seed(
            &tester(),
            &TemporaryCredentialsRequest {
                name: None,
                start,
                expiry,
                scopes: vec!["queue:get-artifact:*".into(), "assume:worker:x".into()],
            },
            "seedAAAAAAAAAAAAAAAAAAseedBBBBBBBBBBBBBBBBBB",
        )
        .unwrap();
        assert_eq!(unnamed.client_id, "tester");
        assert_eq!(
            unnamed.access_token,
            "su863-OX_iy4WlTjkdqkEWnxBwiJnho3DZTlo-r2-cI"
        );
        assert_eq!(
            certificate_json(&unnamed),
            json!({
                "version": 1,
                "scopes": ["queue:get-artifact:*", "assume:worker:x"],
                "start": 1767225300000_i64,
                "expiry": 1767229200000_i64,
                "seed": "seedAAAAAAAAAAAAAAAAAAseedBBBBBBBBBBBBBBBBBB",
                "signature": "QOHG+7/G25yEHkBQtNWiN66+qh4pcv0cbxtgi1pVMOU="
            })
        );

        let named = create_temporary_credentials_with_seed(
            &tester(),
            &TemporaryCredentialsRequest {
                name: Some("tester/temporary".into()),
                start,
                expiry,
                scopes: vec!["queue:create-artifact:*".into()],
            },
            "seedCCCCCCCCCCCCCCCCCCseedDDDDDDDDDDDDDDDDDD",
        )
        .unwrap();
        assert_eq!(named.client_id, "tester/temporary");
        assert_eq!(
            named.access_token,
            "yVWO3V8uEuThSoWIe2qX_EkPF2-JbuHo-UaZAlaezAE"
        );
        assert_eq!(
            certificate_json(&named),
            json!({
                "version": 1,
                "scopes": ["queue:create-artifact:*"],
                "start": 1767225300000_i64,
                "expiry": 1767229200000_i64,
                "seed": "seedCCCCCCCCCCCCCCCCCCseedDDDDDDDDDDDDDDDDDD",
                "issuer": "tester",
                "signature": "PnAAg7dupjqUjyaKDg9McDVgZ5aI5l91bPle6EA9E7M="
            })
        );
        // The field order is the JS client's.
        assert!(
            named
                .certificate
                .as_deref()
                .unwrap()
                .starts_with("{\"version\":1,\"scopes\":[")
        );
    }

    #[test]
    fn task_credentials_are_named_for_the_run() {
        let queue = Credentials {
            client_id: "static/taskcluster/queue".into(),
            access_token: "queue-token-queue-token-queue-token-queue-t".into(),
            certificate: None,
        };
        let run = ClaimedRun {
            task_id: "dSlITZ4yQgmvxxAi4A8fHQ",
            run_id: 2,
            worker_group: "us-east-1",
            worker_id: "i-0123",
            taken_until: Timestamp::from_millis(1_767_226_800_000),
        };
        let now = Timestamp::from_millis(1_767_225_600_000);
        let credentials =
            task_credentials(&run, &["secrets:get:project/x".into()], &queue, now).unwrap();
        assert_eq!(
            credentials.client_id,
            "task-client/dSlITZ4yQgmvxxAi4A8fHQ/2/on/us-east-1/i-0123/until/1767226800"
        );
        let certificate = certificate_json(&credentials);
        assert_eq!(
            certificate["scopes"],
            json!([
                "queue:reclaim-task:dSlITZ4yQgmvxxAi4A8fHQ/2",
                "queue:resolve-task:dSlITZ4yQgmvxxAi4A8fHQ/2",
                "queue:create-artifact:dSlITZ4yQgmvxxAi4A8fHQ/2",
                "secrets:get:project/x"
            ])
        );
        assert_eq!(certificate["start"], json!(1_767_225_600_000_i64));
        assert_eq!(certificate["expiry"], json!(1_767_226_800_000_i64));
        assert_eq!(certificate["issuer"], json!("static/taskcluster/queue"));
        let seed = certificate["seed"].as_str().unwrap();
        assert_eq!(seed.len(), 44);
        assert_eq!(
            credentials.access_token,
            temporary_access_token(&queue.access_token, seed)
        );
        // The JSON shape of `task-credentials.yml`: the certificate is a string.
        let json = serde_json::to_value(&credentials).unwrap();
        assert!(json["certificate"].is_string());
        assert_eq!(json.as_object().unwrap().len(), 3);
        // Two claims never share a seed.
        let again = task_credentials(&run, &[], &queue, now).unwrap();
        assert_ne!(again.access_token, credentials.access_token);
    }

    #[test]
    fn fractional_taken_until_prints_like_javascript() {
        for (millis, text) in [
            (1_767_226_800_000, "1767226800"),
            (1_767_226_800_500, "1767226800.5"),
            (1_767_226_800_120, "1767226800.12"),
            (1_767_226_800_007, "1767226800.007"),
            (0, "0"),
            (-1_500, "-1.5"),
        ] {
            assert_eq!(seconds_as_javascript_prints_them(millis), text);
        }
    }

    #[test]
    fn refuses_what_the_clients_refuse() {
        let start = Timestamp::from_millis(1_767_225_600_000);
        let request = |name: Option<&str>, days: i64, scope: &str| TemporaryCredentialsRequest {
            name: name.map(str::to_owned),
            start,
            expiry: start.plus_millis(days * 24 * 3600 * 1000),
            scopes: vec![scope.to_owned()],
        };
        assert!(create_temporary_credentials(&tester(), &request(None, 31, "a")).is_ok());
        assert_eq!(
            create_temporary_credentials(&tester(), &request(None, 32, "a")),
            Err(Error::TooLong)
        );
        assert_eq!(
            create_temporary_credentials(&tester(), &request(Some("tester"), 1, "a")),
            Err(Error::NameIsIssuer)
        );
        assert_eq!(
            create_temporary_credentials(&tester(), &request(None, 1, "a\nb")),
            Err(Error::InvalidScope("a\nb".into()))
        );
        let temporary = create_temporary_credentials(&tester(), &request(None, 1, "a")).unwrap();
        assert_eq!(
            create_temporary_credentials(&temporary, &request(None, 1, "a")),
            Err(Error::IssuerIsTemporary)
        );
    }

    #[test]
    fn hawk_ext_carries_certificate_and_authorized_scopes() {
        assert_eq!(hawk_ext(&tester(), None), Ok(None));
        let ext = hawk_ext(&tester(), Some(&["a:b".to_owned()]))
            .unwrap()
            .unwrap();
        assert_eq!(ext, "eyJhdXRob3JpemVkU2NvcGVzIjpbImE6YiJdfQ==");
        let temporary = Credentials {
            certificate: Some("{\"version\":1}".into()),
            ..tester()
        };
        assert_eq!(
            hawk_ext(&temporary, None).unwrap().unwrap(),
            "eyJjZXJ0aWZpY2F0ZSI6eyJ2ZXJzaW9uIjoxfX0="
        );
        let broken = Credentials {
            certificate: Some("not json".into()),
            ..tester()
        };
        assert_eq!(hawk_ext(&broken, None), Err(Error::InvalidCertificate));
    }
}
