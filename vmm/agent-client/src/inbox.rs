//! What the agent sent for one process, queued until the host takes it,
//! with the host's half of output flow control enforced.
//!
//! Why a queue of our own: the session's reader thread also routes replies
//! and every other process's output, so it must never wait for a slow
//! consumer (a paused terminal, a log on a slow disk); it hands frames here
//! and moves on. Why it stays bounded: the agent may have at most
//! [`INITIAL_WINDOW`] bytes of each output stream unacknowledged, and the
//! host acknowledges (grants credit) only when the consumer takes bytes out
//! of this queue, so an agent that keeps the rule never has more than the
//! window per stream queued here. An agent that sends beyond it is broken
//! or hostile (security review F2: before this check a guest could grow the
//! host at vsock speed): [`Inbox::push_data`] refuses the frame and the
//! session ends with a protocol error. So do a second end of stream, data
//! after it, and stdin data from the agent — each would otherwise queue a
//! record without bytes, which the window does not bound.
//!
//! Besides bytes the queue holds one record per run of same-stream output
//! (frames of one stream that arrive back to back coalesce) and charges
//! [`RECORD_COST`] for each. Runs split only where the agent switches
//! between stdout and stderr, so an agent alternating one-byte frames could
//! make a record per byte; past [`MAX_RECORDS`] queued records new output
//! joins the last queued run of its stream instead, giving up the exact
//! stdout/stderr interleaving in that pathological backlog only (the bytes
//! of each stream stay in order). Memory per process is therefore at most
//! [`MAX_QUEUED_COST`]: two windows of bytes plus the records.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use husk_proto::{ExitStatus, Stream};
use husk_proto::{INITIAL_WINDOW, MAX_DATA};

use crate::session::ProcEvent;

/// Bytes charged for each queued record: its size in memory.
pub const RECORD_COST: usize = std::mem::size_of::<Record>();

/// Queued records past which output no longer starts a new run.
pub const MAX_RECORDS: usize = 1024;

/// The most a process's queue can cost: a window per output stream, plus
/// the records (runs past [`MAX_RECORDS`]: one per stream, at most two end
/// of stream records and one exit).
pub const MAX_QUEUED_COST: usize = 2 * INITIAL_WINDOW as usize + (MAX_RECORDS + 5) * RECORD_COST;

/// One queued event; a run's bytes are in the stream's byte queue.
#[derive(Debug, Clone, Copy)]
enum Record {
    Run {
        stream: Stream,
        len: u32,
    },
    Eof(Stream),
    Exited {
        status: ExitStatus,
        oom_killed: bool,
    },
}

/// Why [`Inbox::pop`] returned nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum PopError {
    /// Nothing came within the time given.
    Timeout,
    /// The session ended (the reason), or the process's exit was taken.
    Closed(String),
}

#[derive(Default)]
struct State {
    records: VecDeque<Record>,
    /// Queued bytes of stdout (0) and stderr (1).
    bytes: [VecDeque<u8>; 2],
    eof: [bool; 2],
    exited: bool,
    /// The session ended: why.
    closed: Option<String>,
    /// The most this queue has cost (bytes + records) so far.
    peak_cost: usize,
}

impl State {
    fn cost(&self) -> usize {
        self.bytes[0].len() + self.bytes[1].len() + self.records.len() * RECORD_COST
    }
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stderr => 1,
        _ => 0,
    }
}

/// The queue of one process (see the module doc).
#[derive(Default)]
pub struct Inbox {
    state: Mutex<State>,
    ready: Condvar,
}

impl Inbox {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a data frame for process `proc`: bytes, or (empty) the end of
    /// `stream`. `Err` is the protocol violation that ends the session.
    pub fn push_data(&self, proc: u32, stream: Stream, bytes: &[u8]) -> Result<(), String> {
        if stream == Stream::Stdin {
            return Err(format!("stdin data for process {proc} from the agent"));
        }
        let mut st = self.state();
        let s = slot(stream);
        if st.eof[s] {
            return Err(format!(
                "{} data for process {proc} after its end of stream",
                stream.name()
            ));
        }
        if st.exited {
            return Err(format!("data for process {proc} after its exit"));
        }
        if bytes.is_empty() {
            st.eof[s] = true;
            st.records.push_back(Record::Eof(stream));
        } else {
            let queued = st.bytes[s].len();
            if queued + bytes.len() > INITIAL_WINDOW as usize {
                return Err(format!(
                    "process {proc} sent {} bytes of {} beyond the credit granted \
                     ({queued} unacknowledged, window {INITIAL_WINDOW})",
                    bytes.len(),
                    stream.name()
                ));
            }
            st.bytes[s].extend(bytes);
            let n = bytes.len() as u32;
            // Below the cap only the last record may grow (order kept);
            // at the cap, the last run of this stream, wherever it is.
            let target = if st.records.len() >= MAX_RECORDS {
                st.records.iter_mut().rev().find_map(|r| run_of(r, stream))
            } else {
                st.records.back_mut().and_then(|r| run_of(r, stream))
            };
            match target {
                Some(len) => *len += n,
                None => st.records.push_back(Record::Run { stream, len: n }),
            }
        }
        st.peak_cost = st.peak_cost.max(st.cost());
        drop(st);
        self.ready.notify_all();
        Ok(())
    }

    /// Queues the process's exit (nothing follows it).
    pub fn push_exit(&self, status: ExitStatus, oom_killed: bool) {
        let mut st = self.state();
        st.exited = true;
        st.records.push_back(Record::Exited { status, oom_killed });
        st.peak_cost = st.peak_cost.max(st.cost());
        drop(st);
        self.ready.notify_all();
    }

    /// The session ended: what is queued can still be taken, then `pop`
    /// reports `why`.
    pub fn close(&self, why: &str) {
        let mut st = self.state();
        if st.closed.is_none() {
            st.closed = Some(why.to_owned());
        }
        drop(st);
        self.ready.notify_all();
    }

    /// Takes the next event, waiting up to `timeout` (forever if `None`).
    /// A run longer than [`MAX_DATA`] comes out in pieces of that size.
    pub fn pop(&self, timeout: Option<Duration>) -> Result<ProcEvent, PopError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.state();
        loop {
            if let Some(event) = take(&mut st) {
                return Ok(event);
            }
            if let Some(why) = &st.closed {
                return Err(PopError::Closed(why.clone()));
            }
            if st.exited {
                return Err(PopError::Closed("the process has exited".into()));
            }
            st = match deadline {
                None => self.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(PopError::Timeout);
                    }
                    self.ready
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The most this queue has cost so far, in bytes (for tests and
    /// diagnostics).
    pub fn peak_cost(&self) -> usize {
        self.state().peak_cost
    }
}

/// The length of `record` if it is a run of `stream`.
fn run_of(record: &mut Record, stream: Stream) -> Option<&mut u32> {
    match record {
        Record::Run { stream: s, len } if *s == stream => Some(len),
        _ => None,
    }
}

/// The front event, if any.
fn take(st: &mut State) -> Option<ProcEvent> {
    let record = st.records.front_mut()?;
    let event = match record {
        Record::Run { stream, len } => {
            let stream = *stream;
            let n = (*len as usize).min(MAX_DATA);
            *len -= n as u32;
            let done = *len == 0;
            let bytes: Vec<u8> = st.bytes[slot(stream)].drain(..n).collect();
            if done {
                st.records.pop_front();
            }
            return Some(match stream {
                Stream::Stderr => ProcEvent::Stderr(bytes),
                _ => ProcEvent::Stdout(bytes),
            });
        }
        Record::Eof(stream) => ProcEvent::Eof(*stream),
        Record::Exited { status, oom_killed } => ProcEvent::Exited {
            status: *status,
            oom_killed: *oom_killed,
        },
    };
    st.records.pop_front();
    Some(event)
}
