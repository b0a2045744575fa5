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

mod common;

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use common::{
    Cfg, DiskFlushes, RECORD_BYTES, Spec, Summary, find, fmt_ns, measure_op, payload, print_table,
    zero_filled_file,
};
use criterion::Criterion;

const BLOCK_BYTES: usize = 4096;
const GROUP: &str = "write_path";

// -------------------------------------------------------------------------------------------------------------
// Write paths
// -------------------------------------------------------------------------------------------------------------

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
            file.write_all_at(&payload(i), off).expect("pwrite");
            file.sync_data().expect("fdatasync");
            off = (off + RECORD_BYTES as u64) % size;
        };
        rows.extend(measure_op(
            c,
            cfg,
            &Spec::new(GROUP, "pwrite_fdatasync_256", 1, disk.as_ref()),
            op,
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
            map[off..off + RECORD_BYTES].copy_from_slice(&payload(i));
            map.flush_range(off, RECORD_BYTES).expect("msync");
            off = (off + RECORD_BYTES) % size as usize;
        };
        rows.extend(measure_op(
            c,
            cfg,
            &Spec::new(GROUP, "mmap_memcpy_msync_256", 1, disk.as_ref()),
            op,
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
                    buf[in_block..in_block + RECORD_BYTES].copy_from_slice(&payload(i));
                    file.write_all_at(buf, block_off).expect("O_DIRECT write");
                    in_block += RECORD_BYTES;
                    if in_block == BLOCK_BYTES {
                        // The next block of the (zero-filled) file starts from zeros.
                        buf.fill(0);
                        in_block = 0;
                        block_off = (block_off + BLOCK_BYTES as u64) % size;
                    }
                };
                rows.extend(measure_op(
                    c,
                    cfg,
                    &Spec::new(GROUP, "odirect_dsync_4k", 1, disk.as_ref()),
                    op,
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
        let rec = payload(7);
        let mut off = 0usize;
        let op = || {
            map[off..off + RECORD_BYTES].copy_from_slice(black_box(&rec));
            black_box(&map[off]);
            off = (off + RECORD_BYTES) % size as usize;
        };
        rows.extend(measure_op(
            c,
            cfg,
            &Spec::new(GROUP, "memcpy_mmap_nosync_256", 1024, None),
            op,
        ));
    }

    // (e) pwrite, no sync: the syscall alone.
    {
        let file = zero_filled_file(&dir.path().join("pwrite_nosync.dat"), size).expect("file");
        let rec = payload(9);
        let mut off = 0u64;
        let op = || {
            file.write_all_at(&rec, off).expect("pwrite");
            off = (off + RECORD_BYTES as u64) % size;
        };
        rows.extend(measure_op(
            c,
            cfg,
            &Spec::new(GROUP, "pwrite_nosync_256", 64, None),
            op,
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
    if let Some(floor) = find(&rows, "pwrite_fdatasync_256").map(|s| s.p50_ns) {
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
