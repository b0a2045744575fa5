//! Where checkpoint files live: a directory ([`DirFiles`]), or memory ([`MemFiles`], which can also simulate power
//! loss at every step of a write).
//!
//! A file is written whole and replaced atomically ([`CheckpointFiles::write_durably`]): a temporary file is
//! written and synced, renamed over the name, and the directory is synced. Readers get the bytes as a
//! [`SharedBytes`], which the database keeps as the owner of documents read in place.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rkyv::util::AlignedVec;

use crate::error::{Error, Result};

/// Immutable bytes (of a file), starting 16-byte aligned, shared by every document read from them in place: they
/// do not change for as long as the value lives.
pub trait SharedBytes: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

/// A mapped file.
struct Mapped(memmap2::Mmap);

impl SharedBytes for Mapped {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl SharedBytes for AlignedVec {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// The files of checkpoints: names are relative paths such as `MANIFEST` or `snapshots/c0-000a.snap`.
pub trait CheckpointFiles: Send + Sync {
    /// Replaces (or creates) `name` with `bytes`, durably: once this returns, a crash leaves `bytes`; if it fails or
    /// the process dies during it, a crash leaves either the old file or `bytes`, never a mix.
    ///
    /// # Errors
    /// I/O errors ([`Error::DiskFull`] when the disk is full).
    fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// The bytes of `name`, or `None` if it does not exist.
    ///
    /// # Errors
    /// I/O errors.
    fn read(&self, name: &str) -> Result<Option<Arc<dyn SharedBytes>>>;
    /// Removes `name` (nothing if it does not exist). Not synced: a crash may bring it back.
    ///
    /// # Errors
    /// I/O errors.
    fn remove(&self, name: &str) -> Result<()>;
    /// Every file under `folder` (names relative to the root, as passed to the other methods).
    ///
    /// # Errors
    /// I/O errors.
    fn list(&self, folder: &str) -> Result<Vec<String>>;
}

/// Size of the pieces a checkpoint file is written and synced in. Each piece's `fdatasync` also flushes the disk's
/// cache, so a commit's own flush waits for at most one piece. Measured here (a commit's pwrite + fdatasync while
/// another thread writes 280 MB in pieces, each followed by fdatasync): p99.9 of the commits 15 ms with 1 MiB
/// pieces, 2.3 ms with 256 KiB, 0.31–0.45 ms with 64 KiB (2.4–3.4× their p50; the writer makes ~240 MB/s), and
/// no better with 32 KiB (at half the writer's speed). Starting writeback without waiting
/// (`POSIX_FADV_DONTNEED`) was the worst: 34 ms.
const WRITE_PIECE_BYTES: usize = 64 << 10;

/// Checkpoint files in a directory.
#[derive(Debug)]
pub struct DirFiles {
    root: PathBuf,
}

fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::StorageFull {
        Error::DiskFull {
            op,
            path: path.into(),
        }
    } else {
        Error::io(op, path, e)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync directory", dir, e))
}

impl DirFiles {
    /// Files under `root` (created if missing).
    ///
    /// # Errors
    /// I/O errors.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io_error("create directory", &root, e))?;
        Ok(Self { root })
    }
}

impl CheckpointFiles for DirFiles {
    fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(name);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create directory", &dir, e))?;
        let temp = path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&temp)
            .map_err(|e| io_error("create", &temp, e))?;
        // Written and synced piece by piece: the disk never holds more than one piece of it unsynced, so a commit's
        // flush never waits behind hundreds of MB of snapshot writeback (see `WRITE_PIECE_BYTES`).
        let written = bytes
            .chunks(WRITE_PIECE_BYTES)
            .try_for_each(|piece| file.write_all(piece).and_then(|()| file.sync_data()))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write and fsync", &temp, e));
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        drop(file);
        std::fs::rename(&temp, &path).map_err(|e| io_error("rename", &path, e))?;
        sync_dir(&dir)
    }

    fn read(&self, name: &str) -> Result<Option<Arc<dyn SharedBytes>>> {
        let path = self.root.join(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| io_error("stat", &path, e))?
            .len();
        if len == 0 {
            // An empty file cannot be mapped; it reads as empty bytes (and fails validation as such).
            return Ok(Some(Arc::new(AlignedVec::<16>::new())));
        }
        // SAFETY: the file is mapped read-only and never written through this map. Checkpoint files are written
        // once under a temporary name and renamed into place, and only removed after a newer manifest stops naming
        // them, so no writer of this database changes a mapped file; the directory lock keeps other instances out.
        // (Another program writing into the data directory while it is open is outside what any mapped store can
        // defend against.) Every byte is validated before it is interpreted.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error("mmap", &path, e))?;
        Ok(Some(Arc::new(Mapped(map))))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.root.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    fn list(&self, folder: &str) -> Result<Vec<String>> {
        let dir = self.root.join(folder);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", &dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(format!("{folder}/{name}"));
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Checkpoint files in memory. With [`MemFiles::simulated`], it keeps apart what a power loss would leave (the
/// durable state) from what the process sees, counts every step of every write (write the temporary file, sync
/// it, rename it, sync the directory), can fail at a chosen step as if the process died there, and makes crash
/// images.
#[derive(Default)]
pub struct MemFiles {
    state: Mutex<MemState>,
}

#[derive(Default, Clone)]
struct MemState {
    /// What the process sees.
    visible: BTreeMap<String, Arc<AlignedVec>>,
    /// What survives a power loss.
    durable: BTreeMap<String, Arc<AlignedVec>>,
    /// Renames done but not yet made durable by a directory sync: (name, synced content).
    pending_renames: Vec<(String, Arc<AlignedVec>)>,
    /// Steps taken so far.
    steps: u64,
    /// Fail (as if the process died) at this step and every later one.
    fail_at: Option<u64>,
}

impl std::fmt::Debug for MemFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("MemFiles")
            .field("files", &state.visible.keys().collect::<Vec<_>>())
            .field("steps", &state.steps)
            .finish_non_exhaustive()
    }
}

impl MemFiles {
    /// Empty files that touch no disk.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, for crash tests (see the type's documentation).
    #[must_use]
    pub fn simulated() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Steps taken so far by writes.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.state.lock().steps
    }

    /// Makes step `step` (counted from the start, see [`MemFiles::steps`]) and every later one fail.
    pub fn fail_at_step(&self, step: u64) {
        self.state.lock().fail_at = Some(step);
    }

    /// What a power loss now would leave: every durable file, plus the renames not yet made durable if
    /// `renames_survive` (a directory entry may reach the disk before its directory is synced).
    #[must_use]
    pub fn crash_image(&self, renames_survive: bool) -> Arc<Self> {
        let state = self.state.lock();
        let mut files = state.durable.clone();
        if renames_survive {
            for (name, content) in &state.pending_renames {
                files.insert(name.clone(), Arc::clone(content));
            }
        }
        Arc::new(Self {
            state: Mutex::new(MemState {
                visible: files.clone(),
                durable: files,
                ..MemState::default()
            }),
        })
    }

    fn step(state: &mut MemState, what: &str, name: &str) -> Result<()> {
        let step = state.steps;
        state.steps += 1;
        if state.fail_at.is_some_and(|at| step >= at) {
            return Err(Error::io(
                "simulated crash",
                name,
                std::io::Error::other(format!("step {step} ({what})")),
            ));
        }
        Ok(())
    }
}

impl CheckpointFiles for MemFiles {
    fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        let mut content: AlignedVec = AlignedVec::with_capacity(bytes.len());
        content.extend_from_slice(bytes);
        let content = Arc::new(content);
        // The temporary file: written, then synced (only the synced content can be renamed durably).
        Self::step(&mut state, "write temporary file", name)?;
        Self::step(&mut state, "fsync temporary file", name)?;
        Self::step(&mut state, "rename", name)?;
        state.visible.insert(name.into(), Arc::clone(&content));
        state.pending_renames.push((name.into(), content));
        Self::step(&mut state, "fsync directory", name)?;
        for (name, content) in std::mem::take(&mut state.pending_renames) {
            state.durable.insert(name, content);
        }
        Ok(())
    }

    fn read(&self, name: &str) -> Result<Option<Arc<dyn SharedBytes>>> {
        Ok(self
            .state
            .lock()
            .visible
            .get(name)
            .map(|c| Arc::clone(c) as Arc<dyn SharedBytes>))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let mut state = self.state.lock();
        Self::step(&mut state, "remove", name)?;
        state.visible.remove(name);
        // A removal is not synced: it may or may not survive; keeping it durable is the harder case for recovery.
        Ok(())
    }

    fn list(&self, folder: &str) -> Result<Vec<String>> {
        let prefix = format!("{folder}/");
        Ok(self
            .state
            .lock()
            .visible
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect())
    }
}
