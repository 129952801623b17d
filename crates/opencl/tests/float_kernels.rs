//! The f32 and f16 kernels against the f32 reference (with f16 activation storage for f16
//! packages), within stated tolerances, over random shapes. Every case also checks that
//! the nodes ran as device kernels (from the profile), not on the host. These run on PoCL
//! in CI and fail (never skip) when no OpenCL device is found.
//!
//! Tolerances, as a fraction of the largest reference output magnitude: single kernels
//! f32 1e-5, f16 2e-3 (one f16 rounding step is 2^-11 relative); whole networks f32 1e-4,
//! f16 1e-2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;
use weft_compile::{Package, Precision};
use weft_core::op::{Activation, Conv, Gemm, Padding, Pool};
use weft_core::rng::Rng;
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};
use weft_opencl::{Session, SessionOptions};

mod common;
use common::{ConvCase, Groups, assert_no_simulator_reports, conv_case, devices, is_simulator, sample_simulators};

static SERIAL: Mutex<()> = Mutex::new(());

fn package(graph: Graph, precision: Precision) -> Package {
    let mut graph = graph;
    if precision == Precision::F16 {
        weft_quant::f16::to_f16_storage(&mut graph);
    }
    Package {
        name: "test".into(),
        precision,
        graph,
        preprocess: Default::default(),
        labels: vec![],
        metadata: Default::default(),
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.to_f32().iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Runs `graph` as an f32 and as an f16 package on the reference and on the device,
/// asserting the outputs agree within `tol[precision]` of the largest reference output
/// and that each of `kernels` ran on the device.
fn check(graph: &Graph, inputs: &HashMap<String, Tensor>, tol: [f32; 2], kernels: &[&str]) {
    check_on(graph, inputs, tol, kernels, true);
}

/// `check` on every device, simulators only when `simulators` (randomised tests and large
/// networks sample them). Activation buffers are poisoned before each run, so a result
/// that depends on memory the run never wrote fails.
fn check_on(graph: &Graph, inputs: &HashMap<String, Tensor>, tol: [f32; 2], kernels: &[&str], simulators: bool) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for dev in devices() {
        if is_simulator(&dev) && !simulators {
            continue;
        }
        check_device(&dev, graph, inputs, tol, kernels);
        assert_no_simulator_reports(&dev);
    }
}

fn check_device(dev: &str, graph: &Graph, inputs: &HashMap<String, Tensor>, tol: [f32; 2], kernels: &[&str]) {
    for (precision, tol, suffix) in [(Precision::F32, tol[0], "f32"), (Precision::F16, tol[1], "f16")] {
        let mut g = graph.clone();
        g.sort().unwrap();
        let pkg = package(g, precision);
        let want = weft_compile::reference_executor(&pkg).unwrap().run(inputs).unwrap();
        let opts = SessionOptions {
            device: dev.to_string(),
            profile: true,
            guard_bytes: 1 << 16,
            poison: Some(0xA5),
            ..Default::default()
        };
        let mut s = Session::new(&pkg, &opts).unwrap_or_else(|e| panic!("OpenCL session on '{}': {e}", opts.device));
        let got = s.run(inputs).unwrap();
        let ran: Vec<&str> = s.last_profile().iter().map(|l| l.kernel).collect();
        for k in kernels {
            let name = format!("{k}_{suffix}");
            assert!(ran.contains(&name.as_str()), "{name} did not run (ran {ran:?})");
        }
        assert_eq!(got.len(), want.len());
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            assert_eq!(g.shape(), w.shape(), "{name}");
            assert_eq!(g.dtype(), DType::F32, "{name}");
            let scale = max_abs(w).max(1e-3);
            let diff = g.to_f32().iter().zip(w.to_f32().iter()).fold(0f32, |m, (a, b)| {
                if a.is_nan() && b.is_nan() {
                    m
                } else {
                    m.max((a - b).abs())
                }
            });
            assert!(
                diff <= tol * scale,
                "{dev} {precision} output '{name}': max abs error {diff} > {tol} x {scale}"
            );
        }
    }
}

fn normals(rng: &mut Rng, shape: &[usize], sd: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape, rng.normals(n, sd)).unwrap()
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) {
    g.inputs.push(ValueInfo::new(
        name,
        DType::F32,
        shape.iter().map(|&d| Some(d)).collect(),
    ));
}

fn output(g: &mut Graph, name: &str) {
    g.outputs.push(ValueInfo::new(name, DType::F32, vec![]));
}

/// A float convolution case: its graph and input.
fn fconv_graph(c: &ConvCase) -> (Graph, HashMap<String, Tensor>) {
    let mut rng = Rng::new(c.seed);
    let mut g = Graph::default();
    input(&mut g, "x", &[c.n, c.c, c.h, c.w]);
    let cg = c.c / c.group;
    g.initializers
        .insert("w".into(), normals(&mut rng, &[c.m, cg, c.k, c.k], 0.3));
    let mut ins = vec!["x", "w"];
    if c.a {
        g.initializers.insert("b".into(), normals(&mut rng, &[c.m], 1.0));
        ins.push("b");
    }
    let conv = Conv {
        kernel_shape: Some([c.k, c.k]),
        strides: [c.stride, c.stride],
        dilations: [c.dilation, c.dilation],
        padding: Padding::Explicit(c.pads),
        group: c.group,
        activation: match (c.b, c.seed % 2) {
            (false, _) => None,
            (true, 0) => Some(Activation::Relu),
            (true, _) => Some(Activation::Clip { min: -0.5, max: 6.0 }),
        },
    };
    g.nodes.push(Node::new("conv", Op::Conv(conv), &ins, &["y"]));
    output(&mut g, "y");
    let feeds = HashMap::from([("x".to_string(), normals(&mut rng, &[c.n, c.c, c.h, c.w], 1.0))]);
    (g, feeds)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fconv_matches_reference(c in conv_case(Groups::Any)) {
        let (g, feeds) = fconv_graph(&c);
        static CASES: AtomicUsize = AtomicUsize::new(0);
        check_on(&g, &feeds, [1e-5, 2e-3], &["fconv"], sample_simulators(&CASES));
    }

    #[test]
    fn fpools_match_reference(n in 1usize..=2, c in 1usize..=9, h in 2usize..=12, w in 2usize..=12, k in 2usize..=3, s in 1usize..=2,
                              pads in prop::array::uniform4(0usize..=1), ceil in any::<bool>(), include in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(pads[0] < k && pads[1] < k && pads[2] < k && pads[3] < k);
        prop_assume!(h + pads[0] + pads[2] >= k && w + pads[1] + pads[3] >= k);
        let mut rng = Rng::new(seed);
        let mut g = Graph::default();
        input(&mut g, "x", &[n, c, h, w]);
        let pool = Pool { kernel_shape: [k, k], strides: [s, s], dilations: [1, 1], padding: Padding::Explicit(pads), ceil_mode: ceil, count_include_pad: include };
        g.nodes.push(Node::new("max", Op::MaxPool(pool.clone()), &["x"], &["mx"]));
        g.nodes.push(Node::new("avg", Op::AveragePool(pool), &["x"], &["av"]));
        output(&mut g, "mx");
        output(&mut g, "av");
        let feeds = HashMap::from([("x".to_string(), normals(&mut rng, &[n, c, h, w], 1.0))]);
        static CASES: AtomicUsize = AtomicUsize::new(0);
        check_on(&g, &feeds, [1e-5, 2e-3], &["fpool"], sample_simulators(&CASES));
    }
}

#[test]
fn add_relu_clip_mean_flatten_and_fully_connected_match_reference() {
    for (seed, (n, c, h, w, m)) in [(1u64, (1, 3, 7, 5, 10)), (2, (3, 16, 1, 1, 20)), (3, (2, 5, 3, 3, 33))] {
        let mut rng = Rng::new(seed);
        let mut g = Graph::default();
        input(&mut g, "a", &[n, c, h, w]);
        input(&mut g, "b", &[n, c, h, w]);
        g.initializers
            .insert("lo".into(), Tensor::from_f32(&[], vec![-0.25]).unwrap());
        g.initializers
            .insert("hi".into(), Tensor::from_f32(&[], vec![0.75]).unwrap());
        g.nodes.push(Node::new("add", Op::Add, &["a", "b"], &["s"]));
        g.nodes.push(Node::new("relu", Op::Relu, &["s"], &["r"]));
        g.nodes.push(Node::new("clip", Op::Clip, &["s", "lo", "hi"], &["cl"]));
        g.nodes.push(Node::new("gap", Op::GlobalAveragePool, &["r"], &["gap"]));
        g.nodes.push(Node::new("flat", Op::Flatten { axis: 1 }, &["r"], &["f"]));
        let k = c * h * w;
        // Gemm with B transposed (PyTorch) and MatMul with B as [K, M] (Keras)
        g.initializers.insert("fc.w".into(), normals(&mut rng, &[m, k], 0.2));
        g.initializers.insert("fc.b".into(), normals(&mut rng, &[m], 1.0));
        let gemm = Gemm {
            alpha: 0.5,
            beta: 2.0,
            trans_a: false,
            trans_b: true,
        };
        g.nodes
            .push(Node::new("fc", Op::Gemm(gemm), &["f", "fc.w", "fc.b"], &["y"]));
        g.initializers.insert("mm.w".into(), normals(&mut rng, &[k, m], 0.2));
        g.nodes.push(Node::new("mm", Op::MatMul, &["f", "mm.w"], &["z"]));
        for o in ["s", "cl", "gap", "y", "z"] {
            output(&mut g, o);
        }
        let feeds = HashMap::from([
            ("a".to_string(), normals(&mut rng, &[n, c, h, w], 1.0)),
            ("b".to_string(), normals(&mut rng, &[n, c, h, w], 1.0)),
        ]);
        check(&g, &feeds, [1e-5, 2e-3], &["fadd", "fclamp", "fmean", "fconv"]);
    }
}

#[test]
fn zoo_resnets_float_end_to_end() {
    // (a simulator runs the CIFAR-sized networks, not ResNet-18 at 224 x 224)
    for (name, shape, kernels, simulators) in [
        ("resnet8", [3, 3, 32, 32], &["fconv", "fadd", "fmean"][..], true),
        ("resnet20", [1, 3, 32, 32], &["fconv", "fadd", "fmean"][..], true),
        (
            "resnet18",
            [1, 3, 224, 224],
            &["fconv", "fadd", "fpool", "fmean"][..],
            false,
        ),
    ] {
        let mut g = weft_zoo::build(name, &weft_zoo::ZooOptions::default()).unwrap();
        weft_reference::optimize(&mut g).unwrap();
        let mut rng = Rng::new(9);
        let feeds = HashMap::from([("input".to_string(), normals(&mut rng, &shape, 1.0))]);
        check_on(&g, &feeds, [1e-4, 1e-2], kernels, simulators);
    }
}

/// A grouped and a depthwise convolution on every device, simulators included.
#[test]
fn grouped_and_depthwise_convolutions_on_every_device() {
    let base = ConvCase {
        n: 2,
        c: 12,
        h: 9,
        w: 7,
        m: 12,
        k: 3,
        stride: 1,
        dilation: 1,
        pads: [1, 1, 1, 1],
        group: 3,
        a: true,
        b: true,
        seed: 11,
    };
    for c in [
        base.clone(),
        ConvCase {
            group: 12,
            stride: 2,
            seed: 12,
            ..base
        },
    ] {
        let (g, feeds) = fconv_graph(&c);
        check(&g, &feeds, [1e-5, 2e-3], &["fconv"]);
    }
}
