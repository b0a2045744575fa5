//! kill -9 under the database: a child process (this test binary, re-executed into [`db_child_process`]) opens a
//! file-backed `Database` with 64 KiB log segments (so segments roll often) and runs multi-document transactions
//! from two threads with mixed durability; after every commit that returned it writes an acknowledgement line to a
//! side file. The parent kills it with SIGKILL at a random moment (sometimes before or during recovery), reopens
//! the directory, declares the collection again with the same `Spec`, and checks:
//!
//! - what earlier children left (as the parent recovered it after their kills) is still there, exactly;
//! - for each writer of this child, the documents are exactly the state after some prefix of its transactions
//!   (each writer owns its documents and its transactions are a deterministic function of the seed, so the parent
//!   replays them): no transaction is partially visible, nothing is there that was not committed;
//! - every transaction acknowledged under `Durability::Os` or `Durability::Sync` is present (kill -9 keeps the
//!   page cache), and across writers the acknowledged transactions present are a prefix in commit (`seq`) order;
//! - the unique index and the other index agree with the documents, and find every document by its key;
//! - the database accepts a new `Sync` commit (which later children must leave alone).
//!
//! Each writer also tries, now and then, to break the unique index on purpose; that commit must fail with
//! `Error::UniqueViolation` (the child exits with an error otherwise). A directory sees several kills in a row
//! before a fresh one is started. While the child holds the directory, a second open must fail with
//! `Error::Locked`.
//!
//! Iterations: `CSTORE_DB_KILL9_ITERATIONS` (default 20); base seed `CSTORE_SEED`. The long run:
//!
//! ```text
//! CSTORE_DB_KILL9_ITERATIONS=1000 cargo test --release --test db_kill9
//! ```

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use collection_store::wal::Durability;
use collection_store::{AutoCheckpoint, Collection, Database, Error, Options, Snapshot, Spec};
use common::{Kill9, env_or};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rkyv::{Archive, Deserialize, Serialize};

const CHILD_TEST_NAME: &str = "db_child_process";
const ENV_DIR: &str = "CSTORE_DB_KILL9_CHILD_DIR";
const ENV_ACKS: &str = "CSTORE_DB_KILL9_CHILD_ACKS";
const ENV_EPOCH: &str = "CSTORE_DB_KILL9_CHILD_EPOCH";
const ENV_SEED: &str = "CSTORE_DB_KILL9_CHILD_SEED";
const KILL9: Kill9 = Kill9 {
    child_test: CHILD_TEST_NAME,
    env_dir: ENV_DIR,
    env_acks: ENV_ACKS,
    env_epoch: ENV_EPOCH,
    env_seed: ENV_SEED,
    what: "database",
    early_us: 8_000,
    late_us: 40_000,
};
const WRITERS: u32 = 2;
/// Each writer's documents live in this many slots.
const SLOTS: u64 = 24;
/// The slot of each writer's head document, which names its last committed transaction.
const HEAD_SLOT: u64 = 0xFF_FFFF;
/// The "writer" of the parent's commit after each kill.
const PARENT_WRITER: u32 = 0xFE;
/// Kills per directory before a fresh one is started (keeps the log, and recovery time, bounded).
const KILLS_PER_DIRECTORY: usize = 10;
/// A child that was never killed gives up after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const DEFAULT_SEED: u64 = 0x0DB9_0009;
const SEGMENT_BYTES: u64 = 64 << 10;
const COLLECTION: &str = "items";

/// Small segments, and background checkpoints every 32 KiB of log or 5 ms: kills land before, during and after
/// checkpoints (snapshot and manifest writes, log truncation).
fn options() -> Options {
    Options {
        segment_size_bytes: SEGMENT_BYTES,
        auto_checkpoint: Some(AutoCheckpoint {
            wal_bytes: 32 << 10,
            interval: Duration::from_millis(5),
        }),
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Documents, and each writer's transactions as a deterministic function of the seed
// ---------------------------------------------------------------------------------------------------------------

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Item {
    id: u64,
    key: String,
    epoch: u32,
    writer: u32,
    /// The writer's transaction (attempt number) that last wrote this document.
    tx: u64,
    pad: Vec<u8>,
}

fn spec() -> Spec<Item> {
    Spec::new()
        .primary_key(|i: &ArchivedItem| i.id.to_native())
        .unique("key", |i: &ArchivedItem| i.key.to_string())
        .index("writer_tx", |i: &ArchivedItem| {
            (i.epoch.to_native(), i.writer.to_native(), i.tx.to_native())
        })
}

type State = BTreeMap<u64, Item>;

fn doc_id(epoch: u32, writer: u32, slot: u64) -> u64 {
    u64::from(epoch) << 32 | u64::from(writer) << 24 | slot
}

fn read_state(snap: &Snapshot, items: &Collection<Item>) -> State {
    snap.iter(items)
        .map(|(id, i)| {
            let item = rkyv::deserialize::<Item, rkyv::rancor::Error>(i).expect("a stored item");
            (id, item)
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Item),
    Update(Item),
    Remove(u64),
}

/// One transaction a writer tries.
#[derive(Clone, Debug)]
struct Attempt {
    n: u64,
    durability: Durability,
    ops: Vec<Op>,
    /// Breaks the unique index on purpose: the commit must fail with `UniqueViolation`.
    violation: bool,
}

/// A writer of child `epoch`: its transactions and the state they leave, from the seed alone (the writer touches
/// only its own documents, and its unique keys carry its epoch and number, so no other writer changes an outcome).
struct WriterModel {
    rng: SmallRng,
    epoch: u32,
    writer: u32,
    next: u64,
    /// The writer's documents after its committed transactions, head included.
    state: State,
    keys: u64,
}

impl WriterModel {
    fn new(seed: u64, epoch: u32, writer: u32) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed ^ (u64::from(writer) << 48) ^ 0x5EED),
            epoch,
            writer,
            next: 0,
            state: State::new(),
            keys: 0,
        }
    }

    fn item(&mut self, slot: u64, key: String, n: u64) -> Item {
        let len = match self.rng.random_range(0..10) {
            0..7 => self.rng.random_range(0..64),
            _ => self.rng.random_range(64..400),
        };
        let fill: u8 = self.rng.random();
        Item {
            id: doc_id(self.epoch, self.writer, slot),
            key,
            epoch: self.epoch,
            writer: self.writer,
            tx: n,
            pad: (0..len).map(|i| fill.wrapping_add(i as u8)).collect(),
        }
    }

    fn fresh_key(&mut self) -> String {
        self.keys += 1;
        format!("e{}-w{}-k{}", self.epoch, self.writer, self.keys)
    }

    /// The next transaction to try.
    fn next_attempt(&mut self) -> Attempt {
        let n = self.next;
        self.next += 1;
        let durability = match self.rng.random_range(0..10) {
            0..3 => Durability::None,
            3..8 => Durability::Os,
            _ => Durability::Sync,
        };
        let head_id = doc_id(self.epoch, self.writer, HEAD_SLOT);
        let docs: Vec<u64> = self
            .state
            .keys()
            .copied()
            .filter(|&id| id != head_id)
            .collect();
        let mut ops = Vec::new();
        let violation = docs.len() >= 2 && self.rng.random_bool(0.05);
        if violation {
            // A takes B's key while B keeps it.
            let a = docs[self.rng.random_range(0..docs.len())];
            let b = loop {
                let b = docs[self.rng.random_range(0..docs.len())];
                if b != a {
                    break b;
                }
            };
            let key = self.state[&b].key.clone();
            let item = self.item(a & 0xFF_FFFF, key, n);
            ops.push(Op::Update(item));
        } else {
            let mut slots = BTreeSet::new();
            let m = self.rng.random_range(1..=4);
            while slots.len() < m {
                slots.insert(self.rng.random_range(0..SLOTS));
            }
            let mut slots: Vec<u64> = slots.into_iter().collect();
            for i in (1..slots.len()).rev() {
                slots.swap(i, self.rng.random_range(0..=i));
            }
            for slot in slots {
                let id = doc_id(self.epoch, self.writer, slot);
                match self.state.get(&id).map(|d| d.key.clone()) {
                    Some(_) if self.rng.random_bool(0.25) => ops.push(Op::Remove(id)),
                    Some(key) => {
                        let key = if self.rng.random_bool(0.3) {
                            self.fresh_key()
                        } else {
                            key
                        };
                        let item = self.item(slot, key, n);
                        ops.push(Op::Update(item));
                    }
                    None => {
                        let key = self.fresh_key();
                        let item = self.item(slot, key, n);
                        ops.push(Op::Insert(item));
                    }
                }
            }
        }
        let head = Item {
            id: head_id,
            key: format!("e{}-w{}-head", self.epoch, self.writer),
            epoch: self.epoch,
            writer: self.writer,
            tx: n,
            pad: Vec::new(),
        };
        ops.push(if self.state.contains_key(&head_id) {
            Op::Update(head)
        } else {
            Op::Insert(head)
        });
        Attempt {
            n,
            durability,
            ops,
            violation,
        }
    }

    /// Applies a transaction that committed.
    fn committed(&mut self, attempt: &Attempt) {
        for op in &attempt.ops {
            match op {
                Op::Insert(item) | Op::Update(item) => {
                    self.state.insert(item.id, item.clone());
                }
                Op::Remove(id) => {
                    self.state.remove(id);
                }
            }
        }
    }
}

/// Writer `writer` of child `epoch` after its transactions up to and including attempt `last` (`None`: none):
/// its documents, and which attempts committed (the others broke the unique index on purpose).
fn writer_state(
    seed: u64,
    epoch: u32,
    writer: u32,
    last: Option<u64>,
) -> Result<(State, BTreeSet<u64>), String> {
    let mut model = WriterModel::new(seed, epoch, writer);
    let mut committed = BTreeSet::new();
    let Some(last) = last else {
        return Ok((State::new(), committed));
    };
    loop {
        let attempt = model.next_attempt();
        if !attempt.violation {
            model.committed(&attempt);
            committed.insert(attempt.n);
        }
        if attempt.n == last {
            if attempt.violation {
                return Err(format!(
                    "writer {writer}'s head names transaction {last}, which could not commit"
                ));
            }
            return Ok((model.state, committed));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------------------------

fn durability_code(d: Durability) -> &'static str {
    match d {
        Durability::None => "none",
        Durability::Os => "os",
        Durability::Sync => "sync",
    }
}

/// An acknowledgement line: `ack <writer> <attempt> <seq> <durability>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    writer: u32,
    n: u64,
    seq: u64,
    durability: Durability,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut f = line.split(' ');
    (f.next()? == "ack").then_some(())?;
    let writer = f.next()?.parse().ok()?;
    let n = f.next()?.parse().ok()?;
    let seq = f.next()?.parse().ok()?;
    let durability = match f.next()? {
        "none" => Durability::None,
        "os" => Durability::Os,
        "sync" => Durability::Sync,
        _ => return None,
    };
    f.next().is_none().then_some(Ack {
        writer,
        n,
        seq,
        durability,
    })
}

fn child_fail(what: String) -> ! {
    eprintln!("child: {what}");
    std::process::exit(4)
}

/// The child's side: does nothing unless the parent started this binary for it.
#[test]
fn db_child_process() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let epoch: u32 = var(ENV_EPOCH).parse().unwrap();
    let seed: u64 = var(ENV_SEED).parse().unwrap();
    let acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(var(ENV_ACKS))
        .unwrap();
    let db = Database::open(&dir, options()).unwrap_or_else(|e| {
        eprintln!("child: open failed: {e}");
        std::process::exit(3)
    });
    let items = db.collection(COLLECTION, spec()).unwrap_or_else(|e| {
        eprintln!("child: declaring the collection failed: {e}");
        std::process::exit(3)
    });
    // One write(2) per line: whole lines reach the page cache, and a kill leaves at most one torn line.
    (&acks).write_all(b"open\n").unwrap();
    let deadline = Instant::now() + CHILD_LIFETIME;
    std::thread::scope(|s| {
        for writer in 0..WRITERS {
            let (db, items, acks) = (&db, &items, &acks);
            s.spawn(move || {
                let mut model = WriterModel::new(seed, epoch, writer);
                while Instant::now() < deadline {
                    let attempt = model.next_attempt();
                    let n = attempt.n;
                    let mut tx = db.begin_with(attempt.durability);
                    for op in &attempt.ops {
                        let done = match op {
                            Op::Insert(item) => tx.insert(items, item).and_then(|id| {
                                if id == item.id {
                                    Ok(())
                                } else {
                                    child_fail(format!("insert got id {id}, not {}", item.id))
                                }
                            }),
                            Op::Update(item) => tx.update(items, item.id, item),
                            Op::Remove(id) => tx.remove(items, *id).map(|existed| {
                                if !existed {
                                    child_fail(format!("removed {id}, which did not exist"));
                                }
                            }),
                        };
                        if let Err(e) = done {
                            child_fail(format!("writer {writer} attempt {n}: {op:?}: {e}"));
                        }
                    }
                    match (tx.commit(), attempt.violation) {
                        (Ok(info), false) => {
                            model.committed(&attempt);
                            let line = format!(
                                "ack {writer} {n} {} {}\n",
                                info.seq,
                                durability_code(attempt.durability)
                            );
                            (&*acks).write_all(line.as_bytes()).unwrap();
                        }
                        (Err(Error::UniqueViolation { .. }), true) => {}
                        (result, violation) => child_fail(format!(
                            "writer {writer} attempt {n} (deliberate violation: {violation}): commit returned \
                             {result:?}"
                        )),
                    }
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------------------------

/// What one kill left.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    /// Per writer: how many of its transactions (attempts) are present.
    prefix: [u64; WRITERS as usize],
    /// Transactions acknowledged under `Os` or `Sync` (all present).
    acked_present: usize,
    /// Transactions present that were not acknowledged (in flight at the kill) or acknowledged under `None`.
    unacked_or_none_present: usize,
}

/// Checks the documents recovered after killing child `epoch` (started with `seed`), given what was there before
/// it ran and its acknowledgements.
fn check_after_kill(
    before: &State,
    after: &State,
    epoch: u32,
    seed: u64,
    acks: &[Ack],
) -> Result<Found, String> {
    let mut old = State::new();
    let mut mine: Vec<State> = vec![State::new(); WRITERS as usize];
    for (&id, item) in after {
        if item.id != id || doc_id(item.epoch, item.writer, id & 0xFF_FFFF) != id {
            return Err(format!("document {id} names itself {item:?}"));
        }
        if item.epoch < epoch {
            old.insert(id, item.clone());
        } else if item.epoch == epoch && item.writer < WRITERS {
            mine[item.writer as usize].insert(id, item.clone());
        } else {
            return Err(format!("document {id} was never written: {item:?}"));
        }
    }
    if old != *before {
        let changed: Vec<_> = old
            .keys()
            .chain(before.keys())
            .filter(|id| old.get(id) != before.get(id))
            .take(5)
            .collect();
        return Err(format!(
            "documents from before this child ran changed ({} then, {} now): ids {changed:?}",
            before.len(),
            old.len()
        ));
    }
    let mut found = Found::default();
    let mut committed_sets = Vec::new();
    for writer in 0..WRITERS {
        let docs = &mine[writer as usize];
        let head = docs.get(&doc_id(epoch, writer, HEAD_SLOT));
        if head.is_none() && !docs.is_empty() {
            return Err(format!(
                "writer {writer} has {} documents but no head: a partial transaction",
                docs.len()
            ));
        }
        let last = head.map(|h| h.tx);
        let (expected, committed) = writer_state(seed, epoch, writer, last)?;
        if *docs != expected {
            let differ: Vec<String> = docs
                .keys()
                .chain(expected.keys())
                .filter(|id| docs.get(id) != expected.get(id))
                .take(5)
                .map(|id| {
                    format!(
                        "slot {:#x}: recovered from tx {:?}, expected from tx {:?}",
                        id & 0xFF_FFFF,
                        docs.get(id).map(|d| d.tx),
                        expected.get(id).map(|d| d.tx)
                    )
                })
                .collect();
            return Err(format!(
                "writer {writer}: not the state after its transactions up to {last:?} (a transaction is partially \
                 visible?): {}",
                differ.join("; ")
            ));
        }
        found.prefix[writer as usize] = last.map_or(0, |n| n + 1);
        committed_sets.push(committed);
    }
    let present = |a: &Ack| a.n < found.prefix[a.writer as usize];
    let mut acked_present = vec![BTreeSet::new(); WRITERS as usize];
    for ack in acks {
        if ack.writer >= WRITERS {
            return Err(format!("{ack:?} names no writer"));
        }
        if present(ack) {
            if !committed_sets[ack.writer as usize].contains(&ack.n) {
                return Err(format!("{ack:?} acknowledges a transaction that must fail"));
            }
            if ack.durability != Durability::None {
                acked_present[ack.writer as usize].insert(ack.n);
            }
        } else if ack.durability != Durability::None {
            return Err(format!(
                "{ack:?} was acknowledged but is missing after kill -9 (writer's prefix: {} transactions)",
                found.prefix[ack.writer as usize]
            ));
        }
    }
    // Across writers, the acknowledged transactions present are a prefix in commit order.
    let mut by_seq: Vec<&Ack> = acks.iter().collect();
    by_seq.sort_by_key(|a| a.seq);
    if let Some(pair) = by_seq.windows(2).find(|p| p[0].seq == p[1].seq) {
        return Err(format!("two commits acknowledged with one seq: {pair:?}"));
    }
    if let Some(gap) = by_seq.iter().position(|a| !present(a))
        && let Some(later) = by_seq[gap..].iter().find(|a| present(a))
    {
        return Err(format!(
            "not a prefix in commit order: {:?} is missing but the later {later:?} is present",
            by_seq[gap]
        ));
    }
    found.acked_present = acked_present.iter().map(BTreeSet::len).sum();
    found.unacked_or_none_present = committed_sets
        .iter()
        .zip(&acked_present)
        .map(|(c, a)| c.len() - a.len())
        .sum();
    Ok(found)
}

/// Reopens `dir` after a kill, checks it, commits as the parent, and returns the state to carry forward.
fn reopen_and_check(
    dir: &Path,
    before: &State,
    epoch: u32,
    seed: u64,
    acks: &[Ack],
) -> Result<(State, Found, usize), String> {
    let db = Database::open(dir, options()).map_err(|e| format!("reopen after kill -9: {e}"))?;
    let segments = db.recovery_report().segments;
    let items = db
        .collection(COLLECTION, spec())
        .map_err(|e| format!("declaring the collection after kill -9: {e}"))?;
    let snap = db.read();
    snap.check_indexes(&items)
        .map_err(|e| format!("indexes disagree after kill -9: {e}"))?;
    let after = read_state(&snap, &items);
    let found = check_after_kill(before, &after, epoch, seed, acks)?;
    for (&id, item) in &after {
        let by_key = snap
            .find_one(&items, "key", &item.key)
            .map_err(|e| e.to_string())?
            .map(|(id, _)| id);
        if by_key != Some(id) {
            return Err(format!("the unique index finds {by_key:?} for {item:?}"));
        }
    }
    let max_present_seq = acks
        .iter()
        .filter(|a| a.n < found.prefix[a.writer as usize])
        .map(|a| a.seq)
        .max();
    if max_present_seq.is_some_and(|seq| snap.seq() < seq) {
        return Err(format!(
            "the recovered snapshot's seq {} is below acknowledged seq {max_present_seq:?}",
            snap.seq()
        ));
    }
    drop(snap);
    // The recovered database takes new commits; later children must leave this one alone.
    let parent = Item {
        id: doc_id(epoch, PARENT_WRITER, 0),
        key: format!("e{epoch}-parent"),
        epoch,
        writer: PARENT_WRITER,
        tx: 0,
        pad: vec![7; 50],
    };
    let mut tx = db.begin_with(Durability::Sync);
    tx.insert(&items, &parent)
        .map_err(|e| format!("insert after kill -9: {e}"))?;
    tx.commit()
        .map_err(|e| format!("commit after kill -9: {e}"))?;
    let mut expected = after;
    expected.insert(parent.id, parent);
    let now = read_state(&db.read(), &items);
    if now != expected {
        return Err("the parent's commit is not what a reader sees".into());
    }
    Ok((now, found, segments))
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_transaction() {
    let iterations: usize = env_or("CSTORE_DB_KILL9_ITERATIONS", 20);
    let base_seed: u64 = env_or("CSTORE_SEED", DEFAULT_SEED);
    let mut rng = SmallRng::seed_from_u64(base_seed);
    let scratch = tempfile::tempdir().unwrap();
    let (mut dir, mut before): (PathBuf, State) = (PathBuf::new(), State::new());
    let (mut acked_total, mut acked_durable, mut present_total, mut unacked_present) = (0, 0, 0, 0);
    let (mut killed_before_open, mut locked_checks, mut max_segments) = (0, 0, 0);
    let mut after_checkpoints = 0;
    let started = Instant::now();
    for iteration in 0..iterations {
        let epoch = iteration as u32;
        let seed: u64 = rng.random();
        let context =
            format!("iteration {iteration} (child seed {seed}, base seed CSTORE_SEED={base_seed})");
        if iteration % KILLS_PER_DIRECTORY == 0 {
            dir = scratch.path().join(format!("db-{iteration}"));
            before.clear();
        }
        let killed = KILL9.run_and_kill(
            &mut rng,
            scratch.path(),
            &dir,
            iteration,
            epoch,
            seed,
            &context,
            || {
                if iteration % KILLS_PER_DIRECTORY == 0 {
                    match Database::open(&dir, options()) {
                        Err(Error::Locked { .. }) => locked_checks += 1,
                        Err(e) => {
                            panic!("{context}: a second opener must get Error::Locked, got {e}")
                        }
                        Ok(_) => {
                            panic!("{context}: a second opener got the database the child holds")
                        }
                    }
                }
            },
            parse_ack,
        );
        if !killed.opened {
            killed_before_open += 1;
        }
        let acks = killed.acks;
        if !dir.exists() {
            continue; // killed before it even created the directory
        }
        if dir.join("MANIFEST").exists() {
            after_checkpoints += 1;
        }
        let (now, found, segments) = reopen_and_check(&dir, &before, epoch, seed, &acks)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        acked_total += acks.len();
        acked_durable += acks
            .iter()
            .filter(|a| a.durability != Durability::None)
            .count();
        present_total += found.prefix.iter().sum::<u64>();
        unacked_present += found.unacked_or_none_present;
        max_segments = max_segments.max(segments);
        before = now;
    }
    println!(
        "{iterations} kills in {:.1?}: {acked_total} acknowledged transactions ({acked_durable} Os or Sync), \
         {present_total} transactions (attempts) recovered, {unacked_present} of them unacknowledged or None; \
         {killed_before_open} killed before opening, {locked_checks} lock checks, up to {max_segments} segments \
         recovered, {after_checkpoints} recoveries from a checkpoint",
        started.elapsed()
    );
    if iterations >= 20 {
        assert!(acked_durable > 0, "no child acknowledged a durable commit");
        assert!(after_checkpoints > 0, "no kill came after a checkpoint");
    }
}

/// The checker itself: it must reject a partial transaction, a lost acknowledged transaction, a reordering across
/// writers, a change to what earlier children left, a foreign document, and an acknowledgement of a commit that
/// must fail.
#[test]
fn checker_rejects_what_kill_9_must_never_produce() {
    let (seed, epoch) = (42, 3);
    let mut before = State::new();
    let old = Item {
        id: doc_id(1, 0, 5),
        key: "e1-w0-k1".into(),
        epoch: 1,
        writer: 0,
        tx: 9,
        pad: vec![1, 2, 3],
    };
    before.insert(old.id, old);
    // Writer 0 after about 80 attempts, writer 1 after about 12 (the last one of each must have committed).
    let last = |writer, mut n: u64| loop {
        match writer_state(seed, epoch, writer, Some(n)) {
            Ok(state) => return (n, state.0, state.1),
            Err(_) => n -= 1,
        }
    };
    let (n0, s0, c0) = last(0, 79);
    let (n1, s1, c1) = last(1, 11);
    let mut good = before.clone();
    good.extend(s0.clone());
    good.extend(s1.clone());
    // Acks, interleaved by seq: writer 0's attempts get odd seqs, writer 1's even ones, in attempt order.
    let mut acks: Vec<Ack> = Vec::new();
    for (writer, committed) in [(0, &c0), (1, &c1)] {
        for &n in committed.iter() {
            acks.push(Ack {
                writer,
                n,
                seq: 2 * n + u64::from(writer),
                durability: Durability::Os,
            });
        }
    }
    let found = check_after_kill(&before, &good, epoch, seed, &acks).unwrap();
    assert_eq!(found.prefix, [n0 + 1, n1 + 1]);
    assert_eq!(found.acked_present, c0.len() + c1.len());
    // Without writer 1's last transaction (but with its acknowledgement): a lost Os commit.
    let (_, s1_short, _) = last(1, n1 - 1);
    let mut lost = before.clone();
    lost.extend(s0.clone());
    lost.extend(s1_short.clone());
    let err = check_after_kill(&before, &lost, epoch, seed, &acks).unwrap_err();
    assert!(err.contains("missing"), "{err}");
    // The same, acknowledged under None, is allowed only if it breaks no order: writer 0's later seqs are present.
    let mut none_acks = acks.clone();
    for a in &mut none_acks {
        if a.writer == 1 && a.n == n1 {
            a.durability = Durability::None;
        }
    }
    let err = check_after_kill(&before, &lost, epoch, seed, &none_acks).unwrap_err();
    assert!(err.contains("not a prefix"), "{err}");
    let only_w1: Vec<Ack> = none_acks
        .iter()
        .filter(|a| a.writer == 1)
        .copied()
        .collect();
    assert!(check_after_kill(&before, &lost, epoch, seed, &only_w1).is_ok());
    // Half of a transaction of writer 0: drop the newest of its documents (not the head).
    let head0 = doc_id(epoch, 0, HEAD_SLOT);
    let (&victim, _) = s0
        .iter()
        .filter(|(id, _)| **id != head0)
        .max_by_key(|(_, item)| item.tx)
        .expect("writer 0 has documents besides its head");
    let mut partial = good.clone();
    partial.remove(&victim);
    let err = check_after_kill(&before, &partial, epoch, seed, &acks).unwrap_err();
    assert!(err.contains("partially"), "{err}");
    // Only the head of a writer missing.
    let mut headless = good.clone();
    headless.remove(&head0);
    assert!(check_after_kill(&before, &headless, epoch, seed, &acks).is_err());
    // Earlier children's documents changed or gone.
    let mut changed = good.clone();
    changed.get_mut(&doc_id(1, 0, 5)).unwrap().tx = 10;
    assert!(check_after_kill(&before, &changed, epoch, seed, &acks).is_err());
    let mut gone = good.clone();
    gone.remove(&doc_id(1, 0, 5));
    assert!(check_after_kill(&before, &gone, epoch, seed, &acks).is_err());
    // A document no one wrote.
    let mut foreign = good.clone();
    let mut ghost = s1[&doc_id(epoch, 1, HEAD_SLOT)].clone();
    ghost.epoch = epoch + 1;
    ghost.id = doc_id(epoch + 1, 1, HEAD_SLOT);
    foreign.insert(ghost.id, ghost);
    assert!(check_after_kill(&before, &foreign, epoch, seed, &acks).is_err());
    // A changed byte in a document.
    let mut flipped = good.clone();
    flipped.get_mut(&victim).unwrap().pad.push(0);
    assert!(check_after_kill(&before, &flipped, epoch, seed, &acks).is_err());
    // An acknowledgement of a deliberate unique violation.
    let failing = (0..n0)
        .find(|n| !c0.contains(n))
        .expect("writer 0 tried a deliberate violation in 80 attempts");
    let mut bad_acks = acks.clone();
    bad_acks.push(Ack {
        writer: 0,
        n: failing,
        seq: 1_000_000,
        durability: Durability::Sync,
    });
    let err = check_after_kill(&before, &good, epoch, seed, &bad_acks).unwrap_err();
    assert!(err.contains("must fail"), "{err}");
}
