//! The REST engine (`--engine rest`, Cloudomation's REST task): one HTTP call per task,
//! `schemas/rest-payload.json`. It uses the worker's own HTTP client (awc over rustls), with a
//! TLS configuration of the call's own when the payload brings a private CA (`cacert`).
//! Header and cookie values may be read from secrets; the log shows the method, the URL and
//! the answer's status, never what was sent.

use std::time::{Duration, Instant};

use awc::http::Method;
use awc::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::calls::{self, Ended};
use super::payload::RestPayload;
use super::resolution::{Outcome, Problem};
use super::secrets::Secrets;
use super::task_run::RunContext;
use crate::client::tls;

/// The largest answer a REST task reads (it becomes the task's outputs).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The request, ready to send: everything read from the payload and its secrets.
struct Request {
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Vec<u8>>,
    client: awc::Client,
}

pub async fn execute(run: &mut RunContext) -> Outcome {
    let payload = match RestPayload::read(&run.definition["payload"]) {
        Ok(payload) => payload,
        Err(invalid) => return run.malformed_payload(&invalid),
    };
    let request = match prepare(run, &payload).await {
        Ok(request) => request,
        Err(problem) => return calls::not_started(run, problem),
    };
    run.log
        .info(&format!("Calling: {} {}", request.method, payload.url));
    calls::run(run, payload.max_run_time, call(&payload, request)).await
}

/// Reads the payload's secrets, headers, cookies, body and CA into a request.
async fn prepare(run: &RunContext, payload: &RestPayload) -> Result<Request, Problem> {
    let malformed = Problem::MalformedPayload;
    let method = Method::from_bytes(payload.method.as_bytes()).map_err(|_| {
        malformed(format!(
            "payload/method: `{}` is not a method",
            payload.method
        ))
    })?;
    let mut secrets = Secrets::default();
    let mut headers = Vec::new();
    for (name, value) in &payload.headers {
        let value = secrets.string(run, value).await?;
        headers.push(header(name, &value, "headers")?);
    }
    let mut cookies = Vec::new();
    for (name, value) in &payload.cookies {
        cookies.push(format!("{name}={}", secrets.string(run, value).await?));
    }
    if !cookies.is_empty() {
        // Added to a Cookie header the payload gives, as one header.
        let given = headers.iter().position(|(name, _)| name == header::COOKIE);
        let given = given.map(|index| headers.remove(index).1);
        if let Some(given) = given.as_ref().and_then(|value| value.to_str().ok()) {
            cookies.insert(0, given.to_owned());
        }
        headers.push(header("cookie", &cookies.join("; "), "cookies")?);
    }
    let body = match &payload.data {
        None => None,
        Some(Value::String(text)) => Some(text.clone().into_bytes()),
        Some(data) => {
            if !headers.iter().any(|(name, _)| name == header::CONTENT_TYPE) {
                headers.push((
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ));
            }
            Some(data.to_string().into_bytes())
        }
    };
    let tls = match &payload.cacert {
        Some(pem) => Some(
            tls::config_trusting(pem)
                .map_err(|error| malformed(format!("payload/cacert: {error}")))?,
        ),
        // Without roots of the system's an https:// call cannot be checked; an http:// one
        // needs none.
        None => tls::config().ok(),
    };
    let mut connector = awc::Connector::new().limit(1);
    if let Some(tls) = tls {
        connector = connector.rustls_0_23(tls);
    }
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(payload.max_run_time))
        .finish();
    Ok(Request {
        method,
        headers,
        body,
        client,
    })
}

/// A header of the request; the message names it but never shows its value, which may be
/// a secret's.
fn header(name: &str, value: &str, field: &str) -> Result<(HeaderName, HeaderValue), Problem> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        Problem::MalformedPayload(format!("payload/{field}: `{name}` is not a header name"))
    })?;
    let value = HeaderValue::from_str(value).map_err(|_| {
        Problem::MalformedPayload(format!(
            "payload/{field}: the value of `{name}` is not a valid header value"
        ))
    })?;
    Ok((name, value))
}

async fn call(payload: &RestPayload, request: Request) -> Ended {
    let started = Instant::now();
    let mut sending = request.client.request(request.method, &payload.url);
    for (name, value) in request.headers {
        sending = sending.insert_header((name, value));
    }
    let sent = match request.body {
        Some(body) => sending.send_body(body).await,
        None => sending.send().await,
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            return Ended::Failed {
                reason: format!("calling {}: {error}", payload.url),
                outputs: None,
            };
        }
    };
    let body = match response.body().limit(MAX_ANSWER_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            return Ended::Failed {
                reason: format!("reading the answer of {}: {error}", payload.url),
                outputs: None,
            };
        }
    };
    let status = response.status();
    let outputs = outputs(status.as_u16(), response.headers(), &body);
    if payload.expects(status.as_u16()) {
        Ended::Done(outputs)
    } else {
        Ended::Failed {
            reason: format!(
                "the answer's status is {status}, not the expected {} (after {:.3} s)",
                payload.expected(),
                started.elapsed().as_secs_f64()
            ),
            outputs: Some(outputs),
        }
    }
}

/// Cloudomation's outputs of a REST task: `status_code`, `headers` (a repeated header's
/// values joined by `, `), `cookies` (name → value of each Set-Cookie), `encoding` (the
/// answer's charset, if it names one) and `json` or `text`.
fn outputs(status: u16, headers: &HeaderMap, body: &[u8]) -> Value {
    let mut names: Map<String, Value> = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        names.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let mut cookies = Map::new();
    for set_cookie in headers.get_all(header::SET_COOKIE) {
        let text = String::from_utf8_lossy(set_cookie.as_bytes());
        let pair = text.split(';').next().unwrap_or_default();
        if let Some((name, value)) = pair.split_once('=') {
            cookies.insert(
                name.trim().to_owned(),
                Value::String(value.trim().to_owned()),
            );
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut parts = content_type.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default();
    let encoding = parts
        .filter_map(|parameter| parameter.strip_prefix("charset="))
        .map(|charset| charset.trim_matches('"').to_owned())
        .next();
    let is_json = media_type == "application/json" || media_type.ends_with("+json");
    let mut outputs = json!({
        "status_code": status,
        "headers": names,
        "cookies": cookies,
        "encoding": encoding,
    });
    match is_json
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten()
    {
        Some(json) => outputs["json"] = json,
        None => outputs["text"] = Value::String(String::from_utf8_lossy(body).into_owned()),
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::payload::Invalid;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn a_json_answer_is_json_and_cookies_are_name_and_value() {
        let answer = headers(&[
            ("content-type", "application/json; charset=UTF-8"),
            ("set-cookie", "session=abc; Path=/; HttpOnly"),
            ("set-cookie", "theme=dark"),
        ]);
        let outputs = outputs(201, &answer, br#"{"id": 7}"#);
        assert_eq!(outputs["status_code"], 201);
        assert_eq!(outputs["json"], json!({"id": 7}));
        assert!(outputs.get("text").is_none());
        assert_eq!(outputs["encoding"], "utf-8");
        assert_eq!(
            outputs["cookies"],
            json!({"session": "abc", "theme": "dark"})
        );
        assert_eq!(
            outputs["headers"]["set-cookie"],
            "session=abc; Path=/; HttpOnly, theme=dark"
        );
    }

    #[test]
    fn any_other_answer_is_text() {
        let outputs = outputs(
            200,
            &headers(&[("content-type", "text/html")]),
            b"<p>hi</p>",
        );
        assert_eq!(outputs["text"], "<p>hi</p>");
        assert_eq!(outputs["encoding"], Value::Null);
        // JSON that does not parse is text too.
        let broken = outputs_of("application/problem+json", b"{nope");
        assert_eq!(broken["text"], "{nope");
        assert_eq!(
            outputs_of("application/problem+json", b"[1]")["json"],
            json!([1])
        );
    }

    fn outputs_of(content_type: &'static str, body: &[u8]) -> Value {
        outputs(200, &headers(&[("content-type", content_type)]), body)
    }

    #[test]
    fn expected_statuses() {
        let read = |payload: Value| RestPayload::read(&payload).unwrap();
        let default = read(json!({"url": "http://x"}));
        assert!(default.expects(204) && !default.expects(302) && !default.expects(404));
        let one = read(json!({"url": "http://x", "expected_status_code": 404}));
        assert!(one.expects(404) && !one.expects(200));
        let several = read(json!({"url": "http://x", "expected_status_code": [200, 409]}));
        assert!(several.expects(409) && !several.expects(201));
        assert_eq!(several.expected(), "200 or 409");
    }

    #[test]
    fn payload_errors_are_listed() {
        let Invalid(errors) = RestPayload::read(&json!({
            "url": "ftp://x", "method": "FETCH", "expected_status_code": "200",
            "headers": {"X-Token": {"secret": "s"}}, "extra": 1
        }))
        .unwrap_err();
        let text = errors.join("\n");
        for place in [
            "payload/url",
            "payload/method",
            "payload/expected_status_code",
            "payload/headers/X-Token",
            "extra",
        ] {
            assert!(text.contains(place), "{place} not in {text}");
        }
        let secret = json!({"url": "https://x", "headers": {"Authorization": {"secret": "api", "key": "token"}}});
        assert!(RestPayload::read(&secret).is_ok());
    }
}
