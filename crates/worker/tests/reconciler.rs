//! Table-driven reconciler scenarios (events in, exact commands out) and restart re-adoption.

mod support;

use std::collections::BTreeMap;

use engine::HealthStatus;
use shoal_proto::api;
use shoal_proto::api::TaskState;
use support::*;
use worker::{AssignmentStore, Command, ContainerRunState, Event, Reconciler};

struct Scenario {
    name: &'static str,
    /// Each event with the exact commands it must produce, rendered by `support::render`.
    steps: Vec<(Event, Vec<&'static str>)>,
}

fn tasks_named_in(event: &Event, known: &mut BTreeMap<String, api::Task>) {
    if let Event::Assignments(set) = event {
        for task in &set.tasks {
            known.insert(task.id.clone(), task.clone());
        }
    }
}

fn run(scenario: Scenario) {
    let mut reconciler = Reconciler::new();
    let mut known_tasks = BTreeMap::new();
    for (index, (event, expected)) in scenario.steps.into_iter().enumerate() {
        tasks_named_in(&event, &mut known_tasks);
        let rendered: Vec<String> = reconciler
            .step(event.clone())
            .iter()
            .map(|command| render(command, &known_tasks))
            .collect();
        assert_eq!(
            rendered, expected,
            "scenario {:?}, step {index}: {event:?}",
            scenario.name
        );
    }
}

/// The steps that bring t1 (slot 1) to RUNNING in container c1, reports numbered from 1.
fn t1_to_running() -> Vec<(Event, Vec<&'static str>)> {
    vec![
        (listed(vec![]), vec!["endpoints []"]),
        (
            assign(1, vec![task("t1", 1, TaskState::Running)]),
            vec![
                "create t1 web.1.t1",
                "persist v1 [t1]",
                "report #1 t1=PREPARING \"preparing\"",
            ],
        ),
        (
            created("t1", "c1"),
            vec![
                "start t1 c1",
                "persist v1 [t1]",
                "report #2 t1=STARTING \"starting\" ctr=c1",
            ],
        ),
        (
            start_finished("t1"),
            vec!["persist v1 [t1]", "report #3 t1=RUNNING \"started\" ctr=c1"],
        ),
    ]
}

fn then(
    mut steps: Vec<(Event, Vec<&'static str>)>,
    more: Vec<(Event, Vec<&'static str>)>,
) -> Vec<(Event, Vec<&'static str>)> {
    steps.extend(more);
    steps
}

#[test]
fn reconciler_scenarios() {
    let scenarios = vec![
        Scenario {
            name: "a running task goes through PREPARING, STARTING and RUNNING",
            steps: t1_to_running(),
        },
        Scenario {
            name: "nothing is created before the engine's containers are listed",
            steps: vec![
                (
                    assign(1, vec![task("t1", 1, TaskState::Running)]),
                    vec!["persist v1 [t1]"],
                ),
                (
                    listed(vec![]),
                    vec![
                        "endpoints []",
                        "create t1 web.1.t1",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
            ],
        },
        Scenario {
            name: "stale and repeated assignment sets are dropped",
            steps: then(
                t1_to_running(),
                vec![
                    (assign(1, vec![]), vec![]),
                    (assign(0, vec![]), vec![]),
                    (tick(5), vec![]),
                ],
            ),
        },
        Scenario {
            name: "exit 0 completes, and the started event racing the start result changes nothing",
            steps: then(
                t1_to_running(),
                vec![
                    (started("c1"), vec![]),
                    (
                        exited("c1", 0, false),
                        vec![
                            "persist v1 [t1]",
                            "report #4 t1=COMPLETE \"finished\" ctr=c1",
                        ],
                    ),
                    (tick(1), vec![]),
                ],
            ),
        },
        Scenario {
            name: "a non-zero exit fails the task and the worker does not restart it",
            steps: then(
                t1_to_running(),
                vec![
                    (
                        exited("c1", 3, false),
                        vec![
                            "persist v1 [t1]",
                            "report #4 t1=FAILED \"failed\" err=\"task: non-zero exit (3)\" ctr=c1 exit=3",
                        ],
                    ),
                    (tick(1), vec![]),
                    (started("c1"), vec![]),
                ],
            ),
        },
        Scenario {
            name: "an OOM kill says so",
            steps: then(
                t1_to_running(),
                vec![(
                    exited("c1", 137, true),
                    vec![
                        "persist v1 [t1]",
                        "report #4 t1=FAILED \"failed\" err=\"task: non-zero exit (137): killed by the kernel's out-of-memory killer\" ctr=c1 exit=137",
                    ],
                )],
            ),
        },
        Scenario {
            name: "desired SHUTDOWN stops with the grace period, keeps the container until unassigned",
            steps: then(
                t1_to_running(),
                vec![
                    (
                        assign(
                            2,
                            vec![with_container(
                                task("t1", 1, TaskState::Shutdown),
                                |container| {
                                    container.stop_grace_period = Some(api::Duration {
                                        seconds: 30,
                                        nanos: 0,
                                    });
                                },
                            )],
                        ),
                        vec!["stop t1 c1 30s", "persist v2 [t1]"],
                    ),
                    // The exit caused by the stop is not a failure.
                    (exited("c1", 143, false), vec![]),
                    (
                        stop_finished("t1"),
                        vec![
                            "persist v2 [t1]",
                            "report #4 t1=SHUTDOWN \"shutdown\" ctr=c1 exit=143",
                        ],
                    ),
                    (assign(3, vec![]), vec!["remove t1 c1", "persist v3 []"]),
                    (remove_finished("t1", "c1"), vec![]),
                ],
            ),
        },
        Scenario {
            name: "a task dropped from the set is stopped and removed, and no longer reported",
            steps: then(
                t1_to_running(),
                vec![
                    (assign(2, vec![]), vec!["stop t1 c1 10s", "persist v2 []"]),
                    (stop_finished("t1"), vec!["remove t1 c1"]),
                    (remove_finished("t1", "c1"), vec![]),
                    (exited("c1", 0, false), vec![]),
                ],
            ),
        },
        Scenario {
            name: "a task dropped while its create is in flight is removed once created",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![task("t1", 1, TaskState::Running)]),
                    vec![
                        "create t1 web.1.t1",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (assign(2, vec![]), vec!["persist v2 []"]),
                (created("t1", "c1"), vec!["remove t1 c1"]),
                (remove_finished("t1", "c1"), vec![]),
            ],
        },
        Scenario {
            name: "a healthchecked task stays STARTING until healthy, and fails when unhealthy",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![with_healthcheck(task("t1", 1, TaskState::Running))]),
                    vec![
                        "create t1 web.1.t1",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (
                    created("t1", "c1"),
                    vec![
                        "start t1 c1",
                        "persist v1 [t1]",
                        "report #2 t1=STARTING \"starting\" ctr=c1",
                    ],
                ),
                (start_finished("t1"), vec![]),
                (health("c1", HealthStatus::Starting), vec![]),
                (
                    health("c1", HealthStatus::Healthy),
                    vec!["persist v1 [t1]", "report #3 t1=RUNNING \"started\" ctr=c1"],
                ),
                (
                    health("c1", HealthStatus::Unhealthy),
                    vec![
                        "stop t1 c1 10s",
                        "persist v1 [t1]",
                        "report #4 t1=FAILED \"failed\" err=\"task: unhealthy container\" ctr=c1",
                    ],
                ),
                (stop_finished("t1"), vec![]),
                (exited("c1", 137, false), vec![]),
            ],
        },
        Scenario {
            name: "a spec the engine can't run is REJECTED without a create",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(
                        1,
                        vec![with_container(
                            task("t1", 1, TaskState::Running),
                            |container| {
                                container.tty = true;
                            },
                        )],
                    ),
                    vec![
                        "persist v1 [t1]",
                        "report #1 t1=REJECTED \"rejected\" err=\"task t1 rejected: this node's engine does not support tty; remove them from the service spec\"",
                    ],
                ),
            ],
        },
        Scenario {
            name: "a failed create is REJECTED and never retried",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![task("t1", 1, TaskState::Running)]),
                    vec![
                        "create t1 web.1.t1",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (
                    create_failed("t1", "no such image: busybox"),
                    vec![
                        "persist v1 [t1]",
                        "report #2 t1=REJECTED \"rejected\" err=\"no such image: busybox\"",
                    ],
                ),
                (tick(1), vec![]),
            ],
        },
        Scenario {
            name: "a failed start is FAILED",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![task("t1", 1, TaskState::Running)]),
                    vec![
                        "create t1 web.1.t1",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (
                    created("t1", "c1"),
                    vec![
                        "start t1 c1",
                        "persist v1 [t1]",
                        "report #2 t1=STARTING \"starting\" ctr=c1",
                    ],
                ),
                (
                    start_failed("t1", "exec: no such file"),
                    vec![
                        "persist v1 [t1]",
                        "report #3 t1=FAILED \"failed\" err=\"task: starting container failed: exec: no such file\" ctr=c1",
                    ],
                ),
            ],
        },
        Scenario {
            name: "desired READY prepares without starting; RUNNING later starts",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![task("t1", 1, TaskState::Ready)]),
                    vec![
                        "create t1 web.1.t1",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (
                    created("t1", "c1"),
                    vec!["persist v1 [t1]", "report #2 t1=READY \"prepared\" ctr=c1"],
                ),
                (
                    assign(2, vec![task("t1", 1, TaskState::Running)]),
                    vec![
                        "start t1 c1",
                        "persist v2 [t1]",
                        "report #3 t1=STARTING \"starting\" ctr=c1",
                    ],
                ),
            ],
        },
        Scenario {
            name: "desired SHUTDOWN before the container exists reports SHUTDOWN without creating",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![task("t1", 1, TaskState::Shutdown)]),
                    vec!["persist v1 [t1]", "report #1 t1=SHUTDOWN \"shutdown\""],
                ),
            ],
        },
        Scenario {
            name: "a container that vanishes fails its task",
            steps: then(
                t1_to_running(),
                vec![(
                    missing("c1"),
                    vec![
                        "persist v1 [t1]",
                        "report #4 t1=FAILED \"failed\" err=\"task: container is missing\"",
                    ],
                )],
            ),
        },
        Scenario {
            name: "a failed report is sent again on the next tick, not before",
            steps: then(
                t1_to_running(),
                vec![
                    (report_finished(3, false), vec![]),
                    (started("c1"), vec![]),
                    (
                        tick(10),
                        vec!["persist v1 [t1]", "report #4 t1=RUNNING \"started\" ctr=c1"],
                    ),
                    (report_finished(4, true), vec![]),
                    (tick(11), vec![]),
                ],
            ),
        },
        Scenario {
            name: "a failed stop is retried on the next tick",
            steps: then(
                t1_to_running(),
                vec![
                    (assign(2, vec![]), vec!["stop t1 c1 10s", "persist v2 []"]),
                    (stop_failed("t1"), vec![]),
                    (tick(1), vec!["stop t1 c1 10s"]),
                    (stop_finished("t1"), vec!["remove t1 c1"]),
                ],
            ),
        },
        Scenario {
            name: "an assignment's manager-side state is a floor the worker never reports below",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, {
                        let mut running_elsewhere = task("t1", 1, TaskState::Running);
                        running_elsewhere.status = Some(api::TaskStatus {
                            state: TaskState::Running as i32,
                            ..api::TaskStatus::default()
                        });
                        vec![running_elsewhere]
                    }),
                    vec![
                        "persist v1 [t1]",
                        "report #1 t1=FAILED \"failed\" err=\"task: container is missing\"",
                    ],
                ),
            ],
        },
    ];
    for scenario in scenarios {
        run(scenario);
    }
}

fn networked(id: &str, slot: u64, desired: TaskState) -> api::Task {
    on_front_network(task(id, slot, desired))
}

#[test]
fn networked_task_scenarios() {
    let scenarios = vec![
        Scenario {
            name: "a networked task serves once running, stops serving before its stop signal \
                   and leaves the set once its container has exited (kept for its history)",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![networked("t1", 1, TaskState::Running)]),
                    vec![
                        "endpoints [t1]",
                        "create t1 web.1.t1 with networks",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (
                    created("t1", "c1"),
                    vec![
                        "start t1 c1",
                        "persist v1 [t1]",
                        "report #2 t1=STARTING \"starting\" ctr=c1",
                    ],
                ),
                (
                    start_finished("t1"),
                    vec![
                        "endpoints [t1 serving]",
                        "persist v1 [t1]",
                        "report #3 t1=RUNNING \"started\" ctr=c1",
                    ],
                ),
                (started("c1"), vec![]),
                (
                    assign(2, vec![networked("t1", 1, TaskState::Shutdown)]),
                    vec!["endpoints [t1]", "stop t1 c1 10s", "persist v2 [t1]"],
                ),
                (
                    stop_finished("t1"),
                    vec![
                        "endpoints []",
                        "persist v2 [t1]",
                        "report #4 t1=SHUTDOWN \"shutdown\" ctr=c1",
                    ],
                ),
                (assign(3, vec![]), vec!["remove t1 c1", "persist v3 []"]),
                (remove_finished("t1", "c1"), vec![]),
                (tick(1), vec![]),
            ],
        },
        Scenario {
            name: "with a healthcheck a task serves only while healthy",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(
                        1,
                        vec![with_healthcheck(networked("t1", 1, TaskState::Running))],
                    ),
                    vec![
                        "endpoints [t1]",
                        "create t1 web.1.t1 with networks",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (
                    created("t1", "c1"),
                    vec![
                        "start t1 c1",
                        "persist v1 [t1]",
                        "report #2 t1=STARTING \"starting\" ctr=c1",
                    ],
                ),
                (start_finished("t1"), vec![]),
                (health("c1", HealthStatus::Starting), vec![]),
                (
                    health("c1", HealthStatus::Healthy),
                    vec![
                        "endpoints [t1 serving]",
                        "persist v1 [t1]",
                        "report #3 t1=RUNNING \"started\" ctr=c1",
                    ],
                ),
                (
                    health("c1", HealthStatus::Unhealthy),
                    vec![
                        "endpoints [t1]",
                        "stop t1 c1 10s",
                        "persist v1 [t1]",
                        "report #4 t1=FAILED \"failed\" err=\"task: unhealthy container\" ctr=c1",
                    ],
                ),
            ],
        },
        Scenario {
            name: "a failed create takes the task out of the set",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, vec![networked("t1", 1, TaskState::Running)]),
                    vec![
                        "endpoints [t1]",
                        "create t1 web.1.t1 with networks",
                        "persist v1 [t1]",
                        "report #1 t1=PREPARING \"preparing\"",
                    ],
                ),
                (
                    create_failed("t1", "preparing the task's networks failed: no VTEP"),
                    vec![
                        "endpoints []",
                        "persist v1 [t1]",
                        "report #2 t1=REJECTED \"rejected\" \
                         err=\"preparing the task's networks failed: no VTEP\"",
                    ],
                ),
            ],
        },
        Scenario {
            name: "a task whose networks were not allocated is rejected and never in the set",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(1, {
                        let mut unallocated = networked("t1", 1, TaskState::Running);
                        unallocated.networks.clear();
                        vec![unallocated]
                    }),
                    vec![
                        "persist v1 [t1]",
                        "report #1 t1=REJECTED \"rejected\" err=\"task t1 rejected: the task \
                         names networks but carries no addresses on them: the managers did not \
                         allocate it; check the service's networks with 'shoal network ls' and \
                         update the service to recreate its tasks\"",
                    ],
                ),
            ],
        },
        Scenario {
            name: "tasks without networks are never in the set",
            steps: vec![
                (listed(vec![]), vec!["endpoints []"]),
                (
                    assign(
                        1,
                        vec![
                            task("t1", 1, TaskState::Running),
                            networked("t2", 2, TaskState::Ready),
                        ],
                    ),
                    vec![
                        "endpoints [t2]",
                        "create t1 web.1.t1",
                        "create t2 web.2.t2 with networks",
                        "persist v1 [t1 t2]",
                        "report #1 t1=PREPARING \"preparing\", t2=PREPARING \"preparing\"",
                    ],
                ),
                (
                    created("t1", "c1"),
                    vec![
                        "start t1 c1",
                        "persist v1 [t1 t2]",
                        "report #2 t1=STARTING \"starting\" ctr=c1",
                    ],
                ),
                (
                    start_finished("t1"),
                    vec![
                        "persist v1 [t1 t2]",
                        "report #3 t1=RUNNING \"started\" ctr=c1",
                    ],
                ),
                // Prepared but not asked to run: in the set, not serving.
                (
                    created("t2", "c2"),
                    vec![
                        "persist v1 [t1 t2]",
                        "report #4 t2=READY \"prepared\" ctr=c2",
                    ],
                ),
            ],
        },
    ];
    for scenario in scenarios {
        run(scenario);
    }
}

#[test]
fn after_a_restart_the_first_set_holds_the_adopted_tasks_and_comes_once_containers_are_listed() {
    let snapshot = worker::PersistedAssignments {
        assignment_version: 4,
        tasks: vec![
            networked("t1", 1, TaskState::Running),
            networked("t2", 2, TaskState::Running),
            task("t3", 3, TaskState::Running),
            networked("t4", 4, TaskState::Running),
        ],
        last_reported_status_by_task: BTreeMap::new(),
    };
    let known: BTreeMap<String, api::Task> = snapshot
        .tasks
        .iter()
        .map(|task| (task.id.clone(), task.clone()))
        .collect();
    let mut reconciler = Reconciler::restore(snapshot.clone());
    // The dispatcher's set arrives first: nothing is known of the containers yet, so no set
    // (an empty one would tear down what is about to be adopted).
    let commands = reconciler.step(assign(5, snapshot.tasks.clone()));
    assert!(
        commands
            .iter()
            .all(|command| !matches!(command, Command::SetNetworkEndpoints(_))),
        "{commands:?}"
    );
    let commands = reconciler.step(listed(vec![
        existing("t1", "c-t1", ContainerRunState::Running),
        existing("t2", "c-t2", ContainerRunState::Created),
        existing("t3", "c-t3", ContainerRunState::Running),
        // t4's container was never made, so it is created now; t9's task is no longer
        // assigned, and its stub has no networks to read.
        existing("t9", "c-t9", ContainerRunState::Running),
    ]));
    let rendered: Vec<String> = commands
        .iter()
        .map(|command| render(command, &known))
        .collect();
    assert_eq!(
        rendered[0], "endpoints [t1 serving, t2, t4]",
        "{rendered:?}"
    );
    assert_eq!(
        commands
            .iter()
            .filter(|command| matches!(command, Command::SetNetworkEndpoints(_)))
            .count(),
        1
    );
    // Nothing changed for the set: nothing is sent again.
    let commands = reconciler.step(tick(1));
    assert!(
        commands
            .iter()
            .all(|command| !matches!(command, Command::SetNetworkEndpoints(_))),
        "{commands:?}"
    );
}

#[test]
fn after_a_restart_with_nothing_networked_an_empty_set_is_sent_once() {
    let mut reconciler = Reconciler::restore(worker::PersistedAssignments {
        assignment_version: 1,
        tasks: vec![task("t1", 1, TaskState::Running)],
        last_reported_status_by_task: BTreeMap::new(),
    });
    let commands = reconciler.step(listed(vec![existing(
        "t1",
        "c-t1",
        ContainerRunState::Running,
    )]));
    assert_eq!(
        commands.first(),
        Some(&Command::SetNetworkEndpoints(BTreeMap::new()))
    );
    let commands = reconciler.step(tick(1));
    assert!(commands.is_empty(), "{commands:?}");
}

#[test]
fn status_timestamps_carry_the_last_tick() {
    let mut reconciler = Reconciler::new();
    reconciler.step(tick(1_700_000_000));
    reconciler.step(listed(vec![]));
    reconciler.step(assign(1, vec![task("t1", 1, TaskState::Running)]));
    let status = reconciler.observed_status("t1").expect("t1 is tracked");
    assert_eq!(
        status.timestamp,
        Some(api::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0
        })
    );
}

fn container_status(reconciler: &Reconciler, task_id: &str) -> (i32, api::ContainerStatus) {
    let status = reconciler
        .observed_status(task_id)
        .expect("the task is tracked");
    match status.runtime_status.clone() {
        Some(api::task_status::RuntimeStatus::Container(container)) => (status.state, container),
        None => panic!("{task_id} has no container status: {status:?}"),
    }
}

#[test]
fn a_running_task_reports_its_containers_pid_and_an_exited_one_its_exit_code() {
    let mut reconciler = Reconciler::new();
    reconciler.step(listed(vec![]));
    reconciler.step(assign(1, vec![task("t1", 1, TaskState::Running)]));
    reconciler.step(created("t1", "c1"));
    reconciler.step(started_with_pid("t1", 4242));
    let (state, container) = container_status(&reconciler, "t1");
    assert_eq!(state, TaskState::Running as i32);
    assert_eq!(
        (container.container_id.as_str(), container.pid),
        ("c1", 4242)
    );

    reconciler.step(exited("c1", 3, false));
    let (state, container) = container_status(&reconciler, "t1");
    assert_eq!(state, TaskState::Failed as i32);
    assert_eq!((container.pid, container.exit_code), (0, 3));

    // A container adopted after a restart keeps the pid the engine lists.
    let mut restarted = Reconciler::new();
    restarted.step(assign(1, vec![task("t2", 1, TaskState::Running)]));
    let mut running = existing("t2", "c2", ContainerRunState::Running);
    running.pid = Some(77);
    restarted.step(listed(vec![running]));
    let (state, container) = container_status(&restarted, "t2");
    assert_eq!((state, container.pid), (TaskState::Running as i32, 77));
}

#[test]
fn a_running_task_reports_the_ports_it_publishes_on_its_host_and_an_ended_one_none() {
    let port = |mode: api::port_config::PublishMode, published: u32| api::PortConfig {
        protocol: api::port_config::Protocol::Tcp as i32,
        target_port: 80,
        published_port: published,
        publish_mode: mode as i32,
        ..Default::default()
    };
    let mut published = task("t1", 1, TaskState::Running);
    published.endpoint = Some(api::Endpoint {
        ports: vec![
            port(api::port_config::PublishMode::Host, 9100),
            port(api::port_config::PublishMode::Ingress, 30000),
        ],
        ..Default::default()
    });
    let mut reconciler = Reconciler::new();
    reconciler.step(listed(vec![]));
    reconciler.step(assign(1, vec![published]));
    reconciler.step(created("t1", "c1"));
    reconciler.step(start_finished("t1"));
    let status = reconciler.observed_status("t1").expect("t1 is tracked");
    assert_eq!(status.state, TaskState::Running as i32);
    let ports = status.port_status.as_ref().map(|ports| ports.ports.clone());
    assert_eq!(
        ports,
        Some(vec![port(api::port_config::PublishMode::Host, 9100)]),
        "the mesh's port is every node's, not the task's"
    );

    reconciler.step(exited("c1", 0, false));
    let status = reconciler.observed_status("t1").expect("t1 is tracked");
    assert_eq!(status.state, TaskState::Complete as i32);
    assert_eq!(status.port_status, None);
}

/// Drives `count` tasks to RUNNING in containers `c-<task id>`; returns the last persisted
/// snapshot.
fn bring_up(reconciler: &mut Reconciler, count: usize) -> worker::PersistedAssignments {
    let tasks: Vec<api::Task> = (1..=count)
        .map(|slot| task(&format!("t{slot}"), slot as u64, TaskState::Running))
        .collect();
    let mut last_snapshot = None;
    let mut pending = reconciler.step(listed(vec![]));
    pending.extend(reconciler.step(assign(1, tasks)));
    while let Some(command) = pending.pop() {
        let next = match command {
            Command::CreateContainer { task_id, .. } => {
                let container_id = format!("c-{task_id}");
                reconciler.step(created(&task_id, &container_id))
            }
            Command::StartContainer { task_id, .. } => reconciler.step(start_finished(&task_id)),
            Command::PersistAssignments(snapshot) => {
                last_snapshot = Some(snapshot);
                Vec::new()
            }
            Command::ReportStatuses { .. } | Command::SetNetworkEndpoints(_) => Vec::new(),
            other => panic!("unexpected while bringing tasks up: {other:?}"),
        };
        pending.extend(next);
    }
    last_snapshot.expect("bringing tasks up persists")
}

#[test]
fn twenty_running_tasks_are_adopted_after_a_restart_and_none_created() {
    let mut first_life = Reconciler::new();
    let snapshot = bring_up(&mut first_life, 20);
    for slot in 1..=20 {
        let status = first_life
            .observed_status(&format!("t{slot}"))
            .expect("tracked");
        assert_eq!(status.state, TaskState::Running as i32);
    }

    // The daemon restarts: the snapshot comes back from disk, the engine lists its containers.
    let directory = tempfile::tempdir().expect("tempdir");
    let store = AssignmentStore::open(directory.path()).expect("open store");
    store.save(&snapshot).expect("save");
    let restored = store.load().expect("load").expect("something was saved");
    assert_eq!(restored, snapshot);
    let mut second_life = Reconciler::restore(restored);
    let containers = (1..=20)
        .map(|slot| {
            existing(
                &format!("t{slot}"),
                &format!("c-t{slot}"),
                ContainerRunState::Running,
            )
        })
        .collect();
    let mut commands = second_life.step(listed(containers));
    commands.extend(second_life.step(assign(2, snapshot.tasks.clone())));
    let engine_commands: Vec<&Command> = commands
        .iter()
        .filter(|command| {
            !matches!(
                command,
                Command::PersistAssignments(_)
                    | Command::ReportStatuses { .. }
                    | Command::SetNetworkEndpoints(_)
            )
        })
        .collect();
    assert!(engine_commands.is_empty(), "{engine_commands:?}");
    for slot in 1..=20 {
        let task_id = format!("t{slot}");
        assert_eq!(
            second_life.container_id(&task_id),
            Some(format!("c-{task_id}").as_str())
        );
        assert_eq!(
            second_life
                .observed_status(&task_id)
                .map(|status| status.state),
            Some(TaskState::Running as i32)
        );
    }
    // The new session is told every task's status again, all RUNNING, in one batch.
    let reports: Vec<&Command> = commands
        .iter()
        .filter(|command| matches!(command, Command::ReportStatuses { .. }))
        .collect();
    assert_eq!(reports.len(), 1);
    if let Command::ReportStatuses { statuses, .. } = reports[0] {
        assert_eq!(statuses.len(), 20);
        assert!(
            statuses
                .values()
                .all(|status| status.state == TaskState::Running as i32)
        );
    }
}

#[test]
fn restart_removes_unassigned_and_duplicate_containers_and_fails_lost_ones() {
    let mut first_life = Reconciler::new();
    let snapshot = bring_up(&mut first_life, 3);
    let mut second_life = Reconciler::restore(snapshot.clone());
    let mut known = BTreeMap::new();
    for task in &snapshot.tasks {
        known.insert(task.id.clone(), task.clone());
    }
    let mut foreign = existing("", "user-container", ContainerRunState::Running);
    foreign.labels.clear();
    let commands = second_life.step(listed(vec![
        existing("t1", "c-t1", ContainerRunState::Running),
        // A duplicate, e.g. from an earlier bug or a create whose result was lost.
        existing(
            "t1",
            "c-t1-dup",
            ContainerRunState::Exited {
                exit_code: 0,
                oom_killed: false,
            },
        ),
        // t2 exited while the daemon was down.
        existing(
            "t2",
            "c-t2",
            ContainerRunState::Exited {
                exit_code: 2,
                oom_killed: false,
            },
        ),
        // t3's container is gone. t9 is no longer assigned.
        existing("t9", "c-t9", ContainerRunState::Running),
        foreign,
    ]));
    let rendered: Vec<String> = commands
        .iter()
        .map(|command| render(command, &known))
        .collect();
    assert_eq!(
        rendered,
        vec![
            "endpoints []",
            "remove t1 c-t1-dup",
            "stop t9 c-t9 10s",
            "persist v1 [t1 t2 t3]",
            "report #1 t1=RUNNING \"started\" ctr=c-t1, \
             t2=FAILED \"failed\" err=\"task: non-zero exit (2)\" ctr=c-t2 exit=2, \
             t3=FAILED \"failed\" err=\"task: container is missing\"",
        ]
    );
    // The next assignment set still lists t3: it is not created again.
    let commands = second_life.step(assign(2, snapshot.tasks.clone()));
    assert!(
        commands
            .iter()
            .all(|command| !matches!(command, Command::CreateContainer { .. })),
        "{commands:?}"
    );
}

#[test]
fn a_create_in_flight_at_a_crash_is_adopted_not_repeated() {
    let mut first_life = Reconciler::new();
    first_life.step(listed(vec![]));
    let commands = first_life.step(assign(1, vec![task("t1", 1, TaskState::Running)]));
    let snapshot = commands
        .iter()
        .find_map(|command| match command {
            Command::PersistAssignments(snapshot) => Some(snapshot.clone()),
            _ => None,
        })
        .expect("persisted");
    // The engine created c1 but the daemon died before hearing so.
    let mut second_life = Reconciler::restore(snapshot.clone());
    let mut commands = second_life.step(listed(vec![existing(
        "t1",
        "c1",
        ContainerRunState::Created,
    )]));
    commands.extend(second_life.step(assign(2, snapshot.tasks)));
    let engine_commands: Vec<&Command> = commands
        .iter()
        .filter(|command| {
            !matches!(
                command,
                Command::PersistAssignments(_)
                    | Command::ReportStatuses { .. }
                    | Command::SetNetworkEndpoints(_)
            )
        })
        .collect();
    assert_eq!(
        engine_commands,
        vec![&Command::StartContainer {
            task_id: "t1".to_owned(),
            container_id: "c1".to_owned()
        }]
    );
}

#[test]
fn events_fed_as_one_batch_give_one_persist_and_one_report() {
    let mut reconciler = Reconciler::new();
    reconciler.step(listed(vec![]));
    let tasks: Vec<api::Task> = (1..=3)
        .map(|slot| task(&format!("t{slot}"), slot, TaskState::Running))
        .collect();
    let mut known = BTreeMap::new();
    for task in &tasks {
        known.insert(task.id.clone(), task.clone());
    }
    reconciler.step(assign(1, tasks));
    let commands = reconciler.step_batch([
        created("t1", "c1"),
        created("t2", "c2"),
        created("t3", "c3"),
    ]);
    let rendered: Vec<String> = commands
        .iter()
        .map(|command| render(command, &known))
        .collect();
    assert_eq!(
        rendered,
        vec![
            "start t1 c1",
            "start t2 c2",
            "start t3 c3",
            "persist v1 [t1 t2 t3]",
            "report #2 t1=STARTING \"starting\" ctr=c1, t2=STARTING \"starting\" ctr=c2, \
             t3=STARTING \"starting\" ctr=c3",
        ]
    );
}

#[test]
fn states_carry_the_time_the_step_began_not_the_last_tick() {
    let mut reconciler = Reconciler::new();
    reconciler.step(tick(100));
    for (event, _) in t1_to_running() {
        if matches!(event, Event::CommandFinished(_)) && reconciler.observed_status("t1").is_some()
        {
            reconciler.step(Event::Clock {
                now_since_unix_epoch: std::time::Duration::from_millis(100_250),
            });
        }
        reconciler.step(event);
    }
    let running = reconciler.observed_status("t1").expect("t1 is tracked");
    assert_eq!(running.state(), TaskState::Running);
    assert_eq!(
        running.timestamp,
        Some(api::Timestamp {
            seconds: 100,
            nanos: 250_000_000
        })
    );
}
