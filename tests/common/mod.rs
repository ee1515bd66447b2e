//! Helpers shared by the integration tests (`mod common;` in each).

// Each test crate uses only some of these.
#![allow(dead_code)]

/// SplitMix64: small, seedable, good enough to pick sizes, slots and bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// SplitMix64's output function: scrambles a 64-bit value.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes 120..136 of a region file: the boot id of the machine its last
/// writer ran on (docs/FORMAT.md).
const BOOT_ID: std::ops::Range<usize> = 120..136;

/// Writes `image` at `path` as a file last written on another boot (its
/// boot id replaced): power loss, or a damaged file found after a restart.
/// Recovery then checks every payload against its checksum, as it does for
/// such a file; a file written on this boot is trusted as the page cache
/// holds it (`OverflowRegion::verify` checks it).
///
/// Only an image whose file header is intact (magic and checksum) is
/// changed: one that is refused must be left as it was, byte for byte.
pub fn write_as_from_another_boot(path: &std::path::Path, image: &[u8]) {
    let mut image = image.to_vec();
    let intact_header = image.len() >= BOOT_ID.end
        && &image[..8] == b"OVFLREGN"
        && crc32c::crc32c(&image[..24]).to_le_bytes() == image[24..28];
    if intact_header {
        image[BOOT_ID].copy_from_slice(b"another boot id!");
    }
    std::fs::write(path, image).unwrap();
}

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::Once;

thread_local! {
    /// True while `catching` runs: panics are recorded, not printed.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Where and why the last caught panic happened.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f`; a panic becomes `Err("panicked at <file:line>: <message>")`.
pub fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                LAST_PANIC.with(|last| *last.borrow_mut() = info.to_string().replace('\n', " "));
            } else {
                previous(info);
            }
        }));
    });
    CATCHING.with(|catching| catching.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|catching| catching.set(false));
    result.map_err(|_| LAST_PANIC.with(|last| last.take()))
}

/// A scratch directory named `prefix...`, in memory where the machine has
/// one (`/dev/shm`): tests that write thousands of small files spare the
/// disk the write-back.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// A tag: length in granules (bits 0..32), state (32..40), and the low 24
/// bits of the CRC32C of those 5 bytes (40..64).
pub fn tag_word(state: u8, len: u64) -> u64 {
    let body = (u64::from(state) << 32) | ((len / 16) & 0xFFFF_FFFF);
    let check = u64::from(crc32c::crc32c(&body.to_le_bytes()[..5]) & 0xFF_FFFF);
    (check << 40) | body
}

/// A 32-byte live extent header with correct checksums over `payload`.
pub fn live_header(
    extent_len: u64,
    slot: u32,
    generation: u32,
    engine: u8,
    payload: &[u8],
) -> [u8; 32] {
    live_header_claiming(
        extent_len,
        slot,
        generation,
        payload.len() as u64,
        engine,
        crc32c::crc32c(payload),
    )
}

/// A 32-byte live extent header saying anything, with a correct header CRC.
pub fn live_header_claiming(
    extent_len: u64,
    slot: u32,
    generation: u32,
    payload_len: u64,
    engine: u8,
    payload_crc: u32,
) -> [u8; 32] {
    let mut header = [0u8; 32];
    header[0..8].copy_from_slice(&tag_word(b'L', extent_len).to_le_bytes());
    header[8..12].copy_from_slice(&slot.to_le_bytes());
    header[12..16].copy_from_slice(&generation.to_le_bytes());
    header[16..22].copy_from_slice(&payload_len.to_le_bytes()[..6]);
    header[22] = engine;
    header[24..28].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}
