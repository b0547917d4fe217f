//! A seeded, deterministic simulation of the orchestration cores against a fake store, a
//! fake scheduler and a fake worker that fails and completes tasks at random, on a fake
//! clock. Invariants are checked after every transaction; a failure prints its seed, and
//! `SHOAL_SIM_SEED=<seed> cargo test -p manager --test simulation` replays just that seed.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

use manager::orchestrator::{
    ClusterObjects, ClusterTime, Command, RestartSupervisor, SequentialTaskIds, ServiceConvergence,
    SlotKey, TaskHistoryLimit, is_history, is_runnable, observed_state, reap_tasks,
    reconcile_all_services, service_convergence,
};
use shoal_proto::api::{
    Annotations, ContainerSpec, GlobalService, Meta, Node, NodeSpec, NodeStatus, ReplicatedJob,
    ReplicatedService, RestartPolicy, Service, ServiceSpec, Task, TaskSpec, TaskState,
    UpdateConfig, Version, node_spec, node_status, restart_policy::RestartCondition, service_spec,
    task_spec, update_config, update_status::UpdateState,
};
use spec::time::proto_duration;

const SEEDS: u64 = 16;
const CHAOS_ROUNDS: u64 = 250;
const CALM_ROUNDS: u64 = 120;
const HISTORY_LIMIT: usize = 3;
const NODE_IDS: [&str; 4] = ["node-1", "node-2", "node-3", "node-4"];

fn service(
    service_id: &str,
    mode: service_spec::Mode,
    condition: RestartCondition,
    delay: Duration,
    max_attempts: u64,
) -> Service {
    let mut restart = RestartPolicy {
        delay: Some(proto_duration(delay)),
        max_attempts,
        ..RestartPolicy::default()
    };
    restart.set_condition(condition);
    Service {
        id: service_id.to_owned(),
        meta: Some(Meta::default()),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: service_id.to_owned(),
                ..Annotations::default()
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: "busybox".to_owned(),
                    ..ContainerSpec::default()
                })),
                restart: Some(restart),
                ..TaskSpec::default()
            }),
            mode: Some(mode),
            ..ServiceSpec::default()
        }),
        spec_version: Some(Version { index: 1 }),
        ..Service::default()
    }
}

fn node(node_id: &str) -> Node {
    let mut status = NodeStatus::default();
    status.set_state(node_status::State::Ready);
    Node {
        id: node_id.to_owned(),
        spec: Some(NodeSpec::default()),
        status: Some(status),
        ..Node::default()
    }
}

fn node_is_up(node: &Node) -> bool {
    node.status
        .as_ref()
        .is_some_and(|status| status.state() == node_status::State::Ready)
}

fn node_takes_new_tasks(node: &Node) -> bool {
    node_is_up(node)
        && node
            .spec
            .as_ref()
            .is_some_and(|spec| spec.availability() == node_spec::Availability::Active)
}

fn replicas_of(service: &Service) -> Option<u64> {
    match service.spec.as_ref()?.mode.as_ref()? {
        service_spec::Mode::Replicated(replicated) => Some(replicated.replicas),
        _ => None,
    }
}

/// The fake store plus the actors around it.
struct Simulation {
    seed: u64,
    rng: StdRng,
    now: ClusterTime,
    services: Vec<Service>,
    nodes: Vec<Node>,
    tasks: Vec<Task>,
    store_version: u64,
    supervisor: RestartSupervisor,
    task_ids: SequentialTaskIds,
    highest_observed_state: BTreeMap<String, i32>,
    highest_desired_state: BTreeMap<String, i32>,
    statistics: Statistics,
}

/// What happened during a run, to show the simulation exercised what it claims to.
#[derive(Debug, Default, Clone, Copy)]
struct Statistics {
    tasks_created: u64,
    tasks_deleted: u64,
    tasks_failed_or_rejected: u64,
    delayed_starts: u64,
    updates_completed: u64,
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        let mut rng = StdRng::seed_from_u64(seed);
        let web_delay = Duration::from_secs(rng.random_range(0..4));
        // Chaos fails tasks at random, so web's updates carry on through failures; how many
        // slots go at once varies with the seed.
        let mut web = service(
            "web",
            service_spec::Mode::Replicated(ReplicatedService { replicas: 3 }),
            RestartCondition::Any,
            web_delay,
            0,
        );
        let mut web_updates = UpdateConfig {
            parallelism: rng.random_range(0..3),
            monitor: Some(proto_duration(Duration::from_secs(1))),
            ..UpdateConfig::default()
        };
        web_updates.set_failure_action(update_config::FailureAction::Continue);
        if let Some(spec) = web.spec.as_mut() {
            spec.update = Some(web_updates);
        }
        let services = vec![
            web,
            service(
                "agent",
                service_spec::Mode::Global(GlobalService {}),
                RestartCondition::Any,
                Duration::from_secs(1),
                0,
            ),
            service(
                "batch",
                service_spec::Mode::ReplicatedJob(ReplicatedJob {
                    max_concurrent: 2,
                    total_completions: 6,
                }),
                RestartCondition::OnFailure,
                Duration::ZERO,
                0,
            ),
            service(
                "scratch",
                service_spec::Mode::Replicated(ReplicatedService { replicas: 2 }),
                RestartCondition::Any,
                Duration::ZERO,
                0,
            ),
            service(
                "fragile",
                service_spec::Mode::Replicated(ReplicatedService { replicas: 2 }),
                RestartCondition::OnFailure,
                Duration::from_secs(2),
                2,
            ),
        ];
        Simulation {
            seed,
            rng,
            now: ClusterTime::from_duration_since_unix_epoch(Duration::from_secs(1_000)),
            services,
            nodes: NODE_IDS.iter().map(|node_id| node(node_id)).collect(),
            tasks: Vec::new(),
            store_version: 0,
            supervisor: RestartSupervisor::new(),
            task_ids: SequentialTaskIds::new("task-"),
            highest_observed_state: BTreeMap::new(),
            highest_desired_state: BTreeMap::new(),
            statistics: Statistics::default(),
        }
    }

    fn next_version(&mut self) -> Option<Version> {
        self.store_version += 1;
        Some(Version {
            index: self.store_version,
        })
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "simulation seed {} failed at {}: {what}\nreplay with SHOAL_SIM_SEED={} cargo test -p manager --test simulation",
            self.seed, self.now, self.seed
        )
    }

    /// Commits one core's commands as one transaction, checking the versions they read.
    fn commit(&mut self, commands: Vec<Command>, core: &str) {
        for command in commands {
            match command {
                Command::CreateTask(task) => {
                    let mut task = *task;
                    if self.tasks.iter().any(|existing| existing.id == task.id) {
                        self.fail(format!("{core} created duplicate task id {}", task.id));
                    }
                    let version = self.next_version();
                    task.meta.get_or_insert_default().version = version;
                    self.statistics.tasks_created += 1;
                    self.tasks.push(task);
                }
                Command::SetDesiredState {
                    task_id,
                    read_version,
                    desired_state,
                } => {
                    let version = self.next_version();
                    let Some(task) = self.tasks.iter_mut().find(|task| task.id == task_id) else {
                        self.fail(format!("{core} changed missing task {task_id}"));
                    };
                    let current = task
                        .meta
                        .as_ref()
                        .and_then(|meta| meta.version)
                        .unwrap_or_default();
                    if current.index != read_version {
                        let message = format!(
                            "{core} read {task_id} at version {read_version} but it is at {}",
                            current.index
                        );
                        self.fail(message);
                    }
                    if task.desired_state() == TaskState::Ready {
                        self.statistics.delayed_starts += 1;
                    }
                    task.set_desired_state(desired_state);
                    task.meta.get_or_insert_default().version = version;
                }
                Command::DeleteTask {
                    task_id,
                    read_version,
                } => {
                    let Some(position) = self.tasks.iter().position(|task| task.id == task_id)
                    else {
                        self.fail(format!("{core} deleted missing task {task_id}"));
                    };
                    let current = self.tasks[position]
                        .meta
                        .as_ref()
                        .and_then(|meta| meta.version)
                        .unwrap_or_default();
                    if current.index != read_version {
                        self.fail(format!("{core} deleted {task_id} from a stale read"));
                    }
                    if !is_history(&self.tasks[position]) {
                        self.fail(format!("{core} deleted {task_id}, which is not history"));
                    }
                    self.statistics.tasks_deleted += 1;
                    self.tasks.remove(position);
                }
                Command::DeleteService { service_id, .. } => {
                    self.services.retain(|service| service.id != service_id);
                }
                Command::UpdateService(mut service) => {
                    let version = self.next_version();
                    let Some(stored) = self.services.iter_mut().find(|s| s.id == service.id) else {
                        self.fail(format!("{core} updated missing service {}", service.id));
                    };
                    if stored.meta != service.meta {
                        self.fail(format!("{core} updated {} from a stale read", service.id));
                    }
                    service.meta.get_or_insert_default().version = version;
                    if service
                        .update_status
                        .as_ref()
                        .is_some_and(|status| status.state() == UpdateState::Completed)
                    {
                        self.statistics.updates_completed += 1;
                    }
                    *stored = *service;
                }
                Command::WakeUpAt { at } => {
                    if at < self.now {
                        self.fail(format!("{core} asked to wake up in the past, at {at}"));
                    }
                }
            }
        }
        self.check_invariants(core);
    }

    fn check_invariants(&mut self, after: &str) {
        let mut runnable_per_slot: BTreeMap<SlotKey, Vec<&str>> = BTreeMap::new();
        for task in self.tasks.iter().filter(|task| is_runnable(task)) {
            runnable_per_slot
                .entry(SlotKey::of_task(task))
                .or_default()
                .push(&task.id);
        }
        if let Some((slot, tasks)) = runnable_per_slot.iter().find(|(_, tasks)| tasks.len() > 1) {
            self.fail(format!(
                "after {after}: slot {slot} has runnable tasks {tasks:?}"
            ));
        }
        for task in &self.tasks {
            let observed = observed_state(task) as i32;
            let highest = self
                .highest_observed_state
                .entry(task.id.clone())
                .or_insert(observed);
            if observed < *highest {
                let message = format!(
                    "after {after}: observed state of {} moved backwards",
                    task.id
                );
                self.fail(message);
            }
            *highest = observed;
            let desired = task.desired_state;
            let highest = self
                .highest_desired_state
                .entry(task.id.clone())
                .or_insert(desired);
            if desired < *highest {
                let message = format!(
                    "after {after}: desired state of {} moved backwards",
                    task.id
                );
                self.fail(message);
            }
            *highest = desired;
        }
    }

    fn check_history_limit(&self) {
        let mut history_per_slot: BTreeMap<SlotKey, usize> = BTreeMap::new();
        for task in self.tasks.iter().filter(|task| is_history(task)) {
            *history_per_slot.entry(SlotKey::of_task(task)).or_default() += 1;
        }
        if let Some((slot, count)) = history_per_slot
            .iter()
            .find(|(_, count)| **count > HISTORY_LIMIT)
        {
            self.fail(format!("slot {slot} keeps {count} old tasks after reaping"));
        }
    }

    /// One round: the operator, the three cores, the scheduler and the worker each act once.
    fn round(&mut self, chaos: bool) {
        self.now = self
            .now
            .saturating_add(Duration::from_millis(500 + self.rng.random_range(0..1_000)));
        if chaos {
            self.operator_acts();
        }

        let objects = ClusterObjects::new(&self.services, &self.nodes, &self.tasks);

        let snapshot = objects.snapshot();
        let given_up = self.supervisor.given_up_slots().clone();
        let commands = reconcile_all_services(&snapshot, &given_up, self.now, &mut self.task_ids);
        self.commit(commands, "orchestrators");

        let objects = ClusterObjects::new(&self.services, &self.nodes, &self.tasks);

        let snapshot = objects.snapshot();
        let commands = self
            .supervisor
            .step(&snapshot, self.now, &mut self.task_ids);
        self.commit(commands, "restart supervisor");

        let objects = ClusterObjects::new(&self.services, &self.nodes, &self.tasks);

        let snapshot = objects.snapshot();
        let commands = reap_tasks(&snapshot, TaskHistoryLimit::KeepAtMost(HISTORY_LIMIT));
        self.commit(commands, "reaper");
        self.check_history_limit();

        self.scheduler_and_workers_act(chaos);
        self.check_invariants("workers");
    }

    /// Scales `web`, deletes `scratch` at some point, drains, pauses and downs nodes, and
    /// brings them back.
    fn operator_acts(&mut self) {
        let delete_scratch_now = self.rng.random_ratio(1, 100);
        if let Some(scratch) = self
            .services
            .iter_mut()
            .find(|service| service.id == "scratch")
        {
            scratch.pending_delete |= delete_scratch_now;
        }
        if self.rng.random_ratio(4, 100) {
            let replicas = 1 + self.rng.random_range(0..5);
            let version = self.next_version();
            if let Some(web) = self.services.iter_mut().find(|service| service.id == "web") {
                if let Some(spec) = web.spec.as_mut() {
                    spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
                        replicas,
                    }));
                }
                web.spec_version = version;
                // As the control API does: a new spec starts a new update.
                web.update_status = None;
            }
        }
        if self.rng.random_ratio(5, 100) {
            let node_index =
                usize::try_from(self.rng.random_range(0..NODE_IDS.len() as u64)).unwrap_or(0);
            let change = self.rng.random_range(0..4);
            let node = &mut self.nodes[node_index];
            match change {
                0 => node
                    .spec
                    .get_or_insert_default()
                    .set_availability(node_spec::Availability::Drain),
                1 => node
                    .spec
                    .get_or_insert_default()
                    .set_availability(node_spec::Availability::Pause),
                2 => node
                    .status
                    .get_or_insert_default()
                    .set_state(node_status::State::Down),
                _ => *node = self::node(&node.id),
            }
        }
    }

    /// Assigns unassigned tasks to a node that takes them, then lets every live worker move
    /// its tasks forward: start, run, fail or complete, or stop when asked.
    fn scheduler_and_workers_act(&mut self, chaos: bool) {
        let schedulable: Vec<String> = self
            .nodes
            .iter()
            .filter(|node| node_takes_new_tasks(node))
            .map(|node| node.id.clone())
            .collect();
        let up_nodes: Vec<String> = self
            .nodes
            .iter()
            .filter(|node| node_is_up(node))
            .map(|node| node.id.clone())
            .collect();
        let job_services: Vec<String> = self
            .services
            .iter()
            .filter(|service| service.id == "batch")
            .map(|service| service.id.clone())
            .collect();
        for index in 0..self.tasks.len() {
            let desired = self.tasks[index].desired_state();
            let observed = observed_state(&self.tasks[index]);
            let wants_to_run = matches!(desired, TaskState::Running | TaskState::Complete);
            let next = if self.tasks[index].node_id.is_empty() {
                if !wants_to_run || schedulable.is_empty() {
                    continue;
                }
                let choice = usize::try_from(self.rng.random_range(0..schedulable.len() as u64))
                    .unwrap_or(0);
                self.tasks[index].node_id = schedulable[choice].clone();
                TaskState::Assigned
            } else {
                if !up_nodes.contains(&self.tasks[index].node_id)
                    || observed as i32 > TaskState::Running as i32
                {
                    continue;
                }
                let is_job_task = job_services.contains(&self.tasks[index].service_id);
                if desired as i32 >= TaskState::Shutdown as i32 {
                    TaskState::Shutdown
                } else if !wants_to_run {
                    continue;
                } else if observed != TaskState::Running {
                    if chaos && self.rng.random_ratio(3, 100) {
                        TaskState::Rejected
                    } else {
                        TaskState::Running
                    }
                } else if is_job_task && self.rng.random_ratio(if chaos { 20 } else { 40 }, 100) {
                    TaskState::Complete
                } else if chaos && self.rng.random_ratio(6, 100) {
                    TaskState::Failed
                } else if chaos && self.rng.random_ratio(2, 100) {
                    TaskState::Complete
                } else {
                    continue;
                }
            };
            if matches!(next, TaskState::Failed | TaskState::Rejected) {
                self.statistics.tasks_failed_or_rejected += 1;
            }
            let version = self.next_version();
            let task = &mut self.tasks[index];
            task.status.get_or_insert_default().set_state(next);
            task.meta.get_or_insert_default().version = version;
        }
    }

    /// Checks where the calm phase must have led.
    fn check_converged(&self) {
        let objects = ClusterObjects::new(&self.services, &self.nodes, &self.tasks);
        let snapshot = objects.snapshot();
        let given_up = self.supervisor.given_up_slots();
        for service_id in ["web", "agent", "batch"] {
            let verdict = service_convergence(&snapshot, service_id, given_up);
            if verdict != Some(ServiceConvergence::Converged) {
                self.fail(format!("{service_id} did not converge: {verdict:?}"));
            }
        }
        let verdict = service_convergence(&snapshot, "fragile", given_up);
        if verdict == Some(ServiceConvergence::Converging) || verdict.is_none() {
            self.fail(format!(
                "fragile neither converged nor gave up: {verdict:?}"
            ));
        }

        let web = self.services.iter().find(|service| service.id == "web");
        let replicas = web.and_then(replicas_of).unwrap_or(0);
        let running_web = self
            .tasks
            .iter()
            .filter(|task| task.service_id == "web" && is_runnable(task))
            .filter(|task| observed_state(task) == TaskState::Running)
            .count();
        if running_web as u64 != replicas {
            self.fail(format!("web runs {running_web} tasks, wants {replicas}"));
        }
        let running_agents = self
            .tasks
            .iter()
            .filter(|task| task.service_id == "agent" && is_runnable(task))
            .filter(|task| observed_state(task) == TaskState::Running)
            .count();
        if running_agents != NODE_IDS.len() {
            self.fail(format!("agent runs on {running_agents} nodes"));
        }
        let completed_batch = self
            .tasks
            .iter()
            .filter(|task| {
                task.service_id == "batch" && observed_state(task) == TaskState::Complete
            })
            .count();
        if completed_batch != 6 {
            self.fail(format!("batch completed {completed_batch} of 6"));
        }
        let scratch_left = self.services.iter().any(|service| service.id == "scratch")
            || self.tasks.iter().any(|task| task.service_id == "scratch");
        if scratch_left {
            self.fail("the deleted service scratch or some of its tasks remain".to_owned());
        }
    }
}

fn run_seed(seed: u64) -> Statistics {
    let mut simulation = Simulation::new(seed);
    for _ in 0..CHAOS_ROUNDS {
        simulation.round(true);
    }
    simulation.nodes = NODE_IDS.iter().map(|node_id| node(node_id)).collect();
    if let Some(scratch) = simulation
        .services
        .iter_mut()
        .find(|service| service.id == "scratch")
    {
        scratch.pending_delete = true;
    }
    for _ in 0..CALM_ROUNDS {
        simulation.round(false);
    }
    simulation.check_converged();
    simulation.statistics
}

#[test]
fn orchestrators_supervisor_and_reaper_keep_invariants_and_converge() {
    if let Some(seed) = std::env::var("SHOAL_SIM_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
    {
        println!("seed {seed}: {:?}", run_seed(seed));
        return;
    }
    let mut totals = Statistics::default();
    for seed in 0..SEEDS {
        let statistics = run_seed(seed);
        totals.tasks_created += statistics.tasks_created;
        totals.tasks_deleted += statistics.tasks_deleted;
        totals.tasks_failed_or_rejected += statistics.tasks_failed_or_rejected;
        totals.delayed_starts += statistics.delayed_starts;
        totals.updates_completed += statistics.updates_completed;
    }
    println!("{SEEDS} seeds: {totals:?}");
    // The run must have exercised failures, restarts after a delay and reaping.
    assert!(totals.tasks_failed_or_rejected > SEEDS * 10, "{totals:?}");
    assert!(totals.delayed_starts > SEEDS * 5, "{totals:?}");
    assert!(totals.updates_completed > SEEDS, "{totals:?}");
    assert!(totals.tasks_deleted > SEEDS * 10, "{totals:?}");
}
