//! Dense tensors on ndarray, one variant per dtype.

use half::f16;
use ndarray::{ArrayD, IxDyn};

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
}

macro_rules! each_variant {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            Tensor::F32($a) => $body,
            Tensor::F16($a) => $body,
            Tensor::I8($a) => $body,
            Tensor::U8($a) => $body,
            Tensor::I32($a) => $body,
            Tensor::I64($a) => $body,
        }
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
        }
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
        match to {
            DType::F32 => Tensor::F32(self.to_f32()),
            DType::F16 => Tensor::F16(self.to_f32().mapv(f16::from_f32)),
            DType::I64 => Tensor::I64(self.to_i64()),
            DType::I32 => Tensor::I32(
                self.to_f64_like()
                    .mapv(|v| v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32),
            ),
            DType::I8 => Tensor::I8(self.to_f64_like().mapv(|v| v.round().clamp(-128.0, 127.0) as i8)),
            DType::U8 => Tensor::U8(self.to_f64_like().mapv(|v| v.round().clamp(0.0, 255.0) as u8)),
        }
    }

    fn to_f64_like(&self) -> ArrayD<f64> {
        match self {
            Tensor::I64(a) => a.mapv(|v| v as f64),
            Tensor::I32(a) => a.mapv(f64::from),
            other => other.to_f32().mapv(f64::from),
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

fn reshape_variant<T: Wrap>(_like: &ArrayD<T>, shape: &[usize], v: Vec<T>) -> Tensor {
    T::wrap(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap_or_else(|_| unreachable_shape()))
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
        for dt in [DType::F32, DType::F16, DType::I8, DType::U8, DType::I32, DType::I64] {
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
