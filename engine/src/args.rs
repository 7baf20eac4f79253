//! Argument extraction and validation for RPC methods; what `#[rpc]` expands to.
//!
//! Every parameter is checked before the handler runs: missing, unexpected, wrongly
//! typed and out-of-range arguments are all collected and reported together as one
//! validation error (code 2000) whose details list `{field, message, type}` for each
//! problem, the shape netconduit clients know from pydantic.
//!
//! Typed values cross from the dynamic [`Value`] through serde (`serde_json` as the
//! bridge), so any `Deserialize` type can be a parameter and any `Serialize` type a
//! result.

use conduit_protocol::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::handlers::{RpcCall, RpcError};

pub use crate::convert::{from_value, to_value};

/// A default shown by `listall` (`Nil` if it cannot be represented).
pub fn default_value<T: Serialize>(t: &T) -> Value {
    to_value(t).unwrap_or(Value::Nil)
}

/// Converts a handler's plain return value.
pub fn plain_value<T: Serialize>(t: T) -> Result<Value, RpcError> {
    to_value(&t).map_err(|e| RpcError::failed(format!("cannot encode the result: {e}")))
}

/// Converts a handler's `Result` return value.
pub fn result_value<T: Serialize, E: Into<RpcError>>(r: Result<T, E>) -> Result<Value, RpcError> {
    r.map_err(Into::into).and_then(plain_value)
}

/// A parameter an `#[rpc]` method takes from the call's context rather than from its
/// arguments.
pub trait FromCall: Sized {
    /// Extracts it.
    fn from_call(call: &RpcCall) -> Result<Self, RpcError>;
}

impl<T: Send + Sync + 'static> FromCall for crate::State<T> {
    fn from_call(call: &RpcCall) -> Result<Self, RpcError> {
        call.server().state::<T>().ok_or_else(|| {
            RpcError::failed(format!(
                "no state of type {} is managed by this server",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// One argument problem.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// The argument (or struct field) name.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// A short machine-readable kind: `missing`, `unexpected`, `type_error`,
    /// `value_error`, or a validator's rule name.
    pub kind: String,
}

impl FieldError {
    fn to_value(&self) -> Value {
        Value::map()
            .with("field", self.field.as_str())
            .with("message", self.message.as_str())
            .with("type", self.kind.as_str())
    }
}

/// The parameters of one call, consumed argument by argument.
#[derive(Debug)]
pub struct Args {
    method: String,
    params: Vec<(String, Value)>,
    errors: Vec<FieldError>,
    /// A flattened struct took every parameter; nothing is "unexpected".
    took_all: bool,
}

fn kind_of(serde_message: &str) -> &'static str {
    if serde_message.starts_with("invalid type") {
        "type_error"
    } else if serde_message.starts_with("missing field") {
        "missing"
    } else if serde_message.starts_with("unknown field") {
        "unexpected"
    } else {
        "value_error"
    }
}

impl Args {
    /// The arguments of `call`. Parameters must be a map (or absent).
    pub fn new(call: &RpcCall) -> Result<Args, RpcError> {
        let params = match &call.params {
            Value::Map(m) => m.clone(),
            Value::Nil => Vec::new(),
            other => {
                return Err(RpcError::validation(
                    format!(
                        "Validation error in {}: params must be a map, got {}",
                        call.method,
                        other.type_name()
                    ),
                    None,
                ))
            }
        };
        Ok(Args {
            method: call.method.clone(),
            params,
            errors: Vec::new(),
            took_all: false,
        })
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.params.iter().position(|(k, _)| k == name)?;
        Some(self.params.swap_remove(i).1)
    }

    fn convert<T: DeserializeOwned>(&mut self, name: &str, v: Value) -> Option<T> {
        match from_value::<T>(v) {
            Ok(t) => Some(t),
            Err(message) => {
                self.errors.push(FieldError {
                    field: name.to_owned(),
                    kind: kind_of(&message).to_owned(),
                    message,
                });
                None
            }
        }
    }

    /// A required argument; records an error if it is missing or the wrong type.
    pub fn required<T: DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        match self.take(name) {
            Some(v) => self.convert(name, v),
            None => {
                self.errors.push(FieldError {
                    field: name.to_owned(),
                    message: "Field required".into(),
                    kind: "missing".into(),
                });
                None
            }
        }
    }

    /// An optional argument with its default.
    pub fn optional<T: DeserializeOwned>(
        &mut self,
        name: &str,
        default: impl FnOnce() -> T,
    ) -> Option<T> {
        match self.take(name) {
            Some(v) => self.convert(name, v),
            None => Some(default()),
        }
    }

    /// Every parameter as one struct `T` (its fields are the parameters).
    pub fn flatten<T: DeserializeOwned>(&mut self) -> Option<T> {
        self.took_all = true;
        let all = Value::Map(std::mem::take(&mut self.params));
        match from_value::<T>(all) {
            Ok(t) => Some(t),
            Err(message) => {
                let field = message
                    .split('`')
                    .nth(1)
                    .filter(|_| {
                        message.starts_with("missing field") || message.starts_with("unknown field")
                    })
                    .unwrap_or("params")
                    .to_owned();
                self.errors.push(FieldError {
                    field,
                    kind: kind_of(&message).to_owned(),
                    message,
                });
                None
            }
        }
    }

    /// Every parameter as one struct `T`, then its `garde` rules; every violated rule is
    /// reported.
    pub fn flatten_validated<T>(&mut self) -> Option<T>
    where
        T: DeserializeOwned + garde::Validate,
        T::Context: Default,
    {
        let t = self.flatten::<T>()?;
        match t.validate() {
            Ok(()) => Some(t),
            Err(report) => {
                self.push_report(&report);
                None
            }
        }
    }

    /// Records every rule a `garde` report says was broken.
    fn push_report(&mut self, report: &garde::Report) {
        for (path, err) in report.iter() {
            let field = path.to_string();
            self.errors.push(FieldError {
                field: if field.is_empty() {
                    "params".into()
                } else {
                    field
                },
                message: err.message().to_string(),
                kind: "value_error".into(),
            });
        }
    }

    /// Ends extraction: any parameter nobody took is unexpected; any problem at all
    /// becomes the call's error.
    pub fn finish(&mut self) -> Result<(), RpcError> {
        if !self.took_all {
            let mut extra: Vec<String> = self.params.drain(..).map(|(k, _)| k).collect();
            extra.sort();
            for name in extra {
                self.errors.push(FieldError {
                    field: name,
                    message: "Unexpected argument".into(),
                    kind: "unexpected".into(),
                });
            }
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn error(&self) -> RpcError {
        let list: Vec<Value> = self.errors.iter().map(FieldError::to_value).collect();
        let summary: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        RpcError::validation(
            format!(
                "Validation error in {}: {}",
                self.method,
                summary.join("; ")
            ),
            Some(Value::map().with("errors", Value::Array(list))),
        )
    }

    /// The collected problems as the call's error.
    pub fn into_error(self) -> RpcError {
        self.error()
    }
}

/// A typed message's `garde` check (`T::validate`), when its handler asks for one.
pub(crate) type Check<T> = Option<fn(&T) -> Result<(), garde::Report>>;

/// A typed message's data as `T` (the message's type in `name`), checked by `T`'s
/// `garde` rules when `validate` is given, or the validation error (code 2000, one
/// entry per field) its sender gets back as `<name>_error`.
pub(crate) fn typed_message<T: DeserializeOwned>(
    connection: &crate::Connection,
    name: &str,
    data: Value,
    validate: Check<T>,
) -> Result<T, RpcError> {
    let call = RpcCall {
        connection: connection.clone(),
        method: name.to_owned(),
        params: data,
    };
    let t = if matches!(call.params, Value::Map(_)) {
        // A map: field by field, so each problem names its field.
        let mut args = Args::new(&call)?;
        let t = args.flatten::<T>();
        (t, args)
    } else {
        let mut args = Args {
            method: call.method.clone(),
            params: Vec::new(),
            errors: Vec::new(),
            took_all: true,
        };
        let t = args.convert::<T>("data", call.params.clone());
        (t, args)
    };
    let (t, mut args) = t;
    if let (Some(t), Some(check)) = (&t, validate) {
        if let Err(report) = check(t) {
            args.push_report(&report);
        }
    }
    args.finish()?;
    t.ok_or_else(|| args.into_error())
}
