//! ONNX import to and export from weft's graph IR.
//!
//! The protobuf types are generated at build time from the project's own
//! `proto/onnx.proto` (field numbers per the ONNX specification) through protox, so no
//! protoc is needed.

mod attrs;
mod export;
mod import;
mod tensor;

pub use export::{
    EXPORT_OPSET, to_bytes as export, to_bytes_with_metadata as export_with_metadata, write as export_file,
};
pub use import::{Model, from_bytes as import, load};

/// The generated ONNX protobuf types.
#[allow(clippy::all, missing_debug_implementations)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Errors from reading or writing ONNX.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    #[error("node '{node}' ({op_type}, opset {opset}): {what}")]
    Unsupported {
        node: String,
        op_type: String,
        opset: i64,
        what: String,
    },
    #[error("invalid ONNX model: node '{node}' ({op_type}, opset {opset}): {what}")]
    InvalidNode {
        node: String,
        op_type: String,
        opset: i64,
        what: String,
    },
    #[error("invalid ONNX model: {0}")]
    Invalid(String),
    /// A model-level feature weft lacks (an element type, a non-tensor input, an opset).
    #[error("unsupported ONNX model: {0}")]
    UnsupportedModel(String),
    /// From the graph checks after import: a broken graph or a feature a node lacks (the
    /// message says which).
    #[error("ONNX model: {0}")]
    Graph(#[from] weft_core::CoreError),
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

/// The lowest and highest default-domain opsets weft imports.
pub const OPSET_RANGE: std::ops::RangeInclusive<i64> = 7..=25;
