//! cargo-fuzz target: see `tandem::fuzzing::wal_record_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem::fuzzing::wal_record_decode(data));
