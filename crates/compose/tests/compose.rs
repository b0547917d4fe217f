//! The compose pipeline on its fixtures: they load, the printed config matches the committed
//! snapshots (`tests/snapshots/`, compared by expect-test), and every bad file is refused with its
//! key path. Pure and fast: every input is served from memory or the fixtures.
//!
//! Refresh snapshots with `UPDATE_EXPECT=1 cargo test -p compose --test compose`.

use std::path::{Path, PathBuf};

use compose::{ComposeErrors, Environment, LoadOptions, Loaded, SourceFile};
use expect_test::expect_file;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose")
}

/// Loads fixture files with a fixed base directory, so paths in snapshots do not depend on
/// where the repository is checked out.
fn load_with(
    names: &[&str],
    env: &[(&str, &str)],
    texts: &[(&str, &str)],
) -> Result<Loaded, ComposeErrors> {
    let mut files: Vec<SourceFile> = names
        .iter()
        .map(|name| SourceFile {
            name: (*name).to_owned(),
            text: std::fs::read_to_string(fixtures().join(name))
                .unwrap_or_else(|e| panic!("fixture {name}: {e}")),
        })
        .collect();
    files.extend(texts.iter().map(|(name, text)| SourceFile {
        name: (*name).to_owned(),
        text: (*text).to_owned(),
    }));
    let env: Environment = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    compose::load(
        &files,
        &env,
        &LoadOptions {
            interpolate: true,
            base_dir: "/stack".into(),
            sources: &read_stack_file,
        },
    )
}

/// Serves `/stack/NAME` from the fixtures and two small env files from memory.
fn read_stack_file(path: &str) -> std::io::Result<String> {
    match path {
        "/stack/web.env" => Ok("# defaults\nLOG_LEVEL=info\nPORT=80\n".into()),
        "/stack/override.env" => Ok("PORT=8080\n".into()),
        _ => match path.strip_prefix("/stack/") {
            Some(name) => std::fs::read_to_string(fixtures().join(name)),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        },
    }
}

fn load_text(text: &str) -> Result<Loaded, ComposeErrors> {
    load_with(&[], &[], &[("compose.yml", text)])
}

fn config_of(names: &[&str], env: &[(&str, &str)]) -> String {
    match load_with(names, env, &[]) {
        Ok(loaded) => compose::emit::to_yaml(&loaded.project),
        Err(errors) => panic!("{names:?} should load:\n{errors}"),
    }
}

#[test]
fn voting_config_snapshot() {
    expect_file!["snapshots/voting.yml"].assert_eq(&config_of(&["voting.yml"], &[]));
}

#[test]
fn monitoring_config_snapshot() {
    expect_file!["snapshots/monitoring.yml"].assert_eq(&config_of(&["monitoring.yml"], &[]));
}

#[test]
fn secrets_deps_config_snapshot() {
    expect_file!["snapshots/secrets-deps.yml"]
        .assert_eq(&config_of(&["secrets-deps.yml"], &[("WEB_TAG", "2")]));
}

#[test]
fn fixtures_load_into_the_expected_model() {
    use compose::model::*;
    let voting = load_with(&["voting.yml"], &[], &[]).expect("voting");
    let project = &voting.project;
    assert_eq!(project.services.len(), 5);
    assert!(voting.warnings.is_empty(), "{:?}", voting.warnings);
    let counter = &project.services["counter"];
    let policy = counter
        .deploy
        .restart_policy
        .as_ref()
        .expect("restart policy");
    assert_eq!(policy.condition, Some(RestartCondition::OnFailure));
    assert_eq!(policy.window, Some(std::time::Duration::from_secs(90)));
    assert_eq!(counter.deploy.labels["APP"], "VOTING");
    assert_eq!(project.services["cache"].ports[0].published, None);

    let monitoring =
        load_with(&["monitoring.yml"], &[("AGENT_TAG", "3.0")], &[]).expect("monitoring");
    let agent = &monitoring.project.services["node-agent"];
    assert_eq!(agent.image, "local/agent:3.0");
    assert_eq!(agent.deploy.mode, Some(ServiceMode::Global));
    assert_eq!(agent.ports[0].mode, PublishMode::Host);
    assert_eq!(
        agent
            .deploy
            .resources
            .limits
            .as_ref()
            .and_then(|l| l.memory_bytes),
        Some(32 * 1024 * 1024)
    );
    // The anchor and its alias give both services the same logging options.
    assert_eq!(
        monitoring.project.services["collector"]
            .logging
            .as_ref()
            .map(|l| l.options["max-size"].clone()),
        Some("5m".into())
    );
    assert!(monitoring.project.extensions.contains_key("x-logging"));

    let deps = load_with(&["secrets-deps.yml"], &[], &[]).expect("secrets-deps");
    let web = &deps.project.services["web"];
    assert_eq!(web.image, "local/web:1");
    assert_eq!(web.environment["GREETING"].as_deref(), Some("costs $3"));
    assert_eq!(web.depends_on["api"].condition, DependsOnCondition::Healthy);
    let api = &deps.project.services["api"];
    assert_eq!(api.secrets[1].mode, Some(0o400));
    assert_eq!(
        deps.project.secrets["api_token"].file.as_deref(),
        Some("/stack/api_token.txt")
    );
    assert!(deps.project.secrets["tls_key"].external);
}

/// Every file in bad/ is refused, naming the key path (and line) to fix.
#[test]
fn bad_fixtures_are_refused_with_their_key_path() {
    let cases = [
        (
            "bad-memory.yml",
            "services.web.deploy.resources.limits.memory",
            "invalid size \"lots\"",
            6,
        ),
        (
            "dependency-cycle.yml",
            "services.a.depends_on",
            "dependency cycle a -> b -> a",
            4,
        ),
        (
            "replicas-negative.yml",
            "services.web.deploy.replicas",
            "must be 0 or more",
            5,
        ),
        ("tabs.yml", "services.web", "tab character", 2),
        (
            "undefined-config.yml",
            "services.web.configs.0",
            "config `nope`, which is not defined",
            4,
        ),
        (
            "unknown-key.yml",
            "services.web.replicaz",
            "unknown service key `replicaz`",
            4,
        ),
    ];
    let bad_dir = fixtures().join("bad");
    let mut seen: Vec<String> = std::fs::read_dir(&bad_dir)
        .expect("bad/")
        .filter_map(|entry| {
            entry
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    seen.sort();
    let mut listed: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    listed.sort();
    assert_eq!(seen, listed, "every bad/ file needs a case here");
    for (name, path, message, line) in cases {
        let file = format!("bad/{name}");
        let errors = match load_with(&[file.as_str()], &[], &[]) {
            Ok(_) => panic!("{name} should be refused"),
            Err(errors) => errors,
        };
        let error = errors
            .0
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{name}: no error at {path}:\n{errors}"));
        assert!(error.message.contains(message), "{name}: {error}");
        assert_eq!(error.line, Some(line), "{name}: {error}");
        assert_eq!(error.file, file);
    }
}

#[test]
fn unknown_key_hints_where_it_belongs() {
    let errors = load_with(&["bad/unknown-key.yml"], &[], &[]).expect_err("refused");
    let text = errors.to_string();
    assert!(
        text.contains("bad/unknown-key.yml:4: services.web.replicaz"),
        "{text}"
    );
    assert!(
        text.contains("did you mean `deploy: {replicas: ...}`?"),
        "{text}"
    );
    let errors =
        load_text("services:\n  web:\n    image: a\n    replicas: 2\n").expect_err("refused");
    assert!(
        errors.to_string().contains("belongs under `deploy:`"),
        "{errors}"
    );
    let errors = load_text("services:\n  web:\n    imgae: a\n").expect_err("refused");
    assert!(
        errors.to_string().contains("did you mean `image`"),
        "{errors}"
    );
}

/// One small file per kind of mistake the brief lists: (file, key path, part of the message).
/// The rules compose shares with the CLI, the manager and the worker come from `spec`, so a
/// compose file gets the same answer as a flag: placeholders the worker expands validate,
/// durations need a unit, sizes take every unit docker's take, and a ulimit's -1 is unlimited.
#[test]
fn shared_rules_give_the_same_answer_as_the_cli_and_the_manager() {
    let loaded = load_text(
        "services:\n  web:\n    image: a\n    hostname: '{{.Node.Platform.OS}}-{{- .Task.Slot -}}'\n    ulimits:\n      nofile: {soft: 1024, hard: -1}\n    deploy:\n      resources:\n        limits: {memory: 1t}\n",
    );
    let loaded = loaded.unwrap_or_else(|errors| panic!("{errors}"));
    let web = &loaded.project.services["web"];
    assert_eq!(
        web.hostname.as_deref(),
        Some("{{.Node.Platform.OS}}-{{- .Task.Slot -}}")
    );

    let refusals = [
        (
            "services:\n  web:\n    image: a\n    hostname: '{{.Task.Colour}}'\n",
            spec::template::check("{{.Task.Colour}}").unwrap_err(),
        ),
        (
            "services:\n  web:\n    image: a\n    healthcheck:\n      interval: 2\n",
            spec::units::parse_duration("2").unwrap_err(),
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      resources:\n        limits: {memory: 1q}\n",
            spec::units::parse_ram_bytes("1q").unwrap_err(),
        ),
        // -1 is unlimited, so above 1024, as `--ulimit nofile=-1:1024` and the engine say.
        (
            "services:\n  web:\n    image: a\n    ulimits:\n      nofile: {soft: -1, hard: 1024}\n",
            spec::linux::ulimit_values("nofile", u64::MAX, 1024).unwrap_err(),
        ),
    ];
    for (text, expected) in refusals {
        let errors = match load_text(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(errors) => errors.to_string(),
        };
        assert!(
            errors.contains(&expected.to_string()),
            "{errors}\nshould carry spec's message: {expected}"
        );
    }
}

#[test]
fn ports_go_through_the_rules_of_publish() {
    let loaded = load_text(
        "services:\n  web:\n    image: a\n    ports:\n      - '8080:80'\n      - '90'\n      - target: 53\n        published: 5353\n        protocol: udp\n        x-traffic-policy: local\n      - target: 443\n        published: 8443-8444\n        mode: host\n",
    );
    let loaded = loaded.unwrap_or_else(|errors| panic!("{errors}"));
    let specs = compose::convert::to_specs("app", &loaded.project);
    let web = &specs.services["app_web"];
    let ports = &web.endpoint.as_ref().unwrap().ports;
    let published: Vec<String> = ports
        .iter()
        .map(|port| {
            format!(
                "{} {} {}",
                spec::ports::describe(port),
                spec::enums::text_of::<shoal_proto::api::port_config::PublishMode>(
                    port.publish_mode
                ),
                spec::enums::text_of::<shoal_proto::api::port_config::TrafficPolicy>(
                    port.traffic_policy
                )
            )
        })
        .collect();
    assert_eq!(
        published,
        [
            "8080:80/tcp ingress prefer-local",
            "90/tcp ingress prefer-local",
            "5353:53/udp ingress local",
            "8443:443/tcp host prefer-local",
            "8444:443/tcp host prefer-local",
        ]
    );
    assert!(compose::emit::to_yaml(&loaded.project).contains("x-traffic-policy: local"));

    for (text, path, message) in [
        (
            "services:\n  web:\n    image: a\n    ports: ['8080:80', '8080:81']\n",
            "services.web.ports",
            "published port 8080/tcp is given twice",
        ),
        (
            "services:\n  web:\n    image: a\n    ports:\n      - {target: 80, published: 8080, mode: host}\n    deploy:\n      placement: {max_replicas_per_node: 2}\n",
            "services.web.ports",
            "--replicas-max-per-node is 2",
        ),
        (
            "services:\n  web:\n    image: a\n    ports: ['8080:80']\n    deploy: {endpoint_mode: dnsrr}\n",
            "services.web.ports",
            "which dnsrr endpoint mode can't serve",
        ),
        (
            "services:\n  web:\n    image: a\n    ports:\n      - {target: 80, mode: host, x-traffic-policy: cluster}\n",
            "services.web.ports.0.x-traffic-policy",
            "leave it out",
        ),
        (
            "services:\n  web:\n    image: a\n    ports:\n      - {target: 80, x-traffic-policy: nearest}\n",
            "services.web.ports.0.x-traffic-policy",
            "invalid traffic policy \"nearest\": use prefer-local, cluster or local",
        ),
        (
            "services:\n  web:\n    image: a\n    ports:\n      - {target: 0}\n",
            "services.web.ports.0.target",
            "invalid target port \"0\": give a port number from 1 to 65535",
        ),
    ] {
        let errors = match load_text(text) {
            Ok(_) => panic!("should be refused:\n{text}"),
            Err(errors) => errors,
        };
        assert!(
            errors
                .0
                .iter()
                .any(|e| e.path == path && e.message.contains(message)),
            "expected {path}: …{message}… for\n{text}\ngot:\n{errors}"
        );
    }
}

#[test]
fn mistakes_name_key_path_and_fix() {
    let cases = [
        (
            "services:\n  web:\n    image: [a]\n",
            "services.web.image",
            "expected a string",
        ),
        (
            "services:\n  web:\n    image: a\n    stop_grace_period: 10\n",
            "services.web.stop_grace_period",
            "a unit is missing",
        ),
        (
            "services:\n  web:\n    image: a\n    healthcheck:\n      interval: soon\n",
            "services.web.healthcheck.interval",
            "invalid duration",
        ),
        (
            "services:\n  web:\n    image: a\n    ports: ['80:99999']\n",
            "services.web.ports.0",
            "not a port number from 1 to 65535",
        ),
        (
            "services:\n  web:\n    image: a\n    ports:\n      - target: 80\n        mode: bridge\n",
            "services.web.ports.0.mode",
            "invalid publish mode \"bridge\": use ingress or host",
        ),
        (
            "services:\n  web:\n    image: a\n    networks: [nope]\n",
            "services.web.networks.nope",
            "network `nope`",
        ),
        (
            "services:\n  web:\n    image: a\n    secrets: [nope]\n",
            "services.web.secrets.0",
            "secret `nope`",
        ),
        (
            "services:\n  web:\n    image: a\n    volumes: ['data:/d']\n",
            "services.web.volumes.0",
            "volume `data`",
        ),
        (
            "services:\n  web:\n    command: x\n",
            "services.web.image",
            "no image",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      mode: everywhere\n",
            "services.web.deploy.mode",
            "invalid mode \"everywhere\": use replicated, global, replicated-job or global-job",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      resources:\n        limits:\n          memory: 512x\n",
            "services.web.deploy.resources.limits.memory",
            "invalid size",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      replicas: many\n",
            "services.web.deploy.replicas",
            "whole number",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      mode: global\n      replicas: 2\n",
            "services.web.deploy.replicas",
            "global",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      update_config:\n        order: random\n",
            "services.web.deploy.update_config.order",
            "stop-first",
        ),
        (
            "services:\n  web:\n    image: a\n    deploy:\n      placement:\n        constraints: [node.role]\n",
            "services.web.deploy.placement.constraints.0",
            "no operator",
        ),
        (
            "services:\n  web:\n    image: a\n    hostname: '{{.Node.Hostnam}}'\n",
            "services.web.hostname",
            "unknown placeholder `{{.Node.Hostnam}}`",
        ),
        (
            "services:\n  web:\n    image: a\n    environment:\n      SLOT: '{{.Task.Slot'\n",
            "services.web.environment.SLOT",
            "closing",
        ),
        (
            "services:\n  web:\n    image: a\n    depends_on:\n      db:\n        condition: service_ready\n",
            "services.web.depends_on.db.condition",
            "service_healthy",
        ),
        (
            "services:\n  web:\n    image: a\n    depends_on: [db]\n",
            "services.web.depends_on",
            "not a service",
        ),
        (
            "services:\n  web:\n    image: ${TAG:?set TAG to the release}\n",
            "services.web.image",
            "set TAG to the release",
        ),
        (
            "services:\n  web:\n    image: a\nsecrets:\n  s: {}\n",
            "secrets.s",
            "add `file: ./path` or `external: true`",
        ),
        (
            "services:\n  web:\n    image: a\nnetworks:\n  n:\n    drivr: overlay\n",
            "networks.n.drivr",
            "did you mean `driver`",
        ),
        (
            "services:\n  web:\n    image: a\n    secrets:\n      - source: s\n        mode: 0999\nsecrets:\n  s: {external: true}\n",
            "services.web.secrets.0.mode",
            "octal",
        ),
        (
            "services:\n  web:\n    image: a\n    cap_add: [NET_ADMIN, FLY]\n",
            "services.web.cap_add.1",
            "\"FLY\" is not a Linux capability",
        ),
        (
            "services:\n  web:\n    image: a\n    ulimits:\n      files: 10\n",
            "services.web.ulimits.files",
            "\"files\" is not a limit; use one of as, core",
        ),
        (
            "services:\n  web:\n    image: a\n    sysctls:\n      vm.swappiness: 1\n",
            "services.web.sysctls.vm.swappiness",
            "not namespaced",
        ),
    ];
    for (text, path, message) in cases {
        let errors = match load_text(text) {
            Ok(_) => panic!("should be refused:\n{text}"),
            Err(errors) => errors,
        };
        assert!(
            errors
                .0
                .iter()
                .any(|e| e.path == path && e.message.contains(message)),
            "expected {path}: …{message}… for\n{text}\ngot:\n{errors}"
        );
    }
}

#[test]
fn yaml_syntax_errors_name_the_line() {
    let errors =
        load_text("services:\n  web:\n    image: a\n    command: [x, y\n  db:\n").expect_err("bad");
    assert_eq!(errors.0.len(), 1);
    assert!(errors.0[0].line.is_some());
    assert!(
        errors.0[0].message.contains("YAML syntax error"),
        "{errors}"
    );
}

#[test]
fn ignored_keys_give_one_warning() {
    let loaded = load_text(
        "services:\n  web:\n    image: a\n    build: .\n    container_name: x\n  db:\n    image: b\n    links: [web]\n    network_mode: host\n",
    )
    .expect("loads");
    let ignored: Vec<&String> = loaded
        .warnings
        .iter()
        .filter(|w| w.contains("ignoring"))
        .collect();
    assert_eq!(ignored.len(), 1, "{:?}", loaded.warnings);
    for key in [
        "services.web.build",
        "services.web.container_name",
        "services.db.links",
        "services.db.network_mode",
    ] {
        assert!(ignored[0].contains(key), "{}", ignored[0]);
    }
}

#[test]
fn extensions_anchors_and_merge_keys() {
    let loaded = load_text(
        "x-defaults: &defaults\n  image: base:1\n  environment: {A: '1'}\n  deploy: {replicas: 2}\nservices:\n  web:\n    <<: *defaults\n    x-team: web\n    deploy: {replicas: 3}\n  worker:\n    <<: *defaults\n",
    )
    .expect("loads");
    let services = &loaded.project.services;
    assert_eq!(services["web"].image, "base:1");
    assert_eq!(services["web"].deploy.replicas, Some(3));
    assert_eq!(services["worker"].deploy.replicas, Some(2));
    assert!(services["web"].extensions.contains_key("x-team"));
    let text = compose::emit::to_yaml(&loaded.project);
    assert!(text.contains("x-defaults:"), "{text}");
    assert!(text.contains("    x-team: web\n"), "{text}");
}

#[test]
fn override_files_merge_with_compose_rules() {
    let base = "services:\n  web:\n    image: web:1\n    command: [a, b]\n    environment: [A=1, B=2]\n    ports: ['80:80']\n    volumes: ['data:/data']\n    deploy:\n      replicas: 1\n      placement:\n        constraints: [node.role == worker]\nvolumes:\n  data:\n  other:\n";
    let over = "services:\n  web:\n    image: web:2\n    command: [c]\n    environment:\n      B: '3'\n    ports:\n      - target: 80\n        published: 80\n        mode: host\n      - '443:443'\n    volumes:\n      - other:/data\n    deploy:\n      replicas: 4\n      placement:\n        constraints: [node.labels.ssd == true]\n";
    let loaded = load_with(&[], &[], &[("base.yml", base), ("over.yml", over)]).expect("loads");
    let web = &loaded.project.services["web"];
    assert_eq!(web.image, "web:2");
    assert_eq!(web.command.as_deref(), Some(&["c".to_owned()][..]));
    assert_eq!(web.environment["A"].as_deref(), Some("1"));
    assert_eq!(web.environment["B"].as_deref(), Some("3"));
    assert_eq!(web.ports.len(), 2);
    assert_eq!(web.ports[0].mode, compose::model::PublishMode::Host);
    assert_eq!(web.volumes.len(), 1);
    assert_eq!(web.volumes[0].source.as_deref(), Some("other"));
    assert_eq!(web.deploy.replicas, Some(4));
    assert_eq!(
        web.deploy.placement.constraints,
        ["node.role == worker", "node.labels.ssd == true"]
    );
    // An error in the second file names that file.
    let errors = load_with(
        &[],
        &[],
        &[
            ("base.yml", base),
            ("bad.yml", "services:\n  web:\n    deploy: {replicas: -1}\n"),
        ],
    )
    .expect_err("refused");
    assert_eq!(errors.0[0].file, "bad.yml");
}

#[test]
fn templates_and_long_syntax_are_normalised() {
    let loaded = load_text(
        "services:\n  web:\n    image: a\n    hostname: '{{.Node.Hostname}}-{{.Task.Slot}}'\n    command: echo \"hello world\"\n    stop_grace_period: 90s\n    ports: ['8000-8001:80-81/udp']\n    volumes:\n      - ./conf:/etc/conf:ro\n      - type: tmpfs\n        target: /tmp\n        tmpfs: {size: 64m}\n    environment: [FROM_ENV, MISSING]\n    ulimits:\n      nofile: {soft: 1024, hard: 2048}\n      nproc: 512\n",
    );
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let text = compose::emit::to_yaml(&loaded.project);
    let expected = r#"services:
  web:
    command:
    - echo
    - hello world
    environment:
      FROM_ENV: null
      MISSING: null
    hostname: "{{.Node.Hostname}}-{{.Task.Slot}}"
    image: a
    ports:
    - mode: ingress
      target: 80
      published: 8000
      protocol: udp
    - mode: ingress
      target: 81
      published: 8001
      protocol: udp
    stop_grace_period: 1m30s
    ulimits:
      nofile:
        soft: 1024
        hard: 2048
      nproc: 512
    volumes:
    - type: bind
      source: /stack/conf
      target: /etc/conf
      read_only: true
    - type: tmpfs
      target: /tmp
      tmpfs:
        size: 67108864
"#;
    assert_eq!(text, expected);
}

#[test]
fn environment_names_without_values_come_from_the_environment() {
    let loaded = load_with(
        &[],
        &[("FROM_ENV", "yes")],
        &[(
            "c.yml",
            "services:\n  web:\n    image: a\n    environment: [FROM_ENV]\n",
        )],
    )
    .expect("loads");
    assert_eq!(
        loaded.project.services["web"].environment["FROM_ENV"].as_deref(),
        Some("yes")
    );
}

#[test]
fn env_files_fill_in_under_environment() {
    let loaded = load_text(
        "services:\n  web:\n    image: a\n    env_file: [web.env, ./override.env]\n    environment: {LOG_LEVEL: debug}\n",
    )
    .expect("loads");
    let environment = &loaded.project.services["web"].environment;
    assert_eq!(environment["LOG_LEVEL"].as_deref(), Some("debug"));
    assert_eq!(environment["PORT"].as_deref(), Some("8080"));
    let errors =
        load_text("services:\n  web:\n    image: a\n    env_file: [web.env, missing.env]\n")
            .expect_err("missing file");
    assert_eq!(errors.0[0].path, "services.web.env_file.1");
    assert!(
        errors.0[0].message.contains("/stack/missing.env"),
        "{errors}"
    );
}

#[test]
fn unset_variables_warn_once() {
    let loaded = load_text("services:\n  web:\n    image: a:${TAG}\n    hostname: h${TAG}\n")
        .expect("loads");
    let warnings: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.contains("TAG"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.project.services["web"].image, "a:");
}

#[test]
fn skip_interpolation_keeps_references() {
    let files = [SourceFile {
        name: "c.yml".into(),
        text: "services:\n  web:\n    image: a:${TAG:-1}\n".into(),
    }];
    let loaded = compose::load(
        &files,
        &Environment::new(),
        &LoadOptions {
            interpolate: false,
            base_dir: "/".into(),
            sources: &read_stack_file,
        },
    )
    .expect("loads");
    assert_eq!(loaded.project.services["web"].image, "a:${TAG:-1}");
}

/// The environment `stack config` and `stack deploy` interpolate with: the process's variables
/// win over the `.env` file's, and a bad `.env` line is refused naming the file and line.
#[test]
fn process_variables_win_over_the_dotenv_file() {
    let dotenv = SourceFile {
        name: "/stack/.env".into(),
        text: "# defaults\nTAG=1\nONLY_IN_FILE='x y'\n".into(),
    };
    let env = compose::environment(Some(&dotenv), [("TAG".to_owned(), "2".to_owned())])
        .expect("environment");
    assert_eq!(env["TAG"], "2");
    assert_eq!(env["ONLY_IN_FILE"], "x y");
    let loaded = compose::load(
        &[SourceFile {
            name: "compose.yml".into(),
            text: "services:\n  web:\n    image: web:${TAG}-${ONLY_IN_FILE}\n".into(),
        }],
        &env,
        &LoadOptions {
            interpolate: true,
            base_dir: "/stack".into(),
            sources: &read_stack_file,
        },
    )
    .expect("loads");
    assert_eq!(loaded.project.services["web"].image, "web:2-x y");

    let without_file =
        compose::environment(None, [("A".to_owned(), "1".to_owned())]).expect("environment");
    assert_eq!(without_file.len(), 1);

    let bad = SourceFile {
        name: "/stack/.env".into(),
        text: "TAG=1\nnot a pair\n".into(),
    };
    let error = compose::environment(Some(&bad), []).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "/stack/.env:2: line \"not a pair\" is not KEY=value: fix or remove it"
    );
}

/// The fixtures here are a copy of the shared ones; when the shared folder is beside the
/// repository, they must not have drifted apart.
#[test]
fn fixture_copy_matches_shared_fixtures() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/compose");
    if !shared.is_dir() {
        eprintln!("skipping: {} is not there", shared.display());
        return;
    }
    for name in [
        "voting.yml",
        "monitoring.yml",
        "secrets-deps.yml",
        "bad/bad-memory.yml",
        "bad/dependency-cycle.yml",
        "bad/replicas-negative.yml",
        "bad/tabs.yml",
        "bad/undefined-config.yml",
        "bad/unknown-key.yml",
    ] {
        let ours = std::fs::read(fixtures().join(name)).expect(name);
        let theirs = std::fs::read(shared.join(name)).expect(name);
        assert!(
            ours == theirs,
            "{name} differs from the shared fixture: copy it again"
        );
    }
}

/// The deploy conversion: names scoped by stack, docker's defaults, units in proto form.
#[test]
fn project_converts_to_service_specs() {
    use compose::convert::{NAMESPACE_LABEL, to_specs};
    use shoal_proto::api;

    let voting = load_with(&["voting.yml"], &[], &[]).expect("voting");
    let specs = to_specs("vote", &voting.project);
    assert_eq!(
        specs.networks.keys().collect::<Vec<_>>(),
        ["vote_back", "vote_front"]
    );
    assert_eq!(specs.services.len(), 5);
    let counter = &specs.services["vote_counter"];
    let annotations = counter.annotations.as_ref().expect("annotations");
    assert_eq!(annotations.labels[NAMESPACE_LABEL], "vote");
    assert_eq!(annotations.labels["APP"], "VOTING");
    let task = counter.task.as_ref().expect("task");
    let restart = task.restart.as_ref().expect("restart");
    assert_eq!(
        restart.condition,
        api::restart_policy::RestartCondition::OnFailure as i32
    );
    assert_eq!(
        restart.window,
        Some(api::Duration {
            seconds: 90,
            nanos: 0
        })
    );
    assert_eq!(restart.max_attempts, 3);
    let targets: Vec<_> = task.networks.iter().map(|n| n.target.as_str()).collect();
    assert_eq!(targets, ["vote_back", "vote_front"]);
    assert_eq!(task.networks[0].aliases, ["counter"]);
    let Some(api::task_spec::Runtime::Container(store)) = specs.services["vote_store"]
        .task
        .as_ref()
        .and_then(|t| t.runtime.clone())
    else {
        panic!("store has a container")
    };
    assert_eq!(store.mounts[0].source, "vote_store-data");
    assert_eq!(store.mounts[0].r#type, api::mount::Type::Volume as i32);
    let ballot = &specs.services["vote_ballot"];
    let update = ballot.update.as_ref().expect("update");
    assert_eq!(update.parallelism, 1);
    assert_eq!(
        update.order,
        api::update_config::UpdateOrder::StartFirst as i32
    );
    let ports = &ballot.endpoint.as_ref().expect("endpoint").ports;
    assert_eq!((ports[0].published_port, ports[0].target_port), (15000, 80));

    let monitoring = load_with(&["monitoring.yml"], &[], &[]).expect("monitoring");
    let specs = to_specs("mon", &monitoring.project);
    // Services without networks share the stack's default network.
    assert!(specs.networks.contains_key("mon_default"));
    assert!(matches!(
        specs.services["mon_node-agent"].mode,
        Some(api::service_spec::Mode::Global(_))
    ));
    assert!(matches!(
        specs.services["mon_schema-setup"].mode,
        Some(api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 2
        }))
    ));
    let agent_task = specs.services["mon_node-agent"].task.clone().expect("task");
    assert_eq!(
        agent_task
            .resources
            .and_then(|r| r.limits)
            .map(|l| l.memory_bytes),
        Some(32 << 20)
    );
    let collector_task = specs.services["mon_collector"].task.clone().expect("task");
    let placement = collector_task.placement.expect("placement");
    assert_eq!(placement.max_replicas, 1);
    assert_eq!(
        specs.config_files.keys().collect::<Vec<_>>(),
        ["mon_collector_conf"]
    );

    let deps = load_with(&["secrets-deps.yml"], &[], &[]).expect("secrets-deps");
    let specs = to_specs("app", &deps.project);
    assert_eq!(
        specs.secret_files.get("app_api_token").map(String::as_str),
        Some("/stack/api_token.txt")
    );
    let Some(api::task_spec::Runtime::Container(api)) = specs.services["app_api"]
        .task
        .as_ref()
        .and_then(|t| t.runtime.clone())
    else {
        panic!("api has a container")
    };
    let secret_targets: Vec<_> = api
        .secrets
        .iter()
        .map(|s| match &s.target {
            Some(api::secret_reference::Target::File(f)) => {
                (s.secret_name.clone(), f.name.clone(), f.mode)
            }
            None => (s.secret_name.clone(), String::new(), None),
        })
        .collect();
    assert_eq!(
        secret_targets,
        [
            (
                "app_api_token".to_owned(),
                "api_token".to_owned(),
                Some(0o444)
            ),
            ("tls_key".to_owned(), "server.key".to_owned(), Some(0o400)),
        ]
    );
    let health = api.healthcheck.expect("healthcheck");
    assert_eq!(
        health.interval,
        Some(api::Duration {
            seconds: 2,
            nanos: 0
        })
    );
    assert_eq!(health.retries, 2);
    assert_eq!(api.env, ["TOKEN_FILE=/run/secrets/api_token"]);
}

/// What `stack config` prints is itself a valid compose file that prints the same again.
#[test]
fn printed_config_reads_back_unchanged() {
    for (name, env) in [
        ("voting.yml", &[][..]),
        ("monitoring.yml", &[][..]),
        ("secrets-deps.yml", &[("WEB_TAG", "2")][..]),
    ] {
        let printed = config_of(&[name], env);
        let files = [SourceFile {
            name: format!("printed-{name}"),
            text: printed.clone(),
        }];
        let options = LoadOptions {
            interpolate: false,
            base_dir: "/elsewhere".into(),
            sources: &read_stack_file,
        };
        let reread = match compose::load(&files, &Environment::new(), &options) {
            Ok(loaded) => compose::emit::to_yaml(&loaded.project),
            Err(errors) => panic!("printed {name} does not load:\n{errors}\n{printed}"),
        };
        assert_eq!(reread, printed, "{name}");
    }
}

/// One compose key that takes an enum's words: the file with a given word, the key's path in
/// errors, and where the word lands in the service spec `stack deploy` sends.
struct EnumKey<T: 'static> {
    file: fn(&str) -> String,
    path: &'static str,
    value_in: fn(&shoal_proto::api::ServiceSpec) -> Option<T>,
    /// The values compose takes, when it takes fewer than the enum has.
    only: Option<&'static [T]>,
}

/// Loads `key`'s file with each of spec's words for `T` and checks the word becomes the value
/// spec gives it, prints back as itself, and that a word spec does not know is refused with
/// spec's own message (the one a flag gets), at the key's path.
fn check_enum_key<T>(key: EnumKey<T>)
where
    T: spec::enums::TextForm + std::fmt::Debug,
{
    for (word, value) in T::FORMS {
        if key.only.is_some_and(|only| !only.contains(value)) {
            continue;
        }
        let text = (key.file)(word);
        let loaded = match load_text(&text) {
            Ok(loaded) => loaded,
            Err(errors) => panic!("{} {word}: {errors}", key.path),
        };
        let specs = compose::convert::to_specs("s", &loaded.project);
        let spec = &specs.services["s_web"];
        assert_eq!((key.value_in)(spec), Some(*value), "{} {word}", key.path);
        let printed = compose::emit::to_yaml(&loaded.project);
        assert!(printed.contains(&format!(": {word}\n")), "{printed}");
    }
    let wrong = "no-such-word";
    let errors = load_text(&(key.file)(wrong)).expect_err(key.path);
    let expected = match key.only {
        Some(only) => T::parse_among(wrong, only),
        None => T::parse(wrong),
    }
    .expect_err(wrong)
    .to_string();
    assert!(
        errors
            .0
            .iter()
            .any(|error| error.path == key.path && error.message.starts_with(&expected)),
        "{}: expected {expected:?} in\n{errors}",
        key.path
    );
}

fn container(spec: &shoal_proto::api::ServiceSpec) -> Option<&shoal_proto::api::ContainerSpec> {
    match spec.task.as_ref()?.runtime.as_ref()? {
        shoal_proto::api::task_spec::Runtime::Container(container) => Some(container),
        _ => None,
    }
}

/// Compose's enum words are spec's `TextForm` tables, the same ones the CLI's flags, the
/// manager's messages and `inspect` use: every word of each table loads through compose's parser
/// for its key into the value spec gives it.
#[test]
fn enum_words_are_the_spec_tables() {
    use shoal_proto::api::{
        endpoint_spec::ResolutionMode, mount, port_config, restart_policy::RestartCondition,
        service_dependency, update_config,
    };
    use spec::enums::ModeName;

    fn enum_of<T: TryFrom<i32>>(value: i32) -> Option<T> {
        T::try_from(value).ok()
    }
    check_enum_key::<ModeName>(EnumKey {
        file: |word| format!("services:\n  web:\n    image: a\n    deploy:\n      mode: {word}\n"),
        path: "services.web.deploy.mode",
        value_in: |spec| spec.mode.as_ref().map(ModeName::of),
        only: None,
    });
    check_enum_key::<ResolutionMode>(EnumKey {
        file: |word| {
            format!("services:\n  web:\n    image: a\n    deploy:\n      endpoint_mode: {word}\n")
        },
        path: "services.web.deploy.endpoint_mode",
        value_in: |spec| enum_of(spec.endpoint.as_ref()?.mode),
        only: None,
    });
    check_enum_key::<update_config::FailureAction>(EnumKey {
        file: |word| {
            format!(
                "services:\n  web:\n    image: a\n    deploy:\n      update_config:\n        failure_action: {word}\n"
            )
        },
        path: "services.web.deploy.update_config.failure_action",
        value_in: |spec| enum_of(spec.update.as_ref()?.failure_action),
        only: None,
    });
    check_enum_key::<update_config::UpdateOrder>(EnumKey {
        file: |word| {
            format!(
                "services:\n  web:\n    image: a\n    deploy:\n      rollback_config:\n        order: {word}\n"
            )
        },
        path: "services.web.deploy.rollback_config.order",
        value_in: |spec| enum_of(spec.rollback.as_ref()?.order),
        only: None,
    });
    check_enum_key::<RestartCondition>(EnumKey {
        file: |word| {
            format!(
                "services:\n  web:\n    image: a\n    deploy:\n      restart_policy:\n        condition: {word}\n"
            )
        },
        path: "services.web.deploy.restart_policy.condition",
        value_in: |spec| enum_of(spec.task.as_ref()?.restart.as_ref()?.condition),
        only: None,
    });
    check_enum_key::<port_config::PublishMode>(EnumKey {
        file: |word| {
            format!(
                "services:\n  web:\n    image: a\n    ports:\n      - target: 80\n        mode: {word}\n"
            )
        },
        path: "services.web.ports.0.mode",
        value_in: |spec| enum_of(spec.endpoint.as_ref()?.ports.first()?.publish_mode),
        only: None,
    });
    check_enum_key::<port_config::Protocol>(EnumKey {
        file: |word| {
            format!(
                "services:\n  web:\n    image: a\n    ports:\n      - target: 80\n        protocol: {word}\n"
            )
        },
        path: "services.web.ports.0.protocol",
        value_in: |spec| enum_of(spec.endpoint.as_ref()?.ports.first()?.protocol),
        only: None,
    });
    check_enum_key::<mount::Type>(EnumKey {
        file: |word| {
            // A tmpfs has no source; a bind's is a host path, a volume's a declared volume.
            let source = match word {
                "tmpfs" => "",
                "bind" => "        source: /srv\n",
                _ => "        source: data\n",
            };
            format!(
                "services:\n  web:\n    image: a\n    volumes:\n      - type: {word}\n{source}        target: /data\nvolumes:\n  data:\n"
            )
        },
        path: "services.web.volumes.0.type",
        value_in: |spec| enum_of(container(spec)?.mounts.first()?.r#type),
        only: Some(&[mount::Type::Bind, mount::Type::Volume, mount::Type::Tmpfs]),
    });
    check_enum_key::<mount::bind_options::Propagation>(EnumKey {
        file: |word| {
            format!(
                "services:\n  web:\n    image: a\n    volumes:\n      - type: bind\n        source: /srv\n        target: /data\n        bind:\n          propagation: {word}\n"
            )
        },
        path: "services.web.volumes.0.bind.propagation",
        value_in: |spec| {
            enum_of(
                container(spec)?
                    .mounts
                    .first()?
                    .bind_options
                    .as_ref()?
                    .propagation,
            )
        },
        only: None,
    });
    check_enum_key::<service_dependency::Condition>(EnumKey {
        file: |word| {
            format!(
                "services:\n  web:\n    image: a\n    depends_on:\n      db:\n        condition: {word}\n        required: false\n  db:\n    image: b\n"
            )
        },
        // Not required, so that `service_started` prints in the long form too.
        path: "services.web.depends_on.db.condition",
        value_in: |spec| enum_of(spec.depends_on.first()?.condition),
        only: None,
    });
}

/// A misspelt word is answered with the word meant; a rollback that would roll back is refused
/// with spec's rule; a short volume's propagation is spec's word.
#[test]
fn enum_mistakes_get_the_word_meant_and_specs_rules() {
    let errors = load_text(
        "services:\n  web:\n    image: a\n    deploy:\n      update_config:\n        order: stop-frist\n      rollback_config:\n        failure_action: rollback\n",
    )
    .expect_err("refused");
    let text = errors.to_string();
    assert!(
        text.contains(
            "compose.yml:6: services.web.deploy.update_config.order: invalid update order \"stop-frist\": use stop-first or start-first; did you mean `stop-first`?"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "compose.yml:8: services.web.deploy.rollback_config.failure_action: a rollback can't itself roll back on failure: use pause or continue"
        ),
        "{text}"
    );
    let errors = load_text(
        "services:\n  web:\n    image: a\n    volumes:\n      - type: bind\n        source: /srv\n        target: /data\n        bind: {propagation: sideways}\n",
    )
    .expect_err("an unknown propagation is refused, not made rprivate");
    assert!(
        errors
            .to_string()
            .contains("invalid bind propagation \"sideways\""),
        "{errors}"
    );
    let loaded = load_text("services:\n  web:\n    image: a\n    volumes: ['/srv:/data:rslave']\n")
        .expect("loads");
    let specs = compose::convert::to_specs("s", &loaded.project);
    let mount = &container(&specs.services["s_web"])
        .expect("container")
        .mounts[0];
    assert_eq!(
        mount.bind_options.as_ref().map(|b| b.propagation),
        Some(shoal_proto::api::mount::bind_options::Propagation::Rslave as i32)
    );
}

/// Networks as docker's stack deploy makes them: only those a service uses, `STACK_default`
/// for services naming none, external ones listed to be looked up, and spec's network rules
/// applied with the key path.
#[test]
fn stack_networks_follow_docker() {
    use compose::convert::to_specs;

    let loaded = load_text(
        "services:
  web:
    image: a
    networks:
      front:
        aliases: [www]
      shared: {}
  worker:
    image: a
networks:
  front:
    driver: overlay
    driver_opts: {encrypted: '', com.docker.network.driver.mtu: '1400'}
    attachable: true
    internal: true
    labels: {tier: web}
    ipam:
      config:
        - {subnet: 10.9.0.0/24, ip_range: 10.9.0.128/25, gateway: 10.9.0.1}
  unused: {}
  shared:
    external: true
    name: corp-net
",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let specs = to_specs("app", &loaded.project);
    assert_eq!(
        specs.networks.keys().collect::<Vec<_>>(),
        ["app_default", "app_front"]
    );
    assert_eq!(
        specs.external_networks.iter().collect::<Vec<_>>(),
        ["corp-net"]
    );
    let front = &specs.networks["app_front"];
    assert!(front.internal && front.attachable);
    let driver = front.driver_config.as_ref().expect("driver");
    assert_eq!(driver.name, "overlay");
    assert_eq!(driver.options["com.docker.network.driver.mtu"], "1400");
    let pool = &front.ipam.as_ref().expect("ipam").configs[0];
    assert_eq!(
        (
            pool.subnet.as_str(),
            pool.range.as_str(),
            pool.gateway.as_str()
        ),
        ("10.9.0.0/24", "10.9.0.128/25", "10.9.0.1")
    );
    assert!(spec::validate::network_spec(front).is_ok());
    let web = specs.services["app_web"].task.as_ref().expect("task");
    let attachments: Vec<_> = web
        .networks
        .iter()
        .map(|n| (n.target.as_str(), n.aliases.clone()))
        .collect();
    assert_eq!(
        attachments,
        [
            ("app_front", vec!["web".to_owned(), "www".to_owned()]),
            ("corp-net", vec!["web".to_owned()]),
        ]
    );
    let worker = specs.services["app_worker"].task.as_ref().expect("task");
    assert_eq!(worker.networks[0].target, "app_default");

    for (network, expected) in [
        (
            "driver: bridge",
            "network driver \"bridge\" is not supported",
        ),
        (
            "ipam: {config: [{subnet: 10.9.0.0/33}]}",
            "invalid subnet \"10.9.0.0/33\"",
        ),
        (
            "ipam: {config: [{subnet: 10.9.0.0/24, gateway: 10.8.0.1}]}",
            "gateway 10.8.0.1 is not inside subnet 10.9.0.0/24",
        ),
        (
            "driver_opts: {com.docker.network.driver.mtu: '9'}",
            "from 68 to 65535",
        ),
    ] {
        let text = format!(
            "services:\n  web:\n    image: a\n    networks: [front]\nnetworks:\n  front:\n    {network}\n"
        );
        let errors = match load_text(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(errors) => errors.to_string(),
        };
        assert!(
            errors.contains("networks.front: ") && errors.contains(expected),
            "{errors}\nshould say: networks.front: …{expected}"
        );
    }
}

#[test]
fn name_resolution_keys_follow_the_flags_rules() {
    let loaded = load_text(
        "services:\n  web:\n    image: a\n    dns: [10.0.0.2, '2001:db8:0::53']\n    dns_search: example.com.\n    dns_opt: [ndots:2]\n    extra_hosts: ['db:10.0.0.5', 'v6=[2001:db8::5]']\n  api:\n    image: a\n    extra_hosts:\n      cache: 10.0.0.6\n",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert!(
        loaded.warnings.iter().all(|w| !w.contains("dns_opt")),
        "{:?}",
        loaded.warnings
    );
    let specs = compose::convert::to_specs("s", &loaded.project);
    let container = |name: &str| match specs.services[name]
        .task
        .as_ref()
        .and_then(|task| task.runtime.as_ref())
    {
        Some(shoal_proto::api::task_spec::Runtime::Container(container)) => container.clone(),
        _ => panic!("{name} runs no container"),
    };
    let web = container("s_web");
    let dns = web.dns_config.clone().unwrap();
    assert_eq!(dns.nameservers, ["10.0.0.2", "2001:db8::53"]);
    assert_eq!(dns.search, ["example.com"]);
    assert_eq!(dns.options, ["ndots:2"]);
    assert_eq!(web.hosts, ["10.0.0.5 db", "2001:db8::5 v6"]);
    assert_eq!(container("s_api").hosts, ["10.0.0.6 cache"]);
    assert!(container("s_api").dns_config.is_none());
    assert!(config_text(&loaded).contains("dns_opt:"));

    for (text, expected) in [
        (
            "services:\n  web:\n    image: a\n    dns: dns.google\n",
            spec::dns::nameserver("dns.google").unwrap_err(),
        ),
        (
            "services:\n  web:\n    image: a\n    dns_search: ['-x']\n",
            spec::dns::search_domain("-x").unwrap_err(),
        ),
        (
            "services:\n  web:\n    image: a\n    dns_opt: ['a b']\n",
            spec::dns::resolver_option("a b").unwrap_err(),
        ),
        (
            "services:\n  web:\n    image: a\n    extra_hosts: ['db:10.0.0']\n",
            spec::dns::extra_host("db:10.0.0").unwrap_err(),
        ),
        (
            "services:\n  web:\n    image: a\n    extra_hosts:\n      db: nowhere\n",
            spec::dns::host_mapping("db", "nowhere").unwrap_err(),
        ),
    ] {
        let errors = match load_text(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(errors) => errors.to_string(),
        };
        assert!(
            errors.contains(&expected.to_string()),
            "{errors}\nshould carry spec's message: {expected}"
        );
    }
}

fn config_text(loaded: &Loaded) -> String {
    compose::emit::to_yaml(&loaded.project)
}

/// A ulimit's name is taken in any case and written in lower case, as `--ulimit` takes it
/// (both read spec's list).
#[test]
fn ulimit_names_take_any_case_as_the_flag_does() {
    let loaded = load_text("services:\n  web:\n    image: a\n    ulimits:\n      NOFILE: 10\n")
        .expect("loads");
    let ulimits = &loaded.project.services["web"].ulimits;
    assert_eq!(ulimits.keys().collect::<Vec<_>>(), ["nofile"]);
}
