//! ONNX's 8- and 4-bit floats and 4- and 2-bit integers: their encodings, and conversion
//! from and to f32 as ONNX's Cast defines it (round to nearest even; with `saturate`, values
//! beyond the largest finite one, infinities included, become it).
//!
//! Tensors hold these types one element per byte, as [`Code`]s: the element's bit pattern
//! in the low bits.

use std::sync::OnceLock;

use crate::DType;

/// One element of a sub-16-bit ONNX type: its bit pattern. `K` tells the types apart
/// (see [`Code::dtype`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Code<const K: u8>(pub u8);

impl<const K: u8> Code<K> {
    pub fn dtype() -> DType {
        CODE_DTYPES[K as usize]
    }
}

/// The dtype of each `Code<K>`, by `K`.
pub const CODE_DTYPES: [DType; 10] = [
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

/// A small float format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    E4M3FN,
    E4M3FNUZ,
    E5M2,
    E5M2FNUZ,
    E8M0,
    E2M1,
}

/// How a cast to E8M0 rounds a value that is not a power of two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RoundMode {
    #[default]
    Up,
    Down,
    Nearest,
}

struct Table {
    /// (value, code) of every finite value >= 0, ascending.
    finite: Vec<(f64, u8)>,
    /// The value one step past the largest finite one (what rounding up out of range gives).
    beyond: f64,
}

impl Format {
    fn bits(self) -> (u32, u32, i32) {
        // (exponent bits, mantissa bits, bias)
        match self {
            Format::E4M3FN => (4, 3, 7),
            Format::E4M3FNUZ => (4, 3, 8),
            Format::E5M2 => (5, 2, 15),
            Format::E5M2FNUZ => (5, 2, 16),
            Format::E8M0 => (8, 0, 127),
            Format::E2M1 => (2, 1, 1),
        }
    }

    fn sign_bit(self) -> u8 {
        let (e, m, _) = self.bits();
        if self == Format::E8M0 { 0 } else { 1 << (e + m) }
    }

    /// The value of bit pattern `code`.
    pub fn decode(self, code: u8) -> f32 {
        let (e, m, bias) = self.bits();
        match self {
            Format::E8M0 => {
                return if code == 0xFF {
                    f32::NAN
                } else {
                    (2f64.powi(i32::from(code) - bias)) as f32
                };
            }
            Format::E4M3FN if code & 0x7F == 0x7F => return f32::NAN,
            Format::E4M3FNUZ | Format::E5M2FNUZ if code == 0x80 => return f32::NAN,
            _ => {}
        }
        let code = code & ((1u16 << (e + m + 1)) - 1) as u8;
        let negative = code & self.sign_bit() != 0;
        let exp = i32::from((code >> m) & ((1 << e) - 1) as u8);
        let man = f64::from(code & ((1 << m) - 1) as u8);
        if self == Format::E5M2 && exp == 31 {
            let v = if man == 0.0 { f32::INFINITY } else { f32::NAN };
            return if negative { -v } else { v };
        }
        let scale = f64::from(1u32 << m);
        let v = if exp == 0 {
            man / scale * 2f64.powi(1 - bias)
        } else {
            (1.0 + man / scale) * 2f64.powi(exp - bias)
        };
        (if negative { -v } else { v }) as f32
    }

    fn table(self) -> &'static Table {
        static TABLES: [OnceLock<Table>; 6] = [const { OnceLock::new() }; 6];
        let i = self as usize;
        TABLES[i].get_or_init(|| {
            let (e, m, bias) = self.bits();
            let mut finite = Vec::new();
            for code in 0..self.sign_bit().max(1) as u16 {
                let v = self.decode(code as u8);
                if v.is_finite() {
                    finite.push((f64::from(v), code as u8));
                }
            }
            let &(max, max_code) = finite.last().unwrap_or(&(0.0, 0));
            let exp = i32::from((max_code >> m) & ((1 << e) - 1) as u8);
            let beyond = max + 2f64.powi(exp - bias - m as i32);
            Table { finite, beyond }
        })
    }

    /// The largest finite value.
    pub fn max(self) -> f32 {
        self.table().finite.last().map_or(0.0, |v| v.0 as f32)
    }

    fn nan(self) -> u8 {
        match self {
            Format::E4M3FN | Format::E5M2 => 0x7F,
            Format::E4M3FNUZ | Format::E5M2FNUZ => 0x80,
            Format::E8M0 => 0xFF,
            // no NaN: ONNX's reference gives negative zero
            Format::E2M1 => 0x08,
        }
    }

    /// `x` as this format, rounding to nearest even (E8M0: as `round`).
    pub fn encode(self, x: f32, saturate: bool, round: RoundMode) -> u8 {
        if self == Format::E8M0 {
            return encode_e8m0(x, saturate, round);
        }
        if x.is_nan() {
            return self.nan();
        }
        let t = self.table();
        let sign = if x.is_sign_negative() { self.sign_bit() } else { 0 };
        let a = f64::from(x.abs());
        let overflow = || -> u8 {
            if saturate || self == Format::E2M1 {
                t.finite.last().map_or(0, |v| v.1) | sign
            } else if self == Format::E5M2 {
                0x7C | sign
            } else {
                self.nan()
            }
        };
        if a.is_infinite() {
            return overflow();
        }
        let i = t.finite.partition_point(|&(v, _)| v <= a);
        // t.finite[i - 1] <= a < t.finite[i] (or beyond)
        let (lo, lo_code) = t.finite[i.saturating_sub(1)];
        let code = if lo == a {
            lo_code
        } else {
            let (hi, hi_code, past) = match t.finite.get(i) {
                Some(&(v, c)) => (v, c, false),
                None => (t.beyond, lo_code.wrapping_add(1), true),
            };
            let up = a - lo > hi - a || (a - lo == hi - a && hi_code & 1 == 0);
            if !up {
                lo_code
            } else if past {
                return overflow();
            } else {
                hi_code
            }
        };
        if code == 0 && matches!(self, Format::E4M3FNUZ | Format::E5M2FNUZ) {
            0
        } else {
            code | sign
        }
    }
}

fn encode_e8m0(x: f32, saturate: bool, round: RoundMode) -> u8 {
    let bits = x.to_bits();
    let exp = ((bits >> 23) & 0xFF) as u16;
    if exp == 0xFF {
        return 0xFF;
    }
    let up = match round {
        RoundMode::Down => false,
        RoundMode::Up => bits & 0x7F_FFFF != 0,
        RoundMode::Nearest => {
            let g = bits & 0x40_0000 != 0;
            let r = bits & 0x20_0000 != 0;
            let s = bits & 0x1F_FFFF != 0;
            g && (r || s || exp > 0)
        }
    };
    let up = up && !(saturate && exp == 0xFE);
    (exp + u16::from(up)) as u8
}

/// The value of a sub-byte integer's bit pattern.
pub fn int_value(dtype: DType, code: u8) -> i64 {
    match dtype {
        DType::I4 => i64::from(((code << 4) as i8) >> 4),
        DType::I2 => i64::from(((code << 6) as i8) >> 6),
        DType::U4 => i64::from(code & 0xF),
        _ => i64::from(code & 0x3),
    }
}

/// A sub-byte integer's bit pattern for `v`, wrapping.
pub fn int_code(dtype: DType, v: i64) -> u8 {
    match dtype {
        DType::I4 | DType::U4 => (v & 0xF) as u8,
        _ => (v & 0x3) as u8,
    }
}

/// The value of `code` of the code dtype `dtype`, as f32.
pub fn code_to_f32(dtype: DType, code: u8) -> f32 {
    match dtype.mini() {
        Some(f) => f.decode(code),
        None => int_value(dtype, code) as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(Format::E4M3FN.max(), 448.0);
        assert_eq!(Format::E4M3FNUZ.max(), 240.0);
        assert_eq!(Format::E5M2.max(), 57344.0);
        assert_eq!(Format::E5M2FNUZ.max(), 57344.0);
        assert_eq!(Format::E2M1.max(), 6.0);
        assert_eq!(Format::E4M3FN.decode(0x01), 2f32.powi(-9));
        assert!(Format::E4M3FN.decode(0xFF).is_nan());
        assert_eq!(Format::E5M2.decode(0x7C), f32::INFINITY);
        assert_eq!(Format::E8M0.decode(127), 1.0);
    }

    #[test]
    fn rounding_and_overflow() {
        let e = |f: Format, x: f32, sat: bool| f.decode(f.encode(x, sat, RoundMode::Up));
        assert_eq!(e(Format::E4M3FN, 0.48, true), 0.46875);
        assert_eq!(e(Format::E4M3FN, 1e6, true), 448.0);
        assert!(e(Format::E4M3FN, 1e6, false).is_nan());
        assert_eq!(e(Format::E4M3FN, -f32::INFINITY, true), -448.0);
        assert_eq!(e(Format::E5M2, 1e6, false), f32::INFINITY);
        assert_eq!(e(Format::E2M1, 9.0, false), 6.0);
        assert_eq!(e(Format::E2M1, 0.25, true), 0.0, "a tie rounds to the even code");
        assert_eq!(
            Format::E4M3FNUZ.encode(-1e-9, true, RoundMode::Up),
            0,
            "no negative zero"
        );
        for f in [
            Format::E4M3FN,
            Format::E4M3FNUZ,
            Format::E5M2,
            Format::E5M2FNUZ,
            Format::E2M1,
        ] {
            for code in 0..=255u8 {
                let v = f.decode(code);
                if v.is_finite() && (f != Format::E2M1 || code < 16) && !(v == 0.0 && code != 0) {
                    assert_eq!(f.encode(v, false, RoundMode::Up), code, "{f:?} {code:#x}");
                }
            }
        }
    }

    #[test]
    fn sub_byte_integers_wrap() {
        assert_eq!(int_value(DType::I4, int_code(DType::I4, 8)), -8);
        assert_eq!(int_value(DType::I4, int_code(DType::I4, -9)), 7);
        assert_eq!(int_value(DType::U2, int_code(DType::U2, 5)), 1);
    }
}
