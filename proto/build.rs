//! Compiles every `.proto` file under `shoal/` with protox, so a fresh machine needs no system
//! `protoc`.

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    proto_files(Path::new("shoal"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=shoal");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, ["."])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::LeanCodec")
        // Parts of a task's spec most tasks leave unset, boxed so that an unset one takes a
        // pointer rather than its whole size inline: every manager holds each task decoded, and
        // a task with none of them set is a third smaller (2,056 -> 1,416 bytes).
        .boxed(".shoal.api.ContainerSpec.privileges")
        .boxed(".shoal.api.ContainerSpec.healthcheck")
        .boxed(".shoal.api.ContainerSpec.dns_config")
        .boxed(".shoal.api.ContainerSpec.pull_options")
        .boxed(".shoal.api.TaskSpec.resources")
        .boxed(".shoal.api.TaskSpec.placement")
        .boxed(".shoal.api.TaskSpec.log_driver")
        .boxed(".shoal.api.Task.log_driver")
        // Written by hand: see `task_list`.
        .extern_path(
            ".shoal.api.ListTasksResponse",
            "crate::task_list::ListTasksResponse",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
