//! Connections from trusted proxies (`ServerDescriptor::trusted_proxies`): their PROXY
//! protocol header (v1 text or v2 binary, parsed by the `ppp` crate) is read first, in
//! a task of its own on the accepting shard, within `proxy_header_timeout` (or
//! `auth_timeout`, if shorter) and at most `max_pending` at once; the client address it
//! carries then goes through admission (`accept::admit`) as any peer's address does,
//! and the bytes read past the header are handed on as the connection's first input.
//! Connections from other addresses never come here.

use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::FutureExt;
use ppp::{v1, v2};

use super::Shard;
use crate::descriptor::MAX_PROXY_V2_HEADER_BYTES;
use crate::rt::exec::{sleep, spawn};
use crate::rt::net::SharedStream;

/// The longest v1 header (its specification's limit), and the most read before a
/// header's version says how long it is: so at most this many bytes past a header
/// are ever read, and they always fit a connection's receive buffer.
const V1_MAX_BYTES: usize = 107;

/// The fixed part of a v2 header, before its addresses and TLVs.
const V2_FIXED_BYTES: usize = 16;

/// How a v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY";

/// Why a connection from a trusted proxy was closed before admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderFault {
    /// The connection ended (or failed) before a whole header came.
    Missing,
    /// Bytes that are no PROXY header.
    Malformed,
    /// A header longer than allowed (v1 over 107 bytes, v2 over
    /// [`MAX_PROXY_V2_HEADER_BYTES`]).
    Oversized,
    /// No whole header within `proxy_header_timeout`.
    Late,
}

/// What the bytes read so far make of a header.
#[derive(Debug, PartialEq)]
enum Parse {
    /// A whole header of `len` bytes, and the client address it carries, if any.
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not whole yet: read on, up to `upto` bytes in all.
    More { upto: usize },
    /// Never a header, however many bytes follow.
    Bad(HeaderFault),
}

/// Parses the start of a connection from a trusted proxy.
fn parse(bytes: &[u8]) -> Parse {
    if bytes.starts_with(V1_PREFIX) || V1_PREFIX.starts_with(bytes) {
        parse_v1(bytes)
    } else {
        parse_v2(bytes)
    }
}

/// A v1 header: a line. `ppp` parses whole lines (a line cut just after a field's
/// space reads as an empty, invalid field), so it is given the line once its end is in.
fn parse_v1(bytes: &[u8]) -> Parse {
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        // A CR must end the line.
        let cr = bytes.iter().position(|&b| b == b'\r');
        return if cr.is_some_and(|cr| cr + 1 < bytes.len()) {
            Parse::Bad(HeaderFault::Malformed)
        } else if bytes.len() >= V1_MAX_BYTES {
            Parse::Bad(HeaderFault::Oversized)
        } else {
            Parse::More { upto: V1_MAX_BYTES }
        };
    };
    match v1::Header::try_from(&bytes[..=end]) {
        Ok(h) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Parse::Done {
                len: h.header.len(),
                source,
            }
        }
        Err(v1::BinaryParseError::Parse(v1::ParseError::HeaderTooLong)) => {
            Parse::Bad(HeaderFault::Oversized)
        }
        Err(_) => Parse::Bad(HeaderFault::Malformed),
    }
}

/// A v2 header: a fixed part saying how long the rest is.
fn parse_v2(bytes: &[u8]) -> Parse {
    match v2::Header::try_from(bytes) {
        Ok(h) => {
            // Only a proxied TCP connection carries a client address. LOCAL (a health
            // check), UNSPEC, and the families and protocols a TCP server has no use
            // for (Unix, UDP) keep the connection's own address, as the specification
            // lets a receiver do.
            let source = match (h.command, h.protocol, h.addresses) {
                (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Parse::Done {
                len: h.len(),
                source,
            }
        }
        // The fixed part is not all in yet.
        Err(v2::ParseError::Incomplete(_)) => Parse::More { upto: V1_MAX_BYTES },
        // The fixed part is in and says how long the rest is.
        Err(v2::ParseError::Partial(_, rest)) => {
            let upto = V2_FIXED_BYTES + rest;
            if upto > MAX_PROXY_V2_HEADER_BYTES {
                Parse::Bad(HeaderFault::Oversized)
            } else {
                Parse::More { upto }
            }
        }
        Err(_) => Parse::Bad(HeaderFault::Malformed),
    }
}

/// Reads a whole header from `stream`: the client address it carries (if any) and the
/// bytes read past it (at most [`V1_MAX_BYTES`]). Never reads past the longest header
/// the bytes so far allow.
async fn receive(
    stream: &SharedStream,
    http_ok: bool,
) -> Result<(Option<SocketAddr>, Vec<u8>), HeaderFault> {
    let mut buf = vec![0u8; V1_MAX_BYTES];
    let mut filled = 0;
    let mut upto = V1_MAX_BYTES;
    loop {
        if filled >= upto {
            return Err(HeaderFault::Oversized);
        }
        if buf.len() < upto {
            buf.resize(upto, 0);
        }
        let n = match stream.read(&mut buf[filled..upto]).await {
            Ok(0) | Err(_) => return Err(HeaderFault::Missing),
            Ok(n) => n,
        };
        filled += n;
        // On the WebSocket listener a proxy may speak HTTP at once (its client address
        // then comes in `X-Forwarded-For`): a request line, not a PROXY header.
        if http_ok && filled > 0 && buf[0] == b'G' {
            return Ok((None, buf[..filled].to_vec()));
        }
        match parse(&buf[..filled]) {
            Parse::Done { len, source } => return Ok((source, buf[len..filled].to_vec())),
            Parse::More { upto: more } => upto = more,
            Parse::Bad(fault) => return Err(fault),
        }
    }
}

/// Takes a connection accepted from the trusted proxy at `proxy`: reads its PROXY
/// header in a task of its own, then admits it under the client address the header
/// carries (the proxy's own for `LOCAL` / `UNKNOWN`). Beyond `max_pending` headers being
/// read at once it is closed at once, counted as refused; a missing, malformed,
/// oversized or late header closes it, counted as a refusal (`proxy_header`).
pub(super) fn read_header(
    shard: &Rc<Shard>,
    stream: SharedStream,
    proxy: SocketAddr,
    transport: crate::ws::Transport,
) {
    let stats = shard.router.counts();
    let d = shard.router.descriptor();
    let Some(permit) = stats.proxy_headers.try_acquire(d.max_pending) else {
        shard
            .metrics
            .refused(crate::metrics::RefusalKind::TooManyPending);
        tracing::debug!(
            %proxy,
            "PROXY headers being read at their limit (max_pending); closing a connection at once"
        );
        return;
    };
    let wait = d.proxy_header_timeout.min(d.auth_timeout);
    // Held by the shard, so a shard that drains or exits first closes the connection
    // and gives the permit back.
    let key = shard.hold_proxy_read(permit, stream.clone());
    let shard = shard.clone();
    spawn(async move {
        let http_ok = transport == crate::ws::Transport::WebSocket;
        let read = async { Some(receive(&stream, http_ok).await) };
        let late = async {
            sleep(wait).await;
            None
        };
        let got = read.or(late).await.unwrap_or(Err(HeaderFault::Late));
        // Before admission: the stream must be this task's alone to be handed to
        // another shard.
        shard.release_proxy_read(key);
        match got {
            Ok((source, first_bytes)) => {
                let peer = source.unwrap_or(proxy);
                tracing::trace!(%proxy, %peer, "PROXY header read");
                super::accept::admit(&shard, stream, peer, first_bytes, transport);
            }
            Err(fault) => {
                shard
                    .metrics
                    .refused(crate::metrics::RefusalKind::ProxyHeader);
                tracing::debug!(%proxy, ?fault, "no valid PROXY header; closing the connection");
                stream.shutdown_both();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family_protocol: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.push(0x20 | command);
        h.push(family_protocol);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_headers_give_the_source_and_their_length() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 8080\r\n";
        let mut with_frame = h.to_vec();
        with_frame.extend_from_slice(b"CNDT\x00\x01rest");
        assert_eq!(
            parse(&with_frame),
            Parse::Done {
                len: h.len(),
                source: addr("192.0.2.7:40000")
            }
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::5 2001:db8::1 5 6\r\n"),
            Parse::Done {
                len: 40,
                source: addr("[2001:db8::5]:5")
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parse::Done {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn a_partial_header_asks_for_more_up_to_its_limit() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 8080\r\n";
        for cut in 1..h.len() {
            assert_eq!(
                parse(&h[..cut]),
                Parse::More { upto: V1_MAX_BYTES },
                "{cut}"
            );
        }
        let v2 = v2_header(1, 0x11, &[192, 0, 2, 7, 10, 0, 0, 1, 0, 80, 0, 81], &[]);
        for cut in 1..V2_FIXED_BYTES {
            assert!(matches!(parse(&v2[..cut]), Parse::More { .. }), "{cut}");
        }
        for cut in V2_FIXED_BYTES..v2.len() {
            assert_eq!(parse(&v2[..cut]), Parse::More { upto: v2.len() }, "{cut}");
        }
    }

    #[test]
    fn v2_headers_give_tcp_sources_only() {
        let v4 = [192, 0, 2, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90];
        let tlv = [0x04, 0x00, 0x01, 0x00]; // a NOOP TLV
        let h = v2_header(1, 0x11, &v4, &tlv);
        let mut with_frame = h.clone();
        with_frame.extend_from_slice(b"CNDT");
        assert_eq!(
            parse(&with_frame),
            Parse::Done {
                len: h.len(),
                source: addr("192.0.2.7:40000")
            }
        );
        let mut v6 = [0u8; 36];
        v6[..16].copy_from_slice(
            &"2001:db8::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6[32..34].copy_from_slice(&7u16.to_be_bytes());
        let h = v2_header(1, 0x21, &v6, &[]);
        assert_eq!(
            parse(&h),
            Parse::Done {
                len: h.len(),
                source: addr("[2001:db8::5]:7")
            }
        );
        // LOCAL, UNSPEC, UDP and Unix sockets keep the proxy's address.
        for (command, fp, body) in [
            (0, 0x11, &v4[..]),
            (0, 0x00, &[][..]),
            (1, 0x00, &[][..]),
            (1, 0x12, &v4[..]),
            (1, 0x31, &[0u8; 216][..]),
        ] {
            let h = v2_header(command, fp, body, &[]);
            assert_eq!(
                parse(&h),
                Parse::Done {
                    len: h.len(),
                    source: None
                },
                "{command} {fp:#x}"
            );
        }
    }

    #[test]
    fn bad_and_oversized_headers_are_refused() {
        let bad: [&[u8]; 6] = [
            b"CNDT\x00\x01\x00\x00",
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\r\r",
            b"\xff\xfe\xfd",
        ];
        for b in bad {
            assert_eq!(
                parse(b),
                Parse::Bad(HeaderFault::Malformed),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        // A v1 line with no end within 107 bytes.
        let long = format!("PROXY TCP6 {}", "a".repeat(120));
        assert_eq!(parse(long.as_bytes()), Parse::Bad(HeaderFault::Oversized));
        // A v2 header announcing more than the bound: refused at its fixed part.
        let big = v2_header(1, 0x11, &[0u8; 12], &vec![0u8; MAX_PROXY_V2_HEADER_BYTES]);
        assert_eq!(
            parse(&big[..V2_FIXED_BYTES]),
            Parse::Bad(HeaderFault::Oversized)
        );
        let fits = v2_header(1, 0x11, &[0u8; 12], &[]);
        let mut wrong_version = fits.clone();
        wrong_version[12] = 0x31;
        assert_eq!(parse(&wrong_version), Parse::Bad(HeaderFault::Malformed));
        let mut short_addresses = fits;
        short_addresses[15] = 4;
        assert_eq!(parse(&short_addresses), Parse::Bad(HeaderFault::Malformed));
    }
}
