//! MessagePack for [`Value`], byte-compatible with Python `msgpack` as netconduit uses it
//! (`use_bin_type=True`: smallest int forms, float64 for every float, str8 allowed).
//!
//! Decoding is bounded: nesting depth and the total number of values are limited, and
//! no collection is pre-allocated beyond what the remaining input could hold.

use std::convert::Infallible;

use rmp::encode::{self, ByteBuf, ValueWriteError};

use crate::error::WireError;
use crate::value::Value;

/// Bounds on what a MessagePack (or native dynamic) payload may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueLimits {
    /// Deepest nesting of arrays and maps accepted.
    pub max_depth: usize,
    /// Most values (scalars, arrays, maps, keys excluded) in one payload. Bounds the
    /// memory a small, dense payload can make the decoder allocate.
    pub max_values: usize,
}

impl Default for ValueLimits {
    fn default() -> Self {
        ValueLimits {
            max_depth: 64,
            max_values: 262_144,
        }
    }
}

/// Runs `f` with `out` as rmp's infallible `ByteBuf` (moved in and back, no copy).
fn with_buf<T>(out: &mut Vec<u8>, f: impl FnOnce(&mut ByteBuf) -> T) -> T {
    let mut buf = ByteBuf::from_vec(std::mem::take(out));
    let r = f(&mut buf);
    *out = buf.into_vec();
    r
}

fn done<T>(r: Result<T, ValueWriteError<Infallible>>) -> T {
    match r {
        Ok(t) => t,
        Err(ValueWriteError::InvalidMarkerWrite(e) | ValueWriteError::InvalidDataWrite(e)) => {
            match e {}
        }
    }
}

fn done_plain<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => match e {},
    }
}

/// Appends a map header of `len` entries.
pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    with_buf(out, |w| done(encode::write_map_len(w, len as u32)));
}

/// Appends an array header of `len` elements.
pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    with_buf(out, |w| done(encode::write_array_len(w, len as u32)));
}

/// Appends a string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    with_buf(out, |w| done(encode::write_str(w, s)));
}

/// Appends a boolean.
pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    with_buf(out, |w| done_plain(encode::write_bool(w, b)));
}

/// Appends an integer in its smallest form.
pub fn write_int(out: &mut Vec<u8>, i: i64) {
    with_buf(out, |w| done(encode::write_sint(w, i)));
}

/// Appends `value`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    with_buf(out, |w| write_into(w, value));
}

fn write_into(w: &mut ByteBuf, value: &Value) {
    match value {
        Value::Nil => done_plain(encode::write_nil(w)),
        Value::Bool(b) => done_plain(encode::write_bool(w, *b)),
        Value::Int(i) => {
            done(encode::write_sint(w, *i));
        }
        Value::UInt(u) => {
            done(encode::write_uint(w, *u));
        }
        Value::Float(f) => done(encode::write_f64(w, *f)),
        Value::Str(s) => done(encode::write_str(w, s)),
        Value::Bin(b) => done(encode::write_bin(w, b)),
        Value::Array(items) => {
            done(encode::write_array_len(w, items.len() as u32));
            for item in items {
                write_into(w, item);
            }
        }
        Value::Map(entries) => {
            done(encode::write_map_len(w, entries.len() as u32));
            for (k, v) in entries {
                done(encode::write_str(w, k));
                write_into(w, v);
            }
        }
    }
}

/// `value` as MessagePack bytes.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

/// Decodes exactly one value that spans all of `bytes`.
pub fn from_slice(bytes: &[u8], limits: ValueLimits) -> Result<Value, WireError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        values_left: limits.max_values,
        max_depth: limits.max_depth,
    };
    let v = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(WireError::Msgpack("trailing bytes after the value"));
    }
    Ok(v)
}

/// A bounded cursor over MessagePack bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Budget of values still allowed (see [`ValueLimits::max_values`]).
    values_left: usize,
    max_depth: usize,
}

const TRUNCATED: WireError = WireError::Msgpack("truncated");

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let s = self.bytes.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<usize, WireError> {
        Ok(u16::from_be_bytes(self.array()?).into())
    }
    fn u32(&mut self) -> Result<usize, WireError> {
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn string(&mut self, len: usize) -> Result<String, WireError> {
        let s = self.take(len)?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| WireError::InvalidUtf8("MessagePack string"))
    }

    fn key(&mut self) -> Result<String, WireError> {
        let len = match self.u8()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => usize::from(self.u8()?),
            0xda => self.u16()?,
            0xdb => self.u32()?,
            _ => return Err(WireError::UnsupportedValue("map key is not a string")),
        };
        self.string(len)
    }

    fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        if self.values_left == 0 {
            return Err(WireError::Msgpack("too many values"));
        }
        self.values_left -= 1;
        let marker = self.u8()?;
        Ok(match marker {
            0x00..=0x7f => Value::Int(i64::from(marker)),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0x90..=0x9f => self.seq(usize::from(marker & 0x0f), depth)?,
            0xa0..=0xbf => Value::Str(self.string(usize::from(marker & 0x1f))?),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = usize::from(self.u8()?);
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc5 => {
                let n = self.u16()?;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc6 => {
                let n = self.u32()?;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.array()?)),
            0xcc => Value::Int(i64::from(self.u8()?)),
            0xcd => Value::Int(i64::from(u16::from_be_bytes(self.array()?))),
            0xce => Value::Int(i64::from(u32::from_be_bytes(self.array()?))),
            0xcf => Value::from(u64::from_be_bytes(self.array()?)),
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.array()?)),
            0xd9 => {
                let n = usize::from(self.u8()?);
                Value::Str(self.string(n)?)
            }
            0xda => {
                let n = self.u16()?;
                Value::Str(self.string(n)?)
            }
            0xdb => {
                let n = self.u32()?;
                Value::Str(self.string(n)?)
            }
            0xdc => {
                let n = self.u16()?;
                self.seq(n, depth)?
            }
            0xdd => {
                let n = self.u32()?;
                self.seq(n, depth)?
            }
            0xde => {
                let n = self.u16()?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.u32()?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(marker as i8)),
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err(WireError::UnsupportedValue(
                    "extension types are not supported",
                ))
            }
            0xc1 => return Err(WireError::Msgpack("reserved marker 0xc1")),
        })
    }

    fn enter(&self, depth: usize) -> Result<usize, WireError> {
        if depth >= self.max_depth {
            return Err(WireError::TooDeep {
                max: self.max_depth,
            });
        }
        Ok(depth + 1)
    }

    fn seq(&mut self, len: usize, depth: usize) -> Result<Value, WireError> {
        let depth = self.enter(depth)?;
        // Every element takes at least one byte: a larger count is a lie, refused
        // before anything is allocated for it.
        if len > self.remaining() || len > self.values_left {
            return Err(TRUNCATED);
        }
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.value(depth)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, WireError> {
        let depth = self.enter(depth)?;
        if len > self.remaining() / 2 || len > self.values_left {
            return Err(TRUNCATED);
        }
        let mut entries = Vec::with_capacity(len);
        for _ in 0..len {
            let k = self.key()?;
            let v = self.value(depth)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn python_compatible_forms() {
        let cases: &[(Value, &str)] = &[
            (Value::Int(5), "05"),
            (Value::Int(1001), "cd 03 e9"),
            (Value::Int(200), "cc c8"),
            (Value::Int(-1), "ff"),
            (Value::Int(-33), "d0 df"),
            (Value::Float(1.0), "cb 3f f0 00 00 00 00 00 00"),
            (Value::Bool(true), "c3"),
            (Value::Nil, "c0"),
            (Value::from("x".repeat(40)), ""),
            (Value::Bin(vec![1, 2]), "c4 02 01 02"),
        ];
        for (v, want) in cases {
            let got = to_vec(v);
            if !want.is_empty() {
                assert_eq!(got, hex(want), "{v}");
            }
            assert_eq!(&from_slice(&got, ValueLimits::default()).unwrap(), v);
        }
        // A 40-character string is str8 (d9 28 …), as Python writes it.
        assert_eq!(&to_vec(&Value::from("x".repeat(40)))[..2], &[0xd9, 40]);
    }

    #[test]
    fn depth_limit() {
        let mut bytes = vec![0x91; 100];
        bytes.push(0xc0);
        let limits = ValueLimits {
            max_depth: 64,
            ..ValueLimits::default()
        };
        assert_eq!(
            from_slice(&bytes, limits),
            Err(WireError::TooDeep { max: 64 })
        );
        let mut ok = vec![0x91; 64];
        ok.push(0xc0);
        assert!(from_slice(&ok, limits).is_ok());
    }

    #[test]
    fn lying_lengths_allocate_nothing() {
        // array32 claiming 4 billion elements, with 3 bytes behind it.
        assert_eq!(
            from_slice(&hex("dd ff ff ff ff 01 02 03"), ValueLimits::default()),
            Err(TRUNCATED)
        );
        assert_eq!(
            from_slice(&hex("df ff ff ff ff 01 02 03"), ValueLimits::default()),
            Err(TRUNCATED)
        );
        assert_eq!(
            from_slice(&hex("db ff ff ff ff 61"), ValueLimits::default()),
            Err(TRUNCATED)
        );
    }

    #[test]
    fn value_budget() {
        let mut bytes = vec![0xdc, 0x03, 0xe8];
        bytes.extend([0xc0; 1000]);
        let limits = ValueLimits {
            max_values: 500,
            ..ValueLimits::default()
        };
        assert!(from_slice(&bytes, limits).is_err());
        assert!(from_slice(&bytes, ValueLimits::default()).is_ok());
    }

    #[test]
    fn rejects_bad_input() {
        let l = ValueLimits::default();
        assert!(matches!(
            from_slice(&hex("a2 ff fe"), l),
            Err(WireError::InvalidUtf8(_))
        ));
        assert!(from_slice(&hex("81 01 02"), l).is_err(), "int key");
        assert!(from_slice(&hex("c1"), l).is_err());
        assert!(from_slice(&hex("d4 01 02"), l).is_err(), "ext");
        assert!(from_slice(&hex("05 05"), l).is_err(), "trailing");
        assert!(from_slice(&[], l).is_err());
    }
}
