//! [`OverflowReader`] and [`SlotRef`]: reading a region from other threads
//! and processes, without the owner's lock and without a lock on its hot path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::layout::{
    self, EXTENT_HEADER_LEN, HeaderDamage, IDENTITY_OFFSET, LiveHeader, NEXT_GENERATION_OFFSET,
    USER_TAG_LEN,
};
use crate::sys::file;
use crate::sys::mapping::{MAX_RESERVATION, ReadersLock, SharedMapping};

/// A handle to one tenancy of a slot, made by
/// [`OverflowRegion::slot_ref`](crate::OverflowRegion::slot_ref) and read by
/// an [`OverflowReader`].
///
/// It names the region file (by the random identity the file got when it
/// was created), the slot index, the extent, the payload length and the
/// generation of the write that filled the slot. A slot index handed out
/// again gets a new generation, and a file created again at the same path
/// gets a new identity, so a handle never reads a later tenant or another
/// file.
///
/// To hand one to another process, send its five parts (it is serde
/// `Serialize + Deserialize`, or use [`SlotRef::from_parts`]): a handle
/// built from wrong parts is harmless, the reader refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SlotRef {
    pub(crate) file: u64,
    pub(crate) slot: u32,
    pub(crate) generation: u64,
    pub(crate) offset: u64,
    pub(crate) payload_len: u64,
}

impl SlotRef {
    /// Rebuilds a handle from its parts ([`file`](Self::file),
    /// [`slot`](Self::slot), [`generation`](Self::generation),
    /// [`offset`](Self::offset), [`len`](Self::len)), as sent by another
    /// process. Reading it checks every part against the file, so wrong
    /// parts give [`Error::SlotChanged`], never wrong bytes.
    pub fn from_parts(file: u64, slot: u32, generation: u64, offset: u64, len: u64) -> SlotRef {
        SlotRef {
            file,
            slot,
            generation,
            offset,
            payload_len: len,
        }
    }

    /// The identity of the region file the handle belongs to: a random
    /// number the file got when it was created (never 0).
    pub fn file(&self) -> u64 {
        self.file
    }

    /// The slot index.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }

    /// The generation of the write this handle names (the region's write
    /// counter when it was written; extent headers keep its low 32 bits).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Byte offset of the slot's extent in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the payload in bytes.
    pub fn len(&self) -> usize {
        self.payload_len as usize
    }

    /// True for a zero-length payload.
    pub fn is_empty(&self) -> bool {
        self.payload_len == 0
    }
}

/// A read-only view of a region file for threads and processes other than
/// its owner. `Send + Sync`: share one among many threads.
///
/// It maps the file read-only, never takes the writer's lock, follows the
/// file as it grows (up to the maximum capacity the writer had when the
/// reader opened: open a new reader after reopening the writer with a larger
/// one), and returns a slot's bytes only if they are still the
/// bytes its [`SlotRef`] names: a slot freed or reused while it is read gives
/// [`Error::SlotChanged`], never another slot's bytes.
///
/// ```
/// use overflow_region::{EngineId, OverflowReader, OverflowRegion};
///
/// # fn main() -> overflow_region::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("core-3");
/// let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20)?;
/// let slot = region.write(b"shared with other cores", EngineId::Sparse)?;
/// let handle = region.slot_ref(slot)?;
///
/// let reader = OverflowReader::open(&path)?;
/// let copy = std::thread::scope(|s| {
///     s.spawn(|| {
///         let mut buf = Vec::new();
///         reader.read_into(&handle, &mut buf).map(|()| buf)
///     })
///     .join()
///     .unwrap()
/// })?;
/// assert_eq!(copy, b"shared with other cores");
///
/// region.free(slot)?;
/// assert!(reader.read_into(&handle, &mut Vec::new()).is_err());
/// # Ok(())
/// # }
/// ```
pub struct OverflowReader {
    path: PathBuf,
    mapping: SharedMapping,
    /// The file's identity once read with its check holding (it never
    /// changes then), so a read where each load is a `pread` does not ask
    /// for it each time; 0 until then.
    identity: AtomicU64,
}

impl std::fmt::Debug for OverflowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverflowReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OverflowReader {
    /// Address space a reader reserves when the file does not say how large
    /// its writer lets it grow (64 GiB). A reader normally reserves the
    /// maximum capacity its writer recorded in the file header (at least the
    /// file's size), as the writer does; it costs address space only, no
    /// memory.
    pub const DEFAULT_RESERVATION: u64 = 64 << 30;

    /// Opens a region file for reading.
    ///
    /// # Errors
    ///
    /// [`Error::NotARegion`] or [`Error::UnsupportedVersion`] if the file is
    /// not a region this build reads, [`Error::Io`] if it cannot be opened or
    /// mapped.
    pub fn open(path: &Path) -> Result<Self> {
        let file = file::open_regular(path, false)
            .map_err(|refused| Error::open_refused(path, refused))?
            .file;
        let file_len = file.metadata().map_err(Error::io(path, "stat"))?.len();
        let counters = crate::layout::read_file_header(path, &file, file_len)?;
        // Announce this reader before mapping, and for as long as the file
        // stays open: the writer never truncates the file under a reader.
        ReadersLock::hold_shared(&file).map_err(Error::io(path, "lock (shared, readers)"))?;
        let recorded = match counters.max_capacity {
            0 => Self::DEFAULT_RESERVATION,
            max => max.min(MAX_RESERVATION),
        };
        let reserve = recorded.max(file_len);
        let mapping = SharedMapping::new(file, reserve).map_err(Error::io(path, "mmap"))?;
        Ok(OverflowReader {
            path: path.to_owned(),
            mapping,
            identity: AtomicU64::new(0),
        })
    }

    /// The region file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the bytes `slot` names into `out` (replacing its contents).
    ///
    /// The copy is returned only if the extent header still carries the
    /// handle's slot index and generation and a live tag before and after
    /// the copy, and the length matches, so a free or a reuse racing with
    /// the read is caught (a seqlock; no checksum is computed: damage on
    /// disk is what [`OverflowRegion::verify`](crate::OverflowRegion::verify)
    /// finds).
    ///
    /// # Errors
    ///
    /// [`Error::SlotChanged`] if the slot was freed, reused or moved by
    /// compaction (or the file is damaged there), [`Error::Io`] if the
    /// file's length cannot be read. A moved slot says so (`moved: true`,
    /// as long as its old place was not written again): ask the owner for
    /// a new handle. `out` is left with unspecified contents on error.
    ///
    /// # Time complexity
    ///
    /// O(length of the payload): one copy.
    pub fn read_into(&self, slot: &SlotRef, out: &mut Vec<u8>) -> Result<()> {
        let changed = |reason: &'static str| Error::SlotChanged {
            slot: slot.slot(),
            generation: slot.generation,
            reason,
            moved: false,
        };
        let extent_len = EXTENT_HEADER_LEN.saturating_add(slot.payload_len);
        // The header and the payload after it are most likely cache misses:
        // ask for both at once.
        self.mapping.prefetch(slot.offset, extent_len);
        let stat_error = |source| Error::Io {
            path: self.path.clone(),
            operation: "stat",
            source,
        };
        // With a user tag the payload starts 8 bytes further on: check that
        // range first (re-reading the file's length if the known one does
        // not hold it), or the header's and payload's loads below, which
        // never re-read it, would find a tagged slot across the known end
        // past the file. The shorter range is enough for a slot without.
        let in_file = self
            .mapping
            .check_range(slot.offset, extent_len.saturating_add(USER_TAG_LEN))
            .map_err(stat_error)?
            || self
                .mapping
                .check_range(slot.offset, extent_len)
                .map_err(stat_error)?;
        if !in_file {
            return Err(changed("its extent lies past the end of the file"));
        }
        // The file's identity never changes once set: a handle from a file
        // that was deleted and created again at this path has another.
        let identity = match self.identity.load(Ordering::Relaxed) {
            0 => {
                // The value and its check, in one load where loads are
                // `pread`s. Only a checked identity is kept: a writer gives
                // the file another one where the check fails (a crash
                // between the two stores, or damage).
                let mut words = [0u64; 2];
                if !self.mapping.load_words(IDENTITY_OFFSET, &mut words) {
                    return Err(changed("the file header is out of bounds"));
                }
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&words[0].to_le_bytes());
                bytes[8..].copy_from_slice(&words[1].to_le_bytes());
                if let Some(checked) = layout::decode_identity(&bytes) {
                    self.identity.store(checked, Ordering::Relaxed);
                }
                words[0]
            }
            known => known,
        };
        if identity != slot.file {
            return Err(changed(
                "the handle belongs to another region file (this path now names a different file)",
            ));
        }
        let before = self
            .load_header(slot.offset)
            .ok_or_else(|| changed("its header is out of bounds"))?;
        let header = LiveHeader::decode(&before).map_err(|damage| {
            if layout::moved_from(&before, slot.slot, slot.generation as u32).is_some() {
                return Error::slot_moved(slot.slot(), slot.generation);
            }
            match damage {
                HeaderDamage::NotLive => changed("it was freed (its extent is no longer live)"),
                _ => changed("its extent header does not check out (reused or damaged)"),
            }
        })?;
        if header.slot != slot.slot
            || header.generation != slot.generation as u32
            || header.payload_len != slot.payload_len
        {
            return Err(changed("its extent now holds another write"));
        }
        if !self
            .mapping
            .copy_out(slot.offset + header.header_len(), slot.payload_len, out)
        {
            return Err(changed("its payload lies past the end of the file"));
        }
        let after = self
            .load_header(slot.offset)
            .ok_or_else(|| changed("its header is out of bounds"))?;
        if !layout::same_tenancy(&before, &after) {
            return Err(changed("it was freed or reused while it was read"));
        }
        // Headers keep the generation's low 32 bits: a handle older than
        // 2^32 writes could match a later tenant, so it is refused. The
        // counter is loaded after the header: a write stores it before its
        // live tag, so it is at least one past the generation of the
        // tenancy read. Loaded before, it could predate a write that
        // committed just before the header was read, 2^32 after the handle.
        let next_generation = self
            .mapping
            .load_word(NEXT_GENERATION_OFFSET)
            .ok_or_else(|| changed("the file header is out of bounds"))?;
        if next_generation
            .wrapping_sub(slot.generation)
            .wrapping_sub(1)
            >= 1 << 32
        {
            return Err(changed(
                "the handle is older than 2^32 writes (or from the future)",
            ));
        }
        // No checksum: the header read before and after the copy, with the
        // handle's slot, generation and length, is what proves the bytes
        // are the ones the handle names (a seqlock). Damage on disk is
        // `OverflowRegion::verify`'s to find.
        Ok(())
    }

    /// Calls `f` with a verified copy of the bytes `slot` names (see
    /// [`read_into`](Self::read_into)); the copy lives in a buffer reused by
    /// the calling thread.
    ///
    /// # Errors
    ///
    /// As [`read_into`](Self::read_into); `f` is not called then.
    pub fn with_slot<R>(&self, slot: &SlotRef, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                self.read_into(slot, &mut buffer)?;
                Ok(f(&buffer))
            }
            // Called again from inside `f`: use a buffer of its own.
            Err(_) => {
                let mut buffer = Vec::new();
                self.read_into(slot, &mut buffer)?;
                Ok(f(&buffer))
            }
        })
    }

    /// The header bytes at `offset`, loaded word by word: 32, or 40 when
    /// they say a user tag follows (`None` when they lie outside the file).
    fn load_header(&self, offset: u64) -> Option<LoadedHeader> {
        let mut loaded = LoadedHeader {
            bytes: [0; (EXTENT_HEADER_LEN + USER_TAG_LEN) as usize],
            len: EXTENT_HEADER_LEN as usize,
        };
        // Where each load is a `pread`, the header and the word after it
        // (the user tag if there is one) in one call; past the end of the
        // file (a short payload last in it), word by word below.
        let mut words = [0u64; ((EXTENT_HEADER_LEN + USER_TAG_LEN) / 8) as usize];
        if self.mapping.reads_with_pread() && self.mapping.load_words(offset, &mut words) {
            for (chunk, word) in loaded.bytes.chunks_exact_mut(8).zip(words) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            if layout::user_tag_follows(&loaded.bytes[..loaded.len]) {
                loaded.len += USER_TAG_LEN as usize;
            }
            return Some(loaded);
        }
        for (i, chunk) in loaded.bytes[..loaded.len].chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&self.mapping.load_word(offset + 8 * i as u64)?.to_le_bytes());
        }
        if layout::user_tag_follows(&loaded.bytes[..loaded.len]) {
            let user_tag = self.mapping.load_word(offset + EXTENT_HEADER_LEN)?;
            loaded.bytes[loaded.len..].copy_from_slice(&user_tag.to_le_bytes());
            loaded.len += USER_TAG_LEN as usize;
        }
        Some(loaded)
    }
}

/// Header bytes a reader loaded: 32, or 40 with a user tag.
struct LoadedHeader {
    bytes: [u8; (EXTENT_HEADER_LEN + USER_TAG_LEN) as usize],
    len: usize,
}

impl std::ops::Deref for LoadedHeader {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
