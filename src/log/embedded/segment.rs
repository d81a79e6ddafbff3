//! Segment files: the on-disk record format and the scan that validates it.
//!
//! A record is `length: u32 LE | crc32c: u32 LE | payload`, where the checksum covers the
//! length bytes and the payload (so a damaged length is caught too). A length of zero marks
//! the end of the records: the writer preallocates segments with zeros, and payloads are never
//! empty (every encoded value starts with its codec version byte).

use std::path::{Path, PathBuf};

use crate::log::Offset;

pub const HEADER_BYTES: usize = 8;
/// Larger lengths are treated as damage rather than believed.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

const SEGMENT_SUFFIX: &str = ".seg";

/// Appends the framed record for `payload` to `buffer`.
pub fn frame_into(payload: &[u8], buffer: &mut Vec<u8>) {
    let length = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&length), payload);
    buffer.extend_from_slice(&length);
    buffer.extend_from_slice(&crc.to_le_bytes());
    buffer.extend_from_slice(payload);
}

/// How a segment's bytes end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// The last record ends exactly at the end of the bytes.
    Exact,
    /// Only zeros follow the last record: preallocated space.
    Zeros,
    /// Bytes follow the last valid record that are not a valid record: a torn or damaged
    /// write. Everything from `position` on is not part of the log.
    Damaged { position: u64, reason: String },
}

/// The result of walking a segment's records.
#[derive(Clone, Debug)]
pub struct Scan {
    pub records: u64,
    /// Bytes up to the end of the last valid record.
    pub valid_bytes: u64,
    pub tail: Tail,
}

/// Walks the valid records of `bytes`, calling `visit(index, payload)` for each, and stops at
/// the first one that is not valid.
pub fn scan<E>(
    bytes: &[u8],
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Scan, E> {
    let mut position = 0usize;
    let mut records = 0u64;
    let tail = loop {
        let rest = &bytes[position..];
        if rest.is_empty() {
            break Tail::Exact;
        }
        let damaged = |reason: &str| {
            if rest.iter().all(|&byte| byte == 0) {
                Tail::Zeros
            } else {
                Tail::Damaged {
                    position: position as u64,
                    reason: reason.to_owned(),
                }
            }
        };
        let payload = match record_at(rest) {
            Ok(payload) => payload,
            Err(reason) => break damaged(reason),
        };
        visit(records, payload)?;
        records += 1;
        position += HEADER_BYTES + payload.len();
    };
    Ok(Scan {
        records,
        valid_bytes: position as u64,
        tail,
    })
}

/// The payload of the record at the start of `rest`, or why there is no valid record there.
fn record_at(rest: &[u8]) -> Result<&[u8], &'static str> {
    if rest.len() < HEADER_BYTES {
        return Err("incomplete record header");
    }
    let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if length == 0 {
        return Err("zero length followed by non-zero bytes");
    }
    if length > MAX_RECORD_BYTES {
        return Err("record length beyond the maximum");
    }
    if rest.len() - HEADER_BYTES < length {
        return Err("record runs past the end of the segment");
    }
    let payload = &rest[HEADER_BYTES..HEADER_BYTES + length];
    if crc32c::crc32c_append(crc32c::crc32c(&rest[..4]), payload) != crc {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

/// What a search for a valid record after damage found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// A valid record starts at this byte.
    Found(u64),
    /// No byte position holds a valid record.
    Nothing,
    /// The search ran out of its budget before it could tell (only garbage unlike anything the
    /// writer produces gets here): a caller must act as if a record followed.
    Unsure,
}

/// Bytes a search may checksum. Each byte position whose length field fits in the segment is a
/// candidate costing its length; damage in real records meets a record boundary within one
/// record, but megabytes of random bytes could cost terabytes.
pub const SEARCH_BUDGET_BYTES: u64 = 4 << 30;

/// Looks for the first valid record at or after byte `from` of `bytes`, trying every byte
/// position (a damaged length gives no way to skip ahead), checksumming at most `budget`
/// bytes. This is what tells damage with records after it, which must not be cut, from a torn
/// tail, which may be: a crash leaves no valid record after the unfinished write. A false
/// match needs a checksum to match by chance.
pub fn next_valid_record(bytes: &[u8], from: u64, budget: &mut u64) -> Search {
    let Ok(from) = usize::try_from(from) else {
        return Search::Nothing;
    };
    for position in from..bytes.len().saturating_sub(HEADER_BYTES) {
        let rest = &bytes[position..];
        let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        if length == 0 || length > (rest.len() - HEADER_BYTES) as u64 {
            continue;
        }
        if length > *budget {
            return Search::Unsure;
        }
        *budget -= length;
        if record_at(rest).is_ok() {
            return Search::Found(position as u64);
        }
    }
    Search::Nothing
}

/// How many valid records `bytes` holds from byte `from` on, across any damage between them
/// (what a repair sets aside), and whether the count is complete (the search stayed within
/// its budget).
pub fn count_valid_records(bytes: &[u8], from: u64) -> (u64, bool) {
    let mut budget = SEARCH_BUDGET_BYTES;
    let mut count = 0;
    let mut position = from;
    loop {
        match next_valid_record(bytes, position, &mut budget) {
            Search::Found(start) => {
                let rest = &bytes[start as usize..];
                let found = scan::<std::convert::Infallible>(rest, |_, _| Ok(()))
                    .unwrap_or_else(|never| match never {});
                count += found.records;
                // The scan stops at the next damage (or the end); look again past it.
                position = start + found.valid_bytes.max(1);
            }
            Search::Nothing => return (count, true),
            Search::Unsure => return (count, false),
        }
    }
}

/// The file name of the segment whose first record has offset `base`.
pub fn file_name(base: Offset) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base offset named by a segment file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment file of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub base: Offset,
    pub path: PathBuf,
}

/// The segment files in `dir`, ordered by base offset, and the other files found there.
pub fn list(dir: &Path) -> std::io::Result<(Vec<SegmentFile>, Vec<PathBuf>)> {
    let mut segments = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        match entry.file_name().to_str().and_then(parse_file_name) {
            Some(base) if entry.file_type()?.is_file() => segments.push(SegmentFile { base, path }),
            _ => others.push(path),
        }
    }
    segments.sort_by_key(|segment| segment.base);
    others.sort();
    Ok((segments, others))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for payload in payloads {
            frame_into(payload, &mut bytes);
        }
        bytes
    }

    fn count(bytes: &[u8]) -> Scan {
        scan::<Infallible>(bytes, |_, _| Ok(())).unwrap()
    }

    #[test]
    fn scans_exact_and_preallocated_segments() {
        let mut bytes = framed(&[b"one", b"two", b"three"]);
        let scan = count(&bytes);
        assert_eq!((scan.records, scan.tail), (3, Tail::Exact));
        let valid = bytes.len() as u64;
        bytes.resize(4096, 0);
        let scan = count(&bytes);
        assert_eq!(
            (scan.records, scan.valid_bytes, scan.tail),
            (3, valid, Tail::Zeros)
        );
    }

    #[test]
    fn every_cut_and_every_flip_of_the_last_record_is_detected() {
        let bytes = framed(&[b"first record", b"second record"]);
        let first_end = (HEADER_BYTES + 12) as u64;
        for cut in first_end as usize + 1..bytes.len() {
            let scan = count(&bytes[..cut]);
            assert_eq!(scan.records, 1, "cut at {cut}");
            assert_eq!(scan.valid_bytes, first_end);
            assert!(matches!(scan.tail, Tail::Damaged { .. }), "cut at {cut}");
        }
        for flip in first_end as usize..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x40;
            let scan = count(&damaged);
            assert_eq!(scan.records, 1, "flip at {flip}");
            assert!(matches!(scan.tail, Tail::Damaged { position, .. } if position == first_end));
        }
    }

    #[test]
    fn searches_find_records_after_damage_and_stop_within_their_budget() {
        let bytes = framed(&[b"first record", b"second record", b"third record"]);
        let second = (HEADER_BYTES + 12) as u64;
        let mut damaged = bytes.clone();
        damaged[2] ^= 0x01; // the first record's length
        let mut budget = SEARCH_BUDGET_BYTES;
        assert_eq!(
            next_valid_record(&damaged, 1, &mut budget),
            Search::Found(second)
        );
        assert_eq!(count_valid_records(&damaged, 0), (2, true));
        let mut budget = SEARCH_BUDGET_BYTES;
        assert_eq!(
            next_valid_record(&bytes, bytes.len() as u64 - 3, &mut budget),
            Search::Nothing
        );
        // Lengths that fit but checksums that never match: a small budget runs out.
        let garbage: Vec<u8> = [16u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff].repeat(512);
        let mut budget = 64;
        assert_eq!(next_valid_record(&garbage, 0, &mut budget), Search::Unsure);
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004x.seg"), None);
    }
}
