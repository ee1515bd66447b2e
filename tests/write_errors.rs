//! A write whose `pwrite` fails is an error, and leaves the region as it was.
//!
//! Long payloads at the end of the region go into the file with `pwrite`
//! (not through the mapping, whose stores could fault where `pwrite` says
//! `ENOSPC`). To make `pwrite` fail without filling a disk, the test runs
//! itself again as a child process under a 16 MiB file-size limit
//! (`ulimit -f`, with `SIGXFSZ` ignored): past 16 MiB `pwrite` fails with
//! `EFBIG`, while stores through the mapping of the file (made 64 MiB long
//! by the parent) still work.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use overflow_region::{EngineId, Error, OverflowRegion};

const MIB: usize = 1 << 20;
/// Set in the child's environment: the file to use.
const CHILD_FILE: &str = "OVERFLOW_WRITE_ERRORS_FILE";

fn payload(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ (seed as u8).wrapping_mul(31))
        .collect()
}

#[test]
fn a_failed_pwrite_is_an_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    // Made here, 64 MiB long from the start: the child's limit is for
    // `pwrite`, not for growing the file.
    drop(OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap());
    // Zeros written over all but the first MiB (past the chain, which ends
    // at 4096 with an END tag or zeros): ext4 reports allocated but never
    // written blocks as holes, which the child would refill with `pwrite`
    // before its long writes and fail there instead.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for offset in (MIB..64 * MIB).step_by(MIB) {
        file.write_all_at(&vec![0; MIB], offset as u64).unwrap();
    }
    drop(file);
    let exe = std::env::current_exe().unwrap();
    // dash's `ulimit -f` counts 512-byte blocks: 32768 is 16 MiB.
    let output = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 32768; exec \"$0\" --exact child --ignored --nocapture")
        .arg(&exe)
        .env(CHILD_FILE, &path)
        .output()
        .unwrap();
    // Its output is captured, not interleaved with ours.
    assert!(
        output.status.success(),
        "the child failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // What the child acknowledged survives a reopen without the limit.
    let region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    region.check_consistency().unwrap();
    let written: Vec<usize> = std::fs::read_to_string(dir.path().join("written"))
        .unwrap()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert!(written.len() >= 10, "{written:?}");
    for (seed, &slot) in written.iter().enumerate() {
        assert!(region.read(slot).unwrap() == &payload(seed, MIB)[..]);
    }
}

/// Run by the test above, under the file-size limit.
#[test]
#[ignore = "run as a child by a_failed_pwrite_is_an_error_and_changes_nothing"]
fn child() {
    let path = std::env::var_os(CHILD_FILE).expect("run by the parent test");
    let path = Path::new(&path);
    let mut region = OverflowRegion::open_with_config(path, 64 * MIB, 64 * MIB).unwrap();
    let mut written = Vec::new();
    let failure = loop {
        let (used, capacity) = (region.used_bytes(), region.capacity());
        match region.write(&payload(written.len(), MIB), EngineId::Vector) {
            Ok(slot) => written.push(slot),
            Err(error) => {
                assert_eq!(region.used_bytes(), used, "the failed write took space");
                assert_eq!(region.capacity(), capacity);
                break error;
            }
        }
        assert!(written.len() < 32, "no write failed past the 16 MiB limit");
    };
    match &failure {
        Error::Io {
            operation, source, ..
        } => {
            assert_eq!(*operation, "pwrite");
            assert_eq!(source.raw_os_error(), Some(libc::EFBIG), "{source}");
        }
        other => panic!("expected an I/O error, got {other}"),
    }
    assert!(failure.to_string().contains("pwrite"), "{failure}");
    region.check_consistency().unwrap();
    // Short writes still go through the mapping, past the limit too.
    let short = region.write(b"after", EngineId::Wal).unwrap();
    assert_eq!(region.read(short).unwrap(), b"after");
    for (seed, &slot) in written.iter().enumerate() {
        assert!(region.read(slot).unwrap() == &payload(seed, MIB)[..]);
    }
    region.sync().unwrap();
    let list: String = written.iter().map(|slot| format!("{slot}\n")).collect();
    std::fs::write(path.with_file_name("written"), list).unwrap();
}
