//! Heap memory per slot: writes SLOTS slots of 16 bytes (default 1 M),
//! frees every second one, closes, and reopens under a counting allocator:
//! prints the peak heap during the open and the heap the open region keeps,
//! per slot handed out, and as a cross-check from the kernel's side the
//! peak resident memory of the open beyond the file's pages (`VmHWM`, reset
//! before the open, less the file pages and anonymous memory resident
//! before it; Linux only).
//!
//! ```text
//! cargo run --release --example memory_per_slot -- [SLOTS [DIR]]
//! ```

use std::time::Instant;

use overflow_region::{EngineId, OverflowRegion};

#[path = "../tests/common/counting.rs"]
mod counting;

fn main() -> overflow_region::Result<()> {
    let mut args = std::env::args().skip(1);
    let slots: usize = args.next().map_or(1_000_000, |a| a.parse().expect("SLOTS"));
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("memory-per-slot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("region");
    let max = 1usize << 40;
    {
        let mut region = OverflowRegion::open_with_config(&path, 64 << 20, max)?;
        for _ in 0..slots {
            region.write(&[7u8; 16], EngineId::Query)?;
        }
        for slot in (0..slots).step_by(2) {
            region.free(slot)?;
        }
    }
    let anon_before = status_kib("RssAnon");
    // Resets VmHWM to the current resident size.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let started = Instant::now();
    let (region, peak, kept) =
        counting::measure(|| OverflowRegion::open_with_config(&path, 64 << 20, max));
    let took = started.elapsed();
    let region = region?;
    let count = region.slot_count().max(1);
    println!(
        "reopen of {} slot indices ({} live) in {:.0} ms: peak heap {:.1} B per slot, kept {:.1} B per slot",
        region.slot_count(),
        region.live_slot_count(),
        took.as_secs_f64() * 1e3,
        peak as f64 / count as f64,
        kept as f64 / count as f64,
    );
    if let (true, Some(hwm), Some(file), Some(anon)) = (
        hwm_reset,
        status_kib("VmHWM"),
        status_kib("RssFile"),
        anon_before,
    ) {
        let beyond = hwm.saturating_sub(file + anon) * 1024;
        println!(
            "peak resident beyond the file's pages: {:.1} B per slot",
            beyond as f64 / count as f64
        );
    }
    drop(region);
    std::fs::remove_dir_all(&dir).expect("remove scratch directory");
    Ok(())
}

/// A `kB` figure of /proc/self/status.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
