//! Damage swept across a real file log, byte by byte: a log of several small segments is written with
//! `Durability::Sync` and closed, then damaged one way at a time and reopened.
//!
//! - **Torn tail:** for every byte offset of the last data segment (and of the one before it), everything from that
//!   offset to the end of the segment file is zeroed. In the last segment this must recover exactly the records
//!   left intact, cut back to a group boundary. In the segment before it, damage is followed by valid data, which
//!   is corruption: a typed `Error::Corruption`, unless nothing actually changed.
//! - **Short file:** the segment file is truncated to the offset (never done to a mapped file): a typed error or a
//!   prefix, never a panic.
//! - **Bit rot:** one bit flipped at offsets across every segment and `meta`: exactly the outcome the format rules
//!   predict (checked bytes of synced data followed by valid data: corruption; in the last segment: the prefix
//!   before the damaged record; unchecked bytes: the whole log), and never wrong bytes.
//!
//! One scratch directory is reused: after each reopen, every file that differs from the pristine copy is rewritten.
//! `CSTORE_SWEEP_STRIDE=N` sets the bit-flip stride (default 3; 1 flips at every byte).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use collection_store::Error;
use collection_store::wal::{Durability, Wal, WalOptions};
use common::{Rec, append_group, env_or, group_kind, random_group_len, read_log};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SEGMENT_BYTES: u64 = 4096;
const SEGMENT_HEADER_BYTES: u64 = 64;
const RECORD_HEADER_BYTES: u64 = 32;
const SEED: u64 = 0x5EED_B17E;

fn options() -> WalOptions {
    common::options(SEGMENT_BYTES)
}

/// Where records sit in this test's segments.
impl Rec {
    /// Bytes the record's checksum protects, as `[from, to)` offsets in its segment.
    fn checked_range(&self) -> (u64, u64) {
        let from = self.lsn % SEGMENT_BYTES;
        (from, from + RECORD_HEADER_BYTES + self.payload.len() as u64)
    }
    fn segment(&self) -> u64 {
        self.lsn / SEGMENT_BYTES
    }
}

/// A pristine log: its records and the bytes of every file in its directory (but `LOCK`).
struct Pristine {
    records: Vec<Rec>,
    files: BTreeMap<String, Vec<u8>>,
}

impl Pristine {
    fn build(dir: &Path) -> Self {
        let mut rng = SmallRng::seed_from_u64(SEED);
        let (wal, _) = Wal::open(dir, options()).unwrap();
        let mut records = Vec::new();
        let mut seq = 0u32;
        while wal.next_lsn() < 5 * SEGMENT_BYTES + 1500 {
            let n = random_group_len(&mut rng, 0.7, 3);
            let group: Vec<_> = (0..n)
                .map(|i| {
                    let len = match rng.random_range(0..10) {
                        0 => 0,
                        1..8 => rng.random_range(1..200),
                        _ => rng.random_range(200..1200),
                    };
                    seq += 1;
                    // Never a zero byte: zeroing always changes a payload byte it reaches.
                    let payload = (0..len)
                        .map(|j| ((seq as usize * 131 + j * 7) % 255 + 1) as u8)
                        .collect();
                    (group_kind(i, n), payload)
                })
                .collect();
            records.extend(append_group(&wal, group, Durability::Sync).unwrap());
        }
        drop(wal);
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name != "LOCK" {
                files.insert(name, fs::read(entry.path()).unwrap());
            }
        }
        Self { records, files }
    }

    fn last_segment(&self) -> u64 {
        self.records.last().unwrap().segment()
    }

    fn segment_file(index: u64) -> String {
        format!("{:016x}.seg", index * SEGMENT_BYTES)
    }

    /// Checked byte ranges of segment `index`: its header, its records and the header of its closing PAD.
    fn checked_ranges(&self, index: u64) -> Vec<(u64, u64)> {
        let mut ranges = vec![(0, SEGMENT_HEADER_BYTES)];
        let mine: Vec<&Rec> = self
            .records
            .iter()
            .filter(|r| r.segment() == index)
            .collect();
        ranges.extend(mine.iter().map(|r| r.checked_range()));
        if index < self.last_segment() {
            let end = mine.last().map_or(SEGMENT_HEADER_BYTES, |r| {
                r.end_lsn() - index * SEGMENT_BYTES
            });
            if SEGMENT_BYTES - end >= RECORD_HEADER_BYTES {
                ranges.push((end, end + RECORD_HEADER_BYTES));
            }
        }
        ranges
    }

    /// Makes `work` hold exactly the pristine files again.
    fn restore(&self, work: &Path) {
        for entry in fs::read_dir(work).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name != "LOCK" && !self.files.contains_key(&name) {
                fs::remove_file(entry.path()).unwrap();
            }
        }
        for (name, bytes) in &self.files {
            let path = work.join(name);
            if fs::read(&path).ok().as_ref() != Some(bytes) {
                fs::write(&path, bytes).unwrap();
            }
        }
    }

    /// Records with index below `k` (rounded down to a group boundary).
    fn prefix(&self, k: usize) -> &[Rec] {
        let mut k = k;
        while k > 0 && self.records[k - 1].cont {
            k -= 1;
        }
        &self.records[..k]
    }
}

/// A scratch directory holding a pristine log and a work copy of it: `(scratch, pristine, work)`.
fn pristine_and_work_copy() -> (tempfile::TempDir, Pristine, PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let pristine = Pristine::build(&scratch.path().join("pristine"));
    let work = scratch.path().join("work");
    fs::create_dir(&work).unwrap();
    pristine.restore(&work);
    (scratch, pristine, work)
}

/// Opens `dir` and reads the whole log; iteration errors after a successful open are failures.
fn reopen(dir: &Path) -> Result<Vec<Rec>, Error> {
    let (wal, report) = Wal::open(dir, options())?;
    let records = read_log(&wal);
    assert_eq!(report.records, records.len() as u64);
    Ok(records)
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Prefix(usize),
    Corruption,
}

fn outcome(result: Result<Vec<Rec>, Error>, pristine: &Pristine, what: &str) -> Outcome {
    match result {
        Ok(got) => {
            let k = got.len();
            assert!(
                pristine.prefix(k).len() == k && got[..] == pristine.records[..k],
                "{what}: recovered {k} records that are not a prefix of the log (group-aligned, byte-exact)"
            );
            Outcome::Prefix(k)
        }
        Err(Error::Corruption { .. }) => Outcome::Corruption,
        Err(e) => panic!("{what}: expected a prefix or Error::Corruption, got {e}"),
    }
}

fn set_len(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

/// The prediction for the last segment when its bytes from some point on are damaged: the records before the
/// first damaged one, cut back to a group boundary.
fn expected_for_damage_in_last(pristine: &Pristine, first_damaged: Option<usize>) -> Outcome {
    Outcome::Prefix(
        pristine
            .prefix(first_damaged.unwrap_or(pristine.records.len()))
            .len(),
    )
}

#[test]
fn zeroing_a_segment_from_every_offset_recovers_exactly_the_intact_prefix() {
    let (_scratch, pristine, work) = pristine_and_work_copy();
    assert_eq!(
        outcome(reopen(&work), &pristine, "pristine"),
        Outcome::Prefix(pristine.records.len())
    );
    let last = pristine.last_segment();
    assert!(last >= 4, "the log should span several segments");
    let mut reopens = 0;
    for index in [last, last - 1] {
        let name = Pristine::segment_file(index);
        let path = work.join(&name);
        let original = &pristine.files[&name];
        let used = pristine
            .records
            .iter()
            .filter(|r| r.segment() == index)
            .map(|r| r.end_lsn() - index * SEGMENT_BYTES)
            .max()
            .unwrap();
        let sweep_end = if index == last {
            used + 16
        } else {
            SEGMENT_BYTES
        };
        for offset in 0..sweep_end {
            let zeros = vec![0u8; (SEGMENT_BYTES - offset) as usize];
            write_at(&path, offset, &zeros);
            let changed = original[offset as usize..].iter().any(|&b| b != 0);
            let header_damaged = original
                [offset.min(SEGMENT_HEADER_BYTES) as usize..SEGMENT_HEADER_BYTES as usize]
                .iter()
                .any(|&b| b != 0);
            // The first record that lost a non-zero byte.
            let first_damaged = pristine.records.iter().position(|r| {
                let (from, to) = r.checked_range();
                r.segment() == index
                    && to > offset
                    && original[from.max(offset) as usize..to as usize]
                        .iter()
                        .any(|&b| b != 0)
            });
            let expected = if header_damaged {
                Outcome::Corruption
            } else if index == last {
                expected_for_damage_in_last(&pristine, first_damaged)
            } else if changed {
                Outcome::Corruption
            } else {
                Outcome::Prefix(pristine.records.len())
            };
            let what = format!("segment {index} zeroed from offset {offset}");
            assert_eq!(outcome(reopen(&work), &pristine, &what), expected, "{what}");
            reopens += 1;
            pristine.restore(&work);
        }
    }
    println!("{reopens} reopens");
}

#[test]
fn truncating_a_segment_file_gives_a_typed_error_or_a_prefix() {
    let (_scratch, pristine, work) = pristine_and_work_copy();
    let last = pristine.last_segment();
    let mut reopens = 0;
    for index in [0, last - 1, last, last + 1] {
        let path = work.join(Pristine::segment_file(index));
        if !path.exists() {
            continue;
        }
        for offset in (0..SEGMENT_BYTES)
            .step_by(61)
            .chain([1, 63, 64, SEGMENT_BYTES - 1])
        {
            set_len(&path, offset);
            let what = format!("segment {index} truncated to {offset} bytes");
            // Any length but the segment size is refused; a prefix would also be acceptable.
            let _ = outcome(reopen(&work), &pristine, &what);
            reopens += 1;
            pristine.restore(&work);
        }
    }
    // A truncated meta file, too.
    for len in [0, 1, 32, 63] {
        set_len(&work.join("meta"), len);
        assert_eq!(
            outcome(reopen(&work), &pristine, "short meta"),
            Outcome::Corruption,
            "meta of {len} bytes"
        );
        reopens += 1;
        pristine.restore(&work);
    }
    println!("{reopens} reopens");
}

#[test]
fn a_flipped_bit_anywhere_is_detected_never_returned_as_data() {
    let stride: u64 = env_or("CSTORE_SWEEP_STRIDE", 3);
    let (_scratch, pristine, work) = pristine_and_work_copy();
    let last = pristine.last_segment();
    let mut rng = SmallRng::seed_from_u64(SEED ^ 0xB17);
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, original) in &pristine.files {
        let path = work.join(name);
        let index = name
            .strip_suffix(".seg")
            .map(|hex| u64::from_str_radix(hex, 16).unwrap() / SEGMENT_BYTES);
        let checked = index.map(|i| pristine.checked_ranges(i));
        let phase = rng.random_range(0..stride);
        for offset in (phase..original.len() as u64).step_by(stride as usize) {
            let bit = rng.random_range(0..8);
            write_at(&path, offset, &[original[offset as usize] ^ (1 << bit)]);
            let expected = match (index, &checked) {
                (None, _) => Outcome::Corruption, // meta: every byte is checksummed
                (Some(i), Some(ranges)) => {
                    let in_checked = ranges
                        .iter()
                        .any(|&(from, to)| (from..to).contains(&offset));
                    if !in_checked {
                        Outcome::Prefix(pristine.records.len())
                    } else if offset < SEGMENT_HEADER_BYTES || i < last {
                        Outcome::Corruption
                    } else if i == last {
                        let damaged = pristine.records.iter().position(|r| {
                            let (from, to) = r.checked_range();
                            r.segment() == i && (from..to).contains(&offset)
                        });
                        expected_for_damage_in_last(&pristine, damaged)
                    } else {
                        unreachable!("segments past the end hold only a header")
                    }
                }
                _ => unreachable!(),
            };
            let what = format!("{name}: bit {bit} of byte {offset} flipped");
            let got = outcome(reopen(&work), &pristine, &what);
            assert_eq!(got, expected, "{what}");
            *tally
                .entry(match got {
                    Outcome::Corruption => "corruption",
                    Outcome::Prefix(k) if k == pristine.records.len() => "whole log",
                    Outcome::Prefix(_) => "shorter prefix",
                })
                .or_default() += 1;
            pristine.restore(&work);
        }
    }
    println!("bit flips by outcome: {tally:?}");
    assert!(
        tally.len() == 3,
        "every kind of outcome should occur: {tally:?}"
    );
}
