//! Running a command with a deadline and its output captured, so a hung command fails the test
//! with what it printed instead of hanging it.

use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::HarnessError;

/// How long a command may take by default before the harness calls it hung.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Exit status, stdout and stderr of a finished command, on one line for error messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "exit {:?}; stdout: {}; stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

/// The program and arguments of `command`, for messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs `command` with stdin closed and stdout and stderr captured; kills it and returns
/// [`HarnessError::CommandHung`] when it runs longer than `timeout`.
pub fn run(command: &mut Command, timeout: Duration) -> Result<Output, HarnessError> {
    run_fed(command, None, timeout)
}

/// Runs `command` as [`run`] does, with `input` as its stdin, which then ends.
pub fn run_with_input(
    command: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> Result<Output, HarnessError> {
    run_fed(command, Some(input.to_vec()), timeout)
}

fn run_fed(
    command: &mut Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output, HarnessError> {
    let description = describe(command);
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(HarnessError::io(format!("starting `{description}`")))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // From a thread, so a command that reads late can't block this one; dropping the pipe
        // is the input's end.
        std::thread::spawn(move || {
            use std::io::Write as _;
            let _ = stdin.write_all(&input);
        });
    }
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    // Short commands are the common case: start polling fast, back off to 20 ms.
    let mut pause = Duration::from_millis(1);
    let finished = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::io(format!("waiting for `{description}`"))(
                    error,
                ));
            }
        }
    };
    let status = match finished {
        Some(status) => status,
        None => {
            let _ = child.kill();
            child
                .wait()
                .map_err(HarnessError::io(format!("reaping `{description}`")))?
        }
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if finished.is_none() {
        return Err(HarnessError::CommandHung {
            command: description,
            timeout,
            output: output_text(&output),
        });
    }
    Ok(output)
}

/// Runs `command` (see [`run`]) and returns its stdout, or [`HarnessError::CommandFailed`].
pub(crate) fn run_ok(command: &mut Command, timeout: Duration) -> Result<String, HarnessError> {
    let output = run(command, timeout)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(HarnessError::CommandFailed {
            command: describe(command),
            output: output_text(&output),
        })
    }
}

/// Stops process `pid` (SIGSTOP) for `pause`, then lets it go on, as when its machine freezes,
/// is paused or starves it of CPU. Panics if either signal can't be sent.
pub fn pause_process(pid: u32, pause: Duration) {
    let pid = i32::try_from(pid).expect("a pid fits an i32");
    // SAFETY: kill takes two integers and has no memory effects.
    let stopped = unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert_eq!(stopped, 0, "kill -STOP {pid}");
    std::thread::sleep(pause);
    // SAFETY: as above.
    let continued = unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(continued, 0, "kill -CONT {pid}");
}
