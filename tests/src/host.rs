//! One test host: a network namespace on the underlay with its own `shoal daemon` (own UTS
//! namespace and hostname, data root and socket), and the verbs tests use on it: run the CLI
//! against it, run a program inside it, kill and restart its daemon, partition and heal it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::process::{COMMAND_TIMEOUT, describe, output_text, pause_process, run, run_ok};
use crate::wait::poll_until;
use crate::{HarnessError, netns};

/// How long a daemon may take to answer `container ls` after it starts.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM before it gets SIGKILL.
const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `swarm leave` may take to remove the daemon's overlay networking.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(90);

/// The docker CLI the Docker Engine API must satisfy (28.2, a client only), installed apart from
/// Debian's `docker.io`, whose client is older.
pub const DOCKER_CLI: &str = "/usr/local/bin/docker";

/// A test host. Its daemon's socket is a path on the machine's filesystem, so the CLI reaches it
/// from the test's own namespace; only the daemon (and its containers) live in the host's
/// network namespace.
#[derive(Debug)]
pub struct TestHost {
    name: String,
    address: Ipv4Addr,
    dir: PathBuf,
    shoal: PathBuf,
    busybox_tarball: PathBuf,
    /// Flags the daemon gets after the harness's own.
    daemon_args: Vec<String>,
    daemon: Mutex<Option<Child>>,
}

impl TestHost {
    pub(crate) fn new(
        name: String,
        address: Ipv4Addr,
        dir: PathBuf,
        shoal: PathBuf,
        busybox_tarball: PathBuf,
        daemon_args: Vec<String>,
    ) -> TestHost {
        TestHost {
            name,
            address,
            dir,
            shoal,
            busybox_tarball,
            daemon_args,
            daemon: Mutex::new(None),
        }
    }

    /// The host's name: its network namespace's name and its daemon's hostname (what `node ls`
    /// shows).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the underlay, the one other hosts reach it at.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// `/run/netns/<name>`, for `nsenter --net=`.
    pub fn netns_path(&self) -> PathBuf {
        netns::netns_path(&self.name)
    }

    /// The host pid of a running container on this host whose name starts with `<service>.`
    /// (a task of that service), or why there is none yet: for tests to poll, and to enter the
    /// task with `nsenter -t PID`.
    pub fn running_task_pid(&self, service: &str) -> Result<String, String> {
        let listed = self.shoal(&["container", "ls", "--format", "json"]);
        if !listed.status.success() {
            return Err(output_text(&listed));
        }
        let prefix = format!("{service}.");
        let id = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|row| {
                row["Names"]
                    .as_str()
                    .is_some_and(|name| name.starts_with(&prefix))
            })
            .and_then(|row| row["ID"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("no running {service} container on {} yet", self.name))?;
        // The container may go between the two calls: that is "not running", not a failure.
        let inspected = self.shoal(&["container", "inspect", &id]);
        if !inspected.status.success() {
            return Err(output_text(&inspected));
        }
        let document: serde_json::Value =
            serde_json::from_slice(&inspected.stdout).map_err(|error| error.to_string())?;
        let document = document.get(0).unwrap_or(&document);
        match document["state"]["pid"].as_i64() {
            Some(pid) if pid > 0 => Ok(pid.to_string()),
            _ => Err(format!("no pid yet: {document}")),
        }
    }

    /// The prefix the host's daemon names its overlay namespaces, links and tables with.
    pub fn overlay_prefix(&self) -> String {
        overlay_net::prefix_for_data_root(&self.data_root())
    }

    /// The overlay namespace of the network `network_id` on this host.
    pub fn overlay_netns_path(&self, network_id: &str) -> PathBuf {
        netns::netns_path(&format!("{}-{network_id}", self.overlay_prefix()))
    }

    /// What the daemon's overlay networking has on the machine: its namespaces (networks' and
    /// tasks'), its links in the host's namespace (gateway bridge and legs) and its nftables
    /// tables there. Empty after `swarm leave`.
    pub fn overlay_footprint(&self) -> Vec<String> {
        let prefix = self.overlay_prefix();
        let mut found: Vec<String> = netns::list()
            .into_iter()
            .filter(|name| netns::made_by_daemon(name, &prefix))
            .map(|name| format!("network namespace {name}"))
            .collect();
        let links =
            String::from_utf8_lossy(&self.run_in_host("ip", &["-br", "link"]).stdout).into_owned();
        found.extend(
            links
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .filter(|name| name.starts_with(&format!("{prefix}-")))
                .map(|name| format!("link {name}")),
        );
        let tables = String::from_utf8_lossy(&self.run_in_host("nft", &["list", "tables"]).stdout)
            .into_owned();
        found.extend(
            tables
                .lines()
                .filter(|line| line.contains(&prefix))
                .map(|line| format!("nftables {line}")),
        );
        found
    }

    /// The host's directory: data root, socket, daemon log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's data root.
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The daemon's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shoal.sock")
    }

    /// The daemon's address for `shoal -H` or `SHOAL_HOST`: `unix://<socket>`.
    pub fn host_url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon's Docker Engine API: `unix://<socket>`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The file the daemon's stderr goes to, across restarts.
    pub fn daemon_log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The last `lines` lines of the daemon log, without openraft's chatter.
    pub fn daemon_log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.daemon_log()).unwrap_or_default();
        let kept: Vec<&str> = log.lines().filter(|l| !l.contains("openraft")).collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `shoal -H <this host's socket> args` from the test's namespace and returns its
    /// output, whatever the exit status. Panics if it runs for a minute (hung).
    pub fn shoal(&self, args: &[&str]) -> Output {
        self.try_shoal(args, COMMAND_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}: {error}", self.name))
    }

    /// Runs `shoal -H <this host's socket> args`, killing it after `timeout`.
    pub fn try_shoal(&self, args: &[&str], timeout: Duration) -> Result<Output, HarnessError> {
        run(&mut self.shoal_command(args), timeout)
    }

    /// Runs `shoal -H <this host's socket> args` and returns its stdout; panics with its exit
    /// status, stdout and stderr when it fails.
    pub fn shoal_ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.shoal_command(args), COMMAND_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}: {error}", self.name))
    }

    /// Runs the stock docker CLI ([`DOCKER_CLI`]) against this host's Docker Engine API
    /// (`DOCKER_HOST`), with a configuration directory of its own, and returns its output,
    /// whatever the exit status. Panics if it hangs.
    pub fn docker(&self, args: &[&str]) -> Output {
        run(&mut self.docker_command(args), COMMAND_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}: {error}", self.name))
    }

    /// Runs the docker CLI as [`TestHost::docker`] does and returns its stdout; panics with its
    /// exit status, stdout and stderr when it fails.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.docker_command(args), COMMAND_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}: {error}", self.name))
    }

    /// The docker CLI command [`TestHost::docker`] runs, for a test that reads its output as it
    /// comes (`logs -f`).
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(DOCKER_CLI);
        command
            .args(args)
            .env("DOCKER_HOST", self.docker_host())
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_API_VERSION")
            .env("NO_COLOR", "1");
        command
    }

    fn shoal_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.shoal);
        command
            .arg("-H")
            .arg(self.host_url())
            .args(args)
            .env("NO_COLOR", "1");
        command
    }

    /// A command that runs `program` inside the host's network namespace. `nsenter --net=`
    /// rather than `ip netns exec`, which remounts `/sys` and hides the cgroup v1 hierarchy.
    fn command_in_host(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg(program);
        command
    }

    /// Runs `program args` inside the host's network namespace (for `ip`, `nft`, `busybox nc`
    /// and the like) and returns its output, whatever the exit status. Panics if it hangs.
    pub fn run_in_host(&self, program: &str, args: &[&str]) -> Output {
        let mut command = self.command_in_host(program);
        command.args(args);
        run(&mut command, COMMAND_TIMEOUT).unwrap_or_else(|error| panic!("{}: {error}", self.name))
    }

    /// Runs `work` on a thread that has entered the host's network namespace, and returns what
    /// it returns. Sockets it creates stay in the host's namespace wherever they are used
    /// afterwards, so a test can bind a `TcpListener` on one host and connect from another.
    pub fn in_host_netns<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let path = self.netns_path();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                let namespace = std::fs::File::open(&path)
                    .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
                // SAFETY: setns takes a descriptor that stays open for the call and a flag; it
                // moves only this thread, which the scope ends, into the namespace.
                let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    result,
                    0,
                    "setns into {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                work()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn lock_daemon(&self) -> MutexGuard<'_, Option<Child>> {
        // A test that panicked while holding the lock left a valid `Option<Child>` behind.
        self.daemon
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The daemon's pid (the `shoal daemon` process itself), or `None` while it is stopped.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.lock_daemon().as_ref().map(Child::id)
    }

    /// Starts the daemon inside the host's network namespace, in a fresh UTS namespace whose
    /// hostname is the host's name, and waits until it answers `shoal container ls`. The chain
    /// `nsenter` → `unshare` → `sh` → `shoal daemon` execs all the way, so the child's pid is
    /// the daemon's.
    pub(crate) fn start_daemon(&self) -> Result<(), HarnessError> {
        let mut daemon = self.lock_daemon();
        if let Some(child) = daemon.as_ref() {
            let reason = format!(
                "it is already running as pid {}: kill_daemon first",
                child.id()
            );
            return Err(self.start_error(reason));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(HarnessError::io(format!("creating {}", self.dir.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log())
            .map_err(HarnessError::io(format!(
                "opening {}",
                self.daemon_log().display()
            )))?;
        let mut command = self.command_in_host("unshare");
        command
            .args([
                "--uts",
                "sh",
                "-c",
                r#"hostname "$0" && exec "$@""#,
                &self.name,
            ])
            .arg(&self.shoal)
            .arg("daemon")
            .arg("--data-root")
            .arg(self.data_root())
            .arg("-H")
            .arg(self.host_url())
            .arg("--docker-api")
            .arg(self.docker_host())
            .args(&self.daemon_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().map_err(HarnessError::io(format!(
            "starting `{}`",
            describe(&command)
        )))?;
        *daemon = Some(child);
        drop(daemon);
        self.wait_for_daemon()
    }

    /// Polls `shoal container ls` until the daemon answers; fails at once if it exits.
    fn wait_for_daemon(&self) -> Result<(), HarnessError> {
        let description = "an answer to `shoal container ls`";
        let exited = poll_until(description, DAEMON_START_TIMEOUT, || {
            if let Some(status) = self.reap_exited_daemon() {
                return Ok(Some(status));
            }
            match self.try_shoal(&["container", "ls", "-q"], Duration::from_secs(10)) {
                Ok(output) if output.status.success() => Ok(None),
                Ok(output) => Err(output_text(&output)),
                Err(error) => Err(error.to_string()),
            }
        })
        .map_err(|error| self.start_error(error.to_string()))?;
        match exited {
            None => Ok(()),
            Some(status) => Err(self.start_error(format!("it exited with {status}"))),
        }
    }

    /// The exit status of the daemon if it has exited (and forgets it), `None` if it runs.
    fn reap_exited_daemon(&self) -> Option<std::process::ExitStatus> {
        let mut daemon = self.lock_daemon();
        let status = daemon.as_mut()?.try_wait().ok()??;
        *daemon = None;
        Some(status)
    }

    fn start_error(&self, reason: String) -> HarnessError {
        HarnessError::DaemonStart {
            host: self.name.clone(),
            reason,
            log: self.daemon_log(),
            log_tail: self.daemon_log_tail(30),
        }
    }

    /// SIGKILLs the daemon and reaps it. Its containers keep running under their shims, as
    /// after a crash. Panics if the daemon is not running.
    pub fn kill_daemon(&self) {
        let mut daemon = self.lock_daemon();
        let mut child = daemon
            .take()
            .unwrap_or_else(|| panic!("{}: kill_daemon, but the daemon is not running", self.name));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the daemon (SIGSTOP) for `pause`, then lets it go on ([`pause_process`]). Panics
    /// if the daemon is not running.
    pub fn pause_daemon(&self, pause: Duration) {
        let pid = self
            .lock_daemon()
            .as_ref()
            .unwrap_or_else(|| panic!("{}: pause_daemon, but the daemon is not running", self.name))
            .id();
        pause_process(pid, pause);
    }

    /// Starts the daemon again on the same data root and socket, after `kill_daemon`, and
    /// waits until it answers. Panics (with the daemon log) if it does not come up, or if the
    /// daemon is still running.
    pub fn restart_daemon(&self) {
        self.start_daemon()
            .unwrap_or_else(|error| panic!("{}: restarting the daemon: {error}", self.name));
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after 10 s. Does nothing if it is not running.
    pub fn stop_daemon(&self) {
        let Some(mut child) = self.lock_daemon().take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill takes two integers; the child is ours and not yet reaped, so the pid
            // is still its own.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + DAEMON_STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Cuts the host off the underlay: an nftables table in the host's namespace drops
    /// everything in and out of its veth; loopback keeps working. Partitioning twice is the
    /// same as once.
    pub fn partition(&self) {
        self.apply_nft(&netns::partition_script(), "partition");
    }

    /// Deletes the partition table, reconnecting the host; a no-op when it is not partitioned.
    pub fn heal(&self) {
        self.apply_nft(&netns::heal_script(), "heal");
    }

    fn apply_nft(&self, script: &str, verb: &str) {
        let file = self.dir.join(format!("{verb}.nft"));
        std::fs::write(&file, script)
            .unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
        let mut command = self.command_in_host("nft");
        command.arg("-f").arg(&file);
        run_ok(&mut command, COMMAND_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}: {verb}: {error}", self.name));
    }

    /// Imports the busybox test image as `busybox:latest`, building the cluster's tarball from
    /// `/bin/busybox` the first time.
    pub fn import_busybox(&self) {
        self.import_busybox_as("busybox:latest");
    }

    /// Imports the busybox test image under another reference, e.g. to update a service to
    /// an image that differs by name only.
    pub fn import_busybox_as(&self, reference: &str) {
        if !self.busybox_tarball.exists() {
            crate::build_busybox_tarball(&self.busybox_tarball)
                .unwrap_or_else(|error| panic!("building the busybox image: {error}"));
        }
        let tarball = self.busybox_tarball.display().to_string();
        self.shoal_ok(&["image", "import", &tarball, reference]);
    }

    /// `node ls` on this host, by hostname: (status, manager status), e.g. `("Ready",
    /// "Leader")`, with an empty manager status for a worker. `Err` with the output when the
    /// command fails (not a manager, no quorum).
    pub fn node_table(&self) -> Result<BTreeMap<String, (String, String)>, String> {
        let output = self.shoal(&["node", "ls", "--format", "json"]);
        if !output.status.success() {
            return Err(output_text(&output));
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let node: serde_json::Value = serde_json::from_str(line)
                    .map_err(|error| format!("`node ls` printed {line:?}: {error}"))?;
                let text = |key: &str| node[key].as_str().unwrap_or_default().to_owned();
                Ok((text("Hostname"), (text("Status"), text("ManagerStatus"))))
            })
            .collect()
    }

    /// `shoal swarm init --advertise-addr <underlay address>`: the host becomes the first
    /// manager of a new swarm, its cluster port listening on 2377 inside its namespace. Returns
    /// the command's output.
    pub fn swarm_init(&self) -> String {
        let address = self.address.to_string();
        self.shoal_ok(&["swarm", "init", "--advertise-addr", &address])
    }

    /// The current join token for `role` (worker or manager), from this manager.
    pub fn join_token(&self, role: &str) -> String {
        self.shoal_ok(&["swarm", "join-token", "-q", role])
            .trim()
            .to_owned()
    }

    /// `shoal swarm join --token <token> --advertise-addr <underlay address> <manager>:2377`.
    /// Returns the command's output.
    pub fn swarm_join(&self, token: &str, manager: &TestHost) -> String {
        let address = self.address.to_string();
        let remote = format!("{}:2377", manager.address);
        self.shoal_ok(&[
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &address,
            &remote,
        ])
    }

    /// `shoal service create -d --name NAME FLAGS… busybox COMMAND…` on this manager.
    pub fn create_service(&self, name: &str, flags: &[&str], command: &[&str]) {
        let mut args = vec!["service", "create", "-d", "--name", name];
        args.extend_from_slice(flags);
        args.push("busybox");
        args.extend_from_slice(command);
        self.shoal_ok(&args);
    }

    /// `shoal swarm leave --force`, then waits until the daemon's overlay networking is gone
    /// ([`TestHost::overlay_footprint`] empty). Panics with what is left if it does not go.
    pub fn leave_swarm_leaving_nothing(&self) {
        self.shoal_ok(&["swarm", "leave", "--force"]);
        poll_until(
            "swarm leave to remove the overlay networking",
            LEAVE_TIMEOUT,
            || match self.overlay_footprint() {
                left if left.is_empty() => Ok(()),
                left => Err(format!("{left:?}")),
            },
        )
        .unwrap_or_else(|error| panic!("{}: {error}", self.name));
    }
}
