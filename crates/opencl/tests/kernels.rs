//! Every kernel against the integer reference, bit-exact, over random shapes and
//! parameters, with both the portable hook and the device's own. These run on PoCL in CI
//! and fail (never skip) when no OpenCL device is found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;
use weft_compile::{Package, Precision};
use weft_core::op::{Conv, Padding, Pool, QAdd, QConcat, QConv, QGemm, QMean, QOut};
use weft_core::rng::Rng;
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};
use weft_opencl::{KernelSet, Session, SessionOptions};

mod common;
use common::{ConvCase, Groups, assert_no_simulator_reports, conv_case, devices, is_simulator, sample_simulators};

/// PoCL compiles kernels on first launch; one session build at a time keeps memory low.
static SERIAL: Mutex<()> = Mutex::new(());

/// Guard bytes past every activation buffer: out-of-bounds writes fail the run.
const GUARD: usize = 1 << 16;

/// The device of the tests that check one device's own behaviour (program binaries, PoCL
/// settings, planes too large for a simulator): `WEFT_TEST_DEVICE`, else PoCL.
fn device() -> String {
    std::env::var("WEFT_TEST_DEVICE").unwrap_or_else(|_| "pocl".into())
}

fn package(graph: Graph) -> Package {
    Package {
        name: "test".into(),
        precision: Precision::Int8,
        graph,
        preprocess: Default::default(),
        labels: vec![],
        metadata: Default::default(),
    }
}

/// Runs `graph` on the reference and on every device (portable hook and default hook, both
/// convolution forms) and asserts identical outputs. Activation buffers are filled with a
/// different byte before each run (`poison`): a kernel whose result depends on memory the
/// run never wrote fails here on any device.
fn check(graph: Graph, inputs: HashMap<String, Tensor>) {
    check_on(graph, inputs, true);
}

/// `check` on PoCL and the other hardware devices always, on simulators when
/// `simulators` (randomised tests sample them: `sample_simulators`).
fn check_on(graph: Graph, inputs: HashMap<String, Tensor>, simulators: bool) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut g = graph.clone();
    g.sort().unwrap();
    let want = weft_reference::Executor::new(g).unwrap().run(&inputs).unwrap();
    let pkg = package(graph);
    for dev in devices() {
        let sim = is_simulator(&dev);
        if sim && !simulators {
            continue;
        }
        // a simulator has no target hook: its default is the portable one
        let configs: &[(bool, bool, u8)] = if sim {
            &[(true, false, 0xA5), (true, true, 0x5A)]
        } else {
            &[(true, false, 0xA5), (false, false, 0x5A), (false, true, 0xFF)]
        };
        for &(portable, lane_conv, poison) in configs {
            let opts = SessionOptions {
                device: dev.clone(),
                portable,
                guard_bytes: GUARD,
                lane_conv,
                poison: Some(poison),
                ..Default::default()
            };
            let mut s =
                Session::new(&pkg, &opts).unwrap_or_else(|e| panic!("OpenCL session on '{}': {e}", opts.device));
            let got = s.run(&inputs).unwrap();
            assert_eq!(got, want, "{dev} portable={portable} lane_conv={lane_conv}");
            assert_no_simulator_reports(&dev);
        }
    }
}

/// The kernels a run of `graph` launches on the device (from a profiled run), with every
/// convolution in the lane form or (where ungrouped) the channel form.
fn kernels_run(graph: &Graph, inputs: &HashMap<String, Tensor>, lane_conv: bool) -> Vec<&'static str> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let opts = SessionOptions {
        device: device(),
        profile: true,
        lane_conv,
        ..Default::default()
    };
    let mut s = Session::new(&package(graph.clone()), &opts).unwrap();
    s.run(inputs).unwrap();
    s.last_profile().iter().map(|l| l.kernel).collect()
}

fn f32_input(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape, rng.normals(n, 1.0)).unwrap()
}

fn ints(rng: &mut Rng, n: usize, lo: i64, hi: i64) -> Vec<i64> {
    (0..n)
        .map(|_| lo + (rng.next_u64() % (hi - lo) as u64) as i64)
        .collect()
}

fn i32_tensor(v: Vec<i64>) -> Tensor {
    Tensor::from_i64(&[v.len()], v).unwrap().cast(DType::I32)
}

/// Float input -> Quantize -> `ops` -> Dequantize, with constants added by `ops`.
struct Builder {
    g: Graph,
    rng: Rng,
}

impl Builder {
    fn new(seed: u64) -> Self {
        Builder {
            g: Graph::default(),
            rng: Rng::new(seed),
        }
    }
    fn input(&mut self, name: &str, shape: &[usize], zp: i32) -> String {
        self.g.inputs.push(ValueInfo::new(
            name,
            DType::F32,
            shape.iter().map(|&d| Some(d)).collect(),
        ));
        let q = format!("{name}.q");
        self.g.nodes.push(Node::new(
            format!("{name}.quantize"),
            Op::Quantize {
                scale: 0.02,
                zero_point: zp,
            },
            &[name],
            &[&q],
        ));
        q
    }
    fn constant(&mut self, name: &str, t: Tensor) -> String {
        self.g.initializers.insert(name.to_string(), t);
        name.to_string()
    }
    fn output(&mut self, q: &str, zp: i32) {
        let name = format!("{q}.out");
        self.g.nodes.push(Node::new(
            format!("{q}.dequantize"),
            Op::Dequantize {
                scale: 0.05,
                zero_point: zp,
            },
            &[q],
            &[&name],
        ));
        self.g.outputs.push(ValueInfo::new(name, DType::F32, vec![]));
    }
    fn requant(&mut self, prefix: &str, m: usize, shift_lo: i64, shift_hi: i64) -> (String, String) {
        let mult = ints(&mut self.rng, m, 1 << 30, (1i64 << 31) - 1);
        let shift = ints(&mut self.rng, m, shift_lo, shift_hi);
        (
            self.constant(&format!("{prefix}.mult"), i32_tensor(mult)),
            self.constant(&format!("{prefix}.shift"), i32_tensor(shift)),
        )
    }
}

fn conv_graph(c: &ConvCase) -> (Graph, HashMap<String, Tensor>) {
    let mut b = Builder::new(c.seed);
    let zp_x = (b.rng.next_u64() % 256) as i32;
    let x = b.input("x", &[c.n, c.c, c.h, c.w], zp_x);
    let cg = c.c / c.group;
    let w = ints(&mut b.rng, c.m * cg * c.k * c.k, -127, 128);
    let w = b.constant("w", Tensor::from_i64(&[c.m, cg, c.k, c.k], w).unwrap().cast(DType::I8));
    let bias = ints(&mut b.rng, c.m, -20000, 20000);
    let bias = b.constant("b", i32_tensor(bias));
    // half the cases with every shift at least 32 (the channel form's narrow requantization),
    // half with some below
    let shift_lo = if (c.seed / 2).is_multiple_of(2) { 32 } else { 30 };
    let (mult, shift) = b.requant("conv", c.m, shift_lo, 44);
    let conv = Conv {
        kernel_shape: Some([c.k, c.k]),
        strides: [c.stride, c.stride],
        dilations: [c.dilation, c.dilation],
        padding: Padding::Explicit(c.pads),
        group: c.group,
        activation: None,
    };
    let out_zp = if c.b { 0 } else { (b.rng.next_u64() % 256) as i32 };
    let mut inputs = vec![x, w, bias, mult, shift];
    let mut residual_zero_point = None;
    let mut feeds = HashMap::new();
    let oh = (c.h + c.pads[0] + c.pads[2] - ((c.k - 1) * c.dilation + 1)) / c.stride + 1;
    let ow = (c.w + c.pads[1] + c.pads[3] - ((c.k - 1) * c.dilation + 1)) / c.stride + 1;
    if c.a {
        let rzp = (b.rng.next_u64() % 256) as i32;
        let r = b.input("r", &[c.n, c.m, oh, ow], rzp);
        let rm: Vec<i64> = ints(&mut b.rng, c.m, 1 << 34, 1 << 42);
        let rm = b.constant("rmult", Tensor::from_i64(&[c.m], rm).unwrap());
        inputs.push(r);
        inputs.push(rm);
        residual_zero_point = Some(rzp);
        feeds.insert("r".to_string(), f32_input(&mut b.rng, &[c.n, c.m, oh, ow]));
    }
    let q = QConv {
        conv,
        x_zero_point: zp_x,
        residual_zero_point,
        out: QOut {
            zero_point: out_zp,
            clamp: if c.b { [out_zp, 255] } else { [0, 255] },
        },
    };
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    b.g.nodes.push(Node::new("conv", Op::QConv(q), &refs, &["y"]));
    b.output("y", out_zp);
    feeds.insert("x".to_string(), f32_input(&mut b.rng, &[c.n, c.c, c.h, c.w]));
    (b.g, feeds)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn qconv_matches_reference(case in conv_case(Groups::OneOrTwoAligned)) {
        static CASES: AtomicUsize = AtomicUsize::new(0);
        let (g, feeds) = conv_graph(&case);
        check_on(g, feeds, sample_simulators(&CASES));
    }

    #[test]
    fn qdwconv_matches_reference(case in conv_case(Groups::Depthwise)) {
        static CASES: AtomicUsize = AtomicUsize::new(0);
        let (g, feeds) = conv_graph(&case);
        prop_assert!(kernels_run(&g, &feeds, false).contains(&"qdwconv"), "{case:?} did not run qdwconv");
        check_on(g, feeds, sample_simulators(&CASES));
    }

    /// Channel concatenations of 2-4 inputs of 1-9 channels (slices that share words with
    /// their neighbours), each requantized with its own parameters or kept as it is.
    #[test]
    fn qconcat_matches_reference(n in 1usize..=2, h in 1usize..=6, w in 1usize..=7,
                                 cs in prop::collection::vec(1usize..=9, 2..=4), seed in any::<u64>()) {
        let mut b = Builder::new(seed);
        let zp_y = (b.rng.next_u64() % 256) as i32;
        let mut inputs = Vec::new();
        let mut params = Vec::new();
        let mut feeds = HashMap::new();
        for (i, &c) in cs.iter().enumerate() {
            let zp = (b.rng.next_u64() % 256) as i32;
            inputs.push(b.input(&format!("x{i}"), &[n, c, h, w], zp));
            feeds.insert(format!("x{i}"), f32_input(&mut b.rng, &[n, c, h, w]));
            params.push(if b.rng.next_u64().is_multiple_of(3) {
                [zp, 1 << 30, 30]
            } else {
                let mult = (1 << 30) + (b.rng.next_u64() % (1 << 30)) as i32;
                [zp, mult, 29 + (b.rng.next_u64() % 4) as i32]
            });
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        b.g.nodes.push(Node::new("cat", Op::QConcat(QConcat { axis: 1, inputs: params, zero_point: zp_y }), &refs, &["y"]));
        b.output("y", zp_y);
        prop_assert!(kernels_run(&b.g, &feeds, false).contains(&"qconcat"));
        static CASES: AtomicUsize = AtomicUsize::new(0);
        check_on(b.g, feeds, sample_simulators(&CASES));
    }

    #[test]
    fn pools_match_reference(n in 1usize..=2, c in 1usize..=9, h in 2usize..=12, w in 2usize..=12, k in 2usize..=3, s in 1usize..=2,
                             pads in prop::array::uniform4(0usize..=1), ceil in any::<bool>(), include in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(pads[0] < k && pads[1] < k && pads[2] < k && pads[3] < k);
        prop_assume!(h + pads[0] + pads[2] >= k && w + pads[1] + pads[3] >= k);
        let mut b = Builder::new(seed);
        let zp = (b.rng.next_u64() % 256) as i32;
        let x = b.input("x", &[n, c, h, w], zp);
        let pool = Pool { kernel_shape: [k, k], strides: [s, s], dilations: [1, 1], padding: Padding::Explicit(pads), ceil_mode: ceil, count_include_pad: include };
        b.g.nodes.push(Node::new("max", Op::QMaxPool(pool.clone()), &[&x], &["mx"]));
        b.g.nodes.push(Node::new("avg", Op::QAveragePool { pool, zero_point: zp }, &[&x], &["av"]));
        b.output("mx", zp);
        b.output("av", zp);
        let feeds = HashMap::from([("x".to_string(), f32_input(&mut b.rng, &[n, c, h, w]))]);
        static CASES: AtomicUsize = AtomicUsize::new(0);
        let simulators = sample_simulators(&CASES);
        check_on(b.g.clone(), feeds.clone(), simulators);
        check_fpga(b.g, feeds, simulators);
    }
}

#[test]
fn add_mean_flatten_and_fully_connected_match_reference() {
    for (seed, (n, c, h, w, m)) in [(1, 3, 7, 5, 10), (2, 16, 1, 1, 20), (3, 5, 3, 3, 7)]
        .into_iter()
        .enumerate()
    {
        let mut b = Builder::new(seed as u64);
        let (za, zb) = (17, 200);
        let a = b.input("a", &[n, c, h, w], za);
        let bb = b.input("b", &[n, c, h, w], zb);
        let add = QAdd {
            a_zero_point: za,
            b_zero_point: zb,
            a_multiplier: 1 << 29,
            b_multiplier: 3 << 27,
            shift: 31,
            out: QOut {
                zero_point: 5,
                clamp: [5, 255],
            },
        };
        b.g.nodes.push(Node::new("add", Op::QAdd(add), &[&a, &bb], &["s"]));
        let mean = QMean {
            keepdims: true,
            x_zero_point: 5,
            multiplier: 1_500_000_000,
            shift: 33,
            out: QOut {
                zero_point: 3,
                clamp: [0, 255],
            },
        };
        b.g.nodes.push(Node::new("mean", Op::QMean(mean), &["s"], &["g"]));
        b.g.nodes
            .push(Node::new("flat", Op::Flatten { axis: 1 }, &["s"], &["f"]));
        let k = c * h * w;
        let wv = ints(&mut b.rng, m * k, -127, 128);
        let wq = b.constant("fc.w", Tensor::from_i64(&[m, k], wv).unwrap().cast(DType::I8));
        let bias = ints(&mut b.rng, m, -5000, 5000);
        let bias = b.constant("fc.b", i32_tensor(bias));
        let (mult, shift) = b.requant("fc", m, 36, 40);
        let fc = QGemm {
            x_zero_point: 5,
            out: QOut {
                zero_point: 128,
                clamp: [0, 255],
            },
        };
        b.g.nodes.push(Node::new(
            "fc",
            Op::QGemm(fc),
            &["f", &wq, &bias, &mult, &shift],
            &["y"],
        ));
        b.output("s", 5);
        b.output("g", 3);
        b.output("y", 128);
        let feeds = HashMap::from([
            ("a".to_string(), f32_input(&mut b.rng, &[n, c, h, w])),
            ("b".to_string(), f32_input(&mut b.rng, &[n, c, h, w])),
        ]);
        check(b.g.clone(), feeds.clone());
        check_fpga(b.g, feeds, true);
    }
}

/// The zoo's resnet8, int8, calibrated on `calib_batch` seeded inputs.
fn resnet8_int8(rng: &mut Rng, calib_batch: usize) -> Package {
    zoo_int8("resnet8", rng, calib_batch)
}

/// A CIFAR-sized zoo network, int8, calibrated on `calib_batch` seeded inputs.
fn zoo_int8(name: &str, rng: &mut Rng, calib_batch: usize) -> Package {
    let g = weft_zoo::build(name, &weft_zoo::ZooOptions::default()).unwrap();
    let calibration = vec![HashMap::from([(
        "input".to_string(),
        f32_input(rng, &[calib_batch, 3, 32, 32]),
    )])];
    let opts = weft_compile::CompileOptions {
        mx_activations: None,
        mx_input_activations: None,
        name: "r8".into(),
        precision: Precision::Int8,
        method: weft_quant::Method::MinMax,
        calibration,
        given: None,
        evaluation: None,
        preprocess: Default::default(),
        labels: vec![],
        metadata: Default::default(),
    };
    weft_compile::compile(g, opts, &mut |_, _, _| {}).unwrap().0
}

#[test]
fn zoo_resnet8_end_to_end_and_program_binary_round_trip() {
    let mut rng = Rng::new(4);
    let pkg = resnet8_int8(&mut rng, 4);
    let feeds = HashMap::from([("input".to_string(), f32_input(&mut rng, &[3, 3, 32, 32]))]);
    check(pkg.graph.clone(), feeds.clone());
    // Save the device's own program binary and load it back, as an FPGA image would be.
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Session::new(
        &pkg,
        &SessionOptions {
            device: device(),
            ..Default::default()
        },
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("weft-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("program.bin");
    std::fs::write(&path, s.program_binary().unwrap()).unwrap();
    let mut from_bin = Session::new(
        &pkg,
        &SessionOptions {
            device: device(),
            program_binary: Some(path.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        from_bin.program_source(),
        &weft_opencl::ProgramSource::Binary(path.clone())
    );
    let want = weft_compile::reference_executor(&pkg).unwrap().run(&feeds).unwrap();
    assert_eq!(from_bin.run(&feeds).unwrap(), want);
    // A damaged binary is a clear error.
    std::fs::write(&path, b"not a program").unwrap();
    let err = Session::new(
        &pkg,
        &SessionOptions {
            device: device(),
            program_binary: Some(path),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("program binary"), "{err}");
}

/// resnet20 and the embedded default model (weft's int8 Fashion-MNIST ResNet), bit-exact
/// on every device, simulators included.
#[test]
fn zoo_resnet20_and_the_default_model_on_every_device() {
    let mut rng = Rng::new(6);
    let pkg = zoo_int8("resnet20", &mut rng, 4);
    let feeds = HashMap::from([("input".to_string(), f32_input(&mut rng, &[1, 3, 32, 32]))]);
    check(pkg.graph, feeds);
    let default = Package::from_bytes(include_bytes!("../../../models/fashion/fashion_resnet.weft")).unwrap();
    let input = &default.graph.inputs[0];
    let shape = input.concrete_shape(2);
    let n: usize = shape.iter().product();
    // images in 0..1 as the model's preprocessing gives them
    let x: Vec<f32> = (0..n).map(|_| (rng.next_u64() % 256) as f32 / 255.0).collect();
    let feeds = HashMap::from([(input.name.clone(), Tensor::from_f32(&shape, x).unwrap())]);
    check(default.graph, feeds);
}

#[test]
fn bad_device_specs_are_clear_errors() {
    assert!(
        weft_opencl::select_device("cuda")
            .unwrap_err()
            .to_string()
            .contains("invalid device")
    );
    let err = weft_opencl::select_device("opencl:no-such-platform")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no OpenCL device matches") && err.contains("pocl"),
        "{err}"
    );
}

#[test]
fn wrong_inputs_are_refused() {
    let mut rng = Rng::new(4);
    let pkg = resnet8_int8(&mut rng, 2);
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Session::new(
        &pkg,
        &SessionOptions {
            device: device(),
            ..Default::default()
        },
    )
    .unwrap();
    for bad in [
        f32_input(&mut rng, &[1, 3, 31, 32]),
        f32_input(&mut rng, &[0, 3, 32, 32]),
        Tensor::from_f32(&[1, 3], vec![0.0; 3]).unwrap(),
    ] {
        let feeds = HashMap::from([("input".to_string(), bad)]);
        assert!(s.run(&feeds).is_err());
    }
    assert!(s.run(&HashMap::new()).is_err());
    // still serving
    let feeds = HashMap::from([("input".to_string(), f32_input(&mut rng, &[1, 3, 32, 32]))]);
    assert!(s.run(&feeds).is_ok());
}

/// An ungrouped, undilated convolution case (`a`: a residual; a ReLU clamp for even seeds).
#[allow(clippy::too_many_arguments)]
fn one_group(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    a: bool,
    seed: u64,
) -> ConvCase {
    ConvCase {
        n,
        c,
        h,
        w,
        m,
        k,
        stride,
        dilation: 1,
        pads,
        group: 1,
        a,
        b: seed.is_multiple_of(2),
        seed,
    }
}

/// The input layouts the planner picks for speed: a kernel-width fold for layers with at
/// most 4 input channels (a stem like ResNet's 7x7/2 on RGB; both convolution forms) and a
/// phase split for stride-2 layers (the lane form; the channel form reads strided pixels
/// directly), over odd sizes, asymmetric and odd padding, residuals and batches; each case
/// asserts the layout kernel ran and the result is bit-exact.
#[test]
fn folded_and_phase_split_inputs_match_reference() {
    let case = |n, c, h, w, m, k, pads, a, seed| one_group(n, c, h, w, m, k, 2, pads, a, seed);
    let cases = [
        (case(2, 3, 23, 21, 20, 7, [3, 3, 3, 3], false, 1), "qfold"),
        (case(1, 4, 9, 30, 17, 3, [1, 0, 1, 2], true, 2), "qfold"),
        (case(2, 2, 12, 11, 9, 5, [2, 2, 1, 2], false, 7), "qfold"),
        (case(1, 1, 10, 19, 70, 7, [3, 2, 3, 3], true, 8), "qfold"),
        (case(2, 12, 15, 13, 24, 3, [1, 1, 1, 1], true, 3), "qphase"),
        (case(1, 8, 14, 17, 33, 1, [0, 0, 0, 0], true, 4), "qphase"),
        (case(3, 20, 7, 7, 16, 3, [1, 1, 0, 1], false, 5), "qphase"),
        (case(1, 16, 34, 35, 40, 3, [2, 1, 0, 2], false, 6), "qphase"),
    ];
    for (c, layout) in cases {
        let (g, feeds) = conv_graph(&c);
        let lanes = kernels_run(&g, &feeds, true);
        assert!(
            lanes.contains(&layout) && lanes.contains(&"qconv"),
            "{c:?}: expected {layout}, ran {lanes:?}"
        );
        let channels = kernels_run(&g, &feeds, false);
        assert!(channels.contains(&"qconvc"), "{c:?}: ran {channels:?}");
        assert_eq!(
            channels.contains(&"qfold"),
            layout == "qfold",
            "{c:?}: ran {channels:?}"
        );
        check(g, feeds);
    }
}

/// Requantization shifts past the device kernel's exact range (53..=62) run the node on the
/// host instead: still bit-exact, and no `qconv` launch for it.
#[test]
fn large_requantization_shifts_fall_back_to_the_host() {
    let c = ConvCase {
        n: 1,
        c: 8,
        h: 6,
        w: 5,
        m: 12,
        k: 3,
        stride: 1,
        dilation: 1,
        pads: [1, 1, 1, 1],
        group: 1,
        a: true,
        b: false,
        seed: 9,
    };
    let (mut g, feeds) = conv_graph(&c);
    g.initializers.insert("conv.shift".into(), i32_tensor(vec![56; c.m]));
    // multipliers just over 2^30 with a shift of 56: a scale of about 2^-26
    g.initializers
        .insert("conv.mult".into(), i32_tensor(vec![(1 << 30) + 12345; c.m]));
    for lane_conv in [true, false] {
        let ran = kernels_run(&g, &feeds, lane_conv);
        assert!(!ran.contains(&"qconv") && !ran.contains(&"qconvc"), "ran {ran:?}");
    }
    check(g, feeds);
}

/// The input edge on special values: NaN (to the zero point), infinities and huge values
/// (saturated), halfway cases (to even), over a width with whole 16-pixel runs and a tail.
#[test]
fn quantize_special_values_match_reference() {
    let mut b = Builder::new(11);
    let shape = [2, 5, 3, 37];
    let x = b.input("x", &shape, 100);
    b.output(&x, 100);
    let n: usize = shape.iter().product();
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        0.01,
        -0.01,
        0.03,
        2.55,
        -2.57,
    ];
    let mut v = b.rng.normals(n, 3.0);
    for (i, x) in v.iter_mut().enumerate() {
        if i % 3 == 0 {
            *x = specials[(i / 3) % specials.len()];
        }
    }
    let feeds = HashMap::from([("x".to_string(), Tensor::from_f32(&shape, v).unwrap())]);
    check(b.g, feeds);
}

/// Layers wider than one channel-form work-item (64 output channels): several channel
/// blocks, a last block past the output channels (not a multiple of 4 either), long
/// reductions, planes that are not whole 6-pixel tiles, strides 1 and 2, residuals, batches.
#[test]
fn wide_layers_match_reference_in_both_forms() {
    let case = one_group;
    let cases = [
        case(2, 70, 9, 8, 150, 3, 1, [1, 1, 1, 1], true, 21),
        case(1, 132, 7, 7, 130, 1, 1, [0, 0, 0, 0], true, 22),
        case(1, 64, 13, 11, 66, 3, 2, [1, 0, 1, 1], false, 23),
        case(3, 36, 5, 6, 200, 1, 2, [0, 0, 0, 0], false, 24),
        // 1x1 at stride 1 over a batch: tiles inside an image take the flattened-index
        // path, tiles across two images and the batch's last partial tile the general one
        case(3, 40, 5, 7, 72, 1, 1, [0, 0, 0, 0], true, 25),
        case(2, 8, 4, 4, 64, 1, 1, [0, 0, 0, 0], false, 26),
        // the batch's last tile with fewer pixels than a tile (computed pixel by pixel):
        // across images, in the padding, with the residual; a 7x7 plane at stride 2 ending
        // in one pixel; a 1x1 plane (a fully connected layer) whose whole batch is one
        // such tile, over an odd number of channel blocks
        case(5, 20, 1, 2, 70, 3, 1, [1, 1, 1, 1], true, 27),
        case(1, 24, 13, 13, 100, 3, 2, [1, 1, 1, 1], true, 28),
        case(3, 132, 1, 1, 70, 1, 1, [0, 0, 0, 0], false, 29),
    ];
    for c in cases {
        let (g, feeds) = conv_graph(&c);
        check(g, feeds);
    }
}

/// The device dequantize (a dequantized value that a later, host-side float node reads; a
/// graph output that nothing reads is dequantized on the host instead), in both placements.
#[test]
fn dequantize_on_device_and_host_match_reference() {
    let mut b = Builder::new(31);
    let x = b.input("x", &[2, 5, 3, 37], 90);
    b.g.nodes.push(Node::new(
        "deq",
        Op::Dequantize {
            scale: 0.03,
            zero_point: 90,
        },
        &[&x],
        &["xf"],
    ));
    b.g.nodes.push(Node::new("relu", Op::Relu, &["xf"], &["y"]));
    b.g.outputs.push(ValueInfo::new("y", DType::F32, vec![]));
    b.output(&x, 90);
    let feeds = HashMap::from([("x".to_string(), f32_input(&mut b.rng, &[2, 5, 3, 37]))]);
    let ran = kernels_run(&b.g, &feeds, false);
    assert_eq!(ran.iter().filter(|k| **k == "dequantize").count(), 1, "ran {ran:?}");
    check(b.g, feeds);
}

/// A graph input's Quantize runs on the host (quantized as it is laid out for the upload);
/// a float already on the device (here a dequantized activation, quantized again at another
/// scale, as a QDQ model can chain them) takes the device `quantize` kernel.
#[test]
fn input_quantize_on_host_and_device_quantize_match_reference() {
    let mut b = Builder::new(32);
    let x = b.input("x", &[2, 5, 3, 37], 90);
    b.g.nodes.push(Node::new(
        "deq",
        Op::Dequantize {
            scale: 0.02,
            zero_point: 90,
        },
        &[&x],
        &["xf"],
    ));
    b.g.nodes.push(Node::new(
        "requantize",
        Op::Quantize {
            scale: 0.031,
            zero_point: 17,
        },
        &["xf"],
        &["y"],
    ));
    b.output("y", 17);
    let feeds = HashMap::from([("x".to_string(), f32_input(&mut b.rng, &[2, 5, 3, 37]))]);
    let ran = kernels_run(&b.g, &feeds, false);
    assert_eq!(ran.iter().filter(|k| **k == "quantize").count(), 1, "ran {ran:?}");
    assert_eq!(ran.iter().filter(|k| **k == "dequantize").count(), 1, "ran {ran:?}");
    check(b.g, feeds);
}

/// One session running several batch sizes (as the server's batcher does): each size's plan
/// shares the packed constants, and runs of an earlier size after a later one was prepared
/// still match the reference (a re-upload of the constants once left earlier plans' kernels
/// pointing at released buffers).
#[test]
fn batch_sizes_share_constants() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = one_group(1, 8, 9, 7, 70, 3, 1, [1, 1, 1, 1], true, 41);
    let (mut g, _) = conv_graph(&c);
    for i in &mut g.inputs {
        i.shape[0] = None; // any batch
    }
    let mut sorted = g.clone();
    sorted.sort().unwrap();
    let reference = weft_reference::Executor::new(sorted).unwrap();
    let opts = SessionOptions {
        device: device(),
        guard_bytes: GUARD,
        ..Default::default()
    };
    let mut s = Session::new(&package(g), &opts).unwrap();
    let mut rng = Rng::new(5);
    for batch in [1, 3, 1, 2, 3] {
        s.prepare(batch).unwrap();
        let feeds = HashMap::from([
            ("x".to_string(), f32_input(&mut rng, &[batch, c.c, c.h, c.w])),
            ("r".to_string(), f32_input(&mut rng, &[batch, c.m, c.h, c.w])),
        ]);
        assert_eq!(s.run(&feeds).unwrap(), reference.run(&feeds).unwrap(), "batch {batch}");
    }
}

/// The worker pinning and the one-compile-per-kernel setting change PoCL's environment only
/// where the caller has not chosen, and never once the process has other threads (the test
/// harness has several).
#[test]
fn pocl_settings_leave_a_threaded_process_alone() {
    std::thread::scope(|s| {
        s.spawn(|| std::thread::sleep(std::time::Duration::from_millis(50)));
        assert!(!weft_opencl::pin_pocl_workers());
        assert!(!weft_opencl::generic_pocl_work_groups());
    });
}

/// Output planes past the lane form's limit (it finds a lane's row with a float division,
/// exact below 2^20 pixels): the channel form runs them on the device, the lane form on the
/// host; both bit-exact.
#[test]
fn planes_past_the_lane_forms_limit() {
    let c = one_group(1, 4, 1025, 1024, 8, 1, 1, [0, 0, 0, 0], true, 51);
    let (g, feeds) = conv_graph(&c);
    assert!(kernels_run(&g, &feeds, false).contains(&"qconvc"));
    let lanes = kernels_run(&g, &feeds, true);
    assert!(!lanes.contains(&"qconv") && !lanes.contains(&"qconvc"), "ran {lanes:?}");
    // 2^20 pixels: too many for a simulator
    check_on(g, feeds, false);
}

/// A convolution the device cannot run (requantization shifts past its exact range) between
/// two it can, with the first one's result also a graph output: the run downloads mid-graph,
/// evaluates on the host, uploads again and downloads two outputs at the end (reads that
/// the session enqueues without blocking and settles together). Bit-exact, and the two
/// device convolutions are launched.
#[test]
fn device_host_device_chain_with_two_outputs() {
    let mut b = Builder::new(61);
    let x = b.input("x", &[2, 6, 7, 9], 77);
    let mut prev = x;
    let mut channels = 6;
    for (i, (m, shift_lo, shift_hi)) in [(10, 32, 44), (12, 56, 57), (8, 30, 44)].into_iter().enumerate() {
        let w = ints(&mut b.rng, m * channels * 9, -127, 128);
        let w = b.constant(
            &format!("w{i}"),
            Tensor::from_i64(&[m, channels, 3, 3], w).unwrap().cast(DType::I8),
        );
        let bias = ints(&mut b.rng, m, -20000, 20000);
        let bias = b.constant(&format!("b{i}"), i32_tensor(bias));
        let (mult, shift) = b.requant(&format!("conv{i}"), m, shift_lo, shift_hi);
        let q = QConv {
            conv: Conv {
                kernel_shape: Some([3, 3]),
                strides: [1, 1],
                dilations: [1, 1],
                padding: Padding::Explicit([1, 1, 1, 1]),
                group: 1,
                activation: None,
            },
            x_zero_point: if i == 0 { 77 } else { 0 },
            residual_zero_point: None,
            out: QOut {
                zero_point: 0,
                clamp: [0, 255],
            },
        };
        let y = format!("y{i}");
        b.g.nodes.push(Node::new(
            format!("conv{i}"),
            Op::QConv(q),
            &[&prev, &w, &bias, &mult, &shift],
            &[&y],
        ));
        prev = y;
        channels = m;
    }
    b.output("y0", 0);
    b.output(&prev, 0);
    let feeds = HashMap::from([("x".to_string(), f32_input(&mut b.rng, &[2, 6, 7, 9]))]);
    let ran = kernels_run(&b.g, &feeds, false);
    assert_eq!(ran.iter().filter(|k| **k == "qconvc").count(), 2, "ran {ran:?}");
    check(b.g, feeds);
}

/// Runs `graph` with the FPGA kernel variant on every device (simulators when
/// `simulators`), asserting the reference's outputs and that every launch is a layer kernel.
fn check_fpga(graph: Graph, inputs: HashMap<String, Tensor>, simulators: bool) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut g = graph.clone();
    g.sort().unwrap();
    let want = weft_reference::Executor::new(g).unwrap().run(&inputs).unwrap();
    let pkg = package(graph);
    for dev in devices() {
        if is_simulator(&dev) && !simulators {
            continue;
        }
        let opts = SessionOptions {
            device: dev.clone(),
            guard_bytes: GUARD,
            poison: Some(0xC3),
            kernels: KernelSet::Fpga,
            profile: true,
            ..Default::default()
        };
        let mut s = Session::new(&pkg, &opts).unwrap_or_else(|e| panic!("FPGA variant on '{dev}': {e}"));
        assert_eq!(s.run(&inputs).unwrap(), want, "{dev}: the FPGA variant");
        // the device's launches (host rows are the float edges the variant leaves there)
        let ran: Vec<&str> = s
            .last_profile()
            .iter()
            .map(|l| l.kernel)
            .filter(|&k| k != weft_opencl::HOST)
            .collect();
        assert!(!ran.is_empty());
        assert!(
            ran.iter().all(|k| ["wconv", "wadd", "wpool", "wmean"].contains(k)),
            "{dev}: a generic kernel ran in the FPGA variant: {ran:?}"
        );
        assert_no_simulator_reports(&dev);
    }
}

/// The FPGA variant (one kernel per layer, geometry compiled in), bit-exact with the
/// reference: resnet8 at batch 2, grouped convolutions, pooling, adds, means, fully connected.
#[test]
fn fpga_variant_matches_reference_on_every_device() {
    let mut rng = Rng::new(8);
    let pkg = resnet8_int8(&mut rng, 4);
    let feeds = HashMap::from([("input".to_string(), f32_input(&mut rng, &[2, 3, 32, 32]))]);
    check_fpga(pkg.graph, feeds, true);
    let cases = [
        one_group(2, 7, 9, 8, 21, 3, 2, [1, 0, 1, 1], true, 40),
        one_group(1, 3, 11, 11, 16, 7, 2, [3, 3, 3, 3], false, 41),
        ConvCase {
            group: 2,
            c: 8,
            m: 6,
            ..one_group(2, 8, 5, 6, 6, 3, 1, [1, 1, 1, 1], false, 42)
        },
    ];
    for c in cases {
        let (g, feeds) = conv_graph(&c);
        check_fpga(g, feeds, true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fpga_variant_convolutions_match_reference(case in conv_case(Groups::OneOrTwoAligned)) {
        static CASES: AtomicUsize = AtomicUsize::new(0);
        let (g, feeds) = conv_graph(&case);
        check_fpga(g, feeds, sample_simulators(&CASES));
    }
}

/// A grouped convolution (4-aligned groups: on the device) and a depthwise one (`qdwconv`),
/// int8, on every device.
#[test]
fn grouped_and_depthwise_int8_convolutions_on_every_device() {
    let grouped = ConvCase {
        group: 3,
        c: 12,
        m: 9,
        ..one_group(2, 12, 9, 7, 9, 3, 1, [1, 1, 1, 1], true, 43)
    };
    let depthwise = ConvCase {
        group: 6,
        c: 6,
        m: 6,
        ..one_group(1, 6, 8, 8, 6, 3, 2, [1, 1, 1, 1], false, 44)
    };
    let (g, feeds) = conv_graph(&grouped);
    check(g.clone(), feeds.clone());
    check_fpga(g, feeds, true);
    let (g, feeds) = conv_graph(&depthwise);
    check(g, feeds);
}
