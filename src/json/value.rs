//! [`Json`]: an owned JSON value rkyv can archive, and [`JsonRead`], the read view queries run on.
//!
//! Invariant: the fields of a [`JsonObject`] (and so of an [`ArchivedJsonObject`] made from one) are sorted by key
//! bytes and their keys are unique. Every constructor keeps it, so field lookups are binary searches. Objects
//! therefore forget the order their fields were written in: `{"b":1,"a":2}` and `{"a":2,"b":1}` are one value.

use std::cmp::Ordering;

use rkyv::{Archive, Deserialize, Serialize};
use serde_json::Value;

use super::compare::compare;

/// The type of a JSON value. The variants are declared in MongoDB's comparison order (null < numbers < strings <
/// objects < arrays < booleans), which is the order of [`compare`] across types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `null`.
    Null,
    /// A number.
    Number,
    /// A string.
    String,
    /// An object.
    Object,
    /// An array.
    Array,
    /// `true` or `false`.
    Bool,
}

impl Kind {
    /// The name used in messages and by `$type` (`"null"`, `"number"`, `"string"`, `"object"`, `"array"`, `"bool"`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Number => "number",
            Self::String => "string",
            Self::Object => "object",
            Self::Array => "array",
            Self::Bool => "bool",
        }
    }
}

/// A JSON number, kept exactly as `serde_json` keeps it: a non-negative integer, a negative integer, or a finite
/// float. Equality and order are numeric and exact across the variants: `1 == 1.0`, and `u64::MAX` and
/// `u64::MAX - 1` differ although they are the same `f64`.
#[derive(Debug, Clone, Copy, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub enum JsonNumber {
    /// An integer `>= 0`.
    PosInt(u64),
    /// An integer `< 0`.
    NegInt(i64),
    /// A finite float (JSON has no NaN or infinity).
    Float(f64),
}

/// A number as one of two exactly comparable forms.
#[derive(Clone, Copy)]
pub(crate) enum Num {
    Int(i128),
    Float(f64),
}

impl JsonNumber {
    /// The number `serde_json` holds.
    #[must_use]
    pub fn from_serde(number: &serde_json::Number) -> Self {
        if let Some(u) = number.as_u64() {
            Self::PosInt(u)
        } else if let Some(i) = number.as_i64() {
            Self::NegInt(i)
        } else {
            Self::Float(number.as_f64().unwrap_or(0.0))
        }
    }

    /// The number as `serde_json` holds it, or `None` for a float that is not finite.
    #[must_use]
    pub fn to_serde(self) -> Option<serde_json::Number> {
        match self {
            Self::PosInt(u) => Some(u.into()),
            Self::NegInt(i) => Some(i.into()),
            Self::Float(f) => serde_json::Number::from_f64(f),
        }
    }

    /// The nearest `f64`.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(self) -> f64 {
        match self {
            Self::PosInt(u) => u as f64,
            Self::NegInt(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    /// Whether the number is held as an integer (not whether a float happens to be integral).
    #[must_use]
    pub fn is_integer(self) -> bool {
        !matches!(self, Self::Float(_))
    }

    pub(crate) fn num(self) -> Num {
        match self {
            Self::PosInt(u) => Num::Int(i128::from(u)),
            Self::NegInt(i) => Num::Int(i128::from(i)),
            Self::Float(f) => Num::Float(f),
        }
    }
}

/// 2^64 as an `f64`: every float at or above it is greater than every `u64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// -2^63 as an `f64`: every float below it is less than every `i64`.
const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

/// Exact comparison of an integer (an `i64` or a `u64`) with a float.
fn cmp_int_float(int: i128, float: f64) -> Ordering {
    if float.is_nan() {
        return Ordering::Less;
    }
    if float >= TWO_POW_64 {
        return Ordering::Less;
    }
    if float < MINUS_TWO_POW_63 {
        return Ordering::Greater;
    }
    let whole = float.trunc();
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i128; // exact: |whole| < 2^64
    int.cmp(&whole_int).then_with(|| {
        if float > whole {
            Ordering::Less
        } else if float < whole {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    })
}

impl Ord for JsonNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.num(), other.num()) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).reverse(),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b).unwrap_or_else(|| a.total_cmp(&b)),
        }
    }
}

impl PartialOrd for JsonNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for JsonNumber {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for JsonNumber {}

impl ArchivedJsonNumber {
    /// The number, out of the archive.
    #[must_use]
    pub fn to_native(&self) -> JsonNumber {
        match self {
            Self::PosInt(u) => JsonNumber::PosInt(u.to_native()),
            Self::NegInt(i) => JsonNumber::NegInt(i.to_native()),
            Self::Float(f) => JsonNumber::Float(f.to_native()),
        }
    }
}

/// An owned JSON value that rkyv can archive; its archived form is [`ArchivedJson`].
///
/// Equality is [`compare`]'s: numbers are equal when numerically equal, objects when they hold the same fields.
#[derive(Debug, Clone, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
// A recursive type: the derive's own bounds would recurse forever, so they are omitted on the recursive fields and
// replaced by the bounds `Vec` needs of the serializer, deserializer and validator.
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(JsonNumber),
    /// A string.
    String(String),
    /// An array.
    Array(#[rkyv(omit_bounds)] Vec<Json>),
    /// An object, its fields sorted by key.
    Object(#[rkyv(omit_bounds)] JsonObject),
}

/// The fields of a JSON object, sorted by key bytes, keys unique (the module invariant).
#[derive(Debug, Clone, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
pub struct JsonObject {
    #[rkyv(omit_bounds)]
    fields: Vec<(String, Json)>,
}

impl JsonObject {
    /// An object of these fields, sorted by key; of fields with one key, the last is kept (as a JSON parser would).
    #[must_use]
    pub fn from_fields(mut fields: Vec<(String, Json)>) -> Self {
        // Stable sort, then keep the last of each run of equal keys.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, Json)> = Vec::with_capacity(fields.len());
        for field in fields {
            match out.last_mut() {
                Some(last) if last.0 == field.0 => *last = field,
                _ => out.push(field),
            }
        }
        Self { fields: out }
    }

    /// The value of field `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.fields
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// Sets field `key`, keeping the fields sorted.
    pub fn insert(&mut self, key: String, value: Json) {
        match self.fields.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.fields[i].1 = value,
            Err(i) => self.fields.insert(i, (key, value)),
        }
    }

    /// The fields in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Json)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl ArchivedJsonObject {
    /// The value of field `key`: a binary search.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&ArchivedJson> {
        self.fields
            .binary_search_by(|field| field.0.as_str().cmp(key))
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// The fields in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &ArchivedJson)> {
        self.fields.iter().map(|field| (field.0.as_str(), &field.1))
    }

    /// The number of fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(JsonNumber::from_serde(n)),
            Value::String(s) => Self::String(s.clone()),
            Value::Array(items) => Self::Array(items.iter().map(Self::from).collect()),
            Value::Object(map) => Self::Object(JsonObject::from_fields(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from(v)))
                    .collect(),
            )),
        }
    }
}

fn number_value(number: JsonNumber) -> Value {
    number.to_serde().map_or(Value::Null, Value::Number)
}

impl Json {
    /// The value as a `serde_json::Value` (a float that is not finite becomes `null`, as JSON has no such number).
    #[must_use]
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => number_value(*n),
            Self::String(s) => Value::String(s.clone()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(object) => Value::Object(
                object
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl ArchivedJson {
    /// The archived value as a `serde_json::Value`.
    #[must_use]
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => number_value(n.to_native()),
            Self::String(s) => Value::String(s.as_str().to_owned()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(object) => Value::Object(
                object
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        compare(self, other) == Ordering::Equal
    }
}

impl Eq for Json {}

/// Read access to a JSON value, implemented for [`serde_json::Value`], [`Json`] and [`ArchivedJson`], so that paths,
/// queries, sorts and index keys work on each without conversion.
///
/// The accessors return `None` (or nothing) when the value is of another kind. [`JsonRead::entries`] yields the
/// fields in an unspecified order (key order for `Json` and `ArchivedJson`; the map's order for `Value`).
pub trait JsonRead {
    /// The value's type.
    fn kind(&self) -> Kind;
    /// The boolean, if this is one.
    fn as_bool(&self) -> Option<bool>;
    /// The number, if this is one.
    fn as_number(&self) -> Option<JsonNumber>;
    /// The string, if this is one.
    fn as_str(&self) -> Option<&str>;
    /// The number of items, if this is an array.
    fn array_len(&self) -> Option<usize>;
    /// The items, if this is an array (nothing otherwise).
    fn items(&self) -> impl Iterator<Item = &Self>;
    /// Item `index`, if this is an array that long.
    fn item(&self, index: usize) -> Option<&Self>;
    /// Field `key`, if this is an object that has it.
    fn get(&self, key: &str) -> Option<&Self>;
    /// The fields, if this is an object (nothing otherwise).
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)>;
    /// The value as a `serde_json::Value`.
    fn to_value(&self) -> Value;
}

impl JsonRead for Value {
    fn kind(&self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }
    fn as_bool(&self) -> Option<bool> {
        Value::as_bool(self)
    }
    fn as_number(&self) -> Option<JsonNumber> {
        Value::as_number(self).map(JsonNumber::from_serde)
    }
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn array_len(&self) -> Option<usize> {
        self.as_array().map(Vec::len)
    }
    fn items(&self) -> impl Iterator<Item = &Self> {
        self.as_array().into_iter().flatten()
    }
    fn item(&self, index: usize) -> Option<&Self> {
        self.as_array()?.get(index)
    }
    fn get(&self, key: &str) -> Option<&Self> {
        self.as_object()?.get(key)
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)> {
        self.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
}

macro_rules! read_json {
    ($t:ident, $num:expr) => {
        impl JsonRead for $t {
            fn kind(&self) -> Kind {
                match self {
                    Self::Null => Kind::Null,
                    Self::Bool(_) => Kind::Bool,
                    Self::Number(_) => Kind::Number,
                    Self::String(_) => Kind::String,
                    Self::Array(_) => Kind::Array,
                    Self::Object(_) => Kind::Object,
                }
            }
            fn as_bool(&self) -> Option<bool> {
                match self {
                    Self::Bool(b) => Some(*b),
                    _ => None,
                }
            }
            fn as_number(&self) -> Option<JsonNumber> {
                match self {
                    Self::Number(n) => Some($num(n)),
                    _ => None,
                }
            }
            fn as_str(&self) -> Option<&str> {
                match self {
                    Self::String(s) => Some(s.as_str()),
                    _ => None,
                }
            }
            fn array_len(&self) -> Option<usize> {
                match self {
                    Self::Array(items) => Some(items.len()),
                    _ => None,
                }
            }
            fn items(&self) -> impl Iterator<Item = &Self> {
                match self {
                    Self::Array(items) => items.as_slice(),
                    _ => &[],
                }
                .iter()
            }
            fn item(&self, index: usize) -> Option<&Self> {
                match self {
                    Self::Array(items) => items.get(index),
                    _ => None,
                }
            }
            fn get(&self, key: &str) -> Option<&Self> {
                match self {
                    Self::Object(object) => object.get(key),
                    _ => None,
                }
            }
            fn entries(&self) -> impl Iterator<Item = (&str, &Self)> {
                let object = match self {
                    Self::Object(object) => Some(object.iter()),
                    _ => None,
                };
                object.into_iter().flatten()
            }
            fn to_value(&self) -> Value {
                $t::to_value(self)
            }
        }
    };
}

read_json!(Json, |n: &JsonNumber| *n);
read_json!(ArchivedJson, ArchivedJsonNumber::to_native);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_a_document_serialized_validated_and_read_in_place() {
        fn is_document<T: crate::collection::Document>() {}
        is_document::<Json>();
        let doc =
            json!({"b": [1, -2, 2.5, "x", null, true], "a": {"z": {}, "y": []}, "": u64::MAX});
        let bytes = crate::collection::serialize(&Json::from(&doc)).unwrap();
        let bytes: &[u8] = &bytes;
        crate::collection::validate::<Json>(bytes).unwrap();
        let archived = crate::collection::archived::<Json>(bytes);
        assert_eq!(archived.to_value(), doc);
        assert_eq!(
            archived.get("").unwrap().as_number(),
            Some(JsonNumber::PosInt(u64::MAX))
        );
        assert_eq!(
            archived.get("b").unwrap().item(2).unwrap().as_number(),
            Some(JsonNumber::Float(2.5))
        );
        assert!(archived.get("c").is_none());
        assert!(crate::collection::validate::<Json>(&bytes[..bytes.len() - 16]).is_err());
    }

    #[test]
    fn object_fields_are_sorted_and_the_last_duplicate_wins() {
        let object = JsonObject::from_fields(vec![
            ("b".into(), Json::Null),
            ("a".into(), Json::Bool(false)),
            ("b".into(), Json::Bool(true)),
        ]);
        let keys: Vec<&str> = object.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(object.get("b"), Some(&Json::Bool(true)));
    }

    #[test]
    fn numbers_compare_exactly_across_representations() {
        use JsonNumber::*;
        assert_eq!(PosInt(1), Float(1.0));
        assert_eq!(NegInt(-3), Float(-3.0));
        assert!(PosInt(u64::MAX) > PosInt(u64::MAX - 1));
        assert!(PosInt(u64::MAX) < Float(TWO_POW_64));
        assert!(PosInt(1 << 53) < Float(9_007_199_254_740_993.0_f64.next_up()));
        assert!(NegInt(i64::MIN) == Float(MINUS_TWO_POW_63));
        assert!(NegInt(i64::MIN) > Float(MINUS_TWO_POW_63.next_down()));
        assert!(PosInt(2) > Float(1.5) && NegInt(-2) < Float(-1.5) && Float(-0.0) == PosInt(0));
    }
}
