//! collection-store: an embedded, crash-safe, transactional document store.
//!
//! This release contains the foundation: a segmented, preallocated, memory-mapped write-ahead log ([`wal`]) with
//! lock-free LSN reservation, group commit, per-append durability and crash recovery.
//!
//! ```
//! use collection_store::wal::{Durability, RecordKind, Wal, WalOptions};
//! # fn main() -> collection_store::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let (wal, _report) = Wal::open(dir.path(), WalOptions::default())?;
//! let lsn = wal.append(RecordKind::Data, b"hello", Durability::Sync)?;
//! drop(wal);
//! let (wal, report) = Wal::open(dir.path(), WalOptions::default())?;
//! assert_eq!(report.records, 1);
//! let first = wal.iter_from(wal.start_lsn())?.next().unwrap()?;
//! assert_eq!((first.lsn(), first.payload()), (lsn, &b"hello"[..]));
//! # Ok(()) }
//! ```
#![deny(clippy::all)]
#![warn(missing_docs)]

// Under `--cfg loom` only the concurrency core is compiled, for the loom models in `tests/loom_reserve.rs`.
#[cfg(loom)]
#[path = "wal/reserve.rs"]
pub mod reserve;

pub mod publish;

#[cfg(not(loom))]
pub mod backup;
#[cfg(not(loom))]
pub mod checkpoint;
#[cfg(not(loom))]
pub mod collection;
#[cfg(not(loom))]
pub mod db;
#[cfg(not(loom))]
pub mod documents;
#[cfg(not(loom))]
pub mod error;
#[cfg(not(loom))]
pub mod import_ts;
#[cfg(not(loom))]
pub mod json;
#[cfg(not(loom))]
pub mod progress;
#[cfg(not(loom))]
pub mod txn;
#[cfg(not(loom))]
pub mod verify;
#[cfg(not(loom))]
pub mod wal;

#[cfg(not(loom))]
pub use collection::{Document, IndexKey, Spec};
#[cfg(not(loom))]
pub use db::{
    AutoCheckpoint, Change, CheckpointInfo, Collection, CommitInfo, Database, Docs, InDoubt,
    Options, Snapshot,
};
#[cfg(not(loom))]
pub use documents::{Definition, Documents, IdGenerator, IndexSpec, Patch, Query};
#[cfg(not(loom))]
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use txn::{Participant, Savepoint, Transaction, Vote};

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(all(doctest, not(loom)))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
