//! Records the versions of the compared crates, as resolved in the workspace's Cargo.lock, and the compiler's.

use std::path::Path;

const CRATES: &[&str] = &[
    "collection-store",
    "redb",
    "fjall",
    "lsm-tree",
    "sled",
    "heed",
    "lmdb-master-sys",
    "rusqlite",
    "libsqlite3-sys",
    "okaywal",
    "rocksdb",
    "librocksdb-sys",
    "hdrhistogram",
    "plotters",
];

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found = Vec::new();
    let mut name: Option<&str> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"'));
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take())
            && CRATES.contains(&n)
        {
            found.push(format!("{n} {}", v.trim_matches('"')));
        }
    }
    println!("cargo:rustc-env=PEERS_VERSIONS={}", found.join(";"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=PEERS_RUSTC={version}");
}
