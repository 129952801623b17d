//! The importer never panics: truncated, bit-flipped and random files give errors.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

fn small_model() -> Vec<u8> {
    let graph = weft_zoo::build("resnet8", &weft_zoo::ZooOptions::default()).unwrap();
    weft_onnx::export(&graph).unwrap()
}

#[test]
fn export_then_import_round_trips() {
    let graph = weft_zoo::build("resnet8", &weft_zoo::ZooOptions::default()).unwrap();
    let model = weft_onnx::import(&weft_onnx::export(&graph).unwrap(), None).unwrap();
    assert_eq!(model.opset, weft_onnx::EXPORT_OPSET);
    assert_eq!(model.graph.initializers, graph.initializers);
    assert_eq!(model.graph.nodes.len(), graph.nodes.len());
    assert_eq!(model.graph.inputs, graph.inputs);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_model();
    for cut in (0..bytes.len()).step_by(97) {
        assert!(weft_onnx::import(&bytes[..cut], None).is_err(), "cut at {cut}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = weft_onnx::import(&data, None);
    }

    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = small_model();
        for (idx, v) in flips {
            let i = idx.index(bytes.len());
            bytes[i] ^= v;
        }
        if let Ok(model) = weft_onnx::import(&bytes, None) {
            // Whatever imports must also run (or fail) cleanly.
            let x = weft_core::Tensor::from_f32(&[1, 3, 32, 32], vec![0.5; 3 * 32 * 32]).unwrap();
            if let Ok(exec) = weft_reference::Executor::new(model.graph) {
                let inputs = [("input".to_string(), x)].into_iter().collect();
                let _ = exec.run(&inputs);
            }
        }
    }
}
