//! The broadcast senders, one pacing per [`BroadcastMode`]:
//!
//! * `single` sends one message and waits until every receiver has it: the fan-out
//!   latency of an otherwise idle server.
//! * `rate` sends on a fixed schedule and stamps each message with its due time, so a
//!   late send counts against latency (no coordinated omission): latency at a chosen
//!   load.
//! * `saturate` keeps a window of messages in flight and tops it up in bursts: the
//!   most deliveries per second the server sustains.

use std::time::{Duration, Instant};

use conduit::__rt::sleep;
use conduit_protocol::Codec;
use futures_lite::FutureExt;

use super::fan::Fan;
use super::{BroadcastMode, BroadcastSpec};
use crate::payload::{self, Tick};
use crate::stats::Schedule;
use crate::wire::Conn;
use crate::{Error, Result};

/// Where a sender's ticks go and how each is written: a conduit connection and its
/// frames, or a Redis connection and its `PUBLISH` commands. Every server is paced by
/// the same [`send_loop`].
pub(super) trait TickSink {
    /// Appends what sends tick `t` to `out`.
    fn encode(&self, t: Tick, out: &mut Vec<u8>) -> Result<()>;
    /// Writes `bytes` to the server.
    async fn write(&mut self, bytes: &[u8]) -> Result<()>;
}

/// A conduit connection sending `bench_broadcast` (or, for a room, `bench_room_broadcast`)
/// frames in its codec, padded by `pad`.
pub(super) struct ConduitSink {
    /// The sender's connection.
    pub(super) conn: Conn,
    /// The connection's codec.
    pub(super) codec: Codec,
    /// Padding bytes per tick.
    pub(super) pad: usize,
    /// The room a room broadcast goes to.
    pub(super) room: Option<&'static str>,
}

impl TickSink for ConduitSink {
    fn encode(&self, t: Tick, out: &mut Vec<u8>) -> Result<()> {
        let frame = match self.room {
            Some(room) => payload::bench_room_message(self.codec, t, self.pad, room)?,
            None => payload::bench_message(self.codec, t, self.pad)?,
        };
        out.extend_from_slice(&frame);
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.conn.send(bytes).await
    }
}

/// Sender `s`: sends its messages through `c` as `b.mode` paces them until `until` or
/// its count, then hands the sink back (its connection still open).
pub(super) async fn send_loop<S: TickSink>(
    mut c: S,
    s: usize,
    fan: &Fan,
    b: &BroadcastSpec,
    until: Instant,
) -> Result<S> {
    let mut out = Vec::new();
    let tick = |seq: u64, due_ns: u64| Tick {
        sender: s as u64,
        seq,
        due_ns,
    };
    match b.mode {
        BroadcastMode::Single => {
            for seq in 0..b.messages {
                if Instant::now() >= until {
                    break;
                }
                fan.mark_sent(s, seq);
                out.clear();
                c.encode(tick(seq, fan.now_ns()), &mut out)?;
                c.write(&out).await?;
                let in_time = async {
                    fan.in_flight_at_most(s, 0).await;
                    true
                }
                .or(async {
                    sleep(b.drain).await;
                    false
                })
                .await;
                if !in_time {
                    return Err(Error::Timeout(format!(
                        "message {seq} did not reach every receiver within {:?}",
                        b.drain
                    )));
                }
            }
        }
        BroadcastMode::Rate { hz } => {
            let schedule = Schedule::new(fan.now_ns(), hz);
            for seq in 0..b.messages {
                let due = schedule.due_ns(seq);
                let now = fan.now_ns();
                if due > now {
                    sleep(Duration::from_nanos(due - now)).await;
                }
                if Instant::now() >= until {
                    break;
                }
                fan.mark_sent(s, seq);
                // Stamped with the due time: a late send counts against latency.
                out.clear();
                c.encode(tick(seq, due), &mut out)?;
                c.write(&out).await?;
            }
        }
        BroadcastMode::Saturate { window, burst } => {
            let window = window as u64;
            let burst = burst as u64;
            let mut seq = 0u64;
            while seq < b.messages && Instant::now() < until {
                // Room for a burst: validation keeps burst ≤ window.
                let room = fan.in_flight_at_most(s, window - burst);
                let left = until.saturating_duration_since(Instant::now());
                let ok = async {
                    room.await;
                    true
                }
                .or(async {
                    sleep(left).await;
                    false
                })
                .await;
                if !ok {
                    // Sending time is over; what is in flight drains or is counted
                    // as unfinished.
                    break;
                }
                let n = (window - fan.in_flight(s)).min(b.messages - seq);
                out.clear();
                let due = fan.now_ns();
                for k in seq..seq + n {
                    c.encode(tick(k, due), &mut out)?;
                    fan.mark_sent(s, k);
                }
                seq += n;
                c.write(&out).await?;
            }
        }
    }
    // The caller keeps the connection open until the run ends: the server must not
    // see the sender leave while its last broadcasts are in flight.
    Ok(c)
}
