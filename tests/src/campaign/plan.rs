//! The seeded plan of a fault campaign: for each round, what every client writes through its
//! manager and when, and which faults the nemesis injects into which host and when. Pure: the
//! same seed and shape always give the same plan, so a failing seed replays.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt as _, SeedableRng as _};

/// The environment variable an update sets on a service; its value is the update's generation.
pub const GENERATION_VARIABLE: &str = "CAMPAIGN_GENERATION";

/// How big a campaign's rounds are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignShape {
    /// Managers, hosts `1..=managers`; client `k` writes through manager `k`.
    pub managers: usize,
    /// Workers, the hosts after the managers.
    pub workers: usize,
    /// How long clients write and the nemesis injects faults in each round.
    pub active: Duration,
    /// Writes each client makes per round.
    pub operations_per_client: usize,
    /// Faults the nemesis injects per round (fewer when they don't fit).
    pub faults_per_round: usize,
    /// Most hosts down or cut off at one time.
    pub max_concurrent_faults: usize,
    /// Shortest and longest fault.
    pub fault_length: (Duration, Duration),
    /// Most replicas a client gives a service.
    pub max_replicas: u64,
    /// Most services a client keeps at once (it removes some as it goes).
    pub max_services_per_client: usize,
}

impl CampaignShape {
    /// The short run CI makes: 3 managers and 2 workers, rounds of 20 s with 8 writes per client
    /// and 4 faults, at most 2 hosts faulty at a time (so a quorum can be lost for a while).
    pub fn short() -> CampaignShape {
        CampaignShape {
            managers: 3,
            workers: 2,
            active: Duration::from_secs(20),
            operations_per_client: 8,
            faults_per_round: 4,
            max_concurrent_faults: 2,
            fault_length: (Duration::from_secs(2), Duration::from_secs(8)),
            max_replicas: 2,
            max_services_per_client: 3,
        }
    }

    /// Every host: managers then workers.
    pub fn hosts(&self) -> usize {
        self.managers + self.workers
    }
}

/// One write a client makes. Each service and secret belongs to the one client that names it,
/// and only that client writes it, so its writes are ordered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `service create` with this many replicas.
    CreateService { name: String, replicas: u64 },
    /// `service scale name=replicas`.
    ScaleService { name: String, replicas: u64 },
    /// `service update --env-add CAMPAIGN_GENERATION=<generation>`; each update of a service has
    /// a new generation, so the final value tells which update took effect.
    UpdateService { name: String, generation: u64 },
    /// `service rm`.
    RemoveService { name: String },
    /// `secret create name <file holding data>`.
    CreateSecret { name: String, data: String },
}

impl Operation {
    /// The arguments of the `shoal` command making this write, reading a secret's data from
    /// `secret_file` (which the caller fills with [`Operation::secret_data`] first). Every
    /// command returns once the write is committed or refused, without waiting for tasks.
    pub fn cli_args(&self, secret_file: &Path) -> Vec<String> {
        let words: Vec<String> = match self {
            Operation::CreateService { name, replicas } => vec![
                "service".into(),
                "create".into(),
                "-d".into(),
                "--name".into(),
                name.clone(),
                "--replicas".into(),
                replicas.to_string(),
                // `sleep` as PID 1 ignores SIGTERM; a short grace keeps scale-downs and updates
                // from waiting 10 s per task.
                "--stop-grace-period".into(),
                "1s".into(),
                "busybox".into(),
                "sleep".into(),
                "86400".into(),
            ],
            Operation::ScaleService { name, replicas } => vec![
                "service".into(),
                "scale".into(),
                "-d".into(),
                format!("{name}={replicas}"),
            ],
            Operation::UpdateService { name, generation } => vec![
                "service".into(),
                "update".into(),
                "-d".into(),
                "--env-add".into(),
                format!("{GENERATION_VARIABLE}={generation}"),
                name.clone(),
            ],
            Operation::RemoveService { name } => vec!["service".into(), "rm".into(), name.clone()],
            Operation::CreateSecret { name, .. } => vec![
                "secret".into(),
                "create".into(),
                name.clone(),
                secret_file.display().to_string(),
            ],
        };
        words
    }

    /// The data a secret is created with, if this creates one.
    pub fn secret_data(&self) -> Option<&str> {
        match self {
            Operation::CreateSecret { data, .. } => Some(data),
            _ => None,
        }
    }
}

/// A write and when, from the start of the round, the client makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub operation: Operation,
}

/// What one client does in a round: its writes in order, all through one manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPlan {
    /// Client number, from 1.
    pub client: usize,
    /// The host (a manager) it writes through.
    pub manager: usize,
    pub steps: Vec<Step>,
}

/// How the nemesis takes a host out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9` of the host's daemon, restarted at the end (its containers keep running).
    Kill,
    /// nftables dropping everything on the host's link, healed at the end.
    Partition,
}

/// One fault: `host` is out from `start` to `end` (from the start of the round).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub host: usize,
    pub kind: FaultKind,
    pub start: Duration,
    pub end: Duration,
}

/// One round: clients and faults run side by side for the shape's active time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundPlan {
    /// Round number, from 1.
    pub round: usize,
    pub clients: Vec<ClientPlan>,
    /// Sorted by start.
    pub faults: Vec<Fault>,
}

/// What the nemesis does at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NemesisAction {
    /// The fault starts: kill the daemon or partition the host.
    Begin(Fault),
    /// The fault ends: restart the daemon or heal the host.
    End(Fault),
}

impl NemesisAction {
    /// When it happens, from the start of the round.
    pub fn at(&self) -> Duration {
        match self {
            NemesisAction::Begin(fault) => fault.start,
            NemesisAction::End(fault) => fault.end,
        }
    }
}

/// The nemesis's actions for `faults` in the order it takes them: by time, an end before a
/// beginning at the same moment.
pub fn nemesis_actions(faults: &[Fault]) -> Vec<NemesisAction> {
    let mut actions: Vec<NemesisAction> = faults
        .iter()
        .flat_map(|fault| [NemesisAction::Begin(*fault), NemesisAction::End(*fault)])
        .collect();
    actions.sort_by_key(|action| (action.at(), matches!(action, NemesisAction::Begin(_))));
    actions
}

/// A service a client has planned to create and not yet planned to remove.
#[derive(Debug)]
struct OwnedService {
    name: String,
    generations: u64,
}

/// The plan of `rounds` rounds of shape `shape` from `seed`. Rounds build on each other: a
/// client scales, updates and removes services it created in earlier rounds too.
pub fn plan_campaign(seed: u64, rounds: usize, shape: &CampaignShape) -> Vec<RoundPlan> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut owned: BTreeMap<usize, Vec<OwnedService>> = BTreeMap::new();
    (1..=rounds)
        .map(|round| {
            let clients = (1..=shape.managers)
                .map(|client| {
                    let services = owned.entry(client).or_default();
                    plan_client(&mut rng, shape, round, client, services)
                })
                .collect();
            let faults = plan_faults(&mut rng, shape);
            RoundPlan {
                round,
                clients,
                faults,
            }
        })
        .collect()
}

fn plan_client(
    rng: &mut Xoshiro256PlusPlus,
    shape: &CampaignShape,
    round: usize,
    client: usize,
    services: &mut Vec<OwnedService>,
) -> ClientPlan {
    let active_ms = u64::try_from(shape.active.as_millis()).unwrap_or(u64::MAX);
    let mut times: Vec<Duration> = (0..shape.operations_per_client)
        .map(|_| Duration::from_millis(rng.random_range(0..active_ms.max(1))))
        .collect();
    times.sort();
    let (mut new_services, mut new_secrets) = (0, 0);
    let steps = times
        .into_iter()
        .map(|at| {
            let roll = rng.random_range(0..100u32);
            let can_create = services.len() < shape.max_services_per_client;
            let operation = if services.is_empty() || (roll < 25 && can_create) {
                new_services += 1;
                let name = format!("c{client}r{round}s{new_services}");
                services.push(OwnedService {
                    name: name.clone(),
                    generations: 0,
                });
                Operation::CreateService {
                    name,
                    replicas: rng.random_range(0..=shape.max_replicas),
                }
            } else if roll < 80 || services.len() == 1 {
                let index = rng.random_range(0..services.len());
                let service = &mut services[index];
                if roll < 55 {
                    Operation::ScaleService {
                        name: service.name.clone(),
                        replicas: rng.random_range(0..=shape.max_replicas),
                    }
                } else {
                    service.generations += 1;
                    Operation::UpdateService {
                        name: service.name.clone(),
                        generation: service.generations,
                    }
                }
            } else if roll < 92 {
                new_secrets += 1;
                Operation::CreateSecret {
                    name: format!("c{client}r{round}x{new_secrets}"),
                    data: format!("{:016x}", rng.random::<u64>()),
                }
            } else {
                let index = rng.random_range(0..services.len());
                Operation::RemoveService {
                    name: services.remove(index).name,
                }
            };
            Step { at, operation }
        })
        .collect();
    ClientPlan {
        client,
        manager: client,
        steps,
    }
}

fn plan_faults(rng: &mut Xoshiro256PlusPlus, shape: &CampaignShape) -> Vec<Fault> {
    let (shortest, longest) = shape.fault_length;
    let to_ms = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut faults: Vec<Fault> = Vec::new();
    for _ in 0..shape.faults_per_round {
        // A few tries per fault: one that overlaps its host's other fault or makes too many
        // hosts faulty at once is drawn again, and given up after that.
        for _ in 0..16 {
            let length_ms = rng.random_range(to_ms(shortest)..=to_ms(longest));
            let latest_start = to_ms(shape.active).saturating_sub(length_ms);
            let start = Duration::from_millis(rng.random_range(0..=latest_start));
            let fault = Fault {
                host: rng.random_range(1..=shape.hosts()),
                kind: if rng.random_bool(0.6) {
                    FaultKind::Kill
                } else {
                    FaultKind::Partition
                },
                start,
                end: start + Duration::from_millis(length_ms),
            };
            if fits(&faults, &fault, shape.max_concurrent_faults) {
                faults.push(fault);
                break;
            }
        }
    }
    faults.sort_by_key(|fault| (fault.start, fault.host));
    faults
}

/// Whether `fault` can join `faults`: its host is not already out during it (nor within a
/// second of it, so a restarted daemon gets going), and at no moment are more than `most`
/// hosts out.
fn fits(faults: &[Fault], fault: &Fault, most: usize) -> bool {
    let margin = Duration::from_secs(1);
    let same_host_clash = faults.iter().any(|other| {
        other.host == fault.host
            && other.start < fault.end + margin
            && fault.start < other.end + margin
    });
    if same_host_clash {
        return false;
    }
    // The most faults out at once over the new one's interval is reached at one of the starts
    // inside it (or at its own start).
    let out_at = |moment: Duration| {
        faults
            .iter()
            .filter(|other| other.start <= moment && moment < other.end)
            .count()
    };
    std::iter::once(fault.start)
        .chain(
            faults
                .iter()
                .map(|other| other.start)
                .filter(|start| fault.start <= *start && *start < fault.end),
        )
        .all(|moment| out_at(moment) < most)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes_of(plan: &[RoundPlan]) -> Vec<&Operation> {
        plan.iter()
            .flat_map(|round| &round.clients)
            .flat_map(|client| &client.steps)
            .map(|step| &step.operation)
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let shape = CampaignShape::short();
        assert_eq!(plan_campaign(7, 3, &shape), plan_campaign(7, 3, &shape));
        assert_ne!(plan_campaign(7, 3, &shape), plan_campaign(8, 3, &shape));
    }

    #[test]
    fn every_client_writes_through_its_own_manager_in_time_order_within_the_round() {
        let shape = CampaignShape::short();
        for round in plan_campaign(11, 5, &shape) {
            assert_eq!(round.clients.len(), shape.managers);
            for client in &round.clients {
                assert!((1..=shape.managers).contains(&client.manager));
                assert_eq!(client.steps.len(), shape.operations_per_client);
                assert!(client.steps.windows(2).all(|pair| pair[0].at <= pair[1].at));
                assert!(client.steps.iter().all(|step| step.at < shape.active));
            }
        }
    }

    #[test]
    fn faults_fit_the_round_never_overlap_on_a_host_and_respect_the_concurrency_limit() {
        let shape = CampaignShape::short();
        let plan = plan_campaign(3, 40, &shape);
        let mut kinds = (0, 0);
        for round in &plan {
            assert!(
                !round.faults.is_empty(),
                "round {} has no fault",
                round.round
            );
            for fault in &round.faults {
                assert!((1..=shape.hosts()).contains(&fault.host));
                assert!(fault.end <= shape.active);
                let length = fault.end - fault.start;
                assert!(shape.fault_length.0 <= length && length <= shape.fault_length.1);
                match fault.kind {
                    FaultKind::Kill => kinds.0 += 1,
                    FaultKind::Partition => kinds.1 += 1,
                }
            }
            // Walking the nemesis's actions: never more than the limit out, never a host taken
            // out twice or brought back while in.
            let mut out: Vec<usize> = Vec::new();
            for action in nemesis_actions(&round.faults) {
                match action {
                    NemesisAction::Begin(fault) => {
                        assert!(!out.contains(&fault.host), "{:?}", round.faults);
                        out.push(fault.host);
                        assert!(out.len() <= shape.max_concurrent_faults);
                    }
                    NemesisAction::End(fault) => {
                        assert!(out.contains(&fault.host), "{:?}", round.faults);
                        out.retain(|host| *host != fault.host);
                    }
                }
            }
            assert!(out.is_empty());
        }
        assert!(kinds.0 > 0 && kinds.1 > 0, "{kinds:?}");
    }

    #[test]
    fn names_are_unique_and_only_the_owner_writes_a_service_after_creating_it() {
        let plan = plan_campaign(5, 20, &CampaignShape::short());
        let mut created: BTreeMap<String, usize> = BTreeMap::new();
        let mut removed: Vec<String> = Vec::new();
        let mut secrets: Vec<String> = Vec::new();
        for round in &plan {
            for client in &round.clients {
                for step in &client.steps {
                    match &step.operation {
                        Operation::CreateService { name, .. } => {
                            assert!(created.insert(name.clone(), client.client).is_none());
                        }
                        Operation::ScaleService { name, .. }
                        | Operation::UpdateService { name, .. }
                        | Operation::RemoveService { name } => {
                            assert_eq!(created.get(name), Some(&client.client), "{name}");
                            assert!(!removed.contains(name), "{name} written after removal");
                            if matches!(step.operation, Operation::RemoveService { .. }) {
                                removed.push(name.clone());
                            }
                        }
                        Operation::CreateSecret { name, .. } => {
                            assert!(!secrets.contains(name));
                            secrets.push(name.clone());
                        }
                    }
                }
            }
        }
        let writes = writes_of(&plan);
        let count = |matches: fn(&Operation) -> bool| writes.iter().filter(|w| matches(w)).count();
        assert!(count(|w| matches!(w, Operation::ScaleService { .. })) > 0);
        assert!(count(|w| matches!(w, Operation::UpdateService { .. })) > 0);
        assert!(count(|w| matches!(w, Operation::RemoveService { .. })) > 0);
        assert!(!secrets.is_empty());
    }

    #[test]
    fn a_services_updates_carry_increasing_generations() {
        let plan = plan_campaign(9, 10, &CampaignShape::short());
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for operation in writes_of(&plan) {
            if let Operation::UpdateService { name, generation } = operation {
                let previous = last.insert(name, *generation).unwrap_or(0);
                assert_eq!(*generation, previous + 1, "{name}");
            }
        }
    }

    #[test]
    fn cli_arguments_name_the_object_and_the_value_written() {
        let file = Path::new("/tmp/data");
        let create = Operation::CreateService {
            name: "c1r1s1".into(),
            replicas: 2,
        };
        let args = create.cli_args(file);
        assert_eq!(args[..3], ["service", "create", "-d"]);
        assert!(args.windows(2).any(|w| w == ["--replicas", "2"]));
        assert!(args.windows(2).any(|w| w == ["--name", "c1r1s1"]));
        let scale = Operation::ScaleService {
            name: "c1r1s1".into(),
            replicas: 0,
        };
        assert_eq!(scale.cli_args(file), ["service", "scale", "-d", "c1r1s1=0"]);
        let update = Operation::UpdateService {
            name: "c1r1s1".into(),
            generation: 3,
        };
        assert_eq!(
            update.cli_args(file),
            [
                "service",
                "update",
                "-d",
                "--env-add",
                "CAMPAIGN_GENERATION=3",
                "c1r1s1"
            ]
        );
        let secret = Operation::CreateSecret {
            name: "c1r1x1".into(),
            data: "abc".into(),
        };
        assert_eq!(
            secret.cli_args(file),
            ["secret", "create", "c1r1x1", "/tmp/data"]
        );
        assert_eq!(secret.secret_data(), Some("abc"));
        assert_eq!(create.secret_data(), None);
    }
}
