//! The on-disk encoding: the file header and the extent header.
//!
//! Pure functions over byte arrays; no I/O. The format is specified in
//! `docs/FORMAT.md`; this module is its only implementation. All integers are
//! little-endian.

use crate::engine::EngineId;
use crate::sys::checksum;

/// Bytes 0..8 of every region file.
pub(crate) const FILE_MAGIC: [u8; 8] = *b"OVFLREGN";
/// The format version this build reads and writes. Version 2 added extents
/// whose payload checksum is not computed yet (written after the last
/// `sync`); version 1 files are refused, untouched.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Length of the file header; the first extent starts here.
pub(crate) const DATA_START: u64 = 4096;
/// Every extent starts at, and is a multiple of, this many bytes.
pub(crate) const EXTENT_ALIGN: u64 = 16;
/// Length of the header at the start of every extent.
pub(crate) const EXTENT_HEADER_LEN: u64 = 32;
/// Offset in an extent header of the word holding the payload checksum and
/// the header checksum, which `sync` stores once the payload's checksum is
/// computed ([`LiveHeader::checksum_word`]).
pub(crate) const CHECKSUM_WORD_OFFSET: u64 = 24;
/// Length of the file header's immutable, checksummed part.
const FILE_HEADER_FIXED_LEN: usize = 24;
/// Bytes 24..28 of the header at the old place of a slot that compaction
/// moved, stored with the copy's generation in bytes 28..32 just before
/// that place is freed (`moved_mark`): a reader holding a handle to the old
/// place can tell that the slot moved. Only a header that does not check
/// out is read for it (its checksums were where the mark is).
const MOVED_MAGIC: [u8; 4] = *b"MOVD";
/// Offset of the file header's "slot indices handed out" counter (one `u64`).
pub(crate) const SLOT_HIGH_WATER_OFFSET: u64 = 64;
/// Offset of the file header's "next generation" counter (one `u64`).
pub(crate) const NEXT_GENERATION_OFFSET: u64 = 72;
/// Offset of the file header's "end of the chain" counter (one `u64`): the
/// cursor, stored whenever it moves.
pub(crate) const CHAIN_END_OFFSET: u64 = 80;
/// Offset of the maximum capacity the writer last opened the file with (one
/// `u64`): readers reserve that much address space.
pub(crate) const MAX_CAPACITY_OFFSET: u64 = 88;
/// Offset of the piece size (one `u64`) the writer last opened the file
/// with wrote zeros in: the page cache may hold folios that large from it
/// (0: unknown, as in files from earlier builds). Not a hint for recovery.
pub(crate) const WRITE_PIECE_OFFSET: u64 = 96;
/// Set in the write piece by a writer whose file system refused to punch a
/// hole: nothing is punched there, so no folio needs dropping.
pub(crate) const CANNOT_PUNCH: u64 = 1 << 62 << 1;
/// Set in the write piece while the page cache may hold folios longer than
/// the piece outside the middles of live extents: a long payload is being
/// written, or the middle of a freed one is not yet punched or truncated
/// away (`giveback::Policy::large_folios`). A writer that punches and finds
/// it at open drops the page cache.
pub(crate) const LONG_FOLIOS: u64 = 1 << 62;
/// Offset of the file's identity (one `u64`, never 0), chosen at random
/// when the file is created, and its check (a `u32`, the CRC32C of the
/// identity's 8 bytes) at `IDENTITY_OFFSET + 8`. Handles carry it, so a
/// handle never reads a file created again at the same path. Zero in files
/// from earlier builds until a writer opens them.
pub(crate) const IDENTITY_OFFSET: u64 = 104;
/// Offset of the boot id (16 bytes, `/proc/sys/kernel/random/boot_id`) of
/// the machine the writer that last opened the file ran on; zeros when
/// unknown. A writer opening the file on the same boot knows the page cache
/// holds every store the last one made, so recovery need not read payloads.
pub(crate) const BOOT_ID_OFFSET: u64 = 120;
/// The prefix of the file that `decode_file_header` reads.
pub(crate) const FILE_HEADER_PROBE_LEN: usize = 136;
/// The shortest prefix `decode_file_header` accepts (a header written
/// before identities existed ends here).
const FILE_HEADER_MIN_LEN: usize = 96;

/// Length of a user tag: the `u64` of the caller's that
/// `OverflowRegion::write_tagged` stores with a slot. It follows the
/// 32-byte header (which then says so in its flags) only when it is not 0,
/// so untagged extents cost nothing; the header checksum covers it.
pub(crate) const USER_TAG_LEN: u64 = 8;
/// Bit of the header's flags byte (byte 23): a user tag follows the header.
const FLAG_USER_TAG: u8 = 1;

/// Largest payload an extent header can describe (48-bit length).
pub(crate) const MAX_PAYLOAD_LEN: u64 = (1 << 48) - 1;
/// Largest extent a tag can describe (32-bit length in units of
/// `EXTENT_ALIGN`: just under 64 GiB).
pub(crate) const MAX_EXTENT_LEN: u64 = ((1 << 32) - 1) * EXTENT_ALIGN;
/// Slot indices are stored as `u32`.
pub(crate) const MAX_SLOTS: u64 = u32::MAX as u64;

const TAG_LEN_BITS: u32 = 32;
const TAG_LEN_MASK: u64 = (1 << TAG_LEN_BITS) - 1;
/// Bits 0..40 of a tag: length and state; bits 40..64 check them.
const TAG_BODY_MASK: u64 = (1 << 40) - 1;
const STATE_FREE: u8 = b'F';
const STATE_LIVE: u8 = b'L';
const STATE_END: u8 = b'E';

/// What the first 8 bytes of an extent say about it.
///
/// The tag is the only part of a header that changes after the extent is
/// written, always with one aligned 8-byte store: that store is what makes an
/// extent live, free, or the end of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// Nothing at or after this offset belongs to the region (all-zero bytes
    /// read as `End` too: that is what a freshly allocated file holds).
    End,
    /// A free extent of `len` bytes.
    Free { len: u64 },
    /// A live extent of `len` bytes; the rest of its header describes it.
    Live { len: u64 },
}

/// The word of `Tag::End`, spelled out: it is stored on every write at the
/// end of the region, and its check never changes (a test recomputes it).
const END_WORD: u64 = 0xF87F_9545_0000_0000;

impl Tag {
    /// The 8-byte word stored for this tag.
    pub(crate) fn encode(self) -> u64 {
        let (state, len) = match self {
            Tag::End => return END_WORD,
            Tag::Free { len } => (STATE_FREE, len),
            Tag::Live { len } => (STATE_LIVE, len),
        };
        debug_assert!(
            len % EXTENT_ALIGN == 0 && len <= MAX_EXTENT_LEN,
            "extent length {len}"
        );
        let body = (u64::from(state) << TAG_LEN_BITS) | (len / EXTENT_ALIGN);
        (tag_check(body) << 40) | body
    }

    /// Reads a tag word, or `None` when it is not one (damage, or bytes that
    /// were never a header).
    pub(crate) fn decode(word: u64) -> Option<Tag> {
        if word == 0 {
            return Some(Tag::End);
        }
        let body = word & TAG_BODY_MASK;
        if word >> 40 != tag_check(body) {
            return None;
        }
        let len = (word & TAG_LEN_MASK) * EXTENT_ALIGN;
        match (word >> TAG_LEN_BITS) as u8 {
            STATE_END if len == 0 => Some(Tag::End),
            STATE_FREE => Some(Tag::Free { len }),
            STATE_LIVE => Some(Tag::Live { len }),
            _ => None,
        }
    }
}

/// The 24-bit check of a tag's length and state: the low 24 bits of their
/// CRC32C. Any damage to fewer than 4 bits of a tag is caught, so a damaged
/// free tag is never followed to a wrong length.
fn tag_check(body: u64) -> u64 {
    u64::from(checksum::crc32c(&body.to_le_bytes()[..5]) & 0x00FF_FFFF)
}

/// Bytes before the payload: the header, and the user tag if there is one
/// (a tag of 0 is stored as none).
pub(crate) fn header_len(user_tag: u64) -> u64 {
    if user_tag == 0 {
        EXTENT_HEADER_LEN
    } else {
        EXTENT_HEADER_LEN + USER_TAG_LEN
    }
}

/// The extent length that holds a payload of `payload_len` bytes after a
/// header of `header_len` bytes ([`header_len`]), or `None` past what the
/// format can describe.
pub(crate) fn extent_len_for(payload_len: u64, header_len: u64) -> Option<u64> {
    if payload_len > MAX_PAYLOAD_LEN {
        return None;
    }
    let len = (header_len + payload_len).next_multiple_of(EXTENT_ALIGN);
    (len <= MAX_EXTENT_LEN).then_some(len)
}

/// The description of a live extent (everything in its header but the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveHeader {
    /// Length of the whole extent, header included.
    pub extent_len: u64,
    /// Slot index the extent holds.
    pub slot: u32,
    /// Changes each time a slot index is reused (region-wide write counter).
    pub generation: u32,
    /// Length of the payload that follows the header.
    pub payload_len: u64,
    /// Engine that wrote it.
    pub engine: EngineId,
    /// CRC32C of the payload, or `None` while it is not computed yet: the
    /// extent was written after the last `sync`, which computes it. Such a
    /// header stores 0 for it and the complement of its header checksum.
    pub payload_crc: Option<u32>,
    /// The caller's tag (0: none, and no bytes for it in the extent).
    pub user_tag: u64,
}

/// Why 32 bytes are not a valid live extent header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderDamage {
    /// The tag word is not a live tag.
    NotLive,
    /// The header checksum does not match: the stored and computed values.
    Checksum { stored: u32, computed: u32 },
    /// The payload does not fit in the extent the tag describes.
    PayloadTooLong { payload_len: u64, extent_len: u64 },
    /// The engine byte names no engine.
    UnknownEngine(u8),
    /// The flags byte has bits this build does not know.
    UnknownFlags(u8),
    /// The header says a user tag follows, but the bytes end first.
    Truncated,
}

/// The live tag word of the last extent length asked for: a writer that
/// writes many extents of one length (the usual case) computes the tag's
/// check once, not once a write.
#[derive(Debug, Default)]
pub(crate) struct LiveTagMemo {
    /// Extent length of `word`; `word` is 0 until the first call.
    len: u64,
    word: u64,
}

impl LiveTagMemo {
    /// `Tag::Live { len }.encode()`.
    pub(crate) fn word(&mut self, len: u64) -> u64 {
        if self.word == 0 || self.len != len {
            self.len = len;
            self.word = Tag::Live { len }.encode();
        }
        self.word
    }
}

impl LiveHeader {
    /// Bytes before the payload (the header and the user tag, if any).
    pub(crate) fn header_len(&self) -> u64 {
        header_len(self.user_tag)
    }

    /// The live tag word and the bytes after it up to the payload (24, or
    /// 32 with a user tag: `header_len() - 8` of the array): those bytes
    /// are written first, then the tag is stored over the first 8 bytes to
    /// make the extent live. (The tag is computed once, for both.)
    pub(crate) fn encode(&self, live_tags: &mut LiveTagMemo) -> (u64, [u8; 32]) {
        let tag = live_tags.word(self.extent_len);
        let mut header = [0u8; 40];
        header[0..8].copy_from_slice(&tag.to_le_bytes());
        header[8..12].copy_from_slice(&self.slot.to_le_bytes());
        header[12..16].copy_from_slice(&self.generation.to_le_bytes());
        header[16..22].copy_from_slice(&self.payload_len.to_le_bytes()[..6]);
        header[22] = self.engine.as_u8();
        header[24..28].copy_from_slice(&self.payload_crc.unwrap_or(0).to_le_bytes());
        if self.user_tag != 0 {
            header[23] = FLAG_USER_TAG;
            header[32..40].copy_from_slice(&self.user_tag.to_le_bytes());
        }
        let crc = match self.payload_crc {
            Some(_) => header_checksum(&header),
            None => !header_checksum(&header),
        };
        header[28..32].copy_from_slice(&crc.to_le_bytes());
        (tag, header[8..40].try_into().expect("32 bytes"))
    }

    /// Decodes and checks a header: its 32 bytes and, when its flags say a
    /// user tag follows, the 8 after them (`bytes` holds at least 32).
    /// Checks the tag, the header checksum, the engine, the flags and that
    /// the payload fits in the extent; the payload checksum is the
    /// caller's to check.
    pub(crate) fn decode(bytes: &[u8]) -> Result<LiveHeader, HeaderDamage> {
        let mut header = [0u8; 40];
        let Some(head) = bytes.get(..32) else {
            return Err(HeaderDamage::Truncated);
        };
        header[..32].copy_from_slice(head);
        let word = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
        let Some(Tag::Live { len: extent_len }) = Tag::decode(word) else {
            return Err(HeaderDamage::NotLive);
        };
        let flags = header[23];
        if flags & !FLAG_USER_TAG != 0 {
            return Err(HeaderDamage::UnknownFlags(flags));
        }
        if flags & FLAG_USER_TAG != 0 {
            let Some(user_tag) = bytes.get(32..40) else {
                return Err(HeaderDamage::Truncated);
            };
            header[32..40].copy_from_slice(user_tag);
        }
        let stored = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
        let computed = header_checksum(&header);
        let payload_crc = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
        let payload_crc = if stored == computed {
            Some(payload_crc)
        } else if stored == !computed && payload_crc == 0 {
            None
        } else {
            return Err(HeaderDamage::Checksum { stored, computed });
        };
        let user_tag = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
        if flags & FLAG_USER_TAG != 0 && user_tag == 0 {
            // Tag 0 is written as no tag: this header was not written so.
            return Err(HeaderDamage::UnknownFlags(flags));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes[..6].copy_from_slice(&header[16..22]);
        let payload_len = u64::from_le_bytes(len_bytes);
        let before_payload = header_len(user_tag);
        if extent_len < before_payload || payload_len > extent_len - before_payload {
            return Err(HeaderDamage::PayloadTooLong {
                payload_len,
                extent_len,
            });
        }
        let engine =
            EngineId::from_u8(header[22]).ok_or(HeaderDamage::UnknownEngine(header[22]))?;
        Ok(LiveHeader {
            extent_len,
            slot: u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")),
            generation: u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")),
            payload_len,
            engine,
            payload_crc,
            user_tag,
        })
    }

    /// The header's word at byte 24 (the payload checksum and the header
    /// checksum) once the payload checksum is `payload_crc`: one aligned
    /// store of it turns a header written without a payload checksum into
    /// one with it, so a reader or a crash sees one or the other.
    pub(crate) fn checksum_word(&self, payload_crc: u32) -> u64 {
        let summed = LiveHeader {
            payload_crc: Some(payload_crc),
            ..*self
        };
        let (_, encoded) = summed.encode(&mut LiveTagMemo::default());
        // `encoded` starts at byte 8 of the header.
        u64::from_le_bytes(encoded[16..24].try_into().expect("8 bytes"))
    }
}

/// The slot index in the first 12 bytes of a live extent's header, read as
/// it is (unchecked: for a caller that confirms it elsewhere).
pub(crate) fn slot_of_header(header: &[u8]) -> u32 {
    u32::from_le_bytes(header[8..12].try_into().expect("a header's first 12 bytes"))
}

/// The word stored at `CHECKSUM_WORD_OFFSET` of the old place of a slot
/// that compaction moved, just before that place is freed: `MOVED_MAGIC`
/// and the generation of the copy.
pub(crate) fn moved_mark(copy_generation: u32) -> u64 {
    let mut word = [0u8; 8];
    word[..4].copy_from_slice(&MOVED_MAGIC);
    word[4..].copy_from_slice(&copy_generation.to_le_bytes());
    u64::from_le_bytes(word)
}

/// If `header` (at least 32 bytes, one that does not check out as a live
/// header) is the old place of slot `slot`, generation `generation`, which
/// compaction moved: the generation of the copy. The header names them
/// (unchecked) and carries `moved_mark` where its checksums were; its tag
/// may be live still (the free comes right after the mark) or free.
pub(crate) fn moved_from(header: &[u8], slot: u32, generation: u32) -> Option<u32> {
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|bytes| bytes.try_into().ok())
            .map(u32::from_le_bytes)
    };
    (marked_moved(header) && word(8) == Some(slot) && word(12) == Some(generation))
        .then(|| word(28))
        .flatten()
}

/// Whether `header` carries `moved_mark` where its checksums were: the old
/// place of a moved slot, if the header does not check out (recovery frees
/// a live one: the process stopped between the mark and the free).
pub(crate) fn marked_moved(header: &[u8]) -> bool {
    header.get(24..28) == Some(&MOVED_MAGIC[..])
}

/// Whether the first 32 bytes of a header say a user tag follows them (so
/// a reader knows to load 8 more bytes before `LiveHeader::decode`).
pub(crate) fn user_tag_follows(header: &[u8]) -> bool {
    header
        .get(23)
        .is_some_and(|flags| flags & FLAG_USER_TAG != 0)
}

/// The header checksum: CRC32C of bytes 0..28, followed by the user tag
/// (bytes 32..40) when the flags say there is one.
#[inline]
fn header_checksum(header: &[u8; 40]) -> u32 {
    if header[23] & FLAG_USER_TAG == 0 {
        return checksum::crc32c(&header[..28]);
    }
    let mut covered = [0u8; 36];
    covered[..28].copy_from_slice(&header[..28]);
    covered[28..].copy_from_slice(&header[32..40]);
    checksum::crc32c(&covered)
}

/// Why a file's first bytes are not a region header this build can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileHeaderError {
    /// Not a region file at all (or its header is damaged); the reason says which.
    Foreign(String),
    /// A region file of another format version.
    Version(u32),
}

/// The immutable part of the file header (bytes 0..24) and its checksum.
pub(crate) fn encode_file_header() -> [u8; 28] {
    let mut header = [0u8; 28];
    header[0..8].copy_from_slice(&FILE_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(DATA_START as u32).to_le_bytes());
    header[16..20].copy_from_slice(&(EXTENT_ALIGN as u32).to_le_bytes());
    header[20..24].copy_from_slice(&(EXTENT_HEADER_LEN as u32).to_le_bytes());
    let crc = checksum::crc32c(&header[..FILE_HEADER_FIXED_LEN]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The two counters kept in the file header, outside its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counters {
    /// One more than the highest slot index ever handed out.
    pub slot_high_water: u64,
    /// The generation the next write takes.
    pub next_generation: u64,
    /// The end of the chain of extents (the cursor) when last stored.
    pub chain_end: u64,
    /// The maximum capacity the writer last opened the file with.
    pub max_capacity: u64,
    /// The file's identity, or `None` when it has none yet (a file from an
    /// earlier build) or its check fails.
    pub identity: Option<u64>,
    /// The boot id of the machine the last writer ran on (zeros if none).
    pub boot_id: [u8; 16],
}

/// The 16 bytes stored at [`IDENTITY_OFFSET`] for `identity`: the value and
/// its check, then 4 zero bytes.
pub(crate) fn encode_identity(identity: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&identity.to_le_bytes());
    let check = checksum::crc32c(&bytes[..8]);
    bytes[8..12].copy_from_slice(&check.to_le_bytes());
    bytes
}

/// The identity in 16 bytes read at [`IDENTITY_OFFSET`], if they hold one.
pub(crate) fn decode_identity(bytes: &[u8]) -> Option<u64> {
    let identity = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    (identity != 0 && bytes[..16] == encode_identity(identity)).then_some(identity)
}

/// Reads and checks the file header of an existing, non-empty file of
/// `file_len` bytes, without modifying it: the one read of the header that
/// writers, readers and tools share.
pub(crate) fn read_file_header(
    path: &std::path::Path,
    file: &std::fs::File,
    file_len: u64,
) -> crate::error::Result<Counters> {
    use std::os::unix::fs::FileExt;
    let mut probe = [0u8; FILE_HEADER_PROBE_LEN];
    let probe_len = usize::try_from(file_len)
        .unwrap_or(usize::MAX)
        .min(FILE_HEADER_PROBE_LEN);
    file.read_exact_at(&mut probe[..probe_len], 0)
        .map_err(crate::error::Error::io(path, "read header"))?;
    decode_file_header(&probe[..probe_len])
        .map_err(|error| crate::error::Error::file_header(path, error))
}

/// True when two reads of one extent header name the same tenancy: the
/// same tag (state and length), slot index and generation (bytes 0..16).
/// A reader compares the header before and after copying a payload.
pub(crate) fn same_tenancy(before: &[u8], after: &[u8]) -> bool {
    before.get(..16).is_some() && before.get(..16) == after.get(..16)
}

/// Checks the first [`FILE_HEADER_PROBE_LEN`] bytes of a file (fewer if the
/// file is shorter) and reads its counters.
pub(crate) fn decode_file_header(bytes: &[u8]) -> Result<Counters, FileHeaderError> {
    let foreign = |reason: String| Err(FileHeaderError::Foreign(reason));
    if bytes.len() < 8 || bytes[0..8] != FILE_MAGIC {
        return foreign(format!(
            "the first 8 bytes are not the magic {:?}",
            "OVFLREGN"
        ));
    }
    if bytes.len() < FILE_HEADER_MIN_LEN {
        return foreign(format!(
            "the file is {} bytes long, shorter than a region header",
            bytes.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let computed = checksum::crc32c(&bytes[..FILE_HEADER_FIXED_LEN]);
    let stored = u32_at(24);
    if stored != computed {
        return foreign(format!(
            "file header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(FileHeaderError::Version(version));
    }
    let geometry = (u32_at(12), u32_at(16), u32_at(20));
    let expected = (
        DATA_START as u32,
        EXTENT_ALIGN as u32,
        EXTENT_HEADER_LEN as u32,
    );
    if geometry != expected {
        return foreign(format!(
            "header length, alignment and extent header length are {geometry:?}, expected {expected:?}"
        ));
    }
    Ok(Counters {
        slot_high_water: u64_at(SLOT_HIGH_WATER_OFFSET as usize),
        next_generation: u64_at(NEXT_GENERATION_OFFSET as usize),
        chain_end: u64_at(CHAIN_END_OFFSET as usize),
        max_capacity: u64_at(MAX_CAPACITY_OFFSET as usize),
        identity: bytes
            .get(IDENTITY_OFFSET as usize..BOOT_ID_OFFSET as usize)
            .and_then(decode_identity),
        boot_id: bytes
            .get(BOOT_ID_OFFSET as usize..FILE_HEADER_PROBE_LEN)
            .and_then(|id| id.try_into().ok())
            .unwrap_or([0; 16]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_word_is_the_end_tag_with_its_check() {
        let body = u64::from(STATE_END) << TAG_LEN_BITS;
        assert_eq!(END_WORD, (tag_check(body) << 40) | body);
        assert_eq!(Tag::decode(END_WORD), Some(Tag::End));
    }

    fn sample() -> LiveHeader {
        LiveHeader {
            extent_len: 96,
            slot: 42,
            generation: 7,
            payload_len: 60,
            engine: EngineId::Crdt,
            payload_crc: Some(0xDEAD_BEEF),
            user_tag: 0,
        }
    }

    /// The header's bytes up to the payload (32, or 40 with a user tag).
    fn whole(header: &LiveHeader) -> Vec<u8> {
        let mut bytes = vec![0u8; header.header_len() as usize];
        let (tag, body) = header.encode(&mut LiveTagMemo::default());
        bytes[0..8].copy_from_slice(&tag.to_le_bytes());
        let rest = bytes.len() - 8;
        bytes[8..].copy_from_slice(&body[..rest]);
        bytes
    }

    #[test]
    fn the_live_tag_memo_gives_what_encode_gives() {
        let mut memo = LiveTagMemo::default();
        for len in [16, 16, 96, 4128, 96, 96, MAX_EXTENT_LEN, 16] {
            assert_eq!(memo.word(len), Tag::Live { len }.encode(), "{len}");
        }
    }

    #[test]
    fn tags_round_trip() {
        for tag in [
            Tag::End,
            Tag::Free { len: 32 },
            Tag::Live { len: 16 * 1000 },
            Tag::Free {
                len: MAX_EXTENT_LEN,
            },
        ] {
            assert_eq!(Tag::decode(tag.encode()), Some(tag));
        }
        assert_eq!(Tag::decode(0), Some(Tag::End));
        assert_eq!(Tag::decode(u64::MAX), None);
        assert_eq!(Tag::decode(0x1234_5678), None);
    }

    #[test]
    fn any_one_or_two_flipped_bits_in_a_tag_are_detected() {
        for tag in [Tag::End, Tag::Free { len: 4096 }, Tag::Live { len: 96 }] {
            let word = tag.encode();
            for a in 0..64 {
                assert_eq!(Tag::decode(word ^ (1 << a)), None, "{tag:?} bit {a}");
                for b in a + 1..64 {
                    let damaged = word ^ (1 << a) ^ (1 << b);
                    assert!(
                        damaged == 0 || Tag::decode(damaged).is_none(),
                        "{tag:?} bits {a} {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn live_header_round_trips() {
        let header = sample();
        assert_eq!(LiveHeader::decode(&whole(&header)), Ok(header));
        let unsummed = LiveHeader {
            payload_crc: None,
            ..sample()
        };
        assert_eq!(LiveHeader::decode(&whole(&unsummed)), Ok(unsummed));
    }

    #[test]
    fn the_checksum_word_turns_an_unsummed_header_into_a_summed_one() {
        for (user_tag, extent_len) in [(0, 96), (0x0123_4567_89AB_CDEF, 112)] {
            let unsummed = LiveHeader {
                payload_crc: None,
                user_tag,
                extent_len,
                ..sample()
            };
            let mut bytes = whole(&unsummed);
            let word = unsummed.checksum_word(0xDEAD_BEEF);
            bytes[24..32].copy_from_slice(&word.to_le_bytes());
            let summed = LiveHeader {
                user_tag,
                extent_len,
                ..sample()
            };
            assert_eq!(bytes, whole(&summed));
            assert_eq!(LiveHeader::decode(&bytes), Ok(summed));
        }
    }

    #[test]
    fn an_unsummed_header_with_a_nonzero_payload_checksum_is_damaged() {
        let unsummed = LiveHeader {
            payload_crc: None,
            ..sample()
        };
        let mut bytes = whole(&unsummed);
        bytes[24] = 1;
        assert!(matches!(
            LiveHeader::decode(&bytes),
            Err(HeaderDamage::Checksum { .. })
        ));
    }

    #[test]
    fn any_flipped_bit_in_a_live_header_is_detected() {
        let tagged = LiveHeader {
            user_tag: 0x0123_4567_89AB_CDEF,
            ..sample()
        };
        let unsummed = LiveHeader {
            payload_crc: None,
            ..sample()
        };
        let unsummed_tagged = LiveHeader {
            payload_crc: None,
            ..tagged
        };
        for header in [sample(), tagged, unsummed, unsummed_tagged] {
            let bytes = whole(&header);
            assert_eq!(bytes.len() as u64, header.header_len());
            for bit in 0..bytes.len() * 8 {
                let mut damaged = bytes.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    LiveHeader::decode(&damaged).is_err(),
                    "bit {bit} went unnoticed in {header:?}"
                );
            }
        }
    }

    #[test]
    fn a_user_tag_round_trips_and_needs_its_bytes() {
        let header = LiveHeader {
            extent_len: 112,
            user_tag: u64::MAX,
            ..sample()
        };
        let bytes = whole(&header);
        assert_eq!(bytes.len(), 40);
        assert_eq!(LiveHeader::decode(&bytes), Ok(header));
        assert_eq!(
            LiveHeader::decode(&bytes[..32]),
            Err(HeaderDamage::Truncated)
        );
        // Without a tag the header is the 32 bytes it always was.
        assert_eq!(whole(&sample()).len(), 32);
        assert_eq!(extent_len_for(60, header_len(0)), Some(96));
        assert_eq!(extent_len_for(60, header_len(7)), Some(112));
    }

    #[test]
    fn payload_longer_than_its_extent_is_refused() {
        let header = LiveHeader {
            payload_len: 65,
            ..sample()
        };
        assert_eq!(
            LiveHeader::decode(&whole(&header)),
            Err(HeaderDamage::PayloadTooLong {
                payload_len: 65,
                extent_len: 96
            })
        );
    }

    #[test]
    fn extent_lengths() {
        let h = EXTENT_HEADER_LEN;
        assert_eq!(extent_len_for(0, h), Some(32));
        assert_eq!(extent_len_for(1, h), Some(48));
        assert_eq!(extent_len_for(16, h), Some(48));
        assert_eq!(extent_len_for(17, h), Some(64));
        assert_eq!(extent_len_for(8, h + USER_TAG_LEN), Some(48));
        assert_eq!(extent_len_for(MAX_PAYLOAD_LEN + 1, h), None);
    }

    #[test]
    fn file_header_round_trips_and_refuses_foreign_bytes() {
        let mut file = vec![0u8; FILE_HEADER_PROBE_LEN];
        file[..28].copy_from_slice(&encode_file_header());
        file[64..72].copy_from_slice(&5u64.to_le_bytes());
        file[72..80].copy_from_slice(&9u64.to_le_bytes());
        file[80..88].copy_from_slice(&8192u64.to_le_bytes());
        file[88..96].copy_from_slice(&(1u64 << 30).to_le_bytes());
        assert_eq!(
            decode_file_header(&file),
            Ok(Counters {
                slot_high_water: 5,
                next_generation: 9,
                chain_end: 8192,
                max_capacity: 1 << 30,
                identity: None,
                boot_id: [0; 16],
            })
        );
        assert!(matches!(
            decode_file_header(&file[..40]),
            Err(FileHeaderError::Foreign(_))
        ));
        assert!(matches!(
            decode_file_header(b"hello"),
            Err(FileHeaderError::Foreign(_))
        ));
        for byte in 0..28 {
            let mut damaged = file.clone();
            damaged[byte] ^= 0x10;
            assert!(decode_file_header(&damaged).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn an_identity_is_read_only_with_its_check() {
        let mut file = vec![0u8; FILE_HEADER_PROBE_LEN];
        file[..28].copy_from_slice(&encode_file_header());
        file[104..120].copy_from_slice(&encode_identity(0x1234_5678_9abc_def0));
        assert_eq!(
            decode_file_header(&file).unwrap().identity,
            Some(0x1234_5678_9abc_def0)
        );
        for byte in 104..120 {
            let mut damaged = file.clone();
            damaged[byte] ^= 0x01;
            assert_eq!(
                decode_file_header(&damaged).unwrap().identity,
                None,
                "byte {byte}"
            );
        }
        file[104..120].fill(0);
        assert_eq!(decode_file_header(&file).unwrap().identity, None);
    }

    #[test]
    fn other_versions_are_reported_as_such() {
        let mut file = vec![0u8; FILE_HEADER_PROBE_LEN];
        file[..28].copy_from_slice(&encode_file_header());
        for version in [1u32, 3] {
            file[8..12].copy_from_slice(&version.to_le_bytes());
            let crc = checksum::crc32c(&file[..24]);
            file[24..28].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                decode_file_header(&file),
                Err(FileHeaderError::Version(version))
            );
        }
    }
}
