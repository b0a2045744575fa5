//! fjall: one keyspace; single records with `Keyspace::insert`, batches with `Database::batch`.

use std::path::Path;

use anyhow::Result;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Engine, Entry, Level, Reader, Writer};

pub fn durability(level: Level) -> &'static str {
    match level {
        Level::Sync => {
            "`insert`, then `Database::persist(PersistMode::SyncData)` (fdatasync of the journal); batches commit with `durability(Some(PersistMode::SyncData))`"
        }
        Level::Os | Level::Memory => {
            "the default: each write is flushed to OS buffers (`PersistMode::Buffer`), no sync"
        }
    }
}

pub struct Fjall {
    db: Database,
    ks: Keyspace,
    sync: bool,
}

impl Fjall {
    pub fn open(dir: &Path, level: Level) -> Result<Self> {
        let db = Database::builder(dir).open()?;
        let ks = db.keyspace("records", KeyspaceCreateOptions::default)?;
        Ok(Self {
            db,
            ks,
            sync: level == Level::Sync,
        })
    }
}

impl Engine for Fjall {
    fn writer(&self) -> Result<Box<dyn Writer + '_>> {
        Ok(Box::new(FjallWriter(self)))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(FjallReader(self)))
    }
}

struct FjallWriter<'a>(&'a Fjall);

impl Writer for FjallWriter<'_> {
    fn put(&mut self, e: Entry<'_>) -> Result<()> {
        self.0.ks.insert(e.key, e.value)?;
        if self.0.sync {
            self.0.db.persist(PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        let mut batch = self.0.db.batch();
        if self.0.sync {
            batch = batch.durability(Some(PersistMode::SyncData));
        }
        for e in entries {
            batch.insert(&self.0.ks, e.key, e.value);
        }
        batch.commit()?;
        Ok(())
    }
}

struct FjallReader<'a>(&'a Fjall);

impl Reader for FjallReader<'_> {
    fn get(&mut self, _id: u64, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.0.ks.get(key)?.map(|v| v.len()))
    }
}
