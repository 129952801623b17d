//! Explicit zero padding folded into the convolution or max pooling after it (as Keras'
//! `ZeroPadding2D` exports): the optimized graph answers exactly as the original did, and
//! a pad that cannot be folded (a max pooling of possibly negative values) is kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use weft_core::op::{Conv, PadMode, Padding, Pool};
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
