//! cargo-fuzz target: see `tandem::fuzzing::engine_model`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem::fuzzing::engine_model(data));
