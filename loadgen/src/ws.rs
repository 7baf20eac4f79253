//! The client side of the WebSocket transport, with no I/O (so it runs over the
//! load generator's stream on either runtime backend): the HTTP/1.1 upgrade request
//! and the check of its answer, protocol frames wrapped one per masked binary message
//! on the way out, and the server's messages taken apart **in place** in the receive
//! buffer on the way in, so the protocol decoder sees the same byte stream as on TCP.
//! Headers are parsed and formatted by tungstenite's `FrameHeader`.

use std::io::Cursor;

use conduit_protocol::{HEADER_LEN, MAGIC};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::Error;

/// The path the server's WebSocket listener serves.
pub const WS_PATH: &str = "/conduit";

/// Longest WebSocket frame header.
const MAX_HEADER_BYTES: usize = 14;

/// Longest upgrade answer head accepted, bytes.
pub const MAX_UPGRADE_RESPONSE_BYTES: usize = 8 * 1024;

/// The upgrade request for `host` (`host:port`) with the client's `key`.
pub fn upgrade_request(host: &str, key: &str) -> String {
    format!(
        "GET {WS_PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A fresh `Sec-WebSocket-Key`.
pub fn new_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// Checks the server's answer to the upgrade asked with `key`: `Ok(None)` while its
/// head is incomplete, `Ok(Some(n))` once a valid `101` head of `n` bytes is in
/// (bytes past it are WebSocket frames), an error for anything else.
pub fn check_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, Error> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_UPGRADE_RESPONSE_BYTES {
            return Err(Error::Protocol("upgrade answer head too large".into()));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(Error::Protocol(format!(
            "WebSocket upgrade refused: {status:?}"
        )));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accepted = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("Sec-WebSocket-Accept") && value.trim() == expected
        })
    });
    if !accepted {
        return Err(Error::Protocol(
            "WebSocket upgrade answer lacks the right Sec-WebSocket-Accept".into(),
        ));
    }
    Ok(Some(end + 4))
}

/// XORs `buf` with `mask` (RFC 6455 §5.3), eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so at mask index 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// What a server's control frames ask of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerControl {
    /// Answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The server closes (with its code, if it sent one).
    Close(Option<u16>),
}

/// One connection's WebSocket state: its masks and its inbound deframing.
#[derive(Debug)]
pub struct WsClient {
    /// xorshift64 state the masks come from.
    mask_state: u64,
    /// Header bytes that arrived without the rest of their header.
    head: [u8; MAX_HEADER_BYTES],
    head_len: usize,
    state: State,
    /// Payload of the control frame being read.
    control: Vec<u8>,
    /// The bytes of the last [`WsClient::wrap`].
    pub out: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Between frames.
    Header,
    /// Inside a data frame's payload, `left` bytes to go.
    Data { left: u64 },
    /// Inside a control frame's payload.
    Control { kind: Control, left: u64 },
}

impl WsClient {
    /// A connection's state; `seed` varies the masks between connections.
    pub fn new(seed: u64) -> WsClient {
        WsClient {
            mask_state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            head: [0; MAX_HEADER_BYTES],
            head_len: 0,
            state: State::Header,
            control: Vec::new(),
            out: Vec::new(),
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_ne_bytes()
    }

    /// Appends one masked client frame of `opcode` carrying `payload` to `self.out`.
    fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.next_mask();
        let header = FrameHeader {
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        // Writing into memory cannot fail.
        let _ = header.format(payload.len() as u64, &mut self.out);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        apply_mask(&mut self.out[start..], mask);
    }

    /// Puts each protocol frame of `bytes` (one or more, back to back) in a masked
    /// binary message of its own, into `self.out` (cleared first).
    pub fn wrap(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        self.out.clear();
        while !bytes.is_empty() {
            if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
                return Err(Error::Protocol(
                    "cannot frame a partial protocol frame as a WebSocket message".into(),
                ));
            }
            let body = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
            let len = HEADER_LEN + body as usize;
            if bytes.len() < len {
                return Err(Error::Protocol("truncated protocol frame".into()));
            }
            self.push_frame(OpCode::Data(Data::Binary), &bytes[..len]);
            bytes = &bytes[len..];
        }
        Ok(())
    }

    /// A masked pong answering a ping's `payload`, into `self.out` (cleared first).
    pub fn pong(&mut self, payload: &[u8]) {
        self.out.clear();
        self.push_frame(OpCode::Control(Control::Pong), payload);
    }

    /// Takes the server's WebSocket frames out of `buf` (bytes as read from the
    /// socket): the protocol bytes they carry are moved to the front and their count
    /// is returned; control frames are appended to `controls`. Frames split across
    /// calls are carried over.
    pub fn deframe(
        &mut self,
        buf: &mut [u8],
        controls: &mut Vec<ServerControl>,
    ) -> Result<usize, Error> {
        let mut read = 0;
        let mut written = 0;
        while read < buf.len() {
            match self.state {
                State::Header => {
                    let stashed = self.head_len;
                    let take = (MAX_HEADER_BYTES - stashed).min(buf.len() - read);
                    self.head[stashed..stashed + take].copy_from_slice(&buf[read..read + take]);
                    self.head_len += take;
                    let mut cursor = Cursor::new(&self.head[..self.head_len]);
                    let parsed = FrameHeader::parse(&mut cursor)
                        .map_err(|e| Error::Protocol(format!("WebSocket frame: {e}")))?;
                    let Some((header, len)) = parsed else {
                        read += take;
                        continue;
                    };
                    // The stash may hold payload bytes past the header: they are read
                    // again from `buf`.
                    read += cursor.position() as usize - stashed;
                    self.head_len = 0;
                    self.state = start(&header, len)?;
                    if let State::Control { kind, left: 0 } = self.state {
                        // Complete at its header.
                        self.finish_control(kind, controls);
                    }
                }
                State::Data { left } => {
                    let n = (left.min((buf.len() - read) as u64)) as usize;
                    if read != written {
                        buf.copy_within(read..read + n, written);
                    }
                    read += n;
                    written += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Data { left }
                    };
                }
                State::Control { kind, left } => {
                    let n = (left.min((buf.len() - read) as u64)) as usize;
                    self.control.extend_from_slice(&buf[read..read + n]);
                    read += n;
                    let left = left - n as u64;
                    if left > 0 {
                        self.state = State::Control { kind, left };
                    } else {
                        self.finish_control(kind, controls);
                    }
                }
            }
        }
        Ok(written)
    }

    /// A whole control frame of `kind` is in: reports it, back to between frames.
    fn finish_control(&mut self, kind: Control, controls: &mut Vec<ServerControl>) {
        let payload = std::mem::take(&mut self.control);
        match kind {
            Control::Ping => controls.push(ServerControl::Ping(payload)),
            Control::Close => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                controls.push(ServerControl::Close(code));
            }
            _ => {}
        }
        self.state = State::Header;
    }
}

/// The state a server frame's header leads to.
fn start(header: &FrameHeader, len: u64) -> Result<State, Error> {
    let bad = |what: &str| Err(Error::Protocol(format!("WebSocket frame: {what}")));
    if header.mask.is_some() {
        return bad("a masked server frame");
    }
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return bad("reserved bits set");
    }
    match header.opcode {
        OpCode::Data(Data::Binary | Data::Continue) => {
            if len == 0 {
                Ok(State::Header)
            } else {
                Ok(State::Data { left: len })
            }
        }
        OpCode::Data(Data::Text) => bad("a text message"),
        OpCode::Control(kind @ (Control::Ping | Control::Pong | Control::Close))
            if header.is_final && len <= 125 =>
        {
            Ok(State::Control { kind, left: len })
        }
        _ => bad("a reserved opcode or malformed control frame"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto_frame(body: usize) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_LEN + body];
        f[..4].copy_from_slice(&MAGIC);
        f[12..16].copy_from_slice(&(body as u32).to_be_bytes());
        for (i, b) in f[HEADER_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader {
            opcode,
            ..FrameHeader::default()
        }
        .format(payload.len() as u64, &mut out)
        .unwrap();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn mask_matches_the_bytewise_rule() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mask = [0x12, 0x34, 0x56, 0x78];
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn wrap_puts_each_protocol_frame_in_a_masked_binary_message() {
        let mut c = WsClient::new(7);
        let (a, b) = (proto_frame(3), proto_frame(300));
        let mut both = a.clone();
        both.extend_from_slice(&b);
        c.wrap(&both).unwrap();
        let mut cursor = Cursor::new(&c.out[..]);
        for want in [&a, &b] {
            let (h, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(h.opcode, OpCode::Data(Data::Binary));
            assert!(h.is_final);
            assert_eq!(len, want.len() as u64);
            let at = cursor.position() as usize;
            let mut payload = c.out[at..at + want.len()].to_vec();
            apply_mask(&mut payload, h.mask.expect("client frames are masked"));
            assert_eq!(&payload, want);
            cursor.set_position((at + want.len()) as u64);
        }
        assert_eq!(cursor.position() as usize, c.out.len());
        assert!(c.wrap(&a[..10]).is_err());
        assert!(c.wrap(&a[..a.len() - 1]).is_err());
    }

    #[test]
    fn deframe_yields_the_tcp_byte_stream_at_any_split() {
        let (a, b) = (proto_frame(5), proto_frame(200));
        let mut wire = server_frame(OpCode::Data(Data::Binary), &a);
        wire.extend(server_frame(OpCode::Control(Control::Ping), b"hi"));
        wire.extend(server_frame(OpCode::Data(Data::Binary), &b));
        wire.extend(server_frame(OpCode::Control(Control::Pong), b""));
        wire.extend(server_frame(OpCode::Control(Control::Ping), b""));
        wire.extend(server_frame(OpCode::Control(Control::Close), &[3, 232]));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        for chunk in 1..wire.len() {
            let mut c = WsClient::new(1);
            let mut got = Vec::new();
            let mut controls = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut buf = piece.to_vec();
                let n = c.deframe(&mut buf, &mut controls).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(
                controls,
                [
                    ServerControl::Ping(b"hi".to_vec()),
                    ServerControl::Ping(Vec::new()),
                    ServerControl::Close(Some(1000))
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn deframe_refuses_text_and_masked_frames() {
        let mut c = WsClient::new(1);
        let mut text = server_frame(OpCode::Data(Data::Text), b"x");
        assert!(c.deframe(&mut text, &mut Vec::new()).is_err());
        let mut c = WsClient::new(1);
        c.wrap(&proto_frame(1)).unwrap();
        let mut masked = c.out.clone();
        assert!(WsClient::new(2)
            .deframe(&mut masked, &mut Vec::new())
            .is_err());
    }

    #[test]
    fn upgrade_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let mut with_data = ok.as_bytes().to_vec();
        with_data.extend_from_slice(&[0x82, 0]);
        assert_eq!(
            check_upgrade_response(&with_data, key).unwrap(),
            Some(ok.len())
        );
        assert_eq!(
            check_upgrade_response(&ok.as_bytes()[..20], key).unwrap(),
            None
        );
        let wrong = ok.replace("s3pP", "AAAA");
        assert!(check_upgrade_response(wrong.as_bytes(), key).is_err());
        assert!(check_upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n", key).is_err());
        assert!(upgrade_request("127.0.0.1:1", key).contains("GET /conduit HTTP/1.1\r\n"));
    }
}
