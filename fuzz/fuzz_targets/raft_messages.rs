//! cargo-fuzz target: see `tandem::fuzzing::raft_messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem::fuzzing::raft_messages(data));
