//! The base of a store: an immutable, sorted set of documents and index entries that every snapshot reading the
//! store sees under the versions of the delta (`mvcc.rs`).
//!
//! A base is what a store starts from when a database opens: the documents of the last checkpoint (read in place
//! from the mapped snapshot file) with the log's later writes folded in. Building it costs a sort and a pass over
//! the documents, not a hash-map entry and a skip-list node per document, and it is never written afterwards:
//! commits write the delta.
//!
//! Invariants: ids ascend strictly; an index's entry keys ascend strictly and each names the position of its
//! document in the base; a unique index's hash table holds every entry exactly once. Every snapshot that reads a
//! store sees its base (the base is as of the store's creation, and no older snapshot reads the store).

use std::cmp::Ordering as Order;
use std::hash::BuildHasher;
use std::ops::Bound;

use bytemuck::Zeroable;

use super::{DocBytes, EntryKey};

/// Documents by ascending id.
pub(crate) struct BaseDocs {
    /// Sequence number of the newest commit the base holds (what a conflict check sees as its documents' last
    /// write).
    pub(crate) seq: u64,
    /// `(id, document)`, by ascending id: one column, so that a hit is one cache line before the document.
    docs: Vec<(u64, DocBytes)>,
}

impl BaseDocs {
    /// No document.
    pub(crate) fn empty() -> Self {
        Self {
            seq: 0,
            docs: Vec::new(),
        }
    }

    /// The documents `(id, bytes)` (strictly ascending ids) as of commit `seq`.
    pub(crate) fn new(seq: u64, docs: Vec<(u64, DocBytes)>) -> Self {
        debug_assert!(docs.windows(2).all(|w| w[0].0 < w[1].0), "ids ascend");
        Self { seq, docs }
    }

    /// Number of documents.
    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    /// The id and document at `position`.
    pub(crate) fn at(&self, position: usize) -> (u64, &DocBytes) {
        let (id, doc) = &self.docs[position];
        (*id, doc)
    }

    /// The address of the column's place for `position` (a prefetch hint).
    fn column_address(&self, position: usize) -> usize {
        column_address(self.docs.as_ptr().addr(), position)
    }

    fn id_at(&self, position: usize) -> u64 {
        self.docs[position].0
    }

    /// The position of `id`. Auto-increment ids are dense, so an interpolation lands on it or bounds a short
    /// search: the position of an id `x` between the first id `f` and the last `l` of `n` strictly ascending ids
    /// is at most `x - f` and at least `n - 1 - (l - x)`.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        let (first, last) = (self.docs.first()?.0, self.docs.last()?.0);
        if id < first || id > last {
            return None;
        }
        let n = self.docs.len();
        let highest = usize::try_from(id - first).map_or(n - 1, |d| d.min(n - 1));
        let lowest = usize::try_from(last - id).map_or(0, |d| (n - 1).saturating_sub(d));
        if lowest == highest {
            return (self.id_at(lowest) == id).then_some(lowest);
        }
        let span = u128::from(last - first);
        let guess = usize::try_from(u128::from(id - first) * (n as u128 - 1) / span)
            .expect("below n")
            .clamp(lowest, highest);
        match self.id_at(guess).cmp(&id) {
            Order::Equal => Some(guess),
            Order::Less => self.docs[guess + 1..=highest]
                .binary_search_by_key(&id, |d| d.0)
                .ok()
                .map(|p| guess + 1 + p),
            Order::Greater => self.docs[lowest..guess]
                .binary_search_by_key(&id, |d| d.0)
                .ok()
                .map(|p| lowest + p),
        }
    }

    /// The document `id`.
    pub(crate) fn get(&self, id: u64) -> Option<&DocBytes> {
        self.position(id).map(|p| &self.docs[p].1)
    }

    /// Every id with its position, in order.
    pub(crate) fn ids(&self) -> impl DoubleEndedIterator<Item = (u64, usize)> + '_ {
        self.docs
            .iter()
            .enumerate()
            .map(|(position, (id, _))| (*id, position))
    }
}

/// One index's entries over the base's documents, by ascending entry key, and for a unique index a hash table of
/// them too (point lookups: `find_one`, unique checks, tombstones).
pub(crate) struct BaseIndex {
    /// `(entry key, position of the entry's document in the base)`: one column, so that a hit is one cache line.
    entries: Vec<(EntryKey, usize)>,
    /// Open addressing, linear probing, at most half full; a zeroed slot is free. Empty for a non-unique index
    /// (whose lookups need ranges anyway) and for a base of 2³¹ documents or more.
    slots: Vec<Slot>,
    hasher: foldhash::fast::RandomState,
    /// The address of the base's document column when the table was built: only a prefetch hint.
    docs_column: usize,
}

/// One entry of a unique base index's hash table.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Slot {
    /// 1 + the index of the entry in `entries`; 0 for a free slot.
    entry: u32,
    /// The position of the entry's document in the base.
    position: u32,
    /// The address of the last byte of the document when the table was built (an rkyv archive's root is at its
    /// end): only a prefetch hint, never dereferenced.
    doc_address: usize,
}

impl BaseIndex {
    /// No entry.
    pub(crate) fn empty() -> Self {
        Self::new(Vec::new(), false, &BaseDocs::empty())
    }

    /// The entries `(entry key, position of the document in `docs`)`, sorted by key with no key twice; `hashed`:
    /// with a hash table for point lookups.
    pub(crate) fn new(entries: Vec<(EntryKey, usize)>, hashed: bool, docs: &BaseDocs) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "keys ascend");
        debug_assert!(
            entries.iter().all(|(_, p)| *p < docs.len()),
            "positions are documents"
        );
        let hasher = foldhash::fast::RandomState::default();
        let small = |n: usize| u32::try_from(n).ok().filter(|&n| n < 1 << 31);
        let fits = entries
            .iter()
            .all(|(_, position)| small(*position).is_some())
            && small(entries.len()).is_some();
        let mut slots = vec![
            Slot::zeroed();
            if hashed && fits && !entries.is_empty() {
                (entries.len() * 2).next_power_of_two()
            } else {
                0
            }
        ];
        let table = slots.as_mut_slice();
        if !table.is_empty() {
            let mask = table.len() - 1;
            // Entries come in key order, so their slots and documents are at random places: in batches, first ask
            // for every slot and column place of the batch (prefetches), then fill them, so that the misses
            // overlap instead of following one another (reopening 3.5 M documents: from 18% of the samples to 5%).
            const BATCH: usize = 32;
            let mut homes = [0usize; BATCH];
            for (batch, chunk) in entries.chunks(BATCH).enumerate() {
                for ((key, position), home) in chunk.iter().zip(&mut homes) {
                    *home = hash_slot(&hasher, key, mask);
                    prefetch(std::ptr::from_ref(&table[*home]).addr());
                    prefetch(docs.column_address(*position));
                }
                for (j, ((_, position), &home)) in chunk.iter().zip(&homes).enumerate() {
                    let mut slot = home;
                    while table[slot].entry != 0 {
                        slot = (slot + 1) & mask;
                    }
                    let doc = docs.at(*position).1;
                    table[slot] = Slot {
                        entry: small(batch * BATCH + j + 1).expect("checked"),
                        position: small(*position).expect("checked"),
                        doc_address: doc.as_ptr().addr() + doc.len().saturating_sub(1),
                    };
                }
            }
        }
        Self {
            entries,
            slots,
            hasher,
            docs_column: docs.docs.as_ptr().addr(),
        }
    }

    /// The document position of the entry `key`. A hashed lookup reads the slot, then starts loading the document
    /// and its place in the base's column (prefetches of the addresses they had when the table was built) while
    /// it reads the entry to compare the keys: the caller's reads of the document's column slot and bytes then
    /// wait for neither the entry nor each other (the slot, the entry, the column and the bytes were four
    /// dependent cache misses, ~700 ns; now two, ~530 ns, at ~190 ns per miss here).
    pub(crate) fn get(&self, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        if slots.is_empty() {
            return self
                .entries
                .binary_search_by(|(k, _)| k[..].cmp(key))
                .ok()
                .map(|i| self.entries[i].1);
        }
        let mask = slots.len() - 1;
        let mut slot = hash_slot(&self.hasher, key, mask);
        loop {
            let Slot {
                entry,
                position,
                doc_address,
            } = slots[slot];
            if entry == 0 {
                return None;
            }
            prefetch(doc_address);
            prefetch(column_address(self.docs_column, position as usize));
            if self.entries[entry as usize - 1].0[..] == *key {
                return Some(position as usize);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The fingerprint of the entries (see `Store::rebuilt`).
    pub(crate) fn fingerprint(
        &self,
        hasher: &foldhash::quality::RandomState,
    ) -> super::Fingerprint {
        let mut fingerprint = super::Fingerprint::default();
        for (key, position) in &self.entries {
            fingerprint.add(hasher, key, *position);
        }
        fingerprint
    }

    /// Whether the entry `key` exists.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// The entries whose keys lie within the bounds, in order: the key and the document's position.
    pub(crate) fn range<'a>(
        &'a self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'a EntryKey, usize)> + use<'a> {
        let start = match lower {
            Bound::Included(k) => self.entries.partition_point(|(e, _)| &e[..] < k),
            Bound::Excluded(k) => self.entries.partition_point(|(e, _)| &e[..] <= k),
            Bound::Unbounded => 0,
        };
        let end = match upper {
            Bound::Included(k) => self.entries.partition_point(|(e, _)| &e[..] <= k),
            Bound::Excluded(k) => self.entries.partition_point(|(e, _)| &e[..] < k),
            Bound::Unbounded => self.entries.len(),
        };
        let end = end.max(start);
        self.entries[start..end].iter().map(|(k, p)| (k, *p))
    }
}

/// The address of `position` in a document column that starts at `column`.
fn column_address(column: usize, position: usize) -> usize {
    column.wrapping_add(position.wrapping_mul(size_of::<(u64, DocBytes)>()))
}

/// Asks the CPU to start loading the cache line at `address` (a hint: nothing is read, and an address that is no
/// longer mapped is harmless).
#[inline]
fn prefetch(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and never reads into the program's state, whatever the address; SSE is part
    // of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::without_provenance(address));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The first slot to probe for `key` in a table of `mask + 1` slots.
fn hash_slot(hasher: &foldhash::fast::RandomState, key: &[u8], mask: usize) -> usize {
    // The low bits of the hash: foldhash mixes every bit of the key into them.
    (hasher.hash_one(key) as usize) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(ids: &[u64]) -> BaseDocs {
        BaseDocs::new(
            1,
            ids.iter()
                .map(|&id| (id, DocBytes::copy_from(&id.to_le_bytes())))
                .collect(),
        )
    }

    #[test]
    fn positions_are_found_in_dense_sparse_and_skewed_ids() {
        let cases: Vec<Vec<u64>> = vec![
            vec![],
            vec![7],
            (0..1000).collect(),
            (0..1000).map(|i| i * 3 + 1).collect(),
            (0..1000).map(|i| i * i).collect(),
            vec![0, 1, 2, 3, u64::MAX - 1, u64::MAX],
            (0..100).chain([1 << 40, (1 << 40) + 1, u64::MAX]).collect(),
        ];
        for ids in cases {
            let base = docs(&ids);
            for (position, &id) in ids.iter().enumerate() {
                assert_eq!(base.position(id), Some(position), "{id} in {ids:?}");
                assert_eq!(&base.get(id).unwrap()[..], &id.to_le_bytes());
            }
            let probes = ids
                .iter()
                .flat_map(|&id| [id.wrapping_sub(1), id.wrapping_add(1)])
                .chain([0, 5, 1 << 39, u64::MAX]);
            for probe in probes {
                assert_eq!(
                    base.position(probe),
                    ids.binary_search(&probe).ok(),
                    "{probe} in {ids:?}"
                );
            }
        }
    }

    #[test]
    fn index_ranges_honour_their_bounds() {
        let keys: Vec<EntryKey> = [b"a".as_slice(), b"b", b"bb", b"c"]
            .iter()
            .map(|k| EntryKey::from_slice(k))
            .collect();
        let index = BaseIndex::new(
            keys.into_iter().zip(0..).collect(),
            false,
            &docs(&[1, 2, 3, 4]),
        );
        let range = |lower, upper| -> Vec<Vec<u8>> {
            index.range(lower, upper).map(|(k, _)| k.to_vec()).collect()
        };
        assert_eq!(range(Bound::Included(b"b"), Bound::Excluded(b"c")).len(), 2);
        assert_eq!(range(Bound::Excluded(b"b"), Bound::Included(b"c")).len(), 2);
        assert_eq!(range(Bound::Unbounded, Bound::Unbounded).len(), 4);
        assert!(range(Bound::Included(b"c"), Bound::Excluded(b"a")).is_empty());
        assert_eq!(
            index.range(Bound::Unbounded, Bound::Unbounded).next_back(),
            Some((&EntryKey::from_slice(b"c"), 3))
        );
        assert_eq!(index.get(b"bb"), Some(2));
        assert!(!index.contains(b"ba"));
    }

    #[test]
    fn hashed_lookups_find_every_entry_and_nothing_else() {
        for n in [0usize, 1, 2, 3, 100, 5000] {
            let keys: Vec<EntryKey> = (0..n)
                .map(|i| EntryKey::from_slice(format!("k{:08}", i * 2).as_bytes()))
                .collect();
            let base = docs(&(0..n as u64).collect::<Vec<_>>());
            let hashed = BaseIndex::new(keys.iter().cloned().zip(0..).collect(), true, &base);
            let searched = BaseIndex::new(keys.iter().cloned().zip(0..).collect(), false, &base);
            assert_eq!(hashed.slots.is_empty(), n == 0);
            for i in 0..n * 2 + 2 {
                let key = format!("k{i:08}");
                let expected = (i % 2 == 0 && i / 2 < n).then_some(i / 2);
                assert_eq!(hashed.get(key.as_bytes()), expected, "{key} of {n}");
                assert_eq!(searched.get(key.as_bytes()), expected, "{key} of {n}");
            }
        }
    }
}
