//! The database: opens and locks a data directory, recovers collections from the last checkpoint and the log after
//! it, binds them to their Rust types, publishes committed versions for readers, and checkpoints.
//!
//! Lock order (never the reverse): `last_checkpoint`, then the catalog, then the commit lock, then the small
//! leaf locks (in-doubt list, committed 2PC set, listeners, registry).
//!
//! Publication (the invariant readers rely on): versions are published in commit order, each with one atomic
//! pointer swap; a version is published only after the commits it contains are as durable as the strongest
//! durability any of them asked for, so no reader sees what a crash could take back from a `Sync` commit.

use std::any::TypeId;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::publish::{Publisher, Versioned};
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use crate::checkpoint::files::{CheckpointFiles, DirFiles, MemFiles};
use crate::checkpoint::{self, Manifest, ManifestCollection};
use crate::collection::{
    self, ApplyError, Document, IndexDef, IndexKey, PrimaryKeyFn, Spec, Store, View, Write,
};
use crate::error::{Error, Result};
use crate::progress::{self, ProgressFn, RecoveryStage};
use crate::txn::{Op, Participant, Stamp, Transaction, Vote};
use crate::wal::{Durability, RecordKind, RecoveryMode, RecoveryReport, Wal, WalOptions};

/// Options for [`Database::open`].
#[derive(Clone)]
pub struct Options {
    /// Durability of commits that do not choose their own.
    pub durability: Durability,
    /// Keep everything in memory; touch no disk (the directory is ignored).
    pub in_memory: bool,
    /// Size of each WAL segment (see [`WalOptions::segment_size_bytes`]).
    pub segment_size_bytes: u64,
    /// Largest archived document accepted.
    pub max_document_bytes: usize,
    /// What recovery does about corruption in the log.
    pub recovery: RecoveryMode,
    /// When to checkpoint in the background (`None`: only when [`Database::checkpoint`] is called).
    pub auto_checkpoint: Option<AutoCheckpoint>,
    /// Called as recovery progresses at open, through every [`RecoveryStage`]: the log's scan, the checkpoint's
    /// snapshots, the replay of the log after it, and the fold into the collections.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("in_memory", &self.in_memory)
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("max_document_bytes", &self.max_document_bytes)
            .field("recovery", &self.recovery)
            .field("auto_checkpoint", &self.auto_checkpoint)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Options {
    /// The log's options for these.
    fn wal_options(&self) -> WalOptions {
        WalOptions {
            segment_size_bytes: self.segment_size_bytes,
            recovery: self.recovery,
            progress: self.progress.clone(),
            ..WalOptions::default()
        }
    }
}

/// When a background thread checkpoints: once the log has grown by `wal_bytes` since the last checkpoint, or once
/// `interval` has passed with anything committed since. Bounds both the log's size and recovery time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoCheckpoint {
    /// Log bytes since the last checkpoint that start one.
    pub wal_bytes: u64,
    /// Age of the last checkpoint that starts one (if anything was committed since).
    pub interval: Duration,
}

impl Default for AutoCheckpoint {
    fn default() -> Self {
        Self {
            wal_bytes: 256 << 20,
            interval: Duration::from_secs(300),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            in_memory: false,
            segment_size_bytes: WalOptions::default().segment_size_bytes,
            max_document_bytes: 1 << 20,
            recovery: RecoveryMode::Strict,
            auto_checkpoint: Some(AutoCheckpoint::default()),
            progress: None,
        }
    }
}

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit's sequence number (for a transaction that wrote nothing: its snapshot's).
    pub seq: u64,
    /// LSN just past the commit's log records (`None` for a transaction that wrote nothing).
    pub end_lsn: Option<u64>,
    /// Participants of a two-phase commit that failed to apply the (durable) COMMIT decision: the transaction is
    /// committed; they must learn it again (for a [`Database`] participant: [`Database::resolve_in_doubt`] after it
    /// reopens, with [`Database::decision`] of this database).
    pub participant_failures: Vec<(String, String)>,
}

/// The sequence numbers of the live [`DbVersion`]s (every snapshot, transaction and the published and newest
/// versions hold one): the lowest is the horizon below which superseded versions can be pruned.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Mutex<std::collections::BTreeMap<u64, usize>>,
}

impl Registry {
    fn acquire(&self, seq: u64) {
        *self.live.lock().entry(seq).or_insert(0) += 1;
    }

    fn release(&self, seq: u64) {
        let mut live = self.live.lock();
        let count = live
            .get_mut(&seq)
            .expect("released a sequence number never acquired");
        *count -= 1;
        if *count == 0 {
            live.remove(&seq);
        }
    }

    /// The lowest sequence number a live version reads at.
    fn horizon(&self) -> u64 {
        self.live.lock().keys().next().copied().unwrap_or(u64::MAX)
    }
}

/// A collection in one version of the database: its store (shared by every version since the collection was bound)
/// and its number of documents at this version.
#[derive(Clone, Debug)]
pub(crate) struct CollectionState {
    store: Arc<Store>,
    count: usize,
    /// The secondary indexes `store` maintains, in its order (empty until the collection is bound). Writes made
    /// with other definitions are refused at commit ([`Error::IndexesChanged`]), so a store is only ever changed
    /// with its own.
    defs: Arc<[IndexDef]>,
}

impl CollectionState {
    fn empty() -> Self {
        Self {
            store: Arc::new(Store::new(&[])),
            count: 0,
            defs: Arc::from(Vec::new()),
        }
    }
}

/// What a checkpoint did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Sequence number of the last commit it contains.
    pub seq: u64,
    /// Log position of the cut: recovery replays from here.
    pub cut_lsn: u64,
    /// The log's first LSN after truncation (segments wholly before the cut are gone).
    pub wal_start_lsn: u64,
    /// Bytes of snapshot and manifest files written.
    pub bytes_written: u64,
    /// Collections now read from the snapshot this checkpoint wrote of them (re-based: see
    /// [`Database::checkpoint`]).
    pub rebased: usize,
    /// Stores replaced by re-bases that snapshots still read (freed by a later checkpoint once none does).
    pub stores_retained: usize,
}

/// One version of the whole database: a sequence number and every collection's state, by slot. While it lives, its
/// sequence number is registered, so everything it sees stays readable.
#[derive(Debug)]
pub(crate) struct DbVersion {
    pub(crate) seq: u64,
    collections: Vec<CollectionState>,
    registry: Arc<Registry>,
}

impl Versioned for DbVersion {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for DbVersion {
    fn drop(&mut self) {
        self.registry.release(self.seq);
    }
}

impl DbVersion {
    fn new(seq: u64, collections: Vec<CollectionState>, registry: &Arc<Registry>) -> Self {
        registry.acquire(seq);
        Self {
            seq,
            collections,
            registry: Arc::clone(registry),
        }
    }

    /// Collection `slot` as this version sees it.
    pub(crate) fn collection(&self, slot: u32) -> Option<View<'_>> {
        let state = self.collections.get(slot as usize)?;
        // SAFETY: `self` registered `self.seq` at construction and releases it only when dropped, which the borrow
        // of `self` prevents for the view's lifetime.
        Some(unsafe { View::new(&state.store, self.seq, state.count) })
    }

    fn store(&self, slot: u32) -> Option<&Store> {
        self.collections.get(slot as usize).map(|c| &*c.store)
    }

    /// The index definitions the collection in `slot` has at this version.
    pub(crate) fn defs(&self, slot: u32) -> Option<&Arc<[IndexDef]>> {
        self.collections.get(slot as usize).map(|c| &c.defs)
    }
}

struct Binding {
    type_id: TypeId,
    type_name: &'static str,
    defs: Arc<[IndexDef]>,
    ids: Arc<AtomicU64>,
    primary_key: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

struct Slot {
    name: Arc<str>,
    /// The document type the log says this collection holds (see [`type_label`]).
    declared_type: Option<String>,
    binding: Option<Binding>,
}

#[derive(Default)]
struct Catalog {
    slots: Vec<Slot>,
    by_name: HashMap<Arc<str>, u32>,
}

impl Catalog {
    /// The slot of collection `name`, made (untyped, undeclared) if it has none yet.
    fn slot_for(&mut self, name: &str) -> u32 {
        if let Some(&slot) = self.by_name.get(name) {
            return slot;
        }
        let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 collections");
        let name: Arc<str> = name.into();
        self.slots.push(Slot {
            name: Arc::clone(&name),
            declared_type: None,
            binding: None,
        });
        self.by_name.insert(name, slot);
        slot
    }
}

pub(crate) struct CommitState {
    /// The newest committed version (possibly not yet durable or published): the next commit builds on it.
    pub(crate) latest: Arc<DbVersion>,
    /// End LSN of the newest `Sync` commit: commits after it publish only once it is durable.
    last_sync_end: u64,
}

pub(crate) struct Inner {
    /// Unique per open database in this process.
    pub(crate) id: u64,
    pub(crate) wal: Wal,
    pub(crate) options: Options,
    pub(crate) commit: Arc<Mutex<CommitState>>,
    registry: Arc<Registry>,
    /// Where checkpoint files live.
    pub(crate) files: Arc<dyn CheckpointFiles>,
    /// The manifest of the last checkpoint (locked for the whole of a checkpoint: one runs at a time).
    pub(crate) last_checkpoint: Mutex<Manifest>,
    /// Whether checkpoint files outlive this handle (not so for `open_with_storage`, whose files are in memory
    /// while its log may be reopened: a checkpoint there would truncate the log for nothing).
    checkpoints_kept: bool,
    /// The last checkpoint's cut (for the checkpointer's policy).
    last_cut_lsn: AtomicU64,
    /// Nudges the checkpointer when the log has grown past its policy (`None`: no checkpointer).
    checkpoint_wake: Option<(crossbeam_channel::Sender<()>, u64)>,
    /// Why the last background checkpoint failed, if it did.
    background_error: Mutex<Option<String>>,
    /// Stores that re-bases replaced, kept until nothing else holds them ([`Inner::free_retired`]): a store can
    /// hold millions of entries, and freeing it must cost no commit and no reader its latency.
    retired: Mutex<Vec<Arc<Store>>>,
    /// Prepared transactions whose decision was not in the log at open (participant role): commits are refused
    /// until they are resolved.
    in_doubt: Mutex<Vec<InDoubt>>,
    /// Transactions this database coordinated and committed with 2PC (for participants asking the decision).
    committed_2pc: Mutex<std::collections::HashSet<u64>>,
    /// Transactions this database coordinated that were aborted at open, whose participants are still to be told.
    presumed_aborted: Mutex<Vec<InDoubt>>,
    /// The published version; its state is the committed changes not yet delivered to listeners, by sequence.
    published: Publisher<DbVersion, PendingChanges>,
    listeners: Mutex<Vec<Listener>>,
    has_listeners: std::sync::atomic::AtomicBool,
    catalog: RwLock<Catalog>,
    /// The document collections opened in this process, by name (see [`crate::documents`]).
    pub(crate) documents: Mutex<HashMap<Arc<str>, Arc<crate::documents::Shared>>>,
    recovery: RecoveryReport,
    // Held for the life of the database: the flock on `LOCK`.
    _lock: Option<File>,
}

/// An open database. Cheap to clone; all clones share one state. `Send + Sync`. Dropping the last clone stops the
/// background checkpointer (waiting for a checkpoint it is writing), then closes the database.
#[derive(Clone)]
pub struct Database {
    // Dropped first: the last handle stops the checkpointer before `inner` can go.
    _checkpointer: Option<Arc<Checkpointer>>,
    pub(crate) inner: Arc<Inner>,
}

/// The background checkpoint thread of one database: it holds only a `Weak` of the database, and is stopped and
/// joined when the last [`Database`] handle drops.
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    wake: crossbeam_channel::Sender<()>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.wake.try_send(());
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// The checkpointer's loop: wake on a nudge from a commit or on a tick, checkpoint when the policy says so.
fn run_checkpointer(
    inner: std::sync::Weak<Inner>,
    wake: &crossbeam_channel::Receiver<()>,
    stop: &std::sync::atomic::AtomicBool,
    policy: AutoCheckpoint,
) {
    let tick = policy.interval.min(Duration::from_secs(1));
    let mut last = std::time::Instant::now();
    let mut last_purge = std::time::Instant::now();
    loop {
        let _ = wake.recv_timeout(tick);
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        let behind = inner.wal.end_lsn().saturating_sub(
            inner
                .last_cut_lsn
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let due = behind >= policy.wal_bytes || (behind > 0 && last.elapsed() >= policy.interval);
        inner.free_retired();
        if !due && last_purge.elapsed() >= policy.interval {
            // Expired documents go even when nothing is written (their commit then makes a checkpoint due).
            let db = Database {
                _checkpointer: None,
                inner: Arc::clone(&inner),
            };
            if let Err(e) = db.purge_all_expired() {
                *inner.background_error.lock() = Some(e.to_string());
            }
            last_purge = std::time::Instant::now();
        }
        if due {
            // Expired documents go first, so the snapshots do not carry them.
            let db = Database {
                _checkpointer: None,
                inner: Arc::clone(&inner),
            };
            let outcome = db.purge_all_expired().and_then(|_| inner.checkpoint());
            last_purge = std::time::Instant::now();
            *inner.background_error.lock() = outcome.err().map(|e| e.to_string());
            last = std::time::Instant::now();
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("seq", &self.inner.published.seq())
            .finish_non_exhaustive()
    }
}

/// A committed write, untyped, on its way to listeners.
pub(crate) struct RawChange {
    seq: u64,
    slot: u32,
    id: u64,
    doc: Option<collection::DocBytes>,
}

type PendingChanges = std::collections::BTreeMap<u64, Vec<RawChange>>;

struct Listener {
    slot: u32,
    /// Sends the change; false once the receiver is gone.
    deliver: Box<dyn Fn(&RawChange) -> bool + Send>,
}

/// A committed change to one document of a collection of `T`, delivered to subscribers in commit order.
pub struct Change<T: Document> {
    seq: u64,
    id: u64,
    doc: Option<collection::DocBytes>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Document> std::fmt::Debug for Change<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .field("removed", &self.doc.is_none())
            .finish()
    }
}

impl<T: Document> Change<T> {
    /// Sequence number of the commit.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The document's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The new document, or `None` if the commit removed it.
    #[must_use]
    pub fn document(&self) -> Option<&T::Archived> {
        self.doc.as_deref().map(collection::archived::<T>)
    }
}

/// Source of [`Inner::id`].
static NEXT_DATABASE_ID: AtomicU64 = AtomicU64::new(1);

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
/// Declares the document type of a collection (payload: the type's label).
const OP_DECLARE: u8 = 3;

/// The label stored for a document type: `std::any::type_name` without module paths, so that moving a type between
/// modules keeps its collections readable while a different type is refused. (Bytecheck alone cannot tell apart two
/// types whose archives happen to be valid for each other.)
#[must_use]
pub fn type_label<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut token_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(token_start);
            continue;
        }
        out.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            token_start = out.len();
        }
    }
    out
}

impl Database {
    /// Opens (creating if needed) the database in `dir`, locks it, and replays its log.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle holds the directory; log recovery errors; I/O errors.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        let wal_options = options.wal_options();
        if options.in_memory {
            let wal = Wal::open_in_memory(wal_options)?;
            let files = Arc::new(MemFiles::new());
            return Self::with_wal(wal, RecoveryReport::default(), options, None, files, true);
        }
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("flock", &lock_path, e)),
        }
        let (wal, report) = Wal::open(dir.join("wal"), wal_options)?;
        let files = Arc::new(DirFiles::new(dir)?);
        Self::with_wal(wal, report, options, Some(lock), files, true)
    }

    /// Opens the database whose log lives in `storage` (for example [`crate::wal::MemStorage::simulated`], to
    /// test crash recovery). No directory lock is taken: the storage is this handle's alone. It has nowhere to keep
    /// checkpoint files across reopens, so it does not checkpoint ([`Database::checkpoint`] is refused): use
    /// [`Database::open_with`] for that.
    ///
    /// # Errors
    /// Log recovery errors.
    pub fn open_with_storage(
        storage: Arc<dyn crate::wal::LogStorage>,
        options: Options,
    ) -> Result<Self> {
        Self::open_storage(storage, Arc::new(MemFiles::new()), options, false)
    }

    /// Opens the database whose log lives in `storage` and whose checkpoint files live in `files` (for example
    /// [`MemFiles::simulated`], to test crashes during checkpoints).
    ///
    /// # Errors
    /// Log recovery errors; checkpoint files that do not validate.
    pub fn open_with(
        storage: Arc<dyn crate::wal::LogStorage>,
        files: Arc<dyn CheckpointFiles>,
        options: Options,
    ) -> Result<Self> {
        Self::open_storage(storage, files, options, true)
    }

    fn open_storage(
        storage: Arc<dyn crate::wal::LogStorage>,
        files: Arc<dyn CheckpointFiles>,
        options: Options,
        checkpoints_kept: bool,
    ) -> Result<Self> {
        let wal_options = options.wal_options();
        let (wal, report) = Wal::open_with_storage(storage, wal_options)?;
        Self::with_wal(wal, report, options, None, files, checkpoints_kept)
    }

    fn with_wal(
        wal: Wal,
        recovery: RecoveryReport,
        options: Options,
        lock: Option<File>,
        files: Arc<dyn CheckpointFiles>,
        checkpoints_kept: bool,
    ) -> Result<Self> {
        let mut catalog = Catalog::default();
        let manifest = read_manifest(&*files, wal.salt())?.unwrap_or_default();
        let progress = options.progress.as_ref();
        let mut replayed = load_checkpoint(&*files, wal.salt(), &manifest, &mut catalog, progress)?;
        replay(
            &wal,
            &mut catalog,
            &mut replayed,
            manifest.cut_lsn,
            progress,
        )?;
        remove_unreferenced_snapshots(&*files, &manifest)?;
        // Presumed abort: a transaction this database coordinated and prepared, with no decision in the log, is
        // aborted now; its participants are told through `recover_participants`.
        let (presumed_aborted, in_doubt): (Vec<InDoubt>, Vec<InDoubt>) =
            std::mem::take(&mut replayed.in_doubt)
                .into_iter()
                .partition(|t| t.coordinator);
        for transaction in &presumed_aborted {
            let group = wal.append_group(
                &[(RecordKind::Abort, &transaction.txid.to_le_bytes())],
                Durability::None,
            )?;
            wal.wait_durable(group.end_lsn, Durability::Sync)?;
        }
        replayed.in_doubt = in_doubt;
        let registry = Arc::new(Registry::default());
        let version = Arc::new(DbVersion::new(
            replayed.seq,
            std::mem::take(&mut replayed.collections),
            &registry,
        ));
        let policy = options.auto_checkpoint.filter(|_| checkpoints_kept);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let cut_lsn = manifest.cut_lsn;
        let inner = Arc::new(Inner {
            checkpoints_kept,
            last_cut_lsn: AtomicU64::new(cut_lsn),
            checkpoint_wake: policy.map(|p| (wake_tx.clone(), p.wal_bytes)),
            background_error: Mutex::new(None),
            retired: Mutex::new(Vec::new()),
            id: NEXT_DATABASE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            wal,
            options,
            registry,
            published: Publisher::new(Arc::clone(&version), PendingChanges::default()),
            commit: Arc::new(Mutex::new(CommitState {
                latest: version,
                last_sync_end: 0,
            })),
            files,
            last_checkpoint: Mutex::new(manifest),
            in_doubt: Mutex::new(replayed.in_doubt),
            committed_2pc: Mutex::new(replayed.committed_2pc),
            presumed_aborted: Mutex::new(presumed_aborted),
            listeners: Mutex::new(Vec::new()),
            has_listeners: std::sync::atomic::AtomicBool::new(false),
            catalog: RwLock::new(catalog),
            documents: Mutex::new(HashMap::new()),
            recovery,
            _lock: lock,
        });
        let checkpointer = policy
            .map(|policy| -> Result<Arc<Checkpointer>> {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let weak = Arc::downgrade(&inner);
                let thread_stop = Arc::clone(&stop);
                let thread = std::thread::Builder::new()
                    .name("cstore-checkpoint".into())
                    .spawn(move || run_checkpointer(weak, &wake_rx, &thread_stop, policy))
                    .map_err(|e| Error::io("spawn checkpoint thread", "", e))?;
                Ok(Arc::new(Checkpointer {
                    stop,
                    wake: wake_tx,
                    thread: Mutex::new(Some(thread)),
                }))
            })
            .transpose()?;
        Ok(Self {
            _checkpointer: checkpointer,
            inner,
        })
    }

    /// What the log's recovery found at open.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The log (for statistics and tests).
    #[must_use]
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Opens collection `name` holding `T`, creating it if it does not exist. The first open in a process binds
    /// the name to `T` and builds the indexes of `spec` (validating every recovered document as a `T` once);
    /// later opens with the same `T` return the same collection (and their `spec` is ignored).
    ///
    /// # Errors
    /// [`Error::WrongType`] if the name is bound to another type or its documents do not validate as `T`;
    /// [`Error::UniqueViolation`] if recovered documents break a unique index of `spec`.
    pub fn collection<T: Document>(&self, name: &str, spec: Spec<T>) -> Result<Collection<T>> {
        let mut catalog = self.inner.catalog.write();
        let requested = std::any::type_name::<T>();
        if let Some(&slot) = catalog.by_name.get(name)
            && let Some(binding) = &catalog.slots[slot as usize].binding
        {
            if binding.type_id != TypeId::of::<T>() {
                return Err(Error::WrongType {
                    collection: name.into(),
                    found: binding.type_name.into(),
                    requested: requested.into(),
                });
            }
            return Ok(Collection::from_binding(
                &self.inner,
                slot,
                &catalog.slots[slot as usize].name,
                binding,
            ));
        }
        let defs: Arc<[IndexDef]> = spec.indexes.into();
        // Bind under the commit lock, once every commit in flight is published, so the new slot cannot be lost by a
        // publication of a version built before it.
        let mut commit = self.inner.commit.lock();
        self.inner.wait_all_published(&commit)?;
        let slot = catalog.slot_for(name);
        let label = type_label::<T>();
        if let Some(declared) = &catalog.slots[slot as usize].declared_type
            && *declared != label
        {
            return Err(Error::WrongType {
                collection: name.into(),
                found: declared.clone(),
                requested: label,
            });
        }
        let empty = Store::new(&[]);
        let stored = commit.latest.store(slot).unwrap_or(&empty);
        let (indexed, count) = stored
            .rebuilt(&defs, &collection::validate::<T>)
            .map_err(|e| apply_error(name, Some(requested), e))?;
        let next_id = stored.next_id();
        // Declared only once the documents validated and the indexes built, so a refused binding logs nothing.
        if catalog.slots[slot as usize].declared_type.is_none() {
            let declare = encode_raw_op(OP_DECLARE, name, 0, label.as_bytes());
            let seq = commit.latest.seq.to_le_bytes();
            let group = self.inner.wal.append_group(
                &[(RecordKind::Data, &declare), (RecordKind::Commit, &seq)],
                Durability::None,
            )?;
            commit.last_sync_end = group.end_lsn;
            self.inner
                .wal
                .wait_durable(group.end_lsn, Durability::Sync)?;
            catalog.slots[slot as usize].declared_type = Some(label);
        }
        self.inner.replace_collection(
            &mut commit,
            slot,
            CollectionState {
                store: Arc::new(indexed),
                count,
                defs: Arc::clone(&defs),
            },
        );
        let binding = Binding {
            type_id: TypeId::of::<T>(),
            type_name: requested,
            defs,
            ids: Arc::new(AtomicU64::new(next_id)),
            primary_key: spec
                .primary_key
                .map(|f| Arc::new(f) as Arc<dyn std::any::Any + Send + Sync>),
        };
        let slot_entry = &mut catalog.slots[slot as usize];
        slot_entry.binding = Some(binding);
        let binding = slot_entry.binding.as_ref().expect("just bound");
        Ok(Collection::from_binding(
            &self.inner,
            slot,
            &slot_entry.name,
            binding,
        ))
    }

    /// Replaces the secondary indexes of the bound collection `collection` with `defs`, built from its newest
    /// documents under the commit lock (writers wait; readers do not), and returns the handle that writes with
    /// them. Snapshots taken before keep the indexes they had. A transaction that wrote to the collection through
    /// an older handle fails at commit with [`Error::IndexesChanged`].
    ///
    /// # Errors
    /// [`Error::UniqueViolation`] if the documents break a new unique index (nothing changes then);
    /// [`Error::UnknownCollection`] for a handle of another database; [`Error::InDoubt`].
    pub(crate) fn reindex<T: Document>(
        &self,
        collection: &Collection<T>,
        defs: Vec<IndexDef>,
    ) -> Result<Collection<T>> {
        collection.check_owner(self)?;
        let mut catalog = self.inner.catalog.write();
        let mut commit = self.inner.commit.lock();
        self.inner.wait_all_published(&commit)?;
        self.inner.check_no_in_doubt()?;
        let defs: Arc<[IndexDef]> = defs.into();
        let slot = collection.slot;
        let empty = Store::new(&[]);
        let stored = commit.latest.store(slot).unwrap_or(&empty);
        let (indexed, count) = stored
            .rebuilt(&defs, &collection::validate::<T>)
            .map_err(|e| apply_error(&collection.name, None, e))?;
        Ok(self.install(
            &mut catalog,
            &mut commit,
            slot,
            CollectionState {
                store: Arc::new(indexed),
                count,
                defs,
            },
        ))
    }

    /// Makes `state` the bound collection in `slot`'s newest state, its definitions the binding's, and returns the
    /// handle that writes with them (the tail of [`Database::reindex`] and [`Database::fence`]).
    fn install<T: Document>(
        &self,
        catalog: &mut Catalog,
        commit: &mut CommitState,
        slot: u32,
        state: CollectionState,
    ) -> Collection<T> {
        let defs = Arc::clone(&state.defs);
        self.inner.replace_collection(commit, slot, state);
        let slot_entry = &mut catalog.slots[slot as usize];
        let binding = slot_entry
            .binding
            .as_mut()
            .expect("a collection with a handle is bound");
        binding.defs = defs;
        Collection::from_binding(&self.inner, slot, &slot_entry.name, binding)
    }

    /// Fences the bound collection `collection`: its index definitions are replaced by an equal copy (the store and
    /// its indexes stay), so every transaction that wrote to it through an older handle fails at commit with
    /// [`Error::IndexesChanged`]. Used when a collection's documents move or go away (rotation, drop, replace).
    ///
    /// # Errors
    /// [`Error::UnknownCollection`] for a handle of another database; a poisoned log.
    pub(crate) fn fence<T: Document>(&self, collection: &Collection<T>) -> Result<Collection<T>> {
        collection.check_owner(self)?;
        let mut catalog = self.inner.catalog.write();
        let mut commit = self.inner.commit.lock();
        self.inner.wait_all_published(&commit)?;
        let slot = collection.slot;
        let current = commit
            .latest
            .collections
            .get(slot as usize)
            .cloned()
            .unwrap_or_else(CollectionState::empty);
        let defs: Arc<[IndexDef]> = current.defs.to_vec().into();
        Ok(self.install(
            &mut catalog,
            &mut commit,
            slot,
            CollectionState { defs, ..current },
        ))
    }

    /// The last checkpoint's cut: the sequence number of its last commit and the log position replay starts at
    /// (`None` if none was taken).
    #[must_use]
    pub fn last_checkpoint(&self) -> Option<(u64, u64)> {
        let manifest = self.inner.last_checkpoint.lock();
        (manifest.cut_lsn > 0).then_some((manifest.seq, manifest.cut_lsn))
    }

    /// The names of every collection the database knows (typed and document collections, and their internal
    /// ones), in the order they were first declared.
    #[must_use]
    pub fn collection_names(&self) -> Vec<String> {
        self.inner
            .catalog
            .read()
            .slots
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }

    /// Prepared two-phase transactions this database took part in whose decision was not in its log at open. While
    /// any is pending, commits fail with [`Error::InDoubt`]: resolve each with [`Database::resolve_in_doubt`].
    #[must_use]
    pub fn in_doubt(&self) -> Vec<InDoubt> {
        self.inner.in_doubt.lock().clone()
    }

    /// Applies the coordinator's decision for an in-doubt transaction (`commit` = what the coordinator's
    /// [`Database::decision`] says).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no such transaction is in doubt; log errors.
    pub fn resolve_in_doubt(&self, txid: u64, commit: bool) -> Result<()> {
        // The catalog before the commit lock: the order binding and checkpoints take them in.
        let catalog = self.inner.catalog.read();
        let mut state = self.inner.commit.lock();
        let mut in_doubt = self.inner.in_doubt.lock();
        let position = in_doubt
            .iter()
            .position(|t| t.txid == txid)
            .ok_or_else(|| Error::NotFound {
                collection: "in-doubt transactions".into(),
                id: txid,
            })?;
        if !commit {
            self.inner.log_abort(txid)?;
            in_doubt.remove(position);
            return Ok(());
        }
        let transaction = in_doubt.remove(position);
        drop(in_doubt);
        let mut ops = Vec::with_capacity(transaction.ops.len());
        for record in &transaction.ops {
            let op = decode_op(record.payload())
                .ok_or_else(|| corrupt_record(record, "malformed DATA payload"))?;
            let &slot = catalog
                .by_name
                .get(op.name)
                .ok_or_else(|| Error::UnknownCollection {
                    collection: op.name.into(),
                })?;
            let defs = catalog.slots[slot as usize]
                .binding
                .as_ref()
                .map_or_else(|| Arc::from(Vec::new()), |b| Arc::clone(&b.defs));
            let doc = (op.op == OP_PUT).then(|| collection::DocBytes::copy_from(op.body));
            // The logged bytes carry their stamps already.
            ops.push(Op {
                slot,
                name: op.name.into(),
                defs,
                id: op.id,
                doc,
                stamp: None,
            });
        }
        drop(catalog);
        // Prepared writes were checked at PREPARE and nothing committed since (commits were refused meanwhile).
        let decision = encode_decision(state.latest.seq + 1, txid);
        let installed = self.inner.log_and_install(
            &mut state,
            &[(RecordKind::Commit, &decision)],
            &[],
            Durability::Sync,
            &ops,
        )?;
        drop(state);
        self.inner
            .publish_after(installed, Durability::Sync, Vec::new())
            .map(|_| ())
    }

    /// Whether this database, as a two-phase-commit coordinator, committed transaction `txid`. `false` means it
    /// was aborted or never decided: presumed abort.
    #[must_use]
    pub fn decision(&self, txid: u64) -> bool {
        self.inner.committed_2pc.lock().contains(&txid)
    }

    /// Tells participants about transactions this database coordinated that were prepared but undecided when it
    /// was opened, and were therefore aborted (presumed abort): calls `abort(txid)` on each participant the
    /// PREPARE named. Returns the transaction ids. Participants not given are told at a later call.
    ///
    /// # Errors
    /// The first participant error (the others are still told).
    pub fn recover_participants(&self, participants: &[Arc<dyn Participant>]) -> Result<Vec<u64>> {
        let mut told = Vec::new();
        let mut first_error = None;
        let mut pending = self.inner.presumed_aborted.lock();
        for transaction in pending.iter_mut() {
            transaction.participants.retain(|name| {
                let Some(participant) = participants.iter().find(|p| &p.name() == name) else {
                    return true;
                };
                if let Err(e) = participant.abort(transaction.txid) {
                    first_error.get_or_insert(e);
                    return true;
                }
                false
            });
            told.push(transaction.txid);
        }
        pending.retain(|t| !t.participants.is_empty());
        first_error.map_or(Ok(told), Err)
    }

    /// Subscribes to committed changes of `collection`: each committed insert, update or removal arrives on the
    /// returned channel in commit order, once the commit is visible to readers. Drop the receiver to unsubscribe.
    ///
    /// # Errors
    /// [`Error::UnknownCollection`] for a handle of another database.
    pub fn subscribe<T: Document>(
        &self,
        collection: &Collection<T>,
    ) -> Result<crossbeam_channel::Receiver<Change<T>>> {
        collection.check_owner(self)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        // Registered under the commit lock, so a commit is either wholly before the subscription or delivered.
        let _commit = self.inner.commit.lock();
        self.inner.listeners.lock().push(Listener {
            slot: collection.slot,
            deliver: Box::new(move |c: &RawChange| {
                tx.send(Change {
                    seq: c.seq,
                    id: c.id,
                    doc: c.doc.clone(),
                    _type: PhantomData,
                })
                .is_ok()
            }),
        });
        self.inner
            .has_listeners
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(rx)
    }

    /// Superseded document and index-entry versions kept for live snapshots (and transactions) that may still read
    /// them. They are pruned at the next commit once every snapshot older than the commit that superseded them is
    /// dropped: a snapshot held for long keeps what changed since it was taken.
    #[must_use]
    pub fn retained_versions(&self) -> usize {
        let state = self.inner.commit.lock();
        state
            .latest
            .collections
            .iter()
            .map(|c| c.store.pending_garbage())
            .sum()
    }

    /// Writes a checkpoint: a consistent cut at the newest commit. Each collection's documents are written to a
    /// snapshot file (temporary file, fsync, rename, directory fsync), then the manifest naming them the same way;
    /// only then are log segments wholly before the cut recycled or deleted, and superseded snapshot files removed.
    /// Writers and readers keep going while it runs; a crash at any point leaves the previous checkpoint and the
    /// log able to recover every committed transaction. One checkpoint runs at a time.
    ///
    /// # Errors
    /// [`Error::InDoubt`] while a prepared transaction awaits its decision; [`Error::Poisoned`]; I/O errors (the
    /// previous checkpoint stays in force).
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        // Expired documents go first, so the snapshots do not carry them.
        self.purge_all_expired()?;
        self.inner.checkpoint()
    }

    /// Why the last background checkpoint failed, if it did (`None` once one succeeds again).
    #[must_use]
    pub fn background_checkpoint_error(&self) -> Option<String> {
        self.inner.background_error.lock().clone()
    }

    /// A read snapshot of the latest published version. Never blocks, and is never blocked.
    #[must_use]
    pub fn read(&self) -> Snapshot {
        Snapshot {
            version: self.inner.published.load(),
            db_id: self.inner.id,
        }
    }

    /// Begins a write transaction with the database's default durability.
    #[must_use]
    pub fn begin(&self) -> Transaction<'_> {
        self.begin_with(self.inner.options.durability)
    }

    /// Begins a write transaction whose commit waits for `durability`.
    #[must_use]
    pub fn begin_with(&self, durability: Durability) -> Transaction<'_> {
        Transaction::new(self, self.inner.published.load(), durability)
    }

    /// Inserts one document in its own transaction. Returns its id.
    ///
    /// # Errors
    /// As [`Transaction::insert`] and [`Transaction::commit`].
    pub fn insert<T: Document>(&self, collection: &Collection<T>, value: &T) -> Result<u64> {
        let mut tx = self.begin();
        let id = tx.insert(collection, value)?;
        tx.commit()?;
        Ok(id)
    }

    /// Inserts or replaces document `id` in its own transaction.
    ///
    /// # Errors
    /// As [`Transaction::put`] and [`Transaction::commit`].
    pub fn put<T: Document>(&self, collection: &Collection<T>, id: u64, value: &T) -> Result<()> {
        let mut tx = self.begin();
        tx.put(collection, id, value)?;
        tx.commit().map(|_| ())
    }

    /// Removes document `id` in its own transaction. Returns whether it existed.
    ///
    /// # Errors
    /// As [`Transaction::commit`].
    pub fn remove<T: Document>(&self, collection: &Collection<T>, id: u64) -> Result<bool> {
        let mut tx = self.begin();
        let existed = tx.remove(collection, id)?;
        tx.commit()?;
        Ok(existed)
    }
}

/// The error of a write (or, with the type `requested`, of a binding) a store refused.
fn apply_error(collection: &str, requested: Option<&str>, error: ApplyError) -> Error {
    match error {
        ApplyError::Invalid { id, reason } => Error::WrongType {
            collection: collection.into(),
            found: format!("document {id} that does not validate ({reason})"),
            requested: requested.unwrap_or("its bound type").into(),
        },
        ApplyError::Unique { index, key, holder } => Error::UniqueViolation {
            collection: collection.into(),
            index: index.to_string(),
            key,
            holder,
        },
    }
}

impl Inner {
    fn checkpoint(&self) -> Result<CheckpointInfo> {
        let inner = self;
        if !inner.checkpoints_kept {
            return Err(Error::InvalidOptions(
                "this database keeps no checkpoint files (opened with open_with_storage): use Database::open_with"
                    .into(),
            ));
        }
        let mut last = inner.last_checkpoint.lock();
        inner.free_retired();
        // The cut: the newest committed version, the log's end, and the catalog, together (the same lock order as
        // binding: catalog, then commit).
        let (version, cut_lsn, names, committed_2pc) = {
            let catalog = inner.catalog.read();
            let state = inner.commit.lock();
            inner.wal.check_poison()?;
            inner.check_no_in_doubt()?;
            // Each collection's name, declared type, and (if bound) its indexes' names and uniqueness.
            let names: Vec<CutCollection> = catalog
                .slots
                .iter()
                .map(|s| {
                    let indexes = s.binding.as_ref().map_or_else(Vec::new, |b| {
                        b.defs
                            .iter()
                            .map(|d| (d.name.to_string(), d.unique))
                            .collect()
                    });
                    (Arc::clone(&s.name), s.declared_type.clone(), indexes)
                })
                .collect();
            let mut committed: Vec<u64> = inner.committed_2pc.lock().iter().copied().collect();
            committed.sort_unstable();
            (
                Arc::clone(&state.latest),
                inner.wal.end_lsn(),
                names,
                committed,
            )
        };
        // Everything before the cut must be durable before a manifest can point past it.
        inner.wal.wait_durable(cut_lsn, Durability::Sync)?;
        let salt = inner.wal.salt();
        let mut bytes_written = 0u64;
        let mut collections = Vec::with_capacity(names.len());
        // The snapshots written and read back (slot, store, indexes' names and uniqueness), for the re-base at
        // the end.
        let mut written: Vec<(u32, Store, IndexNames)> = Vec::new();
        for (slot, (name, declared_type, index_names)) in names.into_iter().enumerate() {
            let slot32 = u32::try_from(slot).expect("fewer than 2^32 collections");
            let unchanged = last.collections.get(slot).filter(|previous| {
                previous.name == *name
                    && previous.file.is_some()
                    && version
                        .store(slot32)
                        .is_some_and(|store| store.changed_seq() <= last.seq)
            });
            let (file, docs) = match (version.collection(slot32), version.store(slot32)) {
                // Nothing written since the last checkpoint: its snapshot still holds exactly this.
                _ if unchanged.is_some() => {
                    let previous = unchanged.expect("checked");
                    (previous.file.clone(), previous.docs)
                }
                (Some(view), Some(store)) if !view.is_empty() || store.next_id() > 0 => {
                    let file = format!("{SNAPSHOT_FOLDER}/c{slot}-{:016x}.snap", version.seq);
                    // The cut's store of a bound collection has the binding's indexes (binding and the cut both
                    // hold the catalog lock); an unbound one has none.
                    let indexed = store.index_count() == index_names.len();
                    let rebase_indexes = indexed.then(|| index_names.clone());
                    let indexes = if indexed {
                        index_names
                            .into_iter()
                            .enumerate()
                            .map(|(position, (name, unique))| checkpoint::IndexSnapshot {
                                name,
                                unique,
                                entries: view
                                    .index_entries(position, Bound::Unbounded, Bound::Unbounded)
                                    .map(|(key, id)| (key.key().to_vec(), id))
                                    .collect(),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    // Streamed into the file as it is serialized: the snapshot is never whole in memory.
                    let mut docs = Some(view.iter());
                    let mut indexes = Some(indexes);
                    inner.files.write_durably_streamed(
                        &file,
                        checkpoint::HEADER_BYTES,
                        &mut |sink| {
                            let written = checkpoint::write_snapshot(
                                sink,
                                salt,
                                version.seq,
                                &name,
                                store.next_id(),
                                docs.take().expect("produced once"),
                                indexes.take().expect("produced once"),
                            )?;
                            bytes_written += written.file_bytes;
                            Ok(written.header.to_vec())
                        },
                    )?;
                    // Read back (checksums, structure) before a manifest can name it: a file that does not
                    // validate now would make the next open fail, after the log before the cut is gone.
                    let loaded = inner.load_snapshot_store(&file).map_err(|e| {
                        let _ = inner.files.remove(&file);
                        match e {
                            Error::Corruption { file, offset, reason } => Error::Corruption {
                                file,
                                offset,
                                reason: format!(
                                    "does not read back after this checkpoint wrote it ({reason}); the previous checkpoint stays in force"
                                ),
                            },
                            e => e,
                        }
                    })?;
                    if let Some(indexes) = rebase_indexes {
                        written.push((slot32, loaded, indexes));
                    }
                    (Some(file), view.len() as u64)
                }
                _ => (None, 0),
            };
            collections.push(ManifestCollection {
                name: name.to_string(),
                declared_type,
                file,
                docs,
            });
        }
        let manifest = Manifest {
            seq: version.seq,
            cut_lsn,
            collections,
            committed_2pc,
        };
        let encoded = checkpoint::encode_manifest(salt, &manifest);
        inner.files.write_durably(MANIFEST_FILE, &encoded)?;
        bytes_written += encoded.len() as u64;
        // The new checkpoint is in force: the log before the cut and the old snapshots can go.
        let wal_start_lsn = inner.wal.truncate_before(cut_lsn)?;
        remove_unreferenced_snapshots(&*inner.files, &manifest)?;
        inner
            .last_cut_lsn
            .store(cut_lsn, std::sync::atomic::Ordering::Relaxed);
        *last = manifest;
        let mut rebased = 0;
        for (slot, snapshot, indexes) in written {
            let Some(store) = version.collections.get(slot as usize).map(|c| &c.store) else {
                continue;
            };
            if inner.rebase(slot, store, &snapshot, &indexes, version.seq)? {
                rebased += 1;
            }
        }
        Ok(CheckpointInfo {
            seq: version.seq,
            cut_lsn,
            wal_start_lsn,
            bytes_written,
            rebased,
            stores_retained: inner.retired.lock().len(),
        })
    }

    /// Re-bases collection `slot`, whose store at the cut `cut` was `pinned` and whose snapshot was just written
    /// (with `indexes`) and read back as `snapshot`: the collection's newest store becomes one whose base is that
    /// snapshot, mapped, and whose delta holds only what was committed after the cut. The old store stays with the
    /// snapshots taken before, and its base (an earlier snapshot's mapping, or the log segments a replay read)
    /// goes with the last of them. Returns whether it re-based: not if the collection was bound since the cut
    /// (another store; then nothing changes).
    ///
    /// The work is done without the commit lock, except for two short holds: one to start recording the keys
    /// commits write, one (once every commit is published) to carry those over and swap the store into a new
    /// version at the same sequence number (as binding does).
    ///
    /// # Errors
    /// The log is poisoned.
    fn rebase(
        &self,
        slot: u32,
        pinned: &Arc<Store>,
        snapshot: &Store,
        indexes: &[(String, bool)],
        cut: u64,
    ) -> Result<bool> {
        // No live or later transaction reads below the horizon from here on (it only rises).
        let floor = {
            let _catalog = self.catalog.read();
            let state = self.commit.lock();
            match state.latest.collections.get(slot as usize) {
                Some(current) if Arc::ptr_eq(&current.store, pinned) => pinned.start_recording(),
                _ => return Ok(false),
            }
            self.registry.horizon().min(cut)
        };
        let names: Vec<(&str, bool)> = indexes.iter().map(|(n, u)| (n.as_str(), *u)).collect();
        let prepared = pinned.rebase_prepare(snapshot, &names, cut, floor);
        debug_assert!(
            prepared.is_ok(),
            "a snapshot just written holds every index it was written with: {:?}",
            prepared.as_ref().err()
        );
        let _catalog = self.catalog.read();
        let mut state = self.commit.lock();
        let current = state.latest.collections.get(slot as usize);
        let (Ok(rebased), Some(current)) = (prepared, current) else {
            pinned.abandon_rebase();
            return Ok(false);
        };
        if !Arc::ptr_eq(&current.store, pinned) {
            pinned.abandon_rebase();
            return Ok(false);
        }
        if let Err(e) = self.wait_all_published(&state) {
            pinned.abandon_rebase();
            return Err(e);
        }
        pinned.rebase_finish(&rebased);
        let count = current.count;
        let defs = Arc::clone(&current.defs);
        self.replace_collection(
            &mut state,
            slot,
            CollectionState {
                store: Arc::new(rebased),
                count,
                defs,
            },
        );
        drop(state);
        self.retired.lock().push(Arc::clone(pinned));
        Ok(true)
    }

    /// Frees the retired stores that nothing else holds any more (no snapshot reads them): on the checkpointing
    /// thread, at each checkpoint and at each tick of the background checkpointer. While a store is retired, its
    /// last reader's drop only decrements a count.
    fn free_retired(&self) {
        // Taken out under the lock, freed after it.
        let free: Vec<Arc<Store>> = {
            let mut retired = self.retired.lock();
            let (free, kept) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|store| Arc::strong_count(store) == 1);
            *retired = kept;
            free
        };
        drop(free);
    }

    /// Waits (holding the commit lock `state`) until every committed version is published, so that no publication
    /// of a version built before a change of the newest one (a binding, a re-base) can follow that change.
    ///
    /// # Errors
    /// [`Error::Poisoned`]: a commit whose durable wait failed is never published.
    fn wait_all_published(&self, state: &CommitState) -> Result<()> {
        while self.published.seq() != state.latest.seq {
            if self.wal.is_poisoned() {
                return Err(Error::Poisoned {
                    cause: "a commit failed to become durable".into(),
                });
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Makes collection `slot` `collection` in a new newest version at the same sequence number, and publishes it
    /// (under the commit lock `state`, after [`Inner::wait_all_published`]).
    fn replace_collection(&self, state: &mut CommitState, slot: u32, collection: CollectionState) {
        let mut collections = state.latest.collections.clone();
        collections.resize_with(
            collections.len().max(slot as usize + 1),
            CollectionState::empty,
        );
        collections[slot as usize] = collection;
        let version = Arc::new(DbVersion::new(
            state.latest.seq,
            collections,
            &self.registry,
        ));
        state.latest = Arc::clone(&version);
        self.published.replace(version);
    }

    /// The store (untyped, with its stored indexes) of the snapshot file `file`.
    fn load_snapshot_store(&self, file: &str) -> Result<Store> {
        let bytes = self.files.read(file)?.ok_or_else(|| Error::Corruption {
            file: file.into(),
            offset: 0,
            reason: "written by this checkpoint but missing".into(),
        })?;
        snapshot_store(file, self.wal.salt(), &bytes)
    }

    /// Commits `ops` read from `snapshot`: conflict and unique checks, one log group, the durable wait, then
    /// publication in commit order. With `participants`, the commit is two-phase: PREPARE (the writes) is logged
    /// and synced, every participant votes, then the decision is logged (COMMIT synced, or ABORT).
    pub(crate) fn commit(
        &self,
        snapshot: &DbVersion,
        ops: &[Op],
        durability: Durability,
        participants: &[Arc<dyn Participant>],
    ) -> Result<CommitInfo> {
        if ops.is_empty() && participants.is_empty() {
            return Ok(CommitInfo {
                seq: snapshot.seq,
                end_lsn: None,
                participant_failures: Vec::new(),
            });
        }
        let mut state = self.commit.lock();
        // After a failed commit the newest version may hold writes whose fate is unknown: refuse everything, as
        // Poisoned (not as a conflict with them), until the database is reopened.
        self.wal.check_poison()?;
        self.check_no_in_doubt()?;
        check_writes(&state.latest, snapshot, ops)?;
        let seq = state.latest.seq + 1;
        let timed = stamp_time(ops);
        let ops = timed.as_deref().unwrap_or(ops);
        let payloads = EncodedOps::new(ops);
        let lsn_at = end_lsn_stamps(ops);
        if participants.is_empty() {
            let seq_bytes = seq.to_le_bytes();
            let mut records = payloads.records();
            records.push((RecordKind::Commit, &seq_bytes));
            let installed = self.log_and_install(&mut state, &records, &lsn_at, durability, ops)?;
            drop(state);
            return self.publish_after(installed, durability, Vec::new());
        }
        // Two-phase commit, coordinated here. The commit lock is held until the decision, so that nothing else
        // commits between this transaction's checks and its outcome.
        let txid = self.new_txid();
        let names: Vec<String> = participants.iter().map(|p| p.name()).collect();
        let prepare = encode_prepare(txid, ROLE_COORDINATOR, &names);
        let mut records = payloads.records();
        records.push((RecordKind::Prepare, &prepare));
        let group = self
            .wal
            .append_group_stamped(&records, Durability::None, &lsn_at)?;
        let stamped = stamp_end_lsn(ops, group.end_lsn);
        let ops = stamped.as_deref().unwrap_or(ops);
        self.wal.wait_durable(group.end_lsn, Durability::Sync)?;
        for (i, participant) in participants.iter().enumerate() {
            let refusal = match participant.prepare(txid) {
                Ok(Vote::Commit) => continue,
                Ok(Vote::Abort(reason)) => reason,
                Err(e) => e.to_string(),
            };
            self.log_abort(txid)?;
            for prepared in &participants[..=i] {
                // Best effort: a participant that misses this learns the outcome from `decision` (presumed abort).
                let _ = prepared.abort(txid);
            }
            return Err(Error::ParticipantAborted {
                participant: participant.name(),
                reason: refusal,
            });
        }
        let decision = encode_decision(seq, txid);
        let installed = self.log_and_install(
            &mut state,
            &[(RecordKind::Commit, &decision)],
            &[],
            Durability::Sync,
            ops,
        )?;
        self.committed_2pc.lock().insert(txid);
        drop(state);
        let mut failures = Vec::new();
        for participant in participants {
            if let Err(e) = participant.commit(txid) {
                failures.push((participant.name(), e.to_string()));
            }
        }
        self.publish_after(installed, Durability::Sync, failures)
    }

    fn check_no_in_doubt(&self) -> Result<()> {
        match self.in_doubt.lock().first() {
            Some(t) => Err(Error::InDoubt { txid: t.txid }),
            None => Ok(()),
        }
    }

    fn new_txid(&self) -> u64 {
        let mut bytes = [0u8; 8];
        // A random id: unique across databases without coordination. getrandom failing is not recoverable here,
        // and a clock-derived fallback keeps ids distinct enough for one process.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64)
                .to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    }

    pub(crate) fn log_abort(&self, txid: u64) -> Result<()> {
        let group = self.wal.append_group(
            &[(RecordKind::Abort, &txid.to_le_bytes())],
            Durability::None,
        )?;
        self.wal.wait_durable(group.end_lsn, Durability::Os)
    }

    /// Logs `records` (without waiting for durability), then applies `ops` (checked by [`check_writes`]) as the
    /// next commit and makes its version the newest committed one. Superseded versions that no live snapshot can
    /// see anymore are pruned first.
    ///
    /// A `Sync` commit starts the log's write-back before applying: the device stores the records while this
    /// thread builds the version, so the in-memory work hides behind the sync's latency instead of adding to it.
    pub(crate) fn log_and_install(
        &self,
        state: &mut CommitState,
        records: &[(RecordKind, &[u8])],
        end_lsn_at: &[(usize, usize)],
        durability: Durability,
        ops: &[Op],
    ) -> Result<Installed> {
        let group = self
            .wal
            .append_group_stamped(records, Durability::None, end_lsn_at)?;
        let stamped = if end_lsn_at.is_empty() {
            None
        } else {
            stamp_end_lsn(ops, group.end_lsn)
        };
        let ops = stamped.as_deref().unwrap_or(ops);
        if durability == Durability::Sync {
            state.last_sync_end = group.end_lsn;
            self.wal.start_writeback()?;
        }
        if let Some((wake, wal_bytes)) = &self.checkpoint_wake
            && group
                .end_lsn
                .saturating_sub(self.last_cut_lsn.load(std::sync::atomic::Ordering::Relaxed))
                >= *wal_bytes
        {
            // The checkpointer may be busy: one pending nudge is enough.
            let _ = wake.try_send(());
        }
        let horizon = self.registry.horizon();
        for collection in &state.latest.collections {
            collection.store.collect(horizon);
        }
        let seq = state.latest.seq + 1;
        let collections = apply_writes(&state.latest.collections, ops, seq);
        let version = Arc::new(DbVersion::new(seq, collections, &self.registry));
        state.latest = Arc::clone(&version);
        if self
            .has_listeners
            .load(std::sync::atomic::Ordering::Acquire)
        {
            let changes = ops
                .iter()
                .map(|op| RawChange {
                    seq,
                    slot: op.slot,
                    id: op.id,
                    doc: op.doc.clone(),
                })
                .collect();
            self.published
                .with_state(|pending| pending.insert(seq, changes));
        }
        Ok(Installed {
            version,
            end_lsn: group.end_lsn,
            must_be_durable: state.last_sync_end,
        })
    }

    /// Waits (outside the commit lock, so that concurrent commits share one sync) until the commit and every
    /// `Sync` commit before it are durable, then publishes and delivers changes in commit order.
    pub(crate) fn publish_after(
        &self,
        installed: Installed,
        durability: Durability,
        participant_failures: Vec<(String, String)>,
    ) -> Result<CommitInfo> {
        let Installed {
            version,
            end_lsn,
            must_be_durable,
        } = installed;
        self.wal.wait_durable(end_lsn, durability)?;
        if must_be_durable > self.wal.durable_lsn() {
            self.wal.wait_durable(must_be_durable, Durability::Sync)?;
        }
        let seq = version.seq;
        self.published.publish(version, |pending, published| {
            // Deliver, in commit order, the changes of every commit now visible.
            if !pending.is_empty() {
                let later = pending.split_off(&(published + 1));
                let visible = std::mem::replace(pending, later);
                let mut listeners = self.listeners.lock();
                for change in visible.into_values().flatten() {
                    listeners.retain(|l| l.slot != change.slot || (l.deliver)(&change));
                }
            }
        });
        Ok(CommitInfo {
            seq,
            end_lsn: Some(end_lsn),
            participant_failures,
        })
    }
}

/// A version logged and installed as the newest, waiting for durability and publication.
pub(crate) struct Installed {
    version: Arc<DbVersion>,
    end_lsn: u64,
    must_be_durable: u64,
}

/// Checks `ops` (read from `snapshot`) against `latest`: first committer wins on every written document, and unique
/// indexes hold.
pub(crate) fn check_writes(latest: &DbVersion, snapshot: &DbVersion, ops: &[Op]) -> Result<()> {
    for op in ops {
        if let Some(state) = latest.collections.get(op.slot as usize)
            && !Arc::ptr_eq(&state.defs, &op.defs)
        {
            return Err(Error::IndexesChanged {
                collection: op.name.to_string(),
            });
        }
        if let Some(seq) = latest.store(op.slot).and_then(|c| c.latest_seq(op.id))
            && seq > snapshot.seq
        {
            return Err(Error::Conflict {
                collection: op.name.to_string(),
                id: op.id,
            });
        }
    }
    for group in writes_by_slot(ops) {
        let op = &ops[group.first_op];
        let checked = match latest.store(group.slot) {
            Some(store) => store.check_unique(&op.defs, &group.writes),
            None => Store::new(&op.defs).check_unique(&op.defs, &group.writes),
        };
        checked.map_err(|e| apply_error(&op.name, None, e))?;
    }
    Ok(())
}

/// The writes of a commit to one collection, in the order of its ops.
struct SlotWrites<'a> {
    slot: u32,
    /// Index of the first op writing this collection (its name and index definitions stand for all of them).
    first_op: usize,
    writes: SmallVec<[Write<'a>; 1]>,
}

/// `ops` grouped by collection slot, in order of first appearance. A commit usually writes one collection: the
/// grouping then allocates only for writes beyond the first.
fn writes_by_slot(ops: &[Op]) -> SmallVec<[SlotWrites<'_>; 1]> {
    let mut by_slot: SmallVec<[SlotWrites<'_>; 1]> = SmallVec::new();
    for (i, op) in ops.iter().enumerate() {
        let write = Write {
            id: op.id,
            doc: op.doc.as_ref(),
        };
        match by_slot.iter_mut().find(|group| group.slot == op.slot) {
            Some(group) => group.writes.push(write),
            None => by_slot.push(SlotWrites {
                slot: op.slot,
                first_op: i,
                writes: smallvec::smallvec![write],
            }),
        }
    }
    by_slot
}

/// Applies checked `ops` as commit `seq` to the stores of `collections`; returns the collections' new states.
fn apply_writes(collections: &[CollectionState], ops: &[Op], seq: u64) -> Vec<CollectionState> {
    let mut collections = collections.to_vec();
    for group in writes_by_slot(ops) {
        let slot = group.slot as usize;
        let defs = &ops[group.first_op].defs;
        collections.resize_with(collections.len().max(slot + 1), || CollectionState {
            store: Arc::new(Store::new(defs)),
            count: 0,
            defs: Arc::clone(defs),
        });
        let state = &mut collections[slot];
        let delta = state.store.apply(defs, &group.writes, seq);
        state.count = state
            .count
            .checked_add_signed(delta)
            .expect("a document count stays in range");
    }
    collections
}

const ROLE_COORDINATOR: u8 = 0;
pub(crate) const ROLE_PARTICIPANT: u8 = 1;

/// PREPARE payload: `txid: u64`, `role: u8`, then the participant names (coordinator) or nothing, `\n`-separated.
pub(crate) fn encode_prepare(txid: u64, role: u8, names: &[String]) -> Vec<u8> {
    let mut out = txid.to_le_bytes().to_vec();
    out.push(role);
    out.extend_from_slice(names.join("\n").as_bytes());
    out
}

/// A 2PC COMMIT decision: `seq: u64`, `txid: u64` (a plain commit's COMMIT payload is `seq` alone).
pub(crate) fn encode_decision(seq: u64, txid: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..].copy_from_slice(&txid.to_le_bytes());
    out
}

/// `ops` with `value` written at `at(stamp)` of each stamped document, or `None` if no document is stamped.
fn stamp_ops(ops: &[Op], at: impl Fn(Stamp) -> usize, value: u64) -> Option<Vec<Op>> {
    if ops.iter().all(|op| op.stamp.is_none()) {
        return None;
    }
    Some(
        ops.iter()
            .map(|op| match (&op.doc, op.stamp) {
                (Some(doc), Some(stamp)) => {
                    let mut bytes = doc.as_bytes().to_vec();
                    let at = at(stamp);
                    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
                    Op {
                        doc: Some(collection::DocBytes::copy_from(&bytes)),
                        ..op.clone()
                    }
                }
                _ => op.clone(),
            })
            .collect(),
    )
}

/// `ops` with the commit time written into their stamped documents (`None`: nothing is stamped).
pub(crate) fn stamp_time(ops: &[Op]) -> Option<Vec<Op>> {
    if ops.iter().all(|op| op.stamp.is_none()) {
        return None;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    stamp_ops(ops, |s| s.time_ms_at, now_ms)
}

/// `ops` with `end_lsn` written into their stamped documents, as the log group's stamps wrote it into their records
/// (`None`: nothing is stamped).
pub(crate) fn stamp_end_lsn(ops: &[Op], end_lsn: u64) -> Option<Vec<Op>> {
    stamp_ops(ops, |s| s.end_lsn_at, end_lsn)
}

/// Where each stamped document's end-LSN field lies when `ops` encode (in order) a log group's first records:
/// `(record index, offset in the payload)`, for [`Wal::append_group_stamped`].
pub(crate) fn end_lsn_stamps(ops: &[Op]) -> Vec<(usize, usize)> {
    ops.iter()
        .enumerate()
        .filter_map(|(i, op)| {
            let stamp = op.stamp?;
            op.doc.as_ref()?;
            Some((i, op_head_bytes(op.name.len()) + stamp.end_lsn_at))
        })
        .collect()
}

/// The DATA payloads of a commit's ops, encoded back to back in one buffer (one allocation per commit).
pub(crate) struct EncodedOps {
    bytes: Vec<u8>,
    /// Where each op's payload ends in `bytes`.
    ends: SmallVec<[usize; 2]>,
}

impl EncodedOps {
    pub(crate) fn new(ops: &[Op]) -> Self {
        let total = ops
            .iter()
            .map(|op| op_head_bytes(op.name.len()) + op.doc.as_ref().map_or(0, |d| d.len()))
            .sum();
        let mut bytes = Vec::with_capacity(total);
        let mut ends = SmallVec::with_capacity(ops.len() + 1);
        for op in ops {
            match &op.doc {
                Some(doc) => encode_raw_op_into(&mut bytes, OP_PUT, &op.name, op.id, doc),
                None => encode_raw_op_into(&mut bytes, OP_REMOVE, &op.name, op.id, &[]),
            }
            ends.push(bytes.len());
        }
        debug_assert_eq!(bytes.len(), total, "the buffer was sized exactly");
        Self { bytes, ends }
    }

    /// One DATA record per op, in order, with room for the record that closes the group.
    pub(crate) fn records(&self) -> SmallVec<[(RecordKind, &[u8]); 2]> {
        let mut start = 0;
        let mut records = SmallVec::with_capacity(self.ends.len() + 1);
        for &end in &self.ends {
            records.push((RecordKind::Data, &self.bytes[start..end]));
            start = end;
        }
        records
    }
}

/// DATA payload: `op: u8`, `name_len: u16`, `name`, `id: u64`, zero bytes up to the next multiple of 16, then the
/// document (or type label) bytes. The log starts every payload at a multiple of 16 in its segment, so a document
/// starts 16-byte aligned in the mapped log and a replay reads it in place.
fn encode_raw_op(op: u8, name: &str, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(op_head_bytes(name.len()) + body.len());
    encode_raw_op_into(&mut out, op, name, id, body);
    out
}

/// [`encode_raw_op`], appended to `out`.
fn encode_raw_op_into(out: &mut Vec<u8>, op: u8, name: &str, id: u64, body: &[u8]) {
    let name = name.as_bytes();
    let start = out.len();
    let head = start + op_head_bytes(name.len());
    out.push(op);
    out.extend_from_slice(
        &u16::try_from(name.len())
            .expect("collection names are short")
            .to_le_bytes(),
    );
    out.extend_from_slice(name);
    out.extend_from_slice(&id.to_le_bytes());
    out.resize(head, 0);
    out.extend_from_slice(body);
}

/// Bytes of a DATA payload before its body, for a collection name of `name_len` bytes.
fn op_head_bytes(name_len: usize) -> usize {
    (1 + 2 + name_len + 8).next_multiple_of(16)
}

/// A DATA record's operation, decoded (for tools such as `cstore wal dump` and `verify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataOp<'a> {
    /// `"put"`, `"remove"` or `"declare"` (a collection's document type).
    pub op: &'static str,
    /// The collection written.
    pub collection: &'a str,
    /// The document's id (0 for a declaration).
    pub id: u64,
    /// Bytes of the document (or type label) after the op's head.
    pub body_bytes: usize,
}

/// Decodes a DATA record's payload; `None` if it is not a well-formed operation.
#[must_use]
pub fn decode_data(payload: &[u8]) -> Option<DataOp<'_>> {
    let op = decode_op(payload)?;
    Some(DataOp {
        op: match op.op {
            OP_PUT => "put",
            OP_REMOVE => "remove",
            _ => "declare",
        },
        collection: op.name,
        id: op.id,
        body_bytes: op.body.len(),
    })
}

/// A decoded DATA record.
struct DecodedOp<'a> {
    op: u8,
    name: &'a str,
    id: u64,
    body: &'a [u8],
}

fn decode_op(payload: &[u8]) -> Option<DecodedOp<'_>> {
    let (&op, rest) = payload.split_first()?;
    let name_len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
    let name = std::str::from_utf8(rest.get(2..2 + name_len)?).ok()?;
    let id = u64::from_le_bytes(rest.get(2 + name_len..2 + name_len + 8)?.try_into().ok()?);
    let head = op_head_bytes(name_len);
    if payload
        .get(1 + 2 + name_len + 8..head)?
        .iter()
        .any(|&b| b != 0)
    {
        return None;
    }
    let body = &payload[head..];
    match op {
        OP_PUT | OP_DECLARE => Some(DecodedOp { op, name, id, body }),
        OP_REMOVE if body.is_empty() => Some(DecodedOp { op, name, id, body }),
        _ => None,
    }
}

/// A write met in the log: document `id` at commit `seq`, its bytes at `offset` in the payload of `record` (a view
/// of the mapped segment), or a removal.
struct ReplayedWrite {
    id: u64,
    seq: u64,
    doc: Option<(crate::wal::Record, usize)>,
}

/// A collection's indexes by name and uniqueness.
type IndexNames = Vec<(String, bool)>;

/// A collection at a checkpoint's cut: its name, declared type, and its indexes (none if it is not bound to a
/// type).
type CutCollection = (Arc<str>, Option<String>, IndexNames);

/// What replaying the log produced.
struct Replayed {
    /// Sequence number of the last commit.
    seq: u64,
    collections: Vec<CollectionState>,
    /// Per collection slot, every write replayed, in log order: `(id, seq, the record and the offset of the
    /// document in its payload, or a removal)`. Only each document's last write is kept, and copied out of the log,
    /// when the log is read ([`Replayed::apply_overlay`]).
    overlay: Vec<Vec<ReplayedWrite>>,
    /// Per collection slot, one past the largest id the replayed writes used.
    next_ids: Vec<u64>,
    /// Prepared transactions with no decision in the log.
    in_doubt: Vec<InDoubt>,
    /// 2PC transactions whose COMMIT decision is in the log.
    committed_2pc: std::collections::HashSet<u64>,
}

/// A prepared two-phase transaction whose decision was not in the log when the database was opened.
#[derive(Clone, Debug)]
pub struct InDoubt {
    /// The transaction id.
    pub txid: u64,
    /// Whether this database coordinated it (then it was aborted at open: presumed abort) or took part in it
    /// (then it waits for [`Database::resolve_in_doubt`] with the coordinator's decision).
    pub coordinator: bool,
    /// For a coordinator: the participants named at PREPARE.
    pub participants: Vec<String>,
    ops: Vec<crate::wal::Record>,
}

/// Rebuilds the committed state from the log: every complete group that ends with COMMIT is redone, in log order;
/// a group that ends with PREPARE waits for its decision (a later COMMIT or ABORT record naming it); anything else
/// is discarded. Collections are untyped (no indexes) until [`Database::collection`] binds them.
fn replay(
    wal: &Wal,
    catalog: &mut Catalog,
    replayed: &mut Replayed,
    cut_lsn: u64,
    progress: Option<&ProgressFn>,
) -> Result<()> {
    if wal.start_lsn() > cut_lsn || wal.written_lsn() < cut_lsn {
        return Err(Error::Corruption {
            file: "wal".into(),
            offset: wal.start_lsn(),
            reason: format!(
                "the log holds {}..{}, but the last checkpoint continues at {cut_lsn}",
                wal.start_lsn(),
                wal.written_lsn()
            ),
        });
    }
    let mut prepared: Vec<InDoubt> = Vec::new();
    let mut group: Vec<crate::wal::Record> = Vec::new();
    let replay_bytes = wal.written_lsn() - cut_lsn;
    // Reported every 1/64 of the way (and at least every 16 MiB).
    let report_every = (replay_bytes / 64).clamp(1, 16 << 20);
    let mut reported = 0;
    for record in wal.iter_from(wal.start_lsn())? {
        let record = record?;
        if record.lsn() < cut_lsn {
            // In the checkpoint already (the cut is at a group boundary).
            continue;
        }
        let ends_group = !record.group_continues();
        let done = record.end_lsn().min(wal.written_lsn()) - cut_lsn;
        group.push(record);
        if !ends_group {
            continue;
        }
        if done - reported >= report_every {
            reported = done;
            progress::report(progress, RecoveryStage::Replay, done, replay_bytes);
        }
        let last = group.pop().expect("group has a record");
        let payload = last.payload();
        match last.kind() {
            RecordKind::Commit if payload.len() == 8 => {
                let seq = u64::from_le_bytes(payload.try_into().expect("8 bytes"));
                redo(replayed, catalog, &group, seq)?;
            }
            RecordKind::Commit if payload.len() == 16 && group.is_empty() => {
                let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                let txid = u64::from_le_bytes(payload[8..].try_into().expect("8 bytes"));
                let position = prepared
                    .iter()
                    .position(|p| p.txid == txid)
                    .ok_or_else(|| {
                        corrupt_record(&last, "COMMIT decision for a transaction never prepared")
                    })?;
                let transaction = prepared.swap_remove(position);
                redo(replayed, catalog, &transaction.ops, seq)?;
                replayed.committed_2pc.insert(txid);
            }
            RecordKind::Prepare if payload.len() >= 9 => {
                let txid = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                let names = std::str::from_utf8(&payload[9..])
                    .map_err(|_| corrupt_record(&last, "participant names are not UTF-8"))?;
                prepared.push(InDoubt {
                    txid,
                    coordinator: payload[8] != ROLE_PARTICIPANT,
                    participants: names
                        .split('\n')
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    ops: std::mem::take(&mut group),
                });
            }
            RecordKind::Abort if payload.len() == 8 && group.is_empty() => {
                let txid = u64::from_le_bytes(payload.try_into().expect("8 bytes"));
                prepared.retain(|p| p.txid != txid);
            }
            _ => {
                return Err(corrupt_record(
                    &last,
                    "unexpected record kind or payload size at the end of a group",
                ));
            }
        }
        group.clear();
    }
    progress::report(progress, RecoveryStage::Replay, replay_bytes, replay_bytes);
    replayed.in_doubt = prepared;
    replayed.apply_overlay(progress)
}

/// Redoes the DATA records of one committed transaction (collections are untyped then: no index).
fn redo(
    replayed: &mut Replayed,
    catalog: &mut Catalog,
    data: &[crate::wal::Record],
    seq: u64,
) -> Result<()> {
    if let Some(record) = data.first()
        && seq < replayed.seq
    {
        return Err(corrupt_record(
            record,
            "commit sequence numbers go backwards",
        ));
    }
    for record in data {
        let op = decode_op(record.payload())
            .ok_or_else(|| corrupt_record(record, "malformed DATA payload"))?;
        let slot = catalog.slot_for(op.name) as usize;
        match op.op {
            OP_DECLARE => {
                let label = std::str::from_utf8(op.body)
                    .map_err(|_| corrupt_record(record, "type label is not UTF-8"))?;
                catalog.slots[slot].declared_type = Some(label.to_owned());
            }
            _ => {
                let doc = (op.op == OP_PUT).then(|| {
                    let offset = op.body.as_ptr().addr() - record.payload().as_ptr().addr();
                    (record.clone(), offset)
                });
                if replayed.overlay.len() <= slot {
                    replayed.overlay.resize_with(slot + 1, Vec::new);
                    replayed.next_ids.resize(slot + 1, 0);
                }
                replayed.overlay[slot].push(ReplayedWrite {
                    id: op.id,
                    seq,
                    doc,
                });
                replayed.next_ids[slot] = replayed.next_ids[slot].max(op.id.saturating_add(1));
            }
        }
    }
    replayed.seq = seq;
    Ok(())
}

impl Replayed {
    /// Folds the replayed writes into the collections' bases (no snapshot reads them yet): each document's last
    /// write counts (also within one transaction, if a log repeats one), and only those are copied out of the log,
    /// into an arena.
    fn apply_overlay(&mut self, progress: Option<&ProgressFn>) -> Result<()> {
        let overlay = std::mem::take(&mut self.overlay);
        let total = overlay.iter().filter(|writes| !writes.is_empty()).count() as u64;
        let mut done = 0;
        let mut arena = collection::arena::DocArena::default();
        // One owner per segment for the documents read in place.
        let mut segments: std::collections::HashMap<u64, Arc<dyn collection::SharedBytes>> =
            std::collections::HashMap::new();
        let mut kept = Vec::with_capacity(overlay.len());
        for mut writes in overlay {
            // Stable: a document's writes stay in log order, so the last of each run of one id is its last write.
            writes.sort_by_key(|w| w.id);
            let mut last: Vec<(u64, u64, Option<KeptDoc>)> = Vec::new();
            for (i, ReplayedWrite { id, seq, doc }) in writes.iter().enumerate() {
                if writes.get(i + 1).is_some_and(|next| next.id == *id) {
                    continue;
                }
                let doc = match doc {
                    Some((record, offset)) => {
                        Some(keep_doc(record, *offset, &mut segments, &mut arena)?)
                    }
                    None => None,
                };
                last.push((*id, *seq, doc));
            }
            kept.push(last);
        }
        let arena = arena.freeze();
        for (slot, writes) in kept.into_iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            if self.collections.len() <= slot {
                self.collections
                    .resize_with(slot + 1, CollectionState::empty);
            }
            let writes: Vec<(u64, u64, Option<collection::DocBytes>)> = writes
                .into_iter()
                .map(|(id, seq, doc)| {
                    let doc = doc.map(|doc| match doc {
                        KeptDoc::InPlace(bytes) => bytes,
                        KeptDoc::Copied(at) => arena.doc(at),
                    });
                    (id, seq, doc)
                })
                .collect();
            let state = &mut self.collections[slot];
            let (store, count) = state.store.folded(writes, self.next_ids[slot]);
            *state = CollectionState {
                store: Arc::new(store),
                count,
                defs: Arc::clone(&state.defs),
            };
            done += 1;
            progress::report(progress, RecoveryStage::Fold, done, total);
        }
        Ok(())
    }
}

/// A replayed document's bytes: read in place from the mapped log, or copied into the replay's arena where they are
/// not 16-byte aligned there (which this log format rules out: the copy is a fallback, not a path in use).
enum KeptDoc {
    InPlace(collection::DocBytes),
    Copied(collection::arena::ArenaDoc),
}

/// The written prefix of a log segment as the owner of documents read in place from it.
struct LogBytes(crate::wal::SegmentBytes);

impl collection::SharedBytes for LogBytes {
    fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// The document at `offset` in the payload of `record`: in place when it is 16-byte aligned in the mapped log
/// (`segments` holds one owner per segment), else copied into `arena`.
///
/// # Errors
/// The operating system refused memory for the arena.
fn keep_doc(
    record: &crate::wal::Record,
    offset: usize,
    segments: &mut std::collections::HashMap<u64, Arc<dyn collection::SharedBytes>>,
    arena: &mut collection::arena::DocArena,
) -> Result<KeptDoc> {
    let bytes = &record.payload()[offset..];
    if bytes.as_ptr().addr().is_multiple_of(16) {
        let segment = record.written_segment();
        let owner = segments
            .entry(segment.base_lsn())
            .or_insert_with(|| Arc::new(LogBytes(segment)));
        let start = record.payload_position() + offset;
        // Records of one read of the log share their segment's written prefix; anything else is copied.
        if start + bytes.len() <= owner.bytes().len() {
            return Ok(KeptDoc::InPlace(collection::DocBytes::shared(
                Arc::clone(owner),
                start,
                bytes.len(),
            )));
        }
        debug_assert!(false, "a record beyond its segment's written prefix");
    }
    arena
        .push(bytes)
        .map(KeptDoc::Copied)
        .map_err(|e| Error::io("allocate memory for replayed documents", "", e))
}

/// Name of the manifest among the checkpoint files.
pub(crate) const MANIFEST_FILE: &str = "MANIFEST";
/// Folder of the snapshot files among the checkpoint files.
const SNAPSHOT_FOLDER: &str = "snapshots";

/// The last checkpoint's manifest, if any.
fn read_manifest(files: &dyn CheckpointFiles, salt: u64) -> Result<Option<Manifest>> {
    let Some(bytes) = files.read(MANIFEST_FILE)? else {
        return Ok(None);
    };
    checkpoint::open_manifest(MANIFEST_FILE, salt, bytes.bytes()).map(Some)
}

/// The state of the last checkpoint: its collections, loaded from their snapshots (documents read in place).
fn load_checkpoint(
    files: &dyn CheckpointFiles,
    salt: u64,
    manifest: &Manifest,
    catalog: &mut Catalog,
    progress: Option<&ProgressFn>,
) -> Result<Replayed> {
    let mut collections = Vec::with_capacity(manifest.collections.len());
    let total = manifest
        .collections
        .iter()
        .filter(|c| c.file.is_some())
        .count() as u64;
    let mut done = 0;
    for entry in &manifest.collections {
        let slot = catalog.slot_for(&entry.name) as usize;
        if slot != collections.len() {
            return Err(Error::Corruption {
                file: MANIFEST_FILE.into(),
                offset: 0,
                reason: format!("lists collection {:?} twice", entry.name),
            });
        }
        catalog.slots[slot]
            .declared_type
            .clone_from(&entry.declared_type);
        let Some(file) = &entry.file else {
            collections.push(CollectionState::empty());
            continue;
        };
        let bytes = files.read(file)?.ok_or_else(|| Error::Corruption {
            file: file.clone(),
            offset: 0,
            reason: "named by the manifest but missing".into(),
        })?;
        let (contents, store) = open_snapshot_store(file, salt, &bytes)?;
        if contents.name != entry.name
            || contents.seq > manifest.seq
            || contents.docs.len() as u64 != entry.docs
        {
            return Err(Error::Corruption {
                file: file.clone(),
                offset: 0,
                reason: format!(
                    "holds {:?} at {} with {} documents; the manifest says {:?} at or before {} with {}",
                    contents.name,
                    contents.seq,
                    contents.docs.len(),
                    entry.name,
                    manifest.seq,
                    entry.docs
                ),
            });
        }
        let count = contents.docs.len();
        collections.push(CollectionState {
            store: Arc::new(store),
            count,
            defs: Arc::from(Vec::new()),
        });
        done += 1;
        progress::report(progress, RecoveryStage::Snapshots, done, total);
    }
    Ok(Replayed {
        seq: manifest.seq,
        collections,
        overlay: Vec::new(),
        next_ids: Vec::new(),
        in_doubt: Vec::new(),
        committed_2pc: manifest.committed_2pc.iter().copied().collect(),
    })
}

/// The store (untyped: no index bound, the stored ones kept for binding) of the snapshot file `file`, its
/// documents read in place from `bytes`.
fn snapshot_store(
    file: &str,
    salt: u64,
    bytes: &Arc<dyn collection::SharedBytes>,
) -> Result<Store> {
    open_snapshot_store(file, salt, bytes).map(|(_, store)| store)
}

/// The validated contents of the snapshot file `file` and its store (see [`snapshot_store`]).
fn open_snapshot_store(
    file: &str,
    salt: u64,
    bytes: &Arc<dyn collection::SharedBytes>,
) -> Result<(checkpoint::SnapshotContents, Store)> {
    let contents = checkpoint::open_snapshot(file, salt, bytes.bytes())?;
    let docs: Vec<(u64, collection::DocBytes)> = contents
        .docs
        .iter()
        .map(|&(id, offset, len)| {
            (
                id,
                collection::DocBytes::shared(Arc::clone(bytes), offset, len),
            )
        })
        .collect();
    let file_bytes = bytes.bytes();
    let stored = contents
        .indexes
        .iter()
        .map(|index| collection::StoredEntries {
            name: &index.name,
            unique: index.unique,
            entries: index
                .entries
                .iter()
                .map(|&(offset, len, id)| (&file_bytes[offset..offset + len], id))
                .collect(),
        })
        .collect();
    let store = Store::based(docs, contents.seq, contents.next_id, stored).map_err(|reason| {
        Error::Corruption {
            file: file.into(),
            offset: 0,
            reason,
        }
    })?;
    Ok((contents, store))
}

/// Removes snapshot files the manifest does not name (left by a checkpoint that did not finish, or superseded).
fn remove_unreferenced_snapshots(files: &dyn CheckpointFiles, manifest: &Manifest) -> Result<()> {
    for name in files.list(SNAPSHOT_FOLDER)? {
        if !manifest
            .collections
            .iter()
            .any(|c| c.file.as_deref() == Some(name.as_str()))
        {
            files.remove(&name)?;
        }
    }
    Ok(())
}

fn corrupt_record(record: &crate::wal::Record, reason: &str) -> Error {
    Error::Corruption {
        file: "wal".into(),
        offset: record.lsn(),
        reason: reason.into(),
    }
}

/// A typed handle on a collection. Cheap to clone.
pub struct Collection<T: Document> {
    /// The database instance it belongs to (an id, so that a handle does not keep the database and its directory
    /// lock alive, and cannot be used on another database's data).
    pub(crate) db_id: u64,
    pub(crate) slot: u32,
    pub(crate) name: Arc<str>,
    pub(crate) defs: Arc<[IndexDef]>,
    pub(crate) ids: Arc<AtomicU64>,
    pub(crate) primary_key: Option<PrimaryKeyFn<T>>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Document> Clone for Collection<T> {
    fn clone(&self) -> Self {
        Self {
            db_id: self.db_id,
            slot: self.slot,
            name: Arc::clone(&self.name),
            defs: Arc::clone(&self.defs),
            ids: Arc::clone(&self.ids),
            primary_key: self.primary_key.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Document> std::fmt::Debug for Collection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("name", &self.name)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: Document> Collection<T> {
    fn from_binding(db: &Arc<Inner>, slot: u32, name: &Arc<str>, binding: &Binding) -> Self {
        let primary_key = binding.primary_key.as_ref().map(|any| {
            Arc::clone(
                any.downcast_ref::<PrimaryKeyFn<T>>()
                    .expect("binding's type was checked"),
            )
        });
        Self {
            db_id: db.id,
            slot,
            name: Arc::clone(name),
            defs: Arc::clone(&binding.defs),
            ids: Arc::clone(&binding.ids),
            primary_key,
            _type: PhantomData,
        }
    }

    /// The collection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn check_owner(&self, db: &Database) -> Result<()> {
        if self.db_id == db.inner.id {
            Ok(())
        } else {
            Err(Error::UnknownCollection {
                collection: self.name.to_string(),
            })
        }
    }

    pub(crate) fn index_position(&self, index: &str) -> Result<usize> {
        self.defs
            .iter()
            .position(|d| &*d.name == index)
            .ok_or_else(|| Error::UnknownIndex {
                collection: self.name.to_string(),
                index: index.into(),
            })
    }
}

/// The entries `def` would hold for the documents of `view` whose keys lie between `start` and `end`, in index order
/// (key, then id), computed from the documents: the index read of a view whose store does not maintain `def`.
pub(crate) fn scanned_entries(
    view: View<'_>,
    def: &IndexDef,
    start: &Bound<Vec<u8>>,
    end: &Bound<Vec<u8>>,
) -> Vec<(Vec<u8>, u64)> {
    let mut entries: Vec<(Vec<u8>, u64)> = view
        .iter()
        .filter_map(|(id, doc)| {
            let key = def.key_of(doc)?;
            crate::txn::in_bounds(&key, start, end).then_some((key, id))
        })
        .collect();
    entries.sort_unstable();
    entries
}

/// A consistent, immutable view of the database. Holding it never blocks writers.
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) version: Arc<DbVersion>,
    db_id: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.version.seq)
            .finish_non_exhaustive()
    }
}

/// Documents of a collection in some order, as `(id, &T::Archived)`.
pub type Docs<'s, T> =
    Box<dyn DoubleEndedIterator<Item = (u64, &'s <T as rkyv::Archive>::Archived)> + 's>;

impl Snapshot {
    /// Sequence number of the last commit visible in this snapshot.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.version.seq
    }

    /// Whether this snapshot's indexes of `collection` are the handle's: not so in a snapshot taken before the
    /// collection was bound in this process (its store had no indexes yet) or before its indexes changed. Index
    /// reads then scan ([`scanned_entries`]).
    pub(crate) fn indexes_current<T: Document>(&self, collection: &Collection<T>) -> bool {
        collection.db_id == self.db_id
            && self
                .version
                .defs(collection.slot)
                .is_some_and(|d| Arc::ptr_eq(d, &collection.defs))
    }

    /// The collection's version here; `None` for a handle of another database (whose slot means nothing here).
    fn version_of<T: Document>(&self, collection: &Collection<T>) -> Option<View<'_>> {
        if collection.db_id != self.db_id {
            return None;
        }
        self.version.collection(collection.slot)
    }

    /// The document with this id.
    #[must_use]
    pub fn get<T: Document>(&self, collection: &Collection<T>, id: u64) -> Option<&T::Archived> {
        self.version_of(collection)?
            .get(id)
            .map(|d| collection::archived::<T>(d))
    }

    /// Number of documents.
    #[must_use]
    pub fn count<T: Document>(&self, collection: &Collection<T>) -> usize {
        self.version_of(collection).map_or(0, |v| v.len())
    }

    /// Every document in id order (use `.rev()` for descending, `.next()` / `.next_back()` for first / last).
    #[must_use]
    pub fn iter<'s, T: Document>(&'s self, collection: &Collection<T>) -> Docs<'s, T> {
        match self.version_of(collection) {
            Some(v) => Box::new(v.iter().map(|(id, d)| (id, collection::archived::<T>(d)))),
            None => Box::new(std::iter::empty()),
        }
    }

    /// Documents whose key in `index` lies in `range`, in index order (ties by id). `.next()` is the lowest,
    /// `.next_back()` the greatest: index lookups, not scans.
    ///
    /// # Errors
    /// [`Error::UnknownIndex`].
    pub fn range<'s, T: Document, K: IndexKey>(
        &'s self,
        collection: &Collection<T>,
        index: &str,
        range: impl RangeBounds<K>,
    ) -> Result<Docs<'s, T>> {
        if collection.db_id != self.db_id {
            return Err(Error::UnknownCollection {
                collection: collection.name.to_string(),
            });
        }
        let position = collection.index_position(index)?;
        let Some(version) = self.version_of(collection) else {
            return Ok(Box::new(std::iter::empty()));
        };
        let (start, end) = collection::key::encode_bounds(&range);
        let ids: Box<dyn DoubleEndedIterator<Item = u64> + 's> = if self.indexes_current(collection)
        {
            Box::new(version.index_range(position, start, end))
        } else {
            Box::new(
                scanned_entries(version, &collection.defs[position], &start, &end)
                    .into_iter()
                    .map(|(_, id)| id),
            )
        };
        Ok(Box::new(ids.map(move |id| {
            let doc = version.get(id).expect("index entries point at documents");
            (id, collection::archived::<T>(doc))
        })))
    }

    /// Documents whose key in `index` equals `key` (at most one for a unique index).
    ///
    /// # Errors
    /// [`Error::UnknownIndex`].
    pub fn find<'s, T: Document, K: IndexKey>(
        &'s self,
        collection: &Collection<T>,
        index: &str,
        key: &K,
    ) -> Result<Docs<'s, T>> {
        self.range::<T, K>(
            collection,
            index,
            (Bound::Included(key), Bound::Included(key)),
        )
    }

    /// The first document whose key in `index` equals `key`.
    ///
    /// # Errors
    /// [`Error::UnknownIndex`].
    pub fn find_one<'s, T: Document, K: IndexKey>(
        &'s self,
        collection: &Collection<T>,
        index: &str,
        key: &K,
    ) -> Result<Option<(u64, &'s T::Archived)>> {
        if collection.db_id != self.db_id {
            return Err(Error::UnknownCollection {
                collection: collection.name.to_string(),
            });
        }
        let position = collection.index_position(index)?;
        if !collection.defs[position].unique {
            return Ok(self.find(collection, index, key)?.next());
        }
        // A unique index: one hash lookup, then the document.
        let Some(version) = self.version_of(collection) else {
            return Ok(None);
        };
        if !self.indexes_current(collection) {
            return Ok(self.find(collection, index, key)?.next());
        }
        thread_local! {
            /// Where lookup keys are encoded (an allocation per lookup was a tenth of a lookup's time).
            static ENCODED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        // Taken, not borrowed: a user's `encode_key` may itself look something up.
        let mut encoded = ENCODED.take();
        encoded.clear();
        key.encode_key(&mut encoded);
        let found = version
            .unique_get(position, &encoded)
            .map(|(id, doc)| (id, collection::archived::<T>(doc)));
        if encoded.capacity() <= 4096 {
            ENCODED.set(encoded);
        }
        Ok(found)
    }

    /// Checks every index of `collection` against its documents (for tests and verification).
    ///
    /// # Errors
    /// A description of the first disagreement.
    pub fn check_indexes<T: Document>(
        &self,
        collection: &Collection<T>,
    ) -> std::result::Result<(), String> {
        match self.version_of(collection) {
            Some(v) => v.check_indexes(&collection.defs),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{Wal, WalOptions};

    #[test]
    fn op_bodies_start_at_a_multiple_of_16_and_round_trip() {
        for name_len in 0..40 {
            let name = "n".repeat(name_len);
            let body: Vec<u8> = (0..=name_len as u8).collect();
            let payload = encode_raw_op(OP_PUT, &name, 7 + name_len as u64, &body);
            let op = decode_op(&payload).expect("decodes");
            assert_eq!(
                (op.op, op.name, op.id, op.body),
                (OP_PUT, &name[..], 7 + name_len as u64, &body[..])
            );
            let body_at = op.body.as_ptr().addr() - payload.as_ptr().addr();
            assert_eq!(body_at % 16, 0, "name of {name_len} bytes");
        }
        let mut damaged = encode_raw_op(OP_PUT, "user", 1, b"doc");
        damaged[1 + 2 + 4 + 8] = 1; // the one padding byte
        assert!(decode_op(&encode_raw_op(OP_PUT, "user", 1, b"doc")).is_some());
        assert!(decode_op(&damaged).is_none(), "padding must be zero");
        assert!(decode_op(&encode_raw_op(OP_REMOVE, "users", 1, b"")).is_some());
        assert!(decode_op(&encode_raw_op(OP_REMOVE, "users", 1, b"x")).is_none());
    }

    #[test]
    fn replayed_documents_are_read_in_place_when_aligned_and_copied_otherwise() {
        let wal = Wal::open_in_memory(WalOptions {
            segment_size_bytes: 4096,
            ..WalOptions::default()
        })
        .unwrap();
        let doc = [0x5Au8; 40];
        wal.append(
            RecordKind::Data,
            &encode_raw_op(OP_PUT, "users", 1, &doc),
            Durability::None,
        )
        .unwrap();
        let record = wal
            .iter_from(wal.start_lsn())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let op = decode_op(record.payload()).unwrap();
        let offset = op.body.as_ptr().addr() - record.payload().as_ptr().addr();
        let mut segments = std::collections::HashMap::new();
        let mut arena = collection::arena::DocArena::default();
        match keep_doc(&record, offset, &mut segments, &mut arena).unwrap() {
            KeptDoc::InPlace(bytes) => {
                assert_eq!(&bytes[..], &doc[..]);
                assert_eq!(bytes.as_ptr(), op.body.as_ptr(), "the log's own bytes");
            }
            KeptDoc::Copied(_) => panic!("an aligned document was copied"),
        }
        assert_eq!(segments.len(), 1);
        // One byte further is not 16-byte aligned: the fallback copies it.
        match keep_doc(&record, offset + 1, &mut segments, &mut arena).unwrap() {
            KeptDoc::Copied(at) => assert_eq!(&arena.freeze().doc(at)[..], &doc[1..]),
            KeptDoc::InPlace(_) => panic!("an unaligned document was read in place"),
        }
    }
}
