//! `SpillDir` at its edges, from a review: core counts the budget cannot
//! hold.

use overflow_region::{Error, MemoryTuning, SpillDir, SpillMode};

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
