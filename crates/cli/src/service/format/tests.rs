//! The service tables, inspect JSON and text against docker's.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use shoal_proto::api;

use super::*;

fn ts(seconds: i64) -> api::Timestamp {
    api::Timestamp { seconds, nanos: 0 }
}

#[test]
fn tables_pad_like_tabwriter() {
    let text = table(
        &["ID", "NAME"],
        &[
            vec!["id-foo".into(), "web".into()],
            vec!["a".into(), "b".into()],
        ],
    );
    assert_eq!(text, "ID        NAME\nid-foo    web\na         b\n");
    let text = table(&["LONGER-HEADER", "X"], &[vec!["1".into(), "2".into()]]);
    assert_eq!(text, "LONGER-HEADER   X\n1               2\n");
}

#[test]
fn natural_order_compares_numbers_by_value() {
    let mut names = vec!["node-10-foo", "node-2-foo", "node-1-foo", "web.10", "web.9"];
    names.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(
        names,
        ["node-1-foo", "node-2-foo", "node-10-foo", "web.9", "web.10"]
    );
}

#[test]
fn small_formatters() {
    assert_eq!(truncate_id("abcdefghijklmnopqrstuvwxy"), "abcdefghijkl");
    assert_eq!(truncate_id("short"), "short");
    assert_eq!(ellipsis("0123456789", 5), "0123…");
    assert_eq!(ellipsis("0123", 5), "0123");
    assert_eq!(display_image("nginx:1.25@sha256:abc"), "nginx:1.25");
    assert_eq!(display_image("nginx@sha256:abc"), "nginx@sha256:abc");
    assert_eq!(display_image("localhost:5000/app"), "localhost:5000/app");
    assert_eq!(cpus_text(500_000_000), "0.5");
    assert_eq!(cpus_text(2_000_000_000), "2");
    assert_eq!(
        go_time_string(Some(&ts(1_257_894_000))),
        "2009-11-10 23:00:00 +0000 utc"
    );
    assert_eq!(
        log_prefix("web", 1, Some("abcdefabcdef"), "node1", 2),
        "web.1.abcdefabcdef@node1     | "
    );
    assert_eq!(
        log_prefix("web", 10, None, "node1", 2),
        "web.10@node1    | "
    );
}

fn service(name: &str, mode: api::service_spec::Mode, max_replicas: u64) -> api::Service {
    api::Service {
        id: format!("{name}0123456789abcdef"),
        spec: Some(api::ServiceSpec {
            annotations: Some(api::Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(api::TaskSpec {
                runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                    image: "nginx:alpine@sha256:0123".into(),
                    ..Default::default()
                })),
                placement: Some(Box::new(api::Placement {
                    max_replicas,
                    ..Default::default()
                })),
                ..Default::default()
            }),
            mode: Some(mode),
            ..Default::default()
        }),
        endpoint: Some(api::Endpoint {
            ports: [(80, 8080), (81, 8081), (443, 8443)]
                .into_iter()
                .map(|(target, published)| api::PortConfig {
                    target_port: target,
                    published_port: published,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn service_ls_rows_match_docker() {
    use api::service_spec::Mode;
    let services = vec![
        service(
            "web10",
            Mode::Replicated(api::ReplicatedService { replicas: 10 }),
            2,
        ),
        service(
            "job",
            Mode::ReplicatedJob(api::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 3,
            }),
            0,
        ),
        service("web9", Mode::Global(api::GlobalService {}), 0),
    ];
    let status = |running, desired, completed| api::ServiceStatus {
        running_tasks: running,
        desired_tasks: desired,
        completed_tasks: completed,
    };
    let rows = service_rows(
        &services,
        &[status(7, 10, 0), status(0, 1, 3), status(1, 1, 0)],
    );
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["job", "web9", "web10"]);
    assert_eq!(rows[0].replicas, "0/1 (3/3 completed)");
    assert_eq!(rows[0].mode, "replicated job");
    assert_eq!(rows[1].replicas, "1/1");
    assert_eq!(rows[2].replicas, "7/10 (max 2 per node)");
    assert_eq!(rows[2].id, "web100123456");
    assert_eq!(rows[2].image, "nginx:alpine");
    assert_eq!(rows[2].ports, "*:8080-8081->80-81/tcp, *:8443->443/tcp");
    // Ports published on the host, and those not yet given a number, are not the mesh's.
    let mut mixed = services[2].clone();
    mixed.endpoint.as_mut().unwrap().ports = vec![
        api::PortConfig {
            target_port: 53,
            published_port: 30000,
            protocol: api::port_config::Protocol::Udp as i32,
            ..Default::default()
        },
        api::PortConfig {
            target_port: 80,
            published_port: 9090,
            publish_mode: api::port_config::PublishMode::Host as i32,
            ..Default::default()
        },
        api::PortConfig {
            target_port: 81,
            ..Default::default()
        },
    ];
    assert_eq!(service_ports(&mixed), "*:30000->53/udp");
    assert_eq!(
        rows[2].json().to_string(),
        r#"{"ID":"web100123456","Image":"nginx:alpine","Mode":"replicated","Name":"web10","Ports":"*:8080-8081->80-81/tcp, *:8443->443/tcp","Replicas":"7/10 (max 2 per node)"}"#
    );
}

fn task(id: &str, slot: u64, created: i64, state: api::TaskState, err: &str) -> api::Task {
    api::Task {
        id: id.into(),
        meta: Some(api::Meta {
            created_at: Some(ts(created)),
            ..Default::default()
        }),
        service_id: "svc1".into(),
        slot,
        node_id: "node1".into(),
        spec: Some(api::TaskSpec {
            runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                image: "nginx:alpine".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        status: Some(api::TaskStatus {
            timestamp: Some(ts(created)),
            state: state as i32,
            err: err.into(),
            ..Default::default()
        }),
        desired_state: api::TaskState::Running as i32,
        ..Default::default()
    }
}

#[test]
fn service_ps_groups_slots_newest_first() {
    let services = HashMap::from([("svc1".to_owned(), "web".to_owned())]);
    let nodes = HashMap::from([("node1".to_owned(), "host-a".to_owned())]);
    let names = TaskNames {
        services: &services,
        nodes: &nodes,
        truncate: true,
        no_resolve: false,
    };
    let tasks = vec![
        task(
            "old-task-id-0000",
            1,
            100,
            api::TaskState::Failed,
            "No such image: nginx:alpine here",
        ),
        task("new-task-id-0000", 1, 200, api::TaskState::Running, ""),
        task("slot10-task-0000", 10, 150, api::TaskState::Running, ""),
        task("slot2-task-00000", 2, 150, api::TaskState::Pending, ""),
    ];
    let now = UNIX_EPOCH + Duration::from_secs(205);
    let rows = task_rows(&tasks, &names, now);
    let table_names: Vec<&str> = rows.iter().map(|r| r.table_name.as_str()).collect();
    assert_eq!(table_names, ["web.1", " \\_ web.1", "web.2", "web.10"]);
    assert_eq!(rows[0].current_state, "Running 5 seconds ago");
    assert_eq!(rows[0].node, "host-a");
    assert_eq!(rows[0].id, "new-task-id-");
    assert_eq!(rows[1].error, "\"No such image: nginx:alpine h…\"");
    assert_eq!(rows[1].current_state, "Failed about a minute ago");
    assert_eq!(rows[1].name, "web.1");
    assert_eq!(rows[1].desired_state, "Running");
    let global = api::Task {
        slot: 0,
        ..task("global-task", 0, 100, api::TaskState::Running, "")
    };
    assert_eq!(task_name(&global, &names), "web.node1");
}

#[test]
fn ps_filters() -> anyhow::Result<()> {
    let filter = TaskFilter::parse(&["desired-state=running".into()])?;
    let running = task("t1", 1, 0, api::TaskState::Running, "");
    let mut shutdown = running.clone();
    shutdown.desired_state = api::TaskState::Shutdown as i32;
    assert!(filter.keeps(&running, "web.1", "host"));
    assert!(!filter.keeps(&shutdown, "web.1", "host"));
    let error = TaskFilter::parse(&["desired-state=sleeping".into()])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("use running, shutdown"), "{error}");
    assert!(TaskFilter::parse(&["colour=red".into()]).is_err());
    Ok(())
}

#[test]
fn inspect_pretty_is_docker_shaped() {
    let mut svc = service(
        "web",
        api::service_spec::Mode::Replicated(api::ReplicatedService { replicas: 2 }),
        0,
    );
    svc.meta = Some(api::Meta {
        version: Some(api::Version { index: 11 }),
        created_at: Some(ts(1_700_000_000)),
        updated_at: Some(ts(1_700_000_001)),
    });
    if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.restart = Some(api::RestartPolicy {
            condition: api::restart_policy::RestartCondition::OnFailure as i32,
            delay: Some(api::Duration {
                seconds: 5,
                nanos: 0,
            }),
            max_attempts: 3,
            window: None,
        });
        task.resources = Some(Box::new(api::ResourceRequirements {
            limits: Some(api::Resources {
                memory_bytes: 16 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    let pretty = service_pretty(&svc, &HashMap::new());
    assert!(
        pretty.contains(
            "Ports:\n PublishedPort = 8080\n  Protocol = tcp\n  TargetPort = 80\n  PublishMode = ingress\n  TrafficPolicy = prefer-local\n PublishedPort = 8081\n"
        ),
        "{pretty}"
    );
    assert!(
        pretty.contains("  TrafficPolicy = prefer-local \n"),
        "{pretty}"
    );
    assert!(
        pretty.contains("Service Mode:\tReplicated\n Replicas:\t2\n"),
        "{pretty}"
    );
    assert!(pretty.contains("  Memory:\t16MiB\n"), "{pretty}");
    assert!(!pretty.contains("Networks:"), "{pretty}");
}

#[test]
fn networks_and_name_resolution_show_in_pretty() {
    let mut svc = service(
        "web",
        api::service_spec::Mode::Replicated(api::ReplicatedService { replicas: 1 }),
        0,
    );
    let spec = svc.spec.as_mut().unwrap();
    spec.endpoint = Some(api::EndpointSpec {
        mode: api::endpoint_spec::ResolutionMode::Dnsrr as i32,
        ports: Vec::new(),
    });
    let task = spec.task.as_mut().unwrap();
    task.networks = vec![
        api::NetworkAttachmentConfig {
            target: "id-front".into(),
            aliases: vec!["api".into()],
            driver_attachment_opts: [("k".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        },
        api::NetworkAttachmentConfig {
            target: "id-gone".into(),
            ..Default::default()
        },
    ];
    let names: HashMap<String, String> = [("id-front".to_owned(), "front".to_owned())].into();
    let pretty = service_pretty(&svc, &names);
    assert!(
        pretty.contains("\nNetworks: front id-gone \nEndpoint Mode:\tdnsrr\n"),
        "{pretty}"
    );
}
