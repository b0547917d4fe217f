//! What the engine's root tests share: the runtimes to try, an engine with busybox imported,
//! and sweeping what a test's engine left behind (shims, container processes, mounts, files),
//! without the engine, so a failed test cleans up too.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::{EngineConfig, LocalEngine};

/// Where Debian's runc is.
const RUNC: &str = "/usr/sbin/runc";

/// The runtimes a test runs under: the built-in one (`None`), and runc when it is installed
/// (saying so when it is not, so that a required run fails instead of passing on half).
pub(crate) fn runtimes(test: &str) -> Vec<Option<PathBuf>> {
    let mut runtimes = vec![None];
    if Path::new(RUNC).exists() {
        runtimes.push(Some(PathBuf::from(RUNC)));
    } else {
        shoal_tests::skip(
            &format!("the runc half of the {test}"),
            "runc not installed (apt-get install runc)",
        );
    }
    runtimes
}

/// An engine on `data_root` whose re-executed helpers are this test binary, with the busybox
/// image built in `dir` imported as `busybox:test`.
pub(crate) async fn engine_with_busybox(dir: &Path, data_root: PathBuf) -> LocalEngine {
    let engine = LocalEngine::open(EngineConfig {
        data_root,
        shoal_exe: std::env::current_exe().expect("the test binary"),
    })
    .await
    .expect("opening the engine");
    let tarball = dir.join("busybox.tar");
    shoal_tests::build_busybox_tarball(&tarball).expect("the busybox tarball");
    engine
        .import_image(tarball, "busybox:test".to_owned())
        .await
        .expect("importing busybox");
    engine
}

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
