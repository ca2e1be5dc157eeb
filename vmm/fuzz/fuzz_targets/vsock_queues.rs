//! A hostile guest driving the vsock device with the real Unix-socket
//! backend: arbitrary descriptor chains (any address, length, flags, next,
//! indirect tables, loops), arbitrary packet headers and payloads on the tx
//! queue, arbitrary rx buffers, bogus ring indexes, interleaved with host
//! clients connecting, writing, reading and hanging up.
//!
//! Checked: no panic; the backend's buffering stays within its bounds; every
//! used element names a valid head with a length that fits the header.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;

use husk_vmm::devices::virtio::testing::{DESC_F_NEXT, DESC_F_WRITE};
use husk_vmm::devices::virtio::vsock::testing::{Hdr, VsockDriver, MEM_SIZE};
use husk_vmm::devices::virtio::vsock::unix::{CONN_TX_BUF_SIZE, MAX_CONNECTIONS};
use husk_vmm::devices::virtio::vsock::VsockMuxer;
use husk_vmm::devices::virtio::VIRTIO_RING_F_EVENT_IDX;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

const CID: u64 = 3;
/// Buffers live here; the fuzzer picks offsets inside (or, sometimes, outside).
const BUF_BASE: u64 = 0x20_0000;
const BUF_SPAN: u64 = 0x20_0000;

#[path = "common/input.rs"]
mod input;
use input::{Input, Layout};

const LAYOUT: Layout = Layout {
    mem_size: MEM_SIZE as u64,
    buf_base: BUF_BASE,
    buf_span: BUF_SPAN,
    header_len: 44,
};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("husk-vsock-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn check_used(d: &mut VsockDriver<VsockMuxer>) {
    for q in [&mut d.rxq, &mut d.txq] {
        while let Some((head, len)) = q.pop_used(&d.mem) {
            assert!(head < q.size, "used head {head} out of range");
            assert!(
                len == 0 || len >= 44,
                "used length {len} shorter than a header"
            );
            assert!(
                len <= 44 + 64 * 1024,
                "used length {len} past the packet limit"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data, LAYOUT);
    let Some(cfg) = input.byte() else { return };
    let sock = dir().join("v.sock");
    let lpath = PathBuf::from(format!("{}_1", sock.display()));
    let _ = std::fs::remove_file(&lpath);
    let listener = UnixListener::bind(&lpath).unwrap();
    listener.set_nonblocking(true).unwrap();
    let muxer = VsockMuxer::new(CID, &sock).unwrap();
    let features = if cfg & 1 != 0 {
        VIRTIO_RING_F_EVENT_IDX
    } else {
        0
    };
    let mut d = VsockDriver::new(CID, muxer, features);
    let mut hosts: Vec<UnixStream> = vec![];
    let mut clients: Vec<UnixStream> = vec![];
    let mut scratch = vec![0u8; 64 * 1024];

    while let Some(op) = input.byte() {
        match op % 12 {
            // A well-formed chain carrying a fuzzed header and payload.
            0..=3 => {
                let Some(hdr_bytes) = input.bytes(44).try_into().ok() else {
                    break;
                };
                let mut h = Hdr::from_bytes(hdr_bytes);
                // Keep most packets plausible so they reach deep states.
                if op & 0x10 == 0 {
                    h.src_cid = CID;
                    h.dst_cid = 2;
                    h.type_ = 1;
                    h.src_port %= 4;
                    h.dst_port %= 3;
                    h.op %= 8;
                }
                let n = usize::from(input.byte().unwrap_or(0)) * 64;
                let payload = input.bytes(n).to_vec();
                if op & 0x20 == 0 {
                    h.len = payload.len() as u32;
                }
                let Some(slot) = input.u16() else { break };
                let at = BUF_BASE + (u64::from(slot) * 64) % (BUF_SPAN - 0x2_0000);
                d.mem.write_slice(&h.to_bytes(), GuestAddress(at)).unwrap();
                d.mem.write_slice(&payload, GuestAddress(at + 44)).unwrap();
                let i = u16::from(input.byte().unwrap_or(0)) % 255;
                if payload.is_empty() {
                    d.txq.write_desc(&d.mem, i, at, 44, 0, 0);
                } else {
                    d.txq.write_desc(&d.mem, i, at, 44, DESC_F_NEXT, i + 1);
                    d.txq
                        .write_desc(&d.mem, i + 1, at + 44, payload.len() as u32, 0, 0);
                }
                d.txq.push_avail(&d.mem, i);
                d.txq.publish(&d.mem);
                d.dev().handle_tx_event();
            }
            // Raw descriptors on either queue.
            4 | 5 => {
                let q = if op & 0x10 == 0 {
                    &mut d.txq
                } else {
                    &mut d.rxq
                };
                input.raw_descriptors(q, &d.mem);
                if op & 0x10 == 0 {
                    d.dev().handle_tx_event();
                } else {
                    d.kick_rx();
                }
            }
            // Well-formed rx buffers.
            6 => {
                let n = input.byte().unwrap_or(1) % 32;
                let size = u32::from(input.u16().unwrap_or(4096)) % (64 * 1024 + 1);
                for k in 0..n {
                    let i = (u16::from(op) * 7 + u16::from(k)) % 256;
                    let at = BUF_BASE + BUF_SPAN + u64::from(i) * (64 * 1024 + 64);
                    d.rxq.write_desc(&d.mem, i, at, 44 + size, DESC_F_WRITE, 0);
                    d.rxq.push_avail(&d.mem, i);
                }
                d.rxq.publish(&d.mem);
                d.kick_rx();
            }
            // Host clients: connect with a (fuzzed) line, write, read, hang up.
            7 => {
                if clients.len() < 8 {
                    if let Ok(mut c) = UnixStream::connect(&sock) {
                        let n = usize::from(input.byte().unwrap_or(0) % 40);
                        let line = input.bytes(n).to_vec();
                        let _ = c.set_nonblocking(true);
                        let _ = c.write_all(if op & 0x10 == 0 {
                            b"CONNECT 1\n"
                        } else {
                            &line
                        });
                        clients.push(c);
                    }
                }
                d.pump();
            }
            8 => {
                let which = usize::from(input.byte().unwrap_or(0));
                let n = usize::from(input.u16().unwrap_or(0));
                let payload = input.bytes(n).to_vec();
                let pool = if which & 1 == 0 {
                    &mut clients
                } else {
                    &mut hosts
                };
                if !pool.is_empty() {
                    let k = which / 2 % pool.len();
                    let _ = pool[k].write(&payload);
                }
                d.pump();
            }
            9 => {
                let which = usize::from(input.byte().unwrap_or(0));
                let pool = if which & 1 == 0 {
                    &mut clients
                } else {
                    &mut hosts
                };
                if !pool.is_empty() {
                    let k = which / 2 % pool.len();
                    if which & 2 == 0 {
                        let _ = pool[k].read(&mut scratch);
                    } else {
                        pool.swap_remove(k);
                    }
                }
                d.pump();
            }
            // Accept guest connections on the host listener.
            10 => {
                while hosts.len() < 8 {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(true);
                            hosts.push(s);
                        }
                        Err(_) => break,
                    }
                }
                d.pump();
            }
            // Bogus ring indexes.
            _ => {
                let Some(idx) = input.u16() else { break };
                if op & 0x10 == 0 {
                    d.txq.set_avail_idx(idx);
                    d.txq.publish(&d.mem);
                    d.dev().handle_tx_event();
                } else {
                    d.rxq.set_avail_idx(idx);
                    d.rxq.publish(&d.mem);
                    d.kick_rx();
                }
            }
        }
        check_used(&mut d);
        let m = d.dev();
        let buffered = m.backend().tx_buffered();
        assert!(buffered <= MAX_CONNECTIONS * CONN_TX_BUF_SIZE as usize);
        assert!(m.backend().connection_count() <= MAX_CONNECTIONS);
    }
    drop(d);
    let _ = std::fs::remove_file(&lpath);
});
