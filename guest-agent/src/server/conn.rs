//! One host connection: the version handshake, then the frame loop.
//!
//! The reader thread never blocks on anything but the socket: requests run
//! on their own threads, stdin goes into the process's window-bounded queue,
//! credit is a counter update. A peer that breaks the protocol (bad frame,
//! stdin past its window, data for a process it does not own) is
//! disconnected; its processes are then killed, since nobody could receive
//! their output or exit status any more.

use std::fs::File;
use std::sync::Arc;

use husk_proto::{
    Frame, FrameError, FrameReader, Message, Outcome, Request, Stream, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

use super::{rpc, Agent};
use crate::console;
use crate::outbox::Outbox;

/// The agent's name and version, sent in the handshake.
pub fn software() -> String {
    format!("husk-agent {}", env!("CARGO_PKG_VERSION"))
}

/// Serves one connection until it closes or misbehaves.
pub fn run(agent: Arc<Agent>, conn: u64, stream: File) {
    let write_half = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            console::line(format_args!("connection {conn}: cannot dup socket: {e}"));
            return;
        }
    };
    let outbox = Arc::new(Outbox::new(write_half));
    let mut reader = FrameReader::new(stream);
    if let Err(why) = handshake(&mut reader, &outbox) {
        console::line(format_args!("connection {conn}: handshake failed: {why}"));
        return;
    }
    let why = loop {
        let frame = match reader.read_frame() {
            Ok(f) => f,
            Err(FrameError::Closed) => break None,
            Err(e) => break Some(console::chain(&e)),
        };
        if let Err(why) = dispatch(&agent, conn, &outbox, frame) {
            break Some(why);
        }
    };
    if let Some(why) = why {
        console::line(format_args!("connection {conn} dropped: {why}"));
    }
    outbox.kill();
    agent.supervisor.disconnect(conn);
}

fn handshake(reader: &mut FrameReader<File>, outbox: &Outbox) -> Result<(), String> {
    let (min, max) = match reader.read_frame() {
        Ok(Frame::Control(Message::Hello {
            min_version,
            max_version,
            ..
        })) => (min_version, max_version),
        Ok(other) => return Err(format!("expected hello, got {}", frame_name(&other))),
        Err(e) => return Err(console::chain(&e)),
    };
    let version = max.min(PROTOCOL_VERSION);
    if version < min.max(MIN_PROTOCOL_VERSION) {
        let reason = format!(
            "no common protocol version: host speaks {min}..={max}, agent {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
        );
        outbox.send_msg(Message::Refused {
            reason: reason.clone(),
        });
        return Err(reason);
    }
    if !outbox.send_msg(Message::Welcome {
        version,
        software: software(),
    }) {
        return Err("cannot send welcome".into());
    }
    Ok(())
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Data { .. } => "a data frame",
        Frame::Control(Message::Hello { .. }) => "hello",
        Frame::Control(Message::Request { .. }) => "a request",
        Frame::Control(_) => "another control message",
    }
}

fn dispatch(
    agent: &Arc<Agent>,
    conn: u64,
    outbox: &Arc<Outbox>,
    frame: Frame,
) -> Result<(), String> {
    match frame {
        Frame::Control(Message::Request { id, body }) => {
            let (agent, out) = (agent.clone(), outbox.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("req-{conn}-{id}"))
                .spawn(move || handle_request(&agent, conn, &out, id, body));
            if let Err(e) = spawned {
                outbox.send_msg(Message::Response {
                    id,
                    result: Outcome::Err(rpc::internal(format!("cannot start a thread: {e}"))),
                });
            }
            Ok(())
        }
        Frame::Data {
            proc,
            stream: Stream::Stdin,
            bytes,
        } => {
            // Stdin for a process that already exited is dropped silently:
            // the host may not have seen the exit yet.
            if let Ok(p) = agent.supervisor.get(proc) {
                if p.conn != conn {
                    return Err(format!("stdin for process {proc} of another connection"));
                }
                p.io().push_stdin(bytes).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Frame::Data { stream, .. } => Err(format!("{stream:?} data from the host")),
        Frame::Control(Message::Credit {
            proc,
            stream,
            bytes,
        }) => {
            if let Ok(p) = agent.supervisor.get(proc) {
                if p.conn == conn {
                    p.io().add_credit(stream, bytes);
                }
            }
            Ok(())
        }
        Frame::Control(other) => Err(format!("unexpected {}", frame_name(&Frame::Control(other)))),
    }
}

fn handle_request(agent: &Arc<Agent>, conn: u64, outbox: &Arc<Outbox>, id: u64, body: Request) {
    let shutdown = match &body {
        Request::Shutdown { grace_ms } => Some(std::time::Duration::from_millis(*grace_ms)),
        _ => None,
    };
    let (result, pending) = rpc::handle(agent, conn, outbox, body);
    outbox.send_msg(Message::Response { id, result });
    // Only now may the process's output and exit reach the host.
    if let Some(pending) = pending {
        pending.begin();
    }
    if let Some(grace) = shutdown {
        agent.shut_down(grace);
    }
}
