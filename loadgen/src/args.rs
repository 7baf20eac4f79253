//! Command-line argument types shared by several subcommands (`cli` for the
//! scenarios and the suite, `attack`, `cluster`), so none of them needs another's
//! module.

use clap::ValueEnum;
use conduit::Runtime;
use conduit_protocol::Codec;

/// Which codec a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CodecArg {
    /// conduit's rkyv codec.
    Native,
    /// netconduit-v1 MessagePack.
    V1,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Native => Codec::Native,
            CodecArg::V1 => Codec::V1,
        }
    }
}

/// The runtime backend of our server (`serve`, and the server a scenario spawns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// glommio where io_uring works, else tokio (the engine's choice, reported).
    Auto,
    /// glommio (io_uring); fails to start where io_uring is refused.
    Glommio,
    /// tokio (epoll).
    Tokio,
}

impl From<RuntimeArg> for Runtime {
    fn from(r: RuntimeArg) -> Runtime {
        match r {
            RuntimeArg::Auto => Runtime::Auto,
            RuntimeArg::Glommio => Runtime::Glommio,
            RuntimeArg::Tokio => Runtime::Tokio,
        }
    }
}

/// Longest time any single flag may ask for, seconds.
pub const MAX_SECONDS_ARG: f64 = 600.0;
