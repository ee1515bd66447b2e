//! # peers: overflow-region beside the alternatives
//!
//! `cargo run --release -p peers` runs the same workloads against five
//! systems in one process and writes `docs/PEERS.md` (a markdown table of
//! each system's figures and its ratio to ours, with the machine it ran on)
//! and `docs/peers.png` (a grouped bar chart of throughput relative to ours).
//! `--quick` makes a smaller run (about a tenth of the work) for a quick
//! look; `--reps N` sets the repetitions (default 5). For investigating:
//! `--only WORD` runs only the workloads whose name contains WORD,
//! `--systems ours,nodedb-mem` only the systems named, and `--no-punch` /
//! `--no-shrink` open ours with hole punching / shrinking off; with any of
//! these the files are not written unless `--out-dir` is given.
//!
//! ## The systems
//!
//! | column | what |
//! |---|---|
//! | ours | `overflow_region::OverflowRegion` (this workspace) |
//! | nodedb-mem 0.0.6 | `nodedb_mem::OverflowRegion` from `nodedb-mem = "=0.0.6"`: same API, a bump allocator with a best-fit free list that scans every freed slot, slot metadata in memory only |
//! | LMDB (heed) | an LMDB env with one database, `u64` big-endian key -> bytes; writes in write transactions of 1000 operations (fewer for large values, at most 64 MiB of payload per transaction), reads in read transactions of 1000 reads, copied into a reused buffer; `NO_SYNC` (no fsync per commit: the others do not fsync per write either) |
//! | pwrite file | a temporary file written with `pwrite` and read with `pread` (`FileExt::write_all_at` / `read_exact_at`) into a reused buffer; an in-memory index `Vec<(offset, capacity, len)>`, freed extents in a `BTreeMap<capacity, Vec<offset>>` (best fit, no splitting, no merging): what a query engine does when it spills |
//! | in-memory slab | `slab::Slab<Box<[u8]>>`: the ceiling; nothing durable |
//!
//! ## The workloads
//!
//! | row | set-up (untimed) | one measured operation |
//! |---|---|---|
//! | fresh write SIZE | a new, empty store (mmap regions start at 64 MiB) | one write of SIZE bytes |
//! | read SIZE | N writes of SIZE bytes | one read of a random slot (SplitMix64, fixed seed): get the bytes, add first and last byte to a sink |
//! | write+free N | 2N writes of log-uniform 16 B..4 KiB, every other one freed | a write of a log-uniform 16 B..4 KiB size, then a free of that new slot (so N freed extents stay) |
//! | churn | a new store (mmap regions start at 1 MiB), writes of log-uniform 16 B..64 KiB up to 32 MiB live, then untimed churn to a steady state | free a random live slot, write one of a random size |
//! | reopen | the `read 64 B` stores (N slots) | close, then open again (ours recovers every slot; nodedb-mem 0.0.6 maps the file and forgets every slot; LMDB opens the env and database; the pwrite file cannot rebuild its index: n/a) |
//!
//! Churn runs a second region of ours beside the others, opened with the
//! give-back policy off (no hole punching, `overflow_punch_hole_bytes = 0`,
//! and no automatic compaction, `overflow_auto_compact = false`), taking its
//! turn right after ours: the diagnostic row shows what keeping the disk
//! budget costs on the machine's file system (it is left out of the targets
//! and the chart).
//!
//! After churn, each store's file size, used bytes and allocated blocks are
//! divided by the live payload bytes (the fragmentation rows).
//!
//! Each figure is the median of `--reps` passes. Within a repetition the
//! systems take turns (ours, nodedb-mem, LMDB, pwrite, memory, then the next
//! repetition starting one system later), so a slow spell of the machine
//! hits them all. A pass does a fixed number of operations, or fewer when a
//! time budget runs out first (nodedb-mem 0.0.6 with many freed slots
//! manages only a few hundred writes a second); the table gives the rate,
//! and `docs/PEERS.md` lists the operations each pass did.
//!
//! Every workload also reads slots back (untimed) and counts reads that
//! return the wrong length or the wrong bytes; nodedb-mem 0.0.6 hands a
//! reused slot back at its old length.
//!
//! ## Files and fonts
//!
//! Stores live in a directory under `std::env::temp_dir()` that is removed at
//! the end (also on a panic). The chart's font is DejaVu Sans, embedded
//! through the `dejavu` crate and rendered by plotters' `ab_glyph` backend:
//! no system fonts or fontconfig are needed.

mod chart;
mod report;
mod stores;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::report::{Frag, Row, Unit};
use crate::stores::{AnyStore, DEFAULT_INITIAL, Kind, Reopened};

/// Churn starts the mmap regions with small files, so their file size after
/// churn shows their growth policy rather than the initial size.
const CHURN_INITIAL: usize = 1 << 20;
use crate::workloads::{Check, Live, Plan, Rate};

#[derive(Parser, Debug)]
#[command(about = "Runs the same workloads against overflow-region and its peers")]
struct Args {
    /// A smaller run (about a tenth of the work), for a quick look.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Run only the workloads whose name contains this (fresh, read,
    /// write+free, churn, reopen).
    #[arg(long)]
    only: Option<String>,
    /// Run only these systems (comma-separated: ours, nodedb-mem, lmdb, pwrite,
    /// memory), e.g. to profile one; ratios need `ours`.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    systems: Option<Vec<Kind>>,
    /// Diagnostic: open ours with hole punching off
    /// (`overflow_punch_hole_bytes = 0`).
    #[arg(long)]
    no_punch: bool,
    /// Diagnostic: open ours with automatic compaction off
    /// (`overflow_auto_compact = false`).
    #[arg(long)]
    no_auto_compact: bool,
    /// Diagnostic: open ours with shrinking off (`overflow_shrink = false`).
    #[arg(long)]
    no_shrink: bool,
    /// Where to write PEERS.md and peers.png (default: the workspace's docs/,
    /// unless --only is given, then nothing is written).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn parse_kind(name: &str) -> Result<Kind, String> {
    Kind::ALL
        .into_iter()
        .find(|kind| kind.short() == name)
        .ok_or_else(|| format!("unknown system {name:?} (ours, nodedb-mem, lmdb, pwrite, memory)"))
}

/// Counts and budgets of one run.
struct Scale {
    fresh: [(usize, Plan); 3],
    read: [(usize, usize, Plan); 2],
    reuse: Vec<(usize, Plan)>,
    churn_live: u64,
    churn_warm_up: u64,
    churn: Plan,
}

fn plan(max_ops: u64, budget_ms: u64) -> Plan {
    Plan {
        max_ops,
        budget: Duration::from_millis(budget_ms),
    }
}

impl Scale {
    fn new(quick: bool) -> Scale {
        if quick {
            Scale {
                fresh: [
                    (64, plan(100_000, 400)),
                    (4 << 10, plan(16_000, 400)),
                    (1 << 20, plan(64, 400)),
                ],
                read: [
                    (64, 100_000, plan(200_000, 400)),
                    (4 << 10, 16_000, plan(200_000, 400)),
                ],
                reuse: vec![
                    (1_000, plan(200_000, 300)),
                    (50_000, plan(200_000, 300)),
                    (100_000, plan(200_000, 300)),
                ],
                churn_live: 32 << 20,
                churn_warm_up: 10_000,
                churn: plan(20_000, 600),
            }
        } else {
            Scale {
                fresh: [
                    (64, plan(1_000_000, 1500)),
                    (4 << 10, plan(65_536, 1500)),
                    (1 << 20, plan(256, 1500)),
                ],
                read: [
                    (64, 1_000_000, plan(1_000_000, 1500)),
                    (4 << 10, 65_536, plan(1_000_000, 1500)),
                ],
                reuse: vec![
                    (1_000, plan(1_000_000, 1000)),
                    (50_000, plan(1_000_000, 1000)),
                    (1_000_000, plan(1_000_000, 1000)),
                ],
                churn_live: 32 << 20,
                churn_warm_up: 50_000,
                churn: plan(200_000, 3000),
            }
        }
    }
}

/// The run's state: where stores go, what has been measured.
struct Ctx {
    base: PathBuf,
    data: Vec<u8>,
    reps: usize,
    only: Option<String>,
    /// The systems run (all unless `--systems`).
    kinds: Vec<Kind>,
    /// `--no-punch` or `--no-auto-compact`: ours already runs with part of
    /// the give-back policy off.
    no_punch: bool,
    rows: Vec<Row>,
    frag: Vec<Frag>,
    /// Read-back checks per workload and system.
    checks: Vec<(String, Kind, Check)>,
    started: Instant,
}

impl Ctx {
    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }

    /// The systems in turn for repetition `rep`, starting one later each time.
    fn order(&self, rep: usize) -> Vec<Kind> {
        let n = self.kinds.len();
        (0..n).map(|i| self.kinds[(i + rep) % n]).collect()
    }

    fn dir(&self, name: &str, kind: Kind) -> PathBuf {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.base.join(format!("{clean}-{}", kind.short()))
    }

    fn progress(&self, what: &str) {
        eprintln!("[{:6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn record_check(&mut self, name: &str, kind: Kind, check: Check) {
        match self
            .checks
            .iter_mut()
            .find(|(n, k, _)| n == name && *k == kind)
        {
            Some((_, _, total)) => *total += check,
            None => self.checks.push((name.to_owned(), kind, check)),
        }
    }
}

/// The entry of `kind` in a list of per-system stores.
fn find<T>(stores: &mut [T], kind: Kind, kind_of: impl Fn(&T) -> Kind) -> &mut T {
    stores
        .iter_mut()
        .find(|s| kind_of(s) == kind)
        .expect("a store for every system run")
}

/// Removes the temporary directory when dropped (also on a panic).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remove_store(store: AnyStore, dir: &Path) {
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let args = Args::parse();
    assert!(args.reps >= 1, "--reps must be at least 1");
    let started = Instant::now();
    stores::set_ours_tuning(stores::OursTuning {
        no_punch: args.no_punch,
        no_auto_compact: args.no_auto_compact,
        no_shrink: args.no_shrink,
    });
    let base = std::env::temp_dir().join(format!("overflow-region-peers-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("create temp dir");
    let _cleanup = TempDir(base.clone());
    let machine = report::Machine::probe(&base);
    let scale = Scale::new(args.quick);
    let mut ctx = Ctx {
        base,
        data: workloads::payload(),
        reps: args.reps,
        only: args.only.clone(),
        kinds: args.systems.clone().unwrap_or_else(|| Kind::ALL.to_vec()),
        no_punch: args.no_punch || args.no_auto_compact,
        rows: Vec::new(),
        frag: Vec::new(),
        checks: Vec::new(),
        started,
    };

    for &(size, plan) in &scale.fresh {
        fresh(&mut ctx, size, plan);
    }
    for (i, &(size, slots, plan)) in scale.read.iter().enumerate() {
        read_and_reopen(&mut ctx, size, slots, plan, i == 0);
    }
    for &(freed, plan) in &scale.reuse {
        reuse(&mut ctx, freed, plan);
    }
    churn(&mut ctx, &scale);

    let elapsed = started.elapsed();
    ctx.progress("done");
    let partial = args.only.is_some()
        || args.systems.is_some()
        || args.no_punch
        || args.no_auto_compact
        || args.no_shrink;
    let out_dir = match &args.out_dir {
        Some(dir) => Some(dir.clone()),
        None if partial => None,
        None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")),
    };
    let machine = machine.finish();
    let doc = report::markdown(&report::Report {
        machine: &machine,
        rows: &ctx.rows,
        frag: &ctx.frag,
        checks: &ctx.checks,
        reps: ctx.reps,
        quick: args.quick,
        elapsed,
    });
    println!("{doc}");
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(&dir).expect("create output dir");
        let md = dir.join("PEERS.md");
        std::fs::write(&md, &doc).expect("write PEERS.md");
        let png = dir.join("peers.png");
        chart::draw(&png, &ctx.rows, &ctx.frag, &machine, ctx.reps).expect("draw chart");
        eprintln!("wrote {} and {}", md.display(), png.display());
    }
}

/// `fresh write SIZE`: every pass writes into a new store.
fn fresh(ctx: &mut Ctx, size: usize, plan: Plan) {
    let name = format!("fresh write {}", report::bytes_label(size as u64));
    if !ctx.wants(&name) {
        return;
    }
    ctx.progress(&name);
    let mut row = Row::new(&name, Unit::OpsPerSec("writes/s"));
    for rep in 0..ctx.reps {
        for kind in ctx.order(rep) {
            let dir = ctx.dir(&format!("{name}-{rep}"), kind);
            let mut store = AnyStore::create(kind, &dir, DEFAULT_INITIAL);
            let data = &ctx.data;
            let (rate, check) = dispatch!(&mut store, s => {
                let (rate, slots) = workloads::fresh(s, size, plan, data);
                (rate, workloads::check(s, &slots, data))
            });
            remove_store(store, &dir);
            row.push_rate(kind, rate);
            ctx.record_check(&name, kind, check);
        }
    }
    ctx.rows.push(row);
}

/// A store of the read workloads: its system, directory, the store (taken
/// out while it reopens) and the slots written with their lengths.
type ReadStore = (Kind, PathBuf, Option<AnyStore>, Vec<(u64, u32)>);

/// `read SIZE` with `slots` slots, then (if `reopen`) `reopen` of the same
/// stores.
fn read_and_reopen(ctx: &mut Ctx, size: usize, slots: usize, plan: Plan, reopen: bool) {
    let name = format!("read {}", report::bytes_label(size as u64));
    let reopen_name = format!("reopen {} slots", report::count_label(slots as u64));
    let do_read = ctx.wants(&name);
    let do_reopen = reopen && ctx.wants(&reopen_name);
    if !do_read && !do_reopen {
        return;
    }
    ctx.progress(&format!("{name}: set-up, {slots} slots per system"));
    let sizes = vec![size; slots];
    let mut stores: Vec<ReadStore> = ctx
        .kinds
        .iter()
        .map(|&kind| {
            let dir = ctx.dir(&name, kind);
            let mut store = AnyStore::create(kind, &dir, DEFAULT_INITIAL);
            let written = dispatch!(&mut store, s => workloads::fill(s, &sizes, &ctx.data));
            (kind, dir, Some(store), written)
        })
        .collect();

    if do_read {
        ctx.progress(&name);
        let mut row = Row::new(&name, Unit::OpsPerSec("reads/s"));
        for rep in 0..ctx.reps {
            for kind in ctx.order(rep) {
                let (_, _, store, written) = find(&mut stores, kind, |s| s.0);
                let store = store.as_mut().expect("store present");
                let (rate, wrong) =
                    dispatch!(store, s => workloads::read(s, written, size, plan, rep as u64));
                row.push_rate(kind, rate);
                ctx.record_check(
                    &name,
                    kind,
                    Check {
                        checked: rate.ops,
                        wrong_len: wrong,
                        wrong_bytes: 0,
                    },
                );
            }
        }
        for (kind, _, store, written) in &mut stores {
            let store = store.as_mut().expect("store present");
            let check = dispatch!(store, s => workloads::check(s, written, &ctx.data));
            ctx.record_check(&name, *kind, check);
        }
        ctx.rows.push(row);
    }

    if do_reopen {
        ctx.progress(&reopen_name);
        let mut row = Row::new(&reopen_name, Unit::Seconds);
        for rep in 0..ctx.reps {
            for kind in ctx.order(rep) {
                let slot = &mut find(&mut stores, kind, |s| s.0).2;
                let (store, reopened) = slot.take().expect("store present").reopen();
                *slot = Some(store);
                match reopened {
                    Some(Reopened { secs, found }) => {
                        row.push(kind, secs);
                        row.set_note(kind, format!("{found} slots found"));
                    }
                    None => row.set_note(kind, "index lost with the process".to_owned()),
                }
            }
        }
        ctx.rows.push(row);
    }

    for (_, dir, store, _) in stores {
        if let Some(store) = store {
            remove_store(store, &dir);
        }
    }
}

/// `write+free N`.
fn reuse(ctx: &mut Ctx, freed: usize, plan: Plan) {
    let name = format!("write+free, {} freed", report::count_label(freed as u64));
    if !ctx.wants(&name) {
        return;
    }
    ctx.progress(&format!("{name}: set-up, {} writes per system", 2 * freed));
    let sizes = workloads::size_table(7, workloads::REUSE_SIZES);
    let mut stores: Vec<(Kind, PathBuf, AnyStore)> = ctx
        .kinds
        .iter()
        .map(|&kind| {
            let dir = ctx.dir(&name, kind);
            let mut store = AnyStore::create(kind, &dir, DEFAULT_INITIAL);
            dispatch!(&mut store, s => workloads::setup_reuse(s, freed, &ctx.data, 11));
            (kind, dir, store)
        })
        .collect();
    ctx.progress(&name);
    let mut row = Row::new(&name, Unit::OpsPerSec("writes/s"));
    for rep in 0..ctx.reps {
        for kind in ctx.order(rep) {
            let store = &mut find(&mut stores, kind, |s| s.0).2;
            let rate = dispatch!(store, s => workloads::write_free(s, &sizes, plan, &ctx.data, rep as u64));
            row.push_rate(kind, rate);
        }
    }
    for (kind, _, store) in &mut stores {
        let check = dispatch!(store, s => workloads::check_reuse(s, &sizes, &ctx.data));
        ctx.record_check(&name, *kind, check);
    }
    ctx.rows.push(row);
    for (_, dir, store) in stores {
        remove_store(store, &dir);
    }
}

/// `churn`, then the fragmentation of each store.
fn churn(ctx: &mut Ctx, scale: &Scale) {
    let name = format!("churn, {} live", report::bytes_label(scale.churn_live));
    if !ctx.wants("churn") {
        return;
    }
    ctx.progress(&format!(
        "{name}: set-up and {} warm-up ops per system",
        scale.churn_warm_up
    ));
    let sizes = workloads::size_table(13, workloads::CHURN_SIZES);
    let mut stores: Vec<(Kind, PathBuf, AnyStore, Live)> = ctx
        .kinds
        .iter()
        .map(|&kind| {
            let dir = ctx.dir("churn", kind);
            let mut store = AnyStore::create(kind, &dir, CHURN_INITIAL);
            let live = dispatch!(&mut store, s => workloads::setup_churn(
                s, scale.churn_live, scale.churn_warm_up, &sizes, &ctx.data, 17));
            (kind, dir, store, live)
        })
        .collect();
    // Diagnostic: ours with the give-back policy off, taking its turn right
    // after ours, to show what keeping the disk budget costs on this file
    // system.
    let diag_name = format!("{name}, ours with punching and auto-compaction off (diagnostic)");
    let mut diag = (ctx.kinds.contains(&Kind::Ours) && !ctx.no_punch).then(|| {
        let dir = ctx.base.join("churn-ours-no-punch");
        std::fs::create_dir_all(&dir).expect("create store dir");
        let tuning = stores::OursTuning {
            no_punch: true,
            no_auto_compact: true,
            no_shrink: false,
        };
        let mut ours = stores::Ours::create_tuned(&dir, CHURN_INITIAL, tuning);
        let live = workloads::setup_churn(
            &mut ours,
            scale.churn_live,
            scale.churn_warm_up,
            &sizes,
            &ctx.data,
            17,
        );
        (dir, ours, live)
    });
    let mut diag_row = Row::new(&diag_name, Unit::OpsPerSec("free+write/s")).diagnostic();
    ctx.progress(&name);
    let mut row = Row::new(&name, Unit::OpsPerSec("free+write/s"));
    for rep in 0..ctx.reps {
        for kind in ctx.order(rep) {
            let (_, _, store, live) = find(&mut stores, kind, |s| s.0);
            let rate: Rate = dispatch!(store, s => workloads::churn(s, live, &sizes, scale.churn, &ctx.data, rep as u64));
            row.push_rate(kind, rate);
            if kind == Kind::Ours
                && let Some((_, ours, live)) = &mut diag
            {
                let rate = workloads::churn(ours, live, &sizes, scale.churn, &ctx.data, rep as u64);
                diag_row.push_rate(Kind::Ours, rate);
            }
        }
    }
    diag_row.copy_peers(&row);
    ctx.rows.push(row);
    for (kind, _, store, live) in &mut stores {
        let check = dispatch!(store, s => workloads::check(s, &live.slots, &ctx.data));
        ctx.record_check(&name, *kind, check);
        if let Some(footprint) = store.footprint() {
            ctx.frag.push(Frag {
                kind: *kind,
                live: live.bytes,
                footprint,
            });
        }
    }
    if let Some((dir, mut ours, live)) = diag {
        ctx.rows.push(diag_row);
        let check = workloads::check(&mut ours, &live.slots, &ctx.data);
        ctx.record_check(&diag_name, Kind::Ours, check);
        drop(ours);
        let _ = std::fs::remove_dir_all(&dir);
    }
    for (_, dir, store, _) in stores {
        remove_store(store, &dir);
    }
}
