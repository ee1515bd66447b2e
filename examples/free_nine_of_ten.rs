//! The give-back issue's first space scenario: 400 payloads written into
//! `open_with_config(path, 1 MiB, 1 GiB)`, `sync()`, then 9 of every 10
//! freed. Prints the allocated blocks (`st_blocks × 512`) per live payload
//! byte right after the frees, after a `sync()`, and after dropping the
//! region, for 256 KiB, 90 000-byte and 1 MiB payloads. Then the third
//! scenario: a region filled to 256 MiB (64 KiB payloads) and emptied, and
//! its file's length and allocated blocks when the last `free` returns.
//!
//! ```sh
//! cargo run --release --example free_nine_of_ten [-- DIR]
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use overflow_region::{EngineId, OverflowRegion};

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

fn main() -> overflow_region::Result<()> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "/tmp".to_owned());
    let dir = tempfile::tempdir_in(base).expect("temporary directory");
    for size in [256 << 10, 90_000, 1 << 20] {
        let path = dir.path().join(format!("region-{size}"));
        let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 1 << 30)?;
        let payload = vec![0xA5u8; size];
        let slots: Vec<usize> = (0..400)
            .map(|_| region.write(&payload, EngineId::Query))
            .collect::<overflow_region::Result<_>>()?;
        region.sync()?;
        for (i, &slot) in slots.iter().enumerate() {
            if i % 10 != 0 {
                region.free(slot)?;
            }
        }
        let live = region.live_bytes() as f64;
        let after_frees = allocated(&path) as f64 / live;
        region.sync()?;
        let after_sync = allocated(&path) as f64 / live;
        drop(region);
        let after_drop = allocated(&path) as f64 / live;
        println!(
            "{size:>8} B payloads: allocated / live {after_frees:.2} after the frees, \
             {after_sync:.2} after sync, {after_drop:.2} after drop"
        );
    }
    let path = dir.path().join("emptied");
    let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 1 << 30)?;
    let payload = vec![0x5Au8; 64 << 10];
    let slots: Vec<usize> = (0..4096)
        .map(|_| region.write(&payload, EngineId::Query))
        .collect::<overflow_region::Result<_>>()?;
    let full = std::fs::metadata(&path).expect("stat").len();
    for slot in slots {
        region.free(slot)?;
    }
    let len = std::fs::metadata(&path).expect("stat").len();
    println!(
        "256 MiB of payloads written (file {} MiB), all freed: file {} KiB long, {} KiB allocated",
        full >> 20,
        len >> 10,
        allocated(&path) >> 10
    );
    Ok(())
}
