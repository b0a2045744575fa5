//! The total order over JSON values, and the index-key encoding that sorts the same way.
//!
//! Order ([`compare`]), after MongoDB's BSON comparison order restricted to JSON's types:
//! 1. across types: null < numbers < strings < objects < arrays < booleans ([`Kind`]'s order);
//! 2. numbers by exact numeric value, whatever their representation: `1 == 1.0 == -0.0 + 1`, and distinct
//!    integers beyond 2^53 stay distinct;
//! 3. strings by their UTF-8 bytes (which is also code point order);
//! 4. arrays element by element, a proper prefix first;
//! 5. objects field by field in key order, comparing the key (bytes), then the value; a proper prefix first;
//! 6. `false < true`.
//!
//! Encoding contract ([`encode_index_key`]): for all values `a`, `b`,
//! `compare(a, b) == encode(a).cmp(&encode(b))`, and no encoding is a proper prefix of another, so encodings can be
//! concatenated into composite keys (as `collection::key` does for tuples). [`encode_index_key_desc`] reverses the
//! order and stays prefix-free. Layout: a type tag byte, then
//! - numbers: the nearest `f64` in an order-preserving 8-byte form, then 2 bytes of exact difference between the
//!   number and that `f64` (an integer of at most ±2^10 for 64-bit integers; 0 for floats), so numerically equal
//!   numbers encode equally and different ones never collide;
//! - strings: the bytes with `0x00` escaped as `0x00 0xFF`, ended by `0x00 0x00` (as `collection::key`);
//! - booleans: one byte, 0 or 1;
//! - arrays: each element's encoding, then a `0x00` terminator (below every tag);
//! - objects: for each field in key order `0x01`, the key as a string, the value's encoding; then `0x00`.

use std::cmp::Ordering;

use smallvec::SmallVec;

use super::value::{JsonNumber, JsonRead, Kind, Num};
use crate::collection::IndexKey;

const TAG_NULL: u8 = 0x10;
const TAG_NUMBER: u8 = 0x20;
const TAG_STRING: u8 = 0x30;
const TAG_OBJECT: u8 = 0x40;
const TAG_ARRAY: u8 = 0x50;
const TAG_BOOL: u8 = 0x60;
/// Ends an array or an object; below every tag and below [`FIELD`].
const END: u8 = 0x00;
/// Starts each field of an object.
const FIELD: u8 = 0x01;

/// The fields of an object value in key order (a `serde_json` map may keep insertion order).
pub(crate) fn sorted_entries<V: JsonRead + ?Sized>(value: &V) -> SmallVec<[(&str, &V); 8]> {
    let mut entries: SmallVec<[(&str, &V); 8]> = value.entries().collect();
    if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    entries
}

/// The total order of JSON values (see the module docs): MongoDB's type order, numbers numerically and exactly.
#[must_use]
pub fn compare<A: JsonRead + ?Sized, B: JsonRead + ?Sized>(a: &A, b: &B) -> Ordering {
    let kind = a.kind();
    kind.cmp(&b.kind()).then_with(|| match kind {
        Kind::Null => Ordering::Equal,
        Kind::Bool => a.as_bool().cmp(&b.as_bool()),
        Kind::Number => a.as_number().cmp(&b.as_number()),
        Kind::String => a.as_str().cmp(&b.as_str()),
        Kind::Array => {
            let (mut x, mut y) = (a.items(), b.items());
            loop {
                match (x.next(), y.next()) {
                    (None, None) => return Ordering::Equal,
                    (None, Some(_)) => return Ordering::Less,
                    (Some(_), None) => return Ordering::Greater,
                    (Some(p), Some(q)) => match compare(p, q) {
                        Ordering::Equal => {}
                        unequal => return unequal,
                    },
                }
            }
        }
        Kind::Object => {
            let (x, y) = (sorted_entries(a), sorted_entries(b));
            for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
                match ka.cmp(kb).then_with(|| compare(*va, *vb)) {
                    Ordering::Equal => {}
                    unequal => return unequal,
                }
            }
            x.len().cmp(&y.len())
        }
    })
}

/// Appends the order-preserving, prefix-free encoding of `value` to `out` (the contract is in the module docs).
///
/// With `ignore_case`, every string value (not object keys) is lowercased (Unicode) first: the encoding is then that
/// of the lowercased value, so it is consistent with [`compare`] of lowercased values.
pub fn encode_index_key<V: JsonRead + ?Sized>(value: &V, ignore_case: bool, out: &mut Vec<u8>) {
    match value.kind() {
        Kind::Null => out.push(TAG_NULL),
        Kind::Bool => out.extend_from_slice(&[TAG_BOOL, u8::from(value.as_bool() == Some(true))]),
        Kind::Number => {
            out.push(TAG_NUMBER);
            if let Some(number) = value.as_number() {
                encode_number(number, out);
            }
        }
        Kind::String => {
            out.push(TAG_STRING);
            let s = value.as_str().unwrap_or_default();
            if ignore_case {
                s.to_lowercase().encode_key(out);
            } else {
                s.encode_key(out);
            }
        }
        Kind::Array => {
            out.push(TAG_ARRAY);
            for item in value.items() {
                encode_index_key(item, ignore_case, out);
            }
            out.push(END);
        }
        Kind::Object => {
            out.push(TAG_OBJECT);
            for (key, field) in sorted_entries(value) {
                out.push(FIELD);
                key.encode_key(out);
                encode_index_key(field, ignore_case, out);
            }
            out.push(END);
        }
    }
}

/// Appends an encoding of `value` that sorts in the **reverse** order of [`encode_index_key`]: its bitwise
/// complement. Because the ascending encodings are prefix-free, two distinct ones differ at some byte inside both,
/// and complementing reverses that byte's order; the complements are prefix-free too, so a descending field can be
/// followed by further fields of a composite key.
pub fn encode_index_key_desc<V: JsonRead + ?Sized>(
    value: &V,
    ignore_case: bool,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    encode_index_key(value, ignore_case, out);
    for byte in &mut out[start..] {
        *byte = !*byte;
    }
}

fn encode_number(number: JsonNumber, out: &mut Vec<u8>) {
    let (nearest, difference) = match number.num() {
        Num::Int(int) => {
            #[allow(clippy::cast_precision_loss)]
            let nearest = int as f64; // rounds to nearest: monotonic
            #[allow(clippy::cast_possible_truncation)]
            let back = nearest as i128; // exact: |nearest| <= 2^64
            (nearest, int - back)
        }
        // -0.0 == 0.0 must encode equally.
        Num::Float(float) => (if float == 0.0 { 0.0 } else { float }, 0),
    };
    let bits = nearest.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    out.extend_from_slice(&ordered.to_be_bytes());
    debug_assert!(i16::try_from(difference).is_ok(), "{number:?}");
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let difference = (difference as i16 as u16) ^ (1 << 15);
    out.extend_from_slice(&difference.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::tests::{arb_number, arb_value};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn key(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_index_key(value, false, &mut out);
        out
    }

    fn desc(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_index_key_desc(value, false, &mut out);
        out
    }

    #[test]
    fn types_follow_mongo_order_and_numbers_compare_exactly() {
        let sorted = [
            json!(null),
            json!(-1.5),
            json!(-1),
            json!(0),
            json!(1),
            json!(9_007_199_254_740_993_u64),
            json!(u64::MAX - 1),
            json!(u64::MAX),
            json!(1e20),
            json!(""),
            json!("\u{0}"),
            json!("a"),
            json!("ab"),
            json!("b"),
            json!({}),
            json!({"a": 1}),
            json!({"a": 1, "b": 1}),
            json!({"a": 2}),
            json!({"b": 0}),
            json!([]),
            json!([null]),
            json!([1, 2]),
            json!([2]),
            json!(false),
            json!(true),
        ];
        for pair in sorted.windows(2) {
            assert_eq!(compare(&pair[0], &pair[1]), Ordering::Less, "{pair:?}");
            assert!(key(&pair[0]) < key(&pair[1]), "{pair:?}");
            assert!(desc(&pair[0]) > desc(&pair[1]), "{pair:?}");
        }
        // Integers that share their nearest f64 (2^64) with differences of both signs, and that f64 itself.
        let near = [
            json!(u64::MAX - 1024),
            json!(u64::MAX - 1),
            json!(u64::MAX),
            json!(18446744073709551616.0),
        ];
        assert!(near.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        assert_eq!(compare(&json!(1), &json!(1.0)), Ordering::Equal);
        assert_eq!(key(&json!(1)), key(&json!(1.0)));
        assert_eq!(key(&json!(0)), key(&json!(-0.0)));
        assert_eq!(
            key(&json!({"b": 1, "a": [2]})),
            key(&json!({"a": [2.0], "b": 1.0}))
        );
    }

    #[test]
    fn ignore_case_encodes_the_lowercased_value() {
        let mut upper = Vec::new();
        encode_index_key(&json!({"K": ["ÀB", 1]}), true, &mut upper);
        assert_eq!(
            upper,
            key(&json!({"K": ["àb", 1]})),
            "values lowercased, keys kept"
        );
    }

    #[test]
    fn descending_fields_compose_with_later_fields() {
        // (desc a, asc b): ordered by a descending, then b ascending, even when one a is a prefix of another.
        let composite = |a: &Value, b: &Value| {
            let mut out = Vec::new();
            encode_index_key_desc(a, false, &mut out);
            encode_index_key(b, false, &mut out);
            out
        };
        let keys = [
            composite(&json!([1]), &json!(9)),
            composite(&json!([]), &json!(0)),
            composite(&json!("ab"), &json!(1)),
            composite(&json!("a"), &json!(0)),
            composite(&json!("a"), &json!(5)),
            composite(&json!(-1), &json!(0)),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn encoding_order_is_compare_order(a in arb_value(), b in arb_value()) {
            let order = compare(&a, &b);
            prop_assert_eq!(order, compare(&b, &a).reverse());
            prop_assert_eq!(key(&a).cmp(&key(&b)), order);
            prop_assert_eq!(desc(&a).cmp(&desc(&b)), order.reverse());
            // Prefix-free: a composite (x, suffix) orders by x first.
            let (mut ka, mut kb) = (key(&a), key(&b));
            ka.push(0xFF);
            kb.push(0x00);
            if order != Ordering::Equal {
                prop_assert_eq!(ka.cmp(&kb), order);
            }
        }

        #[test]
        fn number_encoding_order_is_numeric_order(a in arb_number(), b in arb_number()) {
            prop_assert_eq!(key(&a).cmp(&key(&b)), compare(&a, &b));
        }
    }
}
