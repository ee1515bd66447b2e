//! [`RegionStats`]: what a region holds, per engine, kept up to date by
//! every write and free.

use serde::ser::{SerializeMap, Serializer};

use crate::engine::EngineId;
use crate::slots::LiveSlot;

/// Live slots and bytes of one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    /// Slots the engine holds.
    pub live_slots: u64,
    /// Sum of their payload lengths.
    pub live_bytes: u64,
}

/// A snapshot of a region's accounting, from
/// [`OverflowRegion::stats`](crate::OverflowRegion::stats) or
/// [`RegionFile::stats`](crate::RegionFile::stats).
///
/// With serde it is an object of the fields below, `engines` an object keyed
/// by engine name (`{"vector": {"live_slots": 1, "live_bytes": 100}, ...}`).
///
/// ```
/// use overflow_region::{EngineId, OverflowRegion};
///
/// # fn main() -> overflow_region::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let mut region = OverflowRegion::open_with_config(&dir.path().join("r"), 1 << 20, 1 << 24)?;
/// region.write(&[1; 100], EngineId::Vector)?;
/// region.write(&[2; 50], EngineId::Wal)?;
/// let stats = region.stats();
/// assert_eq!(stats.engine(EngineId::Vector).live_bytes, 100);
/// assert_eq!(stats.engine(EngineId::Wal).live_slots, 1);
/// assert_eq!(stats.live_bytes, 150);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RegionStats {
    /// Per engine, indexed by [`EngineId::as_u8`]; see [`RegionStats::engine`].
    #[serde(serialize_with = "engines_by_name")]
    pub engines: [EngineStats; EngineId::ALL.len()],
    /// Live slots, all engines.
    pub live_slots: u64,
    /// Sum of live payload lengths, all engines.
    pub live_bytes: u64,
    /// Slot indices handed out, occupied or freed.
    pub slot_count: u64,
    /// Free extents inside the used part of the file.
    pub free_extents: u64,
    /// Bytes in free extents.
    pub free_bytes: u64,
    /// Length of the largest free extent (0 if none).
    pub largest_free_extent: u64,
    /// Bytes of live extents that hold neither header nor payload:
    /// alignment, and remainders too small to split off.
    pub slack_bytes: u64,
    /// Bytes of live extent headers (32 per live slot, 40 for one with a
    /// tag other than 0).
    pub header_bytes: u64,
    /// Bytes of the file whose pages were punched out (given back to the
    /// file system) and not written since. From
    /// [`RegionFile`](crate::RegionFile), the holes the file system reports
    /// (`SEEK_HOLE`): on ext4 these include space allocated ahead
    /// (`fallocate`) and never written, which still holds its blocks; the
    /// file's allocated blocks are what it holds on disk.
    pub punched_bytes: u64,
    /// Bytes from the start of the data area to the end of the last extent.
    pub used_bytes: u64,
    /// The file's size.
    pub file_size: u64,
    /// Extents that automatic compaction moved since the region was
    /// opened (`MemoryTuning::overflow_auto_compact`; 0 from
    /// [`RegionFile`](crate::RegionFile)).
    pub auto_moved_extents: u64,
    /// Bytes of those extents.
    pub auto_moved_bytes: u64,
    /// Bytes of the old places of moved slots whose payloads have a
    /// checksum, kept live on disk until the next `sync` makes the copies
    /// durable: neither free nor live until then (0 from
    /// [`RegionFile`](crate::RegionFile); a reopen frees them).
    pub retired_bytes: u64,
    /// The size the file never grows past: the region's maximum capacity
    /// (from [`RegionFile`](crate::RegionFile): the one the file records,
    /// which its writer last opened it with).
    pub max_capacity: u64,
}

impl RegionStats {
    /// The figures of one engine.
    pub fn engine(&self, engine: EngineId) -> &EngineStats {
        &self.engines[engine.as_u8() as usize]
    }
}

/// Per-engine figures as a map from engine name to figures.
fn engines_by_name<S: Serializer>(
    engines: &[EngineStats; EngineId::ALL.len()],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(engines.len()))?;
    for engine in EngineId::ALL {
        map.serialize_entry(engine.name(), &engines[engine.as_u8() as usize])?;
    }
    map.end()
}

/// The counters a region keeps up to date on every write and free.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accounting {
    /// Per engine, indexed by [`EngineId::as_u8`].
    pub engines: [EngineStats; EngineId::ALL.len()],
    /// Sum of `extent length - header - user tag - payload` over live slots.
    pub slack_bytes: u64,
    /// Sum of the headers (and user tags) of live slots.
    pub header_bytes: u64,
    /// Sum of the live slots' extent lengths (payloads, headers and
    /// slack), kept apart so that reading it is one load: automatic
    /// compaction checks it at every write and free.
    extents: u64,
}

impl Accounting {
    /// The bytes of the live slots' extents: payloads, headers and slack.
    #[inline]
    pub(crate) fn extent_bytes(&self) -> u64 {
        self.extents
    }

    /// Counts a live slot.
    pub(crate) fn add(&mut self, slot: &LiveSlot) {
        let stats = &mut self.engines[slot.engine.as_u8() as usize];
        stats.live_slots += 1;
        stats.live_bytes += slot.payload_len;
        self.extents += slot.extent_len;
        self.header_bytes += slot.header_len();
        self.slack_bytes += slot.extent_len - slot.header_len() - slot.payload_len;
    }

    /// Stops counting a live slot.
    pub(crate) fn remove(&mut self, slot: &LiveSlot) {
        let stats = &mut self.engines[slot.engine.as_u8() as usize];
        stats.live_slots -= 1;
        stats.live_bytes -= slot.payload_len;
        self.extents -= slot.extent_len;
        self.header_bytes -= slot.header_len();
        self.slack_bytes -= slot.extent_len - slot.header_len() - slot.payload_len;
    }

    /// Sum of live payload lengths.
    pub(crate) fn live_bytes(&self) -> u64 {
        self.engines.iter().map(|engine| engine.live_bytes).sum()
    }
}
