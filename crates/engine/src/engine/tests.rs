//! The lifecycle operations against a recording host: which host calls each makes, in what
//! order, and what it does when one fails. No root, processes or mounts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Engine as _, EngineConfig, ExecEvent, ExecInput, LocalEngine};
use crate::container::{ContainerDir, RunStatus};
use crate::error::EngineError;
use crate::exec_spec::{ExecSpec, TerminalSize};
use crate::host::ExecOutput;
use crate::host::recording::{Call, ExecScript, RecordingHost};
use crate::spec::{ContainerSpec, MountSpec};

struct World {
    _dir: tempfile::TempDir,
    data_root: PathBuf,
    host: Arc<RecordingHost>,
    engine: LocalEngine,
}

impl World {
    /// An engine on a temporary data root with one image, `test:one`; no calls recorded yet.
    async fn new() -> anyhow::Result<World> {
        let dir = tempfile::tempdir()?;
        let data_root = dir.path().join("data");
        let host = Arc::new(RecordingHost::new(&data_root));
        let config = EngineConfig {
            data_root: data_root.clone(),
            shoal_exe: PathBuf::from("/nonexistent/shoal"),
        };
        let engine = LocalEngine::open_with(config, host.clone()).await?;
        let tarball = dir.path().join("rootfs.tar");
        crate::store::write_test_tar(std::fs::File::create(&tarball)?, &[("bin/sh", b"")])?;
        engine.import_image(tarball, "test:one".to_owned()).await?;
        host.take_calls();
        Ok(World {
            _dir: dir,
            data_root,
            host,
            engine,
        })
    }

    fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir::new(&self.data_root, id)
    }

    async fn create(&self, spec: ContainerSpec) -> anyhow::Result<String> {
        let id = self.engine.create(spec).await?;
        self.host.take_calls();
        Ok(id)
    }

    /// A created and started container; no calls recorded yet.
    async fn running(&self, spec: ContainerSpec) -> anyhow::Result<(String, i32)> {
        let id = self.create(spec).await?;
        self.engine.start(&id).await?;
        settle().await;
        self.host.take_calls();
        let pid = self.dir(&id).read_state().pid;
        Ok((id, pid.ok_or_else(|| anyhow::anyhow!("no init pid"))?))
    }
}

fn spec() -> ContainerSpec {
    ContainerSpec {
        image: "test:one".to_owned(),
        command: vec!["/bin/sh".to_owned()],
        ..ContainerSpec::default()
    }
}

/// Lets spawned tasks (the shim watcher) run up to their next wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn create_writes_the_bundle_in_a_directory_of_its_own() -> anyhow::Result<()> {
    let world = World::new().await?;
    let id = world.engine.create(spec()).await?;
    let dir = world.dir(&id);
    assert_eq!(
        world.host.take_calls(),
        vec![Call::CreateDir(dir.root.clone())]
    );
    assert!(dir.oci_config().is_file() && dir.record().is_file());
    assert_eq!(dir.read_state().status, RunStatus::Created);
    Ok(())
}

#[tokio::test]
async fn create_refuses_a_taken_name_before_touching_the_host() -> anyhow::Result<()> {
    let world = World::new().await?;
    let named = ContainerSpec {
        name: Some("web".to_owned()),
        ..spec()
    };
    world.create(named.clone()).await?;
    let error = world.engine.create(named).await.err();
    assert!(
        matches!(error, Some(EngineError::NameInUse(ref name)) if name == "web"),
        "{error:?}"
    );
    assert_eq!(world.host.take_calls(), vec![]);
    assert_eq!(world.engine.list(true).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn create_removes_its_directory_when_the_bundle_cannot_be_written() -> anyhow::Result<()> {
    let world = World::new().await?;
    world.host.create_no_dirs();
    let result = world.engine.create(spec()).await;
    assert!(result.is_err(), "{result:?}");
    let calls = world.host.take_calls();
    let [Call::CreateDir(made), Call::RemoveDir(removed)] = calls.as_slice() else {
        panic!("expected the directory made then removed, got {calls:?}");
    };
    assert_eq!(made, removed);
    assert!(world.engine.list(true).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn start_launches_a_shim_then_watches_it() -> anyhow::Result<()> {
    let world = World::new().await?;
    let id = world.create(spec()).await?;
    world.engine.start(&id).await?;
    settle().await;
    let state = world.dir(&id).read_state();
    let shim_pid = state
        .shim_pid
        .ok_or_else(|| anyhow::anyhow!("no shim pid"))?;
    assert_eq!(
        world.host.take_calls(),
        vec![Call::LaunchShim(id.clone()), Call::WaitPidExit(shim_pid)]
    );
    assert_eq!(
        world.engine.inspect(&id).await?.state.status,
        RunStatus::Running
    );

    let again = world.engine.start(&id).await.err();
    assert!(
        matches!(again, Some(EngineError::WrongState { ref state, .. }) if state == "running"),
        "{again:?}"
    );
    assert_eq!(
        world.host.take_calls(),
        vec![],
        "a running container gets no second shim"
    );
    Ok(())
}

#[tokio::test]
async fn start_reports_the_shims_error_and_watches_nothing() -> anyhow::Result<()> {
    let world = World::new().await?;
    let id = world.create(spec()).await?;
    world
        .host
        .shim_answers("error mount overlay: no such device\n");
    let error = world.engine.start(&id).await.err();
    match error {
        Some(EngineError::Shim { reason, .. }) => {
            assert_eq!(reason, "mount overlay: no such device")
        }
        other => panic!("expected the shim's error, got {other:?}"),
    }
    world.host.shim_answers("");
    let silent = world.engine.start(&id).await.err();
    assert!(
        matches!(silent, Some(EngineError::Shim { ref reason, .. }) if reason.contains("no answer")),
        "{silent:?}"
    );
    settle().await;
    assert_eq!(
        world.host.take_calls(),
        vec![Call::LaunchShim(id.clone()), Call::LaunchShim(id)]
    );
    Ok(())
}

#[tokio::test]
async fn start_refuses_file_mounts_an_earlier_daemon_held() -> anyhow::Result<()> {
    let world = World::new().await?;
    let with_file = ContainerSpec {
        mounts: vec![MountSpec::File {
            target: "/run/secrets/a".to_owned(),
            contents: Vec::new(),
            mode: 0o444,
            uid: 0,
            gid: 0,
        }],
        ..spec()
    };
    let id = world.create(with_file).await?;
    // A daemon restart: the contents were only in the old daemon's memory.
    let config = EngineConfig {
        data_root: world.data_root.clone(),
        shoal_exe: PathBuf::from("/nonexistent/shoal"),
    };
    let reopened = LocalEngine::open_with(config, world.host.clone()).await?;
    world.host.take_calls();
    let error = reopened.start(&id).await.err();
    assert!(
        matches!(error, Some(EngineError::WrongState { ref hint, .. }) if hint.contains("recreate")),
        "{error:?}"
    );
    assert_eq!(world.host.take_calls(), vec![]);
    Ok(())
}

#[tokio::test]
async fn stop_sends_the_stop_signal_and_no_more_when_it_is_obeyed() -> anyhow::Result<()> {
    let world = World::new().await?;
    let quits_on_usr1 = ContainerSpec {
        stop_signal: Some("SIGUSR1".to_owned()),
        ..spec()
    };
    let (id, pid) = world.running(quits_on_usr1).await?;
    world.engine.stop(&id, Some(Duration::from_secs(5))).await?;
    assert_eq!(
        world.host.take_calls(),
        vec![Call::Signal {
            pid,
            signal: libc::SIGUSR1
        }]
    );
    assert_eq!(
        world.dir(&id).read_state().exit_code,
        Some(128 + libc::SIGUSR1)
    );

    world.engine.stop(&id, None).await?;
    assert_eq!(
        world.host.take_calls(),
        vec![],
        "a stopped container is not signalled"
    );
    Ok(())
}

#[tokio::test]
async fn stop_escalates_to_sigkill_once_the_grace_period_is_over() -> anyhow::Result<()> {
    let world = World::new().await?;
    world.host.ignore_signal(libc::SIGTERM);
    let (id, pid) = world.running(spec()).await?;
    let grace = Duration::from_millis(200);
    let started = std::time::Instant::now();
    world.engine.stop(&id, Some(grace)).await?;
    assert!(
        started.elapsed() >= grace,
        "SIGKILL came before the grace period was over"
    );
    assert_eq!(
        world.host.take_calls(),
        vec![
            Call::Signal {
                pid,
                signal: libc::SIGTERM
            },
            Call::Signal {
                pid,
                signal: libc::SIGKILL
            },
        ]
    );
    let state = world.engine.inspect(&id).await?.state;
    assert_eq!(
        (state.status, state.exit_code),
        (RunStatus::Exited, Some(137))
    );
    Ok(())
}

#[tokio::test]
async fn remove_refuses_a_running_container_unless_forced() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, pid) = world.running(spec()).await?;
    let refused = world.engine.remove(&id, false).await.err();
    assert!(
        matches!(refused, Some(EngineError::WrongState { ref hint, .. }) if hint.contains("-f")),
        "{refused:?}"
    );
    assert_eq!(world.host.take_calls(), vec![]);
    assert!(world.dir(&id).root.is_dir());

    world.engine.remove(&id, true).await?;
    assert_eq!(
        world.host.take_calls(),
        vec![
            Call::Signal {
                pid,
                signal: libc::SIGKILL
            },
            Call::RemoveDir(world.dir(&id).root),
        ]
    );
    assert!(!world.dir(&id).root.exists());
    assert!(world.engine.list(true).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn remove_has_the_shim_clean_up_mounts_left_behind_first() -> anyhow::Result<()> {
    let world = World::new().await?;
    let id = world.create(spec()).await?;
    world.host.mark_mounted(&world.dir(&id).rootfs());
    world.engine.remove(&id, false).await?;
    assert_eq!(
        world.host.take_calls(),
        vec![
            Call::RunCleanup(id.clone()),
            Call::RemoveDir(world.dir(&id).root)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn remove_keeps_the_container_when_its_directory_cannot_go() -> anyhow::Result<()> {
    let world = World::new().await?;
    let id = world.create(spec()).await?;
    world.host.fail("remove_dir_all");
    assert!(world.engine.remove(&id, false).await.is_err());
    assert_eq!(
        world.engine.inspect(&id).await?.id,
        id,
        "still listed, so it can be retried"
    );
    Ok(())
}

#[tokio::test]
async fn exec_returns_the_commands_exit_code_and_output() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, _) = world.running(spec()).await?;
    world.host.exec_behaves(ExecScript::Exits(ExecOutput {
        code: 3,
        stdout: b"out ".to_vec(),
        stderr: b"err".to_vec(),
    }));
    let entry = world.engine.inner.find(&id)?;
    let test = vec!["check".to_owned(), "--now".to_owned()];
    let probe = world
        .engine
        .inner
        .probe(&entry, &test, Duration::from_secs(5))
        .await;
    assert_eq!((probe.exit_code, probe.output.as_str()), (3, "out err"));
    assert_eq!(
        world.host.take_calls(),
        vec![Call::Exec {
            id,
            args: test,
            tty: false
        }]
    );
    Ok(())
}

#[tokio::test]
async fn exec_past_its_timeout_tells_the_helper_to_stop() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, _) = world.running(spec()).await?;
    world.host.exec_behaves(ExecScript::Hangs);
    let entry = world.engine.inner.find(&id)?;
    let test = vec!["sleep".to_owned()];
    let started = std::time::Instant::now();
    let probe = world
        .engine
        .inner
        .probe(&entry, &test, Duration::from_millis(100))
        .await;
    assert_eq!(probe.exit_code, -1);
    assert!(probe.output.contains("timed out"), "{}", probe.output);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the helper was not told to stop"
    );
    let calls = world.host.take_calls();
    let [Call::Exec { .. }, Call::Kill { signal, .. }] = calls.as_slice() else {
        panic!("expected exec then a signal to the helper, got {calls:?}");
    };
    assert_eq!(
        *signal,
        libc::SIGTERM,
        "SIGTERM first, so the helper can kill the probe"
    );
    Ok(())
}

/// The events of `session` until its end, stdout and stderr joined per stream.
async fn events_of(
    session: &mut crate::engine::ExecSession,
) -> (Vec<u8>, Vec<u8>, Option<i32>, Option<i32>) {
    let (mut stdout, mut stderr, mut pid, mut code) = (Vec::new(), Vec::new(), None, None);
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), session.next())
        .await
        .expect("the session went quiet")
    {
        assert!(code.is_none(), "an event after the exit code: {event:?}");
        match event {
            ExecEvent::Pid(p) => pid = Some(p),
            ExecEvent::Stdout(bytes) => stdout.extend(bytes),
            ExecEvent::Stderr(bytes) => stderr.extend(bytes),
            ExecEvent::Exited(c) => code = Some(c),
        }
    }
    (stdout, stderr, pid, code)
}

#[tokio::test]
async fn a_session_streams_output_then_the_exit_code_and_leaves_no_files() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, _) = world.running(spec()).await?;
    world.host.exec_behaves(ExecScript::Exits(ExecOutput {
        code: 7,
        stdout: b"out".to_vec(),
        stderr: b"err".to_vec(),
    }));
    let mut session = world
        .engine
        .exec_session(&id, ExecSpec::command(vec!["run".to_owned()]))
        .await?;
    let (stdout, stderr, _, code) = events_of(&mut session).await;
    assert_eq!(
        (stdout.as_slice(), stderr.as_slice(), code),
        (&b"out"[..], &b"err"[..], Some(7))
    );
    let left: Vec<_> = std::fs::read_dir(world.data_root.join("exec"))?.collect();
    assert!(left.is_empty(), "the session's files stay: {left:?}");
    Ok(())
}

#[tokio::test]
async fn a_sessions_stdin_reaches_the_command_and_its_end_ends_it() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, _) = world.running(spec()).await?;
    world.host.exec_behaves(ExecScript::Echoes);
    let mut session = world
        .engine
        .exec_session(
            &id,
            ExecSpec {
                args: vec!["cat".to_owned()],
                attach_stdin: true,
                ..ExecSpec::default()
            },
        )
        .await?;
    let inputs = session.inputs();
    inputs.send(ExecInput::Stdin(b"hello ".to_vec())).await?;
    inputs.send(ExecInput::Stdin(b"there".to_vec())).await?;
    inputs.send(ExecInput::CloseStdin).await?;
    let (stdout, _, pid, code) = events_of(&mut session).await;
    assert_eq!(String::from_utf8_lossy(&stdout), "hello there");
    assert_eq!(code, Some(0), "cat ends with its input");
    assert!(pid.is_some(), "the pid the runtime wrote is reported");
    Ok(())
}

#[tokio::test]
async fn a_terminal_session_carries_bytes_both_ways_and_resizes() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, _) = world.running(spec()).await?;
    world.host.exec_behaves(ExecScript::Terminal);
    let mut session = world
        .engine
        .exec_session(
            &id,
            ExecSpec {
                args: vec!["sh".to_owned()],
                tty: true,
                attach_stdin: true,
                size: Some(TerminalSize {
                    rows: 24,
                    columns: 80,
                }),
                ..ExecSpec::default()
            },
        )
        .await?;
    let calls = world.host.take_calls();
    assert!(
        matches!(calls.as_slice(), [Call::Exec { tty: true, .. }]),
        "{calls:?}"
    );
    let (pid, slave) = world.host.take_terminal().expect("a terminal");
    let mut raw = rustix::termios::tcgetattr(&slave)?;
    raw.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &raw)?;
    let size_of = |slave: &std::os::fd::OwnedFd| {
        let size = rustix::termios::tcgetwinsize(slave).expect("the size");
        (size.ws_row, size.ws_col)
    };
    // The size is set once the terminal arrives; the command's output shows it has.
    rustix::io::write(&slave, b"ready")?;
    let Some(ExecEvent::Stdout(first)) = session.next().await else {
        panic!("expected the command's output first");
    };
    assert_eq!(first, b"ready");
    assert_eq!(size_of(&slave), (24, 80));
    let inputs = session.inputs();
    inputs.send(ExecInput::Stdin(b"typed".to_vec())).await?;
    let mut typed = [0u8; 5];
    tokio::task::spawn_blocking({
        let slave = slave.try_clone()?;
        move || rustix::io::read(&slave, &mut typed).map(|_| typed)
    })
    .await??;
    inputs
        .send(ExecInput::Resize(TerminalSize {
            rows: 30,
            columns: 100,
        }))
        .await?;
    // Resizes and input keep their order: once this input arrives, so has the resize.
    inputs.send(ExecInput::Stdin(b"x".to_vec())).await?;
    let mut one = [0u8; 1];
    tokio::task::spawn_blocking({
        let slave = slave.try_clone()?;
        move || rustix::io::read(&slave, &mut one)
    })
    .await??;
    assert_eq!(size_of(&slave), (30, 100));
    inputs.send(ExecInput::CloseStdin).await?;
    drop(slave);
    world.host.finish(pid);
    let (stdout, _, _, code) = events_of(&mut session).await;
    assert!(stdout.is_empty(), "{stdout:?}");
    assert_eq!(code, Some(0));
    Ok(())
}

#[tokio::test]
async fn a_session_whose_caller_is_gone_stops_its_command() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, _) = world.running(spec()).await?;
    world.host.exec_behaves(ExecScript::Hangs);
    let session = world
        .engine
        .exec_session(&id, ExecSpec::command(vec!["sleep".to_owned()]))
        .await?;
    session.stop().await;
    let calls = world.host.take_calls();
    assert!(
        matches!(
            calls.as_slice(),
            [
                Call::Exec { .. },
                Call::Kill {
                    signal: libc::SIGTERM,
                    ..
                }
            ]
        ),
        "{calls:?}"
    );
    Ok(())
}

#[tokio::test]
async fn exec_refuses_what_it_can_before_running_anything() -> anyhow::Result<()> {
    let world = World::new().await?;
    let id = world.create(spec()).await?;
    let not_running = world
        .engine
        .exec_session(&id, ExecSpec::command(vec!["ls".to_owned()]))
        .await
        .err()
        .expect("refused");
    assert!(
        not_running.to_string().contains("start it first"),
        "{not_running}"
    );
    world.engine.start(&id).await?;
    settle().await;
    // The recording host mounts nothing: the container's files are made here.
    let etc = world.dir(&id).rootfs().join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n")?;
    let relative = world
        .engine
        .exec_session(
            &id,
            ExecSpec {
                args: vec!["ls".to_owned()],
                workdir: Some("tmp".to_owned()),
                ..ExecSpec::default()
            },
        )
        .await
        .err()
        .expect("refused");
    assert!(relative.to_string().contains("absolute"), "{relative}");
    let unknown = world
        .engine
        .exec_session(
            &id,
            ExecSpec {
                args: vec!["ls".to_owned()],
                user: Some("nobody-here".to_owned()),
                ..ExecSpec::default()
            },
        )
        .await
        .err()
        .expect("refused");
    assert!(
        unknown.to_string().contains("use a numeric uid"),
        "{unknown}"
    );
    let calls = world.host.take_calls();
    assert!(
        !calls.iter().any(|call| matches!(call, Call::Exec { .. })),
        "{calls:?}"
    );
    Ok(())
}

#[tokio::test]
async fn open_marks_a_container_whose_shim_died_lost_and_cleans_up() -> anyhow::Result<()> {
    let world = World::new().await?;
    let (id, pid) = world.running(spec()).await?;
    // A daemon restart, during which the shim died: the state still says running.
    let mut state = world.dir(&id).read_state();
    state.shim_pid = Some(1);
    crate::util::write_json(&world.dir(&id).state(), &state)?;
    world
        .host
        .set_cgroup(pid, &format!("0::{}", crate::spec::cgroup_path(&id)));
    let config = EngineConfig {
        data_root: world.data_root.clone(),
        shoal_exe: PathBuf::from("/nonexistent/shoal"),
    };
    let reopened = LocalEngine::open_with(config, world.host.clone()).await?;
    let calls = world.host.take_calls();
    assert_eq!(
        calls[calls.len() - 2..],
        [
            Call::Kill {
                pid,
                signal: libc::SIGKILL
            },
            Call::RunCleanup(id.clone())
        ],
        "{calls:?}"
    );
    let state = reopened.inspect(&id).await?.state;
    assert_eq!(state.status, RunStatus::Exited);
    assert_eq!(
        state.error.as_deref(),
        Some("the shim died; exit status unknown")
    );
    Ok(())
}
