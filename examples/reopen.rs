//! Recovery speed: writes 1 M slots of 16 to 256 bytes, closes the region,
//! and times `open`, which rebuilds every slot from the file (the checksum
//! of every header included; payloads are checked only after a reboot, so
//! this open, on the boot that wrote the file, reads headers only). Best of
//! five.
//!
//! ```sh
//! cargo run --release --example reopen [-- DIR]
//! ```

use std::time::{Duration, Instant};

use overflow_region::{EngineId, OverflowRegion};

fn main() -> overflow_region::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("reopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("region");
    const SLOTS: usize = 1_000_000;
    let data = vec![7u8; 256];
    {
        let mut region = OverflowRegion::open_with_config(&path, 64 << 20, 1 << 30)?;
        for i in 0..SLOTS {
            region.write(&data[..16 + i % 241], EngineId::ALL[i % 7])?;
        }
        region.sync()?;
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let region = OverflowRegion::open_with_config(&path, 64 << 20, 1 << 30)?;
        let took = started.elapsed();
        assert_eq!(region.live_slot_count(), SLOTS);
        assert!(region.recovery().dropped.is_empty());
        best = best.min(took);
        println!(
            "open with {} slots ({} MiB used): {:.1} ms (walk {:.1} ms)",
            region.live_slot_count(),
            region.used_bytes() >> 20,
            took.as_secs_f64() * 1e3,
            region.recovery().duration.as_secs_f64() * 1e3
        );
    }
    println!("best: {:.1} ms", best.as_secs_f64() * 1e3);
    std::fs::remove_dir_all(&dir).expect("remove scratch directory");
    Ok(())
}
