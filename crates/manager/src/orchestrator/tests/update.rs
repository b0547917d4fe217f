//! The rolling updater: batches, order, delay, monitor, failure actions and rollback.

use std::time::Duration;

use shoal_proto::api::{
    Service, Task, TaskState, UpdateConfig, UpdateStatus, Version, update_config,
    update_status::UpdateState,
};
use spec::time::proto_duration;

use super::support::{at, global_service, node, render, replicated_job, replicated_service, task};
use crate::orchestrator::{
    ClusterObjects, ClusterTime, FailureAction, SequentialTaskIds, UpdateSettings,
    reconcile_service_update,
};

use TaskState::{Complete, Failed, New, Pending, Ready, Running, Shutdown, Starting};

#[test]
fn a_service_without_an_update_config_updates_with_swarms_defaults() {
    assert_eq!(
        UpdateSettings::of_config(None),
        UpdateSettings {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio: 0.0,
            start_first: false,
        }
    );
}

fn at_spec_version(mut service: Service, version: u64) -> Service {
    service.spec_version = Some(Version { index: version });
    service
}

fn with_update_config(mut service: Service, configure: impl FnOnce(&mut UpdateConfig)) -> Service {
    let mut config = UpdateConfig {
        parallelism: 1,
        monitor: Some(proto_duration(Duration::from_secs(5))),
        ..UpdateConfig::default()
    };
    configure(&mut config);
    if let Some(spec) = service.spec.as_mut() {
        spec.update = Some(config);
    }
    service
}

/// The service with an update in `state` that started at `second`.
fn in_update(mut service: Service, state: UpdateState, second: u64) -> Service {
    service.update_status = Some(UpdateStatus {
        state: state as i32,
        started_at: Some(at(second).to_proto_timestamp()),
        ..UpdateStatus::default()
    });
    service
}

/// A task that reached RUNNING at `second`, by its worker's report.
fn came_up_at(mut task: Task, second: u64) -> Task {
    task.status.get_or_insert_default().timestamp = Some(at(second).to_proto_timestamp());
    task
}

fn step_at(service: &Service, tasks: &[Task], now: ClusterTime) -> Vec<String> {
    let nodes = [node("a"), node("b")];
    let objects = ClusterObjects::new(std::slice::from_ref(service), &nodes, tasks);
    let snapshot = objects.snapshot();
    let mut task_ids = SequentialTaskIds::new("new-");
    render(&reconcile_service_update(
        &snapshot,
        service,
        now,
        &mut task_ids,
    ))
}

/// Three slots running spec 1, while the service is at spec 2.
fn three_old_tasks(old: &Service) -> Vec<Task> {
    vec![
        task("t3", old, 3, "a", Running, Running, 1),
        task("t1", old, 1, "a", Running, Running, 1),
        task("t2", old, 2, "b", Running, Running, 1),
    ]
}

#[test]
fn an_update_starts_with_its_status_and_a_stop_first_batch() {
    let old = replicated_service("web", 3);
    let new = at_spec_version(old.clone(), 2);
    assert_eq!(
        step_at(&new, &three_old_tasks(&old), at(10)),
        [
            "update service web@7 spec=2 UPDATE_STATE_UPDATING \"update in progress\"",
            "desire t1@3 TASK_STATE_SHUTDOWN",
            "create new-000001 service=web slot=1 node=\"\" desired=TASK_STATE_READY",
        ]
    );
    // Nothing to do once every wanted task is at the current spec.
    assert!(step_at(&old, &three_old_tasks(&old), at(10)).is_empty());
}

#[test]
fn the_next_batch_waits_until_the_replacements_run() {
    let old = replicated_service("web", 3);
    let new = in_update(at_spec_version(old.clone(), 2), UpdateState::Updating, 10);
    let mut tasks = three_old_tasks(&old);
    tasks[1].set_desired_state(Shutdown);
    tasks.push(task("r1", &new, 1, "", Ready, New, 10));
    assert!(step_at(&new, &tasks, at(11)).is_empty());
    tasks[3] = task("r1", &new, 1, "a", Running, Starting, 10);
    assert!(step_at(&new, &tasks, at(11)).is_empty());
    tasks[3] = came_up_at(task("r1", &new, 1, "a", Running, Running, 10), 11);
    assert_eq!(
        step_at(&new, &tasks, at(12)),
        [
            "desire t2@3 TASK_STATE_SHUTDOWN",
            "create new-000001 service=web slot=2 node=\"\" desired=TASK_STATE_READY",
        ]
    );
}

#[test]
fn parallelism_sets_the_batch_size_and_zero_takes_every_slot() {
    let old = replicated_service("web", 3);
    let two_at_once = with_update_config(at_spec_version(old.clone(), 2), |config| {
        config.parallelism = 2;
    });
    let created = |lines: Vec<String>| lines.iter().filter(|l| l.starts_with("create")).count();
    assert_eq!(
        created(step_at(&two_at_once, &three_old_tasks(&old), at(10))),
        2
    );
    let all_at_once = with_update_config(at_spec_version(old.clone(), 2), |config| {
        config.parallelism = 0;
    });
    assert_eq!(
        created(step_at(&all_at_once, &three_old_tasks(&old), at(10))),
        3
    );
}

#[test]
fn slots_whose_old_task_does_not_run_go_first() {
    let old = replicated_service("web", 3);
    let new = at_spec_version(old.clone(), 2);
    let mut tasks = three_old_tasks(&old);
    tasks[0] = task("t3", &old, 3, "", Running, Pending, 1);
    let lines = step_at(&new, &tasks, at(10));
    assert_eq!(lines[1], "desire t3@3 TASK_STATE_SHUTDOWN");
}

#[test]
fn the_delay_runs_from_when_the_last_replacement_came_up() {
    let old = replicated_service("web", 3);
    let new = in_update(
        with_update_config(at_spec_version(old.clone(), 2), |config| {
            config.delay = Some(proto_duration(Duration::from_secs(4)));
        }),
        UpdateState::Updating,
        10,
    );
    let mut tasks = three_old_tasks(&old);
    tasks[1].set_desired_state(Shutdown);
    tasks.push(came_up_at(
        task("r1", &new, 1, "a", Running, Running, 10),
        12,
    ));
    assert_eq!(step_at(&new, &tasks, at(13)), ["wake up at 16s"]);
    assert_eq!(step_at(&new, &tasks, at(16)).len(), 2);
}

#[test]
fn start_first_starts_the_new_task_and_stops_the_old_one_once_it_runs() {
    let old = replicated_service("web", 2);
    let new = with_update_config(at_spec_version(old.clone(), 2), |config| {
        config.set_order(update_config::UpdateOrder::StartFirst);
    });
    let mut tasks = vec![
        task("t1", &old, 1, "a", Running, Running, 1),
        task("t2", &old, 2, "b", Running, Running, 1),
    ];
    assert_eq!(
        step_at(&new, &tasks, at(10)),
        [
            "update service web@7 spec=2 UPDATE_STATE_UPDATING \"update in progress\"",
            "create new-000001 service=web slot=1 node=\"\" desired=TASK_STATE_RUNNING",
        ]
    );
    let new = in_update(new, UpdateState::Updating, 10);
    tasks.push(task("r1", &new, 1, "b", Running, Starting, 10));
    assert!(step_at(&new, &tasks, at(11)).is_empty());
    tasks[2] = came_up_at(task("r1", &new, 1, "b", Running, Running, 10), 11);
    assert_eq!(
        step_at(&new, &tasks, at(11)),
        [
            "desire t1@3 TASK_STATE_SHUTDOWN",
            "create new-000001 service=web slot=2 node=\"\" desired=TASK_STATE_RUNNING",
        ]
    );
}

#[test]
fn the_update_completes_once_every_replacement_ran_for_the_monitor_period() {
    let old = replicated_service("web", 2);
    let new = in_update(at_spec_version(old.clone(), 2), UpdateState::Updating, 10);
    let mut tasks = vec![
        task("t1", &old, 1, "a", Shutdown, Shutdown, 1),
        task("t2", &old, 2, "b", Shutdown, Shutdown, 1),
        came_up_at(task("r1", &new, 1, "a", Running, Running, 10), 11),
        came_up_at(task("r2", &new, 2, "b", Running, Running, 12), 13),
    ];
    assert_eq!(step_at(&new, &tasks, at(14)), ["wake up at 18s"]);
    assert_eq!(
        step_at(&new, &tasks, at(18)),
        ["update service web@7 spec=2 UPDATE_STATE_COMPLETED \"update completed\""]
    );
    // A rollback completes the same way.
    let rolled_back = in_update(new.clone(), UpdateState::RollbackStarted, 10);
    assert_eq!(
        step_at(&rolled_back, &tasks, at(18)),
        ["update service web@7 spec=2 UPDATE_STATE_ROLLBACK_COMPLETED \"rollback completed\""]
    );
    // A finished update does nothing more, and a paused one leaves outdated tasks alone.
    assert!(
        step_at(
            &in_update(new.clone(), UpdateState::Completed, 10),
            &tasks,
            at(30)
        )
        .is_empty()
    );
    tasks[3] = task("t2", &old, 2, "b", Running, Running, 1);
    for state in [UpdateState::Paused, UpdateState::RollbackPaused] {
        assert!(step_at(&in_update(new.clone(), state, 10), &tasks, at(30)).is_empty());
    }
}

#[test]
fn a_failed_replacement_pauses_the_update_by_default() {
    let old = replicated_service("web", 3);
    let new = in_update(at_spec_version(old.clone(), 2), UpdateState::Updating, 10);
    let mut tasks = three_old_tasks(&old);
    tasks[1].set_desired_state(Shutdown);
    tasks.push(task("r1", &new, 1, "a", Running, Failed, 10));
    assert_eq!(
        step_at(&new, &tasks, at(12)),
        [
            "update service web@7 spec=2 UPDATE_STATE_PAUSED \"update paused due to failure or early termination of task r1\""
        ]
    );
    // Tasks of the same spec from before the update are not its failures.
    let mut earlier = tasks.clone();
    earlier[3] = task("r1", &new, 1, "a", Running, Failed, 9);
    assert!(!step_at(&new, &earlier, at(12))[0].contains("PAUSED"));
}

#[test]
fn continue_carries_on_and_the_ratio_tolerates_a_share_of_failed_slots() {
    let old = replicated_service("web", 3);
    let failing = |configure: fn(&mut UpdateConfig)| {
        let new = in_update(
            with_update_config(at_spec_version(old.clone(), 2), configure),
            UpdateState::Updating,
            10,
        );
        let mut tasks = three_old_tasks(&old);
        tasks[1].set_desired_state(Shutdown);
        tasks.push(task("r1", &new, 1, "a", Shutdown, Failed, 10));
        // The restart supervisor's replacement in the same slot is not the update's.
        tasks.push(task("r1-restart", &new, 1, "a", Running, Failed, 11));
        step_at(&new, &tasks, at(12))
    };
    let carries_on = [
        "desire t2@3 TASK_STATE_SHUTDOWN",
        "create new-000001 service=web slot=2 node=\"\" desired=TASK_STATE_READY",
    ];
    assert_eq!(
        failing(|config| config.set_failure_action(update_config::FailureAction::Continue)),
        carries_on
    );
    // One failed slot of three is within a ratio of 0.5, however often it failed.
    assert_eq!(failing(|config| config.max_failure_ratio = 0.5), carries_on);
    assert!(failing(|config| config.max_failure_ratio = 0.3)[0].contains("PAUSED"));
}

#[test]
fn rollback_returns_to_the_previous_spec_and_a_failing_rollback_pauses() {
    let old = replicated_service("web", 3);
    let mut new = in_update(
        with_update_config(at_spec_version(old.clone(), 2), |config| {
            config.set_failure_action(update_config::FailureAction::Rollback);
        }),
        UpdateState::Updating,
        10,
    );
    new.previous_spec = old.spec.clone();
    new.previous_spec_version = old.spec_version;
    let mut tasks = three_old_tasks(&old);
    tasks[1].set_desired_state(Shutdown);
    tasks.push(task("r1", &new, 1, "a", Running, Failed, 10));
    assert_eq!(
        step_at(&new, &tasks, at(12)),
        [
            "update service web@7 spec=1 UPDATE_STATE_ROLLBACK_STARTED \"update rolled back due to failure or early termination of task r1\""
        ]
    );

    // Rolling back, the failed spec's tasks are the outdated ones, replaced with the rollback
    // config (here two at once).
    let mut rolling_back = in_update(old.clone(), UpdateState::RollbackStarted, 12);
    if let Some(spec) = rolling_back.spec.as_mut() {
        spec.rollback = Some(UpdateConfig {
            parallelism: 2,
            ..UpdateConfig::default()
        });
    }
    let mut tasks = three_old_tasks(&old);
    tasks[1].set_desired_state(Shutdown);
    tasks.push(task("r1", &new, 1, "a", Running, Running, 10));
    tasks[0] = task("r3", &new, 3, "a", Running, Running, 11);
    assert_eq!(
        step_at(&rolling_back, &tasks, at(13)),
        [
            "desire r1@3 TASK_STATE_SHUTDOWN",
            "create new-000001 service=web slot=1 node=\"\" desired=TASK_STATE_READY",
            "desire r3@3 TASK_STATE_SHUTDOWN",
            "create new-000002 service=web slot=3 node=\"\" desired=TASK_STATE_READY",
        ]
    );
    // A rollback's own failure pauses it rather than rolling back again.
    tasks.push(task("back1", &rolling_back, 1, "a", Running, Failed, 13));
    assert_eq!(
        step_at(&rolling_back, &tasks, at(14)),
        [
            "update service web@7 spec=1 UPDATE_STATE_ROLLBACK_PAUSED \"rollback paused due to failure or early termination of task back1\""
        ]
    );
}

#[test]
fn a_new_leader_resumes_mid_update_from_the_store_alone() {
    // Slot 1 was replaced and monitored, slot 2's replacement is starting: the step on a fresh
    // leader neither starts over nor skips slot 3.
    let old = replicated_service("web", 3);
    let new = in_update(at_spec_version(old.clone(), 2), UpdateState::Updating, 10);
    let mut tasks = three_old_tasks(&old);
    tasks[1].set_desired_state(Shutdown);
    tasks[2].set_desired_state(Shutdown);
    tasks.push(came_up_at(
        task("r1", &new, 1, "a", Running, Running, 10),
        11,
    ));
    tasks.push(task("r2", &new, 2, "b", Running, Starting, 12));
    assert!(step_at(&new, &tasks, at(13)).is_empty());
    tasks[4] = came_up_at(task("r2", &new, 2, "b", Running, Running, 12), 13);
    assert_eq!(
        step_at(&new, &tasks, at(13)),
        [
            "desire t3@3 TASK_STATE_SHUTDOWN",
            "create new-000001 service=web slot=3 node=\"\" desired=TASK_STATE_READY",
        ]
    );
}

#[test]
fn global_services_update_node_by_node_and_jobs_are_left_to_their_iterations() {
    let old = global_service("agent");
    let new = at_spec_version(old.clone(), 2);
    let tasks = [
        task("on-b", &old, 0, "b", Running, Running, 1),
        task("on-a", &old, 0, "a", Running, Running, 1),
    ];
    assert_eq!(
        step_at(&new, &tasks, at(10))[1..],
        [
            "desire on-a@3 TASK_STATE_SHUTDOWN",
            "create new-000001 service=agent slot=0 node=\"a\" desired=TASK_STATE_READY",
        ]
    );

    let job = at_spec_version(replicated_job("batch", 1, 2), 2);
    let job_tasks = [task(
        "j1",
        &at_spec_version(job.clone(), 1),
        1,
        "a",
        Complete,
        Running,
        1,
    )];
    assert!(step_at(&job, &job_tasks, at(10)).is_empty());
}
