//! The writer: drains one connection's outbound queue into gathered writes — the one
//! way out to a socket for everything the core, the handlers and broadcasts queue.
//! Shared by server connections and the client.

use std::io;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::FutureExt;
use glommio::timer::sleep;

use super::io::{SharedStream, MAX_IOVECS};
use crate::core::outbound::{Outbound, KEEP_FRAMES};

/// Writes what `out` queues until it is closed and empty, then closes the write side.
/// Frames held by the queue's gate (the v1 post-login hold) wait for its release or its
/// deadline. Returns the socket error that ended it early, if any; the queue is then
/// cleared and closed.
pub(crate) async fn write_loop(
    out: &Outbound,
    stream: &SharedStream,
    max_batch_bytes: usize,
) -> io::Result<()> {
    // Grows with bursts, up to MAX_IOVECS entries; released again when idle.
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        if out.is_empty() {
            if out.is_closed() {
                break;
            }
            if batch.capacity() > KEEP_FRAMES {
                batch = Vec::new();
            }
            out.ready.wait().await;
            continue;
        }
        if let Some(until) = out.gated_until() {
            let now = Instant::now();
            if until > now && !out.is_closed() {
                // A push or the release wakes us to look again.
                sleep(until - now).or(out.ready.wait()).await;
                continue;
            }
            out.open_gate();
        }
        // Everything queued since the last wake-up (up to the batch limits) goes out in
        // one gathered write while the socket takes it.
        out.take_batch(&mut batch, MAX_IOVECS, max_batch_bytes);
        let written = stream.write_batch(&mut batch).await;
        out.finish_batch();
        if let Err(e) = written {
            batch.clear();
            out.clear();
            out.close();
            return Err(e);
        }
    }
    stream.shutdown_write().await;
    Ok(())
}
