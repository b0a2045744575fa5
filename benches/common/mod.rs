//! The harness both benches share (`mod common;` in `benches/wal.rs` and `benches/write_path.rs`): run settings,
//! per-operation percentiles next to criterion's own estimate, disk cache flush counts, zero-filled floor files and
//! the report table; and, for `benches/wal.rs` and `benches/db.rs`, a durable operation measured next to its
//! `pwrite` + `fdatasync` floor, group commit runs, rates and verdicts.

// Each bench uses only part of this module.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use collection_store::wal::WalStats;
use criterion::{Criterion, SamplingMode};

/// Payload bytes of the records both benches write.
pub const RECORD_BYTES: usize = 256;

/// Run settings; `CSTORE_BENCH_QUICK=1` shrinks everything to a smoke test.
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    pub quick: bool,
    pub warm_up: Duration,
    pub measurement: Duration,
    /// Operations run before criterion starts (page cache, allocation, first faults).
    pub prewarm_ops: u64,
    /// Size of the zero-filled floor files.
    pub file_bytes: u64,
}

impl Cfg {
    pub fn from_env() -> Self {
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
pub fn criterion_test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    !has("--bench") || has("--test") || has("--list")
}

/// Record `i`: 256 deterministic bytes, none of them zero.
pub fn payload(i: u64) -> [u8; RECORD_BYTES] {
    let mut r = [0u8; RECORD_BYTES];
    for (j, b) in r.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8) | 1;
    }
    r
}

/// Latency figures of one benchmark, in nanoseconds per operation.
#[derive(Clone, Debug)]
pub struct Summary {
    pub name: String,
    /// Samples behind the percentiles (each one operation, or one batch divided by its size).
    pub samples: usize,
    pub batch: u64,
    pub ops: u64,
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
    pub criterion_ns: Option<f64>,
    pub flushes_per_op: Option<f64>,
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn summarize(
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

/// The row of `rows` whose name ends with `id`.
pub fn find(rows: &[Summary], id: &str) -> Option<Summary> {
    rows.iter().find(|s| s.name.ends_with(id)).cloned()
}

/// What to benchmark: criterion group and id, operations per timed sample, the device whose flushes to count.
pub struct Spec<'a> {
    pub group: &'a str,
    pub id: &'a str,
    pub batch: u64,
    pub disk: Option<&'a DiskFlushes>,
}

impl<'a> Spec<'a> {
    pub fn new(group: &'a str, id: &'a str, batch: u64, disk: Option<&'a DiskFlushes>) -> Self {
        Self {
            group,
            id,
            batch,
            disk,
        }
    }
}

/// Benchmarks `op` (one operation per call) under criterion with `iter_custom`, timing each batch of
/// `spec.batch` operations itself. `finish` ends each of criterion's calls inside the timed region (e.g. a flush
/// that hands the call's appends over); `between` runs after it, untimed (housekeeping).
pub fn measure(
    c: &mut Criterion,
    cfg: &Cfg,
    spec: &Spec<'_>,
    mut op: impl FnMut(),
    finish: impl FnMut(),
    between: impl FnMut(),
) -> Option<Summary> {
    measure_prepared(c, cfg, spec, || (), |()| op(), finish, between)
}

/// [`measure`] for an operation on an input that `prepare` makes untimed before each operation (what the caller
/// brings, such as a document to insert): only `op` and `finish` are timed, and criterion is told only that time.
pub fn measure_prepared<T>(
    c: &mut Criterion,
    cfg: &Cfg,
    spec: &Spec<'_>,
    mut prepare: impl FnMut() -> T,
    mut op: impl FnMut(T),
    mut finish: impl FnMut(),
    mut between: impl FnMut(),
) -> Option<Summary> {
    let batch = spec.batch;
    for _ in 0..cfg.prewarm_ops * batch {
        op(prepare());
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
        let mut inputs: Vec<T> = Vec::new();
        g.bench_function(spec.id, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(batch);
                    inputs.extend((0..k).map(|_| prepare()));
                    let t = Instant::now();
                    for input in inputs.drain(..) {
                        op(input);
                    }
                    let d = t.elapsed();
                    elapsed += d;
                    samples.push(d.as_nanos() as f64 / k as f64);
                    left -= k;
                }
                let t = Instant::now();
                finish();
                elapsed += t.elapsed();
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

/// [`measure`] for an operation that needs nothing done at the end of a call or between calls.
pub fn measure_op(
    c: &mut Criterion,
    cfg: &Cfg,
    spec: &Spec<'_>,
    op: impl FnMut(),
) -> Option<Summary> {
    measure(c, cfg, spec, op, || {}, || {})
}

/// Criterion's own estimate (slope if it has one, else mean) in ns, from its `estimates.json`.
pub fn criterion_estimate_ns(group: &str, id: &str) -> Option<f64> {
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
pub struct DiskFlushes {
    major: u64,
    minor: u64,
    pub name: String,
}

impl DiskFlushes {
    pub fn for_path(path: &Path) -> Option<Self> {
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

    pub fn read(&self) -> Option<u64> {
        self.line().map(|l| l.3)
    }
}

/// A file of `len` zero bytes, written and synced (so its blocks are allocated and initialized).
pub fn zero_filled_file(path: &Path, len: u64) -> std::io::Result<File> {
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

pub fn fmt_ns(ns: f64) -> String {
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

pub fn print_table(title: &str, rows: &[Summary]) {
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

/// Per-operation times of operations timed one by one, and their sum.
#[derive(Default)]
pub struct Timings {
    pub ns: Vec<f64>,
    pub total: Duration,
}

impl Timings {
    /// Runs `f`, recording how long it took.
    pub fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        let d = t.elapsed();
        self.total += d;
        self.ns.push(d.as_nanos() as f64);
        r
    }

    pub fn len(&self) -> usize {
        self.ns.len()
    }

    pub fn summarize(self, name: &str) -> Option<Summary> {
        let ops = self.ns.len() as u64;
        summarize(name, self.ns, 1, ops, self.total)
    }
}

/// What the log did between two readings of its counters.
pub fn stats_delta(a: &WalStats, b: &WalStats) -> WalStats {
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

/// Per-second rate from a per-operation time in ns.
pub fn per_s(ns: f64) -> f64 {
    1e9 / ns
}

pub fn fmt_rate(r: f64) -> String {
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
pub fn op_ns(s: &Summary) -> f64 {
    s.criterion_ns.unwrap_or(s.mean_ns)
}

pub fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

// -------------------------------------------------------------------------------------------------------------
// A durable operation next to its floor
// -------------------------------------------------------------------------------------------------------------

/// Criterion id of the durable floor: `pwrite` of 256 B + `fdatasync`, into a zero-filled file.
pub const DURABLE_FLOOR_ID: &str = "floor_pwrite_fdatasync_256";
/// What every durable floor's id starts with (then its size in bytes).
const FLOOR_PREFIX: &str = "floor_pwrite_fdatasync_";

/// A durable operation and its floor, measured one after the other and then interleaved.
pub struct FloorVs {
    /// The floor's row, then the subject's.
    pub rows: Vec<Summary>,
    /// The same two, alternating one operation each: (floor, subject).
    pub interleaved: Option<(Summary, Summary)>,
    /// What the log did during the subject's (non-interleaved) measurement.
    pub stats: WalStats,
}

impl FloorVs {
    /// The rows, then the interleaved pair: the table to print.
    pub fn table_rows(&self) -> Vec<Summary> {
        let mut rows = self.rows.clone();
        if let Some((x, y)) = &self.interleaved {
            rows.push(x.clone());
            rows.push(y.clone());
        }
        rows
    }
}

/// Measures `subject` (one durable operation per call, named by `spec`) next to the durable floor in a zero-filled
/// file under `dir`: first each on its own under criterion (counting `spec.disk`'s flushes, and the log's `stats`
/// around the subject), then both alternating one operation each for the measurement time, so both see the same
/// noise.
pub fn durable_vs_floor(
    c: &mut Criterion,
    cfg: &Cfg,
    dir: &Path,
    spec: &Spec<'_>,
    stats: impl Fn() -> WalStats,
    mut subject: impl FnMut(),
) -> FloorVs {
    durable_vs_sized_floor(
        c,
        cfg,
        dir,
        spec,
        RECORD_BYTES,
        stats,
        || (),
        |()| subject(),
    )
}

/// [`durable_vs_floor`] with a floor that writes `floor_bytes` per operation (the bytes the subject logs), named
/// `floor_pwrite_fdatasync_<floor_bytes>`, and a subject that takes an input `prepare` makes untimed before each
/// operation (see [`measure_prepared`]).
#[allow(clippy::too_many_arguments)]
pub fn durable_vs_sized_floor<T>(
    c: &mut Criterion,
    cfg: &Cfg,
    dir: &Path,
    spec: &Spec<'_>,
    floor_bytes: usize,
    stats: impl Fn() -> WalStats,
    mut prepare: impl FnMut() -> T,
    mut subject: impl FnMut(T),
) -> FloorVs {
    let mut rows = Vec::new();
    let floor = zero_filled_file(&dir.join("floor.dat"), cfg.file_bytes).expect("floor file");
    let mut off = 0u64;
    let mut i = 0u64;
    let mut bytes = vec![0u8; floor_bytes];
    let mut floor_op = || {
        i += 1;
        for (j, chunk) in bytes.chunks_mut(RECORD_BYTES).enumerate() {
            chunk.copy_from_slice(&payload(i + j as u64)[..chunk.len()]);
        }
        if off + floor_bytes as u64 > cfg.file_bytes {
            off = 0;
        }
        floor.write_all_at(&bytes, off).expect("pwrite");
        floor.sync_data().expect("fdatasync");
        off += floor_bytes as u64;
    };

    let floor_id = format!("floor_pwrite_fdatasync_{floor_bytes}");
    let floor_spec = Spec::new(spec.group, &floor_id, 1, spec.disk);
    rows.extend(measure_op(c, cfg, &floor_spec, &mut floor_op));
    let before = stats();
    rows.extend(measure_prepared(
        c,
        cfg,
        spec,
        &mut prepare,
        &mut subject,
        || {},
        || {},
    ));
    let stats = stats_delta(&before, &stats());

    let (mut a, mut b) = (Timings::default(), Timings::default());
    let deadline = Instant::now() + cfg.measurement;
    while Instant::now() < deadline && a.len() < 200_000 {
        a.time(&mut floor_op);
        let input = prepare();
        b.time(|| subject(input));
    }
    let interleaved = a
        .summarize(&format!("interleaved/{floor_id}"))
        .zip(b.summarize(&format!("interleaved/{}", spec.id)));
    FloorVs {
        rows,
        interleaved,
        stats,
    }
}

/// How a bench words its durable verdict: line prefix, the subject's short name, the target p50 ratio.
pub struct RatioLine<'a> {
    pub prefix: &'a str,
    pub subject: &'a str,
    pub target: f64,
}

impl RatioLine<'_> {
    /// The subject's percentiles over the floor's, and the verdict on p50; `extra` goes after p99.9.
    pub fn print(&self, what: &str, floor: &Summary, subject: &Summary, extra: &str) {
        let r = subject.p50_ns / floor.p50_ns;
        eprintln!(
            "{} {what} p50: {} {} / floor {} = {:.3} (p99 {:.3}, p99.9 {:.3}{extra}); target <= {}: {}",
            self.prefix,
            self.subject,
            fmt_ns(subject.p50_ns),
            fmt_ns(floor.p50_ns),
            r,
            subject.p99_ns / floor.p99_ns,
            subject.p999_ns / floor.p999_ns,
            self.target,
            verdict(r <= self.target)
        );
    }

    /// The verdict lines of a [`FloorVs`] whose subject is `id`: `consecutive` names the first line.
    pub fn print_all(
        &self,
        rows: &[Summary],
        interleaved: Option<&(Summary, Summary)>,
        id: &str,
        consecutive: &str,
    ) {
        let floor = rows.iter().find(|s| s.name.contains(FLOOR_PREFIX)).cloned();
        if let (Some(f), Some(s)) = (floor, find(rows, id)) {
            self.print(consecutive, &f, &s, "");
        }
        if let Some((f, s)) = interleaved {
            self.print("interleaved", f, s, &format!(", n={}", s.samples));
        }
    }
}

// -------------------------------------------------------------------------------------------------------------
// Group commit
// -------------------------------------------------------------------------------------------------------------

/// One group commit run: `threads` threads committing for a fixed time.
pub struct GroupRow {
    pub threads: usize,
    pub commits: u64,
    pub elapsed: Duration,
    pub stats: WalStats,
    pub disk_flushes: Option<u64>,
    pub latency: Option<Summary>,
}

impl GroupRow {
    pub fn commits_per_s(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `threads` threads for `run_for`, each calling its own `make(thread)` in a loop until told to stop; the
/// call times its durable commit with the `Timings` it is given (and leaves whatever it prepares untimed).
pub fn group_commit<F: FnMut(&mut Timings)>(
    threads: usize,
    run_for: Duration,
    disk: Option<&DiskFlushes>,
    stats: impl Fn() -> WalStats,
    make: impl Fn(usize) -> F + Sync,
) -> GroupRow {
    let stop = AtomicBool::new(false);
    let before = stats();
    let flushes_before = disk.and_then(DiskFlushes::read);
    let start = Instant::now();
    let latencies: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (make, stop) = (&make, &stop);
                s.spawn(move || {
                    let mut commit = make(t);
                    let mut lat = Timings::default();
                    while !stop.load(Ordering::Relaxed) {
                        commit(&mut lat);
                    }
                    lat.ns
                })
            })
            .collect();
        std::thread::sleep(run_for);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let elapsed = start.elapsed();
    let flushes_after = disk.and_then(DiskFlushes::read);
    let stats = stats_delta(&before, &stats());
    let all: Vec<f64> = latencies.into_iter().flatten().collect();
    let commits = all.len() as u64;
    let total = Duration::from_nanos(all.iter().sum::<f64>() as u64);
    GroupRow {
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
    }
}

/// The group commit table under `title`; `widths` are those of the columns commits, commits/s, syncs/commit,
/// commits/sync and flushes/cmt.
pub fn report_group_commit(title: &str, widths: [usize; 5], groups: &[GroupRow]) {
    let [w_commits, w_rate, w_syncs, w_per_sync, w_flushes] = widths;
    eprintln!("\n== {title} ==");
    eprintln!(
        "{:>7} {:>w_commits$} {:>w_rate$} {:>w_syncs$} {:>w_per_sync$} {:>w_flushes$} {:>10} {:>10} {:>10}",
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
        let commits = g.stats.appends.max(1) as f64;
        let (p50, p99, p999) = g
            .latency
            .as_ref()
            .map_or((f64::NAN, f64::NAN, f64::NAN), |l| {
                (l.p50_ns, l.p99_ns, l.p999_ns)
            });
        eprintln!(
            "{:>7} {:>w_commits$} {:>w_rate$} {:>w_syncs$.3} {:>w_per_sync$.2} {:>w_flushes$} {:>10} {:>10} {:>10}",
            g.threads,
            g.commits,
            fmt_rate(g.commits_per_s()),
            g.stats.syncs as f64 / commits,
            commits / g.stats.syncs.max(1) as f64,
            g.disk_flushes
                .map_or_else(|| "-".into(), |f| format!("{:.3}", f as f64 / commits)),
            fmt_ns(p50),
            fmt_ns(p99),
            fmt_ns(p999)
        );
    }
}
