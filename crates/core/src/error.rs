//! The core crate's error type.

use crate::DType;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Errors from tensors, graphs, shape inference and passes.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("node '{node}' ({op}): {message}")]
    Node { node: String, op: String, message: String },
    #[error("shape mismatch in node '{node}' ({op}): expected {expected}, got {got}")]
    ShapeMismatch {
        node: String,
        op: String,
        expected: String,
        got: String,
    },
    #[error(
        "node '{node}' ({op}): {what} ('{name}') computed while running is not supported here: it must be a constant known before running"
    )]
    Dynamic {
        node: String,
        op: String,
        what: String,
        name: String,
    },
    #[error("value '{0}' is used but never produced (no graph input, initializer or node output has that name)")]
    UndefinedValue(String),
    #[error("the graph has a cycle through node '{0}'")]
    Cycle(String),
    #[error("value '{0}' is produced more than once")]
    DuplicateValue(String),
    #[error("expected a {expected} tensor, got {got}")]
    DType { expected: DType, got: DType },
    #[error("invalid tensor: {0}")]
    Tensor(String),
    #[error("invalid graph: {0}")]
    Graph(String),
    #[error("npy file: {0}")]
    Npy(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl CoreError {
    /// Error attached to a node, naming it and its op.
    pub fn node(node: &crate::Node, message: impl Into<String>) -> Self {
        CoreError::Node {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            message: message.into(),
        }
    }
}
