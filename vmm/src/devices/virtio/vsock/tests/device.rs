//! Queue handling against a test-double backend: config, both queue
//! directions, notifications, malformed chains, reset, event loop plumbing.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueT;
use virtio_vsock::packet::PKT_HEADER_SIZE;
use vm_memory::{Bytes, GuestAddress};

use super::CID;
use crate::devices::virtio::testing::{
    mmio_read, mmio_write, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
};
use crate::devices::virtio::vsock::testing::{Hdr, RxLayout, TestBackend, VsockDriver};
use crate::devices::virtio::vsock::{op, Vsock, VsockError, RXQ, TXQ};
use crate::devices::virtio::{
    ActiveQueue, GuestMemory, InterruptKind, MmioInterrupt, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

fn driver() -> VsockDriver<TestBackend> {
    VsockDriver::new(CID, TestBackend::new(), 0)
}

fn hdr(op_: u16) -> Hdr {
    Hdr::guest(CID, 1000, 2000, op_)
}

#[test]
fn invalid_cids_are_refused() {
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        assert!(matches!(
            Vsock::new(cid, TestBackend::new()),
            Err(VsockError::InvalidCid(_))
        ));
    }
    assert!(Vsock::new(3, TestBackend::new()).is_ok());
}

#[test]
fn identity_and_config_space() {
    let mut d = VsockDriver::new(0x1234_5678, TestBackend::new(), 0);
    assert_eq!(
        mmio_read(&mut d.transport, u64::from(VIRTIO_MMIO_DEVICE_ID)),
        19
    );
    let mut b = [0u8; 8];
    use crate::devices::bus::BusDevice;
    d.transport.read(0x100, &mut b);
    assert_eq!(u64::from_le_bytes(b), 0x1234_5678);
    let mut b = [0u8; 4];
    d.transport.read(0x104, &mut b);
    assert_eq!(b, [0; 4]);
    d.transport.read(0x106, &mut b);
    assert_eq!(b, [0; 4], "reads past the 8-byte config are zero");
    let mut b = [0u8; 1];
    d.transport.read(0x100, &mut b);
    assert_eq!(b, [0x78]);
    // Read-only: writes change nothing.
    d.transport.write(0x100, &[9; 8]);
    let mut b = [0u8; 8];
    d.transport.read(0x100, &mut b);
    assert_eq!(u64::from_le_bytes(b), 0x1234_5678);
    let dev = d.dev();
    assert_eq!(
        dev.avail_features(),
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    );
}

#[test]
fn tx_packets_reach_backend_and_raise_interrupt() {
    let mut d = driver();
    d.send(hdr(op::REQUEST), &[]);
    d.send(hdr(op::RW), b"hello");
    let dev = d.dev();
    let sent = &dev.backend().sent;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0.op, op::REQUEST);
    assert_eq!(sent[1].0.len, 5);
    assert_eq!(sent[1].1, b"hello");
    drop(dev);
    assert_eq!(d.take_interrupt(), InterruptKind::Queue as u32);
    assert_eq!(d.txq.free_descs(), 256, "all tx buffers were returned");
}

#[test]
fn tx_header_and_data_in_one_descriptor() {
    let mut d = driver();
    let mut h = hdr(op::RW);
    h.len = 3;
    let addr = 0x20_0000;
    d.mem
        .write_slice(&h.to_bytes(), GuestAddress(addr))
        .unwrap();
    d.mem
        .write_slice(b"xyz", GuestAddress(addr + PKT_HEADER_SIZE as u64))
        .unwrap();
    d.txq
        .write_desc(&d.mem, 0, addr, PKT_HEADER_SIZE as u32 + 3, 0, 0);
    d.txq.push_avail(&d.mem, 0);
    d.txq.publish(&d.mem);
    d.dev().handle_tx_event();
    assert_eq!(d.dev().backend().sent[0].1, b"xyz");
}

#[test]
fn tx_packet_spread_over_many_descriptors_is_gathered() {
    let mut d = driver();
    let mut h = hdr(op::RW);
    h.len = 10;
    let raw = h.to_bytes();
    let base = 0x20_0000u64;
    // Header split 20 + 24 bytes, payload 3 + 7 bytes, all scattered.
    let parts: [(u64, &[u8]); 4] = [
        (base, &raw[..20]),
        (base + 0x1000, &raw[20..]),
        (base + 0x2000, b"abc"),
        (base + 0x3000, b"defghij"),
    ];
    for (i, (addr, bytes)) in parts.iter().enumerate() {
        d.mem.write_slice(bytes, GuestAddress(*addr)).unwrap();
        let last = i + 1 == parts.len();
        let flags = if last { 0 } else { DESC_F_NEXT };
        d.txq.write_desc(
            &d.mem,
            50 + i as u16,
            *addr,
            bytes.len() as u32,
            flags,
            51 + i as u16,
        );
    }
    d.txq.push_avail(&d.mem, 50);
    d.txq.publish(&d.mem);
    d.dev().handle_tx_event();
    let dev = d.dev();
    let sent = &dev.backend().sent;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, h);
    assert_eq!(sent[0].1, b"abcdefghij");
}

#[test]
fn rx_packets_fill_buffers_in_both_layouts() {
    for layout in [RxLayout::Single, RxLayout::Split] {
        let mut d = driver();
        d.rx_layout = layout;
        d.fill_rx(4, 16);
        {
            let mut dev = d.dev();
            let b = dev.backend_mut();
            b.to_guest.push_back((
                Hdr {
                    op: op::RESPONSE,
                    ..hdr(0)
                },
                vec![],
            ));
            b.to_guest.push_back((
                Hdr {
                    op: op::RW,
                    ..hdr(0)
                },
                b"0123456789abcdefOVERFLOW".to_vec(),
            ));
        }
        d.pump();
        let got = d.recv();
        assert_eq!(got.len(), 2, "{layout:?}");
        assert_eq!(got[0].0.op, op::RESPONSE);
        // The double truncates to the buffer; the device reports header + len.
        assert_eq!(got[1].1, b"0123456789abcdef");
        assert_eq!(d.rx_outstanding(), 2);
    }
}

#[test]
fn rx_waits_for_buffers_and_arms_notification() {
    let mut d = driver();
    d.dev()
        .backend_mut()
        .to_guest
        .push_back((hdr(op::RST), vec![]));
    d.pump();
    assert!(d.recv().is_empty());
    // Out of buffers with a packet pending: notifications must be on.
    assert_eq!(d.rxq.used_flags(&d.mem) & 1, 0);
    d.fill_rx(1, 64);
    d.kick_rx();
    let got = d.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, op::RST);
}

#[test]
fn event_idx_arms_avail_event_and_suppresses_interrupts() {
    let mut d = VsockDriver::with_event_idx(CID, TestBackend::new());
    d.dev()
        .backend_mut()
        .to_guest
        .push_back((hdr(op::RST), vec![]));
    d.pump();
    // avail_event = next avail (0): notify on the very next buffer.
    assert_eq!(d.rxq.avail_event(&d.mem), 0);
    d.take_interrupt();
    // used_event far away: the device must not interrupt for a used tx.
    d.txq.set_used_event(&d.mem, 100);
    d.send(hdr(op::RW), b"a");
    assert_eq!(d.take_interrupt(), 0);
    // used_event = 1: the second used element crosses it.
    d.txq.set_used_event(&d.mem, 1);
    d.send(hdr(op::RW), b"b");
    assert_eq!(d.take_interrupt(), InterruptKind::Queue as u32);
    // tx: after processing, avail_event tracks the next expected index.
    assert_eq!(d.txq.avail_event(&d.mem), 2);
}

/// Puts a raw chain (descriptors written as given) on the tx queue.
fn raw_tx(d: &mut VsockDriver<TestBackend>, descs: &[(u64, u32, u16, u16)], head: u16) {
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        d.txq
            .write_desc(&d.mem, 200 + i as u16, addr, len, flags, next);
    }
    d.txq.push_avail(&d.mem, head);
    d.txq.publish(&d.mem);
}

#[test]
fn malformed_tx_chains_are_dropped_and_later_packets_still_work() {
    let mut d = driver();
    let good = 0x30_0000u64;
    let mut h = hdr(op::RW);
    h.len = 100;
    d.mem
        .write_slice(&h.to_bytes(), GuestAddress(good))
        .unwrap();
    let hl = PKT_HEADER_SIZE as u32;
    let end = super::super::testing::MEM_SIZE as u64;
    type RawChain = Vec<(u64, u32, u16, u16)>;
    let cases: Vec<(&str, RawChain, u16)> = vec![
        ("write-only header", vec![(good, hl, DESC_F_WRITE, 0)], 200),
        ("header too short", vec![(good, hl - 1, 0, 0)], 200),
        ("header outside memory", vec![(end - 8, hl, 0, 0)], 200),
        (
            "header address overflow",
            vec![(u64::MAX - 4, hl, 0, 0)],
            200,
        ),
        (
            "len beyond data descriptor",
            vec![(good, hl, DESC_F_NEXT, 201), (good + 64, 10, 0, 0)],
            200,
        ),
        (
            "data outside memory",
            vec![(good, hl, DESC_F_NEXT, 201), (end - 50, 100, 0, 0)],
            200,
        ),
        (
            "data write-only",
            vec![
                (good, hl, DESC_F_NEXT, 201),
                (good + 64, 100, DESC_F_WRITE, 0),
            ],
            200,
        ),
        ("missing data descriptor", vec![(good, hl, 0, 0)], 200),
        ("next out of range", vec![(good, hl, DESC_F_NEXT, 999)], 200),
        ("head out of range", vec![], 4000),
        (
            "bogus indirect table",
            vec![(good, 17, DESC_F_INDIRECT, 0)],
            200,
        ),
        (
            "indirect table outside memory",
            vec![(end - 16, 64, DESC_F_INDIRECT, 0)],
            200,
        ),
    ];
    for (name, descs, head) in cases {
        raw_tx(&mut d, &descs, head);
        d.dev().handle_tx_event();
        assert!(
            d.dev().backend().sent.is_empty(),
            "{name}: packet must be dropped"
        );
        assert!(d.active(), "{name}: device must stay up");
    }
    // A chain that loops is cut off after queue-size descriptors (256 x 44
    // bytes here), far short of the 60000 bytes its header promises.
    h.len = 60_000;
    d.mem
        .write_slice(&h.to_bytes(), GuestAddress(good))
        .unwrap();
    raw_tx(&mut d, &[(good, hl, DESC_F_NEXT, 200)], 200);
    d.dev().handle_tx_event();
    assert!(
        d.dev().backend().sent.is_empty(),
        "looping chain must be dropped"
    );
    // An oversized packet (len > 64 KiB) is dropped too.
    h.len = 64 * 1024 + 1;
    d.mem
        .write_slice(&h.to_bytes(), GuestAddress(good))
        .unwrap();
    raw_tx(
        &mut d,
        &[(good, hl, DESC_F_NEXT, 201), (good + 64, 70_000, 0, 0)],
        200,
    );
    d.dev().handle_tx_event();
    assert!(d.dev().backend().sent.is_empty());
    d.send(hdr(op::RW), b"still alive");
    assert_eq!(d.dev().backend().sent.len(), 1);
    assert_eq!(d.dev().backend().sent[0].1, b"still alive");
}

#[test]
fn malformed_rx_buffers_are_skipped() {
    let mut d = driver();
    let addr = 0x30_0000u64;
    // Read-only buffer, then one too small for a header, then a good one.
    d.rxq.write_desc(&d.mem, 10, addr, 4096, 0, 0);
    d.rxq.write_desc(&d.mem, 11, addr, 20, DESC_F_WRITE, 0);
    d.rxq
        .write_desc(&d.mem, 12, addr + 4096, 4096, DESC_F_WRITE, 0);
    for head in [10, 11, 12] {
        d.rxq.push_avail(&d.mem, head);
    }
    d.rxq.publish(&d.mem);
    d.dev()
        .backend_mut()
        .to_guest
        .push_back((hdr(op::RESPONSE), vec![]));
    d.pump();
    let mut used = vec![];
    while let Some(u) = d.rxq.pop_used(&d.mem) {
        used.push(u);
    }
    assert_eq!(used, vec![(10, 0), (11, 0), (12, PKT_HEADER_SIZE as u32)]);
}

#[test]
fn indirect_tx_chain_built_by_mock_queue() {
    // virtio-queue's own mock driver builds an indirect chain; the device
    // follows it (two descriptors: header, data).
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x4000_0000)]).unwrap();
    let mut vq = MockSplitQueue::new(&mem, 16);
    let queue: virtio_queue::Queue = vq.create_queue().unwrap();
    vq.add_indirect_chain(2).unwrap();
    // The mock puts the indirect table at 0x3000_0000; fill in real buffers.
    let table = 0x3000_0000u64;
    let mut h = hdr(op::RW);
    h.len = 4;
    mem.write_slice(&h.to_bytes(), GuestAddress(0x10_0000))
        .unwrap();
    mem.write_slice(b"indi", GuestAddress(0x10_1000)).unwrap();
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(
            0x10_0000,
            PKT_HEADER_SIZE as u32,
            DESC_F_NEXT,
            1,
        )),
        RawDescriptor::from(SplitDescriptor::new(0x10_1000, 4, 0, 0)),
    ];
    mem.write_slice(
        &descs
            .iter()
            .flat_map(|d| {
                let d = SplitDescriptor::from(*d);
                let mut b = d.addr().0.to_le_bytes().to_vec();
                b.extend(d.len().to_le_bytes());
                b.extend(d.flags().to_le_bytes());
                b.extend(d.next().to_le_bytes());
                b
            })
            .collect::<Vec<u8>>(),
        GuestAddress(table),
    )
    .unwrap();
    let mut dev = Vsock::new(CID, TestBackend::new()).unwrap();
    let irq: Arc<dyn VirtioInterrupt> = Arc::new(MmioInterrupt::new().unwrap());
    let mk = || vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let rx: virtio_queue::Queue = vq.create_queue().unwrap();
    let ev: virtio_queue::Queue = vq.create_queue().unwrap();
    let queues = vec![
        ActiveQueue {
            queue: rx,
            notify: mk(),
        },
        ActiveQueue {
            queue,
            notify: mk(),
        },
        ActiveQueue {
            queue: ev,
            notify: mk(),
        },
    ];
    dev.activate(mem.clone(), irq, queues).unwrap();
    // rx and ev queues share the mock ring here; only tx is processed.
    assert!(dev.process_tx());
    assert_eq!(dev.backend().sent[0].1, b"indi");
}

#[test]
fn runaway_avail_index_stops_processing_without_panic() {
    let mut d = driver();
    d.txq.set_avail_idx(1000); // 1000 > queue size ahead of the device
    d.txq.publish(&d.mem);
    d.dev().handle_tx_event();
    assert!(d.dev().backend().sent.is_empty());
    assert!(d.active());
}

#[test]
fn reset_through_transport_resets_backend_and_allows_reprobe() {
    let mut d = driver();
    mmio_write(&mut d.transport, u64::from(VIRTIO_MMIO_STATUS), 0);
    assert!(!d.active());
    assert_eq!(d.dev().backend().resets, 1);
    // Tx after reset is ignored (no active queues).
    d.dev().handle_tx_event();
    assert_ne!(d.reprobe(0) & crate::devices::virtio::STATUS_DRIVER_OK, 0);
    assert!(d.active());
    d.send(hdr(op::RW), b"again");
    assert_eq!(d.dev().backend().sent.len(), 1);
}

#[test]
fn activation_checks_queue_count_and_double_activation() {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let mut dev = Vsock::new(CID, TestBackend::new()).unwrap();
    let irq: Arc<dyn VirtioInterrupt> = Arc::new(MmioInterrupt::new().unwrap());
    assert!(dev.activate(mem.clone(), irq.clone(), vec![]).is_err());
    let mk = || ActiveQueue {
        queue: <virtio_queue::Queue as QueueT>::new(256).unwrap(),
        notify: vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
    };
    dev.activate(mem.clone(), irq.clone(), vec![mk(), mk(), mk()])
        .unwrap();
    assert!(dev.activate(mem, irq, vec![mk(), mk(), mk()]).is_err());
}

#[test]
fn event_loop_registers_on_activation_and_dispatches() {
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    let mut d = driver();
    let sub: Arc<Mutex<dyn MutEventSubscriber + Send>> = d.dev.clone();
    em.add_subscriber(sub);
    // The activation eventfd fired during the probe: this registers the queues.
    em.run_with_timeout(100).unwrap();
    d.fill_rx(4, 128);
    // A tx notification through the transport (what the ioeventfd does).
    d.queue_tx(hdr(op::RW), b"via eventfd");
    mmio_write(
        &mut d.transport,
        u64::from(VIRTIO_MMIO_QUEUE_NOTIFY),
        TXQ as u32,
    );
    em.run_with_timeout(100).unwrap();
    assert_eq!(d.dev().backend().sent.len(), 1);
    // A backend event delivers rx.
    d.dev()
        .backend_mut()
        .to_guest
        .push_back((hdr(op::RESPONSE), vec![]));
    d.dev().backend().wake();
    em.run_with_timeout(100).unwrap();
    assert_eq!(d.recv().len(), 1);
    assert_ne!(d.take_interrupt() & InterruptKind::Queue as u32, 0);
    // An rx notification with nothing pending is harmless.
    mmio_write(
        &mut d.transport,
        u64::from(VIRTIO_MMIO_QUEUE_NOTIFY),
        RXQ as u32,
    );
    em.run_with_timeout(100).unwrap();
}
