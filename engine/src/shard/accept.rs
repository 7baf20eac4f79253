//! Admission: the accept loop, the `max_connections` slot each connection holds as a
//! permit, and the refusal of connections over the limit (a reason if they speak, in
//! their codec; never counted).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::{DecoderLimits, Encoder, FrameDecoder};
use futures_lite::FutureExt;

use super::conn::serve;
use super::Shard;
use crate::core::CloseReason;
use crate::router::{Admission, BusMsg, Refusal};
use crate::rt::exec::{sleep, spawn};
use crate::rt::net::{Listener, SharedStream};
use crate::ws::Transport;

/// How long a refused connection may take to say which codec it speaks.
const REFUSAL_WAIT: Duration = Duration::from_secs(5);
/// Largest first frame read from a connection being refused.
const REFUSAL_FRAME_BYTES: u32 = 4096;
/// Pause after an accept error (descriptor exhaustion and the like) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// Accept errors (EMFILE repeats every retry), written once per interval with a count.
static ACCEPT_ERRORS: crate::throttle::Throttle = crate::throttle::Throttle::new();

/// Whether an accept failed for want of file descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Accepts until the task is dropped (stop accepting).
pub(super) async fn accept_loop(shard: Rc<Shard>, listener: Rc<Listener>, transport: Transport) {
    let index = shard.index;
    let failed =
        |e: &std::io::Error| ACCEPT_ERRORS.warn(|| format!("shard {index}: accept failed: {e}"));
    loop {
        // Re-opened if a refusal or a lost race left it closed (nothing when open).
        shard.restore_reserve();
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                failed(&e);
                // Out of descriptors: free the reserve one to take the waiting
                // connection and tell it so, instead of leaving it hanging.
                let reserve = out_of_descriptors(&e)
                    .then(|| shard.reserve.borrow_mut().take())
                    .flatten();
                if let Some(reserve) = reserve {
                    drop(reserve);
                    // Another shard may win the client: wait for one only briefly.
                    let taken = async { Some(listener.accept().await) };
                    let none = async {
                        sleep(ACCEPT_RETRY).await;
                        None
                    };
                    match taken.or(none).await {
                        Some(Ok(s)) => {
                            refuse(&shard, s, Refusal::OutOfDescriptors, Vec::new(), transport)
                        }
                        Some(Err(e)) => failed(&e),
                        None => {}
                    }
                    // Fails while descriptors are short; every pass tries again.
                    shard.restore_reserve();
                }
                // Back off instead of spinning.
                sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            // Gone before we looked: nothing to serve.
            continue;
        };
        if shard.router.descriptor().is_trusted_proxy(peer.ip()) {
            // Its source is in the PROXY header: admitted once that is read.
            super::proxy::read_header(&shard, stream, peer, transport);
            continue;
        }
        admit(&shard, stream, peer, Vec::new(), transport);
    }
}

/// Admits a connection from `peer` — its budgets taken, checked against that address —
/// and serves it, or refuses it. `first_bytes`: what it sent that was read already
/// (past a PROXY header), for its decoder before anything read later.
pub(super) fn admit(
    shard: &Rc<Shard>,
    stream: SharedStream,
    peer: SocketAddr,
    first_bytes: Vec<u8>,
    transport: Transport,
) {
    let d = shard.router.descriptor();
    let admitted = shard.router.counts().admit(
        peer,
        d.max_connections,
        d.max_pending,
        d.max_pending_per_source,
    );
    match admitted {
        Ok(mut admission) => {
            admission.first_bytes = first_bytes;
            admission.transport = transport;
            place(shard, stream, admission);
        }
        Err(why) => refuse(shard, stream, why, first_bytes, transport),
    }
}

/// Serves an admitted connection on the shard whose turn it is: here, or handed over
/// that shard's bus. If the hand-over cannot be made (its bus is full or gone), it is
/// served here: a connection is never dropped for balance.
fn place(shard: &Rc<Shard>, stream: SharedStream, admission: Admission) {
    let home = shard.run.next_home();
    if home == shard.index {
        serve(shard.clone(), stream, admission);
        return;
    }
    let std = match stream.into_std() {
        Ok(s) => s,
        Err((stream, e)) => {
            tracing::debug!(shard = shard.index, "serving here, not handed over: {e}");
            if let Some(stream) = stream {
                serve(shard.clone(), stream, admission);
            }
            return;
        }
    };
    let msg = BusMsg::Adopt {
        stream: std,
        admission,
    };
    let Err(e) = shard.run.bus[home].try_send(msg) else {
        return;
    };
    if let BusMsg::Adopt { stream, admission } = e.into_inner() {
        match SharedStream::from_std(stream) {
            Ok(stream) => serve(shard.clone(), stream, admission),
            Err(e) => tracing::warn!(shard = shard.index, "cannot take a connection back: {e}"),
        }
    }
}

/// Serves a connection another shard accepted and handed over (see [`place`]). One
/// arriving while the server stops is served too — it was accepted — and closed by
/// the drain with the stop's reason, like every other connection.
pub(super) fn adopt(shard: &Rc<Shard>, stream: std::net::TcpStream, admission: Admission) {
    match SharedStream::from_std(stream) {
        Ok(stream) => serve(shard.clone(), stream, admission),
        Err(e) => tracing::warn!(shard = shard.index, "cannot adopt a connection: {e}"),
    }
}

/// The close reason (and its text) of a refusal.
pub(super) fn refusal_reason(why: Refusal) -> CloseReason {
    match why {
        Refusal::Full => CloseReason::ServerFull,
        Refusal::TooManyPending => CloseReason::TooManyPending,
        Refusal::TooManyFromSource => CloseReason::TooManyFromSource,
        Refusal::TooManyFailures => CloseReason::TooManyFailures,
        Refusal::OutOfDescriptors => CloseReason::OutOfDescriptors,
    }
}

/// Turns away a connection that is not admitted (`max_connections`, or a budget for
/// connections logging in): if it speaks within the auth timeout it gets an
/// AUTH_FAILURE saying why, in its codec; either way it is closed and never counted.
/// `first_bytes`: what it sent that was read already (past a PROXY header).
fn refuse(
    shard: &Rc<Shard>,
    stream: SharedStream,
    why: Refusal,
    first_bytes: Vec<u8>,
    transport: Transport,
) {
    let stats = shard.router.counts();
    let max = shard.router.descriptor().max_refusals_in_flight;
    let reason = refusal_reason(why);
    // The reserve descriptor is given to this refusal: opened again once it is done.
    let restore = why == Refusal::OutOfDescriptors;
    let Some(permit) = stats.refusing.try_acquire(max) else {
        tracing::debug!(
            ?reason,
            "refusals at their limit; closing a connection at once"
        );
        shard
            .metrics
            .refused(crate::metrics::RefusalKind::Overloaded);
        drop(stream);
        if restore {
            shard.restore_reserve();
        }
        return;
    };
    shard.metrics.refused(why.into());
    // Held by the shard, so a shard exiting before this task ends gives it back.
    let key = shard.hold_refusal(permit);
    let shard = shard.clone();
    spawn(async move {
        let mut decoder = FrameDecoder::new(DecoderLimits {
            max_payload_bytes: REFUSAL_FRAME_BYTES,
            initial_buffer_bytes: 256,
            ..shard.core_config.decoder_limits
        });
        let wait = shard.core_config.auth_timeout.min(REFUSAL_WAIT);
        let codec = async {
            // The bytes read already (at most 107: they fit), then the socket's.
            decoder.feed(&first_bytes);
            loop {
                match decoder.next_frame() {
                    Ok(Some(f)) => return Some(f.header.codec),
                    Ok(None) => {}
                    Err(_) => return decoder.front_codec(),
                }
                let n = stream.read(decoder.spare()).await.ok()?;
                if n == 0 {
                    return None;
                }
                decoder.commit(n);
            }
        };
        let timeout = async {
            sleep(wait).await;
            None
        };
        if shard.router.tls().is_some() {
            // Before a handshake nothing can be said that a TLS client would read.
            drop((codec, timeout));
        } else if transport == Transport::WebSocket {
            drop((codec, timeout));
            // It speaks HTTP until upgraded: told so in HTTP, at once.
            let text = reason.wire_text();
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        } else {
            let codec = codec.or(timeout).await;
            if let Some(codec) = codec {
                let text = reason.wire_text();
                if let Ok(f) = Encoder::new(codec, wall_clock_ms()).auth_failure(text) {
                    let _ = stream.write_all(&f).await;
                }
            }
        }
        stream.shutdown_write().await;
        drop(stream);
        if restore {
            shard.restore_reserve();
        }
        shard.release_refusal(key);
    });
}
