//! The embedded log's record format: `scan` over any bytes must stop at the first record that
//! is not valid without panicking, and what it accepts must be exactly what framing the
//! accepted payloads writes. Framing any non-empty payloads and scanning them must give them
//! back. The search for records after damage (what tells damage from a torn tail) must find
//! only valid records, and find the first one.
#![no_main]

use std::convert::Infallible;

use libfuzzer_sys::fuzz_target;
use taskfold::log::embedded::segment::{self, Tail};

fuzz_target!(|bytes: &[u8]| {
    // Any bytes, as a segment file read from disk.
    let mut payloads = Vec::new();
    let scan = segment::scan::<Infallible>(bytes, |index, payload| {
        assert_eq!(index, payloads.len() as u64);
        payloads.push(payload.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(scan.records, payloads.len() as u64);
    let valid = usize::try_from(scan.valid_bytes).unwrap();
    assert!(valid <= bytes.len());
    let mut reframed = Vec::new();
    for payload in &payloads {
        assert!(!payload.is_empty());
        segment::frame_into(payload, &mut reframed);
    }
    assert_eq!(reframed, bytes[..valid]);
    match scan.tail {
        Tail::Exact => assert_eq!(valid, bytes.len()),
        Tail::Zeros => assert!(valid < bytes.len() && bytes[valid..].iter().all(|&b| b == 0)),
        Tail::Damaged { position, .. } => {
            assert_eq!(position, scan.valid_bytes);
            assert!(bytes[valid..].iter().any(|&b| b != 0));
        }
    }

    // Recovery's search after damage: what it finds is a record that scans, and no earlier
    // position holds one.
    if let Tail::Damaged { position, .. } = scan.tail {
        let mut budget = segment::SEARCH_BUDGET_BYTES;
        match segment::next_valid_record(bytes, position + 1, &mut budget) {
            segment::Search::Found(found) => {
                let found = usize::try_from(found).unwrap();
                assert!(found > valid && found < bytes.len());
                let at = segment::scan::<Infallible>(&bytes[found..], |_, _| Ok(())).unwrap();
                assert!(at.records >= 1);
                for earlier in valid + 1..found {
                    let before = segment::scan::<Infallible>(&bytes[earlier..], |_, _| Ok(()));
                    assert_eq!(before.unwrap().records, 0, "a record at {earlier} was skipped");
                }
            }
            segment::Search::Nothing => {}
            segment::Search::Unsure => panic!("inputs this small stay within the budget"),
        }
        let (counted, complete) = segment::count_valid_records(bytes, position);
        assert!(complete);
        let _ = counted;
    }

    // The same bytes as payloads to frame: cut where a zero byte stands (payloads are never
    // empty, since a zero length ends the records).
    let payloads: Vec<&[u8]> = bytes.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    let mut framed = Vec::new();
    for payload in &payloads {
        segment::frame_into(payload, &mut framed);
    }
    let mut seen = Vec::new();
    let scan = segment::scan::<Infallible>(&framed, |_, payload| {
        seen.push(payload.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(scan.tail, Tail::Exact);
    assert_eq!(scan.valid_bytes, framed.len() as u64);
    assert_eq!(seen, payloads);
    // Preallocated zeros after the records are not damage.
    framed.resize(framed.len() + 64, 0);
    let scan = segment::scan::<Infallible>(&framed, |_, _| Ok(())).unwrap();
    assert_eq!(scan.records, payloads.len() as u64);
    assert_eq!(scan.tail, Tail::Zeros);
});
