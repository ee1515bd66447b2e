//! Bad files: flipped bytes, truncation, absurd lengths, zeroed tails,
//! foreign files. Never a panic; a file that is not a region is refused and
//! left untouched; a damaged region opens with every slot that reads back
//! holding exactly its bytes, the damaged ones reported in
//! `recovery().dropped`, nothing else lost, and `check_consistency()` Ok.
//! A region opened from a damaged file must then work like any other: frees,
//! writes, and a clean reopen.
//!
//! The tests build one small region (a few dozen slots of mixed sizes, some
//! freed) and damage copies of it. They know the on-disk format
//! (docs/FORMAT.md): a 4096-byte file header, then extents with a 32-byte
//! header (tag word, slot, generation, 48-bit payload length, engine, payload
//! CRC32C, header CRC32C).
//!
//! `OVERFLOW_SOAK=1` (or `cargo test --test corruption -- --ignored`) also
//! runs `random_damage_soak`, a stable-Rust stand-in for the cargo-fuzz
//! target in `fuzz/`: it feeds mutated and random files to the same checks for
//! `OVERFLOW_FUZZ_SECS` seconds (default 60).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;

use overflow_region::{DropReason, DroppedExtent, EngineId, Error, OverflowRegion};

mod common;
use common::{Rng, catching, live_header, live_header_claiming, scratch_dir, tag_word};

const INITIAL_CAPACITY: usize = 64 << 10;
const MAX_CAPACITY: usize = 1 << 20;

// The format, as docs/FORMAT.md specifies it.
const DATA_START: usize = 4096;
const HEADER_LEN: usize = 32;
const FILE_HEADER_CHECKED_LEN: usize = 28;
const COUNTERS: std::ops::Range<usize> = 64..80;
/// The file header bytes a writer reads before trusting a file (through the
/// end-of-chain and maximum-capacity counters).
const HEADER_PROBE_LEN: usize = 96;
const LIVE: u8 = b'L';
const FREE: u8 = b'F';
const END: u8 = b'E';

fn tag_state(word: u64) -> u8 {
    (word >> 32) as u8
}

fn tag_len(word: u64) -> u64 {
    (word & 0xFFFF_FFFF) * 16
}

fn word_at(file: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(file[at..at + 8].try_into().unwrap())
}

/// One extent of the pristine file, as its chain says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExtentInfo {
    offset: usize,
    len: usize,
    /// The slot, for a live extent.
    slot: Option<usize>,
}

impl ExtentInfo {
    fn end(&self) -> usize {
        self.offset + self.len
    }

    fn contains(&self, at: usize) -> bool {
        (self.offset..self.end()).contains(&at)
    }
}

/// Walks the chain of an undamaged file.
fn chain(file: &[u8]) -> (Vec<ExtentInfo>, usize) {
    let mut extents = Vec::new();
    let mut at = DATA_START;
    while at + HEADER_LEN <= file.len() {
        let word = word_at(file, at);
        if word == 0 || tag_state(word) == END {
            break;
        }
        assert_eq!(
            word,
            tag_word(tag_state(word), tag_len(word)),
            "pristine tag at {at}"
        );
        let len = tag_len(word) as usize;
        let slot = (tag_state(word) == LIVE)
            .then(|| u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize);
        extents.push(ExtentInfo {
            offset: at,
            len,
            slot,
        });
        at += len;
    }
    (extents, at)
}

/// The small region every test damages, and what it holds.
struct Pristine {
    file: Vec<u8>,
    /// Live slots: bytes and engine.
    live: BTreeMap<usize, (Vec<u8>, EngineId)>,
    extents: Vec<ExtentInfo>,
    /// End of the chain (where its end mark is).
    chain_end: usize,
}

impl Pristine {
    fn extent_of(&self, slot: usize) -> ExtentInfo {
        *self
            .extents
            .iter()
            .find(|extent| extent.slot == Some(slot))
            .expect("every live slot has an extent")
    }
}

fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(build_pristine)
}

fn build_pristine() -> Pristine {
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("pristine");
    let mut region =
        OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    let mut rng = Rng(0x0C04_40B7);
    let mut live = BTreeMap::new();
    let sizes = [
        0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 47, 64, 100, 255, 256, 300, 700, 1000, 1500, 2600,
    ];
    let mut written = Vec::new();
    for (i, &len) in sizes
        .iter()
        .chain(sizes.iter().rev().step_by(2))
        .enumerate()
    {
        // Every third payload is mostly zeros, as real spills often are.
        let data: Vec<u8> = (0..len)
            .map(|j| {
                if i % 3 == 0 && j % 37 != 0 {
                    0
                } else {
                    rng.next() as u8
                }
            })
            .collect();
        let engine = EngineId::ALL[i % EngineId::ALL.len()];
        let slot = region.write(&data, engine).unwrap();
        written.push(slot);
        live.insert(slot, (data, engine));
    }
    // Free some: single ones, neighbours (they merge), the last (the end
    // retracts), then write some again into the holes (carves with a free
    // remainder, or whole with slack).
    for &i in &[1, 4, 5, 6, 9, 12, 13, 17, 21, 25, written.len() - 1] {
        region.free(written[i]).unwrap();
        live.remove(&written[i]);
    }
    for (i, &len) in [5usize, 40, 200, 90].iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let engine = EngineId::ALL[(i + 3) % EngineId::ALL.len()];
        let slot = region.write(&data, engine).unwrap();
        live.insert(slot, (data, engine));
    }
    region.free(written[2]).unwrap();
    live.remove(&written[2]);
    region.check_consistency().unwrap();
    drop(region);
    let file = std::fs::read(&path).unwrap();
    let (extents, chain_end) = chain(&file);
    assert!(
        extents.iter().any(|extent| extent.slot.is_none()),
        "some free extents"
    );
    assert_eq!(
        extents
            .iter()
            .filter(|extent| extent.slot.is_some())
            .count(),
        live.len()
    );
    Pristine {
        file,
        live,
        extents,
        chain_end,
    }
}

/// How a damaged file may be allowed to lose slots.
#[derive(Clone, Copy)]
enum Allowed<'a> {
    /// Only slots whose extent contains one of these offsets.
    Touching(&'a [usize]),
    /// Only slots whose extent does not end at or before this length.
    Past(usize),
    /// Any slot (the file was damaged beyond a few bytes); bytes that read
    /// back must still be right.
    Any,
}

/// Opens `image` at `path` and checks every promise; returns the failures.
/// `header_damaged`: refusing the file is an acceptable outcome. `then_use`:
/// also use the region and reopen it (see [`use_after_open`]).
fn check_damaged(
    pristine: &Pristine,
    image: &[u8],
    path: &Path,
    header_damaged: bool,
    allowed: Allowed<'_>,
    then_use: bool,
) -> Vec<String> {
    common::write_as_from_another_boot(path, image);
    catching(|| check_opened(pristine, image, path, header_damaged, allowed, then_use))
        .unwrap_or_else(|panic| vec![panic])
}

/// The body of [`check_damaged`], once the image is written.
fn check_opened(
    pristine: &Pristine,
    image: &[u8],
    path: &Path,
    header_damaged: bool,
    allowed: Allowed<'_>,
    then_use: bool,
) -> Vec<String> {
    let opened = OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY);
    let region = match opened {
        Err(error @ (Error::NotARegion { .. } | Error::UnsupportedVersion { .. }))
            if header_damaged =>
        {
            let after = std::fs::read(path).unwrap();
            if after != image {
                return vec![format!("refused ({error}) but modified the file")];
            }
            return Vec::new();
        }
        Err(error) => return vec![format!("open failed: {error}")],
        Ok(region) => region,
    };
    let mut failures = Vec::new();
    if let Err(error) = region.check_consistency() {
        failures.push(format!("inconsistent after open: {error}"));
    }
    let dropped = &region.recovery().dropped;
    let highest = pristine.live.keys().last().map_or(0, |slot| slot + 1);
    for slot in 0..region.slot_count().max(highest) {
        match (region.read(slot), pristine.live.get(&slot)) {
            (Ok(bytes), Some((data, engine))) => {
                if bytes != data.as_slice() {
                    failures.push(format!("slot {slot} reads back wrong bytes"));
                } else if region.engine(slot).ok() != Some(*engine) {
                    failures.push(format!("slot {slot} has the wrong engine"));
                }
            }
            (Ok(bytes), None) => failures.push(format!(
                "slot {slot} is free but reads back {} bytes",
                bytes.len()
            )),
            (Err(_), Some(_)) => {
                let extent = pristine.extent_of(slot);
                let may_lose = match allowed {
                    Allowed::Touching(offsets) => offsets.iter().any(|&at| extent.contains(at)),
                    Allowed::Past(len) => extent.end() > len,
                    Allowed::Any => true,
                };
                if !may_lose {
                    failures.push(format!(
                        "slot {slot} (extent {}..{}) was not damaged but is lost; dropped {dropped:?}",
                        extent.offset,
                        extent.end()
                    ));
                }
                // A slot whose header is still intact can be (and must be)
                // reported; one whose header is gone is reported through the
                // damaged range covering it, if recovery saw any.
                let header = extent.offset..extent.offset + HEADER_LEN;
                let in_file = image.get(header.clone()) == Some(&pristine.file[header]);
                let reported = dropped.iter().any(|drop| {
                    drop.slot == Some(slot)
                        || (drop.offset..drop.offset + drop.len).contains(&(extent.offset as u64))
                });
                if in_file && !matches!(allowed, Allowed::Any) && !reported {
                    failures.push(format!(
                        "slot {slot} (extent {}..{}) is lost without a report; dropped {dropped:?}",
                        extent.offset,
                        extent.end()
                    ));
                }
            }
            (Err(_), None) => {}
        }
    }
    if then_use {
        failures.extend(use_after_open(region, path));
    }
    failures
}

/// Frees the highest live slot and another one, writes two, checks, reopens:
/// a region recovered from a damaged file must be an ordinary one.
fn use_after_open(mut region: OverflowRegion, path: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let live: Vec<usize> = (0..region.slot_count())
        .filter(|&slot| region.read(slot).is_ok())
        .collect();
    let mut kept: BTreeMap<usize, Vec<u8>> = live
        .iter()
        .map(|&slot| (slot, region.read(slot).unwrap().to_vec()))
        .collect();
    for slot in [live.last(), live.first()].into_iter().flatten() {
        if kept.remove(slot).is_some()
            && let Err(error) = region.free(*slot)
        {
            failures.push(format!("after use: free({slot}) failed: {error}"));
        }
    }
    for len in [3usize, 900] {
        let data = vec![0xC3; len];
        match region.write(&data, EngineId::Sparse) {
            Ok(slot) => {
                kept.insert(slot, data);
            }
            Err(error) => failures.push(format!("after use: write failed: {error}")),
        }
    }
    if let Err(error) = region.check_consistency() {
        failures.push(format!("after use: inconsistent: {error}"));
    }
    drop(region);
    match OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY) {
        Err(error) => failures.push(format!("after use: reopen failed: {error}")),
        Ok(region) => {
            if !region.recovery().dropped.is_empty() {
                failures.push(format!(
                    "after use: a clean reopen dropped {:?}",
                    region.recovery().dropped
                ));
            }
            for (slot, data) in &kept {
                if region.read(*slot).ok() != Some(data.as_slice()) {
                    failures.push(format!("after use: slot {slot} changed across a reopen"));
                }
            }
            if region.live_slot_count() != kept.len() {
                failures.push(format!(
                    "after use: {} live slots after reopen, expected {}",
                    region.live_slot_count(),
                    kept.len()
                ));
            }
        }
    }
    failures
}

/// Collects failures by kind and panics with a summary at the end.
#[derive(Default)]
struct Failures {
    kinds: BTreeMap<String, usize>,
    first: Vec<String>,
    cases: usize,
    failed_cases: usize,
}

impl Failures {
    fn record(&mut self, case: impl FnOnce() -> String, found: Vec<String>) {
        self.cases += 1;
        if found.is_empty() {
            return;
        }
        self.failed_cases += 1;
        for failure in &found {
            *self.kinds.entry(kind(failure)).or_default() += 1;
        }
        if self.first.len() < 10 {
            self.first.push(format!("{}: {}", case(), found.join("; ")));
        }
    }

    fn finish(self, name: &str) {
        println!("{name}: {} cases, {} failed", self.cases, self.failed_cases);
        if self.failed_cases > 0 {
            let kinds: Vec<String> = self
                .kinds
                .iter()
                .map(|(kind, count)| format!("{count:6} x {kind}"))
                .collect();
            panic!(
                "{name}: {} of {} cases broke a promise.\nKinds of failure:\n{}\nThe first:\n{}",
                self.failed_cases,
                self.cases,
                kinds.join("\n"),
                self.first.join("\n")
            );
        }
    }
}

/// A failure message with numbers and bracketed details blanked.
fn kind(message: &str) -> String {
    let mut plain = String::new();
    let mut depth = 0i32;
    for c in message.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ if depth == 0 => plain.push(if c.is_ascii_digit() { '#' } else { c }),
            _ => {}
        }
    }
    let mut head = plain.split(';').next().unwrap_or(&plain).trim().to_owned();
    while head.contains("##") {
        head = head.replace("##", "#");
    }
    head
}

/// The offsets a flip sweep visits, and whether each is structural (file
/// header, extent header, end mark), where every byte is flipped two ways
/// and the region is used afterwards. Payload bytes all behave alike, so
/// they are sampled.
fn sweep_offsets(pristine: &Pristine) -> Vec<(usize, bool)> {
    let mut offsets: Vec<(usize, bool)> = (0..128).map(|at| (at, true)).collect();
    offsets.extend((128..DATA_START).step_by(61).map(|at| (at, false)));
    for extent in &pristine.extents {
        let header = extent.offset..extent.offset + HEADER_LEN;
        offsets.extend(header.clone().map(|at| (at, true)));
        offsets.extend((header.end..extent.end()).step_by(19).map(|at| (at, false)));
        offsets.extend((extent.end() - 3..extent.end()).map(|at| (at, false)));
    }
    let end = (pristine.chain_end + 64).min(pristine.file.len());
    offsets.extend((pristine.chain_end..end).map(|at| (at, true)));
    offsets.sort_unstable();
    offsets.dedup_by_key(|(at, _)| *at);
    offsets
}

#[test]
fn every_flipped_byte_is_an_error_or_a_reported_drop() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("flipped");
    let mut failures = Failures::default();
    for (at, structural) in sweep_offsets(pristine) {
        let single_bit = 1u8 << (at * 3 % 8);
        let masks: &[u8] = if structural {
            &[0xFF, single_bit]
        } else if at % 2 == 0 {
            &[0xFF]
        } else {
            &[single_bit]
        };
        for &mask in masks {
            let mut image = pristine.file.clone();
            image[at] ^= mask;
            let found = check_damaged(
                pristine,
                &image,
                &path,
                at < FILE_HEADER_CHECKED_LEN,
                Allowed::Touching(&[at]),
                structural,
            );
            failures.record(|| format!("byte {at} ^ {mask:#04x}"), found);
        }
    }
    failures.finish("flipped bytes");
}

#[test]
fn truncated_files_are_refused_or_keep_every_whole_slot() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("truncated");
    let mut lengths: Vec<usize> =
        vec![1, 7, 8, 9, 27, 28, 40, 79, 80, 95, 96, 97, 1000, 4000, 4095];
    lengths.extend(DATA_START..DATA_START + 64);
    // Every extent boundary, a cut inside every header and payload.
    for extent in &pristine.extents {
        lengths.extend([extent.offset, extent.offset + 8, extent.offset + 31]);
        lengths.extend([extent.offset + 33, extent.end() - 1, extent.end() + 8]);
    }
    lengths.extend((DATA_START..pristine.chain_end + 48).step_by(101));
    lengths.extend([pristine.file.len() - 1, pristine.file.len() / 2 + 3]);
    let mut failures = Failures::default();
    for len in lengths {
        let image = &pristine.file[..len];
        let found = if len < HEADER_PROBE_LEN {
            // Too short for a region header: refused, untouched.
            refused_untouched(image, &path)
        } else if len < DATA_START {
            // A region header and no data area: an initialisation that did
            // not finish; it is finished.
            let mut found = Vec::new();
            common::write_as_from_another_boot(&path, image);
            match OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY) {
                Ok(region) => {
                    if !region.recovery().initialised || region.slot_count() != 0 {
                        found.push("a header-only file did not open as a new region".to_owned());
                    }
                }
                Err(error) => found.push(format!("a header-only file was refused: {error}")),
            }
            found
        } else {
            check_damaged(pristine, image, &path, false, Allowed::Past(len), true)
        };
        failures.record(|| format!("length {len}"), found);
    }
    failures.finish("truncated files");
}

/// Opening `image` must fail with NotARegion or UnsupportedVersion and leave
/// the file as it was.
fn refused_untouched(image: &[u8], path: &Path) -> Vec<String> {
    std::fs::write(path, image).unwrap();
    let result =
        catching(|| OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY));
    let mut found = Vec::new();
    match result {
        Err(panic) => found.push(panic),
        Ok(Ok(_)) => found.push("a file that is not a region was opened".to_owned()),
        Ok(Err(Error::NotARegion { .. } | Error::UnsupportedVersion { .. })) => {}
        Ok(Err(error)) => found.push(format!("refused with the wrong error: {error}")),
    }
    if std::fs::read(path).unwrap() != image {
        found.push("the refused file was modified".to_owned());
    }
    found
}

#[test]
fn foreign_files_are_refused_and_left_untouched() {
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("foreign");
    let pristine = pristine();
    let mut rng = Rng(7);
    let random: Vec<u8> = (0..70_000).map(|_| rng.next() as u8).collect();
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let mut bad_crc = pristine.file.clone();
    bad_crc[24] ^= 1;
    let mut version_3 = pristine.file.clone();
    version_3[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c::crc32c(&version_3[..24]);
    version_3[24..28].copy_from_slice(&crc.to_le_bytes());
    let mut other_geometry = pristine.file.clone();
    other_geometry[16..20].copy_from_slice(&8u32.to_le_bytes());
    let crc = crc32c::crc32c(&other_geometry[..24]);
    other_geometry[24..28].copy_from_slice(&crc.to_le_bytes());
    let mut magic_only = b"OVFLREGN".to_vec();
    magic_only.extend_from_slice(&random[..9000]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random.clone()),
        ("a few random bytes", random[..5].to_vec()),
        ("text", b"# not a region\nhello\n".repeat(400)),
        ("an executable", exe[..exe.len().min(200_000)].to_vec()),
        ("zeros", vec![0; 70_000]),
        ("ones", vec![0xFF; 5000]),
        ("the magic then garbage", magic_only),
        ("a damaged header checksum", bad_crc),
        ("format version 3", version_3),
        ("another geometry", other_geometry),
    ];
    let mut failures = Failures::default();
    for (name, image) in cases {
        failures.record(|| name.to_owned(), refused_untouched(&image, &path));
    }
    // A region larger than the maximum asked for: refused, untouched.
    let mut big = pristine.file.clone();
    big.resize(MAX_CAPACITY + 4096, 0);
    std::fs::write(&path, &big).unwrap();
    let found = match OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY) {
        Err(Error::InvalidConfig { .. }) if std::fs::read(&path).unwrap() == big => Vec::new(),
        Err(error) => vec![format!("larger than the maximum: {error}, or modified")],
        Ok(_) => vec!["a file larger than the maximum capacity was opened".to_owned()],
    };
    failures.record(|| "larger than the maximum".to_owned(), found);
    failures.finish("foreign files");
}

#[test]
fn zeroed_or_extended_tails_keep_every_slot_before_them() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("tail");
    let mut failures = Failures::default();
    // Zeros from `from` to the end of the file (a tail whose blocks were lost).
    for from in (DATA_START..pristine.chain_end + 32).step_by(48) {
        let mut image = pristine.file.clone();
        image[from..].fill(0);
        let found = check_damaged(pristine, &image, &path, false, Allowed::Past(from), true);
        failures.record(|| format!("zeros from {from}"), found);
    }
    // Zeros appended (the file grew and nothing was written there yet).
    for extra in [1usize, 15, 16, 4096, 200_000] {
        let mut image = pristine.file.clone();
        image.resize(image.len() + extra, 0);
        let found = check_damaged(pristine, &image, &path, false, Allowed::Touching(&[]), true);
        failures.record(|| format!("{extra} zeros appended"), found);
    }
    failures.finish("zeroed tails");
}

#[test]
fn absurd_lengths_and_crafted_headers_are_dropped_not_trusted() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("crafted");
    let mut failures = Failures::default();
    let first_live = *pristine
        .extents
        .iter()
        .find(|extent| extent.slot.is_some())
        .unwrap();
    let first_free = *pristine
        .extents
        .iter()
        .find(|extent| extent.slot.is_none())
        .unwrap();
    let slot = first_live.slot.unwrap() as u32;
    let (data, _) = &pristine.live[&(slot as usize)];
    let at = first_live.offset;
    let max_extent = ((1u64 << 32) - 1) * 16;

    let mut crafted: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    let mut with_header = |name: &str, offset: usize, header: &[u8]| {
        let mut image = pristine.file.clone();
        image[offset..offset + header.len()].copy_from_slice(header);
        crafted.push((name.to_owned(), image, vec![offset]));
    };
    with_header(
        "a live tag of the largest length, checksums right",
        at,
        &live_header(max_extent, slot, 1, 0, data),
    );
    with_header(
        "a live tag one granule past the end of the file",
        at,
        &live_header((pristine.file.len() - at + 16) as u64, slot, 1, 0, data),
    );
    with_header(
        "a payload longer than its extent",
        at,
        &live_header_claiming(first_live.len as u64, slot, 1, first_live.len as u64, 0, 0),
    );
    with_header(
        "the largest payload length",
        at,
        &live_header_claiming(max_extent, slot, 1, (1 << 48) - 1, 0, 0),
    );
    with_header(
        "an unknown engine",
        at,
        &live_header(first_live.len as u64, slot, 1, 200, data),
    );
    with_header(
        "a live tag shorter than a header",
        at,
        &live_header(16, slot, 1, 0, &[]),
    );
    with_header(
        "a free tag of the largest length",
        first_free.offset,
        &tag_word(FREE, max_extent).to_le_bytes(),
    );
    with_header(
        "a free tag of length zero",
        first_free.offset,
        &tag_word(FREE, 0).to_le_bytes(),
    );
    with_header(
        "a free tag past the end of the file",
        first_free.offset,
        &tag_word(FREE, (pristine.file.len() - first_free.offset + 16) as u64).to_le_bytes(),
    );
    with_header(
        "an end mark with a length",
        first_free.offset,
        &tag_word(END, 4096).to_le_bytes(),
    );
    with_header(
        "an unknown state",
        first_free.offset,
        &tag_word(b'Q', first_free.len as u64).to_le_bytes(),
    );
    // A slot index the format never hands out, checksums right. (Any lower
    // index with checksums right is a slot like any other: recovery keeps
    // it, in memory proportional to the slots found; see memory_bounds.rs.)
    with_header(
        "a slot index out of range",
        at,
        &live_header(first_live.len as u64, u32::MAX, 1, 0, data),
    );
    for (name, image, offsets) in &crafted {
        let found = check_damaged(
            pristine,
            image,
            &path,
            false,
            Allowed::Touching(offsets),
            true,
        );
        failures.record(|| name.clone(), found);
    }

    // The counters outside the header checksum: absurd values must not
    // break the open nor the writes that follow.
    for (name, at, value) in [
        ("slot counter 0", COUNTERS.start, 0u64),
        ("slot counter u32::MAX", COUNTERS.start, u64::from(u32::MAX)),
        ("slot counter u64::MAX", COUNTERS.start, u64::MAX),
        (
            "generation counter u32::MAX",
            COUNTERS.start + 8,
            u64::from(u32::MAX),
        ),
    ] {
        let mut image = pristine.file.clone();
        image[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let found = check_damaged(pristine, &image, &path, false, Allowed::Touching(&[]), true);
        failures.record(|| name.to_owned(), found);
    }
    failures.finish("crafted headers");
}

/// A second live extent for a slot, with a newer generation, placed in free
/// space. Holding the same bytes, it is a compaction move cut short: the
/// newer copy is kept and nothing is reported. Holding other bytes, it is
/// damage: the newer one is kept and the older reported as a duplicate.
/// Either way the older one is freed and the file is consistent.
#[test]
fn a_duplicate_slot_keeps_the_newer_generation() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("duplicate");
    let mut failures = Failures::default();
    for free in pristine
        .extents
        .iter()
        .filter(|extent| extent.slot.is_none())
    {
        for live in pristine
            .extents
            .iter()
            .filter(|extent| extent.slot.is_some())
        {
            for same_bytes in [true, false] {
                let slot = live.slot.unwrap();
                let (data, engine) = &pristine.live[&slot];
                let mut copy = data.clone();
                if !same_bytes {
                    copy.push(0x77);
                }
                let extent_len = (HEADER_LEN + copy.len()).next_multiple_of(16);
                let rest = free.len.saturating_sub(extent_len);
                if extent_len > free.len || (rest != 0 && rest < HEADER_LEN) {
                    continue;
                }
                let mut image = pristine.file.clone();
                let generation = u32::from_le_bytes(
                    image[live.offset + 12..live.offset + 16]
                        .try_into()
                        .unwrap(),
                );
                let header = live_header(
                    extent_len as u64,
                    slot as u32,
                    generation.wrapping_add(1),
                    engine.as_u8(),
                    &copy,
                );
                image[free.offset..free.offset + HEADER_LEN].copy_from_slice(&header);
                image[free.offset + HEADER_LEN..][..copy.len()].copy_from_slice(&copy);
                if rest != 0 {
                    let tag = tag_word(FREE, rest as u64).to_le_bytes();
                    image[free.offset + extent_len..][..8].copy_from_slice(&tag);
                }
                common::write_as_from_another_boot(&path, &image);
                let found =
                    catching(|| check_duplicate(&path, live, free, slot, &copy, same_bytes))
                        .unwrap_or_else(|panic| vec![panic]);
                failures.record(
                    || {
                        format!(
                            "slot {slot} copied to {} (same bytes: {same_bytes})",
                            free.offset
                        )
                    },
                    found,
                );
            }
        }
    }
    assert!(
        failures.cases > 5,
        "too few duplicate cases: {}",
        failures.cases
    );
    failures.finish("duplicates");
}

fn check_duplicate(
    path: &Path,
    live: &ExtentInfo,
    copy_at: &ExtentInfo,
    slot: usize,
    newer: &[u8],
    same_bytes: bool,
) -> Vec<String> {
    let mut found = Vec::new();
    let region = match OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY) {
        Err(error) => return vec![format!("open failed: {error}")],
        Ok(region) => region,
    };
    let dropped = &region.recovery().dropped;
    let expected = if same_bytes {
        Vec::new()
    } else {
        vec![DroppedExtent {
            offset: live.offset as u64,
            len: live.len as u64,
            slot: Some(slot),
            reason: DropReason::Duplicate {
                kept_offset: copy_at.offset as u64,
            },
        }]
    };
    if *dropped != expected {
        found.push(format!("expected dropped {expected:?}, got {dropped:?}"));
    }
    if region.read(slot).ok() != Some(newer) {
        found.push(format!("slot {slot} does not read back the newer copy"));
    }
    if let Err(error) = region.check_consistency() {
        found.push(format!("inconsistent: {error}"));
    }
    found.extend(use_after_open(region, path));
    found
}

/// Found by reading `recover`: damage that leaves a valid live header 16
/// bytes after a live extent (or after the file header) makes recovery free
/// a 16-byte run, which it tags `Free { len: 16 }`. The walk refuses free
/// tags shorter than an extent header, so the file recovery just repaired
/// needs recovery again: `check_consistency` fails, and every later open
/// reports the run as damaged again.
#[test]
fn a_sixteen_byte_gap_after_a_live_extent_is_repaired_consistently() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("gap");
    // A live extent after a live one, followed by a free extent long enough
    // to give 16 bytes.
    let at = (1..pristine.extents.len() - 1)
        .find(|&i| {
            let [before, live, free] = [i - 1, i, i + 1].map(|i| pristine.extents[i]);
            before.slot.is_some() && live.slot.is_some() && free.slot.is_none() && free.len >= 64
        })
        .expect("setup: live, live, free extents in a row");
    let [live, free] = [at, at + 1].map(|i| pristine.extents[i]);
    let slot = live.slot.unwrap();
    let mut image = pristine.file.clone();
    // Move the live extent 16 bytes up, junk in front of it, and the free
    // extent after it 16 bytes shorter.
    let extent = pristine.file[live.offset..live.end()].to_vec();
    image[live.offset + 16..live.end() + 16].copy_from_slice(&extent);
    image[live.offset..live.offset + 16].copy_from_slice(&[0x6B; 16]);
    let tag = tag_word(FREE, (free.len - 16) as u64).to_le_bytes();
    image[free.offset + 16..][..8].copy_from_slice(&tag);
    common::write_as_from_another_boot(&path, &image);

    let region = OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    assert_eq!(
        region.read(slot).unwrap(),
        pristine.live[&slot].0.as_slice()
    );
    let consistency = region.check_consistency();
    let first_report = region.recovery().dropped.clone();
    drop(region);
    let region = OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    assert_eq!(
        consistency,
        Ok(()),
        "first open dropped {first_report:?}; the second open drops {:?} again",
        region.recovery().dropped
    );
}

/// Found by the flip sweep: free extents' tags carry no checksum. One
/// flipped bit in a free tag's length sends the walk a granule short (or
/// long): it lands in the free extent's old bytes, where a zero word reads
/// as the end of the region, or in the middle of the next extent. Either
/// way the undamaged slots after it are lost, and nothing is reported.
#[test]
fn a_flipped_bit_in_a_free_tag_loses_no_other_slot() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("free-tag");
    let mut failures = Failures::default();
    for free in pristine
        .extents
        .iter()
        .filter(|extent| extent.slot.is_none())
    {
        for bit in 0..8 {
            let mut image = pristine.file.clone();
            image[free.offset] ^= 1 << bit;
            let found = check_damaged(
                pristine,
                &image,
                &path,
                false,
                Allowed::Touching(&[free.offset]),
                false,
            );
            failures.record(|| format!("free tag at {} bit {bit}", free.offset), found);
        }
    }
    failures.finish("flipped free tags");
}

/// Found by the truncation test: recovery drops a slot whose index is above
/// `(file length - 4096) / 32 + 1` as `SlotOutOfRange`. That bound holds
/// for a file that only ever grew, not for a truncated one: an intact slot
/// with a high index at the front of a cut file is dropped.
#[test]
fn a_truncated_file_keeps_the_whole_slots_before_the_cut() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("cut");
    // The first live extent whose slot index is above the bound a cut right
    // after it gives.
    let extent = *pristine
        .extents
        .iter()
        .find(|extent| {
            extent
                .slot
                .is_some_and(|slot| slot > (extent.end() - DATA_START) / HEADER_LEN)
        })
        .expect("setup: a high slot index early in the file");
    let slot = extent.slot.unwrap();
    common::write_as_from_another_boot(&path, &pristine.file[..extent.end()]);
    let region = OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    assert_eq!(
        region.read(slot).ok(),
        Some(pristine.live[&slot].0.as_slice()),
        "slot {slot}, whole in the first {} bytes, is lost: {:?}",
        extent.end(),
        region.recovery().dropped
    );
}

/// Found by the crafted-header test: the generation counter in the file
/// header is outside its checksum. Recovery takes the larger of it and the
/// newest generation found, so a damaged counter of `u64::MAX` is kept and
/// the next `write` overflows `next_generation += 1`: a panic in a debug
/// build (a silent wrap to 0 in release).
#[test]
fn a_damaged_generation_counter_does_not_panic_the_next_write() {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("generation");
    let mut image = pristine.file.clone();
    let at = COUNTERS.start + 8;
    image[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    common::write_as_from_another_boot(&path, &image);
    let mut region =
        OverflowRegion::open_with_config(&path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    let written = catching(|| region.write(b"after a damaged counter", EngineId::Wal));
    let slot = written
        .unwrap_or_else(|panic| {
            panic!("write after opening a file whose generation counter is u64::MAX: {panic}")
        })
        .unwrap();
    assert_eq!(region.read(slot).unwrap(), b"after a damaged counter");
    region.check_consistency().unwrap();
}

/// A stable-Rust stand-in for the cargo-fuzz target: random damage of many
/// kinds for `OVERFLOW_FUZZ_SECS` seconds (default 60).
#[test]
#[ignore = "a soak; runs with OVERFLOW_SOAK=1 or --ignored"]
fn random_damage_soak() {
    soak_for(
        std::env::var("OVERFLOW_FUZZ_SECS")
            .ok()
            .map_or(60, |secs| secs.parse().expect("OVERFLOW_FUZZ_SECS")),
    );
}

#[test]
fn random_damage_soak_when_asked() {
    if std::env::var_os("OVERFLOW_SOAK").is_some() {
        random_damage_soak();
    }
}

fn soak_for(secs: u64) {
    let pristine = pristine();
    let dir = scratch_dir("overflow-corruption");
    let path = dir.path().join("soaked");
    let seed = std::env::var("OVERFLOW_SEED")
        .ok()
        .map_or(0x0005_0AC0_FFEE, |seed| {
            seed.parse().expect("OVERFLOW_SEED")
        });
    let mut rng = Rng(seed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut failures = Failures::default();
    let mut seen_kinds = HashSet::new();
    while std::time::Instant::now() < deadline {
        let case_seed = rng.next();
        let (image, checksummed) = mutate(pristine, &mut Rng(case_seed));
        // A mutation that fixed up checksums may forge any slot's bytes; the
        // others must never get a wrong byte through.
        let found = check_damaged(pristine, &image, &path, true, Allowed::Any, true)
            .into_iter()
            .filter(|failure| {
                !(checksummed
                    && (failure.contains("reads back wrong bytes")
                        || failure.contains("is free but reads back")
                        || failure.contains("wrong engine")))
            })
            .collect::<Vec<_>>();
        for failure in &found {
            if seen_kinds.insert(kind(failure)) {
                let keep = std::env::temp_dir().join(format!("overflow-soak-{case_seed}"));
                common::write_as_from_another_boot(&keep, &image);
                println!(
                    "new failure kind, image kept at {}: {failure}",
                    keep.display()
                );
            }
        }
        failures.record(|| format!("case seed {case_seed}"), found);
    }
    failures.finish("random damage");
}

/// A random damage of the pristine file. Returns the image and whether it
/// recomputed checksums (so forged extents are possible).
fn mutate(pristine: &Pristine, rng: &mut Rng) -> (Vec<u8>, bool) {
    let mut image = pristine.file.clone();
    let data_end = (pristine.chain_end + 256).min(image.len());
    let mut checksummed = false;
    for _ in 0..1 + rng.below(4) {
        let at = DATA_START + rng.below((data_end - DATA_START) as u64) as usize;
        match rng.below(9) {
            0 => image[at] ^= 1 << rng.below(8),
            1 => image[at] = rng.next() as u8,
            2 => {
                let len = 1 + rng.below(64) as usize;
                let end = (at + len).min(image.len());
                image[at..end].fill(0);
            }
            3 => {
                // Copy a run from elsewhere (a stale extent, a misdirected write).
                let from = DATA_START + rng.below((data_end - DATA_START) as u64) as usize;
                let len = (1 + rng.below(200) as usize)
                    .min(image.len() - from)
                    .min(image.len() - at);
                let run = image[from..from + len].to_vec();
                image[at..at + len].copy_from_slice(&run);
            }
            4 => {
                // A tag word of any state and length at an aligned offset.
                let at = at & !15;
                let state = [LIVE, FREE, END, 0][rng.below(4) as usize];
                let len = match rng.below(3) {
                    0 => rng.below(64) * 16,
                    1 => rng.below(1 << 12) * 16,
                    _ => rng.next() & ((1 << 44) - 16),
                };
                image[at..at + 8].copy_from_slice(&tag_word(state, len).to_le_bytes());
            }
            5 => {
                let len = DATA_START + rng.below((image.len() - DATA_START) as u64) as usize;
                image.truncate(len);
                break;
            }
            6 => {
                let at = COUNTERS.start + 8 * rng.below(2) as usize;
                let value = [0, 1, rng.below(100), rng.next(), u64::MAX][rng.below(5) as usize];
                image[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            7 => {
                // A forged live header with right checksums over whatever follows.
                let at = at & !15;
                let extent_len = 32 + rng.below(64) * 16;
                let payload_len = rng.below(extent_len - 31);
                let end = (at + extent_len as usize).min(image.len());
                let payload_end = (at + 32 + payload_len as usize).min(end);
                let payload = image.get(at + 32..payload_end).unwrap_or(&[]).to_vec();
                let slot = rng.below(48) as u32;
                let header = live_header(
                    extent_len,
                    slot,
                    rng.next() as u32,
                    rng.below(8) as u8,
                    &payload,
                );
                if at + 32 <= image.len() {
                    image[at..at + 32].copy_from_slice(&header);
                    checksummed = true;
                }
            }
            _ => {
                // Swap two 16-byte aligned blocks.
                let a = at & !15;
                let b = (DATA_START + rng.below((data_end - DATA_START) as u64) as usize) & !15;
                let len = 16 * (1 + rng.below(4) as usize);
                if a + len <= image.len() && b + len <= image.len() && a.abs_diff(b) >= len {
                    let block = image[a..a + len].to_vec();
                    image.copy_within(b..b + len, a);
                    image[b..b + len].copy_from_slice(&block);
                }
            }
        }
    }
    (image, checksummed)
}

/// Damage that writes `MOVD` over bytes 24..28 of a live header (where
/// compaction marks the old place of a moved slot) loses that slot, and
/// says so: the walk found no copy of the slot with the generation the
/// "mark" names. It was taken for a finished move and freed as a repair,
/// with nothing dropped, `is_intact()` true and `verify` saying ok (found
/// in review).
#[test]
fn a_moved_mark_with_no_copy_is_reported_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    {
        let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 1 << 20).unwrap();
        for i in 0..3u8 {
            region.write(&[i; 100], EngineId::Vector).unwrap();
        }
    }
    let victim = overflow_region::RegionFile::open(&path)
        .unwrap()
        .slot(1)
        .unwrap()
        .offset as usize;
    let mut image = std::fs::read(&path).unwrap();
    image[victim + 24..victim + 28].copy_from_slice(b"MOVD");
    std::fs::write(&path, &image).unwrap();

    let file = overflow_region::RegionFile::open(&path).unwrap();
    assert!(!file.is_intact(), "{:?}", file.recovery());
    let region = OverflowRegion::open_with_config(&path, 64 << 10, 1 << 20).unwrap();
    let dropped = &region.recovery().dropped;
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].slot, Some(1));
    assert!(matches!(
        dropped[0].reason,
        DropReason::DamagedHeader { .. }
    ));
    assert!(region.read(1).is_err());
    assert_eq!(region.read(0).unwrap(), [0u8; 100]);
    assert_eq!(region.read(2).unwrap(), [2u8; 100]);
    region.check_consistency().unwrap();
}
