//! Power loss, simulated: a workload runs on `MemStorage::simulated()`, crash images are taken at many points
//! (each unsynced write's 512-byte pieces kept or lost at random, or all lost, or all kept; and, where nothing is
//! writing, each aligned 512-byte sector or 4 KiB page of the disk old or new), and every image is reopened and
//! checked against a prefix oracle:
//!
//! 1. what is recovered is a prefix, in LSN order, of what was appended, every record byte-exact;
//! 2. every record acknowledged under `Durability::Sync` before the image (and everything below `durable_lsn`) is
//!    present; with every sector kept, everything below `written_lsn` is present;
//! 3. groups are all-or-nothing;
//! 4. recovery never panics and never calls a legitimate crash image corrupt.
//!
//! Also: injected EIO at random write / sync counts (the failing call errors, the log is poisoned, the image
//! reopens to a valid prefix holding every Sync-acknowledged record), and torn-tail zeroing (records past the
//! recovered end never resurrect after new appends and a second crash).
//!
//! Seeds are fixed (override the base with `CSTORE_SEED=N`) and printed on failure. The number of crash images is
//! about 2,000 per run; `CSTORE_CRASH_IMAGES=N` scales it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use collection_store::Error;
use collection_store::wal::format::record_span_bytes;
use collection_store::wal::{Durability, MemStorage, RecordKind, RecoveryReport, Wal, WalOptions};
use common::{SeedGuard, env_or, group_kind, max_payload_in_group, options, random_group_len};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DEFAULT_BASE_SEED: u64 = 0x00C0_FFEE_2026;
const DEFAULT_CRASH_IMAGES: usize = 2_000;

fn base_seed() -> u64 {
    env_or("CSTORE_SEED", DEFAULT_BASE_SEED)
}

/// This test's share of the crash-image budget (`CSTORE_CRASH_IMAGES`, default 2,000).
fn image_budget(share_percent: usize) -> usize {
    (env_or("CSTORE_CRASH_IMAGES", DEFAULT_CRASH_IMAGES) * share_percent / 100).max(1)
}

/// Prints what to rerun if the test panics while it is alive.
fn seed_guard(what: String) -> SeedGuard {
    SeedGuard(format!(
        "{what} (rerun with CSTORE_SEED={} to reproduce)",
        base_seed()
    ))
}

/// A new log on a simulated disk.
fn simulated_log(opts: &WalOptions) -> (Arc<MemStorage>, Wal) {
    let storage = Arc::new(MemStorage::simulated());
    let (wal, _) = Wal::open_with_storage(storage.clone(), opts.clone()).unwrap();
    (storage, wal)
}

/// A record as appended: its LSN (unknown for an append that failed), kind, group flag and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    lsn: Option<u64>,
    kind: RecordKind,
    cont: bool,
    payload: Vec<u8>,
}

impl Rec {
    fn end_lsn(&self) -> u64 {
        self.lsn.expect("known LSN") + record_span_bytes(self.payload.len() as u64)
    }
}

/// Deterministic payload bytes for record `seq` of `writer`: a tag then a pattern, no two records alike.
fn payload(writer: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut x = (u64::from(writer) << 32 | u64::from(seq)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    let tag = [writer, seq as u8, (seq >> 8) as u8, (seq >> 16) as u8];
    for i in 0..len {
        if i < tag.len() {
            out.push(tag[i]);
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(x as u8);
        }
    }
    out
}

/// Generates groups of records for one writer.
struct Gen {
    rng: SmallRng,
    writer: u8,
    seq: u32,
    max_group_bytes: u64,
    /// Fixed payload length for every record (the zeroing test wants equal spans), or random lengths.
    fixed_len: Option<usize>,
}

impl Gen {
    fn new(seed: u64, writer: u8, max_group_bytes: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            writer,
            seq: 0,
            max_group_bytes,
            fixed_len: None,
        }
    }

    fn durability(&mut self) -> Durability {
        match self.rng.random_range(0..100) {
            0..35 => Durability::None,
            35..70 => Durability::Os,
            _ => Durability::Sync,
        }
    }

    fn group(&mut self) -> Vec<(RecordKind, Vec<u8>)> {
        let n = if self.fixed_len.is_some() {
            1
        } else {
            random_group_len(&mut self.rng, 0.6, 4)
        };
        // Each record gets at most an equal share of the largest group, so any mix fits.
        let cap = max_payload_in_group(self.max_group_bytes, n);
        (0..n)
            .map(|i| {
                let len = self
                    .fixed_len
                    .unwrap_or_else(|| match self.rng.random_range(0..100) {
                        0..50 => self.rng.random_range(0..64),
                        50..85 => self.rng.random_range(64..512),
                        85..97 => self.rng.random_range(0..=cap),
                        _ => cap,
                    });
                let kind = if n > 1 {
                    group_kind(i, n)
                } else {
                    [RecordKind::Data, RecordKind::Commit, RecordKind::Checkpoint]
                        [self.rng.random_range(0..3)]
                };
                let p = payload(self.writer, self.seq, len.min(cap));
                self.seq += 1;
                (kind, p)
            })
            .collect()
    }
}

/// Turns an appended group into records (with LSNs when the append succeeded).
fn group_records(group: &[(RecordKind, Vec<u8>)], first_lsn: Option<u64>) -> Vec<Rec> {
    let mut lsn = first_lsn;
    group
        .iter()
        .enumerate()
        .map(|(i, (kind, p))| {
            let rec = Rec {
                lsn,
                kind: *kind,
                cont: i + 1 < group.len(),
                payload: p.clone(),
            };
            lsn = lsn.map(|l| l + record_span_bytes(p.len() as u64));
            rec
        })
        .collect()
}

fn append(wal: &Wal, group: &[(RecordKind, Vec<u8>)], d: Durability) -> Result<Vec<Rec>, Error> {
    let refs: Vec<(RecordKind, &[u8])> = group.iter().map(|(k, p)| (*k, &p[..])).collect();
    let g = wal.append_group(&refs, d)?;
    let recs = group_records(group, Some(g.first_lsn));
    assert_eq!(recs.last().unwrap().end_lsn(), g.end_lsn, "group end LSN");
    Ok(recs)
}

/// Records (a prefix of `expected`, at a group boundary) whose whole group ends at or below `bound`.
fn count_within(expected: &[Rec], bound: u64) -> usize {
    let mut count = 0;
    for (i, r) in expected.iter().enumerate() {
        match r.lsn {
            Some(_) if r.end_lsn() <= bound => {
                if !r.cont {
                    count = i + 1;
                }
            }
            _ => break,
        }
    }
    count
}

#[derive(Clone, Copy, Debug)]
enum Survival {
    AllLost,
    AllKept,
    /// Each unsynced write's 512-byte pieces (counted from the write's offset) kept with this probability.
    Random(f64),
    /// Each `bytes`-aligned block of the disk (a sector, a page) holds its latest or its durable contents.
    /// Built from two images, so only valid while nothing writes to the storage.
    Aligned {
        bytes: usize,
        p: f64,
    },
}

fn crash_image(storage: &MemStorage, survival: Survival, rng: &mut SmallRng) -> MemStorage {
    match survival {
        Survival::AllLost => storage.crash_image(|_, _| false),
        Survival::AllKept => storage.crash_image(|_, _| true),
        Survival::Random(p) => {
            let mut r = SmallRng::seed_from_u64(rng.random());
            storage.crash_image(move |_, _| r.random_bool(p))
        }
        Survival::Aligned { bytes, p } => {
            // One decision per aligned block: every unsynced sector inside it survives or is lost together.
            let mut blocks = std::collections::HashMap::new();
            let mut r = SmallRng::seed_from_u64(rng.random());
            storage.crash_image(move |name, offset| {
                *blocks
                    .entry((name, offset / bytes as u64))
                    .or_insert_with(|| r.random_bool(p))
            })
        }
    }
}

/// A survival pattern for a storage nothing is writing to.
fn quiescent_survival(rng: &mut SmallRng) -> Survival {
    match rng.random_range(0..4) {
        0 => Survival::Aligned { bytes: 512, p: 0.5 },
        1 => Survival::Aligned {
            bytes: 4096,
            p: 0.5,
        },
        _ => random_survival(rng),
    }
}

/// Images to take of a storage nothing is writing to: all lost, all kept, then `random` random patterns.
fn quiescent_survivals(rng: &mut SmallRng, random: usize) -> Vec<Survival> {
    let mut all = vec![Survival::AllLost, Survival::AllKept];
    all.extend((0..random).map(|_| quiescent_survival(rng)));
    all
}

fn random_survival(rng: &mut SmallRng) -> Survival {
    match rng.random_range(0..6) {
        0 => Survival::AllLost,
        1 => Survival::AllKept,
        2 => Survival::Random(0.1),
        3 => Survival::Random(0.9),
        _ => Survival::Random(0.5),
    }
}

/// Reopens `image` (which must succeed: a crash image is never corrupt) and reads the whole log.
fn recover(
    image: MemStorage,
    opts: &WalOptions,
) -> Result<(Wal, RecoveryReport, Vec<Rec>), String> {
    let (wal, report) = Wal::open_with_storage(Arc::new(image), opts.clone())
        .map_err(|e| format!("a crash image must reopen, got: {e}"))?;
    let mut got = Vec::new();
    for r in wal.iter_from(wal.start_lsn()).map_err(|e| e.to_string())? {
        let r = r.map_err(|e| format!("iteration error after {} records: {e}", got.len()))?;
        got.push(Rec {
            lsn: Some(r.lsn()),
            kind: r.kind(),
            cont: r.group_continues(),
            payload: r.payload().to_vec(),
        });
    }
    Ok((wal, report, got))
}

/// Reopens `image` and checks the prefix oracle against `expected` (records in LSN order; an LSN of `None` matches
/// any LSN). `must` records have to be there. Returns how many were recovered, or what is wrong.
fn check_image(
    image: MemStorage,
    expected: &[Rec],
    must: usize,
    opts: &WalOptions,
) -> Result<(usize, RecoveryReport), String> {
    let (wal, report, got) = recover(image, opts)?;
    let k = got.len();
    if k > expected.len() {
        return Err(format!(
            "recovered {k} records but only {} were appended; extra: {:?}",
            expected.len(),
            &got[expected.len()]
        ));
    }
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let lsn_ok = e.lsn.is_none_or(|l| Some(l) == g.lsn);
        if !lsn_ok || g.kind != e.kind || g.cont != e.cont || g.payload != e.payload {
            return Err(format!(
                "record {i} differs: recovered lsn {:?} kind {:?} cont {} len {}, appended lsn {:?} kind {:?} \
                 cont {} len {}",
                g.lsn,
                g.kind,
                g.cont,
                g.payload.len(),
                e.lsn,
                e.kind,
                e.cont,
                e.payload.len()
            ));
        }
        if i > 0 && g.lsn <= got[i - 1].lsn {
            return Err(format!("LSNs not increasing at record {i}"));
        }
    }
    if k > 0 && got[k - 1].cont {
        return Err(format!(
            "recovered a partial group: record {} continues",
            k - 1
        ));
    }
    if k < must {
        return Err(format!(
            "lost acknowledged-durable records: recovered {k}, at least {must} must survive"
        ));
    }
    if report.records != k as u64 {
        return Err(format!(
            "report says {} records, iterated {k}",
            report.records
        ));
    }
    // The recovered log must accept appends right where it ends.
    let lsn = wal
        .append(RecordKind::Commit, b"after-crash", Durability::Sync)
        .map_err(|e| format!("append after recovery: {e}"))?;
    if got.last().is_some_and(|r| lsn < r.end_lsn()) {
        return Err(format!(
            "append after recovery got LSN {lsn} inside the recovered log"
        ));
    }
    let last = wal
        .iter_from(lsn)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("appended record missing")?
        .map_err(|e| e.to_string())?;
    if last.payload() != b"after-crash" {
        return Err("appended record reads back wrong".into());
    }
    Ok((k, report))
}

/// One writer; crash images between appends, so the expected log and the watermarks are exact at each image. Now
/// and then the front of the log is truncated, so recycled segments (stale bytes from an earlier lap) get torn too.
#[test]
fn crash_images_between_appends_recover_a_durable_prefix() {
    let budget = image_budget(50);
    let mut images = 0;
    let mut run = 0u64;
    let mut lost_something = 0;
    let mut truncations = 0;
    let mut recycled = 0;
    while images < budget {
        let seed = base_seed() ^ (run << 20);
        let _guard = seed_guard(format!("single-writer run {run} seed {seed:#x}"));
        let mut rng = SmallRng::seed_from_u64(seed);
        let opts = options(if rng.random_bool(0.5) { 4096 } else { 8192 });
        let (storage, wal) = simulated_log(&opts);
        let mut generator = Gen::new(rng.random(), 0, wal.max_group_bytes());
        let mut expected: Vec<Rec> = Vec::new();
        let mut sync_end = 0;
        let ops = rng.random_range(40..160);
        for op in 0..ops {
            let group = generator.group();
            let d = generator.durability();
            expected.extend(append(&wal, &group, d).unwrap());
            if d == Durability::Sync {
                sync_end = expected.last().unwrap().end_lsn();
            }
            // Now and then drop whole segments from the front: later segments are recycled with stale bytes.
            if rng.random_bool(0.04) {
                let cut = expected[rng.random_range(0..expected.len())].lsn.unwrap();
                let start = wal.truncate_before(cut).unwrap();
                expected.retain(|r| r.lsn.unwrap() >= start);
                truncations += 1;
            }
            if op + 1 == ops || rng.random_bool(0.15) {
                let durable = count_within(&expected, wal.durable_lsn());
                let written = count_within(&expected, wal.written_lsn());
                assert!(durable >= count_within(&expected, sync_end) && written >= durable);
                for survival in quiescent_survivals(&mut rng, 2) {
                    let image = crash_image(&storage, survival, &mut rng);
                    let must = match survival {
                        Survival::AllKept => written,
                        _ => durable,
                    };
                    let (k, _) = check_image(image, &expected, must, &opts).unwrap_or_else(|e| {
                        panic!("op {op}, {survival:?}: {e}");
                    });
                    if k < expected.len() {
                        lost_something += 1;
                    }
                    images += 1;
                }
            }
        }
        recycled += wal.stats().segments_recycled;
        run += 1;
    }
    println!(
        "{images} crash images over {run} runs; {lost_something} lost unsynced records; {truncations} truncations, {recycled} segments recycled"
    );
    assert!(recycled > 0, "truncation should lead to recycled segments");
    assert!(
        lost_something > images / 10,
        "the workload should leave unsynced tails"
    );
}

/// Three writers race while a fourth thread takes crash images at random moments; the images are checked once
/// every LSN is known.
#[test]
fn crash_images_during_concurrent_appends_recover_a_durable_prefix() {
    let budget = image_budget(25);
    let mut images = 0;
    let mut run = 0u64;
    while images < budget {
        let seed = base_seed() ^ (run << 20) ^ 0xC0C0;
        let _guard = seed_guard(format!(
            "concurrent run {run} seed {seed:#x} (threads: not replayable)"
        ));
        let mut rng = SmallRng::seed_from_u64(seed);
        let opts = options(if rng.random_bool(0.5) { 4096 } else { 8192 });
        let (storage, wal) = simulated_log(&opts);
        let max_sync_end = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let per_run = (budget - images).min(40);
        // (image, durable_lsn, written_lsn, highest Sync-acknowledged end, survival), all read before the image.
        let mut taken: Vec<(MemStorage, u64, u64, u64, Survival)> = Vec::new();
        let mut expected: Vec<Rec> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..3u8)
                .map(|w| {
                    let (wal, max_sync_end, seed) = (&wal, &max_sync_end, rng.random::<u64>());
                    s.spawn(move || {
                        let mut generator = Gen::new(seed, w, wal.max_group_bytes());
                        let mut mine = Vec::new();
                        for _ in 0..300 {
                            let group = generator.group();
                            let d = generator.durability();
                            let recs = append(wal, &group, d).unwrap();
                            if d == Durability::Sync {
                                max_sync_end
                                    .fetch_max(recs.last().unwrap().end_lsn(), Ordering::AcqRel);
                            }
                            mine.extend(recs);
                        }
                        mine
                    })
                })
                .collect();
            let snapshotter = s.spawn(|| {
                let mut rng = SmallRng::seed_from_u64(seed);
                while !done.load(Ordering::Acquire) && taken.len() < per_run {
                    std::thread::sleep(Duration::from_micros(rng.random_range(0..150)));
                    let sync_end = max_sync_end.load(Ordering::Acquire);
                    let durable = wal.durable_lsn();
                    let written = wal.written_lsn();
                    let survival = random_survival(&mut rng);
                    let image = crash_image(&storage, survival, &mut rng);
                    taken.push((image, durable, written, sync_end, survival));
                }
            });
            let mut all = Vec::new();
            for w in writers {
                all.extend(w.join().unwrap());
            }
            done.store(true, Ordering::Release);
            snapshotter.join().unwrap();
            all
        });
        expected.sort_by_key(|r| r.lsn);
        for (i, (image, durable, written, sync_end, survival)) in taken.into_iter().enumerate() {
            let mut must = count_within(&expected, durable).max(count_within(&expected, sync_end));
            if let Survival::AllKept = survival {
                must = must.max(count_within(&expected, written));
            }
            check_image(image, &expected, must, &opts)
                .unwrap_or_else(|e| panic!("image {i} ({survival:?}): {e}"));
            images += 1;
        }
        run += 1;
    }
    println!("{images} crash images over {run} concurrent runs");
}

/// EIO at a random write or sync: that call's append fails with an I/O error, the log is poisoned for good, and
/// a crash image reopens to a prefix holding every Sync-acknowledged record.
#[test]
fn injected_eio_poisons_and_the_crash_image_keeps_every_synced_record() {
    let budget = image_budget(15);
    let mut images = 0;
    let mut run = 0u64;
    let mut failed_runs = 0;
    while images < budget {
        let seed = base_seed() ^ (run << 20) ^ 0xE10;
        let _guard = seed_guard(format!("EIO run {run} seed {seed:#x}"));
        let mut rng = SmallRng::seed_from_u64(seed);
        let opts = options(4096);
        let (storage, wal) = simulated_log(&opts);
        let fail_syncs = rng.random_bool(0.5);
        let after = if fail_syncs {
            rng.random_range(0..25)
        } else {
            rng.random_range(0..60)
        };
        if fail_syncs {
            storage.fail_syncs_after(Some(after));
        } else {
            storage.fail_writes_after(Some(after));
        }
        let mut generator = Gen::new(rng.random(), 0, wal.max_group_bytes());
        let mut expected: Vec<Rec> = Vec::new();
        let mut sync_acked = 0;
        let mut failed = false;
        for op in 0..150 {
            let group = generator.group();
            let d = generator.durability();
            match append(&wal, &group, d) {
                Ok(recs) => {
                    assert!(!failed, "op {op}: append succeeded after the log failed");
                    expected.extend(recs);
                    if d == Durability::Sync {
                        sync_acked = expected.len();
                    }
                }
                Err(e) if !failed => {
                    assert!(
                        matches!(e, Error::Io { .. }),
                        "op {op}: first failure must be the I/O error, got {e}"
                    );
                    assert!(
                        wal.is_poisoned(),
                        "op {op}: a failed {d:?} append must poison the log"
                    );
                    // The failed group may or may not have reached the disk; its LSN is unknown.
                    expected.extend(group_records(&group, None));
                    failed = true;
                }
                Err(e) => assert!(
                    matches!(e, Error::Poisoned { .. }),
                    "op {op}: expected Poisoned, got {e}"
                ),
            }
            if failed && rng.random_bool(0.3) {
                break;
            }
        }
        if failed {
            failed_runs += 1;
            assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
            // A flush with nothing left to hand to the OS may succeed; one with work to do must refuse.
            match wal.flush() {
                Ok(()) => assert!(
                    wal.written_lsn() >= wal.next_lsn(),
                    "flush of a poisoned log wrote"
                ),
                Err(e) => assert!(matches!(e, Error::Poisoned { .. }), "{e}"),
            }
            assert!(matches!(
                wal.append(RecordKind::Data, b"late", Durability::None),
                Err(Error::Poisoned { .. })
            ));
        }
        let durable = count_within(&expected, wal.durable_lsn());
        assert!(durable >= sync_acked);
        drop(wal);
        for survival in quiescent_survivals(&mut rng, 2) {
            let image = crash_image(&storage, survival, &mut rng);
            check_image(image, &expected, durable, &opts).unwrap_or_else(|e| {
                panic!(
                    "fail_{}_after({after}), {survival:?}: {e}",
                    if fail_syncs { "syncs" } else { "writes" }
                )
            });
            images += 1;
        }
        run += 1;
    }
    println!(
        "{images} crash images over {run} EIO runs, {failed_runs} of which hit the injected error"
    );
    assert!(
        failed_runs * 2 > run as usize,
        "most runs should hit the injected error"
    );
}

/// The oracle when the LSNs of failed appends are unknown: every recovered record is an acknowledged one at its
/// LSN or one of the `failed` (maybe-written) ones; no acknowledged record below the last recovered one is missing;
/// every acknowledged record ending at or below `durable_bound` is there; groups are whole.
fn check_image_with_failures(
    image: MemStorage,
    acked: &BTreeMap<u64, Rec>,
    failed: &[Rec],
    durable_bound: u64,
    opts: &WalOptions,
) -> Result<usize, String> {
    let (_wal, report, got) = recover(image, opts)?;
    let same = |a: &Rec, b: &Rec| a.kind == b.kind && a.cont == b.cont && a.payload == b.payload;
    for (i, g) in got.iter().enumerate() {
        let lsn = g.lsn.unwrap();
        let known = match acked.get(&lsn) {
            Some(a) => same(a, g),
            None => failed.iter().any(|f| same(f, g)),
        };
        if !known {
            return Err(format!(
                "record {i} at LSN {lsn} is not what was appended there"
            ));
        }
        if i > 0 && got[i - 1].lsn >= g.lsn {
            return Err(format!("LSNs not increasing at record {i}"));
        }
    }
    if got.last().is_some_and(|r| r.cont) {
        return Err("recovered a partial group".into());
    }
    let recovered_end = got.last().map_or(0, Rec::end_lsn);
    for (lsn, a) in acked {
        let required = a.end_lsn() <= durable_bound || *lsn < recovered_end;
        if required && !got.iter().any(|g| g.lsn == Some(*lsn)) {
            return Err(format!(
                "acknowledged record at LSN {lsn} is missing (durable below {durable_bound}, recovered to \
                 {recovered_end})"
            ));
        }
    }
    if report.records != got.len() as u64 {
        return Err(format!(
            "report says {} records, iterated {}",
            report.records,
            got.len()
        ));
    }
    Ok(got.len())
}

/// EIO while three threads append: every thread's first failure is the I/O error or `Poisoned`, none succeeds
/// after the log failed, and a crash image holds every record acknowledged durable.
#[test]
fn injected_eio_under_concurrent_appends_keeps_every_synced_record() {
    let budget = image_budget(10);
    let mut images = 0;
    let mut run = 0u64;
    let mut failed_runs = 0;
    while images < budget {
        let seed = base_seed() ^ (run << 20) ^ 0xE1E1;
        let _guard = seed_guard(format!(
            "concurrent EIO run {run} seed {seed:#x} (threads: not replayable)"
        ));
        let mut rng = SmallRng::seed_from_u64(seed);
        let opts = options(4096);
        let (storage, wal) = simulated_log(&opts);
        if rng.random_bool(0.5) {
            storage.fail_syncs_after(Some(rng.random_range(0..30)));
        } else {
            storage.fail_writes_after(Some(rng.random_range(0..80)));
        }
        let max_sync_end = AtomicU64::new(0);
        let failed_flag = AtomicBool::new(false);
        let results: Vec<(Vec<Rec>, Vec<Rec>, Option<bool>)> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..3u8)
                .map(|w| {
                    let (wal, max_sync_end, failed_flag) = (&wal, &max_sync_end, &failed_flag);
                    let seed = rng.random::<u64>();
                    s.spawn(move || {
                        let mut generator = Gen::new(seed, w, wal.max_group_bytes());
                        let mut acked = Vec::new();
                        for _ in 0..150 {
                            let group = generator.group();
                            let d = generator.durability();
                            let seen_failure = failed_flag.load(Ordering::Acquire);
                            match append(wal, &group, d) {
                                Ok(recs) => {
                                    assert!(
                                        !seen_failure,
                                        "writer {w}: an append that began after the log failed succeeded"
                                    );
                                    if d == Durability::Sync {
                                        max_sync_end.fetch_max(
                                            recs.last().unwrap().end_lsn(),
                                            Ordering::AcqRel,
                                        );
                                    }
                                    acked.extend(recs);
                                }
                                Err(e) => {
                                    failed_flag.store(true, Ordering::Release);
                                    let io = match e {
                                        Error::Io { .. } => true,
                                        Error::Poisoned { .. } => false,
                                        e => panic!("writer {w}: unexpected error {e}"),
                                    };
                                    assert!(
                                        wal.is_poisoned(),
                                        "writer {w}: failed without poisoning"
                                    );
                                    return (acked, group_records(&group, None), Some(io));
                                }
                            }
                        }
                        (acked, Vec::new(), None)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let errors: Vec<bool> = results.iter().filter_map(|r| r.2).collect();
        if !errors.is_empty() {
            failed_runs += 1;
            assert!(
                errors.iter().any(|&io| io),
                "some thread must see the I/O error itself"
            );
            assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
        }
        let durable_bound = wal.durable_lsn().max(max_sync_end.load(Ordering::Acquire));
        let acked: BTreeMap<u64, Rec> = results
            .iter()
            .flat_map(|r| r.0.iter().map(|rec| (rec.lsn.unwrap(), rec.clone())))
            .collect();
        let failed: Vec<Rec> = results.iter().flat_map(|r| r.1.iter().cloned()).collect();
        drop(wal);
        for survival in quiescent_survivals(&mut rng, 1) {
            let image = crash_image(&storage, survival, &mut rng);
            check_image_with_failures(image, &acked, &failed, durable_bound, &opts)
                .unwrap_or_else(|e| panic!("{survival:?}: {e}"));
            images += 1;
        }
        run += 1;
    }
    println!(
        "{images} crash images over {run} concurrent EIO runs, {failed_runs} of which hit the error"
    );
    assert!(
        failed_runs * 2 > run as usize,
        "most runs should hit the injected error"
    );
}

/// Outcome of one zeroing round: whether recovery discarded leftovers, or the oracle's complaint.
fn zeroing_round(seed: u64, restore_leftovers: bool) -> Result<(bool, bool), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let opts = options(4096);
    let (storage, wal) = simulated_log(&opts);
    // Equal spans: a new record lands exactly where an old one was, so a leftover after it would chain on.
    let len = rng.random_range(40..200);
    let mut old_gen = Gen::new(rng.random(), 0, wal.max_group_bytes());
    old_gen.fixed_len = Some(len);
    let mut old: Vec<Rec> = Vec::new();
    for _ in 0..rng.random_range(1..6) {
        old.extend(append(&wal, &old_gen.group(), Durability::Sync).unwrap());
    }
    let synced = old.len();
    // An unsynced tail, one write per record, so sectors of later records can survive a lost earlier one.
    for _ in 0..rng.random_range(4..12) {
        old.extend(append(&wal, &old_gen.group(), Durability::Os).unwrap());
    }
    let mut first = Arc::new(crash_image(&storage, Survival::Random(0.5), &mut rng));
    drop(wal);
    let mut interrupted = false;
    if !restore_leftovers && rng.random_bool(0.4) {
        // Recovery itself is cut short: its zeroing write or sync fails, then the power goes.
        if rng.random_bool(0.5) {
            first.fail_writes_after(Some(0));
        } else {
            first.fail_syncs_after(Some(0));
        }
        match Wal::open_with_storage(first.clone(), opts.clone()) {
            Ok(_) => {}
            Err(Error::Io { .. }) => interrupted = true,
            Err(e) => return Err(format!("recovery with failing I/O: {e}")),
        }
        first = Arc::new(crash_image(&first, quiescent_survival(&mut rng), &mut rng));
    }
    let before_open: Vec<_> = (0..4)
        .map(|i| first.segment_bytes(collection_store::wal::SegmentName::Live(i * 4096)))
        .collect();
    let (wal, report) = Wal::open_with_storage(first.clone(), opts.clone()).unwrap();
    let mut recovered = Vec::new();
    for r in wal.iter_from(wal.start_lsn()).unwrap() {
        let r = r.unwrap();
        recovered.push(r.payload().to_vec());
    }
    let k1 = recovered.len();
    if k1 < synced || recovered.iter().zip(&old).any(|(g, e)| *g != e.payload) {
        return Err(format!(
            "first recovery: {k1} records, {synced} synced, or bytes differ"
        ));
    }
    if restore_leftovers {
        // Undo recovery's zeroing, as if it had never happened (to show this test would notice).
        for (i, bytes) in before_open.into_iter().enumerate() {
            if let Some(bytes) = bytes {
                let from = usize::try_from(report.end_lsn)
                    .unwrap()
                    .saturating_sub(i * 4096)
                    .clamp(64, 4096);
                first.poke(
                    collection_store::wal::SegmentName::Live(i as u64 * 4096),
                    from as u64,
                    &bytes[from..],
                );
            }
        }
    }
    // New records, fewer than the old tail, then a second crash.
    let mut new_gen = Gen::new(rng.random(), 1, wal.max_group_bytes());
    new_gen.fixed_len = Some(len);
    let mut expected: Vec<Rec> = old[..k1].to_vec();
    let mut must = k1;
    for _ in 0..rng.random_range(1..4) {
        let d = if rng.random_bool(0.3) {
            Durability::Sync
        } else {
            Durability::Os
        };
        expected.extend(append(&wal, &new_gen.group(), d).unwrap());
        if d == Durability::Sync {
            must = expected.len();
        }
    }
    for survival in quiescent_survivals(&mut rng, 1) {
        let second = crash_image(&first, survival, &mut rng);
        check_image(second, &expected, must, &opts).map_err(|e| format!("{survival:?}: {e}"))?;
    }
    Ok((report.discarded_records > 0, interrupted))
}

/// Recovery zeroes what validates past the end of a torn tail: after new appends and a second crash, no record of
/// the old unacknowledged tail comes back. Sometimes recovery itself fails part-way (EIO on its zeroing) and the
/// power goes before it is retried.
#[test]
fn torn_tail_leftovers_never_resurrect_after_new_appends_and_a_second_crash() {
    let rounds = image_budget(10).div_ceil(3).max(50);
    let (mut discarded, mut interrupted) = (0, 0);
    for round in 0..rounds as u64 {
        let seed = base_seed() ^ (round << 20) ^ 0x2E80;
        let _guard = seed_guard(format!("zeroing round {round} seed {seed:#x}"));
        let (zeroed, cut_short) = zeroing_round(seed, false).unwrap();
        discarded += usize::from(zeroed);
        interrupted += usize::from(cut_short);
    }
    println!(
        "{} crash images over {rounds} rounds; {discarded} recoveries zeroed leftovers, {interrupted} recoveries \
         cut short by I/O errors",
        rounds * 4 + interrupted
    );
    assert!(interrupted > 0, "no recovery was interrupted");
    assert!(
        discarded * 5 > rounds,
        "too few rounds exercised leftover zeroing: {discarded}/{rounds}"
    );
}

/// The oracle above is not vacuous: if recovery's zeroing is undone, old records do come back and are caught.
#[test]
fn oracle_catches_resurrected_records_when_zeroing_is_undone() {
    let mut caught = 0;
    for round in 0..60u64 {
        let seed = base_seed() ^ (round << 20) ^ 0x2E80;
        let _guard = seed_guard(format!("zeroing self-check round {round} seed {seed:#x}"));
        if let Err(e) = zeroing_round(seed, true) {
            assert!(e.contains("recovered") || e.contains("differs"), "{e}");
            caught += 1;
        }
    }
    assert!(caught > 0, "undoing the zeroing was never detected");
}
