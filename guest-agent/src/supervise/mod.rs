//! Process supervision: the table of running processes, their stdio, their
//! exit, stopping them with a grace period.
//!
//! Starting is two-phase. [`Supervisor::start`] forks the process and
//! prepares its plumbing; the caller then sends the `Started` reply and calls
//! [`Pending::begin`], which starts the pumps and the watcher. That order
//! guarantees the host learns the process id before any of its output, and
//! the watcher sends `Exited` only after the pumps have sent the last byte.

pub mod io;
pub mod spawn;
pub mod tty;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use husk_proto::{Event, ExitStatus, Message, Stream, TtySize};

use crate::outbox::Outbox;
use crate::reaper::{Exit, Reaper};
use crate::sys;
use io::ProcIo;
pub use spawn::{Ids, Launch, PidNs, SpawnError};

/// A supervision request that failed.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("cannot set up stdio")]
    Stdio(#[source] std::io::Error),
    #[error("no process {0}")]
    NotFound(u32),
    #[error("process {0} belongs to another connection")]
    NotOwned(u32),
    #[error("process {0} has no terminal")]
    NoTty(u32),
    #[error("cannot resize the terminal")]
    Resize(#[source] std::io::Error),
    #[error("cannot signal process {proc}")]
    Signal {
        proc: u32,
        #[source]
        source: std::io::Error,
    },
}

/// How the process's stdio is wired.
#[derive(Debug, Default)]
pub struct StdioPlan {
    /// Run on a pseudo terminal (of `size`, default 24x80) from `pty`.
    pub tty: bool,
    pub size: Option<TtySize>,
    pub pty: tty::PtySource,
    /// Stream the host's stdin (otherwise /dev/null).
    pub stdin: bool,
}

/// Where the final status comes from.
pub enum ExitSource {
    /// The reaped status of the process itself.
    Reaped,
    /// A container init: it writes its app's status (`code N` / `signal N`)
    /// to this pipe before it exits.
    ContainerInit(File),
}

/// A cgroup to check for OOM kills: its `memory.events` and the `oom_kill`
/// count when the process started.
pub struct OomWatch {
    pub events: PathBuf,
    pub baseline: u64,
}

/// Reads the `oom_kill` counter of a `memory.events` file (0 if unreadable).
pub fn oom_kills(events: &std::path::Path) -> u64 {
    std::fs::read_to_string(events)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One supervised process.
pub struct Proc {
    pub id: u32,
    pub pid: i32,
    pub conn: u64,
    pub container: Option<String>,
    /// A container's first process (its init forwards signals).
    pub is_container_init: bool,
    io: Arc<ProcIo>,
    /// Set at start, or once the child sent it (`PtySource::InChild`).
    tty_master: OnceLock<OwnedFd>,
    done: Mutex<Option<ExitStatus>>,
    done_cv: Condvar,
}

impl Proc {
    pub fn io(&self) -> &Arc<ProcIo> {
        &self.io
    }

    /// Waits up to `timeout` for the exit; the status if it came.
    pub fn wait_done(&self, timeout: Duration) -> Option<ExitStatus> {
        let guard = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .done_cv
            .wait_timeout_while(guard, timeout, |d| d.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// The process table of one agent.
pub struct Supervisor {
    reaper: Arc<Reaper>,
    next: AtomicU32,
    procs: Mutex<HashMap<u32, Arc<Proc>>>,
}

/// A started process whose pumps and watcher are not running yet.
pub struct Pending {
    pub proc: Arc<Proc>,
    supervisor: Arc<Supervisor>,
    outbox: Arc<Outbox>,
    exit: Receiver<Exit>,
    source: ExitSource,
    oom: Option<OomWatch>,
    outputs: Vec<(OwnedFd, Stream)>,
    stdin: Option<OwnedFd>,
    /// The plan asked for stdin (for a terminal attached later).
    wants_stdin: bool,
    begun: bool,
}

impl Supervisor {
    pub fn new(reaper: Arc<Reaper>) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            reaper,
            next: AtomicU32::new(1),
            procs: Mutex::new(HashMap::new()),
        })
    }

    pub fn reaper(&self) -> &Arc<Reaper> {
        &self.reaper
    }

    fn table(&self) -> MutexGuard<'_, HashMap<u32, Arc<Proc>>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: u32) -> Result<Arc<Proc>, SuperviseError> {
        self.table()
            .get(&id)
            .cloned()
            .ok_or(SuperviseError::NotFound(id))
    }

    /// Process `id`, if connection `conn` started it: only the owner may
    /// signal, resize or stop a process (as only it gets its stdio and exit).
    pub fn owned(&self, id: u32, conn: u64) -> Result<Arc<Proc>, SuperviseError> {
        let proc = self.get(id)?;
        if proc.conn != conn {
            return Err(SuperviseError::NotOwned(id));
        }
        Ok(proc)
    }

    /// Every live process.
    pub fn all(&self) -> Vec<Arc<Proc>> {
        self.table().values().cloned().collect()
    }

    /// Forks the process described by `launch` with stdio per `plan`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        self: &Arc<Self>,
        launch: Launch,
        plan: StdioPlan,
        conn: u64,
        outbox: Arc<Outbox>,
        container: Option<String>,
        source: ExitSource,
        oom: Option<OomWatch>,
    ) -> Result<Pending, SuperviseError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(SuperviseError::Stdio);
        let mut outputs = Vec::new();
        let null3 = || [Stdio::null(), Stdio::null(), Stdio::null()];
        let (stdio, stdin, tty_master) = if plan.tty {
            let pair = match plan.pty {
                tty::PtySource::Own => Some(tty::open(plan.size).map_err(SuperviseError::Stdio)?),
                tty::PtySource::Given { master, slave } => Some((master, slave)),
                // Attached later: nothing to pump until then.
                tty::PtySource::InChild => None,
            };
            match pair {
                None => (null3(), None, OnceLock::new()),
                Some((master, slave)) => {
                    outputs.push((dup(&master)?, Stream::Stdout));
                    let stdin = if plan.stdin {
                        Some(dup(&master)?)
                    } else {
                        None
                    };
                    let stdio = [
                        Stdio::from(dup(&slave)?),
                        Stdio::from(dup(&slave)?),
                        Stdio::from(slave),
                    ];
                    (stdio, stdin, OnceLock::from(master))
                }
            }
        } else {
            let (out_r, out_w) = sys::pipe().map_err(SuperviseError::Stdio)?;
            let (err_r, err_w) = sys::pipe().map_err(SuperviseError::Stdio)?;
            outputs.push((out_r, Stream::Stdout));
            outputs.push((err_r, Stream::Stderr));
            let (stdin_stdio, stdin) = if plan.stdin {
                let (in_r, in_w) = sys::pipe().map_err(SuperviseError::Stdio)?;
                (Stdio::from(in_r), Some(in_w))
            } else {
                (Stdio::null(), None)
            };
            let stdio = [stdin_stdio, Stdio::from(out_w), Stdio::from(err_w)];
            (stdio, stdin, OnceLock::new())
        };
        let io = ProcIo::new(id).map_err(SuperviseError::Stdio)?;
        // Registration happens under the spawn guard inside `spawn`.
        let (pid, exit) = spawn::spawn(launch, stdio, &self.reaper)?;
        let is_container_init = matches!(source, ExitSource::ContainerInit(_));
        let proc = Arc::new(Proc {
            id,
            pid,
            conn,
            container,
            is_container_init,
            io,
            tty_master,
            done: Mutex::new(None),
            done_cv: Condvar::new(),
        });
        self.table().insert(id, proc.clone());
        Ok(Pending {
            proc,
            supervisor: self.clone(),
            outbox,
            exit,
            source,
            oom,
            outputs,
            stdin,
            wants_stdin: plan.stdin,
            begun: false,
        })
    }

    /// Sends `signal` to process `id` of connection `conn`.
    pub fn signal(&self, id: u32, conn: u64, signal: i32) -> Result<(), SuperviseError> {
        let proc = self.owned(id, conn)?;
        sys::kill(proc.pid, signal).map_err(|source| SuperviseError::Signal { proc: id, source })
    }

    /// Resizes the terminal of process `id` of connection `conn`.
    pub fn resize(&self, id: u32, conn: u64, size: TtySize) -> Result<(), SuperviseError> {
        let proc = self.owned(id, conn)?;
        let master = proc.tty_master.get().ok_or(SuperviseError::NoTty(id))?;
        tty::resize(master, size).map_err(SuperviseError::Resize)
    }

    /// Stops process `id` of connection `conn` (see [`Self::stop_proc`]).
    pub fn stop(&self, id: u32, conn: u64, grace: Duration) -> Result<ExitStatus, SuperviseError> {
        let proc = self.owned(id, conn)?;
        Ok(self.stop_proc(&proc, grace))
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL (to its whole process
    /// group, or its whole container for a container init). Returns its status.
    fn stop_proc(&self, proc: &Proc, grace: Duration) -> ExitStatus {
        let _ = sys::kill(proc.pid, libc::SIGTERM);
        if let Some(status) = proc.wait_done(grace) {
            return status;
        }
        // Each process leads its own session and group (setsid at spawn).
        let _ = sys::kill(-proc.pid, libc::SIGKILL);
        let _ = sys::kill(proc.pid, libc::SIGKILL);
        proc.wait_done(Duration::from_secs(30))
            .unwrap_or(ExitStatus::Signal(libc::SIGKILL))
    }

    /// The connection `conn` is gone: kill its processes, discard output.
    pub fn disconnect(&self, conn: u64) {
        for proc in self.all().into_iter().filter(|p| p.conn == conn) {
            proc.io.disconnect();
            let _ = sys::kill(-proc.pid, libc::SIGKILL);
            let _ = sys::kill(proc.pid, libc::SIGKILL);
        }
    }

    /// Stops every process with `grace` (in parallel).
    pub fn stop_all(self: &Arc<Self>, grace: Duration) {
        let handles: Vec<_> = self
            .all()
            .into_iter()
            .map(|p| {
                let sup = self.clone();
                std::thread::spawn(move || sup.stop_proc(&p, grace))
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Pending {
    /// Attaches the terminal a child made itself (`PtySource::InChild`):
    /// its output, and its input if the plan asked for stdin.
    pub fn attach_tty(&mut self, master: OwnedFd) -> Result<(), SuperviseError> {
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(SuperviseError::Stdio);
        self.outputs.push((dup(&master)?, Stream::Stdout));
        if self.wants_stdin {
            self.stdin = Some(dup(&master)?);
        }
        self.proc
            .tty_master
            .set(master)
            .map_err(|_| SuperviseError::Stdio(std::io::Error::other("terminal already set")))
    }

    /// Starts the pumps and the watcher (after the `Started` reply is sent).
    pub fn begin(mut self) {
        self.begun = true;
        let io = self.proc.io.clone();
        let mut pumps: Vec<JoinHandle<()>> = Vec::new();
        for (fd, stream) in std::mem::take(&mut self.outputs) {
            match io::spawn_output_pump(fd, stream, io.clone(), self.outbox.clone()) {
                Ok(h) => pumps.push(h),
                Err(e) => crate::console::line(format_args!("cannot start output pump: {e}")),
            }
        }
        let tty = self.proc.tty_master.get().is_some();
        if let Some(fd) = self.stdin.take() {
            if let Err(e) = io::spawn_stdin_writer(fd, tty, io.clone(), self.outbox.clone()) {
                crate::console::line(format_args!("cannot start stdin writer: {e}"));
            }
        }
        let exit = std::mem::replace(&mut self.exit, std::sync::mpsc::channel().1);
        let source = std::mem::replace(&mut self.source, ExitSource::Reaped);
        let oom = self.oom.take();
        let proc = self.proc.clone();
        let supervisor = self.supervisor.clone();
        let outbox = self.outbox.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("watch-{}", proc.id))
            .spawn(move || watch(proc, supervisor, outbox, exit, source, oom, pumps));
        if let Err(e) = spawned {
            crate::console::line(format_args!("cannot start process watcher: {e}"));
        }
    }
}

impl Drop for Pending {
    /// A start abandoned before `begin` (the caller failed later): kill it.
    fn drop(&mut self) {
        if !self.begun {
            let _ = sys::kill(self.proc.pid, libc::SIGKILL);
            self.supervisor.table().remove(&self.proc.id);
        }
    }
}

fn exit_to_status(exit: Exit) -> ExitStatus {
    match exit {
        Exit::Code(c) => ExitStatus::Code(c),
        Exit::Signal(s) => ExitStatus::Signal(s),
    }
}

/// Parses a container init's final status line.
pub fn parse_status_line(line: &str) -> Option<ExitStatus> {
    let (kind, n) = line.trim().split_once(' ')?;
    let n: i32 = n.parse().ok()?;
    match kind {
        "code" => Some(ExitStatus::Code(n)),
        "signal" => Some(ExitStatus::Signal(n)),
        _ => None,
    }
}

fn watch(
    proc: Arc<Proc>,
    supervisor: Arc<Supervisor>,
    outbox: Arc<Outbox>,
    exit: Receiver<Exit>,
    source: ExitSource,
    oom: Option<OomWatch>,
    pumps: Vec<JoinHandle<()>>,
) {
    // The sender lives in the reaper until the process is reaped.
    let reaped = exit.recv().unwrap_or(Exit::Signal(libc::SIGKILL));
    let status = match source {
        ExitSource::Reaped => exit_to_status(reaped),
        ExitSource::ContainerInit(mut pipe) => {
            let mut text = String::new();
            let _ = (&mut pipe).take(4096).read_to_string(&mut text);
            text.lines()
                .rev()
                .find_map(parse_status_line)
                .unwrap_or_else(|| exit_to_status(reaped))
        }
    };
    proc.io.mark_exited();
    for pump in pumps {
        let _ = pump.join();
    }
    let oom_killed = oom.is_some_and(|o| oom_kills(&o.events) > o.baseline);
    // Out of the table first: whoever waits on `done` (a stop request) may
    // act on the process being gone as soon as it wakes.
    supervisor.table().remove(&proc.id);
    *proc.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    proc.done_cv.notify_all();
    outbox.send_msg(Message::Event {
        event: Event::Exited {
            proc: proc.id,
            status,
            oom_killed,
        },
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("code 42\n"), Some(ExitStatus::Code(42)));
        assert_eq!(parse_status_line("signal 9"), Some(ExitStatus::Signal(9)));
        assert_eq!(parse_status_line("started 7"), None);
        assert_eq!(parse_status_line("code x"), None);
    }
}
