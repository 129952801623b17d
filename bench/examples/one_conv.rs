//! Profiles one int8 convolution shape: `one_conv C M K STRIDE H [RUNS]` (ResNet-style
//! padding k/2, ReLU), printing the median per-launch kernel time of its convolution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use weft_bench::{conv_package, input};
use weft_opencl::{Session, SessionOptions};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("a number")).collect();
    let (c, m, k, s, h) = (a[0], a[1], a[2], a[3], a[4]);
    let runs = a.get(5).copied().unwrap_or(200);
    let pkg = conv_package(c, m, k, s, h, h).expect("package");
    let opts = SessionOptions {
        device: "pocl".into(),
        profile: true,
        ..Default::default()
    };
    let mut session = Session::new(&pkg, &opts).expect("session");
    let feeds = HashMap::from([("input".to_string(), input(&[1, c, h, h], 3))]);
    let mut times = Vec::new();
    for _ in 0..runs {
        session.run(&feeds).expect("run");
        let p = session.last_profile();
        times.extend(
            p.iter()
                .filter(|l| l.kernel.starts_with("qconv"))
                .map(|l| (l.micros, l.macs)),
        );
    }
    times.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (us, macs) = times[times.len() / 2];
    println!(
        "{k}x{k} {c}->{m} {h}x{h} s{s}: {us:.1} us, {:.0} GOP/s",
        2.0 * macs as f64 / us / 1e3
    );
}
