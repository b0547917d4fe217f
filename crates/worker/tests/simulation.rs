//! A seeded simulation: random assignment changes, engine events, command failures, lost
//! results and daemon restarts, with invariants checked after every step. Half the tasks are on
//! an overlay network, so the sets of network endpoints the reconciler hands the node's
//! networking are checked too. A failing run prints its seed; rerun one seed with
//! `WORKER_SIMULATION_SEED=<seed> cargo test -p worker --test simulation`.

mod support;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

use engine::HealthStatus;
use shoal_proto::api;
use shoal_proto::api::TaskState;
use support::*;
use worker::networking::LocalEndpoint;
use worker::{
    AssignmentSet, Command, CommandOutcome, ContainerRunState, EngineObservation, Event,
    ExistingContainer, LABEL_TASK_ID, PersistedAssignments, Reconciler, TaskPayloads,
    task_has_healthcheck,
};

#[derive(Clone, Debug)]
struct FakeContainer {
    task_id: String,
    run_state: ContainerRunState,
    health: Option<HealthStatus>,
}

struct Simulation {
    seed: u64,
    random: StdRng,
    reconciler: Reconciler,
    /// What the engine really has.
    containers: BTreeMap<String, FakeContainer>,
    next_container_number: u64,
    /// Commands emitted but not yet carried out; lost on a restart.
    pending: Vec<Command>,
    /// The dispatcher's view: the current assignment set.
    assignment_version: u64,
    assigned: BTreeMap<String, api::Task>,
    next_task_number: u64,
    /// The manager's view: the highest state each task was reported in.
    highest_reported_state: BTreeMap<String, i32>,
    /// The reconciler's observed state per task in this life.
    observed_this_life: BTreeMap<String, i32>,
    creates_this_life: BTreeSet<String>,
    disk: Option<PersistedAssignments>,
    /// Whether this life's reconciler has been given the engine's containers.
    listed_this_life: bool,
    /// The last set of network endpoints emitted in this life.
    endpoints_sent_this_life: Option<BTreeMap<String, LocalEndpoint>>,
    /// What the node's networking was last told, across lives (the shell hands each set over
    /// in step order, as it comes).
    networking_view: Option<BTreeMap<String, LocalEndpoint>>,
    steps_taken: usize,
    coverage: Coverage,
}

/// Counts of what the runs exercised, so that a simulation that quietly stopped doing anything
/// interesting fails instead of passing.
#[derive(Debug, Default)]
struct Coverage {
    creates: usize,
    restarts: usize,
    restarts_with_running_containers: usize,
    reported_by_state: BTreeMap<String, usize>,
    endpoint_sets: usize,
    serving_endpoints: usize,
}

impl Coverage {
    fn add(&mut self, other: &Coverage) {
        self.creates += other.creates;
        self.restarts += other.restarts;
        self.restarts_with_running_containers += other.restarts_with_running_containers;
        self.endpoint_sets += other.endpoint_sets;
        self.serving_endpoints += other.serving_endpoints;
        for (state, count) in &other.reported_by_state {
            *self.reported_by_state.entry(state.clone()).or_default() += count;
        }
    }
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        let mut simulation = Simulation {
            seed,
            random: StdRng::seed_from_u64(seed),
            reconciler: Reconciler::new(),
            containers: BTreeMap::new(),
            next_container_number: 0,
            pending: Vec::new(),
            assignment_version: 0,
            assigned: BTreeMap::new(),
            next_task_number: 0,
            highest_reported_state: BTreeMap::new(),
            observed_this_life: BTreeMap::new(),
            creates_this_life: BTreeSet::new(),
            disk: None,
            listed_this_life: false,
            endpoints_sent_this_life: None,
            networking_view: None,
            steps_taken: 0,
            coverage: Coverage::default(),
        };
        simulation.feed(listed(vec![]));
        simulation
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "simulation seed {} failed after {} steps: {what}",
            self.seed, self.steps_taken
        );
    }

    fn feed(&mut self, event: Event) {
        self.steps_taken += 1;
        if matches!(event, Event::ContainersListed(_)) {
            self.listed_this_life = true;
        }
        let mut commands = self.reconciler.step(event.clone());
        let position = commands
            .iter()
            .position(|command| matches!(command, Command::SetNetworkEndpoints(_)));
        if let Some(position) = position
            && let Command::SetNetworkEndpoints(endpoints) = commands.remove(position)
        {
            if position != 0 {
                self.fail(format!(
                    "the set of endpoints came after other commands: {commands:?}"
                ));
            }
            self.check_endpoints(&endpoints, &commands, &event);
            self.coverage.endpoint_sets += 1;
            self.endpoints_sent_this_life = Some(endpoints.clone());
            self.networking_view = Some(endpoints);
        }
        for command in &commands {
            if let Command::CreateContainer { task_id, .. } = command {
                self.coverage.creates += 1;
                if !self.creates_this_life.insert(task_id.clone()) {
                    self.fail(format!("second create for {task_id} after {event:?}"));
                }
                if self
                    .containers
                    .values()
                    .any(|container| &container.task_id == task_id)
                {
                    self.fail(format!(
                        "create for {task_id}, which already has a container"
                    ));
                }
            }
        }
        let tracked: Vec<String> = self
            .reconciler
            .tracked_task_ids()
            .map(str::to_owned)
            .collect();
        for task_id in tracked {
            let Some(state) = self
                .reconciler
                .observed_status(&task_id)
                .map(|status| status.state)
            else {
                continue;
            };
            let previous = *self
                .observed_this_life
                .entry(task_id.clone())
                .or_insert(state);
            if state < previous {
                self.fail(format!(
                    "{task_id} observed {} after {}",
                    state_name(state),
                    state_name(previous)
                ));
            }
            self.observed_this_life.insert(task_id, state);
        }
        self.pending.extend(commands);
    }

    /// What must hold of every set of endpoints as it is emitted.
    fn check_endpoints(
        &self,
        endpoints: &BTreeMap<String, LocalEndpoint>,
        step_commands: &[Command],
        event: &Event,
    ) {
        if !self.listed_this_life {
            self.fail(format!(
                "a set of endpoints before the containers were listed, after {event:?}"
            ));
        }
        if self.endpoints_sent_this_life.as_ref() == Some(endpoints) {
            self.fail(format!(
                "the same set of endpoints sent twice in a row, after {event:?}"
            ));
        }
        for (task_id, endpoint) in endpoints {
            if &endpoint.networks.task_id != task_id {
                self.fail(format!(
                    "endpoint {task_id} holds the networks of another task"
                ));
            }
            let container = self
                .containers
                .values()
                .find(|container| &container.task_id == task_id);
            let create_in_flight = self
                .pending
                .iter()
                .chain(step_commands)
                .any(|command| matches!(command, Command::CreateContainer { task_id: id, .. } if id == task_id));
            if container.is_none() && !create_in_flight {
                self.fail(format!(
                    "{task_id} is in the set of endpoints without a container or a create in \
                     flight, after {event:?}"
                ));
            }
            if endpoint.serving
                && container.map(|container| container.run_state)
                    != Some(ContainerRunState::Running)
            {
                self.fail(format!(
                    "{task_id} serves but its container does not run, after {event:?}"
                ));
            }
        }
    }

    fn send_assignments(&mut self) {
        self.assignment_version += 1;
        self.feed(Event::Assignments(AssignmentSet {
            version: self.assignment_version,
            tasks: self.assigned.values().cloned().collect(),
            payloads: TaskPayloads::default(),
        }));
    }

    fn change_assignments(&mut self) {
        match self.random.random_range(0..4) {
            0 | 1 => {
                self.next_task_number += 1;
                let id = format!("t{}", self.next_task_number);
                let desired = if self.random.random_ratio(20, 100) {
                    TaskState::Ready
                } else {
                    TaskState::Running
                };
                let mut new_task = task(&id, self.next_task_number, desired);
                if self.random.random_ratio(30, 100) {
                    new_task = with_healthcheck(new_task);
                }
                if self.random.random_ratio(50, 100) {
                    new_task = on_front_network(new_task);
                }
                self.assigned.insert(id, new_task);
            }
            2 => {
                if let Some(id) = self.random_assigned_task() {
                    self.assigned.remove(&id);
                }
            }
            _ => {
                if let Some(id) = self.random_assigned_task()
                    && let Some(task) = self.assigned.get_mut(&id)
                {
                    task.desired_state = if task.desired_state == TaskState::Ready as i32 {
                        TaskState::Running as i32
                    } else {
                        TaskState::Shutdown as i32
                    };
                }
            }
        }
        self.send_assignments();
    }

    fn random_assigned_task(&mut self) -> Option<String> {
        let ids: Vec<&String> = self.assigned.keys().collect();
        (!ids.is_empty()).then(|| ids[self.random.random_range(0..ids.len())].clone())
    }

    fn random_container(&mut self) -> Option<String> {
        let ids: Vec<&String> = self.containers.keys().collect();
        (!ids.is_empty()).then(|| ids[self.random.random_range(0..ids.len())].clone())
    }

    /// The manager applies a delivered report; it must never see a task's state go down.
    fn manager_applies(&mut self, statuses: &BTreeMap<String, api::TaskStatus>) {
        for (task_id, status) in statuses {
            let highest = *self
                .highest_reported_state
                .entry(task_id.clone())
                .or_insert(status.state);
            if status.state < highest {
                self.fail(format!(
                    "{task_id} reported {} after {}",
                    state_name(status.state),
                    state_name(highest)
                ));
            }
            self.highest_reported_state
                .insert(task_id.clone(), status.state);
            *self
                .coverage
                .reported_by_state
                .entry(state_name(status.state))
                .or_default() += 1;
        }
    }

    /// Carries out one pending command, possibly failing it; its result is delivered only if
    /// `deliver_result` (a daemon crash loses it). Engine operations run in any order, but a
    /// report never overtakes the persist emitted before it, as the shell guarantees.
    fn carry_out_one(&mut self, allow_failures: bool, deliver_result: bool) {
        if self.pending.is_empty() {
            return;
        }
        let mut index = if allow_failures {
            self.random.random_range(0..self.pending.len())
        } else {
            0
        };
        // Persists and reports go through one sequential pipeline in the shell.
        let is_pipeline = |command: &Command| {
            matches!(
                command,
                Command::PersistAssignments(_) | Command::ReportStatuses { .. }
            )
        };
        if is_pipeline(&self.pending[index])
            && let Some(earliest) = self.pending.iter().position(is_pipeline)
        {
            index = earliest;
        }
        let command = self.pending.remove(index);
        let fails = allow_failures && self.random.random_ratio(10, 100);
        let outcome = match command {
            Command::CreateContainer { task_id, .. } => {
                if self
                    .containers
                    .values()
                    .any(|container| container.task_id == task_id)
                {
                    self.fail(format!(
                        "engine asked to create a second container for {task_id}"
                    ));
                }
                if fails {
                    CommandOutcome::CreateFinished {
                        task_id,
                        result: Err("create failed".to_owned()),
                    }
                } else {
                    self.next_container_number += 1;
                    let container_id = format!("c{}", self.next_container_number);
                    self.containers.insert(
                        container_id.clone(),
                        FakeContainer {
                            task_id: task_id.clone(),
                            run_state: ContainerRunState::Created,
                            health: None,
                        },
                    );
                    CommandOutcome::CreateFinished {
                        task_id,
                        result: Ok(container_id),
                    }
                }
            }
            Command::StartContainer {
                task_id,
                container_id,
            } => {
                let result = match self.containers.get_mut(&container_id) {
                    Some(container) if !fails => {
                        container.run_state = ContainerRunState::Running;
                        Ok(None)
                    }
                    _ => Err("start failed".to_owned()),
                };
                CommandOutcome::StartFinished { task_id, result }
            }
            Command::StopContainer {
                task_id,
                container_id,
                ..
            } => {
                let result = match self.containers.get_mut(&container_id) {
                    Some(_) if fails => Err("stop failed".to_owned()),
                    Some(container) => {
                        if container.run_state == ContainerRunState::Running {
                            container.run_state = ContainerRunState::Exited {
                                exit_code: 143,
                                oom_killed: false,
                            };
                        }
                        Ok(())
                    }
                    None => Ok(()),
                };
                CommandOutcome::StopFinished { task_id, result }
            }
            Command::RemoveContainer {
                task_id,
                container_id,
            } => {
                let result = if fails {
                    Err("remove failed".to_owned())
                } else {
                    self.containers.remove(&container_id);
                    Ok(())
                };
                CommandOutcome::RemoveFinished {
                    task_id,
                    container_id,
                    result,
                }
            }
            Command::PersistAssignments(snapshot) => {
                if fails {
                    // The shell withholds the report that depended on this persist.
                    if let Some(report_index) = self.pending[index..]
                        .iter()
                        .position(|command| matches!(command, Command::ReportStatuses { .. }))
                        && let Command::ReportStatuses { batch_id, .. } =
                            self.pending.remove(index + report_index)
                        && deliver_result
                    {
                        self.feed(Event::CommandFinished(CommandOutcome::ReportFinished {
                            batch_id,
                            result: Err("not sent: persist failed".to_owned()),
                        }));
                    }
                    CommandOutcome::PersistFinished {
                        result: Err("disk full".to_owned()),
                    }
                } else {
                    self.disk = Some(snapshot);
                    CommandOutcome::PersistFinished { result: Ok(()) }
                }
            }
            Command::SetNetworkEndpoints(_) => {
                self.fail("a set of endpoints was left pending: feed hands each over".to_owned())
            }
            Command::ReportStatuses { batch_id, statuses } => {
                if !fails {
                    self.manager_applies(&statuses);
                }
                CommandOutcome::ReportFinished {
                    batch_id,
                    result: if fails {
                        Err("unavailable".to_owned())
                    } else {
                        Ok(())
                    },
                }
            }
        };
        if deliver_result {
            self.feed(Event::CommandFinished(outcome));
        }
    }

    fn engine_event(&mut self) {
        let Some(container_id) = self.random_container() else {
            return;
        };
        let Some(container) = self.containers.get_mut(&container_id) else {
            return;
        };
        let event = match self.random.random_range(0..4) {
            0 if container.run_state == ContainerRunState::Running => {
                let exit_code = [0, 1, 137][self.random.random_range(0..3)];
                let oom_killed = exit_code == 137 && self.random.random_ratio(50, 100);
                container.run_state = ContainerRunState::Exited {
                    exit_code,
                    oom_killed,
                };
                EngineObservation::Exited {
                    container_id,
                    exit_code,
                    oom_killed,
                }
            }
            1 if container.run_state == ContainerRunState::Running => {
                let health = [
                    HealthStatus::Starting,
                    HealthStatus::Healthy,
                    HealthStatus::Unhealthy,
                ][self.random.random_range(0..3)];
                container.health = Some(health);
                EngineObservation::HealthChanged {
                    container_id,
                    health,
                }
            }
            2 if self.random.random_ratio(10, 100) => {
                self.containers.remove(&container_id);
                EngineObservation::Missing { container_id }
            }
            _ => EngineObservation::Started { container_id },
        };
        if let EngineObservation::Started { container_id } = &event
            && self
                .containers
                .get(container_id)
                .map(|container| container.run_state)
                != Some(ContainerRunState::Running)
        {
            return;
        }
        self.feed(Event::Engine(event));
    }

    fn restart_daemon(&mut self) {
        // The crash may come after the engine acted on a command but before its result arrived.
        if self.random.random_ratio(50, 100) {
            self.carry_out_one(true, false);
        }
        self.pending.clear();
        self.coverage.restarts += 1;
        if self
            .containers
            .values()
            .any(|container| container.run_state == ContainerRunState::Running)
        {
            self.coverage.restarts_with_running_containers += 1;
        }
        self.observed_this_life.clear();
        self.creates_this_life.clear();
        self.listed_this_life = false;
        self.endpoints_sent_this_life = None;
        self.reconciler = match self.disk.clone() {
            Some(persisted) => Reconciler::restore(persisted),
            None => Reconciler::new(),
        };
        let existing = self
            .containers
            .iter()
            .map(|(container_id, container)| ExistingContainer {
                container_id: container_id.clone(),
                labels: BTreeMap::from([(LABEL_TASK_ID.to_owned(), container.task_id.clone())]),
                run_state: container.run_state,
                health: container.health,
                pid: None,
            })
            .collect();
        // The dispatcher's set may arrive before the engine has listed its containers.
        let assignments_first = self.random.random_ratio(30, 100);
        if assignments_first {
            self.send_assignments();
        }
        self.feed(Event::ContainersListed(existing));
        if !assignments_first && self.random.random_ratio(80, 100) {
            self.send_assignments();
        }
    }

    fn random_step(&mut self, now_seconds: &mut u64) {
        match self.random.random_range(0..100) {
            0..=49 => self.carry_out_one(true, true),
            50..=64 => self.change_assignments(),
            65..=79 => self.engine_event(),
            80..=97 => {
                *now_seconds += 1;
                self.feed(tick(*now_seconds));
            }
            _ => self.restart_daemon(),
        }
    }

    /// With failures switched off and the dispatcher resending its set, everything settles.
    fn settle(&mut self, now_seconds: &mut u64) {
        self.send_assignments();
        for _ in 0..10_000 {
            if self.pending.is_empty() {
                *now_seconds += 1;
                self.feed(tick(*now_seconds));
                if self.pending.is_empty() {
                    return;
                }
            }
            self.carry_out_one(false, true);
        }
        self.fail("did not settle".to_owned());
    }

    /// Once settled, the node's networking holds exactly the networked tasks with a container,
    /// each serving just when its container runs, healthy if checked, for a task meant to run.
    fn check_settled_endpoints(&mut self) {
        let Some(view) = self.networking_view.clone() else {
            self.fail("the node's networking was never told of any endpoints".to_owned());
        };
        let mut expected = BTreeMap::new();
        for container in self.containers.values() {
            let Some(task) = self.assigned.get(&container.task_id) else {
                continue;
            };
            // An exited container holds no endpoint.
            if task.networks.is_empty()
                || matches!(container.run_state, ContainerRunState::Exited { .. })
            {
                continue;
            }
            let terminal = self
                .reconciler
                .observed_status(&task.id)
                .is_some_and(|status| status.state >= TaskState::Complete as i32);
            let serving = container.run_state == ContainerRunState::Running
                && task.desired_state == TaskState::Running as i32
                && !terminal
                && (!task_has_healthcheck(task) || container.health == Some(HealthStatus::Healthy));
            expected.insert(task.id.clone(), serving);
        }
        let told: BTreeMap<String, bool> = view
            .iter()
            .map(|(task_id, endpoint)| (task_id.clone(), endpoint.serving))
            .collect();
        if told != expected {
            self.fail(format!(
                "settled with endpoints {told:?}, expected {expected:?}"
            ));
        }
        self.coverage.serving_endpoints += told.values().filter(|serving| **serving).count();
    }

    fn check_settled(&self) {
        for (container_id, container) in &self.containers {
            if !self.assigned.contains_key(&container.task_id) {
                self.fail(format!(
                    "container {container_id} of unassigned task {} survived",
                    container.task_id
                ));
            }
        }
        for (task_id, task) in &self.assigned {
            let state = self
                .reconciler
                .observed_status(task_id)
                .map(|status| status.state)
                .unwrap_or_else(|| self.fail(format!("assigned task {task_id} is not tracked")));
            let terminal = state >= TaskState::Complete as i32;
            let running_container = self.containers.values().any(|container| {
                &container.task_id == task_id && container.run_state == ContainerRunState::Running
            });
            if terminal && running_container {
                self.fail(format!(
                    "{task_id} is {} but its container runs",
                    state_name(state)
                ));
            }
            let settled = if task.desired_state >= TaskState::Shutdown as i32 {
                terminal
            } else if task.desired_state >= TaskState::Running as i32 {
                terminal || state == TaskState::Running as i32
                    // A healthchecked task waits for a verdict the simulation may never send.
                    || (state == TaskState::Starting as i32 && running_container)
            } else {
                terminal || state == TaskState::Ready as i32
            };
            if !settled {
                self.fail(format!(
                    "{task_id} (desired {}) settled in {}",
                    state_name(task.desired_state),
                    state_name(state)
                ));
            }
        }
    }
}

fn run_seed(seed: u64, steps: usize) -> Coverage {
    let mut simulation = Simulation::new(seed);
    let mut now_seconds = 0;
    for _ in 0..steps {
        simulation.random_step(&mut now_seconds);
    }
    simulation.settle(&mut now_seconds);
    simulation.check_settled();
    simulation.check_settled_endpoints();
    simulation.coverage
}

#[test]
fn random_event_sequences_keep_state_monotonic_and_containers_unique() {
    if let Some(seed) = std::env::var("WORKER_SIMULATION_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
    {
        run_seed(seed, 600);
        return;
    }
    let mut coverage = Coverage::default();
    for seed in 0..300 {
        coverage.add(&run_seed(seed, 600));
    }
    let reported = |state: &str| coverage.reported_by_state.get(state).copied().unwrap_or(0);
    assert!(coverage.creates > 1_000, "{coverage:?}");
    assert!(coverage.endpoint_sets > 1_000, "{coverage:?}");
    assert!(coverage.serving_endpoints > 50, "{coverage:?}");
    assert!(
        coverage.restarts_with_running_containers > 100,
        "{coverage:?}"
    );
    for state in [
        "PREPARING",
        "READY",
        "STARTING",
        "RUNNING",
        "COMPLETE",
        "SHUTDOWN",
        "FAILED",
        "REJECTED",
    ] {
        assert!(
            reported(state) > 50,
            "{state} barely reported: {coverage:?}"
        );
    }
}
