//! The raw floors, measured in the same run as the engines: `pwrite` + `fdatasync` of the same bytes into a
//! zero-filled file, `pwrite` alone, `memcpy`, a random read from memory, and a sequential read of a file.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::measure::{Budget, DiskFlushes, Latency, Run, histogram, timed};

/// A file of `len` zero bytes, written and synced (its blocks allocated and initialized).
pub fn zero_filled(path: &Path, len: u64) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// `pwrite` of `bytes` at consecutive offsets of a zero-filled file (wrapping around at its end), each followed by
/// `fdatasync` when `sync`.
pub fn pwrite(
    dir: &Path,
    file_bytes: u64,
    bytes: usize,
    sync: bool,
    budget: Budget,
    disk: Option<&DiskFlushes>,
) -> Result<Run> {
    let path = dir.join(format!("floor-{bytes}-{sync}"));
    let file = zero_filled(&path, file_bytes.max(bytes as u64 * 4))?;
    let buf: Vec<u8> = (0..bytes).map(|i| (i as u8) | 1).collect();
    let slots = file_bytes.max(bytes as u64 * 4) / bytes as u64;
    let run = timed(budget, disk, |i| {
        file.write_all_at(&buf, (i % slots) * bytes as u64)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    })?;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(run)
}

/// `memcpy` of `bytes` into a ring buffer, timed in batches of 1,024 (a single copy is below the clock's
/// resolution); the percentiles are of the batch time divided by 1,024.
pub fn memcpy(bytes: usize, budget: Budget) -> Run {
    const BATCH: u64 = 1024;
    let src: Vec<u8> = (0..bytes).map(|i| (i as u8) | 1).collect();
    let slots = (8usize << 20) / bytes;
    let mut ring = vec![0u8; slots * bytes];
    let mut at = 0usize;
    let mut copy = |ring: &mut [u8]| {
        for _ in 0..BATCH {
            ring[at * bytes..(at + 1) * bytes].copy_from_slice(&src);
            at = (at + 1) % slots;
        }
        black_box(&ring[at * bytes]);
    };
    let warm = Instant::now();
    while warm.elapsed() < budget.warm_up {
        copy(&mut ring);
    }
    let mut h = histogram();
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < budget.time {
        let t = Instant::now();
        copy(&mut ring);
        h.saturating_record((t.elapsed().as_nanos() as u64 / BATCH).max(1));
        batches += 1;
    }
    Run {
        ops: batches * BATCH,
        elapsed: start.elapsed(),
        latency: Latency::of(&h),
        flushes: None,
    }
}

/// A copy of `bytes` from a random one of `n` slots of a flat array in memory, each timed on its own (as the
/// engines' reads are).
pub fn random_read(n: u64, bytes: usize, order: &[u64], budget: Budget) -> Result<Run> {
    let table: Vec<u8> = (0..n as usize * bytes).map(|i| (i as u8) | 1).collect();
    let mut out = vec![0u8; bytes];
    timed(budget, None, |i| {
        let slot = order[i as usize % order.len()] as usize;
        out.copy_from_slice(&table[slot * bytes..(slot + 1) * bytes]);
        black_box(&out);
        Ok(())
    })
}

/// Time to read a `len`-byte file that was just written (in the page cache, as the engines' files are when they
/// reopen), in 1 MiB reads.
pub fn read_file(dir: &Path, len: u64) -> Result<Duration> {
    let path = dir.join("floor-read");
    drop(zero_filled(&path, len)?);
    let mut f = File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        black_box(&buf[..n]);
    }
    let took = start.elapsed();
    std::fs::remove_file(&path)?;
    Ok(took)
}
