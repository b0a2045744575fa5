//! Database benchmarks, each next to its floor measured in the same run. The document is `User`, a ~256 B rkyv
//! archive (a `u64` key that is also its id, a 26 B email, padding) in a collection with one unique index
//! (`email`):
//!
//! 1. durable single-writer commit of one document (`Durability::Sync`, file-backed): p50/p99/p99.9 next to raw
//!    `pwrite` + `fdatasync` of 256 B into a zero-filled file, consecutively and interleaved operation by
//!    operation;
//! 2. non-durable commit of one document from one thread (`Durability::None`, in memory and on files): commits/s,
//!    next to a 256 B memcpy and to the WAL appending the same two records on its own;
//! 3. point reads from a snapshot of N documents (1 M; 20 k in quick mode), random keys: `get` by id and
//!    `find_one` on the unique index, next to one random 256 B read from a flat array and a `std` `BTreeMap` get;
//! 4. transactions of 1,000 small documents (24 B key under a unique index, 150 B value), `Sync` and `None`:
//!    documents/s;
//! 5. group commit: 1, 2 and 4 threads doing `Sync` commits: latency percentiles, commits/s, fdatasyncs per
//!    commit (`db.wal().stats()`) and disk cache flushes per commit;
//! 6. memory: resident bytes per document after loading N documents, each load in a fresh child process (VmRSS,
//!    RssAnon, RssFile from `/proc/self/status`);
//! 7. checkpoints (file-backed, `auto_checkpoint: None`): (a) `db.checkpoint()` of N loaded documents, seconds and
//!    MB/s, next to one write + fsync of the same bytes; (b) reopen with every document in the checkpoint:
//!    `Database::open` and the first `collection` bind, timed apart; (c) reopen with a log tail of 1 GiB (8 MiB in
//!    quick mode) and no checkpoint; (d) `Sync` one-document `put` latency alone, while checkpoints run back to
//!    back, and while the floor's write + fsync runs back to back; (e) `get` by id and `find_one` on the unique
//!    index from the base (read in place from the mapped snapshot), next to the same reads of documents inserted in
//!    this process.
//!
//! `cargo bench --bench db`; `CSTORE_BENCH_QUICK=1 cargo bench --bench db` for a smoke run (about a minute, build
//! excluded). `CSTORE_BENCH_DB_SECTIONS=135` runs only sections 1, 3 and 5. Everything on disk lives in a temporary
//! directory under `std::env::temp_dir()`.
//!
//! Sections 1–6 open their databases with [`options`], without automatic checkpoints (their figures compare with
//! runs made before checkpoints existed); their benchmarks that insert without bound start a fresh database
//! (untimed) whenever the collection reaches N documents, and a file-backed log pays for creating (zero-filling)
//! every segment it grows into. Section 7 calls `checkpoint()` itself.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use collection_store::wal::{Durability, RecordKind, Wal, WalOptions, WalStats};
use collection_store::{
    Collection, Database, Document, IndexKey, Options, Snapshot, Spec as DocSpec,
};
use common::{
    Cfg, DiskFlushes, FloorVs, GroupRow, RECORD_BYTES, RatioLine, Spec, Summary, Timings,
    criterion_test_mode, durable_vs_floor, find, fmt_ns, fmt_rate, group_commit, measure,
    measure_op, op_ns, payload, per_s, percentile, print_table, report_group_commit, verdict,
};
use criterion::Criterion;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rkyv::{Archive, Serialize};

const GROUP: &str = "db";
/// Criterion id of the durable commit measured next to its floor.
const DURABLE_ID: &str = "commit_sync_256";
/// Documents per transaction in section 4 (and when loading).
const TXN_DOCS: u64 = 1_000;
/// Environment of a memory-measuring child process (section 6).
const CHILD_KIND: &str = "CSTORE_BENCH_DB_CHILD";
const CHILD_DOCS: &str = "CSTORE_BENCH_DB_CHILD_DOCS";
const CHILD_DIR: &str = "CSTORE_BENCH_DB_CHILD_DIR";

/// This bench's own sizes, on top of the shared [`Cfg`].
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Documents loaded for reads and memory, and the most an insert benchmark lets a collection grow to.
    docs: u64,
    /// Documents that the replace benchmark of section 2 cycles over.
    put_ring: u64,
    /// Random keys the read benchmarks cycle over.
    read_keys: usize,
    /// How long each group-commit configuration runs.
    group_commit_time: Duration,
    /// Section 7: checkpoints timed in a row, reopens timed, log appended for the tail case, and how long each
    /// commit-latency run lasts.
    checkpoints: usize,
    reopens: usize,
    tail_bytes: u64,
    commit_time: Duration,
}

impl Sizes {
    fn for_run(cfg: &Cfg) -> Self {
        if cfg.quick {
            Self {
                docs: 20_000,
                put_ring: 10_000,
                read_keys: 1 << 16,
                group_commit_time: Duration::from_millis(400),
                checkpoints: 3,
                reopens: 2,
                tail_bytes: 8 << 20,
                commit_time: Duration::from_millis(400),
            }
        } else {
            Self {
                docs: 1_000_000,
                put_ring: 100_000,
                read_keys: 1 << 20,
                group_commit_time: Duration::from_secs(3),
                checkpoints: 5,
                reopens: 3,
                tail_bytes: 1 << 30,
                commit_time: Duration::from_secs(6),
            }
        }
    }
}

// -------------------------------------------------------------------------------------------------------------
// Documents
// -------------------------------------------------------------------------------------------------------------

/// The ~256 B document. `key` is its id (the collection's primary key); `email` is unique.
#[derive(Archive, Serialize, Clone, Debug)]
struct User {
    key: u64,
    email: String,
    pad: Vec<u8>,
}

/// A small document for bulk transactions and memory: a 24 B key under a unique index, a 150 B value.
#[derive(Archive, Serialize, Clone, Debug)]
struct Kv {
    key: String,
    value: Vec<u8>,
}

const KV_KEY_BYTES: usize = 24;
const KV_VALUE_BYTES: usize = 150;

fn user_spec() -> DocSpec<User> {
    DocSpec::new()
        .primary_key(|u: &ArchivedUser| u.key.to_native())
        .unique("email", |u: &ArchivedUser| u.email.to_string())
}

fn kv_spec() -> DocSpec<Kv> {
    DocSpec::new().unique("key", |d: &ArchivedKv| d.key.to_string())
}

/// Writes `prefix`, `n` as `digits` zero-padded decimal digits, then `suffix` into `out` (no allocation once `out`
/// has the capacity).
fn fill_ascii(out: &mut String, prefix: &str, n: u64, digits: usize, suffix: &str) {
    out.clear();
    out.push_str(prefix);
    let mut buf = [b'0'; 20];
    let mut k = n;
    for d in buf[..digits].iter_mut().rev() {
        *d = b'0' + (k % 10) as u8;
        k /= 10;
    }
    out.push_str(std::str::from_utf8(&buf[..digits]).expect("ascii digits"));
    out.push_str(suffix);
}

/// The email of the user with key `key`: 26 bytes, unique per key below 10^10.
fn email_of(key: u64, out: &mut String) {
    fill_ascii(out, "user", key, 10, "@example.com");
}

/// Something that makes one document after another by changing one value in place (so the benchmarks do not time
/// building documents from scratch).
trait Gen {
    type Doc: Document;
    fn set(&mut self, n: u64);
    fn doc(&self) -> &Self::Doc;
}

struct UserGen {
    doc: User,
}

impl UserGen {
    fn new() -> Self {
        let mut doc = User {
            key: 0,
            email: String::with_capacity(32),
            pad: Vec::new(),
        };
        email_of(0, &mut doc.email);
        // The longest padding that keeps the archive within 256 B.
        let pad = (0..RECORD_BYTES)
            .take_while(|&p| {
                doc.pad = vec![0x5a; p];
                archived_len(&doc) <= RECORD_BYTES
            })
            .last()
            .unwrap_or(0);
        doc.pad = (0..pad).map(|j| (j as u8) | 1).collect();
        Self { doc }
    }
}

impl Gen for UserGen {
    type Doc = User;
    fn set(&mut self, n: u64) {
        self.doc.key = n;
        email_of(n, &mut self.doc.email);
    }
    fn doc(&self) -> &User {
        &self.doc
    }
}

struct KvGen {
    doc: Kv,
}

impl KvGen {
    fn new() -> Self {
        let mut doc = Kv {
            key: String::with_capacity(KV_KEY_BYTES),
            value: (0..KV_VALUE_BYTES).map(|j| (j as u8) | 1).collect(),
        };
        fill_ascii(&mut doc.key, "key-", 0, KV_KEY_BYTES - 4, "");
        Self { doc }
    }
}

impl Gen for KvGen {
    type Doc = Kv;
    fn set(&mut self, n: u64) {
        fill_ascii(&mut self.doc.key, "key-", n, KV_KEY_BYTES - 4, "");
        self.doc.value[0] = n as u8 | 1;
    }
    fn doc(&self) -> &Kv {
        &self.doc
    }
}

fn archived_len<T: Document>(doc: &T) -> usize {
    collection_store::collection::serialize(doc)
        .expect("serialize")
        .len()
}

/// Inserts documents `range` (made by `g`) in transactions of `per_txn`.
fn load<G: Gen>(
    db: &Database,
    coll: &Collection<G::Doc>,
    g: &mut G,
    range: std::ops::Range<u64>,
    per_txn: u64,
) {
    let mut n = range.start;
    while n < range.end {
        let mut tx = db.begin();
        for _ in 0..per_txn.min(range.end - n) {
            g.set(n);
            tx.insert(coll, g.doc()).expect("insert");
            n += 1;
        }
        tx.commit().expect("commit");
    }
}

// -------------------------------------------------------------------------------------------------------------
// Helpers
// -------------------------------------------------------------------------------------------------------------

fn stats_sum(a: &WalStats, b: &WalStats) -> WalStats {
    WalStats {
        appends: a.appends + b.appends,
        records: a.records + b.records,
        bytes_appended: a.bytes_appended + b.bytes_appended,
        sync_requests: a.sync_requests + b.sync_requests,
        syncs: a.syncs + b.syncs,
        writes: a.writes + b.writes,
        bytes_written: a.bytes_written + b.bytes_written,
        segments_prepared: a.segments_prepared + b.segments_prepared,
        segments_recycled: a.segments_recycled + b.segments_recycled,
    }
}

fn describe_stats(label: &str, s: &WalStats) {
    eprintln!(
        "  {label}: {} commits, {:.0} B of log each, {} pwrites, {} fdatasyncs ({:.3} per commit), {} segments prepared ({} recycled)",
        s.appends,
        s.bytes_appended as f64 / s.appends.max(1) as f64,
        s.writes,
        s.syncs,
        s.syncs as f64 / s.appends.max(1) as f64,
        s.segments_prepared,
        s.segments_recycled
    );
}

/// A database that can be replaced by a fresh, empty one between criterion's calls (untimed), so that inserting
/// benchmarks keep the collection below a size and memory and disk stay bounded.
struct Fresh<T: Document> {
    root: PathBuf,
    /// Names the directories (`{dir_label}-{generation}`); unique per benchmark.
    dir_label: &'static str,
    /// The collection's name.
    label: &'static str,
    options: Options,
    spec: fn() -> DocSpec<T>,
    generation: u32,
    open: Option<(Database, Collection<T>)>,
    dir: Option<PathBuf>,
    /// Log counters of the databases already dropped.
    stats: WalStats,
}

impl<T: Document> Fresh<T> {
    fn new(
        root: &Path,
        dir_label: &'static str,
        label: &'static str,
        options: Options,
        spec: fn() -> DocSpec<T>,
    ) -> Self {
        let mut f = Self {
            root: root.to_owned(),
            dir_label,
            label,
            options,
            spec,
            generation: 0,
            open: None,
            dir: None,
            stats: WalStats::default(),
        };
        f.reopen();
        f
    }

    fn reopen(&mut self) {
        if let Some((db, _)) = &self.open {
            self.stats = stats_sum(&self.stats, &db.wal().stats());
        }
        self.open = None;
        if let Some(dir) = self.dir.take() {
            std::fs::remove_dir_all(&dir).expect("remove old database");
        }
        self.generation += 1;
        let dir = self
            .root
            .join(format!("{}-{}", self.dir_label, self.generation));
        let db = Database::open(&dir, self.options.clone()).expect("open database");
        let coll = db
            .collection(self.label, (self.spec)())
            .expect("collection");
        self.open = Some((db, coll));
        if !self.options.in_memory {
            self.dir = Some(dir);
        }
    }

    fn db(&self) -> &Database {
        &self.open.as_ref().expect("open").0
    }

    fn coll(&self) -> &Collection<T> {
        &self.open.as_ref().expect("open").1
    }

    fn count(&self) -> usize {
        self.db().read().count(self.coll())
    }

    /// Replaces the database by an empty one once it holds `cap` documents.
    fn limit(&mut self, cap: u64) {
        if self.count() as u64 >= cap {
            self.reopen();
        }
    }

    /// Log counters of every database this held, the open one included.
    fn total_stats(&self) -> WalStats {
        stats_sum(&self.stats, &self.db().wal().stats())
    }
}

impl<T: Document> Drop for Fresh<T> {
    fn drop(&mut self) {
        self.open = None;
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Sections 1–6 measure without background checkpoints (as they did before checkpoints existed, so their figures
/// compare across runs); section 7 measures checkpoints on their own.
fn options(durability: Durability, in_memory: bool) -> Options {
    Options {
        durability,
        in_memory,
        auto_checkpoint: None,
        ..Options::default()
    }
}

// -------------------------------------------------------------------------------------------------------------
// 1. Durable single-writer commit
// -------------------------------------------------------------------------------------------------------------

struct Durable {
    floor_vs: FloorVs,
    log_bytes_per_commit: f64,
}

fn bench_durable(c: &mut Criterion, cfg: &Cfg, dir: &Path, disk: Option<&DiskFlushes>) -> Durable {
    let db = Database::open(dir.join("sync1"), options(Durability::Sync, false)).expect("open");
    let users = db.collection("users", user_spec()).expect("collection");
    let mut g = UserGen::new();
    let mut key = 0u64;
    let db_op = || {
        key += 1;
        g.set(key);
        db.insert(&users, g.doc()).expect("commit");
    };
    let spec = Spec::new(GROUP, DURABLE_ID, 1, disk);
    let floor_vs = durable_vs_floor(c, cfg, dir, &spec, || db.wal().stats(), db_op);
    let stats = floor_vs.stats;
    describe_stats(DURABLE_ID, &stats);
    Durable {
        floor_vs,
        log_bytes_per_commit: stats.bytes_appended as f64 / stats.appends.max(1) as f64,
    }
}

// -------------------------------------------------------------------------------------------------------------
// 2. Non-durable commit, one thread
// -------------------------------------------------------------------------------------------------------------

struct NonDurable {
    rows: Vec<Summary>,
}

/// `Durability::None` inserts of one new `User` per transaction into a `Fresh` database. Each of criterion's calls
/// ends with a log flush (timed); between calls, the database is replaced once it holds `cap` documents.
fn insert_none(
    c: &mut Criterion,
    cfg: &Cfg,
    id: &str,
    fresh: Fresh<User>,
    cap: u64,
    batch: u64,
) -> Option<Summary> {
    let fresh = RefCell::new(fresh);
    let mut g = UserGen::new();
    let mut key = 0u64;
    let spec = Spec::new(GROUP, id, batch, None);
    let summary = measure(
        c,
        cfg,
        &spec,
        || {
            let f = fresh.borrow();
            key += 1;
            g.set(key);
            f.db().insert(f.coll(), g.doc()).expect("commit");
        },
        || fresh.borrow().db().wal().flush().expect("flush"),
        || fresh.borrow_mut().limit(cap),
    );
    let f = fresh.into_inner();
    describe_stats(id, &f.total_stats());
    eprintln!(
        "  {id}: {} databases of up to {cap} documents",
        f.generation
    );
    summary
}

fn bench_non_durable(c: &mut Criterion, cfg: &Cfg, sizes: &Sizes, dir: &Path) -> NonDurable {
    let mut rows = Vec::new();
    let batch = 64;

    // Floor: memcpy of 256 B into an 8 MiB ring (the log's staging ring size), one slot after another.
    {
        let rec = payload(1);
        let mut ring = vec![0u8; 8 << 20];
        let mut off = 0usize;
        let op = || {
            ring[off..off + RECORD_BYTES].copy_from_slice(black_box(&rec));
            black_box(&ring[off]);
            off += RECORD_BYTES;
            if off + RECORD_BYTES > ring.len() {
                off = 0;
            }
        };
        let spec = Spec::new(GROUP, "floor_memcpy_256", 1024, None);
        rows.extend(measure_op(c, cfg, &spec, op));
    }

    // The log alone, in memory, appending the two records a one-document commit logs (DATA with the operation
    // and the archive, COMMIT with the sequence number), as `Wal` benchmarks do: flushed at the end of each call,
    // synced and truncated between calls.
    {
        let data = vec![0x5au8; 1 + 2 + "users".len() + 8 + archived_len(UserGen::new().doc())];
        let commit = 7u64.to_le_bytes();
        let wal = Wal::open_in_memory(WalOptions::default()).expect("open");
        let spec = Spec::new(GROUP, "wal_group_none_mem", batch, None);
        rows.extend(measure(
            c,
            cfg,
            &spec,
            || {
                wal.append_group(
                    &[
                        (RecordKind::Data, black_box(&data)),
                        (RecordKind::Commit, &commit),
                    ],
                    Durability::None,
                )
                .expect("append");
            },
            || wal.flush().expect("flush"),
            || {
                wal.sync().expect("sync");
                wal.truncate_before(wal.next_lsn()).expect("truncate");
            },
        ));
    }

    // Floor: the concurrent structures a one-document insert into `users` writes, alone: the document map (papaya,
    // `u64` key) and its order (crossbeam skip list), the unique index's map (papaya, the 28-byte encoded email)
    // and its order (skip list), each value an `Arc` of a fresh 256 B copy. They grow to the commit benchmarks'
    // size, then start over empty (untimed), as those do.
    {
        let fresh_maps = || StructureFloor::default();
        let maps = RefCell::new(fresh_maps());
        let doc = vec![0x5au8; RECORD_BYTES];
        let mut email = String::with_capacity(32);
        let mut key = 0u64;
        let spec = Spec::new(GROUP, "floor_structures_insert", batch, None);
        rows.extend(measure(
            c,
            cfg,
            &spec,
            || {
                key += 1;
                email_of(key, &mut email);
                maps.borrow().insert(key, &email, black_box(&doc));
            },
            || {},
            || {
                if maps.borrow().docs.len() as u64 >= sizes.docs {
                    *maps.borrow_mut() = fresh_maps();
                }
            },
        ));
    }

    let fresh = Fresh::new(
        dir,
        "commit_none_mem",
        "users",
        options(Durability::None, true),
        user_spec,
    );
    rows.extend(insert_none(
        c,
        cfg,
        "commit_none_mem_256",
        fresh,
        sizes.docs,
        batch,
    ));
    let fresh = Fresh::new(
        dir,
        "commit_none_file",
        "users",
        options(Durability::None, false),
        user_spec,
    );
    rows.extend(insert_none(
        c,
        cfg,
        "commit_none_file_256",
        fresh,
        sizes.docs,
        batch,
    ));

    // Replacing documents of a collection that stays at `put_ring` documents (no growth, no fresh databases).
    {
        let db = Database::open(dir, options(Durability::None, true)).expect("open");
        let users = db.collection("users", user_spec()).expect("collection");
        let mut g = UserGen::new();
        load(&db, &users, &mut g, 0..sizes.put_ring, TXN_DOCS);
        let mut key = 0u64;
        let spec = Spec::new(GROUP, "put_none_mem_256", batch, None);
        rows.extend(measure(
            c,
            cfg,
            &spec,
            || {
                key = (key + 1) % sizes.put_ring;
                g.set(key);
                db.put(&users, key, g.doc()).expect("commit");
            },
            || db.wal().flush().expect("flush"),
            || {},
        ));
    }
    NonDurable { rows }
}

type FloorHasher = foldhash::fast::RandomState;

/// The concurrent maps and ordered sets behind a collection with one unique index, written directly (section 2's
/// structure floor).
#[derive(Default)]
struct StructureFloor {
    docs: papaya::HashMap<u64, Arc<[u8]>, FloorHasher>,
    ids: crossbeam_skiplist::SkipSet<u64>,
    unique: papaya::HashMap<Arc<[u8]>, u64, FloorHasher>,
    keys: crossbeam_skiplist::SkipSet<Arc<[u8]>>,
}

impl StructureFloor {
    fn insert(&self, id: u64, key: &str, doc: &[u8]) {
        self.docs.pin().insert(id, Arc::from(doc));
        self.ids.insert(id);
        // The index key as the collection encodes it.
        let encoded: Arc<[u8]> = key.to_key_bytes().into();
        self.unique.pin().insert(Arc::clone(&encoded), id);
        self.keys.insert(encoded);
    }
}

// -------------------------------------------------------------------------------------------------------------
// 3. Point reads from a snapshot
// -------------------------------------------------------------------------------------------------------------

struct Reads {
    rows: Vec<Summary>,
    docs: u64,
    load_time: Duration,
}

fn bench_reads(c: &mut Criterion, cfg: &Cfg, sizes: &Sizes, dir: &Path) -> Reads {
    let mut rows = Vec::new();
    let n = sizes.docs;
    let batch = 1024;
    let ids = random_ids(sizes, n);
    let mask = ids.len() - 1;

    // Floor: one random 8 B read of a 256 B slot in a flat array of N slots (a cache and TLB miss, nothing else).
    {
        let flat = vec![1u8; n as usize * RECORD_BYTES];
        let mut i = 0usize;
        let op = || {
            let at = ids[i & mask] as usize * RECORD_BYTES;
            i += 1;
            let word = u64::from_le_bytes(flat[black_box(at)..at + 8].try_into().expect("8 bytes"));
            black_box(word);
        };
        let spec = Spec::new(GROUP, "floor_flat_random_256", batch, None);
        rows.extend(measure_op(c, cfg, &spec, op));
        // The same, but each read's address depends on the previous read's value: the full latency of a miss,
        // with no overlap between reads (a tree lookup's steps depend on each other like this).
        let mut i = 0usize;
        let mut last = 0u64;
        let op = || {
            let at = (ids[i & mask] ^ (last & 1)) as usize * RECORD_BYTES;
            i += 1;
            last = u64::from_le_bytes(flat[at..at + 8].try_into().expect("8 bytes"))
                ^ 0x0101_0101_0101_0101;
            black_box(last);
        };
        let spec = Spec::new(GROUP, "floor_flat_dependent_256", batch, None);
        rows.extend(measure_op(c, cfg, &spec, op));
    }
    // Floor: a std BTreeMap from u64 to a boxed 256 B document, then an 8 B read of the document.
    {
        let map: BTreeMap<u64, Box<[u8]>> = (0..n)
            .map(|k| (k, vec![k as u8 | 1; RECORD_BYTES].into_boxed_slice()))
            .collect();
        let mut i = 0usize;
        let op = || {
            let k = ids[i & mask];
            i += 1;
            let doc = map.get(&black_box(k)).expect("present");
            black_box(u64::from_le_bytes(doc[..8].try_into().expect("8 bytes")));
        };
        let spec = Spec::new(GROUP, "floor_btreemap_get", batch, None);
        rows.extend(measure_op(c, cfg, &spec, op));
    }

    // Floors: a hash map from `u64` to an `Arc` of a 256 B document, then an 8 B read of the document. papaya is the
    // concurrent map the collections use (readers take no lock; the entry is a pointer away from its slot); std's
    // `HashMap` keeps entries inline in the probed table but cannot be read while it is written.
    {
        let docs = || (0..n).map(|k| (k, Arc::from(vec![k as u8 | 1; RECORD_BYTES])));
        let concurrent: papaya::HashMap<u64, Arc<[u8]>, FloorHasher> = docs().collect();
        let inline: std::collections::HashMap<u64, Arc<[u8]>, FloorHasher> = docs().collect();
        let read =
            |doc: &Arc<[u8]>| black_box(u64::from_le_bytes(doc[..8].try_into().expect("8 bytes")));
        let mut i = 0usize;
        let op = || {
            let k = ids[i & mask];
            i += 1;
            read(concurrent.pin().get(&black_box(k)).expect("present"));
        };
        let spec = Spec::new(GROUP, "floor_papaya_get", batch, None);
        rows.extend(measure_op(c, cfg, &spec, op));
        let mut i = 0usize;
        let op = || {
            let k = ids[i & mask];
            i += 1;
            read(inline.get(&black_box(k)).expect("present"));
        };
        let spec = Spec::new(GROUP, "floor_std_hashmap_get", batch, None);
        rows.extend(measure_op(c, cfg, &spec, op));
    }

    let db = Database::open(dir, options(Durability::None, true)).expect("open");
    let users = db.collection("users", user_spec()).expect("collection");
    let started = Instant::now();
    load(&db, &users, &mut UserGen::new(), 0..n, TXN_DOCS);
    let load_time = started.elapsed();
    let snap = db.read();
    assert_eq!(snap.count(&users) as u64, n);
    let mut e = String::new();
    for &k in ids.iter().take(100) {
        assert_eq!(snap.get(&users, k).map(|u| u.key.to_native()), Some(k));
        email_of(k, &mut e);
        let (id, u) = snap
            .find_one(&users, "email", &e)
            .expect("index")
            .expect("found");
        assert_eq!((id, u.key.to_native()), (k, k));
    }

    rows.extend(measure_get(c, cfg, "get_by_id", &snap, &users, &ids));
    rows.extend(measure_find_one(
        c,
        cfg,
        "find_one_email",
        &snap,
        &users,
        &ids,
    ));
    Reads {
        rows,
        docs: n,
        load_time,
    }
}

/// `sizes.read_keys` ids drawn uniformly from `0..docs` (the same ones in every section that reads).
fn random_ids(sizes: &Sizes, docs: u64) -> Vec<u64> {
    assert!(sizes.read_keys.is_power_of_two());
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    (0..sizes.read_keys)
        .map(|_| rng.random_range(0..docs))
        .collect()
}

/// `snap.find_one(users, "email", ..)` on the unique index over the emails of `ids` (a power of two of them), in
/// batches of 1024, touching each document's `key`. The email is written into a reused buffer just before its
/// lookup, as a caller holding the key it looks up would have it (in cache). A vector of 2^20 prebuilt strings made
/// each lookup also miss on its own key (about 60 MB of strings). Formatting the 26 bytes is timed with the lookup.
fn measure_find_one(
    c: &mut Criterion,
    cfg: &Cfg,
    id: &str,
    snap: &Snapshot,
    users: &Collection<User>,
    ids: &[u64],
) -> Option<Summary> {
    let mut email = String::with_capacity(32);
    measure_reads(c, cfg, id, ids, |k| {
        email_of(k, &mut email);
        let found = snap
            .find_one(users, "email", black_box(&email))
            .expect("index");
        black_box(found.map(|(id, u)| (id, u.key.to_native())));
    })
}

/// `read` of each of `ids` in turn (a power of two of them, cycled), in batches of 1024.
fn measure_reads(
    c: &mut Criterion,
    cfg: &Cfg,
    id: &str,
    ids: &[u64],
    mut read: impl FnMut(u64),
) -> Option<Summary> {
    let mask = ids.len() - 1;
    let mut i = 0usize;
    let op = || {
        let k = ids[i & mask];
        i += 1;
        read(k);
    };
    measure_op(c, cfg, &Spec::new(GROUP, id, 1024, None), op)
}

/// `snap.get(users, id)` over `ids` (a power of two of them), in batches of 1024, touching each document's `key`.
fn measure_get(
    c: &mut Criterion,
    cfg: &Cfg,
    id: &str,
    snap: &Snapshot,
    users: &Collection<User>,
    ids: &[u64],
) -> Option<Summary> {
    measure_reads(c, cfg, id, ids, |k| {
        let doc = snap.get(users, black_box(k));
        black_box(doc.map(|u| u.key.to_native()));
    })
}

// -------------------------------------------------------------------------------------------------------------
// 4. 1,000-document transactions
// -------------------------------------------------------------------------------------------------------------

struct Bulk {
    rows: Vec<Summary>,
    kv_archive_bytes: usize,
}

fn bench_bulk(
    c: &mut Criterion,
    cfg: &Cfg,
    sizes: &Sizes,
    dir: &Path,
    disk: Option<&DiskFlushes>,
) -> Bulk {
    let mut rows = Vec::new();
    for (id, durability) in [
        ("txn1000_sync", Durability::Sync),
        ("txn1000_none", Durability::None),
    ] {
        let fresh = RefCell::new(Fresh::new(
            dir,
            id,
            "kv",
            options(durability, false),
            kv_spec,
        ));
        let mut g = KvGen::new();
        let mut n = 0u64;
        let spec = Spec::new(GROUP, id, 1, disk);
        rows.extend(measure(
            c,
            cfg,
            &spec,
            || {
                let f = fresh.borrow();
                load(f.db(), f.coll(), &mut g, n..n + TXN_DOCS, TXN_DOCS);
                n += TXN_DOCS;
            },
            || fresh.borrow().db().wal().flush().expect("flush"),
            || fresh.borrow_mut().limit(sizes.docs),
        ));
        let f = fresh.into_inner();
        describe_stats(id, &f.total_stats());
        eprintln!(
            "  {id}: {n} documents in {} databases of up to {} documents",
            f.generation, sizes.docs
        );
    }
    Bulk {
        rows,
        kv_archive_bytes: archived_len(KvGen::new().doc()),
    }
}

// -------------------------------------------------------------------------------------------------------------
// 5. Group commit
// -------------------------------------------------------------------------------------------------------------

fn bench_group_commit(
    cfg: &Cfg,
    sizes: &Sizes,
    dir: &Path,
    disk: Option<&DiskFlushes>,
) -> Vec<GroupRow> {
    let mut out = Vec::new();
    for threads in [1usize, 2, 4] {
        let db = Database::open(
            dir.join(format!("group{threads}")),
            options(Durability::Sync, false),
        )
        .expect("open");
        let users = db.collection("users", user_spec()).expect("collection");
        let mut g = UserGen::new();
        for k in 0..cfg.prewarm_ops {
            g.set(9_000_000_000 + k);
            db.insert(&users, g.doc()).expect("commit");
        }
        let (db, users) = (&db, &users);
        out.push(group_commit(
            threads,
            sizes.group_commit_time,
            disk,
            || db.wal().stats(),
            |t| {
                let mut g = UserGen::new();
                let mut key = t as u64 * 1_000_000_000;
                move |lat: &mut Timings| {
                    key += 1;
                    g.set(key);
                    lat.time(|| db.insert(users, g.doc()).expect("commit"));
                }
            },
        ));
    }
    out
}

// -------------------------------------------------------------------------------------------------------------
// 6. Memory
// -------------------------------------------------------------------------------------------------------------

/// Resident set figures from `/proc/self/status`, in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

impl Rss {
    fn read() -> Self {
        let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Self {
            total: field("VmRSS:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }
}

/// The memory figures one child process reports.
#[derive(Clone, Debug)]
struct MemoryRow {
    kind: String,
    docs: u64,
    archive_bytes: u64,
    before: Rss,
    opened: Rss,
    loaded: Rss,
    load_time: Duration,
}

impl MemoryRow {
    fn per_doc(&self, f: impl Fn(&Rss) -> u64) -> f64 {
        (f(&self.loaded) as f64 - f(&self.opened) as f64) / self.docs as f64
    }
}

/// The four loads, each measured in its own process.
const MEMORY_KINDS: [&str; 4] = ["user_file", "kv_file", "user_mem", "kv_mem"];

/// In a child process: opens a database (`*_file`: file-backed; `*_mem`: in memory), loads `docs` documents in
/// transactions of 1,000 with `Durability::None`, and prints the resident set before and after.
fn memory_child(kind: &str) {
    let docs: u64 = std::env::var(CHILD_DOCS)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("document count");
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("directory"));
    let before = Rss::read();
    let db = Database::open(&dir, options(Durability::None, kind.ends_with("_mem"))).expect("open");
    let (opened, loaded, load_time, archive_bytes) = if kind.starts_with("user") {
        let users = db.collection("users", user_spec()).expect("collection");
        let opened = Rss::read();
        let t = Instant::now();
        let mut g = UserGen::new();
        load(&db, &users, &mut g, 0..docs, TXN_DOCS);
        db.wal().flush().expect("flush");
        let load_time = t.elapsed();
        assert_eq!(db.read().count(&users) as u64, docs);
        (opened, Rss::read(), load_time, archived_len(g.doc()))
    } else {
        let kv = db.collection("kv", kv_spec()).expect("collection");
        let opened = Rss::read();
        let t = Instant::now();
        let mut g = KvGen::new();
        load(&db, &kv, &mut g, 0..docs, TXN_DOCS);
        db.wal().flush().expect("flush");
        let load_time = t.elapsed();
        assert_eq!(db.read().count(&kv) as u64, docs);
        (opened, Rss::read(), load_time, archived_len(g.doc()))
    };
    let r = |x: &Rss| format!("{},{},{}", x.total, x.anon, x.file);
    println!(
        "CSTORE_MEMORY {kind} {docs} {archive_bytes} {} {} {} {}",
        r(&before),
        r(&opened),
        r(&loaded),
        load_time.as_nanos()
    );
    drop(db);
}

fn parse_memory_line(line: &str) -> Option<MemoryRow> {
    let mut f = line.strip_prefix("CSTORE_MEMORY ")?.split_whitespace();
    let kind = f.next()?.to_owned();
    let docs = f.next()?.parse().ok()?;
    let archive_bytes = f.next()?.parse().ok()?;
    let mut rss = || -> Option<Rss> {
        let v: Vec<u64> = f
            .next()?
            .split(',')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        Some(Rss {
            total: *v.first()?,
            anon: *v.get(1)?,
            file: *v.get(2)?,
        })
    };
    let (before, opened, loaded) = (rss()?, rss()?, rss()?);
    let load_time = Duration::from_nanos(f.next()?.parse().ok()?);
    Some(MemoryRow {
        kind,
        docs,
        archive_bytes,
        before,
        opened,
        loaded,
        load_time,
    })
}

fn bench_memory(sizes: &Sizes, dir: &Path) -> Vec<MemoryRow> {
    let exe = std::env::current_exe().expect("current exe");
    let mut rows = Vec::new();
    for kind in MEMORY_KINDS {
        let sub = dir.join(format!("memory-{kind}"));
        let out = Command::new(&exe)
            .env(CHILD_KIND, kind)
            .env(CHILD_DOCS, sizes.docs.to_string())
            .env(CHILD_DIR, &sub)
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find_map(parse_memory_line) {
            Some(row) if out.status.success() => rows.push(row),
            _ => eprintln!(
                "memory child {kind} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        let _ = std::fs::remove_dir_all(&sub);
    }
    rows
}

// -------------------------------------------------------------------------------------------------------------
// 7. Checkpoints
// -------------------------------------------------------------------------------------------------------------

/// Section 7's databases: file-backed, checkpointed only when the bench calls `db.checkpoint()`.
fn manual_checkpoints(durability: Durability) -> Options {
    Options {
        ..options(durability, false)
    }
}

/// One timed `db.checkpoint()`, and its floor right after it: the same number of bytes written to a new file with
/// one `write` and one `fsync`.
#[derive(Clone, Copy, Debug)]
struct CheckpointRun {
    time: Duration,
    /// `CheckpointInfo::bytes_written`: snapshot and manifest files.
    bytes: u64,
    floor: Duration,
}

/// One timed reopen: `Database::open` (of which `scan` is the log's recovery scan, `RecoveryReport::duration`; the
/// rest is loading the checkpoint and replaying the log), then the first `db.collection("users", ..)`, which
/// validates every document with bytecheck and builds the unique index.
#[derive(Clone, Copy, Debug)]
struct Reopen {
    open: Duration,
    scan: Duration,
    bind: Duration,
    /// Log records recovered, and the log's length (end − start LSN).
    records: u64,
    log_bytes: u64,
}

impl Reopen {
    fn total(&self) -> Duration {
        self.open + self.bind
    }
}

/// A database reopened from `dir` (file-backed, no background checkpoints), timed as [`Reopen`] says; it must
/// hold `docs` users (counted untimed).
fn reopen_timed(
    dir: &Path,
    durability: Durability,
    docs: u64,
) -> (Reopen, Database, Collection<User>) {
    let t = Instant::now();
    let db = Database::open(dir, manual_checkpoints(durability)).expect("reopen");
    let open = t.elapsed();
    let t = Instant::now();
    let users = db.collection("users", user_spec()).expect("bind");
    let bind = t.elapsed();
    assert_eq!(db.read().count(&users) as u64, docs);
    let report = db.recovery_report();
    let reopen = Reopen {
        open,
        scan: report.duration,
        bind,
        records: report.records,
        log_bytes: report.end_lsn - report.start_lsn,
    };
    (reopen, db, users)
}

/// The floor of writing a checkpoint: `bytes` to a new file at `path` with one `write` and one `fsync` (timed),
/// then the file removed (untimed).
fn write_fsync(path: &Path, bytes: &[u8]) -> Duration {
    let t = Instant::now();
    let mut f = std::fs::File::create(path).expect("create floor file");
    f.write_all(bytes).expect("write floor file");
    f.sync_all().expect("fsync floor file");
    let d = t.elapsed();
    drop(f);
    std::fs::remove_file(path).expect("remove floor file");
    d
}

/// Files in `dir` and their total size.
fn dir_size(dir: &Path) -> (usize, u64) {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

/// One thread making `Sync` one-document `db.put` commits (replacing existing ids, one after another) for
/// `sizes.commit_time`, while `background` runs back to back in another thread, if given: the commits' row (named
/// `name`) and what each background call returned.
fn commits_while<R: Send>(
    name: &str,
    db: &Database,
    users: &Collection<User>,
    sizes: &Sizes,
    disk: Option<&DiskFlushes>,
    background: Option<&(dyn Fn() -> R + Sync)>,
) -> (GroupRow, Vec<R>) {
    let stop = AtomicBool::new(false);
    let docs = sizes.docs;
    let (mut row, out) = std::thread::scope(|s| {
        let bg = background.map(|f| {
            let stop = &stop;
            s.spawn(move || {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    out.push(f());
                }
                out
            })
        });
        let row = group_commit(
            1,
            sizes.commit_time,
            disk,
            || db.wal().stats(),
            |_| {
                let mut g = UserGen::new();
                let mut key = 0u64;
                move |lat: &mut Timings| {
                    key = (key + 1) % docs;
                    g.set(key);
                    lat.time(|| db.put(users, key, g.doc()).expect("commit"));
                }
            },
        );
        stop.store(true, Ordering::Relaxed);
        let out = bg.map_or_else(Vec::new, |h| h.join().expect("background thread"));
        (row, out)
    });
    if let Some(l) = &mut row.latency {
        l.name = format!("{GROUP}/{name}");
    }
    (row, out)
}

/// The log tail case: a fresh database given about `sizes.tail_bytes` of log (transactions of 1,000 new users),
/// never checkpointed, then reopened `sizes.reopens` times.
struct Tail {
    docs: u64,
    load_time: Duration,
    /// Segment files (and `meta`) in `wal/` after loading, and their size on disk.
    files: usize,
    file_bytes: u64,
    reopens: Vec<Reopen>,
}

fn bench_tail(sizes: &Sizes, dir: &Path) -> Tail {
    let tdir = dir.join("ckpt-tail");
    let (docs, load_time) = {
        let db = Database::open(&tdir, manual_checkpoints(Durability::None)).expect("open");
        let users = db.collection("users", user_spec()).expect("collection");
        let mut g = UserGen::new();
        let mut n = 0u64;
        let t = Instant::now();
        while db.wal().stats().bytes_appended < sizes.tail_bytes {
            load(&db, &users, &mut g, n..n + TXN_DOCS, TXN_DOCS);
            n += TXN_DOCS;
        }
        db.wal().sync().expect("sync");
        (n, t.elapsed())
    };
    let (files, file_bytes) = dir_size(&tdir.join("wal"));
    let mut reopens = Vec::new();
    for _ in 0..sizes.reopens {
        let (r, db, users) = reopen_timed(&tdir, Durability::None, docs);
        reopens.push(r);
        // Untimed: the documents are freed before the next reopen.
        drop((users, db));
    }
    std::fs::remove_dir_all(&tdir).expect("remove tail database");
    Tail {
        docs,
        load_time,
        files,
        file_bytes,
        reopens,
    }
}

struct Checkpoints {
    docs: u64,
    load_time: Duration,
    /// (a): checkpoints of the loaded database, each after a small change, each next to its floor.
    runs: Vec<CheckpointRun>,
    /// (b): reopens with every document in the checkpoint.
    reopens: Vec<Reopen>,
    /// (e): `get` on the database whose documents were inserted in this process, then on the reopened one.
    reads: Vec<Summary>,
    /// (d): Sync `put` commits alone, while checkpoints run back to back, while the floor's write + fsync of the
    /// same bytes runs back to back.
    commits: Vec<GroupRow>,
    /// Checkpoints (time, bytes written) made during the second of those runs.
    busy_checkpoints: Vec<(Duration, u64)>,
    /// Floor writes made during the third.
    busy_floors: Vec<Duration>,
    /// (c).
    tail: Tail,
}

fn bench_checkpoints(
    c: &mut Criterion,
    cfg: &Cfg,
    sizes: &Sizes,
    dir: &Path,
    disk: Option<&DiskFlushes>,
) -> Checkpoints {
    let n = sizes.docs;
    let cdir = dir.join("ckpt");
    let floor_path = dir.join("ckpt-floor.dat");
    let ids = random_ids(sizes, n);
    let mut reads = Vec::new();
    let mut runs = Vec::new();
    let mut floor_bytes: Vec<u8> = Vec::new();

    // (a) Checkpoint throughput, then (e) reads of documents inserted in this process.
    let load_time = {
        let db = Database::open(&cdir, manual_checkpoints(Durability::None)).expect("open");
        let users = db.collection("users", user_spec()).expect("collection");
        let mut g = UserGen::new();
        let t = Instant::now();
        load(&db, &users, &mut g, 0..n, TXN_DOCS);
        db.wal().flush().expect("flush");
        let load_time = t.elapsed();
        for run in 0..sizes.checkpoints {
            if run > 0 {
                // A small change (one transaction replacing 1,000 documents), so that each checkpoint has
                // something new to write.
                let mut tx = db.begin();
                for k in 0..TXN_DOCS.min(n) {
                    let id = (run as u64 * TXN_DOCS + k) % n;
                    g.set(id);
                    tx.put(&users, id, g.doc()).expect("put");
                }
                tx.commit().expect("commit");
            }
            let t = Instant::now();
            let info = db.checkpoint().expect("checkpoint");
            let time = t.elapsed();
            floor_bytes.resize(info.bytes_written as usize, 0x5a);
            let floor = write_fsync(&floor_path, &floor_bytes);
            runs.push(CheckpointRun {
                time,
                bytes: info.bytes_written,
                floor,
            });
        }
        reads.extend(measure_get(
            c,
            cfg,
            "ckpt_get_inserted",
            &db.read(),
            &users,
            &ids,
        ));
        reads.extend(measure_find_one(
            c,
            cfg,
            "ckpt_find_one_inserted",
            &db.read(),
            &users,
            &ids,
        ));
        load_time
    };

    // (b) Reopens with every document in the checkpoint; the last one stays open.
    let mut reopens = Vec::new();
    let mut open = None;
    for _ in 0..sizes.reopens {
        // Untimed: the previous reopen's database goes first (it holds the directory lock).
        drop(open.take());
        let (r, db, users) = reopen_timed(&cdir, Durability::Sync, n);
        reopens.push(r);
        open = Some((db, users));
    }
    let (db, users) = open.expect("reopened");

    // (e) Reads of documents in the mapped snapshot file.
    reads.extend(measure_get(
        c,
        cfg,
        "ckpt_get_mapped",
        &db.read(),
        &users,
        &ids,
    ));
    reads.extend(measure_find_one(
        c,
        cfg,
        "ckpt_find_one_mapped",
        &db.read(),
        &users,
        &ids,
    ));

    // (d) Commit latency without and with checkpoints running, and with the floor's writes running.
    let mut g = UserGen::new();
    for k in 0..cfg.prewarm_ops {
        g.set(k % n);
        db.put(&users, k % n, g.doc()).expect("commit");
    }
    let mut commits = Vec::new();
    let (row, _) = commits_while::<()>("put_sync_alone", &db, &users, sizes, disk, None);
    commits.push(row);
    let checkpoint = || {
        let t = Instant::now();
        let info = db.checkpoint().expect("checkpoint");
        (t.elapsed(), info.bytes_written)
    };
    let (row, busy_checkpoints) = commits_while(
        "put_sync_during_checkpoints",
        &db,
        &users,
        sizes,
        disk,
        Some(&checkpoint),
    );
    commits.push(row);
    let floor = || write_fsync(&floor_path, &floor_bytes);
    let (row, busy_floors) = commits_while(
        "put_sync_during_floor_writes",
        &db,
        &users,
        sizes,
        disk,
        Some(&floor),
    );
    commits.push(row);
    drop((users, db, floor_bytes));
    std::fs::remove_dir_all(&cdir).expect("remove checkpointed database");

    // (c) Reopen with a large log tail and no checkpoint.
    let tail = bench_tail(sizes, dir);
    Checkpoints {
        docs: n,
        load_time,
        runs,
        reopens,
        reads,
        commits,
        busy_checkpoints,
        busy_floors,
        tail,
    }
}

// -------------------------------------------------------------------------------------------------------------
// Report
// -------------------------------------------------------------------------------------------------------------

fn main() {
    if let Ok(kind) = std::env::var(CHILD_KIND) {
        memory_child(&kind);
        return;
    }
    let cfg = Cfg::from_env();
    let sizes = Sizes::for_run(&cfg);
    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let disk = DiskFlushes::for_path(dir.path());
    eprintln!(
        "db bench: temp dir {} (device {}), {} documents{}",
        dir.path().display(),
        disk.as_ref().map_or("unknown", |d| d.name.as_str()),
        sizes.docs,
        if cfg.quick { ", QUICK mode" } else { "" }
    );
    let test_mode = criterion_test_mode();
    let sections = std::env::var("CSTORE_BENCH_DB_SECTIONS").unwrap_or_else(|_| "1234567".into());
    let want = |x: char| sections.contains(x);

    // Memory first, while the machine has the most free memory (each load runs in its own process anyway).
    let memory = if want('6') && !test_mode {
        bench_memory(&sizes, dir.path())
    } else {
        Vec::new()
    };
    let durable = want('1').then(|| bench_durable(&mut c, &cfg, dir.path(), disk.as_ref()));
    let non_durable = want('2').then(|| bench_non_durable(&mut c, &cfg, &sizes, dir.path()));
    let reads = want('3').then(|| bench_reads(&mut c, &cfg, &sizes, dir.path()));
    let bulk = want('4').then(|| bench_bulk(&mut c, &cfg, &sizes, dir.path(), disk.as_ref()));
    let groups = if want('5') && !test_mode {
        bench_group_commit(&cfg, &sizes, dir.path(), disk.as_ref())
    } else {
        Vec::new()
    };
    let checkpoints = (want('7') && !test_mode)
        .then(|| bench_checkpoints(&mut c, &cfg, &sizes, dir.path(), disk.as_ref()));
    c.final_summary();
    if test_mode {
        return;
    }

    if let Some(d) = &durable {
        print_table(
            "1. durable commit of one 256 B document, one writer",
            &d.floor_vs.table_rows(),
        );
    }
    if let Some(nd) = &non_durable {
        print_table(
            "2. non-durable commit of one 256 B document, one thread",
            &nd.rows,
        );
    }
    if let Some(r) = &reads {
        print_table(
            &format!(
                "3. point reads, snapshot of {} documents, random keys",
                r.docs
            ),
            &r.rows,
        );
    }
    if let Some(b) = &bulk {
        print_table(
            &format!(
                "4. transactions of {TXN_DOCS} documents ({KV_KEY_BYTES} B key, {KV_VALUE_BYTES} B value, {} B archive)",
                b.kv_archive_bytes
            ),
            &b.rows,
        );
    }
    if !groups.is_empty() {
        report_group_commit(
            "5. group commit: threads doing Sync commits of one 256 B document",
            [9, 11, 13, 13, 12],
            &groups,
        );
    }
    if !memory.is_empty() {
        report_memory(&memory);
    }
    if let Some(k) = &checkpoints {
        report_checkpoints(k);
    }

    eprintln!("\n== summary (all figures from this run) ==");
    if cfg.quick {
        eprintln!("QUICK mode: smoke-test sizes and times; the verdicts below are not meaningful");
    }
    if let Some(d) = &durable {
        summarize_durable(d);
    }
    if let Some(nd) = &non_durable {
        summarize_non_durable(nd);
    }
    if let Some(r) = &reads {
        summarize_reads(r);
    }
    if let Some(b) = &bulk {
        summarize_bulk(b);
    }
    summarize_group_commit(&groups);
    for m in &memory {
        eprintln!(
            "6. {:<10} {:.0} B resident per document ({} B archive)",
            m.kind,
            m.per_doc(|r| r.total),
            m.archive_bytes
        );
    }
    if let Some(k) = &checkpoints {
        summarize_checkpoints(k, reads.as_ref());
    }
}

fn summarize_durable(d: &Durable) {
    let line = RatioLine {
        prefix: "1.",
        subject: "db",
        target: 1.2,
    };
    let fv = &d.floor_vs;
    line.print_all(&fv.rows, fv.interleaved.as_ref(), DURABLE_ID, "consecutive");
    eprintln!(
        "1. a one-document commit logs {:.0} B (DATA + COMMIT records, headers included)",
        d.log_bytes_per_commit
    );
}

fn summarize_non_durable(nd: &NonDurable) {
    let memcpy = find(&nd.rows, "floor_memcpy_256");
    let wal = find(&nd.rows, "wal_group_none_mem");
    if let Some(m) = &memcpy {
        eprintln!("2. floor: memcpy 256 B {}", fmt_rate(per_s(op_ns(m))));
    }
    if let Some(w) = &wal {
        eprintln!(
            "2. the log alone (same two records, in memory): {} sustained",
            fmt_rate(per_s(w.mean_ns))
        );
    }
    let structures = find(&nd.rows, "floor_structures_insert");
    if let Some(f) = &structures {
        eprintln!(
            "2. floor: the structures one insert writes (2 papaya maps + 2 skip lists), alone: {} sustained",
            fmt_rate(per_s(f.mean_ns))
        );
    }
    for id in [
        "commit_none_mem_256",
        "commit_none_file_256",
        "put_none_mem_256",
    ] {
        if let Some(s) = find(&nd.rows, id) {
            // The verdict uses the sustained rate: all commits over all timed calls, flushes included.
            let sustained = per_s(s.mean_ns);
            eprintln!(
                "2. {id:<21} sustained {:>10}, criterion slope {:>10}; target >= 1 M/s: {}; {:.0}x memcpy, {:.1}x the log alone{}",
                fmt_rate(sustained),
                fmt_rate(per_s(op_ns(&s))),
                verdict(sustained >= 1e6),
                memcpy.as_ref().map_or(f64::NAN, |m| s.mean_ns / op_ns(m)),
                wal.as_ref().map_or(f64::NAN, |w| s.mean_ns / w.mean_ns),
                // A `put` of an existing document adds no keys: the insert floor says nothing about it.
                match (&structures, id.starts_with("commit_")) {
                    (Some(f), true) =>
                        format!(", {:.1}x the structures alone", s.mean_ns / f.mean_ns),
                    _ => String::new(),
                },
            );
        }
    }
}

fn summarize_reads(r: &Reads) {
    eprintln!(
        "3. loading {} documents in transactions of {TXN_DOCS} (in memory, None): {:.2} s, {}",
        r.docs,
        r.load_time.as_secs_f64(),
        fmt_rate(r.docs as f64 / r.load_time.as_secs_f64())
    );
    let flat = find(&r.rows, "floor_flat_random_256");
    let dependent = find(&r.rows, "floor_flat_dependent_256");
    let btree = find(&r.rows, "floor_btreemap_get");
    let papaya = find(&r.rows, "floor_papaya_get");
    let inline = find(&r.rows, "floor_std_hashmap_get");
    let ratio = |ns: f64, f: &Option<Summary>| f.as_ref().map_or(f64::NAN, |f| ns / op_ns(f));
    for (name, floor) in [
        ("papaya get (concurrent)", &papaya),
        ("std HashMap get (inline)", &inline),
    ] {
        if let Some(f) = floor {
            eprintln!("3. floor: {name} + 8 B read: {}", fmt_ns(op_ns(f)));
        }
    }
    for (id, target) in [("get_by_id", 150.0), ("find_one_email", 400.0)] {
        if let Some(s) = find(&r.rows, id) {
            let ns = op_ns(&s);
            eprintln!(
                "3. {id:<15} {} per read (p50 of batches {}); target <= {target} ns: {}; {:.1}x a random read, {:.1}x a dependent random read (one miss), {:.2}x std BTreeMap get, {:.2}x papaya get, {:.2}x std HashMap get",
                fmt_ns(ns),
                fmt_ns(s.p50_ns),
                verdict(ns <= target),
                ratio(ns, &flat),
                ratio(ns, &dependent),
                ratio(ns, &btree),
                ratio(ns, &papaya),
                ratio(ns, &inline),
            );
        }
    }
}

fn summarize_bulk(b: &Bulk) {
    for id in ["txn1000_sync", "txn1000_none"] {
        if let Some(s) = find(&b.rows, id) {
            eprintln!(
                "4. {id}: {} per transaction (p50 {}, p99 {}), {} documents/s",
                fmt_ns(s.mean_ns),
                fmt_ns(s.p50_ns),
                fmt_ns(s.p99_ns),
                fmt_rate(TXN_DOCS as f64 * per_s(s.mean_ns))
            );
        }
    }
}

fn summarize_group_commit(groups: &[GroupRow]) {
    let Some(one) = groups.first() else {
        return;
    };
    let base = one.commits_per_s();
    for g in groups {
        eprintln!(
            "5. {} threads: {} ({:.2}x 1 thread), {:.3} fdatasyncs per commit",
            g.threads,
            fmt_rate(g.commits_per_s()),
            g.commits_per_s() / base,
            g.stats.syncs as f64 / g.stats.appends.max(1) as f64,
        );
    }
}

fn report_memory(rows: &[MemoryRow]) {
    eprintln!(
        "\n== 6. memory: resident bytes per document after loading (fresh process per row) =="
    );
    eprintln!(
        "{:<10} {:>9} {:>8} {:>11} {:>11} {:>11} {:>10} {:>10} {:>10} {:>11}",
        "load",
        "docs",
        "archive",
        "RSS before",
        "RSS open",
        "RSS loaded",
        "RSS/doc",
        "anon/doc",
        "file/doc",
        "load rate"
    );
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    for m in rows {
        eprintln!(
            "{:<10} {:>9} {:>6} B {:>11} {:>11} {:>11} {:>8.0} B {:>8.0} B {:>8.0} B {:>11}",
            m.kind,
            m.docs,
            m.archive_bytes,
            mib(m.before.total),
            mib(m.opened.total),
            mib(m.loaded.total),
            m.per_doc(|r| r.total),
            m.per_doc(|r| r.anon),
            m.per_doc(|r| r.file),
            fmt_rate(m.docs as f64 / m.load_time.as_secs_f64())
        );
    }
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn report_checkpoints(k: &Checkpoints) {
    eprintln!(
        "\n== 7a. checkpoints of {} documents (each but the first after a 1,000-document change), next to one write + fsync of the same bytes (MB = 10^6 B) ==",
        k.docs
    );
    eprintln!(
        "{:>3} {:>12} {:>10} {:>10} {:>10} {:>11} {:>15}",
        "#", "bytes", "time", "MB/s", "floor", "floor MB/s", "time / floor"
    );
    for (i, r) in k.runs.iter().enumerate() {
        eprintln!(
            "{:>3} {:>12} {:>10} {:>10.0} {:>10} {:>11.0} {:>15.2}",
            i + 1,
            r.bytes,
            fmt_ns(r.time.as_nanos() as f64),
            mb_per_s(r.bytes, r.time),
            fmt_ns(r.floor.as_nanos() as f64),
            mb_per_s(r.bytes, r.floor),
            r.time.as_secs_f64() / r.floor.as_secs_f64()
        );
    }
    eprintln!(
        "\n== 7b/7c. reopen: Database::open (of which the log's recovery scan), then the first collection bind (validation + index) =="
    );
    eprintln!(
        "{:<12} {:>9} {:>12} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "data in", "docs", "log bytes", "records", "open", "log scan", "bind", "total", "docs/s"
    );
    let rows = k
        .reopens
        .iter()
        .map(|r| ("checkpoint", k.docs, r))
        .chain(k.tail.reopens.iter().map(|r| ("log tail", k.tail.docs, r)));
    for (what, docs, r) in rows {
        eprintln!(
            "{:<12} {:>9} {:>12} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11}",
            what,
            docs,
            r.log_bytes,
            r.records,
            fmt_ns(r.open.as_nanos() as f64),
            fmt_ns(r.scan.as_nanos() as f64),
            fmt_ns(r.bind.as_nanos() as f64),
            fmt_ns(r.total().as_nanos() as f64),
            fmt_rate(docs as f64 / r.total().as_secs_f64())
        );
    }
    let latencies: Vec<Summary> = k.commits.iter().filter_map(|g| g.latency.clone()).collect();
    print_table(
        "7d. Sync put commits of one 256 B document (replacing), one writer, alone / during checkpoints / during floor writes",
        &latencies,
    );
    print_table(
        "7e. get by id and find_one on the unique index, random keys: documents inserted in this process / read from the base (mapped snapshot)",
        &k.reads,
    );
}

fn summarize_checkpoints(k: &Checkpoints, reads: Option<&Reads>) {
    let s = |d: Duration| d.as_secs_f64();
    let ms = |d: f64| fmt_ns(d * 1e9);
    eprintln!(
        "7. loading {} documents in transactions of {TXN_DOCS} (file-backed, None): {:.2} s, {}",
        k.docs,
        s(k.load_time),
        fmt_rate(k.docs as f64 / s(k.load_time))
    );
    if let Some(first) = k.runs.first() {
        let bytes = median(k.runs.iter().map(|r| r.bytes as f64).collect());
        let time = median(k.runs.iter().map(|r| s(r.time)).collect());
        let floor = median(k.runs.iter().map(|r| s(r.floor)).collect());
        eprintln!(
            "7a. checkpoint of {} documents, {:.1} MB written: median {} = {:.0} MB/s over {} runs (first, which also truncates the loaded log: {}); floor (one write + fsync of the same bytes): median {} = {:.0} MB/s; checkpoint / floor = {:.2}",
            k.docs,
            bytes / 1e6,
            ms(time),
            bytes / 1e6 / time,
            k.runs.len(),
            ms(s(first.time)),
            ms(floor),
            bytes / 1e6 / floor,
            time / floor
        );
    }
    let reopen_line = |label: &str, docs: u64, reopens: &[Reopen]| {
        let open = median(reopens.iter().map(|r| s(r.open)).collect());
        let scan = median(reopens.iter().map(|r| s(r.scan)).collect());
        let bind = median(reopens.iter().map(|r| s(r.bind)).collect());
        let total = median(reopens.iter().map(|r| s(r.total())).collect());
        eprintln!(
            "{label}: median of {}: open {} (log scan {}), bind {}, total {} = {:.2} µs per document",
            reopens.len(),
            ms(open),
            ms(scan),
            ms(bind),
            ms(total),
            total * 1e6 / docs as f64
        );
        total
    };
    if !k.reopens.is_empty() {
        reopen_line(
            &format!("7b. reopen with {} documents in the checkpoint", k.docs),
            k.docs,
            &k.reopens,
        );
    }
    let t = &k.tail;
    if let Some(r) = t.reopens.first() {
        let gib = r.log_bytes as f64 / (1u64 << 30) as f64;
        eprintln!(
            "7c. log tail: {} documents, {} B of log ({:.3} GiB; {} files in wal/, {} B on disk), appended at {}",
            t.docs,
            r.log_bytes,
            gib,
            t.files,
            t.file_bytes,
            fmt_rate(t.docs as f64 / s(t.load_time))
        );
        let total = reopen_line("7c. reopen with that log tail", t.docs, &t.reopens);
        let target = 2.0 * gib;
        eprintln!(
            "7c. recovery (open + bind): {} log records, {:.2} GB/s of log; target <= 2 s per GiB of log ({:.2} s for this one): {}",
            fmt_rate(r.records as f64 / total),
            r.log_bytes as f64 / 1e9 / total,
            target,
            verdict(total <= target)
        );
    }
    let row = |name: &str| {
        k.commits
            .iter()
            .find(|g| g.latency.as_ref().is_some_and(|l| l.name.ends_with(name)))
    };
    if let (Some(alone), Some(busy)) = (row("put_sync_alone"), row("put_sync_during_checkpoints"))
        && let (Some(a), Some(b)) = (&alone.latency, &busy.latency)
    {
        let during: f64 = k.busy_checkpoints.iter().map(|(d, _)| s(*d)).sum();
        eprintln!(
            "7d. Sync put alone: p50 {}, p99 {}, p99.9 {}, {}; during checkpoints ({} back to back, their durations summing to {:.0}% of the run): p50 {}, p99 {}, p99.9 {}, {}",
            fmt_ns(a.p50_ns),
            fmt_ns(a.p99_ns),
            fmt_ns(a.p999_ns),
            fmt_rate(alone.commits_per_s()),
            k.busy_checkpoints.len(),
            100.0 * during / busy.elapsed.as_secs_f64(),
            fmt_ns(b.p50_ns),
            fmt_ns(b.p99_ns),
            fmt_ns(b.p999_ns),
            fmt_rate(busy.commits_per_s()),
        );
        let ratio = b.p999_ns / a.p50_ns;
        eprintln!(
            "7d. p99.9 during checkpoints / p50 alone = {ratio:.2}; target <= 3: {}",
            verdict(ratio <= 3.0)
        );
        if let Some(f) = row("put_sync_during_floor_writes").and_then(|g| g.latency.as_ref()) {
            eprintln!(
                "7d. floor: during {} back-to-back write + fsync of the same bytes: p50 {}, p99 {}, p99.9 {}; p99.9 / p50 alone = {:.2}",
                k.busy_floors.len(),
                fmt_ns(f.p50_ns),
                fmt_ns(f.p99_ns),
                fmt_ns(f.p999_ns),
                f.p999_ns / a.p50_ns
            );
        }
    }
    if let (Some(ins), Some(map)) = (
        find(&k.reads, "ckpt_get_inserted"),
        find(&k.reads, "ckpt_get_mapped"),
    ) {
        let section3 = reads
            .and_then(|r| find(&r.rows, "get_by_id"))
            .map_or_else(String::new, |g| {
                format!("; section 3's get_by_id: {}", fmt_ns(op_ns(&g)))
            });
        eprintln!(
            "7e. get by id over {} documents: inserted in this process {}, read in place from the mapped snapshot {} ({:.2}x){section3}",
            k.docs,
            fmt_ns(op_ns(&ins)),
            fmt_ns(op_ns(&map)),
            op_ns(&map) / op_ns(&ins)
        );
    }
    if let (Some(ins), Some(map)) = (
        find(&k.reads, "ckpt_find_one_inserted"),
        find(&k.reads, "ckpt_find_one_mapped"),
    ) {
        eprintln!(
            "7e. find_one on the unique index over {} documents: inserted in this process {}, from the base (mapped snapshot) {} ({:.2}x); target 400 ns",
            k.docs,
            fmt_ns(op_ns(&ins)),
            fmt_ns(op_ns(&map)),
            op_ns(&map) / op_ns(&ins)
        );
    }
}
