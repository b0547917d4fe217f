//! What the engine's root tests share: sweeping what a test's engine left behind (shims,
//! container processes, mounts, files), without the engine, so a failed test cleans up too.

use std::path::Path;
use std::process::Command;

/// Kills the processes of every container under `data_root`, has the shim clean up after each,
/// unmounts whatever is mounted below `dir`, and removes `dir`.
pub(crate) fn sweep(dir: &Path, data_root: &Path) {
    for entry in std::fs::read_dir(data_root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = entry.file_name().to_string_lossy().into_owned();
        let state = std::fs::read_to_string(entry.path().join("state.json")).unwrap_or_default();
        let state: serde_json::Value =
            serde_json::from_str(&state).unwrap_or(serde_json::Value::Null);
        for key in ["pid", "shim_pid"] {
            if let Some(pid) = state[key].as_i64().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: kill takes two integers and has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // In a process of its own, as libcontainer wants.
        if let Ok(exe) = std::env::current_exe() {
            let _ = Command::new(exe)
                .args(["shim", "--cleanup", "--data-root"])
                .arg(data_root)
                .args(["--id", &id])
                .output();
        }
    }
    let prefix = dir.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for target in mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|target| target.starts_with(&prefix))
    {
        let _ = Command::new("umount").arg("-l").arg(target).output();
    }
    let _ = std::fs::remove_dir_all(dir);
}
