//! Credit-based flow control in both directions, against real host sockets.

use std::io::{ErrorKind, Write};

use super::{pattern, read_available, Env, CID};
use crate::devices::virtio::vsock::op;
use crate::devices::virtio::vsock::testing::{is_rst, Hdr};
use crate::devices::virtio::vsock::unix::CONN_TX_BUF_SIZE;

/// The guest's view of one connection's credit.
#[derive(Default, Debug)]
struct Credit {
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
}

impl Credit {
    fn update(&mut self, h: &Hdr) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
    }
    fn available(&self) -> u32 {
        self.peer_buf_alloc - (self.tx_cnt - self.peer_fwd_cnt)
    }
}

#[test]
fn host_to_guest_never_exceeds_guest_credit() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect(90);
    let mut resp = env.d.reply(&req, op::RESPONSE);
    resp.buf_alloc = 8192;
    env.d.send(resp, &[]);
    super::read_line(&mut c);
    c.write_all(&pattern(64 * 1024, 3)).unwrap();
    let mut data = vec![];
    let mut credit_requests = 0;
    for _ in 0..20 {
        for (h, d) in env.pump() {
            match h.op {
                op::RW => data.extend(d),
                op::CREDIT_REQUEST => credit_requests += 1,
                o => panic!("unexpected op {o}"),
            }
        }
    }
    assert_eq!(data.len(), 8192, "exactly the guest's buf_alloc, no more");
    assert_eq!(credit_requests, 1, "one CREDIT_REQUEST when credit ran out");
    // The guest consumed everything: a credit update opens the window again.
    let mut upd = env.d.reply(&req, op::CREDIT_UPDATE);
    upd.buf_alloc = 8192;
    upd.fwd_cnt = 8192;
    env.d.send(upd, &[]);
    for _ in 0..20 {
        for (h, d) in env.pump() {
            if h.op == op::RW {
                data.extend(d);
            }
        }
    }
    assert_eq!(data.len(), 16384);
    assert_eq!(data, pattern(64 * 1024, 3)[..16384]);
}

#[test]
fn guest_request_for_credit_gets_an_update() {
    let mut env = Env::new();
    let (_c, req) = env.host_connect_accepted(91);
    env.d.send(env.d.reply(&req, op::CREDIT_REQUEST), &[]);
    let got = env.d.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(got[0].0.buf_alloc, CONN_TX_BUF_SIZE);
}

/// Guest sends `total` bytes honouring credit while the host reads only when
/// `host_reads(round)` says so. Returns (bytes the guest got to send, bytes
/// the host received).
fn guest_push(
    env: &mut Env,
    port: u32,
    total: usize,
    host_reads: impl Fn(usize) -> bool,
) -> (usize, Vec<u8>) {
    let l = env.listen(port);
    let resp = env.guest_connect(40, port);
    let (mut host, _) = l.accept().unwrap();
    let mut credit = Credit::default();
    credit.update(&resp);
    let data = pattern(total, 9);
    let mut sent = 0;
    let mut received = vec![];
    let mut idle_rounds = 0;
    let mut round = 0;
    while sent < total && idle_rounds < 50 {
        round += 1;
        let n = (total - sent)
            .min(64 * 1024)
            .min(credit.available() as usize);
        if n > 0 {
            env.d
                .send(Hdr::guest(CID, 40, port, op::RW), &data[sent..sent + n]);
            credit.tx_cnt += n as u32;
            sent += n;
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
        }
        if host_reads(round) {
            received.extend(read_available(&mut host).0);
        }
        for (h, _) in env.pump() {
            assert!(!is_rst(&h), "unexpected RST");
            credit.update(&h);
        }
        let buffered = env.d.dev().backend().tx_buffered();
        assert!(
            buffered <= CONN_TX_BUF_SIZE as usize,
            "VMM buffered {buffered} bytes"
        );
    }
    if host_reads(round) {
        for _ in 0..10 {
            received.extend(read_available(&mut host).0);
            env.pump();
        }
        assert_eq!(received, data[..received.len()]);
    }
    (sent, received)
}

#[test]
fn guest_to_host_stalls_on_credit_when_host_does_not_read() {
    let mut env = Env::new();
    let (sent, _) = guest_push(&mut env, 95, 64 << 20, |_| false);
    // The guest could send what the host socket buffers hold plus our
    // bounded tx buffer, and then no more.
    assert!(
        sent < 4 << 20,
        "guest sent {sent} bytes into a host that never reads"
    );
    assert!(env.d.dev().backend().tx_buffered() <= CONN_TX_BUF_SIZE as usize);
}

#[test]
fn guest_overrunning_credit_is_reset() {
    let mut env = Env::new();
    let l = env.listen(96);
    env.guest_connect(41, 96);
    let (_host, _) = l.accept().unwrap();
    // Ignore credit entirely: 8 MiB into a host that never reads.
    let chunk = pattern(64 * 1024, 1);
    let mut rst = false;
    for _ in 0..128 {
        env.d.send(Hdr::guest(CID, 41, 96, op::RW), &chunk);
        if env.d.recv().iter().any(|(h, _)| is_rst(h)) {
            rst = true;
            break;
        }
    }
    assert!(rst, "a guest sending past its credit must be reset");
    assert_eq!(env.d.dev().backend().connection_count(), 0);
    assert_eq!(env.d.dev().backend().tx_buffered(), 0);
}

#[test]
fn guest_to_host_recovers_when_host_reads_again() {
    let mut env = Env::new();
    let total = 8 << 20;
    // The host does not read for a while (the guest stalls), then drains.
    let (sent, received) = guest_push(&mut env, 97, total, |round| round > 40);
    assert_eq!(sent, total);
    assert_eq!(received.len(), total);
}

#[test]
fn host_to_guest_bulk_transfer_with_guest_credit_updates() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect_accepted(98);
    let total = 4 << 20;
    let data = pattern(total, 5);
    c.set_nonblocking(true).unwrap();
    let mut written = 0;
    let mut got = vec![];
    let mut consumed = 0u32;
    for _ in 0..100_000 {
        if written < total {
            match c.write(&data[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        for (h, d) in env.pump() {
            if h.op == op::RW {
                consumed += d.len() as u32;
                got.extend(d);
            }
        }
        // The guest app reads promptly and the driver tells the device.
        let mut upd = env.d.reply(&req, op::CREDIT_UPDATE);
        upd.fwd_cnt = consumed;
        env.d.send(upd, &[]);
        if got.len() == total {
            break;
        }
    }
    assert_eq!(got.len(), total);
    assert!(got == data, "stream corrupted");
}
