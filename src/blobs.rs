//! Where the blobs of `s3` artifacts live: files under the data directory, or objects in an
//! S3-compatible store that several Taskfold nodes share (`[blobs] backend`). Both lay blobs out
//! alike, `blobs/<taskId>/<runId>/<hex SHA-256 of the artifact name>`, an object's key with
//! `[blobs.s3] prefix` before it. The API writes and serves them (`api::blobs`); the engine
//! deletes them when their artifact or task expires. Both go through [`Store`], below them both.
//!
//! Clients never see the backend: they upload to and download from Taskfold's own blob URLs,
//! which stream to and from the store. A blob is either whole or absent, and an upload answers
//! only once its blob is durable: a synced file linked into place, or an object the store
//! acknowledged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectKey;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::Slugid;

/// Bytes read from a blob file at a time when serving it.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// An upload up to this size goes to the object store in one PUT; a larger one in parts of
/// this size (S3 takes parts of 5 MiB and more). Each upload holds at most
/// `PARTS_IN_FLIGHT + 1` parts in memory.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload sent to the object store at once.
const PARTS_IN_FLIGHT: usize = 2;
/// How long the start waits for the object store to answer its first request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where blobs live (`[blobs] backend`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files under the data directory: one node's disk.
    Files,
    /// Objects in an S3-compatible store (`[blobs.s3]`).
    S3,
}

/// The S3-compatible object store (`[blobs.s3]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The store's URL; empty: AWS's endpoint for the region.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Put before every object key (`taskfold/` gives `taskfold/blobs/…`).
    pub prefix: String,
    /// Whether `http://` endpoints are allowed (local test servers); else only `https://`.
    pub allow_http: bool,
    /// `https://<bucket>.<endpoint host>/<key>` requests instead of `<endpoint>/<bucket>/<key>`.
    pub virtual_hosted_style: bool,
}

/// Never prints the secret, so the settings may be logged.
impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the blob already exists")]
    AlreadyExists,
    #[error("{action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{action} {key}: {source}")]
    Object {
        action: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("[blobs.s3] {0}")]
    Config(String),
}

impl Error {
    fn file(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::File {
            action,
            path,
            source,
        }
    }

    fn object(action: &'static str, key: &ObjectKey) -> impl FnOnce(object_store::Error) -> Error {
        let key = key.to_string();
        move |source| Error::Object {
            action,
            key,
            source,
        }
    }
}

/// One blob: the artifact `name` of run `run_id` of `task_id`.
#[derive(Clone, Debug)]
pub struct BlobId {
    pub task_id: Slugid,
    pub run_id: u32,
    pub name: String,
}

impl BlobId {
    /// `<taskId>/<runId>/<name>`, as the blob's URL names it.
    pub fn url_path(&self) -> String {
        format!("{}/{}/{}", self.task_id, self.run_id, self.name)
    }
}

/// Where blobs live; cheap to clone, the API and the engine share one.
#[derive(Clone, Debug)]
pub enum Store {
    Files {
        /// The data directory: blobs are under its `blobs/`.
        data_dir: PathBuf,
    },
    Objects {
        store: Arc<dyn ObjectStore>,
        /// `[blobs.s3] prefix`, checked to make valid keys.
        prefix: Arc<str>,
    },
}

/// A blob being read: its length and its bytes.
pub struct Blob {
    pub length: u64,
    pub chunks: BoxStream<'static, Result<Bytes, Error>>,
}

impl Store {
    /// Whether the blobs are on this machine's disk (only this node can serve them), rather
    /// than in a store every node reaches.
    pub fn is_local(&self) -> bool {
        matches!(self, Store::Files { .. })
    }

    /// Blobs as files under `data_dir`.
    pub fn files(data_dir: &Path) -> Store {
        Store::Files {
            data_dir: data_dir.to_owned(),
        }
    }

    /// The store `backend` names; for S3, after one request shows that the bucket answers
    /// with these credentials, so that a wrong setting stops the start, not the first upload.
    pub async fn open(backend: Backend, s3: &S3Settings, data_dir: &Path) -> Result<Store, Error> {
        match backend {
            Backend::Files => Ok(Store::files(data_dir)),
            Backend::S3 => {
                let store = Store::s3(s3)?;
                store.probe().await?;
                Ok(store)
            }
        }
    }

    /// An S3 store as `settings` say, without a request.
    pub fn s3(settings: &S3Settings) -> Result<Store, Error> {
        let required = [
            ("bucket", &settings.bucket),
            ("region", &settings.region),
            ("access_key_id", &settings.access_key_id),
            ("secret_access_key", &settings.secret_access_key),
        ];
        if let Some((key, _)) = required.iter().find(|(_, value)| value.trim().is_empty()) {
            return Err(Error::Config(format!(
                "`{key}` is empty; the s3 backend needs it"
            )));
        }
        let endpoint = settings.endpoint.trim();
        if !endpoint.is_empty() {
            match endpoint.split_once("://") {
                Some(("https", _)) => {}
                Some(("http", _)) if settings.allow_http => {}
                Some(("http", _)) => {
                    return Err(Error::Config(format!(
                        "endpoint `{endpoint}` is plain HTTP; set `allow_http = true` to use it"
                    )));
                }
                _ => {
                    return Err(Error::Config(format!(
                        "endpoint `{endpoint}` is not an http:// or https:// URL"
                    )));
                }
            }
        }
        let blobs_key = format!("{}blobs", settings.prefix);
        if !ObjectKey::parse(&blobs_key).is_ok_and(|key| key.as_ref() == blobs_key) {
            return Err(Error::Config(format!(
                "prefix `{}` does not make valid object keys (no leading `/`, no empty, `.` or \
                 `..` segments)",
                settings.prefix
            )));
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(settings.bucket.trim())
            .with_region(settings.region.trim())
            .with_access_key_id(settings.access_key_id.trim())
            .with_secret_access_key(settings.secret_access_key.trim())
            .with_allow_http(settings.allow_http)
            .with_virtual_hosted_style_request(settings.virtual_hosted_style);
        if !endpoint.is_empty() {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let store = builder
            .build()
            .map_err(|error| Error::Config(error.to_string()))?;
        Ok(Store::Objects {
            store: Arc::new(store),
            prefix: settings.prefix.as_str().into(),
        })
    }

    /// Lists the blobs' keys (the first page): an answer shows that the bucket is there and
    /// the credentials work (a HEAD of a missing key would not tell a missing bucket).
    async fn probe(&self) -> Result<(), Error> {
        let Store::Objects { store, prefix } = self else {
            return Ok(());
        };
        let blobs = ObjectKey::from(format!("{prefix}blobs"));
        match tokio::time::timeout(PROBE_TIMEOUT, store.list_with_delimiter(Some(&blobs))).await {
            Err(_) => Err(Error::Config(format!(
                "the object store did not answer within {PROBE_TIMEOUT:?}"
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Error::Config(format!(
                "the object store refused to list `{blobs}`: {error}"
            ))),
        }
    }

    fn file(data_dir: &Path, blob: &BlobId) -> PathBuf {
        blob_file(data_dir, blob.task_id, blob.run_id, &blob.name)
    }

    fn key(prefix: &str, blob: &BlobId) -> ObjectKey {
        ObjectKey::from(object_key(prefix, blob.task_id, blob.run_id, &blob.name))
    }

    /// The blob's length, if it is there.
    pub async fn length(&self, blob: &BlobId) -> Result<Option<u64>, Error> {
        match self {
            Store::Files { data_dir } => {
                let path = Store::file(data_dir, blob);
                match tokio::fs::metadata(&path).await {
                    Ok(metadata) => Ok(Some(metadata.len())),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(error) => Err(Error::file("looking for the blob", &path)(error)),
                }
            }
            Store::Objects { store, prefix } => {
                let key = Store::key(prefix, blob);
                match store.head(&key).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(error) => Err(Error::object("looking for the blob", &key)(error)),
                }
            }
        }
    }

    /// The blob's bytes, if it is there.
    pub async fn read(&self, blob: &BlobId) -> Result<Option<Blob>, Error> {
        match self {
            Store::Files { data_dir } => {
                let path = Store::file(data_dir, blob);
                let file = match tokio::fs::File::open(&path).await {
                    Ok(file) => file,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(error) => return Err(Error::file("opening the blob", &path)(error)),
                };
                let length = file
                    .metadata()
                    .await
                    .map_err(Error::file("reading the blob's size", &path))?
                    .len();
                let chunks = futures::stream::unfold(Some(file), move |file| {
                    let path = path.clone();
                    async move {
                        let mut file = file?;
                        let mut buffer = vec![0; READ_CHUNK_BYTES];
                        match file.read(&mut buffer).await {
                            Ok(0) => None,
                            Ok(read) => {
                                buffer.truncate(read);
                                Some((Ok(Bytes::from(buffer)), Some(file)))
                            }
                            Err(error) => {
                                let error = Error::file("reading the blob", &path)(error);
                                tracing::error!(%error, "reading a blob being served");
                                Some((Err(error), None))
                            }
                        }
                    }
                });
                Ok(Some(Blob {
                    length,
                    chunks: chunks.boxed(),
                }))
            }
            Store::Objects { store, prefix } => {
                let key = Store::key(prefix, blob);
                let object = match store.get(&key).await {
                    Ok(object) => object,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(error) => return Err(Error::object("reading the blob", &key)(error)),
                };
                let length = object.meta.size;
                let chunks = object.into_stream().map(move |chunk| {
                    chunk.map_err(|source| {
                        let error = Error::object("reading the blob", &key)(source);
                        tracing::error!(%error, "reading a blob being served");
                        error
                    })
                });
                Ok(Some(Blob {
                    length,
                    chunks: chunks.boxed(),
                }))
            }
        }
    }

    /// Starts writing the blob; nothing is visible until [`Upload::finish`].
    pub async fn create(&self, blob: &BlobId) -> Result<Upload, Error> {
        match self {
            Store::Files { data_dir } => {
                let path = Store::file(data_dir, blob);
                let directory = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let temporary = directory.join(format!(".upload-{}", Slugid::nice()));
                tokio::fs::create_dir_all(&directory)
                    .await
                    .map_err(Error::file("making the blob's directory", &directory))?;
                let file = tokio::fs::File::create(&temporary)
                    .await
                    .map_err(Error::file("storing the blob", &temporary))?;
                Ok(Upload::File {
                    file,
                    temporary,
                    path,
                    directory,
                })
            }
            Store::Objects { store, prefix } => Ok(Upload::Object {
                store: store.clone(),
                key: Store::key(prefix, blob),
                buffered: Vec::new(),
                buffered_bytes: 0,
                parts: None,
            }),
        }
    }

    /// Deletes the blob; one already gone is no failure.
    pub async fn delete(&self, blob: &BlobId) -> Result<(), Error> {
        match self {
            Store::Files { data_dir } => {
                let path = Store::file(data_dir, blob);
                match tokio::fs::remove_file(&path).await {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        Err(Error::file("deleting the blob", &path)(error))
                    }
                    _ => Ok(()),
                }
            }
            Store::Objects { store, prefix } => {
                let key = Store::key(prefix, blob);
                match store.delete(&key).await {
                    Err(error) if !matches!(error, object_store::Error::NotFound { .. }) => {
                        Err(Error::object("deleting the blob", &key)(error))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Deletes every blob of every run of `task_id`.
    pub async fn delete_task(&self, task_id: Slugid) -> Result<(), Error> {
        match self {
            Store::Files { data_dir } => {
                let directory = task_dir(data_dir, task_id);
                match tokio::fs::remove_dir_all(&directory).await {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        Err(Error::file("deleting the task's blobs", &directory)(error))
                    }
                    _ => Ok(()),
                }
            }
            Store::Objects { store, prefix } => {
                // A listing is by whole segments: `blobs/<taskId>` never matches another task.
                let task_key = ObjectKey::from(format!("{prefix}blobs/{task_id}"));
                let keys = store
                    .list(Some(&task_key))
                    .map(|meta| meta.map(|meta| meta.location))
                    .boxed();
                let mut deleted = store.delete_stream(keys);
                while let Some(result) = deleted.next().await {
                    match result {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(error) => {
                            return Err(Error::object("deleting the task's blobs", &task_key)(
                                error,
                            ));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// A blob being written: [`Upload::write`] its bytes, then [`Upload::finish`] or
/// [`Upload::abort`].
pub enum Upload {
    File {
        file: tokio::fs::File,
        /// Where the bytes go until they are whole: a hidden file beside the blob's.
        temporary: PathBuf,
        path: PathBuf,
        directory: PathBuf,
    },
    Object {
        store: Arc<dyn ObjectStore>,
        key: ObjectKey,
        /// The bytes received before there is a part's worth: a small blob is one PUT.
        buffered: Vec<Bytes>,
        buffered_bytes: usize,
        /// The multipart upload of a blob larger than a part, once it has started.
        parts: Option<WriteMultipart>,
    },
}

impl Upload {
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        match self {
            Upload::File {
                file, temporary, ..
            } => file
                .write_all(&chunk)
                .await
                .map_err(Error::file("storing the blob", temporary)),
            Upload::Object {
                store,
                key,
                buffered,
                buffered_bytes,
                parts,
            } => {
                let parts = match parts {
                    Some(parts) => {
                        parts.put(chunk);
                        parts
                    }
                    None => {
                        *buffered_bytes += chunk.len();
                        buffered.push(chunk);
                        if *buffered_bytes <= PART_BYTES {
                            return Ok(());
                        }
                        let upload = store
                            .put_multipart(key)
                            .await
                            .map_err(Error::object("starting the blob's upload", key))?;
                        let mut started = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                        for chunk in buffered.drain(..) {
                            started.put(chunk);
                        }
                        *buffered_bytes = 0;
                        parts.insert(started)
                    }
                };
                // Waits while the parts in flight are many: the sender's pace, bounded memory.
                parts
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(Error::object("storing the blob", key))
            }
        }
    }

    /// Makes the blob whole and durable; [`Error::AlreadyExists`] if another upload of it
    /// finished first.
    pub async fn finish(self) -> Result<(), Error> {
        match self {
            Upload::File {
                file,
                temporary,
                path,
                directory,
            } => {
                let linked = async {
                    file.sync_all()
                        .await
                        .map_err(Error::file("storing the blob", &temporary))?;
                    // A link, unlike a rename, never replaces: of two uploads at once, one wins.
                    match tokio::fs::hard_link(&temporary, &path).await {
                        Ok(()) => Ok(()),
                        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                            Err(Error::AlreadyExists)
                        }
                        Err(error) => Err(Error::file("storing the blob", &path)(error)),
                    }
                }
                .await;
                let _ = tokio::fs::remove_file(&temporary).await;
                linked?;
                let synced = directory.clone();
                tokio::task::spawn_blocking(move || std::fs::File::open(synced)?.sync_all())
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|synced| synced)
                    .map_err(Error::file("syncing the blob's directory", &directory))
            }
            Upload::Object {
                key,
                buffered,
                parts: Some(parts),
                ..
            } => {
                debug_assert!(buffered.is_empty());
                // S3 has no "create only" for multipart uploads: of two large uploads of one
                // artifact at once (both with its signed URL), the last to finish stays.
                parts
                    .finish()
                    .await
                    .map(|_| ())
                    .map_err(Error::object("storing the blob", &key))
            }
            Upload::Object {
                store,
                key,
                buffered,
                parts: None,
                ..
            } => {
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                match store
                    .put_opts(&key, PutPayload::from_iter(buffered), options)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(object_store::Error::AlreadyExists { .. }) => Err(Error::AlreadyExists),
                    Err(error) => Err(Error::object("storing the blob", &key)(error)),
                }
            }
        }
    }

    /// Drops what was written.
    pub async fn abort(self) {
        match self {
            Upload::File {
                file, temporary, ..
            } => {
                drop(file);
                let _ = tokio::fs::remove_file(&temporary).await;
            }
            Upload::Object {
                key,
                parts: Some(parts),
                ..
            } => {
                if let Err(error) = parts.abort().await {
                    tracing::warn!(%key, %error, "could not abort a blob's multipart upload");
                }
            }
            Upload::Object { parts: None, .. } => {}
        }
    }
}

/// Where the blobs of every run of `task_id` live, under the data directory `data_dir`.
fn task_dir(data_dir: &Path, task_id: Slugid) -> PathBuf {
    data_dir.join("blobs").join(task_id.to_string())
}

/// The file of the blob of artifact `name` of run `run_id` of `task_id`: the name is hashed, so
/// any printable name makes a safe file name.
fn blob_file(data_dir: &Path, task_id: Slugid, run_id: u32, name: &str) -> PathBuf {
    task_dir(data_dir, task_id)
        .join(run_id.to_string())
        .join(name_digest(name))
}

/// The object key of the same blob: the file's path under the data directory, after `prefix`.
fn object_key(prefix: &str, task_id: Slugid, run_id: u32, name: &str) -> String {
    format!("{prefix}blobs/{task_id}/{run_id}/{}", name_digest(name))
}

/// A file name for an artifact name: the hex SHA-256 of it.
fn name_digest(name: &str) -> String {
    Sha256::digest(name.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blobs written by earlier versions stay where this one looks for them.
    #[test]
    fn the_layout_is_stable() {
        let task_id: Slugid = "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
        assert_eq!(
            blob_file(Path::new("/data"), task_id, 2, "public/logs/live.log"),
            Path::new(
                "/data/blobs/fN1SbArXTPSVFNUvaOlinQ/2/\
                 4b82e7302cd8c792f8eb69bced7be6815f4c2b34b7506a46ebf46aa4f94cadfc"
            )
        );
    }

    /// Object keys mirror the files' layout, after the prefix.
    #[test]
    fn object_keys_mirror_the_files() {
        let task_id: Slugid = "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
        assert_eq!(
            object_key("taskfold/", task_id, 2, "public/logs/live.log"),
            "taskfold/blobs/fN1SbArXTPSVFNUvaOlinQ/2/\
             4b82e7302cd8c792f8eb69bced7be6815f4c2b34b7506a46ebf46aa4f94cadfc"
        );
    }

    fn s3_settings() -> S3Settings {
        S3Settings {
            endpoint: "http://127.0.0.1:8333".into(),
            bucket: "blobs".into(),
            region: "us-east-1".into(),
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            prefix: String::new(),
            allow_http: true,
            virtual_hosted_style: false,
        }
    }

    #[test]
    fn bad_s3_settings_are_refused_with_the_key_to_fix() {
        let refused = |settings: S3Settings| match Store::s3(&settings) {
            Err(Error::Config(message)) => message,
            other => panic!("not refused: {other:?}"),
        };
        assert!(Store::s3(&s3_settings()).is_ok());
        let message = refused(S3Settings {
            bucket: " ".into(),
            ..s3_settings()
        });
        assert!(message.contains("`bucket`"), "{message}");
        let message = refused(S3Settings {
            secret_access_key: String::new(),
            ..s3_settings()
        });
        assert!(message.contains("`secret_access_key`"), "{message}");
        let message = refused(S3Settings {
            allow_http: false,
            ..s3_settings()
        });
        assert!(message.contains("allow_http"), "{message}");
        let message = refused(S3Settings {
            endpoint: "127.0.0.1:8333".into(),
            ..s3_settings()
        });
        assert!(message.contains("not an http"), "{message}");
        for prefix in ["/taskfold/", "a//", "../"] {
            let message = refused(S3Settings {
                prefix: prefix.into(),
                ..s3_settings()
            });
            assert!(message.contains("prefix"), "{prefix}: {message}");
        }
        assert!(
            Store::s3(&S3Settings {
                prefix: "taskfold/".into(),
                ..s3_settings()
            })
            .is_ok()
        );
    }

    #[test]
    fn the_secret_is_never_printed() {
        let printed = format!("{:?}", s3_settings());
        assert!(
            printed.contains("blobs") && !printed.contains("secret\""),
            "{printed}"
        );
    }

    fn blob(name: &str) -> BlobId {
        BlobId {
            task_id: "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap(),
            run_id: 0,
            name: name.into(),
        }
    }

    async fn read_all(store: &Store, blob: &BlobId) -> Option<Vec<u8>> {
        let read = store.read(blob).await.unwrap()?;
        let chunks: Vec<Bytes> = read.chunks.map(Result::unwrap).collect().await;
        let bytes = chunks.concat();
        assert_eq!(read.length, bytes.len() as u64);
        Some(bytes)
    }

    /// What the API and the engine rely on, against one store.
    async fn a_store_keeps_its_promises(store: Store) {
        let (small, large) = (blob("public/small.txt"), blob("private/large.bin"));
        assert_eq!(store.length(&small).await.unwrap(), None);
        assert!(read_all(&store, &small).await.is_none());

        let mut upload = store.create(&small).await.unwrap();
        upload.write(Bytes::from_static(b"hello ")).await.unwrap();
        assert_eq!(
            store.length(&small).await.unwrap(),
            None,
            "visible before finish"
        );
        upload.write(Bytes::from_static(b"blob")).await.unwrap();
        upload.finish().await.unwrap();
        assert_eq!(read_all(&store, &small).await.unwrap(), b"hello blob");
        assert_eq!(store.length(&small).await.unwrap(), Some(10));

        let mut again = store.create(&small).await.unwrap();
        again.write(Bytes::from_static(b"other")).await.unwrap();
        assert!(matches!(again.finish().await, Err(Error::AlreadyExists)));
        assert_eq!(read_all(&store, &small).await.unwrap(), b"hello blob");

        // More than a part, in chunks as HTTP bodies arrive.
        let bytes: Vec<u8> = (0..PART_BYTES * 2 + 12345).map(|at| at as u8).collect();
        let mut upload = store.create(&large).await.unwrap();
        for chunk in bytes.chunks(64 * 1024) {
            upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        upload.finish().await.unwrap();
        assert!(read_all(&store, &large).await.unwrap() == bytes);

        // Aborted uploads leave nothing, whether one PUT or parts were under way.
        for length in [1, PART_BYTES + 1] {
            let mut aborted = store.create(&blob("public/aborted")).await.unwrap();
            aborted.write(Bytes::from(vec![7; length])).await.unwrap();
            aborted.abort().await;
            assert_eq!(store.length(&blob("public/aborted")).await.unwrap(), None);
        }

        store.delete(&small).await.unwrap();
        store.delete(&small).await.unwrap();
        assert_eq!(store.length(&small).await.unwrap(), None);
        store.delete_task(small.task_id).await.unwrap();
        assert_eq!(store.length(&large).await.unwrap(), None);
        store.delete_task(small.task_id).await.unwrap();
    }

    #[tokio::test]
    async fn the_files_backend_keeps_its_promises() {
        let dir = tempfile::tempdir().unwrap();
        a_store_keeps_its_promises(Store::files(dir.path())).await;
        // Nothing left behind: no temporary files, no blobs of the deleted task.
        assert!(!dir.path().join("blobs/fN1SbArXTPSVFNUvaOlinQ").exists());
    }

    /// Against the S3-compatible server tests/setup/s3.sh starts, when it is there.
    #[tokio::test]
    async fn the_s3_backend_keeps_its_promises() {
        let variable = |name: &str| std::env::var(format!("TASKFOLD_TEST_S3_{name}")).ok();
        let Some(endpoint) = variable("ENDPOINT") else {
            eprintln!("TASKFOLD_TEST_S3_ENDPOINT is not set: no S3 server to test against");
            return;
        };
        let settings = S3Settings {
            endpoint,
            bucket: variable("BUCKET").unwrap(),
            access_key_id: variable("ACCESS_KEY_ID").unwrap(),
            secret_access_key: variable("SECRET_ACCESS_KEY").unwrap(),
            prefix: format!("store-test-{}/", Slugid::nice()),
            ..s3_settings()
        };
        let store = Store::open(Backend::S3, &settings, Path::new("/nonexistent"))
            .await
            .unwrap();
        a_store_keeps_its_promises(store).await;
    }
}
