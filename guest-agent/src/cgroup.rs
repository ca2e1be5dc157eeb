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

/// The parent of every container's group.
const PARENT: &str = "husk";

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `dir` is on a cgroup2 (unified hierarchy) mount.
pub fn is_cgroup2(dir: &Path) -> bool {
    let Ok(c) = crate::sys::cstr(dir) else {
        return false;
    };
    // SAFETY: statfs is plain data, fully written by a successful call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
    ok && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// Why container limits cannot be applied here, or `None` if they can:
/// `ROOT` must be a cgroup2 mount offering every controller in `CONTROLLERS`
/// to its children.
pub fn unusable_reason() -> Option<String> {
    if !is_cgroup2(Path::new(ROOT)) {
        return Some(format!("{ROOT} is not a cgroup2 mount"));
    }
    let enabled = match read(Path::new(ROOT).join("cgroup.subtree_control")) {
        Ok(s) => s,
        Err(e) => return Some(crate::console::chain(&e)),
    };
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !enabled.split_ascii_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "controllers not enabled in {ROOT}: {}",
            missing.join(" ")
        ))
    }
}

/// Creates the group of container `id` with its limits; returns its path.
pub fn create_group(id: &str, res: &husk_proto::Resources) -> Result<PathBuf, CgroupError> {
    let parent = Path::new(ROOT).join(PARENT);
    if !parent.exists() {
        fs::create_dir(&parent).map_err(|source| CgroupError::Write {
            path: parent.clone(),
            value: "(mkdir)".into(),
            source,
        })?;
    }
    // The parent holds no processes, so its children may use controllers.
    let missing = enable_controllers(&parent, &CONTROLLERS)?;
    if let Some(name) = missing.first() {
        return Err(CgroupError::Write {
            path: parent.join("cgroup.subtree_control"),
            value: format!("+{name}"),
            source: io::Error::from(io::ErrorKind::Unsupported),
        });
    }
    let dir = parent.join(id);
    fs::create_dir(&dir).map_err(|source| CgroupError::Write {
        path: dir.clone(),
        value: "(mkdir)".into(),
        source,
    })?;
    let limits = [
        ("memory.max", res.memory_max.map(|m| m.to_string())),
        (
            "cpu.max",
            res.cpu_quota_us
                .map(|q| format!("{q} {}", res.cpu_period_us.unwrap_or(100_000))),
        ),
        ("pids.max", res.pids_max.map(|p| p.to_string())),
    ];
    for (file, value) in limits {
        if let Some(value) = value {
            if let Err(e) = write(dir.join(file), &value) {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        }
    }
    Ok(dir)
}

/// Removes a container's (empty) group.
pub fn remove_group(dir: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CgroupError::Write {
            path: dir.to_owned(),
            value: "(rmdir)".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}
