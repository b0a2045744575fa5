//! Updates of JSON documents: Mongo-style operators ([`Update`]) and the seed's two whole-document styles
//! ([`deep_merge`], [`shallow_assign`]).
//!
//! Invariants: an update is all or nothing (on error the document is unchanged), and no update changes the
//! document's id field (the caller names it; a numerically equal value, `1` for `1.0`, is not a change).

use serde_json::{Map, Number, Value};

use super::compare::compare;
use super::path::Path;
use super::query::{ElemMatch, describe, operator_map};
use super::value::{Json, JsonNumber, JsonRead, Num};
use super::{ErrorKind, JsonError, join};

/// A parsed update: operators (`{"$set": {"a.b": 1}, "$inc": {"n": 1}}`) applied in order, or a whole replacement
/// document (an object without operators).
///
/// ```
/// use collection_store::json::Update;
/// use serde_json::json;
///
/// let update = Update::parse(&json!({"$set": {"address.city": "Oslo"}, "$inc": {"visits": 1}})).unwrap();
/// let mut doc = json!({"id": 1, "visits": 2});
/// update.apply(&mut doc, "id").unwrap();
/// assert_eq!(doc, json!({"id": 1, "visits": 3, "address": {"city": "Oslo"}}));
/// let error = Update::parse(&json!({"$inc": {"id": 1}})).unwrap().apply(&mut doc, "id").unwrap_err();
/// assert_eq!(error.position, "id");
/// ```
#[derive(Debug, Clone)]
pub struct Update {
    kind: UpdateKind,
}

#[derive(Debug, Clone)]
enum UpdateKind {
    Operators(Vec<Op>),
    Replace(Map<String, Value>),
}

#[derive(Debug, Clone)]
enum Op {
    Set(Path, Value),
    Unset(Path),
    Inc(Path, JsonNumber),
    Push(Path, Vec<Value>),
    AddToSet(Path, Vec<Value>),
    Pull(Path, Pull),
    Rename(Path, Path),
}

#[derive(Debug, Clone)]
enum Pull {
    Equal(Json),
    Matching(ElemMatch),
}

impl Update {
    /// Parses an update document.
    ///
    /// # Errors
    /// A [`JsonError`] positioned in the update (`$inc.n`): [`ErrorKind::Malformed`] (not an object, empty,
    /// operators mixed with fields), [`ErrorKind::UnknownOperator`], [`ErrorKind::WrongOperand`],
    /// [`ErrorKind::BadPath`], [`ErrorKind::Conflict`] (two paths overlap, e.g. `a` and `a.b`), and the errors of a
    /// `$pull` condition ([`crate::json::Filter::parse`]'s).
    pub fn parse(update: &Value) -> Result<Self, JsonError> {
        let Value::Object(map) = update else {
            return Err(JsonError::new(
                ErrorKind::Malformed,
                "",
                format!("an update must be an object, found {}", describe(update)),
            ));
        };
        if map.is_empty() {
            return Err(JsonError::new(
                ErrorKind::Malformed,
                "",
                "an update must not be empty",
            ));
        }
        let operators = map.keys().filter(|k| k.starts_with('$')).count();
        if operators == 0 {
            return Ok(Self {
                kind: UpdateKind::Replace(map.clone()),
            });
        }
        if let Some(field) = map.keys().find(|k| !k.starts_with('$')) {
            return Err(JsonError::new(
                ErrorKind::Malformed,
                field,
                format!(
                    "{field:?} is a field among update operators; use $set, or give a whole document"
                ),
            ));
        }
        let mut ops = Vec::new();
        let mut touched: Vec<(Path, String)> = Vec::new();
        for (operator, fields) in map {
            let Value::Object(fields) = fields else {
                return Err(JsonError::new(
                    ErrorKind::WrongOperand,
                    operator,
                    format!(
                        "{operator} needs an object of paths, found {}",
                        describe(fields)
                    ),
                ));
            };
            for (key, operand) in fields {
                let here = join(operator, key);
                let path = |text: &str| {
                    Path::parse(text)
                        .map_err(|e| JsonError::new(ErrorKind::BadPath, &here, e.message))
                };
                let target = path(key)?;
                let wrong = |what: &str| {
                    JsonError::new(
                        ErrorKind::WrongOperand,
                        &here,
                        format!("{operator} needs {what}, found {}", describe(operand)),
                    )
                };
                let op = match operator.as_str() {
                    "$set" => Op::Set(target.clone(), operand.clone()),
                    "$unset" => Op::Unset(target.clone()),
                    "$inc" => Op::Inc(
                        target.clone(),
                        JsonRead::as_number(operand).ok_or_else(|| wrong("a number"))?,
                    ),
                    "$push" => Op::Push(target.clone(), each(operand, &here)?),
                    "$addToSet" => Op::AddToSet(target.clone(), each(operand, &here)?),
                    "$pull" => Op::Pull(
                        target.clone(),
                        match operand {
                            Value::Object(condition) => {
                                Pull::Matching(ElemMatch::parse(condition, &here, 1)?)
                            }
                            _ => Pull::Equal(Json::from(operand)),
                        },
                    ),
                    "$rename" => {
                        let to = path(
                            operand
                                .as_str()
                                .ok_or_else(|| wrong("the new path as a string"))?,
                        )?;
                        touched.push((to.clone(), here.clone()));
                        Op::Rename(target.clone(), to)
                    }
                    _ => {
                        return Err(JsonError::new(
                            ErrorKind::UnknownOperator,
                            operator,
                            format!("{operator} is not a supported update operator"),
                        ));
                    }
                };
                touched.push((target, here));
                ops.push(op);
            }
        }
        for (i, (a, _)) in touched.iter().enumerate() {
            if let Some((b, at)) = touched[i + 1..]
                .iter()
                .find(|(b, _)| a.is_prefix_of(b) || b.is_prefix_of(a))
            {
                return Err(JsonError::new(
                    ErrorKind::Conflict,
                    at,
                    format!(
                        "{:?} and {:?} overlap; update each path once",
                        a.as_str(),
                        b.as_str()
                    ),
                ));
            }
        }
        Ok(Self {
            kind: UpdateKind::Operators(ops),
        })
    }

    /// Applies the update to `doc`, whose id field is `id_field`. A replacement keeps the id of `doc` when it has
    /// none of its own.
    ///
    /// # Errors
    /// A [`JsonError`] positioned at the document path: [`ErrorKind::NotTraversable`] (`$set` on `a.b` where `a`
    /// is a number, a field name into an array), [`ErrorKind::TypeMismatch`] (`$inc` on a string, `$push` on a
    /// non-array), [`ErrorKind::Overflow`], [`ErrorKind::IdChanged`], [`ErrorKind::Malformed`] when `doc` is not
    /// an object. `doc` is unchanged on error.
    pub fn apply(&self, doc: &mut Value, id_field: &str) -> Result<(), JsonError> {
        let mut next = document(doc, "the document")?.clone();
        match &self.kind {
            UpdateKind::Replace(replacement) => {
                let mut replaced = replacement.clone();
                if let (false, Some(id)) = (replaced.contains_key(id_field), next.get(id_field)) {
                    replaced.insert(id_field.to_owned(), id.clone());
                }
                next = replaced;
            }
            UpdateKind::Operators(ops) => {
                let mut value = Value::Object(next);
                for op in ops {
                    op.apply(&mut value)?;
                }
                next = match value {
                    Value::Object(map) => map,
                    _ => unreachable!("operators update fields inside the document"),
                };
            }
        }
        commit(doc, next, id_field)
    }
}

/// The values of a `$push`/`$addToSet` operand: `{"$each": [...]}` or one value.
fn each(operand: &Value, position: &str) -> Result<Vec<Value>, JsonError> {
    let Some(map) = operator_map(operand) else {
        return Ok(vec![operand.clone()]);
    };
    if let Some(other) = map.keys().find(|k| *k != "$each") {
        return Err(JsonError::new(
            ErrorKind::UnknownOperator,
            &join(position, other),
            format!("{other} is not supported here (only $each)"),
        ));
    }
    match &map["$each"] {
        Value::Array(items) => Ok(items.clone()),
        other => Err(JsonError::new(
            ErrorKind::WrongOperand,
            &join(position, "$each"),
            format!("$each needs an array, found {}", describe(other)),
        )),
    }
}

fn document<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, JsonError> {
    value.as_object().ok_or_else(|| {
        JsonError::new(
            ErrorKind::Malformed,
            "",
            format!("{what} must be an object, found {}", describe(value)),
        )
    })
}

/// Replaces `doc` by `next` unless the id field changed.
fn commit(doc: &mut Value, next: Map<String, Value>, id_field: &str) -> Result<(), JsonError> {
    let before = doc.get(id_field);
    let unchanged = match (before, next.get(id_field)) {
        (None, None) => true,
        (Some(a), Some(b)) => compare(a, b).is_eq(),
        _ => false,
    };
    if !unchanged {
        let show = |v: Option<&Value>| v.map_or_else(|| "nothing".to_owned(), describe);
        return Err(JsonError::new(
            ErrorKind::IdChanged,
            id_field,
            format!(
                "the id field is immutable: {} would become {}",
                show(before),
                show(next.get(id_field))
            ),
        ));
    }
    *doc = Value::Object(next);
    Ok(())
}

/// The last segment of `path`.
fn last(path: &Path) -> &str {
    path.segments().last().unwrap_or_default()
}

fn array_index(segment: &str) -> Option<usize> {
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        segment.parse().ok()
    } else {
        None
    }
}

fn not_traversable(path: &Path, depth: usize, value: &Value, op: &str) -> JsonError {
    let segment = path.segments().nth(depth).unwrap_or_default();
    let message = if value.is_array() {
        format!(
            "{op}: `{}` is an array, which has no field {segment:?}",
            path.prefix(depth)
        )
    } else {
        format!(
            "{op}: cannot create field {segment:?} in `{}`, which is {}",
            path.prefix(depth),
            describe(value)
        )
    };
    JsonError::new(ErrorKind::NotTraversable, path.as_str(), message)
}

/// The value holding the last segment of `path`: an object or an array, or another value (the caller reports it).
/// With `create`, missing objects on the way are created (and arrays padded with null); without, `None` where the
/// path is missing or blocked.
fn parent_mut<'a>(
    doc: &'a mut Value,
    path: &Path,
    create: bool,
    op: &str,
) -> Result<Option<&'a mut Value>, JsonError> {
    let mut current = doc;
    for (depth, segment) in path.segments().take(path.len() - 1).enumerate() {
        if blocks(current, segment) {
            return if create {
                Err(not_traversable(path, depth, current, op))
            } else {
                Ok(None)
            };
        }
        let next = match current {
            Value::Object(map) => {
                if create {
                    Some(
                        map.entry(segment)
                            .or_insert_with(|| Value::Object(Map::new())),
                    )
                } else {
                    map.get_mut(segment)
                }
            }
            Value::Array(items) => {
                let index = array_index(segment).expect("checked by blocks");
                if create && index >= items.len() {
                    items.resize(index, Value::Null);
                    items.push(Value::Object(Map::new()));
                }
                items.get_mut(index)
            }
            _ => unreachable!("checked by blocks"),
        };
        match next {
            Some(value) => current = value,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// Whether `segment` cannot be looked up in `value`: a scalar, or an array and a segment that is no index.
fn blocks(value: &Value, segment: &str) -> bool {
    match value {
        Value::Object(_) => false,
        Value::Array(_) => array_index(segment).is_none(),
        _ => true,
    }
}

/// The slot of the last segment of `path` in `parent`, created as null when `create` (so the caller can fill it).
fn slot_mut<'a>(
    parent: &'a mut Value,
    path: &Path,
    create: bool,
    op: &str,
) -> Result<Option<&'a mut Value>, JsonError> {
    let key = last(path);
    if blocks(parent, key) {
        return if create {
            Err(not_traversable(path, path.len() - 1, parent, op))
        } else {
            Ok(None)
        };
    }
    Ok(match parent {
        Value::Object(map) => {
            if create {
                Some(map.entry(key).or_insert(Value::Null))
            } else {
                map.get_mut(key)
            }
        }
        Value::Array(items) => {
            let index = array_index(key).expect("checked by blocks");
            if create && index >= items.len() {
                items.resize(index + 1, Value::Null);
            }
            items.get_mut(index)
        }
        _ => unreachable!("checked by blocks"),
    })
}

fn mismatch(path: &Path, op: &str, needs: &str, found: &Value) -> JsonError {
    JsonError::new(
        ErrorKind::TypeMismatch,
        path.as_str(),
        format!("{op} needs {needs}, found {}", describe(found)),
    )
}

fn add(a: JsonNumber, b: JsonNumber) -> Option<Number> {
    match (a.num(), b.num()) {
        (Num::Int(x), Num::Int(y)) => {
            let sum = x + y; // i128: no overflow for 64-bit operands
            u64::try_from(sum)
                .map(Number::from)
                .or_else(|_| i64::try_from(sum).map(Number::from))
                .ok()
        }
        _ => Number::from_f64(a.as_f64() + b.as_f64()),
    }
}

/// The value at `path`, if the document has one.
fn existing_mut<'a>(doc: &'a mut Value, path: &Path) -> Option<&'a mut Value> {
    let parent = parent_mut(doc, path, false, "").ok().flatten()?;
    slot_mut(parent, path, false, "").ok().flatten()
}

/// The value at `path`, created (as null, with objects on the way) if missing.
fn create_mut<'a>(doc: &'a mut Value, path: &Path, op: &str) -> Result<&'a mut Value, JsonError> {
    let parent = parent_mut(doc, path, true, op)?.expect("created");
    Ok(slot_mut(parent, path, true, op)?.expect("created"))
}

impl Op {
    fn apply(&self, doc: &mut Value) -> Result<(), JsonError> {
        match self {
            Self::Set(path, value) => *create_mut(doc, path, "$set")? = value.clone(),
            Self::Unset(path) => match parent_mut(doc, path, false, "$unset")? {
                Some(Value::Object(map)) => {
                    map.remove(last(path));
                }
                Some(Value::Array(items)) => {
                    // As MongoDB: an array element is set to null, so the positions of the others stay.
                    if let Some(item) = array_index(last(path)).and_then(|i| items.get_mut(i)) {
                        *item = Value::Null;
                    }
                }
                _ => {}
            },
            Self::Inc(path, by) => {
                let overflow = || {
                    JsonError::new(
                        ErrorKind::Overflow,
                        path.as_str(),
                        "$inc: the result does not fit a 64-bit number",
                    )
                };
                match existing_mut(doc, path) {
                    Some(Value::Number(n)) => {
                        *n = add(JsonNumber::from_serde(n), *by).ok_or_else(overflow)?
                    }
                    Some(other) => return Err(mismatch(path, "$inc", "a number", other)),
                    None => {
                        *create_mut(doc, path, "$inc")? =
                            Value::Number(by.to_serde().ok_or_else(overflow)?)
                    }
                }
            }
            Self::Push(path, values) | Self::AddToSet(path, values) => {
                let op = if matches!(self, Self::Push(..)) {
                    "$push"
                } else {
                    "$addToSet"
                };
                if existing_mut(doc, path).is_none() {
                    *create_mut(doc, path, op)? = Value::Array(Vec::new());
                }
                let items = match existing_mut(doc, path) {
                    Some(Value::Array(items)) => items,
                    Some(other) => return Err(mismatch(path, op, "an array", other)),
                    None => unreachable!("created above"),
                };
                for value in values {
                    if matches!(self, Self::Push(..))
                        || !items.iter().any(|item| compare(item, value).is_eq())
                    {
                        items.push(value.clone());
                    }
                }
            }
            Self::Pull(path, condition) => match existing_mut(doc, path) {
                Some(Value::Array(items)) => items.retain(|item| match condition {
                    Pull::Equal(x) => compare(item, x).is_ne(),
                    Pull::Matching(m) => !m.matches(item),
                }),
                Some(other) => return Err(mismatch(path, "$pull", "an array", other)),
                None => {}
            },
            Self::Rename(from, to) => {
                let taken = match parent_mut(doc, from, false, "$rename")? {
                    Some(Value::Object(map)) => map.remove(last(from)),
                    Some(Value::Array(_)) => {
                        return Err(JsonError::new(
                            ErrorKind::NotTraversable,
                            from.as_str(),
                            format!(
                                "$rename: `{}` is an array; $rename does not reach into arrays",
                                from.prefix(from.len() - 1)
                            ),
                        ));
                    }
                    _ => None,
                };
                if let Some(value) = taken {
                    *create_mut(doc, to, "$rename")? = value;
                }
            }
        }
        Ok(())
    }
}

/// Merges `patch` into `target` as the seed's default update did (lodash `merge`): objects merge field by field,
/// recursively; **arrays merge by index** (`["a", "b"]` patched with `["z"]` gives `["z", "b"]`); any other patch
/// value replaces the target value (`null` included). Both must be objects.
///
/// # Errors
/// [`ErrorKind::Malformed`] when either is not an object, [`ErrorKind::IdChanged`] when the patch changes the id
/// field `id_field`. `target` is unchanged on error.
pub fn deep_merge(target: &mut Value, patch: &Value, id_field: &str) -> Result<(), JsonError> {
    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (key, value) in p {
                    match t.get_mut(key) {
                        Some(existing) => merge(existing, value),
                        None => {
                            t.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            (Value::Array(t), Value::Array(p)) => {
                for (i, value) in p.iter().enumerate() {
                    match t.get_mut(i) {
                        Some(existing) => merge(existing, value),
                        None => t.push(value.clone()),
                    }
                }
            }
            (target, patch) => *target = patch.clone(),
        }
    }
    document(patch, "a patch")?;
    let mut next = Value::Object(document(target, "the document")?.clone());
    merge(&mut next, patch);
    let Value::Object(next) = next else {
        unreachable!("merging objects gives an object")
    };
    commit(target, next, id_field)
}

/// Assigns the top-level fields of `patch` to `target` (JavaScript's `Object.assign`, the seed's update with
/// `merge = false`). Both must be objects.
///
/// # Errors
/// As [`deep_merge`].
pub fn shallow_assign(target: &mut Value, patch: &Value, id_field: &str) -> Result<(), JsonError> {
    let patch = document(patch, "a patch")?;
    let mut next = document(target, "the document")?.clone();
    next.extend(patch.iter().map(|(k, v)| (k.clone(), v.clone())));
    commit(target, next, id_field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn updated(update: Value, mut doc: Value) -> Value {
        Update::parse(&update)
            .unwrap()
            .apply(&mut doc, "_id")
            .unwrap();
        doc
    }

    fn apply_error(update: Value, doc: Value) -> (ErrorKind, String) {
        let mut changed = doc.clone();
        let e = Update::parse(&update)
            .unwrap()
            .apply(&mut changed, "_id")
            .unwrap_err();
        assert_eq!(changed, doc, "unchanged on error");
        (e.kind, e.position)
    }

    fn parse_error(update: Value) -> (ErrorKind, String) {
        let e = Update::parse(&update).unwrap_err();
        (e.kind, e.position)
    }

    #[test]
    fn set_and_unset_create_and_remove_paths() {
        assert_eq!(
            updated(json!({"$set": {"a.b.c": 1, "x": [1]}}), json!({"_id": 1})),
            json!({"_id": 1, "a": {"b": {"c": 1}}, "x": [1]})
        );
        assert_eq!(
            updated(
                json!({"$set": {"xs.1": 9, "ys.2.a": 1}}),
                json!({"xs": [0, 1], "ys": []})
            ),
            json!({"xs": [0, 9], "ys": [null, null, {"a": 1}]})
        );
        assert_eq!(
            updated(
                json!({"$unset": {"a.b": "", "xs.0": 1, "nope.x": 1}}),
                json!({"a": {"b": 1, "c": 2}, "xs": [1, 2]})
            ),
            json!({"a": {"c": 2}, "xs": [null, 2]})
        );
    }

    #[test]
    fn inc_adds_exactly_and_refuses_non_numbers() {
        assert_eq!(
            updated(
                json!({"$inc": {"n": 2, "m": -1.5, "big": 1}}),
                json!({"n": 1, "big": i64::MAX})
            ),
            json!({"n": 3, "m": -1.5, "big": 9_223_372_036_854_775_808_u64})
        );
        assert_eq!(
            updated(json!({"$inc": {"n": 0.5}}), json!({"n": 1})),
            json!({"n": 1.5})
        );
        assert_eq!(
            apply_error(json!({"$inc": {"a.s": 1}}), json!({"a": {"s": "x"}})),
            (ErrorKind::TypeMismatch, "a.s".into())
        );
        assert_eq!(
            apply_error(json!({"$inc": {"n": 1}}), json!({"n": u64::MAX})),
            (ErrorKind::Overflow, "n".into())
        );
    }

    #[test]
    fn push_add_to_set_and_pull_edit_arrays() {
        assert_eq!(
            updated(
                json!({"$push": {"a": 1, "b": {"$each": [1, 2]}, "c": {"x": 1}}}),
                json!({"a": [0]})
            ),
            json!({"a": [0, 1], "b": [1, 2], "c": [{"x": 1}]})
        );
        assert_eq!(
            updated(
                json!({"$addToSet": {"a": {"$each": [1, 2.0, 3, 3]}}}),
                json!({"a": [1, 2]})
            ),
            json!({"a": [1, 2, 3]})
        );
        assert_eq!(
            updated(
                json!({"$pull": {"a": 2, "b": {"$gte": 5}, "c": {"k": 1}}}),
                json!({"a": [1, 2, 2.0], "b": [4, 5, 6], "c": [{"k": 1, "z": 0}, {"k": 2}, 1]})
            ),
            json!({"a": [1], "b": [4], "c": [{"k": 2}, 1]})
        );
        assert_eq!(
            updated(json!({"$pull": {"missing": 1}}), json!({})),
            json!({})
        );
        assert_eq!(
            apply_error(json!({"$push": {"a": 1}}), json!({"a": {}})),
            (ErrorKind::TypeMismatch, "a".into())
        );
        assert_eq!(
            apply_error(json!({"$pull": {"a": 1}}), json!({"a": 1})),
            (ErrorKind::TypeMismatch, "a".into())
        );
    }

    #[test]
    fn rename_moves_a_value() {
        assert_eq!(
            updated(
                json!({"$rename": {"a.b": "c", "none": "d"}}),
                json!({"a": {"b": 1}})
            ),
            json!({"a": {}, "c": 1})
        );
        assert_eq!(
            apply_error(json!({"$rename": {"xs.0": "y"}}), json!({"xs": [1]})),
            (ErrorKind::NotTraversable, "xs.0".into())
        );
    }

    #[test]
    fn paths_through_scalars_and_arrays_are_errors_naming_the_path() {
        let (kind, position) = apply_error(json!({"$set": {"a.b.c": 1}}), json!({"a": {"b": 5}}));
        assert_eq!(
            (kind, position.as_str()),
            (ErrorKind::NotTraversable, "a.b.c")
        );
        let e = Update::parse(&json!({"$set": {"a.b": 1}}))
            .unwrap()
            .apply(&mut json!({"a": 5}), "_id")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "path not traversable at `a.b`: $set: cannot create field \"b\" in `a`, which is number 5"
        );
        assert_eq!(
            apply_error(json!({"$set": {"xs.name": 1}}), json!({"xs": []})),
            (ErrorKind::NotTraversable, "xs.name".into())
        );
        assert_eq!(
            apply_error(json!({"$inc": {"a.b": 1}}), json!({"a": null})),
            (ErrorKind::NotTraversable, "a.b".into())
        );
        assert_eq!(
            updated(json!({"$unset": {"a.b": 1}}), json!({"a": 5})),
            json!({"a": 5}),
            "unset of a missing path is a no-op"
        );
    }

    #[test]
    fn the_id_field_cannot_change() {
        let doc = json!({"_id": 1, "a": 1});
        assert_eq!(
            apply_error(json!({"$set": {"_id": 2}}), doc.clone()),
            (ErrorKind::IdChanged, "_id".into())
        );
        assert_eq!(
            apply_error(json!({"$unset": {"_id": 1}}), doc.clone()),
            (ErrorKind::IdChanged, "_id".into())
        );
        assert_eq!(
            apply_error(json!({"_id": 2, "a": 2}), doc.clone()),
            (ErrorKind::IdChanged, "_id".into())
        );
        assert_eq!(
            updated(json!({"$set": {"_id": 1.0, "a": 2}}), doc.clone()),
            json!({"_id": 1.0, "a": 2})
        );
        assert_eq!(
            updated(json!({"b": 2}), doc.clone()),
            json!({"_id": 1, "b": 2}),
            "a replacement keeps the id"
        );
        let mut target = doc.clone();
        assert_eq!(
            deep_merge(&mut target, &json!({"_id": 3}), "_id")
                .unwrap_err()
                .kind,
            ErrorKind::IdChanged
        );
        assert_eq!(
            shallow_assign(&mut target, &json!({"_id": 3}), "_id")
                .unwrap_err()
                .kind,
            ErrorKind::IdChanged
        );
        assert_eq!(target, doc);
    }

    #[test]
    fn parse_errors_name_their_position() {
        use ErrorKind::*;
        assert_eq!(parse_error(json!([])), (Malformed, String::new()));
        assert_eq!(parse_error(json!({})), (Malformed, String::new()));
        assert_eq!(
            parse_error(json!({"$set": {"a": 1}, "b": 2})),
            (Malformed, "b".into())
        );
        assert_eq!(
            parse_error(json!({"$max": {"a": 1}})),
            (UnknownOperator, "$max".into())
        );
        assert_eq!(
            parse_error(json!({"$set": 1})),
            (WrongOperand, "$set".into())
        );
        assert_eq!(
            parse_error(json!({"$inc": {"a": "1"}})),
            (WrongOperand, "$inc.a".into())
        );
        assert_eq!(
            parse_error(json!({"$rename": {"a": 1}})),
            (WrongOperand, "$rename.a".into())
        );
        assert_eq!(
            parse_error(json!({"$push": {"a": {"$each": 1}}})),
            (WrongOperand, "$push.a.$each".into())
        );
        assert_eq!(
            parse_error(json!({"$push": {"a": {"$each": [], "$slice": 1}}})),
            (UnknownOperator, "$push.a.$slice".into())
        );
        assert_eq!(
            parse_error(json!({"$pull": {"a": {"$size": "x"}}})),
            (WrongOperand, "$pull.a.$size".into())
        );
        assert_eq!(
            parse_error(json!({"$set": {"a..b": 1}})),
            (BadPath, "$set.a..b".into())
        );
        assert_eq!(
            parse_error(json!({"$set": {"a": 1}, "$inc": {"a.b": 1}})),
            (Conflict, "$set.a".into())
        );
        assert_eq!(
            parse_error(json!({"$rename": {"a": "b"}, "$set": {"b": 1}})),
            (Conflict, "$set.b".into())
        );
    }

    #[test]
    fn deep_merge_merges_objects_and_arrays_by_index_like_the_seed() {
        let mut doc = json!({"id": 1, "a": {"x": 1, "y": 2}, "tags": ["a", "b"], "n": 1});
        deep_merge(
            &mut doc,
            &json!({"a": {"y": 3, "z": null}, "tags": ["z"], "n": {"k": 1}}),
            "id",
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"id": 1, "a": {"x": 1, "y": 3, "z": null}, "tags": ["z", "b"], "n": {"k": 1}})
        );
        shallow_assign(&mut doc, &json!({"a": {"q": 1}}), "id").unwrap();
        assert_eq!(doc["a"], json!({"q": 1}));
        assert_eq!(
            deep_merge(&mut doc, &json!(1), "id").unwrap_err().kind,
            ErrorKind::Malformed
        );
    }
}
