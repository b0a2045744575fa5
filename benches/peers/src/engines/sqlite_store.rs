//! SQLite through rusqlite (bundled): a `WITHOUT ROWID` table of blob keys and values in WAL mode, one connection
//! per writing or reading thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Engine, Entry, Level, Reader, Writer};

pub fn durability(level: Level) -> &'static str {
    match level {
        Level::Sync => "`journal_mode=WAL`, `synchronous=FULL`: the WAL is synced at each commit",
        Level::Os | Level::Memory => {
            "`journal_mode=WAL`, `synchronous=NORMAL` (SQLite's recommendation for WAL: survives a crash of the process, not power loss)"
        }
    }
}

const INSERT: &str = "INSERT OR REPLACE INTO records (key, value) VALUES (?1, ?2)";

pub struct Sqlite {
    path: PathBuf,
    synchronous: &'static str,
    /// Kept open for the engine's lifetime (the first connection creates the table).
    _main: Mutex<Connection>,
}

impl Sqlite {
    pub fn open(dir: &Path, level: Level) -> Result<Self> {
        let path = dir.join("data.sqlite");
        let synchronous = if level == Level::Sync {
            "FULL"
        } else {
            "NORMAL"
        };
        let main = connect(&path, synchronous)?;
        main.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
        )?;
        Ok(Self {
            path,
            synchronous,
            _main: Mutex::new(main),
        })
    }
}

fn connect(path: &Path, synchronous: &str) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(conn)
}

impl Engine for Sqlite {
    fn writer(&self) -> Result<Box<dyn Writer + '_>> {
        Ok(Box::new(SqliteWriter(connect(
            &self.path,
            self.synchronous,
        )?)))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        let conn = connect(&self.path, self.synchronous)?;
        // A read transaction kept across reads: one snapshot, as the other engines' readers.
        conn.execute_batch("BEGIN")?;
        Ok(Box::new(SqliteReader(conn)))
    }
}

struct SqliteWriter(Connection);

impl Writer for SqliteWriter {
    fn put(&mut self, e: Entry<'_>) -> Result<()> {
        self.0
            .prepare_cached(INSERT)?
            .execute(params![e.key, e.value])?;
        Ok(())
    }

    fn put_batch(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        let tx = self.0.transaction()?;
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for e in entries {
                stmt.execute(params![e.key, e.value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

struct SqliteReader(Connection);

impl Reader for SqliteReader {
    fn get(&mut self, _id: u64, key: &[u8]) -> Result<Option<usize>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT value FROM records WHERE key = ?1")?;
        Ok(stmt
            .query_row([key], |r| Ok(r.get_ref(0)?.as_blob()?.len()))
            .optional()?)
    }
}
