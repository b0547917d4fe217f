//! Helpers shared by the root end-to-end tests (`engine.rs`, `swarm.rs`): when to skip, the
//! busybox image built from the host's static busybox, and the sweep that removes whatever a test
//! daemon's containers left on the host (processes, shims, mounts, cgroups, directories).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub(crate) const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

pub(crate) use shoal_tests::root_skip_reason as skip_reason;

/// The full ids of the containers under a daemon's data root.
pub(crate) fn container_ids(data_root: &Path) -> Vec<String> {
    std::fs::read_dir(data_root.join("containers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes, without a daemon, whatever the containers under `data_root` left: their processes
/// and shims, mounts and cgroups; then unmounts everything under `dir` and deletes `dir`.
pub(crate) fn remove_leftovers(dir: &Path, data_root: &Path) {
    for id in container_ids(data_root) {
        let state =
            std::fs::read_to_string(data_root.join("containers").join(&id).join("state.json"))
                .unwrap_or_default();
        let state: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
        for key in ["pid", "shim_pid"] {
            if let Some(pid) = state[key].as_i64() {
                // SAFETY: kill takes two integers and has no memory effects.
                unsafe { libc::kill(pid as i32, 9) };
            }
        }
        let _ = Command::new(SHOAL)
            .args(["shim", "--cleanup", "--data-root"])
            .arg(data_root)
            .args(["--id", &id])
            .output();
        for controller in [
            "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "systemd",
            "unified",
        ] {
            let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{controller}/shoal/{id}"));
        }
    }
    let prefix = dir.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for target in mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| t.starts_with(&prefix))
    {
        let _ = Command::new("umount").arg("-l").arg(target).output();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A busybox root filesystem tarball built from the host's static busybox.
pub(crate) fn build_busybox_tarball(path: &Path) {
    shoal_tests::build_busybox_tarball(path).expect("building the busybox tarball");
}

/// A runtime and a gRPC channel to the daemon listening on `socket`, for tests that call the
/// daemon's services directly where the CLI exposes nothing.
pub(crate) fn daemon_channel(
    socket: &Path,
) -> (tokio::runtime::Runtime, tonic::transport::Channel) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let channel = runtime
        .block_on(daemon::connect_local(socket))
        .expect("connecting to the daemon");
    (runtime, channel)
}
