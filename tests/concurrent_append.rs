//! Many threads appending at once, with mixed durability, small segments (many rolls) and the smallest staging ring
//! (64 KiB: it wraps constantly and appenders wait for room). While they run, a reader iterates the live log; then
//! the log is closed and reopened, and every acknowledged record must be there exactly once, in LSN order, byte for
//! byte; LSNs strictly increase; each thread's records appear in the order it appended them; groups are whole.
//!
//! Runs on files and in memory. Seeds are fixed (`CSTORE_SEED=N` overrides) and printed on failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use collection_store::wal::format::record_span_bytes;
use collection_store::wal::{Durability, LogStorage, MemStorage, RecordKind, Wal, WalOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const PAYLOAD_HEADER_BYTES: usize = 16;
const DEFAULT_SEED: u64 = 0xC0_4C_42_2E;

fn seed() -> u64 {
    std::env::var("CSTORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

struct SeedGuard(String);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "FAILED: {} (base seed {}; thread interleaving is not replayable)",
                self.0,
                seed()
            );
        }
    }
}

fn options(segment_size_bytes: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes,
        staging_buffer_bytes: 64 << 10,
        ..WalOptions::default()
    }
}

/// Who wrote a record: `writer`, its `seq`-th record, position `index` of `len` in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Id {
    writer: u8,
    seq: u32,
    index: u8,
    len: u8,
}

fn encode(id: Id, total_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(total_len);
    p.extend_from_slice(&id.seq.to_le_bytes());
    p.extend_from_slice(&[id.writer, id.index, id.len, 0x5A]);
    p.extend_from_slice(&(total_len as u64).to_le_bytes());
    let mut x = u64::from(id.seq) << 8 | u64::from(id.writer) | 1 << 63;
    p.extend((PAYLOAD_HEADER_BYTES..total_len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    p
}

/// The id of a payload made by [`encode`], if every byte is exactly as it made it.
fn decode(p: &[u8]) -> Option<Id> {
    let h = p.get(..PAYLOAD_HEADER_BYTES)?;
    let id = Id {
        seq: u32::from_le_bytes(h[0..4].try_into().unwrap()),
        writer: h[4],
        index: h[5],
        len: h[6],
    };
    let total = u64::from_le_bytes(h[8..16].try_into().unwrap());
    (h[7] == 0x5A && total == p.len() as u64 && encode(id, p.len()) == p).then_some(id)
}

#[derive(Clone, Copy)]
struct Workload {
    threads: u8,
    ops_per_thread: usize,
    /// Percent of appends that are `None`, `Os` (the rest `Sync`).
    none_percent: u32,
    os_percent: u32,
    /// Percent of records of the largest size a group allows.
    max_size_percent: u32,
}

/// A record as acknowledged to its writer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    lsn: u64,
    kind: RecordKind,
    cont: bool,
    payload: Vec<u8>,
}

fn records(wal: &Wal) -> Vec<Rec> {
    wal.iter_from(wal.start_lsn())
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            Rec {
                lsn: r.lsn(),
                kind: r.kind(),
                cont: r.group_continues(),
                payload: r.payload().to_vec(),
            }
        })
        .collect()
}

/// Checks what a reader sees of a log being appended to: byte-exact records, increasing LSNs, and each writer's
/// records a gap-free prefix of its sequence (the view is an LSN prefix of the log).
fn check_live_view(view: &[Rec], threads: u8) {
    let mut next = vec![0u32; threads as usize];
    for (i, r) in view.iter().enumerate() {
        assert!(
            i == 0 || r.lsn > view[i - 1].lsn,
            "reader: LSNs not increasing at {i}"
        );
        let id = decode(&r.payload)
            .unwrap_or_else(|| panic!("reader: record {i} at LSN {} is not as written", r.lsn));
        assert_eq!(
            id.seq, next[id.writer as usize],
            "reader: writer {} out of order at LSN {}",
            id.writer, r.lsn
        );
        next[id.writer as usize] += 1;
    }
}

/// Runs `workload` against `wal`, with a reader alongside; returns every acknowledged record in LSN order.
fn run(wal: &Wal, workload: Workload, seed: u64) -> Vec<Rec> {
    let done = AtomicBool::new(false);
    let reader_passes = AtomicUsize::new(0);
    let mut acked: Vec<Rec> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..workload.threads)
            .map(|writer| {
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(seed ^ (u64::from(writer) << 48));
                    let mut mine = Vec::new();
                    let mut seq = 0u32;
                    for _ in 0..workload.ops_per_thread {
                        let n = if rng.random_bool(0.7) {
                            1
                        } else {
                            rng.random_range(2..=3)
                        };
                        let cap = ((wal.max_group_bytes() as usize / n) & !7) - 32;
                        let group: Vec<(RecordKind, Vec<u8>)> = (0..n)
                            .map(|i| {
                                let len = if rng.random_range(0..100) < workload.max_size_percent {
                                    cap
                                } else if rng.random_bool(0.8) {
                                    rng.random_range(PAYLOAD_HEADER_BYTES..200)
                                } else {
                                    rng.random_range(PAYLOAD_HEADER_BYTES..=cap)
                                };
                                let id = Id {
                                    writer,
                                    seq: seq + i as u32,
                                    index: i as u8,
                                    len: n as u8,
                                };
                                let kind = if i + 1 == n {
                                    RecordKind::Commit
                                } else {
                                    RecordKind::Data
                                };
                                (kind, encode(id, len))
                            })
                            .collect();
                        let roll = rng.random_range(0..100);
                        let durability = if roll < workload.none_percent {
                            Durability::None
                        } else if roll < workload.none_percent + workload.os_percent {
                            Durability::Os
                        } else {
                            Durability::Sync
                        };
                        let refs: Vec<(RecordKind, &[u8])> =
                            group.iter().map(|(k, p)| (*k, &p[..])).collect();
                        let g = wal.append_group(&refs, durability).unwrap();
                        if durability != Durability::None {
                            assert!(
                                wal.written_lsn() >= g.end_lsn,
                                "acknowledged {durability:?} but not written"
                            );
                        }
                        if durability == Durability::Sync {
                            assert!(
                                wal.durable_lsn() >= g.end_lsn,
                                "acknowledged Sync but not durable"
                            );
                        }
                        let mut lsn = g.first_lsn;
                        for (i, (kind, payload)) in group.into_iter().enumerate() {
                            let span = record_span_bytes(payload.len() as u64);
                            mine.push(Rec {
                                lsn,
                                kind,
                                cont: i + 1 < n,
                                payload,
                            });
                            lsn += span;
                        }
                        assert_eq!(lsn, g.end_lsn, "group span");
                        seq += n as u32;
                    }
                    mine
                })
            })
            .collect();
        let reader = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                check_live_view(&records(wal), workload.threads);
                reader_passes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let mut all = Vec::new();
        for w in writers {
            all.extend(w.join().unwrap());
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap();
        all
    });
    assert!(reader_passes.load(Ordering::Relaxed) > 0);
    acked.sort_by_key(|r| r.lsn);
    acked
}

/// Checks a reopened log against every acknowledged record.
fn check_reopened(got: &[Rec], acked: &[Rec], threads: u8) {
    assert_eq!(
        got.len(),
        acked.len(),
        "every acknowledged record exactly once"
    );
    let mut next = vec![0u32; threads as usize];
    let mut seen = BTreeMap::new();
    for (i, (g, a)) in got.iter().zip(acked).enumerate() {
        assert!(
            i == 0 || g.lsn > got[i - 1].lsn,
            "LSNs not strictly increasing at record {i}"
        );
        assert_eq!(
            g, a,
            "record {i} differs from what was acknowledged at that LSN"
        );
        let id = decode(&g.payload).expect("self-identifying payload");
        assert_eq!(
            id.seq, next[id.writer as usize],
            "writer {}: sequence order differs from LSN order",
            id.writer
        );
        next[id.writer as usize] += 1;
        assert!(seen.insert(id, g.lsn).is_none(), "{id:?} twice");
        assert_eq!(g.cont, id.index + 1 < id.len, "group flag of {id:?}");
    }
    assert!(
        got.last().is_none_or(|r| !r.cont),
        "log ends inside a group"
    );
}

fn run_and_reopen(
    label: &str,
    storage: impl Fn() -> Arc<dyn LogStorage>,
    segment_size_bytes: u64,
    workload: Workload,
    seed: u64,
) {
    let _guard = SeedGuard(format!("{label} with seed {seed:#x}"));
    let started = std::time::Instant::now();
    let (wal, _) = Wal::open_with_storage(storage(), options(segment_size_bytes)).unwrap();
    let acked = run(&wal, workload, seed);
    let stats = wal.stats();
    assert_eq!(stats.records, acked.len() as u64);
    // The live log already holds everything, in order.
    check_reopened(&records(&wal), &acked, workload.threads);
    drop(wal);
    let (wal, report) = Wal::open_with_storage(storage(), options(segment_size_bytes)).unwrap();
    assert_eq!(report.records, acked.len() as u64);
    check_reopened(&records(&wal), &acked, workload.threads);
    println!(
        "{label}: {} records, {} segments, {} syncs for {} sync requests, {:.1?}",
        acked.len(),
        report.segments,
        stats.syncs,
        stats.sync_requests,
        started.elapsed()
    );
    assert!(
        report.segments > 20,
        "the workload should roll many segments: {report:?}"
    );
}

#[test]
fn concurrent_appends_to_files_are_all_recovered_in_lsn_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let workload = Workload {
        threads: 6,
        ops_per_thread: 400,
        none_percent: 50,
        os_percent: 35,
        max_size_percent: 2,
    };
    run_and_reopen(
        "files, 6 threads",
        || Arc::new(collection_store::wal::FileStorage::open(&path).unwrap()),
        4096,
        workload,
        seed(),
    );
}

#[test]
fn concurrent_appends_in_memory_are_all_recovered_in_lsn_order() {
    let workload = Workload {
        threads: 8,
        ops_per_thread: 1500,
        none_percent: 50,
        os_percent: 35,
        max_size_percent: 2,
    };
    for (round, segment) in [4096, 8192].into_iter().enumerate() {
        let storage = Arc::new(MemStorage::new());
        run_and_reopen(
            &format!("memory, 8 threads, {segment}-byte segments"),
            || storage.clone(),
            segment,
            workload,
            seed() ^ round as u64,
        );
    }
}

/// Large records and no flushing by the appenders: the 64 KiB ring is always full, so appenders wait for room and
/// flush for each other, and nearly every group rolls a segment.
#[test]
fn concurrent_large_appends_under_ring_backpressure_lose_nothing() {
    let storage = Arc::new(MemStorage::new());
    let workload = Workload {
        threads: 8,
        ops_per_thread: 300,
        none_percent: 90,
        os_percent: 8,
        max_size_percent: 60,
    };
    run_and_reopen(
        "memory, 8 threads, large records",
        || storage.clone(),
        4096,
        workload,
        seed() ^ 0xBACC,
    );
}
