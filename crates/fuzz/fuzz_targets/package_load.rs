//! Any bytes as a .weft package: an error or a package, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = weft_compile::Package::from_bytes(data);
});
