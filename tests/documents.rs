//! JSON document collections: CRUD and ids, the query planner against a scan and against a reference evaluator
//! written here, index maintenance under random transactions with rollbacks and reopens, live index changes, TTL,
//! rotation, and bad input.
//!
//! Settings (environment): `DOCS_PLANNER_CASES` (default 48), `DOCS_INDEX_CASES` (default 24).

mod common;

use std::time::Duration;

use collection_store::Patch;
use collection_store::documents::{IdGenerator, IndexSpec, Source};
use collection_store::{Database, Definition, Documents, Error, Options, Query};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

fn open(dir: &std::path::Path) -> Database {
    Database::open(dir, Options::default()).unwrap()
}

fn values(docs: &[&collection_store::json::ArchivedJson]) -> Vec<Value> {
    docs.iter().map(|d| d.to_value()).collect()
}

fn insert_all(db: &Database, docs: &Documents, values: &[Value]) -> Vec<Value> {
    let mut tx = db.begin();
    let ids = values
        .iter()
        .map(|v| docs.insert(&mut tx, v.clone()).unwrap())
        .collect();
    tx.commit().unwrap();
    ids
}

#[test]
fn crud_with_auto_ids_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        let users = db
            .create_documents(
                "users",
                Definition::default()
                    .index(IndexSpec::on("email").unique())
                    .index(IndexSpec::on("address.city")),
            )
            .unwrap();
        let ids = insert_all(
            &db,
            &users,
            &[
                json!({"name": "Ann", "email": "ann@x.io", "address": {"city": "Oslo"}, "age": 31}),
                json!({"name": "Bob", "email": "bob@x.io", "address": {"city": "Rome"}, "age": 25}),
                json!({"name": "Cid", "email": "cid@x.io", "age": 40}),
            ],
        );
        assert_eq!(ids, vec![json!(0), json!(1), json!(2)]);
        let snap = db.read();
        let bob = users.get(&snap, &json!(1)).unwrap().unwrap();
        assert_eq!(bob.to_value()["name"], "Bob");
        assert_eq!(bob.to_value()["id"], 1);

        let mut tx = db.begin();
        let changed = users
            .update(
                &mut tx,
                &json!({"age": {"$lt": 35}}),
                &Patch::Operators(json!({"$inc": {"age": 1}, "$set": {"tags": ["a"]}})),
            )
            .unwrap();
        assert_eq!(changed, 2);
        users
            .update(
                &mut tx,
                &json!({"id": 2}),
                &Patch::Merge(json!({"address": {"city": "Lima"}})),
            )
            .unwrap();
        assert!(users.delete_id(&mut tx, &json!(0)).unwrap());
        tx.commit().unwrap();
    }
    let db = open(dir.path());
    let users = db.documents("users").unwrap();
    let snap = db.read();
    let all = users.find_json(&snap, &Query::new(json!({}))).unwrap();
    assert_eq!(
        all,
        vec![
            json!({"id": 1, "name": "Bob", "email": "bob@x.io", "address": {"city": "Rome"}, "age": 26, "tags": ["a"]}),
            json!({"id": 2, "name": "Cid", "email": "cid@x.io", "age": 40, "address": {"city": "Lima"}}),
        ]
    );
    let lima = users
        .find_json(&snap, &Query::new(json!({"address.city": "Lima"})))
        .unwrap();
    assert_eq!(lima.len(), 1);
    let plan = users
        .explain(&snap, &Query::new(json!({"address.city": "Lima"})))
        .unwrap();
    assert_eq!(plan.index.as_deref(), Some("address.city"));
    assert_eq!(plan.examined, 1);
    // The next auto id continues after the largest row.
    let ids = insert_all(&db, &users, &[json!({"email": "dan@x.io"})]);
    assert_eq!(ids, vec![json!(3)]);
    snap.check_indexes(&users.collection()).unwrap();
}

#[test]
fn explicit_and_generated_ids() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let labels = db
        .create_documents(
            "labels",
            Definition::default()
                .id_field("code")
                .ids(IdGenerator::Uuid),
        )
        .unwrap();
    let ids = insert_all(
        &db,
        &labels,
        &[json!({"title": "a"}), json!({"code": "L1", "title": "b"})],
    );
    assert_eq!(ids[0].as_str().unwrap().len(), 36, "a UUID: {}", ids[0]);
    assert_eq!(ids[1], json!("L1"));
    let mut tx = db.begin();
    let again = labels.insert(&mut tx, json!({"code": "L1"})).unwrap_err();
    assert!(
        matches!(&again, Error::UniqueViolation { index, key, .. } if index == "_id" && key.contains("L1")),
        "{again}"
    );
    drop(tx);

    let events = db
        .create_documents("events", Definition::default().ids(IdGenerator::Timestamp))
        .unwrap();
    let ids = insert_all(&db, &events, &[json!({}), json!({}), json!({})]);
    let ids: Vec<u64> = ids.iter().map(|i| i.as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Auto-increment skips an id a document brought itself.
    let items = db.create_documents("items", Definition::default()).unwrap();
    let ids = insert_all(&db, &items, &[json!({"id": 1}), json!({}), json!({})]);
    assert_eq!(ids, vec![json!(1), json!(2), json!(3)]);

    db.create_documents("custom", Definition::default().ids(IdGenerator::Custom))
        .unwrap();
    let custom = db.documents("custom").unwrap();
    let mut tx = db.begin();
    assert!(matches!(
        custom.insert(&mut tx, json!({})),
        Err(Error::InvalidOptions(_))
    ));
    drop(tx);
    let next = std::sync::atomic::AtomicU64::new(0);
    let custom = db
        .documents_with_generator("custom", move || {
            json!(format!(
                "C{}",
                next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
        })
        .unwrap();
    assert_eq!(insert_all(&db, &custom, &[json!({})]), vec![json!("C0")]);
}

#[test]
fn index_kinds_and_violations() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let users = db
        .create_documents(
            "users",
            Definition::default()
                .index(IndexSpec::on("email").unique().required())
                .index(IndexSpec::on("nick").sparse().unique())
                .index(IndexSpec::on("name").ignore_case().unique())
                .index(IndexSpec::on("dept").then("age", true).named("dept_age")),
        )
        .unwrap();
    insert_all(
        &db,
        &users,
        &[
            json!({"email": "a@x", "name": "Ann", "dept": "ops", "age": 30}),
            json!({"email": "b@x", "name": "Bob", "dept": "ops", "age": 40, "nick": "bo"}),
            json!({"email": "c@x", "name": "Cid", "dept": "dev", "age": 35}),
        ],
    );
    let mut tx = db.begin();
    let missing = users.insert(&mut tx, json!({"name": "Dan"})).unwrap_err();
    assert!(
        matches!(&missing, Error::MissingField { index, path, .. } if index == "email" && path == "email"),
        "{missing}"
    );
    users
        .insert(&mut tx, json!({"email": "d@x", "name": "ANN"}))
        .unwrap();
    let err = tx.commit().unwrap_err();
    assert!(
        matches!(&err, Error::UniqueViolation { index, key, .. } if index == "name" && key.contains("name = \"ANN\"")),
        "{err}"
    );
    // Two documents without a nick do not collide in the sparse unique index.
    insert_all(&db, &users, &[json!({"email": "e@x", "name": "Eve"})]);

    let snap = db.read();
    let q = Query::new(json!({"dept": "ops"})).sort(json!({"age": -1}));
    let names: Vec<Value> = users
        .find_json(&snap, &q)
        .unwrap()
        .into_iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("Bob"), json!("Ann")]);
    assert_eq!(
        users.explain(&snap, &q).unwrap().index.as_deref(),
        Some("dept_age")
    );
    // Ignore-case index: candidates by lowercase, results by the exact filter.
    let q = Query::new(json!({"name": "ann"}));
    assert_eq!(
        users.explain(&snap, &q).unwrap().index.as_deref(),
        Some("name")
    );
    assert!(users.find(&snap, &q).unwrap().is_empty());
    assert_eq!(
        users
            .find(&snap, &Query::new(json!({"name": "Ann"})))
            .unwrap()
            .len(),
        1
    );
    // A sparse index cannot answer for missing fields.
    let q = Query::new(json!({"nick": null}));
    assert_eq!(users.explain(&snap, &q).unwrap().strategy, "scan");
    assert_eq!(users.count(&snap, &json!({"nick": null})).unwrap(), 3);
    snap.check_indexes(&users.collection()).unwrap();
}

#[test]
fn bad_input_gets_typed_errors_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        dir.path(),
        Options {
            max_document_bytes: 4096,
            ..Options::default()
        },
    )
    .unwrap();
    let docs = db.create_documents("d", Definition::default()).unwrap();
    insert_all(&db, &docs, &[json!({"a": 1, "n": 5})]);
    let snap = db.read();
    let find = |filter: Value| docs.find(&snap, &Query::new(filter)).unwrap_err();
    let e = find(json!({"a": {"$bogus": 1}}));
    assert!(
        matches!(&e, Error::Json(j) if j.to_string().contains("$bogus")),
        "{e}"
    );
    let e = find(json!({"a": {"$size": "x"}}));
    assert!(
        matches!(&e, Error::Json(j) if j.to_string().contains("$size")),
        "{e}"
    );
    let e = find(json!({"a": {"$regex": "("}}));
    assert!(
        matches!(&e, Error::Json(j) if j.to_string().contains("regex")),
        "{e}"
    );
    let e = find(json!({"$and": [{"a": 1}, {"b": {"$size": -1}}]}));
    assert!(
        matches!(&e, Error::Json(j) if j.to_string().contains("$and.1")),
        "{e}"
    );

    let mut tx = db.begin();
    let e = docs
        .update(
            &mut tx,
            &json!({}),
            &Patch::Operators(json!({"$set": {"n.x": 1}})),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Json(j) if j.to_string().contains("n.x")),
        "{e}"
    );
    let e = docs
        .update(
            &mut tx,
            &json!({}),
            &Patch::Operators(json!({"$inc": {"a": "x"}})),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Json(_)), "{e}");
    let e = docs
        .update(
            &mut tx,
            &json!({}),
            &Patch::Operators(json!({"$set": {"id": 9}})),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Json(_)), "{e}");
    let e = docs.insert(&mut tx, json!([1, 2])).unwrap_err();
    assert!(matches!(e, Error::Json(_)), "{e}");
    let e = docs
        .insert(&mut tx, json!({"big": "x".repeat(5000)}))
        .unwrap_err();
    assert!(matches!(e, Error::DocumentTooLarge { .. }), "{e}");
    let e = docs.insert(&mut tx, json!({"id": {"no": 1}})).unwrap_err();
    assert!(matches!(e, Error::Json(_)), "{e}");
    // Too deep to compare, encode or validate without deep recursion: refused where it comes in.
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let e = docs
        .insert(&mut tx, json!({ "d": deep.clone() }))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Json(j) if j.to_string().contains("deep")),
        "{e}"
    );
    let e = docs
        .update(
            &mut tx,
            &json!({}),
            &Patch::Operators(json!({"$set": {"d": deep}})),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Json(j) if j.to_string().contains("deep")),
        "{e}"
    );
    tx.commit().unwrap();
    assert_eq!(
        docs.find_json(&db.read(), &Query::new(json!({}))).unwrap(),
        vec![json!({"id": 0, "a": 1, "n": 5})]
    );
    let e = db.create_documents("d", Definition::default()).unwrap_err();
    assert!(matches!(e, Error::CollectionExists { .. }), "{e}");
    assert!(matches!(
        db.documents("nope"),
        Err(Error::UnknownCollection { .. })
    ));
    let e = db
        .create_documents("bad", Definition::default().index(IndexSpec::on("a..b")))
        .unwrap_err();
    assert!(matches!(e, Error::Json(_)), "{e}");
}

#[test]
fn live_index_changes_refuse_stale_writers_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        let docs = db.create_documents("d", Definition::default()).unwrap();
        insert_all(
            &db,
            &docs,
            &[json!({"k": 1}), json!({"k": 2}), json!({"k": 2})],
        );
        let before = db.read();
        let mut stale = db.begin();
        docs.insert(&mut stale, json!({"k": 3})).unwrap();

        let e = docs
            .create_index(&db, IndexSpec::on("k").unique())
            .unwrap_err();
        assert!(matches!(e, Error::UniqueViolation { .. }), "{e}");
        assert!(docs.definition().indexes.is_empty());
        docs.create_index(&db, IndexSpec::on("k")).unwrap();

        let e = stale.commit().unwrap_err();
        assert!(matches!(e, Error::IndexesChanged { .. }), "{e}");
        // A snapshot from before still answers (by a scan), the new one through the index.
        let q = Query::new(json!({"k": 2}));
        assert_eq!(docs.explain(&before, &q).unwrap().strategy, "scan");
        assert_eq!(docs.find(&before, &q).unwrap().len(), 2);
        let now = db.read();
        assert_eq!(docs.explain(&now, &q).unwrap().index.as_deref(), Some("k"));
        assert_eq!(docs.find(&now, &q).unwrap().len(), 2);
        db.checkpoint().unwrap();
        insert_all(&db, &docs, &[json!({"k": 2})]);
    }
    let db = open(dir.path());
    let docs = db.documents("d").unwrap();
    assert_eq!(docs.definition().indexes, vec![IndexSpec::on("k")]);
    let snap = db.read();
    let q = Query::new(json!({"k": 2}));
    assert_eq!(docs.explain(&snap, &q).unwrap().index.as_deref(), Some("k"));
    assert_eq!(docs.find(&snap, &q).unwrap().len(), 3);
    snap.check_indexes(&docs.collection()).unwrap();
    assert!(docs.drop_index(&db, "k").unwrap());
    assert_eq!(docs.explain(&db.read(), &q).unwrap().strategy, "scan");
    assert!(db.drop_documents("d").unwrap());
    assert_eq!(db.document_collections().unwrap(), Vec::<String>::new());
    let again = db
        .create_documents("d", Definition::default().index(IndexSpec::on("z")))
        .unwrap();
    assert_eq!(again.count(&db.read(), &json!({})).unwrap(), 0);
}

#[test]
fn ttl_hides_expired_documents_and_checkpoints_purge_them() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    {
        let db = open(dir.path());
        let events = db
            .create_documents(
                "events",
                Definition::default().ttl("at", Duration::from_secs(3600)),
            )
            .unwrap();
        insert_all(
            &db,
            &events,
            &[
                json!({"at": now_ms, "n": "fresh"}),
                json!({"at": now_ms - 7_200_000, "n": "old"}),
                json!({"at": "2001-01-01T00:00:00.000Z", "n": "ancient"}),
                json!({"n": "timeless"}),
            ],
        );
        let snap = db.read();
        let names: Vec<Value> = events
            .find_json(&snap, &Query::new(json!({})))
            .unwrap()
            .into_iter()
            .map(|d| d["n"].clone())
            .collect();
        assert_eq!(names, vec![json!("fresh"), json!("timeless")]);
        assert!(events.get(&snap, &json!(1)).unwrap().is_none());
        assert_eq!(
            snap.count(&events.collection()),
            4,
            "hidden, not yet purged"
        );
    }
    let db = open(dir.path());
    let events = db.documents("events").unwrap();
    assert_eq!(events.count(&db.read(), &json!({})).unwrap(), 2);
    db.checkpoint().unwrap();
    assert_eq!(
        db.read().count(&events.collection()),
        2,
        "purged at the checkpoint"
    );
    drop(events);
    drop(db);
    let db = open(dir.path());
    let events = db.documents("events").unwrap();
    assert_eq!(db.read().count(&events.collection()), 2);
}

#[test]
fn rotation_moves_everything_atomically_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rotated;
    {
        let db = open(dir.path());
        let logs = db
            .create_documents("logs", Definition::default().index(IndexSpec::on("level")))
            .unwrap();
        insert_all(
            &db,
            &logs,
            &[json!({"level": "info"}), json!({"level": "warn"})],
        );
        rotated = logs.rotate(&db).unwrap();
        assert!(rotated.starts_with("logs.2"), "{rotated}");
        assert_eq!(logs.count(&db.read(), &json!({})).unwrap(), 0);
        insert_all(&db, &logs, &[json!({"level": "error"})]);
    }
    let db = open(dir.path());
    let names = db.document_collections().unwrap();
    assert_eq!(names, vec!["logs".to_string(), rotated.clone()]);
    let old = db.documents(&rotated).unwrap();
    let snap = db.read();
    let levels: Vec<Value> = old
        .find_json(&snap, &Query::new(json!({})))
        .unwrap()
        .into_iter()
        .map(|d| d["level"].clone())
        .collect();
    assert_eq!(levels, vec![json!("info"), json!("warn")]);
    assert_eq!(old.definition().indexes, vec![IndexSpec::on("level")]);
    let logs = db.documents("logs").unwrap();
    let now: Vec<Value> = logs.find_json(&snap, &Query::new(json!({}))).unwrap();
    // The collection starts over in a fresh storage collection: auto-increment ids start at 0 again.
    assert_eq!(now, vec![json!({"id": 0, "level": "error"})]);
}

// ---------------------------------------------------------------------------------------------------------------
// The planner against a scan and a reference evaluator
// ---------------------------------------------------------------------------------------------------------------

fn small_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        (0i64..6).prop_map(|n| Some(json!(n))),
        prop_oneof![Just("x"), Just("y")].prop_map(|s| Some(json!(s))),
        proptest::collection::vec(0i64..6, 0..3).prop_map(|v| Some(json!(v))),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    (
        small_value(),
        prop_oneof![
            Just(None),
            (0i64..6).prop_map(|n| Some(json!({"c": n}))),
            Just(Some(json!({}))),
            Just(Some(json!(5))),
        ],
        prop_oneof![
            Just(None),
            Just(Some("ab")),
            Just(Some("AB")),
            Just(Some("Ab")),
            Just(Some("cd"))
        ],
    )
        .prop_map(|(a, b, s)| {
            let mut doc = serde_json::Map::new();
            if let Some(a) = a {
                doc.insert("a".into(), a);
            }
            if let Some(b) = b {
                doc.insert("b".into(), b);
            }
            if let Some(s) = s {
                doc.insert("s".into(), json!(s));
            }
            Value::Object(doc)
        })
}

/// A condition the reference evaluator understands: (path, operator, operand).
#[derive(Clone, Debug)]
struct Cond(&'static str, &'static str, Value);

fn condition() -> impl Strategy<Value = Cond> {
    let path = prop_oneof![Just("a"), Just("b.c"), Just("s")];
    let operand = prop_oneof![
        (0i64..6).prop_map(|n| json!(n)),
        Just(json!("x")),
        Just(json!("ab")),
        Just(json!("AB")),
        Just(Value::Null),
    ];
    let op = prop_oneof![
        Just("$eq"),
        Just("$ne"),
        Just("$gt"),
        Just("$gte"),
        Just("$lt"),
        Just("$lte"),
        Just("$in"),
        Just("$nin"),
        Just("$exists"),
    ];
    (path, op, operand, proptest::collection::vec(0i64..6, 1..3)).prop_map(|(p, op, v, list)| {
        match op {
            "$in" | "$nin" => Cond(p, op, json!(list)),
            "$exists" => Cond(p, op, json!(v.is_number())),
            _ => Cond(p, op, v),
        }
    })
}

fn reach<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut at = vec![doc];
    for seg in path.split('.') {
        let mut next = Vec::new();
        for v in at {
            match v {
                Value::Object(m) => next.extend(m.get(seg)),
                Value::Array(items) => {
                    for item in items {
                        if let Value::Object(m) = item {
                            next.extend(m.get(seg));
                        }
                    }
                }
                _ => {}
            }
        }
        at = next;
    }
    at
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(std::cmp::Ordering::Equal),
        _ => None,
    }
}

/// Mongo's semantics for the operators of [`condition`], written plainly.
fn reference(doc: &Value, cond: &Cond) -> bool {
    let reached = reach(doc, cond.0);
    // A value matches itself, and an array matches through its elements too.
    let candidates: Vec<&Value> = reached
        .iter()
        .flat_map(|v| {
            let mut c = vec![*v];
            if let Value::Array(items) = v {
                c.extend(items.iter());
            }
            c
        })
        .collect();
    let eq = |x: &Value| {
        if x.is_null() && reached.is_empty() {
            return true;
        }
        candidates
            .iter()
            .any(|c| order(c, x) == Some(std::cmp::Ordering::Equal) || *c == x)
    };
    let cmp = |f: fn(std::cmp::Ordering) -> bool| {
        candidates.iter().any(|c| order(c, &cond.2).is_some_and(f))
            || (cond.2.is_null() && reached.is_empty() && f(std::cmp::Ordering::Equal))
    };
    match cond.1 {
        "$eq" => eq(&cond.2),
        "$ne" => !eq(&cond.2),
        "$gt" => cmp(|o| o.is_gt()),
        "$gte" => cmp(|o| o.is_ge()),
        "$lt" => cmp(|o| o.is_lt()),
        "$lte" => cmp(|o| o.is_le()),
        "$in" => cond.2.as_array().unwrap().iter().any(eq),
        "$nin" => !cond.2.as_array().unwrap().iter().any(eq),
        "$exists" => cond.2.as_bool().unwrap() != reached.is_empty(),
        _ => unreachable!(),
    }
}

fn to_filter(conds: &[Cond], any: bool) -> Value {
    let parts: Vec<Value> = conds
        .iter()
        .map(|Cond(p, op, v)| json!({ *p: { *op: v } }))
        .collect();
    if any {
        json!({ "$or": parts })
    } else {
        json!({ "$and": parts })
    }
}

#[test]
fn planner_returns_what_a_scan_and_the_reference_return() {
    let cases = common::env_or("DOCS_PLANNER_CASES", 48u32);
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let indexed = db
        .create_documents(
            "indexed",
            Definition::default()
                .index(IndexSpec::on("a"))
                .index(IndexSpec::on("b.c").sparse())
                .index(IndexSpec::on("s").ignore_case())
                .index(IndexSpec::on("a").then("s", true).named("a_s"))
                .index(IndexSpec::on("b.c").descending().named("c_desc")),
        )
        .unwrap();
    let plain = db.create_documents("plain", Definition::default()).unwrap();
    let used_index = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                proptest::collection::vec(document(), 0..40),
                proptest::collection::vec(
                    (proptest::collection::vec(condition(), 1..3), any::<bool>()),
                    1..8,
                ),
            ),
            |(docs, queries)| {
                let mut tx = db.begin();
                indexed.delete(&mut tx, &json!({})).unwrap();
                plain.delete(&mut tx, &json!({})).unwrap();
                for doc in &docs {
                    indexed.insert(&mut tx, doc.clone()).unwrap();
                    plain.insert(&mut tx, doc.clone()).unwrap();
                }
                tx.commit().unwrap();
                let snap = db.read();
                for (conds, any) in &queries {
                    let filter = to_filter(conds, *any);
                    let query = Query::new(filter.clone());
                    let through_index = indexed.find_json(&snap, &query).unwrap();
                    let scanned = plain.find_json(&snap, &query).unwrap();
                    let strip = |docs: Vec<Value>| {
                        docs.into_iter()
                            .map(|mut d| {
                                d.as_object_mut().unwrap().remove("id");
                                d
                            })
                            .collect::<Vec<_>>()
                    };
                    let expected: Vec<Value> = docs
                        .iter()
                        .filter(|d| {
                            let each = conds.iter().map(|c| reference(d, c));
                            if *any {
                                each.clone().any(|m| m)
                            } else {
                                each.clone().all(|m| m)
                            }
                        })
                        .cloned()
                        .collect();
                    prop_assert_eq!(
                        &strip(through_index.clone()),
                        &strip(scanned),
                        "filter {}",
                        filter
                    );
                    prop_assert_eq!(&strip(through_index), &expected, "filter {}", filter);
                    if !*any && indexed.explain(&snap, &query).unwrap().strategy == "index" {
                        used_index.set(used_index.get() + 1);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(used_index.get() > 0, "the planner never used an index");
}

// ---------------------------------------------------------------------------------------------------------------
// Indexes against documents under random transactions
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Insert(Value),
    Update(i64, Value),
    Delete(i64),
    Rollback,
    Commit,
    Reopen,
    Checkpoint,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => document().prop_map(Step::Insert),
        3 => (0i64..6, document()).prop_map(|(a, d)| Step::Update(a, d)),
        2 => (0i64..6).prop_map(Step::Delete),
        1 => Just(Step::Rollback),
        3 => Just(Step::Commit),
        1 => Just(Step::Reopen),
        1 => Just(Step::Checkpoint),
    ]
}

fn check(db: &Database, docs: &Documents, model: &[Value]) -> Result<(), TestCaseError> {
    let snap = db.read();
    snap.check_indexes(&docs.collection())
        .map_err(|e| TestCaseError::fail(format!("indexes disagree: {e}")))?;
    let found = docs.find_json(&snap, &Query::new(json!({}))).unwrap();
    prop_assert_eq!(&found, &model.to_vec());
    for a in 0..6 {
        let q = Query::new(json!({"a": a}));
        let expected: Vec<&Value> = model
            .iter()
            .filter(|d| reference(d, &Cond("a", "$eq", json!(a))))
            .collect();
        prop_assert_eq!(docs.find(&snap, &q).unwrap().len(), expected.len());
    }
    Ok(())
}

#[test]
fn indexes_agree_with_documents_under_random_transactions_and_reopens() {
    let cases = common::env_or("DOCS_INDEX_CASES", 24u32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(step(), 1..30), |steps| {
            let dir = tempfile::tempdir().unwrap();
            let definition = Definition::default()
                .index(IndexSpec::on("a"))
                .index(IndexSpec::on("b.c").sparse())
                .index(IndexSpec::on("s").ignore_case())
                .index(IndexSpec::on("a").then("b.c", true).named("a_c"));
            open(dir.path()).create_documents("d", definition).unwrap();
            let mut model: Vec<Value> = Vec::new();
            let mut steps = steps.into_iter().peekable();
            // One session per open: it ends at a reopen (or at the last step).
            while steps.peek().is_some() {
                let db = open(dir.path());
                let docs = db.documents("d").unwrap();
                check(&db, &docs, &model)?;
                let mut pending = model.clone();
                let mut tx = Some(db.begin());
                for step in steps.by_ref() {
                    let open_tx = tx.as_mut().expect("a transaction is open between steps");
                    match step {
                        Step::Insert(doc) => {
                            let id = docs.insert(open_tx, doc.clone()).unwrap();
                            let mut doc = doc;
                            doc.as_object_mut().unwrap().insert("id".into(), id);
                            pending.push(doc);
                        }
                        Step::Update(a, patch) => {
                            let n = docs
                                .update(open_tx, &json!({"a": a}), &Patch::Replace(patch.clone()))
                                .unwrap();
                            let mut seen = 0;
                            for d in pending
                                .iter_mut()
                                .filter(|d| reference(d, &Cond("a", "$eq", json!(a))))
                            {
                                let mut next = patch.clone();
                                next.as_object_mut()
                                    .unwrap()
                                    .insert("id".into(), d["id"].clone());
                                if *d != next {
                                    seen += 1;
                                }
                                *d = next;
                            }
                            prop_assert_eq!(n, seen);
                        }
                        Step::Delete(a) => {
                            let n = docs.delete(open_tx, &json!({"a": a})).unwrap();
                            let before = pending.len();
                            pending.retain(|d| !reference(d, &Cond("a", "$eq", json!(a))));
                            prop_assert_eq!(n, before - pending.len());
                        }
                        Step::Rollback => {
                            tx = Some(db.begin());
                            pending = model.clone();
                        }
                        Step::Commit => {
                            tx.take().unwrap().commit().unwrap();
                            tx = Some(db.begin());
                            model = pending.clone();
                        }
                        Step::Reopen => break,
                        Step::Checkpoint => {
                            db.checkpoint().unwrap();
                        }
                    }
                    check(&db, &docs, &model)?;
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_transaction_reads_its_own_document_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let docs = db
        .create_documents("d", Definition::default().index(IndexSpec::on("k")))
        .unwrap();
    insert_all(&db, &docs, &[json!({"k": 1})]);
    let mut tx = db.begin();
    docs.insert(&mut tx, json!({"k": 1})).unwrap();
    docs.update(&mut tx, &json!({"id": 0}), &Patch::Assign(json!({"k": 2})))
        .unwrap();
    assert_eq!(
        values(&docs.find(&tx, &Query::new(json!({"k": 1}))).unwrap()),
        vec![json!({"id": 1, "k": 1})]
    );
    assert_eq!(docs.count(&tx, &json!({"k": 2})).unwrap(), 1);
    assert_eq!(docs.count(&db.read(), &json!({"k": 2})).unwrap(), 0);
    fn first<S: Source>(docs: &Documents, s: &S) -> Value {
        docs.find_first(s, &Query::new(json!({})).sort(json!({"k": -1})))
            .unwrap()
            .unwrap()
            .to_value()
    }
    assert_eq!(first(&docs, &tx), json!({"id": 0, "k": 2}));
    tx.commit().unwrap();
    assert_eq!(first(&docs, &db.read()), json!({"id": 0, "k": 2}));
}

#[test]
fn audit_keeps_every_version_with_its_commit_lsn_and_time_across_checkpoint_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let mut expected: Vec<(u64, Option<Value>)> = Vec::new();
    let started = now();
    {
        let db = open(dir.path());
        let docs = db
            .create_documents("accounts", Definition::default().audit())
            .unwrap();
        let mut commit = |f: &dyn Fn(&mut collection_store::Transaction<'_>),
                          doc: Option<Value>| {
            let mut tx = db.begin();
            f(&mut tx);
            let info = tx.commit().unwrap();
            expected.push((info.end_lsn.unwrap(), doc));
        };
        commit(
            &|tx| {
                docs.insert(tx, json!({"owner": "ann", "balance": 10}))
                    .unwrap();
                docs.insert(tx, json!({"owner": "bob", "balance": 5}))
                    .unwrap();
            },
            Some(json!({"id": 0, "owner": "ann", "balance": 10})),
        );
        commit(
            &|tx| {
                docs.update(
                    tx,
                    &json!({"id": 0}),
                    &Patch::Operators(json!({"$inc": {"balance": 5}})),
                )
                .unwrap();
            },
            Some(json!({"id": 0, "owner": "ann", "balance": 15})),
        );
        // Inside a transaction, its own write shows last, not yet stamped.
        let mut tx = db.begin();
        docs.update(
            &mut tx,
            &json!({"id": 0}),
            &Patch::Assign(json!({"balance": 0})),
        )
        .unwrap();
        let seen = docs.history(&tx, &json!(0)).unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!((seen[2].end_lsn, seen[2].time_ms), (0, 0));
        let info = tx.commit().unwrap();
        expected.push((
            info.end_lsn.unwrap(),
            Some(json!({"id": 0, "owner": "ann", "balance": 0})),
        ));
        db.checkpoint().unwrap();
        let mut tx = db.begin();
        assert!(docs.delete_id(&mut tx, &json!(0)).unwrap());
        let info = tx.commit().unwrap();
        expected.push((info.end_lsn.unwrap(), None));
    }
    let finished = now();
    let db = open(dir.path());
    let docs = db.documents("accounts").unwrap();
    let versions = docs.history(&db.read(), &json!(0)).unwrap();
    let got: Vec<(u64, Option<Value>)> = versions
        .iter()
        .map(|v| (v.end_lsn, v.document.clone()))
        .collect();
    assert_eq!(got, expected);
    assert!(
        versions
            .iter()
            .all(|v| (started..=finished).contains(&v.time_ms)),
        "{versions:?}"
    );
    assert!(versions.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    assert_eq!(docs.history(&db.read(), &json!(1)).unwrap().len(), 1);
    assert!(docs.get(&db.read(), &json!(0)).unwrap().is_none());
    let plain = db.create_documents("plain", Definition::default()).unwrap();
    assert!(matches!(
        plain.history(&db.read(), &json!(0)),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn ttl_audit_and_rotation_survive_power_loss() {
    use collection_store::checkpoint::files::MemFiles;
    use collection_store::wal::MemStorage;
    let log = std::sync::Arc::new(MemStorage::simulated());
    let files = MemFiles::simulated();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let rotated;
    let acknowledged_lsn;
    {
        let db = Database::open_with(log.clone(), files.clone(), Options::default()).unwrap();
        let logs = db
            .create_documents(
                "logs",
                Definition::default()
                    .audit()
                    .ttl("at", Duration::from_secs(60))
                    .index(IndexSpec::on("level")),
            )
            .unwrap();
        insert_all(
            &db,
            &logs,
            &[
                json!({"level": "info", "at": now_ms}),
                json!({"level": "warn", "at": now_ms - 120_000}),
            ],
        );
        rotated = logs.rotate(&db).unwrap();
        let mut tx = db.begin();
        logs.insert(&mut tx, json!({"level": "error", "at": now_ms}))
            .unwrap();
        acknowledged_lsn = tx.commit().unwrap().end_lsn.unwrap();
        // Appended after the last acknowledged commit, never synced: a power loss may take it.
        let mut tx = db.begin_with(collection_store::wal::Durability::None);
        logs.insert(&mut tx, json!({"level": "lost?", "at": now_ms}))
            .unwrap();
        tx.commit().unwrap();
    }
    let crashed = std::sync::Arc::new(log.crash_image(|_, _| false));
    let db = Database::open_with(crashed, files.crash_image(false), Options::default()).unwrap();
    let logs = db.documents("logs").unwrap();
    let snap = db.read();
    let levels: Vec<Value> = logs
        .find_json(&snap, &Query::new(json!({})))
        .unwrap()
        .into_iter()
        .map(|d| d["level"].clone())
        .collect();
    assert_eq!(levels, vec![json!("error")]);
    let old = db.documents(&rotated).unwrap();
    // The expired document is still hidden in the rotated copy, the fresh one visible.
    let old_levels: Vec<Value> = old
        .find_json(&snap, &Query::new(json!({})))
        .unwrap()
        .into_iter()
        .map(|d| d["level"].clone())
        .collect();
    assert_eq!(old_levels, vec![json!("info")]);
    // (A snapshot taken before `documents` bound the collection has no indexes for it: it scans.)
    assert_eq!(
        old.explain(&snap, &Query::new(json!({"level": "warn"})))
            .unwrap()
            .strategy,
        "scan"
    );
    assert_eq!(
        old.explain(&db.read(), &Query::new(json!({"level": "warn"})))
            .unwrap()
            .strategy,
        "index"
    );
    // Audit: the history moved with the documents (the rotation moved storage, not documents); the collection's
    // new history holds only what was written since.
    let there = old.history(&db.read(), &json!(0)).unwrap();
    assert_eq!(there.len(), 1);
    assert_eq!(there[0].document.as_ref().unwrap()["level"], "info");
    let here = logs.history(&db.read(), &json!(0)).unwrap();
    assert_eq!(here.len(), 1);
    assert_eq!(here[0].document.as_ref().unwrap()["level"], "error");
    assert!(
        here.iter()
            .chain(&there)
            .all(|v| v.end_lsn > 0 && v.end_lsn <= acknowledged_lsn)
    );
    assert!(there[0].end_lsn < here[0].end_lsn);
}

#[test]
fn the_background_checkpointer_purges_expired_documents_even_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        dir.path(),
        Options {
            auto_checkpoint: Some(collection_store::AutoCheckpoint {
                wal_bytes: 1 << 40,
                interval: Duration::from_millis(100),
            }),
            ..Options::default()
        },
    )
    .unwrap();
    let events = db
        .create_documents(
            "events",
            Definition::default().ttl("at", Duration::from_secs(3600)),
        )
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Expires 300 ms from now; a checkpoint right after the insert leaves nothing for the next one to do.
    insert_all(
        &db,
        &events,
        &[
            json!({"at": now_ms - 3_600_000 + 300}),
            json!({"at": now_ms}),
        ],
    );
    db.checkpoint().unwrap();
    assert_eq!(db.read().count(&events.collection()), 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.read().count(&events.collection()) != 1 {
        assert!(std::time::Instant::now() < deadline, "never purged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(db.background_checkpoint_error(), None);
}

#[test]
fn documents_commit_atomically_across_two_databases() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    let orders = a.create_documents("orders", Definition::default()).unwrap();
    let stock = b
        .create_documents("stock", Definition::default().id_field("sku").audit())
        .unwrap();
    insert_all(&b, &stock, &[json!({"sku": "X1", "count": 3})]);

    let mut remote = b.begin();
    stock
        .update(
            &mut remote,
            &json!({"sku": "X1"}),
            &Patch::Operators(json!({"$inc": {"count": -1}})),
        )
        .unwrap();
    let mut tx = a.begin();
    orders.insert(&mut tx, json!({"sku": "X1"})).unwrap();
    tx.enlist(remote.into_participant());
    tx.commit().unwrap();
    assert_eq!(orders.count(&a.read(), &json!({"sku": "X1"})).unwrap(), 1);
    let x1 = stock
        .get(&b.read(), &json!("X1"))
        .unwrap()
        .unwrap()
        .to_value();
    assert_eq!(x1["count"], 2);
    // The participant's history entry is stamped as its PREPARE logged it.
    let versions = stock.history(&b.read(), &json!("X1")).unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[1].end_lsn > versions[0].end_lsn && versions[1].time_ms > 0);

    // A participant that refuses (a conflicting write committed first) aborts both sides.
    let mut remote = b.begin();
    stock
        .update(
            &mut remote,
            &json!({"sku": "X1"}),
            &Patch::Operators(json!({"$inc": {"count": -1}})),
        )
        .unwrap();
    insert_all(&b, &stock, &[json!({"sku": "Y2", "count": 1})]);
    let mut first = b.begin();
    stock
        .update(
            &mut first,
            &json!({"sku": "X1"}),
            &Patch::Assign(json!({"count": 0})),
        )
        .unwrap();
    first.commit().unwrap();
    let mut tx = a.begin();
    orders.insert(&mut tx, json!({"sku": "X1"})).unwrap();
    tx.enlist(remote.into_participant());
    assert!(matches!(tx.commit(), Err(Error::ParticipantAborted { .. })));
    assert_eq!(orders.count(&a.read(), &json!({})).unwrap(), 1);
    assert_eq!(
        stock
            .get(&b.read(), &json!("X1"))
            .unwrap()
            .unwrap()
            .to_value()["count"],
        0
    );
}

#[test]
fn a_collection_created_in_a_transaction_exists_only_if_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        let mut tx = db.begin();
        let a = tx
            .create_documents("a", Definition::default().index(IndexSpec::on("k")))
            .unwrap();
        a.insert(&mut tx, json!({"k": 1})).unwrap();
        assert!(matches!(
            db.documents("a"),
            Err(Error::UnknownCollection { .. })
        ));
        assert!(matches!(
            tx.create_documents("a", Definition::default()),
            Err(Error::CollectionExists { .. })
        ));
        let savepoint = tx.savepoint();
        tx.create_documents("b", Definition::default()).unwrap();
        tx.rollback_to(savepoint).unwrap();
        tx.commit().unwrap();
        assert_eq!(db.document_collections().unwrap(), vec!["a".to_string()]);
        assert!(matches!(
            db.documents("b"),
            Err(Error::UnknownCollection { .. })
        ));

        let mut tx = db.begin();
        let c = tx.create_documents("c", Definition::default()).unwrap();
        c.insert(&mut tx, json!({"x": 1})).unwrap();
        drop(tx);
        assert!(matches!(
            db.documents("c"),
            Err(Error::UnknownCollection { .. })
        ));
        assert!(matches!(
            db.create_documents("a.__history", Definition::default()),
            Err(Error::InvalidOptions(_))
        ));
    }
    let db = open(dir.path());
    let a = db.documents("a").unwrap();
    assert_eq!(
        a.find_json(&db.read(), &Query::new(json!({"k": 1})))
            .unwrap(),
        vec![json!({"id": 0, "k": 1})]
    );
    assert_eq!(db.document_collections().unwrap(), vec!["a".to_string()]);
}

#[test]
fn rotation_and_drop_fence_writers_and_need_no_large_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let big = db.create_documents("big", Definition::default()).unwrap();
    // 12 MB: more than one transaction can hold, so rotation and drop must not move or delete in one.
    for batch in 0..6 {
        let mut tx = db.begin_with(collection_store::wal::Durability::None);
        for i in 0..500 {
            big.insert(
                &mut tx,
                json!({"n": batch * 500 + i, "pad": "z".repeat(4_000)}),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut stale = db.begin();
    big.insert(&mut stale, json!({"n": -1})).unwrap();
    let rotated = big.rotate(&db).unwrap();
    assert!(matches!(stale.commit(), Err(Error::IndexesChanged { .. })));
    let moved = db.documents(&rotated).unwrap();
    assert_eq!(moved.count(&db.read(), &json!({})).unwrap(), 3_000);
    assert_eq!(big.count(&db.read(), &json!({})).unwrap(), 0);
    // The handle held across the rotation writes to the fresh collection.
    insert_all(&db, &big, &[json!({"n": 1})]);
    assert_eq!(big.count(&db.read(), &json!({})).unwrap(), 1);

    let mut stale = db.begin();
    moved.insert(&mut stale, json!({"n": -2})).unwrap();
    assert!(db.drop_documents(&rotated).unwrap());
    assert!(matches!(stale.commit(), Err(Error::IndexesChanged { .. })));
    assert!(matches!(
        db.documents(&rotated),
        Err(Error::UnknownCollection { .. })
    ));
    // Created again under the same name: empty, in a fresh storage collection.
    let again = db
        .create_documents(&rotated, Definition::default())
        .unwrap();
    assert_eq!(again.count(&db.read(), &json!({})).unwrap(), 0);
    drop((big, moved, again));
    drop(db);
    let db = open(dir.path());
    assert_eq!(
        db.documents(&rotated)
            .unwrap()
            .count(&db.read(), &json!({}))
            .unwrap(),
        0
    );
    assert_eq!(
        db.documents("big")
            .unwrap()
            .count(&db.read(), &json!({}))
            .unwrap(),
        1
    );
}
