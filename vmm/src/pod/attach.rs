//! A pod's apps on the local terminal: where their output goes, stdin
//! copied to the app, the terminal in raw mode for `-t`, its size.
//!
//! Output of a one-app pod goes to stdout and stderr as it is. Several apps
//! writing to one terminal are told apart as `docker compose` does: each
//! line is prefixed with `app | `.

use std::io::Write;
use std::os::fd::AsRawFd;

use husk_agent_client::StdinWriter;
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
        out: LinePrefixer,
        err: LinePrefixer,
    },
}

/// The sinks for app `name` (number `index` of `count`).
pub fn sinks(attach: Option<&Attach>, name: &str, _index: usize, count: usize) -> Sinks {
    match (attach, count) {
        (None, _) => Sinks::None,
        (Some(_), 1) => Sinks::Direct,
        (Some(_), _) => Sinks::Prefixed {
            out: LinePrefixer::new(name),
            err: LinePrefixer::new(name),
        },
    }
}

/// Longest partial line kept back waiting for its newline; a line longer
/// than this is written in pieces of this size, each on a prefixed line of
/// its own.
pub const MAX_PENDING_LINE: usize = 64 << 10;

/// Prefixes each line of one app's stream with `app | `, writing only
/// whole lines so that apps sharing a terminal do not cut into each
/// other's lines.
///
/// Bounded (security review F4): an app that never writes a newline
/// cannot grow the partial line past [`MAX_PENDING_LINE`], and each byte
/// is looked at a bounded number of times (only new bytes are searched for
/// a newline), so the cost is linear in the output whatever its shape.
pub struct LinePrefixer {
    prefix: Vec<u8>,
    /// The start of a line that has no newline yet (never one inside).
    pending: Vec<u8>,
}

impl LinePrefixer {
    pub fn new(app: &str) -> LinePrefixer {
        LinePrefixer {
            prefix: format!("{app} | ").into_bytes(),
            pending: Vec::new(),
        }
    }

    /// Takes `bytes` of output and writes every line they complete.
    pub fn push(&mut self, mut bytes: &[u8], w: &mut dyn Write) {
        let mut text = Vec::new();
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.line(&bytes[..=i], &mut text);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    let room = MAX_PENDING_LINE - self.pending.len();
                    if bytes.len() < room {
                        self.keep(bytes);
                        break;
                    }
                    // The line is too long to wait for: this piece goes out
                    // as a line of its own.
                    self.line(&bytes[..room], &mut text);
                    text.push(b'\n');
                    bytes = &bytes[room..];
                }
            }
        }
        write_out(w, &text);
    }

    /// Keeps `bytes` (no newline, less than the room left) in the pending
    /// line, whose allocation doubles as it grows but never past
    /// [`MAX_PENDING_LINE`].
    fn keep(&mut self, bytes: &[u8]) {
        let need = self.pending.len() + bytes.len();
        if need > self.pending.capacity() {
            let want = (2 * self.pending.capacity()).clamp(need, MAX_PENDING_LINE);
            self.pending.reserve_exact(want - self.pending.len());
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Writes what is left of an incomplete line, ending it.
    pub fn finish(&mut self, w: &mut dyn Write) {
        if self.pending.is_empty() {
            return;
        }
        let mut text = Vec::new();
        self.line(&[], &mut text);
        text.push(b'\n');
        write_out(w, &text);
    }

    /// Appends the prefix, the pending start of the line and `rest` to `text`.
    fn line(&mut self, rest: &[u8], text: &mut Vec<u8>) {
        text.extend_from_slice(&self.prefix);
        text.append(&mut self.pending);
        text.extend_from_slice(rest);
        if self.pending.capacity() > MAX_PENDING_LINE {
            self.pending = Vec::new();
        }
    }
}

fn write_out(w: &mut dyn Write, text: &[u8]) {
    if !text.is_empty() {
        let _ = w.write_all(text);
        let _ = w.flush();
    }
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
            Sinks::Prefixed { out, .. } => out.push(bytes, &mut std::io::stdout().lock()),
        }
    }

    pub fn stderr(&mut self, bytes: &[u8]) {
        match self {
            Sinks::None => {}
            Sinks::Direct => {
                let _ = std::io::stderr().lock().write_all(bytes);
            }
            Sinks::Prefixed { err, .. } => err.push(bytes, &mut std::io::stderr().lock()),
        }
    }

    /// Writes what is left of incomplete lines.
    pub fn finish(&mut self) {
        if let Sinks::Prefixed { out, err } = self {
            out.finish(&mut std::io::stdout().lock());
            err.finish(&mut std::io::stderr().lock());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_and_partial_lines_wait() {
        let mut p = LinePrefixer::new("a");
        let mut out = Vec::new();
        p.push(b"one\ntw", &mut out);
        assert_eq!(out, b"a | one\n");
        p.push(b"o\n\nthree", &mut out);
        assert_eq!(out, b"a | one\na | two\na | \n");
        p.finish(&mut out);
        assert_eq!(out, b"a | one\na | two\na | \na | three\n");
        p.finish(&mut out);
        assert_eq!(out, b"a | one\na | two\na | \na | three\n");
    }

    /// F4: output without a newline. At df579e2 it all stayed in the
    /// buffer (nothing reached the terminal) and every chunk rescanned the
    /// whole buffer; now a partial line goes out every 64 KiB and the
    /// buffer never holds more.
    #[test]
    fn a_line_without_end_is_written_in_bounded_pieces() {
        let mut p = LinePrefixer::new("app");
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1000];
        let total = 8_000 * chunk.len();
        for _ in 0..8_000 {
            p.push(&chunk, &mut out);
            assert!(p.pending.len() < MAX_PENDING_LINE);
            assert!(p.pending.capacity() <= MAX_PENDING_LINE);
        }
        p.push(b"end\n", &mut out);
        let lines: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), total / MAX_PENDING_LINE + 1);
        for line in &lines[..lines.len() - 1] {
            assert_eq!(line.len(), b"app | ".len() + MAX_PENDING_LINE + 1);
            assert!(line.starts_with(b"app | xxx") && line.ends_with(b"x\n"));
        }
        let payload: usize = lines.iter().map(|l| l.len() - b"app | ".len() - 1).sum();
        assert_eq!(payload, total + 3);
        assert!(lines.last().unwrap().ends_with(b"xend\n"));
    }

    /// Many short lines in one chunk and one line split over many chunks
    /// give the same text as the same bytes in one piece.
    #[test]
    fn chunking_does_not_change_the_text() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| {
                let mut l = vec![b'a' + (i % 26) as u8; (i % 97) as usize];
                l.push(b'\n');
                l
            })
            .collect();
        let mut whole = Vec::new();
        let mut p = LinePrefixer::new("x");
        p.push(&text, &mut whole);
        p.finish(&mut whole);
        for size in [1, 7, 4096] {
            let mut pieces = Vec::new();
            let mut p = LinePrefixer::new("x");
            for c in text.chunks(size) {
                p.push(c, &mut pieces);
            }
            p.finish(&mut pieces);
            assert_eq!(pieces, whole, "chunks of {size}");
        }
        assert_eq!(whole.len(), text.len() + 50_000 * b"x | ".len());
    }
}
