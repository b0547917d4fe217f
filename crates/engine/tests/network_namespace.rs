//! A container given `network_namespace` joins that namespace instead of getting a fresh one,
//! with the built-in runtime and with runc: a namespace made here with a link of its own (a
//! bridge: kernels without the dummy module have bridges too), a busybox
//! container in it that lists its links and names its namespace. Needs root and
//! `/bin/busybox` (runc for the second half); without them it says why and passes, or fails
//! when `SHOAL_REQUIRE_ALL_TESTS` is set.
//!
//! The engine re-executes its binary as each container's shim, so this test is its own binary
//! (`harness = false`): run as `shim`, it is the shim, as `shoal shim` would be.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use engine::{ContainerSpec, Engine as _, RunStatus};
use shoal_tests::{root_skip_reason, skip};

const TEST_NAME: &str = "a_container_joins_the_network_namespace_it_is_given";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        return shim(&args[2..]);
    }
    // `cargo test` passes the harness's flags; a filter that names another test skips this one.
    let filters: Vec<&String> = args[1..]
        .iter()
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|filter| TEST_NAME.contains(filter.as_str()))
    {
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|arg| arg == "--list") {
        println!("{TEST_NAME}: test");
        return ExitCode::SUCCESS;
    }
    if let Some(reason) = root_skip_reason() {
        skip(TEST_NAME, &reason);
        return ExitCode::SUCCESS;
    }
    a_container_joins_the_network_namespace_it_is_given();
    println!("test {TEST_NAME} ... ok");
    ExitCode::SUCCESS
}

/// `shim --data-root DIR --id ID [--cleanup]`, as the engine starts it.
fn shim(args: &[String]) -> ExitCode {
    let value_of = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|index| args.get(index + 1))
            .cloned()
            .unwrap_or_default()
    };
    let data_root = PathBuf::from(value_of("--data-root"));
    let id = value_of("--id");
    let code = if args.iter().any(|arg| arg == "--cleanup") {
        engine::shim::cleanup_main(&data_root, &id)
    } else {
        engine::shim::shim_main(&data_root, &id)
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs `program args` and fails the test with its output if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The namespace, the data root and whatever containers and mounts the test made; all removed
/// on drop, also after a failure.
struct World {
    netns: String,
    dir: PathBuf,
}

impl World {
    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Containers are removed by the test body; a failed one may leave shims and mounts.
        support::sweep(&self.dir, &self.data_root());
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .output();
    }
}

fn a_container_joins_the_network_namespace_it_is_given() {
    let prefix = format!("shnn{}", std::process::id());
    let world = World {
        netns: prefix.clone(),
        dir: std::env::temp_dir().join(&prefix),
    };
    let link = format!("{prefix}b");
    std::fs::create_dir_all(&world.dir).expect("the test directory");
    run("ip", &["netns", "add", &world.netns]);
    let enter = format!("--net={}", world.netns_path().display());
    run(
        "nsenter",
        &[&enter, "ip", "link", "add", &link, "type", "bridge"],
    );
    let namespace_inode = std::fs::metadata(world.netns_path())
        .map(|meta| std::os::unix::fs::MetadataExt::ino(&meta))
        .expect("the namespace's file");

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtimes = support::runtimes("network namespace test");
    tokio.block_on(async {
        let engine = support::engine_with_busybox(&world.dir, world.data_root()).await;
        for runtime in runtimes {
            let spec = ContainerSpec {
                image: "busybox:test".to_owned(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "ls /sys/class/net; readlink /proc/self/ns/net".into(),
                ],
                network_namespace: Some(world.netns_path()),
                runtime: runtime.clone(),
                ..ContainerSpec::default()
            };
            let id = engine.create(spec).await.expect("creating the container");
            engine.start(&id).await.expect("starting the container");
            let state = engine.wait(&id).await.expect("waiting for the container");
            assert_eq!(state.status, RunStatus::Exited, "{runtime:?}: {state:?}");
            let mut logs = engine
                .logs(&id, false, None)
                .await
                .expect("the container's logs");
            let mut output = String::new();
            while let Some(entry) = logs.recv().await {
                output.push_str(&entry.expect("a log entry").log);
            }
            assert_eq!(state.exit_code, Some(0), "{runtime:?}: {output}");
            let lines: Vec<&str> = output.lines().collect();
            assert!(
                lines.contains(&link.as_str()),
                "{runtime:?}: the container does not see {link}: {output}"
            );
            assert!(
                lines.contains(&format!("net:[{namespace_inode}]").as_str()),
                "{runtime:?}: the container is not in namespace {namespace_inode}: {output}"
            );
            engine
                .remove(&id, true)
                .await
                .expect("removing the container");
        }
    });
    drop(tokio);
    // The namespace outlives its containers: it is the networking's to remove.
    let links = run(
        "nsenter",
        &[&enter, "ip", "-o", "link", "show", "dev", &link],
    );
    assert!(links.contains(&link), "{links}");
    drop(world);
    assert!(
        !Path::new("/run/netns").join(&prefix).exists(),
        "the namespace was not removed"
    );
}
