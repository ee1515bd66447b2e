//! The slot table: slot index -> where the slot's extent is.
//!
//! Dense from 0. A freed index goes on a LIFO list threaded through the
//! table's free entries and is handed out again before any new index.
//!
//! A reopened file can hold live slots at indices far above the number of
//! slots it holds (after many frees, or in a hostile file whose intact
//! header names index 4 billion). The table's memory stays proportional to
//! what recovery found: indices above the dense part live in a small map
//! (`sparse`) until the dense part grows up to them.
//!
//! An entry is 16 bytes: a live slot is packed into two words (see
//! `Entry`), and the rare slot whose fields do not fit is kept whole in a
//! side map (`wide`). The two words live in two arrays (`Entries`): a read
//! needs only the first, so a read of a random slot brings 8 bytes of table
//! into the cache, not 16. Recovery fills the table as it walks the file
//! ([`SlotTable::claim`]), which also tells it when an index is found twice.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::engine::EngineId;
use crate::layout::{EXTENT_HEADER_LEN, LiveHeader, USER_TAG_LEN};
use crate::space::Extent;

/// Where a live slot's bytes are and what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveSlot {
    /// Start of the extent (its header) in the file.
    pub offset: u64,
    /// Length of the whole extent, header and slack included.
    pub extent_len: u64,
    /// Length of the payload.
    pub payload_len: u64,
    /// The generation written in the extent header.
    pub generation: u32,
    /// The engine written in the extent header.
    pub engine: EngineId,
    /// Whether a user tag follows the header (`layout::USER_TAG_LEN` bytes,
    /// read from the file when asked for, not kept here).
    pub tagged: bool,
}

impl LiveSlot {
    /// What the table keeps of the live extent `extent` with `header`.
    pub(crate) fn new(extent: Extent, header: &LiveHeader) -> LiveSlot {
        LiveSlot {
            offset: extent.offset,
            extent_len: extent.len,
            payload_len: header.payload_len,
            generation: header.generation,
            engine: header.engine,
            tagged: header.user_tag != 0,
        }
    }

    /// The slot's extent.
    pub(crate) fn extent(&self) -> Extent {
        Extent {
            offset: self.offset,
            len: self.extent_len,
        }
    }

    /// Bytes before the payload: the header and the user tag, if any.
    pub(crate) fn header_len(&self) -> u64 {
        EXTENT_HEADER_LEN + if self.tagged { USER_TAG_LEN } else { 0 }
    }

    /// Offset of the first payload byte.
    pub(crate) fn payload_offset(&self) -> u64 {
        self.offset + self.header_len()
    }
}

/// Marks the end of the free-index list.
const NONE: u32 = u32::MAX;

/// One table entry in 16 bytes: a live slot packed into two words, a freed
/// index, or a live slot too large to pack, which is kept whole in
/// [`SlotTable::wide`].
///
/// A packed live slot: `place` holds what a read needs: from the top, the
/// extent's offset in 16-byte units (40 bits: files below 16 TiB), the
/// payload length (22 bits: payloads below 4 MiB) and the tag flag (1 bit),
/// with bit 0 clear; `data` holds the generation (high half), the engine
/// (3 bits from bit 16) and the extent's slack past its header and payload
/// in 16-byte units (15 bits from bit 0). Other entries have bit 0 of
/// `place` set: [`FREE`] with the next freed index in `data`, or [`WIDE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    place: u64,
    data: u64,
}

/// `Entry::place` of a freed index.
const FREE: u64 = 0b01;
/// `Entry::place` of a live slot kept in [`SlotTable::wide`].
const WIDE: u64 = 0b11;
/// Bit position of the offset in `Entry::place`.
const OFFSET_SHIFT: u32 = 24;
/// Bit position of the payload length in `Entry::place`.
const LEN_SHIFT: u32 = 2;
/// Bit position of the engine in `Entry::data`.
const ENGINE_SHIFT: u32 = 16;
/// Bits of the slack (in units) at the bottom of `Entry::data`.
const SLACK_BITS: u32 = 15;
/// Bits of the engine in `Entry::data`, between the slack and the
/// generation.
const ENGINE_BITS: u32 = 3;
const _: () = assert!(
    EngineId::ALL.len() <= 1 << ENGINE_BITS && SLACK_BITS <= ENGINE_SHIFT,
    "every engine's byte fits the packed entry's engine field"
);
/// Bytes per unit of offset and slack in a packed entry.
const UNIT: u64 = 16;

impl Entry {
    /// A freed index, followed on the free list by `next`.
    fn free(next: u32) -> Entry {
        Entry {
            place: FREE,
            data: u64::from(next),
        }
    }

    /// `slot` packed, or `None` if a field does not fit.
    fn pack(slot: &LiveSlot) -> Option<Entry> {
        let filled = (slot.header_len() + slot.payload_len).checked_next_multiple_of(UNIT)?;
        let slack = slot.extent_len.checked_sub(filled)?;
        let fits = slot.offset.is_multiple_of(UNIT)
            && slot.offset / UNIT < 1 << (64 - OFFSET_SHIFT)
            && slack.is_multiple_of(UNIT)
            && slack / UNIT < 1 << SLACK_BITS
            && slot.payload_len < 1 << (OFFSET_SHIFT - LEN_SHIFT);
        fits.then(|| Entry {
            place: (slot.offset / UNIT) << OFFSET_SHIFT
                | slot.payload_len << LEN_SHIFT
                | u64::from(slot.tagged) << 1,
            data: u64::from(slot.generation) << 32
                | u64::from(slot.engine.as_u8()) << ENGINE_SHIFT
                | (slack / UNIT),
        })
    }

    /// Whether this is a packed live slot.
    fn is_packed(self) -> bool {
        self.place & 1 == 0
    }

    /// Whether a user tag follows the header (a packed live slot).
    fn tagged(self) -> bool {
        self.place >> 1 & 1 == 1
    }

    /// Offset of the extent (a packed live slot).
    fn offset(self) -> u64 {
        (self.place >> OFFSET_SHIFT) * UNIT
    }

    /// Offset of the first payload byte (a packed live slot).
    fn payload_offset(self) -> u64 {
        self.offset() + EXTENT_HEADER_LEN + if self.tagged() { USER_TAG_LEN } else { 0 }
    }

    /// Length of the payload (a packed live slot).
    fn payload_len(self) -> u64 {
        self.place >> LEN_SHIFT & ((1 << (OFFSET_SHIFT - LEN_SHIFT)) - 1)
    }

    /// The packed live slot (`is_packed`).
    fn unpack(self) -> LiveSlot {
        let engine =
            EngineId::from_u8((self.data >> ENGINE_SHIFT & ((1 << ENGINE_BITS) - 1)) as u8)
                .expect("packed from an EngineId");
        let slack = (self.data & ((1 << SLACK_BITS) - 1)) * UNIT;
        let payload_end = self.payload_offset() + self.payload_len();
        LiveSlot {
            offset: self.offset(),
            extent_len: (payload_end - self.offset()).next_multiple_of(UNIT) + slack,
            payload_len: self.payload_len(),
            generation: (self.data >> 32) as u32,
            engine,
            tagged: self.tagged(),
        }
    }
}

/// The dense entries, one per index from 0, each [`Entry`] kept as its two
/// words in two arrays: `places` holds what a read needs, so a read of a
/// random slot touches one cache line of table with 8 entries on it, not 4.
/// A write or a free touches both (two independent loads, which the CPU
/// overlaps).
#[derive(Debug, Default)]
struct Entries {
    places: Vec<u64>,
    data: Vec<u64>,
}

impl Entries {
    fn len(&self) -> usize {
        self.places.len()
    }

    #[inline]
    fn get(&self, at: usize) -> Option<Entry> {
        Some(Entry {
            place: *self.places.get(at)?,
            data: self.data[at],
        })
    }

    /// The `place` word of entry `at` alone (the read path).
    #[inline]
    fn place(&self, at: usize) -> Option<u64> {
        self.places.get(at).copied()
    }

    /// Stores `entry` at `at` (below `len`) and returns what was there.
    fn replace(&mut self, at: usize, entry: Entry) -> Entry {
        Entry {
            place: std::mem::replace(&mut self.places[at], entry.place),
            data: std::mem::replace(&mut self.data[at], entry.data),
        }
    }

    fn push(&mut self, entry: Entry) {
        self.places.push(entry.place);
        self.data.push(entry.data);
    }

    fn resize(&mut self, len: usize, entry: Entry) {
        self.places.resize(len, entry.place);
        self.data.resize(len, entry.data);
    }

    fn truncate(&mut self, len: usize) {
        self.places.truncate(len);
        self.data.truncate(len);
    }

    fn shrink_to_fit(&mut self) {
        self.places.shrink_to_fit();
        self.data.shrink_to_fit();
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = Entry> + ExactSizeIterator + '_ {
        self.places
            .iter()
            .zip(&self.data)
            .map(|(&place, &data)| Entry { place, data })
    }

    /// Asks the CPU for both words of entry `at` (a hint).
    #[inline]
    fn prefetch(&self, at: usize) {
        if let (Some(place), Some(data)) = (self.places.get(at), self.data.get(at)) {
            crate::sys::prefetch(place);
            crate::sys::prefetch(data);
        }
    }
}

/// Why a slot index cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotLookup {
    /// Never handed out.
    Unknown,
    /// Handed out and freed.
    Free,
}

/// The slot table.
#[derive(Debug)]
pub(crate) struct SlotTable {
    /// One entry per index from 0 up. Invariant: every free entry is on
    /// the list from `free_head`, exactly once.
    entries: Entries,
    /// The live slots whose entries are [`WIDE`], by index: those with a
    /// payload of 4 MiB or more, an offset past 16 TiB or a slack of
    /// 512 KiB or more. Invariant: exactly the dense indices whose entry is
    /// `WIDE`.
    wide: FxHashMap<u32, LiveSlot>,
    /// Live slots at indices at or past `entries.len()` (only after a
    /// reopen; empty in a table that was never rebuilt). Invariant: every
    /// key is at least `entries.len()`.
    sparse: BTreeMap<u32, LiveSlot>,
    /// One more than the highest index handed out (`len`). Invariant:
    /// `max(entries.len(), highest key of sparse + 1)`.
    high_water: usize,
    /// First freed index to hand out again, or `NONE`.
    free_head: u32,
    /// Number of live slots, dense and sparse.
    live: usize,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable::rebuild(0, usize::MAX, [])
    }
}

impl SlotTable {
    /// A table with `count` indices, all free but those in `live` (each index
    /// at most once; `count` is raised past the highest). Entries are made
    /// for at most `dense_limit` indices: live slots past that are kept
    /// apart, indices past it that are not live are not handed out again
    /// until new indices reach them, and `count` is trusted only up to it.
    pub(crate) fn rebuild(
        count: usize,
        dense_limit: usize,
        live: impl IntoIterator<Item = (usize, LiveSlot)>,
    ) -> SlotTable {
        let mut table = SlotTable::recovering();
        for (index, slot) in live {
            let index = u32::try_from(index).expect("slot indices are u32");
            let twice = table.claim(index, slot, dense_limit);
            debug_assert!(twice.is_none(), "slot {index} twice");
        }
        table.finish_recovery(count, dense_limit);
        table
    }

    /// An empty table for recovery to [`claim`](Self::claim) slots in, then
    /// [`finish_recovery`](Self::finish_recovery).
    pub(crate) fn recovering() -> SlotTable {
        SlotTable {
            entries: Entries::default(),
            wide: FxHashMap::default(),
            sparse: BTreeMap::new(),
            high_water: 0,
            free_head: NONE,
            live: 0,
        }
    }

    /// While recovering: puts `slot` at `index` unless a live slot is
    /// there already, which is then returned (and stays). Entries are made
    /// for indices below `dense_limit` (which may only grow from call to
    /// call), the others are kept apart.
    pub(crate) fn claim(
        &mut self,
        index: u32,
        slot: LiveSlot,
        dense_limit: usize,
    ) -> Option<LiveSlot> {
        let at = index as usize;
        if at >= self.entries.len() && at < dense_limit {
            self.grow_dense((at + 1).max(self.entries.len() * 2).min(dense_limit));
        }
        if at < self.entries.len() {
            if let Ok(kept) = self.get(at) {
                return Some(kept);
            }
            self.set_live(at, slot);
        } else {
            match self.sparse.entry(index) {
                std::collections::btree_map::Entry::Occupied(kept) => return Some(*kept.get()),
                std::collections::btree_map::Entry::Vacant(place) => {
                    place.insert(slot);
                }
            }
        }
        self.live += 1;
        None
    }

    /// Ends recovery: `count` indices (raised past the highest live one,
    /// trusted only up to `dense_limit`), the free list threaded so that the
    /// lowest freed index is handed out first.
    pub(crate) fn finish_recovery(&mut self, count: usize, dense_limit: usize) {
        let dense_live = self
            .entries
            .places
            .iter()
            .rposition(|&place| place != FREE)
            .map_or(0, |at| at + 1);
        let dense = count
            .max(dense_live)
            .max(self.sparse_end())
            .min(dense_limit);
        if dense > self.entries.len() {
            self.grow_dense(dense);
        } else {
            // Only free entries lie past `dense`: every live dense index is
            // below both the highest live index and the limit.
            self.entries.truncate(dense);
        }
        self.entries.shrink_to_fit();
        self.free_head = NONE;
        for index in (0..self.entries.len()).rev() {
            if self.entries.places[index] == FREE {
                self.entries.data[index] = u64::from(self.free_head);
                self.free_head = index as u32;
            }
        }
        self.high_water = self.sparse_end().max(self.entries.len());
    }

    /// One more than the highest sparse index (0 without any).
    fn sparse_end(&self) -> usize {
        self.sparse
            .last_key_value()
            .map_or(0, |(&key, _)| key as usize + 1)
    }

    /// Makes `len` dense entries (more than now), moving the sparse slots
    /// they reach in. New entries are free and not yet on the free list.
    fn grow_dense(&mut self, len: usize) {
        self.entries.resize(len, Entry::free(NONE));
        let beyond = self
            .sparse
            .split_off(&u32::try_from(len).unwrap_or(u32::MAX));
        for (index, slot) in std::mem::replace(&mut self.sparse, beyond) {
            self.set_live(index as usize, slot);
        }
    }

    /// Stores live `slot` in dense entry `at`.
    fn set_live(&mut self, at: usize, slot: LiveSlot) {
        let entry = self.live_entry(at, &slot);
        if self.entries.replace(at, entry).place == WIDE && entry.place != WIDE {
            self.wide.remove(&(at as u32));
        }
    }

    /// The dense entry for `slot` at index `at`: packed, or `WIDE` with the
    /// slot put in `wide`.
    #[inline]
    fn live_entry(&mut self, at: usize, slot: &LiveSlot) -> Entry {
        Entry::pack(slot).unwrap_or_else(|| {
            self.wide.insert(at as u32, *slot);
            Entry {
                place: WIDE,
                data: 0,
            }
        })
    }

    /// Makes dense entry `at` free, followed on the free list by `next`.
    fn set_free(&mut self, at: usize, next: u32) {
        if self.entries.replace(at, Entry::free(next)).place == WIDE {
            self.wide.remove(&(at as u32));
        }
    }

    /// The live slot in dense entry `at`, if it is one.
    fn dense(&self, at: usize, entry: Entry) -> Result<LiveSlot, SlotLookup> {
        if entry.is_packed() {
            Ok(entry.unpack())
        } else if entry.place == WIDE {
            Ok(self.wide[&(at as u32)])
        } else {
            Err(SlotLookup::Free)
        }
    }

    /// Indices handed out, occupied or freed.
    pub(crate) fn len(&self) -> usize {
        self.high_water
    }

    /// Indices below this have an entry each (live or free); live slots
    /// at or past it are few, kept apart ([`sparse_from`](Self::sparse_from)).
    pub(crate) fn dense_len(&self) -> usize {
        self.entries.len()
    }

    /// The live slots past the dense entries, from index `from` up, in
    /// index order (only after a reopen that found slots at indices far
    /// past the others).
    pub(crate) fn sparse_from(&self, from: u32) -> impl Iterator<Item = (u32, LiveSlot)> + '_ {
        self.sparse
            .range(from..)
            .map(|(&index, &slot)| (index, slot))
    }

    /// Indices occupied.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The slot at `index`.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Result<LiveSlot, SlotLookup> {
        match self.entries.get(index) {
            Some(entry) => self.dense(index, entry),
            None => self.get_sparse(index),
        }
    }

    /// Asks the CPU for the entry of `index` ahead of a `get` (a hint).
    #[inline]
    pub(crate) fn prefetch(&self, index: usize) {
        self.entries.prefetch(index);
    }

    /// Where the payload of the slot at `index` is: (offset, length). What
    /// `get` gives, without unpacking the rest (the read path).
    #[inline]
    pub(crate) fn payload(&self, index: usize) -> Result<(u64, u64), SlotLookup> {
        match self.entries.place(index) {
            Some(place) if place & 1 == 0 => {
                // Both read `place` alone.
                let entry = Entry { place, data: 0 };
                Ok((entry.payload_offset(), entry.payload_len()))
            }
            _ => self
                .get(index)
                .map(|slot| (slot.payload_offset(), slot.payload_len)),
        }
    }

    /// `get` past the dense entries.
    #[cold]
    fn get_sparse(&self, index: usize) -> Result<LiveSlot, SlotLookup> {
        if index >= self.high_water {
            return Err(SlotLookup::Unknown);
        }
        let key = u32::try_from(index).map_err(|_| SlotLookup::Unknown)?;
        self.sparse.get(&key).copied().ok_or(SlotLookup::Free)
    }

    /// The index the next `occupy` will use: the most recently freed one, or
    /// a new one.
    pub(crate) fn next_index(&self) -> usize {
        if self.free_head == NONE {
            self.entries.len()
        } else {
            self.free_head as usize
        }
    }

    /// Puts `slot` at `next_index()` and returns that index.
    pub(crate) fn occupy(&mut self, slot: LiveSlot) -> usize {
        if self.free_head == NONE && !self.sparse.is_empty() {
            self.absorb_sparse();
        }
        let index = self.next_index();
        let entry = self.live_entry(index, &slot);
        if index == self.entries.len() {
            self.entries.push(entry);
            self.high_water = self.high_water.max(self.entries.len());
        } else {
            let free = self.entries.replace(index, entry);
            debug_assert_eq!(free.place, FREE, "the free list holds only free entries");
            self.free_head = free.data as u32;
        }
        self.live += 1;
        index
    }

    /// Before a new index is handed out at the end of the dense entries:
    /// moves the sparse slots that the dense part reaches into it, so the
    /// new index is not one of theirs. Each sparse slot moves once.
    #[cold]
    fn absorb_sparse(&mut self) {
        while let Some(slot) = self.sparse.remove(&(self.entries.len() as u32)) {
            self.entries.push(Entry::free(NONE));
            self.set_live(self.entries.len() - 1, slot);
        }
    }

    /// Points the live slot at `index` to where it was moved.
    pub(crate) fn relocate(&mut self, index: usize, slot: LiveSlot) {
        if index < self.entries.len() {
            debug_assert!(self.get(index).is_ok(), "relocating free slot {index}");
            self.set_live(index, slot);
        } else {
            let old = self.sparse.insert(index as u32, slot);
            debug_assert!(old.is_some(), "relocating free slot {index}");
        }
    }

    /// Frees the slot at `index` and returns what it held.
    pub(crate) fn vacate(&mut self, index: usize) -> Result<LiveSlot, SlotLookup> {
        let slot = self.get(index)?;
        if index < self.entries.len() {
            self.set_free(index, self.free_head);
            self.free_head = index as u32;
        } else {
            // Handed out again only when new indices reach it; forgotten as
            // handed out if it was the highest.
            self.sparse.remove(&(index as u32));
            self.high_water = self.sparse_end().max(self.entries.len());
        }
        self.live -= 1;
        Ok(slot)
    }

    /// Every live slot with its index, in index order.
    pub(crate) fn iter_live(&self) -> impl Iterator<Item = (usize, LiveSlot)> + '_ {
        let mut sparse: Vec<(usize, LiveSlot)> = self
            .sparse
            .iter()
            .map(|(&index, &slot)| (index as usize, slot))
            .collect();
        sparse.sort_unstable_by_key(|&(index, _)| index);
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| Some((index, self.dense(index, entry).ok()?)))
            .chain(sparse)
    }

    /// Checks the free list against the entries; a description of the first
    /// disagreement.
    pub(crate) fn check_consistency(&self) -> Result<(), String> {
        if let Some(&below) = self
            .sparse
            .keys()
            .find(|&&k| (k as usize) < self.entries.len())
        {
            return Err(format!(
                "sparse slot {below} lies inside the {} dense entries",
                self.entries.len()
            ));
        }
        if let Some(&past) = self.sparse.keys().find(|&&k| k as usize >= self.high_water) {
            return Err(format!(
                "sparse slot {past} lies past the high water {}",
                self.high_water
            ));
        }
        let free_entries = self.entries.len() + self.sparse.len() - self.live;
        let mut seen = 0;
        let mut at = self.free_head;
        while at != NONE {
            match self.entries.get(at as usize) {
                Some(entry) if entry.place == FREE => at = entry.data as u32,
                other => return Err(format!("free list reaches index {at}, which is {other:?}")),
            }
            seen += 1;
            if seen > free_entries {
                return Err(format!(
                    "free list longer than the {free_entries} free entries (a cycle)"
                ));
            }
        }
        let wide = self
            .entries
            .places
            .iter()
            .filter(|&&place| place == WIDE)
            .count();
        if wide != self.wide.len() {
            return Err(format!(
                "{wide} wide entries and {} wide slots",
                self.wide.len()
            ));
        }
        let live = self.iter_live().count();
        if seen != free_entries || live != self.live {
            return Err(format!(
                "{seen} indices on the free list and {live} live, expected {free_entries} and {}",
                self.live
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(offset: u64) -> LiveSlot {
        LiveSlot {
            offset,
            extent_len: 32,
            payload_len: 0,
            generation: 0,
            engine: EngineId::Wal,
            tagged: false,
        }
    }

    #[test]
    fn an_entry_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn every_slot_comes_back_exactly_packed_or_wide() {
        let mut slots = Vec::new();
        for (i, &engine) in EngineId::ALL.iter().enumerate() {
            for tagged in [false, true] {
                let header = EXTENT_HEADER_LEN + if tagged { USER_TAG_LEN } else { 0 };
                for (offset, payload_len, slack) in [
                    (4096, 0, 0),
                    (16 * i as u64, 17, 48),
                    // The largest packed fields.
                    ((1 << 44) - 16, (1 << 22) - 1, (1 << 19) - 16),
                    // One past each: wide.
                    (1 << 44, 100, 0),
                    (64, 1 << 22, 0),
                    (64, 100, 1 << 19),
                    // Slack that is no multiple of 16, or an extent shorter
                    // than its contents (a hostile file): wide.
                    (64, 100, 8),
                ] {
                    let extent_len = (header + payload_len).next_multiple_of(16) + slack;
                    slots.push(LiveSlot {
                        offset,
                        extent_len,
                        payload_len,
                        generation: u32::MAX - i as u32,
                        engine,
                        tagged,
                    });
                }
                slots.push(LiveSlot {
                    offset: 64,
                    extent_len: 32,
                    payload_len: 100,
                    generation: 7,
                    engine,
                    tagged,
                });
            }
        }
        let mut table = SlotTable::default();
        for &slot in &slots {
            let index = table.occupy(slot);
            assert_eq!(table.get(index), Ok(slot));
        }
        let wide = slots.iter().filter(|s| Entry::pack(s).is_none()).count();
        assert_eq!(wide, 5 * 2 * EngineId::ALL.len());
        assert_eq!(table.wide.len(), wide);
        assert!(
            table
                .iter_live()
                .map(|(_, slot)| slot)
                .eq(slots.iter().copied())
        );
        table.check_consistency().unwrap();
        // Freeing or overwriting a wide slot forgets it.
        for index in (0..slots.len()).step_by(2) {
            table.vacate(index).unwrap();
        }
        for index in (1..slots.len()).step_by(2) {
            table.relocate(index, slot(index as u64 * 16));
        }
        assert!(table.wide.is_empty());
        table.check_consistency().unwrap();
    }

    #[test]
    fn freed_indices_come_back_last_in_first_out() {
        let mut table = SlotTable::default();
        for i in 0..4 {
            assert_eq!(table.occupy(slot(i)), i as usize);
        }
        table.vacate(1).unwrap();
        table.vacate(3).unwrap();
        assert_eq!(table.vacate(3), Err(SlotLookup::Free));
        assert_eq!(table.get(9), Err(SlotLookup::Unknown));
        assert_eq!(table.occupy(slot(10)), 3);
        assert_eq!(table.occupy(slot(11)), 1);
        assert_eq!(table.occupy(slot(12)), 4);
        assert_eq!((table.len(), table.live()), (5, 5));
        table.check_consistency().unwrap();
    }

    #[test]
    fn rebuild_hands_out_the_lowest_free_index_first() {
        let mut table = SlotTable::rebuild(5, usize::MAX, [(1, slot(1)), (3, slot(3))]);
        table.check_consistency().unwrap();
        assert_eq!(table.live(), 2);
        assert_eq!(table.occupy(slot(0)), 0);
        assert_eq!(table.occupy(slot(2)), 2);
        assert_eq!(table.occupy(slot(4)), 4);
        assert_eq!(table.occupy(slot(5)), 5);
    }

    #[test]
    fn live_slots_past_the_dense_limit_cost_no_entries_for_the_gap() {
        let far = u32::MAX as usize - 1;
        let mut table = SlotTable::rebuild(3, 4, [(1, slot(1)), (9, slot(9)), (far, slot(7))]);
        table.check_consistency().unwrap();
        assert_eq!(table.entries.len(), 4);
        assert_eq!((table.len(), table.live()), (far + 1, 3));
        assert_eq!(table.get(far).unwrap().offset, 7);
        assert_eq!(table.get(9).unwrap().offset, 9);
        assert_eq!(table.get(5), Err(SlotLookup::Free));
        assert_eq!(table.get(far + 1), Err(SlotLookup::Unknown));
        assert_eq!(
            table.iter_live().map(|(i, _)| i).collect::<Vec<_>>(),
            [1, 9, far]
        );
        // Free dense indices first, then new ones, which step over slot 9.
        for expected in [0, 2, 3, 4, 5, 6, 7, 8, 10] {
            assert_eq!(table.occupy(slot(100)), expected);
        }
        assert_eq!(table.get(9).unwrap().offset, 9);
        table.vacate(far).unwrap();
        // The highest index is forgotten once it is free.
        assert_eq!(table.vacate(far), Err(SlotLookup::Unknown));
        assert_eq!((table.len(), table.live()), (11, 11));
        table.check_consistency().unwrap();
    }
}
