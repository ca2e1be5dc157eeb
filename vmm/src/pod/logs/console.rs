//! The guest console's way to `console.log`: the VMM writes what the
//! guest sends to its serial port into a pipe, and a thread of the pod's
//! supervisor copies the pipe into the rotated `console.log`, through a
//! token bucket.
//!
//! Why here and not in the VMM: the jailed VMM has an empty root and cannot
//! rename or create files, so rotation must happen outside it; and a VMM
//! that holds no console buffer keeps its memory small. The VMM's end of
//! the pipe is non-blocking: when the supervisor falls behind by a full
//! pipe (64 KiB), the UART loses bytes as one with nothing attached would,
//! rather than stalling a vCPU. A guest printing in a tight loop costs the
//! host its port-I/O exits (the VMM's cgroup bounds their CPU), one read
//! per pipe-full here, and at most [`ConsoleLimit::rate`] bytes per second
//! of disk, [`CONSOLE_MAX_SIZE`] × [`CONSOLE_FILES`] in all. What the
//! bucket refuses is counted and shown in the log as
//! `[husk: N bytes of console output dropped]` once output is let through
//! again (or the console closes).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use super::rotate::RotatingFile;

/// Size of `console.log` before it is rotated.
pub const CONSOLE_MAX_SIZE: u64 = 1 << 20;
/// `console.log` and one rotated file.
pub const CONSOLE_FILES: u32 = 2;
/// Default sustained console rate, bytes per second: a quiet boot writes a
/// few hundred bytes, a verbose one or a kernel oops 10–30 KB, which the
/// burst takes whole.
pub const DEFAULT_CONSOLE_RATE: u64 = 32 << 10;
/// How many seconds of the rate the bucket holds (its burst).
pub const BURST_SECONDS: u64 = 8;

/// A token bucket in bytes.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleLimit {
    /// Bytes per second.
    pub rate: u64,
}

/// Refills at `rate` bytes per second up to `rate × BURST_SECONDS`.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    capacity: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        let capacity = rate.saturating_mul(BURST_SECONDS).max(1);
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// How many of `want` bytes may pass at `now`; they are taken.
    fn take(&mut self, want: u64, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.last);
        let fresh = (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64;
        if fresh > 0 {
            self.tokens = self.tokens.saturating_add(fresh).min(self.capacity);
            self.last = now;
        }
        let n = want.min(self.tokens);
        self.tokens -= n;
        n
    }

    /// Returns tokens taken but not used.
    fn give_back(&mut self, n: u64) {
        self.tokens = self.tokens.saturating_add(n).min(self.capacity);
    }
}

/// Copies console output into a rotated log through a [`Bucket`].
#[derive(Debug)]
pub struct ConsoleLog {
    file: RotatingFile,
    bucket: Bucket,
    dropped: u64,
}

impl ConsoleLog {
    /// Opens `path` for the console (truncating an older pod run's: the
    /// console log is the current boot's, as before rotation existed).
    pub fn create(path: &Path, limit: ConsoleLimit) -> io::Result<ConsoleLog> {
        for n in 0..=CONSOLE_FILES {
            match std::fs::remove_file(super::rotate::generation(path, n)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(ConsoleLog {
            file: RotatingFile::open(path, CONSOLE_MAX_SIZE, CONSOLE_FILES)?,
            bucket: Bucket::new(limit.rate, Instant::now()),
            dropped: 0,
        })
    }

    /// Logs what of `data` the bucket lets through at `now`. After a drop,
    /// output resumes only once the bucket holds the marker and a byte more:
    /// the marker is charged like output, so many small drops cannot write
    /// more than the rate between them.
    pub fn write_at(&mut self, data: &[u8], now: Instant) -> io::Result<()> {
        if self.dropped > 0 {
            let marker = self.marker();
            let need = marker.len() as u64 + 1;
            let got = self.bucket.take(need, now);
            if got < need {
                self.bucket.give_back(got);
                self.dropped += data.len() as u64;
                return Ok(());
            }
            self.bucket.give_back(1);
            self.dropped = 0;
            self.file.write(marker.as_bytes())?;
        }
        let n = self.bucket.take(data.len() as u64, now) as usize;
        if n > 0 {
            self.file.write(&data[..n])?;
        }
        self.dropped += (data.len() - n) as u64;
        Ok(())
    }

    fn marker(&self) -> String {
        format!(
            "\n[husk: {} bytes of console output dropped]\n",
            self.dropped
        )
    }

    /// Writes the marker for what was dropped, if anything was (at the end,
    /// whatever the bucket holds: one line).
    pub fn flush_dropped(&mut self) -> io::Result<()> {
        if self.dropped > 0 {
            let marker = self.marker();
            self.dropped = 0;
            self.file.write(marker.as_bytes())?;
        }
        Ok(())
    }

    /// Copies `pipe` until every writer has closed it (the VMM exited).
    /// Write failures (a full disk) lose output, never the pod.
    pub fn pump(mut self, mut pipe: File) {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = self.write_at(&buf[..n], Instant::now()) {
                        log::warn!("console.log: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("console pipe: {e}");
                    break;
                }
            }
        }
        let _ = self.flush_dropped();
    }
}

/// A pod's console before its VMM is forked: the log and the pipe's read
/// end, for a copier thread that may start only after the fork.
#[derive(Debug)]
pub struct PodConsole {
    log: ConsoleLog,
    read: File,
}

impl PodConsole {
    /// Makes the console log at `path` and the pipe; returns the VMM's
    /// (non-blocking) end with it.
    pub fn open(
        path: &Path,
        limit: ConsoleLimit,
    ) -> io::Result<(PodConsole, std::os::fd::OwnedFd)> {
        let log = ConsoleLog::create(path, limit)?;
        let (read, write) = pipe()?;
        Ok((PodConsole { log, read }, write))
    }

    /// Starts the copier; the receiver hears once it has written
    /// everything (every writer closed the pipe).
    pub fn start(self) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            self.log.pump(self.read);
            let _ = tx.send(());
        });
        rx
    }
}

/// A pipe for the console: the read end for [`ConsoleLog::pump`], the
/// write end (non-blocking, see the module doc) for the VMM.
fn pipe() -> io::Result<(File, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given,
    // which has room for both.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and owned by nobody else.
    let read = unsafe { File::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    // SAFETY: fcntl on a descriptor this function owns; no memory involved.
    if unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, t0);
        assert_eq!(b.take(10_000, t0), 800, "the burst");
        assert_eq!(b.take(1, t0), 0);
        assert_eq!(b.take(1000, t0 + Duration::from_millis(500)), 50);
        assert_eq!(b.take(1000, t0 + Duration::from_secs(100)), 800, "capped");
    }

    #[test]
    fn drops_are_counted_and_marked_and_the_file_is_capped() {
        let dir = std::env::temp_dir().join(format!("husk-console-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        std::fs::write(super::super::rotate::generation(&path, 1), "old boot").unwrap();
        let mut c = ConsoleLog::create(&path, ConsoleLimit { rate: 10 }).unwrap();
        assert!(!super::super::rotate::generation(&path, 1).exists());
        let t0 = Instant::now();
        c.write_at(&[b'a'; 100], t0).unwrap();
        c.write_at(b"more", t0).unwrap();
        c.write_at(b"late\n", t0 + Duration::from_secs(1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "a".repeat(80),
            "the marker waits for room in the bucket"
        );
        // 10 bytes a second: the marker (44 bytes) and a byte more fit after 5 s.
        c.write_at(b"later\n", t0 + Duration::from_secs(6)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let marker = "\n[husk: 29 bytes of console output dropped]\n";
        assert_eq!(text, format!("{}{marker}later\n", "a".repeat(80)));
        // A flood: the files stay within their caps.
        let mut c = ConsoleLog::create(&path, ConsoleLimit { rate: 1 << 30 }).unwrap();
        let chunk = vec![b'z'; 16 << 10];
        for i in 0..400 {
            c.write_at(&chunk, t0 + Duration::from_millis(i)).unwrap();
        }
        for n in 0..CONSOLE_FILES {
            let len = std::fs::metadata(super::super::rotate::generation(&path, n))
                .unwrap()
                .len();
            assert!(len <= CONSOLE_MAX_SIZE, "{len}");
        }
        assert!(!super::super::rotate::generation(&path, CONSOLE_FILES).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_byte_at_a_time_flood_is_cut_to_the_burst_and_marked() {
        // As the UART writes: one byte per write, into the non-blocking end.
        let dir = std::env::temp_dir().join(format!("husk-console-uart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let (console, write) = PodConsole::open(&path, ConsoleLimit { rate: 256 }).unwrap();
        let done = console.start();
        let mut w = File::from(write);
        let line =
            b"husk-agent: connection 2: handshake failed: frame length 544501614 is outside\n";
        let (mut sent, mut lost) = (0u64, 0u64);
        for _ in 0..300 {
            for b in line {
                match std::io::Write::write(&mut w, &[*b]) {
                    Ok(_) => sent += 1,
                    Err(_) => lost += 1,
                }
            }
        }
        drop(w);
        done.recv().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Split off the markers (each on a line of its own) and add up their counts.
        let (mut kept, mut dropped) = (0u64, 0u64);
        for (i, part) in text.split("\n[husk: ").enumerate() {
            let rest = if i == 0 {
                part
            } else {
                let (n, rest) = part
                    .split_once(" bytes of console output dropped]\n")
                    .unwrap();
                dropped += n.parse::<u64>().unwrap();
                rest
            };
            kept += rest.len() as u64;
        }
        assert!(dropped > 0, "a drop marker");
        assert!(
            (2048..4096).contains(&kept),
            "kept {kept}, lost in the pipe {lost}"
        );
        assert_eq!(
            kept + dropped,
            sent,
            "every byte the pipe took is kept or counted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pump_copies_until_the_writer_closes() {
        let dir = std::env::temp_dir().join(format!("husk-console-pump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let (console, write) = PodConsole::open(&path, ConsoleLimit { rate: 1 << 20 }).unwrap();
        let done = console.start();
        let mut w = File::from(write);
        std::io::Write::write_all(&mut w, b"husk-agent: ready\n").unwrap();
        drop(w);
        done.recv().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "husk-agent: ready\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
