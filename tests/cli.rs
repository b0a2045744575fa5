//! `cstore` end to end through its binary: every command, its errors and exit codes, and `--json` output.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{Value, json};

/// A fresh data directory with 1 MiB log segments (quick to open in a debug build).
struct Store {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Store {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let store = Self { _tmp: tmp, dir };
        store.ok(&["init", "--segment-mib", "1"]);
        store
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("cstore").unwrap();
        cmd.arg("--dir").arg(&self.dir).args(args);
        cmd
    }

    /// Runs `args`, expects exit code `code`, returns (stdout, stderr).
    fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let output = self.cmd(args).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        );
        assert_eq!(
            output.status.code(),
            Some(code),
            "cstore {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.run(args, 0).0
    }

    /// Runs `args` with `--json` and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs `args` with `--json`, expects `code`, and returns the error object from stderr.
    fn json_error(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (_, stderr) = self.run(&all, code);
        let error: Value = serde_json::from_str(stderr.trim()).unwrap();
        assert_eq!(error["error"]["code"], json!(code), "{error}");
        error["error"].clone()
    }
}

fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

#[test]
fn documents_round_trip_through_every_data_command() {
    let s = Store::new();
    assert_eq!(
        s.json(&[
            "insert",
            "users",
            r#"{"name": "Ann", "age": 31, "city": "Oslo"}"#
        ]),
        json!({"inserted": 0})
    );
    assert_eq!(
        s.ok(&[
            "insert",
            "users",
            r#"{"name": "Bob", "age": 25, "city": "Rome"}"#
        ])
        .trim(),
        "inserted 1"
    );
    let file = s.dir.parent().unwrap().join("more.jsonl");
    std::fs::write(
        &file,
        "{\"name\": \"Cid\", \"age\": 40}\n\n{\"name\": \"Dan\", \"age\": 19}\n",
    )
    .unwrap();
    assert_eq!(
        s.json(&["insert", "users", "--file", file.to_str().unwrap()]),
        json!({"inserted": 2})
    );
    let stdin = s
        .cmd(&["--json", "insert", "users"])
        .write_stdin("{\"name\": \"Eve\", \"age\": 50}\n{\"name\": \"Fay\", \"age\": 22}\n")
        .output()
        .unwrap();
    assert!(stdin.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&stdin.stdout).unwrap(),
        json!({"inserted": 2})
    );

    assert_eq!(s.json(&["get", "users", "1"])["name"], "Bob");
    let found = s.json(&[
        "find",
        "users",
        r#"{"age": {"$gte": 20}}"#,
        "--sort",
        r#"{"age": -1}"#,
        "--skip",
        "1",
        "--limit",
        "2",
        "--project",
        r#"{"name": 1}"#,
    ]);
    assert_eq!(
        found,
        json!([{"id": 2, "name": "Cid"}, {"id": 0, "name": "Ann"}])
    );
    // Text output: one JSON document per line.
    let text = s.ok(&["find", "users", r#"{"name": "Bob"}"#]);
    assert_eq!(text.lines().count(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(text.trim()).unwrap()["age"],
        25
    );

    assert_eq!(
        s.json(&[
            "update",
            "users",
            r#"{"age": {"$lt": 23}}"#,
            r#"{"$inc": {"age": 1}}"#
        ]),
        json!({"updated": 2})
    );
    s.ok(&[
        "update",
        "users",
        r#"{"id": 0}"#,
        r#"{"address": {"zip": "1"}}"#,
        "--merge",
    ]);
    s.ok(&[
        "update",
        "users",
        r#"{"id": 1}"#,
        r#"{"age": 26}"#,
        "--assign",
    ]);
    s.ok(&[
        "update",
        "users",
        r#"{"id": 2}"#,
        r#"{"name": "Cyd"}"#,
        "--replace",
    ]);
    assert_eq!(
        s.json(&["get", "users", "0"])["address"],
        json!({"zip": "1"})
    );
    assert_eq!(s.json(&["get", "users", "1"])["age"], 26);
    assert_eq!(
        s.json(&["get", "users", "2"]),
        json!({"id": 2, "name": "Cyd"})
    );
    assert_eq!(s.json(&["get", "users", "3"])["age"], 20);
    assert_eq!(
        s.json(&["delete", "users", r#"{"age": {"$gte": 50}}"#]),
        json!({"deleted": 1})
    );

    // Export: JSON lines, to stdout or a file.
    let exported = s.ok(&["export", "users"]);
    assert_eq!(exported.lines().count(), 5);
    let out = s.dir.parent().unwrap().join("users.jsonl");
    assert_eq!(
        s.json(&["export", "users", "--out", out.to_str().unwrap()])["exported"],
        5
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), exported);
}

#[test]
fn collections_and_indexes_are_managed_and_used() {
    let s = Store::new();
    s.ok(&[
        "collections",
        "create",
        "labels",
        "--id-field",
        "code",
        "--ids",
        "uuid",
        "--audit",
    ]);
    s.ok(&["collections", "create", "events", "--ttl", "at:60000"]);
    let e = s.json_error(&["collections", "create", "labels"], 5);
    assert_eq!(e["kind"], "constraint");
    s.json_error(&["collections", "create", "x", "--ids", "dice"], 3);
    s.json_error(&["collections", "create", "x", "--ttl", "at"], 3);
    s.ok(&["insert", "labels", r#"{"title": "A"}"#]);
    s.ok(&["insert", "labels", r#"{"code": "L2", "title": "a"}"#]);
    assert_eq!(
        s.json(&["collections"]),
        json!([{"name": "events", "documents": 0}, {"name": "labels", "documents": 2}])
    );
    assert_eq!(s.json(&["get", "labels", "L2"])["title"], "a");

    s.ok(&[
        "index",
        "create",
        "labels",
        "title_ci",
        "title",
        "--ignore-case",
    ]);
    let e = s.json_error(
        &[
            "index",
            "create",
            "labels",
            "title_u",
            "title",
            "--unique",
            "--ignore-case",
        ],
        5,
    );
    assert!(e["message"].as_str().unwrap().contains("title_u"), "{e}");
    s.ok(&[
        "index",
        "create",
        "labels",
        "composite",
        "title",
        "code:desc",
        "--sparse",
    ]);
    let listed = s.json(&["index", "list", "labels"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        listed[1]["fields"][1],
        json!({"path": "code", "descending": true})
    );
    let plan = s.json(&["find", "labels", r#"{"title": "a"}"#, "--explain"]);
    assert_eq!(plan["index"], "title_ci");
    assert_eq!(plan["examined"], 2);
    assert_eq!(plan["matched"], 1);
    assert!(
        s.ok(&["find", "labels", r#"{"title": "a"}"#, "--explain"])
            .contains("index on title_ci")
    );
    s.ok(&["index", "drop", "labels", "title_ci"]);
    s.json_error(&["index", "drop", "labels", "title_ci"], 4);
    // The composite index leads with `title` too.
    assert_eq!(
        s.json(&["find", "labels", r#"{"title": "a"}"#, "--explain"])["index"],
        "composite"
    );
    s.ok(&["index", "drop", "labels", "composite"]);
    assert_eq!(
        s.json(&["find", "labels", r#"{"title": "a"}"#, "--explain"])["strategy"],
        "scan"
    );

    s.ok(&["collections", "drop", "events"]);
    s.json_error(&["collections", "drop", "events"], 4);
    assert_eq!(
        s.json(&["collections", "list"]).as_array().unwrap().len(),
        1
    );
}

#[test]
fn bad_input_and_missing_things_get_their_exit_codes() {
    let s = Store::new();
    s.ok(&["insert", "users", r#"{"name": "Ann"}"#]);
    let e = s.json_error(&["insert", "users", "{\"name\": }"], 3);
    assert!(
        e["message"].as_str().unwrap().contains("line 1 column"),
        "{e}"
    );
    let e = s.json_error(&["find", "users", r#"{"age": {"$size": "x"}}"#], 3);
    assert!(e["message"].as_str().unwrap().contains("age.$size"), "{e}");
    s.json_error(&["find", "users", r#"{"$where": 1}"#], 3);
    s.json_error(&["find", "users", r#"{"a": {"$regex": "("}}"#], 3);
    s.json_error(
        &["update", "users", "{}", r#"{"$set": {"name.first": 1}}"#],
        3,
    );
    s.json_error(&["insert", "users", "[1]"], 3);
    s.json_error(&["get", "users", "7"], 4);
    s.json_error(&["find", "nobody"], 4);
    s.json_error(&["index", "list", "nobody"], 4);
    // Duplicate id.
    let e = s.json_error(&["insert", "users", r#"{"id": 0}"#], 5);
    assert_eq!(e["kind"], "constraint");
    // A bad command line is clap's exit code 2, with its usage message.
    let (_, stderr) = s.run(&["find"], 2);
    assert!(stderr.contains("Usage"), "{stderr}");
    // Text errors are one line; -v adds the causes.
    let (_, stderr) = s.run(&["get", "users", "7"], 4);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let not_a_dir = s.dir.join("LOCK");
    let output = Command::cargo_bin("cstore")
        .unwrap()
        .args(["-v", "--dir", not_a_dir.to_str().unwrap(), "stats"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.lines().count() >= 2 && stderr.contains("caused by"),
        "{stderr}"
    );
}

#[test]
fn a_locked_directory_is_exit_code_6() {
    let s = Store::new();
    let db =
        collection_store::Database::open(&s.dir, collection_store::Options::default()).unwrap();
    let e = s.json_error(&["stats"], 6);
    assert_eq!(e["kind"], "locked");
    s.json_error(&["verify"], 6);
    drop(db);
    s.ok(&["stats"]);
}

#[test]
fn stats_checkpoint_wal_dump_backup_and_bench() {
    let s = Store::new();
    for i in 0..5 {
        s.ok(&["insert", "items", &format!(r#"{{"n": {i}}}"#)]);
    }
    let stats = s.json(&["stats"]);
    assert_eq!(
        stats["collections"],
        json!([{"name": "items", "documents": 5, "indexes": 0, "index_names": [], "ttl": false, "audit": false}])
    );
    assert_eq!(stats["last_checkpoint"], Value::Null);
    assert_eq!(stats["wal"]["segment_size_bytes"], 1 << 20);
    assert!(stats["wal"]["bytes_on_disk"].as_u64().unwrap() >= 1 << 20);
    assert!(stats["recovery"]["open_ms"].as_f64().unwrap() > 0.0);

    let checkpoint = s.json(&["checkpoint"]);
    let stats = s.json(&["stats"]);
    assert_eq!(stats["last_checkpoint"]["cut_lsn"], checkpoint["cut_lsn"]);
    assert!(stats["snapshots"]["files"].as_u64().unwrap() >= 1);

    let dump = s.json(&["wal", "dump"]);
    let records = dump.as_array().unwrap();
    let puts = records
        .iter()
        .filter(|r| r["op"] == "put" && r["collection"] == "items")
        .count();
    assert_eq!(puts, 5);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "Commit" && r["seq"].is_u64())
    );
    assert_eq!(
        s.json(&["wal", "dump", "--limit", "3"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let text = s.ok(&["wal", "dump", "--limit", "2"]);
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.contains("Data") && text.contains("collection="),
        "{text}"
    );

    let dest = s.dir.parent().unwrap().join("copy");
    let backup = s.json(&["backup", dest.to_str().unwrap()]);
    assert_eq!(backup["cut_lsn"], stats["wal"]["end_lsn"]);
    let copy = Store {
        _tmp: tempfile::tempdir().unwrap(),
        dir: dest.clone(),
    };
    assert_eq!(copy.json(&["find", "items"]).as_array().unwrap().len(), 5);
    copy.ok(&["verify"]);
    s.json_error(&["backup", dest.to_str().unwrap()], 3);

    let bench = s.json(&["bench", "--seconds", "0.05"]);
    for key in [
        "fdatasync_floor_per_s",
        "sync_commits_per_s",
        "non_durable_commits_per_s",
        "reads_by_id_per_s",
    ] {
        assert!(bench[key].as_f64().unwrap() > 0.0, "{key}: {bench}");
    }
}

#[test]
fn verify_names_a_flipped_bit_in_the_log_and_in_a_snapshot() {
    let s = Store::new();
    s.ok(&["collections", "create", "items"]);
    s.ok(&["index", "create", "items", "n", "n", "--unique"]);
    for i in 0..20 {
        s.ok(&[
            "insert",
            "items",
            &format!(r#"{{"n": {i}, "pad": "{}"}}"#, "x".repeat(100)),
        ]);
    }
    s.ok(&["checkpoint"]);
    s.ok(&["insert", "items", r#"{"n": 100}"#]);
    let clean = s.json(&["verify"]);
    assert_eq!(clean["faults"], json!([]));
    assert!(
        clean["indexes_checked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c[0] == "items" && c[1] == 21),
        "{clean}"
    );
    assert!(s.ok(&["verify"]).contains("verified: no fault"));

    // A flipped bit in the last snapshot file.
    let snapshots = files_with_extension(&s.dir.join("snapshots"), "snap");
    let victim = snapshots.last().unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    let e = s.json_error(&["verify"], 7);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(e["message"].as_str().unwrap().contains(name), "{e}");
    let (stdout, _) = s.run(&["verify"], 7);
    assert!(
        stdout.contains("FAULT") && stdout.contains(name),
        "{stdout}"
    );
    bytes[at] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    s.ok(&["verify"]);

    // A flipped bit inside a record of the log (the payload of the first records' group).
    let segment = files_with_extension(&s.dir.join("wal"), "seg")[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[64 + 32 + 3] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let (stdout, _) = s.run(&["--json", "verify"], 7);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let fault = &report["faults"][0];
    assert_eq!(
        fault["file"],
        format!("wal/{}", segment.file_name().unwrap().to_str().unwrap())
    );
    assert_eq!(fault["offset"], 64, "{report}");
}

#[test]
fn import_from_the_typescript_store_refuses_a_rerun_and_replaces_on_request() {
    let s = Store::new();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/collection-store-ts/data");
    let fixture = fixture.to_str().unwrap();
    let report = s.json(&["import", fixture]);
    assert_eq!(report["documents"], 142);
    assert_eq!(report["collections"].as_array().unwrap().len(), 5);
    let text = s.ok(&["collections"]);
    assert!(
        text.contains("users\t44") && text.contains("contacts\t6"),
        "{text}"
    );
    assert_eq!(s.json(&["get", "users", "9011"])["id"], 9011);
    let e = s.json_error(&["import", fixture], 5);
    assert!(e["message"].as_str().unwrap().contains("exists"), "{e}");
    let again = s.json(&["import", fixture, "--replace"]);
    assert_eq!(again["replaced"].as_array().unwrap().len(), 5);
    assert_eq!(s.json(&["find", "users"]).as_array().unwrap().len(), 44);
    let text = s.ok(&["import", fixture, "--replace"]);
    assert!(
        text.contains("index \"address.country\" not imported"),
        "{text}"
    );
    s.ok(&["verify"]);

    // A malformed source names the file and field; nothing is imported.
    let bad = s.dir.parent().unwrap().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("things.json"),
        r#"{"config": {"name": "things", "list": "List", "id": "id", "ttl": "soon"}, "list": {"hash": {}}}"#,
    )
    .unwrap();
    let e = s.json_error(&["import", bad.to_str().unwrap()], 3);
    assert!(e["message"].as_str().unwrap().contains("config.ttl"), "{e}");
    assert_eq!(s.json(&["collections"]).as_array().unwrap().len(), 5);
}
