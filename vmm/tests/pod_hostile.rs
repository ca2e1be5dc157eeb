//! The real `husk` binary against a hostile guest, without a VM: a pod
//! directory whose `vsock.sock` is served by this test, playing the VMM's
//! vsock mux and the agent behind it (`husk_agent_client::testing`'s fake
//! agent, a test double speaking raw frames).
//! Security review F2 (an agent flooding beyond its credit), F10 (an agent
//! that never answers), F8 (a guest's text reaching the terminal).

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use husk_agent_client::testing::{accept_vsock, FakeAgent};
use husk_proto::{Stream, MAX_DATA};
use husk_vmm::pod::state::{PodDir, PodState};

#[path = "common/pod_dir.rs"]
mod pod_dir;

/// A fresh `$HUSK_ROOT`.
fn root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("husk-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pod that looks running, supervised by this test process.
fn running_pod(root: &Path) -> PodDir {
    pod_dir::make(root, None, PodState::Running)
}

/// Serves one connection on the pod's vsock socket: the VMM's `CONNECT`
/// answer, then `agent` on the stream.
fn serve(
    pod: &PodDir,
    agent: impl FnOnce(FakeAgent) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(pod.vsock_path()).unwrap();
    std::thread::spawn(move || {
        let (stream, line) = accept_vsock(&listener, "OK 1073741824\n");
        assert_eq!(line, "CONNECT 1024\n");
        agent(FakeAgent::new(stream));
    })
}

fn husk_exec(root: &Path, pod: &PodDir) -> Child {
    Command::new(env!("CARGO_BIN_EXE_husk"))
        .args(["exec", &pod.name, "true"])
        .env("HUSK_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` (killing it if it is still there after `limit`, so a
/// regression fails instead of hanging); its exit code, its stderr and its
/// peak resident memory in KiB.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String, i64) {
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + limit;
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if Instant::now() >= deadline {
        let _ = child.kill();
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers; reaps it (the
    // Child is not waited on again).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, err.join().unwrap(), usage.ru_maxrss)
}

/// Whether our child `pid` is still running (it is not reaped here).
fn running(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with WNOWAIT only inspects our own child; `info` is a
    // valid siginfo_t for it to fill in.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: `info` was filled in by waitid (si_pid stays 0 while the
    // child runs).
    r == 0 && unsafe { info.si_pid() } == 0
}

fn one_line(stderr: &str) -> &str {
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim_end()
}

/// F2: the agent starts the process and floods its stdout, ignoring
/// credit, while `husk exec`'s stdout is read slowly. At df579e2 husk
/// queued all of it (its memory grew by what was sent); now it ends with a
/// protocol error, exit status 125, and its peak memory stays small.
#[test]
fn exec_against_a_flooding_agent() {
    const FLOOD: usize = 256 << 20;
    let root = root("flood");
    let pod = running_pod(&root);
    let agent = serve(&pod, |mut f| {
        f.handshake();
        f.start_proc();
        let chunk = vec![b'x'; MAX_DATA];
        let mut sent = 0;
        while sent < FLOOD && f.data(Stream::Stdout, &chunk) {
            sent += MAX_DATA;
        }
        eprintln!("flood: the agent sent {} KiB", sent >> 10);
    });
    let mut child = husk_exec(&root, &pod);
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // Slowly at first (the flood gets far ahead), then as fast as it
        // comes, so that a husk that queues everything still ends.
        let mut buf = vec![0u8; 4096];
        let mut total = 0usize;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
            if total < 1 << 20 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let (code, stderr, max_rss_kib) = finish(child, Duration::from_secs(300));
    let delivered = reader.join().unwrap();
    agent.join().unwrap();
    eprintln!(
        "flood: husk exec printed {delivered} bytes, peak RSS {} MiB, said: {}",
        max_rss_kib >> 10,
        stderr.trim_end()
    );
    let line = one_line(&stderr);
    assert_eq!(code, Some(125), "{line}");
    assert!(
        line.contains("broke the protocol") && line.contains("beyond the credit"),
        "{line}"
    );
    assert!(max_rss_kib < 64 << 10, "peak RSS {max_rss_kib} KiB");
    assert!(delivered <= 2 << 20, "{delivered}");
    let _ = std::fs::remove_dir_all(&root);
}

/// F10: an agent that accepts the connection and never answers. `husk
/// exec` gives up after the handshake bound with one line and 125; at
/// df579e2 it waited forever.
#[test]
fn exec_against_a_silent_agent() {
    let root = root("silent");
    let pod = running_pod(&root);
    let agent = serve(&pod, |mut f| {
        let _ = f.read();
        // Silent until husk hangs up.
        let _ = f.read();
    });
    let child = husk_exec(&root, &pod);
    let (code, stderr, _) = finish(child, Duration::from_secs(120));
    agent.join().unwrap();
    let line = one_line(&stderr);
    assert_eq!(code, Some(125), "{line}");
    assert!(
        line.contains("did not answer the handshake within 10s"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// F10: SIGTERM (or Ctrl-C) while `husk exec` waits for a silent agent
/// ends it at once with 128+N. At df579e2 the signal was queued for a
/// forwarder that started only once the process ran: it was ignored.
#[test]
fn exec_ends_on_a_signal_before_its_process_runs() {
    let root = root("signal");
    let pod = running_pod(&root);
    let (hello_tx, hello_rx) = std::sync::mpsc::channel();
    let agent = serve(&pod, move |mut f| {
        let _ = f.read();
        hello_tx.send(()).unwrap();
        let _ = f.read();
    });
    let child = husk_exec(&root, &pod);
    hello_rx.recv().unwrap();
    // SAFETY: kill() of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (code, stderr, _) = finish(child, Duration::from_secs(120));
    agent.join().unwrap();
    assert_eq!(code, Some(128 + libc::SIGTERM), "{stderr}");
    let _ = std::fs::remove_dir_all(&root);
}

/// F8: a pod's failure reason quoting a guest (here with a window-title
/// escape, a bell and a carriage return) is shown escaped by `husk ps`
/// and `husk gc`.
#[test]
fn ps_and_gc_escape_what_a_guest_said() {
    let root = root("escape");
    let pod = running_pod(&root);
    let mut status = pod.read_status().unwrap();
    status.state = PodState::Failed;
    status.reason = Some("lost app app: \x1b]0;pwned\x07\rhusk: fine\u{9b}2J".into());
    pod.write_status(&status).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_husk"))
            .args(args)
            .env("HUSK_ROOT", &root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for text in [run(&["ps", "-a"]), run(&["gc"])] {
        let controls: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && (c.is_control()))
            .collect();
        assert!(controls.is_empty(), "{controls:?} in {text:?}");
        assert!(
            text.contains("\\x1b]0;pwned\\x07\\x0dhusk: fine\\u{9b}2J"),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
