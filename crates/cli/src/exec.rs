//! `shoal container exec [-i] [-t] [-e K=V] [-w DIR] [-u USER] CONTAINER CMD...`: one session
//! of the engine's `ExecStream`. The command's output is written as it comes and its exit code
//! becomes ours; `-i` sends our stdin and its end; `-t` gives the command a terminal, puts ours
//! in raw mode while attached (restored on every way out) and passes our window's size, and
//! its changes (SIGWINCH), on. What a request means is the daemon's to judge. Leaving early
//! (Ctrl-C without a terminal, SIGTERM, SIGHUP) ends the stream, which stops the command.

use std::io::{IsTerminal as _, Read as _, Write as _};

use anyhow::Context as _;
use shoal_proto::engine as pb;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::client::{connect, daemon_error};

/// What `container exec` was asked, past the container and the command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExecOptions {
    pub(crate) interactive: bool,
    pub(crate) tty: bool,
    /// As given: `KEY=value`, or a bare `KEY` (this shell's value, else removed).
    pub(crate) env: Vec<String>,
    pub(crate) workdir: Option<String>,
    pub(crate) user: Option<String>,
}

/// How many inputs wait for the daemon before the reader of our stdin waits.
const INPUT_DEPTH: usize = 32;

/// The most read from our stdin at once.
const STDIN_READ_BYTES: usize = 32 * 1024;

/// Refuses a terminal session our stdin can't carry: with `-i -t`, keystrokes come from our
/// terminal, so stdin must be one (the docker CLI's rule and words).
fn check_terminal(options: &ExecOptions, stdin_is_terminal: bool) -> anyhow::Result<()> {
    if options.tty && options.interactive && !stdin_is_terminal {
        anyhow::bail!(
            "the input device is not a TTY: leave out -t to pipe input, or run from a terminal"
        );
    }
    Ok(())
}

/// The stream's first message: what to run, how, and the terminal's size from the start.
fn start_message(
    container: String,
    command: Vec<String>,
    options: &ExecOptions,
    env: Vec<String>,
    size: Option<pb::TerminalSize>,
) -> pb::ExecInput {
    pb::ExecInput {
        input: Some(pb::exec_input::Input::Start(pb::ExecStart {
            id: container,
            args: command,
            tty: options.tty,
            attach_stdin: options.interactive,
            env,
            workdir: options.workdir.clone().unwrap_or_default(),
            user: options.user.clone().unwrap_or_default(),
            size: size.filter(|_| options.tty),
        })),
    }
}

fn input(input: pb::exec_input::Input) -> pb::ExecInput {
    pb::ExecInput { input: Some(input) }
}

/// Our window's size (stdout's, as the docker CLI takes it, else stdin's); `None` when neither
/// is a terminal or it has no size.
fn local_size() -> Option<pb::TerminalSize> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some(pb::TerminalSize {
        rows: u32::from(size.ws_row),
        columns: u32::from(size.ws_col),
    })
}

/// Our terminal in raw mode (keystrokes go to the command as they are typed, Ctrl-C
/// included) until dropped, which restores it, on an error's way out or a panic's too.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Reads our stdin on a thread of its own (a blocking read a runtime could not drop) into
/// stdin inputs, and its end into the stdin's end.
fn forward_stdin(inputs: mpsc::Sender<pb::ExecInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = vec![0u8; STDIN_READ_BYTES];
        loop {
            let next = match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => pb::exec_input::Input::CloseStdin(pb::Empty {}),
                Ok(n) => pb::exec_input::Input::Stdin(buffer[..n].to_vec()),
            };
            let end = matches!(next, pb::exec_input::Input::CloseStdin(_));
            if inputs.blocking_send(input(next)).is_err() || end {
                return;
            }
        }
    });
}

/// Runs `command` in `container` and returns its exit code for ours.
pub(crate) async fn run(
    host: &str,
    container: String,
    command: Vec<String>,
    options: ExecOptions,
) -> anyhow::Result<i32> {
    let stdin_is_terminal = std::io::stdin().is_terminal();
    check_terminal(&options, stdin_is_terminal)?;
    let env =
        crate::service::spec::resolve_env("env", &options.env, &|key| std::env::var(key).ok())?;
    let mut client = connect(host).await?;
    let (inputs, receiver) = mpsc::channel(INPUT_DEPTH);
    let size = if options.tty { local_size() } else { None };
    inputs
        .send(start_message(container, command, &options, env, size))
        .await
        .context("sending the exec request")?;
    // The daemon answers once the command runs, or with why it can't; only then does our
    // terminal change.
    let mut outputs = client
        .exec_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .map_err(daemon_error)?
        .into_inner();
    // As the docker CLI: raw only when our keystrokes go to the command.
    let raw = if options.tty && options.interactive && stdin_is_terminal {
        Some(RawMode::enter()?)
    } else {
        None
    };
    if options.interactive {
        forward_stdin(inputs.clone());
    }
    let mut resized = signal(SignalKind::window_change()).context("watching SIGWINCH")?;
    let mut terminated = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut hung_up = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    let code = loop {
        let output = tokio::select! {
            output = outputs.message() => output.map_err(daemon_error)?,
            _ = resized.recv(), if options.tty => {
                if let Some(size) = local_size() {
                    let _ = inputs.send(input(pb::exec_input::Input::Resize(size))).await;
                }
                continue;
            }
            // Leaving ends the stream, which stops the command; `raw` is restored on the way.
            _ = terminated.recv() => break 128 + libc::SIGTERM,
            _ = hung_up.recv() => break 128 + libc::SIGHUP,
        };
        match output.and_then(|output| output.output) {
            Some(pb::exec_output::Output::Stdout(bytes)) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Some(pb::exec_output::Output::Stderr(bytes)) => {
                std::io::stderr().write_all(&bytes)?;
            }
            Some(pb::exec_output::Output::Pid(_)) => {}
            Some(pb::exec_output::Output::ExitCode(code)) => break code,
            None => anyhow::bail!(
                "the daemon ended the exec without an exit code: see its log ('journalctl -u shoal')"
            ),
        }
    };
    drop(raw);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_session_needs_a_terminal_for_input_only() {
        let options = |interactive, tty| ExecOptions {
            interactive,
            tty,
            ..ExecOptions::default()
        };
        let refused = check_terminal(&options(true, true), false).unwrap_err();
        assert!(refused.to_string().contains("not a TTY"), "{refused}");
        assert!(check_terminal(&options(true, true), true).is_ok());
        assert!(check_terminal(&options(false, true), false).is_ok());
        assert!(check_terminal(&options(true, false), false).is_ok());
    }

    #[test]
    fn the_first_message_says_what_to_run_and_sizes_only_a_terminal() {
        let size = pb::TerminalSize {
            rows: 24,
            columns: 80,
        };
        let options = ExecOptions {
            interactive: true,
            tty: false,
            env: Vec::new(),
            workdir: Some("/tmp".into()),
            user: Some("nobody".into()),
        };
        let start = |options: &ExecOptions| match start_message(
            "web".into(),
            vec!["sh".into()],
            options,
            vec!["A=b".into()],
            Some(size),
        )
        .input
        {
            Some(pb::exec_input::Input::Start(start)) => start,
            other => panic!("not a start: {other:?}"),
        };
        let plain = start(&options);
        assert_eq!(
            plain,
            pb::ExecStart {
                id: "web".into(),
                args: vec!["sh".into()],
                tty: false,
                attach_stdin: true,
                env: vec!["A=b".into()],
                workdir: "/tmp".into(),
                user: "nobody".into(),
                size: None,
            }
        );
        let terminal = start(&ExecOptions {
            tty: true,
            workdir: None,
            user: None,
            ..options
        });
        assert_eq!(terminal.size, Some(size));
        assert_eq!(
            (terminal.workdir.as_str(), terminal.user.as_str()),
            ("", "")
        );
    }
}
