//! The role follower's decisions, without IO: what a node does about what its managers say in
//! its session (a new manager list, new trusted roots, a new desired role) and about its
//! certificate's age. `step(event, now, jitter)` returns the commands the shell in
//! `roles.rs` carries out one at a time, each feeding its outcome back as the next event.
//!
//! A session round keeps the manager list on disk, moves to the roots the swarm trusts now (a
//! root rotation: a new certificate for the same role), and takes up a new desired role (a new
//! certificate for that role, then promotion or demotion); a failure anywhere ends the round and
//! the latest session is acted on again after [`RETRY_DELAY`]. A renewal round replaces the
//! certificate at a random point between 50% and 80% of its lifetime, as Swarm does, so that a
//! swarm's nodes don't all renew at once. The clock (`now`) and the randomness (`jitter`) are
//! passed in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::api::{NodeRole, SessionMessage};

/// How long to wait before trying a failed role change again, and how soon to renew a
/// certificate whose renewal point is unreadable or past.
pub const RETRY_DELAY: Duration = Duration::from_secs(5);

/// A certificate's validity, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// What the node holds now: its role, the manager list on disk, the roots its certificate
/// trusts and that certificate's validity (`None`: unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub role: NodeRole,
    pub manager_addrs: Vec<String>,
    pub trusted_roots: Vec<u8>,
    pub validity: Option<Validity>,
}

/// What a session message says that the follower acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The managers the agent knows now (the last non-empty list a session named).
    pub manager_addrs: Vec<String>,
    /// The roots the swarm trusts (PEM); empty: the message names none.
    pub root_ca: Vec<u8>,
    /// The role the node's spec asks for, if the message carries the node.
    pub desired_role: Option<NodeRole>,
}

impl SessionView {
    /// Reads a session message; `manager_addrs` is the agent's list after it.
    pub fn of(message: &SessionMessage, manager_addrs: Vec<String>) -> SessionView {
        SessionView {
            manager_addrs,
            root_ca: message.root_ca.as_bytes().to_vec(),
            desired_role: message
                .node
                .as_ref()
                .and_then(|node| node.spec.as_ref())
                .map(|spec| spec.desired_role()),
        }
    }
}

/// The managers a session message names, by address; empty when it names none (the agent then
/// keeps the list it has).
pub fn manager_addrs_of(message: &SessionMessage) -> Vec<String> {
    message
        .managers
        .iter()
        .filter_map(|manager| manager.peer.as_ref().map(|peer| peer.addr.clone()))
        .filter(|addr| !addr.is_empty())
        .collect()
}

/// A certificate the CA just issued this node; the shell holds the certificate itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The role the CA issued it for: the node's desired role when it was asked.
    pub role: NodeRole,
    /// The roots it trusts (PEM).
    pub trusted_roots: Vec<u8>,
    pub validity: Option<Validity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new session message.
    Session(SessionView),
    /// The time [`RoleFollower::next_wake`] named came (or any wake-up: it is checked).
    Tick,
    /// The command under way succeeded.
    Done,
    /// [`Command::RenewCertificate`] succeeded.
    Issued(Issued),
    /// The command under way failed, and why.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Saves the manager list with the node's membership on disk.
    SaveManagerAddrs(Vec<String>),
    /// Asks the managers' CA for a new certificate (for the node's desired role), and holds it.
    RenewCertificate,
    /// Puts the certificate just issued to use for the same role: on disk, and for the agent,
    /// which reconnects to show it.
    InstallCertificate,
    /// The running manager role takes the installed certificate up (its cluster port and Raft
    /// calls), without a restart.
    ManagerTakesCertificate,
    /// Changes role with the certificate just issued: promotion (data key, manager role, Raft
    /// join; undone if the join fails) or demotion (manager role stopped, its data removed).
    TakeRole(NodeRole),
    /// Says what happened; no outcome is fed back.
    Report(Report),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Renewed,
    RenewalFailed(String),
    RoleChangeFailed(String),
    MovedToNewRoots,
    Promoted,
    Demoted,
}

/// Why a certificate is being renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The swarm trusts other roots now.
    Roots,
    /// The node's spec asks for this role.
    Role(NodeRole),
    /// Its renewal time came.
    Schedule,
}

/// The command under way, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    SavingManagerAddrs(Vec<String>),
    Renewing(Purpose),
    Installing(Purpose, Issued),
    ManagerTaking(Purpose),
    TakingRole(Issued),
}

impl Stage {
    /// Renewal rounds are the scheduled renewal's; every other stage belongs to a session round.
    fn in_renewal_round(&self) -> bool {
        matches!(
            self,
            Stage::Renewing(Purpose::Schedule)
                | Stage::Installing(Purpose::Schedule, _)
                | Stage::ManagerTaking(Purpose::Schedule)
        )
    }
}

/// The role follower's state: the node as it is, the latest session, and the two times it
/// wakes up for (renewal, and a retry after a failed session round).
#[derive(Debug, Clone)]
pub struct RoleFollower {
    node: NodeView,
    latest: Option<SessionView>,
    renew_at: SystemTime,
    retry_at: Option<SystemTime>,
    stage: Option<Stage>,
    /// A session came while a round was under way; it is acted on when the round ends.
    session_waiting: bool,
    /// The node's certificate changed in the round under way.
    certificate_changed: bool,
}

/// When to renew a certificate: at `0.5 + 0.3 * jitter` of its lifetime (`jitter` in [0, 1)),
/// and never sooner than [`RETRY_DELAY`] from `now`; an unreadable one soon.
pub fn renewal_time(validity: Option<Validity>, now: SystemTime, jitter: f64) -> SystemTime {
    let soon = now + RETRY_DELAY;
    let Some(validity) = validity else {
        return soon;
    };
    let lifetime = (validity.not_after - validity.not_before).max(0) as f64;
    let fraction = 0.5 + 0.3 * jitter.clamp(0.0, 1.0);
    let at = UNIX_EPOCH
        + Duration::from_secs_f64(validity.not_before.max(0) as f64 + lifetime * fraction);
    at.max(soon)
}

impl RoleFollower {
    pub fn new(node: NodeView, now: SystemTime, jitter: f64) -> RoleFollower {
        RoleFollower {
            renew_at: renewal_time(node.validity, now, jitter),
            node,
            latest: None,
            retry_at: None,
            stage: None,
            session_waiting: false,
            certificate_changed: false,
        }
    }

    pub fn node(&self) -> &NodeView {
        &self.node
    }

    /// When the follower next has something to do unless an event comes first: the renewal
    /// time, or a retry's if that is sooner.
    pub fn next_wake(&self) -> SystemTime {
        match self.retry_at {
            Some(retry_at) => retry_at.min(self.renew_at),
            None => self.renew_at,
        }
    }

    /// Takes one event; returns what to do. Every command but [`Command::Report`] is answered
    /// by one event ([`Event::Done`], [`Event::Issued`] or [`Event::Failed`]) before the next.
    pub fn step(&mut self, event: Event, now: SystemTime, jitter: f64) -> Vec<Command> {
        let Some(stage) = self.stage.take() else {
            return match event {
                Event::Session(view) => {
                    self.latest = Some(view);
                    self.start_session_round(now, jitter)
                }
                Event::Tick if now >= self.renew_at => {
                    self.certificate_changed = false;
                    self.stage = Some(Stage::Renewing(Purpose::Schedule));
                    vec![Command::RenewCertificate]
                }
                Event::Tick if self.retry_at.is_some_and(|at| now >= at) => {
                    self.start_session_round(now, jitter)
                }
                // Nothing is due, and an outcome with no command under way is stale.
                Event::Tick | Event::Done | Event::Issued(_) | Event::Failed(_) => Vec::new(),
            };
        };
        match (stage, event) {
            (stage, Event::Session(view)) => {
                self.latest = Some(view);
                self.session_waiting = true;
                self.stage = Some(stage);
                Vec::new()
            }
            (stage, Event::Tick) => {
                self.stage = Some(stage);
                Vec::new()
            }
            (stage, Event::Failed(error)) => {
                self.end_round(stage.in_renewal_round(), Err(error), now, jitter)
            }
            (Stage::SavingManagerAddrs(addrs), Event::Done) => {
                self.node.manager_addrs = addrs;
                self.check_roots(now, jitter)
            }
            (Stage::Renewing(purpose), Event::Issued(issued)) => match purpose {
                Purpose::Roots | Purpose::Schedule if issued.role == self.node.role => {
                    self.stage = Some(Stage::Installing(purpose, issued));
                    vec![Command::InstallCertificate]
                }
                // Issued for another role: a role change is under way, which a session round
                // takes up; this certificate is dropped.
                Purpose::Roots => self.check_role(now, jitter),
                Purpose::Schedule => self.end_round(true, Ok(Vec::new()), now, jitter),
                Purpose::Role(desired) if issued.role == desired => {
                    self.stage = Some(Stage::TakingRole(issued));
                    vec![Command::TakeRole(desired)]
                }
                // The spec moved on while the certificate was issued; the next session says
                // where.
                Purpose::Role(_) => self.end_round(false, Ok(Vec::new()), now, jitter),
            },
            (Stage::Installing(purpose, issued), Event::Done) => {
                self.node.trusted_roots = issued.trusted_roots;
                self.node.validity = issued.validity;
                self.certificate_changed = true;
                if self.node.role == NodeRole::Manager {
                    self.stage = Some(Stage::ManagerTaking(purpose));
                    vec![Command::ManagerTakesCertificate]
                } else {
                    self.installed(purpose, now, jitter)
                }
            }
            (Stage::ManagerTaking(purpose), Event::Done) => self.installed(purpose, now, jitter),
            (Stage::TakingRole(issued), Event::Done) => {
                let report = match issued.role {
                    NodeRole::Manager => Report::Promoted,
                    NodeRole::Worker => Report::Demoted,
                };
                self.node.role = issued.role;
                self.node.trusted_roots = issued.trusted_roots;
                self.node.validity = issued.validity;
                self.certificate_changed = true;
                self.end_round(false, Ok(vec![Command::Report(report)]), now, jitter)
            }
            // An outcome that does not answer the command under way: the shell broke the
            // protocol, and the round ends as failed rather than waiting forever.
            (stage, event @ (Event::Done | Event::Issued(_))) => self.end_round(
                stage.in_renewal_round(),
                Err(format!(
                    "the role follower got {event:?} while {stage:?} was under way"
                )),
                now,
                jitter,
            ),
        }
    }

    /// The certificate for `purpose` is in use everywhere.
    fn installed(&mut self, purpose: Purpose, now: SystemTime, jitter: f64) -> Vec<Command> {
        match purpose {
            Purpose::Roots => {
                let mut commands = vec![Command::Report(Report::MovedToNewRoots)];
                commands.extend(self.check_role(now, jitter));
                commands
            }
            Purpose::Schedule | Purpose::Role(_) => {
                self.end_round(purpose == Purpose::Schedule, Ok(Vec::new()), now, jitter)
            }
        }
    }

    /// Acts on the latest session: first the manager list.
    fn start_session_round(&mut self, now: SystemTime, jitter: f64) -> Vec<Command> {
        self.retry_at = None;
        self.session_waiting = false;
        self.certificate_changed = false;
        let Some(latest) = &self.latest else {
            return Vec::new();
        };
        if latest.manager_addrs != self.node.manager_addrs {
            let addrs = latest.manager_addrs.clone();
            self.stage = Some(Stage::SavingManagerAddrs(addrs.clone()));
            return vec![Command::SaveManagerAddrs(addrs)];
        }
        self.check_roots(now, jitter)
    }

    /// Then the roots: a certificate that trusts the swarm's roots now.
    fn check_roots(&mut self, now: SystemTime, jitter: f64) -> Vec<Command> {
        let Some(latest) = &self.latest else {
            return self.end_round(false, Ok(Vec::new()), now, jitter);
        };
        if !latest.root_ca.is_empty() && latest.root_ca != self.node.trusted_roots {
            self.stage = Some(Stage::Renewing(Purpose::Roots));
            return vec![Command::RenewCertificate];
        }
        self.check_role(now, jitter)
    }

    /// Then the role: a certificate for the desired one, and the change.
    fn check_role(&mut self, now: SystemTime, jitter: f64) -> Vec<Command> {
        let desired = self.latest.as_ref().and_then(|latest| latest.desired_role);
        match desired {
            Some(desired) if desired != self.node.role => {
                self.stage = Some(Stage::Renewing(Purpose::Role(desired)));
                vec![Command::RenewCertificate]
            }
            _ => self.end_round(false, Ok(Vec::new()), now, jitter),
        }
    }

    /// Ends the round under way: a failed session round is tried again after [`RETRY_DELAY`];
    /// the renewal time moves after every renewal round and whenever the certificate changed.
    /// A session that came meanwhile starts the next round.
    fn end_round(
        &mut self,
        renewal_round: bool,
        outcome: Result<Vec<Command>, String>,
        now: SystemTime,
        jitter: f64,
    ) -> Vec<Command> {
        self.stage = None;
        let mut commands = match (renewal_round, outcome) {
            (true, Ok(mut commands)) => {
                commands.push(Command::Report(Report::Renewed));
                commands
            }
            (true, Err(error)) => vec![Command::Report(Report::RenewalFailed(error))],
            (false, Ok(commands)) => commands,
            (false, Err(error)) => {
                self.retry_at = Some(now + RETRY_DELAY);
                vec![Command::Report(Report::RoleChangeFailed(error))]
            }
        };
        if renewal_round || self.certificate_changed {
            self.renew_at = renewal_time(self.node.validity, now, jitter);
        }
        self.certificate_changed = false;
        if self.session_waiting {
            commands.extend(self.start_session_round(now, jitter));
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::api::{Node, NodeSpec, Peer, WeightedPeer};

    const START: u64 = 1_000_000;
    /// When the steps of a test happen: well before the first renewal.
    const NOW: u64 = START + 10;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A 1,000 s certificate issued at `from`.
    fn validity(from: u64) -> Option<Validity> {
        Some(Validity {
            not_before: from as i64,
            not_after: from as i64 + 1000,
        })
    }

    fn node(role: NodeRole) -> NodeView {
        NodeView {
            role,
            manager_addrs: vec!["10.0.0.1:2377".to_owned()],
            trusted_roots: b"roots-1".to_vec(),
            validity: validity(START),
        }
    }

    /// A session that changes nothing but, if given, the desired role.
    fn session(desired_role: Option<NodeRole>) -> SessionView {
        SessionView {
            manager_addrs: vec!["10.0.0.1:2377".to_owned()],
            root_ca: b"roots-1".to_vec(),
            desired_role,
        }
    }

    fn issued(role: NodeRole, roots: &str, from: u64) -> Event {
        Event::Issued(Issued {
            role,
            trusted_roots: roots.as_bytes().to_vec(),
            validity: validity(from),
        })
    }

    /// A follower started at `START` with jitter 0: it renews at `START + 500`.
    fn follower(role: NodeRole) -> RoleFollower {
        RoleFollower::new(node(role), at(START), 0.0)
    }

    fn step(follower: &mut RoleFollower, event: Event) -> Vec<Command> {
        follower.step(event, at(NOW), 0.0)
    }

    fn report(report: Report) -> Command {
        Command::Report(report)
    }

    fn failed() -> Event {
        Event::Failed("the managers are away".to_owned())
    }

    /// Each state a command can be under way in, reached from a fresh follower, with the
    /// command it is waiting on and whether it belongs to a renewal round.
    fn busy_states() -> Vec<(&'static str, RoleFollower, bool)> {
        let mut states = Vec::new();

        let mut saving = follower(NodeRole::Worker);
        let mut moved = session(None);
        moved.manager_addrs = vec!["10.0.0.2:2377".to_owned()];
        assert_eq!(
            step(&mut saving, Event::Session(moved)),
            [Command::SaveManagerAddrs(vec!["10.0.0.2:2377".to_owned()])]
        );
        states.push(("saving the manager list", saving, false));

        let mut renewing_for_roots = follower(NodeRole::Worker);
        let mut rotated = session(None);
        rotated.root_ca = b"roots-2".to_vec();
        assert_eq!(
            step(&mut renewing_for_roots, Event::Session(rotated)),
            [Command::RenewCertificate]
        );
        states.push(("renewing for new roots", renewing_for_roots.clone(), false));

        let mut installing_for_roots = renewing_for_roots;
        assert_eq!(
            step(
                &mut installing_for_roots,
                issued(NodeRole::Worker, "roots-2", NOW)
            ),
            [Command::InstallCertificate]
        );
        states.push(("installing for new roots", installing_for_roots, false));

        let mut manager_taking_roots = follower(NodeRole::Manager);
        let mut rotated = session(None);
        rotated.root_ca = b"roots-2".to_vec();
        step(&mut manager_taking_roots, Event::Session(rotated));
        step(
            &mut manager_taking_roots,
            issued(NodeRole::Manager, "roots-2", NOW),
        );
        assert_eq!(
            step(&mut manager_taking_roots, Event::Done),
            [Command::ManagerTakesCertificate]
        );
        states.push((
            "the manager role taking up new roots",
            manager_taking_roots,
            false,
        ));

        let mut renewing_for_role = follower(NodeRole::Worker);
        assert_eq!(
            step(
                &mut renewing_for_role,
                Event::Session(session(Some(NodeRole::Manager)))
            ),
            [Command::RenewCertificate]
        );
        states.push(("renewing for a new role", renewing_for_role.clone(), false));

        let mut taking_role = renewing_for_role;
        assert_eq!(
            step(&mut taking_role, issued(NodeRole::Manager, "roots-1", NOW)),
            [Command::TakeRole(NodeRole::Manager)]
        );
        states.push(("taking a new role", taking_role, false));

        let mut renewing_on_schedule = follower(NodeRole::Worker);
        assert_eq!(
            renewing_on_schedule.step(Event::Tick, at(START + 500), 0.0),
            [Command::RenewCertificate]
        );
        states.push(("renewing on schedule", renewing_on_schedule.clone(), true));

        let mut installing_on_schedule = renewing_on_schedule;
        assert_eq!(
            step(
                &mut installing_on_schedule,
                issued(NodeRole::Worker, "roots-1", NOW)
            ),
            [Command::InstallCertificate]
        );
        states.push(("installing on schedule", installing_on_schedule, true));

        let mut manager_taking_renewal = follower(NodeRole::Manager);
        manager_taking_renewal.step(Event::Tick, at(START + 500), 0.0);
        step(
            &mut manager_taking_renewal,
            issued(NodeRole::Manager, "roots-1", NOW),
        );
        assert_eq!(
            step(&mut manager_taking_renewal, Event::Done),
            [Command::ManagerTakesCertificate]
        );
        states.push((
            "the manager role taking up a renewed certificate",
            manager_taking_renewal,
            true,
        ));
        states
    }

    fn failure_report(renewal_round: bool, error: &str) -> Command {
        if renewal_round {
            report(Report::RenewalFailed(error.to_owned()))
        } else {
            report(Report::RoleChangeFailed(error.to_owned()))
        }
    }

    #[test]
    fn an_idle_follower_acts_on_sessions_and_its_times_only() {
        let mut idle = follower(NodeRole::Worker);
        assert_eq!(idle.next_wake(), at(START + 500));
        // A session that changes nothing, stale outcomes and early ticks do nothing.
        assert_eq!(step(&mut idle, Event::Session(session(None))), []);
        assert_eq!(
            step(&mut idle, Event::Session(session(Some(NodeRole::Worker)))),
            []
        );
        assert_eq!(step(&mut idle, Event::Tick), []);
        assert_eq!(step(&mut idle, Event::Done), []);
        assert_eq!(
            step(&mut idle, issued(NodeRole::Manager, "roots-2", NOW)),
            []
        );
        assert_eq!(step(&mut idle, failed()), []);
        assert_eq!(idle.node(), &node(NodeRole::Worker));
        assert_eq!(idle.next_wake(), at(START + 500));
        // The renewal time starts a renewal.
        assert_eq!(
            idle.step(Event::Tick, at(START + 500), 0.0),
            [Command::RenewCertificate]
        );
    }

    #[test]
    fn every_busy_state_waits_out_ticks_and_keeps_sessions_for_after_its_round() {
        for (name, busy, renewal_round) in busy_states() {
            // A tick, even long past every time, changes nothing while a command is under way.
            let mut ticked = busy.clone();
            assert_eq!(
                ticked.step(Event::Tick, at(START + 10_000), 0.0),
                [],
                "{name}"
            );
            assert_eq!(
                step(&mut ticked, failed()),
                [failure_report(renewal_round, "the managers are away")],
                "{name}"
            );

            // A session is kept, and acted on once the round ends.
            let mut waiting = busy.clone();
            let mut newer = session(None);
            newer.manager_addrs = vec!["10.0.0.3:2377".to_owned()];
            assert_eq!(step(&mut waiting, Event::Session(newer)), [], "{name}");
            assert_eq!(
                step(&mut waiting, failed()),
                [
                    failure_report(renewal_round, "the managers are away"),
                    Command::SaveManagerAddrs(vec!["10.0.0.3:2377".to_owned()]),
                ],
                "{name}"
            );
        }
    }

    #[test]
    fn a_failure_in_a_session_round_is_retried_and_one_in_a_renewal_round_reschedules() {
        for (name, mut busy, renewal_round) in busy_states() {
            assert_eq!(
                busy.step(failed(), at(START + 400), 0.0),
                [failure_report(renewal_round, "the managers are away")],
                "{name}"
            );
            if renewal_round {
                // Renewed at half the lifetime again of the certificate in use: the new one
                // (issued at NOW) if it was installed before the failure.
                let half = if name.contains("taking up a renewed") {
                    START + 510
                } else {
                    START + 500
                };
                assert_eq!(busy.next_wake(), at(half), "{name}");
                // Past that point, a failed renewal is tried again 5 s later.
                let mut late = busy.clone();
                late.step(Event::Tick, at(half), 0.0);
                assert_eq!(
                    late.step(failed(), at(half + 100), 0.0),
                    [failure_report(true, "the managers are away")]
                );
                assert_eq!(late.next_wake(), at(half + 105), "{name}");
            } else {
                assert_eq!(busy.next_wake(), at(START + 405), "{name}");
                // The retry acts on the latest session again, from its start, once.
                assert_eq!(busy.step(Event::Tick, at(START + 404), 0.0), [], "{name}");
                let retried = busy.step(Event::Tick, at(START + 405), 0.0);
                if name == "saving the manager list" {
                    assert_eq!(
                        retried,
                        [Command::SaveManagerAddrs(vec!["10.0.0.2:2377".to_owned()])]
                    );
                }
                if retried.is_empty() {
                    // Nothing was left to do (the new roots were in place before the failure).
                    assert_eq!(busy.next_wake(), busy.renew_at, "{name}");
                }
            }
        }
    }

    #[test]
    fn an_outcome_that_answers_another_command_fails_the_round() {
        for (name, busy, renewal_round) in busy_states() {
            let waits_for_issue = matches!(busy.stage, Some(Stage::Renewing(_)));
            let mut wrong = busy.clone();
            let outcome = if waits_for_issue {
                Event::Done
            } else {
                issued(NodeRole::Worker, "roots-9", NOW)
            };
            let commands = step(&mut wrong, outcome);
            assert!(
                matches!(
                    commands.as_slice(),
                    [Command::Report(
                        Report::RenewalFailed(_) | Report::RoleChangeFailed(_)
                    )]
                ),
                "{name}: {commands:?}"
            );
            assert_eq!(
                matches!(commands[0], Command::Report(Report::RenewalFailed(_))),
                renewal_round,
                "{name}"
            );
            assert!(wrong.stage.is_none(), "{name}");
        }
    }

    #[test]
    fn a_promotion_saves_the_managers_moves_roots_then_takes_the_role() {
        let mut worker = follower(NodeRole::Worker);
        let view = SessionView {
            manager_addrs: vec!["10.0.0.2:2377".to_owned()],
            root_ca: b"roots-2".to_vec(),
            desired_role: Some(NodeRole::Manager),
        };
        assert_eq!(
            step(&mut worker, Event::Session(view)),
            [Command::SaveManagerAddrs(vec!["10.0.0.2:2377".to_owned()])]
        );
        assert_eq!(step(&mut worker, Event::Done), [Command::RenewCertificate]);
        assert_eq!(
            step(&mut worker, issued(NodeRole::Worker, "roots-2", NOW)),
            [Command::InstallCertificate]
        );
        // A worker has no manager role to hand the certificate to.
        assert_eq!(
            step(&mut worker, Event::Done),
            [report(Report::MovedToNewRoots), Command::RenewCertificate]
        );
        assert_eq!(
            step(&mut worker, issued(NodeRole::Manager, "roots-2", NOW + 1)),
            [Command::TakeRole(NodeRole::Manager)]
        );
        assert_eq!(
            worker.step(Event::Done, at(NOW + 2), 0.5),
            [report(Report::Promoted)]
        );
        assert_eq!(
            worker.node(),
            &NodeView {
                role: NodeRole::Manager,
                manager_addrs: vec!["10.0.0.2:2377".to_owned()],
                trusted_roots: b"roots-2".to_vec(),
                validity: validity(NOW + 1),
            }
        );
        // The new certificate is renewed at 65% (jitter 0.5) of its lifetime; nothing retries.
        assert_eq!(worker.next_wake(), at(NOW + 1 + 650));
    }

    #[test]
    fn a_manager_moving_to_new_roots_hands_the_certificate_to_its_manager_role_then_goes_on() {
        let mut manager = follower(NodeRole::Manager);
        let view = SessionView {
            root_ca: b"roots-2".to_vec(),
            ..session(Some(NodeRole::Worker))
        };
        assert_eq!(
            step(&mut manager, Event::Session(view)),
            [Command::RenewCertificate]
        );
        assert_eq!(
            step(&mut manager, issued(NodeRole::Manager, "roots-2", NOW)),
            [Command::InstallCertificate]
        );
        assert_eq!(
            step(&mut manager, Event::Done),
            [Command::ManagerTakesCertificate]
        );
        // The roots are in place; the demotion the session also asks for comes next.
        assert_eq!(
            step(&mut manager, Event::Done),
            [report(Report::MovedToNewRoots), Command::RenewCertificate]
        );
        assert_eq!(manager.node().trusted_roots, b"roots-2");
        assert_eq!(manager.node().role, NodeRole::Manager);
    }

    #[test]
    fn a_demotion_takes_the_worker_role_with_its_certificate() {
        let mut manager = follower(NodeRole::Manager);
        assert_eq!(
            step(
                &mut manager,
                Event::Session(session(Some(NodeRole::Worker)))
            ),
            [Command::RenewCertificate]
        );
        assert_eq!(
            step(&mut manager, issued(NodeRole::Worker, "roots-1", NOW)),
            [Command::TakeRole(NodeRole::Worker)]
        );
        assert_eq!(step(&mut manager, Event::Done), [report(Report::Demoted)]);
        assert_eq!(manager.node().role, NodeRole::Worker);
        assert_eq!(manager.next_wake(), at(NOW + 500));
    }

    #[test]
    fn a_certificate_issued_for_another_role_than_asked_is_dropped() {
        // The spec moved on while the certificate was issued: nothing changes, nothing retries.
        let mut worker = follower(NodeRole::Worker);
        step(
            &mut worker,
            Event::Session(session(Some(NodeRole::Manager))),
        );
        assert_eq!(
            step(&mut worker, issued(NodeRole::Worker, "roots-1", NOW)),
            []
        );
        assert_eq!(worker.node(), &node(NodeRole::Worker));
        assert_eq!(worker.next_wake(), at(START + 500));

        // New roots issued for another role: no install, the role change comes next.
        let mut rotating = follower(NodeRole::Worker);
        let view = SessionView {
            root_ca: b"roots-2".to_vec(),
            ..session(Some(NodeRole::Manager))
        };
        step(&mut rotating, Event::Session(view));
        assert_eq!(
            step(&mut rotating, issued(NodeRole::Manager, "roots-2", NOW)),
            [Command::RenewCertificate]
        );

        // A scheduled renewal issued for another role: reported renewed, nothing installed,
        // the renewal time drawn again from the old certificate (never sooner than 5 s).
        let mut renewing = follower(NodeRole::Worker);
        renewing.step(Event::Tick, at(START + 500), 0.0);
        assert_eq!(
            renewing.step(
                issued(NodeRole::Manager, "roots-1", NOW),
                at(START + 501),
                1.0
            ),
            [report(Report::Renewed)]
        );
        assert_eq!(renewing.node(), &node(NodeRole::Worker));
        assert_eq!(renewing.next_wake(), at(START + 800));
    }

    #[test]
    fn a_scheduled_renewal_installs_the_certificate_and_the_manager_role_takes_it_up() {
        let mut manager = follower(NodeRole::Manager);
        assert_eq!(
            manager.step(Event::Tick, at(START + 500), 0.0),
            [Command::RenewCertificate]
        );
        assert_eq!(
            manager.step(
                issued(NodeRole::Manager, "roots-1", START + 500),
                at(START + 501),
                0.0
            ),
            [Command::InstallCertificate]
        );
        assert_eq!(
            manager.step(Event::Done, at(START + 501), 0.0),
            [Command::ManagerTakesCertificate]
        );
        assert_eq!(
            manager.step(Event::Done, at(START + 502), 0.0),
            [report(Report::Renewed)]
        );
        assert_eq!(manager.node().validity, validity(START + 500));
        assert_eq!(manager.next_wake(), at(START + 1000));
    }

    #[test]
    fn a_round_that_failed_after_new_roots_still_moves_the_renewal_time() {
        let mut worker = follower(NodeRole::Worker);
        let view = SessionView {
            root_ca: b"roots-2".to_vec(),
            ..session(Some(NodeRole::Manager))
        };
        step(&mut worker, Event::Session(view));
        step(
            &mut worker,
            issued(NodeRole::Worker, "roots-2", START + 2000),
        );
        step(&mut worker, Event::Done);
        step(&mut worker, issued(NodeRole::Manager, "roots-2", NOW));
        assert_eq!(
            step(&mut worker, failed()),
            [report(Report::RoleChangeFailed(
                "the managers are away".to_owned()
            ))]
        );
        assert_eq!(worker.node().trusted_roots, b"roots-2");
        assert_eq!(worker.node().role, NodeRole::Worker);
        // The retry (NOW + 5) comes before the new certificate's renewal (START + 2500).
        assert_eq!(worker.next_wake(), at(NOW + 5));
        worker.step(Event::Tick, at(NOW + 5), 0.0);
        assert_eq!(worker.next_wake(), at(START + 2500));
    }

    #[test]
    fn a_session_during_a_renewal_is_acted_on_when_it_ends() {
        let mut worker = follower(NodeRole::Worker);
        worker.step(Event::Tick, at(START + 500), 0.0);
        assert_eq!(
            step(
                &mut worker,
                Event::Session(session(Some(NodeRole::Manager)))
            ),
            []
        );
        assert_eq!(
            step(&mut worker, issued(NodeRole::Worker, "roots-1", NOW)),
            [Command::InstallCertificate]
        );
        assert_eq!(
            step(&mut worker, Event::Done),
            [report(Report::Renewed), Command::RenewCertificate]
        );
        assert_eq!(
            step(&mut worker, issued(NodeRole::Manager, "roots-1", NOW)),
            [Command::TakeRole(NodeRole::Manager)]
        );
    }

    #[test]
    fn certificates_are_renewed_between_half_and_four_fifths_of_their_lifetime() {
        let now = at(START);
        assert_eq!(renewal_time(validity(START), now, 0.0), at(START + 500));
        assert_eq!(renewal_time(validity(START), now, 0.5), at(START + 650));
        assert_eq!(renewal_time(validity(START), now, 1.0), at(START + 800));
        // Out-of-range jitter stays within the window.
        assert_eq!(renewal_time(validity(START), now, 7.0), at(START + 800));
        // Past the point, or unreadable: soon, not never.
        assert_eq!(
            renewal_time(validity(START), at(START + 900), 0.0),
            at(START + 905)
        );
        assert_eq!(renewal_time(None, now, 0.3), at(START + 5));
    }

    #[test]
    fn a_session_message_is_read_for_its_managers_roots_and_desired_role() {
        let message = SessionMessage {
            managers: vec![
                WeightedPeer {
                    peer: Some(Peer {
                        node_id: "a".to_owned(),
                        addr: "10.0.0.1:2377".to_owned(),
                    }),
                    ..Default::default()
                },
                WeightedPeer {
                    peer: Some(Peer {
                        node_id: "b".to_owned(),
                        addr: String::new(),
                    }),
                    ..Default::default()
                },
                WeightedPeer::default(),
            ],
            root_ca: "roots".to_owned(),
            node: Some(Node {
                spec: Some(NodeSpec {
                    desired_role: NodeRole::Manager as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(manager_addrs_of(&message), ["10.0.0.1:2377"]);
        assert_eq!(
            SessionView::of(&message, vec!["kept".to_owned()]),
            SessionView {
                manager_addrs: vec!["kept".to_owned()],
                root_ca: b"roots".to_vec(),
                desired_role: Some(NodeRole::Manager),
            }
        );
        let bare = SessionMessage::default();
        assert_eq!(manager_addrs_of(&bare), Vec::<String>::new());
        assert_eq!(SessionView::of(&bare, Vec::new()).desired_role, None);
    }
}
