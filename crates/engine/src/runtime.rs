//! The OCI runtimes a shim can drive: youki's `libcontainer`, linked in, or an external binary
//! with runc's command line. Both take the same bundle; the shim does not care which it has.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use crate::error::{EngineError, Result};

/// One OCI runtime.
pub trait OciRuntime {
    /// Creates and starts container `id` from the bundle directory, its stdout and stderr going
    /// to the given pipes. Returns the container init's host pid. The caller is a subreaper, so
    /// that process becomes its child once the runtime steps away.
    fn run(&self, id: &str, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> Result<i32>;
    /// Forgets container `id`: its cgroups and runtime state. Succeeds if it is already gone.
    fn delete(&self, id: &str) -> Result<()>;
    /// A command that runs `args` inside the running container `id` and exits with its code.
    fn exec_command(&self, shoal_exe: &Path, id: &str, args: &[String]) -> Command;
}

/// Picks the runtime for a container: an external binary if one was given, else libcontainer.
pub fn runtime_for(data_root: &Path, external: Option<&Path>) -> Box<dyn OciRuntime> {
    match external {
        Some(binary) => Box::new(ExternalRuntime {
            binary: binary.to_path_buf(),
            state_root: data_root
                .join("runtime")
                .join(binary.file_name().unwrap_or_default()),
        }),
        None => Box::new(Libcontainer {
            state_root: data_root.join("runtime/builtin"),
        }),
    }
}

/// youki's libcontainer, in process. Only ever used from a fresh single-threaded process (the
/// shim or `shoal runtime-exec`), because it forks.
#[derive(Debug)]
pub struct Libcontainer {
    /// Where libcontainer keeps its per-container state.
    pub state_root: PathBuf,
}

fn runtime_error(error: impl std::fmt::Display) -> EngineError {
    EngineError::Runtime(error.to_string())
}

impl OciRuntime for Libcontainer {
    fn run(&self, id: &str, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> Result<i32> {
        std::fs::create_dir_all(&self.state_root)
            .map_err(EngineError::io("creating runtime state directory"))?;
        let stdin =
            std::fs::File::open("/dev/null").map_err(EngineError::io("opening /dev/null"))?;
        let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_root_path(&self.state_root)
            .map_err(runtime_error)?
            .with_stdin(stdin)
            .with_stdout(stdout)
            .with_stderr(stderr)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(runtime_error)?;
        let pid = container
            .pid()
            .ok_or_else(|| EngineError::Runtime("libcontainer reported no pid".to_owned()))?;
        if let Err(error) = crate::sys::bring_up_loopback_of(pid.as_raw()) {
            let _ = container.delete(true);
            return Err(error);
        }
        container.start().map_err(runtime_error)?;
        Ok(pid.as_raw())
    }

    fn delete(&self, id: &str) -> Result<()> {
        let dir = self.state_root.join(id);
        if !dir.exists() {
            return Ok(());
        }
        let mut container = libcontainer::container::Container::load(dir).map_err(runtime_error)?;
        container.delete(true).map_err(runtime_error)
    }

    fn exec_command(&self, shoal_exe: &Path, id: &str, args: &[String]) -> Command {
        let mut command = Command::new(shoal_exe);
        command
            .arg("runtime-exec")
            .arg("--state-root")
            .arg(&self.state_root)
            .arg("--id")
            .arg(id)
            .arg("--")
            .args(args);
        command
    }
}

/// Runs `args` in container `id` with libcontainer and returns the exit code: the body of the
/// hidden `shoal runtime-exec` command. SIGTERM, SIGINT or SIGHUP to the helper kills the
/// process it runs in the container (a healthcheck that timed out) before the helper exits.
pub fn libcontainer_exec(state_root: &Path, id: &str, args: Vec<String>) -> Result<i32> {
    crate::sys::set_child_subreaper()?;
    let stop_requested = crate::sys::record_stop_signals()?;
    let pid = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(runtime_error)?
        .as_tenant()
        .with_container_args(args)
        .with_detach(true)
        .build()
        .map_err(runtime_error)?;
    crate::sys::wait_or_kill(pid.as_raw(), &stop_requested)
}

/// An external runtime binary with runc's command line (runc, crun, youki).
#[derive(Debug)]
pub struct ExternalRuntime {
    /// The binary.
    pub binary: PathBuf,
    /// Its `--root`.
    pub state_root: PathBuf,
}

impl OciRuntime for ExternalRuntime {
    fn run(&self, id: &str, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> Result<i32> {
        let pid_file = bundle.join("runtime.pid");
        let log_file = bundle.join("runtime.log");
        let _ = std::fs::remove_file(&pid_file);
        let status = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.state_root)
            .arg("--log")
            .arg(&log_file)
            .args(["run", "--detach", "--pid-file"])
            .arg(&pid_file)
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .status()
            .map_err(|e| EngineError::Runtime(format!("running {}: {e}", self.binary.display())))?;
        if !status.success() {
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            let last = log.lines().last().unwrap_or("no log").to_owned();
            return Err(EngineError::Runtime(format!(
                "{} run exited with {status}: {last}",
                self.binary.display()
            )));
        }
        let text = std::fs::read_to_string(&pid_file)
            .map_err(EngineError::io("reading the runtime's pid file"))?;
        text.trim()
            .parse()
            .map_err(|e| EngineError::Runtime(format!("bad pid file {text:?}: {e}")))
    }

    fn delete(&self, id: &str) -> Result<()> {
        if !self.state_root.join(id).exists() {
            return Ok(());
        }
        let output = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.state_root)
            .args(["delete", "--force", id])
            .output()
            .map_err(|e| EngineError::Runtime(format!("running {}: {e}", self.binary.display())))?;
        if !output.status.success() {
            return Err(EngineError::Runtime(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        Ok(())
    }

    fn exec_command(&self, _shoal_exe: &Path, id: &str, args: &[String]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--root")
            .arg(&self.state_root)
            .arg("exec")
            .arg(id)
            .args(args);
        command
    }
}
