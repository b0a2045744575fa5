//! Replays the committed seed corpus of the `snapshot_open` fuzzer (`fuzz/corpus/snapshot_open/`) through
//! `checkpoint::fuzz_open` and directly through `open_snapshot` and `open_manifest` in plain `cargo test`, without
//! libFuzzer, and holds the generator of that corpus.
//!
//! Each seed is a whole checkpoint file; `fuzz_open` (and the replay) take the salt from bytes 16..24 of the input,
//! so the header's salt always matches. Seed names say what a seed is:
//! - `snap-*`: a snapshot written by `encode_snapshot`, unmodified. Must open as a snapshot (and not as a manifest).
//! - `mani-*`: a manifest written by `encode_manifest`, unmodified. Must open as a manifest (and not as a snapshot).
//! - `bad-*`: damaged so that both decoders must reject it: truncations, single-bit flips in the header or in the
//!   archive with the checksums left as they were, a wrong format version or magic (header CRC recomputed), and
//!   fields that disagree, with the CRCs recomputed (ids that do not ascend, a document length that does not match
//!   its blocks, header and archive sequence numbers that differ, a wrong archive length or root position, a
//!   manifest in a snapshot's header and the reverse).
//! - `recrc-*`: one bit flipped in the archive, then the archive's CRC and the header's CRC recomputed, so the input
//!   gets past the checksums into bytecheck and the decoders' own checks. It may open or not, but must not be
//!   rejected by a checksum (after a format change these fail: regenerate).
//!
//! The replay also requires at least 5 valid snapshots, 3 valid manifests and 15 rejected files, so it cannot pass
//! on an empty or stale corpus.
//!
//! Regenerate the seeds (rewrites every file of the directory; salts and contents are fixed, so an unchanged
//! format gives identical bytes):
//! `cargo test --test fuzz_snapshot_corpus -- --ignored --exact regenerate_seed_corpus`

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use collection_store::checkpoint::{
    HEADER_BYTES, IndexSnapshot, Manifest, ManifestCollection, SnapshotContents, encode_manifest,
    encode_snapshot, fuzz_open, open_manifest, open_snapshot,
};
use collection_store::error::{Error, Result};
use rkyv::util::AlignedVec;

/// Largest seed the generator may write: small seeds keep the fuzzer fast.
const MAX_SEED_BYTES: usize = 8 * 1024;

/// Every seed: (file name, bytes), sorted by name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    common::fuzz_corpus("snapshot_open")
}

/// The salt `fuzz_open` uses for `data`: bytes 16..24 when present, else 0.
fn salt_of(data: &[u8]) -> u64 {
    data.get(16..24)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

/// `data` copied to a 16-byte-aligned buffer, as the decoders require.
fn aligned(data: &[u8]) -> AlignedVec {
    let mut out = AlignedVec::with_capacity(data.len());
    out.extend_from_slice(data);
    out
}

/// What both decoders make of one file (aligned copy, salt from the file).
fn open_both(data: &[u8]) -> (Result<SnapshotContents>, Result<Manifest>) {
    let bytes = aligned(data);
    let salt = salt_of(data);
    (
        open_snapshot("seed", salt, &bytes),
        open_manifest("seed", salt, &bytes),
    )
}

/// Whether `result` is a rejection by one of the container's checksums.
fn is_checksum_error<T>(result: &Result<T>) -> bool {
    matches!(result, Err(Error::Corruption { reason, .. }) if reason.contains("checksum"))
}

#[test]
fn seed_corpus_replays_without_panic() {
    let files = corpus();
    assert!(
        files.len() >= 30,
        "seed corpus has only {} files",
        files.len()
    );
    let (mut snapshots, mut manifests, mut rejected) = (0, 0, 0);
    for (name, data) in &files {
        if catch_unwind(|| fuzz_open(data)).is_err() {
            panic!("{name}: fuzz_open panicked");
        }
        let (snapshot, manifest) = catch_unwind(AssertUnwindSafe(|| open_both(data)))
            .unwrap_or_else(|_| panic!("{name}: a decoder panicked"));
        if let Ok(contents) = &snapshot {
            for &(id, offset, len) in &contents.docs {
                assert!(
                    offset >= HEADER_BYTES
                        && offset.is_multiple_of(16)
                        && offset + len <= data.len(),
                    "{name}: document {id} at {offset}+{len} is misplaced in {} bytes",
                    data.len()
                );
            }
        }
        match (&snapshot, &manifest) {
            (Ok(_), Ok(_)) => panic!("{name}: opens both as a snapshot and as a manifest"),
            (Ok(_), Err(_)) => snapshots += 1,
            (Err(_), Ok(_)) => manifests += 1,
            (Err(_), Err(_)) => rejected += 1,
        }
        if name.starts_with("snap-") {
            assert!(
                snapshot.is_ok(),
                "{name}: a valid snapshot does not open: {snapshot:?}"
            );
        } else if name.starts_with("mani-") {
            assert!(
                manifest.is_ok(),
                "{name}: a valid manifest does not open: {manifest:?}"
            );
        } else if name.starts_with("bad-") {
            assert!(
                snapshot.is_err() && manifest.is_err(),
                "{name}: a damaged file opens: {snapshot:?} {manifest:?}"
            );
        } else if name.starts_with("recrc-") {
            assert!(
                !is_checksum_error(&snapshot) && !is_checksum_error(&manifest),
                "{name}: stopped at a checksum although both CRCs were recomputed: {snapshot:?} {manifest:?}"
            );
        } else {
            panic!("{name}: unknown seed kind (snap-, mani-, bad- or recrc-)");
        }
    }
    assert!(snapshots >= 5, "only {snapshots} seeds open as snapshots");
    assert!(manifests >= 3, "only {manifests} seeds open as manifests");
    assert!(rejected >= 15, "only {rejected} seeds are rejected");
}

// ---------------------------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------------------------

/// Fixed salts: the corpus is the same on every regeneration.
const SALT_A: u64 = 0x5EED_C4EC_0000_00A1;
const SALT_B: u64 = 0x5EED_C4EC_0000_00B2;
const SALT_C: u64 = 0x0123_4567_89AB_CDEF;

/// Bytes of an archived `SnapshotDoc` (`id: u64, len: u32, blocks: ArchivedVec`, padded to 8).
const DOC_ENTRY_BYTES: usize = 24;
/// Bytes of an archived `ManifestCollection` (`name`, two `Option<String>`, `docs: u64`).
const COLLECTION_ENTRY_BYTES: usize = 40;

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7 + 1) as u8).collect()
}

fn snapshot(salt: u64, seq: u64, name: &str, next_id: u64, docs: &[(u64, usize)]) -> Vec<u8> {
    indexed_snapshot(salt, seq, name, next_id, docs, Vec::new())
}

fn indexed_snapshot(
    salt: u64,
    seq: u64,
    name: &str,
    next_id: u64,
    docs: &[(u64, usize)],
    indexes: Vec<IndexSnapshot>,
) -> Vec<u8> {
    let bodies: Vec<(u64, Vec<u8>)> = docs
        .iter()
        .enumerate()
        .map(|(i, &(id, len))| (id, payload(i, len)))
        .collect();
    encode_snapshot(
        salt,
        seq,
        name,
        next_id,
        bodies.iter().map(|(id, b)| (*id, b.as_slice())),
        indexes,
    )
    .to_vec()
}

fn collection(
    name: &str,
    declared_type: Option<&str>,
    file: Option<&str>,
    docs: u64,
) -> ManifestCollection {
    ManifestCollection {
        name: name.into(),
        declared_type: declared_type.map(Into::into),
        file: file.map(Into::into),
        docs,
    }
}

fn u32_at(file: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(file[at..at + 4].try_into().unwrap())
}

fn u64_at(file: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(file[at..at + 8].try_into().unwrap())
}

/// File offset of the archive's root object (header bytes 48..56 are its position in the archive).
fn root(file: &[u8]) -> usize {
    HEADER_BYTES + u64_at(file, 48) as usize
}

/// File offset a relative pointer at `at` points to (rkyv: `i32` offset from the pointer itself).
fn target(file: &[u8], at: usize) -> usize {
    let rel = i32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    at.checked_add_signed(rel as isize).unwrap()
}

/// File offset of the archived entry of snapshot document `index`, checked against its expected id and length
/// (so a layout change makes the generator fail here rather than write meaningless seeds).
fn doc_entry(file: &[u8], index: usize, id: u64, len: usize) -> usize {
    let at = target(file, root(file) + 16) + index * DOC_ENTRY_BYTES;
    assert_eq!(
        (u64_at(file, at), u32_at(file, at + 8) as usize),
        (id, len),
        "document {index}: the archive layout changed, update the generator"
    );
    at
}

/// File offset of the archived entry of manifest collection `index`, checked against its `docs`.
fn collection_entry(file: &[u8], index: usize, docs: u64) -> usize {
    let at = target(file, root(file) + 16) + index * COLLECTION_ENTRY_BYTES;
    assert_eq!(
        u64_at(file, at + 32),
        docs,
        "collection {index}: the archive layout changed, update the generator"
    );
    at
}

fn flip(file: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut out = file.to_vec();
    out[at] ^= 1 << bit;
    out
}

/// Recomputes the header CRC (bytes 12..16: CRC32 of the 64 header bytes with that field zeroed).
fn reseal_header(mut file: Vec<u8>) -> Vec<u8> {
    file[12..16].fill(0);
    let crc = crc32fast::hash(&file[..HEADER_BYTES]);
    file[12..16].copy_from_slice(&crc.to_le_bytes());
    file
}

/// Recomputes the archive's CRC (bytes 40..44), then the header's: the file passes both checksums.
fn reseal(mut file: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&file[HEADER_BYTES..]);
    file[40..44].copy_from_slice(&crc.to_le_bytes());
    reseal_header(file)
}

/// `file` with the little-endian field at `at` replaced by `value`'s bytes.
fn patch(file: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    out[at..at + value.len()].copy_from_slice(value);
    out
}

/// Every seed, in generation order: (file name, bytes).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, data: Vec<u8>| seeds.push((name.to_owned(), data));

    // --- valid snapshots ----------------------------------------------------------------------------------------
    let lengths_docs: Vec<(u64, usize)> = [0, 1, 15, 16, 17, 31, 32, 33, 48]
        .into_iter()
        .enumerate()
        .map(|(i, len)| (i as u64 + 1, len))
        .collect();
    let lengths = snapshot(SALT_A, 12, "lengths", 10, &lengths_docs);
    let long_name_docs = [(7, 5), (1000, 0), (u64::MAX - 1, 40)];
    let long_name = snapshot(
        SALT_B,
        u64::MAX,
        "a-collection-with-a-long-name",
        u64::MAX,
        &long_name_docs,
    );
    add("snap-empty", snapshot(SALT_A, 0, "empty", 1, &[]));
    add("snap-empty-name", snapshot(SALT_C, 1, "", 0, &[]));
    add("snap-one-doc", snapshot(SALT_A, 3, "users", 2, &[(1, 10)]));
    add("snap-lengths", lengths.clone());
    add(
        "snap-large-docs",
        snapshot(SALT_B, 40, "blobs", 4, &[(1, 200), (2, 333), (3, 512)]),
    );
    add("snap-long-name", long_name.clone());
    add(
        "snap-name-8-bytes",
        snapshot(SALT_C, 5, "eightchr", 17, &[(16, 16)]),
    );
    add(
        "snap-utf8-name",
        snapshot(SALT_C, 6, "ünïcödé-名前", 3, &[(2, 17)]),
    );
    let many: Vec<(u64, usize)> = (0..40)
        .map(|i| (2 * i + 1, (i as usize * 7) % 50))
        .collect();
    add("snap-many-docs", snapshot(SALT_A, 99, "many", 81, &many));
    let indexed = indexed_snapshot(
        SALT_B,
        21,
        "indexed",
        8,
        &[(1, 3), (4, 20), (7, 0)],
        vec![
            IndexSnapshot {
                name: "by-length".into(),
                unique: false,
                entries: vec![
                    (vec![0, 0, 0, 0], 7),
                    (vec![0, 0, 0, 3], 1),
                    (vec![0, 0, 0, 20], 4),
                ],
            },
            IndexSnapshot {
                name: "code".into(),
                unique: true,
                entries: vec![(b"a\0\0".to_vec(), 4), (b"b\0\0".to_vec(), 1)],
            },
            IndexSnapshot {
                name: "nothing".into(),
                unique: false,
                entries: vec![],
            },
        ],
    );
    add("snap-indexed", indexed.clone());

    // --- valid manifests ----------------------------------------------------------------------------------------
    let several_collections = vec![
        collection("users", Some("User"), Some("snapshots/c0-77.snap"), 3),
        collection("empty", None, None, 0),
        collection(
            "a-collection-with-a-long-name",
            Some("an::Unusually::LongTypeName"),
            None,
            0,
        ),
        collection("orders", None, Some("snapshots/c3-77.snap"), 1_000_000),
    ];
    let several = encode_manifest(
        SALT_B,
        &Manifest {
            seq: 77,
            cut_lsn: 123_456,
            collections: several_collections,
            committed_2pc: vec![1, 2, 3, u64::MAX],
        },
    )
    .to_vec();
    add(
        "mani-empty",
        encode_manifest(SALT_A, &Manifest::default()).to_vec(),
    );
    add(
        "mani-one",
        encode_manifest(
            SALT_A,
            &Manifest {
                seq: 9,
                cut_lsn: 4096,
                collections: vec![collection(
                    "users",
                    Some("User"),
                    Some("snapshots/c0-9.snap"),
                    3,
                )],
                committed_2pc: vec![5, 6],
            },
        )
        .to_vec(),
    );
    add("mani-several", several.clone());
    add(
        "mani-no-2pc",
        encode_manifest(
            SALT_C,
            &Manifest {
                seq: 5,
                cut_lsn: 64,
                collections: vec![
                    collection("a", None, Some("snapshots/c0-5.snap"), 1),
                    collection("b", Some("B"), None, 0),
                    collection("c", Some("C"), Some("snapshots/c2-5.snap"), 2),
                ],
                committed_2pc: vec![],
            },
        )
        .to_vec(),
    );
    add(
        "mani-2pc-only",
        encode_manifest(
            SALT_C,
            &Manifest {
                seq: 1 << 40,
                cut_lsn: 1 << 41,
                collections: vec![],
                committed_2pc: (0..20).map(|i| i * 1_000 + 7).collect(),
            },
        )
        .to_vec(),
    );

    // --- truncated ----------------------------------------------------------------------------------------------
    for len in [0, 23, 63, 64, lengths.len() / 2, lengths.len() - 1] {
        add(&format!("bad-trunc-snap-{len}"), lengths[..len].to_vec());
    }
    for len in [40, several.len() - 8] {
        add(&format!("bad-trunc-mani-{len}"), several[..len].to_vec());
    }

    // --- single bit flips, checksums left stale ------------------------------------------------------------------
    for (name, at, bit) in [
        ("magic", 3, 0),
        ("version", 8, 1),
        ("header-crc", 13, 2),
        ("salt", 17, 3),
        ("seq", 24, 0),
        ("root-pos", 48, 3),
    ] {
        add(&format!("bad-flip-header-{name}"), flip(&lengths, at, bit));
    }
    add(
        "bad-flip-archive-doc-bytes",
        flip(&lengths, HEADER_BYTES + 20, 6),
    );
    add(
        "bad-flip-archive-root",
        flip(&lengths, root(&lengths) + 1, 2),
    );

    // --- wrong version or magic (header CRC recomputed) ----------------------------------------------------------
    add(
        "bad-version-1",
        reseal_header(patch(&lengths, 8, &1u32.to_le_bytes())),
    );
    add(
        "bad-version-3",
        reseal_header(patch(&lengths, 8, &3u32.to_le_bytes())),
    );
    add(
        "bad-version-0",
        reseal_header(patch(&several, 8, &0u32.to_le_bytes())),
    );
    add(
        "bad-magic",
        reseal_header(patch(&lengths, 0, b"cstsnap\x02")),
    );
    // Right magic of the other kind: the roots differ in size, the root position check rejects both.
    add(
        "bad-manifest-as-snapshot",
        reseal_header(patch(&several, 0, b"cstsnap\x01")),
    );
    add(
        "bad-snapshot-as-manifest",
        reseal_header(patch(&lengths, 0, b"cstmani\x01")),
    );

    // --- fields that disagree, both CRCs recomputed ---------------------------------------------------------------
    let (second, third) = (doc_entry(&lengths, 1, 2, 1), doc_entry(&lengths, 2, 3, 15));
    let swapped = patch(&lengths, second, &3u64.to_le_bytes());
    add(
        "bad-ids-descend",
        reseal(patch(&swapped, third, &2u64.to_le_bytes())),
    );
    // 15 + 16 bytes announced, one block present.
    add(
        "bad-doc-len",
        reseal(patch(&lengths, third + 8, &31u32.to_le_bytes())),
    );
    add(
        "bad-seq-header",
        reseal_header(patch(&several, 24, &78u64.to_le_bytes())),
    );
    add(
        "bad-seq-archive",
        reseal(patch(&several, root(&several), &76u64.to_le_bytes())),
    );
    let archive_len = u64_at(&lengths, 32);
    add(
        "bad-archive-len",
        reseal_header(patch(&lengths, 32, &(archive_len + 16).to_le_bytes())),
    );
    let root_pos = u64_at(&lengths, 48);
    add(
        "bad-root-pos",
        reseal_header(patch(&lengths, 48, &(root_pos - 8).to_le_bytes())),
    );
    // Sixteen bytes after the root, with the length updated: the root is no longer at the end.
    let mut trailing = lengths.clone();
    trailing.extend_from_slice(&[0; 16]);
    let trailing = patch(&trailing, 32, &(archive_len + 16).to_le_bytes());
    add("bad-trailing-bytes", reseal(trailing));

    // --- one bit flipped in the archive, both CRCs recomputed: into bytecheck -------------------------------------
    let r = root(&lengths);
    let (first, last) = (doc_entry(&lengths, 0, 1, 0), doc_entry(&lengths, 8, 9, 48));
    for (name, at, bit) in [
        ("snap-name", r, 7),
        ("snap-next-id", r + 8, 0),
        ("snap-docs-ptr-bit0", r + 16, 0),
        ("snap-docs-ptr-bit4", r + 16, 4),
        ("snap-docs-len", r + 20, 0),
        ("snap-empty-doc-blocks-len", first + 16, 0),
        ("snap-doc-blocks-ptr-bit4", second + 12, 4),
        ("snap-doc-blocks-ptr-bit2", third + 12, 2),
        // 9 becomes 8, the id before it.
        ("snap-last-id", last, 0),
    ] {
        add(&format!("recrc-{name}"), reseal(flip(&lengths, at, bit)));
    }
    let r = root(&indexed);
    for (name, at, bit) in [
        ("snap-indexes-ptr", r + 24, 3),
        ("snap-indexes-len", r + 28, 1),
    ] {
        add(&format!("recrc-{name}"), reseal(flip(&indexed, at, bit)));
    }
    let r = root(&long_name);
    add("recrc-snap-long-name-len", reseal(flip(&long_name, r, 1)));
    add(
        "recrc-snap-long-name-ptr",
        reseal(flip(&long_name, r + 4, 3)),
    );
    let r = root(&several);
    let users = collection_entry(&several, 0, 3);
    let orders = collection_entry(&several, 3, 1_000_000);
    for (name, at, bit) in [
        ("mani-cut-lsn", r + 8, 0),
        ("mani-collections-len", r + 20, 0),
        ("mani-2pc-ptr", r + 24, 3),
        ("mani-2pc-len", r + 28, 2),
        ("mani-name", users, 7),
        ("mani-type-tag", users + 8, 1),
        ("mani-file-tag", orders + 20, 0),
    ] {
        add(&format!("recrc-{name}"), reseal(flip(&several, at, bit)));
    }

    seeds
}

#[test]
#[ignore = "rewrites fuzz/corpus/snapshot_open; run by hand after a format change"]
fn regenerate_seed_corpus() {
    let seeds = seeds();
    let mut names: Vec<&str> = seeds.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), seeds.len(), "seed names are not unique");
    for (name, data) in &seeds {
        assert!(
            data.len() <= MAX_SEED_BYTES,
            "{name}: {} bytes, more than {MAX_SEED_BYTES}",
            data.len()
        );
    }
    common::write_fuzz_corpus("snapshot_open", &seeds);
    // Whatever was generated must pass the replay.
    seed_corpus_replays_without_panic();
}
