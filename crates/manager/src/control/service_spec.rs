//! The rules a service spec must follow before it is stored, and the changes an update may
//! make. Pure: the control API calls these before writing anything.

use scheduler::{Constraint, SpreadPreference};
use shoal_proto::api::{
    Endpoint, JobStatus, Service, ServiceSpec, Version, placement, service_spec,
};
use spec::enums::{ModeName, TextForm};

use crate::error::ManagerError;
use crate::objects::ClusterObject;
use crate::orchestrator::spec_version_of_service;

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

/// Checks everything about a spec that does not depend on other objects: `spec`'s rules, and
/// placement in the scheduler's grammar.
pub(crate) fn check_service_spec(spec: &ServiceSpec) -> Result<(), ManagerError> {
    spec::validate::service_spec(spec)?;
    if let Some(placement) = spec.task.as_ref().and_then(|task| task.placement.as_ref()) {
        Constraint::parse_all(&placement.constraints)
            .map_err(|error| invalid(format!("invalid constraint: {error}")))?;
        for preference in &placement.preferences {
            if let Some(placement::preference::Preference::Spread(spread)) =
                preference.preference.as_ref()
            {
                SpreadPreference::parse(&spread.spread_descriptor)
                    .map_err(|error| invalid(format!("invalid placement preference: {error}")))?;
            }
        }
    }
    Ok(())
}

fn mode_name(mode: Option<&service_spec::Mode>) -> &'static str {
    mode.map_or("none", |mode| ModeName::of(mode).text())
}

/// Checks what an update changes: a service keeps its name and its mode, as in docker.
pub(crate) fn check_service_update(
    current: &ServiceSpec,
    updated: &ServiceSpec,
) -> Result<(), ManagerError> {
    check_service_spec(updated)?;
    let name = |spec: &ServiceSpec| {
        spec.annotations
            .as_ref()
            .map(|annotations| annotations.name.clone())
            .unwrap_or_default()
    };
    if name(current) != name(updated) {
        return Err(invalid(format!(
            "renaming services is not supported: remove {} and create it again under the new name",
            name(current)
        )));
    }
    let (current_mode, updated_mode) = (
        mode_name(current.mode.as_ref()),
        mode_name(updated.mode.as_ref()),
    );
    if current_mode != updated_mode {
        return Err(invalid(format!(
            "service mode change is not allowed ({current_mode} to {updated_mode}): remove the service and create it again"
        )));
    }
    Ok(())
}

/// A new service of `spec` under `id`: at spec version 1, its endpoint as the spec asks, and
/// for jobs at their first iteration.
pub(crate) fn new_service(id: String, spec: ServiceSpec) -> Service {
    let job_status = is_job(&spec).then(|| JobStatus {
        job_iteration: Some(Version { index: 1 }),
        ..Default::default()
    });
    let mut service = Service {
        id,
        spec: Some(spec),
        spec_version: Some(Version { index: 1 }),
        job_status,
        ..Default::default()
    };
    refresh_endpoint(&mut service);
    service
}

/// `current` moved to `updated_spec`, or `None` when the spec is the same. The old spec stays as
/// the previous one, for rollbacks. Only a change to what a task runs gives a new spec version,
/// which marks the tasks out of date: scaling changes the mode alone and replaces no task. The
/// new version exceeds the service's own store version, which is unique over its history, so a
/// spec rolled back from never comes back under the same number. Updating a job runs it again,
/// as in docker; and a new spec starts a new update, which also ends a paused one.
pub(crate) fn respec(current: &Service, updated_spec: ServiceSpec) -> Option<Service> {
    let current_spec = current.spec.clone().unwrap_or_default();
    if current_spec == updated_spec {
        return None;
    }
    let mut service = current.clone();
    let tasks_change =
        current_spec.task != updated_spec.task || current_spec.endpoint != updated_spec.endpoint;
    if tasks_change {
        service.spec_version = Some(Version {
            index: current.read_version().max(spec_version_of_service(current)) + 1,
        });
    }
    if is_job(&updated_spec) {
        let status = service.job_status.get_or_insert_with(Default::default);
        status.job_iteration = Some(Version {
            index: status.job_iteration.map_or(0, |version| version.index) + 1,
        });
    }
    service.previous_spec = Some(current_spec);
    service.previous_spec_version = current.spec_version;
    service.spec = Some(updated_spec);
    service.update_status = None;
    refresh_endpoint(&mut service);
    Some(service)
}

/// Sets the service's endpoint spec to what its spec asks, keeping the virtual IPs the
/// allocator gave it (a VIP stays the same across updates that keep its network, and the
/// allocator drops those of networks the service left) and the ports it was given, from which
/// `PublishedPorts::allocate`, which every write path calls next, keeps the numbers it chose.
pub(crate) fn refresh_endpoint(service: &mut Service) {
    let (virtual_ips, ports) = service
        .endpoint
        .take()
        .map(|endpoint| (endpoint.virtual_ips, endpoint.ports))
        .unwrap_or_default();
    let spec = service.spec.as_ref().and_then(|spec| spec.endpoint.clone());
    let keeps_something = spec.is_some() || !virtual_ips.is_empty() || !ports.is_empty();
    service.endpoint = keeps_something.then_some(Endpoint {
        ports,
        spec,
        virtual_ips,
    });
}

fn is_job(spec: &ServiceSpec) -> bool {
    matches!(
        spec.mode,
        Some(service_spec::Mode::ReplicatedJob(_) | service_spec::Mode::GlobalJob(_))
    )
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nifty", "proud", "quirky", "sharp", "sleepy", "tender", "vivid", "wise", "zealous", "bold",
];
const SURNAMES: &[&str] = &[
    "babbage", "curie", "darwin", "euler", "fermat", "galois", "hopper", "johnson", "kepler",
    "lovelace", "meitner", "noether", "pascal", "ritchie", "shannon", "thompson", "turing",
    "volta", "wozniak", "yonath",
];

/// A docker-style name for a service created without one, from a random number.
pub(crate) fn generated_service_name(random: u64) -> String {
    let adjective = ADJECTIVES[(random % ADJECTIVES.len() as u64) as usize];
    let surname = SURNAMES[((random / ADJECTIVES.len() as u64) % SURNAMES.len() as u64) as usize];
    format!("{adjective}_{surname}")
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{
        self, Annotations, ContainerSpec, GlobalService, Placement, ReplicatedService, TaskSpec,
        UpdateConfig, task_spec, update_config,
    };

    use super::*;

    fn spec(name: &str, image: &str) -> ServiceSpec {
        ServiceSpec {
            annotations: Some(Annotations {
                name: name.to_owned(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: image.to_owned(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 1,
            })),
            ..Default::default()
        }
    }

    fn error_of(result: Result<(), ManagerError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_plain_spec_passes() {
        check_service_spec(&spec("web", "busybox")).unwrap();
        check_service_spec(&spec("a_b-c1", "busybox")).unwrap();
    }

    #[test]
    fn names_follow_dockers_rules() {
        for bad in ["", "-web", "web-", "we b", "wéb", &"x".repeat(64)] {
            let message = error_of(check_service_spec(&spec(bad, "busybox")));
            assert!(
                message.starts_with("invalid service name"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn missing_image_and_bad_constraints_are_refused_with_a_fix() {
        assert!(error_of(check_service_spec(&spec("web", " "))).contains("has no image"));
        let mut constrained = spec("web", "busybox");
        constrained.task.as_mut().unwrap().placement = Some(Box::new(Placement {
            constraints: vec!["node.role = manager".to_owned()],
            ..Default::default()
        }));
        let message = error_of(check_service_spec(&constrained));
        assert!(message.starts_with("invalid constraint:"), "{message}");
    }

    #[test]
    fn update_configs_need_a_ratio_between_0_and_1_and_no_rollback_of_a_rollback() {
        let mut bad_ratio = spec("web", "busybox");
        bad_ratio.update = Some(UpdateConfig {
            max_failure_ratio: 1.5,
            ..UpdateConfig::default()
        });
        assert!(error_of(check_service_spec(&bad_ratio)).contains("between 0 and 1"));
        let mut rollback_of_rollback = spec("web", "busybox");
        let mut config = UpdateConfig::default();
        config.set_failure_action(update_config::FailureAction::Rollback);
        rollback_of_rollback.rollback = Some(config);
        assert!(error_of(check_service_spec(&rollback_of_rollback)).contains("pause or continue"));
        rollback_of_rollback.rollback = None;
        rollback_of_rollback.update = Some(config);
        assert!(check_service_spec(&rollback_of_rollback).is_ok());
    }

    #[test]
    fn updates_keep_name_and_mode() {
        let current = spec("web", "busybox");
        check_service_update(&current, &spec("web", "busybox:2")).unwrap();
        assert!(
            error_of(check_service_update(&current, &spec("web2", "busybox")))
                .starts_with("renaming services is not supported")
        );
        let mut global = spec("web", "busybox");
        global.mode = Some(service_spec::Mode::Global(GlobalService {}));
        assert!(
            error_of(check_service_update(&current, &global))
                .starts_with("service mode change is not allowed (replicated to global)")
        );
    }

    #[test]
    fn generated_names_are_valid_service_names() {
        for random in [0, 1, 19, 20, 399, u64::MAX] {
            spec::validate::service_name(&generated_service_name(random)).unwrap();
        }
    }

    #[test]
    fn an_update_keeps_the_virtual_ips_the_allocator_gave() {
        let mut service = new_service("svc".into(), spec("web", "busybox"));
        service.endpoint = Some(Endpoint {
            virtual_ips: vec![api::endpoint::VirtualIp {
                network_id: "net".into(),
                addr: "10.0.0.2/24".into(),
            }],
            ..Default::default()
        });
        let updated = respec(&service, spec("web", "nginx")).unwrap();
        assert_eq!(
            updated.endpoint.unwrap().virtual_ips,
            service.endpoint.unwrap().virtual_ips
        );
    }
}
