//! int8 kernels on PoCL (or WEFT_BENCH_DEVICE): ResNet-50's convolution shapes in GOP/s,
//! and ResNet-50 end to end in images/s at batch 1 and 8. Each run waits for the device.

use std::collections::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft_bench::{conv_package, input, zoo_package};
use weft_opencl::{Session, SessionOptions};

fn device() -> SessionOptions {
    SessionOptions {
        device: std::env::var("WEFT_BENCH_DEVICE").unwrap_or_else(|_| "pocl".into()),
        ..Default::default()
    }
}

/// The convolution forms compared per shape: the channel form (`qconvc`, the default for
/// ungrouped layers) and the lane form (`qconv`).
const FORMS: [(&str, bool); 2] = [("channels", false), ("lanes", true)];

fn kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("qconv");
    group.sample_size(10);
    // (C, M, k, stride, H): ResNet-50's conv shapes at 224x224 input
    for (ci, m, k, s, h) in [
        (3, 64, 7, 2, 224),
        (64, 64, 1, 1, 56),
        (64, 64, 3, 1, 56),
        (64, 256, 1, 1, 56),
        (128, 128, 3, 1, 28),
        (256, 256, 3, 1, 14),
        (512, 512, 3, 1, 7),
        (1024, 2048, 1, 2, 14),
    ] {
        let Ok(pkg) = conv_package(ci, m, k, s, h, h) else {
            continue;
        };
        for (form, lane_conv) in FORMS {
            let opts = SessionOptions { lane_conv, ..device() };
            let Ok(mut session) = Session::new(&pkg, &opts) else {
                return;
            };
            let oh = (h + 2 * (k / 2) - k) / s + 1;
            group.throughput(Throughput::Elements((2 * m * oh * oh * ci * k * k) as u64));
            let feeds = HashMap::from([("input".to_string(), input(&[1, ci, h, h], 3))]);
            let _ = session.run(&feeds);
            group.bench_function(format!("{k}x{k} {ci}->{m} {h}x{h} s{s} {form} (ops)"), |b| {
                b.iter(|| session.run(&feeds).map(|o| o.len()).unwrap_or(0))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("resnet50_int8");
    group.sample_size(10);
    let Ok(pkg) = zoo_package("resnet50") else { return };
    let Ok(mut session) = Session::new(&pkg, &device()) else {
        return;
    };
    for batch in [1usize, 8] {
        let feeds = HashMap::from([("input".to_string(), input(&[batch, 3, 224, 224], 4))]);
        let _ = session.run(&feeds);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch {batch} (images)"), |b| {
            b.iter(|| session.run(&feeds).map(|o| o.len()).unwrap_or(0))
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
