//! Shared test harness: a real `husk-agent serve --unix` process and a
//! session to it through the real client and the real protocol.
#![allow(dead_code)]

pub mod containers;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use husk_agent_client::{ClientError, Process, Session};
use husk_proto::{ExitStatus, ProcessSpec, Request};

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Skips the calling test (returns from it) when not running as root.
#[macro_export]
macro_rules! need_root {
    () => {
        if !common::is_root() {
            eprintln!("skipped: needs root (namespaces, subreaper, chown)");
            return;
        }
    };
}

/// A unique scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("husk-agent-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A [`scratch`] directory removed when dropped, also when a test fails
/// half-way (declare it before the [`Server`], so the agent and its
/// containers are gone first).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        Scratch(scratch(name))
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent as a server process on a Unix socket.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        let dir = scratch("srv");
        let socket = dir.join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_husk-agent"))
            .args(["serve", "--unix"])
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("start husk-agent serve");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "agent did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
        Server { child, socket, dir }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn session(&self) -> Session {
        // The socket file appears at bind(), slightly before listen().
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("connect: {e}"),
            }
        };
        Session::start(stream, "husk-agent tests").expect("handshake")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn args(a: &[&str]) -> Option<Vec<String>> {
    Some(a.iter().map(|s| s.to_string()).collect())
}

/// Starts `argv` in the agent's own namespaces.
pub fn exec(session: &Session, spec: ProcessSpec) -> Result<Process, ClientError> {
    session.start_process(Request::Exec {
        container: None,
        process: Box::new(spec),
    })
}

pub fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: args(&["/bin/sh", "-c", script]),
        ..Default::default()
    }
}

/// Runs to completion; (stdout, stderr, status).
pub fn run(session: &Session, spec: ProcessSpec) -> (Vec<u8>, Vec<u8>, ExitStatus) {
    let p = exec(session, spec).expect("start");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (status, _) = p.wait_with_output(&mut out, &mut err).expect("wait");
    (out, err, status)
}
