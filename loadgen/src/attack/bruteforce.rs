//! The `bruteforce` attacker: `--attackers` threads each guessing a wrong password
//! from the attacker's address, giving up `--give-up-ms` after the guess and
//! re-connecting at once; the guesses counted on the wire and from the server's log;
//! and what it did ([`BruteforceReport`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::handshake::{ClientHandshake, ClientStep, HandshakeError};
use conduit_protocol::Codec;
use serde::Serialize;

use super::login::{decoder, next_step, Next};
use super::net::connect_from;
use super::{
    ATTACKER_ADDR, CHALLENGE_WAIT, CONNECT_TIMEOUT, WRONG_PASSWORD, WRONG_PASSWORD_REASON,
};
use crate::wire::{nonce, CLIENT_NAME};
use crate::Result;

/// What the guesser did and what the server counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BruteforceReport {
    /// Connections made.
    pub connections: u64,
    /// Connections refused before any guess, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Connections that ended otherwise before a guess (no challenge in time, closed
    /// without a reason, connect errors), by cause.
    pub failed: BTreeMap<String, u64>,
    /// Guesses sent on an admitted, unrefused connection (see the module docs).
    pub guesses: u64,
    /// Of those, answered "Invalid password" within the give-up time.
    pub guesses_answered: u64,
    /// `guesses` per second over the attack.
    pub guesses_per_s: f64,
    /// `guesses` per second over the attack's second half.
    pub guesses_per_s_second_half: f64,
    /// Failed logins the server logged (`reason=AuthFailed`).
    pub server_failures: u64,
    /// `server_failures` per second over the attack.
    pub server_failures_per_s: f64,
    /// Of `server_failures`, per second over the attack's second half.
    pub server_failures_per_s_second_half: f64,
}

/// What the guessing connections did.
#[derive(Default)]
pub(super) struct Guesser {
    pub(super) report: BruteforceReport,
    /// When each guess was sent, seconds from the start of the attack.
    pub(super) guess_times: Vec<f64>,
}

/// `n` threads guessing from [`ATTACKER_ADDR`] until `stop`.
pub(super) fn bruteforce(
    to: SocketAddr,
    codec: Codec,
    n: usize,
    give_up: Duration,
    stop: &Arc<AtomicBool>,
) -> Guesser {
    let start = Instant::now();
    let mut threads = Vec::with_capacity(n);
    for t in 0..n {
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("guesser".into())
            .stack_size(256 * 1024)
            .spawn(move || guess_loop(to, codec, give_up, &stop, start, t as u64));
        if let Ok(h) = spawned {
            threads.push(h);
        }
    }
    let mut all = Guesser::default();
    for h in threads {
        let Ok(g) = h.join() else { continue };
        let (a, b) = (&mut all.report, g.report);
        a.connections += b.connections;
        a.guesses += b.guesses;
        a.guesses_answered += b.guesses_answered;
        for (k, v) in b.refused {
            *a.refused.entry(k).or_default() += v;
        }
        for (k, v) in b.failed {
            *a.failed.entry(k).or_default() += v;
        }
        all.guess_times.extend(g.guess_times);
    }
    all
}

/// One guessing connection after another until `stop`.
fn guess_loop(
    to: SocketAddr,
    codec: Codec,
    give_up: Duration,
    stop: &AtomicBool,
    start: Instant,
    seed: u64,
) -> Guesser {
    let mut g = Guesser::default();
    let mut attempt = 0u64;
    while !stop.load(Ordering::Acquire) {
        attempt += 1;
        let r = &mut g.report;
        let mut stream = match connect_from(ATTACKER_ADDR, to, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                *r.failed
                    .entry(format!("connect: {}", e.kind()))
                    .or_default() += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        r.connections += 1;
        let mut dec = decoder(codec);
        let mut hs = ClientHandshake::new(
            codec,
            WRONG_PASSWORD,
            nonce(seed << 32 | attempt),
            CLIENT_NAME,
            env!("CARGO_PKG_VERSION"),
        );
        let Ok(first) = hs.start(wall_clock_ms()) else {
            continue;
        };
        if let Err(e) = stream.write_all(&first) {
            *r.failed.entry(format!("write: {}", e.kind())).or_default() += 1;
            continue;
        }
        // Native: the server's challenge says it admitted the connection; v1's first
        // frame is the guess itself.
        if codec == Codec::Native {
            let next = next_step(
                &mut stream,
                &mut dec,
                &mut hs,
                Instant::now() + CHALLENGE_WAIT,
            );
            match next {
                Ok(Next::Step(Ok(ClientStep::Send(proof)))) => {
                    if let Err(e) = stream.write_all(&proof) {
                        *r.failed.entry(format!("write: {}", e.kind())).or_default() += 1;
                        continue;
                    }
                }
                Ok(Next::Step(Err(HandshakeError::Rejected(why)))) => {
                    *r.refused.entry(why).or_default() += 1;
                    continue;
                }
                Ok(Next::Step(other)) => {
                    let why = match other {
                        Ok(_) => "logged in".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    *r.failed.entry(why).or_default() += 1;
                    continue;
                }
                Ok(Next::TimedOut) => {
                    *r.failed.entry("no challenge in time".into()).or_default() += 1;
                    continue;
                }
                Ok(Next::Closed) => {
                    *r.failed
                        .entry("closed without a reason".into())
                        .or_default() += 1;
                    continue;
                }
                Err(e) => {
                    *r.failed.entry(format!("read: {}", e.kind())).or_default() += 1;
                    continue;
                }
            }
        }
        let sent = start.elapsed().as_secs_f64();
        // Give up after `give_up` unless the server answers first.
        match next_step(&mut stream, &mut dec, &mut hs, Instant::now() + give_up) {
            Ok(Next::Step(Err(HandshakeError::Rejected(why)))) if why != WRONG_PASSWORD_REASON => {
                // v1: refused before its guess was looked at.
                *r.refused.entry(why).or_default() += 1;
            }
            Ok(Next::Step(Err(HandshakeError::Rejected(_)))) => {
                r.guesses += 1;
                r.guesses_answered += 1;
                g.guess_times.push(sent);
            }
            Ok(Next::Closed) if codec == Codec::V1 => {
                *r.failed
                    .entry("closed without a reason".into())
                    .or_default() += 1;
            }
            _ => {
                r.guesses += 1;
                g.guess_times.push(sent);
            }
        }
    }
    g
}

/// When the server logged each failed login (`disconnected … reason=AuthFailed`, at
/// `debug` for `conduit::shard::conn`),
/// seconds from `start` (by the time of day of the log's UTC timestamps).
pub(super) fn server_failures(log: &std::path::Path, start: SystemTime) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(log)?;
    let since_epoch = start
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let start_of_day = since_epoch.rem_euclid(86_400.0);
    Ok(text
        .lines()
        .filter(|l| l.contains("disconnected") && l.contains("reason=AuthFailed"))
        .map(|l| {
            time_of_day(l).map_or(0.0, |t| {
                let d = (t - start_of_day).rem_euclid(86_400.0);
                // Just before the start (clock granularity): the start.
                if d > 86_000.0 {
                    0.0
                } else {
                    d
                }
            })
        })
        .collect())
}

/// Seconds since midnight of a log line's leading `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn time_of_day(line: &str) -> Option<f64> {
    let t = line.trim_start().get(11..)?;
    let end = t.find('Z')?;
    let mut parts = t[..end].split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps() {
        let l = "2026-12-06T10:11:12.500000Z  INFO conduit::shard::conn: disconnected \
                 conn=1 reason=AuthFailed";
        assert_eq!(time_of_day(l), Some(36_672.5));
        assert_eq!(time_of_day("garbage"), None);
    }
}
