//! From a float graph to a package: quantization (int8, f16 or f32) and the package file
//! format (`model.weft`).

pub mod compile;
pub mod package;
pub mod report;

pub use compile::{Batch, CompileError, CompileOptions, compile, reference_executor};
pub use package::{FORMAT_VERSION, Package, PackageError, Precision};
pub use report::Report;
