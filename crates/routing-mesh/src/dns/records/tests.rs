//! Exact answers of the DNS core, one rule per test.

use std::net::IpAddr;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn task(container_name: &str, address: &str) -> TaskRecord {
    TaskRecord {
        container_name: container_name.to_owned(),
        address: ip(address),
        running: true,
        health: TaskHealth::NoHealthcheck,
    }
}

fn service(name: &str, endpoint: ServiceEndpoint, tasks: Vec<TaskRecord>) -> ServiceRecords {
    ServiceRecords {
        name: name.to_owned(),
        aliases: Vec::new(),
        endpoint,
        tasks,
    }
}

fn network(id: &str, name: &str, services: Vec<ServiceRecords>) -> NetworkRecords {
    NetworkRecords {
        id: id.to_owned(),
        name: name.to_owned(),
        ingress: false,
        internal: false,
        services,
    }
}

fn web_on_front() -> NetworkRecords {
    network(
        "net-front",
        "front",
        vec![service(
            "web",
            ServiceEndpoint::VirtualIp(ip("10.0.1.2")),
            vec![
                task("web.1.aaa", "10.0.1.5"),
                task("web.2.bbb", "10.0.1.6"),
                task("web.3.ccc", "10.0.1.7"),
            ],
        )],
    )
}

fn on(networks: &[&str]) -> AskingTask {
    AskingTask {
        networks: networks.iter().map(|id| (*id).to_owned()).collect(),
        ndots_set: false,
        own_upstreams: false,
    }
}

fn answer(table: &DnsTable, name: &str, query_type: QueryType, asker: &AskingTask) -> Answer {
    table.answer(name, query_type, asker, &mut StdRng::seed_from_u64(7))
}

/// The addresses of an answer, sorted, so that tests of membership ignore the shuffle.
fn addresses(answer: Answer) -> Vec<IpAddr> {
    let Answer::Records(records) = answer else {
        panic!("expected records, got {answer:?}");
    };
    let mut addresses: Vec<IpAddr> = records
        .into_iter()
        .map(|record| match record {
            AnswerRecord::Address(address) => address,
            AnswerRecord::Pointer(target) => panic!("unexpected PTR {target}"),
        })
        .collect();
    addresses.sort();
    addresses
}

#[test]
fn a_service_name_resolves_to_its_vip() {
    let table = DnsTable::new([web_on_front()]);
    assert_eq!(
        answer(&table, "web", QueryType::A, &on(&["net-front"])),
        Answer::Records(vec![AnswerRecord::Address(ip("10.0.1.2"))])
    );
}

#[test]
fn names_are_case_insensitive_and_may_end_with_a_dot() {
    let table = DnsTable::new([web_on_front()]);
    let asker = on(&["net-front"]);
    for name in ["WEB", "Web.", "web.", "TASKS.Web."] {
        assert_ne!(
            answer(&table, name, QueryType::A, &asker),
            Answer::Forward,
            "{name}"
        );
    }
    assert_eq!(
        addresses(answer(&table, "Web.", QueryType::A, &asker)),
        vec![ip("10.0.1.2")]
    );
}

#[test]
fn tasks_dot_service_resolves_to_every_serving_task() {
    let table = DnsTable::new([web_on_front()]);
    assert_eq!(
        addresses(answer(
            &table,
            "tasks.web",
            QueryType::A,
            &on(&["net-front"])
        )),
        vec![ip("10.0.1.5"), ip("10.0.1.6"), ip("10.0.1.7")]
    );
}

#[test]
fn the_order_of_several_addresses_is_shuffled_by_the_generator_passed_in() {
    let table = DnsTable::new([web_on_front()]);
    let asker = on(&["net-front"]);
    let mut rng = StdRng::seed_from_u64(1);
    let orders: std::collections::BTreeSet<Vec<AnswerRecord>> = (0..20)
        .map(
            |_| match table.answer("tasks.web", QueryType::A, &asker, &mut rng) {
                Answer::Records(records) => records,
                other => panic!("expected records, got {other:?}"),
            },
        )
        .collect();
    assert!(orders.len() > 1, "20 answers came in one order: {orders:?}");
    // The same seed gives the same order: the decision is reproducible.
    assert_eq!(
        answer(&table, "tasks.web", QueryType::A, &asker),
        answer(&table, "tasks.web", QueryType::A, &asker)
    );
}

#[test]
fn a_dnsrr_service_name_resolves_to_its_tasks() {
    let table = DnsTable::new([network(
        "net-back",
        "back",
        vec![service(
            "db",
            ServiceEndpoint::DnsRoundRobin,
            vec![task("db.1.ddd", "10.0.2.3"), task("db.2.eee", "10.0.2.4")],
        )],
    )]);
    let asker = on(&["net-back"]);
    assert_eq!(
        addresses(answer(&table, "db", QueryType::A, &asker)),
        vec![ip("10.0.2.3"), ip("10.0.2.4")]
    );
    assert_eq!(
        addresses(answer(&table, "tasks.db", QueryType::A, &asker)),
        vec![ip("10.0.2.3"), ip("10.0.2.4")]
    );
}

#[test]
fn aliases_resolve_like_the_service_name_and_tasks_dot_alias_like_tasks() {
    let mut front = web_on_front();
    front.services[0].aliases = vec!["Frontend".to_owned()];
    let table = DnsTable::new([front]);
    let asker = on(&["net-front"]);
    assert_eq!(
        addresses(answer(&table, "frontend", QueryType::A, &asker)),
        vec![ip("10.0.1.2")]
    );
    assert_eq!(
        addresses(answer(&table, "tasks.FRONTEND", QueryType::A, &asker)),
        vec![ip("10.0.1.5"), ip("10.0.1.6"), ip("10.0.1.7")]
    );
}

#[test]
fn an_alias_two_services_share_resolves_to_both() {
    let mut front = web_on_front();
    front.services[0].aliases = vec!["app".to_owned()];
    let mut api = service(
        "api",
        ServiceEndpoint::VirtualIp(ip("10.0.1.3")),
        vec![task("api.1.fff", "10.0.1.8")],
    );
    api.aliases = vec!["app".to_owned()];
    front.services.push(api);
    let table = DnsTable::new([front]);
    let asker = on(&["net-front"]);
    assert_eq!(
        addresses(answer(&table, "app", QueryType::A, &asker)),
        vec![ip("10.0.1.2"), ip("10.0.1.3")]
    );
    assert_eq!(
        addresses(answer(&table, "tasks.app", QueryType::A, &asker)),
        vec![
            ip("10.0.1.5"),
            ip("10.0.1.6"),
            ip("10.0.1.7"),
            ip("10.0.1.8")
        ]
    );
}

#[test]
fn a_container_name_resolves_to_that_one_task() {
    let table = DnsTable::new([web_on_front()]);
    assert_eq!(
        addresses(answer(
            &table,
            "web.2.BBB",
            QueryType::A,
            &on(&["net-front"])
        )),
        vec![ip("10.0.1.6")]
    );
}

#[test]
fn tasks_not_running_or_not_healthy_are_left_out() {
    let mut front = web_on_front();
    front.services[0].tasks[0].running = false;
    front.services[0].tasks[1].health = TaskHealth::Unhealthy;
    front.services[0].tasks[2].health = TaskHealth::Healthy;
    let mut starting = task("web.4.ggg", "10.0.1.9");
    starting.health = TaskHealth::Starting;
    front.services[0].tasks.push(starting);
    let table = DnsTable::new([front]);
    let asker = on(&["net-front"]);
    assert_eq!(
        addresses(answer(&table, "tasks.web", QueryType::A, &asker)),
        vec![ip("10.0.1.7")]
    );
    for left_out in ["web.1.aaa", "web.2.bbb", "web.4.ggg"] {
        assert_eq!(
            answer(&table, left_out, QueryType::A, &asker),
            Answer::Forward,
            "{left_out}"
        );
    }
}

#[test]
fn a_service_with_no_serving_task_is_not_ours() {
    let mut front = web_on_front();
    for task in &mut front.services[0].tasks {
        task.running = false;
    }
    let table = DnsTable::new([front]);
    let asker = on(&["net-front"]);
    assert_eq!(answer(&table, "web", QueryType::A, &asker), Answer::Forward);
    assert_eq!(
        answer(&table, "tasks.web", QueryType::A, &asker),
        Answer::Forward
    );
}

#[test]
fn names_on_networks_the_task_is_not_on_are_invisible() {
    let table = DnsTable::new([
        web_on_front(),
        network(
            "net-back",
            "back",
            vec![service(
                "db",
                ServiceEndpoint::VirtualIp(ip("10.0.2.2")),
                vec![task("db.1.ddd", "10.0.2.3")],
            )],
        ),
    ]);
    let asker = on(&["net-front"]);
    for name in ["db", "tasks.db", "db.1.ddd", "db.back"] {
        assert_eq!(
            answer(&table, name, QueryType::A, &asker),
            Answer::Forward,
            "{name}"
        );
    }
    assert_eq!(
        answer(&table, "3.2.0.10.in-addr.arpa.", QueryType::Ptr, &asker),
        Answer::Forward
    );
}

#[test]
fn the_first_of_the_tasks_networks_that_holds_the_name_answers() {
    let back = network(
        "net-back",
        "back",
        vec![service(
            "web",
            ServiceEndpoint::VirtualIp(ip("10.0.2.9")),
            vec![task("web.1.aaa", "10.0.2.5")],
        )],
    );
    let table = DnsTable::new([web_on_front(), back]);
    assert_eq!(
        addresses(answer(
            &table,
            "web",
            QueryType::A,
            &on(&["net-back", "net-front"])
        )),
        vec![ip("10.0.2.9")]
    );
    assert_eq!(
        addresses(answer(
            &table,
            "web",
            QueryType::A,
            &on(&["net-front", "net-back"])
        )),
        vec![ip("10.0.1.2")]
    );
}

#[test]
fn name_dot_network_looks_only_in_that_network_whose_name_is_case_sensitive() {
    let back = network(
        "net-back",
        "back",
        vec![service(
            "web",
            ServiceEndpoint::VirtualIp(ip("10.0.2.9")),
            vec![task("web.1.aaa", "10.0.2.5")],
        )],
    );
    let table = DnsTable::new([web_on_front(), back]);
    let asker = on(&["net-front", "net-back"]);
    assert_eq!(
        addresses(answer(&table, "WEB.back", QueryType::A, &asker)),
        vec![ip("10.0.2.9")]
    );
    assert_eq!(
        addresses(answer(&table, "tasks.web.back.", QueryType::A, &asker)),
        vec![ip("10.0.2.5")]
    );
    assert_eq!(
        answer(&table, "web.BACK", QueryType::A, &asker),
        Answer::Forward
    );
}

#[test]
fn the_ingress_network_holds_no_names() {
    let mut ingress = web_on_front();
    ingress.ingress = true;
    let table = DnsTable::new([ingress]);
    assert_eq!(
        answer(&table, "web", QueryType::A, &on(&["net-front"])),
        Answer::Forward
    );
}

#[test]
fn aaaa_and_mx_for_an_ipv4_only_name_are_empty_answers_not_forwarded() {
    let table = DnsTable::new([web_on_front()]);
    let asker = on(&["net-front"]);
    assert_eq!(
        answer(&table, "web", QueryType::Aaaa, &asker),
        Answer::Records(Vec::new())
    );
    assert_eq!(
        answer(&table, "web", QueryType::Mx, &asker),
        Answer::Records(Vec::new())
    );
}

#[test]
fn other_types_are_forwarded_even_for_our_names() {
    let table = DnsTable::new([web_on_front()]);
    assert_eq!(
        answer(&table, "web", QueryType::Other, &on(&["net-front"])),
        Answer::Forward
    );
}

#[test]
fn ipv6_task_addresses_answer_aaaa() {
    let table = DnsTable::new([network(
        "net-v6",
        "v6",
        vec![service(
            "web",
            ServiceEndpoint::DnsRoundRobin,
            vec![task("web.1.aaa", "fd00::5"), task("web.2.bbb", "10.0.3.5")],
        )],
    )]);
    let asker = on(&["net-v6"]);
    assert_eq!(
        addresses(answer(&table, "web", QueryType::Aaaa, &asker)),
        vec![ip("fd00::5")]
    );
    assert_eq!(
        addresses(answer(&table, "web", QueryType::A, &asker)),
        vec![ip("10.0.3.5")]
    );
    assert_eq!(
        answer(
            &table,
            "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            QueryType::Ptr,
            &asker
        ),
        Answer::Records(vec![AnswerRecord::Pointer("web.1.aaa.v6.".to_owned())])
    );
}

#[test]
fn ptr_of_a_task_address_is_its_container_name_on_the_network_and_vips_have_none() {
    let table = DnsTable::new([web_on_front()]);
    let asker = on(&["net-front"]);
    assert_eq!(
        answer(&table, "6.1.0.10.IN-ADDR.ARPA.", QueryType::Ptr, &asker),
        Answer::Records(vec![AnswerRecord::Pointer("web.2.bbb.front.".to_owned())])
    );
    assert_eq!(
        answer(&table, "2.1.0.10.in-addr.arpa", QueryType::Ptr, &asker),
        Answer::Forward
    );
    assert_eq!(
        answer(&table, "not.a.reverse.name", QueryType::Ptr, &asker),
        Answer::Forward
    );
}

#[test]
fn unknown_names_are_forwarded() {
    let table = DnsTable::new([web_on_front()]);
    let asker = on(&["net-front"]);
    assert_eq!(
        answer(&table, "example.com.", QueryType::A, &asker),
        Answer::Forward
    );
    assert_eq!(
        answer(&table, "nothing", QueryType::A, &asker),
        Answer::Forward
    );
}

#[test]
fn a_task_only_on_internal_networks_gets_server_failure_for_unknown_names() {
    let mut front = web_on_front();
    front.internal = true;
    let mut open = network("net-open", "open", Vec::new());
    open.internal = false;
    let table = DnsTable::new([front, open]);
    assert_eq!(
        answer(&table, "example.com", QueryType::A, &on(&["net-front"])),
        Answer::ServerFailure
    );
    assert_eq!(
        addresses(answer(&table, "web", QueryType::A, &on(&["net-front"]))),
        vec![ip("10.0.1.2")]
    );
    assert_eq!(
        answer(
            &table,
            "example.com",
            QueryType::A,
            &on(&["net-front", "net-open"])
        ),
        Answer::Forward
    );
}

#[test]
fn with_ndots_set_an_unknown_single_label_is_an_empty_answer() {
    let table = DnsTable::new([web_on_front()]);
    let mut asker = on(&["net-front"]);
    asker.ndots_set = true;
    assert_eq!(
        answer(&table, "nothing", QueryType::A, &asker),
        Answer::Records(Vec::new())
    );
    assert_eq!(
        answer(&table, "nothing", QueryType::Aaaa, &asker),
        Answer::Records(Vec::new())
    );
    assert_eq!(
        answer(&table, "example.com", QueryType::A, &asker),
        Answer::Forward
    );
}

#[test]
fn a_task_with_its_own_nameservers_forwards_even_from_internal_networks() {
    let mut front = web_on_front();
    front.internal = true;
    let table = DnsTable::new([front]);
    let mut asker = on(&["net-front"]);
    asker.own_upstreams = true;
    assert_eq!(
        answer(&table, "example.com", QueryType::A, &asker),
        Answer::Forward
    );
}
