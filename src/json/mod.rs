//! JSON documents: an archivable value type, Mongo-style paths, queries, sort, projection and updates.
//!
//! This module is pure: it knows nothing of storage. It owns
//! - [`Json`], an owned JSON value that rkyv can archive, with object fields kept **sorted by key bytes and
//!   unique**, so a field lookup in the archived form ([`ArchivedJson`]) is a binary search;
//! - [`JsonRead`], the read-only view shared by [`serde_json::Value`], [`Json`] and [`ArchivedJson`], so queries run on
//!   archived documents without deserializing them;
//! - [`Path`]: dotted field paths with MongoDB's implicit traversal of arrays;
//! - [`compare`]: one total order over JSON values (MongoDB's type order: null < numbers < strings < objects < arrays
//!   < booleans; numbers by exact numeric value across `i64`/`u64`/`f64`; strings by bytes), and
//!   [`encode_index_key`], an order-preserving, prefix-free byte encoding consistent with that order;
//! - [`Filter`] (queries), [`Sort`], [`Projection`] and [`Update`], parsed from JSON with typed errors that name the
//!   position of the problem ([`JsonError`]).
//!
//! ```
//! use collection_store::json::{Filter, Json, JsonRead};
//! use serde_json::json;
//!
//! let filter = Filter::parse(&json!({"tags": "red", "age": {"$gte": 18}})).unwrap();
//! let doc = json!({"name": "Ann", "age": 30, "tags": ["red", "blue"]});
//! assert!(filter.matches(&doc));
//! // The same filter on the zero-copy archived form.
//! let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&Json::from(&doc)).unwrap();
//! let archived = rkyv::access::<collection_store::json::ArchivedJson, rkyv::rancor::Error>(&bytes).unwrap();
//! assert!(filter.matches(archived));
//! assert_eq!(archived.to_value(), doc);
//! ```

mod compare;
mod options;
mod path;
mod query;
mod update;
mod value;

pub use compare::{compare, encode_index_key, encode_index_key_desc};
pub use options::{Projection, Sort};
pub use path::{Path, Reach};
pub use query::{Constraint, Filter};
pub use update::{Update, deep_merge, shallow_assign};
pub use value::{
    ArchivedJson, ArchivedJsonNumber, ArchivedJsonObject, Json, JsonNumber, JsonObject, JsonRead,
    Kind,
};

/// The deepest nesting of operators a query, projection or update may have (MongoDB allows 100 levels of BSON).
pub const MAX_QUERY_DEPTH: usize = 100;

/// The deepest nesting of arrays and objects a stored document may have (serde_json's parser stops at 128 as well):
/// comparing, encoding and validating documents recurse, so depth is bounded where documents come in.
pub const MAX_DOCUMENT_DEPTH: usize = 128;

/// Checks that `value` nests arrays and objects at most [`MAX_DOCUMENT_DEPTH`] deep, without recursing.
///
/// # Errors
/// [`ErrorKind::TooDeep`], positioned at the first path that goes too deep.
pub fn check_depth(value: &serde_json::Value) -> Result<(), JsonError> {
    let mut stack: Vec<(&serde_json::Value, usize, String)> = vec![(value, 0, String::new())];
    while let Some((value, depth, position)) = stack.pop() {
        let children: Box<dyn Iterator<Item = (String, &serde_json::Value)>> = match value {
            serde_json::Value::Array(items) => {
                Box::new(items.iter().enumerate().map(|(i, v)| (i.to_string(), v)))
            }
            serde_json::Value::Object(map) => Box::new(map.iter().map(|(k, v)| (k.clone(), v))),
            _ => continue,
        };
        if depth >= MAX_DOCUMENT_DEPTH {
            return Err(JsonError::new(
                ErrorKind::TooDeep,
                &position,
                format!("documents nest arrays and objects at most {MAX_DOCUMENT_DEPTH} deep"),
            ));
        }
        for (key, child) in children {
            stack.push((child, depth + 1, join(&position, &key)));
        }
    }
    Ok(())
}

/// The most segments a [`Path`] may have.
pub const MAX_PATH_SEGMENTS: usize = 100;

/// The largest compiled size of a `$regex`, in bytes (the regex crate's own default is 10 MiB).
pub const MAX_REGEX_SIZE_BYTES: usize = 1 << 20;

/// What kind of problem a [`JsonError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input's shape is wrong: not an object where one is needed, operators mixed with fields, ...
    Malformed,
    /// An operator this module does not know (or does not support).
    UnknownOperator,
    /// An operator's operand has the wrong type or value (`{"$size": "x"}`).
    WrongOperand,
    /// A `$regex` that does not compile.
    BadRegex,
    /// A field path that does not parse (empty, empty segment, too long).
    BadPath,
    /// An update's path runs through a value it cannot enter (a number, a string, null, or an array by name).
    NotTraversable,
    /// An update operator meets a value of the wrong type (`$inc` on a string, `$push` on an object).
    TypeMismatch,
    /// An arithmetic result that does not fit (`$inc` past `i64`/`u64`, or a non-finite float).
    Overflow,
    /// Two paths of one update overlap (`a` and `a.b`), so the result would depend on their order.
    Conflict,
    /// An update would change the document's id field.
    IdChanged,
    /// Nesting deeper than [`MAX_QUERY_DEPTH`].
    TooDeep,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed input",
            Self::UnknownOperator => "unknown operator",
            Self::WrongOperand => "wrong operand",
            Self::BadRegex => "invalid regex",
            Self::BadPath => "invalid path",
            Self::NotTraversable => "path not traversable",
            Self::TypeMismatch => "type mismatch",
            Self::Overflow => "overflow",
            Self::Conflict => "conflicting paths",
            Self::IdChanged => "id field changed",
            Self::TooDeep => "nested too deep",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every fallible function of this module: what went wrong ([`ErrorKind`]), where, and a message.
///
/// `position` is a dotted path: inside the query, projection or update document for parse errors (`$and.1.age.$size`,
/// empty for the whole input), and inside the document for errors applying an update (`address.city`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at {}: {message}", position_label(.position))]
#[non_exhaustive]
pub struct JsonError {
    /// What kind of problem.
    pub kind: ErrorKind,
    /// Where: a dotted path (see the type's docs).
    pub position: String,
    /// What exactly, in words.
    pub message: String,
}

fn position_label(position: &str) -> String {
    if position.is_empty() {
        "the top level".to_owned()
    } else {
        format!("`{position}`")
    }
}

impl JsonError {
    pub(crate) fn new(kind: ErrorKind, position: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            position: position.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses JSON text (a document, query, update, ...). Text that is not JSON is an [`ErrorKind::Malformed`] error whose
/// position is `line L column C` of the text.
///
/// # Errors
/// As above.
pub fn parse(text: &str) -> Result<serde_json::Value, JsonError> {
    serde_json::from_str(text).map_err(|e| {
        let position = format!("line {} column {}", e.line(), e.column());
        let message = match e.classify() {
            serde_json::error::Category::Eof => {
                "the text ends before the JSON value does".to_owned()
            }
            _ => {
                let full = e.to_string();
                // serde_json appends " at line L column C": the position says it already.
                full.rsplit_once(" at line ")
                    .map_or(full.clone(), |(m, _)| m.to_owned())
            }
        };
        JsonError::new(ErrorKind::Malformed, &position, message)
    })
}

/// `position` followed by `key`, dotted.
pub(crate) fn join(position: &str, key: &str) -> String {
    if position.is_empty() {
        key.to_owned()
    } else {
        format!("{position}.{key}")
    }
}

#[cfg(test)]
mod tests;
