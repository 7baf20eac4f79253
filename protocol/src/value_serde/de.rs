//! One serde `Deserializer` over two sources read in pre-order: a borrowed [`Value`]
//! and a native archive's value tree in the receive buffer. Strings and bytes are
//! lent to the visitor (`visit_borrowed_str`), so a `&str` argument copies nothing.
//!
//! Nesting is bounded (`max_depth`) so hostile data cannot exhaust the stack, and a
//! sequence or map must be read to its end, as `serde_json` requires: a 3-element
//! array does not silently fill a 2-tuple.

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;

use super::DataError;
use crate::native::{ArchivedNode, ArchivedValueTree};
use crate::value_tree::subtree_end;
use crate::Value;

/// Deepest nesting [`from_value`] follows. A `Value` in memory was bounded by
/// whoever built it (decoded ones by their `ValueLimits`); this only keeps an
/// absurdly deep one from overflowing the stack.
pub const VALUE_DEPTH_MAX: usize = 256;

/// `value` as a `T`, nested at most [`VALUE_DEPTH_MAX`] deep; strings and bytes in
/// `T` may borrow from it.
pub fn from_value<'de, T: de::Deserialize<'de>>(value: &'de Value) -> Result<T, DataError> {
    from_value_within(value, VALUE_DEPTH_MAX)
}

/// `value` as a `T`, nested at most `max_depth` deep (for a value already bounded by
/// the limits it was decoded under).
pub fn from_value_within<'de, T: de::Deserialize<'de>>(
    value: &'de Value,
    max_depth: usize,
) -> Result<T, DataError> {
    let mut de = De {
        walk: ValueWalk {
            root: Some(value),
            stack: Vec::new(),
        },
        depth: 0,
        max_depth,
    };
    T::deserialize(&mut de)
}

/// The subtree at node `node` of `tree` as a `T`, nested at most `max_depth` deep;
/// strings and bytes in `T` may borrow from the archive. `tree` is trusted only as
/// far as its validation goes: a container claiming more nodes than follow is an
/// error, never a panic.
pub fn from_tree<'de, T: de::Deserialize<'de>>(
    tree: &'de ArchivedValueTree,
    node: usize,
    max_depth: usize,
) -> Result<T, DataError> {
    let mut de = De {
        walk: TreeWalk {
            nodes: tree.nodes.as_slice(),
            cursor: node,
        },
        depth: 0,
        max_depth,
    };
    T::deserialize(&mut de)
}

/// One node as the deserializer reads it; a container's children follow it.
#[derive(Clone, Copy)]
enum Node<'de> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'de str),
    Bin(&'de [u8]),
    /// An array of this many elements.
    Array(usize),
    /// A map of this many (key, value) entries.
    Map(usize),
}

impl Node<'_> {
    fn unexpected(&self) -> Unexpected<'_> {
        match *self {
            // Worded `null` by `DataError::invalid_type`.
            Node::Nil => Unexpected::Unit,
            Node::Bool(b) => Unexpected::Bool(b),
            Node::Int(i) => Unexpected::Signed(i),
            Node::UInt(u) => Unexpected::Unsigned(u),
            Node::Float(f) => Unexpected::Float(f),
            Node::Str(s) => Unexpected::Str(s),
            Node::Bin(b) => Unexpected::Bytes(b),
            Node::Array(_) => Unexpected::Seq,
            Node::Map(_) => Unexpected::Map,
        }
    }
}

/// A source read node by node, in pre-order.
trait Walk<'de> {
    /// The next node.
    fn next(&mut self) -> Result<Node<'de>, DataError>;
    /// Consumes the next node if it is nil.
    fn take_nil(&mut self) -> bool;
    /// Passes over the next node and everything below it.
    fn skip(&mut self) -> Result<(), DataError>;
}

fn short() -> DataError {
    de::Error::custom("fewer values than the containers claim")
}

/// A native value tree: its nodes are already in pre-order.
struct TreeWalk<'de> {
    nodes: &'de [ArchivedNode],
    cursor: usize,
}

impl<'de> Walk<'de> for TreeWalk<'de> {
    fn next(&mut self) -> Result<Node<'de>, DataError> {
        let node = self.nodes.get(self.cursor).ok_or_else(short)?;
        self.cursor += 1;
        Ok(match node {
            ArchivedNode::Nil => Node::Nil,
            ArchivedNode::Bool(b) => Node::Bool(*b),
            ArchivedNode::Int(i) => Node::Int(i.to_native()),
            ArchivedNode::UInt(u) => Node::UInt(u.to_native()),
            ArchivedNode::Float(f) => Node::Float(f.to_native()),
            ArchivedNode::Str(s) => Node::Str(s.as_str()),
            ArchivedNode::Bin(b) => Node::Bin(b.as_slice()),
            ArchivedNode::Array(n) => Node::Array(n.to_native() as usize),
            ArchivedNode::Map(n) => Node::Map(n.to_native() as usize),
        })
    }

    fn take_nil(&mut self) -> bool {
        let nil = matches!(self.nodes.get(self.cursor), Some(ArchivedNode::Nil));
        self.cursor += usize::from(nil);
        nil
    }

    fn skip(&mut self) -> Result<(), DataError> {
        self.cursor = subtree_end(self.nodes, self.cursor).ok_or_else(short)?;
        Ok(())
    }
}

/// A borrowed [`Value`], walked in pre-order with a stack of the containers open.
struct ValueWalk<'de> {
    /// The value not yet started.
    root: Option<&'de Value>,
    /// The containers entered, innermost last (exhausted ones are popped lazily).
    stack: Vec<Frame<'de>>,
}

enum Frame<'de> {
    Items(std::slice::Iter<'de, Value>),
    /// A map's entries, and the value of the entry whose key was just read.
    Entries(std::slice::Iter<'de, (String, Value)>, Option<&'de Value>),
}

enum Item<'de> {
    Value(&'de Value),
    Key(&'de str),
}

impl<'de> ValueWalk<'de> {
    /// Pops the containers whose children have all been read.
    fn settle(&mut self) {
        while let Some(top) = self.stack.last() {
            let done = match top {
                Frame::Items(it) => it.len() == 0,
                Frame::Entries(it, pending) => pending.is_none() && it.len() == 0,
            };
            if !done {
                break;
            }
            self.stack.pop();
        }
    }

    fn item(&mut self) -> Result<Item<'de>, DataError> {
        if let Some(v) = self.root.take() {
            return Ok(Item::Value(v));
        }
        self.settle();
        match self.stack.last_mut() {
            Some(Frame::Items(it)) => it.next().map(Item::Value).ok_or_else(short),
            Some(Frame::Entries(it, pending)) => match pending.take() {
                Some(v) => Ok(Item::Value(v)),
                None => {
                    let (k, v) = it.next().ok_or_else(short)?;
                    *pending = Some(v);
                    Ok(Item::Key(k))
                }
            },
            None => Err(short()),
        }
    }
}

impl<'de> Walk<'de> for ValueWalk<'de> {
    fn next(&mut self) -> Result<Node<'de>, DataError> {
        let v = match self.item()? {
            Item::Key(k) => return Ok(Node::Str(k)),
            Item::Value(v) => v,
        };
        Ok(match v {
            Value::Nil => Node::Nil,
            Value::Bool(b) => Node::Bool(*b),
            Value::Int(i) => Node::Int(*i),
            Value::UInt(u) => Node::UInt(*u),
            Value::Float(f) => Node::Float(*f),
            Value::Str(s) => Node::Str(s),
            Value::Bin(b) => Node::Bin(b),
            Value::Array(items) => {
                self.stack.push(Frame::Items(items.iter()));
                Node::Array(items.len())
            }
            Value::Map(entries) => {
                self.stack.push(Frame::Entries(entries.iter(), None));
                Node::Map(entries.len())
            }
        })
    }

    fn take_nil(&mut self) -> bool {
        let next = match &self.root {
            Some(v) => Some(*v),
            None => {
                self.settle();
                match self.stack.last() {
                    Some(Frame::Items(it)) => it.as_slice().first(),
                    Some(Frame::Entries(_, pending)) => *pending,
                    None => None,
                }
            }
        };
        let nil = matches!(next, Some(Value::Nil));
        if nil {
            // Consumes it (a nil has no children to push).
            let _ = self.item();
        }
        nil
    }

    fn skip(&mut self) -> Result<(), DataError> {
        // A value's children are only reached through its container: not entering it
        // passes over all of them.
        self.item().map(drop)
    }
}

/// The deserializer over either source.
struct De<W> {
    walk: W,
    /// Containers entered and not yet left.
    depth: usize,
    /// Deepest nesting followed.
    max_depth: usize,
}

impl<'de, W: Walk<'de>> De<W> {
    fn enter(&mut self) -> Result<(), DataError> {
        if self.depth >= self.max_depth {
            return Err(de::Error::custom(format_args!(
                "nested deeper than {} levels",
                self.max_depth
            )));
        }
        self.depth += 1;
        Ok(())
    }

    fn seq<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, DataError> {
        self.enter()?;
        let mut access = Access {
            de: self,
            left: len,
        };
        let v = visitor.visit_seq(&mut access);
        let left = access.left;
        // Left on every path, so a visitor that recovers from an element's error
        // keeps the count true.
        self.depth -= 1;
        let v = v?;
        if left > 0 {
            return Err(de::Error::invalid_length(len, &"fewer elements in array"));
        }
        Ok(v)
    }

    fn map<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, DataError> {
        self.enter()?;
        let mut access = Access {
            de: self,
            left: len,
        };
        let v = visitor.visit_map(&mut access);
        let left = access.left;
        self.depth -= 1;
        let v = v?;
        if left > 0 {
            return Err(de::Error::invalid_length(len, &"fewer elements in map"));
        }
        Ok(v)
    }
}

impl<'de, W: Walk<'de>> Deserializer<'de> for &mut De<W> {
    type Error = DataError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DataError> {
        match self.walk.next()? {
            Node::Nil => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(b),
            Node::Int(i) => visitor.visit_i64(i),
            Node::UInt(u) => visitor.visit_u64(u),
            Node::Float(f) => visitor.visit_f64(f),
            Node::Str(s) => visitor.visit_borrowed_str(s),
            Node::Bin(b) => visitor.visit_borrowed_bytes(b),
            Node::Array(n) => self.seq(n, visitor),
            Node::Map(n) => self.map(n, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DataError> {
        if self.walk.take_nil() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DataError> {
        match self.walk.next()? {
            // Bytes read as a sequence (a `Vec<u8>` without `serde_bytes`).
            Node::Bin(b) => {
                let mut bytes = de::value::SeqDeserializer::new(b.iter().copied());
                let v = visitor.visit_seq(&mut bytes)?;
                // Every byte read, as for an array: 3 bytes do not fill a `[u8; 2]`.
                bytes.end()?;
                Ok(v)
            }
            Node::Array(n) => self.seq(n, visitor),
            other => Err(de::Error::invalid_type(other.unexpected(), &visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DataError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DataError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DataError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DataError> {
        match self.walk.next()? {
            Node::Str(s) => visitor.visit_enum(s.into_deserializer()),
            Node::Map(1) => {
                self.enter()?;
                let variant = match self.walk.next()? {
                    Node::Str(s) => s,
                    other => {
                        return Err(de::Error::invalid_type(
                            other.unexpected(),
                            &"a variant name",
                        ))
                    }
                };
                let v = visitor.visit_enum(Enum { de: self, variant });
                self.depth -= 1;
                v
            }
            Node::Map(_) => Err(de::Error::invalid_value(
                Unexpected::Map,
                &"map with a single key",
            )),
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"string or map",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DataError> {
        self.walk.skip()?;
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct map struct identifier
    }
}

/// A sequence's elements or a map's entries, `left` of them not yet read.
struct Access<'a, W> {
    de: &'a mut De<W>,
    left: usize,
}

impl<'de, W: Walk<'de>> SeqAccess<'de> for Access<'_, W> {
    type Error = DataError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DataError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de, W: Walk<'de>> MapAccess<'de> for Access<'_, W> {
    type Error = DataError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DataError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        match self.de.walk.next()? {
            Node::Str(key) => seed.deserialize(Key(key)).map(Some),
            other => Err(de::Error::invalid_type(other.unexpected(), &"a string key")),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DataError> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A map key: a string, read as a number or a boolean when the key type is one (a
/// `HashMap<u32, _>` argument), as `serde_json` reads JSON object keys.
struct Key<'de>(&'de str);

macro_rules! parsed_key {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DataError> {
                match self.0.parse::<$ty>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(de::Error::invalid_value(Unexpected::Str(self.0), &visitor)),
                }
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Key<'de> {
    type Error = DataError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DataError> {
        visitor.visit_borrowed_str(self.0)
    }

    parsed_key! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DataError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DataError> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    forward_to_deserialize_any! {
        char str string bytes byte_buf option unit unit_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

/// An enum written `{variant: content}`.
struct Enum<'a, W> {
    de: &'a mut De<W>,
    variant: &'a str,
}

impl<'de, 'a, W: Walk<'de>> EnumAccess<'de> for Enum<'a, W> {
    type Error = DataError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DataError> {
        let name: de::value::StrDeserializer<'_, DataError> = self.variant.into_deserializer();
        let v = seed.deserialize(name)?;
        Ok((v, self))
    }
}

impl<'de, W: Walk<'de>> VariantAccess<'de> for Enum<'_, W> {
    type Error = DataError;

    fn unit_variant(self) -> Result<(), DataError> {
        de::Deserialize::deserialize(&mut *self.de)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DataError> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DataError> {
        self.de.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DataError> {
        self.de.deserialize_any(visitor)
    }
}
