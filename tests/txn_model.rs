//! Model-based property test of transactions over one typed collection.
//!
//! Random sequences of steps (transactions of inserts, puts, updates, modifies, removes, savepoints and rollbacks,
//! ending in commit, rollback or drop; two interleaved transactions; auto-commit writes; reopens after a clean
//! close, after power loss with every written sector kept, and after power loss with torn sectors) run against the
//! database and against a model: a `BTreeMap` of documents, the sequence number, and the sequence number of the last
//! committed write of every id (for first-committer-wins). After every step the snapshot must equal the model:
//! documents, count, iteration both ways, `check_indexes`, and range queries with random bounds over five indexes
//! (unique, non-unique, sparse, composite, sparse unique) in index order (key, then id). Inside a transaction, after
//! every operation, `Transaction::get` must show the transaction's own view and `Database::read` must not.
//!
//! Settings (environment): `TXN_MODEL_CASES` (mem backend, default 64), `TXN_MODEL_DIR_CASES` (real directory,
//! default 8), `TXN_MODEL_STEPS` (most steps per case, default 24), `TXN_MODEL_SEED` (fixed proptest seed).
//!
//! Unique indexes are checked on the commit's result, whatever the order of the transaction's writes (keys can
//! move between documents of one transaction).
//!
//! A savepoint rolled back past is refused (`Error::InvalidSavepoint`): the model and
//! `stale_savepoint_is_refused_after_new_writes` check it (regression: it used to be accepted again once the
//! transaction had written as far as its position).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::Bound;
use std::sync::Arc;

use collection_store::checkpoint::files::{CheckpointFiles, MemFiles};
use collection_store::wal::{Durability, LogStorage, MemStorage};
use collection_store::{
    Collection, Database, Docs, Error, IndexKey, Options, Savepoint, Snapshot, Spec, Transaction,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use rkyv::{Archive, Serialize};

// ---------------------------------------------------------------------------------------------------------------
// The document and its indexes
// ---------------------------------------------------------------------------------------------------------------

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
struct Item {
    email: String,
    age: u32,
    team: Option<String>,
    dept: String,
    score: i32,
    nick: Option<String>,
}

fn from_archived(a: &ArchivedItem) -> Item {
    Item {
        email: a.email.to_string(),
        age: a.age.to_native(),
        team: a.team.as_ref().map(|t| t.to_string()),
        dept: a.dept.to_string(),
        score: a.score.to_native(),
        nick: a.nick.as_ref().map(|n| n.to_string()),
    }
}

const COLLECTION: &str = "items";

fn spec() -> Spec<Item> {
    Spec::new()
        .unique("email", |a: &ArchivedItem| a.email.to_string())
        .index("age", |a: &ArchivedItem| a.age.to_native())
        .sparse("team", false, |a: &ArchivedItem| {
            a.team.as_ref().map(|t| t.to_string())
        })
        .index("dept_score", |a: &ArchivedItem| {
            (a.dept.to_string(), a.score.to_native())
        })
        .sparse("nick", true, |a: &ArchivedItem| {
            a.nick.as_ref().map(|n| n.to_string())
        })
}

// The same keys computed from the model's documents.
fn email_key(d: &Item) -> Option<String> {
    Some(d.email.clone())
}
fn age_key(d: &Item) -> Option<u32> {
    Some(d.age)
}
fn team_key(d: &Item) -> Option<String> {
    d.team.clone()
}
fn dept_score_key(d: &Item) -> Option<(String, i32)> {
    Some((d.dept.clone(), d.score))
}
fn nick_key(d: &Item) -> Option<String> {
    d.nick.clone()
}

/// Keys held by two documents or more in a unique index: (index, key as `Debug` shows it) → the documents.
fn duplicates(docs: &BTreeMap<u64, Item>) -> BTreeMap<(&'static str, String), BTreeSet<u64>> {
    let mut holders: BTreeMap<(&'static str, String), BTreeSet<u64>> = BTreeMap::new();
    for (id, d) in docs {
        holders
            .entry(("email", format!("{:?}", d.email)))
            .or_default()
            .insert(*id);
        if let Some(n) = &d.nick {
            holders
                .entry(("nick", format!("{n:?}")))
                .or_default()
                .insert(*id);
        }
    }
    holders.retain(|_, ids| ids.len() > 1);
    holders
}

// ---------------------------------------------------------------------------------------------------------------
// Generated steps
// ---------------------------------------------------------------------------------------------------------------

/// How an operation chooses its document id: an existing one of the transaction's view, or an absent one.
#[derive(Clone, Copy, Debug)]
struct IdPick {
    existing: bool,
    n: u16,
}

#[derive(Clone, Debug)]
enum TxOp {
    Insert(Item),
    Put(IdPick, Item),
    Update(IdPick, Item),
    Modify(IdPick, u8),
    Remove(IdPick),
    Savepoint,
    /// Roll back to an active savepoint (the oldest for an even number, else the index modulo how many there are).
    RollbackTo(usize),
    /// Roll back to a savepoint already rolled back past: must fail with `InvalidSavepoint`.
    RollbackStale(usize),
    /// Savepoint 1, inserts, savepoint 2, roll back to 1, inserts, then roll back to 2 (rolled back past).
    StaleDance(Vec<Item>, Vec<Item>),
}

#[derive(Clone, Copy, Debug)]
enum End {
    Commit(Durability),
    Rollback,
    Drop,
}

#[derive(Clone, Debug)]
enum AutoOp {
    Insert(Item),
    Put(IdPick, Item),
    Remove(IdPick),
}

#[derive(Clone, Copy, Debug)]
enum Reopen {
    /// Drop the database and open it again.
    Clean,
    /// (mem backend) Power loss now, every written sector kept: some commit at or after the last `Os`/`Sync` one.
    CrashKeepAll,
    /// (mem backend) Power loss now, unsynced sectors kept or lost at random: some commit at or after the last
    /// `Sync` one.
    CrashTorn(u64),
}

#[derive(Clone, Debug)]
enum Action {
    Tx(Vec<TxOp>, End),
    Interleaved {
        a: Vec<TxOp>,
        a_end: End,
        b: Vec<TxOp>,
        b_end: End,
        /// Which transaction runs each next operation (`true`: a).
        schedule: Vec<bool>,
        /// An auto-commit write made after both began.
        middle: Option<AutoOp>,
        a_commits_first: bool,
    },
    Auto(AutoOp),
    Reopen(Reopen),
    /// `db.checkpoint()`: snapshots, manifest, log truncation.
    Checkpoint,
}

#[derive(Clone, Debug)]
enum RangeQ {
    Email(Bound<String>, Bound<String>),
    Age(Bound<u32>, Bound<u32>),
    Team(Bound<String>, Bound<String>),
    DeptScore(Bound<(String, i32)>, Bound<(String, i32)>),
    Nick(Bound<String>, Bound<String>),
    FindEmail(String),
    FindNick(String),
}

#[derive(Clone, Debug)]
struct Step {
    action: Action,
    /// Queries checked (besides everything else) after the step.
    queries: Vec<RangeQ>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Mem,
    Dir,
}

#[derive(Clone, Debug)]
struct Case {
    durability: Durability,
    segment_size_bytes: u64,
    steps: Vec<Step>,
}

fn email() -> impl Strategy<Value = String> + Clone {
    (0u8..32).prop_map(|i| match i {
        0 => String::new(),
        1 => "\0".into(),
        2 => "u0\0".into(),
        n => format!("u{n:02}"),
    })
}

fn age() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![9 => 0u32..8, 1 => Just(u32::MAX)]
}

fn team() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(vec!["", "a", "b", "c"]).prop_map(String::from)
}

fn dept() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(vec!["", "x", "x\0", "x\0y", "xy", "y"]).prop_map(String::from)
}

fn score() -> impl Strategy<Value = i32> + Clone {
    prop_oneof![8 => -3i32..=3, 1 => Just(i32::MIN), 1 => Just(i32::MAX)]
}

fn nick() -> impl Strategy<Value = String> + Clone {
    (0u8..16).prop_map(|n| format!("n{n:02}"))
}

fn item() -> impl Strategy<Value = Item> {
    (
        email(),
        age(),
        prop::option::weighted(0.6, team()),
        dept(),
        score(),
        prop::option::weighted(0.4, nick()),
    )
        .prop_map(|(email, age, team, dept, score, nick)| Item {
            email,
            age,
            team,
            dept,
            score,
            nick,
        })
}

fn id_pick() -> impl Strategy<Value = IdPick> {
    (prop::bool::weighted(0.8), any::<u16>()).prop_map(|(existing, n)| IdPick { existing, n })
}

fn tx_op() -> impl Strategy<Value = TxOp> {
    prop_oneof![
        4 => item().prop_map(TxOp::Insert),
        2 => (id_pick(), item()).prop_map(|(p, i)| TxOp::Put(p, i)),
        3 => (id_pick(), item()).prop_map(|(p, i)| TxOp::Update(p, i)),
        2 => (id_pick(), any::<u8>()).prop_map(|(p, d)| TxOp::Modify(p, d)),
        2 => id_pick().prop_map(TxOp::Remove),
        3 => Just(TxOp::Savepoint),
        2 => any::<usize>().prop_map(TxOp::RollbackTo),
        2 => any::<usize>().prop_map(TxOp::RollbackStale),
        1 => (prop::collection::vec(item(), 0..3), prop::collection::vec(item(), 0..3))
            .prop_map(|(a, b)| TxOp::StaleDance(a, b)),
    ]
}

fn durability(backend: Backend) -> BoxedStrategy<Durability> {
    match backend {
        // Syncs are free in memory.
        Backend::Mem => {
            prop::sample::select(vec![Durability::None, Durability::Os, Durability::Sync]).boxed()
        }
        Backend::Dir => prop_oneof![
            4 => Just(Durability::None),
            4 => Just(Durability::Os),
            1 => Just(Durability::Sync),
        ]
        .boxed(),
    }
}

fn end(backend: Backend) -> impl Strategy<Value = End> {
    prop_oneof![
        8 => durability(backend).prop_map(End::Commit),
        1 => Just(End::Rollback),
        1 => Just(End::Drop),
    ]
}

fn auto_op() -> impl Strategy<Value = AutoOp> {
    prop_oneof![
        2 => item().prop_map(AutoOp::Insert),
        1 => (id_pick(), item()).prop_map(|(p, i)| AutoOp::Put(p, i)),
        1 => id_pick().prop_map(AutoOp::Remove),
    ]
}

fn reopen(backend: Backend) -> BoxedStrategy<Reopen> {
    match backend {
        Backend::Mem => prop_oneof![
            Just(Reopen::Clean),
            Just(Reopen::CrashKeepAll),
            any::<u64>().prop_map(Reopen::CrashTorn),
        ]
        .boxed(),
        Backend::Dir => Just(Reopen::Clean).boxed(),
    }
}

fn action(backend: Backend) -> impl Strategy<Value = Action> {
    let interleaved = (
        prop::collection::vec(tx_op(), 0..7),
        end(backend),
        prop::collection::vec(tx_op(), 0..7),
        end(backend),
        prop::collection::vec(any::<bool>(), 14),
        prop::option::weighted(0.3, auto_op()),
        any::<bool>(),
    )
        .prop_map(|(a, a_end, b, b_end, schedule, middle, a_commits_first)| {
            Action::Interleaved {
                a,
                a_end,
                b,
                b_end,
                schedule,
                middle,
                a_commits_first,
            }
        });
    prop_oneof![
        6 => (prop::collection::vec(tx_op(), 0..12), end(backend)).prop_map(|(ops, e)| Action::Tx(ops, e)),
        3 => interleaved,
        2 => auto_op().prop_map(Action::Auto),
        1 => reopen(backend).prop_map(Action::Reopen),
        1 => Just(Action::Checkpoint),
    ]
}

fn bound<K: Debug + Clone + 'static>(
    value: impl Strategy<Value = K> + Clone + 'static,
) -> impl Strategy<Value = Bound<K>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => value.clone().prop_map(Bound::Included),
        2 => value.prop_map(Bound::Excluded),
    ]
}

fn range_q() -> impl Strategy<Value = RangeQ> {
    prop_oneof![
        (bound(email()), bound(email())).prop_map(|(l, h)| RangeQ::Email(l, h)),
        (bound(age()), bound(age())).prop_map(|(l, h)| RangeQ::Age(l, h)),
        (bound(team()), bound(team())).prop_map(|(l, h)| RangeQ::Team(l, h)),
        (bound((dept(), score())), bound((dept(), score())))
            .prop_map(|(l, h)| RangeQ::DeptScore(l, h)),
        (bound(nick()), bound(nick())).prop_map(|(l, h)| RangeQ::Nick(l, h)),
        email().prop_map(RangeQ::FindEmail),
        nick().prop_map(RangeQ::FindNick),
    ]
}

fn case(backend: Backend, max_steps: usize) -> impl Strategy<Value = Case> {
    let step = (action(backend), prop::collection::vec(range_q(), 0..4))
        .prop_map(|(action, queries)| Step { action, queries });
    (
        durability(backend),
        prop::sample::select(vec![8u64 << 10, 64 << 10, 1 << 20]),
        prop::collection::vec(step, 1..=max_steps),
    )
        .prop_map(|(durability, segment_size_bytes, steps)| Case {
            durability,
            segment_size_bytes,
            steps,
        })
}

// ---------------------------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------------------------

/// The committed state.
#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    docs: BTreeMap<u64, Item>,
    seq: u64,
    /// Sequence number of the last committed put, or removal of an existing document, of each id.
    last_write: BTreeMap<u64, u64>,
}

struct Model {
    state: State,
    /// Committed states a power loss with every written sector kept may recover (the first is the newest one
    /// known to have reached the storage: `Os` or `Sync`).
    since_written: Vec<State>,
    /// Committed states a power loss with torn unsynced sectors may recover (the first is the newest `Sync` one).
    since_synced: Vec<State>,
    /// Ids returned by `insert` since the database was opened, which must keep increasing.
    last_issued: Option<u64>,
}

impl Model {
    fn new() -> Self {
        Self {
            state: State::default(),
            since_written: vec![State::default()],
            since_synced: vec![State::default()],
            last_issued: None,
        }
    }

    fn committed(&mut self, state: State, durability: Durability) {
        if durability >= Durability::Os {
            self.since_written.clear();
        }
        if durability == Durability::Sync {
            self.since_synced.clear();
        }
        self.since_written.push(state.clone());
        self.since_synced.push(state.clone());
        self.state = state;
    }

    /// After a checkpoint: every commit so far is durable (the checkpoint waited for the log up to its cut).
    fn checkpointed(&mut self) {
        self.since_written = vec![self.state.clone()];
        self.since_synced = vec![self.state.clone()];
    }

    /// After a reopen that recovered `state` (`durable`: from a crash image, whose bytes are all durable; else
    /// after a clean close, which writes everything but syncs nothing).
    fn recovered(&mut self, state: State, durable: bool) {
        self.since_written = vec![state.clone()];
        if durable {
            self.since_synced = vec![state.clone()];
        } else {
            assert_eq!(self.since_synced.last(), Some(&state));
        }
        self.state = state;
        self.last_issued = None;
    }
}

#[derive(Clone, Debug)]
struct TxSaved {
    view: BTreeMap<u64, Item>,
    /// id → (position in the transaction's write list of its last write, the written value).
    writes: BTreeMap<u64, (usize, Option<Item>)>,
    ops: usize,
}

struct TxModel {
    begin_seq: u64,
    cur: TxSaved,
    savepoints: Vec<(Savepoint, TxSaved)>,
    /// Savepoints rolled back past, with their positions.
    stale: Vec<(Savepoint, usize)>,
}

impl TxModel {
    fn begin(state: &State) -> Self {
        Self {
            begin_seq: state.seq,
            cur: TxSaved {
                view: state.docs.clone(),
                writes: BTreeMap::new(),
                ops: 0,
            },
            savepoints: Vec::new(),
            stale: Vec::new(),
        }
    }

    fn write(&mut self, id: u64, value: Option<Item>) {
        match &value {
            Some(v) => self.cur.view.insert(id, v.clone()),
            None => self.cur.view.remove(&id),
        };
        self.cur.writes.insert(id, (self.cur.ops, value));
        self.cur.ops += 1;
    }

    fn pick(&self, pick: IdPick, state: &State) -> u64 {
        let n = usize::from(pick.n);
        let view = &self.cur.view;
        if pick.existing && !view.is_empty() {
            return *view.keys().nth(n % view.len()).expect("in range");
        }
        let absent: Vec<u64> = state
            .last_write
            .keys()
            .chain(self.cur.writes.keys())
            .filter(|id| !view.contains_key(id))
            .copied()
            .collect();
        if n % 2 == 0 && !absent.is_empty() {
            return absent[(n / 2) % absent.len()];
        }
        (1000 + (n as u64 % 8)..)
            .find(|id| !view.contains_key(id))
            .expect("some id is free")
    }
}

/// What a commit must do.
#[derive(Debug)]
enum Expect {
    /// Nothing to write: `Ok` at the current sequence number.
    Empty,
    /// `Error::Conflict` on one of these ids.
    Conflict(BTreeSet<u64>),
    /// `Error::UniqueViolation` on one of these (index, key)s, naming one of their holders: the resulting state
    /// would break a unique index.
    Unique(BTreeMap<(&'static str, String), BTreeSet<u64>>),
    Commit(State),
}

fn expect_commit(state: &State, tx: &TxModel) -> Expect {
    if tx.cur.ops == 0 {
        return Expect::Empty;
    }
    let conflicts: BTreeSet<u64> = tx
        .cur
        .writes
        .keys()
        .filter(|id| state.last_write.get(id).is_some_and(|&s| s > tx.begin_seq))
        .copied()
        .collect();
    if !conflicts.is_empty() {
        return Expect::Conflict(conflicts);
    }
    let seq = state.seq + 1;
    let mut next = state.clone();
    next.seq = seq;
    for (id, (_, value)) in &tx.cur.writes {
        match value {
            Some(v) => {
                next.docs.insert(*id, v.clone());
                next.last_write.insert(*id, seq);
            }
            None => {
                if next.docs.remove(id).is_some() {
                    next.last_write.insert(*id, seq);
                }
            }
        }
    }
    let duplicates = duplicates(&next.docs);
    if !duplicates.is_empty() {
        return Expect::Unique(duplicates);
    }
    Expect::Commit(next)
}

// ---------------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------------

fn in_bounds<K: Ord>(k: &K, lo: &Bound<K>, hi: &Bound<K>) -> bool {
    let above = match lo {
        Bound::Included(l) => k >= l,
        Bound::Excluded(l) => k > l,
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(h) => k <= h,
        Bound::Excluded(h) => k < h,
        Bound::Unbounded => true,
    };
    above && below
}

/// What both a snapshot and a transaction can be asked (a transaction answers with its own writes over its
/// snapshot).
trait Reads {
    fn range_of<'r, K: IndexKey>(
        &'r self,
        coll: &Collection<Item>,
        index: &str,
        lo: Bound<K>,
        hi: Bound<K>,
    ) -> Docs<'r, Item>;
    fn find_of<'r>(&'r self, coll: &Collection<Item>, index: &str, value: &str) -> Docs<'r, Item>;
    fn find_one_of(&self, coll: &Collection<Item>, index: &str, value: &str) -> Option<u64>;
    fn iter_of<'r>(&'r self, coll: &Collection<Item>) -> Docs<'r, Item>;
    fn count_of(&self, coll: &Collection<Item>) -> usize;
}

/// The same calls, answered by a snapshot or by a transaction (over its own writes).
macro_rules! reads_for {
    ($($reader:ty),*) => {$(
        impl Reads for $reader {
            fn range_of<'r, K: IndexKey>(
                &'r self,
                coll: &Collection<Item>,
                index: &str,
                lo: Bound<K>,
                hi: Bound<K>,
            ) -> Docs<'r, Item> {
                self.range::<Item, K>(coll, index, (lo, hi))
                    .expect("index exists")
            }
            fn find_of<'r>(&'r self, coll: &Collection<Item>, index: &str, value: &str) -> Docs<'r, Item> {
                self.find(coll, index, &value.to_string())
                    .expect("index exists")
            }
            fn find_one_of(&self, coll: &Collection<Item>, index: &str, value: &str) -> Option<u64> {
                self.find_one(coll, index, &value.to_string())
                    .expect("index exists")
                    .map(|(id, _)| id)
            }
            fn iter_of<'r>(&'r self, coll: &Collection<Item>) -> Docs<'r, Item> {
                self.iter(coll)
            }
            fn count_of(&self, coll: &Collection<Item>) -> usize {
                self.count(coll)
            }
        }
    )*};
}
reads_for!(Snapshot, Transaction<'_>);

/// Ids taken alternately from the front and the back of `docs`, as they come out.
fn alternating(mut docs: Docs<'_, Item>) -> Vec<u64> {
    let (mut front, mut back) = (Vec::new(), Vec::new());
    while let Some((id, _)) = docs.next() {
        front.push(id);
        match docs.next_back() {
            Some((id, _)) => back.push(id),
            None => break,
        }
    }
    back.reverse();
    front.extend(back);
    front
}

/// `snap.range` over `index` must return exactly the model's documents whose key lies in the bounds, ordered by
/// (key, id), both ways.
fn check_range<K: IndexKey + Ord + Clone + Debug>(
    snap: &impl Reads,
    coll: &Collection<Item>,
    docs: &BTreeMap<u64, Item>,
    index: &str,
    key: fn(&Item) -> Option<K>,
    lo: &Bound<K>,
    hi: &Bound<K>,
) {
    let mut expected: Vec<(K, u64)> = docs
        .iter()
        .filter_map(|(id, d)| key(d).map(|k| (k, *id)))
        .filter(|(k, _)| in_bounds(k, lo, hi))
        .collect();
    expected.sort();
    let expected: Vec<(u64, Item)> = expected
        .into_iter()
        .map(|(_, id)| (id, docs[&id].clone()))
        .collect();
    let range = || snap.range_of::<K>(coll, index, lo.clone(), hi.clone());
    let got: Vec<(u64, Item)> = range().map(|(id, a)| (id, from_archived(a))).collect();
    assert_eq!(got, expected, "range {lo:?}..{hi:?} over index {index}");
    let mut back: Vec<u64> = range().rev().map(|(id, _)| id).collect();
    back.reverse();
    assert_eq!(
        back,
        expected.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "reversed range {lo:?}..{hi:?} over index {index}"
    );
    assert_eq!(
        range().next().map(|(id, _)| id),
        expected.first().map(|e| e.0)
    );
    assert_eq!(
        range().next_back().map(|(id, _)| id),
        expected.last().map(|e| e.0)
    );
    assert_eq!(
        alternating(range()),
        expected.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "range {lo:?}..{hi:?} over index {index}, taken from both ends"
    );
}

fn check_find(
    snap: &impl Reads,
    coll: &Collection<Item>,
    docs: &BTreeMap<u64, Item>,
    index: &str,
    key: fn(&Item) -> Option<String>,
    value: &str,
) {
    let expected: Vec<u64> = docs
        .iter()
        .filter(|(_, d)| key(d).as_deref() == Some(value))
        .map(|(id, _)| *id)
        .collect();
    assert!(expected.len() <= 1, "model broke unique index {index}");
    let got: Vec<u64> = snap.find_of(coll, index, value).map(|(id, _)| id).collect();
    assert_eq!(got, expected, "find {value:?} in {index}");
    let one = snap.find_one_of(coll, index, value);
    assert_eq!(
        one,
        expected.first().copied(),
        "find_one {value:?} in {index}"
    );
}

/// The published snapshot must equal the model.
fn check_snapshot(db: &Database, coll: &Collection<Item>, state: &State, queries: &[RangeQ]) {
    let snap = db.read();
    let docs = &state.docs;
    assert_eq!(snap.seq(), state.seq, "snapshot sequence number");
    assert_eq!(snap.count(coll), docs.len(), "count");
    let got: Vec<(u64, Item)> = snap
        .iter(coll)
        .map(|(id, a)| (id, from_archived(a)))
        .collect();
    let expected: Vec<(u64, Item)> = docs.iter().map(|(id, d)| (*id, d.clone())).collect();
    assert_eq!(got, expected, "documents");
    let back: Vec<u64> = snap.iter(coll).rev().map(|(id, _)| id).collect();
    assert!(back.iter().eq(docs.keys().rev()), "reverse iteration");
    assert_eq!(
        snap.iter(coll).next().map(|(id, _)| id),
        docs.keys().next().copied()
    );
    assert_eq!(
        snap.iter(coll).next_back().map(|(id, _)| id),
        docs.keys().next_back().copied()
    );
    for (id, d) in docs {
        assert_eq!(snap.get(coll, *id).map(from_archived).as_ref(), Some(d));
    }
    for id in state.last_write.keys().filter(|id| !docs.contains_key(id)) {
        assert!(
            snap.get(coll, *id).is_none(),
            "removed document {id} visible"
        );
    }
    snap.check_indexes(coll)
        .expect("indexes agree with documents");
    check_queries(&snap, coll, docs, queries);
}

/// Every index in full, then the step's queries, and iteration from both ends: what `reader` answers must be what
/// `docs` says.
fn check_queries(
    snap: &impl Reads,
    coll: &Collection<Item>,
    docs: &BTreeMap<u64, Item>,
    queries: &[RangeQ],
) {
    assert_eq!(snap.count_of(coll), docs.len(), "count");
    let got: Vec<(u64, Item)> = snap
        .iter_of(coll)
        .map(|(id, a)| (id, from_archived(a)))
        .collect();
    let expected: Vec<(u64, Item)> = docs.iter().map(|(id, d)| (*id, d.clone())).collect();
    assert_eq!(got, expected, "documents");
    assert!(
        alternating(snap.iter_of(coll)).iter().eq(docs.keys()),
        "iteration from both ends"
    );
    let u = Bound::Unbounded;
    check_range(snap, coll, docs, "email", email_key, &u, &u);
    check_range(
        snap,
        coll,
        docs,
        "age",
        age_key,
        &Bound::Unbounded,
        &Bound::Unbounded,
    );
    check_range(snap, coll, docs, "team", team_key, &u, &u);
    let all = (Bound::Unbounded, Bound::Unbounded);
    check_range(
        snap,
        coll,
        docs,
        "dept_score",
        dept_score_key,
        &all.0,
        &all.1,
    );
    check_range(snap, coll, docs, "nick", nick_key, &u, &u);
    for q in queries {
        match q {
            RangeQ::Email(l, h) => check_range(snap, coll, docs, "email", email_key, l, h),
            RangeQ::Age(l, h) => check_range(snap, coll, docs, "age", age_key, l, h),
            RangeQ::Team(l, h) => check_range(snap, coll, docs, "team", team_key, l, h),
            RangeQ::DeptScore(l, h) => {
                check_range(snap, coll, docs, "dept_score", dept_score_key, l, h);
            }
            RangeQ::Nick(l, h) => check_range(snap, coll, docs, "nick", nick_key, l, h),
            RangeQ::FindEmail(v) => check_find(snap, coll, docs, "email", email_key, v),
            RangeQ::FindNick(v) => check_find(snap, coll, docs, "nick", nick_key, v),
        }
    }
}

/// The transaction must see its own view; the database must still show the committed state.
fn check_tx_view(
    db: &Database,
    coll: &Collection<Item>,
    tx: &Transaction<'_>,
    tm: &TxModel,
    state: &State,
    queries: &[RangeQ],
) {
    // Its queries too: count, iteration, every index and the step's ranges, over its own writes.
    check_queries(tx, coll, &tm.cur.view, queries);
    for (id, d) in &tm.cur.view {
        assert_eq!(
            tx.get(coll, *id).map(from_archived).as_ref(),
            Some(d),
            "tx view of {id}"
        );
    }
    for id in tm.cur.writes.keys().chain(state.docs.keys()) {
        if !tm.cur.view.contains_key(id) {
            assert!(
                tx.get(coll, *id).is_none(),
                "tx sees {id}, which it removed"
            );
        }
    }
    let snap = db.read();
    assert_eq!(snap.seq(), state.seq, "uncommitted writes published");
    assert_eq!(
        snap.count(coll),
        state.docs.len(),
        "uncommitted writes published"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    steps: u64,
    commits: u64,
    empty_commits: u64,
    conflicts: u64,
    unique_violations: u64,
    not_found: u64,
    rollbacks_to: u64,
    invalid_savepoints: u64,
    reopens: u64,
    checkpoints: u64,
    lost_on_crash: u64,
    max_docs: usize,
}

struct Harness<'s> {
    backend: Backend,
    options: Options,
    storage: Option<Arc<MemStorage>>,
    /// (mem backend) The checkpoint files, kept across reopens like the log.
    files: Option<Arc<MemFiles>>,
    dir: Option<tempfile::TempDir>,
    /// Also roll back to savepoints rolled back past after new writes (the known bug).
    model: Model,
    stats: &'s RefCell<Stats>,
}

impl Harness<'_> {
    fn open(&self) -> (Database, Collection<Item>) {
        let db = match self.backend {
            Backend::Mem => {
                let storage = Arc::clone(self.storage.as_ref().expect("mem backend"));
                let files = Arc::clone(self.files.as_ref().expect("mem backend"));
                Database::open_with(
                    storage as Arc<dyn LogStorage>,
                    files as Arc<dyn CheckpointFiles>,
                    self.options.clone(),
                )
            }
            Backend::Dir => Database::open(
                self.dir.as_ref().expect("dir backend").path(),
                self.options.clone(),
            ),
        }
        .expect("open");
        let coll = db.collection(COLLECTION, spec()).expect("collection");
        (db, coll)
    }

    fn run(&mut self, case: &Case) {
        let (mut db, mut coll) = self.open();
        for step in &case.steps {
            self.stats.borrow_mut().steps += 1;
            match &step.action {
                Action::Tx(ops, end) => self.run_tx(&db, &coll, ops, *end),
                Action::Interleaved {
                    a,
                    a_end,
                    b,
                    b_end,
                    schedule,
                    middle,
                    a_commits_first,
                } => self.run_interleaved(
                    &db,
                    &coll,
                    [(a, *a_end), (b, *b_end)],
                    schedule,
                    middle.as_ref(),
                    *a_commits_first,
                ),
                Action::Auto(op) => self.run_auto(&db, &coll, op),
                Action::Reopen(how) => (db, coll) = self.reopen(db, coll, *how),
                Action::Checkpoint => {
                    let info = db.checkpoint().expect("checkpoint");
                    assert_eq!(info.seq, self.model.state.seq, "checkpoint's cut");
                    self.model.checkpointed();
                    self.stats.borrow_mut().checkpoints += 1;
                }
            }
            check_snapshot(&db, &coll, &self.model.state, &step.queries);
            let mut stats = self.stats.borrow_mut();
            stats.max_docs = stats.max_docs.max(self.model.state.docs.len());
        }
        // Whatever happened, a clean reopen finds the last commit.
        (db, coll) = self.reopen(db, coll, Reopen::Clean);
        check_snapshot(&db, &coll, &self.model.state, &[]);
    }

    fn begin<'db>(&self, db: &'db Database, end: End) -> (Transaction<'db>, TxModel) {
        let tx = match end {
            End::Commit(d) => db.begin_with(d),
            End::Rollback | End::Drop => db.begin(),
        };
        (tx, TxModel::begin(&self.model.state))
    }

    fn run_tx(&mut self, db: &Database, coll: &Collection<Item>, ops: &[TxOp], end: End) {
        let (mut tx, mut tm) = self.begin(db, end);
        for op in ops {
            self.apply(&mut tx, &mut tm, coll, op);
            check_tx_view(db, coll, &tx, &tm, &self.model.state, &[]);
        }
        self.finish(db, tx, &tm, end);
    }

    fn run_interleaved(
        &mut self,
        db: &Database,
        coll: &Collection<Item>,
        txs: [(&Vec<TxOp>, End); 2],
        schedule: &[bool],
        middle: Option<&AutoOp>,
        a_commits_first: bool,
    ) {
        let (tx_a, tm_a) = self.begin(db, txs[0].1);
        let (tx_b, tm_b) = self.begin(db, txs[1].1);
        let mut both = [(tx_a, tm_a), (tx_b, tm_b)];
        if let Some(op) = middle {
            self.run_auto(db, coll, op);
        }
        let mut next = [0usize, 0];
        let mut turns = schedule.iter().copied().chain(std::iter::repeat(true));
        while next[0] < txs[0].0.len() || next[1] < txs[1].0.len() {
            let want = usize::from(!turns.next().expect("endless"));
            let who = if next[want] < txs[want].0.len() {
                want
            } else {
                1 - want
            };
            let (tx, tm) = &mut both[who];
            self.apply(tx, tm, coll, &txs[who].0[next[who]]);
            check_tx_view(db, coll, tx, tm, &self.model.state, &[]);
            next[who] += 1;
        }
        let [a, b] = both;
        let (first, second) = if a_commits_first { (a, b) } else { (b, a) };
        let (first_end, second_end) = if a_commits_first {
            (txs[0].1, txs[1].1)
        } else {
            (txs[1].1, txs[0].1)
        };
        self.finish(db, first.0, &first.1, first_end);
        // The second still sees its own snapshot, whatever the first did.
        check_tx_view(db, coll, &second.0, &second.1, &self.model.state, &[]);
        self.finish(db, second.0, &second.1, second_end);
    }

    fn run_auto(&mut self, db: &Database, coll: &Collection<Item>, op: &AutoOp) {
        let mut tm = TxModel::begin(&self.model.state);
        let result = match op {
            AutoOp::Insert(item) => match db.insert(coll, item) {
                Ok(id) => {
                    self.issued(id, &tm);
                    tm.write(id, Some(item.clone()));
                    Ok(())
                }
                Err(e) => {
                    // The id a failed insert used is not returned: model the write on a placeholder id.
                    tm.write(u64::MAX, Some(item.clone()));
                    Err(e)
                }
            },
            AutoOp::Put(pick, item) => {
                let id = tm.pick(*pick, &self.model.state);
                tm.write(id, Some(item.clone()));
                db.put(coll, id, item)
            }
            AutoOp::Remove(pick) => {
                let id = tm.pick(*pick, &self.model.state);
                let existed = tm.cur.view.contains_key(&id);
                if existed {
                    tm.write(id, None);
                }
                db.remove(coll, id)
                    .map(|r| assert_eq!(r, existed, "auto-commit remove({id})"))
            }
        };
        // Auto-commit calls return once the commit is published.
        let outcome = result.map(|()| (db.read().seq(), None));
        self.judge(db, &tm, self.options.durability, outcome, false);
    }

    fn issued(&mut self, id: u64, tm: &TxModel) {
        assert!(!tm.cur.view.contains_key(&id), "insert reused live id {id}");
        if let Some((&max, _)) = self.model.state.last_write.last_key_value() {
            assert!(id > max, "insert issued {id}, not above committed id {max}");
        }
        if let Some(last) = self.model.last_issued {
            assert!(id > last, "insert issued {id} after {last}");
        }
        self.model.last_issued = Some(id);
    }

    fn apply(
        &mut self,
        tx: &mut Transaction<'_>,
        tm: &mut TxModel,
        coll: &Collection<Item>,
        op: &TxOp,
    ) {
        match op {
            TxOp::Insert(item) => {
                let id = tx
                    .insert(coll, item)
                    .expect("insert with auto-increment ids");
                self.issued(id, tm);
                tm.write(id, Some(item.clone()));
            }
            TxOp::Put(pick, item) => {
                let id = tm.pick(*pick, &self.model.state);
                tx.put(coll, id, item).expect("put");
                tm.write(id, Some(item.clone()));
            }
            TxOp::Update(pick, item) => {
                let id = tm.pick(*pick, &self.model.state);
                let result = tx.update(coll, id, item);
                if tm.cur.view.contains_key(&id) {
                    result.expect("update of a visible document");
                    tm.write(id, Some(item.clone()));
                } else {
                    assert!(
                        matches!(result, Err(Error::NotFound { id: i, .. }) if i == id),
                        "update of missing {id}: {result:?}"
                    );
                    self.stats.borrow_mut().not_found += 1;
                }
            }
            TxOp::Modify(pick, delta) => {
                let id = tm.pick(*pick, &self.model.state);
                let current = tm.cur.view.get(&id).cloned();
                let changed = current.as_ref().map(|c| bump(c, *delta));
                let called = std::cell::Cell::new(false);
                let result = tx.modify(coll, id, |a| {
                    called.set(true);
                    let seen = from_archived(a);
                    assert_eq!(Some(&seen), current.as_ref(), "modify({id}) saw");
                    bump(&seen, *delta)
                });
                match changed {
                    Some(new) => {
                        result.expect("modify of a visible document");
                        tm.write(id, Some(new));
                    }
                    None => {
                        assert!(!called.get(), "modify called back for missing {id}");
                        assert!(
                            matches!(result, Err(Error::NotFound { id: i, .. }) if i == id),
                            "modify of missing {id}: {result:?}"
                        );
                        self.stats.borrow_mut().not_found += 1;
                    }
                }
            }
            TxOp::Remove(pick) => {
                let id = tm.pick(*pick, &self.model.state);
                let existed = tx.remove(coll, id).expect("remove");
                assert_eq!(existed, tm.cur.view.contains_key(&id), "remove({id})");
                if existed {
                    tm.write(id, None);
                }
            }
            TxOp::Savepoint => {
                let sp = tx.savepoint();
                tm.savepoints.push((sp, tm.cur.clone()));
            }
            TxOp::RollbackTo(k) => {
                if tm.savepoints.is_empty() {
                    return;
                }
                // Half the time the oldest: it leaves the most savepoints rolled back past.
                let i = if k % 2 == 0 {
                    0
                } else {
                    k % tm.savepoints.len()
                };
                self.rollback_to_index(tx, tm, i);
            }
            TxOp::StaleDance(first, second) => {
                self.apply(tx, tm, coll, &TxOp::Savepoint);
                let sp1 = tm.savepoints.len() - 1;
                for item in first {
                    self.apply(tx, tm, coll, &TxOp::Insert(item.clone()));
                }
                self.apply(tx, tm, coll, &TxOp::Savepoint);
                self.rollback_to_index(tx, tm, sp1);
                for item in second {
                    self.apply(tx, tm, coll, &TxOp::Insert(item.clone()));
                }
                // The second savepoint is the newest discarded one.
                self.apply(tx, tm, coll, &TxOp::RollbackStale(tm.stale.len() - 1));
            }
            TxOp::RollbackStale(k) => {
                if tm.stale.is_empty() {
                    return;
                }
                let (sp, at) = tm.stale[k % tm.stale.len()];
                let result = tx.rollback_to(sp);
                assert!(
                    matches!(result, Err(Error::InvalidSavepoint(_))),
                    "rollback to a discarded savepoint (at {at}), with {} writes since: {result:?}",
                    tm.cur.ops
                );
                self.stats.borrow_mut().invalid_savepoints += 1;
            }
        }
    }

    fn rollback_to_index(&self, tx: &mut Transaction<'_>, tm: &mut TxModel, i: usize) {
        let (sp, saved) = tm.savepoints[i].clone();
        tx.rollback_to(sp).expect("rollback to an active savepoint");
        // Savepoints taken after it are discarded (as SQL's ROLLBACK TO SAVEPOINT does), even at the same position.
        let later = tm.savepoints.split_off(i + 1);
        for (s, at) in later {
            tm.stale.push((s, at.ops));
        }
        tm.cur = saved;
        self.stats.borrow_mut().rollbacks_to += 1;
    }

    fn finish(&mut self, db: &Database, tx: Transaction<'_>, tm: &TxModel, end: End) {
        match end {
            End::Rollback => tx.rollback(),
            End::Drop => drop(tx),
            End::Commit(durability) => {
                let result = tx.commit().map(|info| (info.seq, info.end_lsn));
                self.judge(db, tm, durability, result, true);
            }
        }
    }

    /// Checks a commit's result against the model, and applies it to the model.
    fn judge(
        &mut self,
        db: &Database,
        tm: &TxModel,
        durability: Durability,
        // The commit's sequence number and end LSN.
        result: collection_store::Result<(u64, Option<u64>)>,
        check_lsn: bool,
    ) {
        let state = &self.model.state;
        let expect = expect_commit(state, tm);
        let mut stats = self.stats.borrow_mut();
        match (&expect, &result) {
            (Expect::Empty, Ok((seq, end_lsn))) => {
                // An empty commit reports the sequence number of its snapshot.
                assert_eq!(*seq, tm.begin_seq, "empty commit's seq");
                if check_lsn {
                    assert_eq!(*end_lsn, None, "empty commit wrote");
                }
                stats.empty_commits += 1;
            }
            (Expect::Conflict(ids), Err(Error::Conflict { id, .. })) if ids.contains(id) => {
                stats.conflicts += 1;
            }
            (
                Expect::Unique(duplicates),
                Err(Error::UniqueViolation {
                    index, key, holder, ..
                }),
            ) => {
                let holders = duplicates
                    .iter()
                    .find(|((i, k), _)| i == index && k == key)
                    .map(|(_, ids)| ids);
                assert!(
                    holders.is_some_and(|ids| ids.contains(holder)),
                    "violation on {index} {key} held by {holder}; duplicates: {duplicates:?}"
                );
                stats.unique_violations += 1;
            }
            (Expect::Commit(next), Ok((seq, end_lsn))) => {
                assert_eq!(*seq, next.seq, "commit's seq");
                if check_lsn {
                    assert!(end_lsn.is_some(), "commit wrote nothing");
                }
                stats.commits += 1;
                let next = next.clone();
                drop(stats);
                self.model.committed(next, durability);
                return;
            }
            _ => panic!(
                "commit returned {result:?}, model expected {expect:?}\ntx writes: {:?}\ncommitted: {:?}",
                tm.cur.writes, state
            ),
        }
        // Failed or empty: nothing changed, nothing published.
        assert_eq!(db.read().seq(), state.seq, "failed commit published");
    }

    fn reopen(
        &mut self,
        db: Database,
        coll: Collection<Item>,
        how: Reopen,
    ) -> (Database, Collection<Item>) {
        self.stats.borrow_mut().reopens += 1;
        let candidates = match how {
            Reopen::Clean => {
                drop(coll);
                drop(db);
                vec![self.model.state.clone()]
            }
            Reopen::CrashKeepAll | Reopen::CrashTorn(_) => {
                let storage = self
                    .storage
                    .as_ref()
                    .expect("crash images need the mem backend");
                let image = match how {
                    Reopen::CrashTorn(seed) => {
                        let mut x = seed | 1;
                        storage.crash_image(move |_, _| {
                            // xorshift64: keep each unsynced sector with probability 1/2.
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x & 1 == 0
                        })
                    }
                    _ => storage.crash_image(|_, _| true),
                };
                // Renames not yet made durable survive or not (only a failed checkpoint leaves any).
                let files = self
                    .files
                    .as_ref()
                    .expect("mem backend")
                    .crash_image(seed_bit(how));
                drop(coll);
                drop(db);
                self.storage = Some(Arc::new(image));
                self.files = Some(files);
                match how {
                    Reopen::CrashTorn(_) => self.model.since_synced.clone(),
                    _ => self.model.since_written.clone(),
                }
            }
        };
        let (db, coll) = self.open();
        let seq = db.read().seq();
        let Some(found) = candidates.iter().find(|s| s.seq == seq) else {
            panic!(
                "{how:?} recovered seq {seq}; possible: {:?}",
                candidates.iter().map(|s| s.seq).collect::<Vec<_>>()
            );
        };
        if found.seq < self.model.state.seq {
            self.stats.borrow_mut().lost_on_crash += 1;
        }
        self.model
            .recovered(found.clone(), !matches!(how, Reopen::Clean));
        (db, coll)
    }
}

/// One bit of a crash's seed (for choices the sector bits do not cover).
fn seed_bit(how: Reopen) -> bool {
    matches!(how, Reopen::CrashTorn(seed) if seed & 2 != 0)
}

/// What `TxOp::Modify` makes of a document.
fn bump(d: &Item, delta: u8) -> Item {
    let mut d = d.clone();
    d.age = (d.age % 8 + u32::from(delta)) % 8;
    d.score = d.score.wrapping_add(i32::from(delta % 3) - 1);
    if delta.is_multiple_of(5) {
        d.nick = None;
    }
    if delta.is_multiple_of(7) {
        d.team = Some("c".into());
    }
    d
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While shrinking, every failing attempt panics: print only the final report (proptest's), not each panic.
fn quiet_panics_on_this_thread(quiet: bool) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(quiet));
}

fn run_model(backend: Backend, cases: u32) -> Stats {
    let max_steps = env_or("TXN_MODEL_STEPS", 24usize);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        rng_seed: std::env::var("TXN_MODEL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(RngSeed::Random, RngSeed::Fixed),
        ..Config::default()
    };
    let stats = RefCell::new(Stats::default());
    let mut runner = TestRunner::new(config);
    quiet_panics_on_this_thread(true);
    let result = runner.run(&case(backend, max_steps), |case| {
        stats.borrow_mut().cases += 1;
        let mut harness = Harness {
            backend,
            options: Options {
                durability: case.durability,
                segment_size_bytes: case.segment_size_bytes,
                ..Options::default()
            },
            storage: (backend == Backend::Mem).then(|| Arc::new(MemStorage::simulated())),
            files: (backend == Backend::Mem).then(MemFiles::simulated),
            dir: (backend == Backend::Dir).then(|| tempfile::tempdir().expect("tempdir")),
            model: Model::new(),
            stats: &stats,
        };
        harness.run(&case);
        Ok(())
    });
    quiet_panics_on_this_thread(false);
    let stats = stats.into_inner();
    eprintln!("{backend:?}: {stats:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    stats
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn model_mem() {
    let cases = env_or("TXN_MODEL_CASES", 64);
    let stats = run_model(Backend::Mem, cases);
    if cases >= 32 {
        // The generator must reach every outcome (each is near certain over 32 cases).
        assert!(stats.commits > 0 && stats.empty_commits > 0, "{stats:?}");
        assert!(stats.conflicts > 0, "no conflict was exercised: {stats:?}");
        assert!(
            stats.unique_violations > 0,
            "no unique violation: {stats:?}"
        );
        assert!(stats.not_found > 0 && stats.rollbacks_to > 0, "{stats:?}");
        assert!(stats.invalid_savepoints > 0, "{stats:?}");
        assert!(stats.lost_on_crash > 0, "no crash lost a commit: {stats:?}");
        assert!(stats.reopens > stats.cases, "{stats:?}");
    }
}

#[test]
fn model_dir() {
    let stats = run_model(Backend::Dir, env_or("TXN_MODEL_DIR_CASES", 8));
    assert!(stats.commits > 0, "{stats:?}");
}

fn in_memory() -> (Database, Collection<Item>) {
    let db = Database::open(
        "",
        Options {
            in_memory: true,
            ..Options::default()
        },
    )
    .unwrap();
    let coll = db.collection(COLLECTION, spec()).unwrap();
    (db, coll)
}

fn plain(email: &str, nick: Option<&str>) -> Item {
    Item {
        email: email.into(),
        age: 1,
        team: None,
        dept: String::new(),
        score: 0,
        nick: nick.map(Into::into),
    }
}

#[test]
fn unique_keys_can_be_swapped_in_one_transaction() {
    let (db, coll) = in_memory();
    let a = db.insert(&coll, &plain("a", None)).unwrap();
    let b = db.insert(&coll, &plain("b", None)).unwrap();
    let mut tx = db.begin();
    tx.update(&coll, a, &plain("b", None)).unwrap();
    tx.update(&coll, b, &plain("a", None)).unwrap();
    tx.commit().expect("the result holds each email once");
    let snap = db.read();
    assert_eq!(snap.get(&coll, a).unwrap().email, "b");
    assert_eq!(snap.get(&coll, b).unwrap().email, "a");
}

#[test]
fn unique_key_freed_later_in_the_transaction() {
    let (db, coll) = in_memory();
    let a = db.insert(&coll, &plain("a", None)).unwrap();
    let mut tx = db.begin();
    let c = tx.insert(&coll, &plain("a", Some("n"))).unwrap();
    tx.remove(&coll, a).unwrap();
    tx.commit().expect("the result holds email a once");
    assert_eq!(
        db.read()
            .find_one(&coll, "email", &"a".to_string())
            .unwrap()
            .unwrap()
            .0,
        c
    );
}

#[test]
fn stale_savepoint_is_refused_after_new_writes() {
    let (db, coll) = in_memory();
    let mut tx = db.begin();
    let sp1 = tx.savepoint();
    tx.insert(&coll, &plain("x", None)).unwrap();
    let sp2 = tx.savepoint();
    tx.rollback_to(sp1).unwrap();
    let y = tx.insert(&coll, &plain("y", None)).unwrap();
    let z = tx.insert(&coll, &plain("z", None)).unwrap();
    let result = tx.rollback_to(sp2);
    let (y_kept, z_kept) = (tx.get(&coll, y).is_some(), tx.get(&coll, z).is_some());
    assert!(
        matches!(result, Err(Error::InvalidSavepoint(_))),
        "rollback to a savepoint rolled back past returned {result:?} (then y kept: {y_kept}, z kept: {z_kept})"
    );
}

#[test]
fn stale_savepoint_is_refused_before_new_writes() {
    let (db, coll) = in_memory();
    let mut tx = db.begin();
    let sp1 = tx.savepoint();
    tx.insert(&coll, &plain("x", None)).unwrap();
    let sp2 = tx.savepoint();
    tx.rollback_to(sp1).unwrap();
    assert!(matches!(
        tx.rollback_to(sp2),
        Err(Error::InvalidSavepoint(_))
    ));
    tx.rollback_to(sp1)
        .expect("the savepoint rolled back to stays valid");
}

#[test]
fn failed_commits_write_nothing_to_the_log() {
    let (db, coll) = in_memory();
    let a = db.insert(&coll, &plain("a", None)).unwrap();
    let lsn = db.wal().next_lsn();
    let mut tx = db.begin();
    tx.insert(&coll, &plain("b", None)).unwrap();
    tx.insert(&coll, &plain("a", None)).unwrap();
    assert!(matches!(tx.commit(), Err(Error::UniqueViolation { .. })));
    let mut t1 = db.begin();
    let mut t2 = db.begin();
    t1.update(&coll, a, &plain("c", None)).unwrap();
    t2.remove(&coll, a).unwrap();
    t1.commit().unwrap();
    let lsn_after_first = db.wal().next_lsn();
    assert!(lsn_after_first > lsn);
    assert!(matches!(t2.commit(), Err(Error::Conflict { id, .. }) if id == a));
    assert_eq!(
        db.wal().next_lsn(),
        lsn_after_first,
        "a conflicting commit wrote to the log"
    );
    assert_eq!(db.read().get(&coll, a).unwrap().email, "c");
}
