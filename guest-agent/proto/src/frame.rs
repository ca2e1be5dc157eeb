//! Length-prefixed frames: encoding, and bounded decoding of untrusted bytes.

use std::io::{self, Read, Write};

use crate::message::{Message, Stream};
use crate::{MAX_DATA, MAX_FRAME};

const KIND_CONTROL: u8 = 1;
const KIND_DATA: u8 = 2;

/// Size of a data frame's fixed header inside the body (proc + stream).
const DATA_HEADER: usize = 5;

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A control message.
    Control(Message),
    /// Stdio bytes for stream `stream` of process `proc`; empty = end of stream.
    Data {
        proc: u32,
        stream: Stream,
        bytes: Vec<u8>,
    },
}

/// A frame that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error on the connection")]
    Io(#[from] io::Error),
    #[error("frame length {0} is outside 1..={MAX_FRAME}")]
    BadLength(usize),
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    #[error("data frame too short ({0} bytes)")]
    ShortData(usize),
    #[error("data payload of {0} bytes exceeds {MAX_DATA}")]
    DataTooLarge(usize),
    #[error("unknown stream number {0}")]
    BadStream(u8),
    #[error("malformed control message")]
    Json(#[source] serde_json::Error),
}

/// Decodes one frame body (`kind` + rest), as read after the length prefix.
/// Pure and bounded: the fuzz target drives this directly.
pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    let (&kind, rest) = body.split_first().ok_or(FrameError::BadLength(0))?;
    match kind {
        KIND_CONTROL => serde_json::from_slice(rest)
            .map(Frame::Control)
            .map_err(FrameError::Json),
        KIND_DATA => {
            if rest.len() < DATA_HEADER {
                return Err(FrameError::ShortData(rest.len()));
            }
            let payload = &rest[DATA_HEADER..];
            if payload.len() > MAX_DATA {
                return Err(FrameError::DataTooLarge(payload.len()));
            }
            let proc = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let stream = Stream::from_u8(rest[4]).ok_or(FrameError::BadStream(rest[4]))?;
            Ok(Frame::Data {
                proc,
                stream,
                bytes: payload.to_vec(),
            })
        }
        other => Err(FrameError::BadKind(other)),
    }
}

/// Encodes `frame` with its length prefix into `out` (cleared first).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    match frame {
        Frame::Control(msg) => {
            out.push(KIND_CONTROL);
            serde_json::to_writer(&mut *out, msg).map_err(FrameError::Json)?;
        }
        Frame::Data {
            proc,
            stream,
            bytes,
        } => {
            if bytes.len() > MAX_DATA {
                return Err(FrameError::DataTooLarge(bytes.len()));
            }
            out.push(KIND_DATA);
            out.extend_from_slice(&proc.to_le_bytes());
            out.push(*stream as u8);
            out.extend_from_slice(bytes);
        }
    }
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads frames from a byte stream, never buffering more than [`MAX_FRAME`].
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// Reads the next frame; [`FrameError::Closed`] on a clean end of stream
    /// at a frame boundary.
    pub fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut len = [0u8; 4];
        match self.inner.read_exact(&mut len[..1]) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
            r => r?,
        }
        self.inner.read_exact(&mut len[1..])?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(FrameError::BadLength(len));
        }
        self.buf.resize(len, 0);
        self.inner.read_exact(&mut self.buf)?;
        let frame = decode_body(&self.buf);
        // Do not keep a large buffer around after a one-off big frame.
        if self.buf.capacity() > 2 * (MAX_DATA + 64) {
            self.buf = Vec::new();
        }
        frame
    }
}

/// Writes frames to a byte stream, one `write_all` per frame.
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::new(),
        }
    }

    pub fn write_frame(&mut self, frame: &Frame) -> Result<(), FrameError> {
        encode(frame, &mut self.buf)?;
        self.inner.write_all(&self.buf)?;
        self.inner.flush()?;
        Ok(())
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;

    fn roundtrip(frame: Frame) {
        let mut wire = Vec::new();
        FrameWriter::new(&mut wire).write_frame(&frame).unwrap();
        let mut r = FrameReader::new(&wire[..]);
        assert_eq!(r.read_frame().unwrap(), frame);
        assert!(matches!(r.read_frame(), Err(FrameError::Closed)));
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(Frame::Control(Message::Hello {
            min_version: 1,
            max_version: 1,
            software: "test".into(),
        }));
        roundtrip(Frame::Control(Message::Request {
            id: 7,
            body: Request::Signal {
                proc: 3,
                signal: 15,
            },
        }));
        roundtrip(Frame::Data {
            proc: 9,
            stream: Stream::Stderr,
            bytes: vec![0, 1, 2, 255],
        });
        roundtrip(Frame::Data {
            proc: 1,
            stream: Stream::Stdin,
            bytes: vec![],
        });
        roundtrip(Frame::Data {
            proc: 1,
            stream: Stream::Stdout,
            bytes: vec![7; MAX_DATA],
        });
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let too_long = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(
            FrameReader::new(&too_long[..]).read_frame(),
            Err(FrameError::BadLength(_))
        ));
        assert!(matches!(
            FrameReader::new(&[0u8, 0, 0, 0][..]).read_frame(),
            Err(FrameError::BadLength(0))
        ));
        // Truncated body: an I/O error, not a hang or a panic.
        assert!(matches!(
            FrameReader::new(&[10u8, 0, 0, 0, 1, b'{'][..]).read_frame(),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(decode_body(&[9]), Err(FrameError::BadKind(9))));
        assert!(matches!(
            decode_body(&[2, 1, 0]),
            Err(FrameError::ShortData(2))
        ));
        assert!(matches!(
            decode_body(&[2, 1, 0, 0, 0, 7]),
            Err(FrameError::BadStream(7))
        ));
        assert!(matches!(
            decode_body(b"\x01{\"type\":\"nope\"}"),
            Err(FrameError::Json(_))
        ));
        let mut big = vec![2, 0, 0, 0, 0, 1];
        big.resize(6 + MAX_DATA + 1, 0);
        assert!(matches!(
            decode_body(&big),
            Err(FrameError::DataTooLarge(_))
        ));
        // Deep nesting hits serde_json's recursion limit, not the stack.
        let mut deep = vec![1u8];
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(matches!(decode_body(&deep), Err(FrameError::Json(_))));
    }

    #[test]
    fn encode_refuses_oversized_data() {
        let mut out = Vec::new();
        let frame = Frame::Data {
            proc: 1,
            stream: Stream::Stdout,
            bytes: vec![0; MAX_DATA + 1],
        };
        assert!(matches!(
            encode(&frame, &mut out),
            Err(FrameError::DataTooLarge(_))
        ));
    }
}
