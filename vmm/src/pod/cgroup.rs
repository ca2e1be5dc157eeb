//! A host cgroup v2 per pod: what the pod's VMM may take from the host.
//!
//! The jail ([`crate::jail`]) takes away what a broken VMM could *reach*; the cgroup bounds
//! what it can *consume*. Each pod's VMM runs in `<parent>/husk-<pod id>` with:
//! - `cpu.max` = vCPUs × [`CPU_PERIOD_US`] per period: the whole VMM (vCPUs, event loop,
//!   virtio-fs workers) never uses more host CPU than the VM has vCPUs;
//! - `memory.max` = guest RAM + the empty-dir volumes' sizes (their tmpfs pages are charged to
//!   the VMM, which writes them) + [`VMM_ALLOWANCE`] + [`KVM_OVERHEAD_DIVISOR`]'th of the guest
//!   RAM for KVM's own accounted allocations (page tables): see [`Limits::for_pod`];
//! - `pids.max` = 1 (the event loop) + vCPUs + one worker per share + 1 for KVM's per-VM
//!   worker kthread (`kvm-nx-lpage-recovery`, which KVM attaches to the cgroups of the process
//!   that made the VM, so its CPU time is the pod's too) + [`PIDS_MARGIN`].
//!
//! Measured in the testbed (`tests/guest/cgroup-e2e.sh`, an idle pod with 2 vCPUs and one
//! volume): 5 VMM threads + the KVM kthread; `memory.current` 51 MiB, of which anon 39.7 MiB
//! (guest RAM touched so far and the VMM's heap), file 10.8 MiB (page cache of the kernel,
//! initramfs and blobs read), kernel 1.0 MiB, page tables 0.1 + 0.1 MiB (`pagetables`,
//! `sec_pagetables`).
//!
//! **Parent.** `--cgroup-parent PATH` (or the manifest's `cgroup_parent`), a path below the
//! cgroup2 mount (`/sys/fs/cgroup`), as Docker's and Podman's cgroupfs drivers take it. An
//! explicit parent must exist: it is the operator's (a delegated subtree, a slice with limits
//! of its own), and creating a misspelt one would put pods quietly outside those limits and
//! leave directories behind; so a missing one is refused (exit 125), unlike Docker, which
//! creates it. The default is [`DEFAULT_PARENT`], `/husk` at the mount's root, made on first
//! use and kept (as Docker's `/docker` and Podman's `/libpod_parent`): not the cgroup husk
//! itself runs in, because cgroup v2's no-internal-process rule forbids enabling controllers
//! for the children of a cgroup that holds processes (husk's own shell session's scope), and
//! not a `.slice`, because a name systemd reads as its own unit should be one systemd made. On
//! a systemd host that wants husk under its management, run husk in a unit with `Delegate=yes`
//! and pass a cgroup under it. The controllers `cpu`, `memory` and `pids` are enabled in
//! `cgroup.subtree_control` of every cgroup from the root down to the parent where missing
//! (what runc does for Docker).
//!
//! **Joining.** The VMM must be in its cgroup before it starts any thread and before it jails
//! itself (the jail's cgroup namespace is rooted at the cgroup the VMM is in then). The VMM is
//! forked without exec, so its first act in the child is `write(fd, "0")` to the cgroup's
//! `cgroup.procs`, opened by the supervisor before the fork ([`join`]). `clone3` with
//! `CLONE_INTO_CGROUP` would make the move atomic, but it bypasses glibc's `fork()`: the child
//! would keep the parent's thread id in glibc's thread descriptor, which `pthread_*` calls on
//! the main thread (affinity, scheduling, CPU clocks) then aim at the *supervisor's* thread.
//! The write costs one system call; before it the child has only returned from `fork()`, so
//! nothing of note is charged outside the cgroup. A failed write ends the VMM with one line
//! in `vmm.log` (exit 125) before any guest exists. The supervisor stays outside: an OOM kill
//! takes the VMM, and the supervisor records why ([`oom_reason`], `memory.events`).
//!
//! **Removal.** The supervisor removes the cgroup when the pod ends; the path is recorded in
//! `status.json` before the cgroup is made, so `husk rm`/`husk gc` remove what a `kill -9`ed
//! supervisor left ([`release`]): every process still in it is killed (`cgroup.kill`, Linux
//! 5.14, or SIGKILL to each pid in `cgroup.procs`), then the directory goes once it is empty.
//!
//! **Without cgroups** (no cgroup2 mount with the three controllers, as on hybrid hosts that
//! bind them to v1, or a parent this user cannot write, as for rootless husk without a
//! delegated subtree): with an explicit parent the pod is refused with one line; with the
//! default it runs without a host cgroup and `husk run` prints one warning line ([`plan`]).
//! `husk doctor` prints the same checks ([`readiness`]).
//!
//! Plain file writes under the cgroup2 mount: the crates that wrap them (`cgroups-rs`) carry
//! v1 and every controller, several times the code this needs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::spec::{PodConfig, MIB};

/// Where cgroup v2 is normally mounted.
pub const CGROUP2_MOUNT: &str = "/sys/fs/cgroup";
/// The parent of pods' cgroups unless `--cgroup-parent` says otherwise (below the mount).
pub const DEFAULT_PARENT: &str = "/husk";
/// The controllers a pod's cgroup needs.
pub const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// `cpu.max` period, microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Host memory for the VMM itself beyond guest RAM: its own resident memory (about 3 MiB:
/// code, heap, thread stacks), the virtio-fs workers' request buffers, KVM's accounted kernel
/// memory that does not grow with guest RAM (about 1 MiB), and room for the page cache of the
/// kernel, initramfs and shares it reads (about 11 MiB at boot; reclaimable, but charged).
/// Measured in the testbed: `tests/guest/cgroup-e2e.sh`'s `figure cgroup-memory` line.
pub const VMM_ALLOWANCE: u64 = 32 * MIB;
/// Page tables grow with guest RAM touched: the VMM's own for its mapping of guest RAM
/// (`pagetables`) and KVM's EPT/NPT (`sec_pagetables`), one 4 KiB page per 2 MiB each, so
/// 2/512 of guest RAM.
pub const KVM_OVERHEAD_DIVISOR: u64 = 256;
/// KVM's per-VM kthread, in the VMM's cgroup ([`Limits::for_pod`]).
pub const KVM_TASKS: u64 = 1;
/// Tasks beyond the event loop, the vCPUs, the share workers and KVM's: room for a device
/// thread added later, without letting a broken VMM fork-bomb the host.
pub const PIDS_MARGIN: u64 = 8;
/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_MAGIC: i64 = 0x6367_7270;
/// How long [`release`] waits for the killed processes to leave the cgroup.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong with a pod's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A parent path that cannot name a cgroup.
    #[error("--cgroup-parent {parent:?}: {why}")]
    BadParent { parent: String, why: &'static str },
    /// An explicit parent that does not exist.
    #[error("--cgroup-parent {parent:?}: {} does not exist (create it, or leave the flag out for the default {DEFAULT_PARENT})", path.display())]
    NoParent { parent: String, path: PathBuf },
    /// cgroups cannot be used here, and the user asked for them.
    #[error("--cgroup-parent {parent:?}: cannot use cgroups here: {why}")]
    Unusable { parent: String, why: String },
    /// A write or read under the cgroup mount failed.
    #[error("cgroup: cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CgroupError {
    /// Whether this is the user's input (exit 125 as a usage error).
    pub fn is_usage(&self) -> bool {
        !matches!(self, CgroupError::Io { .. })
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { what, path, source }
}

/// A pod cgroup's limits, as recorded in `status.json` (`husk inspect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `cpu.max`: quota and period, microseconds.
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    /// `memory.max`, bytes.
    pub memory_max: u64,
    /// `pids.max`.
    pub pids_max: u64,
}

impl Limits {
    /// The limits of `config`'s VMM (see the module documentation).
    pub fn for_pod(config: &PodConfig) -> Limits {
        let guest = config.vm_mem_mib() * MIB;
        let volumes: u64 = config
            .volumes
            .iter()
            .filter(|v| v.host.is_none())
            .map(|v| v.size.unwrap_or(super::volumes::DEFAULT_VOLUME_SIZE))
            .sum();
        let vcpus = u64::from(config.vcpus.max(1));
        // The blobs share and one per volume, each served by a thread of its own.
        let shares = 1 + config.volumes.len() as u64;
        Limits {
            cpu_quota_us: vcpus * CPU_PERIOD_US,
            cpu_period_us: CPU_PERIOD_US,
            memory_max: guest
                .saturating_add(volumes)
                .saturating_add(VMM_ALLOWANCE)
                .saturating_add(guest / KVM_OVERHEAD_DIVISOR),
            pids_max: 1 + vcpus + shares + KVM_TASKS + PIDS_MARGIN,
        }
    }

    /// The interface files and what is written to each.
    fn files(&self) -> [(&'static str, String); 3] {
        [
            (
                "cpu.max",
                format!("{} {}", self.cpu_quota_us, self.cpu_period_us),
            ),
            ("memory.max", self.memory_max.to_string()),
            ("pids.max", self.pids_max.to_string()),
        ]
    }
}

/// A pod's cgroup as `status.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    /// Its directory under the cgroup2 mount.
    pub path: PathBuf,
    pub limits: Limits,
}

/// The cgroup of pod `id`: its name under the parent.
pub fn pod_cgroup_name(id: &str) -> String {
    format!("husk-{id}")
}

/// Checks a parent path (`/husk`, `machine.slice/pods`) and returns it relative to the
/// mount: plain components of `[A-Za-z0-9_.:@-]`, none `.` or `..` or a `cgroup.`/controller
/// interface name, at least one.
pub fn parse_parent(text: &str) -> Result<PathBuf, CgroupError> {
    let bad = |why| CgroupError::BadParent {
        parent: text.to_owned(),
        why,
    };
    let mut rel = PathBuf::new();
    for c in Path::new(text).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => {
                let name = name.to_str().ok_or_else(|| bad("not UTF-8"))?;
                if name.len() > 255
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.:@-".contains(c))
                {
                    return Err(bad("use letters, digits and _ . : @ - between the slashes"));
                }
                if name.starts_with("cgroup.")
                    || CONTROLLERS
                        .iter()
                        .any(|k| name.starts_with(&format!("{k}.")))
                {
                    return Err(bad("a component names a cgroup interface file"));
                }
                rel.push(name);
            }
            _ => return Err(bad("`.` or `..` in the path")),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad(
            "the root cgroup cannot hold pods (name a cgroup below it)",
        ));
    }
    Ok(rel)
}

/// The cgroup2 mount in `mountinfo`: [`CGROUP2_MOUNT`] if cgroup2 is mounted there, else
/// the first cgroup2 mount (a hybrid host's `/sys/fs/cgroup/unified`).
pub fn find_mount(mountinfo: &str) -> Option<PathBuf> {
    let mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
        })
        .collect();
    mounts
        .iter()
        .find(|m| **m == CGROUP2_MOUNT)
        .or(mounts.first())
        .map(PathBuf::from)
}

/// The count of `key` (`oom_kill`, `oom`) in a `memory.events` file's text.
pub fn parse_event(events: &str, key: &str) -> u64 {
    events
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The controllers in a `cgroup.controllers` or `cgroup.subtree_control` text that are not
/// among `CONTROLLERS`' wanted ones: what is missing.
pub fn missing_controllers(listed: &str) -> Vec<&'static str> {
    let have: Vec<&str> = listed.split_whitespace().collect();
    CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !have.contains(c))
        .collect()
}

/// The checks `husk doctor` prints and [`plan`] uses, each `Err` with the reason.
#[derive(Debug)]
pub struct Readiness {
    /// The cgroup2 mount.
    pub mount: Result<PathBuf, String>,
    /// cpu, memory and pids available at its root.
    pub controllers: Result<(), String>,
    /// The parent (made later if it is the default and missing): writable.
    pub parent: Result<PathBuf, String>,
}

impl Readiness {
    /// The first reason cgroups cannot be used, if any.
    pub fn problem(&self) -> Option<String> {
        [
            self.mount.as_ref().err(),
            self.controllers.as_ref().err(),
            self.parent.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        .next()
        .cloned()
    }
}

fn writable(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "NUL in path".to_owned())?;
    // SAFETY: access() with a valid C string; no memory is written.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(format!(
            "{} is not writable by this user ({}): run as root, or pass --cgroup-parent a subtree delegated to you",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Checks whether pods can get a cgroup under `parent` (relative to the mount); `default`:
/// it is [`DEFAULT_PARENT`], which is made if missing (so its own parent must be writable).
pub fn readiness(parent: &Path, default: bool) -> Readiness {
    let mount = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| find_mount(&m))
        .ok_or_else(|| "no cgroup2 file system is mounted".to_owned());
    let controllers = match &mount {
        Err(_) => Err("no cgroup2 mount".to_owned()),
        Ok(m) => {
            let listed = fs::read_to_string(m.join("cgroup.controllers")).unwrap_or_default();
            match missing_controllers(&listed)[..] {
                [] => Ok(()),
                ref missing => Err(format!(
                    "{} not available in {} (bound to cgroup v1 on this host?)",
                    missing.join(", "),
                    m.join("cgroup.controllers").display()
                )),
            }
        }
    };
    let parent = match &mount {
        Err(_) => Err("no cgroup2 mount".to_owned()),
        Ok(m) => {
            let path = m.join(parent);
            // The default parent is made on first use: its own parent must then be writable.
            if path.is_dir() {
                writable(&path).map(|()| path)
            } else if default {
                writable(path.parent().unwrap_or(m)).map(|()| path)
            } else {
                Err(format!("{} does not exist", path.display()))
            }
        }
    };
    Readiness {
        mount,
        controllers,
        parent,
    }
}

/// Where a new pod's cgroup goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Under this parent (relative to the mount, as `/husk`).
    Under(String),
    /// No host cgroup: the default parent cannot be used, for this reason.
    Without(String),
}

/// Decides where a pod's cgroup goes: under `explicit` (which must exist and be usable, or
/// the pod is refused), else under [`DEFAULT_PARENT`] if cgroups can be used here, else
/// nowhere (the caller warns).
pub fn plan(explicit: Option<&str>) -> Result<Plan, CgroupError> {
    let text = explicit.unwrap_or(DEFAULT_PARENT);
    let rel = parse_parent(text)?;
    let ready = readiness(&rel, explicit.is_none());
    if let (Some(parent), Ok(m)) = (explicit, &ready.mount) {
        let path = m.join(&rel);
        if !path.is_dir() {
            return Err(CgroupError::NoParent {
                parent: parent.to_owned(),
                path,
            });
        }
    }
    match (ready.problem(), explicit) {
        (None, _) => Ok(Plan::Under(format!("/{}", rel.display()))),
        (Some(why), None) => Ok(Plan::Without(why)),
        (Some(why), Some(parent)) => Err(CgroupError::Unusable {
            parent: parent.to_owned(),
            why,
        }),
    }
}

/// The cgroup2 mount, for a pod being made.
/// The cgroup2 mount of this host.
pub fn mount() -> Result<PathBuf, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    find_mount(&text).ok_or_else(|| CgroupError::Io {
        what: "find a cgroup2 mount in",
        path: path.to_owned(),
        source: io::Error::from(io::ErrorKind::NotFound),
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io_err("write", path))
}

/// Enables the [`CONTROLLERS`] for the children of every cgroup from the mount's root down
/// to `parent`, where they are not enabled yet.
fn enable_controllers(mount: &Path, parent: &Path) -> Result<(), CgroupError> {
    let mut dir = mount.to_path_buf();
    let mut levels = vec![dir.clone()];
    for c in parent.components() {
        dir.push(c);
        levels.push(dir.clone());
    }
    for level in levels {
        let file = level.join("cgroup.subtree_control");
        let current = fs::read_to_string(&file).map_err(io_err("read", &file))?;
        let missing = missing_controllers(&current);
        if missing.is_empty() {
            continue;
        }
        let add: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
        write_file(&file, &add.join(" ")).map_err(|e| match e {
            CgroupError::Io { source, path, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                CgroupError::Io {
                    what: "enable controllers (that cgroup holds processes of its own, which cgroup v2 forbids for a parent) in",
                    path,
                    source,
                }
            }
            other => other,
        })?;
    }
    Ok(())
}

/// A pod's cgroup, made with its limits.
#[derive(Debug)]
pub struct PodCgroup {
    pub record: CgroupRecord,
    /// Its `cgroup.procs`, open for writing: the VMM writes "0" into it ([`join`]).
    procs: File,
}

impl PodCgroup {
    /// Where pod `id`'s cgroup goes under `parent` (relative to the mount).
    pub fn path_for(parent: &str, id: &str) -> Result<PathBuf, CgroupError> {
        Ok(mount()?
            .join(parse_parent(parent)?)
            .join(pod_cgroup_name(id)))
    }

    /// Makes `path` (from [`PodCgroup::path_for`]) with `limits`, the parent's controllers
    /// enabled (the default parent made if missing). On failure nothing of the pod's is left.
    pub fn create(path: &Path, limits: Limits) -> Result<PodCgroup, CgroupError> {
        let mount = mount()?;
        let parent = path
            .parent()
            .and_then(|p| p.strip_prefix(&mount).ok())
            .ok_or_else(|| CgroupError::Io {
                what: "place a pod cgroup at",
                path: path.to_owned(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            })?;
        let parent_dir = mount.join(parent);
        if parent == Path::new(DEFAULT_PARENT.trim_start_matches('/')) {
            match fs::create_dir(&parent_dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io_err("create", &parent_dir)(e))
                }
                _ => {}
            }
        }
        enable_controllers(&mount, parent)?;
        fs::create_dir(path).map_err(io_err("create", path))?;
        let made = (|| {
            for (file, value) in limits.files() {
                write_file(&path.join(file), &value)?;
            }
            let procs = path.join("cgroup.procs");
            let procs = OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(io_err("open", &procs))?;
            Ok(procs)
        })();
        match made {
            Ok(procs) => Ok(PodCgroup {
                record: CgroupRecord {
                    path: path.to_owned(),
                    limits,
                },
                procs,
            }),
            Err(e) => {
                let _ = fs::remove_dir(path);
                Err(e)
            }
        }
    }

    /// The open `cgroup.procs`, for [`join`] in the forked VMM.
    pub fn procs(&self) -> &File {
        &self.procs
    }

    /// Kills what is left in it and removes it.
    pub fn remove(self) -> Result<(), CgroupError> {
        drop(self.procs);
        remove_dir(&self.record.path)
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. For the
/// forked VMM before anything else: one `write`, no allocation.
pub fn join(procs: &File) -> io::Result<()> {
    // SAFETY: write() of a 1-byte static buffer to a descriptor this process holds.
    let n = unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) };
    if n != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The count of `key` in `file` (`memory.events`, `memory.events.local`) of the cgroup at
/// `path`.
fn event(path: &Path, file: &str, key: &str) -> u64 {
    fs::read_to_string(path.join(file))
        .map(|t| parse_event(&t, key))
        .unwrap_or(0)
}

/// Why the OOM killer took a process of the cgroup at `path`, if it did: which limit was
/// reached (`memory.events.local`'s `oom` says whether it was this cgroup's own).
pub fn oom_reason(path: &Path) -> Option<String> {
    if event(path, "memory.events", "oom_kill") == 0 {
        return None;
    }
    if event(path, "memory.events.local", "oom") > 0 {
        let max = fs::read_to_string(path.join("memory.max")).unwrap_or_default();
        let max = match max.trim().parse::<u64>() {
            Ok(bytes) => format!(" ({} MiB)", bytes / MIB),
            Err(_) => String::new(),
        };
        return Some(format!(
            "its host cgroup {} reached memory.max{max}",
            path.display()
        ));
    }
    let parent = path.parent().unwrap_or(path);
    Some(format!(
        "its host cgroup's parent {} (or one above it) reached its memory limit",
        parent.display()
    ))
}

/// Whether `path` is a directory on a cgroup2 file system.
fn on_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data, filled by the call below.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs with a valid C string and a pointer to our buffer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == CGROUP2_MAGIC
}

/// Removes the recorded cgroup of pod `id` if it is still there: only a directory named
/// after the pod on a cgroup2 file system (a damaged `status.json` cannot make husk kill
/// another cgroup's processes). Processes still in it are killed first.
pub fn release(record: &CgroupRecord, id: &str) -> Result<(), CgroupError> {
    let path = &record.path;
    if path.file_name().and_then(|n| n.to_str()) != Some(pod_cgroup_name(id).as_str()) {
        return Err(CgroupError::Io {
            what: "remove (not this pod's cgroup)",
            path: path.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    if !path.exists() {
        return Ok(());
    }
    if !on_cgroup2(path) {
        return Err(CgroupError::Io {
            what: "remove (not on a cgroup2 file system)",
            path: path.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    remove_dir(path)
}

/// Kills what is in the cgroup at `path` and removes it, if it is still there and on a
/// cgroup2 file system: for cgroups husk makes beside a pod's (passt's:
/// [`crate::net::guard`]).
pub fn remove_cgroup_dir(path: &Path) -> Result<(), CgroupError> {
    if !path.exists() {
        return Ok(());
    }
    if !on_cgroup2(path) {
        return Err(CgroupError::Io {
            what: "remove (not on a cgroup2 file system)",
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    remove_dir(path)
}

/// Whether the cgroup at `path` (or a descendant) still holds a process.
fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Kills every process in the cgroup at `path`, waits for them to leave, removes it.
fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    if populated(path) {
        let kill = path.join("cgroup.kill");
        if kill.exists() {
            write_file(&kill, "1")?;
        } else {
            let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill() sends a signal; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("remove", path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::spec::{ExitPolicy, Volume};

    fn config(vcpus: u32, memory: u64, volumes: Vec<Volume>) -> PodConfig {
        PodConfig {
            id: "0123456789ab".into(),
            name: "p".into(),
            apps: Vec::new(),
            volumes,
            memory,
            vcpus,
            exit_policy: ExitPolicy::All,
            stop_grace_ms: 0,
            auto_remove: false,
            no_jail: false,
            no_seccomp: false,
            cgroup_parent: None,
            user_ns: None,
            network: Default::default(),
            logs: None,
            require_tpm: false,
            created: 0,
        }
    }

    #[test]
    fn limits_follow_the_pod() {
        // 256 MiB for the apps + 96 MiB for the guest = 352 MiB of guest RAM, no rootfs
        // (no apps), one share.
        let l = Limits::for_pod(&config(2, 256 * MIB, Vec::new()));
        assert_eq!((l.cpu_quota_us, l.cpu_period_us), (200_000, 100_000));
        assert_eq!(l.memory_max, 352 * MIB + VMM_ALLOWANCE + 352 * MIB / 256);
        assert_eq!(l.pids_max, 1 + 2 + 1 + 1 + PIDS_MARGIN);
        let volume = |name: &str, host: Option<PathBuf>, size| Volume {
            name: name.into(),
            host,
            read_only: false,
            size,
        };
        let l = Limits::for_pod(&config(
            1,
            256 * MIB,
            vec![
                volume("scratch", None, Some(8 * MIB)),
                volume("default", None, None),
                volume("host", Some("/srv".into()), None),
            ],
        ));
        let volumes = 8 * MIB + super::super::volumes::DEFAULT_VOLUME_SIZE;
        assert_eq!(
            l.memory_max,
            352 * MIB + volumes + VMM_ALLOWANCE + 352 * MIB / 256
        );
        assert_eq!(l.pids_max, 1 + 1 + 4 + 1 + PIDS_MARGIN);
        assert_eq!(
            l.files(),
            [
                ("cpu.max", "100000 100000".to_owned()),
                ("memory.max", l.memory_max.to_string()),
                ("pids.max", l.pids_max.to_string()),
            ]
        );
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parse_parent("/husk").unwrap(), Path::new("husk"));
        assert_eq!(
            parse_parent("machine.slice/husk@1:pods/").unwrap(),
            Path::new("machine.slice/husk@1:pods")
        );
        for bad in [
            "/",
            "",
            "/a/../b",
            "./a",
            "a b",
            "a/\nb",
            "/husk/cgroup.procs",
            "/x/memory.max",
        ] {
            let e = parse_parent(bad).unwrap_err();
            assert!(e.is_usage(), "{bad:?}");
            assert!(e.to_string().starts_with("--cgroup-parent"), "{e}");
        }
        assert_eq!(pod_cgroup_name("abc"), "husk-abc");
    }

    #[test]
    fn mounts_and_events() {
        let pure = "24 30 0:21 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            find_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(find_mount("27 25 0:24 / /x rw - cgroup cgroup rw\n"), None);
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_event(events, "oom_kill"), 1);
        assert_eq!(parse_event(events, "oom"), 2);
        assert_eq!(parse_event("low 0\n", "oom_kill"), 0);
        assert_eq!(parse_event("oom_kill x\n", "oom_kill"), 0);
        assert_eq!(
            missing_controllers("cpuset cpu io memory pids"),
            [] as [&str; 0]
        );
        assert_eq!(missing_controllers("hugetlb"), ["cpu", "memory", "pids"]);
    }

    /// On this kind of host (hybrid: the v2 hierarchy has no cpu, memory or pids) an explicit
    /// parent is refused with one line, and the default gives a pod without a cgroup; where the
    /// controllers are there, a missing explicit parent is refused.
    #[test]
    fn plans() {
        let e = plan(Some("/no/such/parent/here")).unwrap_err();
        assert!(e.is_usage());
        let line = e.to_string();
        assert!(
            line.starts_with("--cgroup-parent \"/no/such/parent/here\": ") && !line.contains('\n'),
            "{line}"
        );
        match plan(None).unwrap() {
            Plan::Under(p) => assert_eq!(p, DEFAULT_PARENT),
            Plan::Without(why) => assert!(!why.is_empty()),
        }
        assert!(plan(Some("/a/../b")).is_err());
    }

    #[test]
    fn release_refuses_what_is_not_the_pods() {
        let record = CgroupRecord {
            path: PathBuf::from("/sys/fs/cgroup/system.slice"),
            limits: Limits::for_pod(&config(1, MIB, Vec::new())),
        };
        assert!(release(&record, "0123456789ab").is_err());
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let fake = dir.as_path().join(pod_cgroup_name("0123456789ab"));
        fs::create_dir(&fake).unwrap();
        let record = CgroupRecord {
            path: fake.clone(),
            ..record
        };
        assert!(release(&record, "0123456789ab").is_err());
        assert!(fake.exists(), "not a cgroup: left alone");
        fs::remove_dir(&fake).unwrap();
        assert!(release(&record, "0123456789ab").is_ok(), "gone already");
    }
}
