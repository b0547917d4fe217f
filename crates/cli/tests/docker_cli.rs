//! End-to-end tests of the Docker Engine API: the stock docker CLI (28.2, a client only) drives
//! a shoal swarm of test hosts through each node's Docker socket, unchanged. Each scenario
//! builds its own hosts with the `shoal-tests` harness, which removes them afterwards, even when
//! the test fails.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{ClusterOptions, DOCKER_CLI, TestCluster, TestHost, skip, wait_until};

/// How long a cluster may take to reach the state a test waits for.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// A cluster of `hosts` hosts with the busybox image, or `None` (skipped) where the machine
/// can't run one or has no docker CLI.
fn hosts(test_name: &str, hosts: usize) -> Option<TestCluster> {
    if !Path::new(DOCKER_CLI).exists() {
        skip(
            test_name,
            &format!("{DOCKER_CLI} missing: the docker CLI 28 these tests drive"),
        );
        return None;
    }
    let cluster = TestCluster::start_or_skip(test_name, ClusterOptions::new(hosts))?;
    for host in cluster.hosts() {
        host.import_busybox();
    }
    Some(cluster)
}

fn stdout_and_stderr(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `docker … --format '{{json .}}'` lines as JSON objects.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// One raw HTTP/1.1 request on `host`'s Docker socket: the status code and the body.
fn http(host: &TestHost, method: &str, path: &str, body: &str) -> (u16, String) {
    let socket = host.docker_host();
    let socket = socket.trim_start_matches("unix://");
    let mut stream = UnixStream::connect(socket).expect("connecting to the Docker socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writing the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the answer");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// The docker CLI forms the swarm, reads and changes its nodes, and takes it apart again; a
/// worker refuses swarm calls as Docker does.
#[test]
fn the_docker_cli_forms_changes_and_leaves_a_swarm() {
    let Some(cluster) = hosts("docker_cli_swarm", 3) else {
        return;
    };
    let (h1, h2, h3) = (cluster.host(1), cluster.host(2), cluster.host(3));
    let said = h1.docker_ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        &h1.address().to_string(),
    ]);
    assert!(said.contains("Swarm initialized: current node ("), "{said}");
    assert!(
        said.contains("docker swarm join --token SWMTKN-1-"),
        "{said}"
    );
    let worker_token = h1
        .docker_ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_owned();
    let manager_token = h1
        .docker_ok(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_owned();
    assert!(worker_token.starts_with("SWMTKN-1-"), "{worker_token}");
    let manager = format!("{}:2377", h1.address());
    let said = h2.docker_ok(&[
        "swarm",
        "join",
        "--token",
        &worker_token,
        "--advertise-addr",
        &h2.address().to_string(),
        &manager,
    ]);
    assert!(
        said.contains("This node joined a swarm as a worker."),
        "{said}"
    );
    let said = h3.docker_ok(&[
        "swarm",
        "join",
        "--token",
        &manager_token,
        "--advertise-addr",
        &h3.address().to_string(),
        &manager,
    ]);
    assert!(
        said.contains("This node joined a swarm as a manager."),
        "{said}"
    );

    let nodes = wait_until(
        "three ready nodes in docker node ls",
        CONVERGE_TIMEOUT,
        || {
            let nodes = json_lines(&h1.docker_ok(&["node", "ls", "--format", "{{json .}}"]));
            let ready = nodes.iter().filter(|n| n["Status"] == "Ready").count();
            if ready == 3 {
                Ok(nodes)
            } else {
                Err(format!("{nodes:?}"))
            }
        },
    );
    let hostname = |n: &Value| n["Hostname"].as_str().unwrap_or_default().to_owned();
    let me = nodes
        .iter()
        .find(|n| n["Self"] == true)
        .expect("node ls marks this node");
    assert_eq!(hostname(me), h1.name());
    assert_eq!(me["ManagerStatus"], "Leader");
    let worker = nodes
        .iter()
        .find(|n| hostname(n) == h2.name())
        .expect("h2 in node ls");
    assert_eq!(worker["ManagerStatus"], "");
    assert_eq!(worker["Availability"], "Active");

    // Changes through the docker CLI show in docker's and shoal's views alike.
    h1.docker_ok(&[
        "node",
        "update",
        "--label-add",
        "zone=a",
        "--availability",
        "drain",
        h2.name(),
    ]);
    let inspected: Value = serde_json::from_str(&h1.docker_ok(&["node", "inspect", h2.name()]))
        .expect("node inspect JSON");
    assert_eq!(inspected[0]["Spec"]["Labels"]["zone"], "a");
    assert_eq!(inspected[0]["Spec"]["Availability"], "drain");
    assert_eq!(inspected[0]["Description"]["Hostname"], h2.name());
    // The swarm's settings and tokens through docker swarm update and join-token --rotate.
    h1.docker_ok(&["swarm", "update", "--task-history-limit", "2"]);
    let limit = h1.docker_ok(&[
        "info",
        "--format",
        "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}",
    ]);
    assert_eq!(limit.trim(), "2");
    h1.docker_ok(&["swarm", "join-token", "--rotate", "worker"]);
    let rotated = h1.docker_ok(&["swarm", "join-token", "-q", "worker"]);
    assert_ne!(
        rotated.trim(),
        worker_token,
        "join-token --rotate gave a new token"
    );
    let filtered = h1.docker_ok(&["node", "ls", "--filter", "node.label=zone=a", "-q"]);
    assert_eq!(filtered.lines().count(), 1, "{filtered}");

    // A worker's socket answers node-local calls and refuses swarm calls in Docker's words.
    let info = h2.docker_ok(&["info", "--format", "{{json .Swarm}}"]);
    let swarm: Value = serde_json::from_str(&info).expect("info's Swarm section");
    assert_eq!(swarm["LocalNodeState"], "active");
    assert_eq!(swarm["ControlAvailable"], false);
    let output = h2.docker(&["service", "ls"]);
    let said = stdout_and_stderr(&output);
    assert!(
        !output.status.success() && said.contains("This node is not a swarm manager."),
        "{said}"
    );
    let (status, body) = http(h2, "GET", "/v1.51/services", "");
    assert_eq!(status, 503, "{body}");

    // Promotion and demotion: h2 becomes a manager, h3 a worker.
    h1.docker_ok(&["node", "promote", h2.name()]);
    // Reachable, not only promoted: a demotion counts the reachable managers.
    wait_until("h2 a reachable manager", CONVERGE_TIMEOUT, || {
        let status = h1.docker_ok(&[
            "node",
            "inspect",
            "--format",
            "{{.Spec.Role}} {{if .ManagerStatus}}{{.ManagerStatus.Reachability}}{{end}}",
            h2.name(),
        ]);
        if status.trim() == "manager reachable" {
            Ok(())
        } else {
            Err(format!("{status}\n{}", h2.daemon_log_tail(15)))
        }
    });
    let role_of = |host: &TestHost| {
        h1.docker_ok(&["node", "inspect", "--format", "{{.Spec.Role}}", host.name()])
            .trim()
            .to_owned()
    };
    h1.docker_ok(&["node", "demote", h3.name()]);
    wait_until("h3 a worker", CONVERGE_TIMEOUT, || match role_of(h3) {
        role if role == "worker" => Ok(()),
        role => Err(role),
    });

    // Leaving: h3 leaves, and h1 removes it once it is down.
    wait_until("h3 leaves", CONVERGE_TIMEOUT, || {
        let output = h3.docker(&["swarm", "leave"]);
        if output.status.success() {
            Ok(())
        } else {
            Err(stdout_and_stderr(&output))
        }
    });
    wait_until("h3 down", CONVERGE_TIMEOUT, || {
        let status = h1.docker_ok(&[
            "node",
            "inspect",
            "--format",
            "{{.Status.State}}",
            h3.name(),
        ]);
        if status.trim() == "down" {
            Ok(())
        } else {
            Err(status)
        }
    });
    h1.docker_ok(&["node", "rm", h3.name()]);
    let left = h1.docker_ok(&["node", "ls", "-q"]);
    assert_eq!(left.lines().count(), 2, "{left}");
    let info: Value = serde_json::from_str(&h3.docker_ok(&["info", "--format", "{{json .Swarm}}"]))
        .expect("info JSON");
    assert_eq!(info["LocalNodeState"], "inactive");
}

/// Bad input gets Docker's status code and a message, and nothing is written.
#[test]
fn bad_requests_get_docker_s_codes_and_change_nothing() {
    let Some(cluster) = hosts("docker_cli_bad_input", 1) else {
        return;
    };
    let h1 = cluster.host(1);
    h1.docker_ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        &h1.address().to_string(),
    ]);
    let (status, body) = http(h1, "GET", "/v1.99/info", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("client version 1.99 is too new"), "{body}");
    let (status, body) = http(h1, "GET", "/v1.51/nothing/here", "");
    assert_eq!(
        (status, body.trim()),
        (404, r#"{"message":"page not found"}"#)
    );
    let (status, body) = http(h1, "POST", "/v1.51/services/create", "{not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        h1,
        "POST",
        "/v1.51/services/create",
        r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox","Env":"A=B"}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Env"), "the error names the field: {body}");
    let (status, body) = http(h1, "GET", "/v1.51/services/nope", "");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(
        h1,
        "GET",
        "/v1.51/nodes?filters=%7B%22colour%22%3A%7B%22red%22%3Atrue%7D%7D",
        "",
    );
    assert_eq!(
        (status, body.trim()),
        (400, r#"{"message":"invalid filter 'colour'"}"#)
    );
    assert_eq!(
        h1.docker_ok(&["service", "ls", "-q"]).trim(),
        "",
        "a refused create wrote nothing"
    );

    // An update at a stale version is Docker's 500 "update out of sequence", and changes nothing.
    h1.docker_ok(&[
        "service",
        "create",
        "--no-resolve-image",
        "-d",
        "--name",
        "web",
        "busybox",
        "sleep",
        "3600",
    ]);
    let service: Value =
        serde_json::from_str(&h1.docker_ok(&["service", "inspect", "web"])).expect("service JSON");
    let version = service[0]["Version"]["Index"].as_u64().expect("a version");
    let mut spec = service[0]["Spec"].clone();
    spec["Labels"] = serde_json::json!({"first": "1"});
    let (status, body) = http(
        h1,
        "POST",
        &format!("/v1.51/services/web/update?version={version}"),
        &spec.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    spec["Labels"] = serde_json::json!({"stale": "1"});
    let (status, body) = http(
        h1,
        "POST",
        &format!("/v1.51/services/web/update?version={version}"),
        &spec.to_string(),
    );
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("update out of sequence"), "{body}");
    let labels = h1.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Labels}}",
        "web",
    ]);
    assert_eq!(labels.trim(), r#"{"first":"1"}"#);
}

/// `line` run by `sh` under `script`, which gives it a pseudo-terminal of 30 rows and 100
/// columns as stdin and stdout (the docker CLI's `-it` wants one), `input` typed into that
/// terminal, and `base`'s environment (the docker CLI's socket and config).
fn under_a_terminal(
    base: &std::process::Command,
    line: &str,
    input: &[u8],
) -> std::process::Output {
    let mut script = std::process::Command::new("script");
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    script.args([
        "-qec",
        &format!("stty rows 30 cols 100; {line}"),
        "/dev/null",
    ]);
    shoal_tests::run_with_input(&mut script, input, Duration::from_secs(60))
        .unwrap_or_else(|error| panic!("{line}: {error}"))
}

/// Exec into running task container `id` on `host` with what the docker CLI sends besides a
/// command: stdin piped through `-i` and ended, `-e`, `-w` and `-u`; `--privileged` refused
/// with why; and `-it`, under a terminal, from the docker CLI and from shoal's own: a terminal
/// inside the container, sized as the client's, typed into, and the command's exit code.
fn exec_with_input_options_and_a_terminal(host: &TestHost, id: &str) {
    let piped = shoal_tests::run_with_input(
        &mut host.docker_command(&["exec", "-i", id, "sh", "-c", "cat; echo end"]),
        b"piped in\n",
        Duration::from_secs(60),
    )
    .expect("docker exec -i");
    assert_eq!(
        piped.status.code(),
        Some(0),
        "{}",
        stdout_and_stderr(&piped)
    );
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "piped in\nend\n");
    let options = host.docker_ok(&[
        "exec",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        id,
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u)",
    ]);
    assert_eq!(options.trim(), "bar /tmp 65534");
    let privileged = host.docker(&["exec", "--privileged", id, "true"]);
    assert!(
        String::from_utf8_lossy(&privileged.stderr).contains("leave out --privileged"),
        "{}",
        stdout_and_stderr(&privileged)
    );
    if !Path::new("/usr/bin/script").exists() {
        skip(
            "docker exec -it",
            "`script` missing: it gives the docker CLI a terminal (apt-get install util-linux)",
        );
        return;
    }
    let session = "sh -c 'tty; stty size; read line; echo got $line; exit 3'";
    let docker = under_a_terminal(
        &host.docker_command(&[]),
        &format!("{DOCKER_CLI} exec -it {id} {session}"),
        b"typed\n",
    );
    let said = stdout_and_stderr(&docker);
    assert_eq!(docker.status.code(), Some(3), "{said}");
    assert!(said.contains("/dev/pts/"), "no terminal inside: {said}");
    assert!(said.contains("30 100"), "not the client's size: {said}");
    assert!(said.contains("got typed"), "input did not arrive: {said}");
    let shoal = under_a_terminal(
        &host.docker_command(&[]),
        &format!(
            "{} -H {} container exec -it {id} {session}",
            shoal_tests::default_shoal_binary().display(),
            host.host_url()
        ),
        b"typed\n",
    );
    let said = stdout_and_stderr(&shoal);
    assert_eq!(shoal.status.code(), Some(3), "{said}");
    assert!(
        said.contains("/dev/pts/") && said.contains("30 100") && said.contains("got typed"),
        "shoal container exec -it: {said}"
    );
}

/// A service's life through the docker CLI: create with its progress display, list, ps, inspect,
/// scale, update, rollback, logs and rm; shoal's own CLI sees the same service.
#[test]
fn the_docker_cli_runs_a_service_from_create_to_rm() {
    let Some(cluster) = hosts("docker_cli_service", 2) else {
        return;
    };
    let (h1, h2) = (cluster.host(1), cluster.host(2));
    cluster.form_swarm(1, 1);
    // Without -d: the docker CLI follows the progress until the service converges.
    let said = stdout_and_stderr(&h1.docker(&[
        "service",
        "create",
        "--no-resolve-image",
        "--name",
        "web",
        "--replicas",
        "3",
        // Under an init, `sleep` stops on SIGTERM: the updates below need not wait out the
        // grace period.
        "--init",
        "busybox",
        "sh",
        "-c",
        "echo hello from $(hostname); exec sleep 3600",
    ]));
    assert!(
        said.contains("Service web converged") || said.contains("verify: Service"),
        "{said}"
    );
    let services = json_lines(&h1.docker_ok(&["service", "ls", "--format", "{{json .}}"]));
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(services[0]["Name"], "web");
    assert_eq!(services[0]["Mode"], "replicated");
    assert_eq!(services[0]["Replicas"], "3/3");
    // The docker CLI names the image in full; it could not pin a digest (no registry).
    assert_eq!(services[0]["Image"], "busybox:latest");
    let tasks = json_lines(&h1.docker_ok(&["service", "ps", "web", "--format", "{{json .}}"]));
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    for task in &tasks {
        assert_eq!(task["DesiredState"], "Running");
        assert!(
            task["CurrentState"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Running"),
            "{task}"
        );
        assert!(
            task["Name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("web."),
            "{task}"
        );
    }
    let nodes: std::collections::BTreeSet<&str> =
        tasks.iter().filter_map(|t| t["Node"].as_str()).collect();
    assert!(
        nodes.contains(h1.name()) && nodes.contains(h2.name()),
        "spread over both nodes: {nodes:?}"
    );
    let shoal_ls = h1.shoal_ok(&["service", "ls", "--format", "json"]);
    assert!(
        shoal_ls.contains("\"3/3\""),
        "shoal sees the same service: {shoal_ls}"
    );

    // On the worker, its own socket shows, logs, inspects and execs into the task's containers.
    let containers = json_lines(&h2.docker_ok(&["ps", "--format", "{{json .}}"]));
    let task_container = containers
        .iter()
        .find(|c| c["Names"].as_str().is_some_and(|n| n.starts_with("web.")))
        .unwrap_or_else(|| panic!("no task container in docker ps on the worker: {containers:?}"));
    let id = task_container["ID"]
        .as_str()
        .expect("a container id")
        .to_owned();
    assert!(
        task_container["Status"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Up "),
        "{task_container}"
    );
    let logs = h2.docker_ok(&["logs", &id]);
    assert!(logs.starts_with("hello from "), "{logs}");
    let running = h2.docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.Config.Image}}",
        &id,
    ]);
    assert_eq!(running.trim(), "true busybox:latest");
    let exec = h2.docker(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo in $(hostname); echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(exec.status.code(), Some(3), "{}", stdout_and_stderr(&exec));
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        logs.trim().replace("hello from", "in")
    );
    assert_eq!(String::from_utf8_lossy(&exec.stderr).trim(), "to-stderr");
    let shoal_exec = h2.shoal(&["container", "exec", &id, "sh", "-c", "exit 5"]);
    assert_eq!(
        shoal_exec.status.code(),
        Some(5),
        "shoal's exec takes the same path"
    );
    exec_with_input_options_and_a_terminal(h2, &id);
    let images = h2.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.lines().any(|l| l == "busybox:latest"), "{images}");

    // scale, update and rollback, each waiting for convergence as the docker CLI does.
    h1.docker_ok(&["service", "scale", "web=1"]);
    assert_eq!(
        h1.docker_ok(&["service", "ls", "--format", "{{.Replicas}}"])
            .trim(),
        "1/1"
    );
    h1.docker_ok(&[
        "service",
        "update",
        "--no-resolve-image",
        "--env-add",
        "COLOUR=blue",
        "web",
    ]);
    let env = h1.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        "web",
    ]);
    assert_eq!(env.trim(), r#"["COLOUR=blue"]"#);
    h1.docker_ok(&["service", "rollback", "web"]);
    let env = h1.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        "web",
    ]);
    assert_eq!(env.trim(), "null", "rolled back to no environment");

    // logs: every task's output, with docker's task prefix.
    let logs = wait_until("the service's logs", CONVERGE_TIMEOUT, || {
        let logs = stdout_and_stderr(&h1.docker(&["service", "logs", "web"]));
        if logs.contains("hello from") {
            Ok(logs)
        } else {
            Err(logs)
        }
    });
    // Docker's prefix: `web.SLOT.TASK@NODE    | `.
    assert!(
        logs.lines()
            .all(|l| l.starts_with("web.") && l.contains('@') && l.contains("    | hello from")),
        "{logs}"
    );

    // logs -f: output goes on arriving while the command follows, from the tasks there are
    // and from those that start later: started before its task runs, the follow shows it once
    // it does, and the task a scale-up adds.
    h1.docker_ok(&[
        "service",
        "create",
        "--no-resolve-image",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    ]);
    let mut follow = h1
        .docker_command(&["service", "logs", "-f", "ticker"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker service logs -f");
    let stdout = follow.stdout.take().expect("its stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    let ticks_of = |slot: &str, count: usize| -> Vec<String> {
        let mut ticks = Vec::new();
        while ticks.len() < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match received.recv_timeout(left) {
                Ok(line) if line.starts_with(slot) && line.contains("| tick ") => ticks.push(line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        ticks
    };
    let first = ticks_of("ticker.1.", 5);
    assert_eq!(
        first.len(),
        5,
        "logs -f did not follow the first task: {first:?}"
    );
    h1.docker_ok(&["service", "scale", "-d", "ticker=2"]);
    let added = ticks_of("ticker.2.", 5);
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        added.len(),
        5,
        "logs -f did not pick up the added task: {added:?}"
    );
    h1.docker_ok(&["service", "rm", "ticker"]);

    h1.docker_ok(&["service", "rm", "web"]);
    assert_eq!(h1.docker_ok(&["service", "ls", "-q"]).trim(), "");
    assert_eq!(h1.shoal_ok(&["service", "ls", "-q"]).trim(), "");
}

/// Secrets, configs and networks through the docker CLI.
#[test]
fn the_docker_cli_manages_secrets_configs_and_networks() {
    let Some(cluster) = hosts("docker_cli_objects", 1) else {
        return;
    };
    let h1 = cluster.host(1);
    h1.docker_ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        &h1.address().to_string(),
    ]);
    let secret_file = h1.dir().join("secret.txt");
    std::fs::write(&secret_file, "s3cret").expect("a secret file");
    let secret_file = secret_file.display().to_string();
    let id = h1.docker_ok(&[
        "secret",
        "create",
        "--label",
        "tier=db",
        "db_password",
        &secret_file,
    ]);
    assert!(!id.trim().is_empty());
    let secrets = json_lines(&h1.docker_ok(&["secret", "ls", "--format", "{{json .}}"]));
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["Name"], "db_password");
    let inspected: Value =
        serde_json::from_str(&h1.docker_ok(&["secret", "inspect", "db_password"]))
            .expect("secret JSON");
    assert_eq!(inspected[0]["Spec"]["Labels"]["tier"], "db");
    assert!(
        inspected[0]["Spec"].get("Data").is_none(),
        "a secret's data is never returned"
    );
    h1.docker_ok(&["config", "create", "site", &secret_file]);
    let data = h1.docker_ok(&[
        "config",
        "inspect",
        "--format",
        "{{json .Spec.Data}}",
        "site",
    ]);
    assert_eq!(data.trim(), "\"czNjcmV0\"", "a config's data, in base64");
    h1.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.77.0.0/24",
        "--attachable",
        "backend",
    ]);
    let networks = json_lines(&h1.docker_ok(&[
        "network",
        "ls",
        "--filter",
        "driver=overlay",
        "--format",
        "{{json .}}",
    ]));
    let backend = networks
        .iter()
        .find(|n| n["Name"] == "backend")
        .unwrap_or_else(|| panic!("{networks:?}"));
    assert_eq!(backend["Driver"], "overlay");
    assert_eq!(backend["Scope"], "swarm");
    let subnet = h1.docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{json .IPAM.Config}}",
        "backend",
    ]);
    assert!(subnet.contains("10.77.0.0/24"), "{subnet}");
    // In use: refused, naming the service.
    h1.docker_ok(&[
        "service",
        "create",
        "--no-resolve-image",
        "-d",
        "--name",
        "api",
        "--network",
        "backend",
        "--secret",
        "db_password",
        "busybox",
        "sleep",
        "3600",
    ]);
    let refused = stdout_and_stderr(&h1.docker(&["network", "rm", "backend"]));
    assert!(refused.contains("api"), "{refused}");
    let refused = stdout_and_stderr(&h1.docker(&["secret", "rm", "db_password"]));
    assert!(refused.contains("api"), "{refused}");
    h1.docker_ok(&["service", "rm", "api"]);
    h1.docker_ok(&["secret", "rm", "db_password"]);
    h1.docker_ok(&["config", "rm", "site"]);
    wait_until("the network free", CONVERGE_TIMEOUT, || {
        let output = h1.docker(&["network", "rm", "backend"]);
        if output.status.success() {
            Ok(())
        } else {
            Err(stdout_and_stderr(&output))
        }
    });
    assert_eq!(h1.docker_ok(&["secret", "ls", "-q"]).trim(), "");
}
