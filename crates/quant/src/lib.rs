//! Quantization: calibration statistics, and lowering a float graph to weft's integer graph
//! (arithmetic in `weft_core::quant`), plus f16 storage.

pub mod calibrate;
pub mod f16;
pub mod lower;
pub mod mx;
pub mod prequantized;

pub use calibrate::{Calibrator, Method, Ranges};
pub use lower::{IntValues, QuantParams, quantize};

/// Errors from calibration and quantization.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error(transparent)]
    Exec(#[from] weft_reference::ExecError),
    #[error(transparent)]
    Core(#[from] weft_core::CoreError),
    #[error("node '{node}' ({op}): {message}")]
    Node { node: String, op: String, message: String },
    #[error("calibration: {0}")]
    Calibration(String),
}

impl QuantError {
    pub fn node(node: &weft_core::Node, message: impl Into<String>) -> Self {
        QuantError::Node {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            message: message.into(),
        }
    }
}
