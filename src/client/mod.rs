//! A Queue API client speaking Hawk, for Taskfold's own processes (the lifecycle load
//! generator now, the worker next). It signs exactly what it sends: the raw path and query,
//! the host and port of the root URL, and the body bytes.

pub mod lifecycle;

use std::time::Duration;

use awc::http::{Method, StatusCode, Uri};
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
    #[error("cannot sign with these credentials: {0}")]
    Credentials(String),
}

/// One deployment's Queue API, as one client.
#[derive(Clone)]
pub struct QueueClient {
    base: String,
    host: String,
    port: u16,
    /// Path prefix of the API on the root URL, e.g. `/api/queue/v1`.
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
        let http = awc::Client::builder()
            .connector(awc::Connector::new().limit(connections.max(1)))
            // claimWork holds a request up to 20 s.
            .timeout(Duration::from_secs(60))
            .finish();
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
        let resource = format!("{}{path}", self.prefix);
        let body = body.map(|body| body.to_string().into_bytes());
        let mut request = self
            .http
            .request(
                method.clone(),
                format!("{}{path}", self.base_without_path()),
            )
            .insert_header(("Accept", "application/json"));
        if let Some(credentials) = &self.credentials {
            let content_type = body.as_ref().map(|_| "application/json");
            let hash = body.as_deref().map(|body| payload_hash(content_type, body));
            let nonce = Slugid::nice().to_string();
            let header = client_header(
                &Signing {
                    id: &credentials.client_id,
                    key: &credentials.access_token,
                    ts: Timestamp::now().millis() / 1000,
                    nonce: &nonce,
                    hash: hash.as_deref(),
                    ext: self.ext.as_deref(),
                },
                &RequestLine {
                    method: method.as_str(),
                    resource: &resource,
                    host: &self.host,
                    port: self.port,
                },
            );
            request = request.insert_header(("Authorization", header));
        }
        let transport = |reason: String| Error::Transport {
            method: method.clone(),
            path: path.to_owned(),
            reason,
        };
        let mut response = match body {
            Some(body) => {
                request
                    .insert_header(("Content-Type", "application/json"))
                    .send_body(body)
                    .await
            }
            None => request.send().await,
        }
        .map_err(|error| transport(error.to_string()))?;
        let status = response.status();
        let bytes = response
            .body()
            .limit(16 << 20)
            .await
            .map_err(|error| transport(error.to_string()))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|error| transport(error.to_string()))?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(Error::Api {
                method,
                path: path.to_owned(),
                status,
                body: value,
            })
        }
    }

    /// The scheme, host and port of the root URL; the prefix comes with each path.
    fn base_without_path(&self) -> String {
        let scheme_end = self.base.find("://").map_or(0, |index| index + 3);
        let authority_end = self.base[scheme_end..]
            .find('/')
            .map_or(self.base.len(), |index| scheme_end + index);
        format!("{}{}", &self.base[..authority_end], self.prefix)
    }

    pub async fn create_task(&self, task_id: Slugid, definition: &Value) -> Result<Value, Error> {
        self.call(Method::PUT, &format!("/task/{task_id}"), Some(definition))
            .await
    }

    pub async fn claim_work(&self, task_queue_id: &str, request: &Value) -> Result<Value, Error> {
        let queue = task_queue_id.replace('/', "%2F");
        self.call(Method::POST, &format!("/claim-work/{queue}"), Some(request))
            .await
    }

    pub async fn report_completed(&self, task_id: &str, run_id: u64) -> Result<Value, Error> {
        self.call(
            Method::POST,
            &format!("/task/{task_id}/runs/{run_id}/completed"),
            None,
        )
        .await
    }
}
