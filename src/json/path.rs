//! Dotted field paths (`address.city`, `tags.0`) and what they reach in a document, with MongoDB's semantics.
//!
//! Reaching a path from a value, segment by segment:
//! - in an object, a segment names a field; a missing field is a *missing* branch;
//! - in an array, a numeric segment indexes it (out of range: missing); any other segment applies to each element
//!   that is an object (implicit array traversal, one level: scalars and nested arrays are skipped);
//! - a scalar (null included) before the path ends is a missing branch.
//!
//! [`Reach`] holds the values reached (an array at the end of the path is one value; queries also test its elements)
//! and whether some branch was missing, which is what makes `{"a.b": null}` match `{"a": [{"b": 1}, {}]}`.

use super::value::{JsonRead, Kind};
use super::{ErrorKind, JsonError, MAX_PATH_SEGMENTS};
use crate::json::encode_index_key;
use crate::json::encode_index_key_desc;

/// A parsed dotted path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Segment {
    name: String,
    /// The array index the segment also names, when it is all ASCII digits.
    index: Option<usize>,
}

/// What a path reaches in one document.
#[derive(Debug)]
pub struct Reach<'a, V: ?Sized> {
    /// The values at the end of the path, in document order.
    pub values: Vec<&'a V>,
    /// Whether some branch ended before the path did (a missing field, an index out of range, a scalar).
    pub missing: bool,
}

impl Path {
    /// Parses a dotted path.
    ///
    /// # Errors
    /// [`ErrorKind::BadPath`] for an empty path, an empty segment (`a..b`, `.a`, `a.`), or more than
    /// [`MAX_PATH_SEGMENTS`] segments. The error's position is the path itself.
    pub fn parse(text: &str) -> Result<Self, JsonError> {
        let error = |message: String| JsonError::new(ErrorKind::BadPath, text, message);
        if text.is_empty() {
            return Err(error("a path must not be empty".into()));
        }
        let mut segments = Vec::new();
        for (i, name) in text.split('.').enumerate() {
            if name.is_empty() {
                return Err(error(format!("segment {i} of path {text:?} is empty")));
            }
            if i == MAX_PATH_SEGMENTS {
                return Err(error(format!("more than {MAX_PATH_SEGMENTS} segments")));
            }
            let index = if name.bytes().all(|b| b.is_ascii_digit()) {
                name.parse().ok()
            } else {
                None
            };
            segments.push(Segment {
                name: name.to_owned(),
                index,
            });
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &str> {
        self.segments.iter().map(|s| s.name.as_str())
    }

    /// The number of segments.
    #[must_use]
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Always false: a path has at least one segment.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The first `segments` segments, dotted (for messages).
    #[must_use]
    pub fn prefix(&self, segments: usize) -> String {
        self.segments().take(segments).collect::<Vec<_>>().join(".")
    }

    /// Whether `self` is `other` or a proper prefix of it, segment-wise (`a` is a prefix of `a.b`, not of `ab`).
    #[must_use]
    pub fn is_prefix_of(&self, other: &Path) -> bool {
        self.segments.len() <= other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a.name == b.name)
    }

    /// What the path reaches in `doc` (see the module docs).
    pub fn lookup<'a, V: JsonRead + ?Sized>(&self, doc: &'a V) -> Reach<'a, V> {
        let mut reach = Reach {
            values: Vec::new(),
            missing: false,
        };
        self.walk(doc, 0, &mut reach);
        reach
    }

    fn walk<'a, V: JsonRead + ?Sized>(&self, value: &'a V, depth: usize, reach: &mut Reach<'a, V>) {
        let Some(segment) = self.segments.get(depth) else {
            reach.values.push(value);
            return;
        };
        match value.kind() {
            Kind::Object => match value.get(&segment.name) {
                Some(child) => self.walk(child, depth + 1, reach),
                None => reach.missing = true,
            },
            Kind::Array => match segment.index {
                Some(index) => match value.item(index) {
                    Some(child) => self.walk(child, depth + 1, reach),
                    None => reach.missing = true,
                },
                None => {
                    for item in value.items().filter(|item| item.kind() == Kind::Object) {
                        self.walk(item, depth, reach);
                    }
                }
            },
            _ => reach.missing = true,
        }
    }

    /// How many leading segments reach a value that is neither an object nor an array while more segments follow:
    /// `Some(1)` for `a.b` in `{"a": 5}`. `None` when no such value blocks the path. Follows the first element
    /// only where an array is traversed by name, like an update would refuse to.
    #[must_use]
    pub fn blocked_at<V: JsonRead + ?Sized>(&self, doc: &V) -> Option<usize> {
        let mut value = doc;
        for (depth, segment) in self.segments.iter().enumerate() {
            let next = match value.kind() {
                Kind::Object => value.get(&segment.name),
                Kind::Array => segment.index.and_then(|i| value.item(i)),
                _ => return Some(depth),
            };
            value = next?;
        }
        None
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl<V: JsonRead + ?Sized> Reach<'_, V> {
    /// The index keys of a multikey index on the path, encoded with [`encode_index_key`] (or its descending form),
    /// sorted and without duplicates.
    ///
    /// Each reached value gives one key, except an array, which gives one key per element (an empty array gives one
    /// key: itself). A missing branch, or nothing reached, gives the key of `null`, as MongoDB indexes a missing
    /// field as null. [`crate::json::Constraint`]s are derived for exactly this extraction.
    #[must_use]
    pub fn index_keys(&self, ignore_case: bool, descending: bool) -> Vec<Vec<u8>> {
        let encode = |value: &V| {
            let mut out = Vec::new();
            if descending {
                encode_index_key_desc(value, ignore_case, &mut out);
            } else {
                encode_index_key(value, ignore_case, &mut out);
            }
            out
        };
        let mut keys = Vec::new();
        for value in &self.values {
            if value.array_len().is_some_and(|len| len > 0) {
                keys.extend(value.items().map(encode));
            } else {
                keys.push(encode(value));
            }
        }
        if self.missing || self.values.is_empty() {
            keys.push(encode_null(descending));
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

fn encode_null(descending: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if descending {
        encode_index_key_desc(&serde_json::Value::Null, false, &mut out);
    } else {
        encode_index_key(&serde_json::Value::Null, false, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn reach(path: &str, doc: &Value) -> (Vec<Value>, bool) {
        let r = Path::parse(path).unwrap().lookup(doc);
        (r.values.into_iter().cloned().collect(), r.missing)
    }

    #[test]
    fn bad_paths_are_refused_with_the_path_as_position() {
        for bad in ["", "a..b", ".a", "a."] {
            let error = Path::parse(bad).unwrap_err();
            assert_eq!(
                (error.kind, error.position.as_str()),
                (ErrorKind::BadPath, bad)
            );
        }
        let long = vec!["a"; MAX_PATH_SEGMENTS + 1].join(".");
        assert_eq!(Path::parse(&long).unwrap_err().kind, ErrorKind::BadPath);
        assert!(Path::parse(&vec!["a"; MAX_PATH_SEGMENTS].join(".")).is_ok());
    }

    #[test]
    fn paths_traverse_arrays_implicitly_and_index_them_by_number() {
        let doc = json!({"a": {"b": 1}, "xs": [{"b": 2}, 3, {"c": 4}, [{"b": 5}], {"b": [6, 7]}], "n": 5});
        assert_eq!(reach("a.b", &doc), (vec![json!(1)], false));
        assert_eq!(reach("xs.b", &doc), (vec![json!(2), json!([6, 7])], true));
        assert_eq!(reach("xs.0.b", &doc), (vec![json!(2)], false));
        assert_eq!(reach("xs.4.b.1", &doc), (vec![json!(7)], false));
        assert_eq!(reach("xs.9", &doc), (vec![], true));
        assert_eq!(reach("n.b", &doc), (vec![], true));
        assert_eq!(reach("zz", &doc), (vec![], true));
        assert_eq!(
            reach("xs", &doc).0.len(),
            1,
            "an array at the end is one value"
        );
    }

    #[test]
    fn blocked_at_names_the_scalar_prefix() {
        let doc = json!({"a": {"b": 5}, "xs": [1, {"c": null}]});
        let blocked = |p: &str| {
            let path = Path::parse(p).unwrap();
            path.blocked_at(&doc).map(|n| path.prefix(n))
        };
        assert_eq!(blocked("a.b.c"), Some("a.b".into()));
        assert_eq!(blocked("xs.0.z"), Some("xs.0".into()));
        assert_eq!(blocked("xs.1.c.d"), Some("xs.1.c".into()));
        assert_eq!(blocked("a.x.y"), None, "missing is not blocked");
        assert_eq!(blocked("a.b"), None);
    }

    #[test]
    fn index_keys_are_multikey_and_index_missing_as_null() {
        let keys = |p: &str, doc: Value| {
            Path::parse(p)
                .unwrap()
                .lookup(&doc)
                .index_keys(false, false)
        };
        let one = |v: Value| {
            let mut out = Vec::new();
            encode_index_key(&v, false, &mut out);
            out
        };
        assert_eq!(
            keys("t", json!({"t": [2, 1, 2]})),
            vec![one(json!(1)), one(json!(2))]
        );
        assert_eq!(keys("t", json!({"t": []})), vec![one(json!([]))]);
        assert_eq!(keys("t", json!({})), vec![one(json!(null))]);
        assert_eq!(
            keys("a.b", json!({"a": [{"b": "x"}, {}]})),
            vec![one(json!(null)), one(json!("x"))]
        );
    }
}
