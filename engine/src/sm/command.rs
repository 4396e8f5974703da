//! Commands: what a normal log entry carries, and what applying it returns.
//!
//! # Encoding
//!
//! ```text
//! +---------+------------------------------------------------+
//! | version | bincode 2 (tandem codec: little-endian, varint) |
//! |  1 byte | Command                                         |
//! +---------+------------------------------------------------+
//! ```
//!
//! The version byte comes first so a replica running an older build stops
//! with [`Error::UnknownCommandVersion`] on a command written by a newer one,
//! instead of misreading it. Decoding never trusts a length prefix: byte
//! strings are taken from the input only if that many bytes remain, so a
//! corrupt entry yields [`Error::CorruptCommand`] without large allocations
//! and never panics.
//!
//! An entry with empty data (the entry a new leader appends) is not a
//! command; the state machine applies it as a no-op.

use bincode::de::BorrowDecoder;
use bincode::error::{AllowedEnumVariants, DecodeError};
use bincode::{BorrowDecode, Decode, Encode};

use super::error::{Error, Result};

/// The format version written as the first byte of every encoded command.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode)]
pub enum Op {
    /// Set `key` to `value`.
    Insert {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` (no effect if absent).
    Remove {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The key this operation writes.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Insert { key, .. } | Op::Remove { key } => key,
        }
    }
}

/// Ordered inserts and removes, applied atomically: later operations on a
/// key override earlier ones, exactly as if applied one after the other.
///
/// The builder mirrors `sled::Batch`:
///
/// ```
/// use tandem::sm::WriteBatch;
/// let mut batch = WriteBatch::default();
/// batch.insert(b"a".to_vec(), b"1".to_vec());
/// batch.remove(b"b".to_vec());
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Append an insert of `value` at `key`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Insert {
            key: key.into(),
            value: value.into(),
        });
    }

    /// Append a removal of `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Remove { key: key.into() });
    }

    /// The operations, in order.
    #[must_use]
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The operations, by value.
    #[must_use]
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch has no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl From<Vec<Op>> for WriteBatch {
    fn from(ops: Vec<Op>) -> Self {
        WriteBatch { ops }
    }
}

/// Compare-and-swap: if the current value of `key` equals `expected`
/// (`None`: the key is absent), set it to `new` (`None`: remove it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode)]
pub struct Cas {
    /// The key.
    pub key: Vec<u8>,
    /// The value the key must hold, or `None` if it must be absent.
    pub expected: Option<Vec<u8>>,
    /// The value to store, or `None` to remove the key.
    pub new: Option<Vec<u8>>,
}

/// A command carried in the data of a normal log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode)]
pub enum Command {
    /// Inserts and removes applied atomically, in order.
    Batch(WriteBatch),
    /// A conditional write, evaluated at apply time.
    Cas(Cas),
    /// Does nothing (used e.g. to commit a barrier through the log).
    Noop,
}

/// Limits on what a proposal may carry, checked when proposing
/// ([`Command::validate`]) so an oversized write is refused with a clear
/// error before it reaches the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key, in bytes.
    pub key_bytes_max: usize,
    /// Largest value, in bytes.
    pub value_bytes_max: usize,
    /// Most operations in one batch.
    pub batch_ops_max: usize,
    /// Largest encoded command, in bytes (bounds the log entry).
    pub command_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 16 * 1024,
            value_bytes_max: 1024 * 1024,
            batch_ops_max: 16 * 1024,
            command_bytes_max: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Check that the limits are usable together.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.key_bytes_max == 0 || self.value_bytes_max == 0 || self.batch_ops_max == 0 {
            return Err(Error::Config(
                "key_bytes_max, value_bytes_max and batch_ops_max must be > 0".into(),
            ));
        }
        if self.command_bytes_max < self.key_bytes_max + self.value_bytes_max {
            return Err(Error::Config(format!(
                "command_bytes_max ({}) must hold one key and one value ({} + {})",
                self.command_bytes_max, self.key_bytes_max, self.value_bytes_max
            )));
        }
        Ok(())
    }
}

/// The current value of a key when a compare-and-swap did not match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CasMismatch {
    /// The value the key held at apply time (`None`: absent).
    pub current: Option<Vec<u8>>,
}

/// What applying one committed entry produced, handed back to the proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResult {
    /// An empty entry or a [`Command::Noop`].
    Noop,
    /// A [`WriteBatch`] with this many operations was applied.
    Written {
        /// Number of operations applied.
        ops: usize,
    },
    /// The outcome of a [`Cas`]: `Ok` if it swapped.
    Cas(std::result::Result<(), CasMismatch>),
    /// A membership change: the new configuration, or why it was refused
    /// (the configuration is then unchanged on every replica).
    ConfChange(std::result::Result<tandem_raft::ConfState, String>),
}

impl Command {
    /// Check the command against `limits`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first limit exceeded.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        self.view().validate(limits)
    }

    /// Encode for a log entry: the version byte, then bincode.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        self.view().encode()
    }

    /// The command with its keys and values borrowed.
    pub(crate) fn view(&self) -> CommandView<'_> {
        match self {
            Command::Batch(batch) => CommandView::Batch(
                batch
                    .ops()
                    .iter()
                    .map(|op| match op {
                        Op::Insert { key, value } => OpView::Insert { key, value },
                        Op::Remove { key } => OpView::Remove { key },
                    })
                    .collect(),
            ),
            Command::Cas(cas) => CommandView::Cas(CasView {
                key: &cas.key,
                expected: cas.expected.as_deref(),
                new: cas.new.as_deref(),
            }),
            Command::Noop => CommandView::Noop,
        }
    }

    /// Decode the data of a committed entry at `index` (used in errors only).
    ///
    /// # Errors
    /// [`Error::UnknownCommandVersion`] for a version byte this build does not
    /// know, [`Error::CorruptCommand`] for anything that is not exactly one
    /// well-formed command.
    pub fn decode_entry(index: u64, data: &[u8]) -> Result<Command> {
        CommandView::decode_entry(index, data).map(Command::from)
    }

    /// [`Command::decode_entry`] outside the log (index 0 in errors).
    ///
    /// # Errors
    /// As [`Command::decode_entry`].
    pub fn decode(data: &[u8]) -> Result<Command> {
        Command::decode_entry(0, data)
    }
}

/// A command whose keys and values are borrowed, with the same encoding as
/// [`Command`].
///
/// Read in place from the data of an entry, it lets the state machine copy
/// each value once (into its own buffer) instead of three times;
/// [`Command::decode_entry`] is this decoder followed by a copy, so the two
/// cannot disagree. Built from a caller's slices, it lets `Db::insert`
/// encode a write without first copying the key and value into a
/// [`WriteBatch`]; [`Command::encode`] and [`Command::validate`] go
/// through it too.
#[derive(Clone, Debug, PartialEq, Eq, Encode)]
pub(crate) enum CommandView<'a> {
    /// See [`Command::Batch`]; the operations in order.
    Batch(Vec<OpView<'a>>),
    /// See [`Command::Cas`].
    Cas(CasView<'a>),
    /// See [`Command::Noop`].
    Noop,
}

/// One operation of a [`CommandView::Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode)]
pub(crate) enum OpView<'a> {
    /// See [`Op::Insert`].
    Insert { key: &'a [u8], value: &'a [u8] },
    /// See [`Op::Remove`].
    Remove { key: &'a [u8] },
}

/// A [`Cas`] read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode)]
pub(crate) struct CasView<'a> {
    pub key: &'a [u8],
    pub expected: Option<&'a [u8]>,
    pub new: Option<&'a [u8]>,
}

impl<'a> CommandView<'a> {
    /// Check the command against `limits`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first limit exceeded.
    pub(crate) fn validate(&self, limits: &Limits) -> Result<()> {
        let check = |what: &'static str, len: usize, max: usize| {
            if len > max {
                Err(Error::TooLarge { what, len, max })
            } else {
                Ok(())
            }
        };
        match self {
            CommandView::Batch(ops) => {
                check("batch operations", ops.len(), limits.batch_ops_max)?;
                for op in ops {
                    match *op {
                        OpView::Insert { key, value } => {
                            check("key bytes", key.len(), limits.key_bytes_max)?;
                            check("value bytes", value.len(), limits.value_bytes_max)?;
                        }
                        OpView::Remove { key } => {
                            check("key bytes", key.len(), limits.key_bytes_max)?;
                        }
                    }
                }
            }
            CommandView::Cas(cas) => {
                check("key bytes", cas.key.len(), limits.key_bytes_max)?;
                for v in [cas.expected, cas.new].into_iter().flatten() {
                    check("value bytes", v.len(), limits.value_bytes_max)?;
                }
            }
            CommandView::Noop => {}
        }
        // Cheap upper bound of the encoded size first; encode only if close.
        let bound = self.encoded_len_bound();
        if bound > limits.command_bytes_max {
            check(
                "command bytes",
                self.encode().len(),
                limits.command_bytes_max,
            )?;
        }
        Ok(())
    }

    /// An upper bound of `self.encode().len()`.
    fn encoded_len_bound(&self) -> usize {
        // A varint length or tag takes at most 9 bytes.
        const VARINT_MAX: usize = 9;
        let bytes = |b: &[u8]| VARINT_MAX + b.len();
        1 + VARINT_MAX
            + match self {
                CommandView::Batch(ops) => {
                    VARINT_MAX
                        + ops
                            .iter()
                            .map(|op| match *op {
                                OpView::Insert { key, value } => {
                                    VARINT_MAX + bytes(key) + bytes(value)
                                }
                                OpView::Remove { key } => VARINT_MAX + bytes(key),
                            })
                            .sum::<usize>()
                }
                CommandView::Cas(cas) => {
                    bytes(cas.key)
                        + [cas.expected, cas.new]
                            .iter()
                            .map(|v| 1 + v.map_or(0, bytes))
                            .sum::<usize>()
                }
                CommandView::Noop => 0,
            }
    }

    /// Encode for a log entry: the version byte, then bincode.
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Sized once: growing by doubling would copy a large value a few times.
        let mut out = Vec::with_capacity(self.encoded_len_bound());
        out.push(COMMAND_FORMAT_VERSION);
        bincode::encode_into_std_write(self, &mut out, tandem_raft::types::codec_config())
            .expect("encoding into a Vec cannot fail");
        out
    }

    /// Decode the data of a committed entry at `index` (used in errors
    /// only), borrowing keys and values from `data`.
    ///
    /// # Errors
    /// As [`Command::decode_entry`].
    pub(crate) fn decode_entry(index: u64, data: &'a [u8]) -> Result<CommandView<'a>> {
        let (&version, body) = data.split_first().ok_or_else(|| Error::CorruptCommand {
            index,
            reason: "empty payload".into(),
        })?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(Error::UnknownCommandVersion { index, version });
        }
        let (command, read) = bincode::borrow_decode_from_slice::<CommandView<'a>, _>(
            body,
            tandem_raft::types::codec_config(),
        )
        .map_err(|e| Error::CorruptCommand {
            index,
            reason: e.to_string(),
        })?;
        if read != body.len() {
            return Err(Error::CorruptCommand {
                index,
                reason: format!("{} trailing bytes after the command", body.len() - read),
            });
        }
        Ok(command)
    }
}

impl From<CommandView<'_>> for Command {
    fn from(view: CommandView<'_>) -> Command {
        match view {
            CommandView::Batch(ops) => Command::Batch(WriteBatch {
                ops: ops
                    .into_iter()
                    .map(|op| match op {
                        OpView::Insert { key, value } => Op::Insert {
                            key: key.to_vec(),
                            value: value.to_vec(),
                        },
                        OpView::Remove { key } => Op::Remove { key: key.to_vec() },
                    })
                    .collect(),
            }),
            CommandView::Cas(cas) => Command::Cas(Cas {
                key: cas.key.to_vec(),
                expected: cas.expected.map(<[u8]>::to_vec),
                new: cas.new.map(<[u8]>::to_vec),
            }),
            CommandView::Noop => Command::Noop,
        }
    }
}

// The decoders below mirror the derived encoders (variant index as a varint
// u32, `Vec` as a varint length then items, `Option` as a 0/1 tag, a byte
// string as a varint length then the bytes) and are checked against them by
// the round-trip tests. A length prefix is never trusted: bytes are taken
// from the input only if that many remain, and no capacity is reserved from
// a count read off the input beyond a small bound.

fn unexpected_variant(
    type_name: &'static str,
    found: u32,
    allowed: &'static AllowedEnumVariants,
) -> DecodeError {
    DecodeError::UnexpectedVariant {
        type_name,
        allowed,
        found,
    }
}

impl<'de, C> BorrowDecode<'de, C> for OpView<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        match u32::decode(decoder)? {
            0 => Ok(OpView::Insert {
                key: <&[u8]>::borrow_decode(decoder)?,
                value: <&[u8]>::borrow_decode(decoder)?,
            }),
            1 => Ok(OpView::Remove {
                key: <&[u8]>::borrow_decode(decoder)?,
            }),
            found => Err(unexpected_variant(
                "Op",
                found,
                &AllowedEnumVariants::Range { min: 0, max: 1 },
            )),
        }
    }
}

impl<'de, C> BorrowDecode<'de, C> for CasView<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        Ok(CasView {
            key: <&[u8]>::borrow_decode(decoder)?,
            expected: Option::<&[u8]>::borrow_decode(decoder)?,
            new: Option::<&[u8]>::borrow_decode(decoder)?,
        })
    }
}

impl<'de, C> BorrowDecode<'de, C> for CommandView<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        match u32::decode(decoder)? {
            0 => {
                let len = u64::decode(decoder)?;
                let len = usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))?;
                // Each op takes at least 2 bytes, so a corrupt count runs
                // out of input quickly; never pre-allocate from it.
                let mut ops = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    ops.push(OpView::borrow_decode(decoder)?);
                }
                Ok(CommandView::Batch(ops))
            }
            1 => Ok(CommandView::Cas(CasView::borrow_decode(decoder)?)),
            2 => Ok(CommandView::Noop),
            found => Err(unexpected_variant(
                "Command",
                found,
                &AllowedEnumVariants::Range { min: 0, max: 2 },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_commands() -> Vec<Command> {
        let mut batch = WriteBatch::new();
        batch.insert(b"k1".to_vec(), vec![7u8; 300]);
        batch.remove(b"k2".to_vec());
        batch.insert(Vec::new(), Vec::new());
        vec![
            Command::Batch(batch),
            Command::Batch(WriteBatch::new()),
            Command::Cas(Cas {
                key: b"c".to_vec(),
                expected: None,
                new: Some(b"v".to_vec()),
            }),
            Command::Cas(Cas {
                key: b"c".to_vec(),
                expected: Some(vec![]),
                new: None,
            }),
            Command::Noop,
        ]
    }

    #[test]
    fn commands_round_trip_and_start_with_the_version() {
        for command in sample_commands() {
            let bytes = command.encode();
            assert_eq!(bytes[0], COMMAND_FORMAT_VERSION);
            assert_eq!(Command::decode(&bytes).unwrap(), command);
            assert!(command.view().encoded_len_bound() >= bytes.len());
            // The view encodes exactly as the owned command's derived encoder.
            let derived =
                bincode::encode_to_vec(&command, tandem_raft::types::codec_config()).unwrap();
            assert_eq!(bytes[1..], derived[..]);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_a_typed_error() {
        for command in sample_commands() {
            let bytes = command.encode();
            for cut in 0..bytes.len() {
                let err = Command::decode_entry(5, &bytes[..cut]).unwrap_err();
                assert!(
                    matches!(err, Error::CorruptCommand { index: 5, .. }),
                    "cut {cut}: {err}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                Command::decode(&longer),
                Err(Error::CorruptCommand { .. })
            ));
        }
    }

    #[test]
    fn the_view_borrows_keys_and_values_from_the_entry() {
        let mut batch = WriteBatch::new();
        batch.insert(b"key".to_vec(), vec![9u8; 300]);
        batch.remove(b"gone".to_vec());
        let data = Command::Batch(batch).encode();
        let within = |s: &[u8]| {
            let range = data.as_ptr_range();
            range.start <= s.as_ptr() && s.as_ptr_range().end <= range.end
        };
        match CommandView::decode_entry(1, &data).unwrap() {
            CommandView::Batch(ops) => {
                assert_eq!(ops.len(), 2);
                let OpView::Insert { key, value } = ops[0] else {
                    panic!("first op is the insert: {:?}", ops[0]);
                };
                assert_eq!((key, value), (&b"key"[..], &[9u8; 300][..]));
                assert!(within(key) && within(value), "insert is not borrowed");
                let OpView::Remove { key } = ops[1] else {
                    panic!("second op is the remove: {:?}", ops[1]);
                };
                assert!(key == b"gone" && within(key));
            }
            other => panic!("expected a batch, got {other:?}"),
        }
        let cas = Command::Cas(Cas {
            key: b"c".to_vec(),
            expected: Some(b"old".to_vec()),
            new: None,
        })
        .encode();
        let CommandView::Cas(view) = CommandView::decode_entry(1, &cas).unwrap() else {
            panic!("expected a compare-and-swap");
        };
        assert_eq!(
            (view.key, view.expected, view.new),
            (&b"c"[..], Some(&b"old"[..]), None)
        );
        assert!(cas.as_ptr_range().contains(&view.key.as_ptr()));
    }

    #[test]
    fn unknown_variants_are_typed_errors() {
        // Command variant 3 does not exist; neither does op variant 2.
        for bytes in [
            vec![COMMAND_FORMAT_VERSION, 3],
            vec![COMMAND_FORMAT_VERSION, 0, 1, 2, 0],
            vec![COMMAND_FORMAT_VERSION, 1, 0, 2],
        ] {
            assert!(
                matches!(
                    Command::decode_entry(4, &bytes),
                    Err(Error::CorruptCommand { index: 4, .. })
                ),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn unknown_version_is_reported_with_the_index() {
        let mut bytes = Command::Noop.encode();
        bytes[0] = 42;
        match Command::decode_entry(9, &bytes) {
            Err(Error::UnknownCommandVersion { index, version }) => {
                assert_eq!((index, version), (9, 42));
            }
            other => panic!("expected UnknownCommandVersion, got {other:?}"),
        }
    }

    #[test]
    fn huge_length_prefix_fails_without_allocating_it() {
        // Batch with one insert whose key claims u64::MAX / 2 bytes.
        let mut bytes = vec![COMMAND_FORMAT_VERSION, 0, 1, 0];
        bytes.push(0xfd); // varint u64 marker
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(matches!(
            Command::decode(&bytes),
            Err(Error::CorruptCommand { .. })
        ));
        // A batch claiming a billion ops in a few bytes.
        let mut bytes = vec![COMMAND_FORMAT_VERSION, 0, 0xfc];
        bytes.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        assert!(matches!(
            Command::decode(&bytes),
            Err(Error::CorruptCommand { .. })
        ));
    }

    #[test]
    fn limits_are_enforced_with_named_errors() {
        let limits = Limits {
            key_bytes_max: 4,
            value_bytes_max: 8,
            batch_ops_max: 2,
            command_bytes_max: 40,
        };
        limits.validate().unwrap();
        let too_long_key = Command::Cas(Cas {
            key: vec![0; 5],
            expected: None,
            new: None,
        });
        assert!(matches!(
            too_long_key.validate(&limits),
            Err(Error::TooLarge {
                what: "key bytes",
                len: 5,
                max: 4
            })
        ));
        let mut batch = WriteBatch::new();
        batch.insert(vec![1], vec![0; 9]);
        assert!(matches!(
            Command::Batch(batch.clone()).validate(&limits),
            Err(Error::TooLarge {
                what: "value bytes",
                ..
            })
        ));
        let mut three = WriteBatch::new();
        for k in 0..3u8 {
            three.remove(vec![k]);
        }
        assert!(matches!(
            Command::Batch(three).validate(&limits),
            Err(Error::TooLarge {
                what: "batch operations",
                len: 3,
                max: 2
            })
        ));
        let mut ok = WriteBatch::new();
        ok.insert(vec![1; 4], vec![2; 8]);
        ok.insert(vec![3; 4], vec![4; 8]);
        Command::Batch(ok.clone()).validate(&limits).unwrap();
        let small = Limits {
            command_bytes_max: 12,
            ..limits
        };
        small.validate().unwrap();
        assert!(matches!(
            Command::Batch(ok).validate(&small),
            Err(Error::TooLarge {
                what: "command bytes",
                ..
            })
        ));
        assert!(Limits {
            command_bytes_max: 11,
            ..limits
        }
        .validate()
        .is_err());
    }
}
