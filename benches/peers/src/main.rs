//! The peer benchmark: the same workloads on collection-store and on the embedded stores users would pick instead
//! (redb, fjall, sled, heed/LMDB, SQLite through rusqlite, and RocksDB behind the `rocksdb` feature; okaywal for the
//! log-only workloads), next to the raw floor measured in the same run. Writes its results between the markers
//! `<!-- peers:begin -->` and `<!-- peers:end -->` of BENCHMARKS.md, with SVG plots.
//!
//! ```text
//! cargo run --release -p peers                    # full mode, for publishing (about 15–25 minutes)
//! cargo run --release -p peers -- --quick         # a few minutes
//! cargo run --release -p peers -- --quick --tiny --out /tmp/peers.md     # CI smoke: tiny sizes
//! options: --out FILE (default: BENCHMARKS.md at the repository's root), --dir DIR (data directory, default
//!          target/peers-data; never tmpfs), --plots DIR, --workloads 1,2,3,4,5,6, --engines cstore,redb,...
//! ```

mod engines;
mod floor;
mod machine;
mod measure;
mod plot;
mod reopen;
mod report;
mod workloads;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use engines::{Kind, Level, LogKind};
use measure::{DiskFlushes, Values};
use report::{ReopenRow, Role, Section};
use workloads::{Ctx, Sizes};

struct Args {
    quick: bool,
    tiny: bool,
    out: Option<PathBuf>,
    dir: Option<PathBuf>,
    plots: Option<PathBuf>,
    workloads: Vec<u32>,
    engines: Option<Vec<String>>,
    writer: Option<String>,
    bytes: u64,
    /// Run the workloads here and print the results as JSON (the parent runs each engine in such a child).
    child: bool,
}

/// What a child sends back.
#[derive(Default, Serialize, Deserialize)]
struct ChildOut {
    sections: Vec<Section>,
    reopen: Option<(Vec<ReopenRow>, String)>,
}

/// Marks the child's result line on its stdout.
const RESULT_PREFIX: &str = "peers-result ";

fn parse_args() -> Result<Args> {
    use lexopt::prelude::*;
    let mut a = Args {
        quick: false,
        tiny: false,
        out: None,
        dir: None,
        plots: None,
        workloads: (1..=6).collect(),
        engines: None,
        writer: None,
        bytes: 0,
        child: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("quick") => a.quick = true,
            Long("tiny") => a.tiny = true,
            Long("out") => a.out = Some(p.value()?.into()),
            Long("dir") => a.dir = Some(p.value()?.into()),
            Long("plots") => a.plots = Some(p.value()?.into()),
            Long("workloads") => {
                a.workloads = p
                    .value()?
                    .string()?
                    .split(',')
                    .map(|w| w.trim().parse().context("--workloads takes numbers 1-6"))
                    .collect::<Result<_>>()?;
            }
            Long("engines") => {
                a.engines = Some(
                    p.value()?
                        .string()?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .collect(),
                );
            }
            // The reopen workload's child.
            Long("writer") => a.writer = Some(p.value()?.string()?),
            Long("bytes") => a.bytes = p.value()?.parse()?,
            Long("child") => a.child = true,
            Long("help") | Short('h') => {
                println!(
                    "peers [--quick] [--tiny] [--out FILE] [--dir DIR] [--plots DIR] [--workloads 1,..,6] [--engines {}]",
                    ["floor"]
                        .into_iter()
                        .chain(Kind::all().iter().map(|k| k.id()))
                        .chain(LogKind::all().iter().map(|l| l.id()))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(a)
}

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(id) = &args.writer {
        let dir = args.dir.as_ref().context("--writer needs --dir")?;
        return reopen::child(id, dir, args.bytes);
    }
    if let Some(ids) = &args.engines {
        for id in ids {
            if id != "floor" && Kind::from_id(id).is_err() && LogKind::from_id(id).is_err() {
                anyhow::bail!("--engines: unknown engine {id:?} (see --help)");
            }
        }
    }
    if let Some(n) = args.workloads.iter().find(|n| !(1..=6).contains(*n)) {
        anyhow::bail!("--workloads: there is no workload {n} (1 to 6)");
    }
    let started = Instant::now();
    let sizes = if args.tiny {
        Sizes::tiny()
    } else if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if args.child {
        let dir = args.dir.clone().context("--child needs --dir")?;
        let wanted = |id: &str| {
            args.engines
                .as_ref()
                .is_none_or(|e| e.iter().any(|x| x == id))
        };
        let ctx = Ctx {
            disk: DiskFlushes::for_path(&dir),
            dir,
            sizes,
            values: Values::new(),
            kinds: Kind::all().into_iter().filter(|k| wanted(k.id())).collect(),
            logs: LogKind::all()
                .into_iter()
                .filter(|l| wanted(l.id()))
                .collect(),
            floors: wanted("floor"),
        };
        let out = run_here(&ctx, &args.workloads)?;
        println!("{RESULT_PREFIX}{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    let root = repo_root();
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| root.join("target/peers-data"));
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    machine::refuse_memory_fs(&base)?;
    let dir = base.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let plots = args.plots.clone().unwrap_or_else(|| {
        if args.out.is_none() {
            root.join("benches/peers/plots")
        } else {
            let stem = out
                .file_stem()
                .map_or("peers".into(), |s| s.to_string_lossy().into_owned());
            out.parent()
                .unwrap_or(Path::new("."))
                .join(format!("{stem}-plots"))
        }
    });
    std::fs::create_dir_all(&plots)?;
    let wanted = |id: &str| {
        args.engines
            .as_ref()
            .is_none_or(|e| e.iter().any(|x| x == id))
    };
    let ctx = Ctx {
        disk: DiskFlushes::for_path(&dir),
        dir: dir.clone(),
        sizes,
        values: Values::new(),
        kinds: Kind::all().into_iter().filter(|k| wanted(k.id())).collect(),
        logs: LogKind::all()
            .into_iter()
            .filter(|l| wanted(l.id()))
            .collect(),
        floors: true,
    };
    eprintln!(
        "peers: {} mode, data in {}, results to {}",
        ctx.sizes.mode,
        dir.display(),
        out.display()
    );
    // Each engine runs each workload in a child process of its own: no engine's background threads, caches or
    // crash reach another's measurement.
    let mut units: Vec<(&str, bool)> = vec![("floor", false)];
    units.extend(ctx.kinds.iter().map(|k| (k.id(), false)));
    units.extend(ctx.logs.iter().map(|l| (l.id(), true)));
    let mut merged = ChildOut::default();
    let mut failures = Vec::new();
    for &n in &args.workloads {
        eprintln!("workload {n} ({:.0} s in)", started.elapsed().as_secs_f64());
        for &(unit, is_log) in &units {
            // The logs have no non-durable commits or point reads.
            if is_log && (n == 3 || n == 5) {
                continue;
            }
            match run_child(&args, &dir, n, unit) {
                Ok(part) => merge(&mut merged, part),
                Err(e) => {
                    eprintln!("  workload {n}, {unit}: FAILED: {e:#}");
                    failures.push(format!("workload {n}, `{unit}`: {e:#}"));
                }
            }
        }
    }
    let sections = merged.sections;
    let reopen = merged.reopen;
    let plot_links = draw_plots(&sections, reopen.as_ref().map(|r| &r.0[..]), &plots, &out)?;
    let text = render(
        &ctx,
        &args,
        &sections,
        reopen.as_ref(),
        &plot_links,
        &failures,
        started.elapsed().as_secs_f64(),
    );
    let existing = match std::fs::read_to_string(&out) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", out.display())),
    };
    std::fs::write(&out, report::splice(&existing, &text)?)?;
    std::fs::remove_dir_all(&dir)?;
    eprintln!(
        "peers: wrote {} and plots in {} ({:.0} s)",
        out.display(),
        plots.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the workloads in this process.
fn run_here(ctx: &Ctx, workloads: &[u32]) -> Result<ChildOut> {
    let mut out = ChildOut::default();
    type Step = fn(&Ctx) -> Result<Section>;
    let steps: [(u32, Step); 5] = [
        (1, workloads::durable),
        (2, workloads::group_commit),
        (3, workloads::non_durable),
        (4, workloads::batches),
        (5, workloads::reads),
    ];
    for (n, step) in steps {
        if workloads.contains(&n) {
            out.sections
                .push(step(ctx).with_context(|| format!("workload {n}"))?);
        }
    }
    if workloads.contains(&6) {
        out.reopen = Some(reopen::run(ctx).context("workload 6")?);
    }
    Ok(out)
}

/// Runs workload `n` for one engine, log or the floors (`unit`) in a child process; its progress goes to stderr.
fn run_child(args: &Args, dir: &Path, n: u32, unit: &str) -> Result<ChildOut> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--child")
        .arg("--workloads")
        .arg(n.to_string())
        .arg("--engines")
        .arg(unit)
        .arg("--dir")
        .arg(dir);
    if args.quick {
        cmd.arg("--quick");
    }
    if args.tiny {
        cmd.arg("--tiny");
    }
    let output = cmd
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("start a child")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT_PREFIX));
    match (output.status.success(), line) {
        (true, Some(json)) => Ok(serde_json::from_str(json)?),
        _ => anyhow::bail!("the child ended with {} and no result", output.status),
    }
}

/// Appends a child's rows to the tables of the same workloads.
fn merge(into: &mut ChildOut, part: ChildOut) {
    for s in part.sections {
        match into.sections.iter_mut().find(|x| x.id == s.id) {
            Some(x) => {
                x.rows.extend(s.rows);
                x.notes.extend(s.notes);
            }
            None => into.sections.push(s),
        }
    }
    for s in &mut into.sections {
        sort_rows(&mut s.rows);
    }
    if let Some((rows, about)) = part.reopen {
        match into.reopen.as_mut() {
            Some((r, _)) => r.extend(rows),
            None => into.reopen = Some((rows, about)),
        }
    }
}

/// Orders a table's rows by group (in the order groups first appear), then floor, collection-store, peers; rows
/// otherwise keep their order.
fn sort_rows(rows: &mut [report::Row]) {
    let mut groups: Vec<String> = Vec::new();
    for r in rows.iter() {
        if !groups.contains(&r.group) {
            groups.push(r.group.clone());
        }
    }
    let rank = |r: &report::Row| {
        let g = groups
            .iter()
            .position(|g| *g == r.group)
            .unwrap_or(usize::MAX);
        let role = match r.role {
            Role::Floor => 0,
            Role::Subject => 1,
            Role::Peer => 2,
        };
        (g, role)
    };
    rows.sort_by_key(rank);
}

/// Writes one SVG per table; returns, per section id, the link relative to the output file.
fn draw_plots(
    sections: &[Section],
    reopen: Option<&[ReopenRow]>,
    plots: &Path,
    out: &Path,
) -> Result<Vec<(String, String)>> {
    let out_dir = out
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .canonicalize()?;
    let plots = plots.canonicalize()?;
    let link = |file: &Path| -> String {
        file.strip_prefix(&out_dir)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned()
    };
    let mut links = Vec::new();
    for s in sections {
        let path = plots.join(format!("{}.svg", s.id));
        if s.id == "2-group-commit" {
            let mut series: Vec<plot::Series> = Vec::new();
            for r in s.rows.iter().filter(|r| r.role != Role::Floor) {
                let threads: usize = r
                    .group
                    .split(' ')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(1);
                match series.iter_mut().find(|x| x.0 == r.name) {
                    Some(x) => x.2.push((threads, r.throughput())),
                    None => series.push((r.name.clone(), r.role, vec![(threads, r.throughput())])),
                }
            }
            plot::lines(&path, &s.title, &s.unit, &series)?;
        } else {
            let one_group = s.rows.iter().all(|r| r.group == s.rows[0].group);
            let bars: Vec<plot::Bar> = s
                .rows
                .iter()
                .map(|r| plot::Bar {
                    label: if one_group {
                        short(&r.name)
                    } else {
                        format!("{} · {}", short(&r.name), r.group)
                    },
                    value: r.throughput(),
                    role: r.role,
                })
                .collect();
            plot::bars(&path, &s.title, &s.unit, &bars)?;
        }
        links.push((s.id.clone(), link(&path)));
    }
    if let Some(rows) = reopen {
        let path = plots.join("6-reopen.svg");
        let bars: Vec<plot::Bar> = rows
            .iter()
            .map(|r| plot::Bar {
                label: short(&r.name),
                value: r.reopen.as_secs_f64() * 1e3,
                role: r.role,
            })
            .collect();
        plot::bars(
            &path,
            "6. Reopen after kill -9 (shorter is better)",
            "milliseconds",
            &bars,
        )?;
        links.push(("6-reopen".into(), link(&path)));
    }
    Ok(links)
}

/// A label short enough for a plot's axis.
fn short(name: &str) -> String {
    let n = name.replace('`', "");
    if n.chars().count() > 72 {
        n.chars().take(71).collect::<String>() + "…"
    } else {
        n
    }
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Nanoseconds one `Instant::now()` pair costs (the floor under every per-operation timing).
fn clock_overhead_ns() -> f64 {
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(Instant::now().elapsed());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn render(
    ctx: &Ctx,
    args: &Args,
    sections: &[Section],
    reopen: Option<&(Vec<ReopenRow>, String)>,
    links: &[(String, String)],
    failures: &[String],
    took_s: f64,
) -> String {
    let mut s = String::new();
    let root = repo_root();
    let root_s = root.to_string_lossy().into_owned();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let commit = command_output("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "?".into());
    let dirty = command_output(
        "git",
        &[
            "-C",
            &root_s,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_some_and(|o| !o.is_empty());
    let mut cmd = String::from("cargo run --release -p peers");
    if args.quick || args.tiny {
        cmd.push_str(" --");
        if args.quick {
            cmd.push_str(" --quick");
        }
        if args.tiny {
            cmd.push_str(" --tiny");
        }
    }
    let _ = writeln!(
        s,
        "## Peers: the same workloads on collection-store and on other embedded stores\n"
    );
    let _ = writeln!(
        s,
        "Generated by `{cmd}` (benches/peers) on {date} at commit `{commit}`{}, in **{}** mode ({:.0} s); the text \
         between the `peers` markers is rewritten by each run. Compare figures within this run only: the machine \
         is shared and noisy.\n",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        ctx.sizes.mode,
        took_s
    );
    let _ = writeln!(s, "### Machine and versions\n\n| | |\n|---|---|");
    for (k, v) in machine::describe(&ctx.dir, ctx.disk.as_ref().map(|d| d.name.as_str())) {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "| toolchain | {}, release profile |",
        env!("PEERS_RUSTC")
    );
    let versions = env!("PEERS_VERSIONS")
        .split(';')
        .filter(|v| !v.is_empty())
        // RocksDB is in Cargo.lock whether or not this build has it.
        .filter(|v| cfg!(feature = "rocksdb") || !v.contains("rocksdb"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(s, "| crates (Cargo.lock) | {versions} |");
    let lmdb = heed::lmdb_version();
    let _ = writeln!(
        s,
        "| C libraries | SQLite {} (bundled), LMDB {}.{}.{} |",
        rusqlite::version(),
        lmdb.major,
        lmdb.minor,
        lmdb.patch
    );
    let _ = writeln!(
        s,
        "| clock | one `Instant::now()` + `elapsed()` costs {:.0} ns, included in every per-operation time |",
        clock_overhead_ns()
    );
    let _ = writeln!(
        s,
        "\n### Durability compared\n\nEach engine runs at its own recommended setting for the level compared:\n"
    );
    let _ = writeln!(
        s,
        "| engine | durable (workloads 1, 2, 4, 5, 6) | non-durable (workload 3) |\n|---|---|---|"
    );
    for k in &ctx.kinds {
        let nd = if *k == Kind::CollectionStore {
            format!(
                "{}; and {}",
                k.durability(Level::Os),
                k.durability(Level::Memory)
            )
        } else {
            k.durability(Level::Os).to_owned()
        };
        let _ = writeln!(s, "| {} | {} | {nd} |", k.name(), k.durability(Level::Sync));
    }
    for l in &ctx.logs {
        let _ = writeln!(s, "| {} | {} | – |", l.name(), l.durability());
    }
    let _ = writeln!(
        s,
        "\n`disk flushes/op` counts the data disk's cache flush requests (`/proc/diskstats`) per operation: the \
         honest test of durability on this disk, whose write cache is volatile. It covers the whole device, so \
         other jobs' I/O counts too.\n"
    );
    let behind: Vec<String> = sections
        .iter()
        .flat_map(|sec| {
            sec.verdicts()
                .into_iter()
                .filter(|v| v.starts_with("**behind**"))
                .map(move |v| format!("{}: {}", sec.title, v.trim_start_matches("**behind**: ")))
        })
        .chain(reopen.into_iter().flat_map(|(rows, _)| {
            report::reopen_verdicts(rows)
                .into_iter()
                .filter(|v| v.starts_with("**behind**"))
                .map(|v| format!("6. Reopen: {}", v.trim_start_matches("**behind**: ")))
        }))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "### Failures in this run\n");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "### Where collection-store is behind\n");
    if behind.is_empty() {
        let _ = writeln!(
            s,
            "Nowhere in this run: collection-store is ahead of every peer on every workload measured.\n"
        );
    } else {
        for b in &behind {
            let _ = writeln!(s, "- behind: {b}");
        }
        s.push('\n');
    }
    let link_of = |id: &str| links.iter().find(|(i, _)| i == id).map(|(_, l)| l.clone());
    for sec in sections {
        s.push_str(&sec.markdown());
        if let Some(l) = link_of(&sec.id) {
            let _ = writeln!(s, "\n![{}]({l})", sec.title);
        }
        s.push('\n');
    }
    if let Some((rows, about)) = reopen {
        s.push_str(&report::reopen_markdown(
            "6. Reopen after kill -9 with a large log",
            about,
            rows,
        ));
        if let Some(l) = link_of("6-reopen") {
            let _ = writeln!(s, "\n![6. Reopen after kill -9]({l})");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Run;
    use std::time::Duration;

    fn row(name: &str, role: Role, group: &str) -> report::Row {
        report::Row {
            name: name.into(),
            role,
            group: group.into(),
            level: String::new(),
            run: Run {
                ops: 1,
                elapsed: Duration::from_secs(1),
                latency: Default::default(),
                flushes: None,
            },
            items_per_op: 1,
            syncs: None,
        }
    }

    #[test]
    fn children_merge_into_one_table_per_workload_in_group_order() {
        let section = |rows| Section {
            id: "w".into(),
            title: "W".into(),
            about: String::new(),
            unit: "ops/s".into(),
            latency_of: String::new(),
            rows,
            notes: vec![],
        };
        let mut all = ChildOut::default();
        // The floor's child comes first, with both groups; then an engine; then collection-store.
        merge(
            &mut all,
            ChildOut {
                sections: vec![section(vec![
                    row("floor a", Role::Floor, "a"),
                    row("floor b", Role::Floor, "b"),
                ])],
                reopen: None,
            },
        );
        merge(
            &mut all,
            ChildOut {
                sections: vec![section(vec![
                    row("peer", Role::Peer, "a"),
                    row("peer", Role::Peer, "b"),
                ])],
                reopen: None,
            },
        );
        merge(
            &mut all,
            ChildOut {
                sections: vec![section(vec![
                    row("cs", Role::Subject, "a"),
                    row("cs", Role::Subject, "b"),
                ])],
                reopen: None,
            },
        );
        assert_eq!(all.sections.len(), 1);
        let order: Vec<(&str, &str)> = all.sections[0]
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.group.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("floor a", "a"),
                ("cs", "a"),
                ("peer", "a"),
                ("floor b", "b"),
                ("cs", "b"),
                ("peer", "b")
            ]
        );
    }
}
