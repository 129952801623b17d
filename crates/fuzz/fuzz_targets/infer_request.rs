//! Any bytes as a KServe ModelInferRequest for the embedded Fashion-MNIST package (its
//! input takes tensors and images): an error status or a tensor, never a panic.
#![no_main]
use std::sync::OnceLock;

static PACKAGE: OnceLock<weft_compile::Package> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let package = PACKAGE.get_or_init(|| {
        weft_compile::Package::from_bytes(include_bytes!("../../../models/fashion/fashion_resnet.weft"))
            .expect("the embedded package loads")
    });
    let _ = weft_serve::decode_infer_request(package, data, 1 << 22, 8);
});
