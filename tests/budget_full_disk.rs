//! The budget against a disk that fills during a growth, from a review:
//! a failed `fallocate` may extend the file part of the way, with blocks;
//! while a reader maps the file the length is not put back, and the blocks
//! must not stay outside the budget. Runs as root on a small ext4 it makes
//! (skipped otherwise, with the reason printed).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use overflow_region::{EngineId, Error, MemoryTuning, SpillDir, SpillMode};

const MIB: usize = 1 << 20;

#[path = "common/mounted.rs"]
mod mounted;
use mounted::Mounted;

/// Fills the file system holding `dir` but for about `room` bytes.
fn fill_but(dir: &Path, room: u64) {
    let stat = rustix_free(dir);
    let mut file = File::create(dir.join("filler")).unwrap();
    let chunk = vec![0x5Au8; 64 << 10];
    let mut left = stat.saturating_sub(room);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if file.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    file.sync_all().unwrap();
}

fn rustix_free(dir: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    parts.next().unwrap() * parts.next().unwrap()
}

fn lengths_and_blocks(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_str().unwrap().starts_with("core-"))
        .map(|entry| {
            let metadata = entry.metadata().unwrap();
            (metadata.len(), metadata.blocks() * 512)
        })
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

#[test]
fn a_growth_that_fills_the_disk_leaves_the_budget_charging_what_the_files_hold() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !is_root {
        eprintln!("skipped: needs root to mount a small ext4");
        return;
    }
    let mounted = match Mounted::make("ext4") {
        Ok(mounted) => mounted,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let dir = mounted.mount_point.join("spill");
    let tuning = MemoryTuning {
        overflow_initial_bytes: 256 << 10,
        overflow_max_bytes: 256 * MIB,
        ..MemoryTuning::default()
    };
    let spill = SpillDir::open(&dir, 1, &tuning, SpillMode::Ephemeral, 128 << 20).unwrap();
    let reader = spill.open_reader(0).unwrap();
    fill_but(&mounted.mount_point, 2 * MIB as u64);
    let big = vec![3u8; 6 * MIB];
    let result = spill.with_core(0, |region| region.write(&big, EngineId::Query));
    assert!(
        matches!(&result, Err(Error::Io { .. })),
        "a write past the free space: {result:?}"
    );
    let (lengths, blocks) = lengths_and_blocks(&dir);
    eprintln!(
        "budget_used {} lengths {lengths} blocks {blocks} used_disk_space {}",
        spill.budget_used(),
        spill.used_disk_space()
    );
    assert!(
        blocks <= spill.budget_used() + (64 << 10),
        "the files occupy {blocks} bytes of disk ({lengths} long) while the budget charges {}",
        spill.budget_used()
    );
    // The file may stay longer than the region uses (a reader maps it, so
    // it is not cut), but holds no blocks there.
    assert!(lengths >= spill.budget_used());
    drop(reader);
}
