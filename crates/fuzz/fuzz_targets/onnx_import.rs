//! Any bytes as an ONNX model: an error or a graph, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = weft_onnx::import(data, None);
});
