//! Property tests of the on-disk format (`wal::format`) and the segment scan (`wal::scan::scan_segment`):
//! - record headers, PAD headers, segment headers and the meta file round-trip for arbitrary fields and payloads;
//! - every single-bit flip of an encoded record (header and payload) and of a segment header or meta file is
//!   rejected, and every truncation of a record yields `Truncated`;
//! - `parse_record` never panics on arbitrary bytes and offsets, and what it accepts lies inside the buffer;
//! - `scan_segment` over a segment laid out from arbitrary groups returns exactly those records and groups, and
//!   over a segment torn or overwritten at a random place returns exactly the groups before the damage.

mod common;

use std::ops::Range;

use collection_store::wal::format::{
    FLAG_GROUP_CONTINUES, HeaderError, META_BYTES, Meta, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES,
    RecordError, RecordKind, SEGMENT_HEADER_BYTES, SegmentHeader, encode_pad_header, header_word,
    parse_record, record_span_bytes, span_of_word,
};
use collection_store::wal::scan::{ScanEnd, scan_segment};
use common::{KINDS, group_span, new_segment, put_group, put_record, seal_segment};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = RecordKind> {
    prop::sample::select(KINDS.to_vec())
}

fn flags() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![0, FLAG_GROUP_CONTINUES])
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// A segment base LSN: a multiple of a power-of-two segment size, anywhere in the LSN space.
fn segment_base() -> impl Strategy<Value = u64> {
    (12u32..=30, any::<u64>()).prop_map(|(shift, n)| n & !((1 << shift) - 1))
}

/// A buffer holding one record at `offset`, `extra` bytes of zeros after its span.
fn one_record(
    offset: u64,
    base: u64,
    salt: u64,
    kind: RecordKind,
    flags: u8,
    payload: &[u8],
    extra: u64,
) -> Vec<u8> {
    let span = record_span_bytes(payload.len() as u64);
    let mut buf = vec![0u8; (offset + span + extra) as usize];
    put_record(&mut buf, offset, base, salt, kind, flags, payload);
    buf
}

/// A buffer holding a PAD of `span` bytes at `offset`, reaching the buffer's end.
fn one_pad(offset: u64, base: u64, salt: u64, span: u64) -> Vec<u8> {
    let mut buf = vec![0u8; (offset + span) as usize];
    let at = offset as usize;
    buf[at..at + 32].copy_from_slice(&encode_pad_header(base + offset, salt, span));
    buf
}

/// Every copy of `bytes` with one bit flipped within `range`: `(byte, bit, copy)`.
fn bit_flips(bytes: &[u8], range: Range<usize>) -> impl Iterator<Item = (usize, u32, Vec<u8>)> {
    range.flat_map(move |byte| {
        (0..8).map(move |bit| {
            let mut bad = bytes.to_vec();
            bad[byte] ^= 1 << bit;
            (byte, bit, bad)
        })
    })
}

/// `decode` rejects every single-bit flip and every truncation of `bytes`.
fn rejects_flips_and_truncations<T: PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, HeaderError>,
) -> Result<(), TestCaseError> {
    for (byte, bit, bad) in bit_flips(bytes, 0..bytes.len()) {
        prop_assert!(
            decode(&bad).is_err(),
            "flip of bit {} of byte {}",
            bit,
            byte
        );
    }
    for len in 0..bytes.len() {
        prop_assert_eq!(decode(&bytes[..len]), Err(HeaderError::Truncated));
    }
    Ok(())
}

/// A record's offset in its segment: 8-aligned, after the segment header.
fn record_offset() -> impl Strategy<Value = u64> {
    (0u64..64).prop_map(|n| SEGMENT_HEADER_BYTES + n * RECORD_ALIGN_BYTES)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn record_round_trips(
        base in segment_base(),
        offset in record_offset(),
        salt in any::<u64>(),
        kind in kind(),
        flags in flags(),
        payload in payload(300),
        extra in 0u64..64,
    ) {
        let buf = one_record(offset, base, salt, kind, flags, &payload, extra);
        let span = record_span_bytes(payload.len() as u64);
        prop_assert_eq!(span % RECORD_ALIGN_BYTES, 0);
        prop_assert!(span >= RECORD_HEADER_BYTES + payload.len() as u64 && span < RECORD_HEADER_BYTES + payload.len() as u64 + RECORD_ALIGN_BYTES);
        let r = parse_record(&buf, offset, base, salt).unwrap();
        prop_assert_eq!(
            (r.lsn, r.kind, r.flags, r.payload, r.span_bytes),
            (base + offset, kind, flags, &payload[..], span)
        );
        // The first word is the completion flag: never zero, and it gives the span.
        let at = offset as usize;
        let word = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
        prop_assert_ne!(word, 0);
        prop_assert_eq!(word, header_word(payload.len() as u32, kind, flags));
        prop_assert_eq!(span_of_word(word), span);
        // Another position, lap or log never validates.
        prop_assert_eq!(parse_record(&buf, offset, base ^ (1 << 40), salt), Err(RecordError::LsnMismatch));
        prop_assert_eq!(parse_record(&buf, offset, base, !salt), Err(RecordError::SaltMismatch));
    }

    #[test]
    fn pad_round_trips_only_at_the_segment_end(
        base in segment_base(),
        offset in record_offset(),
        salt in any::<u64>(),
        words in 4u64..200,
        garbage in payload(64),
    ) {
        let span = words * RECORD_ALIGN_BYTES;
        let mut buf = one_pad(offset, base, salt, span);
        let at = offset as usize;
        // A PAD's body is never read: garbage in it does not matter.
        let body = &mut buf[at + 32..];
        let n = garbage.len().min(body.len());
        body[..n].copy_from_slice(&garbage[..n]);
        let r = parse_record(&buf, offset, base, salt).unwrap();
        prop_assert_eq!(
            (r.lsn, r.kind, r.flags, r.payload, r.span_bytes),
            (base + offset, RecordKind::Pad, 0, &[][..], span)
        );
        // One more byte after it: it no longer reaches the end.
        buf.push(0);
        prop_assert_eq!(parse_record(&buf, offset, base, salt), Err(RecordError::BadPad));
    }

    #[test]
    fn every_bit_flip_of_a_record_is_rejected(
        base in segment_base(),
        offset in record_offset(),
        salt in any::<u64>(),
        kind in kind(),
        flags in flags(),
        payload in payload(48),
    ) {
        let buf = one_record(offset, base, salt, kind, flags, &payload, 16);
        let from = offset as usize;
        let to = from + 32 + payload.len();
        for (byte, bit, bad) in bit_flips(&buf, from..to) {
            prop_assert!(
                parse_record(&bad, offset, base, salt).is_err(),
                "flip of bit {} of byte {} validated", bit, byte - from
            );
        }
    }

    #[test]
    fn every_bit_flip_of_a_pad_header_is_rejected(
        base in segment_base(),
        offset in record_offset(),
        salt in any::<u64>(),
        words in 4u64..64,
    ) {
        let buf = one_pad(offset, base, salt, words * RECORD_ALIGN_BYTES);
        let at = offset as usize;
        for (_, _, bad) in bit_flips(&buf, at..at + 32) {
            prop_assert!(parse_record(&bad, offset, base, salt).is_err());
        }
    }

    #[test]
    fn every_truncation_of_a_record_is_truncated(
        base in segment_base(),
        offset in record_offset(),
        salt in any::<u64>(),
        kind in kind(),
        flags in flags(),
        payload in payload(200),
    ) {
        let buf = one_record(offset, base, salt, kind, flags, &payload, 0);
        for len in 0..buf.len() {
            prop_assert_eq!(
                parse_record(&buf[..len], offset, base, salt),
                Err(RecordError::Truncated),
                "truncated to {} bytes", len
            );
        }
        prop_assert!(parse_record(&buf, offset, base, salt).is_ok());
    }

    #[test]
    fn parse_record_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        offset in prop_oneof![0u64..420, any::<u64>(), (0u64..64).prop_map(|n| u64::MAX - n)],
        base in prop_oneof![any::<u64>(), (0u64..64).prop_map(|n| u64::MAX - n)],
        salt in any::<u64>(),
    ) {
        if let Ok(r) = parse_record(&bytes, offset, base, salt) {
            prop_assert!(offset + r.span_bytes <= bytes.len() as u64);
            prop_assert!(r.payload.len() as u64 + RECORD_HEADER_BYTES <= r.span_bytes);
        }
    }

    /// Arbitrary bytes with a plausible header planted in them (right LSN and salt, arbitrary length, kind, flags
    /// and CRC), so that the checks past the LSN and salt run too.
    #[test]
    fn parse_record_never_panics_on_plausible_headers(
        mut bytes in prop::collection::vec(any::<u8>(), 32..400),
        at in 0usize..400,
        base in any::<u64>(),
        salt in any::<u64>(),
        word in prop_oneof![any::<u64>(), (any::<u32>(), prop::sample::select(vec![1u8, 2, 3, 4, 5, 0x7F]), 0u8..2)
            .prop_map(|(len, kind, flags)| u64::from(len) | u64::from(kind) << 32 | u64::from(flags) << 40)],
    ) {
        let at = (at.min(bytes.len() - 32) / 8 * 8) as u64;
        let a = at as usize;
        bytes[a..a + 8].copy_from_slice(&word.to_le_bytes());
        bytes[a + 8..a + 16].copy_from_slice(&base.wrapping_add(at).to_le_bytes());
        bytes[a + 16..a + 24].copy_from_slice(&salt.to_le_bytes());
        bytes[a + 28..a + 32].fill(0);
        if let Ok(r) = parse_record(&bytes, at, base, salt) {
            prop_assert!(at + r.span_bytes <= bytes.len() as u64);
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_every_bit_flip(
        salt in any::<u64>(),
        base_lsn in any::<u64>(),
        segment_size_bytes in any::<u64>(),
    ) {
        let h = SegmentHeader { salt, base_lsn, segment_size_bytes };
        let bytes = h.encode();
        prop_assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        rejects_flips_and_truncations(&bytes, SegmentHeader::decode)?;
    }

    #[test]
    fn meta_round_trips_and_rejects_every_bit_flip(
        salt in any::<u64>(),
        segment_size_bytes in any::<u64>(),
        start_lsn in any::<u64>(),
    ) {
        let m = Meta { salt, segment_size_bytes, start_lsn };
        let bytes = m.encode();
        prop_assert_eq!(bytes.len(), META_BYTES);
        prop_assert_eq!(Meta::decode(&bytes), Ok(m));
        rejects_flips_and_truncations(&bytes, Meta::decode)?;
    }

    #[test]
    fn header_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let _ = SegmentHeader::decode(&bytes);
        let _ = Meta::decode(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------------------------------------------

type Group = Vec<(RecordKind, Vec<u8>)>;

/// A group as placed in a segment: the `(offset, payload length)` of each record, and its end.
struct Placed {
    records: Vec<(u64, usize)>,
    end: u64,
}

/// A segment laid out as the log does: a header, then the groups that fit, back to back, each record but the
/// last of a group flagged `FLAG_GROUP_CONTINUES`; with `seal`, a PAD to the end when a record header fits.
/// A group that does not fit, and every one after it, is left out.
fn build_segment(
    size: u64,
    base: u64,
    salt: u64,
    groups: &[Group],
    seal: bool,
) -> (Vec<u8>, Vec<Placed>) {
    let mut seg = new_segment(size, base, salt);
    let mut at = SEGMENT_HEADER_BYTES;
    let mut placed = Vec::new();
    for group in groups {
        if at + group_span(group) > size {
            break;
        }
        let (records, end) = put_group(&mut seg, at, base, salt, group);
        at = end;
        placed.push(Placed { records, end });
    }
    if seal {
        seal_segment(&mut seg, at, base, salt);
    }
    (seg, placed)
}

fn groups(max_groups: usize) -> impl Strategy<Value = Vec<Group>> {
    prop::collection::vec(
        prop::collection::vec((kind(), payload(120)), 1..=3),
        0..=max_groups,
    )
}

fn segment_size() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![512u64, 1024, 2048, 4096])
}

/// Records and end of the first `k` groups.
fn prefix(placed: &[Placed], k: usize) -> (u64, u64) {
    let records = placed[..k].iter().map(|g| g.records.len() as u64).sum();
    let end = if k == 0 {
        SEGMENT_HEADER_BYTES
    } else {
        placed[k - 1].end
    };
    (records, end)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn scan_returns_exactly_the_records_written(
        size in segment_size(),
        base_index in 0u64..1 << 20,
        salt in any::<u64>(),
        groups in groups(24),
        seal in any::<bool>(),
    ) {
        let base = base_index * size;
        let (seg, placed) = build_segment(size, base, salt, &groups, seal);
        let scan = scan_segment(&seg, base, salt);
        let (records, end) = prefix(&placed, placed.len());
        prop_assert_eq!((scan.records, scan.groups, scan.valid_end), (records, placed.len() as u64, end));
        let expected_end = if seal || size - end < RECORD_HEADER_BYTES {
            ScanEnd::Sealed
        } else {
            ScanEnd::Open { offset: end, error: RecordError::Unwritten }
        };
        prop_assert_eq!(scan.end, expected_end);
        // The records themselves, in order, with their kinds, flags and payloads.
        for (g, group) in placed.iter().enumerate() {
            for (i, &(offset, _)) in group.records.iter().enumerate() {
                let r = parse_record(&seg, offset, base, salt).unwrap();
                let (kind, payload) = &groups[g][i];
                let continues = i + 1 < group.records.len();
                prop_assert_eq!(
                    (r.kind, r.flags & FLAG_GROUP_CONTINUES != 0, r.payload),
                    (*kind, continues, &payload[..])
                );
            }
        }
    }

    /// Zeros from a random point to the end (a torn tail), or random bytes over a random range: the scan returns
    /// exactly the groups before the first record whose bytes changed.
    #[test]
    fn damaged_segment_scans_to_a_prefix(
        size in segment_size(),
        base_index in 0u64..1 << 20,
        salt in any::<u64>(),
        groups in groups(24),
        seal in any::<bool>(),
        from in 0.0f64..1.0,
        garbage in prop::option::of(prop::collection::vec(any::<u8>(), 1..64)),
    ) {
        let base = base_index * size;
        let (seg, placed) = build_segment(size, base, salt, &groups, seal);
        let from = SEGMENT_HEADER_BYTES as usize
            + ((size - SEGMENT_HEADER_BYTES) as f64 * from) as usize;
        let mut bad = seg.clone();
        match &garbage {
            None => bad[from..].fill(0),
            Some(bytes) => {
                let n = bytes.len().min(bad.len() - from);
                bad[from..from + n].copy_from_slice(&bytes[..n]);
            }
        }
        // The first group with a changed byte in one of its records (header or payload; alignment padding is
        // not part of a record's checked bytes).
        let changed = |&(offset, len): &(u64, usize)| {
            let r = offset as usize..offset as usize + 32 + len;
            seg[r.clone()] != bad[r]
        };
        let k = placed
            .iter()
            .position(|g| g.records.iter().any(changed))
            .unwrap_or(placed.len());
        let scan = scan_segment(&bad, base, salt);
        let (records, end) = prefix(&placed, k);
        prop_assert_eq!((scan.records, scan.groups, scan.valid_end), (records, k as u64, end));
        if k < placed.len() {
            prop_assert!(
                matches!(scan.end, ScanEnd::Open { offset, .. } if offset >= end),
                "{:?}", scan.end
            );
        }
    }

    /// A torn file: the segment cut short at a random length.
    #[test]
    fn truncated_segment_scans_to_a_prefix(
        size in segment_size(),
        salt in any::<u64>(),
        groups in groups(24),
        cut in 0.0f64..1.0,
    ) {
        let (seg, placed) = build_segment(size, 0, salt, &groups, true);
        let len = (size as f64 * cut) as usize;
        let scan = scan_segment(&seg[..len], 0, salt);
        let k = placed.iter().take_while(|g| g.end <= len as u64).count();
        let (records, end) = prefix(&placed, k);
        prop_assert_eq!((scan.records, scan.groups, scan.valid_end), (records, k as u64, end));
    }
}
