//! Container logs as JSON lines (`{"log":…,"stream":…,"time":…}`, docker's json-file format),
//! rotated by size. The shim writes them; the engine reads, tails and follows them.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::spec::LogOptions;
use crate::util;

/// One log line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    /// The text, with its newline if it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// The current log file in a container directory.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("container.log")
}

fn rotated_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("container.log.{n}"))
}

/// Existing log files, oldest first.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..100)
        .map(|n| rotated_path(dir, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    let current = log_path(dir);
    if current.exists() {
        files.push(current);
    }
    files
}

/// Appends entries to a container's log, rotating by size.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    options: LogOptions,
}

impl LogWriter {
    /// Opens (appending) the log in `dir`.
    pub fn open(dir: &Path, options: LogOptions) -> Result<LogWriter> {
        let path = log_path(dir);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(EngineError::io(format!("opening {}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            file,
            size,
            options,
        })
    }

    /// Writes one entry stamped now.
    pub fn write(&mut self, stream: &str, text: &str) -> Result<()> {
        let entry = LogEntry {
            log: text.to_owned(),
            stream: stream.to_owned(),
            time: util::rfc3339(SystemTime::now()),
        };
        let mut line =
            serde_json::to_vec(&entry).map_err(|e| EngineError::invalid("log entry", e))?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.options.max_size {
            self.rotate()?;
        }
        self.file
            .write_all(&line)
            .map_err(EngineError::io("writing container log"))?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let keep_rotated = self.options.max_files.saturating_sub(1);
        if keep_rotated == 0 {
            self.file
                .set_len(0)
                .map_err(EngineError::io("truncating container log"))?;
        } else {
            let _ = std::fs::remove_file(rotated_path(&self.dir, keep_rotated));
            for n in (1..keep_rotated).rev() {
                let _ = std::fs::rename(rotated_path(&self.dir, n), rotated_path(&self.dir, n + 1));
            }
            std::fs::rename(log_path(&self.dir), rotated_path(&self.dir, 1))
                .map_err(EngineError::io("rotating container log"))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path(&self.dir))
                .map_err(EngineError::io("reopening container log"))?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Splits a byte stream into lines, cutting over-long ones, as the json-file driver does.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

const MAX_LINE: usize = 16 * 1024;

impl LineSplitter {
    /// Adds bytes; returns every complete line (newline kept) and over-long chunks.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self
            .pending
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| i + 1)
            .or_else(|| (self.pending.len() >= MAX_LINE).then_some(MAX_LINE))
        {
            let line: Vec<u8> = self.pending.drain(..end).collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }

    /// What is left once the stream ended without a final newline.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.pending);
        Some(String::from_utf8_lossy(&rest).into_owned())
    }
}

/// Where a follower has read up to.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogCursor {
    inode: u64,
    offset: u64,
}

/// Reads every entry (the last `tail` if given), oldest first, and where reading stopped.
pub fn read_entries(dir: &Path, tail: Option<usize>) -> Result<(Vec<LogEntry>, LogCursor)> {
    let mut entries = std::collections::VecDeque::new();
    let mut cursor = LogCursor::default();
    for path in log_files(dir) {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
        let mut reader = BufReader::new(file);
        let offset = read_lines_into(&mut reader, |entry| {
            entries.push_back(entry);
            if tail.is_some_and(|t| entries.len() > t) {
                entries.pop_front();
            }
        })?;
        if path == log_path(dir) {
            cursor = LogCursor { inode, offset };
        }
    }
    if tail == Some(0) {
        entries.clear();
    }
    Ok((entries.into_iter().collect(), cursor))
}

/// Reads entries appended since `cursor`, following a rotation if one happened.
pub fn read_new_entries(dir: &Path, cursor: &mut LogCursor) -> Result<Vec<LogEntry>> {
    let mut entries = Vec::new();
    let Ok(mut file) = File::open(log_path(dir)) else {
        return Ok(entries);
    };
    let meta = file
        .metadata()
        .map_err(EngineError::io("reading log metadata"))?;
    if meta.ino() != cursor.inode || meta.len() < cursor.offset {
        // Rotated: the rest of the old file is now container.log.1.
        if let Ok(old) = File::open(rotated_path(dir, 1))
            && old.metadata().map(|m| m.ino()).ok() == Some(cursor.inode)
        {
            let mut reader = BufReader::new(old);
            reader
                .seek(SeekFrom::Start(cursor.offset))
                .map_err(EngineError::io("seeking log"))?;
            read_lines_into(&mut reader, |e| entries.push(e))?;
        }
        *cursor = LogCursor {
            inode: meta.ino(),
            offset: 0,
        };
    }
    file.seek(SeekFrom::Start(cursor.offset))
        .map_err(EngineError::io("seeking log"))?;
    let mut reader = BufReader::new(file);
    cursor.offset += read_lines_into(&mut reader, |e| entries.push(e))?;
    Ok(entries)
}

/// Reads complete JSON lines; returns the bytes consumed (a trailing partial line is left).
fn read_lines_into(reader: &mut impl BufRead, mut sink: impl FnMut(LogEntry)) -> Result<u64> {
    let mut consumed = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(EngineError::io("reading container log"))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(consumed);
        }
        consumed += n as u64;
        match serde_json::from_slice(&line) {
            Ok(entry) => sink(entry),
            Err(error) => tracing::warn!(%error, "skipping a corrupt log line"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_keeps_partial_lines() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"a\nb"), ["a\n"]);
        assert_eq!(splitter.push(b"c\n\n"), ["bc\n", "\n"]);
        assert_eq!(splitter.push(b"tail"), Vec::<String>::new());
        assert_eq!(splitter.finish().as_deref(), Some("tail"));
        assert_eq!(splitter.push(&vec![b'x'; MAX_LINE + 1]).len(), 1);
    }

    #[test]
    fn rotation_keeps_newest_entries_and_followers_see_them() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut writer = LogWriter::open(
            dir.path(),
            LogOptions {
                max_size: 800,
                max_files: 3,
            },
        )?;
        for i in 0..10 {
            writer.write("stdout", &format!("line {i}\n"))?;
        }
        let (entries, mut cursor) = read_entries(dir.path(), None)?;
        assert!(log_files(dir.path()).len() <= 3);
        assert_eq!(entries.last().map(|e| e.log.as_str()), Some("line 9\n"));
        let (tail, _) = read_entries(dir.path(), Some(2))?;
        assert_eq!(
            tail.iter().map(|e| e.log.as_str()).collect::<Vec<_>>(),
            ["line 8\n", "line 9\n"]
        );
        for i in 10..20 {
            writer.write("stderr", &format!("line {i}\n"))?;
        }
        let new = read_new_entries(dir.path(), &mut cursor)?;
        assert_eq!(new.first().map(|e| e.log.as_str()), Some("line 10\n"));
        assert_eq!(new.last().map(|e| e.log.as_str()), Some("line 19\n"));
        Ok(())
    }
}
