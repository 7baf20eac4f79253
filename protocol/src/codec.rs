//! The two payload encodings a frame can carry, named by its header's version field.

/// Which payload encoding a frame (and, after its first frame, a connection) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// netconduit 5.0.0's MessagePack payloads; version `0x0100`.
    V1,
    /// conduit's native rkyv payloads, read in place; version `0x0200`.
    Native,
}

impl Codec {
    /// The header version number of this codec.
    pub const fn version(self) -> u16 {
        match self {
            Codec::V1 => 0x0100,
            Codec::Native => 0x0200,
        }
    }

    /// The codec a header version number names, if any.
    pub const fn from_version(version: u16) -> Option<Codec> {
        match version {
            0x0100 => Some(Codec::V1),
            0x0200 => Some(Codec::Native),
            _ => None,
        }
    }
}
