//! Arbitrary virtio-mmio register traffic against the vsock device: every
//! read and write a guest can make, in any order, with any width. The
//! transport must never panic, and whatever state it ends in, a clean probe
//! afterwards must bring the device up.
#![no_main]

use husk_vmm::devices::bus::BusDevice;
use husk_vmm::devices::virtio::mmio::MmioTransport;
use husk_vmm::devices::virtio::testing::{guest_memory, mmio_setup, DriverQueue};
use husk_vmm::devices::virtio::vsock::testing::TestBackend;
use husk_vmm::devices::virtio::vsock::{Vsock, VSOCK_QUEUE_SIZE};
use husk_vmm::devices::virtio::{STATUS_DRIVER_OK, VIRTIO_F_VERSION_1};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};

fuzz_target!(|data: &[u8]| {
    let mem = guest_memory(1 << 20);
    let dev = Arc::new(Mutex::new(Vsock::new(3, TestBackend::new()).unwrap()));
    let mut t = MmioTransport::new(mem.clone(), dev.clone()).unwrap();
    for op in data.chunks_exact(6) {
        // Offsets cluster on the register block so most accesses mean something.
        let offset = u64::from(op[0]) * 4 + u64::from(op[1] & 3) * (op[1] as u64 >> 7);
        let len = [1usize, 2, 4, 8][usize::from(op[1] >> 2 & 3)];
        let value = u32::from_le_bytes([op[2], op[3], op[4], op[5]]);
        if op[1] & 0x10 == 0 {
            let mut b = vec![0u8; len];
            t.read(offset, &mut b);
        } else {
            let mut b = value.to_le_bytes().to_vec();
            b.resize(len, 0);
            t.write(offset, &b);
        }
        // Let the device process whatever queues the guest managed to set up.
        if op[1] & 0x60 == 0x60 {
            dev.lock().unwrap().handle_tx_event();
        }
    }
    // Whatever happened, a reset and a clean probe must work.
    let step = DriverQueue::footprint(VSOCK_QUEUE_SIZE);
    let qs: Vec<DriverQueue> = (0..3)
        .map(|i| DriverQueue::new(&mem, 0x1000 + i * step, VSOCK_QUEUE_SIZE))
        .collect();
    let status = mmio_setup(&mut t, &[&qs[0], &qs[1], &qs[2]], VIRTIO_F_VERSION_1);
    assert_ne!(
        status & STATUS_DRIVER_OK,
        0,
        "clean probe failed: {status:#x}"
    );
});
