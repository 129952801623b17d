//! The integer arithmetic of weft's quantized graphs: the one definition that the integer
//! reference executor and every OpenCL kernel must match bit for bit.
//!
//! - Activations are u8 with a per-tensor scale and zero point (`real = scale * (q - zp)`);
//!   zero point 0 after ReLU.
//! - Weights are i8, symmetric (zero point 0), one scale per output channel.
//! - Biases are i32 at scale `s_x * s_w[c]`, with the input zero point folded in:
//!   `bias'[c] = bias[c] - zp_x * sum(w[c])`, so a convolution is
//!   `acc = bias'[c] + sum(x * w)` where padded cells hold `zp_x`.
//! - Requantization: `out = clamp(zp_out + rshift_round(acc * mult[c], shift[c]))` where
//!   `rshift_round(v, s) = (v + 2^(s-1)) >> s` on 64-bit signed integers with an arithmetic
//!   shift: round half up (toward positive infinity). `mult` is in `[2^30, 2^31)`.
//! - A residual fused into a convolution adds `(r - zp_r) * rmult[c]` (64-bit) before the
//!   same shift. An add computes `((a - zp_a) * ma + (b - zp_b) * mb)` then shifts.
//! - Average pooling: `zp + div_round(sum(x - zp), count)`, `div_round` rounding half away
//!   from zero; the output keeps the input's scale and zero point.
//! - Quantize (at the graph's input edge): `clamp(round_half_even(x / scale) + zp, 0, 255)`
//!   in f32; dequantize (at the output edge): `(q - zp) * scale` in f32.

/// Rounding right shift: `(v + 2^(s-1)) >> s`, round half toward positive infinity.
#[inline]
pub fn rshift_round(v: i64, shift: i32) -> i64 {
    if shift <= 0 {
        return v << (-shift).min(62);
    }
    (v + (1i64 << (shift - 1))) >> shift
}

/// `clamp(zp + rshift_round(acc * mult, shift), lo, hi)`.
#[inline]
pub fn requantize(acc: i64, mult: i32, shift: i32, zero_point: i32, clamp: [i32; 2]) -> u8 {
    let v = i64::from(zero_point) + rshift_round(acc * i64::from(mult), shift);
    v.clamp(i64::from(clamp[0]), i64::from(clamp[1])) as u8
}

/// Integer division rounding half away from zero (`count > 0`).
#[inline]
pub fn div_round(sum: i64, count: i64) -> i64 {
    if sum >= 0 {
        (sum + count / 2) / count
    } else {
        -((-sum + count / 2) / count)
    }
}

/// Splits a positive real multiplier into `(mult, shift)` with `mult` in `[2^30, 2^31)` and
/// `real ~= mult * 2^-shift`. Returns `None` when the multiplier is not finite and positive
/// or the shift would leave the range 0..=62.
pub fn quantize_multiplier(real: f64) -> Option<(i32, i32)> {
    if !(real.is_finite() && real > 0.0) {
        return None;
    }
    let mut exp = real.log2().floor() as i32;
    // real = frac * 2^(exp+1), frac in [0.5, 1)
    let mut mult = (real * 2f64.powi(30 - exp)).round();
    if mult >= 2f64.powi(31) {
        mult /= 2.0;
        exp += 1;
    }
    if mult < 2f64.powi(30) {
        mult *= 2.0;
        exp -= 1;
    }
    let shift = 30 - exp;
    (0..=62).contains(&shift).then_some((mult as i32, shift))
}

/// Rounds `real * 2^shift` to an i64 multiplier, or `None` when it would not fit.
pub fn fixed_multiplier(real: f64, shift: i32) -> Option<i64> {
    let v = (real * 2f64.powi(shift)).round();
    (v.is_finite() && v.abs() < 2f64.powi(54)).then_some(v as i64)
}

/// u8 quantization parameters covering `[lo, hi]` (the range is widened to include 0 so
/// that zero is exact).
pub fn params_for_range(lo: f32, hi: f32) -> (f32, i32) {
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    let span = (hi - lo).max(1e-8);
    let scale = span / 255.0;
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as i32;
    (scale, zp)
}

/// Quantizes one value to u8.
#[inline]
pub fn quantize_u8(x: f32, scale: f32, zero_point: i32) -> u8 {
    let q = (x / scale).round_ties_even();
    let q = if q.is_nan() { 0.0 } else { q };
    (q + zero_point as f32).clamp(0.0, 255.0) as u8
}

/// Symmetric i8 scale for a weight channel whose largest magnitude is `max_abs`.
pub fn weight_scale(max_abs: f32) -> f32 {
    if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_rules() {
        assert_eq!(rshift_round(5, 1), 3); // 2.5 -> 3
        assert_eq!(rshift_round(-5, 1), -2); // -2.5 -> -2 (half up)
        assert_eq!(rshift_round(-7, 2), -2); // -1.75 -> -2
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(-5, 2), -3);
        assert_eq!(div_round(7, 3), 2);
        assert_eq!(quantize_u8(2.5, 1.0, 0), 2); // half to even
        assert_eq!(quantize_u8(-3.0, 1.0, 10), 7);
        assert_eq!(quantize_u8(f32::NAN, 1.0, 10), 10);
        assert_eq!(quantize_u8(1e30, 1.0, 0), 255);
    }

    #[test]
    fn multipliers_are_accurate() {
        for real in [1e-6, 0.000123, 0.5, 0.75, 1.0, 1.5, 3.999, 1000.0] {
            let (m, s) = quantize_multiplier(real).unwrap();
            assert!((1 << 30) <= m, "{real}");
            let back = f64::from(m) * 2f64.powi(-s);
            assert!((back - real).abs() / real < 1e-9, "{real} {back}");
        }
        assert!(quantize_multiplier(0.0).is_none());
        assert!(quantize_multiplier(f64::NAN).is_none());
        assert!(quantize_multiplier(1e30).is_none());
    }

    #[test]
    fn requantize_matches_float_within_half_a_step() {
        let real = 0.0123;
        let (m, s) = quantize_multiplier(real).unwrap();
        for acc in [-100_000i64, -1, 0, 7, 12345, 9_999_999] {
            let q = requantize(acc, m, s, 128, [0, 255]);
            let want = (128.0 + acc as f64 * real).clamp(0.0, 255.0);
            assert!((f64::from(q) - want).abs() <= 0.5 + 1e-6, "{acc}: {q} vs {want}");
        }
    }

    #[test]
    fn range_params_make_zero_exact() {
        let (s, zp) = params_for_range(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, 64);
        assert_eq!(params_for_range(0.0, 2.55), (0.01, 0));
    }
}
