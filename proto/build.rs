//! Compiles `proto/toil/v1/*.proto` with the vendored protoc, so building
//! needs no system protobuf installation.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    let protos = [
        "toil/v1/common.proto",
        "toil/v1/agent.proto",
        "toil/v1/workflow.proto",
        "toil/v1/state.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("toil_descriptor.bin"))
        .compile_with_config(
            config,
            &protos.map(PathBuf::from),
            &[PathBuf::from("."), well_known],
        )?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
