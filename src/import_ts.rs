//! Import of a data directory written by the TypeScript predecessor (npm `collection-store` 3.x with its file
//! adapter) into JSON document collections. The on-disk format, quirks included, is described in
//! `tests/fixtures/collection-store-ts/FORMAT.md`; this module follows its §10.
//!
//! # What a source is
//! [`import`] takes one path and finds the collections in it:
//! - a **schema file** `<root>/<db>.json` (a JSON object whose values are collection configs): every collection it
//!   lists, read from `<dir of the schema>/<db>/<coll>.json` (List) or `<dir of the schema>/<db>/<coll>/` (FileStorage,
//!   `metadata.json` plus one `<id>.json` per document). The `root` written in the configs is only a fallback,
//!   because it is the writer's path (relative to its working directory, or absolute on its host);
//! - a **standalone collection**: a List snapshot `<x>.json` (an object with `config` and `list`), or a FileStorage
//!   folder holding a `metadata.json` snapshot;
//! - a **directory**: if it holds a `metadata.json`, it is a standalone FileStorage collection. Otherwise every
//!   schema file and standalone collection found under it (up to [`MAX_DISCOVERY_DEPTH`] levels, symlinks not
//!   followed, in name order) is imported. Snapshots inside a schema's `<db>/` folder that the schema does not
//!   list (dropped collections, named snapshots, rotated copies) are skipped with a warning, and so is any valid
//!   JSON file that is neither a schema nor a snapshot. A `.json` file that does not parse is an error.
//!
//! # Mapping
//! - Target names drop a `:<list type>` suffix (`contacts:FileStorage` becomes `contacts`); the report keeps the
//!   source name. Two sources with one target name are an error.
//! - Documents keep their id values (numbers stay numbers). Their order is the library's iteration order (a List's
//!   hash keys in JavaScript order, a FileStorage tree's leaves), and [`crate::Documents::find_json`] returns them in
//!   it. Rows equal numeric ids where that order allows, and the highest row is raised to the source counter minus
//!   one, so that `autoIncIdGen` collections ([`IdGenerator::AutoIncrement`]) hand out the TypeScript counter
//!   next (skipping ids already taken) also after a reopen. An empty collection cannot carry its counter (warned).
//!   `autoTimestamp` becomes [`IdGenerator::Timestamp`]; any other generator, or no generator at all (ids given by
//!   the application), becomes [`IdGenerator::Custom`], with the source text in the report.
//! - Index definitions come from `indexDefs`, else `config.indexList` (of the snapshot, else of the schema), and
//!   the indexes are rebuilt from the documents; the serialized trees (`indexes`) are never read. The id index
//!   (our `_id` covers it) and `__ttltime` (the TTL covers it) are not created. An index with `process` code other
//!   than the built-in ignore-case lambda is skipped and reported (the library `eval`s it; we cannot). A unique
//!   index the data breaks (the library let duplicates through) is created non-unique, and a required one the data
//!   breaks is created non-required; the report says which and why.
//! - `config.ttl` becomes a TTL on `__ttltime`. Every document is imported, expired ones included (counted in the
//!   report); the engine then hides and purges expired ones. `audit: true` becomes an audited collection, and
//!   audit wrappers are unwrapped to their `data` (FileStorage tombstones are dropped). In a collection without
//!   `audit`, wrapper-shaped documents are imported as they are, with a warning.
//! - Values are JSON as written: dates stay strings; numbers are `u64`/`i64`/`f64`. Lone UTF-16 surrogates (which
//!   the library writes as `\udXXX` escapes) are replaced by U+FFFD, with a warning.
//!
//! # Damaged sources
//! A 0-byte collection file (left by a failed `persist()`) or a missing one is a warning: the collection is
//! created from its schema entry with no documents (List) or with the `<id>.json` files found in its folder
//! (FileStorage). A FileStorage document the tree names but whose file is missing is skipped; a file the tree does
//! not name is not imported; both are warned. Duplicate ids in a List keep the entry whose hash key is the id (the
//! newer one). Anything else malformed or truncated (a file that does not parse, a field of the wrong type) is an
//! [`Error::Import`] naming the file and the field.
//!
//! # Atomicity
//! Everything is read and checked before anything is written. Then each collection is *staged*: its documents go,
//! in transactions of at most [`IMPORT_BATCH_DOCS`] documents and [`IMPORT_BATCH_BYTES`], to a fresh storage collection that no catalog entry names, so no reader
//! can see them. One small synced transaction then publishes every collection's catalog entry at once
//! (`Database::publish_staged`): after a crash or a failure at any point the import is wholly there or not at all,
//! and its size is not bounded by what one transaction can hold. If a target collection exists, the import is
//! refused with [`Error::CollectionExists`] unless [`ImportOptions::replace`] is set; then the collections replaced
//! are retired in that same publishing transaction (their writers fenced, their documents freed afterwards). A
//! failed import frees what it staged; a crash leaves the staged documents unreachable (their storage is named
//! with `documents::STAGED_PREFIX`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::db::Database;
use crate::documents::{Definition, IdGenerator, IndexSpec, index_key_of};
use crate::error::{Error, Result};
use crate::wal::Durability;

/// How deep [`import`] looks for schema files and standalone collections under a directory.
pub const MAX_DISCOVERY_DEPTH: usize = 8;
/// Documents inserted between two progress reports.
pub const PROGRESS_EVERY_DOCS: u64 = 1024;

/// The most documents written per transaction while an import is staged.
pub const IMPORT_BATCH_DOCS: usize = 1_000;
/// The most JSON bytes written per transaction while an import is staged (a transaction is one log group).
pub const IMPORT_BATCH_BYTES: usize = 2 << 20;
/// The field the TypeScript library stamps with the insert time in TTL and rotate collections.
pub const TTL_FIELD: &str = "__ttltime";
/// The `process` source the library writes for an ignore-case index (whitespace ignored when compared).
const IGNORE_CASE_PROCESS: &str =
    "(value) => value?.toString ? value.toString().toLowerCase() : value";
/// Ids shown in one warning, at most.
const MAX_IDS_SHOWN: usize = 8;

/// Callback for import progress: `(documents inserted, documents to insert)`. Called on the importing thread.
pub type ImportProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Options of [`import`].
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// Drop target collections that exist before importing (each drop commits on its own, before the import).
    pub replace: bool,
    /// Called every [`PROGRESS_EVERY_DOCS`] documents while inserting, and once at the end.
    pub progress: Option<ImportProgress>,
}

impl fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportOptions")
            .field("replace", &self.replace)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What [`import`] did.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    /// The path given.
    pub source: PathBuf,
    /// The schema files found.
    pub schema_files: Vec<PathBuf>,
    /// Every collection imported, in import order.
    pub collections: Vec<CollectionReport>,
    /// Documents imported, over all collections.
    pub documents: u64,
    /// Existing collections dropped first ([`ImportOptions::replace`]).
    pub replaced: Vec<String>,
    /// Files looked at and not imported, and other findings not about one collection.
    pub warnings: Vec<String>,
}

/// What [`import`] did with one collection.
#[derive(Clone, Debug, Serialize)]
pub struct CollectionReport {
    /// The name in the source (`contacts:FileStorage`).
    pub source_name: String,
    /// The name imported as (`contacts`).
    pub target_name: String,
    /// The database (schema file stem) it belongs to, `None` for a standalone collection.
    pub database: Option<String>,
    /// `"List"` or `"FileStorage"`.
    pub list_type: String,
    /// The files read: the snapshot (or `metadata.json`) first, then for FileStorage its document folder.
    pub files: Vec<PathBuf>,
    /// Documents imported.
    pub documents: u64,
    /// The id field.
    pub id_field: String,
    /// How ids were mapped.
    pub ids: IdMapping,
    /// Index definitions created.
    pub indexes: Vec<IndexReport>,
    /// Index definitions not created, and why.
    pub skipped_indexes: Vec<SkippedIndex>,
    /// TTL in milliseconds, if any.
    pub ttl_ms: Option<u64>,
    /// Documents already expired at import time (imported anyway).
    pub expired_documents: u64,
    /// Whether the collection is audited.
    pub audit: bool,
    /// The source's rotation schedule (cron), which is not imported.
    pub rotate: Option<String>,
    /// Everything odd found in this collection's data.
    pub warnings: Vec<String>,
}

/// How a collection's ids were mapped.
#[derive(Clone, Debug, Serialize)]
pub struct IdMapping {
    /// The source generator: `autoIncIdGen`, `autoTimestamp`, a function's source text, or `None` (ids supplied
    /// by the application).
    pub source: Option<String>,
    /// The generator of the imported collection.
    pub target: IdGenerator,
    /// The source's next auto id (`_counter` / `counter`).
    pub source_counter: Option<u64>,
    /// The row the next generated id starts from (for [`IdGenerator::AutoIncrement`], the next id, unless taken).
    pub next_row: u64,
}

/// An index definition created by the import.
#[derive(Clone, Debug, Serialize)]
pub struct IndexReport {
    /// The index as created.
    pub spec: IndexSpec,
    /// What differs from the source definition, if anything.
    pub note: Option<String>,
}

/// An index definition the import did not create.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedIndex {
    /// Its name (the indexed key).
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Imports the TypeScript data at `src` (see the [module docs](self) for what it may be) into `db`, all or nothing.
///
/// # Errors
/// [`Error::Import`] naming the file and field for a malformed or partial source, or one that cannot be mapped;
/// [`Error::CollectionExists`] if a target collection exists and `options.replace` is not set; errors of reading
/// the source ([`Error::Io`]) and of the commit. On any error nothing was imported (drops done for `replace` stay).
pub fn import(db: &Database, src: &Path, options: &ImportOptions) -> Result<ImportReport> {
    let mut report = ImportReport {
        source: src.to_path_buf(),
        schema_files: Vec::new(),
        collections: Vec::new(),
        documents: 0,
        replaced: Vec::new(),
        warnings: Vec::new(),
    };
    let units = discover(src, &mut report)?;
    let mut loaded = Vec::with_capacity(units.len());
    for unit in units {
        if let Some(collection) = load(unit, &mut report.warnings)? {
            loaded.push(collection);
        }
    }
    let mut targets: HashMap<String, PathBuf> = HashMap::new();
    for c in &loaded {
        if let Some(other) = targets.insert(c.report.target_name.clone(), c.file().to_path_buf()) {
            return Err(import_error(
                c.file(),
                "config.name",
                format!(
                    "collection {:?} is also imported from {}",
                    c.report.target_name,
                    other.display()
                ),
            ));
        }
    }
    let existing: HashSet<String> = db.document_collections()?.into_iter().collect();
    let clashing: Vec<String> = loaded
        .iter()
        .map(|c| c.report.target_name.clone())
        .filter(|name| existing.contains(name))
        .collect();
    if let Some(first) = clashing.first()
        && !options.replace
    {
        return Err(Error::CollectionExists {
            collection: first.clone(),
        });
    }
    let total: u64 = loaded.iter().map(|c| c.docs.len() as u64).sum();
    let progress = options.progress.as_deref();
    let mut done = 0u64;
    // Staged: the documents go to storage no reader can see, in transactions of bounded size; one small
    // transaction then publishes every collection (and, with `replace`, retires the ones replaced) at once.
    let mut staged = Vec::with_capacity(loaded.len());
    let filled = (|| -> Result<()> {
        for c in &loaded {
            let documents = db.stage_documents(&c.report.target_name, c.definition.clone())?;
            staged.push(documents.clone());
            let mut tx = db.begin_with(Durability::None);
            let (mut batch_docs, mut batch_bytes) = (0, 0);
            for (row, doc) in c.rows.iter().zip(&c.docs) {
                // A transaction is one log group: keep each well under the largest one.
                let bytes = serde_json::to_vec(doc).map_or(0, |v| v.len());
                if batch_docs > 0
                    && (batch_docs >= IMPORT_BATCH_DOCS || batch_bytes + bytes > IMPORT_BATCH_BYTES)
                {
                    std::mem::replace(&mut tx, db.begin_with(Durability::None)).commit()?;
                    (batch_docs, batch_bytes) = (0, 0);
                }
                documents.insert_at_row(&mut tx, *row, doc)?;
                (batch_docs, batch_bytes) = (batch_docs + 1, batch_bytes + bytes);
                done += 1;
                if done.is_multiple_of(PROGRESS_EVERY_DOCS)
                    && let Some(progress) = progress
                {
                    progress(done, total);
                }
            }
            tx.commit()?;
        }
        report.replaced = db.publish_staged(&staged, options.replace)?;
        Ok(())
    })();
    if let Err(e) = filled {
        // Nothing was published: free what was staged (best effort; unreachable either way).
        for documents in &staged {
            let _ = db.discard_staged(documents);
        }
        return Err(e);
    }
    if let Some(progress) = progress {
        progress(done, total);
    }
    report.documents = total;
    report.collections = loaded.into_iter().map(|c| c.report).collect();
    Ok(report)
}

/// A FileStorage document file's value: an empty file, or one that holds no object, is an error naming it.
fn document_value(path: &Path, parsed: Parsed) -> Result<Value> {
    match parsed {
        Parsed::Object(v) => Ok(v.into_value()),
        Parsed::Empty => Err(import_error(
            path,
            "(file)",
            "the document file is empty (0 bytes)",
        )),
        Parsed::Other => Err(import_error(
            path,
            "(file)",
            "expected a document (an object)",
        )),
    }
}

fn import_error(file: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Import {
        file: file.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::io("read", path, e)
}

// ---------------------------------------------------------------------------------------------------------------
// JSON with object order kept
// ---------------------------------------------------------------------------------------------------------------

/// A JSON value whose objects keep their members in file order (the hash's order is the document order).
#[derive(Clone, Debug)]
enum OValue {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<OValue>),
    Object(Vec<(String, OValue)>),
}

impl OValue {
    fn get(&self, key: &str) -> Option<&OValue> {
        match self {
            OValue::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            OValue::Null => "null",
            OValue::Bool(_) => "a boolean",
            OValue::Number(_) => "a number",
            OValue::String(_) => "a string",
            OValue::Array(_) => "an array",
            OValue::Object(_) => "an object",
        }
    }

    fn into_value(self) -> Value {
        match self {
            OValue::Null => Value::Null,
            OValue::Bool(b) => Value::Bool(b),
            OValue::Number(n) => Value::Number(n),
            OValue::String(s) => Value::String(s),
            OValue::Array(items) => {
                Value::Array(items.into_iter().map(OValue::into_value).collect())
            }
            OValue::Object(members) => {
                let mut map = Map::new();
                for (k, v) in members {
                    map.insert(k, v.into_value());
                }
                Value::Object(map)
            }
        }
    }
}

struct OValueVisitor;

impl<'de> Visitor<'de> for OValueVisitor {
    type Value = OValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<OValue, E> {
        Ok(OValue::Null)
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<OValue, E> {
        Ok(OValue::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> std::result::Result<OValue, E> {
        Ok(OValue::Number(n.into()))
    }
    fn visit_i64<E>(self, n: i64) -> std::result::Result<OValue, E> {
        Ok(OValue::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> std::result::Result<OValue, E> {
        // JSON.stringify never writes NaN or Infinity; a parser never yields them either.
        Ok(Number::from_f64(n).map_or(OValue::Null, OValue::Number))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<OValue, E> {
        Ok(OValue::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<OValue, E> {
        Ok(OValue::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<OValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<OValue>()? {
            items.push(item);
        }
        Ok(OValue::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<OValue, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            members.push((key, map.next_value::<OValue>()?));
        }
        Ok(OValue::Object(members))
    }
}

impl<'de> Deserialize<'de> for OValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(OValueVisitor)
    }
}

/// A top-level JSON object, in order, without its `indexes` member (the serialized trees, never used and large).
struct TopLevel(Vec<(String, OValue)>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<TopLevel, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "indexes" {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        members.push((key, map.next_value::<OValue>()?));
                    }
                }
                Ok(TopLevel(members))
            }
        }
        d.deserialize_map(TopVisitor)
    }
}

/// A parsed source file.
enum Parsed {
    /// 0 bytes long.
    Empty,
    /// A JSON object (top level, in order, `indexes` left out).
    Object(OValue),
    /// Valid JSON, not an object.
    Other,
}

/// Reads and parses `path`, replacing lone surrogates (warned).
fn parse_file(path: &Path, warnings: &mut Vec<String>) -> Result<Parsed> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    if bytes.is_empty() {
        return Ok(Parsed::Empty);
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        import_error(
            path,
            "(file)",
            format!("not UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    let (text, replaced) = replace_lone_surrogates(text);
    if replaced > 0 {
        warnings.push(format!(
            "{}: {replaced} lone UTF-16 surrogate escape(s) replaced by U+FFFD",
            path.display()
        ));
    }
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return match serde_json::from_str::<IgnoredAny>(&text) {
            Ok(_) => Ok(Parsed::Other),
            Err(e) => Err(syntax_error(path, &e)),
        };
    }
    match serde_json::from_str::<TopLevel>(&text) {
        Ok(TopLevel(members)) => Ok(Parsed::Object(OValue::Object(members))),
        Err(e) => Err(syntax_error(path, &e)),
    }
}

fn syntax_error(path: &Path, e: &serde_json::Error) -> Error {
    let what = if e.is_eof() {
        "truncated JSON"
    } else {
        "malformed JSON"
    };
    import_error(
        path,
        "(file)",
        format!("{what} at line {}, column {}: {e}", e.line(), e.column()),
    )
}

/// Replaces every `\uD800`..`\uDFFF` escape that is not half of a surrogate pair by `\uFFFD`; returns the text and
/// how many were replaced.
fn replace_lone_surrogates(text: String) -> (String, usize) {
    if !text.contains("\\ud") && !text.contains("\\uD") {
        return (text, 0);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut replaced = 0;
    let mut i = 0;
    let escape_at = |i: usize| -> Option<u32> {
        if bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&b'u') {
            let hex = std::str::from_utf8(bytes.get(i + 2..i + 6)?).ok()?;
            u32::from_str_radix(hex, 16).ok()
        } else {
            None
        }
    };
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match escape_at(i) {
            Some(high @ 0xD800..=0xDBFF) if matches!(escape_at(i + 6), Some(0xDC00..=0xDFFF)) => {
                debug_assert!((0xD800..=0xDBFF).contains(&high));
                out.extend_from_slice(&bytes[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                replaced += 1;
                i += 6;
            }
            _ => {
                // Any other escape: copy the backslash and the escaped character (never a multi-byte one in valid
                // JSON; if it is, the bytes still go through unchanged).
                out.push(b'\\');
                if let Some(&next) = bytes.get(i + 1) {
                    out.push(next);
                }
                i += 2;
            }
        }
    }
    let text = String::from_utf8(out).expect("only ASCII escapes were rewritten");
    (text, replaced)
}

// ---------------------------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------------------------

/// A collection to import, located.
enum Unit {
    /// An entry of a schema file.
    Schema {
        schema_file: PathBuf,
        database: String,
        name: String,
        config: OValue,
        /// The collection's file, if found: `<coll>.json` or `<coll>/metadata.json`.
        file: Option<PathBuf>,
        /// Where it should have been (for the report when missing).
        expected: PathBuf,
        /// The FileStorage folder, if the list is FileStorage and it exists.
        folder: Option<PathBuf>,
        /// A parsed snapshot, when discovery read it already.
        parsed: Option<Parsed>,
    },
    /// A standalone List snapshot.
    List {
        file: PathBuf,
        parsed: Option<Parsed>,
    },
    /// A standalone FileStorage folder.
    Folder { folder: PathBuf },
}

fn is_snapshot(value: &OValue) -> bool {
    value.get("config").is_some() && value.get("list").is_some()
}

fn looks_like_config(value: &OValue) -> bool {
    matches!(value.get("name"), Some(OValue::String(_)))
        && (value.get("list").is_some()
            || value.get("adapter").is_some()
            || value.get("indexList").is_some())
}

fn is_schema(value: &OValue) -> bool {
    match value {
        OValue::Object(members) => {
            !members.is_empty()
                && !is_snapshot(value)
                && members.iter().all(|(_, v)| looks_like_config(v))
        }
        _ => false,
    }
}

fn discover(src: &Path, report: &mut ImportReport) -> Result<Vec<Unit>> {
    let meta = std::fs::metadata(src).map_err(|e| read_error(src, e))?;
    if meta.is_file() {
        let mut warnings = Vec::new();
        let parsed = parse_file(src, &mut warnings)?;
        report.warnings.append(&mut warnings);
        return match parsed {
            Parsed::Object(value) if is_schema(&value) => {
                report.schema_files.push(src.to_path_buf());
                schema_units(src, &value)
            }
            Parsed::Object(value) if is_snapshot(&value) => {
                if src.file_name().is_some_and(|n| n == "metadata.json") {
                    let folder = src.parent().unwrap_or(Path::new(".")).to_path_buf();
                    Ok(vec![Unit::Folder { folder }])
                } else {
                    Ok(vec![Unit::List {
                        file: src.to_path_buf(),
                        parsed: Some(Parsed::Object(value)),
                    }])
                }
            }
            Parsed::Empty => Err(import_error(
                src,
                "(file)",
                "the file is empty (0 bytes): nothing to import",
            )),
            _ => Err(import_error(
                src,
                "(file)",
                "neither a schema file (an object of collection configs) nor a collection snapshot (config, list)",
            )),
        };
    }
    if src.join("metadata.json").is_file() {
        return Ok(vec![Unit::Folder {
            folder: src.to_path_buf(),
        }]);
    }
    // Parse every JSON file first, then let schema files claim their collections.
    let mut files: Vec<(PathBuf, Parsed)> = Vec::new();
    let mut folders: Vec<PathBuf> = Vec::new();
    walk(src, 0, &mut files, &mut folders, &mut report.warnings)?;
    let mut units = Vec::new();
    let mut claimed_dirs: Vec<PathBuf> = Vec::new();
    let mut rest = Vec::new();
    for (path, parsed) in files {
        match parsed {
            Parsed::Object(value) if is_schema(&value) => {
                report.schema_files.push(path.clone());
                claimed_dirs.push(db_dir(&path));
                units.extend(schema_units(&path, &value)?);
            }
            other => rest.push((path, other)),
        }
    }
    // Hand schema collections the snapshots discovery already parsed.
    let mut by_path: HashMap<PathBuf, Parsed> = HashMap::new();
    for (path, parsed) in rest {
        let inside_db = claimed_dirs.iter().any(|d| path.starts_with(d));
        let listed = units.iter().any(|u| match u {
            Unit::Schema { file, .. } => file.as_deref() == Some(path.as_path()),
            _ => false,
        });
        if listed {
            by_path.insert(path, parsed);
            continue;
        }
        match parsed {
            Parsed::Object(value) if is_snapshot(&value) && !inside_db => {
                units.push(Unit::List {
                    file: path,
                    parsed: Some(Parsed::Object(value)),
                });
            }
            Parsed::Object(value) if is_snapshot(&value) => report.warnings.push(format!(
                "{}: a collection snapshot in a database folder that its schema does not list (dropped \
                 collection, named snapshot or rotated copy): skipped",
                path.display()
            )),
            Parsed::Empty => report.warnings.push(format!(
                "{}: empty file (0 bytes), not listed by any schema: skipped",
                path.display()
            )),
            _ => report.warnings.push(format!(
                "{}: neither a schema file nor a collection snapshot: skipped",
                path.display()
            )),
        }
    }
    for unit in &mut units {
        if let Unit::Schema { file, parsed, .. } = unit
            && let Some(file) = file
        {
            *parsed = by_path.remove(file.as_path());
        }
    }
    for folder in folders {
        let listed = units.iter().any(|u| match u {
            Unit::Schema { folder: f, .. } => f.as_deref() == Some(folder.as_path()),
            _ => false,
        });
        if listed {
            continue;
        }
        if claimed_dirs.iter().any(|d| folder.starts_with(d)) {
            report.warnings.push(format!(
                "{}: a FileStorage folder in a database folder that its schema does not list: skipped",
                folder.display()
            ));
        } else {
            units.push(Unit::Folder { folder });
        }
    }
    Ok(units)
}

/// `<dir of schema>/<schema stem>`: where a schema's collections live.
fn db_dir(schema_file: &Path) -> PathBuf {
    let stem = schema_file.file_stem().unwrap_or_default();
    schema_file.parent().unwrap_or(Path::new("")).join(stem)
}

fn walk(
    dir: &Path,
    depth: usize,
    files: &mut Vec<(PathBuf, Parsed)>,
    folders: &mut Vec<PathBuf>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| read_error(dir, e))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| read_error(&path, e))?;
        if kind.is_dir() {
            if path.join("metadata.json").is_file() {
                folders.push(path);
            } else if depth + 1 < MAX_DISCOVERY_DEPTH {
                walk(&path, depth + 1, files, folders, warnings)?;
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
            let parsed = parse_file(&path, warnings)?;
            files.push((path, parsed));
        }
    }
    Ok(())
}

fn schema_units(schema_file: &Path, schema: &OValue) -> Result<Vec<Unit>> {
    let OValue::Object(members) = schema else {
        unreachable!("is_schema checked it is an object")
    };
    let database = schema_file
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dir = db_dir(schema_file);
    let mut units = Vec::new();
    for (name, config) in members {
        let at = |field: &str| format!("{}.{field}", quote_key(name));
        let list = list_type(name, config, schema_file, &at("list"))?;
        let root = match config.get("root") {
            Some(OValue::String(root)) => Some(PathBuf::from(root)),
            None => None,
            Some(other) => {
                return Err(import_error(
                    schema_file,
                    &at("root"),
                    format!("expected a string, found {}", other.kind()),
                ));
            }
        };
        let mut bases = vec![dir.clone()];
        if let Some(root) = root {
            bases.push(root);
        }
        let file_of = |base: &Path| match list {
            ListType::List => base.join(format!("{name}.json")),
            ListType::FileStorage => base.join(name).join("metadata.json"),
        };
        let expected = file_of(&dir);
        let file = bases.iter().map(|b| file_of(b)).find(|f| f.is_file());
        let folder = match list {
            ListType::List => None,
            ListType::FileStorage => bases.iter().map(|b| b.join(name)).find(|f| f.is_dir()),
        };
        units.push(Unit::Schema {
            schema_file: schema_file.to_path_buf(),
            database: database.clone(),
            name: name.clone(),
            config: config.clone(),
            file,
            expected,
            folder,
            parsed: None,
        });
    }
    Ok(units)
}

fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !key.starts_with(|c: char| c.is_ascii_digit())
    {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListType {
    List,
    FileStorage,
}

impl ListType {
    fn name(self) -> &'static str {
        match self {
            ListType::List => "List",
            ListType::FileStorage => "FileStorage",
        }
    }
}

/// The list type: `config.list`, else the name's suffix (`x:FileStorage`; any suffix but `List` is FileStorage).
fn list_type(name: &str, config: &OValue, file: &Path, field: &str) -> Result<ListType> {
    match config.get("list") {
        Some(OValue::String(s)) if s == "List" => Ok(ListType::List),
        Some(OValue::String(s)) if s == "FileStorage" => Ok(ListType::FileStorage),
        Some(other) => Err(import_error(
            file,
            field,
            format!(
                "expected \"List\" or \"FileStorage\", found {}",
                short(other)
            ),
        )),
        None => Ok(match name.rsplit_once(':') {
            Some((_, suffix)) if suffix != "List" => ListType::FileStorage,
            _ => ListType::List,
        }),
    }
}

/// The target name: the source name without a `:<list type>` suffix.
fn target_name(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((base, _)) if !base.is_empty() => base.to_owned(),
        _ => name.to_owned(),
    }
}

fn short(value: &OValue) -> String {
    let text = value.clone().into_value().to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Loading one collection
// ---------------------------------------------------------------------------------------------------------------

/// A collection read, checked and mapped, ready to insert.
struct Loaded {
    report: CollectionReport,
    definition: Definition,
    docs: Vec<Value>,
    /// The row of each document, strictly ascending.
    rows: Vec<u64>,
}

impl Loaded {
    fn file(&self) -> &Path {
        &self.report.files[0]
    }
}

/// A collection config (§2), from a schema entry or a snapshot's `config`.
struct Config {
    name: String,
    id_field: String,
    auto: bool,
    ttl_ms: Option<u64>,
    rotate: Option<String>,
    audit: bool,
    /// `indexList`, if present.
    index_list: Option<OValue>,
}

/// One index definition of the source (`indexDefs` value or `indexList` entry).
struct SourceIndex {
    key: String,
    auto: bool,
    unique: bool,
    sparse: bool,
    required: bool,
    ignore_case: bool,
    gen_source: Option<String>,
    process: Option<String>,
    /// Where it is, for errors.
    field: String,
}

fn field_str(value: &OValue, name: &str, file: &Path, at: &str) -> Result<Option<String>> {
    match value.get(name) {
        None | Some(OValue::Null) => Ok(None),
        Some(OValue::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(import_error(
            file,
            &format!("{at}.{name}"),
            format!("expected a string, found {}", short(other)),
        )),
    }
}

fn field_bool(value: &OValue, name: &str, file: &Path, at: &str) -> Result<bool> {
    match value.get(name) {
        None | Some(OValue::Null) => Ok(false),
        Some(OValue::Bool(b)) => Ok(*b),
        Some(other) => Err(import_error(
            file,
            &format!("{at}.{name}"),
            format!("expected a boolean, found {}", short(other)),
        )),
    }
}

fn field_u64(value: &OValue, name: &str, file: &Path, at: &str) -> Result<Option<u64>> {
    match value.get(name) {
        None | Some(OValue::Null) => Ok(None),
        Some(OValue::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(64) =>
                {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Ok(Some(f as u64))
                }
                _ => Err(import_error(
                    file,
                    &format!("{at}.{name}"),
                    format!("expected a non-negative integer, found {n}"),
                )),
            },
        },
        Some(other) => Err(import_error(
            file,
            &format!("{at}.{name}"),
            format!("expected a number, found {}", short(other)),
        )),
    }
}

fn parse_config(value: &OValue, file: &Path, at: &str, fallback_name: &str) -> Result<Config> {
    if !matches!(value, OValue::Object(_)) {
        return Err(import_error(
            file,
            at,
            format!("expected an object, found {}", value.kind()),
        ));
    }
    let index_list = match value.get("indexList") {
        None | Some(OValue::Null) => None,
        Some(list @ OValue::Array(_)) => Some(list.clone()),
        Some(other) => {
            return Err(import_error(
                file,
                &format!("{at}.indexList"),
                format!("expected an array, found {}", other.kind()),
            ));
        }
    };
    Ok(Config {
        name: field_str(value, "name", file, at)?.unwrap_or_else(|| fallback_name.to_owned()),
        id_field: field_str(value, "id", file, at)?.unwrap_or_else(|| "id".into()),
        auto: field_bool(value, "auto", file, at)?,
        ttl_ms: field_u64(value, "ttl", file, at)?,
        rotate: field_str(value, "rotate", file, at)?,
        audit: field_bool(value, "audit", file, at)?,
        index_list,
    })
}

fn parse_index(value: &OValue, file: &Path, at: &str) -> Result<SourceIndex> {
    if !matches!(value, OValue::Object(_)) {
        return Err(import_error(
            file,
            at,
            format!("expected an object, found {}", value.kind()),
        ));
    }
    let key = field_str(value, "key", file, at)?
        .ok_or_else(|| import_error(file, &format!("{at}.key"), "missing"))?;
    if value.get("keys").is_some() {
        return Err(import_error(
            file,
            &format!("{at}.keys"),
            "composite index definitions are not part of the known format",
        ));
    }
    Ok(SourceIndex {
        key,
        auto: field_bool(value, "auto", file, at)?,
        unique: field_bool(value, "unique", file, at)?,
        sparse: field_bool(value, "sparse", file, at)?,
        required: field_bool(value, "required", file, at)?,
        ignore_case: field_bool(value, "ignoreCase", file, at)?,
        gen_source: field_str(value, "gen", file, at)?,
        process: field_str(value, "process", file, at)?,
        field: at.to_owned(),
    })
}

/// The index definitions: the snapshot's `indexDefs`, else its `config.indexList`, else the schema's.
fn source_indexes(
    snapshot: Option<&OValue>,
    config: &Config,
    config_at: &str,
    file: &Path,
) -> Result<Vec<SourceIndex>> {
    if let Some(defs) = snapshot.and_then(|s| s.get("indexDefs")) {
        let OValue::Object(members) = defs else {
            return Err(import_error(
                file,
                "indexDefs",
                format!("expected an object, found {}", defs.kind()),
            ));
        };
        return members
            .iter()
            .map(|(k, v)| parse_index(v, file, &format!("indexDefs.{}", json_key(k))))
            .collect();
    }
    match &config.index_list {
        Some(OValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_index(v, file, &format!("{config_at}.indexList[{i}]")))
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn json_key(key: &str) -> String {
    serde_json::to_string(key).expect("a string serializes")
}

/// Where a collection's data is and how it is configured, before its documents are read.
struct Located {
    database: Option<String>,
    config: Config,
    /// Where `config` is in its file, for errors.
    config_at: String,
    snapshot: Option<OValue>,
    file: PathBuf,
    folder: Option<PathBuf>,
    /// The schema file and its index definitions for the collection, if a schema lists it.
    schema_indexes: Option<(PathBuf, Vec<SourceIndex>)>,
}

/// A document of the source, before dedup and row assignment.
struct SourceDoc {
    /// The hash key (List) or tree key (FileStorage), as text.
    key: String,
    id: Value,
    doc: Value,
}

/// Finds, checks and maps one collection.
fn load(unit: Unit, global: &mut Vec<String>) -> Result<Option<Loaded>> {
    let mut warnings = Vec::new();
    let Located {
        database,
        config,
        config_at,
        snapshot,
        file,
        folder,
        schema_indexes,
    } = match unit {
        Unit::Schema {
            schema_file,
            database,
            name,
            config,
            file,
            expected,
            folder,
            parsed,
        } => {
            let at = quote_key(&name);
            let schema_config = parse_config(&config, &schema_file, &at, &name)?;
            let schema_defs = source_indexes(None, &schema_config, &at, &schema_file)?;
            let parsed = match (&file, parsed) {
                (_, Some(parsed)) => Some(parsed),
                (Some(file), None) => Some(parse_file(file, &mut warnings)?),
                (None, None) => None,
            };
            let file = file.unwrap_or(expected);
            let snapshot = match parsed {
                Some(Parsed::Object(value)) if is_snapshot(&value) => Some(value),
                Some(Parsed::Object(_) | Parsed::Other) => {
                    return Err(import_error(
                        &file,
                        "(file)",
                        "expected a collection snapshot (an object with config and list)",
                    ));
                }
                Some(Parsed::Empty) => {
                    warnings.push(format!(
                        "{}: empty file (0 bytes, left by a failed persist): {}",
                        file.display(),
                        if folder.is_some() {
                            "documents recovered from the folder's <id>.json files"
                        } else {
                            "the collection is imported without documents"
                        }
                    ));
                    None
                }
                None => {
                    warnings.push(format!(
                        "{}: missing: {}",
                        file.display(),
                        if folder.is_some() {
                            "documents recovered from the folder's <id>.json files"
                        } else {
                            "the collection is imported without documents"
                        }
                    ));
                    None
                }
            };
            let config = match snapshot.as_ref().and_then(|s| s.get("config")) {
                Some(c) => parse_config(c, &file, "config", &name)?,
                None => schema_config,
            };
            let config_at = if snapshot.is_some() {
                "config".to_owned()
            } else {
                at
            };
            let config = Config { name, ..config };
            Located {
                database: Some(database),
                config,
                config_at,
                snapshot,
                file,
                folder,
                schema_indexes: Some((schema_file, schema_defs)),
            }
        }
        Unit::List { file, parsed } => {
            let parsed = match parsed {
                Some(parsed) => parsed,
                None => parse_file(&file, &mut warnings)?,
            };
            let Parsed::Object(snapshot) = parsed else {
                global.push(format!(
                    "{}: not a collection snapshot: skipped",
                    file.display()
                ));
                return Ok(None);
            };
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            let config = parse_config(
                snapshot.get("config").expect("a snapshot has config"),
                &file,
                "config",
                &stem,
            )?;
            Located {
                database: None,
                config,
                config_at: "config".into(),
                snapshot: Some(snapshot),
                file,
                folder: None,
                schema_indexes: None,
            }
        }
        Unit::Folder { folder } => {
            let file = folder.join("metadata.json");
            let name = folder
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match parse_file(&file, &mut warnings)? {
                Parsed::Object(snapshot) if is_snapshot(&snapshot) => {
                    let config = parse_config(
                        snapshot.get("config").expect("a snapshot has config"),
                        &file,
                        "config",
                        &name,
                    )?;
                    Located {
                        database: None,
                        config,
                        config_at: "config".into(),
                        snapshot: Some(snapshot),
                        file,
                        folder: Some(folder),
                        schema_indexes: None,
                    }
                }
                Parsed::Empty => {
                    warnings.push(format!(
                        "{}: empty file (0 bytes, left by a failed persist): documents recovered from the \
                         folder's <id>.json files; id field \"id\" and no indexes assumed",
                        file.display()
                    ));
                    let config = Config {
                        name: name.clone(),
                        id_field: "id".into(),
                        auto: true,
                        ttl_ms: None,
                        rotate: None,
                        audit: false,
                        index_list: None,
                    };
                    Located {
                        database: None,
                        config,
                        config_at: "config".into(),
                        snapshot: None,
                        file,
                        folder: Some(folder),
                        schema_indexes: None,
                    }
                }
                _ => {
                    return Err(import_error(
                        &file,
                        "(file)",
                        "expected a collection snapshot (an object with config and list)",
                    ));
                }
            }
        }
    };
    let list = match &snapshot {
        Some(s) => list_type(
            &config.name,
            s.get("config").unwrap_or(&OValue::Null),
            &file,
            "config.list",
        )?,
        None if folder.is_some() => ListType::FileStorage,
        None => list_type(&config.name, &OValue::Null, &file, "config.list")?,
    };
    // Index definitions: the snapshot's, else the schema entry's.
    let mut defs = source_indexes(snapshot.as_ref(), &config, &config_at, &file)?;
    let mut defs_file = file.clone();
    if defs.is_empty()
        && let Some((schema_file, schema_defs)) = schema_indexes
    {
        defs = schema_defs;
        defs_file = schema_file;
    }
    let id_def = defs.iter().find(|d| d.key == config.id_field);
    let auto = config.auto || id_def.is_some_and(|d| d.auto);
    let gen_source = id_def.and_then(|d| d.gen_source.clone());
    let (ids, source) = match (auto, gen_source.as_deref()) {
        (false, _) => (IdGenerator::Custom, None),
        (true, Some("autoIncIdGen")) => (IdGenerator::AutoIncrement, gen_source.clone()),
        (true, None) => (
            IdGenerator::AutoIncrement,
            Some("autoIncIdGen (assumed: no generator recorded)".into()),
        ),
        (true, Some("autoTimestamp")) => (IdGenerator::Timestamp, gen_source.clone()),
        (true, Some(_)) => (IdGenerator::Custom, gen_source.clone()),
    };
    let mut files = vec![file.clone()];
    let (mut docs, counter) = match (list, &snapshot) {
        (ListType::List, Some(s)) => list_docs(s, &config, &file, ids, &mut warnings)?,
        (ListType::List, None) => (Vec::new(), None),
        (ListType::FileStorage, _) => {
            let folder =
                folder.unwrap_or_else(|| file.parent().unwrap_or(Path::new("")).to_path_buf());
            files.push(folder.clone());
            match &snapshot {
                Some(s) => tree_docs(s, &config, &file, &folder, &mut warnings)?,
                None if folder.is_dir() => scan_docs(&config, &folder, &mut warnings)?,
                None => (Vec::new(), None),
            }
        }
    };
    dedup(&mut docs, &config, &mut warnings);
    let docs: Vec<Value> = docs.into_iter().map(|d| d.doc).collect();
    for (i, doc) in docs.iter().enumerate() {
        crate::json::check_depth(doc)
            .map_err(|e| import_error(&file, &format!("document {i}"), e.to_string()))?;
    }
    // Rows: numeric ids where the order allows, the last raised so the next auto id is the source counter.
    let mut rows = Vec::with_capacity(docs.len());
    let mut next_row = 0u64;
    let bound = if ids == IdGenerator::AutoIncrement {
        counter.unwrap_or(0)
    } else {
        0
    };
    for doc in &docs {
        let id = get_path(doc, &config.id_field).and_then(Value::as_u64);
        let row = match id {
            Some(id) if id >= next_row && id < bound => id,
            _ => next_row,
        };
        rows.push(row);
        next_row = row + 1;
    }
    if ids == IdGenerator::AutoIncrement
        && let Some(counter) = counter
        && counter > next_row
    {
        if let Some(last) = rows.last_mut() {
            *last = counter - 1;
            next_row = counter;
        } else {
            warnings.push(format!(
                "the collection is empty: its next auto id restarts at 0 (the source counter was {counter})"
            ));
        }
    }
    let mut definition = Definition::default().id_field(&config.id_field).ids(ids);
    if let Some(ttl) = config.ttl_ms {
        definition = definition.ttl(TTL_FIELD, Duration::from_millis(ttl));
    }
    if config.audit {
        definition = definition.audit();
    }
    if let Some(rotate) = &config.rotate {
        warnings.push(format!(
            "rotation schedule {rotate:?} is not imported (see Documents::rotate)"
        ));
    }
    let (indexes, skipped_indexes) = map_indexes(&defs, &config, &docs, &defs_file, &mut warnings)?;
    definition.indexes = indexes.iter().map(|i| i.spec.clone()).collect();
    let expired_documents = match config.ttl_ms {
        Some(ttl) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            docs.iter()
                .filter(|d| {
                    get_path(d, TTL_FIELD)
                        .and_then(Value::as_f64)
                        .is_some_and(|t| (now as f64) - t > ttl as f64)
                })
                .count() as u64
        }
        None => 0,
    };
    if let Some(ttl) = config.ttl_ms {
        warnings.push(format!(
            "TTL of {ttl} ms on {TTL_FIELD:?} kept; every document imported, {expired_documents} of them already \
             expired (the engine hides and purges expired documents)"
        ));
    }
    let report = CollectionReport {
        source_name: config.name.clone(),
        target_name: target_name(&config.name),
        database,
        list_type: list.name().into(),
        files,
        documents: docs.len() as u64,
        id_field: config.id_field.clone(),
        ids: IdMapping {
            source,
            target: ids,
            source_counter: counter,
            next_row,
        },
        indexes,
        skipped_indexes,
        ttl_ms: config.ttl_ms,
        expired_documents,
        audit: config.audit,
        rotate: config.rotate.clone(),
        warnings,
    };
    debug_assert!(rows.windows(2).all(|w| w[0] < w[1]), "rows ascend");
    Ok(Some(Loaded {
        report,
        definition,
        docs,
        rows,
    }))
}

/// The value at a lodash-style dotted path (objects by key, arrays by index).
fn get_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = doc;
    for segment in path.split('.') {
        at = match at {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// Whether `key` is a JavaScript array index, which `Object.keys` lists first, in ascending numeric order.
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u32>().ok().filter(|&n| n != u32::MAX)
}

/// `String(id)` as JavaScript writes it (for integers and ordinary floats).
fn js_string(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// An audit wrapper (§8): `version`, `next_version` and `created` are numbers and `history` is an array.
fn is_wrapper(doc: &Value) -> bool {
    doc.get("version").is_some_and(Value::is_number)
        && doc.get("next_version").is_some_and(Value::is_number)
        && doc.get("created").is_some_and(Value::is_number)
        && doc.get("history").is_some_and(Value::is_array)
}

/// What a stored value becomes: the document, or `None` for an audit tombstone.
fn unwrap_doc(
    value: Value,
    config: &Config,
    file: &Path,
    field: &str,
    unwrapped: &mut usize,
    kept: &mut usize,
) -> Result<Option<Value>> {
    if !value.is_object() {
        return Err(import_error(
            file,
            field,
            format!("expected a document (an object), found {}", kind_of(&value)),
        ));
    }
    if !is_wrapper(&value) {
        return Ok(Some(value));
    }
    if !config.audit {
        *kept += 1;
        return Ok(Some(value));
    }
    let Value::Object(mut map) = value else {
        unreachable!("checked above")
    };
    if map.get("deleted").is_some_and(|d| !d.is_null()) {
        return Ok(None);
    }
    match map.remove("data") {
        Some(data @ Value::Object(_)) => {
            *unwrapped += 1;
            Ok(Some(data))
        }
        other => Err(import_error(
            file,
            &format!("{field}.data"),
            format!(
                "an audit wrapper's data must be an object, found {}",
                other.as_ref().map_or("nothing", kind_of)
            ),
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The document's id, or (when it has none) `fallback` written into it.
fn identify(
    doc: &mut Value,
    config: &Config,
    fallback: Value,
    file: &Path,
    field: &str,
    filled: &mut usize,
) -> Result<Value> {
    match get_path(doc, &config.id_field) {
        Some(id @ (Value::String(_) | Value::Number(_))) => Ok(id.clone()),
        Some(other) if !other.is_null() => Err(import_error(
            file,
            &format!("{field}.{}", config.id_field),
            format!(
                "an id must be a string or a number, found {}",
                short_value(other)
            ),
        )),
        _ if config.id_field.contains('.') => Err(import_error(
            file,
            &format!("{field}.{}", config.id_field),
            "missing, and a nested id field cannot be filled in",
        )),
        _ => {
            *filled += 1;
            if let Value::Object(map) = doc {
                map.insert(config.id_field.clone(), fallback.clone());
            }
            Ok(fallback)
        }
    }
}

fn short_value(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn fallback_id(key: &str, ids: IdGenerator) -> Value {
    match (ids, key.parse::<u64>()) {
        (IdGenerator::AutoIncrement | IdGenerator::Timestamp, Ok(n))
            if array_index(key).is_some() =>
        {
            Value::from(n)
        }
        _ => Value::String(key.to_owned()),
    }
}

/// A List's documents (§3): `list.hash` in JavaScript key order, and `list._counter`.
fn list_docs(
    snapshot: &OValue,
    config: &Config,
    file: &Path,
    ids: IdGenerator,
    warnings: &mut Vec<String>,
) -> Result<(Vec<SourceDoc>, Option<u64>)> {
    let list = snapshot.get("list").expect("a snapshot has list");
    if !matches!(list, OValue::Object(_)) {
        return Err(import_error(
            file,
            "list",
            format!("expected an object, found {}", list.kind()),
        ));
    }
    let counter = field_u64(list, "_counter", file, "list")?;
    let members = match list.get("hash") {
        Some(OValue::Object(members)) => members.clone(),
        None => {
            return Err(import_error(
                file,
                "list.hash",
                "missing (is this a List snapshot?)",
            ));
        }
        Some(other) => {
            return Err(import_error(
                file,
                "list.hash",
                format!("expected an object, found {}", other.kind()),
            ));
        }
    };
    let mut ordered: Vec<(String, OValue)> = members;
    // Object.keys order: array indexes ascending, then the other keys in insertion (file) order. Stable sort.
    ordered.sort_by_key(|(k, _)| array_index(k).map_or((1, 0), |n| (0, n)));
    let (mut unwrapped, mut kept, mut filled) = (0, 0, 0);
    let mut docs = Vec::with_capacity(ordered.len());
    for (key, value) in ordered {
        let field = format!("list.hash.{}", json_key(&key));
        let Some(mut doc) = unwrap_doc(
            value.into_value(),
            config,
            file,
            &field,
            &mut unwrapped,
            &mut kept,
        )?
        else {
            continue;
        };
        let id = identify(
            &mut doc,
            config,
            fallback_id(&key, ids),
            file,
            &field,
            &mut filled,
        )?;
        docs.push(SourceDoc { key, id, doc });
    }
    if config.audit {
        warnings.push(format!(
            "audit wrappers unwrapped to their data: {unwrapped}; a List in audit mode does not mark deletions, \
             so documents deleted in the source may be imported"
        ));
    }
    note_odd_docs(kept, filled, &config.id_field, warnings);
    Ok((docs, counter))
}

fn note_odd_docs(kept: usize, filled: usize, id_field: &str, warnings: &mut Vec<String>) {
    if kept > 0 {
        warnings.push(format!(
            "{kept} document(s) look like audit wrappers but the collection is not audited: imported as they are"
        ));
    }
    if filled > 0 {
        warnings.push(format!(
            "{filled} document(s) had no {id_field:?}: their storage key was written there as the id"
        ));
    }
}

/// The `(key, pointer)` pairs of a PortableBPlusTree's leaves, leftmost leaf first (§5).
fn tree_leaves(tree: &OValue, file: &Path) -> Result<Vec<(OValue, OValue)>> {
    let at = "list.tree";
    let OValue::Array(nodes) = tree.get("nodes").unwrap_or(&OValue::Null) else {
        return Err(import_error(
            file,
            &format!("{at}.nodes"),
            "expected an array of nodes",
        ));
    };
    let mut by_id: HashMap<u64, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let id = field_u64(node, "id", file, &format!("{at}.nodes[{i}]"))?
            .ok_or_else(|| import_error(file, &format!("{at}.nodes[{i}].id"), "missing"))?;
        by_id.insert(id, i);
    }
    let root = field_u64(tree, "root", file, at)?
        .ok_or_else(|| import_error(file, &format!("{at}.root"), "missing"))?;
    let node_at = |id: u64, field: &str| -> Result<usize> {
        by_id.get(&id).copied().ok_or_else(|| {
            import_error(
                file,
                field,
                format!("names node {id}, which is not in list.tree.nodes"),
            )
        })
    };
    let mut index = node_at(root, &format!("{at}.root"))?;
    // Down children[0] to the leftmost leaf; at most one step per node.
    for _ in 0..=nodes.len() {
        let node = &nodes[index];
        if field_bool(node, "leaf", file, &format!("{at}.nodes[{index}]"))? {
            break;
        }
        let first = match node.get("children") {
            Some(OValue::Array(children)) => children.first().and_then(|c| match c {
                OValue::Number(n) => n.as_u64(),
                _ => None,
            }),
            _ => None,
        };
        let first = first.ok_or_else(|| {
            import_error(
                file,
                &format!("{at}.nodes[{index}].children"),
                "an inner node without children",
            )
        })?;
        index = node_at(first, &format!("{at}.nodes[{index}].children[0]"))?;
    }
    let mut pairs = Vec::new();
    let mut seen = HashSet::new();
    loop {
        if !seen.insert(index) {
            return Err(import_error(
                file,
                &format!("{at}.nodes[{index}]._right"),
                "the leaf chain loops",
            ));
        }
        let node = &nodes[index];
        let field = format!("{at}.nodes[{index}]");
        let (Some(OValue::Array(keys)), Some(OValue::Array(pointers))) =
            (node.get("keys"), node.get("pointers"))
        else {
            return Err(import_error(
                file,
                &field,
                "a leaf needs keys and pointers arrays",
            ));
        };
        if keys.len() != pointers.len() {
            return Err(import_error(
                file,
                &format!("{field}.pointers"),
                format!("{} pointers for {} keys", pointers.len(), keys.len()),
            ));
        }
        pairs.extend(keys.iter().cloned().zip(pointers.iter().cloned()));
        match field_u64(node, "_right", file, &field)? {
            Some(right) => index = node_at(right, &format!("{field}._right"))?,
            None => break,
        }
    }
    Ok(pairs)
}

/// A FileStorage collection's documents (§3): the tree's leaves, each read from its `<id>.json`.
fn tree_docs(
    snapshot: &OValue,
    config: &Config,
    file: &Path,
    folder: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Vec<SourceDoc>, Option<u64>)> {
    let list = snapshot.get("list").expect("a snapshot has list");
    if !matches!(list, OValue::Object(_)) {
        return Err(import_error(
            file,
            "list",
            format!("expected an object, found {}", list.kind()),
        ));
    }
    let counter = field_u64(list, "counter", file, "list")?;
    let tree = list.get("tree").ok_or_else(|| {
        import_error(
            file,
            "list.tree",
            "missing (is this a FileStorage snapshot?)",
        )
    })?;
    let pairs = tree_leaves(tree, file)?;
    let (mut unwrapped, mut kept, mut filled, mut tombstones) = (0, 0, 0, 0);
    let mut missing = Vec::new();
    let mut named = HashSet::new();
    let mut docs = Vec::with_capacity(pairs.len());
    for (i, (key, pointer)) in pairs.into_iter().enumerate() {
        let OValue::String(pointer) = pointer else {
            return Err(import_error(
                file,
                &format!("list.tree pointer {i}"),
                format!("expected a file name, found {}", pointer.kind()),
            ));
        };
        if pointer.contains(['/', '\\']) || pointer == ".." || pointer == "." || pointer.is_empty()
        {
            return Err(import_error(
                file,
                &format!("list.tree pointer {i}"),
                format!("{pointer:?} is not a file name in the collection's folder"),
            ));
        }
        named.insert(pointer.clone());
        let path = folder.join(&pointer);
        if !path.is_file() {
            missing.push(pointer);
            continue;
        }
        let value = document_value(&path, parse_file(&path, warnings)?)?;
        let key_value = key.into_value();
        let key_text = js_string(&key_value);
        let Some(mut doc) = unwrap_doc(
            value,
            config,
            &path,
            "(document)",
            &mut unwrapped,
            &mut kept,
        )?
        else {
            tombstones += 1;
            continue;
        };
        let id = identify(
            &mut doc,
            config,
            key_value.clone(),
            &path,
            "(document)",
            &mut filled,
        )?;
        if js_string(&id) != key_text {
            warnings.push(format!(
                "{}: its id {} differs from the tree's key {key_text}; the document's id is kept",
                path.display(),
                short_value(&id)
            ));
        }
        docs.push(SourceDoc {
            key: key_text,
            id,
            doc,
        });
    }
    if !missing.is_empty() {
        warnings.push(format!(
            "{} document file(s) named by the tree are missing, skipped: {}",
            missing.len(),
            shown(&missing)
        ));
    }
    let mut orphans: Vec<String> = json_files(folder)?
        .into_iter()
        .filter(|n| n != "metadata.json" && !named.contains(n))
        .collect();
    orphans.sort();
    if !orphans.is_empty() {
        warnings.push(format!(
            "{} file(s) in {} are not in the tree (orphans or named snapshots), not imported: {}",
            orphans.len(),
            folder.display(),
            shown(&orphans)
        ));
    }
    if config.audit {
        warnings.push(format!(
            "audit wrappers unwrapped to their data: {unwrapped}; tombstones (deleted) dropped: {tombstones}"
        ));
    }
    note_odd_docs(kept, filled, &config.id_field, warnings);
    Ok((docs, counter))
}

fn shown(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(MAX_IDS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_IDS_SHOWN {
        text.push_str(", ...");
    }
    text
}

fn json_files(folder: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| read_error(folder, e))? {
        let entry = entry.map_err(|e| read_error(folder, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && entry.file_type().is_ok_and(|t| t.is_file()) {
            names.push(name);
        }
    }
    Ok(names)
}

/// A FileStorage folder without a usable `metadata.json`: every `<id>.json` in it, in id order (numbers first).
fn scan_docs(
    config: &Config,
    folder: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Vec<SourceDoc>, Option<u64>)> {
    let mut names = json_files(folder)?;
    names.retain(|n| n != "metadata.json");
    let (mut unwrapped, mut kept, mut filled, mut skipped) = (0, 0, 0, Vec::new());
    let mut docs = Vec::new();
    for name in names {
        let path = folder.join(&name);
        let parsed = parse_file(&path, warnings)?;
        if let Parsed::Object(v) = &parsed
            && is_snapshot(v)
        {
            skipped.push(name);
            continue;
        }
        let value = document_value(&path, parsed)?;
        let stem = name.trim_end_matches(".json");
        let fallback = fallback_id(stem, IdGenerator::AutoIncrement);
        let Some(mut doc) = unwrap_doc(
            value,
            config,
            &path,
            "(document)",
            &mut unwrapped,
            &mut kept,
        )?
        else {
            continue;
        };
        let id = identify(&mut doc, config, fallback, &path, "(document)", &mut filled)?;
        docs.push(SourceDoc {
            key: stem.to_owned(),
            id,
            doc,
        });
    }
    docs.sort_by(|a, b| match (&a.id, &b.id) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::Number(_), _) => std::cmp::Ordering::Less,
        (_, Value::Number(_)) => std::cmp::Ordering::Greater,
        (x, y) => js_string(x).encode_utf16().cmp(js_string(y).encode_utf16()),
    });
    if !skipped.is_empty() {
        warnings.push(format!(
            "named snapshots in the folder, not imported: {}",
            shown(&skipped)
        ));
    }
    note_odd_docs(kept, filled, &config.id_field, warnings);
    let counter = docs
        .iter()
        .filter_map(|d| d.id.as_u64())
        .max()
        .map(|m| m + 1);
    Ok((docs, counter))
}

/// Keeps one document per id: the one stored under its own id (the newer, §3), else the last.
fn dedup(docs: &mut Vec<SourceDoc>, config: &Config, warnings: &mut Vec<String>) {
    let mut groups: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, d) in docs.iter().enumerate() {
        let mut key = Vec::new();
        crate::json::encode_index_key(&d.id, false, &mut key);
        groups.entry(key).or_default().push(i);
    }
    let mut drop = vec![false; docs.len()];
    let mut resolved = Vec::new();
    for members in groups.values().filter(|m| m.len() > 1) {
        let winner = members
            .iter()
            .copied()
            .find(|&i| docs[i].key == js_string(&docs[i].id))
            .unwrap_or(*members.last().expect("a group has members"));
        for &i in members {
            drop[i] = i != winner;
        }
        resolved.push(format!(
            "{} (kept key {:?} of {})",
            short_value(&docs[winner].id),
            docs[winner].key,
            members
                .iter()
                .map(|&i| format!("{:?}", docs[i].key))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if resolved.is_empty() {
        return;
    }
    resolved.sort();
    warnings.push(format!(
        "{} duplicate {:?} value(s) resolved, one document kept each: {}",
        resolved.len(),
        config.id_field,
        shown(&resolved)
    ));
    let mut i = 0;
    docs.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
}

fn normalized(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Maps the source index definitions to [`IndexSpec`]s, checking unique and required against the documents.
fn map_indexes(
    defs: &[SourceIndex],
    config: &Config,
    docs: &[Value],
    file: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Vec<IndexReport>, Vec<SkippedIndex>)> {
    let mut created = Vec::new();
    let mut skipped = Vec::new();
    let mut names = HashSet::new();
    for def in defs {
        let skip = |reason: String| SkippedIndex {
            name: def.key.clone(),
            reason,
        };
        if def.key == config.id_field {
            skipped.push(skip(
                "the id index: the collection's `_id` index covers it".into(),
            ));
            continue;
        }
        if def.key == TTL_FIELD && config.ttl_ms.is_some() {
            skipped.push(skip(
                "the TTL timestamp index: the collection's TTL index covers it".into(),
            ));
            continue;
        }
        if def.key == "*" {
            skipped.push(skip(
                "a wildcard index (an ignore-case index per top-level field): not supported".into(),
            ));
            continue;
        }
        let builtin_lowercase = def
            .process
            .as_deref()
            .is_some_and(|p| normalized(p) == normalized(IGNORE_CASE_PROCESS));
        let ignore_case = def.ignore_case || builtin_lowercase;
        if let Some(process) = &def.process
            && !builtin_lowercase
            && !def.ignore_case
        {
            skipped.push(skip(format!(
                "its key function is stored as code (process: {process}), which cannot be run here"
            )));
            continue;
        }
        if !names.insert(def.key.clone()) {
            skipped.push(skip("defined twice: the first definition is used".into()));
            continue;
        }
        if def.key == crate::documents::ID_INDEX || def.key == crate::documents::TTL_INDEX {
            skipped.push(skip(format!("{:?} is a reserved index name", def.key)));
            continue;
        }
        let mut spec = IndexSpec::on(&def.key);
        spec.unique = def.unique;
        spec.sparse = def.sparse;
        spec.required = def.required;
        spec.ignore_case = ignore_case;
        let mut notes = Vec::new();
        if ignore_case {
            notes.push(
                "ignore case: strings are lowercased (the source also turned numbers into strings)"
                    .to_owned(),
            );
        }
        if def.auto {
            notes.push(format!(
                "the source generated this field ({}); new documents do not get it",
                def.gen_source.as_deref().unwrap_or("no generator recorded")
            ));
        }
        let key_of = index_key_of(&spec)
            .map_err(|e| import_error(file, &format!("{}.key", def.field), e.to_string()))?;
        if spec.unique {
            let mut holders: HashMap<Vec<u8>, usize> = HashMap::new();
            let mut clashes = Vec::new();
            for (i, doc) in docs.iter().enumerate() {
                let Some(key) = key_of(doc) else { continue };
                if let Some(&first) = holders.get(&key) {
                    clashes.push(format!(
                        "{} = {} (ids {} and {})",
                        def.key,
                        get_path(doc, &def.key).map_or("missing".into(), short_value),
                        short_value(
                            get_path(&docs[first], &config.id_field).unwrap_or(&Value::Null)
                        ),
                        short_value(get_path(doc, &config.id_field).unwrap_or(&Value::Null)),
                    ));
                } else {
                    holders.insert(key, i);
                }
            }
            if !clashes.is_empty() {
                spec.unique = false;
                notes.push(format!(
                    "created non-unique: the data breaks uniqueness {} time(s)",
                    clashes.len()
                ));
                warnings.push(format!(
                    "unique index {:?}: {} duplicate key(s) in the data, so it is created non-unique: {}",
                    def.key,
                    clashes.len(),
                    shown(&clashes)
                ));
            }
        }
        if spec.required {
            let mut presence = spec.clone();
            presence.sparse = true;
            presence.unique = false;
            presence.required = false;
            let present = index_key_of(&presence)
                .map_err(|e| import_error(file, &format!("{}.key", def.field), e.to_string()))?;
            let lacking: Vec<String> = docs
                .iter()
                .filter(|d| present(d).is_none())
                .map(|d| short_value(get_path(d, &config.id_field).unwrap_or(&Value::Null)))
                .collect();
            if !lacking.is_empty() {
                spec.required = false;
                notes.push(format!(
                    "created non-required: {} document(s) lack the field",
                    lacking.len()
                ));
                warnings.push(format!(
                    "required index {:?}: {} document(s) lack {:?}, so it is created non-required: ids {}",
                    def.key,
                    lacking.len(),
                    def.key,
                    shown(&lacking)
                ));
            }
        }
        created.push(IndexReport {
            spec,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        });
    }
    Ok((created, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_replaced_and_pairs_and_escaped_backslashes_kept() {
        let text = r#"{"a":"\ud83c\udf81","b":"x\udc00y","c":"\\ud800","d":"\uD800"}"#.to_owned();
        let (fixed, replaced) = replace_lone_surrogates(text);
        assert_eq!(replaced, 2);
        let value: Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(value["a"], "\u{1f381}");
        assert_eq!(value["b"], "x\u{fffd}y");
        assert_eq!(value["c"], "\\ud800");
        assert_eq!(value["d"], "\u{fffd}");
    }

    #[test]
    fn hash_keys_follow_javascript_object_key_order() {
        let mut keys = vec!["b", "10", "2", "a", "01", "4294967295", "0"];
        keys.sort_by_key(|k| array_index(k).map_or((1, 0), |n| (0, n)));
        assert_eq!(keys, ["0", "2", "10", "b", "a", "01", "4294967295"]);
    }

    #[test]
    fn target_names_drop_the_list_suffix_and_ids_print_as_javascript_does() {
        assert_eq!(target_name("contacts:FileStorage"), "contacts");
        assert_eq!(target_name("users"), "users");
        assert_eq!(js_string(&serde_json::json!(25)), "25");
        assert_eq!(js_string(&serde_json::json!(-3)), "-3");
        assert_eq!(js_string(&serde_json::json!(1e20)), "100000000000000000000");
        assert_eq!(js_string(&serde_json::json!("L0001")), "L0001");
    }
}
