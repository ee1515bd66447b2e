//! [`RegionFile`]: a read-only look inside a region file, for tools.
//!
//! It takes no lock and writes nothing, so it can look at a file a writer
//! has open (it may then catch a write half done; such a slot reads as
//! damaged, never as wrong bytes). It runs the same walk as a writer's
//! `open` and reports what that would find.
//!
//! It checks the file header before it reads anything else, refuses what is
//! not a regular file, and reads the file through a window of a fixed size:
//! its memory grows with the extents it finds, never with the file's length
//! or with a number the file states. Payloads are read again, and checked
//! again, when asked for.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::EngineId;
use crate::error::{Error, Result};
use crate::layout::{
    self, Counters, DATA_START, EXTENT_ALIGN, EXTENT_HEADER_LEN, HeaderDamage, LiveHeader, Tag,
};
use crate::recovery::{DropReason, DroppedExtent, RecoveryReport};
use crate::space::{Extent, Space};
use crate::stats::{Accounting, RegionStats};
use crate::sys::mapping;

/// A live slot as the file describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    /// The slot index.
    pub slot: usize,
    /// Offset of the slot's extent in the file.
    pub offset: u64,
    /// Length of the extent (header, payload and slack).
    pub extent_len: u64,
    /// Length of the payload.
    pub payload_len: u64,
    /// Generation of the write that filled the slot.
    pub generation: u32,
    /// The engine that wrote it.
    pub engine: EngineId,
}

/// What an extent of the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ExtentKind {
    /// A live slot.
    Live(SlotInfo),
    /// Free space (neighbouring free extents merged).
    Free,
    /// Damaged or doubtful bytes a writer's open would drop.
    Dropped {
        /// The slot the extent claimed, if its header could be read.
        slot: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

/// One extent of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtentInfo {
    /// Offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it holds.
    pub kind: ExtentKind,
}

/// A read-only look at a region file: its slots, extents, holes and damage,
/// as a writer's open would find them.
///
/// It checks the file header first and reads nothing else from a file that
/// is not a region; it refuses a path that is not a regular file (a
/// directory, FIFO or device) without reading from it. It keeps a
/// description of every extent in memory (a few dozen bytes each), not the
/// file's bytes: [`read`](Self::read) reads a payload when asked.
///
/// ```
/// use overflow_region::{EngineId, OverflowRegion, RegionFile};
///
/// # fn main() -> overflow_region::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("r");
/// let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 1 << 24)?;
/// let slot = region.write(b"look at me", EngineId::Bridge)?;
///
/// // No lock needed: the writer still has the file open.
/// let file = RegionFile::open(&path)?;
/// assert_eq!(file.read(slot)?, b"look at me");
/// assert!(file.is_intact());
/// assert_eq!(file.slots()[0].engine, EngineId::Bridge);
/// assert_eq!(file.stats().max_capacity, 1 << 24);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RegionFile {
    path: PathBuf,
    file: File,
    /// Live slots, sorted by index.
    slots: Vec<SlotInfo>,
    /// The payload checksum of each of `slots`.
    payload_crcs: Vec<u32>,
    slot_count: u64,
    extents: Vec<ExtentInfo>,
    holes: Vec<(u64, u64)>,
    allocated_bytes: u64,
    report: RecoveryReport,
    stats: RegionStats,
}

impl RegionFile {
    /// Offset of the first extent: the file header is this long
    /// ([`file_format`](crate::file_format)).
    pub const DATA_START: u64 = DATA_START;
    /// Length of the header at the start of every extent.
    pub const EXTENT_HEADER_LEN: u64 = EXTENT_HEADER_LEN;
    /// Every extent starts at, and is a multiple of, this many bytes.
    pub const EXTENT_ALIGN: u64 = EXTENT_ALIGN;

    /// Opens the file at `path` read-only and walks it.
    ///
    /// Memory: a few dozen bytes per extent found, plus a fixed read window
    /// of 1 MiB; never in proportion to the file's length or to a counter
    /// or slot index stored in it. Time: one read of the whole file (every
    /// payload is checked against its checksum).
    ///
    /// # Errors
    ///
    /// [`Error::NotARegion`] if the path is not a regular file (a directory,
    /// FIFO, device or socket: nothing is read from it) or its header is not
    /// a region's (nothing past the header is read);
    /// [`Error::UnsupportedVersion`] for a region of another format version;
    /// [`Error::Io`] if it cannot be opened or read (for instance if a
    /// writer shrinks it meanwhile).
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_regular_file(path)?;
        let metadata = file.metadata().map_err(Error::io(path, "stat"))?;
        let file_size = metadata.len();
        let mut probe = vec![0u8; file_size.min(DATA_START) as usize];
        file.read_exact_at(&mut probe, 0)
            .map_err(Error::io(path, "read"))?;
        let counters =
            layout::decode_file_header(&probe).map_err(|error| Error::file_header(path, error))?;
        if file_size < DATA_START {
            return Err(Error::NotARegion {
                path: path.to_owned(),
                reason: format!(
                    "the file is {file_size} bytes, shorter than the {DATA_START}-byte header"
                ),
            });
        }
        let holes = mapping::find_holes(&file, DATA_START, file_size)
            .map_err(Error::io(path, "seek holes"))?;
        let mut window = Window::new(&file, file_size);
        let walked = walk(&mut window, counters).map_err(Error::io(path, "read"))?;
        drop(window);

        let mut accounting = Accounting::default();
        let mut slots: Vec<(SlotInfo, u32)> = walked
            .slots
            .iter()
            .map(|&(extent, header)| {
                accounting.add(header.engine, header.payload_len, extent.len);
                let info = SlotInfo {
                    slot: header.slot as usize,
                    offset: extent.offset,
                    extent_len: extent.len,
                    payload_len: header.payload_len,
                    generation: header.generation,
                    engine: header.engine,
                };
                (info, header.payload_crc)
            })
            .collect();
        slots.sort_by_key(|(slot, _)| slot.slot);
        let (slots, payload_crcs): (Vec<SlotInfo>, Vec<u32>) = slots.into_iter().unzip();

        // Dropped extents were made free in the rebuilt space (merged with
        // their free neighbours): show them as what they are, and the free
        // space around them as free.
        let mut dropped: Vec<(u64, u64)> = walked
            .report
            .dropped
            .iter()
            .map(|d| (d.offset, d.offset + d.len))
            .collect();
        dropped.sort_unstable();
        let mut extents: Vec<ExtentInfo> = slots
            .iter()
            .map(|&slot| ExtentInfo {
                offset: slot.offset,
                len: slot.extent_len,
                kind: ExtentKind::Live(slot),
            })
            .collect();
        // Extents that lost to a newer copy of their slot are free once a
        // writer opens the file; those reported as dropped show as dropped.
        let free = walked
            .space
            .free_extents()
            .chain(walked.to_free.iter().copied().filter(|extent| {
                dropped
                    .binary_search_by_key(&extent.offset, |&(start, _)| start)
                    .is_err()
            }));
        for extent in free {
            let mut at = extent.offset;
            let first = dropped.partition_point(|&(_, end)| end <= extent.offset);
            for &(start, end) in dropped[first..]
                .iter()
                .take_while(|&&(start, _)| start < extent.end())
            {
                if start > at {
                    extents.push(ExtentInfo {
                        offset: at,
                        len: start - at,
                        kind: ExtentKind::Free,
                    });
                }
                at = at.max(end);
            }
            if at < extent.end() {
                extents.push(ExtentInfo {
                    offset: at,
                    len: extent.end() - at,
                    kind: ExtentKind::Free,
                });
            }
        }
        for dropped in &walked.report.dropped {
            extents.push(ExtentInfo {
                offset: dropped.offset,
                len: dropped.len,
                kind: ExtentKind::Dropped {
                    slot: dropped.slot,
                    reason: describe(&dropped.reason),
                },
            });
        }
        extents.sort_by_key(|extent| extent.offset);

        let live_slots = slots.len() as u64;
        let cursor = walked.space.cursor();
        let stats = RegionStats {
            engines: accounting.engines,
            live_slots,
            live_bytes: accounting.live_bytes(),
            slot_count: walked.slot_high_water,
            free_extents: walked.space.free_extent_count() as u64,
            free_bytes: walked.space.free_bytes(),
            largest_free_extent: walked.space.largest_free().unwrap_or(0),
            slack_bytes: accounting.slack_bytes,
            header_bytes: live_slots * EXTENT_HEADER_LEN,
            punched_bytes: holes.iter().map(|(start, end)| end - start).sum(),
            used_bytes: cursor - DATA_START,
            file_size,
            max_capacity: counters.max_capacity,
        };
        Ok(RegionFile {
            path: path.to_owned(),
            file,
            slots,
            payload_crcs,
            slot_count: walked.slot_high_water,
            extents,
            holes,
            allocated_bytes: metadata.blocks().saturating_mul(512),
            report: walked.report,
            stats,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Live slots, sorted by index (only those found: a slot index has an
    /// entry only if an intact extent holds it).
    pub fn slots(&self) -> &[SlotInfo] {
        &self.slots
    }

    /// Slot indices handed out, occupied or freed (the file header's
    /// counter, believed only as far as the file's length and its recorded
    /// maximum capacity allow).
    pub fn slot_count(&self) -> usize {
        usize::try_from(self.slot_count).unwrap_or(usize::MAX)
    }

    /// A live slot's description.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSlot`] past the slot count, [`Error::SlotFree`] for
    /// an index that holds nothing intact (freed, or held by an extent
    /// whose damage the [`recovery`](Self::recovery) report lists).
    pub fn slot(&self, slot_index: usize) -> Result<&SlotInfo> {
        self.find(slot_index).map(|found| &self.slots[found])
    }

    /// The position of `slot_index` in `slots`.
    fn find(&self, slot_index: usize) -> Result<usize> {
        match self
            .slots
            .binary_search_by_key(&slot_index, |slot| slot.slot)
        {
            Ok(found) => Ok(found),
            Err(_) if slot_index < self.slot_count() => Err(Error::SlotFree { slot: slot_index }),
            Err(_) => Err(Error::UnknownSlot {
                slot: slot_index,
                slot_count: self.slot_count(),
            }),
        }
    }

    /// A live slot's bytes, read from the file now and checked against
    /// their checksum again.
    ///
    /// # Errors
    ///
    /// As [`slot`](Self::slot); [`Error::SlotChanged`] if the bytes no
    /// longer match their checksum (a writer changed the file since it was
    /// walked); [`Error::Io`] if they cannot be read.
    pub fn read(&self, slot_index: usize) -> Result<Vec<u8>> {
        let found = self.find(slot_index)?;
        let slot = &self.slots[found];
        let len = usize::try_from(slot.payload_len).map_err(|_| Error::Io {
            path: self.path.clone(),
            operation: "read",
            source: io::Error::from(io::ErrorKind::OutOfMemory),
        })?;
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, slot.offset + EXTENT_HEADER_LEN)
            .map_err(Error::io(&self.path, "read"))?;
        if crc32c::crc32c(&bytes) != self.payload_crcs[found] {
            return Err(Error::SlotChanged {
                slot: slot_index,
                generation: u64::from(slot.generation),
                reason: "its bytes no longer match their checksum: the file changed since it was opened",
            });
        }
        Ok(bytes)
    }

    /// Every extent, by offset: live, free, and dropped.
    pub fn extents(&self) -> &[ExtentInfo] {
        &self.extents
    }

    /// Byte ranges the file system reports as holes (punched pages; some file
    /// systems report allocated but never written space too).
    pub fn holes(&self) -> &[(u64, u64)] {
        &self.holes
    }

    /// Bytes of disk the file system has allocated to the file (its
    /// `st_blocks` times 512), when it was opened.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated_bytes
    }

    /// What a writer's open would find: slots, drops, repairs.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// True when no extent is damaged.
    pub fn is_intact(&self) -> bool {
        self.report.dropped.is_empty()
    }

    /// Accounting as [`OverflowRegion::stats`](crate::OverflowRegion::stats)
    /// gives it. `max_capacity` is the maximum capacity the file records
    /// (file header offset 88): the one its writer last opened it with.
    pub fn stats(&self) -> &RegionStats {
        &self.stats
    }
}

/// Opens `path` read-only if it is a regular file; anything else is refused
/// by its type, before it is opened (a FIFO would block the open) and again
/// after (the path may have changed in between).
fn open_regular_file(path: &Path) -> Result<File> {
    let refuse = |what: &str| Error::NotARegion {
        path: path.to_owned(),
        reason: format!("it is {what}, not a regular file"),
    };
    let metadata = std::fs::metadata(path).map_err(Error::io(path, "open"))?;
    if let Some(what) = not_regular(metadata.file_type()) {
        return Err(refuse(what));
    }
    // Non-blocking, so that a FIFO put in the file's place since cannot
    // hang the open; no effect on a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(Error::io(path, "open"))?;
    let metadata = file.metadata().map_err(Error::io(path, "stat"))?;
    match not_regular(metadata.file_type()) {
        Some(what) => Err(refuse(what)),
        None => Ok(file),
    }
}

/// What a file of this type is, in words, unless it is a regular file.
fn not_regular(kind: std::fs::FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("of an unknown type")
    }
}

/// The file, read through a window of at most [`Window::LEN`] bytes.
struct Window<'a> {
    file: &'a File,
    eof: u64,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Window<'a> {
    const LEN: u64 = 1 << 20;

    fn new(file: &'a File, eof: u64) -> Self {
        Window {
            file,
            eof,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// `len` bytes (at most [`Window::LEN`]) at `at`; `at + len` is at most
    /// the file's length.
    fn bytes(&mut self, at: u64, len: u64) -> io::Result<&[u8]> {
        debug_assert!(len <= Self::LEN && at + len <= self.eof);
        if at < self.start || at + len > self.start + self.buf.len() as u64 {
            let fill = (self.eof - at).min(Self::LEN) as usize;
            self.buf.resize(fill, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.start = at;
        }
        let from = (at - self.start) as usize;
        Ok(&self.buf[from..from + len as usize])
    }

    fn word(&mut self, at: u64) -> io::Result<u64> {
        let bytes = self.bytes(at, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn header(&mut self, at: u64) -> io::Result<[u8; 32]> {
        let bytes = self.bytes(at, EXTENT_HEADER_LEN)?;
        Ok(bytes.try_into().expect("32 bytes"))
    }

    /// CRC32C of `len` bytes at `at`, read a window at a time.
    fn crc(&mut self, at: u64, len: u64) -> io::Result<u32> {
        let mut crc = 0;
        let mut done = 0;
        while done < len {
            let step = (len - done).min(Self::LEN);
            crc = crc32c::crc32c_append(crc, self.bytes(at + done, step)?);
            done += step;
        }
        Ok(crc)
    }
}

/// What [`walk`] found.
struct Walked {
    /// Intact live slots, one per slot index, in file order.
    slots: Vec<(Extent, LiveHeader)>,
    /// Free space and cursor, rebuilt.
    space: Space,
    /// Slot indices handed out (occupied or freed).
    slot_high_water: u64,
    /// Live extents that lost to a newer copy of their slot.
    to_free: Vec<Extent>,
    report: RecoveryReport,
}

/// A run of adjacent extents that end up free, for counting repairs.
struct FreeRun {
    /// True while the run is one extent that already carries the right tag.
    already_tagged: bool,
}

/// The walk of a writer's open (the crate's recovery, docs/FORMAT.md),
/// over a window instead of the whole file: the same extents are live,
/// free and dropped, for the same reasons. Slots found are kept in a map
/// keyed by index, so memory follows the extents found, not the indices.
fn walk(window: &mut Window<'_>, counters: Counters) -> io::Result<Walked> {
    let started = std::time::Instant::now();
    let eof = window.eof;
    let fits = |at: u64, len: u64| {
        len >= EXTENT_HEADER_LEN
            && len.is_multiple_of(EXTENT_ALIGN)
            && at.checked_add(len).is_some_and(|end| end <= eof)
    };
    let fits_free = |at: u64, len: u64| {
        len >= EXTENT_ALIGN
            && len.is_multiple_of(EXTENT_ALIGN)
            && at.checked_add(len).is_some_and(|end| end <= eof)
    };
    // As recovery: an index past this cannot have been handed out in a file
    // this size, or one its writer may grow it to.
    let data_limit = eof.max(counters.max_capacity.min(1 << 48));
    let slot_limit = (data_limit.saturating_sub(DATA_START) / EXTENT_HEADER_LEN + 1) as usize;
    let chain_end = counters.chain_end.min(eof);

    let mut space = Space::new(DATA_START, eof.max(DATA_START), EXTENT_ALIGN);
    let mut report = RecoveryReport::default();
    let mut slots: Vec<(Extent, LiveHeader)> = Vec::new();
    let mut slot_owner: BTreeMap<u32, usize> = BTreeMap::new();
    let mut to_free = Vec::new();
    let mut repairs = 0;
    let mut run: Option<FreeRun> = None;
    let mut clean_end = false;
    let mut moves_finished = 0;

    let free = |space: &mut Space, run: &mut Option<FreeRun>, extent: Extent, tagged: bool| {
        space.recover_free(extent);
        match run {
            Some(run) => run.already_tagged = false,
            None => {
                *run = Some(FreeRun {
                    already_tagged: tagged,
                })
            }
        }
    };

    let mut pos = DATA_START;
    while pos + EXTENT_HEADER_LEN <= eof {
        let tag = Tag::decode(window.word(pos)?);
        match tag {
            Some(Tag::End) if pos >= chain_end => {
                clean_end = true;
                break;
            }
            Some(Tag::End) => {
                let Some(next) = resync(window, pos, chain_end, &fits)? else {
                    clean_end = true;
                    break;
                };
                report.dropped.push(DroppedExtent {
                    offset: pos,
                    len: next - pos,
                    slot: None,
                    reason: DropReason::DamagedHeader {
                        detail: format!(
                            "the chain breaks at offset {pos}, before its stored end {chain_end}; \
                             intact extents resume at {next}"
                        ),
                    },
                });
                let extent = Extent {
                    offset: pos,
                    len: next - pos,
                };
                free(&mut space, &mut run, extent, false);
                pos = next;
                continue;
            }
            Some(Tag::Free { len }) if fits_free(pos, len) => {
                free(&mut space, &mut run, Extent { offset: pos, len }, true);
                pos += len;
                continue;
            }
            Some(Tag::Live { len }) if fits(pos, len) => {
                if let Ok(header) = LiveHeader::decode(&window.header(pos)?) {
                    let extent = Extent { offset: pos, len };
                    let computed = window.crc(pos + EXTENT_HEADER_LEN, header.payload_len)?;
                    let slot = header.slot as usize;
                    let drop = if computed != header.payload_crc {
                        Some(DropReason::PayloadChecksum {
                            stored: header.payload_crc,
                            computed,
                        })
                    } else if slot >= slot_limit {
                        Some(DropReason::SlotOutOfRange { limit: slot_limit })
                    } else {
                        None
                    };
                    if let Some(reason) = drop {
                        report.dropped.push(DroppedExtent {
                            offset: pos,
                            len,
                            slot: Some(slot),
                            reason,
                        });
                        free(&mut space, &mut run, extent, false);
                    } else {
                        if run.take().is_some_and(|run| !run.already_tagged) {
                            repairs += 1;
                        }
                        space.recover_allocated(extent);
                        match slot_owner.get(&header.slot) {
                            None => {
                                slot_owner.insert(header.slot, slots.len());
                                slots.push((extent, header));
                            }
                            Some(&kept_at) => {
                                let kept = &mut slots[kept_at];
                                // Generations wrap; the nearer one ahead is newer.
                                let newer = header.generation.wrapping_sub(kept.1.generation)
                                    < u32::MAX / 2;
                                let (winner, loser) = if newer {
                                    ((extent, header), *kept)
                                } else {
                                    (*kept, (extent, header))
                                };
                                *kept = winner;
                                to_free.push(loser.0);
                                let same_bytes = loser.1.payload_len == winner.1.payload_len
                                    && loser.1.payload_crc == winner.1.payload_crc;
                                if same_bytes {
                                    // A compaction move cut short: finishing
                                    // it loses nothing.
                                    moves_finished += 1;
                                } else {
                                    report.dropped.push(DroppedExtent {
                                        offset: loser.0.offset,
                                        len: loser.0.len,
                                        slot: Some(slot),
                                        reason: DropReason::Duplicate {
                                            kept_offset: winner.0.offset,
                                        },
                                    });
                                }
                            }
                        }
                    }
                    pos += len;
                    continue;
                }
            }
            _ => {}
        }
        // The header at `pos` cannot be trusted: skip to the next intact
        // live header, and drop what lies between.
        let detail = damage_detail(window, pos, tag)?;
        let Some(next) = resync(window, pos, eof, &fits)? else {
            report.dropped.push(DroppedExtent {
                offset: pos,
                len: eof - pos,
                slot: None,
                reason: DropReason::DamagedHeader { detail },
            });
            break;
        };
        report.dropped.push(DroppedExtent {
            offset: pos,
            len: next - pos,
            slot: None,
            reason: DropReason::DamagedHeader { detail },
        });
        let extent = Extent {
            offset: pos,
            len: next - pos,
        };
        free(&mut space, &mut run, extent, false);
        pos = next;
    }

    let cursor = space.finish_recovery();
    if run.take().is_some() {
        // Free space reaching the end of the chain is given back: one end mark.
        repairs += 1;
    } else if !clean_end && pos + 8 <= eof && window.word(pos)? != Tag::End.encode() {
        repairs += 1;
    }

    let max_slot_seen = slot_owner
        .last_key_value()
        .map_or(0, |(&slot, _)| u64::from(slot) + 1);
    let slot_high_water = if counters.slot_high_water <= (slot_limit as u64).max(max_slot_seen) {
        counters.slot_high_water.max(max_slot_seen)
    } else {
        max_slot_seen
    };
    report.slots_recovered = slots.len();
    report.bytes_scanned = pos.max(cursor).min(eof);
    report.repairs = repairs + moves_finished;
    report.duration = started.elapsed();
    Ok(Walked {
        slots,
        space,
        slot_high_water,
        to_free,
        report,
    })
}

/// The offset of the next trustworthy header after the one at `pos`, before
/// `limit`: a live header whose checksums hold and whose length fits in the
/// file. `None` if there is none.
fn resync(
    window: &mut Window<'_>,
    pos: u64,
    limit: u64,
    fits: &dyn Fn(u64, u64) -> bool,
) -> io::Result<Option<u64>> {
    let limit = limit.min(window.eof);
    let mut at = pos + EXTENT_ALIGN;
    while at + EXTENT_HEADER_LEN <= limit {
        if let Ok(live) = LiveHeader::decode(&window.header(at)?)
            && fits(at, live.extent_len)
        {
            return Ok(Some(at));
        }
        at += EXTENT_ALIGN;
    }
    Ok(None)
}

/// Words for a damaged header, for the report.
fn damage_detail(window: &mut Window<'_>, pos: u64, tag: Option<Tag>) -> io::Result<String> {
    let eof = window.eof;
    Ok(match tag {
        None => format!(
            "tag word {:#018x} at offset {pos} is not an extent tag",
            window.word(pos)?
        ),
        Some(Tag::Free { len }) | Some(Tag::Live { len })
            if len < EXTENT_HEADER_LEN || pos.checked_add(len).is_none_or(|end| end > eof) =>
        {
            format!(
                "extent at offset {pos} claims {len} bytes, past the end of the {eof}-byte file or shorter than a header"
            )
        }
        _ => {
            let damage: Option<HeaderDamage> = LiveHeader::decode(&window.header(pos)?).err();
            format!("live header at offset {pos}: {damage:?}")
        }
    })
}

/// A drop reason in words.
fn describe(reason: &DropReason) -> String {
    match reason {
        DropReason::DamagedHeader { detail } => format!("damaged header: {detail}"),
        DropReason::PayloadChecksum { stored, computed } => {
            format!("payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")
        }
        DropReason::Duplicate { kept_offset } => {
            format!("older copy of a slot also at offset {kept_offset}")
        }
        DropReason::SlotOutOfRange { limit } => {
            format!("slot index past {limit}, the most a file this size can hold")
        }
    }
}
