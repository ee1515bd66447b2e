//! Kill-the-child crash test: a process killed with SIGKILL at any instant
//! loses nothing acknowledged.
//!
//! The test binary re-runs itself as the child (`child_entry`, which returns
//! at once unless `OVERFLOW_CRASH_CHILD` names a region file). The child
//! opens the region and loops forever doing random writes and frees. Around
//! every operation it prints one line to stdout, flushed, so the parent knows
//! what was acknowledged and what was in flight:
//!
//! ```text
//! @R <live slots>           region opened
//! @w <len> <seed>           about to write (content derived from len and seed)
//! @W <slot> <len> <seed>    write returned <slot>
//! @X                        write refused (capacity): nothing in flight
//! @f <slot>                 about to free
//! @F <slot>                 free returned
//! @c                        about to run a compaction step (moves extents;
//!                           every slot keeps its index and bytes)
//! @C <moved>                compaction step returned
//! ```
//!
//! The parent kills the child after a random delay, reads what is left in
//! the pipe, reopens the region and checks it against the acknowledged ops:
//! every slot whose last acknowledged op is a write reads back identical, no
//! other slot holds data, except that the one op in flight (a `@w` or `@f`
//! without its ack) may or may not have happened. A kill never damages
//! anything, so `recovery().dropped` must be empty and `check_consistency()`
//! must hold. Then the next round runs on the same file.
//!
//! `cargo test --test crash` runs a few dozen rounds (a few seconds);
//! `OVERFLOW_SOAK=1` runs 1000 (or `OVERFLOW_CRASH_ROUNDS=<n>`).
//! `OVERFLOW_SEED=<n>` fixes the random choices of the parent (kill times
//! still vary with scheduling).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use overflow_region::{EngineId, Error, OverflowRegion};

mod common;
use common::{Rng, mix};

/// Names the region file the child works on; absent in a normal test run.
const CHILD_PATH_ENV: &str = "OVERFLOW_CRASH_CHILD";
/// The child's random seed.
const CHILD_SEED_ENV: &str = "OVERFLOW_CRASH_CHILD_SEED";

const INITIAL_CAPACITY: usize = 64 << 10;
const MAX_CAPACITY: usize = 16 << 20;
/// The child frees more than it writes above this many live payload bytes.
const LIVE_TARGET: usize = 1 << 20;
/// Largest payload of the child's usual writes.
const MAX_PAYLOAD: usize = 20 << 10;
/// The largest payload, written once in 40 writes.
const LARGE_PAYLOAD: usize = 160 << 10;

/// The bytes of a write of `len` bytes with content seed `seed`. Every write
/// gets its own seed (from the child's seed and a counter), so the bytes say
/// which write they came from: a slot holding another slot's bytes is caught.
/// One seed in four gives mostly zeros (zero runs are common in real spills).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed ^ (len as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let sparse = seed.is_multiple_of(4);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let word = rng.next();
        let word = if sparse && !word.is_multiple_of(16) {
            0
        } else {
            word
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn engine_for(seed: u64) -> EngineId {
    EngineId::ALL[(seed % EngineId::ALL.len() as u64) as usize]
}

/// The user tag a write with this content seed stores: none (a plain
/// `write`) for a third of them, the content seed as the tag for the rest.
fn tag_for(seed: u64) -> u64 {
    if seed.is_multiple_of(3) { 0 } else { seed }
}

/// Writes `data` the way its seed says: `write` for untagged slots, and
/// `write_tagged` or `write_vectored` (in two parts) for tagged ones.
fn write_for(region: &mut OverflowRegion, data: &[u8], seed: u64) -> Result<usize, Error> {
    let (engine, tag) = (engine_for(seed), tag_for(seed));
    match (tag, seed % 2) {
        (0, _) => region.write(data, engine),
        (_, 0) => region.write_tagged(data, engine, tag),
        _ => {
            let (head, tail) = data.split_at(data.len() / 3);
            region.write_vectored(&[head, tail], engine, tag)
        }
    }
}

fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(40) {
        0..=19 => rng.below(257) as usize,
        20..=31 => 257 + rng.below(4096 - 257) as usize,
        32..=38 => 4096 + rng.below((MAX_PAYLOAD - 4096) as u64 + 1) as usize,
        // Long ones, across several pages and growth steps.
        _ => MAX_PAYLOAD + rng.below((LARGE_PAYLOAD - MAX_PAYLOAD) as u64 + 1) as usize,
    }
}

/// The child: does random ops on the region forever, announcing each one.
#[test]
#[ignore = "run as a child by kill_at_random_instants_loses_nothing_acknowledged"]
fn child_entry() {
    let path = std::env::var_os(CHILD_PATH_ENV)
        .expect("run as a child by kill_at_random_instants_loses_nothing_acknowledged");
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .expect("seed")
        .parse()
        .expect("numeric seed");
    let mut rng = Rng(seed);
    let mut out = std::io::stdout().lock();
    let mut emit = |line: String| {
        // One write(2) per line (well under PIPE_BUF, so atomic), flushed.
        out.write_all(line.as_bytes()).expect("stdout");
        out.flush().expect("stdout");
    };
    let mut region =
        OverflowRegion::open_with_config(Path::new(&path), INITIAL_CAPACITY, MAX_CAPACITY)
            .expect("the child opens the region");
    let mut live: Vec<usize> = (0..region.slot_count())
        .filter(|&slot| region.read(slot).is_ok())
        .collect();
    // The leading newline ends whatever the test harness printed before us.
    emit(format!("\n@R {}\n", live.len()));
    for counter in 0u64.. {
        if rng.below(50) == 0 {
            emit("@c\n".to_owned());
            let report = region
                .compact_step(rng.below(256 << 10))
                .expect("compaction step");
            emit(format!("@C {}\n", report.extents_moved));
            continue;
        }
        let free_percent = if region.live_bytes() > LIVE_TARGET {
            80
        } else {
            35
        };
        if !live.is_empty() && rng.below(100) < free_percent {
            let slot = live.swap_remove(rng.below(live.len() as u64) as usize);
            emit(format!("@f {slot}\n"));
            region.free(slot).expect("free of a live slot");
            emit(format!("@F {slot}\n"));
        } else {
            let len = payload_len(&mut rng);
            let content_seed = mix(seed ^ counter.wrapping_mul(0x2545_F491_4F6C_DD1D));
            emit(format!("@w {len} {content_seed}\n"));
            let data = content(len, content_seed);
            match write_for(&mut region, &data, content_seed) {
                Ok(slot) => {
                    live.push(slot);
                    emit(format!("@W {slot} {len} {content_seed}\n"));
                }
                Err(Error::CapacityExceeded { .. }) => emit("@X\n".to_owned()),
                Err(error) => panic!("write of {len} bytes failed: {error}"),
            }
        }
    }
}

/// What a slot holds according to the acknowledged ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    len: usize,
    seed: u64,
}

/// The op announced but not acknowledged when the child died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    Write(Written),
    Free(usize),
}

/// Applies the child's lines to `model`; returns the op still in flight.
fn apply(lines: &[String], model: &mut HashMap<usize, Written>) -> Option<InFlight> {
    let mut in_flight = None;
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 {
            fields
                .get(i)
                .and_then(|field| field.parse().ok())
                .unwrap_or_else(|| panic!("malformed child line {line:?}"))
        };
        match fields.first().copied() {
            Some("@R") => {
                assert_eq!(
                    num(1) as usize,
                    model.len(),
                    "the child found another number of live slots than the parent checked"
                );
            }
            Some("@w") => {
                in_flight = Some(InFlight::Write(Written {
                    len: num(1) as usize,
                    seed: num(2),
                }))
            }
            Some("@W") => {
                let written = Written {
                    len: num(2) as usize,
                    seed: num(3),
                };
                assert_eq!(in_flight, Some(InFlight::Write(written)), "{line}");
                let previous = model.insert(num(1) as usize, written);
                assert!(
                    previous.is_none(),
                    "write acknowledged into live slot {}",
                    num(1)
                );
                in_flight = None;
            }
            Some("@X") => in_flight = None,
            // A compaction step changes no slot's index or bytes.
            Some("@c") => in_flight = None,
            Some("@C") => {}
            Some("@f") => in_flight = Some(InFlight::Free(num(1) as usize)),
            Some("@F") => {
                let slot = num(1) as usize;
                assert_eq!(in_flight, Some(InFlight::Free(slot)), "{line}");
                assert!(model.remove(&slot).is_some(), "free of a dead slot {slot}");
                in_flight = None;
            }
            _ => panic!("unknown child line {line:?}"),
        }
    }
    in_flight
}

/// Reopens the region after a kill and checks it against `model` (updated
/// with the in-flight op if it turns out to have happened).
fn check_after_kill(
    path: &Path,
    model: &mut HashMap<usize, Written>,
    in_flight: Option<InFlight>,
    context: &str,
) {
    let region = OverflowRegion::open_with_config(path, INITIAL_CAPACITY, MAX_CAPACITY)
        .unwrap_or_else(|error| panic!("{context}: reopen after kill failed: {error}"));
    let report = region.recovery();
    assert!(
        report.dropped.is_empty(),
        "{context}: a kill damaged extents: {:?}",
        report.dropped
    );
    // Same boot: recovery read headers only, and every payload checks out.
    // Unless the kill came while the child was still creating the file:
    // then the open starts it anew, and nothing had been acknowledged.
    if report.initialised {
        assert!(
            model.is_empty(),
            "{context}: a file with acknowledged slots was started anew"
        );
    } else {
        assert!(report.trusted_same_boot, "{context}: {report:?}");
    }
    let verified = region.verify(|_, _| {});
    assert!(verified.damaged.is_empty(), "{context}: {verified:?}");
    region
        .check_consistency()
        .unwrap_or_else(|error| panic!("{context}: inconsistent after recovery: {error}"));

    let highest_known = model.keys().copied().max().map_or(0, |slot| slot + 1);
    let mut in_flight_write_landed = false;
    for slot in 0..region.slot_count().max(highest_known) {
        let got = region.read(slot);
        match (model.get(&slot).copied(), got) {
            (Some(written), Ok(bytes)) => {
                let expected = content(written.len, written.seed);
                assert!(
                    bytes == expected.as_slice(),
                    "{context}: slot {slot} reads back {} bytes that differ from the {} \
                     acknowledged (in flight: {in_flight:?})",
                    bytes.len(),
                    expected.len()
                );
                assert_eq!(
                    region.engine(slot).unwrap(),
                    engine_for(written.seed),
                    "{context}: slot {slot} engine"
                );
                assert_eq!(
                    region.tag(slot).unwrap(),
                    tag_for(written.seed),
                    "{context}: slot {slot} tag"
                );
            }
            (Some(_), Err(Error::SlotFree { .. } | Error::UnknownSlot { .. }))
                if in_flight == Some(InFlight::Free(slot)) =>
            {
                // The free in flight happened.
                model.remove(&slot);
            }
            (Some(_), Err(error)) => {
                panic!(
                    "{context}: acknowledged slot {slot} lost: {error} (in flight: {in_flight:?})"
                )
            }
            (None, Ok(bytes)) => {
                // Only the write in flight may have produced an unknown slot.
                let Some(InFlight::Write(written)) = in_flight else {
                    panic!(
                        "{context}: slot {slot} holds {} bytes but its last acknowledged op \
                         was a free or none (in flight: {in_flight:?})",
                        bytes.len()
                    );
                };
                assert!(
                    !in_flight_write_landed,
                    "{context}: two unknown slots hold data"
                );
                assert!(
                    bytes == content(written.len, written.seed).as_slice(),
                    "{context}: slot {slot} holds {} bytes that no write put there \
                     (in flight: {in_flight:?})",
                    bytes.len()
                );
                in_flight_write_landed = true;
                model.insert(slot, written);
            }
            (None, Err(Error::SlotFree { .. } | Error::UnknownSlot { .. })) => {}
            (None, Err(error)) => panic!("{context}: read({slot}) failed: {error}"),
        }
    }
    assert_eq!(
        region.live_slot_count(),
        model.len(),
        "{context}: live slot count"
    );
    let live_bytes: usize = model.values().map(|written| written.len).sum();
    assert_eq!(region.live_bytes(), live_bytes, "{context}: live bytes");
    // Enumeration after the kill lists exactly the model's slots, with
    // their tags, engines and lengths.
    let mut listed: Vec<(usize, u64, EngineId, usize)> = region
        .live_slots()
        .map(|entry| (entry.slot, entry.tag, entry.engine, entry.len))
        .collect();
    let mut expected: Vec<(usize, u64, EngineId, usize)> = model
        .iter()
        .map(|(&slot, w)| (slot, tag_for(w.seed), engine_for(w.seed), w.len))
        .collect();
    listed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(listed, expected, "{context}: live_slots()");
}

/// What one round of the child did.
struct Round {
    lines: Vec<String>,
    ready: bool,
}

/// Runs the child on `path` until a random kill; returns its lines.
fn run_child(path: &Path, child_seed: u64, rng: &mut Rng, context: &str) -> Round {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_PATH_ENV, path)
        .env(CHILD_SEED_ENV, child_seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let spawned = Instant::now();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Anything before a marker is the test harness talking.
            let Some(at) = line.find('@') else { continue };
            let line = line[at..].to_owned();
            if line.starts_with("@R") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    // One kill in four is timed from the spawn, so some land while the
    // child is still starting or recovering; the others from `@R`.
    let early = rng.below(4) == 0;
    let ready = if early {
        let delay = Duration::from_micros(rng.below(15_000));
        std::thread::sleep(delay.saturating_sub(spawned.elapsed()));
        false
    } else {
        let ready = ready_rx.recv_timeout(Duration::from_secs(60)).is_ok();
        let delay = Duration::from_micros(1_000 + rng.below(80_000));
        std::thread::sleep(delay);
        ready
    };
    let exited_early = child.try_wait().expect("try_wait");
    let _ = child.kill(); // SIGKILL
    let status = child.wait().expect("wait for the child");
    let lines = reader.join().expect("stdout reader");
    let stderr_text = stderr_reader.join().expect("stderr reader");
    if let Some(status) = exited_early {
        panic!("{context}: the child exited by itself ({status}) before the kill:\n{stderr_text}");
    }
    if !early && !ready {
        panic!("{context}: the child never became ready ({status}):\n{stderr_text}");
    }
    Round { lines, ready }
}

fn rounds() -> usize {
    if let Ok(rounds) = std::env::var("OVERFLOW_CRASH_ROUNDS") {
        return rounds.parse().expect("OVERFLOW_CRASH_ROUNDS is a number");
    }
    if std::env::var_os("OVERFLOW_SOAK").is_some() {
        1000
    } else {
        24
    }
}

fn base_seed() -> u64 {
    match std::env::var("OVERFLOW_SEED") {
        Ok(seed) => seed.parse().expect("OVERFLOW_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64),
    }
}

#[test]
fn kill_at_random_instants_loses_nothing_acknowledged() {
    if std::env::var_os(CHILD_PATH_ENV).is_some() {
        return; // we are a child that was asked to run another test
    }
    let seed = base_seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core-0.region");
    let mut model: HashMap<usize, Written> = HashMap::new();
    let mut ops = 0;
    let rounds = rounds();
    let started = Instant::now();
    for round in 0..rounds {
        let context = format!("seed {seed} round {round}");
        let child_seed = rng.next();
        let Round { lines, ready } = run_child(&path, child_seed, &mut rng, &context);
        if !path.exists() {
            assert!(!ready && lines.is_empty(), "{context}: the region vanished");
            continue; // killed before it created the file
        }
        ops += lines.len();
        let in_flight = apply(&lines, &mut model);
        check_after_kill(&path, &mut model, in_flight, &context);
    }
    println!(
        "crash: {rounds} rounds, {ops} lines of acknowledged ops, {} live slots at the end, {:?}",
        model.len(),
        started.elapsed()
    );
    assert!(ops > rounds, "the children did almost nothing: {ops} lines");
}
