//! Consensus-core benchmarks: propose → replicate → commit through an
//! in-memory 3-node cluster. (First version: codec cost of one entry, the
//! floor under every replicated write; the cluster bench follows.)

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tandem_raft::types::{decode, encode};
use tandem_raft::Entry;

fn entry_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_entry_codec");
    for size in [16usize, 1024] {
        let e = Entry {
            term: 3,
            index: 42,
            data: vec![7u8; size],
            ..Entry::default()
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let bytes = encode(&e);
                let back: Entry = decode(&bytes).expect("round trip");
                assert_eq!(back.index, 42);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, entry_codec);
criterion_main!(benches);
