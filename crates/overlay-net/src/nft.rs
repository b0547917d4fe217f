//! nft, run one way for every nftables table the node keeps (the overlay's masquerade, the IPsec
//! guard, routing-mesh's VIP tables): a script as one transaction (`nft -f -`) or a listing, in
//! the caller's network namespace or, through [`netns::command`], inside the one at a path.
//!
//! Calls block for one short nft run; async code calls them through `spawn_blocking`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::netns;

/// Why an nft run failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("could not run {program}: {source} (is nftables installed? apt-get install nftables)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft failed in {}: {stderr}", namespace_name(netns.as_deref()))]
    Failed {
        /// The namespace it ran in; `None` for the caller's.
        netns: Option<PathBuf>,
        stderr: String,
    },
}

fn namespace_name(netns: Option<&Path>) -> String {
    netns.map_or_else(
        || "this network namespace".to_owned(),
        |path| format!("network namespace {}", path.display()),
    )
}

/// The nft and nsenter binaries nft runs through; the default finds both on `PATH`.
#[derive(Clone, Debug)]
pub struct NftRunner {
    pub nsenter: PathBuf,
    pub nft: PathBuf,
}

impl Default for NftRunner {
    fn default() -> NftRunner {
        NftRunner {
            nsenter: PathBuf::from(netns::NSENTER),
            nft: PathBuf::from("nft"),
        }
    }
}

impl NftRunner {
    fn command(&self, netns: Option<&Path>) -> Command {
        netns::command(&self.nsenter, netns, &self.nft)
    }

    fn spawn_error(&self, netns: Option<&Path>, source: std::io::Error) -> NftError {
        let program = match netns {
            Some(_) => format!("{} ... {}", self.nsenter.display(), self.nft.display()),
            None => self.nft.display().to_string(),
        };
        NftError::Spawn { program, source }
    }

    /// Runs `script` with `nft -f -` inside the namespace at `netns` (`None`: the caller's), as
    /// one transaction.
    pub fn run(&self, netns: Option<&Path>, script: &str) -> Result<(), NftError> {
        let mut child = self
            .command(netns)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_error(netns, source))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A failed write shows as nft's own error below.
            let _ = stdin.write_all(script.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|source| self.spawn_error(netns, source))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NftError::Failed {
                netns: netns.map(Path::to_owned),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// `nft list ARGS` (`nft -j list ARGS` with `json`) inside the namespace at `netns`, such as
    /// `["table", "ip", NAME]`; `None` when what it names is not there.
    pub fn list(
        &self,
        netns: Option<&Path>,
        json: bool,
        args: &[&str],
    ) -> Result<Option<String>, NftError> {
        let mut command = self.command(netns);
        if json {
            command.arg("-j");
        }
        let output = command
            .arg("list")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.spawn_error(netns, source))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
        } else if stderr.contains("No such file or directory") {
            // nft's words (ENOENT) for a table that is not there; a missing namespace fails in
            // nsenter with other words.
            Ok(None)
        } else {
            Err(NftError::Failed {
                netns: netns.map(Path::to_owned),
                stderr: stderr.trim().to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named_with_the_fix() {
        let runner = NftRunner {
            nsenter: PathBuf::from("/nonexistent/nsenter"),
            nft: PathBuf::from("/nonexistent/nft"),
        };
        let error = runner
            .run(Some(Path::new("/run/netns/x")), "")
            .expect_err("no nsenter");
        assert!(
            error
                .to_string()
                .starts_with("could not run /nonexistent/nsenter ... /nonexistent/nft: "),
            "{error}"
        );
        let error = runner.list(None, false, &["tables"]).expect_err("no nft");
        assert!(
            error.to_string().contains("apt-get install nftables"),
            "{error}"
        );
    }

    #[test]
    fn a_command_in_a_namespace_goes_through_nsenter() {
        let runner = NftRunner::default();
        let command = runner.command(Some(Path::new("/run/netns/t")));
        assert_eq!(command.get_program(), "nsenter");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["--net=/run/netns/t", "nft"]);
        assert_eq!(runner.command(None).get_program(), "nft");
    }
}
