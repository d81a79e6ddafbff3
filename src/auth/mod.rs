//! Authentication and authorization, as Taskcluster does them, in-process and free of HTTP.
//!
//! The API layer hands [`authenticate`] what it received — method, raw request-target, `Host`
//! (and forwarding headers), `Authorization`, content type and body — and gets the caller's
//! clientId and effective scopes; it then asks [`authorize`] whether those satisfy the
//! endpoint's scope expression. Three ways in, as in Taskcluster:
//!
//! - a Hawk `Authorization` header ([`hawk`]), whose `ext` may carry temporary credentials and
//!   `authorizedScopes` ([`ext`]);
//! - a `bewit` query parameter, a signed URL for GET/HEAD ([`bewit`]);
//! - nothing: the request gets the scopes of the role `anonymous` (as every caller does too).
//!
//! Scopes and expressions are in [`scopes`], roles in [`roles`], the static client table in
//! [`clients`], and making temporary credentials (the task credentials of a claim) in
//! [`credentials`]. Every authentication failure is a 401 `AuthenticationFailed`, every
//! authorization failure a 403 `InsufficientScopes`.

pub mod bewit;
pub mod blob_url;
pub mod clients;
pub mod credentials;
pub(crate) mod encoding;
mod error;
pub mod ext;
pub mod hawk;
pub mod roles;
pub mod scopes;

pub use clients::{Client, Clients};
pub use credentials::Credentials;
pub use error::Error;
pub use roles::{Role, Roles};
pub use scopes::{ScopeExpression, ScopeSet};

use crate::model::{ApiError, ErrorCode, Timestamp};

/// What the HTTP layer received, as received.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestToAuthenticate<'a> {
    /// The HTTP method (any case).
    pub method: &'a str,
    /// The request-target exactly as it arrived: path plus `?query`, not decoded, not
    /// normalized. Clients sign these very bytes.
    pub resource: &'a str,
    /// The `Host` header (for HTTP/2, the `:authority`).
    pub host: Option<&'a str>,
    /// `X-Forwarded-Port`, which overrides the port of `Host` (a proxy terminated the
    /// connection the client signed for).
    pub forwarded_port: Option<&'a str>,
    /// `X-Forwarded-Proto`; `https` means port 443 when there is no `X-Forwarded-Port`.
    pub forwarded_proto: Option<&'a str>,
    /// Whether this connection is TLS: the default port when `Host` has none (443, else 80).
    pub tls: bool,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The raw body (after any transfer or content decoding, before JSON parsing).
    pub body: &'a [u8],
}

/// How a request authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// No credentials: only the anonymous role.
    None,
    Hawk,
    Bewit,
}

/// Who made a request and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The clientId the request was signed as (a temporary credential's name when named);
    /// `None` for unauthenticated requests. For logs and audit, never for access decisions.
    pub client_id: Option<String>,
    /// Effective scopes: the client's (or the certificate's), narrowed by `authorizedScopes`,
    /// with the anonymous role, expanded through the roles.
    pub scopes: ScopeSet,
    /// When these credentials stop working (the earlier of the client's expiry and a
    /// certificate's); anything issued on the strength of them should not outlive it.
    pub expires: Option<Timestamp>,
    pub scheme: Scheme,
}

impl Authenticated {
    pub fn anonymous(clients: &Clients) -> Authenticated {
        Authenticated {
            client_id: None,
            scopes: clients.anonymous_scopes().clone(),
            expires: None,
            scheme: Scheme::None,
        }
    }

    pub fn satisfies(&self, expression: &ScopeExpression) -> bool {
        self.scopes.satisfies(expression)
    }
}

/// The host and port a request was signed for, from `Host` and the forwarding headers, as
/// Taskcluster's API layer derives them: `Host` is `name[:port]` (an IPv6 name keeps its
/// brackets); `X-Forwarded-Port` wins over that port; otherwise `X-Forwarded-Proto: https`
/// means 443; otherwise the connection's default.
pub fn signed_host_and_port(request: &RequestToAuthenticate<'_>) -> Result<(String, u16), Error> {
    let missing = || Error::Host("a valid Host header is required to check a signature".to_owned());
    let host = request.host.ok_or_else(missing)?.trim();
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        let close = bracketed.find(']').ok_or_else(missing)?;
        let (inside, after) = bracketed.split_at(close);
        (&host[..inside.len() + 2], &after[1..])
    } else {
        match host.find(':') {
            Some(colon) => (&host[..colon], &host[colon..]),
            None => (host, ""),
        }
    };
    if name.is_empty() || name == "[]" {
        return Err(missing());
    }
    let host_port = match port.strip_prefix(':') {
        Some(digits) => Some(parse_port(digits, true).ok_or_else(missing)?),
        None if port.is_empty() => None,
        None => return Err(missing()),
    };
    let port = if let Some(forwarded) = request.forwarded_port {
        // JavaScript's `parseInt`: leading digits, the rest ignored (`443, 80` is 443).
        parse_port(forwarded, false)
            .ok_or_else(|| Error::Host("invalid X-Forwarded-Port header".to_owned()))?
    } else if request
        .forwarded_proto
        .is_some_and(|proto| proto == "https")
    {
        443
    } else {
        host_port.unwrap_or(if request.tls { 443 } else { 80 })
    };
    Ok((name.to_owned(), port))
}

/// A port number; `whole` requires nothing but digits, otherwise trailing text is ignored.
fn parse_port(text: &str, whole: bool) -> Option<u16> {
    let text = if whole { text } else { text.trim_start() };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 || (whole && digits_end != text.len()) {
        return None;
    }
    text[..digits_end].parse().ok()
}

/// Authenticates a request at `now`. No credentials is not an error: the result then has the
/// anonymous scopes and [`authorize`] decides.
pub fn authenticate(
    request: &RequestToAuthenticate<'_>,
    clients: &Clients,
    now: Timestamp,
) -> Result<Authenticated, ApiError> {
    authenticate_request(request, clients, now, true)
        .map(|(authenticated, _)| authenticated)
        .map_err(ApiError::from)
}

/// Authenticates the signature of a request another server received, whose body it does not
/// have (Taskcluster's `authenticateHawk`): the payload hash is not checked but returned, for
/// that server to check.
pub fn authenticate_signature(
    request: &RequestToAuthenticate<'_>,
    clients: &Clients,
    now: Timestamp,
) -> Result<(Authenticated, Option<String>), Error> {
    authenticate_request(request, clients, now, false)
}

fn authenticate_request(
    request: &RequestToAuthenticate<'_>,
    clients: &Clients,
    now: Timestamp,
    check_payload: bool,
) -> Result<(Authenticated, Option<String>), Error> {
    let has_bewit = bewit::is_present(request.resource);
    match request.authorization {
        Some(_) if has_bewit => Err(Error::TwoSchemes),
        Some(authorization) => {
            authenticate_hawk(request, authorization, clients, now, check_payload)
        }
        None if has_bewit => match bewit::find(request.resource) {
            Some(found) => Ok((authenticate_bewit(request, &found, clients, now)?, None)),
            None => Err(Error::Bewit("malformed bewit parameter".to_owned())),
        },
        None => Ok((Authenticated::anonymous(clients), None)),
    }
}

fn authenticate_hawk(
    request: &RequestToAuthenticate<'_>,
    authorization: &str,
    clients: &Clients,
    now: Timestamp,
    check_payload: bool,
) -> Result<(Authenticated, Option<String>), Error> {
    let header = hawk::Header::parse(authorization)?;
    let ts = header.timestamp()?;
    let access = effective_access(&header.id, header.ext.as_deref(), clients, now)?;
    let (host, port) = signed_host_and_port(request)?;
    let line = hawk::RequestLine {
        method: request.method,
        resource: request.resource,
        host: &host,
        port,
    };
    if !hawk::mac_is_valid(
        &access.access_token,
        hawk::MacKind::Header,
        &header.artifacts(&line),
        &header.mac,
    ) {
        return Err(Error::BadMac);
    }
    hawk::check_timestamp(ts, now.millis())?;
    if let Some(hash) = &header.hash
        && check_payload
        && !hawk::payload_hash_is_valid(hash, request.content_type, request.body)
    {
        return Err(Error::PayloadHashMismatch);
    }
    let authenticated = Authenticated {
        client_id: Some(header.id),
        scopes: access.scopes,
        expires: access.expires,
        scheme: Scheme::Hawk,
    };
    Ok((authenticated, header.hash))
}

fn authenticate_bewit(
    request: &RequestToAuthenticate<'_>,
    found: &bewit::FoundBewit<'_>,
    clients: &Clients,
    now: Timestamp,
) -> Result<Authenticated, Error> {
    let decoded = bewit::Bewit::decode(found.value)?;
    if !request.method.eq_ignore_ascii_case("GET") && !request.method.eq_ignore_ascii_case("HEAD") {
        return Err(Error::Bewit(
            "bewits are only valid for GET and HEAD requests".to_owned(),
        ));
    }
    decoded.check_expiry(now.millis())?;
    let access = effective_access(&decoded.id, decoded.ext.as_deref(), clients, now)?;
    let (host, port) = signed_host_and_port(request)?;
    let place = bewit::Place {
        resource_without_bewit: &found.resource_without_bewit,
        host: &host,
        port,
    };
    if !decoded.mac_is_valid(&access.access_token, &place) {
        return Err(Error::BadMac);
    }
    Ok(Authenticated {
        client_id: Some(decoded.id),
        scopes: access.scopes,
        expires: access.expires,
        scheme: Scheme::Bewit,
    })
}

/// The key a request signed as `credential_name` must use, and the scopes it then gets.
fn effective_access(
    credential_name: &str,
    ext: Option<&str>,
    clients: &Clients,
    now: Timestamp,
) -> Result<ext::Limited, Error> {
    let ext = ext.map(ext::Ext::decode).transpose()?;
    let issuer_id = match &ext {
        Some(ext) => ext.issuer(credential_name)?.unwrap_or(credential_name),
        None => credential_name,
    };
    let issuer = clients.load(issuer_id, now)?;
    let restricted = ext
        .as_ref()
        .filter(|ext| ext.certificate.is_some() || ext.authorized_scopes.is_some());
    let Some(ext) = restricted else {
        return Ok(ext::Limited {
            access_token: issuer.access_token.clone(),
            scopes: issuer.effective_scopes.clone(),
            expires: issuer.expires,
        });
    };
    let mut limited = ext::limit(
        ext,
        credential_name,
        &ext::Issuer {
            client_id: issuer_id,
            access_token: &issuer.access_token,
            scopes: &issuer.scopes,
            expires: issuer.expires,
        },
        clients.roles(),
        now,
    )?;
    limited.scopes = clients.roles().expand(
        &limited
            .scopes
            .union(&ScopeSet::new([ext::ASSUME_ANONYMOUS])),
    );
    Ok(limited)
}

/// Checks that `authenticated` satisfies `template` rendered with `params` (`<taskId>` and
/// the like). Refused: 403 `InsufficientScopes`, whose message names the missing scopes and
/// the required expression, as Taskcluster's does; its details carry both as JSON.
pub fn authorize(
    authenticated: &Authenticated,
    template: &ScopeExpression,
    params: &[(&str, &str)],
) -> Result<(), ApiError> {
    let required = template
        .render(params)
        .map_err(|error| ApiError::new(ErrorCode::InternalServerError, error.to_string()))?;
    let Some(unsatisfied) = required.unsatisfied(&authenticated.scopes) else {
        return Ok(());
    };
    let message = match &authenticated.client_id {
        Some(client_id) => format!(
            "Client ID {client_id} does not have sufficient scopes and is missing the following scopes:\n\n```\n{unsatisfied}\n```\n\nThis request requires the client to satisfy the following scope expression:\n\n```\n{required}\n```"
        ),
        None => format!(
            "This request requires Taskcluster credentials that satisfy the following scope expression:\n\n```\n{required}\n```"
        ),
    };
    Err(
        ApiError::new(ErrorCode::InsufficientScopes, message).with_details(serde_json::json!({
            "required": required,
            "unsatisfied": unsatisfied,
        })),
    )
}

#[cfg(test)]
mod tests;
