//! The muxer: routes guest packets to connections, host socket events to
//! connections, and decides which connection gets the next guest rx buffer.
//!
//! It owns an epoll instance holding the listening socket, every host
//! stream, and a timer; the device's event loop watches only that one epoll
//! fd. Guest rx buffers are handed out round-robin over connections with
//! something to send (`rxq`), one packet per turn, so one busy connection
//! cannot starve the others. Everything that can grow is bounded: connections
//! ([`MAX_CONNECTIONS`]), half-open host clients ([`MAX_PENDING_HOSTS`]),
//! queued RSTs for unknown connections ([`MAX_PENDING_RST`]), and each
//! connection's tx buffer.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::EventSet;
use virtio_vsock::packet::PKT_HEADER_SIZE;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, State, TxHeader};
use super::{
    MuxerError, CONNECT_LINE_MAX, HANDSHAKE_TIMEOUT, LOCAL_PORT_BASE, MAX_CONNECTIONS,
    MAX_PENDING_HOSTS, MAX_PENDING_RST,
};
use crate::devices::virtio::vsock::{op, Packet, VsockBackend, TYPE_STREAM, VSOCK_HOST_CID};
use crate::warn_limited;

const TIMER_TICK: Duration = Duration::from_millis(250);
const EVENTS_PER_NOTIFY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    local_port: u32,
    peer_port: u32,
}

#[derive(Debug, Clone, Copy)]
enum FdOwner {
    Listener,
    Timer,
    Pending,
    Conn(ConnKey),
}

#[derive(Debug)]
enum RxItem {
    Conn(ConnKey),
    /// An RST for a connection we do not have; `src_cid` is the CID the
    /// guest addressed (not always the host's).
    Rst {
        src_cid: u64,
        key: ConnKey,
    },
}

#[derive(Debug)]
struct PendingHost {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// Host Unix sockets ⇄ vsock connections.
pub struct VsockMuxer {
    cid: u64,
    path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    timer: TimerFd,
    timer_armed: bool,
    conns: HashMap<ConnKey, Connection>,
    fds: HashMap<RawFd, FdOwner>,
    pending_hosts: HashMap<RawFd, PendingHost>,
    rxq: VecDeque<RxItem>,
    pending_rst: usize,
    next_local_port: u32,
}

impl std::fmt::Debug for VsockMuxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockMuxer")
            .field("path", &self.path)
            .field("conns", &self.conns.len())
            .finish()
    }
}

impl VsockMuxer {
    /// Listens on `path` for host clients of the guest with CID `cid`. A
    /// stale socket at `path` is replaced; anything else there is an error.
    pub fn new(cid: u64, path: &Path) -> Result<Self, MuxerError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(MuxerError::PathInUse(path.to_owned()));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener =
            UnixListener::bind(path).map_err(|e| MuxerError::Bind(path.to_owned(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| MuxerError::Bind(path.to_owned(), e))?;
        let epoll = Epoll::new().map_err(MuxerError::Setup)?;
        let timer = TimerFd::new()
            .map_err(|e| MuxerError::Setup(io::Error::from_raw_os_error(e.errno())))?;
        set_nonblocking(timer.as_raw_fd()).map_err(MuxerError::Setup)?;
        let mut m = Self {
            cid,
            path: path.to_owned(),
            listener,
            epoll,
            timer,
            timer_armed: false,
            conns: HashMap::new(),
            fds: HashMap::new(),
            pending_hosts: HashMap::new(),
            rxq: VecDeque::new(),
            pending_rst: 0,
            next_local_port: LOCAL_PORT_BASE,
        };
        let lfd = m.listener.as_raw_fd();
        let tfd = m.timer.as_raw_fd();
        m.epoll_ctl(ControlOperation::Add, lfd, EventSet::IN)
            .map_err(MuxerError::Setup)?;
        m.epoll_ctl(ControlOperation::Add, tfd, EventSet::IN)
            .map_err(MuxerError::Setup)?;
        m.fds.insert(lfd, FdOwner::Listener);
        m.fds.insert(tfd, FdOwner::Timer);
        Ok(m)
    }

    /// The socket path host clients connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Bytes buffered towards host sockets, over all connections.
    pub fn tx_buffered(&self) -> usize {
        self.conns.values().map(Connection::tx_buffered).sum()
    }

    /// The state of the connection between host port `local` and guest port
    /// `peer`, if there is one.
    pub fn connection_state(&self, local: u32, peer: u32) -> Option<State> {
        self.conns
            .get(&ConnKey {
                local_port: local,
                peer_port: peer,
            })
            .map(Connection::state)
    }

    fn epoll_ctl(&self, op: ControlOperation, fd: RawFd, evset: EventSet) -> io::Result<()> {
        self.epoll.ctl(op, fd, EpollEvent::new(evset, fd as u64))
    }

    fn arm_timer(&mut self) {
        if !self.timer_armed {
            match self.timer.reset(TIMER_TICK, Some(TIMER_TICK)) {
                Ok(()) => self.timer_armed = true,
                Err(e) => log::error!("vsock: cannot arm the backend timer: {e}"),
            }
        }
    }

    fn queue_rst(&mut self, src_cid: u64, key: ConnKey) {
        if self.pending_rst >= MAX_PENDING_RST {
            warn_limited!(
                "vsock: too many pending RSTs; dropping one for port {}",
                key.peer_port
            );
            return;
        }
        self.pending_rst += 1;
        self.rxq.push_back(RxItem::Rst { src_cid, key });
    }

    /// Brings a connection's epoll registration and rx queue membership in
    /// line with its state, and drops it once it is dead.
    fn refresh(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let fd = conn.stream().as_raw_fd();
        if conn.state() == State::Dead {
            if conn.registered.is_some() {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            }
            self.fds.remove(&fd);
            self.conns.remove(&key);
            return;
        }
        let want = conn.interest();
        if want != conn.registered {
            let op = match (conn.registered, want) {
                (None, Some(_)) => ControlOperation::Add,
                (Some(_), Some(_)) => ControlOperation::Modify,
                _ => ControlOperation::Delete,
            };
            let ev = EpollEvent::new(want.unwrap_or(EventSet::empty()), fd as u64);
            match self.epoll.ctl(op, fd, ev) {
                Ok(()) => conn.registered = want,
                Err(e) => {
                    log::error!(
                        "vsock: epoll update for port {} failed: {e}",
                        key.local_port
                    );
                    conn.kill();
                }
            }
        }
        if conn.has_pending_rx() && !conn.queued {
            conn.queued = true;
            self.rxq.push_back(RxItem::Conn(key));
        }
        if conn.deadline.is_some() {
            self.arm_timer();
        }
    }

    fn accept_hosts(&mut self) {
        for _ in 0..EVENTS_PER_NOTIFY {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn_limited!("vsock: accept on {}: {e}", self.path.display());
                    return;
                }
            };
            if self.pending_hosts.len() >= MAX_PENDING_HOSTS {
                warn_limited!("vsock: too many host clients mid-handshake; closing one");
                continue;
            }
            let fd = stream.as_raw_fd();
            if stream.set_nonblocking(true).is_err()
                || self
                    .epoll_ctl(ControlOperation::Add, fd, EventSet::IN)
                    .is_err()
            {
                continue;
            }
            self.fds.insert(fd, FdOwner::Pending);
            self.pending_hosts.insert(
                fd,
                PendingHost {
                    stream,
                    line: Vec::with_capacity(CONNECT_LINE_MAX),
                    deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                },
            );
            self.arm_timer();
            // Clients usually send the line with their connect: save a wakeup.
            self.read_connect_line(fd);
        }
    }

    fn drop_pending(&mut self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        self.fds.remove(&fd);
        self.pending_hosts.remove(&fd);
    }

    /// Reads the `CONNECT <port>\n` line byte by byte, so no stream data
    /// that follows it is consumed here.
    fn read_connect_line(&mut self, fd: RawFd) {
        let Some(p) = self.pending_hosts.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match p.stream.read(&mut byte) {
                Ok(0) => return self.drop_pending(fd),
                Ok(_) if byte[0] == b'\n' => break parse_connect(&p.line),
                Ok(_) if p.line.len() < CONNECT_LINE_MAX => p.line.push(byte[0]),
                Ok(_) => break None,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.drop_pending(fd),
            }
        };
        let Some(peer_port) = port else {
            warn_limited!("vsock: host client sent a malformed CONNECT line");
            return self.drop_pending(fd);
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            warn_limited!("vsock: connection limit reached; refusing host client");
            return self.drop_pending(fd);
        }
        let Some(local_port) = self.alloc_local_port(peer_port) else {
            return self.drop_pending(fd);
        };
        let Some(pending) = self.pending_hosts.remove(&fd) else {
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port,
        };
        let mut conn = Connection::new_local(pending.stream, local_port, peer_port, Instant::now());
        conn.registered = Some(EventSet::IN);
        self.fds.insert(fd, FdOwner::Conn(key));
        self.conns.insert(key, conn);
        self.refresh(key);
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(LOCAL_PORT_BASE);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.conns.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    fn connect_to_host(&mut self, pkt: &Packet<'_>, key: ConnKey) {
        if self.conns.len() >= MAX_CONNECTIONS {
            warn_limited!(
                "vsock: connection limit reached; refusing guest connect to {}",
                key.local_port
            );
            return self.queue_rst(VSOCK_HOST_CID, key);
        }
        let mut target = OsString::from(self.path.as_os_str());
        target.push(format!("_{}", key.local_port));
        match connect_nonblocking(Path::new(&target)) {
            Ok(stream) => {
                let fd = stream.as_raw_fd();
                self.fds.insert(fd, FdOwner::Conn(key));
                self.conns
                    .insert(key, Connection::new_peer(stream, key.local_port, pkt));
                self.refresh(key);
            }
            Err(e) => {
                log::debug!(
                    "vsock: guest connect to {}: {e}",
                    Path::new(&target).display()
                );
                self.queue_rst(VSOCK_HOST_CID, key);
            }
        }
    }

    fn on_timer(&mut self) {
        let _ = self.timer.wait();
        let now = Instant::now();
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(c) = self.conns.get_mut(&key) {
                c.expire();
            }
            self.refresh(key);
        }
        let stale: Vec<RawFd> = self
            .pending_hosts
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in stale {
            self.drop_pending(fd);
        }
        let waiting =
            self.conns.values().any(|c| c.deadline.is_some()) || !self.pending_hosts.is_empty();
        if !waiting && self.timer_armed {
            let _ = self.timer.clear();
            self.timer_armed = false;
        }
    }

    fn write_header(
        &self,
        pkt: &mut Packet<'_>,
        src_cid: u64,
        key: ConnKey,
        h: TxHeader,
        credit: (u32, u32),
    ) {
        let mut raw = [0u8; PKT_HEADER_SIZE];
        raw[0..8].copy_from_slice(&src_cid.to_le_bytes());
        raw[8..16].copy_from_slice(&self.cid.to_le_bytes());
        raw[16..20].copy_from_slice(&key.local_port.to_le_bytes());
        raw[20..24].copy_from_slice(&key.peer_port.to_le_bytes());
        raw[24..28].copy_from_slice(&h.len.to_le_bytes());
        raw[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
        raw[30..32].copy_from_slice(&h.op.to_le_bytes());
        raw[32..36].copy_from_slice(&h.flags.to_le_bytes());
        raw[36..40].copy_from_slice(&credit.0.to_le_bytes());
        raw[40..44].copy_from_slice(&credit.1.to_le_bytes());
        // Cannot fail: `raw` is exactly a header and the packet's header
        // slice was validated to hold one.
        let _ = pkt.set_header_from_raw(&raw);
    }
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl AsRawFd for VsockMuxer {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl VsockBackend for VsockMuxer {
    fn send_pkt(&mut self, pkt: &Packet<'_>) {
        if pkt.src_cid() != self.cid {
            warn_limited!(
                "vsock: dropping packet with spoofed source CID {}",
                pkt.src_cid()
            );
            return;
        }
        let key = ConnKey {
            local_port: pkt.dst_port(),
            peer_port: pkt.src_port(),
        };
        if pkt.dst_cid() != VSOCK_HOST_CID || pkt.type_() != TYPE_STREAM {
            if pkt.op() != op::RST {
                warn_limited!(
                    "vsock: refusing packet to CID {} type {}",
                    pkt.dst_cid(),
                    pkt.type_()
                );
                self.queue_rst(pkt.dst_cid(), key);
            }
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            if pkt.op() == op::REQUEST {
                warn_limited!(
                    "vsock: duplicate REQUEST for {}:{}",
                    key.local_port,
                    key.peer_port
                );
                conn.kill();
            } else {
                conn.send_pkt(pkt);
            }
            self.refresh(key);
            return;
        }
        match pkt.op() {
            op::REQUEST => self.connect_to_host(pkt, key),
            op::RST => {}
            o => {
                log::debug!(
                    "vsock: op {o} for unknown connection {}:{}",
                    key.local_port,
                    key.peer_port
                );
                self.queue_rst(VSOCK_HOST_CID, key);
            }
        }
    }

    fn recv_pkt(&mut self, pkt: &mut Packet<'_>) -> bool {
        while let Some(item) = self.rxq.pop_front() {
            match item {
                RxItem::Rst { src_cid, key } => {
                    self.pending_rst -= 1;
                    let h = TxHeader {
                        op: op::RST,
                        len: 0,
                        flags: 0,
                    };
                    self.write_header(pkt, src_cid, key, h, (0, 0));
                    return true;
                }
                RxItem::Conn(key) => {
                    let Some(conn) = self.conns.get_mut(&key) else {
                        continue;
                    };
                    conn.queued = false;
                    let header = conn.recv_pkt(pkt);
                    let credit = conn.credit_fields();
                    if let Some(h) = header {
                        self.write_header(pkt, VSOCK_HOST_CID, key, h, credit);
                    }
                    self.refresh(key);
                    if header.is_some() {
                        return true;
                    }
                }
            }
        }
        false
    }

    fn has_pending_rx(&self) -> bool {
        !self.rxq.is_empty()
    }

    fn notify(&mut self, _evset: EventSet) {
        let mut events = [EpollEvent::default(); EVENTS_PER_NOTIFY];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                warn_limited!("vsock: backend epoll_wait: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let fd = ev.data() as RawFd;
            let evset = ev.event_set();
            match self.fds.get(&fd).copied() {
                Some(FdOwner::Listener) => self.accept_hosts(),
                Some(FdOwner::Timer) => self.on_timer(),
                Some(FdOwner::Pending) => self.read_connect_line(fd),
                Some(FdOwner::Conn(key)) => {
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.notify(evset);
                    }
                    self.refresh(key);
                }
                // Closed while this batch was being handled.
                None => {}
            }
        }
    }

    fn reset(&mut self) {
        // No RSTs: the driver that would receive them is gone. Dropping the
        // connections closes their host streams.
        for (_, conn) in self.conns.drain() {
            let fd = conn.stream().as_raw_fd();
            if conn.registered.is_some() {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            }
            self.fds.remove(&fd);
        }
        self.rxq.clear();
        self.pending_rst = 0;
    }
}

/// Parses `CONNECT <port>` (an optional trailing `\r` is tolerated).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// vmm-sys-util creates timerfds blocking; a spurious wakeup must not stall
/// the event loop in `read`.
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, no pointers involved; results checked.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to a Unix stream socket without ever blocking: a listener whose
/// backlog is full fails with EAGAIN instead of stalling the event loop.
/// std's `UnixStream::connect` always blocks, hence the raw calls.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is a plain C struct for which all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket() takes no pointers; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un that outlives the call and `len`
    // does not exceed its size.
    let ret = unsafe { libc::connect(fd, (&raw const addr).cast::<libc::sockaddr>(), len) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line_parsing() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295\r"), Some(u32::MAX));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT ",
            b"connect 52",
            b"CONNECT -1",
            b"CONNECT +1",
            b"CONNECT 4294967296",
            b"CONNECT 5 2",
            b"CONNECT \xff",
        ] {
            assert_eq!(
                parse_connect(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn nonblocking_connect_failures() {
        let dir = std::env::temp_dir().join(format!("husk-vsock-nb-{}", std::process::id()));
        assert!(connect_nonblocking(&dir.join("nothing")).is_err());
        let long = "x".repeat(200);
        assert_eq!(
            connect_nonblocking(Path::new(&long)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
