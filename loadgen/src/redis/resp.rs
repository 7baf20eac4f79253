//! RESP2, the Redis wire format, as far as the comparison needs it: commands written
//! as arrays of bulk strings ([`command`]), and an incremental reader of replies
//! ([`RespReader`]) that takes bytes as they arrive — a reply split across reads, or
//! several in one read — and hands out each complete reply borrowed from its buffer,
//! without allocating.
//!
//! Everything is bounded: the buffer holds [`RESP_BUFFER_BYTES`], a line
//! [`MAX_LINE_BYTES`], a bulk string [`MAX_BULK_BYTES`], an array
//! [`MAX_ARRAY_ITEMS`] scalars (nested arrays are refused: no reply the load generator
//! asks for has one). Input that breaks the format, or a bound, is an
//! [`Error::Protocol`] naming what was wrong; nothing panics.

use std::io::Write;

use crate::{Error, Result};

/// Bytes one connection's reader buffers: a read takes at most this much, and every
/// reply must fit.
pub const RESP_BUFFER_BYTES: usize = 16 * 1024;

/// Longest line (a simple string, an error, or a length header), bytes without CRLF.
pub const MAX_LINE_BYTES: usize = 1024;

/// Largest bulk string accepted, bytes (with its header it must fit the buffer).
pub const MAX_BULK_BYTES: usize = 4 * 1024;

/// Most elements of one array reply (a pub/sub message has 3, a pattern message 4).
pub const MAX_ARRAY_ITEMS: usize = 8;

/// Appends the command `args` (name first) to `out`, as an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The length of [`command`]'s encoding of `args`, bytes.
pub fn command_len(args: &[&[u8]]) -> usize {
    let mut out = Vec::new();
    command(&mut out, args);
    out.len()
}

/// One scalar RESP value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// `+OK`: a simple string.
    Simple(&'a [u8]),
    /// `-ERR …`: an error reply, its text.
    Error(&'a [u8]),
    /// `:12`: an integer.
    Integer(i64),
    /// `$5 hello`: a bulk string.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`: nil.
    Nil,
}

/// The elements of an array reply, held inline (at most [`MAX_ARRAY_ITEMS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Items<'a> {
    len: usize,
    items: [Item<'a>; MAX_ARRAY_ITEMS],
}

impl<'a> Items<'a> {
    /// The elements, in order.
    pub fn as_slice(&self) -> &[Item<'a>] {
        &self.items[..self.len]
    }
}

/// One complete reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A scalar.
    Item(Item<'a>),
    /// An array of scalars (`*3`, or a RESP3 push `>3`): pub/sub messages and
    /// subscription confirmations.
    Array(Items<'a>),
}

impl<'a> Reply<'a> {
    /// The payload of a pub/sub message `["message", channel, payload]`, if this is one.
    pub fn message_payload(&self) -> Option<&'a [u8]> {
        match self {
            Reply::Array(items) => match items.as_slice() {
                [Item::Bulk(b"message"), Item::Bulk(_), Item::Bulk(p)] => Some(p),
                _ => None,
            },
            Reply::Item(_) => None,
        }
    }
}

/// An incremental reader of replies: read into [`RespReader::spare`], [`commit`] what
/// arrived, then take replies with [`RespReader::next_reply`] until it says `None` (the rest
/// of a reply has yet to arrive).
///
/// [`commit`]: RespReader::commit
#[derive(Debug)]
pub struct RespReader {
    buf: Box<[u8]>,
    /// First unread byte.
    start: usize,
    /// End of the bytes read.
    end: usize,
}

impl Default for RespReader {
    fn default() -> Self {
        RespReader::new()
    }
}

impl RespReader {
    /// An empty reader with a buffer of [`RESP_BUFFER_BYTES`].
    pub fn new() -> RespReader {
        RespReader {
            buf: vec![0; RESP_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Bytes read but not yet taken as replies.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Room to read into, after moving unread bytes to the front. Never empty: a full
    /// buffer holding no complete reply is an error (every reply fits, by the bounds).
    pub fn spare(&mut self) -> Result<&mut [u8]> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(Error::Protocol(format!(
                "RESP: {RESP_BUFFER_BYTES} bytes buffered without a complete reply"
            )));
        }
        Ok(&mut self.buf[self.end..])
    }

    /// Marks `n` bytes written into [`RespReader::spare`] as read.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies `bytes` in (what a socket read does through [`RespReader::spare`]);
    /// fails if they do not fit beside what is still unread.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let spare = self.spare()?;
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.commit(n);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// The next complete reply, or `None` until more bytes arrive.
    pub fn next_reply(&mut self) -> Result<Option<Reply<'_>>> {
        let buf = &self.buf[self.start..self.end];
        match parse(buf)? {
            Some((reply, used)) => {
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                Ok(Some(reply))
            }
            None => Ok(None),
        }
    }
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("RESP: {what}"))
}

/// The line at the start of `b` (after its type byte), without CRLF, and the bytes it
/// took with CRLF; `None` if its end has not arrived.
fn line(b: &[u8]) -> Result<Option<(&[u8], usize)>> {
    let window = &b[..b.len().min(MAX_LINE_BYTES + 2)];
    match window.iter().position(|&c| c == b'\r') {
        Some(i) => match window.get(i + 1) {
            Some(b'\n') => Ok(Some((&b[..i], i + 2))),
            Some(_) => Err(malformed("CR not followed by LF")),
            None if i + 1 < b.len() => Err(malformed("line too long")),
            None => Ok(None),
        },
        None if b.len() > MAX_LINE_BYTES + 1 => Err(malformed(format!(
            "line longer than {MAX_LINE_BYTES} bytes"
        ))),
        None => Ok(None),
    }
}

/// A signed decimal integer, strictly digits after an optional `-`.
fn integer(text: &[u8]) -> Result<i64> {
    let (neg, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed(format!(
            "not an integer: {:?}",
            String::from_utf8_lossy(text)
        )));
    }
    let v = digits
        .iter()
        .try_fold(0i64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
        .ok_or_else(|| malformed("integer out of range"))?;
    Ok(if neg { -v } else { v })
}

/// One reply at the start of `b` and the bytes it took; `None` if incomplete.
fn parse(b: &[u8]) -> Result<Option<(Reply<'_>, usize)>> {
    let Some(&kind) = b.first() else {
        return Ok(None);
    };
    if kind != b'*' && kind != b'>' {
        return Ok(scalar(b)?.map(|(item, used)| (Reply::Item(item), used)));
    }
    let Some((head, mut used)) = line(&b[1..])? else {
        return Ok(None);
    };
    used += 1;
    let n = integer(head)?;
    if n == -1 {
        return Ok(Some((Reply::Item(Item::Nil), used)));
    }
    let n = usize::try_from(n).map_err(|_| malformed(format!("array length {n}")))?;
    if n > MAX_ARRAY_ITEMS {
        return Err(malformed(format!(
            "array of {n} elements (at most {MAX_ARRAY_ITEMS})"
        )));
    }
    let mut items = Items {
        len: n,
        items: [Item::Nil; MAX_ARRAY_ITEMS],
    };
    for slot in items.items.iter_mut().take(n) {
        let Some((item, took)) = scalar(&b[used..])? else {
            return Ok(None);
        };
        *slot = item;
        used += took;
    }
    Ok(Some((Reply::Array(items), used)))
}

/// One scalar at the start of `b` and the bytes it took; `None` if incomplete.
fn scalar(b: &[u8]) -> Result<Option<(Item<'_>, usize)>> {
    let Some(&kind) = b.first() else {
        return Ok(None);
    };
    let Some((text, took)) = line(&b[1..])? else {
        return Ok(None);
    };
    let used = 1 + took;
    let item = match kind {
        b'+' => Item::Simple(text),
        b'-' => Item::Error(text),
        b':' => Item::Integer(integer(text)?),
        b'$' => {
            let n = integer(text)?;
            if n == -1 {
                return Ok(Some((Item::Nil, used)));
            }
            let n = usize::try_from(n).map_err(|_| malformed(format!("bulk length {n}")))?;
            if n > MAX_BULK_BYTES {
                return Err(malformed(format!(
                    "bulk string of {n} bytes (at most {MAX_BULK_BYTES})"
                )));
            }
            let Some(rest) = b.get(used..used + n + 2) else {
                return Ok(None);
            };
            if &rest[n..] != b"\r\n" {
                return Err(malformed("bulk string not followed by CRLF"));
            }
            return Ok(Some((Item::Bulk(&rest[..n]), used + n + 2)));
        }
        b'*' | b'>' => return Err(malformed("nested arrays are not supported")),
        other => return Err(malformed(format!("unknown type byte 0x{other:02x}"))),
    };
    Ok(Some((item, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$4\r\nab\r\n\r\n";

    fn all(r: &mut RespReader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(reply) = r.next_reply().unwrap() {
            out.push(format!("{reply:?}"));
        }
        out
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"ch", b"x\r\ny"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$4\r\nx\r\ny\r\n");
        assert_eq!(command_len(&[b"PUBLISH", b"ch", b"x\r\ny"]), out.len());
    }

    #[test]
    fn every_scalar_and_a_message() {
        let mut r = RespReader::new();
        r.feed(b"+OK\r\n-ERR wrong\r\n:-42\r\n$0\r\n\r\n$-1\r\n*-1\r\n")
            .unwrap();
        assert_eq!(
            r.next_reply().unwrap(),
            Some(Reply::Item(Item::Simple(b"OK")))
        );
        assert_eq!(
            r.next_reply().unwrap(),
            Some(Reply::Item(Item::Error(b"ERR wrong")))
        );
        assert_eq!(
            r.next_reply().unwrap(),
            Some(Reply::Item(Item::Integer(-42)))
        );
        assert_eq!(r.next_reply().unwrap(), Some(Reply::Item(Item::Bulk(b""))));
        assert_eq!(r.next_reply().unwrap(), Some(Reply::Item(Item::Nil)));
        assert_eq!(r.next_reply().unwrap(), Some(Reply::Item(Item::Nil)));
        assert_eq!(r.next_reply().unwrap(), None);
        assert_eq!(r.buffered(), 0);
        r.feed(MESSAGE).unwrap();
        // The payload may itself hold CRLF: the length says where it ends.
        let reply = r.next_reply().unwrap().unwrap();
        assert_eq!(reply.message_payload(), Some(&b"ab\r\n"[..]));
        // A subscription confirmation is an array, but not a message.
        r.feed(b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n")
            .unwrap();
        let reply = r.next_reply().unwrap().unwrap();
        assert_eq!(reply.message_payload(), None);
        match reply {
            Reply::Array(items) => assert_eq!(items.as_slice()[2], Item::Integer(1)),
            other => panic!("not an array: {other:?}"),
        }
        // A RESP3 push reads as an array too.
        r.feed(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n")
            .unwrap();
        assert_eq!(
            r.next_reply().unwrap().unwrap().message_payload(),
            Some(&b"p"[..])
        );
    }

    #[test]
    fn replies_split_at_every_byte_and_several_per_read() {
        let mut stream = Vec::new();
        for _ in 0..3 {
            stream.extend_from_slice(MESSAGE);
            stream.extend_from_slice(b":7\r\n");
        }
        let mut whole = RespReader::new();
        whole.feed(&stream).unwrap();
        let expected = all(&mut whole);
        assert_eq!(expected.len(), 6);
        // Any split into two reads, and one byte per read, give the same replies.
        for cut in 0..=stream.len() {
            let mut r = RespReader::new();
            r.feed(&stream[..cut]).unwrap();
            let mut got = all(&mut r);
            r.feed(&stream[cut..]).unwrap();
            got.extend(all(&mut r));
            assert_eq!(got, expected, "cut at {cut}");
        }
        let mut r = RespReader::new();
        let mut got = Vec::new();
        for b in &stream {
            r.feed(std::slice::from_ref(b)).unwrap();
            got.extend(all(&mut r));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn the_buffer_compacts_and_stays_bounded() {
        let mut r = RespReader::new();
        // Far more than the buffer, a partial reply left at the end of each fill.
        let mut taken = 0;
        for _ in 0..(4 * RESP_BUFFER_BYTES / MESSAGE.len()) {
            r.feed(MESSAGE).unwrap();
            while let Some(reply) = r.next_reply().unwrap() {
                assert!(reply.message_payload().is_some());
                taken += 1;
            }
        }
        assert!(taken > 0);
        // Bytes that never make a reply fill it, and then it says so.
        let mut r = RespReader::new();
        r.feed(b"$4096\r\n").unwrap();
        assert!(r.feed(&vec![b'x'; RESP_BUFFER_BYTES]).is_err());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bad: [&[u8]; 12] = [
            b"?x\r\n",
            b"+OK\rX",
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"*-5\r\n",
            b"*9\r\n",
            b"*1\r\n*1\r\n:1\r\n",
            b"$999999\r\n",
            b"$x\r\n",
        ];
        for input in bad {
            let mut r = RespReader::new();
            r.feed(input).unwrap();
            assert!(
                matches!(r.next_reply(), Err(Error::Protocol(m)) if m.starts_with("RESP")),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // An endless line is refused once it passes the bound.
        let mut r = RespReader::new();
        r.feed(b"+").unwrap();
        r.feed(&[b'a'; MAX_LINE_BYTES]).unwrap();
        assert_eq!(r.next_reply().unwrap(), None);
        r.feed(b"aa").unwrap();
        assert!(r.next_reply().is_err());
        // Truncations of valid input are incomplete, never errors.
        for cut in 0..MESSAGE.len() {
            let mut r = RespReader::new();
            r.feed(&MESSAGE[..cut]).unwrap();
            assert_eq!(r.next_reply().unwrap(), None, "cut at {cut}");
        }
    }
}
