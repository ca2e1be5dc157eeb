//! Containers: create (namespaces, cgroup, container init, first process),
//! exec into a running one, remove.
//!
//! A container's first process runs under a small init ([`init`]) that is
//! PID 1 of the container's PID namespace. The agent keeps the init's
//! namespace files open, so `exec` joins them (mount, UTS, IPC through
//! `setns` in the child; PID by forking from a thread that entered the
//! namespace) and the new process lands in the same cgroup.
//!
//! cgroup v2 limits are applied when the unified hierarchy at
//! /sys/fs/cgroup offers memory, cpu and pids (always in the guest); on a
//! host where they are bound to cgroup v1 the container runs without limits
//! and the agent logs one line saying so.
//!
//! Every app process (first or exec'd) runs with the container's
//! [`SecuritySpec`]: its capabilities (docker's by default, [`privs`]),
//! `no_new_privs` if asked, and its seccomp profile behind a guard that
//! keeps vsock and io_uring from it ([`seccomp`]: only the agent talks to
//! the host); a privileged container gets every capability and no filter.
//! The filter is compiled once when the container is made (a profile that
//! does not compile refuses the request) and kept for its `exec`s.

pub mod binds;
pub mod init;
pub mod privs;
pub mod seccomp;
pub mod spec;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use husk_proto::{ContainerSpec, ProcessSpec, SecuritySpec};

use crate::cgroup::{self, CgroupError};
use crate::console;
use crate::outbox::Outbox;
use crate::rooted::Root;
use crate::supervise::tty::{self, PtySource};
use crate::supervise::{
    oom_kills, ExitSource, Launch, OomWatch, Pending, PidNs, StdioPlan, SuperviseError, Supervisor,
};
use crate::users::{self, UserError};
use init::InitConfig;
use spec::SpecError;

/// A container request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("no container {0:?}")]
    NotFound(String),
    #[error("container {0:?} is still running; stop it first")]
    Running(String),
    #[error("container {0:?} is not running")]
    NotRunning(String),
    #[error("root file system {path} is not usable")]
    Rootfs {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the container's cgroup")]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
    #[error("container init failed: {0}")]
    Init(String),
    #[error("cannot talk to the container init")]
    InitPipe(#[source] io::Error),
    #[error("mount source {path} is not usable")]
    MountSource {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the container's terminal")]
    Terminal(#[source] io::Error),
    #[error("cannot open the namespaces of container {0:?}")]
    Namespaces(String, #[source] io::Error),
    #[error("cannot build the seccomp filter")]
    Seccomp(#[source] seccomp::CompileError),
}

struct Namespaces {
    pid: OwnedFd,
    mnt: OwnedFd,
    uts: OwnedFd,
    ipc: OwnedFd,
}

/// A created container.
pub struct Container {
    pub id: String,
    rootfs: PathBuf,
    env: Vec<String>,
    cgroup: Option<PathBuf>,
    /// The first process (under the container init).
    pub init_proc: u32,
    ns: Namespaces,
    /// What each `exec` runs with, worked out once at create (as its
    /// first process): the capabilities it drops, `no_new_privs`, the
    /// compiled filter.
    drop_caps: Vec<libc::c_int>,
    no_new_privs: bool,
    seccomp: Option<seccomp::Program>,
}

/// The agent's containers.
#[derive(Default)]
pub struct Containers {
    map: Mutex<HashMap<String, Arc<Container>>>,
}

fn open_ns(pid: i32, kind: &str) -> io::Result<OwnedFd> {
    Ok(File::open(format!("/proc/{pid}/ns/{kind}"))?.into())
}

fn cgroup_procs(dir: &Path) -> io::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?
        .into())
}

fn oom_watch(dir: &Option<PathBuf>) -> Option<OomWatch> {
    dir.as_ref().map(|d| {
        let events = d.join("memory.events");
        OomWatch {
            baseline: oom_kills(&events),
            events,
        }
    })
}

/// Reads one line (the init's first report) byte by byte, leaving the rest
/// of the pipe for the watcher.
fn read_line(pipe: &mut File) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        if pipe.read(&mut byte)? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

impl Containers {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates container `spec.id` and starts its first process.
    pub fn create(
        &self,
        supervisor: &Arc<Supervisor>,
        conn: u64,
        outbox: Arc<Outbox>,
        spec: ContainerSpec,
    ) -> Result<Pending, ContainerError> {
        spec::check_id(&spec.id)?;
        if self.map().contains_key(&spec.id) {
            return Err(ContainerError::Exists(spec.id));
        }
        let resolved = spec::merge(&spec.image, &spec.process)?;
        spec::check_mounts(&spec.mounts)?;
        spec::check_security(&spec.security)?;
        let program = seccomp::program_for(&spec.security).map_err(ContainerError::Seccomp)?;
        for m in &spec.mounts {
            std::fs::metadata(&m.source).map_err(|source| ContainerError::MountSource {
                path: m.source.clone(),
                source,
            })?;
        }
        let rlimits = spec::rlimits(&spec.process.rlimits)?;
        let rootfs_err = |source| ContainerError::Rootfs {
            path: spec.rootfs.clone(),
            source,
        };
        let rootfs = std::fs::canonicalize(&spec.rootfs).map_err(rootfs_err)?;
        let root = Root::open(&rootfs).map_err(rootfs_err)?;
        let ids = users::resolve(Some(&root), &resolved.user)?;

        let cgroup = match cgroup::unusable_reason() {
            None => Some(cgroup::create_group(&spec.id, &spec.resources)?),
            Some(why) => {
                console::line(format_args!(
                    "container {}: no cgroup v2 limits ({why})",
                    spec.id
                ));
                None
            }
        };
        let cleanup_cgroup = |dir: &Option<PathBuf>| {
            if let Some(d) = dir {
                let _ = cgroup::remove_group(d);
            }
        };
        let result = self.start_init(
            supervisor, conn, outbox, &spec, &resolved, ids, rlimits, &rootfs, &cgroup, &program,
        );
        let (pending, ns) = match result {
            Ok(ok) => ok,
            Err(e) => {
                cleanup_cgroup(&cgroup);
                return Err(e);
            }
        };
        let container = Arc::new(Container {
            id: spec.id.clone(),
            rootfs,
            env: resolved.env,
            cgroup,
            init_proc: pending.proc.id,
            ns,
            drop_caps: privs::drops_for(&spec.security),
            no_new_privs: spec.security.no_new_privileges,
            seccomp: program,
        });
        self.map().insert(spec.id, container);
        Ok(pending)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_init(
        &self,
        supervisor: &Arc<Supervisor>,
        conn: u64,
        outbox: Arc<Outbox>,
        spec: &ContainerSpec,
        resolved: &spec::Resolved,
        ids: crate::supervise::Ids,
        rlimits: Vec<(i32, u64, u64)>,
        rootfs: &Path,
        cgroup: &Option<PathBuf>,
        seccomp: &Option<seccomp::Program>,
    ) -> Result<(Pending, Namespaces), ContainerError> {
        let pipe_err = ContainerError::InitPipe;
        let (cfg_r, cfg_w) = crate::sys::pipe().map_err(pipe_err)?;
        let mut cfg_w = File::from(cfg_w);
        let (status_r, status_w) = crate::sys::pipe().map_err(pipe_err)?;
        let mut status_first = File::from(status_r);
        let status_rest = status_first.try_clone().map_err(pipe_err)?;
        let launch = Launch {
            args: vec!["/proc/self/exe".into(), "container-init".into()],
            env: Vec::new(),
            pid_ns: PidNs::New,
            unshare: libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
            cgroup_procs: match cgroup {
                Some(dir) => Some(cgroup_procs(dir).map_err(|e| {
                    ContainerError::Cgroup(CgroupError::Write {
                        path: dir.join("cgroup.procs"),
                        value: "0".into(),
                        source: e,
                    })
                })?),
                None => None,
            },
            extra_fds: vec![(cfg_r, init::CONFIG_FD), (status_w, init::STATUS_FD)],
            blocked_signals: init::forwardable_signals(),
            ..Launch::default()
        };
        // The init opens the terminal inside the container's own devpts, so
        // the app finds it under /dev/pts (ttyname works), and reports it.
        let plan = StdioPlan {
            tty: spec.process.tty,
            size: spec.process.tty_size,
            pty: PtySource::InChild,
            stdin: spec.process.stdin,
        };
        let mut pending = supervisor.start(
            launch,
            plan,
            conn,
            outbox,
            Some(spec.id.clone()),
            ExitSource::ContainerInit(status_rest),
            oom_watch(cgroup),
        )?;
        // The init is blocked reading its configuration, so it is alive and
        // already in its namespaces: open them now, before it can exit.
        let pid = pending.proc.pid;
        let ns_err = |e| ContainerError::Namespaces(spec.id.clone(), e);
        let ns = Namespaces {
            pid: open_ns(pid, "pid").map_err(ns_err)?,
            mnt: open_ns(pid, "mnt").map_err(ns_err)?,
            uts: open_ns(pid, "uts").map_err(ns_err)?,
            ipc: open_ns(pid, "ipc").map_err(ns_err)?,
        };
        let config = InitConfig {
            rootfs: rootfs.to_string_lossy().into_owned(),
            hostname: spec.hostname.clone(),
            args: resolved.args.clone(),
            env: resolved.env.clone(),
            cwd: resolved.cwd.clone(),
            uid: ids.uid,
            gid: ids.gid,
            groups: ids.groups,
            rlimits,
            tty: spec.process.tty,
            tty_size: spec.process.tty_size,
            mounts: spec.mounts.clone(),
            security: SecuritySpec {
                seccomp: None,
                ..spec.security.clone()
            },
            seccomp: seccomp.clone(),
        };
        let json = serde_json::to_vec(&config).map_err(|e| pipe_err(e.into()))?;
        cfg_w.write_all(&json).map_err(pipe_err)?;
        drop(cfg_w);
        let first = read_line(&mut status_first).map_err(pipe_err)?;
        match first.split_once(' ') {
            Some(("started", rest)) if spec.process.tty => {
                // `started <app pid> <fd of the terminal master in the init>`
                let fd = rest
                    .split(' ')
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| ContainerError::Init(format!("no terminal in {first:?}")))?;
                let master = crate::sys::take_fd(pid, fd).map_err(ContainerError::Terminal)?;
                pending.attach_tty(master)?;
            }
            Some(("started", _)) => {}
            Some(("error", msg)) => return Err(ContainerError::Init(msg.to_owned())),
            _ => return Err(ContainerError::Init(format!("unexpected report {first:?}"))),
        }
        Ok((pending, ns))
    }

    /// Starts `process` inside running container `id`.
    pub fn exec(
        &self,
        supervisor: &Arc<Supervisor>,
        conn: u64,
        outbox: Arc<Outbox>,
        id: &str,
        process: &ProcessSpec,
    ) -> Result<Pending, ContainerError> {
        let c = self
            .map()
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(id.to_owned()))?;
        let args = process.args.clone().unwrap_or_default();
        if args.first().is_none_or(|a| a.is_empty()) {
            return Err(SpecError::NoCommand.into());
        }
        let env = spec::merge_env(&c.env, &process.env)?;
        let root = Root::open(&c.rootfs).map_err(|source| ContainerError::Rootfs {
            path: c.rootfs.display().to_string(),
            source,
        })?;
        let ids = users::resolve(Some(&root), process.user.as_deref().unwrap_or(""))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| ContainerError::Namespaces(id.to_owned(), e))
        };
        // The init's root is the container's root; it is alive (checked
        // above), so its /proc entry names it.
        let init_pid = supervisor
            .get(c.init_proc)
            .map_err(|_| ContainerError::NotRunning(id.to_owned()))?
            .pid;
        let root_fd: OwnedFd = File::open(format!("/proc/{init_pid}/root"))
            .map_err(|e| ContainerError::Namespaces(id.to_owned(), e))?
            .into();
        // The terminal comes from the container's devpts (see create).
        let pty = if process.tty {
            let master = tty::open_ptmx(&root_fd, Path::new("dev/pts/ptmx"))
                .map_err(ContainerError::Terminal)?;
            let (master, slave) =
                tty::pair_from_ptmx(master, process.tty_size).map_err(ContainerError::Terminal)?;
            PtySource::Given { master, slave }
        } else {
            PtySource::Own
        };
        let launch = Launch {
            args,
            env,
            root: Some(root_fd),
            cwd: Some(process.cwd.clone().unwrap_or_else(|| "/".into())),
            ids,
            rlimits: spec::rlimits(&process.rlimits)?,
            setns: vec![
                (dup(&c.ns.mnt)?, libc::CLONE_NEWNS),
                (dup(&c.ns.uts)?, libc::CLONE_NEWUTS),
                (dup(&c.ns.ipc)?, libc::CLONE_NEWIPC),
            ],
            pid_ns: PidNs::Join(dup(&c.ns.pid)?),
            cgroup_procs: match &c.cgroup {
                Some(dir) => Some(cgroup_procs(dir).map_err(|e| {
                    ContainerError::Cgroup(CgroupError::Write {
                        path: dir.join("cgroup.procs"),
                        value: "0".into(),
                        source: e,
                    })
                })?),
                None => None,
            },
            ctty: process.tty,
            // The same confinement as the container's first process (as
            // `docker exec`).
            drop_caps: c.drop_caps.clone(),
            no_new_privs: c.no_new_privs,
            seccomp: c.seccomp.clone(),
            ..Launch::default()
        };
        let plan = StdioPlan {
            tty: process.tty,
            size: process.tty_size,
            pty,
            stdin: process.stdin,
        };
        Ok(supervisor.start(
            launch,
            plan,
            conn,
            outbox,
            Some(id.to_owned()),
            ExitSource::Reaped,
            oom_watch(&c.cgroup),
        )?)
    }

    /// Removes stopped container `id` (its cgroup and its record).
    pub fn remove(&self, supervisor: &Supervisor, id: &str) -> Result<(), ContainerError> {
        let c = self
            .map()
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(id.to_owned()))?;
        if supervisor.get(c.init_proc).is_ok() {
            return Err(ContainerError::Running(id.to_owned()));
        }
        if let Some(dir) = &c.cgroup {
            cgroup::remove_group(dir)?;
        }
        let mut map = self.map();
        map.remove(id);
        // The unpack tmpfs holds the image in guest memory: give it back,
        // unless another container runs on the same root file system.
        if !map.values().any(|o| o.rootfs == c.rootfs) {
            if let Err(e) = crate::unpack::release_rootfs(&c.rootfs) {
                console::line(format_args!(
                    "container {id}: cannot unmount {}: {e}",
                    c.rootfs.display()
                ));
            }
        }
        Ok(())
    }

    /// At shutdown, after every process stopped: drop every cgroup.
    pub fn remove_all(&self) {
        for (_, c) in self.map().drain() {
            if let Some(dir) = &c.cgroup {
                let _ = cgroup::remove_group(dir);
            }
        }
    }
}
