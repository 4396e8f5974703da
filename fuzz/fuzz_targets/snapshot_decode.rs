//! cargo-fuzz target: see `tandem::fuzzing::snapshot_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem::fuzzing::snapshot_decode(data));
