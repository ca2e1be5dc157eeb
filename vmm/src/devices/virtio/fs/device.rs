//! The virtio-fs device: what the driver sees (device id, queues, features, config space) and
//! the hand-over of activated queues to the worker thread.

use crate::seccomp::Program;
use std::sync::mpsc;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_FS;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

use super::worker::{Active, Command, WorkerHandle};
use super::{
    FsDeviceError, CONFIG_LEN, HIPRIO_QUEUE_SIZE, NUM_REQUEST_QUEUES, REQUEST_QUEUE_SIZE,
    RESET_TIMEOUT, TAG_LEN,
};
use crate::devices::virtio::{
    ActivateError, ActiveQueue, GuestMemory, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::fs::ShareServer;
use crate::warn_limited;

const QUEUE_SIZES: [u16; 2] = [HIPRIO_QUEUE_SIZE, REQUEST_QUEUE_SIZE];
const FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// A virtio-fs device exporting one share.
pub struct VirtioFs {
    share: ShareServer,
    config: [u8; CONFIG_LEN],
    acked_features: u64,
    worker: WorkerHandle,
    active: bool,
}

impl std::fmt::Debug for VirtioFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioFs")
            .field("tag", &self.share.spec().tag)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl VirtioFs {
    /// A device for `share`; starts the share's worker thread, which
    /// installs `seccomp` (the fs worker's filter) first if given.
    pub fn new(share: ShareServer, seccomp: Option<Program>) -> Result<Self, FsDeviceError> {
        let tag = share.spec().tag.clone();
        if tag.is_empty() || tag.len() > TAG_LEN {
            return Err(FsDeviceError::BadTag(tag));
        }
        let mut config = [0u8; CONFIG_LEN];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        let worker =
            WorkerHandle::spawn(&tag, share.server().clone(), share.fs().clone(), seccomp)?;
        Ok(Self {
            share,
            config,
            acked_features: 0,
            worker,
            active: false,
        })
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> &str {
        &self.share.spec().tag
    }

    /// The share's server (tests look at its descriptor budget).
    pub fn share(&self) -> &ShareServer {
        &self.share
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Stops the worker thread and waits for it.
    #[cfg(test)]
    pub(super) fn shutdown(&mut self) {
        self.worker.shutdown();
    }
}

impl VirtioDevice for VirtioFs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        FEATURES
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & FEATURES;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| self.config.get(usize::try_from(o).ok()?))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn_limited!("virtio-fs: guest wrote read-only config at {offset:#x}");
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        if self.active {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount {
                expected: QUEUE_SIZES.len(),
                got: queues.len(),
            });
        }
        self.worker
            .send(Command::Activate(Active {
                mem,
                interrupt,
                queues,
            }))
            .map_err(ActivateError::EventFd)?;
        self.active = true;
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active
    }

    fn reset(&mut self) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        if self.worker.send(Command::Reset(ack)).is_err() {
            return false;
        }
        // The worker finishes the request it is serving first; a host call stuck for longer
        // than this leaves the device needing a VM restart rather than a vCPU stuck here.
        if done.recv_timeout(RESET_TIMEOUT).is_err() {
            warn_limited!(
                "virtio-fs `{}`: file server did not stop within {RESET_TIMEOUT:?}",
                self.tag()
            );
            return false;
        }
        self.active = false;
        self.acked_features = 0;
        true
    }
}
