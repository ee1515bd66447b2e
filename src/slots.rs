//! The slot table: slot index -> where the slot's extent is.
//!
//! Dense from 0. A freed index goes on a LIFO list threaded through the
//! table's free entries and is handed out again before any new index.

use crate::engine::EngineId;
use crate::layout::EXTENT_HEADER_LEN;
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
}

impl LiveSlot {
    /// The slot's extent.
    pub(crate) fn extent(&self) -> Extent {
        Extent {
            offset: self.offset,
            len: self.extent_len,
        }
    }

    /// Offset of the first payload byte.
    pub(crate) fn payload_offset(&self) -> u64 {
        self.offset + EXTENT_HEADER_LEN
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
    /// One entry per index ever handed out. Invariant: every `Free` entry is
    /// on the list from `free_head`, exactly once.
    entries: Vec<Entry>,
    /// First freed index to hand out again, or `NONE`.
    free_head: u32,
    /// Number of `Live` entries.
    live: usize,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable::rebuild(0, [])
    }
}

impl SlotTable {
    /// A table with `count` indices, all free but those in `live` (each index
    /// at most once and below `count`).
    pub(crate) fn rebuild(
        count: usize,
        live: impl IntoIterator<Item = (usize, LiveSlot)>,
    ) -> SlotTable {
        let mut entries = vec![Entry::Free { next: NONE }; count];
        let mut live_count = 0;
        for (index, slot) in live {
            debug_assert!(
                matches!(entries[index], Entry::Free { .. }),
                "slot {index} twice"
            );
            entries[index] = Entry::Live(slot);
            live_count += 1;
        }
        // Thread the free list so the lowest freed index is handed out first.
        let mut free_head = NONE;
        for (index, entry) in entries.iter_mut().enumerate().rev() {
            if let Entry::Free { next } = entry {
                *next = free_head;
                free_head = index as u32;
            }
        }
        SlotTable {
            entries,
            free_head,
            live: live_count,
        }
    }

    /// Indices handed out, occupied or freed.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
            None => Err(SlotLookup::Unknown),
        }
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
        let index = self.next_index();
        if index == self.entries.len() {
            self.entries.push(Entry::Live(slot));
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

    /// Points the live slot at `index` to where it was moved.
    pub(crate) fn relocate(&mut self, index: usize, slot: LiveSlot) {
        let entry = &mut self.entries[index];
        debug_assert!(
            matches!(entry, Entry::Live(_)),
            "relocating free slot {index}"
        );
        *entry = Entry::Live(slot);
    }

    /// Frees the slot at `index` and returns what it held.
    pub(crate) fn vacate(&mut self, index: usize) -> Result<LiveSlot, SlotLookup> {
        let slot = *self.get(index)?;
        self.entries[index] = Entry::Free {
            next: self.free_head,
        };
        self.free_head = index as u32;
        self.live -= 1;
        Ok(slot)
    }

    /// Every live slot with its index, in index order.
    pub(crate) fn iter_live(&self) -> impl Iterator<Item = (usize, &LiveSlot)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry {
                Entry::Live(slot) => Some((index, slot)),
                Entry::Free { .. } => None,
            })
    }

    /// Checks the free list against the entries; a description of the first
    /// disagreement.
    pub(crate) fn check_consistency(&self) -> Result<(), String> {
        let free_entries = self.entries.len() - self.live;
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
        }
    }

    #[test]
    fn freed_indices_come_back_last_in_first_out() {
        let mut table = SlotTable::rebuild(0, []);
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
        let mut table = SlotTable::rebuild(5, [(1, slot(1)), (3, slot(3))]);
        table.check_consistency().unwrap();
        assert_eq!(table.live(), 2);
        assert_eq!(table.occupy(slot(0)), 0);
        assert_eq!(table.occupy(slot(2)), 2);
        assert_eq!(table.occupy(slot(4)), 4);
        assert_eq!(table.occupy(slot(5)), 5);
    }
}
