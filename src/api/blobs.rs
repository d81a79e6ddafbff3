//! The blob endpoint behind `s3` artifacts: blobs are uploaded and read through signed URLs on
//! `<rootUrl>/blobs/<taskId>/<runId>/<name>` (see [`crate::auth::blob_url`]), streamed to and
//! from the [`crate::blobs::Store`] (files on this node, or an S3-compatible object store), where
//! a blob is either whole or absent. Its Content-Type must be the artifact's and its length the
//! declared one; once whole, or once its run is resolved, it is never rewritten.
//!
//! Task authors write blobs, and the API's origin also serves the `/shell/` page where people
//! type access tokens, so blobs are served sandboxed, never sniffed, and active content (see
//! [`is_active_content`]) as a download unless the request came to a blob origin of its own
//! (`[blobs] public_url`).

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;

use super::response;
use super::response::CallInfo;
use super::server::State;
use crate::auth::blob_url;
use crate::blobs::{self, BlobId, Store};
use crate::model::task::create_artifact::takes_artifacts;
use crate::model::{ApiError, Artifact, ErrorCode, Storage, Task, Timestamp};
use crate::settings::BlobSettings;

/// How long a signed GET URL of a non-public artifact works.
pub const GET_URL_MILLIS: i64 = 30 * 60 * 1000;
/// How long the PUT URL of an `s3` artifact works (Taskcluster's 45 minutes).
pub const PUT_URL_MILLIS: i64 = 45 * 60 * 1000;

/// What a blob's page may do in a browser: nothing (no scripts, no plugins, a unique origin).
const BLOB_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; sandbox";

/// Content types a browser runs or renders with scripts (see [`is_active_content`]).
const ACTIVE_CONTENT_TYPES: [&str; 13] = [
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/xsl",
    "application/xslt+xml",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "text/ecmascript",
    "application/ecmascript",
    "application/pdf",
];

/// The blob endpoint: where blobs are kept, and how their URLs are made and checked.
pub struct BlobEndpoint {
    store: Store,
    secret: String,
    /// The base of blob URLs: `[blobs] public_url`, else the root URL.
    base_url: String,
    /// The host (and port) of `[blobs] public_url`, when set: requests to it are on an origin
    /// that holds no credentials, where active content may be shown inline.
    blob_origin_host: Option<String>,
    /// Largest upload (`[blobs] max_upload_bytes`).
    max_upload_bytes: u64,
}

/// Names under this prefix are readable by anyone the queue lets read them, so their URLs
/// need no signature.
pub fn is_public(name: &str) -> bool {
    name.starts_with("public/")
}

/// Whether a browser would run what a blob of `content_type` holds: HTML, XHTML, SVG and any
/// other XML (scripts, XSLT), JavaScript, PDF (scripts in viewers). A type that does not parse
/// as `type/subtype` counts as active too, since a browser may read it otherwise.
pub fn is_active_content(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let token = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&byte))
    };
    match essence.split_once('/') {
        Some((kind, subtype)) if token(kind) && token(subtype) => {
            ACTIVE_CONTENT_TYPES.contains(&essence.as_str()) || subtype.ends_with("+xml")
        }
        _ => true,
    }
}

/// The host and port of `url` (`https://host:port/path` gives `host:port`), lowercased, the
/// scheme's default port left out as browsers leave it out of `Host`.
fn host_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?.to_ascii_lowercase();
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        _ => ":80",
    };
    let host = host.strip_suffix(default_port).unwrap_or(&host).to_owned();
    (!host.is_empty()).then_some(host)
}

impl BlobEndpoint {
    /// Where the blobs live.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn new(
        store: Store,
        secret: String,
        root_url: &str,
        settings: &BlobSettings,
    ) -> BlobEndpoint {
        let public_url = settings.public_url.trim();
        let base_url = if public_url.is_empty() {
            root_url
        } else {
            public_url
        };
        BlobEndpoint {
            store,
            secret,
            base_url: base_url.trim_end_matches('/').to_owned(),
            blob_origin_host: host_of(public_url),
            max_upload_bytes: settings.max_upload_bytes,
        }
    }

    /// The URL of a blob; signed for `method` until `expires` when given.
    pub fn url(&self, blob: &BlobId, signed: Option<(&str, Timestamp)>) -> String {
        let mut url = format!(
            "{}/blobs/{}/{}/{}",
            self.base_url,
            blob.task_id,
            blob.run_id,
            utf8_percent_encode(&blob.name, NON_ALPHANUMERIC)
        );
        if let Some((method, expires)) = signed {
            let signature = blob_url::sign(&self.secret, method, &blob.url_path(), expires);
            url.push_str(&format!(
                "?expires={}&signature={signature}",
                expires.millis()
            ));
        }
        url
    }

    fn verify(&self, request: &HttpRequest, method: &str, blob: &BlobId, now: Timestamp) -> bool {
        let query = request.query_string();
        let argument = |name: &str| {
            query.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key == name).then_some(value)
            })
        };
        let expires = argument("expires").and_then(|text| text.parse::<i64>().ok());
        match (expires, argument("signature")) {
            (Some(expires), Some(signature)) => blob_url::verify(
                &self.secret,
                method,
                &blob.url_path(),
                Timestamp::from_millis(expires),
                signature,
                now,
            ),
            _ => false,
        }
    }

    /// Whether `request` came to the blob origin of `[blobs] public_url`.
    fn on_blob_origin(&self, request: &HttpRequest) -> bool {
        let host = request.connection_info().host().to_ascii_lowercase();
        self.blob_origin_host.as_deref() == Some(host.as_str())
    }
}

/// Taskcluster's error body, for the blob call `method` (`uploadBlob`, `downloadBlob`).
fn blob_error(method: &'static str, request: &HttpRequest, error: ApiError) -> HttpResponse {
    let params = request
        .match_info()
        .iter()
        .map(|(name, raw)| {
            let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            (name.to_owned(), json!(decoded))
        })
        .collect();
    let call = CallInfo {
        method,
        params,
        payload: None,
    };
    response::error(&error, &call, Timestamp::now())
}

/// A failure of the store itself (permissions, a full disk, an object store that refuses):
/// logged with the file or key it concerns, since only the operator can fix it, and answered
/// 500 without them.
fn storage_error(error: blobs::Error) -> ApiError {
    tracing::error!(%error, "the blob store failed");
    let action = match &error {
        blobs::Error::File { action, .. } | blobs::Error::Object { action, .. } => action,
        blobs::Error::AlreadyExists | blobs::Error::Config(_) => "using the blob store",
    };
    ApiError::new(
        ErrorCode::InternalServerError,
        format!("the blob store failed {action}"),
    )
}

fn blob_id(request: &HttpRequest) -> Result<BlobId, ApiError> {
    let info = request.match_info();
    let invalid = |what: &str| ApiError::new(ErrorCode::InvalidRequestArguments, what.to_owned());
    let task_id = info
        .get("taskId")
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid("the blob's taskId is not a slugid"))?;
    let run_id = info
        .get("runId")
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid("the blob's runId is not a number"))?;
    let name = percent_encoding::percent_decode_str(info.get("name").unwrap_or_default())
        .decode_utf8()
        .map_err(|_| invalid("the blob's name is not UTF-8"))?
        .into_owned();
    Ok(BlobId {
        task_id,
        run_id,
        name,
    })
}

/// The `s3` artifact a blob belongs to, and its task.
async fn artifact(state: &State, blob: &BlobId) -> Result<(Task, Artifact), ApiError> {
    let missing = || ApiError::not_found(format!("no artifact `{}`", blob.url_path()));
    let task = state.engine.task(blob.task_id).await.ok_or_else(missing)?;
    let artifact = task
        .artifacts
        .get(&(blob.run_id, blob.name.clone()))
        .cloned()
        .ok_or_else(missing)?;
    match artifact.storage {
        Storage::S3 { .. } => Ok((task, artifact)),
        _ => Err(missing()),
    }
}

/// `PUT <rootUrl>/blobs/<taskId>/<runId>/<name>?expires=…&signature=…`: the upload.
pub async fn put(state: Data<State>, request: HttpRequest, payload: Payload) -> HttpResponse {
    upload(&state, &request, payload)
        .await
        .unwrap_or_else(|error| blob_error("uploadBlob", &request, error))
}

async fn upload(
    state: &State,
    request: &HttpRequest,
    mut payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let blob = blob_id(request)?;
    let now = Timestamp::now();
    if !state.blobs.verify(request, "PUT", &blob, now) {
        return Err(ApiError::new(
            ErrorCode::AuthenticationFailed,
            "the upload URL's signature is wrong or has expired",
        ));
    }
    let (task, artifact) = artifact(state, &blob).await?;
    // A published artifact stays what it was: its URL may have leaked with the run's logs.
    let run_takes_artifacts = task
        .runs
        .get(blob.run_id as usize)
        .is_some_and(|run| takes_artifacts(run, now));
    if !run_takes_artifacts {
        return Err(ApiError::conflict(format!(
            "run {} of task `{}` is resolved: its artifacts can no longer be uploaded",
            blob.run_id, blob.task_id
        )));
    }
    let already_uploaded = || {
        ApiError::conflict(format!(
            "`{}` was already uploaded; an artifact is uploaded once",
            blob.name
        ))
    };
    let store = &state.blobs.store;
    if store.length(&blob).await.map_err(storage_error)?.is_some() {
        return Err(already_uploaded());
    }
    let header_text = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    let content_type = header_text(header::CONTENT_TYPE).unwrap_or_default();
    if content_type != artifact.content_type {
        return Err(ApiError::input(format!(
            "Content-Type `{content_type}` is not the artifact's `{}`",
            artifact.content_type
        )));
    }
    let Some(length) =
        header_text(header::CONTENT_LENGTH).and_then(|text| text.parse::<u64>().ok())
    else {
        return Err(ApiError::input("an upload needs a Content-Length"));
    };
    let max = state.blobs.max_upload_bytes;
    if length > max {
        return Err(ApiError::new(
            ErrorCode::InputTooLarge,
            format!("the upload's Content-Length {length} is more than the {max} bytes accepted"),
        ));
    }
    if let Storage::S3 {
        content_length: Some(declared),
    } = artifact.storage
        && declared != length
    {
        return Err(ApiError::input(format!(
            "Content-Length {length} is not the artifact's contentLength {declared}"
        )));
    }
    let mut upload = store.create(&blob).await.map_err(storage_error)?;
    let written = async {
        let mut received = 0u64;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| ApiError::input(format!("upload broke: {error}")))?;
            received += chunk.len() as u64;
            if received > length {
                return Err(ApiError::input(
                    "the upload is longer than its Content-Length",
                ));
            }
            upload.write(chunk).await.map_err(storage_error)?;
        }
        if received != length {
            return Err(ApiError::input(
                "the upload is shorter than its Content-Length",
            ));
        }
        Ok(())
    }
    .await;
    if let Err(error) = written {
        upload.abort().await;
        return Err(error);
    }
    match upload.finish().await {
        Ok(()) => Ok(HttpResponse::Ok().finish()),
        Err(blobs::Error::AlreadyExists) => Err(already_uploaded()),
        Err(error) => Err(storage_error(error)),
    }
}

/// `GET`/`HEAD <rootUrl>/blobs/<taskId>/<runId>/<name>`: public names as they are, others
/// with a signature.
pub async fn get(state: Data<State>, request: HttpRequest) -> HttpResponse {
    download(&state, &request)
        .await
        .unwrap_or_else(|error| blob_error("downloadBlob", &request, error))
}

async fn download(state: &State, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let blob = blob_id(request)?;
    let now = Timestamp::now();
    if !is_public(&blob.name) && !state.blobs.verify(request, "GET", &blob, now) {
        return Err(ApiError::new(
            ErrorCode::AuthenticationFailed,
            "the download URL's signature is wrong or has expired",
        ));
    }
    let (_, artifact) = artifact(state, &blob).await?;
    if artifact.expires < now {
        return Err(ApiError::new(
            ErrorCode::ResourceExpired,
            format!("the artifact `{}` has expired", blob.name),
        ));
    }
    let not_uploaded = || ApiError::not_found(format!("`{}` was not uploaded", blob.name));
    let is_head = request.method() == actix_web::http::Method::HEAD;
    // A HEAD asks only for the length, a GET opens the blob's bytes.
    let (length, chunks) = if is_head {
        let length = state
            .blobs
            .store
            .length(&blob)
            .await
            .map_err(storage_error)?;
        (length.ok_or_else(not_uploaded)?, None)
    } else {
        let read = state.blobs.store.read(&blob).await.map_err(storage_error)?;
        let read = read.ok_or_else(not_uploaded)?;
        (read.length, Some(read.chunks))
    };
    let mut reply = HttpResponse::Ok();
    reply
        .insert_header((header::CONTENT_TYPE, artifact.content_type.clone()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            BLOB_CONTENT_SECURITY_POLICY,
        ));
    if is_active_content(&artifact.content_type) && !state.blobs.on_blob_origin(request) {
        reply.insert_header((header::CONTENT_DISPOSITION, "attachment"));
    }
    // A HEAD's answer carries the length of the body it leaves out: actix writes a sized
    // body's Content-Length, and sends no body to a HEAD.
    let chunks = chunks.unwrap_or_else(|| futures::stream::empty().boxed());
    Ok(reply.no_chunking(length).streaming(chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_content_types() {
        for active in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            " text/html ;x=y",
            "image/svg+xml",
            "application/atom+xml",
            "application/javascript",
            "application/pdf",
            "text/xml",
            "html",
            "",
            "text/html foo",
            "text/ html",
        ] {
            assert!(is_active_content(active), "{active:?}");
        }
        for passive in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/json",
            "application/octet-stream",
            "image/png",
            "application/gzip",
        ] {
            assert!(!is_active_content(passive), "{passive:?}");
        }
    }

    #[test]
    fn the_blob_origins_host() {
        assert_eq!(
            host_of("https://Blobs.Example.com/").as_deref(),
            Some("blobs.example.com")
        );
        assert_eq!(
            host_of("https://blobs.example.com:443").as_deref(),
            Some("blobs.example.com")
        );
        assert_eq!(
            host_of("http://localhost:8080/base?x").as_deref(),
            Some("localhost:8080")
        );
        assert_eq!(host_of(""), None);
        assert_eq!(host_of("blobs.example.com"), None);
    }
}
