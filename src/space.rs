//! Free-space manager of the region file's data area.
//!
//! Pure bookkeeping over byte offsets: no I/O, safe Rust only. The data area starts at
//! [`Space::start`] and may grow up to [`Space::limit`]. Everything below the bump
//! [`Space::cursor`] is either allocated (tracked by the caller) or free (tracked here);
//! everything in `[cursor, limit)` is unused. Every offset and length is a multiple of
//! [`GRANULE`].
//!
//! # Invariants
//!
//! * Free extents never overlap or touch: a released extent is coalesced with the free
//!   extents just before and just after it.
//! * No free extent ends at the cursor: a free extent that would reach it is retracted into
//!   it instead (the cursor moves down to its start).
//! * Every free extent lies in `[start, cursor)`, and `start <= cursor <= limit`.
//!
//! # The index: two-level segregated fit (TLSF)
//!
//! Free extents are sorted into size classes by their length in granules `g`:
//!
//! * the first level is `fl = floor(log2(g))`;
//! * the second level splits `[2^fl, 2^(fl+1))` into 32 equal sub-classes
//!   (`sl` = the 5 bits below the leading one); below 64 granules a power of two holds at
//!   most 32 lengths, so every length below 64 granules (in particular below 32) has a
//!   class of its own.
//!
//! Each class has an intrusive doubly linked list of nodes, kept in a slab (`Vec<Node>`
//! with a list of vacant slots, node ids are `u32`). A `u64` bitmap says which first levels
//! have a non-empty class and a `u32` bitmap per first level says which of its classes are
//! non-empty, so the first non-empty class at or above any class is found with two
//! `trailing_zeros`. A hash table of node ids hashed by the end offset of the node's extent
//! finds the free neighbour before a released extent. It holds only the 4-byte ids (the
//! keys are read from the slab), so a free extent costs its 16-byte node (offset and length
//! packed in one word) and 5 to 10 bytes of table (5 bytes a bucket, at most 7/8 full).
//!
//! There is no table by start offset: the caller of [`Space::release`] names the free
//! extent after the released one, if any (the region reads it from the extent's tag in its
//! file), and the table by end confirms it. A second table cost 4 more bytes per slot of a
//! region with every other slot freed, where free extents are as many as live ones.
//!
//! Recovery records free extents in offset order; they are collected and indexed in one go
//! when it finishes, with the table sized once.
//!
//! # Time complexity
//!
//! Hash map operations are expected O(1); everything else below is worst case.
//!
//! * [`Space::release`], [`Space::undo_tail`], [`Space::recover_free`],
//!   [`Space::recover_allocated`] and every getter except [`Space::largest_free`] and
//!   [`Space::free_extents`]: O(1) (amortized, for the recovery helpers).
//! * [`Space::finish_recovery`]: O(n) for the n free extents recovered (a radix sort and
//!   one pass over the table), once.
//! * [`Space::allocate`]: O(1), plus at most one walk of one class list (see its docs).
//! * [`Space::largest_free`]: one walk of the highest non-empty class list.
//! * [`Space::free_extents`]: O(number of node slots).

use std::fmt;
use std::hash::BuildHasher;
use std::ops::{Index, IndexMut};

use hashbrown::{HashMap, HashTable};
use rustc_hash::FxBuildHasher;

/// Allocation granule: every offset and length is a multiple of it.
pub(crate) const GRANULE: u64 = 16;

/// Number of bits of the second-level index.
const SL_BITS: u32 = 5;
/// Number of second-level classes per first level.
const SL_COUNT: usize = 1 << SL_BITS;
/// Number of first levels (one per bit of a `u64` length in granules).
const FL_COUNT: usize = u64::BITS as usize;
/// Number of size classes.
const CLASS_COUNT: usize = FL_COUNT * SL_COUNT;

/// An allocation from a class takes the extent lowest in the file among this many at the
/// front of its list, not just the head: extents low in the file are used first, so the end
/// of the region is freed more often. Under churn of 16 B to 64 KiB payloads (32 MiB live)
/// with automatic compaction off, `used_bytes`/live fell from 1.24 to 1.16 on average (4;
/// 16 and 64 did worse), and with it on, compaction moved 12 % fewer bytes
/// (docs/PERFORMANCE.md, "Allocations take the lowest of four").
const LOW_PICK: usize = 4;

/// A contiguous byte range of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Extent {
    /// Offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// Offset just past the last byte (`offset + len`).
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Whether offset and length are multiples of [`GRANULE`] and the length is not zero.
    fn is_granular(&self) -> bool {
        self.len > 0 && self.offset.is_multiple_of(GRANULE) && self.len.is_multiple_of(GRANULE)
    }
}

/// What `allocate` handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// The extent given to the caller: `len` >= the requested length (larger only when the
    /// free extent it came from had a remainder shorter than `min_split`, which is then kept
    /// inside as slack).
    pub extent: Extent,
    /// The free extent split off behind `extent`, if any (the caller writes its header on disk).
    pub remainder: Option<Extent>,
    /// True when the extent was carved from the cursor (bump) rather than from free space.
    pub from_tail: bool,
}

/// What `release` did with a freed extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// The extent is now (part of) this free extent, after coalescing with free neighbours.
    Free(Extent),
    /// The extent (coalesced with any free extent just before it) reached the cursor and was
    /// given back: the cursor moved down to `cursor`.
    Retracted {
        /// The new cursor.
        cursor: u64,
    },
}

/// Why an allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfSpace {
    /// The requested length in bytes.
    pub requested: u64,
    /// The cursor at the time of the request.
    pub cursor: u64,
    /// The limit the cursor may not pass.
    pub limit: u64,
}

impl fmt::Display for OutOfSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "out of space: {} bytes requested, no free extent fits and the cursor at {} would pass the limit {}",
            self.requested, self.cursor, self.limit
        )
    }
}

impl std::error::Error for OutOfSpace {}

/// The free-space manager: free extents in a TLSF index, and the bump cursor.
pub(crate) struct Space {
    /// First byte of the data area. Invariant: `start <= cursor`.
    start: u64,
    /// How far the cursor may grow. Invariant: `cursor <= limit`.
    limit: u64,
    /// End of the last extent: `[cursor, limit)` is unused. Invariant: no free extent ends
    /// here, and every free extent lies in `[start, cursor)`.
    cursor: u64,
    /// A free remainder shorter than this is left inside the allocation as slack.
    min_split: u64,
    /// The free extents. Invariant: none overlap or touch.
    free: FreeIndex,
    /// While recovering: the run of free extents recorded last, which ends at the cursor and
    /// so is held aside until it is known whether an allocated extent follows it.
    /// Invariant: when `Some`, it ends at the cursor and touches no free extent.
    trailing_free: Option<Extent>,
    /// While recovering: the free extents recorded so far (but the trailing run), in offset
    /// order, indexed together when recovery finishes.
    recovered_free: Vec<Extent>,
}

impl Space {
    /// An empty space: data area from `start`, nothing allocated, cursor = start, may grow to
    /// `limit` (a `limit` below `start` is raised to `start`). `min_split`: a free remainder
    /// shorter than this is not split off (kept as slack). Both multiples of GRANULE.
    pub fn new(start: u64, limit: u64, min_split: u64) -> Self {
        debug_assert!(
            start.is_multiple_of(GRANULE),
            "start {start} is not a multiple of the granule"
        );
        debug_assert!(limit >= start, "limit {limit} is below start {start}");
        debug_assert!(
            min_split.is_multiple_of(GRANULE),
            "min_split {min_split} is not a multiple of the granule"
        );
        Space {
            start,
            limit: limit.max(start),
            cursor: start,
            min_split,
            free: FreeIndex::new(),
            trailing_free: None,
            recovered_free: Vec::new(),
        }
    }

    /// Good fit: take a free extent of at least `len` bytes (`len` is a positive multiple of
    /// GRANULE), splitting off the remainder at its end when remainder >= `min_split`;
    /// otherwise carve from the cursor; `Err(OutOfSpace)` when the cursor would pass `limit`
    /// (and then nothing changed).
    ///
    /// Promise: if any free extent of length >= `len` exists, it is served from free space,
    /// never from the cursor.
    ///
    /// The search first rounds the request up to the smallest class whose lengths all fit and
    /// takes, from the first non-empty class at or above it (two bitmap look-ups), the extent
    /// lowest in the file among the first `LOW_PICK` of its list. If
    /// there is none, the only extents that may still fit are in the request's own class
    /// (when `len` is not the lowest length of its class, which happens only from 64 granules
    /// on): that list is then walked first-fit. Each list keeps an upper bound on its longest
    /// length (raised on insertion, not lowered on removal, set to the true maximum after a
    /// walk that found nothing), and the walk is skipped when the bound is below `len`.
    ///
    /// Time (hash map operations counted as O(1)): O(1) when the rounded-up search succeeds,
    /// when `len` is the shortest length of its class (always so below 64 granules), or when
    /// the bound rules the list out. Otherwise O(k) for the k free extents of the request's
    /// own class, whose lengths differ by less than 1/32; the walk stops at the first fit. A
    /// walk that finds nothing leaves an exact bound, so another fruitless walk of that list
    /// needs a removal from it in between: repeated misses cost O(1).
    /// The number of free extents elsewhere never matters.
    ///
    /// In release builds a `len` of zero or not a multiple of the granule is rounded up.
    pub fn allocate(&mut self, len: u64) -> Result<Allocation, OutOfSpace> {
        debug_assert!(
            len > 0 && len.is_multiple_of(GRANULE),
            "allocate({len}): length must be a positive multiple of the granule"
        );
        self.finish_recovery();
        let Some(len) = len.max(GRANULE).checked_next_multiple_of(GRANULE) else {
            return Err(self.out_of_space(len));
        };
        match self.free.find_fit(len) {
            Some(id) => Ok(self.carve_free(id, len)),
            None => self.carve_tail(len),
        }
    }

    /// Like [`allocate`](Self::allocate), but only from a free extent whose front `len`
    /// bytes end at or below `below`, and never at the cursor: for compaction, which moves an
    /// extent only into space below a limit. Looks at no more than `visits` free extents, the
    /// heads of the fitting classes (shortest first) and then further along their lists, so
    /// it costs O(visits) at most; `None` if none of those fits below `below`.
    pub fn allocate_below(&mut self, len: u64, below: u64, visits: usize) -> Option<Allocation> {
        self.finish_recovery();
        let len = len.max(GRANULE).checked_next_multiple_of(GRANULE)?;
        let id = self.free.find_fit_below(len, below, visits)?;
        Some(self.carve_free(id, len))
    }

    /// How many places the free-extent index has: [`free_extent_in`](Self::free_extent_in)
    /// takes `0..` this. Compaction walks them a few at a time.
    pub fn free_extent_places(&self) -> usize {
        self.free.slab.nodes.len()
    }

    /// The free extent at place `place` of the index, if one is there. O(1).
    pub fn free_extent_in(&self, place: usize) -> Option<Extent> {
        self.free
            .slab
            .extent_at(place)
            .filter(|extent| extent.len > 0)
    }

    /// The free extent `offset..offset + len`, if it is one. O(1). The index finds free
    /// extents by their end only (a table by start as well cost 4 bytes per slot of a region
    /// with every other slot freed): the caller learns where one that starts at `offset`
    /// ends from elsewhere (the region, from the extent's tag in the file), and this
    /// confirms it.
    pub fn free_extent(&self, offset: u64, len: u64) -> Option<Extent> {
        let end = offset.checked_add(len)?;
        self.free
            .ending_at(end)
            .map(|id| self.free.extent(id))
            .filter(|extent| extent.offset == offset)
    }

    /// Give back an extent that was allocated (exactly as allocated: offset and len of
    /// `Allocation::extent`). Coalesces with a free neighbour before and after; if the result
    /// ends at the cursor, retracts the cursor to its start (and it is no longer a free
    /// extent). O(1).
    ///
    /// `after` is the free extent that starts where `extent` ends, if there is one: the
    /// caller must say (the index finds free extents by their end only; see
    /// [`free_extent`](Self::free_extent)). A claim the index does not confirm is ignored.
    /// A free extent there that the caller does not name stays apart, touching the released
    /// one: a caller bug that breaks the invariant that free extents never touch.
    ///
    /// Releasing something that was not allocated is a caller bug. The cheap symptoms (empty
    /// or unaligned, outside `[start, cursor)`, or ending where a free extent ends) fail a
    /// `debug_assert!`; in release builds such a call is ignored and returns
    /// `Released::Free(extent)` unchanged. Other overlaps with free space are not detected
    /// (that would need an ordered index): they corrupt the bookkeeping.
    pub fn release(&mut self, extent: Extent, after: Option<Extent>) -> Released {
        self.finish_recovery();
        let verdict = self.check_releasable(extent);
        debug_assert!(verdict.is_ok(), "release({extent:?}): {verdict:?}");
        if verdict.is_err() {
            return Released::Free(extent);
        }
        // A free neighbour's node grows to take the extent (and the other neighbour, if
        // both are free): fewer hash-table changes than taking them out and putting the
        // merged extent in anew.
        let before = self.free.ending_at(extent.offset);
        let start = before.map_or(extent.offset, |id| self.free.extent(id).offset);
        if extent.end() == self.cursor {
            if let Some(id) = before {
                self.free.remove(id);
            }
            self.cursor = start;
            return Released::Retracted {
                cursor: self.cursor,
            };
        }
        let after = after
            .filter(|after| after.offset == extent.end())
            .and_then(|after| self.free.ending_at(after.end()))
            .filter(|&id| self.free.extent(id).offset == extent.end());
        let end = after.map_or(extent.end(), |id| self.free.extent(id).end());
        let merged = Extent {
            offset: start,
            len: end - start,
        };
        match (before, after) {
            (Some(before), Some(after)) => {
                self.free.remove(after);
                self.free.reshape(before, merged);
            }
            (Some(grown), None) | (None, Some(grown)) => self.free.reshape(grown, merged),
            (None, None) => self.free.insert(merged),
        }
        Released::Free(merged)
    }

    /// Undo the most recent allocation if it was `from_tail` (used when growing the file
    /// failed): moves the cursor back to `extent.offset` (or further down, if the extent just
    /// before it was released meanwhile) and returns the new cursor.
    ///
    /// Precondition: `extent.end() == cursor`. This is simply [`Space::release`], which
    /// retracts the cursor because the extent ends there; if the precondition does not hold
    /// the extent is released like any other.
    pub fn undo_tail(&mut self, extent: Extent) -> u64 {
        debug_assert_eq!(
            extent.end(),
            self.cursor,
            "undo_tail({extent:?}): not the last extent"
        );
        self.release(extent, None);
        self.cursor
    }

    /// Recovery support: record an extent found free on disk while rebuilding (in increasing
    /// offset order, interleaved with `recover_allocated`). Adjacent free extents recorded in
    /// a row are coalesced. The cursor advances to its end (the limit is raised if needed).
    ///
    /// The last run of free extents is held aside (not counted, not allocatable) until an
    /// allocated extent follows it or recovery finishes; any other mutating call finishes
    /// recovery first. A gap between recorded extents stays unaccounted for, like an
    /// allocated extent. An extent that is empty, unaligned or starts below the cursor fails
    /// a `debug_assert!` and is ignored in release builds.
    pub fn recover_free(&mut self, extent: Extent) {
        if !self.accept_recovered(extent) {
            return;
        }
        let run = match self.trailing_free.take() {
            Some(run) if run.end() == extent.offset => Extent {
                offset: run.offset,
                len: run.len + extent.len,
            },
            Some(run) => {
                // A gap separates them: `run` is followed by unaccounted space, not the cursor.
                self.recovered_free.push(run);
                extent
            }
            None => extent,
        };
        self.trailing_free = Some(run);
    }

    /// Recovery support: an allocated (live) extent found on disk; advances the cursor to its
    /// end (the limit is raised if needed). Same preconditions as `recover_free`.
    pub fn recover_allocated(&mut self, extent: Extent) {
        if !self.accept_recovered(extent) {
            return;
        }
        if let Some(run) = self.trailing_free.take() {
            self.recovered_free.push(run);
        }
    }

    /// Recovery support: finish rebuilding; a trailing free extent (touching the cursor) is
    /// retracted. Returns the final cursor. Idempotent.
    #[inline]
    pub fn finish_recovery(&mut self) -> u64 {
        // Every allocation and release asks: one test in the common case.
        if self.trailing_free.is_some() || !self.recovered_free.is_empty() {
            self.index_recovered();
        }
        self.cursor
    }

    /// The work of `finish_recovery`, once.
    #[cold]
    fn index_recovered(&mut self) {
        if let Some(run) = self.trailing_free.take() {
            self.cursor = run.offset;
        }
        if !self.recovered_free.is_empty() {
            let recovered = std::mem::take(&mut self.recovered_free);
            self.free.insert_many(recovered);
        }
    }

    /// End of the last extent: everything in `[cursor, limit)` is unused.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// How far the cursor may grow.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Number of free extents. O(1).
    pub fn free_extent_count(&self) -> usize {
        self.free.len()
    }

    /// Total length of the free extents in bytes (the cursor's tail not included). O(1).
    pub fn free_bytes(&self) -> u64 {
        self.free.bytes
    }

    /// Length of the longest free extent, exactly (not a class bound). The highest non-empty
    /// class is found in O(1) through the bitmaps, then only its list is walked: O(k) for the
    /// k extents in that one class.
    pub fn largest_free(&self) -> Option<u64> {
        self.free.largest()
    }

    /// All free extents in no particular order (for tools/tests).
    pub fn free_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.free.extents()
    }

    /// Walk every structure and assert every invariant (bitmaps match lists, maps match nodes,
    /// no touching/overlapping free extents, counts and byte totals right, nothing past the
    /// cursor). Panics with a message on violation. O(n log n) for n free extents.
    ///
    /// Compiled in all builds (cheap to keep) but only called from debug assertions and tests.
    pub fn check_consistency(&self) {
        assert!(
            self.start <= self.cursor && self.cursor <= self.limit,
            "cursor {} outside [start {}, limit {}]",
            self.cursor,
            self.start,
            self.limit
        );
        assert_eq!(self.start % GRANULE, 0, "start is not granular");
        assert_eq!(self.cursor % GRANULE, 0, "cursor is not granular");
        let extents = self.free.check_consistency();
        if let Some(first) = extents.first() {
            assert!(first.offset >= self.start, "free {first:?} before start");
        }
        let last_end = extents.last().map(Extent::end);
        if let Some(end) = last_end {
            assert!(
                end < self.cursor,
                "free extent ends at {end}, cursor {}",
                self.cursor
            );
        }
        for pair in self.recovered_free.windows(2) {
            assert!(
                pair[0].end() < pair[1].offset,
                "recovered free extents {:?} and {:?} out of order or touching",
                pair[0],
                pair[1]
            );
        }
        if let Some(run) = self.trailing_free {
            assert!(
                run.is_granular(),
                "trailing free run {run:?} is not granular"
            );
            assert_eq!(
                run.end(),
                self.cursor,
                "trailing free run does not reach the cursor"
            );
            assert!(run.offset >= self.start, "trailing free run before start");
            assert!(
                last_end.is_none_or(|end| end < run.offset),
                "trailing free run {run:?} touches a free extent"
            );
        }
    }

    /// The error for a request of `len` bytes that cannot be served.
    fn out_of_space(&self, len: u64) -> OutOfSpace {
        OutOfSpace {
            requested: len,
            cursor: self.cursor,
            limit: self.limit,
        }
    }

    /// Takes free node `id` (at least `len` long) out of the index and hands out its front.
    fn carve_free(&mut self, id: NodeId, len: u64) -> Allocation {
        let found = self.free.extent(id);
        let remainder_len = found.len - len;
        if remainder_len == 0 || remainder_len < self.min_split {
            self.free.remove(id);
            return Allocation {
                extent: found,
                remainder: None,
                from_tail: false,
            };
        }
        let extent = Extent {
            offset: found.offset,
            len,
        };
        let remainder = Extent {
            offset: extent.end(),
            len: remainder_len,
        };
        // `found` touched no free extent and did not end at the cursor; neither does its tail,
        // which keeps the node.
        self.free.reshape(id, remainder);
        Allocation {
            extent,
            remainder: Some(remainder),
            from_tail: false,
        }
    }

    /// Bumps the cursor by `len`, unless that passes the limit.
    fn carve_tail(&mut self, len: u64) -> Result<Allocation, OutOfSpace> {
        let end = self
            .cursor
            .checked_add(len)
            .filter(|&end| end <= self.limit);
        let Some(end) = end else {
            return Err(self.out_of_space(len));
        };
        let extent = Extent {
            offset: self.cursor,
            len,
        };
        self.cursor = end;
        Ok(Allocation {
            extent,
            remainder: None,
            from_tail: true,
        })
    }

    /// Whether `extent` could be an allocated extent; the error says why not.
    fn check_releasable(&self, extent: Extent) -> Result<(), &'static str> {
        if !extent.is_granular() {
            return Err("empty or not a multiple of the granule");
        }
        if extent.offset < self.start {
            return Err("starts before the data area");
        }
        match extent.offset.checked_add(extent.len) {
            Some(end) if end <= self.cursor => {}
            _ => return Err("reaches past the cursor"),
        }
        if self.free.ending_at(extent.end()).is_some() {
            return Err("overlaps free space (released twice?)");
        }
        Ok(())
    }

    /// Checks a recovered extent and, if acceptable, advances the cursor (and the limit) to
    /// its end.
    fn accept_recovered(&mut self, extent: Extent) -> bool {
        let end = extent.offset.checked_add(extent.len);
        let acceptable = extent.is_granular() && extent.offset >= self.cursor && end.is_some();
        debug_assert!(
            acceptable,
            "recovered {extent:?} is empty, unaligned or before the cursor {}",
            self.cursor
        );
        if let (true, Some(end)) = (acceptable, end) {
            self.cursor = end;
            self.limit = self.limit.max(end);
            return true;
        }
        false
    }
}

/// A size class: lengths in `[lower_bound, lower_bound + width)` granules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    /// First level: `floor(log2(length in granules))`.
    fl: u32,
    /// Second level: which of the 32 equal parts of `[2^fl, 2^(fl+1))`.
    sl: u32,
}

impl Class {
    /// The class holding lengths of `granules` granules (> 0).
    fn containing(granules: u64) -> Self {
        debug_assert!(granules > 0, "no class for an empty length");
        let fl = granules.ilog2();
        let sl = (granules - (1 << fl)) >> Self::sl_shift(fl);
        Class { fl, sl: sl as u32 }
    }

    /// The lowest class whose lengths are all at least `granules` (> 0).
    fn smallest_fitting(granules: u64) -> Self {
        let class = Self::containing(granules);
        if class.lower_bound() == granules {
            class
        } else {
            Self::containing(class.lower_bound() + class.width())
        }
    }

    /// How many low bits of a length in level `fl` the second level ignores.
    fn sl_shift(fl: u32) -> u32 {
        fl.saturating_sub(SL_BITS)
    }

    /// The shortest length of the class, in granules.
    fn lower_bound(self) -> u64 {
        (1 << self.fl) + (u64::from(self.sl) << Self::sl_shift(self.fl))
    }

    /// How many lengths the class holds.
    fn width(self) -> u64 {
        1 << Self::sl_shift(self.fl)
    }

    /// Position of the class's list in `FreeIndex::lists`.
    fn index(self) -> usize {
        self.fl as usize * SL_COUNT + self.sl as usize
    }

    /// The class of a free extent of `len` bytes.
    fn of_len(len: u64) -> Self {
        Self::containing(len / GRANULE)
    }
}

/// Index of a node in the slab.
type NodeId = u32;

/// "No node": ends a list.
const NIL: NodeId = NodeId::MAX;

/// A slab slot: a free extent linked into its class list, or a vacant slot. 16 bytes: with
/// millions of free extents (a region with every other slot freed has as many as live
/// slots) the slab is more than a quarter of the memory a region keeps.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The free extent, packed: its offset in granules in the low `OFFSET_BITS` bits, its
    /// length in granules above them (0 marks a vacant slot). An extent whose offset or
    /// length does not fit (an offset of 16 TiB or more, a length of 256 MiB or more) has
    /// `OUTSIZED` for its length here, and is kept whole in `NodeSlab::outsized`. Read and
    /// written only through `NodeSlab::extent` and `NodeSlab::set_extent`.
    packed: u64,
    /// Previous node in the class list (`NIL` for the head; unused when vacant).
    prev: NodeId,
    /// Next node in the class list, or in the vacant list when vacant (`NIL` at the end).
    next: NodeId,
}

const _: () = assert!(std::mem::size_of::<Node>() == 16);

/// Bits of `Node::packed` that hold the offset (in granules): offsets below 16 TiB, the
/// largest reservation (`sys::mapping::MAX_RESERVATION`).
const OFFSET_BITS: u32 = 40;

/// The length field of `Node::packed` for an extent kept in `NodeSlab::outsized`; shorter
/// lengths (in granules) are stored as they are.
const OUTSIZED: u64 = (1 << (u64::BITS - OFFSET_BITS)) - 1;

/// Node storage: slots are reused through a list of vacant slots; the vector never shrinks.
struct NodeSlab {
    /// All slots, live and vacant.
    nodes: Vec<Node>,
    /// Head of the vacant list, linked through `Node::next`.
    vacant: NodeId,
    /// The extents of the nodes whose packed length is `OUTSIZED`. Invariant: exactly those
    /// nodes are keys here. Few: a region has at most one free extent per 256 MiB of its
    /// used bytes that is this long.
    outsized: HashMap<NodeId, Extent, FxBuildHasher>,
}

impl NodeSlab {
    /// An empty slab.
    fn new() -> Self {
        NodeSlab {
            nodes: Vec::new(),
            vacant: NIL,
            outsized: HashMap::default(),
        }
    }

    /// The extent of slot `id` (length 0 when vacant).
    #[inline]
    fn extent(&self, id: NodeId) -> Extent {
        Self::unpack(self.nodes[id as usize].packed, || self.outsized[&id])
    }

    /// The extent of the slot at `place`, if the slab is that long (length 0 when vacant).
    fn extent_at(&self, place: usize) -> Option<Extent> {
        let node = self.nodes.get(place)?;
        Some(Self::unpack(node.packed, || {
            self.outsized[&(place as NodeId)]
        }))
    }

    /// A packed extent; `outsized` looks up one that does not fit.
    #[inline]
    fn unpack(packed: u64, outsized: impl FnOnce() -> Extent) -> Extent {
        let len = packed >> OFFSET_BITS;
        if len == OUTSIZED {
            return outsized();
        }
        Extent {
            offset: (packed & ((1 << OFFSET_BITS) - 1)) * GRANULE,
            len: len * GRANULE,
        }
    }

    /// Sets the extent of slot `id` (granular; length 0 to mark it vacant).
    fn set_extent(&mut self, id: NodeId, extent: Extent) {
        debug_assert!(extent.is_granular() || extent.len == 0);
        let offset = extent.offset / GRANULE;
        let len = extent.len / GRANULE;
        let node = &mut self.nodes[id as usize];
        let was_outsized = node.packed >> OFFSET_BITS == OUTSIZED;
        if offset < 1 << OFFSET_BITS && len < OUTSIZED {
            node.packed = offset | len << OFFSET_BITS;
            if was_outsized {
                self.outsized.remove(&id);
            }
        } else {
            node.packed = OUTSIZED << OFFSET_BITS;
            self.outsized.insert(id, extent);
        }
    }

    /// Stores an unlinked node for `extent` and returns its id.
    ///
    /// # Panics
    ///
    /// With more than `u32::MAX - 1` live nodes (hundreds of GiB of bookkeeping: like an
    /// allocation failure, not reachable in practice).
    fn occupy(&mut self, extent: Extent) -> NodeId {
        let node = Node {
            packed: 0,
            prev: NIL,
            next: NIL,
        };
        let id = if self.vacant != NIL {
            let id = self.vacant;
            self.vacant = self[id].next;
            self[id] = node;
            id
        } else {
            let id = NodeId::try_from(self.nodes.len())
                .ok()
                .filter(|&id| id != NIL)
                .expect("more than u32::MAX - 1 free extents");
            self.nodes.push(node);
            id
        };
        self.set_extent(id, extent);
        id
    }

    /// Marks slot `id` vacant for reuse.
    fn vacate(&mut self, id: NodeId) {
        self.set_extent(id, Extent { offset: 0, len: 0 });
        let next = self.vacant;
        self[id].prev = NIL;
        self[id].next = next;
        self.vacant = id;
    }
}

impl Index<NodeId> for NodeSlab {
    type Output = Node;

    fn index(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }
}

impl IndexMut<NodeId> for NodeSlab {
    fn index_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }
}

/// Node ids by one edge of their extent (its start, or its end): a hash table that stores
/// only the ids and reads each key from the slab.
struct EdgeMap {
    table: HashTable<NodeId>,
    /// The edge of an extent this map is keyed by.
    edge: fn(&Extent) -> u64,
}

impl EdgeMap {
    /// An empty map keyed by `edge`.
    fn new(edge: fn(&Extent) -> u64) -> Self {
        EdgeMap {
            table: HashTable::new(),
            edge,
        }
    }

    /// The hash of an edge offset.
    fn hash(at: u64) -> u64 {
        FxBuildHasher.hash_one(at)
    }

    /// Hashes a node id by its edge: what the table calls to place an id.
    fn hasher(edge: fn(&Extent) -> u64, slab: &NodeSlab) -> impl Fn(&NodeId) -> u64 + '_ {
        move |&id| Self::hash(edge(&slab.extent(id)))
    }

    /// The hash of node `id`'s edge.
    fn hash_of(&self, slab: &NodeSlab, id: NodeId) -> u64 {
        Self::hasher(self.edge, slab)(&id)
    }

    /// The node whose edge is at `at`.
    fn find(&self, slab: &NodeSlab, at: u64) -> Option<NodeId> {
        self.table
            .find(Self::hash(at), |&id| (self.edge)(&slab.extent(id)) == at)
            .copied()
    }

    /// Adds node `id` (occupied in `slab`; no other node has the same edge).
    fn insert(&mut self, slab: &NodeSlab, id: NodeId) {
        let hash = self.hash_of(slab, id);
        self.table
            .insert_unique(hash, id, Self::hasher(self.edge, slab));
    }

    /// Takes node `id` (still occupied in `slab`) out.
    fn remove(&mut self, slab: &NodeSlab, id: NodeId) {
        let hash = self.hash_of(slab, id);
        if let Ok(entry) = self.table.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
    }

    /// Adds nodes `ids` (occupied in `slab`; no two nodes share an edge). The table grows
    /// once, and the ids go in in the order of the buckets they land in: a table much larger
    /// than the caches is then written front to back instead of at random (a cache miss per
    /// id).
    fn insert_many(&mut self, slab: &NodeSlab, ids: &[NodeId]) {
        self.table.reserve(ids.len(), Self::hasher(self.edge, slab));
        // hashbrown places a hash in bucket `hash & (buckets - 1)` and keeps 7/8 of its
        // power-of-two bucket count usable. Should that change, the order is merely slower.
        let buckets = (self.table.capacity() / 7 * 8).next_power_of_two() as u64;
        let mut order: Vec<(u64, NodeId)> =
            ids.iter().map(|&id| (self.hash_of(slab, id), id)).collect();
        radsort::sort_by_key(&mut order, |&(hash, _)| hash & (buckets - 1));
        for (hash, id) in order {
            // Sized above: the hasher is not called.
            self.table
                .insert_unique(hash, id, Self::hasher(self.edge, slab));
        }
    }
}

/// The list of one size class.
#[derive(Debug, Clone, Copy)]
struct ClassList {
    /// First node, `NIL` when empty.
    head: NodeId,
    /// Invariant: at least the longest length in the list (bytes); 0 when empty. Raised on
    /// insertion, not lowered on removal, exact after a fruitless first-fit walk.
    len_bound: u64,
}

/// The free extents: TLSF class lists plus a neighbour map by end offset.
struct FreeIndex {
    /// Storage of the list nodes.
    slab: NodeSlab,
    /// One list per class, indexed by `Class::index`.
    lists: Box<[ClassList]>,
    /// Bit `fl` set iff `sl_bitmaps[fl] != 0`.
    fl_bitmap: u64,
    /// Bit `sl` of entry `fl` set iff the list of class `(fl, sl)` is non-empty.
    sl_bitmaps: [u32; FL_COUNT],
    /// Free extents by end offset. Invariant: exactly the linked nodes.
    by_end: EdgeMap,
    /// Invariant: the sum of the lengths of the free extents.
    bytes: u64,
}

impl FreeIndex {
    /// An empty index.
    fn new() -> Self {
        let empty = ClassList {
            head: NIL,
            len_bound: 0,
        };
        FreeIndex {
            slab: NodeSlab::new(),
            lists: vec![empty; CLASS_COUNT].into_boxed_slice(),
            fl_bitmap: 0,
            sl_bitmaps: [0; FL_COUNT],
            by_end: EdgeMap::new(Extent::end),
            bytes: 0,
        }
    }

    /// Number of free extents.
    fn len(&self) -> usize {
        self.by_end.table.len()
    }

    /// Adds many free extents (granular, touching no other free extent nor each other) at
    /// once: the same as inserting them one by one, in order, with the table sized once
    /// and filled in the order of its buckets.
    fn insert_many(&mut self, extents: Vec<Extent>) {
        self.slab.nodes.reserve_exact(extents.len());
        let mut ids = Vec::with_capacity(extents.len());
        for extent in extents {
            let id = self.slab.occupy(extent);
            self.link(id, Class::of_len(extent.len));
            self.bytes += extent.len;
            ids.push(id);
        }
        self.by_end.insert_many(&self.slab, &ids);
    }

    /// The free extent ending at `end`.
    fn ending_at(&self, end: u64) -> Option<NodeId> {
        self.by_end.find(&self.slab, end)
    }

    /// All free extents, in slab order.
    fn extents(&self) -> impl Iterator<Item = Extent> + '_ {
        (0..self.slab.nodes.len())
            .filter_map(|place| self.slab.extent_at(place))
            .filter(|extent| extent.len > 0)
    }

    /// Adds a free extent (granular, touching no other free extent).
    fn insert(&mut self, extent: Extent) {
        let id = self.slab.occupy(extent);
        self.link(id, Class::of_len(extent.len));
        self.by_end.insert(&self.slab, id);
        self.bytes += extent.len;
    }

    /// Changes free extent `id` into `extent`, which keeps its start or its end (a free
    /// extent grown by a freed neighbour, or shortened at the front by an allocation): the
    /// table by end is touched only if the end moves, and no other node is. The node goes
    /// to the head of its class list, as an `insert` would put it (allocations choose among
    /// the first nodes of a list: `LOW_PICK`).
    fn reshape(&mut self, id: NodeId, extent: Extent) {
        let old = self.slab.extent(id);
        debug_assert!(old.offset == extent.offset || old.end() == extent.end());
        let end_moves = old.end() != extent.end();
        if end_moves {
            self.by_end.remove(&self.slab, id);
        }
        self.unlink(id, Class::of_len(old.len));
        self.slab.set_extent(id, extent);
        if end_moves {
            self.by_end.insert(&self.slab, id);
        }
        self.link(id, Class::of_len(extent.len));
        self.bytes = self.bytes - old.len + extent.len;
    }

    /// The free extent `id`.
    fn extent(&self, id: NodeId) -> Extent {
        self.slab.extent(id)
    }

    /// Takes free extent `id` out of the index and returns it.
    fn remove(&mut self, id: NodeId) -> Extent {
        let extent = self.slab.extent(id);
        self.unlink(id, Class::of_len(extent.len));
        self.by_end.remove(&self.slab, id);
        self.bytes -= extent.len;
        self.slab.vacate(id);
        extent
    }

    /// Pushes node `id` at the head of the list of `class`.
    fn link(&mut self, id: NodeId, class: Class) {
        let list = &mut self.lists[class.index()];
        let old_head = list.head;
        list.head = id;
        list.len_bound = list.len_bound.max(self.slab.extent(id).len);
        let node = &mut self.slab[id];
        node.prev = NIL;
        node.next = old_head;
        if old_head != NIL {
            self.slab[old_head].prev = id;
        }
        self.sl_bitmaps[class.fl as usize] |= 1 << class.sl;
        self.fl_bitmap |= 1 << class.fl;
    }

    /// Takes node `id` out of the list of `class`.
    fn unlink(&mut self, id: NodeId, class: Class) {
        let Node { prev, next, .. } = self.slab[id];
        let list = &mut self.lists[class.index()];
        if prev == NIL {
            list.head = next;
        } else {
            self.slab[prev].next = next;
        }
        if next != NIL {
            self.slab[next].prev = prev;
        }
        if list.head == NIL {
            list.len_bound = 0;
            self.mark_empty(class);
        }
    }

    /// Clears the bitmap bits of `class`, whose list just became empty.
    fn mark_empty(&mut self, class: Class) {
        let level = &mut self.sl_bitmaps[class.fl as usize];
        *level &= !(1 << class.sl);
        if *level == 0 {
            self.fl_bitmap &= !(1 << class.fl);
        }
    }

    /// A free extent of at least `len` bytes (granular, > 0), if any exists.
    fn find_fit(&mut self, len: u64) -> Option<NodeId> {
        if self.fl_bitmap == 0 {
            // No free extent at all: the common case of writes at the end.
            return None;
        }
        let granules = len / GRANULE;
        let fitting = Class::smallest_fitting(granules);
        if let Some(class) = self.first_nonempty_from(fitting) {
            return Some(self.lowest_of_first(class));
        }
        let own = Class::containing(granules);
        if own == fitting {
            return None;
        }
        self.first_fit_in(own, len)
    }

    /// The extent lowest in the file among the first `LOW_PICK` of `class`'s list (which
    /// must not be empty).
    fn lowest_of_first(&self, class: Class) -> NodeId {
        let mut id = self.lists[class.index()].head;
        let mut lowest = id;
        for _ in 1..LOW_PICK {
            id = self.slab[id].next;
            if id == NIL {
                break;
            }
            if self.slab.extent(id).offset < self.slab.extent(lowest).offset {
                lowest = id;
            }
        }
        lowest
    }

    /// A free extent of at least `len` bytes (granular, > 0) whose first `len` bytes end at
    /// or below `below`, among the first `visits` extents of the fitting classes, shortest
    /// class first (see `Space::allocate_below`).
    fn find_fit_below(&self, len: u64, below: u64, mut visits: usize) -> Option<NodeId> {
        if self.fl_bitmap == 0 {
            return None;
        }
        let granules = len / GRANULE;
        // From the request's own class: it may hold extents long enough.
        let mut class = Some(Class::containing(granules));
        while let Some(at) = class.and_then(|class| self.first_nonempty_from(class)) {
            let mut id = self.lists[at.index()].head;
            while id != NIL {
                if visits == 0 {
                    return None;
                }
                visits -= 1;
                let extent = self.slab.extent(id);
                if extent.len >= len && extent.offset + len <= below {
                    return Some(id);
                }
                id = self.slab[id].next;
            }
            class = at
                .lower_bound()
                .checked_add(at.width())
                .filter(|next| next.ilog2() < FL_COUNT as u32)
                .map(Class::containing);
        }
        None
    }

    /// The first non-empty class at or above `class`, by bitmap look-ups.
    fn first_nonempty_from(&self, class: Class) -> Option<Class> {
        let same_level = self.sl_bitmaps[class.fl as usize] & (u32::MAX << class.sl);
        if same_level != 0 {
            return Some(Class {
                fl: class.fl,
                sl: same_level.trailing_zeros(),
            });
        }
        let higher_levels = self.fl_bitmap & u64::MAX.checked_shl(class.fl + 1).unwrap_or(0);
        if higher_levels == 0 {
            return None;
        }
        let fl = higher_levels.trailing_zeros();
        Some(Class {
            fl,
            sl: self.sl_bitmaps[fl as usize].trailing_zeros(),
        })
    }

    /// Walks the list of `class` for its first extent of at least `len` bytes, unless its
    /// bound rules that out; a fruitless walk makes the bound exact.
    fn first_fit_in(&mut self, class: Class, len: u64) -> Option<NodeId> {
        let list = self.lists[class.index()];
        if list.len_bound < len {
            return None;
        }
        let mut longest = 0;
        let mut id = list.head;
        while id != NIL {
            let extent_len = self.slab.extent(id).len;
            if extent_len >= len {
                return Some(id);
            }
            longest = longest.max(extent_len);
            id = self.slab[id].next;
        }
        self.lists[class.index()].len_bound = longest;
        None
    }

    /// The length of the longest free extent: the longest in the highest non-empty class.
    fn largest(&self) -> Option<u64> {
        let fl = self.fl_bitmap.checked_ilog2()?;
        let sl = self.sl_bitmaps[fl as usize].checked_ilog2()?;
        self.list_lengths(Class { fl, sl }).max()
    }

    /// The lengths in the list of `class`, head first.
    fn list_lengths(&self, class: Class) -> impl Iterator<Item = u64> + '_ {
        let head = self.lists[class.index()].head;
        std::iter::successors((head != NIL).then_some(head), |&id| {
            let next = self.slab[id].next;
            (next != NIL).then_some(next)
        })
        .map(|id| self.slab.extent(id).len)
    }

    /// Asserts every invariant of the index; returns the free extents sorted by offset.
    fn check_consistency(&self) -> Vec<Extent> {
        let mut linked = 0;
        let mut bytes = 0;
        for fl in 0..FL_COUNT as u32 {
            let level = self.sl_bitmaps[fl as usize];
            assert_eq!(
                self.fl_bitmap >> fl & 1 == 1,
                level != 0,
                "first-level bit {fl} disagrees with its second-level bitmap {level:#x}"
            );
            for sl in 0..SL_COUNT as u32 {
                let class = Class { fl, sl };
                let (count, sum) = self.check_list(class);
                assert_eq!(
                    level >> sl & 1 == 1,
                    count > 0,
                    "bitmap bit of {class:?} disagrees with its list"
                );
                linked += count;
                bytes += sum;
            }
        }
        assert_eq!(
            linked,
            self.by_end.table.len(),
            "by_end size != linked nodes"
        );
        assert_eq!(bytes, self.bytes, "free byte total is wrong");
        self.check_slab(linked);
        let mut extents: Vec<Extent> = self.extents().collect();
        extents.sort_unstable_by_key(|extent| extent.offset);
        for pair in extents.windows(2) {
            assert!(
                pair[0].end() < pair[1].offset,
                "free extents {:?} and {:?} overlap or touch",
                pair[0],
                pair[1]
            );
        }
        extents
    }

    /// Asserts the links, classes, bound and map entries of one list; returns its node count
    /// and byte total.
    fn check_list(&self, class: Class) -> (usize, u64) {
        let list = self.lists[class.index()];
        let (mut count, mut sum) = (0, 0);
        let mut prev = NIL;
        let mut id = list.head;
        while id != NIL {
            assert!(
                count < self.slab.nodes.len(),
                "list of {class:?} has a cycle"
            );
            let node = self.slab[id];
            let extent = self.slab.extent(id);
            assert_eq!(node.prev, prev, "broken back link at node {id}");
            assert!(extent.is_granular(), "free {extent:?} is not granular");
            assert_eq!(
                Class::of_len(extent.len),
                class,
                "{extent:?} in the wrong list"
            );
            assert!(
                extent.len <= list.len_bound,
                "{extent:?} above its list's bound"
            );
            assert_eq!(
                self.ending_at(extent.end()),
                Some(id),
                "by_end misses {extent:?}"
            );
            count += 1;
            sum += extent.len;
            prev = id;
            id = node.next;
        }
        if count == 0 {
            assert_eq!(list.len_bound, 0, "empty list of {class:?} has a bound");
        }
        (count, sum)
    }

    /// Asserts that the slab holds exactly `linked` live nodes and that the rest are vacant.
    fn check_slab(&self, linked: usize) {
        let live = self.extents().count();
        assert_eq!(live, linked, "live slab nodes != linked nodes");
        let mut vacant = 0;
        let mut id = self.slab.vacant;
        while id != NIL {
            assert!(vacant < self.slab.nodes.len(), "vacant list has a cycle");
            assert_eq!(self.slab.extent(id).len, 0, "vacant node {id} is live");
            vacant += 1;
            id = self.slab[id].next;
        }
        assert_eq!(live + vacant, self.slab.nodes.len(), "slab slots leaked");
        let outsized = self
            .slab
            .nodes
            .iter()
            .filter(|node| node.packed >> OFFSET_BITS == OUTSIZED)
            .count();
        assert_eq!(
            outsized,
            self.slab.outsized.len(),
            "outsized extents not in their map"
        );
    }
}

#[cfg(test)]
mod tests;
