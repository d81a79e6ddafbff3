//! taskcluster-proxy for one run (`features.taskclusterProxy`): an HTTP server the task
//! reaches at `TASKCLUSTER_PROXY_URL`, which signs the task's plain requests with the run's
//! credentials (the latest: each reclaim brings new ones) and forwards them to the
//! deployment, as Taskcluster's proxy does:
//!
//! - `/api/<service>/<version>/<path>` goes to `<rootUrl>/api/<service>/<version>/<path>`;
//! - the older `/<service>/<version>/<path>` goes to the same place;
//! - `POST /bewit` with a URL as its body answers `303` to that URL signed for an hour (the
//!   signed URL is the body too).
//!
//! A POST with `X-HTTP-Method-Override: <METHOD>` is forwarded as that method, for tools that
//! can only GET and POST (busybox `wget`, whose tasks create tasks with a PUT this way).
//!
//! Answers come back as they are (status, body, `Content-Type`, `Location`: redirects are not
//! followed), with `X-Taskcluster-Endpoint` naming where the request went. The server listens
//! on `[worker.proxy] listen` (loopback by default), on a port of its own, for as long as the
//! run lasts.

use std::net::TcpListener;

use actix_web::http::{Method, StatusCode, header};
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use tokio::sync::watch;

use crate::auth::Credentials;
use crate::auth::bewit::{self, Place};
use crate::client::QueueClient;
use crate::model::Timestamp;

/// How long a URL signed through `/bewit` works (Taskcluster's proxy: an hour).
const BEWIT_SECONDS: i64 = 3_600;
/// The header that makes a POST another method.
const METHOD_OVERRIDE: &str = "X-HTTP-Method-Override";
/// The largest request body the proxy forwards.
const MAX_BODY: usize = 64 << 20;

/// The proxy of one run, serving until dropped.
pub struct Proxy {
    /// `TASKCLUSTER_PROXY_URL`.
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

struct Shared {
    root_url: String,
    credentials: watch::Receiver<Credentials>,
}

impl Proxy {
    /// Starts a proxy on `listen` (an address the task's container reaches) for a deployment
    /// at `root_url`, signing with what `credentials` holds at each request.
    pub fn start(
        listen: &str,
        root_url: &str,
        credentials: watch::Receiver<Credentials>,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind((listen, 0))?;
        let address = listener.local_addr()?;
        let shared = Data::new(Shared {
            root_url: root_url.trim_end_matches('/').to_owned(),
            credentials,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .route("/bewit", web::to(sign_url))
                .default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let host = match address.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        Ok(Proxy {
            url: format!("http://{host}:{}", address.port()),
            handle,
        })
    }
}

/// Where a task's request goes: the `/api/...` path on the deployment, from either form.
fn target(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let (first, second, third) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    if first == "api" {
        let mut api = third.splitn(2, '/');
        let (version, path) = (api.next()?, api.next().unwrap_or(""));
        return valid_service(second).then(|| format!("/api/{second}/{version}/{path}"));
    }
    valid_service(first).then(|| format!("/api/{first}/{second}/{third}"))
}

fn valid_service(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

fn text(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(message)
}

async fn forward(shared: Data<Shared>, request: HttpRequest, body: Bytes) -> HttpResponse {
    let path = request.uri().path();
    let Some(mut resource) = target(path) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("taskcluster-proxy: `{path}` is not /api/<service>/<version>/<path>"),
        );
    };
    if let Some(query) = request.uri().query() {
        resource.push('?');
        resource.push_str(query);
    }
    let credentials = shared.credentials.borrow().clone();
    let client = match QueueClient::not_following_redirects(&shared.root_url, Some(credentials), 4)
    {
        Ok(client) => client,
        Err(error) => return text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body =
        (!body.is_empty() || request.method() == Method::PUT || request.method() == Method::POST)
            .then(|| (content_type.as_str(), body.to_vec()));
    let endpoint = format!("{}{resource}", shared.root_url);
    let method = match request.headers().get(METHOD_OVERRIDE) {
        Some(wanted) if request.method() == Method::POST => {
            match wanted
                .to_str()
                .ok()
                .and_then(|wanted| wanted.parse::<Method>().ok())
            {
                Some(method) => method,
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("taskcluster-proxy: `{METHOD_OVERRIDE}` is not a method"),
                    );
                }
            }
        }
        _ => request.method().clone(),
    };
    match client.forward(method, &resource, body).await {
        Ok(answer) => {
            let mut reply = HttpResponse::build(answer.status);
            for (name, value) in answer.headers {
                reply.insert_header((name, value));
            }
            reply.insert_header(("X-Taskcluster-Endpoint", endpoint));
            reply.body(answer.body)
        }
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed during proxy request: {error}"),
        ),
    }
}

/// `POST /bewit`: the URL in the body, signed for an hour with the run's credentials.
async fn sign_url(shared: Data<Shared>, body: Bytes) -> HttpResponse {
    let url = String::from_utf8_lossy(&body).trim().to_owned();
    let Ok(uri) = url.parse::<actix_web::http::Uri>() else {
        return text(StatusCode::BAD_REQUEST, format!("`{url}` is not a URL"));
    };
    let (Some(host), Some(scheme)) = (uri.host(), uri.scheme_str()) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("`{url}` is not an absolute URL"),
        );
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let resource = uri.path_and_query().map_or("/", |target| target.as_str());
    let place = Place {
        resource_without_bewit: resource,
        host,
        port,
    };
    let credentials = shared.credentials.borrow().clone();
    let expires = Timestamp::now().millis() / 1000 + BEWIT_SECONDS;
    match bewit::sign_resource(&credentials, &place, expires) {
        Ok(signed) => {
            let origin = url.strip_suffix(resource).unwrap_or(&url);
            let signed = format!("{origin}{signed}");
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, signed.clone()))
                .content_type("text/plain; charset=utf-8")
                .body(signed)
        }
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_path_forms_reach_the_api() {
        assert_eq!(
            target("/api/queue/v1/task/abc").as_deref(),
            Some("/api/queue/v1/task/abc")
        );
        assert_eq!(
            target("/secrets/v1/secret/a/b").as_deref(),
            Some("/api/secrets/v1/secret/a/b")
        );
        assert_eq!(target("/api/index/v1/").as_deref(), Some("/api/index/v1/"));
        assert_eq!(target("/"), None);
        assert_eq!(target("/a.b/c"), None);
    }
}
