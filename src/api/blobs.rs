//! The blob store behind `s3` artifacts: files under `<data-dir>/blobs/` (laid out as
//! [`crate::blob_files`] says), uploaded and read through signed URLs on
//! `<rootUrl>/blobs/<taskId>/<runId>/<name>` (see [`crate::auth::blob_url`]). An upload goes
//! to a temporary file that is synced and linked into place, so a blob is either whole or
//! absent. Its Content-Type must be the artifact's and its length the declared one; once whole,
//! or once its run is resolved, it is never rewritten.
//!
//! Task authors write blobs, and the API's origin also serves the `/shell/` page where people
//! type access tokens, so blobs are served sandboxed, never sniffed, and active content (see
//! [`is_active_content`]) as a download unless the request came to a blob origin of its own
//! (`[blobs] public_url`).

use std::path::{Path, PathBuf};

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{Bytes, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::response;
use super::response::CallInfo;
use super::server::State;
use crate::auth::blob_url;
use crate::blob_files::blob_file;
use crate::model::task::create_artifact::takes_artifacts;
use crate::model::{ApiError, Artifact, ErrorCode, Slugid, Storage, Task, Timestamp};
use crate::settings::BlobSettings;

/// How long a signed GET URL of a non-public artifact works.
pub const GET_URL_MILLIS: i64 = 30 * 60 * 1000;
/// How long the PUT URL of an `s3` artifact works (Taskcluster's 45 minutes).
pub const PUT_URL_MILLIS: i64 = 45 * 60 * 1000;
/// Bytes read from a blob file at a time when serving it.
const READ_CHUNK_BYTES: usize = 64 * 1024;

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

pub struct BlobStore {
    /// The data directory: blobs are under its `blobs/`.
    data_dir: PathBuf,
    secret: String,
    /// The base of blob URLs: `[blobs] public_url`, else the root URL.
    base_url: String,
    /// The host (and port) of `[blobs] public_url`, when set: requests to it are on an origin
    /// that holds no credentials, where active content may be shown inline.
    blob_origin_host: Option<String>,
    /// Largest upload (`[blobs] max_upload_bytes`).
    max_upload_bytes: u64,
}

/// One blob: the artifact `name` of run `run_id` of `task_id`.
#[derive(Clone, Debug)]
pub struct BlobId {
    pub task_id: Slugid,
    pub run_id: u32,
    pub name: String,
}

impl BlobId {
    /// What a signature covers.
    fn signed_path(&self) -> String {
        format!("{}/{}/{}", self.task_id, self.run_id, self.name)
    }
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

impl BlobStore {
    pub fn new(
        data_dir: &Path,
        secret: String,
        root_url: &str,
        settings: &BlobSettings,
    ) -> BlobStore {
        let public_url = settings.public_url.trim();
        let base_url = if public_url.is_empty() {
            root_url
        } else {
            public_url
        };
        BlobStore {
            data_dir: data_dir.to_owned(),
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
            let signature = blob_url::sign(&self.secret, method, &blob.signed_path(), expires);
            url.push_str(&format!(
                "?expires={}&signature={signature}",
                expires.millis()
            ));
        }
        url
    }

    /// Where the blob lives (see [`crate::blob_files`]).
    fn file(&self, blob: &BlobId) -> PathBuf {
        blob_file(&self.data_dir, blob.task_id, blob.run_id, &blob.name)
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
                &blob.signed_path(),
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

/// A failure of the store itself (permissions, a full disk): logged with the file it concerns,
/// since only the operator can fix it, and answered 500.
fn storage_error(action: &str, path: &Path, error: std::io::Error) -> ApiError {
    tracing::error!(path = %path.display(), %error, action, "the blob store failed");
    ApiError::new(ErrorCode::InternalServerError, format!("{action}: {error}"))
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
    let missing = || ApiError::not_found(format!("no artifact `{}`", blob.signed_path()));
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
    let path = state.blobs.file(&blob);
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
    match tokio::fs::try_exists(&path).await {
        Ok(false) => {}
        Ok(true) => return Err(already_uploaded()),
        Err(error) => return Err(storage_error("looking for the blob", &path, error)),
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
    let directory = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let temporary = directory.join(format!(".upload-{}", Slugid::nice()));
    let io = |error: std::io::Error| storage_error("storing the blob", &temporary, error);
    tokio::fs::create_dir_all(&directory)
        .await
        .map_err(|error| storage_error("making the blob's directory", &directory, error))?;
    let written = async {
        let mut file = tokio::fs::File::create(&temporary).await.map_err(io)?;
        let mut received = 0u64;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| ApiError::input(format!("upload broke: {error}")))?;
            received += chunk.len() as u64;
            if received > length {
                return Err(ApiError::input(
                    "the upload is longer than its Content-Length",
                ));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        if received != length {
            return Err(ApiError::input(
                "the upload is shorter than its Content-Length",
            ));
        }
        file.sync_all().await.map_err(io)?;
        // A link, unlike a rename, never replaces: of two uploads at once, one wins.
        match tokio::fs::hard_link(&temporary, &path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(already_uploaded())
            }
            Err(error) => Err(storage_error("storing the blob", &path, error)),
        }
    }
    .await;
    let _ = tokio::fs::remove_file(&temporary).await;
    written?;
    let synced = directory.clone();
    tokio::task::spawn_blocking(move || std::fs::File::open(synced)?.sync_all())
        .await
        .map_err(std::io::Error::other)
        .and_then(|synced| synced)
        .map_err(|error| storage_error("syncing the blob's directory", &directory, error))?;
    Ok(HttpResponse::Ok().finish())
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
    let path = state.blobs.file(&blob);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "`{}` was not uploaded",
                blob.name
            )));
        }
        Err(error) => return Err(storage_error("opening the blob", &path, error)),
    };
    let length = file
        .metadata()
        .await
        .map_err(|error| storage_error("reading the blob's size", &path, error))?
        .len();
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
    if request.method() == actix_web::http::Method::HEAD {
        reply.insert_header((header::CONTENT_LENGTH, length));
        return Ok(reply.finish());
    }
    let chunks = futures::stream::unfold(Some(file), move |file| {
        let path = path.clone();
        async move {
            let mut file = file?;
            let mut buffer = vec![0; READ_CHUNK_BYTES];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(read) => {
                    buffer.truncate(read);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), Some(file)))
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "reading a blob being served");
                    Some((Err(error), None))
                }
            }
        }
    });
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
