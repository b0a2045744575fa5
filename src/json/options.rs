//! Find options: [`Sort`] orders documents by paths, [`Projection`] shapes the documents returned.
//!
//! A sort key follows MongoDB: a path reaching several values (through arrays, or an array at its end) sorts by the
//! least of them ascending and the greatest descending, in [`compare`] order; a missing value sorts as `null`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::compare::compare;
use super::path::Path;
use super::query::describe;
use super::value::{JsonRead, Kind};
use super::{ErrorKind, JsonError};

/// A sort specification: `{"age": -1, "name": 1}` sorts by age descending, then by name.
///
/// ```
/// use collection_store::json::Sort;
/// use serde_json::json;
///
/// let sort = Sort::parse(&json!({"age": -1, "name": 1})).unwrap();
/// let mut docs = vec![json!({"name": "b", "age": 3}), json!({"name": "a", "age": 3}), json!({"name": "c"})];
/// docs.sort_by(|a, b| sort.compare(a, b));
/// assert_eq!(docs, [json!({"name": "a", "age": 3}), json!({"name": "b", "age": 3}), json!({"name": "c"})]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    keys: Vec<(Path, bool)>,
}

impl Sort {
    /// Parses a sort specification: an object of paths to `1` (ascending) or `-1` (descending).
    ///
    /// # Errors
    /// [`ErrorKind::Malformed`] when it is not an object, [`ErrorKind::WrongOperand`] for a direction other than
    /// `1`/`-1`, [`ErrorKind::BadPath`].
    pub fn parse(spec: &Value) -> Result<Self, JsonError> {
        let map = as_object(spec, "a sort")?;
        let keys = map
            .iter()
            .map(|(key, direction)| {
                let path = Path::parse(key)?;
                match direction.as_f64() {
                    Some(1.0) => Ok((path, false)),
                    Some(-1.0) => Ok((path, true)),
                    _ => Err(JsonError::new(
                        ErrorKind::WrongOperand,
                        key,
                        format!("a sort direction is 1 or -1, found {}", describe(direction)),
                    )),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// The paths and whether each sorts descending, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = (&Path, bool)> {
        self.keys
            .iter()
            .map(|(path, descending)| (path, *descending))
    }

    /// The order of two documents.
    pub fn compare<A: JsonRead + ?Sized, B: JsonRead + ?Sized>(&self, a: &A, b: &B) -> Ordering {
        for (path, descending) in &self.keys {
            let order = match (
                sort_value(path, a, *descending),
                sort_value(path, b, *descending),
            ) {
                (None, None) => Ordering::Equal,
                (None, Some(y)) => compare(&Value::Null, y),
                (Some(x), None) => compare(x, &Value::Null),
                (Some(x), Some(y)) => compare(x, y),
            };
            let order = if *descending { order.reverse() } else { order };
            if order.is_ne() {
                return order;
            }
        }
        Ordering::Equal
    }
}

/// The value a document sorts by on `path` (`None`: null).
fn sort_value<'a, V: JsonRead + ?Sized>(
    path: &Path,
    doc: &'a V,
    descending: bool,
) -> Option<&'a V> {
    let reach = path.lookup(doc);
    let mut candidates = reach
        .values
        .iter()
        .flat_map(|&v| {
            let is_array = v.kind() == Kind::Array;
            v.items().chain((!is_array).then_some(v)).map(Some)
        })
        .chain((reach.missing || reach.values.is_empty()).then_some(None));
    let first = candidates.next()?;
    let pick = |x: Option<&'a V>, y: Option<&'a V>| {
        let order = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(y)) => compare(&Value::Null, y),
            (Some(x), None) => compare(x, &Value::Null),
            (Some(x), Some(y)) => compare(x, y),
        };
        if order.is_gt() == descending { x } else { y }
    };
    candidates.fold(first, pick)
}

fn as_object<'a>(spec: &'a Value, what: &str) -> Result<&'a Map<String, Value>, JsonError> {
    spec.as_object().ok_or_else(|| {
        JsonError::new(
            ErrorKind::Malformed,
            "",
            format!("{what} must be an object, found {}", describe(spec)),
        )
    })
}

/// A projection: `{"name": 1, "address.city": 1}` keeps only those paths (inclusion), `{"history": 0}` drops them
/// (exclusion). The id field is kept unless the projection sets it to `0`; it is the one field that may be excluded
/// in an inclusion.
///
/// ```
/// use collection_store::json::Projection;
/// use serde_json::json;
///
/// let projection = Projection::parse(&json!({"name": 1, "address.city": 1}), "id").unwrap();
/// let doc = json!({"id": 7, "name": "Ann", "age": 30, "address": {"city": "Oslo", "zip": "0150"}});
/// assert_eq!(projection.project(&doc), json!({"id": 7, "name": "Ann", "address": {"city": "Oslo"}}));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    include: bool,
    paths: Vec<Vec<String>>,
    id_field: String,
    keep_id: bool,
}

impl Projection {
    /// Parses a projection for documents whose id field is `id_field`. `{}` keeps everything.
    ///
    /// # Errors
    /// [`ErrorKind::Malformed`] when it is not an object or mixes inclusion and exclusion,
    /// [`ErrorKind::WrongOperand`] for a value other than `0`/`1`/`true`/`false`, [`ErrorKind::Conflict`] for
    /// overlapping paths (`a` and `a.b`), [`ErrorKind::BadPath`].
    pub fn parse(spec: &Value, id_field: &str) -> Result<Self, JsonError> {
        let map = as_object(spec, "a projection")?;
        let mut projection = Self {
            include: false,
            paths: Vec::new(),
            id_field: id_field.to_owned(),
            keep_id: true,
        };
        let mut mode = None;
        let mut parsed: Vec<Path> = Vec::new();
        for (key, flag) in map {
            let flag = match flag {
                Value::Bool(b) => *b,
                Value::Number(n) if n.as_f64() == Some(0.0) || n.as_f64() == Some(1.0) => {
                    n.as_f64() == Some(1.0)
                }
                _ => {
                    return Err(JsonError::new(
                        ErrorKind::WrongOperand,
                        key,
                        format!(
                            "a projection value is 1/true (include) or 0/false (exclude), found {}",
                            describe(flag)
                        ),
                    ));
                }
            };
            if key == id_field {
                projection.keep_id = flag;
                continue;
            }
            let path = Path::parse(key)?;
            if *mode.get_or_insert(flag) != flag {
                return Err(JsonError::new(
                    ErrorKind::Malformed,
                    key,
                    "a projection either includes or excludes fields (besides the id field), not both",
                ));
            }
            if let Some(other) = parsed
                .iter()
                .find(|p| p.is_prefix_of(&path) || path.is_prefix_of(p))
            {
                return Err(JsonError::new(
                    ErrorKind::Conflict,
                    key,
                    format!("{key:?} overlaps {:?}", other.as_str()),
                ));
            }
            parsed.push(path);
        }
        projection.include = mode == Some(true);
        projection.paths = parsed
            .iter()
            .map(|p| p.segments().map(str::to_owned).collect())
            .collect();
        Ok(projection)
    }

    /// The projected copy of `doc` (a document that is not an object is returned whole).
    #[must_use]
    pub fn project(&self, doc: &Value) -> Value {
        let Value::Object(fields) = doc else {
            return doc.clone();
        };
        let mut out = if self.include {
            let paths: Vec<&[String]> = self.paths.iter().map(Vec::as_slice).collect();
            include(fields, &paths)
        } else {
            let mut out = fields.clone();
            for path in &self.paths {
                exclude(&mut out, path);
            }
            out
        };
        match (self.keep_id, fields.get(&self.id_field)) {
            (true, Some(id)) => {
                out.insert(self.id_field.clone(), id.clone());
            }
            _ => {
                out.remove(&self.id_field);
            }
        }
        Value::Object(out)
    }
}

/// The fields of `fields` that the paths reach, nested as in the document; arrays keep their object elements.
fn include(fields: &Map<String, Value>, paths: &[&[String]]) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in fields {
        let tails: Vec<&[String]> = paths
            .iter()
            .filter(|p| p[0] == *key)
            .map(|p| &p[1..])
            .collect();
        if tails.is_empty() {
            continue;
        }
        if tails.iter().any(|t| t.is_empty()) {
            out.insert(key.clone(), value.clone());
            continue;
        }
        let projected = match value {
            Value::Object(inner) => Value::Object(include(inner, &tails)),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .filter_map(|item| {
                        item.as_object()
                            .map(|inner| Value::Object(include(inner, &tails)))
                    })
                    .collect(),
            ),
            _ => continue,
        };
        out.insert(key.clone(), projected);
    }
    out
}

/// Removes what `path` reaches from `fields`, through arrays of objects.
fn exclude(fields: &mut Map<String, Value>, path: &[String]) {
    let [first, rest @ ..] = path else {
        return;
    };
    if rest.is_empty() {
        fields.remove(first);
        return;
    }
    match fields.get_mut(first) {
        Some(Value::Object(inner)) => exclude(inner, rest),
        Some(Value::Array(items)) => {
            for item in items {
                if let Value::Object(inner) = item {
                    exclude(inner, rest);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sorted(spec: Value, mut docs: Vec<Value>) -> Vec<Value> {
        let sort = Sort::parse(&spec).unwrap();
        docs.sort_by(|a, b| sort.compare(a, b));
        docs
    }

    #[test]
    fn sort_orders_by_type_then_value_with_missing_as_null() {
        let docs = vec![
            json!({"a": true}),
            json!({"a": "x"}),
            json!({"a": 2}),
            json!({}),
            json!({"a": 1.5}),
            json!({"a": null}),
        ];
        let ascending = sorted(json!({"a": 1}), docs.clone());
        assert_eq!(
            &ascending[2..],
            [
                json!({"a": 1.5}),
                json!({"a": 2}),
                json!({"a": "x"}),
                json!({"a": true})
            ]
        );
        assert!(
            ascending[..2]
                .iter()
                .all(|d| d.get("a").is_none_or(Value::is_null))
        );
        let descending = sorted(json!({"a": -1}), docs);
        assert_eq!(descending[0], json!({"a": true}));
    }

    #[test]
    fn sort_uses_the_least_array_element_ascending_and_the_greatest_descending() {
        let docs = vec![json!({"id": 1, "a": [1, 9]}), json!({"id": 2, "a": [5]})];
        let ids = |docs: Vec<Value>| docs.iter().map(|d| d["id"].clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(sorted(json!({"a": 1}), docs.clone())),
            [json!(1), json!(2)]
        );
        assert_eq!(
            ids(sorted(json!({"a": -1}), docs.clone())),
            [json!(1), json!(2)]
        );
        assert_eq!(
            ids(sorted(
                json!({"a": 1, "id": -1}),
                vec![json!({"id": 1, "a": 0}), json!({"id": 2, "a": 0.0})]
            )),
            [json!(2), json!(1)]
        );
    }

    #[test]
    fn sort_spec_errors() {
        let e = Sort::parse(&json!({"a": 2})).unwrap_err();
        assert_eq!(
            (e.kind, e.position.as_str()),
            (ErrorKind::WrongOperand, "a")
        );
        assert_eq!(
            Sort::parse(&json!([1])).unwrap_err().kind,
            ErrorKind::Malformed
        );
        assert_eq!(
            Sort::parse(&json!({"a.": 1})).unwrap_err().kind,
            ErrorKind::BadPath
        );
    }

    #[test]
    fn projection_includes_or_excludes_and_keeps_the_id() {
        let doc = json!({"_id": 1, "a": {"b": 1, "c": 2}, "xs": [{"b": 1, "c": 2}, 3], "d": 4});
        let project = |spec: Value| Projection::parse(&spec, "_id").unwrap().project(&doc);
        assert_eq!(
            project(json!({"a.b": 1, "xs.c": true})),
            json!({"_id": 1, "a": {"b": 1}, "xs": [{"c": 2}]})
        );
        assert_eq!(project(json!({"d": 1, "_id": 0})), json!({"d": 4}));
        assert_eq!(
            project(json!({"a.c": 0, "xs.b": 0, "d": 0})),
            json!({"_id": 1, "a": {"b": 1}, "xs": [{"c": 2}, 3]})
        );
        assert_eq!(
            project(json!({"_id": 0})),
            json!({"a": {"b": 1, "c": 2}, "xs": [{"b": 1, "c": 2}, 3], "d": 4})
        );
        assert_eq!(project(json!({})), doc);
        assert_eq!(project(json!({"a.z": 1})), json!({"_id": 1, "a": {}}));
    }

    #[test]
    fn projection_errors() {
        let err = |spec: Value| {
            let e = Projection::parse(&spec, "_id").unwrap_err();
            (e.kind, e.position)
        };
        assert_eq!(
            err(json!({"a": 1, "b": 0})),
            (ErrorKind::Malformed, "b".into())
        );
        assert_eq!(
            err(json!({"a": 1, "a.b": 1})),
            (ErrorKind::Conflict, "a.b".into())
        );
        assert_eq!(
            err(json!({"a": {"$slice": 1}})),
            (ErrorKind::WrongOperand, "a".into())
        );
        assert_eq!(err(json!({"a": 2})), (ErrorKind::WrongOperand, "a".into()));
        assert!(Projection::parse(&json!({"a": 1, "_id": 0}), "_id").is_ok());
    }
}
