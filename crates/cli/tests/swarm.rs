//! End-to-end tests of swarm mode on one machine (issue 4's acceptance criteria): scaling,
//! restart policies, service modes, a daemon killed with SIGKILL and restarted, a manager paused
//! past the heartbeat deadline, service logs, secrets, autolock (a restarted manager locked
//! until unlocked), and the errors users meet.
//! Each test runs its own daemon with its own data root, socket, loopback-only cluster port and
//! network namespace (where its overlay networking puts what it makes), so the tests run in
//! parallel; its guard removes every service, container, process, mount and
//! cgroup it made, even when the test fails. Like `engine.rs`, they need root and Debian's
//! busybox-static, and without either print why and check nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use shoal_tests::{DaemonNamespace, pause_process, skip, skip_notice};
use support::{SHOAL, build_busybox_tarball, container_ids, remove_leftovers, skip_reason};

/// How long one CLI command may take before the test calls it hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may take to reach the state a test waits for.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `observe` every 100 ms until it returns `Ok`, and panics with `description` and the
/// last observation (the `Err` text) when `timeout` passes first.
fn wait_until<T>(
    description: &str,
    timeout: Duration,
    mut observe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match observe() {
            Ok(value) => return value,
            Err(observation) if Instant::now() > deadline => {
                panic!(
                    "timed out after {timeout:?} waiting for {description}; last seen: {observation}"
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Polls `check` every 100 ms for `duration` and panics with `description` and the observation
/// the first time it does not hold.
fn holds_for(description: &str, duration: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if let Err(observation) = check() {
            panic!("expected {description} for {duration:?}, but saw: {observation}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One line of `service ps --no-trunc --format json`.
#[derive(Clone, Debug)]
struct TaskRow {
    id: String,
    name: String,
    node: String,
    desired_state: String,
    current_state: String,
    error: String,
}

impl TaskRow {
    fn is_running(&self) -> bool {
        self.current_state.starts_with("Running")
    }
}

/// One line of `container ls --format json`.
#[derive(Clone, Debug)]
struct ContainerRow {
    short_id: String,
    name: String,
    state: String,
}

impl ContainerRow {
    /// The task a service container runs: the last part of its `service.slot.taskid` name.
    fn task_id(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or_default()
    }
}

fn json_lines(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).map_err(|e| format!("bad JSON line {line:?}: {e}")))
        .collect()
}

fn field(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

fn output_text(output: &Output) -> String {
    format!(
        "exit {:?}; stdout: {}; stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One daemon with its own data root, socket and cluster port; on drop it removes every service
/// and container, stops the daemon, and sweeps up whatever is left.
struct SwarmHost {
    dir: PathBuf,
    host: String,
    daemon: Option<Child>,
    /// The daemon's own network namespace: what its overlay networking makes stays there.
    namespace: Option<DaemonNamespace>,
    /// Prefix of every service name, unique to this test run.
    prefix: String,
}

impl SwarmHost {
    /// Starts a daemon with the busybox image loaded, or returns `None` (after saying why) when
    /// the test must be skipped.
    fn start(name: &str) -> Option<SwarmHost> {
        if let Some(reason) = skip_reason() {
            skip(name, &reason);
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/sw{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let host = format!("unix://{}/s.sock", dir.display());
        let namespace =
            DaemonNamespace::create(&format!("sw{}-{name}", std::process::id()), &dir.join("d"))
                .unwrap_or_else(|error| panic!("{error}"));
        let mut swarm_host = SwarmHost {
            dir,
            host,
            daemon: None,
            namespace: Some(namespace),
            prefix: format!("t{}", std::process::id()),
        };
        swarm_host.spawn_daemon();
        let tarball = swarm_host.dir.join("busybox.tar");
        build_busybox_tarball(&tarball);
        swarm_host.ok(&[
            "image",
            "import",
            tarball.to_str().expect("utf-8 path"),
            "busybox:latest",
        ]);
        Some(swarm_host)
    }

    /// Starts a daemon and makes it the manager of a new swarm on loopback.
    fn start_manager(name: &str) -> Option<SwarmHost> {
        let swarm_host = SwarmHost::start(name)?;
        swarm_host.swarm_init();
        Some(swarm_host)
    }

    fn swarm_init(&self) {
        self.swarm_init_with(&[]);
    }

    /// `swarm init` on loopback with `extra` flags; returns what it printed.
    fn swarm_init_with(&self, extra: &[&str]) -> String {
        let mut args = vec![
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let output = self.ok(&args);
        assert!(output.contains("is now a manager"), "{output}");
        output
    }

    fn data(&self) -> PathBuf {
        self.dir.join("d")
    }

    fn service(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn spawn_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let namespace = self.namespace.as_ref().expect("the daemon's namespace");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", namespace.path().display()))
            .args(["--", SHOAL, "daemon", "--data-root"])
            .arg(self.data())
            .args(["-H", &self.host])
            .args(["--docker-api", "none"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting shoal daemon");
        self.daemon = Some(child);
        let socket = self.dir.join("s.sock");
        wait_until("the daemon to listen", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket)
                .map(drop)
                .map_err(|e| format!("{e}; daemon log: {}", self.daemon_log_tail()))
        });
    }

    /// SIGKILLs the daemon only; the shims and their containers keep running.
    fn kill_9_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon (SIGSTOP) for `pause` and lets it go on ([`pause_process`]).
    fn pause_daemon(&self, pause: Duration) {
        pause_process(self.daemon.as_ref().expect("a running daemon").id(), pause);
    }

    fn daemon_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("openraft")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `shoal -H <this daemon> args`, killing it if it takes longer than `timeout`.
    fn run(&self, args: &[&str], timeout: Duration) -> Result<Output, String> {
        shoal_tests::run_with_timeout(
            Command::new(SHOAL).args(["-H", &self.host]).args(args),
            timeout,
        )
        .map_err(|error| error.to_string())
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.try_ok(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a command and returns its stdout, or why it failed.
    fn try_ok(&self, args: &[&str]) -> Result<String, String> {
        let output = self.run(args, COMMAND_TIMEOUT)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("shoal {args:?} failed: {}", output_text(&output)))
        }
    }

    /// Runs a command that must fail within `timeout`; returns its stderr.
    fn fails_within(&self, args: &[&str], timeout: Duration) -> String {
        let output = self.run(args, timeout).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !output.status.success(),
            "shoal {args:?} unexpectedly succeeded: {}",
            output_text(&output)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        self.fails_within(args, COMMAND_TIMEOUT)
    }

    /// Runs `shoal swarm unlock` with `key` piped to its stdin.
    fn unlock(&self, key: &str) -> Output {
        shoal_tests::run_with_timeout(
            Command::new("sh").args([
                "-c",
                r#"printf '%s\n' "$1" | "$0" -H "$2" swarm unlock"#,
                SHOAL,
                key,
                &self.host,
            ]),
            COMMAND_TIMEOUT,
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The manager's data key file, as it is now.
    fn data_key_file(&self) -> String {
        std::fs::read_to_string(self.data().join("swarm/raft-data-key.json"))
            .expect("reading the data key file")
    }

    /// Every task of `service`, newest first within a slot, with full ids.
    fn tasks(&self, service: &str) -> Result<Vec<TaskRow>, String> {
        let text = self.try_ok(&["service", "ps", "--no-trunc", "--format", "json", service])?;
        Ok(json_lines(&text)?
            .iter()
            .map(|task| TaskRow {
                id: field(task, "ID"),
                name: field(task, "Name"),
                node: field(task, "Node"),
                desired_state: field(task, "DesiredState"),
                current_state: field(task, "CurrentState"),
                error: field(task, "Error"),
            })
            .collect())
    }

    /// The REPLICAS column of `service ls` for `service`.
    fn replicas(&self, service: &str) -> Result<String, String> {
        let text = self.try_ok(&["service", "ls", "--format", "json"])?;
        json_lines(&text)?
            .iter()
            .find(|row| field(row, "Name") == service)
            .map(|row| field(row, "Replicas"))
            .ok_or_else(|| format!("{service} is not in service ls: {text}"))
    }

    /// The engine's containers of `service` (named `service.slot.taskid`); stopped ones too
    /// with `all`.
    fn containers(&self, service: &str, all: bool) -> Result<Vec<ContainerRow>, String> {
        let mut args = vec!["container", "ls", "--format", "json"];
        if all {
            args.push("-a");
        }
        let text = self.try_ok(&args)?;
        let prefix = format!("{service}.");
        Ok(json_lines(&text)?
            .iter()
            .map(|container| ContainerRow {
                short_id: field(container, "ID"),
                name: field(container, "Names"),
                state: field(container, "State"),
            })
            .filter(|container| container.name.starts_with(&prefix))
            .collect())
    }

    /// Waits until `service` has exactly `replicas` tasks, all running, `service ls` says
    /// `replicas/replicas`, and the engine has exactly one container per task, running, and no
    /// other container of the service, stopped or not. Returns the tasks.
    fn wait_for_exactly(&self, service: &str, replicas: usize) -> Vec<TaskRow> {
        let description = format!(
            "{service}: exactly {replicas} running tasks, {replicas}/{replicas} in service ls, one running container per task and no other container"
        );
        wait_until(&description, CONVERGE_TIMEOUT, || {
            let tasks = self.tasks(service)?;
            let listed = self.replicas(service)?;
            let containers = self.containers(service, true)?;
            let running: BTreeSet<&str> = tasks
                .iter()
                .filter(|t| t.is_running())
                .map(|t| t.id.as_str())
                .collect();
            let running_containers: BTreeSet<&str> = containers
                .iter()
                .filter(|c| c.state == "running")
                .map(ContainerRow::task_id)
                .collect();
            let expected = format!("{replicas}/{replicas}");
            if tasks.len() == replicas
                && running.len() == replicas
                && listed == expected
                && containers.len() == replicas
                && running_containers == running
            {
                Ok(tasks)
            } else {
                let not_running: Vec<String> = tasks
                    .iter()
                    .filter(|t| !t.is_running())
                    .map(|t| format!("{} {} ({})", t.name, t.current_state, t.desired_state))
                    .take(5)
                    .collect();
                let strays: Vec<&str> = containers
                    .iter()
                    .map(ContainerRow::task_id)
                    .filter(|id| !running.contains(id))
                    .take(5)
                    .collect();
                Err(format!(
                    "service ls {listed:?}; {} tasks, {} running (first not running: {not_running:?}); {} containers, {} running (first without a running task: {strays:?})",
                    tasks.len(),
                    running.len(),
                    containers.len(),
                    running_containers.len()
                ))
            }
        })
    }

    /// Waits until `service` runs exactly `replicas` tasks it wants running and `service ls`
    /// agrees; unlike [`SwarmHost::wait_for_exactly`], stopped tasks (an update's history) and
    /// their containers may stay.
    fn wait_for_running(&self, service: &str, replicas: usize) {
        wait_until(
            &format!("{service}: {replicas} running tasks"),
            CONVERGE_TIMEOUT,
            || {
                let tasks = self.tasks(service)?;
                let listed = self.replicas(service)?;
                let wanted: Vec<&TaskRow> = tasks
                    .iter()
                    .filter(|t| t.desired_state == "Running")
                    .collect();
                if wanted.len() == replicas
                    && wanted.iter().all(|t| t.is_running())
                    && listed == format!("{replicas}/{replicas}")
                {
                    Ok(())
                } else {
                    Err(format!("service ls {listed:?}; tasks {tasks:?}"))
                }
            },
        );
    }

    /// The state block of `container inspect`.
    fn container_state(&self, id: &str) -> Value {
        let text = self.ok(&["container", "inspect", id]);
        let value: Value = serde_json::from_str(&text).expect("container inspect JSON");
        value[0]["state"].clone()
    }

    /// SIGKILLs the process a container runs (not its shim).
    fn kill_9_container_process(&self, container: &ContainerRow) {
        let state = self.container_state(&container.short_id);
        let pid = state["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no pid for {}: {state}", container.name));
        // SAFETY: kill takes two integers and has no memory effects.
        let result = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert_eq!(result, 0, "kill -9 {pid} ({})", container.name);
    }

    /// Processes other than the daemon that mention this host's directory: shims left behind.
    fn stray_processes(&self) -> Vec<String> {
        let daemon = self.daemon.as_ref().map(Child::id);
        let needle = self.dir.display().to_string();
        std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| {
                        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                        if Some(pid) == daemon {
                            return None;
                        }
                        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                        cmdline
                            .contains(&needle)
                            .then(|| format!("{pid}: {cmdline}"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Best effort, with short timeouts: nothing here may panic or hang.
    fn remove_services_and_containers(&self) {
        let quick = Duration::from_secs(20);
        if let Ok(output) = self.run(&["service", "ls", "-q"], quick) {
            let ids = String::from_utf8_lossy(&output.stdout).into_owned();
            let mut args = vec!["service", "rm"];
            args.extend(ids.split_whitespace());
            if args.len() > 2 {
                let _ = self.run(&args, quick);
            }
        }
        let ids = container_ids(&self.data());
        if !ids.is_empty() {
            let mut args = vec!["container", "rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.run(&args, Duration::from_secs(60));
        }
    }
}

impl Drop for SwarmHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            skip_notice(&format!(
                "daemon log of {} (last lines):\n{}",
                self.dir.display(),
                self.daemon_log_tail()
            ));
        }
        if self.daemon.is_some() {
            self.remove_services_and_containers();
        }
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: kill takes two integers; the child is ours and not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever the daemon could not remove: processes, mounts, cgroups, then namespaces.
        remove_leftovers(&self.dir, &self.data());
        self.namespace = None;
    }
}

#[test]
fn scaling_keeps_tasks_and_containers_in_step() {
    let Some(host) = SwarmHost::start_manager("scale") else {
        return;
    };
    let web = host.service("web");
    host.ok(&[
        "service",
        "create",
        "--name",
        &web,
        "--replicas",
        "20",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    // `create` waited for convergence: the 20 tasks run now, not eventually.
    let tasks = host.tasks(&web).expect("service ps");
    assert_eq!(
        tasks.iter().filter(|t| t.is_running()).count(),
        20,
        "{tasks:?}"
    );
    host.wait_for_exactly(&web, 20);

    host.ok(&["service", "scale", &format!("{web}=50")]);
    let fifty = host.wait_for_exactly(&web, 50);
    let mut slots: Vec<String> = fifty.iter().map(|t| t.name.clone()).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 50, "one task per slot: {slots:?}");

    host.ok(&["service", "scale", &format!("{web}=5")]);
    let five = host.wait_for_exactly(&web, 5);
    let names: BTreeSet<String> = five.iter().map(|t| t.name.clone()).collect();
    let expected: BTreeSet<String> = (1..=5).map(|slot| format!("{web}.{slot}")).collect();
    assert_eq!(names, expected, "scaling down keeps the lowest slots");

    // Removing the service removes every container, and the engine's own records of them.
    let ids = container_ids(&host.data());
    host.ok(&["service", "rm", &web]);
    wait_until(
        "service rm to remove every container",
        CONVERGE_TIMEOUT,
        || {
            let left = host.try_ok(&["container", "ls", "-a", "-q"])?;
            let records = container_ids(&host.data());
            if left.trim().is_empty() && records.is_empty() && host.stray_processes().is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "containers listed: {left:?}; records: {records:?}; processes: {:?}",
                    host.stray_processes()
                ))
            }
        },
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for id in &ids {
        assert!(!mountinfo.contains(id.as_str()), "a mount of {id} is left");
        for controller in ["memory", "pids", "cpu"] {
            let path = format!("/sys/fs/cgroup/{controller}/shoal/{id}");
            assert!(!Path::new(&path).exists(), "{path} is left");
        }
    }
}

#[test]
fn restart_policy_replaces_a_killed_task_only_when_asked_to() {
    let Some(host) = SwarmHost::start_manager("restart") else {
        return;
    };
    let again = host.service("again");
    let once = host.service("once");
    host.ok(&[
        "service",
        "create",
        "--name",
        &again,
        "--restart-delay",
        "1s",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    host.ok(&[
        "service",
        "create",
        "--name",
        &once,
        "--restart-condition",
        "none",
        "--restart-delay",
        "1s",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);

    // Default condition (any): the killed task fails and a new task takes its slot.
    let first = host.wait_for_exactly(&again, 1).remove(0);
    let container = host
        .containers(&again, false)
        .expect("container ls")
        .remove(0);
    assert_eq!(container.task_id(), first.id);
    host.kill_9_container_process(&container);
    let (old, new) = wait_until(
        "a new running task in slot 1 and the killed one failed",
        CONVERGE_TIMEOUT,
        || {
            let tasks = host.tasks(&again)?;
            let old = tasks.iter().find(|t| t.id == first.id);
            let new = tasks.iter().find(|t| t.id != first.id && t.is_running());
            match (old, new) {
                (Some(old), Some(new))
                    if old.current_state.starts_with("Failed") && tasks.len() == 2 =>
                {
                    Ok((old.clone(), new.clone()))
                }
                _ => Err(format!("{tasks:?}")),
            }
        },
    );
    assert_eq!(new.name, format!("{again}.1"), "same slot");
    assert_eq!(old.name, new.name, "same slot");
    assert_eq!(old.desired_state, "Shutdown");
    assert!(old.error.contains("137"), "exit code in the error: {old:?}");
    let table = host.ok(&["service", "ps", &again]);
    let history = format!("\\_ {again}.1");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&old.id[..12]) && l.contains(&history)),
        "the failed task shows as history of slot 1:\n{table}"
    );
    let running: Vec<String> = host
        .containers(&again, false)
        .expect("container ls")
        .iter()
        .map(|c| c.task_id().to_owned())
        .collect();
    assert_eq!(
        running,
        std::slice::from_ref(&new.id),
        "only the new task's container runs"
    );
    assert_eq!(host.replicas(&again).as_deref(), Ok("1/1"));

    // Condition none: the killed task fails and its slot stays empty.
    let only = host.wait_for_exactly(&once, 1).remove(0);
    let container = host
        .containers(&once, false)
        .expect("container ls")
        .remove(0);
    host.kill_9_container_process(&container);
    wait_until("the killed task to fail", CONVERGE_TIMEOUT, || {
        let tasks = host.tasks(&once)?;
        match &tasks[..] {
            [task] if task.id == only.id && task.current_state.starts_with("Failed") => Ok(()),
            _ => Err(format!("{tasks:?}")),
        }
    });
    holds_for(
        "one failed task, no replacement, 0/1 in service ls",
        Duration::from_secs(4),
        || {
            let tasks = host.tasks(&once)?;
            let listed = host.replicas(&once)?;
            if tasks.len() == 1 && tasks[0].id == only.id && listed == "0/1" {
                Ok(())
            } else {
                Err(format!("service ls {listed:?}; {tasks:?}"))
            }
        },
    );
}

#[test]
fn global_service_runs_one_task_on_the_node() {
    let Some(host) = SwarmHost::start_manager("global") else {
        return;
    };
    let node = host.ok(&["node", "ls", "-q"]).trim().to_owned();
    assert!(
        !node.is_empty() && !node.contains('\n'),
        "one node: {node:?}"
    );
    let everywhere = host.service("everywhere");
    // Without -d, `create` returns once the task runs; it must not hang.
    let created = host.run(
        &[
            "service",
            "create",
            "--name",
            &everywhere,
            "--mode",
            "global",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
        Duration::from_secs(30),
    );
    let created = created.unwrap_or_else(|e| {
        panic!(
            "{e}\nservice ps: {:?}",
            host.try_ok(&["service", "ps", "--no-trunc", &everywhere])
        )
    });
    assert!(created.status.success(), "{}", output_text(&created));
    let tasks = host.wait_for_exactly(&everywhere, 1);
    assert_eq!(tasks[0].name, format!("{everywhere}.{node}"));
    let container = host.containers(&everywhere, false).expect("container ls");
    assert_eq!(
        container[0].name,
        format!("{everywhere}.{node}.{}", tasks[0].id)
    );
}

#[test]
fn jobs_complete_and_unplaceable_tasks_say_why() {
    let Some(host) = SwarmHost::start_manager("modes") else {
        return;
    };
    let job = host.service("job");
    host.ok(&[
        "service",
        "create",
        "--name",
        &job,
        "--mode",
        "replicated-job",
        "--replicas",
        "3",
        "busybox",
        "sh",
        "-c",
        "exit 0",
    ]);
    // `create` returned once the job completed.
    let tasks = host.tasks(&job).expect("service ps");
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    for task in &tasks {
        assert!(
            task.current_state.starts_with("Complete") && task.desired_state == "Complete",
            "{task:?}"
        );
    }
    let slots: BTreeSet<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(slots.len(), 3, "one task per completion: {tasks:?}");
    let listed = host.replicas(&job).expect("service ls");
    assert!(listed.ends_with("(3/3 completed)"), "{listed}");
    assert!(
        host.containers(&job, false)
            .expect("container ls")
            .is_empty(),
        "no job container still runs"
    );

    // An unsatisfiable constraint: `create` gives up quickly and says why.
    let stuck = host.service("stuck");
    let started = Instant::now();
    let error = host.fails_within(
        &[
            "service",
            "create",
            "--name",
            &stuck,
            "--constraint",
            "node.labels.nope==yes",
            "busybox",
            "sleep",
            "3600",
        ],
        Duration::from_secs(30),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        error.contains("can't be placed") && error.contains("no suitable node"),
        "{error}"
    );
    assert_eq!(host.replicas(&stuck).as_deref(), Ok("0/1"));
    let tasks = host.tasks(&stuck).expect("service ps");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(tasks[0].current_state.starts_with("Pending"), "{tasks:?}");
    assert!(
        tasks[0].error.contains("no suitable node")
            || tasks[0].current_state.contains("no suitable node"),
        "service ps shows why the task is pending: {:?}",
        tasks[0]
    );
}

#[test]
fn secrets_and_configs_are_created_listed_inspected_and_removed() {
    let Some(host) = SwarmHost::start_manager("payloads") else {
        return;
    };
    let file = host.dir.join("payload.txt");
    std::fs::write(&file, "hunter2").expect("writing the payload file");
    let file = file.display().to_string();
    let secret = host.service("pw");
    let id = host
        .ok(&["secret", "create", "--label", "tier=db", &secret, &file])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 25, "an object id: {id:?}");
    let listed = json_lines(&host.ok(&["secret", "ls", "--format", "json"])).expect("JSON lines");
    assert_eq!(listed.len(), 1);
    assert_eq!(field(&listed[0], "Name"), secret);
    let table = host.ok(&["secret", "ls"]);
    assert!(table.starts_with("ID "), "{table}");
    let inspected: Value =
        serde_json::from_str(&host.ok(&["secret", "inspect", &secret])).expect("inspect JSON");
    assert_eq!(inspected[0]["Spec"]["Labels"]["tier"], "db");
    assert!(inspected[0]["Spec"].get("Data").is_none(), "{inspected}");
    assert!(!host.ok(&["secret", "inspect", &secret]).contains("hunter2"));
    let taken = host.fails(&["secret", "create", &secret, &file]);
    assert!(taken.contains(&secret), "{taken}");

    // A task gets the secret in memory at /run/secrets/<target>; removing a secret in use is
    // refused, naming the service; rotating it gives the new task the new content.
    let reader = host.service("reader");
    // The task shows the secret upper-cased, so its log (on disk) never holds it verbatim.
    let script = "tr a-z A-Z < /run/secrets/db_pw; echo; ls -ln /run/secrets/db_pw; sleep 3600";
    let secret_flag = format!("source={secret},target=db_pw,uid=7,mode=0400");
    host.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &reader,
        "--secret",
        &secret_flag,
        "--stop-grace-period",
        "1s",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    host.wait_for_exactly(&reader, 1);
    let logs_contain = |wanted: &[&str]| {
        wait_until(
            "the secret in the task's output",
            Duration::from_secs(30),
            || {
                let output = host.run(&["service", "logs", &reader], Duration::from_secs(20))?;
                let text = String::from_utf8_lossy(&output.stdout).into_owned();
                if wanted.iter().all(|part| text.contains(part)) {
                    Ok(())
                } else {
                    Err(text)
                }
            },
        )
    };
    logs_contain(&["HUNTER2", "-r--------", " 7        0 "]);
    let in_use = host.fails(&["secret", "rm", &secret]);
    assert!(
        in_use.contains("in use") && in_use.contains(&reader),
        "{in_use}"
    );
    // Nowhere on the node's disk: not in the manager's Raft store (sealed under its data key),
    // not in the worker's state, not in any container's files. The one copy is the file in the
    // container's in-memory files directory (a tmpfs).
    let grep = Command::new("grep")
        .args(["-rl", "hunter2"])
        .arg(host.data())
        .output()
        .expect("grep");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading the mount table");
    let in_memory = |path: &str| {
        Path::new(path).parent().is_some_and(|dir| {
            mounts
                .lines()
                .any(|line| line.starts_with(&format!("tmpfs {} tmpfs ", dir.display())))
        })
    };
    let on_disk: Vec<String> = String::from_utf8_lossy(&grep.stdout)
        .lines()
        .filter(|path| !in_memory(path))
        .map(str::to_owned)
        .collect();
    assert!(on_disk.is_empty(), "the secret is on disk: {on_disk:?}");
    let rotated_file = host.dir.join("rotated.txt");
    std::fs::write(&rotated_file, "correct-horse").expect("writing the new payload");
    let rotated = host.service("pw2");
    host.ok(&[
        "secret",
        "create",
        &rotated,
        &rotated_file.display().to_string(),
    ]);
    let rotation = format!("source={rotated},target=db_pw");
    host.ok(&[
        "service",
        "update",
        "-d",
        "--secret-rm",
        &secret,
        "--secret-add",
        &rotation,
        &reader,
    ]);
    logs_contain(&["CORRECT-HORSE"]);
    host.ok(&["service", "rm", &reader]);
    wait_until("the service gone", Duration::from_secs(30), || {
        let users = host.run(&["secret", "rm", &rotated], Duration::from_secs(20))?;
        if users.status.success() {
            Ok(())
        } else {
            Err(output_text(&users))
        }
    });

    let config = host.service("settings");
    host.ok(&["config", "create", &config, &file]);
    let inspected: Value =
        serde_json::from_str(&host.ok(&["config", "inspect", &config])).expect("inspect JSON");
    assert_eq!(inspected[0]["Spec"]["Data"], "aHVudGVyMg==");
    assert_eq!(host.ok(&["config", "rm", &config]).trim(), config);
    assert_eq!(host.ok(&["secret", "rm", &id]).trim(), id);
    assert!(host.ok(&["secret", "ls", "-q"]).trim().is_empty());
    let missing = host.fails(&["secret", "rm", &secret]);
    assert!(missing.contains("not found"), "{missing}");
}

#[test]
fn kill_9_daemon_and_restart_adopts_every_task() {
    let Some(mut host) = SwarmHost::start_manager("adopt") else {
        return;
    };
    let web = host.service("web");
    host.ok(&[
        "service",
        "create",
        "--name",
        &web,
        "--replicas",
        "20",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    let tasks = host.wait_for_exactly(&web, 20);
    let task_ids: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let containers: BTreeMap<String, String> = host
        .containers(&web, false)
        .expect("container ls")
        .into_iter()
        .map(|c| (c.short_id.clone(), c.task_id().to_owned()))
        .collect();
    assert_eq!(containers.len(), 20);

    host.kill_9_daemon();
    host.spawn_daemon();

    // Every observation, from the first, shows only what ran before; then all of it, for good.
    let same_as_before = || -> Result<bool, String> {
        let now_tasks = host.tasks(&web)?;
        let now_containers: BTreeMap<String, String> = host
            .containers(&web, true)?
            .into_iter()
            .map(|c| (c.short_id.clone(), c.task_id().to_owned()))
            .collect();
        let extra_tasks: Vec<&TaskRow> = now_tasks
            .iter()
            .filter(|t| !task_ids.contains(&t.id))
            .collect();
        let extra_containers: Vec<&String> = now_containers
            .keys()
            .filter(|id| !containers.contains_key(*id))
            .collect();
        if !extra_tasks.is_empty() || !extra_containers.is_empty() {
            panic!(
                "after the restart, new tasks {extra_tasks:?} or containers {extra_containers:?} appeared"
            );
        }
        let running_containers: BTreeMap<String, String> = host
            .containers(&web, false)?
            .into_iter()
            .map(|c| (c.short_id.clone(), c.task_id().to_owned()))
            .collect();
        let running_tasks = now_tasks.iter().filter(|t| t.is_running()).count();
        let listed = host.replicas(&web)?;
        if running_tasks == 20 && running_containers == containers && listed == "20/20" {
            Ok(true)
        } else {
            Err(format!(
                "service ls {listed:?}; {running_tasks} running tasks of {}; {} running containers",
                now_tasks.len(),
                running_containers.len()
            ))
        }
    };
    wait_until(
        "the restarted daemon to report the same 20 tasks running in the same 20 containers",
        CONVERGE_TIMEOUT,
        &same_as_before,
    );
    holds_for(
        "the same 20 tasks and containers, nothing replaced",
        Duration::from_secs(5),
        || same_as_before().map(drop),
    );
}

#[test]
fn a_manager_paused_past_the_heartbeat_deadline_replaces_no_task() {
    let Some(host) = SwarmHost::start_manager("pause") else {
        return;
    };
    let web = host.service("web");
    host.ok(&[
        "service",
        "create",
        "--name",
        &web,
        "--replicas",
        "3",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    let tasks = host.wait_for_exactly(&web, 3);
    let task_ids: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();

    // Three missed heartbeats (one a second) mark a node down; the one daemon, its node's
    // manager and agent, stands still for twice that.
    host.pause_daemon(Duration::from_secs(6));

    holds_for(
        "the same 3 tasks running, none replaced",
        Duration::from_secs(6),
        || {
            let now = host.tasks(&web)?;
            let running: BTreeSet<String> = now
                .iter()
                .filter(|t| t.is_running())
                .map(|t| t.id.clone())
                .collect();
            if now.len() == 3 && running == task_ids {
                Ok(())
            } else {
                Err(format!(
                    "{} tasks, running {running:?}, before {task_ids:?}",
                    now.len()
                ))
            }
        },
    );
}

#[test]
fn service_logs_show_every_replica() {
    let Some(host) = SwarmHost::start_manager("logs") else {
        return;
    };
    let talk = host.service("talk");
    host.ok(&[
        "service",
        "create",
        "--name",
        &talk,
        "--replicas",
        "3",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sh",
        "-c",
        "echo hello from $(hostname); sleep 3600",
    ]);
    let tasks = host.wait_for_exactly(&talk, 3);
    let containers = host.containers(&talk, false).expect("container ls");
    // Each task's line: `service.slot.taskid@node | hello from <its container's hostname>`, and
    // a container's hostname is its short id.
    let expected: BTreeSet<(String, String)> = tasks
        .iter()
        .map(|task| {
            let container = containers
                .iter()
                .find(|c| c.task_id() == task.id)
                .unwrap_or_else(|| panic!("no container for {task:?}"));
            (
                format!("{}.{}@{}", task.name, &task.id[..12], task.node),
                format!("hello from {}", container.short_id),
            )
        })
        .collect();
    wait_until(
        "service logs to show one line from each replica",
        CONVERGE_TIMEOUT,
        || {
            let output = host.run(&["service", "logs", &talk], Duration::from_secs(20))?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            if !output.status.success() {
                return Err(output_text(&output));
            }
            let lines: BTreeSet<(String, String)> = text
                .lines()
                .filter_map(|line| line.split_once("| "))
                .map(|(prefix, message)| (prefix.trim_end().to_owned(), message.to_owned()))
                .collect();
            if lines == expected {
                Ok(())
            } else {
                Err(format!("expected {expected:?}, got {text:?}"))
            }
        },
    );
}

/// Talks to a test daemon's `Control` service over gRPC directly, for what the CLI can't do.
fn control_client(
    host: &SwarmHost,
) -> (
    tokio::runtime::Runtime,
    shoal_proto::api::control_client::ControlClient<tonic::transport::Channel>,
) {
    let (runtime, channel) = support::daemon_channel(&host.dir.join("s.sock"));
    (
        runtime,
        shoal_proto::api::control_client::ControlClient::new(channel),
    )
}

#[test]
fn errors_name_the_problem_and_the_fix() {
    use shoal_proto::api;
    let Some(host) = SwarmHost::start("errors") else {
        return;
    };
    let first = host.service("first");
    let error = host.fails(&["service", "create", "--name", &first, "busybox", "true"]);
    assert!(
        error.contains("not a swarm manager") && error.contains("swarm init"),
        "{error}"
    );
    host.swarm_init();

    let error = host.fails(&["service", "create", "nosuch/image:v9", "true"]);
    assert!(
        error.contains("nosuch/image:v9") && error.contains("shoal image"),
        "names the image and how to get it: {error}"
    );
    let error = host.fails(&[
        "service",
        "create",
        "--constraint",
        "node.labels.zone=east",
        "busybox",
        "true",
    ]);
    assert!(error.contains("node.labels.zone=east"), "{error}");
    let error = host.fails(&["service", "create", "--replicas", "-3", "busybox", "true"]);
    assert!(error.contains("-3"), "{error}");

    let taken = host.service("taken");
    host.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &taken,
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    let error = host.fails(&[
        "service", "create", "-d", "--name", &taken, "busybox", "sleep", "3600",
    ]);
    assert!(
        error.contains(&taken) && error.contains("in use"),
        "{error}"
    );
    assert_eq!(
        host.ok(&["service", "ls", "-q"]).lines().count(),
        1,
        "no failed create left a service behind"
    );

    // A stale update: read, someone else updates, then write with the version read. The CLI
    // reads right before it writes, so only the API can lose this race on purpose.
    let (runtime, mut control) = control_client(&host);
    let read = runtime
        .block_on(control.get_service(api::GetServiceRequest {
            service: taken.clone(),
        }))
        .expect("get service")
        .into_inner()
        .service
        .expect("a service");
    host.ok(&[
        "service",
        "update",
        "-d",
        "--label-add",
        "changed=elsewhere",
        &taken,
    ]);
    let mut spec = read.spec.clone().expect("a spec");
    spec.annotations
        .get_or_insert_with(Default::default)
        .labels
        .insert("mine".into(), "stale".into());
    let stale = runtime.block_on(
        control.update_service(api::UpdateServiceRequest {
            service: read.id.clone(),
            version: read
                .meta
                .as_ref()
                .and_then(|m| m.version.as_ref())
                .map_or(0, |v| v.index),
            spec: Some(spec),
            ..Default::default()
        }),
    );
    let status = stale.expect_err("an update at a stale version is refused");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(status.message().contains("version"), "{status:?}");
    let inspected = host.ok(&["service", "inspect", &taken]);
    assert!(
        inspected.contains("elsewhere") && !inspected.contains("stale"),
        "the other update stands and the stale one is dropped: {inspected}"
    );
}

/// Every task of `service` as the control API stores it: spec versions, creation times, states.
fn stored_tasks(host: &SwarmHost, service: &str) -> Vec<shoal_proto::api::Task> {
    let (runtime, mut control) = control_client(host);
    runtime
        .block_on(control.list_tasks(shoal_proto::api::ListTasksRequest {
            services: vec![service.to_owned()],
            nodes: Vec::new(),
        }))
        .expect("list tasks")
        .into_inner()
        .tasks
}

fn seconds_of(timestamp: Option<&shoal_proto::api::Timestamp>) -> f64 {
    timestamp.map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

/// `service inspect`'s UpdateStatus: state and message.
fn update_status(host: &SwarmHost, service: &str) -> (String, String) {
    let text = host.ok(&["service", "inspect", service]);
    let value: Value = serde_json::from_str(&text).expect("service inspect JSON");
    let status = &value[0]["UpdateStatus"];
    (field(status, "State"), field(status, "Message"))
}

#[test]
fn rolling_updates_go_in_batches_start_first_and_roll_back_on_request() {
    use shoal_proto::api::TaskState;
    let Some(host) = SwarmHost::start_manager("rolling") else {
        return;
    };
    let web = host.service("web");
    host.ok(&[
        "service",
        "create",
        "--name",
        &web,
        "--replicas",
        "4",
        "--stop-grace-period",
        "1s",
        "--env",
        "V=1",
        "busybox",
        "sleep",
        "3600",
    ]);
    let before: BTreeSet<String> = stored_tasks(&host, &web)
        .into_iter()
        .map(|task| task.id)
        .collect();

    let progress = host.ok(&[
        "service",
        "update",
        "--env-add",
        "V=2",
        "--update-parallelism",
        "2",
        "--update-order",
        "start-first",
        "--update-monitor",
        "1s",
        &web,
    ]);
    assert!(
        progress.contains("verify: Waiting 1 seconds to verify that tasks are stable"),
        "{progress}"
    );
    assert_eq!(
        update_status(&host, &web),
        ("completed".to_owned(), "update completed".to_owned())
    );
    // The update completes once the last replacement has run for the monitor period, which
    // can be before the old tasks' one-second grace ends: their stop is awaited here.
    let tasks = wait_until("the old tasks to stop", Duration::from_secs(20), || {
        let tasks = stored_tasks(&host, &web);
        let still_up: Vec<&str> = tasks
            .iter()
            .filter(|task| before.contains(&task.id))
            .filter(|task| {
                task.status
                    .as_ref()
                    .is_none_or(|status| status.state < TaskState::Complete as i32)
            })
            .map(|task| task.id.as_str())
            .collect();
        if still_up.is_empty() {
            Ok(tasks)
        } else {
            Err(format!("{still_up:?} not stopped yet"))
        }
    });
    let mut replacements: Vec<&shoal_proto::api::Task> = tasks
        .iter()
        .filter(|task| !before.contains(&task.id))
        .collect();
    assert_eq!(replacements.len(), 4, "one replacement per slot: {tasks:?}");
    replacements.sort_by(|a, b| {
        let created = |task: &shoal_proto::api::Task| {
            seconds_of(task.meta.as_ref().and_then(|meta| meta.created_at.as_ref()))
        };
        created(a).total_cmp(&created(b))
    });
    let created: Vec<f64> = replacements
        .iter()
        .map(|task| seconds_of(task.meta.as_ref().and_then(|meta| meta.created_at.as_ref())))
        .collect();
    let running_at: Vec<f64> = replacements
        .iter()
        .map(|task| seconds_of(task.status.as_ref().and_then(|s| s.timestamp.as_ref())))
        .collect();
    // Parallelism 2: the first two start at once, and whenever one more starts, at most two
    // (it included) have not come up yet.
    assert_eq!(created[0], created[1], "the first two at once: {created:?}");
    for (index, started) in created.iter().enumerate() {
        let on_their_way = (0..=index)
            .filter(|earlier| running_at[*earlier] > *started)
            .count();
        assert!(
            on_their_way <= 2,
            "replacement {index} made {on_their_way} on their way: created {created:?}, running {running_at:?}"
        );
    }
    assert!(
        created[2] >= running_at[0].min(running_at[1]),
        "the third waited for one of the first two: created {created:?}, running {running_at:?}"
    );
    // Start-first: each old task stopped only after its slot's replacement ran.
    for old in tasks.iter().filter(|task| before.contains(&task.id)) {
        assert_eq!(old.desired_state(), TaskState::Shutdown, "{old:?}");
        let replacement = replacements
            .iter()
            .find(|task| task.slot == old.slot)
            .expect("a replacement in the slot");
        let stopped = seconds_of(old.status.as_ref().and_then(|s| s.timestamp.as_ref()));
        let came_up = seconds_of(
            replacement
                .status
                .as_ref()
                .and_then(|s| s.timestamp.as_ref()),
        );
        assert!(
            stopped >= came_up,
            "slot {}: old stopped at {stopped}, new ran at {came_up}",
            old.slot
        );
    }
    host.wait_for_running(&web, 4);

    // A rollback returns to V=1 and succeeds as a rollback.
    host.ok(&["service", "rollback", &web]);
    assert_eq!(
        update_status(&host, &web),
        (
            "rollback_completed".to_owned(),
            "rollback completed".to_owned()
        )
    );
    let inspect: Value =
        serde_json::from_str(&host.ok(&["service", "inspect", &web])).expect("inspect JSON");
    let env = &inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"];
    assert_eq!(env, &serde_json::json!(["V=1"]), "{inspect}");
    host.wait_for_running(&web, 4);
    let error = host.fails(&["service", "update", "--rollback", "--replicas", "2", &web]);
    assert!(
        error.contains("other flags may not be combined with --rollback"),
        "{error}"
    );
}

#[test]
fn updates_whose_tasks_fail_their_healthcheck_roll_back_or_pause_with_the_reason() {
    let Some(host) = SwarmHost::start_manager("failed-update") else {
        return;
    };
    let create = |name: &str, failure_action: &str| {
        host.ok(&[
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            "2",
            "--stop-grace-period",
            "1s",
            "--update-failure-action",
            failure_action,
            "--update-monitor",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ]);
    };
    let break_health = |name: &str| {
        host.fails_within(
            &[
                "service",
                "update",
                "--health-cmd",
                "false",
                "--health-interval",
                "200ms",
                "--health-retries",
                "1",
                name,
            ],
            Duration::from_secs(90),
        )
    };
    let rolled_back = host.service("rolled-back");
    let paused = host.service("paused");
    create(&rolled_back, "rollback");
    create(&paused, "pause");

    let error = break_health(&rolled_back);
    assert!(
        error.contains(
            "was rolled back: update rolled back due to failure or early termination of task"
        ),
        "{error}"
    );
    wait_until(
        "the rollback to complete",
        CONVERGE_TIMEOUT,
        || match update_status(&host, &rolled_back) {
            (state, _) if state == "rollback_completed" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let inspect = host.ok(&["service", "inspect", &rolled_back]);
    assert!(
        !inspect.contains("Healthcheck"),
        "the spec went back: {inspect}"
    );
    host.wait_for_running(&rolled_back, 2);

    let error = break_health(&paused);
    assert!(
        error.contains(
            "service update paused: update paused due to failure or early termination of task"
        ),
        "{error}"
    );
    let (state, message) = update_status(&host, &paused);
    assert_eq!(state, "paused");
    assert!(
        message.starts_with("update paused due to failure"),
        "{message}"
    );
    // Paused, the slot not yet updated keeps its old task running.
    let tasks = host.tasks(&paused).expect("service ps");
    assert!(
        tasks.iter().any(|task| task.is_running()),
        "an old task still runs: {tasks:?}"
    );
    // An update that changes nothing resumes it, as in Docker: the still failing spec pauses
    // it again, over a task made after the resumption.
    host.ok(&["service", "update", "-d", &paused]);
    wait_until(
        "the resumed update to pause again",
        CONVERGE_TIMEOUT,
        || match update_status(&host, &paused) {
            (state, again) if state == "paused" && again != message => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn a_stack_service_starts_once_its_dependency_is_healthy_with_placeholders_and_limits_applied() {
    let Some(host) = SwarmHost::start_manager("depends-on") else {
        return;
    };
    let stack = host.service("deps");
    let file = host.dir.join("stack.yml");
    std::fs::write(
        &file,
        r#"
services:
  db:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 86400"]
    healthcheck:
      test: ["CMD", "test", "-e", "/tmp/ready"]
      interval: 200ms
      retries: 30
  web:
    image: busybox:latest
    init: true
    hostname: "{{.Service.Name}}-{{.Task.Slot}}"
    environment:
      NODE: "{{.Node.Hostname}}"
    command:
      - sh
      - -c
      - echo "$$(hostname) on $$NODE"; grep CapEff /proc/self/status; echo "nofile $$(ulimit -n)"; echo "somaxconn $$(cat /proc/sys/net/core/somaxconn)"; exec sleep 86400
    cap_add: [NET_ADMIN]
    cap_drop: [NET_RAW]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
    sysctls:
      net.core.somaxconn: 512
    depends_on:
      db:
        condition: service_healthy
"#,
    )
    .expect("compose file");
    let file = file.display().to_string();
    host.ok(&["stack", "deploy", "-c", &file, "--detach=false", &stack]);
    let db = stored_tasks(&host, &format!("{stack}_db"));
    let web = stored_tasks(&host, &format!("{stack}_web"));
    assert_eq!((db.len(), web.len()), (1, 1), "{db:?} {web:?}");
    let db_healthy = seconds_of(db[0].status.as_ref().and_then(|s| s.timestamp.as_ref()));
    let web_created = seconds_of(web[0].meta.as_ref().and_then(|m| m.created_at.as_ref()));
    assert!(
        web_created >= db_healthy,
        "web's task was made at {web_created}, before db was healthy at {db_healthy}"
    );
    // Swarm's placeholders stand for the task and the node; the capabilities, the limit and
    // the sysctl reach the container (Docker's default set is a80425fb; NET_RAW, bit 13, is
    // dropped and NET_ADMIN, bit 12, added).
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let expected = [
        format!("{stack}_web-1 on {}", node.trim()),
        "CapEff:\t00000000a80415fb".to_owned(),
        "nofile 1024".to_owned(),
        "somaxconn 512".to_owned(),
    ];
    wait_until("web's log lines", CONVERGE_TIMEOUT, || {
        let logs = host.try_ok(&["service", "logs", &format!("{stack}_web")])?;
        if expected.iter().all(|line| logs.contains(line.as_str())) {
            Ok(())
        } else {
            Err(logs)
        }
    });
    host.ok(&["stack", "rm", &stack]);
}

/// The `SWMKEY-1-` line of what a command printed.
fn unlock_key_in(output: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {output:?}"))
        .to_owned()
}

/// A well-formed key that is not `key`: one of its base64 digits changed.
fn another_key(key: &str) -> String {
    let mut other = key.to_owned().into_bytes();
    let digit = "SWMKEY-1-".len() + 4;
    other[digit] = if other[digit] == b'A' { b'B' } else { b'A' };
    String::from_utf8(other).expect("ASCII")
}

/// A restarted manager under autolock serves nothing of the swarm and says how to unlock.
fn assert_locked(host: &SwarmHost) {
    let info = host.ok(&["info"]);
    assert!(info.contains("Swarm: locked"), "{info}");
    let refused = host.fails(&["service", "ls"]);
    assert!(
        refused.contains(
            "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"shoal swarm unlock\" to unlock it."
        ),
        "{refused}"
    );
}

#[test]
fn autolock_keeps_a_restarted_manager_locked_until_it_is_unlocked() {
    let Some(mut host) = SwarmHost::start("autolock") else {
        return;
    };
    let output = host.swarm_init_with(&["--autolock"]);
    assert!(
        output.contains("To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:")
            && output.contains("Remember to store this key in a password manager"),
        "{output}"
    );
    let key = unlock_key_in(&output);
    assert_eq!(host.ok(&["swarm", "unlock-key", "-q"]).trim(), key);
    assert!(host.ok(&["info"]).contains(" Autolock Managers: true"));
    let not_locked = host.fails(&["swarm", "unlock"]);
    assert!(
        not_locked.contains("Error: swarm is not locked"),
        "{not_locked}"
    );
    let web = host.service("web");
    host.ok(&[
        "service",
        "create",
        "--name",
        &web,
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    let before = host.wait_for_exactly(&web, 1);

    // Restarted, the manager is locked until the right key is given; then the same task runs on.
    host.kill_9_daemon();
    host.spawn_daemon();
    assert_locked(&host);
    let malformed = host.unlock("SWMTKN-1-not-an-unlock-key");
    assert!(
        String::from_utf8_lossy(&malformed.stderr).contains("invalid unlock key"),
        "{}",
        output_text(&malformed)
    );
    let wrong = host.unlock(&another_key(&key));
    let wrong_text = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert!(
        !wrong.status.success()
            && wrong_text.contains("swarm could not be unlocked: invalid key provided")
            && wrong_text.contains("shoal swarm unlock-key"),
        "{}",
        output_text(&wrong)
    );
    assert_locked(&host);
    let unlocked = host.unlock(&key);
    assert!(unlocked.status.success(), "{}", output_text(&unlocked));
    let after = host.wait_for_exactly(&web, 1);
    assert_eq!(
        after[0].id, before[0].id,
        "the task is adopted, not replaced"
    );

    // After a rotation (once the manager re-sealed its data key), only the new key unlocks.
    let sealed_before = host.data_key_file();
    let rotated = host.ok(&["swarm", "unlock-key", "--rotate"]);
    assert!(
        rotated.starts_with("Successfully rotated manager unlock key.\n\nTo unlock"),
        "{rotated}"
    );
    let new_key = unlock_key_in(&rotated);
    assert_ne!(new_key, key);
    wait_until("the data key re-sealed", Duration::from_secs(10), || {
        if host.data_key_file() != sealed_before {
            Ok(())
        } else {
            Err("the data key file is unchanged".to_owned())
        }
    });
    host.kill_9_daemon();
    host.spawn_daemon();
    assert_locked(&host);
    let old = host.unlock(&key);
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("invalid key provided"),
        "{}",
        output_text(&old)
    );
    let unlocked = host.unlock(&new_key);
    assert!(unlocked.status.success(), "{}", output_text(&unlocked));
    host.wait_for_exactly(&web, 1);

    // With autolock off the data key file is in clear and a restarted manager just runs.
    assert_eq!(
        host.ok(&["swarm", "update", "--autolock=false"]),
        "Swarm updated.\n"
    );
    wait_until("the data key in clear", Duration::from_secs(10), || {
        let file = host.data_key_file();
        if file.contains("\"sealed_by_unlock_key\": false") {
            Ok(())
        } else {
            Err(file)
        }
    });
    let no_key = host.fails(&["swarm", "unlock-key"]);
    assert!(no_key.contains("Error: no unlock key is set"), "{no_key}");
    host.kill_9_daemon();
    host.spawn_daemon();
    host.wait_for_exactly(&web, 1);
    assert!(host.ok(&["info"]).contains(" Autolock Managers: false"));

    // Turning it on again prints the new key.
    let on = host.ok(&["swarm", "update", "--autolock=true"]);
    assert!(
        on.starts_with("Swarm updated.\nTo unlock a swarm manager after it restarts"),
        "{on}"
    );
    assert_eq!(
        host.ok(&["swarm", "unlock-key", "-q"]).trim(),
        unlock_key_in(&on)
    );

    // Without the key, leaving with --force is the way out of a locked swarm.
    host.kill_9_daemon();
    host.spawn_daemon();
    assert_locked(&host);
    let refused = host.fails(&["swarm", "leave"]);
    assert!(
        refused.contains("Swarm is encrypted and locked. Please unlock it first"),
        "{refused}"
    );
    assert_eq!(
        host.ok(&["swarm", "leave", "--force"]),
        "Node left the swarm.\n"
    );
    assert!(host.ok(&["info"]).contains("Swarm: inactive"));
    assert!(
        host.containers(&web, true)
            .expect("container ls")
            .is_empty()
    );
}

/// `network create|ls|inspect|rm|prune` and the networks a stack makes: docker's columns and
/// document, refusals that say why and change nothing, a network in use kept with its users
/// named, and `STACK_default` for a stack's services that name no network.
#[test]
fn networks_are_created_listed_inspected_removed_and_pruned() {
    let Some(host) = SwarmHost::start_manager("networks") else {
        return;
    };
    let back = host.service("back");
    let id = host
        .ok(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.77.0.0/24",
            "--gateway",
            "10.77.0.1",
            "--ip-range",
            "10.77.0.128/25",
            "--attachable",
            "--internal",
            "--opt",
            "encrypted",
            "--label",
            "tier=db",
            &back,
        ])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 25, "an object id: {id:?}");
    let table = host.ok(&["network", "ls"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(header, ["NETWORK ID", "NAME", "DRIVER", "SCOPE"], "{table}");
    let row = table
        .lines()
        .find(|line| line.contains(&back))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [&id[..12], back.as_str(), "overlay", "swarm"],
        "{table}"
    );
    assert_eq!(
        host.ok(&["network", "ls", "-q", "--filter", &format!("name={back}")])
            .trim(),
        &id[..12]
    );
    let listed = json_lines(&host.ok(&[
        "network",
        "ls",
        "--format",
        "json",
        "--filter",
        "label=tier=db",
    ]))
    .expect("JSON lines");
    assert_eq!(listed.len(), 1);
    assert_eq!(field(&listed[0], "Name"), back);
    let inspected: Value =
        serde_json::from_str(&host.ok(&["network", "inspect", &back])).expect("inspect JSON");
    let document = &inspected[0];
    assert_eq!(document["Id"], id.as_str());
    assert_eq!(document["Scope"], "swarm");
    assert_eq!(document["Driver"], "overlay");
    assert_eq!(document["Internal"], true);
    assert_eq!(document["Attachable"], true);
    assert_eq!(document["Options"]["encrypted"], "");
    assert_eq!(document["Labels"]["tier"], "db");
    assert_eq!(document["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24");
    assert_eq!(document["IPAM"]["Config"][0]["IPRange"], "10.77.0.128/25");

    // Bad input is refused with the reason, and nothing is written.
    let before = host.ok(&["network", "ls", "-q", "--no-trunc"]);
    for (args, expected) in [
        (
            vec!["--subnet", "10.77.0.0/16"],
            "overlaps subnet 10.77.0.0/24 of network",
        ),
        (vec!["--subnet", "10.78.0.0/33"], "invalid subnet"),
        (
            vec!["--subnet", "10.78.0.0/24", "--gateway", "10.79.0.1"],
            "not inside subnet",
        ),
        (vec!["-d", "bridge"], "use the overlay driver"),
        (
            vec!["--opt", "com.docker.network.driver.mtu=9"],
            "from 68 to 65535",
        ),
    ] {
        let mut command = vec!["network", "create"];
        command.extend(args);
        let other = host.service("other");
        command.push(&other);
        let refused = host.fails(&command);
        assert!(refused.contains(expected), "{command:?}: {refused}");
    }
    let taken = host.fails(&["network", "create", &back]);
    assert!(taken.contains("already exists"), "{taken}");
    assert_eq!(host.ok(&["network", "ls", "-q", "--no-trunc"]), before);

    // A stack's services that name no network share STACK_default; it can't be removed while
    // they use it, and `stack rm` takes it away.
    let stack = host.service("st");
    let file = host.dir.join("stack.yml");
    std::fs::write(
        &file,
        "services:\n  app:\n    image: busybox\n    command: [sleep, '3600']\n    deploy: {replicas: 0}\n",
    )
    .expect("writing the stack file");
    let file = file.display().to_string();
    host.ok(&["stack", "deploy", "-c", &file, &stack]);
    let default = format!("{stack}_default");
    let names = host.ok(&["network", "ls", "--format", "json"]);
    assert!(
        names.contains(&format!("\"Name\":\"{default}\"")),
        "{names}"
    );
    let in_use = host.fails(&["network", "rm", &default]);
    assert!(
        in_use.contains(&format!("in use by service(s) {stack}_app")),
        "{in_use}"
    );

    // An external network must exist before anything is deployed.
    let external = host.dir.join("external.yml");
    std::fs::write(
        &external,
        "services:\n  app:\n    image: busybox\n    networks: [corp]\nnetworks:\n  corp: {external: true, name: nowhere-net}\n",
    )
    .expect("writing the stack file");
    let refused = host.fails(&[
        "stack",
        "deploy",
        "-c",
        &external.display().to_string(),
        &host.service("ext"),
    ]);
    assert!(
        refused.contains("\"nowhere-net\" is declared as external, but could not be found"),
        "{refused}"
    );
    assert!(!host.ok(&["stack", "ls"]).contains(&host.service("ext")));

    host.ok(&["stack", "rm", &stack]);
    assert!(!host.ok(&["network", "ls"]).contains(&default));

    // rm by name; prune takes what nothing uses.
    let spare = host.service("spare");
    host.ok(&["network", "create", &spare]);
    assert_eq!(host.ok(&["network", "rm", &spare]).trim(), spare);
    host.ok(&["network", "create", &spare]);
    let pruned = host.ok(&["network", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Networks:\n"), "{pruned}");
    assert!(
        pruned.contains(&back) && pruned.contains(&spare),
        "{pruned}"
    );
    // What stays is the ingress network `swarm init` made, as docker keeps it.
    let left = host.ok(&["network", "ls", "--format", "json"]);
    let left = json_lines(&left).expect("JSON lines");
    assert_eq!(
        left.iter()
            .map(|row| field(row, "Name"))
            .collect::<Vec<_>>(),
        ["ingress"]
    );
}

/// Published ports from the CLI (issue 15): `service create -p`, `service update
/// --publish-add/--publish-rm`, `stack deploy` with `ports:`, shown by `service ls` and
/// `service inspect`, and every bad input refused with what to do and nothing written. The
/// services run no task (`--replicas 0`): this is the control plane, not the routing mesh.
#[test]
fn published_ports_are_given_shown_and_refused_with_what_to_do() {
    let Some(host) = SwarmHost::start_manager("ports") else {
        return;
    };
    let web = host.service("web");
    let api = host.service("api");
    fn create<'a>(name: &'a str, flags: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["service", "create", "-d", "--replicas", "0", "--name", name];
        args.extend_from_slice(flags);
        args.extend(["busybox", "sleep", "3600"]);
        args
    }
    host.ok(&create(
        &web,
        &[
            "-p",
            "8080:80",
            "-p",
            "published=5353,target=53,protocol=udp",
        ],
    ));
    host.ok(&create(&api, &["--publish", "80"]));
    let ports_of = |name: &str| -> Vec<(u64, u64, String, String)> {
        let inspected: Value =
            serde_json::from_str(&host.ok(&["service", "inspect", name])).expect("inspect JSON");
        inspected[0]["Endpoint"]["Ports"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|port| {
                (
                    port["PublishedPort"].as_u64().unwrap_or(0),
                    port["TargetPort"].as_u64().unwrap_or(0),
                    field(port, "Protocol"),
                    field(port, "TrafficPolicy"),
                )
            })
            .collect()
    };
    assert_eq!(
        ports_of(&web),
        [
            (8080, 80, "tcp".to_owned(), "prefer-local".to_owned()),
            (5353, 53, "udp".to_owned(), "prefer-local".to_owned()),
        ]
    );
    assert_eq!(ports_of(&api)[0].0, 30000, "the first of 30000-32767");
    let listed = json_lines(&host.ok(&["service", "ls", "--format", "json"])).expect("JSON");
    let row = |name: &str| {
        listed
            .iter()
            .find(|row| field(row, "Name") == name)
            .map(|row| field(row, "Ports"))
            .unwrap_or_default()
    };
    assert_eq!(row(&web), "*:8080->80/tcp, *:5353->53/udp");
    assert_eq!(row(&api), "*:30000->80/tcp");

    // Bad input: each refusal names the problem and the fix, and nothing is written.
    let before = host.ok(&["service", "ls", "--format", "json"]);
    let other = host.service("other");
    for (flags, expected) in [
        (
            vec!["-p", "8080:81"],
            format!("port 8080/tcp is already published by service {web}"),
        ),
        (
            vec!["-p", "70000:80"],
            "--publish: invalid port \"70000:80\": published port \"70000\" is not a port number from 0 to 65535".to_owned(),
        ),
        (
            vec!["-p", "8081:80/icmp"],
            "invalid protocol \"icmp\": use tcp, udp or sctp".to_owned(),
        ),
        (
            vec![
                "-p",
                "published=9090,target=80,mode=host",
                "--replicas-max-per-node",
                "2",
            ],
            "--replicas-max-per-node is 2: set it to 1".to_owned(),
        ),
        (
            vec!["-p", "8081:80", "-p", "8081:81"],
            "published port 8081/tcp is given twice".to_owned(),
        ),
    ] {
        let refused = host.fails(&create(&other, &flags));
        assert!(refused.contains(&expected), "{flags:?}: {refused}");
    }
    let refused = host.fails(&["service", "update", "-d", "--publish-add", "30000:90", &web]);
    assert!(
        refused.contains(&format!(
            "port 30000/tcp is already published by service {api}"
        )),
        "{refused}"
    );
    let stack_file = host.dir.join("ports.yml");
    std::fs::write(
        &stack_file,
        "services:\n  front:\n    image: busybox\n    command: [sleep, '3600']\n    ports: ['8080:80']\n    deploy: {replicas: 0}\n",
    )
    .expect("writing the stack file");
    let stack = host.service("st");
    let refused = host.fails(&[
        "stack",
        "deploy",
        "-c",
        &stack_file.display().to_string(),
        &stack,
    ]);
    assert!(
        refused.contains(&format!(
            "port 8080/tcp is already published by service {web}"
        )),
        "{refused}"
    );
    assert_eq!(host.ok(&["service", "ls", "--format", "json"]), before);

    // The ingress network stays while services publish through it, and is one of a kind.
    let refused = host.fails(&["network", "rm", "ingress"]);
    assert!(
        refused.contains("publish ports through the routing mesh") && refused.contains(&web),
        "{refused}"
    );
    let refused = host.fails(&["network", "create", "-d", "overlay", "--ingress", &other]);
    assert!(
        refused.contains("ingress network already exists"),
        "{refused}"
    );

    // Removing a port frees its number for another service; a chosen number stays across
    // updates.
    host.ok(&["service", "update", "-d", "--publish-rm", "8080", &web]);
    host.ok(&[
        "service",
        "update",
        "-d",
        "--publish-add",
        "8080:81",
        "--env-add",
        "A=1",
        &api,
    ]);
    assert_eq!(
        ports_of(&api).iter().map(|port| port.0).collect::<Vec<_>>(),
        [30000, 8080]
    );
    assert_eq!(ports_of(&web).len(), 1);
}
