//! `ConnectionId`: a `u64` that carries the shard (and, with scale-out, the node) owning
//! the connection, so a send by id goes straight to its owner with no lookup table —
//! while the rest of it is unpredictable to peers.
//!
//! Layout (bit 0 = least significant):
//!
//! | bits   | what |
//! |--------|------|
//! | 0–9    | shard index ([`MAX_SHARDS`]) |
//! | 10–19  | node index ([`MAX_NODES`]; 0 for a server without a cluster) |
//! | 20–63  | a keyed 44-bit permutation of the shard's connection sequence number |
//!
//! The permutation's key is drawn from the OS's CSPRNG once per process, so ids are
//! unique within a process (a permutation of distinct sequence numbers), reveal neither
//! the sequence nor how many connections came before, and differ from run to run. Across
//! restarts a repeat is as likely as two random 44-bit values colliding: for *n*
//! connections per shard in each of two runs, about n²/2⁴⁴ (10⁶ each: 6 %; 10⁵: 0.06 %)
//! — applications that store ids across restarts should store them with a run marker.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Bits of the id that hold the shard index.
const SHARD_BITS: u32 = 10;
/// Bits of the id that hold the node index (scale-out).
const NODE_BITS: u32 = 10;
/// Bits of the permuted sequence number.
const SEQ_BITS: u32 = 64 - SHARD_BITS - NODE_BITS;
/// Half of the permuted part: the Feistel network works on two halves.
const HALF_BITS: u32 = SEQ_BITS / 2;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
/// Feistel rounds; four make a keyed pseudo-random permutation.
const ROUNDS: usize = 4;

/// Most shards a server may have.
pub const MAX_SHARDS: usize = 1 << SHARD_BITS;
/// Most nodes a cluster may have: node ids are `0..MAX_NODES`.
pub const MAX_NODES: usize = 1 << NODE_BITS;
/// Most connections one shard can number in one process before ids would repeat.
pub const MAX_SEQ: u64 = 1 << SEQ_BITS;

const _: () = assert!(SHARD_BITS + NODE_BITS + SEQ_BITS == 64);
const _: () = assert!(
    SEQ_BITS.is_multiple_of(2),
    "the Feistel halves must be equal"
);
const _: () = assert!(MAX_SHARDS >= 256, "room for a large machine's cores");

/// The process's permutation key: one 32-byte key per Feistel round.
fn key() -> &'static [[u8; 32]; ROUNDS] {
    static KEY: OnceLock<[[u8; 32]; ROUNDS]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [[0u8; 32]; ROUNDS];
        for round in &mut k {
            if getrandom::getrandom(round).is_err() {
                // No entropy at all: the server refuses connections elsewhere for the
                // same reason (see the accept path); ids stay unique, only predictable.
                tracing::error!("no random source for connection ids");
            }
        }
        k
    })
}

/// The round function: a keyed hash of one half, tweaked by the shard (so equal
/// sequence numbers on two shards look unrelated), cut to a half's width.
fn round(key: &[u8; 32], shard: u64, half: u64) -> u64 {
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(shard.to_le_bytes())
        .chain_update(half.to_le_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(b) & HALF_MASK
}

/// The keyed permutation of a shard's sequence number (`seq < MAX_SEQ`).
fn permute(shard: u64, seq: u64) -> u64 {
    let (mut l, mut r) = (seq >> HALF_BITS, seq & HALF_MASK);
    for k in key() {
        (l, r) = (r, l ^ round(k, shard, r));
    }
    (l << HALF_BITS) | r
}

/// Identifies a connection for the life of the server.
///
/// Its display form is 16 lowercase hex characters with the permuted part first, so
/// prefixes differ between connections (the Server Guide shortens ids with `id[:8]`; see
/// [`ConnectionId::short`]). Parsing the display form gives the id back.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The id of the `seq`-th connection numbered by shard `shard` of node `node` (0
    /// without a cluster) in this process.
    pub(crate) fn new(node: usize, shard: usize, seq: u64) -> ConnectionId {
        debug_assert!(shard < MAX_SHARDS, "shard {shard} has no room in an id");
        debug_assert!(node < MAX_NODES, "node {node} has no room in an id");
        debug_assert!(seq < MAX_SEQ, "sequence {seq} has no room in an id");
        let shard = shard as u64 & (MAX_SHARDS as u64 - 1);
        let node = node as u64 & (MAX_NODES as u64 - 1);
        ConnectionId(
            (permute(shard, seq % MAX_SEQ) << (SHARD_BITS + NODE_BITS))
                | (node << SHARD_BITS)
                | shard,
        )
    }

    /// The index of the shard that owns this connection.
    pub fn shard(self) -> usize {
        (self.0 & (MAX_SHARDS as u64 - 1)) as usize
    }

    /// The cluster node that owns this connection (0 on a server without a cluster).
    pub fn node(self) -> usize {
        ((self.0 >> SHARD_BITS) & (MAX_NODES as u64 - 1)) as usize
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
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
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
        u64::from_str_radix(s, 16)
            .map(ConnectionId)
            .map_err(|_| ParseIdError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_node_and_display_round_trip() {
        for (shard, node) in [(0, 0), (1, 1), (7, 300), (MAX_SHARDS - 1, MAX_NODES - 1)] {
            for seq in [0, 1, 2, 1 << 40, MAX_SEQ - 1] {
                let id = ConnectionId::new(node, shard, seq);
                assert_eq!(id.shard(), shard);
                assert_eq!(id.node(), node);
                let s = id.to_string();
                assert_eq!(s.len(), 16);
                assert_eq!(s.parse::<ConnectionId>(), Ok(id));
            }
        }
        assert!("xyz".parse::<ConnectionId>().is_err());
        assert!("zzzzzzzzzzzzzzzz".parse::<ConnectionId>().is_err());
    }

    #[test]
    fn ids_are_unique_and_do_not_reveal_the_sequence() {
        let ids: std::collections::HashSet<u64> = (0..20_000)
            .map(|s| ConnectionId::new(0, 3, s).as_u64())
            .collect();
        assert_eq!(ids.len(), 20_000, "a permutation never repeats");
        // Neighbours are far apart: not a counter in disguise.
        let a = ConnectionId::new(0, 0, 1).as_u64() >> 20;
        let b = ConnectionId::new(0, 0, 2).as_u64() >> 20;
        assert!(a.abs_diff(b) > 1 << 8, "{a:x} vs {b:x}");
    }

    #[test]
    fn short_prefixes_differ_between_neighbours() {
        let a = ConnectionId::new(0, 0, 1).short();
        let b = ConnectionId::new(0, 0, 2).short();
        let c = ConnectionId::new(0, 1, 1).short();
        assert!(a != b && a != c && b != c);
    }
}
