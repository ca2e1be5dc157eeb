//! `husk doctor`: can this host run husk VMs, and at what speed?
//!
//! Reports [`crate::vstate::probe`]: whether /dev/kvm opens, speaks API 12
//! and creates a VM, and which module backs it: `kvm_intel`/`kvm_amd` mean hardware
//! virtualization (guests run at native speed); `kvm_pvm` means PVM, where
//! a stock guest kernel's code is emulated (~1M instructions/s), so guests
//! do not boot at a useful speed and tests go through scripts/testbed.sh.
//!
//! Exit status: 0 hardware KVM is usable; 124 ([`Failure::NoKvm`], as for
//! every command) /dev/kvm is missing or unusable; 3 KVM works but is not
//! hardware-backed (PVM or unknown): not a failure, a different kind of host.

use crate::failure::Failure;
use crate::vstate::probe::{self, cpu_has_virt_flags, Backend};

/// Exit status: KVM usable but guests run emulated.
pub const EXIT_NOT_HARDWARE: i32 = 3;

/// Runs the checks, prints a report, returns the exit status.
pub fn run() -> i32 {
    let probe = probe::probe_with_vm().map(|p| p.max_vcpus);
    let backend = Backend::of_host();
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
            Failure::NoKvm.exit_status()
        }
    }
}
