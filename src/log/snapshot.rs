//! Snapshots: a partition's folded state as of an offset, so a restart replays only the tail.
//!
//! A snapshot file is `magic | partition: u32 | offset: u64 | length: u64 | crc32c: u32 |
//! state`, where `state` is the codec's encoding of the state and the checksum covers
//! everything before it and the state itself. Files are written atomically (temporary file,
//! fsync, rename, fsync of the directory) and named by offset; loading takes the newest one that
//! is intact and decodes, and reports and skips any other.

use std::path::{Path, PathBuf};

use super::codec::{self, Versioned};
use super::durable_file::write_atomically;
use super::{Error, Offset};

/// The last byte counts the layouts of the state: a snapshot of an older layout is reported
/// and skipped (the log after it is replayed instead), never misread.
const MAGIC: &[u8; 8] = b"TFSNAP\x00\x04";
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 4;
const SUFFIX: &str = ".snap";

/// The snapshot directory of one partition.
pub fn partition_dir(data_dir: &Path, partition: u32) -> PathBuf {
    data_dir
        .join("snapshots")
        .join(format!("partition-{partition:04}"))
}

/// A snapshot file found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The first offset that the snapshot does not include: replay continues from here.
    pub offset: Offset,
    pub path: PathBuf,
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("cannot read it: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error("{0}")]
    Damaged(&'static str),
    #[error("its state does not decode: {0}")]
    State(#[from] codec::Error),
}

/// Writes the state of `partition` as of `offset` and prunes snapshots older than the newest
/// few. Returns the file written.
pub fn write<T: Versioned>(
    data_dir: &Path,
    partition: u32,
    offset: Offset,
    state: &T,
) -> Result<PathBuf, Error> {
    write_encoded(
        data_dir,
        partition,
        offset,
        &encode(partition, offset, state)?,
    )
}

/// The bytes of a snapshot file for `state`. Split from [`write_encoded`] so that a caller can
/// capture its state now and write it later, once everything up to `offset` is durable.
pub fn encode<T: Versioned>(partition: u32, offset: Offset, state: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0; HEADER_BYTES];
    codec::encode_into(state, &mut bytes)?;
    let length = (bytes.len() - HEADER_BYTES) as u64;
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&partition.to_le_bytes());
    bytes[12..20].copy_from_slice(&offset.to_le_bytes());
    bytes[20..28].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..28]), &bytes[HEADER_BYTES..]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Writes a snapshot made by [`encode`] and prunes older ones. Returns the file written.
pub fn write_encoded(
    data_dir: &Path,
    partition: u32,
    offset: Offset,
    bytes: &[u8],
) -> Result<PathBuf, Error> {
    let dir = partition_dir(data_dir, partition);
    std::fs::create_dir_all(&dir).map_err(|error| Error::io("creating", &dir, error))?;
    let path = dir.join(format!("{offset:020}{SUFFIX}"));
    write_atomically(&path, bytes)?;
    prune(data_dir, partition, offset)?;
    Ok(path)
}

/// Keeps the snapshot just written and, as a fallback in case it turns out unreadable later,
/// the newest older one that is intact; removes the rest, damaged ones included.
fn prune(data_dir: &Path, partition: u32, newest: Offset) -> Result<(), Error> {
    let mut fallback_kept = false;
    for file in list(data_dir, partition)?.into_iter().rev() {
        if file.offset >= newest {
            continue;
        }
        if !fallback_kept && read_checked(&file, partition).is_ok() {
            fallback_kept = true;
            continue;
        }
        std::fs::remove_file(&file.path)
            .map_err(|error| Error::io("removing", &file.path, error))?;
    }
    Ok(())
}

/// The snapshot files of `partition`, oldest first (by the offset in their names).
pub fn list(data_dir: &Path, partition: u32) -> Result<Vec<SnapshotFile>, Error> {
    let dir = partition_dir(data_dir, partition);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::io("listing", &dir, error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("listing", &dir, error))?;
        let name = entry.file_name();
        let offset = name
            .to_str()
            .and_then(|name| name.strip_suffix(SUFFIX))
            .filter(|digits| digits.len() == 20)
            .and_then(|digits| digits.parse().ok());
        match offset {
            Some(offset) => files.push(SnapshotFile {
                offset,
                path: entry.path(),
            }),
            None => {
                tracing::warn!(path = %entry.path().display(), "ignoring a file that is not a snapshot")
            }
        }
    }
    files.sort_by_key(|file| file.offset);
    Ok(files)
}

/// Reads and checks one snapshot file, returning its decoded state.
pub fn read<T: Versioned>(file: &SnapshotFile, partition: u32) -> Result<T, Invalid> {
    let bytes = read_checked(file, partition)?;
    Ok(codec::decode(&bytes[HEADER_BYTES..])?)
}

/// Checks a snapshot file's frame and the codec version of its state without decoding the
/// state (whose type only the engine knows); returns the size of the encoded state.
pub fn check(file: &SnapshotFile, partition: u32) -> Result<u64, Invalid> {
    let bytes = read_checked(file, partition)?;
    match bytes.get(HEADER_BYTES) {
        Some(&codec::FORMAT_VERSION) => Ok((bytes.len() - HEADER_BYTES) as u64),
        Some(&found) => Err(Invalid::State(codec::Error::UnknownVersion { found })),
        None => Err(Invalid::State(codec::Error::Empty)),
    }
}

fn read_checked(file: &SnapshotFile, partition: u32) -> Result<Vec<u8>, Invalid> {
    let bytes = std::fs::read(&file.path)?;
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(Invalid::Damaged("not a snapshot file"));
    }
    let field = |range: std::ops::Range<usize>| -> [u8; 8] {
        let mut value = [0u8; 8];
        value[..range.len()].copy_from_slice(&bytes[range]);
        value
    };
    let recorded_partition = u64::from_le_bytes(field(8..12)) as u32;
    let offset = u64::from_le_bytes(field(12..20));
    let length = u64::from_le_bytes(field(20..28));
    let crc = u64::from_le_bytes(field(28..32)) as u32;
    if length != (bytes.len() - HEADER_BYTES) as u64 {
        return Err(Invalid::Damaged("truncated or extended"));
    }
    if crc32c::crc32c_append(crc32c::crc32c(&bytes[..28]), &bytes[HEADER_BYTES..]) != crc {
        return Err(Invalid::Damaged("checksum mismatch"));
    }
    if recorded_partition != partition || offset != file.offset {
        return Err(Invalid::Damaged(
            "partition or offset differ from its place",
        ));
    }
    Ok(bytes)
}

/// The newest usable snapshot of `partition` as `(offset, state)`. Unusable ones are reported
/// and skipped; with none usable, replay starts from the beginning of the log.
pub fn load_newest<T: Versioned>(
    data_dir: &Path,
    partition: u32,
    log_end: Offset,
) -> Result<Option<(Offset, T)>, Error> {
    for file in list(data_dir, partition)?.into_iter().rev() {
        // State past the log's end stands for records the log no longer holds (a flipped last
        // record cut as a torn tail): replaying on from it would skip the records appended
        // next, so an older snapshot serves instead.
        if file.offset > log_end {
            tracing::warn!(
                partition,
                path = %file.path.display(),
                log_end,
                "skipping a snapshot past the log's end"
            );
            continue;
        }
        match read(&file, partition) {
            Ok(state) => return Ok(Some((file.offset, state))),
            Err(invalid) => tracing::warn!(
                partition,
                path = %file.path.display(),
                reason = %invalid,
                "skipping an unusable snapshot"
            ),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Versioned for Vec<u32> {}
    impl Versioned for u64 {}

    #[test]
    fn newest_valid_snapshot_wins_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        assert_eq!(load_newest::<Vec<u32>>(data, 0, u64::MAX).unwrap(), None);
        write(data, 0, 10, &vec![1u32]).unwrap();
        write(data, 0, 20, &vec![1u32, 2]).unwrap();
        assert_eq!(
            load_newest(data, 0, u64::MAX).unwrap(),
            Some((20, vec![1u32, 2]))
        );
        // A log that ends before the newest snapshot is served by the older one.
        assert_eq!(load_newest(data, 0, 19).unwrap(), Some((10, vec![1u32])));

        // Truncate the newest: the older one is used.
        let newest = list(data, 0).unwrap().pop().unwrap();
        let bytes = std::fs::read(&newest.path).unwrap();
        std::fs::write(&newest.path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(
            load_newest(data, 0, u64::MAX).unwrap(),
            Some((10, vec![1u32]))
        );

        // An unknown codec version in the state is skipped the same way. (Writing it also
        // pruned the damaged snapshot at 20 and kept the intact one at 10.)
        write(data, 0, 30, &vec![3u32]).unwrap();
        let newest = list(data, 0).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&newest.path).unwrap();
        bytes[HEADER_BYTES] = 99;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..28]), &bytes[HEADER_BYTES..]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&newest.path, &bytes).unwrap();
        assert!(matches!(
            read::<Vec<u32>>(&newest, 0),
            Err(Invalid::State(codec::Error::UnknownVersion { found: 99 }))
        ));
        assert_eq!(
            load_newest(data, 0, u64::MAX)
                .unwrap()
                .map(|(offset, _): (u64, Vec<u32>)| offset),
            Some(10)
        );

        // A snapshot of another partition copied here does not pass for this one.
        std::fs::create_dir_all(partition_dir(data, 1)).unwrap();
        std::fs::copy(
            partition_dir(data, 0).join(format!("{:020}.snap", 10)),
            partition_dir(data, 1).join(format!("{:020}.snap", 10)),
        )
        .unwrap();
        assert_eq!(load_newest::<Vec<u32>>(data, 1, u64::MAX).unwrap(), None);
    }

    #[test]
    fn keeps_only_the_newest_few() {
        let dir = tempfile::tempdir().unwrap();
        for offset in 1..=5 {
            write(dir.path(), 3, offset, &offset).unwrap();
        }
        let offsets: Vec<u64> = list(dir.path(), 3)
            .unwrap()
            .iter()
            .map(|file| file.offset)
            .collect();
        assert_eq!(offsets, vec![4, 5]);
    }
}
