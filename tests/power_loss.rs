//! Power loss: everything before the last `sync()` survives, and torn data
//! is never returned as a slot's bytes.
//!
//! Each scenario opens a region, does random writes and frees, calls
//! `sync()` and copies the file (the durable image), then does more writes
//! and frees without a sync and copies the file again (what the page cache
//! held when the power went). A crash image is the durable image with a
//! random subset of the 4 KiB pages that changed since applied (the kernel
//! writes dirty pages back in any order), and with either file length (the
//! length change of a growth may or may not have reached the disk; blocks
//! allocated but never written read as zeros). Each image is opened on a copy
//! and checked:
//!
//! - the open succeeds, nothing panics, `check_consistency()` holds;
//! - a slot live at the sync and neither freed nor rewritten after it reads
//!   back identical;
//! - any slot that reads back holds bytes that a write put in that slot (the
//!   one live at the sync, or one after it), never torn or foreign bytes;
//! - with no page applied (the durable image) or every page applied (a plain
//!   process crash) nothing is dropped and every slot is exactly as it was,
//!   except, in the second case, the slots written after the sync.
//!
//! A slot's payload checksum is computed at the next sync or when the region
//! is dropped, not at its write. Half the scenarios take the page-cache image
//! while the region is open: slots written after the sync have no checksum
//! there, and recovery on another boot drops them (`NotChecksummed`, allowed
//! for those slots only). The other half take it after the region was
//! dropped, which computed every checksum: then nothing may be dropped from
//! the untorn image, and a torn one mixes checked and unchecked headers.
//!
//! Compaction steps run among the ops before the sync, and in one test also
//! after it (a move keeps a slot's index and bytes, so a synced slot that was
//! only moved must survive too).
//!
//! `OVERFLOW_SOAK=1` runs many more scenarios; `OVERFLOW_SEED=<n>` picks the
//! first scenario's seed; `OVERFLOW_DUMP_DIR=<dir>` keeps the durable, cached
//! and crash image of every failing image there.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use overflow_region::{DropReason, EngineId, Error, OverflowRegion};

mod common;
use common::{Rng, mix};

const PAGE: usize = 4096;
const INITIAL_CAPACITY: usize = 64 << 10;
const MAX_CAPACITY: usize = 4 << 20;

/// What one write put in a slot; `seed` is unique per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Written {
    len: usize,
    seed: u64,
}

impl Written {
    /// The bytes. One write in four is mostly zeros (zero runs are common in
    /// real spills, and a zero word reads as an end mark).
    fn bytes(&self) -> Vec<u8> {
        let mut rng = Rng(self.seed);
        let sparse = self.seed.is_multiple_of(4);
        let mut out = Vec::with_capacity(self.len + 8);
        while out.len() < self.len {
            let word = rng.next();
            let word = if sparse && !word.is_multiple_of(16) {
                0
            } else {
                word
            };
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.truncate(self.len);
        out
    }

    fn engine(&self) -> EngineId {
        EngineId::ALL[(self.seed % EngineId::ALL.len() as u64) as usize]
    }
}

fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(40) {
        0..=19 => rng.below(200) as usize,
        20..=35 => 200 + rng.below(3000) as usize,
        36..=38 => 3200 + rng.below(9000) as usize,
        // Long ones, across several pages and growth steps.
        _ => (64 << 10) + rng.below(64 << 10) as usize,
    }
}

/// The region and the model of what it holds.
struct Workload {
    region: OverflowRegion,
    rng: Rng,
    live: HashMap<usize, Written>,
    writes: u64,
    /// Chance of a compaction step instead of a write or free.
    compact_percent: u64,
    /// Extents moved by compaction.
    moved: u64,
}

impl Workload {
    /// One random write, free or compaction step; returns the slot written
    /// or freed and what it holds now (`None` for a compaction step, which
    /// changes no slot's bytes).
    fn step(&mut self, free_percent: u64) -> Option<(usize, Option<Written>)> {
        if self.rng.chance(self.compact_percent) {
            let budget = self.rng.below(32 << 10);
            let report = self.region.compact_step(budget).expect("compaction step");
            self.moved += report.extents_moved;
            return None;
        }
        Some(self.write_or_free(free_percent))
    }

    fn write_or_free(&mut self, free_percent: u64) -> (usize, Option<Written>) {
        if !self.live.is_empty() && self.rng.chance(free_percent) {
            let mut slots: Vec<usize> = self.live.keys().copied().collect();
            slots.sort_unstable();
            let slot = slots[self.rng.below(slots.len() as u64) as usize];
            self.region.free(slot).expect("free of a live slot");
            self.live.remove(&slot);
            return (slot, None);
        }
        self.writes += 1;
        let written = Written {
            len: payload_len(&mut self.rng),
            seed: mix(self.rng.next() ^ self.writes),
        };
        match self.region.write(&written.bytes(), written.engine()) {
            Ok(slot) => {
                assert!(self.live.insert(slot, written).is_none());
                (slot, Some(written))
            }
            Err(Error::CapacityExceeded { .. }) => self.write_or_free(100),
            Err(error) => panic!("write failed: {error}"),
        }
    }
}

/// One scenario: the durable image, the page-cache image and the models.
struct Scenario {
    durable: Vec<u8>,
    cached: Vec<u8>,
    /// The page-cache image was taken after the region was dropped (which
    /// computes the checksums of the slots written since the sync), not
    /// while it was open.
    closed: bool,
    /// Slots live at the sync and what they held.
    at_sync: HashMap<usize, Written>,
    /// Slots live at the end (in the page cache).
    at_end: HashMap<usize, Written>,
    /// Slots freed or written after the sync.
    touched: HashSet<usize>,
    /// Everything written after the sync, by slot.
    after_sync: HashMap<usize, Vec<Written>>,
    /// Extents compaction moved after the sync (their slots count as
    /// untouched: a move keeps the slot's index and bytes).
    moved_after_sync: u64,
    /// Slots live at the sync, untouched since, that compaction moved.
    moved: HashSet<usize>,
}

/// `compact_after_sync`: compaction steps among the ops after the sync (there
/// are some among the ops before it in any case).
fn build_scenario(seed: u64, dir: &Path, compact_after_sync: bool) -> Scenario {
    let path = dir.join(format!("source-{seed}"));
    let mut rng = Rng(seed);
    let region = OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    let mut work = Workload {
        region,
        rng: Rng(rng.next()),
        live: HashMap::new(),
        writes: 0,
        compact_percent: 3,
        moved: 0,
    };
    // Churn before the sync, so free space is full of stale headers.
    let before = 20 + rng.below(300);
    let free_percent = 20 + rng.below(40);
    for _ in 0..before {
        work.step(free_percent);
    }
    work.region.sync().unwrap();
    let mut durable = std::fs::read(&path).unwrap();
    let mut at_sync = work.live.clone();
    let offset_of = |region: &OverflowRegion, slot: usize| region.slot_ref(slot).unwrap().offset();
    let offsets = |work: &Workload, live: &HashMap<usize, Written>| -> HashMap<usize, u64> {
        live.keys()
            .map(|&slot| (slot, offset_of(&work.region, slot)))
            .collect()
    };
    let mut synced_offsets = offsets(&work, &at_sync);

    let mut touched = HashSet::new();
    let mut after_sync: HashMap<usize, Vec<Written>> = HashMap::new();
    let after = 1 + rng.below(40);
    let free_percent = rng.below(70);
    work.compact_percent = if compact_after_sync { 15 } else { 0 };
    work.moved = 0;
    for _ in 0..after {
        let moved_before = work.moved;
        let Some((slot, written)) = work.step(free_percent) else {
            if work.moved > moved_before {
                // A compaction step that moved extents synced the whole file
                // before it freed their old places: everything up to that
                // sync is on stable storage. (The frees after it may not be;
                // an old place left live is a duplicate with the same bytes,
                // which recovery resolves, and the crash test covers.)
                durable = std::fs::read(&path).unwrap();
                at_sync = work.live.clone();
                synced_offsets = offsets(&work, &at_sync);
                touched.clear();
                after_sync.clear();
            }
            continue;
        };
        touched.insert(slot);
        if let Some(written) = written {
            after_sync.entry(slot).or_default().push(written);
        }
    }
    let cached = std::fs::read(&path).unwrap();
    let at_end = work.live.clone();
    let moved_after_sync = work.moved;
    let moved: HashSet<usize> = synced_offsets
        .iter()
        .filter(|&(slot, &offset)| {
            !touched.contains(slot) && offset_of(&work.region, *slot) != offset
        })
        .map(|(&slot, _)| slot)
        .collect();
    drop(work);
    let closed = seed % 2 == 1;
    let cached = if closed {
        std::fs::read(&path).unwrap()
    } else {
        cached
    };
    std::fs::remove_file(&path).unwrap();
    Scenario {
        durable,
        cached,
        closed,
        at_sync,
        at_end,
        touched,
        after_sync,
        moved_after_sync,
        moved,
    }
}

impl Scenario {
    /// Pages of the cached image that differ from the durable one.
    fn changed_pages(&self) -> Vec<usize> {
        let pages = self.cached.len().div_ceil(PAGE);
        (0..pages)
            .filter(|&page| {
                let range = page * PAGE..((page + 1) * PAGE).min(self.cached.len());
                let old = self.durable.get(range.clone());
                old != Some(&self.cached[range])
            })
            .collect()
    }

    /// The durable image with `pages` of the cached image written over it;
    /// `cached_len`: at the cached image's length (the file grew or shrank
    /// since the sync, and that reached the disk), else at the durable one's.
    fn image(&self, pages: &[usize], cached_len: bool) -> Vec<u8> {
        let mut image = self.durable.clone();
        image.resize(self.durable.len().max(self.cached.len()), 0);
        for &page in pages {
            let range = page * PAGE..((page + 1) * PAGE).min(self.cached.len());
            image[range.clone()].copy_from_slice(&self.cached[range]);
        }
        image.truncate(if cached_len {
            self.cached.len()
        } else {
            self.durable.len()
        });
        image
    }
}

/// Opens `image` (as a file at `path`) and checks every promise; returns the
/// failures. `exact`: the image is the durable or the cached one, `expected`
/// is then exactly what it must hold. `then_use`: instead of the read-back
/// promises, check that the recovered region can be used and reopened.
fn check_image(
    scenario: &Scenario,
    image: &[u8],
    path: &Path,
    exact: Option<&HashMap<usize, Written>>,
    then_use: bool,
    totals: &mut Totals,
) -> Vec<String> {
    let mut failures = Vec::new();
    common::write_as_from_another_boot(path, image);
    let opened = std::panic::catch_unwind(|| {
        OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY)
    });
    let region = match opened {
        Ok(Ok(region)) => region,
        Ok(Err(error)) => return vec![format!("open failed: {error}")],
        Err(_) => return vec!["open panicked".to_owned()],
    };
    if let Err(error) = region.check_consistency() {
        failures.push(format!("inconsistent after open: {error}"));
    }
    totals.unsummed_dropped += region
        .recovery()
        .dropped
        .iter()
        .filter(|dropped| dropped.reason == DropReason::NotChecksummed)
        .count();
    if then_use {
        failures.extend(use_after_open(region, path));
        return failures;
    }
    if exact.is_some() {
        // Slots written after the sync have no checksum in an image taken
        // while the region was open: after a reboot they were never promised.
        let unexpected: Vec<_> = region
            .recovery()
            .dropped
            .iter()
            .filter(|dropped| {
                scenario.closed
                    || dropped.reason != DropReason::NotChecksummed
                    || !dropped
                        .slot
                        .is_some_and(|slot| scenario.after_sync.contains_key(&slot))
            })
            .collect();
        if !unexpected.is_empty() {
            failures.push(format!(
                "an untorn image had extents dropped: {unexpected:?}"
            ));
        }
    }
    for (&slot, written) in &scenario.at_sync {
        if scenario.touched.contains(&slot) {
            continue;
        }
        match region.read(slot) {
            Ok(bytes) if bytes == written.bytes().as_slice() => {}
            Ok(bytes) => failures.push(format!(
                "slot {slot}, synced and untouched since, reads back {} wrong bytes \
                 (expected {})",
                bytes.len(),
                written.len
            )),
            Err(error) => failures.push(format!(
                "slot {slot} ({} bytes), synced and untouched since{}, is lost: {error}; \
                 dropped: {:?}",
                written.len,
                if scenario.moved.contains(&slot) {
                    ", moved by compaction"
                } else {
                    ""
                },
                region.recovery().dropped
            )),
        }
    }
    let known = scenario
        .at_sync
        .keys()
        .chain(scenario.after_sync.keys())
        .copied()
        .max()
        .map_or(0, |slot| slot + 1);
    for slot in 0..region.slot_count().max(known) {
        let Ok(bytes) = region.read(slot) else {
            if exact.is_some_and(|expected| expected.contains_key(&slot)) {
                failures.push(format!("slot {slot} lost from an untorn image"));
            }
            continue;
        };
        let candidates = scenario
            .at_sync
            .get(&slot)
            .into_iter()
            .chain(scenario.after_sync.get(&slot).into_iter().flatten());
        // Two writes can hold the same bytes (short, mostly-zero ones), so
        // the engine takes part in telling them apart.
        let engine = region.engine(slot).ok();
        let matches = |written: &Written| {
            written.len == bytes.len()
                && Some(written.engine()) == engine
                && written.bytes() == bytes
        };
        if !candidates.into_iter().any(matches) {
            failures.push(format!(
                "slot {slot} reads back {} bytes that no write put in it",
                bytes.len()
            ));
        } else if let Some(expected) = exact
            && !expected.get(&slot).is_some_and(matches)
        {
            failures.push(format!(
                "slot {slot} of an untorn image holds another write's bytes"
            ));
        }
    }
    if let Some(expected) = exact
        && region.live_slot_count() != expected.len()
    {
        failures.push(format!(
            "untorn image: {} live slots, expected {}",
            region.live_slot_count(),
            expected.len()
        ));
    }
    failures
}

/// Frees every other live slot, writes a few new ones, checks consistency,
/// reopens and checks again: a recovered region must be an ordinary one.
fn use_after_open(mut region: OverflowRegion, path: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let live: Vec<usize> = (0..region.slot_count())
        .filter(|&slot| region.read(slot).is_ok())
        .collect();
    let mut kept = HashMap::new();
    for (i, &slot) in live.iter().enumerate() {
        if i % 2 == 0 {
            if let Err(error) = region.free(slot) {
                failures.push(format!("free({slot}) after recovery: {error}"));
            }
        } else {
            kept.insert(slot, region.read(slot).unwrap().to_vec());
        }
    }
    for i in 0..4u64 {
        let data = vec![0xA5 ^ i as u8; 100 + 700 * i as usize];
        match region.write(&data, EngineId::Bridge) {
            Ok(slot) => {
                kept.insert(slot, data);
            }
            Err(error) => failures.push(format!("write after recovery: {error}")),
        }
    }
    if let Err(error) = region.check_consistency() {
        failures.push(format!("inconsistent after use: {error}"));
    }
    drop(region);
    match OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY) {
        Err(error) => failures.push(format!("reopen after use failed: {error}")),
        Ok(region) => {
            if !region.recovery().dropped.is_empty() {
                failures.push(format!(
                    "reopen after use dropped {:?}",
                    region.recovery().dropped
                ));
            }
            if let Err(error) = region.check_consistency() {
                failures.push(format!("inconsistent after reopen: {error}"));
            }
            for (slot, data) in &kept {
                if region.read(*slot).ok() != Some(data.as_slice()) {
                    failures.push(format!("slot {slot} changed across a clean reopen"));
                }
            }
            if region.live_slot_count() != kept.len() {
                failures.push(format!(
                    "reopen after use: {} live slots, expected {}",
                    region.live_slot_count(),
                    kept.len()
                ));
            }
        }
    }
    failures
}

/// Totals over a run, for the summary line.
#[derive(Default)]
struct Totals {
    /// Failure kinds (the message with its numbers blanked) and their counts.
    kinds: std::collections::BTreeMap<String, usize>,
    scenarios: usize,
    images: usize,
    failed_images: usize,
    changed_pages: usize,
    moved_after_sync: u64,
    moved_slots: usize,
    /// Extents recovery dropped for having no payload checksum.
    unsummed_dropped: usize,
}

fn run(
    scenarios: u64,
    images_per_scenario: usize,
    then_use: bool,
    compact_after_sync: bool,
) -> (Totals, Vec<String>) {
    let first_seed: u64 = std::env::var("OVERFLOW_SEED")
        .ok()
        .map_or(0x5EED_0F90_3E12, |seed| {
            seed.parse().expect("OVERFLOW_SEED")
        });
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("image");
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for n in 0..scenarios {
        let seed = first_seed.wrapping_add(n);
        let scenario = build_scenario(seed, dir.path(), compact_after_sync);
        let changed = scenario.changed_pages();
        totals.scenarios += 1;
        totals.moved_after_sync += scenario.moved_after_sync;
        totals.moved_slots += scenario.moved.len();
        totals.changed_pages += changed.len();
        let mut rng = Rng(mix(seed));
        // What the untorn page-cache image must hold after a reboot.
        let at_end_kept: HashMap<usize, Written> = scenario
            .at_end
            .iter()
            .filter(|(slot, _)| scenario.closed || !scenario.after_sync.contains_key(slot))
            .map(|(&slot, &written)| (slot, written))
            .collect();
        for image_index in 0..images_per_scenario {
            let (pages, long, exact): (Vec<usize>, bool, Option<&HashMap<usize, Written>>) =
                match image_index {
                    0 => (Vec::new(), false, Some(&scenario.at_sync)),
                    1 => (changed.clone(), true, Some(&at_end_kept)),
                    _ => {
                        let percent = [10, 30, 50, 70, 90][rng.below(5) as usize];
                        let pages = changed
                            .iter()
                            .copied()
                            .filter(|_| rng.chance(percent))
                            .collect();
                        (pages, rng.chance(75), None)
                    }
                };
            let image = scenario.image(&pages, long);
            let found = check_image(&scenario, &image, &image_path, exact, then_use, &mut totals);
            totals.images += 1;
            for failure in &found {
                *totals.kinds.entry(failure_kind(failure)).or_default() += 1;
            }
            if !found.is_empty() {
                if let Some(dump) = std::env::var_os("OVERFLOW_DUMP_DIR") {
                    // For a post-mortem: the three files of a failing image.
                    let dump = Path::new(&dump);
                    std::fs::create_dir_all(dump).unwrap();
                    std::fs::write(dump.join(format!("{seed}-durable")), &scenario.durable)
                        .unwrap();
                    std::fs::write(dump.join(format!("{seed}-cached")), &scenario.cached).unwrap();
                    std::fs::write(dump.join(format!("{seed}-image-{image_index}")), &image)
                        .unwrap();
                }
                totals.failed_images += 1;
                failures.push(format!(
                    "seed {seed} image {image_index} (pages {pages:?} of changed {changed:?}, \
                     length {} of durable {} / cached {}): {}",
                    image.len(),
                    scenario.durable.len(),
                    scenario.cached.len(),
                    found.join("; ")
                ));
            }
        }
    }
    (totals, failures)
}

/// A failure message with its numbers and details blanked, to count kinds.
fn failure_kind(message: &str) -> String {
    let mut plain = String::new();
    let mut depth = 0;
    for c in message.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let head = plain.split([':', ';']).next().unwrap_or(&plain);
    head.trim()
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect::<String>()
        .replace("##", "#")
        .replace("##", "#")
}

fn report(name: &str, totals: &Totals, failures: &[String]) {
    println!(
        "{name}: {} scenarios, {} images ({} changed pages per scenario on average, \
         {} extents moved by compaction after a sync, {} of them synced slots, \
         {} extents without a payload checksum dropped), {} failed",
        totals.scenarios,
        totals.images,
        totals.changed_pages / totals.scenarios.max(1),
        totals.moved_after_sync,
        totals.moved_slots,
        totals.unsummed_dropped,
        totals.failed_images
    );
    assert!(
        totals.unsummed_dropped > 0,
        "{name}: no scenario had a slot without a payload checksum to drop"
    );
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(8).map(String::as_str).collect();
        let kinds: Vec<String> = totals
            .kinds
            .iter()
            .map(|(kind, count)| format!("{count:6} x {kind}"))
            .collect();
        panic!(
            "{} of {} crash images broke a promise.\nKinds of failure:\n{}\nThe first:\n{}",
            totals.failed_images,
            totals.images,
            kinds.join("\n"),
            shown.join("\n")
        );
    }
}

fn soak() -> bool {
    std::env::var_os("OVERFLOW_SOAK").is_some()
}

#[test]
fn synced_data_survives_any_subset_of_pages_written_back() {
    let scenarios = if soak() { 2000 } else { 24 };
    let (totals, failures) = run(scenarios, 16, false, false);
    report("power loss", &totals, &failures);
}

/// As above, with compaction steps among the ops after the sync. A move
/// keeps a slot's index and bytes, so a synced slot that was only moved
/// counts as untouched and must survive.
#[test]
fn compaction_after_a_sync_keeps_every_synced_slot() {
    let scenarios = if soak() { 1000 } else { 16 };
    let (totals, failures) = run(scenarios, 16, false, true);
    report("power loss with compaction", &totals, &failures);
}

#[test]
fn a_region_recovered_from_a_torn_image_is_usable() {
    let scenarios = if soak() { 500 } else { 10 };
    let (totals, failures) = run(scenarios, 8, true, true);
    report("power loss then use", &totals, &failures);
}

/// Found by the random test above, reduced: a write after the sync carves
/// the front of a free extent whose old bytes are zeros. The page with the
/// new extent's header reaches the disk, the page with the free remainder's
/// tag does not. Recovery reads the zero word where the remainder starts as
/// the end of the region and silently drops every extent after it, synced
/// ones included (nothing is reported in `dropped`).
#[test]
fn a_torn_carve_from_zeroed_free_space_does_not_end_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let mut region =
        OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    // Extents: filler [4096, 8032), zeros [8032, 16064), synced [16064, ..).
    let filler = region.write(&[7; 3904], EngineId::Wal).unwrap();
    let zeros = region.write(&[0; 8000], EngineId::Query).unwrap();
    let synced_bytes = b"synced long before the power went".as_slice();
    let synced = region.write(synced_bytes, EngineId::Crdt).unwrap();
    region.free(zeros).unwrap();
    region.sync().unwrap();
    let durable = std::fs::read(&path).unwrap();
    // Carves [8032, 8192) from the free extent; its remainder's free tag
    // goes at 8192, the first word of the next page.
    let late = region.write(&[0x5A; 128], EngineId::Vector).unwrap();
    // Dropped first, which computes the late extent's payload checksum: a
    // page holding it can then be recovered after a reboot.
    drop(region);
    let cached = std::fs::read(&path).unwrap();
    assert_eq!(
        &durable[8192..8200],
        &[0; 8],
        "setup: the old bytes at 8192 are zeros"
    );
    assert_ne!(
        &cached[8192..8200],
        &[0; 8],
        "setup: the remainder's tag is at 8192"
    );

    // The power goes: of the pages written since the sync, only 4096..8192
    // (the new extent, header and payload) reached the disk.
    let mut image = durable.clone();
    image[4096..8192].copy_from_slice(&cached[4096..8192]);
    let image_path = dir.path().join("image");
    common::write_as_from_another_boot(&image_path, &image);
    let region =
        OverflowRegion::open_with_config(&image_path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    region.check_consistency().unwrap();
    assert_eq!(region.read(filler).unwrap(), &[7; 3904]);
    assert_eq!(region.read(late).unwrap(), &[0x5A; 128]);
    assert_eq!(
        region.read(synced).ok(),
        Some(synced_bytes),
        "slot {synced}, synced before the power loss, is lost; recovery: {:?}",
        region.recovery()
    );
}

/// Found by reading `recover`: the counter of slot indices lives in the
/// file header's page, outside the extents. When that page does not reach
/// the disk but a new slot's extent does, recovery counts the slot (the
/// highest index seen) but leaves the stale counter in the file. Once that
/// slot is freed, the file and the region disagree on the number of slot
/// indices and `check_consistency` fails.
#[test]
fn a_slot_whose_index_counter_was_not_written_back_can_be_freed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let mut region =
        OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    region.write(b"first", EngineId::Wal).unwrap();
    region.write(b"second", EngineId::Wal).unwrap();
    region.sync().unwrap();
    let durable = std::fs::read(&path).unwrap();
    let late = region.write(b"third, a new index", EngineId::Wal).unwrap();
    // Dropped first, which computes the late extent's payload checksum.
    drop(region);
    let cached = std::fs::read(&path).unwrap();

    // Every changed page but the file header's reaches the disk.
    let mut image = cached.clone();
    image[..PAGE].copy_from_slice(&durable[..PAGE]);
    let image_path = dir.path().join("image");
    common::write_as_from_another_boot(&image_path, &image);
    let mut region =
        OverflowRegion::open_with_config(&image_path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    assert_eq!(region.read(late).unwrap(), b"third, a new index");
    region.check_consistency().unwrap();
    region.free(late).unwrap();
    let slot_count = region.slot_count();
    let consistency = region.check_consistency();
    drop(region);
    let reopened =
        OverflowRegion::open_with_config(&image_path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    assert_eq!(
        consistency,
        Ok(()),
        "after freeing slot {late}: the region counts {slot_count} slot indices, a reopen counts {}",
        reopened.slot_count()
    );
}

/// Found by `compaction_after_a_sync_keeps_every_synced_slot`, reduced: a
/// compaction move wrote the slot's copy, then freed the original, with no
/// sync in between; when the page with the original's free tag reached the
/// disk and the copy's page did not, the slot was gone. Compaction now syncs
/// the copies before it frees the originals, so the copy's pages are on
/// stable storage in any image where the free tag is.
#[test]
fn a_compaction_move_after_a_sync_cannot_lose_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let mut region =
        OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    // Extents: gap [4096, 10128), moved [10128, 13168), after it a small one.
    let gap = region.write(&[1; 6000], EngineId::Wal).unwrap();
    let synced_bytes = vec![0xAB; 3000];
    let synced = region.write(&synced_bytes, EngineId::Crdt).unwrap();
    let after = region.write(&[2; 100], EngineId::Wal).unwrap();
    region.free(gap).unwrap();
    region.sync().unwrap();
    let durable = std::fs::read(&path).unwrap();
    let original = region.slot_ref(synced).unwrap().offset() as usize;
    let report = region.compact().unwrap();
    let copy = region.slot_ref(synced).unwrap().offset() as usize;
    let cached = std::fs::read(&path).unwrap();
    drop(region);
    assert_eq!(
        (original, report.extents_moved),
        (10128, 2),
        "setup: the slot moves from page 2 (and the last one with it)"
    );
    assert!(
        copy / PAGE < original / PAGE,
        "setup: the copy lands on a lower page: {copy}"
    );

    // The power goes: of the pages written since the user's sync, the one
    // holding the original's header (now a free tag) reached the disk. So
    // did the copy's pages: compaction synced them before it freed the
    // original, so no image without them can exist.
    let mut image = durable.clone();
    let copy_end = copy + 32 + synced_bytes.len();
    for page in (copy / PAGE..copy_end.div_ceil(PAGE)).chain([original / PAGE]) {
        image[page * PAGE..(page + 1) * PAGE]
            .copy_from_slice(&cached[page * PAGE..(page + 1) * PAGE]);
    }
    let image_path = dir.path().join("image");
    common::write_as_from_another_boot(&image_path, &image);
    let region =
        OverflowRegion::open_with_config(&image_path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    region.check_consistency().unwrap();
    assert_eq!(
        region.read(synced).ok(),
        Some(synced_bytes.as_slice()),
        "slot {synced}, synced, then only moved by compaction, is lost; recovery: {:?}",
        region.recovery()
    );
    let _ = after;
}
