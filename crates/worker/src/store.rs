//! The assignment store: the current assignment set and each task's last reported status, kept
//! in one file that is replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so that a crash leaves either the old file or the new one, never a torn one.
//!
//! The file is a short header (a magic string and the format's number) and then
//! [`PersistedAssignments`] as one protobuf message: the generated task types encode every
//! field without a hand-kept mirror. Format 1 (JSON, each task's protobuf in hex, in
//! `assignments.json`) is still read, so that an upgraded daemon keeps its store; the first
//! save after it removes that file. An agent saves before every status report, and format 1
//! cost about three times the bytes and an encoding pass more (BENCHMARKS.md, "Simulated
//! fleet").

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message;
use serde::Deserialize;
use shoal_proto::api;

use crate::error::{Result, WorkerError};

/// The file name inside the store directory.
pub const ASSIGNMENT_FILE_NAME: &str = "assignments.pb";
const TEMPORARY_FILE_NAME: &str = "assignments.pb.tmp";
/// Where format 1 kept the assignments.
const JSON_FILE_NAME: &str = "assignments.json";
/// What every file of this store starts with, before the format's number.
const MAGIC: &[u8; 8] = b"shoal-as";
/// Bumped whenever the file layout changes incompatibly.
const STORE_FORMAT_VERSION: u32 = 2;
const JSON_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = MAGIC.len() + 4;

/// What the worker keeps across daemon restarts. Secret and config contents are deliberately
/// absent: they are never written to a worker's disk. It is also the file's message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PersistedAssignments {
    /// The version of the assignment set, as the dispatcher numbered it.
    #[prost(uint64, tag = "1")]
    pub assignment_version: u64,
    /// The assigned tasks, ordered by id.
    #[prost(message, repeated, tag = "2")]
    pub tasks: Vec<api::Task>,
    /// The last status sent to the manager for each task, by task id. After a restart no
    /// status lower than this is ever reported.
    #[prost(btree_map = "string, message", tag = "3")]
    pub last_reported_status_by_task: BTreeMap<String, api::TaskStatus>,
}

/// Format 1's file.
#[derive(Deserialize)]
struct JsonFile {
    format: u32,
    assignment_version: u64,
    tasks_protobuf_hex: Vec<String>,
    last_reported_status_protobuf_hex: BTreeMap<String, String>,
}

/// The on-disk store under a directory the caller chooses (e.g. `<data-root>/worker`).
#[derive(Clone, Debug)]
pub struct AssignmentStore {
    directory: PathBuf,
    /// Whether a format 1 file may still be there, to remove once a save has replaced it.
    json_file_left: Arc<AtomicBool>,
}

impl AssignmentStore {
    /// Opens the store, creating its directory if needed.
    pub fn open(directory: impl Into<PathBuf>) -> Result<AssignmentStore> {
        let directory = directory.into();
        fs::create_dir_all(&directory).map_err(|source| WorkerError::StoreIo {
            path: directory.clone(),
            operation: "creating the store directory",
            source,
        })?;
        let json_file_left = directory.join(JSON_FILE_NAME).exists();
        Ok(AssignmentStore {
            directory,
            json_file_left: Arc::new(AtomicBool::new(json_file_left)),
        })
    }

    /// The file holding the assignments.
    pub fn file_path(&self) -> PathBuf {
        self.directory.join(ASSIGNMENT_FILE_NAME)
    }

    /// Reads the stored assignments; `None` when nothing was ever saved.
    pub fn load(&self) -> Result<Option<PersistedAssignments>> {
        let path = self.file_path();
        if let Some(bytes) = read_if_there(&path)? {
            return decode(&bytes)
                .map(Some)
                .map_err(|reason| corrupt(&path, reason));
        }
        let json_path = self.directory.join(JSON_FILE_NAME);
        match read_if_there(&json_path)? {
            Some(bytes) => decode_json(&bytes)
                .map(Some)
                .map_err(|reason| corrupt(&json_path, reason)),
            None => Ok(None),
        }
    }

    /// Replaces the stored assignments atomically and durably: once this returns, a crash
    /// can't lose them.
    pub fn save(&self, assignments: &PersistedAssignments) -> Result<()> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + assignments.encoded_len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&STORE_FORMAT_VERSION.to_le_bytes());
        // A vector grows as needed, so encoding into one can't run out of room; the error is
        // mapped rather than unwrapped all the same.
        assignments
            .encode(&mut bytes)
            .map_err(|error| corrupt(&self.file_path(), format!("could not encode: {error}")))?;
        let temporary_path = self.directory.join(TEMPORARY_FILE_NAME);
        let mut temporary =
            File::create(&temporary_path).map_err(io_error(&temporary_path, "creating"))?;
        temporary
            .write_all(&bytes)
            .map_err(io_error(&temporary_path, "writing"))?;
        temporary
            .sync_all()
            .map_err(io_error(&temporary_path, "syncing"))?;
        drop(temporary);
        let final_path = self.file_path();
        fs::rename(&temporary_path, &final_path)
            .map_err(io_error(&final_path, "renaming into place"))?;
        // The rename itself is durable only once the directory entry is synced.
        File::open(&self.directory)
            .and_then(|directory| directory.sync_all())
            .map_err(io_error(&self.directory, "syncing the directory"))?;
        if self.json_file_left.swap(false, Ordering::Relaxed) {
            let json_path = self.directory.join(JSON_FILE_NAME);
            match fs::remove_file(&json_path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    self.json_file_left.store(true, Ordering::Relaxed);
                    return Err(WorkerError::StoreIo {
                        path: json_path,
                        operation: "removing the format 1 file the save replaced",
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WorkerError::StoreIo {
            path: path.to_path_buf(),
            operation: "reading",
            source,
        }),
    }
}

fn corrupt(path: &Path, reason: String) -> WorkerError {
    WorkerError::StoreCorrupt {
        path: path.to_path_buf(),
        reason,
    }
}

fn io_error(path: &Path, operation: &'static str) -> impl FnOnce(std::io::Error) -> WorkerError {
    let path = path.to_path_buf();
    move |source| WorkerError::StoreIo {
        path,
        operation,
        source,
    }
}

fn decode(bytes: &[u8]) -> std::result::Result<PersistedAssignments, String> {
    let Some(body) = bytes.strip_prefix(MAGIC) else {
        return Err("not an assignment store file (its first bytes are wrong)".to_owned());
    };
    let Some((format, message)) = body.split_first_chunk::<4>() else {
        return Err("the file ends before its format number".to_owned());
    };
    let format = u32::from_le_bytes(*format);
    if format != STORE_FORMAT_VERSION {
        return Err(format!(
            "format {format} is not the supported format {STORE_FORMAT_VERSION}"
        ));
    }
    PersistedAssignments::decode(message).map_err(|error| format!("not valid assignments: {error}"))
}

fn decode_json(bytes: &[u8]) -> std::result::Result<PersistedAssignments, String> {
    let file: JsonFile =
        serde_json::from_slice(bytes).map_err(|error| format!("not valid JSON: {error}"))?;
    if file.format != JSON_FORMAT_VERSION {
        return Err(format!(
            "format {} is not the supported format {JSON_FORMAT_VERSION}",
            file.format
        ));
    }
    let mut tasks = Vec::with_capacity(file.tasks_protobuf_hex.len());
    for (index, encoded) in file.tasks_protobuf_hex.iter().enumerate() {
        let bytes = hex::decode(encoded).map_err(|reason| format!("task {index}: {reason}"))?;
        let task = api::Task::decode(bytes.as_slice())
            .map_err(|error| format!("task {index}: not a valid task: {error}"))?;
        tasks.push(task);
    }
    let mut last_reported_status_by_task = BTreeMap::new();
    for (task_id, encoded) in &file.last_reported_status_protobuf_hex {
        let bytes =
            hex::decode(encoded).map_err(|reason| format!("status of task {task_id}: {reason}"))?;
        let status = api::TaskStatus::decode(bytes.as_slice())
            .map_err(|error| format!("status of task {task_id}: not a valid status: {error}"))?;
        last_reported_status_by_task.insert(task_id.clone(), status);
    }
    Ok(PersistedAssignments {
        assignment_version: file.assignment_version,
        tasks,
        last_reported_status_by_task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedAssignments {
        let task = api::Task {
            id: "task1".to_owned(),
            service_id: "service1".to_owned(),
            slot: 3,
            desired_state: api::TaskState::Running as i32,
            ..api::Task::default()
        };
        let status = api::TaskStatus {
            state: api::TaskState::Running as i32,
            message: "started".to_owned(),
            ..api::TaskStatus::default()
        };
        PersistedAssignments {
            assignment_version: 7,
            tasks: vec![task],
            last_reported_status_by_task: BTreeMap::from([("task1".to_owned(), status)]),
        }
    }

    /// `assignments` as format 1 wrote it.
    fn json_file(assignments: &PersistedAssignments) -> Vec<u8> {
        let tasks: Vec<String> = assignments
            .tasks
            .iter()
            .map(|task| hex::encode(task.encode_to_vec()))
            .collect();
        let statuses: BTreeMap<&String, String> = assignments
            .last_reported_status_by_task
            .iter()
            .map(|(id, status)| (id, hex::encode(status.encode_to_vec())))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "format": 1,
            "assignment_version": assignments.assignment_version,
            "tasks_protobuf_hex": tasks,
            "last_reported_status_protobuf_hex": statuses,
        }))
        .expect("encode")
    }

    #[test]
    fn load_of_an_empty_directory_is_none() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = AssignmentStore::open(directory.path().join("worker")).expect("open");
        assert_eq!(store.load().expect("load"), None);
    }

    #[test]
    fn saved_assignments_round_trip_and_leave_no_temporary_file() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = AssignmentStore::open(directory.path()).expect("open");
        store.save(&sample()).expect("save");
        let mut newer = sample();
        newer.assignment_version = 8;
        store.save(&newer).expect("save again");
        assert_eq!(store.load().expect("load"), Some(newer));
        assert!(!directory.path().join(TEMPORARY_FILE_NAME).exists());
    }

    #[test]
    fn a_leftover_temporary_file_from_a_crash_is_ignored() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = AssignmentStore::open(directory.path()).expect("open");
        store.save(&sample()).expect("save");
        fs::write(directory.path().join(TEMPORARY_FILE_NAME), b"shoal-as\x02").expect("write");
        assert_eq!(store.load().expect("load"), Some(sample()));
    }

    #[test]
    fn a_format_1_store_loads_and_the_first_save_replaces_it() {
        let directory = tempfile::tempdir().expect("tempdir");
        let json_path = directory.path().join(JSON_FILE_NAME);
        fs::write(&json_path, json_file(&sample())).expect("write");
        let store = AssignmentStore::open(directory.path()).expect("open");
        assert_eq!(store.load().expect("load"), Some(sample()));

        let mut newer = sample();
        newer.assignment_version = 8;
        store.save(&newer).expect("save");
        assert!(!json_path.exists(), "the format 1 file is gone");
        let reopened = AssignmentStore::open(directory.path()).expect("reopen");
        assert_eq!(reopened.load().expect("load"), Some(newer));
    }

    #[test]
    fn the_file_is_smaller_than_format_1s() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = AssignmentStore::open(directory.path()).expect("open");
        let mut assignments = sample();
        assignments.tasks = (0..10)
            .map(|index| api::Task {
                id: format!("task{index}"),
                ..sample().tasks[0].clone()
            })
            .collect();
        store.save(&assignments).expect("save");
        let written = fs::metadata(store.file_path()).expect("stat").len() as usize;
        assert!(
            written * 2 < json_file(&assignments).len(),
            "{written} bytes against format 1's {}",
            json_file(&assignments).len()
        );
    }

    #[test]
    fn corrupt_files_give_a_corrupt_error_not_a_panic() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = AssignmentStore::open(directory.path()).expect("open");
        let mut truncated = b"shoal-as\x02\x00\x00\x00".to_vec();
        truncated.extend_from_slice(&sample().encode_to_vec()[..10]);
        for contents in [
            &b""[..],
            b"not a store file at all",
            b"shoal-as\x02",
            b"shoal-as\x63\x00\x00\x00",
            &truncated,
        ] {
            fs::write(store.file_path(), contents).expect("write");
            let error = store.load().expect_err("corrupt file must not load");
            assert!(matches!(error, WorkerError::StoreCorrupt { .. }), "{error}");
        }
        fs::remove_file(store.file_path()).expect("remove");
        for contents in [
            &b"not json"[..],
            br#"{"format":99,"assignment_version":1,"tasks_protobuf_hex":[],"last_reported_status_protobuf_hex":{}}"#,
            br#"{"format":1,"assignment_version":1,"tasks_protobuf_hex":["zz"],"last_reported_status_protobuf_hex":{}}"#,
            br#"{"format":1,"assignment_version":1,"tasks_protobuf_hex":["0"],"last_reported_status_protobuf_hex":{}}"#,
            br#"{"format":1,"assignment_version":1,"tasks_protobuf_hex":["ff"],"last_reported_status_protobuf_hex":{}}"#,
        ] {
            fs::write(directory.path().join(JSON_FILE_NAME), contents).expect("write");
            let error = store.load().expect_err("corrupt file must not load");
            assert!(matches!(error, WorkerError::StoreCorrupt { .. }), "{error}");
        }
    }
}
