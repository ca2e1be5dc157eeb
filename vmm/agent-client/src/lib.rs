//! Host side of the agent protocol: reaching a guest's agent and driving
//! a session with it, for the `husk` CLI, a pod's supervisor and the
//! agent's own tests.
//!
//! Two ways to reach an agent:
//! - [`Endpoint::Vsock`]: a pod's VMM exposes the guest's vsock as a Unix
//!   socket on the host (Firecracker's convention). The client connects,
//!   writes `CONNECT <port>\n`, and the VMM answers `OK <host port>\n` once
//!   the guest accepted on `<port>`; from then on the stream is the guest
//!   connection. The agent listens on port 1024
//!   ([`husk_proto::DEFAULT_VSOCK_PORT`]).
//! - [`Endpoint::Unix`]: the agent itself listens on a Unix socket
//!   (`husk-agent serve --unix PATH`, used by host tests).
//!
//! After the transport, [`Session`] ([`session`]) does the version
//! handshake and multiplexes requests, stdio and events; [`run_attached`]
//! wires a process to the terminal for `husk run`. The guest is not
//! trusted: what it sends for a process is queued within the flow-control
//! window or ends the session ([`inbox`]), and every wait for it is bounded
//! ([`timeouts`]).
//!
//! Why a crate of its own: `husk-proto` is the contract both sides link
//! (wire types and framing only), the guest agent must not link host
//! logic, and the VMM must not be needed to build or test the client (the
//! agent's tests drive the real agent through it).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use husk_proto::ExitStatus;
pub use husk_proto::DEFAULT_VSOCK_PORT;

pub mod inbox;
pub mod session;
#[cfg(test)]
mod session_tests;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod timeouts;

pub use session::{ClientError, ProcEvent, Process, Session, StdinWriter};

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The VMM's vsock Unix socket and the guest port to connect to.
    Vsock { uds: PathBuf, port: u32 },
    /// An agent listening on a Unix socket directly.
    Unix(PathBuf),
}

/// A failure to reach or talk to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    #[error("cannot connect to {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the VMM refused the vsock connection to port {port}: {answer:?}")]
    VsockRefused { port: u32, answer: String },
    #[error(
        "the VMM did not answer the vsock connection to port {port} within {:?}",
        timeouts::HANDSHAKE
    )]
    VsockNoAnswer { port: u32 },
    #[error("no agent answered within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Session(#[from] ClientError),
    #[error("i/o error while attached to the process")]
    Io(#[from] io::Error),
}

/// Longest `OK <n>\n` answer accepted from the VMM.
const MAX_ANSWER: u64 = 64;

/// Opens the transport to `endpoint` (no protocol handshake yet).
pub fn open(endpoint: &Endpoint) -> Result<UnixStream, AgentClientError> {
    let path = match endpoint {
        Endpoint::Vsock { uds, .. } | Endpoint::Unix(uds) => uds,
    };
    let stream = UnixStream::connect(path).map_err(|source| AgentClientError::Connect {
        path: path.clone(),
        source,
    })?;
    if let Endpoint::Vsock { port, .. } = endpoint {
        vsock_connect(&stream, *port)?;
    }
    Ok(stream)
}

/// Firecracker's host-initiated vsock handshake on an open stream, waiting
/// at most [`timeouts::HANDSHAKE`] for the answer.
fn vsock_connect(stream: &UnixStream, port: u32) -> Result<(), AgentClientError> {
    let timeout = Some(timeouts::HANDSHAKE);
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let no_answer = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            AgentClientError::VsockNoAnswer { port }
        }
        _ => AgentClientError::Io(e),
    };
    (&*stream)
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(no_answer)?;
    // Byte by byte: anything after the newline already belongs to the guest.
    let mut answer = Vec::new();
    let mut reader = BufReader::with_capacity(1, stream.take(MAX_ANSWER));
    reader.read_until(b'\n', &mut answer).map_err(no_answer)?;
    let text = String::from_utf8_lossy(&answer).trim_end().to_owned();
    let ok = text
        .strip_prefix("OK ")
        .is_some_and(|n| n.parse::<u32>().is_ok());
    if !ok || !answer.ends_with(b"\n") {
        return Err(AgentClientError::VsockRefused { port, answer: text });
    }
    Ok(())
}

/// Connects and performs the protocol handshake, retrying until `timeout`
/// while the guest is still booting (nothing listening yet).
pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Session, AgentClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = open(endpoint).and_then(|s| {
            Session::start(s, concat!("husk ", env!("CARGO_PKG_VERSION"))).map_err(Into::into)
        });
        match attempt {
            Ok(session) => return Ok(session),
            // A refused agent, a protocol violation or an agent that
            // accepted and then said nothing will not improve.
            Err(e @ AgentClientError::Session(ClientError::Refused(_))) => return Err(e),
            Err(e @ AgentClientError::Session(ClientError::Protocol(_))) => return Err(e),
            Err(e @ AgentClientError::Session(ClientError::NoAnswer(_))) => return Err(e),
            Err(e) if Instant::now() >= deadline => {
                return Err(match e {
                    AgentClientError::Connect { .. } => e,
                    _ => AgentClientError::Timeout(timeout),
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Copies `input` to a process's stdin on a thread of its own until end
/// of file (or a read error), then closes the process's stdin; stops early
/// if the process's stdin is gone. The agent's flow control bounds what
/// is in flight.
pub fn spawn_stdin_copy(
    mut input: Box<dyn Read + Send>,
    writer: StdinWriter,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer.write(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = writer.close();
        })?;
    Ok(())
}

/// Attaches a started process to local stdio until it exits: copies
/// `stdin` to it (if given) on a thread, its output to `stdout`/`stderr`.
/// Returns its status and whether it was OOM-killed.
pub fn run_attached(
    process: &Process,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(ExitStatus, bool), AgentClientError> {
    if let Some(input) = stdin {
        spawn_stdin_copy(input, process.stdin())?;
    }
    loop {
        match process.next_event()? {
            ProcEvent::Stdout(b) => {
                stdout.write_all(&b)?;
                stdout.flush()?;
            }
            ProcEvent::Stderr(b) => {
                stderr.write_all(&b)?;
                stderr.flush()?;
            }
            ProcEvent::Eof(_) => {}
            ProcEvent::Exited { status, oom_killed } => return Ok((status, oom_killed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accept_vsock, FakeAgent};
    use husk_proto::{Reply, Request};
    use std::os::unix::net::UnixListener;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("husk-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// A stand-in for the VMM's vsock mux in front of a minimal agent: it
    /// answers the CONNECT line with `answer`, then (if it said OK) answers
    /// one ping. Returns the line it read.
    fn fake_vmm(path: PathBuf, answer: &'static str) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (stream, line) = accept_vsock(&listener, answer);
            if answer.starts_with("OK") {
                let mut agent = FakeAgent::new(stream);
                agent.handshake();
                if let Some((id, Request::Ping)) = agent.request() {
                    let pong = Reply::Pong {
                        version: 1,
                        software: "fake".into(),
                    };
                    agent.reply(id, pong);
                }
            }
            line
        })
    }

    #[test]
    fn vsock_handshake_then_protocol() {
        let path = scratch("ok");
        let vmm = fake_vmm(path.clone(), "OK 1073741824\n");
        let ep = Endpoint::Vsock {
            uds: path.clone(),
            port: 1024,
        };
        let s = connect(&ep, Duration::from_secs(5)).unwrap();
        assert_eq!(s.agent, "fake");
        assert!(matches!(s.ping().unwrap(), Reply::Pong { .. }));
        drop(s);
        assert_eq!(vmm.join().unwrap(), "CONNECT 1024\n");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn vsock_refusal_is_reported() {
        let path = scratch("refused");
        let vmm = fake_vmm(path.clone(), "NO\n");
        let stream = UnixStream::connect(&path).unwrap();
        let err = vsock_connect(&stream, 5).unwrap_err();
        assert!(
            matches!(err, AgentClientError::VsockRefused { port: 5, .. }),
            "{err}"
        );
        vmm.join().unwrap();
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn missing_socket_fails_after_the_timeout() {
        let ep = Endpoint::Unix(scratch("missing"));
        let t0 = Instant::now();
        let err = connect(&ep, Duration::from_millis(200)).err().unwrap();
        assert!(matches!(err, AgentClientError::Connect { .. }), "{err}");
        assert!(t0.elapsed() >= Duration::from_millis(200));
    }
}
