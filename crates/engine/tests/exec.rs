//! Exec sessions in a real container, with the built-in runtime and with runc: a terminal made
//! inside the container (`tty` names a `/dev/pts` there, `stty size` shows the size it started
//! with and then the one a resize set), stdin piped to `cat` and ended, the environment,
//! working directory and user an exec asks for, exit codes, stderr, and a command that is not
//! there. Needs root and `/bin/busybox` (runc for the second half); without them it says why
//! and passes, or fails when `SHOAL_REQUIRE_ALL_TESTS` is set.
//!
//! The engine re-executes its binary as each container's shim and as the exec helper, so this
//! test is its own binary (`harness = false`): run as `shim` or `runtime-exec`, it is that, as
//! `shoal shim` and `shoal runtime-exec` would be.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use engine::{
    ContainerSpec, Engine as _, ExecEvent, ExecInput, ExecSession, ExecSpec, LocalEngine,
    TerminalSize,
};
use shoal_tests::{root_skip_reason, skip};

const TEST_NAME: &str = "exec_sessions_run_with_a_terminal_input_and_options";

/// How long one exec may take to say what a test waits for.
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("shim") => return shim(&args[2..]),
        Some("runtime-exec") => return runtime_exec(&args[2..]),
        _ => {}
    }
    // `cargo test` passes the harness's flags; a filter that names another test skips this one.
    let filters: Vec<&String> = args[1..]
        .iter()
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|filter| TEST_NAME.contains(filter.as_str()))
    {
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|arg| arg == "--list") {
        println!("{TEST_NAME}: test");
        return ExitCode::SUCCESS;
    }
    if let Some(reason) = root_skip_reason() {
        skip(TEST_NAME, &reason);
        return ExitCode::SUCCESS;
    }
    exec_sessions_run_with_a_terminal_input_and_options();
    println!("test {TEST_NAME} ... ok");
    ExitCode::SUCCESS
}

/// The value after `flag` in `args`, if it is there.
fn value_of(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|index| args.get(index + 1))
        .cloned()
}

/// `shim --data-root DIR --id ID [--cleanup]`, as the engine starts it.
fn shim(args: &[String]) -> ExitCode {
    let data_root = PathBuf::from(value_of(args, "--data-root").unwrap_or_default());
    let id = value_of(args, "--id").unwrap_or_default();
    let code = if args.iter().any(|arg| arg == "--cleanup") {
        engine::shim::cleanup_main(&data_root, &id)
    } else {
        engine::shim::shim_main(&data_root, &id)
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `runtime-exec …`, as the engine starts it (the flags `shoal runtime-exec` takes).
fn runtime_exec(args: &[String]) -> ExitCode {
    let path = |flag: &str| value_of(args, flag).map(PathBuf::from);
    let helper = engine::runtime::ExecHelperArgs {
        runtime: path("--runtime"),
        state_root: path("--state-root").unwrap_or_default(),
        id: value_of(args, "--id").unwrap_or_default(),
        process_file: path("--process").unwrap_or_default(),
        pid_file: path("--pid-file").unwrap_or_default(),
        console_socket: path("--console-socket"),
    };
    let code = engine::runtime::exec_main(&helper).unwrap_or_else(|error| {
        eprintln!("{error}");
        126
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The data root and whatever containers and mounts the test made; all removed on drop, also
/// after a failure.
struct World {
    dir: PathBuf,
}

impl World {
    fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        support::sweep(&self.dir, &self.data_root());
    }
}

/// What a session said: its stdout and stderr so far, and its exit code once it has one.
#[derive(Debug, Default)]
struct Said {
    stdout: String,
    stderr: String,
    code: Option<i32>,
    pid: Option<i32>,
}

impl Said {
    fn take(&mut self, event: ExecEvent) {
        match event {
            ExecEvent::Pid(pid) => self.pid = Some(pid),
            ExecEvent::Stdout(bytes) => self.stdout.push_str(&String::from_utf8_lossy(&bytes)),
            ExecEvent::Stderr(bytes) => self.stderr.push_str(&String::from_utf8_lossy(&bytes)),
            ExecEvent::Exited(code) => self.code = Some(code),
        }
    }
}

/// Reads `session` until its stdout holds `needle`; fails the test with what it said if the
/// session ends or goes quiet first.
async fn read_until(session: &mut ExecSession, said: &mut Said, needle: &str, what: &str) {
    while !said.stdout.contains(needle) {
        match tokio::time::timeout(EXEC_TIMEOUT, session.next()).await {
            Ok(Some(event)) => said.take(event),
            Ok(None) | Err(_) => panic!("{what}: no {needle:?} in {said:?}"),
        }
    }
}

/// Reads `session` to its end.
async fn read_to_end(session: &mut ExecSession, said: &mut Said, what: &str) {
    loop {
        match tokio::time::timeout(EXEC_TIMEOUT, session.next()).await {
            Ok(Some(event)) => said.take(event),
            Ok(None) => return,
            Err(_) => panic!("{what}: the session did not end: {said:?}"),
        }
    }
}

/// Runs `spec` in `id` with no input and returns what it said.
async fn run(engine: &LocalEngine, id: &str, spec: ExecSpec, what: &str) -> Said {
    let mut session = engine
        .exec_session(id, spec)
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let mut said = Said::default();
    read_to_end(&mut session, &mut said, what).await;
    said
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn exec_sessions_run_with_a_terminal_input_and_options() {
    // Short: the console socket lives under the data root, and socket paths are short.
    let world = World {
        dir: std::env::temp_dir().join(format!("shex{}", std::process::id())),
    };
    std::fs::create_dir_all(&world.dir).expect("the test directory");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtimes = support::runtimes("exec test");
    tokio.block_on(async {
        let engine = support::engine_with_busybox(&world.dir, world.data_root()).await;
        for runtime in runtimes {
            let name = runtime
                .as_ref()
                .map_or("the built-in runtime".to_owned(), |r| {
                    r.display().to_string()
                });
            let spec = ContainerSpec {
                image: "busybox:test".to_owned(),
                command: strings(&["sleep", "3600"]),
                env: strings(&["FROM_CONTAINER=yes"]),
                runtime: runtime.clone(),
                ..ContainerSpec::default()
            };
            let id = engine.create(spec).await.expect("creating the container");
            engine.start(&id).await.expect("starting the container");
            exercise(&engine, &id, &name).await;
            engine
                .remove(&id, true)
                .await
                .expect("removing the container");
        }
        let left: Vec<_> = std::fs::read_dir(world.data_root().join("exec"))
            .expect("the exec directory")
            .collect();
        assert!(left.is_empty(), "exec files stay behind: {left:?}");
    });
    drop(tokio);
    drop(world);
}

/// Every check, in container `id`, run by `runtime`.
async fn exercise(engine: &LocalEngine, id: &str, runtime: &str) {
    // A terminal: made inside the container, sized from the start, resized, typed into.
    let what = format!("{runtime}: a terminal");
    let mut session = engine
        .exec_session(
            id,
            ExecSpec {
                args: strings(&[
                    "sh",
                    "-c",
                    "tty; echo size $(stty size); read line; echo size $(stty size); echo got $line $TERM; exit 3",
                ]),
                tty: true,
                attach_stdin: true,
                size: Some(TerminalSize {
                    rows: 24,
                    columns: 80,
                }),
                ..ExecSpec::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let mut said = Said::default();
    read_until(&mut session, &mut said, "size 24 80", &what).await;
    assert!(said.stdout.starts_with("/dev/pts/"), "{what}: {said:?}");
    let inputs = session.inputs();
    inputs
        .send(ExecInput::Resize(TerminalSize {
            rows: 30,
            columns: 100,
        }))
        .await
        .expect("resizing");
    inputs
        .send(ExecInput::Stdin(b"typed\r".to_vec()))
        .await
        .expect("typing");
    read_to_end(&mut session, &mut said, &what).await;
    assert!(said.stdout.contains("size 30 100"), "{what}: {said:?}");
    assert!(said.stdout.contains("got typed xterm"), "{what}: {said:?}");
    assert!(
        said.stdout.contains("\r\n"),
        "{what}: the terminal turns newlines into CRLF: {said:?}"
    );
    assert_eq!(said.code, Some(3), "{what}: {said:?}");
    assert!(said.pid.is_some(), "{what}: no pid: {said:?}");

    // stdin through a pipe to `cat`, ended.
    let what = format!("{runtime}: stdin to cat");
    let mut session = engine
        .exec_session(
            id,
            ExecSpec {
                args: strings(&["cat"]),
                attach_stdin: true,
                ..ExecSpec::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let inputs = session.inputs();
    inputs
        .send(ExecInput::Stdin(b"piped\nlines\n".to_vec()))
        .await
        .expect("stdin");
    inputs.send(ExecInput::CloseStdin).await.expect("its end");
    let mut said = Said::default();
    read_to_end(&mut session, &mut said, &what).await;
    assert_eq!(
        (said.stdout.as_str(), said.code),
        ("piped\nlines\n", Some(0)),
        "{what}: {said:?}"
    );

    // Environment, working directory and user, by name and by number.
    let what = format!("{runtime}: options");
    let said = run(
        engine,
        id,
        ExecSpec {
            args: strings(&["sh", "-c", "echo $FOO $FROM_CONTAINER; pwd; id -u; id -g"]),
            env: strings(&["FOO=bar"]),
            workdir: Some("/tmp".to_owned()),
            user: Some("nobody".to_owned()),
            ..ExecSpec::default()
        },
        &what,
    )
    .await;
    assert_eq!(
        said.stdout, "bar yes\n/tmp\n65534\n65534\n",
        "{what}: {said:?}"
    );
    let said = run(
        engine,
        id,
        ExecSpec {
            args: strings(&["sh", "-c", "id -u; id -g; echo ${FROM_CONTAINER:-removed}"]),
            env: strings(&["FROM_CONTAINER"]),
            user: Some("1234:5678".to_owned()),
            ..ExecSpec::default()
        },
        &what,
    )
    .await;
    assert_eq!(said.stdout, "1234\n5678\nremoved\n", "{what}: {said:?}");

    // Exit codes and stderr, and a command that is not there.
    let what = format!("{runtime}: exit codes");
    let said = run(
        engine,
        id,
        ExecSpec::command(strings(&["sh", "-c", "echo out; echo err >&2; exit 7"])),
        &what,
    )
    .await;
    assert_eq!(
        (said.stdout.as_str(), said.stderr.as_str(), said.code),
        ("out\n", "err\n", Some(7)),
        "{what}: {said:?}"
    );
    let said = run(
        engine,
        id,
        ExecSpec::command(strings(&["no-such-command"])),
        &what,
    )
    .await;
    assert_ne!(said.code, Some(0), "{what}: {said:?}");
    assert!(said.stderr.contains("no-such-command"), "{what}: {said:?}");
}
