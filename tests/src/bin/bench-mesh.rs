//! Issue 15's figures: the routing mesh against straight to a server, from one client host on
//! the underlay, in one run. Three swarm hosts (h1 manager, h2 and h3 workers) and a fourth host
//! outside the swarm, the client (h4). One busybox `httpd` service, one replica constrained to
//! h1, publishing port 8080 in shoal's default `prefer-local` policy, so:
//! - h1:8080 is the mesh's local path (DNAT to h1's own task, no SNAT);
//! - h2:8080 is its cluster path (no local task: h2 hands the connection to h1's published
//!   port, routed between the hosts with no VXLAN, with SNAT so replies come back through h2,
//!   and h1 DNATs it to its task);
//! - h1:8000 is the baseline: the same busybox `httpd` serving the same files, started by the
//!   benchmark in h1's network namespace outside any container, so no NAT and no overlay;
//! - the task's own address on h1's gateway bridge, port 80, through a host route in the
//!   client that goes via h1: straight to the task, as the issue defines "direct", with h1
//!   routing and no NAT. It serves the requests figure as a second baseline, so the mesh's cost
//!   is told apart from what the container and the extra hop cost.
//!
//! Figures, each over ROUNDS (default 5), the targets alternated within a round:
//! - `requests`: HTTP/1.0 `GET /` (a 17-byte page), a new connection each, from
//!   [`SATURATED_WORKERS`] threads for [`SATURATED_DURATION`] (requests per second, p99), then
//!   from one thread for [`SEQUENTIAL_DURATION`] (p50 and p99 without queueing);
//! - `transfer`: [`DOWNLOADS`] downloads of [`BIG_MIB`] MiB in a row per target (MB/s): through
//!   h2 they cross the hosts through both hosts' NAT, against the underlay straight to h1; and,
//!   for what the path through the ingress overlay would carry (the way Docker's mesh crosses,
//!   and shoal's on an encrypted ingress network), from h2's namespace to the task's ingress
//!   address (VXLAN, no NAT);
//! - `docker`: Docker Swarm 20.10 (`shoal_tests::docker`, two more test hosts on the same
//!   underlay) publishing the same service in its ingress mode, and what requests to it from the
//!   client give; skipped, saying so, when Debian's `docker.io` is not installed.
//!
//! Run as root through `deploy/bench-mesh.sh`, which builds the release binaries and sets
//! `SHOAL_BIN`. `FIGURES=requests,transfer` (any of `requests`, `transfer`, `docker`) takes only
//! those. Every host, namespace, process and cgroup is removed at the end, as in the tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_tests::docker::{self, DockerSwarm};
use shoal_tests::figures::{load_average, percentile, rounds, summary, wanted};
use shoal_tests::{ClusterOptions, TestCluster, TestHost, output_text, poll_until, wait_until};

#[path = "bench-mesh/load.rs"]
mod load;

use load::LoadRun;

const TIMEOUT: Duration = Duration::from_secs(90);
const PUBLISHED_PORT: u16 = 8080;
/// Where the baseline server listens in h1's namespace.
const DIRECT_PORT: u16 = 8000;
/// The size of the file the transfer figure downloads.
const BIG_MIB: usize = 200;
/// Downloads per target and round: one takes a tenth of a second, short enough for the
/// machine's other work to swing it.
const DOWNLOADS: usize = 5;
const SATURATED_WORKERS: usize = 8;
const SATURATED_DURATION: Duration = Duration::from_secs(3);
const SEQUENTIAL_DURATION: Duration = Duration::from_secs(2);
/// The requests figure's first targets that the others are measured against: the host's
/// server and the task's own address.
const BASELINES: usize = 2;
/// How long Docker's published port is tried before what it gave is reported.
const DOCKER_TRIES: Duration = Duration::from_secs(15);

/// The web server of every side, as a script for busybox `sh`: `ROOT/index.html` (17 bytes),
/// `ROOT/big` ([`BIG_MIB`] MiB of zeros, when `with_big`), then busybox `httpd` on `port`. Every
/// applet is named through `/bin/busybox`, which both the test image and the hosts have.
fn web_script(root: &str, port: u16, with_big: bool) -> String {
    let big_mib = if with_big { BIG_MIB } else { 0 };
    format!(
        "/bin/busybox mkdir -p {root} && echo shoal mesh bench > {root}/index.html \
         && /bin/busybox dd if=/dev/zero of={root}/big bs=1M count={big_mib} 2>/dev/null \
         && exec /bin/busybox httpd -f -p {port} -h {root}"
    )
}

/// `service create` of the one-replica `web` service (either swarm's CLI takes the same
/// arguments): its task on the node `node`, port [`PUBLISHED_PORT`] published in the swarm's
/// default mode and policy, `options` before the image.
fn web_service_create(node: &str, options: &[&str], image: &str, with_big: bool) -> Vec<String> {
    let mut args: Vec<String> = ["service", "create", "-d", "--name", "web", "--constraint"]
        .map(String::from)
        .into();
    args.push(format!("node.hostname=={node}"));
    args.push("--publish".to_owned());
    args.push(format!("published={PUBLISHED_PORT},target=80"));
    args.extend(options.iter().map(|option| option.to_string()));
    args.extend([image, "sh", "-c"].map(String::from));
    args.push(web_script("/www", 80, with_big));
    args
}

/// The baseline: busybox `httpd` in a test host's network namespace, outside any container.
/// Killed when dropped (the cluster's teardown would also find it: its command line names the
/// run's directory).
struct HostServer(Child);

impl HostServer {
    fn start(host: &TestHost, root: &Path, port: u16) -> HostServer {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", host.netns_path().display()))
            .args(["/bin/busybox", "sh", "-c"])
            .arg(web_script(&root.display().to_string(), port, true))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting httpd in {}: {error}", host.name()));
        HostServer(child)
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One address a test host sends to, and what it stands for.
struct Target<'a> {
    label: &'static str,
    from: &'a TestHost,
    address: SocketAddr,
}

impl Target<'_> {
    /// `GET /` to the target, until it answers.
    fn wait_answering(&self) {
        wait_until(
            &format!("{} ({}) to answer", self.label, self.address),
            TIMEOUT,
            || {
                self.from.in_host_netns(|| {
                    shoal_tests::http::get(
                        self.address,
                        "/",
                        &mut [0_u8; 4096],
                        load::REQUEST_TIMEOUT,
                    )
                })
            },
        );
    }
}

fn ms(latency: Duration) -> f64 {
    latency.as_secs_f64() * 1e3
}

/// What one target's runs of the requests figure gave.
#[derive(Default)]
struct RequestRuns {
    saturated: Vec<LoadRun>,
    sequential: Vec<LoadRun>,
}

fn progress(label: &str, workers: usize, run: &LoadRun) {
    println!(
        "  {label}, {workers} worker(s): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed{}",
        run.requests_per_second(),
        ms(percentile(&run.latencies, 0.5)),
        ms(percentile(&run.latencies, 0.99)),
        run.failed,
        run.first_failure
            .as_deref()
            .map(|failure| format!(" (first: {failure})"))
            .unwrap_or_default()
    );
}

fn requests(targets: &[Target<'_>]) {
    println!(
        "requests: GET / on a new connection each, from {SATURATED_WORKERS} threads for {} s, \
         then from 1 thread for {} s, per target and round",
        SATURATED_DURATION.as_secs(),
        SEQUENTIAL_DURATION.as_secs()
    );
    let mut runs: Vec<RequestRuns> = targets.iter().map(|_| RequestRuns::default()).collect();
    let rounds = rounds();
    for round in 1..=rounds {
        println!("round {round} of {rounds}: {}", load_average());
        // Alternated, so a change in the machine's load falls on every target.
        for (target, runs) in targets.iter().zip(&mut runs) {
            let run = target.from.in_host_netns(|| {
                load::http_load(target.address, "/", SATURATED_WORKERS, SATURATED_DURATION)
            });
            progress(target.label, SATURATED_WORKERS, &run);
            runs.saturated.push(run);
        }
        for (target, runs) in targets.iter().zip(&mut runs) {
            let run = target
                .from
                .in_host_netns(|| load::http_load(target.address, "/", 1, SEQUENTIAL_DURATION));
            progress(target.label, 1, &run);
            runs.sequential.push(run);
        }
    }
    let p50 = |run: &LoadRun| ms(percentile(&run.latencies, 0.5));
    let p99 = |run: &LoadRun| ms(percentile(&run.latencies, 0.99));
    for (target, runs) in targets.iter().zip(&runs) {
        let label = target.label;
        let rates = runs.saturated.iter().map(LoadRun::requests_per_second);
        println!(
            "{label}, {SATURATED_WORKERS} workers, req/s: {}",
            summary(rates.collect(), 0)
        );
        let latencies = runs.saturated.iter().map(p99).collect();
        println!(
            "{label}, {SATURATED_WORKERS} workers, p99 ms: {}",
            summary(latencies, 2)
        );
        let latencies = runs.sequential.iter().map(p50).collect();
        println!("{label}, 1 worker, p50 ms: {}", summary(latencies, 3));
        let latencies = runs.sequential.iter().map(p99).collect();
        println!("{label}, 1 worker, p99 ms: {}", summary(latencies, 3));
        let (answered, failed) = runs
            .saturated
            .iter()
            .chain(&runs.sequential)
            .fold((0, 0), |(answered, failed), run| {
                (answered + run.answered, failed + run.failed)
            });
        println!("{label}: {answered} answered, {failed} failed");
    }
    let of = |runs: &[LoadRun], figure: fn(&LoadRun) -> f64| -> Vec<f64> {
        runs.iter().map(figure).collect()
    };
    // Each later target against each baseline before it: the host's server, then the task's
    // own address.
    let pairs = (0..BASELINES)
        .flat_map(|baseline| (baseline + 1..targets.len()).map(move |target| (baseline, target)));
    for (baseline, target) in pairs {
        let (direct, runs) = (&runs[baseline], &runs[target]);
        let label = format!("{} vs {}", targets[target].label, targets[baseline].label);
        let rates = of(&runs.saturated, LoadRun::requests_per_second);
        let direct_rates = of(&direct.saturated, LoadRun::requests_per_second);
        println!(
            "{label}, req/s, % (target >= 90): {}",
            summary(percent_per_round(&rates, &direct_rates), 0)
        );
        let overheads = |mesh: &[LoadRun], direct: &[LoadRun]| -> Vec<f64> {
            mesh.iter()
                .zip(direct)
                .map(|(mesh, direct)| p99(mesh) - p99(direct))
                .collect()
        };
        println!(
            "{label}, p99 difference, {SATURATED_WORKERS} workers, ms: {}",
            summary(overheads(&runs.saturated, &direct.saturated), 2)
        );
        println!(
            "{label}, p99 difference, 1 worker, ms (target < 1): {}",
            summary(overheads(&runs.sequential, &direct.sequential), 3)
        );
    }
}

/// Each round's `figures` as a percentage of the same round's `baseline`: rounds alternate the
/// targets, so a round's figures saw the same load on the machine.
fn percent_per_round(figures: &[f64], baseline: &[f64]) -> Vec<f64> {
    figures
        .iter()
        .zip(baseline)
        .map(|(figure, baseline)| 100.0 * figure / baseline)
        .collect()
}

/// The IPv4 addresses of `host`'s `web` task, loopback left out: one on the ingress network
/// (10.0.0.0/24, the default), what the mesh DNATs to, and one on the host's gateway bridge.
fn task_addresses(host: &TestHost) -> Vec<Ipv4Addr> {
    let pid = wait_until("the web task's pid", TIMEOUT, || {
        host.running_task_pid("web")
    });
    let output = Command::new("nsenter")
        .args(["-t", &pid, "-n", "/bin/busybox", "ip", "-4", "-o", "addr"])
        .output()
        .expect("running nsenter");
    let listed = String::from_utf8_lossy(&output.stdout).into_owned();
    let words: Vec<&str> = listed.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == "inet")
        .filter_map(|pair| pair[1].split('/').next()?.parse::<Ipv4Addr>().ok())
        .filter(|address| !address.is_loopback())
        .collect()
}

fn is_ingress(address: &Ipv4Addr) -> bool {
    address.octets()[..3] == [10, 0, 0]
}

fn transfer(targets: &[Target<'_>]) {
    println!(
        "transfer: GET /big ({BIG_MIB} MiB) {DOWNLOADS} times in a row per target and round, \
         read in 1 MiB reads"
    );
    let mut rates: Vec<Vec<f64>> = targets.iter().map(|_| Vec::new()).collect();
    let rounds = rounds();
    for round in 1..=rounds {
        println!("round {round} of {rounds}: {}", load_average());
        for (target, rates) in targets.iter().zip(&mut rates) {
            let rate = target
                .from
                .in_host_netns(|| {
                    load::download(target.address, "/big", DOWNLOADS, (BIG_MIB << 20) as u64)
                })
                .unwrap_or_else(|error| panic!("downloading through {}: {error}", target.label));
            println!("  {}: {rate:.0} MB/s", target.label);
            rates.push(rate);
        }
    }
    for (target, rates) in targets.iter().zip(&rates) {
        println!("{}, MB/s: {}", target.label, summary(rates.clone(), 0));
    }
    let (underlay, others) = rates.split_first().expect("the direct target first");
    for (target, rates) in targets[1..].iter().zip(others) {
        println!(
            "{} / direct over the underlay, % (target >= 80 through the mesh): {}",
            target.label,
            summary(percent_per_round(rates, underlay), 0)
        );
    }
}

/// Entries in the connection tracking table of `host`'s namespace.
fn conntrack_count(host: &TestHost) -> String {
    let output = host.run_in_host("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"]);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Docker Swarm publishing the same service, its task on d1, and what requests from the client
/// to d1's and d2's published port give over [`DOCKER_TRIES`].
fn docker_published_port(cluster: &TestCluster) {
    if let Some(reason) = docker::missing() {
        println!("docker: skipped: {reason}");
        return;
    }
    println!("docker: starting two dockerd test hosts on the same underlay");
    let swarm = DockerSwarm::start(cluster);
    let (d1, d2) = (swarm.host(1), swarm.host(2));
    println!(
        "docker: Docker {} swarm on {} ({}) and {} ({})",
        swarm.version(),
        d1.name(),
        d1.address(),
        d2.name(),
        d2.address()
    );
    let create = web_service_create(d1.name(), &["--no-resolve-image"], docker::IMAGE, false);
    d1.docker_ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
    let task = poll_until("Docker's web task running on d1", TIMEOUT, || {
        d1.running_task_pid("web")
    });
    let pid = match task {
        Ok(pid) => pid,
        Err(error) => {
            println!("docker: the published service's task never ran: {error}");
            return;
        }
    };
    // The task itself answers, so what the published port gives is the mesh's doing.
    let inside = poll_until("Docker's web task answering inside", TIMEOUT, || {
        let output = Command::new("nsenter")
            .args(["-t", &pid, "-n", "/bin/busybox", "wget", "-q", "-O", "-"])
            .arg("http://127.0.0.1/")
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(output_text(&output))
        }
    });
    match inside {
        Ok(()) => println!("docker: the task answers on 127.0.0.1:80 inside its container"),
        Err(error) => println!("docker: the task does not answer inside its container: {error}"),
    }
    let client = cluster.host(4);
    for (node, what) in [(d1, "the task's node"), (d2, "no task")] {
        // What dockerd said about the load balancer it could not program.
        for line in node.log_lines_mentioning("ipvs") {
            println!("docker: {} dockerd log: {line}", node.name());
        }
        let target = SocketAddr::from((node.address(), PUBLISHED_PORT));
        let (mut tries, mut last) = (0, String::new());
        let answered = poll_until("Docker's published port", DOCKER_TRIES, || {
            tries += 1;
            client
                .in_host_netns(|| {
                    shoal_tests::http::get(target, "/", &mut [0_u8; 4096], load::REQUEST_TIMEOUT)
                })
                .inspect_err(|error| last.clone_from(error))
        });
        match answered {
            Ok(_) => println!("docker: {} {target} ({what}): answered", node.name()),
            Err(_) => println!(
                "docker: {} {target} ({what}): all {tries} requests over {} s failed, the last: {last}",
                node.name(),
                DOCKER_TRIES.as_secs()
            ),
        }
    }
}

fn main() {
    println!("start: {}", load_average());
    let cluster = TestCluster::start(ClusterOptions::new(4))
        .unwrap_or_else(|error| panic!("starting 4 test hosts: {error}"));
    for host in &cluster.hosts()[..3] {
        host.import_busybox();
    }
    cluster.form_swarm(1, 2);
    let (h1, h2, client) = (cluster.host(1), cluster.host(2), cluster.host(4));
    println!(
        "swarm: {} ({}), {} ({}), {} ({}); client {} ({})",
        h1.name(),
        h1.address(),
        h2.name(),
        h2.address(),
        cluster.host(3).name(),
        cluster.host(3).address(),
        client.name(),
        client.address()
    );
    let create = web_service_create(h1.name(), &[], "busybox", true);
    h1.shoal_ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
    // Dropped before the cluster, whose teardown checks that nothing of its run is left.
    let _direct_server = HostServer::start(h1, &cluster.dir().join("direct-www"), DIRECT_PORT);
    let at = |host: &TestHost, port| SocketAddr::from((host.address(), port));
    let addresses = task_addresses(h1);
    let find = |ingress: bool| {
        addresses
            .iter()
            .copied()
            .find(|address| is_ingress(address) == ingress)
            .unwrap_or_else(|| panic!("the task's addresses {addresses:?}"))
    };
    let (ingress_address, gateway_address) = (find(true), find(false));
    // The client reaches the task's gateway-bridge address through h1, which routes it, from an
    // address of its own: the mesh's local path DNATs to that same task address and port, and
    // h1's conntrack refuses a connection whose reply would look like one of the other path's
    // (the same client port, picked again within the closed ones' two minutes).
    let [a, b, c, _] = client.address().octets();
    let direct_source = Ipv4Addr::new(a, b, c, 200).to_string();
    let gateway_route = format!("{gateway_address}/32");
    let h1_address = h1.address().to_string();
    for args in [
        ["addr", "add", &format!("{direct_source}/24"), "dev", "eth0"].as_slice(),
        &[
            "route",
            "add",
            &gateway_route,
            "via",
            &h1_address,
            "src",
            &direct_source,
        ],
    ] {
        let done = client.run_in_host("ip", args);
        assert!(done.status.success(), "ip {args:?}: {}", output_text(&done));
    }
    let targets = [
        Target {
            label: "direct (h1:8000, httpd in h1's namespace)",
            from: client,
            address: at(h1, DIRECT_PORT),
        },
        Target {
            label: "task direct (the task's gateway address through h1, no NAT)",
            from: client,
            address: SocketAddr::from((gateway_address, 80)),
        },
        Target {
            label: "mesh local (h1:8080, task on h1)",
            from: client,
            address: at(h1, PUBLISHED_PORT),
        },
        Target {
            label: "mesh cluster (h2:8080, task on h1)",
            from: client,
            address: at(h2, PUBLISHED_PORT),
        },
    ];
    for target in &targets {
        target.wait_answering();
    }
    println!("every target answers: {}", load_average());
    if wanted("requests") {
        requests(&targets);
        println!(
            "conntrack entries after requests: h1 {}, h2 {}",
            conntrack_count(h1),
            conntrack_count(h2)
        );
        println!("after requests: {}", load_average());
    }
    if wanted("transfer") {
        // Where the cluster path's cost goes: the overlay alone, no NAT and no client hop.
        let overlay_only = Target {
            label: "overlay only (h2's namespace to the task's ingress address, no NAT)",
            from: h2,
            address: SocketAddr::from((ingress_address, 80)),
        };
        overlay_only.wait_answering();
        let [direct, _, local, mesh_cluster] = targets;
        transfer(&[direct, local, mesh_cluster, overlay_only]);
        println!("after transfer: {}", load_average());
    }
    if wanted("docker") {
        docker_published_port(&cluster);
        println!("after docker: {}", load_average());
    }
}
