//! Issue 14's figures across two test hosts (h1 manager, h2 worker) on one overlay network,
//! beside the same figures for Docker Swarm 20.10 on two more test hosts of the same underlay
//! (d1 manager, d2 worker; see `shoal_tests::docker`), each over ROUNDS (default 5), shoal's
//! and Docker's rounds alternated:
//! - TCP throughput task to task across the hosts, against the underlay between h1's and h2's
//!   namespaces: busybox `nc` (the same `/bin/busybox` in the tasks and on the hosts), and a
//!   Rust stream with 1 MiB writes, since busybox `nc` copies in small reads and caps what it
//!   can show;
//! - from a new task running on the second host (its container has a pid) to its service's name
//!   resolving, and answering HTTP, from a task on the first, polled every 20 ms;
//! - DNS answers per second and p99 latency from inside a task to its embedded resolver at
//!   127.0.0.11, asking for another service's name (`bench-overlay/dns.rs`);
//! - RSS of the first host's daemon before and after 100 networked `sleep` tasks on it (one
//!   round; for Docker, dockerd's and containerd's).
//!
//! Docker's services are in `dnsrr` endpoint mode: a `vip` service's address is served by IPVS,
//! which this kernel lacks. shoal's are in its default `vip` mode (nftables).
//!
//! Run as root through `deploy/bench-overlay.sh`, which builds the release binaries and sets
//! `SHOAL_BIN`; Debian's `docker.io` must be installed (the run stops at once, saying so, when it
//! is not). `FIGURES=memory` (or a comma-separated choice of `throughput`, `reachability`, `dns`,
//! `memory`) takes only those. Every host, namespace, process and cgroup is removed at the end,
//! as in the tests.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::docker::{self, DockerHost, DockerSwarm};
use shoal_tests::figures::{self, load_average, median, rounds, summary, wanted};
use shoal_tests::{ClusterOptions, TestCluster, TestHost, output_text, poll_until, wait_until};

#[path = "bench-overlay/dns.rs"]
mod dns;

const TIMEOUT: Duration = Duration::from_secs(90);
/// How much each busybox `nc` round sends, in MiB: `nc` runs near 50 MB/s.
const NC_SEND_MIB: usize = 500;
/// How much each 1 MiB-writes round sends, in MiB: at 2 GB/s a shorter one is over in a
/// fraction of a second, and one stall of the machine moves its figure.
const STREAM_SEND_MIB: usize = 1_500;
const NC_PORT: &str = "5001";
const STREAM_PORT: u16 = 5002;
/// How often the reachability figure polls; its resolution.
const REACH_POLL: Duration = Duration::from_millis(20);
const IDLE_TASKS: usize = 100;
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long each DNS round sends queries, and how many it keeps unanswered at a time.
const DNS_DURATION: Duration = Duration::from_secs(3);
const DNS_IN_FLIGHT: usize = 16;
/// What the DNS figure asks for: the service on the other host.
const DNS_NAME: &str = "sink";
const WEB_COMMAND: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn report_ms(what: &str, samples: &[Duration]) {
    let ms = samples.iter().map(|s| s.as_secs_f64() * 1e3).collect();
    println!("{what}, ms: {}", summary(ms, 0));
}

fn mb_per_s(mib: usize, elapsed: Duration) -> f64 {
    (mib << 20) as f64 / 1e6 / elapsed.as_secs_f64()
}

/// A stream transfer's wall time, and the busy CPU time of the whole machine over it: on this
/// machine the rate swings with what else takes the CPU, the CPU a GiB costs far less.
struct Transfer {
    elapsed: Duration,
    machine_cpu: Duration,
}

impl Transfer {
    fn mb_per_s(&self) -> f64 {
        mb_per_s(STREAM_SEND_MIB, self.elapsed)
    }

    fn cpu_ms_per_gib(&self) -> f64 {
        self.machine_cpu.as_secs_f64() * 1e3 * 1024.0 / STREAM_SEND_MIB as f64
    }
}

fn checked(output: Output, what: &str) -> String {
    if !output.status.success() {
        panic!("{what} failed: {}", output_text(&output));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where a benchmark side runs: a task (its network and mounts, so its own busybox and
/// resolv.conf) or a test host's network namespace (the machine's `/bin/busybox`).
enum Place {
    Task(String),
    Host(PathBuf),
}

impl Place {
    fn netns(&self) -> PathBuf {
        match self {
            Place::Task(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Place::Host(path) => path.clone(),
        }
    }

    /// `busybox APPLET args` in this place.
    fn busybox(&self, applet: &str, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        match self {
            Place::Task(pid) => command.args(["-t", pid, "-n", "-m", "--", applet]),
            Place::Host(path) => command
                .arg(format!("--net={}", path.display()))
                .args(["/bin/busybox", applet]),
        };
        command.args(args);
        command
    }

    /// How a shell script here names a busybox applet: the task's PATH has them all.
    fn applet(&self, name: &str) -> String {
        match self {
            Place::Task(_) => name.to_owned(),
            Place::Host(_) => format!("/bin/busybox {name}"),
        }
    }

    fn run(&self, applet: &str, args: &[&str]) -> Result<String, String> {
        let output = self
            .busybox(applet, args)
            .output()
            .map_err(|error| format!("running nsenter: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(output_text(&output))
        }
    }

    fn listening_on(&self, port: &str) -> Result<(), String> {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .args(["ss", "-Hltn"])
            .output()
            .map_err(|error| error.to_string())?;
        let listed = String::from_utf8_lossy(&output.stdout).into_owned();
        if listed.contains(&format!(":{port} ")) {
            Ok(())
        } else {
            Err(listed)
        }
    }
}

/// Runs `work` on a thread that has entered the network namespace at `netns`; sockets it makes
/// stay in that namespace.
fn in_netns<T: Send>(netns: &Path, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let namespace = File::open(netns)
                    .unwrap_or_else(|error| panic!("opening {}: {error}", netns.display()));
                // SAFETY: setns takes a descriptor that stays open for the call and a flag; it
                // moves only this thread, which the scope ends, into the namespace.
                let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Wall time of `dd … | nc ADDRESS` from `client` into `nc -l` at `server`.
fn nc_transfer(server: &Place, client: &Place, address: &str) -> Duration {
    // nc -l exits at the end of its stdin; a pipe held open keeps it reading the socket.
    let mut listener: Child = server
        .busybox("nc", &["-l", "-p", NC_PORT])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting nc -l");
    wait_until("nc -l to listen", TIMEOUT, || server.listening_on(NC_PORT));
    let script = format!(
        "{} if=/dev/zero bs=1M count={NC_SEND_MIB} 2>/dev/null | {} {address} {NC_PORT}",
        client.applet("dd"),
        client.applet("nc")
    );
    let started = Instant::now();
    let output = client.busybox("sh", &["-c", &script]).output();
    checked(output.expect("running nc"), "dd | nc");
    let elapsed = started.elapsed();
    let status = listener.wait().expect("waiting for nc -l");
    assert!(status.success(), "nc -l exited with {status}");
    elapsed
}

/// From connecting to the server's reading the end of [`STREAM_SEND_MIB`] MiB sent in 1 MiB
/// writes.
fn stream_transfer(server: &Place, client: &Place, address: Ipv4Addr) -> Transfer {
    let listener = in_netns(&server.netns(), || {
        TcpListener::bind(("0.0.0.0", STREAM_PORT)).expect("binding the stream listener")
    });
    let client_netns = client.netns();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let (mut stream, _) = listener.accept().expect("accepting");
            let mut buffer = vec![0_u8; 1 << 20];
            let mut received = 0;
            loop {
                match stream.read(&mut buffer).expect("reading") {
                    0 => return received,
                    read => received += read,
                }
            }
        });
        let (started, busy_before) = (Instant::now(), figures::machine_cpu_ticks().0);
        in_netns(&client_netns, || {
            let mut stream =
                TcpStream::connect(SocketAddr::from((address, STREAM_PORT))).expect("connecting");
            let buffer = vec![0_u8; 1 << 20];
            for _ in 0..STREAM_SEND_MIB {
                stream.write_all(&buffer).expect("writing");
            }
            stream.shutdown(Shutdown::Write).expect("shutting down");
        });
        let received = receiver.join().expect("the receiver");
        assert_eq!(received, STREAM_SEND_MIB << 20, "bytes received");
        let elapsed = started.elapsed();
        let busy_ticks = figures::machine_cpu_ticks().0 - busy_before;
        Transfer {
            elapsed,
            machine_cpu: figures::clock_tick() * u32::try_from(busy_ticks).unwrap_or(u32::MAX),
        }
    })
}

/// One of the two swarms measured, each two test hosts on the same underlay: the first a
/// manager, the second a worker.
#[derive(Clone, Copy)]
enum Swarm<'a> {
    Shoal(&'a TestCluster),
    Docker(&'a DockerSwarm),
}

impl Swarm<'_> {
    fn label(self) -> &'static str {
        match self {
            Swarm::Shoal(_) => "shoal",
            Swarm::Docker(_) => "Docker",
        }
    }

    /// Host `number`'s short name, for what the figures print: h1, h2 or d1, d2.
    fn host_label(self, number: usize) -> String {
        match self {
            Swarm::Shoal(_) => format!("h{number}"),
            Swarm::Docker(_) => format!("d{number}"),
        }
    }

    /// A busybox service on the overlay network, its one task on host `number`.
    fn create_service(self, name: &str, number: usize, command: &[&str]) {
        match self {
            Swarm::Shoal(cluster) => {
                create_service(cluster.host(1), name, cluster.host(number), command)
            }
            Swarm::Docker(swarm) => swarm.create_service(name, swarm.host(number), command),
        }
    }

    fn remove_service(self, name: &str) {
        match self {
            Swarm::Shoal(cluster) => drop(cluster.host(1).shoal_ok(&["service", "rm", name])),
            Swarm::Docker(swarm) => drop(swarm.host(1).docker_ok(&["service", "rm", name])),
        }
    }

    /// The host pid of a running task of `service` on host `number`, or why there is none.
    fn running_task_pid(self, number: usize, service: &str) -> Result<String, String> {
        match self {
            Swarm::Shoal(cluster) => cluster.host(number).running_task_pid(service),
            Swarm::Docker(swarm) => swarm.host(number).running_task_pid(service),
        }
    }

    fn task_pid(self, number: usize, service: &str) -> String {
        wait_until(
            &format!(
                "a running {service} task on {}'s {}",
                self.label(),
                self.host_label(number)
            ),
            TIMEOUT,
            || self.running_task_pid(number, service),
        )
    }
}

/// A swarm's `probe` task on its first host and `sink` task on its second, the sink's overlay
/// address known and answering.
struct TaskPair<'a> {
    swarm: Swarm<'a>,
    client: Place,
    server: Place,
    server_address: Ipv4Addr,
}

impl TaskPair<'_> {
    fn new(swarm: Swarm<'_>) -> TaskPair<'_> {
        let client = Place::Task(swarm.task_pid(1, "probe"));
        let server = Place::Task(swarm.task_pid(2, DNS_NAME));
        let lookup = format!("tasks.{DNS_NAME}");
        let server_address =
            wait_until(
                &format!("{lookup} to resolve"),
                TIMEOUT,
                || match looked_up_addresses(&client.run("nslookup", &[&lookup])?).first() {
                    Some(address) => Ok(*address),
                    None => Err("no address".to_owned()),
                },
            );
        // The first connection across the overlay also waits for the peers' entries.
        wait_until("the sink task to answer", TIMEOUT, || {
            let address = server_address.to_string();
            client
                .run("nc", &["-w", "2", &address, "1", "-e", "true"])
                .map(drop)
                .or_else(|error| {
                    // Refused is an answer: the path to the task works.
                    if error.contains("refused") {
                        Ok(())
                    } else {
                        Err(error)
                    }
                })
        });
        TaskPair {
            swarm,
            client,
            server,
            server_address,
        }
    }
}

/// The IPv4 addresses in busybox nslookup's answer section.
fn looked_up_addresses(answer: &str) -> Vec<Ipv4Addr> {
    answer
        .split("Name:")
        .skip(1)
        .flat_map(|section| section.lines())
        .filter_map(|line| line.trim().strip_prefix("Address:"))
        .filter_map(|address| address.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Polls `observe` every `interval` until it succeeds; returns when it first did.
fn first_success(
    what: &str,
    interval: Duration,
    mut observe: impl FnMut() -> Result<(), String>,
) -> Instant {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let attempt = Instant::now();
        match observe() {
            Ok(()) => return Instant::now(),
            Err(last) if Instant::now() > deadline => panic!("{what}: timed out; last: {last}"),
            Err(_) => std::thread::sleep(interval.saturating_sub(attempt.elapsed())),
        }
    }
}

fn create_service(manager: &TestHost, name: &str, node: &TestHost, command: &[&str]) {
    let placement = format!("node.hostname=={}", node.name());
    let mut args = vec![
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--network",
        "front",
        "--constraint",
        &placement,
        "busybox",
    ];
    args.extend(command);
    manager.shoal_ok(&args);
}

fn throughput(cluster: &TestCluster, pairs: &[TaskPair<'_>]) {
    let (h1, h2) = (cluster.host(1), cluster.host(2));
    let underlay_client = Place::Host(h1.netns_path());
    let underlay_server = Place::Host(h2.netns_path());
    let underlay_address = h2.address();
    for pair in pairs {
        println!(
            "sending {NC_SEND_MIB} MiB (nc) and {STREAM_SEND_MIB} MiB (1 MiB writes) per round: {} task {} on {} from a task on {}",
            pair.swarm.label(),
            pair.server_address,
            pair.swarm.host_label(2),
            pair.swarm.host_label(1)
        );
    }
    println!(
        "sending {NC_SEND_MIB} MiB (nc) and {STREAM_SEND_MIB} MiB (1 MiB writes) per round: underlay {underlay_address} from h1's namespace"
    );
    let mut nc_overlay = vec![Vec::new(); pairs.len()];
    let mut stream_overlay: Vec<Vec<Transfer>> = pairs.iter().map(|_| Vec::new()).collect();
    let (mut nc_underlay, mut stream_underlay) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        // Alternated, so a change in the machine's load falls on all of them.
        for (pair, samples) in pairs.iter().zip(&mut nc_overlay) {
            let address = pair.server_address.to_string();
            samples.push(mb_per_s(
                NC_SEND_MIB,
                nc_transfer(&pair.server, &pair.client, &address),
            ));
        }
        let address = underlay_address.to_string();
        nc_underlay.push(mb_per_s(
            NC_SEND_MIB,
            nc_transfer(&underlay_server, &underlay_client, &address),
        ));
        for (pair, samples) in pairs.iter().zip(&mut stream_overlay) {
            samples.push(stream_transfer(
                &pair.server,
                &pair.client,
                pair.server_address,
            ));
        }
        stream_underlay.push(stream_transfer(
            &underlay_server,
            &underlay_client,
            underlay_address,
        ));
    }
    for (pair, transfers) in pairs.iter().zip(&stream_overlay) {
        let cpu = transfers.iter().map(Transfer::cpu_ms_per_gib).collect();
        println!(
            "1 MiB writes {} overlay, the machine's CPU ms per GiB: {}",
            pair.swarm.label(),
            summary(cpu, 0)
        );
    }
    let underlay_cpu = stream_underlay
        .iter()
        .map(Transfer::cpu_ms_per_gib)
        .collect();
    println!(
        "1 MiB writes underlay, the machine's CPU ms per GiB: {}",
        summary(underlay_cpu, 0)
    );
    let rates = |transfers: &[Transfer]| transfers.iter().map(Transfer::mb_per_s).collect();
    let stream_overlay: Vec<Vec<f64>> = stream_overlay.iter().map(|t| rates(t)).collect();
    for (tool, overlay, underlay) in [
        ("busybox nc", nc_overlay, nc_underlay),
        ("1 MiB writes", stream_overlay, rates(&stream_underlay)),
    ] {
        let medians: Vec<f64> = overlay.iter().map(|samples| median(samples)).collect();
        for (pair, samples) in pairs.iter().zip(overlay) {
            println!(
                "{tool} {} overlay, MB/s: {}",
                pair.swarm.label(),
                summary(samples, 1)
            );
        }
        let underlay_median = median(&underlay);
        println!("{tool} underlay, MB/s: {}", summary(underlay, 1));
        let ratios: Vec<String> = pairs
            .iter()
            .zip(&medians)
            .map(|(pair, overlay)| {
                format!(
                    "{} {:.0} %",
                    pair.swarm.label(),
                    100.0 * overlay / underlay_median
                )
            })
            .collect();
        println!("{tool} overlay / underlay (medians): {}", ratios.join(", "));
        if let [shoal, docker] = medians[..] {
            println!(
                "{tool} shoal overlay / Docker overlay (medians): {:.0} %",
                100.0 * shoal / docker
            );
        }
    }
}

/// Running, resolving and answering times of one new web service, whose one task goes on the
/// swarm's second host and is reached from `client` on its first.
struct Reached {
    resolved: Duration,
    answered: Duration,
    from_create: Duration,
}

/// What one of [`Reached`]'s times measures (`{1}` and `{2}` standing for the first and second
/// host), and that time.
type ReachFigure = (&'static str, fn(&Reached) -> Duration);

fn reachability_round(swarm: Swarm<'_>, client: &Place, name: &str) -> Reached {
    let created = Instant::now();
    swarm.create_service(name, 2, &["sh", "-c", WEB_COMMAND]);
    // Watched at once, so neither poll delays the other.
    let (running, resolves, answers) = std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            first_success("the task running", REACH_POLL / 2, || {
                swarm.running_task_pid(2, name).map(drop)
            })
        });
        let resolves = first_success("the name resolving", REACH_POLL, || {
            if looked_up_addresses(&client.run("nslookup", &[name])?).is_empty() {
                Err("no address".to_owned())
            } else {
                Ok(())
            }
        });
        let url = format!("http://{name}/");
        let answers = first_success("the name answering", REACH_POLL, || {
            client
                .run("timeout", &["2", "wget", "-q", "-O", "-", &url])
                .map(drop)
        });
        let running = running.join().expect("the running poll");
        (running, resolves, answers)
    });
    let since_running = |at: Instant| {
        at.checked_duration_since(running).unwrap_or_else(|| {
            println!(
                "{} {name}: reachable before its task was seen running; counted as 0",
                swarm.label()
            );
            Duration::ZERO
        })
    };
    let reached = Reached {
        resolved: since_running(resolves),
        answered: since_running(answers),
        from_create: answers - created,
    };
    swarm.remove_service(name);
    wait_until("the web task to go", TIMEOUT, || {
        match swarm.running_task_pid(2, name) {
            Ok(pid) => Err(format!("{name} still runs as {pid}")),
            Err(_) => Ok(()),
        }
    });
    reached
}

fn reachability(pairs: &[TaskPair<'_>]) {
    let mut reached: Vec<Vec<Reached>> = pairs.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds() {
        for (pair, samples) in pairs.iter().zip(&mut reached) {
            samples.push(reachability_round(
                pair.swarm,
                &pair.client,
                &format!("web{round}"),
            ));
        }
    }
    let figures: [ReachFigure; 3] = [
        (
            "task running on {2} to its name resolving from a task on {1}",
            |r| r.resolved,
        ),
        (
            "task running on {2} to http://NAME/ answering from a task on {1}",
            |r| r.answered,
        ),
        (
            "service create to http://NAME/ answering from a task on {1}",
            |r| r.from_create,
        ),
    ];
    for (what, figure) in figures {
        for (pair, samples) in pairs.iter().zip(&reached) {
            let what = what
                .replace("{1}", &pair.swarm.host_label(1))
                .replace("{2}", &pair.swarm.host_label(2));
            let samples: Vec<Duration> = samples.iter().map(figure).collect();
            report_ms(&format!("{} {what}", pair.swarm.label()), &samples);
        }
    }
}

fn dns(pairs: &[TaskPair<'_>]) {
    println!(
        "DNS: A queries for {DNS_NAME} from the probe task to 127.0.0.11:53, {DNS_IN_FLIGHT} in \
         flight, for {} s per round",
        DNS_DURATION.as_secs()
    );
    let mut runs: Vec<Vec<dns::DnsRun>> = pairs.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds() {
        for (pair, samples) in pairs.iter().zip(&mut runs) {
            samples.push(in_netns(&pair.client.netns(), || {
                dns::query_loop(DNS_NAME, DNS_DURATION, DNS_IN_FLIGHT)
            }));
        }
    }
    let ms = |latency: Duration| latency.as_secs_f64() * 1e3;
    for (pair, runs) in pairs.iter().zip(runs) {
        let label = pair.swarm.label();
        let rates = runs.iter().map(dns::DnsRun::answers_per_second).collect();
        println!("{label} DNS answers per second: {}", summary(rates, 0));
        let p50 = runs.iter().map(|run| ms(run.percentile(0.5))).collect();
        println!("{label} DNS p50, ms: {}", summary(p50, 2));
        let p99 = runs.iter().map(|run| ms(run.percentile(0.99))).collect();
        println!("{label} DNS p99, ms: {}", summary(p99, 2));
        let total = |count: fn(&dns::DnsRun) -> u64| runs.iter().map(count).sum::<u64>();
        println!(
            "{label} DNS answered / sent: {} / {} ({} without a record, {} lost)",
            total(|run| run.answered),
            total(|run| run.sent),
            total(|run| run.failed),
            total(|run| run.lost)
        );
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    shoal_metrics::kb_field_bytes(&status, "VmRSS").expect("VmRSS in /proc/PID/status") / 1024
}

fn running_tasks(manager: &TestHost, service: &str) -> usize {
    let output = manager.shoal(&["service", "ps", "--format", "json", service]);
    json_lines(&checked(output, "service ps"))
        .iter()
        .filter(|task| {
            task["DesiredState"] == "Running"
                && task["CurrentState"]
                    .as_str()
                    .is_some_and(|state| state.starts_with("Running"))
        })
        .count()
}

/// Polls `running` until [`IDLE_TASKS`] run or [`IDLE_TIMEOUT`] passes, printing progress;
/// returns how many ran and after how long. On a loaded machine the tasks may not all start in
/// time: then the figure says how many did. The progress shows how start-up time grows with the
/// number of tasks already running.
fn wait_for_idle_tasks(running: impl Fn() -> usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut reported = 0;
    let _ = poll_until("the idle tasks", IDLE_TIMEOUT, || match running() {
        IDLE_TASKS => Ok(()),
        count => {
            if count >= reported + 10 {
                reported = count - count % 10;
                println!(
                    "  {count} running after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(format!("{count} running"))
        }
    });
    (running(), started.elapsed())
}

fn rss_line(what: &str, before: u64, after: u64, running: usize) -> String {
    format!(
        "{what} VmRSS: {:.1} MiB before, {:.1} MiB with {running} networked tasks, +{:.1} MiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / 1024.0
    )
}

fn daemon_rss(manager: &TestHost) {
    let pid = manager.daemon_pid().expect("h1's daemon runs");
    let before = vm_rss_kib(pid);
    create_service(manager, "idle", manager, &["sleep", "86400"]);
    manager.shoal_ok(&["service", "scale", "-d", &format!("idle={IDLE_TASKS}")]);
    let (running, elapsed) = wait_for_idle_tasks(|| running_tasks(manager, "idle"));
    let after = vm_rss_kib(pid);
    println!(
        "shoal: {running} of {IDLE_TASKS} networked sleep tasks running on h1 after {:.1} s",
        elapsed.as_secs_f64()
    );
    println!("{}", rss_line("shoal h1 daemon", before, after, running));
}

fn docker_rss(swarm: &DockerSwarm) {
    let d1: &DockerHost = swarm.host(1);
    let (dockerd, containerd) = d1.daemon_pids();
    let before = (vm_rss_kib(dockerd), vm_rss_kib(containerd));
    swarm.create_service("idle", d1, &["sleep", "86400"]);
    d1.docker_ok(&["service", "scale", "-d", &format!("idle={IDLE_TASKS}")]);
    let (running, elapsed) = wait_for_idle_tasks(|| swarm.running_tasks("idle"));
    let after = (vm_rss_kib(dockerd), vm_rss_kib(containerd));
    println!(
        "Docker: {running} of {IDLE_TASKS} networked sleep tasks running on d1 after {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        rss_line("Docker d1 dockerd", before.0, after.0, running)
    );
    println!(
        "{}",
        rss_line("Docker d1 containerd", before.1, after.1, running)
    );
    println!(
        "{}",
        rss_line(
            "Docker d1 dockerd + containerd",
            before.0 + before.1,
            after.0 + after.1,
            running
        )
    );
}

fn main() {
    // Before anything is made: the Docker side is part of every figure.
    if let Some(reason) = docker::missing() {
        eprintln!("bench-overlay: {reason}");
        std::process::exit(1);
    }
    println!("start: {}", load_average());
    let cluster = TestCluster::start(ClusterOptions::new(2))
        .unwrap_or_else(|error| panic!("starting 2 test hosts: {error}"));
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(1, 1);
    let h1 = cluster.host(1);
    h1.shoal_ok(&["network", "create", "-d", "overlay", "front"]);
    // Dropped before the cluster, whose teardown checks that nothing with its prefix is left.
    let docker_swarm = DockerSwarm::start(&cluster);
    println!(
        "Docker {} swarm on {} ({}) and {} ({}), services in dnsrr mode",
        docker_swarm.version(),
        docker_swarm.host(1).name(),
        docker_swarm.host(1).address(),
        docker_swarm.host(2).name(),
        docker_swarm.host(2).address()
    );
    let swarms = [Swarm::Shoal(&cluster), Swarm::Docker(&docker_swarm)];
    for swarm in swarms {
        swarm.create_service("probe", 1, &["sleep", "86400"]);
        swarm.create_service(DNS_NAME, 2, &["sleep", "86400"]);
    }
    let pairs: Vec<TaskPair<'_>> = swarms.into_iter().map(TaskPair::new).collect();

    if wanted("throughput") {
        throughput(&cluster, &pairs);
        println!("after throughput: {}", load_average());
    }
    if wanted("reachability") {
        reachability(&pairs);
        println!("after reachability: {}", load_average());
    }
    if wanted("dns") {
        dns(&pairs);
        println!("after dns: {}", load_average());
    }
    if wanted("memory") {
        daemon_rss(h1);
        docker_rss(&docker_swarm);
        println!("after memory: {}", load_average());
    }
}
