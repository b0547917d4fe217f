//! The OCI runtimes a shim can drive: youki's `libcontainer`, linked in, or an external binary
//! with runc's command line. Both take the same bundle; the shim does not care which it has.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use crate::error::{EngineError, Result};
use crate::host::ExecLaunch;

/// One OCI runtime.
pub trait OciRuntime {
    /// Creates and starts container `id` from the bundle directory, its stdout and stderr going
    /// to the given pipes. Returns the container init's host pid. The caller is a subreaper, so
    /// that process becomes its child once the runtime steps away.
    fn run(&self, id: &str, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> Result<i32>;
    /// Forgets container `id`: its cgroups and runtime state. Succeeds if it is already gone.
    fn delete(&self, id: &str) -> Result<()>;
    /// The exec helper (`shoal runtime-exec`) that runs `launch`'s process inside the running
    /// container `id` through this runtime and exits with the command's code.
    fn exec_command(&self, shoal_exe: &Path, id: &str, launch: &ExecLaunch) -> Command;
}

/// `shoal runtime-exec` with what every runtime's exec takes; the runtime adds its own flags.
fn exec_helper(shoal_exe: &Path, state_root: &Path, id: &str, launch: &ExecLaunch) -> Command {
    let mut command = Command::new(shoal_exe);
    command
        .arg("runtime-exec")
        .arg("--state-root")
        .arg(state_root)
        .arg("--id")
        .arg(id)
        .arg("--process")
        .arg(&launch.process_file)
        .arg("--pid-file")
        .arg(&launch.pid_file);
    if let Some(socket) = &launch.console_socket {
        command.arg("--console-socket").arg(socket);
    }
    command
}

/// What `shoal runtime-exec` is told: which runtime, which container, and the files the engine
/// prepared (`ExecLaunch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecHelperArgs {
    /// An external runc-compatible binary; `None` for the built-in libcontainer.
    pub runtime: Option<PathBuf>,
    /// The runtime's state root.
    pub state_root: PathBuf,
    /// The container.
    pub id: String,
    /// The OCI process to run.
    pub process_file: PathBuf,
    /// Where the runtime writes the command's pid.
    pub pid_file: PathBuf,
    /// With a terminal: where the runtime sends its master.
    pub console_socket: Option<PathBuf>,
}

/// The body of the hidden `shoal runtime-exec` command: runs the process in the container and
/// returns its exit code. The helper is a subreaper, so the command becomes its child once the
/// runtime steps away (both runtimes start it detached), and waits for it; SIGTERM, SIGINT or
/// SIGHUP to the helper kills the command (a healthcheck that timed out, a caller gone) before
/// the helper exits.
pub fn exec_main(args: &ExecHelperArgs) -> Result<i32> {
    crate::sys::set_child_subreaper()?;
    let stop_requested = crate::sys::record_stop_signals()?;
    let pid = match &args.runtime {
        None => libcontainer_exec(args)?,
        Some(binary) => external_exec(binary, args)?,
    };
    crate::sys::wait_or_kill(pid, &stop_requested)
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

    fn exec_command(&self, shoal_exe: &Path, id: &str, launch: &ExecLaunch) -> Command {
        exec_helper(shoal_exe, &self.state_root, id, launch)
    }
}

/// Starts `args`' process in its container with libcontainer, detached; returns its pid.
fn libcontainer_exec(args: &ExecHelperArgs) -> Result<i32> {
    let pid = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map_err(runtime_error)?
        .with_pid_file(Some(&args.pid_file))
        .map_err(runtime_error)?
        .with_console_socket(args.console_socket.as_ref())
        .with_executor(SizedTerminalExecutor)
        .as_tenant()
        .with_process(Some(&args.process_file))
        .with_detach(true)
        .build()
        .map_err(runtime_error)?;
    Ok(pid.as_raw())
}

/// libcontainer's own executor, which first gives the command's terminal the process's
/// `consoleSize`: libcontainer does not (runc does), and sizing it here, inside the container
/// before the command starts, leaves no moment when the command could see the wrong size.
#[derive(Clone)]
struct SizedTerminalExecutor;

impl libcontainer::workload::Executor for SizedTerminalExecutor {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        if let Some(process) = spec.process()
            && process.terminal() == Some(true)
            && let Some(size) = process.console_size()
        {
            let winsize = rustix::termios::Winsize {
                ws_row: u16::try_from(size.height()).unwrap_or(u16::MAX),
                ws_col: u16::try_from(size.width()).unwrap_or(u16::MAX),
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // stdin is the terminal by now; a size it refuses leaves the kernel's default.
            let _ = rustix::termios::tcsetwinsize(std::io::stdin(), winsize);
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
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

    fn exec_command(&self, shoal_exe: &Path, id: &str, launch: &ExecLaunch) -> Command {
        let mut command = exec_helper(shoal_exe, &self.state_root, id, launch);
        command.arg("--runtime").arg(&self.binary);
        command
    }
}

/// Starts `args`' process in its container with an external runtime, detached (the console
/// socket wants it so), and returns its pid from the runtime's pid file.
fn external_exec(binary: &Path, args: &ExecHelperArgs) -> Result<i32> {
    let _ = std::fs::remove_file(&args.pid_file);
    let mut command = Command::new(binary);
    command
        .arg("--root")
        .arg(&args.state_root)
        .args(["exec", "--detach", "--pid-file"])
        .arg(&args.pid_file)
        .arg("--process")
        .arg(&args.process_file);
    if let Some(socket) = &args.console_socket {
        command.arg("--console-socket").arg(socket);
    }
    let status = command
        .arg(&args.id)
        .status()
        .map_err(|e| EngineError::Runtime(format!("running {}: {e}", binary.display())))?;
    if !status.success() {
        // Its own message went to stderr, which is the caller's.
        return Err(EngineError::Runtime(format!(
            "{} exec exited with {status}",
            binary.display()
        )));
    }
    let text = std::fs::read_to_string(&args.pid_file)
        .map_err(EngineError::io("reading the runtime's pid file"))?;
    text.trim()
        .parse()
        .map_err(|e| EngineError::Runtime(format!("bad pid file {text:?}: {e}")))
}
