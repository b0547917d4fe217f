//! When a machine can't run the cluster tests, and how a skipped test says so in a passing run,
//! or fails instead where every test must run (CI).

use std::path::Path;

/// Programs the harness runs to build and enter test hosts.
const REQUIRED_PROGRAMS: [&str; 4] = ["ip", "nft", "nsenter", "unshare"];

/// Why this machine can't start a test cluster, if it can't: not root, or a program missing.
pub fn skip_reason() -> Option<String> {
    if let Some(reason) = root_skip_reason() {
        return Some(reason);
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

/// Set (to anything but `0`) where every test must run: CI sets it, so that a green run can never
/// hide a suite that skipped itself.
pub const REQUIRE_ALL_TESTS: &str = "SHOAL_REQUIRE_ALL_TESTS";

/// Why the root tests can't run here: not root, or `/bin/busybox` missing.
pub fn root_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".to_owned());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".to_owned());
    }
    None
}

/// Skips `test_name` for `reason`: prints `SKIPPED <test_name>: <reason>` and returns, or panics
/// when [`REQUIRE_ALL_TESTS`] is set.
pub fn skip(test_name: &str, reason: &str) {
    let required = std::env::var_os(REQUIRE_ALL_TESTS).is_some_and(|v| v != "0");
    assert!(
        !required,
        "{test_name} can't run here ({reason}), and {REQUIRE_ALL_TESTS} says every test must: \
         run the tests as root after the README's set-up"
    );
    skip_notice(&format!("SKIPPED {test_name}: {reason}"));
}

/// Prints past the test harness's output capture, so a skip is visible in a passing run.
pub fn skip_notice(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}
