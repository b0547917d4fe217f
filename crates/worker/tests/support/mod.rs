//! Helpers shared by the reconciler tests: task builders, event shorthands and a one-line
//! rendering of commands so that scenarios read as "events in, exact commands out".

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use engine::HealthStatus;
use shoal_proto::api;
use shoal_proto::api::TaskState;
use worker::{
    AssignmentSet, Command, CommandOutcome, ContainerRunState, EngineObservation, Event,
    ExistingContainer, LABEL_TASK_ID, TaskPayloads, container_spec_for_task, task_networks,
};

pub(crate) fn task(id: &str, slot: u64, desired: TaskState) -> api::Task {
    api::Task {
        id: id.to_owned(),
        service_id: "svc".to_owned(),
        node_id: "node1".to_owned(),
        slot,
        service_annotations: Some(api::Annotations {
            name: "web".to_owned(),
            ..api::Annotations::default()
        }),
        spec: Some(api::TaskSpec {
            runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                image: "busybox".to_owned(),
                ..api::ContainerSpec::default()
            })),
            ..api::TaskSpec::default()
        }),
        desired_state: desired as i32,
        status: Some(api::TaskStatus {
            state: TaskState::Assigned as i32,
            ..api::TaskStatus::default()
        }),
        ..api::Task::default()
    }
}

pub(crate) fn with_container(
    mut task: api::Task,
    change: impl FnOnce(&mut api::ContainerSpec),
) -> api::Task {
    if let Some(api::task_spec::Runtime::Container(container)) =
        task.spec.as_mut().and_then(|spec| spec.runtime.as_mut())
    {
        change(container);
    }
    task
}

pub(crate) fn with_healthcheck(task: api::Task) -> api::Task {
    with_container(task, |container| {
        container.healthcheck = Some(Box::new(api::HealthConfig {
            test: vec!["CMD".to_owned(), "true".to_owned()],
            ..api::HealthConfig::default()
        }));
    })
}

/// The overlay network `front` (net1), allocated as the managers' allocator leaves it: subnet
/// 10.0.1.0/24 with gateway 10.0.1.1 and VXLAN id 4097.
pub(crate) fn front_network() -> api::Network {
    api::Network {
        id: "net1".to_owned(),
        spec: Some(api::NetworkSpec {
            annotations: Some(api::Annotations {
                name: "front".to_owned(),
                ..api::Annotations::default()
            }),
            driver_config: Some(api::Driver {
                name: "overlay".to_owned(),
                ..api::Driver::default()
            }),
            ..api::NetworkSpec::default()
        }),
        driver_state: Some(api::Driver {
            name: "overlay".to_owned(),
            options: [(
                spec::network::VXLAN_ID_LIST_OPTION.to_owned(),
                "4097".to_owned(),
            )]
            .into(),
        }),
        ipam: Some(api::IpamOptions {
            driver: None,
            configs: vec![api::IpamConfig {
                family: api::ipam_config::AddressFamily::Ipv4 as i32,
                subnet: "10.0.1.0/24".to_owned(),
                gateway: "10.0.1.1".to_owned(),
                ..api::IpamConfig::default()
            }],
        }),
        ..api::Network::default()
    }
}

/// The task on `front`, allocated: an address from its slot (10.0.1.<10 + slot>) and the
/// service's VIP 10.0.1.2.
pub(crate) fn on_front_network(mut task: api::Task) -> api::Task {
    let octet = 10 + task.slot % 240;
    if let Some(spec) = task.spec.as_mut() {
        spec.networks.push(api::NetworkAttachmentConfig {
            target: "net1".to_owned(),
            ..api::NetworkAttachmentConfig::default()
        });
    }
    task.networks.push(api::NetworkAttachment {
        network: Some(front_network()),
        addresses: vec![format!("10.0.1.{octet}/24")],
        ..api::NetworkAttachment::default()
    });
    task.endpoint = Some(api::Endpoint {
        spec: Some(api::EndpointSpec::default()),
        ports: Vec::new(),
        virtual_ips: vec![api::endpoint::VirtualIp {
            network_id: "net1".to_owned(),
            addr: "10.0.1.2/24".to_owned(),
        }],
    });
    task
}

pub(crate) fn assign(version: u64, tasks: Vec<api::Task>) -> Event {
    Event::Assignments(AssignmentSet {
        version,
        tasks,
        payloads: TaskPayloads::default(),
    })
}

pub(crate) fn listed(containers: Vec<ExistingContainer>) -> Event {
    Event::ContainersListed(containers)
}

pub(crate) fn existing(
    task_id: &str,
    container_id: &str,
    run_state: ContainerRunState,
) -> ExistingContainer {
    ExistingContainer {
        container_id: container_id.to_owned(),
        labels: BTreeMap::from([(LABEL_TASK_ID.to_owned(), task_id.to_owned())]),
        run_state,
        health: None,
        pid: None,
    }
}

pub(crate) fn created(task_id: &str, container_id: &str) -> Event {
    Event::CommandFinished(CommandOutcome::CreateFinished {
        task_id: task_id.to_owned(),
        result: Ok(container_id.to_owned()),
    })
}

pub(crate) fn create_failed(task_id: &str, error: &str) -> Event {
    Event::CommandFinished(CommandOutcome::CreateFinished {
        task_id: task_id.to_owned(),
        result: Err(error.to_owned()),
    })
}

pub(crate) fn start_finished(task_id: &str) -> Event {
    Event::CommandFinished(CommandOutcome::StartFinished {
        task_id: task_id.to_owned(),
        result: Ok(None),
    })
}

pub(crate) fn started_with_pid(task_id: &str, pid: i32) -> Event {
    Event::CommandFinished(CommandOutcome::StartFinished {
        task_id: task_id.to_owned(),
        result: Ok(Some(pid)),
    })
}

pub(crate) fn start_failed(task_id: &str, error: &str) -> Event {
    Event::CommandFinished(CommandOutcome::StartFinished {
        task_id: task_id.to_owned(),
        result: Err(error.to_owned()),
    })
}

pub(crate) fn stop_finished(task_id: &str) -> Event {
    Event::CommandFinished(CommandOutcome::StopFinished {
        task_id: task_id.to_owned(),
        result: Ok(()),
    })
}

pub(crate) fn stop_failed(task_id: &str) -> Event {
    Event::CommandFinished(CommandOutcome::StopFinished {
        task_id: task_id.to_owned(),
        result: Err("stop timed out".to_owned()),
    })
}

pub(crate) fn remove_finished(task_id: &str, container_id: &str) -> Event {
    Event::CommandFinished(CommandOutcome::RemoveFinished {
        task_id: task_id.to_owned(),
        container_id: container_id.to_owned(),
        result: Ok(()),
    })
}

pub(crate) fn report_finished(batch_id: u64, ok: bool) -> Event {
    Event::CommandFinished(CommandOutcome::ReportFinished {
        batch_id,
        result: if ok {
            Ok(())
        } else {
            Err("dispatcher unavailable".to_owned())
        },
    })
}

pub(crate) fn exited(container_id: &str, exit_code: i32, oom_killed: bool) -> Event {
    Event::Engine(EngineObservation::Exited {
        container_id: container_id.to_owned(),
        exit_code,
        oom_killed,
    })
}

pub(crate) fn started(container_id: &str) -> Event {
    Event::Engine(EngineObservation::Started {
        container_id: container_id.to_owned(),
    })
}

pub(crate) fn health(container_id: &str, health: HealthStatus) -> Event {
    Event::Engine(EngineObservation::HealthChanged {
        container_id: container_id.to_owned(),
        health,
    })
}

pub(crate) fn missing(container_id: &str) -> Event {
    Event::Engine(EngineObservation::Missing {
        container_id: container_id.to_owned(),
    })
}

pub(crate) fn tick(seconds: u64) -> Event {
    Event::Tick {
        now_since_unix_epoch: Duration::from_secs(seconds),
    }
}

pub(crate) fn state_name(state: i32) -> String {
    TaskState::try_from(state)
        .map(|state| {
            state
                .as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("STATE_{state}"))
}

/// One line per command. Creation is checked against the conversion of the task it names, so
/// the line only needs the container name.
pub(crate) fn render(command: &Command, tasks: &BTreeMap<String, api::Task>) -> String {
    match command {
        Command::CreateContainer {
            task_id,
            spec,
            networks,
        } => {
            if let Some(task) = tasks.get(task_id) {
                let expected = container_spec_for_task(task, &TaskPayloads::default(), "")
                    .expect("tasks of scenarios convert");
                assert_eq!(**spec, expected, "create spec of {task_id}");
                let expected = task_networks(task, "").expect("tasks of scenarios convert");
                assert_eq!(
                    networks.as_deref(),
                    expected.as_ref(),
                    "networks of {task_id}"
                );
            }
            let on_networks = if networks.is_some() {
                " with networks"
            } else {
                ""
            };
            format!(
                "create {task_id} {}{on_networks}",
                spec.name.clone().unwrap_or_default()
            )
        }
        Command::SetNetworkEndpoints(endpoints) => {
            let entries: Vec<String> = endpoints
                .iter()
                .map(|(task_id, endpoint)| {
                    assert_eq!(&endpoint.networks.task_id, task_id);
                    if let Some(task) = tasks.get(task_id) {
                        let expected = task_networks(task, "").expect("tasks of scenarios convert");
                        assert_eq!(Some(&endpoint.networks), expected.as_ref());
                    }
                    if endpoint.serving {
                        format!("{task_id} serving")
                    } else {
                        task_id.clone()
                    }
                })
                .collect();
            format!("endpoints [{}]", entries.join(", "))
        }
        Command::StartContainer {
            task_id,
            container_id,
        } => format!("start {task_id} {container_id}"),
        Command::StopContainer {
            task_id,
            container_id,
            grace_period,
        } => format!("stop {task_id} {container_id} {}s", grace_period.as_secs()),
        Command::RemoveContainer {
            task_id,
            container_id,
        } => format!("remove {task_id} {container_id}"),
        Command::PersistAssignments(persisted) => {
            let tasks: Vec<String> = persisted.tasks.iter().map(|task| task.id.clone()).collect();
            format!(
                "persist v{} [{}]",
                persisted.assignment_version,
                tasks.join(" ")
            )
        }
        Command::ReportStatuses { batch_id, statuses } => {
            let entries: Vec<String> = statuses
                .iter()
                .map(|(task_id, status)| render_status(task_id, status))
                .collect();
            format!("report #{batch_id} {}", entries.join(", "))
        }
    }
}

pub(crate) fn render_status(task_id: &str, status: &api::TaskStatus) -> String {
    let mut line = format!(
        "{task_id}={} {:?}",
        state_name(status.state),
        status.message
    );
    if !status.err.is_empty() {
        line.push_str(&format!(" err={:?}", status.err));
    }
    if let Some(api::task_status::RuntimeStatus::Container(container)) = &status.runtime_status {
        line.push_str(&format!(" ctr={}", container.container_id));
        if container.exit_code != 0 {
            line.push_str(&format!(" exit={}", container.exit_code));
        }
    }
    line
}
