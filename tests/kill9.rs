//! kill -9 at random moments: a child process (this test binary, re-executed into [`child_process`]) appends
//! records from two threads with mixed durability, groups included, and after every append that returned writes
//! an acknowledgement line to a side file. The parent kills it with SIGKILL after a random short time (sometimes
//! before the log is even open, so recovery itself is interrupted), reopens the directory and checks:
//!
//! - the log recovered before this child ran is still there, byte for byte, and everything after it was written by
//!   this child: per writer a gap-free prefix in sequence order, LSNs increasing, every byte as written;
//! - every record acknowledged under `Durability::Os` or `Durability::Sync` is present at its acknowledged LSN
//!   (kill -9 keeps the page cache), and a record acknowledged under `None` that is present is at its LSN;
//! - groups are all-or-nothing; recovery never reports corruption.
//!
//! A directory sees several kills in a row before a fresh one is started. While the child holds the directory, a
//! second open from the parent must fail with `Error::Locked`.
//!
//! Iterations: `CSTORE_KILL9_ITERATIONS` (default 20). The long run:
//!
//! ```text
//! CSTORE_KILL9_ITERATIONS=1000 cargo test --release --test kill9
//! ```

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collection_store::Error;
use collection_store::wal::{Durability, Wal, WalOptions};
use common::{
    Id, Kill9, PAYLOAD_HEADER_BYTES, Rec, append_group, decode, encode, env_or, group_kind,
    max_payload_in_group, random_group_len, read_log,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CHILD_TEST_NAME: &str = "child_process";
const ENV_DIR: &str = "CSTORE_KILL9_CHILD_DIR";
const ENV_ACKS: &str = "CSTORE_KILL9_CHILD_ACKS";
const ENV_EPOCH: &str = "CSTORE_KILL9_CHILD_EPOCH";
const ENV_SEED: &str = "CSTORE_KILL9_CHILD_SEED";
const KILL9: Kill9 = Kill9 {
    child_test: CHILD_TEST_NAME,
    env_dir: ENV_DIR,
    env_acks: ENV_ACKS,
    env_epoch: ENV_EPOCH,
    env_seed: ENV_SEED,
    what: "log",
    early_us: 4_000,
    late_us: 30_000,
};
const WRITERS: u8 = 2;
/// Kills per directory before a fresh one is started (keeps the log, and recovery time, bounded).
const KILLS_PER_DIRECTORY: usize = 10;
/// A child that was never killed gives up after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const SEED: u64 = 0x0009_0009;

fn options() -> WalOptions {
    common::options(8192)
}

/// An acknowledgement line: `ack <writer> <first seq> <records> <durability> <first lsn>`.
#[derive(Clone, Copy, Debug)]
struct Ack {
    writer: u8,
    seq: u32,
    durability: Durability,
    lsn: u64,
}

fn durability_code(d: Durability) -> &'static str {
    match d {
        Durability::None => "none",
        Durability::Os => "os",
        Durability::Sync => "sync",
    }
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut f = line.split(' ');
    (f.next()? == "ack").then_some(())?;
    let writer = f.next()?.parse().ok()?;
    let seq = f.next()?.parse().ok()?;
    let _records: u32 = f.next()?.parse().ok()?;
    let durability = match f.next()? {
        "none" => Durability::None,
        "os" => Durability::Os,
        "sync" => Durability::Sync,
        _ => return None,
    };
    let lsn = f.next()?.parse().ok()?;
    Some(Ack {
        writer,
        seq,
        durability,
        lsn,
    })
}

/// The child's side: does nothing unless the parent started this binary for it.
#[test]
fn child_process() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let epoch: u32 = var(ENV_EPOCH).parse().unwrap();
    let seed: u64 = var(ENV_SEED).parse().unwrap();
    let acks = Arc::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(var(ENV_ACKS))
            .unwrap(),
    );
    let (wal, _) = Wal::open(&dir, options()).unwrap_or_else(|e| {
        eprintln!("child: open failed: {e}");
        std::process::exit(3)
    });
    // One write(2) per line: whole lines reach the page cache, and a kill leaves at most one torn line.
    (&*acks).write_all(b"open\n").unwrap();
    let wal = Arc::new(wal);
    let deadline = Instant::now() + CHILD_LIFETIME;
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (wal, acks) = (Arc::clone(&wal), Arc::clone(&acks));
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed ^ (u64::from(writer) << 40));
                let mut seq = 0u32;
                while Instant::now() < deadline {
                    let n = random_group_len(&mut rng, 0.6, 4);
                    let group: Vec<_> = (0..n)
                        .map(|i| {
                            let len = match rng.random_range(0..100) {
                                0..60 => rng.random_range(PAYLOAD_HEADER_BYTES..100),
                                60..95 => rng.random_range(100..800),
                                _ => max_payload_in_group(wal.max_group_bytes(), n),
                            };
                            (
                                group_kind(i, n),
                                encode(Id::in_group(epoch, writer, seq, i, n), len),
                            )
                        })
                        .collect();
                    let durability = match rng.random_range(0..10) {
                        0..4 => Durability::None,
                        4..8 => Durability::Os,
                        _ => Durability::Sync,
                    };
                    let first_lsn = append_group(&wal, group, durability).unwrap()[0].lsn;
                    let line = format!(
                        "ack {writer} {seq} {n} {} {first_lsn}\n",
                        durability_code(durability),
                    );
                    (&*acks).write_all(line.as_bytes()).unwrap();
                    seq += n as u32;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Checks the log recovered after killing child `epoch`, given the log before it ran and its acknowledgements.
fn check_after_kill(before: &[Rec], after: &[Rec], epoch: u32, acks: &[Ack]) -> Result<(), String> {
    if after.len() < before.len() || after[..before.len()] != *before {
        return Err(format!(
            "the {} records recovered before this child ran did not all survive ({} now)",
            before.len(),
            after.len()
        ));
    }
    for pair in after.windows(2) {
        if pair[1].lsn <= pair[0].lsn {
            return Err(format!(
                "LSNs not increasing: {} then {}",
                pair[0].lsn, pair[1].lsn
            ));
        }
    }
    let mut next_seq = [0u32; WRITERS as usize];
    let mut found: BTreeMap<(u8, u32), u64> = BTreeMap::new();
    let mut open_group: Option<Id> = None;
    for (i, r) in after.iter().enumerate().skip(before.len()) {
        let id = decode(&r.payload)
            .ok_or_else(|| format!("record {i} at LSN {}: bytes not as written", r.lsn))?;
        if id.epoch != epoch || id.writer >= WRITERS {
            return Err(format!(
                "record {i} at LSN {} is {id:?}, not from child {epoch}",
                r.lsn
            ));
        }
        if id.seq != next_seq[id.writer as usize] {
            return Err(format!(
                "record {i}: writer {} seq {} where {} was next (not a prefix in order)",
                id.writer, id.seq, next_seq[id.writer as usize]
            ));
        }
        next_seq[id.writer as usize] += 1;
        // Groups: consecutive, complete, flagged as such.
        let expected_index = open_group.map_or(0, |g| g.index + 1);
        if open_group.is_some_and(|g| g.writer != id.writer) || id.index != expected_index {
            return Err(format!(
                "record {i}: {id:?} breaks the group before it ({open_group:?})"
            ));
        }
        let last = id.index + 1 == id.len;
        if r.cont == last || r.kind != group_kind(id.index.into(), id.len.into()) {
            return Err(format!(
                "record {i}: {id:?} has flag {} kind {:?}",
                r.cont, r.kind
            ));
        }
        open_group = (!last).then_some(id);
        found.insert((id.writer, id.seq), r.lsn);
    }
    if let Some(g) = open_group {
        return Err(format!("a partial group was recovered: {g:?}"));
    }
    for ack in acks {
        match (found.get(&(ack.writer, ack.seq)), ack.durability) {
            (Some(&lsn), _) if lsn != ack.lsn => {
                return Err(format!(
                    "{ack:?} acknowledged LSN {}, recovered at {lsn}",
                    ack.lsn
                ));
            }
            (None, Durability::Os | Durability::Sync) => {
                return Err(format!(
                    "{ack:?} was acknowledged but is missing after kill -9"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_record() {
    let iterations: usize = env_or("CSTORE_KILL9_ITERATIONS", 20);
    let mut rng = SmallRng::seed_from_u64(SEED);
    let scratch = tempfile::tempdir().unwrap();
    let (mut dir, mut before): (PathBuf, Vec<Rec>) = (PathBuf::new(), Vec::new());
    let (mut acked_total, mut recovered_total, mut killed_before_open, mut locked_checks) =
        (0, 0, 0, 0);
    let started = Instant::now();
    for iteration in 0..iterations {
        let epoch = iteration as u32;
        let seed: u64 = rng.random();
        let context = format!("iteration {iteration} (child seed {seed}, base seed {SEED:#x})");
        if iteration % KILLS_PER_DIRECTORY == 0 {
            dir = scratch.path().join(format!("log-{iteration}"));
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
                    match Wal::open(&dir, options()) {
                        Err(Error::Locked { .. }) => locked_checks += 1,
                        Err(e) => {
                            panic!("{context}: a second opener must get Error::Locked, got {e}")
                        }
                        Ok(_) => panic!("{context}: a second opener got the log the child holds"),
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
        let (wal, _) = Wal::open(&dir, options())
            .unwrap_or_else(|e| panic!("{context}: reopen after kill -9: {e}"));
        let after = read_log(&wal);
        drop(wal);
        check_after_kill(&before, &after, epoch, &acks)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        acked_total += acks.len();
        recovered_total += after.len() - before.len();
        before = after;
    }
    println!(
        "{iterations} kills in {:.1?}: {acked_total} acknowledged appends, {recovered_total} records recovered, \
         {killed_before_open} killed before opening, {locked_checks} lock checks",
        started.elapsed()
    );
}

/// The checker itself: it must reject a lost acknowledged record, a torn group, a reordering and foreign bytes.
#[test]
fn checker_rejects_what_kill_9_must_never_produce() {
    let rec = |lsn, writer, seq, index, len| {
        let id = Id {
            epoch: 7,
            writer,
            seq,
            index,
            len,
        };
        Rec {
            lsn,
            kind: group_kind(index.into(), len.into()),
            cont: index + 1 < len,
            payload: encode(id, 40),
        }
    };
    let good = vec![
        rec(64, 0, 0, 0, 1),
        rec(136, 1, 0, 0, 2),
        rec(208, 1, 1, 1, 2),
        rec(280, 0, 1, 0, 1),
    ];
    let ack = |writer, seq, durability, lsn| Ack {
        writer,
        seq,
        durability,
        lsn,
    };
    let acks = [
        ack(0, 0, Durability::Sync, 64),
        ack(1, 0, Durability::Os, 136),
    ];
    assert_eq!(check_after_kill(&[], &good, 7, &acks), Ok(()));
    assert!(
        check_after_kill(&[], &good[..1], 7, &acks).is_err(),
        "lost an Os ack"
    );
    assert!(
        check_after_kill(&[], &good[..2], 7, &acks[..1]).is_err(),
        "torn group"
    );
    let mut swapped = good.clone();
    swapped.swap(0, 3);
    swapped[0].lsn = 64;
    swapped[3].lsn = 280;
    assert!(
        check_after_kill(&[], &swapped, 7, &[]).is_err(),
        "out of order"
    );
    let mut flipped = good.clone();
    flipped[2].payload[30] ^= 1;
    assert!(
        check_after_kill(&[], &flipped, 7, &[]).is_err(),
        "bytes changed"
    );
    assert!(
        check_after_kill(&good[..1], &good[1..], 7, &[]).is_err(),
        "earlier log lost"
    );
    assert!(check_after_kill(&[], &good, 8, &[]).is_err(), "wrong child");
}
