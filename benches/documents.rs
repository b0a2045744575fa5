//! JSON document collection benchmarks, each next to its floor measured in the same run:
//!
//! 1. durable insert of one ~1 KiB JSON document per commit (`Durability::Sync`, file-backed, a unique index on
//!    `email` and a non-unique one on `city`): p50/p99/p99.9 next to raw `pwrite` + `fdatasync` of the bytes one
//!    such commit logs (its DATA and COMMIT records) into a zero-filled file, consecutively and interleaved
//!    operation by operation;
//!
//!    In sections 1 and 2 the caller's part, building the `serde_json::Value`, happens before each operation's
//!    timer starts (section 2 reports its cost on its own line);
//! 2. non-durable inserts of the same documents from one thread (`Durability::None`, one document per commit):
//!    inserts/s, and what building one such document costs the caller;
//! 3. an equality query over N small documents (1 M; 20 k in quick mode) on an indexed field holding 1,000
//!    distinct values (so about N / 1,000 results), through the index and through a scan of an unindexed copy:
//!    ns per result;
//! 4. a range query returning 100 documents through an index on a unique sequence field, and the same query by a
//!    scan: ns per query.
//!
//! `cargo bench --bench documents`; `CSTORE_BENCH_QUICK=1 cargo bench --bench documents` for a smoke run;
//! `CSTORE_BENCH_DOCUMENTS_SECTIONS=1` runs only section 1 (`12` sections 1 and 2; 3 and 4 run together). Everything
//! on disk lives in a temporary directory under `std::env::temp_dir()`.

mod common;

use std::hint::black_box;
use std::path::Path;

use collection_store::wal::Durability;
use collection_store::{Database, Definition, Documents, IndexSpec, Options, Query};
use common::{
    Cfg, DiskFlushes, RatioLine, Spec, Summary, durable_vs_sized_floor, find, fmt_ns, fmt_rate,
    measure_op, measure_prepared, op_ns, per_s, print_table,
};
use criterion::Criterion;
use serde_json::{Value, json};

const GROUP: &str = "documents";
const DURABLE_ID: &str = "insert_sync_1k";
const CITIES: [&str; 8] = [
    "Oslo", "Rome", "Lima", "Kyiv", "Pune", "Doha", "Bern", "Riga",
];

/// Document `i`: about 1 KiB of JSON (an email, a name, a city, an age, tags, a bio).
fn document_1k(i: u64) -> Value {
    json!({
        "email": format!("user{i:010}@example.com"),
        "name": format!("User number {i}"),
        "city": CITIES[(i % CITIES.len() as u64) as usize],
        "age": i % 90,
        "tags": ["a", "b", format!("t{}", i % 17)],
        "bio": "lorem ipsum dolor sit amet ".repeat(32),
    })
}

/// Small document `i` for the query sections: `k` has 1,000 distinct values, `n` is unique.
fn document_small(i: u64) -> Value {
    json!({"k": i % 1_000, "n": i, "name": format!("item {i}")})
}

fn options(durability: Durability) -> Options {
    Options {
        durability,
        auto_checkpoint: None,
        ..Options::default()
    }
}

fn users(db: &Database) -> Documents {
    db.create_documents(
        "users",
        Definition::default()
            .index(IndexSpec::on("email").unique())
            .index(IndexSpec::on("city")),
    )
    .expect("collection")
}

/// Inserts `doc` into `users` in a transaction of its own, at the database's durability.
fn insert_one(db: &Database, users: &Documents, doc: Value) {
    let mut tx = db.begin();
    users.insert(&mut tx, doc).expect("insert");
    tx.commit().expect("commit");
}

fn bench_durable(
    c: &mut Criterion,
    cfg: &Cfg,
    dir: &Path,
    disk: Option<&DiskFlushes>,
) -> common::FloorVs {
    let db = Database::open(dir.join("durable"), options(Durability::Sync)).expect("open");
    let users = users(&db);
    // The floor writes what one commit logs: the DATA record (header, op head, the archived document) and the
    // COMMIT record.
    let before = db.wal().stats().bytes_appended;
    insert_one(&db, &users, document_1k(0));
    let logged = (db.wal().stats().bytes_appended - before) as usize;
    // The caller's part, building the document, is done before the timer starts.
    let mut i = 0u64;
    let next_document = || {
        i += 1;
        document_1k(i)
    };
    let spec = Spec::new(GROUP, DURABLE_ID, 1, disk);
    durable_vs_sized_floor(
        c,
        cfg,
        dir,
        &spec,
        logged,
        || db.wal().stats(),
        next_document,
        |doc| insert_one(&db, &users, doc),
    )
}

/// Non-durable inserts, then the caller's cost of building one document (untimed in the inserts).
fn bench_non_durable(c: &mut Criterion, cfg: &Cfg, dir: &Path) -> Vec<Summary> {
    let db = Database::open(dir.join("none"), options(Durability::None)).expect("open");
    let users = users(&db);
    let mut i = 0u64;
    let next_document = || {
        i += 1;
        document_1k(i)
    };
    let mut rows: Vec<Summary> = measure_prepared(
        c,
        cfg,
        &Spec::new(GROUP, "insert_none_1k", 100, None),
        next_document,
        |doc| insert_one(&db, &users, doc),
        || {},
        || {},
    )
    .into_iter()
    .collect();
    let mut j = 0u64;
    rows.extend(measure_op(
        c,
        cfg,
        &Spec::new(GROUP, "build_document_1k", 100, None),
        || {
            j += 1;
            black_box(document_1k(j));
        },
    ));
    rows
}

struct Queries {
    rows: Vec<Summary>,
    docs: u64,
    equality_results: usize,
}

fn bench_queries(c: &mut Criterion, cfg: &Cfg, dir: &Path, docs: u64) -> Queries {
    let db = Database::open(dir.join("queries"), options(Durability::None)).expect("open");
    let indexed = db
        .create_documents(
            "indexed",
            Definition::default()
                .index(IndexSpec::on("k"))
                .index(IndexSpec::on("n").unique()),
        )
        .expect("collection");
    let plain = db
        .create_documents("plain", Definition::default())
        .expect("collection");
    let mut loaded = 0;
    while loaded < docs {
        let mut tx = db.begin();
        for i in loaded..(loaded + 1_000).min(docs) {
            indexed.insert(&mut tx, document_small(i)).expect("insert");
            plain.insert(&mut tx, document_small(i)).expect("insert");
        }
        tx.commit().expect("commit");
        loaded = (loaded + 1_000).min(docs);
    }
    let snap = db.read();
    let mut k = 0u64;
    let mut equality = |docs: &Documents| {
        k = (k + 7) % 1_000;
        docs.find(&snap, &Query::new(json!({ "k": k })))
            .expect("query")
            .len()
    };
    let equality_results = equality(&indexed);
    assert_eq!(equality_results, equality(&plain), "index and scan agree");
    assert_eq!(
        indexed
            .explain(&snap, &Query::new(json!({"k": 1})))
            .expect("explain")
            .index
            .as_deref(),
        Some("k")
    );
    let mut rows = Vec::new();
    rows.extend(measure_op(
        c,
        cfg,
        &Spec::new(GROUP, "find_eq_index", 1, None),
        || {
            black_box(equality(&indexed));
        },
    ));
    rows.extend(measure_op(
        c,
        cfg,
        &Spec::new(GROUP, "find_eq_scan", 1, None),
        || {
            black_box(equality(&plain));
        },
    ));
    // Where a 100-document range can start.
    let range_starts = docs.saturating_sub(100).max(1);
    let mut start = 0u64;
    let mut range = |docs: &Documents| {
        start = (start + 7_919) % range_starts;
        let found = docs
            .find(
                &snap,
                &Query::new(json!({"n": {"$gte": start, "$lt": start + 100}})),
            )
            .expect("query");
        debug_assert_eq!(found.len(), 100);
        black_box(found.len());
    };
    rows.extend(measure_op(
        c,
        cfg,
        &Spec::new(GROUP, "find_range_100_index", 1, None),
        || range(&indexed),
    ));
    rows.extend(measure_op(
        c,
        cfg,
        &Spec::new(GROUP, "find_range_100_scan", 1, None),
        || range(&plain),
    ));
    Queries {
        rows,
        docs,
        equality_results,
    }
}

fn main() {
    let cfg = Cfg::from_env();
    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let disk = DiskFlushes::for_path(dir.path());
    let docs: u64 = if cfg.quick { 20_000 } else { 1_000_000 };
    eprintln!(
        "documents bench: temp dir {} (device {}), {docs} documents for queries{}",
        dir.path().display(),
        disk.as_ref().map_or("unknown", |d| d.name.as_str()),
        if cfg.quick { ", QUICK mode" } else { "" }
    );

    let sections =
        std::env::var("CSTORE_BENCH_DOCUMENTS_SECTIONS").unwrap_or_else(|_| "1234".into());
    let want = |section: char| sections.contains(section);
    let durable = want('1').then(|| bench_durable(&mut c, &cfg, dir.path(), disk.as_ref()));
    let none = if want('2') {
        bench_non_durable(&mut c, &cfg, dir.path())
    } else {
        Vec::new()
    };
    let queries = (want('3') || want('4')).then(|| bench_queries(&mut c, &cfg, dir.path(), docs));

    if let Some(durable) = &durable {
        print_table(
            "1. durable insert of a 1 KiB JSON document",
            &durable.table_rows(),
        );
        RatioLine {
            prefix: "1.",
            subject: "documents",
            target: 1.15,
        }
        .print_all(
            &durable.rows,
            durable.interleaved.as_ref(),
            DURABLE_ID,
            "consecutive",
        );
    }
    if !none.is_empty() {
        print_table("2. non-durable inserts", &none);
    }
    if let Some(insert) = find(&none, "insert_none_1k") {
        eprintln!(
            "2. non-durable insert of a 1 KiB JSON document, one per commit: {} ({} each)",
            fmt_rate(per_s(op_ns(&insert))),
            fmt_ns(op_ns(&insert))
        );
    }
    if let Some(build) = find(&none, "build_document_1k") {
        eprintln!(
            "2. building one such document (the caller's part, untimed in 1 and 2): {}",
            fmt_ns(op_ns(&build))
        );
    }
    let Some(queries) = queries else {
        return;
    };
    print_table(
        &format!("3–4. queries over {} documents", queries.docs),
        &queries.rows,
    );
    let per_result =
        |id: &str| find(&queries.rows, id).map(|s| s.p50_ns / queries.equality_results as f64);
    if let (Some(index), Some(scan)) = (per_result("find_eq_index"), per_result("find_eq_scan")) {
        eprintln!(
            "3. equality query, {} results: {} per result through the index, {} by a scan ({:.0}x)",
            queries.equality_results,
            fmt_ns(index),
            fmt_ns(scan),
            scan / index
        );
    }
    if let (Some(index), Some(scan)) = (
        find(&queries.rows, "find_range_100_index"),
        find(&queries.rows, "find_range_100_scan"),
    ) {
        eprintln!(
            "4. range query returning 100 documents: {} through the index ({} per result), {} by a scan",
            fmt_ns(index.p50_ns),
            fmt_ns(index.p50_ns / 100.0),
            fmt_ns(scan.p50_ns)
        );
    }
}
