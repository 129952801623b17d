//! Runs a whole graph with the f32 reference ops.

use std::collections::HashMap;

use weft_core::{CoreError, Graph, Tensor};

use crate::ops::eval_node;

/// Errors from running a graph.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("input '{name}': {message}")]
    Input { name: String, message: String },
}

/// A sorted graph ready to run; shareable across threads, each `run` owns its buffers.
#[derive(Debug, Clone)]
pub struct Executor {
    graph: Graph,
    /// For each node, the values whose last use it is (freed after it runs).
    frees: Vec<Vec<String>>,
    /// Round every float activation (graph inputs included) through f16, as an f16 package
    /// stores them.
    f16_activations: bool,
}

impl Executor {
    pub fn new(mut graph: Graph) -> Result<Self, ExecError> {
        graph.sort()?;
        let keep: std::collections::HashSet<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (idx, node) in graph.nodes.iter().enumerate() {
            for i in node.inputs.iter().filter(|i| !i.is_empty()) {
                last_use.insert(i.as_str(), idx);
            }
        }
        let mut frees = vec![Vec::new(); graph.nodes.len()];
        for (name, idx) in last_use {
            if !keep.contains(name) && !graph.initializers.contains_key(name) {
                frees[idx].push(name.to_string());
            }
        }
        Ok(Executor {
            graph,
            frees,
            f16_activations: false,
        })
    }

    /// An executor that stores float activations as f16 (computing in f32).
    pub fn with_f16_activations(mut self, on: bool) -> Self {
        self.f16_activations = on;
        self
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the graph. Every graph input must be given with its declared dtype and a
    /// shape matching its fixed dims. Returns the graph outputs in declaration order.
    pub fn run(&self, inputs: &HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, ExecError> {
        self.run_observed(inputs, &mut |_, _| {})
    }

    /// Like [`Executor::run`], calling `observe` with every graph input and node output as
    /// it is produced (for calibration and per-layer comparisons).
    pub fn run_observed(
        &self,
        inputs: &HashMap<String, Tensor>,
        observe: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Vec<(String, Tensor)>, ExecError> {
        let mut values: HashMap<&str, Tensor> = HashMap::new();
        for decl in &self.graph.inputs {
            let t = inputs.get(&decl.name).ok_or_else(|| ExecError::Input {
                name: decl.name.clone(),
                message: "not given".into(),
            })?;
            check_input(decl, t)?;
            let t = match t {
                Tensor::F32(a) if self.f16_activations => Tensor::F32(a.mapv(round_f16)),
                other => other.clone(),
            };
            observe(&decl.name, &t);
            values.insert(decl.name.as_str(), t);
        }
        if let Some(extra) = inputs.keys().find(|k| !self.graph.inputs.iter().any(|d| &d.name == *k)) {
            return Err(ExecError::Input {
                name: extra.clone(),
                message: format!(
                    "the model has no such input (inputs: {})",
                    self.graph
                        .inputs
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for (idx, node) in self.graph.nodes.iter().enumerate() {
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        None
                    } else {
                        values.get(i.as_str()).or_else(|| self.graph.initializers.get(i))
                    }
                })
                .collect();
            let outs = eval_node(node, &ins)?;
            for name in &self.frees[idx] {
                values.remove(name.as_str());
            }
            for (name, t) in node.outputs.iter().zip(outs) {
                let t = match t {
                    Tensor::F32(a) if self.f16_activations => Tensor::F32(a.mapv(round_f16)),
                    other => other,
                };
                observe(name, &t);
                values.insert(name.as_str(), t);
            }
        }
        self.graph
            .outputs
            .iter()
            .map(|o| {
                let t = values
                    .get(o.name.as_str())
                    .or_else(|| self.graph.initializers.get(&o.name))
                    .cloned()
                    .ok_or_else(|| CoreError::UndefinedValue(o.name.clone()))?;
                Ok((o.name.clone(), t))
            })
            .collect()
    }
}

fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

fn check_input(decl: &weft_core::ValueInfo, t: &Tensor) -> Result<(), ExecError> {
    let bad = |message: String| ExecError::Input {
        name: decl.name.clone(),
        message,
    };
    if t.dtype() != decl.dtype {
        return Err(bad(format!("expected {}, got {}", decl.dtype, t.dtype())));
    }
    let ok =
        t.shape().len() == decl.shape.len() && decl.shape.iter().zip(t.shape()).all(|(d, &s)| d.is_none_or(|d| d == s));
    if !ok {
        let want: Vec<String> = decl
            .shape
            .iter()
            .map(|d| d.map_or("?".into(), |d| d.to_string()))
            .collect();
        return Err(bad(format!(
            "expected shape [{}], got {:?}",
            want.join(", "),
            t.shape()
        )));
    }
    Ok(())
}
