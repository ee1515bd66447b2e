//! Fuzz target `open`: any bytes as a region file.
//!
//! Input: one flag byte, then the rest.
//!
//! - bit 0: the rest is the data area of a file whose 4096-byte header is
//!   valid (the two counters taken from the first 16 bytes of the rest), so
//!   the fuzzer reaches the extent walk; otherwise the rest is the whole file.
//! - bit 1: fix up checksums: every 16-byte aligned word of the data area
//!   that is a live tag gets a correct payload CRC (when its payload fits in
//!   the file) and header CRC, so forged extents pass the checks and the
//!   fuzzer reaches duplicates, overlaps and range checks.
//!
//! Checks (a failed check is a panic, which libFuzzer reports as a crash):
//! the open never panics; a refused file is refused with `NotARegion`,
//! `UnsupportedVersion` or `InvalidConfig` and left byte for byte as it was;
//! an opened region passes `check_consistency`, reads every slot, survives a
//! free and two writes, still passes `check_consistency`, and reopens with
//! nothing dropped and the same slots. With `OVERFLOW_FUZZ_OPEN_ONLY=1` in
//! the environment it stops after the reads (to look past a known bug in
//! the later steps).
//!
//! Memory: a counting allocator checks that opening the file (as a writer
//! with the largest maximum capacity, and with `RegionFile::open`, which
//! the CLI uses) never allocates more than `MEMORY_BOUND_BASE` plus
//! `MEMORY_PER_FILE_BYTE` times the file's length, whatever an index or a
//! counter in the file says.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use overflow_region::{EngineId, Error, OverflowRegion, RegionFile};

#[path = "../../tests/common/counting.rs"]
mod counting;

/// Heap an open may use whatever the file: fixed tables and the first
/// 65 536 slot indices.
const MEMORY_BOUND_BASE: usize = 16 << 20;
/// And per byte of the file (every 16 bytes can hold an extent).
const MEMORY_PER_FILE_BYTE: usize = 16;

/// Runs `f` and panics if the heap grew by more than `bound` meanwhile.
fn bounded<T>(what: &str, bound: usize, f: impl FnOnce() -> T) -> T {
    let (value, peak, _) = counting::measure(f);
    assert!(peak <= bound, "{what} allocated {peak} bytes, more than {bound}");
    value
}

/// The largest maximum capacity a writer may ask for (16 TiB).
const HUGE_MAX_CAPACITY: usize = 1 << 44;
/// Slots read one by one after the open (an intact header can name index
/// 4 billion; reading every index below it would take too long).
const READ_LIMIT: usize = 1 << 20;

const DATA_START: usize = 4096;
const INITIAL_CAPACITY: usize = 64 << 10;
const MAX_CAPACITY: usize = 1 << 20;

/// The region file, one per fuzzing process, in memory when possible.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("overflow-region-fuzz-{}", std::process::id()))
    })
}

fn open_only() -> bool {
    static OPEN_ONLY: OnceLock<bool> = OnceLock::new();
    *OPEN_ONLY.get_or_init(|| std::env::var_os("OVERFLOW_FUZZ_OPEN_ONLY").is_some())
}

/// The file header a region writes (magic, version, geometry, CRC32C).
fn file_header(counters: &[u8]) -> Vec<u8> {
    let mut header = vec![0u8; DATA_START];
    header[0..8].copy_from_slice(b"OVFLREGN");
    // `FORMAT_VERSION` in src/layout.rs: a file of another version is refused
    // before any extent is read.
    header[8..12].copy_from_slice(&2u32.to_le_bytes());
    header[12..16].copy_from_slice(&4096u32.to_le_bytes());
    header[16..20].copy_from_slice(&16u32.to_le_bytes());
    header[20..24].copy_from_slice(&32u32.to_le_bytes());
    let crc = crc32c::crc32c(&header[..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header[64..64 + counters.len()].copy_from_slice(counters);
    header
}

/// Gives every live tag in the data area correct checksums.
fn fix_checksums(file: &mut [u8]) {
    let mut at = DATA_START;
    while at + 32 <= file.len() {
        let word = u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
        if (word >> 32) as u8 == b'L' {
            let mut len = [0u8; 8];
            len[..6].copy_from_slice(&file[at + 16..at + 22]);
            let payload_len = u64::from_le_bytes(len) as usize;
            if let Some(payload) = file.get(at + 32..(at + 32).saturating_add(payload_len)) {
                let crc = crc32c::crc32c(payload);
                file[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
            }
            // The tag's own check, then the header's.
            let body = word & ((1 << 40) - 1);
            let check = u64::from(crc32c::crc32c(&body.to_le_bytes()[..5]) & 0xFF_FFFF);
            file[at..at + 8].copy_from_slice(&((check << 40) | body).to_le_bytes());
            let crc = crc32c::crc32c(&file[at..at + 28]);
            file[at + 28..at + 32].copy_from_slice(&crc.to_le_bytes());
        }
        at += 16;
    }
}

fn build_file(data: &[u8]) -> Vec<u8> {
    let Some((&flags, rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut file = if flags & 1 != 0 {
        let (counters, extents) = rest.split_at(rest.len().min(16));
        let mut file = file_header(counters);
        file.extend_from_slice(extents);
        file
    } else {
        rest.to_vec()
    };
    if flags & 2 != 0 {
        fix_checksums(&mut file);
    }
    file
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Only a failed check (a panic) leaves the file behind.
    let _ = std::fs::remove_file(path());
});

fn check(data: &[u8]) {
    let file = build_file(data);
    let path = path();
    std::fs::write(path, &file).unwrap();
    let bound = MEMORY_BOUND_BASE + MEMORY_PER_FILE_BYTE * file.len();
    // Read-only and a writer with the largest maximum capacity: memory
    // follows what the file holds, never the numbers it states.
    let _ = bounded("RegionFile::open", bound, || RegionFile::open(path));
    if file.len() <= MAX_CAPACITY {
        let huge = bounded("open with a 16 TiB maximum", bound, || {
            OverflowRegion::open_with_config(path, INITIAL_CAPACITY, HUGE_MAX_CAPACITY)
        });
        drop(huge);
        // That open may have repaired the file; start again from the input.
        std::fs::write(path, &file).unwrap();
    }
    let mut region = match OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY) {
        Ok(region) => region,
        Err(
            error @ (Error::NotARegion { .. }
            | Error::UnsupportedVersion { .. }
            | Error::InvalidConfig { .. }),
        ) => {
            assert!(
                std::fs::read(path).unwrap() == file,
                "refused ({error}) but modified the file"
            );
            return;
        }
        Err(error) => panic!("open failed: {error}"),
    };
    region
        .check_consistency()
        .unwrap_or_else(|error| panic!("inconsistent after open: {error}"));
    let mut live = Vec::new();
    for slot in 0..region.slot_count().min(READ_LIMIT) {
        match region.read(slot) {
            Ok(bytes) => live.push((slot, bytes.to_vec())),
            Err(Error::SlotFree { .. }) => {}
            Err(error) => panic!("read({slot}) below slot_count: {error}"),
        }
    }
    if region.slot_count() > READ_LIMIT {
        // Slots past the limit were not read: the later checks need them all.
        return;
    }
    assert_eq!(live.len(), region.live_slot_count());
    if open_only() {
        return;
    }
    if let Some((slot, _)) = live.pop() {
        region.free(slot).unwrap();
    }
    for len in [5usize, 700] {
        let data = vec![0x3C; len];
        match region.write(&data, EngineId::Query) {
            Ok(slot) => live.push((slot, data)),
            Err(Error::CapacityExceeded { .. }) => {}
            Err(error) => panic!("write after open: {error}"),
        }
    }
    region
        .check_consistency()
        .unwrap_or_else(|error| panic!("inconsistent after use: {error}"));
    drop(region);
    let region = OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY).unwrap();
    assert!(
        region.recovery().dropped.is_empty(),
        "a clean reopen dropped {:?}",
        region.recovery().dropped
    );
    for (slot, data) in &live {
        assert_eq!(region.read(*slot).unwrap(), data.as_slice(), "slot {slot}");
    }
    assert_eq!(region.live_slot_count(), live.len());
}
