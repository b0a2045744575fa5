//! `verify`: checks a data directory without changing it, and names the file and offset of every fault.
//!
//! 1. **The log**, read-only under the directory's lock: the meta file; every live segment's header and records
//!    (checksums, LSNs, salt, groups); every DATA record's operation; and where the log ends. A cleanly closed log
//!    ends where nothing was written, or where stale bytes of a recycled segment begin (their LSN is not the
//!    position's). A record there whose checksum (or kind, flags, length) fails, or an incomplete last group, is a
//!    torn write left by a crash or damage: the next open would discard it silently, so verify reports it.
//! 2. **The checkpoint**: the manifest and every snapshot it names (checksums and structure, as an open reads them).
//! 3. **Indexes against documents**, only if 1 and 2 found nothing (the database is then opened normally): every
//!    document collection's indexes and its history's (`Snapshot::check_indexes`). Typed collections are listed as
//!    skipped: their key functions live in the application.
//!
//! Memory: the log's segments are read one at a time; each snapshot file is read whole.

use std::fs::{File, OpenOptions};
use std::path::Path;

use serde::Serialize;

use crate::Options;
use crate::checkpoint;
use crate::db::{Database, MANIFEST_FILE, decode_data};
use crate::documents::{self, CATALOG};
use crate::error::{Error, Result};
use crate::wal::SegmentName;
use crate::wal::format::{Meta, RecordError, RecordKind, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::wal::scan::{ScanEnd, scan_segment};
use crate::wal::storage::{file_name, parse_file_name};

/// One fault: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// The file (relative to the data directory), or `collection <name>` for an index disagreement.
    pub file: String,
    /// Byte offset in the file (0 when the fault is not at a byte).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// What `verify` checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Every fault found; empty means the directory verified.
    pub faults: Vec<Fault>,
    /// Live log segments read.
    pub segments: usize,
    /// Records in complete groups.
    pub records: u64,
    /// Complete groups.
    pub groups: u64,
    /// Bytes of log read.
    pub log_bytes: u64,
    /// Snapshot files checked.
    pub snapshots: usize,
    /// Bytes of snapshots read.
    pub snapshot_bytes: u64,
    /// Collections whose indexes were checked against their documents, with their document counts.
    pub indexes_checked: Vec<(String, usize)>,
    /// What was not checked, and why.
    pub skipped: Vec<String>,
}

impl VerifyReport {
    fn fault(&mut self, file: impl Into<String>, offset: u64, reason: impl Into<String>) {
        self.faults.push(Fault {
            file: file.into(),
            offset,
            reason: reason.into(),
        });
    }
}

/// Progress of a verification: bytes read so far out of the total.
pub type VerifyProgress<'a> = &'a mut dyn FnMut(u64, u64);

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("read", path, e))
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("flock", &path, e)),
    }
}

/// Verifies the data directory `dir` (see the module docs). Faults are in the report, not errors.
///
/// # Errors
/// [`Error::Locked`] if another handle has the directory open; [`Error::InvalidOptions`] if `dir` holds no
/// database; I/O errors reading it.
pub fn verify(dir: &Path, progress: VerifyProgress<'_>) -> Result<VerifyReport> {
    if !dir.join("LOCK").exists() || !dir.join("wal").is_dir() {
        return Err(Error::InvalidOptions(format!(
            "{} holds no collection-store database",
            dir.display()
        )));
    }
    let mut report = VerifyReport::default();
    let held = lock(dir)?;
    let salt = verify_log(dir, &mut report, progress)?;
    if let Some(salt) = salt {
        verify_checkpoint(dir, salt, &mut report, progress)?;
    }
    drop(held);
    if report.faults.is_empty() {
        verify_indexes(dir, &mut report)?;
    } else {
        report.skipped.push(
            "indexes against documents: the files have faults, so the database was not opened"
                .into(),
        );
    }
    Ok(report)
}

/// Checks the log; returns its salt if the meta file is readable.
fn verify_log(
    dir: &Path,
    report: &mut VerifyReport,
    progress: VerifyProgress<'_>,
) -> Result<Option<u64>> {
    let wal = dir.join("wal");
    let meta = match Meta::decode(&read(&wal.join("meta"))?) {
        Ok(meta) => meta,
        Err(e) => {
            report.fault(
                "wal/meta",
                0,
                format!("the log's meta file does not validate: {e:?}"),
            );
            return Ok(None);
        }
    };
    let mut bases: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(&wal).map_err(|e| Error::io("read directory", &wal, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", &wal, e))?;
        if let Some(SegmentName::Live(base)) = entry.file_name().to_str().and_then(parse_file_name)
            && base >= meta.start_lsn - meta.start_lsn % meta.segment_size_bytes
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let total = bases.len() as u64 * meta.segment_size_bytes;
    let mut expected_base = meta.start_lsn - meta.start_lsn % meta.segment_size_bytes;
    let mut ended = false;
    for (i, &base) in bases.iter().enumerate() {
        let name = format!("wal/{}", file_name(SegmentName::Live(base)));
        if base != expected_base {
            report.fault(
                &name,
                0,
                format!("the log has a gap: segment {expected_base:#x} is missing"),
            );
            break;
        }
        expected_base += meta.segment_size_bytes;
        let bytes = read(&dir.join(&name))?;
        report.segments += 1;
        report.log_bytes += bytes.len() as u64;
        progress((i as u64 + 1) * meta.segment_size_bytes, total);
        if bytes.len() as u64 != meta.segment_size_bytes {
            report.fault(
                &name,
                bytes.len() as u64,
                format!(
                    "the segment is {} bytes, not {}",
                    bytes.len(),
                    meta.segment_size_bytes
                ),
            );
            continue;
        }
        match SegmentHeader::decode(&bytes[..SEGMENT_HEADER_BYTES as usize]) {
            Ok(h) if h.salt == meta.salt && h.base_lsn == base => {}
            Ok(_) => {
                report.fault(
                    &name,
                    0,
                    "the segment header belongs to another log or position",
                );
                continue;
            }
            Err(e) => {
                report.fault(
                    &name,
                    0,
                    format!("the segment header does not validate: {e:?}"),
                );
                continue;
            }
        }
        if ended {
            // Past the end of the log: a segment prepared in advance (zeros, or stale bytes of a recycled one).
            continue;
        }
        let scan = scan_segment(&bytes, base, meta.salt);
        report.records += scan.records;
        report.groups += scan.groups;
        verify_data_records(&bytes, base, meta.salt, scan.valid_end, &name, report);
        if let ScanEnd::Open { offset, error } = scan.end {
            ended = true;
            match error {
                // Where nothing was written, or stale bytes of an earlier lap: the log's normal end.
                RecordError::Unwritten | RecordError::LsnMismatch | RecordError::SaltMismatch
                    if scan.valid_end == offset => {}
                _ if scan.valid_end < offset => report.fault(
                    &name,
                    scan.valid_end,
                    format!(
                        "the last group is incomplete (its record at offset {offset}: {error}): a torn write from a \
                         crash, which the next open discards, or damage"
                    ),
                ),
                _ => report.fault(
                    &name,
                    offset,
                    format!(
                        "the record at this offset does not validate ({error}) and the log ends there: damage, or a \
                         torn write from a crash, which the next open discards"
                    ),
                ),
            }
        }
    }
    Ok(Some(meta.salt))
}

/// Checks that every DATA record of a segment's valid part is a well-formed operation.
fn verify_data_records(
    bytes: &[u8],
    base: u64,
    salt: u64,
    valid_end: u64,
    name: &str,
    report: &mut VerifyReport,
) {
    let mut pos = SEGMENT_HEADER_BYTES;
    while pos < valid_end {
        let Ok(record) = crate::wal::format::parse_record(bytes, pos, base, salt) else {
            break;
        };
        if record.kind == RecordKind::Data && decode_data(record.payload).is_none() {
            report.fault(name, pos, "a DATA record holds no well-formed operation");
        }
        pos += record.span_bytes;
    }
}

fn verify_checkpoint(
    dir: &Path,
    salt: u64,
    report: &mut VerifyReport,
    progress: VerifyProgress<'_>,
) -> Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        report.skipped.push("checkpoint: none was taken".into());
        return Ok(());
    }
    let manifest = match checkpoint::open_manifest(MANIFEST_FILE, salt, &read(&manifest_path)?) {
        Ok(m) => m,
        Err(e) => {
            push_error(report, MANIFEST_FILE, e);
            return Ok(());
        }
    };
    let files: Vec<&str> = manifest
        .collections
        .iter()
        .filter_map(|c| c.file.as_deref())
        .collect();
    for (i, file) in files.iter().enumerate() {
        let path = dir.join(file);
        if !path.exists() {
            report.fault(
                *file,
                0,
                "the manifest names this snapshot, but it is missing",
            );
            continue;
        }
        let bytes = read(&path)?;
        report.snapshots += 1;
        report.snapshot_bytes += bytes.len() as u64;
        progress(i as u64 + 1, files.len() as u64);
        // Snapshot archives are read in place: 16-byte alignment as an open maps them.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(&bytes);
        if let Err(e) = checkpoint::open_snapshot(file, salt, &aligned) {
            push_error(report, file, e);
        }
    }
    Ok(())
}

fn push_error(report: &mut VerifyReport, file: &str, error: Error) {
    match error {
        Error::Corruption {
            file,
            offset,
            reason,
        } => report.fault(file, offset, reason),
        other => report.fault(file, 0, other.to_string()),
    }
}

fn verify_indexes(dir: &Path, report: &mut VerifyReport) -> Result<()> {
    let db = Database::open(
        dir,
        Options {
            auto_checkpoint: None,
            ..Options::default()
        },
    )?;
    let names = db.document_collections()?;
    let snapshot = db.read();
    for name in &names {
        let docs = db.documents(name)?;
        let snapshot = db.read();
        match snapshot.check_indexes(&docs.collection()) {
            Ok(()) => report
                .indexes_checked
                .push((name.clone(), snapshot.count(&docs.collection()))),
            Err(e) => report.fault(format!("collection {name}"), 0, e.to_string()),
        }
        if docs.definition().audit {
            let definition = docs.definition();
            let history_name =
                documents::history_name(definition.storage.as_deref().unwrap_or(name));
            let history = db.collection(&history_name, documents::history_spec())?;
            let snapshot = db.read();
            match snapshot.check_indexes(&history) {
                Ok(()) => report
                    .indexes_checked
                    .push((history_name, snapshot.count(&history))),
                Err(e) => report.fault(format!("collection {history_name}"), 0, e.to_string()),
            }
        }
    }
    drop(snapshot);
    for typed in db.collection_names() {
        let documents_side = names.contains(&typed)
            || typed == CATALOG
            || typed.ends_with(documents::HISTORY_SUFFIX)
            || typed.starts_with(documents::STORAGE_PREFIX)
            || typed.starts_with(documents::STAGED_PREFIX);
        if !documents_side {
            report.skipped.push(format!(
                "collection {typed}: a typed collection (its key functions live in the application)"
            ));
        }
    }
    Ok(())
}
