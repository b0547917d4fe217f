//! Which of a core's commands must commit together, for a step whose commands are more than one
//! store transaction can carry.

use std::collections::HashMap;

use shoal_proto::api::Task;

use super::command::Command;
use super::snapshot::SlotKey;

/// What a command changes, for keeping dependent changes in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Slot(SlotKey),
    /// A task `task_of` does not know: nothing else can depend on its change.
    UnknownTask(String),
}

/// Splits one step's `commands` into the groups that must commit together, in the order they
/// are to commit. The rule:
///
/// - A service's own change (its update state, a rollback to its previous spec, its deletion)
///   is a group of its own, and the service changes come before every task change. A step that
///   stops partway then leaves a service's update state ahead of its tasks, which the next step
///   carries on from (an update already `UPDATING` goes on replacing slots), never behind them
///   (replacements committed while the service does not yet say that an update started).
/// - The task changes of one slot (a replicated slot, or a global service's node) stay
///   together: a stop-first replacement waits at READY until the old task stops, so it must
///   never commit without the old task's shutdown; a restart's shutdown and replacement
///   likewise.
/// - Slots are independent of each other: every core is level-triggered, so a slot a step did
///   not get to commit is decided again by the next step from what did commit.
///
/// Wake-ups are not changes and are left out. Slots keep the order of their first command.
/// `task_of` finds a task the commands name by its id.
pub fn commit_groups<'a>(
    task_of: impl Fn(&str) -> Option<&'a Task>,
    commands: Vec<Command>,
) -> Vec<Vec<Command>> {
    let mut service_groups = Vec::new();
    let mut task_groups: Vec<Vec<Command>> = Vec::new();
    let mut group_of_owner: HashMap<Owner, usize> = HashMap::new();
    for command in commands {
        let owner = match &command {
            Command::UpdateService(_) | Command::DeleteService { .. } => {
                service_groups.push(vec![command]);
                continue;
            }
            Command::WakeUpAt { .. } => continue,
            Command::CreateTask(task) => Owner::Slot(SlotKey::of_task(task)),
            Command::SetDesiredState { task_id, .. } | Command::DeleteTask { task_id, .. } => {
                // Only the tasks the commands name are looked up, so a step with little to
                // write stays cheap however many tasks the cluster has.
                task_of(task_id).map_or_else(
                    || Owner::UnknownTask(task_id.clone()),
                    |task| Owner::Slot(SlotKey::of_task(task)),
                )
            }
        };
        let index = *group_of_owner.entry(owner).or_insert_with(|| {
            task_groups.push(Vec::new());
            task_groups.len() - 1
        });
        task_groups[index].push(command);
    }
    service_groups.extend(task_groups);
    service_groups
}
