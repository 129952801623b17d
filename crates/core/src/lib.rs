//! weft's core: tensors and dtypes, the graph IR for ResNet-style networks, shape
//! inference, graph passes, `.npy` files and a seeded random source.
//!
//! This crate knows nothing of ONNX, OpenCL or gRPC. Everything above it speaks in
//! these types.

pub mod dtype;
pub mod error;
pub mod graph;
pub mod minifloat;
pub mod mx;
pub mod npy;
pub mod op;
pub mod passes;
pub mod quant;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use dtype::DType;
pub use error::{CoreError, Result};
pub use graph::{Graph, Node, ValueInfo};
pub use op::Op;
pub use tensor::Tensor;
