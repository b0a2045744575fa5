//! Open a database, declare a typed collection with indexes, write in a transaction, read zero-copy from a
//! snapshot, checkpoint, and reopen to see that it all came back.
//!
//! ```text
//! cargo run --release --example quickstart [DIR]      # DIR defaults to $CSTORE_DIR, then ./data
//! ```

use std::path::PathBuf;

use collection_store::{Database, Error, Options, Spec};
use rkyv::{Archive, Serialize};

#[derive(Archive, Serialize, Debug)]
struct User {
    name: String,
    email: String,
    age: u32,
}

fn users_spec() -> Spec<User> {
    Spec::new()
        .unique("email", |u: &ArchivedUser| u.email.to_string())
        .index("age", |u: &ArchivedUser| u.age.to_native())
}

fn main() -> collection_store::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("CSTORE_DIR"))
        .map_or_else(|| PathBuf::from("data"), PathBuf::from);

    let db = Database::open(&dir, Options::default())?; // creates or recovers; locks the directory
    let users = db.collection("users", users_spec())?;
    let run = db.read().count(&users) / 2;
    println!(
        "opened {} with {} users",
        dir.display(),
        db.read().count(&users)
    );

    // One transaction, two documents: both are durable when commit returns (default durability: Sync).
    let mut tx = db.begin();
    let ann = tx.insert(
        &users,
        &User {
            name: format!("ann-{run}"),
            email: format!("ann{run}@x.io"),
            age: 30,
        },
    )?;
    tx.insert(
        &users,
        &User {
            name: format!("bob-{run}"),
            email: format!("bob{run}@x.io"),
            age: 25,
        },
    )?;
    let info = tx.commit()?;
    println!("committed transaction {} (ann is document {ann})", info.seq);

    // A unique index refuses a second document with the same email, and nothing is written.
    match db.insert(
        &users,
        &User {
            name: "copy".into(),
            email: format!("ann{run}@x.io"),
            age: 1,
        },
    ) {
        Err(Error::UniqueViolation { index, key, .. }) => {
            println!("refused as expected: {index} already has {key}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // Readers take a snapshot and get archived documents with no copy.
    let snap = db.read();
    let (_, found) = snap
        .find_one(&users, "email", &format!("ann{run}@x.io"))?
        .expect("just inserted");
    println!("found {} by email, age {}", found.name, found.age);
    let youngest = snap
        .range::<_, u32>(&users, "age", ..)?
        .next()
        .map(|(_, u)| u.name.to_string());
    println!(
        "youngest: {youngest:?}; {} users in all",
        snap.count(&users)
    );

    // A checkpoint writes each collection to a snapshot file (read in place at the next open) and lets the log
    // before it go. (One also runs in the background by log size and age.)
    let checkpoint = db.checkpoint()?;
    println!(
        "checkpoint at commit {}: {} bytes written, the log now starts at {}",
        checkpoint.seq, checkpoint.bytes_written, checkpoint.wal_start_lsn
    );
    drop(db);

    let db = Database::open(&dir, Options::default())?;
    let users = db.collection("users", users_spec())?;
    let report = db.recovery_report();
    println!(
        "reopened: {} users, recovered from {} log records in {:?}",
        db.read().count(&users),
        report.records,
        report.duration
    );
    Ok(())
}
