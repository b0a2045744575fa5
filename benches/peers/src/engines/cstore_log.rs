//! collection-store's write-ahead log on its own (`collection_store::wal::Wal`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use collection_store::wal::{Durability, RecordKind, Wal, WalOptions};

use super::Log;

pub const DURABILITY: &str = "`Wal::append` / `append_group` with `Durability::Sync` (fdatasync, shared by concurrent appends)";

/// Log bytes after which the durable part is truncated (what a user's checkpoint would do), so that segments are
/// recycled instead of created.
const TRUNCATE_EVERY: u64 = 32 << 20;

pub struct CsWal {
    wal: Wal,
    keep_everything: bool,
    appended_since_truncate: AtomicU64,
}

impl CsWal {
    pub fn open(dir: &Path, keep_everything: bool) -> Result<Self> {
        let (wal, _) = Wal::open(dir, WalOptions::default())?;
        Ok(Self {
            wal,
            keep_everything,
            appended_since_truncate: AtomicU64::new(0),
        })
    }

    fn after_append(&self, bytes: u64) -> Result<()> {
        if self.keep_everything {
            return Ok(());
        }
        let total = self
            .appended_since_truncate
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        if total >= TRUNCATE_EVERY {
            self.appended_since_truncate.store(0, Ordering::Relaxed);
            self.wal.truncate_before(self.wal.durable_lsn())?;
        }
        Ok(())
    }
}

impl Log for CsWal {
    fn append(&self, payload: &[u8]) -> Result<()> {
        self.wal
            .append(RecordKind::Data, payload, Durability::Sync)?;
        self.after_append(payload.len() as u64 + 32)
    }

    fn append_batch(&self, payloads: &[&[u8]]) -> Result<()> {
        let records: Vec<(RecordKind, &[u8])> =
            payloads.iter().map(|p| (RecordKind::Data, *p)).collect();
        self.wal.append_group(&records, Durability::Sync)?;
        let bytes: u64 = payloads.iter().map(|p| p.len() as u64 + 32).sum();
        self.after_append(bytes)
    }

    fn syncs(&self) -> Option<u64> {
        Some(self.wal.stats().syncs)
    }
}

/// Opens the log in `dir` (its recovery scan) and reads every record's payload: (records, payload bytes).
pub fn recover(dir: &Path) -> Result<(u64, u64)> {
    let (wal, _) = Wal::open(dir, WalOptions::default())?;
    let (mut records, mut bytes) = (0u64, 0u64);
    for record in wal.iter_from(wal.start_lsn())? {
        let record = record?;
        let payload = record.payload();
        records += 1;
        bytes += payload.len() as u64;
        std::hint::black_box(payload.first());
    }
    Ok((records, bytes))
}
