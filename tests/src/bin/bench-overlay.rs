//! Issue 14's figures across two test hosts (h1 manager, h2 worker) on one overlay network,
//! each over ROUNDS (default 5):
//! - TCP throughput task to task across the hosts, against the underlay between the same two
//!   host namespaces: busybox `nc` (the same `/bin/busybox` in the tasks and on the hosts),
//!   and a Rust stream with 1 MiB writes, since busybox `nc` copies in small reads and caps
//!   what it can show;
//! - from a new task running on h2 (its container has a pid) to its service's name resolving,
//!   and answering HTTP, from a task on h1, polled every 20 ms;
//! - RSS of h1's daemon before and after 100 networked `sleep` tasks on it (one round).
//!
//! Run as root through `deploy/bench-overlay.sh`, which builds the release binaries and sets
//! `SHOAL_BIN`. Every host, namespace and process is removed at the end, as in the tests.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::{ClusterOptions, TestCluster, TestHost, output_text, poll_until, wait_until};

const TIMEOUT: Duration = Duration::from_secs(90);
/// How much each throughput round sends, in MiB.
const SEND_MIB: usize = 500;
const NC_PORT: &str = "5001";
const STREAM_PORT: u16 = 5002;
/// How often the reachability figure polls; its resolution.
const REACH_POLL: Duration = Duration::from_millis(20);
const IDLE_TASKS: usize = 100;
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
const WEB_COMMAND: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(5)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// min / median / max of `samples`, then the samples in the order taken.
fn summary(mut samples: Vec<f64>, decimals: usize) -> String {
    let listed: Vec<String> = samples.iter().map(|s| format!("{s:.decimals$}")).collect();
    samples.sort_by(f64::total_cmp);
    format!(
        "min {:.decimals$}, median {:.decimals$}, max {:.decimals$} over {} rounds ({})",
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1],
        samples.len(),
        listed.join(", ")
    )
}

fn report_ms(what: &str, samples: &[Duration]) {
    let ms = samples.iter().map(|s| s.as_secs_f64() * 1e3).collect();
    println!("{what}, ms: {}", summary(ms, 0));
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn mb_per_s(elapsed: Duration) -> f64 {
    (SEND_MIB << 20) as f64 / 1e6 / elapsed.as_secs_f64()
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
        "{} if=/dev/zero bs=1M count={SEND_MIB} 2>/dev/null | {} {address} {NC_PORT}",
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

/// From connecting to the server's reading the end of `SEND_MIB` MiB sent in 1 MiB writes.
fn stream_transfer(server: &Place, client: &Place, address: Ipv4Addr) -> Duration {
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
        let started = Instant::now();
        in_netns(&client_netns, || {
            let mut stream =
                TcpStream::connect(SocketAddr::from((address, STREAM_PORT))).expect("connecting");
            let buffer = vec![0_u8; 1 << 20];
            for _ in 0..SEND_MIB {
                stream.write_all(&buffer).expect("writing");
            }
            stream.shutdown(Shutdown::Write).expect("shutting down");
        });
        let received = receiver.join().expect("the receiver");
        assert_eq!(received, SEND_MIB << 20, "bytes received");
        started.elapsed()
    })
}

fn task_pid(host: &TestHost, service: &str) -> String {
    wait_until(
        &format!("a running {service} container on {}", host.name()),
        TIMEOUT,
        || host.running_task_pid(service),
    )
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

fn throughput(cluster: &TestCluster, client: &Place, server: &Place) {
    let server_address = wait_until(
        "tasks.sink to resolve",
        TIMEOUT,
        || match looked_up_addresses(&client.run("nslookup", &["tasks.sink"])?).first() {
            Some(address) => Ok(*address),
            None => Err("no address".to_owned()),
        },
    );
    let (h1, h2) = (cluster.host(1), cluster.host(2));
    let underlay_client = Place::Host(h1.netns_path());
    let underlay_server = Place::Host(h2.netns_path());
    let underlay_address = h2.address();
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
    println!(
        "sending {SEND_MIB} MiB per round: task {server_address} on {} from a task on {}; \
         underlay {underlay_address} from {}'s namespace",
        h2.name(),
        h1.name(),
        h1.name()
    );
    let (mut nc_overlay, mut nc_underlay, mut stream_overlay, mut stream_underlay) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds() {
        // Alternated, so a change in the machine's load falls on both.
        let address = server_address.to_string();
        nc_overlay.push(mb_per_s(nc_transfer(server, client, &address)));
        let address = underlay_address.to_string();
        nc_underlay.push(mb_per_s(nc_transfer(
            &underlay_server,
            &underlay_client,
            &address,
        )));
        stream_overlay.push(mb_per_s(stream_transfer(server, client, server_address)));
        stream_underlay.push(mb_per_s(stream_transfer(
            &underlay_server,
            &underlay_client,
            underlay_address,
        )));
    }
    for (tool, overlay, underlay) in [
        ("busybox nc", nc_overlay, nc_underlay),
        ("1 MiB writes", stream_overlay, stream_underlay),
    ] {
        let ratio = 100.0 * median(&overlay) / median(&underlay);
        println!("{tool} overlay, MB/s: {}", summary(overlay, 1));
        println!("{tool} underlay, MB/s: {}", summary(underlay, 1));
        println!("{tool} overlay / underlay (medians): {ratio:.0} %");
    }
}

fn reachability(manager: &TestHost, web_host: &TestHost, client: &Place) {
    let (mut resolved, mut answered, mut from_create) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds() {
        let name = format!("web{round}");
        let created = Instant::now();
        create_service(manager, &name, web_host, &["sh", "-c", WEB_COMMAND]);
        // Watched at once, so neither poll delays the other.
        let (running, resolves, answers) = std::thread::scope(|scope| {
            let running = scope.spawn(|| {
                first_success("the task running", REACH_POLL / 2, || {
                    web_host.running_task_pid(&name).map(drop)
                })
            });
            let resolves = first_success("the name resolving", REACH_POLL, || {
                if looked_up_addresses(&client.run("nslookup", &[&name])?).is_empty() {
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
                println!("{name}: reachable before its task was seen running; counted as 0");
                Duration::ZERO
            })
        };
        resolved.push(since_running(resolves));
        answered.push(since_running(answers));
        from_create.push(answers - created);
        manager.shoal_ok(&["service", "rm", &name]);
        wait_until("the web task to go", TIMEOUT, || {
            match web_host.running_task_pid(&name) {
                Ok(pid) => Err(format!("{name} still runs as {pid}")),
                Err(_) => Ok(()),
            }
        });
    }
    report_ms(
        "task running on h2 to its name resolving from a task on h1",
        &resolved,
    );
    report_ms(
        "task running on h2 to http://NAME/ answering from a task on h1",
        &answered,
    );
    report_ms("service create to http://NAME/ answering", &from_create);
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
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

fn daemon_rss(manager: &TestHost) {
    let pid = manager.daemon_pid().expect("h1's daemon runs");
    let before = vm_rss_kib(pid);
    create_service(manager, "idle", manager, &["sleep", "86400"]);
    manager.shoal_ok(&["service", "scale", "-d", &format!("idle={IDLE_TASKS}")]);
    let started = Instant::now();
    // On a loaded machine the tasks may not all start in time: then say how many did.
    let _ = poll_until("the idle tasks", IDLE_TIMEOUT, || {
        match running_tasks(manager, "idle") {
            IDLE_TASKS => Ok(()),
            running => Err(format!("{running} running")),
        }
    });
    let (running, after) = (running_tasks(manager, "idle"), vm_rss_kib(pid));
    println!(
        "{running} of {IDLE_TASKS} networked sleep tasks running on h1 after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "h1 daemon VmRSS: {:.1} MiB before, {:.1} MiB with {running} networked tasks, +{:.1} MiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / 1024.0
    );
}

fn main() {
    let cluster = TestCluster::start(ClusterOptions::new(2))
        .unwrap_or_else(|error| panic!("starting 2 test hosts: {error}"));
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(1, 1);
    let (h1, h2) = (cluster.host(1), cluster.host(2));
    h1.shoal_ok(&["network", "create", "-d", "overlay", "front"]);
    create_service(h1, "probe", h1, &["sleep", "86400"]);
    create_service(h1, "sink", h2, &["sleep", "86400"]);
    let client = Place::Task(task_pid(h1, "probe"));
    let server = Place::Task(task_pid(h2, "sink"));

    throughput(&cluster, &client, &server);
    reachability(h1, h2, &client);
    daemon_rss(h1);
}
