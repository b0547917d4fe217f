//! When a machine can't run the cluster tests, and how a skipped test says so in a passing run.

use std::path::Path;

/// Programs the harness runs to build and enter test hosts.
const REQUIRED_PROGRAMS: [&str; 4] = ["ip", "nft", "nsenter", "unshare"];

/// Why this machine can't start a test cluster, if it can't: not root, or a program missing.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".to_owned());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in REQUIRED_PROGRAMS {
        if !std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
            return Some(format!(
                "`{program}` not found on PATH (apt-get install iproute2 nftables util-linux)"
            ));
        }
    }
    None
}

/// Prints past the test harness's output capture, so a skip is visible in a passing run.
pub fn skip_notice(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}
