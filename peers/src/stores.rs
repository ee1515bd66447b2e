//! The five systems behind one small interface.
//!
//! A [`Store`] hands out a [`Writer`] (for LMDB a write transaction, for the
//! others just a borrow) and a [`Reader`] (for LMDB a read transaction).
//! Everything is generic, so the measured loops are monomorphised per system
//! and no dynamic dispatch sits between an operation and the system.
//!
//! Errors inside the measured loops panic (`expect`): this is a benchmark,
//! and a failing system must stop the run rather than be timed.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithTls};

/// Initial file size for the two mmap regions: nodedb-mem 0.0.6's default.
pub const DEFAULT_INITIAL: usize = 64 << 20;
/// Maximum file size for the two mmap regions and LMDB's map.
const REGION_MAX: usize = 32 << 30;
/// LMDB transactions hold at most about this many payload bytes, so a batch
/// of 1 MiB values stays well inside LMDB's dirty-page limit per transaction.
const LMDB_TXN_BYTES: usize = 64 << 20;
/// LMDB: writes (or reads) per transaction, as a user would batch them.
const LMDB_TXN_OPS: usize = 1000;

/// The systems compared, in the order of the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    NodedbMem,
    Lmdb,
    Pwrite,
    Memory,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Ours,
        Kind::NodedbMem,
        Kind::Lmdb,
        Kind::Pwrite,
        Kind::Memory,
    ];

    /// Column heading.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::NodedbMem => "nodedb-mem 0.0.6",
            Kind::Lmdb => "LMDB (heed)",
            Kind::Pwrite => "pwrite file",
            Kind::Memory => "in-memory slab",
        }
    }

    /// Short name for file names and progress lines.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::NodedbMem => "nodedb-mem",
            Kind::Lmdb => "lmdb",
            Kind::Pwrite => "pwrite",
            Kind::Memory => "memory",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Bytes a system occupies on disk.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// The file's size (`st_size`).
    pub file: u64,
    /// The part of the file the system counts as in use (ours and nodedb-mem 0.0.6's
    /// `used_bytes`, LMDB's pages up to the last used page, the pwrite file's
    /// end offset).
    pub used: u64,
    /// Blocks the file system allocated (`st_blocks * 512`).
    pub blocks: u64,
}

/// What a reopen found and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Reopened {
    pub secs: f64,
    /// Live slots (or LMDB entries) found after reopening.
    pub found: u64,
}

/// Writes and frees within one batch (one LMDB write transaction).
pub trait Writer {
    /// Stores `data`, returns its slot (or key).
    fn write(&mut self, data: &[u8]) -> u64;
    /// Frees a slot returned by `write`.
    fn free(&mut self, slot: u64);
}

/// Reads within one batch (one LMDB read transaction).
pub trait Reader {
    /// Calls `f` with a slot's bytes: a slice of the mapping for the mmap
    /// systems and the in-memory store, a reused buffer the bytes were copied
    /// into for LMDB and the pwrite file.
    fn with_bytes<R>(&mut self, slot: u64, f: impl FnOnce(&[u8]) -> R) -> R;
}

pub trait Store: Sized {
    type W<'a>: Writer
    where
        Self: 'a;
    type R<'a>: Reader
    where
        Self: 'a;

    /// A new, empty store with its files in `dir` (which exists and is
    /// empty); the mmap regions start with files of `initial` bytes.
    fn create(dir: &Path, initial: usize) -> Self;
    /// Operations per batch when values are at most `max_len` bytes; `None`
    /// when batches cost nothing (any split is the same).
    fn batch(_max_len: usize) -> Option<usize> {
        None
    }
    fn writer(&mut self) -> Self::W<'_>;
    /// Ends a batch (commits LMDB's transaction).
    fn commit(_writer: Self::W<'_>) {}
    fn reader(&mut self) -> Self::R<'_>;
    fn footprint(&self) -> Option<Footprint> {
        None
    }
    /// Closes and reopens the store, timing the open; `None` when the store
    /// cannot be reopened with its contents (the data stays where it is).
    fn reopen(self) -> (Self, Option<Reopened>);
}

fn file_footprint(path: &Path, used: u64) -> Footprint {
    let meta = std::fs::metadata(path).expect("stat store file");
    Footprint {
        file: meta.len(),
        used,
        blocks: meta.blocks() * 512,
    }
}

// ---------------------------------------------------------------- ours

pub struct Ours {
    region: overflow_region::OverflowRegion,
    path: PathBuf,
    tuning: OursTuning,
}

pub struct OursW<'a>(&'a mut overflow_region::OverflowRegion);
pub struct OursR<'a>(&'a overflow_region::OverflowRegion);

impl Writer for OursW<'_> {
    #[inline]
    fn write(&mut self, data: &[u8]) -> u64 {
        self.0
            .write(data, overflow_region::EngineId::Query)
            .expect("ours: write") as u64
    }
    #[inline]
    fn free(&mut self, slot: u64) {
        self.0.free(slot as usize).expect("ours: free");
    }
}

impl Reader for OursR<'_> {
    #[inline]
    fn with_bytes<R>(&mut self, slot: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.0.read(slot as usize).expect("ours: read"))
    }
}

/// Diagnostic settings for ours (`--no-punch`, `--no-auto-compact`,
/// `--no-shrink`); the default run leaves them at the library's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct OursTuning {
    /// Open with `overflow_punch_hole_bytes = 0`: never punch free extents.
    pub no_punch: bool,
    /// Open with `overflow_auto_compact = false`: never move extents by
    /// itself.
    pub no_auto_compact: bool,
    /// Open with `overflow_shrink = false`: never truncate the file.
    pub no_shrink: bool,
}

static OURS_TUNING: OnceLock<OursTuning> = OnceLock::new();

/// Sets the tuning every later open of ours uses (once, before any open).
pub fn set_ours_tuning(tuning: OursTuning) {
    OURS_TUNING.set(tuning).expect("ours' tuning is set once");
}

impl Ours {
    /// A new region with explicit diagnostic settings (the `churn`
    /// diagnostic row opens one with the give-back policy off).
    pub fn create_tuned(dir: &Path, initial: usize, tuning: OursTuning) -> Ours {
        let path = dir.join("ours.region");
        Ours {
            region: Self::open(&path, initial, tuning),
            path,
            tuning,
        }
    }

    fn open(path: &Path, initial: usize, diag: OursTuning) -> overflow_region::OverflowRegion {
        let mut tuning = overflow_region::MemoryTuning {
            overflow_initial_bytes: initial,
            overflow_max_bytes: REGION_MAX,
            ..overflow_region::MemoryTuning::default()
        };
        if diag.no_punch {
            tuning.overflow_punch_hole_bytes = 0;
        }
        if diag.no_auto_compact {
            tuning.overflow_auto_compact = false;
        }
        if diag.no_shrink {
            tuning.overflow_shrink = false;
        }
        overflow_region::OverflowRegion::open_with_tuning(path, &tuning).expect("ours: open")
    }
}

impl Store for Ours {
    type W<'a> = OursW<'a>;
    type R<'a> = OursR<'a>;

    fn create(dir: &Path, initial: usize) -> Self {
        Self::create_tuned(dir, initial, OURS_TUNING.get().copied().unwrap_or_default())
    }
    fn writer(&mut self) -> OursW<'_> {
        OursW(&mut self.region)
    }
    fn reader(&mut self) -> OursR<'_> {
        OursR(&self.region)
    }
    fn footprint(&self) -> Option<Footprint> {
        Some(file_footprint(&self.path, self.region.used_bytes() as u64))
    }
    fn reopen(self) -> (Self, Option<Reopened>) {
        let Ours {
            region,
            path,
            tuning,
        } = self;
        drop(region);
        let start = Instant::now();
        let region = Self::open(&path, DEFAULT_INITIAL, tuning);
        let secs = start.elapsed().as_secs_f64();
        let found = region.live_slot_count() as u64;
        let store = Ours {
            region,
            path,
            tuning,
        };
        (store, Some(Reopened { secs, found }))
    }
}

// ---------------------------------------------------------------- nodedb-mem 0.0.6

pub struct NodedbMem {
    region: nodedb_mem::OverflowRegion,
    path: PathBuf,
}

pub struct NodedbMemW<'a>(&'a mut nodedb_mem::OverflowRegion);
pub struct NodedbMemR<'a>(&'a nodedb_mem::OverflowRegion);

impl Writer for NodedbMemW<'_> {
    #[inline]
    fn write(&mut self, data: &[u8]) -> u64 {
        self.0
            .write(data, nodedb_mem::EngineId::Query)
            .expect("nodedb-mem: write") as u64
    }
    #[inline]
    fn free(&mut self, slot: u64) {
        self.0.free(slot as usize).expect("nodedb-mem: free");
    }
}

impl Reader for NodedbMemR<'_> {
    #[inline]
    fn with_bytes<R>(&mut self, slot: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.0.read(slot as usize).expect("nodedb-mem: read"))
    }
}

impl NodedbMem {
    fn open(path: &Path, initial: usize) -> nodedb_mem::OverflowRegion {
        nodedb_mem::OverflowRegion::open_with_config(path, initial, REGION_MAX)
            .expect("nodedb-mem: open")
    }
}

impl Store for NodedbMem {
    type W<'a> = NodedbMemW<'a>;
    type R<'a> = NodedbMemR<'a>;

    fn create(dir: &Path, initial: usize) -> Self {
        let path = dir.join("nodedb-mem.region");
        NodedbMem {
            region: Self::open(&path, initial),
            path,
        }
    }
    fn writer(&mut self) -> NodedbMemW<'_> {
        NodedbMemW(&mut self.region)
    }
    fn reader(&mut self) -> NodedbMemR<'_> {
        NodedbMemR(&self.region)
    }
    fn footprint(&self) -> Option<Footprint> {
        Some(file_footprint(&self.path, self.region.used_bytes() as u64))
    }
    /// nodedb-mem 0.0.6 keeps slot metadata only in memory: a reopened
    /// region maps the file and has no slots (`found` is 0).
    fn reopen(self) -> (Self, Option<Reopened>) {
        let NodedbMem { region, path } = self;
        drop(region);
        let start = Instant::now();
        let region = Self::open(&path, DEFAULT_INITIAL);
        let secs = start.elapsed().as_secs_f64();
        let found = region.slot_count() as u64;
        (NodedbMem { region, path }, Some(Reopened { secs, found }))
    }
}

// ---------------------------------------------------------------- LMDB

type LmdbDb = Database<U64<BigEndian>, Bytes>;

pub struct Lmdb {
    env: Env,
    db: LmdbDb,
    dir: PathBuf,
    next_key: u64,
    buf: Vec<u8>,
}

pub struct LmdbW<'a> {
    txn: RwTxn<'a>,
    db: LmdbDb,
    next_key: &'a mut u64,
}

pub struct LmdbR<'a> {
    txn: RoTxn<'a, WithTls>,
    db: LmdbDb,
    buf: &'a mut Vec<u8>,
}

impl Writer for LmdbW<'_> {
    #[inline]
    fn write(&mut self, data: &[u8]) -> u64 {
        let key = *self.next_key;
        *self.next_key += 1;
        self.db.put(&mut self.txn, &key, data).expect("lmdb: put");
        key
    }
    #[inline]
    fn free(&mut self, slot: u64) {
        let deleted = self.db.delete(&mut self.txn, &slot).expect("lmdb: delete");
        assert!(deleted, "lmdb: key {slot} missing");
    }
}

impl Reader for LmdbR<'_> {
    #[inline]
    fn with_bytes<R>(&mut self, slot: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        let value = self
            .db
            .get(&self.txn, &slot)
            .expect("lmdb: get")
            .expect("lmdb: key present");
        self.buf.clear();
        self.buf.extend_from_slice(value);
        f(self.buf)
    }
}

impl Lmdb {
    fn open_env(dir: &Path) -> Env {
        let mut options = EnvOpenOptions::new();
        options.map_size(REGION_MAX).max_dbs(1);
        // SAFETY: NO_SYNC only drops the fsync at commit (a committed
        // transaction survives a process crash, not power loss), the same
        // promise the other systems give between syncs.
        unsafe { options.flags(EnvFlags::NO_SYNC) };
        // SAFETY: the directory is ours alone, opened once per process at a
        // time (the previous env is closed before a reopen), and nothing else
        // maps or truncates its files.
        unsafe { options.open(dir) }.expect("lmdb: open env")
    }
}

impl Store for Lmdb {
    type W<'a> = LmdbW<'a>;
    type R<'a> = LmdbR<'a>;

    fn create(dir: &Path, _initial: usize) -> Self {
        let env = Self::open_env(dir);
        let mut txn = env.write_txn().expect("lmdb: write txn");
        let db: LmdbDb = env
            .create_database(&mut txn, None)
            .expect("lmdb: create db");
        txn.commit().expect("lmdb: commit");
        Lmdb {
            env,
            db,
            dir: dir.to_owned(),
            next_key: 0,
            buf: Vec::new(),
        }
    }
    fn batch(max_len: usize) -> Option<usize> {
        Some(LMDB_TXN_OPS.min(LMDB_TXN_BYTES / max_len.max(1)).max(1))
    }
    fn writer(&mut self) -> LmdbW<'_> {
        LmdbW {
            txn: self.env.write_txn().expect("lmdb: write txn"),
            db: self.db,
            next_key: &mut self.next_key,
        }
    }
    fn commit(writer: LmdbW<'_>) {
        writer.txn.commit().expect("lmdb: commit");
    }
    fn reader(&mut self) -> LmdbR<'_> {
        LmdbR {
            txn: self.env.read_txn().expect("lmdb: read txn"),
            db: self.db,
            buf: &mut self.buf,
        }
    }
    fn footprint(&self) -> Option<Footprint> {
        let info = self.env.info();
        let page = u64::from(self.env.stat().page_size);
        let used = (info.last_page_number as u64 + 1) * page;
        Some(file_footprint(&self.dir.join("data.mdb"), used))
    }
    /// Closes the env (waiting until LMDB has), then times opening it again
    /// and opening the database in a read transaction.
    fn reopen(self) -> (Self, Option<Reopened>) {
        let Lmdb {
            env,
            dir,
            next_key,
            buf,
            ..
        } = self;
        env.prepare_for_closing().wait();
        let start = Instant::now();
        let env = Self::open_env(&dir);
        let txn = env.read_txn().expect("lmdb: read txn");
        let db: LmdbDb = env
            .open_database(&txn, None)
            .expect("lmdb: open db")
            .expect("lmdb: db exists");
        let found = db.len(&txn).expect("lmdb: len");
        let secs = start.elapsed().as_secs_f64();
        drop(txn);
        let store = Lmdb {
            env,
            db,
            dir,
            next_key,
            buf,
        };
        (store, Some(Reopened { secs, found }))
    }
}

// ---------------------------------------------------------------- pwrite file

/// A temporary file written with `pwrite` and read with `pread`, indexed in
/// memory: what a query engine does when it spills. Freed extents go into a
/// free list by size (best fit, no splitting, no merging); the index is lost
/// with the process.
pub struct Pwrite {
    file: File,
    path: PathBuf,
    /// Slot -> extent; `len == FREE` for a freed slot.
    index: Vec<Extent>,
    free_slots: Vec<u32>,
    /// Extent capacity -> offsets of free extents of that capacity.
    free_extents: BTreeMap<u32, Vec<u64>>,
    end: u64,
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Extent {
    offset: u64,
    capacity: u32,
    len: u32,
}

const FREE: u32 = u32::MAX;

impl Writer for &mut Pwrite {
    #[inline]
    fn write(&mut self, data: &[u8]) -> u64 {
        let len = u32::try_from(data.len()).expect("pwrite: value under 4 GiB");
        let reuse = self
            .free_extents
            .range_mut(len..)
            .next()
            .map(|(&capacity, offsets)| (capacity, offsets.pop().expect("non-empty list")));
        let (offset, capacity) = match reuse {
            Some((capacity, offset)) => {
                if self.free_extents[&capacity].is_empty() {
                    self.free_extents.remove(&capacity);
                }
                (offset, capacity)
            }
            None => {
                let offset = self.end;
                self.end += u64::from(len);
                (offset, len)
            }
        };
        self.file.write_all_at(data, offset).expect("pwrite: write");
        let extent = Extent {
            offset,
            capacity,
            len,
        };
        match self.free_slots.pop() {
            Some(slot) => {
                self.index[slot as usize] = extent;
                u64::from(slot)
            }
            None => {
                self.index.push(extent);
                (self.index.len() - 1) as u64
            }
        }
    }
    #[inline]
    fn free(&mut self, slot: u64) {
        let extent = &mut self.index[slot as usize];
        assert_ne!(extent.len, FREE, "pwrite: double free");
        extent.len = FREE;
        let (capacity, offset) = (extent.capacity, extent.offset);
        self.free_extents.entry(capacity).or_default().push(offset);
        self.free_slots.push(slot as u32);
    }
}

impl Reader for &mut Pwrite {
    #[inline]
    fn with_bytes<R>(&mut self, slot: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        let extent = self.index[slot as usize];
        assert_ne!(extent.len, FREE, "pwrite: read of a freed slot");
        let len = extent.len as usize;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let buf = &mut self.buf[..len];
        self.file
            .read_exact_at(buf, extent.offset)
            .expect("pwrite: read");
        f(buf)
    }
}

impl Store for Pwrite {
    type W<'a> = &'a mut Pwrite;
    type R<'a> = &'a mut Pwrite;

    fn create(dir: &Path, _initial: usize) -> Self {
        let path = dir.join("spill.tmp");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("pwrite: create");
        Pwrite {
            file,
            path,
            index: Vec::new(),
            free_slots: Vec::new(),
            free_extents: BTreeMap::new(),
            end: 0,
            buf: Vec::new(),
        }
    }
    fn writer(&mut self) -> &mut Pwrite {
        self
    }
    fn reader(&mut self) -> &mut Pwrite {
        self
    }
    fn footprint(&self) -> Option<Footprint> {
        Some(file_footprint(&self.path, self.end))
    }
    /// Not possible: the index lived in memory only.
    fn reopen(self) -> (Self, Option<Reopened>) {
        (self, None)
    }
}

// ---------------------------------------------------------------- memory

/// `slab::Slab<Box<[u8]>>`: the ceiling, nothing durable.
pub struct Memory(slab::Slab<Box<[u8]>>);

impl Writer for &mut Memory {
    #[inline]
    fn write(&mut self, data: &[u8]) -> u64 {
        self.0.insert(Box::from(data)) as u64
    }
    #[inline]
    fn free(&mut self, slot: u64) {
        drop(self.0.remove(slot as usize));
    }
}

impl Reader for &Memory {
    #[inline]
    fn with_bytes<R>(&mut self, slot: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.0[slot as usize])
    }
}

impl Store for Memory {
    type W<'a> = &'a mut Memory;
    type R<'a> = &'a Memory;

    fn create(_dir: &Path, _initial: usize) -> Self {
        Memory(slab::Slab::new())
    }
    fn writer(&mut self) -> &mut Memory {
        self
    }
    fn reader(&mut self) -> &Memory {
        self
    }
    fn reopen(self) -> (Self, Option<Reopened>) {
        (self, None)
    }
}

// ---------------------------------------------------------------- any

/// One store of any kind, so the systems can take turns in one loop.
// A handful of long-lived stores: boxing ours would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum AnyStore {
    Ours(Ours),
    NodedbMem(NodedbMem),
    Lmdb(Lmdb),
    Pwrite(Pwrite),
    Memory(Memory),
}

/// Runs a generic expression on whichever store `$store` holds:
/// `dispatch!(store, s => work(s))`.
#[macro_export]
macro_rules! dispatch {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            $crate::stores::AnyStore::Ours($s) => $body,
            $crate::stores::AnyStore::NodedbMem($s) => $body,
            $crate::stores::AnyStore::Lmdb($s) => $body,
            $crate::stores::AnyStore::Pwrite($s) => $body,
            $crate::stores::AnyStore::Memory($s) => $body,
        }
    };
}

impl AnyStore {
    pub fn create(kind: Kind, dir: &Path, initial: usize) -> AnyStore {
        std::fs::create_dir_all(dir).expect("create store dir");
        match kind {
            Kind::Ours => AnyStore::Ours(Ours::create(dir, initial)),
            Kind::NodedbMem => AnyStore::NodedbMem(NodedbMem::create(dir, initial)),
            Kind::Lmdb => AnyStore::Lmdb(Lmdb::create(dir, initial)),
            Kind::Pwrite => AnyStore::Pwrite(Pwrite::create(dir, initial)),
            Kind::Memory => AnyStore::Memory(Memory::create(dir, initial)),
        }
    }

    pub fn reopen(self) -> (AnyStore, Option<Reopened>) {
        match self {
            AnyStore::Ours(s) => {
                let (s, r) = s.reopen();
                (AnyStore::Ours(s), r)
            }
            AnyStore::NodedbMem(s) => {
                let (s, r) = s.reopen();
                (AnyStore::NodedbMem(s), r)
            }
            AnyStore::Lmdb(s) => {
                let (s, r) = s.reopen();
                (AnyStore::Lmdb(s), r)
            }
            AnyStore::Pwrite(s) => {
                let (s, r) = s.reopen();
                (AnyStore::Pwrite(s), r)
            }
            AnyStore::Memory(s) => {
                let (s, r) = s.reopen();
                (AnyStore::Memory(s), r)
            }
        }
    }

    pub fn footprint(&self) -> Option<Footprint> {
        dispatch!(self, s => s.footprint())
    }
}
