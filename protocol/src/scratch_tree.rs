//! The value tree the native encoders flatten into, one per thread and reused: a
//! reply, a request or a message then allocates no node vector of its own.

use crate::native::{flatten, ValueTree};
use crate::value::Value;

/// Most nodes the per-thread scratch tree of [`ValueTree::with_flattened`] keeps
/// allocated between uses (8 KiB): a larger value's nodes are given back.
const SCRATCH_TREE_NODES: usize = 256;

thread_local! {
    /// The nodes of the value being encoded on this thread, reused: encoding a small
    /// value then allocates no tree.
    static SCRATCH_TREE: std::cell::RefCell<ValueTree> = const {
        std::cell::RefCell::new(ValueTree { nodes: Vec::new() })
    };
}

impl ValueTree {
    /// Runs `f` on `value` flattened, in a tree reused across calls on this thread
    /// (what the encoders use: a reply or a message then allocates no node vector).
    pub(crate) fn with_flattened<R>(value: &Value, f: impl FnOnce(&ValueTree) -> R) -> R {
        SCRATCH_TREE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut tree) => {
                // Cleared first too: a panic in `f` must not leave nodes for the next.
                tree.nodes.clear();
                flatten(value, &mut tree.nodes);
                let r = f(&tree);
                tree.nodes.clear();
                if tree.nodes.capacity() > SCRATCH_TREE_NODES {
                    tree.nodes = Vec::new();
                }
                r
            }
            // An encoding from within an encoding: a tree of its own.
            Err(_) => f(&ValueTree::from_value(value)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::tests::sample;
    use crate::native::Encoder;

    #[test]
    fn the_scratch_tree_encodes_what_a_fresh_tree_does() {
        let enc = Encoder::new(42);
        let fresh = |v: &Value| enc.rpc_response(9, &ValueTree::from_value(v)).unwrap();
        let reused = |v: &Value| ValueTree::with_flattened(v, |t| enc.rpc_response(9, t)).unwrap();
        // Twice each, in turns: nothing of one value stays for the next.
        for v in [sample(), Value::Int(3), sample(), Value::Nil] {
            assert_eq!(reused(&v), fresh(&v));
        }
        // A nested encoding gets a tree of its own and the same bytes.
        let (outer, inner) = ValueTree::with_flattened(&sample(), |t| {
            (enc.rpc_response(9, t).unwrap(), reused(&Value::Int(3)))
        });
        assert_eq!((outer, inner), (fresh(&sample()), fresh(&Value::Int(3))));
        // A panic while the tree is out leaves nothing behind.
        let _ = std::panic::catch_unwind(|| {
            ValueTree::with_flattened(&sample(), |_| panic!("encoder failed"))
        });
        assert_eq!(reused(&Value::Int(3)), fresh(&Value::Int(3)));
        // What the retained bound is in bytes (its doc says 8 KiB).
        assert_eq!(
            SCRATCH_TREE_NODES * std::mem::size_of::<crate::native::Node>(),
            8 << 10
        );
        // A large value's nodes are not kept.
        let big = Value::from_iter(0..(SCRATCH_TREE_NODES as i64 * 2));
        assert_eq!(reused(&big), fresh(&big));
        SCRATCH_TREE.with(|t| assert_eq!(t.borrow().nodes.capacity(), 0));
    }
}
