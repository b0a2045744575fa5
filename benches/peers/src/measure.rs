//! Timing: per-operation latency histograms, timed loops on one or many threads, the keys and values every
//! engine writes, and the disk's cache flush counter.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Bytes of every key: `k` and 23 decimal digits, so that keys sort in number order.
pub const KEY_BYTES: usize = 24;

/// Key number `n`.
pub fn key_of(n: u64) -> [u8; KEY_BYTES] {
    let mut k = [b'0'; KEY_BYTES];
    k[0] = b'k';
    let mut v = n;
    for d in k[1..].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    k
}

/// Incompressible bytes from which values are cut (so that compressing engines gain nothing from the data).
pub struct Values {
    pool: Vec<u8>,
}

impl Values {
    pub fn new() -> Self {
        use rand::{RngCore, SeedableRng};
        let mut pool = vec![0u8; 1 << 20];
        rand::rngs::SmallRng::seed_from_u64(0x5eed).fill_bytes(&mut pool);
        Self { pool }
    }

    /// The value of key number `n`, `len` bytes long (at most 64 KiB).
    pub fn of(&self, n: u64, len: usize) -> &[u8] {
        let span = self.pool.len() - len;
        let at = (n.wrapping_mul(0x9e37_79b9) as usize) % span;
        &self.pool[at..at + len]
    }
}

/// Latency percentiles of one run, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
            mean: h.mean(),
        }
    }
}

/// A histogram of nanoseconds from 1 ns to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// What a timed run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// Operations timed (commits, batches, reads).
    pub ops: u64,
    /// Wall time of all timed operations, from the first start to the last end.
    pub elapsed: Duration,
    pub latency: Latency,
    /// Disk cache flushes the device completed during the run (the whole device: other I/O counts too).
    pub flushes: Option<u64>,
}

impl Run {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-12)
    }
}

/// How long a run lasts: until `time` has passed or `max_ops` operations are done, after `warm_up` untimed.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub warm_up: Duration,
    pub time: Duration,
    pub max_ops: u64,
}

/// Runs `op(i)` for `i = 0, 1, ...` on this thread: warm-up operations untimed, then each operation timed on its
/// own.
pub fn timed(
    budget: Budget,
    disk: Option<&DiskFlushes>,
    mut op: impl FnMut(u64) -> Result<()>,
) -> Result<Run> {
    let mut i = 0u64;
    let warm = Instant::now();
    while warm.elapsed() < budget.warm_up {
        op(i)?;
        i += 1;
    }
    let mut h = histogram();
    let flushes_before = disk.and_then(DiskFlushes::read);
    let start = Instant::now();
    let mut ops = 0u64;
    while ops < budget.max_ops && start.elapsed() < budget.time {
        let t = Instant::now();
        op(i)?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
        i += 1;
        ops += 1;
    }
    let elapsed = start.elapsed();
    let flushes = flushes_delta(disk, flushes_before);
    Ok(Run {
        ops,
        elapsed,
        latency: Latency::of(&h),
        flushes,
    })
}

/// Runs `threads` threads at once, each calling its own operation (made by `make(thread)`) with `0, 1, ...` until
/// the budget's time has passed; latencies of all threads merged. Warm-up runs on all threads before timing.
pub fn timed_threads<M, F>(
    threads: usize,
    budget: Budget,
    disk: Option<&DiskFlushes>,
    make: M,
) -> Result<Run>
where
    M: Fn(usize) -> Result<F> + Sync,
    F: FnMut(u64) -> Result<()>,
{
    let warmed = Barrier::new(threads + 1);
    let go = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let (results, elapsed, flushes) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (warmed, go, stop, make) = (&warmed, &go, &stop, &make);
                s.spawn(move || -> Result<(u64, Histogram<u64>)> {
                    let made = make(t);
                    let mut i = 0u64;
                    let mut failed = None;
                    let mut op = match made {
                        Ok(op) => Some(op),
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    };
                    if let Some(op) = op.as_mut() {
                        let warm = Instant::now();
                        while warm.elapsed() < budget.warm_up {
                            if let Err(e) = op(i) {
                                failed = Some(e);
                                break;
                            }
                            i += 1;
                        }
                    }
                    warmed.wait();
                    go.wait();
                    let mut h = histogram();
                    let mut ops = 0u64;
                    if let (Some(op), None) = (op.as_mut(), failed.as_ref()) {
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            if let Err(e) = op(i) {
                                failed = Some(e);
                                break;
                            }
                            h.saturating_record(t.elapsed().as_nanos() as u64);
                            i += 1;
                            ops += 1;
                        }
                    }
                    match failed {
                        Some(e) => Err(e),
                        None => Ok((ops, h)),
                    }
                })
            })
            .collect();
        warmed.wait();
        let flushes_before = disk.and_then(DiskFlushes::read);
        let start = Instant::now();
        go.wait();
        std::thread::sleep(budget.time);
        stop.store(true, Ordering::Relaxed);
        let out: Vec<Result<(u64, Histogram<u64>)>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a benchmark thread panicked")))
            })
            .collect();
        (out, start.elapsed(), flushes_delta(disk, flushes_before))
    });
    let results = results.into_iter().collect::<Result<Vec<_>>>()?;
    let mut merged = histogram();
    let mut ops = 0;
    for (n, h) in &results {
        ops += n;
        merged.add(h).expect("same bounds");
    }
    Ok(Run {
        ops,
        elapsed,
        latency: Latency::of(&merged),
        flushes,
    })
}

fn flushes_delta(disk: Option<&DiskFlushes>, before: Option<u64>) -> Option<u64> {
    let after = disk.and_then(DiskFlushes::read)?;
    Some(after.saturating_sub(before?))
}

/// Disk cache flush requests completed by the block device holding a path (`/proc/diskstats`, kernel >= 5.5).
#[derive(Clone, Debug)]
pub struct DiskFlushes {
    major: u64,
    minor: u64,
    pub name: String,
}

impl DiskFlushes {
    pub fn for_path(path: &Path) -> Option<Self> {
        let dev = std::fs::metadata(path).ok()?.dev();
        let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        let (name, _) = diskstats_flushes(&text, major, minor)?;
        Some(Self { major, minor, name })
    }

    pub fn read(&self) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        diskstats_flushes(&text, self.major, self.minor).map(|(_, f)| f)
    }
}

/// The device name and flush-request count of device `major:minor` in `/proc/diskstats` text.
pub fn diskstats_flushes(text: &str, major: u64, minor: u64) -> Option<(String, u64)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (maj, min): (u64, u64) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
        // The 16th field after the name counts flush requests completed.
        let flushes = f.get(2 + 16)?.parse().ok()?;
        (maj == major && min == minor).then(|| (f[2].to_owned(), flushes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_24_bytes_in_number_order() {
        assert_eq!(&key_of(42), b"k00000000000000000000042");
        assert!(key_of(9) < key_of(10));
        assert!(key_of(99_999_999) < key_of(100_000_000));
    }

    #[test]
    fn values_have_the_asked_length_and_differ() {
        let v = Values::new();
        assert_eq!(v.of(7, 150).len(), 150);
        assert_eq!(v.of(7, 4096).len(), 4096);
        assert_ne!(v.of(1, 64), v.of(2, 64));
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = Latency::of(&h);
        // 3 significant digits: within 0.1 %.
        assert!((l.p50 - 500_000.0).abs() <= 500.0, "{l:?}");
        assert!((l.p99 - 990_000.0).abs() <= 1000.0, "{l:?}");
        assert!((l.p999 - 999_000.0).abs() <= 1000.0, "{l:?}");
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    #[test]
    fn diskstats_line_is_parsed() {
        let text = " 254       0 vda 294001 13223 18781874 521379 4836023 90883 211671136 672832 0 269208 1304699 172083 142 136781848 24964 2159914 85523\n 254       1 vda1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n";
        assert_eq!(
            diskstats_flushes(text, 254, 0),
            Some(("vda".to_owned(), 2_159_914))
        );
        assert_eq!(
            diskstats_flushes(text, 254, 1),
            Some(("vda1".to_owned(), 16))
        );
        assert_eq!(diskstats_flushes(text, 8, 0), None);
    }

    #[test]
    fn threads_are_timed_together() {
        let budget = Budget {
            warm_up: Duration::from_millis(5),
            time: Duration::from_millis(30),
            max_ops: u64::MAX,
        };
        let run = timed_threads(3, budget, None, |_| {
            Ok(|_| {
                std::thread::sleep(Duration::from_micros(200));
                Ok(())
            })
        })
        .unwrap();
        assert!(run.ops >= 3, "{run:?}");
        assert!(run.latency.p50 >= 200_000.0, "{run:?}");
        let single = timed(budget, None, |_| Ok(())).unwrap();
        assert!(single.ops > 0);
    }
}
