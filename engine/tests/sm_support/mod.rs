//! Shared by the `sm_*` tests: a `BTreeMap` model of the state machine and
//! a deterministic command generator.

#![allow(dead_code)]

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem::raft::Entry;
use tandem::sm::{Cas, CasMismatch, Command, CommandResult, Op, StateMachine, WriteBatch};

/// The obviously-correct model: a sorted map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    pub applied: u64,
}

impl Model {
    /// Apply the command of entry `applied + 1`; the result it must produce.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        self.applied += 1;
        match command {
            Command::Noop => CommandResult::Noop,
            Command::Batch(b) => {
                for op in b.ops() {
                    match op {
                        Op::Insert { key, value } => {
                            self.map.insert(key.clone(), value.clone());
                        }
                        Op::Remove { key } => {
                            self.map.remove(key);
                        }
                    }
                }
                CommandResult::Written { ops: b.len() }
            }
            Command::Cas(c) => {
                let current = self.map.get(&c.key).cloned();
                if current == c.expected {
                    match &c.new {
                        Some(v) => self.map.insert(c.key.clone(), v.clone()),
                        None => self.map.remove(&c.key),
                    };
                    CommandResult::Cas(Ok(()))
                } else {
                    CommandResult::Cas(Err(CasMismatch { current }))
                }
            }
        }
    }
}

/// Every user key and value of the state machine, in key order.
pub fn contents(sm: &StateMachine) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut last: Option<Vec<u8>> = None;
    for item in sm.range::<&[u8], _>(..) {
        let (k, v) = item.unwrap();
        if let Some(prev) = &last {
            assert!(prev.as_slice() < &k[..], "range yields keys in order");
        }
        last = Some(k.to_vec());
        out.insert(k.to_vec(), v.to_vec());
    }
    out
}

/// A normal entry carrying `command`.
pub fn entry(index: u64, term: u64, command: &Command) -> Entry {
    Entry {
        index,
        term,
        data: command.encode().into(),
        context: index.to_le_bytes().to_vec().into(),
        ..Entry::default()
    }
}

/// A membership-change entry: `change_type` of replica `id`.
pub fn conf_entry(
    index: u64,
    term: u64,
    change_type: tandem::raft::ConfChangeType,
    id: u64,
) -> Entry {
    Entry {
        entry_type: tandem::raft::EntryType::EntryConfChange,
        index,
        term,
        data: tandem::raft::types::encode(&tandem::raft::ConfChange {
            change_type,
            node_id: id,
            context: vec![],
        })
        .into(),
        context: tandem::raft::Bytes::new(),
    }
}

/// The command of entry `index` in the deterministic workload `seed`:
/// batches of up to `batch_max` writes, compare-and-swap that succeed and
/// fail, removes, no-ops, over a small key space so keys collide.
pub fn command_at(seed: u64, index: u64, batch_max: usize) -> Command {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let key = |rng: &mut ChaCha8Rng| format!("key-{:03}", rng.gen_range(0..64)).into_bytes();
    let value = |rng: &mut ChaCha8Rng| {
        let n = rng.gen_range(0..3);
        let len = [0usize, 8, 100][rng.gen_range(0..3)];
        vec![b'a' + n as u8; len]
    };
    match rng.gen_range(0..10) {
        0 => Command::Noop,
        1..=3 => Command::Cas(Cas {
            key: key(&mut rng),
            expected: rng.gen_bool(0.5).then(|| value(&mut rng)),
            new: rng.gen_bool(0.8).then(|| value(&mut rng)),
        }),
        _ => {
            let mut b = WriteBatch::new();
            for _ in 0..rng.gen_range(1..=batch_max) {
                if rng.gen_bool(0.8) {
                    b.insert(key(&mut rng), value(&mut rng));
                } else {
                    b.remove(key(&mut rng));
                }
            }
            Command::Batch(b)
        }
    }
}
