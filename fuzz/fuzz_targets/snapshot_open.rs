//! Checkpoint files over arbitrary bytes: `fuzz_open` copies the input to an aligned buffer and runs the snapshot
//! and manifest decoders over it (salt from bytes 16..24, so mutated seeds keep a matching salt). They must return
//! a value or an error, never panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    collection_store::checkpoint::fuzz_open(data);
});
