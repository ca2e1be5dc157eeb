//! `husk doctor`: can this host run husk VMs, and at what speed?
//!
//! Checks that /dev/kvm opens, speaks API 12 and creates a VM, then finds
//! which module backs it: `kvm_intel`/`kvm_amd` mean hardware
//! virtualization (guests run at native speed); `kvm_pvm` means PVM, where
//! a stock guest kernel's code is emulated (~1M instructions/s), so guests
//! do not boot at a useful speed and tests go through scripts/testbed.sh.
//!
//! Exit status: 0 hardware KVM is usable; 1 /dev/kvm is missing or
//! unusable; 3 KVM works but is not hardware-backed (PVM or unknown).

use std::path::Path;

use kvm_ioctls::Kvm;

/// Exit status: KVM usable but guests run emulated.
pub const EXIT_NOT_HARDWARE: i32 = 3;

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

fn probe_kvm() -> Result<i32, String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let api = kvm.get_api_version();
    if api != 12 {
        return Err(format!("KVM API version {api}, husk needs 12"));
    }
    kvm.create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    Ok(kvm.get_max_vcpus() as i32)
}

/// Runs the checks, prints a report, returns the exit status.
pub fn run() -> i32 {
    let exists = Path::new("/dev/kvm").exists();
    let probe = if exists {
        probe_kvm()
    } else {
        Err("/dev/kvm does not exist".to_string())
    };
    let backend = backend_from_modules(|m| Path::new("/sys/module").join(m).exists());
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| cpu_has_virt_flags(&c))
        .unwrap_or(false);

    match &probe {
        Ok(max) => println!("/dev/kvm: usable (API 12, VM created, up to {max} vCPUs)"),
        Err(e) => println!("/dev/kvm: not usable: {e}"),
    }
    let backend_text = match backend {
        Backend::Intel => "kvm_intel (hardware: Intel VT-x)",
        Backend::Amd => "kvm_amd (hardware: AMD-V)",
        Backend::Pvm => "kvm_pvm (PVM: no hardware virtualization; stock guest code is emulated at ~1M instructions/s)",
        Backend::Unknown => "no kvm_intel, kvm_amd or kvm_pvm module loaded",
    };
    println!("backend: {backend_text}");
    println!(
        "cpu: {}",
        if flags {
            "vmx/svm flag present"
        } else {
            "no vmx/svm flag (no hardware virtualization exposed)"
        }
    );
    match (&probe, backend) {
        (Ok(_), Backend::Intel | Backend::Amd) => {
            println!("verdict: ready: husk guests run at native speed here");
            0
        }
        (Ok(_), _) => {
            println!(
                "verdict: KVM works but is not hardware-backed: VM set-up can be measured here, \
                 but guests will not boot at a useful speed; run them in the nested testbed: \
                 scripts/testbed.sh -- husk vm ..."
            );
            EXIT_NOT_HARDWARE
        }
        (Err(_), _) => {
            println!(
                "verdict: not usable: load kvm_intel or kvm_amd (modprobe), make sure /dev/kvm \
                 exists and this user can open it (kvm group or root)"
            );
            1
        }
    }
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
    }

    #[test]
    fn cpu_flags() {
        assert!(cpu_has_virt_flags(
            "processor : 0\nflags : fpu vme svm sse\n"
        ));
        assert!(!cpu_has_virt_flags("flags : fpu vmxx sse\nmodel : vmx\n"));
    }
}
