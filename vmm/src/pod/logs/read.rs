//! Reading an app's log for `husk logs`: every rotated generation, oldest
//! first, then the live file; records filtered by time (`--since`,
//! `--until`), the last N lines (`--tail`), each stream to its own writer
//! (stdout records to the terminal's stdout, stderr records to its stderr,
//! as `docker logs` does), with the line's time in front (`--timestamps`).
//! `-f` keeps reading the live file and, when it is rotated, finds its
//! successor by the inode it holds, so nothing is skipped or read twice.
//!
//! `--tail` reads the files twice (count, then print) rather than keeping
//! lines in memory: the cost is bounded by the log's caps, the memory by
//! one record.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::cri::{self, Stream};
use super::rotate::generation;
use super::time::{self, Nanos};
use super::MAX_MAX_FILE;

/// What to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query {
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
    /// At most this many lines, the last ones.
    pub tail: Option<u64>,
    pub timestamps: bool,
}

impl Query {
    fn admits(&self, t: Nanos) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// How often `-f` looks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The existing generations of `base`, oldest first, opened together so a
/// rotation while they are read moves no file out from under the reader.
fn open_all(base: &Path) -> io::Result<Vec<File>> {
    let mut files = Vec::new();
    for n in (0..=MAX_MAX_FILE).rev() {
        match File::open(generation(base, n)) {
            Ok(f) => files.push(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(files)
}

/// Prints records to two writers, keeping track of where lines start.
struct Printer<'a> {
    query: Query,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// Per stream (stdout, stderr): whether its next record starts a line.
    at_start: [bool; 2],
    /// Per stream: whether the line being continued is printed.
    printing: [bool; 2],
    /// Line starts still to skip (`--tail`).
    skip: u64,
    /// The stream written last, flushed when the other one is written.
    last: Option<Stream>,
    /// Counting only (the first pass of `--tail`).
    counting: bool,
    /// Lines seen that the time filter admits.
    lines: u64,
}

impl<'a> Printer<'a> {
    fn new(query: Query, out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Printer {
            query,
            out,
            err,
            at_start: [true; 2],
            printing: [false; 2],
            skip: 0,
            last: None,
            counting: false,
            lines: 0,
        }
    }

    /// Handles one raw line of a log file (without its newline); lines that
    /// are not records (a torn write, another format) are skipped.
    fn line(&mut self, raw: &[u8]) -> io::Result<()> {
        let Some(r) = cri::parse(raw) else {
            return Ok(());
        };
        let i = r.stream as usize;
        let starts = self.at_start[i];
        self.at_start[i] = r.full;
        if starts {
            let admitted = self.query.admits(r.time);
            if admitted {
                self.lines += 1;
            }
            self.printing[i] = admitted && !self.counting && self.skip == 0;
            if admitted && self.skip > 0 {
                self.skip -= 1;
            }
        }
        if !self.printing[i] {
            return Ok(());
        }
        if self.last.is_some_and(|l| l != r.stream) {
            self.flush()?;
        }
        self.last = Some(r.stream);
        let w: &mut dyn Write = match r.stream {
            Stream::Stdout => &mut *self.out,
            Stream::Stderr => &mut *self.err,
        };
        if self.query.timestamps && starts {
            w.write_all(time::format(r.time).as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(r.content)?;
        if r.full {
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }
}

/// Reads one file's records; a last line without its newline is kept in
/// `pending` (its writer may be in the middle of it).
struct FileReader {
    reader: BufReader<File>,
    pending: Vec<u8>,
}

impl FileReader {
    fn new(file: File) -> Self {
        FileReader {
            reader: BufReader::with_capacity(64 << 10, file),
            pending: Vec::new(),
        }
    }

    /// Feeds every complete line from here to the end of the file to `p`.
    fn drain(&mut self, p: &mut Printer<'_>) -> io::Result<()> {
        loop {
            let n = self.reader.read_until(b'\n', &mut self.pending)?;
            if n == 0 || self.pending.last() != Some(&b'\n') {
                return Ok(());
            }
            let line = std::mem::take(&mut self.pending);
            p.line(&line[..line.len() - 1])?;
        }
    }

    fn inode(&self) -> Option<(u64, u64)> {
        let m = self.reader.get_ref().metadata().ok()?;
        Some((m.dev(), m.ino()))
    }
}

/// Prints the log whose live file is `base`. With `follow`, keeps printing
/// what is written (across rotations) for as long as `follow` says the
/// writer may still write (and `--until` is not past), then once more what
/// came last.
pub fn print(
    base: &Path,
    query: Query,
    follow: Option<&dyn Fn() -> bool>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let mut p = Printer::new(query, out, err);
    if let Some(n) = query.tail {
        p.counting = true;
        for f in open_all(base)? {
            FileReader::new(f).drain(&mut p)?;
        }
        p.skip = p.lines.saturating_sub(n);
        p.counting = false;
        p.at_start = [true; 2];
    }
    let mut files = open_all(base)?;
    let Some(last) = files.pop() else {
        if follow.is_none() {
            return Ok(());
        }
        // Not written yet: wait for the live file to appear.
        return follow_from(base, None, &mut p, follow);
    };
    for f in files {
        FileReader::new(f).drain(&mut p)?;
    }
    let mut current = FileReader::new(last);
    current.drain(&mut p)?;
    p.flush()?;
    if follow.is_none() {
        return Ok(());
    }
    follow_from(base, Some(current), &mut p, follow)
}

/// `-f`: reads `current` as it grows; when `base` names another file,
/// finishes `current` and moves to its successor.
fn follow_from(
    base: &Path,
    mut current: Option<FileReader>,
    p: &mut Printer<'_>,
    follow: Option<&dyn Fn() -> bool>,
) -> io::Result<()> {
    let active = |f: Option<&dyn Fn() -> bool>| f.is_some_and(|f| f());
    loop {
        // Past `--until` nothing more can be printed: end as if the pod had.
        let running = active(follow) && p.query.until.is_none_or(|u| time::now() <= u);
        if let Some(c) = current.as_mut() {
            c.drain(p)?;
        }
        let live = std::fs::metadata(base).ok().map(|m| (m.dev(), m.ino()));
        let held = current.as_ref().and_then(FileReader::inode);
        if live.is_some() && live != held {
            // Rotated (or first made): what was written to the old file
            // before the rename has been read above; go on with the next.
            current = Some(FileReader::new(successor(base, held)?));
            continue;
        }
        p.flush()?;
        if !running {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// The file written after the one with inode `held`: the generation below
/// it.
fn successor(base: &Path, held: Option<(u64, u64)>) -> io::Result<File> {
    let mut oldest = None;
    for n in (1..=MAX_MAX_FILE).rev() {
        let Ok(f) = File::open(generation(base, n)) else {
            continue;
        };
        let m = f.metadata()?;
        if Some((m.dev(), m.ino())) == held {
            return File::open(generation(base, n - 1));
        }
        oldest.get_or_insert(f);
    }
    // Not found: the reader had no file yet, or fell so far behind that
    // its file was rotated away. Either way the oldest left comes next.
    oldest.map_or_else(|| File::open(base), Ok)
}

/// Whether the log at `base` is made of CRI records (its first line is
/// one): how a log is told from an older husk's raw one when the pod's
/// config does not say.
pub fn has_records(base: &Path) -> bool {
    let Ok(f) = File::open(base) else {
        return false;
    };
    let mut first = Vec::new();
    let _ = BufReader::new(f.take(cri::MAX_CONTENT as u64 + 64)).read_until(b'\n', &mut first);
    first.last() == Some(&b'\n') && cri::parse(&first[..first.len() - 1]).is_some()
}

/// Prints a log written by a husk from before CRI records (raw output, both
/// streams mixed, no times) to `out`, following as [`print`] does.
pub fn print_raw(
    path: &Path,
    follow: Option<&dyn Fn() -> bool>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            out.flush()?;
            continue;
        }
        if !follow.is_some_and(|f| f()) {
            // One more read: output written just before the pod ended.
            let pos = file.stream_position()?;
            if file.metadata().map(|m| m.len()).unwrap_or(pos) > pos {
                continue;
            }
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::super::cri::AppLogWriter;
    use super::super::rotate::RotatingFile;
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("husk-read-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn query(base: &Path, q: Query) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print(base, q, None, &mut out, &mut err).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    /// A log of lines `o<i>` on stdout and `e<i>` on stderr for i < n, one
    /// second apart, rotated every few lines.
    fn sample(name: &str, n: u64) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = scratch(name);
        let base = dir.join("app.log");
        let mut w = AppLogWriter::new(RotatingFile::open(&base, 200, 5).unwrap());
        for i in 0..n {
            let t = (1_000 + i) * 1_000_000_000;
            w.write_at(t, Stream::Stdout, format!("o{i}\n").as_bytes())
                .unwrap();
            w.write_at(t, Stream::Stderr, format!("e{i}\n").as_bytes())
                .unwrap();
        }
        (dir, base)
    }

    #[test]
    fn streams_are_separate_and_every_generation_is_read() {
        let (dir, base) = sample("streams", 8);
        assert!(generation(&base, 2).exists(), "the sample rotates");
        let (out, err) = query(&base, Query::default());
        assert_eq!(out, "o0\no1\no2\no3\no4\no5\no6\no7\n");
        assert_eq!(err, "e0\ne1\ne2\ne3\ne4\ne5\ne6\ne7\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail_since_until_and_timestamps() {
        let (dir, base) = sample("filters", 8);
        let s = 1_000_000_000;
        let (out, err) = query(
            &base,
            Query {
                tail: Some(3),
                ..Query::default()
            },
        );
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("o7\n", "e6\ne7\n"),
            "the last 3 lines of both"
        );
        let (out, _) = query(
            &base,
            Query {
                tail: Some(0),
                ..Query::default()
            },
        );
        assert_eq!(out, "");
        let q = Query {
            since: Some(1_005 * s),
            until: Some(1_006 * s),
            ..Query::default()
        };
        assert_eq!(query(&base, q), ("o5\no6\n".into(), "e5\ne6\n".into()));
        let q = Query {
            since: Some(1_002 * s),
            tail: Some(2),
            timestamps: true,
            ..Query::default()
        };
        let (out, err) = query(&base, q);
        assert_eq!(out, "1970-01-01T00:16:47.000000000Z o7\n");
        assert_eq!(err, "1970-01-01T00:16:47.000000000Z e7\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partial_lines_are_joined_and_torn_lines_skipped() {
        let dir = scratch("partial");
        let base = dir.join("app.log");
        let mut w = AppLogWriter::new(RotatingFile::open(&base, 1 << 20, 2).unwrap());
        w.write_at(5, Stream::Stdout, b"pro").unwrap();
        w.write_at(6, Stream::Stderr, b"warn\n").unwrap();
        w.write_at(7, Stream::Stdout, b"mpt> ok\n").unwrap();
        drop(w);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&base)
            .unwrap();
        f.write_all(b"not a record\n1970-01-01T00:00:00Z stdout F torn")
            .unwrap();
        let q = Query {
            timestamps: true,
            ..Query::default()
        };
        let (out, err) = query(&base, q);
        assert_eq!(out, "1970-01-01T00:00:00.000000005Z prompt> ok\n");
        assert_eq!(err, "1970-01-01T00:00:00.000000006Z warn\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn follow_reads_across_rotations() {
        let dir = scratch("follow");
        let base = dir.join("app.log");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (base, done) = (base.clone(), done.clone());
            std::thread::spawn(move || {
                let mut w = AppLogWriter::new(RotatingFile::open(&base, 300, 8).unwrap());
                for i in 0..200u64 {
                    w.write_at(i, Stream::Stdout, format!("line {i}\n").as_bytes())
                        .unwrap();
                    if i % 5 == 0 {
                        std::thread::sleep(Duration::from_millis(40));
                    }
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let running = || !done.load(std::sync::atomic::Ordering::SeqCst);
        print(&base, Query::default(), Some(&running), &mut out, &mut err).unwrap();
        writer.join().unwrap();
        let want: String = (0..200).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn follow_ends_once_until_is_past() {
        let (dir, base) = sample("until", 2);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let q = Query {
            until: Some(1_000 * 1_000_000_000),
            ..Query::default()
        };
        print(&base, q, Some(&|| true), &mut out, &mut err).unwrap();
        assert_eq!((out, err), (b"o0\n".to_vec(), b"e0\n".to_vec()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn raw_logs_of_older_pods_print_as_they_are() {
        let dir = scratch("raw");
        let path = dir.join("app.log");
        std::fs::write(&path, b"mixed\nout and err\n").unwrap();
        let mut out = Vec::new();
        print_raw(&path, None, &mut out).unwrap();
        assert_eq!(out, b"mixed\nout and err\n");
        assert!(!has_records(&path), "raw output is told from records");
        let (dir2, base) = sample("records", 1);
        assert!(has_records(&base));
        assert!(!has_records(&dir2.join("missing.log")));
        std::fs::remove_dir_all(&dir2).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
