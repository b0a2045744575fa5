//! Power loss under the database, simulated: transactions of several documents each run on
//! `MemStorage::simulated()`, crash images are taken between commits and while writers are committing, and every
//! image is reopened with `Database::open_with_storage`, the collection declared again with the same `Spec`, and
//! checked against a model of the commit order:
//!
//! 1. the recovered documents equal, exactly, the state after some prefix of the commit order (so no transaction
//!    is partially visible, and nothing appears that was never committed);
//! 2. that prefix holds every transaction acknowledged under `Durability::Sync` before the image, and every one
//!    whose log records lay below `durable_lsn` (with every sector kept: below `written_lsn`);
//! 3. `check_indexes` agrees, the unique index finds every document, the snapshot's `seq` is the prefix's last;
//! 4. the recovered database accepts a new `Sync` commit (with a fresh auto-increment id) that survives another
//!    crash.
//!
//! The workload is a bank: accounts with a unique `owner`, transfers between two to four of them (the total never
//! changes), accounts opened and closed, owners renamed (sometimes two at once, one taking the other's old name),
//! and transactions that break the unique index on purpose. Every document written records the transaction that
//! wrote it, so the prefix a recovered state claims to be is read off its documents.
//!
//! Also: injected EIO (at a random write or sync) fails a commit, the database refuses every later commit with
//! `Error::Poisoned`, readers never see the failed transaction, and a crash image recovers a prefix holding every
//! Sync-acknowledged transaction (the failed one in full or not at all).
//!
//! Seeds are fixed (override the base with `CSTORE_SEED=N`) and printed on failure. About 800 crash images per run;
//! `CSTORE_DB_CRASH_IMAGES=N` scales the budget.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use collection_store::wal::{Durability, MemStorage};
use collection_store::{Collection, Database, Error, Options, Snapshot, Spec, Transaction};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rkyv::{Archive, Deserialize, Serialize};

const DEFAULT_BASE_SEED: u64 = 0x00DB_C4A5_2026;
const DEFAULT_CRASH_IMAGES: usize = 800;
const ACCOUNTS: usize = 10;
/// Closing accounts stops at this many, so transfers always find partners.
const MIN_ACCOUNTS: usize = 6;
const OPENING_BALANCE: i64 = 1_000;
/// The transaction id of the setup commit (writers' ids are `writer << 32 | n` with `writer >= 1`).
const SETUP_TX: u64 = 0;
/// The transaction id of the commit made after recovery.
const AFTER_CRASH_TX: u64 = u64::MAX;

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn base_seed() -> u64 {
    env_or("CSTORE_SEED", DEFAULT_BASE_SEED)
}

/// This test's share of the crash-image budget.
fn image_budget(share_percent: usize) -> usize {
    (env_or("CSTORE_DB_CRASH_IMAGES", DEFAULT_CRASH_IMAGES) * share_percent / 100).max(1)
}

/// Prints what to rerun with if the test panics while it is alive.
struct SeedGuard(String);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "FAILED: {} (rerun with CSTORE_SEED={} to reproduce)",
                self.0,
                base_seed()
            );
        }
    }
}

fn options(segment_size_bytes: u64) -> Options {
    Options {
        durability: Durability::Sync,
        segment_size_bytes,
        ..Options::default()
    }
}

fn random_segment_size(rng: &mut SmallRng) -> u64 {
    [4096, 8192, 16384][rng.random_range(0..3)]
}

fn random_durability(rng: &mut SmallRng) -> Durability {
    match rng.random_range(0..100) {
        0..35 => Durability::None,
        35..70 => Durability::Os,
        _ => Durability::Sync,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Documents and the model
// ---------------------------------------------------------------------------------------------------------------

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Account {
    owner: String,
    balance: i64,
    /// The transaction that last wrote this document.
    tx: u64,
    /// Filler, so that documents and transactions straddle disk sectors and segments.
    pad: Vec<u8>,
}

fn spec() -> Spec<Account> {
    Spec::new()
        .unique("owner", |a: &ArchivedAccount| a.owner.to_string())
        .index("tx", |a: &ArchivedAccount| a.tx.to_native())
}

type State = BTreeMap<u64, Account>;

/// One transaction's writes, last write per document, in the order made: `None` removes.
type Writes = Vec<(u64, Option<Account>)>;

fn apply(state: &State, writes: &Writes) -> State {
    let mut next = state.clone();
    for (id, doc) in writes {
        match doc {
            Some(doc) => next.insert(*id, doc.clone()),
            None => next.remove(id),
        };
    }
    next
}

fn owned(archived: &ArchivedAccount) -> Account {
    rkyv::deserialize::<Account, rkyv::rancor::Error>(archived).expect("a stored account")
}

fn read_state(snap: &Snapshot, accounts: &Collection<Account>) -> State {
    snap.iter(accounts).map(|(id, a)| (id, owned(a))).collect()
}

fn total(state: &State) -> i64 {
    state.values().map(|a| a.balance).sum()
}

/// Every transaction that could be in the log, in commit order, and the state after each prefix of it.
struct History {
    /// `states[p]`: the state after the first `p` transactions (`states[0]`: after setup).
    states: Vec<State>,
    /// `seqs[p]`: the commit sequence number of the last transaction in prefix `p`.
    seqs: Vec<u64>,
    /// `end_lsns[p]`: where transaction `p`'s log records end (`u64::MAX` if unknown: a failed commit).
    end_lsns: Vec<u64>,
    /// Transaction id → its position `p`.
    positions: HashMap<u64, usize>,
}

impl History {
    fn new(initial: State, setup_seq: u64, setup_end: u64) -> Self {
        Self {
            states: vec![initial],
            seqs: vec![setup_seq],
            end_lsns: vec![setup_end],
            positions: HashMap::from([(SETUP_TX, 0)]),
        }
    }

    fn push(&mut self, txid: u64, seq: u64, end_lsn: u64, writes: &Writes) -> usize {
        let next = apply(self.states.last().expect("setup state"), writes);
        self.states.push(next);
        self.seqs.push(seq);
        self.end_lsns.push(end_lsn);
        let p = self.states.len() - 1;
        assert!(
            self.positions.insert(txid, p).is_none(),
            "transaction id {txid:#x} reused"
        );
        p
    }

    fn last(&self) -> usize {
        self.states.len() - 1
    }

    /// The longest prefix whose log records all end at or below `lsn`.
    fn within(&self, lsn: u64) -> usize {
        self.end_lsns.iter().take_while(|&&end| end <= lsn).count() - 1
    }
}

/// The prefix oracle: the recovered state must be `history.states[k]` for some `k >= must`, with `k` read off the
/// newest transaction id the documents carry. Returns `k`.
fn judge(recovered: &State, history: &History, must: usize) -> Result<usize, String> {
    let mut k = 0;
    for (id, doc) in recovered {
        match history.positions.get(&doc.tx) {
            Some(&p) => k = k.max(p),
            None => {
                return Err(format!(
                    "document {id} carries transaction {:#x}, which never committed",
                    doc.tx
                ));
            }
        }
    }
    let expected = &history.states[k];
    if recovered != expected {
        let mut diff = Vec::new();
        for id in recovered.keys().chain(expected.keys()) {
            let (got, want) = (recovered.get(id), expected.get(id));
            if got != want && diff.len() < 6 {
                let tx = |d: Option<&Account>| d.map(|a| format!("{:#x}", a.tx));
                diff.push(format!(
                    "document {id}: recovered from tx {:?}, expected from tx {:?}",
                    tx(got),
                    tx(want)
                ));
            }
        }
        diff.dedup();
        return Err(format!(
            "not the state after any prefix: the newest transaction recovered is #{k}, but a transaction is \
             partially visible or something else changed: {}",
            diff.join("; ")
        ));
    }
    if k < must {
        return Err(format!(
            "lost acknowledged-durable transactions: recovered a prefix of {k}, at least {must} must survive"
        ));
    }
    if total(recovered) != OPENING_BALANCE * ACCOUNTS as i64 {
        return Err(format!(
            "the total is {}, not {}",
            total(recovered),
            OPENING_BALANCE * ACCOUNTS as i64
        ));
    }
    Ok(k)
}

// ---------------------------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------------------------

fn pad(rng: &mut SmallRng) -> Vec<u8> {
    let len = match rng.random_range(0..100) {
        0..60 => rng.random_range(0..40),
        60..90 => rng.random_range(40..300),
        _ => rng.random_range(300..600),
    };
    let seed: u8 = rng.random();
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// A new, empty database on a simulated disk, with the accounts opened by a `Sync` setup commit.
fn open_new(opts: &Options, rng: &mut SmallRng) -> (Arc<MemStorage>, Database, History) {
    let storage = Arc::new(MemStorage::simulated());
    let db = Database::open_with_storage(storage.clone(), opts.clone()).unwrap();
    let accounts = db.collection("accounts", spec()).unwrap();
    let mut tx = db.begin_with(Durability::Sync);
    let mut initial = State::new();
    for i in 0..ACCOUNTS {
        let account = Account {
            owner: format!("acct-{i}"),
            balance: OPENING_BALANCE,
            tx: SETUP_TX,
            pad: pad(rng),
        };
        let id = tx.insert(&accounts, &account).unwrap();
        initial.insert(id, account);
    }
    let info = tx.commit().unwrap();
    let history = History::new(initial, info.seq, info.end_lsn.unwrap());
    (storage, db, history)
}

/// Whether other writers commit concurrently (then conflicts are expected, and a deliberate unique violation may
/// legitimately succeed: the name it copies may have been renamed away meanwhile).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serial,
    Concurrent,
}

enum Outcome {
    Committed {
        seq: u64,
        end_lsn: u64,
        writes: Writes,
    },
    /// Refused as it should be: a conflict, or a deliberate unique violation.
    Refused,
    /// The commit failed otherwise (I/O): its outcome is unknown.
    Failed { writes: Writes, error: Error },
}

fn get(tx: &Transaction<'_>, accounts: &Collection<Account>, id: u64) -> Option<Account> {
    tx.get(accounts, id).map(owned)
}

/// Runs one random transaction `txid`.
fn run_tx(
    db: &Database,
    accounts: &Collection<Account>,
    rng: &mut SmallRng,
    txid: u64,
    durability: Durability,
    mode: Mode,
) -> Outcome {
    let ids: Vec<u64> = db.read().iter(accounts).map(|(id, _)| id).collect();
    let mut tx = db.begin_with(durability);
    // Ids this transaction can see (its snapshot may be newer than `ids`), in random order.
    let mut pool: Vec<u64> = ids
        .into_iter()
        .filter(|&id| tx.get(accounts, id).is_some())
        .collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.random_range(0..=i));
    }
    let mut writes: Writes = Vec::new();
    let put = |tx: &mut Transaction<'_>,
               writes: &mut Writes,
               id: u64,
               mut doc: Account,
               rng: &mut SmallRng| {
        doc.tx = txid;
        doc.pad = pad(rng);
        tx.put(accounts, id, &doc).unwrap();
        writes.retain(|(w, _)| *w != id);
        writes.push((id, Some(doc)));
    };
    let roll = rng.random_range(0..100);
    let mut deliberate_violation = false;
    match roll {
        // With another writer, the ids listed from an older snapshot can miss accounts the transaction's newer
        // snapshot has (opened meanwhile): then skip this round.
        _ if pool.len() < 4 && mode == Mode::Concurrent => return Outcome::Refused,
        _ if pool.len() < 4 => panic!("only {} accounts visible", pool.len()),
        0..55 => {
            // Transfer among two to four accounts; the amounts sum to zero.
            let m = rng.random_range(2..=4);
            let mut left = 0;
            for (i, &id) in pool[..m].iter().enumerate() {
                let delta = if i + 1 == m {
                    -left
                } else {
                    rng.random_range(-50..=50)
                };
                left += delta;
                let mut a = get(&tx, accounts, id).unwrap();
                a.balance += delta;
                put(&mut tx, &mut writes, id, a, rng);
            }
        }
        55..68 => {
            // Open an account funded from another (auto-increment id).
            let mut from = get(&tx, accounts, pool[0]).unwrap();
            let amount = rng.random_range(0..100);
            from.balance -= amount;
            put(&mut tx, &mut writes, pool[0], from, rng);
            let new = Account {
                owner: format!("o{txid:x}"),
                balance: amount,
                tx: txid,
                pad: pad(rng),
            };
            let id = tx.insert(accounts, &new).unwrap();
            writes.push((id, Some(new)));
        }
        68..78 if pool.len() > MIN_ACCOUNTS => {
            // Close an account into another.
            let closed = get(&tx, accounts, pool[0]).unwrap();
            assert!(tx.remove(accounts, pool[0]).unwrap());
            writes.push((pool[0], None));
            let mut to = get(&tx, accounts, pool[1]).unwrap();
            to.balance += closed.balance;
            put(&mut tx, &mut writes, pool[1], to, rng);
        }
        68..84 => {
            // Rename one account.
            let mut a = get(&tx, accounts, pool[0]).unwrap();
            a.owner = format!("r{txid:x}");
            put(&mut tx, &mut writes, pool[0], a, rng);
        }
        84..93 => {
            // B takes a new name and A takes B's old one, in that order: legal at every step.
            let (mut a, mut b) = (
                get(&tx, accounts, pool[0]).unwrap(),
                get(&tx, accounts, pool[1]).unwrap(),
            );
            a.owner = std::mem::replace(&mut b.owner, format!("s{txid:x}"));
            put(&mut tx, &mut writes, pool[1], b, rng);
            put(&mut tx, &mut writes, pool[0], a, rng);
        }
        _ => {
            // A deliberate unique violation: A takes B's name while B keeps it (plus a transfer A → C).
            let b = get(&tx, accounts, pool[1]).unwrap();
            let mut a = get(&tx, accounts, pool[0]).unwrap();
            let mut c = get(&tx, accounts, pool[2]).unwrap();
            a.owner = b.owner;
            a.balance -= 5;
            c.balance += 5;
            put(&mut tx, &mut writes, pool[2], c, rng);
            put(&mut tx, &mut writes, pool[0], a, rng);
            deliberate_violation = true;
        }
    }
    match tx.commit() {
        Ok(info) => {
            assert!(
                !(deliberate_violation && mode == Mode::Serial),
                "tx {txid:#x}: a commit that breaks the unique index succeeded"
            );
            Outcome::Committed {
                seq: info.seq,
                end_lsn: info.end_lsn.expect("the transaction wrote"),
                writes,
            }
        }
        Err(Error::UniqueViolation { index, .. }) if deliberate_violation => {
            assert_eq!(index, "owner");
            Outcome::Refused
        }
        Err(Error::Conflict { .. }) if mode == Mode::Concurrent => Outcome::Refused,
        Err(error) => Outcome::Failed { writes, error },
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Crash images
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Survival {
    AllLost,
    AllKept,
    /// Each unsynced write's bytes in each 512-byte sector kept with this probability.
    Random(f64),
    /// Each `bytes`-aligned block (a sector, a page) of the disk wholly new or wholly as last synced.
    Aligned {
        bytes: u64,
        p: f64,
    },
}

fn crash_image(storage: &MemStorage, survival: Survival, rng: &mut SmallRng) -> MemStorage {
    let mut r = SmallRng::seed_from_u64(rng.random());
    match survival {
        Survival::AllLost => storage.crash_image(|_, _| false),
        Survival::AllKept => storage.crash_image(|_, _| true),
        Survival::Random(p) => storage.crash_image(move |_, _| r.random_bool(p)),
        Survival::Aligned { bytes, p } => {
            let mut blocks = HashMap::new();
            storage.crash_image(move |name, offset| {
                *blocks
                    .entry((name, offset / bytes))
                    .or_insert_with(|| r.random_bool(p))
            })
        }
    }
}

fn random_survival(rng: &mut SmallRng) -> Survival {
    match rng.random_range(0..8) {
        0 => Survival::AllLost,
        1 => Survival::AllKept,
        2 => Survival::Random(0.1),
        3 => Survival::Random(0.9),
        4 => Survival::Aligned { bytes: 512, p: 0.5 },
        5 => Survival::Aligned {
            bytes: 4096,
            p: 0.5,
        },
        _ => Survival::Random(0.5),
    }
}

/// All lost, all kept, then `random` random patterns.
fn survivals(rng: &mut SmallRng, random: usize) -> Vec<Survival> {
    let mut all = vec![Survival::AllLost, Survival::AllKept];
    all.extend((0..random).map(|_| random_survival(rng)));
    all
}

/// Reopens `image` (a crash image must always reopen), re-declares the collection, checks the prefix oracle with
/// at least `must` transactions, then commits once more and (if `second_crash`) checks that commit survives a
/// second crash. Returns the recovered prefix length.
///
/// (Every open allocates the log's 8 MiB staging ring, about 20 ms in a debug build: the second crash is checked
/// for a third of the images to keep the test quick.)
fn check_image(
    image: MemStorage,
    history: &History,
    must: usize,
    opts: &Options,
    second_crash: bool,
) -> Result<usize, String> {
    let storage = Arc::new(image);
    let db = Database::open_with_storage(storage.clone(), opts.clone())
        .map_err(|e| format!("a crash image must reopen, got: {e}"))?;
    let accounts = db
        .collection("accounts", spec())
        .map_err(|e| format!("re-declaring the collection after recovery: {e}"))?;
    let snap = db.read();
    snap.check_indexes(&accounts)
        .map_err(|e| format!("indexes disagree after recovery: {e}"))?;
    let recovered = read_state(&snap, &accounts);
    let k = judge(&recovered, history, must)?;
    if snap.seq() != history.seqs[k] {
        return Err(format!(
            "recovered prefix #{k} ends with commit seq {}, the snapshot says {}",
            history.seqs[k],
            snap.seq()
        ));
    }
    for (&id, a) in &recovered {
        let found = snap
            .find_one(&accounts, "owner", &a.owner)
            .map_err(|e| e.to_string())?
            .map(|(id, _)| id);
        if found != Some(id) {
            return Err(format!(
                "the unique index finds {found:?} for owner {:?} of document {id}",
                a.owner
            ));
        }
    }
    drop(snap);

    // A new commit is accepted (with a fresh id from the recovered counter), is visible, and survives a crash.
    let mut expected = recovered.clone();
    let mut tx = db.begin_with(Durability::Sync);
    let mut keys = recovered.keys();
    let (a, b) = (*keys.next().unwrap(), *keys.next().unwrap());
    for (id, delta) in [(a, -7), (b, 7)] {
        let mut doc = recovered[&id].clone();
        doc.balance += delta;
        doc.tx = AFTER_CRASH_TX;
        tx.put(&accounts, id, &doc).map_err(|e| e.to_string())?;
        expected.insert(id, doc);
    }
    let new = Account {
        owner: "after-crash".into(),
        balance: 0,
        tx: AFTER_CRASH_TX,
        pad: vec![1; 100],
    };
    let id = tx
        .insert(&accounts, &new)
        .map_err(|e| format!("insert after recovery: {e}"))?;
    expected.insert(id, new);
    tx.commit()
        .map_err(|e| format!("commit after recovery: {e}"))?;
    if read_state(&db.read(), &accounts) != expected {
        return Err("the commit after recovery is not what a reader sees".into());
    }
    if !second_crash {
        return Ok(k);
    }
    let second = storage.crash_image(|_, _| false);
    drop(accounts);
    drop(db);
    let db = Database::open_with_storage(Arc::new(second), opts.clone())
        .map_err(|e| format!("second crash image must reopen: {e}"))?;
    let accounts = db
        .collection("accounts", spec())
        .map_err(|e| e.to_string())?;
    let snap = db.read();
    if read_state(&snap, &accounts) != expected {
        return Err("the Sync commit made after recovery did not survive a second crash".into());
    }
    snap.check_indexes(&accounts)
        .map_err(|e| format!("indexes after the second crash: {e}"))?;
    Ok(k)
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

/// One writer; crash images between commits, where the watermarks and the acknowledged set are exact.
#[test]
fn crash_images_between_commits_recover_a_committed_prefix() {
    let budget = image_budget(45);
    let (mut images, mut run, mut lost_something, mut refused) = (0, 0u64, 0, 0);
    while images < budget {
        let seed = base_seed() ^ (run << 20);
        let _guard = SeedGuard(format!("serial run {run} seed {seed:#x}"));
        let mut rng = SmallRng::seed_from_u64(seed);
        let opts = options(random_segment_size(&mut rng));
        let (storage, db, mut history) = open_new(&opts, &mut rng);
        let accounts = db.collection("accounts", spec()).unwrap();
        let mut sync_acked = 0;
        let txs = rng.random_range(30..100);
        for n in 0..txs {
            let txid = 1 << 32 | n;
            let d = random_durability(&mut rng);
            match run_tx(&db, &accounts, &mut rng, txid, d, Mode::Serial) {
                Outcome::Committed {
                    seq,
                    end_lsn,
                    writes,
                } => {
                    let p = history.push(txid, seq, end_lsn, &writes);
                    assert_eq!(seq, history.seqs[p - 1] + 1, "tx {n}: seq not contiguous");
                    if d == Durability::Sync {
                        sync_acked = p;
                    }
                }
                Outcome::Refused => refused += 1,
                Outcome::Failed { error, .. } => panic!("tx {n}: commit failed: {error}"),
            }
            assert!(
                read_state(&db.read(), &accounts) == history.states[history.last()],
                "tx {n}: a reader does not see the model's state"
            );
            if n + 1 == txs || rng.random_bool(0.12) {
                let durable = history.within(db.wal().durable_lsn());
                let written = history.within(db.wal().written_lsn());
                assert!(durable >= sync_acked && written >= durable);
                for survival in survivals(&mut rng, 2) {
                    let image = crash_image(&storage, survival, &mut rng);
                    let must = match survival {
                        Survival::AllKept => written,
                        _ => durable,
                    };
                    let k = check_image(image, &history, must, &opts, images % 3 == 0)
                        .unwrap_or_else(|e| panic!("after tx {n}, {survival:?}: {e}"));
                    if k < history.last() {
                        lost_something += 1;
                    }
                    images += 1;
                }
            }
        }
        run += 1;
    }
    println!(
        "{images} crash images over {run} serial runs; {lost_something} lost unsynced transactions; \
         {refused} deliberate unique violations refused"
    );
    assert!(
        lost_something * 10 > images,
        "the workload should leave unsynced tails"
    );
    assert!(refused > 0, "no deliberate unique violation was tried");
}

/// Two writers commit concurrently (conflicting now and then) while a third thread takes crash images at random
/// moments; the images are checked once the commit order is known.
#[test]
fn crash_images_during_concurrent_commits_recover_a_committed_prefix() {
    const WRITERS: u64 = 2;
    const TXS_PER_WRITER: u64 = 120;
    let budget = image_budget(40);
    let (mut images, mut run, mut conflicts, mut lost_something) = (0, 0u64, 0, 0);
    while images < budget {
        let seed = base_seed() ^ (run << 20) ^ 0xC0C0;
        let _guard = SeedGuard(format!(
            "concurrent run {run} seed {seed:#x} (threads: not replayable)"
        ));
        let mut rng = SmallRng::seed_from_u64(seed);
        let opts = options(random_segment_size(&mut rng));
        let (storage, db, mut history) = open_new(&opts, &mut rng);
        let accounts = db.collection("accounts", spec()).unwrap();
        let setup_seq = history.seqs[0];
        let max_sync_seq = AtomicU64::new(setup_seq);
        let done = AtomicBool::new(false);
        let per_run = (budget - images).min(40);
        // (image, durable_lsn, written_lsn, highest Sync-acknowledged seq, survival), all read before the image.
        let mut taken: Vec<(MemStorage, u64, u64, u64, Survival)> = Vec::new();
        let (mut committed, refused) = std::thread::scope(|s| {
            let writers: Vec<_> = (1..=WRITERS)
                .map(|w| {
                    let (db, accounts, max_sync_seq) = (&db, &accounts, &max_sync_seq);
                    let mut rng = SmallRng::seed_from_u64(rng.random());
                    s.spawn(move || {
                        let (mut mine, mut refused) = (Vec::new(), 0);
                        for n in 0..TXS_PER_WRITER {
                            let txid = w << 32 | n;
                            let d = random_durability(&mut rng);
                            match run_tx(db, accounts, &mut rng, txid, d, Mode::Concurrent) {
                                Outcome::Committed {
                                    seq,
                                    end_lsn,
                                    writes,
                                } => {
                                    if d == Durability::Sync {
                                        max_sync_seq.fetch_max(seq, Ordering::AcqRel);
                                    }
                                    mine.push((seq, txid, end_lsn, writes));
                                }
                                Outcome::Refused => refused += 1,
                                Outcome::Failed { error, .. } => {
                                    panic!("writer {w} tx {n}: commit failed: {error}")
                                }
                            }
                        }
                        (mine, refused)
                    })
                })
                .collect();
            let snapshotter = s.spawn(|| {
                let mut rng = SmallRng::seed_from_u64(seed);
                while !done.load(Ordering::Acquire) && taken.len() < per_run {
                    std::thread::sleep(Duration::from_micros(rng.random_range(0..400)));
                    let sync_seq = max_sync_seq.load(Ordering::Acquire);
                    let durable = db.wal().durable_lsn();
                    let written = db.wal().written_lsn();
                    let survival = random_survival(&mut rng);
                    let image = crash_image(&storage, survival, &mut rng);
                    taken.push((image, durable, written, sync_seq, survival));
                }
            });
            let (mut all, mut refused) = (Vec::new(), 0);
            for w in writers {
                let (mine, r) = w.join().unwrap();
                all.extend(mine);
                refused += r;
            }
            done.store(true, Ordering::Release);
            snapshotter.join().unwrap();
            (all, refused)
        });
        conflicts += refused;
        committed.sort_by_key(|c| c.0);
        let mut last_end = history.end_lsns[0];
        for (i, (seq, txid, end_lsn, writes)) in committed.iter().enumerate() {
            assert_eq!(
                *seq,
                setup_seq + 1 + i as u64,
                "commit sequence numbers are not contiguous"
            );
            assert!(*end_lsn > last_end, "log order differs from commit order");
            last_end = *end_lsn;
            history.push(*txid, *seq, *end_lsn, writes);
        }
        assert!(
            read_state(&db.read(), &accounts) == history.states[history.last()],
            "after the writers finished, a reader does not see the model's state"
        );
        for (i, (image, durable, written, sync_seq, survival)) in taken.into_iter().enumerate() {
            let mut must = history.within(durable).max((sync_seq - setup_seq) as usize);
            if let Survival::AllKept = survival {
                must = must.max(history.within(written));
            }
            let k = check_image(image, &history, must, &opts, images % 3 == 0)
                .unwrap_or_else(|e| panic!("image {i} ({survival:?}): {e}"));
            if k < history.last() {
                lost_something += 1;
            }
            images += 1;
        }
        run += 1;
    }
    println!(
        "{images} crash images over {run} concurrent runs; {conflicts} commits refused (conflicts, unique \
         violations); {lost_something} images lost unsynced or unfinished transactions"
    );
    assert!(conflicts > 0, "the writers never conflicted");
}

/// EIO at a random write or sync: that commit fails, every later commit is refused with `Error::Poisoned`, readers
/// never see the failed transaction, and a crash image recovers a prefix with every Sync-acknowledged transaction.
#[test]
fn injected_eio_poisons_the_database_and_the_crash_image_keeps_every_synced_commit() {
    let budget = image_budget(15);
    let (mut images, mut run, mut failed_runs, mut failed_present) = (0, 0u64, 0, 0);
    while images < budget {
        let seed = base_seed() ^ (run << 20) ^ 0xE10;
        let _guard = SeedGuard(format!("EIO run {run} seed {seed:#x}"));
        let mut rng = SmallRng::seed_from_u64(seed);
        let opts = options(random_segment_size(&mut rng));
        let (storage, db, mut history) = open_new(&opts, &mut rng);
        let accounts = db.collection("accounts", spec()).unwrap();
        let fail_syncs = rng.random_bool(0.5);
        let after = if fail_syncs {
            rng.random_range(0..12)
        } else {
            rng.random_range(0..40)
        };
        if fail_syncs {
            storage.fail_syncs_after(Some(after));
        } else {
            storage.fail_writes_after(Some(after));
        }
        let context = format!(
            "fail_{}_after({after})",
            if fail_syncs { "syncs" } else { "writes" }
        );
        let mut sync_acked = 0;
        let mut failed: Option<u64> = None;
        for n in 0..150 {
            let txid = 1 << 32 | n;
            let d = random_durability(&mut rng);
            match run_tx(&db, &accounts, &mut rng, txid, d, Mode::Serial) {
                Outcome::Committed {
                    seq,
                    end_lsn,
                    writes,
                } => {
                    let p = history.push(txid, seq, end_lsn, &writes);
                    if d == Durability::Sync {
                        sync_acked = p;
                    }
                }
                Outcome::Refused => {}
                Outcome::Failed { writes, error } => {
                    assert!(
                        matches!(error, Error::Io { .. } | Error::Poisoned { .. }),
                        "{context}, tx {n}: the failed commit's error is {error}"
                    );
                    assert!(
                        db.wal().is_poisoned(),
                        "{context}, tx {n}: a failed commit must poison the log"
                    );
                    assert!(
                        read_state(&db.read(), &accounts) == history.states[history.last()],
                        "{context}, tx {n}: a reader sees the failed transaction"
                    );
                    // The failed transaction may or may not be in the log: it is the last candidate.
                    let seq = history.seqs[history.last()] + 1;
                    history.push(txid, seq, u64::MAX, &writes);
                    failed = Some(txid);
                    break;
                }
            }
        }
        if failed.is_some() {
            failed_runs += 1;
            // Later commits are refused: one that touches nothing the failed transaction wrote, and random ones.
            for d in [Durability::None, Durability::Os, Durability::Sync] {
                let mut tx = db.begin_with(d);
                let new = Account {
                    owner: format!("late-{d:?}"),
                    balance: 0,
                    tx: u64::MAX - 1,
                    pad: Vec::new(),
                };
                tx.insert(&accounts, &new).unwrap();
                match tx.commit() {
                    Err(Error::Poisoned { .. }) => {}
                    other => {
                        panic!("{context}: a {d:?} commit after the failure returned {other:?}")
                    }
                }
            }
            for n in 0..5 {
                let d = random_durability(&mut rng);
                match run_tx(&db, &accounts, &mut rng, 2 << 32 | n, d, Mode::Serial) {
                    Outcome::Failed {
                        error: Error::Poisoned { .. },
                        ..
                    }
                    | Outcome::Refused => {}
                    Outcome::Failed { error, .. } => {
                        panic!("{context}: a later {d:?} commit returned {error:?}, not Poisoned")
                    }
                    Outcome::Committed { .. } => {
                        panic!("{context}: a {d:?} commit succeeded after a failed one")
                    }
                }
            }
        }
        let durable = history.within(db.wal().durable_lsn());
        assert!(durable >= sync_acked);
        drop(accounts);
        drop(db);
        for survival in survivals(&mut rng, 2) {
            let image = crash_image(&storage, survival, &mut rng);
            let k = check_image(image, &history, durable, &opts, images % 3 == 0)
                .unwrap_or_else(|e| panic!("{context}, {survival:?}: {e}"));
            if failed.is_some() && k == history.last() {
                failed_present += 1;
            }
            images += 1;
        }
        run += 1;
    }
    println!(
        "{images} crash images over {run} EIO runs, {failed_runs} of which failed a commit; {failed_present} images \
         held the failed transaction"
    );
    assert!(
        failed_runs * 2 > run as usize,
        "most runs should hit the injected error"
    );
}

/// Regression: after a commit fails (here: its fdatasync), a later transaction that writes the same document must
/// be refused with `Error::Poisoned`, as every other later commit is. It used to get `Error::Conflict` ("nothing
/// was written; retry") because the failed commit stays in the database's latest version while readers never see
/// it: a caller that retries conflicts, as documented, retried forever.
#[test]
fn a_commit_after_a_failed_commit_is_refused_as_poisoned_not_as_a_conflict() {
    let storage = Arc::new(MemStorage::simulated());
    let db = Database::open_with_storage(storage.clone(), options(4096)).unwrap();
    let accounts = db.collection("accounts", spec()).unwrap();
    let doc = |balance| Account {
        owner: "ann".into(),
        balance,
        tx: 0,
        pad: Vec::new(),
    };
    let id = db.insert(&accounts, &doc(1)).unwrap();
    storage.fail_syncs_after(Some(0));
    let mut tx = db.begin_with(Durability::Sync);
    tx.put(&accounts, id, &doc(2)).unwrap();
    assert!(matches!(tx.commit(), Err(Error::Io { .. })));
    assert!(db.wal().is_poisoned());
    for attempt in 0..3 {
        let mut tx = db.begin_with(Durability::Sync);
        tx.put(&accounts, id, &doc(3)).unwrap();
        match tx.commit() {
            Err(Error::Poisoned { .. }) => {}
            other => {
                panic!("retry {attempt} after the failed commit: {other:?}, expected Poisoned")
            }
        }
    }
}

/// The oracle is not vacuous: it rejects a partially visible transaction, a lost Sync commit, a document from a
/// transaction that never committed, a stray document, and a changed balance.
#[test]
fn oracle_rejects_partial_lost_and_foreign_states() {
    let account = |owner: &str, balance, tx| Account {
        owner: owner.into(),
        balance,
        tx,
        pad: Vec::new(),
    };
    let mut initial = State::new();
    for i in 0..ACCOUNTS as u64 {
        initial.insert(i, account(&format!("acct-{i}"), OPENING_BALANCE, SETUP_TX));
    }
    let mut history = History::new(initial, 1, 100);
    let t1 = 1 << 32;
    let t2 = 1 << 32 | 1;
    history.push(
        t1,
        2,
        200,
        &vec![
            (0, Some(account("acct-0", 990, t1))),
            (1, Some(account("acct-1", 1010, t1))),
        ],
    );
    history.push(
        t2,
        3,
        300,
        &vec![
            (2, None),
            (3, Some(account("acct-3", 2000, t2))),
            (10, Some(account("new", 0, t2))),
        ],
    );
    for k in 0..=2 {
        assert_eq!(judge(&history.states[k], &history, k), Ok(k));
    }
    assert_eq!(history.within(250), 1);
    let lost = judge(&history.states[1], &history, 2);
    assert!(lost.unwrap_err().contains("lost"));
    let mut partial = history.states[2].clone();
    partial.insert(2, history.states[1][&2].clone()); // t2's removal missing
    assert!(
        judge(&partial, &history, 0)
            .unwrap_err()
            .contains("partially")
    );
    let mut partial = history.states[1].clone();
    partial.insert(1, history.states[0][&1].clone()); // half of t1
    assert!(judge(&partial, &history, 0).is_err());
    let mut foreign = history.states[2].clone();
    foreign.get_mut(&0).unwrap().tx = 7 << 32;
    assert!(judge(&foreign, &history, 0).unwrap_err().contains("never"));
    let mut stray = history.states[1].clone();
    stray.insert(99, account("ghost", 0, t1));
    assert!(judge(&stray, &history, 0).is_err());
    let mut changed = history.states[2].clone();
    changed.get_mut(&3).unwrap().balance += 1;
    assert!(judge(&changed, &history, 0).is_err());
}
