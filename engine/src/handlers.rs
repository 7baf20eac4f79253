//! What the application registers: RPC methods, message handlers and lifecycle hooks.
//!
//! Handlers are registered once (`Fn + Send + Sync + 'static`) and run on every shard;
//! the futures they return run on the shard that owns the connection and need not be
//! `Send`.

use std::future::Future;
use std::sync::Arc;

use ahash::AHashMap;
use conduit_protocol::Value;

pub use crate::call::{RpcCall, RpcError};
use crate::router::Connection;
pub use crate::rt::exec::LocalBoxFuture;

/// What a message handler may return: `()` for no reply, or a value sent back to the
/// sender as `<type>_response`.
pub trait IntoReply {
    /// The reply, if any.
    fn into_reply(self) -> Option<Value>;
}

impl IntoReply for () {
    fn into_reply(self) -> Option<Value> {
        None
    }
}

impl IntoReply for Value {
    fn into_reply(self) -> Option<Value> {
        Some(self)
    }
}

impl<T: Into<Value>> IntoReply for Option<T> {
    fn into_reply(self) -> Option<Value> {
        self.map(Into::into)
    }
}

/// A typed reply: any `Serialize` value of yours, sent back as `<type>_response`
/// (`return Reply(Score { .. })` from an `on` handler). One whose `Serialize` fails is
/// logged and not sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T>(pub T);

impl<T: serde::Serialize + 'static> IntoReply for Reply<T> {
    fn into_reply(self) -> Option<Value> {
        match crate::convert::into_value(self.0) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!("reply not sent: its data does not serialize: {e}");
                None
            }
        }
    }
}

/// What the sender of a typed message gets when its data does not fit the handler's
/// type or breaks its `garde` rules: a message `<type>_error` whose data has the same
/// shape as a failed RPC's error — `{code: 2000, error, details: {errors: [{field,
/// message, type}]}}` (a message has no correlation id to answer with a failure).
pub(crate) fn message_error_value(e: &RpcError, name: &str) -> Value {
    Value::map()
        .with("code", e.code)
        .with("error", e.wire_message(name))
        .with("details", e.details.clone().unwrap_or(Value::Nil))
}

/// One parameter of an RPC method, as `listall` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Parameter name.
    pub name: String,
    /// Type name in netconduit's (Python's) spelling: `int`, `str`, `float`, `bool`,
    /// `dict`, `list`, …
    pub type_name: String,
    /// Whether the caller must pass it.
    pub required: bool,
    /// Its default when optional.
    pub default: Option<Value>,
}

/// How `listall` describes an RPC method.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RpcInfo {
    /// Method name.
    pub name: String,
    /// Its documentation.
    pub description: String,
    /// Its parameters, in order.
    pub params: Vec<ParamInfo>,
    /// Return type name (`Any` when unknown).
    pub return_type: String,
}

impl RpcInfo {
    /// A method named `name`, no parameters, return type `Any`.
    pub fn new(name: impl Into<String>) -> RpcInfo {
        RpcInfo {
            name: name.into(),
            description: String::new(),
            params: Vec::new(),
            return_type: "Any".into(),
        }
    }

    /// Sets the description.
    pub fn doc(mut self, text: impl Into<String>) -> RpcInfo {
        self.description = text.into();
        self
    }

    /// Adds a required parameter.
    pub fn param(mut self, name: impl Into<String>, type_name: impl Into<String>) -> RpcInfo {
        self.params.push(ParamInfo {
            name: name.into(),
            type_name: type_name.into(),
            required: true,
            default: None,
        });
        self
    }

    /// Adds an optional parameter with its default.
    pub fn optional(
        mut self,
        name: impl Into<String>,
        type_name: impl Into<String>,
        default: impl Into<Value>,
    ) -> RpcInfo {
        self.params.push(ParamInfo {
            name: name.into(),
            type_name: type_name.into(),
            required: false,
            default: Some(default.into()),
        });
        self
    }

    /// Records that every parameter is one struct's fields (`#[flatten]` /
    /// `#[validate]`); `listall` shows it as one parameter named `params`.
    pub fn flattened(mut self, type_name: impl Into<String>) -> RpcInfo {
        self.params.push(ParamInfo {
            name: "params".into(),
            type_name: type_name.into(),
            required: true,
            default: None,
        });
        self
    }

    /// Sets the return type name.
    pub fn returns(mut self, type_name: impl Into<String>) -> RpcInfo {
        self.return_type = type_name.into();
        self
    }
}

pub(crate) type MessageFn =
    Arc<dyn Fn(Connection, Value) -> LocalBoxFuture<Option<Value>> + Send + Sync>;
pub(crate) type RpcFn =
    Arc<dyn Fn(RpcCall) -> LocalBoxFuture<Result<Value, RpcError>> + Send + Sync>;
/// A startup or shutdown hook, already bound to its server.
pub(crate) type LifecycleHook = Arc<dyn Fn() -> LocalBoxFuture<()> + Send + Sync>;
pub(crate) type ConnHook = Arc<dyn Fn(Connection) -> LocalBoxFuture<()> + Send + Sync>;

/// An RPC method ready to register: what `listall` says of it, and how to call it.
/// `#[rpc]` functions return one; [`RpcMethod::new`] builds one by hand.
#[derive(Clone)]
pub struct RpcMethod {
    pub(crate) info: RpcInfo,
    pub(crate) call: RpcFn,
    /// Set for methods that read native arguments in place (see
    /// [`RpcMethod::archived`]); `call` then serves only direct calls.
    pub(crate) archived: Option<ArchivedFn>,
    /// Set for methods that take typed arguments (see [`RpcMethod::typed`]): started
    /// from the arguments where they arrived, native ones still in the receive
    /// buffer; `call` then serves only direct calls.
    pub(crate) typed: Option<TypedFn>,
}

/// Starts a typed method: takes its arguments from the [`Params`](crate::call::Params)
/// and returns its body's future, or the validation error.
pub(crate) type TypedFn = Arc<
    dyn for<'a> Fn(crate::call::Params<'a>) -> Result<crate::call::Started, RpcError> + Send + Sync,
>;

/// The arguments of a call to an archived method, as they arrived.
pub(crate) enum RawArgs<'a> {
    /// A native archive in the receive buffer.
    Native(&'a [u8]),
    /// Already decoded (netconduit-v1 callers).
    Value(Value),
}

pub(crate) type ArchivedFn =
    Arc<dyn for<'a> Fn(&RpcCall, RawArgs<'a>) -> Result<Value, RpcError> + Send + Sync>;

impl RpcMethod {
    /// A method described by `info` and run by `handler`.
    pub fn new<F, Fut>(info: RpcInfo, handler: F) -> RpcMethod
    where
        F: Fn(RpcCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, RpcError>> + 'static,
    {
        RpcMethod {
            info,
            call: Arc::new(move |c| Box::pin(handler(c))),
            archived: None,
            typed: None,
        }
    }

    /// A method whose typed arguments are taken from the call's
    /// [`Params`](crate::call::Params) where they arrived — a native caller's straight
    /// from the receive buffer, with no [`Value`] built — before its body starts:
    /// `start` takes them (through [`Args`](crate::args::Args)) and returns the body's
    /// future, or the call's validation error. What `#[rpc]` functions expand to.
    pub fn typed<F>(info: RpcInfo, start: F) -> RpcMethod
    where
        F: for<'a> Fn(crate::call::Params<'a>) -> Result<crate::call::Started, RpcError>
            + Send
            + Sync
            + 'static,
    {
        let start: TypedFn = Arc::new(start);
        let direct = start.clone();
        RpcMethod {
            info,
            call: Arc::new(
                move |c: RpcCall| match direct(crate::call::Params::of_call(&c)) {
                    Ok(body) => body,
                    Err(e) => Box::pin(async move { Err(e) }),
                },
            ),
            archived: None,
            typed: Some(start),
        }
    }

    /// A method whose native callers' arguments are read **in place**: `handler` gets
    /// the archived form `&A::Archived` straight from the receive buffer, validated but
    /// not copied or deserialized. Prefer it for large or hot requests from Rust
    /// clients (bulk state updates, game ticks) where decoding would dominate; the
    /// handler is synchronous because it borrows the receive buffer, so copy out what
    /// you need to keep. netconduit-v1 callers still work: their map is deserialized
    /// into `A` and archived once for the call.
    pub fn archived<A, F, R, E>(info: RpcInfo, handler: F) -> RpcMethod
    where
        A: serde::de::DeserializeOwned
            + rkyv::Archive
            + for<'b> rkyv::Serialize<
                rkyv::api::high::HighSerializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'b>,
                    rkyv::rancor::Error,
                >,
            >,
        A::Archived: conduit_protocol::native::NativeArchived,
        F: Fn(&RpcCall, &A::Archived) -> Result<R, E> + Send + Sync + 'static,
        R: serde::Serialize,
        E: Into<RpcError>,
    {
        let handler = Arc::new(handler);
        let method = info.name.clone();
        let bad_args = move |why: String| {
            RpcError::validation(
                format!("Validation error in {method}: {why}"),
                Some(Value::map().with(
                    "errors",
                    Value::Array(vec![Value::map()
                        .with("field", "params")
                        .with("message", why)
                        .with("type", "value_error")]),
                )),
            )
        };
        let run = {
            let handler = handler.clone();
            move |call: &RpcCall, raw: RawArgs<'_>| -> Result<Value, RpcError> {
                let out = match raw {
                    RawArgs::Native(bytes) => {
                        let archived = conduit_protocol::native::access::<A::Archived>(bytes)
                            .map_err(|e| bad_args(e.to_string()))?;
                        handler(call, archived)
                    }
                    RawArgs::Value(v) => {
                        let a: A = crate::convert::from_value(v).map_err(&bad_args)?;
                        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&a)
                            .map_err(|e| RpcError::failed(e.to_string()))?;
                        let archived = conduit_protocol::native::access::<A::Archived>(&bytes)
                            .map_err(|e| RpcError::failed(e.to_string()))?;
                        handler(call, archived)
                    }
                };
                let out = out.map_err(Into::into)?;
                crate::convert::to_value(&out)
                    .map_err(|e| RpcError::failed(format!("cannot encode the result: {e}")))
            }
        };
        let run: ArchivedFn = Arc::new(run);
        let direct = run.clone();
        RpcMethod {
            info,
            call: Arc::new(move |c: RpcCall| {
                let params = c.params.clone();
                let r = direct(&c, RawArgs::Value(params));
                Box::pin(async move { r })
            }),
            archived: Some(run),
            typed: None,
        }
    }

    /// What `listall` says of it.
    pub fn info(&self) -> &RpcInfo {
        &self.info
    }

    /// Runs an [`archived`](Self::archived) method on a native argument archive read in
    /// place (what the dispatcher does for native callers, minus the wire). Other
    /// methods answer with a validation error.
    pub fn call_archived(&self, call: &RpcCall, archive: &[u8]) -> Result<Value, RpcError> {
        match &self.archived {
            Some(f) => f(call, RawArgs::Native(archive)),
            None => Err(RpcError::validation(
                format!("{} does not take archived arguments", self.info.name),
                None,
            )),
        }
    }

    /// Runs the method for `call` (what the dispatcher does, minus the wire).
    pub fn call(&self, call: RpcCall) -> LocalBoxFuture<Result<Value, RpcError>> {
        (self.call)(call)
    }
}

impl std::fmt::Debug for RpcMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMethod")
            .field("info", &self.info)
            .finish()
    }
}

/// Anything [`Server::rpc`](crate::Server::rpc) accepts: an [`RpcMethod`], or an
/// `#[rpc]` function itself.
pub trait IntoRpcMethod {
    /// The method.
    fn into_rpc_method(self) -> RpcMethod;
}

impl IntoRpcMethod for RpcMethod {
    fn into_rpc_method(self) -> RpcMethod {
        self
    }
}

impl<F: FnOnce() -> RpcMethod> IntoRpcMethod for F {
    fn into_rpc_method(self) -> RpcMethod {
        self()
    }
}

/// A registered RPC method.
pub(crate) type RpcEntry = RpcMethod;

/// Everything registered on a server. Frozen (shared read-only) while it runs.
#[derive(Default, Clone)]
pub(crate) struct Registry {
    pub messages: AHashMap<String, Vec<MessageFn>>,
    /// Message types whose handler reads native data in place (`on_message` of an
    /// [`RpcMethod::archived`]); v1 senders go through `messages` as usual.
    pub archived_messages: AHashMap<String, ArchivedFn>,
    pub rpcs: AHashMap<String, RpcEntry>,
    /// Registration order, for `listall`.
    pub rpc_order: Vec<String>,
    /// The methods in route-table slot order, filled by [`freeze`](Self::freeze): a
    /// call finds its handler by the slot its route lookup gave, without hashing its
    /// name a second time.
    pub by_slot: Vec<RpcEntry>,
    pub on_startup: Vec<LifecycleHook>,
    pub on_shutdown: Vec<LifecycleHook>,
    pub on_connect: Vec<ConnHook>,
    pub on_disconnect: Vec<ConnHook>,
}

impl Registry {
    /// `listall`'s data in netconduit's shape: `{methods: [{name, description,
    /// parameters, return_type, requires_auth}], count}`, in registration order.
    pub fn listall(&self) -> Value {
        let methods: Vec<Value> = self
            .rpc_order
            .iter()
            .filter_map(|name| self.rpcs.get(name))
            .map(|e| {
                let params = Value::Map(
                    e.info
                        .params
                        .iter()
                        .map(|p| (p.name.clone(), Value::from(p.type_name.as_str())))
                        .collect(),
                );
                let detail: Vec<Value> = e
                    .info
                    .params
                    .iter()
                    .map(|p| {
                        Value::map()
                            .with("name", p.name.as_str())
                            .with("type", p.type_name.as_str())
                            .with("required", p.required)
                            .with("default", p.default.clone().unwrap_or(Value::Nil))
                    })
                    .collect();
                Value::map()
                    .with("name", e.info.name.as_str())
                    .with("description", e.info.description.as_str())
                    .with("parameters", params)
                    .with("return_type", e.info.return_type.as_str())
                    .with("requires_auth", true)
                    .with("params", Value::Array(detail))
            })
            .collect();
        let count = methods.len();
        Value::map()
            .with("methods", Value::Array(methods))
            .with("count", count)
    }
}

impl Registry {
    /// Fixes the slot order (see [`by_slot`](Self::by_slot)) once registration ends;
    /// a registry changed after this is frozen again (a replaced method would else be
    /// found by slot as it was).
    pub fn freeze(&mut self) {
        self.by_slot = self
            .rpc_order
            .iter()
            .filter_map(|name| self.rpcs.get(name))
            .cloned()
            .collect();
    }

    /// The RPC method `name`, found through its route-table `slot` when the registry
    /// is frozen and the slot holds it, else by name.
    pub fn rpc_at(&self, slot: u32, name: &str) -> Option<&RpcEntry> {
        match self.by_slot.get(slot as usize) {
            Some(entry) if entry.info.name == name => Some(entry),
            _ => self.rpcs.get(name),
        }
    }

    /// What the connection core needs to know of these handlers.
    pub fn route_table(&self) -> crate::core::RouteTable {
        use crate::core::ArgForm;
        let form = |in_place: bool| {
            if in_place {
                ArgForm::InPlace
            } else {
                ArgForm::Value
            }
        };
        let method_form = |m: &RpcMethod| match (&m.archived, &m.typed) {
            (Some(_), _) => ArgForm::InPlace,
            (None, Some(_)) => ArgForm::Typed,
            (None, None) => ArgForm::Value,
        };
        crate::core::RouteTable::with_message_forms(
            // In registration order: a method's position is its counters' slot.
            self.rpc_order
                .iter()
                .filter_map(|name| self.rpcs.get(name).map(|m| (name, m)))
                .map(|(name, m)| (name.clone(), method_form(m))),
            self.messages.keys().map(|name| {
                // `start` refuses a type read in place with other handlers.
                let in_place = self.archived_messages.contains_key(name);
                (name.clone(), form(in_place))
            }),
            self.listall(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_registry_finds_methods_by_their_route_slot_and_by_name_otherwise() {
        let mut r = Registry::default();
        for name in ["add", "echo"] {
            let m = RpcMethod::new(RpcInfo::new(name), |_| async { Ok(Value::Nil) });
            r.rpcs.insert(name.to_owned(), m);
            r.rpc_order.push(name.to_owned());
        }
        // Not frozen yet: by name.
        assert_eq!(
            r.rpc_at(0, "echo").map(|m| m.info.name.as_str()),
            Some("echo")
        );
        r.freeze();
        let table = r.route_table();
        for name in ["add", "echo"] {
            let (_, slot) = table.rpc_slot(name).unwrap();
            assert_eq!(
                r.rpc_at(slot, name).map(|m| m.info.name.as_str()),
                Some(name)
            );
        }
        // A slot that holds another method, or none: found by name all the same.
        assert_eq!(
            r.rpc_at(0, "echo").map(|m| m.info.name.as_str()),
            Some("echo")
        );
        assert_eq!(
            r.rpc_at(9, "add").map(|m| m.info.name.as_str()),
            Some("add")
        );
        assert!(r.rpc_at(0, "nope").is_none());
    }
}
