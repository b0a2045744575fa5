//! Helpers shared by the integration tests (`mod common;` in each test file): settings from the environment, log
//! options, the seed to rerun on failure, records as appended and as read back, self-identifying payloads, and
//! segments laid out byte by byte with the real encoders.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use collection_store::Error;
use collection_store::wal::format::{
    FLAG_GROUP_CONTINUES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader,
    encode_pad_header, encode_record_header, record_span_bytes,
};
use collection_store::wal::{Durability, RecordKind, Wal, WalOptions};
use rand::Rng;

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

/// The environment variable `name` parsed, or `default` when it is unset or does not parse.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Log options with `segment_size_bytes` segments and the smallest staging ring (64 KiB: it wraps constantly).
pub fn options(segment_size_bytes: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes,
        staging_buffer_bytes: 64 << 10,
        ..WalOptions::default()
    }
}

/// Prints `FAILED: ` and what it holds (the seed to rerun with) if the test panics while it is alive.
pub struct SeedGuard(pub String);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("FAILED: {}", self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Records and groups
// ---------------------------------------------------------------------------------------------------------------

/// Every kind of record an appender may write (all but `Pad`).
pub const KINDS: [RecordKind; 5] = [
    RecordKind::Data,
    RecordKind::Commit,
    RecordKind::Prepare,
    RecordKind::Abort,
    RecordKind::Checkpoint,
];

/// The kind of record `i` of a group of `n` as the tests write groups: `Commit` for the last, `Data` before it.
pub fn group_kind(i: usize, n: usize) -> RecordKind {
    if i + 1 == n {
        RecordKind::Commit
    } else {
        RecordKind::Data
    }
}

/// How many records a random group has: one with probability `single`, else 2 to `max`.
pub fn random_group_len(rng: &mut impl Rng, single: f64, max: usize) -> usize {
    if rng.random_bool(single) {
        1
    } else {
        rng.random_range(2..=max)
    }
}

/// The largest payload each of `n` records may have so that a group of them fits in `max_group_bytes`.
pub fn max_payload_in_group(max_group_bytes: u64, n: usize) -> usize {
    ((max_group_bytes as usize / n) & !7) - RECORD_HEADER_BYTES as usize
}

/// A record as appended (and acknowledged) or as read back from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub lsn: u64,
    pub kind: RecordKind,
    /// Whether the group continues after this record.
    pub cont: bool,
    pub payload: Vec<u8>,
}

impl Rec {
    pub fn end_lsn(&self) -> u64 {
        self.lsn + record_span_bytes(self.payload.len() as u64)
    }
}

/// Appends `group` as one group and returns its records at their LSNs (checked to end where the group ends).
pub fn append_group(
    wal: &Wal,
    group: Vec<(RecordKind, Vec<u8>)>,
    durability: Durability,
) -> Result<Vec<Rec>, Error> {
    let refs: Vec<(RecordKind, &[u8])> = group.iter().map(|(k, p)| (*k, &p[..])).collect();
    let g = wal.append_group(&refs, durability)?;
    let n = group.len();
    let mut lsn = g.first_lsn;
    let records: Vec<Rec> = group
        .into_iter()
        .enumerate()
        .map(|(i, (kind, payload))| {
            let rec = Rec {
                lsn,
                kind,
                cont: i + 1 < n,
                payload,
            };
            lsn = rec.end_lsn();
            rec
        })
        .collect();
    assert_eq!(lsn, g.end_lsn, "group span");
    Ok(records)
}

/// The whole log, from its start; an iteration error fails the test.
pub fn read_log(wal: &Wal) -> Vec<Rec> {
    wal.iter_from(wal.start_lsn())
        .unwrap()
        .map(|r| {
            let r = r.expect("a log that opened must iterate without error");
            Rec {
                lsn: r.lsn(),
                kind: r.kind(),
                cont: r.group_continues(),
                payload: r.payload().to_vec(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Self-identifying payloads
// ---------------------------------------------------------------------------------------------------------------

/// Bytes of the header that starts every [`encode`]d payload (the shortest such payload).
pub const PAYLOAD_HEADER_BYTES: usize = 16;

/// Who wrote a record: process `epoch`, `writer` thread, its `seq`-th record, position `index` of `len` in its
/// group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id {
    pub epoch: u32,
    pub writer: u8,
    pub seq: u32,
    pub index: u8,
    pub len: u8,
}

impl Id {
    /// Record `i` of a group of `n` that `writer` of process `epoch` begins with its `first_seq`-th record.
    pub fn in_group(epoch: u32, writer: u8, first_seq: u32, i: usize, n: usize) -> Self {
        Self {
            epoch,
            writer,
            seq: first_seq + i as u32,
            index: i as u8,
            len: n as u8,
        }
    }
}

/// A payload of `total_len` bytes that names its writer and is checkable byte by byte: a header with the id and
/// the length, then pseudo-random bytes seeded by the id.
pub fn encode(id: Id, total_len: usize) -> Vec<u8> {
    assert!(total_len >= PAYLOAD_HEADER_BYTES);
    let mut p = Vec::with_capacity(total_len);
    p.extend_from_slice(&id.epoch.to_le_bytes());
    p.extend_from_slice(&id.seq.to_le_bytes());
    p.extend_from_slice(&[id.writer, id.index, id.len, 0xA5]);
    p.extend_from_slice(&(total_len as u32).to_le_bytes());
    let mut x =
        ((u64::from(id.epoch) << 40) ^ (u64::from(id.seq) << 8) ^ u64::from(id.writer)) | (1 << 63);
    p.extend((PAYLOAD_HEADER_BYTES..total_len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    p
}

/// The id of a payload made by [`encode`], if every byte is exactly as it made it.
pub fn decode(p: &[u8]) -> Option<Id> {
    let h = p.get(..PAYLOAD_HEADER_BYTES)?;
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap());
    let id = Id {
        epoch: u32_at(0),
        seq: u32_at(4),
        writer: h[8],
        index: h[9],
        len: h[10],
    };
    (h[11] == 0xA5 && u32_at(12) as usize == p.len() && encode(id, p.len()) == p).then_some(id)
}

// ---------------------------------------------------------------------------------------------------------------
// Segments laid out by hand, as the log lays them out
// ---------------------------------------------------------------------------------------------------------------

/// A zeroed `size`-byte segment with its header.
pub fn new_segment(size: u64, base: u64, salt: u64) -> Vec<u8> {
    let mut seg = vec![0u8; size as usize];
    seg[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(
        &SegmentHeader {
            salt,
            base_lsn: base,
            segment_size_bytes: size,
        }
        .encode(),
    );
    seg
}

/// Writes a record at `offset` of `buf` (which must have room), in a segment with base LSN `base`; returns its
/// span.
pub fn put_record(
    buf: &mut [u8],
    offset: u64,
    base: u64,
    salt: u64,
    kind: RecordKind,
    flags: u8,
    payload: &[u8],
) -> u64 {
    let header = encode_record_header(base + offset, salt, kind, flags, payload);
    let at = offset as usize;
    buf[at..at + 32].copy_from_slice(&header);
    buf[at + 32..at + 32 + payload.len()].copy_from_slice(payload);
    record_span_bytes(payload.len() as u64)
}

/// Bytes a group takes in a segment.
pub fn group_span(group: &[(RecordKind, Vec<u8>)]) -> u64 {
    group
        .iter()
        .map(|(_, p)| record_span_bytes(p.len() as u64))
        .sum()
}

/// Writes `group` from `offset` of `seg`, every record but the last flagged `FLAG_GROUP_CONTINUES`; returns the
/// `(offset, payload length)` of each record and where the group ends.
pub fn put_group(
    seg: &mut [u8],
    offset: u64,
    base: u64,
    salt: u64,
    group: &[(RecordKind, Vec<u8>)],
) -> (Vec<(u64, usize)>, u64) {
    let mut at = offset;
    let mut records = Vec::with_capacity(group.len());
    for (i, (kind, payload)) in group.iter().enumerate() {
        let flags = if i + 1 < group.len() {
            FLAG_GROUP_CONTINUES
        } else {
            0
        };
        records.push((at, payload.len()));
        at += put_record(seg, at, base, salt, *kind, flags, payload);
    }
    (records, at)
}

/// Seals `seg` with a PAD from `offset` to its end, when a record header fits there.
pub fn seal_segment(seg: &mut [u8], offset: u64, base: u64, salt: u64) {
    let size = seg.len() as u64;
    if size - offset >= RECORD_HEADER_BYTES {
        let at = offset as usize;
        seg[at..at + 32].copy_from_slice(&encode_pad_header(base + offset, salt, size - offset));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// kill -9: a child process (the test binary re-executed into one test) killed at a random moment
// ---------------------------------------------------------------------------------------------------------------

/// How a kill -9 test re-executes itself as a child: the child test's name, the environment variables that hand it
/// its directory, acknowledgement file, epoch and seed, what it opens (for messages), and the bounds of the random
/// wait before the kill, in µs: `early_us` when killed whenever, `late_us` once it has opened what it opens.
pub struct Kill9 {
    pub child_test: &'static str,
    pub env_dir: &'static str,
    pub env_acks: &'static str,
    pub env_epoch: &'static str,
    pub env_seed: &'static str,
    pub what: &'static str,
    pub early_us: u64,
    pub late_us: u64,
}

/// Kills the child if the parent fails while it runs.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Complete lines of the acknowledgement file (a torn last line is dropped).
pub fn ack_lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}

/// What one killed child left: its acknowledgements, parsed, and whether it got to open.
pub struct Killed<A> {
    pub acks: Vec<A>,
    pub opened: bool,
}

impl Kill9 {
    pub fn spawn_child(
        &self,
        dir: &Path,
        acks: &Path,
        stderr: &Path,
        epoch: u32,
        seed: u64,
    ) -> ChildGuard {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                self.child_test,
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(self.env_dir, dir)
            .env(self.env_acks, acks)
            .env(self.env_epoch, epoch.to_string())
            .env(self.env_seed, seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        ChildGuard(child)
    }

    /// Waits until the child acknowledges `open`; panics if it exits first or takes two minutes.
    pub fn wait_for_open(&self, child: &mut ChildGuard, acks: &Path, stderr: &Path) {
        let started = Instant::now();
        while !ack_lines(acks).iter().any(|l| l == "open") {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!(
                    "child exited ({status}) before opening the {}: {}",
                    self.what,
                    fs::read_to_string(stderr).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child never opened the {}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs child `epoch` on `dir` (files named after `iteration` in `scratch`) and kills it with SIGKILL at a
    /// random moment: one time in five whenever, else after it opened (then `once_open` runs, e.g. a lock check).
    /// Asserts it was killed, not ended on its own, and that every acknowledgement line parses.
    #[allow(clippy::too_many_arguments)]
    pub fn run_and_kill<A>(
        &self,
        rng: &mut impl Rng,
        scratch: &Path,
        dir: &Path,
        iteration: usize,
        epoch: u32,
        seed: u64,
        context: &str,
        once_open: impl FnOnce(),
        parse_ack: impl Fn(&str) -> Option<A>,
    ) -> Killed<A> {
        let acks_path = scratch.join(format!("acks-{iteration}"));
        let stderr_path = scratch.join(format!("stderr-{iteration}"));
        let mut child = self.spawn_child(dir, &acks_path, &stderr_path, epoch, seed);
        if rng.random_bool(0.2) {
            // Kill it whenever: maybe before it opened, maybe in the middle of recovery.
            std::thread::sleep(Duration::from_micros(rng.random_range(0..self.early_us)));
        } else {
            self.wait_for_open(&mut child, &acks_path, &stderr_path);
            once_open();
            std::thread::sleep(Duration::from_micros(rng.random_range(0..self.late_us)));
        }
        child.0.kill().unwrap(); // SIGKILL
        let status = child.0.wait().unwrap();
        assert!(
            status.code().is_none(),
            "{context}: child ended on its own ({status}): {}",
            fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        let lines = ack_lines(&acks_path);
        let acks: Vec<A> = lines.iter().filter_map(|l| parse_ack(l)).collect();
        assert_eq!(
            acks.len() + usize::from(!lines.is_empty()),
            lines.len(),
            "{context}: unparsable ack line"
        );
        Killed {
            acks,
            opened: lines.iter().any(|l| l == "open"),
        }
    }
}

/// The committed seed corpus of fuzz target `target` (`fuzz/corpus/<target>`).
pub fn fuzz_corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every seed of fuzz target `target`: (file name, bytes), sorted by name.
pub fn fuzz_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(fuzz_corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Replaces the committed seed corpus of fuzz target `target` with `seeds` (file name, bytes).
pub fn write_fuzz_corpus(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = fuzz_corpus_dir(target);
    fs::create_dir_all(&dir).unwrap();
    for entry in fs::read_dir(&dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (name, data) in seeds {
        fs::write(dir.join(name), data).unwrap();
    }
}
