//! Documents copied in bulk (the documents a replay keeps) into a few large buffers instead of one allocation
//! each: the buffers are anonymous mappings that ask for transparent huge pages, so copying a gigabyte of log
//! costs hundreds of page faults instead of a quarter million, and no allocator call per document.
//!
//! Invariants: every document starts 16-byte aligned in its buffer (buffers are page-aligned and each document
//! takes a multiple of 16 bytes); a buffer is written only before [`DocArena::freeze`], and read only after.

use std::sync::Arc;

use super::{DocBytes, SharedBytes};

/// Bytes of the first buffer; each next one doubles, up to [`MAX_CHUNK_BYTES`].
const FIRST_CHUNK_BYTES: usize = 1 << 20;
/// Bytes of the largest buffer (a larger document gets a buffer of its own size).
const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Where a document went in a [`DocArena`].
#[derive(Clone, Copy, Debug)]
pub struct ArenaDoc {
    chunk: usize,
    start: usize,
    len: usize,
}

/// Buffers being filled with documents.
#[derive(Default)]
pub struct DocArena {
    chunks: Vec<memmap2::MmapMut>,
    /// Bytes used in the last buffer.
    used: usize,
}

impl DocArena {
    /// Copies `bytes` in.
    ///
    /// # Errors
    /// The operating system refused memory for a new buffer.
    pub fn push(&mut self, bytes: &[u8]) -> std::io::Result<ArenaDoc> {
        let span = bytes.len().next_multiple_of(16);
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.len() - self.used >= span);
        if !fits {
            let grown = self
                .chunks
                .last()
                .map_or(FIRST_CHUNK_BYTES, |chunk| chunk.len() * 2)
                .min(MAX_CHUNK_BYTES);
            let chunk = memmap2::MmapMut::map_anon(grown.max(span))?;
            // Best effort: without huge pages the buffer works the same, with more page faults.
            #[cfg(target_os = "linux")]
            let _ = chunk.advise(memmap2::Advice::HugePage);
            debug_assert!(chunk.as_ptr().addr().is_multiple_of(16));
            self.chunks.push(chunk);
            self.used = 0;
        }
        let chunk = self.chunks.last_mut().expect("a buffer with room");
        let start = self.used;
        chunk[start..start + bytes.len()].copy_from_slice(bytes);
        self.used += span;
        Ok(ArenaDoc {
            chunk: self.chunks.len() - 1,
            start,
            len: bytes.len(),
        })
    }

    /// The buffers, no longer written, as owners of the documents copied in.
    #[must_use]
    pub fn freeze(self) -> FrozenArena {
        FrozenArena {
            chunks: self
                .chunks
                .into_iter()
                .map(|chunk| Arc::new(Anonymous(chunk)) as Arc<dyn SharedBytes>)
                .collect(),
        }
    }
}

/// A filled buffer: shared, read only.
struct Anonymous(memmap2::MmapMut);

impl SharedBytes for Anonymous {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The buffers of a [`DocArena`], read only.
pub struct FrozenArena {
    chunks: Vec<Arc<dyn SharedBytes>>,
}

impl FrozenArena {
    /// The document `doc`, read in place (it keeps its buffer alive).
    #[must_use]
    pub fn doc(&self, doc: ArenaDoc) -> DocBytes {
        DocBytes::shared(Arc::clone(&self.chunks[doc.chunk]), doc.start, doc.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_come_back_aligned_across_buffers_of_every_size() {
        let mut arena = DocArena::default();
        let sizes = [0usize, 1, 15, 16, 17, 4096, 300_000, 2 << 20, 100 << 20, 3];
        let docs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        let placed: Vec<ArenaDoc> = docs.iter().map(|d| arena.push(d).unwrap()).collect();
        assert!(arena.chunks.len() >= 3, "large documents open new buffers");
        let frozen = arena.freeze();
        for (doc, at) in docs.iter().zip(placed) {
            let bytes = frozen.doc(at);
            assert_eq!(&bytes[..], &doc[..]);
            assert!(bytes.as_ptr().addr().is_multiple_of(16));
        }
    }
}
