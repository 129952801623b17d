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
    assert_eq!(eval(Op::Cast { to: DType::I32 }, &[&x]).unwrap(), i32s(&[-1, 1, 2, 0]));
    let y = eval(Op::Cast { to: DType::I8 }, &[&i32s(&[200, -129, 5])]).unwrap();
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
