//! Convergence verdicts: converged, converging, or stuck with the reason per slot.

use std::time::Duration;

use shoal_proto::api::{Service, Task, TaskState, restart_policy::RestartCondition};

use super::support::{node, replicated_job, replicated_service, task, with_restart_policy};
use crate::orchestrator::{
    ClusterObjects, GaveUpReason, GivenUpSlots, ServiceConvergence, SlotKey, StuckSlot,
    service_convergence,
};

use TaskState::{Complete, Failed, Pending, Running, Shutdown};

fn verdict(service: &Service, tasks: &[Task], given_up: &GivenUpSlots) -> ServiceConvergence {
    let services = [service.clone()];
    let nodes = [node("a")];
    let objects = ClusterObjects::new(&services, &nodes, tasks);
    let snapshot = objects.snapshot();
    service_convergence(&snapshot, &service.id, given_up).expect("the service exists")
}

#[test]
fn replicated_services_converge_when_every_slot_runs() {
    let web = replicated_service("web", 2);
    let starting = [
        task("t1", &web, 1, "a", Running, Running, 1),
        task("t2", &web, 2, "a", Running, Pending, 1),
    ];
    assert_eq!(
        verdict(&web, &starting, &GivenUpSlots::new()),
        ServiceConvergence::Converging
    );
    let mut running = starting.to_vec();
    running[1].status.get_or_insert_default().set_state(Running);
    assert_eq!(
        verdict(&web, &running, &GivenUpSlots::new()),
        ServiceConvergence::Converged
    );
}

#[test]
fn a_replica_that_completed_under_condition_none_can_never_converge() {
    let web = with_restart_policy(
        replicated_service("web", 2),
        RestartCondition::None,
        Duration::ZERO,
        0,
        Duration::ZERO,
    );
    let tasks = [
        task("t1", &web, 1, "a", Running, Running, 1),
        task("t2", &web, 2, "a", Shutdown, Complete, 1),
    ];
    assert_eq!(
        verdict(&web, &tasks, &GivenUpSlots::new()),
        ServiceConvergence::CannotConverge {
            stuck_slots: vec![StuckSlot {
                slot: SlotKey::Replica {
                    service_id: "web".to_owned(),
                    slot: 2
                },
                last_task_id: "t2".to_owned(),
                reason: GaveUpReason::RestartConditionForbids {
                    condition: "none",
                    ended_in: Complete
                },
            }]
        }
    );
}

#[test]
fn a_job_whose_slot_ran_out_of_attempts_can_never_converge() {
    let job = replicated_job("batch", 2, 2);
    let tasks = [
        task("t1", &job, 1, "a", Complete, Complete, 1),
        task("t2", &job, 2, "a", Shutdown, Failed, 1),
    ];
    let slot = SlotKey::Replica {
        service_id: "batch".to_owned(),
        slot: 2,
    };
    let mut given_up = GivenUpSlots::new();
    given_up.give_up(slot.clone(), 3);
    assert_eq!(
        verdict(&job, &tasks, &given_up),
        ServiceConvergence::CannotConverge {
            stuck_slots: vec![StuckSlot {
                slot,
                last_task_id: "t2".to_owned(),
                reason: GaveUpReason::MaxAttemptsReached { max_attempts: 3 },
            }]
        }
    );
    let done = [
        task("t1", &job, 1, "a", Complete, Complete, 1),
        task("t3", &job, 2, "a", Complete, Complete, 2),
    ];
    assert_eq!(
        verdict(&job, &done, &GivenUpSlots::new()),
        ServiceConvergence::Converged
    );
}
