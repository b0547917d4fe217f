//! `shoal stack config` end to end: the real binary reads the compose file and the `.env` file next
//! to it, prints the config on stdout and the problems on stderr. Needs no daemon and no root.

/// The real binary, end to end: output on stdout, `.env` next to the file, errors on stderr.
#[test]
fn shoal_stack_config_runs_without_a_daemon() {
    let dir = std::env::temp_dir().join(format!("shoal-compose-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join(".env"), "TAG=7\n").expect(".env");
    std::fs::write(
        dir.join("c.yml"),
        "services:\n  web:\n    image: web:${TAG}\n    build: .\n",
    )
    .expect("c.yml");
    std::fs::write(
        dir.join("bad.yml"),
        "services:\n  web:\n    image: a\n    replicaz: 3\n",
    )
    .expect("bad.yml");
    let run = |file: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["stack", "config", "-c"])
            .arg(dir.join(file))
            .env_remove("TAG")
            .env("SHOAL_HOST", "unix:///nonexistent/shoal.sock")
            .output()
            .expect("run shoal")
    };
    let good = run("c.yml");
    let bad = run("bad.yml");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&good.stdout),
        "services:\n  web:\n    image: web:7\n"
    );
    assert!(String::from_utf8_lossy(&good.stderr).contains("services.web.build"));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("bad.yml:4: services.web.replicaz: unknown service key"),
        "{stderr}"
    );
}
