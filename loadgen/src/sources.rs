//! Source addresses: a run's connections dealt round-robin over the loopback
//! addresses 127.0.0.1 … 127.0.0.N (`--sources N`), and the check that the server saw
//! them come from there.
//!
//! Why: the kernel picks a connection's local port from one ephemeral range (about
//! 28 000 ports by default, `net.ipv4.ip_local_port_range`) per source address and
//! destination, so one source address runs out of ports at that many connections —
//! sooner with the sockets earlier runs left in TIME_WAIT. And a server budgets logins
//! per source address (conduit's `max_pending_per_source`, failed-login back-off):
//! several addresses look more like many clients.
//!
//! The check: conduit's benchmark server (`serve`) answers a [`BENCH_SOURCE`] message
//! with the address it sees the connection come from; after the connect phase the
//! first connection of each source asks, and the run records the distinct addresses
//! the server named ([`crate::scenario::RunResult::source_addresses`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use conduit::__rt::sleep;
use conduit_protocol::clock::wall_clock_ms;
use conduit_protocol::native::{self, ArchivedValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{Codec, Encoder, FrameKind, Header, Value, ValueLimits};
use futures_lite::FutureExt;

pub use crate::serve::{BENCH_SOURCE, BENCH_SOURCE_RESPONSE};
use crate::wire::Conn;
use crate::{Error, Result};

/// Most source addresses one run spreads its connections over: 127.0.0.1 …
/// 127.0.0.254.
pub const MAX_SOURCES: usize = 254;

/// Time the server has to answer all the source checks of one run.
pub const SOURCE_CHECK_DEADLINE: Duration = Duration::from_secs(10);

/// `Ok` when a run of `sources` source addresses can reach `target`: 1 to
/// [`MAX_SOURCES`], and more than one only towards an IPv4 loopback address (the
/// sources are IPv4 loopback addresses).
pub fn validate(sources: usize, target: SocketAddr) -> Result<()> {
    if sources == 0 || sources > MAX_SOURCES {
        return Err(Error::Args(format!(
            "--sources must be 1..={MAX_SOURCES}, got {sources}"
        )));
    }
    if sources > 1 && !(target.is_ipv4() && target.ip().is_loopback()) {
        return Err(Error::Args(format!(
            "--sources {sources} spreads connections over 127.0.0.1 … 127.0.0.{sources}: \
             the target must be an IPv4 loopback address, not {target}"
        )));
    }
    Ok(())
}

/// The source address of connection `i` of a run over `sources` addresses: `None`
/// (the kernel's choice, as without `--sources`) for one, else 127.0.0.(1 + i mod
/// `sources`).
pub fn source_addr(sources: usize, i: usize) -> Option<IpAddr> {
    if sources <= 1 {
        return None;
    }
    let last = u8::try_from(1 + i % sources.min(MAX_SOURCES)).unwrap_or(u8::MAX);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// A `bench_source` MESSAGE frame.
fn source_message(codec: Codec) -> Result<Bytes> {
    Ok(Encoder::new(codec, wall_clock_ms()).message(0, BENCH_SOURCE, &Value::Nil)?)
}

/// Reads a `bench_source_response` MESSAGE: `None` if the frame is something else.
fn parse_source_response(codec: Codec, header: &Header, payload: &[u8]) -> Result<Option<IpAddr>> {
    if header.kind != FrameKind::Message {
        return Ok(None);
    }
    let data = match codec {
        Codec::V1 => match v1::decode(header, payload, &V1Limits::default())? {
            V1Payload::Message { name, data } if name == BENCH_SOURCE_RESPONSE => data,
            _ => return Ok(None),
        },
        Codec::Native => {
            let (name, body) = native::split_route(payload)?;
            if name != BENCH_SOURCE_RESPONSE {
                return Ok(None);
            }
            native::access::<ArchivedValueTree>(body)?.to_value(ValueLimits::default())?
        }
    };
    data.get("peer")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| Error::Protocol(format!("malformed {BENCH_SOURCE_RESPONSE}: {data:?}")))
}

/// Asks the server over `c` which address it sees `c` come from, answering its PINGs
/// meanwhile.
async fn ask(c: &mut Conn) -> Result<IpAddr> {
    let codec = c.codec;
    let pong = c.empty_frame(FrameKind::Pong)?;
    c.send(&source_message(codec)?).await?;
    loop {
        let mut owe_pong = false;
        let mut answer = None;
        while let Some(f) = c.decoder.next_frame()? {
            match f.header.kind {
                FrameKind::Ping => owe_pong = true,
                FrameKind::Message => {
                    answer = parse_source_response(codec, &f.header, f.payload)?;
                    if answer.is_some() {
                        break;
                    }
                }
                _ => {}
            }
        }
        if owe_pong {
            c.send(&pong).await?;
        }
        if let Some(a) = answer {
            return Ok(a);
        }
        c.fill().await?;
    }
}

/// The distinct addresses (sorted) the server says the first `sources` connections of
/// `conns` — one from each source address — come from. Fails when the server does not
/// answer within [`SOURCE_CHECK_DEADLINE`] (a server without the `bench_source`
/// handler).
pub(crate) async fn seen_by_server(conns: &mut [Conn], sources: usize) -> Result<Vec<IpAddr>> {
    let n = sources.min(conns.len());
    let asked = async {
        let mut seen = Vec::with_capacity(n);
        for c in &mut conns[..n] {
            seen.push(ask(c).await?);
        }
        Ok::<_, Error>(Some(seen))
    }
    .or(async {
        sleep(SOURCE_CHECK_DEADLINE).await;
        Ok(None)
    })
    .await?;
    let mut seen = asked.ok_or_else(|| {
        Error::Timeout(format!(
            "the server did not say where the connections come from within \
             {SOURCE_CHECK_DEADLINE:?} (does it have the `{BENCH_SOURCE}` handler?)"
        ))
    })?;
    seen.sort_unstable();
    seen.dedup();
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dealt_round_robin() {
        assert_eq!(source_addr(1, 7), None);
        assert_eq!(source_addr(0, 7), None);
        let a = |i| source_addr(3, i).map(|a| a.to_string());
        assert_eq!(a(0).as_deref(), Some("127.0.0.1"));
        assert_eq!(a(1).as_deref(), Some("127.0.0.2"));
        assert_eq!(a(2).as_deref(), Some("127.0.0.3"));
        assert_eq!(a(3).as_deref(), Some("127.0.0.1"));
        assert_eq!(
            source_addr(MAX_SOURCES, MAX_SOURCES - 1).map(|a| a.to_string()),
            Some("127.0.0.254".into())
        );
    }

    #[test]
    fn bounds_and_families() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert!(validate(1, v4).is_ok());
        assert!(validate(8, v4).is_ok());
        assert!(validate(1, v6).is_ok());
        assert!(matches!(validate(2, v6), Err(Error::Args(m)) if m.contains("IPv4 loopback")));
        assert!(validate(0, v4).is_err());
        assert!(validate(MAX_SOURCES + 1, v4).is_err());
    }

    #[test]
    fn answers_parse_in_both_codecs() {
        for codec in [Codec::V1, Codec::Native] {
            let data = Value::map().with("peer", "127.0.0.3");
            let frame = Encoder::new(codec, 0)
                .message(0, BENCH_SOURCE_RESPONSE, &data)
                .unwrap();
            let mut d =
                conduit_protocol::FrameDecoder::new(conduit_protocol::DecoderLimits::default());
            d.feed(&frame);
            let f = d.next_frame().unwrap().unwrap();
            let got = parse_source_response(codec, &f.header, f.payload).unwrap();
            assert_eq!(got, Some("127.0.0.3".parse().unwrap()));
        }
    }
}
