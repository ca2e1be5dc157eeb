//! The supervisor's part of a pod's network: the backend its virtio-net
//! device uses (passt with its host-side filter, or a TAP network), each
//! recorded in `status.json` before it exists; when the pod ends, their
//! removal.
//!
//! A TAP network is made before the VMM is forked (the VMM inherits the
//! TAP's fd). passt's filter and passt itself are made after the fork,
//! while the guest boots, which keeps their cost (an `nft` run, passt's
//! start) off the pod's start time: the VMM gets its end of a socket pair
//! at the fork, and passt, which alone turns the guest's frames into host
//! connections, starts reading the other end only once the filter exists,
//! so nothing the guest sends leaves unfiltered. Frames sent before then
//! wait in the socket.

use std::sync::Arc;

use super::{PodError, Running};
use crate::devices::virtio::net::MacAddr;
use crate::net::guard::NetGuard;
use crate::net::passt::PasstOptions;
use crate::net::NetworkMode;
use crate::vm_config::{DeviceSpec, NetBackendFd, NetSpec, SharedFd, VmConfig};

impl Running<'_> {
    /// Adds the pod's network device to `config`, with its backend's fd.
    /// Before the fork: the VMM inherits that fd and keeps it through the
    /// jail. For user-mode networking, [`Self::start_passt`] follows the
    /// fork.
    pub(super) fn start_network(&mut self, config: &mut VmConfig) -> Result<(), PodError> {
        let mac = self.pod_mac();
        let backend = match self.config.network.mode {
            NetworkMode::None => return Ok(()),
            NetworkMode::User => {
                let (vmm_end, passt_end) =
                    crate::net::passt::socket_pair().map_err(|e| PodError::Vmm(e.to_string()))?;
                // Without the jail the VMM keeps a copy of this end too
                // (nothing closes it in the fork): passt's exit then goes
                // unnoticed by the VMM, which matters only when debugging.
                self.passt_end = Some(passt_end);
                NetBackendFd::Stream(SharedFd(Arc::new(vmm_end)))
            }
            NetworkMode::Tap => self.start_tap(mac)?,
        };
        let mtu = match self.config.network.mode {
            NetworkMode::Tap => crate::net::tap::MTU,
            _ => crate::net::MTU,
        };
        config
            .devices
            .push(DeviceSpec::Net(NetSpec { mac, mtu, backend }));
        Ok(())
    }

    /// The pod's MAC address, the same on every start.
    fn pod_mac(&self) -> MacAddr {
        MacAddr::from_seed(self.pod.id.as_bytes())
    }

    /// After the fork, for user-mode networking: makes passt's filter, then
    /// starts passt on its end of the VMM's socket pair.
    pub(super) fn start_passt(&mut self) -> Result<(), PodError> {
        let Some(passt_end) = self.passt_end.take() else {
            return Ok(());
        };
        self.make_net_guard()?;
        let log = self.pod.path.join("passt.log");
        let passt = crate::net::passt::spawn(
            &PasstOptions {
                ports: &self.config.network.ports,
                pod_mac: self.pod_mac(),
                log: &log,
                map_gw: self.config.network.host_loopback,
                cgroup: self.net_guard.as_ref().map(NetGuard::procs),
            },
            passt_end,
        )
        .map_err(|e| PodError::Vmm(e.to_string()))?;
        self.passt = Some(passt);
        Ok(())
    }

    fn start_tap(&mut self, mac: MacAddr) -> Result<NetBackendFd, PodError> {
        let err = |e: crate::net::tap::TapError| PodError::Vmm(format!("network: {e}"));
        let record = crate::net::tap::plan(&self.pod.id).map_err(err)?;
        self.status.net_tap = Some(record.clone());
        self.save()?;
        let (tap, fd) =
            crate::net::tap::create(&record, mac, &self.config.network.ports).map_err(err)?;
        self.tap = Some(tap);
        Ok(NetBackendFd::Tap(SharedFd(Arc::new(fd))))
    }

    /// Makes passt's host-side filter when this pod gets one: user-mode
    /// networking, as root, with a host cgroup (`husk run` warned
    /// otherwise). Recorded in `status.json` before it exists.
    fn make_net_guard(&mut self) -> Result<(), PodError> {
        let Some(cgroup) = &self.cgroup else {
            return Ok(());
        };
        if !crate::net::guard::wanted(&self.config.network)
            || crate::net::guard::unavailable(true).is_some()
        {
            return Ok(());
        }
        let guard_err = |e: crate::net::guard::GuardError| PodError::Vmm(e.to_string());
        let mount = crate::pod::cgroup::mount()?;
        let parent = cgroup.record.path.parent().unwrap_or(&mount).to_owned();
        let record = NetGuard::plan(&mount, &parent, &self.pod.id).map_err(guard_err)?;
        self.status.net_guard = Some(record.clone());
        self.save()?;
        let guard = NetGuard::create(record, &mount, self.config.network.host_loopback)
            .map_err(guard_err)?;
        self.net_guard = Some(guard);
        Ok(())
    }

    /// Removes passt's filter (its cgroup's removal ends passt) and the TAP
    /// network. A failure is logged: the records stay in `status.json`, so
    /// `husk rm`/`gc` retry.
    pub(super) fn stop_network(&mut self) {
        if let Some(guard) = self.net_guard.take() {
            match guard.remove() {
                // Both callers save the status next; without the record,
                // `husk rm` does not run nft a second time for nothing.
                Ok(()) => self.status.net_guard = None,
                Err(e) => log::warn!("{}", crate::report::error_line(&e)),
            }
        }
        if let Some(tap) = self.tap.take() {
            match crate::net::tap::release(&tap.record, &self.pod.id) {
                Ok(()) => {
                    self.status.net_tap = None;
                    let _ = self.save();
                }
                Err(e) => log::warn!("{}", crate::report::error_line(&e)),
            }
        }
    }
}
