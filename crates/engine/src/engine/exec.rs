//! Commands run inside a running container: exec sessions (`ExecStream`, `shoal container
//! exec`, the Docker API's exec), `exec` (a session's output collected, `ExecContainer`), and
//! the healthcheck loop and its probes, which run on the same sessions. A session's driver
//! carries the command's output out as it comes (from pipes, or from the pseudo-terminal's
//! master), its input in, resizes to the terminal, and the exit code last. A session whose
//! caller is gone, or a probe that outlives its timeout, is told to stop (so the exec helper
//! kills what it runs in the container), then killed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Entry, Inner, LocalEngine, lock};
use crate::beneath::{Beneath, Found};
use crate::console::Console;
use crate::container::RunStatus;
use crate::error::{EngineError, Result};
use crate::exec_spec::{self, ExecSpec, TerminalSize};
use crate::health::Probe;
use crate::host::{ExecLaunch, ExecOutput, ExecProcess, ExecReader, ExecWriter, Host};
use crate::{spec, util};

/// What a caller sends a running exec session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecInput {
    /// Bytes for the command's stdin (with `attach_stdin`).
    Stdin(Vec<u8>),
    /// The end of the command's stdin: it reads EOF (ignored with a terminal, which has no end
    /// short of the command's).
    CloseStdin,
    /// The terminal's new size (with `tty`).
    Resize(TerminalSize),
}

/// What an exec session reports: output as it comes, the command's pid once known, and the
/// exit code last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    /// The command's host pid.
    Pid(i32),
    /// Bytes the command wrote to stdout (with a terminal: everything it wrote).
    Stdout(Vec<u8>),
    /// Bytes the command wrote to stderr, and the runtime's own errors.
    Stderr(Vec<u8>),
    /// Its exit code (128 + signal when killed, 126 when the runtime could not run it); the
    /// last event.
    Exited(i32),
}

/// A command running in a container. Dropping the session (or [`ExecSession::stop`]) stops the
/// command; dropping only the input ends its stdin.
pub struct ExecSession {
    inputs: mpsc::Sender<ExecInput>,
    events: mpsc::Receiver<ExecEvent>,
    driver: JoinHandle<()>,
}

impl ExecSession {
    /// Where input goes: stdin bytes, its end, resizes.
    pub fn inputs(&self) -> mpsc::Sender<ExecInput> {
        self.inputs.clone()
    }

    /// The next event; `None` after [`ExecEvent::Exited`].
    pub async fn next(&mut self) -> Option<ExecEvent> {
        self.events.recv().await
    }

    /// The input sender and the event receiver apart, for a caller that forwards each from a
    /// task of its own. Dropping the receiver stops the command.
    pub fn split(self) -> (mpsc::Sender<ExecInput>, mpsc::Receiver<ExecEvent>) {
        (self.inputs, self.events)
    }

    /// Reads the session to its end: all output, and the exit code (-1 if it ended without
    /// one).
    pub async fn collect(&mut self) -> ExecOutput {
        let mut output = ExecOutput {
            code: -1,
            ..ExecOutput::default()
        };
        while let Some(event) = self.next().await {
            match event {
                ExecEvent::Pid(_) => {}
                ExecEvent::Stdout(bytes) => output.stdout.extend(bytes),
                ExecEvent::Stderr(bytes) => output.stderr.extend(bytes),
                ExecEvent::Exited(code) => output.code = code,
            }
        }
        output
    }

    /// Stops the command and waits until its helper is gone.
    pub async fn stop(self) {
        let ExecSession {
            inputs,
            events,
            driver,
        } = self;
        drop((inputs, events));
        let _ = driver.await;
    }
}

impl LocalEngine {
    /// Starts `spec` inside running container `name_or_id`, through the runtime it was created
    /// with. Errors found before anything runs (no such container, not running, a bad request,
    /// an unknown user) come back here; the runtime's own come as stderr and exit code 126.
    pub async fn exec_session(&self, name_or_id: &str, spec: ExecSpec) -> Result<ExecSession> {
        let entry = self.inner.find(name_or_id)?;
        self.inner.exec_session(&entry, &spec)
    }

    /// Runs `args` inside running container `name_or_id` with the container's environment,
    /// directory and user, and returns its exit code and output once it exits.
    pub async fn exec(&self, name_or_id: &str, args: &[String]) -> Result<ExecOutput> {
        let mut session = self
            .exec_session(name_or_id, ExecSpec::command(args.to_vec()))
            .await?;
        Ok(session.collect().await)
    }
}

/// How many events or inputs wait in a session's channels before the other side slows down.
const CHANNEL_DEPTH: usize = 64;

/// The most a single read of the command's output takes.
const READ_BYTES: usize = 32 * 1024;

/// How long output may still drain once the command has exited: what it wrote last is still in
/// its pipes or terminal, and a child it left behind may hold them open for ever.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The exit code of a command the runtime could not run (Docker's).
const NOT_RUN: i32 = 126;

/// The files one exec hands its helper, under `<data-root>/exec` (short, for the socket's sake),
/// removed when the session ends.
#[derive(Clone, Debug)]
struct ExecFiles {
    process: PathBuf,
    pid: PathBuf,
    socket: PathBuf,
}

impl ExecFiles {
    fn new(data_root: &Path) -> Result<ExecFiles> {
        let dir = data_root.join("exec");
        std::fs::create_dir_all(&dir)
            .map_err(EngineError::io(format!("creating {}", dir.display())))?;
        let name = &util::random_id()?[..16];
        Ok(ExecFiles {
            process: dir.join(format!("{name}.json")),
            pid: dir.join(format!("{name}.pid")),
            socket: dir.join(format!("{name}.sock")),
        })
    }

    fn remove(&self) {
        for path in [&self.process, &self.pid, &self.socket] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The command's pid, once the runtime has written it.
    fn read_pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid).ok()?.trim().parse().ok()
    }
}

impl Inner {
    /// Starts `spec` in `entry`'s container: checks it runs, works out the OCI process from
    /// the container's own, writes it for the helper, starts the helper and a driver for it.
    pub(super) fn exec_session(&self, entry: &Entry, spec: &ExecSpec) -> Result<ExecSession> {
        exec_spec::validate(spec)?;
        let status = entry.dir.read_state().status;
        if status != RunStatus::Running {
            return Err(EngineError::WrongState {
                id: entry.record.id.clone(),
                state: serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                hint: "start it first: a command runs only in a running container".into(),
            });
        }
        let config = oci_spec::runtime::Spec::load(entry.dir.oci_config())
            .map_err(|e| EngineError::invalid("the container's config.json", e))?;
        let container_process = config.process().clone().ok_or_else(|| {
            EngineError::invalid("the container's config.json", "it has no process")
        })?;
        let user = match &spec.user {
            None => None,
            Some(user) => Some(self.resolve_exec_user(entry, user)?),
        };
        let process = exec_spec::exec_process(&container_process, spec, user.as_ref())?;
        let files = ExecFiles::new(&self.config.data_root)?;
        let launch = ExecLaunch {
            process_file: files.process.clone(),
            pid_file: files.pid.clone(),
            console_socket: spec.tty.then(|| files.socket.clone()),
            stdin: spec.attach_stdin && !spec.tty,
        };
        let started = util::write_json(&files.process, &process).and_then(|()| {
            self.host
                .exec(self.runtime_of(entry), &entry.record.id, &launch)
        });
        let process = match started {
            Ok(process) => process,
            Err(error) => {
                files.remove();
                return Err(error);
            }
        };
        let (inputs, input_receiver) = mpsc::channel(CHANNEL_DEPTH);
        let (event_sender, events) = mpsc::channel(CHANNEL_DEPTH);
        let driver = tokio::spawn(drive(
            self.host.clone(),
            process,
            spec.size,
            spec.attach_stdin,
            input_receiver,
            event_sender,
            files,
        ));
        Ok(ExecSession {
            inputs,
            events,
            driver,
        })
    }

    /// `user` (`uid[:gid]` or `name[:group]`) looked up in the running container's own
    /// `/etc/passwd` and `/etc/group`, read beneath its root filesystem.
    fn resolve_exec_user(&self, entry: &Entry, user: &str) -> Result<spec::ResolvedUser> {
        let limit = self.images.limits().image_file_bytes;
        let rootfs = Beneath::open(&entry.dir.rootfs())
            .map_err(EngineError::io("opening the container's root filesystem"))?;
        let read = |file: &str| -> Result<String> {
            match rootfs.read(Path::new(file), limit) {
                Ok(Found::File(contents)) => Ok(String::from_utf8_lossy(&contents).into_owned()),
                Ok(Found::Missing | Found::Whiteout) => Ok(String::new()),
                Err(error) => Err(EngineError::invalid(
                    format!("the container's /{file}"),
                    error,
                )),
            }
        };
        spec::resolve_user(user, &read("etc/passwd")?, &read("etc/group")?)
    }
}

/// Carries one session from its helper's start to its exit code; see the module documentation.
async fn drive(
    host: Arc<dyn Host>,
    process: ExecProcess,
    size: Option<TerminalSize>,
    attach_stdin: bool,
    inputs: mpsc::Receiver<ExecInput>,
    events: mpsc::Sender<ExecEvent>,
    files: ExecFiles,
) {
    let ExecProcess {
        pid: helper,
        stdin,
        stdout,
        stderr,
        terminal,
        mut exit,
    } = process;
    let mut pumps = vec![
        tokio::spawn(pump(stdout, events.clone(), ExecEvent::Stdout)),
        tokio::spawn(pump(stderr, events.clone(), ExecEvent::Stderr)),
    ];
    let mut exited = None;
    let mut console = None;
    if let Some(terminal) = terminal {
        // The runtime sends the terminal before the command starts; until then there is
        // nothing to read, write or resize.
        tokio::select! {
            master = terminal => match master.and_then(Console::new) {
                Ok(opened) => {
                    let opened = Arc::new(opened);
                    if let Some(size) = size
                        && let Err(error) = opened.resize(size)
                    {
                        tracing::debug!(%error, "could not size the exec's terminal");
                    }
                    pumps.push(tokio::spawn(pump_console(opened.clone(), events.clone())));
                    console = Some(opened);
                }
                Err(error) => {
                    let message = format!("receiving the exec's terminal from the runtime: {error}\n");
                    let _ = events.send(ExecEvent::Stderr(message.into_bytes())).await;
                    // Whatever the stopped helper says, the command did not run as asked.
                    let _ = stop_helper(host.as_ref(), helper, &mut exit).await;
                    exited = Some(Ok(NOT_RUN));
                }
            },
            code = &mut exit => exited = Some(code),
            () = events.closed() => {
                let _ = stop_helper(host.as_ref(), helper, &mut exit).await;
                finish(pumps, None, &files).await;
                return;
            }
        }
    }
    let writer = match &console {
        Some(console) if attach_stdin => Some(InputTarget::Console(console.clone())),
        Some(_) => None,
        None => stdin.map(InputTarget::Pipe),
    };
    let feeder = tokio::spawn(feed(inputs, writer, console.clone()));
    let mut pid_known = false;
    let mut pid_wait = Duration::from_millis(5);
    let code = loop {
        if let Some(code) = exited.take() {
            break Some(code);
        }
        tokio::select! {
            code = &mut exit => break Some(code),
            () = events.closed() => {
                let _ = stop_helper(host.as_ref(), helper, &mut exit).await;
                break None;
            }
            () = tokio::time::sleep(pid_wait), if !pid_known => {
                if let Some(pid) = files.read_pid() {
                    pid_known = true;
                    let _ = events.send(ExecEvent::Pid(pid)).await;
                }
                pid_wait = (pid_wait * 2).min(Duration::from_millis(200));
            }
        }
    };
    feeder.abort();
    if !pid_known
        && code.is_some()
        && let Some(pid) = files.read_pid()
    {
        // A command quicker than the first look still has its pid told.
        let _ = events.send(ExecEvent::Pid(pid)).await;
    }
    let code = code.map(|code| match code {
        Ok(code) => code,
        Err(error) => {
            tracing::warn!(%error, "waiting for the exec helper failed");
            NOT_RUN
        }
    });
    finish(pumps, code.map(|code| (code, events)), &files).await;
}

/// Lets the output drain (for at most [`DRAIN_GRACE`]), reports the exit code if there is one
/// to report, and removes the session's files.
async fn finish(
    pumps: Vec<JoinHandle<()>>,
    code: Option<(i32, mpsc::Sender<ExecEvent>)>,
    files: &ExecFiles,
) {
    let aborts: Vec<_> = pumps.iter().map(JoinHandle::abort_handle).collect();
    if code.is_some() {
        let drained = async {
            for pump in pumps {
                let _ = pump.await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_GRACE, drained).await;
    }
    for abort in aborts {
        abort.abort();
    }
    if let Some((code, events)) = code {
        let _ = events.send(ExecEvent::Exited(code)).await;
    }
    files.remove();
}

/// Asks the helper to stop (it kills the command first) and gives it [`PROBE_STOP_GRACE`];
/// returns its exit if it came (`exit` is then spent). One that did not is killed when `exit`
/// is dropped.
async fn stop_helper(
    host: &dyn Host,
    helper: Option<i32>,
    exit: &mut crate::host::HostFuture<std::io::Result<i32>>,
) -> Option<std::io::Result<i32>> {
    // The helper is unreaped until `exit` completes, so its pid is still its own.
    let pid = helper?;
    host.kill(pid, libc::SIGTERM);
    tokio::time::timeout(PROBE_STOP_GRACE, exit).await.ok()
}

/// Copies `reader` into events made by `event` until it ends or nobody listens.
async fn pump(
    mut reader: ExecReader,
    events: mpsc::Sender<ExecEvent>,
    event: fn(Vec<u8>) -> ExecEvent,
) {
    let mut buffer = vec![0u8; READ_BYTES];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if events.send(event(buffer[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies what the command writes to its terminal into stdout events.
async fn pump_console(console: Arc<Console>, events: mpsc::Sender<ExecEvent>) {
    let mut buffer = vec![0u8; READ_BYTES];
    loop {
        match console.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if events
                    .send(ExecEvent::Stdout(buffer[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Where a session's stdin bytes go.
enum InputTarget {
    Pipe(ExecWriter),
    Console(Arc<Console>),
}

/// Carries the caller's input to the command: stdin bytes to its pipe or terminal, resizes to
/// the terminal. The end of input (or of the caller's sender) closes a pipe; a terminal stays.
async fn feed(
    mut inputs: mpsc::Receiver<ExecInput>,
    mut target: Option<InputTarget>,
    console: Option<Arc<Console>>,
) {
    while let Some(input) = inputs.recv().await {
        match input {
            ExecInput::Stdin(bytes) => {
                let written = match &mut target {
                    Some(InputTarget::Pipe(pipe)) => pipe.write_all(&bytes).await,
                    Some(InputTarget::Console(console)) => console.write_all(&bytes).await,
                    None => Ok(()),
                };
                if let Err(error) = written {
                    // The command closed its stdin or exited; what it reads no longer matters.
                    tracing::debug!(%error, "exec input not delivered");
                    target = None;
                }
            }
            ExecInput::CloseStdin => {
                if let Some(InputTarget::Pipe(mut pipe)) = target.take() {
                    let _ = pipe.shutdown().await;
                }
            }
            ExecInput::Resize(size) => {
                if let Some(console) = &console
                    && let Err(error) = console.resize(size)
                {
                    tracing::debug!(%error, "could not resize the exec's terminal");
                }
            }
        }
    }
    if let Some(InputTarget::Pipe(mut pipe)) = target {
        let _ = pipe.shutdown().await;
    }
}

/// How long an exec helper told to stop (a healthcheck that timed out) gets to kill its probe
/// and exit before it is killed itself.
const PROBE_STOP_GRACE: Duration = Duration::from_secs(2);

/// How much of a probe's output is kept.
const PROBE_OUTPUT_BYTES: usize = 4096;

impl Inner {
    /// Runs the container's healthcheck every interval while it runs, recording each result.
    pub(super) fn start_health(self: &Arc<Self>, entry: &Arc<Entry>) {
        let Some(check) = entry.record.spec.healthcheck.clone() else {
            return;
        };
        let inner = self.clone();
        let task_entry = entry.clone();
        let task = tokio::spawn(async move {
            let entry = task_entry;
            let started = Instant::now();
            let mut interval = tokio::time::interval_at(
                tokio::time::Instant::now() + check.interval,
                check.interval,
            );
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if entry.dir.read_state().status != RunStatus::Running {
                    return;
                }
                let probe = inner.probe(&entry, &check.test, check.timeout).await;
                let mut health = entry.dir.read_health().unwrap_or_default();
                health.record(probe, started.elapsed() < check.start_period, check.retries);
                if let Err(error) = util::write_json(&entry.dir.health(), &health) {
                    tracing::warn!(%error, "could not record health");
                }
            }
        });
        if let Some(old) = lock(&entry.health_task).replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Runs `test` in the container once, giving it `timeout`.
    pub(super) async fn probe(&self, entry: &Entry, test: &[String], timeout: Duration) -> Probe {
        let start = util::rfc3339(SystemTime::now());
        let (exit_code, output) = match self.exec_session(entry, &ExecSpec::command(test.to_vec()))
        {
            Err(error) => (-1, format!("cannot run the healthcheck: {error}")),
            Ok(mut session) => match tokio::time::timeout(timeout, session.collect()).await {
                Err(_) => {
                    // Dropping the session would SIGKILL the exec helper and leave the probe
                    // running in the container; told to stop, the helper kills the probe first
                    // (runc's exec, detached, leaves it the helper's child too).
                    session.stop().await;
                    (-1, format!("healthcheck timed out after {timeout:?}"))
                }
                Ok(output) => (output.code, probe_text(&output)),
            },
        };
        Probe {
            start,
            end: util::rfc3339(SystemTime::now()),
            exit_code,
            output,
        }
    }
}

/// stdout then stderr, cut to at most [`PROBE_OUTPUT_BYTES`] on a character boundary (a probe
/// may print any text, and cutting inside a character would panic).
fn probe_text(output: &ExecOutput) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if text.len() > PROBE_OUTPUT_BYTES {
        let mut end = PROBE_OUTPUT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod probe_text_tests {
    use super::*;

    #[test]
    fn long_output_is_cut_on_a_character_boundary() {
        // 'é' is two bytes, so the limit falls inside a character.
        let output = ExecOutput {
            code: 1,
            stdout: "é".repeat(PROBE_OUTPUT_BYTES).into_bytes(),
            stderr: Vec::new(),
        };
        let text = probe_text(&output);
        assert!(text.len() <= PROBE_OUTPUT_BYTES && text.len() >= PROBE_OUTPUT_BYTES - 1);
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn short_output_is_stdout_then_stderr() {
        let output = ExecOutput {
            code: 0,
            stdout: b"out ".to_vec(),
            stderr: b"err".to_vec(),
        };
        assert_eq!(probe_text(&output), "out err");
    }
}
