//! Criterion benchmarks of the standard workloads in
//! `overflow_region::workload`, the same ones `overflow-region bench` runs.
//!
//! ```text
//! cargo bench --bench region                 # everything, a few minutes
//! cargo bench --bench region -- reuse/       # one group
//! ```
//!
//! Each benchmark sets its workload up once, on first use (the 2 M writes and
//! 1 M frees of `reuse/1M` take a few seconds), and times only the measured op
//! through `iter_custom`; the workload module says what each op is. Targets on
//! a 2-core machine (docs/PERFORMANCE.md): `fresh_write/64B` >= 15 M writes/s,
//! `reuse/50k` >= 3 M writes/s, `reuse/1M` within 2x of `reuse/1k`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use overflow_region::workload::{Spec, Workload};

/// One criterion group per workload group, one benchmark per standard spec.
fn standard_workloads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for group_name in ["fresh_write", "read", "reuse", "churn"] {
        let mut group = c.benchmark_group(group_name);
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20);
        for spec in Spec::STANDARD
            .iter()
            .filter(|spec| spec.group() == group_name)
        {
            group.throughput(match spec {
                Spec::FreshWrite { size } => Throughput::Bytes(*size as u64),
                _ => Throughput::Elements(1),
            });
            // Criterion calls the closure once per sample: set up on the
            // first call only, and not at all if the benchmark is filtered out.
            let mut workload: Option<Workload> = None;
            group.bench_function(spec.id(), |b| {
                let workload = workload.get_or_insert_with(|| {
                    settle();
                    spec.setup(dir.path()).expect("workload set-up")
                });
                b.iter_custom(|iters| workload.run(iters).expect("workload run").elapsed);
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts, which a CI machine may lack
    // (it panicked with `FontUnavailable` here); the numbers are printed.
    config = Criterion::default().without_plots();
    targets = standard_workloads
}
criterion_main!(benches);

/// Flushes all dirty data of every file system to disk (`sync(2)`) and waits
/// for it, so the write-back (and, on a file system mounted with `discard`,
/// the discards) left by one workload are not billed to the next one.
fn settle() {
    rustix::fs::sync();
}
