//! The assignment store: the current assignment set and each task's last reported status, kept
//! in one JSON file that is replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so that a crash leaves either the old file or the new one, never a torn one.
//! Tasks are stored as their protobuf encoding in hex: the generated types carry no serde
//! support, and the protobuf form round-trips every field without a hand-kept mirror.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};
use shoal_proto::api;

use crate::error::{Result, WorkerError};

/// The file name inside the store directory.
pub const ASSIGNMENT_FILE_NAME: &str = "assignments.json";
const TEMPORARY_FILE_NAME: &str = "assignments.json.tmp";
/// Bumped whenever the file layout changes incompatibly.
const STORE_FORMAT_VERSION: u32 = 1;

/// What the worker keeps across daemon restarts. Secret and config contents are deliberately
/// absent: they are never written to a worker's disk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistedAssignments {
    /// The version of the assignment set, as the dispatcher numbered it.
    pub assignment_version: u64,
    /// The assigned tasks, ordered by id.
    pub tasks: Vec<api::Task>,
    /// The last status sent to the manager for each task, by task id. After a restart no
    /// status lower than this is ever reported.
    pub last_reported_status_by_task: BTreeMap<String, api::TaskStatus>,
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    format: u32,
    assignment_version: u64,
    tasks_protobuf_hex: Vec<String>,
    last_reported_status_protobuf_hex: BTreeMap<String, String>,
}

/// The on-disk store under a directory the caller chooses (e.g. `<data-root>/worker`).
#[derive(Clone, Debug)]
pub struct AssignmentStore {
    directory: PathBuf,
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
        Ok(AssignmentStore { directory })
    }

    /// The file holding the assignments.
    pub fn file_path(&self) -> PathBuf {
        self.directory.join(ASSIGNMENT_FILE_NAME)
    }

    /// Reads the stored assignments; `None` when nothing was ever saved.
    pub fn load(&self) -> Result<Option<PersistedAssignments>> {
        let path = self.file_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(WorkerError::StoreIo {
                    path,
                    operation: "reading",
                    source,
                });
            }
        };
        let corrupt = |reason: String| WorkerError::StoreCorrupt {
            path: path.clone(),
            reason,
        };
        let file: StoreFile = serde_json::from_slice(&bytes)
            .map_err(|error| corrupt(format!("not valid JSON: {error}")))?;
        if file.format != STORE_FORMAT_VERSION {
            return Err(corrupt(format!(
                "format {} is not the supported format {STORE_FORMAT_VERSION}",
                file.format
            )));
        }
        let mut tasks = Vec::with_capacity(file.tasks_protobuf_hex.len());
        for (index, encoded) in file.tasks_protobuf_hex.iter().enumerate() {
            let bytes = hex::decode(encoded)
                .map_err(|reason| corrupt(format!("task {index}: {reason}")))?;
            let task = api::Task::decode(bytes.as_slice())
                .map_err(|error| corrupt(format!("task {index}: not a valid task: {error}")))?;
            tasks.push(task);
        }
        let mut last_reported_status_by_task = BTreeMap::new();
        for (task_id, encoded) in &file.last_reported_status_protobuf_hex {
            let bytes = hex::decode(encoded)
                .map_err(|reason| corrupt(format!("status of task {task_id}: {reason}")))?;
            let status = api::TaskStatus::decode(bytes.as_slice()).map_err(|error| {
                corrupt(format!(
                    "status of task {task_id}: not a valid status: {error}"
                ))
            })?;
            last_reported_status_by_task.insert(task_id.clone(), status);
        }
        Ok(Some(PersistedAssignments {
            assignment_version: file.assignment_version,
            tasks,
            last_reported_status_by_task,
        }))
    }

    /// Replaces the stored assignments atomically and durably: once this returns, a crash
    /// can't lose them.
    pub fn save(&self, assignments: &PersistedAssignments) -> Result<()> {
        let file = StoreFile {
            format: STORE_FORMAT_VERSION,
            assignment_version: assignments.assignment_version,
            tasks_protobuf_hex: assignments
                .tasks
                .iter()
                .map(|task| hex::encode(task.encode_to_vec()))
                .collect(),
            last_reported_status_protobuf_hex: assignments
                .last_reported_status_by_task
                .iter()
                .map(|(task_id, status)| (task_id.clone(), hex::encode(status.encode_to_vec())))
                .collect(),
        };
        // Serialising plain strings and numbers can't fail; the error is mapped rather than
        // unwrapped all the same.
        let json = serde_json::to_vec(&file).map_err(|error| WorkerError::StoreCorrupt {
            path: self.file_path(),
            reason: format!("could not encode: {error}"),
        })?;
        let temporary_path = self.directory.join(TEMPORARY_FILE_NAME);
        let io_error = |path: &Path, operation: &'static str| {
            let path = path.to_path_buf();
            move |source| WorkerError::StoreIo {
                path,
                operation,
                source,
            }
        };
        let mut temporary =
            File::create(&temporary_path).map_err(io_error(&temporary_path, "creating"))?;
        temporary
            .write_all(&json)
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
        Ok(())
    }
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
        fs::write(directory.path().join(TEMPORARY_FILE_NAME), b"{half a fi").expect("write");
        assert_eq!(store.load().expect("load"), Some(sample()));
    }

    #[test]
    fn corrupt_files_give_a_corrupt_error_not_a_panic() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = AssignmentStore::open(directory.path()).expect("open");
        for contents in [
            &b"not json"[..],
            br#"{"format":99,"assignment_version":1,"tasks_protobuf_hex":[],"last_reported_status_protobuf_hex":{}}"#,
            br#"{"format":1,"assignment_version":1,"tasks_protobuf_hex":["zz"],"last_reported_status_protobuf_hex":{}}"#,
            br#"{"format":1,"assignment_version":1,"tasks_protobuf_hex":["0"],"last_reported_status_protobuf_hex":{}}"#,
            br#"{"format":1,"assignment_version":1,"tasks_protobuf_hex":["ff"],"last_reported_status_protobuf_hex":{}}"#,
        ] {
            fs::write(store.file_path(), contents).expect("write");
            let error = store.load().expect_err("corrupt file must not load");
            assert!(matches!(error, WorkerError::StoreCorrupt { .. }), "{error}");
        }
    }
}
