//! A fake agent, and the VMM's vsock answer in front of it, for tests.
//!
//! The host must hold up against a guest that breaks the protocol: floods
//! beyond its credit, repeats ends of stream, never answers. The real agent
//! cannot be made to misbehave, so tests play the guest's end of the
//! connection with [`FakeAgent`], which speaks raw frames and does whatever
//! the test scripts; the host side under test stays the real one (this
//! crate's [`Session`](crate::Session), or the `husk` binary).
//!
//! Built for this crate's own tests and, behind the `test-utils` feature,
//! for other crates' integration tests; never into a product binary.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use husk_proto::message::*;
use husk_proto::{Frame, FrameReader, FrameWriter};

/// The agent's end of a connection, driven step by step by a test.
pub struct FakeAgent {
    r: FrameReader<UnixStream>,
    w: FrameWriter<UnixStream>,
    sock: UnixStream,
}

impl FakeAgent {
    /// The agent on `sock`, past any transport handshake.
    pub fn new(sock: UnixStream) -> FakeAgent {
        FakeAgent {
            r: FrameReader::new(sock.try_clone().unwrap()),
            w: FrameWriter::new(sock.try_clone().unwrap()),
            sock,
        }
    }

    /// The next frame from the host; `None` once the connection is gone.
    pub fn read(&mut self) -> Option<Frame> {
        self.r.read_frame().ok()
    }

    /// Sends `frame`; whether the write went through.
    pub fn send(&mut self, frame: Frame) -> bool {
        self.w.write_frame(&frame).is_ok()
    }

    /// Takes the host's `Hello` and welcomes it.
    pub fn handshake(&mut self) {
        let hello = self.r.read_frame().unwrap();
        assert!(matches!(hello, Frame::Control(Message::Hello { .. })));
        self.send(Frame::Control(Message::Welcome {
            version: 1,
            software: "fake".into(),
        }));
    }

    /// The next request's id and body, skipping credit; `None` once the
    /// connection is gone.
    pub fn request(&mut self) -> Option<(u64, Request)> {
        loop {
            match self.r.read_frame().ok()? {
                Frame::Control(Message::Request { id, body }) => return Some((id, body)),
                Frame::Control(Message::Credit { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Answers request `id` with `reply`.
    pub fn reply(&mut self, id: u64, reply: Reply) {
        self.send(Frame::Control(Message::Response {
            id,
            result: Outcome::Ok(reply),
        }));
    }

    /// Answers the next request (an exec) with process 1.
    pub fn start_proc(&mut self) {
        let (id, _) = self.request().unwrap();
        self.reply(id, Reply::Started { proc: 1, pid: 100 });
    }

    /// Sends `bytes` of process 1's `stream` (empty: its end), credit or
    /// not; whether the write went through.
    pub fn data(&mut self, stream: Stream, bytes: &[u8]) -> bool {
        self.send(Frame::Data {
            proc: 1,
            stream,
            bytes: bytes.to_vec(),
        })
    }

    /// Reports that process 1 exited with `code`.
    pub fn exit(&mut self, code: i32) {
        self.send(Frame::Control(Message::Event {
            event: Event::Exited {
                proc: 1,
                status: ExitStatus::Code(code),
                oom_killed: false,
            },
        }));
    }
}

/// Like a real agent, the fake keeps the connection open after its script
/// until the host closes it (or 1 s passes without a frame): closing at once
/// would make the host's next credit grant fail with EPIPE and end the
/// session before it has read what is still in the socket.
impl Drop for FakeAgent {
    fn drop(&mut self) {
        let _ = self.sock.set_read_timeout(Some(Duration::from_secs(1)));
        while self.r.read_frame().is_ok() {}
    }
}

/// Plays the VMM's vsock mux for one connection on `listener`: takes the
/// host's `CONNECT <port>\n` line and answers `answer`. Returns the stream
/// (the guest connection if the answer was `OK <n>\n`) and the line read.
pub fn accept_vsock(listener: &UnixListener, answer: &str) -> (UnixStream, String) {
    let (stream, _) = listener.accept().unwrap();
    let mut line = Vec::new();
    // Byte by byte: what follows the line belongs to the agent.
    BufReader::with_capacity(1, &stream)
        .read_until(b'\n', &mut line)
        .unwrap();
    (&stream).write_all(answer.as_bytes()).unwrap();
    (stream, String::from_utf8(line).unwrap())
}
