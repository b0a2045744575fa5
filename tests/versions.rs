//! Multi-version storage: snapshots keep reading what they started with while commits rewrite, remove and re-index
//! the same documents, and superseded versions are reclaimed once no snapshot can see them.

use std::collections::BTreeMap;
use std::sync::Arc;

use collection_store::checkpoint::files::MemFiles;
use collection_store::wal::{Durability, MemStorage};
use collection_store::{Collection, Database, Options, Snapshot, Spec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rkyv::{Archive, Serialize};

#[derive(Archive, Serialize, Debug, Clone, PartialEq)]
struct Item {
    code: String,
    group: u32,
    tag: Option<u16>,
}

fn spec() -> Spec<Item> {
    Spec::new()
        .unique("code", |i: &ArchivedItem| i.code.to_string())
        .index("group", |i: &ArchivedItem| i.group.to_native())
        .sparse("tag", false, |i: &ArchivedItem| {
            i.tag.as_ref().map(|t| t.to_native())
        })
}

fn in_memory() -> Database {
    Database::open(
        "",
        Options {
            in_memory: true,
            durability: Durability::None,
            ..Options::default()
        },
    )
    .unwrap()
}

type Model = BTreeMap<u64, Item>;

fn native(item: &ArchivedItem) -> Item {
    Item {
        code: item.code.to_string(),
        group: item.group.to_native(),
        tag: item.tag.as_ref().map(|t| t.to_native()),
    }
}

/// Everything `snap` shows of `items` equals `model`: documents, count, both iteration orders, each unique key, each
/// group's and tag's entries in index order, and the indexes' own check.
fn assert_sees(snap: &Snapshot, items: &Collection<Item>, model: &Model, label: &str) {
    let docs: Vec<(u64, Item)> = snap.iter(items).map(|(id, d)| (id, native(d))).collect();
    let expected: Vec<(u64, Item)> = model.iter().map(|(id, i)| (*id, i.clone())).collect();
    assert_eq!(docs, expected, "{label}: documents");
    let reversed: Vec<u64> = snap.iter(items).rev().map(|(id, _)| id).collect();
    assert!(
        reversed.iter().rev().eq(model.keys()),
        "{label}: reverse order"
    );
    assert_eq!(snap.count(items), model.len(), "{label}: count");
    for (id, item) in model {
        assert_eq!(
            snap.get(items, *id).map(native).as_ref(),
            Some(item),
            "{label}: get {id}"
        );
        let found = snap.find_one(items, "code", &item.code).unwrap();
        assert_eq!(
            found.map(|(id, _)| id),
            Some(*id),
            "{label}: code {}",
            item.code
        );
    }
    for group in 0..4u32 {
        let ids: Vec<u64> = snap
            .find(items, "group", &group)
            .unwrap()
            .map(|(id, _)| id)
            .collect();
        let expected: Vec<u64> = model
            .iter()
            .filter(|(_, i)| i.group == group)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, expected, "{label}: group {group}");
    }
    let tagged: Vec<(u16, u64)> = snap
        .range(items, "tag", 0u16..)
        .unwrap()
        .map(|(id, d)| (d.tag.as_ref().unwrap().to_native(), id))
        .collect();
    let mut expected: Vec<(u16, u64)> = model
        .iter()
        .filter_map(|(id, i)| i.tag.map(|t| (t, *id)))
        .collect();
    expected.sort_unstable();
    assert_eq!(tagged, expected, "{label}: tag order");
    snap.check_indexes(items)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
}

fn random_item(rng: &mut SmallRng, serial: u64) -> Item {
    Item {
        // Codes are reused (unique keys move between documents), or fresh.
        code: if rng.random_bool(0.5) {
            format!("c{}", rng.random_range(0..40))
        } else {
            format!("n{serial}")
        },
        group: rng.random_range(0..4),
        tag: rng.random_bool(0.6).then(|| rng.random_range(0..20)),
    }
}

/// How a run of the old-snapshots test reaches its second half.
#[derive(Clone, Copy, Debug)]
enum Reopen {
    /// It does not: every version is in the delta.
    Never,
    /// It reopens from the log: the documents so far become the base, folded from the replay.
    FromLog,
    /// It checkpoints and reopens: the base is read from the snapshot file.
    FromCheckpoint,
}

#[test]
fn old_snapshots_keep_their_view_through_rewrites_removals_and_reindexing() {
    for seed in 0..9u64 {
        let reopen = [Reopen::Never, Reopen::FromLog, Reopen::FromCheckpoint][seed as usize % 3];
        let mut rng = SmallRng::seed_from_u64(seed);
        let log = Arc::new(MemStorage::new());
        let files = Arc::new(MemFiles::new());
        let options = || Options {
            durability: Durability::None,
            ..Options::default()
        };
        let mut db = Database::open_with(log.clone(), files.clone(), options()).unwrap();
        let mut items = db.collection("items", spec()).unwrap();
        let mut model = Model::new();
        // Snapshots taken along the way, with what they must keep showing.
        let mut held: Vec<(Snapshot, Model, usize)> = Vec::new();
        for step in 0..400usize {
            if step == 200 && !matches!(reopen, Reopen::Never) {
                // The second half writes over a base: rewrites, removals and unique-key moves of base documents
                // while snapshots that still read the base are held.
                for (snap, seen, at) in held.drain(..) {
                    let label = format!("seed {seed}, snapshot of step {at}, before reopening");
                    assert_sees(&snap, &items, &seen, &label);
                }
                if matches!(reopen, Reopen::FromCheckpoint) {
                    db.checkpoint().unwrap();
                }
                drop(items);
                drop(db);
                db = Database::open_with(log.clone(), files.clone(), options()).unwrap();
                items = db.collection("items", spec()).unwrap();
                let label = format!("seed {seed}, reopened {reopen:?}");
                assert_sees(&db.read(), &items, &model, &label);
                held.push((db.read(), model.clone(), step));
            }
            let mut tx = db.begin();
            let mut next = model.clone();
            for _ in 0..rng.random_range(1..4) {
                let existing: Vec<u64> = next.keys().copied().collect();
                let choice = rng.random_range(0..10);
                if choice < 4 || existing.is_empty() {
                    let item = random_item(&mut rng, step as u64);
                    if next.values().any(|i| i.code == item.code) {
                        continue;
                    }
                    let id = tx.insert(&items, &item).unwrap();
                    next.insert(id, item);
                } else if choice < 8 {
                    let id = existing[rng.random_range(0..existing.len())];
                    let item = random_item(&mut rng, step as u64);
                    if next
                        .iter()
                        .any(|(other, i)| *other != id && i.code == item.code)
                    {
                        continue;
                    }
                    tx.update(&items, id, &item).unwrap();
                    next.insert(id, item);
                } else {
                    let id = existing[rng.random_range(0..existing.len())];
                    assert!(tx.remove(&items, id).unwrap());
                    next.remove(&id);
                }
            }
            tx.commit().unwrap();
            model = next;
            if rng.random_bool(0.1) {
                held.push((db.read(), model.clone(), step));
            }
            // A checkpoint re-bases the collection on the snapshot it writes; held snapshots keep the old store.
            if rng.random_bool(0.03) {
                let info = db.checkpoint().unwrap();
                assert_eq!(info.rebased, 1, "seed {seed}, step {step}");
                assert_sees(
                    &db.read(),
                    &items,
                    &model,
                    &format!("seed {seed}, re-based at step {step}"),
                );
            }
            if !held.is_empty() && rng.random_bool(0.05) {
                let (snap, seen, at) = held.swap_remove(rng.random_range(0..held.len()));
                assert_sees(
                    &snap,
                    &items,
                    &seen,
                    &format!("seed {seed} ({reopen:?}), snapshot of step {at}"),
                );
            }
        }
        for (snap, seen, at) in &held {
            assert_sees(
                snap,
                &items,
                seen,
                &format!("seed {seed} ({reopen:?}), snapshot of step {at}, at the end"),
            );
        }
        assert_sees(&db.read(), &items, &model, &format!("seed {seed}, latest"));
    }
}

#[test]
fn superseded_versions_are_reclaimed_once_no_snapshot_needs_them() {
    let db = in_memory();
    let items = db.collection("items", spec()).unwrap();
    let item = |code: &str, group| Item {
        code: code.into(),
        group,
        tag: Some(1),
    };
    let id = db.insert(&items, &item("a", 0)).unwrap();
    for n in 0..1000u32 {
        // Each update changes the document and its `group` entry.
        db.put(&items, id, &item("a", n % 2)).unwrap();
    }
    assert!(
        db.retained_versions() <= 4,
        "without a live snapshot only the last commits' garbage waits: {}",
        db.retained_versions()
    );

    let old = db.read();
    for n in 0..1000u32 {
        db.put(&items, id, &item(&format!("k{n}"), n % 2)).unwrap();
    }
    let retained = db.retained_versions();
    assert!(
        retained >= 1000,
        "a live snapshot keeps what changed since: {retained}"
    );
    assert_eq!(native(old.get(&items, id).unwrap()), item("a", 1));
    assert_eq!(
        old.find_one(&items, "code", &"a".to_string())
            .unwrap()
            .map(|(i, _)| i),
        Some(id)
    );
    drop(old);
    // The next commit frees them, even one that supersedes nothing itself (a new document).
    let fresh = db.insert(&items, &item("fresh", 3)).unwrap();
    assert!(
        db.retained_versions() <= 4,
        "dropping it frees them: {}",
        db.retained_versions()
    );
    assert!(db.remove(&items, fresh).unwrap());
    db.put(&items, id, &item("z", 0)).unwrap();

    // Two snapshots: dropping the older frees only what the newer cannot see; dropping the newer frees the rest at
    // the next commit, again one that supersedes nothing.
    let older = db.read();
    for n in 0..100u32 {
        db.put(&items, id, &item(&format!("p{n}"), n % 2)).unwrap();
    }
    let newer = db.read();
    for n in 0..100u32 {
        db.put(&items, id, &item(&format!("q{n}"), n % 2)).unwrap();
    }
    drop(older);
    let between = db.insert(&items, &item("between", 3)).unwrap();
    let kept = db.retained_versions();
    assert!(
        (100..=500).contains(&kept),
        "the newer snapshot keeps what changed after it: {kept}"
    );
    drop(newer);
    let after = db.insert(&items, &item("after", 3)).unwrap();
    assert!(
        db.retained_versions() <= 4,
        "all freed: {}",
        db.retained_versions()
    );
    assert!(db.remove(&items, between).unwrap() && db.remove(&items, after).unwrap());
    db.put(&items, id, &item("z", 0)).unwrap();

    // Removals are forgotten too (the document, its index entries and its unique key).
    for n in 0..200u64 {
        let id = db.insert(&items, &item(&format!("r{n}"), 3)).unwrap();
        assert!(db.remove(&items, id).unwrap());
    }
    db.put(&items, id, &item("y", 0)).unwrap();
    assert!(
        db.retained_versions() <= 4,
        "removals reclaimed: {}",
        db.retained_versions()
    );
    let snap = db.read();
    assert_eq!(snap.count(&items), 1);
    assert_eq!(snap.find(&items, "group", &3u32).unwrap().count(), 0);
    snap.check_indexes(&items).unwrap();
}

#[test]
fn a_transaction_that_began_before_a_removal_still_conflicts_after_reclamation_runs() {
    let db = in_memory();
    let items = db.collection("items", spec()).unwrap();
    let doc = |code: &str| Item {
        code: code.into(),
        group: 0,
        tag: None,
    };
    let id = db.insert(&items, &doc("a")).unwrap();
    let mut late = db.begin();
    assert!(db.remove(&items, id).unwrap());
    // Many commits run reclamation while `late` (its snapshot before the removal) is open.
    for n in 0..50 {
        db.insert(&items, &doc(&format!("x{n}"))).unwrap();
    }
    late.put(&items, id, &doc("b")).unwrap();
    assert!(matches!(
        late.commit(),
        Err(collection_store::Error::Conflict { .. })
    ));
}

#[test]
fn concurrent_readers_keep_stable_views_while_the_writer_rewrites_and_reclaims() {
    let db = in_memory();
    let items = db.collection("items", spec()).unwrap();
    let item = |n: u32, round: u32| Item {
        code: format!("c{n}-{round}"),
        group: round % 4,
        tag: (!round.is_multiple_of(3)).then_some(u16::try_from(n).unwrap()),
    };
    let ids: Vec<u64> = (0..64)
        .map(|n| db.insert(&items, &item(n, 0)).unwrap())
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for reader in 0..2 {
            let (db, items, done) = (&db, &items, &done);
            scope.spawn(move || {
                let mut checks = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) || checks < 20 {
                    let snap = db.read();
                    let first: Vec<(u64, Item)> =
                        snap.iter(items).map(|(id, d)| (id, native(d))).collect();
                    // Every document of one snapshot comes from one commit: same round everywhere.
                    let rounds: std::collections::BTreeSet<&str> = first
                        .iter()
                        .map(|(_, i)| i.code.split('-').nth(1).unwrap())
                        .collect();
                    assert_eq!(
                        rounds.len(),
                        1,
                        "reader {reader}: a torn snapshot {rounds:?}"
                    );
                    // Re-reading the same snapshot later, after more commits and reclamation, gives the same.
                    std::thread::yield_now();
                    let again: Vec<(u64, Item)> =
                        snap.iter(items).map(|(id, d)| (id, native(d))).collect();
                    assert_eq!(first, again, "reader {reader}: the snapshot changed");
                    for (id, doc) in &first {
                        let found = snap.find_one(items, "code", &doc.code).unwrap();
                        assert_eq!(found.map(|(i, d)| (i, native(d))), Some((*id, doc.clone())));
                    }
                    snap.check_indexes(items).unwrap();
                    checks += 1;
                }
            });
        }
        for round in 1..300u32 {
            let mut tx = db.begin();
            for (n, id) in ids.iter().enumerate() {
                tx.put(&items, *id, &item(u32::try_from(n).unwrap(), round))
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // With the readers gone, the next commit reclaims everything older: what is left is that commit's own
    // garbage (a document version and a few index entries), not 300 rounds of it.
    db.put(&items, ids[0], &item(0, 1000)).unwrap();
    assert!(
        db.retained_versions() <= 16,
        "reclaimed: {}",
        db.retained_versions()
    );
}
