//! cargo-fuzz target: see `tandem::fuzzing::wal_recovery`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem::fuzzing::wal_recovery(data));
