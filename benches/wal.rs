//! Write-ahead log benchmarks, each next to its floor measured in the same run:
//!
//! - (a) non-durable appends of 256 B records from one thread (`Durability::None`, in memory and on files):
//!   records/s, next to a raw 256 B memcpy (and memcpy + CRC32) into a ring;
//! - (b) durable single-thread appends (`Durability::Sync`) on files: p50/p99/p99.9 next to raw `pwrite` +
//!   `fdatasync` of 256 B into a zero-filled file, and the same two interleaved operation by operation;
//! - (c) group commit: 1, 2, 4 and 8 threads doing `Sync` appends for a fixed time: commits/s, fdatasyncs and disk
//!   cache flushes per commit;
//! - (d) recovery: `Wal::open` of a multi-segment log, page cache warm and cold: GB/s of log scanned.
//!
//! `cargo bench --bench wal`; `CSTORE_BENCH_QUICK=1 cargo bench --bench wal` for a smoke run (seconds).
//! Everything on disk lives in a temporary directory under `std::env::temp_dir()`.

mod common;

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use collection_store::wal::{Durability, RecordKind, Wal, WalOptions, WalStats};
use common::{
    Cfg, DiskFlushes, RECORD_BYTES, Spec, Summary, criterion_estimate_ns, criterion_test_mode,
    find, fmt_ns, measure, measure_op, payload, percentile, print_table, summarize,
    zero_filled_file,
};
use criterion::{Criterion, SamplingMode};

const GROUP: &str = "wal";
/// Bytes a 256 B record takes in the log (32 B header).
const SPAN_BYTES: f64 = 288.0;
/// Chunk of the sequential-write floor.
const SEQ_CHUNK_BYTES: u64 = 8 << 20;

/// This bench's own sizes, on top of the shared [`Cfg`].
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// How long each group-commit configuration runs.
    group_commit_time: Duration,
    /// Recovery: log size and segment size.
    recovery_log_bytes: u64,
    recovery_segment_bytes: u64,
    /// Recovery: opens with a cold page cache.
    cold_opens: usize,
}

impl Sizes {
    fn for_run(cfg: &Cfg) -> Self {
        if cfg.quick {
            Self {
                group_commit_time: Duration::from_millis(400),
                recovery_log_bytes: 20 << 20,
                recovery_segment_bytes: 4 << 20,
                cold_opens: 2,
            }
        } else {
            Self {
                group_commit_time: Duration::from_secs(3),
                recovery_log_bytes: 256 << 20,
                recovery_segment_bytes: 64 << 20,
                cold_opens: 5,
            }
        }
    }
}

/// Per-operation times of operations timed one by one, and their sum.
#[derive(Default)]
struct Timings {
    ns: Vec<f64>,
    total: Duration,
}

impl Timings {
    /// Runs `f`, recording how long it took.
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        let d = t.elapsed();
        self.total += d;
        self.ns.push(d.as_nanos() as f64);
        r
    }

    fn len(&self) -> usize {
        self.ns.len()
    }

    fn summarize(self, name: &str) -> Option<Summary> {
        let ops = self.ns.len() as u64;
        summarize(name, self.ns, 1, ops, self.total)
    }
}

// -------------------------------------------------------------------------------------------------------------
// The WAL
// -------------------------------------------------------------------------------------------------------------

fn stats_delta(a: &WalStats, b: &WalStats) -> WalStats {
    WalStats {
        appends: b.appends - a.appends,
        records: b.records - a.records,
        bytes_appended: b.bytes_appended - a.bytes_appended,
        sync_requests: b.sync_requests - a.sync_requests,
        syncs: b.syncs - a.syncs,
        writes: b.writes - a.writes,
        bytes_written: b.bytes_written - a.bytes_written,
        segments_prepared: b.segments_prepared - a.segments_prepared,
        segments_recycled: b.segments_recycled - a.segments_recycled,
    }
}

fn describe_stats(label: &str, s: &WalStats) {
    eprintln!(
        "  {label}: {} appends, {} pwrites ({:.1} KiB each), {} fdatasyncs, {} segments prepared ({} recycled)",
        s.appends,
        s.writes,
        s.bytes_written as f64 / s.writes.max(1) as f64 / 1024.0,
        s.syncs,
        s.segments_prepared,
        s.segments_recycled
    );
}

/// Per-second rate from a per-operation time in ns.
fn per_s(ns: f64) -> f64 {
    1e9 / ns
}

fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

/// The best per-operation figure for a throughput: criterion's estimate, else our mean.
fn op_ns(s: &Summary) -> f64 {
    s.criterion_ns.unwrap_or(s.mean_ns)
}

// (a) ---------------------------------------------------------------------------------------------------------

struct NonDurable {
    rows: Vec<Summary>,
}

/// A floor that writes one 288 B slot after another into an 8 MiB ring (the staging ring's size), starting over
/// at its end: `write(ring, offset)` fills the slot at `offset`.
fn ring_floor(
    c: &mut Criterion,
    cfg: &Cfg,
    id: &str,
    batch: u64,
    mut write: impl FnMut(&mut [u8], usize),
) -> Option<Summary> {
    let span = SPAN_BYTES as usize;
    let mut ring = vec![0u8; 8 << 20];
    let mut off = 0usize;
    let op = || {
        write(&mut ring, off);
        black_box(&ring[off]);
        off += span;
        if off + span > ring.len() {
            off = 0;
        }
    };
    let spec = Spec::new(GROUP, id, batch, None);
    measure_op(c, cfg, &spec, op)
}

/// `Durability::None` appends of `rec` to `wal`. Each of criterion's calls ends with a flush (timed: the appends
/// are handed to storage within the measured time); between calls the log is synced and truncated (untimed) so
/// that memory and disk use stay bounded.
fn append_none(
    c: &mut Criterion,
    cfg: &Cfg,
    wal: &Wal,
    id: &str,
    batch: u64,
    rec: &[u8; RECORD_BYTES],
) -> Option<Summary> {
    let spec = Spec::new(GROUP, id, batch, None);
    let before = wal.stats();
    let summary = measure(
        c,
        cfg,
        &spec,
        || {
            wal.append(RecordKind::Data, black_box(rec), Durability::None)
                .expect("append");
        },
        || wal.flush().expect("flush"),
        || {
            wal.sync().expect("sync");
            wal.truncate_before(wal.next_lsn()).expect("truncate");
        },
    );
    describe_stats(id, &stats_delta(&before, &wal.stats()));
    summary
}

fn bench_non_durable(c: &mut Criterion, cfg: &Cfg, dir: &Path) -> NonDurable {
    let mut rows = Vec::new();
    let batch = 1024;

    // Floors: memcpy of 256 B into the ring, and memcpy + CRC32 of the record.
    let rec = payload(1);
    rows.extend(ring_floor(
        c,
        cfg,
        "floor_memcpy_256",
        batch,
        |ring, off| {
            ring[off..off + RECORD_BYTES].copy_from_slice(black_box(&rec));
        },
    ));
    let rec = payload(2);
    rows.extend(ring_floor(
        c,
        cfg,
        "floor_memcpy_crc_256",
        batch,
        |ring, off| {
            let crc = crc32fast::hash(black_box(&rec));
            ring[off..off + 4].copy_from_slice(&crc.to_le_bytes());
            ring[off + 32..off + 32 + RECORD_BYTES].copy_from_slice(&rec);
        },
    ));

    // The log, in memory and on files.
    let rec = payload(3);
    let wal = Wal::open_in_memory(WalOptions::default()).expect("open in memory");
    rows.extend(append_none(
        c,
        cfg,
        &wal,
        "append_none_mem_256",
        batch,
        &rec,
    ));
    drop(wal);
    let (wal, _) = Wal::open(dir.join("none"), WalOptions::default()).expect("open");
    rows.extend(append_none(
        c,
        cfg,
        &wal,
        "append_none_file_256",
        batch,
        &rec,
    ));
    drop(wal);

    // Floor for the file-backed log's sustained rate: sequential 8 MiB pwrites (the staging ring's size) into a
    // zero-filled file, with an fdatasync after every 64 MiB (a segment), as the log does when it rolls.
    {
        let seg = cfg.file_bytes;
        let file = zero_filled_file(&dir.join("seq.dat"), seg).expect("file");
        let chunk = vec![0x5au8; SEQ_CHUNK_BYTES as usize];
        let mut off = 0u64;
        let op = || {
            file.write_all_at(&chunk, off).expect("pwrite");
            off += SEQ_CHUNK_BYTES;
            if off >= seg {
                file.sync_data().expect("fdatasync");
                off = 0;
            }
        };
        let spec = Spec::new(GROUP, "floor_seq_pwrite_8m", 1, None);
        rows.extend(measure_op(c, cfg, &spec, op));
    }
    NonDurable { rows }
}

// (b) ---------------------------------------------------------------------------------------------------------

struct DurableSingle {
    rows: Vec<Summary>,
    interleaved: Option<(Summary, Summary)>,
}

fn bench_durable_single(
    c: &mut Criterion,
    cfg: &Cfg,
    dir: &Path,
    disk: Option<&DiskFlushes>,
) -> DurableSingle {
    let mut rows = Vec::new();
    let floor = zero_filled_file(&dir.join("floor.dat"), cfg.file_bytes).expect("floor file");
    let (wal, _) = Wal::open(dir.join("sync"), WalOptions::default()).expect("open");
    let mut off = 0u64;
    let mut i = 0u64;
    let mut floor_op = || {
        i += 1;
        floor.write_all_at(&payload(i), off).expect("pwrite");
        floor.sync_data().expect("fdatasync");
        off = (off + RECORD_BYTES as u64) % cfg.file_bytes;
    };
    let mut j = 0u64;
    let mut wal_op = || {
        j += 1;
        wal.append(RecordKind::Data, &payload(j), Durability::Sync)
            .expect("append");
    };

    let spec = Spec::new(GROUP, "floor_pwrite_fdatasync_256", 1, disk);
    rows.extend(measure_op(c, cfg, &spec, &mut floor_op));
    let before = wal.stats();
    let spec = Spec::new(GROUP, "append_sync_256", 1, disk);
    rows.extend(measure_op(c, cfg, &spec, &mut wal_op));
    describe_stats("append_sync_256", &stats_delta(&before, &wal.stats()));

    // The same two, alternating one operation each, so both see the same noise.
    let (mut a, mut b) = (Timings::default(), Timings::default());
    let deadline = Instant::now() + cfg.measurement;
    while Instant::now() < deadline && a.len() < 200_000 {
        a.time(&mut floor_op);
        b.time(&mut wal_op);
    }
    let interleaved = a
        .summarize("interleaved/floor_pwrite_fdatasync_256")
        .zip(b.summarize("interleaved/append_sync_256"));
    DurableSingle { rows, interleaved }
}

// (c) ---------------------------------------------------------------------------------------------------------

struct GroupRow {
    threads: usize,
    commits: u64,
    elapsed: Duration,
    stats: WalStats,
    disk_flushes: Option<u64>,
    latency: Option<Summary>,
}

fn bench_group_commit(
    cfg: &Cfg,
    sizes: &Sizes,
    dir: &Path,
    disk: Option<&DiskFlushes>,
) -> Vec<GroupRow> {
    let mut out = Vec::new();
    for threads in [1usize, 2, 4, 8] {
        let (wal, _) =
            Wal::open(dir.join(format!("group{threads}")), WalOptions::default()).expect("open");
        for k in 0..cfg.prewarm_ops {
            wal.append(RecordKind::Data, &payload(k), Durability::Sync)
                .expect("append");
        }
        let stop = AtomicBool::new(false);
        let before = wal.stats();
        let flushes_before = disk.and_then(DiskFlushes::read);
        let start = Instant::now();
        let latencies: Vec<Vec<f64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (wal, stop) = (&wal, &stop);
                    s.spawn(move || {
                        let rec = payload(t as u64);
                        let mut lat = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let t0 = Instant::now();
                            wal.append(RecordKind::Data, &rec, Durability::Sync)
                                .expect("append");
                            lat.push(t0.elapsed().as_nanos() as f64);
                        }
                        lat
                    })
                })
                .collect();
            std::thread::sleep(sizes.group_commit_time);
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let elapsed = start.elapsed();
        let flushes_after = disk.and_then(DiskFlushes::read);
        let stats = stats_delta(&before, &wal.stats());
        let all: Vec<f64> = latencies.into_iter().flatten().collect();
        let commits = all.len() as u64;
        let total = Duration::from_nanos(all.iter().sum::<f64>() as u64);
        out.push(GroupRow {
            threads,
            commits,
            elapsed,
            stats,
            disk_flushes: flushes_before.zip(flushes_after).map(|(a, b)| b - a),
            latency: summarize(
                &format!("group_commit/{threads}_threads"),
                all,
                1,
                commits,
                total,
            ),
        });
    }
    out
}

// (d) ---------------------------------------------------------------------------------------------------------

struct Recovery {
    build_records: u64,
    build_time: Duration,
    segment_create: Duration,
    log_bytes: u64,
    segments: usize,
    segment_bytes: u64,
    records: u64,
    warm: Option<Summary>,
    warm_internal_ns: f64,
    cold: Option<Summary>,
}

/// Drops the page cache of every segment file (they are clean: the log was synced).
fn evict_segments(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "seg")
            && let Ok(f) = File::open(&path)
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain advisory call on an open descriptor.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if rc != 0 {
                eprintln!("posix_fadvise({}) failed: {rc}", path.display());
            }
        }
    }
}

fn bench_recovery(c: &mut Criterion, cfg: &Cfg, sizes: &Sizes, dir: &Path) -> Recovery {
    let rdir = dir.join("recovery");
    let opts = WalOptions {
        segment_size_bytes: sizes.recovery_segment_bytes,
        ..WalOptions::default()
    };
    // Floor for growing a log: creating one zero-filled segment file (zeros written, fdatasync), as the log's
    // preparer thread does for every segment it cannot recycle.
    let mut create = Duration::ZERO;
    let creates = if cfg.quick { 1 } else { 3 };
    for k in 0..creates {
        let path = dir.join(format!("create{k}.dat"));
        let t = Instant::now();
        drop(zero_filled_file(&path, sizes.recovery_segment_bytes).expect("create"));
        create += t.elapsed();
        std::fs::remove_file(&path).expect("remove");
    }
    let segment_create = create / creates;
    // Build the log: 256 B records, not durable one by one, synced at the end.
    let started = Instant::now();
    let mut build_records = 0u64;
    {
        let (wal, _) = Wal::open(&rdir, opts.clone()).expect("open");
        while wal.next_lsn() < sizes.recovery_log_bytes {
            wal.append(RecordKind::Data, &payload(build_records), Durability::None)
                .expect("append");
            build_records += 1;
        }
        wal.sync().expect("sync");
    }
    let build_time = started.elapsed();
    let (wal, report) = Wal::open(&rdir, opts.clone()).expect("reopen");
    drop(wal);
    assert_eq!(report.records, build_records, "recovery lost records");

    // Warm page cache: criterion, timing Wal::open itself (not the drop).
    let mut opens = Timings::default();
    let mut internal = Vec::new();
    {
        let mut g = c.benchmark_group(GROUP);
        g.warm_up_time(cfg.warm_up)
            .measurement_time(cfg.measurement)
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat);
        g.bench_function("recovery_open_warm", |b| {
            b.iter_custom(|iters| {
                let before = opens.total;
                for _ in 0..iters {
                    let (wal, rep) = opens.time(|| Wal::open(&rdir, opts.clone()).expect("open"));
                    drop(wal);
                    internal.push(rep.duration.as_nanos() as f64);
                }
                opens.total - before
            });
        });
        g.finish();
    }
    let mut warm = opens.summarize("wal/recovery_open_warm");
    if let Some(w) = &mut warm {
        w.criterion_ns = criterion_estimate_ns(GROUP, "recovery_open_warm");
    }
    internal.sort_by(f64::total_cmp);
    let warm_internal_ns = percentile(&internal, 0.5);

    // Cold: the segments' pages dropped from the page cache before each open.
    let mut cold_opens = Timings::default();
    for _ in 0..sizes.cold_opens {
        evict_segments(&rdir);
        let (wal, _) = cold_opens.time(|| Wal::open(&rdir, opts.clone()).expect("open"));
        drop(wal);
    }
    let cold = cold_opens.summarize("wal/recovery_open_cold");
    Recovery {
        build_records,
        build_time,
        segment_create,
        log_bytes: report.end_lsn - report.start_lsn,
        segments: report.segments,
        segment_bytes: sizes.recovery_segment_bytes,
        records: report.records,
        warm,
        warm_internal_ns,
        cold,
    }
}

// -------------------------------------------------------------------------------------------------------------
// Report
// -------------------------------------------------------------------------------------------------------------

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

fn main() {
    let cfg = Cfg::from_env();
    let sizes = Sizes::for_run(&cfg);
    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let disk = DiskFlushes::for_path(dir.path());
    eprintln!(
        "wal bench: temp dir {} (device {}){}",
        dir.path().display(),
        disk.as_ref().map_or("unknown", |d| d.name.as_str()),
        if cfg.quick { ", QUICK mode" } else { "" }
    );
    let test_mode = criterion_test_mode();

    // CSTORE_BENCH_SECTIONS=abcd (the default) picks the sections to run.
    let sections = std::env::var("CSTORE_BENCH_SECTIONS").unwrap_or_else(|_| "abcd".into());
    let want = |x: char| sections.contains(x);
    let nd = if want('a') {
        bench_non_durable(&mut c, &cfg, dir.path())
    } else {
        NonDurable { rows: Vec::new() }
    };
    let ds = if want('b') {
        bench_durable_single(&mut c, &cfg, dir.path(), disk.as_ref())
    } else {
        DurableSingle {
            rows: Vec::new(),
            interleaved: None,
        }
    };
    let groups = if want('c') && !test_mode {
        bench_group_commit(&cfg, &sizes, dir.path(), disk.as_ref())
    } else {
        Vec::new()
    };
    let rec = want('d').then(|| bench_recovery(&mut c, &cfg, &sizes, dir.path()));
    c.final_summary();
    if test_mode {
        return;
    }

    if !nd.rows.is_empty() {
        print_table("(a) non-durable append, one thread, 256 B", &nd.rows);
    }
    let mut b_rows = ds.rows.clone();
    if let Some((x, y)) = &ds.interleaved {
        b_rows.push(x.clone());
        b_rows.push(y.clone());
    }
    if !b_rows.is_empty() {
        print_table("(b) durable append, one thread, 256 B", &b_rows);
    }
    if !groups.is_empty() {
        report_group_commit(&groups);
    }
    if let Some(rec) = &rec {
        report_recovery(rec);
    }
    eprintln!("\n== summary (all figures from this run) ==");
    if cfg.quick {
        eprintln!("QUICK mode: smoke-test sizes and times; the verdicts below are not meaningful");
    }
    summarize_non_durable(&nd);
    summarize_durable(&ds);
    summarize_group_commit(&groups);
    if let Some(rec) = &rec {
        summarize_recovery(rec);
    }
}

fn commits_per_s(g: &GroupRow) -> f64 {
    g.commits as f64 / g.elapsed.as_secs_f64()
}

fn report_group_commit(groups: &[GroupRow]) {
    eprintln!("\n== (c) group commit: threads doing Sync appends of 256 B ==");
    eprintln!(
        "{:>7} {:>10} {:>12} {:>13} {:>14} {:>13} {:>10} {:>10} {:>10}",
        "threads",
        "commits",
        "commits/s",
        "syncs/commit",
        "commits/sync",
        "flushes/cmt",
        "p50",
        "p99",
        "p99.9"
    );
    for g in groups {
        let appends = g.stats.appends.max(1) as f64;
        let (p50, p99, p999) = g
            .latency
            .as_ref()
            .map_or((f64::NAN, f64::NAN, f64::NAN), |l| {
                (l.p50_ns, l.p99_ns, l.p999_ns)
            });
        eprintln!(
            "{:>7} {:>10} {:>12} {:>13.3} {:>14.2} {:>13} {:>10} {:>10} {:>10}",
            g.threads,
            g.commits,
            fmt_rate(commits_per_s(g)),
            g.stats.syncs as f64 / appends,
            appends / g.stats.syncs.max(1) as f64,
            g.disk_flushes
                .map_or_else(|| "-".into(), |f| format!("{:.3}", f as f64 / appends)),
            fmt_ns(p50),
            fmt_ns(p99),
            fmt_ns(p999)
        );
    }
}

fn gb_per_s(ns: f64, bytes: u64) -> f64 {
    bytes as f64 / ns
}

fn report_recovery(rec: &Recovery) {
    eprintln!("\n== (d) recovery ==");
    eprintln!(
        "log: {} records of 256 B, {:.1} MiB of log in {} segments of {} MiB (built in {:.2} s: {})",
        rec.records,
        rec.log_bytes as f64 / (1 << 20) as f64,
        rec.segments,
        rec.segment_bytes >> 20,
        rec.build_time.as_secs_f64(),
        fmt_rate(rec.build_records as f64 / rec.build_time.as_secs_f64())
    );
    eprintln!(
        "building is a fresh log growing with Durability::None (every segment created, none recycled; final sync \
         included). Floor: creating one zero-filled {} MiB file takes {} ({:.2} GB/s)",
        rec.segment_bytes >> 20,
        fmt_ns(rec.segment_create.as_nanos() as f64),
        rec.segment_bytes as f64 / rec.segment_create.as_nanos() as f64
    );
    let mapped = rec.segments as u64 * rec.segment_bytes;
    for s in rec.warm.iter().chain(rec.cold.iter()) {
        eprintln!(
            "{:<26} open p50 {:>10} (mean {:>10}, max {:>10}, n={}): {:.2} GB/s of log, {:.2} GB/s of segment files",
            s.name,
            fmt_ns(s.p50_ns),
            fmt_ns(s.mean_ns),
            fmt_ns(s.max_ns),
            s.samples,
            gb_per_s(s.p50_ns, rec.log_bytes),
            gb_per_s(s.p50_ns, mapped)
        );
    }
    eprintln!(
        "RecoveryReport::duration (warm, p50): {}",
        fmt_ns(rec.warm_internal_ns)
    );
}

fn summarize_non_durable(nd: &NonDurable) {
    let memcpy = find(&nd.rows, "floor_memcpy_256");
    let memcpy_crc = find(&nd.rows, "floor_memcpy_crc_256");
    let seq = find(&nd.rows, "floor_seq_pwrite_8m");
    if let Some(m) = &memcpy {
        eprintln!(
            "(a) floors: memcpy 256 B {}, memcpy+crc32 {}, sequential pwrite+fdatasync {}",
            fmt_rate(per_s(op_ns(m))),
            memcpy_crc
                .as_ref()
                .map_or_else(|| "-".into(), |m| fmt_rate(per_s(op_ns(m)))),
            seq.as_ref().map_or_else(
                || "-".into(),
                |q| format!(
                    "{:.2} GB/s = {} records of 288 B",
                    SEQ_CHUNK_BYTES as f64 / q.mean_ns,
                    fmt_rate(SEQ_CHUNK_BYTES as f64 / SPAN_BYTES * per_s(q.mean_ns))
                )
            )
        );
    }
    for id in ["append_none_mem_256", "append_none_file_256"] {
        if let Some(s) = find(&nd.rows, id) {
            // The verdict uses the sustained rate (all appends over all timed calls, flushes and segment rolls
            // included); criterion's slope leaves out costs that do not grow with a call's length.
            let sustained = per_s(s.mean_ns);
            eprintln!(
                "(a) {id:<22} sustained {:>11}, criterion slope {:>11}; target >= 5 M/s: {}; {:.1}x the memcpy floor's time",
                fmt_rate(sustained),
                fmt_rate(per_s(op_ns(&s))),
                verdict(sustained >= 5e6),
                memcpy.as_ref().map_or(f64::NAN, |m| s.mean_ns / op_ns(m)),
            );
        }
    }
}

fn summarize_durable(ds: &DurableSingle) {
    if let (Some(f), Some(w)) = (
        find(&ds.rows, "floor_pwrite_fdatasync_256"),
        find(&ds.rows, "append_sync_256"),
    ) {
        print_durable_ratio("durable", &f, &w, "");
    }
    if let Some((f, w)) = &ds.interleaved {
        print_durable_ratio("interleaved", f, w, &format!(", n={}", w.samples));
    }
}

/// The durable append's percentiles over the floor's, and the verdict on p50; `extra` goes after p99.9.
fn print_durable_ratio(what: &str, floor: &Summary, wal: &Summary, extra: &str) {
    let r = wal.p50_ns / floor.p50_ns;
    eprintln!(
        "(b) {what} p50: wal {} / floor {} = {:.3} (p99 {:.3}, p99.9 {:.3}{extra}); target <= 1.15: {}",
        fmt_ns(wal.p50_ns),
        fmt_ns(floor.p50_ns),
        r,
        wal.p99_ns / floor.p99_ns,
        wal.p999_ns / floor.p999_ns,
        verdict(r <= 1.15)
    );
}

fn summarize_group_commit(groups: &[GroupRow]) {
    let Some(one) = groups.first() else {
        return;
    };
    let base = commits_per_s(one);
    for g in groups {
        eprintln!(
            "(c) {} threads: {} ({:.2}x 1 thread), {:.3} fdatasyncs per commit (ideal with every other thread waiting: {:.3})",
            g.threads,
            fmt_rate(commits_per_s(g)),
            commits_per_s(g) / base,
            g.stats.syncs as f64 / g.stats.appends.max(1) as f64,
            1.0 / (g.threads.max(2) - 1) as f64
        );
    }
}

fn summarize_recovery(rec: &Recovery) {
    eprintln!(
        "(a) fresh log, non-durable (from building (d)): {} with every {} MiB segment created (one takes {} to zero-fill)",
        fmt_rate(rec.build_records as f64 / rec.build_time.as_secs_f64()),
        rec.segment_bytes >> 20,
        fmt_ns(rec.segment_create.as_nanos() as f64)
    );
    for s in rec.warm.iter().chain(rec.cold.iter()) {
        let g = gb_per_s(s.p50_ns, rec.log_bytes);
        eprintln!(
            "(d) {:<24} {:.2} GB/s of log ({} segments, {:.0} MiB); target >= 1 GB/s: {}",
            s.name,
            g,
            rec.segments,
            rec.log_bytes as f64 / (1 << 20) as f64,
            verdict(g >= 1.0)
        );
    }
}
