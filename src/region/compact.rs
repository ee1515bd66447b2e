//! Compaction: moving live extents down to close the gaps between them.
//!
//! Each move is an ordinary write of the slot's bytes to a new place (under
//! the same slot index, with a new generation) followed by an ordinary free
//! of the old place, so it is crash-safe for the same reasons they are: a
//! crash before the copy's live tag leaves the old extent as it was; a crash
//! between the two tags leaves two live copies of the slot, which recovery
//! resolves by keeping the newer one (they hold the same bytes); a crash
//! after the free leaves the move done.

use serde::Serialize;

use super::{OverflowRegion, Payload};
use crate::error::Result;
use crate::layout::{self, EXTENT_HEADER_LEN, LiveHeader, Tag};
use crate::slots::LiveSlot;
use crate::space::Extent;

/// What a [`OverflowRegion::compact`] or [`OverflowRegion::compact_step`]
/// call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CompactReport {
    /// Live extents moved.
    pub extents_moved: u64,
    /// Bytes copied (payloads moved, headers included).
    pub bytes_moved: u64,
    /// `used_bytes()` before the call.
    pub used_bytes_before: u64,
    /// `used_bytes()` after the call.
    pub used_bytes_after: u64,
    /// File size before the call.
    pub file_size_before: u64,
    /// File size after the call (smaller when the file could shrink).
    pub file_size_after: u64,
    /// True when no free extent is left between live extents.
    pub complete: bool,
}

impl OverflowRegion {
    /// Moves live extents down until no free space is left between them,
    /// then gives the freed end of the file back (shrinking the file when no
    /// [`OverflowReader`](crate::OverflowReader) maps it). Every slot keeps
    /// its index and its bytes.
    ///
    /// A process killed during compaction loses nothing: every move is a
    /// write of the slot's bytes to the new place, then a free of the old
    /// one. Moved slots get a new generation, so [`SlotRef`](crate::SlotRef)
    /// handles made before the move read as
    /// [`Error::SlotChanged`](crate::Error::SlotChanged).
    ///
    /// ```
    /// use overflow_region::{EngineId, OverflowRegion};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut region = OverflowRegion::open_with_config(&dir.path().join("r"), 1 << 20, 1 << 24)?;
    /// let slots: Vec<usize> = (0..100u8)
    ///     .map(|i| region.write(&[i; 1000], EngineId::Query))
    ///     .collect::<Result<_, _>>()?;
    /// for &slot in slots.iter().step_by(2) {
    ///     region.free(slot)?;
    /// }
    /// let report = region.compact()?;
    /// assert!(report.complete);
    /// assert_eq!(region.stats().free_extents, 0);
    /// assert_eq!(region.read(slots[1])?, &[1; 1000]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if the file cannot grow or allocate
    /// blocks for a move; moves done before it stay done and the region is
    /// consistent.
    ///
    /// # Time complexity
    ///
    /// O(live bytes above the first free extent), the bytes copied.
    pub fn compact(&mut self) -> Result<CompactReport> {
        self.compact_step(u64::MAX)
    }

    /// Does a bounded part of [`compact`](Self::compact): moves extents
    /// until about `budget_bytes` have been copied (at least one extent when
    /// `budget_bytes > 0`), so an owner can spread compaction over its
    /// housekeeping loop. `complete` in the report says when nothing is left
    /// to do.
    ///
    /// # Errors
    ///
    /// As [`compact`](Self::compact).
    pub fn compact_step(&mut self, budget_bytes: u64) -> Result<CompactReport> {
        let mut report = CompactReport {
            used_bytes_before: self.used_bytes() as u64,
            file_size_before: self.capacity() as u64,
            ..CompactReport::default()
        };
        self.compacting = true;
        let result = self.compact_moves(budget_bytes, &mut report);
        self.compacting = false;
        self.give_back_tail();
        report.used_bytes_after = self.used_bytes() as u64;
        report.file_size_after = self.capacity() as u64;
        result.map(|()| report)
    }

    fn compact_moves(&mut self, budget_bytes: u64, report: &mut CompactReport) -> Result<()> {
        loop {
            let Some(gap) = self.lowest_free_extent() else {
                report.complete = true;
                return Ok(());
            };
            // Free extents are coalesced and none ends at the cursor, so a
            // live extent follows every one.
            let (slot_index, slot) = self.live_extent_at(gap.end());
            if budget_bytes == 0
                || (report.extents_moved > 0 && report.bytes_moved + slot.extent_len > budget_bytes)
            {
                return Ok(());
            }
            let Some(moved) = self.move_extent(slot_index, slot, gap)? else {
                // No room anywhere to move it through: stop here.
                return Ok(());
            };
            report.extents_moved += 1;
            report.bytes_moved += moved;
        }
    }

    /// The free extent with the lowest offset, found by walking the tags
    /// from `compact_from` (below which nothing is free).
    fn lowest_free_extent(&mut self) -> Option<Extent> {
        let cursor = self.space.cursor();
        let mut at = self.compact_from;
        while at < cursor {
            let word = self
                .mapping
                .load_word(at)
                .expect("extents lie inside the file");
            match Tag::decode(word) {
                Some(Tag::Live { len }) => at += len,
                Some(Tag::Free { len }) => {
                    self.compact_from = at;
                    return Some(Extent { offset: at, len });
                }
                other => unreachable!("tag {other:?} at {at} inside the region (cursor {cursor})"),
            }
        }
        self.compact_from = cursor;
        None
    }

    /// The live slot whose extent starts at `offset`.
    fn live_extent_at(&self, offset: u64) -> (usize, LiveSlot) {
        let header: &[u8; 32] = self
            .mapping
            .bytes(offset, EXTENT_HEADER_LEN)
            .and_then(|bytes| bytes.try_into().ok())
            .expect("extents lie inside the file");
        let header = LiveHeader::decode(header).expect("a live extent follows every free extent");
        let index = header.slot as usize;
        let slot = *self.slots.get(index).expect("live headers name live slots");
        debug_assert_eq!(slot.offset, offset);
        (index, slot)
    }

    /// Moves a live slot into the free extent `gap` just below it if it
    /// fits, or else anywhere else with room (after which the gap has grown
    /// by the slot's old place and the next round fills it). Returns the
    /// bytes copied, or `None` if there is no room for the copy.
    fn move_extent(&mut self, index: usize, slot: LiveSlot, gap: Extent) -> Result<Option<u64>> {
        let needed =
            layout::extent_len_for(slot.payload_len).expect("a live payload fits the format");
        let allocation = match self.space.allocate_at(gap.offset, needed) {
            Some(allocation) => allocation,
            None => match self.space.allocate(needed) {
                Ok(allocation) => allocation,
                Err(_) => return Ok(None),
            },
        };
        self.make_writable(&allocation)?;
        let source = self
            .mapping
            .bytes(slot.payload_offset(), slot.payload_len)
            .expect("live extents lie inside the file");
        let header = LiveHeader {
            extent_len: allocation.extent.len,
            slot: index as u32,
            generation: self.next_generation as u32,
            payload_len: slot.payload_len,
            engine: slot.engine,
            payload_crc: crc32c::crc32c(source),
        };
        let moved = self.commit(
            &allocation,
            header,
            Payload::Within {
                offset: slot.payload_offset(),
            },
        );
        self.slots.relocate(index, moved);
        self.accounting
            .remove(slot.engine, slot.payload_len, slot.extent_len);
        self.accounting
            .add(moved.engine, moved.payload_len, moved.extent_len);
        self.free_extent(slot.extent());
        Ok(Some(EXTENT_HEADER_LEN + slot.payload_len))
    }
}
