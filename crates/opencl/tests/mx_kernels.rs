//! The MX kernels (`kernels/mx.cl`) bit-exact with the reference's MX layers, for every MX
//! format, on every OpenCL device found (PoCL and Oclgrind in CI; fails, never skips, when
//! none is): convolutions with groups, strides, dilations, padding, partial blocks and
//! fused activations, a fully connected layer, and inputs with NaN and infinities. Every
//! case also checks that the layers ran as device kernels, not on the host, with the
//! activation buffers poisoned before each run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;

use weft_compile::{Package, Precision};
use weft_core::mx::MxFormat;
use weft_core::op::{Activation, Conv, Gemm, MxActivations, Padding};
use weft_core::rng::Rng;
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};
use weft_opencl::{Session, SessionOptions};

mod common;
use common::{assert_no_simulator_reports, devices};

/// One check at a time: Oclgrind (21.10) gives wrong answers when two threads run kernels
/// on it at once (seen here: the two tests in parallel fail on Oclgrind only, never on PoCL).
static SERIAL: Mutex<()> = Mutex::new(());

struct Case {
    c: usize,
    m: usize,
    k: usize,
    group: usize,
    stride: usize,
    dilation: usize,
    pads: [usize; 4],
    act: Option<Activation>,
}

/// Conv (+ optional activation) -> Flatten -> Gemm, as a float graph.
fn graph(case: &Case, hw: usize, rng: &mut Rng) -> Graph {
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::new(
        "x",
        DType::F32,
        vec![Some(2), Some(case.c), Some(hw), Some(hw)],
    ));
    g.outputs.push(ValueInfo::new("y", DType::F32, vec![]));
    let cg = case.c / case.group;
    let w = rng.normals(case.m * cg * case.k * case.k, 0.4);
    g.initializers
        .insert("w".into(), Tensor::from_f32(&[case.m, cg, case.k, case.k], w).unwrap());
    g.initializers.insert(
        "b".into(),
        Tensor::from_f32(&[case.m], rng.normals(case.m, 1.0)).unwrap(),
    );
    let conv = Conv {
        kernel_shape: Some([case.k, case.k]),
        strides: [case.stride; 2],
        dilations: [case.dilation; 2],
        padding: Padding::Explicit(case.pads),
        group: case.group,
        activation: case.act,
    };
    let span = case.dilation * (case.k - 1) + 1;
    let oh = (hw + case.pads[0] + case.pads[2] - span) / case.stride + 1;
    let ow = (hw + case.pads[1] + case.pads[3] - span) / case.stride + 1;
    let k = case.m * oh * ow;
    g.initializers
        .insert("fc".into(), Tensor::from_f32(&[3, k], rng.normals(3 * k, 0.1)).unwrap());
    g.initializers
        .insert("fb".into(), Tensor::from_f32(&[3], vec![0.5, -0.5, 0.0]).unwrap());
    g.nodes = vec![
        Node::new("conv", Op::Conv(conv), &["x", "w", "b"], &["h"]),
        Node::new("flat", Op::Flatten { axis: 1 }, &["h"], &["f"]),
        Node::new(
            "fc",
            Op::Gemm(Gemm {
                trans_b: true,
                ..Gemm::default()
            }),
            &["f", "fc", "fb"],
            &["y"],
        ),
    ];
    g.sort().unwrap();
    g
}

fn check(g: &Graph, format: MxFormat, x: &Tensor, devices: &[String]) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mx, summary) = weft_quant::mx::to_mx(g, format, MxActivations::Mx(format), MxActivations::Mx(format)).unwrap();
    assert_eq!((summary.convolutions, summary.fully_connected), (1, 1));
    let pkg = Package {
        name: "mx".into(),
        precision: Precision::Mx(format),
        graph: mx,
        preprocess: Default::default(),
        labels: vec![],
        metadata: Default::default(),
    };
    let inputs = HashMap::from([("x".to_string(), x.clone())]);
    let want = weft_compile::reference_executor(&pkg).unwrap().run(&inputs).unwrap();
    for dev in devices {
        let opts = SessionOptions {
            device: dev.clone(),
            profile: true,
            guard_bytes: 1 << 16,
            poison: Some(0xA5),
            ..Default::default()
        };
        let mut s = Session::new(&pkg, &opts).unwrap_or_else(|e| panic!("OpenCL session on '{dev}': {e}"));
        let got = s.run(&inputs).unwrap();
        let ran: Vec<&str> = s.last_profile().iter().map(|l| l.kernel).collect();
        assert_eq!(
            ran.iter().filter(|k| **k == "mx_conv").count(),
            2,
            "{dev} {format}: ran {ran:?}"
        );
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            let (g, w) = (g.to_f32(), w.to_f32());
            assert_eq!(g.shape(), w.shape());
            for (a, b) in g.iter().zip(w.iter()) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{dev} {format} '{name}': {a} vs reference {b}"
                );
            }
        }
        assert_no_simulator_reports(dev);
    }
}

#[test]
fn mx_layers_bit_exact_with_the_reference() {
    let devs = devices();
    let relu = Some(Activation::Relu);
    let cases = [
        Case {
            c: 40,
            m: 6,
            k: 3,
            group: 1,
            stride: 1,
            dilation: 1,
            pads: [1, 1, 1, 1],
            act: relu,
        },
        Case {
            c: 70,
            m: 4,
            k: 3,
            group: 2,
            stride: 2,
            dilation: 1,
            pads: [1, 0, 1, 1],
            act: None,
        },
        Case {
            c: 8,
            m: 8,
            k: 3,
            group: 8,
            stride: 1,
            dilation: 2,
            pads: [2, 2, 2, 2],
            act: Some(Activation::Clip { min: -1.0, max: 6.0 }),
        },
        Case {
            c: 3,
            m: 5,
            k: 1,
            group: 1,
            stride: 1,
            dilation: 1,
            pads: [0, 0, 0, 0],
            act: None,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut rng = Rng::new(i as u64 + 11);
        let g = graph(case, 6, &mut rng);
        let mut xv = rng.normals(2 * case.c * 36, 2.0);
        // wide ranges within the blocks
        for (j, v) in xv.iter_mut().enumerate() {
            *v *= [1e-3f32, 1.0, 37.0][j % 3];
        }
        let x = Tensor::from_f32(&[2, case.c, 6, 6], xv).unwrap();
        for f in MxFormat::ALL {
            check(&g, f, &x, &devs);
        }
    }
}

#[test]
fn mx_layers_carry_nan_and_infinity_as_the_reference_does() {
    let devs = devices();
    let case = Case {
        c: 36,
        m: 4,
        k: 3,
        group: 1,
        stride: 1,
        dilation: 1,
        pads: [1, 1, 1, 1],
        act: Some(Activation::Relu),
    };
    let mut rng = Rng::new(5);
    let g = graph(&case, 5, &mut rng);
    let mut xv = rng.normals(2 * 36 * 25, 1.0);
    xv[7] = f32::NAN;
    xv[25 * 33 + 3] = f32::INFINITY;
    xv[36 * 25 + 40] = f32::NEG_INFINITY;
    let x = Tensor::from_f32(&[2, 36, 5, 5], xv).unwrap();
    for f in [MxFormat::Int8, MxFormat::Fp8E5M2] {
        check(&g, f, &x, &devs);
    }
}
