//! The main job for now: open (or recover) a log in a data directory, append a few records durably, reopen it and
//! print what recovery found.
//!
//! ```text
//! cargo run --release --example demo [DIR]      # the log goes to DIR/wal-demo; DIR defaults to $CSTORE_DIR, then ./data
//! ```

use std::path::PathBuf;

use collection_store::wal::{Durability, RecordKind, Wal, WalOptions};

fn main() -> collection_store::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("CSTORE_DIR"))
        .map_or_else(|| PathBuf::from("data"), PathBuf::from)
        .join("wal-demo");
    let options = || WalOptions {
        segment_size_bytes: 1 << 20,
        ..WalOptions::default()
    };

    let (wal, report) = Wal::open(&dir, options())?;
    println!("opened {}: {}", dir.display(), describe(&report));
    let run = report.groups / 3;
    for i in 0..3u64 {
        let text = format!("run {run}, record {i}");
        let group = wal.append_group(
            &[
                (RecordKind::Data, text.as_bytes()),
                (RecordKind::Commit, b""),
            ],
            Durability::Sync,
        )?;
        println!("appended {text:?} at LSN {} (durable)", group.first_lsn);
    }
    let stats = wal.stats();
    println!(
        "{} appends, {} fdatasync calls, {} bytes written",
        stats.appends, stats.syncs, stats.bytes_written
    );
    drop(wal);

    let (wal, report) = Wal::open(&dir, options())?;
    println!("reopened: {}", describe(&report));
    let mut data: Vec<_> = wal
        .iter_from(wal.start_lsn())?
        .collect::<Result<Vec<_>, _>>()?;
    data.retain(|r| r.kind() == RecordKind::Data);
    println!("last records in the log:");
    for record in &data[data.len().saturating_sub(3)..] {
        println!(
            "  LSN {:>8}  {:?}",
            record.lsn(),
            String::from_utf8_lossy(record.payload())
        );
    }
    Ok(())
}

fn describe(report: &collection_store::wal::RecoveryReport) -> String {
    format!(
        "{} records in {} groups over {} segment(s), LSN {}..{}, scanned in {:?}{}",
        report.records,
        report.groups,
        report.segments,
        report.start_lsn,
        report.end_lsn,
        report.duration,
        if report.created { " (new log)" } else { "" }
    )
}
