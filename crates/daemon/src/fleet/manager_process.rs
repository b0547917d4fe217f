//! A fleet manager in a process of its own, as a real manager is: its memory and CPU can be read
//! apart from the simulated agents', and killing it is a real `SIGKILL` (its Raft member stops,
//! the kernel resets its connections).
//!
//! The fleet runs a program that hands [`MANAGER_SUBCOMMAND`]'s arguments to [`serve_manager`]
//! (bench-fleet does). The child tells the parent on its standard output, a line each:
//! `tokens WORKER MANAGER` (a founding manager only), `ready ADDR` once it serves the cluster
//! port, then `leader yes` or `leader no` whenever that changes. It shuts down in order when its
//! standard input closes, so it never outlives the fleet.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use manager::data_key::StoredDataKey;
use manager::{InitOptions, ManagerRole, SwarmDir};
use shoal_proto::api::GetClusterRequest;
use shoal_proto::api::control_server::Control as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use super::{FleetError, LEADER_PATIENCE, free_port};

/// The first argument that makes a fleet program serve as a manager.
pub const MANAGER_SUBCOMMAND: &str = "fleet-manager";

/// How often the child looks at its Raft status to tell the parent who leads.
const LEADER_POLL: Duration = Duration::from_millis(10);
/// How long a manager has to found, join or restart and serve its port.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How long an orderly stop may take before the child is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
const MIB: f64 = 1024.0 * 1024.0;

/// How a manager process starts: the arguments after [`MANAGER_SUBCOMMAND`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Launch {
    /// Founds the swarm, listening on `ip`.
    Init {
        dir: PathBuf,
        ip: String,
        heartbeat: Duration,
    },
    /// Joins the swarm through `first` with the manager token, listening on `ip`.
    Join {
        dir: PathBuf,
        ip: String,
        first: String,
        token: String,
        index: usize,
    },
    /// Starts again from its data, where it listened before.
    Restart { dir: PathBuf },
}

impl Launch {
    fn to_args(&self) -> Vec<String> {
        let dir = |dir: &Path| dir.display().to_string();
        match self {
            Launch::Init {
                dir: d,
                ip,
                heartbeat,
            } => vec![
                "init".into(),
                dir(d),
                ip.clone(),
                heartbeat.as_millis().to_string(),
            ],
            Launch::Join {
                dir: d,
                ip,
                first,
                token,
                index,
            } => vec![
                "join".into(),
                dir(d),
                ip.clone(),
                first.clone(),
                token.clone(),
                index.to_string(),
            ],
            Launch::Restart { dir: d } => vec!["restart".into(), dir(d)],
        }
    }

    fn parse(args: &[String]) -> Result<Launch, String> {
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|error| format!("{value} is not a number: {error}"))
        };
        match args {
            [init, dir, ip, heartbeat_ms] if init == "init" => Ok(Launch::Init {
                dir: dir.into(),
                ip: ip.clone(),
                heartbeat: Duration::from_millis(number(heartbeat_ms)?),
            }),
            [join, dir, ip, first, token, index] if join == "join" => Ok(Launch::Join {
                dir: dir.into(),
                ip: ip.clone(),
                first: first.clone(),
                token: token.clone(),
                index: number(index)? as usize,
            }),
            [restart, dir] if restart == "restart" => Ok(Launch::Restart { dir: dir.into() }),
            _ => Err(format!(
                "{MANAGER_SUBCOMMAND} takes `init DIR IP HEARTBEAT_MS`, `join DIR IP FIRST_ADDR TOKEN INDEX` or `restart DIR`, not {args:?}"
            )),
        }
    }
}

/// Serves as a fleet manager until standard input closes; the process's exit code.
pub fn serve_manager(args: &[String]) -> i32 {
    let launch = match Launch::parse(args) {
        Ok(launch) => launch,
        Err(error) => {
            eprintln!("fleet manager: {error}");
            return 2;
        }
    };
    let runtime = match crate::daemon_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleet manager: starting its runtime: {error}");
            return 1;
        }
    };
    match runtime.block_on(serve(launch)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("fleet manager: {error}");
            1
        }
    }
}

async fn serve(launch: Launch) -> Result<(), FleetError> {
    let role = match launch {
        Launch::Init { dir, ip, heartbeat } => {
            let role = found(&SwarmDir::new(&dir), &ip, heartbeat).await?;
            let tokens = role
                .control()
                .get_cluster(tonic::Request::new(GetClusterRequest {}))
                .await
                .map_err(|status| {
                    FleetError::Unavailable(format!("reading the join tokens: {status}"))
                })?
                .into_inner()
                .cluster
                .and_then(|cluster| cluster.root_ca)
                .and_then(|root_ca| root_ca.join_tokens)
                .ok_or_else(|| FleetError::Unavailable("the cluster has no join tokens".into()))?;
            say(&format!("tokens {} {}", tokens.worker, tokens.manager)).await?;
            role
        }
        Launch::Join {
            dir,
            ip,
            first,
            token,
            index,
        } => join_manager(&dir, &ip, &first, &token, index).await?,
        Launch::Restart { dir } => restart(&SwarmDir::new(&dir)).await?,
    };
    say(&format!("ready {}", role.membership().advertise_addr)).await?;
    let mut stdin_closed = Box::pin(async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    });
    let mut leads = None;
    loop {
        let now = role.store().status().is_leader;
        if leads != Some(now) {
            leads = Some(now);
            say(if now { "leader yes" } else { "leader no" }).await?;
        }
        tokio::select! {
            _ = &mut stdin_closed => break,
            _ = tokio::time::sleep(LEADER_POLL) => {}
        }
    }
    role.shutdown().await;
    Ok(())
}

/// One line to the parent.
async fn say(line: &str) -> Result<(), FleetError> {
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{line}\n").as_bytes())
        .await
        .and(stdout.flush().await)
        .map_err(FleetError::io("telling the fleet"))
}

async fn found(dir: &SwarmDir, ip: &str, heartbeat: Duration) -> Result<ManagerRole, FleetError> {
    let options = InitOptions {
        advertise_addr: ip.to_owned(),
        listen_addr: format!("{ip}:0"),
        hostname: "fleet-manager-0".to_owned(),
        dispatcher_heartbeat: Some(heartbeat),
        ..InitOptions::default()
    };
    ManagerRole::init(dir, options, Default::default())
        .await
        .map_err(FleetError::manager("founding the fleet's swarm"))
}

async fn restart(dir: &SwarmDir) -> Result<ManagerRole, FleetError> {
    let what = "restarting a fleet manager";
    let (membership, identity) = dir
        .load()
        .map_err(FleetError::manager(what))?
        .ok_or_else(|| FleetError::Unavailable(format!("{what}: it has no swarm state")))?;
    let StoredDataKey::Clear(data_key) = dir.load_data_key().map_err(FleetError::manager(what))?
    else {
        return Err(FleetError::Unavailable(format!(
            "{what}: its data key is sealed (the fleet never turns autolock on)"
        )));
    };
    ManagerRole::start(dir, membership, identity, data_key, Default::default())
        .await
        .map_err(FleetError::manager(what))
}

/// Joins a manager as a daemon does: admitted by the CA with the manager token, its role
/// started on its own loopback address, and taken into the Raft group.
async fn join_manager(
    data_root: &Path,
    ip: &str,
    first_addr: &str,
    token: &str,
    index: usize,
) -> Result<ManagerRole, FleetError> {
    let what = format!("joining manager {index}");
    let grant = manager::join::join(first_addr, token, &format!("fleet-manager-{index}"), "")
        .await
        .map_err(FleetError::manager(what.clone()))?;
    let addr = format!("{ip}:{}", free_port(ip)?);
    let membership = grant.membership(addr.clone(), addr.clone(), vec![first_addr.to_owned()]);
    let role = ManagerRole::start_new(
        &SwarmDir::new(data_root),
        membership.clone(),
        grant.identity.clone(),
        Default::default(),
    )
    .await
    .map_err(FleetError::manager(what.clone()))?;
    let joined = tokio::time::timeout(
        LEADER_PATIENCE,
        manager::join::join_raft(
            &membership.manager_addrs,
            &grant.identity,
            membership.raft_member_id,
            &addr,
        ),
    )
    .await;
    let failed = match joined {
        Ok(Ok(())) => return Ok(role),
        Ok(Err(error)) => FleetError::Manager {
            what: format!("{what}: taking it into the Raft group"),
            source: error,
        },
        Err(_) => FleetError::Unavailable(format!("{what}: not a voter after {LEADER_PATIENCE:?}")),
    };
    role.shutdown().await;
    Err(failed)
}

/// What a manager process said when it was up.
pub(crate) struct Started {
    pub(crate) addr: String,
    /// The worker and manager join tokens, from a founding manager.
    pub(crate) tokens: Option<(String, String)>,
}

/// A running manager process, seen from the fleet.
pub(crate) struct ManagerProcess {
    child: tokio::process::Child,
    /// Closing it asks the child to stop.
    stdin: Option<tokio::process::ChildStdin>,
    leads: Arc<AtomicBool>,
}

impl ManagerProcess {
    /// Starts `program` as a manager and waits until it serves its cluster port. Its errors go
    /// to this process's standard error.
    pub(crate) async fn launch(
        program: &Path,
        launch: &Launch,
        what: &str,
    ) -> Result<(ManagerProcess, Started), FleetError> {
        let mut child = tokio::process::Command::new(program)
            .arg(MANAGER_SUBCOMMAND)
            .args(launch.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(FleetError::io(format!(
                "{what}: starting {}",
                program.display()
            )))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| FleetError::Unavailable(format!("{what}: no standard output")))?;
        let leads = Arc::new(AtomicBool::new(false));
        let (started, up) = oneshot::channel();
        tokio::spawn(read_reports(stdout, Arc::clone(&leads), started));
        let up = tokio::time::timeout(START_PATIENCE, up).await;
        let process = ManagerProcess {
            child,
            stdin,
            leads,
        };
        match up {
            Ok(Ok(started)) => Ok((process, started)),
            Ok(Err(_)) => {
                process.kill().await;
                Err(FleetError::Unavailable(format!(
                    "{what}: the manager process ended before it served its port (its error is above)"
                )))
            }
            Err(_) => {
                process.kill().await;
                Err(FleetError::Unavailable(format!(
                    "{what}: the manager process did not serve its port within {START_PATIENCE:?}"
                )))
            }
        }
    }

    /// Whether it said last that it leads.
    pub(crate) fn leads(&self) -> bool {
        self.leads.load(Ordering::SeqCst)
    }

    pub(crate) fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// `SIGKILL`, and reaps it.
    pub(crate) async fn kill(mut self) {
        self.leads.store(false, Ordering::SeqCst);
        let _ = self.child.kill().await;
    }

    /// Asks it to stop in order; kills it if it takes longer than [`STOP_PATIENCE`].
    pub(crate) async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(STOP_PATIENCE, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }
}

/// Reads the child's lines: the first `ready` (with the `tokens` before it) completes
/// `started`; `leader` lines set `leads`. The end of its output means it is gone.
async fn read_reports(
    stdout: tokio::process::ChildStdout,
    leads: Arc<AtomicBool>,
    started: oneshot::Sender<Started>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut started = Some(started);
    let mut tokens = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("tokens"), Some(worker), Some(manager)) => {
                tokens = Some((worker.to_owned(), manager.to_owned()));
            }
            (Some("ready"), Some(addr), None) => {
                if let Some(started) = started.take() {
                    let _ = started.send(Started {
                        addr: addr.to_owned(),
                        tokens: tokens.take(),
                    });
                }
            }
            (Some("leader"), Some(yes_or_no), None) => {
                leads.store(yes_or_no == "yes", Ordering::SeqCst);
            }
            _ => tracing::warn!(%line, "a fleet manager said something unexpected"),
        }
    }
    leads.store(false, Ordering::SeqCst);
}

/// A process's memory and CPU time so far, from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcessUsage {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

impl ProcessUsage {
    /// Of process `pid`, or of this process with `None`.
    pub fn read(pid: Option<u32>) -> Option<ProcessUsage> {
        let proc_dir = pid.map_or_else(|| "/proc/self".to_owned(), |pid| format!("/proc/{pid}"));
        let status = std::fs::read_to_string(format!("{proc_dir}/status")).ok()?;
        let mib = |field: &str| {
            shoal_metrics::kb_field_bytes(&status, field).map(|bytes| bytes as f64 / MIB)
        };
        let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).ok()?;
        // The fields after the command's closing parenthesis; utime and stime are the 12th and
        // 13th of them.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some(ProcessUsage {
            rss_mib: mib("VmRSS")?,
            peak_rss_mib: mib("VmHWM")?,
            cpu_seconds: ticks / per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_launch_reads_back_from_its_arguments() {
        let launches = [
            Launch::Init {
                dir: "/tmp/fleet/manager-0".into(),
                ip: "127.0.0.2".into(),
                heartbeat: Duration::from_millis(5000),
            },
            Launch::Join {
                dir: "/tmp/fleet/manager-1".into(),
                ip: "127.0.0.3".into(),
                first: "127.0.0.2:40001".into(),
                token: "SWMTKN-1-abc-def".into(),
                index: 1,
            },
            Launch::Restart {
                dir: "/tmp/fleet/manager-2".into(),
            },
        ];
        for launch in launches {
            assert_eq!(Launch::parse(&launch.to_args()), Ok(launch));
        }
    }

    #[test]
    fn a_launch_with_wrong_arguments_is_refused_with_the_forms_it_takes() {
        let refused = Launch::parse(&["join".to_owned(), "/tmp/x".to_owned()]).unwrap_err();
        assert!(refused.contains("`restart DIR`"), "{refused}");
        let refused = Launch::parse(&[
            "init".to_owned(),
            "/tmp/x".to_owned(),
            "127.0.0.2".to_owned(),
            "soon".to_owned(),
        ])
        .unwrap_err();
        assert!(refused.contains("soon is not a number"), "{refused}");
    }

    #[test]
    fn this_process_reads_its_own_usage() {
        let usage = ProcessUsage::read(None).expect("/proc/self is readable");
        assert!(usage.rss_mib > 0.0 && usage.peak_rss_mib >= usage.rss_mib);
    }
}
