//! A task's restart policy with Swarm's defaults filled in.

use std::time::Duration;

use shoal_proto::api::{RestartPolicy, Task, TaskState, restart_policy::RestartCondition};

use spec::enums::TextForm;
use spec::time::std_duration;

/// The restart policy that applies to a task, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveRestartPolicy {
    /// When an ended task is replaced: never, only after a failure, or always.
    pub condition: RestartCondition,
    /// How long the replacement waits before it may start.
    pub delay: Duration,
    /// How many restarts are allowed within `window`; 0 means unlimited.
    pub max_attempts: u64,
    /// The sliding window restarts are counted in; zero means forever.
    pub window: Duration,
}

impl Default for EffectiveRestartPolicy {
    /// Swarm's defaults (`spec::defaults::restart_policy`): condition any, delay 5 s,
    /// unlimited attempts.
    fn default() -> EffectiveRestartPolicy {
        EffectiveRestartPolicy::of_policy(&spec::defaults::restart_policy())
    }
}

impl EffectiveRestartPolicy {
    /// The policy in the task's own spec (the spec it was created from, so a service update
    /// does not change how already-created tasks are treated), defaults filled in.
    pub fn of_task(task: &Task) -> EffectiveRestartPolicy {
        match task.spec.as_ref().and_then(|spec| spec.restart.as_ref()) {
            Some(policy) => EffectiveRestartPolicy::of_policy(policy),
            None => EffectiveRestartPolicy::default(),
        }
    }

    /// A stored policy read with its unset fields filled in. An unset delay means the default
    /// delay, as in SwarmKit.
    fn of_policy(policy: &RestartPolicy) -> EffectiveRestartPolicy {
        EffectiveRestartPolicy {
            condition: policy.condition(),
            delay: policy
                .delay
                .as_ref()
                .map_or(spec::defaults::RESTART_DELAY, std_duration),
            max_attempts: policy.max_attempts,
            window: policy.window.as_ref().map_or(Duration::ZERO, std_duration),
        }
    }

    /// Whether the condition asks for a replacement of a task that ended in `observed`.
    /// Attempt limits are checked separately, by the restart supervisor.
    pub fn condition_allows_restart_after(&self, observed: TaskState) -> bool {
        match self.condition {
            RestartCondition::None => false,
            RestartCondition::OnFailure => observed != TaskState::Complete,
            RestartCondition::Any => true,
        }
    }

    /// The condition's name as Swarm's CLI spells it.
    pub fn condition_name(&self) -> &'static str {
        self.condition.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_without_a_policy_gets_swarms_default_spelled_as_the_cli_spells_it() {
        let policy = EffectiveRestartPolicy::of_task(&Task::default());
        assert_eq!(
            policy,
            EffectiveRestartPolicy {
                condition: RestartCondition::Any,
                delay: Duration::from_secs(5),
                max_attempts: 0,
                window: Duration::ZERO,
            }
        );
        assert_eq!(policy.condition_name(), "any");
        let on_failure = EffectiveRestartPolicy {
            condition: RestartCondition::OnFailure,
            ..policy
        };
        assert_eq!(on_failure.condition_name(), "on-failure");
    }
}
