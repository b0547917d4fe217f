//! Services: the inspect document, specs through Docker's JSON and back, what Docker's clients
//! send, and refusals.

use serde_json::{Value, json};

use super::*;
use crate::shape::service::{
    service_inspect_json, service_spec_from_json, service_spec_json, service_status_json,
};

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
fn inspect_json_is_docker_shaped() {
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
            delay: seconds(5),
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
    let value = service_inspect_json(&svc);
    assert_eq!(value["ID"], "web0123456789abcdef");
    assert_eq!(value["Version"]["Index"], 11);
    assert_eq!(value["CreatedAt"], "2023-11-14T22:13:20Z");
    assert_eq!(value["Spec"]["Name"], "web");
    assert_eq!(value["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    let template = &value["Spec"]["TaskTemplate"];
    assert_eq!(
        template["ContainerSpec"]["Image"],
        "nginx:alpine@sha256:0123"
    );
    assert_eq!(template["RestartPolicy"]["Condition"], "on-failure");
    assert_eq!(template["RestartPolicy"]["Delay"], 5_000_000_000i64);
    assert_eq!(template["RestartPolicy"]["MaxAttempts"], 3);
    assert_eq!(template["Resources"]["Limits"]["MemoryBytes"], 16 << 20);
    assert_eq!(template["Placement"], json!({}));
    assert_eq!(
        value["Endpoint"]["Ports"][0],
        json!({"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress", "TrafficPolicy": "prefer-local"})
    );
}

#[test]
fn networks_and_name_resolution_show_in_docker_shape() {
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
    if let Some(api::task_spec::Runtime::Container(container)) = task.runtime.as_mut() {
        container.hosts = vec!["10.0.0.5 db".into()];
        container.dns_config = Some(Box::new(api::container_spec::DnsConfig {
            nameservers: vec!["10.0.0.2".into()],
            search: Vec::new(),
            options: vec!["ndots:2".into()],
        }));
    }
    let value = service_inspect_json(&svc);
    let template = &value["Spec"]["TaskTemplate"];
    assert_eq!(
        template["Networks"],
        json!([
            {"Target": "id-front", "Aliases": ["api"], "DriverOpts": {"k": "v"}},
            {"Target": "id-gone"},
        ])
    );
    assert_eq!(
        template["ContainerSpec"]["DNSConfig"],
        json!({"Nameservers": ["10.0.0.2"], "Options": ["ndots:2"]})
    );
    assert_eq!(template["ContainerSpec"]["Hosts"], json!(["10.0.0.5 db"]));
    assert_eq!(value["Spec"]["EndpointSpec"]["Mode"], "dnsrr");
}

fn container_task(container: api::ContainerSpec) -> api::TaskSpec {
    api::TaskSpec {
        runtime: Some(api::task_spec::Runtime::Container(container)),
        ..Default::default()
    }
}

fn named(name: &str, task: api::TaskSpec) -> api::ServiceSpec {
    api::ServiceSpec {
        annotations: Some(api::Annotations {
            name: name.into(),
            ..Default::default()
        }),
        task: Some(task),
        ..Default::default()
    }
}

/// A spec that sets every field Docker's JSON carries.
fn everything() -> api::ServiceSpec {
    use api::mount::{self, bind_options::Propagation};
    let container = api::ContainerSpec {
        image: "nginx:1.27@sha256:0123".into(),
        labels: [("c".to_owned(), "d".to_owned())].into(),
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
        env: vec!["A=1".into(), "B=".into()],
        dir: "/app".into(),
        user: "1000:1000".into(),
        groups: vec!["staff".into()],
        privileges: Some(Box::new(api::PrivilegesSpec {
            credential_spec: Some(api::privileges_spec::CredentialSpec {
                source: Some(api::privileges_spec::credential_spec::Source::Registry(
                    "spec".into(),
                )),
            }),
            selinux_context: Some(api::privileges_spec::SeLinuxContext {
                disable: false,
                user: "u".into(),
                role: "r".into(),
                r#type: "t".into(),
                level: "s0".into(),
            }),
            no_new_privileges: true,
        })),
        init: Some(false),
        tty: true,
        open_stdin: true,
        read_only: true,
        stop_signal: "SIGINT".into(),
        mounts: vec![
            api::Mount {
                r#type: mount::Type::Bind as i32,
                source: "/srv".into(),
                target: "/srv".into(),
                readonly: true,
                bind_options: Some(mount::BindOptions {
                    propagation: Propagation::Rshared as i32,
                    nonrecursive: true,
                    create_mountpoint: true,
                }),
                ..Default::default()
            },
            api::Mount {
                r#type: mount::Type::Volume as i32,
                source: "data".into(),
                target: "/data".into(),
                volume_options: Some(mount::VolumeOptions {
                    nocopy: true,
                    labels: [("v".to_owned(), "1".to_owned())].into(),
                    driver_config: Some(api::Driver {
                        name: "local".into(),
                        options: [("type".to_owned(), "nfs".to_owned())].into(),
                    }),
                    subpath: "sub".into(),
                }),
                ..Default::default()
            },
            api::Mount {
                r#type: mount::Type::Tmpfs as i32,
                target: "/tmp".into(),
                tmpfs_options: Some(mount::TmpfsOptions {
                    size_bytes: 16 << 20,
                    mode: 0o1777,
                    options: r#"[["noexec"],["uid","1000"]]"#.into(),
                }),
                ..Default::default()
            },
        ],
        stop_grace_period: seconds(90),
        pull_options: None,
        secrets: vec![api::SecretReference {
            secret_id: "s1".into(),
            secret_name: "db_pw".into(),
            target: Some(api::secret_reference::Target::File(
                api::secret_reference::FileTarget {
                    name: "db_pw".into(),
                    uid: "7".into(),
                    gid: "8".into(),
                    mode: Some(0o400),
                },
            )),
        }],
        configs: vec![
            api::ConfigReference {
                config_id: "c1".into(),
                config_name: "site".into(),
                target: Some(api::config_reference::Target::File(
                    api::config_reference::FileTarget {
                        name: "/etc/site.conf".into(),
                        uid: "0".into(),
                        gid: "0".into(),
                        mode: Some(0),
                    },
                )),
            },
            api::ConfigReference {
                config_id: "c2".into(),
                config_name: "cred".into(),
                target: Some(api::config_reference::Target::Runtime(
                    api::config_reference::RuntimeTarget {},
                )),
            },
        ],
        hosts: vec!["10.0.0.5 db".into()],
        dns_config: Some(Box::new(api::container_spec::DnsConfig {
            nameservers: vec!["10.0.0.2".into()],
            search: vec!["example.org".into()],
            options: vec!["ndots:2".into()],
        })),
        healthcheck: Some(Box::new(api::HealthConfig {
            test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
            interval: seconds(10),
            timeout: seconds(3),
            retries: 5,
            start_period: seconds(30),
            start_interval: seconds(1),
        })),
        isolation: api::container_spec::Isolation::Process as i32,
        pid_limit: 100,
        sysctls: [("net.core.somaxconn".to_owned(), "512".to_owned())].into(),
        capability_add: vec!["CAP_NET_ADMIN".into()],
        capability_drop: vec!["CAP_MKNOD".into()],
        ulimits: vec![api::container_spec::Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048,
        }],
        oom_score_adj: "-500".into(),
    };
    let task = api::TaskSpec {
        resources: Some(Box::new(api::ResourceRequirements {
            limits: Some(api::Resources {
                nano_cpus: 1_500_000_000,
                memory_bytes: 1 << 30,
                generic: Vec::new(),
            }),
            reservations: Some(api::Resources {
                nano_cpus: 250_000_000,
                memory_bytes: 64 << 20,
                generic: vec![
                    api::GenericResource {
                        resource: Some(api::generic_resource::Resource::DiscreteResourceSpec(
                            api::DiscreteGenericResource {
                                kind: "gpu".into(),
                                value: 2,
                            },
                        )),
                    },
                    api::GenericResource {
                        resource: Some(api::generic_resource::Resource::NamedResourceSpec(
                            api::NamedGenericResource {
                                kind: "ssd".into(),
                                value: "fast".into(),
                            },
                        )),
                    },
                ],
            }),
            swap_bytes: Some(0),
            memory_swappiness: Some(10),
        })),
        restart: Some(api::RestartPolicy {
            condition: api::restart_policy::RestartCondition::OnFailure as i32,
            delay: seconds(0),
            max_attempts: 3,
            window: seconds(120),
        }),
        placement: Some(Box::new(api::Placement {
            constraints: vec!["node.role==worker".into()],
            preferences: vec![api::placement::Preference {
                preference: Some(api::placement::preference::Preference::Spread(
                    api::placement::preference::Spread {
                        spread_descriptor: "node.labels.zone".into(),
                    },
                )),
            }],
            platforms: vec![api::Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
            }],
            max_replicas: 2,
        })),
        log_driver: Some(Box::new(api::Driver {
            name: "json-file".into(),
            options: [("max-size".to_owned(), "10m".to_owned())].into(),
        })),
        networks: vec![api::NetworkAttachmentConfig {
            target: "net1".into(),
            aliases: vec!["api".into()],
            driver_attachment_opts: [("k".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        }],
        force_update: 4,
        ..container_task(container)
    };
    let update = api::UpdateConfig {
        parallelism: 2,
        delay: seconds(10),
        failure_action: api::update_config::FailureAction::Rollback as i32,
        monitor: seconds(30),
        max_failure_ratio: 0.25,
        order: api::update_config::UpdateOrder::StartFirst as i32,
    };
    api::ServiceSpec {
        annotations: Some(api::Annotations {
            name: "web".into(),
            labels: [("tier".to_owned(), "front".to_owned())].into(),
            indices: Vec::new(),
        }),
        task: Some(task),
        mode: Some(api::service_spec::Mode::Replicated(
            api::ReplicatedService { replicas: 3 },
        )),
        update: Some(update),
        rollback: Some(spec::defaults::update_config()),
        networks: vec![api::NetworkAttachmentConfig {
            target: "legacy".into(),
            ..Default::default()
        }],
        endpoint: Some(api::EndpointSpec {
            mode: api::endpoint_spec::ResolutionMode::Vip as i32,
            ports: vec![
                api::PortConfig {
                    name: "http".into(),
                    protocol: api::port_config::Protocol::Tcp as i32,
                    target_port: 80,
                    published_port: 8080,
                    publish_mode: api::port_config::PublishMode::Ingress as i32,
                    traffic_policy: api::port_config::TrafficPolicy::Cluster as i32,
                },
                api::PortConfig {
                    protocol: api::port_config::Protocol::Udp as i32,
                    target_port: 53,
                    publish_mode: api::port_config::PublishMode::Host as i32,
                    ..Default::default()
                },
            ],
        }),
        depends_on: Vec::new(),
    }
}

#[test]
fn specs_round_trip_through_dockers_json() {
    use api::service_spec::Mode;
    let mut specs = vec![
        ("everything", everything()),
        (
            "image only",
            named(
                "one",
                container_task(api::ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
            ),
        ),
        (
            "no task template",
            api::ServiceSpec {
                task: None,
                ..named("bare", api::TaskSpec::default())
            },
        ),
        ("no container", named("none", api::TaskSpec::default())),
    ];
    for (name, mode) in [
        ("global", Mode::Global(api::GlobalService {})),
        ("global job", Mode::GlobalJob(api::GlobalJob {})),
        (
            "replicated job",
            Mode::ReplicatedJob(api::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 7,
            }),
        ),
        (
            "no replicas",
            Mode::Replicated(api::ReplicatedService { replicas: 0 }),
        ),
    ] {
        let mut spec = everything();
        spec.mode = Some(mode);
        specs.push((name, spec));
    }
    let mut dnsrr = everything();
    dnsrr.endpoint = Some(api::EndpointSpec {
        mode: api::endpoint_spec::ResolutionMode::Dnsrr as i32,
        ports: Vec::new(),
    });
    specs.push(("dnsrr", dnsrr));
    let mut pids_only = named(
        "pids",
        container_task(api::ContainerSpec {
            image: "busybox".into(),
            pid_limit: 20,
            isolation: api::container_spec::Isolation::Hyperv as i32,
            ..Default::default()
        }),
    );
    pids_only.task.as_mut().unwrap().resources = Some(Box::new(api::ResourceRequirements {
        swap_bytes: Some(1 << 20),
        ..Default::default()
    }));
    specs.push(("pids and swap only", pids_only));
    for (name, spec) in specs {
        let json = service_spec_json(&spec);
        let read = service_spec_from_json(&json, None);
        assert_eq!(read.as_ref(), Ok(&spec), "{name}: {json:#}");
        // The text a client gets reads back the same.
        let text: Value = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(service_spec_from_json(&text, None), read, "{name}");
    }
}

/// What Docker 28's CLI sends for `docker service create --name web --replicas 2 -p 8080:80
/// --restart-condition on-failure nginx`.
const DOCKER_CREATE: &str = r#"{
    "Name": "web",
    "Labels": {},
    "TaskTemplate": {
        "ContainerSpec": {
            "Image": "nginx:latest@sha256:0123",
            "Init": false,
            "DNSConfig": {},
            "Isolation": "default"
        },
        "Resources": {"Limits": {}, "Reservations": {}},
        "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 0},
        "Placement": {},
        "ForceUpdate": 0,
        "Runtime": "container"
    },
    "Mode": {"Replicated": {"Replicas": 2}},
    "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000, "MaxFailureRatio": 0, "Order": "stop-first"},
    "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000, "MaxFailureRatio": 0, "Order": "stop-first"},
    "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}
}"#;

#[test]
fn docker_clients_specs_read_as_dockers_daemon_reads_them() {
    let body: Value = serde_json::from_str(DOCKER_CREATE).unwrap();
    let spec = service_spec_from_json(&body, None).unwrap();
    let expected = api::ServiceSpec {
        annotations: Some(api::Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        task: Some(api::TaskSpec {
            restart: Some(api::RestartPolicy {
                condition: api::restart_policy::RestartCondition::OnFailure as i32,
                ..Default::default()
            }),
            placement: Some(Box::new(api::Placement::default())),
            ..container_task(api::ContainerSpec {
                image: "nginx:latest@sha256:0123".into(),
                init: Some(false),
                dns_config: Some(Default::default()),
                ..Default::default()
            })
        }),
        mode: Some(api::service_spec::Mode::Replicated(
            api::ReplicatedService { replicas: 2 },
        )),
        update: Some(spec::defaults::update_config()),
        rollback: Some(spec::defaults::update_config()),
        endpoint: Some(api::EndpointSpec {
            mode: 0,
            ports: vec![api::PortConfig {
                target_port: 80,
                published_port: 8080,
                ..Default::default()
            }],
        }),
        ..Default::default()
    };
    assert_eq!(spec, expected);
}

#[test]
fn empty_words_and_missing_fields_mean_what_they_mean_to_docker() {
    use api::service_spec::Mode;
    let read = |body: Value| service_spec_from_json(&body, None).unwrap();
    let restart = read(json!({"TaskTemplate": {"RestartPolicy": {"Delay": 0}}}))
        .task
        .unwrap()
        .restart
        .unwrap();
    assert_eq!(
        restart,
        api::RestartPolicy {
            condition: api::restart_policy::RestartCondition::Any as i32,
            delay: seconds(0),
            max_attempts: 0,
            window: None,
        }
    );
    let mode = |body: Value| read(json!({ "Mode": body })).mode;
    assert_eq!(
        mode(json!({"Replicated": {}})),
        Some(Mode::Replicated(api::ReplicatedService { replicas: 1 }))
    );
    assert_eq!(
        mode(json!({"ReplicatedJob": {}})),
        Some(Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 1
        }))
    );
    assert_eq!(
        mode(json!({"ReplicatedJob": {"MaxConcurrent": 3}})),
        Some(Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent: 3,
            total_completions: 3
        }))
    );
    // No mode at all is left to the manager, which fills in Swarm's.
    assert_eq!(mode(json!({})), None);
    let port = read(json!({"EndpointSpec": {"Ports": [{"TargetPort": 80}]}}))
        .endpoint
        .unwrap()
        .ports;
    assert_eq!(
        port,
        [api::PortConfig {
            target_port: 80,
            ..Default::default()
        }]
    );
    let container = read(json!({"TaskTemplate": {"ContainerSpec": {
        "Image": "x", "Mounts": [{"Target": "/x"}], "Isolation": "PROCESS",
    }}}));
    let container = crate::shape::container::of_task(container.task.as_ref())
        .cloned()
        .unwrap();
    assert_eq!(container.mounts[0].r#type, api::mount::Type::Bind as i32);
    assert_eq!(
        container.isolation,
        api::container_spec::Isolation::Process as i32
    );
    let update = read(json!({"UpdateConfig": {"Delay": 0, "Monitor": 0}}))
        .update
        .unwrap();
    assert_eq!(update, api::UpdateConfig::default());
    let upper = read(json!({"EndpointSpec": {"Mode": "DNSRR", "Ports": [{"Protocol": "UDP", "TargetPort": 53}]}}))
        .endpoint
        .unwrap();
    assert_eq!(upper.mode, api::endpoint_spec::ResolutionMode::Dnsrr as i32);
    assert_eq!(
        upper.ports[0].protocol,
        api::port_config::Protocol::Udp as i32
    );
}

#[test]
fn keys_in_any_case_unknown_keys_and_nulls_are_taken_as_go_takes_them() {
    let body = json!({
        "name": "web",
        "labels": null,
        "CheckDuplicate": true,
        "taskTemplate": {
            "containerSpec": {"image": "busybox", "OomKillDisable": true, "Env": null, "Init": null},
            "PluginSpec": {"Name": "ignored"},
            "Resources": null,
        },
        "Mode": {"Replicated": {"Replicas": 2}, "Global": null},
    });
    let spec = service_spec_from_json(&body, None).unwrap();
    assert_eq!(
        spec,
        api::ServiceSpec {
            mode: Some(api::service_spec::Mode::Replicated(
                api::ReplicatedService { replicas: 2 }
            )),
            ..named(
                "web",
                container_task(api::ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                })
            )
        }
    );
}

#[test]
fn wrong_types_are_refused_naming_the_field_as_go_does() {
    let cases = [
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Env": "A=1"}}}),
            "json: cannot unmarshal string into Go struct field ServiceSpec.TaskTemplate.ContainerSpec.Env of type []string",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Env": ["A=1", 2]}}}),
            "json: cannot unmarshal number into Go struct field ServiceSpec.TaskTemplate.ContainerSpec.Env of type string",
        ),
        (
            json!({"Mode": {"Replicated": {"Replicas": -1}}}),
            "json: cannot unmarshal number -1 into Go struct field ServiceSpec.Mode.Replicated.Replicas of type uint64",
        ),
        (
            json!({"Mode": {"Replicated": {"Replicas": "3"}}}),
            "json: cannot unmarshal string into Go struct field ServiceSpec.Mode.Replicated.Replicas of type uint64",
        ),
        (
            json!({"Labels": {"tier": 1}}),
            "json: cannot unmarshal number into Go struct field ServiceSpec.Labels of type string",
        ),
        (
            json!({"TaskTemplate": "busybox"}),
            "json: cannot unmarshal string into Go struct field ServiceSpec.TaskTemplate of type swarm.TaskSpec",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Mounts": {"Target": "/x"}}}}),
            "json: cannot unmarshal object into Go struct field ServiceSpec.TaskTemplate.ContainerSpec.Mounts of type []mount.Mount",
        ),
        (
            json!({"TaskTemplate": {"RestartPolicy": {"Delay": "5s"}}}),
            "json: cannot unmarshal string into Go struct field ServiceSpec.TaskTemplate.RestartPolicy.Delay of type time.Duration",
        ),
        (
            json!({"EndpointSpec": {"Ports": [{"TargetPort": 5000000000u64}]}}),
            "json: cannot unmarshal number 5000000000 into Go struct field ServiceSpec.EndpointSpec.Ports.TargetPort of type uint32",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"TTY": "yes"}}}),
            "json: cannot unmarshal string into Go struct field ServiceSpec.TaskTemplate.ContainerSpec.TTY of type bool",
        ),
        (
            json!({"UpdateConfig": {"MaxFailureRatio": "0.5"}}),
            "json: cannot unmarshal string into Go struct field ServiceSpec.UpdateConfig.MaxFailureRatio of type float32",
        ),
        (
            json!(["web"]),
            "json: cannot unmarshal array into Go value of type swarm.ServiceSpec",
        ),
    ];
    for (body, message) in cases {
        assert_eq!(
            refusal(service_spec_from_json(&body, None)),
            message,
            "{body}"
        );
    }
}

#[test]
fn values_docker_refuses_are_refused_saying_what_is_accepted() {
    let cases = [
        (
            json!({"TaskTemplate": {"RestartPolicy": {"Condition": "always"}}}),
            "ServiceSpec.TaskTemplate.RestartPolicy.Condition: invalid restart condition \"always\": use none, on-failure or any",
        ),
        (
            json!({"Mode": {"Replicated": {"Replicas": 1}, "Global": {}}}),
            "ServiceSpec.Mode: give one of Replicated, Global, ReplicatedJob and GlobalJob, not several",
        ),
        (
            json!({"TaskTemplate": {"Runtime": "plugin"}}),
            "ServiceSpec.TaskTemplate.Runtime: shoal runs container tasks only, not \"plugin\": use \"container\" with a ContainerSpec",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Configs": [{"ConfigName": "c", "Runtime": {}, "File": {"Name": "c"}}]}}}),
            "ServiceSpec.TaskTemplate.ContainerSpec.Configs.File: give File or Runtime, not both",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Privileges": {"CredentialSpec": {"File": "a", "Registry": "b"}}}}}),
            "ServiceSpec.TaskTemplate.ContainerSpec.Privileges.CredentialSpec: give one of Config, File and Registry, not several",
        ),
        (
            json!({"EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishMode": "mesh"}]}}),
            "ServiceSpec.EndpointSpec.Ports.PublishMode: invalid publish mode \"mesh\": use ingress or host",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Mounts": [{"Type": "nfs", "Target": "/x"}]}}}),
            "ServiceSpec.TaskTemplate.ContainerSpec.Mounts.Type: invalid mount type \"nfs\": use bind, volume, tmpfs, npipe or cluster",
        ),
    ];
    for (body, message) in cases {
        assert_eq!(
            refusal(service_spec_from_json(&body, None)),
            message,
            "{body}"
        );
    }
}

#[test]
fn an_update_keeps_what_dockers_json_cannot_carry() {
    let mut current = everything();
    current.depends_on = vec![api::ServiceDependency {
        service: "db".into(),
        condition: api::service_dependency::Condition::Healthy as i32,
        required: true,
    }];
    let task = current.task.as_mut().unwrap();
    task.networks[0].addresses = vec!["10.0.9.5".into()];
    if let Some(api::task_spec::Runtime::Container(container)) = task.runtime.as_mut() {
        container.pull_options = Some(Box::new(api::container_spec::PullOptions {
            registry_auth: "token".into(),
        }));
    }
    // What a Docker client sends back after reading the service: shoal's TrafficPolicy gone.
    let mut sent = service_spec_json(&current);
    let ports = sent["EndpointSpec"]["Ports"].as_array_mut().unwrap();
    for port in ports.iter_mut() {
        port.as_object_mut().unwrap().remove("TrafficPolicy");
    }
    ports.push(json!({"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 8443}));
    let updated = service_spec_from_json(&sent, Some(&current)).unwrap();
    let mut expected = current.clone();
    expected
        .endpoint
        .as_mut()
        .unwrap()
        .ports
        .push(api::PortConfig {
            target_port: 443,
            published_port: 8443,
            ..Default::default()
        });
    assert_eq!(updated, expected);
    // A policy the JSON gives wins, and a create keeps nothing.
    sent["EndpointSpec"]["Ports"][0]["TrafficPolicy"] = json!("local");
    let updated = service_spec_from_json(&sent, Some(&current)).unwrap();
    assert_eq!(
        updated.endpoint.unwrap().ports[0].traffic_policy,
        api::port_config::TrafficPolicy::Local as i32
    );
    let created = service_spec_from_json(&sent, None).unwrap();
    assert!(created.depends_on.is_empty());
    assert!(created.task.unwrap().networks[0].addresses.is_empty());
}

#[test]
fn service_status_is_dockers_counts() {
    let status = api::ServiceStatus {
        running_tasks: 2,
        desired_tasks: 3,
        completed_tasks: 0,
    };
    assert_eq!(
        service_status_json(&status),
        json!({"RunningTasks": 2, "DesiredTasks": 3, "CompletedTasks": 0})
    );
}
