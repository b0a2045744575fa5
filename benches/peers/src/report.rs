//! The results as Markdown: one table per workload with absolute figures and ratios to the floor and to
//! collection-store, a verdict where collection-store is not ahead, and the splice of that section into
//! BENCHMARKS.md between markers.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::measure::Run;

pub const BEGIN: &str = "<!-- peers:begin -->";
pub const END: &str = "<!-- peers:end -->";

/// What a row is, for the ratios and the verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// collection-store (or its log): what the others are compared with.
    Subject,
    Peer,
    /// The raw floor (pwrite + fdatasync, memcpy, ...).
    Floor,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub role: Role,
    /// Rows are compared within their group (a value size, a thread count, "log only").
    pub group: String,
    /// Short durability label ("Sync", "Os", ...); the full setting is in the durability table.
    pub level: String,
    pub run: Run,
    /// Records per operation (1, or 1,000 for batches).
    pub items_per_op: u64,
    /// `fdatasync` calls the engine reported during the run.
    pub syncs: Option<u64>,
}

impl Row {
    /// Disk cache flushes per operation during the run.
    pub fn flushes_per_op(&self) -> Option<f64> {
        self.run
            .flushes
            .map(|f| f as f64 / self.run.ops.max(1) as f64)
    }

    /// Records per second.
    pub fn throughput(&self) -> f64 {
        self.run.ops_per_s() * self.items_per_op as f64
    }
}

/// One workload's table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    /// File-name stem of its plot.
    pub id: String,
    pub title: String,
    pub about: String,
    /// Unit of the throughput column ("commits/s", "entries/s", "reads/s").
    pub unit: String,
    /// What the latency columns time ("per commit", "per batch of 1,000", ...).
    pub latency_of: String,
    pub rows: Vec<Row>,
    /// Lines printed under the table (e.g. load rates).
    pub notes: Vec<String>,
}

/// The reopen workload: one row per engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReopenRow {
    pub name: String,
    pub role: Role,
    pub group: String,
    /// Records written before the kill, and how fast (records/s).
    pub records: u64,
    pub fill_rate: f64,
    /// Bytes on disk at the kill.
    pub disk_bytes: u64,
    /// Open, plus the first read (or, for a log, reading every record back).
    pub reopen: Duration,
    pub check: String,
}

impl Section {
    fn groups(&self) -> Vec<&str> {
        let mut g: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !g.contains(&r.group.as_str()) {
                g.push(&r.group);
            }
        }
        g
    }

    /// The floor row a row is compared with: its group's, else the section's first.
    fn floor_of(&self, row: &Row) -> Option<&Row> {
        let floors = || self.rows.iter().filter(|r| r.role == Role::Floor);
        floors()
            .find(|r| r.group == row.group)
            .or_else(|| floors().next())
    }

    /// The collection-store row a row is compared with: the first subject of its group.
    fn subject_of(&self, row: &Row) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.role == Role::Subject && r.group == row.group)
    }

    /// Lines naming each peer faster than a collection-store row of its group.
    pub fn verdicts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in self.groups() {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.group == g).collect();
            for s in rows.iter().filter(|r| r.role == Role::Subject) {
                let faster: Vec<String> = rows
                    .iter()
                    .filter(|p| p.role == Role::Peer && p.throughput() > s.throughput())
                    .map(|p| {
                        let mut v = format!(
                            "{} is {}× faster",
                            p.name,
                            fmt_ratio(p.throughput() / s.throughput())
                        );
                        if p.throughput() < s.throughput() * 1.05 {
                            v.push_str(" (within 5%)");
                        }
                        if let (Some(pf), Some(sf)) = (p.flushes_per_op(), s.flushes_per_op())
                            && p.level == "durable"
                            && pf < 0.5
                            && sf >= 0.5
                        {
                            let _ = write!(
                                v,
                                " (with {pf:.2} disk cache flushes per operation against {sf:.2}: not durable against power loss on this disk)"
                            );
                        }
                        v
                    })
                    .collect();
                let label = if g.is_empty() {
                    s.name.clone()
                } else {
                    format!("{} ({g})", s.name)
                };
                if faster.is_empty() {
                    out.push(format!("ahead: {label} is ahead of every peer"));
                } else {
                    out.push(format!("**behind**: {label}: {}", faster.join(", ")));
                }
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### {}\n\n{}\n", self.title, self.about);
        let _ = writeln!(
            s,
            "| engine | group | durability | {} | p50 | p99 | p99.9 | syncs/op | disk flushes/op | p50 ÷ floor p50 | throughput ÷ floor | throughput ÷ collection-store |",
            self.unit
        );
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let floor = self.floor_of(r);
            let subject = self.subject_of(r);
            let name = match r.role {
                Role::Subject => format!("**{}**", r.name),
                Role::Floor => format!("_{}_", r.name),
                Role::Peer => r.name.clone(),
            };
            let per_op = |n: Option<u64>| {
                n.map_or("–".to_owned(), |n| {
                    format!("{:.2}", n as f64 / r.run.ops.max(1) as f64)
                })
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.group,
                r.level,
                fmt_rate(r.throughput()),
                fmt_ns(r.run.latency.p50),
                fmt_ns(r.run.latency.p99),
                fmt_ns(r.run.latency.p999),
                per_op(r.syncs),
                per_op(r.run.flushes),
                floor.map_or("–".into(), |f| fmt_ratio(
                    r.run.latency.p50 / f.run.latency.p50
                )),
                floor.map_or("–".into(), |f| fmt_ratio(r.throughput() / f.throughput())),
                subject.map_or("–".into(), |c| fmt_ratio(r.throughput() / c.throughput())),
            );
        }
        let _ = writeln!(
            s,
            "\nLatency is {}; throughput counts {} over the whole run.\n",
            self.latency_of, self.unit
        );
        for n in &self.notes {
            let _ = writeln!(s, "{n}\n");
        }
        for v in self.verdicts() {
            let _ = writeln!(s, "- {v}");
        }
        s
    }
}

/// Verdicts for the reopen workload (shorter is better).
pub fn reopen_verdicts(rows: &[ReopenRow]) -> Vec<String> {
    let mut out = Vec::new();
    let mut groups: Vec<&str> = Vec::new();
    for r in rows {
        if !groups.contains(&r.group.as_str()) {
            groups.push(&r.group);
        }
    }
    for g in groups {
        let in_g: Vec<&ReopenRow> = rows.iter().filter(|r| r.group == g).collect();
        for s in in_g.iter().filter(|r| r.role == Role::Subject) {
            let faster: Vec<String> = in_g
                .iter()
                .filter(|p| p.role == Role::Peer && p.reopen < s.reopen)
                .map(|p| {
                    format!(
                        "{} reopens {}× faster",
                        p.name,
                        fmt_ratio(s.reopen.as_secs_f64() / p.reopen.as_secs_f64().max(1e-9))
                    )
                })
                .collect();
            if faster.is_empty() {
                out.push(format!("ahead: {} reopens faster than every peer", s.name));
            } else {
                out.push(format!("**behind**: {}: {}", s.name, faster.join(", ")));
            }
        }
    }
    out
}

pub fn reopen_markdown(title: &str, about: &str, rows: &[ReopenRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### {title}\n\n{about}\n");
    s.push_str("| engine | group | records written | written at | on disk | reopen (open + first read) | ÷ floor | ÷ collection-store | check |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let floor = rows.iter().find(|r| r.role == Role::Floor);
    for r in rows {
        let subject = rows
            .iter()
            .find(|c| c.role == Role::Subject && c.group == r.group);
        let name = match r.role {
            Role::Subject => format!("**{}**", r.name),
            Role::Floor => format!("_{}_", r.name),
            Role::Peer => r.name.clone(),
        };
        let ratio = |base: Option<&ReopenRow>| {
            base.map_or("–".into(), |b| {
                fmt_ratio(r.reopen.as_secs_f64() / b.reopen.as_secs_f64().max(1e-9))
            })
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.group,
            if r.records == 0 {
                "–".into()
            } else {
                fmt_count(r.records)
            },
            if r.fill_rate == 0.0 {
                "–".into()
            } else {
                format!("{}/s", fmt_rate(r.fill_rate))
            },
            fmt_bytes(r.disk_bytes),
            fmt_ns(r.reopen.as_nanos() as f64),
            ratio(floor),
            ratio(subject),
            r.check
        );
    }
    s.push('\n');
    for v in reopen_verdicts(rows) {
        let _ = writeln!(s, "- {v}");
    }
    s
}

/// `existing` with the text between the markers replaced by `section` (markers kept), or, without markers, with
/// the markers and `section` appended at the end. Everything outside the markers is left as it was.
pub fn splice(existing: &str, section: &str) -> Result<String> {
    let body = section.trim_end_matches('\n');
    match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => Ok(format!(
            "{}{BEGIN}\n{body}\n{END}{}",
            &existing[..b],
            &existing[e + END.len()..]
        )),
        (None, None) => {
            let mut out = existing.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            Ok(format!("{out}{BEGIN}\n{body}\n{END}\n"))
        }
        _ => bail!(
            "BENCHMARKS.md has the markers {BEGIN} and {END} out of order or only one of them"
        ),
    }
}

pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() || ns <= 0.0 {
        "–".into()
    } else if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        "–".into()
    } else if r >= 1e9 {
        format!("{:.2} G", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

pub fn fmt_ratio(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 0.01 {
        format!("{x:.2}")
    } else {
        format!("{x:.1e}")
    }
}

pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Latency;

    fn row(name: &str, role: Role, group: &str, ops: u64, p50: f64) -> Row {
        Row {
            name: name.into(),
            role,
            group: group.into(),
            level: "Sync".into(),
            run: Run {
                ops,
                elapsed: Duration::from_secs(1),
                latency: Latency {
                    p50,
                    p99: p50 * 2.0,
                    p999: p50 * 3.0,
                    max: p50 * 4.0,
                    mean: p50,
                },
                flushes: Some(ops * 2),
            },
            items_per_op: 1,
            syncs: None,
        }
    }

    fn section(rows: Vec<Row>) -> Section {
        Section {
            id: "t".into(),
            title: "T".into(),
            about: "about".into(),
            unit: "commits/s".into(),
            latency_of: "per commit".into(),
            rows,
            notes: Vec::new(),
        }
    }

    #[test]
    fn ratios_to_the_floor_and_to_collection_store() {
        let s = section(vec![
            row("floor", Role::Floor, "a", 10_000, 100_000.0),
            row("collection-store", Role::Subject, "a", 8_000, 110_000.0),
            row("peer", Role::Peer, "a", 4_000, 220_000.0),
        ]);
        let md = s.markdown();
        // The peer: p50 2.2× the floor's, throughput 0.40 of the floor's and 0.50 of collection-store's.
        let peer_line = md.lines().find(|l| l.starts_with("| peer ")).unwrap();
        assert!(
            peer_line.ends_with("| 2.00 | 2.20 | 0.40 | 0.50 |"),
            "{peer_line}"
        );
        let cs_line = md
            .lines()
            .find(|l| l.starts_with("| **collection-store**"))
            .unwrap();
        assert!(cs_line.contains("| 8.0 k |"), "{cs_line}");
        assert!(cs_line.ends_with("| 1.10 | 0.80 | 1.00 |"), "{cs_line}");
        assert!(
            md.contains("- ahead: collection-store (a) is ahead of every peer"),
            "{md}"
        );
    }

    #[test]
    fn a_faster_peer_is_flagged_per_group() {
        let s = section(vec![
            row("collection-store", Role::Subject, "1 thread", 1_000, 1.0),
            row("fast", Role::Peer, "1 thread", 2_500, 1.0),
            row("slow", Role::Peer, "1 thread", 500, 1.0),
            row("level", Role::Peer, "1 thread", 1_040, 1.0),
            row("collection-store", Role::Subject, "2 threads", 3_000, 1.0),
            row("fast", Role::Peer, "2 threads", 2_000, 1.0),
        ]);
        let v = s.verdicts();
        assert_eq!(
            v,
            vec![
                "**behind**: collection-store (1 thread): fast is 2.50× faster, level is 1.04× faster (within 5%)".to_owned(),
                "ahead: collection-store (2 threads) is ahead of every peer".to_owned(),
            ]
        );
    }

    #[test]
    fn a_faster_peer_that_does_not_flush_is_called_out() {
        let mut sled = row("sled", Role::Peer, "", 2_000, 1.0);
        sled.level = "durable".into();
        sled.run.flushes = Some(0);
        let s = section(vec![
            row("collection-store", Role::Subject, "", 1_000, 1.0),
            sled,
        ]);
        let v = s.verdicts();
        assert_eq!(v.len(), 1);
        assert!(
            v[0].starts_with("**behind**: collection-store: sled is 2.00× faster (with 0.00 disk cache flushes per operation against 2.00"),
            "{v:?}"
        );
    }

    #[test]
    fn reopen_compares_times() {
        let r = |name: &str, role, ms| ReopenRow {
            name: name.into(),
            role,
            group: String::new(),
            records: 10,
            fill_rate: 1.0,
            disk_bytes: 1 << 20,
            reopen: Duration::from_millis(ms),
            check: "ok".into(),
        };
        let rows = vec![
            r("floor", Role::Floor, 10),
            r("cs", Role::Subject, 300),
            r("quick", Role::Peer, 100),
            r("slow", Role::Peer, 900),
        ];
        assert_eq!(
            reopen_verdicts(&rows),
            vec!["**behind**: cs: quick reopens 3.00× faster".to_owned()]
        );
        let md = reopen_markdown("R", "a", &rows);
        assert!(
            md.contains("| slow |  | 10 | 1/s | 1.0 MiB | 900.00 ms | 90.0 | 3.00 | ok |"),
            "{md}"
        );
    }

    #[test]
    fn splice_appends_markers_when_absent() {
        let out = splice("# Benchmarks\n\ntext", "new\n").unwrap();
        assert_eq!(
            out,
            format!("# Benchmarks\n\ntext\n\n{BEGIN}\nnew\n{END}\n")
        );
        assert_eq!(splice("", "x").unwrap(), format!("{BEGIN}\nx\n{END}\n"));
    }

    #[test]
    fn splice_replaces_between_markers_only() {
        let before = format!("head\n{BEGIN}\nold\nold too\n{END}\ntail\n");
        let out = splice(&before, "new").unwrap();
        assert_eq!(out, format!("head\n{BEGIN}\nnew\n{END}\ntail\n"));
        // Idempotent.
        assert_eq!(splice(&out, "new").unwrap(), out);
    }

    #[test]
    fn splice_refuses_broken_markers() {
        assert!(splice(&format!("a {END} b {BEGIN}"), "x").is_err());
        assert!(splice(&format!("a {BEGIN} b"), "x").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ns(950.0), "950 ns");
        assert_eq!(fmt_ns(1_500.0), "1.5 µs");
        assert_eq!(fmt_ns(2_345_000.0), "2.35 ms");
        assert_eq!(fmt_rate(12_345.0), "12.3 k");
        assert_eq!(fmt_ratio(0.5), "0.50");
        assert_eq!(fmt_ratio(123.4), "123");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
    }
}
