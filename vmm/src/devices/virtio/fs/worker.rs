//! The device's own thread: waits for queue notifications and commands, serves the queues.
//!
//! One thread per share, started when the device is created (so a failure to set the thread up
//! is a start-up error, not a guest that hangs at mount) and alive until the device is dropped.
//! It owns the activated queues; the vCPU thread that runs the transport only sends it
//! commands: `Activate` with the queues, `Reset` (answered once the thread has stopped touching
//! the queues), `Exit`. Commands arrive on a channel and are announced on an eventfd, which the
//! thread polls together with the queue notification eventfds.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use fuse_backend_rs::api::filesystem::FileSystem;
use log::error;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::queue::process_queue;
use super::FsDeviceError;
use crate::devices::virtio::{ActiveQueue, GuestMemory, InterruptKind, VirtioInterrupt};
use crate::fs::{prepare_server_thread, ConfinedFs, FsServer, ServerError};
use crate::seccomp::{self, Program, ThreadKind};
use crate::warn_limited;

/// Epoll token of the command eventfd; queue eventfds use their queue index.
const TOKEN_COMMAND: u64 = u64::MAX;

/// What the device asks of its worker.
pub(super) enum Command {
    /// Serve these queues.
    Activate(Active),
    /// Stop serving the queues and drop the share's open files; acknowledge on the channel.
    Reset(SyncSender<()>),
    /// End the thread.
    Exit,
}

/// Everything a worker needs to serve an activated device.
pub(super) struct Active {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) queues: Vec<ActiveQueue>,
}

/// The device's handle on its worker.
pub(super) struct WorkerHandle {
    commands: Sender<Command>,
    wake: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts the worker for share `tag` and waits until it has prepared itself: its own
    /// file system context and capabilities, then its seccomp filter (if `seccomp`), all
    /// before the device can be activated.
    pub(super) fn spawn(
        tag: &str,
        server: Arc<FsServer>,
        fs: Arc<ConfinedFs>,
        seccomp: Option<Program>,
    ) -> Result<Self, FsDeviceError> {
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(FsDeviceError::Event)?;
        let epoll = Epoll::new().map_err(FsDeviceError::Event)?;
        epoll
            .ctl(
                ControlOperation::Add,
                wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_COMMAND),
            )
            .map_err(FsDeviceError::Event)?;
        let (commands, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let worker = Worker {
            tag: tag.to_string(),
            server,
            fs,
            commands: rx,
            wake: wake.try_clone().map_err(FsDeviceError::Event)?,
            epoll,
            active: None,
            pending: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("fs-{tag}"))
            .spawn(move || {
                let prepared = prepare_server_thread().and_then(|()| match &seccomp {
                    Some(p) => seccomp::install(ThreadKind::Fs, p)
                        .map_err(|e| ServerError::Thread(io::Error::other(e))),
                    None => Ok(()),
                });
                let ok = prepared.is_ok();
                let _ = ready_tx.send(prepared);
                if ok {
                    worker.run();
                }
            })
            .map_err(|source| FsDeviceError::Spawn {
                tag: tag.to_string(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(FsDeviceError::Prepare {
                    tag: tag.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(FsDeviceError::Spawn {
                    tag: tag.to_string(),
                    source: io::Error::other("the thread ended before it was ready"),
                })
            }
        }
        Ok(Self {
            commands,
            wake,
            thread: Some(thread),
        })
    }

    /// Hands `cmd` to the worker and wakes it.
    pub(super) fn send(&self, cmd: Command) -> io::Result<()> {
        self.commands
            .send(cmd)
            .map_err(|_| io::Error::other("the file server thread has ended"))?;
        self.wake.write(1)
    }

    /// Asks the worker to end and waits for it (tests; the VMM just exits).
    #[cfg(test)]
    pub(super) fn shutdown(&mut self) {
        let _ = self.send(Command::Exit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        // Not joined: a request stuck in a host system call must not hold up the caller.
        let _ = self.send(Command::Exit);
        drop(self.thread.take());
    }
}

/// The worker thread's state.
struct Worker {
    tag: String,
    server: Arc<FsServer>,
    fs: Arc<ConfinedFs>,
    commands: Receiver<Command>,
    wake: EventFd,
    epoll: Epoll,
    active: Option<Active>,
    /// Queues with work left over from a pass that hit its budget (or never looked at yet).
    pending: Vec<bool>,
}

impl Worker {
    fn run(mut self) {
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let timeout = if self.pending.iter().any(|&p| p) {
                0
            } else {
                -1
            };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!(
                        "virtio-fs `{}`: worker cannot wait for events: {e}",
                        self.tag
                    );
                    return;
                }
            };
            for ev in &events[..n] {
                if ev.data() == TOKEN_COMMAND {
                    if !self.handle_commands() {
                        return;
                    }
                } else {
                    self.note_notification(ev.data() as usize);
                }
            }
            self.serve_pending();
        }
    }

    /// Runs every queued command; false when the thread must end.
    fn handle_commands(&mut self) -> bool {
        let _ = self.wake.read();
        loop {
            match self.commands.try_recv() {
                Ok(Command::Activate(active)) => self.activate(active),
                Ok(Command::Reset(ack)) => {
                    self.deactivate();
                    // Open files and looked-up inodes belong to the driver that just went away.
                    self.fs.destroy();
                    let _ = ack.send(());
                }
                Ok(Command::Exit) | Err(TryRecvError::Disconnected) => {
                    self.deactivate();
                    return false;
                }
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn activate(&mut self, active: Active) {
        self.deactivate();
        for (i, q) in active.queues.iter().enumerate() {
            let ev = EpollEvent::new(EventSet::IN, i as u64);
            if let Err(e) = self
                .epoll
                .ctl(ControlOperation::Add, q.notify.as_raw_fd(), ev)
            {
                error!("virtio-fs `{}`: cannot watch queue {i}: {e}", self.tag);
            }
        }
        // The driver may have queued requests before the worker was listening.
        self.pending = vec![true; active.queues.len()];
        self.active = Some(active);
    }

    fn deactivate(&mut self) {
        if let Some(active) = self.active.take() {
            for q in &active.queues {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    q.notify.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
        }
        self.pending.clear();
    }

    fn note_notification(&mut self, idx: usize) {
        let Some(q) = self.active.as_ref().and_then(|a| a.queues.get(idx)) else {
            return;
        };
        if let Err(e) = q.notify.read() {
            if e.kind() != io::ErrorKind::WouldBlock {
                warn_limited!("virtio-fs: cannot read queue {idx} eventfd: {e}");
            }
        }
        if let Some(p) = self.pending.get_mut(idx) {
            *p = true;
        }
    }

    fn serve_pending(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        for (idx, q) in active.queues.iter_mut().enumerate() {
            if !self.pending.get(idx).copied().unwrap_or(false) {
                continue;
            }
            let budget = usize::from(q.queue.size());
            let pass = process_queue(&mut q.queue, &active.mem, &self.server, budget);
            if pass.used {
                signal_used(&mut q.queue, &active.mem, active.interrupt.as_ref());
            }
            self.pending[idx] = pass.more;
        }
    }
}

/// Raises the queue interrupt if the driver wants one (EVENT_IDX aware).
pub(super) fn signal_used(queue: &mut Queue, mem: &GuestMemory, interrupt: &dyn VirtioInterrupt) {
    match queue.needs_notification(mem) {
        Ok(false) => {}
        Ok(true) | Err(_) => {
            if let Err(e) = interrupt.trigger(InterruptKind::Queue) {
                warn_limited!("virtio-fs: cannot raise interrupt: {e}");
            }
        }
    }
}
