//! Checkpoints: reopening from snapshots plus the log after the cut, truncation of the log, removal of superseded
//! snapshots, damaged checkpoint files, and a crash at every step of a checkpoint (simulated power loss of the
//! checkpoint files and of the log).

use std::collections::BTreeMap;
use std::sync::Arc;

use collection_store::checkpoint::files::MemFiles;
use collection_store::wal::{Durability, MemStorage};
use collection_store::{Collection, Database, Error, Options, Spec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rkyv::{Archive, Serialize};

#[derive(Archive, Serialize, Debug, Clone, PartialEq)]
struct Note {
    title: String,
    words: u32,
    body: Vec<u8>,
}

fn spec() -> Spec<Note> {
    Spec::new()
        .unique("title", |n: &ArchivedNote| n.title.to_string())
        .index("words", |n: &ArchivedNote| n.words.to_native())
}

fn owned(n: &ArchivedNote) -> Note {
    Note {
        title: n.title.to_string(),
        words: n.words.to_native(),
        body: n.body.to_vec(),
    }
}

type Model = BTreeMap<u64, Note>;

fn note(rng: &mut SmallRng, serial: u64) -> Note {
    let len = rng.random_range(0..300);
    Note {
        title: format!("t{serial}"),
        words: rng.random_range(0..20),
        body: (0..len).map(|i| (i as u8).wrapping_mul(7)).collect(),
    }
}

/// Random inserts, replacements and removals, each its own `Sync` commit; the model follows.
fn churn(
    db: &Database,
    notes: &Collection<Note>,
    model: &mut Model,
    rng: &mut SmallRng,
    commits: usize,
) {
    for _ in 0..commits {
        let serial = rng.random::<u64>();
        let ids: Vec<u64> = model.keys().copied().collect();
        match rng.random_range(0..10) {
            0..5 => {
                let n = note(rng, serial);
                let id = db.insert(notes, &n).unwrap();
                model.insert(id, n);
            }
            5..8 if !ids.is_empty() => {
                let id = ids[rng.random_range(0..ids.len())];
                let n = note(rng, serial);
                db.put(notes, id, &n).unwrap();
                model.insert(id, n);
            }
            _ if !ids.is_empty() => {
                let id = ids[rng.random_range(0..ids.len())];
                assert!(db.remove(notes, id).unwrap());
                model.remove(&id);
            }
            _ => {}
        }
    }
}

fn assert_state(db: &Database, notes: &Collection<Note>, model: &Model, label: &str) {
    let snap = db.read();
    let found: Model = snap.iter(notes).map(|(id, n)| (id, owned(n))).collect();
    assert_eq!(&found, model, "{label}: documents");
    assert_eq!(snap.count(notes), model.len(), "{label}: count");
    for (id, n) in model {
        let by_title = snap.find_one(notes, "title", &n.title).unwrap();
        assert_eq!(by_title.map(|(i, _)| i), Some(*id), "{label}: unique index");
    }
    snap.check_indexes(notes)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
}

fn small_segments() -> Options {
    Options {
        segment_size_bytes: 64 << 10,
        ..Options::default()
    }
}

/// A database in memory that keeps checkpoint files (in memory too), with small segments.
fn in_memory_with_files() -> Database {
    Database::open_with(
        Arc::new(MemStorage::new()),
        Arc::new(MemFiles::new()),
        small_segments(),
    )
    .unwrap()
}

fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn reopening_from_a_checkpoint_and_the_log_after_it_finds_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut model = Model::new();
    let mut other = Model::new();
    {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        let drafts = db.collection("drafts", Spec::<Note>::new()).unwrap();
        churn(&db, &notes, &mut model, &mut rng, 400);
        churn(&db, &drafts, &mut other, &mut rng, 50);
        let before = db.wal().start_lsn();
        let info = db.checkpoint().unwrap();
        assert_eq!(info.seq, db.read().seq());
        assert!(
            db.wal().start_lsn() > before,
            "segments before the cut are gone"
        );
        assert_eq!(snapshot_files(dir.path()).len(), 2);
        // Commits after the cut live in the log only.
        churn(&db, &notes, &mut model, &mut rng, 100);
    }
    {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        let drafts = db.collection("drafts", Spec::<Note>::new()).unwrap();
        assert_state(&db, &notes, &model, "after reopening");
        let found: Model = db
            .read()
            .iter(&drafts)
            .map(|(id, n)| (id, owned(n)))
            .collect();
        assert_eq!(found, other);
        // New ids continue after the recovered ones.
        let id = db.insert(&notes, &note(&mut rng, 1)).unwrap();
        assert!(model.keys().all(|k| *k < id));
        model.insert(id, note(&mut SmallRng::seed_from_u64(0), 1));
        db.put(&notes, id, &model[&id]).unwrap();
        let first = snapshot_files(dir.path());
        db.checkpoint().unwrap();
        let second = snapshot_files(dir.path());
        assert_eq!(second.len(), 2, "superseded snapshots removed: {second:?}");
        // "notes" changed: its snapshot is replaced; "drafts" did not: its snapshot stays.
        assert_eq!(
            first.iter().filter(|f| !second.contains(f)).count(),
            1,
            "{first:?} -> {second:?}"
        );
        churn(&db, &notes, &mut model, &mut rng, 50);
    }
    let db = Database::open(dir.path(), small_segments()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    assert_state(&db, &notes, &model, "after the second checkpoint");
}

#[test]
fn an_in_memory_database_releases_its_log_at_checkpoints() {
    let db = Database::open(
        "",
        Options {
            in_memory: true,
            durability: Durability::None,
            segment_size_bytes: 64 << 10,
            ..Options::default()
        },
    )
    .unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    let mut model = Model::new();
    let mut rng = SmallRng::seed_from_u64(3);
    churn(&db, &notes, &mut model, &mut rng, 2000);
    let info = db.checkpoint().unwrap();
    assert!(info.wal_start_lsn > 0);
    assert_eq!(db.wal().start_lsn(), info.wal_start_lsn);
    assert_state(&db, &notes, &model, "after the checkpoint");
}

#[test]
fn damaged_checkpoint_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    let mut model = Model::new();
    {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        churn(&db, &notes, &mut model, &mut rng, 100);
        db.checkpoint().unwrap();
    }
    let snapshot = dir
        .path()
        .join("snapshots")
        .join(&snapshot_files(dir.path())[0]);
    let good = std::fs::read(&snapshot).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x10;
    std::fs::write(&snapshot, &bad).unwrap();
    match Database::open(dir.path(), small_segments()) {
        Err(Error::Corruption { file, .. }) => assert!(file.starts_with("snapshots/c0-"), "{file}"),
        other => panic!("a flipped bit in a snapshot: {other:?}"),
    }
    std::fs::write(&snapshot, &good).unwrap();
    let manifest = dir.path().join("MANIFEST");
    let whole = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &whole[..whole.len() - 3]).unwrap();
    match Database::open(dir.path(), small_segments()) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, "MANIFEST"),
        other => panic!("a truncated manifest: {other:?}"),
    }
    std::fs::write(&manifest, &whole).unwrap();
    std::fs::remove_file(&snapshot).unwrap();
    match Database::open(dir.path(), small_segments()) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert!(file.starts_with("snapshots/"), "{file}");
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("a missing snapshot: {other:?}"),
    }
    std::fs::write(&snapshot, &good).unwrap();
    let db = Database::open(dir.path(), small_segments()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    assert_state(&db, &notes, &model, "with the files repaired");
}

/// A database on a simulated disk with a first checkpoint done and commits after it.
fn simulated(rng: &mut SmallRng) -> (Arc<MemStorage>, Arc<MemFiles>, Database, Model) {
    let wal = Arc::new(MemStorage::simulated());
    let files = MemFiles::simulated();
    let db = Database::open_with(wal.clone(), files.clone(), small_segments()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    let mut model = Model::new();
    churn(&db, &notes, &mut model, rng, 150);
    db.checkpoint().unwrap();
    churn(&db, &notes, &mut model, rng, 150);
    (wal, files, db, model)
}

#[test]
fn a_crash_at_any_step_of_a_checkpoint_loses_no_commit() {
    // How many file steps a whole checkpoint takes here.
    let total = {
        let (_, files, db, _) = simulated(&mut SmallRng::seed_from_u64(1));
        let before = files.steps();
        db.checkpoint().unwrap();
        files.steps() - before
    };
    assert!(
        total >= 8,
        "a checkpoint writes a snapshot and a manifest: {total} steps"
    );
    for step in 0..=total {
        let mut rng = SmallRng::seed_from_u64(1);
        let (wal, files, db, model) = simulated(&mut rng);
        files.fail_at_step(files.steps() + step);
        let result = db.checkpoint();
        assert_eq!(
            result.is_ok(),
            step == total,
            "step {step} of {total}: {result:?}"
        );
        for renames_survive in [false, true] {
            for log_kept in [false, true] {
                let label = format!(
                    "crash at step {step} of {total}, renames {renames_survive}, log {log_kept}"
                );
                let log = Arc::new(wal.crash_image(|_, _| log_kept));
                let db =
                    Database::open_with(log, files.crash_image(renames_survive), small_segments())
                        .unwrap_or_else(|e| panic!("{label}: {e}"));
                let notes = db.collection("notes", spec()).unwrap();
                assert_state(&db, &notes, &model, &label);
            }
        }
        drop(db);
    }
}

fn auto(wal_bytes: u64, interval: std::time::Duration) -> Options {
    Options {
        auto_checkpoint: Some(collection_store::AutoCheckpoint {
            wal_bytes,
            interval,
        }),
        ..small_segments()
    }
}

/// Polls `done` for up to 20 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn background_checkpoints_bound_the_log_and_never_keep_the_directory_locked() {
    let dir = tempfile::tempdir().unwrap();
    let options = auto(256 << 10, std::time::Duration::from_secs(3600));
    let mut rng = SmallRng::seed_from_u64(5);
    let mut model = Model::new();
    for round in 0..6 {
        // Every drop stops the checkpointer (waiting for a checkpoint it is writing) before closing, so reopening
        // right away never finds the directory locked.
        let db = Database::open(dir.path(), options.clone()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        assert_state(&db, &notes, &model, &format!("round {round}"));
        churn(&db, &notes, &mut model, &mut rng, 600);
        let bounded = eventually(|| {
            let wal = db.wal();
            wal.end_lsn() - wal.start_lsn() <= (256 << 10) + 3 * (64 << 10)
        });
        assert!(
            bounded,
            "round {round}: log {}..{}",
            db.wal().start_lsn(),
            db.wal().end_lsn()
        );
        assert_eq!(db.background_checkpoint_error(), None);
    }
    let db = Database::open(dir.path(), options).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    assert_state(&db, &notes, &model, "at the end");
}

#[test]
fn a_checkpoint_also_comes_with_age() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        dir.path(),
        auto(u64::MAX, std::time::Duration::from_millis(100)),
    )
    .unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    let mut model = Model::new();
    churn(&db, &notes, &mut model, &mut SmallRng::seed_from_u64(9), 20);
    assert!(eventually(|| dir.path().join("MANIFEST").exists()));
}

#[test]
fn a_database_without_kept_checkpoint_files_refuses_to_checkpoint() {
    let db =
        Database::open_with_storage(Arc::new(MemStorage::simulated()), small_segments()).unwrap();
    assert!(matches!(db.checkpoint(), Err(Error::InvalidOptions(_))));
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                disk_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn disk_use_stays_bounded_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let segment = 64u64 << 10;
    let db = Database::open(dir.path(), small_segments()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    let mut rng = SmallRng::seed_from_u64(21);
    let mut model = Model::new();
    for n in 0..200 {
        let id = db.insert(&notes, &note(&mut rng, n)).unwrap();
        model.insert(id, note(&mut rng, n));
        db.put(&notes, id, &model[&id]).unwrap();
    }
    let ids: Vec<u64> = model.keys().copied().collect();
    let mut largest = 0;
    for round in 0..30u64 {
        // 300 replacements (about 100 KiB of log), then a checkpoint.
        for i in 0..300u64 {
            let id = ids[rng.random_range(0..ids.len())];
            let n = note(&mut rng, 1000 + round * 300 + i);
            let n = Note {
                title: model[&id].title.clone(),
                ..n
            };
            db.put(&notes, id, &n).unwrap();
            model.insert(id, n);
        }
        db.checkpoint().unwrap();
        let snapshot: u64 = snapshot_files(dir.path())
            .iter()
            .map(|f| {
                std::fs::metadata(dir.path().join("snapshots").join(f))
                    .unwrap()
                    .len()
            })
            .sum();
        let used = disk_bytes(dir.path());
        // Twice the live data (a snapshot being replaced), the segment being written, the one prepared next, the
        // free pool (2), the log since the cut (none here), and the small files.
        let bound = 2 * snapshot + 4 * segment + (16 << 10);
        assert!(
            used <= bound,
            "round {round}: {used} bytes on disk, bound {bound} (snapshot {snapshot})"
        );
        largest = largest.max(used);
    }
    assert_state(&db, &notes, &model, "after the churn");
    assert!(
        largest < 1 << 20,
        "30 rounds of churn left at most {largest} bytes"
    );
}

#[test]
fn a_manifest_naming_a_collection_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let salt = {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        churn(
            &db,
            &notes,
            &mut Model::new(),
            &mut SmallRng::seed_from_u64(2),
            20,
        );
        db.checkpoint().unwrap();
        db.wal().salt()
    };
    let manifest_path = dir.path().join("MANIFEST");
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&std::fs::read(&manifest_path).unwrap());
    let mut manifest =
        collection_store::checkpoint::open_manifest("MANIFEST", salt, &aligned).unwrap();
    let twice = manifest.collections[0].clone();
    manifest.collections.push(twice);
    let encoded = collection_store::checkpoint::encode_manifest(salt, &manifest);
    std::fs::write(&manifest_path, &encoded[..]).unwrap();
    match Database::open(dir.path(), small_segments()) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, "MANIFEST");
            assert!(reason.contains("twice"), "{reason}");
        }
        other => panic!("a manifest naming a collection twice: {other:?}"),
    }
}

#[test]
fn a_checkpoint_keeps_the_snapshot_of_a_collection_unchanged_since_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(31);
    let (mut busy, mut quiet) = (Model::new(), Model::new());
    let first = {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("busy", spec()).unwrap();
        let archive = db.collection("quiet", spec()).unwrap();
        churn(&db, &notes, &mut busy, &mut rng, 100);
        churn(&db, &archive, &mut quiet, &mut rng, 300);
        let whole = db.checkpoint().unwrap();
        let files = snapshot_files(dir.path());
        churn(&db, &notes, &mut busy, &mut rng, 20);
        let partial = db.checkpoint().unwrap();
        assert!(
            partial.bytes_written < whole.bytes_written,
            "only the changed collection is written again: {} then {}",
            whole.bytes_written,
            partial.bytes_written
        );
        let now = snapshot_files(dir.path());
        assert!(
            now.contains(&files[1]),
            "quiet's snapshot kept: {files:?} -> {now:?}"
        );
        assert!(
            !now.contains(&files[0]),
            "busy's snapshot replaced: {files:?} -> {now:?}"
        );
        now
    };
    let db = Database::open(dir.path(), small_segments()).unwrap();
    let notes = db.collection("busy", spec()).unwrap();
    let archive = db.collection("quiet", spec()).unwrap();
    assert_state(&db, &notes, &busy, "busy");
    assert_state(&db, &archive, &quiet, "quiet");
    // Still unchanged after a reopen: a checkpoint now writes only the manifest.
    churn(&db, &notes, &mut busy, &mut rng, 5);
    db.checkpoint().unwrap();
    assert!(snapshot_files(dir.path()).contains(&first[1]));
}

#[test]
fn a_crash_between_the_steps_of_the_log_truncation_loses_no_commit() {
    // The manifest is durable by then; the log's meta rewrite and each segment retired or removed may be the last
    // step that happened.
    let mut failed = 0;
    for steps in 0..8u64 {
        let mut rng = SmallRng::seed_from_u64(4);
        let (wal, files, db, model) = simulated(&mut rng);
        wal.fail_truncation_steps_after(Some(steps));
        if db.checkpoint().is_err() {
            failed += 1;
        }
        for log_kept in [false, true] {
            let label = format!("truncation stopped after {steps} steps, log {log_kept}");
            let log = Arc::new(wal.crash_image(|_, _| log_kept));
            let db = Database::open_with(log, files.crash_image(false), small_segments())
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let notes = db.collection("notes", spec()).unwrap();
            assert_state(&db, &notes, &model, &label);
            // And it goes on: a commit and a checkpoint after the crash.
            db.checkpoint()
                .unwrap_or_else(|e| panic!("{label}: checkpoint after reopen: {e}"));
        }
    }
    assert!(
        failed >= 2,
        "the truncation has several steps to stop at ({failed} stopped)"
    );
}

/// Documents between two that break a unique index (see below): more than the smallest range a rebuild gives a
/// thread of its own.
const BETWEEN_TWINS: u64 = 40_000;

#[test]
fn binding_recovered_documents_that_break_a_new_unique_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let twin = |words| Note {
        title: "same".into(),
        words,
        body: vec![],
    };
    let (first, second) = {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        // No unique index yet: two documents share a title.
        let notes = db.collection("notes", Spec::<Note>::new()).unwrap();
        let first = db.insert(&notes, &twin(1)).unwrap();
        // Enough documents between the twins that a rebuild on several threads puts them in different ranges.
        for batch in 0..BETWEEN_TWINS / 500 {
            let mut tx = db.begin();
            for n in batch * 500..(batch + 1) * 500 {
                let note = Note {
                    title: format!("n{n}"),
                    words: 0,
                    body: vec![],
                };
                tx.insert(&notes, &note).unwrap();
            }
            tx.commit().unwrap();
        }
        let second = db.insert(&notes, &twin(2)).unwrap();
        (first, second)
    };
    for checkpointed in [false, true] {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        match db.collection("notes", spec()) {
            Err(Error::UniqueViolation {
                index, key, holder, ..
            }) => {
                assert_eq!(index, "title");
                assert!(key.contains("same"), "{key}");
                assert!([first, second].contains(&holder), "holder {holder}");
            }
            other => panic!("checkpointed {checkpointed}: {other:?}"),
        }
        // Refused, nothing bound: the collection still opens without the index.
        let notes = db.collection("notes", Spec::<Note>::new()).unwrap();
        assert_eq!(db.read().count(&notes) as u64, BETWEEN_TWINS + 2);
        if !checkpointed {
            db.checkpoint().unwrap();
        }
    }
}

/// Two document types with one name (hence one type label) whose archives differ only in what validates: a
/// `u8` flag written by `v1` is a `bool` for `v2`.
mod v1 {
    #[derive(rkyv::Archive, rkyv::Serialize)]
    pub struct Flagged {
        pub flag: u8,
        pub n: u64,
    }
}

mod v2 {
    #[derive(rkyv::Archive, rkyv::Serialize)]
    pub struct Flagged {
        pub flag: bool,
        pub n: u64,
    }
}

#[test]
fn binding_refuses_a_recovered_document_that_does_not_validate_wherever_it_lies() {
    let dir = tempfile::tempdir().unwrap();
    const DOCS: u64 = 40_000;
    let bad = {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let flags = db.collection("flags", Spec::<v1::Flagged>::new()).unwrap();
        for batch in 0..DOCS / 1000 {
            let mut tx = db.begin();
            for n in batch * 1000..(batch + 1) * 1000 {
                // One document, in the last range of a rebuild, holds a flag no `bool` can be.
                let flag = if n == DOCS - 10 { 7 } else { (n % 2) as u8 };
                tx.insert(&flags, &v1::Flagged { flag, n }).unwrap();
            }
            tx.commit().unwrap();
        }
        db.read()
            .iter(&flags)
            .find(|(_, f)| f.flag == 7)
            .map(|(id, _)| id)
            .unwrap()
    };
    for checkpointed in [false, true] {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        match db.collection("flags", Spec::<v2::Flagged>::new()) {
            Err(Error::WrongType { found, .. }) => {
                assert!(found.contains(&format!("document {bad} ")), "{found}");
            }
            Err(other) => panic!("checkpointed {checkpointed}: {other}"),
            Ok(_) => panic!("checkpointed {checkpointed}: bound over an invalid document"),
        }
        let flags = db.collection("flags", Spec::<v1::Flagged>::new()).unwrap();
        assert_eq!(db.read().count(&flags) as u64, DOCS);
        if !checkpointed {
            db.checkpoint().unwrap();
        }
    }
}

#[test]
fn a_stored_index_whose_key_function_changed_is_rebuilt_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    // "by" first orders notes by their word count, later by the length of their body: the same name, another
    // function. Both are non-unique; "title" stays what it was.
    let by_words = || spec().index("by", |n: &ArchivedNote| n.words.to_native());
    let by_length = || spec().index("by", |n: &ArchivedNote| n.body.len() as u32);
    let mut model = Model::new();
    {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("notes", by_words()).unwrap();
        let mut rng = SmallRng::seed_from_u64(11);
        for serial in 0..300 {
            let note = note(&mut rng, serial);
            let id = db.insert(&notes, &note).unwrap();
            model.insert(id, note);
        }
        db.checkpoint().unwrap();
    }
    for (round, by) in [
        ("same function", by_words()),
        ("changed function", by_length()),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (label, spec))| ((i, label), spec))
    {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("notes", by).unwrap();
        let snap = db.read();
        snap.check_indexes(&notes)
            .unwrap_or_else(|e| panic!("{round:?}: {e}"));
        let key = |n: &Note| {
            if round.0 == 0 {
                n.words
            } else {
                n.body.len() as u32
            }
        };
        let mut expected: Vec<(u32, u64)> = model.iter().map(|(id, n)| (key(n), *id)).collect();
        expected.sort_unstable();
        let found: Vec<(u32, u64)> = snap
            .range(&notes, "by", 0u32..)
            .unwrap()
            .map(|(id, n)| (key(&owned(n)), id))
            .collect();
        assert_eq!(found, expected, "{round:?}");
        // A checkpoint now stores the index the new function builds; the next round reopens from it.
        drop(snap);
        db.put(&notes, 0, &model[&0]).unwrap();
        db.checkpoint().unwrap();
    }
}

#[test]
fn recovery_reports_every_stage_in_order_through_one_callback() {
    use collection_store::progress::{RecoveryProgress, RecoveryStage};
    use std::sync::Mutex;

    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    {
        let db = Database::open(dir.path(), small_segments()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        for serial in 0..200 {
            db.insert(&notes, &note(&mut rng, serial)).unwrap();
        }
        db.checkpoint().unwrap();
        // After the cut: more notes, and a collection the checkpoint does not have.
        for serial in 200..400 {
            db.insert(&notes, &note(&mut rng, serial)).unwrap();
        }
        let later = db.collection("later", Spec::<Note>::new()).unwrap();
        db.insert(&later, &note(&mut rng, 1000)).unwrap();
    }
    let reports: Arc<Mutex<Vec<RecoveryProgress>>> = Arc::default();
    let sink = Arc::clone(&reports);
    let options = Options {
        progress: Some(Arc::new(move |p| sink.lock().unwrap().push(p))),
        ..small_segments()
    };
    let db = Database::open(dir.path(), options).unwrap();
    let reports = reports.lock().unwrap().clone();
    let mut stages: Vec<RecoveryStage> = reports.iter().map(|r| r.stage).collect();
    stages.dedup();
    assert_eq!(
        stages,
        [
            RecoveryStage::LogScan,
            RecoveryStage::Snapshots,
            RecoveryStage::Replay,
            RecoveryStage::Fold
        ],
        "{reports:?}"
    );
    for stage in stages {
        let of: Vec<&RecoveryProgress> = reports.iter().filter(|r| r.stage == stage).collect();
        assert!(
            of.windows(2)
                .all(|w| w[0].done <= w[1].done && w[0].total == w[1].total),
            "{stage:?}: {of:?}"
        );
        let last = of.last().unwrap();
        assert_eq!(last.done, last.total, "{stage:?} ends complete");
        let log = db.recovery_report();
        match stage {
            // At least the segment holding the cut; units are segments.
            RecoveryStage::LogScan => assert!(last.total >= 1, "{last:?}"),
            // Only "notes" was in the checkpoint.
            RecoveryStage::Snapshots => assert_eq!(last.total, 1),
            // The log from the cut to its end, in bytes.
            RecoveryStage::Replay => {
                assert!(
                    last.total > 0 && last.total <= log.end_lsn - log.start_lsn,
                    "{last:?}"
                );
            }
            // Both collections were written after the cut.
            RecoveryStage::Fold => assert_eq!(last.total, 2),
        }
    }
    let notes = db.collection("notes", spec()).unwrap();
    assert_eq!(db.read().count(&notes), 400);
}

#[test]
fn checkpoints_rebase_collections_while_writers_commit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const CHECKPOINTS: usize = 40;

    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        durability: Durability::None,
        auto_checkpoint: None,
        ..small_segments()
    };
    let db = Database::open(dir.path(), options()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    let stop = AtomicBool::new(false);
    // Commits made so far: each checkpoint waits for new ones, so that it has something to re-base even when the
    // writers are starved of CPU (CI runs tests side by side on two cores).
    let commits = std::sync::atomic::AtomicU64::new(0);
    /// Stops the writers however the checkpointing thread leaves the scope (a panic included: the scope waits for
    /// its threads before unwinding).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let (models, rebased) = std::thread::scope(|s| {
        let stop_writers = StopOnDrop(&stop);
        // Two writers on disjoint ids (and titles): replacements that move titles between their own documents,
        // removals and inserts, each its own commit.
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (db, notes, stop, commits) = (&db, &notes, &stop, &commits);
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(w);
                    let mut model = Model::new();
                    let mut serial = 0u64;
                    while !stop.load(Ordering::Relaxed) || serial < 300 {
                        let id = w * 1_000_000 + rng.random_range(0..200);
                        serial += 1;
                        if rng.random_bool(0.2) {
                            db.remove(notes, id).unwrap();
                            commits.fetch_add(1, Ordering::Relaxed);
                            model.remove(&id);
                        } else {
                            let mut note = note(&mut rng, serial);
                            note.title = format!("w{w}-{}", rng.random_range(0..400));
                            if model
                                .iter()
                                .any(|(other, n)| *other != id && n.title == note.title)
                            {
                                continue;
                            }
                            db.put(notes, id, &note).unwrap();
                            commits.fetch_add(1, Ordering::Relaxed);
                            model.insert(id, note);
                        }
                    }
                    model
                })
            })
            .collect();
        let mut rebased = 0;
        for _ in 0..CHECKPOINTS {
            let seen = commits.load(Ordering::Relaxed);
            // Two more: the second was made after the first was counted, so after the last checkpoint returned.
            while commits.load(Ordering::Relaxed) < seen + 2
                && !writers.iter().all(|w| w.is_finished())
            {
                std::thread::yield_now();
            }
            rebased += db.checkpoint().unwrap().rebased;
            let snap = db.read();
            snap.check_indexes(&notes).unwrap();
        }
        drop(stop_writers);
        let models: Vec<Model> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        (models, rebased)
    });
    // Each checkpoint comes after a commit it has not seen, so each writes the collection and re-bases it (the
    // first may still find the store's first write already in its base).
    assert!(
        rebased >= CHECKPOINTS - 1,
        "{rebased} of {CHECKPOINTS} checkpoints re-based the collection"
    );
    let expected: Model = models.into_iter().flatten().collect();
    let check = |db: &Database, notes: &Collection<Note>, label: &str| {
        let snap = db.read();
        let found: Model = snap.iter(notes).map(|(id, n)| (id, owned(n))).collect();
        assert!(
            found == expected,
            "{label}: {} documents, expected {}",
            found.len(),
            expected.len()
        );
        snap.check_indexes(notes)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        for (id, note) in &expected {
            let (holder, _) = snap.find_one(notes, "title", &note.title).unwrap().unwrap();
            assert_eq!(holder, *id, "{label}: title {}", note.title);
        }
    };
    check(&db, &notes, "after the writers");
    db.checkpoint().unwrap();
    check(&db, &notes, "after a last checkpoint");
    drop(notes);
    drop(db);
    let db = Database::open(dir.path(), options()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    check(&db, &notes, "reopened");
}

#[test]
fn a_transaction_spanning_a_rebase_conflicts_exactly_as_without_one() {
    for removal in [false, true] {
        let db = in_memory_with_files();
        let notes = db.collection("notes", spec()).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        let quiet = db.insert(&notes, &note(&mut rng, 1)).unwrap();
        let busy = db.insert(&notes, &note(&mut rng, 2)).unwrap();
        let gone = db.insert(&notes, &note(&mut rng, 3)).unwrap();
        let mut tx = db.begin();
        // After the transaction began: `busy` is rewritten (and `gone` removed) by another commit.
        db.put(&notes, busy, &note(&mut rng, 4)).unwrap();
        if removal {
            assert!(db.remove(&notes, gone).unwrap());
        }
        let info = db.checkpoint().unwrap();
        assert_eq!(info.rebased, 1);
        // Untouched since the transaction began: no conflict, although its last write is now in the base.
        tx.put(&notes, quiet, &note(&mut rng, 5)).unwrap();
        tx.commit().unwrap();
        let mut tx = db.begin();
        db.checkpoint().unwrap();
        tx.put(&notes, quiet, &note(&mut rng, 6)).unwrap();
        tx.commit().unwrap();
        // Written after a transaction began: a conflict, before and after the re-base.
        for id in [busy, gone] {
            let mut tx = db.begin();
            db.put(&notes, id, &note(&mut rng, 7 + id)).unwrap();
            assert_eq!(db.checkpoint().unwrap().rebased, 1);
            tx.put(&notes, id, &note(&mut rng, 20 + id)).unwrap();
            assert!(
                matches!(tx.commit(), Err(Error::Conflict { .. })),
                "document {id} (removal {removal})"
            );
        }
    }
}

#[test]
fn a_store_replaced_by_a_rebase_is_freed_once_no_snapshot_reads_it() {
    let db = in_memory_with_files();
    let notes = db.collection("notes", spec()).unwrap();
    let mut rng = SmallRng::seed_from_u64(9);
    let mut serial = 0;
    let mut write_and_checkpoint = |db: &Database| {
        serial += 1;
        db.insert(&notes, &note(&mut rng, serial)).unwrap();
        let info = db.checkpoint().unwrap();
        assert_eq!(info.rebased, 1);
        info.stores_retained
    };
    // The store a re-base replaced is retired; the next checkpoint frees it (nothing reads it).
    assert_eq!(write_and_checkpoint(&db), 1);
    assert_eq!(write_and_checkpoint(&db), 1);
    // A snapshot reading the current store keeps it, through any number of re-bases.
    let held = db.read();
    let seen = held.count(&notes);
    assert_eq!(
        write_and_checkpoint(&db),
        1,
        "the store before `held` is freed"
    );
    assert_eq!(write_and_checkpoint(&db), 2, "`held`'s store is kept");
    assert_eq!(write_and_checkpoint(&db), 2);
    assert_eq!(held.count(&notes), seen);
    assert!(held.iter(&notes).count() == seen);
    drop(held);
    assert_eq!(write_and_checkpoint(&db), 1, "freed once `held` is gone");
}

/// Regression (found by `txn_model` in CI): a log reopened after its writer stopped without syncing took the bytes
/// it recovered for durable; a checkpoint then put its cut past them, and a power loss after that left a manifest
/// pointing past the end of the log (`Error::Corruption` at open: "the log holds 0..160, but the last checkpoint
/// continues at 296"). Recovery now syncs what it found.
#[test]
fn a_checkpoint_after_reopening_an_unsynced_log_survives_power_loss() {
    let wal = Arc::new(MemStorage::simulated());
    let files = MemFiles::simulated();
    let options = || Options {
        durability: Durability::None,
        auto_checkpoint: None,
        ..small_segments()
    };
    let mut rng = SmallRng::seed_from_u64(12);
    let written = note(&mut rng, 1);
    let id = {
        let db = Database::open_with(wal.clone(), files.clone(), options()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        // Not synced: the writer stops with it in the (simulated) page cache only.
        db.insert(&notes, &written).unwrap()
    };
    {
        let db = Database::open_with(wal.clone(), files.clone(), options()).unwrap();
        let _notes = db.collection("notes", spec()).unwrap();
        db.checkpoint().unwrap();
    }
    // Power loss: every write not synced is lost, renames not synced too.
    let log = Arc::new(wal.crash_image(|_, _| false));
    let db = Database::open_with(log, files.crash_image(false), options())
        .unwrap_or_else(|e| panic!("reopen after power loss: {e}"));
    let notes = db.collection("notes", spec()).unwrap();
    assert_eq!(
        db.read().get(&notes, id).map(owned),
        Some(written),
        "the checkpoint holds the document, and the log is whole up to its cut"
    );
}

/// Checkpoint files that damage (one flipped bit) the next snapshot written after `armed` is set, as a disk
/// returning other bytes than it was given would.
struct FlipNextSnapshot {
    inner: MemFiles,
    armed: std::sync::atomic::AtomicBool,
}

impl collection_store::checkpoint::files::CheckpointFiles for FlipNextSnapshot {
    fn write_durably(&self, name: &str, bytes: &[u8]) -> collection_store::Result<()> {
        if name.ends_with(".snap") && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let mut damaged = bytes.to_vec();
            let at = damaged.len() / 2;
            damaged[at] ^= 0x10;
            return self.inner.write_durably(name, &damaged);
        }
        self.inner.write_durably(name, bytes)
    }
    fn read(
        &self,
        name: &str,
    ) -> collection_store::Result<Option<Arc<dyn collection_store::checkpoint::files::SharedBytes>>>
    {
        self.inner.read(name)
    }
    fn remove(&self, name: &str) -> collection_store::Result<()> {
        self.inner.remove(name)
    }
    fn list(&self, folder: &str) -> collection_store::Result<Vec<String>> {
        self.inner.list(folder)
    }
}

#[test]
fn a_snapshot_that_does_not_read_back_fails_the_checkpoint_before_the_manifest() {
    let storage = Arc::new(MemStorage::new());
    let files = Arc::new(FlipNextSnapshot {
        inner: MemFiles::new(),
        armed: false.into(),
    });
    let options = || Options {
        segment_size_bytes: 4096,
        auto_checkpoint: None,
        ..Options::default()
    };
    let mut rng = SmallRng::seed_from_u64(41);
    let mut model = Model::new();
    let first_cut = {
        let db = Database::open_with(storage.clone(), files.clone(), options()).unwrap();
        let notes = db.collection("notes", spec()).unwrap();
        churn(&db, &notes, &mut model, &mut rng, 60);
        let first = db.checkpoint().unwrap();
        churn(&db, &notes, &mut model, &mut rng, 60);
        files.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        match db.checkpoint() {
            Err(Error::Corruption { file, reason, .. }) => {
                assert!(file.ends_with(".snap"), "{file}");
                assert!(reason.contains("does not read back"), "{reason}");
            }
            other => panic!("a damaged snapshot was accepted: {other:?}"),
        }
        // The failed checkpoint left the previous one in force and the log whole; the next one works.
        assert_state(&db, &notes, &model, "after the failed checkpoint");
        churn(&db, &notes, &mut model, &mut rng, 10);
        first.cut_lsn
    };
    let db = Database::open_with(storage.clone(), files.clone(), options()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    assert_state(&db, &notes, &model, "reopened after the failed checkpoint");
    let next = db.checkpoint().unwrap();
    assert!(next.cut_lsn > first_cut);
    drop((notes, db));
    let db = Database::open_with(storage, files, options()).unwrap();
    let notes = db.collection("notes", spec()).unwrap();
    assert_state(&db, &notes, &model, "reopened after the next checkpoint");
}
