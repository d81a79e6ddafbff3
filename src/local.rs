//! The one-machine farm of `taskfold up`: the queue on the embedded log and a Docker worker,
//! both under one data directory (`./taskfold-data` by default). Its credentials are made once,
//! kept in `<data-dir>/credentials.json` (readable by its owner only) and found there by
//! `taskfold task …` when the environment names no deployment.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::Credentials;

/// Where `taskfold up` keeps everything unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "taskfold-data";
/// The task queue of the local Docker worker.
pub const DEFAULT_TASK_QUEUE: &str = "taskfold/docker";
const CREDENTIALS_FILE: &str = "credentials.json";
/// The client with every scope.
pub const ROOT_CLIENT_ID: &str = "static/taskcluster/root";

/// What a local farm needs to be reached and to keep task credentials valid across restarts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalFarm {
    pub root_url: String,
    pub root_access_token: String,
    /// Signs the temporary credentials of claims (`auth.queue_access_token`).
    pub queue_access_token: String,
}

impl LocalFarm {
    pub fn root_credentials(&self) -> Credentials {
        Credentials {
            client_id: ROOT_CLIENT_ID.to_owned(),
            access_token: self.root_access_token.clone(),
            certificate: None,
        }
    }

    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(CREDENTIALS_FILE)
    }

    /// The farm's credentials, made and stored the first time.
    pub fn load_or_create(data_dir: &Path, root_url: &str) -> std::io::Result<LocalFarm> {
        let path = Self::path(data_dir);
        if let Some(mut farm) = Self::load(data_dir)? {
            if farm.root_url != root_url {
                farm.root_url = root_url.to_owned();
                farm.store(&path)?;
            }
            return Ok(farm);
        }
        std::fs::create_dir_all(data_dir)?;
        let farm = LocalFarm {
            root_url: root_url.to_owned(),
            root_access_token: random_token(),
            queue_access_token: random_token(),
        };
        farm.store(&path)?;
        Ok(farm)
    }

    /// The farm of `data_dir`, if `taskfold up` ran there.
    pub fn load(data_dir: &Path) -> std::io::Result<Option<LocalFarm>> {
        match std::fs::read(Self::path(data_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn store(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let temporary = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    }
}

/// The local worker's id: `docker-` and a digest of the data directory's full path, so that two
/// farms on one machine never take each other's containers for their own leftovers.
pub fn worker_id(data_dir: &Path) -> String {
    use sha2::Digest;
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("docker-{hex}")
}

/// 32 random bytes, base64url: Taskcluster's access token shape.
fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn farms_in_different_directories_have_different_workers() {
        let one = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        assert_eq!(worker_id(one.path()), worker_id(one.path()));
        assert_ne!(worker_id(one.path()), worker_id(other.path()));
        assert!(worker_id(one.path()).starts_with("docker-"));
    }

    #[test]
    fn credentials_are_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalFarm::load_or_create(dir.path(), "http://127.0.0.1:1").unwrap();
        let second = LocalFarm::load_or_create(dir.path(), "http://127.0.0.1:2").unwrap();
        assert_eq!(first.root_access_token, second.root_access_token);
        assert_eq!(first.queue_access_token, second.queue_access_token);
        assert_eq!(second.root_url, "http://127.0.0.1:2");
        assert_ne!(first.root_access_token, first.queue_access_token);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
