//! Typed collections and transactions through the public API.

use collection_store::wal::Durability;
use collection_store::{Database, Error, Options, Spec};
use rkyv::{Archive, Serialize};

#[derive(Archive, Serialize, Debug, Clone, PartialEq)]
struct User {
    name: String,
    email: String,
    age: u32,
    team: Option<String>,
}

fn user(name: &str, age: u32, team: Option<&str>) -> User {
    User {
        name: name.into(),
        email: format!("{name}@x.io"),
        age,
        team: team.map(Into::into),
    }
}

/// A database that touches no disk.
fn in_memory(durability: Durability) -> Database {
    Database::open(
        "",
        Options {
            in_memory: true,
            durability,
            ..Options::default()
        },
    )
    .unwrap()
}

fn spec() -> Spec<User> {
    Spec::new()
        .unique("email", |u: &ArchivedUser| u.email.to_string())
        .index("age", |u: &ArchivedUser| u.age.to_native())
        .sparse("team_age", false, |u: &ArchivedUser| {
            u.team.as_ref().map(|t| (t.to_string(), u.age.to_native()))
        })
}

#[test]
fn crud_indexes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, bob);
    {
        let db = Database::open(dir.path(), Options::default()).unwrap();
        let users = db.collection("users", spec()).unwrap();
        ann = db.insert(&users, &user("ann", 30, Some("red"))).unwrap();
        bob = db.insert(&users, &user("bob", 25, None)).unwrap();
        let mut tx = db.begin();
        tx.insert(&users, &user("cid", 41, Some("red"))).unwrap();
        tx.modify(&users, bob, |u| User {
            age: u.age.to_native() + 1,
            ..user("bob", 0, Some("blue"))
        })
        .unwrap();
        assert_eq!(tx.get(&users, bob).unwrap().age, 26);
        assert_eq!(
            db.read().get(&users, bob).unwrap().age,
            25,
            "uncommitted writes are invisible"
        );
        tx.commit().unwrap();
        let snap = db.read();
        assert_eq!(snap.count(&users), 3);
        assert_eq!(snap.get(&users, ann).unwrap().name, "ann");
        let by_age: Vec<_> = snap
            .range(&users, "age", 26u32..)
            .unwrap()
            .map(|(_, u)| u.name.to_string())
            .collect();
        assert_eq!(by_age, ["bob", "ann", "cid"]);
        let (id, _) = snap
            .find_one(&users, "email", &"bob@x.io".to_string())
            .unwrap()
            .unwrap();
        assert_eq!(id, bob);
        let red: Vec<_> = snap
            .range(
                &users,
                "team_age",
                ("red".to_string(), 0u32)..=("red".to_string(), u32::MAX),
            )
            .unwrap()
            .map(|(_, u)| u.name.to_string())
            .collect();
        assert_eq!(red, ["ann", "cid"]);
        assert_eq!(
            snap.range::<_, u32>(&users, "age", ..)
                .unwrap()
                .next_back()
                .unwrap()
                .1
                .name,
            "cid"
        );
        snap.check_indexes(&users).unwrap();
    }
    let db = Database::open(dir.path(), Options::default()).unwrap();
    let users = db.collection("users", spec()).unwrap();
    let snap = db.read();
    assert_eq!(snap.count(&users), 3);
    assert_eq!(snap.get(&users, bob).unwrap().team.as_deref(), Some("blue"));
    snap.check_indexes(&users).unwrap();
    let next = db.insert(&users, &user("dan", 50, None)).unwrap();
    assert!(next > ann.max(bob));
}

#[test]
fn unique_violation_names_index_and_key_and_writes_nothing() {
    let db = in_memory(Durability::Sync);
    let users = db.collection("users", spec()).unwrap();
    db.insert(&users, &user("ann", 30, None)).unwrap();
    let mut tx = db.begin();
    tx.insert(&users, &user("zed", 1, None)).unwrap();
    tx.insert(&users, &user("ann", 31, None)).unwrap();
    match tx.commit() {
        Err(Error::UniqueViolation { index, key, .. }) => {
            assert_eq!(index, "email");
            assert!(key.contains("ann@x.io"), "{key}");
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert_eq!(db.read().count(&users), 1);
}

#[test]
fn first_committer_wins() {
    let db = in_memory(Durability::Sync);
    let users = db.collection("users", spec()).unwrap();
    let id = db.insert(&users, &user("ann", 30, None)).unwrap();
    let mut a = db.begin();
    let mut b = db.begin();
    a.update(&users, id, &user("ann", 31, None)).unwrap();
    b.update(&users, id, &user("ann", 32, None)).unwrap();
    a.commit().unwrap();
    assert!(matches!(b.commit(), Err(Error::Conflict { id: i, .. }) if i == id));
    assert_eq!(db.read().get(&users, id).unwrap().age, 31);
}

#[test]
fn savepoints_roll_back_part_of_a_transaction() {
    let db = in_memory(Durability::Sync);
    let users = db.collection("users", spec()).unwrap();
    let mut tx = db.begin();
    let a = tx.insert(&users, &user("ann", 30, None)).unwrap();
    let sp = tx.savepoint();
    let b = tx.insert(&users, &user("bob", 30, None)).unwrap();
    tx.update(&users, a, &user("ann", 99, None)).unwrap();
    tx.rollback_to(sp).unwrap();
    assert!(tx.get(&users, b).is_none());
    assert_eq!(tx.get(&users, a).unwrap().age, 30);
    tx.commit().unwrap();
    assert_eq!(db.read().count(&users), 1);
}

/// A transaction finds its own last writes by scanning while it is small and through a map once it is not
/// (`LastWrites`): reads, counts, index lookups and the commit must agree on either side of that switch, across
/// rollbacks that cross it both ways.
#[test]
fn own_writes_agree_across_the_small_transaction_threshold() {
    let db = in_memory(Durability::None);
    let users = db.collection("users", spec()).unwrap();
    let mut tx = db.begin();
    let a = tx.insert(&users, &user("ann", 1, None)).unwrap();
    // Rewrite `a` until the transaction holds many more writes than it scans, with one savepoint below the
    // switch and one above it.
    let mut low = None;
    let mut high = None;
    for age in 2..=20u32 {
        tx.update(&users, a, &user("ann", age, None)).unwrap();
        assert_eq!(tx.get(&users, a).unwrap().age, age);
        assert_eq!(tx.count(&users), 1);
        match age {
            4 => low = Some(tx.savepoint()),
            15 => high = Some(tx.savepoint()),
            _ => {}
        }
    }
    let b = tx.insert(&users, &user("bob", 7, None)).unwrap();
    assert_eq!(tx.count(&users), 2);
    tx.rollback_to(high.unwrap()).unwrap();
    assert_eq!(tx.get(&users, a).unwrap().age, 15);
    assert!(tx.get(&users, b).is_none());
    assert_eq!(tx.count(&users), 1);
    tx.rollback_to(low.unwrap()).unwrap();
    assert_eq!(tx.get(&users, a).unwrap().age, 4);
    for age in 30..40u32 {
        tx.update(&users, a, &user("ann", age, None)).unwrap();
    }
    assert_eq!(tx.get(&users, a).unwrap().age, 39);
    assert_eq!(
        tx.find_one(&users, "email", &"ann@x.io")
            .unwrap()
            .map(|(id, _)| id),
        Some(a)
    );
    let records_before = db.wal().stats().records;
    tx.commit().unwrap();
    assert_eq!(
        db.wal().stats().records,
        records_before + 2,
        "only the last write of the one document is logged, then COMMIT"
    );
    let read = db.read();
    assert_eq!(read.count(&users), 1);
    assert_eq!(read.get(&users, a).unwrap().age, 39);
}

#[test]
fn readers_keep_their_snapshot() {
    let db = in_memory(Durability::None);
    let users = db.collection("users", spec()).unwrap();
    let id = db.insert(&users, &user("ann", 30, None)).unwrap();
    let before = db.read();
    db.remove(&users, id).unwrap();
    assert_eq!(before.get(&users, id).unwrap().name, "ann");
    assert!(db.read().get(&users, id).is_none());
}

#[test]
fn bad_input_gets_typed_errors() {
    #[derive(Archive, Serialize)]
    struct Other {
        x: u64,
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        dir.path(),
        Options {
            max_document_bytes: 64,
            ..Options::default()
        },
    )
    .unwrap();
    let users = db.collection("users", spec()).unwrap();
    assert!(matches!(
        db.collection("users", Spec::<Other>::new()),
        Err(Error::WrongType { .. })
    ));
    let big = User {
        name: "x".repeat(100),
        ..user("big", 1, None)
    };
    assert!(matches!(
        db.insert(&users, &big),
        Err(Error::DocumentTooLarge { .. })
    ));
    let mut tx = db.begin();
    assert!(matches!(
        tx.update(&users, 42, &user("a", 1, None)),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Database::open(dir.path(), Options::default()),
        Err(Error::Locked { .. })
    ));
    let other = in_memory(Durability::Sync);
    let foreign = other.collection("users", spec()).unwrap();
    assert!(matches!(
        tx.insert(&foreign, &user("a", 1, None)),
        Err(Error::UnknownCollection { .. })
    ));
}

#[test]
fn reopened_collection_with_another_type_is_refused() {
    #[derive(Archive, Serialize)]
    struct Other {
        x: u64,
        y: u64,
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path(), Options::default()).unwrap();
        let users = db.collection("users", spec()).unwrap();
        db.insert(&users, &user("ann", 30, None)).unwrap();
    }
    let db = Database::open(dir.path(), Options::default()).unwrap();
    let err = db.collection("users", Spec::<Other>::new()).unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
}

#[test]
fn listeners_receive_committed_changes_in_commit_order() {
    let db = in_memory(Durability::None);
    let users = db.collection("users", spec()).unwrap();
    let early = db.insert(&users, &user("early", 1, None)).unwrap();
    let changes = db.subscribe(&users).unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (db, users) = (&db, &users);
            s.spawn(move || {
                for i in 0..50 {
                    db.insert(users, &user(&format!("u{t}-{i}"), i, None))
                        .unwrap();
                }
            });
        }
    });
    db.remove(&users, early).unwrap();
    let mut tx = db.begin();
    tx.insert(&users, &user("rolled-back", 1, None)).unwrap();
    tx.rollback();
    let received: Vec<_> = changes.try_iter().collect();
    assert_eq!(
        received.len(),
        101,
        "100 inserts and one removal, nothing from the rollback or before subscribing"
    );
    assert!(
        received.windows(2).all(|w| w[0].seq() < w[1].seq()),
        "commit order"
    );
    let last = received.last().unwrap();
    assert_eq!((last.id(), last.document().is_none()), (early, true));
    for change in &received[..100] {
        let doc = change.document().unwrap();
        assert_eq!(db.read().get(&users, change.id()).unwrap().name, doc.name);
    }
}

/// Regression: a collection handle used to keep its database open (and the directory locked) after the database
/// was dropped.
#[test]
fn dropping_the_database_releases_the_directory_even_with_handles_alive() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), Options::default()).unwrap();
    let users = db.collection("users", spec()).unwrap();
    db.insert(&users, &user("ann", 30, None)).unwrap();
    drop(db);
    let db = Database::open(dir.path(), Options::default()).unwrap();
    let mut tx = db.begin();
    assert!(
        matches!(
            tx.insert(&users, &user("bob", 1, None)),
            Err(Error::UnknownCollection { .. })
        ),
        "a handle of the closed database is refused"
    );
}

/// Regression: writes were applied one by one, so swapping unique keys between two documents in one transaction
/// failed with a spurious unique violation.
#[test]
fn a_transaction_can_swap_unique_keys_between_its_documents() {
    let db = in_memory(Durability::Sync);
    let users = db.collection("users", spec()).unwrap();
    let a = db.insert(&users, &user("ann", 30, None)).unwrap();
    let b = db.insert(&users, &user("bob", 31, None)).unwrap();
    let mut tx = db.begin();
    tx.update(
        &users,
        a,
        &User {
            email: "bob@x.io".into(),
            ..user("ann", 30, None)
        },
    )
    .unwrap();
    tx.update(
        &users,
        b,
        &User {
            email: "ann@x.io".into(),
            ..user("bob", 31, None)
        },
    )
    .unwrap();
    tx.commit().unwrap();
    let snap = db.read();
    assert_eq!(
        snap.find_one(&users, "email", &"bob@x.io".to_string())
            .unwrap()
            .unwrap()
            .0,
        a
    );
    assert_eq!(
        snap.find_one(&users, "email", &"ann@x.io".to_string())
            .unwrap()
            .unwrap()
            .0,
        b
    );
    snap.check_indexes(&users).unwrap();
}

/// Regression: a handle of one database used on another's snapshot read that database's slot with the handle's
/// type (an unchecked access of possibly another type). Foreign handles now see nothing, or get a typed error.
#[test]
fn a_handle_of_another_database_reads_nothing_there() {
    #[derive(Archive, Serialize)]
    struct Other {
        x: u64,
    }
    let db1 = in_memory(Durability::Sync);
    let db2 = in_memory(Durability::Sync);
    let users = db1.collection("users", spec()).unwrap();
    let others = db2.collection("others", Spec::<Other>::new()).unwrap();
    let id = db2.insert(&others, &Other { x: 7 }).unwrap();
    let snap = db2.read();
    assert!(snap.get(&users, id).is_none());
    assert_eq!(snap.count(&users), 0);
    assert!(matches!(
        snap.range::<_, u32>(&users, "age", ..),
        Err(Error::UnknownCollection { .. })
    ));
    assert!(db2.begin().get(&users, id).is_none());
}

/// Regression: a snapshot (or transaction) taken before a recovered collection was bound in this process has a
/// store without its indexes; index reads through the new handle used to find nothing there. They now scan.
#[test]
fn index_reads_of_a_snapshot_from_before_the_binding_scan() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path(), Options::default()).unwrap();
        let users = db.collection("users", spec()).unwrap();
        db.insert(&users, &user("ann", 30, None)).unwrap();
        db.insert(&users, &user("bob", 40, Some("x"))).unwrap();
    }
    let db = Database::open(dir.path(), Options::default()).unwrap();
    let before = db.read();
    let tx = db.begin();
    let users = db.collection("users", spec()).unwrap();
    let found = before
        .find_one(&users, "email", &"bob@x.io".to_string())
        .unwrap()
        .map(|(_, u)| u.name.to_string());
    assert_eq!(found.as_deref(), Some("bob"));
    let ages: Vec<u32> = before
        .range(&users, "age", 0u32..=100)
        .unwrap()
        .map(|(_, u)| u.age.to_native())
        .collect();
    assert_eq!(ages, vec![30, 40]);
    let in_tx: Vec<u32> = tx
        .range(&users, "age", 35u32..)
        .unwrap()
        .map(|(_, u)| u.age.to_native())
        .collect();
    assert_eq!(in_tx, vec![40]);
    // The same reads from a snapshot taken after the binding go through the index.
    assert_eq!(
        db.read().range(&users, "age", 0u32..=100).unwrap().count(),
        2
    );
}
