//! redb: one table of `&[u8] -> &[u8]`, a write transaction per commit.

use std::path::Path;

use anyhow::Result;
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Engine, Entry, Level, Reader, Writer};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

pub fn durability(level: Level) -> &'static str {
    match level {
        Level::Sync => {
            "`Durability::Immediate` (the default): fsync before commit returns; default 1-phase commit, quick-repair off"
        }
        Level::Os | Level::Memory => {
            "`Durability::None`: the commit stays in memory until a later `Immediate` commit"
        }
    }
}

pub struct Redb {
    db: Database,
    durability: Durability,
}

impl Redb {
    pub fn open(dir: &Path, level: Level) -> Result<Self> {
        let db = Database::create(dir.join("data.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(TABLE)?;
        tx.commit()?;
        Ok(Self {
            db,
            durability: match level {
                Level::Sync => Durability::Immediate,
                Level::Os | Level::Memory => Durability::None,
            },
        })
    }

    fn commit(&self, entries: &[Entry<'_>]) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability)?;
        {
            let mut table = tx.open_table(TABLE)?;
            for e in entries {
                table.insert(e.key, e.value)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Engine for Redb {
    fn writer(&self) -> Result<Box<dyn Writer + '_>> {
        Ok(Box::new(RedbWriter(self)))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        let tx = self.db.begin_read()?;
        Ok(Box::new(RedbReader(tx.open_table(TABLE)?)))
    }
}

struct RedbWriter<'a>(&'a Redb);

impl Writer for RedbWriter<'_> {
    fn put(&mut self, e: Entry<'_>) -> Result<()> {
        self.0.commit(&[e])
    }

    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        self.0.commit(entries)
    }
}

struct RedbReader(ReadOnlyTable<&'static [u8], &'static [u8]>);

impl Reader for RedbReader {
    fn get(&mut self, _id: u64, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.value().len()))
    }
}
