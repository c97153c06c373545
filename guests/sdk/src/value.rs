//! Attribute and `AnyValue` helpers over the flat WIT encoding.

use crate::{KeyValue, Value, ValueNode, ValueTree};

/// An OTLP `AnyValue` as an ordinary recursive Rust enum (from `weft-otlp-wire`): convert a
/// WIT [`Value`] with `AnyValue::from` to walk or build nested arrays and maps, and back with
/// `Value::from`; the batch ABI's edits take it too.
pub use weft_otlp_wire::AnyValue;

impl From<Value> for AnyValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Empty => AnyValue::Empty,
            Value::Str(s) => AnyValue::Str(s),
            Value::Boolean(b) => AnyValue::Bool(b),
            Value::Int(i) => AnyValue::Int(i),
            Value::Double(d) => AnyValue::Double(d),
            Value::Bytes(b) => AnyValue::Bytes(b),
            Value::Nested(tree) => {
                let mut nodes: Vec<Option<ValueNode>> = tree.nodes.into_iter().map(Some).collect();
                unflatten(&mut nodes, 0)
            }
        }
    }
}

/// Rebuilds node `i` and its children; a missing or reused index reads as `Empty`.
fn unflatten(nodes: &mut [Option<ValueNode>], i: u32) -> AnyValue {
    let Some(node) = nodes.get_mut(i as usize).and_then(Option::take) else {
        return AnyValue::Empty;
    };
    match node {
        ValueNode::Empty => AnyValue::Empty,
        ValueNode::Str(s) => AnyValue::Str(s),
        ValueNode::Boolean(b) => AnyValue::Bool(b),
        ValueNode::Int(v) => AnyValue::Int(v),
        ValueNode::Double(d) => AnyValue::Double(d),
        ValueNode::Bytes(b) => AnyValue::Bytes(b),
        ValueNode::Array(items) => {
            AnyValue::Array(items.into_iter().map(|c| unflatten(nodes, c)).collect())
        }
        ValueNode::Kvlist(entries) => AnyValue::KvList(
            entries
                .into_iter()
                .map(|(k, c)| (k, unflatten(nodes, c)))
                .collect(),
        ),
    }
}

impl From<AnyValue> for Value {
    fn from(v: AnyValue) -> Self {
        match v {
            AnyValue::Empty => Value::Empty,
            AnyValue::Str(s) => Value::Str(s),
            AnyValue::Bool(b) => Value::Boolean(b),
            AnyValue::Int(i) => Value::Int(i),
            AnyValue::Double(d) => Value::Double(d),
            AnyValue::Bytes(b) => Value::Bytes(b),
            nested => {
                let mut nodes = Vec::new();
                flatten(nested, &mut nodes);
                Value::Nested(ValueTree { nodes })
            }
        }
    }
}

/// Appends `v` and its descendants to `nodes` (parent before children); returns `v`'s index.
fn flatten(v: AnyValue, nodes: &mut Vec<ValueNode>) -> u32 {
    let index = nodes.len();
    nodes.push(ValueNode::Empty);
    let node = match v {
        AnyValue::Empty => ValueNode::Empty,
        AnyValue::Str(s) => ValueNode::Str(s),
        AnyValue::Bool(b) => ValueNode::Boolean(b),
        AnyValue::Int(i) => ValueNode::Int(i),
        AnyValue::Double(d) => ValueNode::Double(d),
        AnyValue::Bytes(b) => ValueNode::Bytes(b),
        AnyValue::Array(items) => {
            ValueNode::Array(items.into_iter().map(|c| flatten(c, nodes)).collect())
        }
        AnyValue::KvList(entries) => ValueNode::Kvlist(
            entries
                .into_iter()
                .map(|(k, c)| (k, flatten(c, nodes)))
                .collect(),
        ),
    };
    nodes[index] = node;
    index as u32
}

impl Value {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an int value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Calls `f` on every string in this value, nested arrays and map values included (map
    /// keys are not visited). Cheap: nested trees are edited in place, without unflattening.
    pub fn for_each_str_mut(&mut self, mut f: impl FnMut(&mut String)) {
        match self {
            Value::Str(s) => f(s),
            Value::Nested(tree) => {
                for node in &mut tree.nodes {
                    if let ValueNode::Str(s) = node {
                        f(s)
                    }
                }
            }
            _ => {}
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}
impl From<f64> for Value {
    fn from(d: f64) -> Self {
        Value::Double(d)
    }
}

/// Lookup and update of attribute lists (`Vec<KeyValue>`), the way OTLP uses them: keys are
/// meant to be unique, the first match wins on lookup, and `set` replaces in place.
pub trait AttributesExt {
    /// The value of `key`.
    fn get_value(&self, key: &str) -> Option<&Value>;
    /// The value of `key` if it is a string.
    fn get_str(&self, key: &str) -> Option<&str> {
        self.get_value(key).and_then(Value::as_str)
    }
    /// Sets `key` to `value`, replacing an existing value.
    fn set(&mut self, key: &str, value: impl Into<Value>);
    /// Sets `key` to `value` unless `key` is present; returns whether it was set.
    fn set_if_absent(&mut self, key: &str, value: impl Into<Value>) -> bool;
    /// Removes `key` and returns its value.
    fn remove_key(&mut self, key: &str) -> Option<Value>;
}

impl AttributesExt for Vec<KeyValue> {
    fn get_value(&self, key: &str) -> Option<&Value> {
        self.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
    }

    fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => self.push(KeyValue {
                key: key.to_string(),
                value,
            }),
        }
    }

    fn set_if_absent(&mut self, key: &str, value: impl Into<Value>) -> bool {
        if self.iter().any(|kv| kv.key == key) {
            return false;
        }
        self.push(KeyValue {
            key: key.to_string(),
            value: value.into(),
        });
        true
    }

    fn remove_key(&mut self, key: &str) -> Option<Value> {
        let pos = self.iter().position(|kv| kv.key == key)?;
        Some(self.remove(pos).value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_round_trip_through_the_flat_encoding() {
        let v = AnyValue::KvList(vec![
            (
                "a".into(),
                AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Str("x".into())]),
            ),
            (
                "b".into(),
                AnyValue::KvList(vec![("c".into(), AnyValue::Bool(true))]),
            ),
            ("d".into(), AnyValue::Empty),
        ]);
        let flat = Value::from(v.clone());
        match &flat {
            Value::Nested(tree) => assert_eq!(tree.nodes.len(), 7),
            other => panic!("expected a nested value, got {other:?}"),
        }
        assert_eq!(AnyValue::from(flat), v);
    }

    #[test]
    fn for_each_str_mut_reaches_nested_strings_but_not_keys() {
        let mut v = Value::from(AnyValue::KvList(vec![(
            "key".into(),
            AnyValue::Array(vec![AnyValue::Str("deep".into())]),
        )]));
        v.for_each_str_mut(|s| *s = s.to_uppercase());
        assert_eq!(
            AnyValue::from(v),
            AnyValue::KvList(vec![(
                "key".into(),
                AnyValue::Array(vec![AnyValue::Str("DEEP".into())])
            )])
        );
    }

    #[test]
    fn attribute_set_replaces_and_set_if_absent_keeps() {
        let mut attrs: Vec<KeyValue> = Vec::new();
        attrs.set("k", "v1");
        attrs.set("k", "v2");
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs.get_str("k"), Some("v2"));
        assert!(!attrs.set_if_absent("k", "v3"));
        assert!(attrs.set_if_absent("n", 7i64));
        assert_eq!(attrs.get_value("n").and_then(Value::as_int), Some(7));
        assert_eq!(attrs.remove_key("k"), Some(Value::Str("v2".into())));
        assert_eq!(attrs.get_str("k"), None);
    }
}
