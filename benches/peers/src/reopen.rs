//! Workload 6, reopen after `kill -9` with a large log. The harness runs itself again as a child ("writer" mode)
//! that fills a store with durable 1,000-record transactions until it has written the mode's size of keys and
//! values, prints `ready RECORDS NANOS` and waits; the parent kills it with SIGKILL and times the reopen: open plus
//! the first read of the last acknowledged record (for a log: open plus reading every record back).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::engines::{self, Engine, Entry, Kind, Level, LogKind};
use crate::floor;
use crate::measure::{KEY_BYTES, Values, key_of};
use crate::report::{ReopenRow, Role, fmt_ns};
use crate::workloads::{BATCH, Ctx, SMALL_VALUE, disk_usage};

/// The child's engine id for collection-store with automatic checkpoints off.
const CS_NO_CHECKPOINTS: &str = "cstore-nockpt";

/// The writer child: fills `dir` with `bytes` of keys and values through the engine or log `id`, says so on
/// stdout, then waits to be killed.
pub fn child(id: &str, dir: &Path, bytes: u64) -> Result<()> {
    let values = Values::new();
    let per_record = (KEY_BYTES + SMALL_VALUE) as u64;
    let records_wanted = bytes.div_ceil(per_record).max(BATCH as u64);
    let start = Instant::now();
    let mut written = 0u64;
    let mut keys: Vec<[u8; KEY_BYTES]> = Vec::with_capacity(BATCH);
    if let Ok(log) = LogKind::from_id(id) {
        let l = log.open(dir, true)?;
        let mut records: Vec<Vec<u8>> = vec![Vec::new(); BATCH];
        while written < records_wanted {
            for (j, r) in records.iter_mut().enumerate() {
                let n = written + j as u64;
                r.clear();
                r.extend_from_slice(&key_of(n));
                r.extend_from_slice(values.of(n, SMALL_VALUE));
            }
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            l.append_batch(&refs)?;
            written += BATCH as u64;
        }
        ready(written, start.elapsed())?;
        drop(keys);
        wait_forever(l)
    } else {
        let engine: Box<dyn Engine> = if id == CS_NO_CHECKPOINTS {
            Box::new(engines::open_cstore_without_checkpoints(dir)?)
        } else {
            Kind::from_id(id)?.open(dir, Level::Sync)?
        };
        let mut w = engine.writer()?;
        while written < records_wanted {
            keys.clear();
            keys.extend((0..BATCH as u64).map(|j| key_of(written + j)));
            let entries: Vec<Entry<'_>> = keys
                .iter()
                .enumerate()
                .map(|(j, k)| {
                    let n = written + j as u64;
                    Entry {
                        id: n,
                        key: k,
                        value: values.of(n, SMALL_VALUE),
                    }
                })
                .collect();
            w.put_batch(&entries)?;
            written += BATCH as u64;
        }
        ready(written, start.elapsed())?;
        drop(w);
        wait_forever(engine)
    }
}

fn ready(records: u64, took: Duration) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {records} {}", took.as_nanos())?;
    out.flush()?;
    Ok(())
}

fn wait_forever<T>(_keep_open: T) -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Kills the child if the parent gives up early.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the writer child for `id` in `dir` and kills it with SIGKILL once it is ready: (records, fill rate).
fn fill_and_kill(id: &str, dir: &Path, bytes: u64) -> Result<(u64, f64)> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("--writer")
        .arg(id)
        .arg("--dir")
        .arg(dir)
        .arg("--bytes")
        .arg(bytes.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the writer child")?;
    let mut child = Killed(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("piped")).read_line(&mut line)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let ["ready", records, nanos] = f[..] else {
        let status = child.0.wait()?;
        bail!("writer child for {id} ended without saying it was ready ({status}): {line:?}");
    };
    // `Child::kill` sends SIGKILL.
    child.0.kill()?;
    let status = child.0.wait()?;
    anyhow::ensure!(
        !status.success(),
        "the child for {id} was not killed: {status}"
    );
    let records: u64 = records.parse()?;
    let nanos: f64 = nanos.parse()?;
    Ok((records, records as f64 / (nanos / 1e9)))
}

/// Times open plus the first read of the last record acknowledged before the kill.
fn reopen_engine(id: &str, dir: &Path, last: u64) -> Result<(Duration, String)> {
    let start = Instant::now();
    let engine: Box<dyn Engine> = if id == CS_NO_CHECKPOINTS {
        Box::new(engines::open_cstore_without_checkpoints(dir)?)
    } else {
        Kind::from_id(id)?.open(dir, Level::Sync)?
    };
    let found = engine.reader()?.get(last, &key_of(last))?;
    let took = start.elapsed();
    drop(engine);
    let check = match found {
        Some(len) if len == SMALL_VALUE => "last acknowledged record read back".to_owned(),
        other => format!("**last acknowledged record missing** ({other:?})"),
    };
    Ok((took, check))
}

pub fn run(ctx: &Ctx) -> Result<(Vec<ReopenRow>, String)> {
    let bytes = ctx.sizes.fill_bytes;
    let mut rows = Vec::new();
    if ctx.floors {
        let floor = floor::read_file(&ctx.dir, bytes)?;
        rows.push(ReopenRow {
            name: format!(
                "floor: read {} from the page cache",
                crate::report::fmt_bytes(bytes)
            ),
            role: Role::Floor,
            group: String::new(),
            records: 0,
            fill_rate: 0.0,
            disk_bytes: bytes,
            reopen: floor,
            check: String::new(),
        });
        eprintln!(
            "  [6] {:<44} reopen {:>9}",
            rows.last().expect("floor row").name,
            fmt_ns(floor.as_nanos() as f64)
        );
    }
    let mut targets: Vec<(String, String, Role, &str)> = Vec::new();
    for &kind in &ctx.kinds {
        if kind == Kind::CollectionStore {
            targets.push((
                CS_NO_CHECKPOINTS.into(),
                format!(
                    "{}, automatic checkpoints off (the whole log replayed)",
                    kind.name()
                ),
                Role::Subject,
                "",
            ));
            targets.push((
                kind.id().into(),
                format!("{}, default options (automatic checkpoints)", kind.name()),
                Role::Subject,
                "",
            ));
        } else {
            targets.push((kind.id().into(), kind.name().into(), Role::Peer, ""));
        }
    }
    for &log in &ctx.logs {
        let role = if log == LogKind::CollectionStoreWal {
            Role::Subject
        } else {
            Role::Peer
        };
        targets.push((log.id().into(), log.name().into(), role, "log only"));
    }
    for (id, name, role, group) in targets {
        let dir = ctx.fresh(&format!("reopen-{id}"))?;
        let (records, fill_rate) = fill_and_kill(&id, &dir, bytes)?;
        let disk_bytes = disk_usage(&dir);
        let (reopen, check) = if let Ok(log) = LogKind::from_id(&id) {
            let start = Instant::now();
            let (got, _) = log.recover(&dir)?;
            let took = start.elapsed();
            let check = if got == records {
                format!("all {} records read back", crate::report::fmt_count(got))
            } else {
                format!("**{got} of {records} records read back**")
            };
            (took, check)
        } else {
            reopen_engine(&id, &dir, records - 1)?
        };
        std::fs::remove_dir_all(&dir)?;
        eprintln!(
            "  [6] {name:<44} reopen {:>9}  ({check})",
            fmt_ns(reopen.as_nanos() as f64)
        );
        rows.push(ReopenRow {
            name,
            role,
            group: group.into(),
            records,
            fill_rate,
            disk_bytes,
            reopen,
            check,
        });
    }
    let about = format!(
        "A child process writes {} of keys and values (24 B + 150 B per record) in durable transactions of 1,000, \
         says it is ready, and is killed with SIGKILL. The parent then times opening the store plus reading the \
         last acknowledged record (the logs: opening plus reading every record back). The files are in the page \
         cache (just written); no cold-cache figure. collection-store runs twice: with automatic checkpoints off \
         (its whole log is replayed) and with its default options (a checkpoint every 256 MiB of log). Each peer \
         runs with its defaults (redb without quick-repair: it repairs after a crash; okaywal never checkpointing \
         here, so that its whole log is recovered). The floor reads a file of the same size.",
        crate::report::fmt_bytes(bytes)
    );
    Ok((rows, about))
}
