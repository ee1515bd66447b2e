//! Reopen cost of a large region with the page cache dropped: writes COUNT
//! payloads of SIZE bytes (default 4096 × 1 MiB, 4 GiB), syncs, closes,
//! then three times drops the page cache (`sync; echo 3 >
//! /proc/sys/vm/drop_caches`, which needs root; without it the reopens are
//! warm, and it says so) and times `open`.
//!
//! ```text
//! cargo run --release --example cold_reopen -- [COUNT [SIZE [DIR]]]
//! ```

use std::time::Instant;

use overflow_region::{EngineId, OverflowRegion};

fn drop_caches() -> bool {
    let synced = std::process::Command::new("sync").status().is_ok();
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() -> overflow_region::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(4096, |a| a.parse().expect("COUNT"));
    let size: usize = args.next().map_or(1 << 20, |a| a.parse().expect("SIZE"));
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("cold-reopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("region");
    let max = (count * (size + 64)).next_power_of_two().max(64 << 20) * 2;
    {
        let mut region = OverflowRegion::open_with_config(&path, 64 << 20, max)?;
        let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        for _ in 0..count {
            region.write(&data, EngineId::Query)?;
        }
        region.sync()?;
    }
    for run in 1..=3 {
        let cold = drop_caches();
        let started = Instant::now();
        let region = OverflowRegion::open_with_config(&path, 64 << 20, max)?;
        let took = started.elapsed();
        assert_eq!(region.live_slot_count(), count);
        let report = region.recovery();
        println!(
            "run {run}: {} open of {count} x {size} B: {:.1} ms (walk {:.1} ms, payloads verified: {}, trusted as this boot's: {})",
            if cold {
                "cold"
            } else {
                "warm (could not drop the page cache)"
            },
            took.as_secs_f64() * 1e3,
            report.duration.as_secs_f64() * 1e3,
            report.payloads_verified,
            report.trusted_same_boot,
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove scratch directory");
    Ok(())
}
