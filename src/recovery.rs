//! Rebuilding a region's slots and free space from its file alone.
//!
//! [`recover`] is a pure function over the file's bytes: it walks the chain of
//! extents from the end of the file header, verifies every live extent's
//! header checksum, and its payload checksum when asked to
//! ([`Checks::verify_payloads`]: a writer's open asks only when the file
//! was last written on another boot, [`RecoveryReport::trusted_same_boot`];
//! [`RegionFile`](crate::RegionFile) always asks), and returns what it
//! found together with the few tag stores ("repairs") that make the file
//! agree with the rebuilt free space. The caller (the region) applies the
//! repairs; a read-only tool just reads the report. The walk and its crash
//! analysis are specified in `docs/FORMAT.md`.

use std::io;
use std::time::Duration;

use crate::layout::{
    self, Counters, DATA_START, EXTENT_ALIGN, EXTENT_HEADER_LEN, LiveHeader, MAX_SLOTS, Tag,
    USER_TAG_LEN,
};
use crate::slots::{LiveSlot, SlotTable};
use crate::space::{Extent, Space};
use crate::sys::checksum;

/// What [`crate::OverflowRegion::recovery`] reports about the last open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// True when the file was new or empty and was initialised, not recovered.
    pub initialised: bool,
    /// Live slots found intact and restored.
    pub slots_recovered: usize,
    /// Extents that held damaged or doubtful data and were dropped (made free).
    pub dropped: Vec<DroppedExtent>,
    /// Bytes of the file the walk covered.
    pub bytes_scanned: u64,
    /// Tag stores written to make the file agree with the rebuilt free space
    /// (coalescing free neighbours a crash left apart, marking the end).
    pub repairs: usize,
    /// Time the walk took.
    pub duration: Duration,
    /// True when the file was last written on this boot of this machine,
    /// so the page cache held every store its writer made: payloads were
    /// trusted as they are, and only headers were read
    /// ([`OverflowRegion::verify`](crate::OverflowRegion::verify) checks
    /// them all).
    pub trusted_same_boot: bool,
    /// Payloads whose checksum the walk checked (0 when it trusted them).
    pub payloads_verified: usize,
    /// Live slots written after the last `sync`, whose payload checksum was
    /// not computed yet, kept because the file was last written on this
    /// boot (the next `sync` computes their checksums). After a reboot such
    /// slots are dropped instead ([`DropReason::NotChecksummed`]).
    pub payloads_unsummed: usize,
    /// Pages of the file the open asked the kernel to read ahead of the
    /// walk, as the header map next to the file (`<file>.headers`, written
    /// at `sync` and at close) named them: one request for every header
    /// instead of one random read per extent on a cold page cache. 0
    /// without a usable map; nothing in the map is trusted.
    pub header_pages_prefetched: u64,
}

/// An extent recovery dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedExtent {
    /// Byte offset of the extent in the file.
    pub offset: u64,
    /// Length of the extent (for a damaged header: up to the next intact one).
    pub len: u64,
    /// The slot index the extent claimed, when its header could be read.
    pub slot: Option<usize>,
    /// What was wrong.
    pub reason: DropReason,
}

/// Why recovery dropped an extent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The extent header is damaged; the data up to the next intact header
    /// was skipped.
    DamagedHeader {
        /// What the check found.
        detail: String,
    },
    /// The header is intact but the payload does not match its checksum
    /// (a torn write after power loss, or damage).
    PayloadChecksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes found.
        computed: u32,
    },
    /// The file was last written on another boot, and the extent was
    /// written after the last `sync` without a payload checksum (the next
    /// `sync`, or closing the region, computes it): its bytes cannot be
    /// checked and were never promised to survive a machine crash.
    NotChecksummed,
    /// Another extent holds the same slot index with a newer generation.
    Duplicate {
        /// Offset of the extent that was kept.
        kept_offset: u64,
    },
    /// The slot index is past the largest the format hands out
    /// (`u32::MAX - 1`).
    SlotOutOfRange {
        /// The largest plausible index.
        limit: usize,
    },
}

/// Everything [`recover`] rebuilt.
pub(crate) struct Recovered {
    /// Intact live slots, one per slot index, and the indices handed out
    /// (occupied or freed: `slot_count()`).
    pub slots: SlotTable,
    /// The live slots whose payloads have no checksum yet, as (index,
    /// generation), by index.
    pub unsummed: Vec<(u32, u32)>,
    /// Free space and cursor, rebuilt.
    pub space: Space,
    /// Generation for the next write.
    pub next_generation: u64,
    /// Tag stores that make the file agree with `space`, in order.
    pub repairs: Vec<(u64, Tag)>,
    /// Live extents the caller must free with its usual path (duplicates that
    /// lost to a newer generation; found after they were counted as live).
    pub to_free: Vec<Extent>,
    /// What happened.
    pub report: RecoveryReport,
}

/// What recovery checks of each live extent's payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checks {
    /// Read every payload that has a checksum, and drop it if it does not
    /// match.
    pub verify_payloads: bool,
    /// Keep the extents that have no payload checksum yet (written after
    /// the last sync), which is sound only when the file was last written
    /// on this boot; otherwise they are dropped.
    pub keep_unsummed: bool,
}

/// A run of adjacent extents that end up free; written back as one.
struct FreeRun {
    start: u64,
    len: u64,
    /// True while the run is one extent that already carries the right tag.
    already_tagged: bool,
}

/// Rebuilds a region from `file` (the whole file, header included, already
/// checked by [`crate::layout::decode_file_header`]) into `space` (empty).
///
/// Never panics and never reads outside `file`, whatever its contents; its
/// memory follows the extents it finds. The only errors are the source's
/// (a tool's read of the file failing).
///
/// `checks` says what is done with payloads: a file from another boot has
/// every checksummed payload checked and the rest dropped; a file last
/// written on this boot (the page cache holds every store) has only its
/// headers read, and each payload is taken as its header describes it.
pub(crate) fn recover<S: Source>(
    file: &mut S,
    counters: Counters,
    mut space: Space,
    checks: Checks,
) -> io::Result<Recovered> {
    let started = std::time::Instant::now();
    let eof = file.len();
    let fits = |at: u64, len: u64| {
        len >= EXTENT_HEADER_LEN
            && len.is_multiple_of(EXTENT_ALIGN)
            && at.checked_add(len).is_some_and(|end| end <= eof)
    };
    // A free extent needs only its tag (a damaged stretch of 16 bytes between
    // two live extents becomes one).
    let fits_free = |at: u64, len: u64| {
        len >= EXTENT_ALIGN
            && len.is_multiple_of(EXTENT_ALIGN)
            && at.checked_add(len).is_some_and(|end| end <= eof)
    };
    // Indices are `u32`s below `MAX_SLOTS` (`u32::MAX` itself is never
    // handed out). Any index below it is kept, however far above the others:
    // the tables that hold it cost memory per slot found, not per index.
    let slot_limit = MAX_SLOTS as usize;
    // Before the stored end of the chain, an end mark (or zeros) is not the
    // end: a write whose pages reached the disk only in part (power loss) can
    // leave one there, with intact extents after it.
    let chain_end = counters.chain_end.min(eof);

    let mut report = RecoveryReport::default();
    let mut slots = SlotTable::recovering();
    let mut unsummed = Vec::new();
    let mut max_slot_seen = 0u64; // one more than the highest index found
    let mut walked = 0usize; // extents whose tag was read (live or free)
    let mut to_free = Vec::new();
    let mut repairs = Vec::new();
    let mut run: Option<FreeRun> = None;
    let mut clean_end = false;
    let mut moves_finished = 0;
    // Old places with the moved mark: offset, length, the slot their header
    // names and the generation of the copy the mark names.
    let mut marked: Vec<(u64, u64, u32, u32)> = Vec::new();

    let free = |space: &mut Space, run: &mut Option<FreeRun>, extent: Extent, tagged: bool| {
        space.recover_free(extent);
        match run {
            Some(run) => {
                run.len += extent.len;
                run.already_tagged = false;
            }
            None => {
                *run = Some(FreeRun {
                    start: extent.offset,
                    len: extent.len,
                    already_tagged: tagged,
                })
            }
        }
    };

    let mut pos = DATA_START;
    while pos + EXTENT_HEADER_LEN <= eof {
        let tag = Tag::decode(word_at(file, pos)?);
        match tag {
            Some(Tag::End) if pos >= chain_end => {
                // An explicit end mark, or the zeros of space never written.
                clean_end = true;
                break;
            }
            Some(Tag::End) => {
                // Not the end yet: is anything intact between here and the
                // stored end of the chain?
                let Some(next) = resync(file, pos, chain_end, &fits)? else {
                    // Nothing: the extents past here were never committed, or
                    // were given back (a power loss that kept a retraction's
                    // end mark but not its counter, or a writer from before
                    // December 2026 killed between the two: docs/FORMAT.md,
                    // "free"). The chain ends here.
                    clean_end = true;
                    break;
                };
                report.dropped.push(DroppedExtent {
                    offset: pos,
                    len: next - pos,
                    slot: None,
                    reason: DropReason::DamagedHeader {
                        detail: format!(
                            "the chain breaks at offset {pos}, before its stored end {chain_end}; \
                             intact extents resume at {next}"
                        ),
                    },
                });
                free(
                    &mut space,
                    &mut run,
                    Extent {
                        offset: pos,
                        len: next - pos,
                    },
                    false,
                );
                pos = next;
                continue;
            }
            Some(Tag::Free { len }) if fits_free(pos, len) => {
                walked += 1;
                free(&mut space, &mut run, Extent { offset: pos, len }, true);
                pos += len;
                continue;
            }
            Some(Tag::Live { len }) if fits(pos, len) => {
                if let Ok(header) = LiveHeader::decode(header_at(file, pos)?) {
                    walked += 1;
                    let extent = Extent { offset: pos, len };
                    let slot = header.slot as usize;
                    let damage = match header.payload_crc {
                        // Written after the last sync: on this boot the
                        // page cache holds it whole; after a reboot it
                        // was never promised, and nothing can check it.
                        None if !checks.keep_unsummed => Some(DropReason::NotChecksummed),
                        None => {
                            report.payloads_unsummed += 1;
                            None
                        }
                        Some(stored) if checks.verify_payloads => {
                            report.payloads_verified += 1;
                            let computed =
                                file.crc(pos + header.header_len(), header.payload_len)?;
                            (computed != stored)
                                .then_some(DropReason::PayloadChecksum { stored, computed })
                        }
                        Some(_) => None,
                    };
                    let drop = if damage.is_some() {
                        damage
                    } else if slot >= slot_limit {
                        Some(DropReason::SlotOutOfRange { limit: slot_limit })
                    } else {
                        None
                    };
                    if let Some(reason) = drop {
                        report.dropped.push(DroppedExtent {
                            offset: pos,
                            len,
                            slot: Some(slot),
                            reason,
                        });
                        // No intact live header stays inside free space,
                        // where a later resync could find it: one that
                        // starts the run gets the run's tag, any other its
                        // own (stored before the run's).
                        if run.is_some() {
                            repairs.push((pos, Tag::Free { len }));
                        }
                        free(&mut space, &mut run, extent, false);
                    } else {
                        close_run(&mut run, &mut repairs);
                        space.recover_allocated(extent);
                        let found = LiveSlot::new(extent, &header);
                        max_slot_seen = max_slot_seen.max(u64::from(header.slot) + 1);
                        if header.payload_crc.is_none() {
                            unsummed.push((header.slot, header.generation));
                        }
                        if let Some(kept) = slots.claim(header.slot, found, dense_limit(walked)) {
                            // The header of the slot kept so far, read
                            // again for its checksum (should the file have
                            // changed since, none: the payloads are compared).
                            let kept_crc = match LiveHeader::decode(header_at(file, kept.offset)?) {
                                Ok(again)
                                    if again.slot == header.slot
                                        && again.generation == kept.generation =>
                                {
                                    again.payload_crc
                                }
                                _ => None,
                            };
                            // Generations wrap; the nearer one ahead is newer.
                            let newer =
                                header.generation.wrapping_sub(kept.generation) < u32::MAX / 2;
                            let ((winner, winner_crc), (loser, loser_crc)) = if newer {
                                slots.relocate(slot, found);
                                ((found, header.payload_crc), (kept, kept_crc))
                            } else {
                                ((kept, kept_crc), (found, header.payload_crc))
                            };
                            to_free.push(loser.extent());
                            if loser_crc.is_none() {
                                // Counted above, but not kept.
                                report.payloads_unsummed =
                                    report.payloads_unsummed.saturating_sub(1);
                            }
                            let same_bytes = loser.payload_len == winner.payload_len
                                && match (loser_crc, winner_crc) {
                                    (Some(a), Some(b)) => a == b,
                                    // A copy made before a sync, of a slot
                                    // written after the last one: the sync
                                    // summed only the copy.
                                    _ => {
                                        let crc = |slot: &LiveSlot, file: &mut S| {
                                            file.crc(slot.payload_offset(), slot.payload_len)
                                        };
                                        crc(&loser, file)? == crc(&winner, file)?
                                    }
                                };
                            if same_bytes {
                                // A compaction move cut short between the
                                // copy's commit and the free of the
                                // original: finishing it loses nothing.
                                moves_finished += 1;
                            } else {
                                report.dropped.push(DroppedExtent {
                                    offset: loser.offset,
                                    len: loser.extent_len,
                                    slot: Some(slot),
                                    reason: DropReason::Duplicate {
                                        kept_offset: winner.offset,
                                    },
                                });
                            }
                        }
                    }
                    pos += len;
                    continue;
                }
            }
            _ => {}
        }
        if let Some(Tag::Live { len }) = tag
            && fits(pos, len)
            && layout::marked_moved(header_at(file, pos)?)
        {
            // The old place of a slot that compaction moved, marked just
            // before its free (its header no longer checks out): the copy
            // is committed, and durable whenever this place was, so
            // finishing the free loses nothing. Whether the walk finds
            // that copy is known once it is over (`marked`).
            let header = header_at(file, pos)?;
            let copy = u32::from_le_bytes(header[28..32].try_into().expect("32 bytes"));
            marked.push((pos, len, layout::slot_of_header(header), copy));
            walked += 1;
            free(&mut space, &mut run, Extent { offset: pos, len }, false);
            pos += len;
            continue;
        }
        // The header at `pos` cannot be trusted: skip to the next intact live
        // header (or an explicit end mark), and drop what lies between.
        let detail = damage_detail(file, pos, tag)?;
        let Some(next) = resync(file, pos, eof, &fits)? else {
            // Nothing intact after it: the region ends at `pos`.
            report.dropped.push(DroppedExtent {
                offset: pos,
                len: eof - pos,
                slot: None,
                reason: DropReason::DamagedHeader { detail },
            });
            break;
        };
        report.dropped.push(DroppedExtent {
            offset: pos,
            len: next - pos,
            slot: None,
            reason: DropReason::DamagedHeader { detail },
        });
        free(
            &mut space,
            &mut run,
            Extent {
                offset: pos,
                len: next - pos,
            },
            false,
        );
        pos = next;
    }

    // The slot table is finished first: its entries shrink to their number
    // before the free-space index is built.
    // The stored counter is trusted only as far as memory proportional to
    // what the walk found: a damaged one must not size the slot table.
    let slot_table_limit = dense_limit(walked);
    let slot_high_water =
        if counters.slot_high_water <= (slot_table_limit as u64).max(max_slot_seen) {
            counters.slot_high_water.max(max_slot_seen)
        } else {
            max_slot_seen
        };
    slots.finish_recovery(slot_high_water as usize, slot_table_limit);
    // A moved mark is a finished move only if the walk found the copy it
    // names; otherwise it is damage that happened to write those bytes
    // over a header, and the slot it held is lost: reported.
    for (offset, len, slot, copy) in marked {
        if slots
            .get(slot as usize)
            .is_ok_and(|kept| kept.generation == copy)
        {
            moves_finished += 1;
        } else {
            report.dropped.push(DroppedExtent {
                offset,
                len,
                slot: Some(slot as usize),
                reason: DropReason::DamagedHeader {
                    detail: format!(
                        "a moved mark names generation {copy} of slot {slot}, which is not \
                         in the file: no copy to keep"
                    ),
                },
            });
        }
    }
    // Entries of slots that lost to a newer copy go.
    unsummed.retain(|&(slot, generation)| {
        slots
            .get(slot as usize)
            .is_ok_and(|kept| kept.generation == generation)
    });
    unsummed.sort_unstable();
    unsummed.dedup();

    let cursor = space.finish_recovery();
    match run.take() {
        // Free space reaching the end of the chain is given back: the chain
        // now ends where that free space starts.
        Some(run) => {
            debug_assert_eq!(cursor, run.start);
            repairs.push((run.start, Tag::End));
        }
        None => {
            debug_assert_eq!(cursor, pos);
            if !clean_end && pos + 8 <= eof && word_at(file, pos)? != Tag::End.encode() {
                repairs.push((pos, Tag::End));
            }
        }
    }

    let newest = slots
        .iter_live()
        .map(|(_, slot)| u64::from(slot.generation) + 1)
        .max()
        .unwrap_or(0);
    // The stored counter is a hint: one absurdly far ahead (damage) is not
    // followed, so generations never run out.
    let next_generation = if counters.next_generation.saturating_sub(newest) < 1 << 40 {
        counters.next_generation.max(newest)
    } else {
        newest
    };
    report.slots_recovered = slots.live();
    report.bytes_scanned = pos.max(cursor).min(eof);
    report.repairs = repairs.len() + moves_finished;
    report.duration = started.elapsed();
    Ok(Recovered {
        slots,
        unsummed,
        space,
        next_generation,
        repairs,
        to_free,
        report,
    })
}

/// Indices any file may use before memory must be earned by extents found.
const DENSE_SLACK: usize = 1 << 16;

/// How many slot indices dense tables may cover after `walked` extents: a
/// region whose live slots sit at indices far above their number (after
/// many frees, or a hostile header) keeps those apart instead.
fn dense_limit(walked: usize) -> usize {
    DENSE_SLACK.saturating_add(walked.saturating_mul(2))
}

/// Closes a run of free extents at a live extent: one tag store if the run is
/// not already a single, correctly tagged free extent.
fn close_run(run: &mut Option<FreeRun>, repairs: &mut Vec<(u64, Tag)>) {
    if let Some(run) = run.take()
        && !run.already_tagged
    {
        repairs.push((run.start, Tag::Free { len: run.len }));
    }
}

/// The offset of the next trustworthy header after the one at `pos`, before
/// `limit`: a live header whose checksums of tag and header hold and whose
/// length fits in the file. `None` if there is none.
fn resync<S: Source>(
    file: &mut S,
    pos: u64,
    limit: u64,
    fits: &dyn Fn(u64, u64) -> bool,
) -> io::Result<Option<u64>> {
    let limit = limit.min(file.len());
    let mut at = pos + EXTENT_ALIGN;
    while at + EXTENT_HEADER_LEN <= limit {
        if let Ok(live) = LiveHeader::decode(header_at(file, at)?)
            && fits(at, live.extent_len)
        {
            return Ok(Some(at));
        }
        at += EXTENT_ALIGN;
    }
    Ok(None)
}

/// Words for a damaged header, for the report.
fn damage_detail<S: Source>(file: &mut S, pos: u64, tag: Option<Tag>) -> io::Result<String> {
    let eof = file.len();
    Ok(match tag {
        None => format!(
            "tag word {:#018x} at offset {pos} is not an extent tag",
            word_at(file, pos)?
        ),
        Some(Tag::Free { len }) | Some(Tag::Live { len })
            if len < EXTENT_HEADER_LEN || pos.checked_add(len).is_none_or(|end| end > eof) =>
        {
            format!(
                "extent at offset {pos} claims {len} bytes, past the end of the {eof}-byte file or shorter than a header"
            )
        }
        _ => format!(
            "live header at offset {pos}: {:?}",
            LiveHeader::decode(header_at(file, pos)?).err()
        ),
    })
}

/// Where the walk reads a region file: the writer's mapping ([`Bytes`]) or
/// a tool's reads through a window of fixed size. Every offset asked for
/// lies inside the file.
pub(crate) trait Source {
    /// The file's length.
    fn len(&self) -> u64;
    /// `len` bytes at `at` (at most a header and its user tag).
    fn bytes(&mut self, at: u64, len: u64) -> io::Result<&[u8]>;
    /// CRC32C of `len` bytes at `at` (a payload).
    fn crc(&mut self, at: u64, len: u64) -> io::Result<u32>;
}

/// A whole file in memory, or mapped: the writer's open.
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn bytes(&mut self, at: u64, len: u64) -> io::Result<&[u8]> {
        Ok(&self.0[at as usize..(at + len) as usize])
    }

    fn crc(&mut self, at: u64, len: u64) -> io::Result<u32> {
        Ok(checksum::crc32c(&self.0[at as usize..(at + len) as usize]))
    }
}

/// The tag word at `at` (`at + 8` is inside the file).
fn word_at<S: Source>(file: &mut S, at: u64) -> io::Result<u64> {
    let bytes = file.bytes(at, 8)?;
    Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

/// The header at `at` and, if it says so, the user tag after it: up to 40
/// bytes, fewer at the end of the file (`decode` reports a header cut
/// short). `at + 32` is inside the file.
pub(crate) fn header_at<S: Source>(file: &mut S, at: u64) -> io::Result<&[u8]> {
    let end = (at + EXTENT_HEADER_LEN + USER_TAG_LEN).min(file.len());
    file.bytes(at, end - at)
}
