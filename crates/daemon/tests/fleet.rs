//! The simulated fleet at a small size: 3 managers (each a process of its own) and 50 agents (each joined with the worker
//! token, each with its own certificate and a real agent session over mutual TLS) converge a
//! 500-task service, survive the leader's loss (a new leader, every agent back in session, a
//! scale to 550 accepted and converged) and an agent's restart (its containers adopted, none
//! started again), and no slot ever runs two containers at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use daemon::fleet::{Fleet, FleetOptions, replicated_service, slots};
use shoal_proto::api::{
    CreateServiceRequest, GetServiceRequest, ListNodesRequest, ListTasksRequest, TaskState,
    UpdateServiceRequest, node_status,
};
use tonic::Request;

const MANAGERS: usize = 3;
const AGENTS: usize = 50;
const PATIENCE: Duration = Duration::from_secs(60);
const SERVICE: &str = "fleet-web";

/// Polls `observe` every 50 ms until it gives a value, checking Swarm's slot rule over the
/// fleet's records at every poll; fails with the last observation after `PATIENCE`.
async fn poll<T, F>(fleet: &Fleet, what: &str, mut observe: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Err(error) = fleet.check_slots() {
            panic!("while waiting until {what}: {error}");
        }
        match observe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {PATIENCE:?} waiting until {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `Ok` once the service has `replicas` tasks, each desired and reported RUNNING.
async fn all_running(fleet: &Fleet, replicas: usize) -> Result<(), String> {
    let mut control = fleet.control().map_err(|error| error.to_string())?;
    let tasks = control
        .list_tasks(Request::new(ListTasksRequest {
            services: vec![SERVICE.to_owned()],
            nodes: Vec::new(),
        }))
        .await
        .map_err(|status| status.to_string())?
        .into_inner()
        .tasks;
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        let state = task
            .status
            .as_ref()
            .map_or(TaskState::New, |status| status.state());
        *states
            .entry(format!("{:?}->{:?}", state, task.desired_state()))
            .or_default() += 1;
    }
    let running = tasks
        .iter()
        .filter(|task| {
            task.desired_state() == TaskState::Running
                && task.status.as_ref().map(|status| status.state()) == Some(TaskState::Running)
        })
        .count();
    let containers = fleet.running_containers();
    if running == replicas && containers == replicas {
        Ok(())
    } else {
        Err(format!(
            "{running} of {replicas} tasks running, {containers} containers running; tasks by state: {states:?}"
        ))
    }
}

/// `Ok` once every agent's node is READY.
async fn every_agent_ready(fleet: &Fleet) -> Result<(), String> {
    let mut control = fleet.control().map_err(|error| error.to_string())?;
    let nodes = control
        .list_nodes(Request::new(ListNodesRequest {}))
        .await
        .map_err(|status| status.to_string())?
        .into_inner()
        .nodes;
    let ready = nodes
        .iter()
        .filter(|node| {
            node.status.as_ref().map(|status| status.state()) == Some(node_status::State::Ready)
        })
        .count();
    if ready >= AGENTS {
        Ok(())
    } else {
        Err(format!("{ready} of {AGENTS} agents ready"))
    }
}

/// Scales the service to `replicas` through the control API, trying again while the new
/// leader refuses writes (a quorum it has not heard from yet); what it refused, in order.
async fn scale(fleet: &Fleet, replicas: u64) -> Vec<String> {
    let mut refusals = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let attempt = async {
            let mut control = fleet.control().map_err(|error| error.to_string())?;
            let service = control
                .get_service(Request::new(GetServiceRequest {
                    service: SERVICE.to_owned(),
                }))
                .await
                .map_err(|status| format!("reading the service: {status}"))?
                .into_inner()
                .service
                .ok_or("the service is gone")?;
            let wanted = replicated_service(SERVICE, replicas);
            if service.spec.as_ref().and_then(|spec| spec.mode.as_ref()) == wanted.mode.as_ref() {
                // An earlier attempt whose outcome was unknown went through.
                return Ok(());
            }
            control
                .update_service(Request::new(UpdateServiceRequest {
                    service: service.id.clone(),
                    version: service
                        .meta
                        .and_then(|meta| meta.version)
                        .map_or(0, |version| version.index),
                    spec: Some(wanted),
                    ..Default::default()
                }))
                .await
                .map(drop)
                .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
        };
        match attempt.await {
            Ok(()) => return refusals,
            Err(refused) => {
                assert!(
                    Instant::now() < deadline,
                    "the scale to {replicas} was refused for {PATIENCE:?}: {refusals:#?}"
                );
                refusals.push(refused);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_converges_and_survives_a_leader_kill_and_an_agent_restart() {
    // RUST_LOG=worker=debug,manager=debug shows the agents' and managers' side.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let mut fleet = Fleet::start(FleetOptions {
        managers: MANAGERS,
        agents: AGENTS,
        heartbeat_period: Duration::from_secs(5),
        manager_program: env!("CARGO_BIN_EXE_bench-fleet").into(),
        agent_state_parent: None,
    })
    .await
    .expect("the fleet starts");
    eprintln!("{AGENTS} agents joined in {:?}", started.elapsed());
    poll(&fleet, "every agent is ready", || every_agent_ready(&fleet)).await;

    let created = Instant::now();
    fleet
        .control()
        .unwrap()
        .create_service(Request::new(CreateServiceRequest {
            spec: Some(replicated_service(SERVICE, 500)),
        }))
        .await
        .expect("the service is created");
    poll(&fleet, "500 tasks run", || all_running(&fleet, 500)).await;
    eprintln!("500 tasks running {:?} after the create", created.elapsed());

    // The leader goes: another manager leads, every agent opens a session with it, and a
    // write through the control API is accepted and converges.
    let sessions_before: Vec<u64> = fleet.agents().iter().map(|a| a.sessions_opened()).collect();
    let killed = Instant::now();
    let old_leader = fleet.kill_leader().await.expect("the leader stops");
    let new_leader = fleet.wait_for_leader(PATIENCE).await.expect("a new leader");
    assert_ne!(new_leader, old_leader);
    eprintln!(
        "manager {new_leader} leads {:?} after the kill",
        killed.elapsed()
    );
    poll(&fleet, "every agent is back in session", || {
        let behind: Vec<usize> = fleet
            .agents()
            .iter()
            .zip(&sessions_before)
            .enumerate()
            .filter(|(_, (agent, before))| agent.sessions_opened() <= **before)
            .map(|(index, _)| index)
            .collect();
        async move {
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("agents without a new session: {behind:?}"))
            }
        }
    })
    .await;
    eprintln!(
        "every agent reconnected {:?} after the kill",
        killed.elapsed()
    );
    let refusals = scale(&fleet, 550).await;
    eprintln!(
        "the scale to 550 was accepted {:?} after the kill, refused before: {refusals:?}",
        killed.elapsed()
    );
    poll(&fleet, "550 tasks run", || all_running(&fleet, 550)).await;
    eprintln!("550 tasks running {:?} after the kill", killed.elapsed());

    // An agent restarts: it adopts its containers and starts none again.
    let restarted = 0;
    let sessions = fleet.agent(restarted).sessions_opened();
    let runs_before = fleet.agent(restarted).engine().runs();
    assert!(!runs_before.is_empty(), "agent {restarted} runs tasks");
    fleet.kill_agent(restarted).await.unwrap();
    fleet.revive_agent(restarted).unwrap();
    poll(&fleet, "the restarted agent is back in session", || {
        let opened = fleet.agent(restarted).sessions_opened();
        async move {
            (opened > sessions)
                .then_some(())
                .ok_or_else(|| format!("{opened} sessions"))
        }
    })
    .await;
    poll(&fleet, "550 tasks run after the restart", || {
        all_running(&fleet, 550)
    })
    .await;
    assert_eq!(
        fleet.agent(restarted).engine().runs(),
        runs_before,
        "the restarted agent adopted its containers: it neither started nor stopped any"
    );
    let twice = slots::tasks_started_more_than_once(&fleet.runs());
    assert!(twice.is_empty(), "tasks started more than once: {twice:?}");
    fleet.check_slots().unwrap();
    fleet.shutdown().await;
    eprintln!("the whole test took {:?}", started.elapsed());
}
