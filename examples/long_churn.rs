//! Churn of long payloads: a live set of 64 MiB of payloads between 96 KiB
//! and 1 MiB (log-uniform), then 20 000 operations that each free a random
//! live slot and write a new one. Prints the rate, `used_bytes / live` and
//! `st_blocks / live`.
//!
//! Long payloads written at the end of the region go in with `pwrite` and
//! are punched at once when freed (docs/FORMAT.md, "giving space back");
//! this measures what that costs against the short-payload `churn` of
//! `overflow-region bench`.
//!
//! ```text
//! cargo run --release --example long_churn
//! ```

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use overflow_region::{EngineId, OverflowRegion};

const LIVE: usize = 64 << 20;
const OPS: usize = 20_000;
const SIZES: (f64, f64) = ((96 << 10) as f64, (1 << 20) as f64);

/// xorshift64: a fixed sequence, so every run does the same operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn size(&mut self) -> usize {
        let (lo, hi) = SIZES;
        let t = (self.next() % 10_000) as f64 / 10_000.0;
        (lo * (hi / lo).powf(t)) as usize
    }
}

fn main() -> overflow_region::Result<()> {
    let dir = tempfile_dir();
    let path = dir.join("region");
    let data: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 + 7) as u8).collect();
    let mut region = OverflowRegion::open_with_config(&path, 64 << 20, 1 << 30)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live = Vec::new();
    let mut live_bytes = 0;
    while live_bytes < LIVE {
        let len = rng.size();
        live.push((region.write(&data[..len], EngineId::Vector)?, len));
        live_bytes += len;
    }
    let started = Instant::now();
    for _ in 0..OPS {
        let victim = (rng.next() >> 33) as usize % live.len();
        let (slot, len) = live.swap_remove(victim);
        region.free(slot)?;
        live_bytes -= len;
        let len = rng.size();
        live.push((region.write(&data[..len], EngineId::Vector)?, len));
        live_bytes += len;
    }
    let secs = started.elapsed().as_secs_f64();
    region.sync()?;
    let blocks = std::fs::metadata(&path)
        .map_err(|e| io_error(&path, e))?
        .blocks()
        * 512;
    println!(
        "{OPS} ops of long churn in {secs:.2} s ({:.1} k/s), used/live {:.3}, st_blocks/live {:.3}",
        OPS as f64 / secs / 1e3,
        region.used_bytes() as f64 / live_bytes as f64,
        blocks as f64 / live_bytes as f64
    );
    drop(region);
    std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    Ok(())
}

/// A fresh directory under the system temp directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("long-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the temp directory is writable");
    dir
}

fn io_error(path: &std::path::Path, source: std::io::Error) -> overflow_region::Error {
    overflow_region::Error::Io {
        path: path.to_owned(),
        operation: "stat",
        source,
    }
}
