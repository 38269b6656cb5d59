//! `DATA_DIR/instance_id`: a UUID v4 that names this installation of the agent.
//!
//! Created on first start (mode 0600, written to a temporary file and linked into place, so a
//! crash never leaves a half-written id), then read back on every start. A file that does not
//! hold exactly one UUID is an error naming the file: the id is an identity, and silently
//! replacing it would make this host look like a new one.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use uuid::Uuid;

use super::{INSTANCE_ID_FILE, StoreError};

/// This installation's id: a UUID in its canonical hyphenated, lowercase form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// The id as text, e.g. `0f0e4a4c-5a59-4d0c-a7a6-6f1e3fbb8c11`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0
    }
}

/// Creates the data directory if it is missing (0700 on Unix).
pub(super) fn ensure_data_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    })
}

/// Reads `dir/instance_id`, creating it first if it does not exist.
pub(super) fn load_or_create(dir: &Path) -> Result<InstanceId, StoreError> {
    let path = dir.join(INSTANCE_ID_FILE);
    let io_error = |source| StoreError::InstanceIdIo {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = InstanceId(Uuid::new_v4().hyphenated().to_string());
            match create(dir, &path, &id) {
                Ok(()) => {
                    tracing::info!(
                        path = %path.display(),
                        instance_id = %id,
                        "created instance id"
                    );
                    Ok(id)
                }
                // Another process created it between our read and our link: theirs wins.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let bytes = fs::read(&path).map_err(io_error)?;
                    parse(&path, &bytes)
                }
                Err(e) => Err(io_error(e)),
            }
        }
        Err(e) => Err(io_error(e)),
    }
}

/// Writes the id to a private temporary file, then links it to `path` without replacing an
/// existing file.
fn create(dir: &Path, path: &Path, id: &InstanceId) -> io::Result<()> {
    // NamedTempFile creates its file with mode 0600 on Unix.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    writeln!(tmp, "{id}")?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    // Make the new directory entry durable too; not every platform can sync a directory.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn parse(path: &Path, bytes: &[u8]) -> Result<InstanceId, StoreError> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim();
    Uuid::parse_str(trimmed)
        .map(|uuid| InstanceId(uuid.hyphenated().to_string()))
        .map_err(|_| StoreError::InstanceIdMalformed {
            path: path.to_owned(),
            found: trimmed.chars().take(64).collect(),
        })
}
