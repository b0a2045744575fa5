//! sled 0.34 (the current stable release): the default tree.

use std::path::Path;

use anyhow::Result;

use super::{Engine, Entry, Level, Reader, Writer};

pub fn durability(level: Level) -> &'static str {
    match level {
        Level::Sync => {
            "`insert` (or `apply_batch`), then `flush()`: on Linux that is `sync_file_range`, which does not flush the disk's cache (see flushes/op)"
        }
        Level::Os | Level::Memory => "`insert` only: sled's default background flush every 500 ms",
    }
}

pub struct Sled {
    db: sled::Db,
    sync: bool,
}

impl Sled {
    pub fn open(dir: &Path, level: Level) -> Result<Self> {
        Ok(Self {
            db: sled::open(dir)?,
            sync: level == Level::Sync,
        })
    }
}

impl Engine for Sled {
    fn writer(&self) -> Result<Box<dyn Writer + '_>> {
        Ok(Box::new(SledWriter(self)))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(SledReader(self)))
    }
}

struct SledWriter<'a>(&'a Sled);

impl Writer for SledWriter<'_> {
    fn put(&mut self, e: Entry<'_>) -> Result<()> {
        self.0.db.insert(e.key, e.value)?;
        if self.0.sync {
            self.0.db.flush()?;
        }
        Ok(())
    }

    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(e.key, e.value);
        }
        self.0.db.apply_batch(batch)?;
        if self.0.sync {
            self.0.db.flush()?;
        }
        Ok(())
    }
}

struct SledReader<'a>(&'a Sled);

impl Reader for SledReader<'_> {
    fn get(&mut self, _id: u64, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.0.db.get(key)?.map(|v| v.len()))
    }
}
