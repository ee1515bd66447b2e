//! [`RegionFile`]: a read-only look inside a region file, for tools.
//!
//! It reads a snapshot of the file, takes no lock and writes nothing, so it
//! can look at a file a writer has open (the snapshot may then catch a write
//! half done; such a slot reads as damaged, never as wrong bytes). It runs
//! the same walk as recovery and reports what a writer's `open` would find.
//! The snapshot is read into memory whole (a copy, not a mapping, because
//! a writer may change or shrink the file meanwhile): looking at a file
//! takes as much memory as the file is long.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::EngineId;
use crate::error::{Error, Result};
use crate::layout::{self, DATA_START, EXTENT_HEADER_LEN};
use crate::recovery::{self, DropReason, RecoveryReport};
use crate::space::Space;
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

/// A read-only snapshot of a region file: its slots, extents, holes and
/// damage. It holds the whole file in memory.
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
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RegionFile {
    path: PathBuf,
    bytes: Vec<u8>,
    slots: Vec<SlotInfo>,
    slot_count: u64,
    extents: Vec<ExtentInfo>,
    holes: Vec<(u64, u64)>,
    report: RecoveryReport,
    stats: RegionStats,
}

impl RegionFile {
    /// Reads and walks the file at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::NotARegion`] or [`Error::UnsupportedVersion`] if it is not a
    /// region this build reads, [`Error::Io`] if it cannot be read.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(Error::io(path, "open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(Error::io(path, "read"))?;
        let counters =
            layout::decode_file_header(&bytes).map_err(|error| Error::file_header(path, error))?;
        let file_size = bytes.len() as u64;
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
        let recovered =
            recovery::recover(&bytes, counters, Space::new(DATA_START, u64::MAX / 2, 16));

        let mut accounting = Accounting::default();
        let mut slots: Vec<SlotInfo> = recovered
            .slots
            .iter()
            .filter(|found| !recovered.to_free.contains(&found.extent))
            .map(|found| {
                let header = found.header;
                accounting.add(&found.live_slot());
                SlotInfo {
                    slot: header.slot as usize,
                    offset: found.extent.offset,
                    extent_len: found.extent.len,
                    payload_len: header.payload_len,
                    generation: header.generation,
                    engine: header.engine,
                }
            })
            .collect();
        slots.sort_by_key(|slot| slot.slot);

        // Dropped extents were made free in the rebuilt space (merged with
        // their free neighbours): show them as what they are, and the free
        // space around them as free.
        let mut dropped: Vec<(u64, u64)> = recovered
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
        let free = recovered.space.free_extents().chain(
            recovered
                .to_free
                .iter()
                .copied()
                .filter(|extent| !dropped.iter().any(|&(start, _)| start == extent.offset)),
        );
        for extent in free {
            let mut at = extent.offset;
            for &(start, end) in dropped
                .iter()
                .filter(|&&(start, end)| end > extent.offset && start < extent.end())
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
        for dropped in &recovered.report.dropped {
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
        let cursor = recovered.space.cursor();
        let stats = RegionStats {
            engines: accounting.engines,
            live_slots,
            live_bytes: accounting.live_bytes(),
            slot_count: recovered.slot_high_water,
            free_extents: recovered.space.free_extent_count() as u64,
            free_bytes: recovered.space.free_bytes(),
            largest_free_extent: recovered.space.largest_free().unwrap_or(0),
            slack_bytes: accounting.slack_bytes,
            header_bytes: live_slots * EXTENT_HEADER_LEN,
            punched_bytes: holes.iter().map(|(start, end)| end - start).sum(),
            used_bytes: cursor - DATA_START,
            file_size,
            max_capacity: file_size,
        };
        Ok(RegionFile {
            path: path.to_owned(),
            bytes,
            slots,
            slot_count: recovered.slot_high_water,
            extents,
            holes,
            report: recovered.report,
            stats,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Live slots, by index.
    pub fn slots(&self) -> &[SlotInfo] {
        &self.slots
    }

    /// Slot indices handed out, occupied or freed.
    pub fn slot_count(&self) -> usize {
        self.slot_count as usize
    }

    /// A live slot's description.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSlot`] past the slot count, [`Error::SlotFree`] for
    /// an index that holds nothing.
    pub fn slot(&self, slot_index: usize) -> Result<&SlotInfo> {
        match self
            .slots
            .binary_search_by_key(&slot_index, |slot| slot.slot)
        {
            Ok(found) => Ok(&self.slots[found]),
            Err(_) if slot_index < self.slot_count() => Err(Error::SlotFree { slot: slot_index }),
            Err(_) => Err(Error::UnknownSlot {
                slot: slot_index,
                slot_count: self.slot_count(),
            }),
        }
    }

    /// A live slot's bytes (checked against their checksum by the walk).
    ///
    /// # Errors
    ///
    /// As [`slot`](Self::slot).
    pub fn read(&self, slot_index: usize) -> Result<&[u8]> {
        let slot = self.slot(slot_index)?;
        let start = (slot.offset + EXTENT_HEADER_LEN) as usize;
        Ok(&self.bytes[start..start + slot.payload_len as usize])
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

    /// What a writer's open would find: slots, drops, repairs.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// True when no extent is damaged.
    pub fn is_intact(&self) -> bool {
        self.report.dropped.is_empty()
    }

    /// Accounting as [`OverflowRegion::stats`](crate::OverflowRegion::stats)
    /// gives it (`max_capacity` is the file size: the file does not record
    /// the maximum its writer was opened with).
    pub fn stats(&self) -> &RegionStats {
        &self.stats
    }
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
