//! Times the data-directory tools on about 1 GB of data (BENCHMARKS.md, "Tools"): `Database::backup` (online,
//! while nothing else runs) and `verify::verify`, next to reading and writing the same bytes with plain file I/O in
//! the same run.
//!
//! `cargo run --release --example tools_bench [MB]` (default 1024; CI's smoke uses 16). The store is built in a
//! temporary directory under `std::env::temp_dir()`: 1 KiB JSON documents inserted without durability, one
//! checkpoint (so most bytes are in a snapshot), then a log tail of a tenth as many documents again.

use std::time::Instant;

use collection_store::wal::Durability;
use collection_store::{Database, Definition, IndexSpec, Options};
use serde_json::json;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += dir_bytes(&path);
        } else {
            total += entry.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

fn main() {
    let target_mb: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let dir = tmp.path().join("store");
    let docs_wanted = target_mb * 1_000_000 / 1_400;
    {
        let db = Database::open(
            &dir,
            Options {
                durability: Durability::None,
                auto_checkpoint: None,
                ..Options::default()
            },
        )
        .expect("open");
        let docs = db
            .create_documents(
                "items",
                Definition::default().index(IndexSpec::on("email").unique()),
            )
            .expect("collection");
        let load = |from: u64, to: u64| {
            for chunk in (from..to).collect::<Vec<_>>().chunks(1_000) {
                let mut tx = db.begin();
                for &i in chunk {
                    docs.insert(
                        &mut tx,
                        json!({"email": format!("user{i:010}@example.com"), "n": i,
                               "bio": "lorem ipsum dolor sit amet ".repeat(36)}),
                    )
                    .expect("insert");
                }
                tx.commit().expect("commit");
            }
        };
        let started = Instant::now();
        load(0, docs_wanted);
        db.checkpoint().expect("checkpoint");
        load(docs_wanted, docs_wanted + docs_wanted / 10);
        db.wal().sync().expect("sync");
        eprintln!(
            "built {} documents in {:.1} s",
            docs_wanted + docs_wanted / 10,
            started.elapsed().as_secs_f64()
        );
    }
    let store_bytes = dir_bytes(&dir);

    let db = Database::open(&dir, Options::default()).expect("reopen");
    let dest = tmp.path().join("backup");
    let started = Instant::now();
    let info = db.backup(&dest).expect("backup");
    let backup_s = started.elapsed().as_secs_f64();
    drop(db);

    // The floor: copy the same bytes with plain reads and writes (and one fsync per file).
    let floor_dest = tmp.path().join("floor");
    std::fs::create_dir_all(&floor_dest).expect("floor dir");
    let started = Instant::now();
    let mut floor_bytes = 0u64;
    for sub in ["wal", "snapshots"] {
        for entry in std::fs::read_dir(dest.join(sub)).expect("read").flatten() {
            let bytes = std::fs::read(entry.path()).expect("read file");
            let path = floor_dest.join(entry.file_name());
            std::fs::write(&path, &bytes).expect("write");
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .expect("fsync");
            floor_bytes += bytes.len() as u64;
        }
    }
    let floor_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let report = collection_store::verify::verify(&dir, &mut |_, _| {}).expect("verify");
    let verify_s = started.elapsed().as_secs_f64();
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    let verified = report.log_bytes + report.snapshot_bytes;

    println!("store on disk: {:.0} MB", store_bytes as f64 / 1e6);
    println!(
        "backup: {:.0} MB in {backup_s:.2} s = {:.0} MB/s (cut LSN {}, {} checkpoint files)",
        info.bytes as f64 / 1e6,
        mb_per_s(info.bytes, backup_s),
        info.cut_lsn,
        info.checkpoint_files
    );
    println!(
        "floor, read + write + fsync of the backup's files: {:.0} MB in {floor_s:.2} s = {:.0} MB/s; backup / floor time = {:.2}",
        floor_bytes as f64 / 1e6,
        mb_per_s(floor_bytes, floor_s),
        backup_s / floor_s
    );
    println!(
        "verify: {:.0} MB (log and snapshots) and indexes of {:?} in {verify_s:.2} s = {:.0} MB/s",
        verified as f64 / 1e6,
        report.indexes_checked,
        mb_per_s(verified, verify_s)
    );
}
