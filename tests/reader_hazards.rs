//! The cross-thread reader path at its edges: what a reader can and cannot
//! be made to do by the owner's operations and by bad input.

use std::path::Path;
use std::process::Command;

use overflow_region::{Error, OverflowReader, OverflowRegion, SlotRef};

const CHILD_PATH_ENV: &str = "OVERFLOW_REVIEW_CHILD_PATH";

/// Runs the test `name` of this binary in a child process with `path` in
/// `CHILD_PATH_ENV`, and returns its exit status and output.
fn run_child(name: &str, path: &Path) -> (std::process::ExitStatus, String) {
    // 2 GiB of address space: enough for the test, not for a writer's
    // 1 TiB reservation.
    let output = Command::new("sh")
        .args(["-c", "ulimit -v 2097152 && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_PATH_ENV, path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// The file's identity (header bytes 104..112).
fn identity_of(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[104..112].try_into().unwrap())
}

// ---------------------------------------------------------------------------
// A writer that re-initialises an unfinished file must not cut it under a
// reader.

const UNFINISHED_CHILD: &str = "unfinished_file_child_helper";

/// A file whose initialisation was cut short (a valid 136-byte header, no
/// extents) can be opened by a reader. A writer that opens it then starts
/// it again; it used to `set_len(0)` first, without the readers' lock, so
/// the reader's mapped header page lay past the end of the file: its next
/// read raised SIGBUS (here for good, since the writer's initialisation
/// fails after the cut; in a race, for the moment before the header is
/// written again).
#[test]
fn reinitialising_an_unfinished_file_does_not_cut_it_under_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unfinished");
    drop(OverflowRegion::open_with_config(&path, 64 << 10, 64 << 20).unwrap());
    // What an initialisation stopped after its header write leaves.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(136).unwrap();
    drop(file);

    let (status, output) = run_child(UNFINISHED_CHILD, &path);
    assert!(
        status.success(),
        "the child reading the unfinished file died ({status}):\n{output}"
    );
    assert!(output.contains("CHILD DONE"), "{output}");
}

/// Not a test on its own: the child of
/// `reinitialising_an_unfinished_file_does_not_cut_it_under_a_reader`.
/// It maps the unfinished file with a reader, opens a writer on it (which
/// fails for lack of address space) and reads again.
#[test]
#[ignore = "run as a child by reinitialising_an_unfinished_file_does_not_cut_it_under_a_reader"]
fn unfinished_file_child_helper() {
    let Some(path) = std::env::var_os(CHILD_PATH_ENV) else {
        return;
    };
    let path = Path::new(&path);
    let identity = identity_of(path);
    let reader = OverflowReader::open(path).expect("a reader opens the unfinished file");
    let handle = SlotRef::from_parts(identity, 0, 0, 0, 0);
    let mut buf = Vec::new();
    let first = reader.read_into(&handle, &mut buf);
    assert!(matches!(first, Err(Error::SlotChanged { .. })), "{first:?}");

    // The parent limited this process's address space (`ulimit -v`): a
    // writer's 1 TiB reservation fails, after the point where it may cut
    // the file.
    let writer = OverflowRegion::open_with_config(path, 64 << 10, 1 << 40);
    println!("writer open: {:?}", writer.as_ref().map(|_| ()));
    drop(writer);

    // Must be an error, never a signal.
    let second = reader.read_into(&handle, &mut buf);
    println!("read after the writer's open: {second:?}");
    assert!(second.is_err());
    println!("CHILD DONE");
}

// ---------------------------------------------------------------------------
// Bad handles: every safe call returns, never panics, never reads bytes that
// are not the handle's.

/// Handles made of boundary values (offsets and lengths at and near 0, the
/// end of the file, u64::MAX, unaligned; other files' identities; the
/// generations around the counter) are refused by `read_into`, `with_slot`
/// and `OverflowRegion::read_ref`, without a panic; only a real handle
/// reads, and then exactly its bytes.
#[test]
fn made_up_handles_never_panic_and_never_read() {
    use overflow_region::EngineId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("made-up");
    let other_path = dir.path().join("other");
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 64 << 20).unwrap();
    let mut other = OverflowRegion::open_with_config(&other_path, 64 << 10, 64 << 20).unwrap();
    let mut real = Vec::new();
    for i in 0..40u64 {
        let data: Vec<u8> = (0..(i * 37) % 3000).map(|b| (b ^ i) as u8).collect();
        let slot = if i % 3 == 0 {
            region.write_tagged(&data, EngineId::Wal, i + 1).unwrap()
        } else {
            region.write(&data, EngineId::Vector).unwrap()
        };
        real.push((region.slot_ref(slot).unwrap(), data));
    }
    // Some freed, so free headers and stale handles are in the mix.
    for (handle, _) in real.iter().step_by(4) {
        region.free(handle.slot()).unwrap();
    }
    let reader = OverflowReader::open(&path).unwrap();
    let file_len = std::fs::metadata(&path).unwrap().len();
    let identities = [real[0].0.file(), identity_of(&other_path), 0, u64::MAX];
    let offsets = [
        0,
        8,
        104,
        4095,
        4096,
        4097,
        4104,
        real[1].0.offset(),
        real[1].0.offset() + 8,
        real[1].0.offset() + 32,
        file_len - 32,
        file_len - 8,
        file_len,
        file_len + 8,
        1 << 44,
        u64::MAX - 40,
        u64::MAX - 31,
        u64::MAX - 7,
        u64::MAX,
    ];
    let lens = [
        0,
        1,
        real[1].0.len() as u64,
        4096,
        file_len,
        u64::MAX - 40,
        u64::MAX - 31,
        u64::MAX,
    ];
    let generations = [0, 1, real[1].0.generation(), 1 << 32, u64::MAX];
    let mut buf = Vec::new();
    let mut tried = 0u64;
    for &file in &identities {
        for slot in [0u32, 1, 2, 39, 40, u32::MAX] {
            for &generation in &generations {
                for &offset in &offsets {
                    for &len in &lens {
                        let handle = SlotRef::from_parts(file, slot, generation, offset, len);
                        let genuine = real
                            .iter()
                            .find(|(h, _)| *h == handle)
                            .map(|(_, data)| data);
                        tried += 1;
                        match reader.read_into(&handle, &mut buf) {
                            Ok(()) => assert_eq!(
                                Some(&buf),
                                genuine,
                                "{handle:?} read bytes it does not name"
                            ),
                            Err(Error::SlotChanged { .. }) => {}
                            Err(other) => panic!("{handle:?}: {other}"),
                        }
                        let _ = reader.with_slot(&handle, |bytes| bytes.len());
                        if let Ok(bytes) = region.read_ref(&handle) {
                            assert_eq!(Some(&bytes.to_vec()), genuine, "{handle:?}");
                        }
                    }
                }
            }
        }
    }
    // The live real handles still read, the freed ones do not.
    for (i, (handle, data)) in real.iter().enumerate() {
        let result = reader.read_into(handle, &mut buf);
        if i % 4 == 0 {
            assert!(result.is_err(), "freed {handle:?} read");
        } else {
            result.unwrap();
            assert_eq!(&buf, data);
        }
    }
    // A real handle of another region, at the same slot, offset and length
    // as one of this region's: refused by both.
    let twin = &real[1];
    other
        .write(&vec![9u8; twin.1.len()], EngineId::Vector)
        .unwrap();
    let slot = other
        .write(&vec![7u8; twin.1.len()], EngineId::Vector)
        .unwrap();
    let foreign = other.slot_ref(slot).unwrap();
    assert_eq!(
        (foreign.slot(), foreign.len()),
        (twin.0.slot(), twin.0.len())
    );
    assert!(reader.read_into(&foreign, &mut buf).is_err());
    assert!(region.read_ref(&foreign).is_err());
    println!("{tried} made-up handles refused");
}

// ---------------------------------------------------------------------------
// The generation window must be checked against the counter as it was when
// the header was read, not before.

/// A handle made 2^32 writes ago names the same index, place, length and
/// 32-bit generation as the write that is 2^32 writes later. `read_into`
/// refuses it by the counter at 72..80, but it loaded the counter before
/// the header: a reader that loads the counter just before that write's
/// commit and the header just after takes the later tenant for the
/// handle's and returns its bytes. The owner here rewrites one slot in
/// place, each write 2^32 after the tenancy a reader asks for (the counter
/// fast-forwarded as in tests/reader.rs); a reader must never read.
#[test]
fn a_handle_2_pow_32_writes_old_is_refused_even_racing_the_write() {
    use overflow_region::EngineId;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrap-race");
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 1 << 20).unwrap();
    let ring = region.write(&[0xAA; 64], EngineId::Wal).unwrap();
    region.write(&[0xBB; 64], EngineId::Wal).unwrap();
    drop(region);
    let mut bytes = std::fs::read(&path).unwrap();
    let counter = u64::from_le_bytes(bytes[72..80].try_into().unwrap());
    bytes[72..80].copy_from_slice(&((1u64 << 32) + counter).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 1 << 20).unwrap();
    let reader = OverflowReader::open(&path).unwrap();
    let place = region.slot_ref(ring).unwrap();
    // The generation of the owner's next write, published before it.
    let next = AtomicU64::new(place.generation() + 1);
    let stop = AtomicBool::new(false);
    let wrong = std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            let mut buf = Vec::new();
            let mut wrong = 0u64;
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let generation = next.load(Ordering::Acquire) - (1 << 32);
                let stale = SlotRef::from_parts(
                    place.file(),
                    place.slot() as u32,
                    generation,
                    place.offset(),
                    place.len() as u64,
                );
                reads += 1;
                if reader.read_into(&stale, &mut buf).is_ok() {
                    wrong += 1;
                }
            }
            println!("{reads} reads, {wrong} read a tenancy 2^32 writes later");
            wrong
        });
        let start = std::time::Instant::now();
        let mut writes = 0u64;
        while start.elapsed() < std::time::Duration::from_secs(2) {
            for _ in 0..256 {
                region.free(ring).unwrap();
                let slot = region.write(&[writes as u8; 64], EngineId::Wal).unwrap();
                assert_eq!(slot, ring);
                let handle = region.slot_ref(slot).unwrap();
                assert_eq!(handle.offset(), place.offset());
                next.store(handle.generation() + 1, Ordering::Release);
                writes += 1;
            }
        }
        println!("{writes} writes");
        stop.store(true, Ordering::Relaxed);
        reading.join().unwrap()
    });
    assert_eq!(wrong, 0, "a handle 2^32 writes old read a later tenant");
}

// ---------------------------------------------------------------------------
// Punched pages on a full file system that a read fault must allocate on,
// behind another file system's name.

const OVERLAY_CHILD: &str = "stale_reader_on_full_overlay_child_helper";

/// An overlay mount whose upper directory is on a small tmpfs (as in a
/// container whose writable layer is in memory); unmounted on drop.
struct OverlayOnTmpfs {
    dir: tempfile::TempDir,
}

impl OverlayOnTmpfs {
    fn make() -> Result<OverlayOnTmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (lower, upper_fs, mnt) = (
            dir.path().join("lower"),
            dir.path().join("t"),
            dir.path().join("mnt"),
        );
        for d in [&lower, &upper_fs, &mnt] {
            std::fs::create_dir(d).map_err(|e| e.to_string())?;
        }
        let run = |args: &[&str]| -> Result<(), String> {
            let output = Command::new("mount")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
            }
        };
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        run(&["-t", "tmpfs", "-o", "size=8m", "tmpfs", &s(&upper_fs)])?;
        let mounted = OverlayOnTmpfs { dir };
        for d in ["upper", "work"] {
            std::fs::create_dir(upper_fs.join(d)).map_err(|e| e.to_string())?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&lower),
            s(&upper_fs.join("upper")),
            s(&upper_fs.join("work"))
        );
        run(&["-t", "overlay", "overlay", "-o", &options, &s(&mnt)])?;
        Ok(mounted)
    }

    fn mount_point(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for OverlayOnTmpfs {
    fn drop(&mut self) {
        for d in ["mnt", "t"] {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path().join(d))
                .status();
        }
    }
}

/// A reader decides to copy with `pread` instead of through its mapping
/// when the file is on tmpfs (a read fault on a punched page of a full
/// tmpfs raises SIGBUS). On an overlay whose upper layer is tmpfs the file
/// system reports itself as overlayfs, but the mapping is the tmpfs file's:
/// a stale handle whose extent was punched, read on a full file system,
/// killed the reader with SIGBUS. Needs root to mount; skipped otherwise.
#[test]
fn stale_reader_on_a_full_overlay_over_tmpfs_gets_an_error_not_a_signal() {
    let mounted = match OverlayOnTmpfs::make() {
        Ok(mounted) => mounted,
        Err(reason) => {
            eprintln!("skipped: cannot mount an overlay over tmpfs: {reason}");
            return;
        }
    };
    let path = mounted.mount_point().join("r");
    let (status, output) = run_child(OVERLAY_CHILD, &path);
    assert!(
        status.success() && output.contains("CHILD DONE"),
        "the reader on a full overlay over tmpfs died ({status}):\n{output}"
    );
}

/// Not a test on its own: the child of
/// `stale_reader_on_a_full_overlay_over_tmpfs_gets_an_error_not_a_signal`.
#[test]
#[ignore = "run as a child by stale_reader_on_a_full_overlay_over_tmpfs_gets_an_error_not_a_signal"]
fn stale_reader_on_full_overlay_child_helper() {
    use overflow_region::EngineId;
    use std::io::Write;
    let Some(path) = std::env::var_os(CHILD_PATH_ENV) else {
        return;
    };
    let path = Path::new(&path);
    let mut region = OverflowRegion::open_with_config(path, 1 << 20, 16 << 20).unwrap();
    let a = region
        .write(&vec![1u8; 300 << 10], EngineId::Query)
        .unwrap();
    let b = region
        .write(&vec![2u8; 300 << 10], EngineId::Query)
        .unwrap();
    region.write(&[3u8; 100], EngineId::Query).unwrap();
    let stale = region.slot_ref(b).unwrap();
    let reader = OverflowReader::open(path).unwrap();
    region.free(a).unwrap();
    region.free(b).unwrap();
    region.sync().unwrap();
    // Fill the file system.
    let mut filler = std::fs::File::create(path.with_file_name("filler")).unwrap();
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let bytes = vec![0x5A; chunk];
        while filler.write_all(&bytes).is_ok() {}
    }
    let mut buf = Vec::new();
    let result = reader.read_into(&stale, &mut buf);
    println!("stale read on the full file system: {result:?}");
    assert!(matches!(result, Err(Error::SlotChanged { .. })));
    println!("CHILD DONE");
}

// ---------------------------------------------------------------------------
// Readers that copy with `pread` (tmpfs) while the owner's sync stores
// checksum words into the headers they read.

/// On tmpfs a reader loads header words with `pread`, which is not one
/// atomic load: a sync storing a live slot's checksum word (bytes 24..32)
/// at that moment may be read half old, half new. A slot that stays live
/// and in place must read back every time all the same, never
/// `SlotChanged`. The owner writes batches of slots, publishes their
/// handles, and syncs (summing each); readers read the current batch.
/// Automatic compaction is off (it moves live slots, which readers rightly
/// see as `SlotChanged { moved: true }`), and a batch is freed only once
/// no reader holds it.
#[test]
fn live_slots_read_back_every_time_while_sync_sums_them_on_tmpfs() {
    use overflow_region::EngineId;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, RwLock};
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let path = dir.path().join("sums");
    let tuning = overflow_region::MemoryTuning {
        overflow_initial_bytes: 1 << 20,
        overflow_max_bytes: 256 << 20,
        overflow_auto_compact: false,
        ..overflow_region::MemoryTuning::default()
    };
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();
    let reader = OverflowReader::open(&path).unwrap();
    type Batch = Arc<Vec<(SlotRef, u8)>>;
    let batch: RwLock<Batch> = RwLock::new(Arc::new(Vec::new()));
    let stop = AtomicBool::new(false);
    let (failures, reads) = std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            let mut buf = Vec::new();
            let (mut failures, mut reads) = (Vec::new(), 0u64);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let current = batch.read().unwrap().clone();
                for _ in 0..64 {
                    let Some((handle, byte)) = current.get(i % current.len().max(1)) else {
                        break;
                    };
                    i = i.wrapping_add(7);
                    reads += 1;
                    match reader.read_into(handle, &mut buf) {
                        Ok(()) if buf.iter().all(|b| b == byte) && buf.len() == handle.len() => {}
                        Ok(()) => failures.push(format!("{handle:?}: wrong bytes")),
                        Err(error) => failures.push(format!("{handle:?}: {error}")),
                    }
                }
            }
            (failures, reads)
        });
        let start = std::time::Instant::now();
        let mut rounds = 0u64;
        // Batches already taken off the board, freed once no reader holds
        // them (a reader may still be reading one it cloned earlier).
        let mut retired: Vec<(Batch, Vec<usize>)> = Vec::new();
        let mut freed = 0usize;
        // The slots of the batch on the board.
        let mut on_board = Vec::new();
        while start.elapsed() < std::time::Duration::from_secs(2) {
            let mut fresh = Vec::new();
            let mut slots = Vec::new();
            for i in 0..256u64 {
                let byte = (rounds * 256 + i) as u8;
                let slot = region.write(&[byte; 48], EngineId::Wal).unwrap();
                fresh.push((region.slot_ref(slot).unwrap(), byte));
                slots.push(slot);
            }
            let fresh = Arc::new(fresh);
            let old = std::mem::replace(&mut *batch.write().unwrap(), fresh.clone());
            retired.push((old, std::mem::replace(&mut on_board, slots)));
            drop(fresh);
            // Give the reader a moment on the unsummed headers.
            std::thread::yield_now();
            region.sync().unwrap();
            rounds += 1;
            if retired.len() > 64 {
                retired.retain(|(held, slots)| {
                    if Arc::strong_count(held) > 1 {
                        return true;
                    }
                    for &slot in slots {
                        region.free(slot).unwrap();
                    }
                    freed += slots.len();
                    false
                });
            }
        }
        stop.store(true, Ordering::Relaxed);
        println!("{rounds} batches synced, {freed} slots freed");
        assert!(
            freed > 0,
            "the run freed nothing: the frees were not exercised"
        );
        reading.join().unwrap()
    });
    println!("{reads} reads, {} failed", failures.len());
    assert!(reads > 0, "the reader read nothing");
    assert!(
        failures.is_empty(),
        "live slots failed to read: {:?}",
        &failures[..failures.len().min(5)]
    );
}

// ---------------------------------------------------------------------------
// Everything the owner does to extents at once, under readers, on a file
// system read through the mapping and on one read with `pread`.

/// Payload of the write whose handle carries `seed` (in the bytes
/// themselves, so a reader can tell whose bytes it got).
fn seeded_payload(seed: u64) -> Vec<u8> {
    let len = match seed % 16 {
        0 => 150_000 + (seed % 7) as usize * 4099, // long: written with pwrite at the end
        1..=3 => 9_000 + (seed % 13) as usize * 577,
        _ => (seed % 700) as usize,
    };
    let mut x = seed;
    (0..len)
        .map(|i| {
            if i % 8 == 0 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            (x >> (8 * (i % 8))) as u8
        })
        .collect()
}

fn owner_does_everything_under_readers(dir: &Path, label: &str) {
    use overflow_region::{EngineId, MemoryTuning};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let path = dir.join("everything");
    let tuning = MemoryTuning {
        overflow_initial_bytes: 64 << 10,
        overflow_max_bytes: 512 << 20,
        overflow_punch_hole_bytes: 8 << 10,
        overflow_slack_percent: 2,
        overflow_auto_compact: true,
        overflow_shrink: true,
        ..MemoryTuning::default()
    };
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();
    let board: Mutex<Vec<(SlotRef, u64)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let reader = OverflowReader::open(&path).unwrap();
    let (ok, changed, wrong) = std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            let (mut ok, mut changed, mut wrong) = (0u64, 0u64, Vec::new());
            let mut buf = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let picked: Vec<(SlotRef, u64)> = {
                    let board = board.lock().unwrap();
                    (0..16)
                        .filter_map(|k| board.get((i + 97 * k) % board.len().max(1)).copied())
                        .collect()
                };
                i = i.wrapping_add(31);
                for (handle, seed) in picked {
                    match reader.read_into(&handle, &mut buf) {
                        Ok(()) if buf == seeded_payload(seed) => ok += 1,
                        Ok(()) => wrong.push(format!("{handle:?} (seed {seed})")),
                        Err(Error::SlotChanged { .. }) => changed += 1,
                        Err(other) => wrong.push(format!("{handle:?}: {other}")),
                    }
                }
            }
            (ok, changed, wrong)
        });
        let mut live: HashMap<usize, u64> = HashMap::new();
        let mut seed = 0u64;
        let start = std::time::Instant::now();
        let mut ops = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(1500) {
            ops += 1;
            let target = if (start.elapsed().as_millis() / 300).is_multiple_of(2) {
                600
            } else {
                40
            };
            if live.len() < target && !ops.is_multiple_of(3) || live.is_empty() {
                seed += 1;
                let data = seeded_payload(seed);
                let slot = if seed.is_multiple_of(5) {
                    region.write_tagged(&data, EngineId::Wal, seed).unwrap()
                } else {
                    region.write(&data, EngineId::Vector).unwrap()
                };
                live.insert(slot, seed);
            } else {
                let slot = *live.keys().nth(ops as usize % live.len()).unwrap();
                region.free(slot).unwrap();
                live.remove(&slot);
            }
            if ops.is_multiple_of(97) {
                region.sync().unwrap();
            }
            if ops.is_multiple_of(211) {
                region.compact_step(1 << 20).unwrap();
            }
            if ops.is_multiple_of(16) {
                // Fresh handles of every live slot (compaction moves them).
                let mut board = board.lock().unwrap();
                if board.len() > 4096 {
                    board.drain(..2048);
                }
                for (&slot, &seed) in live.iter().take(64) {
                    board.push((region.slot_ref(slot).unwrap(), seed));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for (&slot, &seed) in &live {
            assert_eq!(region.read(slot).unwrap(), seeded_payload(seed));
        }
        region.check_consistency().unwrap();
        reading.join().unwrap()
    });
    println!(
        "{label}: reads ok {ok}, changed {changed}, wrong {}",
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{label}: {:?}",
        &wrong[..wrong.len().min(5)]
    );
    assert!(ok > 0 && changed > 0, "{label}: the test proves nothing");
}

#[test]
fn readers_while_the_owner_writes_frees_syncs_compacts_punches_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    owner_does_everything_under_readers(dir.path(), "mapped");
}

#[test]
fn readers_with_pread_while_the_owner_does_everything_on_tmpfs() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    owner_does_everything_under_readers(dir.path(), "tmpfs");
}

/// A reader reserves the maximum capacity the writer had when the reader
/// opened. A writer reopened with a larger one grows the file past that
/// reservation: the reader reads what lies inside it and refuses what lies
/// past it, never touching an address outside its mapping.
#[test]
fn a_reader_refuses_slots_past_its_reservation_after_the_writer_grew_the_maximum() {
    use overflow_region::EngineId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grown-max");
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 1 << 20).unwrap();
    let early = region.write(&[5u8; 1000], EngineId::Wal).unwrap();
    let early = region.slot_ref(early).unwrap();
    drop(region);
    let reader = OverflowReader::open(&path).unwrap();
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 64 << 20).unwrap();
    let mut late = Vec::new();
    for i in 0..40u8 {
        let slot = region.write(&[i; 100_000], EngineId::Wal).unwrap();
        late.push((region.slot_ref(slot).unwrap(), i));
    }
    assert!(std::fs::metadata(&path).unwrap().len() > 2 << 20);
    let mut buf = Vec::new();
    reader.read_into(&early, &mut buf).unwrap();
    assert_eq!(buf, [5u8; 1000]);
    let (mut inside, mut past) = (0, 0);
    for (handle, i) in &late {
        match reader.read_into(handle, &mut buf) {
            Ok(()) => {
                assert!(handle.offset() + 40 + handle.len() as u64 <= 1 << 20);
                assert_eq!(buf, vec![*i; 100_000]);
                inside += 1;
            }
            Err(Error::SlotChanged { .. }) => past += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(inside > 0 && past > 0, "{inside} inside, {past} past");
}

// ---------------------------------------------------------------------------
// A tagged slot's payload starts 40 bytes into its extent, not 32.

/// A reader checks that the extent lies inside the file as it last knew
/// it, re-reading the length only when it does not. A tagged slot written
/// across that old end after the file grew, whose first 32 + len bytes
/// end at it exactly, passed the check without a re-read, and then its
/// user tag or payload (8 bytes further on) lay past the known end: the
/// reader reported a live slot as changed, at every read until another
/// read made it re-read the length.
#[test]
fn a_tagged_slot_across_the_length_a_reader_knew_reads_back() {
    // A payload that ends where the known file does, and an empty one
    // whose user tag starts there.
    for payload_len in [None, Some(0)] {
        tagged_slot_across_the_known_end(payload_len);
    }
}

fn tagged_slot_across_the_known_end(payload_len: Option<u64>) {
    use overflow_region::EngineId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tagged-end");
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 64 << 20).unwrap();
    let reader = OverflowReader::open(&path).unwrap();
    let known = std::fs::metadata(&path).unwrap().len();
    // Fill up to a little below the end the reader knows.
    let mut cursor = 4096u64;
    let extent = |len: u64| (32 + len).next_multiple_of(16);
    while cursor + 3000 < known {
        let slot = region.write(&[1u8; 1000], EngineId::Wal).unwrap();
        cursor = region.slot_ref(slot).unwrap().offset() + extent(1000);
    }
    if let Some(len) = payload_len {
        // One more filler, so the slot's header ends `len` before the end.
        let filler = known - 32 - len - cursor - 32;
        let slot = region
            .write(&vec![2u8; filler as usize], EngineId::Wal)
            .unwrap();
        cursor = region.slot_ref(slot).unwrap().offset() + extent(filler);
    }
    let len = known - 32 - cursor;
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let slot = region.write_tagged(&data, EngineId::Wal, 77).unwrap();
    let handle = region.slot_ref(slot).unwrap();
    assert_eq!(handle.offset(), cursor, "the slot went elsewhere");
    assert!(
        std::fs::metadata(&path).unwrap().len() > known,
        "the file grew"
    );
    let mut buf = Vec::new();
    reader
        .read_into(&handle, &mut buf)
        .unwrap_or_else(|e| panic!("a live tagged slot of {len} bytes: {e}"));
    assert_eq!(buf, data);
}

/// A reader outlives its region: after the owner is dropped (which punches
/// and would shrink the file, but not under a reader), after the path is
/// removed, and across a new owner that frees everything and compacts,
/// every read is the handle's bytes or `SlotChanged`, never a fault.
#[test]
fn a_reader_outlives_its_region_and_the_path() {
    use overflow_region::EngineId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outlived");
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 64 << 20).unwrap();
    let mut handles = Vec::new();
    for i in 0..200u64 {
        let data = vec![i as u8; 1000 + (i as usize * 997) % 150_000];
        let slot = region.write(&data, EngineId::Query).unwrap();
        handles.push((region.slot_ref(slot).unwrap(), data));
    }
    let reader = OverflowReader::open(&path).unwrap();
    for (handle, _) in handles.iter().step_by(2) {
        region.free(handle.slot()).unwrap();
    }
    drop(region);
    let mut buf = Vec::new();
    let check = |buf: &mut Vec<u8>, expect_live: &dyn Fn(usize) -> bool| {
        for (i, (handle, data)) in handles.iter().enumerate() {
            match reader.read_into(handle, buf) {
                Ok(()) => assert_eq!(buf, data),
                Err(error @ Error::SlotChanged { moved, .. }) => {
                    assert!(!expect_live(i) || moved, "slot {i} lost: {error:?}")
                }
                Err(other) => panic!("{other}"),
            }
        }
    };
    check(&mut buf, &|i| i % 2 == 1);
    // A new owner frees the rest and compacts, shrinking what it can.
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 64 << 20).unwrap();
    for (handle, _) in handles.iter().skip(1).step_by(4) {
        region.free(handle.slot()).unwrap();
    }
    region.compact().unwrap();
    check(&mut buf, &|_| false);
    drop(region);
    std::fs::remove_file(&path).unwrap();
    check(&mut buf, &|_| false);
    drop(reader);
}

/// A reader keeps the file's identity only once its check holds: a file
/// whose identity check fails (a crash between its two stores, or damage)
/// gets another identity from the next writer, and a reader that read the
/// old value first must still read the new handles.
#[test]
fn a_reader_takes_a_new_identity_given_where_the_old_failed_its_check() {
    use overflow_region::EngineId;
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 8 << 20).unwrap();
    let old = region.write(b"before", EngineId::Wal).unwrap();
    let old = region.slot_ref(old).unwrap();
    region.sync().unwrap();
    drop(region);
    // The identity's check (the 4 bytes after its value) no longer holds.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xFF; 4], 112).unwrap();
    drop(file);

    let reader = OverflowReader::open(&path).unwrap();
    let mut out = Vec::new();
    // Reads the identity's value, which still matches the old handle.
    reader.read_into(&old, &mut out).unwrap();
    assert_eq!(out, b"before");

    let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 8 << 20).unwrap();
    let new = region.write(b"after", EngineId::Wal).unwrap();
    let new = region.slot_ref(new).unwrap();
    assert_ne!(
        new.file(),
        old.file(),
        "the writer gave the file a new identity"
    );
    reader.read_into(&new, &mut out).unwrap();
    assert_eq!(out, b"after");
    assert!(
        matches!(
            reader.read_into(&old, &mut out),
            Err(Error::SlotChanged { .. })
        ),
        "the old identity's handle is refused"
    );
}
