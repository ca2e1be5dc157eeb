//! The whole device the way a guest driver sees it: MMIO registers, feature negotiation,
//! queue setup, notifications through the queue eventfds, replies from the worker thread,
//! interrupts through the irq eventfd, reset and re-activation.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{EntryOut, Opcode};
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::virtio::fs::{VirtioFs, HIPRIO_QUEUE, REQUEST_QUEUE};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::testing::{mmio_read, mmio_setup, mmio_write, Buf, DriverQueue};
use crate::devices::virtio::{VirtioDevice, STATUS_DRIVER_OK, VIRTIO_F_VERSION_1};

const CONFIG: u64 = VIRTIO_MMIO_CONFIG as u64;

/// Waits until `evt` has been written (the device raised its interrupt).
fn wait_irq(evt: &EventFd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pfd = libc::pollfd {
            fd: evt.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and its count; the return value is checked below.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n == 1 {
            let _ = evt.read();
            return;
        }
        assert!(Instant::now() < deadline, "no interrupt from the device");
    }
}

struct Guest {
    mem: GuestMemory,
    t: MmioTransport,
    dev: Arc<Mutex<VirtioFs>>,
    hq: DriverQueue,
    rq: DriverQueue,
}

impl Guest {
    fn new(dir: &std::path::Path, tag: &str, read_only: bool) -> Self {
        let spec = ShareSpec {
            tag: tag.into(),
            host_dir: dir.to_path_buf(),
            read_only,
            cache: CacheMode::Auto,
        };
        let share = ShareServer::new(spec.open().unwrap(), FdBudget::new(100)).unwrap();
        let dev = Arc::new(Mutex::new(VirtioFs::new(share, None).unwrap()));
        let mem = memory();
        let t = MmioTransport::new(mem.clone(), dev.clone()).unwrap();
        let hq = DriverQueue::new(&mem, 0x1_0000, 16);
        let rq = DriverQueue::new(&mem, 0x2_0000, 64);
        Self {
            mem,
            t,
            dev,
            hq,
            rq,
        }
    }

    fn setup(&mut self) -> u32 {
        mmio_setup(&mut self.t, &[&self.hq, &self.rq], VIRTIO_F_VERSION_1)
    }

    /// Sends `request` on queue `q` and waits for the reply.
    fn call(&mut self, q: usize, request: &[u8]) -> Reply {
        self.mem.write_slice(request, GuestAddress(REQ_AT)).unwrap();
        let bufs = [
            Buf {
                addr: REQ_AT,
                len: request.len() as u32,
                write: false,
            },
            Buf {
                addr: REPLY_AT,
                len: 4096,
                write: true,
            },
        ];
        let dq = if q == HIPRIO_QUEUE {
            &mut self.hq
        } else {
            &mut self.rq
        };
        dq.add_chain(&self.mem, &bufs).unwrap();
        dq.publish(&self.mem);
        self.t.queue_evts()[q].write(1).unwrap();
        wait_irq(self.t.interrupt_evt());
        let dq = if q == HIPRIO_QUEUE {
            &mut self.hq
        } else {
            &mut self.rq
        };
        let (_, len) = dq
            .pop_used(&self.mem)
            .expect("interrupt without a used buffer");
        let mut buf = vec![0u8; 4096];
        self.mem
            .read_slice(&mut buf, GuestAddress(REPLY_AT))
            .unwrap();
        Reply::parse(len, &buf)
    }
}

#[test]
fn registers_show_a_virtio_fs_device_with_its_tag() {
    let dir = TempDir::new().unwrap();
    let mut g = Guest::new(dir.as_path(), "my-share_1.0", false);
    assert_eq!(mmio_read(&mut g.t, u64::from(VIRTIO_MMIO_DEVICE_ID)), 26);
    let mut tag = [0u8; 36];
    g.t.read(CONFIG, &mut tag);
    assert_eq!(&tag[..12], b"my-share_1.0");
    assert!(tag[12..].iter().all(|&b| b == 0), "NUL padded");
    let mut n = [0u8; 4];
    g.t.read(CONFIG + 36, &mut n);
    assert_eq!(u32::from_le_bytes(n), 1, "num_request_queues");
    let mut past = [0xffu8; 8];
    g.t.read(CONFIG + 38, &mut past);
    assert_eq!(
        past,
        [0, 0, 0, 0, 0, 0, 0, 0],
        "bytes past the config read as zero"
    );
    // The guest cannot rewrite the tag.
    g.t.write(CONFIG, b"evil");
    g.t.read(CONFIG, &mut tag[..4]);
    assert_eq!(&tag[..4], b"my-s");
    mmio_write(&mut g.t, u64::from(VIRTIO_MMIO_QUEUE_SEL), 1);
    assert_eq!(
        mmio_read(&mut g.t, u64::from(VIRTIO_MMIO_QUEUE_NUM_MAX)),
        u32::from(crate::devices::virtio::fs::REQUEST_QUEUE_SIZE)
    );
    assert_eq!(g.dev.lock().unwrap().tag(), "my-share_1.0");
}

#[test]
fn device_serves_requests_on_its_worker_thread() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.as_path().join("f"), b"host data").unwrap();
    let mut g = Guest::new(dir.as_path(), "t", false);
    assert_ne!(g.setup() & STATUS_DRIVER_OK, 0);
    assert!(g.dev.lock().unwrap().is_activated());

    let r = g.call(REQUEST_QUEUE, &init_req(1));
    assert_eq!((r.errno(), r.header.unique), (0, 1));
    let r = g.call(REQUEST_QUEUE, &lookup_req(2, ROOT, "f"));
    assert_eq!(r.errno(), 0);
    let node = r.obj::<EntryOut>().nodeid;
    assert_eq!(g.dev.lock().unwrap().share().fs().budget().used(), 1);

    // FORGET goes on the high-priority queue and gets no reply.
    let r = g.call(
        HIPRIO_QUEUE,
        &req(Opcode::Forget, 3, node, &[&1u64.to_le_bytes()]),
    );
    assert_eq!(r.used_len, 0);
    assert_eq!(g.dev.lock().unwrap().share().fs().budget().used(), 0);

    // Garbage on the request queue does not stop the device.
    let r = g.call(REQUEST_QUEUE, &[0xffu8; 100]);
    assert_ne!(r.errno(), 0);
    let r = g.call(REQUEST_QUEUE, &lookup_req(4, ROOT, "f"));
    assert_eq!(r.errno(), 0);
    assert_eq!(g.dev.lock().unwrap().share().fs().budget().used(), 1);
    g.dev.lock().unwrap().shutdown();
}

#[test]
fn reset_stops_the_worker_and_drops_open_files() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.as_path().join("f"), b"x").unwrap();
    let mut g = Guest::new(dir.as_path(), "t", false);
    g.setup();
    assert_eq!(g.call(REQUEST_QUEUE, &init_req(1)).errno(), 0);
    assert_eq!(g.call(REQUEST_QUEUE, &lookup_req(2, ROOT, "f")).errno(), 0);
    assert_eq!(g.dev.lock().unwrap().share().fs().budget().used(), 1);

    mmio_write(&mut g.t, u64::from(VIRTIO_MMIO_STATUS), 0);
    assert_eq!(mmio_read(&mut g.t, u64::from(VIRTIO_MMIO_STATUS)), 0);
    assert!(!g.dev.lock().unwrap().is_activated());
    assert_eq!(g.dev.lock().unwrap().share().fs().budget().used(), 0);

    // A new driver instance sets the device up again on fresh queues.
    g.hq = DriverQueue::new(&g.mem, 0x1_0000, 16);
    g.rq = DriverQueue::new(&g.mem, 0x2_0000, 64);
    assert_ne!(g.setup() & STATUS_DRIVER_OK, 0);
    assert_eq!(g.call(REQUEST_QUEUE, &init_req(3)).errno(), 0);
    assert_eq!(g.call(REQUEST_QUEUE, &lookup_req(4, ROOT, "f")).errno(), 0);
    g.dev.lock().unwrap().shutdown();
}

#[test]
fn read_only_device_refuses_writes() {
    let dir = TempDir::new().unwrap();
    let mut g = Guest::new(dir.as_path(), "ro", true);
    g.setup();
    assert_eq!(g.call(REQUEST_QUEUE, &init_req(1)).errno(), 0);
    let r = g.call(REQUEST_QUEUE, &create_req(2, ROOT, "x"));
    assert_eq!(r.errno(), libc::EROFS);
    assert!(!dir.as_path().join("x").exists());
    g.dev.lock().unwrap().shutdown();
}

/// F1 through a device reset: the share's root lies two levels below a directory the guest can
/// write through another share; a parent is swapped for a symlink to a host directory, then the
/// driver resets the device (status 0) and, without any INIT, looks a name up in the root. At
/// df579e2 the reset re-opened the root by path and the lookup found the host directory's file.
#[test]
fn reset_does_not_reopen_the_root_by_path() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.as_path();
    std::fs::create_dir_all(t.join("app/web/data")).unwrap();
    std::fs::create_dir_all(t.join("host/data")).unwrap();
    std::fs::write(t.join("host/data/secret"), b"x").unwrap();
    let mut g = Guest::new(&t.join("app/web/data"), "d", false);
    g.setup();
    assert_eq!(g.call(REQUEST_QUEUE, &init_req(1)).errno(), 0);

    std::fs::rename(t.join("app/web"), t.join("app/web.old")).unwrap();
    std::os::unix::fs::symlink(t.join("host"), t.join("app/web")).unwrap();
    mmio_write(&mut g.t, u64::from(VIRTIO_MMIO_STATUS), 0);
    g.hq = DriverQueue::new(&g.mem, 0x1_0000, 16);
    g.rq = DriverQueue::new(&g.mem, 0x2_0000, 64);
    assert_ne!(g.setup() & STATUS_DRIVER_OK, 0);
    let r = g.call(REQUEST_QUEUE, &lookup_req(2, ROOT, "secret"));
    // A miss is ENOENT or a negative entry (node id 0).
    let found = r.errno() == 0 && r.obj::<EntryOut>().nodeid != 0;
    assert!(
        !found,
        "the reset re-rooted the share in the host directory"
    );
    g.dev.lock().unwrap().shutdown();
}
