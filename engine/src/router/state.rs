//! `State<T>`: application state handed to handlers by type.

use std::sync::Arc;

/// Shared application state registered with [`Server::manage`](crate::Server::manage),
/// handed to handlers by type. Cheap to clone.
pub struct State<T>(pub(crate) Arc<T>);

impl<T> State<T> {
    /// Wraps `value` (for use outside a server, e.g. in tests).
    pub fn new(value: T) -> State<T> {
        State(Arc::new(value))
    }
}

impl<T> Clone for State<T> {
    fn clone(&self) -> State<T> {
        State(self.0.clone())
    }
}

impl<T> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for State<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
