//! `OverflowReader` and `SlotRef`: reads from other threads and processes
//! while the owner writes, frees and reuses slots.
//!
//! Every payload is derived from a seed (`payload(seed)`), and every handle
//! travels with its seed, so a reader can compute the bytes it must get and
//! any wrong byte fails the test.
//!
//! The concurrent test runs for about 1.5 s; `OVERFLOW_SOAK=1` makes it run
//! for 60 s, `OVERFLOW_SOAK=<n>` (n > 1) for n seconds; `OVERFLOW_READERS=<n>`
//! sets its number of reader threads (default 3).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use overflow_region::{EngineId, Error, MemoryTuning, OverflowReader, OverflowRegion, SlotRef};

// ---------------------------------------------------------------------------
// Compile-time properties.

const _: () = {
    const fn copy_send_sync<T: Copy + Send + Sync + 'static>() {}
    const fn send_sync<T: Send + Sync + 'static>() {}
    const fn send<T: Send + 'static>() {}
    copy_send_sync::<SlotRef>();
    send_sync::<OverflowReader>();
    // One owner at a time, which may move between threads.
    send::<OverflowRegion>();
};

/// Compiles only if `T` is *not* `Sync`: when `T` implements the auto
/// trait, both impls of `AmbiguousIfSync` apply and the `_` in the check
/// below cannot be inferred (the trick `static_assertions` uses for
/// `assert_not_impl_any!`, without the dependency).
mod not_sync {
    use overflow_region::OverflowRegion;

    pub trait AmbiguousIfSync<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    pub struct InvalidSync;
    impl<T: ?Sized + Sync> AmbiguousIfSync<InvalidSync> for T {}

    const _: fn() = || {
        let _ = <OverflowRegion as AmbiguousIfSync<_>>::some_item;
    };
}

// ---------------------------------------------------------------------------
// Payloads derived from seeds.

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic generator for the tests' random choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = splitmix(self.0);
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Length of `payload(seed)`: mostly small, some empty, some several pages,
/// one in 16 long enough (96 to 352 KiB) that a write at the end of the
/// region puts it in with `pwrite`, and lengths that are not multiples of 8.
fn payload_len(seed: u64) -> usize {
    let h = splitmix(seed ^ 0x5EED);
    match h % 16 {
        0 => 0,
        1..=6 => (h >> 8) as usize % 64,
        7..=12 => (h >> 8) as usize % 2048,
        13 | 14 => (h >> 8) as usize % 12_288,
        _ => (96 << 10) + (h >> 8) as usize % (256 << 10),
    }
}

/// The bytes written for `seed`: starts with `seed` itself (when long
/// enough), the rest pseudo-random.
fn payload(seed: u64) -> Vec<u8> {
    let len = payload_len(seed);
    let mut bytes = Vec::with_capacity(len + 8);
    bytes.extend_from_slice(&seed.to_le_bytes());
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    while bytes.len() < len {
        state = splitmix(state);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn assert_bytes(got: &[u8], handle: &SlotRef, seed: u64) {
    if got != payload(seed).as_slice() {
        let expected = payload(seed);
        let first = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "WRONG BYTES for {handle:?} (seed {seed}): got {} bytes, expected {}, first difference at {first}",
            got.len(),
            expected.len()
        );
    }
}

fn engine_for(seed: u64) -> EngineId {
    EngineId::ALL[(seed % EngineId::ALL.len() as u64) as usize]
}

fn soak_duration() -> Duration {
    match std::env::var("OVERFLOW_SOAK")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(0) | None => Duration::from_millis(1500),
        Some(1) => Duration::from_secs(60),
        Some(secs) => Duration::from_secs(secs),
    }
}

/// CPU time the calling thread has run (`/proc/thread-self/schedstat`).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        stat.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    )
}

fn is_slot_changed(error: &Error) -> bool {
    matches!(error, Error::SlotChanged { .. })
}

// ---------------------------------------------------------------------------
// Concurrent readers while the owner churns.

const BOARD_CAPACITY: usize = 2048;

#[derive(Default, Debug)]
struct ReaderCounts {
    pinned_ok: u64,
    board_ok: u64,
    board_changed: u64,
    reasons: BTreeMap<&'static str, u64>,
}

/// Readers share one `OverflowReader`; the owner (this thread) writes, frees
/// and reuses slots at full speed, publishing every handle on a board the
/// readers pick from at random. Pinned slots, written first and never
/// touched again, must read back every single time; any other handle must
/// read back its own bytes or `SlotChanged`, never anything else.
#[test]
fn readers_never_see_wrong_bytes_while_the_owner_churns() {
    readers_while_the_owner_churns(false);
}

/// The same with the owner writing with `pwrite` (as on btrfs): a reader
/// may see a tag or header half copied into the page cache, and must take
/// it for a change, never return other bytes.
#[test]
fn readers_never_see_wrong_bytes_while_the_owner_churns_with_pwrite() {
    readers_while_the_owner_churns(true);
}

fn readers_while_the_owner_churns(pwrite_stores: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn");
    let tuning = MemoryTuning {
        overflow_initial_bytes: 64 << 10,
        overflow_max_bytes: 256 << 20,
        overflow_pwrite_stores: Some(pwrite_stores),
        ..MemoryTuning::default()
    };
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();

    let mut next_seed = 1u64;
    let mut pinned = Vec::new();
    for i in 0..48 {
        let seed = next_seed;
        next_seed += 1;
        let slot = region.write(&payload(seed), engine_for(seed)).unwrap();
        pinned.push((region.slot_ref(slot).unwrap(), seed));
        // Churn between pinned writes, so pinned slots are scattered among
        // extents that will be freed, merged and punched around them.
        if i % 4 == 0 {
            let filler = region.write(&vec![0xAB; 70_000], EngineId::Query).unwrap();
            if i % 8 == 0 {
                region.free(filler).unwrap();
            }
        }
    }
    let pinned_slots: Vec<usize> = pinned.iter().map(|(h, _)| h.slot()).collect();

    let reader = OverflowReader::open(&path).unwrap();
    let board: Mutex<Vec<(SlotRef, u64)>> = Mutex::new(Vec::with_capacity(BOARD_CAPACITY));
    let stop = AtomicBool::new(false);
    let duration = soak_duration();
    let readers = std::env::var("OVERFLOW_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);

    let (counts, owner_ops, drains) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..readers)
            .map(|r| {
                let (reader, board, stop, pinned) = (&reader, &board, &stop, &pinned);
                scope.spawn(move || {
                    let mut rng = Rng(0xC0FFEE + r as u64);
                    let mut counts = ReaderCounts::default();
                    let mut buf = Vec::new();
                    let mut batch: Vec<(SlotRef, u64)> = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        if i.is_multiple_of(8) {
                            let (handle, seed) = pinned[rng.below(pinned.len())];
                            if i.is_multiple_of(16) {
                                reader
                                    .with_slot(&handle, |bytes| assert_bytes(bytes, &handle, seed))
                                    .unwrap_or_else(|e| panic!("pinned {handle:?} failed: {e}"));
                            } else {
                                reader
                                    .read_into(&handle, &mut buf)
                                    .unwrap_or_else(|e| panic!("pinned {handle:?} failed: {e}"));
                                assert_bytes(&buf, &handle, seed);
                            }
                            counts.pinned_ok += 1;
                            continue;
                        }
                        // Take a few handles at a time, so the readers do
                        // not keep the owner waiting on the board's lock.
                        if batch.is_empty() {
                            let board = board.lock().unwrap();
                            if !board.is_empty() {
                                for _ in 0..16 {
                                    batch.push(board[rng.below(board.len())]);
                                }
                            }
                        }
                        let Some((handle, seed)) = batch.pop() else {
                            std::thread::yield_now();
                            continue;
                        };
                        let result = if i.is_multiple_of(5) {
                            reader.with_slot(&handle, |bytes| assert_bytes(bytes, &handle, seed))
                        } else {
                            reader
                                .read_into(&handle, &mut buf)
                                .map(|()| assert_bytes(&buf, &handle, seed))
                        };
                        match result {
                            Ok(()) => counts.board_ok += 1,
                            Err(Error::SlotChanged { reason, .. }) => {
                                counts.board_changed += 1;
                                *counts.reasons.entry(reason).or_default() += 1;
                            }
                            Err(other) => panic!("unexpected error reading {handle:?}: {other}"),
                        }
                    }
                    counts
                })
            })
            .collect();

        // The owner.
        let mut rng = Rng(42);
        let mut live: Vec<(usize, u64)> = Vec::new();
        let mut pending: Vec<(SlotRef, u64)> = Vec::new();
        let mut target = 1500usize;
        let mut ops = 0u64;
        let mut drains = 0u64;
        let start = Instant::now();
        let cpu_start = thread_cpu();
        while start.elapsed() < duration {
            for _ in 0..64 {
                ops += 1;
                // Phases: mostly steady churn around `target` live slots,
                // now and then a drain to (almost) nothing, which retracts
                // the tail and gives the end of the file back while readers
                // have it mapped.
                if ops.is_multiple_of(1024) {
                    let phase = start.elapsed().as_millis() / 250;
                    let draining = phase % 4 == 3;
                    if draining && target != 0 {
                        drains += 1;
                    }
                    target = if draining { 0 } else { 1500 };
                }
                let write = live.is_empty() || (live.len() < target && rng.below(100) < 60);
                if write {
                    let seed = next_seed;
                    next_seed += 1;
                    let slot = region.write(&payload(seed), engine_for(seed)).unwrap();
                    pending.push((region.slot_ref(slot).unwrap(), seed));
                    live.push((slot, seed));
                } else {
                    let (slot, _) = live.swap_remove(rng.below(live.len()));
                    region.free(slot).unwrap();
                }
            }
            // Publish without ever waiting for the readers.
            let Ok(mut board) = board.try_lock() else {
                continue;
            };
            for entry in pending.drain(..) {
                if board.len() < BOARD_CAPACITY {
                    board.push(entry);
                } else {
                    let at = rng.below(BOARD_CAPACITY);
                    board[at] = entry;
                }
            }
        }
        let owner_cpu = thread_cpu() - cpu_start;
        stop.store(true, Ordering::Relaxed);
        println!(
            "owner CPU time {owner_cpu:?} of {:?} wall: {:.1} us CPU per write or free",
            start.elapsed(),
            owner_cpu.as_secs_f64() * 1e6 / ops as f64
        );
        let counts: Vec<ReaderCounts> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        // Every pinned slot is intact from the owner's side too.
        for (handle, seed) in &pinned {
            assert_bytes(region.read(handle.slot()).unwrap(), handle, *seed);
        }
        (counts, ops, drains)
    });
    region.check_consistency().unwrap();
    for slot in &pinned_slots {
        assert!(region.read(*slot).is_ok());
    }

    let mut total = ReaderCounts::default();
    for c in &counts {
        total.pinned_ok += c.pinned_ok;
        total.board_ok += c.board_ok;
        total.board_changed += c.board_changed;
        for (reason, n) in &c.reasons {
            *total.reasons.entry(reason).or_default() += n;
        }
    }
    println!(
        "owner: {owner_ops} writes+frees in {duration:?}, {} slots written, {drains} drains; readers (pinned ok, other ok, changed): {:?}",
        next_seed - 1,
        counts
            .iter()
            .map(|c| (c.pinned_ok, c.board_ok, c.board_changed))
            .collect::<Vec<_>>()
    );
    println!(
        "total: pinned ok {}, other ok {}, SlotChanged {}; reasons {:#?}",
        total.pinned_ok, total.board_ok, total.board_changed, total.reasons
    );
    assert!(
        counts.iter().all(|c| c.pinned_ok > 0),
        "a reader never read a pinned slot"
    );
    assert!(total.board_ok > 0, "no churned handle ever read back");
    assert!(
        total.board_changed > 0,
        "SlotChanged never happened: the test proves nothing"
    );
}

/// Compaction moves live slots under readers: a handle made before a move
/// reads its own bytes or `SlotChanged` (the slot has a new generation
/// after the move), never anything else, and fresh handles read fine.
#[test]
fn readers_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compact");
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 256 << 20).unwrap();
    let mut live = Vec::new();
    // Short payloads only: the bound on what compaction leaves free below
    // assumes extents that fit into most gaps.
    for seed in (1..=3000u64).filter(|&seed| payload_len(seed) < 96 << 10) {
        let slot = region.write(&payload(seed), engine_for(seed)).unwrap();
        live.push((slot, seed));
    }
    let mut rng = Rng(9);
    for _ in 0..1500 {
        let (slot, _) = live.swap_remove(rng.below(live.len()));
        region.free(slot).unwrap();
    }
    let board: Mutex<Vec<(SlotRef, u64)>> = Mutex::new(
        live.iter()
            .map(|&(slot, seed)| (region.slot_ref(slot).unwrap(), seed))
            .collect(),
    );
    let reader = OverflowReader::open(&path).unwrap();
    let stop = AtomicBool::new(false);
    let (steps, counts) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (reader, board, stop) = (&reader, &board, &stop);
                scope.spawn(move || {
                    let mut rng = Rng(r);
                    let (mut ok, mut changed) = (0u64, 0u64);
                    let mut buf = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let (handle, seed) = {
                            let board = board.lock().unwrap();
                            board[rng.below(board.len())]
                        };
                        match reader.read_into(&handle, &mut buf) {
                            Ok(()) => {
                                assert_bytes(&buf, &handle, seed);
                                ok += 1;
                            }
                            Err(Error::SlotChanged { .. }) => changed += 1,
                            Err(other) => panic!("{handle:?}: {other}"),
                        }
                    }
                    (ok, changed)
                })
            })
            .collect();
        let mut steps = 0;
        loop {
            steps += 1;
            let report = region.compact_step(32 << 10).unwrap();
            // Fresh handles for a few slots (moved or not); the old ones stay
            // on the board too.
            let mut board = board.lock().unwrap();
            for _ in 0..16 {
                let (slot, seed) = live[rng.below(live.len())];
                board.push((region.slot_ref(slot).unwrap(), seed));
            }
            drop(board);
            // Done when nothing is left to move (a gap no extent above it
            // fits into may stay).
            if report.complete || report.extents_moved == 0 {
                break;
            }
        }
        // Let the readers see the final state for a moment.
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<(u64, u64)> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (steps, counts)
    });
    region.check_consistency().unwrap();
    let stats = region.stats();
    assert!(
        stats.free_bytes * 20 <= stats.used_bytes,
        "compaction left {} of {} used bytes free",
        stats.free_bytes,
        stats.used_bytes
    );
    let mut buf = Vec::new();
    for &(slot, seed) in &live {
        let handle = region.slot_ref(slot).unwrap();
        reader.read_into(&handle, &mut buf).unwrap();
        assert_bytes(&buf, &handle, seed);
    }
    println!("compaction in {steps} steps; readers (ok, changed): {counts:?}");
    assert!(
        counts.iter().map(|c| c.1).sum::<u64>() > 0,
        "no handle was ever invalidated by a move"
    );
    assert!(counts.iter().map(|c| c.0).sum::<u64>() > 0);
}

// ---------------------------------------------------------------------------
// Growth.

/// A reader opened on an 8 KiB file follows the file as the owner grows it
/// many times, both while it grows (a reader thread reads each handle as it
/// is published) and afterwards.
#[test]
fn reader_follows_growth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grow");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 64 << 20).unwrap();
    let initial = region.capacity() as u64;
    assert_eq!(initial, 8 << 10);
    let reader = OverflowReader::open(&path).unwrap();

    let (tx, rx) = mpsc::channel::<(SlotRef, u64)>();
    let mut handles = Vec::new();
    let mut growths = 0;
    std::thread::scope(|scope| {
        let reader = &reader;
        let concurrent = scope.spawn(move || {
            let mut buf = Vec::new();
            let mut read = 0;
            for (handle, seed) in rx {
                reader
                    .read_into(&handle, &mut buf)
                    .unwrap_or_else(|e| panic!("{handle:?} (seed {seed}) during growth: {e}"));
                assert_bytes(&buf, &handle, seed);
                read += 1;
            }
            read
        });
        let mut capacity = region.capacity();
        for seed in 1..=1200u64 {
            let slot = region.write(&payload(seed), engine_for(seed)).unwrap();
            let handle = region.slot_ref(slot).unwrap();
            if region.capacity() != capacity {
                growths += 1;
                capacity = region.capacity();
            }
            handles.push((handle, seed));
            tx.send((handle, seed)).unwrap();
        }
        drop(tx);
        assert_eq!(concurrent.join().unwrap(), 1200);
    });
    let grown = region.capacity() as u64;
    println!("file grew {growths} times, {initial} -> {grown} bytes");
    assert!(growths >= 5, "only {growths} growths");
    let beyond: Vec<_> = handles
        .iter()
        .filter(|(h, _)| h.offset() + 32 + h.len() as u64 > initial)
        .collect();
    assert!(beyond.len() > 1000);
    let mut buf = Vec::new();
    for (handle, seed) in &handles {
        reader.read_into(handle, &mut buf).unwrap();
        assert_bytes(&buf, handle, *seed);
    }
    // A reader opened after the growth sees it all too.
    let late = OverflowReader::open(&path).unwrap();
    let (handle, seed) = handles.last().unwrap();
    late.with_slot(handle, |bytes| assert_bytes(bytes, handle, *seed))
        .unwrap();
}

/// While a reader has the file mapped the owner never truncates it (a
/// reader touching a cut page would get SIGBUS); it punches the tail
/// instead. Once the reader is gone the file shrinks again.
#[test]
fn owner_does_not_truncate_under_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrink");
    let mut region = OverflowRegion::open_with_config(&path, 64 << 10, 64 << 20).unwrap();
    let mut handles = Vec::new();
    for seed in 0..400u64 {
        let data = vec![seed as u8; 20_000];
        let slot = region.write(&data, EngineId::Wal).unwrap();
        handles.push((slot, region.slot_ref(slot).unwrap(), data));
    }
    let grown = region.capacity();
    assert!(grown >= 8 << 20);

    let reader = OverflowReader::open(&path).unwrap();
    for (slot, _, _) in &handles {
        region.free(*slot).unwrap();
    }
    assert_eq!(region.used_bytes(), 0);
    let on_disk = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        on_disk, grown as u64,
        "the file was truncated under a reader"
    );
    assert_eq!(region.capacity(), grown);
    // Every old handle, including the ones far past the region's new end,
    // reads as changed (zeros in punched pages), never faults.
    let mut buf = Vec::new();
    for (_, handle, _) in &handles {
        let error = reader.read_into(handle, &mut buf).unwrap_err();
        assert!(is_slot_changed(&error), "{error}");
    }
    drop(reader);

    // Without a reader, retractions of the tail shrink the file again (the
    // owner keeps some headroom that decays over a few retractions).
    let mut shrunk = grown as u64;
    for _ in 0..32 {
        let slot = region.write(&[1; 100], EngineId::Wal).unwrap();
        region.free(slot).unwrap();
        shrunk = std::fs::metadata(&path).unwrap().len();
        if shrunk < grown as u64 / 4 {
            break;
        }
    }
    println!("file {grown} bytes while a reader mapped it, {shrunk} after it closed");
    assert!(
        shrunk < grown as u64 / 4,
        "the file did not shrink: {shrunk}"
    );
    region.check_consistency().unwrap();
}

// ---------------------------------------------------------------------------
// Another process.

const CHILD_ENV: &str = "OVERFLOW_READER_CHILD_PATH";
const CHILD_TEST: &str = "cross_process_child_helper";

fn encode(handle: &SlotRef, seed: u64) -> String {
    format!(
        "{} {} {} {} {} {}\n",
        handle.file(),
        handle.slot(),
        handle.generation(),
        handle.offset(),
        handle.len(),
        seed
    )
}

/// Not a test on its own: the body of the child process spawned by
/// `reader_in_another_process`. It opens a reader on the file named by
/// `CHILD_ENV` (whose writer lock the parent holds), then answers each line
/// `slot generation offset len seed` on stdin with a `RESULT` line.
#[test]
#[ignore = "run as a child by reader_in_another_process"]
fn cross_process_child_helper() {
    let path = std::env::var_os(CHILD_ENV).expect("run as a child by reader_in_another_process");
    let path = Path::new(&path);
    let reader = OverflowReader::open(path).expect("the child opens a reader");
    let writer = OverflowRegion::open_with_config(path, 8 << 10, 64 << 20);
    let locked = matches!(writer, Err(Error::Locked { .. }));
    drop(writer);
    say(&format!("READY locked={locked}"));
    let mut buf = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let parts: Vec<u64> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let [file, slot, generation, offset, len, seed] = parts[..] else {
            panic!("bad line {line:?}");
        };
        let handle = SlotRef::from_parts(file, slot as u32, generation, offset, len);
        let answer = match reader.read_into(&handle, &mut buf) {
            Ok(()) if buf == payload(seed) => "ok".to_string(),
            Ok(()) => "WRONG-BYTES".to_string(),
            Err(Error::SlotChanged { .. }) => "changed".to_string(),
            Err(other) => format!("error {other}"),
        };
        say(&format!("RESULT {answer}"));
    }
}

/// One line to the parent, flushed at once (stdout to a pipe may be
/// buffered).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

struct Child {
    process: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Child {
    /// What follows `prefix` on the next line the child printed that holds
    /// it (skipping the test harness's own lines).
    fn expect_line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            if n == 0 {
                let status = self.process.wait().unwrap();
                panic!("the child exited ({status}) before printing {prefix:?}");
            }
            // The harness prints "test <name> ... " without a newline
            // before the test's own output, so the prefix may come mid-line.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim_end().to_string();
            }
        }
    }

    fn ask(&mut self, handle: &SlotRef, seed: u64) -> String {
        self.stdin
            .write_all(encode(handle, seed).as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
        self.expect_line("RESULT ")
    }
}

/// A reader in another process, while this process holds the writer's lock
/// and keeps writing, freeing and growing the file. Handles cross the
/// process boundary as text and are rebuilt with `SlotRef::from_parts`.
#[test]
fn reader_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 64 << 20).unwrap();
    let mut handles = Vec::new();
    for seed in 1..=6u64 {
        let slot = region.write(&payload(seed), engine_for(seed)).unwrap();
        handles.push((slot, region.slot_ref(slot).unwrap(), seed));
    }
    let before_child = std::fs::read(&path).unwrap();

    let mut process = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The harness's lines and any panic: not interleaved with ours.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // If the child hangs, kill it (by its id) rather than hang the suite.
    let (done, watchdog) = mpsc::channel::<()>();
    let pid = process.id().to_string();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(Duration::from_secs(60))
        {
            eprintln!("the child reader hangs: killing {pid}");
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let mut child = Child {
        stdin: process.stdin.take().unwrap(),
        stdout: BufReader::new(process.stdout.take().unwrap()),
        process,
    };
    // The child opened its reader although this process holds the writer's
    // lock (and its own attempt to open a writer was refused), without
    // changing a byte of the file.
    assert_eq!(child.expect_line("READY "), "locked=true");
    assert_eq!(std::fs::read(&path).unwrap(), before_child);

    for (_, handle, seed) in &handles {
        assert_eq!(child.ask(handle, *seed), "ok", "{handle:?}");
    }
    // Free one and reuse its index: the old handle is refused, the new one read.
    let (slot, old, old_seed) = handles.remove(0);
    region.free(slot).unwrap();
    assert_eq!(child.ask(&old, old_seed), "changed");
    let slot = region.write(&payload(100), engine_for(100)).unwrap();
    assert_eq!(slot, old.slot());
    let new = region.slot_ref(slot).unwrap();
    assert_ne!(new.generation(), old.generation());
    assert_eq!(child.ask(&old, old_seed), "changed");
    assert_eq!(child.ask(&new, 100), "ok");
    // A handle with the right place but the wrong seed would be wrong bytes:
    // the child compares, so "WRONG-BYTES" here proves the comparison works.
    assert_eq!(child.ask(&new, 101), "WRONG-BYTES");

    // Grow the file far past its size when the child mapped it.
    let capacity = region.capacity();
    let mut grown = Vec::new();
    for seed in 200..700u64 {
        let slot = region.write(&payload(seed), engine_for(seed)).unwrap();
        grown.push((region.slot_ref(slot).unwrap(), seed));
    }
    assert!(
        region.capacity() > 4 * capacity,
        "{capacity} -> {}",
        region.capacity()
    );
    for (handle, seed) in grown.iter().rev().step_by(25) {
        assert_eq!(child.ask(handle, *seed), "ok", "{handle:?}");
    }
    // Handles built from nonsense parts are refused, not read and not fatal.
    for bogus in [
        SlotRef::from_parts(0, 0, 0, 0, 8),
        SlotRef::from_parts(old.file(), 1, 1, 4100, 8),
        SlotRef::from_parts(old.file(), u32::MAX, u64::MAX, u64::MAX - 7, u64::MAX),
        SlotRef::from_parts(old.file(), 7, 0, 1 << 39, 4),
        SlotRef::from_parts(
            old.file() ^ 1,
            new.slot() as u32,
            new.generation(),
            new.offset(),
            new.len() as u64,
        ),
    ] {
        assert_eq!(child.ask(&bogus, 0), "changed", "{bogus:?}");
    }
    drop(child.stdin);
    let status = child.process.wait().unwrap();
    let _ = done.send(());
    assert!(status.success(), "child failed: {status}");
    region.check_consistency().unwrap();
}

// ---------------------------------------------------------------------------
// Opening.

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn reader_refuses_files_that_are_not_regions_and_never_modifies_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let random: Vec<u8> = (0..10_000).map(|_| rng.next() as u8).collect();
    let mut not_quite = random.clone();
    not_quite[..8].copy_from_slice(b"OVFLREGN");
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("text", b"hello, not a region\n".to_vec()),
        ("random", random),
        ("magic-only", b"OVFLREGN".to_vec()),
        ("magic-then-garbage", not_quite),
    ];
    for (name, contents) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &contents).unwrap();
        let before = mtime(&path);
        std::thread::sleep(Duration::from_millis(5));
        match OverflowReader::open(&path) {
            Err(Error::NotARegion { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(!reason.is_empty());
            }
            other => panic!("{name}: expected NotARegion, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            contents,
            "{name} was modified"
        );
        assert_eq!(mtime(&path), before, "{name}'s mtime changed");
    }

    // A missing file is an I/O error and is not created.
    let missing = dir.path().join("missing");
    assert!(matches!(
        OverflowReader::open(&missing),
        Err(Error::Io { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn reader_refuses_another_format_version_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    region.write(b"abc", EngineId::Wal).unwrap();
    drop(region);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match OverflowReader::open(&path) {
        Err(Error::UnsupportedVersion {
            found: 3,
            supported: 2,
            ..
        }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// Opening, reading through and dropping a reader leaves a region file
/// byte-for-byte as it was, mtime included, with or without its owner.
#[test]
fn reader_never_modifies_a_region_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let mut handles = Vec::new();
    for seed in 0..20 {
        let slot = region.write(&payload(seed), engine_for(seed)).unwrap();
        handles.push((region.slot_ref(slot).unwrap(), seed));
    }
    region.sync().unwrap();
    drop(region);
    let bytes = std::fs::read(&path).unwrap();
    let before = mtime(&path);
    std::thread::sleep(Duration::from_millis(5));
    {
        let reader = OverflowReader::open(&path).unwrap();
        assert_eq!(reader.path(), path);
        let mut buf = Vec::new();
        for (handle, seed) in &handles {
            reader.read_into(handle, &mut buf).unwrap();
            assert_bytes(&buf, handle, *seed);
        }
        // Garbage handles are refused without side effects.
        let _ = reader.read_into(&SlotRef::from_parts(1, 3, 9, 4096, 17), &mut buf);
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(mtime(&path), before);
    // And the owner can take it again afterwards (no lock left behind).
    let region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    assert_eq!(region.live_slot_count(), 20);
}

// ---------------------------------------------------------------------------
// with_slot and handles.

#[test]
fn with_slot_passes_the_right_bytes_and_nests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let a = region.write(b"outer payload", EngineId::Vector).unwrap();
    let b = region.write(&[9u8; 5000], EngineId::Crdt).unwrap();
    let empty = region.write(b"", EngineId::Bridge).unwrap();
    let (ha, hb, he) = (
        region.slot_ref(a).unwrap(),
        region.slot_ref(b).unwrap(),
        region.slot_ref(empty).unwrap(),
    );
    assert_eq!(ha.len(), 13);
    assert!(he.is_empty());
    let reader = OverflowReader::open(&path).unwrap();

    let n = reader.with_slot(&ha, |bytes| bytes.len()).unwrap();
    assert_eq!(n, 13);
    assert_eq!(reader.with_slot(&he, <[u8]>::to_vec).unwrap(), b"");

    // Nested: the inner call must not clobber the outer slice.
    let (outer, inner, innermost) = reader
        .with_slot(&ha, |outer| {
            let (inner, innermost) = reader
                .with_slot(&hb, |inner| {
                    let innermost = reader.with_slot(&ha, <[u8]>::to_vec).unwrap();
                    (inner.to_vec(), innermost)
                })
                .unwrap();
            (outer.to_vec(), inner, innermost)
        })
        .unwrap();
    assert_eq!(outer, b"outer payload");
    assert_eq!(inner, vec![9u8; 5000]);
    assert_eq!(innermost, b"outer payload");

    // The thread's buffer is reused: a long read then a short one.
    assert_eq!(reader.with_slot(&hb, |b| b.len()).unwrap(), 5000);
    assert_eq!(
        reader.with_slot(&ha, <[u8]>::to_vec).unwrap(),
        b"outer payload"
    );

    // A freed slot: SlotChanged, and the closure is not called.
    region.free(a).unwrap();
    let mut called = false;
    let error = reader.with_slot(&ha, |_| called = true).unwrap_err();
    assert!(is_slot_changed(&error), "{error}");
    assert!(!called);
    // An error from the inner call does not disturb the outer one.
    let got = reader
        .with_slot(&hb, |outer| {
            assert!(reader.with_slot(&ha, |_| ()).is_err());
            outer.len()
        })
        .unwrap();
    assert_eq!(got, 5000);
}

/// A handle carries exactly what `slot_ref` saw, round-trips through
/// `from_parts` and serde, and a handle differing from the truth in any one
/// part is refused.
#[test]
fn handles_round_trip_and_any_wrong_part_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let first = region.write(&payload(11), EngineId::Sparse).unwrap();
    let slot = region.write(&payload(12), EngineId::Sparse).unwrap();
    let handle = region.slot_ref(slot).unwrap();
    let other = region.slot_ref(first).unwrap();
    assert_eq!(handle.slot(), slot);
    assert_eq!(handle.len(), payload_len(12));
    assert!(handle.len() > 16, "pick a seed with a longer payload");
    assert_eq!(handle.offset() % 16, 0);
    assert!(matches!(
        region.slot_ref(99),
        Err(Error::UnknownSlot { .. })
    ));

    let rebuilt = SlotRef::from_parts(
        handle.file(),
        handle.slot() as u32,
        handle.generation(),
        handle.offset(),
        handle.len() as u64,
    );
    assert_eq!(rebuilt, handle);
    let text = toml::to_string(&handle).unwrap();
    let parsed: SlotRef = toml::from_str(&text).unwrap();
    assert_eq!(parsed, handle);

    let reader = OverflowReader::open(&path).unwrap();
    let mut buf = Vec::new();
    reader.read_into(&rebuilt, &mut buf).unwrap();
    assert_bytes(&buf, &handle, 12);

    let (f, s, g, o, l) = (
        handle.file(),
        handle.slot() as u32,
        handle.generation(),
        handle.offset(),
        handle.len() as u64,
    );
    let wrong = [
        SlotRef::from_parts(f, s + 1, g, o, l),
        SlotRef::from_parts(f, s, g + 1, o, l),
        SlotRef::from_parts(f, s, g.wrapping_sub(1), o, l),
        SlotRef::from_parts(f, s, g, o + 16, l),
        SlotRef::from_parts(f, s, g, o + 8, l),
        SlotRef::from_parts(f, s, g, o + 1, l),
        SlotRef::from_parts(f, s, g, o - 16, l),
        SlotRef::from_parts(f, s, g, o, l + 1),
        SlotRef::from_parts(f, s, g, o, l.saturating_sub(1)),
        SlotRef::from_parts(f, s, g, o, u64::MAX),
        SlotRef::from_parts(f, s, g, u64::MAX, l),
        SlotRef::from_parts(f, s, g, 1 << 40, l),
        SlotRef::from_parts(f, s, g, 0, l),
        // Another live slot's place with this slot's identity, and the reverse.
        SlotRef::from_parts(f, s, g, other.offset(), other.len() as u64),
        SlotRef::from_parts(f, other.slot() as u32, other.generation(), o, l),
    ];
    for bogus in wrong {
        let error = reader.read_into(&bogus, &mut buf).unwrap_err();
        assert!(is_slot_changed(&error), "{bogus:?}: {error}");
        assert!(reader.with_slot(&bogus, |_| ()).is_err());
    }
    // Still fine after all that.
    reader.read_into(&handle, &mut buf).unwrap();
    assert_bytes(&buf, &handle, 12);
}

/// Handles stay valid across the owner's restart, and generations are not
/// handed out again after it: a handle from before the restart never reads
/// a tenant written after it.
#[test]
fn handles_survive_reopen_and_generations_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let kept = region.write(&payload(1), EngineId::Wal).unwrap();
    let gone = region.write(&payload(2), EngineId::Wal).unwrap();
    let kept_ref = region.slot_ref(kept).unwrap();
    let gone_ref = region.slot_ref(gone).unwrap();
    region.free(gone).unwrap();
    drop(region);

    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let reader = OverflowReader::open(&path).unwrap();
    let mut buf = Vec::new();
    reader.read_into(&kept_ref, &mut buf).unwrap();
    assert_bytes(&buf, &kept_ref, 1);
    assert_eq!(region.slot_ref(kept).unwrap(), kept_ref);

    // Same length payload into the same index, very likely the same extent.
    let again = region.write(&payload(2), EngineId::Wal).unwrap();
    assert_eq!(again, gone);
    let again_ref = region.slot_ref(again).unwrap();
    assert_ne!(again_ref.generation(), gone_ref.generation());
    assert!(again_ref.generation() > kept_ref.generation());
    let error = reader.read_into(&gone_ref, &mut buf).unwrap_err();
    assert!(is_slot_changed(&error), "{error}");
    reader.read_into(&again_ref, &mut buf).unwrap();
    assert_bytes(&buf, &again_ref, 2);
}

const MANY_READERS_ENV: &str = "OVERFLOW_MANY_READERS_CHILD";
const MANY_READERS_CHILD: &str = "many_readers_child_helper";
const MANY_READERS_WANTED: usize = 256;

/// Not a test on its own: the body of the child process spawned by
/// `many_readers_in_one_process`, run apart because it may use up the
/// process's address space, which would make the other tests running in
/// this process fail.
#[test]
#[ignore = "run as a child by many_readers_in_one_process"]
fn many_readers_child_helper() {
    assert!(
        std::env::var_os(MANY_READERS_ENV).is_some(),
        "run as a child by many_readers_in_one_process"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let slot = region.write(b"x", EngineId::Wal).unwrap();
    let handle = region.slot_ref(slot).unwrap();
    let mut readers = Vec::new();
    let mut failure = String::new();
    for _ in 0..MANY_READERS_WANTED {
        match OverflowReader::open(&path) {
            Ok(reader) => readers.push(reader),
            Err(error) => {
                failure = error.to_string();
                break;
            }
        }
    }
    for reader in &readers {
        assert_eq!(reader.with_slot(&handle, <[u8]>::to_vec).unwrap(), b"x");
    }
    say(&format!("OPENED {} {failure}", readers.len()));
}

/// How many readers one process can hold open at once. Each reserves
/// `OverflowReader::DEFAULT_RESERVATION` (1 TiB) of address space, and an
/// x86-64 process has 128 TiB, so fewer than 128 fit, whatever the region's
/// size (and while they are open, nothing else in the process can map
/// memory). A thread-per-core database whose cores each read the others'
/// regions needs up to cores x (cores - 1) readers in one process.
#[test]
fn many_readers_in_one_process() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            MANY_READERS_CHILD,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MANY_READERS_ENV, "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.find("OPENED ").map(|at| &line[at + 7..]))
        .unwrap_or_else(|| panic!("no OPENED line in {stdout:?}"));
    let (opened, failure) = line.split_once(' ').unwrap_or((line, ""));
    let opened: usize = opened.parse().unwrap();
    assert_eq!(
        opened, MANY_READERS_WANTED,
        "only {opened} of {MANY_READERS_WANTED} readers could be open at once in one process: {failure}"
    );
}

/// Generations are the low 32 bits of a 64-bit write counter, and a handle
/// is checked against nothing else that changes between tenants of the same
/// size at the same place. So 2^32 writes after a handle was made (about 40
/// minutes of an owner doing 1.7 M writes/s), a slot index rewritten at the
/// same offset with the same length carries the same 32-bit generation, and
/// the stale handle reads the later tenant's bytes. A ring of 2^k slots
/// rewritten in turn lands on exactly that.
///
/// The test fast-forwards the counter instead of doing 2^32 writes: it sets
/// the file header's "next generation" word (bytes 72..80, outside the
/// header checksum, docs/FORMAT.md) to what 2^32 writes would leave there.
#[test]
fn stale_handle_after_generation_wraparound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrap");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let first = region.write(&[0xAA; 100], EngineId::Wal).unwrap();
    let stale = region.slot_ref(first).unwrap();
    region.write(&[0xBB; 100], EngineId::Wal).unwrap();
    drop(region);

    let mut bytes = std::fs::read(&path).unwrap();
    let counter = u64::from_le_bytes(bytes[72..80].try_into().unwrap());
    assert_eq!(
        counter,
        stale.generation() + 2,
        "the counter is where FORMAT.md says"
    );
    let wrapped = (1u64 << 32) + stale.generation();
    bytes[72..80].copy_from_slice(&wrapped.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let reader = OverflowReader::open(&path).unwrap();
    region.free(first).unwrap();
    let again = region.write(&[0xCC; 100], EngineId::Wal).unwrap();
    let fresh = region.slot_ref(again).unwrap();
    // The situation 2^32 writes produce: same index, place, length and
    // 32-bit generation, other bytes.
    assert_eq!(
        (
            fresh.slot(),
            fresh.offset(),
            fresh.len(),
            fresh.generation() as u32
        ),
        (
            stale.slot(),
            stale.offset(),
            stale.len(),
            stale.generation() as u32
        )
    );
    assert_eq!(fresh.generation(), stale.generation() + (1 << 32));
    let mut buf = Vec::new();
    match reader.read_into(&stale, &mut buf) {
        Err(Error::SlotChanged { .. }) => {}
        Ok(()) => panic!(
            "a handle made 2^32 writes ago read a later tenant's bytes ({:#04x}..., written as {:#04x})",
            buf[0], 0xAA
        ),
        Err(other) => panic!("{other}"),
    }
}

/// `SlotChanged` says why, and the reason for a plainly freed slot (its
/// header in bounds, tagged free) should say so. `load_header` returns
/// `None` both for an offset out of bounds and for a tag that is not live,
/// and `read_into` reports every `None` as "its header is out of bounds".
#[test]
fn reason_for_a_freed_slot_is_not_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 8 << 10, 1 << 20).unwrap();
    let freed = region.write(&[1; 100], EngineId::Wal).unwrap();
    region.write(&[2; 100], EngineId::Wal).unwrap();
    let handle = region.slot_ref(freed).unwrap();
    region.free(freed).unwrap();
    let reader = OverflowReader::open(&path).unwrap();
    match reader.read_into(&handle, &mut Vec::new()) {
        Err(Error::SlotChanged { reason, .. }) => assert!(
            !reason.contains("out of bounds"),
            "a freed slot at {} (file {} bytes) is reported as {reason:?}",
            handle.offset(),
            region.capacity()
        ),
        other => panic!("{other:?}"),
    }
}

/// A handle made up from parts that name a live slot of this file but a
/// place near the end of the address space is refused, not an overflow
/// (found in review: `read_ref` added to the offset unchecked, a panic in
/// a debug build).
#[test]
fn a_made_up_handle_at_the_end_of_the_offsets_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut region =
        OverflowRegion::open_with_config(&dir.path().join("r"), 1 << 20, 64 << 20).unwrap();
    let slot = region.write(b"some bytes", EngineId::Query).unwrap();
    let real = region.slot_ref(slot).unwrap();
    for offset in [u64::MAX, u64::MAX - 16, u64::MAX - 40] {
        let forged = SlotRef::from_parts(real.file(), slot as u32, real.generation(), offset, 10);
        assert!(
            matches!(region.read_ref(&forged), Err(Error::SlotChanged { .. })),
            "offset {offset}"
        );
    }
    assert_eq!(region.read_ref(&real).unwrap(), b"some bytes");
}

/// Where a reader reads with `pread` (tmpfs), its header comes in one call
/// with the word after it: tagged and untagged slots of every short length,
/// the last one ending the region, read back exactly.
#[test]
fn a_pread_reader_reads_tagged_and_untagged_slots_of_every_short_length() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let path = dir.path().join("short");
    let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 8 << 20).unwrap();
    let mut handles = Vec::new();
    for len in 0..=48usize {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
        let plain = region.write(&data, EngineId::Wal).unwrap();
        let tagged = region
            .write_tagged(&data, EngineId::Query, len as u64 + 1)
            .unwrap();
        handles.push((region.slot_ref(plain).unwrap(), data.clone()));
        handles.push((region.slot_ref(tagged).unwrap(), data));
    }
    let reader = OverflowReader::open(&path).unwrap();
    let mut out = Vec::new();
    for _ in 0..2 {
        for (handle, data) in &handles {
            reader.read_into(handle, &mut out).unwrap();
            assert_eq!(&out, data, "{handle:?}");
        }
    }
}
