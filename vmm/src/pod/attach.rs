//! A pod's apps on the local terminal: where their output goes, stdin
//! copied to the app, the terminal in raw mode for `-t`, its size.
//!
//! Output of a one-app pod goes to stdout and stderr as it is. Several apps
//! writing to one terminal are told apart as `docker compose` does: each
//! line is prefixed with `app | `.

use std::io::Write;
use std::os::fd::AsRawFd;

use husk_proto::client::StdinWriter;
use husk_proto::{Request, TtySize};

/// The signals an attached `husk run` or `husk exec` passes on to its
/// process, as Docker's sig-proxy does; SIGWINCH becomes a terminal resize.
pub const FORWARDED_SIGNALS: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The agent request that passes `signal` on to process `proc`: for
/// SIGWINCH a resize of its terminal (none without a terminal, or when this
/// one's size is unknown), else the signal itself.
pub fn forward_request(proc: u32, signal: i32, tty: bool) -> Option<Request> {
    if signal != libc::SIGWINCH {
        return Some(Request::Signal { proc, signal });
    }
    let size = terminal_size().filter(|_| tty)?;
    Some(Request::ResizeTty {
        proc,
        rows: size.rows,
        cols: size.cols,
    })
}

/// How the pod is attached to this process's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach {
    /// Copy this process's stdin to the (first) app.
    pub stdin: bool,
    /// The (first) app runs on a pseudo terminal.
    pub tty: bool,
}

/// The terminal size of this process's stdout (or stdin), if it is a terminal.
pub fn terminal_size() -> Option<TtySize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: winsize is plain data; TIOCGWINSZ writes one into it.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ on a descriptor we hold, with a valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(TtySize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            });
        }
    }
    None
}

/// Whether this process's stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// This process's terminal in raw mode (for `-t`: keys, Ctrl-C included,
/// go to the app's terminal); the old mode comes back on drop.
pub struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches stdin's terminal to raw mode; `None` if stdin is not one.
    pub fn enable() -> Option<RawTerminal> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data, filled in by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr on our stdin with a valid pointer.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct we pass.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr on our stdin with a valid pointer.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enable` on the same descriptor.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// Copies this process's stdin to the app until end of file, then closes
/// the app's stdin.
pub fn spawn_stdin_copier(writer: StdinWriter) {
    if let Err(e) = husk_agent_client::spawn_stdin_copy(Box::new(std::io::stdin()), writer) {
        log::warn!("cannot start the stdin thread: {e}");
    }
}

/// Where one app's output goes besides its log.
pub enum Sinks {
    /// Nowhere (detached).
    None,
    /// This process's stdout and stderr, as is.
    Direct,
    /// This process's stdout and stderr, each line prefixed.
    Prefixed {
        prefix: Vec<u8>,
        out: Vec<u8>,
        err: Vec<u8>,
    },
}

/// The sinks for app `name` (number `index` of `count`).
pub fn sinks(attach: Option<&Attach>, name: &str, _index: usize, count: usize) -> Sinks {
    match (attach, count) {
        (None, _) => Sinks::None,
        (Some(_), 1) => Sinks::Direct,
        (Some(_), _) => Sinks::Prefixed {
            prefix: format!("{name} | ").into_bytes(),
            out: Vec::new(),
            err: Vec::new(),
        },
    }
}

/// Writes the complete lines of `pending` to `w`, each after `prefix`;
/// keeps the incomplete rest.
fn flush_lines(prefix: &[u8], pending: &mut Vec<u8>, w: &mut dyn Write, all: bool) {
    let end = if all {
        pending.len()
    } else {
        match pending.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return,
        }
    };
    let mut text = Vec::with_capacity(end + prefix.len() * 4);
    for line in pending[..end].split_inclusive(|&b| b == b'\n') {
        text.extend_from_slice(prefix);
        text.extend_from_slice(line);
    }
    if all && !text.ends_with(b"\n") && !text.is_empty() {
        text.push(b'\n');
    }
    let _ = w.write_all(&text);
    let _ = w.flush();
    pending.drain(..end);
}

impl Sinks {
    pub fn stdout(&mut self, bytes: &[u8]) {
        match self {
            Sinks::None => {}
            Sinks::Direct => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
            }
            Sinks::Prefixed { prefix, out, .. } => {
                out.extend_from_slice(bytes);
                flush_lines(prefix, out, &mut std::io::stdout().lock(), false);
            }
        }
    }

    pub fn stderr(&mut self, bytes: &[u8]) {
        match self {
            Sinks::None => {}
            Sinks::Direct => {
                let _ = std::io::stderr().lock().write_all(bytes);
            }
            Sinks::Prefixed { prefix, err, .. } => {
                err.extend_from_slice(bytes);
                flush_lines(prefix, err, &mut std::io::stderr().lock(), false);
            }
        }
    }

    /// Writes what is left of incomplete lines.
    pub fn finish(&mut self) {
        if let Sinks::Prefixed { prefix, out, err } = self {
            flush_lines(prefix, out, &mut std::io::stdout().lock(), true);
            flush_lines(prefix, err, &mut std::io::stderr().lock(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_and_partial_lines_wait() {
        let mut pending = b"one\ntw".to_vec();
        let mut out = Vec::new();
        flush_lines(b"a | ", &mut pending, &mut out, false);
        assert_eq!(out, b"a | one\n");
        assert_eq!(pending, b"tw");
        pending.extend_from_slice(b"o\nthree");
        flush_lines(b"a | ", &mut pending, &mut out, true);
        assert_eq!(out, b"a | one\na | two\na | three\n");
        assert!(pending.is_empty());
    }
}
