//! Issue 17's figures on a simulated fleet ([`daemon::fleet`]): 3 managers (by default, each a
//! process of its own: this program again, with `fleet-manager`) and
//! N agents in this process, one replicated service of N × tasks-per-node tasks. Prints the
//! time from `service create` to every task RUNNING, `node ls` (ListNodes), `service ls`
//! (ListServices) and `service ps` (ListTasks of the service) latency p50 and p99, from the
//! leader's kill to a new leader, to every agent back in session and to the first write
//! accepted, and each manager process's memory and CPU time, apart from the agents' process.
//!
//! It also times one task's status change, `--status-changes` times one after another: a
//! container crashes, its agent reports the task failed, the managers start a replacement and
//! its agent reports it running; from the crash to the replacement running, and the leader's
//! CPU time per change above what it spends while nothing changes.
//!
//! `bench-fleet [--agents N] [--heartbeat-secs S] [--tasks-per-node T] [--managers M]
//! [--node-ls-samples K] [--status-changes C] [--manager-program PATH] [--agent-state-dir DIR]`;
//! build it with `--release` for figures worth quoting. `--manager-program` runs each manager
//! through PATH (given this program's `fleet-manager` arguments), e.g. a script that profiles
//! it. The agents keep their assignment stores under DIR, `/dev/shm` by default (the managers'
//! data stays under the system's temporary directory, on disk). The managers and the agents
//! run on the daemon's runtime.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use daemon::fleet::{
    Fleet, FleetOptions, MANAGER_SUBCOMMAND, ProcessUsage, replicated_service, slots,
};
use shoal_proto::api::{
    CreateServiceRequest, GetServiceRequest, ListNodesRequest, ListServicesRequest,
    ListTasksRequest, TaskState, UpdateServiceRequest, node_status,
};
use tonic::Request;

const SERVICE: &str = "bench-fleet";
const PATIENCE: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(100);
/// Where the agents' assignment stores go unless `--agent-state-dir` says otherwise.
const TMPFS: &str = "/dev/shm";

struct Settings {
    agents: usize,
    heartbeat: Duration,
    tasks_per_node: usize,
    managers: usize,
    node_ls_samples: usize,
    /// How many tasks crash, one after another, to time one task's status change.
    status_changes: usize,
    /// What each manager process runs instead of this program, e.g. a script that runs it
    /// under a profiler.
    manager_program: Option<std::path::PathBuf>,
    /// Where the agents' assignment stores go (see `FleetOptions::agent_state_parent`).
    agent_state_parent: Option<std::path::PathBuf>,
}

fn parse_args(args: Vec<String>) -> Result<Settings, String> {
    let mut settings = Settings {
        agents: 100,
        heartbeat: Duration::from_secs(5),
        tasks_per_node: 10,
        managers: 3,
        node_ls_samples: 50,
        status_changes: 30,
        manager_program: None,
        agent_state_parent: Some(std::path::PathBuf::from(TMPFS)).filter(|tmpfs| tmpfs.is_dir()),
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|error| format!("{flag} {value}: {error}"))
        };
        match flag.as_str() {
            "--agents" => settings.agents = number(&value)? as usize,
            "--heartbeat-secs" => settings.heartbeat = Duration::from_secs(number(&value)?),
            "--tasks-per-node" => settings.tasks_per_node = number(&value)? as usize,
            "--managers" => settings.managers = number(&value)? as usize,
            "--node-ls-samples" => settings.node_ls_samples = number(&value)?.max(1) as usize,
            "--status-changes" => settings.status_changes = number(&value)?.max(1) as usize,
            "--manager-program" => settings.manager_program = Some(value.into()),
            "--agent-state-dir" => settings.agent_state_parent = Some(value.into()),
            _ => {
                return Err(format!(
                    "unknown flag {flag}: use --agents, --heartbeat-secs, --tasks-per-node, --managers, --node-ls-samples, --status-changes, --manager-program or --agent-state-dir"
                ));
            }
        }
    }
    Ok(settings)
}

/// Polls `check` every 100 ms until it holds; the time it took. Says every 10 s that it is
/// still waiting.
async fn time_until<F: Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut next_note = Duration::from_secs(10);
    while !check().await {
        if started.elapsed() > PATIENCE {
            return Err(format!("timed out after {PATIENCE:?} waiting until {what}"));
        }
        if started.elapsed() > next_note {
            eprintln!("still waiting until {what} after {next_note:?}");
            next_note += Duration::from_secs(10);
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(started.elapsed())
}

/// How many nodes the leader's `node ls` shows ready, or why it could not tell.
async fn ready_nodes(fleet: &Fleet) -> Result<usize, String> {
    let mut control = fleet.control().map_err(|error| error.to_string())?;
    let response = control
        .list_nodes(Request::new(ListNodesRequest {}))
        .await
        .map_err(|status| format!("node ls: {}", status.message()))?;
    Ok(response
        .into_inner()
        .nodes
        .iter()
        .filter(|node| {
            node.status.as_ref().map(|status| status.state()) == Some(node_status::State::Ready)
        })
        .count())
}

async fn running_tasks(fleet: &Fleet) -> usize {
    let Ok(mut control) = fleet.control() else {
        return 0;
    };
    control
        .list_tasks(Request::new(ListTasksRequest {
            services: vec![SERVICE.to_owned()],
            nodes: Vec::new(),
        }))
        .await
        .map(|response| {
            response
                .into_inner()
                .tasks
                .iter()
                .filter(|task| {
                    task.desired_state() == TaskState::Running
                        && task.status.as_ref().map(|status| status.state())
                            == Some(TaskState::Running)
                })
                .count()
        })
        .unwrap_or(0)
}

/// One attempt at creating the service; whether it exists now (an earlier attempt whose
/// outcome was unknown may have made it).
async fn create(fleet: &Fleet, replicas: u64) -> bool {
    let Ok(mut control) = fleet.control() else {
        return false;
    };
    let created = control
        .create_service(Request::new(CreateServiceRequest {
            spec: Some(replicated_service(SERVICE, replicas)),
        }))
        .await;
    match created {
        Ok(_) => true,
        Err(status) => {
            eprintln!("service create refused: {}", status.message());
            control
                .get_service(Request::new(GetServiceRequest {
                    service: SERVICE.to_owned(),
                }))
                .await
                .is_ok()
        }
    }
}

/// One attempt at scaling the service to `replicas`; whether it was accepted (or already done).
/// Says why an attempt was refused when the reason differs from the last one's.
async fn scale(fleet: &Fleet, replicas: u64, last_refusal: &RefCell<String>) -> bool {
    let note = |refusal: String| {
        if *last_refusal.borrow() != refusal {
            eprintln!("write refused: {refusal}");
            *last_refusal.borrow_mut() = refusal;
        }
        false
    };
    let mut control = match fleet.control() {
        Ok(control) => control,
        Err(error) => return note(error.to_string()),
    };
    let response = match control
        .get_service(Request::new(GetServiceRequest {
            service: SERVICE.to_owned(),
        }))
        .await
    {
        Ok(response) => response,
        Err(status) => return note(format!("reading the service: {}", status.message())),
    };
    let Some(service) = response.into_inner().service else {
        return false;
    };
    let wanted = replicated_service(SERVICE, replicas);
    if service.spec.as_ref().and_then(|spec| spec.mode.as_ref()) == wanted.mode.as_ref() {
        return true;
    }
    let updated = control
        .update_service(Request::new(UpdateServiceRequest {
            service: service.id.clone(),
            version: service
                .meta
                .and_then(|meta| meta.version)
                .map_or(0, |version| version.index),
            spec: Some(wanted),
            ..Default::default()
        }))
        .await;
    match updated {
        Ok(_) => true,
        Err(status) => note(format!("updating the service: {}", status.message())),
    }
}

/// `samples` calls of `call` one after another: "N calls: p50 …, p99 …".
async fn latencies<F, Fut>(samples: usize, mut call: F) -> Result<String, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        call().await?;
        took.push(started.elapsed());
    }
    took.sort();
    Ok(format!(
        "{} calls: p50 {:.1} ms, p99 {:.1} ms",
        took.len(),
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3
    ))
}

/// Each manager process's memory and CPU time so far (a killed one's at its kill).
fn report_managers(fleet: &Fleet, when: &str) {
    let leader = fleet.leader();
    for index in 0..fleet.manager_count() {
        let role = if !fleet.manager_runs(index) {
            "killed"
        } else if leader == Some(index) {
            "leader"
        } else {
            "follower"
        };
        match fleet.manager_usage(index) {
            Some(usage) => println!(
                "manager {index} ({role}) {when}: RSS {:.0} MiB (peak {:.0} MiB), CPU {:.1} s",
                usage.rss_mib, usage.peak_rss_mib, usage.cpu_seconds
            ),
            None => println!("manager {index} ({role}) {when}: its usage is unknown"),
        }
    }
}

/// How long the leader's CPU time is read while nothing changes, for the rate that
/// [`task_crashes`] takes off.
const IDLE_SAMPLE: Duration = Duration::from_secs(5);

/// `count` task status changes, one at a time: a container on a node spread over the fleet
/// crashes, and the fleet waits until it runs `tasks` containers again (its replacement runs).
/// "N changes: p50 …, p99 …; leader CPU …".
async fn task_crashes(fleet: &Fleet, count: usize, tasks: usize) -> Result<String, String> {
    let leader = fleet.leader().ok_or("no manager leads")?;
    let leader_cpu = || {
        fleet
            .manager_usage(leader)
            .map(|usage| usage.cpu_seconds)
            .ok_or_else(|| format!("manager {leader}'s CPU time is unknown"))
    };
    let idle_from = (Instant::now(), leader_cpu()?);
    tokio::time::sleep(IDLE_SAMPLE).await;
    let idle_rate = (leader_cpu()? - idle_from.1) / idle_from.0.elapsed().as_secs_f64();
    let agents = fleet.agents();
    let (started, cpu_before) = (Instant::now(), leader_cpu()?);
    let mut took = Vec::with_capacity(count);
    for change in 0..count {
        let crashed = Instant::now();
        // From a node spread over the fleet, or the next one that runs a container: a node
        // marked down in the create may have had its tasks moved away.
        let node_id = agents
            .iter()
            .cycle()
            .skip(change * agents.len() / count)
            .take(agents.len())
            .find(|agent| agent.engine().crash_one())
            .map(|agent| agent.node_id())
            .ok_or("no node runs a container to crash")?;
        while fleet.running_containers() < tasks {
            if crashed.elapsed() > PATIENCE {
                return Err(format!(
                    "a crashed task on node {node_id} was not replaced within {PATIENCE:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(crashed.elapsed());
    }
    let busy = started.elapsed().as_secs_f64();
    let per_change = (leader_cpu()? - cpu_before - idle_rate * busy) / count as f64;
    took.sort();
    Ok(format!(
        "{count} changes: p50 {:.1} ms, p99 {:.1} ms; leader CPU {:.1} ms per change above its idle {:.0} ms/s",
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3,
        per_change * 1e3,
        idle_rate * 1e3
    ))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

async fn bench(settings: Settings) -> Result<(), String> {
    let tasks = settings.agents * settings.tasks_per_node;
    println!(
        "fleet: {} managers, {} agents, heartbeat {:?}, {} tasks per node ({tasks} tasks)",
        settings.managers, settings.agents, settings.heartbeat, settings.tasks_per_node
    );
    match &settings.agent_state_parent {
        Some(dir) => println!("the agents' assignment stores under {}", dir.display()),
        None => println!("the agents' assignment stores beside the managers' data"),
    }
    let started = Instant::now();
    let mut fleet = Fleet::start(FleetOptions {
        managers: settings.managers,
        agents: settings.agents,
        heartbeat_period: settings.heartbeat,
        manager_program: match settings.manager_program.clone() {
            Some(program) => program,
            None => std::env::current_exe()
                .map_err(|error| format!("finding this program to run the managers: {error}"))?,
        },
        agent_state_parent: settings.agent_state_parent.clone(),
    })
    .await
    .map_err(|error| format!("starting the fleet: {error}"))?;
    println!("joined: {:.3} s", started.elapsed().as_secs_f64());
    let next_note = std::cell::Cell::new(10);
    let ready = time_until("every agent is ready", || async {
        let ready = ready_nodes(&fleet).await;
        let sessions = fleet
            .agents()
            .iter()
            .filter(|agent| agent.sessions_opened() > 0)
            .count();
        if started.elapsed().as_secs() >= next_note.get() {
            next_note.set(next_note.get() + 10);
            match &ready {
                Ok(ready) => eprintln!("{ready} nodes ready, {sessions} agents with a session"),
                Err(error) => eprintln!("{error}; {sessions} agents with a session"),
            }
        }
        ready.is_ok_and(|ready| ready >= settings.agents)
    })
    .await?;
    println!("every agent ready: {:.3} s later", ready.as_secs_f64());

    let created = Instant::now();
    time_until("the service create is accepted", || {
        create(&fleet, tasks as u64)
    })
    .await?;
    time_until("every container runs", || async {
        fleet.running_containers() >= tasks
    })
    .await?;
    time_until("every task is RUNNING", || async {
        running_tasks(&fleet).await >= tasks
    })
    .await?;
    println!(
        "service create to every task RUNNING: {:.3} s",
        created.elapsed().as_secs_f64()
    );
    report_managers(&fleet, "once every task runs");

    let control = fleet.control().map_err(|error| error.to_string())?;
    let node_ls = latencies(settings.node_ls_samples, || {
        let mut control = control.clone();
        async move {
            control
                .list_nodes(Request::new(ListNodesRequest {}))
                .await
                .map(|_| ())
                .map_err(|status| format!("node ls: {status}"))
        }
    })
    .await?;
    println!("node ls over {node_ls}");
    let service_ls = latencies(settings.node_ls_samples, || {
        let mut control = control.clone();
        async move {
            control
                .list_services(Request::new(ListServicesRequest {}))
                .await
                .map(|_| ())
                .map_err(|status| format!("service ls: {status}"))
        }
    })
    .await?;
    println!("service ls over {service_ls}");
    let service_ps = latencies(settings.node_ls_samples, || {
        let mut control = control.clone();
        async move {
            control
                .list_tasks(Request::new(ListTasksRequest {
                    services: vec![SERVICE.to_owned()],
                    ..Default::default()
                }))
                .await
                .map(|_| ())
                .map_err(|status| format!("service ps: {status}"))
        }
    })
    .await?;
    println!("service ps ({tasks} tasks) over {service_ps}");

    report_managers(&fleet, "after the list calls");
    let crashes = task_crashes(&fleet, settings.status_changes, tasks).await?;
    println!("a task's crash to its replacement running, one at a time, over {crashes}");
    println!(
        "pairs of runs of one slot that overlapped, before the leader's kill: {}",
        slots::overlapping_runs(&fleet.runs()).len()
    );

    let sessions: Vec<u64> = fleet.agents().iter().map(|a| a.sessions_opened()).collect();
    let connects_before: u64 = fleet.agents().iter().map(|a| a.connects()).sum();
    let killed = Instant::now();
    fleet
        .kill_leader()
        .await
        .map_err(|error| format!("killing the leader: {error}"))?;
    fleet
        .wait_for_leader(PATIENCE)
        .await
        .map_err(|error| error.to_string())?;
    println!(
        "leader kill to a new leader: {:.3} s",
        killed.elapsed().as_secs_f64()
    );
    // Both are timed from the kill, side by side: a write need not wait for the agents.
    let last_refusal = RefCell::new(String::new());
    let waiting_from = killed.elapsed();
    let (reconnected, written) = tokio::join!(
        time_until("every agent is back in session", || {
            let back = fleet
                .agents()
                .iter()
                .zip(&sessions)
                .all(|(agent, before)| agent.sessions_opened() > *before);
            async move { back }
        }),
        time_until("a write is accepted", || {
            scale(&fleet, tasks as u64 + 1, &last_refusal)
        }),
    );
    let since_kill = |waited: Duration| (waiting_from + waited).as_secs_f64();
    let (reconnected, written) = (reconnected?, written?);
    println!(
        "leader kill to every agent reconnected: {:.3} s",
        since_kill(reconnected)
    );
    println!(
        "leader kill to the first write accepted: {:.3} s",
        since_kill(written)
    );
    let mut back: Vec<Duration> = fleet
        .agents()
        .iter()
        .filter_map(|agent| Some(agent.session_opened_at()?.saturating_duration_since(killed)))
        .collect();
    back.sort();
    let connects_after: u64 = fleet.agents().iter().map(|a| a.connects()).sum();
    println!(
        "agents back in session after the kill: p10 {:.1} s, p50 {:.1} s, p90 {:.1} s, last {:.1} s; {} connections tried",
        percentile(&back, 0.1).as_secs_f64(),
        percentile(&back, 0.5).as_secs_f64(),
        percentile(&back, 0.9).as_secs_f64(),
        percentile(&back, 1.0).as_secs_f64(),
        connects_after - connects_before
    );
    report_managers(&fleet, "at the end (a killed one at its kill)");
    if let Some(usage) = ProcessUsage::read(None) {
        println!(
            "the {} agents' process: peak RSS {:.0} MiB, CPU {:.1} s",
            settings.agents, usage.peak_rss_mib, usage.cpu_seconds
        );
    }
    fleet
        .check_slots()
        .map_err(|error| format!("Swarm's slot rule: {error}"))?;
    fleet.shutdown().await;
    Ok(())
}

fn main() {
    // Errors only unless RUST_LOG asks, so the figures stay readable. The killed leader's Raft
    // refuses each write still queued for it, one openraft error line apiece (thousands at
    // 5,000 agents): those are expected, and left out.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("error,openraft::raft::raft_inner=off")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The fleet runs this program again for each of its managers.
    if args.first().map(String::as_str) == Some(MANAGER_SUBCOMMAND) {
        std::process::exit(daemon::fleet::serve_manager(&args[1..]));
    }
    let settings = match parse_args(args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("bench-fleet: {error}");
            std::process::exit(2);
        }
    };
    let outcome = match daemon::daemon_runtime() {
        Ok(runtime) => runtime.block_on(bench(settings)),
        Err(error) => Err(format!("starting the runtime: {error}")),
    };
    if let Err(error) = outcome {
        eprintln!("bench-fleet: {error}");
        std::process::exit(1);
    }
}
