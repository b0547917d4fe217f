//! Measures the gossip on loopback: how long 1,000 endpoints published across 5 nodes take to
//! reach every node, and how long a killed node's endpoints take to vanish from the others.
//!
//! `cargo run -p overlay-net --example gossip-bench -- [RUNS]`

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use overlay_net::gossip::{
    EndpointRecord, GossipAgent, GossipAgentConfig, GossipConfig, GossipKey, KEY_LEN, Keyring,
};

const NODES: usize = 5;
const ENDPOINTS: usize = 1000;

fn record(node: usize, endpoint: usize) -> EndpointRecord {
    EndpointRecord {
        task_name: format!("web.{endpoint}.task{node}x{endpoint}"),
        address: format!("10.0.{}.{}/16", endpoint / 250, endpoint % 250 + 2),
        mac: format!(
            "02:42:0a:00:{:02x}:{:02x}",
            endpoint / 250,
            endpoint % 250 + 2
        ),
        tunnel_endpoint: IpAddr::from([127, 0, 0, node as u8 + 1]),
        service_id: "k3fq8ab0c1d2e3f4g5h6i7j8".to_owned(),
        service_name: "web".to_owned(),
        virtual_ip: Some("10.0.0.2/16".to_owned()),
        aliases: vec!["www".to_owned()],
        healthy: true,
        ingress_ports: Vec::new(),
    }
}

async fn start(index: usize, seeds: Vec<SocketAddr>) -> anyhow::Result<GossipAgent> {
    let keyring = Keyring::new(GossipKey::new(1, [7; KEY_LEN]), Vec::new())?;
    Ok(GossipAgent::start(GossipAgentConfig {
        name: format!("node-{index}"),
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise: None,
        seeds,
        keyring,
        config: GossipConfig::default(),
        generation: 1,
    })
    .await?)
}

async fn wait_all(agents: &[GossipAgent], done: impl Fn(&GossipAgent) -> bool) -> Duration {
    let start = Instant::now();
    while !agents.iter().all(&done) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn run() -> anyhow::Result<(Duration, Duration)> {
    let first = start(0, Vec::new()).await?;
    let seed = first.local_addr();
    let mut agents = vec![first];
    for index in 1..NODES {
        agents.push(start(index, vec![seed]).await?);
    }
    for agent in &agents {
        agent.join_network("net-a")?;
    }
    wait_all(&agents, |agent| {
        agent.watch_members().borrow().len() == NODES - 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let published = Instant::now();
    let per_node = ENDPOINTS / NODES;
    for (node, agent) in agents.iter().enumerate() {
        for endpoint in 0..per_node {
            agent
                .publish(
                    "net-a",
                    &format!("task{node}x{endpoint}"),
                    record(node, endpoint),
                )
                .await?;
        }
    }
    wait_all(&agents, |agent| {
        agent.watch_table().borrow().len() == ENDPOINTS
    })
    .await;
    let converged = published.elapsed();

    drop(agents.pop());
    let killed = Instant::now();
    let dead = format!("node-{}", NODES - 1);
    wait_all(&agents, |agent| {
        agent
            .watch_table()
            .borrow()
            .values()
            .all(|seen| seen.node != dead)
    })
    .await;
    Ok((converged, killed.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|runs| runs.parse())
        .transpose()?
        .unwrap_or(5);
    println!("run  converge_1000_ms  dead_node_gone_ms");
    for run_number in 1..=runs {
        let (converged, gone) = tokio::time::timeout(Duration::from_secs(60), run()).await??;
        println!(
            "{run_number:>3}  {:>16}  {:>17}",
            converged.as_millis(),
            gone.as_millis()
        );
    }
    Ok(())
}
