//! Benchmark: starts N (default 100) detached busybox `sleep` containers through `shoal
//! daemon`, with the built-in runtime and with `--runtime runc`, then runs bare `runc run -d`
//! on the same bundles. Reports run-request-to-process-running latency (p50/p99), containers
//! per second, daemon RSS idle and with N running, and the mean PSS of a shim.
//!
//! Needs root, /bin/busybox and runc. Run:
//! `cargo build -p cli --release && cargo run -p cli --release --example bench_engine -- \
//!   target/release/shoal 100`
//! Everything it makes lives under /tmp/shoal-bench-<pid> and is removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_proto::engine as pb;
use shoal_proto::engine::engine_client::EngineClient;
use tonic::transport::Channel;

async fn connect(socket: PathBuf) -> anyhow::Result<EngineClient<Channel>> {
    Ok(EngineClient::new(daemon::connect_local(&socket).await?))
}

/// Field `key` of `/proc/PID/FILE` in KiB, or 0 when the process is gone.
fn status_kib(pid: u32, key: &str, file: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|text| shoal_metrics::kb_field_bytes(&text, key))
        .map_or(0, |bytes| bytes / 1024)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

struct Figures {
    label: String,
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn figures(label: &str, mut latencies: Vec<Duration>, total: Duration) -> Figures {
    latencies.sort();
    Figures {
        label: label.to_owned(),
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        per_second: latencies.len() as f64 / total.as_secs_f64(),
    }
}

fn build_rootfs_tarball(dir: &Path) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let tarball = dir.join("busybox.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()?;
    if !status.success() {
        bail!("tar failed");
    }
    Ok(tarball)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let shoal = PathBuf::from(args.next().unwrap_or_else(|| "target/release/shoal".into()));
    let count: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(100);
    let dir = PathBuf::from(format!("/tmp/shoal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&shoal, count, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(shoal: &Path, count: usize, dir: &Path) -> anyhow::Result<()> {
    let tarball = build_rootfs_tarball(dir)?;
    let socket = dir.join("s.sock");
    let host = format!("unix://{}", socket.display());
    let data = dir.join("data");
    let mut daemon = Command::new(shoal)
        .args(["daemon", "--data-root"])
        .arg(&data)
        .args(["-H", &host, "--docker-api", "none"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if Instant::now() > deadline {
            bail!("daemon did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new(shoal)
        .args(["-H", &host, "image", "import"])
        .arg(&tarball)
        .arg("bench:1")
        .status()?;
    if !status.success() {
        bail!("import failed");
    }
    let mut client = connect(socket.clone()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = status_kib(daemon.id(), "VmRSS", "status");
    let mut results = Vec::new();
    let mut loaded_rss = 0;
    let mut shim_pss = Vec::new();
    let mut template = None;
    for runtime in ["", "/usr/sbin/runc"] {
        let mut latencies = Vec::new();
        let mut ids = Vec::new();
        let started = Instant::now();
        for _ in 0..count {
            let t0 = Instant::now();
            let spec = pb::ContainerSpec {
                image: "bench:1".into(),
                command: vec!["sleep".into(), "1000".into()],
                runtime: runtime.into(),
                ..Default::default()
            };
            let id = client.create_container(spec).await?.into_inner().id;
            client
                .start_container(pb::ContainerRef { id: id.clone() })
                .await?;
            latencies.push(t0.elapsed());
            ids.push(id);
        }
        let total = started.elapsed();
        let label = if runtime.is_empty() {
            "shoal (built-in libcontainer)"
        } else {
            "shoal --runtime runc"
        };
        results.push(figures(label, latencies, total));
        eprintln!("{label}: done");
        if runtime.is_empty() {
            loaded_rss = status_kib(daemon.id(), "VmRSS", "status");
            let listed = client
                .list_containers(pb::ListContainersRequest { all: false })
                .await?
                .into_inner()
                .containers;
            for container in &listed {
                let state: serde_json::Value = serde_json::from_str(&container.inspect_json)?;
                if let Some(pid) = state["state"]["shim_pid"].as_u64() {
                    shim_pss.push(status_kib(pid as u32, "Pss", "smaps_rollup"));
                }
            }
            template = Some(std::fs::read_to_string(
                data.join("containers").join(&ids[0]).join("config.json"),
            )?);
        }
        for id in ids {
            client
                .remove_container(pb::RemoveContainerRequest { id, force: true })
                .await?;
        }
    }
    // Bare runc on the same bundles: shoal's generated config.json, each on its own overlay.
    let template: serde_json::Value =
        serde_json::from_str(&template.context("no template bundle")?)?;
    let layer = std::fs::read_dir(data.join("layers"))?
        .flatten()
        .next()
        .context("no layer")?
        .path();
    let runc_root = dir.join("runc-root");
    let mut latencies = Vec::new();
    let mut bundles = Vec::new();
    let started = Instant::now();
    for i in 0..count {
        let bundle = dir.join(format!("bundle-{i}"));
        for sub in ["rootfs", "upper", "work"] {
            std::fs::create_dir_all(bundle.join(sub))?;
        }
        let t0 = Instant::now();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            layer.display(),
            bundle.join("upper").display(),
            bundle.join("work").display()
        );
        let mounted = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(bundle.join("rootfs"))
            .status()?;
        if !mounted.success() {
            bail!("overlay mount failed");
        }
        let mut config = template.clone();
        config["root"]["path"] = serde_json::json!(bundle.join("rootfs"));
        config["linux"]["cgroupsPath"] = serde_json::json!(format!("/shoal-bench/runc-{i}"));
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?)?;
        let status = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(format!("bench-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("runc run failed");
        }
        latencies.push(t0.elapsed());
        bundles.push(bundle);
    }
    results.push(figures(
        "bare runc run -d (same bundles)",
        latencies,
        started.elapsed(),
    ));
    for (i, bundle) in bundles.iter().enumerate() {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["delete", "-f", &format!("bench-{i}")])
            .output();
        let _ = Command::new("umount").arg(bundle.join("rootfs")).status();
    }
    for controller in [
        "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "systemd",
        "unified",
    ] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{controller}/shoal-bench"));
    }
    drop(client);
    // SAFETY: kill takes two integers; the daemon is our child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    println!("| run path | p50 | p99 | containers/s |\n|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} |",
            r.label,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.per_second
        );
    }
    let ratio = results[0].p50.as_secs_f64() / results[2].p50.as_secs_f64();
    println!("\nbuilt-in p50 / bare runc p50 = {ratio:.2}");
    let mean_pss = shim_pss.iter().sum::<u64>() as f64 / shim_pss.len().max(1) as f64;
    println!(
        "daemon RSS idle: {idle_rss} KiB; with {count} running: {loaded_rss} KiB; mean shim PSS: {mean_pss:.0} KiB ({} shims)",
        shim_pss.len()
    );
    Ok(())
}
