//! The stores compared, behind two traits: [`Engine`] (a key-value store with transactions: single-record commits,
//! batches, point reads) and [`Log`] (a write-ahead log on its own). One module per store.

use std::path::Path;

use anyhow::{Result, bail};

mod cstore;
mod cstore_log;
mod fjall_store;
mod heed_store;
mod okaywal_log;
mod redb_store;
#[cfg(feature = "rocksdb")]
mod rocksdb_store;
mod sled_store;
mod sqlite_store;

/// How far a commit must get before it returns. Each engine maps these to its own closest settings, stated by
/// [`Kind::durability`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Survives power loss: on stable storage when the commit returns.
    Sync,
    /// Survives the process being killed (handed to the OS), or the engine's own non-durable default.
    Os,
    /// In the engine's memory only (collection-store's `Durability::None`).
    Memory,
}

/// One record: collection-store uses `id` as the document's primary key; every other engine stores `key` ->
/// `value`.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub id: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// A key-value store with transactions. `Send + Sync`: writers and readers are made per thread.
pub trait Engine: Send + Sync {
    /// A handle that commits; one per writing thread.
    fn writer(&self) -> Result<Box<dyn Writer + '_>>;
    /// A read view (a snapshot or read transaction kept across reads, as a reading loop would).
    fn reader(&self) -> Result<Box<dyn Reader + '_>>;
    /// `fdatasync`/`fsync` calls the engine made, where it tells.
    fn syncs(&self) -> Option<u64> {
        None
    }
}

pub trait Writer {
    /// Commits one record as its own transaction.
    fn put(&mut self, e: Entry<'_>) -> Result<()>;
    /// Commits all records as one transaction.
    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()>;
}

pub trait Reader {
    /// The value's length, if the key is there.
    fn get(&mut self, id: u64, key: &[u8]) -> Result<Option<usize>>;
}

/// The key-value stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    CollectionStore,
    Redb,
    Fjall,
    Sled,
    Heed,
    Sqlite,
    #[cfg(feature = "rocksdb")]
    Rocksdb,
}

impl Kind {
    pub fn all() -> Vec<Kind> {
        vec![
            Kind::CollectionStore,
            Kind::Redb,
            Kind::Fjall,
            Kind::Sled,
            Kind::Heed,
            Kind::Sqlite,
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb,
        ]
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::CollectionStore => "collection-store",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
            Kind::Sled => "sled",
            Kind::Heed => "heed (LMDB)",
            Kind::Sqlite => "rusqlite (SQLite)",
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => "rocksdb",
        }
    }

    /// The short name used on the command line of the writer child.
    pub fn id(self) -> &'static str {
        match self {
            Kind::CollectionStore => "cstore",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
            Kind::Sled => "sled",
            Kind::Heed => "heed",
            Kind::Sqlite => "sqlite",
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => "rocksdb",
        }
    }

    pub fn from_id(id: &str) -> Result<Kind> {
        match Kind::all().into_iter().find(|k| k.id() == id) {
            Some(k) => Ok(k),
            None => bail!("unknown engine {id:?}"),
        }
    }

    /// The engine's setting for `level`, as stated in the output.
    pub fn durability(self, level: Level) -> &'static str {
        match self {
            Kind::CollectionStore => cstore::durability(level),
            Kind::Redb => redb_store::durability(level),
            Kind::Fjall => fjall_store::durability(level),
            Kind::Sled => sled_store::durability(level),
            Kind::Heed => heed_store::durability(level),
            Kind::Sqlite => sqlite_store::durability(level),
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => rocksdb_store::durability(level),
        }
    }

    /// Opens (creating or recovering) the engine's store in `dir`, committing at `level`.
    pub fn open(self, dir: &Path, level: Level) -> Result<Box<dyn Engine>> {
        std::fs::create_dir_all(dir)?;
        Ok(match self {
            Kind::CollectionStore => Box::new(cstore::Cs::open(dir, level, true)?),
            Kind::Redb => Box::new(redb_store::Redb::open(dir, level)?),
            Kind::Fjall => Box::new(fjall_store::Fjall::open(dir, level)?),
            Kind::Sled => Box::new(sled_store::Sled::open(dir, level)?),
            Kind::Heed => Box::new(heed_store::Heed::open(dir, level)?),
            Kind::Sqlite => Box::new(sqlite_store::Sqlite::open(dir, level)?),
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => Box::new(rocksdb_store::Rocks::open(dir, level)?),
        })
    }
}

/// collection-store with automatic checkpoints off (the whole log is replayed at open), for the reopen workload.
pub fn open_cstore_without_checkpoints(dir: &Path) -> Result<cstore::Cs> {
    std::fs::create_dir_all(dir)?;
    cstore::Cs::open(dir, Level::Sync, false)
}

pub use cstore::Cs;

/// A write-ahead log on its own: durable appends of one record or of a group, recovery of everything in it.
pub trait Log: Send + Sync {
    /// Appends one record; durable when it returns.
    fn append(&self, payload: &[u8]) -> Result<()>;
    /// Appends records as one all-or-nothing entry; durable when it returns.
    fn append_batch(&self, payloads: &[&[u8]]) -> Result<()>;
    fn syncs(&self) -> Option<u64> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    CollectionStoreWal,
    Okaywal,
}

impl LogKind {
    pub fn all() -> [LogKind; 2] {
        [LogKind::CollectionStoreWal, LogKind::Okaywal]
    }

    pub fn name(self) -> &'static str {
        match self {
            LogKind::CollectionStoreWal => "collection-store wal::Wal",
            LogKind::Okaywal => "okaywal",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            LogKind::CollectionStoreWal => "cstore-wal",
            LogKind::Okaywal => "okaywal",
        }
    }

    pub fn from_id(id: &str) -> Result<LogKind> {
        match LogKind::all().into_iter().find(|k| k.id() == id) {
            Some(k) => Ok(k),
            None => bail!("unknown log {id:?}"),
        }
    }

    pub fn durability(self) -> &'static str {
        match self {
            LogKind::CollectionStoreWal => cstore_log::DURABILITY,
            LogKind::Okaywal => okaywal_log::DURABILITY,
        }
    }

    /// Opens the log in `dir`. `keep_everything`: no checkpointing or truncation (the reopen workload), else each
    /// log's own way of bounding itself runs as it would in use.
    pub fn open(self, dir: &Path, keep_everything: bool) -> Result<Box<dyn Log>> {
        std::fs::create_dir_all(dir)?;
        Ok(match self {
            LogKind::CollectionStoreWal => Box::new(cstore_log::CsWal::open(dir, keep_everything)?),
            LogKind::Okaywal => Box::new(okaywal_log::Okay::open(dir, keep_everything)?),
        })
    }

    /// Opens the log in `dir` and reads every record back: (records, payload bytes).
    pub fn recover(self, dir: &Path) -> Result<(u64, u64)> {
        match self {
            LogKind::CollectionStoreWal => cstore_log::recover(dir),
            LogKind::Okaywal => okaywal_log::recover(dir),
        }
    }
}
