//! Shared test helpers: random JSON values for the property tests.

use proptest::prelude::*;
use serde_json::{Value, json};

/// Random JSON values, biased towards collisions: few distinct keys and strings, integers next to floats of equal
/// value, and integers near 2^53 and 2^64 where `f64` loses precision.
pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
    let string = prop::sample::select(vec!["", "a", "A", "ab", "b", "\u{0}", "a\u{0}", "é", "É"])
        .prop_map(Value::from);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        string
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c", ""]), inner, 0..4)
                .prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
        ]
    })
}

/// Random JSON numbers, dense where integers and floats collide.
pub(crate) fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        (-3i64..4).prop_map(|i| json!(i as f64)),
        prop::sample::select(vec![
            0.5,
            -0.5,
            1.5,
            -0.0,
            1e20,
            -1e20,
            9007199254740992.0,
            18446744073709551616.0
        ])
        .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..2048).prop_map(|d| Value::from(u64::MAX - d)),
        (0u64..8).prop_map(|d| Value::from((1u64 << 53) + d)),
        (0u64..4096).prop_map(|d| Value::from(u64::MAX - d)),
        (0u64..8).prop_map(|d| json!(((1u64 << 53) + 2 * d) as f64)),
        (0i64..2048).prop_map(|d| Value::from(i64::MIN + d)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

#[test]
fn malformed_text_is_refused_with_its_line_and_column() {
    let e = super::parse("{\"a\": 1,\n  \"b\": }").unwrap_err();
    assert_eq!(e.kind, super::ErrorKind::Malformed);
    assert_eq!(e.position, "line 2 column 8");
    assert!(e.message.contains("expected value"), "{e}");
    let e = super::parse("[1, 2").unwrap_err();
    assert!(e.message.contains("ends before"), "{e}");
    assert_eq!(
        super::parse(" {\"a\": [1]} ").unwrap(),
        serde_json::json!({"a": [1]})
    );
}
