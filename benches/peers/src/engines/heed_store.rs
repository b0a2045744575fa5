//! heed (LMDB): the unnamed database of bytes to bytes, a write transaction per commit.

use std::path::Path;

use anyhow::Result;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, WithTls};

use super::{Engine, Entry, Level, Reader, Writer};

/// The map's size: address space only (the file grows as pages are used).
const MAP_BYTES: usize = 64 << 30;

pub fn durability(level: Level) -> &'static str {
    match level {
        Level::Sync => {
            "default environment flags: LMDB syncs the data pages, then the meta page, at each commit"
        }
        Level::Os | Level::Memory => {
            "`EnvFlags::NO_SYNC`: commits stay in the OS page cache (LMDB's non-durable mode)"
        }
    }
}

pub struct Heed {
    env: Env,
    db: Database<'static, Bytes, Bytes>,
}

impl Heed {
    pub fn open(dir: &Path, level: Level) -> Result<Self> {
        let mut options = EnvOpenOptions::new();
        options.map_size(MAP_BYTES);
        if level != Level::Sync {
            // SAFETY: NO_SYNC gives up durability after an OS crash or power loss, which is what this level asks;
            // integrity after such a crash is not relied on.
            unsafe {
                options.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: the directory is this benchmark's own; no other process or mapping modifies the file.
        let env = unsafe { options.open(dir)? };
        let wtxn = env.write_txn()?;
        let db = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                let db = dbo.create_database::<Bytes, Bytes>(wtxn, None)?;
                Ok(CommitOrAbort::<_, ()>::Commit(db))
            })?
            .unwrap_commit();
        Ok(Self { env, db })
    }

    fn commit(&self, entries: &[Entry<'_>]) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        for e in entries {
            self.db.put(&mut wtxn, e.key, e.value)?;
        }
        wtxn.commit()?;
        Ok(())
    }
}

impl Engine for Heed {
    fn writer(&self) -> Result<Box<dyn Writer + '_>> {
        Ok(Box::new(HeedWriter(self)))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(HeedReader {
            txn: self.env.read_txn()?,
            db: self.db,
        }))
    }
}

struct HeedWriter<'a>(&'a Heed);

impl Writer for HeedWriter<'_> {
    fn put(&mut self, e: Entry<'_>) -> Result<()> {
        self.0.commit(&[e])
    }

    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        self.0.commit(entries)
    }
}

struct HeedReader<'a> {
    txn: RoTxn<'a, WithTls>,
    db: Database<'static, Bytes, Bytes>,
}

impl Reader for HeedReader<'_> {
    fn get(&mut self, _id: u64, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.db.get(&self.txn, key)?.map(<[u8]>::len))
    }
}
