//! Helpers shared by the integration tests (`mod common;` in each test file): settings from the environment, log
//! options, the seed to rerun on failure, records as appended and as read back, self-identifying payloads, and
//! segments laid out byte by byte with the real encoders.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::str::FromStr;

use collection_store::Error;
use collection_store::wal::format::{
    FLAG_GROUP_CONTINUES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader,
    encode_pad_header, encode_record_header, record_span_bytes,
};
use collection_store::wal::{Durability, RecordKind, Wal, WalOptions};
use rand::Rng;

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

/// The environment variable `name` parsed, or `default` when it is unset or does not parse.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Log options with `segment_size_bytes` segments and the smallest staging ring (64 KiB: it wraps constantly).
pub fn options(segment_size_bytes: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes,
        staging_buffer_bytes: 64 << 10,
        ..WalOptions::default()
    }
}

/// Prints `FAILED: ` and what it holds (the seed to rerun with) if the test panics while it is alive.
pub struct SeedGuard(pub String);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("FAILED: {}", self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Records and groups
// ---------------------------------------------------------------------------------------------------------------

/// Every kind of record an appender may write (all but `Pad`).
pub const KINDS: [RecordKind; 5] = [
    RecordKind::Data,
    RecordKind::Commit,
    RecordKind::Prepare,
    RecordKind::Abort,
    RecordKind::Checkpoint,
];

/// The kind of record `i` of a group of `n` as the tests write groups: `Commit` for the last, `Data` before it.
pub fn group_kind(i: usize, n: usize) -> RecordKind {
    if i + 1 == n {
        RecordKind::Commit
    } else {
        RecordKind::Data
    }
}

/// How many records a random group has: one with probability `single`, else 2 to `max`.
pub fn random_group_len(rng: &mut impl Rng, single: f64, max: usize) -> usize {
    if rng.random_bool(single) {
        1
    } else {
        rng.random_range(2..=max)
    }
}

/// The largest payload each of `n` records may have so that a group of them fits in `max_group_bytes`.
pub fn max_payload_in_group(max_group_bytes: u64, n: usize) -> usize {
    ((max_group_bytes as usize / n) & !7) - RECORD_HEADER_BYTES as usize
}

/// A record as appended (and acknowledged) or as read back from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub lsn: u64,
    pub kind: RecordKind,
    /// Whether the group continues after this record.
    pub cont: bool,
    pub payload: Vec<u8>,
}

impl Rec {
    pub fn end_lsn(&self) -> u64 {
        self.lsn + record_span_bytes(self.payload.len() as u64)
    }
}

/// Appends `group` as one group and returns its records at their LSNs (checked to end where the group ends).
pub fn append_group(
    wal: &Wal,
    group: Vec<(RecordKind, Vec<u8>)>,
    durability: Durability,
) -> Result<Vec<Rec>, Error> {
    let refs: Vec<(RecordKind, &[u8])> = group.iter().map(|(k, p)| (*k, &p[..])).collect();
    let g = wal.append_group(&refs, durability)?;
    let n = group.len();
    let mut lsn = g.first_lsn;
    let records: Vec<Rec> = group
        .into_iter()
        .enumerate()
        .map(|(i, (kind, payload))| {
            let rec = Rec {
                lsn,
                kind,
                cont: i + 1 < n,
                payload,
            };
            lsn = rec.end_lsn();
            rec
        })
        .collect();
    assert_eq!(lsn, g.end_lsn, "group span");
    Ok(records)
}

/// The whole log, from its start; an iteration error fails the test.
pub fn read_log(wal: &Wal) -> Vec<Rec> {
    wal.iter_from(wal.start_lsn())
        .unwrap()
        .map(|r| {
            let r = r.expect("a log that opened must iterate without error");
            Rec {
                lsn: r.lsn(),
                kind: r.kind(),
                cont: r.group_continues(),
                payload: r.payload().to_vec(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Self-identifying payloads
// ---------------------------------------------------------------------------------------------------------------

/// Bytes of the header that starts every [`encode`]d payload (the shortest such payload).
pub const PAYLOAD_HEADER_BYTES: usize = 16;

/// Who wrote a record: process `epoch`, `writer` thread, its `seq`-th record, position `index` of `len` in its
/// group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id {
    pub epoch: u32,
    pub writer: u8,
    pub seq: u32,
    pub index: u8,
    pub len: u8,
}

impl Id {
    /// Record `i` of a group of `n` that `writer` of process `epoch` begins with its `first_seq`-th record.
    pub fn in_group(epoch: u32, writer: u8, first_seq: u32, i: usize, n: usize) -> Self {
        Self {
            epoch,
            writer,
            seq: first_seq + i as u32,
            index: i as u8,
            len: n as u8,
        }
    }
}

/// A payload of `total_len` bytes that names its writer and is checkable byte by byte: a header with the id and
/// the length, then pseudo-random bytes seeded by the id.
pub fn encode(id: Id, total_len: usize) -> Vec<u8> {
    assert!(total_len >= PAYLOAD_HEADER_BYTES);
    let mut p = Vec::with_capacity(total_len);
    p.extend_from_slice(&id.epoch.to_le_bytes());
    p.extend_from_slice(&id.seq.to_le_bytes());
    p.extend_from_slice(&[id.writer, id.index, id.len, 0xA5]);
    p.extend_from_slice(&(total_len as u32).to_le_bytes());
    let mut x =
        ((u64::from(id.epoch) << 40) ^ (u64::from(id.seq) << 8) ^ u64::from(id.writer)) | (1 << 63);
    p.extend((PAYLOAD_HEADER_BYTES..total_len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    p
}

/// The id of a payload made by [`encode`], if every byte is exactly as it made it.
pub fn decode(p: &[u8]) -> Option<Id> {
    let h = p.get(..PAYLOAD_HEADER_BYTES)?;
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap());
    let id = Id {
        epoch: u32_at(0),
        seq: u32_at(4),
        writer: h[8],
        index: h[9],
        len: h[10],
    };
    (h[11] == 0xA5 && u32_at(12) as usize == p.len() && encode(id, p.len()) == p).then_some(id)
}

// ---------------------------------------------------------------------------------------------------------------
// Segments laid out by hand, as the log lays them out
// ---------------------------------------------------------------------------------------------------------------

/// A zeroed `size`-byte segment with its header.
pub fn new_segment(size: u64, base: u64, salt: u64) -> Vec<u8> {
    let mut seg = vec![0u8; size as usize];
    seg[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(
        &SegmentHeader {
            salt,
            base_lsn: base,
            segment_size_bytes: size,
        }
        .encode(),
    );
    seg
}

/// Writes a record at `offset` of `buf` (which must have room), in a segment with base LSN `base`; returns its
/// span.
pub fn put_record(
    buf: &mut [u8],
    offset: u64,
    base: u64,
    salt: u64,
    kind: RecordKind,
    flags: u8,
    payload: &[u8],
) -> u64 {
    let header = encode_record_header(base + offset, salt, kind, flags, payload);
    let at = offset as usize;
    buf[at..at + 32].copy_from_slice(&header);
    buf[at + 32..at + 32 + payload.len()].copy_from_slice(payload);
    record_span_bytes(payload.len() as u64)
}

/// Bytes a group takes in a segment.
pub fn group_span(group: &[(RecordKind, Vec<u8>)]) -> u64 {
    group
        .iter()
        .map(|(_, p)| record_span_bytes(p.len() as u64))
        .sum()
}

/// Writes `group` from `offset` of `seg`, every record but the last flagged `FLAG_GROUP_CONTINUES`; returns the
/// `(offset, payload length)` of each record and where the group ends.
pub fn put_group(
    seg: &mut [u8],
    offset: u64,
    base: u64,
    salt: u64,
    group: &[(RecordKind, Vec<u8>)],
) -> (Vec<(u64, usize)>, u64) {
    let mut at = offset;
    let mut records = Vec::with_capacity(group.len());
    for (i, (kind, payload)) in group.iter().enumerate() {
        let flags = if i + 1 < group.len() {
            FLAG_GROUP_CONTINUES
        } else {
            0
        };
        records.push((at, payload.len()));
        at += put_record(seg, at, base, salt, *kind, flags, payload);
    }
    (records, at)
}

/// Seals `seg` with a PAD from `offset` to its end, when a record header fits there.
pub fn seal_segment(seg: &mut [u8], offset: u64, base: u64, salt: u64) {
    let size = seg.len() as u64;
    if size - offset >= RECORD_HEADER_BYTES {
        let at = offset as usize;
        seg[at..at + 32].copy_from_slice(&encode_pad_header(base + offset, salt, size - offset));
    }
}
