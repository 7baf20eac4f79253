//! Any `Serialize` written straight into a [`Value`].

use serde::ser::{self, Impossible, Serialize};

use super::DataError;
use crate::Value;

/// `t` as a [`Value`]. Maps and structs keep their order; integer, finite float,
/// boolean and char map keys become their text; an integer beyond `i64` and `u64` is
/// an error.
pub fn to_value<T: Serialize + ?Sized>(t: &T) -> Result<Value, DataError> {
    t.serialize(ValueSerializer)
}

/// Most elements or entries reserved up front from a sequence's or map's length
/// hint; beyond it they grow as they come.
const RESERVED_ITEMS_MAX: usize = 1024;

/// The serializer behind [`to_value`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ValueSerializer;

fn out_of_range() -> DataError {
    ser::Error::custom("number out of range")
}

/// `{variant: content}`, the externally tagged form of a non-unit variant.
fn tagged(variant: &'static str, content: Value) -> Value {
    Value::Map(vec![(variant.to_owned(), content)])
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = DataError;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = Items;
    type SerializeMap = Entries;
    type SerializeStruct = Entries;
    type SerializeStructVariant = Entries;

    fn serialize_bool(self, v: bool) -> Result<Value, DataError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, DataError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, DataError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, DataError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, DataError> {
        Ok(Value::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, DataError> {
        if let Ok(i) = i64::try_from(v) {
            Ok(Value::Int(i))
        } else {
            u64::try_from(v)
                .map(Value::from)
                .map_err(|_| out_of_range())
        }
    }
    fn serialize_u8(self, v: u8) -> Result<Value, DataError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, DataError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, DataError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, DataError> {
        Ok(Value::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, DataError> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| out_of_range())
    }
    fn serialize_f32(self, v: f32) -> Result<Value, DataError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, DataError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, DataError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, DataError> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, DataError> {
        Ok(Value::Bin(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, DataError> {
        Ok(Value::Nil)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, DataError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, DataError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, DataError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, DataError> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, DataError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, DataError> {
        Ok(tagged(variant, value.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Items, DataError> {
        Ok(Items {
            // The hint is the caller's own data's length; capped all the same.
            items: Vec::with_capacity(len.unwrap_or(0).min(RESERVED_ITEMS_MAX)),
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Items, DataError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Items, DataError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Items, DataError> {
        let mut items = self.serialize_seq(Some(len))?;
        items.variant = Some(variant);
        Ok(items)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Entries, DataError> {
        Ok(Entries {
            entries: Vec::with_capacity(len.unwrap_or(0).min(RESERVED_ITEMS_MAX)),
            key: None,
            variant: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Entries, DataError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Entries, DataError> {
        let mut entries = self.serialize_map(Some(len))?;
        entries.variant = Some(variant);
        Ok(entries)
    }
}

/// A sequence, tuple or tuple variant being written.
pub struct Items {
    items: Vec<Value>,
    /// The variant it is the content of, for a tuple variant.
    variant: Option<&'static str>,
}

impl Items {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DataError> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }

    fn done(self) -> Value {
        let array = Value::Array(self.items);
        match self.variant {
            Some(v) => tagged(v, array),
            None => array,
        }
    }
}

/// The four sequence-like serde traits, each adding its element to [`Items`].
macro_rules! items_impl {
    ($($trait:ident::$method:ident),*) => {
        $(
            impl ser::$trait for Items {
                type Ok = Value;
                type Error = DataError;
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DataError> {
                    self.push(value)
                }
                fn end(self) -> Result<Value, DataError> {
                    Ok(self.done())
                }
            }
        )*
    };
}

items_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// A map, struct or struct variant being written.
pub struct Entries {
    entries: Vec<(String, Value)>,
    /// A map's key whose value comes next.
    key: Option<String>,
    /// The variant it is the content of, for a struct variant.
    variant: Option<&'static str>,
}

impl Entries {
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), DataError> {
        self.entries
            .push((key.to_owned(), value.serialize(ValueSerializer)?));
        Ok(())
    }

    fn done(self) -> Value {
        let map = Value::Map(self.entries);
        match self.variant {
            Some(v) => tagged(v, map),
            None => map,
        }
    }
}

impl ser::SerializeMap for Entries {
    type Ok = Value;
    type Error = DataError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), DataError> {
        self.key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DataError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ser::Error::custom("a map value without its key"))?;
        self.entries.push((key, value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, DataError> {
        Ok(self.done())
    }
}

/// The two struct-like serde traits, each adding its field to [`Entries`].
macro_rules! fields_impl {
    ($($trait:ident),*) => {
        $(
            impl ser::$trait for Entries {
                type Ok = Value;
                type Error = DataError;
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Result<(), DataError> {
                    self.field(key, value)
                }
                fn end(self) -> Result<Value, DataError> {
                    Ok(self.done())
                }
            }
        )*
    };
}

fields_impl!(SerializeStruct, SerializeStructVariant);

/// A map key: strings as they are; integers, finite floats, booleans and chars as
/// their text; anything else refused (maps on the wire have string keys).
struct KeySerializer;

fn key_must_be_a_string() -> DataError {
    ser::Error::custom("key must be a string")
}

macro_rules! text_key {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<String, DataError> {
                Ok(v.to_string())
            }
        )*
    };
}

impl ser::Serializer for KeySerializer {
    type Ok = String;
    type Error = DataError;
    type SerializeSeq = Impossible<String, DataError>;
    type SerializeTuple = Impossible<String, DataError>;
    type SerializeTupleStruct = Impossible<String, DataError>;
    type SerializeTupleVariant = Impossible<String, DataError>;
    type SerializeMap = Impossible<String, DataError>;
    type SerializeStruct = Impossible<String, DataError>;
    type SerializeStructVariant = Impossible<String, DataError>;

    text_key! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
    }

    fn serialize_str(self, v: &str) -> Result<String, DataError> {
        Ok(v.to_owned())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, DataError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, DataError> {
        value.serialize(self)
    }
    fn serialize_f32(self, v: f32) -> Result<String, DataError> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<String, DataError> {
        // A finite float's text, as `serde_json` writes one; NaN and infinities have
        // none a reader would parse back.
        if v.is_finite() {
            Ok(v.to_string())
        } else {
            Err(key_must_be_a_string())
        }
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> Result<String, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> Result<String, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, DataError> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, DataError> {
        Err(key_must_be_a_string())
    }
}
