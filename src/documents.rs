//! JSON document collections: schemaless documents with an id field, indexes on dotted paths, Mongo-style queries
//! planned over those indexes, update operators, TTL and rotation. They ride on the same transactions, snapshots,
//! two-phase commit and checkpoints as typed collections.
//!
//! # Layout
//! A document collection is a typed collection of [`Json`] (so a read is a zero-copy [`ArchivedJson`]) whose rows
//! have internal `u64` ids. The document's own id (its id field, any JSON scalar) is kept unique by the index
//! [`ID_INDEX`]; with auto-increment ids, the id *is* the row id. Definitions (id field and generator, indexes, TTL)
//! are documents of the typed collection [`CATALOG`], written in transactions like any other data, so they come
//! back after a crash exactly as committed.
//!
//! # Index keys
//! An index key starts with one byte: [`KEY_SCALAR`] when every field of the index reaches at most one value and no
//! array, then each field's value (`null` when missing) in [`crate::json`]'s order-preserving encoding (complemented
//! for descending fields); or [`KEY_MULTI`] when a field reaches an array or several values, then each field's
//! reached values as one array. Multi keys sort after every scalar key, in one bucket.
//!
//! # Planning
//! A query is planned from its top-level constraints ([`Filter::constraint`]): an index whose first field the
//! query pins to values (equality, `$in`) or to a range is read over those keys **and** over the whole multi-key
//! bucket, and every candidate is checked against the full filter. So an index plan returns exactly what a scan
//! returns; the bucket is where documents whose indexed path is an array live, and it is empty unless some are.
//! Invariants:
//! - a sparse index is used only when the constraint cannot match a missing field or `null`;
//! - an ignore-case index is used only for equality (its keys do not keep the order of the original strings);
//! - results without a sort come in insertion (row) order, whichever plan ran.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::collection::{IndexDef, IndexKey};
use crate::db::{Collection, Database, Docs, Snapshot};
use crate::error::{Error, Result};
use crate::json::{
    ArchivedJson, Constraint, ErrorKind, Filter, Json, JsonError, JsonRead, Kind, Path, Projection,
    Sort, Update,
};
use crate::txn::{Stamp, Transaction};
use crate::wal::Durability;
use crate::{Spec, json};

/// The typed collection holding every document collection's definition.
pub const CATALOG: &str = "__documents";
/// The name of the unique index on each document collection's id field.
pub const ID_INDEX: &str = "_id";
/// Documents removed per transaction when a dropped or replaced collection's storage is freed.
pub const CLEAR_BATCH_DOCS: usize = 1_000;
/// The name of the index on a TTL collection's timestamp field.
pub const TTL_INDEX: &str = "_ttl";
/// First byte of an index key whose fields each reached at most one value and no array.
pub const KEY_SCALAR: u8 = 1;
/// First byte of an index key with a field that reached an array or several values.
pub const KEY_MULTI: u8 = 2;

/// How ids are made for inserted documents that have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdGenerator {
    /// `0, 1, 2, ...` (the row number); ids a document brought itself are skipped.
    AutoIncrement,
    /// Milliseconds since the Unix epoch, strictly increasing within the collection.
    Timestamp,
    /// A random (version 4) UUID string.
    Uuid,
    /// A function of the application's, given to [`Database::documents_with_generator`] at each open.
    Custom,
}

/// One field of an index: a dotted path and its direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexField {
    /// A dotted path such as `address.city` (a number segment indexes an array).
    pub path: String,
    /// Whether the field sorts descending in the index.
    #[serde(default)]
    pub descending: bool,
}

/// A secondary index on one or more dotted paths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// Its name, unique within the collection.
    pub name: String,
    /// Its fields, most significant first.
    pub fields: Vec<IndexField>,
    /// No two documents share a key.
    #[serde(default)]
    pub unique: bool,
    /// Documents missing every field are not indexed.
    #[serde(default)]
    pub sparse: bool,
    /// A document missing any field is refused.
    #[serde(default)]
    pub required: bool,
    /// Strings are indexed (and compared for uniqueness) lowercased.
    #[serde(default)]
    pub ignore_case: bool,
}

impl IndexSpec {
    /// An ascending, non-unique index on `path`, named after it.
    #[must_use]
    pub fn on(path: &str) -> Self {
        Self {
            name: path.into(),
            fields: vec![IndexField {
                path: path.into(),
                descending: false,
            }],
            unique: false,
            sparse: false,
            required: false,
            ignore_case: false,
        }
    }

    /// Renames it.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a field (a composite index); `descending` sorts it in reverse.
    #[must_use]
    pub fn then(mut self, path: &str, descending: bool) -> Self {
        self.fields.push(IndexField {
            path: path.into(),
            descending,
        });
        self
    }

    /// Makes the first field descending.
    #[must_use]
    pub fn descending(mut self) -> Self {
        self.fields[0].descending = true;
        self
    }

    /// Makes it unique.
    #[must_use]
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Makes it sparse.
    #[must_use]
    pub fn sparse(mut self) -> Self {
        self.sparse = true;
        self
    }

    /// Makes its fields required.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Makes it compare strings without case.
    #[must_use]
    pub fn ignore_case(mut self) -> Self {
        self.ignore_case = true;
        self
    }
}

/// Expiry: a document expires `after_ms` milliseconds after the time in its field `field` (epoch milliseconds, or
/// an RFC 3339 string). A document without a readable time there never expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ttl {
    /// The timestamp's path.
    pub field: String,
    /// Lifetime in milliseconds.
    pub after_ms: u64,
}

/// What a document collection is, as its catalog entry stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// The id field (`id` by default).
    pub id_field: String,
    /// How missing ids are made.
    pub ids: IdGenerator,
    /// Secondary indexes.
    #[serde(default)]
    pub indexes: Vec<IndexSpec>,
    /// Expiry, if any.
    #[serde(default)]
    pub ttl: Option<Ttl>,
    /// Whether every version of every document is kept ([`Documents::history`]).
    #[serde(default)]
    pub audit: bool,
    /// The typed collection that holds the documents (`None`: the collection's own name). The database chooses it
    /// when the collection is created and moves it on rotation and on a replacing import; applications leave it
    /// `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

impl Default for Definition {
    fn default() -> Self {
        Self {
            id_field: "id".into(),
            ids: IdGenerator::AutoIncrement,
            indexes: Vec::new(),
            ttl: None,
            audit: false,
            storage: None,
        }
    }
}

impl Definition {
    /// Sets the id field.
    #[must_use]
    pub fn id_field(mut self, field: &str) -> Self {
        self.id_field = field.into();
        self
    }

    /// Sets the id generator.
    #[must_use]
    pub fn ids(mut self, ids: IdGenerator) -> Self {
        self.ids = ids;
        self
    }

    /// Adds an index.
    #[must_use]
    pub fn index(mut self, index: IndexSpec) -> Self {
        self.indexes.push(index);
        self
    }

    /// Expires documents `after` the time in `field`.
    #[must_use]
    pub fn ttl(mut self, field: &str, after: Duration) -> Self {
        self.ttl = Some(Ttl {
            field: field.into(),
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        });
        self
    }

    /// Keeps every version of every document, with its commit's end LSN and time ([`Documents::history`]).
    #[must_use]
    pub fn audit(mut self) -> Self {
        self.audit = true;
        self
    }

    fn check(&self) -> Result<()> {
        parse_path(&self.id_field)?;
        let mut names = vec![ID_INDEX, TTL_INDEX];
        for index in &self.indexes {
            if names.contains(&index.name.as_str()) {
                return Err(Error::InvalidOptions(format!(
                    "index name {:?} is used twice or reserved",
                    index.name
                )));
            }
            names.push(&index.name);
            if index.fields.is_empty() {
                return Err(Error::InvalidOptions(format!(
                    "index {:?} has no field",
                    index.name
                )));
            }
            for field in &index.fields {
                parse_path(&field.path)?;
            }
        }
        if let Some(ttl) = &self.ttl {
            parse_path(&ttl.field)?;
        }
        Ok(())
    }
}

/// A catalog entry: a document collection's name and its definition as JSON text.
#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct CatalogEntry {
    /// The collection's name.
    pub name: String,
    /// Its [`Definition`], as JSON.
    pub definition: String,
}

fn parse_path(path: &str) -> Result<Vec<String>> {
    Ok(Path::parse(path)?.segments().map(String::from).collect())
}

/// An index ready to key documents.
#[derive(Clone, Debug)]
struct Compiled {
    spec: IndexSpec,
    paths: Vec<Vec<String>>,
    /// The first field's path, as queries name it.
    first: Path,
}

/// What one path reaches in a document.
enum Reach<'a, V> {
    Missing,
    One(&'a V),
    /// An array on the way or at the end, or several values.
    Many(Vec<&'a V>),
}

fn reach<'a, V: JsonRead>(doc: &'a V, path: &[String]) -> Reach<'a, V> {
    let mut found = Vec::new();
    let mut many = false;
    collect(doc, path, &mut found, &mut many);
    match (found.len(), many) {
        (0, false) => Reach::Missing,
        (1, false) => Reach::One(found[0]),
        _ => Reach::Many(found),
    }
}

fn collect<'a, V: JsonRead>(value: &'a V, path: &[String], out: &mut Vec<&'a V>, many: &mut bool) {
    let Some((head, rest)) = path.split_first() else {
        if value.kind() == Kind::Array {
            *many = true;
        }
        out.push(value);
        return;
    };
    match value.kind() {
        Kind::Object => {
            if let Some(next) = value.get(head) {
                collect(next, rest, out, many);
            }
        }
        Kind::Array => {
            *many = true;
            if let Ok(i) = head.parse::<usize>()
                && let Some(next) = value.item(i)
            {
                collect(next, rest, out, many);
            }
            for item in value.items() {
                if item.kind() == Kind::Object {
                    collect(item, path, out, many);
                }
            }
        }
        _ => {}
    }
}

impl Compiled {
    fn new(spec: IndexSpec) -> Result<Self> {
        let paths = spec
            .fields
            .iter()
            .map(|f| parse_path(&f.path))
            .collect::<Result<_>>()?;
        let first = Path::parse(&spec.fields[0].path)?;
        Ok(Self { spec, paths, first })
    }

    /// The document's key, or `None` if the index skips it (sparse, every field missing).
    fn key<V: JsonRead>(&self, doc: &V) -> Option<Vec<u8>> {
        let reached: Vec<Reach<'_, V>> = self.paths.iter().map(|p| reach(doc, p)).collect();
        if self.spec.sparse && reached.iter().all(|r| matches!(r, Reach::Missing)) {
            return None;
        }
        let multi = reached.iter().any(|r| matches!(r, Reach::Many(_)));
        let mut key = vec![if multi { KEY_MULTI } else { KEY_SCALAR }];
        for (reach, field) in reached.iter().zip(&self.spec.fields) {
            let value = match reach {
                Reach::Missing => Value::Null,
                Reach::One(v) if !multi => {
                    self.encode_field(*v, field.descending, &mut key);
                    continue;
                }
                Reach::One(v) => Value::Array(vec![v.to_value()]),
                Reach::Many(vs) => Value::Array(vs.iter().map(|v| v.to_value()).collect()),
            };
            self.encode_field(&value, field.descending, &mut key);
        }
        Some(key)
    }

    fn encode_field<V: JsonRead>(&self, value: &V, descending: bool, out: &mut Vec<u8>) {
        if descending {
            json::encode_index_key_desc(value, self.spec.ignore_case, out);
        } else {
            json::encode_index_key(value, self.spec.ignore_case, out);
        }
    }

    /// The first field missing from `doc`, if the index requires its fields.
    fn missing_required(&self, doc: &Value) -> Option<&str> {
        if !self.spec.required {
            return None;
        }
        self.paths
            .iter()
            .zip(&self.spec.fields)
            .find(|(p, _)| matches!(reach(doc, p), Reach::Missing))
            .map(|(_, f)| f.path.as_str())
    }

    /// The readable form of `doc`'s key: each path and what it holds.
    fn describe<V: JsonRead>(&self, doc: &V) -> String {
        self.paths
            .iter()
            .zip(&self.spec.fields)
            .map(|(p, f)| {
                let shown = match reach(doc, p) {
                    Reach::Missing => "missing".to_string(),
                    Reach::One(v) => v.to_value().to_string(),
                    Reach::Many(vs) => {
                        Value::Array(vs.iter().map(|v| v.to_value()).collect()).to_string()
                    }
                };
                format!("{} = {shown}", f.path)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn def(self: &Arc<Self>) -> IndexDef {
        let key = Arc::clone(self);
        let describe = Arc::clone(self);
        IndexDef::raw(
            &self.spec.name,
            self.spec.unique,
            move |bytes| key.key(crate::collection::archived::<Json>(bytes)),
            move |bytes| describe.describe(crate::collection::archived::<Json>(bytes)),
        )
    }
}

/// One version of an audited document, in the collection's history (`<name>.__history`).
#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct HistoryEntry {
    /// The end LSN of the log group that wrote this version, stamped at commit.
    pub end_lsn: u64,
    /// The commit's time in milliseconds since the Unix epoch, stamped at commit.
    pub time_ms: u64,
    /// The document's id.
    pub id: Json,
    /// The version, or `None` for the removal.
    pub document: Option<Json>,
}

/// A version of a document, from [`Documents::history`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Version {
    /// The end LSN of the log group that wrote it (the commit's [`crate::CommitInfo::end_lsn`]); 0 while the
    /// transaction reading it has not committed it.
    pub end_lsn: u64,
    /// When it was committed, in milliseconds since the Unix epoch (0 while not committed).
    pub time_ms: u64,
    /// The document, or `None` where it was removed.
    pub document: Option<Value>,
}

/// The name of the history collection of document collection `name`.
#[must_use]
pub fn history_name(name: &str) -> String {
    format!("{name}{HISTORY_SUFFIX}")
}

/// What a history collection's name ends with.
pub const HISTORY_SUFFIX: &str = ".__history";

/// How a history collection is declared.
pub(crate) fn history_spec() -> Spec<HistoryEntry> {
    Spec::new().index("id", |e: &ArchivedHistoryEntry| {
        let mut key = Vec::new();
        json::encode_index_key(&e.id, false, &mut key);
        RawKey(key)
    })
}

/// Where a serialized [`HistoryEntry`] of `len` bytes takes its commit's stamps (its root ends the buffer).
fn history_stamp(len: usize) -> Stamp {
    let root = len - std::mem::size_of::<ArchivedHistoryEntry>();
    Stamp {
        end_lsn_at: root + std::mem::offset_of!(ArchivedHistoryEntry, end_lsn),
        time_ms_at: root + std::mem::offset_of!(ArchivedHistoryEntry, time_ms),
    }
}

/// Encoded key bytes passed through as they are (an index range over raw key bytes).
#[derive(Debug)]
struct RawKey(Vec<u8>);

impl IndexKey for RawKey {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

/// The smallest byte string greater than every string starting with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One compiled state of a document collection: its definition, the handle writing with its indexes, and the
/// indexes (the id index first, then the TTL index if any, then the definition's).
#[derive(Clone)]
struct State {
    definition: Definition,
    collection: Collection<Json>,
    /// The history, for an audited collection.
    history: Option<Collection<HistoryEntry>>,
    id_path: Vec<String>,
    indexes: Vec<Arc<Compiled>>,
}

impl State {
    fn new(
        definition: Definition,
        collection: Collection<Json>,
        history: Option<Collection<HistoryEntry>>,
    ) -> Result<Self> {
        let (id_path, indexes) = compile(&definition)?;
        Ok(Self {
            definition,
            collection,
            history,
            id_path,
            indexes,
        })
    }

    /// This state with its collection and history fenced ([`Database::fence`]): transactions that wrote through
    /// the handles of `self` fail at commit from now on.
    fn fenced(&self, db: &Database) -> Result<Self> {
        Ok(Self {
            collection: db.fence(&self.collection)?,
            history: self.history.as_ref().map(|h| db.fence(h)).transpose()?,
            ..self.clone()
        })
    }

    /// Records, in `tx`, that the document `id` became `doc` (`None`: was removed), if the collection is audited.
    fn record(&self, tx: &mut Transaction<'_>, id: &Value, doc: Option<&Value>) -> Result<()> {
        let Some(history) = &self.history else {
            return Ok(());
        };
        let row = history.ids.fetch_add(1, Ordering::Relaxed);
        let entry = HistoryEntry {
            end_lsn: 0,
            time_ms: 0,
            id: Json::from(id),
            document: doc.map(Json::from),
        };
        tx.put_stamped(history, row, &entry, history_stamp)
    }

    /// The id of `doc`.
    fn id_of<V: JsonRead>(&self, doc: &V) -> Value {
        match reach(doc, &self.id_path) {
            Reach::One(id) => id.to_value(),
            _ => Value::Null,
        }
    }

    fn index(&self, name: &str) -> Option<&Arc<Compiled>> {
        self.indexes.iter().find(|c| c.spec.name == name)
    }
}

fn compile(definition: &Definition) -> Result<(Vec<String>, Vec<Arc<Compiled>>)> {
    definition.check()?;
    let id_path = parse_path(&definition.id_field)?;
    let mut indexes = vec![Arc::new(Compiled::new(IndexSpec {
        name: ID_INDEX.into(),
        fields: vec![IndexField {
            path: definition.id_field.clone(),
            descending: false,
        }],
        unique: true,
        sparse: false,
        required: true,
        ignore_case: false,
    })?)];
    if let Some(ttl) = &definition.ttl {
        indexes.push(Arc::new(Compiled::new(
            IndexSpec::on(&ttl.field).named(TTL_INDEX).sparse(),
        )?));
    }
    for spec in &definition.indexes {
        indexes.push(Arc::new(Compiled::new(spec.clone())?));
    }
    Ok((id_path, indexes))
}

/// The key `spec` gives `doc` (`None`: a sparse index skips it), exactly as the index stores it: two documents
/// with equal keys clash in a unique index. For an importer checking its data before it writes.
pub(crate) fn index_key_of(spec: &IndexSpec) -> Result<impl Fn(&Value) -> Option<Vec<u8>> + use<>> {
    let compiled = Compiled::new(spec.clone())?;
    Ok(move |doc: &Value| compiled.key(doc))
}

fn defs_of(indexes: &[Arc<Compiled>]) -> Vec<IndexDef> {
    indexes.iter().map(Compiled::def).collect()
}

/// What every handle of one document collection in this process shares.
pub(crate) struct Shared {
    name: Arc<str>,
    state: arc_swap::ArcSwap<State>,
    /// Serializes definition changes (index creation, drop).
    changing: Mutex<()>,
    /// The last timestamp id handed out.
    last_timestamp: AtomicU64,
    generator: Mutex<Option<CustomIds>>,
}

type CustomIds = Arc<dyn Fn() -> Value + Send + Sync>;

/// A document collection. Cheap to clone; every handle of a collection sees its index changes.
#[derive(Clone)]
pub struct Documents {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("name", &self.shared.name)
            .field("definition", &self.shared.state.load().definition)
            .finish()
    }
}

/// Where documents are read from: a [`Snapshot`] or a [`Transaction`] (its own writes over its snapshot).
pub trait Source: sealed::Sealed {
    #[doc(hidden)]
    fn row<'s>(&'s self, collection: &Collection<Json>, row: u64) -> Option<&'s ArchivedJson>;
    #[doc(hidden)]
    fn rows<'s>(&'s self, collection: &Collection<Json>) -> Docs<'s, Json>;
    #[doc(hidden)]
    fn index_rows<'s>(
        &'s self,
        collection: &Collection<Json>,
        index: &str,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Result<Docs<'s, Json>>;
    /// Whether this source's indexes of the collection are the handle's (else only scans are right).
    #[doc(hidden)]
    fn indexes_current(&self, collection: &Collection<Json>) -> bool;
    #[doc(hidden)]
    fn history_rows<'s>(
        &'s self,
        history: &Collection<HistoryEntry>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Result<Docs<'s, HistoryEntry>>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::db::Snapshot {}
    impl Sealed for crate::txn::Transaction<'_> {}
}

fn raw_bound(bound: Bound<Vec<u8>>) -> Bound<RawKey> {
    match bound {
        Bound::Included(k) => Bound::Included(RawKey(k)),
        Bound::Excluded(k) => Bound::Excluded(RawKey(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// `Source` for a type whose reads have the typed collection API's names and signatures.
macro_rules! source {
    ($type:ty, $current:expr) => {
        impl Source for $type {
            fn row<'s>(
                &'s self,
                collection: &Collection<Json>,
                row: u64,
            ) -> Option<&'s ArchivedJson> {
                self.get(collection, row)
            }
            fn rows<'s>(&'s self, collection: &Collection<Json>) -> Docs<'s, Json> {
                self.iter(collection)
            }
            fn index_rows<'s>(
                &'s self,
                collection: &Collection<Json>,
                index: &str,
                start: Bound<Vec<u8>>,
                end: Bound<Vec<u8>>,
            ) -> Result<Docs<'s, Json>> {
                self.range(collection, index, (raw_bound(start), raw_bound(end)))
            }
            fn indexes_current(&self, collection: &Collection<Json>) -> bool {
                $current(self, collection)
            }
            fn history_rows<'s>(
                &'s self,
                history: &Collection<HistoryEntry>,
                start: Bound<Vec<u8>>,
                end: Bound<Vec<u8>>,
            ) -> Result<Docs<'s, HistoryEntry>> {
                self.range(history, "id", (raw_bound(start), raw_bound(end)))
            }
        }
    };
}

source!(Snapshot, Snapshot::indexes_current::<Json>);
source!(
    Transaction<'_>,
    |tx: &Transaction<'_>, collection: &Collection<Json>| {
        tx.snapshot_version()
            .defs(collection.slot)
            .is_some_and(|d| Arc::ptr_eq(d, &collection.defs))
    }
);

/// A query: a filter and what to do with its matches.
#[derive(Clone, Debug, Default)]
pub struct Query {
    filter: Value,
    sort: Option<Value>,
    skip: usize,
    limit: Option<usize>,
    projection: Option<Value>,
}

impl Query {
    /// Documents matching `filter` (a Mongo-style query document; `{}` matches all).
    #[must_use]
    pub fn new(filter: Value) -> Self {
        Self {
            filter,
            ..Self::default()
        }
    }

    /// Sorts by `{"path": 1 | -1, ...}`.
    #[must_use]
    pub fn sort(mut self, sort: Value) -> Self {
        self.sort = Some(sort);
        self
    }

    /// Skips the first `n` matches.
    #[must_use]
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// Returns at most `n` matches.
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Keeps (`{"a": 1}`) or drops (`{"a": 0}`) fields of the results of [`Documents::find_json`].
    #[must_use]
    pub fn project(mut self, projection: Value) -> Self {
        self.projection = Some(projection);
        self
    }
}

/// How a query was run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `"scan"`, or `"index"` with the index's name.
    pub strategy: String,
    /// The index used, if any.
    pub index: Option<String>,
    /// Key ranges read in the index (the multi-key bucket included).
    pub ranges: usize,
    /// Documents read and checked against the filter.
    pub examined: usize,
    /// Documents that matched (before skip and limit).
    pub matched: usize,
}

/// A whole-document change, for [`Documents::update`].
#[derive(Clone, Debug)]
pub enum Patch {
    /// Update operators: `{"$set": {...}, "$inc": {...}, ...}`.
    Operators(Value),
    /// Deep merge of an object into the document (nested objects merged, the rest replaced).
    Merge(Value),
    /// Shallow assignment of an object's top-level fields.
    Assign(Value),
    /// Replacement of the whole document (its id is kept).
    Replace(Value),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the epoch that `value` says: a number, or an RFC 3339 string.
fn time_ms<V: JsonRead>(value: &V) -> Option<u64> {
    match value.kind() {
        Kind::Number => value
            .as_number()
            .map(|n| n.as_f64())
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64),
        Kind::String => {
            let at = humantime::parse_rfc3339_weak(value.as_str()?).ok()?;
            at.duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
        _ => None,
    }
}

impl Documents {
    fn state(&self) -> arc_swap::Guard<Arc<State>> {
        self.shared.state.load()
    }

    /// The collection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its definition as committed.
    #[must_use]
    pub fn definition(&self) -> Definition {
        self.state().definition.clone()
    }

    /// The typed collection underneath (rows of [`Json`]).
    #[must_use]
    pub fn collection(&self) -> Collection<Json> {
        self.state().collection.clone()
    }

    fn expired<V: JsonRead>(state: &State, doc: &V, now: u64) -> bool {
        let Some(ttl) = &state.definition.ttl else {
            return false;
        };
        let Some(index) = state.index(TTL_INDEX) else {
            return false;
        };
        match reach(doc, &index.paths[0]) {
            Reach::One(v) => time_ms(v).is_some_and(|t| now.saturating_sub(t) > ttl.after_ms),
            _ => false,
        }
    }

    /// The row holding the document whose id is `id`, and the document.
    fn find_row<'s, S: Source>(
        state: &State,
        source: &'s S,
        id: &Value,
    ) -> Result<Option<(u64, &'s ArchivedJson)>> {
        let mut key = vec![KEY_SCALAR];
        json::encode_index_key(id, false, &mut key);
        if source.indexes_current(&state.collection) {
            let end = prefix_end(&key).map_or(Bound::Unbounded, Bound::Excluded);
            return Ok(source
                .index_rows(&state.collection, ID_INDEX, Bound::Included(key), end)?
                .next());
        }
        let id_index = &state.indexes[0];
        Ok(source
            .rows(&state.collection)
            .find(|(_, doc)| id_index.key(*doc).as_deref() == Some(&key[..])))
    }

    /// The document whose id is `id` (an expired one is not returned).
    ///
    /// # Errors
    /// [`Error::UnknownCollection`] for a source of another database.
    pub fn get<'s, S: Source>(
        &self,
        source: &'s S,
        id: &Value,
    ) -> Result<Option<&'s ArchivedJson>> {
        let state = self.state();
        Ok(Self::find_row(&state, source, id)?
            .map(|(_, doc)| doc)
            .filter(|doc| !Self::expired(&state, *doc, now_ms())))
    }

    /// Inserts `doc` (an object) and returns its id: its id field's value, or a new one from the collection's
    /// generator (written into the document).
    ///
    /// # Errors
    /// [`Error::Json`] if `doc` is not an object or its id is not a scalar; [`Error::UniqueViolation`] if the id
    /// or a unique key is taken; [`Error::MissingField`] for a required index field; [`Error::DocumentTooLarge`].
    pub fn insert(&self, tx: &mut Transaction<'_>, mut doc: Value) -> Result<Value> {
        let state = self.state();
        if !doc.is_object() {
            return Err(not_object(&state, &doc));
        }
        json::check_depth(&doc)?;
        let collection = &state.collection;
        let id = match reach(&doc, &state.id_path) {
            Reach::One(id) if is_scalar_id(id) => id.clone(),
            Reach::Missing => Value::Null,
            _ => return Err(bad_id(&state, &doc)),
        };
        let (row, id) = if id.is_null() {
            self.generate_id(&state, tx, &mut doc)?
        } else {
            if Self::find_row(&state, &*tx, &id)?.is_some() {
                return Err(Error::UniqueViolation {
                    collection: self.shared.name.to_string(),
                    index: ID_INDEX.into(),
                    key: format!("{} = {id}", state.definition.id_field),
                    holder: Self::find_row(&state, &*tx, &id)?.map_or(0, |(row, _)| row),
                });
            }
            (collection.ids.fetch_add(1, Ordering::Relaxed), id)
        };
        self.check_required(&state, &doc)?;
        tx.put(collection, row, &Json::from(&doc))?;
        state.record(tx, &id, Some(&doc))?;
        Ok(id)
    }

    /// Inserts `doc` at row `row` with the id it carries, for an importer that chose its rows (to keep the source's
    /// order and id counter) and checked beforehand that its ids are distinct scalars and its unique keys free.
    /// Required fields, depth and size are checked as by [`Documents::insert`]; a clash the caller missed still
    /// fails the commit.
    pub(crate) fn insert_at_row(
        &self,
        tx: &mut Transaction<'_>,
        row: u64,
        doc: &Value,
    ) -> Result<()> {
        let state = self.state();
        if !doc.is_object() {
            return Err(not_object(&state, doc));
        }
        json::check_depth(doc)?;
        let id = match reach(doc, &state.id_path) {
            Reach::One(id) if is_scalar_id(id) => id.clone(),
            _ => return Err(bad_id(&state, doc)),
        };
        self.check_required(&state, doc)?;
        tx.put(&state.collection, row, &Json::from(doc))?;
        state.record(tx, &id, Some(doc))
    }

    fn generate_id(
        &self,
        state: &State,
        tx: &Transaction<'_>,
        doc: &mut Value,
    ) -> Result<(u64, Value)> {
        let collection = &state.collection;
        loop {
            let row = collection.ids.fetch_add(1, Ordering::Relaxed);
            let id = match state.definition.ids {
                IdGenerator::AutoIncrement => Value::from(row),
                IdGenerator::Timestamp => {
                    let now = now_ms();
                    let mut last = self.shared.last_timestamp.load(Ordering::Relaxed);
                    let id = loop {
                        let next = now.max(last + 1);
                        match self.shared.last_timestamp.compare_exchange_weak(
                            last,
                            next,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        ) {
                            Ok(_) => break next,
                            Err(seen) => last = seen,
                        }
                    };
                    Value::from(id)
                }
                IdGenerator::Uuid => Value::String(uuid::Uuid::new_v4().to_string()),
                IdGenerator::Custom => {
                    let generator = self.shared.generator.lock().clone();
                    let generator = generator.ok_or_else(|| {
                        Error::InvalidOptions(format!(
                            "collection {:?} makes its ids with a custom generator: open it with \
                             Database::documents_with_generator",
                            self.shared.name
                        ))
                    })?;
                    let id = generator();
                    if !is_scalar_id(&id) {
                        return Err(Error::InvalidOptions(format!(
                            "the id generator of {:?} returned {id}, which is not a string or number",
                            self.shared.name
                        )));
                    }
                    id
                }
            };
            if Self::find_row(state, tx, &id)?.is_some() {
                // A document brought this id itself (auto-increment, timestamp) or the generator repeated one.
                if state.definition.ids == IdGenerator::Custom {
                    return Err(Error::UniqueViolation {
                        collection: self.shared.name.to_string(),
                        index: ID_INDEX.into(),
                        key: format!("{} = {id}", state.definition.id_field),
                        holder: Self::find_row(state, tx, &id)?.map_or(0, |(row, _)| row),
                    });
                }
                continue;
            }
            set_path(doc, &state.id_path, id.clone())
                .map_err(|at| path_error(state, &state.definition.id_field, &at))?;
            return Ok((row, id));
        }
    }

    fn check_required(&self, state: &State, doc: &Value) -> Result<()> {
        for index in &state.indexes {
            if let Some(path) = index.missing_required(doc) {
                return Err(Error::MissingField {
                    collection: self.shared.name.to_string(),
                    index: index.spec.name.clone(),
                    path: path.into(),
                });
            }
        }
        Ok(())
    }

    /// Rows matching `filter` as `source` sees them (expired documents left out), in row order, with the plan.
    fn matching<'s, S: Source>(
        &self,
        state: &State,
        source: &'s S,
        filter: &Filter,
    ) -> Result<(Vec<(u64, &'s ArchivedJson)>, Plan)> {
        let now = now_ms();
        let mut plan = Plan {
            strategy: "scan".into(),
            index: None,
            ranges: 0,
            examined: 0,
            matched: 0,
        };
        let mut found = Vec::new();
        let mut check = |row: u64, doc: &'s ArchivedJson, plan: &mut Plan| {
            plan.examined += 1;
            if filter.matches(doc) && !Self::expired(state, doc, now) {
                found.push((row, doc));
            }
        };
        match choose_index(state, source, filter) {
            Some((index, ranges)) => {
                plan.strategy = "index".into();
                plan.index = Some(index.spec.name.clone());
                plan.ranges = ranges.len();
                for (start, end) in ranges {
                    for (row, doc) in
                        source.index_rows(&state.collection, &index.spec.name, start, end)?
                    {
                        check(row, doc, &mut plan);
                    }
                }
                found.sort_unstable_by_key(|(row, _)| *row);
            }
            None => {
                for (row, doc) in source.rows(&state.collection) {
                    check(row, doc, &mut plan);
                }
            }
        }
        plan.matched = found.len();
        Ok((found, plan))
    }

    fn run<'s, S: Source>(
        &self,
        source: &'s S,
        query: &Query,
    ) -> Result<(Vec<&'s ArchivedJson>, Plan)> {
        let state = self.state();
        let filter = Filter::parse(&query.filter)?;
        let sort = query.sort.as_ref().map(Sort::parse).transpose()?;
        let (found, plan) = self.matching(&state, source, &filter)?;
        let mut docs: Vec<&'s ArchivedJson> = found.into_iter().map(|(_, d)| d).collect();
        if let Some(sort) = &sort {
            docs.sort_by(|a, b| sort.compare(*a, *b));
        }
        let docs = docs
            .into_iter()
            .skip(query.skip)
            .take(query.limit.unwrap_or(usize::MAX))
            .collect();
        Ok((docs, plan))
    }

    /// The documents `query` selects (its projection does not apply: see [`Documents::find_json`]).
    ///
    /// # Errors
    /// [`Error::Json`] for a malformed filter or sort.
    pub fn find<'s, S: Source>(
        &self,
        source: &'s S,
        query: &Query,
    ) -> Result<Vec<&'s ArchivedJson>> {
        Ok(self.run(source, query)?.0)
    }

    /// The documents `query` selects, as JSON, projected.
    ///
    /// # Errors
    /// As [`Documents::find`], and for a malformed projection.
    pub fn find_json<S: Source>(&self, source: &S, query: &Query) -> Result<Vec<Value>> {
        let projection = query
            .projection
            .as_ref()
            .map(|p| Projection::parse(p, &self.state().definition.id_field))
            .transpose()?;
        Ok(self
            .find(source, query)?
            .into_iter()
            .map(|doc| {
                let value = doc.to_value();
                match &projection {
                    Some(p) => p.project(&value),
                    None => value,
                }
            })
            .collect())
    }

    /// The first document `query` selects (by its sort, else in insertion order).
    ///
    /// # Errors
    /// As [`Documents::find`].
    pub fn find_first<'s, S: Source>(
        &self,
        source: &'s S,
        query: &Query,
    ) -> Result<Option<&'s ArchivedJson>> {
        Ok(self
            .find(source, &query.clone().limit(query.skip + 1))?
            .into_iter()
            .next())
    }

    /// The last document `query` selects (by its sort, else in insertion order).
    ///
    /// # Errors
    /// As [`Documents::find`].
    pub fn find_last<'s, S: Source>(
        &self,
        source: &'s S,
        query: &Query,
    ) -> Result<Option<&'s ArchivedJson>> {
        let mut all = self.find(
            source,
            &Query {
                limit: None,
                skip: 0,
                ..query.clone()
            },
        )?;
        Ok(all.pop())
    }

    /// The number of documents matching `filter`.
    ///
    /// # Errors
    /// [`Error::Json`] for a malformed filter.
    pub fn count<S: Source>(&self, source: &S, filter: &Value) -> Result<usize> {
        let filter = Filter::parse(filter)?;
        Ok(self.matching(&self.state(), source, &filter)?.0.len())
    }

    /// Runs `query` and tells how: the index used (or a scan) and how many documents were examined and matched.
    ///
    /// # Errors
    /// As [`Documents::find`].
    pub fn explain<S: Source>(&self, source: &S, query: &Query) -> Result<Plan> {
        Ok(self.run(source, query)?.1)
    }

    /// Applies `change` to every document matching `filter`; returns how many changed.
    ///
    /// # Errors
    /// [`Error::Json`] for a malformed filter or change, or one that cannot apply to a document (nothing of this
    /// call is written then); as [`Documents::insert`].
    pub fn update(
        &self,
        tx: &mut Transaction<'_>,
        filter: &Value,
        change: &Patch,
    ) -> Result<usize> {
        let state = self.state();
        let filter = Filter::parse(filter)?;
        let operators = match change {
            Patch::Operators(ops) => Some(Update::parse(ops)?),
            _ => None,
        };
        let mut changed = Vec::new();
        for (row, doc) in self.matching(&state, &*tx, &filter)?.0 {
            let before = doc.to_value();
            let id = match reach(&before, &state.id_path) {
                Reach::One(id) => id.clone(),
                _ => Value::Null,
            };
            let mut after = before.clone();
            let id_field = &state.definition.id_field;
            match (change, &operators) {
                (_, Some(update)) => update.apply(&mut after, id_field)?,
                (Patch::Merge(patch), _) => json::deep_merge(&mut after, patch, id_field)?,
                (Patch::Assign(patch), _) => json::shallow_assign(&mut after, patch, id_field)?,
                (Patch::Replace(new), _) => after = new.clone(),
                (Patch::Operators(_), None) => unreachable!("operators were parsed"),
            }
            if !after.is_object() {
                return Err(not_object(&state, &after));
            }
            json::check_depth(&after)?;
            match reach(&after, &state.id_path) {
                Reach::One(new_id) if *new_id == id => {}
                Reach::Missing => set_path(&mut after, &state.id_path, id.clone())
                    .map_err(|at| path_error(&state, &state.definition.id_field, &at))?,
                _ => {
                    return Err(Error::Json(JsonError::new(
                        ErrorKind::IdChanged,
                        &state.definition.id_field,
                        format!("the id field {:?} cannot change", state.definition.id_field),
                    )));
                }
            }
            self.check_required(&state, &after)?;
            if after != before {
                changed.push((row, id, after));
            }
        }
        let count = changed.len();
        for (row, id, after) in changed {
            tx.put(&state.collection, row, &Json::from(&after))?;
            state.record(tx, &id, Some(&after))?;
        }
        Ok(count)
    }

    /// Removes every document matching `filter`; returns how many.
    ///
    /// # Errors
    /// [`Error::Json`] for a malformed filter.
    pub fn delete(&self, tx: &mut Transaction<'_>, filter: &Value) -> Result<usize> {
        let state = self.state();
        let filter = Filter::parse(filter)?;
        let rows: Vec<(u64, Value)> = self
            .matching(&state, &*tx, &filter)?
            .0
            .into_iter()
            .map(|(row, doc)| (row, state.id_of(doc)))
            .collect();
        for (row, id) in &rows {
            tx.remove(&state.collection, *row)?;
            state.record(tx, id, None)?;
        }
        Ok(rows.len())
    }

    /// Removes the document whose id is `id`; returns whether there was one.
    ///
    /// # Errors
    /// [`Error::UnknownCollection`] for a transaction of another database.
    pub fn delete_id(&self, tx: &mut Transaction<'_>, id: &Value) -> Result<bool> {
        let state = self.state();
        let Some((row, _)) = Self::find_row(&state, &*tx, id)? else {
            return Ok(false);
        };
        tx.remove(&state.collection, row)?;
        state.record(tx, id, None)?;
        Ok(true)
    }

    /// Every version of the document `id` that the history keeps, oldest first: each committed write (and
    /// removal) with its commit's end LSN and time, then those of the transaction reading, if any.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if the collection is not audited.
    pub fn history<S: Source>(&self, source: &S, id: &Value) -> Result<Vec<Version>> {
        let state = self.state();
        let history = state.history.as_ref().ok_or_else(|| {
            Error::InvalidOptions(format!(
                "collection {:?} keeps no history: create it with Definition::audit",
                self.shared.name
            ))
        })?;
        let mut key = Vec::new();
        json::encode_index_key(id, false, &mut key);
        let end = prefix_end(&key).map_or(Bound::Unbounded, Bound::Excluded);
        let mut versions: Vec<(u64, Version)> = source
            .history_rows(history, Bound::Included(key), end)?
            .map(|(row, entry)| {
                (
                    row,
                    Version {
                        end_lsn: entry.end_lsn.to_native(),
                        time_ms: entry.time_ms.to_native(),
                        document: entry.document.as_ref().map(ArchivedJson::to_value),
                    },
                )
            })
            .collect();
        // Committed versions in log order (the history's rows are numbered when written, not committed), then
        // the reader's own.
        versions.sort_by_key(|(row, v)| (v.end_lsn == 0, v.end_lsn, *row));
        Ok(versions.into_iter().map(|(_, v)| v).collect())
    }

    /// The expired documents' rows and ids, through the TTL index: the numbers below the cut-off, every string
    /// (RFC 3339 times do not sort by time in general) and the multi-key bucket, each checked.
    fn expired_rows<S: Source>(state: &State, source: &S) -> Result<Vec<(u64, Value)>> {
        let now = now_ms();
        let Some(ttl) = &state.definition.ttl else {
            return Ok(Vec::new());
        };
        let candidates: Vec<(u64, &ArchivedJson)> = if source.indexes_current(&state.collection) {
            let key = |value: &Value| {
                let mut key = vec![KEY_SCALAR];
                json::encode_index_key(value, false, &mut key);
                key
            };
            let cut_off = now.saturating_sub(ttl.after_ms);
            let after_null =
                prefix_end(&key(&Value::Null)).map_or(Bound::Unbounded, Bound::Included);
            let ranges = [
                (after_null, Bound::Excluded(key(&Value::from(cut_off)))),
                (
                    Bound::Included(key(&Value::from(""))),
                    Bound::Excluded(key(&Value::Object(serde_json::Map::new()))),
                ),
                (
                    Bound::Included(vec![KEY_MULTI]),
                    Bound::Excluded(vec![KEY_MULTI + 1]),
                ),
            ];
            let mut rows = Vec::new();
            for (start, end) in ranges {
                rows.extend(source.index_rows(&state.collection, TTL_INDEX, start, end)?);
            }
            rows
        } else {
            source.rows(&state.collection).collect()
        };
        Ok(candidates
            .into_iter()
            .filter(|(_, doc)| Self::expired(state, *doc, now))
            .map(|(row, doc)| (row, state.id_of(doc)))
            .collect())
    }

    /// Removes the documents that have expired; returns how many. Every checkpoint runs it first (for the
    /// collections opened in the process), and so does the background checkpointer at each of its intervals.
    ///
    /// # Errors
    /// As a commit.
    pub fn purge_expired(&self, db: &Database) -> Result<usize> {
        let state = self.state();
        if state.definition.ttl.is_none() {
            return Ok(0);
        }
        let mut tx = db.begin();
        let rows = Self::expired_rows(&state, &tx)?;
        for (row, id) in &rows {
            tx.remove(&state.collection, *row)?;
            state.record(&mut tx, id, None)?;
        }
        if !rows.is_empty() {
            tx.commit()?;
        }
        Ok(rows.len())
    }

    /// Adds an index, built from the current documents. Transactions that wrote to the collection before it fail
    /// at commit with [`Error::IndexesChanged`].
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for a bad or taken name; [`Error::UniqueViolation`] if the documents break it.
    pub fn create_index(&self, db: &Database, index: IndexSpec) -> Result<()> {
        let _changing = self.shared.changing.lock();
        let mut definition = self.state().definition.clone();
        definition.indexes.push(index);
        self.redefine(db, definition)
    }

    /// Drops an index; returns whether it existed.
    ///
    /// # Errors
    /// As a commit.
    pub fn drop_index(&self, db: &Database, name: &str) -> Result<bool> {
        let _changing = self.shared.changing.lock();
        let mut definition = self.state().definition.clone();
        let before = definition.indexes.len();
        definition.indexes.retain(|i| i.name != name);
        if definition.indexes.len() == before {
            return Ok(false);
        }
        self.redefine(db, definition)?;
        Ok(true)
    }

    /// Rebuilds the indexes for `definition`, then commits it to the catalog (restoring the old indexes if that
    /// commit fails).
    fn redefine(&self, db: &Database, definition: Definition) -> Result<()> {
        let old = self.state();
        let (id_path, indexes) = compile(&definition)?;
        let collection = db.reindex(&old.collection, defs_of(&indexes))?;
        let committed = write_catalog(db, &self.shared.name, &definition);
        if let Err(e) = committed {
            let restored = db.reindex(&collection, defs_of(&old.indexes))?;
            self.shared.state.store(Arc::new(State::new(
                old.definition.clone(),
                restored,
                old.history.clone(),
            )?));
            return Err(e);
        }
        self.shared.state.store(Arc::new(State {
            definition,
            collection,
            history: old.history.clone(),
            id_path,
            indexes,
        }));
        Ok(())
    }

    /// Moves the collection's documents (and history) to a new collection named `<name>.<UTC time>` with the same
    /// definition, and returns that name; this collection starts empty, in a fresh storage collection. One small
    /// transaction (the catalog's two entries): the documents do not move, their storage changes hands.
    /// Transactions that wrote to the collection before fail at commit with [`Error::IndexesChanged`].
    ///
    /// # Errors
    /// As a commit; [`Error::CollectionExists`] if the dated name is taken.
    pub fn rotate(&self, db: &Database) -> Result<String> {
        let _changing = self.shared.changing.lock();
        let state = self.state();
        let stamp = humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .replace([':', '-'], "");
        let target = format!("{}.{stamp}", self.shared.name);
        let storage = state
            .definition
            .storage
            .clone()
            .unwrap_or_else(|| self.shared.name.to_string());
        let moved = Definition {
            storage: Some(storage),
            ..state.definition.clone()
        };
        let fresh = Definition {
            storage: Some(fresh_storage(STORAGE_PREFIX, &self.shared.name)),
            ..state.definition.clone()
        };
        // Fence first: from here no handle writes to the old storage (writers retry on the new state).
        let fenced = state.fenced(db)?;
        let result = (|| {
            let catalog = catalog(db)?;
            let mut tx = db.begin_with(Durability::Sync);
            if tx.find_one(&catalog, "name", &target.as_str())?.is_some() {
                return Err(Error::CollectionExists {
                    collection: target.clone(),
                });
            }
            let renewed = db.new_shared(&self.shared.name, fresh.clone())?;
            put_catalog_entry(&mut tx, &catalog, &target, &moved)?;
            put_catalog_entry(&mut tx, &catalog, &self.shared.name, &fresh)?;
            tx.commit()?;
            Ok(renewed)
        })();
        match result {
            Ok(renewed) => {
                self.shared.state.store(renewed.state.load_full());
                let rotated = Arc::new(Shared {
                    name: target.as_str().into(),
                    state: arc_swap::ArcSwap::from_pointee(State {
                        definition: moved,
                        ..fenced
                    }),
                    changing: Mutex::new(()),
                    last_timestamp: AtomicU64::new(
                        self.shared.last_timestamp.load(Ordering::Relaxed),
                    ),
                    generator: Mutex::new(self.shared.generator.lock().clone()),
                });
                db.register_documents(vec![rotated]);
                Ok(target)
            }
            Err(e) => {
                self.shared.state.store(Arc::new(fenced));
                Err(e)
            }
        }
    }
}

/// Whether `value` can be a document id: a string or a number.
fn is_scalar_id(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_))
}

fn not_object(state: &State, doc: &Value) -> Error {
    Error::Json(JsonError::new(
        ErrorKind::Malformed,
        "",
        format!(
            "a document of {:?} must be a JSON object, not {}",
            state.collection.name(),
            kind_name(doc)
        ),
    ))
}

fn bad_id(state: &State, doc: &Value) -> Error {
    Error::Json(JsonError::new(
        ErrorKind::WrongOperand,
        &state.definition.id_field,
        format!(
            "the id field {:?} must hold a string or a number (document {doc})",
            state.definition.id_field
        ),
    ))
}

fn path_error(state: &State, path: &str, at: &str) -> Error {
    Error::Json(JsonError::new(
        ErrorKind::NotTraversable,
        path,
        format!(
            "{:?} in {:?} goes through {at}, which is not an object",
            path,
            state.collection.name()
        ),
    ))
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sets `path` in `doc` to `value`, creating objects on the way; `Err` names the segment that is not an object.
fn set_path(doc: &mut Value, path: &[String], value: Value) -> std::result::Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    let mut at = doc;
    for segment in parents {
        let Value::Object(map) = at else {
            return Err(segment.clone());
        };
        at = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    match at {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        _ => Err(last.clone()),
    }
}

/// A range of encoded index keys.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The index to read for `filter`, with its key ranges, or `None` for a scan.
fn choose_index<S: Source>(
    state: &State,
    source: &S,
    filter: &Filter,
) -> Option<(Arc<Compiled>, Vec<KeyRange>)> {
    if !source.indexes_current(&state.collection) {
        return None;
    }
    let mut best: Option<(u8, Arc<Compiled>, Vec<KeyRange>)> = None;
    for index in &state.indexes {
        let field = &index.spec.fields[0];
        // Documents whose path reaches an array are in the multi-key bucket, read whatever the constraint: the
        // constraint is only needed for scalar keys, so conditions may be intersected (`multikey: false`).
        let Some(mut constraint) = filter.constraint(&index.first, false) else {
            continue;
        };
        if index.spec.ignore_case {
            constraint = constraint.for_ignore_case();
        }
        let Some((score, ranges)) = ranges_for(index, field.descending, &constraint) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(s, _, r)| score > *s || (score == *s && ranges.len() < r.len()))
        {
            best = Some((score, Arc::clone(index), ranges));
        }
    }
    best.map(|(_, index, mut ranges)| {
        ranges.push((
            Bound::Included(vec![KEY_MULTI]),
            Bound::Excluded(vec![KEY_MULTI + 1]),
        ));
        (index, ranges)
    })
}

/// The key ranges of `index` (on its first field) holding every document `constraint` can match outside the
/// multi-key bucket, and how good a plan they make (higher is better); `None` if the index cannot serve it.
fn ranges_for(
    index: &Compiled,
    descending: bool,
    constraint: &Constraint,
) -> Option<(u8, Vec<KeyRange>)> {
    let encode = |value: &Json| {
        let mut key = vec![KEY_SCALAR];
        index.encode_field(value, descending, &mut key);
        key
    };
    // A field's encoding is prefix-free: every key whose first field is `value` starts with its encoding.
    let prefix_range = |key: Vec<u8>| {
        let end = prefix_end(&key).map_or(Bound::Unbounded, Bound::Excluded);
        (Bound::Included(key), end)
    };
    match constraint {
        Constraint::Eq(values) => {
            if index.spec.sparse && values.iter().any(|v| matches!(v, Json::Null)) {
                return None;
            }
            let mut keys: Vec<Vec<u8>> = values.iter().map(encode).collect();
            keys.sort_unstable();
            keys.dedup();
            let score = if index.spec.unique && keys.len() == 1 {
                4
            } else {
                3
            };
            Some((score, keys.into_iter().map(prefix_range).collect()))
        }
        Constraint::Range { lower, upper } => {
            // A range constraint is bounded to its operand's type, so it never takes in `null` or a missing field:
            // a sparse index serves it too.
            let low = |b: &Bound<Json>| match b {
                Bound::Included(v) => Bound::Included(encode(v)),
                Bound::Excluded(v) => {
                    prefix_end(&encode(v)).map_or(Bound::Unbounded, Bound::Included)
                }
                Bound::Unbounded => Bound::Included(vec![KEY_SCALAR]),
            };
            let high = |b: &Bound<Json>| match b {
                Bound::Included(v) => {
                    prefix_end(&encode(v)).map_or(Bound::Unbounded, Bound::Excluded)
                }
                Bound::Excluded(v) => Bound::Excluded(encode(v)),
                Bound::Unbounded => Bound::Excluded(vec![KEY_MULTI]),
            };
            let range = if descending {
                // Descending keys run from the greatest value: the upper bound comes first.
                let start = match upper {
                    Bound::Included(v) => Bound::Included(encode(v)),
                    Bound::Excluded(v) => {
                        prefix_end(&encode(v)).map_or(Bound::Unbounded, Bound::Included)
                    }
                    Bound::Unbounded => Bound::Included(vec![KEY_SCALAR]),
                };
                let end = match lower {
                    Bound::Included(v) => {
                        prefix_end(&encode(v)).map_or(Bound::Unbounded, Bound::Excluded)
                    }
                    Bound::Excluded(v) => Bound::Excluded(encode(v)),
                    Bound::Unbounded => Bound::Excluded(vec![KEY_MULTI]),
                };
                (start, end)
            } else {
                (low(lower), high(upper))
            };
            Some((2, vec![range]))
        }
    }
}

/// Writes (or replaces) the catalog entry of `name` in one synced transaction.
fn write_catalog(db: &Database, name: &str, definition: &Definition) -> Result<()> {
    let catalog = catalog(db)?;
    let mut tx = db.begin_with(Durability::Sync);
    put_catalog_entry(&mut tx, &catalog, name, definition)?;
    tx.commit()?;
    Ok(())
}

fn catalog(db: &Database) -> Result<Collection<CatalogEntry>> {
    db.collection(
        CATALOG,
        Spec::new().unique("name", |e: &ArchivedCatalogEntry| e.name.to_string()),
    )
}

/// What the names of storage collections chosen by the database start with.
pub const STORAGE_PREFIX: &str = "__storage.";
/// What the names of the storage collections of staged (not yet published) collections start with.
pub const STAGED_PREFIX: &str = "__staged.";

/// A storage collection name no collection has used: `<prefix><random>.<name>`.
fn fresh_storage(prefix: &str, name: &str) -> String {
    let mut nonce = [0u8; 8];
    if getrandom::fill(&mut nonce).is_err() {
        nonce = now_ms().to_le_bytes();
    }
    format!("{prefix}{:016x}.{name}", u64::from_le_bytes(nonce))
}

/// Refuses names a document collection cannot have.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.ends_with(HISTORY_SUFFIX)
        || name == CATALOG
        || name.starts_with(STORAGE_PREFIX)
        || name.starts_with(STAGED_PREFIX)
    {
        return Err(Error::InvalidOptions(format!(
            "{name:?} cannot name a document collection (empty, {CATALOG:?}, starting with {STORAGE_PREFIX:?} or \
             {STAGED_PREFIX:?}, or ending in {HISTORY_SUFFIX:?})"
        )));
    }
    Ok(())
}

/// Writes `entry` for its name into `tx`, replacing the one there.
fn put_catalog_entry(
    tx: &mut Transaction<'_>,
    catalog: &Collection<CatalogEntry>,
    name: &str,
    definition: &Definition,
) -> Result<()> {
    let entry = CatalogEntry {
        name: name.into(),
        definition: serde_json::to_string(definition).expect("a definition serializes"),
    };
    match tx.find_one(catalog, "name", &name)? {
        Some((row, _)) => tx.put(catalog, row, &entry),
        None => tx.insert(catalog, &entry).map(|_| ()),
    }
}

/// The collections `tx` created whose catalog entries it still holds (a savepoint may have rolled one back).
pub(crate) fn still_created(tx: &Transaction<'_>) -> Vec<Arc<Shared>> {
    if tx.created_documents.is_empty() {
        return Vec::new();
    }
    let Ok(catalog) = catalog(tx.snapshot_database()) else {
        return Vec::new();
    };
    tx.created_documents
        .iter()
        .filter(|s| {
            tx.find_one(&catalog, "name", &&*s.name)
                .is_ok_and(|found| found.is_some())
        })
        .cloned()
        .collect()
}

impl Transaction<'_> {
    /// Creates the document collection `name` as part of this transaction: its definition commits with the
    /// transaction's writes (which may already fill it), and [`Database::documents`] finds it once committed. A
    /// rolled-back creation leaves nothing a reader can see.
    ///
    /// # Errors
    /// [`Error::CollectionExists`] if it exists (as this transaction sees the catalog); [`Error::InvalidOptions`]
    /// for a bad definition or name; [`Error::WrongType`] if a typed collection has the name.
    pub fn create_documents(&mut self, name: &str, definition: Definition) -> Result<Documents> {
        check_name(name)?;
        compile(&definition)?;
        let db = self.snapshot_database();
        let catalog = catalog(db)?;
        if self.find_one(&catalog, "name", &name)?.is_some() {
            return Err(Error::CollectionExists {
                collection: name.into(),
            });
        }
        let mut definition = definition;
        if definition.storage.is_none() && db.collection_names().iter().any(|n| n == name) {
            // The name's own typed collection was used before (a dropped or rotated collection's documents may
            // still be in it): the new collection starts in a fresh one.
            definition.storage = Some(fresh_storage(STORAGE_PREFIX, name));
        }
        let shared = db.new_shared(name, definition.clone())?;
        let entry = CatalogEntry {
            name: name.into(),
            definition: serde_json::to_string(&definition).expect("a definition serializes"),
        };
        self.insert(&catalog, &entry)?;
        self.created_documents.push(Arc::clone(&shared));
        Ok(Documents { shared })
    }
}

impl Database {
    fn registry(&self) -> &Mutex<HashMap<Arc<str>, Arc<Shared>>> {
        &self.inner.documents
    }

    /// Binds the document collection `name` with `definition` (or reuses the handle of this process).
    fn bind_documents(&self, name: &str, definition: Definition) -> Result<Documents> {
        let mut registry = self.registry().lock();
        if let Some(shared) = registry.get(name) {
            return Ok(Documents {
                shared: Arc::clone(shared),
            });
        }
        let shared = self.new_shared(name, definition)?;
        registry.insert(name.into(), Arc::clone(&shared));
        Ok(Documents { shared })
    }

    /// Binds `name` (and its history) with the indexes of `definition`: the state a handle shares, not registered.
    fn new_shared(&self, name: &str, definition: Definition) -> Result<Arc<Shared>> {
        let (_, indexes) = compile(&definition)?;
        let defs = defs_of(&indexes);
        let storage = definition.storage.as_deref().unwrap_or(name);
        let history = if definition.audit {
            Some(self.collection(&history_name(storage), history_spec())?)
        } else {
            None
        };
        let mut collection = self.collection::<Json>(storage, Spec::from_defs(defs.clone()))?;
        let fresh = collection.defs.len() == defs.len()
            && collection
                .defs
                .iter()
                .zip(&defs)
                .all(|(a, b)| Arc::ptr_eq(&a.name, &b.name));
        if !fresh {
            // Bound earlier in this process with other indexes (the collection was dropped and created again).
            collection = self.reindex(&collection, defs)?;
        }
        Ok(Arc::new(Shared {
            name: name.into(),
            state: arc_swap::ArcSwap::from_pointee(State::new(definition, collection, history)?),
            changing: Mutex::new(()),
            last_timestamp: AtomicU64::new(0),
            generator: Mutex::new(None),
        }))
    }

    /// Registers the handles of collections that a committed transaction created.
    pub(crate) fn register_documents(&self, created: Vec<Arc<Shared>>) {
        let mut registry = self.registry().lock();
        for shared in created {
            registry.entry(Arc::clone(&shared.name)).or_insert(shared);
        }
    }

    /// Creates the document collection `name` (in a transaction of its own: see [`Transaction::create_documents`]).
    ///
    /// # Errors
    /// [`Error::CollectionExists`] if it exists; [`Error::InvalidOptions`] for a bad definition;
    /// [`Error::WrongType`] if a typed collection has the name.
    pub fn create_documents(&self, name: &str, definition: Definition) -> Result<Documents> {
        let mut tx = self.begin_with(Durability::Sync);
        let documents = tx.create_documents(name, definition)?;
        tx.commit()?;
        Ok(documents)
    }

    /// Opens the document collection `name`.
    ///
    /// # Errors
    /// [`Error::UnknownCollection`] if there is none; [`Error::Corruption`] if its catalog entry does not parse.
    pub fn documents(&self, name: &str) -> Result<Documents> {
        if let Some(shared) = self.registry().lock().get(name) {
            return Ok(Documents {
                shared: Arc::clone(shared),
            });
        }
        let catalog = catalog(self)?;
        let snapshot = self.read();
        let (_, entry) = snapshot.find_one(&catalog, "name", &name)?.ok_or_else(|| {
            Error::UnknownCollection {
                collection: name.into(),
            }
        })?;
        let definition: Definition =
            serde_json::from_str(&entry.definition).map_err(|e| Error::Corruption {
                file: CATALOG.into(),
                offset: 0,
                reason: format!("the definition of {name:?} does not parse: {e}"),
            })?;
        self.bind_documents(name, definition)
    }

    /// Opens the document collection `name`, whose ids come from `generator` ([`IdGenerator::Custom`]).
    ///
    /// # Errors
    /// As [`Database::documents`].
    pub fn documents_with_generator(
        &self,
        name: &str,
        generator: impl Fn() -> Value + Send + Sync + 'static,
    ) -> Result<Documents> {
        let documents = self.documents(name)?;
        *documents.shared.generator.lock() = Some(Arc::new(generator));
        Ok(documents)
    }

    /// The names of the document collections, sorted.
    ///
    /// # Errors
    /// As a read of the catalog.
    pub fn document_collections(&self) -> Result<Vec<String>> {
        let catalog = catalog(self)?;
        let snapshot = self.read();
        let mut names: Vec<String> = snapshot
            .iter(&catalog)
            .map(|(_, e)| e.name.to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Drops the document collection `name`: its documents and its definition go in one transaction. Returns
    /// whether it existed.
    ///
    /// # Errors
    /// As a commit.
    pub fn drop_documents(&self, name: &str) -> Result<bool> {
        let documents = match self.documents(name) {
            Ok(d) => d,
            Err(Error::UnknownCollection { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let _changing = documents.shared.changing.lock();
        let state = documents.state();
        let catalog = catalog(self)?;
        // Fence first, so that no transaction writes to the storage once it is garbage.
        let fenced = state.fenced(self)?;
        let mut tx = self.begin_with(Durability::Sync);
        if let Some((row, _)) = tx.find_one(&catalog, "name", &name)? {
            tx.remove(&catalog, row)?;
        }
        if let Err(e) = tx.commit() {
            documents.shared.state.store(Arc::new(fenced));
            return Err(e);
        }
        self.registry().lock().remove(name);
        // The documents are garbage now: nothing names their storage. Freed in small transactions (a crash in
        // between leaves them unreachable; a collection created later under this name uses a fresh storage).
        self.clear_state(&fenced)?;
        Ok(true)
    }

    /// Removes every document of `collection`, in transactions of at most [`CLEAR_BATCH_DOCS`] documents.
    pub(crate) fn clear_collection<T: crate::Document>(
        &self,
        collection: &Collection<T>,
    ) -> Result<()> {
        loop {
            let mut tx = self.begin_with(Durability::None);
            let rows: Vec<u64> = tx
                .iter(collection)
                .map(|(row, _)| row)
                .take(CLEAR_BATCH_DOCS)
                .collect();
            if rows.is_empty() {
                return Ok(());
            }
            for row in rows {
                tx.remove(collection, row)?;
            }
            tx.commit()?;
        }
    }

    /// A handle of a new collection `name` whose documents go to a fresh *staged* storage collection, with no
    /// catalog entry: nothing a reader can see until [`Database::publish_staged`] publishes it. Fill it with any
    /// number of transactions (an import larger than one transaction may hold).
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for a bad definition or name.
    pub(crate) fn stage_documents(&self, name: &str, definition: Definition) -> Result<Documents> {
        check_name(name)?;
        compile(&definition)?;
        let definition = Definition {
            storage: Some(fresh_storage(STAGED_PREFIX, name)),
            ..definition
        };
        Ok(Documents {
            shared: self.new_shared(name, definition)?,
        })
    }

    /// Publishes staged collections ([`Database::stage_documents`]) in one small transaction: their catalog entries
    /// appear together, or none does. With `replace`, collections of the same names are replaced in that same
    /// transaction (their writers fenced first, their documents freed after); otherwise an existing name is
    /// [`Error::CollectionExists`]. Returns the names replaced.
    ///
    /// # Errors
    /// As above, and as a commit (nothing is published then).
    pub(crate) fn publish_staged(
        &self,
        staged: &[Documents],
        replace: bool,
    ) -> Result<Vec<String>> {
        let catalog = catalog(self)?;
        let mut replaced = Vec::new();
        for documents in staged {
            match self.documents(&documents.shared.name) {
                Ok(old) if replace => replaced.push(old),
                Ok(_) => {
                    return Err(Error::CollectionExists {
                        collection: documents.shared.name.to_string(),
                    });
                }
                Err(Error::UnknownCollection { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let guards: Vec<_> = replaced.iter().map(|d| d.shared.changing.lock()).collect();
        let mut fenced = Vec::new();
        for old in &replaced {
            let state = old.state().fenced(self)?;
            old.shared.state.store(Arc::new(state.clone()));
            fenced.push(state);
        }
        let mut tx = self.begin_with(Durability::Sync);
        for documents in staged {
            let state = documents.state();
            put_catalog_entry(&mut tx, &catalog, &documents.shared.name, &state.definition)?;
        }
        tx.commit()?;
        {
            let mut registry = self.registry().lock();
            for documents in staged {
                registry.insert(
                    Arc::clone(&documents.shared.name),
                    Arc::clone(&documents.shared),
                );
            }
        }
        drop(guards);
        for state in &fenced {
            self.clear_state(state)?;
        }
        Ok(replaced.iter().map(|d| d.shared.name.to_string()).collect())
    }

    /// Frees the documents of a staged collection that will not be published.
    ///
    /// # Errors
    /// As a commit.
    pub(crate) fn discard_staged(&self, staged: &Documents) -> Result<()> {
        self.clear_state(&staged.state())
    }

    /// Removes every document of a state's collection and history.
    fn clear_state(&self, state: &State) -> Result<()> {
        self.clear_collection(&state.collection)?;
        if let Some(history) = &state.history {
            self.clear_collection(history)?;
        }
        Ok(())
    }

    /// Removes expired documents from every TTL collection opened in this process; returns how many.
    pub(crate) fn purge_all_expired(&self) -> Result<usize> {
        let open: Vec<Arc<Shared>> = self.registry().lock().values().cloned().collect();
        let mut purged = 0;
        for shared in open {
            purged += Documents { shared }.purge_expired(self)?;
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use crate::checkpoint::files::MemFiles;
    use crate::wal::MemStorage;

    /// A staged collection is invisible after a power loss at any point before it is published, and whole after
    /// one once its publication returned.
    #[test]
    fn a_staged_collection_is_invisible_after_a_crash_until_published() {
        let log = Arc::new(MemStorage::simulated());
        let files = MemFiles::simulated();
        let db = Database::open_with(log.clone(), files.clone(), Options::default()).unwrap();
        let staged = db
            .stage_documents("items", Definition::default().index(IndexSpec::on("k")))
            .unwrap();
        for batch in 0..3u64 {
            let mut tx = db.begin_with(Durability::Sync);
            for i in 0..10 {
                staged
                    .insert(&mut tx, serde_json::json!({"k": batch * 10 + i}))
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        // Every staged write is durable, but no catalog entry names its storage.
        let image = Arc::new(log.crash_image(|_, _| true));
        let crashed =
            Database::open_with(image, files.crash_image(true), Options::default()).unwrap();
        assert!(crashed.document_collections().unwrap().is_empty());
        assert!(matches!(
            crashed.documents("items"),
            Err(Error::UnknownCollection { .. })
        ));
        drop(crashed);

        db.publish_staged(&[staged], false).unwrap();
        let image = Arc::new(log.crash_image(|_, _| false));
        let crashed =
            Database::open_with(image, files.crash_image(false), Options::default()).unwrap();
        let items = crashed.documents("items").unwrap();
        let snap = crashed.read();
        assert_eq!(items.count(&snap, &serde_json::json!({})).unwrap(), 30);
        assert_eq!(
            items
                .explain(&snap, &Query::new(serde_json::json!({"k": 7})))
                .unwrap()
                .index
                .as_deref(),
            Some("k")
        );
    }
}
