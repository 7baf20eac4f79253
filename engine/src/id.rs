//! `ConnectionId`: a `u64` that carries the index of the shard owning the connection,
//! so a send by id goes straight to its owner with no lookup table.

use std::fmt;
use std::str::FromStr;

/// Bits of the id that hold the shard index.
const SHARD_BITS: u32 = 10;
/// Most shards a server may have.
pub const MAX_SHARDS: usize = 1 << SHARD_BITS;

/// Odd multiplier for the display form (any odd constant is invertible mod 2^64).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// Its inverse mod 2^64.
const UNMIX: u64 = 0xF1DE_83E1_9937_733D;

/// Identifies a connection for the life of the server.
///
/// Its display form is 16 lowercase hex characters, scrambled so that prefixes differ
/// between connections (the Server Guide shortens ids with `id[:8]`; see
/// [`ConnectionId::short`]). Parsing the display form gives the id back.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The id of the `seq`-th connection accepted by shard `shard`.
    pub(crate) fn new(shard: usize, seq: u64) -> ConnectionId {
        ConnectionId((seq << SHARD_BITS) | (shard as u64 & (MAX_SHARDS as u64 - 1)))
    }

    /// The index of the shard that owns this connection.
    pub fn shard(self) -> usize {
        (self.0 & (MAX_SHARDS as u64 - 1)) as usize
    }

    /// The raw value.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from its raw value.
    pub fn from_u64(raw: u64) -> ConnectionId {
        ConnectionId(raw)
    }

    /// The first 8 characters of the display form, for logs and user names.
    pub fn short(self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }

    fn scrambled(self) -> u64 {
        let x = self.0.wrapping_mul(MIX);
        x ^ (x >> 32)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.scrambled())
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({self}, shard {})", self.shard())
    }
}

/// The display form of a [`ConnectionId`] was not 16 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a connection id: expected 16 hex characters")]
pub struct ParseIdError;

impl FromStr for ConnectionId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(ParseIdError);
        }
        let y = u64::from_str_radix(s, 16).map_err(|_| ParseIdError)?;
        let x = y ^ (y >> 32);
        Ok(ConnectionId(x.wrapping_mul(UNMIX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_constant() {
        assert_eq!(MIX.wrapping_mul(UNMIX), 1);
    }

    #[test]
    fn shard_and_display_round_trip() {
        for shard in [0, 1, 7, MAX_SHARDS - 1] {
            for seq in [0, 1, 2, 1 << 40] {
                let id = ConnectionId::new(shard, seq);
                assert_eq!(id.shard(), shard);
                let s = id.to_string();
                assert_eq!(s.len(), 16);
                assert_eq!(s.parse::<ConnectionId>(), Ok(id));
            }
        }
        assert!("xyz".parse::<ConnectionId>().is_err());
    }

    #[test]
    fn short_prefixes_differ_between_neighbours() {
        let a = ConnectionId::new(0, 1).short();
        let b = ConnectionId::new(0, 2).short();
        let c = ConnectionId::new(1, 1).short();
        assert!(a != b && a != c && b != c);
    }
}
