//! `SpillDir` at its edges, from a review: core counts the budget cannot
//! hold, and symbolic links among the cores' files. (A core's region
//! swapped through `with_core` is a compile-fail example on `CoreRegion`.)

use std::path::Path;

use overflow_region::{EngineId, Error, MemoryTuning, SpillDir, SpillMode};

const MIB: usize = 1 << 20;

fn tuning() -> MemoryTuning {
    MemoryTuning {
        overflow_initial_bytes: MIB,
        overflow_max_bytes: 256 * MIB,
        ..MemoryTuning::default()
    }
}

/// A number of cores so large that the budget's minimum for them does not
/// fit in a u64 is a configuration error, like any other count the budget
/// cannot hold: not a panic (found in review: "attempt to multiply with
/// overflow" while formatting the message).
#[test]
fn a_huge_number_of_cores_is_a_configuration_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for cores in [usize::MAX, usize::MAX / 2, 1 << 62] {
        let result = std::panic::catch_unwind(|| {
            SpillDir::open(dir.path(), cores, &tuning(), SpillMode::Ephemeral, 16 << 20)
        });
        let error = result
            .unwrap_or_else(|_| panic!("open of {cores} cores panicked"))
            .unwrap_err();
        let Error::InvalidConfig { reason } = &error else {
            panic!("{error:?}");
        };
        assert!(reason.contains(&format!("{cores} cores")), "{reason}");
    }
}

/// No cores is refused with a message that does not name a budget that
/// would be enough: no budget is (found in review: "needs a budget of at
/// least 8192 bytes ..., not 1073741824").
#[test]
fn no_cores_is_refused_without_a_wrong_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let error =
        SpillDir::open(dir.path(), 0, &tuning(), SpillMode::Ephemeral, 1 << 30).unwrap_err();
    let Error::InvalidConfig { reason } = &error else {
        panic!("{error:?}");
    };
    assert!(!reason.contains("at least"), "{reason}");
    assert!(reason.contains("0 cores"), "{reason}");
}

/// Writes `bytes` into core 0 of a persistent directory at `dir` with a
/// large budget, and closes it.
fn persistent_core_0_of(dir: &Path, bytes: usize) {
    let spill = SpillDir::open(dir, 1, &tuning(), SpillMode::Persistent, 1 << 30).unwrap();
    let data = vec![7u8; bytes];
    spill
        .with_core(0, |region| region.write(&data, EngineId::Query))
        .unwrap();
}

/// A persistent directory whose `core-0` is a symbolic link to a region
/// file opens as it would with the file itself there, even when the file
/// is longer than the budget: the maximum capacity of the core is sized by
/// the file's length, not the link's (found in review: the link's length,
/// a few bytes, made the core's maximum capacity too small for the file,
/// and the open was refused).
#[test]
fn a_symlinked_core_file_longer_than_the_budget_opens_as_the_file_would() {
    let budget = 16 << 20;
    // The file itself there: it opens, charged as it is.
    let plain = tempfile::tempdir().unwrap();
    persistent_core_0_of(plain.path(), 40 * MIB);
    let spill = SpillDir::open(plain.path(), 1, &tuning(), SpillMode::Persistent, budget).unwrap();
    assert!(spill.budget_used() > budget);
    drop(spill);

    // The same file elsewhere, named by a link.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    persistent_core_0_of(elsewhere.path(), 40 * MIB);
    let target = elsewhere.path().join("core-0");
    std::os::unix::fs::symlink(&target, dir.path().join("core-0")).unwrap();
    let spill = SpillDir::open(dir.path(), 1, &tuning(), SpillMode::Persistent, budget)
        .unwrap_or_else(|error| panic!("a linked core file was refused: {error}"));
    let live = spill
        .with_core(0, |region| Ok(region.live_slot_count()))
        .unwrap();
    assert_eq!(live, 1);
    assert!(spill.budget_used() >= std::fs::metadata(&target).unwrap().len());
}

/// An ephemeral directory starts empty: a header map a previous run left
/// without its region file (`core-0.headers`, here 8 MiB of it) is not
/// charged to the new run's budget, and nothing of it is left when the
/// directory is dropped.
#[test]
fn an_ephemeral_open_takes_a_stray_header_map_out_of_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let stray = dir.path().join("core-0.headers");
    std::fs::write(&stray, vec![0u8; 8 * MIB]).unwrap();
    std::fs::write(dir.path().join("core-1.headers.new"), vec![0u8; MIB]).unwrap();
    let budget = 16 << 20;
    let spill = SpillDir::open(dir.path(), 2, &tuning(), SpillMode::Ephemeral, budget).unwrap();
    let files: u64 = (0..2)
        .map(|core| {
            std::fs::metadata(dir.path().join(format!("core-{core}")))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        spill.budget_used(),
        files,
        "the budget charges more than the region files"
    );
    drop(spill);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "an ephemeral directory left {left:?}");
}

/// The lengths of the directory's region files and header maps, as the
/// file system has them.
fn lengths_on_disk(spill: &SpillDir) -> u64 {
    std::fs::read_dir(spill.path())
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}

/// Threads writing and freeing on every core under a budget they keep
/// hitting, one core's reader open part of the time (the file is punched
/// then, not shrunk): at the end the budget charges exactly what the files
/// hold, and everything acknowledged reads back.
#[test]
fn the_budget_matches_the_files_after_threads_churn_against_it() {
    for mode in [SpillMode::Ephemeral, SpillMode::Persistent] {
        let dir = tempfile::tempdir().unwrap();
        let tuning = MemoryTuning {
            overflow_initial_bytes: 256 << 10,
            overflow_max_bytes: 64 * MIB,
            overflow_slack_percent: 0,
            ..MemoryTuning::default()
        };
        let spill = SpillDir::open(dir.path(), 3, &tuning, mode, 6 << 20).unwrap();
        let reader = spill.open_reader(1).unwrap();
        let refused = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for thread in 0..4u64 {
                let spill = &spill;
                let refused = &refused;
                s.spawn(move || {
                    let mut state = thread.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    let mut next = move || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state
                    };
                    let mut live: Vec<(usize, usize, Vec<u8>)> = Vec::new();
                    for _ in 0..1500 {
                        let core = (next() % 3) as usize;
                        if next() % 3 == 0 && !live.is_empty() {
                            let (core, slot, bytes) =
                                live.swap_remove(next() as usize % live.len());
                            spill
                                .with_core(core, |region| {
                                    assert_eq!(region.read(slot)?, &bytes[..]);
                                    region.free(slot)
                                })
                                .unwrap();
                            continue;
                        }
                        let len = 1 + (next() % (600 << 10)) as usize;
                        let bytes = vec![(next() % 251) as u8; len];
                        match spill.with_core(core, |region| region.write(&bytes, EngineId::Query))
                        {
                            Ok(slot) => live.push((core, slot, bytes)),
                            Err(Error::BudgetExceeded { .. }) => {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(error) => panic!("{error}"),
                        }
                    }
                    for (core, slot, bytes) in live {
                        spill
                            .with_core(core, |region| {
                                assert_eq!(region.read(slot)?, &bytes[..]);
                                Ok(())
                            })
                            .unwrap();
                    }
                });
            }
        });
        assert!(refused.into_inner() > 0, "the budget was never hit");
        assert!(spill.budget_used() <= spill.budget_bytes());
        assert_eq!(spill.budget_used(), lengths_on_disk(&spill), "{mode:?}");
        drop(reader);
        for core in 0..3 {
            spill.with_core(core, |region| region.sync()).unwrap();
        }
        assert_eq!(
            spill.budget_used(),
            lengths_on_disk(&spill),
            "{mode:?} synced"
        );
    }
}

/// Only the names the directory gives its files (`core-0`, `core-17`) are
/// its files: an ephemeral open leaves a file named otherwise alone, as a
/// persistent one does, instead of refusing to open because it is not a
/// region file (found in review: `core-007` and `core-` followed by 30
/// digits made an ephemeral open fail with `NotARegion`).
#[test]
fn an_ephemeral_open_leaves_files_of_other_names_alone() {
    let dir = tempfile::tempdir().unwrap();
    let others = [
        "core-007",
        "core-123456789012345678901234567890",
        "core-01.headers",
    ];
    for name in others {
        std::fs::write(dir.path().join(name), b"not the spill directory's").unwrap();
    }
    let spill = SpillDir::open(dir.path(), 2, &tuning(), SpillMode::Ephemeral, 16 << 20)
        .unwrap_or_else(|error| panic!("refused: {error}"));
    drop(spill);
    for name in others {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            b"not the spill directory's",
            "{name}"
        );
    }
}

/// What `a_huge_core_count_under_a_huge_budget_fails_without_aborting`
/// runs in its child.
const HUGE_CHILD: &str = "OVERFLOW_REVIEW_HUGE_CORES_CHILD";

/// 2^40 cores under a budget large enough for them is an error once the
/// cores cannot all be opened (here the child may hold 64 descriptors),
/// not an abort (found in review: the open reserved memory for 2^40
/// cores up front, and the allocation failure aborted the process).
#[test]
fn a_huge_core_count_under_a_huge_budget_fails_without_aborting() {
    if std::env::var_os(HUGE_CHILD).is_some() {
        let dir = std::path::PathBuf::from(std::env::var_os(HUGE_CHILD).unwrap());
        let tuning = MemoryTuning {
            overflow_initial_bytes: 64 << 10,
            overflow_max_bytes: MIB,
            ..MemoryTuning::default()
        };
        let result = SpillDir::open(&dir, 1 << 40, &tuning, SpillMode::Ephemeral, u64::MAX);
        println!("result: {:?}", result.map(|_| ()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" --exact \"$1\" --nocapture")
        .arg(std::env::current_exe().unwrap())
        .arg("a_huge_core_count_under_a_huge_budget_fails_without_aborting")
        .env(HUGE_CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("result: Err("),
        "{:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "the failed open left {} files", left.len());
}

/// A `core-N` that is a symbolic link naming nothing: an ephemeral open
/// says so (it used to say only "No such file or directory" about a name
/// `ls` shows), and leaves the link alone. A region opened through a link
/// into a directory that does not exist says the same.
#[test]
fn a_dangling_core_link_is_named_as_one() {
    use overflow_region::OverflowRegion;
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let target = dir.path().join("gone");
    let link = spill.join("core-0");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let error = SpillDir::open(
        &spill,
        1,
        &MemoryTuning::default(),
        SpillMode::Ephemeral,
        64 << 20,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("a symbolic link to") && error.contains(&target.display().to_string()),
        "{error}"
    );
    assert!(std::fs::symlink_metadata(&link).is_ok(), "the link is left");
    assert!(!target.exists());

    let nowhere = dir.path().join("no-such-dir").join("region");
    let link = dir.path().join("region");
    std::os::unix::fs::symlink(&nowhere, &link).unwrap();
    let error = OverflowRegion::open_with_config(&link, 1 << 20, 8 << 20)
        .unwrap_err()
        .to_string();
    assert!(error.contains("which names nothing"), "{error}");
}
