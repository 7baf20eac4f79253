use std::collections::BTreeMap;

use proptest::prelude::*;
use rkyv::rancor;
use serde::{Deserialize, Serialize};

use super::*;
use crate::native::{access, ArchivedValueTree, Node, ValueTree};
use crate::{Value, ValueLimits};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Empty,
    Circle(f64),
    Rect { w: u32, h: u32 },
    Pair(i8, String),
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Move {
    player: String,
    x: i64,
    y: i64,
    speed: Option<f32>,
    tags: Vec<String>,
    shape: Shape,
    #[serde(with = "bytes_field")]
    blob: Vec<u8>,
    scores: BTreeMap<u16, bool>,
    unit: (),
    pair: (u8, char),
}

mod bytes_field {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}

fn sample() -> Move {
    Move {
        player: "ada".into(),
        x: -3,
        y: i64::MAX,
        speed: Some(1.5),
        tags: vec!["a".into(), "".into()],
        shape: Shape::Rect { w: 2, h: 3 },
        blob: vec![0, 255, 7],
        scores: [(1, true), (65535, false)].into_iter().collect(),
        unit: (),
        pair: (9, 'é'),
    }
}

fn archive(v: &Value) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rancor::Error>(&ValueTree::from_value(v)).unwrap()
}

fn archive_nodes(nodes: Vec<Node>) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rancor::Error>(&ValueTree { nodes }).unwrap()
}

/// The conversion this module replaces: through `serde_json`.
fn via_json<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    let json = serde_json::to_value(v).map_err(|e| e.to_string())?;
    serde_json::from_value(json).map_err(|e| e.to_string())
}

#[test]
fn typed_data_round_trips_through_a_value_and_an_archive() {
    let m = sample();
    let v = to_value(&m).unwrap();
    assert_eq!(v.get("player"), Some(&Value::from("ada")));
    assert_eq!(v.get("blob"), Some(&Value::Bin(vec![0, 255, 7])));
    assert_eq!(
        v.get("shape"),
        Some(&Value::map().with("Rect", Value::map().with("w", 2).with("h", 3)))
    );
    assert_eq!(
        v.get("scores").and_then(|s| s.get("65535")),
        Some(&Value::Bool(false))
    );
    assert_eq!(from_value::<Move>(&v).unwrap(), m);
    let bytes = archive(&v);
    let tree = access::<ArchivedValueTree>(&bytes).unwrap();
    tree.check(ValueLimits::default()).unwrap();
    assert_eq!(from_tree::<Move>(tree, 0, 64).unwrap(), m);
    for shape in [
        Shape::Empty,
        Shape::Circle(2.0),
        Shape::Pair(-1, "p".into()),
    ] {
        let v = to_value(&shape).unwrap();
        assert_eq!(from_value::<Shape>(&v).unwrap(), shape);
        let bytes = archive(&v);
        let tree = access::<ArchivedValueTree>(&bytes).unwrap();
        assert_eq!(from_tree::<Shape>(tree, 0, 64).unwrap(), shape);
    }
}

#[test]
fn strings_are_lent_from_the_archive() {
    let bytes = archive(&Value::map().with("name", "borrowed"));
    let tree = access::<ArchivedValueTree>(&bytes).unwrap();
    let (key, node) = tree.map_entries().unwrap().next().unwrap();
    assert_eq!(key, "name");
    let s: &str = from_tree(tree, node, 64).unwrap();
    assert_eq!(s, "borrowed");
    let v = Value::from("lent");
    let s: &str = from_value(&v).unwrap();
    assert_eq!(s, "lent");
}

#[test]
fn errors_read_as_serde_json_words_them() {
    let cases: Vec<Value> = vec![
        Value::from("x"),
        Value::Float(1.5),
        Value::Int(-1),
        Value::Int(300),
        Value::Nil,
        Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
        Value::map().with("x", 1),
        Value::map().with("player", "a"),
    ];
    for v in &cases {
        assert_eq!(
            from_value::<i64>(v).map_err(|e| e.to_string()),
            via_json::<i64>(v),
            "{v}"
        );
        assert_eq!(
            from_value::<u8>(v).map_err(|e| e.to_string()),
            via_json::<u8>(v),
            "{v}"
        );
        assert_eq!(
            from_value::<(i64, i64)>(v).map_err(|e| e.to_string()),
            via_json::<(i64, i64)>(v),
            "{v}"
        );
        assert_eq!(
            from_value::<Option<String>>(v).map_err(|e| e.to_string()),
            via_json::<Option<String>>(v),
            "{v}"
        );
        assert_eq!(
            from_value::<Move>(v).map_err(|e| e.to_string()),
            via_json::<Move>(v),
            "{v}"
        );
    }
}

#[test]
fn leftover_elements_and_deep_nesting_are_errors_not_crashes() {
    let three = Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
    assert!(from_value::<(i64, i64)>(&three).is_err());
    let bytes = archive(&three);
    let tree = access::<ArchivedValueTree>(&bytes).unwrap();
    assert!(from_tree::<(i64, i64)>(tree, 0, 64).is_err());

    let mut deep = Value::Nil;
    for _ in 0..1_000 {
        deep = Value::Array(vec![deep]);
    }
    let e = from_value::<Value>(&deep).unwrap_err();
    assert!(e.message().contains("nested deeper"), "{e}");
    // Dropping a deep `Value` recurses; unwrap it iteratively.
    while let Value::Array(mut items) = deep {
        deep = items.pop().unwrap_or_default();
    }

    // A tree 100,000 arrays deep: refused by depth, without recursing that far.
    let mut nodes = vec![Node::Array(1); 100_000];
    nodes.push(Node::Nil);
    let bytes = archive_nodes(nodes);
    let tree = access::<ArchivedValueTree>(&bytes).unwrap();
    assert!(from_tree::<Value>(tree, 0, 64).is_err());
    assert!(from_tree::<serde::de::IgnoredAny>(tree, 0, 64).is_ok());
}

#[test]
fn bytes_read_as_a_sequence_must_all_be_read() {
    let three = Value::Bin(vec![1, 2, 3]);
    assert_eq!(from_value::<[u8; 3]>(&three).unwrap(), [1, 2, 3]);
    assert_eq!(from_value::<Vec<u8>>(&three).unwrap(), vec![1, 2, 3]);
    assert!(from_value::<[u8; 2]>(&three).is_err());
    assert!(from_value::<(u8, u8)>(&three).is_err());
    let bytes = archive(&three);
    let tree = access::<ArchivedValueTree>(&bytes).unwrap();
    assert!(from_tree::<[u8; 2]>(tree, 0, 64).is_err());
}

#[test]
fn float_keys_are_written_as_text_when_finite() {
    use serde::Serializer;
    let v = ValueSerializer.collect_map([(1.5f64, 1)]).unwrap();
    assert_eq!(v, Value::map().with("1.5", 1));
    assert!(ValueSerializer.collect_map([(f64::NAN, 1)]).is_err());
}

#[test]
fn a_tree_that_claims_more_than_it_holds_is_an_error() {
    let bytes = archive_nodes(vec![Node::Map(3), Node::Str("a".into()), Node::Int(1)]);
    let tree = access::<ArchivedValueTree>(&bytes).unwrap();
    assert!(tree.check(ValueLimits::default()).is_err());
    assert!(from_tree::<BTreeMap<String, i64>>(tree, 0, 64).is_err());
    assert!(from_tree::<serde::de::IgnoredAny>(tree, 0, 64).is_err());
    let entries: Vec<_> = tree.map_entries().unwrap().collect();
    assert_eq!(entries, vec![("a", 2)]);
}

#[test]
fn map_keys_in_other_forms() {
    let v = to_value(&[(7i32, 'c')].into_iter().collect::<BTreeMap<_, _>>()).unwrap();
    assert_eq!(v, Value::map().with("7", "c"));
    assert!(to_value(&[((1, 2), 0)].into_iter().collect::<BTreeMap<_, _>>()).is_err());
    assert!(to_value(&u128::MAX).is_err());
    assert_eq!(to_value(&u64::MAX).unwrap(), Value::UInt(u64::MAX));
    assert_eq!(to_value(&(-5i128)).unwrap(), Value::Int(-5));
    let back: BTreeMap<i32, char> = from_value(&v).unwrap();
    assert_eq!(back.get(&7), Some(&'c'));
    assert!(from_value::<BTreeMap<i32, char>>(&Value::map().with("x", "c")).is_err());
}

/// Any value, up to a few levels deep.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        (-1e9f64..1e9).prop_map(Value::Float),
        "[a-z]{0,6}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bin),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec(("[a-c]{1,2}", inner), 0..5).prop_map(Value::Map),
        ]
    })
}

/// The checks a value tree must pass, written plainly over the unarchived nodes (the
/// decoder's rules: budget, then depth, then room, keys strings, nothing left over).
fn reference_check(nodes: &[Node], limits: ValueLimits) -> Result<(), crate::WireError> {
    use crate::WireError;
    let shape = |problem| WireError::Shape {
        kind: "value tree",
        problem,
    };
    fn walk(
        nodes: &[Node],
        at: &mut usize,
        depth: usize,
        limits: ValueLimits,
        budget: &mut usize,
    ) -> Result<(), WireError> {
        let short = WireError::Shape {
            kind: "value tree",
            problem: "fewer nodes than the containers claim",
        };
        *budget = budget.checked_sub(1).ok_or(WireError::Shape {
            kind: "value tree",
            problem: "more values than the limit",
        })?;
        let node = nodes.get(*at).ok_or(short.clone())?;
        *at += 1;
        let left = nodes.len() - *at;
        let (n, map) = match node {
            Node::Array(n) => (*n as usize, false),
            Node::Map(n) => (*n as usize, true),
            _ => return Ok(()),
        };
        if depth >= limits.max_depth {
            return Err(WireError::TooDeep {
                max: limits.max_depth,
            });
        }
        if (map && n > left / 2) || (!map && n > left) {
            return Err(short);
        }
        for _ in 0..n {
            if map {
                if !matches!(nodes.get(*at), Some(Node::Str(_))) {
                    return Err(WireError::Shape {
                        kind: "value tree",
                        problem: "map key is not a string",
                    });
                }
                *at += 1;
            }
            walk(nodes, at, depth + 1, limits, budget)?;
        }
        Ok(())
    }
    if nodes.len() > limits.max_values * 2 {
        return Err(shape("too many nodes"));
    }
    let (mut at, mut budget) = (0, limits.max_values);
    walk(nodes, &mut at, 0, limits, &mut budget)?;
    if at != nodes.len() {
        return Err(shape("nodes left over after the root"));
    }
    Ok(())
}

/// Any node sequence, mostly malformed.
fn any_nodes() -> impl Strategy<Value = Vec<Node>> {
    let node = prop_oneof![
        Just(Node::Nil),
        any::<i64>().prop_map(Node::Int),
        "[a-b]{1}".prop_map(Node::Str),
        (0u32..4).prop_map(Node::Array),
        (0u32..3).prop_map(Node::Map),
    ];
    proptest::collection::vec(node, 0..14)
}

proptest! {
    #[test]
    fn any_value_reads_back_itself_from_both_forms(v in any_value()) {
        prop_assert_eq!(&from_value::<Value>(&v).unwrap(), &v);
        prop_assert_eq!(&to_value(&v).unwrap(), &v);
        let bytes = archive(&v);
        let tree = access::<ArchivedValueTree>(&bytes).unwrap();
        prop_assert!(tree.check(ValueLimits::default()).is_ok());
        prop_assert_eq!(&from_tree::<Value>(tree, 0, 64).unwrap(), &v);
        if let Value::Map(entries) = &v {
            let found: Vec<(&str, Value)> = tree
                .map_entries()
                .unwrap()
                .map(|(k, node)| (k, from_tree::<Value>(tree, node, 64).unwrap()))
                .collect();
            let want: Vec<(&str, Value)> =
                entries.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            prop_assert_eq!(found, want);
        }
    }

    #[test]
    fn check_agrees_with_a_reference_and_decoding(
        nodes in any_nodes(),
        depth in 1usize..4,
        values in 1usize..10,
    ) {
        let limits = ValueLimits { max_depth: depth, max_values: values };
        let want = reference_check(&nodes, limits);
        let bytes = archive_nodes(nodes);
        let tree = access::<ArchivedValueTree>(&bytes).unwrap();
        prop_assert_eq!(tree.check(limits), want.clone());
        prop_assert_eq!(tree.to_value(limits).map(drop), want);
        if tree.check(limits).is_ok() {
            prop_assert_eq!(
                from_tree::<Value>(tree, 0, depth).ok(),
                tree.to_value(limits).ok()
            );
        }
    }
}
