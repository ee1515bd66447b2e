//! [`RegionFile`]: a read-only look inside a region file, for tools.
//!
//! It takes no lock and writes nothing, so it can look at a file a writer
//! has open (it may then catch a write half done; such a slot reads as
//! damaged, never as wrong bytes). It runs the same walk as a writer's
//! `open` and reports what that would find, with every checksummed payload
//! checked, as that open checks them after a reboot: on the boot that wrote
//! the file a writer's open reads headers only, and keeps the slots whose
//! payloads this reports as damaged
//! ([`OverflowRegion::verify`](crate::OverflowRegion::verify) finds them).
//!
//! It checks the file header before it reads anything else, refuses what is
//! not a regular file, and reads the file through a window of a fixed size:
//! its memory grows with the extents it finds, never with the file's length
//! or with a number the file states. Payloads are read again, and checked
//! again, when asked for.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::EngineId;
use crate::error::{Error, Result};
use crate::layout::{self, DATA_START, EXTENT_ALIGN, EXTENT_HEADER_LEN, LiveHeader};
use crate::recovery::{self, DropReason, RecoveryReport};
use crate::space::Space;
use crate::stats::{Accounting, RegionStats};
use crate::sys::{file, mapping};

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
    /// The tag it was written with
    /// ([`OverflowRegion::write_tagged`](crate::OverflowRegion::write_tagged);
    /// 0 for none).
    pub tag: u64,
}

/// What an extent of the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ExtentKind {
    /// A live slot.
    Live(SlotInfo),
    /// Free space (neighbouring free extents merged).
    Free,
    /// Damaged or doubtful bytes a writer's open would drop (after a
    /// reboot; on the boot that wrote the file it checks no payload, and
    /// keeps a slot whose payload alone is damaged).
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
/// as a writer's open would find them with every checksummed payload
/// checked, as it checks them after a reboot (on the boot that wrote the
/// file a writer's open reads headers only, and keeps slots reported here
/// as damaged: [`OverflowRegion::verify`](crate::OverflowRegion::verify)
/// finds them).
///
/// It checks the file header first and reads nothing else from a file that
/// is not a region; it refuses a path that is not a regular file (a
/// directory, FIFO or device) without reading from it. It keeps a
/// description of every extent in memory, not the file's bytes (about 60
/// bytes per extent at the peak of [`open`](Self::open), for a file whose
/// live and free extents alternate: 63 measured, for 10 M extents 630 MB of
/// resident memory in `overflow-region stat`): [`read`](Self::read) reads a
/// payload when asked.
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
    /// The payload checksum of each of `slots` (`None`: not computed yet).
    payload_crcs: Vec<Option<u32>>,
    slot_count: u64,
    /// Every extent, by offset.
    spans: Vec<Span>,
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
    /// Memory: a few dozen bytes per extent found (48 per live slot, 24 per
    /// extent, and the walk's own tables while it runs), plus a fixed read window
    /// of 1 MiB; never in proportion to the file's length or to a counter
    /// or slot index stored in it. Time: one read of the whole file (every
    /// payload is checked against its checksum).
    ///
    /// # Errors
    ///
    /// [`Error::NotAFile`] if the path is not a regular file (a directory,
    /// FIFO, device, socket or a file in `/proc`: nothing is read from it),
    /// [`Error::NotARegion`] if its header is not a region's (nothing past
    /// the header is read);
    /// [`Error::UnsupportedVersion`] for a region of another format version;
    /// [`Error::Io`] if it cannot be opened or read (for instance if a
    /// writer shrinks it meanwhile).
    pub fn open(path: &Path) -> Result<Self> {
        let file = file::open_regular(path, false)
            .map_err(|refused| Error::open_refused(path, refused))?
            .file;
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
        // The writer's walk, through a window: what its open would find.
        let mut window = Window::new(&file, file_size);
        let space = Space::new(DATA_START, file_size, EXTENT_ALIGN);
        // Every checksummed payload is checked; those not checksummed yet
        // are kept as the writer would keep them: only on the boot that
        // wrote them.
        let same_boot = crate::sys::file::boot_id().is_some_and(|boot| boot == counters.boot_id);
        let checks = recovery::Checks {
            verify_payloads: true,
            keep_unsummed: same_boot,
        };
        let walked = recovery::recover(&mut window, counters, space, checks)
            .map_err(Error::io(path, "read"))?;

        let slot_count = walked.slots.len() as u64;
        let mut accounting = Accounting::default();
        let mut slots: Vec<SlotInfo> = Vec::with_capacity(walked.slots.live());
        let mut payload_crcs: Vec<Option<u32>> = Vec::with_capacity(walked.slots.live());
        for (index, live) in walked.slots.iter_live() {
            accounting.add(&live);
            // The walk decoded this header; it is read again for what the
            // slot table does not keep (a writer changing the file since
            // leaves no tag and no checksum to show).
            let header =
                recovery::header_at(&mut window, live.offset).map_err(Error::io(path, "read"))?;
            let header = LiveHeader::decode(header)
                .ok()
                .filter(|header| header.generation == live.generation);
            slots.push(SlotInfo {
                slot: index,
                offset: live.offset,
                extent_len: live.extent_len,
                payload_len: live.payload_len,
                generation: live.generation,
                engine: live.engine,
                tag: header.map_or(0, |header| header.user_tag),
            });
            payload_crcs.push(header.and_then(|header| header.payload_crc));
        }
        drop(window);
        let recovery::Recovered {
            slots: table,
            space: walked_space,
            to_free,
            report,
            ..
        } = walked;
        drop(table);

        // Dropped extents were made free in the rebuilt space (merged with
        // their free neighbours): show them as what they are, and the free
        // space around them as free.
        let mut dropped: Vec<(u64, u64)> = report
            .dropped
            .iter()
            .map(|d| (d.offset, d.offset + d.len))
            .collect();
        dropped.sort_unstable();
        let mut spans: Vec<Span> =
            Vec::with_capacity(slots.len() + walked_space.free_extent_count());
        spans.extend(slots.iter().enumerate().map(|(at, slot)| Span {
            offset: slot.offset,
            len: slot.extent_len,
            kind: SpanKind::Live(at as u32),
        }));
        // Extents that lost to a newer copy of their slot are free once a
        // writer opens the file; those reported as dropped show as dropped.
        let free = walked_space
            .free_extents()
            .chain(to_free.iter().copied().filter(|extent| {
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
                    spans.push(Span::free(at, start));
                }
                at = at.max(end);
            }
            if at < extent.end() {
                spans.push(Span::free(at, extent.end()));
            }
        }
        spans.extend(report.dropped.iter().enumerate().map(|(at, dropped)| Span {
            offset: dropped.offset,
            len: dropped.len,
            kind: SpanKind::Dropped(at as u32),
        }));
        // In place: a stable sort would take a buffer as long again.
        spans.sort_unstable_by_key(|span| span.offset);

        let live_slots = slots.len() as u64;
        let cursor = walked_space.cursor();
        let stats = RegionStats {
            engines: accounting.engines,
            live_slots,
            live_bytes: accounting.live_bytes(),
            slot_count,
            free_extents: walked_space.free_extent_count() as u64,
            free_bytes: walked_space.free_bytes(),
            largest_free_extent: walked_space.largest_free().unwrap_or(0),
            slack_bytes: accounting.slack_bytes,
            header_bytes: accounting.header_bytes,
            punched_bytes: holes.iter().map(|(start, end)| end - start).sum(),
            used_bytes: cursor - DATA_START,
            file_size,
            auto_moved_extents: 0,
            auto_moved_bytes: 0,
            retired_bytes: 0,
            max_capacity: counters.max_capacity,
        };
        Ok(RegionFile {
            path: path.to_owned(),
            file,
            slots,
            payload_crcs,
            slot_count,
            spans,
            holes,
            allocated_bytes: metadata.blocks().saturating_mul(512),
            report,
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
    /// counter, believed only if it is at most 65 536 + 2 × the extents the
    /// walk read; never less than the highest index found + 1:
    /// docs/FORMAT.md, step 5 of recovery).
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
            .read_exact_at(&mut bytes, slot.offset + layout::header_len(slot.tag))
            .map_err(Error::io(&self.path, "read"))?;
        let changed = match self.payload_crcs[found] {
            Some(crc) => crc32c::crc32c(&bytes) != crc,
            // No checksum yet: the bytes are the slot's if its header still
            // names it, with the generation walked, after they were read (a
            // writer never changes a live payload, and every write takes a
            // new generation).
            None => {
                let mut header = [0u8; (EXTENT_HEADER_LEN + layout::USER_TAG_LEN) as usize];
                let header = &mut header[..layout::header_len(slot.tag) as usize];
                self.file
                    .read_exact_at(header, slot.offset)
                    .map_err(Error::io(&self.path, "read"))?;
                !LiveHeader::decode(header).is_ok_and(|header| {
                    header.slot as usize == slot_index && header.generation == slot.generation
                })
            }
        };
        if changed {
            return Err(Error::SlotChanged {
                slot: slot_index,
                generation: u64::from(slot.generation),
                reason: "its bytes no longer match their checksum or header: the file changed since it was opened",
                moved: false,
            });
        }
        Ok(bytes)
    }

    /// Every extent, by offset: live, free, and dropped.
    ///
    /// Each is built when the iterator reaches it: the file keeps about
    /// 24 bytes per extent, not a whole [`ExtentInfo`].
    pub fn extents(&self) -> impl ExactSizeIterator<Item = ExtentInfo> + DoubleEndedIterator + '_ {
        self.spans.iter().map(|span| ExtentInfo {
            offset: span.offset,
            len: span.len,
            kind: match span.kind {
                SpanKind::Live(at) => ExtentKind::Live(self.slots[at as usize]),
                SpanKind::Free => ExtentKind::Free,
                SpanKind::Dropped(at) => {
                    let dropped = &self.report.dropped[at as usize];
                    ExtentKind::Dropped {
                        slot: dropped.slot,
                        reason: describe(&dropped.reason),
                    }
                }
            },
        })
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

    /// What a writer's open would find, every checksummed payload checked
    /// (as after a reboot: see [`RegionFile`]): slots, drops, repairs.
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

/// One extent of the file, as [`RegionFile`] keeps it: what
/// [`RegionFile::extents`] expands into an [`ExtentInfo`].
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    len: u64,
    kind: SpanKind,
}

/// What a [`Span`] holds.
#[derive(Debug, Clone, Copy)]
enum SpanKind {
    /// The live slot at this position of `RegionFile::slots`.
    Live(u32),
    Free,
    /// The extent at this position of the report's dropped extents.
    Dropped(u32),
}

impl Span {
    /// Free space from `start` to `end`.
    fn free(start: u64, end: u64) -> Span {
        Span {
            offset: start,
            len: end - start,
            kind: SpanKind::Free,
        }
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
}

impl recovery::Source for Window<'_> {
    fn len(&self) -> u64 {
        self.eof
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

/// A drop reason in words.
fn describe(reason: &DropReason) -> String {
    match reason {
        DropReason::DamagedHeader { detail } => format!("damaged header: {detail}"),
        DropReason::PayloadChecksum { stored, computed } => {
            format!("payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")
        }
        DropReason::NotChecksummed => {
            "written after the last sync on another boot: no payload checksum to check it by"
                .to_owned()
        }
        DropReason::Duplicate { kept_offset } => {
            format!("older copy of a slot also at offset {kept_offset}")
        }
        DropReason::SlotOutOfRange { limit } => {
            format!("slot index past {limit}, the most a file this size can hold")
        }
    }
}
