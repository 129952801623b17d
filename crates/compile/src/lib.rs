//! From a float graph to a package: quantization (int8, f16 or f32) and the package file
//! format (`model.weft`).

pub mod compile;
pub mod report;

pub use compile::{Batch, CompileError, CompileOptions, compile, reference_executor};
pub use report::Report;
/// The package format lives in `weft-package`; re-exported for the compile pipeline's users.
pub use weft_package::{FORMAT_VERSION, Package, PackageError, Precision};
