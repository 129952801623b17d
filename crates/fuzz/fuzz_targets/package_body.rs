//! Any bytes as a package body with a correct checksum appended, so mutations reach the
//! header and tensor parsing behind the SHA-256 check: an error or a package, never a panic.
#![no_main]
use sha2::{Digest, Sha256};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(&Sha256::digest(data));
    let _ = weft_compile::Package::from_bytes(&bytes);
});
