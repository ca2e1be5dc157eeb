//! Stdio plumbing of one process: output pumps, the stdin writer, credits.
//!
//! Backpressure end to end: an output pump reads from the process's pipe
//! (or PTY master) only as much as the host has granted credit for, so a
//! slow host leaves data in the pipe and the process blocks in `write` —
//! no buffer in between grows. Stdin goes the other way: the host may send
//! at most the window ahead; the writer thread returns credit as the process
//! reads. Once the process has exited, its pumps drain what is left in the
//! pipe without blocking and stop, so its exit is reported right after its
//! last byte even if a background descendant still holds the pipe open.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use husk_proto::{Frame, Message, Stream, INITIAL_WINDOW, MAX_DATA};

use crate::outbox::Outbox;

/// The host sent more stdin than its window allows.
#[derive(Debug, thiserror::Error)]
#[error("stdin for process {proc} exceeds the flow-control window")]
pub struct WindowViolation {
    pub proc: u32,
}

#[derive(Default)]
struct StdinQueue {
    chunks: VecDeque<Vec<u8>>,
    queued: usize,
    /// The host closed stdin, the process exited or the connection is gone.
    closed: bool,
}

struct Credits {
    stdout: u32,
    stderr: u32,
    /// The connection is gone: read and discard without waiting for credit.
    discard: bool,
}

/// Shared between a process's pumps and its connection's reader.
pub struct ProcIo {
    pub proc: u32,
    credits: Mutex<Credits>,
    credit_cv: Condvar,
    stdin: Mutex<StdinQueue>,
    stdin_cv: Condvar,
    /// Readable once the process has exited (an eventfd).
    exited: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProcIo {
    pub fn new(proc: u32) -> io::Result<Arc<ProcIo>> {
        // SAFETY: eventfd takes integers; a non-negative return is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(ProcIo {
            proc,
            credits: Mutex::new(Credits {
                stdout: INITIAL_WINDOW,
                stderr: INITIAL_WINDOW,
                discard: false,
            }),
            credit_cv: Condvar::new(),
            stdin: Mutex::new(StdinQueue::default()),
            stdin_cv: Condvar::new(),
            // SAFETY: `fd` was just created and is owned by nobody else.
            exited: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    /// The host acknowledged `n` bytes of `stream`.
    pub fn add_credit(&self, stream: Stream, n: u32) {
        let mut c = lock(&self.credits);
        match stream {
            Stream::Stdout => c.stdout = c.stdout.saturating_add(n),
            Stream::Stderr => c.stderr = c.stderr.saturating_add(n),
            Stream::Stdin => return,
        }
        self.credit_cv.notify_all();
    }

    /// Queues stdin from the host; an empty chunk closes stdin.
    pub fn push_stdin(&self, bytes: Vec<u8>) -> Result<(), WindowViolation> {
        let mut q = lock(&self.stdin);
        if bytes.is_empty() {
            q.closed = true;
        } else if !q.closed {
            if q.queued + bytes.len() > INITIAL_WINDOW as usize {
                return Err(WindowViolation { proc: self.proc });
            }
            q.queued += bytes.len();
            q.chunks.push_back(bytes);
        }
        self.stdin_cv.notify_all();
        Ok(())
    }

    /// The connection is gone: output is discarded, stdin closed.
    pub fn disconnect(&self) {
        lock(&self.credits).discard = true;
        self.credit_cv.notify_all();
        self.close_stdin();
    }

    fn close_stdin(&self) {
        lock(&self.stdin).closed = true;
        self.stdin_cv.notify_all();
    }

    /// The process has exited: pumps switch to draining.
    pub fn mark_exited(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe {
            libc::write(
                self.exited.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.close_stdin();
    }

    /// Waits for credit on `stream`; `usize::MAX` in discard mode.
    fn wait_credit(&self, stream: Stream) -> usize {
        let mut c = lock(&self.credits);
        loop {
            if c.discard {
                return usize::MAX;
            }
            let have = if stream == Stream::Stdout {
                c.stdout
            } else {
                c.stderr
            };
            if have > 0 {
                return have as usize;
            }
            c = self.credit_cv.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn take_credit(&self, stream: Stream, n: usize) {
        let mut c = lock(&self.credits);
        let n = n as u32;
        if stream == Stream::Stdout {
            c.stdout = c.stdout.saturating_sub(n);
        } else {
            c.stderr = c.stderr.saturating_sub(n);
        }
    }
}

/// poll() on the pipe and the exit eventfd: (pipe readable, exited).
fn wait_readable(fd: &OwnedFd, exited: &OwnedFd) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: exited.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok((fds[0].revents != 0, fds[1].revents != 0))
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on an fd we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
}

/// Starts the thread copying `fd` (a pipe or PTY master) to the host as
/// `stream` of `io.proc`; it sends the end-of-stream frame last.
pub fn spawn_output_pump(
    fd: OwnedFd,
    stream: Stream,
    io: Arc<ProcIo>,
    outbox: Arc<Outbox>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("out-{}-{stream:?}", io.proc))
        .spawn(move || {
            pump_output(&fd, stream, &io, &outbox);
            outbox.send(&Frame::Data {
                proc: io.proc,
                stream,
                bytes: Vec::new(),
            });
        })
}

fn pump_output(fd: &OwnedFd, stream: Stream, io: &ProcIo, outbox: &Outbox) {
    let Ok(dup) = fd.try_clone() else { return };
    let mut file = File::from(dup);
    let mut buf = vec![0u8; MAX_DATA];
    let mut draining = false;
    loop {
        let credit = io.wait_credit(stream);
        if !draining {
            match wait_readable(fd, &io.exited) {
                Ok((readable, exited)) => {
                    if exited && !readable {
                        draining = true;
                        set_nonblocking(fd);
                    }
                }
                Err(_) => return,
            }
        }
        let want = credit.min(MAX_DATA);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EAGAIN while draining: all the process wrote has been sent.
            // EIO on a PTY master: the terminal's last user is gone.
            Err(_) => return,
        };
        io.take_credit(stream, n);
        if !outbox.send(&Frame::Data {
            proc: io.proc,
            stream,
            bytes: buf[..n].to_vec(),
        }) {
            // Connection gone: keep draining so the process never blocks.
            io.disconnect();
        }
    }
}

/// Starts the thread writing queued stdin into `fd`, returning credit to the
/// host as bytes are written. When the host closes stdin: for a pipe,
/// dropping `fd` gives the process end of file; for a terminal (`tty`, `fd`
/// is the PTY master, which stays open for output) the terminal's VEOF
/// character is written instead, as typing Ctrl-D would: in canonical mode
/// a reader then sees end of file (VEOF twice when a partial line is
/// pending: the first one only completes the line); a raw-mode app gets
/// the character and decides itself.
pub fn spawn_stdin_writer(
    fd: OwnedFd,
    tty: bool,
    io: Arc<ProcIo>,
    outbox: Arc<Outbox>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("in-{}", io.proc))
        .spawn(move || {
            let mut file = File::from(fd);
            let mut last = b'\n';
            loop {
                let chunk = {
                    let mut q = lock(&io.stdin);
                    loop {
                        if let Some(chunk) = q.chunks.pop_front() {
                            q.queued -= chunk.len();
                            break Some(chunk);
                        }
                        if q.closed {
                            break None;
                        }
                        q = io.stdin_cv.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let Some(chunk) = chunk else {
                    if tty {
                        let eof = super::tty::veof(&file);
                        let n = if last == b'\n' { 1 } else { 2 };
                        let _ = file.write_all(&[eof; 2][..n]);
                    }
                    return;
                };
                if file.write_all(&chunk).is_err() {
                    // The process closed its stdin or exited.
                    io.close_stdin();
                    return;
                }
                last = chunk.last().copied().unwrap_or(last);
                outbox.send_msg(Message::Credit {
                    proc: io.proc,
                    stream: Stream::Stdin,
                    bytes: chunk.len() as u32,
                });
            }
        })
}
