//! A test cluster: the underlay namespace with its bridge, N test hosts on it, their daemons,
//! and the teardown that removes all of it when the cluster is dropped, panicking test or not.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::cleanup::{inside, mounts_under, processes_mentioning, sweep_run_directory};
use crate::wait::poll_until;
use crate::{HarnessError, TestHost, netns, skip, skip_notice, skip_reason};

/// Clusters started by this process so far; part of each cluster's prefix.
static CLUSTERS_STARTED: AtomicUsize = AtomicUsize::new(0);
/// Most hosts one cluster may have (the last octet of the underlay subnet).
const MAX_HOSTS: usize = 200;
/// How long teardown waits for removed services' containers to stop before forcing them: a
/// task that ignores SIGTERM (`sleep` as PID 1) takes its whole stop grace period (10 s).
const SERVICE_REMOVAL_GRACE: Duration = Duration::from_secs(2);
/// How long one CLI call in teardown may take.
const TEARDOWN_COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`TestCluster::form_swarm`] waits for every node to show ready.
const SWARM_FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// What cluster to build.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// How many test hosts (1 to 200): `h1` … `hN`.
    pub hosts: usize,
    /// The `shoal` binary every host runs; [`default_shoal_binary`] unless set.
    pub shoal: PathBuf,
    /// Flags every host's `shoal daemon` gets after the harness's own (such as
    /// `--metrics-addr 127.0.0.1:9323`, which each host serves on its own loopback).
    pub daemon_args: Vec<String>,
}

impl ClusterOptions {
    /// `hosts` test hosts running [`default_shoal_binary`].
    pub fn new(hosts: usize) -> ClusterOptions {
        ClusterOptions {
            hosts,
            shoal: default_shoal_binary(),
            daemon_args: Vec::new(),
        }
    }
}

/// The `shoal` binary tests run: `$SHOAL_BIN` if set, otherwise `shoal` in the target profile
/// directory this test executable was built into (`target/debug/shoal` for `cargo test`). The
/// harness does not build it: `cargo test --workspace` does, `cargo test -p shoal-tests` alone
/// does not (build it first with `cargo build -p cli --bin shoal`).
pub fn default_shoal_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test executable> → target/<profile>/shoal
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("shoal")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/shoal"))
}

/// N test hosts on a private underlay. Names: the prefix `sh<pid>-<n>` (unique per cluster of
/// a run), namespaces `<prefix>-ul` (underlay) and `<prefix>-h1` … (hosts, also their
/// hostnames), directory `$TMPDIR/<prefix>/h1` … (data root, socket, daemon log). Host `hK` has
/// address `10.213.X.K/24`, with X derived from the prefix.
///
/// Dropping the cluster tears it all down, in this order: services removed through a manager
/// (best effort) and a short wait for their containers to go, every host's containers removed
/// with `container rm -f`, daemons stopped (SIGTERM, SIGKILL after 10 s), then whatever is left
/// swept without a daemon: processes mentioning the run's directory (shims), container processes,
/// mounts, cgroups, the directory itself, and the namespaces (which take the veths, the bridge
/// and any nftables table with them).
#[derive(Debug)]
pub struct TestCluster {
    prefix: String,
    dir: PathBuf,
    shoal: PathBuf,
    hosts: Vec<TestHost>,
    /// Namespaces this cluster created, in creation order (the underlay first).
    namespaces: Vec<String>,
}

impl TestCluster {
    /// Builds the underlay and the hosts and starts every daemon, returning once each answers
    /// `shoal container ls`. On error, everything made so far is removed again.
    pub fn start(options: ClusterOptions) -> Result<TestCluster, HarnessError> {
        if !(1..=MAX_HOSTS).contains(&options.hosts) {
            return Err(HarnessError::InvalidOptions(format!(
                "{} hosts asked for; a cluster has 1 to {MAX_HOSTS}",
                options.hosts
            )));
        }
        if !options.shoal.is_file() {
            return Err(HarnessError::ShoalMissing {
                path: options.shoal,
            });
        }
        sweep_stale_runs(&options.shoal);
        let pid = std::process::id();
        let number = CLUSTERS_STARTED.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sh{pid}-{number}");
        let subnet_octet = u8::try_from((pid as usize + number) % 250 + 1).unwrap_or(1);
        let dir = std::env::temp_dir().join(&prefix);
        let mut cluster = TestCluster {
            prefix,
            dir,
            shoal: options.shoal,
            hosts: Vec::new(),
            namespaces: Vec::new(),
        };
        // From here on, an early return drops `cluster`, which removes what was made.
        let _ = std::fs::remove_dir_all(&cluster.dir);
        std::fs::create_dir_all(&cluster.dir).map_err(HarnessError::io(format!(
            "creating {}",
            cluster.dir.display()
        )))?;
        let underlay = cluster.underlay_netns();
        cluster.namespaces.push(underlay.clone());
        netns::add_underlay(&underlay)?;
        for number in 1..=options.hosts {
            let name = format!("{}-h{number}", cluster.prefix);
            let octet = u8::try_from(number).unwrap_or(u8::MAX);
            let address = Ipv4Addr::new(10, 213, subnet_octet, octet);
            cluster.namespaces.push(name.clone());
            netns::add_host(&name, &underlay, &format!("h{number}"), address)?;
            cluster.hosts.push(TestHost::new(
                name,
                address,
                cluster.dir.join(format!("h{number}")),
                cluster.shoal.clone(),
                cluster.dir.join("busybox.tar"),
                options.daemon_args.clone(),
            ));
        }
        let started: Vec<Result<(), HarnessError>> = std::thread::scope(|scope| {
            let starting: Vec<_> = cluster
                .hosts
                .iter()
                .map(|host| scope.spawn(|| host.start_daemon()))
                .collect();
            starting
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        started.into_iter().collect::<Result<(), _>>()?;
        Ok(cluster)
    }

    /// [`TestCluster::start`] for a test named `test_name`: `None`, after printing
    /// `SKIPPED <test_name>: <reason>`, when the machine can't run cluster tests (see
    /// [`skip_reason`]; where every test must run, [`skip`] panics instead); panics when the
    /// cluster fails to start.
    pub fn start_or_skip(test_name: &str, options: ClusterOptions) -> Option<TestCluster> {
        if let Some(reason) = skip_reason() {
            skip(test_name, &reason);
            return None;
        }
        match TestCluster::start(options) {
            Ok(cluster) => Some(cluster),
            Err(error) => panic!("starting the test cluster for {test_name}: {error}"),
        }
    }

    /// Host `number`, counting from 1 like the names: `host(1)` is `<prefix>-h1`. Panics when
    /// there is no such host.
    pub fn host(&self, number: usize) -> &TestHost {
        number
            .checked_sub(1)
            .and_then(|index| self.hosts.get(index))
            .unwrap_or_else(|| {
                panic!(
                    "no host {number}: the cluster has hosts 1 to {}",
                    self.hosts.len()
                )
            })
    }

    /// Builds a swarm of `managers` managers (`h1` … `hM`, `h1` founding it) and `workers`
    /// workers (the hosts after), and waits until `h1`'s `node ls` shows every node ready and
    /// the managers as managers. Panics when a join fails or the swarm does not form in time.
    pub fn form_swarm(&self, managers: usize, workers: usize) {
        let first = self.host(1);
        first.swarm_init();
        let manager_token = first.join_token("manager");
        let worker_token = first.join_token("worker");
        for number in 2..=managers {
            let said = self.host(number).swarm_join(&manager_token, first);
            assert!(said.contains("joined a swarm as a manager"), "{said}");
        }
        for number in managers + 1..=managers + workers {
            let said = self.host(number).swarm_join(&worker_token, first);
            assert!(said.contains("joined a swarm as a worker"), "{said}");
        }
        let total = managers + workers;
        crate::wait_until("every node ready", SWARM_FORM_TIMEOUT, || {
            let table = first.node_table()?;
            let ready = table
                .values()
                .filter(|(status, _)| status == "Ready")
                .count();
            let managing = table
                .values()
                .filter(|(_, manager)| !manager.is_empty())
                .count();
            if ready == total && managing == managers {
                Ok(())
            } else {
                Err(format!("{table:?}"))
            }
        });
    }

    /// Every host, `h1` first.
    pub fn hosts(&self) -> &[TestHost] {
        &self.hosts
    }

    /// The prefix of every name this cluster made: `sh<pid>-<n>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The run directory holding every host's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlay namespace holding the bridge: `<prefix>-ul`.
    pub fn underlay_netns(&self) -> String {
        format!("{}-ul", self.prefix)
    }

    /// What this cluster leaves on the machine, to check after it is dropped.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            prefix: self.prefix.clone(),
            daemon_prefixes: self
                .hosts
                .iter()
                .map(|host| overlay_net::prefix_for_data_root(&host.data_root()))
                .collect(),
            dir: self.dir.clone(),
        }
    }

    /// Removes services through the first host that lists them (a manager), then waits a
    /// little for the workers to remove their containers. Best effort; never panics.
    fn remove_services(&self) {
        let Some((manager, services)) = self.hosts.iter().find_map(|host| {
            let output = host
                .try_shoal(
                    &["service", "ls", "--format", "json"],
                    TEARDOWN_COMMAND_TIMEOUT,
                )
                .ok()
                .filter(|output| output.status.success())?;
            Some((host, json_field(&output.stdout, "Name")))
        }) else {
            return;
        };
        if services.is_empty() {
            return;
        }
        let mut args = vec!["service", "rm"];
        args.extend(services.iter().map(String::as_str));
        let _ = manager.try_shoal(&args, TEARDOWN_COMMAND_TIMEOUT);
        // Service containers are named `<service>.<slot>.<task id>`.
        let prefixes: Vec<String> = services.iter().map(|name| format!("{name}.")).collect();
        let _ = poll_until(
            "removed services' containers to go",
            SERVICE_REMOVAL_GRACE,
            || {
                let left: Vec<String> = self
                    .hosts
                    .iter()
                    .flat_map(running_container_names)
                    .filter(|name| prefixes.iter().any(|prefix| name.starts_with(prefix)))
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still running: {left:?}"))
                }
            },
        );
    }

    fn teardown(&mut self) {
        if std::thread::panicking() {
            for host in &self.hosts {
                skip_notice(&format!(
                    "--- {} (last lines) ---\n{}",
                    host.daemon_log().display(),
                    host.daemon_log_tail(30)
                ));
            }
        }
        self.remove_services();
        std::thread::scope(|scope| {
            for host in &self.hosts {
                scope.spawn(move || {
                    if host.daemon_pid().is_some() {
                        remove_all_containers(host);
                    }
                    host.stop_daemon();
                });
            }
        });
        sweep_run_directory(&self.shoal, &self.dir);
        // Hosts first: each holds a veth whose peer is in the underlay.
        for name in self.namespaces.iter().rev() {
            netns::delete(name);
        }
        let leftovers = self.footprint().leftovers();
        if !leftovers.is_empty() {
            skip_notice(&format!(
                "test cluster {} left behind: {leftovers:#?}",
                self.prefix
            ));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The string field `key` of each line of `--format json` output.
fn json_field(stdout: &[u8], key: &str) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|row| row[key].as_str().map(str::to_owned))
        .collect()
}

/// Names of the containers running on `host` (none when its daemon does not answer).
fn running_container_names(host: &TestHost) -> Vec<String> {
    host.try_shoal(
        &["container", "ls", "--format", "json"],
        TEARDOWN_COMMAND_TIMEOUT,
    )
    .ok()
    .filter(|output| output.status.success())
    .map(|output| json_field(&output.stdout, "Names"))
    .unwrap_or_default()
}

/// `container rm -f` of every container on `host`, stopped ones too. Best effort.
fn remove_all_containers(host: &TestHost) {
    let Ok(output) = host.try_shoal(&["container", "ls", "-a", "-q"], TEARDOWN_COMMAND_TIMEOUT)
    else {
        return;
    };
    let ids = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut args = vec!["container", "rm", "-f"];
    args.extend(ids.split_whitespace());
    if output.status.success() && args.len() > 3 {
        let _ = host.try_shoal(&args, Duration::from_secs(60));
    }
}

/// The names a cluster leaves on the machine, kept apart from the cluster so a test can check
/// them after dropping it.
#[derive(Clone, Debug)]
pub struct Footprint {
    prefix: String,
    /// The prefixes the hosts' daemons name their overlay namespaces with.
    daemon_prefixes: Vec<String>,
    dir: PathBuf,
}

impl Footprint {
    /// What is still there: namespaces named `<prefix>-…`, processes whose command line
    /// mentions the run directory (daemons, shims), mounts inside it, and the directory itself.
    /// Empty once the cluster is gone.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found: Vec<String> = netns::list()
            .into_iter()
            .filter(|name| name.starts_with(&format!("{}-", self.prefix)))
            .chain(self.daemon_namespaces())
            .map(|name| format!("network namespace {name}"))
            .collect();
        found.extend(
            processes_mentioning(&inside(&self.dir))
                .into_iter()
                .map(|(pid, cmdline)| format!("process {pid}: {cmdline}")),
        );
        found.extend(
            mounts_under(&self.dir)
                .into_iter()
                .map(|mount| format!("mount {mount}")),
        );
        if self.dir.exists() {
            found.push(format!("directory {}", self.dir.display()));
        }
        found
    }
}

impl Footprint {
    /// The namespaces the hosts' daemons made for overlay networks and their tasks.
    fn daemon_namespaces(&self) -> Vec<String> {
        netns::list()
            .into_iter()
            .filter(|name| {
                self.daemon_prefixes
                    .iter()
                    .any(|prefix| netns::made_by_daemon(name, prefix))
            })
            .collect()
    }
}

/// The pid in a name made by a cluster prefix `sh<pid>-<n>` (a namespace `sh<pid>-<n>-…` or a
/// run directory `sh<pid>-<n>`), if the name is one.
fn run_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("sh")?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let cluster = parts.next()?;
    (!cluster.is_empty() && cluster.bytes().all(|b| b.is_ascii_digit())).then_some(pid)
}

/// Removes the namespaces and run directories of earlier test runs whose process is gone
/// (killed before its clusters' teardown ran), so they don't pile up.
fn sweep_stale_runs(shoal: &Path) {
    let is_stale = |name: &str| {
        run_pid(name).is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
    };
    let temp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&temp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A run directory is the bare prefix `sh<pid>-<n>`, without a `-…` suffix.
            if is_stale(&name) && name.matches('-').count() == 1 {
                sweep_run_directory(shoal, &entry.path());
            }
        }
    }
    let mut stale: Vec<String> = netns::list().into_iter().filter(|n| is_stale(n)).collect();
    // Hosts (`…-hN`) before the underlay (`…-ul`) that holds their veth peers.
    stale.sort_by_key(|name| name.ends_with("-ul"));
    for name in stale {
        netns::delete(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::run_pid;

    #[test]
    fn only_names_made_by_a_cluster_prefix_carry_a_run_pid() {
        assert_eq!(run_pid("sh123-0"), Some(123));
        assert_eq!(run_pid("sh123-4-h2"), Some(123));
        assert_eq!(run_pid("sh123-4-ul"), Some(123));
        assert_eq!(run_pid("sh123"), None);
        assert_eq!(run_pid("sh123-"), None);
        assert_eq!(run_pid("shoal-demo-h1"), None);
        assert_eq!(run_pid("sw123-scale"), None);
    }
}
