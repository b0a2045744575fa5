//! Where segment bytes live: the [`LogStorage`] trait and its two backends, files ([`FileStorage`]) and memory
//! ([`MemStorage`], which can also simulate power loss).
//!
//! The log writes through `write_at` and `sync` and reads through `slice`, which hands out `&[u8]` views of a
//! segment's bytes with no copy. Invariant every caller keeps (and the reason the `unsafe` here is sound): a range
//! handed out by `slice` is never written while the view is alive. The log reads only below its written
//! watermark, writes only at or above it, and recycles or zeroes a segment only when nobody holds a view of it.
//!
//! `unsafe` in this module: mapping files (memmap2), the raw copy into in-memory segments, and the one system call
//! std does not wrap (`sync_file_range`, to start write-back early). Each block says why it is sound.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// A segment's name in storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentName {
    /// A live segment, named by its base LSN.
    Live(u64),
    /// A retired segment kept for reuse, named by a counter.
    Free(u64),
}

/// One fixed-size segment: positional writes, sync, and zero-copy views.
pub trait SegmentFile: Send + Sync {
    /// Writes `data` at `offset` (visible to `slice` once this returns; durable only after `sync`).
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync; `F_FULLFSYNC` on Apple platforms).
    fn sync(&self) -> io::Result<()>;
    /// Asks the device to start writing `len` bytes at `offset` (already written with `write_at`) without waiting,
    /// so that a later `sync` finds the transfer under way. Only a hint: it promises nothing about durability, and
    /// an error here is reported again by `sync` (the write-back error is not consumed). The default does nothing.
    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// The segment's size in bytes.
    fn len_bytes(&self) -> u64;
    /// A view of `len` bytes at `offset`. The caller must not let that range be written while the view lives.
    ///
    /// # Panics
    /// If the range is outside the segment.
    fn slice(&self, offset: u64, len: u64) -> &[u8];
    /// A name for error messages.
    fn describe(&self) -> String;
}

/// A place to keep a log: its meta record and its segments.
///
/// Every namespace operation (`write_meta`, `create_segment`, `recycle_segment`, `retire_segment`,
/// `remove_segment`) is durable when it returns.
pub trait LogStorage: Send + Sync {
    /// The meta record, if one was ever written.
    fn read_meta(&self) -> Result<Option<Vec<u8>>>;
    /// Atomically and durably replaces the meta record.
    fn write_meta(&self, bytes: &[u8]) -> Result<()>;
    /// Every segment present.
    fn list_segments(&self) -> Result<Vec<SegmentName>>;
    /// Creates a zero-filled live segment of `size_bytes` with `header` at offset 0.
    fn create_segment(&self, base_lsn: u64, size_bytes: u64, header: &[u8]) -> Result<()> {
        self.create_segment_with(base_lsn, size_bytes, header)
    }
    /// Creates a live segment of `size_bytes` whose first bytes are `prefix` (its header, then possibly records)
    /// and the rest zero, durably: a copy of a segment's written part ([`crate::wal::Wal::copy_to`]).
    fn create_segment_with(&self, base_lsn: u64, size_bytes: u64, prefix: &[u8]) -> Result<()>;
    /// Turns a free segment into live segment `base_lsn` with `header` at offset 0 (the rest keeps stale bytes).
    fn recycle_segment(&self, free_id: u64, base_lsn: u64, header: &[u8]) -> Result<()>;
    /// Turns live segment `base_lsn` into free segment `free_id`.
    fn retire_segment(&self, base_lsn: u64, free_id: u64) -> Result<()>;
    /// Deletes a segment.
    fn remove_segment(&self, name: SegmentName) -> Result<()>;
    /// Opens a live segment for reading and writing.
    fn open_segment(&self, base_lsn: u64) -> Result<Arc<dyn SegmentFile>>;
    /// A name for error messages.
    fn describe(&self, name: SegmentName) -> String;
}

// ---------------------------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------------------------

/// Name of the lock file inside the log directory.
pub const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta";
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Segments as files in one directory, held exclusively through an advisory lock on `LOCK`.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    // Held for the life of the storage: the flock is released when this file is closed.
    _lock: File,
}

impl FileStorage {
    /// Creates `dir` if needed, locks it and removes leftover temporary files.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle (this process or another) holds the directory; I/O errors otherwise.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: lock_path }),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("flock", &lock_path, e)),
        }
        let storage = Self { dir, _lock: lock };
        for entry in
            fs::read_dir(&storage.dir).map_err(|e| Error::io("read directory", &storage.dir, e))?
        {
            let entry = entry.map_err(|e| Error::io("read directory", &storage.dir, e))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                fs::remove_file(entry.path())
                    .map_err(|e| Error::io("remove temporary file", entry.path(), e))?;
            }
        }
        Ok(storage)
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: SegmentName) -> PathBuf {
        self.dir.join(file_name(name))
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
        self.sync_dir()
    }
}

/// The file name of segment `name` in a [`FileStorage`] directory.
#[must_use]
pub fn file_name(name: SegmentName) -> String {
    match name {
        SegmentName::Live(base) => format!("{base:016x}.seg"),
        SegmentName::Free(id) => format!("free-{id:016x}.seg"),
    }
}

/// The segment a file of a [`FileStorage`] directory holds, if its name is a segment's.
#[must_use]
pub fn parse_file_name(name: &str) -> Option<SegmentName> {
    let stem = name.strip_suffix(".seg")?;
    let (hex, make): (&str, fn(u64) -> SegmentName) = match stem.strip_prefix("free-") {
        Some(hex) => (hex, SegmentName::Free),
        None => (stem, SegmentName::Live),
    };
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok().map(make))
        .flatten()
}

impl LogStorage for FileStorage {
    fn read_meta(&self) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(META_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    fn write_meta(&self, bytes: &[u8]) -> Result<()> {
        let tmp = self.dir.join("meta.tmp");
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all_at(bytes, 0)
            .map_err(|e| Error::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        self.rename(&tmp, &self.dir.join(META_FILE))
    }

    fn list_segments(&self) -> Result<Vec<SegmentName>> {
        let mut names = Vec::new();
        for entry in
            fs::read_dir(&self.dir).map_err(|e| Error::io("read directory", &self.dir, e))?
        {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            if let Some(name) = entry.file_name().to_str().and_then(parse_file_name) {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn create_segment_with(&self, base_lsn: u64, size_bytes: u64, prefix: &[u8]) -> Result<()> {
        // Preallocate by writing zeros: a sparse or fallocated file would SIGBUS a mapping (or double fdatasync's
        // cost) when the disk fills. Written under a temporary name so a crash never leaves a half-made segment.
        let tmp = self.dir.join(format!("{base_lsn:016x}.seg.tmp"));
        let result = (|| {
            let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            file.write_all_at(prefix, 0)
                .map_err(|e| Error::io("write", &tmp, e))?;
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut at = prefix.len() as u64;
            while at < size_bytes {
                let n = (size_bytes - at).min(ZERO_CHUNK_BYTES as u64);
                #[allow(clippy::cast_possible_truncation)]
                file.write_all_at(&zeros[..n as usize], at)
                    .map_err(|e| Error::io("preallocate", &tmp, e))?;
                at += n;
            }
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &tmp, e))?;
            self.rename(&tmp, &self.path(SegmentName::Live(base_lsn)))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn recycle_segment(&self, free_id: u64, base_lsn: u64, header: &[u8]) -> Result<()> {
        let free = self.path(SegmentName::Free(free_id));
        let file = OpenOptions::new()
            .write(true)
            .open(&free)
            .map_err(|e| Error::io("open", &free, e))?;
        file.write_all_at(header, 0)
            .map_err(|e| Error::io("write header", &free, e))?;
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &free, e))?;
        self.rename(&free, &self.path(SegmentName::Live(base_lsn)))
    }

    fn retire_segment(&self, base_lsn: u64, free_id: u64) -> Result<()> {
        self.rename(
            &self.path(SegmentName::Live(base_lsn)),
            &self.path(SegmentName::Free(free_id)),
        )
    }

    fn remove_segment(&self, name: SegmentName) -> Result<()> {
        let path = self.path(name);
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        self.sync_dir()
    }

    fn open_segment(&self, base_lsn: u64) -> Result<Arc<dyn SegmentFile>> {
        let path = self.path(SegmentName::Live(base_lsn));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        if len == 0 {
            return Err(Error::Corruption {
                file: path.display().to_string(),
                offset: 0,
                reason: "empty".into(),
            });
        }
        // SAFETY: the mapping is read-only and the directory is flock'ed, so only this log writes the file, and it
        // does so with pwrite to ranges nobody holds a view of (module invariant). Segment files are never
        // truncated while mapped (they have a fixed size and are only renamed or unlinked), so no access can fault
        // past the end of the file.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }
            .map_err(|e| Error::io("mmap", &path, e))?;
        Ok(Arc::new(FileSegment { file, map, path }))
    }

    fn describe(&self, name: SegmentName) -> String {
        self.path(name).display().to_string()
    }
}

struct FileSegment {
    file: File,
    map: memmap2::Mmap,
    path: PathBuf,
}

impl SegmentFile for FileSegment {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        // std's sync_data is fdatasync on Linux and fcntl(F_FULLFSYNC) on Apple platforms.
        self.file.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        // SYNC_FILE_RANGE_WRITE alone submits the dirty pages and returns: it neither waits nor consumes a
        // write-back error (the file's error sequence is checked only by the WAIT flags and by fdatasync).
        // SAFETY: a plain system call on a descriptor this segment owns for its whole life; it reads and writes no
        // memory of this process.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn len_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    fn slice(&self, offset: u64, len: u64) -> &[u8] {
        let (start, end) = checked_range(offset, len, self.map.len());
        // SAFETY: in bounds (checked above); the range is not written while the view lives (module invariant).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), end - start) }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

fn checked_range(offset: u64, len: u64, size: usize) -> (usize, usize) {
    let start = usize::try_from(offset).expect("offset fits usize");
    let end = start
        .checked_add(usize::try_from(len).expect("len fits usize"))
        .expect("range overflows");
    assert!(
        end <= size,
        "range {start}..{end} outside segment of {size} bytes"
    );
    (start, end)
}

// ---------------------------------------------------------------------------------------------------------------
// Memory (and power-loss simulation)
// ---------------------------------------------------------------------------------------------------------------

/// Segments in anonymous memory: the in-memory backend, and with [`MemStorage::simulated`] a power-loss simulator.
///
/// A simulated storage remembers, for every segment, the bytes known durable (as of its last `sync`) and the
/// writes made since. [`MemStorage::crash_image`] builds the storage a machine could find after power loss at this
/// instant: each unsynced write kept, lost, or torn at 512-byte sector granularity. It can also inject I/O errors.
pub struct MemStorage {
    state: Arc<Mutex<MemState>>,
    simulate: bool,
}

#[derive(Default)]
struct MemState {
    meta: Option<Vec<u8>>,
    segments: BTreeMap<SegmentName, Arc<MemSegment>>,
    faults: Faults,
}

#[derive(Default, Clone, Copy)]
struct Faults {
    // Remaining successful writes / syncs before every later one fails; `None` = never fail.
    writes_left: Option<u64>,
    syncs_left: Option<u64>,
    /// The same for truncation's steps: meta rewrites, segment retirements and removals.
    truncation_steps_left: Option<u64>,
}

struct MemSegment {
    name: Mutex<SegmentName>,
    map: memmap2::MmapMut,
    ptr: *mut u8,
    len: usize,
    // Only for simulated storage: the durable image and the writes since the last sync.
    durable: Mutex<SimImage>,
    simulate: bool,
    state: std::sync::Weak<Mutex<MemState>>,
}

// SAFETY: `ptr` points into `map`, owned by the segment; writes and views go to disjoint ranges (module invariant).
unsafe impl Send for MemSegment {}
// SAFETY: as above; all other fields are Sync.
unsafe impl Sync for MemSegment {}

/// A simulated segment's durable bytes and the `(offset, bytes)` writes since its last sync.
type SimImage = (Vec<u8>, Vec<(u64, Vec<u8>)>);

/// Sector size at which simulated power loss tears writes.
pub const SECTOR_BYTES: usize = 512;

impl MemStorage {
    /// An in-memory storage: nothing survives the process.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            simulate: false,
        }
    }

    /// An in-memory storage that records writes and syncs so that crash images can be taken.
    #[must_use]
    pub fn simulated() -> Self {
        Self {
            state: Arc::default(),
            simulate: true,
        }
    }

    /// After `writes` more successful segment writes, every write fails with EIO (`None`: never).
    pub fn fail_writes_after(&self, writes: Option<u64>) {
        self.state.lock().faults.writes_left = writes;
    }

    /// After `syncs` more successful segment syncs, every sync fails with EIO (`None`: never).
    pub fn fail_syncs_after(&self, syncs: Option<u64>) {
        self.state.lock().faults.syncs_left = syncs;
    }

    /// After `steps` more successful truncation steps (a meta rewrite, a segment retired to the free pool or
    /// removed), every later one fails with EIO (`None`: never). Each step is atomic here, so a crash image taken
    /// after a failure shows the log as a crash between two steps leaves it.
    pub fn fail_truncation_steps_after(&self, steps: Option<u64>) {
        self.state.lock().faults.truncation_steps_left = steps;
    }

    fn truncation_step(state: &mut MemState, what: &'static str) -> Result<()> {
        match &mut state.faults.truncation_steps_left {
            Some(0) => Err(Error::io(
                what,
                "memory",
                io::Error::other("injected I/O error"),
            )),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// What a disk could hold after power loss right now, taken atomically. `choose(segment, sector_offset)` is
    /// called for each 512-byte disk sector touched by each unsynced write (in write order) and says whether that
    /// write's bytes in the sector reached the disk.
    ///
    /// # Panics
    /// If this storage was not made by [`MemStorage::simulated`].
    pub fn crash_image(&self, mut choose: impl FnMut(SegmentName, u64) -> bool) -> MemStorage {
        assert!(self.simulate, "crash_image needs MemStorage::simulated()");
        let state = self.state.lock();
        let image = MemStorage::simulated();
        {
            let mut new_state = image.state.lock();
            new_state.meta.clone_from(&state.meta);
            for (name, seg) in &state.segments {
                let (durable, pending) = &*seg.durable.lock();
                let mut bytes = durable.clone();
                for (offset, data) in pending {
                    // Tear at the disk's sector boundaries, not at the write's own offset.
                    let (start, end) = (*offset as usize, *offset as usize + data.len());
                    let mut at = start;
                    while at < end {
                        let sector_end = ((at / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
                        if choose(*name, (at - at % SECTOR_BYTES) as u64) {
                            bytes[at..sector_end]
                                .copy_from_slice(&data[at - start..sector_end - start]);
                        }
                        at = sector_end;
                    }
                }
                let new_seg =
                    MemSegment::from_bytes(*name, &bytes, true, Arc::downgrade(&image.state));
                new_state.segments.insert(*name, new_seg);
            }
        }
        image
    }

    /// A copy of a segment's current bytes (for tests).
    #[must_use]
    pub fn segment_bytes(&self, name: SegmentName) -> Option<Vec<u8>> {
        self.state
            .lock()
            .segments
            .get(&name)
            .map(|s| s.slice(0, s.len as u64).to_vec())
    }

    /// Overwrites a segment's bytes, durably (for corruption tests). Nobody may hold a view of it.
    ///
    /// # Panics
    /// If the segment does not exist or the range is outside it.
    pub fn poke(&self, name: SegmentName, offset: u64, data: &[u8]) {
        self.state.lock().segments[&name].write_durably(offset, data);
    }

    /// Renames a segment in place (no copy), optionally rewriting its header durably first.
    fn rename(&self, from: SegmentName, to: SegmentName, header: Option<&[u8]>) -> Result<()> {
        let mut state = self.state.lock();
        let seg = state
            .segments
            .remove(&from)
            .ok_or_else(|| self.missing(from))?;
        if let Some(header) = header {
            seg.write_durably(0, header);
        }
        *seg.name.lock() = to;
        state.segments.insert(to, seg);
        Ok(())
    }

    fn missing(&self, name: SegmentName) -> Error {
        Error::io(
            "open",
            self.describe(name),
            io::Error::from(io::ErrorKind::NotFound),
        )
    }
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemSegment {
    fn zeroed(
        name: SegmentName,
        len: usize,
        simulate: bool,
        state: std::sync::Weak<Mutex<MemState>>,
    ) -> Arc<Self> {
        // An anonymous mapping starts zeroed and is only backed by memory where it is written.
        let mut map = memmap2::MmapMut::map_anon(len).expect("anonymous mapping");
        let ptr = map.as_mut_ptr();
        let durable = if simulate { vec![0u8; len] } else { Vec::new() };
        Arc::new(Self {
            name: Mutex::new(name),
            len: map.len(),
            map,
            ptr,
            durable: Mutex::new((durable, Vec::new())),
            simulate,
            state,
        })
    }

    fn from_bytes(
        name: SegmentName,
        bytes: &[u8],
        simulate: bool,
        state: std::sync::Weak<Mutex<MemState>>,
    ) -> Arc<Self> {
        let seg = Self::zeroed(name, bytes.len(), simulate, state);
        seg.write_durably(0, bytes);
        seg
    }

    /// Writes bytes that are durable at once (segment headers, test corruption): no pending write is recorded.
    fn write_durably(&self, offset: u64, data: &[u8]) {
        self.copy_in(offset, data);
        if self.simulate {
            let durable = &mut self.durable.lock().0;
            durable[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        }
    }

    fn copy_in(&self, offset: u64, data: &[u8]) {
        let (start, _) = checked_range(offset, data.len() as u64, self.len);
        // SAFETY: in bounds; the range is not viewed while written (module invariant), and `ptr` stays valid for
        // as long as `self.map` lives.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(start), data.len()) };
    }

    fn fault(&self, sync: bool) -> io::Result<()> {
        let Some(state) = self.state.upgrade() else {
            return Ok(());
        };
        let mut state = state.lock();
        let left = if sync {
            &mut state.faults.syncs_left
        } else {
            &mut state.faults.writes_left
        };
        match left {
            Some(0) => Err(io::Error::other("injected I/O error")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl SegmentFile for MemSegment {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fault(false)?;
        self.copy_in(offset, data);
        if self.simulate {
            self.durable.lock().1.push((offset, data.to_vec()));
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.fault(true)?;
        if self.simulate {
            let (durable, pending) = &mut *self.durable.lock();
            for (offset, data) in pending.drain(..) {
                durable[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            }
        }
        Ok(())
    }

    fn len_bytes(&self) -> u64 {
        self.len as u64
    }

    fn slice(&self, offset: u64, len: u64) -> &[u8] {
        let (start, end) = checked_range(offset, len, self.len);
        let _ = &self.map;
        // SAFETY: in bounds; the range is not written while the view lives (module invariant).
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), end - start) }
    }

    fn describe(&self) -> String {
        format!("memory:{}", file_name(*self.name.lock()))
    }
}

impl LogStorage for MemStorage {
    fn read_meta(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.state.lock().meta.clone())
    }

    fn write_meta(&self, bytes: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        Self::truncation_step(&mut state, "write meta")?;
        state.meta = Some(bytes.to_vec());
        Ok(())
    }

    fn list_segments(&self) -> Result<Vec<SegmentName>> {
        Ok(self.state.lock().segments.keys().copied().collect())
    }

    fn create_segment_with(&self, base_lsn: u64, size_bytes: u64, prefix: &[u8]) -> Result<()> {
        let name = SegmentName::Live(base_lsn);
        let len = usize::try_from(size_bytes).expect("segment size fits usize");
        let seg = MemSegment::zeroed(name, len, self.simulate, Arc::downgrade(&self.state));
        seg.write_durably(0, prefix);
        self.state.lock().segments.insert(name, seg);
        Ok(())
    }

    fn recycle_segment(&self, free_id: u64, base_lsn: u64, header: &[u8]) -> Result<()> {
        self.rename(
            SegmentName::Free(free_id),
            SegmentName::Live(base_lsn),
            Some(header),
        )
    }

    fn retire_segment(&self, base_lsn: u64, free_id: u64) -> Result<()> {
        Self::truncation_step(&mut self.state.lock(), "retire segment")?;
        self.rename(
            SegmentName::Live(base_lsn),
            SegmentName::Free(free_id),
            None,
        )
    }

    fn remove_segment(&self, name: SegmentName) -> Result<()> {
        let mut state = self.state.lock();
        Self::truncation_step(&mut state, "remove segment")?;
        state
            .segments
            .remove(&name)
            .map(|_| ())
            .ok_or_else(|| self.missing(name))
    }

    fn open_segment(&self, base_lsn: u64) -> Result<Arc<dyn SegmentFile>> {
        let name = SegmentName::Live(base_lsn);
        let seg = self
            .state
            .lock()
            .segments
            .get(&name)
            .cloned()
            .ok_or_else(|| self.missing(name))?;
        Ok(seg)
    }

    fn describe(&self, name: SegmentName) -> String {
        format!("memory:{}", file_name(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        for name in [
            SegmentName::Live(0),
            SegmentName::Live(u64::MAX),
            SegmentName::Free(7),
        ] {
            assert_eq!(parse_file_name(&file_name(name)), Some(name));
        }
        assert_eq!(parse_file_name("0000.seg"), None);
        assert_eq!(parse_file_name("meta"), None);
    }

    #[test]
    fn second_open_of_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = FileStorage::open(dir.path()).unwrap();
        assert!(matches!(
            FileStorage::open(dir.path()),
            Err(Error::Locked { .. })
        ));
    }

    #[test]
    fn crash_image_keeps_synced_and_chooses_unsynced() {
        let storage = MemStorage::simulated();
        storage.create_segment(0, 4096, &[1; 64]).unwrap();
        let seg = storage.open_segment(0).unwrap();
        seg.write_at(512, &[2; 512]).unwrap();
        seg.sync().unwrap();
        seg.write_at(1024, &[3; 1024]).unwrap();
        let lost = storage.crash_image(|_, _| false);
        let bytes = lost.segment_bytes(SegmentName::Live(0)).unwrap();
        assert_eq!((bytes[0], bytes[512], bytes[1024]), (1, 2, 0));
        let mut n = 0;
        let torn = storage.crash_image(|_, _| {
            n += 1;
            n == 2
        });
        let bytes = torn.segment_bytes(SegmentName::Live(0)).unwrap();
        assert_eq!((bytes[1024], bytes[1536]), (0, 3));
    }
}
