//! okaywal: an entry per append (one chunk, or one chunk per record of a batch), committed (always synced).

use std::io;
use std::path::Path;

use anyhow::Result;
use okaywal::{Configuration, Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};

use super::Log;

pub const DURABILITY: &str =
    "`EntryWriter::commit` (always fsyncs; concurrent commits share a sync)";

/// A log manager that keeps nothing: checkpoints are immediate (the benchmark has no storage behind the log);
/// recovery reads every chunk of every entry and counts it.
#[derive(Debug, Default)]
struct Counting {
    records: u64,
    bytes: u64,
}

impl LogManager for Counting {
    fn recover(&mut self, entry: &mut Entry<'_>) -> io::Result<()> {
        if let Some(chunks) = entry.read_all_chunks()? {
            for c in chunks {
                self.records += 1;
                self.bytes += c.len() as u64;
            }
        }
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

pub struct Okay {
    wal: WriteAheadLog,
}

fn configuration(dir: &Path, keep_everything: bool) -> Configuration {
    let config = Configuration::default_for(dir);
    if keep_everything {
        // Never checkpoint: the whole log stays, to be recovered.
        config.checkpoint_after_bytes(u64::MAX)
    } else {
        config
    }
}

impl Okay {
    pub fn open(dir: &Path, keep_everything: bool) -> Result<Self> {
        Ok(Self {
            wal: configuration(dir, keep_everything).open(Counting::default())?,
        })
    }
}

impl Log for Okay {
    fn append(&self, payload: &[u8]) -> Result<()> {
        let mut entry = self.wal.begin_entry()?;
        entry.write_chunk(payload)?;
        entry.commit()?;
        Ok(())
    }

    fn append_batch(&self, payloads: &[&[u8]]) -> Result<()> {
        let mut entry = self.wal.begin_entry()?;
        for p in payloads {
            entry.write_chunk(p)?;
        }
        entry.commit()?;
        Ok(())
    }
}

/// Recovers the log in `dir`, reading every chunk: (records, payload bytes).
pub fn recover(dir: &Path) -> Result<(u64, u64)> {
    let (tx, rx) = std::sync::mpsc::channel();
    #[derive(Debug)]
    struct Reporting(Counting, std::sync::mpsc::Sender<(u64, u64)>);
    impl LogManager for Reporting {
        fn recover(&mut self, entry: &mut Entry<'_>) -> io::Result<()> {
            self.0.recover(entry)?;
            let _ = self.1.send((self.0.records, self.0.bytes));
            Ok(())
        }
        fn checkpoint_to(
            &mut self,
            id: EntryId,
            reader: &mut SegmentReader,
            wal: &WriteAheadLog,
        ) -> io::Result<()> {
            self.0.checkpoint_to(id, reader, wal)
        }
    }
    let wal = configuration(dir, true).open(Reporting(Counting::default(), tx))?;
    drop(wal);
    Ok(rx.try_iter().last().unwrap_or((0, 0)))
}
