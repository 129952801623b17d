//! OCP Microscaling (MX v1.0) block formats: the one definition of their arithmetic in weft.
//!
//! A block is up to [`BLOCK`] consecutive values along one axis (the last block of a line may
//! be shorter) sharing one E8M0 scale `X = 2^e`, `e` in `-127..=127` (code `e + 127`; code
//! 255 is NaN). Each value is stored as an element `P` of the block's element format and
//! means `X * P`.
//!
//! Conversion of a block (the spec's algorithm, made exact):
//! - a block holding a NaN or an infinity gets the NaN scale: every value decodes to NaN;
//! - otherwise `e = floor(log2(amax)) - emax_elem`, clamped to `-127..=127`, where `amax` is
//!   the largest magnitude (a zero block takes `e = -127`) and `emax_elem` the exponent of
//!   the element format's largest normal number (0 for MXINT8);
//! - each element is `V / X` rounded to the element format with round-to-nearest, ties to
//!   even, from the exact value (no intermediate rounding), saturating to the largest normal
//!   magnitude; the sign of zero is kept.
//!
//! MXINT8 elements are two's-complement integers `i` meaning `i / 64`, restricted to
//! `-127..=127` (the symmetric range; code -128 is never produced).
//!
//! Dot products of two MX blocks (see [`block_dot`]): every element format is an integer
//! multiple of its smallest step (`2^(emin - mbits)`), so a block's products are summed
//! exactly as integers and the sum is scaled by the two shared exponents once. Across blocks
//! the scaled partial sums are added in f32, in block order. For MXFP8 E5M2 the integer
//! products can pass 64 bits, so its blocks are summed in f32 products, in element order.
//! A layer's order of blocks is stated where the layer is (`weft_reference::mx`).

/// Elements per block.
pub const BLOCK: usize = 32;

/// E8M0 code of the NaN scale.
pub const SCALE_NAN: u8 = 0xff;

/// An MX element format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MxFormat {
    Int8,
    Fp8E4M3,
    Fp8E5M2,
    Fp6E3M2,
    Fp6E2M3,
    Fp4E2M1,
}

impl MxFormat {
    pub const ALL: [MxFormat; 6] = [
        MxFormat::Int8,
        MxFormat::Fp8E4M3,
        MxFormat::Fp8E5M2,
        MxFormat::Fp6E3M2,
        MxFormat::Fp6E2M3,
        MxFormat::Fp4E2M1,
    ];

    /// The format's name as weft's flags and packages spell it.
    pub fn name(self) -> &'static str {
        match self {
            MxFormat::Int8 => "mxint8",
            MxFormat::Fp8E4M3 => "mxfp8_e4m3",
            MxFormat::Fp8E5M2 => "mxfp8_e5m2",
            MxFormat::Fp6E3M2 => "mxfp6_e3m2",
            MxFormat::Fp6E2M3 => "mxfp6_e2m3",
            MxFormat::Fp4E2M1 => "mxfp4_e2m1",
        }
    }

    /// Parses a format name: the names of [`MxFormat::name`], with `-` for `_`, and the
    /// short forms `mxfp8` (E4M3), `mxfp6` (E2M3) and `mxfp4`.
    pub fn parse(s: &str) -> Option<MxFormat> {
        let s = s.to_ascii_lowercase().replace('-', "_");
        Some(match s.as_str() {
            "mxint8" => MxFormat::Int8,
            "mxfp8" | "mxfp8_e4m3" => MxFormat::Fp8E4M3,
            "mxfp8_e5m2" => MxFormat::Fp8E5M2,
            "mxfp6_e3m2" => MxFormat::Fp6E3M2,
            "mxfp6" | "mxfp6_e2m3" => MxFormat::Fp6E2M3,
            "mxfp4" | "mxfp4_e2m1" => MxFormat::Fp4E2M1,
            _ => return None,
        })
    }

    /// Bits of one element.
    pub fn bits(self) -> u32 {
        match self {
            MxFormat::Int8 | MxFormat::Fp8E4M3 | MxFormat::Fp8E5M2 => 8,
            MxFormat::Fp6E3M2 | MxFormat::Fp6E2M3 => 6,
            MxFormat::Fp4E2M1 => 4,
        }
    }

    /// Exponent bits (0 for MXINT8).
    fn ebits(self) -> i32 {
        match self {
            MxFormat::Int8 => 0,
            MxFormat::Fp8E4M3 => 4,
            MxFormat::Fp8E5M2 => 5,
            MxFormat::Fp6E3M2 => 3,
            MxFormat::Fp6E2M3 | MxFormat::Fp4E2M1 => 2,
        }
    }

    /// Mantissa (fraction) bits; MXINT8 counts as 6 fraction bits below a fixed exponent 0.
    pub fn mbits(self) -> i32 {
        match self {
            MxFormat::Int8 => 6,
            MxFormat::Fp8E4M3 => 3,
            MxFormat::Fp8E5M2 | MxFormat::Fp6E3M2 => 2,
            MxFormat::Fp6E2M3 => 3,
            MxFormat::Fp4E2M1 => 1,
        }
    }

    fn bias(self) -> i32 {
        match self {
            MxFormat::Int8 => 0,
            _ => (1 << (self.ebits() - 1)) - 1,
        }
    }

    /// Exponent of the smallest normal number (the step below it is that of subnormals).
    pub fn emin(self) -> i32 {
        match self {
            MxFormat::Int8 => 0,
            _ => 1 - self.bias(),
        }
    }

    /// Exponent of the largest normal number (`emax_elem` in the spec).
    pub fn emax(self) -> i32 {
        match self {
            MxFormat::Int8 => 0,
            MxFormat::Fp8E4M3 => 8,
            MxFormat::Fp8E5M2 => 15,
            MxFormat::Fp6E3M2 => 4,
            MxFormat::Fp6E2M3 | MxFormat::Fp4E2M1 => 2,
        }
    }

    /// Exponent of the smallest step: every element is an integer multiple of `2^quantum`.
    pub fn quantum(self) -> i32 {
        self.emin() - self.mbits()
    }

    /// The largest magnitude, as an integer multiple of `2^quantum`.
    pub fn max_steps(self) -> i64 {
        match self {
            MxFormat::Int8 => 127,
            // E4M3 gives up its top mantissa code to NaN: 1.75 * 2^8.
            MxFormat::Fp8E4M3 => 7 << (self.emax() - self.quantum() - 2),
            _ => ((1i64 << (self.mbits() + 1)) - 1) << (self.emax() - self.emin()),
        }
    }

    /// The largest magnitude.
    pub fn max_normal(self) -> f64 {
        self.max_steps() as f64 * 2f64.powi(self.quantum())
    }

    /// Whether the products of two blocks are summed as exact integers (see [`block_dot`]).
    pub fn exact_dot(self) -> bool {
        self != MxFormat::Fp8E5M2
    }
}

impl std::fmt::Display for MxFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `floor(log2(|v|))` of a finite non-zero f32, exactly (subnormals included).
fn floor_log2(v: f32) -> i32 {
    let bits = v.to_bits() & 0x7fff_ffff;
    let exp = (bits >> 23) as i32;
    if exp == 0 {
        // subnormal: value = mantissa * 2^-149
        (31 - bits.leading_zeros() as i32) - 149
    } else {
        exp - 127
    }
}

/// A finite f32 as `(negative, m, q)` with `|v| = m * 2^q` exactly.
fn decompose(v: f32) -> (bool, i64, i32) {
    let bits = v.to_bits();
    let neg = bits >> 31 == 1;
    let exp = ((bits >> 23) & 0xff) as i32;
    let frac = i64::from(bits & 0x7f_ffff);
    if exp == 0 {
        (neg, frac, -149)
    } else {
        (neg, frac | (1 << 23), exp - 150)
    }
}

/// Rounds `m * 2^shift` (`m >= 0`) to an integer, ties to even.
fn round_shift(m: i64, shift: i32) -> i64 {
    if shift >= 0 {
        return m << shift.min(62);
    }
    let s = -shift;
    if s > 62 {
        return 0;
    }
    let q = m >> s;
    let rem = m - (q << s);
    let half = 1i64 << (s - 1);
    if rem > half || (rem == half && q & 1 == 1) {
        q + 1
    } else {
        q
    }
}

/// The shared exponent of a block of finite values.
fn shared_exponent(format: MxFormat, values: &[f32]) -> i32 {
    let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        return -127;
    }
    (floor_log2(amax) - format.emax()).clamp(-127, 127)
}

/// One value divided by `2^e` and rounded to the element format: `(negative, steps)` with
/// magnitude `steps * 2^quantum`.
fn quantize_value(format: MxFormat, v: f32, e: i32) -> (bool, i64) {
    let (neg, m, q) = decompose(v);
    if m == 0 {
        return (neg, 0);
    }
    // |v| / 2^e = m * 2^(q - e); its exponent, and the step there.
    let lg = floor_log2(v) - e;
    let step = lg.max(format.emin()) - format.mbits();
    let n = round_shift(m, q - e - step);
    // Back to units of the smallest step (step >= quantum always).
    let steps = n << (step - format.quantum()).clamp(0, 62);
    (neg, steps.min(format.max_steps()))
}

/// Encodes `(negative, steps)` as the element's bit pattern (in the low `bits()` bits).
fn encode(format: MxFormat, neg: bool, steps: i64) -> u8 {
    if format == MxFormat::Int8 {
        let i = if neg { -steps } else { steps };
        return (i as i8) as u8;
    }
    let mb = format.mbits();
    let sign = u8::from(neg) << (format.bits() - 1);
    // Subnormals and the first normal binade share the step 2^quantum.
    let field = if steps < (1 << (mb + 1)) {
        steps as u8 // exponent field 0 (subnormal) or 1 (implicit bit set)
    } else {
        let top = 63 - steps.leading_zeros() as i32; // position of the leading bit
        let exp_field = top - mb + 1;
        let mant = (steps >> (top - mb)) & ((1 << mb) - 1);
        ((exp_field as u8) << mb) | mant as u8
    };
    sign | field
}

/// Decodes an element's bit pattern to `(negative, steps)`, or `None` for NaN/Inf codes.
pub fn decode_steps(format: MxFormat, code: u8) -> Option<(bool, i64)> {
    if format == MxFormat::Int8 {
        let i = i64::from(code as i8);
        return Some((i < 0, i.abs()));
    }
    let mb = format.mbits();
    let bits = format.bits();
    let code = code & ((1u16 << bits) - 1) as u8;
    let neg = code >> (bits - 1) == 1;
    let exp_field = i32::from((code >> mb) & ((1 << format.ebits()) - 1) as u8);
    let mant = i64::from(code & ((1 << mb) - 1) as u8);
    let all_ones = (1 << format.ebits()) - 1;
    match format {
        MxFormat::Fp8E4M3 if exp_field == all_ones && mant == (1 << mb) - 1 => return None,
        MxFormat::Fp8E5M2 if exp_field == all_ones => return None,
        _ => {}
    }
    let steps = if exp_field == 0 {
        mant
    } else {
        (mant | (1 << mb)) << (exp_field - 1)
    };
    Some((neg, steps))
}

/// An element's value (NaN for NaN codes, and for E5M2's infinities their value).
pub fn decode(format: MxFormat, code: u8) -> f64 {
    match decode_steps(format, code) {
        Some((neg, steps)) => {
            let v = steps as f64 * 2f64.powi(format.quantum());
            if neg { -v } else { v }
        }
        None if format == MxFormat::Fp8E5M2 && code & 0x03 == 0 => {
            if code & 0x80 != 0 {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        }
        None => f64::NAN,
    }
}

/// The E8M0 scale code of shared exponent `e`.
pub fn scale_code(e: i32) -> u8 {
    (e + 127) as u8
}

/// The shared exponent of an E8M0 code, or `None` for NaN.
pub fn scale_exponent(code: u8) -> Option<i32> {
    (code != SCALE_NAN).then_some(i32::from(code) - 127)
}

/// Converts one block (at most [`BLOCK`] values, not checked) into element codes; returns
/// the E8M0 scale code.
pub fn quantize_block(format: MxFormat, values: &[f32], codes: &mut [u8]) -> u8 {
    if values.iter().any(|v| !v.is_finite()) {
        codes.iter_mut().for_each(|c| *c = 0);
        return SCALE_NAN;
    }
    let e = shared_exponent(format, values);
    for (v, c) in values.iter().zip(codes.iter_mut()) {
        let (neg, steps) = quantize_value(format, *v, e);
        *c = encode(format, neg, steps);
    }
    scale_code(e)
}

/// Converts one block (at most [`BLOCK`] values) straight to signed step counts (the
/// element values in units of `2^quantum`, as [`signed_steps`] would decode the codes of
/// [`quantize_block`]); returns the shared exponent, or `None` for the NaN scale (steps 0).
pub fn quantize_block_steps(format: MxFormat, values: &[f32], steps: &mut [i64]) -> Option<i32> {
    if values.iter().any(|v| !v.is_finite()) {
        steps.iter_mut().for_each(|s| *s = 0);
        return None;
    }
    let e = shared_exponent(format, values);
    for (v, s) in values.iter().zip(steps.iter_mut()) {
        let (neg, m) = quantize_value(format, *v, e);
        *s = if neg { -m } else { m };
    }
    Some(e)
}

/// `X * P` as f32 (rounded once, ties to even, from the exact value).
pub fn dequantize(format: MxFormat, scale: u8, code: u8) -> f32 {
    match scale_exponent(scale) {
        None => f32::NAN,
        Some(e) => (decode(format, code) * 2f64.powi(e)) as f32,
    }
}

/// Blocks of a tensor along one axis: `scales` holds one code per block, row-major in the
/// tensor's shape with the axis's length replaced by its number of blocks; `codes` one
/// element code per value, in the tensor's own order.
#[derive(Clone, Debug, PartialEq)]
pub struct MxTensor {
    pub format: MxFormat,
    pub shape: Vec<usize>,
    pub axis: usize,
    pub scales: Vec<u8>,
    pub codes: Vec<u8>,
}

/// Number of blocks along an axis of length `n`.
pub fn blocks_along(n: usize) -> usize {
    n.div_ceil(BLOCK)
}

impl MxTensor {
    /// Converts row-major `data` of `shape` with blocks along `axis` (`axis < shape.len()`
    /// and `data.len() == product(shape)`, not checked).
    pub fn quantize(format: MxFormat, shape: &[usize], axis: usize, data: &[f32]) -> MxTensor {
        let n = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let outer: usize = shape[..axis].iter().product();
        let nb = blocks_along(n);
        let mut scales = vec![0u8; outer * inner * nb];
        let mut codes = vec![0u8; data.len()];
        let mut vals = [0f32; BLOCK];
        let mut out = [0u8; BLOCK];
        for o in 0..outer {
            for i in 0..inner {
                for b in 0..nb {
                    let lo = b * BLOCK;
                    let len = BLOCK.min(n - lo);
                    let at = |k: usize| (o * n + lo + k) * inner + i;
                    for (k, v) in vals[..len].iter_mut().enumerate() {
                        *v = data[at(k)];
                    }
                    scales[(o * nb + b) * inner + i] = quantize_block(format, &vals[..len], &mut out[..len]);
                    for (k, c) in out[..len].iter().enumerate() {
                        codes[at(k)] = *c;
                    }
                }
            }
        }
        MxTensor {
            format,
            shape: shape.to_vec(),
            axis,
            scales,
            codes,
        }
    }

    /// The shape of `scales`.
    pub fn scales_shape(&self) -> Vec<usize> {
        let mut s = self.shape.clone();
        s[self.axis] = blocks_along(s[self.axis]);
        s
    }

    /// The values the blocks stand for, in the tensor's order.
    pub fn dequantize(&self) -> Vec<f32> {
        let n = self.shape[self.axis];
        let inner: usize = self.shape[self.axis + 1..].iter().product();
        let nb = blocks_along(n);
        (0..self.codes.len())
            .map(|idx| {
                let i = idx % inner;
                let k = (idx / inner) % n;
                let o = idx / inner / n;
                let s = self.scales[(o * nb + k / BLOCK) * inner + i];
                dequantize(self.format, s, self.codes[idx])
            })
            .collect()
    }
}

/// Converts and converts back (`MxTensor::quantize` then `dequantize`).
pub fn fake_quantize(format: MxFormat, shape: &[usize], axis: usize, data: &[f32]) -> Vec<f32> {
    MxTensor::quantize(format, shape, axis, data).dequantize()
}

/// An element code as a signed number of steps (`value = steps * 2^quantum`), or `None` for
/// NaN/Inf codes.
pub fn signed_steps(format: MxFormat, code: u8) -> Option<i64> {
    decode_steps(format, code).map(|(neg, m)| if neg { -m } else { m })
}

/// Exact integer sum of products (the block sum of formats with [`MxFormat::exact_dot`]).
pub fn dot_exact(a: &[i64], b: &[i64]) -> i64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Sum of products in f32, in element order (each product is exact; the sums round).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in a.iter().zip(b) {
        acc += x * y;
    }
    acc
}

/// A block sum scaled by `2^exp`: computed in f64 (exact) and rounded to f32 once.
pub fn scale_sum(sum: f32, exp: i32) -> f32 {
    (f64::from(sum) * pow2(exp)) as f32
}

/// `2^e` as f64 (exact for the exponents MX layers produce).
#[inline]
pub fn pow2(e: i32) -> f64 {
    if (-1022..=1023).contains(&e) {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        2f64.powi(e)
    }
}

/// The dot product of two blocks of equal length (codes `a` in format `fa` with scale `sa`,
/// `b` likewise). When both formats sum exactly ([`MxFormat::exact_dot`]), the element
/// products are summed as integers (in units of `2^(quantum_a + quantum_b)`), the sum is
/// converted to f32 once (ties to even) and scaled by `2^(ea + eb + quantum_a + quantum_b)`
/// ([`scale_sum`]). Otherwise the step counts are taken as f32 (exact: no element has more
/// than 7 significant bits), multiplied and added in element order in f32 ([`dot_f32`]),
/// then scaled the same way. A NaN scale or a NaN/Inf element gives NaN.
pub fn block_dot(fa: MxFormat, sa: u8, a: &[u8], fb: MxFormat, sb: u8, b: &[u8]) -> f32 {
    let (Some(ea), Some(eb)) = (scale_exponent(sa), scale_exponent(sb)) else {
        return f32::NAN;
    };
    let steps = |f: MxFormat, codes: &[u8]| -> Option<Vec<i64>> { codes.iter().map(|c| signed_steps(f, *c)).collect() };
    let (Some(xa), Some(xb)) = (steps(fa, a), steps(fb, b)) else {
        return f32::NAN;
    };
    let exp = ea + eb + fa.quantum() + fb.quantum();
    let sum = if fa.exact_dot() && fb.exact_dot() {
        dot_exact(&xa, &xb) as f32
    } else {
        let fa32: Vec<f32> = xa.iter().map(|v| *v as f32).collect();
        let fb32: Vec<f32> = xb.iter().map(|v| *v as f32).collect();
        dot_f32(&fa32, &fb32)
    };
    scale_sum(sum, exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_normals_are_the_specs() {
        let want = [127.0 / 64.0, 448.0, 57344.0, 28.0, 7.5, 6.0];
        for (f, w) in MxFormat::ALL.iter().zip(want) {
            assert_eq!(f.max_normal(), w, "{f}");
        }
    }

    #[test]
    fn every_code_round_trips() {
        for f in MxFormat::ALL {
            for code in 0..(1u16 << f.bits()) {
                let code = code as u8;
                let Some((neg, steps)) = decode_steps(f, code) else {
                    continue;
                };
                if f == MxFormat::Int8 && code == 0x80 {
                    continue; // -128 is never produced
                }
                assert_eq!(encode(f, neg, steps), code, "{f} code {code:#x}");
            }
        }
    }

    #[test]
    fn spec_example_values() {
        // A block whose largest magnitude is 1.0: e = -emax, so 1.0 becomes 2^emax.
        let vals = [1.0f32, 0.5, -0.25, 0.0];
        let mut codes = [0u8; 4];
        let s = quantize_block(MxFormat::Fp4E2M1, &vals, &mut codes);
        assert_eq!(scale_exponent(s), Some(-2));
        let back: Vec<f32> = codes.iter().map(|c| dequantize(MxFormat::Fp4E2M1, s, *c)).collect();
        assert_eq!(back, vec![1.0, 0.5, -0.25, 0.0]);
        // 1.9 in a block led by 1.9: e = 0 - 2, 1.9 * 4 = 7.6 saturates to 6.
        let s = quantize_block(MxFormat::Fp4E2M1, &[1.9], &mut codes[..1]);
        assert_eq!(dequantize(MxFormat::Fp4E2M1, s, codes[0]), 1.5);
        // Ties go to even: 2.5 lies between 2 and 3 (E2M1's step there is 1) and gives 2.
        let s = quantize_block(MxFormat::Fp4E2M1, &[4.0, 2.5], &mut codes[..2]);
        assert_eq!(dequantize(MxFormat::Fp4E2M1, s, codes[1]), 2.0);
    }

    #[test]
    fn block_steps_are_the_decoded_codes() {
        let vals: Vec<f32> = (0..40).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173).collect();
        for f in MxFormat::ALL {
            for block in vals.chunks(BLOCK) {
                let mut codes = [0u8; BLOCK];
                let mut steps = [0i64; BLOCK];
                let s = quantize_block(f, block, &mut codes[..block.len()]);
                let e = quantize_block_steps(f, block, &mut steps[..block.len()]);
                assert_eq!(e, scale_exponent(s), "{f}");
                for (c, st) in codes.iter().zip(&steps).take(block.len()) {
                    assert_eq!(signed_steps(f, *c), Some(*st), "{f}");
                }
            }
        }
    }

    #[test]
    fn nan_and_inf_blocks_get_the_nan_scale() {
        let mut codes = [0u8; 2];
        assert_eq!(quantize_block(MxFormat::Int8, &[1.0, f32::NAN], &mut codes), SCALE_NAN);
        assert_eq!(
            quantize_block(MxFormat::Int8, &[f32::INFINITY, 1.0], &mut codes),
            SCALE_NAN
        );
        assert!(dequantize(MxFormat::Int8, SCALE_NAN, 0).is_nan());
    }

    #[test]
    fn partial_last_block_and_axis() {
        let shape = [3, 40];
        let data: Vec<f32> = (0..120).map(|i| (i as f32 - 60.0) * 0.37).collect();
        let t = MxTensor::quantize(MxFormat::Fp8E4M3, &shape, 1, &data);
        assert_eq!(t.scales.len(), 3 * 2);
        let t0 = MxTensor::quantize(MxFormat::Fp8E4M3, &shape, 0, &data);
        assert_eq!(t0.scales.len(), 40);
        for (x, y) in data.iter().zip(t.dequantize()) {
            assert!((x - y).abs() <= x.abs() / 16.0 + 1e-6, "{x} {y}");
        }
    }

    #[test]
    fn block_dot_is_the_dot_of_the_dequantized_values() {
        let a: Vec<f32> = (0..32).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.11).collect();
        let b: Vec<f32> = (0..32).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.23).collect();
        for f in MxFormat::ALL {
            let mut ca = [0u8; 32];
            let mut cb = [0u8; 32];
            let sa = quantize_block(f, &a, &mut ca);
            let sb = quantize_block(f, &b, &mut cb);
            let want: f64 = (0..32)
                .map(|i| f64::from(dequantize(f, sa, ca[i])) * f64::from(dequantize(f, sb, cb[i])))
                .sum();
            let got = block_dot(f, sa, &ca, f, sb, &cb);
            if f.exact_dot() {
                assert_eq!(got, want as f32, "{f}");
            } else {
                assert!((f64::from(got) - want).abs() <= want.abs() * 1e-6, "{f}");
            }
        }
    }
}
