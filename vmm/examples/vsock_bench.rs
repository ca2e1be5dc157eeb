//! In-process vsock throughput harness (used by scripts/bench-vsock.sh).
//!
//! Three threads, as in a real VM:
//! - "vmm": an event-manager loop running the real vsock device with the
//!   real Unix-socket backend, woken by the queue eventfds (what KVM's
//!   ioeventfds signal) and raising its interrupt eventfd (the irqfd). Its
//!   CPU time (user + system, CLOCK_THREAD_CPUTIME_ID) is what we measure.
//! - "guest": a simulated Linux driver on split virtqueues in guest memory,
//!   with EVENT_IDX notification suppression, single-descriptor rx buffers
//!   and Linux's credit-update rule.
//! - "host": the peer on the Unix socket.
//!
//! Baseline in the same run: one thread pushing the same byte count through
//! a Unix socket pair with the same chunk size (the copy the device cannot
//! avoid), also per CPU second of that thread.
//!
//! Usage: vsock_bench [--mib N] [--rx-buf BYTES]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use husk_vmm::devices::virtio::mmio::MmioTransport;
use husk_vmm::devices::virtio::testing::{
    guest_memory, mmio_setup, Buf, DriverQueue, DESC_F_WRITE,
};
use husk_vmm::devices::virtio::vsock::testing::Hdr;
use husk_vmm::devices::virtio::vsock::{op, Vsock, VsockMuxer, VSOCK_QUEUE_SIZE};
use husk_vmm::devices::virtio::{
    GuestMemory, MmioInterrupt, STATUS_DRIVER_OK, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const CID: u64 = 3;
const PORT: u32 = 5201;
const HDR: u64 = 44;
const TX_PKT: usize = 64 * 1024;
const GUEST_BUF_ALLOC: u32 = 256 * 1024;
const MEM: usize = 256 << 20;
const RX_BASE: u64 = 0x100_0000;
const TX_BASE: u64 = 0x800_0000;

const TX_BUFS: u64 = 128;

fn tx_buf_addr(i: u64) -> u64 {
    TX_BASE + i * (HDR + TX_PKT as u64 + 64)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Blocks until `fd` is readable or `ms` passed.
fn wait_fd(fd: i32, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes only the one pollfd we pass.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// The guest side of one run.
struct Guest {
    mem: GuestMemory,
    rxq: DriverQueue,
    txq: DriverQueue,
    tx_notify: EventFd,
    rx_notify: EventFd,
    irq: Arc<MmioInterrupt>,
    rx_buf: u32,
    last_used_rx: u16,
    last_used_tx: u16,
    tx_free: Vec<u64>,
    tx_inflight: std::collections::HashMap<u16, u64>,
    local_port: u32,
    peer_port: u32,
    // Credit.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
}

impl Guest {
    fn kick(&self, q: &DriverQueue, evt: &EventFd, old: u16, new: u16) {
        // vring_need_event(): notify only if avail_event lies in [old, new).
        let ev = q.avail_event(&self.mem);
        if new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old) {
            evt.write(1).unwrap();
        }
    }

    /// Keeps every rx descriptor posted; descriptor i always owns the
    /// buffer at RX_BASE + i * stride.
    fn fill_rx(&mut self) {
        let stride = HDR + u64::from(self.rx_buf);
        let old = self.rx_avail_idx();
        let mut added = 0u16;
        while self.rxq.free_descs() > 0 {
            let placeholder = Buf {
                addr: RX_BASE,
                len: 0,
                write: true,
            };
            let head = self.rxq.add_chain(&self.mem, &[placeholder]).unwrap();
            let addr = RX_BASE + u64::from(head) * stride;
            self.rxq.write_desc(
                &self.mem,
                head,
                addr,
                HDR as u32 + self.rx_buf,
                DESC_F_WRITE,
                0,
            );
            added += 1;
        }
        if added > 0 {
            self.rxq.publish(&self.mem);
            fence(Ordering::SeqCst);
            self.kick(&self.rxq, &self.rx_notify, old, old.wrapping_add(added));
        }
    }

    fn rx_addr(&self, head: u16) -> u64 {
        RX_BASE + u64::from(head) * (HDR + u64::from(self.rx_buf))
    }

    fn rx_avail_idx(&self) -> u16 {
        self.mem
            .read_obj::<u16>(GuestAddress(self.rxq.avail + 2))
            .unwrap()
    }

    fn send(&mut self, mut h: Hdr, len: usize) {
        h.buf_alloc = GUEST_BUF_ALLOC;
        h.fwd_cnt = self.fwd_cnt;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        h.len = len as u32;
        let addr = self.tx_free.pop().expect("no tx buffer");
        self.mem
            .write_slice(&h.to_bytes(), GuestAddress(addr))
            .unwrap();
        let mut bufs = vec![Buf {
            addr,
            len: HDR as u32,
            write: false,
        }];
        if len > 0 {
            bufs.push(Buf {
                addr: addr + HDR,
                len: len as u32,
                write: false,
            });
        }
        let head = self
            .txq
            .add_chain(&self.mem, &bufs)
            .expect("tx descriptors");
        self.tx_inflight.insert(head, addr);
        let old = self
            .mem
            .read_obj::<u16>(GuestAddress(self.txq.avail + 2))
            .unwrap();
        self.txq.publish(&self.mem);
        fence(Ordering::SeqCst);
        self.kick(&self.txq, &self.tx_notify, old, old.wrapping_add(1));
        self.tx_cnt = self.tx_cnt.wrapping_add(len as u32);
    }

    fn header(&self, op_: u16) -> Hdr {
        let mut h = Hdr::guest(CID, self.local_port, self.peer_port, op_);
        h.buf_alloc = GUEST_BUF_ALLOC;
        h
    }

    fn reap_tx(&mut self) {
        while let Some((head, _)) = self.txq.pop_used(&self.mem) {
            if let Some(a) = self.tx_inflight.remove(&head) {
                self.tx_free.push(a);
            }
        }
        self.last_used_tx = self.txq.used_idx(&self.mem);
        self.txq.set_used_event(&self.mem, self.last_used_tx);
    }

    /// Takes delivered rx packets; `sink` sees each (header, payload address).
    fn reap_rx(&mut self, mut sink: impl FnMut(&Hdr, u64)) -> usize {
        let mut n = 0;
        while let Some((head, _len)) = self.rxq.pop_used(&self.mem) {
            let addr = self.rx_addr(head);
            let mut raw = [0u8; 44];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let h = Hdr::from_bytes(&raw);
            if h.src_port == self.peer_port || self.peer_port == 0 {
                self.peer_buf_alloc = h.buf_alloc;
                self.peer_fwd_cnt = h.fwd_cnt;
            }
            sink(&h, addr + HDR);
            n += 1;
        }
        self.last_used_rx = self.rxq.used_idx(&self.mem);
        self.rxq.set_used_event(&self.mem, self.last_used_rx);
        n
    }

    fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Sleeps until the device interrupts, unless it already used more
    /// buffers (used_event was just re-armed: this is virtqueue_enable_cb).
    fn wait_irq(&self) {
        fence(Ordering::SeqCst);
        if self.rxq.used_idx(&self.mem) != self.last_used_rx
            || self.txq.used_idx(&self.mem) != self.last_used_tx
        {
            return;
        }
        wait_fd(self.irq.eventfd().as_raw_fd(), 20);
        let _ = self.irq.eventfd().read();
        self.irq.ack(self.irq.status());
    }
}

struct Setup {
    guest: Guest,
    dev: Arc<Mutex<Vsock<VsockMuxer>>>,
    _transport: MmioTransport,
    sock: std::path::PathBuf,
    dir: std::path::PathBuf,
}

fn setup(rx_buf: u32, tag: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("husk-vsock-bench-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("v.sock");
    let mem = guest_memory(MEM);
    let muxer = VsockMuxer::new(CID, &sock).unwrap();
    let dev = Arc::new(Mutex::new(Vsock::new(CID, muxer).unwrap()));
    let mut transport = MmioTransport::new(mem.clone(), dev.clone()).unwrap();
    let step = DriverQueue::footprint(VSOCK_QUEUE_SIZE);
    let rxq = DriverQueue::new(&mem, 0x1000, VSOCK_QUEUE_SIZE);
    let txq = DriverQueue::new(&mem, 0x1000 + step, VSOCK_QUEUE_SIZE);
    let evq = DriverQueue::new(&mem, 0x1000 + 2 * step, VSOCK_QUEUE_SIZE);
    let status = mmio_setup(
        &mut transport,
        &[&rxq, &txq, &evq],
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX,
    );
    assert_ne!(status & STATUS_DRIVER_OK, 0, "device did not activate");
    let tx_free = (0..TX_BUFS).map(tx_buf_addr).collect();
    let guest = Guest {
        mem,
        rxq,
        txq,
        tx_notify: transport.queue_evts()[1].try_clone().unwrap(),
        rx_notify: transport.queue_evts()[0].try_clone().unwrap(),
        irq: transport.interrupt().clone(),
        rx_buf,
        last_used_rx: 0,
        last_used_tx: 0,
        tx_free,
        tx_inflight: Default::default(),
        local_port: 40_000,
        peer_port: 0,
        peer_buf_alloc: 0,
        peer_fwd_cnt: 0,
        tx_cnt: 0,
        fwd_cnt: 0,
        last_fwd_cnt_sent: 0,
    };
    Setup {
        guest,
        dev,
        _transport: transport,
        sock,
        dir,
    }
}

/// Runs the device's event loop until `stop`; returns its thread CPU time.
fn spawn_vmm(
    dev: Arc<Mutex<Vsock<VsockMuxer>>>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
        em.add_subscriber(dev);
        let start = thread_cpu();
        while !stop.load(Ordering::Relaxed) {
            em.run_with_timeout(20).unwrap();
        }
        thread_cpu() - start
    })
}

/// Order-sensitive stream checksum that does not depend on how the stream
/// was cut into reads: a byte sum and a position-weighted byte sum.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sum {
    n: u64,
    s1: u64,
    s2: u64,
}

fn checksum(mut acc: Sum, data: &[u8]) -> Sum {
    let mut s1 = 0u64;
    let mut s2 = 0u64;
    for (i, &b) in data.iter().enumerate() {
        s1 = s1.wrapping_add(u64::from(b));
        s2 = s2.wrapping_add((i as u64 + 1).wrapping_mul(u64::from(b)));
    }
    acc.s2 = acc.s2.wrapping_add(s2).wrapping_add(acc.n.wrapping_mul(s1));
    acc.s1 = acc.s1.wrapping_add(s1);
    acc.n += data.len() as u64;
    acc
}

fn pattern_chunk(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

struct Result {
    bytes: u64,
    wall: Duration,
    vmm_cpu: Duration,
}

fn guest_to_host(total: u64, rx_buf: u32) -> Result {
    let Setup {
        mut guest,
        dev,
        _transport,
        sock,
        dir,
    } = setup(rx_buf, "g2h");
    let listener = UnixListener::bind(format!("{}_{PORT}", sock.display())).unwrap();
    let host = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let (mut n, mut sum) = (0u64, Sum::default());
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                k => {
                    sum = checksum(sum, &buf[..k]);
                    n += k as u64;
                }
            }
        }
        (n, sum)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let vmm = spawn_vmm(dev, stop.clone());
    guest.fill_rx();
    guest.peer_port = PORT;
    let req = guest.header(op::REQUEST);
    guest.send(req, 0);
    while guest.peer_buf_alloc == 0 {
        guest.wait_irq();
        guest.reap_rx(|_, _| {});
        guest.fill_rx();
    }
    // Fill every tx buffer with the pattern once; the payload repeats.
    let chunk = pattern_chunk(TX_PKT);
    for i in 0..TX_BUFS {
        guest
            .mem
            .write_slice(&chunk, GuestAddress(tx_buf_addr(i) + HDR))
            .unwrap();
    }
    let (mut sent, mut expect) = (0u64, Sum::default());
    let start = Instant::now();
    while sent < total {
        guest.reap_tx();
        guest.reap_rx(|_, _| {});
        guest.fill_rx();
        let mut progressed = false;
        while sent < total && !guest.tx_free.is_empty() && guest.txq.free_descs() >= 2 {
            let n = (TX_PKT as u64)
                .min(total - sent)
                .min(u64::from(guest.credit())) as usize;
            if n == 0 {
                break;
            }
            let h = guest.header(op::RW);
            guest.send(h, n);
            expect = checksum(expect, &chunk[..n]);
            sent += n as u64;
            progressed = true;
        }
        if !progressed {
            guest.wait_irq();
        }
    }
    while guest.tx_free.is_empty() || guest.txq.free_descs() == 0 {
        guest.reap_tx();
        guest.wait_irq();
    }
    let mut h = guest.header(op::SHUTDOWN);
    h.flags = 3;
    guest.send(h, 0);
    let (got, sum) = host.join().unwrap();
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let vmm_cpu = vmm.join().unwrap();
    assert_eq!(got, total, "host received {got} of {total} bytes");
    assert_eq!(sum, expect, "guest->host stream corrupted");
    let _ = std::fs::remove_dir_all(dir);
    Result {
        bytes: total,
        wall,
        vmm_cpu,
    }
}

fn host_to_guest(total: u64, rx_buf: u32) -> Result {
    let Setup {
        mut guest,
        dev,
        _transport,
        sock,
        dir,
    } = setup(rx_buf, "h2g");
    let stop = Arc::new(AtomicBool::new(false));
    let vmm = spawn_vmm(dev, stop.clone());
    guest.fill_rx();
    let host = thread::spawn(move || {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(format!("CONNECT {PORT}\n").as_bytes()).unwrap();
        let mut line = [0u8; 32];
        let mut n = 0;
        while n == 0 || line[n - 1] != b'\n' {
            n += s.read(&mut line[n..n + 1]).unwrap();
        }
        let chunk = pattern_chunk(256 * 1024);
        let (mut sent, mut sum) = (0u64, Sum::default());
        while sent < total {
            let k = (chunk.len() as u64).min(total - sent) as usize;
            s.write_all(&chunk[..k]).unwrap();
            sum = checksum(sum, &chunk[..k]);
            sent += k as u64;
        }
        sum
    });
    // Wait for the REQUEST and accept it.
    while guest.peer_port == 0 {
        guest.wait_irq();
        let mut req = None;
        guest.reap_rx(|h, _| {
            if h.op == op::REQUEST {
                req = Some(*h);
            }
        });
        if let Some(r) = req {
            guest.peer_port = r.src_port;
            guest.local_port = r.dst_port;
            let h = guest.header(op::RESPONSE);
            guest.send(h, 0);
        }
        guest.fill_rx();
    }
    let start = Instant::now();
    let (mut got, mut sum) = (0u64, Sum::default());
    let mut scratch = vec![0u8; 64 * 1024];
    while got < total {
        let mut bytes = 0u32;
        let mem = guest.mem.clone();
        let n = guest.reap_rx(|h, data| {
            if h.op == op::RW {
                let buf = &mut scratch[..h.len as usize];
                mem.read_slice(buf, GuestAddress(data)).unwrap();
                sum = checksum(sum, buf);
                bytes += h.len;
            }
        });
        got += u64::from(bytes);
        // The application read it all: Linux's rule for a credit update.
        guest.fwd_cnt = guest.fwd_cnt.wrapping_add(bytes);
        guest.reap_tx();
        if GUEST_BUF_ALLOC - guest.fwd_cnt.wrapping_sub(guest.last_fwd_cnt_sent) < 64 * 1024
            && !guest.tx_free.is_empty()
            && guest.txq.free_descs() > 0
        {
            let h = guest.header(op::CREDIT_UPDATE);
            guest.send(h, 0);
        }
        guest.fill_rx();
        if n == 0 {
            guest.wait_irq();
        }
    }
    let wall = start.elapsed();
    let expect = host.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let vmm_cpu = vmm.join().unwrap();
    assert_eq!(sum, expect, "host->guest stream corrupted");
    let _ = std::fs::remove_dir_all(dir);
    Result {
        bytes: got,
        wall,
        vmm_cpu,
    }
}

/// The same bytes through a plain Unix socket pair: writer thread CPU.
fn baseline(total: u64, chunk: usize) -> Result {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while b.read(&mut buf).unwrap() > 0 {}
    });
    let data = pattern_chunk(chunk);
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let mut sent = 0u64;
    while sent < total {
        a.write_all(&data).unwrap();
        sent += chunk as u64;
    }
    let cpu = thread_cpu() - cpu0;
    drop(a);
    reader.join().unwrap();
    Result {
        bytes: sent,
        wall: start.elapsed(),
        vmm_cpu: cpu,
    }
}

fn gbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

fn report(name: &str, r: &Result, base: &Result) {
    let per_cpu = gbit(r.bytes, r.vmm_cpu);
    println!(
        "{name:<28} {:>7.1} Gbit/s per VMM CPU-s  ({:>5.1} Gbit/s wall, VMM thread {:>3.0}% busy)  \
         target 20: {:.2}x  Firecracker 12.1: {:.2}x  vs raw socket copy: {:.2}x",
        per_cpu,
        gbit(r.bytes, r.wall),
        100.0 * r.vmm_cpu.as_secs_f64() / r.wall.as_secs_f64(),
        per_cpu / 20.0,
        per_cpu / 12.1,
        per_cpu / gbit(base.bytes, base.vmm_cpu),
    );
}

fn main() {
    let mut mib = 2048u64;
    let mut rx_buf = 4096u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--mib", Some(v)) => mib = v,
            ("--rx-buf", Some(v)) => rx_buf = v as u32,
            _ => {
                eprintln!("usage: vsock_bench [--mib N] [--rx-buf BYTES]");
                std::process::exit(2);
            }
        }
    }
    let total = mib << 20;
    let base64 = baseline(total, TX_PKT);
    let base_rx = baseline(total, rx_buf as usize);
    println!(
        "baseline: raw Unix socket copy, {} MiB: {:.1} Gbit/s per CPU-s in 64 KiB writes, {:.1} in {} B writes",
        mib,
        gbit(base64.bytes, base64.vmm_cpu),
        gbit(base_rx.bytes, base_rx.vmm_cpu),
        rx_buf
    );
    let g2h = guest_to_host(total, rx_buf);
    report("guest->host (64 KiB pkts)", &g2h, &base64);
    let h2g = host_to_guest(total, rx_buf);
    report(&format!("host->guest ({rx_buf} B rx bufs)"), &h2g, &base_rx);
}
