//! A [`Host`] for tests: it records every call that changes something, answers as the test
//! scripted it, and plays the part of the shim and the container through their state files, so
//! lifecycle operations run without root, processes or mounts.
//!
//! Directories are really created and removed (tests give a temporary data root); mounts,
//! processes and the runtime exist only in the host's memory.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

use super::{ExecLaunch, ExecOutput, ExecProcess, ExecReader, Host, HostFuture, RuntimeRef};
use crate::container::{ContainerDir, RunStatus, ShimState};
use crate::error::{EngineError, Result};
use crate::util;

/// The first pid the host hands out; each shim, init and exec helper gets the next one.
const FIRST_PID: i32 = 4000;

/// One call that changed something on the host, with what identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    CreateDir(PathBuf),
    RemoveDir(PathBuf),
    WriteFile {
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    MountOverlay {
        lower: Vec<PathBuf>,
        target: PathBuf,
    },
    MountTmpfs(PathBuf),
    Unmount(PathBuf),
    RuntimeRun(String),
    RuntimeDelete(String),
    /// An exec helper started: the container, the process's arguments (from the file the
    /// engine wrote for it) and whether it was given a terminal.
    Exec {
        id: String,
        args: Vec<String>,
        tty: bool,
    },
    SetSubreaper,
    LaunchShim(String),
    RunCleanup(String),
    Signal {
        pid: i32,
        signal: i32,
    },
    Kill {
        pid: i32,
        signal: i32,
    },
    WaitPidExit(i32),
}

/// How a command run with [`Host::exec`] behaves.
#[derive(Clone, Debug)]
pub(crate) enum ExecScript {
    /// It exits at once with this output.
    Exits(ExecOutput),
    /// It runs until it is signalled.
    Hangs,
    /// It copies its stdin to its stdout and exits 0 when its stdin ends (`cat`).
    Echoes,
    /// It is given a real pseudo-terminal (a host pair, no root needed), whose slave the test
    /// takes with [`RecordingHost::take_terminal`], and runs until it is signalled or
    /// [`RecordingHost::finish`]ed, then exits 0.
    Terminal,
}

/// A container the host pretends to run.
struct Running {
    id: String,
    shim_pid: i32,
}

struct State {
    calls: Vec<Call>,
    /// Operations (by method name) that fail.
    failing: HashSet<&'static str>,
    /// `create_dir_all` answers Ok without creating anything.
    dirs_not_created: bool,
    mounted: HashSet<PathBuf>,
    /// The shim's answer; `None` starts the container and answers `ok <pid>`.
    shim_answer: Option<String>,
    /// Signals the pretend containers ignore.
    ignored_signals: HashSet<i32>,
    /// Running containers by init pid.
    running: HashMap<i32, Running>,
    /// Shims that still live.
    live_shims: HashSet<i32>,
    next_pid: i32,
    exec: ExecScript,
    /// `/proc/<pid>/cgroup` answers.
    cgroups: HashMap<i32, String>,
    /// Slaves of the terminals `ExecScript::Terminal` execs were given, with their pids.
    terminals: Vec<(i32, OwnedFd)>,
}

/// The recording host; see the module documentation.
pub(crate) struct RecordingHost {
    data_root: PathBuf,
    state: Mutex<State>,
    /// The processes that have gone away, for `wait_pid_exit` and hanging execs.
    gone: watch::Sender<HashSet<i32>>,
}

impl RecordingHost {
    pub(crate) fn new(data_root: &Path) -> RecordingHost {
        RecordingHost {
            data_root: data_root.to_path_buf(),
            state: Mutex::new(State {
                calls: Vec::new(),
                failing: HashSet::new(),
                dirs_not_created: false,
                mounted: HashSet::new(),
                shim_answer: None,
                ignored_signals: HashSet::new(),
                running: HashMap::new(),
                live_shims: HashSet::new(),
                next_pid: FIRST_PID,
                exec: ExecScript::Exits(ExecOutput::default()),
                cgroups: HashMap::new(),
                terminals: Vec::new(),
            }),
            gone: watch::channel(HashSet::new()).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The calls so far, which are then forgotten.
    pub(crate) fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    /// Makes the host operation named `operation` (its method name) fail.
    pub(crate) fn fail(&self, operation: &'static str) {
        self.state().failing.insert(operation);
    }

    /// Makes `create_dir_all` succeed without creating anything.
    pub(crate) fn create_no_dirs(&self) {
        self.state().dirs_not_created = true;
    }

    /// Sets the shim's one line of answer instead of starting the container.
    pub(crate) fn shim_answers(&self, line: &str) {
        self.state().shim_answer = Some(line.to_owned());
    }

    /// Makes the pretend containers ignore `signal`.
    pub(crate) fn ignore_signal(&self, signal: i32) {
        self.state().ignored_signals.insert(signal);
    }

    /// Makes `target` a mount point.
    pub(crate) fn mark_mounted(&self, target: &Path) {
        self.state().mounted.insert(target.to_path_buf());
    }

    /// Sets how commands run with `exec` behave.
    pub(crate) fn exec_behaves(&self, script: ExecScript) {
        self.state().exec = script;
    }

    /// The pid and terminal slave of the oldest `ExecScript::Terminal` exec not yet taken.
    pub(crate) fn take_terminal(&self) -> Option<(i32, OwnedFd)> {
        let mut state = self.state();
        (!state.terminals.is_empty()).then(|| state.terminals.remove(0))
    }

    /// Ends the pretend process `pid` (an exec that hangs or has a terminal).
    pub(crate) fn finish(&self, pid: i32) {
        self.exited(pid);
    }

    /// Sets what `/proc/<pid>/cgroup` holds.
    pub(crate) fn set_cgroup(&self, pid: i32, cgroup: &str) {
        self.state().cgroups.insert(pid, cgroup.to_owned());
    }

    /// Records `call`, and fails if `operation` was scripted to.
    fn record(&self, operation: &'static str, call: Call) -> Result<()> {
        let mut state = self.state();
        state.calls.push(call);
        if state.failing.contains(operation) {
            return Err(EngineError::Runtime(format!(
                "{operation} failed (scripted)"
            )));
        }
        Ok(())
    }

    fn next_pid(state: &mut State) -> i32 {
        let pid = state.next_pid;
        state.next_pid += 1;
        pid
    }

    /// Marks `pid` gone and wakes whoever waits for it.
    fn exited(&self, pid: i32) {
        self.gone.send_modify(|gone| {
            gone.insert(pid);
        });
    }

    /// Resolves once `pid` is gone.
    fn until_gone(&self, pid: i32) -> HostFuture<()> {
        let mut gone = self.gone.subscribe();
        Box::pin(async move {
            loop {
                if gone.borrow_and_update().contains(&pid) {
                    return;
                }
                if gone.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

impl RecordingHost {
    fn container_dir(&self, id: &str) -> ContainerDir {
        ContainerDir::new(&self.data_root, id)
    }

    /// Plays the shim starting container `id`: its state says running; returns the init pid.
    fn run_container(&self, id: &str) -> i32 {
        let (shim_pid, pid) = {
            let mut state = self.state();
            let shim_pid = Self::next_pid(&mut state);
            let pid = Self::next_pid(&mut state);
            state.live_shims.insert(shim_pid);
            let id = id.to_owned();
            state.running.insert(pid, Running { id, shim_pid });
            (shim_pid, pid)
        };
        let running = ShimState {
            status: RunStatus::Running,
            shim_pid: Some(shim_pid),
            pid: Some(pid),
            started_at: Some("2026-01-01T00:00:00.000000000Z".to_owned()),
            ..ShimState::default()
        };
        if let Err(error) = util::write_json(&self.container_dir(id).state(), &running) {
            panic!("the pretend shim could not write its state: {error}");
        }
        pid
    }

    /// Plays container init `pid` dying of `signal`: the shim records the exit and goes.
    fn kill_container(&self, pid: i32, signal: i32) {
        let Some(running) = self.state().running.remove(&pid) else {
            return;
        };
        let dir = self.container_dir(&running.id);
        let mut state = dir.read_state();
        state.status = RunStatus::Exited;
        state.shim_pid = None;
        state.pid = None;
        state.exit_code = Some(128 + signal);
        if let Err(error) = util::write_json(&dir.state(), &state) {
            panic!("the pretend shim could not write its state: {error}");
        }
        self.state().live_shims.remove(&running.shim_pid);
        self.exited(pid);
        self.exited(running.shim_pid);
    }
}

impl Host for RecordingHost {
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.record("create_dir_all", Call::CreateDir(path.to_path_buf()))?;
        if self.state().dirs_not_created {
            return Ok(());
        }
        std::fs::create_dir_all(path).map_err(EngineError::io("creating a test directory"))
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        self.record("remove_dir_all", Call::RemoveDir(path.to_path_buf()))?;
        match std::fs::remove_dir_all(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(EngineError::io("removing a test directory")(error))
            }
            _ => Ok(()),
        }
    }

    fn write_file(
        &self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let call = Call::WriteFile {
            path: path.to_path_buf(),
            contents: contents.to_vec(),
            mode,
            uid,
            gid,
        };
        self.record("write_file", call)
    }

    fn has_runtime_state(&self, _data_root: &Path, _id: &str) -> bool {
        false
    }

    fn prepare_init_dir(&self, data_root: &Path) -> Result<PathBuf> {
        Ok(data_root.join("init"))
    }

    fn last_capability(&self) -> u8 {
        40
    }

    fn is_mounted(&self, target: &Path) -> bool {
        self.state().mounted.contains(target)
    }

    fn mount_overlay(
        &self,
        lower: &[&Path],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> Result<()> {
        let call = Call::MountOverlay {
            lower: lower.iter().map(|p| p.to_path_buf()).collect(),
            target: target.to_path_buf(),
        };
        self.record("mount_overlay", call)?;
        self.mark_mounted(target);
        Ok(())
    }

    fn mount_tmpfs(&self, target: &Path, _options: &str) -> Result<()> {
        self.record("mount_tmpfs", Call::MountTmpfs(target.to_path_buf()))?;
        self.mark_mounted(target);
        Ok(())
    }

    fn unmount_if_mounted(&self, target: &Path) -> Result<()> {
        self.record("unmount_if_mounted", Call::Unmount(target.to_path_buf()))?;
        self.state().mounted.remove(target);
        Ok(())
    }

    fn runtime_run(
        &self,
        _runtime: RuntimeRef<'_>,
        id: &str,
        _bundle: &Path,
        _stdout: OwnedFd,
        _stderr: OwnedFd,
    ) -> Result<i32> {
        self.record("runtime_run", Call::RuntimeRun(id.to_owned()))?;
        let mut state = self.state();
        Ok(Self::next_pid(&mut state))
    }

    fn runtime_delete(&self, _runtime: RuntimeRef<'_>, id: &str) -> Result<()> {
        self.record("runtime_delete", Call::RuntimeDelete(id.to_owned()))
    }

    fn exec(&self, _runtime: RuntimeRef<'_>, id: &str, launch: &ExecLaunch) -> Result<ExecProcess> {
        let process: serde_json::Value = util::read_json(&launch.process_file)?;
        let args = process["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|arg| arg.as_str().map(str::to_owned))
            .collect();
        let call = Call::Exec {
            id: id.to_owned(),
            args,
            tty: launch.console_socket.is_some(),
        };
        self.record("exec", call)?;
        let (pid, script) = {
            let mut state = self.state();
            (Self::next_pid(&mut state), state.exec.clone())
        };
        // As a runtime would: the command's pid, for the session's `Pid` event.
        std::fs::write(&launch.pid_file, pid.to_string())
            .map_err(EngineError::io("writing the pretend pid file"))?;
        let nothing = || Box::pin(tokio::io::empty()) as ExecReader;
        let gone = self.until_gone(pid);
        let until_signalled: HostFuture<std::io::Result<i32>> = Box::pin(async move {
            gone.await;
            Ok(-1)
        });
        let process = match script {
            ExecScript::Exits(output) => ExecProcess {
                pid: Some(pid),
                stdin: None,
                stdout: Box::pin(std::io::Cursor::new(output.stdout)),
                stderr: Box::pin(std::io::Cursor::new(output.stderr)),
                terminal: None,
                exit: Box::pin(async move { Ok(output.code) }),
            },
            ExecScript::Hangs => ExecProcess {
                pid: Some(pid),
                stdin: None,
                stdout: nothing(),
                stderr: nothing(),
                terminal: None,
                exit: until_signalled,
            },
            ExecScript::Echoes => {
                let (stdin, mut command_stdin) = tokio::io::duplex(1024);
                let (mut command_stdout, stdout) = tokio::io::duplex(1024);
                ExecProcess {
                    pid: Some(pid),
                    stdin: launch.stdin.then(|| Box::pin(stdin) as _),
                    stdout: Box::pin(stdout),
                    stderr: nothing(),
                    terminal: None,
                    exit: Box::pin(async move {
                        tokio::io::copy(&mut command_stdin, &mut command_stdout).await?;
                        Ok(0)
                    }),
                }
            }
            ExecScript::Terminal => {
                let (master, slave) = crate::console::pty_pair()
                    .map_err(EngineError::io("opening a pretend terminal"))?;
                self.state().terminals.push((pid, slave));
                let gone = self.until_gone(pid);
                ExecProcess {
                    pid: Some(pid),
                    stdin: None,
                    stdout: nothing(),
                    stderr: nothing(),
                    terminal: Some(Box::pin(async move { Ok(master) })),
                    exit: Box::pin(async move {
                        gone.await;
                        Ok(0)
                    }),
                }
            }
        };
        Ok(process)
    }

    fn set_child_subreaper(&self) -> Result<()> {
        self.record("set_child_subreaper", Call::SetSubreaper)
    }

    fn launch_shim(&self, id: &str, _launch: Vec<u8>) -> HostFuture<Result<String>> {
        let answer = self
            .record("launch_shim", Call::LaunchShim(id.to_owned()))
            .map(|()| {
                let scripted = self.state().shim_answer.clone();
                scripted.unwrap_or_else(|| format!("ok {}\n", self.run_container(id)))
            });
        Box::pin(async move { answer })
    }

    fn run_cleanup(&self, id: &str) -> HostFuture<Result<()>> {
        let done = self.record("run_cleanup", Call::RunCleanup(id.to_owned()));
        Box::pin(async move { done })
    }

    fn signal_pid(&self, pid: i32, signal: i32, still_ours: &dyn Fn() -> bool) -> Result<bool> {
        if !still_ours() {
            return Ok(false);
        }
        self.record("signal_pid", Call::Signal { pid, signal })?;
        if !self.state().ignored_signals.contains(&signal) {
            self.kill_container(pid, signal);
        }
        Ok(true)
    }

    fn kill(&self, pid: i32, signal: i32) {
        let _ = self.record("kill", Call::Kill { pid, signal });
        if !self.state().ignored_signals.contains(&signal) {
            self.kill_container(pid, signal);
            self.exited(pid);
        }
    }

    fn wait_pid_exit(&self, pid: i32) -> HostFuture<()> {
        let _ = self.record("wait_pid_exit", Call::WaitPidExit(pid));
        self.until_gone(pid)
    }

    fn process_matches(&self, pid: i32, _needle: &str) -> bool {
        self.state().live_shims.contains(&pid)
    }

    fn process_cgroup(&self, pid: i32) -> String {
        self.state().cgroups.get(&pid).cloned().unwrap_or_default()
    }
}
