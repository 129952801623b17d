//! ONNX's semantics where computing in f32 would be silently wrong: integer arithmetic
//! wraps and divides toward zero in the operands' own type, Cast truncates, results keep
//! their input's dtype, and what is not exact is refused rather than approximated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::{ArrayD, IxDyn};
use weft_core::op::PadMode;
use weft_core::{DType, Node, Op, Tensor};
use weft_reference::eval_node;

fn node(op: Op, n_inputs: usize) -> Node {
    let names: Vec<String> = (0..n_inputs).map(|i| format!("in{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Node::new("n", op, &refs, &["y"])
}

fn eval(op: Op, inputs: &[&Tensor]) -> weft_core::Result<Tensor> {
    let ins: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
    eval_node(&node(op, inputs.len()), &ins).map(|mut v| v.remove(0))
}

fn i8s(v: &[i8]) -> Tensor {
    Tensor::I8(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap())
}

fn i32s(v: &[i32]) -> Tensor {
    Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap())
}

#[test]
fn integer_arithmetic_wraps_in_its_own_type() {
    let y = eval(Op::Add, &[&i8s(&[100, -100, 1]), &i8s(&[100, -100, 2])]).unwrap();
    assert_eq!(y, i8s(&[-56, 56, 3]));
    let y = eval(Op::Mul, &[&i32s(&[i32::MAX, 3]), &i32s(&[2, -4])]).unwrap();
    assert_eq!(y, i32s(&[-2, -12]));
}

#[test]
fn integer_division_truncates_toward_zero() {
    let y = eval(Op::Div, &[&i32s(&[-3, 3, 7, -7]), &i32s(&[2, 2, -2, -2])]).unwrap();
    assert_eq!(y, i32s(&[-1, 1, -3, 3]));
    let e = eval(Op::Div, &[&i32s(&[1]), &i32s(&[0])]).unwrap_err();
    assert!(e.to_string().contains("division by zero"), "{e}");
}

#[test]
fn broadcasting_integer_operands() {
    let a = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1, 2, 3, 4]).unwrap());
    let b = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![10, 20]).unwrap());
    let y = eval(Op::Sub, &[&a, &b]).unwrap();
    assert_eq!(y.to_i64_vec(), vec![-9, -18, -7, -16]);
}

#[test]
fn mixed_operand_types_and_float_only_ops_are_refused() {
    let e = eval(Op::Add, &[&i8s(&[1]), &i32s(&[1])]).unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
    let e = eval(
        Op::Softmax {
            axis: -1,
            legacy: false,
        },
        &[&i32s(&[1, 2])],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("Softmax on int32 tensors is not supported"),
        "{e}"
    );
}

#[test]
fn cast_truncates_floats_and_wraps_integers() {
    let x = Tensor::from_f32(&[4], vec![-1.7, 1.7, 2.5, -0.2]).unwrap();
    assert_eq!(eval(Op::cast(DType::I32), &[&x]).unwrap(), i32s(&[-1, 1, 2, 0]));
    let y = eval(Op::cast(DType::I8), &[&i32s(&[200, -129, 5])]).unwrap();
    assert_eq!(y, i8s(&[-56, 127, 5]));
}

#[test]
fn float16_in_float16_out() {
    let x = Tensor::F16(
        ArrayD::from_shape_vec(IxDyn(&[2]), vec![half::f16::from_f32(-1.0), half::f16::from_f32(2.0)]).unwrap(),
    );
    let y = eval(Op::Relu, &[&x]).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(y.to_f32().iter().copied().collect::<Vec<_>>(), vec![0.0, 2.0]);
}

#[test]
fn shape_start_and_end() {
    let x = Tensor::from_f32(&[2, 3, 4, 5], vec![0.0; 120]).unwrap();
    let y = eval(
        Op::Shape {
            start: 1,
            end: Some(-1),
        },
        &[&x],
    )
    .unwrap();
    assert_eq!(y.to_i64_vec(), vec![3, 4]);
    let y = eval(Op::Shape { start: -10, end: None }, &[&x]).unwrap();
    assert_eq!(y.to_i64_vec(), vec![2, 3, 4, 5]);
    let y = eval(Op::Shape { start: 3, end: Some(1) }, &[&x]).unwrap();
    assert!(y.is_empty());
}

#[test]
fn pad_wrap_and_axes() {
    let x = Tensor::from_f32(&[1, 3], vec![1.0, 2.0, 3.0]).unwrap();
    // pads for axis -1 only: two before, one after, wrapping around
    let pads = Tensor::i64_vec(&[2, 1]);
    let value = Tensor::f32_scalar(0.0);
    let axes = Tensor::i64_vec(&[-1]);
    let y = eval(Op::Pad { mode: PadMode::Wrap }, &[&x, &pads, &value, &axes]).unwrap();
    assert_eq!(y.shape(), &[1, 6]);
    assert_eq!(
        y.to_f32().iter().copied().collect::<Vec<_>>(),
        vec![2.0, 3.0, 1.0, 2.0, 3.0, 1.0]
    );
    // integer data keeps its type and the integer pad value
    let y = eval(
        Op::Pad {
            mode: PadMode::Constant,
        },
        &[&i8s(&[5, 6]), &Tensor::i64_vec(&[1, 0]), &i8s(&[-3])],
    )
    .unwrap();
    assert_eq!(y, i8s(&[-3, 5, 6]));
}

fn f32s(v: &[f32]) -> Tensor {
    Tensor::from_f32(&[v.len()], v.to_vec()).unwrap()
}

#[test]
fn wider_integers_wrap_in_their_own_type() {
    let a = Tensor::I16(ArrayD::from_shape_vec(IxDyn(&[2]), vec![i16::MAX, -5]).unwrap());
    let y = eval(Op::Add, &[&a, &a]).unwrap();
    assert_eq!(
        y,
        Tensor::I16(ArrayD::from_shape_vec(IxDyn(&[2]), vec![-2, -10]).unwrap())
    );
    // uint64 beyond i64::MAX divides as unsigned
    let big = Tensor::U64(ArrayD::from_shape_vec(IxDyn(&[1]), vec![u64::MAX]).unwrap());
    let two = Tensor::U64(ArrayD::from_shape_vec(IxDyn(&[1]), vec![2]).unwrap());
    let y = eval(Op::Div, &[&big, &two]).unwrap();
    assert_eq!(
        y,
        Tensor::U64(ArrayD::from_shape_vec(IxDyn(&[1]), vec![u64::MAX / 2]).unwrap())
    );
}

#[test]
fn casts_to_small_floats_saturate_as_asked() {
    let x = f32s(&[0.48, 1e6, f32::INFINITY, -1e6]);
    let sat = eval(Op::cast(DType::F8E4M3FN), &[&x]).unwrap();
    assert_eq!(sat.dtype(), DType::F8E4M3FN);
    assert_eq!(
        sat.to_f32().iter().copied().collect::<Vec<_>>(),
        vec![0.46875, 448.0, 448.0, -448.0]
    );
    let raw = Op::Cast {
        to: DType::F8E4M3FN,
        saturate: false,
        round: Default::default(),
    };
    let y = eval(raw, &[&x]).unwrap().to_f32();
    assert_eq!(y[0], 0.46875);
    assert!(y.iter().skip(1).all(|v| v.is_nan()), "{y:?}");
    let e5 = eval(
        Op::Cast {
            to: DType::F8E5M2,
            saturate: false,
            round: Default::default(),
        },
        &[&x],
    )
    .unwrap()
    .to_f32();
    assert_eq!(e5[1], f32::INFINITY);
    // and back: exact
    let back = eval(Op::cast(DType::F32), &[&sat]).unwrap();
    assert_eq!(back, f32s(&[0.46875, 448.0, 448.0, -448.0]));
}

#[test]
fn casts_to_four_bit_integers_wrap() {
    let y = eval(Op::cast(DType::I4), &[&f32s(&[-9.0, 8.0, 7.9, -1.5])]).unwrap();
    assert_eq!(y.dtype(), DType::I4);
    assert_eq!(y.to_i64_vec(), vec![7, -8, 7, -1]);
    let y = eval(Op::cast(DType::U2), &[&i32s(&[5, -1])]).unwrap();
    assert_eq!(y.to_i64_vec(), vec![1, 3]);
}

#[test]
fn storage_only_types_are_refused_by_compute_ops() {
    let d = Tensor::F64(ArrayD::from_shape_vec(IxDyn(&[1]), vec![1.0]).unwrap());
    let e = eval(Op::Add, &[&d, &d]).unwrap_err();
    assert!(e.to_string().contains("Add on float64 tensors is not supported"), "{e}");
    let b = Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[1]), vec![true]).unwrap());
    assert!(eval(Op::Relu, &[&b]).is_err());
}

#[test]
fn quantize_to_int4_and_float8_and_back() {
    let x = f32s(&[-20.0, 3.0, 100.0]);
    let s = f32s(&[2.0]);
    let zp = Tensor::I4(ArrayD::from_elem(IxDyn(&[]), weft_core::minifloat::Code::<6>(0)));
    let q = eval(Op::QuantizeLinear { axis: 1 }, &[&x, &s, &zp]).unwrap();
    assert_eq!(q.dtype(), DType::I4);
    assert_eq!(q.to_i64_vec(), vec![-8, 2, 7], "round half even, then clamp to [-8, 7]");
    let zp8 = Tensor::from_f32(&[], vec![0.0]).unwrap().cast(DType::F8E4M3FN);
    let q = eval(
        Op::QuantizeLinear { axis: 1 },
        &[&f32s(&[1000.0, 0.3]), &f32s(&[1.0]), &zp8],
    )
    .unwrap();
    assert_eq!(q.to_f32().iter().copied().collect::<Vec<_>>(), vec![448.0, 0.3125]);
    let y = eval(Op::DequantizeLinear { axis: 1 }, &[&q, &f32s(&[0.5])]).unwrap();
    assert_eq!(y, f32s(&[224.0, 0.15625]));
}

#[test]
fn uint64_clip_compares_unsigned() {
    let u = |v: &[u64]| Tensor::U64(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap());
    let y = eval(Op::Clip, &[&u(&[u64::MAX, 5, 1 << 63]), &u(&[6]), &u(&[u64::MAX - 1])]).unwrap();
    assert_eq!(y, u(&[u64::MAX - 1, 6, 1 << 63]));
}
