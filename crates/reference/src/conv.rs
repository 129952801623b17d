//! 2-D convolution in f32 by im2col and a matrix product.

use ndarray::{Array2, ArrayD, ArrayView2, IxDyn, s};
use weft_core::op::Conv;
use weft_core::shape::{Window, window};

/// Convolution of `x` `[N,C,H,W]` with `w` `[M,C/group,kH,kW]`, plus bias and the fused
/// activation. Shapes must have been checked by shape inference.
pub fn conv2d(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    conv: &Conv,
) -> Result<ArrayD<f32>, String> {
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (m, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let g = conv.group;
    if g == 0 || c != cg * g || m % g != 0 {
        return Err(format!(
            "channels {c} do not match weight {:?} with group {g}",
            w.shape()
        ));
    }
    let mg = m / g;
    let wy = window(h, kh, conv.strides[0], conv.dilations[0], &conv.padding, false, 0)?;
    let wx = window(wd, kw, conv.strides[1], conv.dilations[1], &conv.padding, false, 1)?;
    let (oh, ow) = (wy.out, wx.out);
    let p = oh * ow;
    let k = cg * kh * kw;
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or("input is not contiguous")?;
    let w = w.as_standard_layout();
    let w2 = w.view().into_shape_with_order((m, k)).map_err(|e| e.to_string())?;
    let bias: Option<Vec<f32>> = bias.map(|b| b.iter().copied().collect());
    let mut out = vec![0f32; n * m * p];
    let pointwise =
        kh == 1 && kw == 1 && conv.strides == [1, 1] && wy.pad_begin + wy.pad_end + wx.pad_begin + wx.pad_end == 0;
    let mut col = Array2::<f32>::zeros((k, p));
    for ni in 0..n {
        for gi in 0..g {
            let img = &xs[(ni * c + gi * cg) * h * wd..(ni * c + (gi + 1) * cg) * h * wd];
            let cols: ArrayView2<f32> = if pointwise {
                ArrayView2::from_shape((cg, h * wd), img).map_err(|e| e.to_string())?
            } else {
                im2col(img, cg, h, wd, kh, kw, conv, wy, wx, &mut col);
                col.view()
            };
            let res = w2.slice(s![gi * mg..(gi + 1) * mg, ..]).dot(&cols);
            for (oi, row) in res.outer_iter().enumerate() {
                let mo = gi * mg + oi;
                let b = bias.as_ref().map_or(0.0, |b| b[mo]);
                let dst = &mut out[(ni * m + mo) * p..(ni * m + mo + 1) * p];
                for (d, &v) in dst.iter_mut().zip(row.iter()) {
                    let v = v + b;
                    *d = conv.activation.map_or(v, |a| a.apply(v));
                }
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&[n, m, oh, ow]), out).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn im2col(
    img: &[f32],
    cg: usize,
    h: usize,
    wd: usize,
    kh: usize,
    kw: usize,
    conv: &Conv,
    wy: Window,
    wx: Window,
    col: &mut Array2<f32>,
) {
    let (oh, ow) = (wy.out, wx.out);
    let dst = col.as_slice_mut().unwrap_or(&mut []);
    let [sy, sx] = conv.strides;
    let [dy, dx] = conv.dilations;
    for ci in 0..cg {
        let plane = &img[ci * h * wd..(ci + 1) * h * wd];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (ci * kh + ky) * kw + kx;
                let out_row = &mut dst[row * oh * ow..(row + 1) * oh * ow];
                for oy in 0..oh {
                    let iy = (oy * sy + ky * dy) as isize - wy.pad_begin as isize;
                    let line = &mut out_row[oy * ow..(oy + 1) * ow];
                    if iy < 0 || iy >= h as isize {
                        line.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * wd..(iy as usize + 1) * wd];
                    for (ox, d) in line.iter_mut().enumerate() {
                        let ix = (ox * sx + kx * dx) as isize - wx.pad_begin as isize;
                        *d = if ix < 0 || ix >= wd as isize {
                            0.0
                        } else {
                            src[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::op::Padding;
    use weft_core::rng::Rng;

    /// Direct definition of convolution, for checking the im2col path.
    fn naive(x: &ArrayD<f32>, w: &ArrayD<f32>, conv: &Conv) -> ArrayD<f32> {
        let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (m, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
        let wy = window(h, kh, conv.strides[0], conv.dilations[0], &conv.padding, false, 0).unwrap();
        let wx = window(wd, kw, conv.strides[1], conv.dilations[1], &conv.padding, false, 1).unwrap();
        let mg = m / conv.group;
        let _ = c;
        let mut out = ArrayD::zeros(IxDyn(&[n, m, wy.out, wx.out]));
        for ni in 0..n {
            for mo in 0..m {
                let gi = mo / mg;
                for oy in 0..wy.out {
                    for ox in 0..wx.out {
                        let mut acc = 0.0;
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * conv.strides[0] + ky * conv.dilations[0]) as isize
                                        - wy.pad_begin as isize;
                                    let ix = (ox * conv.strides[1] + kx * conv.dilations[1]) as isize
                                        - wx.pad_begin as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                        acc += x[[ni, gi * cg + ci, iy as usize, ix as usize]] * w[[mo, ci, ky, kx]];
                                    }
                                }
                            }
                        }
                        out[[ni, mo, oy, ox]] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn im2col_matches_the_definition() {
        let mut rng = Rng::new(3);
        let cases = [
            (2, 4, 7, 6, 6, 3, 3, [2, 1], [1, 1], Padding::Explicit([1, 0, 2, 1]), 2),
            (1, 3, 9, 9, 4, 1, 1, [2, 2], [1, 1], Padding::ZERO, 1),
            (1, 2, 8, 5, 2, 3, 2, [1, 1], [2, 1], Padding::SameUpper, 1),
            (1, 4, 6, 6, 4, 3, 3, [1, 1], [1, 1], Padding::SameLower, 4),
            (1, 3, 5, 5, 2, 1, 1, [1, 1], [1, 1], Padding::ZERO, 1),
        ];
        for (n, c, h, wd, m, kh, kw, strides, dilations, padding, group) in cases {
            let x = ArrayD::from_shape_vec(IxDyn(&[n, c, h, wd]), rng.normals(n * c * h * wd, 1.0)).unwrap();
            let w = ArrayD::from_shape_vec(
                IxDyn(&[m, c / group, kh, kw]),
                rng.normals(m * c / group * kh * kw, 1.0),
            )
            .unwrap();
            let conv = Conv {
                strides,
                dilations,
                padding,
                group,
                ..Conv::default()
            };
            let got = conv2d(&x, &w, None, &conv).unwrap();
            let want = naive(&x, &w, &conv);
            assert_eq!(got.shape(), want.shape());
            for (a, b) in got.iter().zip(want.iter()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }
}
