//! The on-disk format of the log: segment header, record header, meta file, and their encoders and validators.
//!
//! Everything is little-endian. DESIGN.md has the byte tables; this module is their single source of truth.
//!
//! Invariants kept here:
//! - a record is valid only if its kind is known, its reserved bits are zero, its LSN equals its position, its salt
//!   equals the log's salt and its CRC32 matches. A stale record in a recycled segment therefore never validates
//!   (its LSN belongs to an earlier lap), and neither does a record copied from another log (salt).
//! - the first 8 bytes of a record header (length, kind, flags) are never all zero, because no kind is 0. The
//!   staging buffer uses that word as the record's completion flag.
//! - every decoder takes `&[u8]`, checks bounds before reading and never allocates from a length field.

/// Bytes at the start of every segment file, before the first record.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes in a record header.
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Records start at multiples of this, so every payload starts 16-byte aligned in its segment (and in a mapping of
/// it): an rkyv archive placed at a multiple of 16 in a payload can be read in place.
pub const RECORD_ALIGN_BYTES: u64 = 16;
/// Bytes in the `meta` file.
pub const META_BYTES: usize = 64;
/// Format version written by this build (2: records aligned to 16 bytes instead of 8).
pub const FORMAT_VERSION: u32 = 2;

/// Magic at offset 0 of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CSWALSEG";
/// Magic at offset 0 of the meta file.
pub const META_MAGIC: [u8; 8] = *b"CSWALMET";

/// Record flag: another record of the same all-or-nothing group follows immediately.
pub const FLAG_GROUP_CONTINUES: u8 = 0b0000_0001;
const KNOWN_FLAGS: u8 = FLAG_GROUP_CONTINUES;

/// What a record is, as far as the log's format is concerned. Payloads are opaque to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// Data written by a transaction.
    Data = 1,
    /// A transaction's commit (closes its group, or stands alone as a 2PC decision).
    Commit = 2,
    /// A two-phase-commit PREPARE.
    Prepare = 3,
    /// A two-phase-commit ABORT decision.
    Abort = 4,
    /// A checkpoint marker.
    Checkpoint = 5,
    /// Filler from the end of a sealed segment to its end. Never returned by readers.
    Pad = 0x7F,
}

impl RecordKind {
    /// Decodes a kind byte; `None` for unknown values (including 0).
    #[must_use]
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Data,
            2 => Self::Commit,
            3 => Self::Prepare,
            4 => Self::Abort,
            5 => Self::Checkpoint,
            0x7F => Self::Pad,
            _ => return None,
        })
    }
}

/// Rounds `len` up to the record alignment.
#[must_use]
pub const fn align_up(len: u64) -> u64 {
    (len + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1)
}

/// Bytes a record with `payload_len` payload bytes occupies in the log, header and alignment included.
#[must_use]
pub const fn record_span_bytes(payload_len: u64) -> u64 {
    align_up(RECORD_HEADER_BYTES + payload_len)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The first word of a record header: payload length, kind and flags. Non-zero for every real record.
#[must_use]
pub fn header_word(payload_len: u32, kind: RecordKind, flags: u8) -> u64 {
    u64::from(payload_len) | (u64::from(kind as u8) << 32) | (u64::from(flags) << 40)
}

/// The span in bytes of the record whose header starts with `word`.
#[must_use]
pub fn span_of_word(word: u64) -> u64 {
    record_span_bytes(word & 0xFFFF_FFFF)
}

/// Encodes a record header (all 32 bytes, CRC included) for `payload` at `lsn`.
#[must_use]
pub fn encode_record_header(
    lsn: u64,
    salt: u64,
    kind: RecordKind,
    flags: u8,
    payload: &[u8],
) -> [u8; 32] {
    debug_assert!(kind != RecordKind::Pad);
    #[allow(clippy::cast_possible_truncation)]
    encode_header(lsn, salt, kind, flags, payload.len() as u32, payload)
}

/// Encodes the header of a PAD record whose span is `span_bytes` (at least a header). A PAD's CRC covers its
/// header only: its payload is never read, so it is never checksummed (or materialized).
#[must_use]
pub fn encode_pad_header(lsn: u64, salt: u64, span_bytes: u64) -> [u8; 32] {
    debug_assert!(
        span_bytes >= RECORD_HEADER_BYTES && span_bytes.is_multiple_of(RECORD_ALIGN_BYTES)
    );
    let payload_len = u32::try_from(span_bytes - RECORD_HEADER_BYTES).expect("PAD fits a segment");
    encode_header(lsn, salt, RecordKind::Pad, 0, payload_len, &[])
}

fn encode_header(
    lsn: u64,
    salt: u64,
    kind: RecordKind,
    flags: u8,
    payload_len: u32,
    checked: &[u8],
) -> [u8; 32] {
    debug_assert_eq!(lsn % RECORD_ALIGN_BYTES, 0);
    let mut h = [0u8; 32];
    h[0..8].copy_from_slice(&header_word(payload_len, kind, flags).to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16..24].copy_from_slice(&salt.to_le_bytes());
    let crc = record_crc(&h, checked);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..24]);
    hasher.update(&header[28..32]);
    hasher.update(payload);
    hasher.finalize()
}

/// Why bytes at a position are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The header word is zero: nothing was ever written here.
    Unwritten,
    /// Fewer bytes remain than the header or the payload needs.
    Truncated,
    /// The kind byte is not a known kind.
    UnknownKind(u8),
    /// Unknown flag bits or non-zero reserved bytes.
    ReservedBits,
    /// The stored LSN is not this position (stale data from an earlier lap, or misplaced bytes).
    LsnMismatch,
    /// The stored salt is not this log's.
    SaltMismatch,
    /// The checksum does not match.
    Checksum,
    /// A PAD record that does not end exactly at the end of its segment.
    BadPad,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unwritten => f.write_str("no record written here"),
            Self::Truncated => f.write_str("record extends past the end of its segment"),
            Self::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            Self::ReservedBits => f.write_str("unknown flags or non-zero reserved bytes"),
            Self::LsnMismatch => f.write_str("stored LSN does not match the record's position"),
            Self::SaltMismatch => f.write_str("record belongs to another log (salt mismatch)"),
            Self::Checksum => f.write_str("CRC32 mismatch"),
            Self::BadPad => f.write_str("PAD record does not reach the end of its segment"),
        }
    }
}

/// A validated record inside a segment's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's LSN (its byte position in the log).
    pub lsn: u64,
    /// Its kind.
    pub kind: RecordKind,
    /// Its flags.
    pub flags: u8,
    /// Its payload (empty for PAD).
    pub payload: &'a [u8],
    /// Bytes it occupies, header and alignment included.
    pub span_bytes: u64,
}

/// Validates the record at `offset` of a segment whose first byte is LSN `segment_base`.
///
/// Never panics and never reads outside `segment`, whatever its bytes are.
pub fn parse_record(
    segment: &[u8],
    offset: u64,
    segment_base: u64,
    salt: u64,
) -> Result<RecordRef<'_>, RecordError> {
    let len = segment.len() as u64;
    if offset
        .checked_add(RECORD_HEADER_BYTES)
        .is_none_or(|end| end > len)
    {
        return Err(RecordError::Truncated);
    }
    #[allow(clippy::cast_possible_truncation)]
    let at = offset as usize;
    let h = &segment[at..at + RECORD_HEADER_BYTES as usize];
    let word = u64_at(h, 0);
    if word == 0 {
        return Err(RecordError::Unwritten);
    }
    let payload_len = u64::from(u32_at(h, 0));
    let kind_byte = h[4];
    let flags = h[5];
    let kind = RecordKind::from_u8(kind_byte).ok_or(RecordError::UnknownKind(kind_byte))?;
    if flags & !KNOWN_FLAGS != 0 || h[6] != 0 || h[7] != 0 || u32_at(h, 28) != 0 {
        return Err(RecordError::ReservedBits);
    }
    if u64_at(h, 8) != segment_base.wrapping_add(offset) {
        return Err(RecordError::LsnMismatch);
    }
    if u64_at(h, 16) != salt {
        return Err(RecordError::SaltMismatch);
    }
    let span = record_span_bytes(payload_len);
    if offset + span > len {
        return Err(RecordError::Truncated);
    }
    let payload_start = at + RECORD_HEADER_BYTES as usize;
    #[allow(clippy::cast_possible_truncation)]
    let payload = &segment[payload_start..payload_start + payload_len as usize];
    if kind == RecordKind::Pad && (offset + span != len || flags != 0) {
        return Err(RecordError::BadPad);
    }
    let checked = if kind == RecordKind::Pad {
        &[][..]
    } else {
        payload
    };
    if record_crc(h, checked) != u32_at(h, 24) {
        return Err(RecordError::Checksum);
    }
    Ok(RecordRef {
        lsn: segment_base + offset,
        kind,
        flags,
        payload: if kind == RecordKind::Pad {
            &[]
        } else {
            payload
        },
        span_bytes: span,
    })
}

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The log's salt.
    pub salt: u64,
    /// LSN of the segment's first byte.
    pub base_lsn: u64,
    /// Size of the segment file in bytes.
    pub segment_size_bytes: u64,
}

impl SegmentHeader {
    /// Encodes the 64-byte header.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        #[allow(clippy::cast_possible_truncation)]
        h[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.salt.to_le_bytes());
        h[24..32].copy_from_slice(&self.base_lsn.to_le_bytes());
        h[32..40].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        let crc = crc32fast::hash(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header: magic, CRC, version, header length. Returns a reason on failure.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(HeaderError::Truncated);
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        if crc32fast::hash(&bytes[0..60]) != u32_at(bytes, 60) {
            return Err(HeaderError::Checksum);
        }
        let version = u32_at(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        if u64::from(u32_at(bytes, 12)) != SEGMENT_HEADER_BYTES
            || bytes[40..60].iter().any(|&b| b != 0)
        {
            return Err(HeaderError::Layout);
        }
        Ok(Self {
            salt: u64_at(bytes, 16),
            base_lsn: u64_at(bytes, 24),
            segment_size_bytes: u64_at(bytes, 32),
        })
    }
}

/// Why a segment header or meta file did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Too short.
    Truncated,
    /// Wrong magic.
    Magic,
    /// CRC mismatch.
    Checksum,
    /// Another format version.
    Version(u32),
    /// Header length or reserved bytes are wrong.
    Layout,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("header truncated"),
            Self::Magic => f.write_str("bad magic"),
            Self::Checksum => f.write_str("header CRC32 mismatch"),
            Self::Version(v) => write!(f, "format version {v} (expected {FORMAT_VERSION})"),
            Self::Layout => f.write_str("bad header length or non-zero reserved bytes"),
        }
    }
}

/// The log's meta file: what must survive independently of any one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Random per-log salt, stamped into every header.
    pub salt: u64,
    /// Segment size, fixed for the life of the log.
    pub segment_size_bytes: u64,
    /// LSN of the first segment still part of the log (moves forward on `truncate_before`).
    pub start_lsn: u64,
}

impl Meta {
    /// Encodes the 64-byte meta file.
    #[must_use]
    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut h = [0u8; META_BYTES];
        h[0..8].copy_from_slice(&META_MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.salt.to_le_bytes());
        h[24..32].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        h[32..40].copy_from_slice(&self.start_lsn.to_le_bytes());
        let crc = crc32fast::hash(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks the meta file.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() != META_BYTES {
            return Err(HeaderError::Truncated);
        }
        if bytes[0..8] != META_MAGIC {
            return Err(HeaderError::Magic);
        }
        if crc32fast::hash(&bytes[0..60]) != u32_at(bytes, 60) {
            return Err(HeaderError::Checksum);
        }
        let version = u32_at(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        if bytes[12..16].iter().chain(&bytes[40..60]).any(|&b| b != 0) {
            return Err(HeaderError::Layout);
        }
        Ok(Self {
            salt: u64_at(bytes, 16),
            segment_size_bytes: u64_at(bytes, 24),
            start_lsn: u64_at(bytes, 32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(
        records: &[(RecordKind, u8, &[u8])],
        base: u64,
        salt: u64,
        size: usize,
    ) -> Vec<u8> {
        let mut seg = vec![0u8; size];
        seg[..64].copy_from_slice(
            &SegmentHeader {
                salt,
                base_lsn: base,
                segment_size_bytes: size as u64,
            }
            .encode(),
        );
        let mut at = SEGMENT_HEADER_BYTES;
        for &(kind, flags, payload) in records {
            let h = encode_record_header(base + at, salt, kind, flags, payload);
            let a = at as usize;
            seg[a..a + 32].copy_from_slice(&h);
            seg[a + 32..a + 32 + payload.len()].copy_from_slice(payload);
            at += record_span_bytes(payload.len() as u64);
        }
        seg
    }

    #[test]
    fn record_round_trips() {
        let seg = segment_with(&[(RecordKind::Data, 0, b"abc")], 4096, 7, 4096);
        let r = parse_record(&seg, 64, 4096, 7).unwrap();
        assert_eq!(
            (r.lsn, r.kind, r.flags, r.payload, r.span_bytes),
            (4160, RecordKind::Data, 0, &b"abc"[..], 48)
        );
    }

    #[test]
    fn every_header_byte_is_protected() {
        let seg = segment_with(
            &[(RecordKind::Commit, FLAG_GROUP_CONTINUES, b"payload!")],
            0,
            99,
            4096,
        );
        for byte in 64..64 + 32 + 8 {
            for bit in 0..8 {
                let mut bad = seg.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    parse_record(&bad, 64, 0, 99).is_err(),
                    "flip of byte {byte} bit {bit} validated"
                );
            }
        }
    }

    #[test]
    fn stale_lap_and_foreign_salt_never_validate() {
        let seg = segment_with(&[(RecordKind::Data, 0, b"x")], 0, 5, 4096);
        assert_eq!(
            parse_record(&seg, 64, 4096 * 8, 5),
            Err(RecordError::LsnMismatch)
        );
        assert_eq!(parse_record(&seg, 64, 0, 6), Err(RecordError::SaltMismatch));
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let h = SegmentHeader {
            salt: 1,
            base_lsn: 2 << 20,
            segment_size_bytes: 1 << 20,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err());
        }
        let m = Meta {
            salt: 3,
            segment_size_bytes: 4096,
            start_lsn: 8192,
        };
        assert_eq!(Meta::decode(&m.encode()), Ok(m));
        assert_eq!(Meta::decode(&m.encode()[..63]), Err(HeaderError::Truncated));
    }
}
