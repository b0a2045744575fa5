//! Durable write paths for 256 B records, on the real disk (a temporary directory under `std::env::temp_dir()`):
//!
//! - `pwrite_fdatasync`: `pwrite` 256 B + `fdatasync`, into a zero-filled preallocated file;
//! - `mmap_msync`: memcpy 256 B into a `MAP_SHARED` mapping of a zero-filled file + `msync` of that range;
//! - `odirect_dsync_4k`: `O_DIRECT|O_DSYNC` write of the current 4 KiB block (rewritten with each new record);
//! - `memcpy_mmap_nosync`: memcpy 256 B into the mapping, no sync (the floor);
//! - `pwrite_nosync`: `pwrite` 256 B, no sync (the syscall alone).
//!
//! Each benchmark uses criterion's `iter_custom`, timing every operation itself (batches of operations for the
//! sub-microsecond ones) and printing p50/p99/p99.9 next to criterion's own estimate. Disk cache flushes per
//! operation come from `/proc/diskstats` (whole device, so other activity on the disk counts too).
//!
//! `cargo bench --bench write_path`; `CSTORE_BENCH_QUICK=1 cargo bench --bench write_path` for a smoke run.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};

const RECORD_BYTES: usize = 256;
const BLOCK_BYTES: usize = 4096;
const GROUP: &str = "write_path";

// -------------------------------------------------------------------------------------------------------------
// Shared harness (the same in benches/wal.rs)
// -------------------------------------------------------------------------------------------------------------

/// Run settings; `CSTORE_BENCH_QUICK=1` shrinks everything to a smoke test.
#[derive(Clone, Copy, Debug)]
struct Cfg {
    quick: bool,
    warm_up: Duration,
    measurement: Duration,
    /// Operations run before criterion starts (page cache, allocation, first faults).
    prewarm_ops: u64,
    file_bytes: u64,
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
            }
        } else {
            Self {
                quick,
                warm_up: Duration::from_millis(500),
                measurement: Duration::from_secs(4),
                prewarm_ops: 200,
                file_bytes: 64 << 20,
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
// Write paths
// -------------------------------------------------------------------------------------------------------------

fn record(i: u64) -> [u8; RECORD_BYTES] {
    let mut r = [0u8; RECORD_BYTES];
    for (j, b) in r.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8) | 1;
    }
    r
}

/// A zeroed heap buffer aligned for `O_DIRECT`.
struct AlignedBlock {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBlock {
    fn new(len: usize, align: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, align).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Self { ptr, layout }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` initialized bytes, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

fn bench_write_paths(c: &mut Criterion, cfg: &Cfg) -> Vec<Summary> {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let disk = DiskFlushes::for_path(dir.path());
    let size = cfg.file_bytes;
    let mut rows = Vec::new();
    eprintln!(
        "write_path: temp dir {} (device {}), files of {} MiB, {} B records{}",
        dir.path().display(),
        disk.as_ref().map_or("unknown", |d| d.name.as_str()),
        size >> 20,
        RECORD_BYTES,
        if cfg.quick { ", QUICK mode" } else { "" }
    );

    // (a) pwrite + fdatasync into a zero-filled file.
    {
        let file = zero_filled_file(&dir.path().join("pwrite.dat"), size).expect("file");
        let mut off = 0u64;
        let mut i = 0u64;
        let op = || {
            i += 1;
            file.write_all_at(&record(i), off).expect("pwrite");
            file.sync_data().expect("fdatasync");
            off = (off + RECORD_BYTES as u64) % size;
        };
        rows.extend(measure(
            c,
            cfg,
            &Spec {
                group: GROUP,
                id: "pwrite_fdatasync_256",
                batch: 1,
                disk: disk.as_ref(),
            },
            op,
            || {},
            || {},
        ));
    }

    // (b) memcpy into a MAP_SHARED mapping + msync of the written range.
    {
        let file = zero_filled_file(&dir.path().join("mmap.dat"), size).expect("file");
        // SAFETY: the file is private to this benchmark and never truncated while mapped.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap");
        let mut off = 0usize;
        let mut i = 0u64;
        let op = || {
            i += 1;
            map[off..off + RECORD_BYTES].copy_from_slice(&record(i));
            map.flush_range(off, RECORD_BYTES).expect("msync");
            off = (off + RECORD_BYTES) % size as usize;
        };
        rows.extend(measure(
            c,
            cfg,
            &Spec {
                group: GROUP,
                id: "mmap_memcpy_msync_256",
                batch: 1,
                disk: disk.as_ref(),
            },
            op,
            || {},
            || {},
        ));
    }

    // (c) O_DIRECT|O_DSYNC, rewriting the current 4 KiB block with each new 256 B record.
    {
        let path = dir.path().join("odirect.dat");
        drop(zero_filled_file(&path, size).expect("file"));
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(&path)
        {
            Ok(file) => {
                let mut block = AlignedBlock::new(BLOCK_BYTES, BLOCK_BYTES);
                let mut block_off = 0u64;
                let mut in_block = 0usize;
                let mut i = 0u64;
                let op = || {
                    i += 1;
                    let buf = block.as_mut_slice();
                    buf[in_block..in_block + RECORD_BYTES].copy_from_slice(&record(i));
                    file.write_all_at(buf, block_off).expect("O_DIRECT write");
                    in_block += RECORD_BYTES;
                    if in_block == BLOCK_BYTES {
                        // The next block of the (zero-filled) file starts from zeros.
                        buf.fill(0);
                        in_block = 0;
                        block_off = (block_off + BLOCK_BYTES as u64) % size;
                    }
                };
                rows.extend(measure(
                    c,
                    cfg,
                    &Spec {
                        group: GROUP,
                        id: "odirect_dsync_4k",
                        batch: 1,
                        disk: disk.as_ref(),
                    },
                    op,
                    || {},
                    || {},
                ));
            }
            Err(e) => eprintln!("write_path: O_DIRECT not available here ({e}); skipped"),
        }
    }

    // (d) memcpy into the mapping, no sync: the floor.
    {
        let file = zero_filled_file(&dir.path().join("memcpy.dat"), size).expect("file");
        // SAFETY: as above.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap");
        let rec = record(7);
        let mut off = 0usize;
        let op = || {
            map[off..off + RECORD_BYTES].copy_from_slice(black_box(&rec));
            black_box(&map[off]);
            off = (off + RECORD_BYTES) % size as usize;
        };
        rows.extend(measure(
            c,
            cfg,
            &Spec {
                group: GROUP,
                id: "memcpy_mmap_nosync_256",
                batch: 1024,
                disk: None,
            },
            op,
            || {},
            || {},
        ));
    }

    // (e) pwrite, no sync: the syscall alone.
    {
        let file = zero_filled_file(&dir.path().join("pwrite_nosync.dat"), size).expect("file");
        let rec = record(9);
        let mut off = 0u64;
        let op = || {
            file.write_all_at(&rec, off).expect("pwrite");
            off = (off + RECORD_BYTES as u64) % size;
        };
        rows.extend(measure(
            c,
            cfg,
            &Spec {
                group: GROUP,
                id: "pwrite_nosync_256",
                batch: 64,
                disk: None,
            },
            op,
            || {},
            || {},
        ));
    }
    rows
}

fn main() {
    let cfg = Cfg::from_env();
    let mut c = Criterion::default().configure_from_args();
    let rows = bench_write_paths(&mut c, &cfg);
    c.final_summary();
    if rows.is_empty() {
        return;
    }
    print_table(
        "write path, 256 B records (per operation; sub-µs rows timed in batches)",
        &rows,
    );
    let p50 = |name: &str| {
        rows.iter()
            .find(|s| s.name.ends_with(name))
            .map(|s| s.p50_ns)
    };
    if let Some(floor) = p50("pwrite_fdatasync_256") {
        eprintln!(
            "\nratios of p50 to pwrite+fdatasync p50 ({}):",
            fmt_ns(floor)
        );
        for s in &rows {
            eprintln!("  {:<36} {:>10.4}x", s.name, s.p50_ns / floor);
        }
    }
    if cfg.quick {
        eprintln!("QUICK mode: smoke-test sizes and times only");
    }
    eprintln!(
        "\nflush/op: disk cache flushes completed by the device per operation (whole device: other I/O counts too)."
    );
}
