//! The graph IR: named values, nodes in topological order, constant initializers.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{CoreError, DType, Op, Result, Tensor};

/// Name, dtype and declared shape of a graph input or output.
/// `None` dims are symbolic (a batch dimension, usually).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Option<usize>>,
}

impl ValueInfo {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<Option<usize>>) -> Self {
        ValueInfo {
            name: name.into(),
            dtype,
            shape,
        }
    }

    /// The shape with symbolic dims set to `batch` (first dim) or 1 (others).
    pub fn concrete_shape(&self, batch: usize) -> Vec<usize> {
        self.shape
            .iter()
            .enumerate()
            .map(|(i, d)| d.unwrap_or(if i == 0 { batch } else { 1 }))
            .collect()
    }
}

/// One operation. An empty input name marks an omitted optional input.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl Node {
    pub fn new(name: impl Into<String>, op: Op, inputs: &[&str], outputs: &[&str]) -> Self {
        Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The input at `idx`, or `None` when absent or omitted.
    pub fn input(&self, idx: usize) -> Option<&str> {
        self.inputs.get(idx).map(String::as_str).filter(|s| !s.is_empty())
    }
}

/// A dataflow graph. After [`Graph::sort`] succeeds, `nodes` are in topological order
/// and every input refers to a graph input, an initializer or an earlier node output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub initializers: BTreeMap<String, Tensor>,
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Orders nodes topologically and checks that every value is defined exactly once.
    pub fn sort(&mut self) -> Result<()> {
        let mut defined: HashSet<&str> = HashSet::new();
        for name in self
            .inputs
            .iter()
            .map(|v| v.name.as_str())
            .chain(self.initializers.keys().map(String::as_str))
        {
            defined.insert(name);
        }
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (idx, node) in self.nodes.iter().enumerate() {
            for out in node.outputs.iter().filter(|o| !o.is_empty()) {
                if defined.contains(out.as_str()) || producer.insert(out.as_str(), idx).is_some() {
                    return Err(CoreError::DuplicateValue(out.clone()));
                }
            }
        }
        // Kahn's algorithm, keeping the original order among ready nodes.
        let n = self.nodes.len();
        let mut pending = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (idx, node) in self.nodes.iter().enumerate() {
            for input in node.inputs.iter().filter(|i| !i.is_empty()) {
                if defined.contains(input.as_str()) {
                    continue;
                }
                match producer.get(input.as_str()) {
                    Some(&p) => {
                        pending[idx] += 1;
                        users[p].push(idx);
                    }
                    None => return Err(CoreError::UndefinedValue(input.clone())),
                }
            }
        }
        let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(idx) = ready.pop_first() {
            order.push(idx);
            for &u in &users[idx] {
                pending[u] -= 1;
                if pending[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() != n {
            let stuck = (0..n).find(|&i| pending[i] > 0).unwrap_or(0);
            return Err(CoreError::Cycle(self.nodes[stuck].name.clone()));
        }
        for out in &self.outputs {
            if !defined.contains(out.name.as_str()) && !producer.contains_key(out.name.as_str()) {
                return Err(CoreError::UndefinedValue(out.name.clone()));
            }
        }
        let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes).into_iter().map(Some).collect();
        self.nodes = order.into_iter().filter_map(|i| old[i].take()).collect();
        Ok(())
    }

    /// Index of the node producing each value.
    pub fn producers(&self) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for (idx, node) in self.nodes.iter().enumerate() {
            for out in &node.outputs {
                map.insert(out.clone(), idx);
            }
        }
        map
    }

    /// Number of uses of each value by nodes and graph outputs.
    pub fn use_counts(&self) -> HashMap<String, usize> {
        let mut map: HashMap<String, usize> = HashMap::new();
        for node in &self.nodes {
            for input in node.inputs.iter().filter(|i| !i.is_empty()) {
                *map.entry(input.clone()).or_default() += 1;
            }
        }
        for out in &self.outputs {
            *map.entry(out.name.clone()).or_default() += 1;
        }
        map
    }

    /// Number of trainable parameters (elements of float and i8 initializers, and the
    /// weights of MX layers, whose element codes are u8).
    pub fn parameter_count(&self) -> usize {
        let mx_weights: HashSet<&str> = self
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::MxConv(_) | Op::MxGemm(_)))
            .filter_map(|n| n.input(1))
            .collect();
        self.initializers
            .iter()
            .filter(|(name, t)| t.dtype().is_float() || t.dtype() == DType::I8 || mx_weights.contains(name.as_str()))
            .map(|(_, t)| t.len())
            .sum()
    }

    /// A fresh value name with the given stem that the graph does not use yet.
    pub fn fresh_name(&self, stem: &str) -> String {
        let used: HashSet<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().chain(n.inputs.iter()))
            .chain(self.initializers.keys())
            .map(String::as_str)
            .collect();
        if !used.contains(stem) {
            return stem.to_string();
        }
        (1..)
            .map(|i| format!("{stem}_{i}"))
            .find(|c| !used.contains(c.as_str()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vi(name: &str) -> ValueInfo {
        ValueInfo::new(name, DType::F32, vec![Some(1)])
    }

    #[test]
    fn sorts_out_of_order_nodes() {
        let mut g = Graph {
            inputs: vec![vi("x")],
            outputs: vec![vi("z")],
            nodes: vec![
                Node::new("b", Op::Relu, &["y"], &["z"]),
                Node::new("a", Op::Relu, &["x"], &["y"]),
            ],
            ..Default::default()
        };
        g.sort().unwrap();
        assert_eq!(g.nodes[0].name, "a");
    }

    #[test]
    fn detects_cycles_and_undefined_values() {
        let mut g = Graph {
            inputs: vec![vi("x")],
            outputs: vec![vi("z")],
            nodes: vec![
                Node::new("a", Op::Add, &["x", "z"], &["y"]),
                Node::new("b", Op::Relu, &["y"], &["z"]),
            ],
            ..Default::default()
        };
        assert!(matches!(g.sort(), Err(CoreError::Cycle(_))));
        let mut g = Graph {
            inputs: vec![vi("x")],
            outputs: vec![vi("y")],
            nodes: vec![Node::new("a", Op::Add, &["x", "w"], &["y"])],
            ..Default::default()
        };
        assert!(matches!(g.sort(), Err(CoreError::UndefinedValue(v)) if v == "w"));
    }

    #[test]
    fn detects_duplicates() {
        let mut g = Graph {
            inputs: vec![vi("x")],
            outputs: vec![vi("y")],
            nodes: vec![
                Node::new("a", Op::Relu, &["x"], &["y"]),
                Node::new("b", Op::Relu, &["x"], &["y"]),
            ],
            ..Default::default()
        };
        assert!(matches!(g.sort(), Err(CoreError::DuplicateValue(_))));
    }
}
