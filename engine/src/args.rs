//! Argument extraction and validation for RPC methods; what `#[rpc]` expands to.
//!
//! Every parameter is checked before the handler runs: missing, unexpected, wrongly
//! typed and out-of-range arguments are all collected and reported together as one
//! validation error (code 2000) whose details list `{field, message, type}` for each
//! problem, the shape netconduit clients know from pydantic.
//!
//! Typed values are read by serde straight from where the arguments are — a native
//! caller's tree in the receive buffer, or a decoded [`Value`] map — so any
//! `Deserialize` type can be a parameter and any `Serialize` type a result.

use conduit_protocol::value_serde;
use conduit_protocol::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smallvec::SmallVec;

pub use crate::call::{Params, Started};
use crate::call::{RpcCall, RpcError, Source};

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

    /// Extracts it from a call's [`Params`] (what `#[rpc]` methods see). By default
    /// through the whole call ([`Params::to_call`]: the arguments copied, or decoded
    /// from the tree, once per parameter of this type); implement it when the
    /// connection or the server is all it needs, so no call is built.
    fn from_params(params: &Params<'_>) -> Result<Self, RpcError> {
        Self::from_call(&params.to_call()?)
    }
}

impl<T: Send + Sync + 'static> FromCall for crate::State<T> {
    fn from_call(call: &RpcCall) -> Result<Self, RpcError> {
        managed(call.server())
    }

    fn from_params(params: &Params<'_>) -> Result<Self, RpcError> {
        managed(params.server())
    }
}

fn managed<T: Send + Sync + 'static>(server: &crate::Router) -> Result<crate::State<T>, RpcError> {
    server.state::<T>().ok_or_else(|| {
        RpcError::failed(format!(
            "no state of type {} is managed by this server",
            std::any::type_name::<T>()
        ))
    })
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

/// How deep typed arguments are followed: no bound of its own. A native caller's tree
/// was checked against the server's `ValueLimits` by the connection core and a v1
/// caller's map decoded under them, so a configured `max_depth` holds here as well;
/// a direct call's `Value` is the caller's own.
const ARGUMENT_DEPTH: usize = usize::MAX;

/// Where one argument is.
#[derive(Clone, Copy)]
enum Loc<'a> {
    Value(&'a Value),
    /// A node of the call's tree.
    Node(usize),
}

/// The parameters of one call, consumed argument by argument.
pub struct Args<'a> {
    method: &'a str,
    /// The whole parameter map (`None`: no parameters), for a flattened struct.
    source: Option<Source<'a>>,
    /// How many parameters there are.
    len: usize,
    /// Which of them (by position) an argument took: one bit each, inline up to 64.
    taken: SmallVec<[u64; 1]>,
    errors: Vec<FieldError>,
    /// A flattened struct took every parameter; nothing is "unexpected".
    took_all: bool,
}

impl std::fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("method", &self.method)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
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

fn not_a_map(method: &str, type_name: &str) -> RpcError {
    RpcError::validation(
        format!("Validation error in {method}: params must be a map, got {type_name}"),
        None,
    )
}

impl<'a> Args<'a> {
    /// The arguments of `call`. Parameters must be a map (or absent).
    pub fn new(call: &'a RpcCall) -> Result<Args<'a>, RpcError> {
        Args::over_value(&call.method, &call.params)
    }

    /// The arguments `params` carries. Parameters must be a map (or absent).
    pub fn from_params(params: &Params<'a>) -> Result<Args<'a>, RpcError> {
        match params.source {
            Source::Value(v) => Args::over_value(params.method, v),
            Source::Tree(tree) => {
                let len = match tree.map_entries() {
                    Some(entries) => entries.remaining(),
                    None if tree.root_type_name() == "NoneType" => {
                        return Ok(Args::empty(params.method))
                    }
                    None => return Err(not_a_map(params.method, tree.root_type_name())),
                };
                Ok(Args::over(params.method, Source::Tree(tree), len))
            }
        }
    }

    fn over_value(method: &'a str, params: &'a Value) -> Result<Args<'a>, RpcError> {
        match params {
            Value::Map(m) => Ok(Args::over(method, Source::Value(params), m.len())),
            Value::Nil => Ok(Args::empty(method)),
            other => Err(not_a_map(method, other.type_name())),
        }
    }

    fn over(method: &'a str, source: Source<'a>, len: usize) -> Args<'a> {
        Args {
            method,
            source: Some(source),
            len,
            taken: smallvec::smallvec![0; len.div_ceil(64)],
            errors: Vec::new(),
            took_all: false,
        }
    }

    fn empty(method: &'a str) -> Args<'a> {
        Args {
            method,
            source: None,
            len: 0,
            taken: SmallVec::new(),
            errors: Vec::new(),
            took_all: false,
        }
    }

    /// Each parameter in wire order: its position, name and where its value is.
    fn entries(&self) -> impl Iterator<Item = (usize, &'a str, Loc<'a>)> {
        let (values, nodes) = match self.source {
            Some(Source::Value(Value::Map(m))) => (Some(m.iter()), None),
            Some(Source::Tree(tree)) => (None, tree.map_entries()),
            _ => (None, None),
        };
        let values = values
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), Loc::Value(v)));
        let nodes = nodes.into_iter().flatten().map(|(k, n)| (k, Loc::Node(n)));
        values
            .chain(nodes)
            .enumerate()
            .map(|(i, (k, loc))| (i, k, loc))
    }

    fn is_taken(&self, i: usize) -> bool {
        self.taken[i / 64] & (1 << (i % 64)) != 0
    }

    /// The first parameter called `name` nobody took yet, now taken.
    fn take(&mut self, name: &str) -> Option<Loc<'a>> {
        // One loop per source (not `entries()`'s chain): this runs once per argument
        // of every call.
        let found = match self.source {
            Some(Source::Value(Value::Map(m))) => m
                .iter()
                .enumerate()
                .find(|&(i, (k, _))| k == name && !self.is_taken(i))
                .map(|(i, (_, v))| (i, Loc::Value(v))),
            Some(Source::Tree(tree)) => tree
                .map_entries()?
                .enumerate()
                .find(|&(i, (k, _))| k == name && !self.is_taken(i))
                .map(|(i, (_, node))| (i, Loc::Node(node))),
            _ => None,
        };
        let (i, loc) = found?;
        self.taken[i / 64] |= 1 << (i % 64);
        Some(loc)
    }

    fn decode<T: DeserializeOwned>(&self, loc: Loc<'a>) -> Result<T, String> {
        let r = match (loc, self.source) {
            (Loc::Value(v), _) => value_serde::from_value_within(v, ARGUMENT_DEPTH),
            (Loc::Node(node), Some(Source::Tree(tree))) => {
                value_serde::from_tree(tree, node, ARGUMENT_DEPTH)
            }
            (Loc::Node(_), _) => return Err(crate::call::undecoded().message),
        };
        r.map_err(|e| e.to_string())
    }

    fn convert<T: DeserializeOwned>(&mut self, name: &str, loc: Loc<'a>) -> Option<T> {
        match self.decode::<T>(loc) {
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
            Some(loc) => self.convert(name, loc),
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
            Some(loc) => self.convert(name, loc),
            None => Some(default()),
        }
    }

    /// Every parameter as one struct `T` (its fields are the parameters).
    pub fn flatten<T: DeserializeOwned>(&mut self) -> Option<T> {
        self.took_all = true;
        let all = match self.source {
            Some(Source::Value(v)) => value_serde::from_value_within(v, ARGUMENT_DEPTH),
            Some(Source::Tree(tree)) => value_serde::from_tree(tree, 0, ARGUMENT_DEPTH),
            // No parameters: an empty map (a struct of optional fields).
            None => value_serde::from_value(&Value::Map(Vec::new())),
        };
        match all {
            Ok(t) => Some(t),
            Err(e) => {
                let message = e.to_string();
                let field = message
                    .split('`')
                    .nth(1)
                    .filter(|_| {
                        ["missing field", "unknown field", "duplicate field"]
                            .iter()
                            .any(|p| message.starts_with(p))
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
            let took: usize = self.taken.iter().map(|w| w.count_ones() as usize).sum();
            let mut extra: Vec<&str> = if took == self.len {
                Vec::new()
            } else {
                self.entries()
                    .filter(|&(i, _, _)| !self.is_taken(i))
                    .map(|(_, k, _)| k)
                    .collect()
            };
            extra.sort_unstable();
            for name in extra {
                self.errors.push(FieldError {
                    field: name.to_owned(),
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
    name: &str,
    data: &Value,
    validate: Check<T>,
) -> Result<T, RpcError> {
    let (t, mut args) = if matches!(data, Value::Map(_)) {
        // A map: field by field, so each problem names its field.
        let mut args = Args::over_value(name, data)?;
        (args.flatten::<T>(), args)
    } else {
        let mut args = Args::empty(name);
        args.took_all = true;
        (args.convert::<T>("data", Loc::Value(data)), args)
    };
    if let (Some(t), Some(check)) = (&t, validate) {
        if let Err(report) = check(t) {
            args.push_report(&report);
        }
    }
    args.finish()?;
    t.ok_or_else(|| args.into_error())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use conduit_protocol::native::{access, ArchivedValueTree, ValueTree};

    use super::*;
    use crate::{Server, ServerDescriptor};

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Req {
        a: i64,
        #[serde(default)]
        tag: Option<String>,
    }

    /// The arguments of `fn(a: i64, b: u8, c: Option<String>)`, or the call's error.
    type Taken = Result<(i64, u8, Option<String>), String>;

    /// What `#[rpc] fn(a: i64, b: u8, c: Option<String>)` would take from `params`,
    /// read from the value and from its native tree: results and errors must agree.
    fn both_ways(params: &Value) -> [Taken; 2] {
        let server = Server::new(ServerDescriptor::new("pw")).unwrap();
        let call = RpcCall::standalone(server.router(), "m", params.clone());
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&ValueTree::from_value(params)).unwrap();
        let tree = access::<ArchivedValueTree>(&bytes).unwrap();
        tree.check(conduit_protocol::ValueLimits::default())
            .unwrap();
        let take = |p: Params<'_>| -> Taken {
            let mut args = Args::from_params(&p).map_err(|e| e.message)?;
            let a = args.required::<i64>("a");
            let b = args.optional::<u8>("b", || 7);
            let c = args.optional::<Option<String>>("c", || None);
            args.finish().map_err(|e| e.message)?;
            Ok((a.unwrap(), b.unwrap(), c.unwrap()))
        };
        [
            take(Params::of_call(&call)),
            take(Params::in_place(call.connection.clone(), "m", tree)),
        ]
    }

    #[test]
    fn arguments_read_from_a_tree_and_from_a_value_agree() {
        let cases = [
            Value::map().with("a", 1),
            Value::map().with("a", 1).with("b", 2).with("c", "x"),
            Value::map().with("c", Value::Nil).with("a", -5),
            // Wrong type, out of range, missing, unexpected — all at once.
            Value::map().with("b", 300).with("z", 1).with("c", 2),
            Value::map().with("a", "1"),
            // A duplicate key: the second is unexpected.
            Value::Map(vec![("a".into(), 1.into()), ("a".into(), 2.into())]),
            Value::Nil,
            Value::from(3),
            Value::Array(vec![]),
        ];
        for params in &cases {
            let [value, tree] = both_ways(params);
            assert_eq!(value, tree, "{params}");
        }
        assert_eq!(both_ways(&cases[1])[1], Ok((1, 2, Some("x".into()))));
        let err = both_ways(&cases[3])[1].clone().unwrap_err();
        for part in [
            "a: Field required",
            "b: invalid value",
            "z: Unexpected",
            "c: invalid type",
        ] {
            assert!(err.contains(part), "{err}");
        }
        assert!(both_ways(&cases[7])[1]
            .clone()
            .unwrap_err()
            .contains("params must be a map, got int"));
    }

    #[test]
    fn a_flattened_struct_reads_the_whole_tree() {
        let server = Server::new(ServerDescriptor::new("pw")).unwrap();
        for params in [
            Value::map().with("a", 4),
            Value::map().with("a", 4).with("tag", "t"),
        ] {
            let bytes =
                rkyv::to_bytes::<rkyv::rancor::Error>(&ValueTree::from_value(&params)).unwrap();
            let tree = access::<ArchivedValueTree>(&bytes).unwrap();
            let call = RpcCall::standalone(server.router(), "m", params.clone());
            let p = Params::in_place(call.connection.clone(), "m", tree);
            let mut args = Args::from_params(&p).unwrap();
            let got = args.flatten::<Req>().unwrap();
            args.finish().unwrap();
            let mut by_value = Args::new(&call).unwrap();
            assert_eq!(Some(&got), by_value.flatten::<Req>().as_ref());
            assert_eq!(got.a, 4);
        }
    }
}
