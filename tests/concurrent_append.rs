//! Many threads appending at once, with mixed durability, small segments (many rolls) and the smallest staging ring
//! (64 KiB: it wraps constantly and appenders wait for room). While they run, a reader iterates the live log; then
//! the log is closed and reopened, and every acknowledged record must be there exactly once, in LSN order, byte for
//! byte; LSNs strictly increase; each thread's records appear in the order it appended them; groups are whole.
//!
//! Runs on files and in memory. Seeds are fixed (`CSTORE_SEED=N` overrides) and printed on failure.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use collection_store::wal::{Durability, LogStorage, MemStorage, Wal};
use common::{
    Id, PAYLOAD_HEADER_BYTES, Rec, SeedGuard, append_group, decode, encode, env_or, group_kind,
    max_payload_in_group, options, random_group_len, read_log,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEED: u64 = 0xC0_4C_42_2E;

fn base_seed() -> u64 {
    env_or("CSTORE_SEED", DEFAULT_SEED)
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
                        let n = random_group_len(&mut rng, 0.7, 3);
                        let cap = max_payload_in_group(wal.max_group_bytes(), n);
                        let group: Vec<_> = (0..n)
                            .map(|i| {
                                let len = if rng.random_range(0..100) < workload.max_size_percent {
                                    cap
                                } else if rng.random_bool(0.8) {
                                    rng.random_range(PAYLOAD_HEADER_BYTES..200)
                                } else {
                                    rng.random_range(PAYLOAD_HEADER_BYTES..=cap)
                                };
                                (
                                    group_kind(i, n),
                                    encode(Id::in_group(0, writer, seq, i, n), len),
                                )
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
                        let recs = append_group(wal, group, durability).unwrap();
                        let end_lsn = recs.last().unwrap().end_lsn();
                        if durability != Durability::None {
                            assert!(
                                wal.written_lsn() >= end_lsn,
                                "acknowledged {durability:?} but not written"
                            );
                        }
                        if durability == Durability::Sync {
                            assert!(
                                wal.durable_lsn() >= end_lsn,
                                "acknowledged Sync but not durable"
                            );
                        }
                        mine.extend(recs);
                        seq += n as u32;
                    }
                    mine
                })
            })
            .collect();
        let reader = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                check_live_view(&read_log(wal), workload.threads);
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
    let _guard = SeedGuard(format!(
        "{label} with seed {seed:#x} (base seed {}; thread interleaving is not replayable)",
        base_seed()
    ));
    let started = std::time::Instant::now();
    let (wal, _) = Wal::open_with_storage(storage(), options(segment_size_bytes)).unwrap();
    let acked = run(&wal, workload, seed);
    let stats = wal.stats();
    assert_eq!(stats.records, acked.len() as u64);
    // The live log already holds everything, in order.
    check_reopened(&read_log(&wal), &acked, workload.threads);
    drop(wal);
    let (wal, report) = Wal::open_with_storage(storage(), options(segment_size_bytes)).unwrap();
    assert_eq!(report.records, acked.len() as u64);
    check_reopened(&read_log(&wal), &acked, workload.threads);
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
        base_seed(),
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
            base_seed() ^ round as u64,
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
        base_seed() ^ 0xBACC,
    );
}
