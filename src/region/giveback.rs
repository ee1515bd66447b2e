//! The space policy: how much disk the file holds, and when it takes and
//! gives back blocks. Growth ahead, zeros written ahead, refills of punched
//! holes, the budget, hole punching and shrinking the file are all here;
//! the region calls in at its events:
//!
//! - before a range is written: `make_writable` (grows the file, refills
//!   holes, with the payload's bytes where it lies over them, takes the
//!   pages out of the punching batch, writes zeros ahead);
//! - after an extent is freed and merged: `punch_free_extent`;
//! - after the end of the region moves down: `give_back_tail`;
//! - after each `write` and `free`: `keep_budget` (region/compact.rs moves
//!   extents when `over_budget` says so);
//! - at close: `punch_pending`, `give_back_long_folio_tail`.
//!
//! All of the policy's state is one value, [`Policy`] (the region's
//! `policy` field): the holes, the punching batch, long folios, growth and
//! zeros ahead, the disk budget, and compaction's listing and pass.
//!
//! The region keeps the disk it holds within a budget: its live extents
//! plus their slack (`MemoryTuning::overflow_slack_percent`). The thresholds
//! are here (`COMPACT_FROM`, `COMPACT_TO`, `WHOLE_SLACK`, `TAIL_EXCESS`,
//! `blocks_end`); automatic compaction (region/compact.rs) acts on them.
//!
//! Free extents at least the punching threshold long are punched out of
//! the file, in batches (`pending_punch`), in whole pages; the unused end
//! of the file is truncated when no reader maps it, and punched otherwise.
//!
//! Why a cut needs care: the page cache keeps what one `pwrite` writes in
//! folios up to its length, and on Linux (seen on ext4; docs/PERFORMANCE.md
//! has the kernel version) a hole punched into part of a dirty large folio
//! may leave it whole: the next store to the rest of the folio brings the
//! punched blocks back, and on a full disk that store would fault. A clean
//! folio is split or dropped whole when cut. So the region writes its zeros
//! in pieces that never cross a multiple of the punching granule
//! (`Settings::punch_granule`, `Mapping::set_write_piece`), which bounds
//! every folio it makes to one granule, and a hole that starts or ends
//! strictly inside a granule first writes that granule back
//! (`clean_folios_at`). That costs one short write per cut, so only free
//! extents of `PAGE_CUT_MIN_GRANULES` granules or more are cut to the page
//! next to live data; shorter ones keep whole granules. Since the page cache
//! outlives a writer, the file header records the piece size
//! (`drop_larger_folios`).
//!
//! Long payloads written at the end (`OverflowRegion::write_direct`) are the
//! one exception: their middles are written in long pieces, for speed. No
//! hole ever starts or ends strictly inside the middle of a live extent (a
//! hole lies in free space), so those folios matter only once the extent is
//! freed: from then on its middle is kept in `large_folios` until holes or
//! a truncation take it. A hole or truncation that ends strictly inside one
//! first writes back the longest folio that could hold that end
//! (`folio_around`). Freeing a long extent punches its middle at once (not
//! in a batch; `OverflowRegion::free_many` punches after its last free,
//! and then the long folios it left past the end too, since nothing is
//! written in between), so that happens mostly when the tail is given back (a long
//! payload freed at the end), after a punch failed, or with a threshold
//! above 96 KiB that a freed extent's merged run stays below.
//!
//! The file header says (bit 62, `LONG_FOLIOS`) while `large_folios` holds
//! anything or a long payload is being written, so a writer opening the
//! file after a crash in that state drops the page cache. At close the
//! long folios left in the tail are punched (`give_back_long_folio_tail`),
//! so usually the bit is clear and the next writer keeps the page cache.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::compact::{AutoCompaction, Candidates};
use super::{DIRECT_MIN, OverflowRegion, Settings, pages_touching};
use crate::budget::DiskBudget;
use crate::error::{Error, Result};
use crate::holes::Holes;
use crate::layout::{CANNOT_PUNCH, DATA_START, EXTENT_HEADER_LEN, LONG_FOLIOS, WRITE_PIECE_OFFSET};
use crate::space::Allocation;
use crate::space::Extent;
use crate::sys::mapping::{self, MAX_WRITE_PIECE, ReadersLock, part_ranges};

/// A write's payload, for `make_writable`: where it starts in the file, its
/// length and its bytes (one part for `write`).
#[derive(Clone, Copy)]
pub(super) struct NewPayload<'a> {
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) parts: &'a [&'a [u8]],
}

impl NewPayload<'_> {
    /// Where the payload ends in the file.
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The space policy's state, kept between the region's events (the
/// region holds it as `OverflowRegion::policy`; the decisions on it are the
/// `impl OverflowRegion` blocks of this module and of region/compact.rs).
#[derive(Debug)]
pub(super) struct Policy {
    /// Page ranges that may hold no disk blocks (punched). Invariant: every
    /// page of the file that may be a hole is in it, so storing anywhere
    /// outside it cannot need a new block.
    pub(super) holes: Holes,
    /// Whole pages (whole granules, in free extents shorter than
    /// `PAGE_CUT_MIN_GRANULES` of them) inside free extents that are due to
    /// be punched. Punching waits until they add up to a batch (the slack,
    /// a tenth of the live bytes by default, within bounds: `PUNCH_BATCH`),
    /// so a free extent that is written again soon (churn) is neither
    /// punched nor refilled; a write takes the pages it uses out of this
    /// map. Invariant: disjoint from `holes` (the budget counts both as
    /// given back; `check_consistency` checks it).
    pub(super) pending_punch: Holes,
    /// Ranges of the file where the page cache may hold folios longer than a
    /// punching granule outside live extents' middles: the middles of freed
    /// extents (which `write_direct` may have written in long pieces; parts
    /// may hold new extents since), until holes or a truncation take them.
    /// A hole or truncation that would start or end strictly inside one
    /// writes the folio there back first (see region/giveback.rs). While it
    /// is not empty the file header says so (`LONG_FOLIOS`). All is
    /// forgotten when the file system refuses to punch; empty for a region
    /// that never punches.
    pub(super) large_folios: Holes,
    /// No free extent starts below this offset: compaction's scan starts
    /// here. Invariant: `DATA_START <= compact_from <= space.cursor()`.
    pub(super) compact_from: u64,
    /// Explicit compaction's candidates (`compact_step`), kept from step to
    /// step: the live slots above the lowest free extent, and the listing
    /// of them under way.
    pub(super) explicit: Candidates,
    /// A recent high point of the cursor: it rises with every write at the
    /// end and decays halfway towards the cursor at every give-back. The file
    /// never shrinks below it, so a loop that writes past the end and frees
    /// it again does not truncate and regrow the file each time.
    pub(super) peak_end: u64,
    /// The pages from the end of the region up to here were written with
    /// zeros ahead of use (`WARM_AHEAD`). A hint for speed only.
    pub(super) warm_end: u64,
    /// True while compaction moves extents: it does not punch holes it is
    /// about to fill again.
    pub(super) compacting: bool,
    /// While `OverflowRegion::free_many` frees its slots: whether one of
    /// them called for the pages waiting to be punched to be punched. They
    /// are punched once, after the last (nothing is written in between, so
    /// no long folio can be cut where a write reused part of a free
    /// extent). `None` otherwise.
    pub(super) punch_after_frees: Option<bool>,
    /// Automatic compaction: the pass under way, and old places of moved
    /// slots waiting for a sync. Invariant: those old places are neither
    /// free nor a live slot's extent, and still carry their live headers
    /// (so the free extents, the live slots' extents and these tile the
    /// data area).
    pub(super) auto: AutoCompaction,
    /// Set at open when the page cache may hold long folios this writer
    /// does not know of and dropping it failed: the header keeps saying so
    /// (`LONG_FOLIOS`) for the next writer.
    pub(super) unknown_long_folios: bool,
    /// The disk budget the file's length is charged to, for a region of a
    /// `SpillDir`. Invariant: while set, `mapping.len()` bytes of it are
    /// this region's.
    pub(super) disk_budget: Option<Arc<DiskBudget>>,
}

impl Policy {
    /// The state of a region just opened: nothing punched, pending or
    /// listed, no budget. `unknown_long_folios`: see the field.
    pub(super) fn new(unknown_long_folios: bool) -> Self {
        Policy {
            holes: Holes::default(),
            pending_punch: Holes::default(),
            large_folios: Holes::default(),
            compact_from: DATA_START,
            explicit: Candidates::default(),
            peak_end: DATA_START,
            warm_end: DATA_START,
            compacting: false,
            punch_after_frees: None,
            auto: AutoCompaction::default(),
            unknown_long_folios,
            disk_budget: None,
        }
    }
}

/// A growing file grows by the slack of its live bytes
/// (`Settings::growth_step`: at least `MIN_GROWTH_STEP`, none with no
/// slack), or to the end of the write if that is farther, and the step is
/// at most this many bytes, so one step never commits far more disk than
/// the region needs.
pub(super) const MAX_GROWTH_STEP: u64 = 256 << 20;

/// The least a growing file grows by when it has slack (with none it grows
/// by what each write needs), so a small region does not call `fallocate`
/// for every write.
pub(super) const MIN_GROWTH_STEP: u64 = 1 << 20;

/// Writes at the end of the region find the pages this far ahead of them
/// already in the page cache: the region writes zeros there with `pwrite`
/// (see `Mapping::write_zeros`) once per this many bytes, which costs far
/// less than a page fault per page. The stretches end on multiples of this,
/// or earlier at the end of the file or at a punched hole. (Long payloads
/// skip this: `write_direct`.)
pub(super) const WARM_AHEAD: u64 = 2 << 20;

/// When a write at the end of the region meets punched holes, they are
/// filled (blocks allocated, zeros written) this far past it at once rather
/// than one system call per page. (Some file systems, ext4 among them,
/// report allocated but never written space as holes, so after a reopen the
/// whole unused tail may be in the hole map.)
pub(super) const TAIL_FILL_AHEAD: u64 = 1 << 20;

/// Whole free pages wait to be punched until the slack of the live bytes
/// worth of them have gathered (`MemoryTuning::overflow_slack_percent`, a
/// tenth by default: under churn, freed space is mostly written again
/// before that much gathers, so it is neither punched nor refilled;
/// measured in docs/PERFORMANCE.md, "Payload checksums at sync, punching
/// in batches of a tenth"), at least one punching threshold and at most
/// this many: see `Policy::pending_punch`. With automatic compaction off,
/// the cap bounds the work of the one `free` that punches a batch; with it
/// on, a full batch is punched only once the disk held below the end of
/// the region passes the live extents and their slack
/// (`holds_within_budget`), so the queue can grow past the cap.
const PUNCH_BATCH: u64 = 256;

/// Free extents at least this many punching granules long are punched to
/// the page, shorter ones in whole granules. A cut inside a granule costs
/// a write-back of it (`OverflowRegion::clean_folios_at`): from this
/// length on, at most a quarter of the bytes given back, while a shorter
/// extent keeps at most a granule more at each end. Under churn of
/// payloads up to 64 KiB most free runs are shorter (docs/PERFORMANCE.md,
/// "Holes cut to the page").
const PAGE_CUT_MIN_GRANULES: u64 = 8;

/// The file shrinks only when it would lose at least this much (and a
/// quarter of its size), so a region hovering at one size never truncates
/// and grows in turn.
const MIN_SHRINK: u64 = 1 << 20;

/// Automatic compaction starts only in a region that uses at least this
/// much: below it, the gaps between live extents cost too little disk to
/// be worth moving bytes for.
const AUTO_MIN_USED: u64 = 256 << 10;

/// The budget (all in sixteenths of the slack of the live extents, beyond
/// them): automatic compaction starts a pass when the disk held below the
/// end passes `COMPACT_FROM` sixteenths, and moves extents until it is back
/// to `COMPACT_TO`. The whole slack (`WHOLE_SLACK`) bounds the rest: a batch
/// of free pages is punched only past it (with automatic compaction holding
/// the region below it, free space is written again before it is worth
/// punching), and the tail keeps blocks up to where the live extents and it
/// would end (`blocks_end`).
///
/// 13 and 10 (were 12 and 8): under churn of 16 B to 64 KiB payloads with
/// four seeds, compaction moved a fifth fewer bytes and `used_bytes`/live
/// stayed at or below 1.099 (docs/PERFORMANCE.md, "Thresholds in
/// sixteenths: 13 and 10"); 14 and 11 moved 40 % fewer but reached 1.107.
const COMPACT_FROM: u64 = 13;
const COMPACT_TO: u64 = 10;
const WHOLE_SLACK: u64 = 16;

/// The tail past `blocks_end` is punched only once it is this many
/// sixteenths of the slack long (two slacks). Under churn the live bytes
/// swing by about a slack (a random slot freed, one of a random size
/// written), and `blocks_end` with them: a tail punched at every downswing
/// was written again at the next upswing, zeros first (`fill_holes`),
/// which cost 18 % of churn throughput (docs/PERFORMANCE.md, "The tail
/// keeps two slacks"). A region whose live bytes really fall gives its
/// tail back by shrinking the file, or by this punch.
const TAIL_EXCESS: u64 = 32;

impl OverflowRegion {
    /// The budget of the disk held below the end of the region, in
    /// `sixteenths` of the slack beyond the live extents.
    fn budget(&self, sixteenths: u64) -> u64 {
        let live = self.accounting.extent_bytes();
        live + self.settings.slack(live) / 16 * sixteenths
    }

    /// The bytes the region holds below its end: its used bytes but
    /// punched holes (which hold no disk) and, with `pending`, but the
    /// free pages waiting to be punched.
    fn held_below_end(&self, pending: bool) -> u64 {
        let cursor = self.space.cursor();
        let used = cursor - DATA_START;
        let mut given_back = self.policy.holes.bytes() - self.policy.holes.bytes_from(cursor);
        if pending {
            given_back += self.policy.pending_punch.bytes();
        }
        used - given_back.min(used)
    }

    /// How many bytes automatic compaction should move to bring the disk
    /// held below the end (less the free pages waiting to be punched,
    /// which give theirs back anyway) down to `COMPACT_TO`, if it is past
    /// `COMPACT_FROM` and the region uses at least `AUTO_MIN_USED`; `None`
    /// with automatic compaction off. O(1) when the used bytes alone are
    /// within the budget (the common case: checked at every write and
    /// free).
    pub(super) fn over_budget(&self) -> Option<u64> {
        let used = self.space.cursor() - DATA_START;
        if !self.settings.auto_compact || used < AUTO_MIN_USED {
            return None;
        }
        let from = self.budget(COMPACT_FROM);
        if used <= from {
            return None;
        }
        let held = self.held_below_end(true);
        (held > from).then(|| held - self.budget(COMPACT_TO))
    }

    /// Whether automatic compaction keeps the region's budget and the disk
    /// held below the end (free pages waiting to be punched included) is
    /// within the whole slack: then a batch of those pages need not be
    /// punched.
    pub(super) fn holds_within_budget(&self) -> bool {
        self.settings.auto_compact && self.held_below_end(false) <= self.budget(WHOLE_SLACK)
    }

    /// Before a region that punches holes maps an existing file: if the
    /// writer before it wrote zeros in other pieces than this one will
    /// punch in, or left long folios outside the middles of live extents
    /// (`LONG_FOLIOS`), or the file does not say, the page cache may still
    /// hold folios that this writer does not know of, which a hole would
    /// cut (its blocks would come back at the next store to the folio, and
    /// on a full disk that store would fault). Writes the file back and
    /// drops its page cache, so recovery reads it from disk once (the cost
    /// is in docs/PERFORMANCE.md, "long payloads with `pwrite`").
    /// Failure is logged, and the header keeps saying so for the next
    /// writer: true then.
    pub(super) fn drop_larger_folios(path: &Path, file: &File, settings: &Settings) -> bool {
        if settings.punch_granule().is_none() {
            return false;
        }
        let mut recorded = [0u8; 8];
        let recorded = match file.read_exact_at(&mut recorded, WRITE_PIECE_OFFSET) {
            Ok(()) => u64::from_le_bytes(recorded),
            Err(_) => 0,
        };
        // Only the same piece: a writer with another granule computes the
        // middles of long extents (`note_long_folios`) differently.
        if recorded & CANNOT_PUNCH != 0 || recorded == settings.write_piece() {
            return false;
        }
        tracing::debug!(path = %path.display(), recorded, "dropping the page cache: it may hold folios this writer does not know of");
        if let Err(error) = mapping::drop_page_cache(file) {
            tracing::warn!(path = %path.display(), %error, "dropping the page cache failed; punched holes may fill again");
            return true;
        }
        false
    }

    /// Stores the pieces this writer writes zeros in (see
    /// `drop_larger_folios`), with `LONG_FOLIOS` if `writing` a long payload
    /// or if `large_folios` holds anything. Called whenever either changes,
    /// so the bit is in the header before such folios exist and for as long
    /// as they may.
    ///
    /// A region that does not punch records its 1 MiB pieces, keeping
    /// `CANNOT_PUNCH`.
    pub(super) fn record_write_piece(&mut self, writing: bool) {
        let current = self.mapping.load_word(WRITE_PIECE_OFFSET);
        let piece = match self.settings.punch_granule() {
            None => MAX_WRITE_PIECE | (current.unwrap_or(0) & CANNOT_PUNCH),
            Some(granule)
                if writing
                    || self.policy.unknown_long_folios
                    || !self.policy.large_folios.is_empty() =>
            {
                granule | LONG_FOLIOS
            }
            Some(granule) => granule,
        };
        if current != Some(piece) {
            self.mapping.store_word(WRITE_PIECE_OFFSET, piece);
        }
    }

    /// Before `extent` becomes free (freed, retracted into the tail, or a
    /// failed long write): if its middle may hold folios longer than a
    /// granule, remembers it in `large_folios`. Every extent long enough for
    /// `write_direct` counts, however it was written: that is not known
    /// after a reopen, and one too many costs only a write-back before a
    /// cut inside it.
    pub(super) fn note_long_folios(&mut self, extent: Extent) {
        // Only `write_direct` makes folios longer than a granule, for
        // extents of `Settings::direct_min` or more: at least this, whatever
        // threshold the writer (of this granule) had; none are longer than
        // `MAX_WRITE_PIECE`.
        let Some(granule) = self.settings.punch_granule() else {
            return;
        };
        if extent.len < DIRECT_MIN.max(2 * granule) || granule >= MAX_WRITE_PIECE {
            return;
        }
        let start = (extent.offset + EXTENT_HEADER_LEN).next_multiple_of(granule);
        let end = extent.end() / granule * granule;
        if end > start && end - start > granule {
            self.policy.large_folios.insert(start, end);
            self.record_write_piece(false);
        }
    }

    /// Queues for punching the space of a free extent that just grew by
    /// `freed` to `merged`, if it is long enough: the pages that touch
    /// `freed` and the page of a right neighbour's old tag (whole granules,
    /// in an extent shorter than `PAGE_CUT_MIN_GRANULES` of them), and all
    /// of a neighbour that was too short to have been queued before. The
    /// page of the extent's tag is kept. Punches the queue when it holds a
    /// batch, or at once for a long extent.
    pub(super) fn punch_free_extent(&mut self, freed: Extent, merged: Extent) {
        let threshold = self.settings.punch_threshold;
        if threshold == 0 || merged.len < threshold || self.policy.compacting {
            return;
        }
        let Some(granule) = self.settings.punch_granule() else {
            return;
        };
        // The pages of `freed`, and the page after it, which held the tag
        // of a free neighbour that is now part of `merged`; whole granules
        // in a short extent, whose cuts then need no write-back. A
        // neighbour too short to have been queued (or, in a long extent,
        // to have been queued to the page) is queued whole.
        let long = PAGE_CUT_MIN_GRANULES * granule;
        let (unit, short) = if merged.len < long {
            (granule, threshold)
        } else {
            (mapping::page_size(), threshold.max(long))
        };
        let low = if freed.offset - merged.offset < short {
            merged.offset
        } else {
            freed.offset / unit * unit
        };
        let high = if merged.end() - freed.end() < short {
            merged.end()
        } else {
            freed.end() + EXTENT_HEADER_LEN
        };
        let start = low
            .max(merged.offset + EXTENT_HEADER_LEN)
            .next_multiple_of(unit);
        let end = high.next_multiple_of(unit).min(merged.end() / unit * unit);
        if start < end {
            // Pages punched already (a short neighbour queued whole may
            // hold some, left by an extent punched and partly written
            // again) are not queued: they would be counted twice.
            let policy = &mut self.policy;
            policy
                .pending_punch
                .insert_outside(start, end, &policy.holes);
            let batch = (self.settings.slack(self.accounting.live_bytes()))
                .clamp(threshold, PUNCH_BATCH * threshold);
            // The middle of a long extent (`note_long_folios`) is punched at
            // once: a write reusing part of it before a batch gathered would
            // leave the rest to be cut inside a long folio later. Measured on
            // churn of 96 KiB to 1 MiB payloads (docs/PERFORMANCE.md), this
            // costs less than writing back before such cuts.
            let long = self
                .policy
                .large_folios
                .next_from(freed.offset)
                .is_some_and(|at| at < freed.end());
            if long || (self.policy.pending_punch.bytes() >= batch && !self.holds_within_budget()) {
                match &mut self.policy.punch_after_frees {
                    Some(wanted) => *wanted = true,
                    None => self.punch_pending(),
                }
            }
        }
    }

    /// Punches every range in `pending_punch`.
    pub(super) fn punch_pending(&mut self) {
        let pending = std::mem::take(&mut self.policy.pending_punch);
        // Every cut's folio is written back first (`clean_folios_at`):
        // start them all, so that the waits below overlap.
        for (start, end) in pending.iter() {
            let (start, end) = self.whole_pages(start, end);
            for at in [start, end] {
                if let Some((from, to)) = self.folio_around_cut(at) {
                    // Only a hint: `punch` writes back and waits itself.
                    let _ = self.mapping.start_write_back(from, to - from);
                }
            }
        }
        for (start, end) in pending.iter() {
            self.punch(start, end);
        }
    }

    /// Punches the whole pages of `start..end` and records the hole; a
    /// range that reaches the end of the file is punched to it. An end
    /// strictly inside a folio the page cache may hold has that folio
    /// written back first (`clean_folios_at`); if that fails, nothing is
    /// punched.
    pub(super) fn punch(&mut self, start: u64, end: u64) {
        if self.settings.punch_granule().is_none() {
            return;
        }
        let (start, end) = self.whole_pages(start, end);
        if start >= end || !self.clean_folios_at([start, end]) {
            return;
        }
        match self.mapping.punch_hole(start, end - start) {
            Ok(true) => {
                if !self.policy.large_folios.take(start, end).is_empty() {
                    self.record_write_piece(false);
                }
                self.policy.holes.insert(start, end);
                self.policy.pending_punch.take(start, end);
                if start >= self.space.cursor() {
                    self.policy.warm_end = self.policy.warm_end.min(start);
                }
            }
            Ok(false) => {
                tracing::info!(path = %self.path.display(), "the file system cannot punch holes; free space stays allocated");
                self.settings.punch_threshold = 0;
                self.policy.large_folios = Default::default();
                self.mapping.set_write_piece(MAX_WRITE_PIECE);
                self.mapping
                    .store_word(WRITE_PIECE_OFFSET, MAX_WRITE_PIECE | CANNOT_PUNCH);
            }
            Err(error) => {
                // It may have freed some blocks before failing: the range
                // is free, so counting it as a hole costs at most a refill
                // (and `punched_bytes` may count blocks still allocated,
                // until the next open finds the real holes).
                self.policy.holes.insert(start, end);
                self.policy.pending_punch.take(start, end);
                tracing::warn!(path = %self.path.display(), %error, start, end, "punching a hole failed");
            }
        }
    }

    /// The whole pages of `start..end` that `punch` punches: to the end of
    /// the file if `end` reaches it.
    fn whole_pages(&self, start: u64, end: u64) -> (u64, u64) {
        let page = mapping::page_size();
        let end = if end >= self.mapping.len() {
            end
        } else {
            end / page * page
        };
        (start.next_multiple_of(page), end)
    }

    /// Before a hole or a truncation with these ends: writes back the folio
    /// that any of them may lie strictly inside, so that the cut splits it
    /// or drops it whole (the kernel does either with a clean folio; a
    /// dirty one it may keep whole, and a store to it would then need
    /// blocks for the punched part again). That folio is the granule
    /// around the end (`Settings::punch_granule`: zeros are written in
    /// pieces that never cross one), or a longer one of `large_folios`
    /// (`folio_around`). An end past the file or on a granule multiple
    /// outside `large_folios` cuts no folio. False if a write-back failed:
    /// the caller then leaves the file as it is (logged; it costs only
    /// disk).
    fn clean_folios_at(&mut self, ends: impl IntoIterator<Item = u64>) -> bool {
        for at in ends {
            let Some((from, to)) = self.folio_around_cut(at) else {
                continue;
            };
            if let Err(error) = self.mapping.write_back(from, to - from) {
                tracing::warn!(path = %self.path.display(), %error, at, "writing back before a cut failed; not cutting");
                self.write_back_error.set(Some(error));
                return false;
            }
        }
        true
    }

    /// The longest folio the page cache may hold with `at` strictly inside
    /// it (see `clean_folios_at`), if any.
    fn folio_around_cut(&self, at: u64) -> Option<(u64, u64)> {
        let granule = self.settings.punch_granule()?;
        let file_len = self.mapping.len();
        let long = self
            .policy
            .large_folios
            .around(at)
            .and_then(|range| folio_around(at, range));
        long.or_else(|| {
            let from = at / granule * granule;
            (from < at && at < file_len).then(|| (from, (from + granule).min(file_len)))
        })
    }

    /// At close, after the last batch is punched: the long folios left in
    /// free space past the end of the region (the tail kept as headroom)
    /// are punched with it, so that the next writer finds no long folios it
    /// does not know of and needs no page-cache drop (`LONG_FOLIOS`).
    /// What stays in `large_folios` after that (the rest of a freed middle
    /// that a write reused part of) keeps the bit set.
    pub(super) fn give_back_long_folio_tail(&mut self) {
        let cursor = self.space.cursor();
        if self.policy.large_folios.next_from(cursor).is_none() {
            return;
        }
        let page = mapping::page_size();
        self.punch((cursor + 8).next_multiple_of(page), self.mapping.len());
    }

    /// Where the blocks the region holds past its end should stop: where
    /// the live extents and their slack would end if they lay end to end
    /// (`DATA_START` + the budget), at least a page past the end of the
    /// region, at most
    /// `MAX_GROWTH_STEP` past it, and not before the initial capacity. It
    /// does not move with the region's end, so a region whose end moves up
    /// and down within its slack (automatic compaction) does not punch and
    /// refill its tail in turn. Space written ahead of use at the end stays
    /// within it (`fill_holes`, `warm_tail`), and `give_back_tail` gives
    /// back what lies past it.
    pub(super) fn blocks_end(&self) -> u64 {
        let page = mapping::page_size();
        let cursor = self.space.cursor() + 8;
        (DATA_START + self.budget(WHOLE_SLACK))
            .clamp(cursor + page, cursor + MAX_GROWTH_STEP)
            .next_multiple_of(page)
            .max(self.settings.initial)
    }

    /// After the end of the region moved down: gives back the blocks past
    /// `blocks_end` (where the live extents and their slack would end) and
    /// the initial capacity, by shrinking the file if it is much longer
    /// than that and no reader maps it, or else by punching once a slack's
    /// worth lies past it. The length also keeps the recent peak
    /// (`peak_end`, unless nothing is live), so a region that hovers at one
    /// size does not truncate and grow in turn.
    pub(super) fn give_back_tail(&mut self) {
        let page = mapping::page_size();
        let cursor = self.space.cursor();
        let file_len = self.mapping.len();
        let live = self.accounting.live_bytes();
        // An empty region (a spill that ended) goes back to its initial
        // size, whatever its recent peak.
        let peak = if self.slots.live() == 0 {
            DATA_START
        } else {
            self.policy.peak_end
        };
        // Blocks past the headroom are given back; the file's length keeps
        // the recent peak too.
        let allocated_end = self.blocks_end().min(file_len);
        let keep = allocated_end.max(peak.next_multiple_of(page).min(file_len));
        self.policy.peak_end = cursor + (self.policy.peak_end.max(cursor) - cursor) / 2;
        let excess = file_len - keep;
        if self.settings.shrink && excess >= MIN_SHRINK.max(file_len / 4) && self.try_truncate(keep)
        {
            return;
        }
        // Not for every extent the end moves down by, nor for every swing
        // of the live bytes (`blocks_end` follows them): a write at the
        // end fills what is punched here again (`fill_holes`). See
        // `TAIL_EXCESS`.
        let threshold = self.settings.punch_threshold;
        let least = threshold.max(self.settings.slack(live) / 16 * TAIL_EXCESS);
        let unpunched_end = self.policy.holes.tail_start(file_len).unwrap_or(file_len);
        if threshold != 0 && unpunched_end.saturating_sub(allocated_end) >= least {
            self.punch(allocated_end, unpunched_end);
        }
    }

    /// Truncates the file to `len` if no reader has it mapped (and the
    /// folio `len` may lie inside could be written back first:
    /// `clean_folios_at`); true if done.
    pub(super) fn try_truncate(&mut self, len: u64) -> bool {
        if !self.clean_folios_at([len]) {
            return false;
        }
        match ReadersLock::try_exclusive(self.mapping.file()) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "cannot check for readers; not shrinking");
                return false;
            }
        }
        let before = self.mapping.len();
        let result = self.mapping.truncate(len);
        if let Err(error) = ReadersLock::release(self.mapping.file()) {
            tracing::warn!(path = %self.path.display(), %error, "releasing the readers' lock failed");
        }
        match result {
            Ok(()) => {
                if let Some(budget) = &self.policy.disk_budget {
                    budget.release(before - len);
                }
                self.policy.holes.truncate(len);
                self.policy.pending_punch.truncate(len);
                self.policy.large_folios.truncate(len);
                self.record_write_piece(false);
                self.policy.warm_end = self.policy.warm_end.min(len);
                true
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, len, "shrinking the file failed");
                false
            }
        }
    }
}

impl OverflowRegion {
    /// Makes the allocated extent (and the 8 bytes after it, where an end or
    /// remainder tag may go) safe to store into: grows the file over it,
    /// allocates blocks for any punched page in it, takes its pages out of
    /// the punching batch, and for a write at the end writes zeros ahead
    /// (`warm_tail`; not for a payload `write_direct` will write: `direct`).
    /// Where punched pages refilled for it lie under `payload`, they get
    /// its bytes rather than zeros, and then the whole payload is written
    /// (`fill_holes`): true when it is, so `commit` need not store it.
    /// On error the allocation is undone and the region is unchanged.
    #[inline]
    pub(super) fn make_writable(
        &mut self,
        allocation: &Allocation,
        direct: bool,
        payload: Option<NewPayload<'_>>,
    ) -> Result<bool> {
        // Most writes land where the file is long enough, zeros were written
        // ahead, and nothing is punched or waiting to be: nothing to do.
        let extent = allocation.extent;
        if extent.end() + 8 <= self.policy.warm_end.min(self.mapping.len())
            && self.policy.holes.is_empty()
            && self.policy.pending_punch.is_empty()
        {
            if allocation.from_tail {
                self.policy.peak_end = self.policy.peak_end.max(extent.end());
            }
            return Ok(false);
        }
        self.prepare_range(allocation, direct, payload)
    }

    /// The slow part of `make_writable`.
    fn prepare_range(
        &mut self,
        allocation: &Allocation,
        direct: bool,
        payload: Option<NewPayload<'_>>,
    ) -> Result<bool> {
        let extent = allocation.extent;
        let mut result = Ok(false);
        if extent.end() > self.mapping.len() {
            result = self.grow_to_fit(extent.end()).map(|()| false);
        }
        if result.is_ok() && !self.policy.holes.is_empty() {
            // Space at the end is used front to back: fill a stretch ahead
            // at once rather than one system call per page.
            // Filled holes are blocks held ahead of use, as growth is:
            // they come out of the same allowance.
            // Both within the blocks the tail may hold, or a retraction
            // would punch them again (`give_back_tail`).
            let ahead = if allocation.from_tail {
                TAIL_FILL_AHEAD
                    .min(self.settings.growth_step(self.accounting.live_bytes()))
                    .min(self.blocks_end().saturating_sub(extent.end() + 8))
            } else {
                0
            };
            // Zeros written ahead at the end (`warm_tail`) would land on a
            // payload placed now: at the end, `commit` stores it.
            let payload = payload.filter(|_| !allocation.from_tail);
            result = self.fill_holes(extent.offset, extent.end() + 8 + ahead, payload);
        }
        if result.is_ok() && !self.policy.pending_punch.is_empty() {
            let (start, end) = pages_touching(extent.offset, extent.end() + 8);
            self.policy.pending_punch.take(start, end);
        }
        if result.is_ok() && allocation.from_tail {
            self.policy.peak_end = self.policy.peak_end.max(extent.end());
            if !direct {
                self.warm_tail(extent);
            }
        }
        if result.is_err() {
            if allocation.from_tail {
                self.space.undo_tail(extent);
            } else {
                // Merges back with its remainder: the free extent it came from.
                self.space.release(extent, allocation.remainder);
            }
        }
        result
    }

    /// Allocates disk blocks for every punched page that `start..end`
    /// touches, by writing the zeros they read as (which also puts them in
    /// the page cache).
    ///
    /// Whole punching granules are refilled, not just the pages touched: a
    /// store into a page-cache folio needs blocks for all of it, and a
    /// refill that covered only part of a folio left there by an earlier,
    /// failed refill would let that store fault on a full disk. A refill
    /// that fails punches its hole again, so the page cache holds nothing
    /// half written over it.
    ///
    /// With a `payload` that a refilled hole covers part of, the holes get
    /// its bytes where it lies (`Mapping::write_over`) and, once every
    /// refill succeeded, the rest of it is stored through the mapping: true
    /// then, the payload is in place. Its bytes written before a failure
    /// lie in free space, as a failed `write_direct`'s do.
    pub(super) fn fill_holes(
        &mut self,
        start: u64,
        end: u64,
        payload: Option<NewPayload<'_>>,
    ) -> Result<bool> {
        let unit = self
            .settings
            .punch_granule()
            .unwrap_or_else(mapping::page_size);
        let start = start / unit * unit;
        let end = end.next_multiple_of(unit).min(self.mapping.len());
        let taken = self.policy.holes.take(start, end);
        let payload = payload.filter(|payload| {
            let (from, to) = (payload.offset, payload.end());
            taken
                .iter()
                .any(|&(hole_start, hole_end)| hole_start < to && from < hole_end)
        });
        for (index, &(hole_start, hole_end)) in taken.iter().enumerate() {
            let refilled = match payload {
                Some(payload) => self.mapping.write_over(
                    hole_start,
                    hole_end,
                    payload.offset,
                    payload.len,
                    payload.parts,
                ),
                None => self.mapping.write_zeros(hole_start, hole_end),
            };
            if let Err(source) = refilled {
                if let Err(error) = self.mapping.punch_hole(hole_start, hole_end - hole_start) {
                    tracing::warn!(path = %self.path.display(), %error, hole_start, hole_end, "punching a failed refill again failed");
                }
                for &(rest_start, rest_end) in &taken[index..] {
                    self.policy.holes.insert(rest_start, rest_end);
                }
                return Err(self.io_error("pwrite", source));
            }
        }
        let Some(payload) = payload else {
            return Ok(false);
        };
        // The payload's bytes between the holes, in pages with blocks.
        let payload_end = payload.end();
        let mut from = payload.offset;
        for (hole_start, hole_end) in taken.into_iter().chain([(u64::MAX, u64::MAX)]) {
            let to = hole_start.min(payload_end);
            if from < to {
                let (within_from, within_to) = (from - payload.offset, to - payload.offset);
                for (within, bytes) in part_ranges(payload.parts, within_from, within_to) {
                    self.mapping.store_bytes(payload.offset + within, bytes);
                }
            }
            from = from.max(hole_end);
        }
        Ok(true)
    }

    /// Before a write at the end of the region into `extent`: if the pages
    /// it touches were not written ahead yet, writes zeros from where the
    /// last stretch ended, or the old end of the region (`extent.offset`;
    /// nothing at or past it is live) if that is later, to the first
    /// multiple of `WARM_AHEAD` at least `WARM_AHEAD` past the extent, or to
    /// the first punched hole. Failure costs only speed: the stores then
    /// take ordinary page faults into blocks `grow` allocated.
    pub(super) fn warm_tail(&mut self, extent: Extent) {
        let needed = extent.end() + 8;
        if needed <= self.policy.warm_end {
            return;
        }
        let from = self.policy.warm_end.max(extent.offset);
        // Not into punched holes: the tail past the headroom `give_back_tail`
        // keeps is punched on purpose, and `fill_holes` refills what the
        // writes reach.
        // Nor past the blocks the tail may hold (`blocks_end`), which a
        // retraction would punch.
        let to = (needed + WARM_AHEAD)
            .next_multiple_of(WARM_AHEAD)
            .min(self.mapping.len())
            .min(self.policy.holes.next_from(from).unwrap_or(u64::MAX))
            .min(
                self.blocks_end()
                    .max(needed.next_multiple_of(mapping::page_size())),
            );
        if from >= to {
            return;
        }
        if let Err(error) = self.mapping.write_zeros(from, to) {
            tracing::debug!(path = %self.path.display(), %error, from, to, "writing ahead failed");
        }
        self.policy.warm_end = to;
    }

    /// Grows the file so `end` fits: by `Settings::growth_step` past the
    /// file's length, at least to `end`, never past the maximum; only to
    /// `end` when the file system cannot take the step. Growth ahead comes
    /// out of the slack, so a growing file holds at most its live bytes and
    /// their slack (plus one minimum step; with no slack, nothing ahead).
    pub(super) fn grow_to_fit(&mut self, end: u64) -> Result<()> {
        let current = self.mapping.len();
        let page = mapping::page_size();
        let step = self.settings.growth_step(self.accounting.live_bytes());
        let target = end
            .max(current + step)
            .next_multiple_of(page)
            .min(self.space.limit());
        debug_assert!(
            target >= end,
            "the space layer never allocates past the limit"
        );
        let needed = end.next_multiple_of(page).min(target);
        let mut target = self.charge_budget(current, needed, target)?;
        let mut grown = self.mapping.grow(target);
        if grown.is_err() && target > needed {
            // Near a full disk the step may not fit where the write does.
            if let Some(budget) = &self.policy.disk_budget {
                budget.release(target - needed);
            }
            target = needed;
            grown = self.mapping.grow(target);
        }
        if grown.is_err()
            && let Some(budget) = &self.policy.disk_budget
        {
            budget.release(target - current);
        }
        grown.map_err(|source| self.io_error("fallocate", source))
    }

    /// Before the file grows from `current` to `target` (or at least to
    /// `needed`, when the whole step does not fit): takes the growth from
    /// the disk budget, if the region has one, and returns the length the
    /// file may grow to. Nothing is touched when it fails.
    pub(super) fn charge_budget(&self, current: u64, needed: u64, target: u64) -> Result<u64> {
        let Some(budget) = &self.policy.disk_budget else {
            return Ok(target);
        };
        if budget.charge(target - current).is_ok() {
            return Ok(target);
        }
        let needed = needed.min(target);
        match budget.charge(needed - current) {
            Ok(()) => Ok(needed),
            Err(used) => Err(Error::BudgetExceeded {
                path: self.path.clone(),
                budget: budget.limit(),
                used,
                requested: needed - current,
            }),
        }
    }
}

impl Settings {
    /// The slack for `live` bytes: the space the file may hold beyond them.
    pub(super) fn slack(&self, live: u64) -> u64 {
        // `live` is below 2^44 (the largest reservation): no overflow.
        live / 100 * self.slack_percent + live % 100 * self.slack_percent / 100
    }

    /// How far a growing file grows past what a write needs, for `live`
    /// bytes: their slack, at least `MIN_GROWTH_STEP` (so a small region
    /// does not call `fallocate` for every write) and at most
    /// `MAX_GROWTH_STEP`. With no slack, nothing: the file grows by what
    /// each write needs.
    pub(super) fn growth_step(&self, live: u64) -> u64 {
        if self.slack_percent == 0 {
            return 0;
        }
        self.slack(live).clamp(MIN_GROWTH_STEP, MAX_GROWTH_STEP)
    }
}

/// The longest folio that may have `at` strictly inside it, if one may:
/// folios are aligned to their length, at most `MAX_WRITE_PIECE`, and lie
/// inside `range` (a range of `large_folios`: the rest of a middle written
/// in calls that stop at multiples of `MAX_WRITE_PIECE`; where holes took
/// part of it, the folios there were split). The aligned blocks holding
/// `at` are nested, so the longest one covers every folio that could.
fn folio_around(at: u64, (start, end): (u64, u64)) -> Option<(u64, u64)> {
    let page = mapping::page_size();
    let mut len = MAX_WRITE_PIECE;
    while len > page {
        let from = at / len * len;
        if from < at && from >= start && from + len <= end {
            return Some((from, from + len));
        }
        len /= 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineId;
    use crate::sys::fault::{self, Call};

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect()
    }

    /// Calls of kind `call` that `f` makes on this thread.
    fn calls_made(call: Call, f: impl FnOnce()) -> u32 {
        const FAR: u32 = 1 << 30;
        fault::fail_after(call, FAR, libc::EIO);
        f();
        let left = fault::skips_left(call);
        fault::disarm();
        FAR - left.expect("the far failure never fires")
    }

    /// A region holding a short slot and then a run of eight of 256 KiB,
    /// and the run's slots.
    fn region_with_run(path: &Path) -> (OverflowRegion, Vec<usize>) {
        let mut region = OverflowRegion::open_with_config(path, 1 << 20, 64 << 20).unwrap();
        region.write(&bytes(1, 100), EngineId::Wal).unwrap();
        let run = (0..8)
            .map(|i| {
                region
                    .write(&bytes(i + 2, 256 << 10), EngineId::Query)
                    .unwrap()
            })
            .collect();
        (region, run)
    }

    /// `free_many` gives the space of a run of long slots back with one
    /// punch where `free`, slot by slot, punches the middle of each at once;
    /// the disk given back is the same.
    #[test]
    fn freeing_a_run_together_punches_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut punches = Vec::new();
        let mut holes = Vec::new();
        for together in [false, true] {
            let (mut region, run) = region_with_run(&dir.path().join(format!("r{together}")));
            region.write(&bytes(20, 100), EngineId::Wal).unwrap();
            punches.push(calls_made(Call::Punch, || {
                if together {
                    region.free_many(&run).unwrap();
                } else {
                    for &slot in &run {
                        region.free(slot).unwrap();
                    }
                }
            }));
            holes.push(region.policy.holes.bytes());
            assert_eq!(region.live_slot_count(), 2);
            region.check_consistency().unwrap();
        }
        assert_eq!(punches, [8, 1], "punches one by one, then together");
        assert!(
            holes[1] >= holes[0],
            "holes one by one {}, together {}",
            holes[0],
            holes[1]
        );
        assert!(holes[1] >= 7 * (256 << 10), "{}", holes[1]);
    }

    /// A run that ends the region, freed together: the middles of its long
    /// extents are punched as `free` one by one punches them, and none is
    /// left as a long folio past the end (found in review: they were, and
    /// the header kept its `LONG_FOLIOS` bit set).
    #[test]
    fn freeing_a_run_at_the_end_together_leaves_no_long_folios() {
        let dir = tempfile::tempdir().unwrap();
        let mut holes = Vec::new();
        for together in [false, true] {
            let (mut region, run) = region_with_run(&dir.path().join(format!("r{together}")));
            if together {
                region.free_many(&run).unwrap();
            } else {
                for &slot in &run {
                    region.free(slot).unwrap();
                }
            }
            assert!(
                region.policy.large_folios.is_empty(),
                "together: {together}"
            );
            let word = region.mapping.load_word(WRITE_PIECE_OFFSET).unwrap();
            assert_eq!(word & LONG_FOLIOS, 0, "together: {together}");
            holes.push(region.policy.holes.bytes());
            region.check_consistency().unwrap();
        }
        assert!(
            holes[1] >= holes[0],
            "holes one by one {}, together {}",
            holes[0],
            holes[1]
        );
    }

    /// Writes into freed, punched space get their payload with the refill
    /// (`Mapping::write_over`): payloads that start inside a refilled
    /// granule, span several parts, and lie partly over pages refilled
    /// before read back whole, before and after a reopen, and their
    /// checksums (taken at `sync`) hold.
    #[test]
    fn payloads_written_with_the_refill_of_their_holes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20).unwrap();
        let first = region.write(&bytes(1, 100), EngineId::Wal).unwrap();
        let big = region.write(&bytes(2, 900 << 10), EngineId::Query).unwrap();
        let last = region.write(&bytes(3, 100), EngineId::Wal).unwrap();
        region.free(big).unwrap();
        let punched = region.policy.holes.bytes();
        assert!(
            punched >= 800 << 10,
            "the freed extent was punched: {punched}"
        );

        // Inside the freed extent, not at the end: a short payload (its
        // granules refilled whole), then one in three parts that starts in
        // the granule the first one refilled, then a long one.
        let (a, b, c) = (bytes(4, 5000), bytes(5, 70_001), bytes(6, 123));
        let parts: [&[u8]; 3] = [&a, &b, &c];
        let joined = [a.as_slice(), &b, &c].concat();
        let mut written = vec![(
            region.write(&bytes(7, 40_000), EngineId::Query).unwrap(),
            bytes(7, 40_000),
        )];
        let held = region.policy.holes.bytes();
        assert!(held < punched, "the first write refilled holes");
        written.push((
            region.write_vectored(&parts, EngineId::Query, 0).unwrap(),
            joined,
        ));
        assert!(
            region.policy.holes.bytes() < held,
            "the second write refilled holes"
        );
        written.push((
            region.write(&bytes(8, 300 << 10), EngineId::Query).unwrap(),
            bytes(8, 300 << 10),
        ));
        for &(slot, ref payload) in &written {
            assert_eq!(region.read(slot).unwrap(), &payload[..]);
        }
        region.check_consistency().unwrap();
        region.sync().unwrap();
        let report = region.verify(|_, _| {});
        assert_eq!(report.damaged, Vec::new());
        assert_eq!(report.slots_checked, 5);
        drop(region);

        let region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20).unwrap();
        assert!(region.recovery().dropped.is_empty());
        for &(slot, ref payload) in &written {
            assert_eq!(region.read(slot).unwrap(), &payload[..]);
        }
        assert_eq!(region.read(first).unwrap(), bytes(1, 100));
        assert_eq!(region.read(last).unwrap(), bytes(3, 100));
    }

    #[test]
    fn the_folio_around_a_cut_is_the_longest_aligned_block_in_the_range() {
        const K: u64 = 1 << 10;
        // Deep inside a long range: the 1 MiB block.
        assert_eq!(
            folio_around(1536 * K, (0, 4096 * K)),
            Some((1024 * K, 2048 * K))
        );
        // Blocks must lie inside the range.
        assert_eq!(
            folio_around(1056 * K, (1024 * K, 1088 * K)),
            Some((1024 * K, 1088 * K))
        );
        // 1056 KiB is a multiple of 32 KiB, and every longer block around it
        // starts at 1024 KiB, before the range: no folio can be cut there.
        assert_eq!(folio_around(1056 * K, (1040 * K, 4096 * K)), None);
        // A cut on a multiple of 1 MiB is inside no folio.
        assert_eq!(folio_around(2048 * K, (0, 4096 * K)), None);
        // A cut between pages.
        assert_eq!(folio_around(12 * K, (8 * K, 16 * K)), Some((8 * K, 16 * K)));
    }
}
