//! Collections: versions of a collection's documents and indexes, and the typed view of them.
//!
//! This layer knows nothing of files or the log. A [`CollectionVersion`] is a persistent (structurally shared)
//! map from id to document bytes plus one ordered set per secondary index; cloning one is O(1), and a commit
//! changes it in O(changes · log n). Readers hold an `Arc` of the version they started with.
//!
//! Documents are rkyv archives, serialized once per write: the same bytes are the WAL payload and the in-memory
//! copy. Reads return `&T::Archived` without copying. The one unchecked access lives in [`archived`]; its safety
//! rests on the invariant below.
//!
//! Invariants:
//! - every document in a collection bound to type `T` is a valid archive of `T`: it was produced by
//!   `rkyv::to_bytes::<T>` in this process, or validated with bytecheck (`rkyv::access`) when the collection was
//!   bound to `T` after recovery;
//! - each index holds exactly one `(key, id)` entry per document whose extractor returns a key, and none for a
//!   document whose extractor returns `None` (sparse); a unique index never holds two ids under one key.

pub mod key;

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable, Serialize};

pub use key::IndexKey;

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

/// Bytes of one stored document (16-byte aligned, as rkyv needs).
pub type DocBytes = Arc<AlignedVec>;

/// A stored document and the commit sequence number that last wrote it (for conflict detection).
#[derive(Clone, Debug)]
pub struct Doc {
    /// The archive.
    pub bytes: DocBytes,
    /// Sequence number of the commit that wrote it.
    pub seq: u64,
}

/// Serializes a document once.
///
/// # Errors
/// rkyv's error, as text (serialization of plain data does not fail in practice).
pub fn serialize<T: Document>(value: &T) -> Result<AlignedVec, String> {
    rkyv::to_bytes::<rancor::Error>(value).map_err(|e| e.to_string())
}

/// Checks that `bytes` are a valid archive of `T` (bytecheck). Run once per document when a recovered collection is
/// bound to its type.
///
/// # Errors
/// What failed to validate.
pub fn validate<T: Document>(bytes: &AlignedVec) -> Result<(), String> {
    rkyv::access::<T::Archived, rancor::Error>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The archived view of document bytes of a collection bound to `T`.
#[must_use]
pub fn archived<T: Document>(bytes: &AlignedVec) -> &T::Archived {
    // SAFETY: module invariant: every document of a collection bound to `T` was serialized from a `T` by this
    // process or validated as a `T::Archived` with bytecheck before the collection was bound; `AlignedVec` keeps
    // the 16-byte alignment rkyv's layout needs, and the bytes are immutable behind their `Arc`.
    unsafe { rkyv::access_unchecked::<T::Archived>(bytes) }
}

/// A collection's primary-key function: the id of a document, taken from the document.
pub type PrimaryKeyFn<T> = Arc<dyn Fn(&<T as Archive>::Archived) -> u64 + Send + Sync>;

type Extract = Arc<dyn Fn(&AlignedVec) -> Option<Vec<u8>> + Send + Sync>;
type Describe = Arc<dyn Fn(&AlignedVec) -> String + Send + Sync>;

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

/// A write a version could not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
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

/// `(encoded key, id)`. Keys are `Arc<[u8]>`: copying a tree node on a commit then bumps reference counts instead of
/// allocating one box per key.
type IndexSet = OrdSet<(Arc<[u8]>, u64)>;

/// One version of a collection: documents by id, tombstones for conflict detection, and the indexes.
#[derive(Clone, Debug, Default)]
pub struct CollectionVersion {
    docs: OrdMap<u64, Doc>,
    /// Ids removed, with the sequence number of the removal (a later writer of the same id conflicts).
    removed: OrdMap<u64, u64>,
    indexes: Vec<IndexSet>,
    /// Ids below this were used at least once.
    next_id: u64,
}

impl CollectionVersion {
    /// The document with this id.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<&Doc> {
        self.docs.get(&id)
    }

    /// Number of documents.
    #[must_use]
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there is no document.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Documents in id order, from `start`.
    pub fn iter_from(&self, start: Bound<u64>) -> impl DoubleEndedIterator<Item = (u64, &Doc)> {
        self.docs
            .range((start, Bound::Unbounded))
            .map(|(id, d)| (*id, d))
    }

    /// The sequence number of the last write (or removal) of `id`, if any.
    #[must_use]
    pub fn last_write_seq(&self, id: u64) -> Option<u64> {
        self.docs
            .get(&id)
            .map(|d| d.seq)
            .or_else(|| self.removed.get(&id).copied())
    }

    /// The next auto-increment id.
    #[must_use]
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Ids whose key in index `index` lies in the given bounds of encoded keys, in index order.
    pub fn index_range(
        &self,
        index: usize,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> impl DoubleEndedIterator<Item = u64> + '_ {
        let lower = match start {
            Bound::Included(k) => Bound::Included((Arc::<[u8]>::from(k), 0)),
            Bound::Excluded(k) => Bound::Excluded((Arc::<[u8]>::from(k), u64::MAX)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let upper = match end {
            Bound::Included(k) => Bound::Included((Arc::<[u8]>::from(k), u64::MAX)),
            Bound::Excluded(k) => Bound::Excluded((Arc::<[u8]>::from(k), 0)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.indexes
            .get(index)
            .into_iter()
            .flat_map(move |set| set.range((lower.clone(), upper.clone())).map(|(_, id)| *id))
    }

    /// Inserts or replaces document `id`, keeping every index in step.
    ///
    /// On error the version is left partly changed: callers apply writes to a clone and drop it on error.
    ///
    /// # Errors
    /// [`ApplyError::Unique`].
    pub fn put(&mut self, defs: &[IndexDef], id: u64, doc: Doc) -> Result<(), ApplyError> {
        self.detach(defs, id);
        self.attach(defs, id, doc)
    }

    /// Takes document `id` out, with its index entries, without recording a removal. Writing a batch as "detach
    /// every old document, then attach every new one" lets a transaction move unique keys between its documents
    /// (a swap) without a spurious violation.
    pub fn detach(&mut self, defs: &[IndexDef], id: u64) -> Option<Doc> {
        debug_assert_eq!(defs.len(), self.indexes.len());
        let old = self.docs.remove(&id)?;
        self.unindex(defs, id, &old.bytes);
        Some(old)
    }

    /// Puts document `id` (which must be detached or absent) in, with its index entries.
    ///
    /// # Errors
    /// [`ApplyError::Unique`].
    pub fn attach(&mut self, defs: &[IndexDef], id: u64, doc: Doc) -> Result<(), ApplyError> {
        debug_assert!(!self.docs.contains_key(&id));
        for (def, set) in defs.iter().zip(&mut self.indexes) {
            let Some(key) = (def.extract)(&doc.bytes) else {
                continue;
            };
            let key = Arc::<[u8]>::from(key);
            if def.unique
                && let Some((_, holder)) =
                    set.range((key.clone(), 0)..=(key.clone(), u64::MAX)).next()
            {
                return Err(ApplyError::Unique {
                    index: Arc::clone(&def.name),
                    key: (def.describe)(&doc.bytes),
                    holder: *holder,
                });
            }
            set.insert((key, id));
        }
        self.removed.remove(&id);
        self.next_id = self.next_id.max(id.saturating_add(1));
        self.docs.insert(id, doc);
        Ok(())
    }

    /// Records that `id` was removed by commit `seq` (a later writer of the same id that began before conflicts).
    pub fn record_removal(&mut self, id: u64, seq: u64) {
        debug_assert!(!self.docs.contains_key(&id));
        self.removed.insert(id, seq);
    }

    /// Removes document `id` (recording the removal's sequence number). Returns whether it existed.
    pub fn remove(&mut self, defs: &[IndexDef], id: u64, seq: u64) -> bool {
        let existed = self.detach(defs, id).is_some();
        if existed {
            self.record_removal(id, seq);
        }
        existed
    }

    fn unindex(&mut self, defs: &[IndexDef], id: u64, bytes: &AlignedVec) {
        for (def, set) in defs.iter().zip(&mut self.indexes) {
            if let Some(key) = (def.extract)(bytes) {
                let removed = set.remove(&(Arc::<[u8]>::from(key), id));
                debug_assert!(removed.is_some(), "index {} lacked an entry", def.name);
            }
        }
    }

    /// A copy of this version with indexes built for `defs` (used when a recovered collection gets its type).
    ///
    /// # Errors
    /// [`ApplyError::Unique`] if the stored documents violate a unique index.
    pub fn with_indexes(&self, defs: &[IndexDef]) -> Result<Self, ApplyError> {
        let mut built = Self {
            docs: OrdMap::new(),
            removed: self.removed.clone(),
            indexes: vec![IndexSet::new(); defs.len()],
            next_id: self.next_id,
        };
        for (id, doc) in &self.docs {
            built.put(defs, *id, doc.clone())?;
        }
        built.next_id = self.next_id;
        Ok(built)
    }

    /// Checks that every index holds exactly the entries its documents call for (for tests and `verify`).
    ///
    /// # Errors
    /// The first index that disagrees, and how.
    pub fn check_indexes(&self, defs: &[IndexDef]) -> Result<(), String> {
        for (def, set) in defs.iter().zip(&self.indexes) {
            let mut expected = IndexSet::new();
            for (id, doc) in &self.docs {
                if let Some(key) = (def.extract)(&doc.bytes) {
                    expected.insert((Arc::<[u8]>::from(key), *id));
                }
            }
            if &expected != set {
                return Err(format!(
                    "index {} has {} entries, documents call for {}",
                    def.name,
                    set.len(),
                    expected.len()
                ));
            }
        }
        Ok(())
    }
}
