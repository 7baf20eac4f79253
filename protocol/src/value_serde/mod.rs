//! Typed data straight to and from the dynamic forms both codecs carry, through
//! serde: [`to_value`] serializes any `Serialize` into a [`Value`](crate::Value); [`from_value`]
//! deserializes from a borrowed `Value`, and [`from_tree`] from a native archive's
//! value tree read in place — so a typed RPC argument is decoded without building a
//! `Value` (or any other intermediate) first.
//!
//! The data model is MessagePack's, as netconduit's: maps have string keys (integer,
//! finite float, boolean and char keys are written as their text), enums are
//! externally tagged (a unit variant is its name; any other `{name: content}`), bytes
//! are `Bin` (read back as bytes, or as a sequence of integers by a type that asks
//! for one — though a type that buffers its input first, such as an untagged enum or a
//! `#[serde(flatten)]` field, keeps them as bytes), `()` and `None` are nil. Errors
//! read as `serde_json` words them: a nil is `null`.

mod de;
mod ser;

use std::fmt;

pub use de::{from_tree, from_value, from_value_within, VALUE_DEPTH_MAX};
pub use ser::{to_value, ValueSerializer};

/// Why typed data could not be read from, or written as, a value. Its text is serde's
/// own wording (`invalid type: string "x", expected i64`, `missing field `a``, …),
/// which validation errors show field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError(String);

impl DataError {
    /// The description.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

impl serde::de::Error for DataError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DataError(msg.to_string())
    }

    fn invalid_type(
        unexpected: serde::de::Unexpected<'_>,
        expected: &dyn serde::de::Expected,
    ) -> Self {
        // A nil is `null` to the data's senders (and in `serde_json`'s wording), not
        // serde's "unit value": visitors report it as `Unexpected::Unit`.
        let unexpected = match unexpected {
            serde::de::Unexpected::Unit => serde::de::Unexpected::Other("null"),
            other => other,
        };
        DataError(format!("invalid type: {unexpected}, expected {expected}"))
    }
}

impl serde::ser::Error for DataError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DataError(msg.to_string())
    }
}

#[cfg(test)]
mod tests;
