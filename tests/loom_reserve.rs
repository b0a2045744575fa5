//! Loom models of the log's concurrency core, `collection_store::reserve` (src/wal/reserve.rs):
//! - reservations from the packed tail by concurrent writers across segment boundaries: they never overlap, each
//!   lies inside one segment after its header, exactly one writer seals each crossed boundary, and reservations
//!   and seals tile the segments with no gap;
//! - the completion watermark: writers publish records (bytes first, header word last with `Release`) in any
//!   order, and `advance_completed` never passes a record whose bytes it cannot see, and reaches the end once all
//!   are published;
//! - both together: writers reserving from the real `Tail`, the roller writing its PAD, and a flusher advancing
//!   the watermark concurrently;
//! - deliberately broken variants (a copy of the roll logic with an off-by-one, a non-atomic tail, `Relaxed` word
//!   loads) run under the same checks in `#[should_panic]` tests, proving the models catch such bugs.
//!
//! Run (release, its own target directory; under `--cfg loom` the crate compiles only `reserve.rs`):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --no-default-features --test loom_reserve`
//! `LOOM_MAX_PREEMPTIONS=N` overrides the preemption bound of the bounded models.
#![cfg(loom)]

use collection_store::reserve::{OFFSET_BITS, Reservation, Tail, advance_completed};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

/// Segment size of the models: tiny, so that a few reservations cross boundaries.
const SEGMENT: u64 = 64;
/// Segment header of the models.
const HEADER: u64 = 16;
/// Record header of the watermark models: a segment end with fewer bytes left than this holds no record (and no
/// PAD): `advance_completed` skips it arithmetically.
const RECORD_HEADER: u64 = 16;

/// Runs `f` under loom. `preemptions` bounds bigger models unless `LOOM_MAX_PREEMPTIONS` is set. Checks that loom
/// explored more than one interleaving, so that no model passes vacuously.
fn check(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = preemptions;
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("loom explored {runs} interleavings");
    assert!(runs > 1, "the model has a single interleaving");
}

// ---------------------------------------------------------------------------------------------------------------
// Reservation
// ---------------------------------------------------------------------------------------------------------------

/// A tail under test: the real one, or a broken copy.
trait Reserve: Send + Sync + 'static {
    fn reserve(&self, len: u64) -> Reservation;
    fn next_lsn(&self) -> u64;
}

impl Reserve for Tail {
    fn reserve(&self, len: u64) -> Reservation {
        Tail::reserve(self, len).expect("LSN space is not exhausted")
    }
    fn next_lsn(&self) -> u64 {
        Tail::next_lsn(self)
    }
}

/// Checks what concurrent writers got, once all are done: `results` are `(len, reservation)`, `start` the tail's
/// first LSN, `next_lsn` the tail's final position.
fn check_tiling(start: u64, results: &[(u64, Reservation)], next_lsn: u64) {
    // (from, to) of every reservation and non-empty seal.
    let mut ranges = Vec::new();
    // Segment index whose end each seal closes.
    let mut sealed = Vec::new();
    for &(len, r) in results {
        let offset = r.lsn % SEGMENT;
        assert!(
            offset >= HEADER && offset + len <= SEGMENT,
            "reservation [{}, {}) is not inside one segment after its header",
            r.lsn,
            r.lsn + len
        );
        ranges.push((r.lsn, r.lsn + len));
        if let Some((at, n)) = r.seal {
            let end = at + n;
            assert!(
                end.is_multiple_of(SEGMENT) && n <= SEGMENT - HEADER,
                "seal [{at}, {end}) does not end a segment"
            );
            assert_eq!(
                r.lsn,
                end + HEADER,
                "the roller's record is not first in the next segment"
            );
            sealed.push(end / SEGMENT - 1);
            if n > 0 {
                ranges.push((at, end));
            }
        }
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "ranges {:?} and {:?} overlap", w[0], w[1]);
    }
    let (first, last) = (
        start / SEGMENT,
        results.iter().map(|(_, r)| r.lsn / SEGMENT).max().unwrap(),
    );
    for segment in first..last {
        let count = sealed.iter().filter(|&&s| s == segment).count();
        assert_eq!(
            count, 1,
            "the end of segment {segment} was sealed {count} times"
        );
    }
    assert_eq!(
        sealed.len() as u64,
        last - first,
        "a seal for a boundary nobody crossed: {sealed:?}"
    );
    // Tiling: each range starts where the previous ended, except across a boundary (after the next header).
    let mut expect = start;
    for &(from, to) in &ranges {
        let across = expect.is_multiple_of(SEGMENT) && from == expect + HEADER;
        assert!(
            from == expect || across,
            "gap [{expect}, {from}) in the log: {ranges:?}"
        );
        expect = to;
    }
    assert_eq!(
        expect, next_lsn,
        "the tail is not just past the last reservation"
    );
}

/// Threads reserve the lengths of `plan` (one list per thread) from a tail starting at `start`.
fn reservation_model<T: Reserve>(
    make: fn(u64) -> T,
    start: u64,
    plan: &'static [&'static [u64]],
    preemptions: Option<usize>,
) {
    check(preemptions, move || {
        let tail = Arc::new(make(start));
        let handles: Vec<_> = plan
            .iter()
            .map(|&lens| {
                let tail = Arc::clone(&tail);
                thread::spawn(move || {
                    lens.iter()
                        .map(|&len| (len, tail.reserve(len)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        check_tiling(start, &results, tail.next_lsn());
    });
}

fn real_tail(start: u64) -> Tail {
    Tail::new(start, SEGMENT, HEADER)
}

/// Offsets 32, 48 fit (the second exactly to the end); whoever gets 64 rolls with an empty seal.
#[test]
fn exact_fill_then_roll_with_empty_seal() {
    reservation_model(real_tail, 32, &[&[16], &[16], &[16]], None);
}

/// Offsets 40 fits; 56 rolls, sealing 8 bytes (too few for a PAD); a writer adding past the end in between waits
/// for the roll and retries in the next segment.
#[test]
fn roll_with_short_seal_and_waiting_writers() {
    reservation_model(real_tail, 40, &[&[16], &[16], &[16]], None);
}

/// Two writers, three reservations each, crossing two boundaries with mixed lengths.
#[test]
fn two_writers_cross_two_boundaries() {
    reservation_model(real_tail, 16, &[&[24, 16, 40], &[8, 24, 32]], Some(5));
}

/// Reservations of a whole segment's usable bytes: every reservation rolls.
#[test]
fn whole_segment_reservations_each_roll() {
    reservation_model(real_tail, 16, &[&[48, 48], &[48]], None);
}

/// A broken copy of `Tail::reserve`: the fit test is `offset + len < size` instead of `<=`. A writer that fits
/// exactly becomes a roller, and so does a writer that added at exactly the segment end before its swap: two
/// rollers, one boundary. Sequential runs never show it.
struct StrictFitTail {
    packed: AtomicU64,
}

fn pack(segment: u64, offset: u64) -> u64 {
    (segment << OFFSET_BITS) | offset
}

fn unpack(packed: u64) -> (u64, u64) {
    (packed >> OFFSET_BITS, packed & ((1 << OFFSET_BITS) - 1))
}

impl Reserve for StrictFitTail {
    fn reserve(&self, len: u64) -> Reservation {
        loop {
            let (segment, offset) = unpack(self.packed.fetch_add(len, Ordering::AcqRel));
            if offset + len < SEGMENT {
                return Reservation {
                    lsn: segment * SEGMENT + offset,
                    seal: None,
                };
            }
            if offset <= SEGMENT {
                self.packed
                    .swap(pack(segment + 1, HEADER + len), Ordering::AcqRel);
                return Reservation {
                    lsn: (segment + 1) * SEGMENT + HEADER,
                    seal: Some((segment * SEGMENT + offset, SEGMENT - offset)),
                };
            }
            while unpack(self.packed.load(Ordering::Acquire)).0 == segment {
                thread::yield_now();
            }
        }
    }
    fn next_lsn(&self) -> u64 {
        let (segment, offset) = unpack(self.packed.load(Ordering::Acquire));
        segment * SEGMENT + offset.min(SEGMENT)
    }
}

#[test]
#[should_panic(expected = "overlap")]
fn model_catches_off_by_one_roll() {
    // The sequential schedule of this very model passes: only an interleaving shows the bug.
    reservation_model(
        |start| StrictFitTail {
            packed: AtomicU64::new(pack(start / SEGMENT, start % SEGMENT)),
        },
        32,
        &[&[16], &[16], &[16]],
        None,
    );
}

/// A broken tail that reserves with a load and a store instead of one `fetch_add`: two writers can get the same
/// range.
struct LoadStoreTail {
    packed: AtomicU64,
}

impl Reserve for LoadStoreTail {
    fn reserve(&self, len: u64) -> Reservation {
        let (segment, offset) = unpack(self.packed.load(Ordering::Acquire));
        assert!(offset + len <= SEGMENT, "this broken tail never rolls");
        self.packed
            .store(pack(segment, offset + len), Ordering::Release);
        Reservation {
            lsn: segment * SEGMENT + offset,
            seal: None,
        }
    }
    fn next_lsn(&self) -> u64 {
        let (segment, offset) = unpack(self.packed.load(Ordering::Acquire));
        segment * SEGMENT + offset
    }
}

#[test]
#[should_panic(expected = "overlap")]
fn model_catches_non_atomic_reservation() {
    reservation_model(
        |start| LoadStoreTail {
            packed: AtomicU64::new(pack(start / SEGMENT, start % SEGMENT)),
        },
        16,
        &[&[16], &[16]],
        None,
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Completion watermark
// ---------------------------------------------------------------------------------------------------------------

/// A stand-in for the staging ring, one slot per 8-byte word of the log (no wrap-around): the header word of a
/// record is an atomic (its value is the record's span, so `span_of_word` is the identity), every other word of
/// the record is plain memory, written before the header word is published and read by the flusher after the
/// watermark passed it. Loom reports a causality violation if such a read is not ordered after the write.
struct Ring {
    words: Vec<AtomicU64>,
    bytes: Vec<UnsafeCell<u64>>,
}

/// What the writer of the record at `lsn` stores in its word `at`.
fn tag(lsn: u64, at: u64) -> u64 {
    lsn << 16 | at
}

impl Ring {
    fn new(limit: u64) -> Self {
        let n = (limit / 8) as usize;
        Self {
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bytes: (0..n).map(|_| UnsafeCell::new(0)).collect(),
        }
    }

    /// Writes the record `[lsn, lsn + span)`: its other words, then its header word with `Release`.
    fn publish(&self, lsn: u64, span: u64) {
        for at in (lsn + 8..lsn + span).step_by(8) {
            // SAFETY: loom's cell: the writer owns the record's words until it publishes (checked by loom).
            self.bytes[(at / 8) as usize].with_mut(|p| unsafe { *p = tag(lsn, at) });
        }
        self.words[(lsn / 8) as usize].store(span, Ordering::Release);
    }

    /// Reads every word of the record at `lsn`, as the flusher does once the watermark passed it.
    fn read(&self, lsn: u64, span: u64) {
        for at in (lsn + 8..lsn + span).step_by(8) {
            // SAFETY: loom's cell; loom checks the read is ordered after the write.
            let value = self.bytes[(at / 8) as usize].with(|p| unsafe { *p });
            assert_eq!(
                value,
                tag(lsn, at),
                "the flusher read a word not yet written"
            );
        }
    }

    /// `advance_completed` over this ring up to `limit`, loading words with `order`.
    fn advance(&self, completed: u64, limit: u64, order: Ordering) -> u64 {
        advance_completed(
            completed,
            limit,
            SEGMENT,
            HEADER,
            RECORD_HEADER,
            |word| word,
            |lsn| {
                assert!(lsn + 8 <= limit, "word_at({lsn}) past the limit {limit}");
                self.words[(lsn / 8) as usize].load(order)
            },
        )
    }
}

/// Checks one watermark value against `records` `(lsn, span)`: it must be the start of a record (or `end`) and
/// every record below it must be fully visible.
fn check_watermark(ring: &Ring, records: &[(u64, u64)], end: u64, previous: u64, completed: u64) {
    assert!(
        completed >= previous,
        "watermark went back from {previous} to {completed}"
    );
    assert!(
        completed == end || records.iter().any(|&(lsn, _)| lsn == completed),
        "watermark {completed} is not a record boundary"
    );
    for &(lsn, span) in records.iter().filter(|&&(lsn, _)| lsn < completed) {
        assert_ne!(
            ring.words[(lsn / 8) as usize].load(Ordering::Relaxed),
            0,
            "watermark {completed} passed the unpublished record at {lsn}"
        );
        ring.read(lsn, span);
    }
}

/// Segment 0: records at 16 (16 bytes) and 32 (24 bytes); 8 bytes left at 56, too few for a record: skipped.
/// Segment 1: 80 (16 bytes), then a PAD from 96 to the segment end. Segment 2: 144 (a 16-byte record).
const LAYOUT: [(u64, u64); 5] = [(16, 16), (32, 24), (80, 16), (96, 32), (144, 16)];
const LAYOUT_END: u64 = 160;
/// Word loads are allowed up to here (like the written watermark plus the ring capacity).
const LAYOUT_LIMIT: u64 = 192;

/// Writers publish `LAYOUT` (thread `i` publishes the records `owners[i]`, in that order) while the main thread
/// advances the watermark twice; then, all published, it must reach the end.
fn watermark_model(owners: &'static [&'static [usize]], order: Ordering, preemptions: usize) {
    check(Some(preemptions), move || {
        let ring = Arc::new(Ring::new(LAYOUT_LIMIT));
        let handles: Vec<_> = owners
            .iter()
            .map(|&mine| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    for &i in mine {
                        let (lsn, span) = LAYOUT[i];
                        ring.publish(lsn, span);
                    }
                })
            })
            .collect();
        let mut completed = LAYOUT[0].0;
        for _ in 0..2 {
            let next = ring.advance(completed, LAYOUT_LIMIT, order);
            check_watermark(&ring, &LAYOUT, LAYOUT_END, completed, next);
            completed = next;
        }
        for h in handles {
            h.join().unwrap();
        }
        let last = ring.advance(completed, LAYOUT_LIMIT, order);
        check_watermark(&ring, &LAYOUT, LAYOUT_END, completed, last);
        assert_eq!(
            last, LAYOUT_END,
            "all records are published, yet the watermark stopped"
        );
    });
}

/// Publication in reverse LSN order by one writer and in LSN order by another.
#[test]
fn watermark_never_passes_unpublished_records() {
    watermark_model(&[&[4, 2, 0], &[1, 3]], Ordering::Acquire, 5);
}

/// Three writers (with the flusher, loom's limit of four threads): neighbouring records, on both sides of the
/// skipped short segment end and of the PAD, are published by different threads.
#[test]
fn watermark_with_concurrent_writers_of_neighbours() {
    watermark_model(&[&[0], &[1, 3], &[2, 4]], Ordering::Acquire, 3);
}

/// The flusher loads header words with `Relaxed`: it may pass a record whose other bytes it cannot see yet.
#[test]
#[should_panic(expected = "Causality violation")]
fn model_catches_relaxed_watermark_loads() {
    watermark_model(&[&[4, 2, 0], &[1, 3]], Ordering::Relaxed, 3);
}

// ---------------------------------------------------------------------------------------------------------------
// Both together
// ---------------------------------------------------------------------------------------------------------------

/// Writers reserve from the real `Tail`, write their record, and a roller writes the PAD of its seal (when the
/// seal can hold a record header); a flusher advances the watermark concurrently. It must never pass a record
/// whose bytes it cannot see, and reaches the tail once everyone is done.
#[test]
fn reserve_publish_and_advance_together() {
    const START: u64 = 32;
    const LENS: [u64; 2] = [24, 16];
    check(Some(5), || {
        let tail = Arc::new(Tail::new(START, SEGMENT, HEADER));
        let ring = Arc::new(Ring::new(LAYOUT_LIMIT));
        let handles: Vec<_> = LENS
            .iter()
            .map(|&len| {
                let (tail, ring) = (Arc::clone(&tail), Arc::clone(&ring));
                thread::spawn(move || {
                    let r = tail.reserve(len).unwrap();
                    if let Some((at, n)) = r.seal
                        && n >= RECORD_HEADER
                    {
                        ring.publish(at, n);
                    }
                    ring.publish(r.lsn, len);
                    (len, r)
                })
            })
            .collect();
        let mut completed = START;
        let next = ring.advance(completed, LAYOUT_LIMIT, Ordering::Acquire);
        // Before the writers are joined, the records are not known: check what the watermark passed by reading
        // the words it walked over (each word is a span).
        let mut at = completed;
        while at < next {
            if at % SEGMENT < HEADER {
                at = at / SEGMENT * SEGMENT + HEADER;
                continue;
            }
            if SEGMENT - at % SEGMENT < RECORD_HEADER {
                at = (at / SEGMENT + 1) * SEGMENT;
                continue;
            }
            let span = ring.words[(at / 8) as usize].load(Ordering::Relaxed);
            assert_ne!(
                span, 0,
                "watermark {next} passed the unpublished record at {at}"
            );
            ring.read(at, span);
            at += span;
        }
        assert_eq!(at, next, "watermark {next} is not a record boundary");
        completed = next;
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        check_tiling(START, &results, tail.next_lsn());
        let mut records: Vec<(u64, u64)> = results.iter().map(|&(len, r)| (r.lsn, len)).collect();
        records.extend(
            results
                .iter()
                .filter_map(|(_, r)| r.seal)
                .filter(|&(_, n)| n >= RECORD_HEADER),
        );
        records.sort_unstable();
        let end = tail.next_lsn();
        let last = ring.advance(completed, LAYOUT_LIMIT, Ordering::Acquire);
        check_watermark(&ring, &records, end, completed, last);
        assert_eq!(
            last, end,
            "everything is published, yet the watermark stopped"
        );
    });
}
