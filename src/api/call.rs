//! One API call from the handler's point of view: the request as received, its URL parameters
//! decoded, its body parsed, who made it, and the Taskcluster error body it answers with when
//! something is wrong.
//!
//! Taskcluster's web framework checks a request in a fixed order, and which error a client
//! sees depends on it (reference §1, §2.5b): the body is parsed (a JSON body that does not
//! parse is `MalformedPayload`), then endpoints whose scopes need only URL parameters
//! authenticate and authorize, then URL parameters are matched against their patterns
//! (`InvalidRequestArguments`), then the body against the input schema (`MalformedPayload`
//! for a body not sent as JSON, `InputValidationError`), and only then the handler runs, which
//! authorizes itself when its scopes need more than the URL. [`Call::answer`] checks that the
//! body parses; the handler calls the other steps in that order.
//!
//! The body is never held as a `serde_json::Value` tree: a tree of many small values takes
//! ten to thirty times the bytes of its text. The syntax check reads the text without keeping
//! anything, inputs are read from the text straight into their types, and an error body echoes
//! the text as it came.

use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value};

use super::response::{self, CallInfo};
use crate::auth::{self, Authenticated, RequestToAuthenticate, ScopeExpression};
use crate::model::{ApiError, ErrorCode, Slugid, Timestamp};

/// The request body as the handler receives it: the bytes, or why they could not be read
/// (too large, broken transfer), which the call answers in Taskcluster's error shape.
pub type Body = Result<Bytes, actix_web::Error>;

pub struct Call {
    request: HttpRequest,
    body: Bytes,
    /// Why the body could not be read, answered before anything else.
    unreadable_body: Option<ApiError>,
    info: CallInfo,
    /// When the call arrived; the `time` of its error body.
    pub now: Timestamp,
    /// Authenticated once, on the first authorization.
    authenticated: Option<Authenticated>,
}

impl Call {
    /// A call of the API method `method`; every URL parameter of the route is decoded here.
    pub fn new(method: &'static str, request: HttpRequest, body: Body) -> Call {
        let params: Map<String, Value> = request
            .match_info()
            .iter()
            .map(|(name, raw)| (name.to_owned(), Value::String(decode(raw))))
            .collect();
        let (body, unreadable_body) = match body {
            Ok(body) => (body, None),
            Err(error) => (Bytes::new(), Some(unreadable(&error))),
        };
        Call {
            request,
            body,
            unreadable_body,
            info: CallInfo {
                method,
                params,
                payload: None,
            },
            now: Timestamp::now(),
            authenticated: None,
        }
    }

    /// Runs `handler` after parsing the body, and answers with its reply or its error.
    pub async fn answer<F>(mut self, handler: F) -> HttpResponse
    where
        F: AsyncFnOnce(&mut Call) -> Result<HttpResponse, ApiError>,
    {
        let result = match self.parse_body() {
            Ok(()) => handler(&mut self).await,
            Err(error) => Err(error),
        };
        result.unwrap_or_else(|error| self.error(&error))
    }

    /// Taskcluster's body parser: only a body sent as `application/json` is read; it must be
    /// a JSON object or array. Anything else leaves the payload `{}`. The text is checked, not
    /// kept as a tree.
    fn parse_body(&mut self) -> Result<(), ApiError> {
        if let Some(error) = self.unreadable_body.take() {
            return Err(error);
        }
        if !self.is_json() || self.body.is_empty() {
            return Ok(());
        }
        let text = std::str::from_utf8(&self.body).map_err(|error| {
            ApiError::new(
                ErrorCode::MalformedPayload,
                format!("Failed to parse JSON: {error}"),
            )
        })?;
        let mut parser = serde_json::Deserializer::from_str(text);
        IgnoredAny::deserialize(&mut parser)
            .and_then(|_| parser.end())
            .map_err(|error| {
                ApiError::new(
                    ErrorCode::MalformedPayload,
                    format!("Failed to parse JSON: {error}"),
                )
            })?;
        if !text.trim_start().starts_with(['{', '[']) {
            return Err(ApiError::new(
                ErrorCode::MalformedPayload,
                "Failed to parse JSON: Must be an object or array",
            ));
        }
        self.info.payload = Some(self.body.clone());
        Ok(())
    }

    fn content_type(&self) -> Option<&str> {
        self.request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
    }

    /// Whether the body was sent as `application/json` (parameters such as a charset
    /// allowed). A request without a body has no type at all, as Express's `type-is` sees it.
    fn is_json(&self) -> bool {
        self.content_type().is_some_and(|content_type| {
            content_type
                .split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    /// The decoded URL parameter `name` (empty if the route has none of that name, which only
    /// a handler bug can cause).
    pub fn param(&self, name: &str) -> &str {
        self.info
            .params
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `continuationToken` and `limit` of the query string.
    pub fn page(&self, default_limit: usize) -> Result<super::pagination::Page, ApiError> {
        super::pagination::Page::from_query(self.request.query_string(), default_limit)
    }

    /// The query argument `name`, percent-decoded, if given.
    pub fn query(&self, name: &str) -> Option<String> {
        self.request.query_string().split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }

    /// The parameter `name` as a slugid (`taskId`, `taskGroupId`).
    pub fn slugid_param(&self, name: &str) -> Result<Slugid, ApiError> {
        self.param(name)
            .parse()
            .map_err(|_| self.invalid_param(name, "a slugid"))
    }

    /// `runId`: Taskcluster's pattern `^[1-9]*[0-9]+$` admits any string of digits. Numbers
    /// too large for any run still name a run that does not exist (404), as in Taskcluster.
    pub fn run_id_param(&self) -> Result<u32, ApiError> {
        let text = self.param("runId");
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.invalid_param("runId", "a number"));
        }
        Ok(text.parse().unwrap_or(u32::MAX))
    }

    /// `taskQueueId`: `<provisionerId>/<workerType>`.
    pub fn task_queue_id_param(&self) -> Result<String, ApiError> {
        let text = self.param("taskQueueId");
        match crate::model::task::split_task_queue_id(text) {
            Some(_) => Ok(text.to_owned()),
            None => Err(self.invalid_param(
                "taskQueueId",
                "`<provisionerId>/<workerType>` matching `^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`",
            )),
        }
    }

    fn invalid_param(&self, name: &str, expected: &str) -> ApiError {
        ApiError::new(
            ErrorCode::InvalidRequestArguments,
            format!(
                "Invalid URL parameter `{name}`: `{}` is not {expected}",
                self.param(name)
            ),
        )
    }

    /// The body as the endpoint's input type: it must have been sent as JSON
    /// (`MalformedPayload`), and match the type (`InputValidationError`, naming `schema`).
    pub fn input<T: DeserializeOwned>(&self, schema: &str) -> Result<T, ApiError> {
        self.require_json()?;
        serde_json::from_slice(&self.body).map_err(|error| {
            ApiError::new(
                ErrorCode::InputValidationError,
                format!("the request does not match {schema}: {error}"),
            )
        })
    }

    /// The JSON body's text, after the same content-type check as [`Call::input`].
    pub fn json_text(&self) -> Result<&[u8], ApiError> {
        self.require_json()?;
        Ok(&self.body)
    }

    /// The JSON body as a tree, after the same content-type check as [`Call::input`]; for the
    /// few small bodies read without a type.
    pub fn json_payload(&self) -> Result<Value, ApiError> {
        self.require_json()?;
        serde_json::from_slice(&self.body).map_err(|error| {
            ApiError::new(
                ErrorCode::MalformedPayload,
                format!("Failed to parse JSON: {error}"),
            )
        })
    }

    fn require_json(&self) -> Result<(), ApiError> {
        if self.is_json() && !self.body.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::MalformedPayload,
            format!(
                "Payload must be JSON with content-type: application/json got content-type: {}",
                self.content_type().unwrap_or("null")
            ),
        ))
    }

    /// The body's bytes, for endpoints whose body is not JSON.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body read as `T` where it was sent as JSON and is one, for endpoints that read it
    /// without a schema (`None` otherwise).
    pub fn lenient_input<T: DeserializeOwned>(&self) -> Option<T> {
        self.info
            .payload
            .as_ref()
            .and_then(|text| serde_json::from_slice(text).ok())
    }

    /// Shows the body's `secret` as `(OMITTED)` in error bodies, as Taskcluster's Secrets
    /// service does: a secret's value is never echoed.
    pub fn omit_secret(&mut self) {
        let Some(text) = &self.info.payload else {
            return;
        };
        let omitted = match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(mut object)) => {
                if object.contains_key("secret") {
                    object.insert("secret".into(), Value::String("(OMITTED)".into()));
                }
                serde_json::to_vec(&object).ok().map(Bytes::from)
            }
            _ => None,
        };
        self.info.payload = omitted;
    }

    /// Authenticates the request (once) and checks `template`, rendered with `params`.
    pub fn authorize(
        &mut self,
        clients: &auth::Clients,
        template: &ScopeExpression,
        params: &[(&str, &str)],
    ) -> Result<&Authenticated, ApiError> {
        let authenticated = match self.authenticated.take() {
            Some(authenticated) => authenticated,
            None => self.authenticate(clients)?,
        };
        let authenticated = self.authenticated.insert(authenticated);
        auth::authorize(authenticated, template, params)?;
        Ok(authenticated)
    }

    /// The clientId the call was authenticated as (once it was authorized), to record as the
    /// cause of what it does; `None` before that or without credentials.
    pub fn client_id(&self) -> Option<String> {
        self.authenticated
            .as_ref()
            .and_then(|authenticated| authenticated.client_id.clone())
    }

    /// Authorizes with the URL parameters alone, as Taskcluster does before anything else
    /// for endpoints whose scopes need nothing more (so 401/403 come before 400 and 404).
    pub fn authorize_url(
        &mut self,
        clients: &auth::Clients,
        template: &ScopeExpression,
    ) -> Result<&Authenticated, ApiError> {
        let params: Vec<(String, String)> = self
            .info
            .params
            .iter()
            .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
            .collect();
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        self.authorize(clients, template, &params)
    }

    fn authenticate(&self, clients: &auth::Clients) -> Result<Authenticated, ApiError> {
        let headers = self.request.headers();
        let text = |name: &header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let resource = self
            .request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let request = RequestToAuthenticate {
            method: self.request.method().as_str(),
            resource,
            host: text(&header::HOST)
                .or_else(|| self.request.uri().authority().map(|a| a.as_str())),
            forwarded_port: headers
                .get("x-forwarded-port")
                .and_then(|v| v.to_str().ok()),
            forwarded_proto: headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok()),
            tls: self.request.app_config().secure(),
            authorization: text(&header::AUTHORIZATION),
            content_type: self.content_type(),
            body: &self.body,
        };
        auth::authenticate(&request, clients, self.now)
    }

    /// Taskcluster's error body for `error`, with `WWW-Authenticate: hawk` on a 401.
    pub fn error(&self, error: &ApiError) -> HttpResponse {
        if error.code == ErrorCode::InternalServerError {
            tracing::error!(method = self.info.method, message = %error.message, "internal error");
        }
        // An error about the body's size does not echo the body.
        let mut response = if error.code == ErrorCode::InputTooLarge {
            let info = CallInfo {
                payload: None,
                ..self.info.clone()
            };
            response::error(error, &info, self.now)
        } else {
            response::error(error, &self.info, self.now)
        };
        if error.code == ErrorCode::AuthenticationFailed {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("hawk"));
        }
        response
    }
}

/// A body that could not be read: over the size limit (413 `InputTooLarge`; Taskcluster's
/// framework means to answer so but lets a 500 through), or cut off (400).
fn unreadable(error: &actix_web::Error) -> ApiError {
    match error.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::new(
            ErrorCode::InputTooLarge,
            "The request body is larger than this server accepts",
        ),
        _ => ApiError::new(
            ErrorCode::MalformedPayload,
            format!("Failed to read the request body: {error}"),
        ),
    }
}

/// Percent-decodes a path segment. The router leaves `%2F`, `%25` and `%2B` encoded (so that
/// a slash inside a parameter does not split it); this turns them into their characters. A
/// segment that does not decode to UTF-8 keeps its bytes as replacement characters, which no
/// parameter pattern admits.
fn decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn parameters_are_decoded_and_checked() {
        let request = TestRequest::with_uri("/claim-work/proj%2Dx%2Fworker-1")
            .param("taskQueueId", "proj-x%2Fworker-1")
            .to_http_request();
        let call = Call::new("claimWork", request, Ok(Bytes::new()));
        assert_eq!(call.param("taskQueueId"), "proj-x/worker-1");
        assert_eq!(call.task_queue_id_param().unwrap(), "proj-x/worker-1");

        let request = TestRequest::default()
            .param("taskQueueId", "no-slash")
            .param("runId", "12x")
            .param("taskId", "nope")
            .to_http_request();
        let call = Call::new("reclaimTask", request, Ok(Bytes::new()));
        for error in [
            call.task_queue_id_param().unwrap_err(),
            call.run_id_param().unwrap_err(),
            call.slugid_param("taskId").unwrap_err(),
        ] {
            assert_eq!(error.code, ErrorCode::InvalidRequestArguments);
        }

        let request = TestRequest::default()
            .param("runId", "0099999999999")
            .to_http_request();
        let call = Call::new("reclaimTask", request, Ok(Bytes::new()));
        assert_eq!(call.run_id_param().unwrap(), u32::MAX);
    }

    #[test]
    fn bodies_are_json_only_when_sent_as_json() {
        let json_request = || {
            TestRequest::default()
                .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
                .to_http_request()
        };
        let mut call = Call::new(
            "claimWork",
            json_request(),
            Ok(Bytes::from_static(b"{\"a\":1}")),
        );
        call.parse_body().unwrap();
        assert_eq!(call.json_payload().unwrap()["a"], 1);
        assert_eq!(call.info.payload.as_deref(), Some(&b"{\"a\":1}"[..]));

        let mut call = Call::new(
            "claimWork",
            json_request(),
            Ok(Bytes::from_static(b"{\"a\":")),
        );
        assert_eq!(
            call.parse_body().unwrap_err().code,
            ErrorCode::MalformedPayload
        );
        let mut call = Call::new("claimWork", json_request(), Ok(Bytes::from_static(b"7")));
        assert_eq!(
            call.parse_body().unwrap_err().code,
            ErrorCode::MalformedPayload
        );

        // Not JSON: not parsed, but an endpoint with an input refuses it.
        let request = TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .to_http_request();
        let mut call = Call::new("claimWork", request, Ok(Bytes::from_static(b"{\"a\":")));
        call.parse_body().unwrap();
        assert_eq!(call.info.payload, None);
        let error = call.json_payload().unwrap_err();
        assert_eq!(error.code, ErrorCode::MalformedPayload);
        assert!(error.message.ends_with("text/plain"), "{}", error.message);
        // No body at all is no JSON either.
        let call = Call::new("claimWork", json_request(), Ok(Bytes::new()));
        assert_eq!(
            call.json_payload().unwrap_err().code,
            ErrorCode::MalformedPayload
        );
    }
}
