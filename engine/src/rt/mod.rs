//! Runtime helpers for application tasks that live on a shard (timers, background
//! work), so applications need not depend on the executor directly — and, inside the
//! crate, the runtime backends: the thin glue that drives the connection core on an
//! executor (sockets, timers, spawning), one folder per backend.

pub(crate) mod glommio;

pub use crate::exec::{sleep, spawn};
