//! Swarm's defaults, stated once (and the ingress network `swarm init` makes). The manager fills
//! the service-level ones into every service spec it stores, so `service inspect` shows the same
//! settings however the service was made (`service create`, `stack deploy`, the Docker API); the
//! task-level ones stay unset, as in Docker, and the orchestrators and workers read them where
//! they apply.

use std::time::Duration;

use shoal_proto::api;

use crate::enums::ModeName;
use crate::time::proto_duration;

/// The pause before a replacement task starts.
pub const RESTART_DELAY: Duration = Duration::from_secs(5);
/// How long an updated task is watched for failure.
pub const UPDATE_MONITOR: Duration = Duration::from_secs(5);
/// A service's mode when its spec or compose file names none.
pub const MODE: ModeName = ModeName::Replicated;
/// Tasks of a replicated service (or completions of a replicated job) when none are given.
pub const REPLICAS: u64 = 1;
/// Tasks an update replaces at once.
pub const UPDATE_PARALLELISM: u64 = 1;
/// The owner and mode of a secret or config file in a container when the reference gives none:
/// root's, readable by everyone.
pub const FILE_UID: &str = "0";
pub const FILE_GID: &str = "0";
pub const FILE_MODE: u32 = 0o444;
/// Docker's healthcheck timing for what a healthcheck leaves unset: a check every 30 s, each
/// given 30 s, and three failures in a row before the container is unhealthy.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(30);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
pub const HEALTH_RETRIES: u32 = 3;
/// The pool overlay subnets are cut from, and their size.
pub const ADDRESS_POOL: &str = "10.0.0.0/8";
pub const SUBNET_SIZE: u32 = 24;
/// The routing mesh's network, which `swarm init` makes: its name and, when the swarm uses the
/// default address pool, its subnet (Docker's), kept out of what the pool hands other networks.
pub const INGRESS_NETWORK_NAME: &str = "ingress";
pub const INGRESS_SUBNET: &str = "10.0.0.0/24";
/// VXLAN's IANA port: the data path port when the cluster sets none (its `vxlan_udp_port` is 0).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// The time between a container's stop signal and SIGKILL when its spec sets none.
pub const STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Ended tasks kept per slot.
pub const TASK_HISTORY_LIMIT: i64 = 5;
/// How often the leader rotates the network keys (gossip and IPsec): Docker's keymanager period.
pub const NETWORK_KEY_ROTATION_INTERVAL: Duration = Duration::from_secs(12 * 60 * 60);

/// The VXLAN UDP port a cluster's overlays use: its `vxlan_udp_port`, or [`DEFAULT_VXLAN_PORT`]
/// when that is 0 (unset). `None` for a number that is no UDP port.
pub fn vxlan_port(cluster_port: u32) -> Option<u16> {
    match cluster_port {
        0 => Some(DEFAULT_VXLAN_PORT),
        port => u16::try_from(port).ok(),
    }
}

/// Swarm's restart policy: condition any, 5 s delay, unlimited attempts, no window.
pub fn restart_policy() -> api::RestartPolicy {
    api::RestartPolicy {
        condition: api::restart_policy::RestartCondition::Any as i32,
        delay: Some(proto_duration(RESTART_DELAY)),
        max_attempts: 0,
        window: None,
    }
}

/// Swarm's update and rollback config: one task at a time, no delay, pause on failure, monitor
/// 5 s, no failures tolerated, stop-first.
pub fn update_config() -> api::UpdateConfig {
    api::UpdateConfig {
        parallelism: UPDATE_PARALLELISM,
        delay: None,
        failure_action: api::update_config::FailureAction::Pause as i32,
        monitor: Some(proto_duration(UPDATE_MONITOR)),
        max_failure_ratio: 0.0,
        order: api::update_config::UpdateOrder::StopFirst as i32,
    }
}

/// Fills Swarm's service-level defaults into what `spec` leaves unset: its update and rollback
/// configs and its endpoint. What the spec sets is kept as it is; filling twice changes
/// nothing. The task's restart policy stays unset: tasks copy the task spec, and Docker's tasks
/// show only the policy the user gave.
pub fn apply_service_defaults(spec: &mut api::ServiceSpec) {
    spec.update.get_or_insert_with(update_config);
    spec.rollback.get_or_insert_with(update_config);
    spec.endpoint.get_or_insert_with(Default::default);
}

/// Every default a spec leaves to the swarm, the stored ones ([`apply_service_defaults`]) and
/// those read where they apply: what Docker's `insertDefaults` shows (SwarmKit's
/// `InterpolateService`), which `service inspect` asks for. Besides whole settings, a restart
/// policy without a delay gets the default delay, and an update or rollback config without a
/// monitor period the default one; empty DNS, resource and placement settings read as none.
pub fn insert_service_defaults(spec: &mut api::ServiceSpec) {
    apply_service_defaults(spec);
    for config in [spec.update.as_mut(), spec.rollback.as_mut()]
        .into_iter()
        .flatten()
    {
        config
            .monitor
            .get_or_insert_with(|| proto_duration(UPDATE_MONITOR));
    }
    let Some(task) = spec.task.as_mut() else {
        return;
    };
    task.restart
        .get_or_insert_with(restart_policy)
        .delay
        .get_or_insert_with(|| proto_duration(RESTART_DELAY));
    task.resources.get_or_insert_with(Default::default);
    task.placement.get_or_insert_with(Default::default);
    if let Some(api::task_spec::Runtime::Container(container)) = task.runtime.as_mut() {
        container
            .stop_grace_period
            .get_or_insert_with(|| proto_duration(STOP_GRACE_PERIOD));
        container.dns_config.get_or_insert_with(Default::default);
    }
}

/// Fills the overlay driver into a network spec that names none: swarm networks have no other.
pub fn apply_network_defaults(spec: &mut api::NetworkSpec) {
    let driver = spec.driver_config.get_or_insert_with(Default::default);
    if driver.name.is_empty() {
        driver.name = crate::network::OVERLAY_DRIVER.to_owned();
    }
}

/// The ingress network `swarm init` makes: an overlay marked `ingress`, on [`INGRESS_SUBNET`]
/// when the swarm uses the default address pool (`default_pool`), otherwise on the first subnet
/// its own pools give, as Docker carves it.
pub fn ingress_network_spec(default_pool: bool) -> api::NetworkSpec {
    let mut spec = api::NetworkSpec {
        annotations: Some(api::Annotations {
            name: INGRESS_NETWORK_NAME.to_owned(),
            ..Default::default()
        }),
        ingress: true,
        ipam: default_pool.then(|| api::IpamOptions {
            driver: None,
            configs: vec![api::IpamConfig {
                subnet: INGRESS_SUBNET.to_owned(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    };
    apply_network_defaults(&mut spec);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_port_zero_is_the_default() {
        assert_eq!(vxlan_port(0), Some(4789));
        assert_eq!(vxlan_port(7789), Some(7789));
        assert_eq!(vxlan_port(70000), None);
    }

    #[test]
    fn defaults_fill_only_what_is_unset_and_twice_is_once() {
        let mut spec = api::ServiceSpec {
            task: Some(api::TaskSpec::default()),
            rollback: Some(api::UpdateConfig {
                parallelism: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        apply_service_defaults(&mut spec);
        let task = spec.task.clone().unwrap_or_default();
        assert_eq!(
            task.restart, None,
            "tasks copy the task spec: no policy the user did not give"
        );
        assert_eq!(spec.update, Some(update_config()));
        assert_eq!(spec.rollback.as_ref().map(|r| r.parallelism), Some(3));
        assert_eq!(spec.endpoint, Some(api::EndpointSpec::default()));
        let once = spec.clone();
        apply_service_defaults(&mut spec);
        assert_eq!(spec, once);
        assert_eq!(
            update_config().monitor,
            Some(api::Duration {
                seconds: 5,
                nanos: 0
            })
        );
    }

    #[test]
    fn inserted_defaults_add_the_stop_grace_period_a_spec_leaves_out() {
        let container = |grace: Option<u64>| api::ServiceSpec {
            task: Some(api::TaskSpec {
                runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                    stop_grace_period: grace
                        .map(|seconds| proto_duration(Duration::from_secs(seconds))),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let grace_of = |spec: &api::ServiceSpec| match spec.task.as_ref()?.runtime.as_ref()? {
            api::task_spec::Runtime::Container(container) => container.stop_grace_period,
            _ => None,
        };
        let mut unset = container(None);
        insert_service_defaults(&mut unset);
        assert_eq!(grace_of(&unset), Some(proto_duration(STOP_GRACE_PERIOD)));
        assert_eq!(unset.update, Some(update_config()));
        assert_eq!(
            unset.task.as_ref().and_then(|task| task.restart),
            Some(restart_policy())
        );
        let task = unset.task.clone().unwrap_or_default();
        assert!(task.resources.is_some() && task.placement.is_some());
        let mut partial = container(None);
        partial.update = Some(api::UpdateConfig {
            parallelism: 2,
            ..Default::default()
        });
        if let Some(task) = partial.task.as_mut() {
            task.restart = Some(api::RestartPolicy::default());
        }
        insert_service_defaults(&mut partial);
        let update = partial.update.unwrap_or_default();
        assert_eq!(
            (update.parallelism, update.monitor),
            (2, Some(proto_duration(UPDATE_MONITOR)))
        );
        let restart = partial
            .task
            .and_then(|task| task.restart)
            .unwrap_or_default();
        assert_eq!(restart.delay, Some(proto_duration(RESTART_DELAY)));
        let mut set = container(Some(3));
        insert_service_defaults(&mut set);
        assert_eq!(grace_of(&set), Some(proto_duration(Duration::from_secs(3))));
    }
}
