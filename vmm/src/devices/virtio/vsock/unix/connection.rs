//! One vsock stream connection bridged to one host Unix stream: its state
//! machine and both directions of credit-based flow control.
//!
//! Guest → host: we advertise `buf_alloc = CONN_TX_BUF_SIZE` and a `fwd_cnt`
//! of the bytes that actually reached the host socket. An honest guest never
//! has more than `buf_alloc` bytes in flight, so whatever the host socket
//! cannot take right away fits in the connection's bounded [`TxBuf`]; a guest
//! that sends past its credit overflows it and gets an RST. While the host
//! does not read, fwd_cnt stands still and the guest runs out of credit:
//! that is the back-pressure.
//!
//! Host → guest: we read from the host socket only while the guest has
//! credit (`peer_buf_alloc - (rx_cnt - peer_fwd_cnt)`) and never more than
//! that, straight into the guest's rx buffer. With no credit the socket is
//! not polled for input, so the host writer blocks in its own kernel buffer.
//!
//! Every packet we send carries our current `buf_alloc`/`fwd_cnt`, so an
//! explicit CREDIT_UPDATE is only queued when the guest's view of our free
//! space has fallen below [`CREDIT_UPDATE_THRESHOLD`] and we have freed
//! something since we last told it.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use event_manager::EventSet;
use vm_memory::{ReadVolatile, VolatileMemoryError, WriteVolatile};

use super::txbuf::TxBuf;
use super::{CLOSE_TIMEOUT, CONNECT_TIMEOUT, CONN_TX_BUF_SIZE, CREDIT_UPDATE_THRESHOLD};
use crate::devices::virtio::vsock::{
    op, Packet, MAX_PKT_BUF_SIZE, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND,
};
use crate::warn_limited;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE.
    LocalInit,
    /// Guest-initiated: the host socket is connected, our RESPONSE is queued.
    PeerInit,
    /// Data flows.
    Established,
    /// We sent SHUTDOWN with both flags and wait for the guest's RST.
    Closing,
    /// An RST for the guest is queued; the connection goes once it is sent.
    Killing,
    /// Finished: the muxer drops it without telling the guest anything.
    Dead,
}

// Things waiting to be sent to the guest.
const PEND_REQUEST: u8 = 1;
const PEND_RESPONSE: u8 = 2;
const PEND_RST: u8 = 4;
const PEND_SHUTDOWN: u8 = 8;
const PEND_CREDIT_UPDATE: u8 = 16;
const PEND_CREDIT_REQUEST: u8 = 32;
/// The host socket is (probably) readable.
const PEND_DATA: u8 = 64;

/// Header fields for an outgoing packet.
#[derive(Debug, Clone, Copy)]
pub struct TxHeader {
    pub op: u16,
    pub len: u32,
    pub flags: u32,
}

/// A vsock connection and its host stream.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    /// Our (host-side) port.
    pub local_port: u32,
    /// The guest's port.
    pub peer_port: u32,
    state: State,
    pending: u8,
    shutdown_to_send: u32,
    peer_shutdown: u32,
    local_shutdown: u32,
    // Guest → host.
    tx_buf: TxBuf,
    recv_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    host_write_shut: bool,
    // Host → guest.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    host_eof: bool,
    host_hup: bool,
    credit_requested: bool,
    /// When a LocalInit or Closing connection gives up on the guest.
    pub deadline: Option<Instant>,
    /// Whether the muxer's rx queue holds this connection.
    pub queued: bool,
    /// The interest currently registered with the muxer's epoll.
    pub registered: Option<EventSet>,
}

impl Connection {
    fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Self {
        Self {
            stream,
            local_port,
            peer_port,
            state,
            pending: 0,
            shutdown_to_send: 0,
            peer_shutdown: 0,
            local_shutdown: 0,
            tx_buf: TxBuf::new(CONN_TX_BUF_SIZE as usize),
            recv_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            host_write_shut: false,
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            host_eof: false,
            host_hup: false,
            credit_requested: false,
            deadline: None,
            queued: false,
            registered: None,
        }
    }

    /// A host-initiated connection: a REQUEST for the guest is queued.
    pub fn new_local(stream: UnixStream, local_port: u32, peer_port: u32, now: Instant) -> Self {
        let mut c = Self::new(stream, local_port, peer_port, State::LocalInit);
        c.pending = PEND_REQUEST;
        c.deadline = Some(now + CONNECT_TIMEOUT);
        c
    }

    /// A guest-initiated connection whose host socket is connected: a
    /// RESPONSE for the guest is queued.
    pub fn new_peer(stream: UnixStream, local_port: u32, pkt: &Packet<'_>) -> Self {
        let mut c = Self::new(stream, local_port, pkt.src_port(), State::PeerInit);
        c.pending = PEND_RESPONSE;
        c.update_peer_credit(pkt);
        c
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The host stream (for epoll registration).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Bytes buffered towards the host.
    pub fn tx_buffered(&self) -> usize {
        self.tx_buf.len()
    }

    fn fwd_cnt(&self) -> Wrapping<u32> {
        self.recv_cnt - Wrapping(self.tx_buf.len() as u32)
    }

    /// How many bytes the guest can take right now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        // A guest claiming more consumed than we sent (or shrinking its
        // buffer) only stalls its own connection.
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.local_shutdown & SHUTDOWN_SEND == 0
            && self.peer_credit() > 0
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_pending_rx(&self) -> bool {
        let control = self.pending & !PEND_DATA;
        control != 0 || (self.pending & PEND_DATA != 0 && self.can_send_data())
    }

    /// What the host socket should be polled for; None: not at all.
    pub fn interest(&self) -> Option<EventSet> {
        if self.host_hup || matches!(self.state, State::Killing | State::Dead) {
            return None;
        }
        let mut e = EventSet::empty();
        if self.pending & PEND_DATA == 0 && !self.host_eof && self.can_send_data() {
            e |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            e |= EventSet::OUT;
        }
        Some(e)
    }

    /// Tears the connection down with an RST to the guest.
    pub fn kill(&mut self) {
        if !matches!(self.state, State::Killing | State::Dead) {
            self.state = State::Killing;
            self.pending = PEND_RST;
            self.deadline = None;
        }
    }

    fn update_peer_credit(&mut self, pkt: &Packet<'_>) {
        let before = self.peer_credit();
        self.peer_buf_alloc = pkt.buf_alloc();
        self.peer_fwd_cnt = Wrapping(pkt.fwd_cnt());
        if self.peer_credit() > before {
            self.credit_requested = false;
        }
    }

    fn maybe_queue_credit_update(&mut self) {
        let unacked = (self.fwd_cnt() - self.last_fwd_cnt_sent).0;
        let peer_view_used = (self.recv_cnt - self.last_fwd_cnt_sent).0;
        let peer_view_free = CONN_TX_BUF_SIZE.saturating_sub(peer_view_used);
        if unacked > 0 && peer_view_free < CREDIT_UPDATE_THRESHOLD {
            self.pending |= PEND_CREDIT_UPDATE;
        }
    }

    /// Handles a packet the guest sent on this connection.
    pub fn send_pkt(&mut self, pkt: &Packet<'_>) {
        if matches!(self.state, State::Killing | State::Dead) {
            return;
        }
        self.update_peer_credit(pkt);
        match (self.state, pkt.op()) {
            (_, op::RST) => self.state = State::Dead,
            (State::LocalInit, op::RESPONSE) => {
                self.state = State::Established;
                self.deadline = None;
                // Tell the host client which port it got (Firecracker's protocol).
                let ack = format!("OK {}\n", self.local_port);
                if self.tx_buf.push_bytes(ack.as_bytes()).is_err() {
                    self.kill();
                    return;
                }
                self.flush();
            }
            (State::Established | State::Closing, op::RW) => self.recv_data(pkt),
            (State::Established | State::Closing, op::SHUTDOWN) => {
                self.peer_shutdown |= pkt.flags() & SHUTDOWN_BOTH;
                self.after_tx_progress();
            }
            (State::Established | State::Closing, op::CREDIT_UPDATE) => {}
            (State::Established | State::Closing, op::CREDIT_REQUEST) => {
                self.pending |= PEND_CREDIT_UPDATE;
            }
            (state, o) => {
                warn_limited!(
                    "vsock: op {o} in state {state:?} on {}:{}; resetting",
                    self.local_port,
                    self.peer_port
                );
                self.kill();
            }
        }
    }

    fn recv_data(&mut self, pkt: &Packet<'_>) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            warn_limited!(
                "vsock: data after SHUTDOWN on {}:{}",
                self.local_port,
                self.peer_port
            );
            self.kill();
            return;
        }
        let Some(data) = pkt.data_slice() else { return };
        let len = data.len();
        self.recv_cnt += Wrapping(len as u32);
        let mut written = 0;
        if self.tx_buf.is_empty() && !self.host_write_shut {
            match self.stream.write_volatile(data) {
                Ok(n) => written = n,
                Err(e) if io_kind(&e) == Some(ErrorKind::WouldBlock) => {}
                Err(e) => {
                    log::debug!("vsock: host write on {}: {e}", self.local_port);
                    self.kill();
                    return;
                }
            }
        }
        if written < len {
            let rest = match data.offset(written) {
                Ok(rest) => rest,
                Err(_) => return self.kill(),
            };
            if self.tx_buf.push_slice(&rest).is_err() {
                warn_limited!(
                    "vsock: guest overran its credit on {}:{}; resetting",
                    self.local_port,
                    self.peer_port
                );
                self.kill();
                return;
            }
        }
        self.maybe_queue_credit_update();
    }

    /// After bytes left the tx buffer (or the guest shut down): credit
    /// updates, deferred half-close, deferred full close.
    fn after_tx_progress(&mut self) {
        self.maybe_queue_credit_update();
        if !self.tx_buf.is_empty() {
            return;
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.peer_shutdown == SHUTDOWN_BOTH {
            // The guest is done in both directions and everything it sent
            // reached the host: answer with the RST it waits for.
            self.kill();
        }
    }

    fn flush(&mut self) {
        match self.tx_buf.flush_to(&mut self.stream) {
            Ok(_) => self.after_tx_progress(),
            Err(e) => {
                log::debug!("vsock: host write on {}: {e}", self.local_port);
                self.kill();
            }
        }
    }

    /// The host socket reported `evset`.
    pub fn notify(&mut self, evset: EventSet) {
        if matches!(self.state, State::Killing | State::Dead) {
            return;
        }
        if evset.contains(EventSet::ERROR) {
            self.kill();
            return;
        }
        if evset.contains(EventSet::OUT) {
            self.flush();
        }
        if evset.contains(EventSet::IN) && self.state == State::Established {
            self.pending |= PEND_DATA;
        }
        if evset.contains(EventSet::HANG_UP) {
            self.host_hung_up();
        }
    }

    fn host_hung_up(&mut self) {
        match self.state {
            State::Established if self.tx_buf.is_empty() => {
                // The host is gone for good. Deliver what it left in the
                // socket, then tell the guest we are done in both directions.
                self.host_hup = true;
                self.pending |= PEND_DATA;
                if self.host_eof {
                    self.queue_shutdown(SHUTDOWN_BOTH);
                }
            }
            State::Closing => self.host_hup = true,
            _ => self.kill(),
        }
    }

    fn queue_shutdown(&mut self, flags: u32) {
        let new = flags & !self.local_shutdown;
        if new != 0 {
            self.shutdown_to_send |= new;
            self.pending |= PEND_SHUTDOWN;
        }
    }

    /// The connection's deadline passed.
    pub fn expire(&mut self) {
        self.deadline = None;
        if matches!(self.state, State::LocalInit | State::Closing) {
            self.kill();
        }
    }

    /// Produces the next packet for the guest: data goes straight into
    /// `pkt`'s buffer, the returned header is for the caller to write (with
    /// [`Connection::credit_fields`]). None if there was nothing after all.
    pub fn recv_pkt(&mut self, pkt: &mut Packet<'_>) -> Option<TxHeader> {
        let hdr = |op, len, flags| TxHeader { op, len, flags };
        // Data is only read when no handshake packet is due; a failed read
        // queues an RST, which the chain below then sends.
        let data = if self.pending & (PEND_RST | PEND_REQUEST | PEND_RESPONSE) == 0 {
            self.read_data(pkt)
        } else {
            None
        };
        let h = if self.pending & PEND_RST != 0 {
            self.pending = 0;
            self.state = State::Dead;
            hdr(op::RST, 0, 0)
        } else if self.pending & PEND_REQUEST != 0 {
            self.pending &= !PEND_REQUEST;
            hdr(op::REQUEST, 0, 0)
        } else if self.pending & PEND_RESPONSE != 0 {
            self.pending &= !PEND_RESPONSE;
            self.state = State::Established;
            hdr(op::RESPONSE, 0, 0)
        } else if let Some(n) = data {
            hdr(op::RW, n, 0)
        } else if self.pending & PEND_SHUTDOWN != 0 {
            self.pending &= !PEND_SHUTDOWN;
            let flags = self.shutdown_to_send;
            self.shutdown_to_send = 0;
            self.local_shutdown |= flags;
            if self.local_shutdown == SHUTDOWN_BOTH && self.state == State::Established {
                self.state = State::Closing;
                self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            hdr(op::SHUTDOWN, 0, flags)
        } else if self.pending & PEND_CREDIT_UPDATE != 0 {
            hdr(op::CREDIT_UPDATE, 0, 0)
        } else if self.pending & PEND_CREDIT_REQUEST != 0 {
            self.pending &= !PEND_CREDIT_REQUEST;
            hdr(op::CREDIT_REQUEST, 0, 0)
        } else {
            return None;
        };
        if h.op == op::RW {
            self.rx_cnt += Wrapping(h.len);
            if self.peer_credit() == 0 && !self.credit_requested {
                self.credit_requested = true;
                self.pending |= PEND_CREDIT_REQUEST;
            }
        }
        // Every packet carries our credit, so no separate update is due.
        self.pending &= !PEND_CREDIT_UPDATE;
        self.last_fwd_cnt_sent = self.fwd_cnt();
        Some(h)
    }

    /// Our credit for the header of a packet to the guest.
    pub fn credit_fields(&self) -> (u32, u32) {
        (CONN_TX_BUF_SIZE, self.fwd_cnt().0)
    }

    /// Reads host data into `pkt`'s buffer if the host socket is readable and
    /// the guest has credit. Returns the length read.
    fn read_data(&mut self, pkt: &mut Packet<'_>) -> Option<u32> {
        if self.pending & PEND_DATA == 0 || !self.can_send_data() {
            return None;
        }
        let buf = pkt.data_slice()?;
        let max = (buf.len() as u32)
            .min(self.peer_credit())
            .min(MAX_PKT_BUF_SIZE);
        let mut dst = buf.subslice(0, max as usize).ok()?;
        match self.stream.read_volatile(&mut dst) {
            Ok(0) => {
                self.pending &= !PEND_DATA;
                self.host_eof = true;
                self.queue_shutdown(if self.host_hup {
                    SHUTDOWN_BOTH
                } else {
                    SHUTDOWN_SEND
                });
                None
            }
            Ok(n) => Some(n as u32),
            Err(e) if io_kind(&e) == Some(ErrorKind::WouldBlock) => {
                self.pending &= !PEND_DATA;
                None
            }
            Err(e) if io_kind(&e) == Some(ErrorKind::Interrupted) => None,
            Err(e) => {
                log::debug!("vsock: host read on {}: {e}", self.local_port);
                self.pending &= !PEND_DATA;
                self.kill();
                None
            }
        }
    }
}

fn io_kind(e: &VolatileMemoryError) -> Option<ErrorKind> {
    match e {
        VolatileMemoryError::IOError(e) => Some(e.kind()),
        _ => None,
    }
}
