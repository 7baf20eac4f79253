//! The writer: drains one connection's outbound queue into gathered writes — the one
//! way out to a socket for everything the core, the handlers and broadcasts queue.
//! Shared by server connections and the client.

use std::io;
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures_lite::FutureExt;

use super::exec::sleep;
use super::net::{SharedStream, MAX_IOVECS};
use super::tls::TlsLayer;
use crate::core::outbound::{Outbound, KEEP_FRAMES};
use crate::metrics::ShardMetrics;

/// Writes what `out` queues until it is closed and empty, then closes the write side.
/// Frames held by the queue's gate (the v1 post-login hold) wait for its release or its
/// deadline. Returns the socket error that ended it early, if any; the queue is then
/// cleared and closed.
///
/// With `websocket`, every protocol frame goes out in a binary WebSocket message (its
/// header added here, per connection: the frame itself may be shared with TCP peers),
/// and WebSocket control frames the transport queued go out as they are.
///
/// With `tls`, what would have been written is encrypted first and the records are
/// written (one write per batch); records the TLS layer has of its own (the reader
/// notifies `out.ready` for them) go out too, and a close_notify ends the stream.
///
/// Protocol frames written, and their bytes (before WebSocket or TLS framing), are
/// added to `tally` when given (a server connection's shard counters).
///
/// `before_write` runs before each write: a shard hands over what it queued for the
/// other shards (so a reply does not overtake a broadcast sent before it).
pub(crate) async fn write_loop(
    out: &Outbound,
    stream: &SharedStream,
    max_batch_bytes: usize,
    websocket: bool,
    tls: Option<&TlsLayer>,
    tally: Option<&ShardMetrics>,
    before_write: fn(),
) -> io::Result<()> {
    // Grows with bursts, up to MAX_IOVECS entries; released again when idle.
    let mut batch: Vec<Bytes> = Vec::new();
    // TLS records to write; likewise released when idle.
    let mut records: Vec<u8> = Vec::new();
    let result = loop {
        if let Some(tls) = tls.filter(|t| t.wants_write()) {
            // The TLS layer's own records (answers to what the reader took in).
            let sent = match tls.take_records(&mut records) {
                Ok(()) => stream.write_all(&records).await,
                Err(e) => Err(e),
            };
            records.clear();
            if let Err(e) = sent {
                break Err(e);
            }
            continue;
        }
        if out.is_empty() {
            if out.is_closed() {
                break Ok(());
            }
            if batch.capacity() > KEEP_FRAMES {
                batch = Vec::new();
            }
            if records.capacity() > KEEP_RECORD_BYTES {
                records = Vec::new();
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
        before_write();
        // A lone frame (a reply, one broadcast) is written as it is; everything else
        // queued since the last wake-up (up to the batch limits) goes out in one
        // gathered write while the socket takes it.
        let written = if websocket || tls.is_some() {
            let mut framed = if websocket {
                // Headers interleaved: half the iovecs each.
                out.take_batch(&mut batch, MAX_IOVECS / 2, max_batch_bytes);
                count(tally, &batch);
                let headers = crate::ws::frame::headers_for(&batch);
                let mut framed: Vec<Bytes> = Vec::with_capacity(batch.len() * 2);
                for (h, f) in headers.into_iter().zip(batch.drain(..)) {
                    if !h.is_empty() {
                        framed.push(h);
                    }
                    framed.push(f);
                }
                framed
            } else {
                out.take_batch(&mut batch, MAX_IOVECS, max_batch_bytes);
                count(tally, &batch);
                std::mem::take(&mut batch)
            };
            let written = match tls {
                Some(tls) => {
                    let sealed = tls.seal(&framed, &mut records);
                    framed.clear();
                    let written = match sealed {
                        Ok(()) => stream.write_all(&records).await,
                        Err(e) => Err(e),
                    };
                    records.clear();
                    written
                }
                None => stream.write_batch(&mut framed).await,
            };
            if !websocket {
                // The batch's room, kept for the next one.
                framed.clear();
                batch = framed;
            }
            written
        } else {
            match out.take_single() {
                Some(frame) => {
                    count(tally, std::slice::from_ref(&frame));
                    stream.write_frame(frame).await
                }
                None => {
                    out.take_batch(&mut batch, MAX_IOVECS, max_batch_bytes);
                    count(tally, &batch);
                    stream.write_batch(&mut batch).await
                }
            }
        };
        out.finish_batch();
        if let Err(e) = written {
            break Err(e);
        }
    };
    if let Err(e) = result {
        batch.clear();
        out.clear();
        out.close();
        return Err(e);
    }
    if let Some(tls) = tls {
        tls.close_notify();
        if tls.take_records(&mut records).is_ok() {
            let _ = stream.write_all(&records).await;
        }
    }
    stream.shutdown_write().await;
    Ok(())
}

/// Writes what `out` holds now, without waiting: the plain-TCP path of
/// [`write_loop`], run by the connection's reader right after it acted on what it read,
/// so a reply goes out in the reader's turn instead of in a wake-up of the writer
/// task. Only when the writer holds no batch (so nothing can overtake what it is
/// writing) and no gate holds the head of the queue. What the socket does not take goes
/// back to the head of the queue for the writer; so does everything on an error, which
/// the writer then meets itself and handles as always. `batch` is scratch room, left
/// empty. `before_write` as in [`write_loop`].
///
/// What it sends is added to `tally` like the writer's: a frame that went out whole
/// counts here; one that went out in part counts its sent bytes here and, as a frame,
/// when the writer finishes it.
pub(crate) fn write_now(
    out: &Outbound,
    stream: &SharedStream,
    batch: &mut Vec<Bytes>,
    max_batch_bytes: usize,
    tally: &ShardMetrics,
    before_write: fn(),
) {
    if !out.writer_idle() || out.is_empty() || out.gated_until().is_some() {
        return;
    }
    before_write();
    if let Some(mut frame) = out.take_single() {
        match stream.try_send(std::slice::from_ref(&frame)) {
            Ok(n) if n >= frame.len() => {
                tally.frames_out.inc();
                tally.bytes_out.add(n as u64);
                out.finish_batch();
            }
            Ok(n) => {
                tally.bytes_out.add(n as u64);
                frame.advance(n);
                out.unsent(std::iter::once(frame));
            }
            Err(_) => out.unsent(std::iter::once(frame)),
        }
        return;
    }
    batch.clear();
    out.take_batch(batch, MAX_IOVECS, max_batch_bytes);
    let mut first = 0;
    // Each pass sends at least a byte or stops, so this ends within the batch's bytes.
    while first < batch.len() {
        let n = match stream.try_send(&batch[first..]) {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        tally.bytes_out.add(n as u64);
        let before = first;
        first = super::net::sent(batch, first, n);
        tally.frames_out.add((first - before) as u64);
    }
    if first == batch.len() {
        batch.clear();
        out.finish_batch();
    } else {
        out.unsent(batch.drain(first..));
    }
}

/// Adds the frames of a batch about to be written to `tally`: the writer counts what
/// it takes (a batch that fails to write ends its connection; its count hardly matters).
#[inline]
fn count(tally: Option<&ShardMetrics>, frames: &[Bytes]) {
    if let Some(t) = tally {
        t.frames_out.add(frames.len() as u64);
        t.bytes_out
            .add(frames.iter().map(|f| f.len() as u64).sum::<u64>());
    }
}

/// Room for TLS records kept between batches while a connection is idle.
const KEEP_RECORD_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    //! The writer against real loopback sockets on each backend: what only the glue
    //! does (partial gathered writes, a peer that resets mid-write).

    use std::io::Read;
    use std::net::Shutdown;
    use std::rc::Rc;

    use bytes::Bytes;

    use super::*;
    use crate::core::outbound::Push;
    use crate::rt::net::Listener;
    use crate::rt::testing::backends;
    use crate::rt::Backend;

    /// Runs `body` with a connected (server stream, blocking peer socket) pair on a
    /// fresh thread of `backend`.
    fn with_pair<T: Send + 'static>(
        backend: Backend,
        body: impl FnOnce(SharedStream, std::net::TcpStream) -> Box<dyn std::future::Future<Output = T>>
            + Send
            + 'static,
    ) -> T {
        crate::rt::testing::on(backend, "writer-test", move || async move {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let listener = Listener::from_fd(std_listener.into()).unwrap();
            let peer = std::net::TcpStream::connect(addr).unwrap();
            let stream = listener.accept().await.unwrap();
            Box::into_pin(body(stream, peer)).await
        })
    }

    #[test]
    fn partial_gathered_writes_deliver_every_byte_in_order() {
        for backend in backends() {
            partial_gathered_writes_on(backend);
        }
    }

    fn partial_gathered_writes_on(backend: Backend) {
        // 300 frames of varied sizes (small ones coalesced, large ones gathered), far
        // more than the socket buffers hold, read slowly by a plain thread: writes come
        // back short and partial, the writer waits for room with nothing else running
        // on its executor, and every byte still arrives once, in order.
        let (got, expect) = with_pair(backend, |stream, mut peer| {
            Box::new(async move {
                let out = Rc::new(Outbound::new(64 << 20));
                let mut expect = Vec::new();
                for i in 0..300u32 {
                    let len = [7, 100, 3000, 70_000][i as usize % 4];
                    let frame: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
                    expect.extend_from_slice(&frame);
                    assert_eq!(out.push(Bytes::from(frame)), Push::Queued);
                }
                out.close();
                let reader = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match peer.read(&mut buf) {
                            Ok(0) => return got,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) => panic!("{e}"),
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                });
                write_loop(&out, &stream, 256 * 1024, false, None, None, || {})
                    .await
                    .unwrap();
                assert_eq!(out.pending_bytes(), 0);
                let got = reader.join().unwrap();
                (got, expect)
            })
        });
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ on {backend:?}");
    }

    #[test]
    fn a_direct_write_the_socket_cannot_take_whole_is_finished_by_the_writer_in_order() {
        for backend in backends() {
            direct_then_writer_on(backend);
        }
    }

    fn direct_then_writer_on(backend: Backend) {
        // Far more than the socket buffers hold, queued while the reader holds the
        // writer's wake-ups: the direct write sends what the socket takes, gives the
        // rest back, and the writer finishes it — every byte once, in order.
        // The shard's counts of frames and bytes sent come out exact across the split.
        let (got, expect, left_after_direct, tally) = with_pair(backend, |stream, mut peer| {
            Box::new(async move {
                let tally = crate::metrics::ShardMetrics::new(0);
                let out = Rc::new(Outbound::new(64 << 20));
                let mut expect = Vec::new();
                out.hold_wakes();
                for i in 0..200u32 {
                    let len = [5, 900, 40_000][i as usize % 3];
                    let frame: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
                    expect.extend_from_slice(&frame);
                    assert_eq!(out.push(Bytes::from(frame)), Push::Queued);
                }
                let mut batch = Vec::new();
                write_now(&out, &stream, &mut batch, 256 * 1024, &tally, || {});
                let left = out.pending_bytes();
                out.release_wakes();
                assert!(batch.is_empty());
                assert!(out.writer_idle());
                out.close();
                let reader = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match peer.read(&mut buf) {
                            Ok(0) => return got,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
                write_loop(&out, &stream, 256 * 1024, false, None, Some(&tally), || {})
                    .await
                    .unwrap();
                let sent = (tally.frames_out.get(), tally.bytes_out.get());
                (reader.join().unwrap(), expect, left, sent)
            })
        });
        assert!(
            left_after_direct > 0,
            "the socket could not take it all at once"
        );
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ on {backend:?}");
        assert_eq!(
            tally,
            (200, expect.len() as u64),
            "frames and bytes counted once"
        );
    }

    #[test]
    fn a_peer_reset_mid_write_ends_the_writer_with_its_error() {
        for backend in backends() {
            peer_reset_on(backend);
        }
    }

    fn peer_reset_on(backend: Backend) {
        let (result, closed, pending) = with_pair(backend, |stream, peer| {
            Box::new(async move {
                let out = Rc::new(Outbound::new(256 << 20));
                for _ in 0..2000 {
                    out.push(Bytes::from(vec![1u8; 64 * 1024]));
                }
                // The peer reads nothing and resets: SO_LINGER 0, then close.
                socket2::SockRef::from(&peer)
                    .set_linger(Some(std::time::Duration::ZERO))
                    .unwrap();
                let _ = peer.shutdown(Shutdown::Read);
                drop(peer);
                let r = write_loop(&out, &stream, 256 * 1024, false, None, None, || {}).await;
                (
                    r.map_err(|e| e.kind()),
                    out.is_closed(),
                    out.pending_bytes(),
                )
            })
        });
        assert!(result.is_err(), "{result:?}");
        assert!(closed, "a failed writer closes its queue");
        assert_eq!(pending, 0, "and gives back what it held");
    }
}
