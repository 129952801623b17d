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
    /// Depthwise only (one input and one output channel per group), without a residual.
    Depthwise,
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
                (Groups::Depthwise, _) => (c.max(2), c.max(2), c.max(2)),
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
                a: a && !matches!(groups, Groups::Depthwise),
                b,
                seed,
            }
        })
        .prop_filter("window fits", |c| {
            let span = (c.k - 1) * c.dilation + 1;
            c.h + c.pads[0] + c.pads[2] >= span && c.w + c.pads[1] + c.pads[3] >= span
        })
}

/// The OpenCL devices the tests run on: `WEFT_TEST_DEVICES` (specs separated by commas), or
/// every device found (`opencl:PLATFORM:INDEX`); panics (never skips) when there is none.
pub fn devices() -> Vec<String> {
    if let Ok(list) = std::env::var("WEFT_TEST_DEVICES") {
        return list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    let found = weft_opencl::list_devices().unwrap_or_else(|e| panic!("no OpenCL device for the tests: {e}"));
    assert!(!found.is_empty(), "no OpenCL device for the tests");
    found
        .iter()
        .map(|d| format!("opencl:{}:{}", d.platform, d.device_index))
        .collect()
}

/// Whether `spec` names a simulator (Oclgrind): correct but slow, so randomised tests run
/// only their first cases on it.
pub fn is_simulator(spec: &str) -> bool {
    spec.to_lowercase().contains("oclgrind")
}

/// How many cases of a randomised test run on simulators.
pub const SIMULATOR_CASES: usize = 3;

/// Whether the next case counted by `counter` runs on simulators too.
pub fn sample_simulators(counter: &std::sync::atomic::AtomicUsize) -> bool {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < SIMULATOR_CASES
}

/// Fails when Oclgrind has reported anything: with `OCLGRIND_LOG` set (as `scripts/test.sh`
/// sets it, with the API checks on), its reports go to that file, which must stay empty.
pub fn assert_no_simulator_reports(spec: &str) {
    if !is_simulator(spec) {
        return;
    }
    if let Some(path) = std::env::var_os("OCLGRIND_LOG") {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(log.trim().is_empty(), "Oclgrind reported on {spec}:\n{log}");
    }
}
