//! The broadcast scenario against Redis pub/sub: the receivers are connections
//! `SUBSCRIBE`d to [`BENCH_CHANNEL`] (in the connect phase), each sender a connection
//! that `PUBLISH`es to it. A published message carries the same 64-byte tick payload
//! our receivers get ([`redis::tick_payload`]), and the senders are paced by the same
//! [`send_loop`](super::send::send_loop) (single, rate and saturate, same window and
//! burst), so deliveries, latency, fan-out and loss are counted by the same [`Fan`].
//!
//! Redis answers every `PUBLISH` with the number of subscribers it reached; a task per
//! sender reads those answers and counts any that fall short of every receiver.

use std::cell::Cell;
use std::rc::Rc;

use conduit::__rt::{spawn_task, SharedStream, Task};
use conduit_protocol::Codec;

use super::fan::Fan;
use super::send::TickSink;
use super::{drive_sinks, finish, BroadcastSpec};
use crate::payload::{self, Tick};
use crate::procfs::CpuMark;
use crate::redis::resp::{self, Item, Reply};
use crate::redis::{self, RedisConn, BENCH_CHANNEL};
use crate::scenario::{RunResult, RunSpec};
use crate::{Error, Result};

/// What the senders' `PUBLISH` answers said.
#[derive(Default)]
struct Answers {
    /// Answers read.
    read: Cell<u64>,
    /// Answers that reached fewer subscribers than there are receivers.
    short: Cell<u64>,
    /// Answers that were not an integer (an error reply).
    wrong: Cell<u64>,
}

/// A sender: writes `PUBLISH` commands on its connection's stream while a task reads
/// Redis's answers from the same connection.
struct Publisher {
    stream: SharedStream,
    pad: usize,
    /// Reads the answers; dropped (cancelled) with the publisher.
    _answers: Task<()>,
}

impl TickSink for Publisher {
    fn encode(&self, t: Tick, out: &mut Vec<u8>) -> Result<()> {
        let payload = redis::tick_payload(t, self.pad)?;
        resp::command(out, &[b"PUBLISH", BENCH_CHANNEL, &payload]);
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(self.stream.write_all(bytes).await?)
    }
}

/// Reads a sender's `PUBLISH` answers until the connection ends.
async fn read_answers(mut c: RedisConn, receivers: i64, answers: &Answers) -> Result<()> {
    loop {
        c.fill().await?;
        while let Some(reply) = c.reader.next_reply()? {
            answers.read.set(answers.read.get() + 1);
            match reply {
                Reply::Item(Item::Integer(n)) if n >= receivers => {}
                Reply::Item(Item::Integer(_)) => answers.short.set(answers.short.get() + 1),
                _ => answers.wrong.set(answers.wrong.get() + 1),
            }
        }
    }
}

/// One receiver: records every tick published to the channel.
async fn receive(mut c: RedisConn, idx: usize, fan: &Fan) -> Result<()> {
    loop {
        c.fill().await?;
        let now = fan.now_ns();
        while let Some(reply) = c.reader.next_reply()? {
            let tick = match reply.message_payload() {
                Some(p) => payload::parse_tick(Codec::V1, p)?,
                None => None,
            };
            match tick {
                Some(t) => fan.on_tick(idx, t, now),
                None => {
                    return Err(Error::Protocol(format!(
                        "a subscriber got {reply:?}, not a tick"
                    )))
                }
            }
        }
    }
}

/// Runs the broadcast phase against Redis: the first `b.senders` of `conns` publish,
/// the rest (subscribed already) receive.
pub(in crate::scenario) async fn run(
    spec: &RunSpec,
    b: &BroadcastSpec,
    mut conns: Vec<RedisConn>,
    result: &mut RunResult,
) -> Result<()> {
    if b.room_members.is_some() {
        return Err(Error::Args(
            "a room broadcast has no Redis counterpart".into(),
        ));
    }
    let pad = payload::pad_for_payload(b.payload_bytes, None);
    let probe = redis::tick_payload(
        Tick {
            sender: 0,
            seq: 0,
            due_ns: 0,
        },
        pad,
    )?;
    // What a subscriber reads per message: ["message", channel, payload].
    result.frame_bytes = Some(resp::command_len(&[b"message", BENCH_CHANNEL, &probe]));
    let senders: Vec<RedisConn> = conns.drain(..b.senders.min(conns.len())).collect();
    let receivers = conns;
    let receiver_count = i64::try_from(receivers.len()).unwrap_or(i64::MAX);
    let fan = Rc::new(Fan::new(receivers.len() as u32, b.senders));
    let rx_tasks: Vec<Task<()>> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let fan = fan.clone();
            spawn_task(async move {
                if let Err(e) = receive(c, i, &fan).await {
                    tracing::debug!("Redis receiver {i}: {e}");
                    fan.errors.set(fan.errors.get() + 1);
                }
            })
        })
        .collect();
    let answers = Rc::new(Answers::default());
    let publishers: Vec<Publisher> = senders
        .into_iter()
        .map(|c| {
            let stream = c.stream();
            let answers = answers.clone();
            let task = spawn_task(async move {
                if let Err(e) = read_answers(c, receiver_count, &answers).await {
                    tracing::debug!("Redis publisher: {e}");
                }
            });
            Publisher {
                stream,
                pad,
                _answers: task,
            }
        })
        .collect();
    let pid = spec.server_pid;
    let driven = drive_sinks(spec, b, &fan, publishers, || CpuMark::take(pid)).await;
    drop(rx_tasks);
    finish(
        b,
        &fan,
        driven.sent_in_time,
        [&driven.before, &driven.after],
        driven.elapsed,
        result,
    );
    let (short, wrong) = (answers.short.get(), answers.wrong.get());
    if short + wrong > 0 {
        result.errors += short + wrong;
        result.complete = false;
        result.notes.push(format!(
            "{short} PUBLISH(es) reached fewer than every subscriber, {wrong} answered \
             with an error"
        ));
    }
    result.notes.push(format!(
        "Redis pub/sub: PUBLISH to one channel, {} PUBLISH answer(s) read; the same \
         64-byte tick payload as ours",
        answers.read.get()
    ));
    Ok(())
}
