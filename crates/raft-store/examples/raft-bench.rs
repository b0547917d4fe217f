//! Write throughput, commit latency and fail-over time of a cluster store whose members are
//! separate processes on loopback, with TLS and fsync on.
//!
//! `cargo run --release -p raft-store --example raft-bench -- --nodes 3 --clients 16 --seconds 10`
//!
//! Every write is a one-object create of about 200 bytes. After the timed run the benchmark kills
//! the leader process with SIGKILL and measures the time to the first successful write. It prints
//! one JSON line.

#[path = "../tests/support/pki.rs"]
#[allow(dead_code, unreachable_pub)]
mod pki;

#[path = "../tests/support/member_process.rs"]
#[allow(dead_code, unreachable_pub)]
mod member_process;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raft_store::{StoreClient, Transaction, standalone};

struct Args {
    nodes: u64,
    clients: usize,
    seconds: u64,
    snapshot_interval: Option<u64>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        nodes: 3,
        clients: 16,
        seconds: 10,
        snapshot_interval: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = |name: &str| value.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match flag.as_str() {
            "--nodes" => parsed.nodes = number("--nodes")?,
            "--clients" => parsed.clients = number("--clients")? as usize,
            "--seconds" => parsed.seconds = number("--seconds")?,
            "--snapshot-interval" => {
                parsed.snapshot_interval = Some(number("--snapshot-interval")?)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn object(id: String) -> Transaction {
    // kind, id and 160 bytes of data: about 200 bytes a write.
    Transaction::create("bench", id, "", vec![b'x'; 160])
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("member") {
        let member = standalone::MemberArgs::parse(args.skip(1)).unwrap_or_else(|error| {
            eprintln!("raft-bench member: {error}");
            std::process::exit(2)
        });
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        if let Err(error) = runtime.block_on(standalone::run_member(member)) {
            eprintln!("raft-bench member: {error}");
            std::process::exit(1);
        }
        return;
    }
    let args = parse_args(args).unwrap_or_else(|error| {
        eprintln!("raft-bench: {error}\nusage: raft-bench --nodes N --clients C --seconds S [--snapshot-interval N]");
        std::process::exit(2)
    });
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = pki::TestPki::new();
    pki.write_dir(&dir.path().join("tls"), args.nodes);
    let program = std::env::current_exe().expect("the benchmark's own path");
    let mut members =
        member_process::MemberProcesses::new(program, &["member"], dir.path(), args.nodes);
    let extra_args: Vec<String> = match args.snapshot_interval {
        Some(interval) => vec!["--snapshot-interval".to_owned(), interval.to_string()],
        None => Vec::new(),
    };
    for id in 1..=args.nodes {
        members.start(id, id == 1, &extra_args);
    }
    let client = Arc::new(StoreClient::new(
        members.members(),
        &pki.identity(1000),
        Duration::from_secs(10),
    ));
    let leader = client.find_leader().await.expect("a leader");
    // Warm the connections and the leader hint.
    for i in 0..50 {
        client
            .write(object(format!("warm-{i}")))
            .await
            .expect("a warm-up write");
    }

    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|worker| {
            let client = Arc::clone(&client);
            let running = Arc::clone(&running);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let mut n = 0u64;
                while running.load(Ordering::Relaxed) {
                    let begun = Instant::now();
                    match client.write(object(format!("c{worker}-{n}"))).await {
                        Ok(_) => latencies.push(begun.elapsed()),
                        Err(_) => failures += 1,
                    }
                    n += 1;
                }
                (latencies, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    running.store(false, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mut worker_latencies, worker_failures) = worker.await.expect("a worker");
        latencies.append(&mut worker_latencies);
        failures += worker_failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();

    // Fail-over: SIGKILL the leader process, then time the first write that succeeds.
    let killed_at = Instant::now();
    members.kill(leader);
    let mut attempt = 0;
    let election_ms = loop {
        attempt += 1;
        if client
            .write(object(format!("after-failover-{attempt}")))
            .await
            .is_ok()
        {
            break killed_at.elapsed().as_secs_f64() * 1000.0;
        }
        if killed_at.elapsed() > Duration::from_secs(30) {
            break f64::NAN;
        }
    };

    println!(
        "{{\"nodes\":{},\"clients\":{},\"seconds\":{},\"writes\":{},\"failed_writes\":{},\"writes_per_sec\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"election_ms\":{:.0}}}",
        args.nodes,
        args.clients,
        args.seconds,
        latencies.len(),
        failures,
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        election_ms
    );
}
