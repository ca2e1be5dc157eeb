//! `husk doctor`: can this host run husk VMs, and at what speed?
//!
//! Reports [`crate::vstate::probe`]: whether /dev/kvm opens, speaks API 12
//! and creates a VM, and which module backs it: `kvm_intel`/`kvm_amd` mean hardware
//! virtualization (guests run at native speed); `kvm_pvm` means PVM, where
//! a stock guest kernel's code is emulated (~1M instructions/s), so guests
//! do not boot at a useful speed and tests go through scripts/testbed.sh.
//!
//! It also reports whether pods get a host cgroup ([`crate::pod::cgroup`]):
//! a cgroup2 mount, the cpu, memory and pids controllers available there
//! (and whether they are already delegated to the parent), and whether the
//! parent (`--cgroup-parent`, default `/husk`) is writable; one line each,
//! with the reason when not. Pods run without a host cgroup (with a
//! warning) where the default parent cannot be used, so these lines do not
//! change the exit status.
//!
//! And whether the VMM can be jailed here ([`super::doctor_jail`]): user namespaces, the id
//! pool, idmapped mounts on the store's file system, seccomp, and a `jail verdict:`; these
//! lines do not change the exit status either.
//!
//! Exit status: 0 hardware KVM is usable; 124 ([`Failure::NoKvm`], as for
//! every command) /dev/kvm is missing or unusable; 3 KVM works but is not
//! hardware-backed (PVM or unknown): not a failure, a different kind of host.

use clap::Args;

use crate::failure::Failure;
use crate::pod::cgroup::{self, DEFAULT_PARENT};
use crate::vstate::probe::{self, cpu_has_virt_flags, Backend};

/// Arguments of `husk doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check this cgroup parent instead of the default (/husk).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
}

/// Exit status: KVM usable but guests run emulated.
pub const EXIT_NOT_HARDWARE: i32 = 3;

/// Prints the cgroup lines: mount, controllers, parent.
fn report_cgroups(explicit: Option<&str>) {
    let text = explicit.unwrap_or(DEFAULT_PARENT);
    let rel = match cgroup::parse_parent(text) {
        Ok(rel) => rel,
        Err(e) => {
            println!("cgroup parent: {}", super::error_line(&e));
            return;
        }
    };
    let ready = cgroup::readiness(&rel, explicit.is_none());
    match &ready.mount {
        Ok(m) => println!("cgroup v2: mounted at {}", m.display()),
        Err(why) => println!("cgroup v2: not usable: {why}"),
    }
    match (&ready.controllers, &ready.mount) {
        (Ok(()), Ok(m)) => {
            let listed = std::fs::read_to_string(m.join(&rel).join("cgroup.controllers"))
                .unwrap_or_default();
            let delegated = if !m.join(&rel).is_dir() {
                format!("{text} does not exist yet")
            } else if cgroup::missing_controllers(&listed).is_empty() {
                format!("already delegated to {text}")
            } else {
                format!("husk enables them down to {text} when a pod starts")
            };
            println!("cgroup controllers: cpu, memory, pids available ({delegated})");
        }
        (Err(why), _) | (_, Err(why)) => println!("cgroup controllers: not usable: {why}"),
    }
    match (&ready.parent, explicit) {
        (Ok(p), _) if p.is_dir() => println!("cgroup parent {text}: writable ({})", p.display()),
        (Ok(p), None) => println!("cgroup parent {text}: made on first use ({})", p.display()),
        (Ok(p), Some(_)) => println!(
            "cgroup parent {text}: not usable: {} is not a directory",
            p.display()
        ),
        (Err(why), _) => println!("cgroup parent {text}: not usable: {why}"),
    }
    match (ready.problem(), explicit) {
        (None, _) => println!("cgroup verdict: each pod's VMM gets a host cgroup under {text}"),
        (Some(why), None) => println!(
            "cgroup verdict: pods run without a host cgroup (husk run warns once per pod): {why}"
        ),
        (Some(why), Some(_)) => println!(
            "cgroup verdict: pods with --cgroup-parent {text} are refused (exit 125): {why}"
        ),
    }
}

/// Runs the checks, prints a report, returns the exit status.
/// What the networks need here: passt and, as root, the host-side filter
/// for `user`; root, `/dev/net/tun`, `ip`, `tc` and `nft` for `tap`.
fn report_network() {
    match crate::net::passt::find_passt() {
        Ok(p) => println!("network user: passt at {}", p.display()),
        Err(e) => println!("network user: not usable: {}", super::error_line(&e)),
    }
    let probe = crate::net::NetworkConfig::default();
    if crate::net::guard::wanted(&probe) {
        let has_cgroup = matches!(cgroup::plan(None), Ok(cgroup::Plan::Under(_)));
        match crate::net::guard::unavailable(has_cgroup) {
            None => println!("network filter: pods cannot reach the host's addresses or link-local ones (nftables)"),
            Some(why) => println!("network filter: not usable, pods run unfiltered: {why}"),
        }
    } else {
        println!("network filter: not as a non-root user (rootless pods can reach the host's non-loopback addresses)");
    }
    match crate::net::tap::unavailable() {
        None => println!(
            "network tap: usable (bridge {}, {}/{})",
            crate::net::tap::BRIDGE,
            crate::net::tap::SUBNET,
            crate::net::tap::PREFIX
        ),
        Some(why) => println!("network tap: not usable: {why}"),
    }
}

pub fn run(args: DoctorArgs) -> i32 {
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
    report_cgroups(args.cgroup_parent.as_deref());
    report_network();
    super::doctor_jail::report(&crate::image::Store::default_root());
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
