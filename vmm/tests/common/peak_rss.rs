//! Running a command and measuring its peak resident memory together with
//! the descendants it waited for (`wait4`'s `ru_maxrss` covers reaped
//! children, so `husk` and its `husk-pull` helper count as one; it also
//! counts what the test process holds when it spawns them). Shared by
//! the hostile-registry and trust tests through `#[path]`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` (stdin and stdout null, stderr captured); returns (exit
/// status, stderr, peak RSS in KiB). Killed and a panic past `limit`. The
/// child is reaped by `wait4` (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn run(cmd: &mut Command, limit: Duration) -> (i32, String, i64) {
    // The child's exec records the peak RSS of the memory it was spawned
    // from (ours, with vfork) into its own: reset our peak to what we hold
    // now, so that a test that once held more does not count against it.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let (status, rss) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, writing into the two locals.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break (status, usage.ru_maxrss);
        }
        if start.elapsed() > limit {
            // SAFETY: signals our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{cmd:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.unwrap(), &mut err).unwrap();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, err, rss)
}
