//! RocksDB (behind the `rocksdb` feature): the default column family, `put_opt` and `WriteBatch`.

use std::path::Path;

use anyhow::Result;
use rocksdb::{DB, Options, WriteBatch, WriteOptions};

use super::{Engine, Entry, Level, Reader, Writer};

pub fn durability(level: Level) -> &'static str {
    match level {
        Level::Sync => "`WriteOptions::set_sync(true)`: the WAL is synced before the write returns",
        Level::Os | Level::Memory => {
            "default `WriteOptions`: the WAL is written to the OS, not synced"
        }
    }
}

pub struct Rocks {
    db: DB,
    write: WriteOptions,
}

impl Rocks {
    pub fn open(dir: &Path, level: Level) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, dir)?;
        let mut write = WriteOptions::default();
        write.set_sync(level == Level::Sync);
        Ok(Self { db, write })
    }
}

impl Engine for Rocks {
    fn writer(&self) -> Result<Box<dyn Writer + '_>> {
        Ok(Box::new(RocksWriter(self)))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(RocksReader(self)))
    }
}

struct RocksWriter<'a>(&'a Rocks);

impl Writer for RocksWriter<'_> {
    fn put(&mut self, e: Entry<'_>) -> Result<()> {
        self.0.db.put_opt(e.key, e.value, &self.0.write)?;
        Ok(())
    }

    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for e in entries {
            batch.put(e.key, e.value);
        }
        self.0.db.write_opt(batch, &self.0.write)?;
        Ok(())
    }
}

struct RocksReader<'a>(&'a Rocks);

impl Reader for RocksReader<'_> {
    fn get(&mut self, _id: u64, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.0.db.get_pinned(key)?.map(|v| v.len()))
    }
}
