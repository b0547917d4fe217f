//! Exact tests of the allocator core: subnets carved from the pools, gateway and range rules,
//! VNIs, VIPs, task addresses, the ingress network of services publishing through the routing
//! mesh and their published ports, exhaustion and overlap errors, serial reuse, and a seeded run of
//! random creates and removals that checks no address is ever held twice.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use shoal_proto::api::{
    self, Annotations, Cluster, EndpointSpec, IpamConfig, IpamOptions, Meta, Network,
    NetworkAttachmentConfig, NetworkSpec, Service, ServiceSpec, Task, TaskSpec, TaskState,
    TaskStatus, Version, endpoint_spec,
};

use super::*;

const NOW: ClusterTime = ClusterTime::from_duration_since_unix_epoch(Duration::from_secs(1_000));

fn meta(version: u64, created_seconds: i64) -> Option<Meta> {
    Some(Meta {
        version: Some(Version { index: version }),
        created_at: Some(api::Timestamp {
            seconds: created_seconds,
            nanos: 0,
        }),
        updated_at: None,
    })
}

fn network(id: &str, configs: &[(&str, &str, &str)]) -> Network {
    Network {
        id: id.into(),
        meta: meta(1, 0),
        spec: Some(NetworkSpec {
            annotations: Some(Annotations {
                name: id.into(),
                ..Default::default()
            }),
            ipam: Some(IpamOptions {
                driver: None,
                configs: configs
                    .iter()
                    .map(|(subnet, range, gateway)| IpamConfig {
                        subnet: (*subnet).into(),
                        range: (*range).into(),
                        gateway: (*gateway).into(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn auto_network(id: &str) -> Network {
    network(id, &[])
}

fn service(id: &str, networks: &[&str], mode: endpoint_spec::ResolutionMode) -> Service {
    Service {
        id: id.into(),
        meta: meta(1, 0),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: id.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                networks: networks
                    .iter()
                    .map(|target| NetworkAttachmentConfig {
                        target: (*target).into(),
                        aliases: vec![format!("{id}-alias")],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            endpoint: Some(EndpointSpec {
                mode: mode as i32,
                ports: Vec::new(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn vip_service(id: &str, networks: &[&str]) -> Service {
    service(id, networks, endpoint_spec::ResolutionMode::Vip)
}

fn dnsrr_service(id: &str, networks: &[&str]) -> Service {
    service(id, networks, endpoint_spec::ResolutionMode::Dnsrr)
}

fn task(id: &str, service: &Service, created_seconds: i64) -> Task {
    Task {
        id: id.into(),
        meta: meta(1, created_seconds),
        service_id: service.id.clone(),
        spec: service.spec.as_ref().and_then(|spec| spec.task.clone()),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::New as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A store of the allocator's objects: each step's writes replace what they change.
#[derive(Default, Clone)]
struct Objects {
    networks: Vec<Network>,
    services: Vec<Service>,
    tasks: Vec<Task>,
    nodes: Vec<api::Node>,
    pools: Option<AddressPools>,
}

/// The allocator borrows what it reads, as it does from the cluster view.
fn refs<T>(objects: &[T]) -> Vec<&T> {
    objects.iter().collect()
}

impl Objects {
    fn step(&mut self) -> Allocation {
        let pools = self
            .pools
            .clone()
            .unwrap_or_else(|| AddressPools::of_cluster(None));
        let allocation = allocate(
            &AllocatorInput {
                networks: &refs(&self.networks),
                nodes: &refs(&self.nodes),
                services: &refs(&self.services),
                tasks: &refs(&self.tasks),
                pools: &pools,
                max_tasks: MAX_TASKS_PER_STEP,
            },
            NOW,
        );
        replace(&mut self.networks, &allocation.networks, |n| &n.id);
        replace(&mut self.services, &allocation.services, |s| &s.id);
        replace(&mut self.tasks, &allocation.tasks, |t| &t.id);
        replace(&mut self.nodes, &allocation.nodes, |n| &n.id);
        allocation
    }

    fn network(&self, id: &str) -> &Network {
        self.networks.iter().find(|n| n.id == id).unwrap()
    }

    fn task(&self, id: &str) -> &Task {
        self.tasks.iter().find(|t| t.id == id).unwrap()
    }

    fn service(&self, id: &str) -> &Service {
        self.services.iter().find(|s| s.id == id).unwrap()
    }

    /// A node's attachments as (network id, addresses).
    fn node_legs(&self, id: &str) -> Vec<(String, Vec<String>)> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap()
            .attachments
            .iter()
            .map(|attachment| {
                (
                    attachment.network.as_ref().unwrap().id.clone(),
                    attachment.addresses.clone(),
                )
            })
            .collect()
    }
}

fn replace<T: Clone>(stored: &mut [T], written: &[T], id: fn(&T) -> &String) {
    for object in written {
        if let Some(slot) = stored.iter_mut().find(|old| id(old) == id(object)) {
            *slot = object.clone();
        }
    }
}

fn ipam_of(network: &Network) -> Vec<(String, String, String)> {
    network
        .ipam
        .as_ref()
        .unwrap()
        .configs
        .iter()
        .map(|config| {
            (
                config.subnet.clone(),
                config.range.clone(),
                config.gateway.clone(),
            )
        })
        .collect()
}

fn vni_of(network: &Network) -> String {
    network.driver_state.as_ref().unwrap().options[VXLAN_ID_LIST_OPTION].clone()
}

fn addresses_of(task: &Task) -> Vec<String> {
    task.networks
        .iter()
        .flat_map(|attachment| attachment.addresses.clone())
        .collect()
}

fn vips_of(service: &Service) -> Vec<(String, String)> {
    service
        .endpoint
        .as_ref()
        .map(|endpoint| {
            endpoint
                .virtual_ips
                .iter()
                .map(|vip| (vip.network_id.clone(), vip.addr.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn ended(mut task: Task, state: TaskState) -> Task {
    task.desired_state = TaskState::Shutdown as i32;
    task.status.as_mut().unwrap().state = state as i32;
    task
}

#[test]
fn a_network_being_removed_goes_once_no_service_or_live_task_holds_it() {
    let web = vip_service("web", &["front"]);
    let mut objects = Objects {
        networks: vec![auto_network("front")],
        services: vec![web.clone()],
        tasks: vec![task("w1", &web, 1)],
        ..Default::default()
    };
    objects.step();
    // `stack rm`: the service is being removed, its network marked to follow it.
    objects.services[0].pending_delete = true;
    objects.networks[0].pending_delete = true;
    assert!(objects.step().deleted_networks.is_empty(), "web holds it");
    // The service is gone (its VIP with it), but its task still runs.
    objects.services.clear();
    assert!(objects.step().deleted_networks.is_empty(), "w1 holds it");
    objects.tasks[0] = ended(objects.tasks[0].clone(), TaskState::Shutdown);
    let allocation = objects.step();
    assert_eq!(allocation.deleted_networks.len(), 1);
    assert_eq!(allocation.deleted_networks[0].id, "front");
    // A network in use that is not being removed stays.
    objects.networks[0].pending_delete = false;
    assert!(objects.step().deleted_networks.is_empty());
}

#[test]
fn subnets_come_from_the_pool_in_order_skipping_those_networks_ask_for() {
    let mut objects = Objects {
        networks: vec![
            auto_network("a"),
            network("b", &[("10.0.1.0/24", "", "")]),
            auto_network("c"),
        ],
        ..Default::default()
    };
    let allocation = objects.step();
    assert_eq!(allocation.networks.len(), 3);
    assert!(allocation.failed_networks.is_empty());
    let full = |subnet: &str, gateway: &str| vec![(subnet.into(), String::new(), gateway.into())];
    assert_eq!(
        ipam_of(objects.network("a")),
        full("10.0.0.0/24", "10.0.0.1")
    );
    assert_eq!(
        ipam_of(objects.network("b")),
        full("10.0.1.0/24", "10.0.1.1")
    );
    assert_eq!(
        ipam_of(objects.network("c")),
        full("10.0.2.0/24", "10.0.2.1")
    );
    // The network asking for its own subnet is allocated first.
    assert_eq!(vni_of(objects.network("b")), "4096");
    assert_eq!(vni_of(objects.network("a")), "4097");
    assert_eq!(vni_of(objects.network("c")), "4098");
    assert_eq!(
        objects.network("a").driver_state.as_ref().unwrap().name,
        "overlay"
    );
    // Allocated networks are not written again.
    assert!(objects.step().is_empty());
}

#[test]
fn the_cluster_pools_and_mask_length_decide_auto_subnets() {
    let cluster = Cluster {
        default_address_pool: vec!["10.20.0.0/16".into()],
        subnet_size: 26,
        ..Default::default()
    };
    let mut objects = Objects {
        networks: vec![auto_network("a"), auto_network("b")],
        pools: Some(AddressPools::of_cluster(Some(&cluster))),
        ..Default::default()
    };
    objects.step();
    assert_eq!(ipam_of(objects.network("a"))[0].0, "10.20.0.0/26");
    assert_eq!(ipam_of(objects.network("b"))[0].0, "10.20.0.64/26");
}

#[test]
fn an_exhausted_pool_fails_the_network_and_its_tasks_say_so() {
    let cluster = Cluster {
        default_address_pool: vec!["10.30.0.0/24".into()],
        subnet_size: 25,
        ..Default::default()
    };
    let web = dnsrr_service("web", &["c"]);
    let mut objects = Objects {
        networks: vec![auto_network("a"), auto_network("b"), auto_network("c")],
        services: vec![web.clone()],
        tasks: vec![task("t1", &web, 1)],
        pools: Some(AddressPools::of_cluster(Some(&cluster))),
        ..Default::default()
    };
    let allocation = objects.step();
    assert_eq!(
        allocation.failed_networks,
        vec![(
            "c".to_owned(),
            AllocationFailure::PoolExhausted {
                network: "c".into(),
                prefix_len: 25,
                pools: "10.30.0.0/24".into()
            }
        )]
    );
    let status = objects.task("t1").status.clone().unwrap();
    assert_eq!(status.state(), TaskState::New);
    assert!(
        status
            .err
            .starts_with("network c: no /25 subnet is left in the address pools 10.30.0.0/24"),
        "{}",
        status.err
    );
}

#[test]
fn a_range_decides_the_gateway_and_every_address() {
    let web = dnsrr_service("web", &["ranged", "low"]);
    let mut objects = Objects {
        networks: vec![
            network("ranged", &[("10.0.9.0/24", "10.0.9.128/25", "")]),
            network("low", &[("10.0.8.0/24", "10.0.8.0/25", "")]),
        ],
        services: vec![web.clone()],
        tasks: vec![task("t1", &web, 1), task("t2", &web, 2)],
        ..Default::default()
    };
    objects.step();
    assert_eq!(
        ipam_of(objects.network("ranged")),
        vec![(
            "10.0.9.0/24".into(),
            "10.0.9.128/25".into(),
            "10.0.9.128".into()
        )]
    );
    // A range starting at the network address: the gateway is the next address.
    assert_eq!(ipam_of(objects.network("low"))[0].2, "10.0.8.1");
    assert_eq!(
        addresses_of(objects.task("t1")),
        vec!["10.0.9.129/24", "10.0.8.2/24"]
    );
    assert_eq!(
        addresses_of(objects.task("t2")),
        vec!["10.0.9.130/24", "10.0.8.3/24"]
    );
}

#[test]
fn a_given_gateway_is_never_handed_out() {
    let web = dnsrr_service("web", &["n"]);
    let mut objects = Objects {
        networks: vec![network("n", &[("10.0.9.0/29", "", "10.0.9.3")])],
        services: vec![web.clone()],
        tasks: (1..=4).map(|i| task(&format!("t{i}"), &web, i)).collect(),
        ..Default::default()
    };
    objects.step();
    let given: Vec<Vec<String>> = (1..=4)
        .map(|i| addresses_of(objects.task(&format!("t{i}"))))
        .collect();
    assert_eq!(
        given,
        vec![
            vec!["10.0.9.1/29".to_owned()],
            vec!["10.0.9.2/29".to_owned()],
            vec!["10.0.9.4/29".to_owned()],
            vec!["10.0.9.5/29".to_owned()],
        ]
    );
}

#[test]
fn a_full_subnet_leaves_the_task_new_with_a_clear_error_written_once() {
    // A /29: the network, gateway and broadcast addresses leave five for tasks.
    let web = dnsrr_service("web", &["small"]);
    let mut objects = Objects {
        networks: vec![network("small", &[("10.0.9.0/29", "", "")])],
        services: vec![web.clone()],
        tasks: (1..=6).map(|i| task(&format!("t{i}"), &web, i)).collect(),
        ..Default::default()
    };
    objects.step();
    for i in 1..=5 {
        let task = objects.task(&format!("t{i}"));
        assert_eq!(observed_state(task), TaskState::Pending);
        assert_eq!(addresses_of(task), vec![format!("10.0.9.{}/29", i + 1)]);
        assert!(ready_for_scheduling(task));
    }
    let full = objects.task("t6");
    assert_eq!(observed_state(full), TaskState::New);
    assert!(!ready_for_scheduling(full));
    assert_eq!(
        full.status.as_ref().unwrap().err,
        "no IP address left on network small (10.0.9.0/29): remove services or tasks on it, or use a network with a larger subnet"
    );
    // Nothing is written again while the subnet stays full: no step wakes another for nothing.
    assert!(objects.step().is_empty());
    // A task that ends frees its address, and the waiting task takes it.
    let freed = ended(objects.task("t2").clone(), TaskState::Failed);
    *objects.tasks.iter_mut().find(|t| t.id == "t2").unwrap() = freed;
    objects.step();
    assert_eq!(addresses_of(objects.task("t6")), vec!["10.0.9.3/29"]);
    assert_eq!(observed_state(objects.task("t6")), TaskState::Pending);
}

#[test]
fn a_user_subnet_overlapping_an_allocated_one_fails_that_network_only() {
    let web = dnsrr_service("web", &["late"]);
    let mut objects = Objects {
        networks: vec![network("wide", &[("10.0.0.0/16", "", "")])],
        ..Default::default()
    };
    objects.step();
    let mut late = network("late", &[("10.0.5.0/24", "", "")]);
    late.meta = meta(2, 5);
    objects.networks.push(late);
    objects.services.push(web.clone());
    objects.tasks.push(task("t1", &web, 1));
    let allocation = objects.step();
    let failure = AllocationFailure::SubnetOverlaps {
        network: "late".into(),
        subnet: "10.0.5.0/24".into(),
        other: "wide".into(),
        other_subnet: "10.0.0.0/16".into(),
    };
    assert_eq!(
        allocation.failed_networks,
        vec![("late".to_owned(), failure.clone())]
    );
    assert!(objects.network("late").ipam.is_none());
    assert_eq!(
        objects.task("t1").status.as_ref().unwrap().err,
        failure.to_string()
    );
}

#[test]
fn a_vip_per_network_in_vip_mode_stable_and_released_when_the_service_leaves() {
    let web = vip_service("web", &["front", "back"]);
    let db = dnsrr_service("db", &["back"]);
    let mut objects = Objects {
        networks: vec![auto_network("front"), auto_network("back")],
        services: vec![web.clone(), db.clone()],
        tasks: vec![task("w1", &web, 1), task("d1", &db, 2)],
        ..Default::default()
    };
    // Networks created together are allocated in id order: "back" first.
    objects.step();
    let back = ipam_of(objects.network("back"))[0].0.clone();
    let front = ipam_of(objects.network("front"))[0].0.clone();
    assert_eq!(
        (front.as_str(), back.as_str()),
        ("10.0.1.0/24", "10.0.0.0/24")
    );
    assert_eq!(
        vips_of(objects.service("web")),
        vec![
            ("front".to_owned(), "10.0.1.2/24".to_owned()),
            ("back".to_owned(), "10.0.0.2/24".to_owned())
        ]
    );
    assert!(vips_of(objects.service("db")).is_empty());
    let w1 = objects.task("w1");
    assert_eq!(addresses_of(w1), vec!["10.0.1.3/24", "10.0.0.3/24"]);
    assert_eq!(w1.networks[0].aliases, vec!["web-alias"]);
    assert_eq!(w1.networks[0].network.as_ref().unwrap().id, "front");
    // The task carries the service's endpoint with its VIPs.
    assert_eq!(w1.endpoint, objects.service("web").endpoint);
    assert_eq!(addresses_of(objects.task("d1")), vec!["10.0.0.4/24"]);

    // The service leaves "front": its VIP there goes, the one on "back" stays.
    let mut moved = objects.service("web").clone();
    moved
        .spec
        .as_mut()
        .unwrap()
        .task
        .as_mut()
        .unwrap()
        .networks
        .remove(0);
    *objects.services.iter_mut().find(|s| s.id == "web").unwrap() = moved;
    objects.step();
    assert_eq!(
        vips_of(objects.service("web")),
        vec![("back".to_owned(), "10.0.0.2/24".to_owned())]
    );
    // The same spec again changes nothing.
    assert!(objects.step().is_empty());
}

#[test]
fn an_address_freed_is_given_again_only_after_the_others() {
    let web = dnsrr_service("web", &["n"]);
    let mut objects = Objects {
        networks: vec![network("n", &[("10.0.9.0/29", "", "")])],
        services: vec![web.clone()],
        tasks: vec![task("t1", &web, 1), task("t2", &web, 2)],
        ..Default::default()
    };
    objects.step();
    assert_eq!(addresses_of(objects.task("t1")), vec!["10.0.9.2/29"]);
    assert_eq!(objects.network("n").last_allocated_address, "10.0.9.3");
    // t1 is removed; the next tasks get .4, .5, .6, and only then the freed .2.
    objects.tasks.retain(|t| t.id != "t1");
    for (i, expected) in [
        (3, "10.0.9.4/29"),
        (4, "10.0.9.5/29"),
        (5, "10.0.9.6/29"),
        (6, "10.0.9.2/29"),
    ] {
        objects.tasks.push(task(&format!("t{i}"), &web, i));
        objects.step();
        assert_eq!(addresses_of(objects.task(&format!("t{i}"))), vec![expected]);
    }
}

#[test]
fn history_pins_no_address_but_running_and_waiting_tasks_do() {
    let web = dnsrr_service("web", &["n"]);
    let mut objects = Objects {
        networks: vec![network("n", &[("10.0.9.0/29", "", "")])],
        services: vec![web.clone()],
        tasks: (1..=5).map(|i| task(&format!("t{i}"), &web, i)).collect(),
        ..Default::default()
    };
    objects.step();
    // Running, shut down while still running, assigned: all in use. Failed, and shut down
    // before reaching a node: history.
    let states = [
        ("t1", TaskState::Running, TaskState::Running),
        ("t2", TaskState::Running, TaskState::Shutdown),
        ("t3", TaskState::Assigned, TaskState::Running),
        ("t4", TaskState::Failed, TaskState::Shutdown),
        ("t5", TaskState::Pending, TaskState::Shutdown),
    ];
    for (id, observed, desired) in states {
        let stored = objects.tasks.iter_mut().find(|t| t.id == id).unwrap();
        stored.status.as_mut().unwrap().state = observed as i32;
        stored.desired_state = desired as i32;
    }
    assert_eq!(
        objects.tasks.iter().filter(|t| holds_addresses(t)).count(),
        3
    );
    objects.tasks.push(task("t6", &web, 6));
    objects.tasks.push(task("t7", &web, 7));
    objects.tasks.push(task("t8", &web, 8));
    objects.step();
    assert_eq!(addresses_of(objects.task("t6")), vec!["10.0.9.5/29"]);
    assert_eq!(addresses_of(objects.task("t7")), vec!["10.0.9.6/29"]);
    assert_eq!(observed_state(objects.task("t8")), TaskState::New);
}

#[test]
fn tasks_without_networks_are_left_to_the_scheduler() {
    let plain = dnsrr_service("plain", &[]);
    let mut objects = Objects {
        services: vec![plain.clone()],
        tasks: vec![task("t1", &plain, 1)],
        ..Default::default()
    };
    assert!(objects.step().is_empty());
    assert!(ready_for_scheduling(objects.task("t1")));
}

#[test]
fn a_task_on_a_removed_network_waits_with_an_error() {
    let web = dnsrr_service("web", &["gone"]);
    let mut objects = Objects {
        services: vec![web.clone()],
        tasks: vec![task("t1", &web, 1)],
        ..Default::default()
    };
    objects.step();
    assert_eq!(
        objects.task("t1").status.as_ref().unwrap().err,
        "network gone not found: it was removed; update the service to leave it, or create the network again"
    );
}

#[test]
fn a_task_that_fails_on_its_second_network_gives_its_first_address_back() {
    let web = dnsrr_service("web", &["big", "small"]);
    let filler = dnsrr_service("filler", &["small"]);
    let mut objects = Objects {
        networks: vec![
            network("big", &[("10.0.8.0/24", "", "")]),
            network("small", &[("10.0.9.0/30", "", "")]),
        ],
        services: vec![web.clone(), filler.clone()],
        // A /30 holds one task address: the filler takes it.
        tasks: vec![task("f1", &filler, 1), task("t1", &web, 2)],
        ..Default::default()
    };
    let allocation = objects.step();
    assert_eq!(addresses_of(objects.task("f1")), vec!["10.0.9.2/30"]);
    assert_eq!(observed_state(objects.task("t1")), TaskState::New);
    // "big" is written once, as allocated, with no address given on it.
    let big = allocation.networks.iter().find(|n| n.id == "big").unwrap();
    assert_eq!(big.last_allocated_address, "");
}

/// Every address held (by a task that holds addresses, a VIP or a node's ingress leg) on each
/// network, and who holds it; fails when two hold one.
fn check_no_address_held_twice(objects: &Objects, seed: u64, round: usize) {
    let mut holders: HashMap<(String, String), String> = HashMap::new();
    let mut hold = |network: &str, address: &str, holder: String| {
        let address = address.split('/').next().unwrap().to_owned();
        if let Some(other) = holders.insert((network.to_owned(), address.clone()), holder.clone()) {
            panic!(
                "seed {seed} round {round}: {address} on {network} held by {other} and {holder}"
            );
        }
    };
    for service in &objects.services {
        for (network, address) in vips_of(service) {
            hold(&network, &address, format!("VIP of {}", service.id));
        }
    }
    for task in objects.tasks.iter().filter(|t| holds_addresses(t)) {
        for attachment in &task.networks {
            for address in &attachment.addresses {
                let network = &attachment.network.as_ref().unwrap().id;
                hold(network, address, format!("task {}", task.id));
            }
        }
    }
    for node in &objects.nodes {
        for attachment in &node.attachments {
            for address in &attachment.addresses {
                let network = &attachment.network.as_ref().unwrap().id;
                hold(network, address, format!("node {}", node.id));
            }
        }
    }
    // Nothing handed out is a network's gateway.
    for network in &objects.networks {
        if let Some(ipam) = &network.ipam {
            for config in &ipam.configs {
                assert!(
                    !holders.contains_key(&(network.id.clone(), config.gateway.clone())),
                    "seed {seed} round {round}: gateway {} of {} handed out",
                    config.gateway,
                    network.id
                );
            }
        }
    }
}

#[test]
fn random_creates_and_removals_never_give_an_address_twice() {
    let mut nodes_given = 0;
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        // The small network is the ingress network, where nodes take addresses too.
        let mut small = network("small", &[("10.1.0.0/28", "", "")]);
        small.spec.as_mut().unwrap().ingress = true;
        let mut objects = Objects {
            networks: vec![
                small,
                network("ranged", &[("10.2.0.0/24", "10.2.0.240/28", "")]),
                auto_network("auto"),
            ],
            ..Default::default()
        };
        let network_ids = ["small", "ranged", "auto"];
        let mut next_id = 0;
        let mut given = 0;
        for round in 0..120 {
            next_id += 1;
            match rng.random_range(0..8) {
                0 => {
                    let mut chosen: Vec<&str> = network_ids
                        .iter()
                        .copied()
                        .filter(|_| rng.random_range(0..2) == 0)
                        .collect();
                    if chosen.is_empty() {
                        chosen.push(network_ids[rng.random_range(0..3) as usize]);
                    }
                    let service = if rng.random_range(0..2) == 0 {
                        vip_service(&format!("s{next_id}"), &chosen)
                    } else {
                        dnsrr_service(&format!("s{next_id}"), &chosen)
                    };
                    // Some publish through the mesh, which puts their tasks, and every node,
                    // on the ingress network as well.
                    let service = if rng.random_range(0..3) == 0 {
                        publishing(service, &[(0, 80, api::port_config::PublishMode::Ingress)])
                    } else {
                        service
                    };
                    objects.services.push(service);
                }
                1 | 2 if !objects.services.is_empty() => {
                    let index = rng.random_range(0..objects.services.len() as u64) as usize;
                    let service = objects.services[index].clone();
                    let created = next_id as i64;
                    objects
                        .tasks
                        .push(task(&format!("t{next_id}"), &service, created));
                }
                3 if !objects.tasks.is_empty() => {
                    let index = rng.random_range(0..objects.tasks.len() as u64) as usize;
                    let observed = [TaskState::Running, TaskState::Failed, TaskState::Complete]
                        [rng.random_range(0..3) as usize];
                    let task = &mut objects.tasks[index];
                    if observed_state(task) == TaskState::Pending {
                        task.status.as_mut().unwrap().state = observed as i32;
                    }
                }
                4 if !objects.tasks.is_empty() => {
                    let index = rng.random_range(0..objects.tasks.len() as u64) as usize;
                    objects.tasks.remove(index);
                }
                5 if !objects.services.is_empty() => {
                    let index = rng.random_range(0..objects.services.len() as u64) as usize;
                    let removed = objects.services.remove(index);
                    objects.tasks.retain(|task| task.service_id != removed.id);
                }
                6 => objects.nodes.push(node(&format!("n{next_id}"))),
                7 if !objects.nodes.is_empty() => {
                    let index = rng.random_range(0..objects.nodes.len() as u64) as usize;
                    objects.nodes.remove(index);
                }
                _ => {}
            }
            let allocation = objects.step();
            given += allocation
                .tasks
                .iter()
                .map(|task| addresses_of(task).len())
                .sum::<usize>();
            check_no_address_held_twice(&objects, seed, round);
            nodes_given += allocation
                .nodes
                .iter()
                .filter(|node| !node.attachments.is_empty())
                .count();
        }
        assert!(given > 0, "seed {seed} gave nothing out");
    }
    assert!(nodes_given > 0, "no node was given an ingress address");
}

#[test]
fn two_allocations_from_one_read_conflict_on_the_network() {
    let web = dnsrr_service("web", &["n"]);
    let mut objects = Objects {
        networks: vec![network("n", &[("10.0.9.0/24", "", "")])],
        services: vec![web.clone()],
        ..Default::default()
    };
    objects.step();
    let read = objects.clone();
    let mut first = read.clone();
    first.tasks.push(task("a", &web, 1));
    let mut second = read.clone();
    second.tasks.push(task("b", &web, 2));
    let one = first.step();
    let other = second.step();
    // Both would take 10.0.9.2, and both rewrite the network at the version they read, so
    // the store commits only the first.
    assert_eq!(addresses_of(&one.tasks[0]), addresses_of(&other.tasks[0]));
    let read_version = read
        .network("n")
        .meta
        .as_ref()
        .unwrap()
        .version
        .unwrap()
        .index;
    for allocation in [&one, &other] {
        let network = allocation.networks.iter().find(|n| n.id == "n").unwrap();
        assert_eq!(
            network.meta.as_ref().unwrap().version.unwrap().index,
            read_version
        );
    }
}

fn publishing(
    mut service: Service,
    ports: &[(u32, u32, api::port_config::PublishMode)],
) -> Service {
    service
        .spec
        .as_mut()
        .unwrap()
        .endpoint
        .as_mut()
        .unwrap()
        .ports = ports
        .iter()
        .map(|(published, target, mode)| api::PortConfig {
            published_port: *published,
            target_port: *target,
            publish_mode: *mode as i32,
            ..Default::default()
        })
        .collect();
    service
}

/// A task made as the orchestrator makes it: carrying its service's endpoint.
fn task_of(id: &str, service: &Service, created_seconds: i64) -> Task {
    let mut task = task(id, service, created_seconds);
    task.endpoint = Some(api::Endpoint {
        spec: service.spec.as_ref().and_then(|spec| spec.endpoint.clone()),
        ..Default::default()
    });
    task
}

fn ingress_network() -> Network {
    let mut ingress = network("ingress", &[("10.0.0.0/24", "", "")]);
    ingress.spec.as_mut().unwrap().ingress = true;
    ingress
}

fn network_ids_of(task: &Task) -> Vec<String> {
    task.networks
        .iter()
        .map(|attachment| attachment.network.as_ref().unwrap().id.clone())
        .collect()
}

fn published_of(service: &Service) -> Vec<u32> {
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

#[test]
fn a_service_publishing_through_the_mesh_is_on_the_ingress_network_until_it_stops() {
    use api::port_config::PublishMode;
    let web = publishing(
        vip_service("web", &["front"]),
        &[(0, 80, PublishMode::Ingress)],
    );
    let lone = publishing(
        vip_service("lone", &[]),
        &[(8080, 80, PublishMode::Ingress)],
    );
    let host = publishing(vip_service("host", &[]), &[(9090, 80, PublishMode::Host)]);
    let mut objects = Objects {
        networks: vec![ingress_network(), auto_network("front")],
        services: vec![web.clone(), lone.clone(), host.clone()],
        tasks: vec![
            task_of("w1", &web, 1),
            task_of("l1", &lone, 2),
            task_of("h1", &host, 3),
        ],
        ..Default::default()
    };
    // A task of a service publishing through the mesh waits for its ingress address, even with
    // no network of its own; one publishing on its host only does not.
    assert!(!ready_for_scheduling(objects.task("l1")));
    assert!(ready_for_scheduling(objects.task("h1")));
    let first = objects.step();
    // The pool skips the subnet the ingress network asks for.
    assert_eq!(ipam_of(objects.network("front"))[0].0, "10.0.1.0/24");
    assert!(first.networks.iter().any(|network| network.id == "ingress"));
    // The ports the spec asks for, a number chosen for the one given without.
    assert_eq!(published_of(objects.service("web")), [30000]);
    assert_eq!(published_of(objects.service("lone")), [8080]);
    assert_eq!(published_of(objects.service("host")), [9090]);
    // A VIP on the ingress network first, then on the service's own networks (services go
    // in id order: "lone" got 10.0.0.2).
    assert_eq!(
        vips_of(objects.service("web")),
        vec![
            ("ingress".to_owned(), "10.0.0.3/24".to_owned()),
            ("front".to_owned(), "10.0.1.2/24".to_owned()),
        ]
    );
    assert!(vips_of(objects.service("host")).is_empty());
    // Each task is on the ingress network first, with an address there.
    let w1 = objects.task("w1");
    assert_eq!(network_ids_of(w1), ["ingress", "front"]);
    assert_eq!(addresses_of(w1), ["10.0.0.4/24", "10.0.1.3/24"]);
    assert_eq!(w1.endpoint, objects.service("web").endpoint);
    assert_eq!(network_ids_of(objects.task("l1")), ["ingress"]);
    assert!(objects.task("h1").networks.is_empty());
    assert!(objects.step().is_empty());

    // The service stops publishing: its ingress VIP and numbers go; its next task is on its own
    // networks only.
    let mut quiet = objects.service("web").clone();
    quiet
        .spec
        .as_mut()
        .unwrap()
        .endpoint
        .as_mut()
        .unwrap()
        .ports
        .clear();
    *objects.services.iter_mut().find(|s| s.id == "web").unwrap() = quiet.clone();
    objects.tasks.push(task_of("w2", &quiet, 4));
    objects.step();
    assert!(published_of(objects.service("web")).is_empty());
    assert_eq!(
        vips_of(objects.service("web")),
        vec![("front".to_owned(), "10.0.1.2/24".to_owned())]
    );
    assert_eq!(network_ids_of(objects.task("w2")), ["front"]);
}

#[test]
fn without_an_ingress_network_a_publishing_task_waits_with_why() {
    use api::port_config::PublishMode;
    let web = publishing(vip_service("web", &[]), &[(8080, 80, PublishMode::Ingress)]);
    let mut objects = Objects {
        services: vec![web.clone()],
        tasks: vec![task_of("w1", &web, 1)],
        ..Default::default()
    };
    objects.step();
    let w1 = objects.task("w1");
    assert_eq!(observed_state(w1), TaskState::New);
    assert_eq!(
        w1.status.as_ref().unwrap().err,
        "the service publishes port 8080:80/tcp through the routing mesh, but the swarm has no ingress network: create one with 'shoal network create -d overlay --ingress ingress', or publish the port with mode=host"
    );
}

#[test]
fn a_spec_changed_behind_the_control_api_gets_its_ports_and_the_holder_keeps_a_taken_one() {
    use api::port_config::PublishMode;
    // An automatic rollback put back a spec publishing 8080, which "api" took meanwhile: "web"
    // keeps what it holds, and the failure is reported; "api" is untouched.
    let mut web = publishing(vip_service("web", &[]), &[(8080, 80, PublishMode::Ingress)]);
    web.endpoint = Some(api::Endpoint {
        spec: web.spec.as_ref().unwrap().endpoint.clone(),
        ports: vec![api::PortConfig {
            published_port: 9090,
            target_port: 80,
            ..Default::default()
        }],
        virtual_ips: Vec::new(),
    });
    let mut api_service = publishing(vip_service("api", &[]), &[(8080, 80, PublishMode::Ingress)]);
    api_service.endpoint = Some(api::Endpoint {
        spec: api_service.spec.as_ref().unwrap().endpoint.clone(),
        ports: api_service
            .spec
            .as_ref()
            .unwrap()
            .endpoint
            .as_ref()
            .unwrap()
            .ports
            .clone(),
        virtual_ips: Vec::new(),
    });
    let mut objects = Objects {
        networks: vec![ingress_network()],
        services: vec![web, api_service],
        ..Default::default()
    };
    let allocation = objects.step();
    assert_eq!(published_of(objects.service("web")), [9090]);
    assert_eq!(published_of(objects.service("api")), [8080]);
    assert_eq!(allocation.failed_services.len(), 1);
    assert!(
        allocation.failed_services[0]
            .1
            .to_string()
            .starts_with("port 8080/tcp is already published by service api")
    );
    // Once "api" lets the number go, "web" takes it.
    let mut api_quiet = objects.service("api").clone();
    api_quiet.pending_delete = true;
    *objects.services.iter_mut().find(|s| s.id == "api").unwrap() = api_quiet;
    objects.step();
    assert_eq!(published_of(objects.service("web")), [8080]);
}

fn node(id: &str) -> api::Node {
    api::Node {
        id: id.into(),
        meta: meta(1, 0),
        ..Default::default()
    }
}

fn leg(network: &str, address: &str) -> (String, Vec<String>) {
    (network.to_owned(), vec![address.to_owned()])
}

#[test]
fn every_node_gets_one_ingress_address_kept_until_the_ingress_network_goes() {
    use api::port_config::PublishMode;
    let web = publishing(vip_service("web", &[]), &[(8080, 80, PublishMode::Ingress)]);
    let mut objects = Objects {
        networks: vec![ingress_network()],
        services: vec![web.clone()],
        tasks: vec![task_of("w1", &web, 1)],
        nodes: vec![node("n2"), node("n1")],
        ..Default::default()
    };
    objects.step();
    // Serially after the service's VIP and its task's address, nodes in id order.
    assert_eq!(vips_of(objects.service("web"))[0].1, "10.0.0.2/24");
    assert_eq!(addresses_of(objects.task("w1")), ["10.0.0.3/24"]);
    assert_eq!(objects.node_legs("n1"), [leg("ingress", "10.0.0.4/24")]);
    assert_eq!(objects.node_legs("n2"), [leg("ingress", "10.0.0.5/24")]);
    // The attachment carries the network, for the node to plumb its leg from.
    let attached = &objects.nodes[0].attachments[0];
    assert_eq!(
        attached.network.as_ref().unwrap().ipam,
        objects.network("ingress").ipam
    );
    // Kept as they are: nothing to write.
    assert!(objects.step().is_empty());

    // A node's address is in use: a new node and a new task get others.
    objects.nodes.push(node("n3"));
    objects.tasks.push(task_of("w2", &web, 2));
    objects.step();
    assert_eq!(addresses_of(objects.task("w2")), ["10.0.0.6/24"]);
    assert_eq!(objects.node_legs("n3"), [leg("ingress", "10.0.0.7/24")]);

    // A removed node frees its address (given again only after the others, serially).
    objects.nodes.retain(|n| n.id != "n1");
    objects.nodes.push(node("n4"));
    objects.step();
    assert_eq!(objects.node_legs("n4"), [leg("ingress", "10.0.0.8/24")]);

    // The ingress network replaced: every node moves to the new one (after the publishing
    // service's new VIP there).
    let mut old = objects.network("ingress").clone();
    old.pending_delete = true;
    *objects
        .networks
        .iter_mut()
        .find(|n| n.id == "ingress")
        .unwrap() = old;
    let mut replacement = network("ingress2", &[("10.9.0.0/24", "", "")]);
    replacement.spec.as_mut().unwrap().ingress = true;
    objects.networks.push(replacement);
    objects.step();
    assert_eq!(vips_of(objects.service("web"))[0].1, "10.9.0.2/24");
    assert_eq!(objects.node_legs("n2"), [leg("ingress2", "10.9.0.3/24")]);

    // No service publishes any more: nodes give their addresses back.
    objects
        .services
        .iter_mut()
        .for_each(|s| s.pending_delete = true);
    let allocation = objects.step();
    assert_eq!(allocation.nodes.len(), 3);
    assert!(objects.nodes.iter().all(|n| n.attachments.is_empty()));
}

#[test]
fn without_a_published_port_or_an_ingress_network_nodes_get_no_address() {
    use api::port_config::PublishMode;
    let quiet = vip_service("quiet", &[]);
    let host = publishing(vip_service("host", &[]), &[(9090, 80, PublishMode::Host)]);
    let mut objects = Objects {
        networks: vec![ingress_network()],
        services: vec![quiet, host],
        nodes: vec![node("n1")],
        ..Default::default()
    };
    objects.step();
    assert!(objects.node_legs("n1").is_empty());
    let web = publishing(vip_service("web", &[]), &[(8080, 80, PublishMode::Ingress)]);
    objects.services.push(web);
    objects.networks.clear();
    objects.step();
    assert!(objects.node_legs("n1").is_empty());
}

#[test]
fn a_node_finding_the_ingress_network_full_is_reported_and_gets_an_address_once_one_is_free() {
    let mut objects = Objects {
        networks: vec![{
            let mut tiny = network("ingress", &[("10.0.0.0/30", "", "")]);
            tiny.spec.as_mut().unwrap().ingress = true;
            tiny
        }],
        services: vec![publishing(
            dnsrr_service("web", &[]),
            &[(8080, 80, api::port_config::PublishMode::Ingress)],
        )],
        nodes: vec![node("a"), node("b")],
        ..Default::default()
    };
    // A /30 has one address besides its gateway.
    let allocation = objects.step();
    assert_eq!(objects.node_legs("a"), [leg("ingress", "10.0.0.2/30")]);
    assert!(objects.node_legs("b").is_empty());
    assert_eq!(allocation.failed_nodes.len(), 1);
    assert_eq!(allocation.failed_nodes[0].0, "b");
    assert!(
        allocation.failed_nodes[0]
            .1
            .to_string()
            .starts_with("no IP address left on network ingress")
    );
    objects.nodes.retain(|n| n.id != "a");
    objects.step();
    assert_eq!(objects.node_legs("b"), [leg("ingress", "10.0.0.2/30")]);
}

#[test]
fn node_writes_keep_to_the_step_budget() {
    let nodes: Vec<api::Node> = (0..5).map(|i| node(&format!("n{i}"))).collect();
    let pools = AddressPools::of_cluster(None);
    let networks = vec![ingress_network()];
    let services = [publishing(
        dnsrr_service("web", &[]),
        &[(8080, 80, api::port_config::PublishMode::Ingress)],
    )];
    let allocation = allocate(
        &AllocatorInput {
            networks: &refs(&networks),
            nodes: &refs(&nodes),
            services: &refs(&services),
            tasks: &[],
            pools: &pools,
            max_tasks: 2,
        },
        NOW,
    );
    assert_eq!(allocation.nodes.len(), 2);
}
