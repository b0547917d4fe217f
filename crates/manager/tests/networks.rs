//! The network control API on a one-manager swarm on loopback: create, get, list (with docker's
//! filters), remove and prune, and every refusal (bad specs, taken names, overlapping subnets,
//! networks in use, unknown references) leaving the store's networks as they were; and services
//! attaching to networks by name, id or prefix, with refused attachments writing nothing.

use manager::objects::ClusterObject as _;
use manager::{InitOptions, ManagerRole, SwarmDir};
use shoal_proto::api::control_server::Control;
use shoal_proto::api::{
    Annotations, ContainerSpec, CreateNetworkRequest, CreateServiceRequest, Driver,
    GetNetworkRequest, GetServiceRequest, IpamConfig, IpamOptions, ListNetworksRequest, Network,
    NetworkAttachmentConfig, NetworkSpec, PruneNetworksRequest, RemoveNetworkRequest,
    ReplicatedService, Service, ServiceSpec, TaskSpec, UpdateServiceRequest, service_spec,
    task_spec,
};
use tonic::{Code, Request};

fn on_loopback(hostname: &str) -> InitOptions {
    InitOptions {
        advertise_addr: "127.0.0.1".into(),
        listen_addr: "127.0.0.1:0".into(),
        hostname: hostname.into(),
        ..Default::default()
    }
}

fn network_spec(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels: [("team".to_owned(), name.to_owned())].into(),
            ..Default::default()
        }),
        // No driver: the manager fills in overlay.
        driver_config: None,
        ipam: (!subnet.is_empty()).then(|| IpamOptions {
            driver: None,
            configs: vec![IpamConfig {
                subnet: subnet.into(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    }
}

fn service_on(name: &str, networks: &[&str], deprecated: bool) -> ServiceSpec {
    let attachments: Vec<NetworkAttachmentConfig> = networks
        .iter()
        .map(|target| NetworkAttachmentConfig {
            target: (*target).into(),
            ..Default::default()
        })
        .collect();
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            })),
            networks: if deprecated {
                Vec::new()
            } else {
                attachments.clone()
            },
            ..Default::default()
        }),
        networks: if deprecated { attachments } else { Vec::new() },
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 0,
        })),
        ..Default::default()
    }
}

/// The stored networks, by name with their versions, straight from the store.
fn stored_networks(role: &ManagerRole) -> Vec<(String, String, u64)> {
    let mut networks: Vec<(String, String, u64)> = role
        .store()
        .local_view(|view| {
            manager::objects::decode_all::<Network>(view.list(Network::KIND)).map(|all| {
                all.iter()
                    .map(|n| (n.unique_name().to_owned(), n.id.clone(), n.read_version()))
                    .collect::<Vec<_>>()
            })
        })
        .unwrap();
    networks.sort();
    networks
}

/// Waits until the leader's allocator has settled: every network holds its subnet and every
/// service a VIP on each of its networks. The allocator rewrites a network as it allocates, so
/// "nothing written" is read against the settled store.
async fn allocated(role: &ManagerRole) -> Vec<(String, String, u64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let settled = role
            .store()
            .local_view(|view| {
                let networks = manager::objects::decode_all::<Network>(view.list(Network::KIND))?;
                let services = manager::objects::decode_all::<Service>(view.list(Service::KIND))?;
                Ok::<_, manager::ManagerError>(
                    networks
                        .iter()
                        .all(|n| n.ipam.as_ref().is_some_and(|ipam| !ipam.configs.is_empty()))
                        && services.iter().all(|service| {
                            service
                                .endpoint
                                .as_ref()
                                .is_some_and(|endpoint| !endpoint.virtual_ips.is_empty())
                        }),
                )
            })
            .unwrap();
        if settled {
            return stored_networks(role);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the allocator did not settle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn create(
    control: &manager::ControlApi,
    spec: NetworkSpec,
) -> Result<Network, tonic::Status> {
    control
        .create_network(Request::new(CreateNetworkRequest { spec: Some(spec) }))
        .await
        .map(|response| response.into_inner().network.unwrap())
}

async fn list(
    control: &manager::ControlApi,
    filters: &[&str],
) -> Result<Vec<String>, tonic::Status> {
    control
        .list_networks(Request::new(ListNetworksRequest {
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        }))
        .await
        .map(|response| {
            response
                .into_inner()
                .networks
                .iter()
                .map(|n| n.unique_name().to_owned())
                .collect()
        })
}

async fn remove(control: &manager::ControlApi, reference: &str) -> Result<String, tonic::Status> {
    control
        .remove_network(Request::new(RemoveNetworkRequest {
            network: reference.into(),
        }))
        .await
        .map(|response| response.into_inner().network_id)
}

#[tokio::test]
async fn networks_are_created_listed_removed_and_pruned_and_refusals_write_nothing() {
    let data_root = tempfile::tempdir().unwrap();
    let role = ManagerRole::init(
        &SwarmDir::new(data_root.path()),
        on_loopback("net-host"),
        Default::default(),
    )
    .await
    .unwrap();
    let control = role.control();

    let front = create(&control, network_spec("front", "10.9.0.0/16"))
        .await
        .unwrap();
    let spec = front.spec.as_ref().unwrap();
    assert_eq!(spec.driver_config.as_ref().unwrap().name, "overlay");
    assert!(front.meta.is_some() && !front.id.is_empty());
    let back = create(&control, network_spec("back", "")).await.unwrap();
    let spare = create(&control, network_spec("spare", "10.20.0.0/24"))
        .await
        .unwrap();
    let before = allocated(&role).await;
    // With the ingress network `swarm init` made.
    assert_eq!(before.len(), 4);
    assert!(before.iter().any(|(name, _, _)| name == "ingress"));

    // Each refusal says why, and the store's networks stay as they were.
    let bridge = NetworkSpec {
        driver_config: Some(Driver {
            name: "bridge".into(),
            ..Default::default()
        }),
        ..network_spec("other", "")
    };
    for (spec, code, expected) in [
        (
            network_spec("front", ""),
            Code::FailedPrecondition,
            "network front already exists",
        ),
        (
            network_spec("inner", "10.9.3.0/24"),
            Code::InvalidArgument,
            "subnet 10.9.3.0/24 overlaps subnet 10.9.0.0/16 of network front",
        ),
        (
            network_spec("outer", "10.0.0.0/8"),
            Code::InvalidArgument,
            "subnet 10.0.0.0/8 overlaps subnet 10.",
        ),
        (
            network_spec("typo", "10.30.0.0/33"),
            Code::InvalidArgument,
            "invalid subnet \"10.30.0.0/33\"",
        ),
        (
            network_spec("host-bits", "10.30.0.1/24"),
            Code::InvalidArgument,
            "host bits set",
        ),
        (bridge, Code::InvalidArgument, "use the overlay driver"),
        (
            network_spec("bad name", ""),
            Code::InvalidArgument,
            "invalid network name",
        ),
    ] {
        let refused = create(&control, spec).await.unwrap_err();
        assert_eq!(refused.code(), code, "{refused}");
        assert!(refused.message().contains(expected), "{refused}");
        assert_eq!(stored_networks(&role), before, "after: {expected}");
    }

    // Reads by name, ID and ID prefix; lists with docker's filters.
    for reference in ["back", back.id.as_str(), &back.id[..8]] {
        let found = control
            .get_network(Request::new(GetNetworkRequest {
                network: reference.into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .network
            .unwrap();
        assert_eq!(found.id, back.id);
    }
    let missing = control
        .get_network(Request::new(GetNetworkRequest {
            network: "nowhere".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        list(&control, &[]).await.unwrap(),
        ["back", "front", "ingress", "spare"]
    );
    assert_eq!(list(&control, &["name=ron"]).await.unwrap(), ["front"]);
    assert_eq!(
        list(&control, &["label=team=back"]).await.unwrap(),
        ["back"]
    );
    assert_eq!(
        list(&control, &["driver=overlay", "scope=swarm"])
            .await
            .unwrap(),
        ["back", "front", "ingress", "spare"]
    );
    let bad_filter = list(&control, &["colour=red"]).await.unwrap_err();
    assert_eq!(bad_filter.code(), Code::InvalidArgument);

    // A network a service uses, by the task's list or the deprecated one, stays; the refusal
    // names the services.
    for (name, deprecated) in [("web", false), ("legacy", true)] {
        control
            .create_service(Request::new(CreateServiceRequest {
                spec: Some(service_on(name, &[&front.id], deprecated)),
            }))
            .await
            .unwrap();
    }
    let before = allocated(&role).await;
    let in_use = remove(&control, "front").await.unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    assert!(
        in_use
            .message()
            .contains("network front is in use by service(s) legacy, web"),
        "{in_use}"
    );
    assert_eq!(stored_networks(&role), before);
    let unknown = remove(&control, "nowhere").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(stored_networks(&role), before);

    // An unused network goes; prune takes the unused ones that pass its filters.
    assert_eq!(remove(&control, &spare.id[..10]).await.unwrap(), spare.id);
    let recreated = create(&control, network_spec("spare", "10.20.0.0/24"))
        .await
        .unwrap();
    let pruned = |filters: &[&str]| PruneNetworksRequest {
        filters: filters.iter().map(|f| (*f).to_owned()).collect(),
    };
    let none = control
        .prune_networks(Request::new(pruned(&["label=team=front"])))
        .await
        .unwrap()
        .into_inner()
        .networks_deleted;
    assert!(none.is_empty(), "{none:?}");
    let deleted = control
        .prune_networks(Request::new(pruned(&[])))
        .await
        .unwrap()
        .into_inner()
        .networks_deleted;
    assert_eq!(deleted, ["back", "spare"]);
    // The ingress network stays, as docker keeps it.
    let left = stored_networks(&role);
    assert_eq!(left.len(), 2);
    assert_eq!(left[0].1, front.id);
    assert_eq!(left[1].0, "ingress");
    assert!(!left.iter().any(|(_, id, _)| *id == recreated.id));

    role.shutdown().await;
}

/// The stored services' specs, by name.
fn stored_services(role: &ManagerRole) -> std::collections::BTreeMap<String, ServiceSpec> {
    role.store()
        .local_view(|view| {
            manager::objects::decode_all::<Service>(view.list(Service::KIND)).map(|all| {
                all.into_iter()
                    .map(|service| {
                        (
                            service.unique_name().to_owned(),
                            service.spec.unwrap_or_default(),
                        )
                    })
                    .collect()
            })
        })
        .unwrap()
}

/// A service of `service_on`'s in dnsrr mode: it has no VIPs, so the allocator leaves it alone.
fn without_vips(mut spec: ServiceSpec) -> ServiceSpec {
    spec.endpoint = Some(shoal_proto::api::EndpointSpec {
        mode: shoal_proto::api::endpoint_spec::ResolutionMode::Dnsrr as i32,
        ports: Vec::new(),
    });
    spec
}

#[tokio::test]
async fn services_attach_by_name_id_or_prefix_and_refused_attachments_write_nothing() {
    let data_root = tempfile::tempdir().unwrap();
    let role = ManagerRole::init(
        &SwarmDir::new(data_root.path()),
        on_loopback("attach-host"),
        Default::default(),
    )
    .await
    .unwrap();
    let control = role.control();
    let front = create(&control, network_spec("front", "")).await.unwrap();
    let back = create(&control, network_spec("back", "")).await.unwrap();
    // `swarm init` made the ingress network; a second one is refused.
    let second_ingress = create(
        &control,
        NetworkSpec {
            ingress: true,
            ..network_spec("mesh", "")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(second_ingress.code(), Code::FailedPrecondition);
    assert!(
        second_ingress
            .message()
            .starts_with("ingress network already exists (ingress, ID "),
        "{second_ingress}"
    );
    let ingress = control
        .get_network(Request::new(GetNetworkRequest {
            network: "ingress".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .network
        .unwrap();
    assert!(ingress.spec.as_ref().unwrap().ingress);

    // Names, ids and id prefixes are stored as ids, in create and in update.
    let web = control
        .create_service(Request::new(CreateServiceRequest {
            spec: Some(without_vips(service_on(
                "web",
                &["front", &back.id[..10]],
                false,
            ))),
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    let targets = |service: &Service| -> Vec<String> {
        service
            .spec
            .as_ref()
            .unwrap()
            .task
            .as_ref()
            .unwrap()
            .networks
            .iter()
            .map(|n| n.target.clone())
            .collect()
    };
    assert_eq!(targets(&web), [front.id.clone(), back.id.clone()]);
    let update = |spec: ServiceSpec, version: u64| UpdateServiceRequest {
        service: "web".into(),
        version,
        spec: Some(spec),
        ..Default::default()
    };
    let current = control
        .get_service(Request::new(GetServiceRequest {
            service: web.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    let updated = control
        .update_service(Request::new(update(
            without_vips(service_on("web", &["back"], false)),
            current.read_version(),
        )))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(targets(&updated), std::slice::from_ref(&back.id));

    // Each refusal names the network, and neither a create nor an update writes anything.
    let before = stored_services(&role);
    for (networks, code, expected) in [
        (
            vec!["nowhere"],
            Code::NotFound,
            "network nowhere not found".to_owned(),
        ),
        (
            vec!["host"],
            Code::InvalidArgument,
            "The network host cannot be used with services".to_owned(),
        ),
        (
            vec!["ingress"],
            Code::InvalidArgument,
            "Service cannot be explicitly attached to the ingress network \"ingress\"".to_owned(),
        ),
        (
            vec!["front", front.id.as_str()],
            Code::InvalidArgument,
            format!(
                "network front is attached twice (as front and as {})",
                front.id
            ),
        ),
    ] {
        let created = control
            .create_service(Request::new(CreateServiceRequest {
                spec: Some(without_vips(service_on("api", &networks, false))),
            }))
            .await
            .unwrap_err();
        assert_eq!(created.code(), code, "{created}");
        assert!(created.message().contains(&expected), "{created}");
        let updated_too = control
            .update_service(Request::new(update(
                without_vips(service_on("web", &networks, false)),
                updated.read_version(),
            )))
            .await
            .unwrap_err();
        assert_eq!(updated_too.code(), code, "{updated_too}");
        assert!(updated_too.message().contains(&expected), "{updated_too}");
        assert_eq!(stored_services(&role), before, "after: {expected}");
    }
    assert!(!ingress.id.is_empty());

    role.shutdown().await;
}
