//! Collections: versions of a collection's documents and indexes, and the typed view of them.
//!
//! This layer knows nothing of files or the log. A [`Store`] holds every version of a collection's documents and
//! index entries that a live snapshot may read: each document and each index entry is a version chain
//! (`mvcc.rs`) stamped with commit sequence numbers. A commit writes its new versions in place, in O(changes), and
//! they stay invisible until the database publishes its sequence number; a reader ([`View`]) sees, for each key,
//! the newest version at or below its snapshot's sequence number, without taking a lock. Superseded versions are
//! pruned ([`Store::collect`]) once no live snapshot can see them.
//!
//! Documents are found by id through a hash map (point reads: one lookup) and in id order through a skip list;
//! each index is a skip list of entries (ranges, lowest, greatest), plus a hash map by key for a unique index.
//!
//! Under those versions (the *delta*) lies the store's *base* (`base.rs`): immutable sorted documents and index
//! entries that every reader of the store sees where the delta has no version for it. A database opens its
//! collections as bases (the last checkpoint's documents, read in place from the mapped file, with the log's later
//! writes folded in), so opening builds no per-document map entries; commits then write the delta. A removal of a
//! document or entry the base holds stays in the delta as a tombstone.
//!
//! Documents are rkyv archives, serialized once per write: the same bytes are the WAL payload and the in-memory
//! copy. Reads return `&T::Archived` without copying. The one unchecked access lives in [`archived`]; its safety
//! rests on the invariant below.
//!
//! Invariants:
//! - every document in a collection bound to type `T` is a valid archive of `T`: it was produced by
//!   `rkyv::to_bytes::<T>` in this process, or validated with bytecheck (`rkyv::access`) when the collection was
//!   bound to `T` after recovery;
//! - at every published sequence number, each index holds exactly one visible `(key, id)` entry per visible
//!   document whose extractor returns a key, and none for a document whose extractor returns `None` (sparse); a
//!   unique index never holds two ids under one key;
//! - a version visible to a live snapshot is never pruned (`mvcc.rs`), so references a [`View`] returns live as
//!   long as the snapshot it was made from.

pub mod arena;
mod base;
pub mod key;
pub(crate) mod merge;
mod mvcc;

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable, Serialize};
use smallvec::SmallVec;

pub use crate::checkpoint::files::SharedBytes;
use base::{BaseDocs, BaseIndex};
pub use key::IndexKey;
use merge::Union;
use mvcc::{Seen, VersionedMap, Written};

/// A type that can be stored in a typed collection: derive rkyv's `Archive` and `Serialize` (with
/// `#[rkyv(derive(Debug))]` or not; bytecheck is on by default).
pub trait Document:
    Archive<
        Archived: Portable
                      + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Send
                      + Sync
                      + 'static,
    > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + Send
    + Sync
    + 'static
{
}

impl<T> Document for T where
    T: Archive<
            Archived: Portable
                          + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Send
                          + Sync
                          + 'static,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + Send
        + Sync
        + 'static
{
}

/// Sixteen bytes, 16-byte aligned: the unit a document's archive is stored in.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(16))]
struct Block([u8; 16]);

#[derive(Clone)]
enum Storage {
    /// The document's own allocation: the reference counts and the bytes together.
    Owned(Arc<[Block]>),
    /// A range of bytes owned elsewhere, starting at `start` (16-byte aligned).
    Shared {
        owner: Arc<dyn SharedBytes>,
        start: usize,
    },
}

/// The bytes of one stored document: immutable, shared, and 16-byte aligned as rkyv needs. Either one allocation
/// holding the reference counts and the bytes (reaching a document from its map entry is one pointer), or a range
/// of a shared buffer such as a mapped snapshot file.
#[derive(Clone)]
pub struct DocBytes {
    storage: Storage,
    len: usize,
}

impl DocBytes {
    /// The `len` bytes at `start` of `owner`, read in place when they are 16-byte aligned (copied otherwise).
    ///
    /// # Panics
    /// If the range is not inside `owner`'s bytes.
    #[must_use]
    pub fn shared(owner: Arc<dyn SharedBytes>, start: usize, len: usize) -> Self {
        let bytes = &owner.bytes()[start..start + len];
        if !bytes.as_ptr().addr().is_multiple_of(16) {
            return Self::copy_from(bytes);
        }
        Self {
            storage: Storage::Shared { owner, start },
            len,
        }
    }

    /// A copy of `bytes`.
    #[must_use]
    pub fn copy_from(bytes: &[u8]) -> Self {
        // Whole blocks are fixed 16-byte copies; the exact-size iterator lets the Arc be allocated once.
        let whole = bytes.chunks_exact(16);
        let rest = whole.remainder();
        let last = (!rest.is_empty()).then(|| {
            let mut block = [0u8; 16];
            block[..rest.len()].copy_from_slice(rest);
            Block(block)
        });
        let blocks = whole
            .map(|chunk| Block(chunk.try_into().expect("16 bytes")))
            .chain(last)
            .collect();
        Self {
            storage: Storage::Owned(blocks),
            len: bytes.len(),
        }
    }

    /// The bytes (their address is a multiple of 16).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned(blocks) => &bytemuck::cast_slice::<Block, u8>(blocks)[..self.len],
            Storage::Shared { owner, start } => &owner.bytes()[*start..*start + self.len],
        }
    }
}

impl std::ops::Deref for DocBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Debug for DocBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocBytes")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Serializes a document once.
///
/// # Errors
/// rkyv's error, as text (serialization of plain data does not fail in practice).
pub fn serialize<T: Document>(value: &T) -> Result<DocBytes, String> {
    thread_local! {
        /// Where documents are serialized before being copied out at their exact size (growing a fresh buffer step
        /// by step cost several reallocations per document).
        static SCRATCH: std::cell::Cell<AlignedVec> = std::cell::Cell::new(AlignedVec::new());
    }
    let mut scratch = SCRATCH.take();
    scratch.clear();
    let result = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, scratch);
    let scratch = result.map_err(|e| e.to_string())?;
    let bytes = DocBytes::copy_from(&scratch);
    if scratch.capacity() <= 1 << 20 {
        SCRATCH.set(scratch);
    }
    Ok(bytes)
}

/// Checks that `bytes` are a valid archive of `T` (bytecheck). Run once per document when a recovered collection is
/// bound to its type.
///
/// # Errors
/// What failed to validate.
pub fn validate<T: Document>(bytes: &[u8]) -> Result<(), String> {
    rkyv::access::<T::Archived, rancor::Error>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The archived view of document bytes of a collection bound to `T` (the bytes of a [`DocBytes`]).
#[must_use]
pub fn archived<T: Document>(bytes: &[u8]) -> &T::Archived {
    debug_assert!(
        bytes.as_ptr().addr().is_multiple_of(16),
        "documents are 16-byte aligned"
    );
    // SAFETY: module invariant: every document of a collection bound to `T` was serialized from a `T` by this
    // process or validated as a `T::Archived` with bytecheck before the collection was bound; `DocBytes` keeps the
    // 16-byte alignment rkyv's layout needs, and the bytes are immutable behind their `Arc`.
    unsafe { rkyv::access_unchecked::<T::Archived>(bytes) }
}

/// A collection's primary-key function: the id of a document, taken from the document.
pub type PrimaryKeyFn<T> = Arc<dyn Fn(&<T as Archive>::Archived) -> u64 + Send + Sync>;

type Extract = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;
type Describe = Arc<dyn Fn(&[u8]) -> String + Send + Sync>;

/// One secondary index, erased over the document type.
#[derive(Clone)]
pub struct IndexDef {
    /// Its name, unique within the collection.
    pub name: Arc<str>,
    /// Whether two documents may share a key.
    pub unique: bool,
    extract: Extract,
    describe: Describe,
}

impl IndexDef {
    /// An index over untyped archive bytes: `extract` gives a document's encoded key (`None`: not indexed) and
    /// `describe` the readable form of its key for error messages.
    pub(crate) fn raw(
        name: &str,
        unique: bool,
        extract: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
        describe: impl Fn(&[u8]) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            unique,
            extract: Arc::new(extract),
            describe: Arc::new(describe),
        }
    }

    /// The encoded key of the document `doc` (archive bytes of the collection's type), or `None` if the index
    /// skips it.
    #[must_use]
    pub fn key_of(&self, doc: &[u8]) -> Option<Vec<u8>> {
        (self.extract)(doc)
    }
}

impl Debug for IndexDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexDef")
            .field("name", &self.name)
            .field("unique", &self.unique)
            .finish_non_exhaustive()
    }
}

/// How a typed collection is declared: its primary key and its secondary indexes.
pub struct Spec<T: Document> {
    pub(crate) indexes: Vec<IndexDef>,
    pub(crate) primary_key: Option<PrimaryKeyFn<T>>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Document> Default for Spec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Document> Spec<T> {
    /// No secondary index; ids are allocated by auto-increment.
    #[must_use]
    pub fn new() -> Self {
        Self {
            indexes: Vec::new(),
            primary_key: None,
            _type: PhantomData,
        }
    }

    /// A spec with these (already erased) secondary indexes and auto-increment ids.
    pub(crate) fn from_defs(indexes: Vec<IndexDef>) -> Self {
        Self {
            indexes,
            primary_key: None,
            _type: PhantomData,
        }
    }

    /// Takes each document's id from the document instead of allocating it.
    #[must_use]
    pub fn primary_key(
        mut self,
        key: impl Fn(&T::Archived) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.primary_key = Some(Arc::new(key));
        self
    }

    /// A unique index: a second document with the same key fails the commit with `Error::UniqueViolation`.
    #[must_use]
    pub fn unique<K: IndexKey + Debug>(
        self,
        name: &str,
        key: impl Fn(&T::Archived) -> K + Send + Sync + 'static,
    ) -> Self {
        self.sparse(name, true, move |doc| Some(key(doc)))
    }

    /// A non-unique index, ordered by key then id.
    #[must_use]
    pub fn index<K: IndexKey + Debug>(
        self,
        name: &str,
        key: impl Fn(&T::Archived) -> K + Send + Sync + 'static,
    ) -> Self {
        self.sparse(name, false, move |doc| Some(key(doc)))
    }

    /// A sparse index: documents for which `key` returns `None` are not indexed. Composite keys are tuples.
    ///
    /// # Panics
    /// If the collection already has an index of that name.
    #[must_use]
    pub fn sparse<K: IndexKey + Debug>(
        mut self,
        name: &str,
        unique: bool,
        key: impl Fn(&T::Archived) -> Option<K> + Send + Sync + 'static,
    ) -> Self {
        assert!(
            self.indexes.iter().all(|d| &*d.name != name),
            "index {name:?} declared twice"
        );
        let key = Arc::new(key);
        let describe_key = Arc::clone(&key);
        self.indexes.push(IndexDef {
            name: name.into(),
            unique,
            extract: Arc::new(move |bytes| key(archived::<T>(bytes)).map(|k| k.to_key_bytes())),
            describe: Arc::new(move |bytes| {
                describe_key(archived::<T>(bytes)).map_or_else(String::new, |k| format!("{k:?}"))
            }),
        });
        self
    }
}

/// A write (or a rebuild) a store could not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// A document does not validate as the collection's type (when a recovered collection is bound).
    Invalid {
        /// The document.
        id: u64,
        /// What failed to validate.
        reason: String,
    },
    /// A unique index already holds the key for another document.
    Unique {
        /// The index.
        index: Arc<str>,
        /// The key, as the document's extractor shows it.
        key: String,
        /// The document already holding it.
        holder: u64,
    },
}

/// One write of a commit to a store: document `id` becomes `doc` (`None`: removed).
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// The document's id.
    pub id: u64,
    /// Its new bytes, or `None` for a removal.
    pub doc: Option<&'a DocBytes>,
}

/// Versions superseded by commit `seq`, to prune once no snapshot below `seq` is left.
enum Garbage {
    Doc {
        seq: u64,
        id: u64,
    },
    Entry {
        seq: u64,
        index: usize,
        key: EntryKey,
    },
}

impl Garbage {
    fn seq(&self) -> u64 {
        match self {
            Self::Doc { seq, .. } | Self::Entry { seq, .. } => *seq,
        }
    }
}

/// A write's change to one index: its entry moves from `old_key` to `new_key` (either may be absent).
struct EntryChange<'a> {
    index: usize,
    write: Write<'a>,
    old_key: Option<Vec<u8>>,
    new_key: Option<Vec<u8>>,
}

/// An index entry's key as a stream of entries meets it: in the delta or in the base.
enum EntryAt<'s> {
    Delta(crossbeam_skiplist::set::Entry<'s, EntryKey>),
    Base(&'s EntryKey),
}

impl EntryAt<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Self::Delta(entry) => entry.value(),
            Self::Base(key) => key,
        }
    }
}

/// The encoded key of an index entry met by [`View::index_entries`].
pub struct EntryKeyRef<'s> {
    entry: EntryAt<'s>,
    unique: bool,
}

impl EntryKeyRef<'_> {
    /// The encoded key.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        let key = self.entry.key();
        if self.unique {
            key
        } else {
            &key[..key.len().saturating_sub(8)]
        }
    }
}

/// A check that document bytes are a valid archive of a collection's type (see [`validate`]).
pub type Validate = dyn Fn(&[u8]) -> Result<(), String> + Sync;

/// Most threads a rebuild of a store's indexes uses.
pub const MAX_BUILD_THREADS: usize = 4;

/// An index entry's key: inline up to 32 bytes (so that comparing keys in the hash map and the skip list costs no
/// pointer chase), on the heap beyond.
type EntryKey = SmallVec<[u8; 32]>;

/// What an index entry holds while it exists: the document's id, and for a unique index the document itself (kept
/// in step with every write of the document), so that a unique lookup costs one hash lookup.
#[derive(Clone, Debug)]
struct IndexEntry {
    id: u64,
    doc: Option<DocBytes>,
}

/// One secondary index of a store. Entry keys are the encoded key for a unique index, and the encoded key followed
/// by the id (8 bytes, big-endian) for the others; the encoding is prefix-free, so entries sort by (key, id).
struct IndexStore {
    unique: bool,
    entries: VersionedMap<EntryKey, IndexEntry>,
    /// The entries of the base's documents.
    base: Arc<BaseIndex>,
}

/// An index stored with a base, by name.
struct StoredIndex {
    name: Arc<str>,
    unique: bool,
    index: Arc<BaseIndex>,
}

/// An index as a snapshot file stores it, for [`Store::based`]: entries `(encoded key, id)` in the index's order.
pub struct StoredEntries<'a> {
    /// The index's name.
    pub name: &'a str,
    /// Whether it is unique.
    pub unique: bool,
    /// Its entries.
    pub entries: Vec<(&'a [u8], u64)>,
}

impl IndexStore {
    fn entry_key(&self, key: &[u8], id: u64) -> EntryKey {
        entry_key(self.unique, key, id)
    }

    /// The id holding entry `key` in the newest version: `None` if none (or removed).
    fn latest_holder(&self, key: &[u8], base: &BaseDocs) -> Option<u64> {
        match self.entries.latest(key) {
            Some((_, entry)) => entry.map(|e| e.id),
            None => self.base.get(key).map(|position| base.at(position).0),
        }
    }
}

/// The entry key of `id` under `key` in an index (`unique` or not).
fn entry_key(unique: bool, key: &[u8], id: u64) -> EntryKey {
    let mut entry = EntryKey::from_slice(key);
    if !unique {
        entry.extend_from_slice(&id.to_be_bytes());
    }
    entry
}

/// The documents and indexes of one collection, every version a live snapshot may read.
///
/// Readers (through [`View`]) take no lock; the one committer changes it in place. A commit stamps what it writes
/// with its sequence number, which no snapshot sees before the database publishes it.
pub struct Store {
    /// Shared with the store this one was rebuilt from, if any (binding a recovered collection adds indexes, not a
    /// copy of its documents).
    base: Arc<BaseDocs>,
    /// What conflict checks see as the last write of a document of the base: the base's sequence number, or for a
    /// re-based store a lower bound that no live transaction is below (see [`Store::rebase_prepare`]).
    base_seq: u64,
    /// The delta: every version written since the base.
    docs: VersionedMap<u64, DocBytes>,
    /// Indexes stored with the base (read from a snapshot) for a store not yet bound to its type: binding takes
    /// each one that still matches its documents.
    stored: Vec<StoredIndex>,
    indexes: Vec<IndexStore>,
    /// Ids below this were used at least once.
    next_id: AtomicU64,
    /// Sequence number of the newest commit that wrote to this store (or of the checkpoint it was loaded from).
    changed_seq: AtomicU64,
    /// In commit order (the committer's only; the mutex is uncontended).
    garbage: Mutex<VecDeque<Garbage>>,
    /// Sequence number of the oldest garbage (`u64::MAX`: none), so that a commit skips stores with nothing to
    /// collect without taking their lock.
    oldest_garbage: AtomicU64,
    /// Whether commits record the keys they write (while a re-base is prepared: [`Store::rebase_prepare`]).
    recording: AtomicBool,
    /// The keys written since recording started.
    recorded: Mutex<Vec<Recorded>>,
}

/// A key a commit wrote while a re-base was prepared.
enum Recorded {
    Doc(u64),
    Entry(usize, EntryKey),
}

impl Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("base", &self.base.len())
            .field("delta", &self.docs.key_count())
            .field("indexes", &self.indexes.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store with the indexes of `defs`.
    #[must_use]
    pub fn new(defs: &[IndexDef]) -> Self {
        Self::over(
            Arc::new(BaseDocs::empty()),
            defs.iter()
                .map(|d| (d.unique, Arc::new(BaseIndex::empty())))
                .collect(),
        )
    }

    /// A store with an empty delta over `base`, with `indexes` (unique or not, and their entries in the base).
    fn over(base: Arc<BaseDocs>, indexes: Vec<(bool, Arc<BaseIndex>)>) -> Self {
        let changed_seq = base.seq;
        Self {
            base_seq: base.seq,
            base,
            docs: VersionedMap::with_capacity(0),
            stored: Vec::new(),
            indexes: indexes
                .into_iter()
                .map(|(unique, base)| IndexStore {
                    unique,
                    entries: VersionedMap::with_capacity(0),
                    base,
                })
                .collect(),
            next_id: AtomicU64::new(0),
            changed_seq: AtomicU64::new(changed_seq),
            garbage: Mutex::new(VecDeque::new()),
            oldest_garbage: AtomicU64::new(u64::MAX),
            recording: AtomicBool::new(false),
            recorded: Mutex::new(Vec::new()),
        }
    }

    /// A store with no index over the documents `docs` (strictly ascending ids; from a checkpoint, or folded from
    /// a replay by [`Store::folded`]) as of commit `seq`, ids below `next_id` used, with the indexes `stored` with
    /// them (from a checkpoint). A collection gets its indexes when it is bound to its type ([`Store::rebuilt`]),
    /// which takes a stored index only if it matches the documents.
    ///
    /// # Errors
    /// What is wrong with a stored index: an entry naming no document, entries out of order or repeated, or an
    /// index stored twice.
    pub fn based(
        docs: Vec<(u64, DocBytes)>,
        seq: u64,
        next_id: u64,
        stored: Vec<StoredEntries<'_>>,
    ) -> Result<Self, String> {
        let mut store = Self::over(Arc::new(BaseDocs::new(seq, docs)), Vec::new());
        store.next_id.store(next_id, Ordering::Relaxed);
        for index in stored {
            if store.stored.iter().any(|s| *s.name == *index.name) {
                return Err(format!("index {:?} is stored twice", index.name));
            }
            let mut entries: Vec<(EntryKey, usize)> = Vec::with_capacity(index.entries.len());
            for (key, id) in index.entries {
                let position = store.base.position(id).ok_or_else(|| {
                    format!(
                        "index {:?} has an entry for document {id}, which is not stored",
                        index.name
                    )
                })?;
                let key = entry_key(index.unique, key, id);
                if entries.last().is_some_and(|(last, _)| *last >= key) {
                    return Err(format!(
                        "index {:?} has entries out of order or repeated (at document {id})",
                        index.name
                    ));
                }
                entries.push((key, position));
            }
            store.stored.push(StoredIndex {
                name: index.name.into(),
                unique: index.unique,
                index: Arc::new(BaseIndex::new(entries, index.unique, &store.base)),
            });
        }
        Ok(store)
    }

    /// Number of indexes.
    #[must_use]
    pub fn index_count(&self) -> usize {
        self.indexes.len()
    }

    /// This store's newest documents with `writes` folded in (`(id, seq, document or removal)`, strictly ascending
    /// ids), as a store with no index (see [`Store::based`]) whose ids below `next_id` are used, with its number of
    /// documents. For a replay: no snapshot reads the result yet.
    #[must_use]
    pub fn folded(&self, writes: Vec<(u64, u64, Option<DocBytes>)>, next_id: u64) -> (Self, usize) {
        debug_assert!(writes.windows(2).all(|w| w[0].0 < w[1].0), "ascending ids");
        let mut seq = self.changed_seq();
        let mut docs = Vec::with_capacity(self.base.len() + writes.len());
        let mut writes = writes.into_iter().peekable();
        for (id, doc) in self.latest_docs() {
            while let Some((written, ..)) = writes.peek()
                && *written < id
            {
                let (written, write_seq, doc) = writes.next().expect("peeked");
                seq = seq.max(write_seq);
                docs.extend(doc.map(|doc| (written, doc)));
            }
            if writes.peek().is_some_and(|(written, ..)| *written == id) {
                let (_, write_seq, doc) = writes.next().expect("peeked");
                seq = seq.max(write_seq);
                docs.extend(doc.map(|doc| (id, doc)));
            } else {
                docs.push((id, doc));
            }
        }
        for (id, write_seq, doc) in writes {
            seq = seq.max(write_seq);
            docs.extend(doc.map(|doc| (id, doc)));
        }
        let count = docs.len();
        let next_id = next_id.max(self.next_id());
        let store = Self::based(docs, seq, next_id, Vec::new()).expect("no stored index to refuse");
        (store, count)
    }

    /// Sequence number of the newest write (or removal) of `id` still recorded (for a document of the base: the
    /// base's). A removal is forgotten only once every live snapshot is at or after it, so a writer that began
    /// before it still conflicts.
    #[must_use]
    pub fn latest_seq(&self, id: u64) -> Option<u64> {
        match self.docs.latest(&id) {
            Some((seq, _)) => Some(seq),
            None => self.base.position(id).map(|_| self.base_seq),
        }
    }

    /// The newest committed bytes of `id` (possibly not yet published).
    #[must_use]
    pub fn latest(&self, id: u64) -> Option<DocBytes> {
        match self.docs.latest(&id) {
            Some((_, doc)) => doc,
            None => self.base.get(id).cloned(),
        }
    }

    /// Every document's newest bytes, in id order.
    pub fn latest_docs(&self) -> impl Iterator<Item = (u64, DocBytes)> + '_ {
        let base = self.base.ids().map(|(id, position)| (id, Some(position)));
        let delta = self.docs.keys().map(|entry| (*entry.value(), None));
        Union::new(base, delta, |a, b| a.0.cmp(&b.0)).filter_map(|(id, position)| match position {
            Some(position) => Some((id, self.base.at(position).1.clone())),
            None => self.latest(id).map(|doc| (id, doc)),
        })
    }

    /// The next auto-increment id.
    #[must_use]
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Sequence number of the newest commit that wrote to this store (a checkpoint can keep the previous snapshot
    /// of a store unchanged since it).
    #[must_use]
    pub fn changed_seq(&self) -> u64 {
        self.changed_seq.load(Ordering::Relaxed)
    }

    /// Checks the unique indexes for `writes` (one per document) applied together to the newest version: a key
    /// taken by a write must be free, held by the same document, or released by another write of the batch.
    ///
    /// # Errors
    /// [`ApplyError::Unique`].
    pub fn check_unique(&self, defs: &[IndexDef], writes: &[Write<'_>]) -> Result<(), ApplyError> {
        debug_assert_eq!(defs.len(), self.indexes.len());
        // The batch's documents by id (for a holder that may give its key up), made only if needed.
        let mut by_id: Option<HashMap<u64, Option<&DocBytes>, foldhash::fast::RandomState>> = None;
        for (def, index) in defs.iter().zip(&self.indexes) {
            if !def.unique {
                continue;
            }
            if let [write] = writes {
                // One write: no key of the batch can clash with it or be released by it.
                let Some(doc) = write.doc else { continue };
                let Some(key) = (def.extract)(doc) else {
                    continue;
                };
                match index.latest_holder(&key, &self.base) {
                    Some(holder) if holder != write.id => {
                        return Err(unique_error(def, doc, holder));
                    }
                    _ => continue,
                }
            }
            let mut taken: HashMap<Vec<u8>, (u64, &DocBytes), foldhash::fast::RandomState> =
                HashMap::default();
            for write in writes {
                let Some(doc) = write.doc else { continue };
                let Some(key) = (def.extract)(doc) else {
                    continue;
                };
                if let Some((other, _)) = taken.insert(key, (write.id, doc)) {
                    return Err(unique_error(def, doc, other));
                }
            }
            for (key, (id, doc)) in &taken {
                let Some(holder) = index.latest_holder(key, &self.base) else {
                    continue;
                };
                if holder == *id {
                    continue;
                }
                // The holder may give the key up in this batch.
                let by_id =
                    by_id.get_or_insert_with(|| writes.iter().map(|w| (w.id, w.doc)).collect());
                let released = by_id.get(&holder).is_some_and(|doc| {
                    doc.and_then(|d| (def.extract)(d)).is_none_or(|k| k != *key)
                });
                if !released {
                    return Err(unique_error(def, doc, holder));
                }
            }
        }
        Ok(())
    }

    /// Applies `writes` (checked: one per document, unique indexes free) as commit `seq`. Superseded versions stay
    /// for live snapshots until [`Store::collect`] passes `seq`. Returns the change in the number of documents.
    pub fn apply(&self, defs: &[IndexDef], writes: &[Write<'_>], seq: u64) -> isize {
        debug_assert_eq!(defs.len(), self.indexes.len());
        let olds: SmallVec<[Option<DocBytes>; 1]> =
            writes.iter().map(|w| self.latest(w.id)).collect();
        // Every index entry a write changes (for a unique index, also one whose key stays: it holds the document).
        // Old entries go first, then new ones, so a batch can move a unique key from one of its documents to
        // another.
        let mut changes: SmallVec<[EntryChange<'_>; 2]> = SmallVec::new();
        for (write, old) in writes.iter().zip(&olds) {
            for (index, def) in defs.iter().enumerate() {
                let old_key = old.as_ref().and_then(|d| (def.extract)(d));
                let new_key = write.doc.and_then(|d| (def.extract)(d));
                if old_key != new_key || (def.unique && new_key.is_some()) {
                    changes.push(EntryChange {
                        index,
                        write: *write,
                        old_key: old_key.filter(|k| Some(k) != new_key.as_ref()),
                        new_key,
                    });
                }
            }
        }
        for change in &mut changes {
            if let Some(key) = change.old_key.take() {
                self.write_entry(change.index, &key, change.write.id, None, seq);
            }
        }
        for change in &mut changes {
            if let Some(key) = change.new_key.take() {
                let store = &self.indexes[change.index];
                let entry = IndexEntry {
                    id: change.write.id,
                    doc: store.unique.then(|| change.write.doc.cloned()).flatten(),
                };
                self.write_entry(change.index, &key, change.write.id, Some(entry), seq);
            }
        }
        let mut delta = 0isize;
        for (write, old) in writes.iter().zip(&olds) {
            delta += isize::from(write.doc.is_some()) - isize::from(old.is_some());
            let written = self
                .docs
                .write(write.id, seq, write.doc.cloned(), true, || {
                    self.base.position(write.id).is_some()
                });
            if written == Written::Superseded {
                self.push_garbage(Garbage::Doc { seq, id: write.id });
            }
            self.next_id
                .fetch_max(write.id.saturating_add(1), Ordering::Relaxed);
        }
        if self.recording.load(Ordering::Relaxed) {
            let mut recorded = self.recorded.lock();
            recorded.extend(writes.iter().map(|w| Recorded::Doc(w.id)));
        }
        if !writes.is_empty() {
            self.changed_seq.fetch_max(seq, Ordering::Relaxed);
        }
        delta
    }

    fn write_entry(&self, index: usize, key: &[u8], id: u64, entry: Option<IndexEntry>, seq: u64) {
        let store = &self.indexes[index];
        let key = store.entry_key(key, id);
        let written = store
            .entries
            .write(key.clone(), seq, entry, true, || store.base.contains(&key));
        debug_assert_ne!(
            written,
            Written::Absent,
            "an entry is removed only if it exists"
        );
        if self.recording.load(Ordering::Relaxed) {
            self.recorded
                .lock()
                .push(Recorded::Entry(index, key.clone()));
        }
        if written == Written::Superseded {
            self.push_garbage(Garbage::Entry { seq, index, key });
        }
    }

    /// Starts recording the keys commits write, for a re-base (see [`Store::rebase_prepare`]). Under the commit
    /// lock.
    pub fn start_recording(&self) {
        self.recorded.lock().clear();
        self.recording.store(true, Ordering::Relaxed);
    }

    /// Stops recording (a re-base finished or was given up); returns what was recorded.
    fn stop_recording(&self) -> Vec<Recorded> {
        self.recording.store(false, Ordering::Relaxed);
        std::mem::take(&mut *self.recorded.lock())
    }

    /// Gives up a re-base: stops recording. Under the commit lock.
    pub fn abandon_rebase(&self) {
        self.stop_recording();
    }

    /// A new store for this one's collection over `snapshot`, the store loaded from the snapshot file a checkpoint
    /// just wrote of this store at commit `cut` (its documents, and its indexes stored by the names and uniqueness
    /// of `indexes`, which must be this store's): the new store's base is the snapshot, and its delta holds this
    /// store's newest version of every key written after `floor`, the horizon when recording started (at most
    /// `cut`; no live or later transaction reads below it). Run without the commit lock, after
    /// [`Store::start_recording`] under it; commits meanwhile are caught up by [`Store::rebase_finish`].
    ///
    /// Conflict checks: a key written after `floor` keeps its own sequence number (in the delta); for the others
    /// the new store says `floor`, which no transaction's snapshot is below, so neither a conflict is missed nor one
    /// invented (with the cut instead, a transaction that began before the cut would conflict on documents nobody
    /// wrote since it began).
    ///
    /// # Errors
    /// An index of `indexes` that the snapshot does not hold.
    pub fn rebase_prepare(
        &self,
        snapshot: &Self,
        indexes: &[(&str, bool)],
        cut: u64,
        floor: u64,
    ) -> Result<Self, String> {
        debug_assert!(floor <= cut);
        debug_assert_eq!(indexes.len(), self.indexes.len());
        let based = indexes
            .iter()
            .map(|&(name, unique)| {
                snapshot
                    .stored
                    .iter()
                    .find(|s| *s.name == *name && s.unique == unique)
                    .map(|s| (unique, Arc::clone(&s.index)))
                    .ok_or_else(|| format!("the snapshot does not hold index {name:?}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut rebased = Self::over(Arc::clone(&snapshot.base), based);
        rebased.base_seq = floor;
        rebased
            .next_id
            .store(self.next_id().max(snapshot.next_id()), Ordering::Relaxed);
        rebased
            .changed_seq
            .store(self.changed_seq().max(cut), Ordering::Relaxed);
        for key in self.docs.keys() {
            rebased.carry_doc(self, *key.value());
        }
        for index in 0..self.indexes.len() {
            for key in self.indexes[index].entries.keys() {
                rebased.carry_entry(self, index, key.value());
            }
        }
        Ok(rebased)
    }

    /// Completes a re-base prepared by [`Store::rebase_prepare`] into `rebased`: carries over the keys commits wrote
    /// since recording started, and stops recording. Under the commit lock, with every commit published, so that
    /// `rebased` then holds exactly this store's newest state.
    pub fn rebase_finish(&self, rebased: &Self) {
        for recorded in self.stop_recording() {
            match recorded {
                Recorded::Doc(id) => rebased.carry_doc(self, id),
                Recorded::Entry(index, key) => rebased.carry_entry(self, index, &key),
            }
        }
        rebased.next_id.fetch_max(self.next_id(), Ordering::Relaxed);
        rebased
            .changed_seq
            .fetch_max(self.changed_seq(), Ordering::Relaxed);
    }

    /// Carries document `id`'s newest state in `old` over to this (re-based) store if it was written after the
    /// floor (`base_seq`).
    fn carry_doc(&self, old: &Self, id: u64) {
        let (seq, doc) = match old.docs.latest(&id) {
            // In the snapshot as it is now, and older than every live transaction.
            Some((seq, _)) if seq <= self.base_seq => return,
            Some(newest) => newest,
            // Forgotten in `old`'s delta, which happens only to a removal of a key its base does not hold, once every
            // live snapshot is at or past it: removed, at a sequence number no live transaction is below.
            None => (self.carried_removal_seq(self.docs.latest(&id)), None),
        };
        self.docs
            .write(id, seq, doc, false, || self.base.position(id).is_some());
    }

    /// Carries index `index`'s entry `key` over as [`Store::carry_doc`] does a document.
    fn carry_entry(&self, old: &Self, index: usize, key: &EntryKey) {
        let store = &self.indexes[index];
        let (seq, entry) = match old.indexes[index].entries.latest(&key[..]) {
            Some((seq, _)) if seq <= self.base_seq => return,
            Some(newest) => newest,
            None => (
                self.carried_removal_seq(store.entries.latest(&key[..])),
                None,
            ),
        };
        store
            .entries
            .write(key.clone(), seq, entry, false, || store.base.contains(key));
    }

    /// The sequence number to carry a forgotten removal over at, given what this store already holds for the key:
    /// the floor, or that version's if newer (versions are written in order).
    fn carried_removal_seq<P>(&self, held: Option<(u64, P)>) -> u64 {
        held.map_or(self.base_seq, |(seq, _)| seq.max(self.base_seq))
    }

    fn push_garbage(&self, garbage: Garbage) {
        self.oldest_garbage
            .fetch_min(garbage.seq(), Ordering::Relaxed);
        self.garbage.lock().push_back(garbage);
    }

    /// Records the oldest pending garbage of `queue` (this store's, locked).
    fn note_oldest(&self, queue: &VecDeque<Garbage>) {
        let oldest = queue.front().map_or(u64::MAX, Garbage::seq);
        self.oldest_garbage.store(oldest, Ordering::Relaxed);
    }

    /// Prunes what commits up to `horizon` superseded (the lowest sequence number any live snapshot reads at);
    /// keys that no live snapshot sees anymore are dropped. The committer's only.
    pub fn collect(&self, horizon: u64) {
        if self.oldest_garbage.load(Ordering::Relaxed) > horizon {
            return;
        }
        let mut garbage = self.garbage.lock();
        while garbage.front().is_some_and(|g| g.seq() <= horizon) {
            match garbage.pop_front().expect("front exists") {
                Garbage::Doc { id, .. } => self.docs.prune(&id, horizon),
                Garbage::Entry { index, key, .. } => {
                    self.indexes[index].entries.prune(&key, horizon);
                }
            }
        }
        self.note_oldest(&garbage);
    }

    /// Versions still waiting for [`Store::collect`] (for tests and statistics).
    #[must_use]
    pub fn pending_garbage(&self) -> usize {
        self.garbage.lock().len()
    }

    /// A store with the indexes of `defs` over this store's newest documents (used when a recovered collection
    /// gets its type): the base is shared when this store has no delta (otherwise its newest documents become the
    /// new base). Every document is first checked with `validate` (which must accept it before any extractor reads
    /// it). Returns it with its number of documents. From then on only the new store is written; this one serves
    /// the snapshots taken before.
    ///
    /// An index stored with the base (same name, same uniqueness) is taken as it is if it holds exactly the entries
    /// the documents call for: the multiset of `(entry key, position)` extracted from the documents must hash (with
    /// a seed drawn for this call) and count the same as the stored one, so a changed key function or a doctored
    /// file gets the index rebuilt, never used stale. Other indexes are built: keys extracted, sorted, merged.
    /// The documents are split into ranges, one per available core (at most [`MAX_BUILD_THREADS`]), each range
    /// validated and extracted on a thread of its own.
    ///
    /// # Errors
    /// [`ApplyError::Invalid`] for a document `validate` refuses; [`ApplyError::Unique`] if the documents violate a
    /// unique index of `defs` (nothing changes then).
    pub fn rebuilt(
        &self,
        defs: &[IndexDef],
        validate: &Validate,
    ) -> Result<(Self, usize), ApplyError> {
        let folded = self.docs.key_count() != 0;
        let base = if folded {
            // Folded at the newest write: a transaction that began before it and writes one of these documents
            // conflicts (conservatively).
            Arc::new(BaseDocs::new(
                self.changed_seq(),
                self.latest_docs().collect(),
            ))
        } else {
            Arc::clone(&self.base)
        };
        // Positions in the base are the stored indexes' positions only if the base is the same.
        let stored: Vec<Option<&Arc<BaseIndex>>> = defs
            .iter()
            .map(|def| {
                self.stored
                    .iter()
                    .find(|s| !folded && *s.name == *def.name && s.unique == def.unique)
                    .map(|s| &s.index)
            })
            .collect();
        let hasher = foldhash::quality::RandomState::default();
        let checked = build_pass(&base, defs, &stored, &hasher, Some(validate))?;
        let mut indexes: Vec<Option<Arc<BaseIndex>>> = Vec::with_capacity(defs.len());
        for ((def, checked), stored) in defs.iter().zip(checked).zip(&stored) {
            indexes.push(match (checked, stored) {
                (Built::Entries(entries), _) => Some(Arc::new(base_index(def, &base, entries)?)),
                (Built::Fingerprint(found), Some(index)) if found == index.fingerprint(&hasher) => {
                    Some(Arc::clone(index))
                }
                (Built::Fingerprint(_), _) => None,
            });
        }
        // Stored indexes that disagree with their documents: built after all.
        let rebuild: Vec<Option<&Arc<BaseIndex>>> = vec![None; defs.len()];
        if indexes.iter().any(Option::is_none) {
            let again = build_pass(&base, defs, &rebuild, &hasher, None)?;
            for ((def, index), again) in defs.iter().zip(&mut indexes).zip(again) {
                if index.is_none()
                    && let Built::Entries(entries) = again
                {
                    *index = Some(Arc::new(base_index(def, &base, entries)?));
                }
            }
        }
        let indexes: Vec<(bool, Arc<BaseIndex>)> = defs
            .iter()
            .zip(indexes)
            .map(|(def, index)| (def.unique, index.expect("every index built or taken")))
            .collect();
        let count = base.len();
        let built = Self::over(base, indexes);
        built.next_id.store(self.next_id(), Ordering::Relaxed);
        built
            .changed_seq
            .store(self.changed_seq(), Ordering::Relaxed);
        Ok((built, count))
    }
}

/// What a pass over a base's documents made of one index: its sorted entries, or the fingerprint of the entries
/// the documents call for (to compare with a stored index).
enum Built {
    Entries(Vec<(EntryKey, usize)>),
    Fingerprint(Fingerprint),
}

/// Number of entries and the wrapping sum of their hashes: equal for equal multisets of entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    entries: u64,
    sum: u64,
}

impl Fingerprint {
    pub(crate) fn add(
        &mut self,
        hasher: &foldhash::quality::RandomState,
        key: &[u8],
        position: usize,
    ) {
        use std::hash::BuildHasher;
        self.entries += 1;
        self.sum = self
            .sum
            .wrapping_add(hasher.hash_one((key, position as u64)));
    }

    fn merge(&mut self, other: Self) {
        self.entries += other.entries;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// One pass over `base`'s documents, split into ranges on threads (see [`Store::rebuilt`]): each document is
/// validated first (if `validate` is given), then each index of `defs` gets its entries extracted and sorted, or
/// (where `stored` has an index) only fingerprinted.
fn build_pass(
    base: &BaseDocs,
    defs: &[IndexDef],
    stored: &[Option<&Arc<BaseIndex>>],
    hasher: &foldhash::quality::RandomState,
    validate: Option<&Validate>,
) -> Result<Vec<Built>, ApplyError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, MAX_BUILD_THREADS);
    let per_thread = base.len().div_ceil(threads).max(1 << 14);
    let build_range = |range: std::ops::Range<usize>| -> Result<Vec<Built>, ApplyError> {
        let mut built: Vec<Built> = stored
            .iter()
            .map(|s| match s {
                Some(_) => Built::Fingerprint(Fingerprint::default()),
                None => Built::Entries(Vec::with_capacity(range.len())),
            })
            .collect();
        // In id order: documents were mostly allocated (or written to a snapshot) in that order.
        for position in range {
            let (id, doc) = base.at(position);
            if let Some(validate) = validate {
                validate(doc).map_err(|reason| ApplyError::Invalid { id, reason })?;
            }
            for (def, built) in defs.iter().zip(&mut built) {
                let Some(key) = (def.extract)(doc) else {
                    continue;
                };
                let key = entry_key(def.unique, &key, id);
                match built {
                    Built::Entries(entries) => entries.push((key, position)),
                    Built::Fingerprint(fingerprint) => fingerprint.add(hasher, &key, position),
                }
            }
        }
        for built in &mut built {
            if let Built::Entries(entries) = built {
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
        }
        Ok(built)
    };
    let runs: Vec<Vec<Built>> = if base.len() <= per_thread {
        vec![build_range(0..base.len())?]
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..base.len())
                .step_by(per_thread)
                .map(|start| {
                    let range = start..(start + per_thread).min(base.len());
                    scope.spawn(move || build_range(range))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Result<_, _>>()
        })?
    };
    let ranges = runs.len();
    let mut merged: Vec<Built> = stored
        .iter()
        .map(|s| match s {
            Some(_) => Built::Fingerprint(Fingerprint::default()),
            None => Built::Entries(Vec::new()),
        })
        .collect();
    for run in runs {
        for (merged, built) in merged.iter_mut().zip(run) {
            match (merged, built) {
                (Built::Fingerprint(total), Built::Fingerprint(f)) => total.merge(f),
                (Built::Entries(all), Built::Entries(mut entries)) => all.append(&mut entries),
                _ => unreachable!("every range builds each index the same way"),
            }
        }
    }
    if ranges > 1 {
        for built in &mut merged {
            if let Built::Entries(entries) = built {
                // Stable sort of sorted runs: it finds the runs and merges them.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
    }
    Ok(merged)
}

/// The base index of `def` from its sorted `entries` over `base`.
///
/// # Errors
/// [`ApplyError::Unique`] if two entries of a unique index share a key.
fn base_index(
    def: &IndexDef,
    base: &BaseDocs,
    entries: Vec<(EntryKey, usize)>,
) -> Result<BaseIndex, ApplyError> {
    if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        debug_assert!(def.unique, "non-unique entry keys end with the id");
        let (_, doc) = base.at(pair[1].1);
        return Err(unique_error(def, doc, base.at(pair[0].1).0));
    }
    Ok(BaseIndex::new(entries, def.unique, base))
}

fn unique_error(def: &IndexDef, doc: &[u8], holder: u64) -> ApplyError {
    ApplyError::Unique {
        index: Arc::clone(&def.name),
        key: (def.describe)(doc),
        holder,
    }
}

/// A store as one snapshot sees it.
#[derive(Clone, Copy)]
pub struct View<'s> {
    store: &'s Store,
    seq: u64,
    count: usize,
}

impl Debug for View<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("seq", &self.seq)
            .field("count", &self.count)
            .finish()
    }
}

impl<'s> View<'s> {
    /// The view of `store` at sequence number `seq`, holding `count` documents.
    ///
    /// # Safety
    /// A snapshot at `seq` must be registered with the database (so that no [`Store::collect`] gets a horizon above
    /// `seq`) for all of `'s`.
    #[must_use]
    pub unsafe fn new(store: &'s Store, seq: u64, count: usize) -> Self {
        Self { store, seq, count }
    }

    /// The document with this id.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<&'s [u8]> {
        let store = self.store;
        // No delta: the base decides (a key the delta holds for this snapshot was inserted before the snapshot was
        // published, so the count includes it).
        if store.docs.key_count() != 0 {
            // SAFETY: `View::new`'s contract is `VersionedMap::read`'s, and `DocBytes::as_bytes` points into memory
            // the value owns through an `Arc` (its own allocation, or the shared buffer of a mapped snapshot).
            let seen = unsafe {
                store
                    .docs
                    .read(&id, self.seq, |doc: &DocBytes| Some(((), doc.as_bytes())))
            };
            match seen {
                Seen::Value(((), doc)) => return Some(doc),
                Seen::Removed => return None,
                Seen::Unwritten => {}
            }
        }
        store.base.get(id).map(DocBytes::as_bytes)
    }

    /// Number of documents.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no document.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Documents in id order.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = (u64, &'s [u8])> + 's {
        let store = self.store;
        let base = store.base.ids().map(|(id, position)| (id, Some(position)));
        let delta = store.docs.keys().map(|entry| (*entry.value(), None));
        Union::new(base, delta, |a, b| a.0.cmp(&b.0)).filter_map(move |(id, position)| {
            match position {
                Some(position) => Some((id, store.base.at(position).1.as_bytes())),
                None => self.get(id).map(|doc| (id, doc)),
            }
        })
    }

    /// Ids whose key in index `index` lies in the given bounds of encoded keys, in index order (ties by id).
    pub fn index_range(
        self,
        index: usize,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> impl DoubleEndedIterator<Item = u64> + 's {
        self.index_entries(index, start, end).map(|(_, id)| id)
    }

    /// Entries of index `index` whose key lies in the given bounds of encoded keys, in index order (ties by id):
    /// the encoded key (a borrow of the entry key; for a non-unique index, without its id suffix) and the id.
    pub fn index_entries(
        self,
        index: usize,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> impl DoubleEndedIterator<Item = (EntryKeyRef<'s>, u64)> + 's {
        let seq = self.seq;
        let entries = self.store.indexes.get(index).map(|store| {
            // Non-unique entries are `key ‖ id`: extend the bounds to cover every id of a bound key.
            let all_ids = |key: Vec<u8>| store.entry_key(&key, u64::MAX);
            let lower = match start {
                Bound::Included(k) => Bound::Included(EntryKey::from_vec(k)),
                Bound::Excluded(k) => Bound::Excluded(all_ids(k)),
                Bound::Unbounded => Bound::Unbounded,
            };
            let upper = match end {
                Bound::Included(k) => Bound::Included(all_ids(k)),
                Bound::Excluded(k) => Bound::Excluded(EntryKey::from_vec(k)),
                Bound::Unbounded => Bound::Unbounded,
            };
            let base = store
                .base
                .range(as_slice(&lower), as_slice(&upper))
                .map(|(key, position)| (EntryAt::Base(key), Some(position)));
            let delta = store
                .entries
                .key_range((lower, upper))
                .map(|entry| (EntryAt::Delta(entry), None));
            (
                store,
                Union::new(base, delta, |a, b| a.0.key().cmp(b.0.key())),
            )
        });
        let docs = &self.store.base;
        entries.into_iter().flat_map(move |(store, merged)| {
            merged.filter_map(move |(entry, position)| {
                let id = match position {
                    Some(position) => docs.at(position).0,
                    None => match store.entries.read_with(entry.key(), seq, |e| e.id) {
                        Seen::Value(id) => id,
                        Seen::Removed => return None,
                        Seen::Unwritten => docs.at(store.base.get(entry.key())?).0,
                    },
                };
                Some((
                    EntryKeyRef {
                        entry,
                        unique: store.unique,
                    },
                    id,
                ))
            })
        })
    }

    /// The document holding `key` (encoded) in unique index `index`, with its id.
    #[must_use]
    pub fn unique_get(&self, index: usize, key: &[u8]) -> Option<(u64, &'s [u8])> {
        let store = self.store.indexes.get(index)?;
        debug_assert!(store.unique);
        // No delta: the base decides (as in `get`).
        let seen = if store.entries.key_count() == 0 {
            Seen::Unwritten
        } else {
            // SAFETY: `View::new`'s contract is `VersionedMap::read`'s, and `DocBytes::as_bytes` points into memory
            // the value owns through an `Arc` (its own allocation, or the shared buffer of a mapped snapshot).
            unsafe {
                store.entries.read(key, self.seq, |e: &IndexEntry| {
                    e.doc.as_ref().map(|doc| (e.id, doc.as_bytes()))
                })
            }
        };
        match seen {
            Seen::Value(found) => Some(found),
            Seen::Removed => None,
            Seen::Unwritten => {
                let docs: &'s BaseDocs = &self.store.base;
                let (id, doc) = docs.at(store.base.get(key)?);
                Some((id, doc.as_bytes()))
            }
        }
    }

    /// Checks that every index holds exactly the entries its documents call for, and the count (for tests and
    /// `verify`).
    ///
    /// # Errors
    /// The first disagreement.
    pub fn check_indexes(&self, defs: &[IndexDef]) -> Result<(), String> {
        let docs: Vec<(u64, &[u8])> = self.iter().collect();
        if let Some(pair) = docs.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
            return Err(format!(
                "documents out of order: {} then {}",
                pair[0].0, pair[1].0
            ));
        }
        if docs.len() != self.count {
            return Err(format!(
                "{} documents visible, the version counts {}",
                docs.len(),
                self.count
            ));
        }
        for (position, (def, store)) in defs.iter().zip(&self.store.indexes).enumerate() {
            let mut expected: Vec<(Vec<u8>, u64)> = docs
                .iter()
                .filter_map(|(id, doc)| (def.extract)(doc).map(|k| (k, *id)))
                .collect();
            expected.sort();
            let mut found: Vec<(Vec<u8>, u64)> = Vec::with_capacity(expected.len());
            for (key, id) in self.index_entries(position, Bound::Unbounded, Bound::Unbounded) {
                if store.unique
                    && self
                        .unique_get(position, key.key())
                        .map(|(_, d)| d.as_ptr())
                        != self.get(id).map(<[u8]>::as_ptr)
                {
                    return Err(format!(
                        "unique index {}: the entry of document {id} holds another version of it",
                        def.name
                    ));
                }
                found.push((key.key().to_vec(), id));
            }
            if expected != found {
                return Err(format!(
                    "index {} has {} entries, documents call for {}",
                    def.name,
                    found.len(),
                    expected.len()
                ));
            }
        }
        Ok(())
    }
}

/// A bound of entry keys as a bound of byte slices.
fn as_slice(bound: &Bound<EntryKey>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key),
        Bound::Excluded(key) => Bound::Excluded(key),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use super::DocBytes;

    #[test]
    fn copies_keep_every_length_and_are_16_byte_aligned() {
        let source: Vec<u8> = (0..=255u8).cycle().take(100).collect();
        for len in 0..=source.len() {
            let copy = DocBytes::copy_from(&source[..len]);
            assert_eq!(copy.as_bytes(), &source[..len], "length {len}");
            assert!(copy.as_bytes().as_ptr().addr().is_multiple_of(16) || len == 0);
        }
    }
}
