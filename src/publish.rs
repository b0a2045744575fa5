//! Publication of database versions in commit order: the one place readers and committers meet.
//!
//! Committers finish their durable waits in any order, but each publishes a *cumulative* version (it contains every
//! earlier commit). [`Publisher::publish`] stores a version only if it is newer than the one published, so the
//! published sequence number never goes backwards and a reader never sees a commit disappear. Readers
//! ([`Publisher::load`]) never block: under std it is one `ArcSwap` load.
//!
//! This file is also compiled on its own under `--cfg loom` (`tests/loom_publish.rs`), with a loom mutex standing in
//! for `ArcSwap`, which loom cannot see into.

use std::sync::Arc;

#[cfg(loom)]
use loom::sync::Mutex;
#[cfg(not(loom))]
use parking_lot::Mutex;

/// A version with a position in commit order.
pub trait Versioned {
    /// Sequence number of the last commit the version contains.
    fn seq(&self) -> u64;
}

/// Holds the published version, and state `S` that must change in the same critical section as publication.
pub struct Publisher<V, S> {
    #[cfg(not(loom))]
    current: arc_swap::ArcSwap<V>,
    #[cfg(loom)]
    current: Mutex<Arc<V>>,
    state: Mutex<S>,
}

impl<V: Versioned, S> Publisher<V, S> {
    /// Publishes `initial`.
    pub fn new(initial: Arc<V>, state: S) -> Self {
        #[cfg(not(loom))]
        let current = arc_swap::ArcSwap::new(initial);
        #[cfg(loom)]
        let current = Mutex::new(initial);
        Self {
            current,
            state: Mutex::new(state),
        }
    }

    /// The published version.
    pub fn load(&self) -> Arc<V> {
        #[cfg(not(loom))]
        return self.current.load_full();
        #[cfg(loom)]
        return Arc::clone(&self.current.lock().unwrap());
    }

    /// Sequence number of the published version.
    pub fn seq(&self) -> u64 {
        #[cfg(not(loom))]
        return self.current.load().seq();
        #[cfg(loom)]
        return self.current.lock().unwrap().seq();
    }

    fn store(&self, version: Arc<V>) {
        #[cfg(not(loom))]
        self.current.store(version);
        #[cfg(loom)]
        {
            *self.current.lock().unwrap() = version;
        }
    }

    fn lock_state(&self) -> impl std::ops::DerefMut<Target = S> + '_ {
        #[cfg(not(loom))]
        return self.state.lock();
        #[cfg(loom)]
        return self.state.lock().unwrap();
    }

    /// Publishes `version` unless a newer one already is, then runs `then` with the state and the published
    /// sequence number, in the same critical section.
    pub fn publish<R>(&self, version: Arc<V>, then: impl FnOnce(&mut S, u64) -> R) -> R {
        let mut state = self.lock_state();
        let seq = version.seq();
        if self.seq() < seq {
            self.store(version);
        }
        let published = self.seq();
        debug_assert!(published >= seq);
        then(&mut state, published)
    }

    /// Replaces the published version unconditionally (for changes that keep the sequence number, such as a new
    /// collection). The caller guarantees no commit is between its logging and its publication.
    pub fn replace(&self, version: Arc<V>) {
        let _state = self.lock_state();
        debug_assert!(version.seq() >= self.seq());
        self.store(version);
    }

    /// Stores `version` unconditionally, without the commit-order check: only for the loom model to show that it
    /// catches the bug the check prevents.
    #[cfg(loom)]
    pub fn replace_for_test(&self, version: Arc<V>) {
        let _state = self.lock_state();
        self.store(version);
    }

    /// Runs `f` on the state, in the publication critical section.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.lock_state())
    }
}
