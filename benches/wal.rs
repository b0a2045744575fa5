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
use std::time::{Duration, Instant};

use collection_store::wal::{Durability, RecordKind, Wal, WalOptions, WalStats};
use common::{
    Cfg, DiskFlushes, FloorVs, GroupRow, RECORD_BYTES, RatioLine, Spec, Summary, Timings,
    criterion_estimate_ns, criterion_test_mode, durable_vs_floor, find, fmt_ns, fmt_rate,
    group_commit, measure, measure_op, op_ns, payload, per_s, percentile, print_table,
    report_group_commit, stats_delta, verdict, zero_filled_file,
};
use criterion::{Criterion, SamplingMode};

const GROUP: &str = "wal";
/// Bytes a 256 B record takes in the log (32 B header).
const SPAN_BYTES: f64 = 288.0;
/// Chunk of the sequential-write floor.
const SEQ_CHUNK_BYTES: u64 = 8 << 20;
/// Criterion id of the durable append measured next to its floor.
const DURABLE_ID: &str = "append_sync_256";

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

// -------------------------------------------------------------------------------------------------------------
// The WAL
// -------------------------------------------------------------------------------------------------------------

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

fn bench_durable_single(
    c: &mut Criterion,
    cfg: &Cfg,
    dir: &Path,
    disk: Option<&DiskFlushes>,
) -> FloorVs {
    let (wal, _) = Wal::open(dir.join("sync"), WalOptions::default()).expect("open");
    let mut j = 0u64;
    let wal_op = || {
        j += 1;
        wal.append(RecordKind::Data, &payload(j), Durability::Sync)
            .expect("append");
    };
    let spec = Spec::new(GROUP, DURABLE_ID, 1, disk);
    let ds = durable_vs_floor(c, cfg, dir, &spec, || wal.stats(), wal_op);
    describe_stats(DURABLE_ID, &ds.stats);
    ds
}

// (c) ---------------------------------------------------------------------------------------------------------

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
        let wal = &wal;
        out.push(group_commit(
            threads,
            sizes.group_commit_time,
            disk,
            || wal.stats(),
            |t| {
                let rec = payload(t as u64);
                move |lat: &mut Timings| {
                    lat.time(|| {
                        wal.append(RecordKind::Data, &rec, Durability::Sync)
                            .expect("append")
                    });
                }
            },
        ));
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
        FloorVs {
            rows: Vec::new(),
            interleaved: None,
            stats: WalStats::default(),
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
    let b_rows = ds.table_rows();
    if !b_rows.is_empty() {
        print_table("(b) durable append, one thread, 256 B", &b_rows);
    }
    if !groups.is_empty() {
        report_group_commit(
            "(c) group commit: threads doing Sync appends of 256 B",
            [10, 12, 13, 14, 13],
            &groups,
        );
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

fn summarize_durable(ds: &FloorVs) {
    let line = RatioLine {
        prefix: "(b)",
        subject: "wal",
        target: 1.15,
    };
    line.print_all(&ds.rows, ds.interleaved.as_ref(), DURABLE_ID, "durable");
}

fn summarize_group_commit(groups: &[GroupRow]) {
    let Some(one) = groups.first() else {
        return;
    };
    let base = one.commits_per_s();
    for g in groups {
        eprintln!(
            "(c) {} threads: {} ({:.2}x 1 thread), {:.3} fdatasyncs per commit (ideal with every other thread waiting: {:.3})",
            g.threads,
            fmt_rate(g.commits_per_s()),
            g.commits_per_s() / base,
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
