//! Pod state on disk: one directory per pod under `$HUSK_ROOT/pods/<id>/`.
//!
//! ```text
//! pods/.lock           flock'd while a pod is created or removed (unique names)
//! pods/<id>/name       the pod's name (written first, under the lock)
//!          config.json what the pod is (`PodConfig`), written once
//!          status.json where it is (`PodStatus`), rewritten atomically
//!          console.log the guest's serial console (kernel and agent messages),
//!                      rotated to console.log.1 ([`super::logs::console`])
//!          vsock.sock  the VMM's vsock socket (the agent on guest port 1024)
//!          logs/<app>.log  the app's stdout and stderr as CRI records, rotated
//!                      to <app>.log.1, ... ([`super::logs`])
//!          blobs/sha256/<hex>  hard links to the pod's layer blobs (shared read-only)
//!          volumes/<name>/  the pod's empty-dir volumes (a tmpfs each while it runs)
//!          supervisor.log  stderr of a detached pod's supervisor
//! ```
//!
//! `pods/` and each pod's directory are 0700 and the files husk writes
//! there 0600 ([`crate::private`]): `config.json` carries the apps'
//! environment, secrets included, and the logs what the apps print.
//!
//! There is no daemon: the process that supervises a pod (the `husk run`
//! in the foreground, or a detached `husk pod supervise`) records its pid
//! and start time in `status.json`. A reader that finds the pod "running"
//! but that process gone reports the pod as failed, with that reason, so a
//! crash of the supervisor never leaves a pod that claims to run.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{valid_name, PodConfig};
use super::PodError;

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// The directory exists; the VM is not up yet.
    Created,
    /// The VM boots, images unpack, apps start.
    Starting,
    /// Apps run.
    Running,
    /// Stopping: apps are being stopped, the VM shut down.
    Stopping,
    /// Every app ended and the VM powered off.
    Exited,
    /// The pod could not start, or its VMM or supervisor died: see `reason`.
    Failed,
}

impl PodState {
    /// Whether the pod's processes should still be alive.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            PodState::Created | PodState::Starting | PodState::Running | PodState::Stopping
        )
    }
}

/// How an app ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    /// Started in the guest.
    #[serde(default)]
    pub started: bool,
    /// Its exit code, if it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Its cgroup recorded an OOM kill.
    #[serde(default)]
    pub oom_killed: bool,
}

impl AppStatus {
    /// Whether it ended.
    pub fn ended(&self) -> bool {
        self.exit_code.is_some() || self.signal.is_some()
    }

    /// The shell's view of its end: the code, or 128 + the signal.
    pub fn shell_code(&self) -> Option<i32> {
        self.exit_code.or(self.signal.map(|s| 128 + s))
    }
}

/// What `status.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    pub state: PodState,
    /// Why the pod failed (or other notes on its end).
    #[serde(default)]
    pub reason: Option<String>,
    /// For a pod that failed: the exit status `husk run` gives for the
    /// failure ([`crate::failure::Failure::exit_status`]).
    #[serde(default)]
    pub error_code: Option<i32>,
    /// The process supervising the pod, and its start time in clock ticks
    /// since boot (/proc/PID/stat field 22) so a reused pid is not mistaken
    /// for it.
    #[serde(default)]
    pub supervisor_pid: Option<i32>,
    #[serde(default)]
    pub supervisor_start: Option<u64>,
    #[serde(default)]
    pub vmm_pid: Option<i32>,
    /// The VMM's host cgroup and its limits: recorded before the cgroup is
    /// made, so `husk rm`/`gc` find it after a `kill -9` of the supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<super::cgroup::CgroupRecord>,
    /// passt's host-side filter (`--network user` as root): recorded before
    /// it is made, for `husk rm`/`gc` as the cgroup is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_guard: Option<crate::net::guard::GuardRecord>,
    /// The pod's TAP network (`--network tap`), recorded before it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tap: Option<crate::net::tap::TapRecord>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub started: Option<u64>,
    #[serde(default)]
    pub finished: Option<u64>,
    #[serde(default)]
    pub apps: Vec<AppStatus>,
}

impl PodStatus {
    /// A fresh status for a pod about to start under this process.
    pub fn created() -> PodStatus {
        let pid = std::process::id() as i32;
        PodStatus {
            state: PodState::Created,
            reason: None,
            error_code: None,
            supervisor_pid: Some(pid),
            supervisor_start: process_start_time(pid),
            vmm_pid: None,
            cgroup: None,
            net_guard: None,
            net_tap: None,
            started: None,
            finished: None,
            apps: Vec::new(),
        }
    }

    /// The status as a reader should see it: an active state whose
    /// supervisor is gone becomes `Failed`.
    pub fn effective(mut self) -> PodStatus {
        if self.state.is_active() && !self.supervisor_alive() {
            self.state = PodState::Failed;
            self.reason = Some(match self.supervisor_pid {
                Some(pid) => format!("the pod's supervisor (pid {pid}) died"),
                None => "the pod has no supervisor".to_owned(),
            });
        }
        self
    }

    /// Whether the recorded supervisor process is still the one running.
    pub fn supervisor_alive(&self) -> bool {
        match self.supervisor_pid {
            Some(pid) => {
                let now = process_start_time(pid);
                now.is_some() && (self.supervisor_start.is_none() || now == self.supervisor_start)
            }
            None => false,
        }
    }
}

/// A process's start time (clock ticks since boot), if it exists and is not
/// a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// All pods under `$HUSK_ROOT/pods`.
#[derive(Debug, Clone)]
pub struct PodStore {
    dir: PathBuf,
}

/// One pod's directory.
#[derive(Debug, Clone)]
pub struct PodDir {
    pub id: String,
    pub name: String,
    pub path: PathBuf,
}

/// An exclusive flock on `pods/.lock`, released on drop.
struct StoreLock {
    _lock: crate::private::FileLock,
}

impl StoreLock {
    fn take(dir: &Path) -> io::Result<StoreLock> {
        Ok(StoreLock {
            _lock: crate::private::lock_file(&dir.join(".lock"), libc::LOCK_EX)?,
        })
    }
}

/// Twelve random hex digits: a pod id (48 bits: unique enough on one host,
/// and checked against existing pods anyway).
fn random_id() -> io::Result<String> {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Gives `pod` the lowest host id range ([`super::ids`]) that none of `existing` records
/// and records it; the caller holds the store's lock. Not for rootless husk, which cannot
/// map a range.
fn allocate_ids(pod: &PodDir, existing: &[PodDir]) -> Result<(), PodError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(()); // rootless: only the caller's own ids can be mapped
    }
    let used: Vec<u32> = existing
        .iter()
        .filter_map(|p| super::ids::recorded(&p.path).map(|r| r.base))
        .collect();
    let pool = super::ids::Pool::of_host();
    let range = pool.allocate(&used).ok_or_else(|| {
        PodError::Usage(format!(
            "no host id range is free for another pod: {} pods hold all {} of the pool from {} (remove pods, or give husk a larger range in /etc/subuid and /etc/subgid)",
            used.len(),
            pool.slots,
            pool.base
        ))
    })?;
    write_atomic(
        &pod.path.join(super::ids::IDS_FILE),
        range.base.to_string().as_bytes(),
    )
}

impl PodStore {
    /// Opens (creating) `husk_root/pods`.
    pub fn open(husk_root: &Path) -> Result<PodStore, PodError> {
        let dir = husk_root.join("pods");
        crate::private::create_dir_all(&dir).map_err(|e| PodError::io(&dir, e))?;
        Ok(PodStore { dir })
    }

    /// Makes a new pod directory. `name` must be unused; without one the
    /// pod is named `<prefix>-<6 hex digits of its id>`.
    ///
    /// The directory appears with a `Created` status naming this process as
    /// its supervisor, written under the store's lock: until the pod's own
    /// supervisor records itself, its creator is what keeps it alive. A
    /// directory without a status reads as a pod whose creator died, which
    /// `husk gc` removes; a `gc` between the directory's creation and a
    /// later first status (the image's blobs linked, volumes made, the
    /// detached supervisor started) removed a pod `husk run` was still
    /// making.
    pub fn create(&self, name: Option<&str>, prefix: &str) -> Result<PodDir, PodError> {
        if let Some(n) = name {
            if !valid_name(n) {
                return Err(PodError::BadName(n.to_owned()));
            }
        }
        let _lock = StoreLock::take(&self.dir).map_err(|e| PodError::io(&self.dir, e))?;
        let existing = self.list_dirs()?;
        let id = loop {
            let id = random_id().map_err(|e| PodError::io(&self.dir, e))?;
            if !existing.iter().any(|p| p.id == id) {
                break id;
            }
        };
        let name = match name {
            Some(n) => n.to_owned(),
            None => {
                let prefix: String = prefix
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                    .take(40)
                    .collect();
                let prefix = prefix.trim_start_matches(['_', '.', '-']);
                let prefix = if prefix.is_empty() { "pod" } else { prefix };
                format!("{prefix}-{}", &id[..6])
            }
        };
        if existing.iter().any(|p| p.name == name || p.id == name) {
            return Err(PodError::NameInUse(name));
        }
        let path = self.dir.join(&id);
        crate::private::create_dir(&path).map_err(|e| PodError::io(&path, e))?;
        let pod = PodDir { id, name, path };
        let vsock_dir = pod.path.join("vsock");
        let made = crate::private::create_dir(&vsock_dir)
            .map_err(|e| PodError::io(&vsock_dir, e))
            .and_then(|()| write_atomic(&pod.path.join("name"), pod.name.as_bytes()))
            .and_then(|()| pod.write_status(&PodStatus::created()))
            .and_then(|()| allocate_ids(&pod, &existing));
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&pod.path);
            return Err(e);
        }
        Ok(pod)
    }

    fn list_dirs(&self) -> Result<Vec<PodDir>, PodError> {
        let mut pods = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| PodError::io(&self.dir, e))?;
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let name = fs::read_to_string(entry.path().join("name"))
                .map(|n| n.trim().to_owned())
                .unwrap_or_else(|_| id.clone());
            pods.push(PodDir {
                id,
                name,
                path: entry.path(),
            });
        }
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Every pod, by name.
    pub fn list(&self) -> Result<Vec<PodDir>, PodError> {
        self.list_dirs()
    }

    /// The pod named `key`, or with id `key`, or whose id starts with `key`
    /// (if only one does).
    pub fn find(&self, key: &str) -> Result<PodDir, PodError> {
        let pods = self.list_dirs()?;
        if let Some(p) = pods.iter().find(|p| p.name == key || p.id == key) {
            return Ok(p.clone());
        }
        let mut prefixed = pods
            .iter()
            .filter(|p| !key.is_empty() && p.id.starts_with(key));
        match (prefixed.next(), prefixed.next()) {
            (Some(p), None) => Ok(p.clone()),
            (Some(_), Some(_)) => Err(PodError::Ambiguous(key.to_owned())),
            _ => Err(PodError::NoSuchPod(key.to_owned())),
        }
    }

    /// Deletes a pod's directory (under the store lock, so a pod being
    /// created with the same name waits), after unmounting its volumes'
    /// tmpfs and removing its host cgroup (killing what is left in it) and
    /// passt's network filter, which a supervisor that died may have left. A cgroup that cannot be
    /// removed keeps the directory, so a later `rm` or `gc` tries again.
    pub fn remove(&self, pod: &PodDir) -> Result<(), PodError> {
        let _lock = StoreLock::take(&self.dir).map_err(|e| PodError::io(&self.dir, e))?;
        super::volumes::release(&pod.path);
        if let Ok(status) = read_json::<PodStatus>(&pod.status_path()) {
            if let Some(record) = &status.cgroup {
                super::cgroup::release(record, &pod.id)?;
            }
            if let Some(record) = &status.net_guard {
                crate::net::guard::release(record, &pod.id)
                    .map_err(|e| PodError::Vmm(e.to_string()))?;
            }
            if let Some(record) = &status.net_tap {
                crate::net::tap::release(record, &pod.id)
                    .map_err(|e| PodError::Vmm(e.to_string()))?;
            }
        }
        fs::remove_dir_all(&pod.path).map_err(|e| PodError::io(&pod.path, e))
    }
}

impl PodDir {
    /// The host id range recorded for the pod ([`super::ids`]); none for a pod made by an
    /// older husk.
    pub fn ids(&self) -> Option<crate::jail::userns::IdRange> {
        super::ids::recorded(&self.path)
    }
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn status_path(&self) -> PathBuf {
        self.path.join("status.json")
    }
    pub fn console_path(&self) -> PathBuf {
        self.path.join("console.log")
    }
    /// The agent's socket, in a directory of its own (made with the pod):
    /// the VMM's jail binds that directory, not the pod's (whose state
    /// files the supervisor trusts).
    pub fn vsock_path(&self) -> PathBuf {
        self.path.join("vsock").join("vsock.sock")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.path.join("blobs")
    }
    pub fn log_path(&self, app: &str) -> PathBuf {
        self.path.join("logs").join(format!("{app}.log"))
    }
    pub fn volume_dir(&self, volume: &str) -> PathBuf {
        self.path.join("volumes").join(volume)
    }
    pub fn supervisor_log_path(&self) -> PathBuf {
        self.path.join("supervisor.log")
    }

    pub fn write_config(&self, config: &PodConfig) -> Result<(), PodError> {
        write_atomic(&self.config_path(), &config_json(config))
    }

    pub fn read_config(&self) -> Result<PodConfig, PodError> {
        read_json(&self.config_path())
    }

    pub fn write_status(&self, status: &PodStatus) -> Result<(), PodError> {
        write_json(&self.status_path(), status)
    }

    /// The recorded status, as [`PodStatus::effective`] sees it. A pod
    /// without a status file is one whose creator died before writing it.
    pub fn read_status(&self) -> Result<PodStatus, PodError> {
        match read_json::<PodStatus>(&self.status_path()) {
            Ok(s) => self.settled(s),
            Err(PodError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(PodStatus {
                    state: PodState::Failed,
                    reason: Some("the pod was never started".into()),
                    error_code: None,
                    supervisor_pid: None,
                    supervisor_start: None,
                    vmm_pid: None,
                    cgroup: None,
                    net_guard: None,
                    net_tap: None,
                    started: None,
                    finished: None,
                    apps: Vec::new(),
                })
            }
            Err(e) => Err(e),
        }
    }
}

impl PodDir {
    /// Judges `first`, a record read from `status.json`: a record that says
    /// "active" while its supervisor is gone is read once more before the
    /// pod is called failed. The supervisor writes its last record (say,
    /// "the VMM was killed by signal 9") and then exits; a reader whose
    /// first read came just before that write and whose liveness check came
    /// just after the exit would otherwise report "the supervisor died"
    /// instead of the recorded reason. Once the supervisor is gone nothing
    /// writes the file any more, so the second read is its last word.
    fn settled(&self, first: PodStatus) -> Result<PodStatus, PodError> {
        if !first.state.is_active() || first.supervisor_alive() {
            return Ok(first);
        }
        let last = match read_json::<PodStatus>(&self.status_path()) {
            Ok(s) => s,
            // Removed or replaced under us: the first record is all there is.
            Err(_) => first,
        };
        Ok(last.effective())
    }
}

/// Largest state file read back (config and status are small; a bigger one
/// is not ours).
const MAX_STATE_FILE: u64 = 4 << 20;

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PodError> {
    use std::io::Read;
    let file = File::open(path).map_err(|e| PodError::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_STATE_FILE)
        .read_to_string(&mut text)
        .map_err(|e| PodError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| PodError::Corrupt {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// `config.json`'s bytes for `config`: what is written, and what a pod's
/// measured launch hashes ([`crate::measure`]).
pub fn config_json(config: &PodConfig) -> Vec<u8> {
    // A PodConfig has string keys and plain values only: it serializes.
    let mut text = serde_json::to_vec_pretty(config).unwrap_or_default();
    text.push(b'\n');
    text
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PodError> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| PodError::Corrupt {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Writes `path` through a temporary file and a rename, so readers see the
/// old or the new content, never a torn one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), PodError> {
    // Per process: two processes writing one file do not share a temp file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = crate::private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        PodError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("husk-pods-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn names_are_unique_and_found_by_prefix() {
        let root = scratch("names");
        let store = PodStore::open(&root).unwrap();
        let a = store.create(Some("web"), "x").unwrap();
        assert!(matches!(
            store.create(Some("web"), "x"),
            Err(PodError::NameInUse(_))
        ));
        assert!(matches!(
            store.create(Some("a/b"), "x"),
            Err(PodError::BadName(_))
        ));
        let b = store.create(None, "busybox").unwrap();
        assert!(b.name.starts_with("busybox-"), "{}", b.name);
        assert_eq!(store.find("web").unwrap().id, a.id);
        assert_eq!(store.find(&b.id[..10]).unwrap().name, b.name);
        assert!(matches!(store.find("nope"), Err(PodError::NoSuchPod(_))));
        store.remove(&a).unwrap();
        assert!(store.find("web").is_err());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_new_pod_is_its_creators_until_its_supervisor_records_itself() {
        let root = scratch("created");
        let store = PodStore::open(&root).unwrap();
        let pod = store.create(None, "busybox").unwrap();
        // What `husk gc` and `husk ps` read: a live pod, not one whose
        // creator died, from the moment the directory exists.
        let status = pod.read_status().unwrap();
        assert_eq!(status.state, PodState::Created);
        assert!(status.state.is_active());
        assert_eq!(status.supervisor_pid, Some(std::process::id() as i32));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_dead_supervisor_means_failed() {
        let root = scratch("dead");
        let store = PodStore::open(&root).unwrap();
        let pod = store.create(Some("p"), "x").unwrap();
        let mut status = PodStatus::created();
        status.state = PodState::Running;
        pod.write_status(&status).unwrap();
        assert_eq!(pod.read_status().unwrap().state, PodState::Running);
        // A pid that is ours but a start time that is not: a reused pid.
        status.supervisor_start = Some(1);
        pod.write_status(&status).unwrap();
        let seen = pod.read_status().unwrap();
        assert_eq!(seen.state, PodState::Failed);
        assert!(seen.reason.unwrap().contains("supervisor"));
        fs::remove_dir_all(root).unwrap();
    }

    /// A reader that read "running" just before the supervisor wrote its
    /// last record and checked the supervisor just after it exited reports
    /// that last record, not "the supervisor died".
    #[test]
    fn a_supervisor_that_ended_is_judged_by_its_last_record() {
        let root = scratch("settled");
        let store = PodStore::open(&root).unwrap();
        let pod = store.create(Some("p"), "x").unwrap();
        // What the reader saw first: running, under a supervisor that has
        // since exited (our pid with a start time that is not ours).
        let mut stale = PodStatus::created();
        stale.state = PodState::Running;
        stale.supervisor_start = Some(1);
        // What the supervisor wrote before it exited.
        let mut last = stale.clone();
        last.state = PodState::Failed;
        last.reason = Some("the pod's VM failed: the VMM was killed by signal 9".into());
        pod.write_status(&last).unwrap();
        let seen = pod.settled(stale.clone()).unwrap();
        assert_eq!(seen.state, PodState::Failed);
        assert_eq!(seen.reason, last.reason);
        // Without a later record the supervisor's death is the reason.
        pod.write_status(&stale).unwrap();
        let seen = pod.read_status().unwrap();
        assert_eq!(seen.state, PodState::Failed);
        assert!(seen.reason.unwrap().contains("supervisor"));
        fs::remove_dir_all(root).unwrap();
    }

    /// F7: the pod store, each pod's directory and its state files are
    /// private to the user (0700 / 0600), and a pods/ an older husk made
    /// 0755 is closed when opened.
    #[test]
    fn pod_state_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = scratch("modes");
        let store = PodStore::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("pods")), 0o700);
        let pod = store.create(Some("secret"), "x").unwrap();
        pod.write_status(&PodStatus::created()).unwrap();
        write_atomic(&pod.config_path(), b"{\"env\":[\"TOKEN=x\"]}").unwrap();
        assert_eq!(mode(&pod.path), 0o700);
        for f in ["name", "status.json", "config.json"] {
            assert_eq!(mode(&pod.path.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&root.join("pods/.lock")), 0o600);
        fs::set_permissions(root.join("pods"), fs::Permissions::from_mode(0o755)).unwrap();
        PodStore::open(&root).unwrap();
        assert_eq!(mode(&root.join("pods")), 0o700);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn start_time_of_self_is_known() {
        assert!(process_start_time(std::process::id() as i32).is_some());
        assert!(process_start_time(i32::MAX).is_none());
    }
}
