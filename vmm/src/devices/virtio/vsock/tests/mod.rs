//! vsock tests, driven from the driver side through the MMIO transport and
//! split virtqueues in guest memory.
//!
//! `device.rs` checks queue handling against a test-double backend;
//! `muxer.rs` and `flow.rs` run the real Unix-socket backend against real
//! host sockets.

mod device;
mod flow;
mod muxer;

use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::testing::{Hdr, VsockDriver};
use super::{op, VsockMuxer};

pub(super) const CID: u64 = 3;

/// A private directory for one test's sockets, removed on drop.
pub(super) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "husk-vsock-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A driver around the real muxer listening in a fresh directory.
pub(super) struct Env {
    pub d: VsockDriver<VsockMuxer>,
    pub sock: PathBuf,
    _dir: TempDir,
}

impl Env {
    pub fn new() -> Self {
        let dir = TempDir::new();
        let sock = dir.0.join("v.sock");
        let muxer = VsockMuxer::new(CID, &sock).unwrap();
        let mut d = VsockDriver::new(CID, muxer, 0);
        d.fill_rx(64, 4096);
        Self { d, sock, _dir: dir }
    }

    /// A host listener for guest connections to `port`.
    pub fn listen(&self, port: u32) -> UnixListener {
        let l = UnixListener::bind(format!("{}_{port}", self.sock.display())).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    }

    /// Runs the backend and collects what reached the guest.
    pub fn pump(&mut self) -> Vec<(Hdr, Vec<u8>)> {
        self.d.pump();
        let got = self.d.recv();
        self.d.fill_rx(64, 4096);
        got
    }

    /// Guest connects from `src` to host port `dst`; returns the reply.
    pub fn guest_connect(&mut self, src: u32, dst: u32) -> Hdr {
        self.d.send(Hdr::guest(CID, src, dst, op::REQUEST), &[]);
        let got = self.d.recv();
        self.d.fill_rx(64, 4096);
        assert_eq!(got.len(), 1, "expected one reply to REQUEST, got {got:?}");
        got[0].0
    }

    /// Host client connects to guest port `port`; returns the client stream
    /// and the REQUEST the guest saw.
    pub fn host_connect(&mut self, port: u32) -> (UnixStream, Hdr) {
        let mut c = UnixStream::connect(&self.sock).unwrap();
        std::io::Write::write_all(&mut c, format!("CONNECT {port}\n").as_bytes()).unwrap();
        let mut got = vec![];
        for _ in 0..10 {
            got.extend(self.pump());
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1, "expected a REQUEST, got {got:?}");
        let h = got[0].0;
        assert_eq!(h.op, op::REQUEST);
        assert_eq!(h.dst_port, port);
        (c, h)
    }

    /// Host connect + guest accept; returns the client after reading `OK`.
    pub fn host_connect_accepted(&mut self, port: u32) -> (UnixStream, Hdr) {
        let (mut c, req) = self.host_connect(port);
        let resp = self.d.reply(&req, op::RESPONSE);
        self.d.send(resp, &[]);
        let line = read_line(&mut c);
        assert_eq!(line, format!("OK {}\n", req.src_port));
        (c, req)
    }
}

/// Reads one `\n`-terminated line from a blocking stream.
pub(super) fn read_line(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = vec![];
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8(line).unwrap()
}

/// Reads whatever is available without blocking.
pub(super) fn read_available(s: &mut UnixStream) -> (Vec<u8>, bool) {
    s.set_nonblocking(true).unwrap();
    let mut out = vec![];
    let mut buf = vec![0u8; 64 * 1024];
    let eof = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("read: {e}"),
        }
    };
    (out, eof)
}

/// Deterministic test data.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(super) fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
