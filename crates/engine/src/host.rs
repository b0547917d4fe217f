//! The engine's seam to the host, in the shape of youki's syscall trait: everything a lifecycle
//! operation does to the machine (mounts, processes and signals, the OCI runtime, the shim,
//! directories under the data root) goes through [`Host`]. [`RealHost`] does it; tests put a
//! recording host in its place (`host/recording.rs`) and check what an operation asked for, in
//! what order, and what it did when a call failed, all without root.
//!
//! Container records and state files stay plain files: they are the engine's and the shim's
//! shared memory, and tests keep them in a temporary directory.

#[cfg(test)]
pub(crate) mod recording;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::error::{EngineError, Result};
use crate::runtime::runtime_for;
use crate::sys;

/// A boxed future the host hands back for work that waits on another process.
pub type HostFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a command run inside a container gave back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its exit code; -1 when it had none (killed by a signal).
    pub code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// A stream the engine reads a command's output from.
pub type ExecReader = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A stream the engine writes a command's input to.
pub type ExecWriter = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// How one exec helper is to run: the files the engine prepared for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecLaunch {
    /// The OCI process (JSON) the runtime runs in the container.
    pub process_file: PathBuf,
    /// Where the runtime writes the command's host pid.
    pub pid_file: PathBuf,
    /// With a terminal: the socket the runtime sends the pseudo-terminal's master to.
    pub console_socket: Option<PathBuf>,
    /// Whether the command's stdin is a pipe the engine writes (else `/dev/null`).
    pub stdin: bool,
}

/// A command started inside a container through its exec helper.
pub struct ExecProcess {
    /// The exec helper's host pid, while it is unreaped.
    pub pid: Option<i32>,
    /// The command's stdin, when it was asked for and there is no terminal.
    pub stdin: Option<ExecWriter>,
    /// The helper's stdout: the command's, when there is no terminal.
    pub stdout: ExecReader,
    /// The helper's stderr: the command's when there is no terminal, and the runtime's errors.
    pub stderr: ExecReader,
    /// With a terminal: its master side, once the runtime has sent it.
    pub terminal: Option<HostFuture<std::io::Result<OwnedFd>>>,
    /// Resolves to the helper's exit code (the command's; 128 + signal when killed) when it
    /// exits. Dropping it before then kills the helper.
    pub exit: HostFuture<std::io::Result<i32>>,
}

/// Which OCI runtime a container uses and where its state lives.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeRef<'a> {
    /// The data root (runtime state is under `<data-root>/runtime`).
    pub data_root: &'a Path,
    /// An external runc-compatible binary, or `None` for the built-in libcontainer.
    pub external: Option<&'a Path>,
}

/// Everything the engine and the shim do to the host.
pub trait Host: Send + Sync + 'static {
    // Directories and files under the data root.

    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> Result<()>;
    /// Writes a `File` mount's contents with its mode and owner.
    fn write_file(&self, path: &Path, contents: &[u8], mode: u32, uid: u32, gid: u32)
    -> Result<()>;
    /// Whether `<data-root>/runtime/*/<id>` exists: runtime state a container left behind.
    fn has_runtime_state(&self, data_root: &Path, id: &str) -> bool;
    /// Gathers the dynamic loader, libraries and binary `--init` containers run from; returns
    /// the directory.
    fn prepare_init_dir(&self, data_root: &Path) -> Result<PathBuf>;
    /// The kernel's highest capability number.
    fn last_capability(&self) -> u8;

    // Mounts.

    /// Whether `target` is a mount point.
    fn is_mounted(&self, target: &Path) -> bool;
    /// Mounts an overlay of `lower` (bottom first) with `upper`/`work` on `target`.
    fn mount_overlay(
        &self,
        lower: &[&Path],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<()>;
    /// Mounts a private tmpfs (nosuid, nodev, noexec) with `options` on `target`.
    fn mount_tmpfs(&self, target: &Path, options: &str) -> Result<()>;
    /// Unmounts `target` if something is mounted there.
    fn unmount_if_mounted(&self, target: &Path) -> Result<()>;

    // The OCI runtime.

    /// Has the runtime create and start container `id` from `bundle`; returns the init's pid.
    fn runtime_run(
        &self,
        runtime: RuntimeRef<'_>,
        id: &str,
        bundle: &Path,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<i32>;
    /// Has the runtime forget container `id` (its cgroups and state).
    fn runtime_delete(&self, runtime: RuntimeRef<'_>, id: &str) -> Result<()>;
    /// Starts the exec helper for running container `id` as `launch` says, through the
    /// runtime's exec.
    fn exec(&self, runtime: RuntimeRef<'_>, id: &str, launch: &ExecLaunch) -> Result<ExecProcess>;

    // Processes.

    /// Makes this process the reaper of its orphaned descendants.
    fn set_child_subreaper(&self) -> Result<()>;
    /// Runs `shoal shim` for container `id`, hands it the launch request and returns its one
    /// line of answer.
    fn launch_shim(&self, id: &str, launch: Vec<u8>) -> HostFuture<Result<String>>;
    /// Runs `shoal shim --cleanup` for container `id` and waits for it.
    fn run_cleanup(&self, id: &str) -> HostFuture<Result<()>>;
    /// Sends `signal` to `pid` through a pidfd, after `still_ours` confirms (with the pidfd
    /// open) that the pid still names the process meant. Returns whether it was sent.
    fn signal_pid(&self, pid: i32, signal: i32, still_ours: &dyn Fn() -> bool) -> Result<bool>;
    /// Sends `signal` to `pid` without a pidfd; errors are ignored.
    fn kill(&self, pid: i32, signal: i32);
    /// Resolves when process `pid` has exited (at once if it is already gone).
    fn wait_pid_exit(&self, pid: i32) -> HostFuture<()>;
    /// Whether process `pid` exists and its command line contains `needle`.
    fn process_matches(&self, pid: i32, needle: &str) -> bool;
    /// The contents of `/proc/<pid>/cgroup`, empty if unreadable.
    fn process_cgroup(&self, pid: i32) -> String;
}

/// The host as it is: real syscalls, processes and files.
#[derive(Clone, Debug)]
pub struct RealHost {
    /// The `shoal` binary, re-executed as the shim.
    pub shoal_exe: PathBuf,
    /// The data root handed to the shim.
    pub data_root: PathBuf,
}

fn shim_command(host: &RealHost, id: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&host.shoal_exe);
    command
        .arg("shim")
        .arg("--data-root")
        .arg(&host.data_root)
        .arg("--id")
        .arg(id);
    command
}

impl Host for RealHost {
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path)
            .map_err(EngineError::io(format!("creating {}", path.display())))
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        std::fs::remove_dir_all(path)
            .map_err(EngineError::io(format!("removing {}", path.display())))
    }

    fn write_file(
        &self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, contents).map_err(EngineError::io("writing a file mount"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(EngineError::io("setting a file mount's mode"))?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(EngineError::io("setting a file mount's owner"))
    }

    fn has_runtime_state(&self, data_root: &Path, id: &str) -> bool {
        std::fs::read_dir(data_root.join("runtime"))
            .map(|dirs| dirs.flatten().any(|d| d.path().join(id).exists()))
            .unwrap_or(false)
    }

    fn prepare_init_dir(&self, data_root: &Path) -> Result<PathBuf> {
        crate::engine::init_dir::prepare(data_root)
    }

    fn last_capability(&self) -> u8 {
        crate::engine::init_dir::kernel_last_capability()
    }

    fn is_mounted(&self, target: &Path) -> bool {
        sys::is_mounted(target)
    }

    fn mount_overlay(
        &self,
        lower: &[&Path],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<()> {
        sys::mount_overlay(lower, upper, work, target)
    }

    fn mount_tmpfs(&self, target: &Path, options: &str) -> Result<()> {
        sys::mount(
            "tmpfs",
            target,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(options),
        )
    }

    fn unmount_if_mounted(&self, target: &Path) -> Result<()> {
        sys::unmount_if_mounted(target)
    }

    fn runtime_run(
        &self,
        runtime: RuntimeRef<'_>,
        id: &str,
        bundle: &Path,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<i32> {
        runtime_for(runtime.data_root, runtime.external).run(id, bundle, stdout, stderr)
    }

    fn runtime_delete(&self, runtime: RuntimeRef<'_>, id: &str) -> Result<()> {
        let deleted = runtime_for(runtime.data_root, runtime.external).delete(id);
        let swept = crate::sys::remove_cgroup_everywhere(&crate::spec::cgroup_path(id));
        deleted.and(swept)
    }

    fn exec(&self, runtime: RuntimeRef<'_>, id: &str, launch: &ExecLaunch) -> Result<ExecProcess> {
        use std::os::unix::process::ExitStatusExt;
        use std::process::Stdio;
        // Listening before the helper starts, so the runtime finds the socket.
        let console = launch
            .console_socket
            .as_deref()
            .map(crate::console::listen)
            .transpose()?;
        let exec = runtime_for(runtime.data_root, runtime.external).exec_command(
            &self.shoal_exe,
            id,
            launch,
        );
        let mut command = tokio::process::Command::from(exec);
        command
            .stdin(if launch.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(EngineError::io("running the exec helper"))?;
        let pid = child.id().and_then(|pid| i32::try_from(pid).ok());
        let stdin = child
            .stdin
            .take()
            .map(|stdin| Box::pin(stdin) as ExecWriter);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(EngineError::Runtime(
                "the exec helper started without its output pipes".to_owned(),
            ));
        };
        let terminal = console
            .map(|listener| Box::pin(crate::console::receive_master(listener)) as HostFuture<_>);
        let exit = Box::pin(async move {
            let status = child.wait().await?;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        });
        Ok(ExecProcess {
            pid,
            stdin,
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            terminal,
            exit,
        })
    }

    fn set_child_subreaper(&self) -> Result<()> {
        sys::set_child_subreaper()
    }

    fn launch_shim(&self, id: &str, launch: Vec<u8>) -> HostFuture<Result<String>> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut command = shim_command(self, id);
        let exe = self.shoal_exe.clone();
        Box::pin(async move {
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(EngineError::io(format!("running {} shim", exe.display())))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(&launch)
                    .await
                    .map_err(EngineError::io("sending the launch request to the shim"))?;
            }
            let mut line = String::new();
            if let Some(stdout) = child.stdout.take() {
                tokio::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .await
                    .map_err(EngineError::io("reading the shim's answer"))?;
            }
            let _ = child.wait().await;
            Ok(line)
        })
    }

    fn run_cleanup(&self, id: &str) -> HostFuture<Result<()>> {
        let mut command = shim_command(self, id);
        command.arg("--cleanup").stdin(std::process::Stdio::null());
        Box::pin(async move {
            command
                .status()
                .await
                .map(|_| ())
                .map_err(EngineError::io("running shim --cleanup"))
        })
    }

    fn signal_pid(&self, pid: i32, signal: i32, still_ours: &dyn Fn() -> bool) -> Result<bool> {
        let Ok(pidfd) = sys::pidfd_open(pid) else {
            return Ok(false);
        };
        if !still_ours() {
            return Ok(false);
        }
        sys::pidfd_send_signal(&pidfd, signal)?;
        Ok(true)
    }

    fn kill(&self, pid: i32, signal: i32) {
        sys::kill(pid, signal);
    }

    fn wait_pid_exit(&self, pid: i32) -> HostFuture<()> {
        Box::pin(async move {
            let registered = sys::pidfd_open(pid).and_then(|fd| {
                // SAFETY: the AsyncFd owns `fd` (an OwnedFd) for its whole life, so the
                // descriptor stays open and unchanged while registered.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(|e| EngineError::io("watching the shim")(e.into()))
            });
            match registered {
                Ok(fd) => {
                    let _ = fd.readable().await;
                }
                Err(error) => tracing::debug!(%error, "process already gone"),
            }
        })
    }

    fn process_matches(&self, pid: i32, needle: &str) -> bool {
        sys::process_matches(pid, needle)
    }

    fn process_cgroup(&self, pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
    }
}
