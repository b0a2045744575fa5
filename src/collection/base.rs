//! The base of a store: an immutable, sorted set of documents and index entries that every snapshot reading the
//! store sees under the versions of the delta (`mvcc.rs`).
//!
//! A base is what a store starts from when a database opens: the documents of the last checkpoint (read in place
//! from the mapped snapshot file) with the log's later writes folded in. Building it costs a sort and a pass over
//! the documents, not a hash-map entry and a skip-list node per document, and it is never written afterwards:
//! commits write the delta.
//!
//! Invariants: `ids` ascend strictly and `docs[i]` is the document `ids[i]`; an index's entry keys ascend strictly
//! and `entries[j]` names the position of its document in `ids`. Every snapshot that reads a store sees its base
//! (the base is as of the store's creation, and no older snapshot reads the store).

use std::cmp::Ordering as Order;
use std::ops::Bound;

use super::{DocBytes, EntryKey};

/// Documents by ascending id.
pub(crate) struct BaseDocs {
    /// Sequence number of the newest commit the base holds (what a conflict check sees as its documents' last
    /// write).
    pub(crate) seq: u64,
    ids: Vec<u64>,
    docs: Vec<DocBytes>,
}

impl BaseDocs {
    /// No document.
    pub(crate) fn empty() -> Self {
        Self {
            seq: 0,
            ids: Vec::new(),
            docs: Vec::new(),
        }
    }

    /// The documents `(id, bytes)` (strictly ascending ids) as of commit `seq`.
    pub(crate) fn new(seq: u64, docs: Vec<(u64, DocBytes)>) -> Self {
        debug_assert!(docs.windows(2).all(|w| w[0].0 < w[1].0), "ids ascend");
        let (ids, docs) = docs.into_iter().unzip();
        Self { seq, ids, docs }
    }

    /// Number of documents.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The id and document at `position`.
    pub(crate) fn at(&self, position: usize) -> (u64, &DocBytes) {
        (self.ids[position], &self.docs[position])
    }

    /// The position of `id`. Auto-increment ids are dense, so an interpolation lands on it or bounds a short
    /// search: the position of an id `x` between the first id `f` and the last `l` of `n` strictly ascending ids
    /// is at most `x - f` and at least `n - 1 - (l - x)`.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        let (&first, &last) = (self.ids.first()?, self.ids.last()?);
        if id < first || id > last {
            return None;
        }
        let n = self.ids.len();
        let highest = usize::try_from(id - first).map_or(n - 1, |d| d.min(n - 1));
        let lowest = usize::try_from(last - id).map_or(0, |d| (n - 1).saturating_sub(d));
        if lowest == highest {
            return (self.ids[lowest] == id).then_some(lowest);
        }
        let span = u128::from(last - first);
        let guess = usize::try_from(u128::from(id - first) * (n as u128 - 1) / span)
            .expect("below n")
            .clamp(lowest, highest);
        match self.ids[guess].cmp(&id) {
            Order::Equal => Some(guess),
            Order::Less => self.ids[guess + 1..=highest]
                .binary_search(&id)
                .ok()
                .map(|p| guess + 1 + p),
            Order::Greater => self.ids[lowest..guess]
                .binary_search(&id)
                .ok()
                .map(|p| lowest + p),
        }
    }

    /// The document `id`.
    pub(crate) fn get(&self, id: u64) -> Option<&DocBytes> {
        self.position(id).map(|p| &self.docs[p])
    }

    /// Every id with its position, in order.
    pub(crate) fn ids(&self) -> impl DoubleEndedIterator<Item = (u64, usize)> + '_ {
        self.ids
            .iter()
            .enumerate()
            .map(|(position, &id)| (id, position))
    }
}

/// One index's entries over the base's documents, by ascending entry key.
pub(crate) struct BaseIndex {
    keys: Vec<EntryKey>,
    /// Position in the base's documents of each entry's document.
    positions: Vec<usize>,
}

impl BaseIndex {
    /// No entry.
    pub(crate) fn empty() -> Self {
        Self {
            keys: Vec::new(),
            positions: Vec::new(),
        }
    }

    /// The entries `(entry key, position of the document)`, sorted by key with no key twice.
    pub(crate) fn new(entries: Vec<(EntryKey, usize)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "keys ascend");
        let (keys, positions) = entries.into_iter().unzip();
        Self { keys, positions }
    }

    /// The document position of the entry `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<usize> {
        self.keys
            .binary_search_by(|k| k[..].cmp(key))
            .ok()
            .map(|i| self.positions[i])
    }

    /// The fingerprint of the entries (see `Store::rebuilt`).
    pub(crate) fn fingerprint(
        &self,
        hasher: &foldhash::quality::RandomState,
    ) -> super::Fingerprint {
        let mut fingerprint = super::Fingerprint::default();
        for (key, &position) in self.keys.iter().zip(&self.positions) {
            fingerprint.add(hasher, key, position);
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
            Bound::Included(k) => self.keys.partition_point(|e| &e[..] < k),
            Bound::Excluded(k) => self.keys.partition_point(|e| &e[..] <= k),
            Bound::Unbounded => 0,
        };
        let end = match upper {
            Bound::Included(k) => self.keys.partition_point(|e| &e[..] <= k),
            Bound::Excluded(k) => self.keys.partition_point(|e| &e[..] < k),
            Bound::Unbounded => self.keys.len(),
        };
        let end = end.max(start);
        self.keys[start..end]
            .iter()
            .zip(&self.positions[start..end])
            .map(|(k, &p)| (k, p))
    }
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
        let index = BaseIndex::new(keys.into_iter().zip(0..).collect());
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
}
