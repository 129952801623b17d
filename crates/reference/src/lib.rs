//! weft's reference executors. The f32 executor is the numerical oracle for every float
//! path: straightforward and correct rather than clever (convolution is im2col plus
//! ndarray's matrix product).

pub mod conv;
pub mod executor;
pub mod int;
pub mod mx;
pub mod ops;
pub mod pool;

pub use executor::{ExecError, Executor};
pub use ops::eval_node;

/// Runs the standard graph passes with this crate's evaluator for constant folding.
pub fn optimize(graph: &mut weft_core::Graph) -> weft_core::Result<weft_core::passes::PassReport> {
    weft_core::passes::optimize(graph, &eval_node)
}
