//! What the core knows of the application's handlers: which names route somewhere, how
//! each RPC takes its arguments, and `listall`'s answer — enough to decide every frame's
//! fate without calling into the application.

use ahash::AHashMap;
use conduit_protocol::native::{self, ArchivedValueTree};
use conduit_protocol::{Value, ValueLimits, WireError};

use super::Args;

/// How an RPC method (or a message handler) takes its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgForm {
    /// A decoded [`Value`] map (`Server::rpc_with`, `RpcMethod::new`).
    Value,
    /// Native callers' archive read in place; netconduit-v1 callers still send a map
    /// (see `RpcMethod::archived`).
    InPlace,
    /// Typed arguments taken from where they arrived (see `RpcMethod::typed`): a
    /// native caller's value tree is checked against the value limits and handed over
    /// in place ([`Args::Tree`](super::Args::Tree)); a v1 caller's map is decoded.
    Typed,
}

/// The routes of one server, frozen while it runs.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Registered RPC methods, with their slot (registration order) in the shards'
    /// per-method counters.
    rpcs: AHashMap<String, (ArgForm, u32)>,
    /// Message types with at least one handler, and how they take their data.
    messages: AHashMap<String, ArgForm>,
    /// The built-in `listall` answer, computed once at start.
    listall: Value,
}

/// The name of the built-in method listing every RPC method.
pub const LISTALL: &str = "listall";

impl RouteTable {
    /// A table of `rpcs`, `messages` (decoded data) and the `listall` answer.
    pub fn new(
        rpcs: impl IntoIterator<Item = (String, ArgForm)>,
        messages: impl IntoIterator<Item = String>,
        listall: Value,
    ) -> RouteTable {
        RouteTable::with_message_forms(
            rpcs,
            messages.into_iter().map(|m| (m, ArgForm::Value)),
            listall,
        )
    }

    /// A table whose message types say how they take their data (in place for
    /// handlers of archived data). RPC methods are counted in the order given.
    pub fn with_message_forms(
        rpcs: impl IntoIterator<Item = (String, ArgForm)>,
        messages: impl IntoIterator<Item = (String, ArgForm)>,
        listall: Value,
    ) -> RouteTable {
        RouteTable {
            rpcs: rpcs
                .into_iter()
                .enumerate()
                .map(|(slot, (name, form))| (name, (form, slot as u32)))
                .collect(),
            messages: messages.into_iter().collect(),
            listall,
        }
    }

    /// How `method` takes its arguments and where it is counted, if it is registered.
    pub fn rpc_slot(&self, method: &str) -> Option<(ArgForm, u32)> {
        self.rpcs.get(method).copied()
    }

    /// How messages of type `name` take their data, if they have a handler.
    pub fn message(&self, name: &str) -> Option<ArgForm> {
        self.messages.get(name).copied()
    }

    /// The `listall` answer.
    pub fn listall(&self) -> &Value {
        &self.listall
    }
}

/// A native call's arguments as `form` takes them (not [`ArgForm::InPlace`], whose
/// archive goes to its handler as it is): a value tree validated, then checked
/// against `limits` and lent ([`ArgForm::Typed`]) or decoded into a [`Value`].
pub(super) fn native_args(
    bytes: &[u8],
    form: ArgForm,
    limits: ValueLimits,
) -> Result<Args<'_>, WireError> {
    let tree = native::access::<ArchivedValueTree>(bytes)?;
    if form == ArgForm::Typed {
        tree.check(limits)?;
        Ok(Args::Tree(tree))
    } else {
        Ok(Args::Value(tree.to_value(limits)?))
    }
}
