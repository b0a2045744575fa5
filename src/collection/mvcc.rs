//! Multi-version maps: every version of a key that a live snapshot may read.
//!
//! A [`VersionedMap`] maps each key to its newest [`Version`], stored inline in a hash map entry (`papaya`: readers
//! take no lock), followed by older versions, newest first, each stamped with the sequence number of the commit
//! that wrote it; a removal is a version without a value. The keys are also kept in order in a skip list
//! (`crossbeam-skiplist`) for iteration and ranges. A reader with a snapshot at sequence number `S` sees the newest
//! version stamped `≤ S`. Only the one committer (holding the database's commit lock) writes; a write replaces the
//! hash map entry with a new newest version whose older link holds a copy of the previous one.
//!
//! Reclamation. The database tracks every live snapshot; the *horizon* is the lowest sequence number any of them
//! reads at. [`VersionedMap::prune`] with a horizon `H` cuts a key's versions after its newest version stamped
//! `≤ H`, and forgets the key if that version is a removal. Invariant: **a version visible at a live snapshot is
//! never cut off**: the version a snapshot at `S ≥ H` sees is the newest stamped `≤ S`, which is that version or a
//! newer one. Values are `Arc`s (or plain copies): a replaced hash map entry is freed once no reader holds the
//! map's guard, but its value lives on in the copy that the new entry links to. That is what lets
//! [`VersionedMap::read`] return a reference into a value that outlives the lookup: some linked version holds the
//! value for as long as the snapshot lives. Walking older versions is memory-safe regardless (links are
//! `ArcSwap`s).
//!
//! Over a base. A map can sit over an immutable base (`base.rs`) that every snapshot reading the map sees: a key
//! with no version at or below a snapshot's sequence number is *unwritten* for it ([`Seen::Unwritten`]), and the
//! base decides. A key's head records whether the base holds the key; a removal of such a key stays as a version
//! without a value (a tombstone hiding the base's entry) instead of being forgotten.

use std::borrow::Borrow;
use std::hash::Hash;
use std::ops::RangeBounds;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use crossbeam_skiplist::SkipSet;

type Hasher = foldhash::fast::RandomState;

/// One version: the value (or its absence: a removal) as of commit `seq`, and the version before it.
pub(crate) struct Version<P> {
    seq: u64,
    value: Option<P>,
    older: ArcSwapOption<Version<P>>,
    /// Whether the base under the map holds this key (meaningful in a head only): a removal is then kept.
    in_base: bool,
}

/// What a snapshot sees of a key in the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen<R> {
    /// A value, written at or below the snapshot.
    Value(R),
    /// A removal at or below the snapshot.
    Removed,
    /// No version at or below the snapshot (or no key): the base, if any, decides.
    Unwritten,
}

impl<R> Seen<R> {
    fn from_value(value: Option<R>) -> Self {
        value.map_or(Self::Removed, Self::Value)
    }
}

impl<P: Clone> Version<P> {
    /// What a snapshot at `seq` sees, from this version back. Calls `f` on the value while this version is
    /// borrowed.
    fn visible<R>(&self, seq: u64, f: impl FnOnce(&P) -> R) -> Seen<R> {
        if self.seq <= seq {
            return Seen::from_value(self.value.as_ref().map(f));
        }
        // An older snapshot than the newest commit of this key: walk back (rare; each step holds its version).
        let mut current = self.older.load_full();
        loop {
            match current {
                None => return Seen::Unwritten,
                Some(version) if version.seq <= seq => {
                    return Seen::from_value(version.value.as_ref().map(f));
                }
                Some(version) => current = version.older.load_full(),
            }
        }
    }
}

/// What a write did to a key's versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The key is new.
    Added,
    /// An older version is kept for snapshots that may read it: prune the key once the horizon reaches the write.
    Superseded,
    /// Nothing older is kept (history not asked for, or nothing superseded).
    Replaced,
    /// A removal with no history kept: the key is gone.
    Forgotten,
    /// A removal of a key that neither the map nor the base holds: nothing changed.
    Absent,
}

/// Keys in order, each with its versions. See the module documentation.
pub(crate) struct VersionedMap<K, P> {
    heads: papaya::HashMap<K, Version<P>, Hasher>,
    order: SkipSet<K>,
}

impl<K, P> VersionedMap<K, P>
where
    K: Hash + Ord + Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
{
    /// An empty map sized for `keys` keys (when they are known in advance: loading a snapshot, building an index),
    /// so filling it copies no table.
    pub(crate) fn with_capacity(keys: usize) -> Self {
        Self {
            // Incremental resizes (papaya's default): each write while the table grows copies a bounded chunk of
            // it. Blocking resizes made growing commits ~30% cheaper on average but stalled the one commit that
            // grew a table of millions of entries for 100-200 ms (measured), which users who cannot wait must
            // never see.
            heads: papaya::HashMap::builder()
                .hasher(Hasher::default())
                .capacity(keys)
                .build(),
            order: SkipSet::new(),
        }
    }

    /// Number of keys (including removed ones not yet forgotten).
    pub(crate) fn key_count(&self) -> usize {
        self.order.len()
    }

    /// The newest version of `key` in the map (`None`: the base decides): its sequence number and value
    /// (committed, possibly not yet published).
    pub(crate) fn latest<Q>(&self, key: &Q) -> Option<(u64, Option<P>)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let heads = self.heads.pin();
        heads.get(key).map(|v| (v.seq, v.value.clone()))
    }

    /// Writes `value` for `key` as of `seq` (the committer only; `seq` is at least the key's newest). With
    /// `keep_older`, the previous version stays for snapshots that still read it; without (where no snapshot reads
    /// the map), it goes at once. A second write at the same `seq` replaces the first (no snapshot sees an
    /// unpublished `seq`). `in_base` tells whether the base holds `key`; it is asked only for a key new to the map
    /// (older snapshots then read the base: nothing older needs keeping).
    pub(crate) fn write(
        &self,
        key: K,
        seq: u64,
        value: Option<P>,
        keep_older: bool,
        in_base: impl FnOnce() -> bool,
    ) -> Written {
        let heads = self.heads.pin();
        let Some(head) = heads.get(&key) else {
            let in_base = in_base();
            if value.is_none() && !in_base {
                return Written::Absent;
            }
            heads.insert(
                key.clone(),
                Version {
                    seq,
                    value,
                    older: ArcSwapOption::empty(),
                    in_base,
                },
            );
            self.order.insert(key);
            return Written::Added;
        };
        let in_base = head.in_base;
        debug_assert!(seq >= head.seq, "versions are written in commit order");
        let older = if head.seq == seq {
            head.older.load_full()
        } else if keep_older {
            Some(Arc::new(Version {
                seq: head.seq,
                value: head.value.clone(),
                older: ArcSwapOption::new(head.older.load_full()),
                in_base,
            }))
        } else {
            None
        };
        if value.is_none() && older.is_none() && !in_base {
            heads.remove(&key);
            self.order.remove(&key);
            return Written::Forgotten;
        }
        let written = if older.is_some() {
            Written::Superseded
        } else {
            Written::Replaced
        };
        heads.insert(
            key,
            Version {
                seq,
                value,
                older: ArcSwapOption::new(older),
                in_base,
            },
        );
        written
    }

    /// Drops every version of `key` that no snapshot at or above `horizon` can see, and the key itself if no such
    /// snapshot sees a value. The committer's only.
    pub(crate) fn prune(&self, key: &K, horizon: u64) {
        let heads = self.heads.pin();
        let Some(head) = heads.get(key) else { return };
        if head.seq <= horizon {
            if head.value.is_none() && !head.in_base {
                heads.remove(key);
                self.order.remove(key);
            } else {
                head.older.store(None);
            }
            return;
        }
        let mut current = head.older.load_full();
        while let Some(version) = current {
            if version.seq <= horizon {
                version.older.store(None);
                return;
            }
            current = version.older.load_full();
        }
    }

    /// What a snapshot at `seq` sees of `key`, through `f` of the value.
    pub(crate) fn read_with<Q, R>(&self, key: &Q, seq: u64, f: impl FnOnce(&P) -> R) -> Seen<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let heads = self.heads.pin();
        heads
            .get(key)
            .map_or(Seen::Unwritten, |head| head.visible(seq, f))
    }

    /// What a snapshot at `seq` sees of `key`: `project` of its value, some data and a reference into what the value
    /// owns (the target of an `Arc`), which outlives the lookup (`Removed` also if `project` says `None`).
    ///
    /// # Safety
    /// A snapshot at `seq` must be registered with the database for all of `'s`, so that no prune during `'s` gets a
    /// horizon above `seq` (module invariant); and `project` must return a reference into memory the value owns
    /// through a pointer (never into the value itself, which may live in a hash map entry that a later write
    /// replaces).
    pub(crate) unsafe fn read<'s, Q, T, R: ?Sized + 's>(
        &self,
        key: &Q,
        seq: u64,
        project: impl FnOnce(&P) -> Option<(T, &R)>,
    ) -> Seen<(T, &'s R)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let heads = self.heads.pin();
        let Some(head) = heads.get(key) else {
            return Seen::Unwritten;
        };
        let seen = head.visible(seq, |p| {
            project(p).map(|(data, r)| (data, std::ptr::from_ref(r)))
        });
        match seen {
            Seen::Value(Some((data, found))) => {
                // SAFETY: `found` points into memory owned through the value the snapshot at `seq` sees. That
                // version is never cut off while the snapshot lives (module invariant, by the caller's contract),
                // and when a write replaces the hash map entry holding it, the new entry links to a copy holding
                // the same owner, so the memory stays allocated and unchanged (values are immutable) for all of
                // `'s`.
                Seen::Value((data, unsafe { &*found }))
            }
            Seen::Value(None) | Seen::Removed => Seen::Removed,
            Seen::Unwritten => Seen::Unwritten,
        }
    }

    /// Every key, in order (including removed ones not yet forgotten).
    pub(crate) fn keys(&self) -> crossbeam_skiplist::set::Iter<'_, K> {
        self.order.iter()
    }

    /// The keys in `range`, in order (including removed ones not yet forgotten).
    pub(crate) fn key_range<R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> crossbeam_skiplist::set::Range<'_, K, R, K> {
        self.order.range(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> VersionedMap<u64, Arc<str>> {
        VersionedMap::with_capacity(0)
    }

    fn read(m: &VersionedMap<u64, Arc<str>>, key: u64, seq: u64) -> Option<String> {
        // SAFETY: the reference is copied out at once, and nothing prunes meanwhile.
        match unsafe { m.read(&key, seq, |s: &Arc<str>| Some(((), &**s))) } {
            Seen::Value(((), s)) => Some(s.to_owned()),
            Seen::Removed | Seen::Unwritten => None,
        }
    }

    #[test]
    fn snapshots_see_the_newest_version_at_or_below_them() {
        let m = map();
        assert_eq!(
            m.write(1, 2, Some("a".into()), true, || false),
            Written::Added
        );
        assert_eq!(
            m.write(1, 5, Some("b".into()), true, || false),
            Written::Superseded
        );
        assert_eq!(m.write(1, 7, None, true, || false), Written::Superseded);
        assert_eq!(read(&m, 1, 1), None);
        assert_eq!(read(&m, 1, 2).as_deref(), Some("a"));
        assert_eq!(read(&m, 1, 4).as_deref(), Some("a"));
        assert_eq!(read(&m, 1, 5).as_deref(), Some("b"));
        assert_eq!(read(&m, 1, 6).as_deref(), Some("b"));
        assert_eq!(read(&m, 1, 7), None);
        assert_eq!(
            m.latest(&1).map(|(seq, v)| (seq, v.is_some())),
            Some((7, false))
        );
    }

    #[test]
    fn prune_keeps_what_the_horizon_sees() {
        let m = map();
        m.write(1, 2, Some("x".into()), true, || false);
        m.write(1, 5, Some("y".into()), true, || false);
        m.write(1, 7, Some("z".into()), true, || false);
        m.prune(&1, 5);
        assert_eq!(read(&m, 1, 5).as_deref(), Some("y"));
        assert_eq!(read(&m, 1, 6).as_deref(), Some("y"));
        assert_eq!(read(&m, 1, 8).as_deref(), Some("z"));
        assert_eq!(
            read(&m, 1, 3),
            None,
            "below the horizon the history is gone"
        );
        m.write(1, 9, None, true, || false);
        m.prune(&1, 8);
        assert_eq!(m.key_count(), 1, "a snapshot at 8 still sees z");
        assert_eq!(read(&m, 1, 8).as_deref(), Some("z"));
        m.prune(&1, 9);
        assert_eq!(m.key_count(), 0);
        assert!(m.latest(&1).is_none());
    }

    #[test]
    fn a_second_write_at_one_seq_replaces_the_first() {
        let m = map();
        m.write(1, 2, Some("a".into()), true, || false);
        m.write(1, 4, None, true, || false);
        m.write(1, 4, Some("b".into()), true, || false);
        assert_eq!(read(&m, 1, 4).as_deref(), Some("b"));
        assert_eq!(read(&m, 1, 3).as_deref(), Some("a"));
        assert_eq!(
            m.write(1, 6, Some("c".into()), false, || false),
            Written::Replaced
        );
        assert_eq!(read(&m, 1, 5), None);
        assert_eq!(m.write(1, 8, None, false, || false), Written::Forgotten);
        assert_eq!(m.key_count(), 0);
        assert_eq!(m.write(1, 9, None, true, || false), Written::Absent);
    }

    #[test]
    fn a_reference_outlives_the_replacement_of_its_entry() {
        let m = map();
        m.write(1, 1, Some("first".into()), true, || false);
        let held = {
            // SAFETY: a snapshot at 1 is "live" for the rest of this test: nothing prunes below 2... at all.
            let Seen::Value(((), held)) =
                (unsafe { m.read(&1, 1, |s: &Arc<str>| Some(((), &**s))) })
            else {
                panic!("written at 1")
            };
            held
        };
        for seq in 2..100 {
            m.write(1, seq, Some(format!("v{seq}").into()), true, || false);
        }
        assert_eq!(held, "first");
    }

    #[test]
    fn removals_of_base_keys_stay_as_tombstones() {
        let m = map();
        let seen = |seq| m.read_with(&1, seq, |s| s.to_string());
        assert_eq!(seen(5), Seen::Unwritten, "no version: the base decides");
        assert_eq!(m.write(1, 3, None, false, || true), Written::Added);
        assert_eq!(seen(2), Seen::Unwritten, "older snapshots read the base");
        assert_eq!(seen(3), Seen::Removed);
        m.prune(&1, 10);
        assert_eq!(m.key_count(), 1, "the tombstone hides the base's key");
        assert_eq!(
            m.write(1, 4, Some("x".into()), true, || unreachable!()),
            Written::Superseded
        );
        assert_eq!(seen(3), Seen::Removed);
        assert_eq!(seen(5), Seen::Value("x".into()));
        assert_eq!(
            m.write(1, 6, None, false, || unreachable!()),
            Written::Replaced,
            "without history, a removal of a base key still stays"
        );
        assert_eq!(seen(7), Seen::Removed);
        assert_eq!(m.key_count(), 1);
        assert_eq!(m.write(2, 6, None, false, || false), Written::Absent);
    }

    #[test]
    fn keys_ascend_strictly_while_the_writer_adds_removes_and_prunes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let m = map();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                for seq in 1..200_000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % 300;
                    let value = (!x.is_multiple_of(5)).then(|| Arc::<str>::from("v"));
                    m.write(key, seq, value, true, || false);
                    m.prune(&key, seq);
                }
                stop.store(true, Ordering::Relaxed);
            });
            let mut scans = 0;
            while !stop.load(Ordering::Relaxed) {
                let keys: Vec<u64> = m.keys().map(|e| *e.value()).collect();
                if let Some(pair) = keys.windows(2).find(|w| w[0] >= w[1]) {
                    panic!("scan {scans}: {} then {}", pair[0], pair[1]);
                }
                scans += 1;
            }
        });
    }
}
