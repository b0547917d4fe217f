//! The rules a service spec must follow before it is stored, and the changes an update may
//! make. Pure: the control API calls these before writing anything.

use scheduler::{Constraint, SpreadPreference};
use shoal_proto::api::{
    Endpoint, JobStatus, Service, ServiceSpec, UpdateConfig, Version, mount, placement,
    service_spec, task_spec, update_config,
};

use crate::error::ManagerError;
use crate::objects::ClusterObject;
use crate::orchestrator::spec_version_of_service;

/// Docker's limit for a service name: a DNS label.
const MAX_SERVICE_NAME_LENGTH: usize = 63;

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

/// Checks a service name as docker does: letters, digits, '-' and '_', starting and ending
/// with a letter or digit, at most 63 characters.
pub(crate) fn check_service_name(name: &str) -> Result<(), ManagerError> {
    let valid_characters = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    let valid_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if name.len() > MAX_SERVICE_NAME_LENGTH || !valid_characters || !valid_ends {
        return Err(invalid(format!(
            "invalid service name {name:?}: use at most {MAX_SERVICE_NAME_LENGTH} letters, digits, '-' or '_', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// Checks everything about a spec that does not depend on other objects.
pub(crate) fn check_service_spec(spec: &ServiceSpec) -> Result<(), ManagerError> {
    let name = spec
        .annotations
        .as_ref()
        .map_or("", |annotations| annotations.name.as_str());
    check_service_name(name)?;
    if spec.mode.is_none() {
        return Err(invalid(
            "the service has no mode: choose replicated, global, replicated-job or global-job"
                .to_owned(),
        ));
    }
    let task = spec.task.as_ref().ok_or_else(|| {
        invalid("the service has no task template: give at least an image".to_owned())
    })?;
    let Some(task_spec::Runtime::Container(container)) = task.runtime.as_ref() else {
        return Err(invalid(
            "the service's task runs no container: give an image".to_owned(),
        ));
    };
    if container.image.trim().is_empty() {
        return Err(invalid(
            "the service has no image: give one, as in 'shoal service create busybox'".to_owned(),
        ));
    }
    if let Some(placement) = task.placement.as_ref() {
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
    if let Some(resources) = task.resources.as_ref() {
        for (which, resources) in [
            ("limit", resources.limits.as_ref()),
            ("reservation", resources.reservations.as_ref()),
        ] {
            let Some(resources) = resources else { continue };
            if resources.nano_cpus < 0 || resources.memory_bytes < 0 {
                return Err(invalid(format!(
                    "a negative CPU or memory {which}: give 0 (none) or more"
                )));
            }
        }
    }
    for duration in [
        container.stop_grace_period.as_ref(),
        task.restart
            .as_ref()
            .and_then(|restart| restart.delay.as_ref()),
        task.restart
            .as_ref()
            .and_then(|restart| restart.window.as_ref()),
    ]
    .into_iter()
    .flatten()
    {
        if duration.seconds < 0 || duration.nanos < 0 {
            return Err(invalid(
                "a negative duration: durations must be 0 or more".to_owned(),
            ));
        }
    }
    check_update_config("update", spec.update.as_ref())?;
    check_update_config("rollback", spec.rollback.as_ref())?;
    for mount in &container.mounts {
        if !mount.target.starts_with('/') {
            return Err(invalid(format!(
                "mount target {:?} is not an absolute path: give a path inside the container such as /data",
                mount.target
            )));
        }
        if mount.r#type() == mount::Type::Bind && !mount.source.starts_with('/') {
            return Err(invalid(format!(
                "bind mount source {:?} is not an absolute path: give a host path such as /srv/data",
                mount.source
            )));
        }
    }
    Ok(())
}

/// An update or rollback config: durations of 0 or more, a ratio between 0 and 1, and no
/// rollback of a rollback.
fn check_update_config(which: &str, config: Option<&UpdateConfig>) -> Result<(), ManagerError> {
    let Some(config) = config else {
        return Ok(());
    };
    for (setting, duration) in [("delay", &config.delay), ("monitor", &config.monitor)] {
        if duration
            .as_ref()
            .is_some_and(|duration| duration.seconds < 0 || duration.nanos < 0)
        {
            return Err(invalid(format!(
                "a negative {which} {setting}: give 0 or more, e.g. --{which}-{setting} 5s"
            )));
        }
    }
    if !(0.0..=1.0).contains(&config.max_failure_ratio) {
        return Err(invalid(format!(
            "{which} max failure ratio {} is out of range: give a share between 0 and 1, e.g. 0.2",
            config.max_failure_ratio
        )));
    }
    if which == "rollback" && config.failure_action() == update_config::FailureAction::Rollback {
        return Err(invalid(
            "a rollback can't itself roll back on failure: use pause or continue".to_owned(),
        ));
    }
    Ok(())
}

fn mode_name(mode: Option<&service_spec::Mode>) -> &'static str {
    match mode {
        Some(service_spec::Mode::Replicated(_)) => "replicated",
        Some(service_spec::Mode::Global(_)) => "global",
        Some(service_spec::Mode::ReplicatedJob(_)) => "replicated-job",
        Some(service_spec::Mode::GlobalJob(_)) => "global-job",
        None => "none",
    }
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

/// Sets the service's endpoint to what its spec asks (the ports it publishes).
pub(crate) fn refresh_endpoint(service: &mut Service) {
    service.endpoint = service
        .spec
        .as_ref()
        .and_then(|spec| spec.endpoint.clone())
        .map(|endpoint| Endpoint {
            ports: endpoint.ports.clone(),
            spec: Some(endpoint),
            ..Default::default()
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
        Annotations, ContainerSpec, GlobalService, Placement, ReplicatedService, TaskSpec,
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
        constrained.task.as_mut().unwrap().placement = Some(Placement {
            constraints: vec!["node.role = manager".to_owned()],
            ..Default::default()
        });
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
            check_service_name(&generated_service_name(random)).unwrap();
        }
    }
}
