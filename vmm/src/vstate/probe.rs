//! The one KVM probe: can this host run husk guests, and how many vCPUs may
//! one VM have?
//!
//! `husk doctor` reports it, the pod commands refuse early with it, and a
//! VM's configuration is checked against its vCPU limit before anything is
//! forked; all three read the same answer from here.
//!
//! The backend matters as much as `/dev/kvm` opening: `kvm_intel`/`kvm_amd`
//! mean hardware virtualization (guests run at native speed); `kvm_pvm`
//! means PVM, where a stock guest kernel's code is emulated (~1M
//! instructions/s), so guests do not boot in useful time and tests go
//! through `scripts/testbed.sh`.

use std::path::Path;

use kvm_ioctls::Kvm;

/// Which implementation backs /dev/kvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Intel VT-x.
    Intel,
    /// AMD-V (SVM).
    Amd,
    /// Pagetable-based Virtual Machine (no hardware virtualization).
    Pvm,
    /// No known vendor module loaded.
    Unknown,
}

impl Backend {
    /// The backend of this host, from the loaded modules.
    pub fn of_host() -> Backend {
        backend_from_modules(|m| Path::new("/sys/module").join(m).exists())
    }

    /// Whether guests run at native speed on it.
    pub fn is_hardware(self) -> bool {
        matches!(self, Backend::Intel | Backend::Amd)
    }
}

/// Decides the backend from the loaded modules (names under /sys/module).
pub fn backend_from_modules(has: impl Fn(&str) -> bool) -> Backend {
    if has("kvm_intel") {
        Backend::Intel
    } else if has("kvm_amd") {
        Backend::Amd
    } else if has("kvm_pvm") {
        Backend::Pvm
    } else {
        Backend::Unknown
    }
}

/// Whether the CPU flags in /proc/cpuinfo text include vmx or svm.
pub fn cpu_has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// What /dev/kvm offers here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmProbe {
    /// KVM_CAP_MAX_VCPUS.
    pub max_vcpus: usize,
    /// What backs it.
    pub backend: Backend,
}

/// Why /dev/kvm cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No device node.
    #[error("/dev/kvm does not exist")]
    Missing,
    /// The device would not open (permissions, no module).
    #[error("cannot open /dev/kvm: {0}")]
    Open(String),
    /// An API this VMM does not speak.
    #[error("KVM API version {0}, husk needs 12")]
    Api(i32),
    /// KVM refused to create a VM.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(String),
}

/// Opens /dev/kvm and checks its API and backend, without creating a VM
/// (the pod commands' early check; `husk doctor` also creates one with
/// [`probe_with_vm`]).
pub fn probe() -> Result<KvmProbe, ProbeError> {
    probe_inner(false)
}

/// [`probe`], and creates (and drops) a VM.
pub fn probe_with_vm() -> Result<KvmProbe, ProbeError> {
    probe_inner(true)
}

fn probe_inner(create_vm: bool) -> Result<KvmProbe, ProbeError> {
    if !Path::new("/dev/kvm").exists() {
        return Err(ProbeError::Missing);
    }
    let kvm = Kvm::new().map_err(|e| ProbeError::Open(e.to_string()))?;
    let api = kvm.get_api_version();
    if api != 12 {
        return Err(ProbeError::Api(api));
    }
    if create_vm {
        kvm.create_vm()
            .map_err(|e| ProbeError::CreateVm(e.to_string()))?;
    }
    Ok(KvmProbe {
        max_vcpus: kvm.get_max_vcpus(),
        backend: Backend::of_host(),
    })
}

/// KVM_CAP_MAX_VCPUS, asking /dev/kvm without creating a VM (cheap enough
/// to check every VM configuration against).
pub fn max_vcpus() -> Option<usize> {
    Kvm::new().ok().map(|kvm| kvm.get_max_vcpus())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_order() {
        assert_eq!(
            backend_from_modules(|m| m == "kvm_amd" || m == "kvm"),
            Backend::Amd
        );
        assert_eq!(backend_from_modules(|m| m == "kvm_intel"), Backend::Intel);
        assert_eq!(backend_from_modules(|m| m == "kvm_pvm"), Backend::Pvm);
        assert_eq!(backend_from_modules(|_| false), Backend::Unknown);
        assert!(Backend::Amd.is_hardware() && !Backend::Pvm.is_hardware());
    }

    #[test]
    fn cpu_flags() {
        assert!(cpu_has_virt_flags(
            "processor : 0\nflags : fpu vme svm sse\n"
        ));
        assert!(!cpu_has_virt_flags("flags : fpu vmxx sse\nmodel : vmx\n"));
    }
}
