//! Issue 16's figures: the Docker Engine API shoal serves on every node (`crates/docker-api`),
//! driven by the stock docker CLI 28.2, against shoal's own CLI on the same cluster and against
//! Docker Swarm 20.10 in the same run, driven by the same docker CLI, so that only the server
//! differs. Two shoal test hosts (h1 manager, h2 worker) and, when Debian's `docker.io` is
//! installed, two Docker test hosts (d1 manager, d2 worker, `shoal_tests::docker`) on one
//! underlay, each swarm with the same busybox image. Three clients, alternated one call at a
//! time so that a change in the machine's load falls on each:
//! - `docker → shoal`: [`DOCKER_CLI`] with `DOCKER_HOST` at h1's Docker socket;
//! - `shoal → shoal`: the shoal CLI on h1's own socket (gRPC);
//! - `docker → Docker`: [`DOCKER_CLI`] with `DOCKER_HOST` at d1's dockerd.
//!
//! Figures:
//! - `latency`: with [`STATE_SERVICES`] services of [`STATE_REPLICAS`] `sleep` tasks running on
//!   each swarm (created through the docker CLI on both, then left [`SETTLE`] to settle),
//!   `service ls` and `service ps <one of them>`, `SAMPLES` times (default 50) per client, from
//!   spawning the command to its exit (p50, p99). Beside them, what neither server takes part in
//!   (`--version` of each CLI), and requests the docker CLI makes (`GET
//!   /v<version>/services?status=true` for `service ls`, the tasks of one service, `/_ping`)
//!   made by hand on a new connection each, for the servers' own time without either CLI;
//! - `create`: `service create --replicas 100 busybox sleep 3600` from command to return, ROUNDS
//!   times (default 5) per client: without `-d`, where each CLI follows the service until it
//!   converged (the docker CLI then waits its 5 s stability period, shoal's does not), and with
//!   `-d` for the docker CLI. A thread polls the server meanwhile for when 100 tasks run, so the
//!   convergence itself is reported apart from how each CLI waits for it. The service is removed,
//!   and its containers waited gone, before the next.
//!
//! Run as root through `deploy/bench-docker-api.sh`, which builds the release binaries and sets
//! `SHOAL_BIN`. `FIGURES=latency` (or `create`) takes only that one. Every host, namespace,
//! process and cgroup is removed at the end, as in the tests.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::docker::{self, DockerSwarm};
use shoal_tests::figures::{self, load_average, percentile, rounds, summary, wanted};
use shoal_tests::{
    ClusterOptions, DOCKER_CLI, TestCluster, TestHost, default_shoal_binary, output_text,
    wait_until,
};

/// The state `service ls` and `service ps` run against, on each swarm.
const STATE_SERVICES: usize = 10;
const STATE_REPLICAS: usize = 10;
/// The service `service ps` lists: one of the state's.
const PS_SERVICE: &str = "state-1";
/// The replicas of the created service, and its name.
const CREATE_REPLICAS: usize = 100;
const CREATE_SERVICE: &str = "bulk";
/// How long a command may run before the watchdog kills it: a `create` of 100 tasks on a loaded
/// machine takes tens of seconds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a swarm may take to run, or to remove, 100 tasks.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the convergence poller asks the server: 0.05 s is small beside the seconds being
/// measured, and one request per period is no load.
const POLL_PERIOD: Duration = Duration::from_millis(50);
/// How long the machine is left after the state's tasks start, before anything is timed: the
/// tail of 200 container starts (shims, status reports) would otherwise fall on the first
/// figures.
const SETTLE: Duration = Duration::from_secs(30);
/// `service ls` and `service ps` runs per client, when `SAMPLES` is not set.
const DEFAULT_SAMPLES: usize = 50;

/// One way of driving a swarm: a CLI and the server it talks to.
struct Client {
    label: &'static str,
    program: PathBuf,
    /// What comes before the command's own arguments: `-H <socket>` for the shoal CLI.
    leading: Vec<String>,
    /// The environment that points the docker CLI at its server.
    environment: Vec<(&'static str, String)>,
    /// The Docker socket of the swarm this client drives, which the convergence poller and the
    /// hand-made requests use.
    docker_socket: PathBuf,
    /// The API version the docker CLI negotiates on that socket, the one in the paths it asks.
    api_version: String,
    /// Whether this is the docker CLI, which takes docker's flags (`--no-resolve-image`).
    is_docker_cli: bool,
}

impl Client {
    /// The docker CLI 28.2 on the Docker socket `docker_host` (`unix://PATH`), with a
    /// configuration directory of its own under `config_dir`.
    fn docker(label: &'static str, docker_host: String, config_dir: PathBuf) -> Client {
        let mut client = Client {
            label,
            program: PathBuf::from(DOCKER_CLI),
            leading: Vec::new(),
            docker_socket: socket_path(&docker_host),
            environment: vec![
                ("DOCKER_HOST", docker_host),
                ("DOCKER_CONFIG", config_dir.display().to_string()),
                ("DOCKER_CLI_HINTS", "false".to_owned()),
                ("NO_COLOR", "1".to_owned()),
            ],
            api_version: String::new(),
            is_docker_cli: true,
        };
        // What the CLI reports after negotiating: the lower of its own (1.50 for 28.2) and the
        // server's.
        let (_, version) = client.timed_ok(&["version", "--format", "{{.Client.APIVersion}}"]);
        client.api_version = version.trim().to_owned();
        client
    }

    /// The shoal CLI on `host`'s own socket; `docker_cli` drives the same host through its
    /// Docker socket.
    fn shoal(host: &TestHost, docker_cli: &Client) -> Client {
        Client {
            label: "shoal → shoal",
            program: default_shoal_binary(),
            leading: vec!["-H".to_owned(), host.host_url()],
            environment: vec![("NO_COLOR", "1".to_owned())],
            docker_socket: docker_cli.docker_socket.clone(),
            api_version: docker_cli.api_version.clone(),
            is_docker_cli: false,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.leading)
            .args(args)
            .envs(self.environment.iter().map(|(key, value)| (key, value)))
            // Negotiated with the server, as a user's CLI does.
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT");
        command
    }

    /// Runs `args` and times it; panics, with what it printed, when it fails.
    fn timed_ok(&self, args: &[&str]) -> (Duration, String) {
        let (elapsed, output) = timed(&mut self.command(args));
        if !output.status.success() {
            panic!(
                "{}: {} failed: {}",
                self.label,
                args.join(" "),
                output_text(&output)
            );
        }
        (
            elapsed,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }
}

/// The path of a `unix://PATH` address.
fn socket_path(docker_host: &str) -> PathBuf {
    PathBuf::from(docker_host.trim_start_matches("unix://"))
}

/// Runs `command` to its end and times it, from spawn to exit, by waiting on the child itself:
/// the harness's `run` polls for the exit in steps of up to 20 ms, too coarse for a command of a
/// few tens of milliseconds. A watchdog thread kills the child after [`COMMAND_TIMEOUT`], so a
/// hung call fails the run instead of hanging it.
fn timed(command: &mut Command) -> (Duration, Output) {
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
    let pid = child.id() as libc::pid_t;
    let (finished, watched) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watched.recv_timeout(COMMAND_TIMEOUT) == Err(RecvTimeoutError::Timeout) {
            // SAFETY: kill takes two integers; the child is not reaped until
            // `wait_with_output` returns, which is what would have ended this wait.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("waiting for {command:?}: {error}"));
    let elapsed = started.elapsed();
    let _ = finished.send(());
    let _ = watchdog.join();
    (elapsed, output)
}

/// One `GET path` on a new connection to the unix socket `socket`, as HTTP/1.1 with `Connection:
/// close`, read to its end: the time from connecting to the last byte, and the answer's body. An
/// answer other than 200 is an error.
fn raw_get(socket: &Path, path: &str) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket)
        .map_err(|error| format!("connecting to {}: {error}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("sending GET {path}: {error}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|error| format!("reading the answer to GET {path}: {error}"))?;
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: not an HTTP answer: {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {head}\n{body}"));
    }
    Ok((elapsed, body.to_owned()))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// p50 and p99 of `samples`, and their extremes, in ms.
fn latency_line(samples: &[Duration]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms (min {:.2}, max {:.2}; {} runs)",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        ms(percentile(samples, 0.0)),
        ms(percentile(samples, 1.0)),
        samples.len()
    )
}

/// The share of the machine's CPU time spent busy over the next `period`, from `/proc/stat`:
/// what both swarms cost at rest, with whatever else runs on the machine.
fn cpu_busy_percent_over(period: Duration) -> f64 {
    let (busy_before, total_before) = figures::machine_cpu_ticks();
    std::thread::sleep(period);
    let (busy_after, total_after) = figures::machine_cpu_ticks();
    100.0 * (busy_after - busy_before) as f64 / (total_after - total_before).max(1) as f64
}

/// `SAMPLES`, or [`DEFAULT_SAMPLES`] when unset or not a number.
fn samples() -> usize {
    std::env::var("SAMPLES")
        .ok()
        .and_then(|samples| samples.parse().ok())
        .unwrap_or(DEFAULT_SAMPLES)
}

/// The `RunningTasks` of the service `name` as the Docker socket of `client`'s swarm reports it
/// with `status=true`, or why not.
fn running_tasks(client: &Client, name: &str) -> Result<u64, String> {
    let path = format!(
        "/v{}/services?status=true&filters=%7B%22name%22%3A%7B%22{name}%22%3Atrue%7D%7D",
        client.api_version
    );
    let (_, body) = raw_get(&client.docker_socket, &path)?;
    let listed: Value = serde_json::from_str(&body).map_err(|error| error.to_string())?;
    listed
        .as_array()
        .and_then(|services| {
            services
                .iter()
                .find(|service| service["Spec"]["Name"] == name)
        })
        .and_then(|service| service["ServiceStatus"]["RunningTasks"].as_u64())
        .ok_or_else(|| format!("no status of {name} yet: {body}"))
}

/// Waits until `service` runs `replicas` tasks on `client`'s swarm.
fn wait_running(client: &Client, service: &str, replicas: usize) {
    wait_until(
        &format!("{replicas} tasks of {service} running"),
        CONVERGE_TIMEOUT,
        || match running_tasks(client, service)? {
            running if running as usize == replicas => Ok(()),
            running => Err(format!("{running} running")),
        },
    );
}

/// The state both swarms hold while `service ls` and `service ps` are timed: [`STATE_SERVICES`]
/// services of [`STATE_REPLICAS`] `sleep` tasks, created with `-d` through `client`, a docker
/// CLI, and waited running.
fn create_state(client: &Client) {
    let replicas = STATE_REPLICAS.to_string();
    for number in 1..=STATE_SERVICES {
        let name = format!("state-{number}");
        client.timed_ok(&[
            "service",
            "create",
            "-d",
            "--no-resolve-image",
            "--name",
            &name,
            "--replicas",
            &replicas,
            "busybox",
            "sleep",
            "3600",
        ]);
    }
    for number in 1..=STATE_SERVICES {
        let name = format!("state-{number}");
        wait_running(client, &name, STATE_REPLICAS);
    }
}

/// `service ls` and `service ps`, each client's calls alternated.
fn latency(clients: &[&Client]) {
    let samples = samples();
    println!(
        "latency: {STATE_SERVICES} services of {STATE_REPLICAS} tasks on each swarm; \
         {samples} runs per client, the clients alternated"
    );
    let commands: [(&str, Vec<&str>); 4] = [
        ("--version (no server)", vec!["--version"]),
        ("service ls", vec!["service", "ls"]),
        (
            "service ps (one service's tasks)",
            vec!["service", "ps", PS_SERVICE],
        ),
        (
            "service ps --no-resolve",
            vec!["service", "ps", "--no-resolve", PS_SERVICE],
        ),
    ];
    for (what, args) in &commands {
        let mut latencies: Vec<Vec<Duration>> = clients.iter().map(|_| Vec::new()).collect();
        for sample in 0..samples {
            for (client, latencies) in clients.iter().zip(&mut latencies) {
                let (elapsed, printed) = client.timed_ok(args);
                if sample == 0 {
                    println!("  {} `{}` printed:", client.label, args.join(" "));
                    for line in printed.lines() {
                        println!("    {line}");
                    }
                }
                latencies.push(elapsed);
            }
        }
        println!("{what}: {}", load_average());
        for (client, latencies) in clients.iter().zip(&latencies) {
            println!("  {}: {}", client.label, latency_line(latencies));
        }
    }
    // Requests the docker CLI makes, without either CLI: each server's own time, the shoal
    // side's including its gRPC call to the control API.
    let servers: Vec<&Client> = clients
        .iter()
        .copied()
        .filter(|client| client.is_docker_cli)
        .collect();
    let requests = |client: &Client| {
        let version = &client.api_version;
        [
            format!("/v{version}/services?status=true"),
            format!(
                "/v{version}/tasks?filters=%7B%22service%22%3A%7B%22{PS_SERVICE}%22%3Atrue%7D%7D"
            ),
            "/_ping".to_owned(),
        ]
    };
    for index in 0..requests(clients[0]).len() {
        let mut latencies: Vec<Vec<Duration>> = servers.iter().map(|_| Vec::new()).collect();
        let mut sizes = vec![0; servers.len()];
        for _ in 0..samples {
            for ((client, latencies), size) in servers.iter().zip(&mut latencies).zip(&mut sizes) {
                let path = &requests(client)[index];
                let (elapsed, body) = raw_get(&client.docker_socket, path)
                    .unwrap_or_else(|error| panic!("{}: {error}", client.label));
                latencies.push(elapsed);
                *size = body.len();
            }
        }
        println!("GET by hand, a new connection each: {}", load_average());
        for ((client, latencies), size) in servers.iter().zip(&latencies).zip(&sizes) {
            println!(
                "  {} GET {} ({size} bytes): {}",
                client.label,
                requests(client)[index],
                latency_line(latencies)
            );
        }
    }
}

/// What one `service create` gave: when the command returned, and when the poller first saw
/// every task running, both from the command's start; and the command's last line, its verdict.
struct CreateRun {
    returned: Duration,
    converged: Duration,
    last_line: String,
}

/// `service create --replicas 100 busybox sleep 3600` through `client` (with `-d` when
/// `detach`), timed, with a thread polling the server for when the tasks all run; then waits for
/// that if the command returned first, and removes the service and waits its containers gone
/// through `gone`.
fn create_once(client: &Client, detach: bool, gone: &dyn Fn() -> Result<(), String>) -> CreateRun {
    let replicas = CREATE_REPLICAS.to_string();
    let mut args = vec!["service", "create"];
    if detach {
        args.push("-d");
    }
    if client.is_docker_cli {
        args.push("--no-resolve-image");
    }
    args.extend([
        "--name",
        CREATE_SERVICE,
        "--replicas",
        &replicas,
        "busybox",
        "sleep",
        "3600",
    ]);
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let (returned, printed, converged) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            loop {
                if let Ok(running) = running_tasks(client, CREATE_SERVICE)
                    && running as usize == CREATE_REPLICAS
                {
                    return Some(started.elapsed());
                }
                if stop.load(Ordering::Relaxed) || started.elapsed() > CONVERGE_TIMEOUT {
                    return None;
                }
                std::thread::sleep(POLL_PERIOD);
            }
        });
        let (returned, printed) = client.timed_ok(&args);
        // Without -d the command returned after convergence, so the poller has seen it or
        // sees it on its next request; with -d it keeps polling until then.
        if !detach {
            stop.store(true, Ordering::Relaxed);
        }
        let converged = poller.join().unwrap_or_else(|panic| {
            std::panic::resume_unwind(panic);
        });
        (returned, printed, converged)
    });
    let converged = converged.unwrap_or_else(|| {
        panic!(
            "{}: {CREATE_REPLICAS} tasks of {CREATE_SERVICE} never all ran",
            client.label
        )
    });
    client.timed_ok(&["service", "rm", CREATE_SERVICE]);
    wait_until(
        &format!("{CREATE_SERVICE}'s containers gone"),
        CONVERGE_TIMEOUT,
        gone,
    );
    CreateRun {
        returned,
        converged,
        last_line: printed.lines().last().unwrap_or_default().trim().to_owned(),
    }
}

/// Whether the created service's containers are gone from every shoal host, stopped ones too.
fn shoal_containers_gone(cluster: &TestCluster) -> Result<(), String> {
    let prefix = format!("{CREATE_SERVICE}.");
    let mut left = 0;
    for host in cluster.hosts() {
        let listed = host.shoal(&["container", "ls", "-a", "--format", "json"]);
        if !listed.status.success() {
            return Err(output_text(&listed));
        }
        left += String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|row| {
                row["Names"]
                    .as_str()
                    .is_some_and(|name| name.starts_with(&prefix))
            })
            .count();
    }
    none_left(left)
}

/// Whether the created service's containers are gone from both Docker hosts, stopped ones too.
fn docker_containers_gone(swarm: &DockerSwarm) -> Result<(), String> {
    let filter = format!("label=com.docker.swarm.service.name={CREATE_SERVICE}");
    let mut left = 0;
    for host in [swarm.host(1), swarm.host(2)] {
        let listed = host.docker(&["ps", "-a", "-q", "--filter", &filter]);
        if !listed.status.success() {
            return Err(output_text(&listed));
        }
        left += String::from_utf8_lossy(&listed.stdout).lines().count();
    }
    none_left(left)
}

fn none_left(left: usize) -> Result<(), String> {
    match left {
        0 => Ok(()),
        left => Err(format!("{left} containers left")),
    }
}

/// One create variant: the client, with `-d` or not, and how to see its containers gone.
struct Variant<'a> {
    client: &'a Client,
    detach: bool,
    gone: Box<dyn Fn() -> Result<(), String> + 'a>,
}

fn create(variants: &[Variant<'_>]) {
    let rounds = rounds();
    println!(
        "create: service create --replicas {CREATE_REPLICAS} busybox sleep 3600, \
         {rounds} rounds, the variants alternated; the state's {} tasks keep running",
        STATE_SERVICES * STATE_REPLICAS
    );
    let mut runs: Vec<Vec<CreateRun>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        println!("round {round} of {rounds}: {}", load_average());
        for (variant, runs) in variants.iter().zip(&mut runs) {
            let run = create_once(variant.client, variant.detach, &variant.gone);
            println!(
                "  {}{}: returned after {:.2} s, {CREATE_REPLICAS} running after {:.2} s; \
                 its last line: {:?}",
                variant.client.label,
                if variant.detach { " -d" } else { "" },
                run.returned.as_secs_f64(),
                run.converged.as_secs_f64(),
                run.last_line
            );
            runs.push(run);
        }
    }
    for (variant, runs) in variants.iter().zip(&runs) {
        let label = format!(
            "{}{}",
            variant.client.label,
            if variant.detach { " -d" } else { "" }
        );
        let seconds = |pick: fn(&CreateRun) -> Duration| -> Vec<f64> {
            runs.iter().map(|run| pick(run).as_secs_f64()).collect()
        };
        println!(
            "{label}, command returned, s: {}",
            summary(seconds(|run| run.returned), 2)
        );
        println!(
            "{label}, {CREATE_REPLICAS} tasks running, s: {}",
            summary(seconds(|run| run.converged), 2)
        );
    }
}

fn main() {
    assert!(
        Path::new(DOCKER_CLI).exists(),
        "{DOCKER_CLI} missing: the docker CLI 28 this benchmark drives"
    );
    println!("start: {}", load_average());
    let cluster = TestCluster::start(ClusterOptions::new(2))
        .unwrap_or_else(|error| panic!("starting 2 test hosts: {error}"));
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(1, 1);
    let h1 = cluster.host(1);
    let docker_on_shoal = Client::docker(
        "docker → shoal",
        h1.docker_host(),
        cluster.dir().join("docker-config-shoal"),
    );
    let shoal_on_shoal = Client::shoal(h1, &docker_on_shoal);
    println!(
        "shoal: {} ({}), {} ({}); Docker Engine API {} on {}",
        h1.name(),
        h1.address(),
        cluster.host(2).name(),
        cluster.host(2).address(),
        docker_on_shoal.api_version,
        docker_on_shoal.docker_socket.display()
    );
    // Dropped before the cluster, whose teardown checks that nothing of its run is left.
    let docker_side = match docker::missing() {
        Some(reason) => {
            println!("docker: skipped: {reason}");
            None
        }
        None => {
            let swarm = DockerSwarm::start(&cluster);
            let client = Client::docker(
                "docker → Docker",
                swarm.host(1).docker_host(),
                cluster.dir().join("docker-config-docker"),
            );
            println!(
                "docker: Docker {} (API {}) on {} ({}) and {} ({})",
                swarm.version(),
                client.api_version,
                swarm.host(1).name(),
                swarm.host(1).address(),
                swarm.host(2).name(),
                swarm.host(2).address(),
            );
            Some((swarm, client))
        }
    };
    let (_, docker_cli_version) = docker_on_shoal.timed_ok(&["--version"]);
    println!("client: {}", docker_cli_version.trim());
    // Both states through the same docker CLI, so that both swarms hold the same specs (the CLI
    // tags the image `busybox:latest`, where shoal's CLI keeps `busybox`).
    create_state(&docker_on_shoal);
    if let Some((_, client)) = &docker_side {
        create_state(client);
    }
    println!(
        "state created: {}; left to settle for {} s: the machine's CPU {:.0} % busy meanwhile",
        load_average(),
        SETTLE.as_secs(),
        cpu_busy_percent_over(SETTLE)
    );
    if wanted("latency") {
        let mut clients = vec![&docker_on_shoal, &shoal_on_shoal];
        clients.extend(docker_side.as_ref().map(|(_, client)| client));
        latency(&clients);
    }
    if wanted("create") {
        let shoal = |client, detach| Variant {
            client,
            detach,
            gone: Box::new(|| shoal_containers_gone(&cluster)),
        };
        let docker = |detach| {
            docker_side.as_ref().map(|(swarm, client)| Variant {
                client,
                detach,
                gone: Box::new(move || docker_containers_gone(swarm)),
            })
        };
        // Each shoal variant beside Docker's of the same kind, so they see the same load.
        let variants: Vec<Variant<'_>> = [
            Some(shoal(&docker_on_shoal, false)),
            Some(shoal(&shoal_on_shoal, false)),
            docker(false),
            Some(shoal(&docker_on_shoal, true)),
            docker(true),
        ]
        .into_iter()
        .flatten()
        .collect();
        create(&variants);
    }
    println!("end: {}", load_average());
}
