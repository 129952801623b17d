//! Shared by the kernel tests: random convolution cases.
#![allow(dead_code)] // each test binary uses part of this module

use proptest::prelude::*;

/// A random convolution: shapes, window, groups, two case-specific flags (`a`, `b`) and a
/// seed for the data.
#[derive(Debug, Clone)]
pub struct ConvCase {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pads: [usize; 4],
    pub group: usize,
    pub a: bool,
    pub b: bool,
    pub seed: u64,
}

/// How a case's groups are drawn.
#[derive(Clone, Copy, Debug)]
pub enum Groups {
    /// One group, or two groups of 8 input channels (4-aligned, as the int8 kernel needs).
    OneOrTwoAligned,
    /// One group, two groups, or depthwise.
    Any,
}

/// Kernels 1x1, 3x3, 7x7; strides and dilations 1-2; asymmetric pads 0-3; odd sizes and
/// channel counts that are not multiples of the vector widths; batch 1-3.
pub fn conv_case(groups: Groups) -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=3, 1usize..=19, 1usize..=11, 1usize..=11, 1usize..=37),
        (
            prop::sample::select(vec![1usize, 3, 7]),
            1usize..=2,
            1usize..=2,
            prop::array::uniform4(0usize..=3),
        ),
        (0usize..=2, any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(move |((n, c, h, w, m), (k, stride, dilation, pads), (g, a, b, seed))| {
            let (c, m, group) = match (groups, g) {
                (_, 0) => (c, m, 1),
                (Groups::OneOrTwoAligned, _) => (8, (m / 2).max(1) * 2, 2),
                (Groups::Any, 1) => (c * 2, (m / 2).max(1) * 2, 2),
                (Groups::Any, _) => (c, c, c),
            };
            ConvCase {
                n,
                c,
                h,
                w,
                m,
                k,
                stride,
                dilation,
                pads,
                group,
                a,
                b,
                seed,
            }
        })
        .prop_filter("window fits", |c| {
            let span = (c.k - 1) * c.dilation + 1;
            c.h + c.pads[0] + c.pads[2] >= span && c.w + c.pads[1] + c.pads[3] >= span
        })
}
