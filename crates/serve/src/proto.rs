//! Generated protobuf and gRPC types.
#![allow(clippy::all, missing_debug_implementations, missing_docs)]

pub mod inference {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

pub mod tensorflow {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
    pub mod serving {
        include!(concat!(env!("OUT_DIR"), "/tensorflow.serving.rs"));
    }
}

/// Encoded descriptors of every service above, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/weft_serve_descriptor.bin"));
