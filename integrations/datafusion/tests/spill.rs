//! DataFusion queries that spill, run with the default disk manager and
//! with `OverflowSpillFactory`: the same results, every slot freed at the
//! end, a budget too small is `ResourcesExhausted`, and what a killed
//! process left in an ephemeral directory is gone at the next open.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_execution::spill_file::TempFileFactory as _;
use overflow_region::{MemoryTuning, SpillDir, SpillMode};
use overflow_region_datafusion::OverflowSpillFactory;

const MIB: u64 = 1 << 20;
const CORES: usize = 2;

/// About 12 MB of rows: `id`, a key `k` with few ties, a string `s`.
const TABLE: &str = "SELECT value AS id, (value * 7919) % 100003 AS k, \
     concat('row-', CAST((value * 31) % 1000003 AS VARCHAR), '-padding-padding') AS s \
     FROM range(0, 400000)";

const ORDER_BY: &str = "SELECT id, k, s FROM t ORDER BY k, id";
const GROUP_BY: &str =
    "SELECT k % 50021 AS g, count(*) AS n, sum(id) AS total FROM t GROUP BY g ORDER BY g";

fn tuning() -> MemoryTuning {
    MemoryTuning {
        overflow_initial_bytes: MIB as usize,
        overflow_max_bytes: 1 << 30,
        overflow_slack_percent: 0,
        ..MemoryTuning::default()
    }
}

fn spill_dir(path: &Path, budget: u64) -> Arc<SpillDir> {
    Arc::new(SpillDir::open(path, CORES, &tuning(), SpillMode::Ephemeral, budget).unwrap())
}

/// A context with a memory pool of `pool` bytes spilling through `mode`,
/// with the table `t` registered.
async fn context(pool: usize, mode: DiskManagerMode) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(pool, 1.0)
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(mode))
        .build_arc()
        .unwrap();
    let config = SessionConfig::new()
        // One sorter: with two, DataFusion's greedy pool lets one starve
        // the other's merge (flaky with either disk manager).
        .with_target_partitions(1)
        .with_batch_size(1024)
        .with_sort_spill_reservation_bytes(2 * MIB as usize);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let table = ctx.sql(TABLE).await.unwrap().collect().await.unwrap();
    let schema = table[0].schema();
    let mem = datafusion::datasource::MemTable::try_new(schema, vec![table]).unwrap();
    ctx.register_table("t", Arc::new(mem)).unwrap();
    ctx
}

/// Runs `sql`, returning its batches and the bytes its operators spilled.
async fn run(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(Vec<RecordBatch>, usize), DataFusionError> {
    let plan = ctx.sql(sql).await?.create_physical_plan().await?;
    let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await?;
    Ok((batches, spilled_bytes(plan.as_ref())))
}

fn spilled_bytes(plan: &dyn ExecutionPlan) -> usize {
    let own = plan
        .metrics()
        .and_then(|metrics| metrics.spilled_bytes())
        .unwrap_or(0);
    own + plan
        .children()
        .into_iter()
        .map(|child| spilled_bytes(child.as_ref()))
        .sum::<usize>()
}

/// The rows of `batches` as (first column, second column) pairs, in order.
fn pairs(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
    let mut rows = Vec::new();
    for batch in batches {
        let (a, b) = (
            batch.column(0).as_primitive::<Int64Type>(),
            batch.column(1).as_primitive::<Int64Type>(),
        );
        assert_eq!(a.null_count() + b.null_count(), 0);
        rows.extend(a.values().iter().copied().zip(b.values().iter().copied()));
    }
    rows
}

fn live_slots(dir: &SpillDir) -> u64 {
    (0..dir.cores())
        .map(|core| dir.core_stats(core).unwrap().live_slots)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilling_queries_give_the_default_disk_managers_results_and_free_every_slot() {
    let temp = tempfile::tempdir().unwrap();
    let pool = 24 * MIB as usize;
    let default = context(
        pool,
        DiskManagerMode::Directories(vec![temp.path().join("default")]),
    )
    .await;
    let dir = spill_dir(&temp.path().join("ours"), 1 << 30);
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(&dir), 64 << 10);
    let ours = context(pool, DiskManagerMode::Custom(Arc::new(factory.clone()))).await;

    for sql in [ORDER_BY, GROUP_BY] {
        let (expected, default_spilled) = run(&default, sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        let before = factory.stats();
        let (found, spilled) = run(&ours, sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        assert!(default_spilled > 0, "{sql}: the default did not spill");
        assert!(spilled > 0, "{sql}: nothing spilled through the factory");
        let stats = factory.stats();
        assert!(
            stats.files_created > before.files_created,
            "{sql}: {stats:?}"
        );
        assert!(
            stats.pieces_written > before.pieces_written,
            "{sql}: {stats:?}"
        );
        // The order of ORDER BY's rows, and every group, exactly.
        let (expected, found) = (pairs(&expected), pairs(&found));
        assert_eq!(expected.len(), found.len(), "{sql}");
        assert!(expected == found, "{sql}: the results differ");
        // Every spill file was dropped, and its slots freed.
        assert_eq!(stats.files_live, 0, "{sql}: {stats:?}");
        assert_eq!(stats.free_errors, 0, "{sql}: {stats:?}");
        assert_eq!(live_slots(&dir), 0, "{sql}");
    }
    // ORDER BY over 400 000 rows: 400 000 distinct (k, id) in order.
    let (sorted, _) = run(&ours, ORDER_BY).await.unwrap();
    let rows = pairs(&sorted);
    assert_eq!(rows.len(), 400_000);
    assert!(rows.windows(2).all(|w| (w[0].1, w[0].0) < (w[1].1, w[1].0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_too_small_for_the_query_is_resources_exhausted() {
    let temp = tempfile::tempdir().unwrap();
    // Room for a few pieces per core, far less than the spill needs.
    let dir = spill_dir(&temp.path().join("ours"), 2 * MIB);
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(&dir), 64 << 10);
    let ours = context(
        24 * MIB as usize,
        DiskManagerMode::Custom(Arc::new(factory.clone())),
    )
    .await;
    let error = run(&ours, ORDER_BY).await.unwrap_err();
    match error.find_root() {
        DataFusionError::ResourcesExhausted(message) => {
            assert!(message.contains("budget of 2097152 bytes"), "{message}");
        }
        other => panic!("expected ResourcesExhausted, got {other:?} (from {error})"),
    }
    assert!(dir.budget_used() <= 2 * MIB);
    // The failed query's files are dropped and freed (by tasks DataFusion
    // aborts, which may still be stopping).
    drop(ours);
    for _ in 0..500 {
        if factory.stats().files_live == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(factory.stats().files_live, 0);
    assert_eq!(live_slots(&dir), 0);
}

/// Runs in a child process: fills an ephemeral directory through the
/// factory and aborts, as a killed process would.
#[test]
#[ignore = "run as a child by an_ephemeral_directory_left_by_a_killed_process_is_cleaned_at_the_next_open"]
fn child_spills_and_aborts() {
    let Some(path) = std::env::var_os("SPILL_CHILD_DIR") else {
        return;
    };
    let dir = spill_dir(Path::new(&path), 1 << 30);
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::clone(&dir), 64 << 10);
    let file = factory.create_temp_file("left behind").unwrap();
    let mut writer = file.open_writer().unwrap();
    writer.write_all(&vec![7u8; 3 << 20]).unwrap();
    writer.finish().unwrap();
    assert_eq!(file.size(), Some(3 << 20));
    std::process::abort();
}

#[test]
fn an_ephemeral_directory_left_by_a_killed_process_is_cleaned_at_the_next_open() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("spill");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_spills_and_aborts",
            "--ignored",
            "--nocapture",
        ])
        .env("SPILL_CHILD_DIR", &path)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die, not exit");
    // What the child left: its region files, holding its slots.
    let left: u64 = (0..CORES)
        .map(|core| {
            std::fs::metadata(path.join(format!("core-{core}")))
                .unwrap()
                .len()
        })
        .sum();
    assert!(left >= 3 * MIB, "the child left {left} bytes");

    let dir = spill_dir(&path, 1 << 30);
    assert_eq!(live_slots(&dir), 0);
    // Each core's new, empty file: its initial capacity.
    assert!(
        dir.used_disk_space() <= CORES as u64 * MIB,
        "{}",
        dir.used_disk_space()
    );
    drop(dir);
    assert!(!path.join("core-0").exists());
}
