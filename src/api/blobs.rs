//! The blob store behind `s3` artifacts: files under `<data-dir>/blobs/`, uploaded and read
//! through signed URLs on `<rootUrl>/blobs/<taskId>/<runId>/<name>` (see
//! [`crate::auth::blob_url`]). An upload goes to a temporary file that is synced and renamed
//! into place, so a blob is either whole or absent. Its Content-Type must be the artifact's and
//! its length the declared one.

use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{Bytes, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server::State;
use super::{ApiError, ErrorCode, response};
use crate::auth::blob_url;
use crate::model::{Artifact, Slugid, Storage, Timestamp};

/// How long a signed GET URL of a non-public artifact works.
pub const GET_URL_MILLIS: i64 = 30 * 60 * 1000;
/// How long the PUT URL of an `s3` artifact works (Taskcluster's 45 minutes).
pub const PUT_URL_MILLIS: i64 = 45 * 60 * 1000;
/// Bytes read from a blob file at a time when serving it.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub struct BlobStore {
    /// The data directory: blobs are under its `blobs/`.
    data_dir: PathBuf,
    secret: String,
    root_url: String,
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

/// Where the blobs of every run of `task_id` live, under the data directory `data_dir`.
pub fn task_dir(data_dir: &Path, task_id: Slugid) -> PathBuf {
    data_dir.join("blobs").join(task_id.to_string())
}

/// The file of the blob of artifact `name` of run `run_id` of `task_id`: the name is hashed, so
/// any printable name makes a safe file name.
pub fn blob_file(data_dir: &Path, task_id: Slugid, run_id: u32, name: &str) -> PathBuf {
    task_dir(data_dir, task_id)
        .join(run_id.to_string())
        .join(blob_url::name_digest(name))
}

/// Names under this prefix are readable by anyone the queue lets read them, so their URLs
/// need no signature.
pub fn is_public(name: &str) -> bool {
    name.starts_with("public/")
}

impl BlobStore {
    pub fn new(data_dir: &Path, secret: String, root_url: &str) -> BlobStore {
        BlobStore {
            data_dir: data_dir.to_owned(),
            secret,
            root_url: root_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The URL of a blob; signed for `method` until `expires` when given.
    pub fn url(&self, blob: &BlobId, signed: Option<(&str, Timestamp)>) -> String {
        let mut url = format!(
            "{}/blobs/{}/{}/{}",
            self.root_url,
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

    /// Where the blob lives (see [`blob_file`]).
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
}

fn blob_error(error: ApiError) -> HttpResponse {
    response::json(
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"code": error.code.as_str(), "message": error.message}),
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

/// The `s3` artifact a blob belongs to.
async fn artifact(state: &State, blob: &BlobId) -> Result<Artifact, ApiError> {
    let missing = || ApiError::not_found(format!("no artifact `{}`", blob.signed_path()));
    let task = state.engine.task(blob.task_id).await.ok_or_else(missing)?;
    let artifact = task
        .artifacts
        .get(&(blob.run_id, blob.name.clone()))
        .cloned()
        .ok_or_else(missing)?;
    match artifact.storage {
        Storage::S3 { .. } => Ok(artifact),
        _ => Err(missing()),
    }
}

/// `PUT <rootUrl>/blobs/<taskId>/<runId>/<name>?expires=…&signature=…`: the upload.
pub async fn put(state: Data<State>, request: HttpRequest, payload: Payload) -> HttpResponse {
    upload(&state, &request, payload)
        .await
        .unwrap_or_else(blob_error)
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
    let artifact = artifact(state, &blob).await?;
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
    if let Storage::S3 {
        content_length: Some(declared),
    } = artifact.storage
        && declared != length
    {
        return Err(ApiError::input(format!(
            "Content-Length {length} is not the artifact's contentLength {declared}"
        )));
    }
    let path = state.blobs.file(&blob);
    let directory = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let temporary = directory.join(format!(".upload-{}", Slugid::nice()));
    let io = |error: std::io::Error| {
        ApiError::new(
            ErrorCode::InternalServerError,
            format!("storing the blob: {error}"),
        )
    };
    tokio::fs::create_dir_all(&directory).await.map_err(io)?;
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
        tokio::fs::rename(&temporary, &path).await.map_err(io)?;
        let directory = directory.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(directory)?.sync_all())
            .await
            .map_err(|error| io(std::io::Error::other(error)))?
            .map_err(io)
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&temporary).await;
    }
    written?;
    Ok(HttpResponse::Ok().finish())
}

/// `GET`/`HEAD <rootUrl>/blobs/<taskId>/<runId>/<name>`: public names as they are, others
/// with a signature.
pub async fn get(state: Data<State>, request: HttpRequest) -> HttpResponse {
    download(&state, &request).await.unwrap_or_else(blob_error)
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
    let artifact = artifact(state, &blob).await?;
    if artifact.expires < now {
        return Err(ApiError::new(
            ErrorCode::ResourceExpired,
            format!("the artifact `{}` has expired", blob.name),
        ));
    }
    let file = tokio::fs::File::open(state.blobs.file(&blob))
        .await
        .map_err(|_| ApiError::not_found(format!("`{}` was not uploaded", blob.name)))?;
    let length = file
        .metadata()
        .await
        .map_err(|error| ApiError::new(ErrorCode::InternalServerError, error.to_string()))?
        .len();
    let mut reply = HttpResponse::Ok();
    reply.insert_header((header::CONTENT_TYPE, artifact.content_type.clone()));
    if request.method() == actix_web::http::Method::HEAD {
        reply.insert_header((header::CONTENT_LENGTH, length));
        return Ok(reply.finish());
    }
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0; READ_CHUNK_BYTES];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), Some(file)))
            }
            Err(error) => Some((Err(error), None)),
        }
    });
    Ok(reply.no_chunking(length).streaming(chunks))
}
