//! The apply shell: runs nft inside a task's network namespace (`nsenter --net=PATH nft`), reads
//! the table back, and applies the planned change as one transaction.
//!
//! Calls block for one or two short nft runs; async code calls them through `spawn_blocking`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::VipError;
use super::observe::observe;
use super::plan::{Change, Observed, TableName, VipService, desired_elements, plan};

/// nft as the apply step sees it: a script run as one transaction, and a table listed as JSON.
/// [`NftInNamespace`] is the real one.
pub trait Nft {
    /// Runs `script` with `nft -f -` inside the namespace at `netns`.
    fn run(&self, netns: &Path, script: &str) -> Result<(), VipError>;
    /// `nft -j list table inet NAME` inside the namespace; `None` when there is no such table.
    fn list_table(&self, netns: &Path, table: &TableName) -> Result<Option<String>, VipError>;
}

/// Runs the `nft` binary through `nsenter --net=PATH`, so nothing of this process enters the
/// namespace.
#[derive(Clone, Debug)]
pub struct NftInNamespace {
    pub nsenter: PathBuf,
    pub nft: PathBuf,
}

impl Default for NftInNamespace {
    fn default() -> NftInNamespace {
        NftInNamespace {
            nsenter: PathBuf::from("nsenter"),
            nft: PathBuf::from("nft"),
        }
    }
}

impl NftInNamespace {
    fn command(&self, netns: &Path) -> Command {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(netns);
        let mut command = Command::new(&self.nsenter);
        command.arg(net).arg(&self.nft);
        command
    }

    fn spawn_error(&self, source: std::io::Error) -> VipError {
        VipError::Spawn {
            program: format!("{} ... {}", self.nsenter.display(), self.nft.display()),
            source,
        }
    }
}

impl Nft for NftInNamespace {
    fn run(&self, netns: &Path, script: &str) -> Result<(), VipError> {
        let mut child = self
            .command(netns)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A failed write shows as nft's own error below.
            let _ = stdin.write_all(script.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|source| self.spawn_error(source))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(VipError::Nft {
                netns: netns.to_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    fn list_table(&self, netns: &Path, table: &TableName) -> Result<Option<String>, VipError> {
        let output = self
            .command(netns)
            .args(["-j", "list", "table", "inet", table.as_str()])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.spawn_error(source))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
        } else if stderr.contains("No such file or directory") {
            // nft's words (ENOENT) for a table that is not there; a missing namespace fails in
            // nsenter with other words.
            Ok(None)
        } else {
            Err(VipError::Nft {
                netns: netns.to_owned(),
                stderr: stderr.trim().to_owned(),
            })
        }
    }
}

/// Reads what the table in `netns` holds.
pub fn read_table(nft: &impl Nft, netns: &Path, table: &TableName) -> Result<Observed, VipError> {
    match nft.list_table(netns, table)? {
        None => Ok(Observed::Absent),
        Some(listing) => observe(&listing).ok_or_else(|| VipError::Listing {
            table: table.as_str().to_owned(),
            netns: netns.to_owned(),
            detail: listing.chars().take(200).collect(),
        }),
    }
}

/// Makes the table in `netns` balance `services`: reads it, plans, and applies the change (when
/// there is one) in one transaction. Returns the change applied. Running it again with the same
/// services changes nothing, so it is also what a restarted daemon runs.
pub fn reconcile(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    services: &[VipService],
) -> Result<Change, VipError> {
    let desired = desired_elements(services)?;
    let change = plan(&read_table(nft, netns, table)?, &desired);
    if !change.is_empty() {
        nft.run(netns, &change.script(table))?;
    }
    Ok(change)
}

/// Removes the table from `netns`, if it is there.
pub fn remove_table(nft: &impl Nft, netns: &Path, table: &TableName) -> Result<(), VipError> {
    let name = table.as_str();
    // `add` first makes `delete` succeed when the table is already gone.
    nft.run(
        netns,
        &format!("add table inet {name}\ndelete table inet {name}\n"),
    )
}
