//! Loopback tests of the gossip agent: real UDP and TCP sockets on 127.0.0.1, several agents in
//! one process.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::core::GossipConfig;
use super::seal::{GossipKey, KEY_LEN, Keyring};
use super::shell::{GossipAgent, GossipAgentConfig, TableView};
use super::table::EndpointRecord;

/// How long a loopback test waits for the agents to agree. Generous: CI runs every test of the
/// crate at once on two cores, and the speed figures are the benchmark's to measure.
const SETTLE: Duration = Duration::from_secs(20);

fn key(id: u32) -> GossipKey {
    GossipKey::new(id, [id as u8; KEY_LEN])
}

fn ring(primary: u32, others: &[u32]) -> Keyring {
    Keyring::new(key(primary), others.iter().map(|id| key(*id)).collect()).expect("distinct ids")
}

fn record(node: usize, endpoint: usize) -> EndpointRecord {
    EndpointRecord {
        task_name: format!("web.{endpoint}"),
        address: format!("10.0.{node}.{}/16", endpoint + 2),
        mac: format!("02:42:0a:00:{node:02x}:{:02x}", endpoint + 2),
        tunnel_endpoint: IpAddr::from([127, 0, 0, 1]),
        service_id: "svc-web".to_owned(),
        service_name: "web".to_owned(),
        virtual_ip: None,
        aliases: Vec::new(),
        healthy: true,
        ingress_ports: Vec::new(),
    }
}

async fn agent(index: usize, keyring: Keyring, seeds: Vec<SocketAddr>) -> GossipAgent {
    GossipAgent::start(GossipAgentConfig {
        name: format!("node-{index}"),
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise: None,
        seeds,
        keyring,
        config: GossipConfig::default(),
        generation: 1,
    })
    .await
    .expect("binds on loopback")
}

/// Starts `count` agents, each seeded with the first, all on net-a, and waits until every one
/// sees all the others alive.
async fn cluster(count: usize) -> Vec<GossipAgent> {
    let first = agent(0, ring(1, &[]), Vec::new()).await;
    let seed = first.local_addr();
    let mut agents = vec![first];
    for index in 1..count {
        agents.push(agent(index, ring(1, &[]), vec![seed]).await);
    }
    for agent in &agents {
        agent.join_network("net-a").expect("running");
        let mut members = agent.watch_members();
        tokio::time::timeout(
            Duration::from_secs(10),
            members.wait_for(|members| members.len() == count - 1),
        )
        .await
        .expect("every agent sees the others within 10 s")
        .expect("running");
    }
    agents
}

async fn wait_for_table(
    agent: &GossipAgent,
    limit: Duration,
    mut done: impl FnMut(&TableView) -> bool,
) -> bool {
    let mut table = agent.watch_table();
    tokio::time::timeout(limit, table.wait_for(|view| done(view)))
        .await
        .is_ok()
}

#[tokio::test]
async fn gossip_agent_an_endpoint_published_on_one_node_reaches_the_others() {
    let agents = cluster(4).await;
    agents[2]
        .publish("net-a", "task-1", record(2, 1))
        .await
        .expect("attached");
    for (index, agent) in agents.iter().enumerate() {
        assert!(
            wait_for_table(agent, SETTLE, |view| {
                view.values()
                    .any(|seen| seen.node == "node-2" && seen.record == record(2, 1))
            })
            .await,
            "node-{index} never saw node-2's endpoint"
        );
    }
    agents[2].withdraw("net-a", "task-1").expect("running");
    for agent in &agents {
        assert!(wait_for_table(agent, SETTLE, |view| view.is_empty()).await);
    }
}

#[tokio::test]
/// The 3 s figure is the benchmark's (`examples/gossip-bench.rs`); here, with every other test
/// of the crate running beside it, the bound only tells "removed" from "kept".
async fn gossip_agent_a_killed_nodes_endpoints_are_gone_everywhere() {
    let mut agents = cluster(5).await;
    for (index, agent) in agents.iter().enumerate() {
        agent
            .publish("net-a", &format!("task-{index}"), record(index, 0))
            .await
            .expect("attached");
    }
    for agent in &agents {
        assert!(wait_for_table(agent, SETTLE, |view| view.len() == 5).await);
    }
    // Dropping the agent closes its sockets with no goodbye, as a crash would.
    drop(agents.pop());
    let killed = Instant::now();
    for (index, agent) in agents.iter().enumerate() {
        let gone = wait_for_table(agent, SETTLE, |view| {
            view.len() == 4 && view.values().all(|seen| seen.node != "node-4")
        })
        .await;
        assert!(
            gone,
            "node-{index} still shows node-4's endpoint {:?} after it died",
            killed.elapsed()
        );
    }
}

#[tokio::test]
async fn gossip_agent_drops_messages_without_a_current_key() {
    let agents = cluster(2).await;
    let intruder = agent(9, ring(7, &[]), vec![agents[0].local_addr()]).await;
    intruder.join_network("net-a").expect("running");
    intruder
        .publish("net-a", "evil", record(9, 0))
        .await
        .expect("attached");
    let mut stats = tokio::time::interval(Duration::from_millis(50));
    let deadline = Instant::now() + Duration::from_secs(5);
    while agents[0].stats().dropped_unknown_key == 0 {
        assert!(
            Instant::now() < deadline,
            "node-0 never counted the intruder's datagrams"
        );
        stats.tick().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!agents[0].watch_members().borrow().contains("node-9"));
    assert!(agents[0].watch_table().borrow().is_empty());
    assert!(intruder.watch_members().borrow().is_empty());
}

#[tokio::test]
async fn gossip_agent_rotates_keys_without_losing_a_message() {
    let agents = cluster(3).await;
    let rotations = [ring(1, &[2]), ring(2, &[1]), ring(2, &[])];
    for (step, keyring) in rotations.into_iter().enumerate() {
        // Nodes take each step at different times: node-0 first, and it sends at once; the
        // others only then. Every step keeps what any node sends openable by all.
        agents[0].set_keyring(keyring.clone()).expect("running");
        agents[0]
            .publish("net-a", &format!("task-{step}"), record(0, step))
            .await
            .expect("attached");
        for agent in &agents {
            assert!(
                wait_for_table(agent, SETTLE, |view| view.len() == step + 1).await,
                "rotation step {step} lost an endpoint"
            );
        }
        for agent in &agents[1..] {
            agent.set_keyring(keyring.clone()).expect("running");
        }
    }
    for (index, agent) in agents.iter().enumerate() {
        assert_eq!(
            agent.stats().dropped_unauthenticated(),
            0,
            "node-{index} dropped a frame"
        );
        assert_eq!(agent.watch_members().borrow().len(), 2);
    }
}

#[tokio::test]
async fn gossip_agent_a_node_that_leaves_takes_its_endpoints_along() {
    let mut agents = cluster(3).await;
    agents[2]
        .publish("net-a", "task-2", record(2, 0))
        .await
        .expect("attached");
    for agent in &agents {
        assert!(wait_for_table(agent, SETTLE, |view| view.len() == 1).await);
    }
    let leaving = agents.pop().expect("three agents");
    leaving.leave().await.expect("running");
    for agent in &agents {
        assert!(
            wait_for_table(agent, SETTLE, |view| view.is_empty()).await,
            "the leaver's endpoints stay"
        );
    }
}

#[tokio::test]
async fn gossip_agent_refuses_to_publish_on_a_network_it_has_not_joined() {
    let agents = cluster(2).await;
    let refused = agents[0].publish("net-b", "task-1", record(0, 1)).await;
    assert!(matches!(refused, Err(super::GossipError::NotAttached(network)) if network == "net-b"));
}
