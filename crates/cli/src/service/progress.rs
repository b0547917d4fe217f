//! What `service create|update|scale` show while a service converges, after docker's
//! `cli/command/service/progress`: an overall line, one line per slot (or node) with docker's state
//! bar, and a closing verdict. Pure: a `ServiceProgressResponse` in, lines out; [`Screen`] turns
//! successive frames into terminal output (redrawn in place) or plain lines (only changes).

use std::collections::HashMap;

use shoal_proto::api;

use super::format::{task_state_name, truncate_id};

/// docker shows no per-slot lines above this many slots.
const MAX_PROGRESS_BARS: u64 = 20;
/// The longest state name shown (`preparing`), which state columns are padded to.
const LONGEST_STATE: usize = 9;

/// One line of the display: `id: text`, with a bar of `current` out of `total` on a terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProgressLine {
    pub(crate) id: String,
    pub(crate) text: String,
    pub(crate) bar: Option<(u64, u64)>,
}

impl ProgressLine {
    fn new(id: impl Into<String>, text: impl Into<String>) -> ProgressLine {
        ProgressLine {
            id: id.into(),
            text: text.into(),
            bar: None,
        }
    }

    /// The line as printed; `with_bar` on terminals only, as docker does.
    pub(crate) fn render(&self, with_bar: bool) -> String {
        let mut line = format!("{}: {}", self.id, self.text);
        if with_bar && let Some((current, total)) = self.bar {
            line.push(' ');
            line.push_str(&bar(current, total));
        }
        line.trim_end().to_owned()
    }
}

/// docker's progress bar: 50 cells of `=` ending in `>`.
fn bar(current: u64, total: u64) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((current as f64 / total as f64 * 100.0) as u64 / 2).min(50) as usize
    };
    format!("[{}>{}]", "=".repeat(filled), " ".repeat(50 - filled))
}

/// docker's ordering of task states for the bars (`numberedStates`); 0 for states not shown.
fn state_number(state: i32) -> u64 {
    use api::TaskState as S;
    match S::try_from(state) {
        Ok(S::New) => 1,
        Ok(S::Pending) => 3,
        Ok(S::Assigned) => 4,
        Ok(S::Accepted) => 5,
        Ok(S::Preparing) => 6,
        Ok(S::Ready) => 7,
        Ok(S::Starting) => 8,
        Ok(S::Running) => 9,
        Ok(S::Complete) => 10,
        Ok(S::Shutdown) => 11,
        Ok(S::Failed) => 12,
        Ok(S::Rejected) => 13,
        _ => 0,
    }
}

fn is_terminal(state: i32) -> bool {
    let number = state_number(state);
    number == 0 || number > 9
}

/// docker's `truncError`: one line, at most 75 characters.
fn trunc_error(message: &str) -> String {
    let one_line = message.replace('\n', " ");
    if one_line.chars().count() > 75 {
        let mut cut: String = one_line.chars().take(74).collect();
        cut.push('…');
        cut
    } else {
        one_line
    }
}

enum Kind {
    Replicated,
    Global,
    ReplicatedJob { max_concurrent: u64 },
    GlobalJob,
}

fn kind(response: &api::ServiceProgressResponse) -> Kind {
    match response
        .service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.mode.as_ref())
    {
        Some(api::service_spec::Mode::Global(_)) => Kind::Global,
        Some(api::service_spec::Mode::ReplicatedJob(job)) => Kind::ReplicatedJob {
            max_concurrent: if job.max_concurrent == 0 {
                job.total_completions
            } else {
                job.max_concurrent
            },
        },
        Some(api::service_spec::Mode::GlobalJob(_)) => Kind::GlobalJob,
        _ => Kind::Replicated,
    }
}

fn update_state(
    response: &api::ServiceProgressResponse,
) -> Option<api::update_status::UpdateState> {
    let status = response.service.as_ref()?.update_status.as_ref()?;
    api::update_status::UpdateState::try_from(status.state).ok()
}

fn update_message(response: &api::ServiceProgressResponse) -> String {
    response
        .service
        .as_ref()
        .and_then(|s| s.update_status.as_ref())
        .map(|s| s.message.clone())
        .unwrap_or_default()
}

/// The text of one slot's (or node's) line for services: the error if the task has one, why it is
/// still pending if the scheduler said, else its state with a bar.
fn task_line(id: String, task: &api::Task, total: u64, jobs: bool) -> ProgressLine {
    let status = task.status.clone().unwrap_or_default();
    if !status.err.is_empty() {
        return ProgressLine::new(id, trunc_error(&status.err));
    }
    let pending = status.state == api::TaskState::Pending as i32;
    if pending && !status.message.is_empty() && status.message != "pending task scheduling" {
        return ProgressLine::new(id, trunc_error(&status.message));
    }
    let name = task_state_name(status.state);
    if jobs || (!is_terminal(status.state) && !is_terminal(task.desired_state)) {
        ProgressLine {
            id,
            text: format!("{name:<LONGEST_STATE$}"),
            bar: Some((state_number(status.state), total)),
        }
    } else {
        ProgressLine::new(id, name)
    }
}

/// The lines for one message of `ServiceProgress`, in docker's order.
pub(crate) fn render(response: &api::ServiceProgressResponse) -> Vec<ProgressLine> {
    let desired = response.desired;
    let done = response.done;
    let rolling_back = matches!(
        update_state(response),
        Some(api::update_status::UpdateState::RollbackStarted)
    );
    let overall = |text: String| {
        if rolling_back {
            ProgressLine::new("overall progress", format!("rolling back update: {text}"))
        } else {
            ProgressLine::new("overall progress", text)
        }
    };
    let mut lines = Vec::new();
    // docker names why a rollback runs on a line of its own above the rest.
    let message = update_message(response);
    if rolling_back && !message.is_empty() {
        lines.push(ProgressLine::new("rollback", message));
    }
    match kind(response) {
        Kind::Replicated => {
            lines.push(overall(format!("{done} out of {desired} tasks")));
            if desired <= MAX_PROGRESS_BARS {
                for slot in 1..=desired {
                    let id = format!("{slot}/{desired}");
                    let index = usize::try_from(slot - 1).unwrap_or(usize::MAX);
                    lines.push(match response.slot_tasks.get(index) {
                        Some(task) => task_line(id, task, 9, false),
                        None => ProgressLine::new(id, ""),
                    });
                }
            }
        }
        Kind::Global => {
            if desired == 0 && response.slot_tasks.is_empty() {
                lines.push(ProgressLine::new(
                    "overall progress",
                    "waiting for new tasks",
                ));
            } else {
                lines.push(overall(format!("{done} out of {desired} tasks")));
                if desired <= MAX_PROGRESS_BARS {
                    for task in &response.slot_tasks {
                        lines.push(task_line(
                            truncate_id(&task.node_id).to_owned(),
                            task,
                            9,
                            false,
                        ));
                    }
                }
            }
        }
        Kind::ReplicatedJob { max_concurrent } => {
            let width = desired.to_string().len();
            lines.push(ProgressLine {
                id: "job progress".into(),
                text: format!("{done:>width$} out of {desired} complete"),
                bar: Some((done, desired)),
            });
            let active = response
                .slot_tasks
                .iter()
                .filter(|t| {
                    let state = state_number(t.status.as_ref().map_or(0, |s| s.state));
                    (1..10).contains(&state)
                })
                .count();
            let possible = desired.saturating_sub(done).min(max_concurrent);
            let active_width = max_concurrent.to_string().len();
            lines.push(ProgressLine::new(
                "active tasks",
                format!("{active:>active_width$} out of {possible:>active_width$} tasks"),
            ));
            if desired <= MAX_PROGRESS_BARS {
                for slot in 1..=desired {
                    let id = format!("{slot}/{desired}");
                    let index = usize::try_from(slot - 1).unwrap_or(usize::MAX);
                    lines.push(match response.slot_tasks.get(index) {
                        Some(task) => task_line(id, task, 10, true),
                        None => ProgressLine::new(id, ""),
                    });
                }
            }
        }
        Kind::GlobalJob => {
            if desired == 0 && response.slot_tasks.is_empty() {
                lines.push(ProgressLine::new("job progress", "waiting for tasks"));
            } else {
                let width = desired.to_string().len();
                lines.push(ProgressLine {
                    id: "job progress".into(),
                    text: format!("{done:>width$} out of {desired} complete"),
                    bar: Some((done, desired)),
                });
                if desired <= MAX_PROGRESS_BARS {
                    for task in &response.slot_tasks {
                        lines.push(task_line(task.node_id.clone(), task, 10, true));
                    }
                }
            }
        }
    }
    let monitoring = matches!(
        update_state(response),
        Some(
            api::update_status::UpdateState::Updating
                | api::update_status::UpdateState::RollbackStarted
        )
    );
    if monitoring && desired > 0 && done >= desired {
        lines.push(ProgressLine::new(
            "verify",
            format!(
                "Waiting {} seconds to verify that tasks are stable...",
                monitor_seconds(response)
            ),
        ));
    }
    lines
}

/// The monitor period of the update under way, in whole seconds rounded up, as docker shows it.
fn monitor_seconds(response: &api::ServiceProgressResponse) -> u64 {
    let spec = response.service.as_ref().and_then(|s| s.spec.as_ref());
    let rolling_back = matches!(
        update_state(response),
        Some(api::update_status::UpdateState::RollbackStarted)
    );
    let config = spec.and_then(|spec| {
        if rolling_back {
            spec.rollback.as_ref()
        } else {
            spec.update.as_ref()
        }
    });
    match config.and_then(|config| config.monitor.as_ref()) {
        Some(monitor) => {
            let seconds = u64::try_from(monitor.seconds).unwrap_or(0);
            seconds + u64::from(monitor.nanos > 0)
        }
        None => 5,
    }
}

/// What the command that waits asked for: an update (or create or scale) succeeds on its new
/// spec, while a rollback succeeds when it has completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expecting {
    Update,
    Rollback,
}

/// Where waiting stands after one progress message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Waiting,
    /// Done; the lines that close the display.
    Converged(Vec<ProgressLine>),
    /// The waiting ends with an error carrying this message.
    Failed(String),
}

/// Why the service is being rolled back, while it is: a completed rollback's own message only
/// says that it completed, so the waiting command keeps the reason from earlier messages.
pub(crate) fn rollback_reason(response: &api::ServiceProgressResponse) -> Option<String> {
    (update_state(response) == Some(api::update_status::UpdateState::RollbackStarted))
        .then(|| update_message(response))
}

/// Decides whether to keep waiting. `reference` is what the user called the service;
/// `rollback_reason` what [`rollback_reason`] last returned.
pub(crate) fn outcome(
    response: &api::ServiceProgressResponse,
    reference: &str,
    expecting: Expecting,
    rollback_reason: Option<&str>,
) -> Outcome {
    use api::service_progress_response::Verdict;
    use api::update_status::UpdateState;
    let id = response
        .service
        .as_ref()
        .map_or(reference, |s| s.id.as_str());
    match update_state(response) {
        Some(UpdateState::Paused) => {
            return Outcome::Failed(format!(
                "service update paused: {}; see why with 'shoal service ps {reference}', then fix the spec with 'shoal service update {reference}'",
                update_message(response)
            ));
        }
        Some(UpdateState::RollbackPaused) => {
            return Outcome::Failed(format!(
                "service rollback paused: {}; see why with 'shoal service ps {reference}', then fix the spec with 'shoal service update {reference}'",
                update_message(response)
            ));
        }
        _ => {}
    }
    match Verdict::try_from(response.verdict) {
        Ok(Verdict::Converged) => {
            if expecting == Expecting::Update
                && let Some(UpdateState::RollbackCompleted) = update_state(response)
            {
                return Outcome::Failed(format!(
                    "service {reference} was rolled back: {}; see why with 'shoal service ps {reference}', then fix the spec with 'shoal service update {reference}'",
                    rollback_reason.map_or_else(|| update_message(response), str::to_owned)
                ));
            }
            let closing = match kind(response) {
                Kind::ReplicatedJob { .. } | Kind::GlobalJob => {
                    ProgressLine::new("job", "complete")
                }
                Kind::Replicated | Kind::Global => {
                    ProgressLine::new("verify", format!("Service {id} converged"))
                }
            };
            Outcome::Converged(vec![closing])
        }
        Ok(Verdict::CannotConverge) => {
            let reasons = if response.reasons.is_empty() {
                "no reason given".to_owned()
            } else {
                response.reasons.join("; ")
            };
            Outcome::Failed(format!(
                "service {reference} cannot converge: {reasons}; fix the spec with 'shoal service update {reference}' or remove it with 'shoal service rm {reference}'"
            ))
        }
        _ => Outcome::Waiting,
    }
}

/// Turns successive frames into output: on a terminal the whole block is redrawn in place, with
/// bars; otherwise only lines whose text changed are printed, plainly.
#[derive(Debug)]
pub(crate) struct Screen {
    terminal: bool,
    drawn_lines: usize,
    drawn: Vec<String>,
    printed: HashMap<String, String>,
}

impl Screen {
    pub(crate) fn new(terminal: bool) -> Screen {
        Screen {
            terminal,
            drawn_lines: 0,
            drawn: Vec::new(),
            printed: HashMap::new(),
        }
    }

    /// The bytes to write for `lines`; empty when nothing changed.
    pub(crate) fn frame(&mut self, lines: &[ProgressLine]) -> String {
        if self.terminal {
            let rendered: Vec<String> = lines.iter().map(|l| l.render(true)).collect();
            if rendered == self.drawn {
                return String::new();
            }
            let mut out = String::new();
            if self.drawn_lines > 0 {
                out.push_str(&format!("\x1b[{}A\r\x1b[J", self.drawn_lines));
            }
            for line in &rendered {
                out.push_str(line);
                out.push('\n');
            }
            self.drawn_lines = rendered.len();
            self.drawn = rendered;
            out
        } else {
            let mut out = String::new();
            for line in lines {
                let text = line.render(false);
                if self.printed.get(&line.id) != Some(&text) {
                    out.push_str(&text);
                    out.push('\n');
                    self.printed.insert(line.id.clone(), text);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::service_progress_response::Verdict;

    fn task(slot: u64, node: &str, state: api::TaskState) -> api::Task {
        api::Task {
            id: format!("task{slot}"),
            slot,
            node_id: node.into(),
            status: Some(api::TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: api::TaskState::Running as i32,
            ..Default::default()
        }
    }

    fn response(
        mode: api::service_spec::Mode,
        tasks: Vec<api::Task>,
        desired: u64,
        done: u64,
        verdict: Verdict,
    ) -> api::ServiceProgressResponse {
        api::ServiceProgressResponse {
            service: Some(api::Service {
                id: "svcid".into(),
                spec: Some(api::ServiceSpec {
                    mode: Some(mode),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            slot_tasks: tasks,
            desired,
            done,
            verdict: verdict as i32,
            reasons: Vec::new(),
        }
    }

    fn replicated(replicas: u64) -> api::service_spec::Mode {
        api::service_spec::Mode::Replicated(api::ReplicatedService { replicas })
    }

    fn rendered(lines: &[ProgressLine], with_bar: bool) -> Vec<String> {
        lines.iter().map(|l| l.render(with_bar)).collect()
    }

    #[test]
    fn replicated_services_show_docker_bars() {
        let mut pending = task(3, "n1", api::TaskState::Pending);
        if let Some(status) = pending.status.as_mut() {
            status.message = "no suitable node (insufficient resources on 1 node)".into();
        }
        let mut failed = task(2, "n1", api::TaskState::Rejected);
        if let Some(status) = failed.status.as_mut() {
            status.err = "No such image: nginx:nope".into();
        }
        let progress = response(
            replicated(4),
            vec![task(1, "n1", api::TaskState::Running), failed, pending],
            4,
            1,
            Verdict::Converging,
        );
        let lines = render(&progress);
        assert_eq!(
            rendered(&lines, true),
            [
                "overall progress: 1 out of 4 tasks".to_owned(),
                format!("1/4: running   [{}>]", "=".repeat(50)),
                "2/4: No such image: nginx:nope".to_owned(),
                "3/4: no suitable node (insufficient resources on 1 node)".to_owned(),
                "4/4:".to_owned(),
            ]
        );
        let starting = response(
            replicated(1),
            vec![task(1, "n1", api::TaskState::Preparing)],
            1,
            0,
            Verdict::Converging,
        );
        assert_eq!(
            rendered(&render(&starting), true)[1],
            format!("1/1: preparing [{}>{}]", "=".repeat(33), " ".repeat(17))
        );
        assert_eq!(rendered(&render(&starting), false)[1], "1/1: preparing");
        assert_eq!(
            outcome(&progress, "web", Expecting::Update, None),
            Outcome::Waiting
        );
    }

    #[test]
    fn many_replicas_show_only_the_overall_line() {
        let progress = response(replicated(21), Vec::new(), 21, 0, Verdict::Converging);
        assert_eq!(
            rendered(&render(&progress), false),
            ["overall progress: 0 out of 21 tasks"]
        );
    }

    #[test]
    fn global_and_job_services() {
        let global = response(
            api::service_spec::Mode::Global(api::GlobalService {}),
            vec![task(0, "abcdefghijklmnopq", api::TaskState::Running)],
            1,
            1,
            Verdict::Converged,
        );
        assert_eq!(
            rendered(&render(&global), false),
            [
                "overall progress: 1 out of 1 tasks",
                "abcdefghijkl: running"
            ]
        );
        assert_eq!(
            outcome(&global, "web", Expecting::Update, None),
            Outcome::Converged(vec![ProgressLine::new("verify", "Service svcid converged")])
        );
        let waiting = response(
            api::service_spec::Mode::Global(api::GlobalService {}),
            Vec::new(),
            0,
            0,
            Verdict::Converging,
        );
        assert_eq!(
            rendered(&render(&waiting), false),
            ["overall progress: waiting for new tasks"]
        );

        let job = response(
            api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 3,
            }),
            vec![
                task(1, "n", api::TaskState::Complete),
                task(2, "n", api::TaskState::Complete),
                task(3, "n", api::TaskState::Running),
            ],
            3,
            2,
            Verdict::Converging,
        );
        assert_eq!(
            rendered(&render(&job), false),
            [
                "job progress: 2 out of 3 complete",
                "active tasks: 1 out of 1 tasks",
                "1/3: complete",
                "2/3: complete",
                "3/3: running",
            ]
        );
        assert_eq!(
            rendered(&render(&job), true)[2],
            format!("1/3: complete  [{}>]", "=".repeat(50))
        );
        let done = api::ServiceProgressResponse {
            verdict: Verdict::Converged as i32,
            ..job
        };
        assert_eq!(
            outcome(&done, "job", Expecting::Update, None),
            Outcome::Converged(vec![ProgressLine::new("job", "complete")])
        );
    }

    #[test]
    fn cannot_converge_and_paused_updates_fail_with_advice() {
        let mut stuck = response(replicated(1), Vec::new(), 1, 0, Verdict::CannotConverge);
        stuck.reasons = vec!["no suitable node (1 node not available for new tasks)".into()];
        assert_eq!(
            outcome(&stuck, "web", Expecting::Update, None),
            Outcome::Failed(
                "service web cannot converge: no suitable node (1 node not available for new tasks); fix the spec with 'shoal service update web' or remove it with 'shoal service rm web'"
                    .into()
            )
        );
        let mut paused = response(replicated(1), Vec::new(), 1, 0, Verdict::Converging);
        if let Some(service) = paused.service.as_mut() {
            service.update_status = Some(api::UpdateStatus {
                state: api::update_status::UpdateState::Paused as i32,
                message: "update paused due to failure or early termination of task x".into(),
                ..Default::default()
            });
        }
        match outcome(&paused, "web", Expecting::Update, None) {
            Outcome::Failed(message) => {
                assert!(message.starts_with("service update paused: update paused due to failure"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rollbacks_name_their_reason_and_succeed_only_when_asked_for() {
        let mut rolled_back = response(
            replicated(1),
            vec![task(1, "n1", api::TaskState::Running)],
            1,
            1,
            Verdict::Converging,
        );
        let set_state = |response: &mut api::ServiceProgressResponse, state, message: &str| {
            if let Some(service) = response.service.as_mut() {
                service.update_status = Some(api::UpdateStatus {
                    state: state as i32,
                    message: message.into(),
                    ..Default::default()
                });
            }
        };
        use api::update_status::UpdateState;
        set_state(
            &mut rolled_back,
            UpdateState::RollbackStarted,
            "update rolled back due to failure or early termination of task x",
        );
        let lines = rendered(&render(&rolled_back), false);
        assert_eq!(
            lines[..2],
            [
                "rollback: update rolled back due to failure or early termination of task x",
                "overall progress: rolling back update: 1 out of 1 tasks",
            ]
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("verify: Waiting 5 seconds to verify that tasks are stable...")
        );

        rolled_back.verdict = Verdict::Converged as i32;
        set_state(
            &mut rolled_back,
            UpdateState::RollbackCompleted,
            "rollback completed",
        );
        assert!(matches!(
            outcome(&rolled_back, "web", Expecting::Update, None),
            Outcome::Failed(message) if message.starts_with("service web was rolled back")
        ));
        assert!(matches!(
            outcome(&rolled_back, "web", Expecting::Rollback, None),
            Outcome::Converged(_)
        ));
    }

    #[test]
    fn screens_redraw_on_terminals_and_print_changes_otherwise() {
        let first = vec![
            ProgressLine::new("overall progress", "0 out of 1 tasks"),
            ProgressLine::new("1/1", ""),
        ];
        let second = vec![
            ProgressLine::new("overall progress", "0 out of 1 tasks"),
            ProgressLine::new("1/1", "pending"),
        ];
        let mut plain = Screen::new(false);
        assert_eq!(
            plain.frame(&first),
            "overall progress: 0 out of 1 tasks\n1/1:\n"
        );
        assert_eq!(plain.frame(&first), "");
        assert_eq!(plain.frame(&second), "1/1: pending\n");

        let mut terminal = Screen::new(true);
        assert_eq!(
            terminal.frame(&first),
            "overall progress: 0 out of 1 tasks\n1/1:\n"
        );
        assert_eq!(terminal.frame(&first), "");
        assert_eq!(
            terminal.frame(&second),
            "\x1b[2A\r\x1b[Joverall progress: 0 out of 1 tasks\n1/1: pending\n"
        );
    }
}
