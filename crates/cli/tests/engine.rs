//! End-to-end tests of `shoal daemon` and the image and container commands on this host. They
//! need root (mounts, cgroups, namespaces) and Debian's busybox-static; without either they
//! print why and pass without checking anything. Each test runs its own daemon on its own data
//! root and socket under a per-run prefix, and its guard removes every container, process,
//! mount, cgroup and directory it made, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use shoal_tests::skip;
use support::{SHOAL, build_busybox_tarball, container_ids, remove_leftovers, skip_reason};

const RUNC: &str = "/usr/sbin/runc";

/// Polls `check` every 20 ms until it holds or `timeout` passes.
fn poll_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One daemon with its own data root; cleans up everything on drop.
struct TestHost {
    dir: PathBuf,
    host: String,
    daemon: Option<Child>,
}

impl TestHost {
    /// Starts a daemon, or returns `None` (after saying why) when the test must be skipped.
    fn start(name: &str) -> Option<TestHost> {
        if let Some(reason) = skip_reason() {
            skip(name, &reason);
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/sh{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let host = format!("unix://{}/s.sock", dir.display());
        let mut test_host = TestHost {
            dir,
            host,
            daemon: None,
        };
        test_host.spawn_daemon();
        Some(test_host)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("d")
    }

    fn spawn_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let child = Command::new(SHOAL)
            .args(["daemon", "--data-root"])
            .arg(self.data())
            .args(["-H", &self.host, "--docker-api"])
            .arg(format!("unix://{}/docker.sock", self.dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting shoal daemon");
        self.daemon = Some(child);
        let socket = self.dir.join("s.sock");
        let up = poll_until(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        assert!(
            up,
            "daemon did not come up: {}",
            std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
        );
    }

    /// `GET path` on the daemon's Docker API: the status code and the body.
    fn docker_api_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(self.dir.join("docker.sock"))
            .expect("the Docker API socket");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        )
        .expect("sending the request");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("reading the answer");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        (status, body)
    }

    fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn shoal(&self, args: &[&str]) -> Output {
        Command::new(SHOAL)
            .args(["-H", &self.host])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running shoal")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.shoal(args);
        assert!(
            output.status.success(),
            "shoal {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.shoal(args);
        assert!(
            !output.status.success(),
            "shoal {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn inspect(&self, id: &str) -> Value {
        let text = self.ok(&["container", "inspect", id]);
        let value: Value = serde_json::from_str(&text).expect("inspect JSON");
        value[0].clone()
    }

    /// The container's health status as `inspect` reports it ("" when it has none).
    fn health(&self, id: &str) -> String {
        self.inspect(id)["health"]["status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Imports the busybox test image as `busybox:test`.
    fn import_busybox(&self) {
        let tarball = self.dir.join("busybox.tar");
        build_busybox_tarball(&tarball);
        self.ok(&[
            "image",
            "import",
            tarball.to_str().expect("utf-8 path"),
            "busybox:test",
        ]);
    }

    fn container_ids(&self) -> Vec<String> {
        container_ids(&self.data())
    }

    /// Asserts container `id` left no mount, cgroup or process behind.
    fn assert_clean(&self, id: &str, shim_pid: Option<i64>) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(!mountinfo.contains(id), "a mount of {id} is left");
        for controller in ["memory", "pids", "cpu", "unified"] {
            let path = format!("/sys/fs/cgroup/{controller}/shoal/{id}");
            assert!(!Path::new(&path).exists(), "{path} is left");
        }
        if let Some(pid) = shim_pid {
            let gone = poll_until(Duration::from_secs(5), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
            assert!(gone, "shim {pid} of {id} is left");
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let ids = self.container_ids();
            if !ids.is_empty() {
                let mut args = vec!["container", "rm", "-f"];
                args.extend(ids.iter().map(|s| s.as_str()));
                let _ = self.shoal(&args);
            }
            if let Some(mut child) = self.daemon.take() {
                // SAFETY: kill takes two integers; the child is ours and not yet reaped.
                unsafe { libc::kill(child.id() as i32, 15) };
                let _ = child.wait();
            }
        }
        // Whatever the daemon could not remove: processes, mounts, cgroups.
        remove_leftovers(&self.dir, &self.data());
    }
}

fn runtimes() -> Vec<Option<&'static str>> {
    let mut runtimes = vec![None];
    if Path::new(RUNC).exists() {
        runtimes.push(Some(RUNC));
    } else {
        skip(
            "the runc half of the runtime tests",
            "runc not installed (apt-get install runc)",
        );
    }
    runtimes
}

fn run_args<'a>(runtime: Option<&'a str>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["container", "run"];
    if let Some(runtime) = runtime {
        args.extend(["--runtime", runtime]);
    }
    args.extend(rest);
    args
}

#[test]
fn output_reaches_logs_and_exit_codes_are_reported() {
    let Some(host) = TestHost::start("logs") else {
        return;
    };
    host.import_busybox();
    for runtime in runtimes() {
        let output = host.shoal(&run_args(
            runtime,
            &[
                "--name",
                "fg",
                "busybox:test",
                "sh",
                "-c",
                "echo hello; echo oops >&2; exit 3",
            ],
        ));
        assert_eq!(output.status.code(), Some(3), "{runtime:?}: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "oops\n");
        assert_eq!(host.ok(&["container", "logs", "fg"]), "hello\n");
        let state = host.inspect("fg")["state"].clone();
        assert_eq!(state["exit_code"], 3);
        assert_eq!(state["status"], "exited");

        let id = host
            .ok(&run_args(
                runtime,
                &[
                    "-d",
                    "busybox:test",
                    "sh",
                    "-c",
                    "for i in 1 2 3; do echo line $i; done",
                ],
            ))
            .trim()
            .to_owned();
        assert_eq!(host.ok(&["container", "wait", &id]).trim(), "0");
        assert_eq!(
            host.ok(&["container", "logs", "--tail", "1", &id]),
            "line 3\n"
        );
        let lines = host.ok(&["container", "ls", "-a", "--format", "json"]);
        let listed: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|c| {
            c["Status"]
                .as_str()
                .is_some_and(|s| s.starts_with("Exited (3)"))
        }));
        let in_use = host.fails(&["image", "rm", "busybox:test"]);
        assert!(in_use.contains("in use by container"), "{in_use}");
        host.ok(&["container", "rm", "fg", &id]);
        host.assert_clean(&id, None);
        assert!(
            host.fails(&["container", "logs", "fg"])
                .contains("no such container")
        );
    }
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    let Some(host) = TestHost::start("oom") else {
        return;
    };
    host.import_busybox();
    let id = host.ok(&[
        "container",
        "run",
        "-d",
        "--memory",
        "16m",
        "busybox:test",
        "sh",
        "-c",
        "a=x; while :; do a=$a$a; done",
    ]);
    let id = id.trim();
    assert_eq!(host.ok(&["container", "wait", id]).trim(), "137");
    assert_eq!(host.inspect(id)["state"]["oom_killed"], true);
    host.ok(&["container", "rm", id]);
    host.assert_clean(id, None);
}

#[test]
fn pids_limit_holds_a_fork_bomb() {
    let Some(host) = TestHost::start("pids") else {
        return;
    };
    host.import_busybox();
    // Forks far more than the limit; the shell dies on the first refused fork.
    let script = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; echo escaped";
    let id = host.ok(&[
        "container",
        "run",
        "-d",
        "--pids-limit",
        "10",
        "busybox:test",
        "sh",
        "-c",
        script,
    ]);
    let id = id.trim();
    assert_ne!(host.ok(&["container", "wait", id]).trim(), "0");
    let logs = String::from_utf8_lossy(&host.shoal(&["container", "logs", id]).stderr).into_owned();
    assert!(logs.contains("can't fork"), "{logs}");
    host.ok(&["container", "rm", id]);
    host.assert_clean(id, None);
}

#[test]
fn stop_is_prompt_for_trappers_and_kills_ignorers_after_grace() {
    let Some(host) = TestHost::start("stop") else {
        return;
    };
    host.import_busybox();
    for runtime in runtimes() {
        let trapper = host.ok(&run_args(
            runtime,
            &[
                "-d",
                "busybox:test",
                "sh",
                "-c",
                "trap 'exit 0' TERM; while :; do sleep 0.1; done",
            ],
        ));
        let ignorer = host.ok(&run_args(
            runtime,
            &[
                "-d",
                "busybox:test",
                "sh",
                "-c",
                "trap '' TERM; while :; do sleep 0.1; done",
            ],
        ));
        let (trapper, ignorer) = (trapper.trim(), ignorer.trim());
        let shim = host.inspect(trapper)["state"]["shim_pid"].as_i64();
        let started = Instant::now();
        host.ok(&["container", "stop", "-t", "10", trapper]);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "trapping container took {:?}",
            started.elapsed()
        );
        assert_eq!(host.inspect(trapper)["state"]["exit_code"], 0);
        let started = Instant::now();
        host.ok(&["container", "stop", "-t", "1", ignorer]);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(6),
            "ignoring container took {took:?}"
        );
        assert_eq!(host.inspect(ignorer)["state"]["exit_code"], 137);
        host.ok(&["container", "rm", trapper, ignorer]);
        host.assert_clean(trapper, shim);
        host.assert_clean(ignorer, None);
    }
}

#[test]
fn healthcheck_flips_to_unhealthy_when_its_command_fails() {
    let Some(host) = TestHost::start("health") else {
        return;
    };
    host.import_busybox();
    for runtime in runtimes() {
        let id = host.ok(&run_args(runtime, &[
            "-d", "--health-cmd", "test -f /tmp/ok", "--health-interval", "100ms", "--health-retries", "2",
            "busybox:test", "sh", "-c", "touch /tmp/ok; while [ ! -f /tmp/fail ]; do sleep 0.05; done; rm /tmp/ok; sleep 1000",
        ]));
        let id = id.trim().to_owned();
        assert!(
            poll_until(Duration::from_secs(20), || host.health(&id) == "healthy"),
            "never healthy: {}",
            host.health(&id)
        );
        let rootfs = host
            .data()
            .join("containers")
            .join(&id)
            .join("rootfs/tmp/fail");
        std::fs::write(&rootfs, b"").expect("flipping the healthcheck");
        assert!(
            poll_until(Duration::from_secs(20), || host.health(&id) == "unhealthy"),
            "never unhealthy: {}",
            host.health(&id)
        );
        let table = host.ok(&["container", "ls"]);
        assert!(table.contains("(unhealthy)"), "{table}");
        host.ok(&["container", "rm", "-f", &id]);
        host.assert_clean(&id, None);
    }
}

/// A probe that outlives its timeout is killed inside the container, not only its exec helper
/// on the host: each probe appends its pid to a file and sleeps, the container lists its
/// processes every 100 ms, and the first probe's pid leaves that list once it has timed out.
#[test]
fn a_timed_out_healthcheck_probe_no_longer_runs_in_the_container() {
    let Some(host) = TestHost::start("probe-timeout") else {
        return;
    };
    host.import_busybox();
    for runtime in runtimes() {
        let id = host.ok(&run_args(runtime, &[
            "-d", "--health-cmd", "echo $$ >> /tmp/probe.pids; exec sleep 1000",
            "--health-interval", "500ms", "--health-timeout", "300ms", "--health-retries", "1",
            "busybox:test", "sh", "-c", "while true; do ls /proc > /tmp/procs.new; mv /tmp/procs.new /tmp/procs; sleep 0.1; done",
        ]));
        let id = id.trim().to_owned();
        assert!(
            poll_until(Duration::from_secs(20), || host.health(&id) == "unhealthy"),
            "the timed-out probe never made it unhealthy: {}",
            host.health(&id)
        );
        let rootfs = host.data().join("containers").join(&id).join("rootfs/tmp");
        let pids = std::fs::read_to_string(rootfs.join("probe.pids")).expect("the probes' pids");
        let first = pids
            .lines()
            .next()
            .expect("no probe wrote its pid")
            .trim()
            .to_owned();
        let running = || {
            std::fs::read_to_string(rootfs.join("procs"))
                .map(|procs| procs.lines().any(|pid| pid.trim() == first))
                .unwrap_or(true)
        };
        assert!(
            poll_until(Duration::from_secs(5), || !running()),
            "probe {first} still runs in the container after it timed out (runtime {runtime:?})"
        );
        host.ok(&["container", "rm", "-f", &id]);
        host.assert_clean(&id, None);
    }
}

#[test]
fn kill_9_daemon_and_restart_adopts_every_container() {
    let Some(mut host) = TestHost::start("adopt") else {
        return;
    };
    host.import_busybox();
    let mut ids = Vec::new();
    for i in 0..10 {
        let runtime = if i % 2 == 1 && Path::new(RUNC).exists() {
            Some(RUNC)
        } else {
            None
        };
        ids.push(
            host.ok(&run_args(runtime, &["-d", "busybox:test", "sleep", "1000"]))
                .trim()
                .to_owned(),
        );
    }
    let shims: Vec<i64> = ids
        .iter()
        .filter_map(|id| host.inspect(id)["state"]["shim_pid"].as_i64())
        .collect();
    assert_eq!(shims.len(), 10);
    host.kill_daemon();
    host.spawn_daemon();
    let listed = host.ok(&["container", "ls", "--format", "json"]);
    let mut listed_ids: Vec<String> = listed
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON line")["ID"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    listed_ids.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| id[..12].to_owned()).collect();
    expected.sort();
    assert_eq!(listed_ids, expected, "every container adopted exactly once");
    for (id, shim) in ids.iter().zip(&shims) {
        assert_eq!(
            host.inspect(id)["state"]["shim_pid"].as_i64(),
            Some(*shim),
            "same shim, not a new one"
        );
    }
    let mut args = vec!["container", "stop", "-t", "2"];
    args.extend(ids.iter().map(|s| s.as_str()));
    host.ok(&args);
    assert_eq!(host.ok(&["container", "ls", "-q"]).trim(), "");
    let mut args = vec!["container", "rm"];
    args.extend(ids.iter().map(|s| s.as_str()));
    host.ok(&args);
    for (id, shim) in ids.iter().zip(&shims) {
        host.assert_clean(id, Some(*shim));
    }
}

#[test]
fn init_runs_as_pid_1_and_mounts_work() {
    let Some(host) = TestHost::start("init") else {
        return;
    };
    host.import_busybox();
    let output = host.ok(&[
        "container",
        "run",
        "--rm",
        "--init",
        "busybox:test",
        "cat",
        "/proc/1/cmdline",
    ]);
    assert!(output.contains("init"), "{output:?}");
    host.ok(&[
        "container",
        "run",
        "--rm",
        "-v",
        "vol1:/data",
        "busybox:test",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        host.ok(&[
            "container",
            "run",
            "--rm",
            "-v",
            "vol1:/data:ro",
            "busybox:test",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    let failed = host.shoal(&[
        "container",
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "busybox:test",
        "sh",
        "-c",
        "touch /scratch/ok && touch /nope",
    ]);
    assert_ne!(failed.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("Read-only file system"),
        "{failed:?}"
    );
    let env = host.ok(&[
        "container",
        "run",
        "--rm",
        "-e",
        "GREETING=hi",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "--hostname",
        "box",
        "busybox:test",
        "sh",
        "-c",
        "echo $GREETING $(id -u) $(pwd) $(hostname)",
    ]);
    assert_eq!(env, "hi 65534 /tmp box\n");
    assert_eq!(
        host.ok(&["container", "ls", "-a", "-q"]).trim(),
        "",
        "--rm removed them all"
    );
    host.ok(&["container", "run", "-d", "--rm", "busybox:test", "true"]);
    let removed = poll_until(Duration::from_secs(10), || {
        host.ok(&["container", "ls", "-a", "-q"]).trim().is_empty()
    });
    assert!(removed, "detached --rm container was not removed");
    // A stopped container starts again, keeping its writable layer.
    host.ok(&[
        "container",
        "run",
        "--name",
        "again",
        "busybox:test",
        "sh",
        "-c",
        "echo run >> /count; wc -l < /count",
    ]);
    host.ok(&["container", "start", "again"]);
    assert_eq!(host.ok(&["container", "wait", "again"]).trim(), "0");
    assert_eq!(host.ok(&["container", "logs", "again"]), "1\n2\n");
    host.ok(&["container", "rm", "again"]);
}

/// Writes an OCI image-layout archive with one layer; `corrupt` damages it in a named way.
fn write_oci_archive(path: &Path, busybox: &Path, corrupt: Option<&str>) {
    use sha2::Digest as _;
    let hex = |bytes: &[u8]| format!("{:x}", sha2::Sha256::digest(bytes));
    let mut layer = std::fs::read(busybox).expect("layer");
    let diff_id = hex(&layer);
    let layer_digest = hex(&layer);
    match corrupt {
        Some("truncated") => layer.truncate(layer.len() / 2),
        Some("flipped") => {
            let middle = layer.len() / 2;
            layer[middle] ^= 0xff;
        }
        _ => {}
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["echo", "from-oci"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    }))
    .expect("manifest");
    let manifest_digest = hex(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "oci/test:v1"}}],
    }))
    .expect("index");
    let mut builder = tar::Builder::new(std::fs::File::create(path).expect("archive"));
    let mut add = |name: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes)
            .expect("entry");
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    add(format!("blobs/sha256/{manifest_digest}"), &manifest);
    add(format!("blobs/sha256/{}", hex(&config)), &config);
    add(format!("blobs/sha256/{layer_digest}"), &layer);
    builder.finish().expect("finish");
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing() {
    let Some(host) = TestHost::start("bad") else {
        return;
    };
    let garbage = host.dir.join("garbage.tar");
    std::fs::write(&garbage, vec![0x5au8; 10_000]).expect("garbage");
    let error = host.fails(&[
        "image",
        "import",
        garbage.to_str().unwrap_or_default(),
        "bad:garbage",
    ]);
    assert!(error.contains("invalid layer"), "{error}");

    let busybox = host.dir.join("busybox.tar");
    build_busybox_tarball(&busybox);
    let gzipped = host.dir.join("busybox.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {} | head -c 500000 > {}",
            busybox.display(),
            gzipped.display()
        ))
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let error = host.fails(&[
        "image",
        "import",
        gzipped.to_str().unwrap_or_default(),
        "bad:truncated",
    ]);
    assert!(
        error.contains("invalid layer")
            && (error.contains("incomplete") || error.contains("unexpected end")),
        "{error}"
    );

    let archive = host.dir.join("oci.tar");
    write_oci_archive(&archive, &busybox, Some("flipped"));
    let error = host.fails(&["image", "load", "-i", archive.to_str().unwrap_or_default()]);
    assert!(error.contains("digest mismatch"), "{error}");
    write_oci_archive(&archive, &busybox, Some("truncated"));
    let error = host.fails(&["image", "load", "-i", archive.to_str().unwrap_or_default()]);
    assert!(error.contains("digest mismatch"), "{error}");

    assert_eq!(host.ok(&["image", "ls", "--format", "json"]), "");
    for dir in ["layers", "tmp"] {
        let left = std::fs::read_dir(host.data().join(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{dir} is not empty");
    }
    let blobs = std::fs::read_dir(host.data().join("images/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "blobs left behind");

    // The same archive, intact, loads and runs, and keeps its manifest digest.
    write_oci_archive(&archive, &busybox, None);
    assert!(
        host.ok(&["image", "load", "-i", archive.to_str().unwrap_or_default()])
            .contains("oci/test:v1")
    );
    assert_eq!(
        host.ok(&["container", "run", "--rm", "oci/test:v1"]),
        "from-oci\n"
    );
    let image: Value =
        serde_json::from_str(&host.ok(&["image", "inspect", "oci/test:v1"])).expect("inspect");
    let digest = image[0]["ManifestDigest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let index = std::fs::read_to_string(host.data().join("images/index.json")).unwrap_or_default();
    assert!(index.contains(&digest));
    host.ok(&["image", "rm", "oci/test:v1"]);
    assert_eq!(
        host.ok(&["image", "ls"]).lines().count(),
        1,
        "only the header is left"
    );
}

/// A throwaway `docker-registry` on loopback; killed on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = dir.join("registry.yml");
    let yaml = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("registry").display()
    );
    std::fs::write(&config, yaml).expect("registry config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting docker-registry");
    let registry = Registry { child, port };
    let up = poll_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "registry did not start");
    registry
}

fn run_tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn pull_from_a_local_registry_runs_and_keeps_the_digest() {
    let missing: Vec<&str> = ["docker-registry", "umoci", "skopeo"]
        .into_iter()
        .filter(|tool| {
            Command::new("which")
                .arg(tool)
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        skip(
            "pull test",
            &format!("{missing:?} not installed (apt-get install docker-registry umoci skopeo)"),
        );
        return;
    }
    let Some(host) = TestHost::start("pull") else {
        return;
    };
    let registry = start_registry(&host.dir);
    let layout = host.dir.join("oci");
    let image = format!("{}:v1", layout.display());
    let bundle = host.dir.join("bundle");
    let busybox = host.dir.join("busybox.tar");
    build_busybox_tarball(&busybox);
    run_tool(
        "umoci",
        &["init", "--layout", layout.to_str().unwrap_or_default()],
    );
    run_tool("umoci", &["new", "--image", &image]);
    run_tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &image,
            bundle.to_str().unwrap_or_default(),
        ],
    );
    run_tool(
        "tar",
        &[
            "-C",
            bundle.join("rootfs").to_str().unwrap_or_default(),
            "-xf",
            busybox.to_str().unwrap_or_default(),
        ],
    );
    run_tool(
        "umoci",
        &[
            "repack",
            "--image",
            &image,
            bundle.to_str().unwrap_or_default(),
        ],
    );
    run_tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.cmd",
            "echo",
            "--config.cmd",
            "pulled",
        ],
    );
    let remote = format!("127.0.0.1:{}/test/busybox:v1", registry.port);
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{image}"),
            &format!("docker://{remote}"),
        ],
    );
    let remote_digest = run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{remote}"),
        ],
    );

    // What `docker service create` asks before it pins the image: the registry's digest,
    // through the node's Docker API, without pulling anything.
    let (status, body) = host.docker_api_get(&format!("/v1.51/distribution/{remote}/json"));
    assert_eq!(status, 200, "{body}");
    let resolved: Value = serde_json::from_str(&body).expect("distribution JSON");
    assert_eq!(
        resolved["Descriptor"]["digest"].as_str(),
        Some(remote_digest.trim()),
        "{resolved}"
    );
    assert_eq!(resolved["Platforms"][0]["os"], "linux", "{resolved}");
    assert_eq!(
        host.ok(&["image", "ls"]).lines().count(),
        1,
        "nothing pulled"
    );
    let (status, body) = host.docker_api_get(&format!(
        "/v1.51/distribution/127.0.0.1:{}/test/absent:v1/json",
        registry.port
    ));
    assert!(status >= 400 && body.contains("absent"), "{status} {body}");

    let output = host.ok(&["image", "pull", "--insecure", &remote]);
    assert!(
        output.contains(remote_digest.trim()),
        "pulled {output:?}, registry has {remote_digest:?}"
    );
    assert_eq!(host.ok(&["container", "run", "--rm", &remote]), "pulled\n");
    let listed = host.ok(&["image", "ls", "--format", "json"]);
    let listed: Value = serde_json::from_str(listed.trim()).expect("one image");
    assert_eq!(listed["Digest"].as_str(), Some(remote_digest.trim()));

    let error = host.fails(&[
        "image",
        "pull",
        "--insecure",
        &format!("127.0.0.1:{}/test/absent:v1", registry.port),
    ]);
    assert!(error.contains("pulling"), "{error}");
    assert_eq!(
        host.ok(&["image", "ls"]).lines().count(),
        2,
        "only the pulled image"
    );

    // The same image as a docker-save archive (skopeo writes the docker format) loads too.
    let archive = host.dir.join("docker-save.tar");
    run_tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{image}"),
            &format!("docker-archive:{}:saved/busybox:v2", archive.display()),
        ],
    );
    let loaded = host.ok(&["image", "load", "-i", archive.to_str().unwrap_or_default()]);
    assert!(loaded.contains("saved/busybox:v2"), "{loaded}");
    assert_eq!(
        host.ok(&["container", "run", "--rm", "saved/busybox:v2"]),
        "pulled\n"
    );
}

/// Talks to a test daemon over gRPC directly, for what the CLI does not expose.
fn grpc_client(
    host: &TestHost,
) -> (
    tokio::runtime::Runtime,
    shoal_proto::engine::engine_client::EngineClient<tonic::transport::Channel>,
) {
    let (runtime, channel) = support::daemon_channel(&host.dir.join("s.sock"));
    (
        runtime,
        shoal_proto::engine::engine_client::EngineClient::new(channel),
    )
}

/// Creates and starts a container through the engine API and waits for it to exit; its id.
fn run_to_exit(
    runtime: &tokio::runtime::Runtime,
    client: &mut shoal_proto::engine::engine_client::EngineClient<tonic::transport::Channel>,
    spec: shoal_proto::engine::ContainerSpec,
) -> String {
    use shoal_proto::engine as pb;
    runtime.block_on(async {
        let id = client
            .create_container(spec)
            .await
            .expect("create")
            .into_inner()
            .id;
        client
            .start_container(pb::ContainerRef { id: id.clone() })
            .await
            .expect("start");
        client
            .wait_container(pb::ContainerRef { id: id.clone() })
            .await
            .expect("wait");
        id
    })
}

#[test]
fn file_mounts_live_in_memory_only() {
    use shoal_proto::engine as pb;
    let Some(host) = TestHost::start("files") else {
        return;
    };
    host.import_busybox();
    let (runtime, mut client) = grpc_client(&host);
    let secret = format!("s3cr3t-{}", std::process::id());
    let spec = pb::ContainerSpec {
        image: "busybox:test".into(),
        command: vec!["sh".into(), "-c".into(), "cat /run/secrets/token; echo; stat -c %a /run/secrets/token; echo x > /run/secrets/token || echo read-only".into()],
        mounts: vec![pb::Mount {
            r#type: pb::mount::Type::File as i32,
            target: "/run/secrets/token".into(),
            contents: secret.clone().into_bytes(),
            mode: 0o400,
            ..Default::default()
        }],
        ..Default::default()
    };
    let id = run_to_exit(&runtime, &mut client, spec);
    let logs = host.ok(&["container", "logs", &id]);
    assert!(logs.starts_with(&format!("{secret}\n400\n")), "{logs}");
    assert!(logs.contains("read-only"), "{logs}");
    // Nothing under the data root holds the secret except the log the container itself wrote.
    let found = Command::new("grep")
        .args(["-rl", &secret])
        .arg(host.data())
        .output()
        .expect("grep");
    let files = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        files.lines().all(|f| f.ends_with("container.log")),
        "secret written to disk: {files}"
    );
    host.ok(&["container", "rm", &id]);
    host.assert_clean(&id, None);
}

/// Twelve file mounts of 500 KiB (more than the fixed 4 MiB tmpfs there was) all reach the
/// container whole.
#[test]
fn file_mounts_over_4_mib_in_all_fit_in_their_tmpfs() {
    use shoal_proto::engine as pb;
    let Some(host) = TestHost::start("big-files") else {
        return;
    };
    host.import_busybox();
    let (runtime, mut client) = grpc_client(&host);
    let mounts = (0..12u8)
        .map(|index| pb::Mount {
            r#type: pb::mount::Type::File as i32,
            target: format!("/run/secrets/s{index}"),
            contents: vec![b'a' + index; 500 * 1024],
            mode: 0o400,
            ..Default::default()
        })
        .collect();
    let spec = pb::ContainerSpec {
        image: "busybox:test".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "cat /run/secrets/s* | wc -c".into(),
        ],
        mounts,
        ..Default::default()
    };
    let id = run_to_exit(&runtime, &mut client, spec);
    let logs = host.ok(&["container", "logs", &id]);
    assert_eq!(logs.trim(), (12 * 500 * 1024).to_string(), "{logs}");
    host.ok(&["container", "rm", &id]);
    host.assert_clean(&id, None);
}

#[test]
fn limits_and_loopback_are_visible_inside() {
    let Some(host) = TestHost::start("limits") else {
        return;
    };
    host.import_busybox();
    for runtime in runtimes() {
        let script = "cat /sys/class/net/lo/operstate; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok; \
                      cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max";
        let output = host.ok(&run_args(
            runtime,
            &[
                "--rm",
                "--cpus",
                "0.5",
                "--memory",
                "32m",
                "--pids-limit",
                "50",
                "busybox:test",
                "sh",
                "-c",
                script,
            ],
        ));
        // `lo` reads "unknown" when up (it has no carrier state) and "down" otherwise.
        assert_eq!(
            output, "unknown\nping-ok\n50000\n33554432\n50\n",
            "{runtime:?}"
        );
    }
}

#[test]
fn groups_capabilities_ulimits_and_sysctls_apply_inside() {
    let Some(host) = TestHost::start("caps") else {
        return;
    };
    host.import_busybox();
    for runtime in runtimes() {
        let script = "grep CapEff /proc/self/status; ulimit -n; ulimit -H -n; cat /proc/sys/net/core/somaxconn; id -G";
        let output = host.ok(&run_args(
            runtime,
            &[
                "--rm",
                "--cap-add",
                "net_admin",
                "--cap-drop",
                "NET_RAW",
                "--ulimit",
                "nofile=1024:2048",
                "--sysctl",
                "net.core.somaxconn=512",
                "--group-add",
                "4242",
                "busybox:test",
                "sh",
                "-c",
                script,
            ],
        ));
        // Docker's default set is a80425fb; NET_RAW (bit 13) dropped, NET_ADMIN (bit 12) added.
        assert_eq!(
            output, "CapEff:\t00000000a80415fb\n1024\n2048\n512\n0 4242\n",
            "{runtime:?}"
        );
    }
    let host_wide = host.fails(&[
        "container",
        "run",
        "--rm",
        "--sysctl",
        "vm.swappiness=1",
        "busybox:test",
        "true",
    ]);
    assert!(
        host_wide.contains("vm.swappiness is not namespaced"),
        "{host_wide}"
    );
    let unknown = host.fails(&[
        "container",
        "run",
        "--rm",
        "--cap-add",
        "FLY",
        "busybox:test",
        "true",
    ]);
    assert!(
        unknown.contains("\"FLY\" is not a Linux capability"),
        "{unknown}"
    );
    let no_group = host.fails(&[
        "container",
        "run",
        "--rm",
        "--group-add",
        "wheel",
        "busybox:test",
        "true",
    ]);
    assert!(
        no_group.contains("\"wheel\" is not in the image's /etc/group"),
        "{no_group}"
    );
}
