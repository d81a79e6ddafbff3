//! The Hawk `ext` attribute: base64 of a JSON object that may carry a temporary credential's
//! `certificate` and `authorizedScopes`, both of which change the key a request is signed with
//! or the scopes it gets. The checks, their order and their meaning follow Taskcluster's
//! signature validator (`services/auth/src/signaturevalidator.js`), including its JavaScript
//! notion of which values count as present ("truthy").

use serde_json::{Map, Number, Value};

use super::Error;
use super::credentials::{
    MAX_TEMPORARY_CREDENTIALS_MILLIS, certificate_signature, certificate_signing_string,
    temporary_access_token,
};
use super::encoding::{constant_time_eq, decode_base64_lenient};
use super::roles::Roles;
use super::scopes::{ScopeSet, is_valid_scope};
use crate::model::Timestamp;

/// How far a certificate's `start` may lie in the future and its `expiry` in the past: clocks
/// drift, and Taskcluster's clients apply no skew of their own.
const CERTIFICATE_SKEW_MILLIS: f64 = 5.0 * 60.0 * 1000.0;

/// The scope every caller has, so the `anonymous` role applies to everyone.
pub const ASSUME_ANONYMOUS: &str = "assume:anonymous";

/// A decoded `ext`: the members that matter, still as JSON, since their checks come later in
/// a fixed order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ext {
    pub certificate: Option<Value>,
    pub authorized_scopes: Option<Value>,
}

impl Ext {
    /// Decodes base64 (either alphabet, padding optional) of a JSON object.
    pub fn decode(ext: &str) -> Result<Ext, Error> {
        let bytes =
            decode_base64_lenient(ext).ok_or_else(|| Error::Ext("ext is not base64".to_owned()))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|error| Error::Ext(format!("ext is not JSON: {error}")))?;
        let Value::Object(mut object) = value else {
            return Err(Error::Ext("ext must be a JSON object".to_owned()));
        };
        Ok(Ext {
            certificate: object.remove("certificate").filter(is_truthy),
            authorized_scopes: object.remove("authorizedScopes").filter(is_truthy),
        })
    }

    /// The client that signed the certificate, when it names one (`issuer`) — named temporary
    /// credentials; `None` means the credential's own id is the issuer.
    pub fn issuer(&self, credential_name: &str) -> Result<Option<&str>, Error> {
        let Some(issuer) = self
            .certificate
            .as_ref()
            .and_then(|certificate| certificate.get("issuer"))
            .filter(|issuer| is_truthy(issuer))
        else {
            return Ok(None);
        };
        let Value::String(issuer) = issuer else {
            return Err(Error::Certificate(
                "ext.certificate.issuer must be a string".to_owned(),
            ));
        };
        if issuer == credential_name {
            return Err(Error::Certificate(
                "ext.certificate.issuer must differ from the supplied clientId".to_owned(),
            ));
        }
        Ok(Some(issuer))
    }
}

/// What a request may do once its `ext` is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The key the request must be signed with.
    pub access_token: String,
    /// The scopes, not yet with `assume:anonymous` and not expanded.
    pub scopes: ScopeSet,
    pub expires: Option<Timestamp>,
}

/// The issuing client, as the client table has it.
#[derive(Clone, Copy, Debug)]
pub struct Issuer<'a> {
    pub client_id: &'a str,
    pub access_token: &'a str,
    /// Fully expanded.
    pub scopes: &'a ScopeSet,
    pub expires: Option<Timestamp>,
}

/// Applies a certificate and `authorizedScopes` to the issuer's credentials: the certificate
/// replaces key and scopes with the temporary ones, `authorizedScopes` then narrows the scopes.
pub fn limit(
    ext: &Ext,
    credential_name: &str,
    issuer: &Issuer<'_>,
    roles: &Roles,
    now: Timestamp,
) -> Result<Limited, Error> {
    let mut limited = Limited {
        access_token: issuer.access_token.to_owned(),
        scopes: issuer.scopes.clone(),
        expires: issuer.expires,
    };

    if let Some(certificate) = &ext.certificate {
        let certificate = Certificate::check(certificate, now)?;
        if issuer.client_id != credential_name {
            let create_scope = format!("auth:create-client:{credential_name}");
            if !issuer.scopes.satisfies_scope(&create_scope) {
                return Err(Error::Certificate(format!(
                    "ext.certificate issuer `{}` doesn't have `{create_scope}` for supplied clientId",
                    issuer.client_id
                )));
            }
        } else if certificate.has_client_id {
            return Err(Error::Certificate(
                "ext.certificate.clientId must only be used with ext.certificate.issuer".to_owned(),
            ));
        }
        if !issuer.scopes.satisfies_all(&certificate.scopes) {
            return Err(Error::Certificate(format!(
                "ext.certificate issuer `{}` doesn't satisfy all certificate scopes {}; the temporary credentials were not generated correctly",
                issuer.client_id,
                certificate.scopes.join(", ")
            )));
        }
        let named = certificate.issuer.map(|issuer| (credential_name, issuer));
        let expected = certificate_signature(
            issuer.access_token,
            &certificate_signing_string(
                named,
                certificate.seed,
                &certificate.start_text,
                &certificate.expiry_text,
                &certificate.scopes,
            ),
        );
        if !certificate
            .signature
            .is_some_and(|signature| constant_time_eq(signature, &expected))
        {
            return Err(Error::Certificate(if named.is_some() {
                "ext.certificate.signature is not valid, or wrong clientId provided".to_owned()
            } else {
                "ext.certificate.signature is not valid".to_owned()
            }));
        }
        limited.access_token = temporary_access_token(issuer.access_token, certificate.seed);
        let certificate_expires = Timestamp::from_millis(certificate.expiry as i64);
        limited.expires = Some(match limited.expires {
            Some(expires) => expires.min(certificate_expires),
            None => certificate_expires,
        });
        limited.scopes = ScopeSet::new(certificate.scopes);
    }

    if let Some(authorized) = &ext.authorized_scopes {
        let authorized = scope_list(authorized).ok_or_else(|| {
            Error::AuthorizedScopes(
                "ext.authorizedScopes must be an array of valid scopes".to_owned(),
            )
        })?;
        // The anonymous role first, so that scopes it grants may be authorized too.
        let owned = roles.expand(&limited.scopes.union(&ScopeSet::new([ASSUME_ANONYMOUS])));
        let missing: Vec<&str> = authorized
            .iter()
            .filter(|scope| !owned.satisfies_scope(scope))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::AuthorizedScopes(format!(
                "supplied credentials do not satisfy authorizedScopes; they lack: {}",
                missing.join(", ")
            )));
        }
        limited.scopes = ScopeSet::new(authorized);
    }
    Ok(limited)
}

/// A certificate that passed the checks that need no issuer.
struct Certificate<'a> {
    scopes: Vec<String>,
    seed: &'a str,
    start_text: String,
    expiry: f64,
    expiry_text: String,
    signature: Option<&'a str>,
    issuer: Option<&'a str>,
    has_client_id: bool,
}

impl<'a> Certificate<'a> {
    /// Shape, then time window, in Taskcluster's order and with its messages.
    fn check(value: &'a Value, now: Timestamp) -> Result<Certificate<'a>, Error> {
        let invalid = |message: &str| Error::Certificate(message.to_owned());
        let Value::Object(certificate) = value else {
            return Err(invalid("ext.certificate must be a JSON object"));
        };
        if certificate.get("version").and_then(Value::as_f64) != Some(1.0) {
            return Err(invalid("ext.certificate.version must be 1"));
        }
        let Some(Value::String(seed)) = certificate.get("seed") else {
            return Err(invalid("ext.certificate.seed must be a string"));
        };
        // JavaScript counts UTF-16 units.
        if seed.encode_utf16().count() != 44 {
            return Err(invalid("ext.certificate.seed must be 44 characters"));
        }
        let Some(Value::Number(start)) = certificate.get("start") else {
            return Err(invalid("ext.certificate.start must be a number"));
        };
        let Some(Value::Number(expiry)) = certificate.get("expiry") else {
            return Err(invalid("ext.certificate.expiry must be a number"));
        };
        let Some(scopes_value) = certificate.get("scopes").filter(|v| v.is_array()) else {
            return Err(invalid("ext.certificate.scopes must be an array"));
        };
        let scopes = scope_list(scopes_value)
            .ok_or_else(|| invalid("ext.certificate.scopes must be an array of valid scopes"))?;

        let now = now.millis() as f64;
        let (start_millis, expiry_millis) = (number_value(start), number_value(expiry));
        if start_millis > now + CERTIFICATE_SKEW_MILLIS {
            return Err(invalid("ext.certificate.start > now"));
        }
        if expiry_millis < now - CERTIFICATE_SKEW_MILLIS {
            return Err(invalid("ext.certificate.expiry < now"));
        }
        if expiry_millis - start_millis > MAX_TEMPORARY_CREDENTIALS_MILLIS as f64 {
            return Err(invalid("ext.certificate cannot last longer than 31 days"));
        }
        Ok(Certificate {
            scopes,
            seed,
            start_text: number_as_javascript_prints_it(start),
            expiry: expiry_millis,
            expiry_text: number_as_javascript_prints_it(expiry),
            signature: certificate.get("signature").and_then(Value::as_str),
            issuer: issuer_of(certificate),
            has_client_id: certificate.contains_key("clientId"),
        })
    }
}

/// The issuer of a certificate, if truthy (already checked to be a string by [`Ext::issuer`]).
fn issuer_of(certificate: &Map<String, Value>) -> Option<&str> {
    certificate
        .get("issuer")
        .filter(|issuer| is_truthy(issuer))
        .and_then(Value::as_str)
}

/// An array of valid scopes, or `None`.
fn scope_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|scope| match scope {
            Value::String(scope) if is_valid_scope(scope) => Some(scope.clone()),
            _ => None,
        })
        .collect()
}

fn number_value(number: &Number) -> f64 {
    number.as_f64().unwrap_or(f64::NAN)
}

/// A JSON number as JavaScript's `String(n)` prints it, for the numbers a valid certificate can
/// hold (milliseconds near now): integers without a fraction, others with the shortest
/// round-tripping decimals, which is also what Rust prints for them.
fn number_as_javascript_prints_it(number: &Number) -> String {
    if let Some(integer) = number.as_i64() {
        return integer.to_string();
    }
    let value = number_value(number);
    if value.fract() == 0.0 && value.abs() < 1e21 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

/// JavaScript truthiness: `null`, `false`, `0` and `""` count as absent.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|n| n != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::encoding::encode_base64;
    use serde_json::json;

    fn encode(value: &Value) -> String {
        encode_base64(value.to_string().as_bytes())
    }

    #[test]
    fn decodes_either_alphabet_and_refuses_garbage() {
        // `{"authorizedScopes":["?>?>"]}`: its base64 holds `+` and `/` (or `-` and `_`).
        let standard = "eyJhdXRob3JpemVkU2NvcGVzIjpbIj8+Pz4iXX0=";
        let url_safe = "eyJhdXRob3JpemVkU2NvcGVzIjpbIj8-Pz4iXX0";
        for ext in [standard, url_safe] {
            assert_eq!(
                Ext::decode(ext).unwrap().authorized_scopes,
                Some(json!(["?>?>"]))
            );
        }
        assert_eq!(Ext::decode("e30=").unwrap(), Ext::default());
        assert!(matches!(Ext::decode("e30*"), Err(Error::Ext(_))));
        assert!(matches!(Ext::decode("bm90IGpzb24="), Err(Error::Ext(_))));
        for not_an_object in [json!(null), json!([]), json!("x"), json!(3)] {
            assert!(matches!(
                Ext::decode(&encode(&not_an_object)),
                Err(Error::Ext(_))
            ));
        }
        // Falsy members count as absent, as in JavaScript; an empty array does not.
        let ext = Ext::decode(&encode(
            &json!({"certificate": false, "authorizedScopes": []}),
        ))
        .unwrap();
        assert_eq!(ext.certificate, None);
        assert_eq!(ext.authorized_scopes, Some(json!([])));
    }

    #[test]
    fn issuer_must_be_another_client() {
        let ext = |certificate: Value| Ext {
            certificate: Some(certificate),
            authorized_scopes: None,
        };
        assert_eq!(
            ext(json!({"issuer": "root"})).issuer("me"),
            Ok(Some("root"))
        );
        assert_eq!(ext(json!({"issuer": ""})).issuer("me"), Ok(None));
        assert_eq!(ext(json!({})).issuer("me"), Ok(None));
        assert_eq!(ext(json!("text")).issuer("me"), Ok(None));
        assert!(ext(json!({"issuer": "me"})).issuer("me").is_err());
        assert!(ext(json!({"issuer": 7})).issuer("me").is_err());
    }

    #[test]
    fn javascript_number_text() {
        let text = |value: Value| match value {
            Value::Number(number) => number_as_javascript_prints_it(&number),
            _ => unreachable!(),
        };
        assert_eq!(text(json!(1767225300000_i64)), "1767225300000");
        assert_eq!(text(json!(1767225300000.0)), "1767225300000");
        assert_eq!(text(json!(1767225300000.5)), "1767225300000.5");
        assert_eq!(text(json!(-3)), "-3");
    }
}
