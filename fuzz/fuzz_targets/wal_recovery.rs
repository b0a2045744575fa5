//! Recovery over arbitrary bytes: `fuzz_recovery` cuts the input into segments, plans recovery and checks the
//! plan's invariants. It must never panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = collection_store::wal::scan::fuzz_recovery(data);
});
