//! `RegionFile`, the read-only look the command-line tool uses, on hostile
//! paths and files: what is not a regular file is refused without a read (a
//! FIFO does not hang it), a file whose header is foreign is refused after
//! its header only, memory follows the extents found and not the numbers the
//! file states, and on damaged files it finds what a writer's open finds.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use overflow_region::{EngineId, Error, OverflowRegion, RegionFile};

mod common;

fn open(path: &Path) -> OverflowRegion {
    OverflowRegion::open_with_config(path, 1 << 20, 64 << 20).expect("open region")
}

/// `RegionFile::open` in a thread, failing the test (instead of hanging it)
/// if it has not returned within ten seconds.
fn open_within_ten_seconds(path: &Path) -> overflow_region::Result<RegionFile> {
    let (send, receive) = mpsc::channel();
    let owned = path.to_owned();
    std::thread::spawn(move || {
        let _ = send.send(RegionFile::open(&owned));
    });
    receive
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            panic!(
                "RegionFile::open({}) still blocked after 10 s",
                path.display()
            )
        })
}

fn refused_as(result: overflow_region::Result<RegionFile>, words: &str) {
    match result {
        Err(Error::NotAFile { kind, .. }) => {
            assert!(kind.contains(words), "kind {kind:?} lacks {words:?}")
        }
        other => panic!("expected NotAFile ({words}), got {other:?}"),
    }
}

#[test]
fn a_directory_is_refused_as_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let result = RegionFile::open(dir.path());
    let message = result.as_ref().map(|_| ()).unwrap_err().to_string();
    assert!(!message.contains("read failed"), "{message}");
    refused_as(result, "a directory");
}

#[test]
fn a_fifo_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    refused_as(open_within_ten_seconds(&fifo), "a FIFO");
}

#[test]
fn a_character_device_is_refused_as_one() {
    refused_as(
        open_within_ten_seconds(Path::new("/dev/null")),
        "a character device",
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing here");
    match RegionFile::open(&path) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("expected Io(NotFound), got {other:?}"),
    }
}

/// A file with one intact slot, whose header is then rewritten by `patch`
/// (the 32 bytes at offset 4096) and given a correct header checksum again.
fn with_patched_first_header(dir: &Path, patch: impl FnOnce(&mut [u8; 32])) -> PathBuf {
    let path = dir.join("patched");
    let mut region = open(&path);
    let slot = region
        .write(b"one intact-looking slot", EngineId::Wal)
        .unwrap();
    assert_eq!(slot, 0);
    drop(region);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut header = [0u8; 32];
    file.read_exact_at(&mut header, 4096).unwrap();
    patch(&mut header);
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 4096).unwrap();
    path
}

/// Issue 16, item 4: one intact-looking header with a slot index near 2^32
/// in a file that records a huge maximum capacity used to make the walk
/// allocate a table of 2^32 entries (16 GiB). It is now one entry.
#[test]
fn a_slot_index_near_2_pow_32_costs_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let far = u32::MAX - 1;
    let path = with_patched_first_header(dir.path(), |header| {
        header[8..12].copy_from_slice(&far.to_le_bytes())
    });
    // The recorded maximum capacity (offset 88, outside any checksum): a
    // file this large could have handed out index `far`.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&(1u64 << 47).to_le_bytes(), 88).unwrap();
    drop(file);

    let file = RegionFile::open(&path).unwrap();
    assert!(file.is_intact(), "{:?}", file.recovery());
    assert_eq!(file.slots().len(), 1);
    assert_eq!(file.slots()[0].slot, far as usize);
    assert_eq!(file.read(far as usize).unwrap(), b"one intact-looking slot");
    assert_eq!(file.slot_count(), far as usize + 1);
    assert!(matches!(file.slot(7), Err(Error::SlotFree { slot: 7 })));
    assert_eq!(file.stats().max_capacity, 1 << 47);

    // Whatever capacity the file records, the slot is kept (its checksums
    // hold), as a writer's open keeps it: memory follows the one header
    // found (docs/FORMAT.md, recovery step 5).
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&(64u64 << 20).to_le_bytes(), 88).unwrap();
    drop(file);
    let file = RegionFile::open(&path).unwrap();
    assert_eq!(file.slots().len(), 1);
    assert!(file.is_intact());
}

/// `stats().max_capacity` is the capacity the file records, not its size.
#[test]
fn stats_report_the_recorded_maximum_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 48 << 20).unwrap();
    region.write(&[5; 1000], EngineId::Vector).unwrap();
    let file = RegionFile::open(&path).unwrap();
    assert_eq!(file.stats().max_capacity, 48 << 20);
    assert_eq!(file.stats().file_size, region.capacity() as u64);
    assert!(file.allocated_bytes() > 0);
}

/// A payload changed after the walk is not returned as the slot's bytes.
#[test]
fn read_checks_the_bytes_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let slot = region.write(&[9; 300], EngineId::Query).unwrap();
    let offset = region.slot_ref(slot).unwrap().offset();
    drop(region);
    let file = RegionFile::open(&path).unwrap();
    assert_eq!(file.read(slot).unwrap(), vec![9; 300]);
    let raw = OpenOptions::new().write(true).open(&path).unwrap();
    raw.write_all_at(&[0xee; 4], offset + 32 + 100).unwrap();
    assert!(matches!(
        file.read(slot),
        Err(Error::SlotChanged { slot: 0, .. })
    ));
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// On many damaged copies of a churned file, `RegionFile` finds exactly
/// what a writer's open finds: the same slots with the same bytes, and the
/// same extents dropped for the same reasons.
#[test]
fn it_finds_what_a_writers_open_finds() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut region = open(&original);
    let mut live = Vec::new();
    for i in 0..400 {
        let len = [0, 7, 64, 300, 5000, 70_000][(rng.next() % 6) as usize];
        let engine = EngineId::ALL[i % EngineId::ALL.len()];
        live.push(region.write(&vec![i as u8; len], engine).unwrap());
        if rng.next().is_multiple_of(3) {
            let victim = live.swap_remove((rng.next() % live.len() as u64) as usize);
            region.free(victim).unwrap();
        }
    }
    drop(region);
    let bytes = fs::read(&original).unwrap();

    let mut rounds_with_damage = 0;
    for round in 0..60 {
        let mut damaged = bytes.clone();
        for _ in 0..1 + round % 4 {
            let at = 4096 + (rng.next() % (damaged.len() as u64 - 4096)) as usize;
            // Hit headers often: most of the file is payload.
            let at = if rng.next().is_multiple_of(2) {
                at & !15
            } else {
                at
            };
            damaged[at] ^= 1 << (rng.next() % 8);
        }
        let inspected_path = dir.path().join(format!("inspected-{round}"));
        let opened_path = dir.path().join(format!("opened-{round}"));
        // As found after a reboot: the writer's open then checks every
        // payload, as the tool always does.
        common::write_as_from_another_boot(&inspected_path, &damaged);
        common::write_as_from_another_boot(&opened_path, &damaged);

        let file = RegionFile::open(&inspected_path).unwrap();
        let region = open(&opened_path);
        rounds_with_damage += usize::from(!file.is_intact());
        assert_eq!(
            file.recovery().dropped,
            region.recovery().dropped,
            "round {round}"
        );
        assert_eq!(
            file.slots().len(),
            region.live_slot_count(),
            "round {round}"
        );
        for info in file.slots() {
            assert_eq!(
                file.read(info.slot).unwrap(),
                region.read(info.slot).unwrap(),
                "round {round}, slot {}",
                info.slot
            );
            assert_eq!(region.engine(info.slot).unwrap(), info.engine);
        }
        assert_eq!(file.slot_count(), region.slot_count(), "round {round}");
        let (stats, expected) = (file.stats(), region.stats());
        assert_eq!(stats.live_bytes, expected.live_bytes, "round {round}");
        assert_eq!(stats.used_bytes, expected.used_bytes, "round {round}");
        assert_eq!(stats.engines, expected.engines, "round {round}");
    }
    assert!(
        rounds_with_damage >= 20,
        "{rounds_with_damage} of 60 rounds hit anything"
    );
}
