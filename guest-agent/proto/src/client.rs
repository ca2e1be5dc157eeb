//! Host side of a session with the agent, over a connected Unix stream.
//!
//! One reader thread routes what the agent sends: responses to the request
//! waiting for them, stdio and exit events to the [`Process`] they belong
//! to. Flow control is enforced here for the host's half: output credit is
//! granted only when the caller has taken the bytes ([`Process::next_event`]),
//! and stdin is sent only within the credit the agent granted, so memory on
//! both sides stays bounded by the window whatever the speed of either end.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::frame::{Frame, FrameError, FrameReader, FrameWriter};
use crate::message::*;
use crate::{INITIAL_WINDOW, MAX_DATA, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// A failed exchange with the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot talk to the agent")]
    Frame(#[from] FrameError),
    #[error("i/o error on the agent connection")]
    Io(#[from] io::Error),
    #[error("the agent refused the session: {0}")]
    Refused(String),
    #[error("the agent broke the protocol: {0}")]
    Protocol(String),
    #[error("the connection to the agent is gone: {0}")]
    Lost(String),
    #[error("timed out waiting for the agent")]
    Timeout,
    #[error("the agent failed the request ({:?}): {}", .0.kind, .0.message)]
    Agent(ErrorReply),
}

/// Something that happened to a process, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// End of its stdout or stderr.
    Eof(Stream),
    /// It ended; nothing follows.
    Exited {
        status: ExitStatus,
        oom_killed: bool,
    },
}

type Pending = Sender<Result<(Reply, Option<Receiver<ProcEvent>>), ClientError>>;

struct ProcEntry {
    events: Sender<ProcEvent>,
    stdin_credit: u32,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    procs: HashMap<u32, ProcEntry>,
    lost: Option<String>,
}

struct Shared {
    writer: Mutex<FrameWriter<UnixStream>>,
    state: Mutex<State>,
    credit: Condvar,
    next_id: AtomicU64,
}

impl Shared {
    fn send(&self, frame: &Frame) -> Result<(), ClientError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_frame(frame).map_err(ClientError::from)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session with the agent: handshake done, reader thread running.
pub struct Session {
    shared: Arc<Shared>,
    stream: UnixStream,
    reader: Option<JoinHandle<()>>,
    /// The protocol version agreed on.
    pub version: u32,
    /// The agent's self-description (name and version).
    pub agent: String,
}

impl Session {
    /// Performs the version handshake on a connected stream (already past
    /// any transport handshake such as the VMM's `CONNECT`).
    pub fn start(stream: UnixStream, software: &str) -> Result<Session, ClientError> {
        let mut writer = FrameWriter::new(stream.try_clone()?);
        let mut reader = FrameReader::new(stream.try_clone()?);
        writer.write_frame(&Frame::Control(Message::Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            software: software.to_owned(),
        }))?;
        let (version, agent) = match reader.read_frame()? {
            Frame::Control(Message::Welcome { version, software })
                if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) =>
            {
                (version, software)
            }
            Frame::Control(Message::Refused { reason }) => {
                return Err(ClientError::Refused(reason))
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )))
            }
        };
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            state: Mutex::new(State::default()),
            credit: Condvar::new(),
            next_id: AtomicU64::new(1),
        });
        let reader_shared = shared.clone();
        let reader = std::thread::Builder::new()
            .name("agent-session".into())
            .spawn(move || read_loop(reader, &reader_shared))?;
        Ok(Session {
            shared,
            stream,
            reader: Some(reader),
            version,
            agent,
        })
    }

    fn call_inner(
        &self,
        body: Request,
    ) -> Result<(Reply, Option<Receiver<ProcEvent>>), ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        {
            let mut st = self.shared.state();
            if let Some(why) = &st.lost {
                return Err(ClientError::Lost(why.clone()));
            }
            st.pending.insert(id, tx);
        }
        if let Err(e) = self
            .shared
            .send(&Frame::Control(Message::Request { id, body }))
        {
            self.shared.state().pending.remove(&id);
            return Err(e);
        }
        rx.recv()
            .map_err(|_| ClientError::Lost("reader stopped".into()))?
    }

    /// Sends a request and waits for its reply.
    pub fn call(&self, body: Request) -> Result<Reply, ClientError> {
        self.call_inner(body).map(|(reply, _)| reply)
    }

    /// Sends a request that starts a process (`CreateContainer`, `Exec`).
    pub fn start_process(&self, body: Request) -> Result<Process, ClientError> {
        match self.call_inner(body)? {
            (Reply::Started { proc, pid }, Some(events)) => Ok(Process {
                proc,
                pid,
                events,
                shared: self.shared.clone(),
            }),
            (other, _) => Err(ClientError::Protocol(format!(
                "expected a started process, got {other:?}"
            ))),
        }
    }

    pub fn ping(&self) -> Result<Reply, ClientError> {
        self.call(Request::Ping)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn read_loop(mut reader: FrameReader<UnixStream>, shared: &Shared) {
    let why = loop {
        let frame = match reader.read_frame() {
            Ok(frame) => frame,
            Err(FrameError::Closed) => break "the agent closed the connection".to_owned(),
            Err(e) => break format!("{e}"),
        };
        if let Err(why) = route(frame, shared) {
            break why;
        }
    };
    let mut st = shared.state();
    st.lost = Some(why.clone());
    for (_, tx) in st.pending.drain() {
        let _ = tx.send(Err(ClientError::Lost(why.clone())));
    }
    // Dropping the senders ends every process's event stream.
    st.procs.clear();
    shared.credit.notify_all();
}

fn route(frame: Frame, shared: &Shared) -> Result<(), String> {
    let mut st = shared.state();
    match frame {
        Frame::Data {
            proc,
            stream,
            bytes,
        } => {
            let entry = st
                .procs
                .get(&proc)
                .ok_or_else(|| format!("data for unknown process {proc}"))?;
            let event = match (stream, bytes.is_empty()) {
                (Stream::Stdin, _) => return Err("stdin data from the agent".into()),
                (s, true) => ProcEvent::Eof(s),
                (Stream::Stdout, false) => ProcEvent::Stdout(bytes),
                (Stream::Stderr, false) => ProcEvent::Stderr(bytes),
            };
            let _ = entry.events.send(event);
        }
        Frame::Control(Message::Response { id, result }) => {
            let tx = st
                .pending
                .remove(&id)
                .ok_or_else(|| format!("response to unknown request {id}"))?;
            let answer = match result {
                Outcome::Ok(reply @ Reply::Started { proc, .. }) => {
                    let (etx, erx) = channel();
                    st.procs.insert(
                        proc,
                        ProcEntry {
                            events: etx,
                            stdin_credit: INITIAL_WINDOW,
                        },
                    );
                    Ok((reply, Some(erx)))
                }
                Outcome::Ok(reply) => Ok((reply, None)),
                Outcome::Err(e) => Err(ClientError::Agent(e)),
            };
            let _ = tx.send(answer);
        }
        Frame::Control(Message::Event {
            event:
                Event::Exited {
                    proc,
                    status,
                    oom_killed,
                },
        }) => {
            if let Some(entry) = st.procs.remove(&proc) {
                let _ = entry.events.send(ProcEvent::Exited { status, oom_killed });
            }
            shared.credit.notify_all();
        }
        Frame::Control(Message::Credit {
            proc,
            stream: Stream::Stdin,
            bytes,
        }) => {
            if let Some(entry) = st.procs.get_mut(&proc) {
                entry.stdin_credit = entry.stdin_credit.saturating_add(bytes);
                shared.credit.notify_all();
            }
        }
        Frame::Control(other) => return Err(format!("unexpected message {other:?}")),
    }
    Ok(())
}

/// A process started through the session.
pub struct Process {
    /// The agent's handle for it.
    pub proc: u32,
    /// Its pid inside the guest (in the agent's PID namespace).
    pub pid: i32,
    events: Receiver<ProcEvent>,
    shared: Arc<Shared>,
}

impl Process {
    /// The next event; output is acknowledged (credit granted) as it is
    /// taken. `Err` when the connection is lost before the process exited.
    pub fn next_event(&self) -> Result<ProcEvent, ClientError> {
        let event = self.events.recv().map_err(|_| {
            ClientError::Lost(
                self.shared
                    .state()
                    .lost
                    .clone()
                    .unwrap_or_else(|| "session closed".into()),
            )
        })?;
        self.grant(&event);
        Ok(event)
    }

    /// Returns credit for output the caller has taken.
    fn grant(&self, event: &ProcEvent) {
        let (stream, n) = match event {
            ProcEvent::Stdout(b) => (Stream::Stdout, b.len()),
            ProcEvent::Stderr(b) => (Stream::Stderr, b.len()),
            _ => return,
        };
        // A lost connection shows up on the next event; ignore it here.
        let _ = self.shared.send(&Frame::Control(Message::Credit {
            proc: self.proc,
            stream,
            bytes: n as u32,
        }));
    }

    /// A handle that writes its stdin, usable from another thread while
    /// this one reads output.
    pub fn stdin(&self) -> StdinWriter {
        StdinWriter {
            proc: self.proc,
            shared: self.shared.clone(),
        }
    }

    /// Sends `data` to its stdin, waiting for credit as needed.
    pub fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        self.stdin().write(data)
    }

    /// Closes its stdin (it reads end of file).
    pub fn close_stdin(&self) -> Result<(), ClientError> {
        self.stdin().close()
    }

    /// Like [`Process::next_event`], giving up after `timeout`.
    pub fn next_event_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<ProcEvent, ClientError> {
        use std::sync::mpsc::RecvTimeoutError;
        match self.events.recv_timeout(timeout) {
            Ok(event) => {
                self.grant(&event);
                Ok(event)
            }
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Lost("session closed".into())),
        }
    }

    /// Writes all output to `stdout` / `stderr` until it exits; returns how.
    pub fn wait_with_output(
        &self,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<(ExitStatus, bool), ClientError> {
        loop {
            match self.next_event()? {
                ProcEvent::Stdout(b) => stdout.write_all(&b)?,
                ProcEvent::Stderr(b) => stderr.write_all(&b)?,
                ProcEvent::Eof(_) => {}
                ProcEvent::Exited { status, oom_killed } => return Ok((status, oom_killed)),
            }
        }
    }
}

/// Writes one process's stdin (see [`Process::stdin`]).
#[derive(Clone)]
pub struct StdinWriter {
    proc: u32,
    shared: Arc<Shared>,
}

impl StdinWriter {
    /// Sends `data` to its stdin, waiting for credit as needed.
    pub fn write(&self, mut data: &[u8]) -> Result<(), ClientError> {
        while !data.is_empty() {
            let n = {
                let mut st = self.shared.state();
                loop {
                    if let Some(why) = &st.lost {
                        return Err(ClientError::Lost(why.clone()));
                    }
                    let Some(entry) = st.procs.get_mut(&self.proc) else {
                        return Err(ClientError::Lost("the process has exited".into()));
                    };
                    if entry.stdin_credit > 0 {
                        let n = data.len().min(MAX_DATA).min(entry.stdin_credit as usize);
                        entry.stdin_credit -= n as u32;
                        break n;
                    }
                    st = self
                        .shared
                        .credit
                        .wait(st)
                        .unwrap_or_else(|e| e.into_inner());
                }
            };
            self.shared.send(&Frame::Data {
                proc: self.proc,
                stream: Stream::Stdin,
                bytes: data[..n].to_vec(),
            })?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Closes its stdin (it reads end of file).
    pub fn close(&self) -> Result<(), ClientError> {
        self.shared.send(&Frame::Data {
            proc: self.proc,
            stream: Stream::Stdin,
            bytes: Vec::new(),
        })
    }
}
