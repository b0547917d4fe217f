//! Published ports through the control API on a one-manager swarm on loopback: `swarm init`'s
//! ingress network, ports given on create, kept across updates, released by an update or a
//! removal, refused when another service holds them (on create, update and stack deploy, naming
//! the holder, writing nothing), two creates racing for one port, the ingress network's VIP and
//! task addresses, and the rules of the ingress network itself.

use manager::objects::ClusterObject as _;
use manager::{InitOptions, ManagerRole, SwarmDir};
use shoal_proto::api::control_server::Control;
use shoal_proto::api::{
    Annotations, ContainerSpec, CreateNetworkRequest, CreateServiceRequest, DeployStackRequest,
    EndpointSpec, GetServiceRequest, Network, NetworkSpec, Placement, PortConfig,
    RemoveNetworkRequest, RemoveServiceRequest, ReplicatedService, Service, ServiceSpec, StackSpec,
    Task, TaskSpec, TaskState, UpdateServiceRequest, port_config::PublishMode, service_spec,
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

/// A one-manager swarm on loopback, with the folder that holds its data (removed when dropped).
async fn one_manager_swarm(hostname: &str) -> (tempfile::TempDir, ManagerRole) {
    let data_root = tempfile::tempdir().unwrap();
    let role = ManagerRole::init(
        &SwarmDir::new(data_root.path()),
        on_loopback(hostname),
        Default::default(),
    )
    .await
    .unwrap();
    (data_root, role)
}

fn port(published: u32, target: u32) -> PortConfig {
    PortConfig {
        target_port: target,
        published_port: published,
        ..Default::default()
    }
}

fn publishing(name: &str, ports: Vec<PortConfig>) -> ServiceSpec {
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
            ..Default::default()
        }),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 1,
        })),
        endpoint: Some(EndpointSpec {
            ports,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(
    control: &manager::ControlApi,
    spec: ServiceSpec,
) -> Result<Service, tonic::Status> {
    control
        .create_service(Request::new(CreateServiceRequest { spec: Some(spec) }))
        .await
        .map(|response| response.into_inner().service.unwrap())
}

async fn get(control: &manager::ControlApi, name: &str) -> Service {
    control
        .get_service(Request::new(GetServiceRequest {
            service: name.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap()
}

/// Updates `name` as a client does: read, change, write at the version read; re-read and
/// change again when the leader's allocator wrote the service in between.
async fn update(
    control: &manager::ControlApi,
    name: &str,
    change: impl Fn(&mut ServiceSpec),
) -> Result<Service, tonic::Status> {
    loop {
        let current = get(control, name).await;
        let mut spec = current.spec.clone().unwrap();
        change(&mut spec);
        let written = control
            .update_service(Request::new(UpdateServiceRequest {
                service: name.into(),
                version: current.read_version(),
                spec: Some(spec),
                ..Default::default()
            }))
            .await;
        match written {
            Err(status) if status.code() == Code::Aborted => continue,
            written => return written.map(|response| response.into_inner().service.unwrap()),
        }
    }
}

fn published(service: &Service) -> Vec<u32> {
    service
        .endpoint
        .as_ref()
        .map(|endpoint| {
            endpoint
                .ports
                .iter()
                .map(|port| port.published_port)
                .collect()
        })
        .unwrap_or_default()
}

fn stored<T: manager::objects::ClusterObject>(role: &ManagerRole) -> Vec<T> {
    role.store()
        .local_view(|view| manager::objects::decode_all::<T>(view.list(T::KIND)))
        .unwrap()
}

/// Every service's name and published numbers, from the store.
fn stored_ports(role: &ManagerRole) -> Vec<(String, Vec<u32>)> {
    let mut ports: Vec<(String, Vec<u32>)> = stored::<Service>(role)
        .iter()
        .map(|service| (service.unique_name().to_owned(), published(service)))
        .collect();
    ports.sort();
    ports
}

async fn poll<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ports_are_given_kept_released_and_refused_when_taken_writing_nothing() {
    let (_data_root, role) = one_manager_swarm("ports-host").await;
    let control = role.control();

    // `swarm init` made the ingress network on Docker's subnet.
    let ingress = stored::<Network>(&role)
        .into_iter()
        .find(|network| network.spec.as_ref().is_some_and(|spec| spec.ingress))
        .expect("an ingress network");
    assert_eq!(ingress.unique_name(), "ingress");
    let ingress_subnet = &ingress
        .spec
        .as_ref()
        .unwrap()
        .ipam
        .as_ref()
        .unwrap()
        .configs[0];
    assert_eq!(ingress_subnet.subnet, "10.0.0.0/24");

    // A fixed number and one the swarm chooses, both answered at once.
    let web = create(
        &control,
        publishing("web", vec![port(8080, 80), port(0, 443)]),
    )
    .await
    .unwrap();
    assert_eq!(published(&web), [8080, 30000]);
    let api = create(&control, publishing("api", vec![port(0, 80)]))
        .await
        .unwrap();
    assert_eq!(published(&api), [30001]);

    // Taken numbers are refused, naming the holder, on create, update and stack deploy, and
    // nothing is written.
    let before = stored_ports(&role);
    let on_create = create(&control, publishing("clash", vec![port(8080, 80)]))
        .await
        .unwrap_err();
    assert_eq!(on_create.code(), Code::InvalidArgument);
    assert!(
        on_create
            .message()
            .starts_with("port 8080/tcp is already published by service web"),
        "{on_create}"
    );
    let on_update = update(&control, "api", |spec| {
        spec.endpoint.as_mut().unwrap().ports.push(port(30000, 81));
    })
    .await
    .unwrap_err();
    assert!(
        on_update
            .message()
            .starts_with("port 30000/tcp is already published by service web"),
        "{on_update}"
    );
    let on_deploy = control
        .deploy_stack(Request::new(DeployStackRequest {
            spec: Some(StackSpec {
                annotations: Some(Annotations {
                    name: "app".into(),
                    ..Default::default()
                }),
                services: vec![publishing("app_front", vec![port(8080, 80)])],
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        on_deploy
            .message()
            .starts_with("port 8080/tcp is already published by service web"),
        "{on_deploy}"
    );
    assert_eq!(stored_ports(&role), before);

    // A chosen number stays across an update that keeps the port; a port the update drops is
    // free for another service at once, and so are those of a removed service.
    let web = update(&control, "web", |spec| {
        let task = spec.task.as_mut().unwrap();
        task.force_update += 1;
        spec.endpoint.as_mut().unwrap().ports = vec![port(0, 443)];
    })
    .await
    .unwrap();
    assert_eq!(published(&web), [30000]);
    let taker = create(&control, publishing("taker", vec![port(8080, 80)]))
        .await
        .unwrap();
    assert_eq!(published(&taker), [8080]);
    control
        .remove_service(Request::new(RemoveServiceRequest {
            service: "api".into(),
        }))
        .await
        .unwrap();
    let next = create(&control, publishing("next", vec![port(30001, 80)]))
        .await
        .unwrap();
    assert_eq!(published(&next), [30001]);

    // The leader's allocator puts the publishing services on the ingress network: a VIP there,
    // and an address there, first, for each task.
    let vip = poll("web's ingress VIP", || {
        stored::<Service>(&role)
            .into_iter()
            .find(|service| service.unique_name() == "web")
            .and_then(|service| service.endpoint)
            .and_then(|endpoint| {
                endpoint
                    .virtual_ips
                    .into_iter()
                    .find(|vip| vip.network_id == ingress.id)
            })
    })
    .await;
    assert!(vip.addr.starts_with("10.0.0."), "{vip:?}");
    let task = poll("a task of web with its addresses", || {
        stored::<Task>(&role).into_iter().find(|task| {
            task.service_id == web.id && task.status.as_ref().unwrap().state() >= TaskState::Pending
        })
    })
    .await;
    let first = &task.networks[0];
    assert_eq!(first.network.as_ref().unwrap().id, ingress.id);
    assert!(first.addresses[0].starts_with("10.0.0."), "{first:?}");

    // The ingress network can't be removed while services publish through it, nor a second
    // one made.
    let in_use = control
        .remove_network(Request::new(RemoveNetworkRequest {
            network: "ingress".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    assert!(
        in_use.message().starts_with(
            "network ingress is the ingress network, and service(s) next, taker, web publish ports through the routing mesh"
        ),
        "{in_use}"
    );
    let second = control
        .create_network(Request::new(CreateNetworkRequest {
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: "mesh".into(),
                    ..Default::default()
                }),
                ingress: true,
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert!(
        second
            .message()
            .starts_with("ingress network already exists"),
        "{second}"
    );

    // A host-mode port with several tasks a node is refused by spec's rule.
    let mut host = publishing(
        "host",
        vec![PortConfig {
            publish_mode: PublishMode::Host as i32,
            ..port(9090, 80)
        }],
    );
    host.task.as_mut().unwrap().placement = Some(Box::new(Placement {
        max_replicas: 2,
        ..Default::default()
    }));
    let refused = create(&control, host).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("--replicas-max-per-node is 2"),
        "{refused}"
    );

    role.shutdown().await;
}

#[tokio::test]
async fn two_creates_racing_for_one_port_are_one_success_and_one_refusal() {
    let (_data_root, role) = one_manager_swarm("race-host").await;
    let control = role.control();
    for round in 0..5 {
        let (left, right) = tokio::join!(
            create(
                &control,
                publishing(&format!("left{round}"), vec![port(7000 + round, 80)])
            ),
            create(
                &control,
                publishing(&format!("right{round}"), vec![port(7000 + round, 80)])
            ),
        );
        assert!(
            left.is_ok() != right.is_ok(),
            "round {round}: {left:?} / {right:?}"
        );
        let holders: Vec<String> = stored::<Service>(&role)
            .iter()
            .filter(|service| published(service).contains(&(7000 + round)))
            .map(|service| service.unique_name().to_owned())
            .collect();
        assert_eq!(holders.len(), 1, "round {round}: {holders:?}");
    }
    role.shutdown().await;
}

#[tokio::test]
async fn without_the_ingress_network_only_host_ports_can_be_published() {
    let (_data_root, role) = one_manager_swarm("no-mesh-host").await;
    let control = role.control();
    control
        .remove_network(Request::new(RemoveNetworkRequest {
            network: "ingress".into(),
        }))
        .await
        .unwrap();
    let refused = create(&control, publishing("web", vec![port(8080, 80)]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("but the swarm has no ingress network: create one with 'shoal network create -d overlay --ingress ingress'"),
        "{refused}"
    );
    let host = create(
        &control,
        publishing(
            "web",
            vec![PortConfig {
                publish_mode: PublishMode::Host as i32,
                ..port(8080, 80)
            }],
        ),
    )
    .await
    .unwrap();
    assert_eq!(published(&host), [8080]);
    role.shutdown().await;
}

/// The node's ingress address through the leader's loop: given while a service publishes
/// through the mesh, dropped once none does (the loop then reads only the nodes that hold an
/// attachment, and must still find this one).
#[tokio::test]
async fn a_node_holds_an_ingress_address_only_while_the_mesh_serves() {
    let (_data_root, role) = one_manager_swarm("mesh-node-host").await;
    let control = role.control();
    let node_legs = |role: &ManagerRole| -> Vec<usize> {
        stored::<shoal_proto::api::Node>(role)
            .iter()
            .map(|node| node.attachments.len())
            .collect()
    };
    assert_eq!(node_legs(&role), [0]);

    create(&control, publishing("web", vec![port(8080, 80)]))
        .await
        .unwrap();
    poll("the node's ingress address", || {
        (node_legs(&role) == [1]).then_some(())
    })
    .await;
    control
        .remove_service(Request::new(RemoveServiceRequest {
            service: "web".into(),
        }))
        .await
        .unwrap();
    poll("the node's ingress address dropped", || {
        (node_legs(&role) == [0]).then_some(())
    })
    .await;
    role.shutdown().await;
}
