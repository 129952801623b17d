//! Any bytes as an image, under a 4-megapixel limit: an error or an image, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = weft_image::decode(data, 1 << 22);
});
