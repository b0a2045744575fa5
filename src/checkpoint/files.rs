//! Where checkpoint files live: a directory ([`DirFiles`]), or memory ([`MemFiles`], which can also simulate power
//! loss at every step of a write).
//!
//! A file is written whole and replaced atomically ([`CheckpointFiles::write_durably`], or piece by piece as it is
//! produced with [`CheckpointFiles::write_durably_streamed`]): a temporary file is written and synced, renamed over
//! the name, and the directory is synced. Readers get the bytes as a
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

/// Where the bytes of a file being written go, in order (see [`CheckpointFiles::write_durably_streamed`]).
pub trait FileSink {
    /// Appends `bytes`.
    ///
    /// # Errors
    /// I/O errors.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
}

impl FileSink for AlignedVec {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// What produces a streamed file: it writes everything after the header into the sink, in order, then returns the
/// header.
pub type Produce<'a> = dyn FnMut(&mut dyn FileSink) -> Result<Vec<u8>> + 'a;

/// The files of checkpoints: names are relative paths such as `MANIFEST` or `snapshots/c0-000a.snap`.
pub trait CheckpointFiles: Send + Sync {
    /// Replaces (or creates) `name` with `bytes`, durably: once this returns, a crash leaves `bytes`; if it fails or
    /// the process dies during it, a crash leaves either the old file or `bytes`, never a mix.
    ///
    /// # Errors
    /// I/O errors ([`Error::DiskFull`] when the disk is full).
    fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// [`CheckpointFiles::write_durably`] for a file produced piece by piece: `produce` writes the bytes after the
    /// first `header_bytes` into the sink, in order, and returns the header (`header_bytes` long), which goes at
    /// offset 0. The default gathers the file in memory; [`DirFiles`] writes (and syncs) each piece as it comes, so
    /// the file is never whole in memory.
    ///
    /// # Errors
    /// As [`CheckpointFiles::write_durably`], and `produce`'s errors (then nothing is written under `name`).
    ///
    /// # Panics
    /// If the header returned is not `header_bytes` long.
    fn write_durably_streamed(
        &self,
        name: &str,
        header_bytes: usize,
        produce: &mut Produce<'_>,
    ) -> Result<()> {
        let mut file = AlignedVec::new();
        file.extend_from_slice(&vec![0; header_bytes]);
        let header = produce(&mut file)?;
        assert_eq!(
            header.len(),
            header_bytes,
            "the header has its announced size"
        );
        file[..header_bytes].copy_from_slice(&header);
        self.write_durably(name, &file)
    }
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

/// A temporary file being written in synced pieces: the disk never holds more than one piece of it unsynced, so a
/// commit's flush never waits behind hundreds of MB of snapshot writeback (see `WRITE_PIECE_BYTES`).
struct PieceWriter {
    file: File,
    temp: PathBuf,
    pending: Vec<u8>,
}

impl PieceWriter {
    fn create(temp: PathBuf) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&temp)
            .map_err(|e| io_error("create", &temp, e))?;
        Ok(Self {
            file,
            temp,
            pending: Vec::with_capacity(WRITE_PIECE_BYTES),
        })
    }

    /// Writes and syncs the pending bytes.
    fn flush_piece(&mut self) -> Result<()> {
        self.file
            .write_all(&self.pending)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error("write and fsync", &self.temp, e))?;
        self.pending.clear();
        Ok(())
    }

    /// Writes what is pending, then `header` at offset 0, and syncs the whole file.
    fn finish(mut self, header: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.flush_piece()?;
        self.file
            .write_all_at(header, 0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| io_error("write and fsync", &self.temp, e))
    }
}

impl FileSink for PieceWriter {
    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let take = bytes.len().min(WRITE_PIECE_BYTES - self.pending.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == WRITE_PIECE_BYTES {
                self.flush_piece()?;
            }
        }
        Ok(())
    }
}

impl DirFiles {
    /// Writes a temporary file for `name` with `write`, then renames it into place and syncs the directory; on any
    /// error the temporary file is removed and nothing changes under `name`.
    fn replace_with(
        &self,
        name: &str,
        write: impl FnOnce(PieceWriter) -> Result<()>,
    ) -> Result<()> {
        let path = self.root.join(name);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create directory", &dir, e))?;
        let temp = path.with_extension("tmp");
        let writer = PieceWriter::create(temp.clone())?;
        if let Err(e) = write(writer) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        std::fs::rename(&temp, &path).map_err(|e| io_error("rename", &path, e))?;
        sync_dir(&dir)
    }
}

impl CheckpointFiles for DirFiles {
    fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.replace_with(name, |mut writer| {
            writer.write(bytes)?;
            writer.finish(&[])
        })
    }

    fn write_durably_streamed(
        &self,
        name: &str,
        header_bytes: usize,
        produce: &mut Produce<'_>,
    ) -> Result<()> {
        self.replace_with(name, |mut writer| {
            // Room for the header, written last.
            writer.write(&vec![0; header_bytes])?;
            let header = produce(&mut writer)?;
            assert_eq!(
                header.len(),
                header_bytes,
                "the header has its announced size"
            );
            writer.finish(&header)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes after an 8-byte header, produced in uneven pieces.
    fn produce_into(sink: &mut dyn FileSink, len: usize) -> Result<Vec<u8>> {
        let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        for piece in body.chunks(10_007) {
            sink.write(piece)?;
        }
        Ok(b"HEADER!!".to_vec())
    }

    fn expected(len: usize) -> Vec<u8> {
        let mut file = b"HEADER!!".to_vec();
        file.extend((0..len).map(|i| (i * 7 % 251) as u8));
        file
    }

    #[test]
    fn streamed_files_are_whole_in_directories_and_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = DirFiles::new(dir.path()).unwrap();
        let in_memory = MemFiles::new();
        for files in [&on_disk as &dyn CheckpointFiles, &in_memory] {
            for len in [
                0,
                1,
                WRITE_PIECE_BYTES - 8,
                WRITE_PIECE_BYTES,
                3 * WRITE_PIECE_BYTES + 5,
            ] {
                let name = format!("snapshots/f{len}.snap");
                files
                    .write_durably_streamed(&name, 8, &mut |sink| produce_into(sink, len))
                    .unwrap();
                let read = files.read(&name).unwrap().unwrap();
                assert_eq!(read.bytes(), &expected(len)[..], "{len} bytes");
            }
        }
        assert!(
            std::fs::read_dir(dir.path().join("snapshots"))
                .unwrap()
                .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")),
            "no temporary file is left"
        );
    }

    #[test]
    fn a_producer_that_fails_leaves_the_previous_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = DirFiles::new(dir.path()).unwrap();
        files.write_durably("snapshots/a.snap", b"old").unwrap();
        let failed = files.write_durably_streamed("snapshots/a.snap", 8, &mut |sink| {
            sink.write(&[1; 100_000])?;
            Err(Error::InvalidOptions("the producer gave up".into()))
        });
        assert!(
            matches!(failed, Err(Error::InvalidOptions(_))),
            "{failed:?}"
        );
        assert_eq!(
            files.read("snapshots/a.snap").unwrap().unwrap().bytes(),
            b"old"
        );
        assert_eq!(
            files.list("snapshots").unwrap(),
            vec!["snapshots/a.snap".to_string()]
        );
    }
}
