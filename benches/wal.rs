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

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use collection_store::wal::{Durability, RecordKind, Wal, WalOptions, WalStats};
use criterion::{Criterion, SamplingMode};

const RECORD_BYTES: usize = 256;
const GROUP: &str = "wal";
/// Bytes a 256 B record takes in the log (32 B header).
const SPAN_BYTES: f64 = 288.0;
/// Chunk of the sequential-write floor.
const SEQ_CHUNK_BYTES: u64 = 8 << 20;

// -------------------------------------------------------------------------------------------------------------
// Shared harness (the same in benches/write_path.rs, apart from `Cfg`)
// -------------------------------------------------------------------------------------------------------------

/// Run settings; `CSTORE_BENCH_QUICK=1` shrinks everything to a smoke test.
#[derive(Clone, Copy, Debug)]
struct Cfg {
    quick: bool,
    warm_up: Duration,
    measurement: Duration,
    /// Operations run before criterion starts (page cache, allocation, first faults).
    prewarm_ops: u64,
    /// Size of the zero-filled floor files.
    file_bytes: u64,
    /// How long each group-commit configuration runs.
    group_commit_time: Duration,
    /// Recovery: log size and segment size.
    recovery_log_bytes: u64,
    recovery_segment_bytes: u64,
    /// Recovery: opens with a cold page cache.
    cold_opens: usize,
}

impl Cfg {
    fn from_env() -> Self {
        let quick = std::env::var("CSTORE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
            || criterion_test_mode();
        if quick {
            Self {
                quick,
                warm_up: Duration::from_millis(100),
                measurement: Duration::from_millis(400),
                prewarm_ops: 20,
                file_bytes: 8 << 20,
                group_commit_time: Duration::from_millis(400),
                recovery_log_bytes: 20 << 20,
                recovery_segment_bytes: 4 << 20,
                cold_opens: 2,
            }
        } else {
            Self {
                quick,
                warm_up: Duration::from_millis(500),
                measurement: Duration::from_secs(4),
                prewarm_ops: 200,
                file_bytes: 64 << 20,
                group_commit_time: Duration::from_secs(3),
                recovery_log_bytes: 256 << 20,
                recovery_segment_bytes: 64 << 20,
                cold_opens: 5,
            }
        }
    }
}

/// Whether criterion will only test or list the benchmarks (`cargo test --benches`, `-- --test`, `-- --list`):
/// then the smoke-test sizes are used.
fn criterion_test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    !has("--bench") || has("--test") || has("--list")
}

/// Latency figures of one benchmark, in nanoseconds per operation.
#[derive(Clone, Debug)]
struct Summary {
    name: String,
    /// Samples behind the percentiles (each one operation, or one batch divided by its size).
    samples: usize,
    batch: u64,
    ops: u64,
    mean_ns: f64,
    p50_ns: f64,
    p99_ns: f64,
    p999_ns: f64,
    max_ns: f64,
    criterion_ns: Option<f64>,
    flushes_per_op: Option<f64>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summarize(
    name: &str,
    mut samples: Vec<f64>,
    batch: u64,
    ops: u64,
    total: Duration,
) -> Option<Summary> {
    if samples.is_empty() || ops == 0 {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    Some(Summary {
        name: name.to_owned(),
        samples: samples.len(),
        batch,
        ops,
        mean_ns: total.as_nanos() as f64 / ops as f64,
        p50_ns: percentile(&samples, 0.50),
        p99_ns: percentile(&samples, 0.99),
        p999_ns: percentile(&samples, 0.999),
        max_ns: samples[samples.len() - 1],
        criterion_ns: None,
        flushes_per_op: None,
    })
}

/// What to benchmark: criterion group and id, operations per timed sample, the device whose flushes to count.
struct Spec<'a> {
    group: &'a str,
    id: &'a str,
    batch: u64,
    disk: Option<&'a DiskFlushes>,
}

/// Benchmarks `op` (one operation per call) under criterion with `iter_custom`, timing each batch of
/// `spec.batch` operations itself. `finish` ends each of criterion's calls inside the timed region (e.g. a flush
/// that hands the call's appends over); `between` runs after it, untimed (housekeeping).
fn measure(
    c: &mut Criterion,
    cfg: &Cfg,
    spec: &Spec<'_>,
    mut op: impl FnMut(),
    mut finish: impl FnMut(),
    mut between: impl FnMut(),
) -> Option<Summary> {
    let batch = spec.batch;
    for _ in 0..cfg.prewarm_ops * batch {
        op();
    }
    finish();
    between();
    let mut samples: Vec<f64> = Vec::new();
    let mut ops = 0u64;
    let mut total = Duration::ZERO;
    let flushes_before = spec.disk.and_then(DiskFlushes::read);
    {
        let mut g = c.benchmark_group(spec.group);
        g.warm_up_time(cfg.warm_up)
            .measurement_time(cfg.measurement)
            .sample_size(if batch == 1 { 20 } else { 50 });
        if batch == 1 {
            // Slow operations: the same iteration count per sample keeps the run near the measurement time.
            g.sampling_mode(SamplingMode::Flat);
        }
        g.bench_function(spec.id, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let k = left.min(batch);
                    let t = Instant::now();
                    for _ in 0..k {
                        op();
                    }
                    samples.push(t.elapsed().as_nanos() as f64 / k as f64);
                    left -= k;
                }
                finish();
                let elapsed = start.elapsed();
                ops += iters;
                total += elapsed;
                between();
                elapsed
            });
        });
        g.finish();
    }
    let flushes_after = spec.disk.and_then(DiskFlushes::read);
    let mut s = summarize(
        &format!("{}/{}", spec.group, spec.id),
        samples,
        batch,
        ops,
        total,
    )?;
    s.criterion_ns = criterion_estimate_ns(spec.group, spec.id);
    if let (Some(a), Some(b)) = (flushes_before, flushes_after) {
        s.flushes_per_op = Some((b - a) as f64 / ops as f64);
    }
    Some(s)
}

/// Criterion's own estimate (slope if it has one, else mean) in ns, from its `estimates.json`.
fn criterion_estimate_ns(group: &str, id: &str) -> Option<f64> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        roots.push(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        roots.push(PathBuf::from(target).join("criterion"));
    }
    roots.push(PathBuf::from("target/criterion"));
    let text = roots.iter().find_map(|r| {
        std::fs::read_to_string(r.join(group).join(id).join("new/estimates.json")).ok()
    })?;
    let point = |key: &str| -> Option<f64> {
        let at = text.find(&format!("\"{key}\":{{"))?;
        let rest = &text[at..];
        let p = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
        let num: String = rest[p..]
            .chars()
            .take_while(|ch| ch.is_ascii_digit() || matches!(ch, '.' | 'e' | 'E' | '-' | '+'))
            .collect();
        num.parse().ok()
    };
    point("slope").or_else(|| point("mean"))
}

/// Disk cache flush requests completed by the block device holding a path, from `/proc/diskstats`.
#[derive(Clone, Debug)]
struct DiskFlushes {
    major: u64,
    minor: u64,
    name: String,
}

impl DiskFlushes {
    fn for_path(path: &Path) -> Option<Self> {
        let dev = std::fs::metadata(path).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let mut d = Self {
            major,
            minor,
            name: String::new(),
        };
        d.name = d.line()?.2;
        Some(d)
    }

    fn line(&self) -> Option<(u64, u64, String, u64)> {
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
            // Field 16 after the name (kernel >= 5.5): flush requests completed.
            let flushes = f.get(2 + 16)?.parse().ok()?;
            (maj == self.major && min == self.minor).then(|| (maj, min, f[2].to_owned(), flushes))
        })
    }

    fn read(&self) -> Option<u64> {
        self.line().map(|l| l.3)
    }
}

/// A file of `len` zero bytes, written and synced (so its blocks are allocated and initialized).
fn zero_filled_file(path: &Path, len: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn print_table(title: &str, rows: &[Summary]) {
    eprintln!("\n== {title} ==");
    eprintln!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>9} {:>10} {:>8}",
        "benchmark",
        "p50",
        "p99",
        "p99.9",
        "max",
        "mean",
        "criterion",
        "ops",
        "samples",
        "flush/op"
    );
    for s in rows {
        let flush = s
            .flushes_per_op
            .map_or_else(|| "-".to_owned(), |f| format!("{f:.2}"));
        let samples = if s.batch > 1 {
            format!("{}x{}", s.samples, s.batch)
        } else {
            s.samples.to_string()
        };
        eprintln!(
            "{:<36} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>9} {:>10} {:>8}",
            s.name,
            fmt_ns(s.p50_ns),
            fmt_ns(s.p99_ns),
            fmt_ns(s.p999_ns),
            fmt_ns(s.max_ns),
            fmt_ns(s.mean_ns),
            s.criterion_ns.map_or_else(|| "-".to_owned(), fmt_ns),
            s.ops,
            samples,
            flush
        );
    }
}

// -------------------------------------------------------------------------------------------------------------
// The WAL
// -------------------------------------------------------------------------------------------------------------

fn payload(i: u64) -> [u8; RECORD_BYTES] {
    let mut r = [0u8; RECORD_BYTES];
    for (j, b) in r.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8) | 1;
    }
    r
}

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

fn bench_non_durable(c: &mut Criterion, cfg: &Cfg, dir: &Path) -> NonDurable {
    let mut rows = Vec::new();
    let span = SPAN_BYTES as usize;
    let batch = 1024;

    // Floors: memcpy of 256 B into an 8 MiB ring (the staging ring's size), and memcpy + CRC32 of the record.
    {
        let mut ring = vec![0u8; 8 << 20];
        let rec = payload(1);
        let mut off = 0usize;
        let op = || {
            ring[off..off + RECORD_BYTES].copy_from_slice(black_box(&rec));
            black_box(&ring[off]);
            off += span;
            if off + span > ring.len() {
                off = 0;
            }
        };
        let spec = Spec {
            group: GROUP,
            id: "floor_memcpy_256",
            batch,
            disk: None,
        };
        rows.extend(measure(c, cfg, &spec, op, || {}, || {}));
    }
    {
        let mut ring = vec![0u8; 8 << 20];
        let rec = payload(2);
        let mut off = 0usize;
        let op = || {
            let crc = crc32fast::hash(black_box(&rec));
            ring[off..off + 4].copy_from_slice(&crc.to_le_bytes());
            ring[off + 32..off + 32 + RECORD_BYTES].copy_from_slice(&rec);
            black_box(&ring[off]);
            off += span;
            if off + span > ring.len() {
                off = 0;
            }
        };
        let spec = Spec {
            group: GROUP,
            id: "floor_memcpy_crc_256",
            batch,
            disk: None,
        };
        rows.extend(measure(c, cfg, &spec, op, || {}, || {}));
    }

    // The log, in memory and on files. Each of criterion's calls ends with a flush (timed: the appends are handed
    // to storage within the measured time); between calls the log is synced and truncated (untimed) so that
    // memory and disk use stay bounded.
    let rec = payload(3);
    {
        let wal = Wal::open_in_memory(WalOptions::default()).expect("open in memory");
        let spec = Spec {
            group: GROUP,
            id: "append_none_mem_256",
            batch,
            disk: None,
        };
        let before = wal.stats();
        rows.extend(measure(
            c,
            cfg,
            &spec,
            || {
                wal.append(RecordKind::Data, black_box(&rec), Durability::None)
                    .expect("append");
            },
            || wal.flush().expect("flush"),
            || {
                wal.sync().expect("sync");
                wal.truncate_before(wal.next_lsn()).expect("truncate");
            },
        ));
        describe_stats("append_none_mem_256", &stats_delta(&before, &wal.stats()));
    }
    {
        let (wal, _) = Wal::open(dir.join("none"), WalOptions::default()).expect("open");
        let spec = Spec {
            group: GROUP,
            id: "append_none_file_256",
            batch,
            disk: None,
        };
        let before = wal.stats();
        rows.extend(measure(
            c,
            cfg,
            &spec,
            || {
                wal.append(RecordKind::Data, black_box(&rec), Durability::None)
                    .expect("append");
            },
            || wal.flush().expect("flush"),
            || {
                wal.sync().expect("sync");
                wal.truncate_before(wal.next_lsn()).expect("truncate");
            },
        ));
        describe_stats("append_none_file_256", &stats_delta(&before, &wal.stats()));
    }

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
        let spec = Spec {
            group: GROUP,
            id: "floor_seq_pwrite_8m",
            batch: 1,
            disk: None,
        };
        rows.extend(measure(c, cfg, &spec, op, || {}, || {}));
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

    let spec = Spec {
        group: GROUP,
        id: "floor_pwrite_fdatasync_256",
        batch: 1,
        disk,
    };
    rows.extend(measure(c, cfg, &spec, &mut floor_op, || {}, || {}));
    let before = wal.stats();
    let spec = Spec {
        group: GROUP,
        id: "append_sync_256",
        batch: 1,
        disk,
    };
    rows.extend(measure(c, cfg, &spec, &mut wal_op, || {}, || {}));
    describe_stats("append_sync_256", &stats_delta(&before, &wal.stats()));

    // The same two, alternating one operation each, so both see the same noise.
    let mut a = Vec::new();
    let mut b = Vec::new();
    let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
    let deadline = Instant::now() + cfg.measurement;
    while Instant::now() < deadline && a.len() < 200_000 {
        let t = Instant::now();
        floor_op();
        let d = t.elapsed();
        ta += d;
        a.push(d.as_nanos() as f64);
        let t = Instant::now();
        wal_op();
        let d = t.elapsed();
        tb += d;
        b.push(d.as_nanos() as f64);
    }
    let n = a.len() as u64;
    let interleaved = summarize("interleaved/floor_pwrite_fdatasync_256", a, 1, n, ta)
        .zip(summarize("interleaved/append_sync_256", b, 1, n, tb));
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

fn bench_group_commit(cfg: &Cfg, dir: &Path, disk: Option<&DiskFlushes>) -> Vec<GroupRow> {
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
            std::thread::sleep(cfg.group_commit_time);
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

fn bench_recovery(c: &mut Criterion, cfg: &Cfg, dir: &Path) -> Recovery {
    let rdir = dir.join("recovery");
    let opts = WalOptions {
        segment_size_bytes: cfg.recovery_segment_bytes,
        ..WalOptions::default()
    };
    // Floor for growing a log: creating one zero-filled segment file (zeros written, fdatasync), as the log's
    // preparer thread does for every segment it cannot recycle.
    let mut create = Duration::ZERO;
    let creates = if cfg.quick { 1 } else { 3 };
    for k in 0..creates {
        let path = dir.join(format!("create{k}.dat"));
        let t = Instant::now();
        drop(zero_filled_file(&path, cfg.recovery_segment_bytes).expect("create"));
        create += t.elapsed();
        std::fs::remove_file(&path).expect("remove");
    }
    let segment_create = create / creates;
    // Build the log: 256 B records, not durable one by one, synced at the end.
    let started = Instant::now();
    let mut build_records = 0u64;
    {
        let (wal, _) = Wal::open(&rdir, opts.clone()).expect("open");
        while wal.next_lsn() < cfg.recovery_log_bytes {
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
    let mut samples = Vec::new();
    let mut internal = Vec::new();
    let mut total = Duration::ZERO;
    let mut ops = 0u64;
    {
        let mut g = c.benchmark_group(GROUP);
        g.warm_up_time(cfg.warm_up)
            .measurement_time(cfg.measurement)
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat);
        g.bench_function("recovery_open_warm", |b| {
            b.iter_custom(|iters| {
                let mut sum = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let (wal, rep) = Wal::open(&rdir, opts.clone()).expect("open");
                    let d = t.elapsed();
                    drop(wal);
                    sum += d;
                    samples.push(d.as_nanos() as f64);
                    internal.push(rep.duration.as_nanos() as f64);
                }
                ops += iters;
                total += sum;
                sum
            });
        });
        g.finish();
    }
    let mut warm = summarize("wal/recovery_open_warm", samples, 1, ops, total);
    if let Some(w) = &mut warm {
        w.criterion_ns = criterion_estimate_ns(GROUP, "recovery_open_warm");
    }
    internal.sort_by(f64::total_cmp);
    let warm_internal_ns = percentile(&internal, 0.5);

    // Cold: the segments' pages dropped from the page cache before each open.
    let mut cold_samples = Vec::new();
    let mut cold_total = Duration::ZERO;
    for _ in 0..cfg.cold_opens {
        evict_segments(&rdir);
        let t = Instant::now();
        let (wal, _) = Wal::open(&rdir, opts.clone()).expect("open");
        let d = t.elapsed();
        drop(wal);
        cold_total += d;
        cold_samples.push(d.as_nanos() as f64);
    }
    let n = cold_samples.len() as u64;
    let cold = summarize("wal/recovery_open_cold", cold_samples, 1, n, cold_total);
    Recovery {
        build_records,
        build_time,
        segment_create,
        log_bytes: report.end_lsn - report.start_lsn,
        segments: report.segments,
        segment_bytes: cfg.recovery_segment_bytes,
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
        bench_group_commit(&cfg, dir.path(), disk.as_ref())
    } else {
        Vec::new()
    };
    let rec = want('d').then(|| bench_recovery(&mut c, &cfg, dir.path()));
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

fn find(rows: &[Summary], id: &str) -> Option<Summary> {
    rows.iter().find(|s| s.name.ends_with(id)).cloned()
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
        let r = w.p50_ns / f.p50_ns;
        eprintln!(
            "(b) durable p50: wal {} / floor {} = {:.3} (p99 {:.3}, p99.9 {:.3}); target <= 1.15: {}",
            fmt_ns(w.p50_ns),
            fmt_ns(f.p50_ns),
            r,
            w.p99_ns / f.p99_ns,
            w.p999_ns / f.p999_ns,
            verdict(r <= 1.15)
        );
    }
    if let Some((f, w)) = &ds.interleaved {
        let r = w.p50_ns / f.p50_ns;
        eprintln!(
            "(b) interleaved p50: wal {} / floor {} = {:.3} (p99 {:.3}, p99.9 {:.3}, n={}); target <= 1.15: {}",
            fmt_ns(w.p50_ns),
            fmt_ns(f.p50_ns),
            r,
            w.p99_ns / f.p99_ns,
            w.p999_ns / f.p999_ns,
            w.samples,
            verdict(r <= 1.15)
        );
    }
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
