//! Incremental frame decoding over an aligned receive buffer.
//!
//! The caller reads socket bytes straight into [`FrameDecoder::spare`], reports them
//! with [`FrameDecoder::commit`], then drains whole frames with
//! [`FrameDecoder::next_frame`]. Any split of the byte stream yields the same frames.
//!
//! Zero-copy: the buffer's memory is 8-byte aligned and native frames always span a
//! multiple of 8 bytes, so every native payload starts 8-byte aligned and rkyv can
//! access it in place. A frame that arrived whole is handed out as a slice of the very
//! bytes the socket read wrote; only the unfinished tail of a frame is ever moved (to
//! the front of the buffer, when it would not otherwise fit).

use crate::error::WireError;
use crate::header::{Codec, Header, HEADER_LEN, MAGIC};

/// Limits the decoder enforces; each is checked before any memory is sized by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Largest payload accepted, in bytes. A header announcing more is an
    /// [`WireError::Oversize`] before the buffer grows.
    pub max_payload_bytes: u32,
    /// Receive buffer size a connection starts with (and shrinks back to when idle).
    /// Frames up to this size never cause an allocation.
    pub initial_buffer_bytes: usize,
    /// Accept netconduit-v1 (MessagePack) frames.
    pub accept_v1: bool,
    /// Accept native (rkyv) frames.
    pub accept_native: bool,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_payload_bytes: 16 * 1024 * 1024,
            initial_buffer_bytes: 4096,
            accept_v1: true,
            accept_native: true,
        }
    }
}

/// A growable byte buffer whose storage is 8-byte aligned.
///
/// Bytes live in `start..end`; `end..capacity` is spare room for the next read.
#[derive(Debug)]
pub struct RecvBuf {
    /// `u64` words so the allocation is 8-byte aligned; viewed as bytes.
    words: Vec<u64>,
    /// Offset of the first unconsumed byte.
    start: usize,
    /// Offset one past the last received byte.
    end: usize,
}

impl RecvBuf {
    /// A buffer of at least `bytes` capacity (rounded up to a multiple of 8).
    pub fn with_capacity(bytes: usize) -> RecvBuf {
        RecvBuf {
            words: vec![0u64; bytes.div_ceil(8).max(1)],
            start: 0,
            end: 0,
        }
    }

    /// No storage at all: a parked decoder's.
    fn parked() -> RecvBuf {
        RecvBuf {
            words: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.words.len() * 8
    }

    /// Unconsumed bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The whole allocation as bytes (for tests that prove where a payload lives).
    pub fn storage(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[self.start..self.end]
    }

    fn spare(&mut self) -> &mut [u8] {
        let end = self.end;
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[end..]
    }

    /// Makes room for `total` bytes counted from `start`, moving the unconsumed bytes
    /// to offset 0 (which keeps 8-byte alignment when `start` is a multiple of 8) or
    /// growing the allocation.
    fn reserve_frame(&mut self, total: usize) {
        if self.capacity() - self.start >= total {
            return;
        }
        if self.capacity() >= total {
            self.compact();
            return;
        }
        let mut words = vec![0u64; total.div_ceil(8)];
        let len = self.len();
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len].copy_from_slice(self.bytes());
        self.words = words;
        self.start = 0;
        self.end = len;
    }

    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let (start, end) = (self.start, self.end);
        bytemuck::cast_slice_mut::<u64, u8>(&mut self.words).copy_within(start..end, 0);
        self.start = 0;
        self.end = end - start;
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

/// One decoded frame, borrowing its payload from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame<'a> {
    /// The frame's header.
    pub header: Header,
    /// The payload, without native padding. For native frames it starts 8-byte aligned.
    pub payload: &'a [u8],
}

/// Turns a byte stream into frames. Sans-I/O: the caller moves the bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received, not yet decoded bytes.
    buf: RecvBuf,
    /// The limits in force.
    limits: DecoderLimits,
    /// Fixed by the first frame; later frames must use the same codec.
    codec: Option<Codec>,
    /// Header of a frame whose payload has not fully arrived; avoids re-parsing it on
    /// every read of a large frame.
    pending: Option<Header>,
    /// Bytes of the frame last returned by `next_frame`, released on the next call (the
    /// returned payload borrows them until then).
    consumed_on_next: usize,
}

/// Smallest spare room offered for a read, so a read is never tiny.
const MIN_READ_BYTES: usize = 1024;

impl FrameDecoder {
    /// A decoder with the given limits and an empty buffer of the initial size.
    pub fn new(limits: DecoderLimits) -> FrameDecoder {
        FrameDecoder {
            buf: RecvBuf::with_capacity(limits.initial_buffer_bytes.max(HEADER_LEN)),
            limits,
            codec: None,
            pending: None,
            consumed_on_next: 0,
        }
    }

    /// The codec fixed by the first frame, once one arrived.
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// Changes the largest payload accepted from the next header on (a connection
    /// accepts only small frames until it has logged in). A frame whose header was
    /// already accepted keeps the limit it was checked against.
    pub fn set_max_payload_bytes(&mut self, max: u32) {
        self.limits.max_payload_bytes = max;
    }

    /// The codec named by the header at the front of the unconsumed bytes, if they
    /// start with the magic and a known version, whether or not this decoder accepts
    /// that codec or the rest of the header. After [`next_frame`](Self::next_frame)
    /// returned an error this is the codec the offending frame was written in, so the
    /// refusal can be sent in it.
    pub fn front_codec(&self) -> Option<Codec> {
        let bytes = self.buf.bytes().get(self.consumed_on_next..)?;
        if bytes.get(..4)? != MAGIC {
            return None;
        }
        Codec::from_version(u16::from_be_bytes([*bytes.get(4)?, *bytes.get(5)?]))
    }

    /// Gives up the receive buffer while the decoder holds nothing — no buffered bytes,
    /// no partial frame — so an idle connection keeps no buffer: the caller keeps it
    /// for another decoder (returned when it has the initial capacity) or lets it go
    /// (`None`; a buffer a large frame grew is freed). The decoder is then
    /// [parked](Self::is_parked) until [`unpark`](Self::unpark) or
    /// [`spare`](Self::spare) gives it a buffer again. Nothing happens while it holds
    /// bytes or is parked already.
    pub fn park(&mut self) -> Option<RecvBuf> {
        self.release();
        if self.is_parked() || !self.buf.is_empty() || self.pending.is_some() {
            return None;
        }
        let buf = std::mem::replace(&mut self.buf, RecvBuf::parked());
        (buf.capacity() == self.initial_capacity()).then_some(buf)
    }

    /// Whether the decoder gave up its buffer ([`park`](Self::park)).
    pub fn is_parked(&self) -> bool {
        self.buf.words.is_empty()
    }

    /// Gives a parked decoder a buffer again: `buf` when it is an empty buffer of the
    /// initial capacity (one another decoder [parked](Self::park)), else a new one.
    /// Does nothing when the decoder is not parked.
    pub fn unpark(&mut self, buf: Option<RecvBuf>) {
        if !self.is_parked() {
            return;
        }
        self.buf = match buf {
            Some(b) if b.is_empty() && b.capacity() == self.initial_capacity() => b,
            _ => RecvBuf::with_capacity(self.initial_capacity()),
        };
    }

    /// The capacity a new receive buffer has, bytes: what a read into an idle
    /// decoder can take at most.
    pub fn initial_capacity(&self) -> usize {
        self.limits
            .initial_buffer_bytes
            .max(HEADER_LEN)
            .next_multiple_of(8)
    }

    /// The receive buffer (for inspection).
    pub fn buffer(&self) -> &RecvBuf {
        &self.buf
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed_on_next
    }

    /// Spare room to read socket bytes into. Call [`commit`](Self::commit) with the
    /// number of bytes written, then [`next_frame`](Self::next_frame) until it returns
    /// `Ok(None)`; after that the slice is never empty.
    ///
    /// The buffer never grows past [`max_buffer_bytes`](Self::max_buffer_bytes). If a
    /// caller keeps adding bytes without draining frames, the slice can come back empty.
    pub fn spare(&mut self) -> &mut [u8] {
        self.release();
        self.unpark(None);
        let initial = self.limits.initial_buffer_bytes.max(HEADER_LEN);
        if self.buf.is_empty() && self.buf.capacity() > 4 * initial {
            // A past large frame grew the buffer; an idle connection gives it back.
            self.buf = RecvBuf::with_capacity(initial);
        }
        let room = self.buf.capacity() - self.buf.end;
        if room < MIN_READ_BYTES.min(self.buf.capacity()) && self.buf.start > 0 {
            self.buf.compact();
        }
        if self.buf.end == self.buf.capacity() {
            // Grow geometrically so a caller feeding a long stream pays amortised O(1).
            let len = self.buf.len();
            let want = (len + MIN_READ_BYTES)
                .max(len * 2)
                .min(self.max_buffer_bytes());
            self.buf.reserve_frame(want);
        }
        self.buf.spare()
    }

    /// The most memory the receive buffer may ever hold: one maximal frame plus one
    /// read's worth of the next, or the initial buffer if that is larger.
    pub fn max_buffer_bytes(&self) -> usize {
        let frame = HEADER_LEN + self.limits.max_payload_bytes as usize + MIN_READ_BYTES;
        let initial = self.limits.initial_buffer_bytes.max(HEADER_LEN);
        frame.max(initial).next_multiple_of(8)
    }

    /// Records that `n` bytes were written into the slice [`spare`](Self::spare) gave.
    pub fn commit(&mut self, n: usize) {
        let room = self.buf.capacity() - self.buf.end;
        self.buf.end += n.min(room);
    }

    /// Copies as much of `bytes` as fits into the buffer and returns how many were
    /// taken (for tests, fuzzing and non-socket sources). Everything is taken as long
    /// as frames are drained in between and no single frame exceeds the limits.
    pub fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut taken = 0;
        while !bytes.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(bytes.len());
            if n == 0 {
                break;
            }
            spare[..n].copy_from_slice(&bytes[..n]);
            self.commit(n);
            bytes = &bytes[n..];
            taken += n;
        }
        taken
    }

    fn release(&mut self) {
        if self.consumed_on_next > 0 {
            self.buf.consume(self.consumed_on_next);
            self.consumed_on_next = 0;
        }
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the first
    /// protocol error (after which the connection should be closed; the decoder state
    /// is not meant to be resumed).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        self.release();
        let header = match self.pending {
            Some(h) => h,
            None => {
                let Some(head) = self.buf.bytes().first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let header = self.check(Header::decode(head)?)?;
                self.pending = Some(header);
                header
            }
        };
        let total = HEADER_LEN + header.length as usize;
        if self.buf.len() < total {
            self.buf.reserve_frame(total);
            return Ok(None);
        }
        self.pending = None;
        self.consumed_on_next = total;
        let pad = if header.codec == Codec::Native {
            header.reserved as usize
        } else {
            0
        };
        let payload = &self.buf.bytes()[HEADER_LEN..total - pad];
        Ok(Some(Frame { header, payload }))
    }

    /// Applies the per-connection rules a header must meet before its payload is
    /// buffered.
    fn check(&mut self, header: Header) -> Result<Header, WireError> {
        let accepted = match header.codec {
            Codec::V1 => self.limits.accept_v1,
            Codec::Native => self.limits.accept_native,
        };
        if !accepted {
            return Err(WireError::UnknownVersion(header.codec.version()));
        }
        if let Some(expected) = self.codec {
            if expected != header.codec {
                return Err(WireError::CodecMismatch {
                    expected,
                    got: header.codec,
                });
            }
        }
        if header.length > self.limits.max_payload_bytes {
            return Err(WireError::Oversize {
                length: header.length.into(),
                max: self.limits.max_payload_bytes.into(),
            });
        }
        if header.codec == Codec::Native {
            if !header.length.is_multiple_of(8) {
                return Err(WireError::NativeLayout("length is not a multiple of 8"));
            }
            if header.reserved > 7 || u32::from(header.reserved) > header.length {
                return Err(WireError::NativeLayout("padding count out of range"));
            }
        }
        self.codec = Some(header.codec);
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::FrameKind;

    fn frame(codec: Codec, kind: FrameKind, payload: &[u8], corr: u64) -> Vec<u8> {
        let mut h = Header::new(codec, kind);
        h.length = payload.len() as u32;
        h.correlation_id = corr;
        let mut out = h.encode().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn many_frames_in_one_read() {
        let mut bytes = frame(Codec::V1, FrameKind::Ping, &[], 0);
        bytes.extend(frame(Codec::V1, FrameKind::Message, b"\x80", 0));
        bytes.extend(frame(Codec::V1, FrameKind::RpcRequest, b"\x80", 9));
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&bytes);
        let kinds: Vec<_> =
            std::iter::from_fn(|| d.next_frame().unwrap().map(|f| f.header.kind)).collect();
        assert_eq!(
            kinds,
            [FrameKind::Ping, FrameKind::Message, FrameKind::RpcRequest]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn one_byte_at_a_time() {
        let payload = vec![7u8; 5000];
        let bytes = frame(Codec::V1, FrameKind::Message, &payload, 3);
        let mut d = FrameDecoder::new(DecoderLimits::default());
        for (i, b) in bytes.iter().enumerate() {
            d.feed(std::slice::from_ref(b));
            let got = d.next_frame().unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none());
            } else {
                let f = got.unwrap();
                assert_eq!(f.payload, &payload[..]);
                assert_eq!(f.header.correlation_id, 3);
            }
        }
    }

    #[test]
    fn oversize_is_rejected_before_the_buffer_grows() {
        let limits = DecoderLimits {
            max_payload_bytes: 1024,
            ..DecoderLimits::default()
        };
        let mut d = FrameDecoder::new(limits);
        let mut h = Header::new(Codec::V1, FrameKind::Message);
        h.length = u32::MAX;
        d.feed(&h.encode());
        let cap = d.buffer().capacity();
        assert_eq!(
            d.next_frame(),
            Err(WireError::Oversize {
                length: u32::MAX.into(),
                max: 1024
            })
        );
        assert_eq!(d.buffer().capacity(), cap);
    }

    #[test]
    fn codec_is_fixed_by_the_first_frame() {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&frame(Codec::V1, FrameKind::Ping, &[], 0));
        d.feed(&frame(Codec::Native, FrameKind::Ping, &[], 0));
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(
            d.next_frame(),
            Err(WireError::CodecMismatch {
                expected: Codec::V1,
                got: Codec::Native
            })
        );
    }

    #[test]
    fn refused_codec_is_an_unknown_version() {
        let mut d = FrameDecoder::new(DecoderLimits {
            accept_v1: false,
            ..DecoderLimits::default()
        });
        d.feed(&frame(Codec::V1, FrameKind::Ping, &[], 0));
        assert_eq!(d.next_frame(), Err(WireError::UnknownVersion(0x0100)));
    }

    #[test]
    fn native_layout_rules() {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&frame(Codec::Native, FrameKind::Message, &[0; 5], 0));
        assert!(matches!(d.next_frame(), Err(WireError::NativeLayout(_))));
        let mut h = Header::new(Codec::Native, FrameKind::Message);
        h.length = 8;
        h.reserved = 9;
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&h.encode());
        assert!(matches!(d.next_frame(), Err(WireError::NativeLayout(_))));
    }

    #[test]
    fn front_codec_names_the_refused_frame() {
        let mut d = FrameDecoder::new(DecoderLimits {
            max_payload_bytes: 64,
            ..DecoderLimits::default()
        });
        assert_eq!(d.front_codec(), None);
        let mut h = Header::new(Codec::Native, FrameKind::Message);
        h.length = 1024;
        d.feed(&h.encode());
        assert!(matches!(d.next_frame(), Err(WireError::Oversize { .. })));
        assert_eq!(d.front_codec(), Some(Codec::Native));
        // An unknown type still names its codec; an unknown version or bad magic does not.
        let mut raw = Header::new(Codec::V1, FrameKind::Ping).encode();
        raw[7] = 0x40;
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&raw);
        assert_eq!(d.next_frame(), Err(WireError::UnknownType(0x40)));
        assert_eq!(d.front_codec(), Some(Codec::V1));
        raw[4] = 3;
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&raw);
        assert!(d.next_frame().is_err());
        assert_eq!(d.front_codec(), None);
        // After a good frame, the next header is the front.
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&frame(Codec::V1, FrameKind::Ping, &[], 0));
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.front_codec(), None);
    }

    #[test]
    fn the_payload_limit_can_be_raised_between_frames() {
        let mut d = FrameDecoder::new(DecoderLimits {
            max_payload_bytes: 64,
            ..DecoderLimits::default()
        });
        // The initial buffer (4 KiB) is larger than a 64-byte frame: it is the bound.
        assert!(d.buffer().capacity() <= d.max_buffer_bytes());
        d.feed(&frame(Codec::V1, FrameKind::Message, &[1; 64], 0));
        assert!(d.next_frame().unwrap().is_some());
        d.set_max_payload_bytes(4096);
        d.feed(&frame(Codec::V1, FrameKind::Message, &[2; 4096], 0));
        assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 4096);
        d.set_max_payload_bytes(64);
        d.feed(&frame(Codec::V1, FrameKind::Message, &[3; 65], 0));
        assert!(matches!(d.next_frame(), Err(WireError::Oversize { .. })));
    }

    #[test]
    fn an_idle_decoder_parks_its_buffer_and_a_partial_frame_keeps_it() {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        let whole = frame(Codec::V1, FrameKind::Message, &[7; 100], 0);
        // Half a frame buffered: the buffer stays.
        d.feed(&whole[..50]);
        assert!(d.next_frame().unwrap().is_none());
        assert!(d.park().is_none());
        assert!(!d.is_parked());
        d.feed(&whole[50..]);
        assert_eq!(d.next_frame().unwrap().unwrap().payload, &[7; 100][..]);
        // Drained: the buffer goes, with the initial capacity, for another decoder.
        let buf = d.park().expect("an idle decoder gives its buffer up");
        assert!(d.is_parked());
        assert_eq!(d.buffer().capacity(), 0);
        assert_eq!(buf.capacity(), d.initial_capacity());
        assert!(d.park().is_none(), "parked already");
        // Another decoder takes it; this one gets a fresh buffer from `spare`.
        let mut other = FrameDecoder::new(DecoderLimits::default());
        let _ = other.park();
        let addr = buf.storage().as_ptr();
        other.unpark(Some(buf));
        assert_eq!(other.buffer().storage().as_ptr(), addr);
        assert!(!d.spare().is_empty());
        assert_eq!(d.buffer().capacity(), d.initial_capacity());
        // And both decode after.
        for dec in [&mut d, &mut other] {
            dec.feed(&whole);
            assert_eq!(dec.next_frame().unwrap().unwrap().payload.len(), 100);
        }
    }

    #[test]
    fn a_grown_buffer_is_freed_when_parked_not_passed_on() {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&frame(Codec::V1, FrameKind::Message, &vec![1u8; 10_000], 0));
        assert!(d.next_frame().unwrap().is_some());
        assert!(d.park().is_none());
        assert!(d.is_parked());
        // A buffer of another size is not taken: the decoder makes its own.
        let mut small = FrameDecoder::new(DecoderLimits {
            initial_buffer_bytes: 256,
            ..DecoderLimits::default()
        });
        let odd = small.park().unwrap();
        d.unpark(Some(odd));
        assert_eq!(d.buffer().capacity(), d.initial_capacity());
    }

    #[test]
    fn large_frame_grows_then_idle_buffer_shrinks() {
        let limits = DecoderLimits::default();
        let mut d = FrameDecoder::new(limits);
        let payload = vec![1u8; 100_000];
        d.feed(&frame(Codec::V1, FrameKind::Message, &payload, 0));
        assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 100_000);
        assert!(d.buffer().capacity() >= 100_032);
        let _ = d.spare();
        assert!(d.buffer().capacity() <= limits.initial_buffer_bytes.max(HEADER_LEN) + 8);
    }
}
