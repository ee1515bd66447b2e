//! Heap memory per slot: writes SLOTS slots of 16 bytes (default 1 M),
//! frees every second one, closes, and reopens under a counting allocator:
//! prints the peak heap during the open and the heap the open region keeps,
//! per slot handed out.
//!
//! ```text
//! cargo run --release --example memory_per_slot -- [SLOTS [DIR]]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use overflow_region::{EngineId, OverflowRegion};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let region = OverflowRegion::open_with_config(&path, 64 << 20, max)?;
    let took = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let kept = CURRENT.load(Ordering::Relaxed) - before;
    let count = region.slot_count().max(1);
    println!(
        "reopen of {} slot indices ({} live) in {:.0} ms: peak heap {:.1} B per slot, kept {:.1} B per slot",
        region.slot_count(),
        region.live_slot_count(),
        took.as_secs_f64() * 1e3,
        peak as f64 / count as f64,
        kept as f64 / count as f64,
    );
    drop(region);
    std::fs::remove_dir_all(&dir).expect("remove scratch directory");
    Ok(())
}
