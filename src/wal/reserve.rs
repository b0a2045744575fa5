//! Lock-free LSN reservation, segment roll, and the completion watermark: the concurrency core of the log.
//!
//! This file is also compiled on its own under `--cfg loom` (see `tests/loom_reserve.rs`), so it depends on
//! nothing but its atomics.
//!
//! # The tail
//! The log's tail is one `AtomicU64` packing `(segment index: 30 bits, offset in segment: 34 bits)`. A writer
//! reserves `len` bytes with a single `fetch_add(len)` on it and learns its segment and offset from the value it
//! got back. With `S` the segment size:
//! - `offset + len <= S`: the reservation fits; the writer owns `[offset, offset + len)` of that segment.
//! - `offset <= S < offset + len`: exactly one reservation covers byte `S` (reservations tile the segment from its
//!   first record), so exactly one writer sees this: the **roller**. It owns `[offset, S)`, which it seals with a
//!   PAD record, and it publishes the next segment's tail with one `swap` that also reserves its own record at the
//!   start of the next segment.
//! - `offset > S`: someone else is rolling. The writer waits until the tail shows a later segment and retries.
//!   Its `fetch_add` was wasted and is overwritten by the roller's `swap`.
//!
//! Offsets have 34 bits and segments at most 2^30 bytes, so wasted additions during a roll cannot overflow into
//! the segment bits (that would take 15 GiB of concurrent reservations).
//!
//! # The completion watermark
//! Every record begins with an 8-byte word (length, kind, flags) that is never zero. The writer stores every other
//! byte first and that word last, with `Release`. [`advance_completed`] walks forward from the current watermark
//! reading words with `Acquire`: it stops at the first zero word, so it only ever passes records whose bytes are
//! all visible. Segment headers and too-short segment ends are skipped arithmetically.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the packed tail used for the offset inside a segment.
pub const OFFSET_BITS: u32 = 34;
/// Largest segment size the packing allows.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Segment indexes available (the log's LSN space is `MAX_SEGMENTS * segment size`).
pub const MAX_SEGMENTS: u64 = 1 << (64 - OFFSET_BITS);
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// A reserved range of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// First LSN of the range.
    pub lsn: u64,
    /// When this writer rolled the segment: the range `[lsn, lsn + len)` at the end of the previous segment that it
    /// must seal (with a PAD record when it can hold a record header; `len` may be 0).
    pub seal: Option<(u64, u64)>,
}

/// The log's tail. See the module documentation for the protocol.
#[derive(Debug)]
pub struct Tail {
    packed: AtomicU64,
    segment_size_bytes: u64,
    segment_header_bytes: u64,
}

/// The LSN space is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted;

fn pack(segment: u64, offset: u64) -> u64 {
    debug_assert!(segment < MAX_SEGMENTS && offset <= OFFSET_MASK);
    (segment << OFFSET_BITS) | offset
}

fn unpack(packed: u64) -> (u64, u64) {
    (packed >> OFFSET_BITS, packed & OFFSET_MASK)
}

impl Tail {
    /// A tail whose next reservation starts at `lsn`, which must not be inside a segment header.
    #[must_use]
    pub fn new(lsn: u64, segment_size_bytes: u64, segment_header_bytes: u64) -> Self {
        assert!(
            segment_size_bytes <= MAX_SEGMENT_BYTES && segment_header_bytes < segment_size_bytes
        );
        let (segment, offset) = (lsn / segment_size_bytes, lsn % segment_size_bytes);
        assert!(
            offset >= segment_header_bytes,
            "tail inside a segment header"
        );
        Self {
            packed: AtomicU64::new(pack(segment, offset)),
            segment_size_bytes,
            segment_header_bytes,
        }
    }

    /// Reserves `len` bytes (`len <= segment size - header`). Lock-free except while another thread rolls.
    ///
    /// # Errors
    /// [`Exhausted`] when the next segment index does not fit.
    pub fn reserve(&self, len: u64) -> Result<Reservation, Exhausted> {
        let size = self.segment_size_bytes;
        debug_assert!(len > 0 && len <= size - self.segment_header_bytes);
        loop {
            let (segment, offset) = unpack(self.packed.fetch_add(len, Ordering::AcqRel));
            if offset + len <= size {
                return Ok(Reservation {
                    lsn: segment * size + offset,
                    seal: None,
                });
            }
            if offset <= size {
                // The roller: seal [offset, size) and open the next segment with our record first in it.
                let next = segment + 1;
                if next >= MAX_SEGMENTS {
                    // Leave the tail past the end so every other writer also sees exhaustion.
                    return Err(Exhausted);
                }
                // `swap`, not `store`: publishing over concurrent `fetch_add`s (see loom#254).
                self.packed.swap(
                    pack(next, self.segment_header_bytes + len),
                    Ordering::AcqRel,
                );
                return Ok(Reservation {
                    lsn: next * size + self.segment_header_bytes,
                    seal: Some((segment * size + offset, size - offset)),
                });
            }
            if segment + 1 >= MAX_SEGMENTS {
                return Err(Exhausted);
            }
            self.wait_for_roll(segment);
        }
    }

    fn wait_for_roll(&self, segment: u64) {
        let mut spins = 0u32;
        while unpack(self.packed.load(Ordering::Acquire)).0 == segment {
            spins += 1;
            // Under loom every load is a scheduling point: yield at once so that models stay small.
            if cfg!(not(loom)) && spins < 64 {
                std::hint::spin_loop();
            } else {
                #[cfg(loom)]
                loom::thread::yield_now();
                #[cfg(not(loom))]
                std::thread::yield_now();
            }
        }
    }

    /// The LSN the next reservation would get (exact only when no reservation is in progress).
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        let (segment, offset) = unpack(self.packed.load(Ordering::Acquire));
        segment * self.segment_size_bytes + offset.min(self.segment_size_bytes)
    }
}

/// Advances the completion watermark from `completed` over every record whose header word is published.
///
/// `word_at(lsn)` loads the header word at `lsn` with `Acquire`. It is only called for `lsn + 8 <= limit`: beyond
/// `limit` (the written watermark plus the staging capacity) a slot may still hold an older lap's bytes.
pub fn advance_completed(
    mut completed: u64,
    limit: u64,
    segment_size_bytes: u64,
    segment_header_bytes: u64,
    record_header_bytes: u64,
    span_of_word: impl Fn(u64) -> u64,
    word_at: impl Fn(u64) -> u64,
) -> u64 {
    loop {
        let offset = completed % segment_size_bytes;
        if offset < segment_header_bytes {
            completed += segment_header_bytes - offset;
            continue;
        }
        if segment_size_bytes - offset < record_header_bytes {
            completed += segment_size_bytes - offset;
            continue;
        }
        if completed + 8 > limit {
            return completed;
        }
        let word = word_at(completed);
        if word == 0 {
            return completed;
        }
        completed += span_of_word(word);
    }
}
