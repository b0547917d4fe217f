//! The flags of `service create`, `update` and `scale` against the specs they make.

use clap::Parser;

use super::*;

#[derive(Parser)]
struct CreateCli {
    #[command(flatten)]
    args: CreateArgs,
}

#[derive(Parser)]
struct UpdateCli {
    #[command(flatten)]
    args: UpdateArgs,
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn create(flags: &[&str]) -> anyhow::Result<api::ServiceSpec> {
    let cli = CreateCli::try_parse_from(std::iter::once("create").chain(flags.iter().copied()))?;
    create_spec(&cli.args, &no_env)
}

fn create_error(flags: &[&str]) -> String {
    match create(flags) {
        Ok(spec) => panic!("expected an error, got {spec:?}"),
        Err(error) => error.to_string(),
    }
}

fn update(spec: api::ServiceSpec, flags: &[&str]) -> anyhow::Result<api::ServiceSpec> {
    let cli = UpdateCli::try_parse_from(std::iter::once("update").chain(flags.iter().copied()))?;
    update_spec(spec, &cli.args, &no_env, &NetworkIds::new())
}

fn container_of(spec: &api::ServiceSpec) -> api::ContainerSpec {
    crate::service::format::container(spec.task.as_ref())
        .cloned()
        .unwrap_or_default()
}

fn seconds(seconds: i64) -> Option<api::Duration> {
    Some(api::Duration { seconds, nanos: 0 })
}

#[test]
fn groups_capabilities_sysctls_and_ulimits_are_created_and_updated() -> anyhow::Result<()> {
    let spec = create(&[
        "--cap-add",
        "net_admin",
        "--cap-drop",
        "CAP_MKNOD",
        "--sysctl",
        "net.core.somaxconn=512",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "core=-1",
        "--group",
        "staff",
        "--group",
        "4242",
        "busybox",
    ])?;
    let container = container_of(&spec);
    assert_eq!(container.groups, ["staff", "4242"]);
    assert_eq!(container.capability_add, ["CAP_NET_ADMIN"]);
    assert_eq!(container.capability_drop, ["CAP_MKNOD"]);
    assert_eq!(container.sysctls["net.core.somaxconn"], "512");
    let limits: Vec<(&str, i64, i64)> = container
        .ulimits
        .iter()
        .map(|u| (u.name.as_str(), u.soft, u.hard))
        .collect();
    assert_eq!(limits, [("nofile", 1024, 2048), ("core", -1, -1)]);

    // Dropping an added capability takes it off the added list, as Docker does.
    let updated = update(
        spec,
        &[
            "--cap-drop",
            "NET_ADMIN",
            "--cap-add",
            "mknod",
            "--sysctl-rm",
            "net.core.somaxconn",
            "--sysctl-add",
            "net.ipv4.ip_forward=1",
            "--ulimit-rm",
            "core",
            "--ulimit-add",
            "nofile=4096",
            "--group-rm",
            "staff",
            "--group-add",
            "audio",
        ],
    )?;
    let container = container_of(&updated);
    assert_eq!(container.groups, ["4242", "audio"]);
    assert_eq!(container.capability_add, ["CAP_MKNOD"]);
    assert_eq!(container.capability_drop, ["CAP_NET_ADMIN"]);
    assert_eq!(
        container.sysctls,
        HashMap::from([("net.ipv4.ip_forward".to_owned(), "1".to_owned())])
    );
    let limits: Vec<(&str, i64, i64)> = container
        .ulimits
        .iter()
        .map(|u| (u.name.as_str(), u.soft, u.hard))
        .collect();
    assert_eq!(limits, [("nofile", 4096, 4096)]);

    assert!(
        create_error(&["--cap-add", "NET_ADMINN", "busybox"])
            .contains("--cap-add: invalid capability: \"NET_ADMINN\" is not a Linux capability")
    );
    assert!(
        create_error(&["--cap-add", "ALL", "--cap-drop", "all", "busybox"])
            .contains("ALL is both added and dropped")
    );
    assert!(create_error(&["--sysctl", "somaxconn", "busybox"]).contains("use NAME=VALUE"));
    assert!(
        create_error(&["--sysctl", "vm.swappiness=1", "busybox"])
            .contains("--sysctl: invalid sysctl: vm.swappiness is not namespaced")
    );
    assert!(create_error(&["--ulimit", "files=1", "busybox"]).contains("\"files\" is not a limit"));
    assert!(
        create_error(&["--ulimit", "nofile=10:5", "busybox"])
            .contains("soft limit 10 is above the hard limit 5")
    );
    // -1 is unlimited, above any number, as compose and the engine read it.
    let unlimited_soft = spec::linux::ulimit_values("nofile", u64::MAX, 1024)
        .unwrap_err()
        .to_string();
    assert!(create_error(&["--ulimit", "nofile=-1:1024", "busybox"]).ends_with(&unlimited_soft));
    assert!(create_error(&["--ulimit", "nofile=lots", "busybox"]).contains("NAME=SOFT[:HARD]"));
    Ok(())
}

#[test]
fn create_maps_every_flag() -> anyhow::Result<()> {
    let spec = create(&[
        "--name",
        "web",
        "--replicas",
        "3",
        "-e",
        "A=1",
        "--env",
        "B=2",
        "-e",
        "A=3",
        "-l",
        "tier=front",
        "--container-label",
        "c=d",
        "--constraint",
        "node.role==worker",
        "--placement-pref",
        "spread=node.labels.zone",
        "--replicas-max-per-node",
        "2",
        "--reserve-cpu",
        "0.25",
        "--reserve-memory",
        "64m",
        "--limit-cpu",
        "1.5",
        "--limit-memory",
        "1g",
        "--limit-pids",
        "100",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "3",
        "--mount",
        "type=bind,source=/srv,target=/srv,readonly",
        "--mount",
        "type=tmpfs,target=/tmp,tmpfs-size=16m",
        "--hostname",
        "h",
        "-u",
        "1000:1000",
        "-w",
        "/app",
        "--entrypoint",
        "/bin/sh -c",
        "--init",
        "--stop-grace-period",
        "1m30s",
        "--stop-signal",
        "SIGINT",
        "--health-cmd",
        "curl -f localhost",
        "--health-interval",
        "10s",
        "--health-retries",
        "5",
        "nginx:alpine",
        "echo",
        "-n",
        "hi",
    ])?;
    let annotations = spec.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.name, "web");
    assert_eq!(annotations.labels["tier"], "front");
    assert_eq!(
        spec.mode,
        Some(api::service_spec::Mode::Replicated(
            api::ReplicatedService { replicas: 3 }
        ))
    );
    let container = container_of(&spec);
    assert_eq!(container.image, "nginx:alpine");
    assert_eq!(container.args, ["echo", "-n", "hi"]);
    assert_eq!(container.command, ["/bin/sh", "-c"]);
    assert_eq!(container.env, ["B=2", "A=3"]);
    assert_eq!(container.labels["c"], "d");
    assert_eq!(container.hostname, "h");
    assert_eq!(container.user, "1000:1000");
    assert_eq!(container.dir, "/app");
    assert_eq!(container.init, Some(true));
    assert_eq!(container.stop_grace_period, seconds(90));
    assert_eq!(container.stop_signal, "SIGINT");
    assert_eq!(container.pid_limit, 100);
    assert_eq!(container.mounts.len(), 2);
    assert_eq!(container.mounts[0].r#type, api::mount::Type::Bind as i32);
    assert!(container.mounts[0].readonly);
    assert_eq!(
        container.mounts[1]
            .tmpfs_options
            .as_ref()
            .map(|t| t.size_bytes),
        Some(16 << 20)
    );
    let health = container.healthcheck.unwrap_or_default();
    assert_eq!(health.test, ["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(health.interval, seconds(10));
    assert_eq!(health.retries, 5);
    assert_eq!(health.timeout, None);
    let task = spec.task.clone().unwrap_or_default();
    let placement = task.placement.unwrap_or_default();
    assert_eq!(placement.constraints, ["node.role==worker"]);
    assert_eq!(placement.max_replicas, 2);
    assert_eq!(
        placement.preferences.first().and_then(spread_descriptor),
        Some("node.labels.zone")
    );
    let resources = task.resources.unwrap_or_default();
    let reservations = resources.reservations.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    assert_eq!(reservations.nano_cpus, 250_000_000);
    assert_eq!(reservations.memory_bytes, 64 << 20);
    assert_eq!(limits.nano_cpus, 1_500_000_000);
    assert_eq!(limits.memory_bytes, 1 << 30);
    let restart = task.restart.unwrap_or_default();
    assert_eq!(
        restart.condition,
        api::restart_policy::RestartCondition::OnFailure as i32
    );
    assert_eq!(restart.delay, seconds(5));
    assert_eq!(restart.max_attempts, 3);
    Ok(())
}

#[test]
fn create_defaults_leave_server_defaults_alone() -> anyhow::Result<()> {
    let spec = create(&["alpine"])?;
    assert_eq!(
        spec.mode,
        Some(api::service_spec::Mode::Replicated(
            api::ReplicatedService { replicas: 1 }
        ))
    );
    let task = spec.task.clone().unwrap_or_default();
    assert!(task.restart.is_none());
    assert!(task.resources.is_none());
    let container = container_of(&spec);
    assert!(container.healthcheck.is_none());
    assert_eq!(container.init, None);
    // `--init` does not swallow the image that follows it.
    let spec = create(&["--init", "alpine", "sleep", "1"])?;
    assert_eq!(container_of(&spec).image, "alpine");
    assert_eq!(container_of(&spec).init, Some(true));
    let spec = create(&["--init=false", "alpine"])?;
    assert_eq!(container_of(&spec).init, Some(false));
    Ok(())
}

#[test]
fn modes_follow_docker() -> anyhow::Result<()> {
    let spec = create(&["--mode", "replicated-job", "--replicas", "5", "alpine"])?;
    assert_eq!(
        spec.mode,
        Some(api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent: 5,
            total_completions: 5
        }))
    );
    let spec = create(&[
        "--mode",
        "replicated-job",
        "--replicas",
        "5",
        "--max-concurrent",
        "2",
        "alpine",
    ])?;
    assert_eq!(
        spec.mode,
        Some(api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5
        }))
    );
    let spec = create(&["--mode", "global", "alpine"])?;
    assert_eq!(
        spec.mode,
        Some(api::service_spec::Mode::Global(api::GlobalService {}))
    );
    let spec = create(&["--mode", "global-job", "alpine"])?;
    assert_eq!(
        spec.mode,
        Some(api::service_spec::Mode::GlobalJob(api::GlobalJob {}))
    );
    assert!(
        create_error(&["--mode", "global", "--replicas", "2", "alpine"]).starts_with(
            "replicas can only be used with replicated or replicated-job mode: a global service runs one task per node, so drop --replicas"
        )
    );
    assert!(
        create_error(&["--max-concurrent", "2", "alpine"]).starts_with(
            "max-concurrent can only be used with replicated-job mode: add --mode replicated-job"
        )
    );
    assert!(create_error(&["--mode", "daemonset", "alpine"]).contains("use replicated, global"));
    Ok(())
}

#[test]
fn bad_flags_say_what_to_do() {
    assert_eq!(
        create_error(&["--replicas", "-3", "alpine"]),
        "invalid replicas value -3: the number of replicas must be 0 or more"
    );
    assert_eq!(
        create_error(&["--replicas=-3", "alpine"]),
        "invalid replicas value -3: the number of replicas must be 0 or more"
    );
    assert!(create_error(&["--replicas", "three", "alpine"]).contains("use a whole number"));
    assert!(create_error(&["--limit-cpu", "0.1234567891", "alpine"]).contains("too precise"));
    assert!(create_error(&["--limit-cpu", "lots", "alpine"]).starts_with("--limit-cpu:"));
    assert!(create_error(&["--limit-memory", "12q", "alpine"]).starts_with("--limit-memory:"));
    assert!(create_error(&["--restart-delay", "5", "alpine"]).starts_with("--restart-delay:"));
    assert!(
        create_error(&["--restart-condition", "always", "alpine"])
            .contains("use none, on-failure or any")
    );
    assert!(create_error(&["--constraint", "node.role", "alpine"]).contains("KEY==VALUE"));
    assert!(
        create_error(&["--placement-pref", "pack=node.labels.x", "alpine"])
            .contains("only spread is supported")
    );
    assert!(
        create_error(&["--no-healthcheck", "--health-cmd", "true", "alpine"])
            .contains("conflicts with --health-* options")
    );
    assert!(
        create_error(&["--mount", "type=bind,source=/a", "alpine"]).contains("target is required")
    );
    assert!(
        create_error(&["--mount", "type=bind,source=rel,target=/a", "alpine"])
            .contains("absolute source path")
    );
    assert!(
        create_error(&["--mount", "type=tmpfs,target=/a,volume-nocopy", "alpine"])
            .contains("cannot mix 'volume-*' options")
    );
    assert!(
        create_error(&["--mount", "type=volume,target=/a,colour=red", "alpine"])
            .contains("unexpected key")
    );
    assert!(
        create_error(&["--reserve-memory", "2g", "--limit-memory", "1g", "alpine"])
            .contains("reserve at most the limit")
    );
}

/// `--mode`, a mount's type and its bind propagation take the words of `spec::enums`, and
/// refuse others as spec does (issue 13: one table per enum, not a copy here).
#[test]
fn enum_words_are_specs() -> anyhow::Result<()> {
    assert_eq!(
        create_error(&["--mode", "daemon", "alpine"]),
        "--mode: invalid mode \"daemon\": use replicated, global, replicated-job or global-job"
    );
    let refusal = |text: &str| {
        parse_mount("mount", text)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        refusal("type=pipe,target=/a"),
        "--mount: invalid mount type \"pipe\": use bind, volume, tmpfs, npipe or cluster"
    );
    assert_eq!(
        refusal("type=bind,source=/a,target=/a,bind-propagation=up"),
        "--mount: invalid bind propagation \"up\": use rprivate, private, rshared, shared, rslave or slave"
    );
    let mount = parse_mount(
        "mount",
        "type=BIND,source=/a,target=/a,bind-propagation=RSlave",
    )?;
    assert_eq!(mount.r#type, api::mount::Type::Bind as i32);
    let propagation = mount.bind_options.map(|options| options.propagation);
    assert_eq!(
        propagation,
        Some(api::mount::bind_options::Propagation::Rslave as i32)
    );
    Ok(())
}

#[test]
fn env_without_value_comes_from_the_environment() -> anyhow::Result<()> {
    let cli = CreateCli::try_parse_from(["create", "-e", "HOME", "-e", "UNSET", "alpine"])?;
    let lookup = |key: &str| (key == "HOME").then(|| "/root".to_owned());
    let spec = create_spec(&cli.args, &lookup)?;
    assert_eq!(container_of(&spec).env, ["HOME=/root", "UNSET"]);
    Ok(())
}

fn existing() -> anyhow::Result<api::ServiceSpec> {
    create(&[
        "--name",
        "web",
        "--replicas",
        "2",
        "-e",
        "A=1",
        "-e",
        "B=2",
        "-l",
        "keep=1",
        "-l",
        "drop=1",
        "--constraint",
        "node.role==worker",
        "--placement-pref",
        "spread=node.labels.zone",
        "--mount",
        "type=volume,source=a,target=/a",
        "--mount",
        "type=volume,source=b,target=/b",
        "--health-cmd",
        "true",
        "nginx:1",
        "serve",
    ])
}

#[test]
fn update_changes_only_what_is_asked() -> anyhow::Result<()> {
    let before = existing()?;
    let after = update(before.clone(), &[])?;
    assert_eq!(before, after);

    let after = update(
        before.clone(),
        &[
            "--replicas",
            "5",
            "--image",
            "nginx:2",
            "--args",
            "serve --port 80",
            "--env-add",
            "B=3",
            "--env-add",
            "C=4",
            "--env-rm",
            "A",
            "--label-add",
            "new=1",
            "--label-rm",
            "drop",
            "--constraint-add",
            "node.labels.zone==east",
            "--constraint-rm",
            "node.role==worker",
            "--placement-pref-rm",
            "spread=node.labels.zone",
            "--placement-pref-add",
            "spread=node.labels.rack",
            "--mount-add",
            "type=volume,source=c,target=/b",
            "--mount-rm",
            "/a",
            "--limit-memory",
            "256m",
            "--restart-delay",
            "10s",
            "--health-retries",
            "2",
            "--force",
        ],
    )?;
    assert_eq!(
        after.mode,
        Some(api::service_spec::Mode::Replicated(
            api::ReplicatedService { replicas: 5 }
        ))
    );
    let container = container_of(&after);
    assert_eq!(container.image, "nginx:2");
    assert_eq!(container.args, ["serve", "--port", "80"]);
    assert_eq!(container.env, ["B=3", "C=4"]);
    assert_eq!(container.mounts.len(), 1);
    assert_eq!(container.mounts[0].source, "c");
    let health = container.healthcheck.unwrap_or_default();
    assert_eq!(health.test, ["CMD-SHELL", "true"]);
    assert_eq!(health.retries, 2);
    let labels = after.annotations.clone().unwrap_or_default().labels;
    assert_eq!(labels.get("keep").map(String::as_str), Some("1"));
    assert_eq!(labels.get("new").map(String::as_str), Some("1"));
    assert!(!labels.contains_key("drop"));
    let task = after.task.clone().unwrap_or_default();
    let placement = task.placement.unwrap_or_default();
    assert_eq!(placement.constraints, ["node.labels.zone==east"]);
    assert_eq!(
        placement
            .preferences
            .iter()
            .filter_map(spread_descriptor)
            .collect::<Vec<_>>(),
        ["node.labels.rack"]
    );
    assert_eq!(
        task.resources
            .and_then(|r| r.limits)
            .map(|l| l.memory_bytes),
        Some(256 << 20)
    );
    let restart = task.restart.unwrap_or_default();
    assert_eq!(restart.delay, seconds(10));
    assert_eq!(
        restart.condition,
        api::restart_policy::RestartCondition::Any as i32
    );
    assert_eq!(task.force_update, 1);

    let after = update(before, &["--no-healthcheck"])?;
    assert_eq!(
        container_of(&after).healthcheck.map(|h| h.test),
        Some(vec!["NONE".to_owned()])
    );
    Ok(())
}

#[test]
fn update_refuses_what_docker_refuses() -> anyhow::Result<()> {
    let global = create(&["--mode", "global", "alpine"])?;
    let error = update(global.clone(), &["--replicas", "3"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.starts_with("replicas can only be used with replicated or replicated-job mode: "),
        "{error}"
    );
    let error = update(existing()?, &["--replicas", "-1"])
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("invalid replicas value -1: the number of replicas must be 0 or more")
    );
    let job = create(&["--mode", "replicated-job", "--replicas", "2", "alpine"])?;
    let job = update(job, &["--replicas", "4", "--max-concurrent", "3"])?;
    assert_eq!(
        job.mode,
        Some(api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent: 3,
            total_completions: 4
        }))
    );
    Ok(())
}

#[test]
fn scale_follows_docker() -> anyhow::Result<()> {
    assert_eq!(parse_scale_arg("web=3")?, ("web".to_owned(), 3));
    assert!(
        parse_scale_arg("web=-3")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("must be 0 or more")
    );
    assert!(parse_scale_arg("web").is_err());
    let scaled = scale_spec(existing()?, 7)?;
    assert_eq!(
        scaled.mode,
        Some(api::service_spec::Mode::Replicated(
            api::ReplicatedService { replicas: 7 }
        ))
    );
    let global = create(&["--mode", "global", "alpine"])?;
    assert_eq!(
        scale_spec(global, 2)
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("scale can only be used with replicated or replicated-job mode")
    );
    Ok(())
}

#[test]
fn update_and_rollback_flags_set_their_configs_over_swarms_defaults() -> anyhow::Result<()> {
    use api::update_config::{FailureAction, UpdateOrder};
    let spec = create(&[
        "--update-parallelism",
        "5",
        "--update-delay",
        "2s",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "1s",
        "--update-max-failure-ratio",
        "0.25",
        "--update-order",
        "start-first",
        "--rollback-parallelism",
        "0",
        "busybox",
    ])?;
    let update_config = spec.update.unwrap_or_default();
    assert_eq!(update_config.parallelism, 5);
    assert_eq!(update_config.delay, seconds(2));
    assert_eq!(update_config.failure_action(), FailureAction::Rollback);
    assert_eq!(update_config.monitor, seconds(1));
    assert_eq!(update_config.max_failure_ratio, 0.25);
    assert_eq!(update_config.order(), UpdateOrder::StartFirst);
    let rollback_config = spec.rollback.unwrap_or_default();
    assert_eq!(rollback_config.parallelism, 0);
    assert_eq!(rollback_config.monitor, seconds(5));
    assert_eq!(rollback_config.failure_action(), FailureAction::Pause);

    // An update changes only what its flags name.
    let updated = update(spec, &["--update-parallelism", "2"])?;
    let update_config = updated.update.unwrap_or_default();
    assert_eq!(update_config.parallelism, 2);
    assert_eq!(update_config.order(), UpdateOrder::StartFirst);

    assert!(
        create_error(&["--rollback-failure-action", "rollback", "busybox"])
            .contains("use pause or continue")
    );
    assert!(
        create_error(&["--update-max-failure-ratio", "2", "busybox"]).contains("between 0 and 1")
    );
    assert!(create_error(&["--update-order", "random", "busybox"]).contains("start-first"));
    assert!(create_error(&["--update-delay", "soon", "busybox"]).contains("update-delay"));
    Ok(())
}

#[test]
fn networking_flags_make_docker_specs() -> anyhow::Result<()> {
    let spec = create(&[
        "--network",
        "front",
        "--network",
        "name=back,alias=api,alias=v1,driver-opt=com.example=1",
        "--endpoint-mode",
        "DNSRR",
        "--dns",
        "10.0.0.2",
        "--dns",
        "2001:db8:0::53",
        "--dns-search",
        "example.com.",
        "--dns-option",
        "ndots:2",
        "--host",
        "db:10.0.0.5",
        "--host",
        "v6=[2001:db8::5]",
        "busybox",
    ])?;
    let task = spec.task.clone().unwrap_or_default();
    let targets: Vec<&str> = task.networks.iter().map(|n| n.target.as_str()).collect();
    assert_eq!(targets, ["back", "front"]);
    assert_eq!(task.networks[0].aliases, ["api", "v1"]);
    assert_eq!(task.networks[0].driver_attachment_opts["com.example"], "1");
    assert_eq!(
        spec.endpoint.as_ref().map(api::EndpointSpec::mode),
        Some(api::endpoint_spec::ResolutionMode::Dnsrr)
    );
    let container = container_of(&spec);
    let dns = container.dns_config.clone().unwrap_or_default();
    assert_eq!(dns.nameservers, ["10.0.0.2", "2001:db8::53"]);
    assert_eq!(dns.search, ["example.com"]);
    assert_eq!(dns.options, ["ndots:2"]);
    assert_eq!(container.hosts, ["10.0.0.5 db", "2001:db8::5 v6"]);

    // Docker's defaults: vip, and an empty DNS config.
    let plain = create(&["busybox"])?;
    assert_eq!(
        plain.endpoint.as_ref().map(api::EndpointSpec::mode),
        Some(api::endpoint_spec::ResolutionMode::Vip)
    );
    assert_eq!(container_of(&plain).dns_config, Some(Box::default()));
    assert!(plain.task.unwrap_or_default().networks.is_empty());
    Ok(())
}

#[test]
fn bad_networking_flags_name_the_flag() {
    for (flags, expected) in [
        (
            &["--network", "alias=x", "busybox"][..],
            "--network: network \"alias=x\" names no network",
        ),
        (
            &["--network", "name=a,ip=10.0.0.9", "busybox"],
            "not supported for services",
        ),
        (
            &["--endpoint-mode", "round-robin", "busybox"],
            "--endpoint-mode: invalid endpoint mode \"round-robin\": use vip or dnsrr",
        ),
        (
            &["--dns", "dns.google", "busybox"],
            "--dns: invalid DNS server \"dns.google\"",
        ),
        (
            &["--dns-search", "a_b.com", "busybox"],
            "--dns-search: invalid DNS search domain",
        ),
        (
            &["--dns-option", "a b", "busybox"],
            "--dns-option: invalid DNS option",
        ),
        (
            &["--host", "db", "busybox"],
            "--host: invalid host mapping \"db\": give HOST:IP",
        ),
        (
            &["--host", "db:10.0.0", "busybox"],
            "--host: invalid IP address \"10.0.0\"",
        ),
    ] {
        let error = create_error(flags);
        assert!(error.contains(expected), "{flags:?}: {error}");
    }
}

fn attached(spec: &api::ServiceSpec) -> Vec<(String, Vec<String>)> {
    spec.task
        .as_ref()
        .map(|task| {
            task.networks
                .iter()
                .map(|n| (n.target.clone(), n.aliases.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn update_adds_and_removes_networks_by_id() -> anyhow::Result<()> {
    let ids: NetworkIds = [
        ("front", "id-front"),
        ("back", "id-back"),
        ("id-b", "id-back"),
        ("edge", "id-edge"),
    ]
    .into_iter()
    .map(|(reference, id)| (reference.to_owned(), id.to_owned()))
    .collect();
    let run = |spec: api::ServiceSpec, flags: &[&str]| -> anyhow::Result<api::ServiceSpec> {
        let cli =
            UpdateCli::try_parse_from(std::iter::once("update").chain(flags.iter().copied()))?;
        assert_eq!(network_references(&cli.args)?, {
            let mut wanted: Vec<String> = cli.args.network_rm.clone();
            for text in &cli.args.network_add {
                wanted.push(spec::network::attachment_flag(text)?.target);
            }
            wanted.sort();
            wanted.dedup();
            wanted
        });
        update_spec(spec, &cli.args, &no_env, &ids)
    };
    let mut current = create(&["busybox"])?;
    // A spec with the deprecated top-level list has it moved into the task's.
    current.networks = vec![api::NetworkAttachmentConfig {
        target: "id-front".into(),
        ..Default::default()
    }];
    let updated = run(
        current,
        &[
            "--network-add",
            "name=back,alias=db",
            "--network-add",
            "edge",
        ],
    )?;
    assert!(updated.networks.is_empty());
    assert_eq!(
        attached(&updated),
        [
            ("id-back".to_owned(), vec!["db".to_owned()]),
            ("id-edge".to_owned(), vec![]),
            ("id-front".to_owned(), vec![]),
        ]
    );
    let removed = run(
        updated.clone(),
        &["--network-rm", "id-b", "--network-rm", "front"],
    )?;
    assert_eq!(attached(&removed), [("id-edge".to_owned(), vec![])]);
    // Re-adding with other aliases takes a removal first, as in docker.
    let refused = run(updated.clone(), &["--network-add", "name=back,alias=x"]).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("already attached to network back"),
        "{refused}"
    );
    let realiased = run(
        updated,
        &["--network-rm", "back", "--network-add", "name=back,alias=x"],
    )?;
    assert!(attached(&realiased).contains(&("id-back".to_owned(), vec!["x".to_owned()])));
    // Other flags leave the networks alone.
    let untouched = run(realiased.clone(), &["--replicas", "2"])?;
    assert_eq!(attached(&untouched), attached(&realiased));
    Ok(())
}

#[test]
fn update_changes_dns_hosts_and_endpoint_mode_as_docker() -> anyhow::Result<()> {
    let current = create(&[
        "--dns",
        "10.0.0.9",
        "--dns-search",
        "b.example",
        "--dns-option",
        "ndots:2",
        "--host",
        "db:10.0.0.5",
        "--host",
        "cache:10.0.0.6",
        "--host",
        "db:10.0.0.7",
        "busybox",
    ])?;
    let updated = update(
        current.clone(),
        &[
            "--dns-add",
            "10.0.0.1",
            "--dns-add",
            "10.0.0.9",
            "--dns-rm",
            "10.0.0.9",
            "--dns-search-add",
            "a.example",
            "--dns-option-add",
            "timeout:3",
            "--dns-option-rm",
            "ndots:2",
            "--host-rm",
            "db:10.0.0.5",
            "--host-add",
            "web:10.0.0.8",
            "--endpoint-mode",
            "dnsrr",
        ],
    )?;
    let container = container_of(&updated);
    let dns = container.dns_config.unwrap_or_default();
    assert_eq!(dns.nameservers, ["10.0.0.1"]);
    // Sorted, as docker sorts each list it changes.
    assert_eq!(dns.search, ["a.example", "b.example"]);
    assert_eq!(dns.options, ["timeout:3"]);
    assert_eq!(
        container.hosts,
        ["10.0.0.6 cache", "10.0.0.7 db", "10.0.0.8 web"]
    );
    assert_eq!(
        updated.endpoint.as_ref().map(api::EndpointSpec::mode),
        Some(api::endpoint_spec::ResolutionMode::Dnsrr)
    );
    // A bare host name leaves every mapping of it.
    let without_db = update(current.clone(), &["--host-rm", "db"])?;
    assert_eq!(container_of(&without_db).hosts, ["10.0.0.6 cache"]);
    // No networking flag, no change.
    let same = update(current.clone(), &["--replicas", "3"])?;
    assert_eq!(
        container_of(&same).dns_config,
        container_of(&current).dns_config
    );
    assert_eq!(container_of(&same).hosts, container_of(&current).hosts);
    assert!(
        update(current, &["--dns-add", "nameserver"])
            .unwrap_err()
            .to_string()
            .contains("--dns-add: invalid DNS server")
    );
    Ok(())
}

fn ports_of(spec: &api::ServiceSpec) -> Vec<String> {
    spec.endpoint
        .as_ref()
        .map(|endpoint| {
            endpoint
                .ports
                .iter()
                .map(|port| {
                    format!(
                        "{} {} {}",
                        spec::ports::describe(port),
                        spec::enums::text_of::<api::port_config::PublishMode>(port.publish_mode),
                        spec::enums::text_of::<api::port_config::TrafficPolicy>(
                            port.traffic_policy
                        )
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn publish_takes_docker_short_and_long_forms() -> anyhow::Result<()> {
    let spec = create(&[
        "-p",
        "8080:80",
        "--publish",
        "53:53/udp",
        "-p",
        "443",
        "-p",
        "9000-9001:90-91",
        "--publish",
        "published=7000,target=70,mode=host",
        "--publish",
        "published=6000,target=60,traffic-policy=local",
        "busybox",
    ])?;
    assert_eq!(
        ports_of(&spec),
        [
            "8080:80/tcp ingress prefer-local",
            "53:53/udp ingress prefer-local",
            "443/tcp ingress prefer-local",
            "9000:90/tcp ingress prefer-local",
            "9001:91/tcp ingress prefer-local",
            "7000:70/tcp host prefer-local",
            "6000:60/tcp ingress local",
        ]
    );
    Ok(())
}

#[test]
fn bad_ports_name_the_flag_and_say_what_to_do() {
    for (flags, expected) in [
        (
            vec!["-p", "70000:80", "busybox"],
            "--publish: invalid port \"70000:80\": published port \"70000\" is not a port number from 0 to 65535",
        ),
        (
            vec!["-p", "8080:0", "busybox"],
            "--publish: invalid port \"8080:0\": target port \"0\" is not a port number from 1 to 65535",
        ),
        (
            vec!["-p", "8080:80/icmp", "busybox"],
            "--publish: invalid protocol \"icmp\": use tcp, udp or sctp",
        ),
        (
            vec!["-p", "published=8080,target=80,protocol=gre", "busybox"],
            "--publish: invalid protocol \"gre\": use tcp, udp or sctp",
        ),
        (
            vec!["-p", "127.0.0.1:8080:80", "busybox"],
            "a host IP (127.0.0.1) is not supported",
        ),
        (
            vec!["-p", "published=8080", "busybox"],
            "has no target: add target=PORT",
        ),
        (
            vec!["-p", "8080:80", "-p", "8080:81", "busybox"],
            "published port 8080/tcp is given twice",
        ),
        (
            vec![
                "-p",
                "published=8080,target=80,mode=host",
                "--replicas-max-per-node",
                "2",
                "busybox",
            ],
            "is published in host mode, so each node can run only one of the service's tasks, but --replicas-max-per-node is 2",
        ),
        (
            vec![
                "-p",
                "published=8080,target=80,mode=host,traffic-policy=local",
                "busybox",
            ],
            "traffic-policy applies to ports published through the routing mesh",
        ),
        (
            vec!["-p", "8080:80", "--endpoint-mode", "dnsrr", "busybox"],
            "which dnsrr endpoint mode can't serve",
        ),
    ] {
        let error = create_error(&flags);
        assert!(error.contains(expected), "{flags:?}: {error}");
    }
}

#[test]
fn update_removes_then_adds_ports_as_docker() -> anyhow::Result<()> {
    let current = create(&[
        "-p",
        "8080:80",
        "-p",
        "53:53/udp",
        "-p",
        "9090:90",
        "busybox",
    ])?;
    let updated = update(
        current.clone(),
        &[
            "--publish-rm",
            "8080",
            "--publish-add",
            "8081:80",
            "--publish-add",
            "9090:90",
        ],
    )?;
    assert_eq!(
        ports_of(&updated),
        [
            "53:53/udp ingress prefer-local",
            "9090:90/tcp ingress prefer-local",
            "8081:80/tcp ingress prefer-local",
        ]
    );
    // A bare number that is no published port names a target, as Docker reads it; a whole
    // port names one exactly.
    let updated = update(
        current.clone(),
        &["--publish-rm", "90", "--publish-rm", "53:53/udp"],
    )?;
    assert_eq!(ports_of(&updated), ["8080:80/tcp ingress prefer-local"]);
    // Adding a number the service publishes elsewhere is refused, with the way to move it.
    let error = update(current.clone(), &["--publish-add", "8080:81"])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("published port 8080/tcp is given twice"),
        "{error}"
    );
    let error = update(current, &["--publish-rm", "http"])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("--publish-rm: invalid port \"http\""),
        "{error}"
    );
    Ok(())
}

/// What the flags make reads back from the JSON Docker's API shows for it, so a Docker client
/// that reads a service and sends its spec back changes nothing it did not ask for.
#[test]
fn specs_the_flags_make_round_trip_through_dockers_json() -> anyhow::Result<()> {
    use docker_api::shape::service::{service_spec_from_json, service_spec_json};
    let specs = [
        create(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "-e",
            "A=1",
            "-l",
            "tier=front",
            "--container-label",
            "c=d",
            "--constraint",
            "node.role==worker",
            "--placement-pref",
            "spread=node.labels.zone",
            "--replicas-max-per-node",
            "2",
            "--reserve-cpu",
            "0.25",
            "--reserve-memory",
            "64m",
            "--limit-cpu",
            "1.5",
            "--limit-memory",
            "1g",
            "--limit-pids",
            "100",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "--mount",
            "type=bind,source=/srv,target=/srv,readonly",
            "--mount",
            "type=tmpfs,target=/tmp,tmpfs-size=16m",
            "--mount",
            "type=volume,source=data,target=/data",
            "--secret",
            "source=pw,target=db_pw,uid=7,gid=8,mode=0400",
            "--config",
            "site",
            "--hostname",
            "h",
            "-u",
            "1000:1000",
            "-w",
            "/app",
            "--entrypoint",
            "/bin/sh -c",
            "--init",
            "--stop-grace-period",
            "1m30s",
            "--stop-signal",
            "SIGINT",
            "--health-cmd",
            "curl -f localhost",
            "--health-interval",
            "10s",
            "--health-retries",
            "5",
            "--cap-add",
            "net_admin",
            "--sysctl",
            "net.core.somaxconn=512",
            "--ulimit",
            "nofile=1024:2048",
            "--group",
            "staff",
            "--update-parallelism",
            "5",
            "--update-delay",
            "2s",
            "--update-failure-action",
            "rollback",
            "--update-max-failure-ratio",
            "0.25",
            "--update-order",
            "start-first",
            "--rollback-parallelism",
            "0",
            "nginx:alpine",
            "echo",
            "hi",
        ])?,
        create(&["alpine"])?,
        create(&["--init=false", "--mode", "global", "alpine"])?,
        create(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "alpine",
        ])?,
        create(&["--mode", "global-job", "alpine"])?,
        existing()?,
        create(&[
            "--network",
            "name=back,alias=api,driver-opt=com.example=1",
            "--endpoint-mode",
            "dnsrr",
            "--dns",
            "10.0.0.2",
            "--dns-search",
            "example.com",
            "--dns-option",
            "ndots:2",
            "--host",
            "db:10.0.0.5",
            "busybox",
        ])?,
        create(&[
            "-p",
            "8080:80",
            "-p",
            "53:53/udp",
            "-p",
            "443",
            "--publish",
            "published=7000,target=70,mode=host",
            "--publish",
            "published=6000,target=60,traffic-policy=local",
            "busybox",
        ])?,
    ];
    for spec in specs {
        let json = service_spec_json(&spec);
        assert_eq!(
            service_spec_from_json(&json, None).ok().as_ref(),
            Some(&spec),
            "{json:#}"
        );
    }
    Ok(())
}
