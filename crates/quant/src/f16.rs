//! f16 storage: float initializers stored as IEEE half; computation stays f32.

use weft_core::{DType, Graph};

/// Converts every f32 initializer to f16 (weights as stored in an f16 package).
pub fn to_f16_storage(graph: &mut Graph) {
    for t in graph.initializers.values_mut() {
        if t.dtype() == DType::F32 {
            *t = t.cast(DType::F16);
        }
    }
}
