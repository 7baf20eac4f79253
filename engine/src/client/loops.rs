//! One logged-in connection at work: its reader loop (which also keeps the heartbeat,
//! with a single re-armed timer) and its writer loop (which gathers queued frames into
//! vectored writes), and how the two end together.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::{Codec, Encoder, FrameDecoder, FrameKind};
use futures_lite::FutureExt;

use super::dispatch::on_inbound;
use super::proto::{self, Heartbeat, Tick};
use super::shared::Inner;
use super::{ClientDescriptor, ClientError, ClientResult, DisconnectReason};
use crate::core::Outbound;
use crate::rt::exec::{sleep, spawn_task, Timer};
use crate::rt::net::SharedStream;
use crate::rt::tls::TlsLayer;
use crate::rt::writer;

/// Most bytes one gathered write carries.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How long `close` lets frames queued before it flush.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// One live connection: its socket, send queue and close request.
pub(super) struct Conn {
    /// The socket, shared by the reader and the writer.
    pub stream: SharedStream,
    /// Frames waiting for the writer (the server's queue type), with byte-based
    /// backpressure: a sender waits for room.
    pub out: Outbound,
    /// The codec the connection logged in with; every frame is sent in it.
    pub codec: Codec,
    /// Largest payload the server accepts; larger frames are refused before sending.
    pub max_frame_bytes: u32,
    /// First reason anyone asked this connection to close for.
    pub close: RefCell<Option<DisconnectReason>>,
    /// Wakes the reader when a close is requested.
    pub close_requested: crate::core::LocalNotify,
    /// The TLS layer, over a TLS connection.
    tls: Option<TlsLayer>,
}

impl Conn {
    /// A connection over `stream`, logged in with `desc`'s codec, with
    /// `max_outbound_bytes` of send queue.
    pub fn new(stream: SharedStream, tls: Option<TlsLayer>, desc: &ClientDescriptor) -> Conn {
        Conn {
            stream,
            tls,
            out: Outbound::new(desc.max_outbound_bytes),
            codec: desc.codec,
            max_frame_bytes: desc.max_frame_bytes,
            close: RefCell::new(None),
            close_requested: Default::default(),
        }
    }

    /// An encoder for a frame sent now: the connection's codec and frame limit, and the
    /// current time stamp.
    pub fn encoder(&self) -> Encoder {
        Encoder::new(self.codec, wall_clock_ms()).with_max_payload(self.max_frame_bytes)
    }

    /// Queues a control frame (PING, PONG) of `kind`, ahead of the queue's limit.
    pub fn push_control(&self, kind: FrameKind) {
        match self.encoder().empty(kind) {
            Ok(frame) => self.out.push_unbounded(frame),
            Err(e) => tracing::debug!(?kind, "control frame not encoded: {e}"),
        }
    }

    /// Asks the reader to end the connection; the first reason wins.
    pub fn request_close(&self, reason: DisconnectReason) {
        let mut c = self.close.borrow_mut();
        if c.is_none() {
            *c = Some(reason);
            self.close_requested.notify();
        }
    }

    /// Queues `frame`, waiting for room if the queue is full.
    pub async fn send(&self, frame: Bytes) -> ClientResult<()> {
        if self.out.push_waiting(frame).await {
            Ok(())
        } else {
            Err(ClientError::Disconnected)
        }
    }
}

/// Runs one logged-in connection until it ends: starts its writer, reads (keeping the
/// heartbeat), then tears down. Returns why it ended.
pub(super) async fn run_connection(
    inner: &Rc<Inner>,
    conn: &Rc<Conn>,
    decoder: &mut FrameDecoder,
) -> DisconnectReason {
    let writer = spawn_task(write_loop(conn.clone()));
    let reason = read_loop(inner, conn, decoder).await;
    let reason = conn.close.borrow_mut().take().unwrap_or(reason);
    if reason == DisconnectReason::ClosedByClient {
        // Graceful: what was queued before close() goes out, then the goodbye.
        // Native only: netconduit has no close frame it acts on.
        if let Ok(Some(bye)) = conn.encoder().close("client closing") {
            conn.out.push_unbounded(bye);
        }
        conn.out.close();
        let flushed = async {
            writer.await;
            true
        };
        let late = async {
            sleep(CLOSE_FLUSH).await;
            false
        };
        if !flushed.or(late).await {
            tracing::debug!("close: frames left unsent after {CLOSE_FLUSH:?}");
        }
    } else {
        conn.out.clear();
        conn.out.close();
        conn.stream.shutdown_both();
        writer.await;
    }
    conn.stream.shutdown_both();
    conn.out.clear();
    reason
}

/// Reads and acts on frames until the connection must end; also the heartbeat: one
/// timer, re-armed only when it fires, so a busy connection costs no timer work per
/// frame.
async fn read_loop(
    inner: &Rc<Inner>,
    conn: &Rc<Conn>,
    decoder: &mut FrameDecoder,
) -> DisconnectReason {
    let desc = &inner.desc;
    let mut heartbeat = Heartbeat::new(
        desc.heartbeat_interval,
        desc.heartbeat_timeout,
        Instant::now(),
    );
    let mut timer = Timer::new(
        heartbeat
            .next_check()
            .saturating_duration_since(Instant::now()),
    );
    enum Event {
        Read(io::Result<usize>),
        Tick,
        Close,
    }
    loop {
        // Frames already buffered first (some may have come with AUTH_SUCCESS).
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return DisconnectReason::Protocol(e),
            };
            let inbound = match proto::interpret(&frame, inner.value_limits, &inner.v1_limits) {
                Ok(i) => i,
                Err(e) => return DisconnectReason::Protocol(e),
            };
            if let Some(r) = on_inbound(inner, conn, inbound) {
                return r;
            }
        }
        if let Some(r) = conn.close.borrow().clone() {
            return r;
        }
        let event = {
            let spare = decoder.spare();
            let read = async {
                Event::Read(match &conn.tls {
                    None => conn.stream.read(spare).await,
                    Some(tls) => tls.read(&conn.stream, spare, &conn.out.ready).await,
                })
            };
            let closed = async {
                conn.close_requested.wait().await;
                Event::Close
            };
            let tick = async {
                (&mut timer).await;
                Event::Tick
            };
            read.or(closed).or(tick).await
        };
        match event {
            Event::Read(Ok(0)) => return DisconnectReason::ServerClosed,
            Event::Read(Ok(n)) => {
                // Any bytes are life, so a large frame arriving slowly is not cut off.
                heartbeat.on_receive(Instant::now());
                decoder.commit(n);
            }
            Event::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Event::Read(Err(e)) => return DisconnectReason::Io(e.to_string()),
            Event::Close => {}
            Event::Tick => {
                let now = Instant::now();
                match heartbeat.on_tick(now) {
                    Tick::None => {}
                    Tick::Ping => {
                        conn.push_control(FrameKind::Ping);
                    }
                    Tick::Close => {
                        return DisconnectReason::HeartbeatTimeout(desc.heartbeat_timeout)
                    }
                }
                timer.reset(heartbeat.next_check().saturating_duration_since(now));
            }
        }
    }
}

/// Drains the send queue with the server's writer (gathered writes) until it is closed
/// and empty.
async fn write_loop(conn: Rc<Conn>) {
    let tls = conn.tls.as_ref();
    if let Err(e) = writer::write_loop(
        &conn.out,
        &conn.stream,
        MAX_BATCH_BYTES,
        false,
        tls,
        None,
        || {},
    )
    .await
    {
        conn.request_close(DisconnectReason::Io(e.to_string()));
    }
}
