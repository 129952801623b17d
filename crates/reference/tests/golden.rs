//! Golden vectors for the integer ops (tests/golden/int_ops.json, made by
//! tests/golden/make_golden.py with an independent numpy implementation): the integer
//! reference must reproduce them exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use weft_core::{DType, Node, Op, Tensor};

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    op: Op,
    inputs: Vec<TensorJson>,
    output: TensorJson,
}

#[derive(Deserialize)]
struct TensorJson {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<i64>,
}

impl TensorJson {
    fn tensor(&self) -> Tensor {
        Tensor::from_i64(&self.shape, self.data.clone())
            .unwrap()
            .cast(self.dtype)
    }
}

#[test]
fn integer_ops_match_golden_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/golden/int_ops.json");
    let golden: Golden = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(golden.cases.len() >= 9);
    for case in &golden.cases {
        let names: Vec<&str> = case.inputs.iter().map(|t| t.name.as_str()).collect();
        let node = Node::new(&case.name, case.op.clone(), &names, &["y"]);
        let tensors: Vec<Tensor> = case.inputs.iter().map(TensorJson::tensor).collect();
        let ins: Vec<Option<&Tensor>> = tensors.iter().map(Some).collect();
        let got = weft_reference::eval_node(&node, &ins)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name))
            .remove(0);
        assert_eq!(got, case.output.tensor(), "{}", case.name);
    }
}
