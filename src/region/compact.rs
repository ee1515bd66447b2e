//! Compaction: moving live extents down into the gaps below them.
//!
//! A step takes live extents from the top of the region, highest first, and
//! moves each into free space below it (good fit; an extent no gap below it
//! can take stays where it is). Each move writes the slot's bytes to the new
//! place under the same slot index with a new generation; the old places
//! stay live on disk until the end of the step, when one `sync` makes every
//! copy durable and only then are the old places freed. So:
//!
//! - a crash (or power loss) before the sync leaves every slot at its old
//!   place, and perhaps a complete copy too: recovery keeps the newer of two
//!   copies with the same bytes and frees the other;
//! - a crash after it loses nothing either: the copies are on stable
//!   storage before any old place is marked free;
//! - a sync that fails undoes the step: the copies are freed and the slots
//!   point at their old places again, so a later `free` frees the place
//!   that is on disk and is never undone by a reopen.
//!
//! A move copies the stored payload checksum after checking the bytes
//! against it; bytes damaged from outside are never given a fresh, valid
//! checksum (such a slot stays where it is and is reported). A slot
//! written since the last sync has no checksum yet: it moves unchecked,
//! and the step's sync sums the copy, as it would have summed the
//! original.
//!
//! Freeing the old places (the top of the region) gives the end of the file
//! back.

use serde::Serialize;

use super::{OverflowRegion, Payload};
use crate::error::Result;
use crate::layout::{self, EXTENT_HEADER_LEN, LiveHeader, Tag};
use crate::slots::LiveSlot;
use crate::space::Extent;
use crate::sys::checksum;

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
    /// Slots whose bytes no longer match their stored checksum (damaged
    /// from outside the region): left where they are, unmoved, so the
    /// damage stays visible to recovery and `verify`. A move never writes a
    /// checksum of its own over a summed payload; a payload without one
    /// (written since the last sync) is summed by the step's sync, moved
    /// or not, so damage to it cannot be seen here.
    pub damaged_slots: Vec<usize>,
}

/// What became of one slot compaction tried to move.
enum Move {
    /// Copied below; the old place is still live until the step's sync.
    Moved,
    /// No free extent below could take it.
    NoRoom,
    /// Its header or payload no longer matches its checksum: not moved.
    Damaged,
}

impl OverflowRegion {
    /// Moves live extents from the top of the region down into the free
    /// space below them, until no extent above a gap fits into it, then
    /// gives the freed end of the file back (shrinking the file when no
    /// [`OverflowReader`](crate::OverflowReader) maps it). Every slot keeps
    /// its index and its bytes. `complete` in the report says whether any
    /// free extent is left (one too small for every extent above it).
    ///
    /// Nothing is lost to a crash or power loss during compaction: copies
    /// are synced before the old places are freed (one `sync` per step).
    /// Moved slots get a new generation, so
    /// [`SlotRef`](crate::SlotRef) handles made before the move read as
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
        let mut total = self.compact_step(u64::MAX)?;
        while !total.complete && total.extents_moved > 0 {
            let step = self.compact_step(u64::MAX)?;
            if step.extents_moved == 0 {
                break;
            }
            total.extents_moved += step.extents_moved;
            total.bytes_moved += step.bytes_moved;
            total.used_bytes_after = step.used_bytes_after;
            total.file_size_after = step.file_size_after;
            total.complete = step.complete;
            total.damaged_slots.extend(step.damaged_slots);
        }
        total.damaged_slots.sort_unstable();
        total.damaged_slots.dedup();
        self.give_back_after_compaction();
        total.file_size_after = self.capacity() as u64;
        Ok(total)
    }

    /// After a full compaction, gives back all the disk it can: the whole
    /// granules inside the free extents left (whatever their length), and the
    /// file past the end of the region (truncated if no reader maps it,
    /// punched otherwise), without the headroom a running region keeps.
    fn give_back_after_compaction(&mut self) {
        let page = crate::sys::mapping::page_size();
        // Every free granule is punched below.
        self.pending_punch = crate::holes::Holes::default();
        if self.settings.punch_threshold != 0 {
            let gaps: Vec<Extent> = self.space.free_extents().collect();
            for gap in gaps {
                let start = (gap.offset + EXTENT_HEADER_LEN).next_multiple_of(page);
                let end = gap.end() / page * page;
                if start < end {
                    self.punch(start, end);
                }
            }
        }
        let cursor = self.space.cursor();
        self.peak_end = cursor;
        let file_len = self.mapping.len();
        let keep = (cursor + 8)
            .next_multiple_of(page)
            .max(self.settings.initial)
            .min(file_len);
        if keep == file_len || (self.settings.shrink && self.try_truncate(keep)) {
            return;
        }
        if self.settings.punch_threshold != 0 {
            let unpunched_end = self.holes.tail_start(file_len).unwrap_or(file_len);
            if unpunched_end > keep {
                self.punch(keep, unpunched_end);
            }
        }
    }

    /// Does a bounded part of [`compact`](Self::compact): moves extents,
    /// highest first, until about `budget_bytes` have been copied (at least
    /// one extent when `budget_bytes > 0`), then syncs and frees their old
    /// places, so an owner can spread compaction over its housekeeping loop.
    /// `complete` in the report says when no free extent is left; a step
    /// that moves nothing means no extent fits into the free space below it.
    ///
    /// # Errors
    ///
    /// As [`compact`](Self::compact).
    ///
    /// # Time complexity
    ///
    /// The bytes it copies, plus the candidates it passes over (slots
    /// freed or moved since they were listed, and extents no gap below can
    /// take), plus one `sync`. The candidates are the live slots above the
    /// lowest free extent, listed and sorted (O(n log n) for n of them) once
    /// per pass over them, not at every step.
    pub fn compact_step(&mut self, budget_bytes: u64) -> Result<CompactReport> {
        let mut report = CompactReport {
            used_bytes_before: self.used_bytes() as u64,
            file_size_before: self.capacity() as u64,
            ..CompactReport::default()
        };
        self.compacting = true;
        let mut moved = Vec::new();
        let result = self.move_down(budget_bytes, &mut report, &mut moved);
        // Every copy reaches stable storage before any old place is freed.
        let synced = if moved.is_empty() {
            Ok(())
        } else {
            self.flush()
        };
        self.compacting = false;
        if synced.is_ok() {
            for (_, old) in moved {
                self.free_extent(old.extent());
            }
        } else {
            // The copies may not be durable: undo every move, so the slot
            // table points at the old places again and a later `free`
            // frees the place that is certainly on disk. (Keeping the
            // copies instead would let a free of a copy be undone at the
            // next open, when recovery finds the old place still live.)
            tracing::warn!(path = %self.path.display(), "sync failed during compaction; moves undone");
            for (index, old) in moved {
                let copy = self.slots.get(index).expect("moved slots are live");
                self.slots.relocate(index, old);
                // The flush summed the copy, not the old place: list it
                // again (summing skips a header that already has a sum).
                self.note_unsummed(index as u32, old.generation);
                self.accounting.remove(&copy);
                self.accounting.add(&old);
                self.free_extent(copy.extent());
            }
            report.extents_moved = 0;
            report.bytes_moved = 0;
        }
        self.give_back_tail();
        report.used_bytes_after = self.used_bytes() as u64;
        report.file_size_after = self.capacity() as u64;
        report.complete = self.space.free_extent_count() == 0;
        result.and(synced).map(|()| report)
    }

    /// Moves live extents, highest first, into free space below them until
    /// the budget is spent or no extent above the lowest gap is left.
    /// Returns the moved slots' indices and old places in `moved` (still
    /// live on disk).
    ///
    /// The candidates come from `compact_queue`, which lasts from step to
    /// step: a step costs what it moves (and the stale entries it skips),
    /// and the live slots above the lowest gap are listed and sorted once
    /// per pass over them, when the queue runs out. A step that finds the
    /// queue empty, or empties it without moving anything, lists them
    /// afresh (once), so a step that moves nothing means that no extent
    /// fits into the free space below it.
    fn move_down(
        &mut self,
        budget_bytes: u64,
        report: &mut CompactReport,
        moved: &mut Vec<(usize, LiveSlot)>,
    ) -> Result<()> {
        let Some(lowest_gap) = self.lowest_free_extent() else {
            self.compact_queue = Vec::new();
            return Ok(());
        };
        let mut listed = false;
        loop {
            let Some(&(offset, index)) = self.compact_queue.last() else {
                if listed || report.extents_moved > 0 {
                    break;
                }
                self.list_candidates(lowest_gap.offset);
                listed = true;
                continue;
            };
            if offset <= lowest_gap.offset {
                // The rest lie below every gap: nothing can take them lower.
                self.compact_queue.clear();
                continue;
            }
            let index = index as usize;
            let slot = match self.slots.get(index) {
                Ok(slot) if slot.offset == offset => slot,
                // Freed, moved or written elsewhere since it was listed.
                _ => {
                    self.compact_queue.pop();
                    continue;
                }
            };
            let cost = slot.header_len() + slot.payload_len;
            if budget_bytes == 0
                || (report.extents_moved > 0 && report.bytes_moved + cost > budget_bytes)
            {
                break;
            }
            let outcome = self.move_below(index, slot, offset)?;
            self.compact_queue.pop();
            match outcome {
                Move::Moved => {
                    moved.push((index, slot));
                    report.extents_moved += 1;
                    report.bytes_moved += cost;
                }
                Move::NoRoom => {}
                Move::Damaged => report.damaged_slots.push(index),
            }
        }
        if self.compact_queue.is_empty() {
            // Its memory is not kept between passes.
            self.compact_queue = Vec::new();
        }
        Ok(())
    }

    /// Fills `compact_queue` with the live slots above `gap`, by offset.
    fn list_candidates(&mut self, gap: u64) {
        let mut candidates: Vec<(u64, u32)> = self
            .slots
            .iter_live()
            .filter(|(_, slot)| slot.offset > gap)
            .map(|(index, slot)| (slot.offset, index as u32))
            .collect();
        candidates.sort_unstable();
        self.compact_queue = candidates;
    }

    /// Copies a live slot into free space below `below`, if some free extent
    /// there can take it and its bytes still match their checksum. The old
    /// place is left live.
    fn move_below(&mut self, index: usize, slot: LiveSlot, below: u64) -> Result<Move> {
        // The copy carries the stored checksum, checked here: a move must
        // never turn damaged bytes into a valid extent.
        let Some(stored) = self.stored_header(&slot) else {
            tracing::warn!(path = %self.path.display(), slot = index, offset = slot.offset, "compaction left a damaged slot where it is");
            return Ok(Move::Damaged);
        };
        let needed = layout::extent_len_for(slot.payload_len, slot.header_len())
            .expect("a live payload fits the format");
        let Ok(allocation) = self.space.allocate(needed) else {
            return Ok(Move::NoRoom);
        };
        if allocation.extent.offset >= below {
            // Only free space above it, or the end of the region: leave it.
            if allocation.from_tail {
                self.space.undo_tail(allocation.extent);
            } else {
                self.space.release(allocation.extent);
            }
            return Ok(Move::NoRoom);
        }
        // Moves go into free space below, never past the end: no
        // `write_direct`.
        self.make_writable(&allocation, false)?;
        let header = LiveHeader {
            extent_len: allocation.extent.len,
            slot: index as u32,
            generation: self.next_generation as u32,
            payload_len: slot.payload_len,
            engine: slot.engine,
            payload_crc: stored.payload_crc,
            user_tag: stored.user_tag,
        };
        let copy = self.commit(
            &allocation,
            header,
            Payload::Within {
                offset: slot.payload_offset(),
            },
        );
        self.slots.relocate(index, copy);
        self.accounting.remove(&slot);
        self.accounting.add(&copy);
        self.note_header_change();
        if stored.payload_crc.is_none() {
            // The copy has a new generation: listed again under it.
            self.note_unsummed(index as u32, copy.generation);
        }
        Ok(Move::Moved)
    }

    /// A live slot's header (with its user tag), if it is intact and the
    /// payload's bytes still match its checksum (a payload with no
    /// checksum yet is taken as it is: a move copies it as it is, and the
    /// next `sync` computes the checksum of the copy).
    fn stored_header(&self, slot: &LiveSlot) -> Option<LiveHeader> {
        let header = self.mapping.bytes(slot.offset, slot.header_len())?;
        let header = LiveHeader::decode(header).ok()?;
        let payload = self
            .mapping
            .bytes(slot.payload_offset(), slot.payload_len)?;
        (header.payload_len == slot.payload_len
            && header.header_len() == slot.header_len()
            && header
                .payload_crc
                .is_none_or(|stored| checksum::crc32c(payload) == stored))
        .then_some(header)
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
}
