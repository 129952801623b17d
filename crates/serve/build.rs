//! Compiles the service protos (KServe v2 with Triton's extensions, TensorFlow Serving
//! Predict) with protox (no protoc) and tonic-prost-build, and keeps their encoded
//! descriptor set for server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "kserve/grpc_service.proto",
        "tensorflow_serving/apis/prediction_service.proto",
    ];
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let fds = protox::compile(files, [&proto_dir])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("weft_serve_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
