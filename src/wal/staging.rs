//! The staging buffer: a ring of memory that writers copy records into, in parallel and without a lock, before
//! the flusher writes them to their segment.
//!
//! LSN `l` lives at ring byte `l % capacity`. Invariants (kept by `Wal`, relied on by the `unsafe` here):
//! - a writer copies into `[lsn, lsn + len)` only after reserving that range from the tail and after the written
//!   watermark has reached `lsn + len - capacity`, so no live byte of an earlier lap is overwritten;
//! - only the flusher (holding the flush lock) reads ranges, and only below the completion watermark; it zeroes
//!   them before advancing the written watermark, so every slot above the written watermark reads as zero until a
//!   writer fills it. A zero header word therefore means "not yet complete".
//!
//! `unsafe` lives here because concurrent writers copy into disjoint ranges of one buffer.

use std::sync::atomic::{AtomicU64, Ordering};

/// The ring. Backed by `AtomicU64` words so that header words can be published and observed atomically, while
/// other bytes are copied with plain (non-atomic) writes ordered by those words.
pub struct Staging {
    words: Box<[AtomicU64]>,
    capacity_bytes: u64,
}

impl Staging {
    /// A zeroed ring of `capacity_bytes` (a multiple of 8).
    #[must_use]
    pub fn new(capacity_bytes: u64) -> Self {
        assert!(capacity_bytes > 0 && capacity_bytes.is_multiple_of(8));
        let words = (0..capacity_bytes / 8).map(|_| AtomicU64::new(0)).collect();
        Self {
            words,
            capacity_bytes,
        }
    }

    /// The ring's size.
    #[must_use]
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    fn base(&self) -> *mut u8 {
        self.words.as_ptr().cast::<u8>().cast_mut()
    }

    /// The one or two ring pieces `(ring offset, len)` that hold `[lsn, lsn + len)`.
    fn pieces(&self, lsn: u64, len: u64) -> [(usize, usize); 2] {
        debug_assert!(len <= self.capacity_bytes);
        let start = lsn % self.capacity_bytes;
        let first = len.min(self.capacity_bytes - start);
        #[allow(clippy::cast_possible_truncation)]
        [
            (start as usize, first as usize),
            (0, (len - first) as usize),
        ]
    }

    /// Copies `bytes` into the ring at `lsn`.
    ///
    /// # Safety
    /// The caller owns `[lsn, lsn + bytes.len())`: reserved by it, and free in the ring (module invariants).
    pub unsafe fn write(&self, lsn: u64, bytes: &[u8]) {
        let mut from = 0;
        for (at, n) in self.pieces(lsn, bytes.len() as u64) {
            // SAFETY: `at + n <= capacity` (pieces), and the caller guarantees nobody else accesses this range.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes[from..].as_ptr(), self.base().add(at), n)
            };
            from += n;
        }
    }

    /// Publishes a record by storing its header word (which must be non-zero) at `lsn`, with `Release`.
    pub fn publish(&self, lsn: u64, word: u64) {
        debug_assert!(word != 0 && lsn.is_multiple_of(8));
        self.word(lsn).store(word.to_le(), Ordering::Release);
    }

    /// Loads the header word at `lsn` (8-aligned) with `Acquire`: zero until the record there is complete.
    #[must_use]
    pub fn load(&self, lsn: u64) -> u64 {
        u64::from_le(self.word(lsn).load(Ordering::Acquire))
    }

    fn word(&self, lsn: u64) -> &AtomicU64 {
        #[allow(clippy::cast_possible_truncation)]
        &self.words[((lsn % self.capacity_bytes) / 8) as usize]
    }

    /// Calls `sink(piece)` for the one or two pieces holding `[lsn, lsn + len)`, in order.
    ///
    /// # Safety
    /// The range is complete (below the completion watermark) and the caller holds the flush lock.
    pub unsafe fn read<E>(
        &self,
        lsn: u64,
        len: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for (at, n) in self.pieces(lsn, len) {
            if n > 0 {
                // SAFETY: in bounds; no writer touches a complete, unflushed range (module invariants).
                sink(unsafe { std::slice::from_raw_parts(self.base().add(at), n) })?;
            }
        }
        Ok(())
    }

    /// Zeroes `[lsn, lsn + len)` (after it was flushed), so that its slots read as "not complete" in the next lap.
    ///
    /// # Safety
    /// As for [`Staging::read`]; and the written watermark has not yet been advanced past the range.
    pub unsafe fn zero(&self, lsn: u64, len: u64) {
        for (at, n) in self.pieces(lsn, len.min(self.capacity_bytes)) {
            // SAFETY: in bounds; no writer can own these slots until the written watermark moves past them.
            unsafe { std::ptr::write_bytes(self.base().add(at), 0, n) };
        }
    }
}
