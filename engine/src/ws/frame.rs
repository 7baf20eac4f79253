//! WebSocket framing for the connection's byte stream, with no I/O: client frames are
//! taken apart **in place** in the receive buffer (headers removed, payloads unmasked
//! and moved up), so the protocol decoder sees the same byte stream as on TCP; server
//! frames get a small header each on the way out. Headers are parsed and formatted by
//! tungstenite's `FrameHeader`.
//!
//! The transport's rule: one protocol frame per binary WebSocket message. A client
//! frame that breaks it — a text message, a fragmented one, one larger than the limit,
//! an unmasked one, a message holding part of a frame or more than one — is refused
//! with a close code, never half-handled.

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use conduit_protocol::{HEADER_LEN, MAGIC};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Longest WebSocket frame header (a masked client frame with a 64-bit length).
const MAX_HEADER_BYTES: usize = 14;
/// Longest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_BYTES: usize = 125;

/// Why a client's WebSocket frame was refused; each maps to the close code sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WsRefusal {
    /// A text message: the transport carries binary frames only.
    #[error("text messages are not accepted")]
    Text,
    /// A fragmented message (continuation frames).
    #[error("fragmented messages are not accepted")]
    Fragmented,
    /// A message over the size limit.
    #[error("message too large")]
    TooLarge,
    /// A frame without the client mask, with reserved bits or a reserved opcode, or a
    /// malformed control frame.
    #[error("malformed websocket frame")]
    Malformed,
    /// A message that is not exactly one protocol frame.
    #[error("a message must hold exactly one frame")]
    NotOneFrame,
}

impl WsRefusal {
    /// The close code (RFC 6455 §7.4.1).
    pub fn code(self) -> u16 {
        match self {
            WsRefusal::Text => 1003,
            WsRefusal::TooLarge => 1009,
            WsRefusal::Fragmented | WsRefusal::Malformed | WsRefusal::NotOneFrame => 1002,
        }
    }
}

/// What the peer's control frames ask of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsControl {
    /// Answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The peer closes (with its code, if it sent one).
    Close(Option<u16>),
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Between frames (header bytes may be stashed).
    Header,
    /// Inside a binary message's payload.
    Data {
        mask: [u8; 4],
        /// Payload bytes of the message.
        len: u64,
        /// Of which consumed.
        pos: u64,
    },
    /// Inside a control frame's payload.
    Control {
        kind: Control,
        mask: [u8; 4],
        len: u64,
        pos: u64,
    },
}

/// One connection's inbound WebSocket state.
#[derive(Debug)]
pub(crate) struct Deframer {
    /// Header bytes that arrived without the rest of their header.
    head: Vec<u8>,
    state: State,
    /// The first bytes of the current message (its protocol header's length field).
    first: [u8; 16],
    /// Largest binary message accepted.
    max_message_bytes: u64,
    /// Payload of the control frame being read.
    control: Vec<u8>,
}

impl Deframer {
    /// A deframer taking binary messages of at most `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Deframer {
        Deframer {
            head: Vec::new(),
            state: State::Header,
            first: [0; 16],
            max_message_bytes: max_message_bytes as u64,
            control: Vec::new(),
        }
    }

    /// Takes the WebSocket frames out of `buf` (bytes as read from the socket): the
    /// protocol bytes they carry are moved to the front, unmasked, and their count is
    /// returned; control frames are appended to `controls`. Frames split across calls
    /// are carried over.
    pub fn deframe(
        &mut self,
        buf: &mut [u8],
        controls: &mut Vec<WsControl>,
    ) -> Result<usize, WsRefusal> {
        let mut read = 0;
        let mut written = 0;
        while read < buf.len() {
            match self.state {
                State::Header => {
                    let take = (MAX_HEADER_BYTES - self.head.len()).min(buf.len() - read);
                    let stashed = self.head.len();
                    self.head.extend_from_slice(&buf[read..read + take]);
                    let mut cursor = Cursor::new(&self.head[..]);
                    let parsed =
                        FrameHeader::parse(&mut cursor).map_err(|_| WsRefusal::Malformed)?;
                    let Some((header, len)) = parsed else {
                        read += take;
                        continue;
                    };
                    // The stash may hold payload bytes of this call past the header:
                    // they are read again from `buf`.
                    let header_len = cursor.position() as usize;
                    read += header_len - stashed;
                    self.head.clear();
                    self.state = self.start(&header, len)?;
                }
                State::Data { mask, len, pos } => {
                    let n = ((len - pos) as usize).min(buf.len() - read);
                    for i in 0..n {
                        let b = buf[read + i] ^ mask[((pos as usize) + i) % 4];
                        let at = pos as usize + i;
                        if at < self.first.len() {
                            self.first[at] = b;
                        }
                        buf[written + i] = b;
                    }
                    read += n;
                    written += n;
                    let before = pos;
                    let pos = pos + n as u64;
                    let head = self.first.len() as u64;
                    // The protocol header's length field just became whole.
                    if before < head && pos >= head {
                        self.check_one_frame(len)?;
                    }
                    if pos == len {
                        if len < self.first.len() as u64 {
                            return Err(WsRefusal::NotOneFrame);
                        }
                        self.state = State::Header;
                    } else {
                        self.state = State::Data { mask, len, pos };
                    }
                }
                State::Control {
                    kind,
                    mask,
                    len,
                    pos,
                } => {
                    let n = ((len - pos) as usize).min(buf.len() - read);
                    for i in 0..n {
                        self.control
                            .push(buf[read + i] ^ mask[((pos as usize) + i) % 4]);
                    }
                    read += n;
                    let pos = pos + n as u64;
                    if pos < len {
                        self.state = State::Control {
                            kind,
                            mask,
                            len,
                            pos,
                        };
                        continue;
                    }
                    let payload = std::mem::take(&mut self.control);
                    match kind {
                        Control::Ping => controls.push(WsControl::Ping(payload)),
                        Control::Close => {
                            let code = (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            controls.push(WsControl::Close(code));
                        }
                        _ => {}
                    }
                    self.state = State::Header;
                }
            }
        }
        Ok(written)
    }

    /// The state a parsed header leads to, or why it is refused.
    fn start(&mut self, header: &FrameHeader, len: u64) -> Result<State, WsRefusal> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WsRefusal::Malformed);
        }
        // Clients must mask (RFC 6455 §5.1).
        let mask = header.mask.ok_or(WsRefusal::Malformed)?;
        match header.opcode {
            OpCode::Data(Data::Binary) if header.is_final => {
                if len > self.max_message_bytes {
                    return Err(WsRefusal::TooLarge);
                }
                if len == 0 {
                    return Err(WsRefusal::NotOneFrame);
                }
                Ok(State::Data { mask, len, pos: 0 })
            }
            OpCode::Data(Data::Binary | Data::Continue) => Err(WsRefusal::Fragmented),
            OpCode::Data(Data::Text) => Err(WsRefusal::Text),
            OpCode::Control(kind @ (Control::Ping | Control::Pong | Control::Close))
                if header.is_final && len <= MAX_CONTROL_BYTES as u64 =>
            {
                Ok(State::Control {
                    kind,
                    mask,
                    len,
                    pos: 0,
                })
            }
            _ => Err(WsRefusal::Malformed),
        }
    }

    /// Once the first 16 bytes of a message are in: it must be one protocol frame,
    /// whose header's length plus the header is the message's length.
    fn check_one_frame(&self, len: u64) -> Result<(), WsRefusal> {
        if self.first[..4] != MAGIC {
            return Err(WsRefusal::NotOneFrame);
        }
        let body = u32::from_be_bytes([
            self.first[12],
            self.first[13],
            self.first[14],
            self.first[15],
        ]);
        if HEADER_LEN as u64 + u64::from(body) != len {
            return Err(WsRefusal::NotOneFrame);
        }
        Ok(())
    }
}

/// Whether a queued frame of a WebSocket connection is already a WebSocket frame (a
/// pong or a close the transport queued) rather than a protocol frame to wrap: every
/// protocol frame starts with the magic.
pub(crate) fn is_ws_frame(frame: &[u8]) -> bool {
    !frame.starts_with(&MAGIC)
}

/// The headers of binary messages carrying `frames`, one after another in one buffer
/// (one allocation per batch), split into one `Bytes` per frame.
pub(crate) fn headers_for(frames: &[Bytes]) -> Vec<Bytes> {
    let mut buf = BytesMut::with_capacity(frames.len() * 10);
    let mut lens = Vec::with_capacity(frames.len());
    for f in frames {
        let before = buf.len();
        if !is_ws_frame(f) {
            write_header(&mut buf, OpCode::Data(Data::Binary), f.len() as u64);
        }
        lens.push(buf.len() - before);
    }
    let mut buf = buf.freeze();
    lens.into_iter().map(|n| buf.split_to(n)).collect()
}

fn write_header(buf: &mut BytesMut, opcode: OpCode, len: u64) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut w = buf.writer();
    // Writing into memory cannot fail.
    let _ = header.format(len, &mut w);
}

/// A pong answering a ping's `payload`.
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + payload.len());
    write_header(
        &mut buf,
        OpCode::Control(Control::Pong),
        payload.len() as u64,
    );
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// A close frame with `code` and a short `reason` (cut to fit a control frame).
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let mut reason = reason.as_bytes();
    reason = &reason[..reason.len().min(MAX_CONTROL_BYTES - 2)];
    let mut buf = BytesMut::with_capacity(4 + reason.len());
    write_header(
        &mut buf,
        OpCode::Control(Control::Close),
        2 + reason.len() as u64,
    );
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(reason);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    use super::*;

    /// A masked client frame.
    fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// A protocol frame of `body` bytes (header + zero body).
    fn proto_frame(body: u32) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_LEN + body as usize];
        f[..4].copy_from_slice(&MAGIC);
        f[12..16].copy_from_slice(&body.to_be_bytes());
        f[HEADER_LEN..].fill(7);
        f
    }

    fn binary(payload: &[u8]) -> Vec<u8> {
        client_frame(OpCode::Data(Data::Binary), true, payload)
    }

    /// Feeds `stream` in pieces of `chunk` bytes; the protocol bytes and controls out.
    fn run(stream: &[u8], chunk: usize) -> Result<(Vec<u8>, Vec<WsControl>), WsRefusal> {
        let mut d = Deframer::new(1 << 20);
        let mut out = Vec::new();
        let mut controls = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut buf = piece.to_vec();
            let n = d.deframe(&mut buf, &mut controls)?;
            out.extend_from_slice(&buf[..n]);
        }
        Ok((out, controls))
    }

    #[test]
    fn frames_come_out_whole_whatever_the_read_sizes() {
        let (a, b) = (proto_frame(0), proto_frame(70_000));
        let mut stream = binary(&a);
        stream.extend(client_frame(OpCode::Control(Control::Ping), true, b"hi"));
        stream.extend(binary(&b));
        stream.extend(client_frame(
            OpCode::Control(Control::Close),
            true,
            &1000u16.to_be_bytes(),
        ));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        for chunk in [1, 2, 3, 7, 13, 100, 4096, stream.len()] {
            let (out, controls) = run(&stream, chunk).unwrap();
            assert_eq!(out, want, "chunk {chunk}");
            assert_eq!(
                controls,
                vec![
                    WsControl::Ping(b"hi".to_vec()),
                    WsControl::Close(Some(1000))
                ]
            );
        }
    }

    #[test]
    fn what_breaks_the_rules_is_refused() {
        let f = proto_frame(8);
        let text = client_frame(OpCode::Data(Data::Text), true, &f);
        assert_eq!(run(&text, 64), Err(WsRefusal::Text));
        let first_half = client_frame(OpCode::Data(Data::Binary), false, &f[..20]);
        assert_eq!(run(&first_half, 64), Err(WsRefusal::Fragmented));
        // Two protocol frames in one message, and half a frame in one.
        let mut two = f.clone();
        two.extend_from_slice(&f);
        assert_eq!(run(&binary(&two), 7), Err(WsRefusal::NotOneFrame));
        assert_eq!(run(&binary(&f[..30]), 7), Err(WsRefusal::NotOneFrame));
        assert_eq!(run(&binary(&f[..10]), 3), Err(WsRefusal::NotOneFrame));
        assert_eq!(
            run(&binary(b"not a protocol frame at all....."), 5),
            Err(WsRefusal::NotOneFrame)
        );
        // Unmasked.
        let mut unmasked = Vec::new();
        FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        }
        .format(f.len() as u64, &mut unmasked)
        .unwrap();
        unmasked.extend_from_slice(&f);
        assert_eq!(run(&unmasked, 64), Err(WsRefusal::Malformed));
        // Over the limit: refused at its header, before any payload.
        let mut d = Deframer::new(100);
        let mut big = binary(&proto_frame(200))[..14].to_vec();
        assert_eq!(
            d.deframe(&mut big, &mut Vec::new()),
            Err(WsRefusal::TooLarge)
        );
        assert_eq!(WsRefusal::TooLarge.code(), 1009);
    }

    #[test]
    fn server_frames_wrap_protocol_frames_and_pass_control_frames() {
        let frames = vec![
            Bytes::from(proto_frame(3)),
            pong(b"x"),
            Bytes::from(proto_frame(300)),
        ];
        let headers = headers_for(&frames);
        assert_eq!(headers[0][..], [0x82, 35]);
        assert!(headers[1].is_empty(), "a pong is already framed");
        assert_eq!(headers[2][..], [0x82, 126, 1, 76]);
        assert_eq!(pong(b"x")[..], [0x8A, 1, b'x']);
        assert_eq!(
            close(1000, "bye")[..],
            [0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']
        );
    }
}
