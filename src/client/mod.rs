//! A Queue API client speaking Hawk, for Taskfold's own processes (the lifecycle load
//! generator now, the worker next). It signs exactly what it sends: the raw path and query,
//! the host and port of the root URL, and the body bytes.

pub mod bench_shell;
pub mod bench_tasks;
pub mod input;
pub mod lifecycle;
pub mod listen;
pub mod shell;
pub mod tasks;
pub mod tls;

use std::time::Duration;

use awc::http::{Method, StatusCode, Uri};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::credentials::{Credentials, hawk_ext};
use crate::auth::hawk::{RequestLine, Signing, client_header, payload_hash};
use crate::model::{Slugid, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid root URL `{0}`")]
    RootUrl(String),
    #[error("{method} {path}: {reason}")]
    Transport {
        method: Method,
        path: String,
        reason: String,
    },
    #[error("{method} {path} answered {status}: {body}")]
    Api {
        method: Method,
        path: String,
        status: StatusCode,
        body: Value,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot sign with these credentials: {0}")]
    Credentials(String),
    /// A load generator's own failure.
    #[error("{0}")]
    Bench(String),
}

impl Error {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer's JSON, or its text as a JSON string when it is not JSON.
fn json_or_text(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }
}

fn api_error(method: Method, path: String, status: StatusCode, body: &[u8]) -> Error {
    Error::Api {
        method,
        path,
        status,
        body: json_or_text(body),
    }
}

/// A websocket to the server.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a websocket; a `wss://` one over TLS with [`tls::config`].
pub async fn connect_websocket(
    request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest,
) -> Result<WebSocket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let request = request.into_client_request()?;
    let connector = if request.uri().scheme_str() == Some("wss") {
        let config = tls::config().map_err(|reason| WsError::Io(std::io::Error::other(reason)))?;
        Some(tokio_tungstenite::Connector::Rustls(config))
    } else {
        None
    };
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await?;
    Ok(socket)
}

/// One deployment's Queue API, as one client.
/// The largest answer a client reads.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// What a forwarded request got back ([`QueueClient::forward`]).
pub struct Forwarded {
    pub status: StatusCode,
    pub headers: Vec<(
        awc::http::header::HeaderName,
        awc::http::header::HeaderValue,
    )>,
    pub body: actix_web::web::Bytes,
}

#[derive(Clone)]
pub struct QueueClient {
    base: String,
    host: String,
    port: u16,
    /// Path of the API on the server, e.g. `/api/queue/v1` (with any path of the root URL).
    prefix: String,
    credentials: Option<Credentials>,
    ext: Option<String>,
    http: awc::Client,
}

impl QueueClient {
    /// `connections` bounds the pooled connections to the server.
    pub fn new(
        root_url: &str,
        credentials: Option<Credentials>,
        connections: usize,
    ) -> Result<Self, Error> {
        Self::build(root_url, credentials, connections, true)
    }

    /// A client that hands redirects back rather than following them (taskcluster-proxy's
    /// forwarding, the benches of redirecting methods).
    pub fn not_following_redirects(
        root_url: &str,
        credentials: Option<Credentials>,
        connections: usize,
    ) -> Result<Self, Error> {
        Self::build(root_url, credentials, connections, false)
    }

    fn build(
        root_url: &str,
        credentials: Option<Credentials>,
        connections: usize,
        follow_redirects: bool,
    ) -> Result<Self, Error> {
        let root = root_url.trim_end_matches('/');
        let uri: Uri = root
            .parse()
            .map_err(|_| Error::RootUrl(root_url.to_owned()))?;
        let host = uri
            .host()
            .ok_or_else(|| Error::RootUrl(root_url.to_owned()))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let ext = match &credentials {
            Some(credentials) => hawk_ext(credentials, None)
                .map_err(|error| Error::Credentials(error.to_string()))?,
            None => None,
        };
        let mut connector = awc::Connector::new().limit(connections.max(1));
        if uri.scheme_str() == Some("https") {
            connector = connector.rustls_0_23(tls::config().map_err(Error::Tls)?);
        }
        let mut http = awc::Client::builder()
            .connector(connector)
            // claimWork holds a request up to 20 s.
            .timeout(Duration::from_secs(60));
        if !follow_redirects {
            http = http.disable_redirects();
        }
        let http = http.finish();
        Ok(QueueClient {
            base: root.to_owned(),
            prefix: format!("{}/api/queue/v1", uri.path().trim_end_matches('/')),
            host,
            port,
            credentials,
            ext,
            http,
        })
    }

    /// Calls `method path` (relative to the API prefix) with an optional JSON body; returns
    /// the JSON answer of a 2xx reply.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let body = body.map(|body| ("application/json", body.to_string().into_bytes()));
        self.send(method, &format!("{}{path}", self.prefix), body)
            .await
    }

    /// `call`, with the answer read straight into `T` rather than into a JSON tree first
    /// (`serde::de::IgnoredAny` skips it).
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Error> {
        let body = body.map(|body| ("application/json", body.to_string().into_bytes()));
        let resource = format!("{}{path}", self.prefix);
        let (status, bytes) = self.exchange(method.clone(), &resource, body).await?;
        if !status.is_success() {
            return Err(api_error(method, resource, status, &bytes));
        }
        let json = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes
        };
        serde_json::from_slice(json).map_err(|error| Error::Transport {
            method,
            path: resource,
            reason: format!("the answer is not the JSON expected: {error}"),
        })
    }

    /// Sends a signed `method` to `resource` (path and query on the server, the API prefix
    /// included or not) with an optional body and its Content-Type; returns the JSON answer
    /// of a 2xx reply (a text answer as a JSON string).
    pub async fn send(
        &self,
        method: Method,
        resource: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, Error> {
        let (status, bytes) = self.exchange(method.clone(), resource, body).await?;
        if status.is_success() {
            Ok(json_or_text(&bytes))
        } else {
            Err(api_error(method, resource.to_owned(), status, &bytes))
        }
    }

    /// Sends a signed request and answers whatever came back: status, the headers a caller
    /// passes on (`Content-Type`, `Location`, `X-…`) and body (taskcluster-proxy's forwarding).
    pub async fn forward(
        &self,
        method: Method,
        resource: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Forwarded, Error> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{resource}", self.origin()))
            .insert_header(("Accept", "application/json"));
        let hash = body
            .as_ref()
            .map(|(content_type, body)| payload_hash(Some(content_type), body));
        if let Some(header) = self.authorization(method.as_str(), resource, hash.as_deref()) {
            request = request.insert_header(("Authorization", header));
        }
        let transport = |reason: String| Error::Transport {
            method: method.clone(),
            path: resource.to_owned(),
            reason,
        };
        let mut response = match body {
            Some((content_type, body)) => {
                request
                    .insert_header(("Content-Type", content_type))
                    .send_body(body)
                    .await
            }
            None => request.send().await,
        }
        .map_err(|error| transport(error.to_string()))?;
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name == "content-type" || name == "location" || name.starts_with("x-")
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let body = response
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|error| transport(error.to_string()))?;
        Ok(Forwarded {
            status: response.status(),
            headers,
            body,
        })
    }

    /// Sends a signed request; the status and body of the answer, whatever the status.
    async fn exchange(
        &self,
        method: Method,
        resource: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(StatusCode, actix_web::web::Bytes), Error> {
        let answer = self.forward(method, resource, body).await?;
        Ok((answer.status, answer.body))
    }

    /// The Hawk `Authorization` header for `method resource` (with the body's payload hash),
    /// if the client has credentials.
    fn authorization(&self, method: &str, resource: &str, hash: Option<&str>) -> Option<String> {
        let credentials = self.credentials.as_ref()?;
        let nonce = Slugid::nice().to_string();
        Some(client_header(
            &Signing {
                id: &credentials.client_id,
                key: &credentials.access_token,
                ts: Timestamp::now().millis() / 1000,
                nonce: &nonce,
                hash,
                ext: self.ext.as_deref(),
            },
            &RequestLine {
                method,
                resource,
                host: &self.host,
                port: self.port,
            },
        ))
    }

    /// Opens a websocket to `resource` (path and query on the server, as for
    /// [`QueueClient::send`]), the upgrade request signed like a GET.
    pub async fn websocket(&self, resource: &str) -> Result<WebSocket, Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let origin = self.origin();
        let url = match origin.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}{resource}"),
            Some((_, rest)) => format!("ws://{rest}{resource}"),
            None => format!("ws://{origin}{resource}"),
        };
        let transport = |reason: String| Error::Transport {
            method: Method::GET,
            path: resource.to_owned(),
            reason,
        };
        let mut request = url
            .into_client_request()
            .map_err(|error| transport(error.to_string()))?;
        if let Some(header) = self.authorization("GET", resource, None) {
            let value = header
                .parse()
                .map_err(|_| transport("an unusable Authorization header".to_owned()))?;
            request.headers_mut().insert("Authorization", value);
        }
        match connect_websocket(request).await {
            Ok(socket) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|bytes| serde_json::from_slice(bytes).ok())
                    .unwrap_or(Value::Null);
                Err(Error::Api {
                    method: Method::GET,
                    path: resource.to_owned(),
                    status,
                    body,
                })
            }
            Err(error) => Err(transport(error.to_string())),
        }
    }

    /// The scheme, host and port of the root URL.
    fn origin(&self) -> &str {
        let scheme_end = self.base.find("://").map_or(0, |index| index + 3);
        let authority_end = self.base[scheme_end..]
            .find('/')
            .map_or(self.base.len(), |index| scheme_end + index);
        &self.base[..authority_end]
    }

    /// A resource outside the Queue API on the same server (`/livelog/…`), with the root
    /// URL's path in front, for [`QueueClient::send`].
    pub fn resource(&self, path: &str) -> String {
        let root_path = self
            .prefix
            .strip_suffix("/api/queue/v1")
            .unwrap_or_default();
        format!("{root_path}{path}")
    }

    /// The Queue API's base URL, `<rootUrl>/api/queue/v1`.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.origin(), self.prefix)
    }

    /// The deployment's root URL, without a trailing slash.
    pub fn root_url(&self) -> &str {
        &self.base
    }

    /// The same deployment and connections, signing with other credentials (a run's, which
    /// change with every reclaim).
    pub fn with_credentials(&self, credentials: Credentials) -> Result<QueueClient, Error> {
        let ext =
            hawk_ext(&credentials, None).map_err(|error| Error::Credentials(error.to_string()))?;
        Ok(QueueClient {
            credentials: Some(credentials),
            ext,
            ..self.clone()
        })
    }

    /// The connections, for requests to URLs the queue hands out (signed upload URLs).
    pub fn http(&self) -> &awc::Client {
        &self.http
    }

    /// createTask; the answer read into `T` (see [`QueueClient::call_as`]).
    pub async fn create_task<T: DeserializeOwned>(
        &self,
        task_id: Slugid,
        definition: &Value,
    ) -> Result<T, Error> {
        self.call_as(Method::PUT, &format!("/task/{task_id}"), Some(definition))
            .await
    }

    /// claimWork; the answer read into `T` (see [`QueueClient::call_as`]).
    pub async fn claim_work<T: DeserializeOwned>(
        &self,
        task_queue_id: &str,
        request: &Value,
    ) -> Result<T, Error> {
        let queue = task_queue_id.replace('/', "%2F");
        self.call_as(Method::POST, &format!("/claim-work/{queue}"), Some(request))
            .await
    }

    /// reportCompleted; the answer read into `T` (see [`QueueClient::call_as`]).
    pub async fn report_completed<T: DeserializeOwned>(
        &self,
        task_id: &str,
        run_id: u64,
    ) -> Result<T, Error> {
        self.call_as(
            Method::POST,
            &format!("/task/{task_id}/runs/{run_id}/completed"),
            None,
        )
        .await
    }

    pub async fn report_failed(&self, task_id: &str, run_id: u64) -> Result<Value, Error> {
        self.call(
            Method::POST,
            &format!("/task/{task_id}/runs/{run_id}/failed"),
            None,
        )
        .await
    }

    pub async fn report_exception(
        &self,
        task_id: &str,
        run_id: u64,
        reason: &str,
    ) -> Result<Value, Error> {
        self.call(
            Method::POST,
            &format!("/task/{task_id}/runs/{run_id}/exception"),
            Some(&serde_json::json!({"reason": reason})),
        )
        .await
    }

    pub async fn reclaim_task(&self, task_id: &str, run_id: u64) -> Result<Value, Error> {
        self.call(
            Method::POST,
            &format!("/task/{task_id}/runs/{run_id}/reclaim"),
            None,
        )
        .await
    }

    pub async fn create_artifact(
        &self,
        task_id: &str,
        run_id: u64,
        name: &str,
        request: &Value,
    ) -> Result<Value, Error> {
        let name =
            percent_encoding::utf8_percent_encode(name, crate::model::artifact::NAME_ENCODING);
        self.call(
            Method::POST,
            &format!("/task/{task_id}/runs/{run_id}/artifacts/{name}"),
            Some(request),
        )
        .await
    }

    pub async fn task(&self, task_id: &str) -> Result<Value, Error> {
        self.call(Method::GET, &format!("/task/{task_id}"), None)
            .await
    }

    pub async fn status(&self, task_id: &str) -> Result<Value, Error> {
        self.call(Method::GET, &format!("/task/{task_id}/status"), None)
            .await
    }
}
