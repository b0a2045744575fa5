//! Online backup: a consistent copy of a database as of one log position, made while writers keep going.
//!
//! The copy is the last checkpoint's files (manifest and snapshots) plus the log from its start up to the *cut*,
//! the end of the last group appended when the backup began (every commit logged before it, none after). It is
//! written under `<dest>.partial` and renamed to `dest` once every file and directory is synced, so `dest` either
//! does not exist or opens as a normal database holding exactly the state committed at the cut.
//!
//! Invariants: the database's checkpoint lock is held for the whole copy, so no checkpoint replaces a snapshot or
//! truncates the log meanwhile; the log's bytes below the cut never change once written (the log only appends),
//! and bytes from the cut on are zero in the copy (`Wal::copy_to`), so the copy's recovery ends exactly at the cut.
//! The cut is synced in the source before the copy is made, so the source can never lose, in a crash, a commit
//! the backup holds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::db::{Database, MANIFEST_FILE};
use crate::error::{Error, Result};
use crate::wal::{Durability, FileStorage};

/// What a backup copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupInfo {
    /// The log position the copy holds everything before.
    pub cut_lsn: u64,
    /// The sequence number of the last commit in the copy.
    pub seq: u64,
    /// Bytes written (log and checkpoint files).
    pub bytes: u64,
    /// Checkpoint files copied (manifest and snapshots).
    pub checkpoint_files: usize,
    /// How long it took.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }
}

fn io(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::io(op, path, e)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync directory", dir, e))
}

/// Writes `bytes` as the new file `name` under `dir` and syncs it (the directory's entry is synced by the caller:
/// the copy becomes visible only by the final rename). Returns the file's folder.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    let folder = path.parent().unwrap_or(dir).to_path_buf();
    std::fs::create_dir_all(&folder).map_err(|e| io("create directory", &folder, e))?;
    let mut file = std::fs::File::create(&path).map_err(|e| io("create", &path, e))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| io("write", &path, e))?;
    file.sync_all().map_err(|e| io("fsync", &path, e))?;
    Ok(folder)
}

impl Database {
    /// Copies the database into the new directory `dest`, consistent as of one log position, while writers go on
    /// (checkpoints wait until it is done). `dest` must not exist, or be an empty directory.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if `dest` holds anything; I/O errors (then `dest` is not created; a leftover
    /// `<dest>.partial` is removed by the next backup to `dest`).
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupInfo> {
        let started = Instant::now();
        let dest = dest.as_ref();
        let name = dest.file_name().ok_or_else(|| {
            Error::InvalidOptions(format!("{} names no directory", dest.display()))
        })?;
        match std::fs::read_dir(dest) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::InvalidOptions(format!(
                        "the backup destination {} exists and is not empty",
                        dest.display()
                    )));
                }
                std::fs::remove_dir(dest).map_err(|e| io("remove empty directory", dest, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read directory", dest, e)),
        }
        let mut partial_name = name.to_os_string();
        partial_name.push(".partial");
        let partial: PathBuf = dest.with_file_name(partial_name);
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| io("remove", &partial, e))?;
        }
        std::fs::create_dir_all(&partial).map_err(|e| io("create directory", &partial, e))?;
        let copied = self.copy_into(&partial);
        let info = match copied {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        sync_dir(&partial)?;
        std::fs::rename(&partial, dest).map_err(|e| io("rename", dest, e))?;
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
        Ok(BackupInfo {
            duration: started.elapsed(),
            ..info
        })
    }

    fn copy_into(&self, dir: &Path) -> Result<BackupInfo> {
        let inner = &self.inner;
        // No checkpoint may replace snapshot files or truncate the log until the copy is made.
        let manifest = inner.last_checkpoint.lock();
        let (cut_lsn, seq) = {
            let state = inner.commit.lock();
            inner.wal.check_poison()?;
            (inner.wal.end_lsn(), state.latest.seq)
        };
        inner.wal.wait_durable(cut_lsn, Durability::Sync)?;
        let mut bytes = {
            let log = FileStorage::open(dir.join("wal"))?;
            inner.wal.copy_to(&log, cut_lsn)?
        };
        let mut checkpoint_files = 0;
        if let Some(manifest_bytes) = inner.files.read(MANIFEST_FILE)? {
            let mut folders = std::collections::BTreeSet::new();
            for file in manifest
                .collections
                .iter()
                .filter_map(|c| c.file.as_deref())
            {
                let snapshot = inner.files.read(file)?.ok_or_else(|| Error::Corruption {
                    file: file.into(),
                    offset: 0,
                    reason: "the last checkpoint's manifest names it, but it is missing".into(),
                })?;
                folders.insert(write_file(dir, file, snapshot.bytes())?);
                bytes += snapshot.bytes().len() as u64;
                checkpoint_files += 1;
            }
            for folder in folders {
                sync_dir(&folder)?;
            }
            // The manifest last: it names the snapshots just written.
            write_file(dir, MANIFEST_FILE, manifest_bytes.bytes())?;
            bytes += manifest_bytes.bytes().len() as u64;
            checkpoint_files += 1;
        }
        drop(manifest);
        Ok(BackupInfo {
            cut_lsn,
            seq,
            bytes,
            checkpoint_files,
            duration: Duration::ZERO,
        })
    }
}
