//! What the core tells the glue ([`Event`]) and what the glue hands back
//! ([`Outcome`]): the vocabulary between a connection's decisions and the handlers
//! the glue runs for it.

use std::borrow::Cow;

use conduit_protocol::native::ArchivedValueTree;
use conduit_protocol::{Codec, Value};

use std::sync::Arc;

use super::Close;
use crate::tokens::TokenClaims;

/// Identifies one handler call of one connection, for [`ConnCore::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallId(pub(super) u64);

/// What kind of handler a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// An RPC method; its result goes back as RPC_RESPONSE / RPC_ERROR.
    Rpc,
    /// A message handler; a reply goes back as `<type>_response`.
    Message,
}

/// A call's arguments, as the handler will take them.
#[derive(Debug)]
pub enum Args<'a> {
    /// Decoded.
    Value(Value),
    /// A native archive still in the receive buffer, 8-byte aligned (in-place methods).
    Native(&'a [u8]),
    /// A native value tree still in the receive buffer, validated and checked against
    /// the value limits (typed methods).
    Tree(&'a ArchivedValueTree),
}

/// A handler to run.
#[derive(Debug)]
pub struct Call<'a> {
    /// Pass back to [`ConnCore::complete`] with the result.
    pub id: CallId,
    /// Which kind of handler.
    pub kind: CallKind,
    /// The method or message type; known to route (see [`RouteTable`]).
    pub route: Cow<'a, str>,
    /// The arguments.
    pub args: Args<'a>,
    /// For an RPC, the method's slot in the shard's per-method counters (its
    /// registration order); 0 for a message.
    pub slot: u32,
}

impl<'a> Call<'a> {
    /// The call without borrows of the receive buffer, so the glue may read on while
    /// the handler runs. Arguments still in the buffer (in-place and typed methods:
    /// their arguments are taken synchronously, before the buffer is touched again)
    /// cannot be owned: the call comes back as it was.
    pub fn into_owned(self) -> Result<Call<'static>, Call<'a>> {
        match self {
            Call {
                id,
                kind,
                route,
                args: Args::Value(v),
                slot,
            } => Ok(Call {
                id,
                kind,
                route: Cow::Owned(route.into_owned()),
                args: Args::Value(v),
                slot,
            }),
            other => Err(other),
        }
    }
}

/// What happened, for the glue to act on.
#[derive(Debug)]
pub enum Event<'a> {
    /// The core handled a frame itself (a ping, a handshake step, `listall`, an
    /// unknown method, an ignored frame); poll again.
    Handled,
    /// The peer logged in (AUTH_SUCCESS is queued): register it and run the connect
    /// hooks.
    Authenticated {
        /// The codec it speaks.
        codec: Codec,
        /// Its self-reported name, if any.
        client_name: Option<String>,
        /// The verified token, for a token login.
        token: Option<Arc<TokenClaims>>,
    },
    /// A logged-in peer refreshed its token (AUTH_SUCCESS is queued).
    TokenRefreshed(Arc<TokenClaims>),
    /// Run a handler, then report its result with [`ConnCore::complete`].
    Call(Call<'a>),
    /// Close the connection as described.
    Close(Close),
}

/// An RPC failure as the wire carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// netconduit's code.
    pub code: i64,
    /// The full message (already prefixed `Error in <method>: ` where that applies).
    pub message: String,
    /// Structured details.
    pub details: Option<Value>,
}

/// A handler's result.
#[derive(Debug)]
pub enum Outcome {
    /// An RPC method returned.
    Rpc(Result<Value, Failure>),
    /// A message handler returned; `Some` is sent back as `<type>_response`.
    Message(Option<Value>),
}

/// Counters of what the core refused to act on, for the glue to export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Results for calls the core does not know (stale or forged ids, or the
    /// connection closed first); dropped.
    pub stale_results: u64,
    /// Frames the core could not queue (closing, or dropped by the slow-consumer
    /// policy) or could not encode.
    pub frames_not_sent: u64,
    /// Messages whose type no handler takes; ignored as netconduit does.
    pub unrouted_messages: u64,
    /// Frames over the inbound rate limits (refused or dropped).
    pub rate_limited: u64,
}
