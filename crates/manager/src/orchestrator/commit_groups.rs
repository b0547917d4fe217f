//! Which of a core's commands must commit together, for a step whose commands are more than one
//! store transaction can carry.

use std::collections::{HashMap, HashSet};

use super::command::Command;
use super::snapshot::{ClusterSnapshot, SlotKey};

/// What a command changes, for keeping dependent changes in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Slot(SlotKey),
    /// A task the snapshot does not know: nothing else can depend on its change.
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
pub fn commit_groups(snapshot: &ClusterSnapshot<'_>, commands: Vec<Command>) -> Vec<Vec<Command>> {
    // Only the tasks the commands name, so a step with little to write stays cheap however
    // many tasks the cluster has.
    let named: HashSet<&str> = commands
        .iter()
        .filter_map(|command| match command {
            Command::SetDesiredState { task_id, .. } | Command::DeleteTask { task_id, .. } => {
                Some(task_id.as_str())
            }
            _ => None,
        })
        .collect();
    let slot_of_task: HashMap<&str, SlotKey> = if named.is_empty() {
        HashMap::new()
    } else {
        snapshot
            .tasks()
            .iter()
            .filter(|task| named.contains(task.id.as_str()))
            .map(|task| (task.id.as_str(), SlotKey::of_task(task)))
            .collect()
    };
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
                slot_of_task.get(task_id.as_str()).map_or_else(
                    || Owner::UnknownTask(task_id.clone()),
                    |slot| Owner::Slot(slot.clone()),
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
