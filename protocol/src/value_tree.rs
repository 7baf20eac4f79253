//! A native value tree checked and read where it lies: its shape against the
//! [`ValueLimits`] without building anything, a root map's entries found by key —
//! what reading typed arguments in place needs — and, once checked, the whole tree
//! rebuilt as a [`Value`].

use crate::error::WireError;
use crate::msgpack::ValueLimits;
use crate::native::{ArchivedNode, ArchivedValueTree};
use crate::value::Value;

/// A container claims more nodes than follow it.
const SHORT: WireError = WireError::Shape {
    kind: "value tree",
    problem: "fewer nodes than the containers claim",
};

/// A map's key node is not a string.
const NOT_A_STRING_KEY: WireError = WireError::Shape {
    kind: "value tree",
    problem: "map key is not a string",
};

impl ArchivedValueTree {
    /// Checks a tree against `limits` without building anything — node and value
    /// budget, depth, string map keys, containers no larger than what follows, nothing
    /// left over — recursing as deep as the tree nests, at most `limits.max_depth`.
    /// What [`to_value`](Self::to_value) checks as it builds, and what a typed
    /// method's arguments pass before they are read in place.
    pub fn check(&self, limits: ValueLimits) -> Result<(), WireError> {
        self.walk::<Check>(limits)
    }

    /// The tree checked against `limits` and made into what `S` makes of it, in one
    /// pass: one set of rules for [`check`](Self::check) and
    /// [`to_value`](Self::to_value).
    fn walk<S: Sink>(&self, limits: ValueLimits) -> Result<S::Out, WireError> {
        let nodes = self.nodes.as_slice();
        if nodes.len() > limits.max_values.saturating_mul(2) {
            return Err(WireError::Shape {
                kind: "value tree",
                problem: "too many nodes",
            });
        }
        let mut cursor = 0usize;
        // Every node but a map key is a value (as in MessagePack decoding).
        let mut budget = limits.max_values;
        let v = walk_node::<S>(nodes, &mut cursor, 0, limits.max_depth, &mut budget)?;
        if cursor != nodes.len() {
            return Err(WireError::Shape {
                kind: "value tree",
                problem: "nodes left over after the root",
            });
        }
        Ok(v)
    }

    /// A root map's entries, in wire order: each key and the index of its value's
    /// node (for [`from_tree`](crate::value_serde::from_tree)). `None` when the root is
    /// not a map. Meant for a tree [`check`](Self::check) accepted; on any other it
    /// stops early rather than read past the nodes.
    pub fn map_entries(&self) -> Option<MapEntries<'_>> {
        let nodes = self.nodes.as_slice();
        match nodes.first() {
            Some(ArchivedNode::Map(n)) => Some(MapEntries {
                nodes,
                cursor: 1,
                left: n.to_native() as usize,
            }),
            _ => None,
        }
    }

    /// The Python name of the root's type (`dict`, `list`, `NoneType`, …), as
    /// [`Value::type_name`](crate::Value::type_name) gives it.
    pub fn root_type_name(&self) -> &'static str {
        match self.nodes.first() {
            None | Some(ArchivedNode::Nil) => "NoneType",
            Some(ArchivedNode::Bool(_)) => "bool",
            Some(ArchivedNode::Int(_) | ArchivedNode::UInt(_)) => "int",
            Some(ArchivedNode::Float(_)) => "float",
            Some(ArchivedNode::Str(_)) => "str",
            Some(ArchivedNode::Bin(_)) => "bytes",
            Some(ArchivedNode::Array(_)) => "list",
            Some(ArchivedNode::Map(_)) => "dict",
        }
    }
}

impl ArchivedValueTree {
    /// Rebuilds the [`Value`], enforcing `limits` (depth, and the value budget) as
    /// [`check`](Self::check) does, in one pass.
    pub fn to_value(&self, limits: ValueLimits) -> Result<Value, WireError> {
        self.walk::<Build>(limits)
    }
}

/// The entries of a root map (see [`ArchivedValueTree::map_entries`]).
pub struct MapEntries<'a> {
    nodes: &'a [ArchivedNode],
    /// The next key's node.
    cursor: usize,
    /// Entries not yet given.
    left: usize,
}

impl MapEntries<'_> {
    /// Entries not yet given (what the map claims: a tree `check` accepted holds them).
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = (&'a str, usize);

    fn next(&mut self) -> Option<(&'a str, usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let ArchivedNode::Str(key) = self.nodes.get(self.cursor)? else {
            self.left = 0;
            return None;
        };
        let value = self.cursor + 1;
        let Some(end) = subtree_end(self.nodes, value) else {
            self.left = 0;
            return None;
        };
        self.cursor = end;
        Some((key.as_str(), value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Where the subtree at `start` ends (the index after its last node); `None` when its
/// containers claim more nodes than there are. Iterative: every turn passes one node.
pub(crate) fn subtree_end(nodes: &[ArchivedNode], start: usize) -> Option<usize> {
    let mut owed: usize = 1;
    let mut at = start;
    while owed > 0 {
        let children = match nodes.get(at)? {
            ArchivedNode::Array(n) => n.to_native() as usize,
            ArchivedNode::Map(n) => (n.to_native() as usize).checked_mul(2)?,
            _ => 0,
        };
        at += 1;
        owed = (owed - 1).checked_add(children)?;
    }
    Some(at)
}

/// What a walk of a tree makes of it, node by node: nothing ([`Check`]: every
/// method compiles away) or a [`Value`] ([`Build`]).
trait Sink {
    type Out;
    type Items;
    type Entries;
    fn leaf(node: &ArchivedNode) -> Self::Out;
    fn items(n: usize) -> Self::Items;
    fn item(items: &mut Self::Items, item: Self::Out);
    fn array(items: Self::Items) -> Self::Out;
    fn entries(n: usize) -> Self::Entries;
    fn entry(entries: &mut Self::Entries, key: &str, value: Self::Out);
    fn map(entries: Self::Entries) -> Self::Out;
}

/// A walk that only checks.
struct Check;

impl Sink for Check {
    type Out = ();
    type Items = ();
    type Entries = ();
    fn leaf(_: &ArchivedNode) {}
    fn items(_: usize) {}
    fn item((): &mut (), (): ()) {}
    fn array((): ()) {}
    fn entries(_: usize) {}
    fn entry((): &mut (), _: &str, (): ()) {}
    fn map((): ()) {}
}

/// A walk that builds the [`Value`].
struct Build;

impl Sink for Build {
    type Out = Value;
    type Items = Vec<Value>;
    type Entries = Vec<(String, Value)>;
    fn leaf(node: &ArchivedNode) -> Value {
        match node {
            ArchivedNode::Bool(b) => Value::Bool(*b),
            ArchivedNode::Int(i) => Value::Int(i.to_native()),
            ArchivedNode::UInt(u) => Value::from(u.to_native()),
            ArchivedNode::Float(f) => Value::Float(f.to_native()),
            ArchivedNode::Str(s) => Value::Str(s.as_str().to_owned()),
            ArchivedNode::Bin(b) => Value::Bin(b.as_slice().to_vec()),
            // Containers do not come here.
            ArchivedNode::Nil | ArchivedNode::Array(_) | ArchivedNode::Map(_) => Value::Nil,
        }
    }
    fn items(n: usize) -> Vec<Value> {
        // `n` fits in the nodes that follow: checked before.
        Vec::with_capacity(n)
    }
    fn item(items: &mut Vec<Value>, item: Value) {
        items.push(item);
    }
    fn array(items: Vec<Value>) -> Value {
        Value::Array(items)
    }
    fn entries(n: usize) -> Vec<(String, Value)> {
        Vec::with_capacity(n)
    }
    fn entry(entries: &mut Vec<(String, Value)>, key: &str, value: Value) {
        entries.push((key.to_owned(), value));
    }
    fn map(entries: Vec<(String, Value)>) -> Value {
        Value::Map(entries)
    }
}

/// The subtree at `cursor`, `depth` containers deep, checked and made into what `S`
/// makes of it. Recursion is as deep as the tree nests, at most `max_depth`.
fn walk_node<S: Sink>(
    nodes: &[ArchivedNode],
    cursor: &mut usize,
    depth: usize,
    max_depth: usize,
    budget: &mut usize,
) -> Result<S::Out, WireError> {
    *budget = budget.checked_sub(1).ok_or(WireError::Shape {
        kind: "value tree",
        problem: "more values than the limit",
    })?;
    let node = nodes.get(*cursor).ok_or(SHORT)?;
    *cursor += 1;
    let remaining = nodes.len() - *cursor;
    Ok(match node {
        ArchivedNode::Array(n) => {
            let n = n.to_native() as usize;
            if depth >= max_depth {
                return Err(WireError::TooDeep { max: max_depth });
            }
            if n > remaining {
                return Err(SHORT);
            }
            let mut items = S::items(n);
            for _ in 0..n {
                let item = walk_node::<S>(nodes, cursor, depth + 1, max_depth, budget)?;
                S::item(&mut items, item);
            }
            S::array(items)
        }
        ArchivedNode::Map(n) => {
            let n = n.to_native() as usize;
            if depth >= max_depth {
                return Err(WireError::TooDeep { max: max_depth });
            }
            if n > remaining / 2 {
                return Err(SHORT);
            }
            let mut entries = S::entries(n);
            for _ in 0..n {
                let Some(ArchivedNode::Str(key)) = nodes.get(*cursor) else {
                    return Err(NOT_A_STRING_KEY);
                };
                *cursor += 1;
                let value = walk_node::<S>(nodes, cursor, depth + 1, max_depth, budget)?;
                S::entry(&mut entries, key.as_str(), value);
            }
            S::map(entries)
        }
        leaf => S::leaf(leaf),
    })
}
