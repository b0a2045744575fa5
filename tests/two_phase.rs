//! Two-phase commit: participants that vote no or fail, crashes between PREPARE and the decision, and one
//! transaction committed atomically across two databases.

use std::sync::{Arc, Mutex};

use collection_store::wal::{LogStorage, MemStorage};
use collection_store::{Database, Error, Options, Participant, Spec, Vote};
use rkyv::{Archive, Serialize};

#[derive(Archive, Serialize, Debug)]
struct Item {
    name: String,
}

fn item(name: &str) -> Item {
    Item { name: name.into() }
}

fn simulated() -> (Arc<MemStorage>, Database) {
    let storage = Arc::new(MemStorage::simulated());
    let db =
        Database::open_with_storage(storage.clone() as Arc<dyn LogStorage>, Options::default())
            .unwrap();
    (storage, db)
}

fn reopen(image: MemStorage) -> Database {
    Database::open_with_storage(Arc::new(image), Options::default()).unwrap()
}

/// A user participant that records what it was told, votes as configured, and can run a hook at each phase.
#[derive(Default)]
struct Recorder {
    name: String,
    refuse: Option<String>,
    fail_commit: bool,
    log: Mutex<Vec<String>>,
    on_prepare: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    on_commit: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Participant for Recorder {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn prepare(&self, txid: u64) -> collection_store::Result<Vote> {
        self.log.lock().unwrap().push(format!("prepare {txid}"));
        if let Some(hook) = self.on_prepare.lock().unwrap().take() {
            hook();
        }
        Ok(self.refuse.clone().map_or(Vote::Commit, Vote::Abort))
    }
    fn commit(&self, txid: u64) -> collection_store::Result<()> {
        self.log.lock().unwrap().push(format!("commit {txid}"));
        if let Some(hook) = self.on_commit.lock().unwrap().take() {
            hook();
        }
        if self.fail_commit {
            return Err(Error::InvalidOptions(
                "participant storage unavailable".into(),
            ));
        }
        Ok(())
    }
    fn abort(&self, txid: u64) -> collection_store::Result<()> {
        self.log.lock().unwrap().push(format!("abort {txid}"));
        Ok(())
    }
}

#[test]
fn one_transaction_commits_atomically_across_two_databases() {
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    {
        let db1 = Database::open(dir1.path(), Options::default()).unwrap();
        let db2 = Database::open(dir2.path(), Options::default()).unwrap();
        let (a, b) = (
            db1.collection("a", Spec::<Item>::new()).unwrap(),
            db2.collection("b", Spec::<Item>::new()).unwrap(),
        );
        let mut t1 = db1.begin();
        t1.insert(&a, &item("left")).unwrap();
        let mut t2 = db2.begin();
        t2.insert(&b, &item("right")).unwrap();
        t1.enlist(t2.into_participant());
        let info = t1.commit().unwrap();
        assert!(info.participant_failures.is_empty());
        assert_eq!(db1.read().count(&a), 1);
        assert_eq!(db2.read().count(&b), 1);
    }
    let db1 = Database::open(dir1.path(), Options::default()).unwrap();
    let db2 = Database::open(dir2.path(), Options::default()).unwrap();
    let (a, b) = (
        db1.collection("a", Spec::<Item>::new()).unwrap(),
        db2.collection("b", Spec::<Item>::new()).unwrap(),
    );
    assert_eq!(db1.read().iter(&a).next().unwrap().1.name, "left");
    assert_eq!(db2.read().iter(&b).next().unwrap().1.name, "right");
    assert!(db2.in_doubt().is_empty());
}

#[test]
fn a_no_vote_aborts_everywhere() {
    let (_, db1) = simulated();
    let (_, db2) = simulated();
    let (a, b) = (
        db1.collection("a", Spec::<Item>::new()).unwrap(),
        db2.collection("b", Spec::<Item>::new()).unwrap(),
    );
    let refuser = Arc::new(Recorder {
        name: "refuser".into(),
        refuse: Some("quota exceeded".into()),
        ..Recorder::default()
    });
    let mut t1 = db1.begin();
    t1.insert(&a, &item("left")).unwrap();
    let mut t2 = db2.begin();
    t2.insert(&b, &item("right")).unwrap();
    t1.enlist(t2.into_participant());
    t1.enlist(refuser.clone());
    match t1.commit() {
        Err(Error::ParticipantAborted {
            participant,
            reason,
        }) => assert_eq!(
            (participant.as_str(), reason.as_str()),
            ("refuser", "quota exceeded")
        ),
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(db1.read().count(&a), 0);
    assert_eq!(db2.read().count(&b), 0);
    let log = refuser.log.lock().unwrap().clone();
    assert!(
        log[0].starts_with("prepare") && log[1].starts_with("abort"),
        "{log:?}"
    );
    // Both databases stay usable: the participant's commit lock was released by the abort.
    db2.insert(&b, &item("later")).unwrap();
    db1.insert(&a, &item("later")).unwrap();
}

#[test]
fn a_participant_failing_at_commit_is_reported_and_the_transaction_stays_committed() {
    let (_, db1) = simulated();
    let a = db1.collection("a", Spec::<Item>::new()).unwrap();
    let flaky = Arc::new(Recorder {
        name: "flaky".into(),
        fail_commit: true,
        ..Recorder::default()
    });
    let mut t1 = db1.begin();
    t1.insert(&a, &item("x")).unwrap();
    t1.enlist(flaky);
    let info = t1.commit().unwrap();
    assert_eq!(info.participant_failures.len(), 1);
    assert_eq!(info.participant_failures[0].0, "flaky");
    assert_eq!(db1.read().count(&a), 1);
}

#[test]
fn coordinator_crash_between_prepare_and_decision_is_presumed_abort() {
    let (storage1, db1) = simulated();
    let a = db1.collection("a", Spec::<Item>::new()).unwrap();
    db1.insert(&a, &item("before")).unwrap();
    let image: Arc<Mutex<Option<MemStorage>>> = Arc::default();
    let spy = Arc::new(Recorder {
        name: "spy".into(),
        ..Recorder::default()
    });
    {
        let (image, storage1) = (image.clone(), storage1.clone());
        *spy.on_prepare.lock().unwrap() = Some(Box::new(move || {
            *image.lock().unwrap() = Some(storage1.crash_image(|_, _| false))
        }));
    }
    let mut t1 = db1.begin();
    t1.insert(&a, &item("in doubt")).unwrap();
    t1.enlist(spy.clone());
    let txid_line = {
        t1.commit().unwrap();
        spy.log.lock().unwrap()[0].clone()
    };
    let txid: u64 = txid_line.strip_prefix("prepare ").unwrap().parse().unwrap();
    drop(db1);

    // Power lost after PREPARE was synced and before the decision: the transaction is aborted at reopen.
    let crashed = reopen(image.lock().unwrap().take().unwrap());
    let a = crashed.collection("a", Spec::<Item>::new()).unwrap();
    let names: Vec<_> = crashed
        .read()
        .iter(&a)
        .map(|(_, i)| i.name.to_string())
        .collect();
    assert_eq!(names, ["before"]);
    assert!(!crashed.decision(txid));
    let told = crashed
        .recover_participants(&[spy.clone() as Arc<dyn Participant>])
        .unwrap();
    assert_eq!(told, [txid]);
    assert!(spy.log.lock().unwrap().contains(&format!("abort {txid}")));
    crashed.insert(&a, &item("after")).unwrap();
}

#[test]
fn participant_crash_after_prepare_is_resolved_with_the_coordinators_decision() {
    let (_, db1) = simulated();
    let (storage2, db2) = simulated();
    let (a, b) = (
        db1.collection("a", Spec::<Item>::new()).unwrap(),
        db2.collection("b", Spec::<Item>::new()).unwrap(),
    );
    // Runs first at commit time, so it sees db2 prepared but not yet told the decision.
    let image: Arc<Mutex<Option<MemStorage>>> = Arc::default();
    let first = Arc::new(Recorder {
        name: "first".into(),
        ..Recorder::default()
    });
    {
        let (image, storage2) = (image.clone(), storage2.clone());
        *first.on_commit.lock().unwrap() = Some(Box::new(move || {
            *image.lock().unwrap() = Some(storage2.crash_image(|_, _| false))
        }));
    }
    let mut t1 = db1.begin();
    t1.insert(&a, &item("left")).unwrap();
    let mut t2 = db2.begin();
    t2.insert(&b, &item("right")).unwrap();
    t1.enlist(first);
    t1.enlist(t2.into_participant());
    t1.commit().unwrap();
    drop(db2);

    let crashed = reopen(image.lock().unwrap().take().unwrap());
    let b = crashed.collection("b", Spec::<Item>::new()).unwrap();
    let in_doubt = crashed.in_doubt();
    assert_eq!(in_doubt.len(), 1);
    assert_eq!(
        crashed.read().count(&b),
        0,
        "prepared writes are not visible before the decision"
    );
    assert!(matches!(
        crashed.insert(&b, &item("blocked")),
        Err(Error::InDoubt { .. })
    ));
    let txid = in_doubt[0].txid;
    assert!(db1.decision(txid));
    crashed.resolve_in_doubt(txid, db1.decision(txid)).unwrap();
    assert_eq!(crashed.read().iter(&b).next().unwrap().1.name, "right");
    crashed.insert(&b, &item("unblocked")).unwrap();
}
