//! The Unix-socket backend against real host sockets: connection set-up in
//! both directions, RST paths, shutdown, limits, reset, time-outs.

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use super::{exists, pattern, read_available, read_line, Env, CID};
use crate::devices::virtio::testing::mmio_write;
use crate::devices::virtio::vsock::testing::{is_rst, Hdr};
use crate::devices::virtio::vsock::unix::{ConnState, LOCAL_PORT_BASE, MAX_CONNECTIONS};
use crate::devices::virtio::vsock::{op, VsockMuxer, SHUTDOWN_BOTH, SHUTDOWN_SEND, VSOCK_HOST_CID};

#[test]
fn guest_connects_to_host_listener_and_exchanges_data() {
    let mut env = Env::new();
    let l = env.listen(1234);
    let resp = env.guest_connect(5000, 1234);
    assert_eq!(resp.op, op::RESPONSE);
    assert_eq!((resp.src_cid, resp.dst_cid), (VSOCK_HOST_CID, CID));
    assert_eq!((resp.src_port, resp.dst_port), (1234, 5000));
    assert_eq!(resp.buf_alloc, 256 * 1024);
    let (mut host, _) = l.accept().unwrap();
    env.d.send(Hdr::guest(CID, 5000, 1234, op::RW), b"ping");
    let (got, eof) = read_available(&mut host);
    assert_eq!((got.as_slice(), eof), (&b"ping"[..], false));
    host.write_all(b"pong").unwrap();
    let got = env.pump();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, op::RW);
    assert_eq!(got[0].1, b"pong");
    assert_eq!(
        got[0].0.fwd_cnt, 4,
        "fwd_cnt counts bytes delivered to the host"
    );
}

#[test]
fn guest_connect_with_nobody_listening_gets_rst() {
    let mut env = Env::new();
    let r = env.guest_connect(5000, 7777);
    assert!(is_rst(&r));
    assert_eq!((r.src_port, r.dst_port), (7777, 5000));
    assert_eq!(env.d.dev().backend().connection_count(), 0);
}

#[test]
fn host_connects_to_guest_and_exchanges_data() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect(52);
    assert_eq!((req.src_cid, req.dst_cid), (VSOCK_HOST_CID, CID));
    assert!(req.src_port >= LOCAL_PORT_BASE);
    let resp = env.d.reply(&req, op::RESPONSE);
    env.d.send(resp, &[]);
    assert_eq!(read_line(&mut c), format!("OK {}\n", req.src_port));
    c.write_all(b"to guest").unwrap();
    let got = env.pump();
    assert_eq!(got[0].1, b"to guest");
    let mut rw = env.d.reply(&req, op::RW);
    rw.fwd_cnt = 8;
    env.d.send(rw, b"to host");
    let (got, _) = read_available(&mut c);
    assert_eq!(got, b"to host");
}

#[test]
fn host_connect_refused_by_guest_closes_client() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect(52);
    let rst = env.d.reply(&req, op::RST);
    env.d.send(rst, &[]);
    let (got, eof) = read_available(&mut c);
    assert!(got.is_empty() && eof, "client must see EOF, got {got:?}");
    assert_eq!(env.d.dev().backend().connection_count(), 0);
}

#[test]
fn malformed_connect_lines_close_the_client() {
    let mut env = Env::new();
    for line in [&b"HELLO\n"[..], b"CONNECT x\n", &[b'A'; 64]] {
        let mut c = UnixStream::connect(&env.sock).unwrap();
        c.write_all(line).unwrap();
        let got = env.pump();
        assert!(got.is_empty(), "no REQUEST for {line:?}");
        env.pump();
        let (_, eof) = read_available(&mut c);
        assert!(
            eof,
            "client with line {:?} must be closed",
            String::from_utf8_lossy(line)
        );
    }
    // A client that disconnects mid-line is cleaned up too.
    let mut c = UnixStream::connect(&env.sock).unwrap();
    c.write_all(b"CONN").unwrap();
    drop(c);
    env.pump();
    env.pump();
    let (c, req) = env.host_connect(9);
    drop(c);
    assert_eq!(req.dst_port, 9);
}

#[test]
fn data_sent_right_after_connect_line_is_not_lost() {
    let mut env = Env::new();
    let mut c = UnixStream::connect(&env.sock).unwrap();
    c.write_all(b"CONNECT 80\nearly bytes").unwrap();
    let got = env.pump();
    let req = got[0].0;
    env.d.send(env.d.reply(&req, op::RESPONSE), &[]);
    let got = env.pump();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"early bytes");
    assert_eq!(read_line(&mut c), format!("OK {}\n", req.src_port));
}

#[test]
fn packets_for_unknown_connections_get_rst_and_rst_gets_nothing() {
    let mut env = Env::new();
    env.d.send(Hdr::guest(CID, 1, 2, op::RW), b"zzz");
    env.d.send(Hdr::guest(CID, 1, 3, op::SHUTDOWN), &[]);
    env.d.send(Hdr::guest(CID, 1, 4, op::RST), &[]);
    env.d.send(Hdr::guest(CID, 1, 5, 99), &[]);
    let got = env.d.recv();
    let rsts: Vec<(u32, u32)> = got.iter().map(|(h, _)| (h.src_port, h.dst_port)).collect();
    assert!(got.iter().all(|(h, _)| is_rst(h)));
    assert_eq!(rsts, vec![(2, 1), (3, 1), (5, 1)]);
}

#[test]
fn spoofed_or_foreign_packets() {
    let mut env = Env::new();
    // Wrong source CID: dropped silently.
    env.d.send(
        Hdr {
            src_cid: 99,
            ..Hdr::guest(CID, 1, 2, op::REQUEST)
        },
        &[],
    );
    assert!(env.d.recv().is_empty());
    // Another destination CID: RST from that CID.
    env.d.send(
        Hdr {
            dst_cid: 7,
            ..Hdr::guest(CID, 1, 2, op::REQUEST)
        },
        &[],
    );
    let got = env.d.recv();
    assert_eq!(got.len(), 1);
    assert!(is_rst(&got[0].0));
    assert_eq!(got[0].0.src_cid, 7);
    // SEQPACKET (type 2) is not offered: RST.
    env.d.send(
        Hdr {
            type_: 2,
            ..Hdr::guest(CID, 1, 2, op::REQUEST)
        },
        &[],
    );
    assert!(is_rst(&env.d.recv()[0].0));
}

#[test]
fn duplicate_request_resets_the_connection() {
    let mut env = Env::new();
    let l = env.listen(10);
    assert_eq!(env.guest_connect(500, 10).op, op::RESPONSE);
    let (mut host, _) = l.accept().unwrap();
    let r = env.guest_connect(500, 10);
    assert!(is_rst(&r));
    let (_, eof) = read_available(&mut host);
    assert!(eof);
}

#[test]
fn protocol_violations_reset_the_connection() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect(52);
    // Data before RESPONSE.
    env.d.send(env.d.reply(&req, op::RW), b"early");
    assert!(is_rst(&env.d.recv()[0].0));
    assert!(read_available(&mut c).1);
    // Data after the guest's SHUTDOWN(SEND).
    let (mut c, req) = env.host_connect_accepted(53);
    env.d.send(
        Hdr {
            flags: SHUTDOWN_SEND,
            ..env.d.reply(&req, op::SHUTDOWN)
        },
        &[],
    );
    env.d.send(env.d.reply(&req, op::RW), b"late");
    assert!(env.d.recv().iter().any(|(h, _)| is_rst(h)));
    assert!(read_available(&mut c).1);
}

#[test]
fn guest_half_close_then_full_close() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect_accepted(60);
    env.d.send(env.d.reply(&req, op::RW), b"last words");
    env.d.send(
        Hdr {
            flags: SHUTDOWN_SEND,
            ..env.d.reply(&req, op::SHUTDOWN)
        },
        &[],
    );
    let (got, eof) = read_available(&mut c);
    assert_eq!(
        (got.as_slice(), eof),
        (&b"last words"[..], true),
        "host sees data then EOF"
    );
    // The other direction still works.
    c.write_all(b"reply").unwrap();
    let got = env.pump();
    assert_eq!(got[0].1, b"reply");
    // Full shutdown: the device answers with RST and closes the host side.
    env.d.send(
        Hdr {
            flags: SHUTDOWN_BOTH,
            ..env.d.reply(&req, op::SHUTDOWN)
        },
        &[],
    );
    assert!(env.d.recv().iter().any(|(h, _)| is_rst(h)));
    assert_eq!(env.d.dev().backend().connection_count(), 0);
    let mut b = [0u8; 1];
    assert!(matches!(
        c.write(&b)
            .and_then(|_| std::io::Read::read(&mut c, &mut b)),
        Err(_) | Ok(0)
    ));
}

#[test]
fn host_half_close_and_hangup() {
    let mut env = Env::new();
    let (c, req) = env.host_connect_accepted(61);
    let mut c = c;
    c.write_all(b"bye").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = env.pump();
    got.extend(env.pump());
    assert_eq!(got[0].1, b"bye");
    let sd = got
        .iter()
        .find(|(h, _)| h.op == op::SHUTDOWN)
        .expect("SHUTDOWN after EOF");
    assert_eq!(sd.0.flags, SHUTDOWN_SEND);
    // The host can still receive.
    env.d.send(env.d.reply(&req, op::RW), b"still here");
    assert_eq!(read_available(&mut c).0, b"still here");
    // Now the host goes away entirely: the guest is told both ways are shut.
    drop(c);
    let got = env.pump();
    let sd = got
        .iter()
        .find(|(h, _)| h.op == op::SHUTDOWN)
        .expect("second SHUTDOWN");
    assert_eq!(sd.0.flags & SHUTDOWN_BOTH, SHUTDOWN_BOTH & !SHUTDOWN_SEND);
    assert_eq!(
        env.d.dev().backend().connection_state(req.src_port, 61),
        Some(ConnState::Closing)
    );
    env.d.send(env.d.reply(&req, op::RST), &[]);
    assert_eq!(env.d.dev().backend().connection_count(), 0);
}

#[test]
fn host_hangup_delivers_pending_data_first() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect_accepted(62);
    c.write_all(&pattern(10_000, 1)).unwrap();
    drop(c);
    let mut data = vec![];
    let mut flags = 0;
    for _ in 0..10 {
        for (h, d) in env.pump() {
            if h.op == op::RW {
                data.extend(d);
            } else if h.op == op::SHUTDOWN {
                flags |= h.flags;
            }
        }
    }
    assert_eq!(data, pattern(10_000, 1));
    assert_eq!(flags, SHUTDOWN_BOTH);
    let _ = req;
}

#[test]
fn many_concurrent_connections_both_directions() {
    let mut env = Env::new();
    let l = env.listen(2000);
    let mut hosts = vec![];
    for i in 0..16u32 {
        assert_eq!(env.guest_connect(10_000 + i, 2000).op, op::RESPONSE);
        hosts.push(l.accept().unwrap().0);
    }
    let mut clients = vec![];
    for i in 0..16u32 {
        clients.push(env.host_connect_accepted(3000 + i));
    }
    // Everyone sends at once.
    for (i, h) in hosts.iter_mut().enumerate() {
        h.write_all(&pattern(3000, i as u8)).unwrap();
    }
    for (i, (c, _)) in clients.iter_mut().enumerate() {
        c.write_all(&pattern(3000, 100 + i as u8)).unwrap();
    }
    let mut by_port: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    for _ in 0..50 {
        for (h, d) in env.pump() {
            assert_eq!(h.op, op::RW, "unexpected {h:?}");
            by_port.entry(h.dst_port).or_default().extend(d);
        }
    }
    for i in 0..16u32 {
        assert_eq!(by_port[&(10_000 + i)], pattern(3000, i as u8));
    }
    for (i, (_, req)) in clients.iter().enumerate() {
        assert_eq!(by_port[&req.dst_port], pattern(3000, 100 + i as u8));
    }
    // And the guest writes to all of them.
    for i in 0..16u32 {
        env.d.send(
            Hdr::guest(CID, 10_000 + i, 2000, op::RW),
            &pattern(500, i as u8),
        );
    }
    for (i, h) in hosts.iter_mut().enumerate() {
        assert_eq!(read_available(h).0, pattern(500, i as u8));
    }
}

#[test]
fn connection_limit_is_enforced() {
    let mut env = Env::new();
    let l = env.listen(1);
    let mut hosts = vec![];
    for i in 0..MAX_CONNECTIONS as u32 {
        let r = env.guest_connect(20_000 + i, 1);
        assert_eq!(r.op, op::RESPONSE, "connection {i}");
        hosts.push(l.accept().unwrap().0);
    }
    assert!(is_rst(&env.guest_connect(30_000, 1)));
    // Host clients are refused too.
    let mut c = UnixStream::connect(&env.sock).unwrap();
    c.write_all(b"CONNECT 5\n").unwrap();
    assert!(env.pump().is_empty());
    env.pump();
    assert!(read_available(&mut c).1);
    // Freeing one makes room again.
    env.d.send(Hdr::guest(CID, 20_000, 1, op::RST), &[]);
    assert_eq!(env.guest_connect(30_000, 1).op, op::RESPONSE);
}

#[test]
fn device_reset_closes_every_host_connection() {
    let mut env = Env::new();
    let (mut c, _) = env.host_connect_accepted(70);
    let l = env.listen(71);
    env.guest_connect(1, 71);
    let (mut h, _) = l.accept().unwrap();
    mmio_write(
        &mut env.d.transport,
        u64::from(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS),
        0,
    );
    assert!(read_available(&mut c).1);
    assert!(read_available(&mut h).1);
    assert_eq!(env.d.dev().backend().connection_count(), 0);
    // The listener survives the reset.
    env.d.reprobe(0);
    env.d.fill_rx(8, 4096);
    let (c2, _) = env.host_connect(72);
    drop(c2);
}

#[test]
fn unanswered_host_connect_times_out() {
    let mut env = Env::new();
    let (mut c, req) = env.host_connect(80);
    std::thread::sleep(super::super::unix::CONNECT_TIMEOUT + std::time::Duration::from_millis(400));
    let got = env.pump();
    assert!(got
        .iter()
        .any(|(h, _)| is_rst(h) && h.src_port == req.src_port));
    // The host side sees the end once the muxer has dropped the connection, which a loaded
    // machine may see a moment after the RST: bounded retries, not a timed assertion.
    let mut eof = read_available(&mut c).1;
    for _ in 0..100 {
        if eof {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        env.pump();
        eof = read_available(&mut c).1;
    }
    assert!(
        eof,
        "the host's end of an unanswered connect was not closed"
    );
}

#[test]
fn stale_socket_is_replaced_and_other_files_are_not() {
    let dir = super::TempDir::new();
    let p = dir.0.join("s");
    drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
    assert!(exists(&p));
    let m = VsockMuxer::new(CID, &p).unwrap();
    drop(m);
    assert!(!exists(&p), "the socket is removed when the muxer goes");
    std::fs::write(&p, b"not a socket").unwrap();
    assert!(VsockMuxer::new(CID, &p).is_err());
    assert!(exists(&p));
}
