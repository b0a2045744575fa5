//! Version chains: the multi-version record of one document, or of one index entry.
//!
//! A [`Chain`] is a list of [`Version`]s, newest first, each stamped with the sequence number of the commit that
//! wrote it. A reader with a snapshot at sequence number `S` sees the newest version stamped `≤ S`. Only the one
//! committer (holding the database's commit lock) changes chains; readers never take a lock.
//!
//! Reclamation. The database tracks every live snapshot (see `db::Registry`); the *horizon* is the lowest
//! sequence number any of them reads at. [`Chain::prune`] with a horizon `H` cuts the chain after its newest
//! version stamped `≤ H`. Invariant: **a version visible at a live snapshot is never cut off**: the version a
//! snapshot at `S ≥ H` sees is the newest stamped `≤ S`, which is that version or a newer one. That is what lets
//! [`Chain::visible`] return a reference that outlives its own loads: the chain keeps the version alive for as
//! long as the snapshot lives. Traversal itself is memory-safe regardless (links are `ArcSwap`s).

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

/// One version: the value (or its absence: a removal) as of commit `seq`.
pub(crate) struct Version<P> {
    seq: u64,
    value: Option<P>,
    older: ArcSwapOption<Version<P>>,
}

/// The versions of one key, newest first.
pub(crate) struct Chain<P> {
    head: ArcSwap<Version<P>>,
}

impl<P> std::fmt::Debug for Chain<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = self.head.load();
        f.debug_struct("Chain")
            .field("seq", &head.seq)
            .field("present", &head.value.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Clone> Chain<P> {
    /// A chain whose only version is `value` as of `seq`.
    pub(crate) fn new(seq: u64, value: Option<P>) -> Self {
        Self {
            head: ArcSwap::from_pointee(Version {
                seq,
                value,
                older: ArcSwapOption::empty(),
            }),
        }
    }

    /// Sequence number of the newest version.
    pub(crate) fn latest_seq(&self) -> u64 {
        self.head.load().seq
    }

    /// The newest value (committed, possibly not yet published).
    pub(crate) fn latest(&self) -> Option<P> {
        self.head.load().value.clone()
    }

    /// Writes `value` as of `seq` (the committer only; `seq` is at least the newest version's). With `keep_older`,
    /// older versions stay for snapshots that still read them; returns whether a version was superseded (the
    /// chain then has garbage for [`Chain::prune`] once the horizon reaches `seq`). A second write at the same
    /// `seq` replaces the first.
    pub(crate) fn write(&self, seq: u64, value: Option<P>, keep_older: bool) -> bool {
        let head = self.head.load_full();
        debug_assert!(seq >= head.seq, "versions are written in commit order");
        let older = if head.seq == seq {
            head.older.load_full()
        } else if keep_older {
            Some(head)
        } else {
            None
        };
        let superseded = older.is_some();
        self.head.store(Arc::new(Version {
            seq,
            value,
            older: ArcSwapOption::new(older),
        }));
        superseded
    }

    /// Drops every version no snapshot at or above `horizon` can see. Returns whether the whole chain now says
    /// "absent" to every such snapshot (then the key itself can go).
    pub(crate) fn prune(&self, horizon: u64) -> bool {
        let head = self.head.load_full();
        let mut current = Arc::clone(&head);
        loop {
            if current.seq <= horizon {
                current.older.store(None);
                break;
            }
            match current.older.load_full() {
                Some(older) => current = older,
                None => break,
            }
        }
        head.seq <= horizon && head.value.is_none()
    }

    /// The value a snapshot at `seq` sees: `None` if the key did not exist or was removed as of `seq`.
    ///
    /// # Safety
    /// A snapshot at `seq` must be registered with the database for all of `'s`, so that no [`Chain::prune`]
    /// during `'s` gets a horizon above `seq` (module invariant). The chain itself need not outlive `'s`: when a
    /// chain is dropped from its map, no snapshot at or above the horizon sees a value in it.
    pub(crate) unsafe fn visible<'s>(&self, seq: u64) -> Option<&'s P> {
        let head = self.head.load();
        let found: *const Version<P> = if head.seq <= seq {
            Arc::as_ptr(&head)
        } else {
            // An older snapshot than the newest commit: walk back (rare; each step holds its version).
            let mut current = head.older.load_full();
            loop {
                match current {
                    None => return None,
                    Some(version) if version.seq <= seq => break Arc::as_ptr(&version),
                    Some(version) => current = version.older.load_full(),
                }
            }
        };
        // SAFETY: `found` is the newest version stamped `≤ seq`. By the caller's contract the horizon stays `≤ seq`
        // during `'s`, so no prune cuts this version off (module invariant): the version before it in the chain
        // (or the chain's head) keeps its `Arc` alive, and a head is only replaced by a write at a newer `seq`,
        // which keeps the old head as its older version (or, at equal `seq`, is a write by the committer to a
        // commit no snapshot sees yet). The value is never mutated after construction.
        unsafe { (*found).value.as_ref() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_see_the_newest_version_at_or_below_them() {
        let chain = Chain::new(2, Some("a"));
        assert!(chain.write(5, Some("b"), true));
        assert!(chain.write(7, None, true));
        // SAFETY: nothing prunes the chain in this test.
        unsafe {
            assert_eq!(chain.visible(1), None);
            assert_eq!(chain.visible(2), Some(&"a"));
            assert_eq!(chain.visible(4), Some(&"a"));
            assert_eq!(chain.visible(5), Some(&"b"));
            assert_eq!(chain.visible(6), Some(&"b"));
            assert_eq!(chain.visible(7), None);
        }
        assert_eq!(chain.latest_seq(), 7);
    }

    #[test]
    fn prune_keeps_what_the_horizon_sees() {
        let chain = Chain::new(2, Some(1));
        chain.write(5, Some(2), true);
        chain.write(7, Some(3), true);
        assert!(!chain.prune(5));
        // SAFETY: horizon 5; reads at 5 and above.
        unsafe {
            assert_eq!(chain.visible(5), Some(&2));
            assert_eq!(chain.visible(6), Some(&2));
            assert_eq!(chain.visible(8), Some(&3));
            // Below the horizon the history is gone.
            assert_eq!(chain.visible(3), None);
        }
        chain.write(9, None, true);
        assert!(!chain.prune(8), "a snapshot at 8 still sees 3");
        assert!(chain.prune(9));
    }

    #[test]
    fn a_second_write_at_one_seq_replaces_the_first() {
        let chain = Chain::new(2, Some(1));
        assert!(chain.write(4, None, true));
        assert!(chain.write(4, Some(9), true));
        // SAFETY: nothing prunes the chain in this test.
        unsafe {
            assert_eq!(chain.visible(4), Some(&9));
            assert_eq!(chain.visible(3), Some(&1));
        }
        assert!(!chain.write(6, Some(10), false));
        // SAFETY: as above.
        unsafe { assert_eq!(chain.visible(5), None) };
    }
}
