//! What `exec` is asked to run ([`ExecSpec`]) and the pure translation of it into the OCI
//! process a runtime is handed ([`exec_process`]), derived from the container's own process as
//! Docker derives an exec's: the container's capabilities, limits, environment, working
//! directory and user, with the request's arguments, environment, directory, user and terminal
//! over them. No IO happens here.

use oci_spec::runtime::Process;

use crate::error::{EngineError, Result};
use crate::spec::ResolvedUser;

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub columns: u16,
}

/// What to run in a running container, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Gives the command a pseudo-terminal as its stdin, stdout, stderr and controlling
    /// terminal; all its output then comes as stdout.
    pub tty: bool,
    /// Keeps the command's stdin open for the caller's input; otherwise it reads `/dev/null`.
    pub attach_stdin: bool,
    /// `KEY=value` over the container's environment; a bare `KEY` removes it (Docker's rule).
    pub env: Vec<String>,
    /// An absolute directory; the container's when absent.
    pub workdir: Option<String>,
    /// `uid[:gid]` or `name[:group]` from the container's `/etc/passwd` and `/etc/group`; the
    /// container's user when absent.
    pub user: Option<String>,
    /// The terminal's size from the start (with `tty`).
    pub size: Option<TerminalSize>,
}

impl ExecSpec {
    /// `args` with the container's environment, directory and user, no terminal and no input:
    /// a healthcheck probe, `ExecContainer`.
    pub fn command(args: Vec<String>) -> ExecSpec {
        ExecSpec {
            args,
            ..ExecSpec::default()
        }
    }
}

/// What every exec gets unless its container or the request says otherwise: Docker sets
/// `TERM=xterm` for a command given a terminal.
const TTY_TERM: &str = "TERM=xterm";

/// Checks what can be checked before anything runs: a command, an absolute working directory,
/// environment entries with a name.
pub fn validate(spec: &ExecSpec) -> Result<()> {
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(EngineError::invalid(
            "exec",
            "no command given: name what to run in the container",
        ));
    }
    if let Some(workdir) = &spec.workdir
        && !workdir.starts_with('/')
    {
        return Err(EngineError::invalid(
            "exec working directory",
            format!("{workdir:?} is relative: give an absolute path, such as /{workdir}"),
        ));
    }
    if let Some(entry) = spec.env.iter().find(|e| e.is_empty() || e.starts_with('=')) {
        return Err(EngineError::invalid(
            "exec environment",
            format!("{entry:?} has no name: write KEY=value (or KEY to remove KEY)"),
        ));
    }
    Ok(())
}

/// The environment an exec runs with: the container's, `TERM=xterm` with a terminal when the
/// container sets no `TERM`, then `overrides` replacing or adding by name, and a bare `KEY` in
/// them removing `KEY`.
pub fn exec_env(container: &[String], overrides: &[String], tty: bool) -> Vec<String> {
    fn name(entry: &str) -> &str {
        entry.split_once('=').map_or(entry, |(name, _)| name)
    }
    let mut env: Vec<String> = container.to_vec();
    if tty && !env.iter().any(|e| name(e) == "TERM") {
        env.push(TTY_TERM.to_owned());
    }
    for entry in overrides {
        let key = name(entry);
        env.retain(|existing| name(existing) != key);
        if entry.contains('=') {
            env.push(entry.clone());
        }
    }
    env
}

/// The OCI process for `spec`, from the container's own process `container` (its
/// `config.json`): its capabilities, limits and privileges stay; the arguments are the exec's;
/// environment, directory and user are the exec's over the container's; `user` is `spec.user`
/// resolved in the container, and keeps the container's supplementary groups (`--group-add`)
/// as Docker's exec does.
pub fn exec_process(
    container: &Process,
    spec: &ExecSpec,
    user: Option<&ResolvedUser>,
) -> Result<Process> {
    validate(spec)?;
    let mut process = container.clone();
    process.set_args(Some(spec.args.clone()));
    process.set_command_line(None);
    let env = exec_env(
        container.env().as_deref().unwrap_or_default(),
        &spec.env,
        spec.tty,
    );
    process.set_env(Some(env));
    if let Some(workdir) = &spec.workdir {
        process.set_cwd(workdir.into());
    }
    if let Some(user) = user {
        let process_user = process.user_mut();
        process_user.set_uid(user.uid);
        process_user.set_gid(user.gid);
    }
    process.set_terminal(Some(spec.tty));
    let console_size = match spec.size.filter(|_| spec.tty) {
        None => None,
        Some(size) => Some(
            oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(size.rows))
                .width(u64::from(size.columns))
                .build()
                .map_err(|e| EngineError::invalid("terminal size", e))?,
        ),
    };
    process.set_console_size(console_size);
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A container's process as `spec::runtime_spec` writes it: user 0:0 with a supplementary
    /// group, PATH and HOME, `/srv`.
    fn container_process() -> Process {
        serde_json::from_value(serde_json::json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0, "additionalGids": [50]},
            "args": ["sleep", "3600"],
            "env": ["PATH=/bin", "HOME=/root"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]},
            "noNewPrivileges": false,
        }))
        .expect("a process")
    }

    #[test]
    fn a_plain_command_keeps_the_containers_process_but_its_arguments() -> Result<()> {
        let container = container_process();
        let process = exec_process(&container, &ExecSpec::command(strings(&["ls", "-l"])), None)?;
        assert_eq!(process.args().as_deref(), Some(&strings(&["ls", "-l"])[..]));
        assert_eq!(process.env(), container.env());
        assert_eq!(process.cwd(), container.cwd());
        assert_eq!(process.user(), container.user());
        assert_eq!(process.capabilities(), container.capabilities());
        assert_eq!(process.terminal(), Some(false));
        assert_eq!(process.console_size(), None);
        Ok(())
    }

    #[test]
    fn a_terminal_brings_term_and_its_size() -> Result<()> {
        let spec = ExecSpec {
            args: strings(&["sh"]),
            tty: true,
            size: Some(TerminalSize {
                rows: 24,
                columns: 80,
            }),
            ..ExecSpec::default()
        };
        let process = exec_process(&container_process(), &spec, None)?;
        assert_eq!(process.terminal(), Some(true));
        let size = process.console_size().expect("a console size");
        assert_eq!((size.height(), size.width()), (24, 80));
        assert_eq!(
            process.env().as_deref(),
            Some(&strings(&["PATH=/bin", "HOME=/root", "TERM=xterm"])[..])
        );
        Ok(())
    }

    #[test]
    fn the_environment_follows_dockers_replace_append_and_remove_rule() {
        let container = strings(&["PATH=/bin", "TERM=vt100", "A=1", "B=2"]);
        assert_eq!(
            exec_env(&container, &strings(&["A=one", "C=3", "B", "UNSET"]), true),
            strings(&["PATH=/bin", "TERM=vt100", "A=one", "C=3"]),
            "the container's TERM wins over xterm; A replaced, C added, B removed"
        );
        assert_eq!(
            exec_env(&strings(&["PATH=/bin"]), &strings(&["X=a=b"]), false),
            strings(&["PATH=/bin", "X=a=b"])
        );
    }

    #[test]
    fn workdir_and_user_replace_the_containers_keeping_its_groups() -> Result<()> {
        let spec = ExecSpec {
            args: strings(&["id"]),
            workdir: Some("/tmp".to_owned()),
            user: Some("nobody".to_owned()),
            ..ExecSpec::default()
        };
        let user = ResolvedUser {
            uid: 65534,
            gid: 65533,
            additional_gids: Vec::new(),
        };
        let process = exec_process(&container_process(), &spec, Some(&user))?;
        assert_eq!(process.cwd().to_str(), Some("/tmp"));
        assert_eq!((process.user().uid(), process.user().gid()), (65534, 65533));
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[50][..]));
        Ok(())
    }

    #[test]
    fn bad_requests_are_refused_saying_what_to_give() {
        let refused = |spec: ExecSpec| validate(&spec).unwrap_err().to_string();
        assert!(refused(ExecSpec::default()).contains("no command given"));
        let relative = refused(ExecSpec {
            args: strings(&["ls"]),
            workdir: Some("tmp".to_owned()),
            ..ExecSpec::default()
        });
        assert!(
            relative.contains("give an absolute path, such as /tmp"),
            "{relative}"
        );
        let nameless = refused(ExecSpec {
            args: strings(&["ls"]),
            env: strings(&["=x"]),
            ..ExecSpec::default()
        });
        assert!(nameless.contains("write KEY=value"), "{nameless}");
    }
}
