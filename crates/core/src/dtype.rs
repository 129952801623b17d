//! Element types a weft tensor can hold.
//!
//! weft computes in three of them (f32, f16 and the 8-bit integers of its quantized graphs,
//! with int32/int64 for shapes and accumulators). The rest are ONNX's other element types,
//! which the reference executor holds and moves exactly, casts between, quantizes to and
//! dequantizes from, and (the wider integers) does exact integer arithmetic on.

use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    F16,
    I8,
    U8,
    I32,
    I64,
    F64,
    Bool,
    I16,
    U16,
    U32,
    U64,
    BF16,
    /// 8-bit float E4M3, finite only (one NaN pattern per sign), bias 7.
    F8E4M3FN,
    /// 8-bit float E4M3, finite only, no negative zero (0x80 is NaN), bias 8.
    F8E4M3FNUZ,
    /// 8-bit float E5M2 with infinities and NaNs (IEEE-like), bias 15.
    F8E5M2,
    /// 8-bit float E5M2, finite only, no negative zero, bias 16.
    F8E5M2FNUZ,
    /// 8-bit power of two (exponent only, bias 127; 0xFF is NaN).
    F8E8M0,
    /// 4-bit float E2M1, finite only, bias 1 (held one per byte).
    F4E2M1,
    /// 4-bit and 2-bit integers (held one per byte; ONNX packs them two and four to a byte).
    I4,
    U4,
    I2,
    U2,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 23] = [
        DType::F32,
        DType::F16,
        DType::I8,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::F64,
        DType::Bool,
        DType::I16,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::F8E8M0,
        DType::F4E2M1,
        DType::I4,
        DType::U4,
        DType::I2,
        DType::U2,
    ];

    /// Size of one element in bytes, as weft holds it (sub-byte types take a byte each).
    pub fn size_of(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            _ => 1,
        }
    }

    /// Lower-case name as used in messages and in `.npy` descriptions.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F64 => "float64",
            DType::Bool => "bool",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::BF16 => "bfloat16",
            DType::F8E4M3FN => "float8e4m3fn",
            DType::F8E4M3FNUZ => "float8e4m3fnuz",
            DType::F8E5M2 => "float8e5m2",
            DType::F8E5M2FNUZ => "float8e5m2fnuz",
            DType::F8E8M0 => "float8e8m0",
            DType::F4E2M1 => "float4e2m1",
            DType::I4 => "int4",
            DType::U4 => "uint4",
            DType::I2 => "int2",
            DType::U2 => "uint2",
        }
    }

    /// The float types weft computes in (f32, and f16 stored, computed in f32).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }

    /// The integer types with exact element-wise arithmetic in the reference executor.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32 | DType::U32 | DType::I64 | DType::U64
        )
    }

    /// Every floating-point type, including the ones weft only stores and casts.
    pub fn is_any_float(self) -> bool {
        self.is_float() || self.mini().is_some() || matches!(self, DType::F64 | DType::BF16)
    }

    /// Types the reference executor holds, moves, casts and (de)quantizes but computes
    /// nothing else on.
    pub fn is_storage_only(self) -> bool {
        !self.is_float() && !self.is_integer()
    }

    /// The 8- and 4-bit float format of this dtype.
    pub fn mini(self) -> Option<crate::minifloat::Format> {
        use crate::minifloat::Format;
        Some(match self {
            DType::F8E4M3FN => Format::E4M3FN,
            DType::F8E4M3FNUZ => Format::E4M3FNUZ,
            DType::F8E5M2 => Format::E5M2,
            DType::F8E5M2FNUZ => Format::E5M2FNUZ,
            DType::F8E8M0 => Format::E8M0,
            DType::F4E2M1 => Format::E2M1,
            _ => return None,
        })
    }

    /// (min, max) of an integer dtype.
    pub fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            DType::I8 => (-128, 127),
            DType::U8 => (0, 255),
            DType::I16 => (i16::MIN.into(), i16::MAX.into()),
            DType::U16 => (0, u16::MAX.into()),
            DType::I32 => (i32::MIN.into(), i32::MAX.into()),
            DType::U32 => (0, u32::MAX.into()),
            DType::I64 => (i64::MIN.into(), i64::MAX.into()),
            DType::U64 => (0, u64::MAX.into()),
            DType::I4 => (-8, 7),
            DType::U4 => (0, 15),
            DType::I2 => (-2, 1),
            DType::U2 => (0, 3),
            DType::Bool => (0, 1),
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
