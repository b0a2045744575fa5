//! Mongo-style query filters: parsing with positioned errors, matching over any [`JsonRead`], and the constraints an
//! index planner can use.
//!
//! Matching follows MongoDB. A condition on a path is tested against every value the path reaches ([`Path`]); where
//! a reached value is an array, it is tested against the array itself and against each of its elements. So
//! `{"tags": "red"}` matches `{"tags": ["red", "blue"]}`, and `{"tags": ["red", "blue"]}` matches it too (whole-array
//! equality). Comparisons (`$gt`, ...) only match values of the operand's type (`{"$gt": 5}` never matches a string).
//! `{"a": null}` matches a missing `a`; `$ne` and `$nin` match missing fields.
//!
//! Constraints ([`Filter::constraint`]) are **looser than the filter, never tighter**: every document the filter
//! matches has an index key (as [`crate::json::Reach::index_keys`] extracts them) inside the constraint, but not every
//! document with a key inside it matches. The filter must be re-checked on each candidate.

use std::cmp::Ordering;
use std::ops::Bound;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::compare::compare;
use super::path::{Path, Reach};
use super::value::{Json, JsonNumber, JsonObject, JsonRead, Kind, Num};
use super::{ErrorKind, JsonError, MAX_QUERY_DEPTH, MAX_REGEX_SIZE_BYTES, join};

/// A parsed query: a conjunction of conditions.
///
/// ```
/// use collection_store::json::Filter;
/// use serde_json::json;
///
/// let adults = Filter::parse(&json!({"$or": [{"age": {"$gte": 18}}, {"guardian": {"$exists": true}}]})).unwrap();
/// assert!(adults.matches(&json!({"age": 30})));
/// assert!(!adults.matches(&json!({"age": 12})));
/// let error = Filter::parse(&json!({"$and": [{}, {"age": {"$size": "x"}}]})).unwrap_err();
/// assert_eq!(error.position, "$and.1.age.$size");
/// ```
#[derive(Debug, Clone)]
pub struct Filter {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone)]
enum Clause {
    Field(Path, Vec<Pred>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Nor(Vec<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone)]
pub(crate) enum Pred {
    Eq(Json),
    Ne(Json),
    Range(RangeOp, Json),
    In(Vec<Json>),
    Nin(Vec<Json>),
    Exists(bool),
    Type(Vec<TypeName>),
    All(Vec<Json>),
    ElemMatch(Box<ElemMatch>),
    Size(usize),
    Regex(Regex),
    Mod { divisor: i128, remainder: i128 },
    Not(Vec<Pred>),
}

/// A condition on one array element: on the element as a value (`{"$gt": 1}`) or as a document (`{"a": 1}`).
#[derive(Debug, Clone)]
pub(crate) enum ElemMatch {
    Value(Vec<Pred>),
    Document(Filter),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeName {
    Null,
    Bool,
    Number,
    Int,
    Long,
    Double,
    String,
    Object,
    Array,
}

/// What a filter requires of one indexed path, for choosing index key ranges (see the module docs: looser than the
/// filter, never tighter).
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// The path's index key is one of these values (empty: no document matches).
    Eq(Vec<Json>),
    /// The path's index key lies between these bounds (in [`compare`] order; never empty).
    Range {
        /// The lower bound.
        lower: Bound<Json>,
        /// The upper bound.
        upper: Bound<Json>,
    },
}

impl Filter {
    /// Parses a query document.
    ///
    /// # Errors
    /// A [`JsonError`] whose position is the offending place in the query: [`ErrorKind::Malformed`] (not an object,
    /// operators mixed with fields), [`ErrorKind::UnknownOperator`], [`ErrorKind::WrongOperand`],
    /// [`ErrorKind::BadRegex`], [`ErrorKind::BadPath`], [`ErrorKind::TooDeep`].
    pub fn parse(query: &Value) -> Result<Self, JsonError> {
        parse_filter(query, "", 0)
    }

    /// Whether `doc` matches.
    pub fn matches<V: JsonRead + ?Sized>(&self, doc: &V) -> bool {
        self.clauses.iter().all(|clause| match clause {
            Clause::Field(path, preds) => {
                let reach = path.lookup(doc);
                preds.iter().all(|pred| pred.matches(&reach))
            }
            Clause::And(filters) => filters.iter().all(|f| f.matches(doc)),
            Clause::Or(filters) => filters.iter().any(|f| f.matches(doc)),
            Clause::Nor(filters) => !filters.iter().any(|f| f.matches(doc)),
        })
    }

    /// What the filter's top-level conjunction (its fields and `$and`s, not `$or`/`$nor`/`$not`) requires of the
    /// values at `path`: `$eq`, implicit equality, `$in` and `$all` give [`Constraint::Eq`]; `$gt`, `$gte`, `$lt`,
    /// `$lte` give [`Constraint::Range`] within the operand's type. `None` when nothing usable constrains `path`.
    ///
    /// `multikey` says whether any document may hold an array on `path`. If so, several conditions may be met by
    /// different elements (`{"a": {"$gt": 5, "$lt": 3}}` matches `{"a": [1, 9]}`), so only one condition is used;
    /// otherwise all are intersected.
    #[must_use]
    pub fn constraint(&self, path: &Path, multikey: bool) -> Option<Constraint> {
        let mut found = Vec::new();
        self.collect_constraints(path, &mut found);
        if multikey {
            let first_eq = found.iter().position(|c| matches!(c, Constraint::Eq(_)));
            return first_eq
                .or(if found.is_empty() { None } else { Some(0) })
                .map(|i| found.swap_remove(i));
        }
        intersect(found)
    }

    fn collect_constraints(&self, path: &Path, out: &mut Vec<Constraint>) {
        for clause in &self.clauses {
            match clause {
                Clause::Field(p, preds) if p == path => {
                    out.extend(preds.iter().filter_map(Pred::constraint))
                }
                Clause::And(filters) => filters
                    .iter()
                    .for_each(|f| f.collect_constraints(path, out)),
                _ => {}
            }
        }
    }
}

impl Constraint {
    /// The constraint for an index that lowercases strings (`ignore_case`): equality stays (compare the
    /// lowercased values), but lowercasing does not keep the byte order of strings, so a string bound widens to all
    /// strings.
    #[must_use]
    pub fn for_ignore_case(self) -> Self {
        match self {
            Self::Eq(values) => Self::Eq(values),
            Self::Range { lower, upper } => {
                let is_string = |b: &Bound<Json>| {
                    matches!(
                        b,
                        Bound::Included(Json::String(_)) | Bound::Excluded(Json::String(_))
                    )
                };
                Self::Range {
                    lower: if is_string(&lower) {
                        Bound::Included(Json::String(String::new()))
                    } else {
                        lower
                    },
                    upper: if is_string(&upper) {
                        Bound::Excluded(Json::Object(JsonObject::default()))
                    } else {
                        upper
                    },
                }
            }
        }
    }
}

/// The values reached and, for arrays among them, their elements: what a condition is tested against.
fn candidates<'r, 'a, V: JsonRead + ?Sized>(
    reach: &'r Reach<'a, V>,
) -> impl Iterator<Item = &'a V> + 'r {
    reach
        .values
        .iter()
        .flat_map(|&v| std::iter::once(v).chain(v.items()))
}

fn eq_match<V: JsonRead + ?Sized>(reach: &Reach<'_, V>, operand: &Json) -> bool {
    (reach.missing && matches!(operand, Json::Null))
        || candidates(reach).any(|v| compare(v, operand) == Ordering::Equal)
}

impl Pred {
    fn matches<V: JsonRead + ?Sized>(&self, reach: &Reach<'_, V>) -> bool {
        match self {
            Self::Eq(x) => eq_match(reach, x),
            Self::Ne(x) => !eq_match(reach, x),
            Self::Range(op, Json::Null) => {
                matches!(op, RangeOp::Gte | RangeOp::Lte) && eq_match(reach, &Json::Null)
            }
            Self::Range(op, x) => candidates(reach).any(|v| {
                v.kind() == x.kind() && {
                    let order = compare(v, x);
                    match op {
                        RangeOp::Gt => order.is_gt(),
                        RangeOp::Gte => order.is_ge(),
                        RangeOp::Lt => order.is_lt(),
                        RangeOp::Lte => order.is_le(),
                    }
                }
            }),
            Self::In(xs) => xs.iter().any(|x| eq_match(reach, x)),
            Self::Nin(xs) => !xs.iter().any(|x| eq_match(reach, x)),
            Self::Exists(exists) => reach.values.is_empty() != *exists,
            Self::Type(types) => candidates(reach).any(|v| types.iter().any(|t| t.matches(v))),
            Self::All(xs) => !xs.is_empty() && xs.iter().all(|x| eq_match(reach, x)),
            Self::ElemMatch(condition) => reach
                .values
                .iter()
                .any(|v| v.items().any(|item| condition.matches(item))),
            Self::Size(n) => reach.values.iter().any(|v| v.array_len() == Some(*n)),
            Self::Regex(re) => {
                candidates(reach).any(|v| v.as_str().is_some_and(|s| re.is_match(s)))
            }
            Self::Mod { divisor, remainder } => candidates(reach).any(|v| {
                v.as_number()
                    .is_some_and(|n| truncated(n) % divisor == *remainder)
            }),
            Self::Not(preds) => !preds.iter().all(|p| p.matches(reach)),
        }
    }

    fn constraint(&self) -> Option<Constraint> {
        match self {
            Self::Eq(x) => Some(Constraint::Eq(eq_keys(x))),
            Self::In(xs) => {
                let mut keys: Vec<Json> = xs.iter().flat_map(eq_keys).collect();
                keys.sort_by(compare);
                keys.dedup();
                Some(Constraint::Eq(keys))
            }
            Self::All(xs) => xs.first().map(|x| Constraint::Eq(eq_keys(x))),
            Self::Range(RangeOp::Gte | RangeOp::Lte, Json::Null) => {
                Some(Constraint::Eq(vec![Json::Null]))
            }
            Self::Range(_, Json::Null | Json::Array(_)) => None,
            Self::Range(op, x) => {
                let (type_lower, type_upper) = type_bracket(x.kind());
                Some(match op {
                    RangeOp::Gt => Constraint::Range {
                        lower: Bound::Excluded(x.clone()),
                        upper: type_upper,
                    },
                    RangeOp::Gte => Constraint::Range {
                        lower: Bound::Included(x.clone()),
                        upper: type_upper,
                    },
                    RangeOp::Lt => Constraint::Range {
                        lower: type_lower,
                        upper: Bound::Excluded(x.clone()),
                    },
                    RangeOp::Lte => Constraint::Range {
                        lower: type_lower,
                        upper: Bound::Included(x.clone()),
                    },
                })
            }
            _ => None,
        }
    }
}

/// The index keys a document equal to `x` (or holding `x` in an array) has: `x` itself, and for a non-empty array
/// its first element (a multikey index holds an array's elements, not the array).
fn eq_keys(x: &Json) -> Vec<Json> {
    match x {
        Json::Array(items) if !items.is_empty() => vec![x.clone(), items[0].clone()],
        _ => vec![x.clone()],
    }
}

/// The bounds of all values of one type (arrays excluded: ranges over them are not derived).
fn type_bracket(kind: Kind) -> (Bound<Json>, Bound<Json>) {
    match kind {
        Kind::Null | Kind::Number => (
            Bound::Excluded(Json::Null),
            Bound::Excluded(Json::String(String::new())),
        ),
        Kind::String => (
            Bound::Included(Json::String(String::new())),
            Bound::Excluded(Json::Object(JsonObject::default())),
        ),
        Kind::Object | Kind::Array => (
            Bound::Included(Json::Object(JsonObject::default())),
            Bound::Excluded(Json::Array(Vec::new())),
        ),
        Kind::Bool => (
            Bound::Included(Json::Bool(false)),
            Bound::Included(Json::Bool(true)),
        ),
    }
}

/// Whether bound `a` is tighter than `b` as a lower bound (`lower`) or as an upper bound.
fn tighter(a: &Bound<Json>, b: &Bound<Json>, lower: bool) -> bool {
    let (av, bv) = match (a, b) {
        (_, Bound::Unbounded) => return !matches!(a, Bound::Unbounded),
        (Bound::Unbounded, _) => return false,
        (Bound::Included(av) | Bound::Excluded(av), Bound::Included(bv) | Bound::Excluded(bv)) => {
            (av, bv)
        }
    };
    match compare(av, bv) {
        Ordering::Equal => matches!(a, Bound::Excluded(_)) && matches!(b, Bound::Included(_)),
        order => order.is_gt() == lower,
    }
}

fn within(v: &Json, lower: &Bound<Json>, upper: &Bound<Json>) -> bool {
    let above = match lower {
        Bound::Unbounded => true,
        Bound::Included(l) => compare(v, l).is_ge(),
        Bound::Excluded(l) => compare(v, l).is_gt(),
    };
    let below = match upper {
        Bound::Unbounded => true,
        Bound::Included(u) => compare(v, u).is_le(),
        Bound::Excluded(u) => compare(v, u).is_lt(),
    };
    above && below
}

fn intersect(found: Vec<Constraint>) -> Option<Constraint> {
    if found.is_empty() {
        return None;
    }
    let (mut eq, mut lower, mut upper) = (None::<Vec<Json>>, Bound::Unbounded, Bound::Unbounded);
    for constraint in found {
        match constraint {
            Constraint::Eq(values) => {
                eq = Some(match eq {
                    None => values,
                    Some(previous) => previous
                        .into_iter()
                        .filter(|v| values.contains(v))
                        .collect(),
                });
            }
            Constraint::Range { lower: l, upper: u } => {
                if tighter(&l, &lower, true) {
                    lower = l;
                }
                if tighter(&u, &upper, false) {
                    upper = u;
                }
            }
        }
    }
    if let Some(values) = eq {
        return Some(Constraint::Eq(
            values
                .into_iter()
                .filter(|v| within(v, &lower, &upper))
                .collect(),
        ));
    }
    let empty = match (&lower, &upper) {
        (Bound::Included(l), Bound::Included(u)) => compare(l, u).is_gt(),
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
            compare(l, u).is_ge()
        }
        _ => false,
    };
    Some(if empty {
        Constraint::Eq(Vec::new())
    } else {
        Constraint::Range { lower, upper }
    })
}

/// A number as an integer, floats truncated toward zero (as MongoDB's `$mod` does).
fn truncated(number: JsonNumber) -> i128 {
    match number.num() {
        Num::Int(i) => i,
        #[allow(clippy::cast_possible_truncation)]
        Num::Float(f) => f.trunc() as i128, // saturating
    }
}

impl ElemMatch {
    pub(crate) fn matches<V: JsonRead + ?Sized>(&self, item: &V) -> bool {
        match self {
            Self::Value(preds) => {
                let reach = Reach {
                    values: vec![item],
                    missing: false,
                };
                preds.iter().all(|p| p.matches(&reach))
            }
            Self::Document(filter) => item.kind() == Kind::Object && filter.matches(item),
        }
    }

    /// Parses the operand of `$elemMatch` or of an update's `$pull`: operators only (and no `$and`/`$or`/`$nor`)
    /// make a condition on the element's value, anything else a query on the element as a document.
    pub(crate) fn parse(
        map: &Map<String, Value>,
        position: &str,
        depth: usize,
    ) -> Result<Self, JsonError> {
        let value_form = !map.is_empty()
            && map
                .keys()
                .all(|k| k.starts_with('$') && !matches!(k.as_str(), "$and" | "$or" | "$nor"));
        if value_form {
            Ok(Self::Value(parse_operators(map, position, depth)?))
        } else {
            Ok(Self::Document(parse_filter_map(map, position, depth)?))
        }
    }
}

impl TypeName {
    fn parse(operand: &Value, position: &str) -> Result<Self, JsonError> {
        let by_name = |name: &str| {
            Some(match name {
                "null" => Self::Null,
                "bool" | "boolean" => Self::Bool,
                "number" => Self::Number,
                "int" => Self::Int,
                "long" => Self::Long,
                "double" => Self::Double,
                "string" => Self::String,
                "object" => Self::Object,
                "array" => Self::Array,
                _ => return None,
            })
        };
        // BSON type numbers.
        let by_number = |n: u64| {
            Some(match n {
                1 => Self::Double,
                2 => Self::String,
                3 => Self::Object,
                4 => Self::Array,
                8 => Self::Bool,
                10 => Self::Null,
                16 => Self::Int,
                18 => Self::Long,
                _ => return None,
            })
        };
        let found = match operand {
            Value::String(name) => by_name(name),
            Value::Number(n) => n.as_u64().and_then(by_number),
            _ => None,
        };
        found.ok_or_else(|| {
            JsonError::new(
                ErrorKind::WrongOperand,
                position,
                format!(
                    "$type needs a type name (null, bool, number, int, long, double, string, object, array) or BSON \
                     type number, found {}",
                    describe(operand)
                ),
            )
        })
    }

    fn matches<V: JsonRead + ?Sized>(self, v: &V) -> bool {
        let number = v.as_number();
        match self {
            Self::Null => v.kind() == Kind::Null,
            Self::Bool => v.kind() == Kind::Bool,
            Self::Number => number.is_some(),
            Self::Double => matches!(number, Some(JsonNumber::Float(_))),
            Self::Long => match number {
                Some(JsonNumber::PosInt(u)) => i64::try_from(u).is_ok(),
                Some(JsonNumber::NegInt(_)) => true,
                _ => false,
            },
            Self::Int => match number {
                Some(n @ (JsonNumber::PosInt(_) | JsonNumber::NegInt(_))) => {
                    i32::try_from(truncated(n)).is_ok()
                }
                _ => false,
            },
            Self::String => v.kind() == Kind::String,
            Self::Object => v.kind() == Kind::Object,
            Self::Array => v.kind() == Kind::Array,
        }
    }
}

/// A value's type and (shortened) text, for messages.
pub(crate) fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    let text = value.to_string();
    let text = if text.chars().count() > MAX_CHARS {
        format!("{}...", text.chars().take(MAX_CHARS).collect::<String>())
    } else {
        text
    };
    format!("{} {text}", JsonRead::kind(value).name())
}

fn too_deep(position: &str) -> JsonError {
    JsonError::new(
        ErrorKind::TooDeep,
        position,
        format!("nesting deeper than {MAX_QUERY_DEPTH} levels"),
    )
}

fn parse_filter(query: &Value, position: &str, depth: usize) -> Result<Filter, JsonError> {
    let Value::Object(map) = query else {
        return Err(JsonError::new(
            ErrorKind::Malformed,
            position,
            format!("a query must be an object, found {}", describe(query)),
        ));
    };
    parse_filter_map(map, position, depth)
}

fn parse_filter_map(
    map: &Map<String, Value>,
    position: &str,
    depth: usize,
) -> Result<Filter, JsonError> {
    if depth > MAX_QUERY_DEPTH {
        return Err(too_deep(position));
    }
    let mut clauses = Vec::with_capacity(map.len());
    for (key, operand) in map {
        let here = join(position, key);
        if !key.starts_with('$') {
            let path = Path::parse(key)
                .map_err(|e| JsonError::new(ErrorKind::BadPath, &here, e.message))?;
            clauses.push(Clause::Field(
                path,
                parse_condition(operand, &here, depth + 1)?,
            ));
            continue;
        }
        if !matches!(key.as_str(), "$and" | "$or" | "$nor") {
            return Err(JsonError::new(
                ErrorKind::UnknownOperator,
                &here,
                format!("{key} is not a top-level query operator (supported: $and, $or, $nor)"),
            ));
        }
        let items = match operand {
            Value::Array(items) if !items.is_empty() => items,
            _ => {
                return Err(JsonError::new(
                    ErrorKind::WrongOperand,
                    &here,
                    format!(
                        "{key} needs a non-empty array of queries, found {}",
                        describe(operand)
                    ),
                ));
            }
        };
        let filters = items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_filter(item, &join(&here, &i.to_string()), depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        clauses.push(match key.as_str() {
            "$and" => Clause::And(filters),
            "$or" => Clause::Or(filters),
            _ => Clause::Nor(filters),
        });
    }
    Ok(Filter { clauses })
}

/// The map of an operator object (`{"$gt": 1}`): an object with a key starting with `$`.
pub(crate) fn operator_map(value: &Value) -> Option<&Map<String, Value>> {
    value
        .as_object()
        .filter(|map| map.keys().any(|k| k.starts_with('$')))
}

fn parse_condition(operand: &Value, position: &str, depth: usize) -> Result<Vec<Pred>, JsonError> {
    match operator_map(operand) {
        Some(map) => parse_operators(map, position, depth),
        None => Ok(vec![Pred::Eq(Json::from(operand))]),
    }
}

fn parse_operators(
    map: &Map<String, Value>,
    position: &str,
    depth: usize,
) -> Result<Vec<Pred>, JsonError> {
    if depth > MAX_QUERY_DEPTH {
        return Err(too_deep(position));
    }
    if let Some(field) = map.keys().find(|k| !k.starts_with('$')) {
        return Err(JsonError::new(
            ErrorKind::Malformed,
            &join(position, field),
            format!(
                "{field:?} is a field among operators; to compare with a whole object, use $eq"
            ),
        ));
    }
    let mut preds = Vec::with_capacity(map.len());
    for (key, operand) in map {
        let here = join(position, key);
        let wrong = |what: &str| {
            JsonError::new(
                ErrorKind::WrongOperand,
                &here,
                format!("{key} needs {what}, found {}", describe(operand)),
            )
        };
        let array = || operand.as_array().ok_or_else(|| wrong("an array"));
        let json = || Json::from(operand);
        preds.push(match key.as_str() {
            "$eq" => Pred::Eq(json()),
            "$ne" => Pred::Ne(json()),
            "$gt" => Pred::Range(RangeOp::Gt, json()),
            "$gte" => Pred::Range(RangeOp::Gte, json()),
            "$lt" => Pred::Range(RangeOp::Lt, json()),
            "$lte" => Pred::Range(RangeOp::Lte, json()),
            "$in" => Pred::In(array()?.iter().map(Json::from).collect()),
            "$nin" => Pred::Nin(array()?.iter().map(Json::from).collect()),
            "$all" => Pred::All(array()?.iter().map(Json::from).collect()),
            "$exists" => match operand {
                Value::Bool(b) => Pred::Exists(*b),
                Value::Number(n) => Pred::Exists(n.as_f64() != Some(0.0)),
                _ => return Err(wrong("a boolean")),
            },
            "$type" => Pred::Type(match operand {
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| TypeName::parse(item, &join(&here, &i.to_string())))
                    .collect::<Result<_, _>>()?,
                _ => vec![TypeName::parse(operand, &here)?],
            }),
            "$elemMatch" => {
                let inner = operand.as_object().ok_or_else(|| wrong("an object"))?;
                Pred::ElemMatch(Box::new(ElemMatch::parse(inner, &here, depth + 1)?))
            }
            "$size" => Pred::Size(
                operand
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| wrong("a non-negative integer"))?,
            ),
            "$regex" => {
                let pattern = operand.as_str().ok_or_else(|| wrong("a string"))?;
                Pred::Regex(compile_regex(
                    pattern,
                    map.get("$options"),
                    position,
                    &here,
                )?)
            }
            "$options" if map.contains_key("$regex") => continue,
            "$options" => {
                return Err(JsonError::new(
                    ErrorKind::Malformed,
                    &here,
                    "$options without $regex",
                ));
            }
            "$mod" => {
                let numbers: Vec<JsonNumber> = match operand {
                    Value::Array(items) if items.len() == 2 => {
                        items.iter().filter_map(JsonRead::as_number).collect()
                    }
                    _ => Vec::new(),
                };
                match numbers[..] {
                    [d, r] if truncated(d) != 0 => Pred::Mod {
                        divisor: truncated(d),
                        remainder: truncated(r),
                    },
                    _ => {
                        return Err(wrong(
                            "[divisor, remainder], two numbers with a divisor that is not 0",
                        ));
                    }
                }
            }
            "$not" => {
                let inner = operator_map(operand)
                    .ok_or_else(|| wrong("an operator object such as {\"$gt\": 1}"))?;
                Pred::Not(parse_operators(inner, &here, depth + 1)?)
            }
            _ => {
                return Err(JsonError::new(
                    ErrorKind::UnknownOperator,
                    &here,
                    format!("{key} is not a supported query operator"),
                ));
            }
        });
    }
    Ok(preds)
}

fn compile_regex(
    pattern: &str,
    options: Option<&Value>,
    position: &str,
    here: &str,
) -> Result<Regex, JsonError> {
    let mut builder = RegexBuilder::new(pattern);
    builder.size_limit(MAX_REGEX_SIZE_BYTES);
    if let Some(options) = options {
        let at = join(position, "$options");
        let Value::String(flags) = options else {
            return Err(JsonError::new(
                ErrorKind::WrongOperand,
                &at,
                format!(
                    "$options needs a string of flags (i, m, s, x), found {}",
                    describe(options)
                ),
            ));
        };
        for flag in flags.chars() {
            match flag {
                'i' => builder.case_insensitive(true),
                'm' => builder.multi_line(true),
                's' => builder.dot_matches_new_line(true),
                'x' => builder.ignore_whitespace(true),
                _ => {
                    return Err(JsonError::new(
                        ErrorKind::WrongOperand,
                        &at,
                        format!("unknown regex flag {flag:?} (supported: i, m, s, x)"),
                    ));
                }
            };
        }
    }
    builder
        .build()
        .map_err(|e| JsonError::new(ErrorKind::BadRegex, here, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::tests::arb_value;
    use proptest::prelude::*;
    use serde_json::json;
    use std::ops::RangeBounds;

    fn check(query: Value, yes: &[Value], no: &[Value]) {
        let filter = Filter::parse(&query).unwrap();
        for doc in yes {
            assert!(filter.matches(doc), "{query} should match {doc}");
            let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&Json::from(doc)).unwrap();
            let archived =
                rkyv::access::<crate::json::ArchivedJson, rkyv::rancor::Error>(&archived).unwrap();
            assert!(
                filter.matches(archived),
                "{query} should match archived {doc}"
            );
        }
        for doc in no {
            assert!(!filter.matches(doc), "{query} should not match {doc}");
        }
    }

    fn error(query: Value) -> (ErrorKind, String) {
        let e = Filter::parse(&query).unwrap_err();
        assert!(!e.message.is_empty());
        (e.kind, e.position)
    }

    #[test]
    fn equality_matches_values_array_elements_and_whole_arrays() {
        check(
            json!({"a": 1}),
            &[json!({"a": 1}), json!({"a": 1.0}), json!({"a": [3, 1]})],
            &[
                json!({"a": 2}),
                json!({"a": "1"}),
                json!({}),
                json!({"a": [[1]]}),
            ],
        );
        check(
            json!({"a": [1, 2]}),
            &[json!({"a": [1, 2]}), json!({"a": [[1, 2], 3]})],
            &[json!({"a": [2, 1]}), json!({"a": 1})],
        );
        check(
            json!({"a": {"b": 1, "c": 2}}),
            &[json!({"a": {"c": 2, "b": 1}})],
            &[json!({"a": {"b": 1}})],
        );
        check(
            json!({"a.b": 2}),
            &[json!({"a": [{"b": 1}, {"b": 2}]}), json!({"a": {"b": [2]}})],
            &[json!({"a": 2})],
        );
        check(
            json!({"a.1": 2}),
            &[json!({"a": [1, 2]})],
            &[json!({"a": [2, 1]})],
        );
        check(
            json!({"a": 1, "b": 2}),
            &[json!({"a": 1, "b": 2})],
            &[json!({"a": 1})],
        );
        check(
            json!({"a": {"$eq": {"$x": 1}}}),
            &[json!({"a": {"$x": 1}})],
            &[json!({"a": 1})],
        );
    }

    #[test]
    fn null_matches_missing_and_ne_nin_match_missing() {
        check(
            json!({"a": null}),
            &[json!({}), json!({"a": null}), json!({"a": [1, null]})],
            &[json!({"a": 0}), json!({"a": []})],
        );
        check(
            json!({"a.b": null}),
            &[json!({"a": [{"b": 1}, {}]}), json!({"a": 5})],
            &[json!({"a": [{"b": 1}]})],
        );
        check(
            json!({"a": {"$ne": 1}}),
            &[json!({}), json!({"a": 2}), json!({"a": [2]})],
            &[json!({"a": [2, 1]}), json!({"a": 1})],
        );
        check(
            json!({"a": {"$nin": [1, 2]}}),
            &[json!({}), json!({"a": 3})],
            &[json!({"a": [3, 2]})],
        );
        check(
            json!({"a": {"$in": [1, "x"]}}),
            &[json!({"a": "x"}), json!({"a": [0, 1]})],
            &[json!({}), json!({"a": []})],
        );
        check(
            json!({"a": {"$in": [null]}}),
            &[json!({})],
            &[json!({"a": 1})],
        );
        check(
            json!({"a": {"$ne": null}}),
            &[json!({"a": 0})],
            &[json!({}), json!({"a": null})],
        );
    }

    #[test]
    fn comparisons_stay_within_the_operand_type_and_reach_into_arrays() {
        check(
            json!({"a": {"$gt": 5}}),
            &[json!({"a": 6}), json!({"a": 5.5}), json!({"a": [1, 9]})],
            &[
                json!({"a": 5}),
                json!({"a": "9"}),
                json!({"a": true}),
                json!({}),
            ],
        );
        check(
            json!({"a": {"$gte": 5}}),
            &[json!({"a": 5})],
            &[json!({"a": 4})],
        );
        check(
            json!({"a": {"$lt": "b"}}),
            &[json!({"a": "a"}), json!({"a": ""})],
            &[json!({"a": "b"}), json!({"a": 1}), json!({"a": null})],
        );
        check(
            json!({"a": {"$lte": 5}}),
            &[json!({"a": 5}), json!({"a": -1e9})],
            &[json!({"a": 5.01}), json!({"a": null})],
        );
        // Different elements may meet different conditions.
        check(
            json!({"a": {"$gt": 5, "$lt": 3}}),
            &[json!({"a": [1, 9]})],
            &[json!({"a": 4})],
        );
        check(
            json!({"a": {"$gte": null}}),
            &[json!({}), json!({"a": null})],
            &[json!({"a": 1})],
        );
        check(
            json!({"a": {"$gt": null}}),
            &[],
            &[json!({}), json!({"a": 1})],
        );
        check(
            json!({"a": {"$gt": [1]}}),
            &[json!({"a": [2]}), json!({"a": [1, 0]})],
            &[json!({"a": [0]}), json!({"a": 2})],
        );
    }

    #[test]
    fn logical_operators_combine_filters() {
        let docs = [json!({"a": 1}), json!({"a": 2}), json!({"b": 1})];
        check(
            json!({"$and": [{"a": {"$gt": 0}}, {"a": {"$lt": 2}}]}),
            &docs[..1],
            &docs[1..],
        );
        check(json!({"$or": [{"a": 2}, {"b": 1}]}), &docs[1..], &docs[..1]);
        check(
            json!({"$nor": [{"a": 2}, {"b": 1}]}),
            &docs[..1],
            &docs[1..],
        );
        check(
            json!({"a": {"$not": {"$gt": 1}}}),
            &[json!({"a": 1}), json!({"b": 1}), json!({"a": "x"})],
            &[json!({"a": 2})],
        );
    }

    #[test]
    fn element_and_array_operators() {
        check(
            json!({"a": {"$exists": true}}),
            &[json!({"a": null})],
            &[json!({})],
        );
        check(
            json!({"a.b": {"$exists": false}}),
            &[json!({"a": [1]}), json!({"a": {}})],
            &[json!({"a": [{}, {"b": 0}]})],
        );
        check(
            json!({"a": {"$exists": 1}}),
            &[json!({"a": 0})],
            &[json!({})],
        );
        check(
            json!({"a": {"$type": "string"}}),
            &[json!({"a": "x"}), json!({"a": [1, "x"]})],
            &[json!({"a": 1}), json!({})],
        );
        check(
            json!({"a": {"$type": "array"}}),
            &[json!({"a": []})],
            &[json!({"a": 1})],
        );
        check(
            json!({"a": {"$type": ["null", "bool"]}}),
            &[json!({"a": null}), json!({"a": false})],
            &[json!({})],
        );
        check(
            json!({"a": {"$type": "double"}}),
            &[json!({"a": 1.0})],
            &[json!({"a": 1})],
        );
        check(
            json!({"a": {"$type": "int"}}),
            &[json!({"a": -7})],
            &[json!({"a": 1.0}), json!({"a": 1_u64 << 40})],
        );
        check(
            json!({"a": {"$type": "long"}}),
            &[json!({"a": 1_u64 << 40})],
            &[json!({"a": u64::MAX})],
        );
        check(
            json!({"a": {"$type": 2}}),
            &[json!({"a": "s"})],
            &[json!({"a": 2})],
        );
        check(
            json!({"a": {"$all": [1, 2]}}),
            &[json!({"a": [2, 3, 1]})],
            &[json!({"a": [1]}), json!({"a": 1})],
        );
        check(json!({"a": {"$all": []}}), &[], &[json!({"a": []})]);
        check(
            json!({"a": {"$size": 2}}),
            &[json!({"a": [1, [2, 3]]})],
            &[json!({"a": [1]}), json!({"a": "ab"}), json!({})],
        );
        check(
            json!({"a": {"$elemMatch": {"$gt": 1, "$lt": 3}}}),
            &[json!({"a": [0, 2]})],
            &[json!({"a": [0, 4]}), json!({"a": 2})],
        );
        check(
            json!({"a": {"$elemMatch": {"b": 1, "c": {"$gt": 0}}}}),
            &[json!({"a": [{"b": 1, "c": 1}]})],
            &[json!({"a": [{"b": 1}, {"c": 1}]}), json!({"a": [1]})],
        );
        check(
            json!({"a": {"$mod": [3, 1]}}),
            &[json!({"a": 4}), json!({"a": 4.9}), json!({"a": [0, 7]})],
            &[json!({"a": 3}), json!({"a": -2})],
        );
        check(
            json!({"a": {"$mod": [3, -1]}}),
            &[json!({"a": -4})],
            &[json!({"a": 2})],
        );
    }

    #[test]
    fn regex_with_options() {
        check(
            json!({"a": {"$regex": "^ab"}}),
            &[json!({"a": "abc"}), json!({"a": ["x", "ab"]})],
            &[json!({"a": "ABc"}), json!({"a": 1})],
        );
        check(
            json!({"a": {"$regex": "^ab", "$options": "i"}}),
            &[json!({"a": "ABc"})],
            &[json!({"a": "xab"})],
        );
        check(
            json!({"a": {"$regex": "^b", "$options": "m"}}),
            &[json!({"a": "a\nb"})],
            &[json!({"a": "ab"})],
        );
        check(
            json!({"a": {"$regex": "a.b", "$options": "s"}}),
            &[json!({"a": "a\nb"})],
            &[json!({"a": "ab"})],
        );
        check(
            json!({"a": {"$regex": "a b # comment", "$options": "x"}}),
            &[json!({"a": "ab"})],
            &[json!({"a": "a b"})],
        );
        check(
            json!({"a": {"$not": {"$regex": "^a"}}}),
            &[json!({"a": "b"}), json!({})],
            &[json!({"a": "a"})],
        );
    }

    #[test]
    fn errors_name_their_position() {
        use ErrorKind::*;
        let at = |kind, position: &str| (kind, position.to_owned());
        assert_eq!(error(json!([1])), at(Malformed, ""));
        assert_eq!(error(json!({"$and": [{}, 3]})), at(Malformed, "$and.1"));
        assert_eq!(
            error(json!({"a": {"$gt": 1, "b": 2}})),
            at(Malformed, "a.b")
        );
        assert_eq!(
            error(json!({"a": {"$options": "i"}})),
            at(Malformed, "a.$options")
        );
        assert_eq!(error(json!({"$where": "1"})), at(UnknownOperator, "$where"));
        assert_eq!(
            error(json!({"a": {"$near": 1}})),
            at(UnknownOperator, "a.$near")
        );
        assert_eq!(error(json!({"$gt": 1})), at(UnknownOperator, "$gt"));
        assert_eq!(
            error(json!({"$and": [{}, {"age": {"$size": "x"}}]})),
            at(WrongOperand, "$and.1.age.$size")
        );
        assert_eq!(error(json!({"$or": []})), at(WrongOperand, "$or"));
        assert_eq!(error(json!({"a": {"$in": 1}})), at(WrongOperand, "a.$in"));
        assert_eq!(
            error(json!({"a": {"$size": -1}})),
            at(WrongOperand, "a.$size")
        );
        assert_eq!(
            error(json!({"a": {"$mod": [0, 1]}})),
            at(WrongOperand, "a.$mod")
        );
        assert_eq!(
            error(json!({"a": {"$type": ["string", "date"]}})),
            at(WrongOperand, "a.$type.1")
        );
        assert_eq!(
            error(json!({"a": {"$exists": "yes"}})),
            at(WrongOperand, "a.$exists")
        );
        assert_eq!(error(json!({"a": {"$not": 1}})), at(WrongOperand, "a.$not"));
        assert_eq!(
            error(json!({"a": {"$regex": 1}})),
            at(WrongOperand, "a.$regex")
        );
        assert_eq!(
            error(json!({"a": {"$regex": "x", "$options": "q"}})),
            at(WrongOperand, "a.$options")
        );
        assert_eq!(
            error(json!({"a": {"$regex": "(unclosed"}})),
            at(BadRegex, "a.$regex")
        );
        assert_eq!(error(json!({"a..b": 1})), at(BadPath, "a..b"));
        assert_eq!(
            error(json!({"a": {"$elemMatch": {"$gt": 1, "$foo": 1}}})),
            at(UnknownOperator, "a.$elemMatch.$foo")
        );
        let mut deep = json!(1);
        for _ in 0..=MAX_QUERY_DEPTH {
            deep = json!({"$not": deep});
        }
        assert_eq!(error(json!({"a": {"$not": deep}})).0, TooDeep);
        let e = Filter::parse(&json!({"a": {"$size": "x"}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "wrong operand at `a.$size`: $size needs a non-negative integer, found string \"x\""
        );
    }

    #[test]
    fn constraints_are_derived_from_the_top_level_conjunction() {
        let path = Path::parse("a").unwrap();
        let constraint =
            |q: Value, multikey| Filter::parse(&q).unwrap().constraint(&path, multikey);
        let j = |v: Value| Json::from(&v);
        assert_eq!(
            constraint(json!({"a": 1}), true),
            Some(Constraint::Eq(vec![j(json!(1))]))
        );
        assert_eq!(
            constraint(json!({"a": {"$in": [2, 1, 2.0]}}), true),
            Some(Constraint::Eq(vec![j(json!(1)), j(json!(2))]))
        );
        assert_eq!(
            constraint(json!({"a": [3, 4]}), true),
            Some(Constraint::Eq(vec![j(json!([3, 4])), j(json!(3))]))
        );
        assert_eq!(
            constraint(json!({"a": {"$gt": 5}}), true),
            Some(Constraint::Range {
                lower: Bound::Excluded(j(json!(5))),
                upper: Bound::Excluded(j(json!("")))
            })
        );
        let both = json!({"$and": [{"a": {"$gt": 5}}, {"a": {"$lte": 9}}], "b": 1});
        assert_eq!(
            constraint(both.clone(), false),
            Some(Constraint::Range {
                lower: Bound::Excluded(j(json!(5))),
                upper: Bound::Included(j(json!(9)))
            })
        );
        assert!(
            matches!(
                constraint(both, true),
                Some(Constraint::Range {
                    upper: Bound::Excluded(_),
                    ..
                })
            ),
            "one condition only"
        );
        assert_eq!(
            constraint(
                json!({"a": {"$in": [1, 7]}, "$and": [{"a": {"$gt": 5}}]}),
                false
            ),
            Some(Constraint::Eq(vec![j(json!(7))]))
        );
        assert_eq!(
            constraint(json!({"a": {"$gt": 5, "$lt": 1}}), false),
            Some(Constraint::Eq(vec![]))
        );
        assert_eq!(constraint(json!({"$or": [{"a": 1}]}), false), None);
        assert_eq!(constraint(json!({"a": {"$ne": 1}}), false), None);
        assert_eq!(constraint(json!({"b": 1}), false), None);
        assert_eq!(
            constraint(json!({"a": {"$lt": "m"}}), false).map(Constraint::for_ignore_case),
            Some(Constraint::Range {
                lower: Bound::Included(j(json!(""))),
                upper: Bound::Excluded(j(json!({})))
            })
        );
    }

    /// Random simple filters over the fields the random values use.
    fn arb_filter() -> impl Strategy<Value = Value> {
        let path = prop::sample::select(vec!["a", "b", "a.b", "a.0", "c.a"]);
        let op = prop::sample::select(vec![
            "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$size", "$type",
        ]);
        (path, op, arb_value()).prop_map(|(path, op, operand)| {
            let operand = match op {
                "$in" | "$nin" => json!([operand]),
                "$exists" => json!(operand.is_null()),
                "$size" => json!(operand.as_array().map_or(0, Vec::len)),
                "$type" => json!(JsonRead::kind(&operand).name()),
                _ => operand,
            };
            json!({path: {op: operand}})
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn archived_documents_convert_back_and_match_like_values(doc in arb_value(), query in arb_filter()) {
            let json = Json::from(&doc);
            prop_assert_eq!(json.to_value(), doc.clone());
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&json).unwrap();
            let archived = rkyv::access::<crate::json::ArchivedJson, rkyv::rancor::Error>(&bytes).unwrap();
            prop_assert_eq!(archived.to_value(), doc.clone());
            let filter = Filter::parse(&query).unwrap();
            prop_assert_eq!(filter.matches(&doc), filter.matches(archived));
            prop_assert_eq!(filter.matches(&doc), filter.matches(&json));
        }

        #[test]
        fn constraints_never_exclude_a_matching_document(
            (doc, query) in (arb_value(), arb_filter(), 0..3).prop_map(|(random, query, shape)| {
                // Documents built from the filter's operand, so that many of them match.
                let operand = query.as_object().unwrap().values().next().unwrap().as_object().unwrap().values().next().unwrap().clone();
                let doc = match shape { 0 => operand, 1 => json!([random, operand]), _ => random };
                (json!({"a": doc, "b": 1, "c": [{"a": doc}]}), query)
            })
        ) {
            let filter = Filter::parse(&query).unwrap();
            let path = Path::parse(query.as_object().unwrap().keys().next().unwrap()).unwrap();
            let keys = path.lookup(&doc).index_keys(false, false);
            let multikey = keys.len() > 1 || path.lookup(&doc).values.iter().any(|v| v.is_array());
            if let (true, Some(constraint)) = (filter.matches(&doc), filter.constraint(&path, multikey)) {
                let encode = |v: &Json| {
                    let mut out = Vec::new();
                    crate::json::encode_index_key(v, false, &mut out);
                    out
                };
                let inside = |key: &Vec<u8>| match &constraint {
                    Constraint::Eq(values) => values.iter().any(|v| &encode(v) == key),
                    Constraint::Range { lower, upper } => {
                        let lower = lower.as_ref().map(encode);
                        let upper = upper.as_ref().map(encode);
                        (lower, upper).contains(key)
                    }
                };
                prop_assert!(keys.iter().any(inside), "{} matches but has no key in {:?}", doc, constraint);
            }
        }
    }
}
