//! Imports a TypeScript collection-store data directory and prints the report as JSON.
//!
//! `cargo run --example import_ts -- SRC DB_DIR [--replace]`

use std::path::PathBuf;

use collection_store::import_ts::{ImportOptions, import};
use collection_store::{Database, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(src), Some(db_dir)) = (args.next(), args.next()) else {
        eprintln!("usage: import_ts SRC DB_DIR [--replace]");
        std::process::exit(2);
    };
    let replace = args.any(|a| a == "--replace");
    let db = Database::open(PathBuf::from(db_dir), Options::default())?;
    let report = import(
        &db,
        &PathBuf::from(src),
        &ImportOptions {
            replace,
            progress: None,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
