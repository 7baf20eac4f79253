//! Typed values to and from the dynamic [`Value`] both codecs carry, through serde
//! (`conduit_protocol::value_serde`, no intermediate form), so any `Deserialize` type
//! can be an argument and any `Serialize` type a result.

use conduit_protocol::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `value` as a `T`, or serde's description of why not.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    conduit_protocol::value_serde::from_value(&value).map_err(|e| e.to_string())
}

/// Message data as a [`Value`]: a `Value` as it is (moved, no copy), anything else
/// `Serialize` through serde.
pub fn into_value<T: Serialize + 'static>(data: T) -> Result<Value, String> {
    let mut slot = Some(data);
    if let Some(v) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Value>>() {
        return v.take().ok_or_else(|| "no data".to_owned());
    }
    match slot {
        Some(t) => to_value(&t),
        None => Err("no data".to_owned()),
    }
}

/// `t` as a [`Value`].
pub fn to_value<T: Serialize + ?Sized>(t: &T) -> Result<Value, String> {
    conduit_protocol::value_serde::to_value(t).map_err(|e| e.to_string())
}
