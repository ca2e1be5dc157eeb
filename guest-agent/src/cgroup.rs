//! cgroup v2: controller delegation at boot and one group per container.
//!
//! Only the unified (v2) hierarchy is used. The guest kernel is pure v2; on a
//! host with controllers bound to v1 (as on our build machines) the code
//! reports the controllers as unavailable and containers run without limits,
//! saying so in one log line, instead of touching the v1 hierarchies.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The controllers husk uses for container limits.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Where the agent mounts the unified hierarchy in the guest.
pub const ROOT: &str = "/sys/fs/cgroup";

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
}

fn read(path: PathBuf) -> Result<String, CgroupError> {
    fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

fn write(path: PathBuf, value: &str) -> Result<(), CgroupError> {
    fs::write(&path, value).map_err(|source| CgroupError::Write {
        path,
        value: value.to_owned(),
        source,
    })
}

/// Controllers offered at `dir` (its `cgroup.controllers`).
pub fn available(dir: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(read(dir.join("cgroup.controllers"))?
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Enables each of `wanted` that `dir` offers for its children. Returns the
/// ones it could not enable (absent from the kernel or bound to cgroup v1).
pub fn enable_controllers(dir: &Path, wanted: &[&str]) -> Result<Vec<String>, CgroupError> {
    let offered = available(dir)?;
    let mut missing = Vec::new();
    for name in wanted {
        if !offered.iter().any(|c| c == name) {
            missing.push((*name).to_owned());
            continue;
        }
        if write(dir.join("cgroup.subtree_control"), &format!("+{name}")).is_err() {
            missing.push((*name).to_owned());
        }
    }
    Ok(missing)
}
