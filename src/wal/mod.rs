//! The write-ahead log: segmented, preallocated, memory-mapped, with lock-free LSN reservation, group commit,
//! per-append durability, and crash recovery.
//!
//! The log sees payloads as bytes and knows nothing of what they mean.
//!
//! # Write path
//! 1. [`reserve`]: one `fetch_add` on the tail gives the writer its LSN range (and, for exactly one writer per
//!    segment, the job of sealing it).
//! 2. [`staging`]: the writer copies its records into the staging ring, header word last.
//! 3. The flusher (whoever needs data on disk first, under the flush lock) advances the completion watermark,
//!    `pwrite`s the completed range into its segment file and zeroes the ring behind it: the *written* watermark.
//! 4. The group-commit leader (one at a time; the others wait on a condition variable) `fdatasync`s and advances the *durable* watermark, serving every
//!    commit below it with one sync (group commit).
//! 5. Optionally, a lone writer that will wait for `Sync` starts the device's transfer early
//!    ([`Wal::start_writeback`]) and does its own work while it runs.
//!
//! Invariants: `durable_lsn <= written_lsn <= completed <= tail`; a segment is fully synced before any byte is
//! written into the next one (so recovery can tell a torn tail from corruption); any failed write or sync
//! poisons the log.

pub mod format;
pub mod reserve;
pub mod scan;
pub mod staging;
pub mod storage;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

pub use format::RecordKind;
use format::{
    FLAG_GROUP_CONTINUES, Meta, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader,
    encode_pad_header, encode_record_header, parse_record, record_span_bytes, span_of_word,
};
use reserve::Tail;
use staging::Staging;
pub use storage::{FileStorage, LogStorage, MemStorage, SegmentFile, SegmentName};

use crate::error::{Error, Result};

/// How far an append must get before it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Durability {
    /// In the log's memory only: lost if the process dies before a later flush. For caches and tests.
    None,
    /// Handed to the operating system: survives the process being killed, not power loss.
    Os,
    /// On stable storage (fdatasync; `F_FULLFSYNC` on Apple): survives power loss.
    #[default]
    Sync,
}

/// What recovery does with damage it cannot explain as a torn tail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Refuse to open, with [`Error::Corruption`] naming the file and offset.
    #[default]
    Strict,
    /// Keep the longest valid prefix and discard everything after the damage (reported in [`RecoveryReport`]).
    Salvage,
}

pub use crate::progress::{ProgressFn, RecoveryProgress, RecoveryStage};

/// Options for [`Wal::open`].
#[derive(Clone)]
pub struct WalOptions {
    /// Size of each segment file, fixed when the log is created (a power of two from 4 KiB to 1 GiB). Later
    /// opens use the size stored in the log.
    pub segment_size_bytes: u64,
    /// Size of the staging ring (a multiple of 8, at least 64 KiB). The largest append is the smaller of this and
    /// a segment minus its header.
    pub staging_buffer_bytes: u64,
    /// Retired segments kept for reuse instead of being deleted.
    pub max_free_segments: usize,
    /// What to do about corruption.
    pub recovery: RecoveryMode,
    /// Called as recovery progresses: [`RecoveryStage::LogScan`], one report per segment scanned.
    pub progress: Option<ProgressFn>,
}

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default staging ring: 8 MiB.
pub const DEFAULT_STAGING_BYTES: u64 = 8 << 20;
/// Smallest segment size accepted.
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;
/// Smallest staging ring accepted.
pub const MIN_STAGING_BYTES: u64 = 64 << 10;

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_size_bytes: DEFAULT_SEGMENT_BYTES,
            staging_buffer_bytes: DEFAULT_STAGING_BYTES,
            max_free_segments: 2,
            recovery: RecoveryMode::Strict,
            progress: None,
        }
    }
}

impl std::fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalOptions")
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("staging_buffer_bytes", &self.staging_buffer_bytes)
            .field("max_free_segments", &self.max_free_segments)
            .field("recovery", &self.recovery)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// First LSN of the log.
    pub start_lsn: u64,
    /// Where the next append goes.
    pub end_lsn: u64,
    /// Records recovered (in complete groups).
    pub records: u64,
    /// Groups recovered.
    pub groups: u64,
    /// Segments scanned.
    pub segments: usize,
    /// Records after the end of the log that validated but were discarded (unsynced writes that landed out of
    /// order, or, with salvage, everything after the damage). They were zeroed on disk.
    pub discarded_records: u64,
    /// With [`RecoveryMode::Salvage`]: the damage that was cut away.
    pub salvaged: Option<String>,
    /// Whether the log was created by this open.
    pub created: bool,
    /// Time the scan took.
    pub duration: Duration,
}

/// Counters, for observing group commit and throughput.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Calls to `append` / `append_group`.
    pub appends: u64,
    /// Records appended (PAD excluded).
    pub records: u64,
    /// Bytes reserved by appends, headers and alignment included.
    pub bytes_appended: u64,
    /// Appends that asked for [`Durability::Sync`].
    pub sync_requests: u64,
    /// `fdatasync` calls made.
    pub syncs: u64,
    /// `pwrite` calls made.
    pub writes: u64,
    /// Bytes written to segment files.
    pub bytes_written: u64,
    /// Segments created (zero-filled) or recycled.
    pub segments_prepared: u64,
    /// Of those, segments recycled.
    pub segments_recycled: u64,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    bytes_appended: AtomicU64,
    sync_requests: AtomicU64,
    syncs: AtomicU64,
    writes: AtomicU64,
    bytes_written: AtomicU64,
    segments_prepared: AtomicU64,
    segments_recycled: AtomicU64,
}

/// A live segment as the log holds it. The log's own wrapper (never held by a storage backend), so that its
/// `Arc` count says exactly whether any reader still holds the segment.
struct LiveSegment {
    file: Arc<dyn SegmentFile>,
}

impl std::ops::Deref for LiveSegment {
    type Target = dyn SegmentFile;

    fn deref(&self) -> &Self::Target {
        &*self.file
    }
}

/// The live segments and the pool of free ones; shared with the background preparer thread.
struct Segments {
    storage: Arc<dyn LogStorage>,
    salt: u64,
    segment_size_bytes: u64,
    live: RwLock<BTreeMap<u64, Arc<LiveSegment>>>,
    /// First LSN of the log. Moved forward only while holding `free`, which `get_or_prepare` also holds, so a late
    /// preparation request can never re-create a segment that truncation just removed.
    start_lsn: AtomicU64,
    /// Free segment ids; the lock also serializes preparation.
    free: Mutex<FreePool>,
    counters: Arc<Counters>,
}

struct FreePool {
    ids: Vec<u64>,
    next_id: u64,
}

impl Segments {
    fn get(&self, index: u64) -> Option<Arc<LiveSegment>> {
        self.live.read().get(&index).cloned()
    }

    /// The live segment `index`, creating it (or recycling a free one) if it does not exist yet.
    fn get_or_prepare(&self, index: u64) -> Result<Arc<LiveSegment>> {
        if let Some(seg) = self.get(index) {
            return Ok(seg);
        }
        let mut pool = self.free.lock();
        if let Some(seg) = self.get(index) {
            return Ok(seg);
        }
        let base = index * self.segment_size_bytes;
        if base < self.start_lsn.load(Ordering::Acquire) {
            return Err(Error::InvalidLsn {
                lsn: base,
                reason: "segment is below the start of the log (truncated)",
            });
        }
        let header = SegmentHeader {
            salt: self.salt,
            base_lsn: base,
            segment_size_bytes: self.segment_size_bytes,
        };
        if let Some(id) = pool.ids.pop() {
            self.storage.recycle_segment(id, base, &header.encode())?;
            self.counters
                .segments_recycled
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.storage
                .create_segment(base, self.segment_size_bytes, &header.encode())?;
        }
        self.counters
            .segments_prepared
            .fetch_add(1, Ordering::Relaxed);
        let seg = Arc::new(LiveSegment {
            file: self.storage.open_segment(base)?,
        });
        self.live.write().insert(index, Arc::clone(&seg));
        Ok(seg)
    }
}

struct FlushState {
    /// The segment the flusher last wrote into, and whether it has writes not yet synced.
    current: Option<(u64, Arc<LiveSegment>)>,
}

/// A write-ahead log. `Send + Sync`: share it between threads with `Arc`.
pub struct Wal {
    segments: Arc<Segments>,
    tail: Tail,
    staging: Staging,
    salt: u64,
    segment_size_bytes: u64,
    max_group_bytes: u64,
    completed_lsn: AtomicU64,
    written_lsn: AtomicU64,
    durable_lsn: AtomicU64,
    flush: Mutex<FlushState>,
    /// Whether a group-commit leader is syncing; waiters sleep on `sync_done`.
    sync_leader: Mutex<bool>,
    sync_done: Condvar,
    poisoned: AtomicBool,
    poison_cause: Mutex<Option<String>>,
    counters: Arc<Counters>,
    max_free_segments: usize,
    prepare_tx: Option<crossbeam_channel::Sender<u64>>,
    preparer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("start_lsn", &self.start_lsn())
            .field("written_lsn", &self.written_lsn())
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in directory `dir`, locks it, and recovers it.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle holds the directory; [`Error::Corruption`] for damage that is not a torn
    /// tail (unless [`RecoveryMode::Salvage`]); [`Error::InvalidOptions`]; I/O errors.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Self, RecoveryReport)> {
        Self::open_with_storage(Arc::new(FileStorage::open(dir)?), options)
    }

    /// A log in memory: the same API, nothing on disk. Durability levels above `None` only order operations.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`].
    pub fn open_in_memory(options: WalOptions) -> Result<Self> {
        Ok(Self::open_with_storage(Arc::new(MemStorage::new()), options)?.0)
    }

    /// Opens the log kept in `storage` (files, memory, or a power-loss simulator).
    ///
    /// # Errors
    /// As [`Wal::open`].
    pub fn open_with_storage(
        storage: Arc<dyn LogStorage>,
        options: WalOptions,
    ) -> Result<(Self, RecoveryReport)> {
        let started = Instant::now();
        validate_options(&options)?;
        let (meta, created) = match storage.read_meta()? {
            Some(bytes) => {
                let meta = Meta::decode(&bytes).map_err(|e| match e {
                    format::HeaderError::Version(found) => Error::FormatVersion {
                        file: "meta".into(),
                        found,
                        expected: format::FORMAT_VERSION,
                    },
                    e => Error::Corruption {
                        file: "meta".into(),
                        offset: 0,
                        reason: e.to_string(),
                    },
                })?;
                let size = meta.segment_size_bytes;
                if !(MIN_SEGMENT_BYTES..=reserve::MAX_SEGMENT_BYTES).contains(&size)
                    || !size.is_power_of_two()
                    || meta.start_lsn % size != 0
                {
                    return Err(Error::Corruption {
                        file: "meta".into(),
                        offset: 0,
                        reason: format!(
                            "segment size {size} or start LSN {} out of range",
                            meta.start_lsn
                        ),
                    });
                }
                (meta, false)
            }
            None => {
                let mut salt_bytes = [0u8; 8];
                getrandom::fill(&mut salt_bytes).map_err(|e| {
                    Error::io("getrandom", "salt", std::io::Error::other(e.to_string()))
                })?;
                let meta = Meta {
                    salt: u64::from_le_bytes(salt_bytes),
                    segment_size_bytes: options.segment_size_bytes,
                    start_lsn: 0,
                };
                storage.write_meta(&meta.encode())?;
                (meta, true)
            }
        };
        let size = meta.segment_size_bytes;
        let counters = Arc::new(Counters::default());

        // Sort what is there: free segments, segments before the start (a truncation whose deletes a crash lost),
        // and the live sequence.
        let mut free_ids = Vec::new();
        let mut live_bases = Vec::new();
        for name in storage.list_segments()? {
            match name {
                SegmentName::Free(id) => free_ids.push(id),
                SegmentName::Live(base) if base < meta.start_lsn => storage.remove_segment(name)?,
                SegmentName::Live(base) => live_bases.push(base),
            }
        }
        let mut files = Vec::with_capacity(live_bases.len());
        for &base in &live_bases {
            let file = storage.open_segment(base)?;
            if file.len_bytes() != size {
                return Err(Error::Corruption {
                    file: file.describe(),
                    offset: 0,
                    reason: format!("segment is {} bytes, expected {size}", file.len_bytes()),
                });
            }
            files.push(file);
        }
        let views: Vec<(u64, &[u8])> = live_bases
            .iter()
            .zip(&files)
            .map(|(&b, f)| (b, f.slice(0, size)))
            .collect();
        let total = views.len();
        let progress = options.progress.clone();
        let plan = scan::plan_recovery(
            &views,
            meta.salt,
            size,
            meta.start_lsn,
            options.recovery == RecoveryMode::Salvage,
            |i| {
                crate::progress::report(
                    progress.as_ref(),
                    RecoveryStage::LogScan,
                    i as u64 + 1,
                    total as u64,
                );
            },
        )
        .map_err(|c| Error::Corruption {
            file: files.get(c.segment_index).map_or_else(
                || storage.describe(SegmentName::Live(live_bases[c.segment_index])),
                |f| f.describe(),
            ),
            offset: c.offset,
            reason: c.reason,
        })?;
        drop(views);

        // Carry out the plan: zero leftovers past the end, drop segments salvage cut away.
        for &(index, from, to) in &plan.zero_ranges {
            let file = &files[index];
            let zeros = vec![0u8; usize::try_from(to - from).expect("range fits usize")];
            file.write_at(from, &zeros)
                .map_err(|e| Error::io("zero torn tail", file.describe(), e))?;
            file.sync()
                .map_err(|e| Error::io("fdatasync", file.describe(), e))?;
        }
        if let Some(from) = plan.drop_segments_from {
            for &base in &live_bases[from..] {
                storage.remove_segment(SegmentName::Live(base))?;
            }
            files.truncate(from);
            live_bases.truncate(from);
        }
        // What recovery found is durable only once synced: a process that died after writing, before syncing,
        // left its bytes in the page cache, and a Sync commit or a checkpoint after this open must not stand on
        // bytes a power loss would take back (`durable_lsn` starts at the end found).
        for file in &files {
            file.sync()
                .map_err(|e| Error::io("fdatasync", file.describe(), e))?;
        }
        let live: BTreeMap<u64, Arc<LiveSegment>> = live_bases
            .iter()
            .zip(files)
            .map(|(&base, file)| (base / size, Arc::new(LiveSegment { file })))
            .collect();

        let staging_bytes = options.staging_buffer_bytes;
        let max_group_bytes = staging_bytes.min(size - SEGMENT_HEADER_BYTES);
        let next_free_id = free_ids.iter().max().map_or(0, |m| m + 1);
        let segments = Arc::new(Segments {
            storage,
            salt: meta.salt,
            segment_size_bytes: size,
            live: RwLock::new(live),
            start_lsn: AtomicU64::new(meta.start_lsn),
            free: Mutex::new(FreePool {
                ids: free_ids,
                next_id: next_free_id,
            }),
            counters: Arc::clone(&counters),
        });
        let (prepare_tx, prepare_rx) = crossbeam_channel::unbounded::<u64>();
        let preparer = {
            let segments = Arc::clone(&segments);
            std::thread::Builder::new()
                .name("wal-prepare".into())
                .spawn(move || {
                    for index in prepare_rx {
                        // Errors are reported by the flusher when it needs the segment (and retries it).
                        let _ = segments.get_or_prepare(index);
                    }
                })
                .map_err(|e| Error::io("spawn thread", "wal-prepare", e))?
        };
        let end = plan.end_lsn;
        let wal = Self {
            tail: Tail::new(end, size, SEGMENT_HEADER_BYTES),
            staging: Staging::new(staging_bytes),
            salt: meta.salt,
            segment_size_bytes: size,
            max_group_bytes,
            completed_lsn: AtomicU64::new(end),
            written_lsn: AtomicU64::new(end),
            durable_lsn: AtomicU64::new(end),
            flush: Mutex::new(FlushState { current: None }),
            sync_leader: Mutex::new(false),
            sync_done: Condvar::new(),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            counters,
            max_free_segments: options.max_free_segments,
            prepare_tx: Some(prepare_tx),
            preparer: Some(preparer),
            segments,
        };
        wal.request_prepare(end / size);
        let report = RecoveryReport {
            start_lsn: meta.start_lsn,
            end_lsn: end,
            records: plan.records,
            groups: plan.groups,
            segments: total,
            discarded_records: plan.discarded_records,
            salvaged: plan.salvaged.map(|c| {
                format!(
                    "segment {} offset {}: {}",
                    c.segment_index, c.offset, c.reason
                )
            }),
            created,
            duration: started.elapsed(),
        };
        Ok((wal, report))
    }

    /// Appends one record. Returns its LSN once it is as durable as `durability` asks.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`], [`Error::Poisoned`], I/O errors (which poison the log).
    pub fn append(&self, kind: RecordKind, payload: &[u8], durability: Durability) -> Result<u64> {
        Ok(self.append_group(&[(kind, payload)], durability)?.first_lsn)
    }

    /// Appends records as one all-or-nothing group: after a crash, recovery returns all of them or none.
    ///
    /// # Errors
    /// As [`Wal::append`]; an empty group or a PAD record is [`Error::InvalidOptions`].
    pub fn append_group(
        &self,
        records: &[(RecordKind, &[u8])],
        durability: Durability,
    ) -> Result<AppendedGroup> {
        self.append_group_stamped(records, durability, &[])
    }

    /// As [`Wal::append_group`], and writes the group's end LSN (`u64`, little-endian) into the payloads at each
    /// `(record index, byte offset)` of `end_lsn_at` before they are checksummed and copied, so that a record can
    /// name the group it belongs to. Only the stamped records are copied to be patched.
    ///
    /// # Errors
    /// As [`Wal::append_group`]; a stamp outside its record is [`Error::InvalidOptions`].
    pub fn append_group_stamped(
        &self,
        records: &[(RecordKind, &[u8])],
        durability: Durability,
        end_lsn_at: &[(usize, usize)],
    ) -> Result<AppendedGroup> {
        self.check_poison()?;
        if records.is_empty() || records.iter().any(|(k, _)| *k == RecordKind::Pad) {
            return Err(Error::InvalidOptions(
                "a group needs at least one record and no PAD records".into(),
            ));
        }
        if let Some((record, offset)) = end_lsn_at.iter().find(|(record, offset)| {
            records
                .get(*record)
                .is_none_or(|(_, payload)| offset.saturating_add(8) > payload.len())
        }) {
            return Err(Error::InvalidOptions(format!(
                "an LSN stamp at offset {offset} of record {record} lies outside the group's payloads"
            )));
        }
        let mut total = 0u64;
        for (_, payload) in records {
            let len = payload.len() as u64;
            if len > u64::from(u32::MAX) {
                return Err(Error::RecordTooLarge {
                    len_bytes: len,
                    max_bytes: self.max_group_bytes,
                });
            }
            total = total.saturating_add(record_span_bytes(len));
        }
        if total > self.max_group_bytes {
            return Err(Error::RecordTooLarge {
                len_bytes: total,
                max_bytes: self.max_group_bytes,
            });
        }
        let reservation = self.tail.reserve(total).map_err(|_| {
            self.poison(&Error::LsnExhausted);
            Error::LsnExhausted
        })?;
        if let Some((lsn, len)) = reservation.seal {
            self.wait_for_space(lsn + len)?;
            if len >= RECORD_HEADER_BYTES {
                let header = encode_pad_header(lsn, self.salt, len);
                // SAFETY: the roller owns [lsn, lsn + len) (reserve) and waited for ring space.
                unsafe { self.staging.write(lsn + 8, &header[8..]) };
                self.staging.publish(
                    lsn,
                    u64::from_le_bytes(header[0..8].try_into().expect("8 bytes")),
                );
            }
        }
        let lsn = reservation.lsn;
        self.wait_for_space(lsn + total)?;
        // The stamped records' payloads, patched with the group's end LSN (known once reserved).
        let mut stamped: Vec<(usize, Vec<u8>)> = Vec::new();
        for &(record, offset) in end_lsn_at {
            let position = match stamped.iter().position(|(r, _)| *r == record) {
                Some(position) => position,
                None => {
                    stamped.push((record, records[record].1.to_vec()));
                    stamped.len() - 1
                }
            };
            stamped[position].1[offset..offset + 8].copy_from_slice(&(lsn + total).to_le_bytes());
        }
        let mut at = lsn;
        let mut first_word = 0;
        for (i, (kind, payload)) in records.iter().enumerate() {
            let payload: &[u8] = stamped
                .iter()
                .find(|(r, _)| *r == i)
                .map_or(payload, |(_, patched)| patched);
            let flags = if i + 1 < records.len() {
                FLAG_GROUP_CONTINUES
            } else {
                0
            };
            let header = encode_record_header(at, self.salt, *kind, flags, payload);
            // SAFETY: this writer owns [lsn, lsn + total) (reserve) and waited for ring space.
            unsafe {
                self.staging.write(at + 8, &header[8..]);
                self.staging.write(at + RECORD_HEADER_BYTES, payload);
            }
            let word = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
            if i == 0 {
                first_word = word;
            } else {
                // Later records' words are plain bytes here; the first word's Release store publishes them all.
                // SAFETY: as above.
                unsafe { self.staging.write(at, &header[0..8]) };
            }
            at += record_span_bytes(payload.len() as u64);
        }
        debug_assert_eq!(at, lsn + total);
        self.staging.publish(lsn, first_word);
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.counters
            .bytes_appended
            .fetch_add(total, Ordering::Relaxed);
        let end_lsn = lsn + total;
        self.wait_durable(end_lsn, durability)?;
        Ok(AppendedGroup {
            first_lsn: lsn,
            end_lsn,
        })
    }

    /// Copies the log up to `cut_lsn` (the end of an appended group, at most [`Wal::end_lsn`]) into the empty storage
    /// `dest`: the meta record, then each live segment from the log's start up to the cut, with every byte from the
    /// cut on left zero, so a log opened on `dest` recovers exactly the records below the cut. Appends may go on
    /// meanwhile: the records below the cut are written (this flushes them first) and never change. Every segment
    /// is synced. Returns the bytes copied. A truncation running at the same time can remove a segment being
    /// copied: callers that need the whole range keep truncation out (the database holds its checkpoint lock).
    ///
    /// # Errors
    /// [`Error::InvalidLsn`] for a cut past the end; [`Error::InvalidOptions`] if `dest` already holds a log; I/O
    /// errors.
    pub fn copy_to(&self, dest: &dyn LogStorage, cut_lsn: u64) -> Result<u64> {
        if cut_lsn > self.end_lsn() || cut_lsn < self.start_lsn() {
            return Err(Error::InvalidLsn {
                lsn: cut_lsn,
                reason: "a copy's cut lies between the log's start and its end",
            });
        }
        if dest.read_meta()?.is_some() || !dest.list_segments()?.is_empty() {
            return Err(Error::InvalidOptions(
                "the destination of a log copy must be empty".into(),
            ));
        }
        self.flush_to(cut_lsn)?;
        let storage = &self.segments.storage;
        let meta = storage
            .read_meta()?
            .ok_or_else(|| Error::InvalidOptions("the log has no meta record to copy".into()))?;
        let size = self.segments.segment_size_bytes;
        let start = self.start_lsn();
        let mut copied = meta.len() as u64;
        let mut index = start / size;
        while index * size < cut_lsn {
            let base = index * size;
            let segment = self.segments.get(index).ok_or(Error::InvalidLsn {
                lsn: base,
                reason: "a segment below the cut is not live (truncated during the copy?)",
            })?;
            // The segment's bytes below the cut (header included), written once; the rest zero.
            let to = (cut_lsn - base).min(size);
            dest.create_segment_with(base, size, segment.slice(0, to))?;
            copied += to;
            index += 1;
        }
        dest.write_meta(&meta)?;
        Ok(copied)
    }

    /// Waits until everything below `end_lsn` (the end of an earlier append made with [`Durability::None`]) is as
    /// durable as `durability` asks. This lets a caller append under its own lock and wait for durability outside
    /// it, so that concurrent callers share syncs (group commit).
    ///
    /// # Errors
    /// [`Error::Poisoned`], I/O errors.
    pub fn wait_durable(&self, end_lsn: u64, durability: Durability) -> Result<()> {
        match durability {
            Durability::None => Ok(()),
            Durability::Os => self.flush_to(end_lsn),
            Durability::Sync => {
                self.counters.sync_requests.fetch_add(1, Ordering::Relaxed);
                self.flush_to(end_lsn)?;
                self.sync_to(end_lsn)
            }
        }
    }

    /// Writes what has been appended so far to the OS and asks the device to start storing it, without waiting:
    /// a caller that appended with [`Durability::None`] and will [`Wal::wait_durable`] with [`Durability::Sync`]
    /// calls this first, does its own work, and finds the transfer under way when the sync comes (the work hides
    /// behind the device's latency instead of adding to it). Best effort, and only for a writer on its own: if a
    /// sync is in flight or another thread is flushing, it returns at once, because then the records will be
    /// batched with others into the next sync (group commit), which one early write per commit would undo.
    /// Durability still comes only from `wait_durable`; the start hint's own errors are ignored because the sync
    /// reports them again.
    ///
    /// # Errors
    /// [`Error::Poisoned`]; a failed `pwrite` (which poisons the log, as in any flush).
    pub fn start_writeback(&self) -> Result<()> {
        self.check_poison()?;
        if self.sync_leader.try_lock().is_none_or(|leader| *leader) {
            return Ok(());
        }
        let Some(mut state) = self.flush.try_lock() else {
            return Ok(());
        };
        let from = self.written_lsn.load(Ordering::Acquire);
        self.flush_locked(&mut state)?;
        let to = self.written_lsn.load(Ordering::Acquire);
        let size = self.segment_size_bytes;
        let mut pos = from;
        while pos < to {
            let index = pos / size;
            let piece_end = to.min((index + 1) * size);
            if let Some(file) = self.segments.get(index) {
                let offset = pos - index * size;
                // A hint only: write-back errors are not consumed by it, and the sync that follows reports them.
                let _ = file.start_writeback(offset, piece_end - pos);
            }
            pos = piece_end;
        }
        Ok(())
    }

    /// Hands everything appended so far to the OS (like [`Durability::Os`] for all earlier appends).
    ///
    /// # Errors
    /// [`Error::Poisoned`], I/O errors.
    pub fn flush(&self) -> Result<()> {
        self.flush_to(self.tail.next_lsn())
    }

    /// Makes everything appended so far durable (like [`Durability::Sync`] for all earlier appends).
    ///
    /// # Errors
    /// [`Error::Poisoned`], I/O errors.
    pub fn sync(&self) -> Result<()> {
        let end = self.tail.next_lsn();
        self.flush_to(end)?;
        self.sync_to(end)
    }

    /// Removes whole segments that lie below `lsn` (their last byte is before it): for checkpoints to call once
    /// everything before `lsn` is safe elsewhere. Up to `max_free_segments` are kept for reuse; the rest are
    /// deleted. Returns the new start LSN.
    ///
    /// Readers holding records of a removed segment keep valid bytes: such a segment is deleted, never recycled.
    ///
    /// # Errors
    /// [`Error::Poisoned`], I/O errors.
    pub fn truncate_before(&self, lsn: u64) -> Result<u64> {
        self.check_poison()?;
        let size = self.segment_size_bytes;
        // Never remove the segment the flusher writes into, nor anything not yet durable.
        let limit = lsn.min(self.durable_lsn()) / size;
        let mut pool = self.segments.free.lock();
        let old_start = self.start_lsn();
        if limit <= old_start / size {
            return Ok(old_start);
        }
        let new_start = limit * size;
        let meta = Meta {
            salt: self.salt,
            segment_size_bytes: size,
            start_lsn: new_start,
        };
        self.segments
            .storage
            .write_meta(&meta.encode())
            .inspect_err(|e| self.poison(e))?;
        self.segments.start_lsn.store(new_start, Ordering::Release);
        let removed: Vec<(u64, Arc<LiveSegment>)> = {
            let mut live = self.segments.live.write();
            let keep = live.split_off(&limit);
            std::mem::replace(&mut *live, keep).into_iter().collect()
        };
        for (index, file) in removed {
            let base = index * size;
            // Only recycle a segment nobody reads: a reader's Arc keeps the mapping, and a deleted file stays valid.
            if Arc::strong_count(&file) == 1 && pool.ids.len() < self.max_free_segments {
                drop(file);
                let id = pool.next_id;
                pool.next_id += 1;
                self.segments.storage.retire_segment(base, id)?;
                pool.ids.push(id);
            } else {
                self.segments
                    .storage
                    .remove_segment(SegmentName::Live(base))?;
            }
        }
        Ok(new_start)
    }

    /// Iterates the records from `lsn` (a record's LSN, or [`Wal::start_lsn`]) up to everything appended before
    /// this call, with no copy: payloads are views of the mapped segments. PAD records are skipped.
    ///
    /// # Errors
    /// [`Error::InvalidLsn`] if `lsn` is before the start of the log or past its end; flush errors.
    pub fn iter_from(&self, lsn: u64) -> Result<WalIter> {
        self.flush()?;
        let limit = self.written_lsn();
        if lsn < self.start_lsn() {
            return Err(Error::InvalidLsn {
                lsn,
                reason: "before the start of the log (truncated)",
            });
        }
        if lsn > limit {
            return Err(Error::InvalidLsn {
                lsn,
                reason: "past the end of the log",
            });
        }
        Ok(WalIter {
            segments: Arc::clone(&self.segments),
            salt: self.salt,
            size: self.segment_size_bytes,
            pos: lsn,
            limit,
            first: true,
            current: None,
        })
    }

    /// LSN just past everything appended so far (the next append starts here or at the next segment).
    #[must_use]
    pub fn end_lsn(&self) -> u64 {
        self.tail.next_lsn()
    }

    /// The log's random salt: what ties files to this log (checkpoint files carry it too).
    #[must_use]
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// First LSN still in the log.
    #[must_use]
    pub fn start_lsn(&self) -> u64 {
        self.segments.start_lsn.load(Ordering::Acquire)
    }

    /// Everything below this LSN has been handed to the OS.
    #[must_use]
    pub fn written_lsn(&self) -> u64 {
        self.written_lsn.load(Ordering::Acquire)
    }

    /// Everything below this LSN is durable.
    #[must_use]
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn.load(Ordering::Acquire)
    }

    /// The LSN the next append would get (approximately, under concurrency).
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        self.tail.next_lsn()
    }

    /// The size of each segment.
    #[must_use]
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size_bytes
    }

    /// The largest group `append_group` accepts, headers included.
    #[must_use]
    pub fn max_group_bytes(&self) -> u64 {
        self.max_group_bytes
    }

    /// Counters since open.
    #[must_use]
    pub fn stats(&self) -> WalStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WalStats {
            appends: get(&c.appends),
            records: get(&c.records),
            bytes_appended: get(&c.bytes_appended),
            sync_requests: get(&c.sync_requests),
            syncs: get(&c.syncs),
            writes: get(&c.writes),
            bytes_written: get(&c.bytes_written),
            segments_prepared: get(&c.segments_prepared),
            segments_recycled: get(&c.segments_recycled),
        }
    }

    /// Whether an earlier failure poisoned the log.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// `Ok` unless an earlier failure poisoned the log; then [`Error::Poisoned`] with its cause.
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            let cause = self.poison_cause.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { cause });
        }
        Ok(())
    }

    fn poison(&self, error: &Error) {
        let mut cause = self.poison_cause.lock();
        if cause.is_none() {
            *cause = Some(error.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    fn request_prepare(&self, index: u64) {
        if let Some(tx) = &self.prepare_tx {
            let _ = tx.send(index);
        }
    }

    /// Waits until the ring has room for everything below `end`, flushing if nobody else is.
    fn wait_for_space(&self, end: u64) -> Result<()> {
        let capacity = self.staging.capacity_bytes();
        while end > self.written_lsn.load(Ordering::Acquire) + capacity {
            self.check_poison()?;
            {
                let mut state = self.flush.lock();
                if end > self.written_lsn.load(Ordering::Acquire) + capacity {
                    self.flush_locked(&mut state)?;
                }
            }
            if end > self.written_lsn.load(Ordering::Acquire) + capacity {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Returns once everything below `end` is written to the OS.
    fn flush_to(&self, end: u64) -> Result<()> {
        self.check_poison()?;
        while self.written_lsn.load(Ordering::Acquire) < end {
            self.check_poison()?;
            {
                let mut state = self.flush.lock();
                if self.written_lsn.load(Ordering::Acquire) < end {
                    self.flush_locked(&mut state)?;
                }
            }
            if self.written_lsn.load(Ordering::Acquire) < end {
                // An earlier writer has reserved but not finished copying; it is not blocked on us.
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Writes the completed, unwritten range to its segments. Caller holds the flush lock.
    fn flush_locked(&self, state: &mut FlushState) -> Result<()> {
        self.check_poison()?;
        let written = self.written_lsn.load(Ordering::Acquire);
        let capacity = self.staging.capacity_bytes();
        let completed = reserve::advance_completed(
            self.completed_lsn.load(Ordering::Acquire).max(written),
            written + capacity,
            self.segment_size_bytes,
            SEGMENT_HEADER_BYTES,
            RECORD_HEADER_BYTES,
            span_of_word,
            |lsn| self.staging.load(lsn),
        );
        self.completed_lsn.store(completed, Ordering::Release);
        if completed == written {
            return Ok(());
        }
        let result = self.write_range(state, written, completed);
        if let Err(e) = &result {
            self.poison(e);
        }
        result?;
        // SAFETY: [written, completed) is complete and now written; we hold the flush lock.
        unsafe { self.staging.zero(written, completed - written) };
        self.written_lsn.store(completed, Ordering::Release);
        Ok(())
    }

    fn write_range(&self, state: &mut FlushState, from: u64, to: u64) -> Result<()> {
        let size = self.segment_size_bytes;
        let mut pos = from;
        while pos < to {
            let index = pos / size;
            let segment_base = index * size;
            let piece_end = to.min(segment_base + size);
            let data_start = pos.max(segment_base + SEGMENT_HEADER_BYTES);
            if data_start < piece_end {
                let file = self.segment_for_write(state, index)?;
                let offset = data_start - segment_base;
                let mut at = offset;
                // SAFETY: [data_start, piece_end) is complete and unwritten; we hold the flush lock.
                unsafe {
                    self.staging
                        .read(data_start, piece_end - data_start, |bytes| {
                            file.write_at(at, bytes)
                                .map_err(|e| Error::io("pwrite", file.describe(), e))?;
                            at += bytes.len() as u64;
                            self.counters.writes.fetch_add(1, Ordering::Relaxed);
                            self.counters
                                .bytes_written
                                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            Ok::<(), Error>(())
                        })?;
                }
            }
            pos = piece_end;
        }
        Ok(())
    }

    /// The segment to write `index` into. Before the first write into a new segment, the previous one is synced
    /// whole: recovery relies on "data in segment N+1 implies segment N is durable".
    fn segment_for_write(&self, state: &mut FlushState, index: u64) -> Result<Arc<LiveSegment>> {
        if let Some((current, file)) = &state.current
            && *current == index
        {
            return Ok(Arc::clone(file));
        }
        if let Some((previous, file)) = state.current.take() {
            debug_assert!(previous < index);
            file.sync()
                .map_err(|e| Error::io("fdatasync", file.describe(), e))?;
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            self.durable_lsn
                .fetch_max((previous + 1) * self.segment_size_bytes, Ordering::AcqRel);
        }
        let file = self.segments.get_or_prepare(index)?;
        self.request_prepare(index + 1);
        state.current = Some((index, Arc::clone(&file)));
        Ok(file)
    }

    /// Returns once everything below `end` (already written) is durable: group commit.
    ///
    /// One caller at a time is the leader: it syncs everything written so far, advances `durable_lsn`, and wakes
    /// the waiters. The others wait on the condition variable, not on the leader's fdatasync, so the ones it
    /// covered return at once and can join the next batch.
    fn sync_to(&self, end: u64) -> Result<()> {
        let mut leader = self.sync_leader.lock();
        loop {
            self.check_poison()?;
            if self.durable_lsn.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if *leader {
                self.sync_done.wait(&mut leader);
                continue;
            }
            *leader = true;
            let result = MutexGuard::unlocked(&mut leader, || self.sync_written());
            *leader = false;
            self.sync_done.notify_all();
            result?;
        }
    }

    /// The leader's work: fdatasync every segment between the durable and the written watermark.
    fn sync_written(&self) -> Result<()> {
        let durable = self.durable_lsn.load(Ordering::Acquire);
        let target = self.written_lsn.load(Ordering::Acquire);
        if target <= durable {
            return Ok(());
        }
        let size = self.segment_size_bytes;
        for index in durable / size..=(target - 1) / size {
            let Some(file) = self.segments.get(index) else {
                continue;
            };
            if let Err(e) = file.sync() {
                let error = Error::io("fdatasync", file.describe(), e);
                self.poison(&error);
                return Err(error);
            }
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        }
        self.durable_lsn.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Hand what was appended to the OS, as a clean close should; errors have nowhere to go (the next open
        // recovers whatever made it).
        if !self.is_poisoned() {
            let _ = self.flush();
        }
        drop(self.prepare_tx.take());
        if let Some(handle) = self.preparer.take() {
            let _ = handle.join();
        }
    }
}

fn validate_options(options: &WalOptions) -> Result<()> {
    let size = options.segment_size_bytes;
    if !(MIN_SEGMENT_BYTES..=reserve::MAX_SEGMENT_BYTES).contains(&size) || !size.is_power_of_two()
    {
        return Err(Error::InvalidOptions(format!(
            "segment_size_bytes must be a power of two from {MIN_SEGMENT_BYTES} to {}, got {size}",
            reserve::MAX_SEGMENT_BYTES
        )));
    }
    let staging = options.staging_buffer_bytes;
    if staging < MIN_STAGING_BYTES || !staging.is_multiple_of(8) || staging > (1 << 32) {
        return Err(Error::InvalidOptions(format!(
            "staging_buffer_bytes must be a multiple of 8 from {MIN_STAGING_BYTES} to 4 GiB, got {staging}"
        )));
    }
    Ok(())
}

/// Where an appended group landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedGroup {
    /// LSN of the group's first record.
    pub first_lsn: u64,
    /// LSN just past the group.
    pub end_lsn: u64,
}

/// A record read from the log. Its payload is a view of the mapped segment (no copy).
#[derive(Clone)]
pub struct Record {
    segment: Arc<LiveSegment>,
    lsn: u64,
    kind: RecordKind,
    group_continues: bool,
    payload_offset: u64,
    payload_len: u64,
    /// Bytes of the segment that were written when the record was read (this record included): never written again.
    written: u64,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("lsn", &self.lsn)
            .field("kind", &self.kind)
            .field("group_continues", &self.group_continues)
            .field("payload_len", &self.payload_len)
            .finish()
    }
}

impl Record {
    /// The record's LSN.
    #[must_use]
    pub fn lsn(&self) -> u64 {
        self.lsn
    }
    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> RecordKind {
        self.kind
    }
    /// Whether the next record belongs to the same group.
    #[must_use]
    pub fn group_continues(&self) -> bool {
        self.group_continues
    }
    /// The payload, borrowed from the mapping.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        self.segment.slice(self.payload_offset, self.payload_len)
    }
    /// LSN just past this record.
    #[must_use]
    pub fn end_lsn(&self) -> u64 {
        self.lsn + record_span_bytes(self.payload_len)
    }
    /// The bytes of this record's segment from its start to the end of what was written when the record was read
    /// (this record included), as a handle that keeps them mapped for as long as it lives: they are never written
    /// again (the log only appends, and truncation deletes rather than recycles a segment someone holds), so a
    /// payload can be read in place for longer than its record. The payload is at
    /// [`Record::payload_position`] in them, and starts at a multiple of 16 there.
    #[must_use]
    pub fn written_segment(&self) -> SegmentBytes {
        SegmentBytes {
            segment: Arc::clone(&self.segment),
            len: self.written,
            base_lsn: self.lsn - (self.payload_offset - RECORD_HEADER_BYTES),
        }
    }
    /// Where the payload starts in [`Record::written_segment`].
    #[must_use]
    pub fn payload_position(&self) -> usize {
        usize::try_from(self.payload_offset).expect("segments fit in memory")
    }
}

/// A written prefix of one segment, kept mapped while the handle lives (see [`Record::written_segment`]).
#[derive(Clone)]
pub struct SegmentBytes {
    segment: Arc<LiveSegment>,
    len: u64,
    base_lsn: u64,
}

impl SegmentBytes {
    /// The bytes, borrowed from the mapping.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.segment.slice(0, self.len)
    }
    /// The first LSN of the segment (which segment this is).
    #[must_use]
    pub fn base_lsn(&self) -> u64 {
        self.base_lsn
    }
}

impl std::fmt::Debug for SegmentBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBytes")
            .field("base_lsn", &self.base_lsn)
            .field("len", &self.len)
            .finish()
    }
}

/// Iterator over records, from [`Wal::iter_from`]. Yields an error (and then stops) if a record fails validation.
pub struct WalIter {
    segments: Arc<Segments>,
    salt: u64,
    size: u64,
    pos: u64,
    limit: u64,
    first: bool,
    current: Option<(u64, Arc<LiveSegment>)>,
}

impl Iterator for WalIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos >= self.limit {
                return None;
            }
            let (index, offset) = (self.pos / self.size, self.pos % self.size);
            if offset < SEGMENT_HEADER_BYTES {
                self.pos += SEGMENT_HEADER_BYTES - offset;
                continue;
            }
            if self.size - offset < RECORD_HEADER_BYTES {
                self.pos += self.size - offset;
                continue;
            }
            let file = match &self.current {
                Some((i, f)) if *i == index => Arc::clone(f),
                _ => match self.segments.get(index) {
                    Some(f) => {
                        self.current = Some((index, Arc::clone(&f)));
                        f
                    }
                    None => {
                        self.pos = self.limit;
                        return Some(Err(Error::InvalidLsn {
                            lsn: index * self.size,
                            reason: "segment was truncated",
                        }));
                    }
                },
            };
            // Only the written prefix of this segment is stable (and only it is viewed).
            let visible = (self.limit - index * self.size).min(self.size);
            let bytes = file.slice(0, visible);
            match parse_record(bytes, offset, index * self.size, self.salt) {
                Ok(rec) => {
                    self.first = false;
                    self.pos += rec.span_bytes;
                    if rec.kind == RecordKind::Pad {
                        continue;
                    }
                    return Some(Ok(Record {
                        lsn: rec.lsn,
                        kind: rec.kind,
                        group_continues: rec.flags & FLAG_GROUP_CONTINUES != 0,
                        payload_offset: offset + RECORD_HEADER_BYTES,
                        payload_len: rec.payload.len() as u64,
                        written: visible,
                        segment: file,
                    }));
                }
                Err(e) => {
                    let lsn = self.pos;
                    self.pos = self.limit;
                    if self.first {
                        return Some(Err(Error::InvalidLsn {
                            lsn,
                            reason: "no record starts here",
                        }));
                    }
                    return Some(Err(Error::Corruption {
                        file: file.describe(),
                        offset,
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }
}
