//! Pseudo terminals for TTY processes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use husk_proto::TtySize;

/// A new PTY pair (master, slave), both close-on-exec, sized `size`.
pub fn open(size: Option<TtySize>) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let ws = winsize(size.unwrap_or(TtySize { rows: 24, cols: 80 }));
    // SAFETY: valid out-pointers for the two fds; a null name buffer and
    // termios are allowed; `ws` is a valid winsize.
    let ret = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: a fresh descriptor owned by us.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: as above.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    for fd in [&master, &slave] {
        // SAFETY: F_SETFD on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

fn winsize(size: TtySize) -> libc::winsize {
    libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Sets the terminal size; the kernel sends SIGWINCH to its foreground group.
pub fn resize(master: &OwnedFd, size: TtySize) -> io::Result<()> {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads a valid winsize from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's VEOF character (Ctrl-D unless the app changed it or
/// disabled it, in which case Ctrl-D still goes in as a plain byte).
pub fn veof(master: &impl AsRawFd) -> u8 {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr on an open descriptor with a valid termios pointer.
    if unsafe { libc::tcgetattr(master.as_raw_fd(), &mut t) } < 0 {
        return 4;
    }
    match t.c_cc[libc::VEOF] {
        0 => 4,
        c => c,
    }
}
