//! Progress of recovery, reported to one callback by every layer that takes part in opening a store: the log's
//! scan (`wal`), then loading the last checkpoint, replaying the log after it and folding the replay into the
//! collections (`db`). Each stage counts in its own unit; within a stage `done` never decreases and the stage's
//! last report has `done == total`.

use std::sync::Arc;

/// A stage of recovery, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecoveryStage {
    /// Scanning the log's segments (unit: segments).
    LogScan,
    /// Mapping and validating the last checkpoint's snapshot files (unit: files).
    Snapshots,
    /// Replaying the log after the checkpoint's cut (unit: log bytes).
    Replay,
    /// Folding the replayed writes into the collections (unit: collections written by the replay).
    Fold,
}

/// One report of recovery's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryProgress {
    /// What recovery is doing.
    pub stage: RecoveryStage,
    /// How much of it is done.
    pub done: u64,
    /// How much of it there is.
    pub total: u64,
}

/// Callback for recovery progress (`WalOptions::progress`, `Options::progress`). Called on the opening thread.
pub type ProgressFn = Arc<dyn Fn(RecoveryProgress) + Send + Sync>;

/// Calls `progress`, if any, with a report of `stage`.
pub(crate) fn report(progress: Option<&ProgressFn>, stage: RecoveryStage, done: u64, total: u64) {
    debug_assert!(done <= total, "{stage:?}: {done} of {total}");
    if let Some(progress) = progress {
        progress(RecoveryProgress { stage, done, total });
    }
}
