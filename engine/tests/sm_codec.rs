//! The command codec under arbitrary input: valid commands round-trip,
//! and any bytes — random, or a valid command with bytes flipped, cut or
//! appended — decode to a command or a typed error, never a panic.

use proptest::prelude::*;
use tandem::sm::{Cas, Command, Error, Op, WriteBatch, COMMAND_FORMAT_VERSION};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

fn command() -> impl Strategy<Value = Command> {
    let op = prop_oneof![
        (bytes(), bytes()).prop_map(|(key, value)| Op::Insert { key, value }),
        bytes().prop_map(|key| Op::Remove { key }),
    ];
    prop_oneof![
        Just(Command::Noop),
        (
            bytes(),
            proptest::option::of(bytes()),
            proptest::option::of(bytes())
        )
            .prop_map(|(key, expected, new)| Command::Cas(Cas { key, expected, new })),
        proptest::collection::vec(op, 0..8).prop_map(|ops| Command::Batch(WriteBatch::from(ops))),
    ]
}

fn check_decodes_or_typed_error(data: &[u8]) {
    match Command::decode_entry(3, data) {
        Ok(c) => assert_eq!(Command::decode(&c.encode()).unwrap(), c),
        Err(Error::CorruptCommand { index: 3, .. }) => {}
        Err(Error::UnknownCommandVersion { index: 3, version }) => {
            assert_ne!(version, COMMAND_FORMAT_VERSION);
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn commands_round_trip(c in command()) {
        let data = c.encode();
        prop_assert_eq!(data[0], COMMAND_FORMAT_VERSION);
        prop_assert_eq!(&Command::decode(&data).unwrap(), &c);
        // `encode` goes through the borrowed view; the layout is the one
        // the owned types' derived encoder defines.
        let derived = bincode::encode_to_vec(&c, tandem_raft::types::codec_config()).unwrap();
        prop_assert_eq!(&data[1..], &derived[..]);
    }

    #[test]
    fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..64), versioned in any::<bool>()) {
        if versioned && !data.is_empty() {
            data[0] = COMMAND_FORMAT_VERSION;
        }
        check_decodes_or_typed_error(&data);
    }

    #[test]
    fn damaged_commands_never_panic(
        c in command(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut data = c.encode();
        for (at, x) in &flips {
            let i = at.index(data.len());
            data[i] ^= x;
        }
        check_decodes_or_typed_error(&data);
        let keep = cut.index(data.len() + 1);
        check_decodes_or_typed_error(&data[..keep]);
        data.extend_from_slice(&tail);
        check_decodes_or_typed_error(&data);
    }
}
