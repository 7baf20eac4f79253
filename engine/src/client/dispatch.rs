//! What a frame received after login does: a PING is answered, an answer goes to the
//! call waiting for it, a pushed message goes to the user's handlers, a CLOSE ends the
//! connection.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use ahash::AHashMap;
use conduit_protocol::{FrameKind, Value};

use super::loops::Conn;
use super::proto::Inbound;
use super::shared::Inner;
use super::{ClientError, DisconnectReason};

/// A handler for one message type.
pub(super) type MessageHandler = Rc<dyn Fn(Value)>;
/// A handler for messages that have no handler of their own.
pub(super) type AnyHandler = Rc<dyn Fn(&str, Value)>;

/// The user's handlers for messages the server pushes.
#[derive(Default)]
pub(super) struct Handlers {
    /// Handlers by message type, in registration order.
    by_name: AHashMap<String, Vec<MessageHandler>>,
    /// Catch-alls for message types without a handler, in registration order.
    any: Vec<AnyHandler>,
}

impl Handlers {
    /// Adds a handler for messages of type `name`.
    pub fn on(&mut self, name: &str, handler: MessageHandler) {
        self.by_name
            .entry(name.to_owned())
            .or_default()
            .push(handler);
    }

    /// Adds a catch-all.
    pub fn on_any(&mut self, handler: AnyHandler) {
        self.any.push(handler);
    }
}

/// Acts on one frame received after login; `Some` ends the connection.
pub(super) fn on_inbound(inner: &Inner, conn: &Conn, inbound: Inbound) -> Option<DisconnectReason> {
    match inbound {
        Inbound::Ping => {
            conn.push_control(FrameKind::Pong);
        }
        Inbound::Pong | Inbound::Ignore => {}
        Inbound::Goodbye(reason) => return Some(DisconnectReason::ServerSaidGoodbye(reason)),
        Inbound::Reply { corr, result } => {
            let slot = inner.pending.borrow_mut().complete_rpc(corr);
            match slot {
                Some(slot) => slot.fill(result.map_err(ClientError::from)),
                None => tracing::debug!(corr, "RPC answer nobody waits for (late?); dropped"),
            }
        }
        Inbound::Message { name, data, corr } => {
            let slot = inner.pending.borrow_mut().complete_response(&name, corr);
            match slot {
                Some(slot) => slot.fill(Ok(data)),
                None => dispatch(inner, &name, data),
            }
        }
    }
    None
}

/// Runs the handlers of a pushed message (a handler's panic is contained). The handlers
/// are copied out first, so a handler may register more.
fn dispatch(inner: &Inner, name: &str, data: Value) {
    let handlers: Vec<MessageHandler> = inner
        .handlers
        .borrow()
        .by_name
        .get(name)
        .cloned()
        .unwrap_or_default();
    let contain = |r: std::thread::Result<()>| {
        if r.is_err() {
            tracing::error!(name, "a client message handler panicked");
        }
    };
    if handlers.is_empty() {
        let any: Vec<AnyHandler> = inner.handlers.borrow().any.clone();
        if any.is_empty() {
            tracing::debug!(name, "no handler for message type; dropped");
        }
        for h in any {
            let d = data.clone();
            contain(std::panic::catch_unwind(AssertUnwindSafe(|| h(name, d))));
        }
        return;
    }
    let last = handlers.len() - 1;
    let mut data = Some(data);
    for (i, h) in handlers.iter().enumerate() {
        let arg = if i == last {
            data.take().unwrap_or_default()
        } else {
            data.clone().unwrap_or_default()
        };
        contain(std::panic::catch_unwind(AssertUnwindSafe(|| h(arg))));
    }
}
