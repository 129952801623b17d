//! Graph passes that rewrite what exporters write, checked by running the graph before and
//! after: explicit zero padding folded into the convolution or max pooling after it (as
//! Keras' `ZeroPadding2D` exports; a pad that cannot be folded is kept), and a BatchNorm no
//! convolution absorbed rewritten as a depthwise 1x1 convolution (DenseNet's pre-activation).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use weft_core::op::{Activation, Conv, PadMode, Padding, Pool};
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};
use weft_reference::Executor;

fn pool3s2() -> Op {
    Op::MaxPool(Pool {
        kernel_shape: [3, 3],
        strides: [2, 2],
        dilations: [1, 1],
        padding: Padding::Valid,
        ceil_mode: false,
        count_include_pad: false,
    })
}

fn graph() -> Graph {
    let pad = |name: &str, x: &str, out: &str, pads: &str| {
        Node::new(
            name,
            Op::Pad {
                mode: PadMode::Constant,
            },
            &[x, pads],
            &[out],
        )
    };
    let mut g = Graph {
        inputs: vec![ValueInfo::new("x", DType::F32, vec![None, Some(3), Some(11), Some(9)])],
        outputs: vec![
            ValueInfo::new("y1", DType::F32, vec![]),
            ValueInfo::new("y2", DType::F32, vec![]),
        ],
        nodes: vec![
            pad("pad_stem", "x", "xp", "p_stem"),
            Node::new(
                "conv",
                Op::Conv(Conv {
                    strides: [2, 2],
                    padding: Padding::SameUpper,
                    ..Conv::default()
                }),
                &["xp", "w"],
                &["c"],
            ),
            Node::new("relu", Op::Relu, &["c"], &["r"]),
            pad("pad_pool", "r", "rp", "p_pool"),
            Node::new("pool", pool3s2(), &["rp"], &["y1"]),
            // the convolution's raw output can be negative: zero padding there is a value
            pad("pad_signed", "c", "cp", "p_pool"),
            Node::new("pool_signed", pool3s2(), &["cp"], &["y2"]),
        ],
        ..Default::default()
    };
    let w: Vec<f32> = (0..4 * 3 * 3 * 3).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect();
    g.initializers
        .insert("w".into(), Tensor::from_f32(&[4, 3, 3, 3], w).unwrap());
    let pads = |v: [i64; 8]| Tensor::from_i64(&[8], v.to_vec()).unwrap();
    g.initializers.insert("p_stem".into(), pads([0, 0, 1, 2, 0, 0, 2, 1]));
    g.initializers.insert("p_pool".into(), pads([0, 0, 1, 1, 0, 0, 1, 1]));
    g
}

#[test]
fn zero_pads_fold_into_conv_and_non_negative_max_pooling() {
    let x: Vec<f32> = (0..2 * 3 * 11 * 9)
        .map(|i| ((i * 53 % 29) as f32 - 14.0) / 7.0)
        .collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[2, 3, 11, 9], x).unwrap())]);
    let before = Executor::new(graph()).unwrap().run(&inputs).unwrap();
    let mut g = graph();
    let report = weft_reference::optimize(&mut g).unwrap();
    assert_eq!(report.folded_pads, 2);
    let pads: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.op.name() == "Pad")
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(pads, ["pad_signed"]);
    let conv = g.nodes.iter().find(|n| n.name == "conv").unwrap();
    // SAME_UPPER on the 14x12 padded input (k 3, s 2) adds 0 before and 1 after on both
    // axes; with the stem's [top 1, left 2, bottom 2, right 1]
    assert_eq!(conv.inputs[0], "x");
    assert!(
        matches!(&conv.op, Op::Conv(c) if c.padding == Padding::Explicit([1, 2, 3, 2])),
        "{:?}",
        conv.op
    );
    let after = Executor::new(g).unwrap().run(&inputs).unwrap();
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a.shape(), b.shape(), "{name}");
        let (a, b) = (a.to_f32(), b.to_f32());
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: differs by {worst}");
    }
}

#[test]
fn a_batchnorm_after_a_concat_becomes_a_depthwise_convolution_with_its_relu() {
    let mut g = Graph {
        inputs: vec![
            ValueInfo::new("a", DType::F32, vec![None, Some(3), Some(5), Some(4)]),
            ValueInfo::new("b", DType::F32, vec![None, Some(2), Some(5), Some(4)]),
        ],
        outputs: vec![ValueInfo::new("y", DType::F32, vec![])],
        nodes: vec![
            Node::new("cat", Op::Concat { axis: 1 }, &["a", "b"], &["c"]),
            Node::new(
                "norm",
                Op::BatchNormalization { epsilon: 1e-5 },
                &["c", "scale", "shift", "mean", "var"],
                &["n"],
            ),
            Node::new("relu", Op::Relu, &["n"], &["y"]),
        ],
        ..Default::default()
    };
    for (name, v) in [
        ("scale", [1.5, -0.5, 0.8, 2.0, 1.0]),
        ("shift", [0.1, 0.2, -0.3, 0.0, 0.5]),
        ("mean", [0.0, 1.0, -1.0, 0.5, 0.2]),
        ("var", [1.0, 0.5, 2.0, 0.25, 4.0]),
    ] {
        g.initializers
            .insert(name.into(), Tensor::from_f32(&[5], v.to_vec()).unwrap());
    }
    let ramp = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| ((i * k % 23) as f32 - 11.0) / 5.0).collect() };
    let inputs = HashMap::from([
        ("a".to_string(), Tensor::from_f32(&[2, 3, 5, 4], ramp(120, 7)).unwrap()),
        ("b".to_string(), Tensor::from_f32(&[2, 2, 5, 4], ramp(80, 13)).unwrap()),
    ]);
    let before = Executor::new(g.clone()).unwrap().run(&inputs).unwrap();
    let report = weft_reference::optimize(&mut g).unwrap();
    assert_eq!(report.depthwise_batchnorms, 1);
    assert!(
        g.nodes
            .iter()
            .all(|n| n.op.name() != "BatchNormalization" && n.op.name() != "Relu")
    );
    let conv = g.nodes.iter().find(|n| n.name == "norm").unwrap();
    assert!(
        matches!(&conv.op, Op::Conv(c) if c.group == 5 && c.activation == Some(Activation::Relu)),
        "{:?}",
        conv.op
    );
    assert_eq!(g.initializers[&conv.inputs[1]].shape(), [5, 1, 1, 1]);
    let after = Executor::new(g).unwrap().run(&inputs).unwrap();
    let (a, b) = (before[0].1.to_f32(), after[0].1.to_f32());
    assert_eq!(a.shape(), b.shape());
    let worst = a
        .iter()
        .zip(b.iter())
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "differs by {worst}");
}

#[test]
fn a_concat_of_an_earlier_concats_inputs_and_one_more_joins_that_concat() {
    let input = |n: &str, c| ValueInfo::new(n, DType::F32, vec![Some(1), Some(c), Some(2), Some(3)]);
    let mut g = Graph {
        inputs: vec![input("a", 2), input("b", 3), input("c", 1), input("d", 2)],
        outputs: vec![
            ValueInfo::new("ab", DType::F32, vec![]),
            ValueInfo::new("abc", DType::F32, vec![]),
            ValueInfo::new("abcd", DType::F32, vec![]),
        ],
        nodes: vec![
            Node::new("j3", Op::Concat { axis: 1 }, &["a", "b", "c"], &["abc"]),
            Node::new("j4", Op::Concat { axis: 1 }, &["a", "b", "c", "d"], &["abcd"]),
            Node::new("j2", Op::Concat { axis: 1 }, &["a", "b"], &["ab"]),
        ],
        ..Default::default()
    };
    let ramp = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| (i * k % 17) as f32).collect() };
    let inputs: HashMap<String, Tensor> = [("a", 2), ("b", 3), ("c", 1), ("d", 2)]
        .iter()
        .enumerate()
        .map(|(i, (n, c))| {
            (
                n.to_string(),
                Tensor::from_f32(&[1, *c, 2, 3], ramp(c * 6, i + 3)).unwrap(),
            )
        })
        .collect();
    let before = Executor::new(g.clone()).unwrap().run(&inputs).unwrap();
    let report = weft_reference::optimize(&mut g).unwrap();
    assert_eq!(report.chained_concats, 2);
    let joins: HashMap<&str, Vec<&str>> = g
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.inputs.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(joins["j2"], ["a", "b"]);
    assert_eq!(joins["j3"], ["ab", "c"]);
    assert_eq!(joins["j4"], ["abc", "d"]);
    let after = Executor::new(g).unwrap().run(&inputs).unwrap();
    assert_eq!(before, after);
}
