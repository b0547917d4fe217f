//! The stock docker CLI (28.2) against shoal beside Docker Swarm 20.10 (Debian's `docker.io`)
//! run on this machine: `docker stack deploy|ls|ps|services|rm` of the compose fixtures through a
//! shoal node's Docker socket (the CLI parses the compose files itself and makes the network,
//! secret, config and service calls, with the stack's labels and label filters, so this tests
//! the API and not shoal's compose crate), and the same commands on the same state against a
//! shoal node and against a dockerd, their JSON compared on every field that depends on neither
//! ids nor times. Each scenario builds its own hosts, in parallel; the harness removes them, and
//! the dockerds, also when a test fails. These tests need root; they skip with a message
//! without it, or fail where every test must run (`SHOAL_REQUIRE_ALL_TESTS`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::docker::{self, DockerSwarm};
use shoal_tests::{
    ClusterOptions, DOCKER_CLI, TestCluster, TestHost, output_text, run_with_timeout, skip,
    wait_until,
};

/// How long a cluster may take to reach the state a test waits for.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one docker CLI call may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The label the docker CLI puts on everything of a stack, and lists a stack's objects by.
const STACK_LABEL: &str = "com.docker.stack.namespace";
/// The compose fixtures (the repository's copy of the shared ones, which the compose crate's
/// tests keep equal).
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../compose/tests/fixtures/compose"
);
/// The images `voting.yml` names: the busybox test image is imported (or tagged) under each,
/// since no registry is reachable.
const VOTING_IMAGES: [&str; 5] = [
    "local/cache:1",
    "local/store:1",
    "local/ballot:1",
    "local/tally:1",
    "local/counter:1",
];
/// The images `monitoring.yml` and `secrets-deps.yml` name, imported likewise.
const OTHER_FIXTURE_IMAGES: [&str; 5] = [
    "local/agent:2.1",
    "local/collector:1",
    "local/tools:1",
    "local/web:1",
    "local/api:1",
];
/// A task command that stops at once on SIGTERM, so removals do not wait out a grace period.
const TASK_COMMAND: [&str; 3] = ["sh", "-c", "trap exit TERM; while :; do sleep 1; done"];

/// Whether the docker CLI these tests drive is here; skips `test_name` when not.
fn docker_cli_present(test_name: &str) -> bool {
    if Path::new(DOCKER_CLI).exists() {
        return true;
    }
    skip(
        test_name,
        &format!("{DOCKER_CLI} missing: the docker CLI 28 these tests drive"),
    );
    false
}

/// A cluster of `hosts` hosts with the busybox image under `images`, formed into a swarm with
/// one manager (h1), or `None` (skipped) where the machine can't run one.
fn swarm(test_name: &str, hosts: usize, images: &[&str]) -> Option<TestCluster> {
    let cluster = TestCluster::start_or_skip(test_name, ClusterOptions::new(hosts))?;
    std::thread::scope(|scope| {
        for host in cluster.hosts() {
            scope.spawn(|| {
                for image in images {
                    host.import_busybox_as(image);
                }
            });
        }
    });
    cluster.form_swarm(1, hosts - 1);
    Some(cluster)
}

/// `docker … --format '{{json .}}'` lines as JSON objects.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

fn stdout_and_stderr(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The fixtures a test deploys, copied into `dir` with what the test image needs: busybox's
/// httpd exits when its home directory is missing, and the test image has no `/www`. Returns
/// the directory.
fn copy_fixtures(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("the stacks' directory");
    for name in [
        "voting.yml",
        "monitoring.yml",
        "secrets-deps.yml",
        "collector.conf",
        "api_token.txt",
        "settings.ini",
    ] {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(name))
            .unwrap_or_else(|error| panic!("{FIXTURES}/{name}: {error}"));
        std::fs::write(dir.join(name), text.replace("\"/www\"", "\"/tmp\""))
            .unwrap_or_else(|error| panic!("copying {name}: {error}"));
    }
    dir.to_owned()
}

/// The REPLICAS column of `docker stack services NAME`, by service.
fn stack_replicas(manager: &TestHost, stack: &str) -> BTreeMap<String, String> {
    json_lines(&manager.docker_ok(&["stack", "services", stack, "--format", "{{json .}}"]))
        .into_iter()
        .map(|service| (text(&service, "Name"), text(&service, "Replicas")))
        .collect()
}

/// Names of what `docker KIND ls` lists with the label of a stack (`stack` none: of any stack).
fn labelled(manager: &TestHost, kind: &str, stack: Option<&str>) -> BTreeSet<String> {
    let filter = match stack {
        Some(stack) => format!("label={STACK_LABEL}={stack}"),
        None => format!("label={STACK_LABEL}"),
    };
    manager
        .docker_ok(&[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// `docker stack deploy` of the fixtures (voting: two networks and published ports, one from
/// the manager's range; monitoring: a global service with a host-mode port, a config and a
/// replicated job; secrets-deps: a file secret, an external one, a config and healthchecks),
/// then `stack ls`, `stack services` until every service converges, a second deploy that
/// changes nothing, `stack ps`, and `stack rm`, after which nothing with a stack's label is
/// left.
#[test]
fn the_docker_cli_deploys_lists_and_removes_the_fixture_stacks() {
    const TEST: &str = "docker_compare_stacks";
    if !docker_cli_present(TEST) {
        return;
    }
    // Two nodes: the collector allows one replica per node, and the agent is global.
    let images: Vec<&str> = VOTING_IMAGES
        .into_iter()
        .chain(OTHER_FIXTURE_IMAGES)
        .collect();
    let Some(cluster) = swarm(TEST, 2, &images) else {
        return;
    };
    let manager = cluster.host(1);
    let dir = copy_fixtures(&cluster.dir().join("stacks"));
    let file = |name: &str| dir.join(name).display().to_string();

    // The docker CLI's own loader refuses the Compose Specification's long `depends_on`, before
    // it calls the API at all.
    let refused = manager.docker(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file("secrets-deps.yml"),
        "deps",
    ]);
    assert!(
        !refused.status.success()
            && stdout_and_stderr(&refused).contains("services.web.depends_on must be a list"),
        "{}",
        output_text(&refused)
    );
    assert_eq!(
        manager
            .docker_ok(&["stack", "ls", "--format", "{{.Name}}"])
            .trim(),
        ""
    );
    // The same stack with the short form, which the docker CLI drops (Swarm has no such field).
    let secrets_deps =
        std::fs::read_to_string(file("secrets-deps.yml")).expect("the copied fixture");
    let long_form = "    depends_on:\n      api:\n        condition: service_healthy\n";
    assert!(secrets_deps.contains(long_form), "{secrets_deps}");
    std::fs::write(
        file("secrets-deps-short.yml"),
        secrets_deps.replace(long_form, "    depends_on: [api]\n"),
    )
    .expect("the short-form copy");
    // The external secret the fixture names, made beforehand as its user would.
    manager.docker_ok(&["secret", "create", "tls_key", &file("api_token.txt")]);

    let deployed = manager.docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file("voting.yml"),
        "vote",
    ]);
    for line in [
        "Creating network vote_front",
        "Creating network vote_back",
        "Creating service vote_ballot",
        "Creating service vote_store",
    ] {
        assert!(deployed.contains(line), "{line:?} in {deployed}");
    }
    let deployed = manager.docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file("monitoring.yml"),
        "mon",
    ]);
    assert!(
        deployed.contains("Creating config mon_collector_conf"),
        "{deployed}"
    );
    let deployed = manager.docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file("secrets-deps-short.yml"),
        "deps",
    ]);
    for line in [
        "Creating secret deps_api_token",
        "Creating config deps_api_settings",
        "Creating service deps_api",
    ] {
        assert!(deployed.contains(line), "{line:?} in {deployed}");
    }
    // Deployed again, the docker CLI updates the secret and config that exist (their labels
    // only, as Docker allows) and then the services.
    let redeployed = manager.docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file("secrets-deps-short.yml"),
        "deps",
    ]);
    assert!(
        redeployed.contains("Updating service deps_api"),
        "{redeployed}"
    );

    let stacks: BTreeMap<String, String> =
        json_lines(&manager.docker_ok(&["stack", "ls", "--format", "{{json .}}"]))
            .iter()
            .map(|stack| (text(stack, "Name"), text(stack, "Services")))
            .collect();
    assert_eq!(
        stacks,
        [("deps", "2"), ("mon", "3"), ("vote", "5")]
            .map(|(name, count)| (name.to_owned(), count.to_owned()))
            .into(),
    );

    // REPLICAS once every service has converged, from `GET /services?status=true`.
    let expected: [(&str, &[(&str, &str)]); 3] = [
        (
            "vote",
            &[
                ("vote_ballot", "2/2"),
                ("vote_cache", "2/2"),
                ("vote_counter", "1/1"),
                ("vote_store", "1/1"),
                ("vote_tally", "2/2"),
            ],
        ),
        (
            "mon",
            &[
                ("mon_collector", "2/2 (max 1 per node)"),
                ("mon_node-agent", "2/2"),
                ("mon_schema-setup", "0/2 (2/2 completed)"),
            ],
        ),
        ("deps", &[("deps_api", "3/3"), ("deps_web", "2/2")]),
    ];
    wait_until("every stack service converged", CONVERGE_TIMEOUT, || {
        let mut seen = Vec::new();
        let mut converged = true;
        for (stack, services) in expected {
            let replicas = stack_replicas(manager, stack);
            for (service, want) in services {
                converged &= replicas.get(*service).map(String::as_str) == Some(*want);
            }
            seen.push(replicas);
        }
        if converged {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });

    // Deploying the same file again updates every service with the spec converted from the
    // file once more, and the stored specs stay as they were: what went in through Docker's
    // JSON comes out the same, so there is nothing to roll out.
    let vote_specs = || -> Vec<Value> {
        let services = manager.docker_ok(&[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label={STACK_LABEL}=vote"),
        ]);
        let mut args = vec!["service", "inspect", "--format", "{{json .Spec}}"];
        args.extend(services.lines());
        json_lines(&manager.docker_ok(&args))
    };
    let before = vote_specs();
    let redeployed = manager.docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file("voting.yml"),
        "vote",
    ]);
    assert_eq!(
        redeployed
            .lines()
            .filter(|line| line.starts_with("Updating service"))
            .count(),
        5,
        "{redeployed}"
    );
    assert_eq!(vote_specs(), before);

    // Published ports as the docker CLI lists them; a port without a published one got one of
    // the manager's range, as Swarm gives it.
    let ports: BTreeMap<String, String> = json_lines(&manager.docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("label={STACK_LABEL}"),
        "--format",
        "{{json .}}",
    ]))
    .iter()
    .map(|service| (text(service, "Name"), text(service, "Ports")))
    .collect();
    assert_eq!(ports["vote_ballot"], "*:15000->80/tcp");
    assert_eq!(ports["vote_tally"], "*:15001->80/tcp");
    assert_eq!(ports["mon_collector"], "*:19090->9090/tcp");
    assert_eq!(ports["deps_web"], "*:18000->8000/tcp");
    // A host-mode port is not the routing mesh's: `service ls` shows only those.
    assert_eq!(ports["mon_node-agent"], "");
    let cache_port: u16 = ports["vote_cache"]
        .strip_prefix("*:")
        .and_then(|rest| rest.strip_suffix("->6379/tcp"))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("vote_cache's port: {:?}", ports["vote_cache"]));
    assert!((30000..=32767).contains(&cache_port), "{cache_port}");

    // `stack ps` lists a stack's tasks by the stack's label on their services; mon's, a global
    // service's and a job's, are named and checked apart.
    for (stack, services) in expected.into_iter().filter(|(stack, _)| *stack != "mon") {
        let tasks = json_lines(&manager.docker_ok(&[
            "stack",
            "ps",
            stack,
            "--filter",
            "desired-state=running",
            "--format",
            "{{json .}}",
        ]));
        let mut want: Vec<String> = services
            .iter()
            .flat_map(|(service, replicas)| {
                let count: usize = replicas
                    .split('/')
                    .next()
                    .and_then(|count| count.parse().ok())
                    .expect("a replica count");
                (1..=count).map(move |slot| format!("{service}.{slot}"))
            })
            .collect();
        want.sort();
        let mut seen: Vec<String> = tasks.iter().map(|task| text(task, "Name")).collect();
        seen.sort();
        assert_eq!(seen, want, "{tasks:?}");
        for task in &tasks {
            assert_eq!(task["DesiredState"], "Running", "{task}");
            assert!(text(task, "CurrentState").starts_with("Running"), "{task}");
        }
    }
    let tasks = json_lines(&manager.docker_ok(&["stack", "ps", "mon", "--format", "{{json .}}"]));
    let with_state = |prefix: &str, desired: &str, current: &str| {
        tasks
            .iter()
            .filter(|task| {
                text(task, "Name").starts_with(prefix)
                    && task["DesiredState"] == desired
                    && text(task, "CurrentState").starts_with(current)
            })
            .count()
    };
    // Global tasks are named after their node, as Swarm names them.
    let nodes: BTreeSet<String> = manager
        .docker_ok(&["node", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    let agent_nodes: BTreeSet<String> = tasks
        .iter()
        .filter_map(|task| {
            text(task, "Name")
                .strip_prefix("mon_node-agent.")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(agent_nodes, nodes, "{tasks:?}");
    assert_eq!(
        with_state("mon_node-agent.", "Running", "Running"),
        2,
        "{tasks:?}"
    );
    assert_eq!(
        with_state("mon_collector.", "Running", "Running"),
        2,
        "{tasks:?}"
    );
    assert_eq!(
        with_state("mon_schema-setup.", "Complete", "Complete"),
        2,
        "{tasks:?}"
    );

    // Every network, secret and config the stacks made carries its stack's label.
    assert_eq!(
        labelled(manager, "network", Some("vote")),
        names(&["vote_back", "vote_front"])
    );
    assert_eq!(
        labelled(manager, "network", None),
        names(&["deps_default", "mon_default", "vote_back", "vote_front"])
    );
    assert_eq!(
        labelled(manager, "secret", None),
        names(&["deps_api_token"])
    );
    assert_eq!(
        labelled(manager, "config", None),
        names(&["deps_api_settings", "mon_collector_conf"])
    );

    let removed = stdout_and_stderr(&manager.docker(&["stack", "rm", "vote", "mon", "deps"]));
    for line in [
        "Removing service vote_ballot",
        "Removing service mon_node-agent",
        "Removing secret deps_api_token",
        "Removing config mon_collector_conf",
        "Removing network vote_front",
    ] {
        assert!(removed.contains(line), "{line:?} in {removed}");
    }
    wait_until(
        "nothing left with a stack's label",
        CONVERGE_TIMEOUT,
        || {
            let left: Vec<(&str, BTreeSet<String>)> = ["service", "network", "secret", "config"]
                .into_iter()
                .map(|kind| (kind, labelled(manager, kind, None)))
                .filter(|(_, left)| !left.is_empty())
                .collect();
            // The networks go once the tasks of the removed services are down, as in Docker:
            // hidden from lists at once, deleted then.
            let front_left = manager
                .docker(&["network", "inspect", "vote_front"])
                .status
                .success();
            // And the stopped tasks go with their services.
            let gone = manager.docker(&["stack", "ps", "vote"]);
            let tasks_left = gone.status.success()
                || !stdout_and_stderr(&gone).contains("nothing found in stack: vote");
            if left.is_empty() && !front_left && !tasks_left {
                return Ok(());
            }
            Err(format!(
                "{left:?}, vote_front left: {front_left}, tasks left: {tasks_left}"
            ))
        },
    );
    assert_eq!(
        manager
            .docker_ok(&["stack", "ls", "--format", "{{.Name}}"])
            .trim(),
        ""
    );
    // What the stacks did not make stays.
    assert_eq!(
        manager
            .docker_ok(&["secret", "ls", "--format", "{{.Name}}"])
            .trim(),
        "tls_key"
    );
    manager.docker_ok(&["secret", "rm", "tls_key"]);
}

/// One server the docker CLI is pointed at: a shoal node's Docker socket or a dockerd's. The
/// command is built the same way for both (the test host's `docker` command, its configuration
/// directory and environment), only `DOCKER_HOST` differs.
struct Server<'a> {
    /// What a failure message calls it.
    label: &'static str,
    cli: &'a TestHost,
    docker_host: String,
    /// What [`named`] replaces: each node's id and hostname by its role, each network's id by
    /// its name. Read once the state is made ([`Server::with_names`]).
    names: Vec<(String, String)>,
}

impl<'a> Server<'a> {
    fn new(label: &'static str, cli: &'a TestHost, docker_host: String) -> Server<'a> {
        Server {
            label,
            cli,
            docker_host,
            names: Vec::new(),
        }
    }

    /// This server with its nodes' and networks' names read.
    fn with_names(self) -> Server<'a> {
        let mut names = Vec::new();
        for (id, hostname, role) in self.nodes() {
            names.push((id, role.to_owned()));
            names.push((hostname, role.to_owned()));
        }
        names.extend(self.network_names());
        // Longest first, so no id is replaced inside a longer one.
        names.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        Server { names, ..self }
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        let mut command = self.cli.docker_command(args);
        command.env("DOCKER_HOST", &self.docker_host);
        run_with_timeout(&mut command, COMMAND_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}: {error}", self.label))
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        assert!(
            output.status.success(),
            "{}: docker {}: {}",
            self.label,
            args.join(" "),
            output_text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut args = args.to_vec();
        args.extend(["--format", "{{json .}}"]);
        json_lines(&self.docker_ok(&args))
    }

    fn inspect(&self, args: &[&str]) -> Value {
        let text = self.docker_ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}: {text}", self.label))
    }

    /// Each node's id, hostname and the role the comparisons name it by.
    fn nodes(&self) -> Vec<(String, String, &'static str)> {
        self.json_lines(&["node", "ls"])
            .iter()
            .map(|node| {
                let role = if text(node, "ManagerStatus").is_empty() {
                    "worker"
                } else {
                    "manager"
                };
                (text(node, "ID"), text(node, "Hostname"), role)
            })
            .collect()
    }

    /// Each network's name by its full id.
    fn network_names(&self) -> BTreeMap<String, String> {
        self.json_lines(&["network", "ls", "--no-trunc"])
            .iter()
            .map(|network| (text(network, "ID"), text(network, "Name")))
            .collect()
    }
}

/// `value` with, in every string, what one server calls by an id the other calls by another
/// replaced by a name both share: each node's id and hostname by its role, each network's id
/// by its name.
fn named(value: &Value, server: &Server<'_>) -> Value {
    fn walk(value: &mut Value, names: &[(String, String)]) {
        match value {
            Value::String(text) => {
                for (from, to) in names {
                    if text.contains(from.as_str()) {
                        *text = text.replace(from.as_str(), to);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, names)),
            Value::Object(map) => map.values_mut().for_each(|item| walk(item, names)),
            _ => {}
        }
    }
    let mut value = value.clone();
    walk(&mut value, &server.names);
    value
}

/// `value` without the fields at `paths` (dotted; arrays on the way are entered element by
/// element).
fn without(value: &Value, paths: &[&str]) -> Value {
    fn remove(value: &mut Value, keys: &[&str]) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|item| remove(item, keys)),
            Value::Object(map) => match keys {
                [] => {}
                [last] => {
                    map.remove(*last);
                }
                [first, rest @ ..] => {
                    if let Some(inner) = map.get_mut(*first) {
                        remove(inner, rest);
                    }
                }
            },
            _ => {}
        }
    }
    let mut value = value.clone();
    for path in paths {
        remove(&mut value, &path.split('.').collect::<Vec<_>>());
    }
    value
}

/// Replaces an object by the sorted list of its keys: for values each swarm has its own of.
fn keys_only(value: &mut Value) {
    let keys: Vec<String> = value
        .as_object()
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default();
    *value = json!(keys);
}

/// Drops the empty Limits and Reservations of a task spec's `resources`: the docker CLI sends
/// them empty, Docker keeps the empty objects and shoal keeps no requirements that ask for
/// nothing, which means the same.
fn without_empty_requirements(resources: &mut Value) {
    if let Some(resources) = resources.as_object_mut() {
        resources.retain(|_, asked| asked.as_object().is_none_or(|asked| !asked.is_empty()));
    }
}

/// Panics, showing both, unless shoal's and Docker's normalised outputs of `what` agree.
fn assert_same(what: &str, shoal: &Value, docker: &Value) {
    assert!(
        shoal == docker,
        "{what} differs\n--- shoal ---\n{}\n--- Docker 20.10 ---\n{}",
        serde_json::to_string_pretty(shoal).unwrap_or_default(),
        serde_json::to_string_pretty(docker).unwrap_or_default()
    );
}

/// Rows sorted by their JSON text, for lists whose order is the server's.
fn sorted(mut rows: Vec<Value>) -> Value {
    rows.sort_by_key(Value::to_string);
    Value::Array(rows)
}

/// What both servers are made to hold, by the same docker CLI commands: a node label, a secret
/// and a config with labels, an overlay network, a replicated service with all of those, a
/// published port (ingress) and an environment, and a global one on the same network with a
/// host-mode port.
fn make_the_same_state(server: &Server<'_>, payload: &str) {
    let worker = server
        .nodes()
        .into_iter()
        .find(|(_, _, role)| *role == "worker")
        .map(|(_, hostname, _)| hostname)
        .unwrap_or_else(|| panic!("{}: no worker", server.label));
    server.docker_ok(&["node", "update", "--label-add", "zone=a", &worker]);
    server.docker_ok(&[
        "secret",
        "create",
        "--label",
        "tier=db",
        "db_password",
        payload,
    ]);
    server.docker_ok(&["config", "create", "--label", "tier=web", "site", payload]);
    server.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--label",
        "tier=back",
        "backend",
    ]);
    let mut web = vec![
        "service",
        "create",
        "--no-resolve-image",
        "-d",
        // No registry answers here: the image is the one imported on every node.
        "--no-resolve-image",
        "--name",
        "web",
        "--replicas",
        "2",
        "--env",
        "COLOUR=blue",
        "--label",
        "tier=web",
        "--publish",
        "published=8080,target=80",
        "--network",
        "backend",
        "--secret",
        "db_password",
        "--config",
        "site",
        docker::IMAGE,
    ];
    web.extend(TASK_COMMAND);
    server.docker_ok(&web);
    let mut agent = vec![
        "service",
        "create",
        "--no-resolve-image",
        "-d",
        "--no-resolve-image",
        "--name",
        "agent",
        "--mode",
        "global",
        "--network",
        "backend",
        "--publish",
        "mode=host,published=9100,target=9100",
        docker::IMAGE,
    ];
    agent.extend(TASK_COMMAND);
    server.docker_ok(&agent);
}

/// Every service's REPLICAS once both swarms have converged: the services made one by one and
/// the voting stack's.
const CONVERGED: [(&str, &str); 7] = [
    ("agent", "2/2"),
    ("vote_ballot", "2/2"),
    ("vote_cache", "2/2"),
    ("vote_counter", "1/1"),
    ("vote_store", "1/1"),
    ("vote_tally", "2/2"),
    ("web", "2/2"),
];

/// Whether every service has converged on `server`, by `service ls`.
fn converged(server: &Server<'_>) -> Result<(), String> {
    let listed = server.json_lines(&["service", "ls"]);
    let replicas: BTreeSet<(String, String)> = listed
        .iter()
        .map(|service| (text(service, "Name"), text(service, "Replicas")))
        .collect();
    let want: BTreeSet<(String, String)> = CONVERGED
        .map(|(name, replicas)| (name.to_owned(), replicas.to_owned()))
        .into();
    if replicas == want {
        Ok(())
    } else {
        Err(format!("{}: {listed:?}", server.label))
    }
}

/// The same state made by the same docker CLI on a shoal swarm and a Docker Swarm 20.10 of two
/// nodes each (a manager and a worker): objects made one by one, and the voting fixture
/// deployed as a stack. Then each listing and inspection the docker CLI makes of it is
/// compared field by field, after taking out what depends on ids and times; each comparison
/// names the fields it leaves out, and why.
#[test]
fn the_docker_cli_shows_the_same_state_on_shoal_and_on_docker_swarm() {
    const TEST: &str = "docker_compare_with_docker_swarm";
    if !docker_cli_present(TEST) {
        return;
    }
    if let Some(reason) = docker::missing() {
        skip(TEST, &reason);
        return;
    }
    let images: Vec<&str> = [docker::IMAGE].into_iter().chain(VOTING_IMAGES).collect();
    let Some(cluster) = swarm(TEST, 2, &images) else {
        return;
    };
    // Dropped before the cluster, whose underlay its hosts are on.
    let docker_swarm = DockerSwarm::start(&cluster);
    let h1 = cluster.host(1);
    let shoal = Server::new("shoal", h1, h1.docker_host());
    let docker = Server::new("Docker 20.10", h1, docker_swarm.host(1).docker_host());
    // DockerSwarm imported the test image on both of its nodes; the stack's names are tags of it.
    for number in [1, 2] {
        let node = Server::new("Docker 20.10", h1, docker_swarm.host(number).docker_host());
        for image in VOTING_IMAGES {
            node.docker_ok(&["tag", docker::IMAGE, image]);
        }
    }
    let payload = cluster.dir().join("payload.txt");
    std::fs::write(&payload, "s3cret").expect("the payload file");
    let payload = payload.display().to_string();
    let voting = copy_fixtures(&cluster.dir().join("stacks")).join("voting.yml");
    let voting = voting.display().to_string();
    // DockerSwarm made the overlay network `front`; shoal gets one too.
    shoal.docker_ok(&["network", "create", "-d", "overlay", docker::NETWORK]);
    for server in [&shoal, &docker] {
        make_the_same_state(server, &payload);
        server.docker_ok(&[
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            &voting,
            "vote",
        ]);
    }
    wait_until("both swarms converged", CONVERGE_TIMEOUT, || {
        converged(&shoal).and_then(|()| converged(&docker))
    });
    let (shoal, docker) = (shoal.with_names(), docker.with_names());

    // Each comparison: the docker CLI's output on both servers, ids and hostnames turned into
    // names and roles, without the fields listed.
    let compare =
        |what: &str, args: &[&str], skipped: &[&str], shape: &dyn Fn(Vec<Value>) -> Value| {
            let of = |server: &Server<'_>| {
                let rows = server
                    .json_lines(args)
                    .iter()
                    .map(|row| without(&named(row, server), skipped))
                    .collect();
                shape(rows)
            };
            assert_same(what, &of(&shoal), &of(&docker));
        };
    // IMAGE may differ by a digest only: Docker pins one when it can reach a registry.
    let without_digests = |rows: Vec<Value>| {
        sorted(
            rows.into_iter()
                .map(|mut row| {
                    let image = text(&row, "Image");
                    row["Image"] = json!(image.split('@').next().unwrap_or_default());
                    row
                })
                .collect(),
        )
    };
    // A task list: CURRENT STATE as its word (the rest is a time), and NODE as the roles the
    // tasks run on, apart from the rows, since which slot lands on which node is each
    // scheduler's choice. vote_counter's one task may go to either node (both hold none of
    // its service's), so its node is not compared.
    let task_rows = |rows: Vec<Value>| {
        let mut nodes: Vec<String> = rows
            .iter()
            .filter(|row| !text(row, "Name").starts_with("vote_counter."))
            .map(|row| text(row, "Node"))
            .collect();
        nodes.sort();
        let rows = rows
            .into_iter()
            .map(|mut row| {
                let state = text(&row, "CurrentState");
                row["CurrentState"] = json!(state.split_whitespace().next().unwrap_or_default());
                // Docker lists a host-mode port once per address family it binds (IPv4 and
                // IPv6); shoal binds IPv4 only, so each port is compared once.
                let mut ports: Vec<String> =
                    text(&row, "Ports").split(',').map(str::to_owned).collect();
                ports.dedup();
                row["Ports"] = json!(ports.join(","));
                if let Some(row) = row.as_object_mut() {
                    row.remove("Node");
                }
                row
            })
            .collect();
        json!({"rows": sorted(rows), "nodes": nodes})
    };

    // `service ls` and `stack services vote`: NAME, MODE, REPLICAS, PORTS (a port given no
    // published one gets the first of the managers' range on both) and IMAGE compared.
    // Skipped: ID (ids).
    compare("service ls", &["service", "ls"], &["ID"], &without_digests);
    compare(
        "stack services vote",
        &["stack", "services", "vote"],
        &["ID"],
        &without_digests,
    );
    // `stack ls`: NAME and SERVICES (and what else the docker CLI shows) compared.
    compare("stack ls", &["stack", "ls"], &[], &sorted);

    // `service ps` of each service's current tasks and `stack ps vote` (history depends on
    // timing): NAME (a global task's node id read as its role), IMAGE, DESIRED STATE, ERROR,
    // PORTS (the global `agent`'s host-mode port, `*:9100->9100/tcp`, from its tasks' status)
    // and CURRENT STATE's word compared, NODE as above. Skipped: ID (ids).
    for service in CONVERGED.map(|(service, _)| service) {
        compare(
            &format!("service ps {service}"),
            &[
                "service",
                "ps",
                service,
                "--filter",
                "desired-state=running",
            ],
            &["ID"],
            &task_rows,
        );
    }
    compare(
        "stack ps vote",
        &["stack", "ps", "vote", "--filter", "desired-state=running"],
        &["ID"],
        &task_rows,
    );

    // `service inspect` of each service: the whole document compared (the spec as set, with
    // the stack's labels, mounts, network aliases and policies; EndpointSpec; the endpoint's
    // Spec, Ports and the networks of its VirtualIPs), network ids read as names, with the
    // defaults both fill in for what a spec leaves unset (the docker CLI asks with
    // `insertDefaults`). Empty requirements are dropped on both sides
    // ([`without_empty_requirements`]). Skipped: ids and times (ID, Version, CreatedAt,
    // UpdatedAt, a secret's and a config's id) and the VIPs' addresses, which each allocator
    // hands out in its own order.
    let service_skipped = [
        "ID",
        "Version",
        "CreatedAt",
        "UpdatedAt",
        "Spec.TaskTemplate.ContainerSpec.Secrets.SecretID",
        "Spec.TaskTemplate.ContainerSpec.Configs.ConfigID",
        "Endpoint.VirtualIPs.Addr",
    ];
    for (service, _) in CONVERGED {
        let of = |server: &Server<'_>| {
            let mut inspected = server.inspect(&["service", "inspect", service]);
            for service in inspected.as_array_mut().into_iter().flatten() {
                without_empty_requirements(&mut service["Spec"]["TaskTemplate"]["Resources"]);
            }
            without(&named(&inspected, server), &service_skipped)
        };
        assert_same(
            &format!("service inspect {service}"),
            &of(&shoal),
            &of(&docker),
        );
    }

    // `docker inspect` of web's task in slot 1: the whole document compared (its spec, slot,
    // states, ports and the names of the networks it is attached to), ids read as names.
    // Skipped: ids and times (ID, Version, CreatedAt, UpdatedAt, ServiceID, the secret's and
    // config's ids, Status.Timestamp, the container's id); NodeID, since which node runs the
    // slot is the scheduler's choice; the attachments' addresses, and their networks apart
    // from the names (each swarm stores its own: Docker keeps the default IPAM driver the
    // docker CLI names, shoal drops it; Docker's ingress names no driver or subnet, shoal's
    // does; VNIs and subnets are each allocator's). Status.ContainerStatus.PID is each
    // machine's own process number: compared as "set" (a running task reports its pid).
    let of = |server: &Server<'_>| {
        let task = server.docker_ok(&[
            "service",
            "ps",
            "web",
            "-q",
            "--filter",
            "desired-state=running",
            "--filter",
            "name=web.1",
        ]);
        let mut inspected = server.inspect(&["inspect", "--type", "task", task.trim()]);
        without_empty_requirements(&mut inspected[0]["Spec"]["Resources"]);
        let pid = &mut inspected[0]["Status"]["ContainerStatus"]["PID"];
        *pid = json!(pid.as_i64().is_some_and(|pid| pid > 0));
        without(
            &named(&inspected, server),
            &[
                "ID",
                "Version",
                "CreatedAt",
                "UpdatedAt",
                "ServiceID",
                "NodeID",
                "Spec.ContainerSpec.Secrets.SecretID",
                "Spec.ContainerSpec.Configs.ConfigID",
                "Status.Timestamp",
                "Status.ContainerStatus.ContainerID",
                "NetworksAttachments.Addresses",
                "NetworksAttachments.Network.ID",
                "NetworksAttachments.Network.Version",
                "NetworksAttachments.Network.CreatedAt",
                "NetworksAttachments.Network.UpdatedAt",
                "NetworksAttachments.Network.Spec.DriverConfiguration",
                "NetworksAttachments.Network.Spec.IPAMOptions",
                "NetworksAttachments.Network.DriverState",
                "NetworksAttachments.Network.IPAMOptions",
            ],
        )
    };
    assert_same("inspect web.1's task", &of(&shoal), &of(&docker));

    // `node ls`: SELF, STATUS, AVAILABILITY, MANAGER STATUS and TLS STATUS (each node's
    // certificate issuer against the cluster's root: "Ready") compared, HOSTNAME as the role.
    // Skipped: ID (ids) and ENGINE VERSION (each engine's own).
    compare(
        "node ls",
        &["node", "ls"],
        &["ID", "EngineVersion"],
        &sorted,
    );
    for server in [&shoal, &docker] {
        let rows = server.json_lines(&["node", "ls"]);
        let statuses: Vec<&Value> = rows.iter().map(|row| &row["TLSStatus"]).collect();
        assert_eq!(statuses, [&json!("Ready"); 2], "{}", server.label);
    }

    // `node inspect` of each node: Spec (the label set through the docker CLI, role,
    // availability), Status.State, ManagerStatus's Leader and Reachability, and the
    // description's hostname (as its role), platform and resources (the same machine)
    // compared. Skipped: ID, Version, CreatedAt, UpdatedAt (ids and times), the addresses
    // (Status.Addr, ManagerStatus.Addr), Description.Engine (each engine's version, and
    // Docker's plugins, which shoal has none of); Description.TLSInfo's values are each
    // swarm's own root and key, so only which of them are set is compared.
    for role in ["manager", "worker"] {
        let of = |server: &Server<'_>| {
            let (id, _, _) = server
                .nodes()
                .into_iter()
                .find(|(_, _, r)| *r == role)
                .unwrap_or_else(|| panic!("{}: no {role}", server.label));
            let mut inspected = server.inspect(&["node", "inspect", &id]);
            for node in inspected.as_array_mut().into_iter().flatten() {
                keys_only(&mut node["Description"]["TLSInfo"]);
            }
            without(
                &named(&inspected, server),
                &[
                    "ID",
                    "Version",
                    "CreatedAt",
                    "UpdatedAt",
                    "Status.Addr",
                    "ManagerStatus.Addr",
                    "Description.Engine",
                ],
            )
        };
        assert_same(&format!("node inspect ({role})"), &of(&shoal), &of(&docker));
    }

    // `secret ls` and `config ls`: NAME, DRIVER and LABELS compared. Skipped: ID, CreatedAt
    // and UpdatedAt (ids and times).
    let payload_skipped = ["ID", "CreatedAt", "UpdatedAt"];
    compare("secret ls", &["secret", "ls"], &payload_skipped, &sorted);
    compare("config ls", &["config", "ls"], &payload_skipped, &sorted);

    // `network ls` of the swarm's networks (ingress, front, backend and the stack's two):
    // NAME, DRIVER, SCOPE, IPV6, INTERNAL and LABELS compared. Docker's engine also has local
    // networks (bridge, host, none, docker_gwbridge), which shoal has no counterpart of.
    // Skipped: ID and CreatedAt (ids and times), and IPv4: Docker 20.10 speaks API 1.41, which
    // has no EnableIPv4, so the docker CLI shows its zero value for every network there.
    compare(
        "network ls",
        &["network", "ls", "--filter", "scope=swarm"],
        &["ID", "CreatedAt", "IPv4"],
        &sorted,
    );

    // `info`'s Swarm section: LocalNodeState, ControlAvailable, Error, Nodes, Managers, and the
    // cluster's spec, address pool, subnet size, data path port and rotation state compared;
    // RemoteManagers as its length. Skipped: NodeID, NodeAddr and the managers' ids and
    // addresses; the cluster's ID, Version, CreatedAt and UpdatedAt (ids and times);
    // Cluster.Spec.Raft and Cluster.Spec.Dispatcher, shoal's own on purpose (openraft's ticks
    // of 100 ms with elections after 4, where Swarm's raft says 10; a worker heartbeat of 1 s
    // instead of 5, to find a dead node in 3 s). Cluster.TLSInfo's values are each swarm's own
    // root and key: only which of them are set is compared.
    let of = |server: &Server<'_>| {
        let mut swarm = server.inspect(&["info", "--format", "{{json .Swarm}}"]);
        let managers = swarm["RemoteManagers"].as_array().map_or(0, Vec::len);
        swarm["RemoteManagers"] = json!(managers);
        keys_only(&mut swarm["Cluster"]["TLSInfo"]);
        without(
            &swarm,
            &[
                "NodeID",
                "NodeAddr",
                "Cluster.ID",
                "Cluster.Version",
                "Cluster.CreatedAt",
                "Cluster.UpdatedAt",
                "Cluster.Spec.Raft",
                "Cluster.Spec.Dispatcher",
            ],
        )
    };
    assert_same("info .Swarm", &of(&shoal), &of(&docker));

    // `stack rm vote` says it removes the same objects on both. Its exit status is left out:
    // shoal refuses the networks while the removed services' tasks stop (see the stacks
    // test), which the docker CLI reports on stderr.
    let removed = |server: &Server<'_>| {
        let mut lines: Vec<String> =
            String::from_utf8_lossy(&server.docker(&["stack", "rm", "vote"]).stdout)
                .lines()
                .map(str::to_owned)
                .collect();
        lines.sort();
        json!(lines)
    };
    assert_same("stack rm vote", &removed(&shoal), &removed(&docker));
}
