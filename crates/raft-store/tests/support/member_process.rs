//! Store members as real OS processes, for the kill -9 test and `raft-bench`: each member gets a
//! data directory and a log file under one folder, and every process is killed when the
//! `MemberProcesses` value is dropped, however the caller ends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct MemberProcesses {
    /// The member program and the arguments that come before its flags (e.g. `member`).
    program: PathBuf,
    leading_args: Vec<String>,
    dir: PathBuf,
    pub addrs: BTreeMap<u64, String>,
    pub children: BTreeMap<u64, Child>,
}

impl MemberProcesses {
    /// Plans `count` members on free loopback ports; TLS material and data keys must be in
    /// `dir/tls` (see `TestPki::write_dir`).
    pub fn new(program: impl Into<PathBuf>, leading_args: &[&str], dir: &Path, count: u64) -> Self {
        let addrs = (1..=count)
            .map(|id| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
                (id, listener.local_addr().expect("its address").to_string())
            })
            .collect();
        MemberProcesses {
            program: program.into(),
            leading_args: leading_args.iter().map(|arg| arg.to_string()).collect(),
            dir: dir.to_owned(),
            addrs,
            children: BTreeMap::new(),
        }
    }

    /// Starts member `id` and waits until it serves. The founding member gets `--bootstrap`
    /// with every planned member as a voter.
    pub fn start(&mut self, id: u64, bootstrap: bool, extra_args: &[String]) {
        let dir = &self.dir;
        let mut command = Command::new(&self.program);
        command
            .args(&self.leading_args)
            .args(["--id", &id.to_string(), "--listen", &self.addrs[&id]])
            .arg("--data-dir")
            .arg(dir.join(format!("member-{id}")))
            .arg("--tls-dir")
            .arg(dir.join("tls"))
            .arg("--data-key")
            .arg(dir.join("tls").join(format!("member-{id}.dek")))
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("member-{id}.log")))
                    .expect("a log file"),
            );
        if bootstrap {
            let voters: Vec<String> = self
                .addrs
                .iter()
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect();
            command.arg("--bootstrap").arg(voters.join(","));
        }
        let mut child = command.spawn().expect("starting a member process");
        let stdout = child.stdout.take().expect("the member's stdout");
        let mut first_line = String::new();
        BufReader::new(stdout)
            .read_line(&mut first_line)
            .expect("reading the member's stdout");
        assert_eq!(
            first_line.trim(),
            "ready",
            "member {id} did not start; see its log in {}",
            dir.display()
        );
        self.children.insert(id, child);
    }

    /// Kills a member with SIGKILL.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_all(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }

    pub fn members(&self) -> Vec<(u64, String)> {
        self.addrs
            .iter()
            .map(|(id, addr)| (*id, addr.clone()))
            .collect()
    }
}

impl Drop for MemberProcesses {
    fn drop(&mut self) {
        self.kill_all();
    }
}
