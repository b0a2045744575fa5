//! The crate's error type: one enum, each variant saying what went wrong and where.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in collection-store.
///
/// Errors carry the file and offset where that makes sense, so a message alone tells an operator what to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// What was being done (`"fdatasync"`, `"pwrite"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The disk is full. Nothing half-written became visible; free space and retry (or reopen if poisoned).
    #[error("disk full while {op} on {path}")]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
    },
    /// Another handle (in this or another process) holds the directory.
    #[error("{path} is locked by another open handle (same or other process); close it first")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier write or sync failed, so the log's state on disk is unknown. Reopen to recover.
    #[error("the log is poisoned by an earlier failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The failure that poisoned it.
        cause: String,
    },
    /// The log is damaged in a way recovery must not paper over: valid data follows invalid data.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        file: String,
        /// Byte offset inside the file.
        offset: u64,
        /// What failed to validate.
        reason: String,
    },
    /// The files were written by an incompatible format version.
    #[error("{file} has format version {found}; this build reads version {expected}")]
    FormatVersion {
        /// The file.
        file: String,
        /// Version found on disk.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// A record (or group of records) is larger than the log accepts.
    #[error("record group of {len_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    RecordTooLarge {
        /// Encoded size asked for.
        len_bytes: u64,
        /// The limit (set by segment size and staging buffer size).
        max_bytes: u64,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOptions(String),
    /// A read asked for an LSN that is not the start of a record still in the log.
    #[error("LSN {lsn} is not the start of a record in the log ({reason})")]
    InvalidLsn {
        /// The LSN asked for.
        lsn: u64,
        /// Why it is not usable.
        reason: &'static str,
    },
    /// The collection is already open with another document type.
    #[error("collection {collection:?} holds {found}, not {requested}")]
    WrongType {
        /// The collection.
        collection: String,
        /// The type it was opened with (or whose documents failed validation).
        found: String,
        /// The type asked for.
        requested: String,
    },
    /// A collection handle that belongs to another database.
    #[error("collection {collection:?} is not a collection of this database")]
    UnknownCollection {
        /// The collection.
        collection: String,
    },
    /// A document's archive is larger than the configured limit.
    #[error(
        "document of {len_bytes} bytes in {collection:?} exceeds the limit of {max_bytes} bytes"
    )]
    DocumentTooLarge {
        /// The collection.
        collection: String,
        /// Its archived size.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// Another transaction committed a write to the same document after this one started (first committer wins).
    #[error(
        "write conflict on document {id} of {collection:?}: another transaction committed it first; retry"
    )]
    Conflict {
        /// The collection.
        collection: String,
        /// The document id.
        id: u64,
    },
    /// A unique index already holds the key.
    #[error("unique index {index:?} of {collection:?} already holds key {key} (document {holder})")]
    UniqueViolation {
        /// The collection.
        collection: String,
        /// The index.
        index: String,
        /// The key.
        key: String,
        /// The document holding it.
        holder: u64,
    },
    /// An insert with an id that is already taken.
    #[error("document {id} already exists in {collection:?}")]
    DuplicateId {
        /// The collection.
        collection: String,
        /// The id.
        id: u64,
    },
    /// An update of a document that does not exist.
    #[error("document {id} does not exist in {collection:?}")]
    NotFound {
        /// The collection.
        collection: String,
        /// The id.
        id: u64,
    },
    /// The collection's indexes were created or dropped after this transaction wrote to it; retry the transaction.
    #[error(
        "the indexes of collection {collection:?} changed while this transaction wrote to it; retry it"
    )]
    IndexesChanged {
        /// The collection.
        collection: String,
    },
    /// A JSON document, query, update or path was refused; the error says where in it.
    #[error(transparent)]
    Json(#[from] crate::json::JsonError),
    /// A document lacks a field that a `required` index needs.
    #[error("a document of {collection:?} lacks {path:?}, which index {index:?} requires")]
    MissingField {
        /// The collection.
        collection: String,
        /// The index.
        index: String,
        /// The missing path.
        path: String,
    },
    /// A collection of that name exists already.
    #[error("collection {collection:?} exists already")]
    CollectionExists {
        /// The collection.
        collection: String,
    },
    /// No index of that name.
    #[error("collection {collection:?} has no index {index:?}")]
    UnknownIndex {
        /// The collection.
        collection: String,
        /// The index asked for.
        index: String,
    },
    /// A savepoint that does not belong to this transaction, or was already rolled back past.
    #[error("savepoint {0} is not active in this transaction")]
    InvalidSavepoint(u64),
    /// A two-phase commit was aborted: a participant voted no or failed to prepare. Nothing was committed.
    #[error("participant {participant:?} refused to commit: {reason}")]
    ParticipantAborted {
        /// The participant.
        participant: String,
        /// Its reason.
        reason: String,
    },
    /// The database holds a prepared two-phase transaction with no decision; resolve it first.
    #[error(
        "transaction {txid} is prepared and in doubt; call resolve_in_doubt with the coordinator's decision"
    )]
    InDoubt {
        /// The in-doubt transaction.
        txid: u64,
    },
    /// The log used all of its LSN space (2^30 segments).
    #[error("the log has used all of its LSN space")]
    LsnExhausted,
    /// A source file of an import ([`crate::import_ts`]) is malformed or partial, or the import cannot map it.
    /// Nothing was imported.
    #[error("{}: {field}: {reason}", file.display())]
    Import {
        /// The source file.
        file: PathBuf,
        /// Where in it: a dotted path such as `list.hash."25".id` (`(file)` for the file as a whole).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`], or [`Error::DiskFull`] when the OS reports ENOSPC / EDQUOT.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull
            || source.kind() == io::ErrorKind::QuotaExceeded
        {
            return Error::DiskFull { op, path };
        }
        Error::Io { op, path, source }
    }
}
