//! The recovery parser: validates segments given as `&[u8]` and decides where the log ends.
//!
//! This module is pure: no I/O, no allocation sized by anything read from the bytes, no panics for any input. It
//! is the target of the `wal_recovery` fuzzer. [`plan_recovery`] returns what the caller must do (where to append,
//! which byte ranges to zero, which segments to drop); `Wal::open` carries it out.
//!
//! Rules (DESIGN.md, "Recovery"):
//! - records are read in LSN order; a group (records chained by `FLAG_GROUP_CONTINUES`) counts only when complete;
//! - a segment ends cleanly with a PAD reaching its end, or with fewer than a record header's bytes left;
//! - the first invalid record marks the end of the log. Any record that still validates after that point in the
//!   same segment is an unsynced leftover: it is zeroed so that it can never come back;
//! - a valid record in a *later* segment means the end was not a torn tail but damage to synced data (segment N+1
//!   is only written after segment N is fully synced): that is corruption, unless salvage was asked for.

use super::format::{
    FLAG_GROUP_CONTINUES, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RecordError, RecordKind,
    SEGMENT_HEADER_BYTES, SegmentHeader, align_up, parse_record,
};

/// How a segment's scan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// The segment is complete: it ends with a PAD or with too few bytes left for a record.
    Sealed,
    /// The log ends inside this segment; `offset` is the first byte that did not validate.
    Open {
        /// Offset of the first invalid record.
        offset: u64,
        /// Why it is invalid.
        error: RecordError,
    },
}

/// The result of scanning one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// Offset just past the last complete group.
    pub valid_end: u64,
    /// Records in complete groups (PAD not counted).
    pub records: u64,
    /// Complete groups.
    pub groups: u64,
    /// How the scan ended.
    pub end: ScanEnd,
}

/// Scans the records of one segment (`segment` is the whole segment, header included).
pub fn scan_segment(segment: &[u8], base_lsn: u64, salt: u64) -> SegmentScan {
    let len = segment.len() as u64;
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut scan = SegmentScan {
        valid_end: pos,
        records: 0,
        groups: 0,
        end: ScanEnd::Sealed,
    };
    let mut group_records = 0u64;
    loop {
        if len.saturating_sub(pos) < RECORD_HEADER_BYTES {
            if group_records > 0 {
                scan.end = ScanEnd::Open {
                    offset: pos,
                    error: RecordError::Truncated,
                };
            }
            return scan;
        }
        match parse_record(segment, pos, base_lsn, salt) {
            Ok(rec) if rec.kind == RecordKind::Pad => {
                if group_records > 0 {
                    scan.end = ScanEnd::Open {
                        offset: pos,
                        error: RecordError::BadPad,
                    };
                }
                return scan;
            }
            Ok(rec) => {
                pos += rec.span_bytes;
                group_records += 1;
                if rec.flags & FLAG_GROUP_CONTINUES == 0 {
                    scan.records += group_records;
                    scan.groups += 1;
                    scan.valid_end = pos;
                    group_records = 0;
                }
            }
            Err(error) => {
                scan.end = ScanEnd::Open { offset: pos, error };
                return scan;
            }
        }
    }
}

/// Records that validate at or after `from` (aligned positions), as `(count, first_offset, end_of_last)`.
///
/// Used to find leftovers beyond the end of the log. Cheap: a candidate must first have its LSN field equal to its
/// position before any CRC is computed.
#[must_use]
pub fn find_valid_records(
    segment: &[u8],
    from: u64,
    base_lsn: u64,
    salt: u64,
) -> Option<(u64, u64, u64)> {
    let len = segment.len() as u64;
    let mut q = align_up(from.max(SEGMENT_HEADER_BYTES));
    let mut found: Option<(u64, u64, u64)> = None;
    while q + RECORD_HEADER_BYTES <= len {
        #[allow(clippy::cast_possible_truncation)]
        let at = q as usize;
        let mut lsn_field = [0u8; 8];
        lsn_field.copy_from_slice(&segment[at + 8..at + 16]);
        if u64::from_le_bytes(lsn_field) == base_lsn.wrapping_add(q)
            && let Ok(rec) = parse_record(segment, q, base_lsn, salt)
        {
            let end = q + rec.span_bytes;
            found = Some(match found {
                None => (1, q, end),
                Some((n, first, _)) => (n + 1, first, end),
            });
            q = end;
            continue;
        }
        q += RECORD_ALIGN_BYTES;
        // A record's first 8 bytes are never all zero, so skip zero runs (the unwritten end of a segment) at
        // memory speed: the next candidate is the aligned position at or before the next non-zero block.
        match segment.get(at + 8..).and_then(first_nonzero_block) {
            Some(nonzero) => {
                q = q.max((at as u64 + 8 + nonzero as u64) & !(RECORD_ALIGN_BYTES - 1))
            }
            None => break,
        }
    }
    found
}

/// The start of the first 64-byte block of `bytes` holding a non-zero byte (a lower bound for the first non-zero
/// byte). Each block is OR-folded without an early exit so that the loop vectorizes: ~memory speed.
fn first_nonzero_block(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let mut blocks = bytes.chunks_exact(BLOCK);
    for (i, block) in blocks.by_ref().enumerate() {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return Some(i * BLOCK);
        }
    }
    let tail_start = bytes.len() - blocks.remainder().len();
    blocks
        .remainder()
        .iter()
        .any(|&b| b != 0)
        .then_some(tail_start)
}

/// What recovery found, and what must be done to the segments before appending resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Where the next record goes.
    pub end_lsn: u64,
    /// Records in complete groups, all segments.
    pub records: u64,
    /// Complete groups, all segments.
    pub groups: u64,
    /// Byte ranges `(segment index, from, to)` to overwrite with zeros: leftovers past the end.
    pub zero_ranges: Vec<(usize, u64, u64)>,
    /// Valid-looking records past the end that will be zeroed (unsynced leftovers, or salvage losses).
    pub discarded_records: u64,
    /// Segments from this index on are removed (salvage only).
    pub drop_segments_from: Option<usize>,
    /// With salvage: the corruption that was cut away.
    pub salvaged: Option<Corruption>,
}

/// Where and why the log is corrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Index into the segment list given to [`plan_recovery`].
    pub segment_index: usize,
    /// Byte offset inside that segment.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Decides where the log ends. `segments` are `(base_lsn, bytes)` in the order they must follow each other, starting
/// at the log's first segment. `progress` is called after each segment with its index.
pub fn plan_recovery(
    segments: &[(u64, &[u8])],
    salt: u64,
    segment_size_bytes: u64,
    start_lsn: u64,
    salvage: bool,
    mut progress: impl FnMut(usize),
) -> Result<RecoveryPlan, Corruption> {
    let mut plan = RecoveryPlan {
        end_lsn: start_lsn + SEGMENT_HEADER_BYTES,
        ..RecoveryPlan::default()
    };
    // (segment index, offset) where the log ended, once found.
    let mut end: Option<(usize, u64)> = None;
    for (index, &(base, bytes)) in segments.iter().enumerate() {
        let expected_base = start_lsn.checked_add(segment_size_bytes.saturating_mul(index as u64));
        let problem = if Some(base) != expected_base {
            Some(format!(
                "segment with base LSN {base} where {expected_base:?} was expected (a segment is missing)"
            ))
        } else if bytes.len() as u64 != segment_size_bytes {
            Some(format!(
                "segment is {} bytes, expected {segment_size_bytes}",
                bytes.len()
            ))
        } else {
            match SegmentHeader::decode(bytes) {
                Err(e) => Some(format!("segment header: {e}")),
                Ok(h) if h.salt != salt => Some("segment header salt is not this log's".to_owned()),
                Ok(h) if h.base_lsn != base => {
                    Some(format!("segment header says base LSN {}", h.base_lsn))
                }
                Ok(h) if h.segment_size_bytes != segment_size_bytes => {
                    Some(format!("segment header says size {}", h.segment_size_bytes))
                }
                Ok(_) => None,
            }
        };
        if let Some(reason) = problem {
            let corruption = Corruption {
                segment_index: index,
                offset: 0,
                reason,
            };
            if !salvage {
                return Err(corruption);
            }
            if end.is_none() {
                plan.end_lsn = base.max(start_lsn) + SEGMENT_HEADER_BYTES;
            }
            plan.drop_segments_from = Some(index);
            plan.salvaged.get_or_insert(corruption);
            progress(index);
            return Ok(plan);
        }
        if let Some((end_index, end_offset)) = end {
            if let Some((count, first, last_end)) =
                find_valid_records(bytes, SEGMENT_HEADER_BYTES, base, salt)
            {
                let corruption = Corruption {
                    segment_index: end_index,
                    offset: end_offset,
                    reason: format!(
                        "invalid record, but segment {base} after it holds {count} valid record(s) from offset {first}"
                    ),
                };
                if !salvage {
                    return Err(corruption);
                }
                plan.zero_ranges.push((index, first, last_end));
                plan.discarded_records += count;
                plan.salvaged.get_or_insert(corruption);
            }
            progress(index);
            continue;
        }
        let scan = scan_segment(bytes, base, salt);
        plan.records += scan.records;
        plan.groups += scan.groups;
        match scan.end {
            ScanEnd::Sealed => plan.end_lsn = base + segment_size_bytes + SEGMENT_HEADER_BYTES,
            ScanEnd::Open { .. } => {
                plan.end_lsn = base + scan.valid_end;
                end = Some((index, scan.valid_end));
                if let Some((count, _, last_end)) =
                    find_valid_records(bytes, scan.valid_end, base, salt)
                {
                    plan.zero_ranges.push((index, scan.valid_end, last_end));
                    plan.discarded_records += count;
                }
            }
        }
        progress(index);
    }
    Ok(plan)
}

/// Fuzzing entry point (the `wal_recovery` target, and the corpus replay in `cargo test`): reads `data` as a log
/// and runs recovery over it, checking the plan's invariants. Must never panic for any input.
///
/// Layout: byte 0 chooses the segment size (512 << (byte % 4)), byte 1 bit 0 chooses salvage; the rest is cut into
/// segments. The salt and start LSN are taken from the first segment's header bytes, so that inputs derived from
/// real logs reach deep into the parser.
#[must_use]
pub fn fuzz_recovery(data: &[u8]) -> Option<RecoveryPlan> {
    let (&size_byte, rest) = data.split_first()?;
    let (&mode, body) = rest.split_first()?;
    let size = 512u64 << (size_byte % 4);
    let chunks: Vec<&[u8]> = body.chunks(usize::try_from(size).ok()?).collect();
    let first = chunks.first()?;
    let read_u64 = |at: usize| {
        first
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let salt = read_u64(16);
    let start_lsn = (read_u64(24) % (1 << 40)) / size * size;
    let segments: Vec<(u64, &[u8])> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (start_lsn + size * i as u64, *c))
        .collect();
    let mut progressed = 0;
    let result = plan_recovery(&segments, salt, size, start_lsn, mode & 1 == 1, |i| {
        progressed = i + 1
    });
    let plan = result.ok()?;
    assert!(
        plan.end_lsn >= start_lsn + SEGMENT_HEADER_BYTES,
        "end before start"
    );
    assert!(
        plan.end_lsn <= start_lsn + size * (segments.len() as u64 + 1),
        "end past the segments"
    );
    assert!(progressed <= segments.len());
    for &(index, from, to) in &plan.zero_ranges {
        assert!(
            index < segments.len() && from <= to && to <= segments[index].1.len() as u64,
            "zero range out of bounds"
        );
    }
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::format::{encode_pad_header, encode_record_header, record_span_bytes};

    const S: u64 = 4096;

    fn seg(base: u64, salt: u64) -> Vec<u8> {
        let mut s = vec![0u8; S as usize];
        s[..64].copy_from_slice(
            &SegmentHeader {
                salt,
                base_lsn: base,
                segment_size_bytes: S,
            }
            .encode(),
        );
        s
    }

    fn put(s: &mut [u8], base: u64, at: u64, kind: RecordKind, flags: u8, payload: &[u8]) -> u64 {
        let h = encode_record_header(base + at, 1, kind, flags, payload);
        let a = at as usize;
        s[a..a + 32].copy_from_slice(&h);
        s[a + 32..a + 32 + payload.len()].copy_from_slice(payload);
        at + record_span_bytes(payload.len() as u64)
    }

    #[test]
    fn incomplete_group_at_tail_is_not_counted() {
        let mut s = seg(0, 1);
        let at = put(&mut s, 0, 64, RecordKind::Data, 0, b"a");
        let group_start = at;
        put(&mut s, 0, at, RecordKind::Data, FLAG_GROUP_CONTINUES, b"b");
        let plan = plan_recovery(&[(0, &s)], 1, S, 0, false, |_| {}).unwrap();
        assert_eq!(
            (plan.records, plan.groups, plan.end_lsn),
            (1, 1, group_start)
        );
        assert_eq!(plan.zero_ranges, vec![(0, group_start, group_start + 48)]);
    }

    #[test]
    fn valid_record_in_later_segment_is_corruption_unless_salvaged() {
        let mut a = seg(0, 1);
        let at = put(&mut a, 0, 64, RecordKind::Data, 0, b"a");
        a[at as usize + 4] = 1; // a damaged header where the next record should be
        a[at as usize] = 9;
        let mut b = seg(S, 1);
        put(&mut b, S, 64, RecordKind::Data, 0, b"b");
        let err = plan_recovery(&[(0, &a), (S, &b)], 1, S, 0, false, |_| {}).unwrap_err();
        assert_eq!((err.segment_index, err.offset), (0, at));
        let plan = plan_recovery(&[(0, &a), (S, &b)], 1, S, 0, true, |_| {}).unwrap();
        assert_eq!(
            (plan.records, plan.end_lsn, plan.discarded_records),
            (1, at, 1)
        );
        assert!(plan.salvaged.is_some());
    }

    #[test]
    fn sealed_segment_continues_into_next() {
        let mut a = seg(0, 1);
        let at = put(&mut a, 0, 64, RecordKind::Data, 0, b"a");
        a[at as usize..at as usize + 32].copy_from_slice(&encode_pad_header(at, 1, S - at));
        let mut b = seg(S, 1);
        let end = put(&mut b, S, 64, RecordKind::Commit, 0, b"b");
        let plan = plan_recovery(&[(0, &a), (S, &b)], 1, S, 0, false, |_| {}).unwrap();
        assert_eq!((plan.records, plan.end_lsn), (2, S + end));
    }

    #[test]
    fn missing_segment_is_corruption() {
        let a = seg(0, 1);
        let c = seg(2 * S, 1);
        let err = plan_recovery(&[(0, &a), (2 * S, &c)], 1, S, 0, false, |_| {}).unwrap_err();
        assert_eq!(err.segment_index, 1);
    }
}
