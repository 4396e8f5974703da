//! Arbitrary message sequences — from the network, so possibly hostile —
//! never make the transfer state machines panic or break their invariants.

use proptest::prelude::*;
use tandem_raft::ConfState;
use tandem_snapshot::format::{encode_chunk, encode_pair};
use tandem_snapshot::{
    AbortReason, Manifest, Receiver, ReceiverAction, ReceiverConfig, Sender, SenderAction,
    SenderConfig, TransferId, TransferMsg,
};

fn ids() -> impl Strategy<Value = TransferId> {
    (1u64..4, 0u64..3, 4u64..6).prop_map(|(leader_term, attempt, index)| TransferId {
        leader_term,
        from: 1,
        index,
        term: 2,
        attempt,
    })
}

fn manifest(index: u64, chunk_count: u32) -> Manifest {
    Manifest {
        index,
        term: 2,
        conf_state: ConfState::from_voters([1, 2, 3]),
        chunk_count,
        total_bytes: u64::from(chunk_count) * 50,
        pair_count: u64::from(chunk_count),
        checksum: 0,
    }
}

fn chunk(index: u64, n: u32) -> Vec<u8> {
    let mut p = Vec::new();
    encode_pair(&mut p, &n.to_be_bytes(), b"v");
    encode_chunk(index, 2, n, 1, &p)
}

fn msgs() -> impl Strategy<Value = TransferMsg> {
    prop_oneof![
        (ids(), 0u32..5, any::<bool>()).prop_map(|(id, n, garbage)| TransferMsg::Offer {
            id,
            manifest: if garbage {
                vec![n as u8; 9]
            } else {
                manifest(id.index, n).encode()
            },
        }),
        (ids(), 0u32..6, any::<bool>(), any::<u8>()).prop_map(|(id, n, damage, b)| {
            let mut bytes = chunk(id.index, n);
            if damage {
                let i = usize::from(b) % bytes.len();
                bytes[i] ^= 0x5a;
            }
            TransferMsg::Chunk {
                id,
                chunk_no: n,
                bytes,
            }
        }),
        (ids(), 0u32..6).prop_map(|(id, chunk_no)| TransferMsg::Ack { id, chunk_no }),
        (ids(), 0u32..6).prop_map(|(id, chunk_no)| TransferMsg::Reject { id, chunk_no }),
        ids().prop_map(|id| TransferMsg::Accept { id }),
        ids().prop_map(|id| TransferMsg::Done { id }),
        ids().prop_map(|id| TransferMsg::Abort {
            id,
            reason: AbortReason::Cancelled
        }),
    ]
}

#[derive(Clone, Debug)]
enum Input {
    Msg(TransferMsg),
    Tick,
    Term(u64),
}

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    proptest::collection::vec(
        prop_oneof![
            6 => msgs().prop_map(Input::Msg),
            2 => Just(Input::Tick),
            1 => (1u64..5).prop_map(Input::Term),
        ],
        0..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn receiver_survives_any_input(inputs in inputs(), verify_ok in any::<bool>()) {
        let mut r = Receiver::new(ReceiverConfig { idle_timeout_ticks: 5 }).unwrap();
        let mut completed = 0;
        for input in inputs {
            let mut queue: Vec<ReceiverAction> = match input {
                Input::Msg(m) => r.on_message(m),
                Input::Tick => r.tick(),
                Input::Term(t) => r.on_term(t),
            };
            // Perform the actions the way a driver would, successfully.
            while let Some(a) = queue.pop() {
                match a {
                    ReceiverAction::Begin { id, .. } => queue.extend(r.on_begun(id, Ok(()))),
                    ReceiverAction::Stage { id, chunk_no, bytes } => {
                        // Only verified chunks of the current transfer are staged.
                        prop_assert_eq!(Some(id), r.current());
                        let h = tandem_snapshot::format::verify_chunk(&bytes).unwrap();
                        prop_assert_eq!((h.index, h.chunk_no), (id.index, chunk_no));
                        queue.extend(r.on_staged(id, chunk_no, Ok(())));
                    }
                    ReceiverAction::Verify { id } => {
                        let res = if verify_ok {
                            Ok(())
                        } else {
                            Err(tandem_snapshot::Error::InvalidState("bad".into()))
                        };
                        queue.extend(r.on_verified(id, res));
                    }
                    ReceiverAction::Complete { id } => {
                        prop_assert!(verify_ok);
                        prop_assert_eq!(Some(id), r.current());
                        completed += 1;
                    }
                    ReceiverAction::Send(_) | ReceiverAction::Discard { .. } | ReceiverAction::Failed { .. } => {}
                }
            }
        }
        prop_assert!(completed <= 100);
    }

    #[test]
    fn sender_survives_any_input(inputs in inputs(), chunks in 0u32..6, window in 1u32..4) {
        let id = TransferId { leader_term: 2, from: 1, index: 5, term: 2, attempt: 1 };
        let cfg = SenderConfig { window_chunks: window, retransmit_ticks: 2, max_retries: 3, done_timeout_ticks: 10 };
        let mut s = Sender::new(id, &manifest(5, chunks), cfg).unwrap();
        s.start();
        let mut finished = 0;
        for input in inputs {
            let actions = match input {
                Input::Msg(mut m) => {
                    // Half the messages are for this transfer.
                    if let TransferMsg::Ack { id: i, .. } | TransferMsg::Reject { id: i, .. } | TransferMsg::Accept { id: i } | TransferMsg::Done { id: i } = &mut m {
                        if i.attempt == 0 {
                            *i = id;
                        }
                    }
                    s.on_message(&m)
                }
                Input::Tick => s.tick(),
                Input::Term(t) => s.on_leadership(t, true),
            };
            for a in actions {
                match a {
                    SenderAction::SendChunk(n) => prop_assert!(n < chunks),
                    SenderAction::Finished(_) => finished += 1,
                    SenderAction::Send(_) => {}
                }
            }
            prop_assert!(s.inflight() <= window as usize);
        }
        prop_assert!(finished <= 1, "Finished emitted {} times", finished);
    }
}
