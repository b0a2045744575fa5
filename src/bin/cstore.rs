//! `cstore`: inspect, verify, dump, import and query a collection-store data directory.
//!
//! Every command works on one data directory: `--dir DIR`, else `$CSTORE_DIR`, else `./cstore-data`. Output is
//! readable text, or one JSON value per command with `--json` (errors too, on stderr). Exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (I/O, ...) |
//! | 2 | bad command line |
//! | 3 | bad input: malformed JSON, a query or update that does not parse, a bad definition, a document too large |
//! | 4 | not found: unknown collection or index, no document with that id |
//! | 5 | refused by a constraint: unique violation, collection exists, write conflict, import target exists |
//! | 6 | the directory is locked by another process |
//! | 7 | damage: `verify` found faults, or the store does not open because it is corrupt |

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use collection_store::documents::{IdGenerator, IndexField, IndexSpec};
use collection_store::wal::{Durability, RecordKind};
use collection_store::{Database, Definition, Documents, Error, Options, Patch, Query, json};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Inspect, verify, dump, import and query a collection-store data directory.
#[derive(Parser)]
#[command(name = "cstore", version, about, long_about = None)]
struct Cli {
    /// The data directory (default: $CSTORE_DIR, else ./cstore-data).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Print machine-readable JSON (errors too, on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// On error, print the error's whole chain of causes.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data directory (or check that it opens).
    Init {
        /// Log segment size for a new directory, in MiB (an existing log keeps its own).
        #[arg(long)]
        segment_mib: Option<u64>,
    },
    /// List, create or drop document collections.
    Collections {
        #[command(subcommand)]
        action: Option<CollectionsAction>,
    },
    /// Insert one document (a JSON argument or --file), or JSON lines from stdin; creates the collection if needed.
    Insert {
        collection: String,
        /// The document, as JSON.
        document: Option<String>,
        /// Read the document (or JSON lines) from this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the document with this id (a JSON value; a bare word is taken as a string).
    Get { collection: String, id: String },
    /// Find documents matching a query (default `{}`).
    Find(FindArgs),
    /// Change the documents matching a filter: update operators by default.
    Update {
        collection: String,
        filter: String,
        change: String,
        /// Deep-merge CHANGE into each document instead.
        #[arg(long, conflicts_with_all = ["assign", "replace"])]
        merge: bool,
        /// Assign CHANGE's top-level fields instead.
        #[arg(long, conflicts_with = "replace")]
        assign: bool,
        /// Replace each document with CHANGE (its id is kept).
        #[arg(long)]
        replace: bool,
    },
    /// Delete the documents matching a filter.
    Delete { collection: String, filter: String },
    /// Create, drop or list indexes.
    Index {
        #[command(subcommand)]
        action: IndexAction,
    },
    /// Counts, sizes, the log's state, the last checkpoint, and how long this open's recovery took.
    Stats,
    /// Check every log record and snapshot, and that indexes match documents; exits 7 on any fault.
    Verify,
    /// The log.
    Wal {
        #[command(subcommand)]
        action: WalAction,
    },
    /// Write a checkpoint now.
    Checkpoint,
    /// Copy the database, consistent as of one log position, into the new directory DEST.
    Backup { dest: PathBuf },
    /// Import a data directory written by the TypeScript collection-store.
    Import {
        source: PathBuf,
        /// Drop collections the import would create if they exist.
        #[arg(long)]
        replace: bool,
    },
    /// Write a collection as JSON lines (to stdout, or --out).
    Export {
        collection: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A quick self-benchmark: commits/s and reads/s next to this disk's fdatasync floor.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

#[derive(Subcommand)]
enum CollectionsAction {
    /// List the document collections with their document counts.
    List,
    /// Create a document collection.
    Create {
        name: String,
        /// The id field.
        #[arg(long, default_value = "id")]
        id_field: String,
        /// How missing ids are made: auto-increment, timestamp or uuid.
        #[arg(long, default_value = "auto-increment")]
        ids: String,
        /// Expire documents: FIELD:MILLISECONDS (the field holds epoch ms or an RFC 3339 time).
        #[arg(long)]
        ttl: Option<String>,
        /// Keep every version of every document.
        #[arg(long)]
        audit: bool,
    },
    /// Drop a document collection and its documents.
    Drop { name: String },
}

#[derive(Args)]
struct FindArgs {
    collection: String,
    /// The filter (a Mongo-style query), as JSON.
    filter: Option<String>,
    /// Sort, e.g. '{"age": -1}'.
    #[arg(long)]
    sort: Option<String>,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    skip: Option<usize>,
    /// Projection, e.g. '{"name": 1}'.
    #[arg(long)]
    project: Option<String>,
    /// Print the plan instead of the documents.
    #[arg(long)]
    explain: bool,
}

#[derive(Subcommand)]
enum IndexAction {
    /// Create an index: FIELD is a dotted path, FIELD:desc for descending; several make a composite index.
    Create {
        collection: String,
        name: String,
        #[arg(required = true)]
        fields: Vec<String>,
        #[arg(long)]
        unique: bool,
        #[arg(long)]
        sparse: bool,
        #[arg(long)]
        required: bool,
        #[arg(long)]
        ignore_case: bool,
    },
    /// Drop an index.
    Drop { collection: String, name: String },
    /// List a collection's indexes.
    List { collection: String },
}

#[derive(Subcommand)]
enum WalAction {
    /// Print the log's records: LSN, kind, group, size, and what a DATA or COMMIT record says.
    Dump {
        /// First LSN (default: the log's start).
        #[arg(long)]
        from: Option<u64>,
        /// Most records to print.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
    kind: &'static str,
    chain: Vec<String>,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let (code, kind) = match &e {
            Error::Json(_)
            | Error::InvalidOptions(_)
            | Error::DocumentTooLarge { .. }
            | Error::MissingField { .. }
            | Error::WrongType { .. } => (3, "bad_input"),
            Error::UnknownCollection { .. }
            | Error::UnknownIndex { .. }
            | Error::NotFound { .. } => (4, "not_found"),
            Error::UniqueViolation { .. }
            | Error::CollectionExists { .. }
            | Error::Conflict { .. }
            | Error::IndexesChanged { .. } => (5, "constraint"),
            Error::Import { .. } => (3, "bad_input"),
            Error::Locked { .. } => (6, "locked"),
            Error::Corruption { .. } | Error::FormatVersion { .. } => (7, "damage"),
            _ => (1, "error"),
        };
        let mut chain = Vec::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        Self {
            code,
            message: e.to_string(),
            kind,
            chain,
        }
    }
}

impl Failure {
    fn new(code: u8, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            kind,
            chain: Vec::new(),
        }
    }
}

type Outcome = Result<(), Failure>;

/// Where results go: text or JSON, on stdout.
struct Out {
    json: bool,
}

impl Out {
    /// Prints `value` as JSON, or `text()` as text.
    fn print(&self, value: &Value, text: impl FnOnce() -> String) {
        let mut stdout = std::io::stdout().lock();
        let line = if self.json { value.to_string() } else { text() };
        // A closed pipe (`cstore find ... | head`) is not an error worth a panic.
        let _ = writeln!(stdout, "{line}");
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, Failure> {
    json::parse(text).map_err(|e| Failure::new(3, "bad_input", format!("{what}: {e}")))
}

/// An id from the command line: JSON if it parses as a number or string, else the word as a string.
fn parse_id(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

fn data_dir(cli: &Cli) -> PathBuf {
    cli.dir
        .clone()
        .or_else(|| std::env::var_os("CSTORE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cstore-data"))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Opens the database, with a progress bar for recovery (shown on a terminal only); returns how long it took.
fn open(dir: &Path, segment_mib: Option<u64>) -> Result<(Database, Duration), Failure> {
    let progress = Arc::new(bar(0, "recovering"));
    let shown = Arc::clone(&progress);
    let mut options = Options::default();
    if let Some(mib) = segment_mib {
        options.segment_size_bytes = mib << 20;
    }
    let options = Options {
        progress: Some(Arc::new(move |p| {
            shown.set_message(format!("recovery: {:?}", p.stage));
            shown.set_length(p.total);
            shown.set_position(p.done);
        })),
        ..options
    };
    let started = Instant::now();
    let db = Database::open(dir, options)?;
    progress.finish_and_clear();
    Ok((db, started.elapsed()))
}

fn documents(db: &Database, name: &str) -> Result<Documents, Failure> {
    Ok(db.documents(name)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out { json: cli.json };
    match run(&cli, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if cli.json {
                eprintln!(
                    "{}",
                    json!({"error": {"kind": f.kind, "code": f.code, "message": f.message, "causes": f.chain}})
                );
            } else {
                eprintln!("cstore: {}", f.message);
                if cli.verbose {
                    for cause in &f.chain {
                        eprintln!("  caused by: {cause}");
                    }
                }
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: &Cli, out: &Out) -> Outcome {
    let dir = data_dir(cli);
    match &cli.command {
        Command::Verify => return verify(&dir, out),
        Command::Bench { seconds } => return bench(&dir, *seconds, out),
        _ => {}
    }
    let segment_mib = match &cli.command {
        Command::Init { segment_mib } => *segment_mib,
        _ => None,
    };
    let (db, opened_in) = open(&dir, segment_mib)?;
    match &cli.command {
        Command::Init { .. } => out.print(
            &json!({"dir": dir, "created": db.recovery_report().created}),
            || format!("{} is ready", dir.display()),
        ),
        Command::Collections { action } => collections(&db, action.as_ref(), out)?,
        Command::Insert {
            collection,
            document,
            file,
        } => insert(&db, collection, document.as_deref(), file.as_deref(), out)?,
        Command::Get { collection, id } => {
            let docs = documents(&db, collection)?;
            let snap = db.read();
            let id = parse_id(id);
            let doc = docs
                .get(&snap, &id)?
                .ok_or_else(|| {
                    Failure::new(
                        4,
                        "not_found",
                        format!("{collection} has no document with id {id}"),
                    )
                })?
                .to_value();
            out.print(&doc, || {
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            });
        }
        Command::Find(args) => find(&db, args, out)?,
        Command::Update {
            collection,
            filter,
            change,
            merge,
            assign,
            replace,
        } => {
            let docs = documents(&db, collection)?;
            let filter = parse_json("the filter", filter)?;
            let change = parse_json("the change", change)?;
            let patch = if *merge {
                Patch::Merge(change)
            } else if *assign {
                Patch::Assign(change)
            } else if *replace {
                Patch::Replace(change)
            } else {
                Patch::Operators(change)
            };
            let mut tx = db.begin();
            let n = docs.update(&mut tx, &filter, &patch)?;
            tx.commit()?;
            out.print(&json!({"updated": n}), || format!("updated {n}"));
        }
        Command::Delete { collection, filter } => {
            let docs = documents(&db, collection)?;
            let filter = parse_json("the filter", filter)?;
            let mut tx = db.begin();
            let n = docs.delete(&mut tx, &filter)?;
            tx.commit()?;
            out.print(&json!({"deleted": n}), || format!("deleted {n}"));
        }
        Command::Index { action } => index(&db, action, out)?,
        Command::Stats => stats(&db, &dir, opened_in, out)?,
        Command::Wal { action } => match action {
            WalAction::Dump { from, limit } => wal_dump(&db, *from, *limit, out)?,
        },
        Command::Checkpoint => {
            let started = Instant::now();
            let info = db.checkpoint()?;
            let elapsed = started.elapsed();
            let value = json!({"seq": info.seq, "cut_lsn": info.cut_lsn, "wal_start_lsn": info.wal_start_lsn,
                               "bytes_written": info.bytes_written, "duration_ms": elapsed.as_secs_f64() * 1e3});
            out.print(&value, || {
                format!(
                    "checkpoint at LSN {} (commit {}): {} bytes written in {elapsed:?}; the log now starts at {}",
                    info.cut_lsn, info.seq, info.bytes_written, info.wal_start_lsn
                )
            });
        }
        Command::Backup { dest } => {
            let spinner = ProgressBar::new_spinner();
            spinner.set_message(format!("backing up to {}", dest.display()));
            spinner.enable_steady_tick(Duration::from_millis(100));
            let info = db.backup(dest)?;
            spinner.finish_and_clear();
            let value = serde_json::to_value(&info).unwrap_or_default();
            out.print(&value, || {
                format!(
                    "backed up to {} as of LSN {} (commit {}): {} bytes, {} checkpoint file(s), {:?}",
                    dest.display(),
                    info.cut_lsn,
                    info.seq,
                    info.bytes,
                    info.checkpoint_files,
                    info.duration
                )
            });
        }
        Command::Import { source, replace } => import(&db, source, *replace, out)?,
        Command::Export {
            collection,
            out: file,
        } => export(&db, collection, file.as_deref(), out)?,
        Command::Verify | Command::Bench { .. } => unreachable!("handled before opening"),
    }
    Ok(())
}

fn collections(db: &Database, action: Option<&CollectionsAction>, out: &Out) -> Outcome {
    match action.unwrap_or(&CollectionsAction::List) {
        CollectionsAction::List => {
            let snap = db.read();
            let mut rows = Vec::new();
            for name in db.document_collections()? {
                let docs = documents(db, &name)?;
                rows.push(json!({"name": name, "documents": snap.count(&docs.collection())}));
            }
            out.print(&Value::Array(rows.clone()), || {
                rows.iter()
                    .map(|r| format!("{}\t{}", r["name"].as_str().unwrap_or(""), r["documents"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        CollectionsAction::Create {
            name,
            id_field,
            ids,
            ttl,
            audit,
        } => {
            let ids = match ids.as_str() {
                "auto-increment" | "auto" => IdGenerator::AutoIncrement,
                "timestamp" => IdGenerator::Timestamp,
                "uuid" => IdGenerator::Uuid,
                other => {
                    return Err(Failure::new(
                        3,
                        "bad_input",
                        format!("--ids {other:?}: use auto-increment, timestamp or uuid"),
                    ));
                }
            };
            let mut definition = Definition::default().id_field(id_field).ids(ids);
            if let Some(ttl) = ttl {
                let (field, ms) = ttl
                    .rsplit_once(':')
                    .and_then(|(f, ms)| Some((f, ms.parse::<u64>().ok()?)))
                    .ok_or_else(|| {
                        Failure::new(
                            3,
                            "bad_input",
                            format!("--ttl {ttl:?}: use FIELD:MILLISECONDS"),
                        )
                    })?;
                definition = definition.ttl(field, Duration::from_millis(ms));
            }
            if *audit {
                definition = definition.audit();
            }
            db.create_documents(name, definition)?;
            out.print(&json!({"created": name}), || format!("created {name}"));
        }
        CollectionsAction::Drop { name } => {
            if !db.drop_documents(name)? {
                return Err(Failure::new(
                    4,
                    "not_found",
                    format!("no collection {name:?}"),
                ));
            }
            out.print(&json!({"dropped": name}), || format!("dropped {name}"));
        }
    }
    Ok(())
}

fn insert(
    db: &Database,
    collection: &str,
    document: Option<&str>,
    file: Option<&Path>,
    out: &Out,
) -> Outcome {
    let docs = match db.documents(collection) {
        Ok(d) => d,
        Err(Error::UnknownCollection { .. }) => {
            db.create_documents(collection, Definition::default())?
        }
        Err(e) => return Err(e.into()),
    };
    let text =
        match (document, file) {
            (Some(_), Some(_)) => {
                return Err(Failure::new(
                    3,
                    "bad_input",
                    "give the document as an argument or --file, not both",
                ));
            }
            (Some(doc), None) => Some(doc.to_owned()),
            (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                Failure::new(1, "error", format!("reading {}: {e}", path.display()))
            })?),
            (None, None) => None,
        };
    // One JSON document, or JSON lines (a file of them, or stdin): all in one transaction.
    let values: Vec<Value> = match text {
        Some(text) => match json::parse(&text) {
            Ok(v) => vec![v],
            Err(whole) => lines(text.lines().map(str::to_owned), "the document").map_err(|e| {
                if text.lines().count() <= 1 {
                    Failure::new(3, "bad_input", format!("the document: {whole}"))
                } else {
                    e
                }
            })?,
        },
        None => lines(
            std::io::stdin()
                .lock()
                .lines()
                .map_while(std::io::Result::ok),
            "stdin",
        )?,
    };
    let progress = bar(values.len() as u64, "inserting");
    let mut tx = db.begin();
    let mut ids = Vec::with_capacity(values.len());
    for value in values {
        ids.push(docs.insert(&mut tx, value)?);
        progress.inc(1);
    }
    tx.commit()?;
    progress.finish_and_clear();
    let value = if ids.len() == 1 {
        json!({"inserted": ids[0]})
    } else {
        json!({"inserted": ids.len()})
    };
    out.print(&value, || {
        if ids.len() == 1 {
            format!("inserted {}", ids[0])
        } else {
            format!("inserted {} documents", ids.len())
        }
    });
    Ok(())
}

/// JSON lines, each a document; blank lines skipped. An error names the line.
fn lines(lines: impl Iterator<Item = String>, what: &str) -> Result<Vec<Value>, Failure> {
    let mut values = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        values.push(parse_json(&format!("{what}, line {}", i + 1), &line)?);
    }
    Ok(values)
}

fn find(db: &Database, args: &FindArgs, out: &Out) -> Outcome {
    let docs = documents(db, &args.collection)?;
    let mut query = Query::new(match &args.filter {
        Some(f) => parse_json("the filter", f)?,
        None => json!({}),
    });
    if let Some(sort) = &args.sort {
        query = query.sort(parse_json("--sort", sort)?);
    }
    if let Some(skip) = args.skip {
        query = query.skip(skip);
    }
    if let Some(limit) = args.limit {
        query = query.limit(limit);
    }
    if let Some(project) = &args.project {
        query = query.project(parse_json("--project", project)?);
    }
    let snap = db.read();
    if args.explain {
        let plan = docs.explain(&snap, &query)?;
        let value = serde_json::to_value(&plan).unwrap_or_default();
        out.print(&value, || {
            format!(
                "{}{}: {} range(s), {} examined, {} matched",
                plan.strategy,
                plan.index
                    .as_deref()
                    .map(|i| format!(" on {i}"))
                    .unwrap_or_default(),
                plan.ranges,
                plan.examined,
                plan.matched
            )
        });
        return Ok(());
    }
    let found = docs.find_json(&snap, &query)?;
    if out.json {
        out.print(&Value::Array(found), String::new);
    } else {
        let mut stdout = std::io::stdout().lock();
        for doc in &found {
            let _ = writeln!(stdout, "{doc}");
        }
    }
    Ok(())
}

fn index(db: &Database, action: &IndexAction, out: &Out) -> Outcome {
    match action {
        IndexAction::Create {
            collection,
            name,
            fields,
            unique,
            sparse,
            required,
            ignore_case,
        } => {
            let docs = documents(db, collection)?;
            let fields = fields
                .iter()
                .map(|f| match f.rsplit_once(':') {
                    Some((path, "desc")) => IndexField {
                        path: path.into(),
                        descending: true,
                    },
                    Some((path, "asc")) => IndexField {
                        path: path.into(),
                        descending: false,
                    },
                    _ => IndexField {
                        path: f.clone(),
                        descending: false,
                    },
                })
                .collect();
            let spec = IndexSpec {
                name: name.clone(),
                fields,
                unique: *unique,
                sparse: *sparse,
                required: *required,
                ignore_case: *ignore_case,
            };
            docs.create_index(db, spec)?;
            out.print(&json!({"created": name}), || {
                format!("created index {name} on {collection}")
            });
        }
        IndexAction::Drop { collection, name } => {
            let docs = documents(db, collection)?;
            if !docs.drop_index(db, name)? {
                return Err(Failure::new(
                    4,
                    "not_found",
                    format!("{collection} has no index {name:?}"),
                ));
            }
            out.print(&json!({"dropped": name}), || {
                format!("dropped index {name}")
            });
        }
        IndexAction::List { collection } => {
            let docs = documents(db, collection)?;
            let definition = docs.definition();
            let value = serde_json::to_value(&definition.indexes).unwrap_or_default();
            out.print(&value, || {
                definition
                    .indexes
                    .iter()
                    .map(|i| {
                        let fields: Vec<String> = i
                            .fields
                            .iter()
                            .map(|f| {
                                format!("{}{}", f.path, if f.descending { ":desc" } else { "" })
                            })
                            .collect();
                        let flags: Vec<&str> = [
                            (i.unique, "unique"),
                            (i.sparse, "sparse"),
                            (i.required, "required"),
                            (i.ignore_case, "ignore-case"),
                        ]
                        .into_iter()
                        .filter_map(|(on, name)| on.then_some(name))
                        .collect();
                        format!("{}\t{}\t{}", i.name, fields.join(","), flags.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

/// Bytes of the files under `dir` whose relative path passes `keep`.
fn bytes_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> (u64, usize) {
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (b, n) = bytes_under(&path, keep);
            total = (total.0 + b, total.1 + n);
        } else if keep(&path) {
            total = (
                total.0 + entry.metadata().map_or(0, |m| m.len()),
                total.1 + 1,
            );
        }
    }
    total
}

fn stats(db: &Database, dir: &Path, opened_in: Duration, out: &Out) -> Outcome {
    let snap = db.read();
    let mut collections = Vec::new();
    for name in db.document_collections()? {
        let docs = documents(db, &name)?;
        let definition = docs.definition();
        collections.push(json!({
            "name": name,
            "documents": snap.count(&docs.collection()),
            "indexes": definition.indexes.len(),
            "index_names": definition.indexes.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
            "ttl": definition.ttl.is_some(),
            "audit": definition.audit,
        }));
    }
    let is_segment = |p: &Path| p.extension().is_some_and(|e| e == "seg");
    let (wal_bytes, segments) = bytes_under(&dir.join("wal"), &is_segment);
    let (snapshot_bytes, snapshots) = bytes_under(&dir.join("snapshots"), &|p: &Path| {
        p.extension().is_some_and(|e| e == "snap")
    });
    let wal = db.wal();
    let report = db.recovery_report();
    let value = json!({
        "dir": dir,
        "collections": collections,
        "wal": {"bytes_on_disk": wal_bytes, "segments": segments, "segment_size_bytes": wal.segment_size_bytes(),
                "start_lsn": wal.start_lsn(), "end_lsn": wal.end_lsn()},
        "snapshots": {"bytes_on_disk": snapshot_bytes, "files": snapshots},
        "last_checkpoint": db.last_checkpoint().map(|(seq, lsn)| json!({"seq": seq, "cut_lsn": lsn})),
        "seq": snap.seq(),
        "recovery": {"open_ms": opened_in.as_secs_f64() * 1e3, "log_scan_ms": report.duration.as_secs_f64() * 1e3,
                     "records": report.records, "discarded_records": report.discarded_records},
    });
    out.print(&value, || {
        let mut text = String::new();
        for c in &collections {
            text.push_str(&format!(
                "collection {}: {} documents, {} indexes {}\n",
                c["name"].as_str().unwrap_or(""),
                c["documents"],
                c["indexes"],
                c["index_names"]
            ));
        }
        text.push_str(&format!(
            "wal: {wal_bytes} bytes on disk in {segments} segment(s), LSN {}..{}\n",
            wal.start_lsn(),
            wal.end_lsn()
        ));
        text.push_str(&format!(
            "snapshots: {snapshot_bytes} bytes in {snapshots} file(s)\n"
        ));
        text.push_str(&match db.last_checkpoint() {
            Some((seq, lsn)) => format!("last checkpoint: LSN {lsn} (commit {seq})\n"),
            None => "last checkpoint: none\n".into(),
        });
        text.push_str(&format!(
            "recovery at this open: {:.1} ms ({} records replayed from the log)",
            opened_in.as_secs_f64() * 1e3,
            report.records
        ));
        text
    });
    Ok(())
}

fn verify(dir: &Path, out: &Out) -> Outcome {
    let progress = bar(0, "verifying");
    let report = collection_store::verify::verify(dir, &mut |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    })?;
    progress.finish_and_clear();
    let value = serde_json::to_value(&report).unwrap_or_default();
    out.print(&value, || {
        let mut text = format!(
            "log: {} segment(s), {} records in {} groups; snapshots: {} file(s), {} bytes; indexes checked: {}\n",
            report.segments,
            report.records,
            report.groups,
            report.snapshots,
            report.snapshot_bytes,
            report
                .indexes_checked
                .iter()
                .map(|(n, d)| format!("{n} ({d} docs)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for skipped in &report.skipped {
            text.push_str(&format!("skipped: {skipped}\n"));
        }
        for fault in &report.faults {
            text.push_str(&format!("FAULT {} at offset {}: {}\n", fault.file, fault.offset, fault.reason));
        }
        text.push_str(if report.faults.is_empty() { "verified: no fault" } else { "verify FAILED" });
        text
    });
    if report.faults.is_empty() {
        Ok(())
    } else {
        let first = &report.faults[0];
        Err(Failure::new(
            7,
            "damage",
            format!(
                "{} fault(s); first: {} at offset {}: {}",
                report.faults.len(),
                first.file,
                first.offset,
                first.reason
            ),
        ))
    }
}

fn wal_dump(db: &Database, from: Option<u64>, limit: Option<usize>, out: &Out) -> Outcome {
    let wal = db.wal();
    let mut group = 0u64;
    let mut rows = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for record in wal
        .iter_from(from.unwrap_or(wal.start_lsn()))?
        .take(limit.unwrap_or(usize::MAX))
    {
        let record = record?;
        let payload = record.payload();
        let mut row = json!({"lsn": record.lsn(), "kind": format!("{:?}", record.kind()), "group": group, "bytes": payload.len()});
        match record.kind() {
            RecordKind::Data => {
                if let Some(op) = collection_store::db::decode_data(payload) {
                    row["op"] = json!(op.op);
                    row["collection"] = json!(op.collection);
                    row["id"] = json!(op.id);
                    row["body_bytes"] = json!(op.body_bytes);
                }
            }
            RecordKind::Commit if payload.len() >= 8 => {
                row["seq"] = json!(u64::from_le_bytes(
                    payload[..8].try_into().expect("8 bytes")
                ));
                if payload.len() >= 16 {
                    row["txid"] = json!(u64::from_le_bytes(
                        payload[8..16].try_into().expect("8 bytes")
                    ));
                }
            }
            RecordKind::Prepare | RecordKind::Abort if payload.len() >= 8 => {
                row["txid"] = json!(u64::from_le_bytes(
                    payload[..8].try_into().expect("8 bytes")
                ));
            }
            _ => {}
        }
        if out.json {
            rows.push(row);
        } else {
            let mut line = format!(
                "{:>12}  {:<8} group {:<6} {:>6} B",
                record.lsn(),
                format!("{:?}", record.kind()),
                group,
                payload.len()
            );
            for key in ["op", "collection", "id", "seq", "txid"] {
                if let Some(v) = row.get(key) {
                    line.push_str(&format!("  {key}={v}"));
                }
            }
            let _ = writeln!(stdout, "{line}");
        }
        if !record.group_continues() {
            group += 1;
        }
    }
    drop(stdout);
    if out.json {
        out.print(&Value::Array(rows), String::new);
    }
    Ok(())
}

fn import(db: &Database, source: &Path, replace: bool, out: &Out) -> Outcome {
    let progress = Arc::new(bar(0, "importing"));
    let shown = Arc::clone(&progress);
    let options = collection_store::import_ts::ImportOptions {
        replace,
        progress: Some(Arc::new(move |done, total| {
            shown.set_length(total);
            shown.set_position(done);
        })),
    };
    let started = Instant::now();
    let report = collection_store::import_ts::import(db, source, &options)?;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let value = serde_json::to_value(&report).unwrap_or_default();
    out.print(&value, || {
        let mut text = String::new();
        for c in &report.collections {
            let c = serde_json::to_value(c).unwrap_or_default();
            text.push_str(&format!(
                "imported {} documents into {}{}\n",
                c["documents"],
                c["target_name"].as_str().unwrap_or(""),
                match c["source_name"].as_str() {
                    Some(s) if Some(s) != c["target_name"].as_str() => format!(" (from {s})"),
                    _ => String::new(),
                }
            ));
            for skipped in c["skipped_indexes"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  index {} not imported: {}\n",
                    skipped["name"],
                    skipped["reason"].as_str().unwrap_or("")
                ));
            }
            for warning in c["warnings"].as_array().into_iter().flatten() {
                text.push_str(&format!("  warning: {}\n", warning.as_str().unwrap_or("")));
            }
        }
        for warning in &report.warnings {
            text.push_str(&format!("warning: {warning}\n"));
        }
        if !report.replaced.is_empty() {
            text.push_str(&format!("replaced: {}\n", report.replaced.join(", ")));
        }
        text.push_str(&format!(
            "{} documents in {:.2} s ({:.0} documents/s)",
            report.documents,
            elapsed.as_secs_f64(),
            report.documents as f64 / elapsed.as_secs_f64().max(1e-9)
        ));
        text
    });
    Ok(())
}

fn export(db: &Database, collection: &str, file: Option<&Path>, out: &Out) -> Outcome {
    let docs = documents(db, collection)?;
    let snap = db.read();
    let total = snap.count(&docs.collection()) as u64;
    let progress = bar(total, "exporting");
    let mut sink: Box<dyn Write> = match file {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| {
                Failure::new(1, "error", format!("creating {}: {e}", path.display()))
            })?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut written = 0u64;
    for doc in docs.find(&snap, &Query::new(json!({})))? {
        writeln!(sink, "{}", doc.to_value())
            .map_err(|e| Failure::new(1, "error", format!("writing: {e}")))?;
        written += 1;
        progress.inc(1);
    }
    sink.flush()
        .map_err(|e| Failure::new(1, "error", format!("writing: {e}")))?;
    progress.finish_and_clear();
    if let Some(path) = file {
        out.print(&json!({"exported": written, "file": path}), || {
            format!("exported {written} documents to {}", path.display())
        });
    }
    Ok(())
}

/// Operations per second of `op`, run for about `seconds`.
fn rate(seconds: f64, mut op: impl FnMut()) -> (f64, u64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        op();
        n += 1;
    }
    (n as f64 / started.elapsed().as_secs_f64(), n)
}

fn bench(dir: &Path, seconds: f64, out: &Out) -> Outcome {
    // A scratch database beside the data directory (same disk), removed afterwards.
    let parent = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile_dir(&parent)?;
    let result = (|| -> Outcome {
        let floor_path = scratch.join("floor.dat");
        let floor = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&floor_path)
            .map_err(|e| Failure::new(1, "error", format!("{}: {e}", floor_path.display())))?;
        floor
            .set_len(64 << 20)
            .map_err(|e| Failure::new(1, "error", e.to_string()))?;
        let mut off = 0u64;
        let (floor_rate, _) = rate(seconds, || {
            use std::os::unix::fs::FileExt;
            let _ = floor.write_all_at(&[7u8; 256], off);
            let _ = floor.sync_data();
            off = (off + 4096) % (64 << 20);
        });
        let db = Database::open(scratch.join("db"), Options::default())?;
        let docs = db.create_documents(
            "bench",
            Definition::default().index(IndexSpec::on("k").unique()),
        )?;
        let mut i = 0u64;
        let (sync_rate, _) = rate(seconds, || {
            i += 1;
            let mut tx = db.begin_with(Durability::Sync);
            let _ = docs.insert(&mut tx, json!({"k": i, "v": "x".repeat(200)}));
            let _ = tx.commit();
        });
        let (none_rate, _) = rate(seconds, || {
            i += 1;
            let mut tx = db.begin_with(Durability::None);
            let _ = docs.insert(&mut tx, json!({"k": i, "v": "x".repeat(200)}));
            let _ = tx.commit();
        });
        let snap = db.read();
        let mut j = 0u64;
        let (read_rate, _) = rate(seconds, || {
            j = j
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                % i.max(1);
            std::hint::black_box(docs.get(&snap, &json!(j)).ok());
        });
        let value = json!({
            "fdatasync_floor_per_s": floor_rate,
            "sync_commits_per_s": sync_rate,
            "sync_commit_vs_floor": floor_rate / sync_rate,
            "non_durable_commits_per_s": none_rate,
            "reads_by_id_per_s": read_rate,
        });
        out.print(&value, || {
            format!(
                "fdatasync floor: {floor_rate:.0}/s\nsync commits (one ~256 B JSON document): {sync_rate:.0}/s ({:.2}x the floor's time)\nnon-durable commits: {none_rate:.0}/s\nreads by id: {read_rate:.0}/s",
                floor_rate / sync_rate
            )
        });
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A fresh directory under `parent` for the benchmark.
fn tempfile_dir(parent: &Path) -> Result<PathBuf, Failure> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = parent.join(format!(".cstore-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&path)
        .map_err(|e| Failure::new(1, "error", format!("{}: {e}", path.display())))?;
    Ok(path)
}
