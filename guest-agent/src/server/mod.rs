//! The agent's request server: listeners, connections, request handlers.
//!
//! In the guest it listens on AF_VSOCK (any CID, port 1024 unless
//! `husk.vsock_port=` says otherwise); on the host, for tests, on a Unix
//! socket (`husk-agent serve --unix PATH`). Each connection gets a reader
//! thread; each request runs on its own thread so that a long unpack never
//! holds up stdin, credit or signals for running processes.

mod conn;
mod rpc;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::container::Containers;
use crate::reaper::Reaper;
use crate::supervise::Supervisor;
use crate::{console, shutdown};

/// Where the agent runs, which decides what "shut down" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a guest: shutdown stops everything and powers off.
    Guest,
    /// A server process on the host (tests): shutdown stops its own
    /// processes and exits.
    Host,
}

/// State shared by every connection.
pub struct Agent {
    pub mode: Mode,
    pub supervisor: Arc<Supervisor>,
    pub containers: Containers,
    next_conn: AtomicU64,
}

impl Agent {
    pub fn new(mode: Mode, reaper: Arc<Reaper>) -> Arc<Agent> {
        Arc::new(Agent {
            mode,
            supervisor: Supervisor::new(reaper),
            containers: Containers::new(),
            next_conn: AtomicU64::new(1),
        })
    }

    /// Serves connections from `listener` forever (until a shutdown request
    /// ends the guest or the host process).
    pub fn serve(self: &Arc<Self>, listener: &Listener) -> io::Result<()> {
        loop {
            let stream = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_transient_accept_error(&e) => {
                    console::line(format_args!("accept failed: {e}"));
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let agent = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("conn-{id}"))
                .spawn(move || conn::run(agent, id, stream));
            if let Err(e) = spawned {
                console::line(format_args!("cannot start a connection thread: {e}"));
            }
        }
    }

    /// Stops everything and ends: powers the guest off, or exits on the host.
    pub fn shut_down(&self, grace: std::time::Duration) -> ! {
        match self.mode {
            Mode::Guest => {
                shutdown::stop_all_processes(self.supervisor.reaper(), grace);
                self.containers.remove_all();
                shutdown::power_off()
            }
            Mode::Host => {
                self.supervisor.stop_all(grace);
                self.containers.remove_all();
                std::process::exit(0)
            }
        }
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A listening socket: vsock in the guest, Unix on the host.
pub enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener),
}

impl Listener {
    /// Listens on vsock `port` for any CID.
    pub fn vsock(port: u32) -> io::Result<Listener> {
        // SAFETY: socket() takes integers; the result is a new fd or -1.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_vm is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        // SAFETY: `addr` is a valid sockaddr_vm of the length passed.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: listen on a bound socket we own.
        if unsafe { libc::listen(fd.as_raw_fd(), 16) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Listener::Vsock(fd))
    }

    /// Listens on a Unix socket at `path` (replacing a stale socket file).
    pub fn unix(path: &Path) -> io::Result<Listener> {
        let _ = std::fs::remove_file(path);
        Ok(Listener::Unix(UnixListener::bind(path)?))
    }

    fn accept(&self) -> io::Result<File> {
        match self {
            Listener::Unix(l) => Ok(File::from(OwnedFd::from(l.accept()?.0))),
            Listener::Vsock(fd) => {
                // SAFETY: accept4 on our listening socket; null address
                // pointers are allowed.
                let c = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if c < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a fresh descriptor owned by nobody else.
                Ok(File::from(unsafe { OwnedFd::from_raw_fd(c) }))
            }
        }
    }
}

/// The guest's server loop (called by PID 1 after the readiness line).
/// Without vsock (a VM started with no vsock device) the guest idles until
/// a signal ends it, rather than powering off under its user.
pub fn serve_guest(reaper: Arc<Reaper>, port: u32) {
    let listener = match Listener::vsock(port) {
        Ok(l) => l,
        Err(e) => {
            console::line(format_args!(
                "cannot listen on vsock port {port} ({e}); idling until signalled"
            ));
            loop {
                std::thread::park();
            }
        }
    };
    console::line(format_args!("listening on vsock port {port}"));
    let agent = Agent::new(Mode::Guest, reaper);
    if let Err(e) = agent.serve(&listener) {
        console::line(format_args!("vsock listener failed: {e}"));
    }
}
