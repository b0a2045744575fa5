//! Workloads 1–5: each runs every engine (and, where it applies, each log) on a fresh directory, next to its floor,
//! and returns a table.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rand::{Rng, SeedableRng};

use crate::engines::{Cs, Engine, Entry, Kind, Level, LogKind, Reader};
use crate::floor;
use crate::measure::{Budget, DiskFlushes, KEY_BYTES, Run, Values, key_of, timed, timed_threads};
use crate::report::{Role, Row, Section, fmt_ns, fmt_rate};

/// Value bytes of the batch and read workloads.
pub const SMALL_VALUE: usize = 150;
/// Records per batch transaction.
pub const BATCH: usize = 1000;

/// The run's sizes, by mode.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub mode: &'static str,
    pub warm_up: Duration,
    pub time: Duration,
    /// Size of the floors' zero-filled files.
    pub floor_file: u64,
    /// Keys loaded for random reads.
    pub read_keys: u64,
    /// Key and value bytes written before the kill in the reopen workload.
    pub fill_bytes: u64,
    pub threads: Vec<usize>,
}

impl Sizes {
    pub fn tiny() -> Self {
        Self {
            mode: "tiny (CI smoke: not for publishing)",
            warm_up: Duration::from_millis(20),
            time: Duration::from_millis(120),
            floor_file: 8 << 20,
            read_keys: 5_000,
            fill_bytes: 2 << 20,
            threads: vec![1, 2, 4, 8],
        }
    }

    pub fn quick() -> Self {
        Self {
            mode: "quick",
            warm_up: Duration::from_millis(150),
            time: Duration::from_secs(1),
            floor_file: 32 << 20,
            read_keys: 200_000,
            fill_bytes: 64 << 20,
            threads: vec![1, 2, 4, 8],
        }
    }

    pub fn full() -> Self {
        Self {
            mode: "full",
            warm_up: Duration::from_millis(500),
            time: Duration::from_secs(7),
            floor_file: 64 << 20,
            read_keys: 1_000_000,
            fill_bytes: 1 << 30,
            threads: vec![1, 2, 4, 8],
        }
    }
}

/// What every workload needs.
pub struct Ctx {
    pub dir: PathBuf,
    pub sizes: Sizes,
    pub disk: Option<DiskFlushes>,
    pub values: Values,
    pub kinds: Vec<Kind>,
    pub logs: Vec<LogKind>,
    /// Whether to measure the floors.
    pub floors: bool,
}

impl Ctx {
    pub fn budget(&self) -> Budget {
        Budget {
            warm_up: self.sizes.warm_up,
            time: self.sizes.time,
            max_ops: u64::MAX,
        }
    }

    /// An empty directory for one engine's run.
    pub fn fresh(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join(name.replace([' ', '(', ')', '/', ','], "_"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn disk(&self) -> Option<&DiskFlushes> {
        self.disk.as_ref()
    }
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn progress(section: &str, row: &Row) {
    eprintln!(
        "  [{section}] {:<44} {:<22} {:>10}/s  p50 {:>9}  p99 {:>9}  p99.9 {:>9}",
        row.name,
        row.group,
        fmt_rate(row.throughput()),
        fmt_ns(row.run.latency.p50),
        fmt_ns(row.run.latency.p99),
        fmt_ns(row.run.latency.p999)
    );
}

fn role_of(kind: Kind) -> Role {
    if kind == Kind::CollectionStore {
        Role::Subject
    } else {
        Role::Peer
    }
}

fn floor_row(name: &str, group: &str, run: Run) -> Row {
    Row {
        name: format!("floor: {name}"),
        role: Role::Floor,
        group: group.into(),
        level: "–".into(),
        run,
        items_per_op: 1,
        syncs: None,
    }
}

/// Opens `kind` fresh at `level`, runs `body` on it, and makes its row (syncs counted over the run).
fn engine_row(
    ctx: &Ctx,
    kind: Kind,
    level: Level,
    group: &str,
    items_per_op: u64,
    body: impl FnOnce(&dyn Engine) -> Result<Run>,
) -> Result<Row> {
    let dir = ctx.fresh(&format!("{}-{group}", kind.id()))?;
    let engine = kind.open(&dir, level)?;
    let before = engine.syncs();
    let run = body(engine.as_ref())?;
    let syncs = engine.syncs().zip(before).map(|(a, b)| a - b);
    drop(engine);
    std::fs::remove_dir_all(&dir)?;
    Ok(Row {
        name: kind.name().into(),
        role: role_of(kind),
        group: group.into(),
        level: level_label(kind, level).into(),
        run,
        items_per_op,
        syncs,
    })
}

fn level_label(kind: Kind, level: Level) -> &'static str {
    match (kind, level) {
        (_, Level::Sync) => "durable",
        (Kind::CollectionStore, Level::Os) => "Os",
        (Kind::CollectionStore, Level::Memory) => "None",
        _ => "non-durable",
    }
}

fn log_row(
    ctx: &Ctx,
    log: LogKind,
    group: &str,
    items_per_op: u64,
    body: impl FnOnce(&dyn crate::engines::Log) -> Result<Run>,
) -> Result<Row> {
    let dir = ctx.fresh(&format!("{}-{group}", log.id()))?;
    let l = log.open(&dir, false)?;
    let before = l.syncs();
    let run = body(l.as_ref())?;
    let syncs = l.syncs().zip(before).map(|(a, b)| a - b);
    drop(l);
    std::fs::remove_dir_all(&dir)?;
    Ok(Row {
        name: log.name().into(),
        role: if log == LogKind::CollectionStoreWal {
            Role::Subject
        } else {
            Role::Peer
        },
        group: group.into(),
        level: "durable".into(),
        run,
        items_per_op,
        syncs,
    })
}

/// Single-record commits of key `i` with a `value_bytes` value, one thread.
fn single_commits(ctx: &Ctx, e: &dyn Engine, value_bytes: usize, id_base: u64) -> Result<Run> {
    let mut w = e.writer()?;
    timed(ctx.budget(), ctx.disk(), |i| {
        let id = id_base + i;
        w.put(Entry {
            id,
            key: &key_of(id),
            value: ctx.values.of(id, value_bytes),
        })
    })
}

/// 1. Durable single-writer commits of 256 B and 4 KiB values.
pub fn durable(ctx: &Ctx) -> Result<Section> {
    let mut rows = Vec::new();
    for value_bytes in [256usize, 4096] {
        let group = size_label(value_bytes);
        if ctx.floors {
            let run = floor::pwrite(
                &ctx.dir,
                ctx.sizes.floor_file,
                value_bytes,
                true,
                ctx.budget(),
                ctx.disk(),
            )?;
            rows.push(floor_row(
                &format!("pwrite {group} + fdatasync"),
                &group,
                run,
            ));
            progress("1", rows.last().unwrap());
        }
        for &kind in &ctx.kinds {
            rows.push(engine_row(ctx, kind, Level::Sync, &group, 1, |e| {
                single_commits(ctx, e, value_bytes, 0)
            })?);
            progress("1", rows.last().unwrap());
        }
        let log_group = format!("{group}, log only");
        for &log in &ctx.logs {
            rows.push(log_row(ctx, log, &log_group, 1, |l| {
                timed(ctx.budget(), ctx.disk(), |i| {
                    l.append(ctx.values.of(i, value_bytes))
                })
            })?);
            progress("1", rows.last().unwrap());
        }
    }
    Ok(Section {
        id: "1-durable".into(),
        title: "1. Durable single-writer commits".into(),
        about: "One thread commits one new record per transaction (24 B key; a 256 B or 4 KiB value) and waits until \
                it is durable. The floor is `pwrite` of the value's size into a zero-filled file plus `fdatasync`. \
                The logs on their own (collection-store's `wal::Wal`, okaywal) append the value as one record."
            .into(),
        unit: "commits/s".into(),
        latency_of: "per commit".into(),
        rows,
        notes: Vec::new(),
    })
}

/// 2. Group commit: 1, 2, 4, 8 threads of durable single-record commits.
pub fn group_commit(ctx: &Ctx) -> Result<Section> {
    let mut rows = Vec::new();
    if ctx.floors {
        let run = floor::pwrite(
            &ctx.dir,
            ctx.sizes.floor_file,
            256,
            true,
            ctx.budget(),
            ctx.disk(),
        )?;
        rows.push(floor_row(
            "pwrite 256 B + fdatasync, 1 thread",
            "1 thread",
            run,
        ));
        progress("2", rows.last().unwrap());
    }
    let group_of = |t: usize| {
        if t == 1 {
            "1 thread".to_owned()
        } else {
            format!("{t} threads")
        }
    };
    for &kind in &ctx.kinds {
        let dir = ctx.fresh(&format!("{}-group", kind.id()))?;
        let engine = kind.open(&dir, Level::Sync)?;
        for (ri, &threads) in ctx.sizes.threads.iter().enumerate() {
            let before = engine.syncs();
            let e = engine.as_ref();
            let values = &ctx.values;
            let run = timed_threads(threads, ctx.budget(), ctx.disk(), |t| {
                let mut w = e.writer()?;
                let base = ((ri as u64 + 1) << 48) | ((t as u64) << 40);
                Ok(move |i: u64| {
                    let id = base + i;
                    w.put(Entry {
                        id,
                        key: &key_of(id),
                        value: values.of(id, 256),
                    })
                })
            })?;
            rows.push(Row {
                name: kind.name().into(),
                role: role_of(kind),
                group: group_of(threads),
                level: "durable".into(),
                run,
                items_per_op: 1,
                syncs: engine.syncs().zip(before).map(|(a, b)| a - b),
            });
            progress("2", rows.last().unwrap());
        }
        drop(engine);
        std::fs::remove_dir_all(&dir)?;
    }
    for &log in &ctx.logs {
        let dir = ctx.fresh(&format!("{}-group", log.id()))?;
        let l = log.open(&dir, false)?;
        for &threads in &ctx.sizes.threads {
            let before = l.syncs();
            let lr = l.as_ref();
            let values = &ctx.values;
            let run = timed_threads(threads, ctx.budget(), ctx.disk(), |t| {
                Ok(move |i: u64| lr.append(values.of(((t as u64) << 40) + i, 256)))
            })?;
            rows.push(Row {
                name: log.name().into(),
                role: if log == LogKind::CollectionStoreWal {
                    Role::Subject
                } else {
                    Role::Peer
                },
                group: format!("{}, log only", group_of(threads)),
                level: "durable".into(),
                run,
                items_per_op: 1,
                syncs: l.syncs().zip(before).map(|(a, b)| a - b),
            });
            progress("2", rows.last().unwrap());
        }
        drop(l);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(Section {
        id: "2-group-commit".into(),
        title: "2. Group commit".into(),
        about: "N threads each commit one new record (24 B key, 256 B value) per transaction, durably, for the \
                same time; commits/s counts all threads. `syncs/op` is the engine's own count of fdatasyncs per \
                commit where it tells (collection-store); `disk flushes/op` counts the device's cache flushes per \
                commit for every engine. Every row is compared with collection-store at the same thread count."
            .into(),
        unit: "commits/s".into(),
        latency_of: "per commit, all threads merged".into(),
        rows,
        notes: Vec::new(),
    })
}

/// 3. Non-durable single-record commits.
pub fn non_durable(ctx: &Ctx) -> Result<Section> {
    let mut rows = Vec::new();
    let group = "256 B";
    if ctx.floors {
        rows.push(floor_row(
            "memcpy 256 B",
            group,
            floor::memcpy(256, ctx.budget()),
        ));
        progress("3", rows.last().unwrap());
        let run = floor::pwrite(
            &ctx.dir,
            ctx.sizes.floor_file,
            256,
            false,
            ctx.budget(),
            ctx.disk(),
        )?;
        rows.push(floor_row("pwrite 256 B, no sync", group, run));
        progress("3", rows.last().unwrap());
    }
    for &kind in &ctx.kinds {
        let levels: &[Level] = if kind == Kind::CollectionStore {
            &[Level::Os, Level::Memory]
        } else {
            &[Level::Os]
        };
        for &level in levels {
            let mut row = engine_row(ctx, kind, level, group, 1, |e| {
                single_commits(ctx, e, 256, 0)
            })?;
            if kind == Kind::CollectionStore {
                row.name = format!("{} ({})", kind.name(), level_label(kind, level));
            }
            rows.push(row);
            progress("3", rows.last().unwrap());
        }
    }
    Ok(Section {
        id: "3-non-durable".into(),
        title: "3. Non-durable single-record commits".into(),
        about: "One thread commits one new record (24 B key, 256 B value) per transaction at each engine's \
                non-durable setting (see the durability table): collection-store at `Durability::Os` and \
                `Durability::None`. Floors: a 256 B `memcpy` (timed in batches of 1,024) and a 256 B `pwrite` \
                without sync. The ratio to the floor uses the memcpy."
            .into(),
        unit: "commits/s".into(),
        latency_of: "per commit".into(),
        rows,
        notes: Vec::new(),
    })
}

/// Keys `first..first + n` with their values, as entries (the key bytes kept in `keys`).
fn batch_entries<'a>(
    ctx: &'a Ctx,
    keys: &'a mut Vec<[u8; KEY_BYTES]>,
    first: u64,
    n: usize,
) -> Vec<Entry<'a>> {
    keys.clear();
    keys.extend((0..n as u64).map(|j| key_of(first + j)));
    keys.iter()
        .enumerate()
        .map(|(j, k)| {
            let id = first + j as u64;
            Entry {
                id,
                key: k,
                value: ctx.values.of(id, SMALL_VALUE),
            }
        })
        .collect()
}

/// 4. Durable transactions of 1,000 records (24 B keys, 150 B values).
pub fn batches(ctx: &Ctx) -> Result<Section> {
    let mut rows = Vec::new();
    let group = "1,000 × (24 B + 150 B)";
    let bytes = BATCH * (KEY_BYTES + SMALL_VALUE);
    if ctx.floors {
        let run = floor::pwrite(
            &ctx.dir,
            ctx.sizes.floor_file.max(bytes as u64 * 64),
            bytes,
            true,
            ctx.budget(),
            ctx.disk(),
        )?;
        let mut f = floor_row(
            &format!(
                "pwrite {} B + fdatasync",
                crate::report::fmt_count(bytes as u64)
            ),
            group,
            run,
        );
        f.items_per_op = BATCH as u64;
        rows.push(f);
        progress("4", rows.last().unwrap());
    }
    for &kind in &ctx.kinds {
        rows.push(engine_row(
            ctx,
            kind,
            Level::Sync,
            group,
            BATCH as u64,
            |e| {
                let mut w = e.writer()?;
                let mut keys = Vec::with_capacity(BATCH);
                timed(ctx.budget(), ctx.disk(), |i| {
                    let entries = batch_entries(ctx, &mut keys, i * BATCH as u64, BATCH);
                    w.put_batch(&entries)
                })
            },
        )?);
        progress("4", rows.last().unwrap());
    }
    let log_group = format!("{group}, log only");
    for &log in &ctx.logs {
        rows.push(log_row(ctx, log, &log_group, BATCH as u64, |l| {
            let mut records: Vec<Vec<u8>> = (0..BATCH)
                .map(|_| Vec::with_capacity(KEY_BYTES + SMALL_VALUE))
                .collect();
            timed(ctx.budget(), ctx.disk(), |i| {
                for (j, r) in records.iter_mut().enumerate() {
                    let id = i * BATCH as u64 + j as u64;
                    r.clear();
                    r.extend_from_slice(&key_of(id));
                    r.extend_from_slice(ctx.values.of(id, SMALL_VALUE));
                }
                let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                l.append_batch(&refs)
            })
        })?);
        progress("4", rows.last().unwrap());
    }
    Ok(Section {
        id: "4-batches".into(),
        title: "4. Durable 1,000-record transactions".into(),
        about: "One thread commits transactions of 1,000 new records (24 B key, 150 B value), each durable. The \
                floor writes the same 174,000 bytes with one `pwrite` and one `fdatasync`. The logs append the \
                1,000 key+value records as one group (collection-store `append_group`) or one entry of 1,000 \
                chunks (okaywal). Building the batch is inside the timed region for every engine."
            .into(),
        unit: "records/s".into(),
        latency_of: "per transaction of 1,000".into(),
        rows,
        notes: Vec::new(),
    })
}

/// Loads keys `0..n` in batches of 1,000; returns the load rate (records/s).
fn load(ctx: &Ctx, e: &dyn Engine, n: u64) -> Result<f64> {
    let mut w = e.writer()?;
    let mut keys = Vec::with_capacity(BATCH);
    let start = Instant::now();
    let mut first = 0;
    while first < n {
        let k = (n - first).min(BATCH as u64) as usize;
        let entries = batch_entries(ctx, &mut keys, first, k);
        w.put_batch(&entries)?;
        first += k as u64;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn random_reads(ctx: &Ctx, r: &mut dyn Reader, order: &[u64]) -> Result<Run> {
    timed(ctx.budget(), None, |i| {
        let id = order[i as usize % order.len()];
        match r.get(id, &key_of(id))? {
            Some(len) if len == SMALL_VALUE => Ok(()),
            other => bail!("key {id}: read {other:?}"),
        }
    })
}

fn read_row(name: String, role: Role, group: &str, run: Run) -> Row {
    Row {
        name,
        role,
        group: group.into(),
        level: "–".into(),
        run,
        items_per_op: 1,
        syncs: None,
    }
}

/// Workload 5, random point reads over N keys (1 M in full mode); for collection-store also `find_one` on the
/// unique index, before and after a checkpoint.
pub fn reads(ctx: &Ctx) -> Result<Section> {
    let n = ctx.sizes.read_keys;
    let group = format!("{} keys", crate::report::fmt_count(n));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let order: Vec<u64> = (0..(1usize << 20).min(n as usize * 4))
        .map(|_| rng.random_range(0..n))
        .collect();
    let mut rows = Vec::new();
    if ctx.floors {
        rows.push(floor_row(
            "copy 174 B from a random slot of an array in memory",
            &group,
            floor::random_read(n, KEY_BYTES + SMALL_VALUE, &order, ctx.budget())?,
        ));
        progress("5", rows.last().unwrap());
    }
    let mut notes = Vec::new();
    for &kind in &ctx.kinds {
        let dir = ctx.fresh(&format!("{}-reads", kind.id()))?;
        if kind == Kind::CollectionStore {
            let cs = Cs::open(&dir, Level::Sync, true)?;
            let rate = load(ctx, &cs, n)?;
            notes.push(format!(
                "Load (not timed as a workload): {} loaded at {} records/s.",
                kind.name(),
                fmt_rate(rate)
            ));
            for stage in ["", ", after a checkpoint"] {
                if !stage.is_empty() {
                    cs.checkpoint()?;
                }
                let run = random_reads(ctx, cs.reader()?.as_mut(), &order)?;
                rows.push(read_row(
                    format!("{}: `get` by id{stage}", kind.name()),
                    Role::Subject,
                    &group,
                    run,
                ));
                progress("5", rows.last().unwrap());
                let run = random_reads(ctx, &mut cs.key_reader(), &order)?;
                rows.push(read_row(
                    format!(
                        "{}: `find_one` by 24 B key (unique index){stage}",
                        kind.name()
                    ),
                    Role::Subject,
                    &group,
                    run,
                ));
                progress("5", rows.last().unwrap());
            }
        } else {
            let e = kind.open(&dir, Level::Sync)?;
            let rate = load(ctx, e.as_ref(), n)?;
            notes.push(format!(
                "Load (not timed as a workload): {} loaded at {} records/s.",
                kind.name(),
                fmt_rate(rate)
            ));
            let run = random_reads(ctx, e.reader()?.as_mut(), &order)?;
            rows.push(read_row(
                format!("{}: get by key", kind.name()),
                Role::Peer,
                &group,
                run,
            ));
            progress("5", rows.last().unwrap());
        }
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(Section {
        id: "5-reads".into(),
        title: "5. Random point reads".into(),
        about: format!(
            "Each engine is loaded with {} records (24 B key, 150 B value) in durable transactions of 1,000, \
             then one thread reads uniformly random keys through one read view kept across reads (a snapshot, \
             read transaction or prepared statement). collection-store reads by id (its primary key) with `get` \
             and by the 24 B key with `find_one` on the unique index (the equivalent of the peers' get by key), \
             as loaded (the newest documents in the in-memory delta) and after `checkpoint()` (read in place from \
             the mapped snapshot). Each read is timed on its own, clock included; the floor is timed the same way.",
            crate::report::fmt_count(n),
        ),
        unit: "reads/s".into(),
        latency_of: "per read".into(),
        rows,
        notes,
    })
}

/// Bytes allocated on disk under `dir`.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += disk_usage(&e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}
