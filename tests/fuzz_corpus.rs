//! Replays the committed seed corpus of the `wal_recovery` fuzzer (`fuzz/corpus/wal_recovery/`) through
//! `scan::fuzz_recovery` in plain `cargo test`, without libFuzzer, and holds the generator of that corpus.
//!
//! Seed names say what a seed is:
//! - `real-*`: a log written by the real `Wal` on a `MemStorage`, unmodified. Each must recover with records > 0,
//!   nothing discarded and nothing salvaged, so the replay cannot pass on an empty or stale corpus (after a
//!   format change these fail: regenerate).
//! - `synth-*`: a valid log with 512..2048-byte segments (below `WalOptions`' minimum) laid out with the real
//!   encoders exactly as the `Wal` lays out records. Also must recover with records > 0.
//! - everything else (`torn-*`, `flip-*`, `leftover-*`, `crash-*`, `corrupt-*`, `salvage-*`, `short-*`, ...) is
//!   damaged and only has to not panic.
//!
//! Input layout (see `fuzz_recovery`): byte 0 selects the segment size `512 << (b % 4)` (3 for the real logs'
//! 4096-byte segments), byte 1 bit 0 asks for salvage, the rest is the segments, back to back.
//!
//! Regenerate the seeds (rewrites every file of the directory; salts are random, so all bytes change):
//! `cargo test --test fuzz_corpus -- --ignored --exact regenerate_seed_corpus`

mod common;

use std::sync::Arc;

use collection_store::wal::format::{
    Meta, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader, record_span_bytes,
};
use collection_store::wal::scan::fuzz_recovery;
use collection_store::wal::{
    Durability, LogStorage, MemStorage, RecordKind, SegmentName, Wal, WalOptions,
};
use common::{KINDS, group_span, new_segment, put_group, seal_segment};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Every seed: (file name, bytes), sorted by name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    common::fuzz_corpus("wal_recovery")
}

#[test]
fn seed_corpus_replays_without_panic() {
    let files = corpus();
    assert!(
        files.len() >= 24,
        "seed corpus has only {} files",
        files.len()
    );
    let mut valid = 0;
    for (name, data) in &files {
        let plan = fuzz_recovery(data);
        if name.starts_with("real-") || name.starts_with("synth-") {
            let plan = plan.unwrap_or_else(|| panic!("{name}: a valid log did not recover"));
            assert!(plan.records > 0, "{name}: no records recovered: {plan:?}");
            assert_eq!(
                (
                    plan.discarded_records,
                    &plan.salvaged,
                    plan.zero_ranges.len()
                ),
                (0, &None, 0),
                "{name}: a clean log had damage: {plan:?}"
            );
            valid += 1;
        }
    }
    let real = files.iter().filter(|(n, _)| n.starts_with("real-")).count();
    assert!(real >= 5, "only {real} unmodified real-log seeds");
    assert!(valid >= 8, "only {valid} valid seeds");
    let damaged = files.len() - valid;
    assert!(damaged >= 16, "only {damaged} damaged seeds");
}

// ---------------------------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------------------------

const SEGMENT: u64 = 4096;
/// `512 << 3 == 4096`.
const SELECT_4096: u8 = 3;
const STRICT: u8 = 0;
const SALVAGE: u8 = 1;

fn options(max_free_segments: usize) -> WalOptions {
    WalOptions {
        max_free_segments,
        ..common::options(SEGMENT)
    }
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7 + 1) as u8).collect()
}

/// The live segments of `storage` from the log's start (per its meta), in LSN order. Live segments below the
/// start are left out: `Wal::open` deletes them (and `truncate_before` can leave some behind, see the report).
fn live_segments(storage: &MemStorage) -> Vec<Vec<u8>> {
    let meta = storage
        .read_meta()
        .unwrap()
        .expect("the log has a meta file");
    let start = Meta::decode(&meta).unwrap().start_lsn;
    let mut bases: Vec<u64> = storage
        .list_segments()
        .unwrap()
        .into_iter()
        .filter_map(|name| match name {
            SegmentName::Live(base) if base >= start => Some(base),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    bases
        .into_iter()
        .map(|base| storage.segment_bytes(SegmentName::Live(base)).unwrap())
        .collect()
}

fn seed(size_selector: u8, mode: u8, segments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![size_selector, mode];
    for s in segments {
        out.extend_from_slice(s);
    }
    out
}

/// A log written by the real `Wal`, synced and closed, and what reopening it reports: `(segments, records,
/// end_lsn)`.
fn real_log(max_free_segments: usize, fill: impl FnOnce(&Wal)) -> (Vec<Vec<u8>>, u64, u64) {
    let storage = Arc::new(MemStorage::new());
    let (wal, _) = Wal::open_with_storage(storage.clone(), options(max_free_segments)).unwrap();
    fill(&wal);
    wal.sync().unwrap();
    drop(wal);
    let segments = live_segments(&storage);
    let (wal, report) =
        Wal::open_with_storage(storage.clone(), options(max_free_segments)).unwrap();
    drop(wal);
    assert!(report.discarded_records == 0 && report.salvaged.is_none());
    (segments, report.records, report.end_lsn)
}

fn append(wal: &Wal, kind: RecordKind, payload: &[u8]) -> u64 {
    wal.append(kind, payload, Durability::None).unwrap()
}

/// 31 records of 96 B and one of `last_len` B, then one more record, in the next segment when the first is full.
fn fill_first_segment(wal: &Wal, last_len: usize) {
    for i in 0..31 {
        append(wal, RecordKind::Data, &payload(i, 96));
    }
    append(wal, RecordKind::Data, &payload(31, last_len));
    append(wal, RecordKind::Commit, b"next segment");
}

/// `(segment index, offset in segment)` of `lsn` in a log whose first segment has base `start`.
fn locate(start: u64, lsn: u64) -> (usize, usize) {
    (((lsn - start) / SEGMENT) as usize, (lsn % SEGMENT) as usize)
}

fn start_of(segments: &[Vec<u8>]) -> u64 {
    SegmentHeader::decode(&segments[0]).unwrap().base_lsn
}

fn zero_from(segments: &[Vec<u8>], (index, offset): (usize, usize)) -> Vec<Vec<u8>> {
    let mut out = segments.to_vec();
    out[index][offset..].fill(0);
    out
}

fn zero_range(segments: &[Vec<u8>], (index, offset): (usize, usize), len: usize) -> Vec<Vec<u8>> {
    let mut out = segments.to_vec();
    out[index][offset..offset + len].fill(0);
    out
}

fn flip(segments: &[Vec<u8>], (index, offset): (usize, usize), bit: u8) -> Vec<Vec<u8>> {
    let mut out = segments.to_vec();
    out[index][offset] ^= 1 << bit;
    out
}

/// A valid log with `size`-byte segments, laid out as the `Wal` does: each group in one segment, a segment whose
/// next group does not fit sealed with a PAD (when at least a record header remains).
fn synth_log(
    size: u64,
    salt: u64,
    start: u64,
    groups: &[Vec<(RecordKind, Vec<u8>)>],
) -> Vec<Vec<u8>> {
    let mut segments = vec![new_segment(size, start, salt)];
    let (mut base, mut at) = (start, SEGMENT_HEADER_BYTES);
    for group in groups {
        let span = group_span(group);
        assert!(span <= size - SEGMENT_HEADER_BYTES);
        if at + span > size {
            seal_segment(segments.last_mut().unwrap(), at, base, salt);
            base += size;
            segments.push(new_segment(size, base, salt));
            at = SEGMENT_HEADER_BYTES;
        }
        at = put_group(segments.last_mut().unwrap(), at, base, salt, group).1;
    }
    segments
}

/// `(segment index, offset)` of the first PAD record, found by walking the records' length fields.
fn find_pad(segments: &[Vec<u8>]) -> Option<(usize, usize)> {
    for (index, seg) in segments.iter().enumerate() {
        let mut at = SEGMENT_HEADER_BYTES as usize;
        while at + RECORD_HEADER_BYTES as usize <= seg.len() && seg[at + 4] != 0 {
            if seg[at + 4] == RecordKind::Pad as u8 {
                return Some((index, at));
            }
            let len = u32::from_le_bytes(seg[at..at + 4].try_into().unwrap());
            at += record_span_bytes(u64::from(len)) as usize;
        }
    }
    None
}

fn synth_groups(
    count: usize,
    max_payload: usize,
    rng: &mut SmallRng,
) -> Vec<Vec<(RecordKind, Vec<u8>)>> {
    (0..count)
        .map(|g| {
            let n = rng.random_range(1..=3);
            (0..n)
                .map(|r| {
                    let len = rng.random_range(0..=max_payload / n);
                    (KINDS[(g + r) % KINDS.len()], payload(g * 3 + r, len))
                })
                .collect()
        })
        .collect()
}

/// A crash image of a simulated log: some writes synced, later ones torn at sector granularity.
fn crash_log(rng_seed: u64) -> Vec<Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(rng_seed);
    let storage = Arc::new(MemStorage::simulated());
    let (wal, _) = Wal::open_with_storage(storage.clone(), options(2)).unwrap();
    let records = rng.random_range(20..60);
    for i in 0..records {
        let len = rng.random_range(0..600);
        let durability = if rng.random_bool(0.2) {
            Durability::Sync
        } else {
            Durability::Os
        };
        if rng.random_bool(0.2) {
            let p1 = payload(i, len / 2);
            let p2 = payload(i + 1, len / 3);
            wal.append_group(
                &[(RecordKind::Data, &p1), (RecordKind::Commit, &p2)],
                durability,
            )
            .unwrap();
        } else {
            wal.append(RecordKind::Data, &payload(i, len), durability)
                .unwrap();
        }
    }
    wal.flush().unwrap();
    let image = storage.crash_image(|_, _| rng.random_bool(0.5));
    drop(wal);
    let segments = live_segments(&image);
    // The real recovery must accept every crash image: check the seed matches what it reports.
    let (wal, report) = Wal::open_with_storage(Arc::new(image), options(2)).unwrap();
    drop(wal);
    let plan = fuzz_recovery(&seed(SELECT_4096, STRICT, &segments)).expect("crash image recovers");
    assert_eq!(
        (plan.records, plan.end_lsn),
        (report.records, report.end_lsn)
    );
    segments
}

#[test]
#[ignore = "rewrites fuzz/corpus/wal_recovery; run by hand after a format change"]
fn regenerate_seed_corpus() {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, data: Vec<u8>| seeds.push((name.to_owned(), data));

    // --- unmodified real logs -----------------------------------------------------------------------------------
    let mut real = Vec::new();
    let mut lsns = Vec::new();
    real.push((
        "real-single-segment",
        real_log(2, |wal| {
            for i in 0..6 {
                lsns.push(append(wal, RecordKind::Data, &payload(i, 10 + i * 13)));
            }
        }),
    ));
    let single_lsns = std::mem::take(&mut lsns);
    real.push((
        "real-all-kinds",
        real_log(2, |wal| {
            for (i, kind) in [
                RecordKind::Data,
                RecordKind::Commit,
                RecordKind::Prepare,
                RecordKind::Abort,
                RecordKind::Checkpoint,
            ]
            .into_iter()
            .enumerate()
            {
                append(wal, kind, &payload(i, i * 5));
            }
        }),
    ));
    real.push((
        "real-empty-payloads",
        real_log(2, |wal| {
            for _ in 0..8 {
                append(wal, RecordKind::Commit, b"");
            }
        }),
    ));
    let mut group_lsn = 0;
    real.push((
        "real-groups",
        real_log(2, |wal| {
            append(wal, RecordKind::Data, b"before");
            let (a, b, c) = (payload(1, 40), payload(2, 3), payload(3, 0));
            group_lsn = wal
                .append_group(
                    &[
                        (RecordKind::Data, &a),
                        (RecordKind::Data, &b),
                        (RecordKind::Commit, &c),
                    ],
                    Durability::None,
                )
                .unwrap()
                .first_lsn;
            append(wal, RecordKind::Data, b"after");
        }),
    ));
    real.push((
        "real-multi-segment",
        real_log(2, |wal| {
            for i in 0..40 {
                lsns.push(append(wal, RecordKind::Data, &payload(i, (i * 37) % 500)));
            }
        }),
    ));
    let multi_lsns = std::mem::take(&mut lsns);
    real.push((
        "real-exact-fill",
        // 4096 - 64 = 4032 = 31 * 128 + 64: fill the first segment to its last byte, then one more.
        real_log(2, |wal| fill_first_segment(wal, 32)),
    ));
    real.push((
        "real-short-seal",
        // Leave 24 bytes at the end of the first segment: too few for a PAD, skipped by the scan.
        real_log(2, |wal| fill_first_segment(wal, 8)),
    ));
    real.push((
        "real-largest-record",
        real_log(2, |wal| {
            append(wal, RecordKind::Data, b"small");
            let max = wal.max_group_bytes() - RECORD_HEADER_BYTES;
            append(wal, RecordKind::Data, &payload(9, max as usize));
        }),
    ));
    real.push((
        "real-truncated-start",
        real_log(0, |wal| {
            for i in 0..30 {
                append(wal, RecordKind::Data, &payload(i, 300));
            }
            wal.sync().unwrap();
            let start = wal.truncate_before(2 * SEGMENT + 100).unwrap();
            assert_eq!(start, 2 * SEGMENT);
        }),
    ));
    real.push((
        "real-recycled-segments",
        real_log(3, |wal| {
            for i in 0..40 {
                append(wal, RecordKind::Data, &payload(i, 250));
            }
            wal.sync().unwrap();
            wal.truncate_before(3 * SEGMENT).unwrap();
            // New segments reuse the retired ones, whose bytes are stale records of an earlier lap.
            for i in 0..20 {
                append(wal, RecordKind::Checkpoint, &payload(i + 100, 90));
            }
        }),
    ));
    for (name, (segments, records, end_lsn)) in &real {
        let data = seed(SELECT_4096, STRICT, segments);
        let plan = fuzz_recovery(&data).unwrap_or_else(|| {
            let bases: Vec<_> = segments
                .iter()
                .map(|s| SegmentHeader::decode(s).map(|h| h.base_lsn))
                .collect();
            panic!("{name}: real log does not recover: {bases:?}")
        });
        assert_eq!(
            (plan.records, plan.end_lsn),
            (*records, *end_lsn),
            "{name}: fuzz_recovery disagrees with Wal::open"
        );
        add(name, data);
    }
    let get = |name: &str| real.iter().find(|(n, _)| *n == name).unwrap().1.0.clone();
    let single = get("real-single-segment");
    let multi = get("real-multi-segment");
    let groups = get("real-groups");
    let recycled = get("real-recycled-segments");
    let (s0, m0) = (start_of(&single), start_of(&multi));
    let multi_last = *multi_lsns.last().unwrap();
    let multi_prev = multi_lsns[multi_lsns.len() - 2];

    // --- torn tails ---------------------------------------------------------------------------------------------
    add(
        "torn-mid-payload",
        seed(
            SELECT_4096,
            STRICT,
            &zero_from(&multi, locate(m0, multi_last + 40)),
        ),
    );
    add(
        "torn-mid-header",
        seed(
            SELECT_4096,
            STRICT,
            &zero_from(&multi, locate(m0, multi_last + 16)),
        ),
    );
    add(
        "torn-at-record",
        seed(
            SELECT_4096,
            STRICT,
            &zero_from(&multi, locate(m0, multi_last)),
        ),
    );
    add(
        "torn-after-segment-header",
        seed(SELECT_4096, STRICT, &zero_from(&single, (0, 64))),
    );
    add(
        "torn-inside-group",
        seed(
            SELECT_4096,
            STRICT,
            &zero_from(&groups, locate(start_of(&groups), group_lsn + 80)),
        ),
    );
    // A torn word in the middle of a record (sector torn), later bytes intact.
    add(
        "torn-hole",
        seed(
            SELECT_4096,
            STRICT,
            &zero_range(&single, locate(s0, single_lsns[3] + 32), 8),
        ),
    );

    // --- leftovers: a hole, then records that still validate -----------------------------------------------------
    let hole = zero_range(&single, locate(s0, single_lsns[2]), 8);
    add("leftover-strict", seed(SELECT_4096, STRICT, &hole));
    add("leftover-salvage", seed(SELECT_4096, SALVAGE, &hole));
    let hole = zero_range(&multi, locate(m0, multi_prev), 8);
    add("leftover-last-segment", seed(SELECT_4096, STRICT, &hole));

    // --- single bit flips ---------------------------------------------------------------------------------------
    let r = single_lsns[1];
    for (name, delta, bit) in [
        ("flip-length", 0, 3),
        ("flip-kind", 4, 1),
        ("flip-flags", 5, 0),
        ("flip-reserved", 6, 7),
        ("flip-lsn", 9, 2),
        ("flip-salt", 17, 5),
        ("flip-crc", 25, 4),
        ("flip-payload", 35, 6),
    ] {
        add(
            name,
            seed(
                SELECT_4096,
                STRICT,
                &flip(&single, locate(s0, r + delta), bit),
            ),
        );
    }
    add(
        "flip-segment-magic",
        seed(SELECT_4096, STRICT, &flip(&single, (0, 2), 1)),
    );
    add(
        "flip-segment-base",
        seed(SELECT_4096, STRICT, &flip(&multi, (1, 25), 0)),
    );
    add(
        "flip-segment-crc",
        seed(SELECT_4096, SALVAGE, &flip(&multi, (2, 61), 3)),
    );
    // The PAD that seals the first segment: its header, and (not checksummed) its body.
    let pad_at = find_pad(&multi).expect("the multi-segment log has a PAD");
    add(
        "flip-pad-header",
        seed(
            SELECT_4096,
            STRICT,
            &flip(&multi, (pad_at.0, pad_at.1 + 1), 0),
        ),
    );
    add(
        "flip-pad-body",
        seed(
            SELECT_4096,
            STRICT,
            &flip(&multi, (pad_at.0, pad_at.1 + 40), 2),
        ),
    );
    add(
        "flip-recycled-stale",
        seed(
            SELECT_4096,
            STRICT,
            &flip(&recycled, (recycled.len() - 1, 4000), 4),
        ),
    );

    // --- damage before the end: corruption (strict) or cut (salvage) --------------------------------------------
    let early = zero_from(&multi, locate(m0, multi_lsns[3]));
    add("corrupt-early-segment", seed(SELECT_4096, STRICT, &early));
    add("salvage-early-segment", seed(SELECT_4096, SALVAGE, &early));
    let lost_header = zero_range(&multi, (1, 0), SEGMENT_HEADER_BYTES as usize);
    add(
        "salvage-lost-segment-header",
        seed(SELECT_4096, SALVAGE, &lost_header),
    );
    let mut foreign = multi.clone();
    foreign[1] = get("real-all-kinds")[0].clone();
    add(
        "corrupt-foreign-segment",
        seed(SELECT_4096, STRICT, &foreign),
    );
    add(
        "salvage-foreign-segment",
        seed(SELECT_4096, SALVAGE, &foreign),
    );

    // --- wrong sizes --------------------------------------------------------------------------------------------
    let mut short = seed(SELECT_4096, STRICT, &multi);
    short.truncate(2 + SEGMENT as usize + 1000);
    add("short-last-segment", short);
    let mut short = seed(SELECT_4096, STRICT, &single);
    short.truncate(2 + 200);
    add("short-single", short);
    add("size-mismatch-2048", seed(2, STRICT, &single));

    // --- crash images of a simulated disk -----------------------------------------------------------------------
    for i in 0..5u64 {
        add(
            &format!("crash-{i}"),
            seed(SELECT_4096, STRICT, &crash_log(i)),
        );
    }

    // --- small segments (512..2048), built with the real encoders ------------------------------------------------
    let mut rng = SmallRng::seed_from_u64(42);
    for (selector, size, groups, max_payload) in [
        (0u8, 512u64, 10, 200),
        (1, 1024, 12, 500),
        (2, 2048, 8, 900),
    ] {
        let start = size * rng.random_range(0..4);
        let segments = synth_log(
            size,
            0x5EED_0000 + size,
            start,
            &synth_groups(groups, max_payload, &mut rng),
        );
        add(&format!("synth-{size}"), seed(selector, STRICT, &segments));
        if size == 512 {
            let last = segments.len() - 1;
            add(
                "torn-synth-512",
                seed(selector, STRICT, &zero_from(&segments, (last, 100))),
            );
            add(
                "flip-synth-512",
                seed(selector, SALVAGE, &flip(&segments, (0, 70), 3)),
            );
        }
    }

    common::write_fuzz_corpus("wal_recovery", &seeds);
    // Whatever was generated must pass the replay.
    seed_corpus_replays_without_panic();
}
