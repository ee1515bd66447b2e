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

use std::collections::BTreeMap;

use crate::engine::EngineId;
use crate::layout::{EXTENT_HEADER_LEN, USER_TAG_LEN};
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

#[derive(Debug, Clone, Copy)]
enum Entry {
    Live(LiveSlot),
    /// A freed index; `next` is the next freed index on the list, or `NONE`.
    Free {
        next: u32,
    },
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
    /// One entry per index from 0 up. Invariant: every `Free` entry is on
    /// the list from `free_head`, exactly once.
    entries: Vec<Entry>,
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
        let live: Vec<(usize, LiveSlot)> = live.into_iter().collect();
        let highest = live.iter().map(|&(index, _)| index + 1).max().unwrap_or(0);
        // Entries below the limit only; `count` counts past the highest
        // live index only that far.
        let dense = count.max(highest).min(dense_limit);
        let mut entries = vec![Entry::Free { next: NONE }; dense];
        let mut sparse = BTreeMap::new();
        let live_count = live.len();
        for (index, slot) in live {
            match entries.get_mut(index) {
                Some(entry) => {
                    debug_assert!(matches!(entry, Entry::Free { .. }), "slot {index} twice");
                    *entry = Entry::Live(slot);
                }
                None => {
                    let twice = sparse.insert(index as u32, slot);
                    debug_assert!(twice.is_none(), "slot {index} twice");
                }
            }
        }
        // Thread the free list so the lowest freed index is handed out first.
        let mut free_head = NONE;
        for (index, entry) in entries.iter_mut().enumerate().rev() {
            if let Entry::Free { next } = entry {
                *next = free_head;
                free_head = index as u32;
            }
        }
        let high_water = sparse
            .last_key_value()
            .map_or(0, |(&key, _)| key as usize + 1)
            .max(entries.len());
        SlotTable {
            entries,
            sparse,
            high_water,
            free_head,
            live: live_count,
        }
    }

    /// Indices handed out, occupied or freed.
    pub(crate) fn len(&self) -> usize {
        self.high_water
    }

    /// Indices occupied.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The slot at `index`.
    pub(crate) fn get(&self, index: usize) -> Result<&LiveSlot, SlotLookup> {
        match self.entries.get(index) {
            Some(Entry::Live(slot)) => Ok(slot),
            Some(Entry::Free { .. }) => Err(SlotLookup::Free),
            None => self.get_sparse(index),
        }
    }

    /// `get` past the dense entries.
    #[cold]
    fn get_sparse(&self, index: usize) -> Result<&LiveSlot, SlotLookup> {
        if index >= self.high_water {
            return Err(SlotLookup::Unknown);
        }
        let key = u32::try_from(index).map_err(|_| SlotLookup::Unknown)?;
        self.sparse.get(&key).ok_or(SlotLookup::Free)
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
        if index == self.entries.len() {
            self.entries.push(Entry::Live(slot));
            self.high_water = self.high_water.max(self.entries.len());
        } else {
            let Entry::Free { next } = self.entries[index] else {
                unreachable!("the free list holds only free entries");
            };
            self.free_head = next;
            self.entries[index] = Entry::Live(slot);
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
            self.entries.push(Entry::Live(slot));
        }
    }

    /// Points the live slot at `index` to where it was moved.
    pub(crate) fn relocate(&mut self, index: usize, slot: LiveSlot) {
        match self.entries.get_mut(index) {
            Some(entry) => {
                debug_assert!(
                    matches!(entry, Entry::Live(_)),
                    "relocating free slot {index}"
                );
                *entry = Entry::Live(slot);
            }
            None => {
                let old = self.sparse.insert(index as u32, slot);
                debug_assert!(old.is_some(), "relocating free slot {index}");
            }
        }
    }

    /// Frees the slot at `index` and returns what it held.
    pub(crate) fn vacate(&mut self, index: usize) -> Result<LiveSlot, SlotLookup> {
        let slot = *self.get(index)?;
        if index < self.entries.len() {
            self.entries[index] = Entry::Free {
                next: self.free_head,
            };
            self.free_head = index as u32;
        } else {
            // Handed out again only when new indices reach it; forgotten as
            // handed out if it was the highest.
            self.sparse.remove(&(index as u32));
            self.high_water = self
                .sparse
                .last_key_value()
                .map_or(0, |(&key, _)| key as usize + 1)
                .max(self.entries.len());
        }
        self.live -= 1;
        Ok(slot)
    }

    /// Every live slot with its index, in index order.
    pub(crate) fn iter_live(&self) -> impl Iterator<Item = (usize, &LiveSlot)> + '_ {
        let mut sparse: Vec<(usize, &LiveSlot)> = self
            .sparse
            .iter()
            .map(|(&index, slot)| (index as usize, slot))
            .collect();
        sparse.sort_unstable_by_key(|&(index, _)| index);
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry {
                Entry::Live(slot) => Some((index, slot)),
                Entry::Free { .. } => None,
            })
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
                Some(Entry::Free { next }) => at = *next,
                other => return Err(format!("free list reaches index {at}, which is {other:?}")),
            }
            seen += 1;
            if seen > free_entries {
                return Err(format!(
                    "free list longer than the {free_entries} free entries (a cycle)"
                ));
            }
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
