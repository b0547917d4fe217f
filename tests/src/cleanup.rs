//! Removing what test daemons and their containers leave on the machine without asking a
//! daemon: processes (daemons, shims, container processes), overlay namespaces, mounts, cgroups
//! and directories.
//! The same sweep as `crates/cli/tests/support`'s `remove_leftovers`, for a whole run directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::run;

/// The cgroup v1 controllers (and the v2 mount) under which the engine makes `shoal/<id>`.
const CGROUP_CONTROLLERS: [&str; 10] = [
    "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "systemd",
    "unified",
];

/// `dir` as a prefix that matches paths inside it and not its siblings (`/tmp/a-1/`, never
/// `/tmp/a-10`).
pub fn inside(dir: &Path) -> String {
    format!("{}/", dir.display())
}

/// Processes other than this one whose command line contains `needle`, as `(pid, command
/// line)`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill_9(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill takes two integers and has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// The names in a directory; none when it can't be read.
pub(crate) fn entry_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The full ids of the containers under a daemon's data root.
fn container_ids(data_root: &Path) -> Vec<String> {
    entry_names(&data_root.join("containers"))
}

/// Kills the processes and shims of the containers under `data_root` and lets `shoal shim
/// --cleanup` remove their mounts, then removes their cgroups.
fn remove_container_leftovers(shoal: &Path, data_root: &Path) {
    for id in container_ids(data_root) {
        let state_file = data_root.join("containers").join(&id).join("state.json");
        let state = std::fs::read_to_string(state_file).unwrap_or_default();
        let state: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
        for key in ["pid", "shim_pid"] {
            if let Some(pid) = state[key].as_u64().and_then(|pid| u32::try_from(pid).ok()) {
                kill_9(pid);
            }
        }
        let _ = run(
            Command::new(shoal)
                .args(["shim", "--cleanup", "--data-root"])
                .arg(data_root)
                .args(["--id", &id]),
            Duration::from_secs(20),
        );
        for controller in CGROUP_CONTROLLERS {
            let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{controller}/shoal/{id}"));
        }
    }
}

/// Mount points at `dir` or inside it, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let exact = dir.display().to_string();
    let prefix = inside(dir);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|target| *target == exact || target.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    mounts.sort_by_key(|target| std::cmp::Reverse(target.len()));
    mounts.dedup();
    mounts
}

/// Detaches every mount at `dir` or inside it.
fn unmount_under(dir: &Path) {
    for target in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&target).output();
    }
}

/// Removes whatever is left of a run directory, daemons or not: every process mentioning the
/// directory (daemons first, so none restarts a container, then shims), the container
/// processes and mounts of each `<dir>/*/data` data root, mounts inside it, then the directory
/// itself.
pub(crate) fn sweep_run_directory(shoal: &Path, dir: &Path) {
    for (pid, _) in processes_mentioning(&inside(dir)) {
        kill_9(pid);
    }
    let data_roots: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path().join("data"))
                .filter(|data_root| data_root.is_dir())
                .collect()
        })
        .unwrap_or_default();
    for data_root in &data_roots {
        remove_container_leftovers(shoal, data_root);
        // The overlay namespaces its daemon made (per network and per task) outlive the daemon
        // by design, so a restarted one finds them; the run is over, so they go too.
        let prefix = overlay_net::prefix_for_data_root(data_root);
        for name in crate::netns::list() {
            if crate::netns::made_by_daemon(&name, &prefix) {
                crate::netns::delete(&name);
            }
        }
    }
    unmount_under(dir);
    let _ = std::fs::remove_dir_all(dir);
}
