//! Generates the API's Rust code with the vendored protoc, so a fresh machine needs nothing
//! installed, and writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.display());
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("churnwatch_v1_descriptor.bin"))
        .compile_with_config(
            config,
            &[root.join("churnwatch/v1/query.proto")],
            &[root, well_known],
        )?;
    Ok(())
}
