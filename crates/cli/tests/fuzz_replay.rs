//! Replays the fuzz targets' inputs on stable Rust (no libFuzzer): the seeds in
//! crates/fuzz/seeds (valid examples, which must decode) and the inputs that once broke a
//! target, in crates/fuzz/regressions (which must be refused cleanly, never panic). The
//! fuzzers themselves run with `cargo +nightly fuzz run TARGET --fuzz-dir crates/fuzz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn run(target: &str, data: &[u8]) -> Result<(), String> {
    match target {
        "onnx_import" => weft_onnx::import(data, None).map(|_| ()).map_err(|e| e.to_string()),
        "package_load" => weft_compile::Package::from_bytes(data)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "package_body" => {
            use sha2::Digest;
            let mut bytes = data.to_vec();
            bytes.extend_from_slice(&sha2::Sha256::digest(data));
            weft_compile::Package::from_bytes(&bytes)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "image_decode" => weft_image::decode(data, 1 << 22).map(|_| ()).map_err(|e| e.to_string()),
        "infer_request" => {
            let package =
                weft_compile::Package::from_bytes(include_bytes!("../../../models/fashion/fashion_resnet.weft"))
                    .expect("the embedded package loads");
            weft_serve::decode_infer_request(&package, data, 1 << 22, 8)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

const TARGETS: [&str; 5] = [
    "onnx_import",
    "package_load",
    "package_body",
    "image_decode",
    "infer_request",
];

#[test]
fn seeds_are_accepted() {
    for t in TARGETS {
        let seeds = files(&root().join("seeds").join(t));
        assert!(!seeds.is_empty(), "no seeds for {t}");
        for s in seeds {
            let data = std::fs::read(&s).unwrap();
            run(t, &data).unwrap_or_else(|e| panic!("{}: {e}", s.display()));
        }
    }
}

#[test]
fn mutated_seeds_and_regressions_never_panic() {
    for t in TARGETS {
        let mut inputs: Vec<Vec<u8>> = files(&root().join("regressions").join(t))
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        // deterministic damage to every seed: truncations and flipped bytes
        for s in files(&root().join("seeds").join(t)) {
            let data = std::fs::read(&s).unwrap();
            for cut in [0, 1, 7, data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
                inputs.push(data[..cut.min(data.len())].to_vec());
            }
            let mut rng = weft_core::rng::Rng::new(data.len() as u64);
            for _ in 0..64 {
                let mut d = data.clone();
                for _ in 0..4 {
                    let i = (rng.next_u64() as usize) % d.len().max(1);
                    if let Some(b) = d.get_mut(i) {
                        *b ^= 1 << (rng.next_u64() % 8);
                    }
                }
                inputs.push(d);
            }
        }
        for d in inputs {
            let _ = run(t, &d);
        }
    }
}
