//! Write transactions: snapshot isolation with first-committer-wins conflict detection, savepoints, and the
//! commit protocol (see [`crate::db`] for publication).
//!
//! A transaction reads the snapshot it began with plus its own writes, and buffers its writes as a list of
//! operations. Nothing is visible to anyone else, or written to the log, before commit. Rollback (or drop) discards
//! the buffer; a savepoint is a position in it.

use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};

use crate::collection::merge::Union;
use crate::collection::{self, DocBytes, Document, IndexDef, IndexKey};
use crate::db::{
    Collection, CommitInfo, CommitState, Database, DbVersion, Docs, EncodedOps, ROLE_PARTICIPANT,
    check_writes, encode_decision, encode_prepare, end_lsn_stamps, scanned_entries, stamp_end_lsn,
    stamp_time,
};
use crate::error::{Error, Result};
use crate::wal::{Durability, RecordKind};

/// One buffered write.
#[derive(Clone)]
pub(crate) struct Op {
    pub(crate) slot: u32,
    pub(crate) name: Arc<str>,
    pub(crate) defs: Arc<[IndexDef]>,
    pub(crate) id: u64,
    /// The new document, or `None` for a removal.
    pub(crate) doc: Option<DocBytes>,
    /// Where the document takes its commit's stamp, if it does.
    pub(crate) stamp: Option<Stamp>,
}

/// Where a document's bytes take its commit's stamp, each a `u64` (little-endian) at a byte offset into the
/// document: the end LSN of the log group that holds the write ([`crate::wal::Wal::append_group_stamped`]), and
/// the commit's time in milliseconds since the Unix epoch. Until commit both hold whatever was serialized (zero).
/// The stamped bytes are what the log holds, so a replay reads the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) end_lsn_at: usize,
    pub(crate) time_ms_at: usize,
}

/// A participant's answer to PREPARE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    /// Ready to commit: the participant's part is durable and will be applied on COMMIT.
    Commit,
    /// Refuses; the reason is reported to the caller of `commit`.
    Abort(String),
}

/// A resource that takes part in a two-phase commit (the seed's `ITransactionResource`): collections of another
/// [`Database`] (see [`Transaction::into_participant`]), storage adapters, or user resources.
///
/// Protocol: `prepare` once; then exactly one of `commit` or `abort` (either may be repeated after a crash, so
/// both must be idempotent). After a crash of the coordinator, an undecided transaction is aborted (presumed
/// abort) and its participants are told through [`Database::recover_participants`].
pub trait Participant: Send + Sync {
    /// A stable name, recorded in the coordinator's PREPARE record.
    fn name(&self) -> String;
    /// Phase one: make the transaction's part durable and vote.
    ///
    /// # Errors
    /// Any error counts as a vote to abort.
    fn prepare(&self, txid: u64) -> Result<Vote>;
    /// Phase two, after the coordinator durably decided to commit.
    ///
    /// # Errors
    /// Reported in `CommitInfo::participant_failures`; the transaction stays committed.
    fn commit(&self, txid: u64) -> Result<()>;
    /// Phase two, after the coordinator decided to abort (or presumed it).
    ///
    /// # Errors
    /// Reported to the caller of `recover_participants`.
    fn abort(&self, txid: u64) -> Result<()>;
}

/// A position in a transaction to roll back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Savepoint(u64);

/// Source of savepoint ids: unique in the process, so a savepoint of another transaction is never taken for one of
/// this transaction.
static NEXT_SAVEPOINT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A write transaction. Commit with [`Transaction::commit`]; dropping it rolls it back.
pub struct Transaction<'db> {
    db: &'db Database,
    snapshot: Arc<DbVersion>,
    durability: Durability,
    ops: Vec<Op>,
    /// Where in `ops` each document's last write is.
    latest: LastWrites,
    /// Active savepoints, oldest first: (id, number of ops when taken).
    savepoints: Vec<(u64, usize)>,
    participants: Vec<Arc<dyn Participant>>,
    /// Document collections this transaction creates, registered with the database once it commits.
    pub(crate) created_documents: Vec<Arc<crate::documents::Shared>>,
}

/// Where each document's last write is in a transaction's ops. A small transaction (most commit one or a few
/// writes) scans its ops backwards and allocates nothing for this; past [`LastWrites::SCAN_OPS`] writes a hash map
/// answers. Invariant: the map is empty while `ops` holds at most `SCAN_OPS` writes, and otherwise maps every
/// written `(slot, id)` to the index of its last write.
#[derive(Default)]
struct LastWrites {
    map: HashMap<(u32, u64), usize, foldhash::fast::RandomState>,
}

impl LastWrites {
    /// Up to this many writes, lookups scan.
    const SCAN_OPS: usize = 8;

    /// Index in `ops` of the last write of document `id` of collection `slot`.
    fn get(&self, ops: &[Op], slot: u32, id: u64) -> Option<usize> {
        if ops.len() <= Self::SCAN_OPS {
            debug_assert!(self.map.is_empty());
            ops.iter().rposition(|op| op.slot == slot && op.id == id)
        } else {
            debug_assert!(!self.map.is_empty());
            self.map.get(&(slot, id)).copied()
        }
    }

    /// Whether `ops[i]` is the last write of its document.
    fn is_last(&self, ops: &[Op], i: usize) -> bool {
        self.get(ops, ops[i].slot, ops[i].id) == Some(i)
    }

    /// Takes note of the write just pushed onto `ops`.
    fn pushed(&mut self, ops: &[Op]) {
        match ops.len() {
            n if n <= Self::SCAN_OPS => {}
            n if n == Self::SCAN_OPS + 1 => self.rebuild(ops),
            n => {
                let op = &ops[n - 1];
                self.map.insert((op.slot, op.id), n - 1);
            }
        }
    }

    /// Starts over from `ops` (after a rollback to a savepoint).
    fn rebuild(&mut self, ops: &[Op]) {
        self.map.clear();
        if ops.len() > Self::SCAN_OPS {
            // Later writes overwrite earlier ones: each document maps to its last write.
            self.map
                .extend(ops.iter().enumerate().map(|(i, op)| ((op.slot, op.id), i)));
        }
    }
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("snapshot_seq", &self.snapshot.seq)
            .field("writes", &self.ops.len())
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl<'db> Transaction<'db> {
    pub(crate) fn new(db: &'db Database, snapshot: Arc<DbVersion>, durability: Durability) -> Self {
        Self {
            db,
            snapshot,
            durability,
            ops: Vec::new(),
            latest: LastWrites::default(),
            savepoints: Vec::new(),
            participants: Vec::new(),
            created_documents: Vec::new(),
        }
    }

    /// The version this transaction reads (under its own writes).
    pub(crate) fn snapshot_version(&self) -> &DbVersion {
        &self.snapshot
    }

    /// The document with this id as this transaction sees it: its own writes over its snapshot.
    #[must_use]
    pub fn get<T: Document>(&self, collection: &Collection<T>, id: u64) -> Option<&T::Archived> {
        // A handle of another database: its slot means nothing here (and its type may differ).
        collection.check_owner(self.db).ok()?;
        match self.latest.get(&self.ops, collection.slot, id) {
            Some(i) => self.ops[i].doc.as_deref().map(collection::archived::<T>),
            None => self
                .snapshot
                .collection(collection.slot)?
                .get(id)
                .map(|d| collection::archived::<T>(d)),
        }
    }

    /// This transaction's last write of each document of `collection` that it writes (`None`: removed), by id.
    fn own_writes(&self, slot: u32) -> Vec<(u64, Option<&DocBytes>)> {
        let mut own: Vec<(u64, Option<&DocBytes>)> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| op.slot == slot && self.latest.is_last(&self.ops, *i))
            .map(|(_, op)| (op.id, op.doc.as_ref()))
            .collect();
        own.sort_unstable_by_key(|(id, _)| *id);
        own
    }

    /// Number of documents as this transaction sees them.
    #[must_use]
    pub fn count<T: Document>(&self, collection: &Collection<T>) -> usize {
        if collection.check_owner(self.db).is_err() {
            return 0;
        }
        let view = self.snapshot.collection(collection.slot);
        let mut count = view.map_or(0, |v| v.len());
        for (id, doc) in self.own_writes(collection.slot) {
            let before = view.and_then(|v| v.get(id)).is_some();
            match (before, doc.is_some()) {
                (false, true) => count += 1,
                (true, false) => count -= 1,
                _ => {}
            }
        }
        count
    }

    /// Every document in id order as this transaction sees them: its own writes over its snapshot.
    #[must_use]
    pub fn iter<'t, T: Document>(&'t self, collection: &Collection<T>) -> Docs<'t, T> {
        if collection.check_owner(self.db).is_err() {
            return Box::new(std::iter::empty());
        }
        let slot = collection.slot;
        let own: Vec<(u64, &'t [u8])> = self
            .own_writes(slot)
            .into_iter()
            .filter_map(|(id, doc)| doc.map(|d| (id, d.as_bytes())))
            .collect();
        let seen = self
            .snapshot
            .collection(slot)
            .into_iter()
            .flat_map(move |v| {
                v.iter()
                    .filter(move |(id, _)| self.latest.get(&self.ops, slot, *id).is_none())
            });
        Box::new(
            Union::new(seen, own.into_iter(), |a, b| a.0.cmp(&b.0))
                .map(|(id, doc)| (id, collection::archived::<T>(doc))),
        )
    }

    /// Documents whose key in `index` lies in `range`, in index order (ties by id), as this transaction sees them:
    /// its own writes (with their new keys) over its snapshot.
    ///
    /// # Errors
    /// [`Error::UnknownIndex`]; [`Error::UnknownCollection`] for a handle of another database.
    pub fn range<'t, T: Document, K: IndexKey>(
        &'t self,
        collection: &Collection<T>,
        index: &str,
        range: impl RangeBounds<K>,
    ) -> Result<Docs<'t, T>> {
        collection.check_owner(self.db)?;
        let position = collection.index_position(index)?;
        let slot = collection.slot;
        let (start, end) = collection::key::encode_bounds(&range);
        let def = &collection.defs[position];
        let mut own: Vec<(Vec<u8>, u64, &'t [u8])> = self
            .own_writes(slot)
            .into_iter()
            .filter_map(|(id, doc)| {
                let doc = doc?.as_bytes();
                let key = def.key_of(doc)?;
                in_bounds(&key, &start, &end).then_some((key, id, doc))
            })
            .collect();
        own.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let current = self
            .snapshot
            .defs(slot)
            .is_some_and(|d| Arc::ptr_eq(d, &collection.defs));
        let view = self.snapshot.collection(slot);
        // A snapshot from before the collection was bound (or its indexes changed) has no such index: scan.
        let scanned = match view {
            Some(v) if !current => scanned_entries(v, def, &start, &end),
            _ => Vec::new(),
        };
        let indexed = view.filter(|_| current).into_iter().flat_map(move |v| {
            v.index_entries(position, start.clone(), end.clone())
                .map(|(key, id)| (key.key().to_vec(), id))
        });
        let seen = indexed
            .chain(scanned)
            .filter(move |(_, id)| self.latest.get(&self.ops, slot, *id).is_none())
            .map(move |(key, id)| {
                let doc = view
                    .and_then(|v| v.get(id))
                    .expect("index entries point at documents");
                (key, id, doc)
            });
        Ok(Box::new(
            Union::new(seen, own.into_iter(), |a, b| (&a.0, a.1).cmp(&(&b.0, b.1)))
                .map(|(_, id, doc)| (id, collection::archived::<T>(doc))),
        ))
    }

    /// Documents whose key in `index` equals `key`, as this transaction sees them.
    ///
    /// # Errors
    /// As [`Transaction::range`].
    pub fn find<'t, T: Document, K: IndexKey>(
        &'t self,
        collection: &Collection<T>,
        index: &str,
        key: &K,
    ) -> Result<Docs<'t, T>> {
        self.range::<T, K>(
            collection,
            index,
            (Bound::Included(key), Bound::Included(key)),
        )
    }

    /// The first document whose key in `index` equals `key`, as this transaction sees them.
    ///
    /// # Errors
    /// As [`Transaction::range`].
    pub fn find_one<'t, T: Document, K: IndexKey>(
        &'t self,
        collection: &Collection<T>,
        index: &str,
        key: &K,
    ) -> Result<Option<(u64, &'t T::Archived)>> {
        Ok(self.find(collection, index, key)?.next())
    }

    fn exists<T: Document>(&self, collection: &Collection<T>, id: u64) -> bool {
        self.get(collection, id).is_some()
    }

    fn serialize<T: Document>(&self, collection: &Collection<T>, value: &T) -> Result<DocBytes> {
        collection.check_owner(self.db)?;
        let bytes = collection::serialize(value)
            .map_err(|e| Error::InvalidOptions(format!("serialization failed: {e}")))?;
        let max = self.db.inner.options.max_document_bytes;
        if bytes.len() > max {
            return Err(Error::DocumentTooLarge {
                collection: collection.name.to_string(),
                len_bytes: bytes.len(),
                max_bytes: max,
            });
        }
        Ok(bytes)
    }

    fn push<T: Document>(&mut self, collection: &Collection<T>, id: u64, doc: Option<DocBytes>) {
        self.push_stamped(collection, id, doc, None);
    }

    fn push_stamped<T: Document>(
        &mut self,
        collection: &Collection<T>,
        id: u64,
        doc: Option<DocBytes>,
        stamp: Option<Stamp>,
    ) {
        debug_assert!(
            stamp.is_none_or(|s| doc
                .as_ref()
                .is_some_and(|d| { s.end_lsn_at + 8 <= d.len() && s.time_ms_at + 8 <= d.len() })),
            "a stamp lies inside its document"
        );
        self.ops.push(Op {
            slot: collection.slot,
            name: Arc::clone(&collection.name),
            defs: Arc::clone(&collection.defs),
            id,
            doc,
            stamp,
        });
        self.latest.pushed(&self.ops);
    }

    /// Inserts or replaces document `id` with `value`, whose bytes take the commit's end LSN and time at the
    /// offsets `stamp` gives (computed from the serialized bytes' length).
    ///
    /// # Errors
    /// As [`Transaction::put`].
    pub(crate) fn put_stamped<T: Document>(
        &mut self,
        collection: &Collection<T>,
        id: u64,
        value: &T,
        stamp: impl FnOnce(usize) -> Stamp,
    ) -> Result<()> {
        let bytes = self.serialize(collection, value)?;
        collection
            .ids
            .fetch_max(id.saturating_add(1), Ordering::Relaxed);
        let stamp = stamp(bytes.len());
        self.push_stamped(collection, id, Some(bytes), Some(stamp));
        Ok(())
    }

    /// Inserts a new document and returns its id: allocated by auto-increment, or taken from the document by the
    /// collection's primary-key function.
    ///
    /// # Errors
    /// [`Error::DuplicateId`] if the id is taken; [`Error::DocumentTooLarge`]; [`Error::UnknownCollection`].
    pub fn insert<T: Document>(&mut self, collection: &Collection<T>, value: &T) -> Result<u64> {
        let bytes = self.serialize(collection, value)?;
        let id = match &collection.primary_key {
            Some(key) => key(collection::archived::<T>(&bytes)),
            None => collection.ids.fetch_add(1, Ordering::Relaxed),
        };
        if self.exists(collection, id) {
            return Err(Error::DuplicateId {
                collection: collection.name.to_string(),
                id,
            });
        }
        self.push(collection, id, Some(bytes));
        Ok(id)
    }

    /// Inserts or replaces document `id` (upsert).
    ///
    /// # Errors
    /// [`Error::DocumentTooLarge`]; [`Error::UnknownCollection`].
    pub fn put<T: Document>(
        &mut self,
        collection: &Collection<T>,
        id: u64,
        value: &T,
    ) -> Result<()> {
        let bytes = self.serialize(collection, value)?;
        collection
            .ids
            .fetch_max(id.saturating_add(1), Ordering::Relaxed);
        self.push(collection, id, Some(bytes));
        Ok(())
    }

    /// Replaces existing document `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist; as [`Transaction::put`].
    pub fn update<T: Document>(
        &mut self,
        collection: &Collection<T>,
        id: u64,
        value: &T,
    ) -> Result<()> {
        if !self.exists(collection, id) {
            return Err(Error::NotFound {
                collection: collection.name.to_string(),
                id,
            });
        }
        self.put(collection, id, value)
    }

    /// Replaces existing document `id` with what `change` makes of its current (archived) value.
    ///
    /// # Errors
    /// As [`Transaction::update`].
    pub fn modify<T: Document>(
        &mut self,
        collection: &Collection<T>,
        id: u64,
        change: impl FnOnce(&T::Archived) -> T,
    ) -> Result<()> {
        let current = self.get(collection, id).ok_or_else(|| Error::NotFound {
            collection: collection.name.to_string(),
            id,
        })?;
        let value = change(current);
        self.put(collection, id, &value)
    }

    /// Removes document `id`. Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::UnknownCollection`].
    pub fn remove<T: Document>(&mut self, collection: &Collection<T>, id: u64) -> Result<bool> {
        collection.check_owner(self.db)?;
        if !self.exists(collection, id) {
            return Ok(false);
        }
        self.push(collection, id, None);
        Ok(true)
    }

    /// Marks the current point: [`Transaction::rollback_to`] undoes every write made after it.
    pub fn savepoint(&mut self) -> Savepoint {
        let id = NEXT_SAVEPOINT.fetch_add(1, Ordering::Relaxed);
        self.savepoints.push((id, self.ops.len()));
        Savepoint(id)
    }

    /// Undoes every write made after `savepoint`. The savepoint stays valid for further rollbacks; savepoints taken
    /// after it are discarded.
    ///
    /// # Errors
    /// [`Error::InvalidSavepoint`] if it belongs to another transaction, or was discarded by a rollback to an earlier
    /// savepoint.
    pub fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        let Some(index) = self
            .savepoints
            .iter()
            .position(|&(id, _)| id == savepoint.0)
        else {
            return Err(Error::InvalidSavepoint(savepoint.0));
        };
        let position = self.savepoints[index].1;
        self.savepoints.truncate(index + 1);
        debug_assert!(position <= self.ops.len());
        self.ops.truncate(position);
        self.latest.rebuild(&self.ops);
        Ok(())
    }

    /// Commits: checks for conflicts (another transaction committed a write to a document this one wrote, after
    /// this one began) and unique indexes, writes one log group, waits for the transaction's durability, and
    /// publishes the new version in commit order.
    ///
    /// # Errors
    /// [`Error::Conflict`], [`Error::UniqueViolation`]: nothing was written; retry. [`Error::Poisoned`] and I/O
    /// errors: the outcome is unknown until the database is reopened.
    pub fn commit(mut self) -> Result<CommitInfo> {
        // Collections whose creation a savepoint rolled back are not registered.
        let created = crate::documents::still_created(&self);
        let last = self.take_final_writes();
        let info =
            self.db
                .inner
                .commit(&self.snapshot, &last, self.durability, &self.participants)?;
        if !created.is_empty() {
            self.db.register_documents(created);
        }
        Ok(info)
    }

    /// The database this transaction writes to.
    pub(crate) fn snapshot_database(&self) -> &'db Database {
        self.db
    }

    /// Only the last write of each document goes to the log and the new version: takes those out of the
    /// transaction (which is being committed), in order.
    fn take_final_writes(&mut self) -> Vec<Op> {
        if (0..self.ops.len()).all(|i| self.latest.is_last(&self.ops, i)) {
            return std::mem::take(&mut self.ops);
        }
        self.ops
            .iter()
            .enumerate()
            .filter(|(i, _)| self.latest.is_last(&self.ops, *i))
            .map(|(_, op)| op.clone())
            .collect()
    }

    /// Adds a participant: the commit becomes two-phase (PREPARE logged and synced, every participant votes, then
    /// the decision is logged), and the transaction commits only if every participant votes to commit.
    pub fn enlist(&mut self, participant: Arc<dyn Participant>) {
        self.participants.push(participant);
    }

    /// Turns this transaction into a participant of another database's transaction: it commits atomically with
    /// that one (two data directories, one outcome). At PREPARE it checks conflicts and unique indexes, logs and
    /// syncs its writes as PREPARE, and holds its database's commit lock until the decision (another commit waits;
    /// a PREPARE that cannot get the lock within 5 s votes to abort).
    #[must_use]
    pub fn into_participant(mut self) -> Arc<dyn Participant> {
        let ops = self.take_final_writes();
        Arc::new(DatabaseParticipant {
            db: self.db.clone(),
            snapshot: self.snapshot,
            ops,
            prepared: Mutex::new(None),
        })
    }

    /// Discards every write (the same as dropping the transaction).
    pub fn rollback(self) {}
}

/// A transaction of one database taking part in another's two-phase commit.
struct DatabaseParticipant {
    db: Database,
    snapshot: Arc<DbVersion>,
    ops: Vec<Op>,
    prepared: Mutex<Option<Prepared>>,
}

struct Prepared {
    txid: u64,
    state: ArcMutexGuard<RawMutex, CommitState>,
    /// The writes as PREPARE logged them.
    ops: Vec<Op>,
}

const PREPARE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl Participant for DatabaseParticipant {
    fn name(&self) -> String {
        format!("database:{:p}", Arc::as_ptr(&self.db.inner))
    }

    fn prepare(&self, txid: u64) -> Result<Vote> {
        let inner = &self.db.inner;
        let Some(state) = inner.commit.try_lock_arc_for(PREPARE_LOCK_TIMEOUT) else {
            return Ok(Vote::Abort(
                "the participant database is busy committing".into(),
            ));
        };
        inner.wal.check_poison()?;
        if let Some(t) = self.db.in_doubt().first() {
            return Ok(Vote::Abort(Error::InDoubt { txid: t.txid }.to_string()));
        }
        if let Err(e) = check_writes(&state.latest, &self.snapshot, &self.ops) {
            return Ok(Vote::Abort(e.to_string()));
        }
        let timed = stamp_time(&self.ops);
        let ops = timed.as_deref().unwrap_or(&self.ops);
        let payloads = EncodedOps::new(ops);
        let prepare = encode_prepare(txid, ROLE_PARTICIPANT, &[]);
        let mut records = payloads.records();
        records.push((RecordKind::Prepare, &prepare));
        let group =
            inner
                .wal
                .append_group_stamped(&records, Durability::None, &end_lsn_stamps(ops))?;
        // What COMMIT applies: the writes as PREPARE logged them, stamps included.
        let ops = stamp_end_lsn(ops, group.end_lsn).unwrap_or_else(|| ops.to_vec());
        inner.wal.wait_durable(group.end_lsn, Durability::Sync)?;
        *self.prepared.lock() = Some(Prepared { txid, state, ops });
        Ok(Vote::Commit)
    }

    fn commit(&self, txid: u64) -> Result<()> {
        let Some(Prepared {
            txid: prepared,
            mut state,
            ops,
        }) = self.prepared.lock().take()
        else {
            return Ok(()); // already applied: commit is idempotent
        };
        debug_assert_eq!(prepared, txid);
        let inner = &self.db.inner;
        // The commit lock was held since PREPARE checked the writes: nothing committed in between.
        let decision = encode_decision(state.latest.seq + 1, txid);
        let installed = inner.log_and_install(
            &mut state,
            &[(RecordKind::Commit, &decision)],
            &[],
            Durability::Sync,
            &ops,
        )?;
        drop(state);
        inner
            .publish_after(installed, Durability::Sync, Vec::new())
            .map(|_| ())
    }

    fn abort(&self, txid: u64) -> Result<()> {
        let Some(prepared) = self.prepared.lock().take() else {
            return Ok(());
        };
        debug_assert_eq!(prepared.txid, txid);
        self.db.inner.log_abort(txid)
    }
}

/// Whether the encoded key `key` lies between `start` and `end`.
pub(crate) fn in_bounds(key: &[u8], start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    let above = match start {
        Bound::Included(s) => key >= s.as_slice(),
        Bound::Excluded(s) => key > s.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match end {
        Bound::Included(e) => key <= e.as_slice(),
        Bound::Excluded(e) => key < e.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}
