//! The history checker: every write a client made and what it was told, compared with the
//! state the managers agree on at the end. A write that was acknowledged must show, unless a
//! later write to the same thing replaced it; a write that failed or timed out may or may not
//! have happened, and may have taken effect at any time after it was sent (its end is open).

use std::collections::{BTreeMap, BTreeSet};

use crate::campaign::plan::Operation;

/// What a client was told about a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command succeeded: the write is committed.
    Acknowledged,
    /// The command failed or hung; the text says how. Either way the write may have happened.
    Indeterminate(String),
}

/// One write in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub round: usize,
    pub client: usize,
    pub operation: Operation,
    pub outcome: Outcome,
}

/// A service as the managers hold it at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedService {
    pub replicas: u64,
    /// The value of `CAMPAIGN_GENERATION` in its environment, if set.
    pub generation: Option<u64>,
}

/// The state the history is checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedState {
    pub services: BTreeMap<String, ObservedService>,
    pub secrets: BTreeSet<String>,
}

/// Counts over a history that checked out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistorySummary {
    pub writes: usize,
    pub acknowledged: usize,
    pub indeterminate: usize,
}

/// The writes to one register (a service's existence, replicas or generation; a secret's
/// existence), in the order its one client made them: (value written, acknowledged).
type Writes<T> = Vec<(T, bool)>;

/// The values a register may hold at the end: the last acknowledged write's (the initial
/// value when none was acknowledged), or that of any write that was not acknowledged, which may
/// have been applied at any time after it was sent, even after later writes.
fn allowed<T: Clone + Ord>(initial: T, writes: &Writes<T>) -> BTreeSet<T> {
    let last_acknowledged = writes
        .iter()
        .rev()
        .find(|(_, acknowledged)| *acknowledged)
        .map_or(initial, |(value, _)| value.clone());
    std::iter::once(last_acknowledged)
        .chain(
            writes
                .iter()
                .filter(|(_, acknowledged)| !acknowledged)
                .map(|(value, _)| value.clone()),
        )
        .collect()
}

#[derive(Default)]
struct ServiceWrites {
    exists: Writes<bool>,
    replicas: Writes<Option<u64>>,
    generation: Writes<Option<u64>>,
}

/// Checks `history` against `observed`. `Err` lists every write lost (an acknowledged value
/// missing, with what is there instead) and every object no write could have made.
pub fn check_history(
    history: &[Record],
    observed: &ObservedState,
) -> Result<HistorySummary, Vec<String>> {
    let mut services: BTreeMap<&str, ServiceWrites> = BTreeMap::new();
    let mut secrets: BTreeMap<&str, Writes<bool>> = BTreeMap::new();
    let mut summary = HistorySummary::default();
    for record in history {
        let acknowledged = record.outcome == Outcome::Acknowledged;
        summary.writes += 1;
        if acknowledged {
            summary.acknowledged += 1;
        } else {
            summary.indeterminate += 1;
        }
        match &record.operation {
            Operation::CreateService { name, replicas } => {
                let service = services.entry(name).or_default();
                service.exists.push((true, acknowledged));
                service.replicas.push((Some(*replicas), acknowledged));
            }
            Operation::ScaleService { name, replicas } => {
                let service = services.entry(name).or_default();
                service.replicas.push((Some(*replicas), acknowledged));
            }
            Operation::UpdateService { name, generation } => {
                let service = services.entry(name).or_default();
                service.generation.push((Some(*generation), acknowledged));
            }
            Operation::RemoveService { name } => {
                let service = services.entry(name).or_default();
                service.exists.push((false, acknowledged));
            }
            Operation::CreateSecret { name, .. } => {
                secrets.entry(name).or_default().push((true, acknowledged));
            }
        }
    }
    let mut violations = Vec::new();
    for (name, writes) in &services {
        let found = observed.services.get(*name);
        let exists = allowed(false, &writes.exists);
        if !exists.contains(&found.is_some()) {
            violations.push(match found {
                None => format!("service {name}: acknowledged as created, but it is missing"),
                Some(_) => format!("service {name}: acknowledged as removed, but it is there"),
            });
        }
        let Some(found) = found else { continue };
        let replicas = allowed(None, &writes.replicas);
        if !replicas.contains(&Some(found.replicas)) {
            violations.push(format!(
                "service {name}: {} replicas, but the writes allow only {replicas:?}",
                found.replicas
            ));
        }
        let generation = allowed(None, &writes.generation);
        if !generation.contains(&found.generation) {
            violations.push(format!(
                "service {name}: generation {:?}, but the writes allow only {generation:?}",
                found.generation
            ));
        }
    }
    for (name, writes) in &secrets {
        let present = observed.secrets.contains(*name);
        if !allowed(false, writes).contains(&present) {
            violations.push(format!(
                "secret {name}: acknowledged as created, but it is missing"
            ));
        }
    }
    for name in observed.services.keys() {
        if !services.contains_key(name.as_str()) {
            violations.push(format!("service {name}: there, but no client created it"));
        }
    }
    for name in &observed.secrets {
        if !secrets.contains_key(name.as_str()) {
            violations.push(format!("secret {name}: there, but no client created it"));
        }
    }
    if violations.is_empty() {
        Ok(summary)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(operation: Operation, acknowledged: bool) -> Record {
        Record {
            round: 1,
            client: 1,
            operation,
            outcome: if acknowledged {
                Outcome::Acknowledged
            } else {
                Outcome::Indeterminate("timed out".into())
            },
        }
    }

    fn create(name: &str, replicas: u64) -> Operation {
        Operation::CreateService {
            name: name.into(),
            replicas,
        }
    }

    fn scale(name: &str, replicas: u64) -> Operation {
        Operation::ScaleService {
            name: name.into(),
            replicas,
        }
    }

    fn update(name: &str, generation: u64) -> Operation {
        Operation::UpdateService {
            name: name.into(),
            generation,
        }
    }

    fn secret(name: &str) -> Operation {
        Operation::CreateSecret {
            name: name.into(),
            data: "x".into(),
        }
    }

    fn observed(services: &[(&str, u64, Option<u64>)], secrets: &[&str]) -> ObservedState {
        ObservedState {
            services: services
                .iter()
                .map(|(name, replicas, generation)| {
                    (
                        (*name).to_owned(),
                        ObservedService {
                            replicas: *replicas,
                            generation: *generation,
                        },
                    )
                })
                .collect(),
            secrets: secrets.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    #[test]
    fn a_history_whose_last_acknowledged_writes_all_show_checks_out() {
        let history = [
            record(create("a", 1), true),
            record(scale("a", 2), true),
            record(update("a", 1), true),
            record(secret("s"), true),
            record(create("b", 2), true),
            record(Operation::RemoveService { name: "b".into() }, true),
        ];
        let summary = check_history(&history, &observed(&[("a", 2, Some(1))], &["s"]));
        assert_eq!(
            summary,
            Ok(HistorySummary {
                writes: 6,
                acknowledged: 6,
                indeterminate: 0
            })
        );
    }

    #[test]
    fn a_missing_acknowledged_create_or_secret_is_a_lost_write() {
        let history = [record(create("a", 1), true), record(secret("s"), true)];
        let violations = check_history(&history, &observed(&[], &[])).unwrap_err();
        assert_eq!(
            violations,
            [
                "service a: acknowledged as created, but it is missing",
                "secret s: acknowledged as created, but it is missing"
            ]
        );
    }

    #[test]
    fn an_acknowledged_scale_or_update_replaced_by_an_older_value_is_lost() {
        let history = [
            record(create("a", 1), true),
            record(scale("a", 3), true),
            record(update("a", 1), true),
            record(update("a", 2), true),
        ];
        let violations = check_history(&history, &observed(&[("a", 1, Some(1))], &[])).unwrap_err();
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].contains("1 replicas"), "{violations:?}");
        assert!(
            violations[1].contains("generation Some(1)"),
            "{violations:?}"
        );
    }

    #[test]
    fn an_acknowledged_removal_undone_is_caught() {
        let history = [
            record(create("a", 1), true),
            record(Operation::RemoveService { name: "a".into() }, true),
        ];
        let violations = check_history(&history, &observed(&[("a", 1, None)], &[])).unwrap_err();
        assert_eq!(
            violations,
            ["service a: acknowledged as removed, but it is there"]
        );
    }

    #[test]
    fn an_unacknowledged_write_may_or_may_not_have_happened_even_after_later_writes() {
        let history = [
            record(create("a", 1), true),
            record(scale("a", 2), false),
            record(scale("a", 0), true),
            record(update("a", 1), false),
            record(create("maybe", 1), false),
            record(secret("s"), false),
        ];
        // The failed scale to 2 applied after the acknowledged scale to 0, the failed update,
        // create and secret applied.
        assert!(
            check_history(
                &history,
                &observed(&[("a", 2, Some(1)), ("maybe", 1, None)], &["s"])
            )
            .is_ok()
        );
        // Or none of them applied.
        let summary = check_history(&history, &observed(&[("a", 0, None)], &[])).unwrap();
        assert_eq!((summary.acknowledged, summary.indeterminate), (2, 4));
        // But a value nobody wrote is not allowed.
        assert!(check_history(&history, &observed(&[("a", 1, None)], &[])).is_err());
    }

    #[test]
    fn objects_no_client_wrote_are_reported() {
        let violations =
            check_history(&[], &observed(&[("ghost", 1, None)], &["phantom"])).unwrap_err();
        assert_eq!(
            violations,
            [
                "service ghost: there, but no client created it",
                "secret phantom: there, but no client created it"
            ]
        );
    }
}
