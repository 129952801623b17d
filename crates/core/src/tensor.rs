//! Dense tensors on ndarray, one variant per dtype.

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use crate::minifloat::{self, Code, RoundMode};
use crate::{CoreError, DType, Result};

/// A dense, row-major tensor of one of weft's dtypes.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F16(ArrayD<f16>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    F64(ArrayD<f64>),
    Bool(ArrayD<bool>),
    I16(ArrayD<i16>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    BF16(ArrayD<bf16>),
    F8E4M3FN(ArrayD<Code<0>>),
    F8E4M3FNUZ(ArrayD<Code<1>>),
    F8E5M2(ArrayD<Code<2>>),
    F8E5M2FNUZ(ArrayD<Code<3>>),
    F8E8M0(ArrayD<Code<4>>),
    F4E2M1(ArrayD<Code<5>>),
    I4(ArrayD<Code<6>>),
    U4(ArrayD<Code<7>>),
    I2(ArrayD<Code<8>>),
    U2(ArrayD<Code<9>>),
}

/// Runs `$body` with `$a` bound to the tensor's array, whatever its element type.
#[macro_export]
macro_rules! each_variant {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $body,
            $crate::Tensor::F16($a) => $body,
            $crate::Tensor::I8($a) => $body,
            $crate::Tensor::U8($a) => $body,
            $crate::Tensor::I32($a) => $body,
            $crate::Tensor::I64($a) => $body,
            $crate::Tensor::F64($a) => $body,
            $crate::Tensor::Bool($a) => $body,
            $crate::Tensor::I16($a) => $body,
            $crate::Tensor::U16($a) => $body,
            $crate::Tensor::U32($a) => $body,
            $crate::Tensor::U64($a) => $body,
            $crate::Tensor::BF16($a) => $body,
            $crate::Tensor::F8E4M3FN($a) => $body,
            $crate::Tensor::F8E4M3FNUZ($a) => $body,
            $crate::Tensor::F8E5M2($a) => $body,
            $crate::Tensor::F8E5M2FNUZ($a) => $body,
            $crate::Tensor::F8E8M0($a) => $body,
            $crate::Tensor::F4E2M1($a) => $body,
            $crate::Tensor::I4($a) => $body,
            $crate::Tensor::U4($a) => $body,
            $crate::Tensor::I2($a) => $body,
            $crate::Tensor::U2($a) => $body,
        }
    };
}

/// Maps the tensor's array to another of the same element type (`$body` an array
/// expression generic over it), keeping the variant.
#[macro_export]
macro_rules! map_variant {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($body),
            $crate::Tensor::F16($a) => $crate::Tensor::F16($body),
            $crate::Tensor::I8($a) => $crate::Tensor::I8($body),
            $crate::Tensor::U8($a) => $crate::Tensor::U8($body),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($body),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($body),
            $crate::Tensor::F64($a) => $crate::Tensor::F64($body),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($body),
            $crate::Tensor::I16($a) => $crate::Tensor::I16($body),
            $crate::Tensor::U16($a) => $crate::Tensor::U16($body),
            $crate::Tensor::U32($a) => $crate::Tensor::U32($body),
            $crate::Tensor::U64($a) => $crate::Tensor::U64($body),
            $crate::Tensor::BF16($a) => $crate::Tensor::BF16($body),
            $crate::Tensor::F8E4M3FN($a) => $crate::Tensor::F8E4M3FN($body),
            $crate::Tensor::F8E4M3FNUZ($a) => $crate::Tensor::F8E4M3FNUZ($body),
            $crate::Tensor::F8E5M2($a) => $crate::Tensor::F8E5M2($body),
            $crate::Tensor::F8E5M2FNUZ($a) => $crate::Tensor::F8E5M2FNUZ($body),
            $crate::Tensor::F8E8M0($a) => $crate::Tensor::F8E8M0($body),
            $crate::Tensor::F4E2M1($a) => $crate::Tensor::F4E2M1($body),
            $crate::Tensor::I4($a) => $crate::Tensor::I4($body),
            $crate::Tensor::U4($a) => $crate::Tensor::U4($body),
            $crate::Tensor::I2($a) => $crate::Tensor::I2($body),
            $crate::Tensor::U2($a) => $crate::Tensor::U2($body),
        }
    };
}

macro_rules! code_variants {
    ($m:ident) => {
        $m!(F8E4M3FN, 0);
        $m!(F8E4M3FNUZ, 1);
        $m!(F8E5M2, 2);
        $m!(F8E5M2FNUZ, 3);
        $m!(F8E8M0, 4);
        $m!(F4E2M1, 5);
        $m!(I4, 6);
        $m!(U4, 7);
        $m!(I2, 8);
        $m!(U2, 9);
    };
}

/// Product of dims, or an error when it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| CoreError::Tensor(format!("shape {shape:?} has too many elements")))
    })
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F16(_) => DType::F16,
            Tensor::I8(_) => DType::I8,
            Tensor::U8(_) => DType::U8,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::F64(_) => DType::F64,
            Tensor::Bool(_) => DType::Bool,
            Tensor::I16(_) => DType::I16,
            Tensor::U16(_) => DType::U16,
            Tensor::U32(_) => DType::U32,
            Tensor::U64(_) => DType::U64,
            Tensor::BF16(_) => DType::BF16,
            Tensor::F8E4M3FN(_) => DType::F8E4M3FN,
            Tensor::F8E4M3FNUZ(_) => DType::F8E4M3FNUZ,
            Tensor::F8E5M2(_) => DType::F8E5M2,
            Tensor::F8E5M2FNUZ(_) => DType::F8E5M2FNUZ,
            Tensor::F8E8M0(_) => DType::F8E8M0,
            Tensor::F4E2M1(_) => DType::F4E2M1,
            Tensor::I4(_) => DType::I4,
            Tensor::U4(_) => DType::U4,
            Tensor::I2(_) => DType::I2,
            Tensor::U2(_) => DType::U2,
        }
    }

    /// The bit patterns of a sub-16-bit ONNX type (float8, float4, int4, int2), if it is one.
    pub fn codes(&self) -> Option<ArrayD<u8>> {
        macro_rules! arm {
            ($v:ident, $k:expr) => {
                if let Tensor::$v(a) = self {
                    return Some(a.mapv(|c| c.0));
                }
            };
        }
        code_variants!(arm);
        None
    }

    /// A tensor of a sub-16-bit ONNX type from its bit patterns.
    pub fn from_codes(dtype: DType, a: ArrayD<u8>) -> Option<Tensor> {
        macro_rules! arm {
            ($v:ident, $k:expr) => {
                if dtype == DType::$v {
                    return Some(Tensor::$v(a.mapv(Code::<$k>)));
                }
            };
        }
        code_variants!(arm);
        None
    }

    pub fn shape(&self) -> &[usize] {
        each_variant!(self, a => a.shape())
    }

    pub fn len(&self) -> usize {
        each_variant!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A tensor from a shape and row-major data, checking that they agree.
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        Ok(Tensor::F32(array_from(shape, data)?))
    }

    pub fn from_i64(shape: &[usize], data: Vec<i64>) -> Result<Tensor> {
        Ok(Tensor::I64(array_from(shape, data)?))
    }

    /// A 1-D int64 tensor.
    pub fn i64_vec(values: &[i64]) -> Tensor {
        Tensor::I64(
            ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).unwrap_or_else(|_| unreachable_shape()),
        )
    }

    /// A 0-D float tensor.
    pub fn f32_scalar(value: f32) -> Tensor {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), value))
    }

    pub fn as_f32(&self) -> Result<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Ok(a),
            other => Err(CoreError::DType {
                expected: DType::F32,
                got: other.dtype(),
            }),
        }
    }

    /// The values converted to f32 (exact for every integer dtype weft uses up to 2^24).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Tensor::F32(a) => a.clone(),
            Tensor::F16(a) => a.mapv(f32::from),
            Tensor::I8(a) => a.mapv(f32::from),
            Tensor::U8(a) => a.mapv(f32::from),
            Tensor::I32(a) => a.mapv(|v| v as f32),
            Tensor::I64(a) => a.mapv(|v| v as f32),
            Tensor::F64(a) => a.mapv(|v| v as f32),
            Tensor::Bool(a) => a.mapv(|v| f32::from(u8::from(v))),
            Tensor::I16(a) => a.mapv(f32::from),
            Tensor::U16(a) => a.mapv(f32::from),
            Tensor::U32(a) => a.mapv(|v| v as f32),
            Tensor::U64(a) => a.mapv(|v| v as f32),
            Tensor::BF16(a) => a.mapv(f32::from),
            other => {
                let dt = other.dtype();
                other
                    .codes()
                    .unwrap_or_default()
                    .mapv(|c| minifloat::code_to_f32(dt, c))
            }
        }
    }

    /// The values converted to f64 (exact for every dtype but 64-bit integers beyond 2^53).
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            Tensor::F64(a) => a.clone(),
            Tensor::I64(a) => a.mapv(|v| v as f64),
            Tensor::U64(a) => a.mapv(|v| v as f64),
            Tensor::I32(a) => a.mapv(f64::from),
            Tensor::U32(a) => a.mapv(f64::from),
            other => other.to_f32().mapv(f64::from),
        }
    }

    /// The values converted to i64; floats are truncated toward zero.
    pub fn to_i64(&self) -> ArrayD<i64> {
        match self {
            Tensor::F32(a) => a.mapv(|v| v as i64),
            Tensor::F16(a) => a.mapv(|v| f32::from(v) as i64),
            Tensor::I8(a) => a.mapv(i64::from),
            Tensor::U8(a) => a.mapv(i64::from),
            Tensor::I32(a) => a.mapv(i64::from),
            Tensor::I64(a) => a.clone(),
            Tensor::F64(a) => a.mapv(|v| v as i64),
            Tensor::Bool(a) => a.mapv(i64::from),
            Tensor::I16(a) => a.mapv(i64::from),
            Tensor::U16(a) => a.mapv(i64::from),
            Tensor::U32(a) => a.mapv(i64::from),
            // the same bits: wrapping arithmetic on them is uint64's
            Tensor::U64(a) => a.mapv(|v| v as i64),
            Tensor::BF16(a) => a.mapv(|v| f32::from(v) as i64),
            other => {
                let dt = other.dtype();
                let codes = other.codes().unwrap_or_default();
                if dt.mini().is_some() {
                    codes.mapv(|c| minifloat::code_to_f32(dt, c) as i64)
                } else {
                    codes.mapv(|c| minifloat::int_value(dt, c))
                }
            }
        }
    }

    /// i64 values as `dt`, integers wrapping (two's complement) as ONNX's do, floats
    /// rounding to nearest.
    pub fn wrap_i64(a: ArrayD<i64>, dt: DType) -> Tensor {
        match dt {
            DType::I64 => Tensor::I64(a),
            DType::I32 => Tensor::I32(a.mapv(|v| v as i32)),
            DType::I16 => Tensor::I16(a.mapv(|v| v as i16)),
            DType::I8 => Tensor::I8(a.mapv(|v| v as i8)),
            DType::U64 => Tensor::U64(a.mapv(|v| v as u64)),
            DType::U32 => Tensor::U32(a.mapv(|v| v as u32)),
            DType::U16 => Tensor::U16(a.mapv(|v| v as u16)),
            DType::U8 => Tensor::U8(a.mapv(|v| v as u8)),
            DType::Bool => Tensor::Bool(a.mapv(|v| v != 0)),
            DType::F32 => Tensor::F32(a.mapv(|v| v as f32)),
            DType::F64 => Tensor::F64(a.mapv(|v| v as f64)),
            DType::F16 => Tensor::F16(a.mapv(|v| f16::from_f64(v as f64))),
            DType::BF16 => Tensor::BF16(a.mapv(|v| bf16::from_f64(v as f64))),
            DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
                Tensor::from_codes(dt, a.mapv(|v| minifloat::int_code(dt, v))).unwrap_or_else(|| unreachable_dtype())
            }
            _ => Tensor::F64(a.mapv(|v| v as f64)).cast_float(dt, true, RoundMode::Up),
        }
    }

    /// Float values (of a float tensor) to the float dtype `to`: rounding to nearest even,
    /// and for the 8- and 4-bit floats saturating as `saturate` says.
    pub fn cast_float(&self, to: DType, saturate: bool, round: RoundMode) -> Tensor {
        if self.dtype() == to {
            return self.clone();
        }
        match to {
            DType::F64 => Tensor::F64(self.to_f64()),
            DType::F32 => Tensor::F32(self.to_f32()),
            DType::F16 => match self {
                Tensor::F64(a) => Tensor::F16(a.mapv(f16::from_f64)),
                other => Tensor::F16(other.to_f32().mapv(f16::from_f32)),
            },
            DType::BF16 => match self {
                Tensor::F64(a) => Tensor::BF16(a.mapv(bf16::from_f64)),
                other => Tensor::BF16(other.to_f32().mapv(bf16::from_f32)),
            },
            dt => match dt.mini() {
                Some(f) => {
                    let codes = self.to_f32().mapv(|v| f.encode(v, saturate, round));
                    Tensor::from_codes(dt, codes).unwrap_or_else(|| unreachable_dtype())
                }
                None => self.cast(dt),
            },
        }
    }

    /// The values as a flat list of i64 (for shape-like tensors).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        self.to_i64().iter().copied().collect()
    }

    /// `cast`, taking the tensor: no copy when it already has that dtype.
    pub fn into_dtype(self, to: DType) -> Tensor {
        if self.dtype() == to { self } else { self.cast(to) }
    }

    /// Converts to another dtype (floats to integers round to nearest and saturate).
    pub fn cast(&self, to: DType) -> Tensor {
        if self.dtype() == to {
            return self.clone();
        }
        if to.is_any_float() {
            return self.cast_float(to, true, RoundMode::Up);
        }
        if to == DType::Bool {
            return Tensor::Bool(self.to_f64().mapv(|v| v != 0.0));
        }
        // between the 64-bit integers exactly (saturating), not through f64
        match (self, to) {
            (Tensor::U64(a), DType::I64) => return Tensor::I64(a.mapv(|v| v.min(i64::MAX as u64) as i64)),
            (Tensor::I64(a), DType::U64) => return Tensor::U64(a.mapv(|v| v.max(0) as u64)),
            _ => {}
        }
        let (lo, hi) = to.int_range().unwrap_or((0, 0));
        let (lo, hi) = (lo as f64, hi as f64);
        let v = self.to_f64().mapv(|v| v.round().clamp(lo, hi));
        match to {
            DType::U64 => Tensor::U64(v.mapv(|v| v as u64)),
            _ => Tensor::wrap_i64(v.mapv(|v| v as i64), to),
        }
    }

    /// Little-endian bytes of the elements in row-major order.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn collect<T: Copy, const N: usize>(a: &ArrayD<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(a.len() * N);
            for &v in a.iter() {
                out.extend_from_slice(&f(v));
            }
            out
        }
        match self {
            Tensor::F32(a) => collect(a, f32::to_le_bytes),
            Tensor::F16(a) => collect(a, |v: f16| v.to_bits().to_le_bytes()),
            Tensor::I8(a) => collect(a, i8::to_le_bytes),
            Tensor::U8(a) => collect(a, |v: u8| [v]),
            Tensor::I32(a) => collect(a, i32::to_le_bytes),
            Tensor::I64(a) => collect(a, i64::to_le_bytes),
            Tensor::F64(a) => collect(a, f64::to_le_bytes),
            Tensor::Bool(a) => collect(a, |v: bool| [u8::from(v)]),
            Tensor::I16(a) => collect(a, i16::to_le_bytes),
            Tensor::U16(a) => collect(a, u16::to_le_bytes),
            Tensor::U32(a) => collect(a, u32::to_le_bytes),
            Tensor::U64(a) => collect(a, u64::to_le_bytes),
            Tensor::BF16(a) => collect(a, |v: bf16| v.to_bits().to_le_bytes()),
            other => other.codes().unwrap_or_default().iter().copied().collect(),
        }
    }

    /// A tensor from little-endian bytes; the byte count must match the shape exactly.
    pub fn from_le_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        let want = n
            .checked_mul(dtype.size_of())
            .ok_or_else(|| CoreError::Tensor(format!("shape {shape:?} is too large")))?;
        if bytes.len() != want {
            return Err(CoreError::Tensor(format!(
                "{dtype} tensor of shape {shape:?} needs {want} bytes, got {}",
                bytes.len()
            )));
        }
        fn chunks<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|c| {
                    let mut b = [0u8; N];
                    b.copy_from_slice(c);
                    f(b)
                })
                .collect()
        }
        Ok(match dtype {
            DType::F32 => Tensor::F32(array_from(shape, chunks(bytes, f32::from_le_bytes))?),
            DType::F16 => Tensor::F16(array_from(
                shape,
                chunks(bytes, |b| f16::from_bits(u16::from_le_bytes(b))),
            )?),
            DType::I8 => Tensor::I8(array_from(shape, chunks(bytes, i8::from_le_bytes))?),
            DType::U8 => Tensor::U8(array_from(shape, bytes.to_vec())?),
            DType::I32 => Tensor::I32(array_from(shape, chunks(bytes, i32::from_le_bytes))?),
            DType::I64 => Tensor::I64(array_from(shape, chunks(bytes, i64::from_le_bytes))?),
            DType::F64 => Tensor::F64(array_from(shape, chunks(bytes, f64::from_le_bytes))?),
            DType::Bool => {
                if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                    return Err(CoreError::Tensor(format!("bool byte {b} is neither 0 nor 1")));
                }
                Tensor::Bool(array_from(shape, bytes.iter().map(|&b| b != 0).collect())?)
            }
            DType::I16 => Tensor::I16(array_from(shape, chunks(bytes, i16::from_le_bytes))?),
            DType::U16 => Tensor::U16(array_from(shape, chunks(bytes, u16::from_le_bytes))?),
            DType::U32 => Tensor::U32(array_from(shape, chunks(bytes, u32::from_le_bytes))?),
            DType::U64 => Tensor::U64(array_from(shape, chunks(bytes, u64::from_le_bytes))?),
            DType::BF16 => Tensor::BF16(array_from(
                shape,
                chunks(bytes, |b| bf16::from_bits(u16::from_le_bytes(b))),
            )?),
            dt => {
                let mask = match dt {
                    DType::I4 | DType::U4 | DType::F4E2M1 => 0x0F,
                    DType::I2 | DType::U2 => 0x03,
                    _ => 0xFF,
                };
                if let Some(b) = bytes.iter().find(|&&b| b & !mask != 0) {
                    return Err(CoreError::Tensor(format!("byte {b:#04x} is not a {dt} value")));
                }
                Tensor::from_codes(dt, array_from(shape, bytes.to_vec())?).unwrap_or_else(|| unreachable_dtype())
            }
        })
    }

    /// Same data under a new shape with the same element count.
    pub fn reshaped(&self, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if n != self.len() {
            return Err(CoreError::Tensor(format!(
                "cannot reshape {:?} ({} elements) to {shape:?} ({n} elements)",
                self.shape(),
                self.len()
            )));
        }
        Ok(each_variant!(self, a => {
            let v: Vec<_> = a.iter().copied().collect();
            reshape_variant(a, shape, v)
        }))
    }
}

trait Wrap: Sized {
    fn wrap(a: ArrayD<Self>) -> Tensor;
}
macro_rules! impl_wrap {
    ($t:ty, $v:ident) => {
        impl Wrap for $t {
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$v(a)
            }
        }
    };
}
impl_wrap!(f32, F32);
impl_wrap!(f16, F16);
impl_wrap!(i8, I8);
impl_wrap!(u8, U8);
impl_wrap!(i32, I32);
impl_wrap!(i64, I64);
impl_wrap!(f64, F64);
impl_wrap!(bool, Bool);
impl_wrap!(i16, I16);
impl_wrap!(u16, U16);
impl_wrap!(u32, U32);
impl_wrap!(u64, U64);
impl_wrap!(bf16, BF16);
macro_rules! wrap_code {
    ($v:ident, $k:expr) => {
        impl_wrap!(Code<$k>, $v);
    };
}
code_variants!(wrap_code);

fn reshape_variant<T: Wrap>(_like: &ArrayD<T>, shape: &[usize], v: Vec<T>) -> Tensor {
    T::wrap(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap_or_else(|_| unreachable_shape()))
}

fn unreachable_dtype() -> ! {
    unreachable!("the dtype was matched as a code dtype")
}

fn unreachable_shape() -> ! {
    unreachable!("element count was checked before building the array")
}

/// An ndarray from a shape and row-major data, with a clear error when they disagree.
pub fn array_from<T>(shape: &[usize], data: Vec<T>) -> Result<ArrayD<T>> {
    let n = checked_numel(shape)?;
    if n != data.len() {
        return Err(CoreError::Tensor(format!(
            "shape {shape:?} needs {n} elements, got {}",
            data.len()
        )));
    }
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| CoreError::Tensor(e.to_string()))
}

impl From<ArrayD<f32>> for Tensor {
    fn from(a: ArrayD<f32>) -> Self {
        Tensor::F32(a)
    }
}

impl From<ArrayD<i64>> for Tensor {
    fn from(a: ArrayD<i64>) -> Self {
        Tensor::I64(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_every_dtype() {
        let t = Tensor::from_f32(&[2, 3], vec![0.5, -1.0, 2.0, 3.25, -7.0, 100.0]).unwrap();
        for dt in DType::ALL {
            let c = t.cast(dt);
            let back = Tensor::from_le_bytes(dt, c.shape(), &c.to_le_bytes()).unwrap();
            assert_eq!(back, c, "{dt}");
        }
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        assert!(Tensor::from_le_bytes(DType::F32, &[2, 2], &[0u8; 15]).is_err());
        assert!(Tensor::from_le_bytes(DType::F32, &[usize::MAX, 4], &[]).is_err());
    }

    #[test]
    fn cast_saturates() {
        let t = Tensor::from_f32(&[3], vec![300.0, -300.0, 1.5]).unwrap();
        assert_eq!(t.cast(DType::I8).to_i64_vec(), vec![127, -128, 2]);
        assert_eq!(t.cast(DType::U8).to_i64_vec(), vec![255, 0, 2]);
    }
}
