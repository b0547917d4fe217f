//! Docker Swarm 20.10 (Debian's `docker.io`) beside a shoal test cluster, for the benchmarks'
//! side-by-side figures (`bench-overlay`, `bench-mesh`, `bench-docker-api`): two more test hosts `<prefix>-d1` and `<prefix>-d2` on the same underlay bridge, each running
//! its own `dockerd` (which starts its own `containerd`), formed into a swarm with one overlay
//! network `front` and the same busybox root filesystem as shoal's image.
//!
//! Each dockerd runs inside its host's network namespace, so the iptables rules, bridges and
//! per-namespace sysctls it writes stay there, and in new PID, mount and UTS namespaces under
//! `unshare --kill-child`: killing that `unshare` kills the namespace's init (tini, which
//! docker.io ships as `docker-init`) and with it every process inside (dockerd, containerd,
//! shims, containers), and the mounts they made go with the mount namespace. Teardown then has
//! only cgroups, the host namespace and the directory left to remove. The one machine-wide
//! setting dockerd may raise (the root key quotas) is put back.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cleanup::{inside, kill_9, processes_mentioning};
use crate::process::{COMMAND_TIMEOUT, output_text, run};
use crate::wait::poll_until;
use crate::{TestCluster, netns};

/// Debian's dockerd (docker.io, 20.10).
const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's docker CLI, the client of the same release: `docker` on PATH may be a newer client.
const DOCKER_CLI: &str = "/usr/bin/docker";
/// tini, from docker.io: the init of each dockerd's PID namespace, reaping the shims it adopts.
const DOCKER_INIT: &str = "/usr/bin/docker-init";
/// What the Docker side runs, for the check before anything starts.
const REQUIRED: [&str; 5] = [
    DOCKERD,
    DOCKER_CLI,
    DOCKER_INIT,
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
];
/// Machine-wide sysctls dockerd raises at start when they are lower (`modifyRootKeyLimit`).
const MACHINE_SYSCTLS: [&str; 2] = [
    "/proc/sys/kernel/keys/root_maxkeys",
    "/proc/sys/kernel/keys/root_maxbytes",
];
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the processes of a killed PID namespace may take to be gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The swarm's image, imported on each host: services name it with `--no-resolve-image`, and
/// dockerd runs with `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`, so no registry is ever asked.
pub const IMAGE: &str = "busybox:latest";
pub const NETWORK: &str = "front";

/// Why the Docker side can't run on this machine, if it can't.
pub fn missing() -> Option<String> {
    let absent = REQUIRED
        .into_iter()
        .find(|path| !Path::new(path).exists())?;
    Some(format!(
        "{absent} not found: the Docker side of this benchmark needs Debian's docker.io \
         (Docker 20.10): `apt-get install docker.io`, with its own services stopped \
         (`systemctl disable --now docker.service docker.socket containerd.service` where \
         systemd runs); the benchmark starts a dockerd of its own inside each of its test hosts"
    ))
}

/// One Docker test host: a network namespace on the cluster's underlay and its dockerd.
#[derive(Debug)]
pub struct DockerHost {
    /// The network namespace's name, also the host's hostname (what `node ls` shows).
    name: String,
    /// The underlay namespace holding the bridge this host's veth peer is on.
    underlay: String,
    address: Ipv4Addr,
    dir: PathBuf,
    /// `unshare`, parent of the PID namespace dockerd runs in; `None` until started.
    supervisor: Option<Child>,
}

impl DockerHost {
    /// Host `number` of the Docker swarm: `<prefix>-d<number>`, at `.<100 + number>` of the
    /// cluster's underlay subnet. Nothing is made until [`DockerHost::start`].
    fn new(cluster: &TestCluster, number: u8) -> DockerHost {
        let [a, b, c, _] = cluster.host(1).address().octets();
        DockerHost {
            name: format!("{}-d{number}", cluster.prefix()),
            underlay: cluster.underlay_netns(),
            address: Ipv4Addr::new(a, b, c, 100 + number),
            // Inside the cluster's run directory, so a later run's sweep of a killed run finds
            // these processes too (their command lines mention it). The data root is not named
            // `data`, which that sweep would take for a shoal daemon's.
            dir: cluster.dir().join(format!("d{number}")),
            supervisor: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    fn netns_path(&self) -> PathBuf {
        netns::netns_path(&self.name)
    }

    /// dockerd's socket as `unix://<path>`, for `-H` or `DOCKER_HOST`: where another docker
    /// CLI than Debian's (the 28.2 client that drives shoal) reaches the same daemon.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    fn log(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The cgroup (under every hierarchy) the host's containers go in, apart from the other
    /// host's and from anything else on the machine.
    fn cgroup_parent(&self) -> String {
        format!("/{}", self.name)
    }

    /// Makes the namespace and starts dockerd in it; returns once it answers.
    fn start(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|error| error.to_string())?;
        let peer = self.name.rsplit('-').next().unwrap_or("d");
        netns::add_host(&self.name, &self.underlay, peer, self.address)
            .map_err(|error| error.to_string())?;
        // The trust key goes in the host's directory, not /etc/docker/key.json; the key is only
        // settable in the configuration file.
        let config = serde_json::json!({ "deprecated-key-path": self.dir.join("key.json") });
        let config_file = self.dir.join("daemon.json");
        std::fs::write(&config_file, config.to_string()).map_err(|error| error.to_string())?;
        let log = File::create(self.log()).map_err(|error| error.to_string())?;
        let log_too = log.try_clone().map_err(|error| error.to_string())?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            // --mount-proc: dockerd's prestart hook runs /proc/<its own pid>/exe, so /proc must
            // be the new PID namespace's.
            .args([
                "unshare",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "--mount-proc",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                // A private /run: dockerd 20.10 would use a containerd it finds at
                // /run/containerd/containerd.sock instead of starting its own, and it keeps
                // sockets under /run/docker and /run/containerd whatever its exec root.
                r#"mount -t tmpfs -o mode=755 tmpfs /run && hostname "$0" && exec "$@""#,
                &self.name,
                DOCKER_INIT,
                "--",
                DOCKERD,
                "--log-level",
                "warn",
                // No docker0: swarm tasks are on the overlay and docker_gwbridge only.
                "--bridge",
                "none",
                "--cgroup-parent",
                &self.cgroup_parent(),
                "-H",
                &self.docker_host(),
            ])
            .arg("--data-root")
            .arg(self.dir.join("docker-data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("--config-file")
            .arg(&config_file)
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too);
        self.supervisor = Some(
            command
                .spawn()
                .map_err(|error| format!("starting dockerd: {error}"))?,
        );
        let answered = poll_until("dockerd to answer", START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.supervisor.as_mut().map(Child::try_wait) {
                return Ok(Err(format!("it exited with {status}")));
            }
            let output = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            if output.status.success() {
                Ok(Ok(String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .to_owned()))
            } else {
                Err(output_text(&output))
            }
        });
        match answered {
            Ok(Ok(_version)) => Ok(()),
            Ok(Err(reason)) => Err(format!(
                "dockerd on {}: {reason}{}",
                self.name,
                self.log_tail()
            )),
            Err(error) => Err(format!(
                "dockerd on {}: {error}{}",
                self.name,
                self.log_tail()
            )),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "\n--- last lines of {} ---\n{}",
            self.log().display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// The lines of dockerd's log (warnings and errors) that mention `needle`, any case.
    pub fn log_lines_mentioning(&self, needle: &str) -> Vec<String> {
        let needle = needle.to_lowercase();
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter(|line| line.to_lowercase().contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// `docker -H <this host's socket> args`, whatever its exit status; panics if it hangs.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut command = Command::new(DOCKER_CLI);
        command.arg("-H").arg(self.docker_host()).args(args);
        run(&mut command, COMMAND_TIMEOUT).unwrap_or_else(|error| panic!("{}: {error}", self.name))
    }

    /// `docker -H <this host's socket> args`'s stdout; panics when it fails.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        if !output.status.success() {
            panic!(
                "{}: docker {} failed: {}",
                self.name,
                args.join(" "),
                output_text(&output)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The host pid of a running task of `service` on this host (its container listed, then
    /// inspected for a pid, as shoal's `TestHost::running_task_pid`), or why there is none yet.
    /// dockerd's pids are its PID namespace's, so the host pid is read from the container's
    /// cgroup.
    pub fn running_task_pid(&self, service: &str) -> Result<String, String> {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        let listed = self.docker(&["ps", "-q", "--no-trunc", "--filter", &filter]);
        if !listed.status.success() {
            return Err(output_text(&listed));
        }
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        let id = listed
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("no running {service} container on {} yet", self.name))?;
        let inspected = self.docker(&["inspect", "--format", "{{.State.Pid}}", id]);
        if !inspected.status.success() {
            return Err(output_text(&inspected));
        }
        match String::from_utf8_lossy(&inspected.stdout)
            .trim()
            .parse::<i64>()
        {
            Ok(pid) if pid > 0 => {}
            _ => return Err(format!("{id} has no pid yet")),
        }
        let procs = format!(
            "/sys/fs/cgroup/pids{}/{id}/cgroup.procs",
            self.cgroup_parent()
        );
        let pids = std::fs::read_to_string(&procs).map_err(|error| format!("{procs}: {error}"))?;
        pids.split_whitespace()
            .next()
            .map(str::to_owned)
            .ok_or_else(|| format!("{procs} is empty"))
    }

    /// The host pid of this host's `dockerd`, then of its `containerd`.
    pub fn daemon_pids(&self) -> (u32, u32) {
        let find = |program: &str| {
            processes_mentioning(&inside(&self.dir))
                .into_iter()
                .find(|(_, cmdline)| {
                    cmdline
                        .split(' ')
                        .next()
                        .is_some_and(|first| first.rsplit('/').next() == Some(program))
                })
                .map(|(pid, _)| pid)
                .unwrap_or_else(|| panic!("no {program} of {} running", self.name))
        };
        (find("dockerd"), find("containerd"))
    }

    /// Kills everything in the PID namespace, then removes the cgroups, the namespace and the
    /// directory. Best effort; never panics.
    fn teardown(&mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            let _ = supervisor.kill();
            let _ = supervisor.wait();
        }
        let cgroups = self.cgroups();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let mut left = processes_mentioning(&inside(&self.dir));
            left.extend(cgroups.iter().flat_map(|cgroup| cgroup_pids(cgroup)));
            if left.is_empty() || Instant::now() > deadline {
                if !left.is_empty() {
                    eprintln!("{}: processes left after teardown: {left:?}", self.name);
                }
                break;
            }
            for (pid, _) in left {
                kill_9(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for cgroup in cgroups {
            remove_cgroup(&cgroup);
        }
        netns::delete(&self.name);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// This host's cgroup parent in every hierarchy that has it.
    fn cgroups(&self) -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path().join(&self.name))
                    .filter(|path| path.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Two Docker test hosts formed into a swarm (`d1` manager, `d2` worker) with the overlay
/// network [`NETWORK`] and [`IMAGE`] on both. Dropping it removes both hosts and puts back the
/// machine-wide sysctls dockerd raised.
#[derive(Debug)]
pub struct DockerSwarm {
    hosts: Vec<DockerHost>,
    sysctls_before: Vec<(&'static str, String)>,
    version: String,
}

impl DockerSwarm {
    /// Starts both hosts' dockerd on `cluster`'s underlay, forms the swarm, creates the
    /// network and imports the image. Panics, after removing what it made, when any step fails.
    pub fn start(cluster: &TestCluster) -> DockerSwarm {
        let mut swarm = DockerSwarm {
            hosts: Vec::new(),
            sysctls_before: MACHINE_SYSCTLS
                .into_iter()
                .filter_map(|path| Some((path, std::fs::read_to_string(path).ok()?)))
                .collect(),
            version: String::new(),
        };
        for number in 1..=2 {
            swarm.hosts.push(DockerHost::new(cluster, number));
        }
        // Started one after the other: each takes a few seconds, and both at once would only
        // compete for the same two cores.
        for host in &mut swarm.hosts {
            host.start().unwrap_or_else(|error| panic!("{error}"));
        }
        let (d1, d2) = (swarm.host(1), swarm.host(2));
        let tarball = d1.dir.join("busybox.tar");
        crate::build_busybox_tarball(&tarball)
            .unwrap_or_else(|error| panic!("building the busybox root filesystem: {error}"));
        // The same root filesystem as shoal's image, imported as a one-layer image.
        let tarball = tarball.display().to_string();
        for host in [d1, d2] {
            host.docker_ok(&["import", &tarball, IMAGE]);
        }
        d1.docker_ok(&["swarm", "init", "--advertise-addr", &d1.address.to_string()]);
        let token = d1.docker_ok(&["swarm", "join-token", "-q", "worker"]);
        d2.docker_ok(&[
            "swarm",
            "join",
            "--token",
            token.trim(),
            "--advertise-addr",
            &d2.address.to_string(),
            &format!("{}:2377", d1.address),
        ]);
        crate::wait_until("both Docker nodes ready", START_TIMEOUT, || {
            let listed = d1.docker_ok(&["node", "ls", "--format", "{{.Status}}"]);
            match listed.lines().filter(|status| *status == "Ready").count() {
                2 => Ok(()),
                _ => Err(listed),
            }
        });
        d1.docker_ok(&["network", "create", "-d", "overlay", NETWORK]);
        swarm.version = d1
            .docker_ok(&["version", "--format", "{{.Server.Version}}"])
            .trim()
            .to_owned();
        swarm
    }

    /// Host `number`, 1 (the manager) or 2.
    pub fn host(&self, number: usize) -> &DockerHost {
        &self.hosts[number - 1]
    }

    /// dockerd's version, as it reports it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `service create` of a busybox service on the overlay network, its one task placed on
    /// host `node`. `dnsrr`: the name resolves to the task's address, since a `vip` service's
    /// address is served by IPVS, which this kernel lacks.
    pub fn create_service(&self, name: &str, node: &DockerHost, command: &[&str]) {
        let placement = format!("node.hostname=={}", node.name());
        let mut args = vec![
            "service",
            "create",
            "-d",
            "--no-resolve-image",
            "--name",
            name,
            "--network",
            NETWORK,
            "--endpoint-mode",
            "dnsrr",
            "--constraint",
            &placement,
            IMAGE,
        ];
        args.extend(command);
        self.host(1).docker_ok(&args);
    }

    /// How many tasks of `service` run (desired and current state running).
    pub fn running_tasks(&self, service: &str) -> usize {
        self.host(1)
            .docker_ok(&[
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
                service,
            ])
            .lines()
            .filter(|state| state.starts_with("Running"))
            .count()
    }
}

impl Drop for DockerSwarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for host in &self.hosts {
                eprintln!("{}", host.log_tail());
            }
        }
        std::thread::scope(|scope| {
            for host in self.hosts.drain(..) {
                scope.spawn(move || drop(host));
            }
        });
        for (path, before) in &self.sysctls_before {
            if std::fs::read_to_string(path).is_ok_and(|now| now != *before) {
                let _ = std::fs::write(path, before);
            }
        }
    }
}

/// The processes in `cgroup` and the cgroups below it.
fn cgroup_pids(cgroup: &Path) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| Some((pid.parse().ok()?, format!("in {}", cgroup.display()))))
        .collect();
    for child in child_cgroups(cgroup) {
        found.extend(cgroup_pids(&child));
    }
    found
}

fn child_cgroups(cgroup: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cgroup)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `cgroup`, the ones below it first.
fn remove_cgroup(cgroup: &Path) {
    for child in child_cgroups(cgroup) {
        remove_cgroup(&child);
    }
    let _ = std::fs::remove_dir(cgroup);
}
