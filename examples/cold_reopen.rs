//! Reopen cost of a large region with the page cache dropped: writes COUNT
//! payloads of SIZE bytes (default 4096 × 1 MiB, 4 GiB), syncs, closes,
//! then three times drops the page cache (`sync; echo 3 >
//! /proc/sys/vm/drop_caches`, which needs root; without it the reopens are
//! warm, and it says so) and times `open`.
//!
//! ```text
//! cargo run --release --example cold_reopen -- [COUNT [SIZE [DIR [--killed]]]]
//! ```
//!
//! With `--killed` the writing is done by a child process that aborts
//! right after its `sync` (as a kill -9 would end it: no close), so the
//! reopens find what a crash on the same boot leaves.

use std::time::Instant;

use overflow_region::{EngineId, OverflowRegion};

/// Set (to the scratch directory) in the writer child of `--killed`.
const CHILD: &str = "COLD_REOPEN_CHILD";

fn drop_caches() -> bool {
    let synced = std::process::Command::new("sync").status().is_ok();
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() -> overflow_region::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(4096, |a| a.parse().expect("COUNT"));
    let size: usize = args.next().map_or(1 << 20, |a| a.parse().expect("SIZE"));
    let dir = match std::env::var_os(CHILD) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => args
            .next()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("cold-reopen-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let killed = args.next().is_some_and(|arg| arg == "--killed");
    let path = dir.join("region");
    let max = (count * (size + 64)).next_power_of_two().max(64 << 20) * 2;
    let write = || -> overflow_region::Result<OverflowRegion> {
        let mut region = OverflowRegion::open_with_config(&path, 64 << 20, max)?;
        let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        for _ in 0..count {
            region.write(&data, EngineId::Query)?;
        }
        region.sync()?;
        Ok(region)
    };
    if std::env::var_os(CHILD).is_some() {
        let region = write()?;
        // Ends the process as a kill -9 would: no destructor runs.
        std::mem::forget(region);
        std::process::abort();
    }
    if killed {
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([count.to_string(), size.to_string()])
            .arg(dir.parent().expect("scratch directory's parent"))
            .env(CHILD, &dir)
            .status()
            .expect("run the writer");
        assert!(!status.success(), "the writer aborts after its sync");
    } else {
        drop(write()?);
    }
    for run in 1..=3 {
        let cold = drop_caches();
        let started = Instant::now();
        let region = OverflowRegion::open_with_config(&path, 64 << 20, max)?;
        let took = started.elapsed();
        assert_eq!(region.live_slot_count(), count);
        let report = region.recovery();
        println!(
            "run {run}: {} open of {count} x {size} B: {:.1} ms (walk {:.1} ms, header pages prefetched: {}, payloads verified: {}, trusted as this boot's: {})",
            if cold {
                "cold"
            } else {
                "warm (could not drop the page cache)"
            },
            took.as_secs_f64() * 1e3,
            report.duration.as_secs_f64() * 1e3,
            report.header_pages_prefetched,
            report.payloads_verified,
            report.trusted_same_boot,
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove scratch directory");
    Ok(())
}
