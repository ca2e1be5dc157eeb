//! Host side of a session with the agent, over a connected Unix stream.
//!
//! One reader thread routes what the agent sends: responses to the request
//! waiting for them, stdio and exit events to the [`Process`] they belong
//! to. Flow control is enforced here for the host's half: output credit is
//! granted only when the caller has taken the bytes ([`Process::next_event`]),
//! and stdin is sent only within the credit the agent granted, so memory on
//! both sides stays bounded by the window whatever the speed of either end.
//! The agent is not trusted to keep its half: output beyond the credit
//! granted is a protocol error that ends the session ([`crate::inbox`]),
//! and no wait for it is unbounded ([`crate::timeouts`]).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use husk_proto::message::*;
use husk_proto::{Frame, FrameError, FrameReader, FrameWriter};
use husk_proto::{INITIAL_WINDOW, MAX_DATA, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

use crate::inbox::{Inbox, PopError};
use crate::timeouts::{self, HANDSHAKE};

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
    /// The agent did not answer in time (see [`crate::timeouts`]); the
    /// session is over.
    #[error("{0}")]
    NoAnswer(String),
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

/// A reply, and for a started process the queue of its events.
type Answer = Result<(Reply, Option<Arc<Inbox>>), ClientError>;

struct ProcEntry {
    inbox: Arc<Inbox>,
    stdin_credit: u32,
}

#[derive(Default)]
struct State {
    /// Requests waiting for their reply; each channel holds one answer.
    pending: HashMap<u64, SyncSender<Answer>>,
    procs: HashMap<u32, ProcEntry>,
    lost: Option<String>,
}

struct Shared {
    writer: Mutex<FrameWriter<UnixStream>>,
    /// The connection, to shut it down when the session is lost.
    conn: UnixStream,
    state: Mutex<State>,
    credit: Condvar,
    next_id: AtomicU64,
}

/// Whether an I/O error is a socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO`).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A frame error as one line, with its I/O cause.
fn frame_error_text(e: &FrameError) -> String {
    match e {
        FrameError::Io(io) => format!("{e}: {io}"),
        other => other.to_string(),
    }
}

impl Shared {
    /// Writes one frame; a failed write (the agent stopped reading for
    /// [`timeouts::WRITE`], or the connection broke) may have left half a
    /// frame behind, so it ends the session.
    fn send(&self, frame: &Frame) -> Result<(), ClientError> {
        if let Some(why) = &self.state().lost {
            return Err(ClientError::Lost(why.clone()));
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Err(e) = w.write_frame(frame) else {
            return Ok(());
        };
        drop(w);
        let why = match &e {
            FrameError::Io(io) if is_timeout(io) => format!(
                "the agent stopped reading: a write did not complete within {:?}",
                timeouts::WRITE
            ),
            other => format!("cannot write to the agent: {}", frame_error_text(other)),
        };
        self.lose(&why);
        Err(ClientError::Lost(why))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session (the first reason given stays): every waiting
    /// request fails, every process's queue closes after what it holds, the
    /// connection is shut down so the reader thread stops.
    fn lose(&self, why: &str) {
        let mut st = self.state();
        let why = st.lost.get_or_insert_with(|| why.to_owned()).clone();
        for (_, tx) in st.pending.drain() {
            let _ = tx.try_send(Err(ClientError::Lost(why.clone())));
        }
        for (_, entry) in st.procs.drain() {
            entry.inbox.close(&why);
        }
        drop(st);
        self.credit.notify_all();
        let _ = self.conn.shutdown(Shutdown::Both);
    }
}

/// A session with the agent: handshake done, reader thread running.
///
/// Every wait for the agent is bounded ([`crate::timeouts`]): the
/// handshake, each reply, each write. A reply that does not come in time
/// ends the session ([`ClientError::NoAnswer`]); what the processes do
/// (their output, their exit) is waited for without a bound.
pub struct Session {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    /// The protocol version agreed on.
    pub version: u32,
    /// The agent's self-description (name and version).
    pub agent: String,
}

impl Session {
    /// Performs the version handshake on a connected stream (already past
    /// any transport handshake such as the VMM's `CONNECT`), waiting at most
    /// [`HANDSHAKE`] for the agent.
    pub fn start(stream: UnixStream, software: &str) -> Result<Session, ClientError> {
        Session::start_within(stream, software, HANDSHAKE)
    }

    /// [`Session::start`], waiting at most `handshake` for the agent.
    pub(crate) fn start_within(
        stream: UnixStream,
        software: &str,
        handshake: Duration,
    ) -> Result<Session, ClientError> {
        stream.set_read_timeout(Some(handshake))?;
        stream.set_write_timeout(Some(handshake))?;
        let mut writer = FrameWriter::new(stream.try_clone()?);
        let mut reader = FrameReader::new(stream.try_clone()?);
        let no_answer = |e: FrameError| match e {
            FrameError::Io(io) if is_timeout(&io) => ClientError::NoAnswer(format!(
                "the agent did not answer the handshake within {handshake:?}"
            )),
            other => ClientError::Frame(other),
        };
        writer
            .write_frame(&Frame::Control(Message::Hello {
                min_version: MIN_PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
                software: software.to_owned(),
            }))
            .map_err(no_answer)?;
        let (version, agent) = match reader.read_frame().map_err(no_answer)? {
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
        // From here the reader waits as long as the processes run; replies
        // and writes have bounds of their own.
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(Some(timeouts::WRITE))?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            conn: stream,
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
            reader: Some(reader),
            version,
            agent,
        })
    }

    fn call_inner(&self, body: Request) -> Answer {
        let timeout = timeouts::reply_timeout(&body);
        self.call_inner_within(body, timeout)
    }

    /// [`Session::call`], waiting at most `timeout` for the reply.
    #[cfg(test)]
    pub(crate) fn call_within(
        &self,
        body: Request,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        self.call_inner_within(body, timeout)
            .map(|(reply, _)| reply)
    }

    fn call_inner_within(&self, body: Request, timeout: Duration) -> Answer {
        let op = body.op();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
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
        match rx.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                let why = format!("the agent did not answer {op} within {timeout:?}");
                self.shared.lose(&why);
                Err(ClientError::NoAnswer(why))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(ClientError::Lost("the session's reader stopped".into()))
            }
        }
    }

    /// Sends a request and waits for its reply, at most
    /// [`timeouts::reply_timeout`] for it.
    pub fn call(&self, body: Request) -> Result<Reply, ClientError> {
        self.call_inner(body).map(|(reply, _)| reply)
    }

    /// Sends a request that starts a process (`CreateContainer`, `Exec`).
    pub fn start_process(&self, body: Request) -> Result<Process, ClientError> {
        match self.call_inner(body)? {
            (Reply::Started { proc, pid }, Some(inbox)) => Ok(Process {
                proc,
                pid,
                inbox,
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

    /// Why the session ended, if it has.
    pub fn lost(&self) -> Option<String> {
        self.shared.state().lost.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.shared.conn.shutdown(Shutdown::Both);
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
            Err(e) => break frame_error_text(&e),
        };
        if let Err(why) = route(frame, shared) {
            break format!("the agent broke the protocol: {why}");
        }
    };
    shared.lose(&why);
}

/// Hands one frame from the agent to whoever waits for it. `Err` is a
/// protocol violation, which ends the session.
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
            entry.inbox.push_data(proc, stream, &bytes)?;
        }
        Frame::Control(Message::Response { id, result }) => {
            let tx = st
                .pending
                .remove(&id)
                .ok_or_else(|| format!("response to unknown request {id}"))?;
            let answer = match result {
                Outcome::Ok(reply @ Reply::Started { proc, .. }) => {
                    if st.procs.contains_key(&proc) {
                        return Err(format!("process {proc} started twice"));
                    }
                    let inbox = Arc::new(Inbox::default());
                    st.procs.insert(
                        proc,
                        ProcEntry {
                            inbox: inbox.clone(),
                            stdin_credit: INITIAL_WINDOW,
                        },
                    );
                    Ok((reply, Some(inbox)))
                }
                Outcome::Ok(reply) => Ok((reply, None)),
                Outcome::Err(e) => Err(ClientError::Agent(e)),
            };
            let _ = tx.try_send(answer);
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
                entry.inbox.push_exit(status, oom_killed);
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
    inbox: Arc<Inbox>,
    shared: Arc<Shared>,
}

impl Process {
    /// The next event; output is acknowledged (credit granted) as it is
    /// taken. `Err` when the connection is lost before the process exited.
    pub fn next_event(&self) -> Result<ProcEvent, ClientError> {
        self.take(None)
    }

    fn take(&self, timeout: Option<Duration>) -> Result<ProcEvent, ClientError> {
        let event = self.inbox.pop(timeout).map_err(|e| match e {
            PopError::Timeout => ClientError::Timeout,
            PopError::Closed(why) => ClientError::Lost(why),
        })?;
        self.grant(&event);
        Ok(event)
    }

    /// The most its queue of unread output has held, in bytes (records
    /// included): never more than [`crate::inbox::MAX_QUEUED_COST`].
    pub fn peak_queued(&self) -> usize {
        self.inbox.peak_cost()
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
    pub fn next_event_timeout(&self, timeout: Duration) -> Result<ProcEvent, ClientError> {
        self.take(Some(timeout))
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
