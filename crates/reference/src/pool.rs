//! Max and average pooling over 2-D windows, and global pooling.

use ndarray::{ArrayD, IxDyn};
use weft_core::op::Pool;
use weft_core::shape::pool_windows;

/// Which reduction a pooling window applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

/// Pools `x` `[N,C,H,W]`. Padded cells never win a max; for averages they count in the
/// divisor only with `count_include_pad`, and then only up to the declared end padding.
pub fn pool2d(x: &ArrayD<f32>, pool: &Pool, kind: PoolKind) -> Result<ArrayD<f32>, String> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let [wy, wx] = pool_windows(pool, h, w)?;
    let (oh, ow) = (wy.out, wx.out);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or("input is not contiguous")?;
    let [sy, sx] = pool.strides;
    let [dy, dx] = pool.dilations;
    let [kh, kw] = pool.kernel_shape;
    let mut out = vec![0f32; n * c * oh * ow];
    for (plane_idx, plane) in xs.chunks_exact(h * w).enumerate() {
        let dst = &mut out[plane_idx * oh * ow..(plane_idx + 1) * oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let y0 = (oy * sy) as isize - wy.pad_begin as isize;
                let x0 = (ox * sx) as isize - wx.pad_begin as isize;
                let value = match kind {
                    PoolKind::Max => {
                        let mut best = f32::NEG_INFINITY;
                        for ky in 0..kh {
                            let iy = y0 + (ky * dy) as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = x0 + (kx * dx) as isize;
                                if ix >= 0 && ix < w as isize {
                                    best = best.max(plane[iy as usize * w + ix as usize]);
                                }
                            }
                        }
                        best
                    }
                    PoolKind::Average => {
                        let y_end = (y0 + kh as isize).min((h + wy.pad_end) as isize);
                        let x_end = (x0 + kw as isize).min((w + wx.pad_end) as isize);
                        let padded_count = (y_end - y0) * (x_end - x0);
                        let (ya, yb) = (y0.max(0), y_end.min(h as isize));
                        let (xa, xb) = (x0.max(0), x_end.min(w as isize));
                        let mut sum = 0f32;
                        for iy in ya..yb {
                            for ix in xa..xb {
                                sum += plane[iy as usize * w + ix as usize];
                            }
                        }
                        let count = if pool.count_include_pad {
                            padded_count
                        } else {
                            (yb - ya).max(0) * (xb - xa).max(0)
                        };
                        if count > 0 { sum / count as f32 } else { 0.0 }
                    }
                };
                dst[oy * ow + ox] = value;
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), out).map_err(|e| e.to_string())
}

/// Global pooling over every axis after the first two.
pub fn global_pool(x: &ArrayD<f32>, kind: PoolKind) -> ArrayD<f32> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let spatial: usize = x.shape()[2..].iter().product();
    let x = x.as_standard_layout();
    let values: Vec<f32> = x
        .as_slice()
        .unwrap_or(&[])
        .chunks_exact(spatial.max(1))
        .map(|plane| match kind {
            PoolKind::Max => plane.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            PoolKind::Average => plane.iter().sum::<f32>() / spatial.max(1) as f32,
        })
        .collect();
    let mut shape = vec![n, c];
    shape.extend(std::iter::repeat_n(1, x.ndim() - 2));
    ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&shape)))
}
