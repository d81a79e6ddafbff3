//! Publishing a run's outputs through the Queue API: `s3` artifacts (createArtifact, then a PUT
//! of the file to the signed URL the queue answers with), `error` artifacts for outputs the task
//! did not produce, and the `reference` and `link` artifacts of the live log. Every call uses
//! the run's current credentials, which change with each reclaim.

use std::path::Path;
use std::time::Duration;

use awc::http::Method;
use serde_json::{Value, json};

use super::task_run::SharedClient;
use crate::client::Error;

/// Tries of one upload before it counts as failed (transport errors and 5xx only).
const UPLOAD_TRIES: u32 = 4;
/// Bytes read from a file per chunk of an upload.
const CHUNK_BYTES: usize = 256 * 1024;
/// An upload may take this long (large files on slow disks).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Why an output has no content: the reasons Taskcluster's workers give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    FileMissing,
    InvalidResource,
    NotReadable,
}

impl Missing {
    fn reason(self) -> &'static str {
        match self {
            Missing::FileMissing => "file-missing-on-worker",
            Missing::InvalidResource => "invalid-resource-on-worker",
            Missing::NotReadable => "file-not-readable-on-worker",
        }
    }
}

/// One run's artifact uploads.
#[derive(Clone)]
pub struct Publisher {
    pub client: SharedClient,
    pub task_id: String,
    pub run_id: u64,
    /// The task's `expires`: artifacts expire with it unless the payload says otherwise.
    pub expires: String,
}

impl Publisher {
    async fn create(&self, name: &str, request: &Value) -> Result<Value, Error> {
        let client = self.client.borrow().clone();
        client
            .create_artifact(&self.task_id, self.run_id, name, request)
            .await
    }

    /// Uploads the file at `path` as the `s3` artifact `name`.
    pub async fn file(
        &self,
        name: &str,
        path: &Path,
        content_type: Option<&str>,
        expires: Option<&str>,
    ) -> Result<(), String> {
        let length = tokio::fs::metadata(path)
            .await
            .map_err(|error| format!("reading {}: {error}", path.display()))?
            .len();
        let content_type = content_type.map(str::to_owned).unwrap_or_else(|| {
            mime_guess::from_path(name)
                .first_raw()
                .unwrap_or("application/octet-stream")
                .to_owned()
        });
        let mut last_error = String::new();
        for attempt in 0..UPLOAD_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            let request = json!({
                "storageType": "s3",
                "contentType": content_type,
                "contentLength": length,
                "expires": expires.unwrap_or(&self.expires),
            });
            let answer = match self.create(name, &request).await {
                Ok(answer) => answer,
                Err(error) if is_retryable(&error) => {
                    last_error = error.to_string();
                    continue;
                }
                Err(error) => return Err(error.to_string()),
            };
            let Some(put_url) = answer["putUrl"].as_str() else {
                return Err(format!("createArtifact gave no putUrl: {answer}"));
            };
            match self.put(put_url, path, &content_type, length).await {
                Ok(()) => return Ok(()),
                Err((error, retryable)) => {
                    last_error = error;
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Err(format!("uploading `{name}`: {last_error}"))
    }

    /// PUTs the file to a signed URL; the error says whether another try may help.
    async fn put(
        &self,
        url: &str,
        path: &Path,
        content_type: &str,
        length: u64,
    ) -> Result<(), (String, bool)> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|error| (format!("reading {}: {error}", path.display()), false))?;
        let body = futures::stream::unfold(file, |mut file| async move {
            let mut chunk = vec![0; CHUNK_BYTES];
            match file.read(&mut chunk).await {
                Ok(0) => None,
                Ok(read) => {
                    chunk.truncate(read);
                    Some((
                        Ok::<_, actix_web::Error>(actix_web::web::Bytes::from(chunk)),
                        file,
                    ))
                }
                Err(error) => Some((Err(error.into()), file)),
            }
        });
        let client = self.client.borrow().clone();
        let response = client
            .http()
            .request(Method::PUT, url)
            .timeout(UPLOAD_TIMEOUT)
            .insert_header(("Content-Type", content_type))
            .send_body(awc::body::SizedStream::new(length, body))
            .await;
        match response {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(mut response) => {
                let status = response.status();
                let body = response.body().await.unwrap_or_default();
                Err((
                    format!("PUT answered {status}: {}", String::from_utf8_lossy(&body)),
                    status.is_server_error(),
                ))
            }
            Err(error) => Err((format!("PUT failed: {error}"), true)),
        }
    }

    /// Records that the task did not produce `name`.
    pub async fn missing(&self, name: &str, why: Missing, message: &str) -> Result<(), String> {
        let request = json!({
            "storageType": "error",
            "reason": why.reason(),
            "message": message,
            "expires": self.expires,
        });
        self.create(name, &request)
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    /// A `reference` artifact: a URL the queue redirects readers to.
    pub async fn reference(&self, name: &str, url: &str, content_type: &str) -> Result<(), Error> {
        let request = json!({
            "storageType": "reference",
            "url": url,
            "contentType": content_type,
            "expires": self.expires,
        });
        self.create(name, &request).await.map(drop)
    }

    /// A `link` artifact: another artifact of the same run, under a second name.
    pub async fn link(&self, name: &str, target: &str, content_type: &str) -> Result<(), Error> {
        let request = json!({
            "storageType": "link",
            "artifact": target,
            "contentType": content_type,
            "expires": self.expires,
        });
        self.create(name, &request).await.map(drop)
    }
}

fn is_retryable(error: &Error) -> bool {
    match error.status() {
        Some(status) => status.is_server_error(),
        None => true,
    }
}
