//! One call as a handler sees it: who called ([`RpcCall`]), with which arguments
//! where they arrived ([`Params`]), and how it fails ([`RpcError`]).

use std::sync::Arc;

use conduit_protocol::native::ArchivedValueTree;
use conduit_protocol::v1::codes;
use conduit_protocol::Value;

use crate::router::{Connection, Router};

/// An RPC failure as the client sees it: a code and a message (netconduit's codes: 4000
/// unknown method, 2000 validation, 1001 any other failure), with optional details.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// netconduit error code.
    pub code: i64,
    /// Human-readable text.
    pub message: String,
    /// Structured details (e.g. every validation violation).
    pub details: Option<Value>,
    /// Whether the dispatcher prefixes the message with `Error in <method>: `, as
    /// netconduit does for exceptions raised by a handler.
    pub(crate) in_method: bool,
}

impl RpcError {
    /// An error sent exactly as given.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            details: None,
            in_method: false,
        }
    }

    /// A handler failure (code 1001); the client sees `Error in <method>: <message>`.
    pub fn failed(message: impl std::fmt::Display) -> RpcError {
        RpcError {
            code: codes::INTERNAL,
            message: message.to_string(),
            details: None,
            in_method: true,
        }
    }

    /// An argument problem (code 2000).
    pub fn validation(message: impl Into<String>, details: Option<Value>) -> RpcError {
        RpcError {
            code: codes::VALIDATION,
            message: message.into(),
            details,
            in_method: false,
        }
    }

    /// Attaches details.
    pub fn with_details(mut self, details: Value) -> RpcError {
        self.details = Some(details);
        self
    }

    /// The text the client receives for a call to `method`.
    pub fn wire_message(&self, method: &str) -> String {
        if self.in_method {
            format!("Error in {method}: {}", self.message)
        } else {
            self.message.clone()
        }
    }
}

impl From<&str> for RpcError {
    fn from(s: &str) -> RpcError {
        RpcError::failed(s)
    }
}

impl From<String> for RpcError {
    fn from(s: String) -> RpcError {
        RpcError::failed(s)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// The caller's side of an RPC: who called, and with what.
#[derive(Clone, Debug)]
pub struct RpcCall {
    /// The calling connection.
    pub connection: Connection,
    /// The method called.
    pub method: String,
    /// The arguments (a map of name to value).
    pub params: Value,
}

impl RpcCall {
    /// A call with no client behind it: for unit tests of handlers and in-process
    /// benchmarks. Its connection reports itself as not connected, and sends to it fail.
    pub fn standalone(server: &Router, method: impl Into<String>, params: Value) -> RpcCall {
        let meta = crate::router::ConnMeta::new(
            crate::id::ConnectionId::from_u64(0),
            std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        );
        meta.set_closed();
        RpcCall {
            connection: Connection {
                meta: Arc::new(meta),
                router: server.clone(),
            },
            method: method.into(),
            params,
        }
    }

    /// The server.
    pub fn server(&self) -> &Router {
        self.connection.server()
    }
}

/// The arguments of one call as they arrived, for an `#[rpc]` method to take: a
/// native caller's argument tree still in the receive buffer, or a decoded map (a
/// netconduit-v1 caller, or a direct [`RpcMethod::call`](crate::RpcMethod::call)).
/// Typed arguments are read from either without a [`Value`] built in between.
pub struct Params<'a> {
    /// The calling connection (moved in: the glue's handle for this call).
    connection: Connection,
    /// The registered name of the method.
    pub(crate) method: &'a str,
    /// Where the arguments are.
    pub(crate) source: Source<'a>,
}

/// Where a call's arguments are.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Value(&'a Value),
    /// A tree the connection core checked against its value limits.
    Tree(&'a ArchivedValueTree),
}

impl<'a> Params<'a> {
    /// The arguments of `call`.
    pub fn of_call(call: &'a RpcCall) -> Params<'a> {
        Params {
            connection: call.connection.clone(),
            method: &call.method,
            source: Source::Value(&call.params),
        }
    }

    /// Decoded arguments of a call to `method` from `connection`.
    pub(crate) fn decoded(connection: Connection, method: &'a str, params: &'a Value) -> Self {
        Params {
            connection,
            method,
            source: Source::Value(params),
        }
    }

    /// A native caller's arguments, read in place; `tree` was checked by the core.
    pub(crate) fn in_place(
        connection: Connection,
        method: &'a str,
        tree: &'a ArchivedValueTree,
    ) -> Self {
        Params {
            connection,
            method,
            source: Source::Tree(tree),
        }
    }

    /// The calling connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The method called.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The server.
    pub fn server(&self) -> &crate::Router {
        self.connection.server()
    }

    /// The whole call, its arguments decoded into a [`Value`] map (for a method that
    /// takes the [`RpcCall`] itself).
    pub fn to_call(&self) -> Result<RpcCall, RpcError> {
        let params = match self.source {
            Source::Value(v) => v.clone(),
            Source::Tree(tree) => tree
                // Checked against the server's limits by the connection core.
                .to_value(conduit_protocol::ValueLimits {
                    max_depth: usize::MAX,
                    max_values: usize::MAX,
                })
                .map_err(|e| RpcError::failed(format!("cannot decode the arguments: {e}")))?,
        };
        Ok(RpcCall {
            connection: self.connection.clone(),
            method: self.method.to_owned(),
            params,
        })
    }
}

/// A started `#[rpc]` method: its body's future, arguments already taken.
pub type Started = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>>>>;

/// The answer to a call whose arguments reached a handler that does not take them in
/// that form — never expected: the route table and the registry come from the same
/// registration.
pub(crate) fn undecoded() -> RpcError {
    RpcError::failed("arguments arrived undecoded")
}
