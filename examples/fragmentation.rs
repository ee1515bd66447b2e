//! The fragmentation bound of docs/PERFORMANCE.md: mixed-size churn (sizes
//! log-uniform from 16 B to 64 KiB, a steady live set of 32 MiB, 200 k
//! operations), then `compact`. Prints `used_bytes / live_bytes`, and the
//! disk blocks the file holds (`st_blocks`) per live byte, before and after.
//! The third argument, `off`, opens the region with automatic compaction
//! off (`MemoryTuning::overflow_auto_compact`).
//!
//! ```sh
//! cargo run --release --example fragmentation [-- DIR [PUNCH_THRESHOLD_BYTES [on|off]]]
//! ```

use std::os::unix::fs::MetadataExt;

use overflow_region::{EngineId, MemoryTuning, OverflowRegion};

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

fn main() -> overflow_region::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("fragmentation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("region");
    let punch = std::env::args()
        .nth(2)
        .map(|threshold| {
            threshold
                .parse()
                .expect("a hole punching threshold in bytes")
        })
        .unwrap_or(MemoryTuning::DEFAULT_PUNCH_HOLE_BYTES);
    let auto_compact = std::env::args().nth(3).is_none_or(|auto| auto != "off");
    let tuning = MemoryTuning {
        overflow_initial_bytes: 1 << 20,
        overflow_max_bytes: 1 << 30,
        overflow_punch_hole_bytes: punch,
        overflow_auto_compact: auto_compact,
        ..MemoryTuning::default()
    };
    println!("hole punching threshold: {punch} bytes, automatic compaction {auto_compact}");
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning)?;
    let mut rng = Rng(42);
    let data = vec![0x5Au8; 1 << 16];
    let mut live: Vec<usize> = Vec::new();
    const LIVE_TARGET: usize = 32 << 20;
    while region.live_bytes() < LIVE_TARGET {
        live.push(region.write(&data[..rng.size()], EngineId::Query)?);
    }
    let started = std::time::Instant::now();
    for _ in 0..100_000 {
        // One free and one write per round: 200 k operations.
        let victim = live.swap_remove(rng.below(live.len()));
        region.free(victim)?;
        live.push(region.write(&data[..rng.size()], EngineId::Query)?);
    }
    let churn = started.elapsed();
    let blocks = |path: &std::path::Path| {
        std::fs::metadata(path)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
    };
    let report = |label: &str, region: &OverflowRegion| {
        let live = region.live_bytes() as f64;
        let stats = region.stats();
        println!(
            "{label:>16}: used/live {:.3}  st_blocks/live {:.3}  file/live {:.3}  free extents {}  punched {:.1} MiB",
            region.used_bytes() as f64 / live,
            blocks(region.path()) as f64 / live,
            region.capacity() as f64 / live,
            stats.free_extents,
            stats.punched_bytes as f64 / (1 << 20) as f64,
        );
    };
    let stats = region.stats();
    println!(
        "200 k ops of churn in {:.2} s, {} live slots; automatic compaction moved {} extents, {:.1} MiB",
        churn.as_secs_f64(),
        live.len(),
        stats.auto_moved_extents,
        stats.auto_moved_bytes as f64 / (1 << 20) as f64
    );
    report("after churn", &region);
    region.sync()?;
    let started = std::time::Instant::now();
    let compacted = region.compact()?;
    println!(
        "compact: {} extents, {:.1} MiB moved in {:.2} s, complete {}",
        compacted.extents_moved,
        compacted.bytes_moved as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64(),
        compacted.complete
    );
    report("after compact", &region);
    drop(region);
    std::fs::remove_dir_all(&dir).expect("remove scratch directory");
    Ok(())
}
