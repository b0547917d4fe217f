//! The per-container shim: `shoal shim --data-root DIR --id ID`, a fresh single-threaded process
//! re-executed from the `shoal` binary. It mounts the root filesystem, has the OCI runtime start
//! the container, then owns the container's stdout and stderr (writing the log), collects the
//! exit status and OOM kills, and tidies up (runtime state, cgroups, mounts). It detaches from
//! the daemon (new session, double fork), so containers outlive a daemon restart.
//!
//! Protocol with the daemon: the launch request ([`ShimLaunch`], JSON) arrives on stdin; one
//! line goes back on stdout, `ok <pid>` once the container runs or `error <message>`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::container::{ContainerDir, ContainerRecord, RunStatus, ShimState};
use crate::error::{EngineError, Result};
use crate::host::{Host, RealHost, RuntimeRef};
use crate::logs::{LineSplitter, LogWriter};
use crate::spec::{MountSpec, cgroup_path, file_mounts_tmpfs_bytes};
use crate::sys;
use crate::util;

/// The shim's own host: `/proc/self/exe` is the `shoal` binary it was started from.
fn real_host(data_root: &Path) -> RealHost {
    RealHost {
        shoal_exe: "/proc/self/exe".into(),
        data_root: data_root.to_path_buf(),
    }
}

/// What the daemon hands the shim on stdin: secrets never touch the disk.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShimLaunch {
    /// Contents of `File` mounts, by mount index.
    pub files: Vec<(usize, Vec<u8>)>,
}

/// The shim's entry point; returns the process exit code.
pub fn shim_main(data_root: &Path, id: &str) -> i32 {
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        println!("error reading the launch request: {error}");
        return 1;
    }
    let launch: ShimLaunch = match serde_json::from_slice(&input) {
        Ok(launch) => launch,
        Err(error) => {
            println!("error bad launch request: {error}");
            return 1;
        }
    };
    sys::setsid();
    match sys::fork_single_threaded() {
        Ok(Some(_child)) => sys::exit_immediately(0),
        Ok(None) => {}
        Err(error) => {
            println!("error {error}");
            return 1;
        }
    }
    let dir = ContainerDir::new(data_root, id);
    let mut ready = match detach_stdio(&dir) {
        Ok(ready) => ready,
        Err(error) => {
            println!("error {error}");
            return 1;
        }
    };
    let record: ContainerRecord = match util::read_json(&dir.record()) {
        Ok(record) => record,
        Err(error) => {
            let _ = writeln!(ready, "error {error}");
            return 1;
        }
    };
    let host = real_host(data_root);
    match start(&host, data_root, &dir, &record, launch) {
        Ok(started) => {
            let _ = writeln!(ready, "ok {}", started.pid);
            drop(ready);
            // Hands the runtime's start-up allocations back to the kernel: a shim lives as long
            // as its container, and there may be hundreds.
            // SAFETY: malloc_trim only releases free heap memory; no pointers are invalidated.
            unsafe { libc::malloc_trim(0) };
            supervise(&host, data_root, &dir, &record, started);
            0
        }
        Err(error) => {
            let _ = writeln!(ready, "error {error}");
            1
        }
    }
}

/// Points stdin at /dev/null and stderr at the shim log, and returns the daemon's pipe (our
/// stdout) as a separate handle so fd 1 can go to /dev/null too.
fn detach_stdio(dir: &ContainerDir) -> Result<std::fs::File> {
    let ready: OwnedFd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(EngineError::io("duplicating stdout"))?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(EngineError::io("opening /dev/null"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.shim_log())
        .map_err(EngineError::io("opening the shim log"))?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (log.as_raw_fd(), 2),
    ] {
        // SAFETY: both are open descriptors we own; dup2 only replaces `to`.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(EngineError::last_os("dup2"));
        }
    }
    Ok(std::fs::File::from(ready))
}

struct Started {
    pid: i32,
    stdout: std::io::PipeReader,
    stderr: std::io::PipeReader,
}

/// Sets the container up and runs it; if any step fails, releases what the earlier ones took
/// (runtime state, mounts) and records the failure as the container's exit.
fn start(
    host: &dyn Host,
    data_root: &Path,
    dir: &ContainerDir,
    record: &ContainerRecord,
    launch: ShimLaunch,
) -> Result<Started> {
    let error = match set_up(host, data_root, dir, record, launch) {
        Ok(started) => return Ok(started),
        Err(error) => error,
    };
    eprintln!("start failed: {error}");
    tidy_up(host, data_root, dir, record);
    let state = ShimState {
        status: RunStatus::Exited,
        finished_at: Some(util::rfc3339(SystemTime::now())),
        exit_code: Some(127),
        error: Some(error.to_string()),
        ..ShimState::default()
    };
    let _ = util::write_json(&dir.state(), &state);
    Err(error)
}

fn set_up(
    host: &dyn Host,
    data_root: &Path,
    dir: &ContainerDir,
    record: &ContainerRecord,
    launch: ShimLaunch,
) -> Result<Started> {
    host.set_child_subreaper()?;
    for path in [dir.rootfs(), dir.upper(), dir.work()] {
        host.create_dir_all(&path)?;
    }
    if !host.is_mounted(&dir.rootfs()) {
        let lower: Vec<&Path> = record.layer_dirs.iter().map(|p| p.as_path()).collect();
        host.mount_overlay(&lower, &dir.upper(), &dir.work(), &dir.rootfs())?;
    }
    write_file_mounts(host, dir, record, &launch)?;
    for mount in &record.spec.mounts {
        if let MountSpec::Volume { name, .. } = mount {
            host.create_dir_all(&data_root.join("volumes").join(name).join("_data"))?;
        }
    }
    let (stdout, stdout_writer) =
        std::io::pipe().map_err(EngineError::io("creating the stdout pipe"))?;
    let (stderr, stderr_writer) =
        std::io::pipe().map_err(EngineError::io("creating the stderr pipe"))?;
    let pid = host.runtime_run(
        runtime_of(data_root, record),
        &record.id,
        &dir.root,
        stdout_writer.into(),
        stderr_writer.into(),
    )?;
    let state = ShimState {
        status: RunStatus::Running,
        shim_pid: Some(std::process::id() as i32),
        pid: Some(pid),
        started_at: Some(util::rfc3339(SystemTime::now())),
        ..ShimState::default()
    };
    util::write_json(&dir.state(), &state)?;
    Ok(Started {
        pid,
        stdout,
        stderr,
    })
}

/// The container's OCI runtime.
fn runtime_of<'a>(data_root: &'a Path, record: &'a ContainerRecord) -> RuntimeRef<'a> {
    RuntimeRef {
        data_root,
        external: record.spec.runtime.as_deref(),
    }
}

/// Mounts the tmpfs for `File` mounts and writes each one's contents, mode and owner.
fn write_file_mounts(
    host: &dyn Host,
    dir: &ContainerDir,
    record: &ContainerRecord,
    launch: &ShimLaunch,
) -> Result<()> {
    let has_files = record
        .spec
        .mounts
        .iter()
        .any(|m| matches!(m, MountSpec::File { .. }));
    if !has_files {
        return Ok(());
    }
    let files = dir.files();
    host.create_dir_all(&files)?;
    if !host.is_mounted(&files) {
        let size = file_mounts_tmpfs_bytes(
            launch.files.iter().map(|(_, contents)| contents.len()),
            sys::page_size(),
        );
        host.mount_tmpfs(&files, &format!("mode=0700,size={size}"))?;
    }
    for (index, mount) in record.spec.mounts.iter().enumerate() {
        if let MountSpec::File { mode, uid, gid, .. } = mount {
            let contents = launch
                .files
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, c)| c.as_slice())
                .unwrap_or_default();
            host.write_file(&files.join(index.to_string()), contents, *mode, *uid, *gid)?;
        }
    }
    Ok(())
}

/// Copies output to the log until the container's init exits and its pipes close, then
/// records the exit and tidies up.
fn supervise(
    host: &dyn Host,
    data_root: &Path,
    dir: &ContainerDir,
    record: &ContainerRecord,
    started: Started,
) {
    let mut exit_code = None;
    let pidfd = match sys::pidfd_open(started.pid) {
        Ok(fd) => Some(fd),
        Err(error) => {
            eprintln!("{error}; falling back to polling waitpid");
            None
        }
    };
    let mut log = LogWriter::open(&dir.root, record.spec.log.clone()).ok();
    let mut streams = [
        ("stdout", Some(started.stdout), LineSplitter::default()),
        ("stderr", Some(started.stderr), LineSplitter::default()),
    ];
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let mut fds = Vec::new();
        for (_, reader, _) in &streams {
            fds.push(reader.as_ref().map_or(-1, |r| r.as_raw_fd()));
        }
        let watching_exit = exit_code.is_none();
        if watching_exit {
            fds.push(pidfd.as_ref().map_or(-1, |fd| fd.as_raw_fd()));
        }
        let pipes_open = streams.iter().any(|(_, r, _)| r.is_some());
        if !pipes_open && !watching_exit {
            break;
        }
        // Once the init has gone, escaped writers get two seconds before we stop reading.
        let timeout = if !watching_exit {
            2000
        } else if pidfd.is_none() {
            200
        } else {
            -1
        };
        let ready = match sys::poll_readable(&fds, timeout) {
            Ok(ready) => ready,
            Err(error) => {
                eprintln!("{error}");
                break;
            }
        };
        if !watching_exit && !ready.iter().any(|r| *r) {
            break;
        }
        for (index, (stream, reader, splitter)) in streams.iter_mut().enumerate() {
            if !ready[index] {
                continue;
            }
            let Some(pipe) = reader.as_mut() else {
                continue;
            };
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    if let (Some(rest), Some(log)) = (splitter.finish(), log.as_mut()) {
                        let _ = log.write(stream, &rest);
                    }
                    *reader = None;
                }
                Ok(n) => {
                    for line in splitter.push(&buffer[..n]) {
                        if let Some(log) = log.as_mut()
                            && let Err(error) = log.write(stream, &line)
                        {
                            eprintln!("{error}");
                        }
                    }
                }
            }
        }
        if watching_exit {
            exit_code = reap(started.pid);
        }
    }
    let oom_killed = oom_kill_count(&record.id) > 0;
    tidy_up(host, data_root, dir, record);
    let mut state = dir.read_state();
    state.status = RunStatus::Exited;
    state.shim_pid = None;
    state.pid = None;
    state.exit_code = Some(exit_code.unwrap_or(255));
    state.oom_killed = oom_killed;
    state.finished_at = Some(util::rfc3339(SystemTime::now()));
    if let Err(error) = util::write_json(&dir.state(), &state) {
        eprintln!("{error}");
    }
}

/// Reaps every exited child; returns the init's exit code once it is among them.
fn reap(init_pid: i32) -> Option<i32> {
    let mut init_code = None;
    while let Ok(sys::Reaped::Exited { pid, code }) = sys::waitpid(-1, true) {
        if pid == init_pid {
            init_code = Some(code);
        }
    }
    init_code
}

/// How many times the OOM killer struck in the container's cgroup (v2 `memory.events` or v1
/// `memory.oom_control`).
pub fn oom_kill_count(id: &str) -> u64 {
    let cgroup = cgroup_path(id);
    let candidates = [
        format!("/sys/fs/cgroup{cgroup}/memory.events"),
        format!("/sys/fs/cgroup/memory{cgroup}/memory.oom_control"),
    ];
    candidates
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// Releases what a container held on the host: runtime state and cgroups, then mounts.
/// Idempotent; also the body of `shoal shim --cleanup` for containers whose shim died.
pub fn tidy_up(host: &dyn Host, data_root: &Path, dir: &ContainerDir, record: &ContainerRecord) {
    if let Err(error) = host.runtime_delete(runtime_of(data_root, record), &record.id) {
        eprintln!("runtime delete: {error}");
    }
    for mount in [dir.rootfs(), dir.files()] {
        if let Err(error) = host.unmount_if_mounted(&mount) {
            eprintln!("{error}");
        }
    }
}

/// `shoal shim --cleanup`: tidies up after a container whose shim is gone.
pub fn cleanup_main(data_root: &Path, id: &str) -> i32 {
    let dir = ContainerDir::new(data_root, id);
    match util::read_json::<ContainerRecord>(&dir.record()) {
        Ok(record) => {
            tidy_up(&real_host(data_root), data_root, &dir, &record);
            0
        }
        Err(error) => {
            eprintln!("{error}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::host::recording::{Call, RecordingHost};
    use crate::spec::ContainerSpec;
    use crate::util::Digest;

    /// A container with one `File` mount, its directory made, on a temporary data root.
    fn container(data_root: &Path) -> anyhow::Result<(ContainerDir, ContainerRecord)> {
        let id = "c".repeat(64);
        let dir = ContainerDir::new(data_root, &id);
        std::fs::create_dir_all(&dir.root)?;
        let spec = ContainerSpec {
            image: "test:one".to_owned(),
            mounts: vec![MountSpec::File {
                target: "/run/secrets/key".to_owned(),
                contents: Vec::new(),
                mode: 0o400,
                uid: 1000,
                gid: 1000,
            }],
            ..ContainerSpec::default()
        };
        let record = ContainerRecord {
            id,
            name: "c".to_owned(),
            created: String::new(),
            spec,
            image_id: Digest::of(b"image"),
            layer_dirs: vec![PathBuf::from("/layers/a"), PathBuf::from("/layers/b")],
            args: Vec::new(),
            stop_signal: libc::SIGTERM,
        };
        Ok((dir, record))
    }

    fn launch() -> ShimLaunch {
        ShimLaunch {
            files: vec![(0, b"secret".to_vec())],
        }
    }

    #[test]
    fn start_mounts_writes_file_mounts_then_runs_the_container() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let (dir, record) = container(root.path())?;
        let host = RecordingHost::new(root.path());
        let started = start(&host, root.path(), &dir, &record, launch())?;
        let files = dir.files();
        assert_eq!(
            host.take_calls(),
            vec![
                Call::SetSubreaper,
                Call::CreateDir(dir.rootfs()),
                Call::CreateDir(dir.upper()),
                Call::CreateDir(dir.work()),
                Call::MountOverlay {
                    lower: record.layer_dirs.clone(),
                    target: dir.rootfs(),
                },
                Call::CreateDir(files.clone()),
                Call::MountTmpfs(files.clone()),
                Call::WriteFile {
                    path: files.join("0"),
                    contents: b"secret".to_vec(),
                    mode: 0o400,
                    uid: 1000,
                    gid: 1000,
                },
                Call::RuntimeRun(record.id.clone()),
            ]
        );
        let state = dir.read_state();
        assert_eq!(
            (state.status, state.pid),
            (RunStatus::Running, Some(started.pid))
        );
        Ok(())
    }

    #[test]
    fn a_failed_mount_unwinds_what_was_done() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let (dir, record) = container(root.path())?;
        let host = RecordingHost::new(root.path());
        host.fail("mount_tmpfs");
        let result = start(&host, root.path(), &dir, &record, launch());
        assert!(result.is_err());
        let calls = host.take_calls();
        let after_failure = calls
            .iter()
            .position(|call| *call == Call::MountTmpfs(dir.files()))
            .map(|at| &calls[at + 1..]);
        assert_eq!(
            after_failure,
            Some(
                &[
                    Call::RuntimeDelete(record.id.clone()),
                    Call::Unmount(dir.rootfs()),
                    Call::Unmount(dir.files()),
                ][..]
            ),
            "{calls:?}"
        );
        assert!(!calls.contains(&Call::RuntimeRun(record.id.clone())));
        assert!(!host.is_mounted(&dir.rootfs()), "the overlay is released");
        let state = dir.read_state();
        assert_eq!(
            (state.status, state.exit_code),
            (RunStatus::Exited, Some(127))
        );
        assert!(
            state
                .error
                .is_some_and(|e| e.contains("mount_tmpfs failed")),
            "the failure is recorded for inspect"
        );
        Ok(())
    }

    #[test]
    fn a_failed_runtime_unwinds_the_mounts() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let (dir, record) = container(root.path())?;
        let host = RecordingHost::new(root.path());
        host.fail("runtime_run");
        assert!(start(&host, root.path(), &dir, &record, launch()).is_err());
        let calls = host.take_calls();
        assert_eq!(
            calls[calls.len() - 4..],
            [
                Call::RuntimeRun(record.id.clone()),
                Call::RuntimeDelete(record.id.clone()),
                Call::Unmount(dir.rootfs()),
                Call::Unmount(dir.files()),
            ]
        );
        Ok(())
    }
}
