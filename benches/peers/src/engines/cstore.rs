//! collection-store through its public API: a typed collection of a small rkyv document whose `id` is its primary
//! key, with a unique index on its 24 B key, written in transactions (`db.begin_with(durability)`), read from a
//! snapshot (`get` by id, or `find_one` on the unique index).

use std::path::Path;

use anyhow::Result;
use collection_store::wal::Durability;
use collection_store::{AutoCheckpoint, Collection, Database, Options, Snapshot, Spec};
use rkyv::{Archive, Serialize};

use super::{Engine, Entry, Level, Reader, Writer};

/// The document: the record's number (its id), its 24 B key (unique index `key`) and its value.
#[derive(Archive, Serialize, Debug)]
pub struct Rec {
    pub id: u64,
    pub key: String,
    pub value: Vec<u8>,
}

fn spec() -> Spec<Rec> {
    Spec::new()
        .primary_key(|r: &ArchivedRec| r.id.to_native())
        .unique("key", |r: &ArchivedRec| r.key.to_string())
}

pub fn durability(level: Level) -> &'static str {
    match level {
        Level::Sync => {
            "`Durability::Sync`: fdatasync before the commit returns, one sync shared by concurrent commits (group commit)"
        }
        Level::Os => {
            "`Durability::Os`: the commit is written to the OS page cache (survives kill -9, not power loss)"
        }
        Level::Memory => {
            "`Durability::None`: the commit is in the log's memory; a later flush or sync writes it"
        }
    }
}

fn to_durability(level: Level) -> Durability {
    match level {
        Level::Sync => Durability::Sync,
        Level::Os => Durability::Os,
        Level::Memory => Durability::None,
    }
}

pub struct Cs {
    db: Database,
    coll: Collection<Rec>,
    durability: Durability,
}

impl Cs {
    /// `auto_checkpoint`: the default background checkpoints (by log size and age), or none.
    pub fn open(dir: &Path, level: Level, auto_checkpoint: bool) -> Result<Self> {
        let options = Options {
            durability: to_durability(level),
            auto_checkpoint: auto_checkpoint.then(AutoCheckpoint::default),
            ..Options::default()
        };
        let db = Database::open(dir, options)?;
        let coll = db.collection("records", spec())?;
        Ok(Self {
            db,
            coll,
            durability: to_durability(level),
        })
    }

    /// Writes every collection to a snapshot file, so that reads come from the mapped base.
    pub fn checkpoint(&self) -> Result<()> {
        self.db.checkpoint()?;
        Ok(())
    }

    /// A reader that looks documents up by their 24 B key in the unique index (`find_one`).
    pub fn key_reader(&self) -> CsReader<'_> {
        CsReader {
            snap: self.db.read(),
            coll: &self.coll,
            by_key: true,
        }
    }
}

impl Engine for Cs {
    fn writer(&self) -> Result<Box<dyn Writer + '_>> {
        Ok(Box::new(CsWriter {
            cs: self,
            rec: Rec {
                id: 0,
                key: String::with_capacity(32),
                value: Vec::with_capacity(4096),
            },
        }))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(CsReader {
            snap: self.db.read(),
            coll: &self.coll,
            by_key: false,
        }))
    }

    fn syncs(&self) -> Option<u64> {
        Some(self.db.wal().stats().syncs)
    }
}

struct CsWriter<'a> {
    cs: &'a Cs,
    /// Refilled in place for each record (no allocation per commit beyond the library's own).
    rec: Rec,
}

impl CsWriter<'_> {
    fn fill(&mut self, e: &Entry<'_>) -> Result<()> {
        self.rec.id = e.id;
        self.rec.key.clear();
        self.rec.key.push_str(std::str::from_utf8(e.key)?);
        self.rec.value.clear();
        self.rec.value.extend_from_slice(e.value);
        Ok(())
    }
}

impl Writer for CsWriter<'_> {
    fn put(&mut self, e: Entry<'_>) -> Result<()> {
        self.fill(&e)?;
        let mut tx = self.cs.db.begin_with(self.cs.durability);
        tx.insert(&self.cs.coll, &self.rec)?;
        tx.commit()?;
        Ok(())
    }

    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        let mut tx = self.cs.db.begin_with(self.cs.durability);
        for e in entries {
            self.fill(e)?;
            tx.insert(&self.cs.coll, &self.rec)?;
        }
        tx.commit()?;
        Ok(())
    }
}

pub struct CsReader<'a> {
    snap: Snapshot,
    coll: &'a Collection<Rec>,
    by_key: bool,
}

impl Reader for CsReader<'_> {
    fn get(&mut self, id: u64, key: &[u8]) -> Result<Option<usize>> {
        if self.by_key {
            let key = std::str::from_utf8(key)?;
            Ok(self
                .snap
                .find_one(self.coll, "key", &key)?
                .map(|(_, r)| r.value.len()))
        } else {
            Ok(self.snap.get(self.coll, id).map(|r| r.value.len()))
        }
    }
}
