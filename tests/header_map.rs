//! The header map next to a region file (`<file>.headers`): written at
//! `sync` and at close, read at open to ask for every header page at once.
//! It is advice: a damaged, foreign or missing map changes nothing the
//! open recovers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use overflow_region::{EngineId, MemoryTuning, OverflowRegion, SpillDir, SpillMode};

const KIB: usize = 1 << 10;

fn map_path(region: &Path) -> PathBuf {
    let mut name = region.as_os_str().to_owned();
    name.push(".headers");
    PathBuf::from(name)
}

/// 64 payloads of 64 KiB, every fourth freed: headers 16 pages apart.
fn fill(path: &Path) -> (OverflowRegion, BTreeMap<usize, Vec<u8>>) {
    let mut region = OverflowRegion::open_with_config(path, 1 << 20, 64 << 20).unwrap();
    let mut kept = BTreeMap::new();
    for i in 0..64u8 {
        let payload = vec![i; 64 * KIB];
        let slot = region.write(&payload, EngineId::Query).unwrap();
        if i % 4 == 3 {
            region.free(slot).unwrap();
        } else {
            kept.insert(slot, payload);
        }
    }
    (region, kept)
}

fn contents(region: &OverflowRegion) -> BTreeMap<usize, Vec<u8>> {
    region
        .live_slots()
        .map(|entry| (entry.slot, region.read(entry.slot).unwrap().to_vec()))
        .collect()
}

/// The map is written by `sync` (so it is there after a kill -9 that
/// follows), and the next open asks for the pages it names: one per live
/// extent's header at least.
#[test]
fn a_sync_writes_the_map_and_the_next_open_prefetches_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let (region, kept) = fill(&path);
    assert!(!map_path(&path).exists(), "no map before the first sync");
    region.sync().unwrap();
    assert!(map_path(&path).exists(), "sync writes the map");
    drop(region);

    let region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20).unwrap();
    let prefetched = region.recovery().header_pages_prefetched;
    assert!(
        prefetched >= kept.len() as u64,
        "{prefetched} pages prefetched for {} live extents",
        kept.len()
    );
    assert!(
        prefetched < 64 * 16 / 2,
        "{prefetched} pages: not the whole file"
    );
    assert_eq!(contents(&region), kept);
}

/// A damaged map, another file's map, or no map: the open recovers the
/// same slots and prefetches nothing.
#[test]
fn a_map_that_does_not_check_out_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let (region, kept) = fill(&path);
    drop(region);
    let good = std::fs::read(map_path(&path)).unwrap();

    let other = dir.path().join("other");
    drop(fill(&other).0);
    let foreign = std::fs::read(map_path(&other)).unwrap();

    let mut flipped = good.clone();
    flipped[30] ^= 1;
    let cases: [(&str, Option<&[u8]>); 5] = [
        ("damaged", Some(&flipped)),
        ("another file's", Some(&foreign)),
        ("cut short", Some(&good[..good.len() - 1])),
        ("garbage", Some(&[0xA5; 4096])),
        ("missing", None),
    ];
    for (name, map) in cases {
        match map {
            Some(bytes) => std::fs::write(map_path(&path), bytes).unwrap(),
            None => std::fs::remove_file(map_path(&path)).unwrap(),
        }
        let region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20).unwrap();
        assert_eq!(region.recovery().header_pages_prefetched, 0, "{name} map");
        assert!(region.recovery().dropped.is_empty(), "{name} map");
        assert_eq!(contents(&region), kept, "{name} map");
        // The close writes a good map again.
        drop(region);
        assert_eq!(
            std::fs::read(map_path(&path)).unwrap(),
            good,
            "after a {name} map"
        );
    }
}

/// A map with its checksum and its file's identity right, but naming the
/// whole file again and again (4096 ranges over every page), is not used:
/// the open asked the kernel to read the whole file once per range (2^20
/// ranges held an open for 104 s; found in review).
#[test]
fn a_map_that_names_pages_again_and_again_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let (region, kept) = fill(&path);
    drop(region);
    let good = std::fs::read(map_path(&path)).unwrap();
    // Magic and identity from the map the writer made; its ranges replaced.
    let mut hostile = good[..16].to_vec();
    let ranges: u64 = 4096;
    hostile.extend_from_slice(&ranges.to_le_bytes());
    for _ in 0..ranges {
        hostile.extend_from_slice(&0u32.to_le_bytes());
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let crc = crc32c::crc32c(&hostile);
    hostile.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(map_path(&path), &hostile).unwrap();

    let region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20).unwrap();
    let file_pages = region.capacity() as u64 / 4096;
    let prefetched = region.recovery().header_pages_prefetched;
    assert!(
        prefetched <= file_pages,
        "{prefetched} pages prefetched from a file of {file_pages}"
    );
    assert_eq!(contents(&region), kept);
}

/// An ephemeral spill directory writes no maps, and removes those a
/// persistent run left next to its region files.
#[test]
fn an_ephemeral_spill_directory_keeps_no_maps() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = MemoryTuning {
        overflow_initial_bytes: 1 << 20,
        overflow_max_bytes: 64 << 20,
        ..MemoryTuning::default()
    };
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let spill = SpillDir::open(dir.path(), 2, &tuning, SpillMode::Persistent, 16 << 20).unwrap();
    spill
        .with_core(1, |region| {
            region.write(&[1; 5000], EngineId::Query)?;
            region.sync()
        })
        .unwrap();
    drop(spill);
    assert_eq!(
        names(dir.path()),
        ["core-0", "core-0.headers", "core-1", "core-1.headers"]
    );

    // What a crash in the middle of writing a map leaves.
    std::fs::write(dir.path().join("core-1.headers.new"), b"half").unwrap();
    let spill = SpillDir::open(dir.path(), 2, &tuning, SpillMode::Ephemeral, 16 << 20).unwrap();
    assert_eq!(
        names(dir.path()),
        ["core-0", "core-1"],
        "the old maps are removed"
    );
    spill
        .with_core(0, |region| {
            region.write(&[2; 5000], EngineId::Query)?;
            region.sync()
        })
        .unwrap();
    assert_eq!(names(dir.path()), ["core-0", "core-1"], "sync writes none");
    drop(spill);
    assert!(names(dir.path()).is_empty());
}

/// A map that cannot be written (here a directory is in the way of its
/// temporary file) fails nothing: `sync` and the close succeed, and the
/// next open recovers every slot without prefetching.
#[test]
fn a_map_that_cannot_be_written_fails_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut blocked = map_path(&path).into_os_string();
    blocked.push(".new");
    std::fs::create_dir(&blocked).unwrap();
    let (region, kept) = fill(&path);
    region.sync().unwrap();
    drop(region);
    assert!(!map_path(&path).exists());
    let region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20).unwrap();
    assert_eq!(region.recovery().header_pages_prefetched, 0);
    assert_eq!(contents(&region), kept);
}

/// Runs `work` on a thread and fails the test if it has not returned
/// within 20 s (a FIFO opened in blocking mode waits for good).
fn returns_in_time(what: &str, work: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    assert!(
        finished
            .recv_timeout(std::time::Duration::from_secs(20))
            .is_ok(),
        "{what} did not return"
    );
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// Not a regular file where the map goes, nor one longer than any map (a
/// sparse 1 GiB file, once read whole): the open ignores it, without
/// blocking on a FIFO or reading a gigabyte. A symbolic link is not
/// followed. Found in review: the FIFO hung the open for good.
#[test]
fn a_map_that_is_not_a_regular_file_of_a_map_s_size_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let (region, kept) = fill(&path);
    drop(region);
    let good = std::fs::read(map_path(&path)).unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, &good).unwrap();
    for case in ["fifo", "huge", "link"] {
        std::fs::remove_file(map_path(&path)).unwrap();
        match case {
            "fifo" => mkfifo(&map_path(&path)),
            "huge" => std::fs::File::create(map_path(&path))
                .unwrap()
                .set_len(1 << 30)
                .unwrap(),
            _ => std::os::unix::fs::symlink(&target, map_path(&path)).unwrap(),
        }
        let (path, kept) = (path.clone(), kept.clone());
        returns_in_time(&format!("an open with a {case} map"), move || {
            let region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20).unwrap();
            assert_eq!(region.recovery().header_pages_prefetched, 0, "{case} map");
            assert_eq!(contents(&region), kept, "{case} map");
        });
    }
}

/// Whatever lies where the map is written first (`<file>.headers.new`) is
/// replaced, not written through: a FIFO does not block `sync` (found in
/// review: it hung), and a symbolic link does not make `sync` overwrite
/// the file it points to.
#[test]
fn the_map_is_written_into_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut temporary = map_path(&path).into_os_string();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let precious = dir.path().join("precious");
    std::fs::write(&precious, b"keep me").unwrap();
    for case in ["fifo", "link"] {
        let _ = std::fs::remove_file(&temporary);
        match case {
            "fifo" => mkfifo(&temporary),
            _ => std::os::unix::fs::symlink(&precious, &temporary).unwrap(),
        }
        let region_path = path.clone();
        returns_in_time(&format!("a sync with a {case} in the way"), move || {
            let mut region =
                OverflowRegion::open_with_config(&region_path, 1 << 20, 64 << 20).unwrap();
            region.write(b"hello", EngineId::Query).unwrap();
            region.sync().unwrap();
            drop(region);
        });
        assert_eq!(std::fs::read(&precious).unwrap(), b"keep me", "{case}");
        assert!(std::fs::read(map_path(&path)).unwrap().len() > 28, "{case}");
    }
}
