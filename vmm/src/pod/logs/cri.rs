//! CRI log records: `TIMESTAMP STREAM TAG CONTENT\n`, one per line of an
//! app's output, the format the kubelet reads from container runtimes
//! (`2026-12-06T17:05:08.123456789Z stdout F hello`). TAG is `F` for a full
//! line (its newline is the record's) or `P` for a part of one that
//! continues in the stream's next record: output without a newline yet, or
//! a line longer than [`MAX_CONTENT`], which is cut in pieces.
//!
//! [`AppLogWriter`] turns the chunks the agent streams into records:
//! every line of a chunk gets the chunk's arrival time, and a partial line
//! is written at once as a `P` record rather than held, so the supervisor
//! keeps nothing per stream between chunks.

use std::io;

use super::rotate::RotatingFile;
use super::time::{self, Nanos};

/// Longest content of one record (docker cuts lines at 16 KiB as well).
pub const MAX_CONTENT: usize = 16 << 10;
/// Records are gathered up to this size before one write to the file.
const FLUSH_AT: usize = 32 << 10;

/// Which of an app's output streams a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: Nanos,
    pub stream: Stream,
    /// `F`: the content ends a line (its newline is not part of it).
    pub full: bool,
    pub content: &'a [u8],
}

/// Parses one record, without its newline. `None`: not a record (a torn
/// last line of a log whose writer died, or a file in another format).
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = time::parse_rfc3339(std::str::from_utf8(parts.next()?).ok()?)?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        full,
        content: parts.next().unwrap_or_default(),
    })
}

/// Appends the records of `chunk` (arrived at `stamp`, formatted) to `out`.
fn encode(out: &mut Vec<u8>, stamp: &str, stream: Stream, chunk: &[u8]) {
    let mut rest = chunk;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|&b| b == b'\n');
        let (content, full, used) = match line_end {
            Some(n) if n <= MAX_CONTENT => (&rest[..n], true, n + 1),
            _ => {
                let n = rest.len().min(MAX_CONTENT);
                (&rest[..n], false, n)
            }
        };
        out.extend_from_slice(stamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.name().as_bytes());
        out.extend_from_slice(if full { b" F " } else { b" P " });
        out.extend_from_slice(content);
        out.push(b'\n');
        rest = &rest[used..];
    }
}

/// Writes an app's output as CRI records into its rotated log.
#[derive(Debug)]
pub struct AppLogWriter {
    file: RotatingFile,
    buf: Vec<u8>,
}

impl AppLogWriter {
    pub fn new(file: RotatingFile) -> AppLogWriter {
        AppLogWriter {
            file,
            buf: Vec::with_capacity(FLUSH_AT + MAX_CONTENT + 64),
        }
    }

    /// Logs `chunk` of `stream`, stamped now.
    pub fn write(&mut self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        self.write_at(time::now(), stream, chunk)
    }

    /// Logs `chunk` of `stream`, stamped `at`. Records are written in
    /// pieces of about [`FLUSH_AT`], each ending on a record, so rotation
    /// never splits one.
    pub fn write_at(&mut self, at: Nanos, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        let stamp = time::format(at);
        for piece in chunk.chunk_by(|a, _| *a != b'\n') {
            // `chunk_by` ends a piece after each newline; gather pieces
            // until the buffer is worth a write.
            encode(&mut self.buf, &stamp, stream, piece);
            if self.buf.len() >= FLUSH_AT {
                self.flush()?;
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.file.write(&self.buf);
        self.buf.clear();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[(Stream, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (s, c) in chunks {
            encode(&mut out, "T", *s, c);
        }
        out
    }

    #[test]
    fn lines_partials_and_long_lines() {
        let out = records(&[
            (Stream::Stdout, b"one\ntwo\npart"),
            (Stream::Stderr, b"err\n"),
            (Stream::Stdout, b"ial\n\n"),
        ]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "T stdout F one\nT stdout F two\nT stdout P part\nT stderr F err\n\
             T stdout F ial\nT stdout F \n"
        );
        let long = vec![b'x'; MAX_CONTENT * 2 + 5];
        let mut with_nl = long.clone();
        with_nl.push(b'\n');
        let out = records(&[(Stream::Stdout, &with_nl)]);
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(b"T stdout P xxx") && lines[0].len() == 11 + MAX_CONTENT);
        assert!(lines[2].starts_with(b"T stdout F xxxxx") && lines[2].len() == 16);
    }

    #[test]
    fn records_parse_back() {
        let mut out = Vec::new();
        encode(&mut out, &time::format(42), Stream::Stderr, b"a b  c\nrest");
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            parse(lines[0]),
            Some(Record {
                time: 42,
                stream: Stream::Stderr,
                full: true,
                content: b"a b  c"
            })
        );
        let r = parse(lines[1]).unwrap();
        assert!(!r.full && r.content == b"rest");
        for bad in [
            &b""[..],
            b"hello world",
            b"2026-12-06T17:05:08Z stdin F x",
            b"2026-12-06T17:05:08Z stdout X x",
            b"2026-12-06T17:05:08Z stdout",
            b"\xff\xfe stdout F x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse(b"2026-12-06T17:05:08Z stdout F").unwrap().content,
            b""
        );
    }

    #[test]
    fn the_writer_rotates_on_record_boundaries() {
        let dir = std::env::temp_dir().join(format!("husk-cri-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("app.log");
        let max = 64 << 10;
        let mut w = AppLogWriter::new(RotatingFile::open(&base, max, 3).unwrap());
        let line = [b'y'; 999];
        let mut chunk = Vec::new();
        for _ in 0..300 {
            chunk.extend_from_slice(&line);
            chunk.push(b'\n');
        }
        for _ in 0..10 {
            w.write_at(7, Stream::Stdout, &chunk).unwrap();
        }
        for n in 0..3 {
            let data = std::fs::read(super::super::rotate::generation(&base, n)).unwrap();
            assert!(data.len() as u64 <= max, "generation {n}: {}", data.len());
            assert!(data.ends_with(b"\n"));
            for l in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let r = parse(l).unwrap();
                assert!(r.full && r.content.len() == 999);
            }
        }
        assert!(!super::super::rotate::generation(&base, 3).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
