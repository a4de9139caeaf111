//! Python gRPC clients written from the `.proto` files alone: the modules
//! are generated with grpc_tools from the test venv, and the scripts live
//! in `tests/python/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness;

/// Generates the Python modules for `proto/toil/v1` into `dir/generated`
/// and returns that directory (for `PYTHONPATH`).
pub fn generate(dir: &Path) -> PathBuf {
    let out = dir.join("generated");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let protos: Vec<PathBuf> = std::fs::read_dir(harness::repo_root().join("proto/toil/v1"))
        .unwrap_or_else(|e| panic!("proto dir: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    let status = Command::new(harness::venv_bin("python"))
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(harness::repo_root().join("proto"))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&protos)
        .status()
        .unwrap_or_else(|e| panic!("run grpc_tools.protoc: {e}"));
    assert!(status.success(), "protoc failed");
    assert!(out.join("toil/v1/workflow_pb2_grpc.py").exists());
    out
}

/// A script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    harness::repo_root().join("tests/python").join(name)
}

/// The venv's Python with `generated` on its module path.
pub fn python(generated: &Path) -> Command {
    let mut c = Command::new(harness::venv_bin("python"));
    c.env("PYTHONPATH", generated);
    c
}
