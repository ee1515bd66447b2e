//! The spill writer on its own, without a query: a region full to its
//! maximum capacity sends pieces to the other cores, a write that fails
//! leaves none of its bytes behind, and the error of a spill no core takes
//! is `ResourcesExhausted` with the numbers of the refusal.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion_execution::spill_file::{SpillFile, SpillWriter, TempFileFactory as _};
use futures::StreamExt as _;
use overflow_region::{MemoryTuning, SpillDir, SpillMode};
use overflow_region_datafusion::OverflowSpillFactory;

const MIB: usize = 1 << 20;

/// An ephemeral directory of `cores` regions of at most `max` bytes each,
/// sharing a budget of `budget` bytes.
fn spill_dir(path: &Path, cores: usize, max: usize, budget: u64) -> Arc<SpillDir> {
    let tuning = MemoryTuning {
        overflow_initial_bytes: 64 << 10,
        overflow_max_bytes: max,
        overflow_slack_percent: 0,
        ..MemoryTuning::default()
    };
    Arc::new(SpillDir::open(path, cores, &tuning, SpillMode::Ephemeral, budget).unwrap())
}

/// Everything `file` holds, read through its stream.
fn read_all(file: &dyn SpillFile) -> Vec<u8> {
    futures::executor::block_on(async {
        let mut stream = file.read_stream().unwrap();
        let mut all = Vec::new();
        while let Some(piece) = stream.next().await {
            all.extend_from_slice(&piece.unwrap());
        }
        all
    })
}

/// The message of the `ResourcesExhausted` inside a writer's error (as
/// DataFusion finds it when the error comes out of its `io::Write`).
fn resources_exhausted(error: std::io::Error) -> String {
    let error = DataFusionError::IoError(error);
    match error.find_root() {
        DataFusionError::ResourcesExhausted(message) => message.clone(),
        other => panic!("expected ResourcesExhausted, got {other:?} (from {error})"),
    }
}

/// The number that follows `before` in `message`.
fn number_after(message: &str, before: &str) -> u64 {
    let at = message
        .find(before)
        .unwrap_or_else(|| panic!("no {before:?} in {message:?}"))
        + before.len();
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {before:?} in {message:?}"))
}

/// `len` bytes of a pattern whose period (251) divides no piece size, so
/// pieces read back out of order or twice do not compare equal.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_region_full_to_its_maximum_capacity_sends_pieces_to_the_other_cores() {
    let temp = tempfile::tempdir().unwrap();
    // 6 MiB into two regions of at most 4 MiB each, far inside the budget.
    let dir = spill_dir(temp.path(), 2, 4 * MIB, 64 * MIB as u64);
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(&dir), 64 << 10);
    let file = factory.create_temp_file("sort run").unwrap();
    let mut writer = file.open_writer().unwrap();
    let data = data(6 * MIB);
    if let Err(error) = writer.write_all(&data).and_then(|()| writer.flush()) {
        panic!("{error} ({} bytes of the budget in use)", dir.budget_used());
    }
    writer.finish().unwrap();
    assert_eq!(file.size(), Some(data.len() as u64));
    assert!(
        read_all(file.as_ref()) == data,
        "the file reads back other bytes"
    );
    for core in 0..2 {
        let stats = dir.core_stats(core).unwrap();
        assert!(
            stats.live_slots > 0,
            "core {core} holds no piece: {stats:?}"
        );
    }
    drop((writer, file));
    assert_eq!(factory.stats().files_live, 0);
    for core in 0..2 {
        assert_eq!(dir.core_stats(core).unwrap().live_slots, 0);
    }
}

#[test]
fn every_region_full_is_resources_exhausted_with_the_numbers() {
    let temp = tempfile::tempdir().unwrap();
    let piece = 64 << 10;
    let (max, budget) = (4 * MIB, 64 * MIB as u64);
    let dir = spill_dir(temp.path(), 2, max, budget);
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(&dir), piece);
    let file = factory.create_temp_file("sort run").unwrap();
    let mut writer = file.open_writer().unwrap();
    let data = data(10 * MIB);
    let message = resources_exhausted(writer.write_all(&data).unwrap_err());
    eprintln!("{message}");
    // The piece asked for, the capacity that refused it, the budget and
    // what is in use.
    assert!(message.contains("sort run"), "{message}");
    assert_eq!(
        number_after(&message, "a piece of "),
        piece as u64,
        "{message}"
    );
    assert!(
        number_after(&message, "an extent of ") > piece as u64,
        "the extent holds the piece and its header: {message}"
    );
    assert_eq!(number_after(&message, "of its "), max as u64, "{message}");
    assert!(
        message.contains(&format!("budget of {budget} bytes")),
        "{message}"
    );
    let used = number_after(&message, "at its end); ");
    assert!(used > 0 && used < budget, "{message}");
    // What was written before stays, byte for byte.
    let size = file.size().unwrap() as usize;
    assert!(size > 6 * MIB, "{size} bytes written before the refusal");
    assert!(
        read_all(file.as_ref()) == data[..size],
        "the file reads back other bytes"
    );
}

#[test]
fn the_budget_error_names_the_piece_and_the_growth_it_was_refused() {
    let temp = tempfile::tempdir().unwrap();
    let piece = 256 << 10;
    let budget = MIB as u64;
    let dir = spill_dir(temp.path(), 2, 64 * MIB, budget);
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(&dir), piece);
    let file = factory.create_temp_file("sort run").unwrap();
    let mut writer = file.open_writer().unwrap();
    let message = resources_exhausted(writer.write_all(&vec![0u8; 4 * MIB]).unwrap_err());
    eprintln!("{message}");
    assert_budget_refusal(&message, budget, piece);
}

/// `message` names the budget, the piece, and the numbers of the budget's
/// refusal itself: a growth that does not fit in what the budget had left.
fn assert_budget_refusal(message: &str, budget: u64, piece: usize) {
    assert!(
        message.contains(&format!("budget of {budget} bytes")),
        "{message}"
    );
    assert_eq!(
        number_after(message, "a piece of "),
        piece as u64,
        "{message}"
    );
    let requested = number_after(message, "grow by ");
    let used = number_after(message, ") while ");
    assert!(requested > 0 && used <= budget, "{message}");
    assert!(used + requested > budget, "{message}");
}

#[test]
fn a_piece_refused_by_the_budget_and_by_a_full_region_names_both() {
    let temp = tempfile::tempdir().unwrap();
    let piece = 64 << 10;
    let (max, budget) = (4 * MIB, 6 * MIB as u64);
    // Core 0 fills to its maximum capacity inside the budget; core 1 then
    // grows until the budget refuses it.
    let dir = spill_dir(temp.path(), 2, max, budget);
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(&dir), piece);
    let file = factory.create_temp_file("sort run").unwrap();
    let mut writer = file.open_writer().unwrap();
    let data = data(10 * MIB);
    let message = resources_exhausted(writer.write_all(&data).unwrap_err());
    eprintln!("{message}");
    assert_budget_refusal(&message, budget, piece);
    assert!(
        number_after(&message, "an extent of ") > piece as u64,
        "{message}"
    );
    assert_eq!(number_after(&message, "of its "), max as u64, "{message}");
    let size = file.size().unwrap() as usize;
    assert!(
        read_all(file.as_ref()) == data[..size],
        "the file reads back other bytes"
    );
}

/// A writer holding `head` gathered whose next write (of `tail`, filling
/// the piece) fails because another file holds the whole budget; the
/// other file is dropped before returning, so there is room again.
fn a_write_refused_by_the_budget(
    dir: &Arc<SpillDir>,
    head: &[u8],
    tail: &[u8],
) -> (Arc<dyn SpillFile>, Box<dyn SpillWriter>) {
    let piece = head.len() + tail.len() / 2;
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(dir), piece);
    assert_eq!(factory.piece_bytes(), piece);
    let blocker = factory.create_temp_file("blocker").unwrap();
    let mut blocker_writer = blocker.open_writer().unwrap();
    while blocker_writer.write(&vec![1u8; piece]).is_ok() {}
    let file = factory.create_temp_file("victim").unwrap();
    let mut writer = file.open_writer().unwrap();
    writer.write_all(head).unwrap();
    let failed = writer.write(tail);
    assert!(
        failed.is_err(),
        "the budget is full ({} of {} bytes in use): {failed:?}",
        dir.budget_used(),
        dir.budget_bytes()
    );
    // While the budget is still full, a flush fails too and keeps what
    // it had.
    assert!(writer.flush().is_err());
    drop(blocker_writer);
    drop(blocker);
    (file, writer)
}

#[test]
fn a_failed_write_can_be_retried() {
    let temp = tempfile::tempdir().unwrap();
    let dir = spill_dir(temp.path(), 1, 64 * MIB, 512 << 10);
    let (head, tail) = (vec![2u8; (64 << 10) - 100], vec![9u8; 200]);
    let (file, mut writer) = a_write_refused_by_the_budget(&dir, &head, &tail);
    // `io::Write`: an `Err` wrote nothing, so the caller writes the same
    // bytes again.
    writer.write_all(&tail).unwrap();
    writer.finish().unwrap();
    let found = read_all(file.as_ref());
    assert_eq!(found.len(), head.len() + tail.len());
    assert!(
        found == [head, tail].concat(),
        "the file reads back other bytes"
    );
}

#[test]
fn a_flush_after_a_failed_write_writes_only_what_was_accepted() {
    let temp = tempfile::tempdir().unwrap();
    let dir = spill_dir(temp.path(), 1, 64 * MIB, 512 << 10);
    let (head, tail) = (vec![2u8; (64 << 10) - 100], vec![9u8; 200]);
    let (file, mut writer) = a_write_refused_by_the_budget(&dir, &head, &tail);
    writer.flush().unwrap();
    assert_eq!(file.size(), Some(head.len() as u64));
    writer.finish().unwrap();
    assert!(
        read_all(file.as_ref()) == head,
        "the file reads back other bytes"
    );
}
