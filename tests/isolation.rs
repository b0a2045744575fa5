//! Snapshot isolation under concurrency: bank transfers.
//!
//! `N` accounts start with the same balance. Writer threads move random amounts between random accounts, each in a
//! transaction that reads both balances with `Transaction::get` and writes both with `Transaction::update` (and
//! bumps each account's count of transfers), retrying on `Error::Conflict` and declining (rolling back) when the
//! payer lacks the funds. Reader threads meanwhile take snapshots (and read-only transactions) and check that each
//! one is a consistent commit prefix: the total is the initial total, the transfer counters add up to twice the
//! number of commits since the start (`Snapshot::seq`), and snapshots never go back in time.
//!
//! At the end: no lost update (every balance is its initial value plus the deltas of the transfers that
//! committed, every counter is the number of committed transfers that touched it), conflicts were reported, and
//! after reopening the directory (or, for the `Sync` run on simulated storage, after a power loss that keeps no
//! unsynced byte) the log replays to exactly the same state.
//!
//! Settings (environment): `BANK_TRANSFERS` (per writer, default 400), `BANK_WRITERS` (default 4), `BANK_READERS`
//! (default 2), `BANK_ACCOUNTS` (default 8), `BANK_SEED` (default random; printed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use collection_store::wal::{Durability, LogStorage, MemStorage};
use collection_store::{Collection, Database, Error, Options, Snapshot, Spec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rkyv::{Archive, Serialize};

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    balance: i64,
    /// Committed transfers that touched this account.
    transfers: u64,
}

const INITIAL_BALANCE: i64 = 100;

fn spec() -> Spec<Account> {
    Spec::new()
        .unique("name", |a: &ArchivedAccount| a.name.to_string())
        .index("balance", |a: &ArchivedAccount| a.balance.to_native())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
struct Settings {
    accounts: usize,
    writers: usize,
    readers: usize,
    transfers_per_writer: usize,
    durability: Durability,
    seed: u64,
}

impl Settings {
    fn from_env(durability: Durability, transfers_per_writer: usize) -> Self {
        // Random by default (std's hasher keys are), printed with the results.
        let seed = env_or(
            "BANK_SEED",
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8),
        );
        Self {
            accounts: env_or("BANK_ACCOUNTS", 8usize).max(2),
            writers: env_or("BANK_WRITERS", 4usize).max(1),
            readers: env_or("BANK_READERS", 2),
            transfers_per_writer,
            durability,
            seed,
        }
    }

    fn total(&self) -> i64 {
        INITIAL_BALANCE * self.accounts as i64
    }
}

/// A transfer that committed.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    from: u64,
    to: u64,
    amount: i64,
}

#[derive(Debug, Default)]
struct Outcome {
    /// Committed transfers of every writer.
    committed: Vec<Transfer>,
    conflicts: u64,
    declined: u64,
    snapshots_checked: u64,
    /// Sequence number of the last setup commit: each transfer after it is one commit.
    base_seq: u64,
    ids: Vec<u64>,
}

fn setup(db: &Database, settings: &Settings) -> (Collection<Account>, Vec<u64>, u64) {
    let accounts = db.collection("accounts", spec()).unwrap();
    let mut tx = db.begin_with(Durability::Sync);
    let ids = (0..settings.accounts)
        .map(|i| {
            tx.insert(
                &accounts,
                &Account {
                    name: format!("acct{i:03}"),
                    balance: INITIAL_BALANCE,
                    transfers: 0,
                },
            )
            .unwrap()
        })
        .collect();
    let info = tx.commit().unwrap();
    (accounts, ids, info.seq)
}

/// One transfer, retried on conflict. Returns the transfer if it committed, `None` if declined.
fn transfer(
    db: &Database,
    accounts: &Collection<Account>,
    durability: Durability,
    (from, to, amount): (u64, u64, i64),
    conflicts: &mut u64,
) -> Option<Transfer> {
    loop {
        let mut tx = db.begin_with(durability);
        let a = tx.get(accounts, from).expect("account exists");
        let (a_name, a_balance, a_transfers) = (
            a.name.to_string(),
            a.balance.to_native(),
            a.transfers.to_native(),
        );
        let b = tx.get(accounts, to).expect("account exists");
        let (b_name, b_balance, b_transfers) = (
            b.name.to_string(),
            b.balance.to_native(),
            b.transfers.to_native(),
        );
        if a_balance < amount {
            tx.rollback();
            return None;
        }
        // Widen the window between reading and committing, so that transfers overlap.
        std::thread::yield_now();
        tx.update(
            accounts,
            from,
            &Account {
                name: a_name,
                balance: a_balance - amount,
                transfers: a_transfers + 1,
            },
        )
        .unwrap();
        tx.update(
            accounts,
            to,
            &Account {
                name: b_name,
                balance: b_balance + amount,
                transfers: b_transfers + 1,
            },
        )
        .unwrap();
        match tx.commit() {
            Ok(_) => return Some(Transfer { from, to, amount }),
            Err(Error::Conflict { id, .. }) => {
                assert!(id == from || id == to, "conflict on {id}, not written");
                *conflicts += 1;
            }
            Err(e) => panic!("transfer {from} -> {to} failed: {e}"),
        }
    }
}

/// A snapshot must be a commit prefix: the total is preserved and the transfer counters add up to two per commit.
fn check_snapshot(
    snap: &Snapshot,
    accounts: &Collection<Account>,
    settings: &Settings,
    base_seq: u64,
) {
    let (mut total, mut touches, mut count) = (0i64, 0u64, 0usize);
    for (_, a) in snap.iter(accounts) {
        total += a.balance.to_native();
        touches += a.transfers.to_native();
        count += 1;
    }
    assert_eq!(count, settings.accounts, "accounts at seq {}", snap.seq());
    assert_eq!(total, settings.total(), "total at seq {}", snap.seq());
    assert_eq!(
        touches,
        2 * (snap.seq() - base_seq),
        "transfer counters at seq {} (base {base_seq})",
        snap.seq()
    );
}

/// Reads every account in a read-only transaction (its snapshot plus no writes): the total must hold too.
fn check_in_transaction(
    db: &Database,
    accounts: &Collection<Account>,
    ids: &[u64],
    settings: &Settings,
) {
    let tx = db.begin();
    let total: i64 = ids
        .iter()
        .map(|&id| {
            tx.get(accounts, id)
                .expect("account exists")
                .balance
                .to_native()
        })
        .sum();
    assert_eq!(total, settings.total(), "total inside a transaction");
}

fn run(db: &Database, settings: &Settings) -> Outcome {
    let (accounts, ids, base_seq) = setup(db, settings);
    let done = AtomicBool::new(false);
    let snapshots = AtomicU64::new(0);
    let mut outcome = Outcome {
        base_seq,
        ids: ids.clone(),
        ..Outcome::default()
    };
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..settings.readers)
            .map(|r| {
                let (accounts, ids, done, snapshots) = (&accounts, &ids, &done, &snapshots);
                s.spawn(move || {
                    let mut last_seq = 0;
                    let mut i = 0u64;
                    // At least a few checks, however quick the writers are.
                    while !done.load(Ordering::Acquire) || i < 10 {
                        let snap = db.read();
                        assert!(
                            snap.seq() >= last_seq,
                            "reader {r}: snapshot went back in time"
                        );
                        last_seq = snap.seq();
                        check_snapshot(&snap, accounts, settings, base_seq);
                        if i.is_multiple_of(16) {
                            snap.check_indexes(accounts).expect("indexes agree");
                        }
                        if i % 4 == 1 {
                            check_in_transaction(db, accounts, ids, settings);
                        }
                        i += 1;
                        snapshots.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..settings.writers)
            .map(|w| {
                let (accounts, ids) = (&accounts, &ids);
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(
                        settings.seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    let (mut committed, mut conflicts, mut declined) = (Vec::new(), 0, 0);
                    for _ in 0..settings.transfers_per_writer {
                        let from = rng.random_range(0..ids.len());
                        let to = (from + rng.random_range(1..ids.len())) % ids.len();
                        let amount = rng.random_range(1..=60);
                        match transfer(
                            db,
                            accounts,
                            settings.durability,
                            (ids[from], ids[to], amount),
                            &mut conflicts,
                        ) {
                            Some(t) => committed.push(t),
                            None => declined += 1,
                        }
                    }
                    (committed, conflicts, declined)
                })
            })
            .collect();
        // Stop the readers whatever the writers did, then report the first panic.
        let results: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        for result in results {
            let (committed, conflicts, declined) =
                result.unwrap_or_else(|e| std::panic::resume_unwind(e));
            outcome.committed.extend(committed);
            outcome.conflicts += conflicts;
            outcome.declined += declined;
        }
    });
    outcome.snapshots_checked = snapshots.into_inner();
    check_final(db, &accounts, settings, &outcome);
    outcome
}

/// No lost update: every account holds its initial balance plus the deltas of the committed transfers, and counts
/// exactly the committed transfers that touched it; one commit per committed transfer.
fn check_final(
    db: &Database,
    accounts: &Collection<Account>,
    settings: &Settings,
    outcome: &Outcome,
) {
    let snap = db.read();
    check_snapshot(&snap, accounts, settings, outcome.base_seq);
    snap.check_indexes(accounts).expect("indexes agree");
    assert_eq!(
        snap.seq() - outcome.base_seq,
        outcome.committed.len() as u64,
        "commits vs committed transfers"
    );
    for &id in &outcome.ids {
        let (mut balance, mut transfers) = (INITIAL_BALANCE, 0u64);
        for t in &outcome.committed {
            if t.from == id {
                balance -= t.amount;
                transfers += 1;
            }
            if t.to == id {
                balance += t.amount;
                transfers += 1;
            }
        }
        let a = snap.get(accounts, id).expect("account exists");
        assert_eq!(
            (a.balance.to_native(), a.transfers.to_native()),
            (balance, transfers),
            "account {id}: (balance, transfers) vs the committed transfers"
        );
        assert!(balance >= 0, "account {id} overdrawn: {balance}");
    }
    // The balance index, walked in order, agrees with the documents.
    let by_balance: Vec<i64> = snap
        .range::<_, i64>(accounts, "balance", ..)
        .unwrap()
        .map(|(_, a)| a.balance.to_native())
        .collect();
    assert!(
        by_balance.is_sorted(),
        "balance index out of order: {by_balance:?}"
    );
    assert_eq!(by_balance.len(), settings.accounts);
}

fn report(name: &str, settings: &Settings, outcome: &Outcome, elapsed: Duration) {
    eprintln!(
        "{name}: {settings:?}: {} transfers committed, {} declined, {} conflicts retried, {} snapshots checked, \
         {elapsed:.2?}",
        outcome.committed.len(),
        outcome.declined,
        outcome.conflicts,
        outcome.snapshots_checked
    );
}

/// Runs the bank in a directory, then reopens it: the log replays to the same state.
fn bank_in_directory(name: &str, settings: Settings, expect_conflicts: bool) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: settings.durability,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    };
    let started = Instant::now();
    let outcome = {
        let db = Database::open(dir.path(), options.clone()).unwrap();
        run(&db, &settings)
    };
    report(name, &settings, &outcome, started.elapsed());
    let db = Database::open(dir.path(), options).unwrap();
    let accounts = db.collection("accounts", spec()).unwrap();
    check_final(&db, &accounts, &settings, &outcome);
    assert!(outcome.snapshots_checked > 0);
    if expect_conflicts {
        assert!(
            outcome.conflicts > 0,
            "no conflict with {} writers on {} accounts (seed {})",
            settings.writers,
            settings.accounts,
            settings.seed
        );
    }
}

/// Enough contention for conflicts: several writers on few accounts.
fn contended(settings: &Settings) -> bool {
    settings.writers >= 2 && settings.accounts <= 16 && settings.transfers_per_writer >= 50
}

#[test]
fn bank_transfers_durability_none() {
    let settings = Settings::from_env(Durability::None, env_or("BANK_TRANSFERS", 400));
    bank_in_directory("none", settings, contended(&settings));
}

#[test]
fn bank_transfers_durability_os() {
    let settings = Settings::from_env(Durability::Os, env_or("BANK_TRANSFERS", 400));
    bank_in_directory("os", settings, contended(&settings));
}

#[test]
fn bank_transfers_durability_sync() {
    // fsync per commit group on a real disk: keep it short.
    let settings = Settings::from_env(Durability::Sync, env_or("BANK_TRANSFERS", 400) / 8);
    bank_in_directory("sync", settings, contended(&settings));
}

/// `Sync` transfers on simulated storage, then power loss that keeps no unsynced byte: every transfer that was
/// acknowledged is recovered, and nothing else.
#[test]
fn bank_sync_transfers_survive_power_loss() {
    let settings = Settings::from_env(Durability::Sync, env_or("BANK_TRANSFERS", 400) / 2);
    let storage = Arc::new(MemStorage::simulated());
    let options = Options {
        durability: Durability::Sync,
        segment_size_bytes: 64 << 10,
        ..Options::default()
    };
    let started = Instant::now();
    let db =
        Database::open_with_storage(Arc::clone(&storage) as Arc<dyn LogStorage>, options.clone())
            .unwrap();
    let outcome = run(&db, &settings);
    report("sync, power loss", &settings, &outcome, started.elapsed());
    // Power loss while the database is still open: unsynced bytes are all lost.
    let image = storage.crash_image(|_, _| false);
    drop(db);
    let db = Database::open_with_storage(Arc::new(image), options).unwrap();
    let accounts = db.collection("accounts", spec()).unwrap();
    check_final(&db, &accounts, &settings, &outcome);
}
