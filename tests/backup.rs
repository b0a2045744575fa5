//! Online backup: a copy taken while writers commit reopens to exactly the state committed at its cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use collection_store::{Database, Definition, Error, IndexSpec, Options, Query};
use serde_json::{Value, json};

const WRITERS: u64 = 3;

/// Each writer's commits, in order: (end LSN, the writer's count after it).
type Log = Vec<(u64, u64)>;

#[test]
fn a_backup_under_load_reopens_to_exactly_the_state_at_its_cut() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), Options::default()).unwrap();
    let docs = db
        .create_documents("items", Definition::default().index(IndexSpec::on("w")))
        .unwrap();
    let counters = db
        .create_documents("counters", Definition::default().id_field("w"))
        .unwrap();
    {
        let mut tx = db.begin();
        for w in 0..WRITERS {
            counters
                .insert(&mut tx, json!({"w": w, "count": 0}))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, docs, counters, stop) = (
                db.clone(),
                docs.clone(),
                counters.clone(),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut log: Log = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || log.len() < 20 {
                    i += 1;
                    let mut tx = db.begin_with(collection_store::wal::Durability::Os);
                    docs.insert(&mut tx, json!({"w": w, "i": i})).unwrap();
                    counters
                        .update(
                            &mut tx,
                            &json!({"w": w}),
                            &collection_store::Patch::Assign(json!({"count": i})),
                        )
                        .unwrap();
                    let info = tx.commit().unwrap();
                    log.push((info.end_lsn.unwrap(), i));
                }
                log
            })
        })
        .collect();
    // Let the writers run, checkpoint under load (so the copy has snapshots and a log tail), back up under load.
    while db.read().count(&docs.collection()) < 200 {
        std::thread::yield_now();
    }
    db.checkpoint().unwrap();
    while db.read().count(&docs.collection()) < 400 {
        std::thread::yield_now();
    }
    let dest = out.path().join("copy");
    let info = db.backup(&dest).unwrap();
    while db.read().count(&docs.collection()) < 600 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<Log> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(info.checkpoint_files >= 2, "{info:?}");
    assert!(!out.path().join("copy.partial").exists());

    // The model at the cut: per writer, the commits that ended at or before it.
    let at_cut: Vec<u64> = logs
        .iter()
        .map(|log| {
            log.iter()
                .filter(|(end, _)| *end <= info.cut_lsn)
                .map(|(_, i)| *i)
                .max()
                .unwrap_or(0)
        })
        .collect();
    assert!(
        logs.iter()
            .zip(&at_cut)
            .any(|(log, n)| (*n as usize) < log.len()),
        "writers went on after the cut"
    );
    drop((docs, counters));
    let copy = Database::open(&dest, Options::default()).unwrap();
    let (docs, counters) = (
        copy.documents("items").unwrap(),
        copy.documents("counters").unwrap(),
    );
    let snap = copy.read();
    assert_eq!(snap.seq(), info.seq);
    for w in 0..WRITERS {
        let expected: Vec<Value> = (1..=at_cut[w as usize]).map(|i| json!(i)).collect();
        let found: Vec<Value> = docs
            .find_json(&snap, &Query::new(json!({"w": w})).sort(json!({"i": 1})))
            .unwrap()
            .into_iter()
            .map(|d| d["i"].clone())
            .collect();
        assert_eq!(found, expected, "writer {w}");
        let count = counters.get(&snap, &json!(w)).unwrap().unwrap().to_value()["count"].clone();
        assert_eq!(count, json!(at_cut[w as usize]), "writer {w}");
    }
    snap.check_indexes(&docs.collection()).unwrap();
    // The copy is a normal database: it takes commits.
    let mut tx = copy.begin();
    docs.insert(&mut tx, json!({"w": 99})).unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_backup_refuses_a_destination_that_holds_anything_and_works_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), Options::default()).unwrap();
    let docs = db.create_documents("d", Definition::default()).unwrap();
    let mut tx = db.begin();
    docs.insert(&mut tx, json!({"a": 1})).unwrap();
    tx.commit().unwrap();
    std::fs::write(out.path().join("x"), b"x").unwrap();
    assert!(matches!(
        db.backup(out.path()),
        Err(Error::InvalidOptions(_))
    ));
    // An empty directory is taken; a leftover partial copy is replaced.
    let dest = out.path().join("empty");
    std::fs::create_dir(&dest).unwrap();
    std::fs::create_dir(out.path().join("empty.partial")).unwrap();
    std::fs::write(out.path().join("empty.partial/junk"), b"junk").unwrap();
    let info = db.backup(&dest).unwrap();
    assert_eq!(info.checkpoint_files, 0);
    assert!(!out.path().join("empty.partial").exists());
    drop(docs);
    let copy = Database::open(&dest, Options::default()).unwrap();
    let docs = copy.documents("d").unwrap();
    assert_eq!(
        docs.find_json(&copy.read(), &Query::new(json!({})))
            .unwrap(),
        vec![json!({"id": 0, "a": 1})]
    );
}
