//! The two file-system moves that durability rests on, written once.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::Error;

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| Error::io("syncing directory", dir, error))
}

/// Replaces `path` with `bytes` so that a crash leaves either the old file or the new one:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no parent directory", path.display())))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file =
        File::create(&temporary).map_err(|error| Error::io("creating", &temporary, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| Error::io("writing", &temporary, error))?;
    std::fs::rename(&temporary, path).map_err(|error| Error::io("renaming", &temporary, error))?;
    sync_dir(dir)
}
