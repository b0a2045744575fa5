//! Checkpoint files: collection snapshots (rkyv archives, read in place) and the manifest that names them.
//!
//! This layer knows nothing of collections: a snapshot is a name, a sequence number, a next id, documents as
//! `(id, bytes)` in id order, and indexes as a name, a uniqueness flag and entries `(key bytes, id)` in the order
//! the collection keeps them (checked by the collection layer when it opens them); the manifest lists snapshots and what the database needs to reopen from them. Both
//! files share one container: a 64-byte header (magic, format version, header CRC, the database's salt, the
//! sequence number, the archive's length, CRC and root position) followed by the rkyv archive at offset 64 (16-byte
//! aligned in the file, and in memory since files are mapped at page boundaries). Every byte is checked before use:
//! the header's CRC, the archive's CRC, the root position, then bytecheck over the archive.
//!
//! Every document's bytes sit 16-byte aligned in the file (blocks of 16 bytes), so a document can be read in place
//! as an rkyv archive of its own.

pub mod files;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the checkpoint file formats this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of the container header; the archive starts here.
pub const HEADER_BYTES: usize = 64;
/// Magic of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"cstsnap\x01";
/// Magic of a manifest file.
pub const MANIFEST_MAGIC: [u8; 8] = *b"cstmani\x01";

/// Sixteen bytes, 16-byte aligned in the archive.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(attr(repr(align(16))))]
struct Block([u8; 16]);

#[derive(Archive, Serialize, Deserialize, Debug)]
struct SnapshotDoc {
    id: u64,
    len: u32,
    blocks: Vec<Block>,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct SnapshotEntry {
    key: Vec<u8>,
    id: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct SnapshotIndex {
    name: String,
    unique: bool,
    entries: Vec<SnapshotEntry>,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct SnapshotBody {
    name: String,
    next_id: u64,
    docs: Vec<SnapshotDoc>,
    indexes: Vec<SnapshotIndex>,
}

/// One index of a collection, as a snapshot stores it: its entries in the collection's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSnapshot {
    /// The index's name.
    pub name: String,
    /// Whether it is unique.
    pub unique: bool,
    /// `(encoded key, id of the document)` per entry.
    pub entries: Vec<(Vec<u8>, u64)>,
}

/// A validated snapshot's index: where each entry's key is in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexContents {
    /// The index's name.
    pub name: String,
    /// Whether it is unique.
    pub unique: bool,
    /// `(offset of the key in the file, its length, id of the document)` per entry, in the stored order.
    pub entries: Vec<(usize, usize, u64)>,
}

/// One collection as the manifest describes it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ManifestCollection {
    /// The collection's name.
    pub name: String,
    /// The document type the log declared for it, if any.
    pub declared_type: Option<String>,
    /// Its snapshot file (relative to the data directory), if it has documents or ids in use.
    pub file: Option<String>,
    /// Number of documents in the snapshot.
    pub docs: u64,
}

/// What a database reopens from: the cut, its collections, and what it must remember of the log before the cut.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Sequence number of the last commit the snapshots contain.
    pub seq: u64,
    /// Log position just past that commit: replay starts here.
    pub cut_lsn: u64,
    /// Every collection known at the cut.
    pub collections: Vec<ManifestCollection>,
    /// Two-phase transactions this database coordinated and committed before the cut (participants may still ask).
    pub committed_2pc: Vec<u64>,
}

/// A validated snapshot: where each document's bytes are in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotContents {
    /// The collection's name.
    pub name: String,
    /// Sequence number of the cut.
    pub seq: u64,
    /// The collection's next auto-increment id at the cut.
    pub next_id: u64,
    /// `(id, offset in the file, length)` per document, in id order; every offset is a multiple of 16.
    pub docs: Vec<(u64, usize, usize)>,
    /// The collection's indexes (none if it was not bound to a type when the snapshot was written).
    pub indexes: Vec<IndexContents>,
}

/// The header fields of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    magic: [u8; 8],
    salt: u64,
    seq: u64,
    archive_len: u64,
    archive_crc: u32,
    root_pos: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&self.magic);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.salt.to_le_bytes());
        out[24..32].copy_from_slice(&self.seq.to_le_bytes());
        out[32..40].copy_from_slice(&self.archive_len.to_le_bytes());
        out[40..44].copy_from_slice(&self.archive_crc.to_le_bytes());
        out[48..56].copy_from_slice(&self.root_pos.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn corrupt(file: &str, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        file: file.into(),
        offset,
        reason: reason.into(),
    }
}

/// Puts `archive` (whose root object is `root_len` bytes at its end) in a container.
fn contain(magic: [u8; 8], salt: u64, seq: u64, archive: &[u8], root_len: usize) -> AlignedVec {
    let header = Header {
        magic,
        salt,
        seq,
        archive_len: archive.len() as u64,
        archive_crc: crc32fast::hash(archive),
        root_pos: (archive.len() - root_len) as u64,
    };
    let mut out = AlignedVec::with_capacity(HEADER_BYTES + archive.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(archive);
    out
}

/// Checks a container's header and archive checksums; returns the header and the archive (16-byte aligned).
fn open_container<'a>(
    file: &str,
    magic: [u8; 8],
    salt: u64,
    bytes: &'a [u8],
    root_len: usize,
) -> Result<(Header, &'a [u8])> {
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(
            file,
            0,
            format!("{} bytes: shorter than its header", bytes.len()),
        ));
    }
    let head = &bytes[..HEADER_BYTES];
    if head[0..8] != magic {
        return Err(corrupt(
            file,
            0,
            "not a collection-store checkpoint file of this kind (bad magic)",
        ));
    }
    let mut zeroed = [0u8; HEADER_BYTES];
    zeroed.copy_from_slice(head);
    zeroed[12..16].fill(0);
    if crc32fast::hash(&zeroed) != le_u32(head, 12) {
        return Err(corrupt(file, 0, "header checksum mismatch"));
    }
    if head[44..48].iter().chain(&head[56..64]).any(|&b| b != 0) {
        return Err(corrupt(file, 44, "reserved header bytes are not zero"));
    }
    let version = le_u32(head, 8);
    if version != FORMAT_VERSION {
        return Err(Error::FormatVersion {
            file: file.into(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let header = Header {
        magic,
        salt: le_u64(head, 16),
        seq: le_u64(head, 24),
        archive_len: le_u64(head, 32),
        archive_crc: le_u32(head, 40),
        root_pos: le_u64(head, 48),
    };
    if header.salt != salt {
        return Err(corrupt(
            file,
            16,
            "written by another database (salt differs from the log's)",
        ));
    }
    let available = (bytes.len() - HEADER_BYTES) as u64;
    if header.archive_len != available {
        return Err(corrupt(
            file,
            32,
            format!(
                "archive of {} bytes announced, {available} present",
                header.archive_len
            ),
        ));
    }
    let archive = &bytes[HEADER_BYTES..];
    if crc32fast::hash(archive) != header.archive_crc {
        return Err(corrupt(
            file,
            HEADER_BYTES as u64,
            "archive checksum mismatch",
        ));
    }
    if (archive.len() as u64).checked_sub(root_len as u64) != Some(header.root_pos) {
        return Err(corrupt(
            file,
            48,
            "root position does not match the archive",
        ));
    }
    if !archive.as_ptr().addr().is_multiple_of(16) {
        return Err(corrupt(
            file,
            HEADER_BYTES as u64,
            "archive is not 16-byte aligned in memory",
        ));
    }
    Ok((header, archive))
}

/// A document to archive as an [`ArchivedSnapshotDoc`] without copying it first: its bytes are written to the
/// archive as 16-byte blocks straight from where they are (a copy into a `Vec<Block>` per document, then of the
/// whole archive into the file's buffer, made a checkpoint of 324 MB hold about three times that in memory).
struct DocRef<'a> {
    id: u64,
    bytes: &'a [u8],
}

impl Archive for DocRef<'_> {
    type Archived = ArchivedSnapshotDoc;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::munge::munge!(let ArchivedSnapshotDoc { id, len, blocks } = out);
        self.id.resolve((), id);
        u32::try_from(self.bytes.len())
            .expect("documents are smaller than 4 GiB")
            .resolve((), len);
        rkyv::vec::ArchivedVec::<ArchivedBlock>::resolve_from_len(
            self.bytes.len().div_ceil(16),
            resolver,
            blocks,
        );
    }
}

impl<S: rkyv::rancor::Fallible + rkyv::ser::Writer + ?Sized> Serialize<S> for DocRef<'_> {
    fn serialize(&self, serializer: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        use rkyv::ser::WriterExt;
        // The blocks of `Vec<Block>`: 16-byte aligned, the bytes, then zeros to the end of the last block.
        let pos = serializer.align(16)?;
        serializer.write(self.bytes)?;
        let tail = self.bytes.len().next_multiple_of(16) - self.bytes.len();
        serializer.write(&[0u8; 16][..tail])?;
        Ok(rkyv::vec::VecResolver::from_pos(pos))
    }
}

/// A [`SnapshotBody`] whose name and documents are borrowed: archived as the same type.
struct SnapshotBodyRef<'a> {
    name: &'a str,
    next_id: u64,
    docs: Vec<DocRef<'a>>,
    indexes: Vec<SnapshotIndex>,
}

impl Archive for SnapshotBodyRef<'_> {
    type Archived = ArchivedSnapshotBody;
    type Resolver = (
        rkyv::string::StringResolver,
        rkyv::vec::VecResolver,
        rkyv::vec::VecResolver,
    );

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::munge::munge!(let ArchivedSnapshotBody { name, next_id, docs, indexes } = out);
        rkyv::string::ArchivedString::resolve_from_str(self.name, resolver.0, name);
        self.next_id.resolve((), next_id);
        rkyv::vec::ArchivedVec::resolve_from_slice(&self.docs, resolver.1, docs);
        rkyv::vec::ArchivedVec::resolve_from_slice(&self.indexes, resolver.2, indexes);
    }
}

impl<S> Serialize<S> for SnapshotBodyRef<'_>
where
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
    S::Error: rkyv::rancor::Source,
{
    fn serialize(&self, serializer: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        Ok((
            rkyv::string::ArchivedString::serialize_from_str(self.name, serializer)?,
            rkyv::vec::ArchivedVec::serialize_from_slice(&self.docs, serializer)?,
            rkyv::vec::ArchivedVec::serialize_from_slice(&self.indexes, serializer)?,
        ))
    }
}

/// An rkyv writer that hands the archive to a [`files::FileSink`] as it is serialized, keeping its length and CRC
/// for the header.
struct SinkWriter<'s> {
    sink: &'s mut dyn files::FileSink,
    pos: usize,
    crc: crc32fast::Hasher,
    /// The sink's error, if it failed (rkyv's error only says that it did).
    failed: Option<Error>,
}

/// What a [`SinkWriter`] tells rkyv when its sink fails (the sink's own error is kept in the writer).
#[derive(Debug)]
struct SinkFailed;

impl std::fmt::Display for SinkFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the file's sink failed")
    }
}

impl std::error::Error for SinkFailed {}

impl rkyv::ser::Positional for SinkWriter<'_> {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: rancor::Source> rkyv::ser::Writer<E> for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), E> {
        self.sink.write(bytes).map_err(|e| {
            self.failed = Some(e);
            E::new(SinkFailed)
        })?;
        self.crc.update(bytes);
        self.pos += bytes.len();
        Ok(())
    }
}

/// Writes the archive of the snapshot of collection `name` at commit `seq` (`docs` in ascending id order, and
/// `indexes`) into `sink` as it is serialized, each document straight from where it is; returns the container's
/// header, which goes before it (the archive starts at offset [`HEADER_BYTES`] of the file, a multiple of 16, so
/// alignments within it are those of the file).
///
/// # Errors
/// The sink's.
///
/// # Panics
/// If a document is 4 GiB or larger (documents are limited far below that).
pub fn write_snapshot<'d>(
    sink: &mut dyn files::FileSink,
    salt: u64,
    seq: u64,
    name: &str,
    next_id: u64,
    docs: impl Iterator<Item = (u64, &'d [u8])>,
    indexes: Vec<IndexSnapshot>,
) -> Result<WrittenSnapshot> {
    let docs: Vec<DocRef<'d>> = docs.map(|(id, bytes)| DocRef { id, bytes }).collect();
    debug_assert!(docs.windows(2).all(|w| w[0].id < w[1].id), "ids ascend");
    let body = SnapshotBodyRef {
        name,
        next_id,
        docs,
        indexes: stored_indexes(indexes),
    };
    let mut writer = SinkWriter {
        sink,
        pos: 0,
        crc: crc32fast::Hasher::new(),
        failed: None,
    };
    if let Err(e) = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&body, &mut writer) {
        return Err(writer.failed.take().unwrap_or_else(|| {
            Error::io(
                "serialize a snapshot",
                name,
                std::io::Error::other(e.to_string()),
            )
        }));
    }
    let archive_len = writer.pos;
    let header = Header {
        magic: SNAPSHOT_MAGIC,
        salt,
        seq,
        archive_len: archive_len as u64,
        archive_crc: writer.crc.finalize(),
        root_pos: (archive_len - size_of::<ArchivedSnapshotBody>()) as u64,
    };
    Ok(WrittenSnapshot {
        header: header.encode(),
        file_bytes: (HEADER_BYTES + archive_len) as u64,
    })
}

/// What [`write_snapshot`] returns once the archive is in its sink.
#[derive(Clone, Copy, Debug)]
pub struct WrittenSnapshot {
    /// The container's header, for offset 0 of the file.
    pub header: [u8; HEADER_BYTES],
    /// The file's length: header and archive.
    pub file_bytes: u64,
}

/// The indexes as a snapshot archives them.
fn stored_indexes(indexes: Vec<IndexSnapshot>) -> Vec<SnapshotIndex> {
    indexes
        .into_iter()
        .map(|index| SnapshotIndex {
            name: index.name,
            unique: index.unique,
            entries: index
                .entries
                .into_iter()
                .map(|(key, id)| SnapshotEntry { key, id })
                .collect(),
        })
        .collect()
}

/// The snapshot [`write_snapshot`] writes, whole in memory (header, then archive).
///
/// # Panics
/// If a document is 4 GiB or larger (documents are limited far below that).
pub fn encode_snapshot<'d>(
    salt: u64,
    seq: u64,
    name: &str,
    next_id: u64,
    docs: impl Iterator<Item = (u64, &'d [u8])>,
    indexes: Vec<IndexSnapshot>,
) -> AlignedVec {
    let mut out = AlignedVec::new();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    let written = write_snapshot(&mut out, salt, seq, name, next_id, docs, indexes)
        .expect("writing into memory cannot fail");
    out[..HEADER_BYTES].copy_from_slice(&written.header);
    out
}

/// Validates a snapshot file's bytes (`bytes` must start 16-byte aligned: a mapped file or an aligned buffer).
///
/// # Errors
/// [`Error::Corruption`] naming `file` and the offset of what does not validate; [`Error::FormatVersion`].
pub fn open_snapshot(file: &str, salt: u64, bytes: &[u8]) -> Result<SnapshotContents> {
    let (header, archive) = open_container(
        file,
        SNAPSHOT_MAGIC,
        salt,
        bytes,
        size_of::<ArchivedSnapshotBody>(),
    )?;
    let body = rkyv::access::<ArchivedSnapshotBody, rancor::Error>(archive).map_err(|_| {
        corrupt(
            file,
            HEADER_BYTES as u64,
            "archive structure does not validate (bytecheck)",
        )
    })?;
    let mut docs = Vec::with_capacity(body.docs.len());
    let mut previous: Option<u64> = None;
    for doc in body.docs.iter() {
        let id = doc.id.to_native();
        let len = doc.len.to_native() as usize;
        let offset = doc.blocks.as_ptr().addr() - bytes.as_ptr().addr();
        if previous.is_some_and(|p| p >= id) {
            return Err(corrupt(file, offset as u64, "document ids do not ascend"));
        }
        if len.div_ceil(16) != doc.blocks.len() {
            return Err(corrupt(
                file,
                offset as u64,
                "document length does not match its blocks",
            ));
        }
        debug_assert!(offset.is_multiple_of(16));
        previous = Some(id);
        docs.push((id, offset, len));
    }
    let mut indexes: Vec<IndexContents> = Vec::with_capacity(body.indexes.len());
    for index in body.indexes.iter() {
        if indexes.iter().any(|i| *i.name == *index.name) {
            let offset = index.name.as_ptr().addr() - bytes.as_ptr().addr();
            return Err(corrupt(file, offset as u64, "an index is stored twice"));
        }
        let entries = index
            .entries
            .iter()
            .map(|entry| {
                let offset = entry.key.as_ptr().addr() - bytes.as_ptr().addr();
                (offset, entry.key.len(), entry.id.to_native())
            })
            .collect();
        indexes.push(IndexContents {
            name: index.name.to_string(),
            unique: index.unique,
            entries,
        });
    }
    Ok(SnapshotContents {
        name: body.name.to_string(),
        seq: header.seq,
        next_id: body.next_id.to_native(),
        docs,
        indexes,
    })
}

/// Encodes a manifest.
#[must_use]
pub fn encode_manifest(salt: u64, manifest: &Manifest) -> AlignedVec {
    let archive =
        rkyv::to_bytes::<rancor::Error>(manifest).expect("serializing plain data cannot fail");
    contain(
        MANIFEST_MAGIC,
        salt,
        manifest.seq,
        &archive,
        size_of::<ArchivedManifest>(),
    )
}

/// Validates and decodes a manifest file's bytes (16-byte aligned).
///
/// # Errors
/// [`Error::Corruption`] naming `file`; [`Error::FormatVersion`].
pub fn open_manifest(file: &str, salt: u64, bytes: &[u8]) -> Result<Manifest> {
    let (header, archive) = open_container(
        file,
        MANIFEST_MAGIC,
        salt,
        bytes,
        size_of::<ArchivedManifest>(),
    )?;
    let manifest = rkyv::from_bytes::<Manifest, rancor::Error>(archive).map_err(|_| {
        corrupt(
            file,
            HEADER_BYTES as u64,
            "archive structure does not validate (bytecheck)",
        )
    })?;
    if manifest.seq != header.seq {
        return Err(corrupt(
            file,
            24,
            "header and archive disagree on the sequence number",
        ));
    }
    Ok(manifest)
}

/// Runs the snapshot and manifest decoders over arbitrary bytes (for the fuzz target and its corpus replay): they
/// must return a value or an error, never panic. Each input is decoded as it is, then with both checksums
/// recomputed, so that mutations reach the structure checks behind the CRCs.
pub fn fuzz_open(bytes: &[u8]) {
    let mut aligned: AlignedVec = AlignedVec::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let salt = if bytes.len() >= 24 {
        le_u64(bytes, 16)
    } else {
        0
    };
    for pass in 0..2 {
        if pass == 1 {
            if aligned.len() < HEADER_BYTES {
                return;
            }
            let crc = crc32fast::hash(&aligned[HEADER_BYTES..]);
            aligned[40..44].copy_from_slice(&crc.to_le_bytes());
            aligned[12..16].fill(0);
            let crc = crc32fast::hash(&aligned[..HEADER_BYTES]);
            aligned[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(contents) = open_snapshot("fuzz", salt, &aligned) {
            for (_, offset, len) in contents.docs {
                assert!(offset + len <= aligned.len() && offset.is_multiple_of(16));
            }
            for index in contents.indexes {
                for (offset, len, _) in index.entries {
                    assert!(offset + len <= aligned.len());
                }
            }
        }
        let _ = open_manifest("fuzz", salt, &aligned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes() -> Vec<IndexSnapshot> {
        vec![
            IndexSnapshot {
                name: "size".into(),
                unique: false,
                entries: vec![(vec![0], 2), (vec![5], 1), (vec![16], 7), (vec![255], 9)],
            },
            IndexSnapshot {
                name: "empty".into(),
                unique: true,
                entries: vec![],
            },
        ]
    }

    fn docs() -> Vec<(u64, Vec<u8>)> {
        vec![
            (1, vec![1; 5]),
            (2, vec![]),
            (7, vec![7; 16]),
            (9, (0..=255).collect()),
        ]
    }

    #[test]
    fn borrowed_documents_archive_exactly_as_the_owned_snapshot_body() {
        let docs = docs();
        let owned = SnapshotBody {
            name: "things".into(),
            next_id: 10,
            docs: docs
                .iter()
                .map(|(id, bytes)| SnapshotDoc {
                    id: *id,
                    len: bytes.len() as u32,
                    blocks: bytes
                        .chunks(16)
                        .map(|chunk| {
                            let mut block = [0u8; 16];
                            block[..chunk.len()].copy_from_slice(chunk);
                            Block(block)
                        })
                        .collect(),
                })
                .collect(),
            indexes: stored_indexes(indexes()),
        };
        let expected = rkyv::to_bytes::<rancor::Error>(&owned).unwrap();
        let encoded = encode_snapshot(
            3,
            4,
            "things",
            10,
            docs.iter().map(|(id, d)| (*id, &d[..])),
            indexes(),
        );
        assert_eq!(&encoded[HEADER_BYTES..], &expected[..]);
        assert_eq!(
            encoded[..HEADER_BYTES],
            contain(
                SNAPSHOT_MAGIC,
                3,
                4,
                &expected,
                size_of::<ArchivedSnapshotBody>()
            )[..HEADER_BYTES]
        );
    }

    #[test]
    fn snapshots_round_trip_with_aligned_documents() {
        let docs = docs();
        let file = encode_snapshot(
            42,
            17,
            "users",
            10,
            docs.iter().map(|(id, b)| (*id, b.as_slice())),
            indexes(),
        );
        let contents = open_snapshot("s", 42, &file).unwrap();
        assert_eq!(
            (contents.name.as_str(), contents.seq, contents.next_id),
            ("users", 17, 10)
        );
        let read: Vec<(u64, Vec<u8>)> = contents
            .docs
            .iter()
            .map(|&(id, offset, len)| {
                assert!(offset.is_multiple_of(16));
                (id, file[offset..offset + len].to_vec())
            })
            .collect();
        assert_eq!(read, docs);
        let stored: Vec<IndexSnapshot> = contents
            .indexes
            .iter()
            .map(|index| IndexSnapshot {
                name: index.name.clone(),
                unique: index.unique,
                entries: index
                    .entries
                    .iter()
                    .map(|&(offset, len, id)| (file[offset..offset + len].to_vec(), id))
                    .collect(),
            })
            .collect();
        assert_eq!(stored, indexes());
    }

    #[test]
    fn manifests_round_trip() {
        let manifest = Manifest {
            seq: 9,
            cut_lsn: 4096,
            collections: vec![ManifestCollection {
                name: "users".into(),
                declared_type: Some("User".into()),
                file: Some("snapshots/c0-9.snap".into()),
                docs: 3,
            }],
            committed_2pc: vec![5, 6],
        };
        let file = encode_manifest(1, &manifest);
        assert_eq!(open_manifest("m", 1, &file).unwrap(), manifest);
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_an_error() {
        let docs = docs();
        let file = encode_snapshot(
            3,
            4,
            "c",
            10,
            docs.iter().map(|(id, b)| (*id, b.as_slice())),
            indexes(),
        );
        for len in 0..file.len() {
            let mut cut: AlignedVec = AlignedVec::new();
            cut.extend_from_slice(&file[..len]);
            assert!(open_snapshot("s", 3, &cut).is_err(), "truncated to {len}");
        }
        for bit in 0..file.len() * 8 {
            let mut flipped: AlignedVec = AlignedVec::new();
            flipped.extend_from_slice(&file);
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                open_snapshot("s", 3, &flipped).is_err(),
                "bit {bit} flipped"
            );
        }
        assert!(
            open_snapshot("s", 4, &file).is_err(),
            "another database's salt"
        );
        assert!(
            open_manifest("s", 3, &file).is_err(),
            "a snapshot is not a manifest"
        );
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_of_a_manifest_is_an_error() {
        let manifest = Manifest {
            seq: 12,
            cut_lsn: 1 << 20,
            collections: vec![
                ManifestCollection {
                    name: "a".into(),
                    declared_type: Some("A".into()),
                    file: Some("snapshots/c0-000000000000000c.snap".into()),
                    docs: 7,
                },
                ManifestCollection {
                    name: "b".into(),
                    declared_type: None,
                    file: None,
                    docs: 0,
                },
            ],
            committed_2pc: vec![3, 99],
        };
        let file = encode_manifest(5, &manifest);
        for len in 0..file.len() {
            let mut cut: AlignedVec = AlignedVec::new();
            cut.extend_from_slice(&file[..len]);
            assert!(open_manifest("m", 5, &cut).is_err(), "truncated to {len}");
        }
        for bit in 0..file.len() * 8 {
            let mut flipped: AlignedVec = AlignedVec::new();
            flipped.extend_from_slice(&file);
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                open_manifest("m", 5, &flipped).is_err(),
                "bit {bit} flipped"
            );
        }
        assert_eq!(open_manifest("m", 5, &file).unwrap(), manifest);
    }

    #[test]
    fn another_format_version_is_named() {
        let file = encode_manifest(1, &Manifest::default());
        let mut other: AlignedVec = AlignedVec::new();
        other.extend_from_slice(&file);
        other[8] = 7;
        other[12..16].fill(0);
        let crc = crc32fast::hash(&other[..HEADER_BYTES]);
        other[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            open_manifest("MANIFEST", 1, &other),
            Err(Error::FormatVersion {
                found: 7,
                expected: FORMAT_VERSION,
                ..
            })
        ));
    }
}
