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

/// Where a TTY process's terminal comes from.
#[derive(Debug, Default)]
pub enum PtySource {
    /// A new pair from the agent's own devpts (processes in the guest).
    #[default]
    Own,
    /// A pair the caller opened (an exec: from the container's devpts, so
    /// the process finds its terminal under the container's /dev/pts).
    Given { master: OwnedFd, slave: OwnedFd },
    /// The child makes the pair itself (a container init, inside the
    /// container's devpts) and the master is attached to the process
    /// later ([`super::Pending::attach_tty`]); the child starts with
    /// /dev/null as stdio.
    InChild,
}

/// A new pair from the devpts instance of `master`, an open `ptmx` (its
/// `pts/ptmx` node): unlocked, the slave opened through the master
/// (`TIOCGPTPEER`, no path lookup), sized `size`.
pub fn pair_from_ptmx(master: OwnedFd, size: Option<TtySize>) -> io::Result<(OwnedFd, OwnedFd)> {
    let meta = std::fs::File::from(master.try_clone()?).metadata()?;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !meta.file_type().is_char_device() || meta.rdev() != libc::makedev(5, 2) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a pseudo-terminal multiplexer (ptmx)",
        ));
    }
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as an integer; returns a new fd or -1.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by us.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    resize(&master, size.unwrap_or(TtySize { rows: 24, cols: 80 }))?;
    Ok((master, slave))
}

/// Opens `path`, a `ptmx` node, for [`pair_from_ptmx`].
pub fn open_ptmx(dir: &OwnedFd, path: &std::path::Path) -> io::Result<OwnedFd> {
    crate::rooted::openat2(
        dir,
        path,
        libc::O_RDWR | libc::O_NOCTTY,
        0,
        crate::rooted::IN_ROOT,
    )
}
