//! Where the blobs of `s3` artifacts live under the data directory:
//! `blobs/<taskId>/<runId>/<hex SHA-256 of the artifact name>`. The API writes and serves them
//! (`api::blobs`); the engine deletes them when their artifact or task expires. Both read the
//! layout here, below them both.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::Slugid;

/// Where the blobs of every run of `task_id` live, under the data directory `data_dir`.
pub fn task_dir(data_dir: &Path, task_id: Slugid) -> PathBuf {
    data_dir.join("blobs").join(task_id.to_string())
}

/// The file of the blob of artifact `name` of run `run_id` of `task_id`: the name is hashed, so
/// any printable name makes a safe file name.
pub fn blob_file(data_dir: &Path, task_id: Slugid, run_id: u32, name: &str) -> PathBuf {
    task_dir(data_dir, task_id)
        .join(run_id.to_string())
        .join(name_digest(name))
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
}
