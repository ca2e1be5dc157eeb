//! The pod's VM: finding the guest kernel and agent initramfs, starting the
//! VMM as a child process, and reaching the agent through its vsock socket.
//!
//! The VMM is `husk vm`'s code in a process of its own (as Firecracker's
//! and Cloud Hypervisor's are), forked from the supervisor: see
//! [`VmmProcess`].

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use husk_agent_client::{AgentClientError, Endpoint, Session, DEFAULT_VSOCK_PORT};

use super::cgroup::PodCgroup;
use super::spec::PodConfig;
use super::state::PodDir;
use super::vmm_process::VmmProcess;
use super::PodError;
use crate::builder::Jail;
use crate::devices::virtio::vsock::DEFAULT_GUEST_CID;
use crate::fs::{CacheMode, ShareSpec};
use crate::vm_config::{
    ConfigError, ConsoleOutput, DeviceSpec, Field, HostLimits, PreparedVm, VmConfig, VsockSpec, MIB,
};
use crate::vstate::probe::{self, Backend, KvmProbe};

/// Environment variables that point at the guest kernel and initramfs.
pub const KERNEL_ENV: &str = "HUSK_KERNEL";
pub const INITRD_ENV: &str = "HUSK_INITRD";
/// Where an installed husk keeps them.
pub const SYSTEM_GUEST_DIR: &str = "/usr/lib/husk";

/// How long the guest may take to boot and answer on vsock.
pub const AGENT_TIMEOUT: Duration = husk_agent_client::timeouts::BOOT;

/// The guest kernel and the agent's initramfs.
#[derive(Debug, Clone)]
pub struct GuestArtifacts {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Finds the guest kernel and initramfs: `$HUSK_KERNEL`/`$HUSK_INITRD`,
/// else `vmlinux` and `initramfs.cpio` beside the husk binary (where
/// scripts/build.sh puts them), else [`SYSTEM_GUEST_DIR`].
pub fn find_guest_artifacts() -> Result<GuestArtifacts, PodError> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned));
    let find = |env: &str, file: &str, what: &'static str| -> Result<PathBuf, PodError> {
        if let Some(p) = std::env::var_os(env) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(PodError::GuestArtifacts {
                    what,
                    why: format!("${env} = {} is not a file", p.display()),
                })
            };
        }
        let candidates: Vec<PathBuf> = exe_dir
            .iter()
            .map(|d| d.join(file))
            .chain(std::iter::once(Path::new(SYSTEM_GUEST_DIR).join(file)))
            .collect();
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| PodError::GuestArtifacts {
                what,
                why: format!(
                    "no {file} beside the husk binary or in {SYSTEM_GUEST_DIR}, and ${env} is not set (scripts/build.sh builds it)"
                ),
            })
    };
    Ok(GuestArtifacts {
        kernel: find(KERNEL_ENV, "vmlinux", "kernel")?,
        initrd: find(INITRD_ENV, "initramfs.cpio", "initramfs")?,
    })
}

/// Refuses early, with the reason, on a host where pods cannot run: no
/// usable /dev/kvm, or KVM without hardware virtualization (PVM), where a
/// stock guest kernel runs emulated and never boots in useful time.
pub fn check_kvm() -> Result<KvmProbe, PodError> {
    let found = probe::probe().map_err(|e| PodError::NoKvm(format!("{e} (see husk doctor)")))?;
    if found.backend == Backend::Pvm {
        return Err(PodError::NoKvm(
            "KVM here is PVM, without hardware virtualization (see husk doctor; run inside scripts/testbed.sh)"
                .into(),
        ));
    }
    Ok(found)
}

/// The pod's shares, as typed data for the VMM: the image blobs
/// (read-only, cached: content-addressed files never change) under
/// `blobs_tag`, then each volume's host directory (`vol0`, `vol1`...). The
/// paths are handed over exactly as configured: never turned into a
/// `--share` string, in which a directory ending in `:rw` or `:ro` would be
/// read as an option (F12).
pub fn pod_shares(
    blobs_tag: &str,
    blobs_dir: &Path,
    volumes: impl IntoIterator<Item = (PathBuf, bool)>,
) -> Vec<ShareSpec> {
    let blobs = ShareSpec {
        tag: blobs_tag.to_owned(),
        host_dir: blobs_dir.to_path_buf(),
        read_only: true,
        cache: CacheMode::Always,
    };
    let volumes = volumes
        .into_iter()
        .enumerate()
        .map(|(i, (host_dir, read_only))| ShareSpec {
            tag: volume_tag(i),
            host_dir,
            read_only,
            cache: CacheMode::Auto,
        });
    std::iter::once(blobs).chain(volumes).collect()
}

/// The tags [`pod_shares`] gives the host-directory volumes among `volumes` (the ones a
/// VMM in a user namespace serves through idmapped mounts).
pub fn host_volume_tags(volumes: &[super::spec::Volume]) -> Vec<String> {
    volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| v.host.is_some())
        .map(|(i, _)| volume_tag(i))
        .collect()
}

fn volume_tag(index: usize) -> String {
    format!("vol{index}")
}

/// The pod's VM as a typed configuration: the guest kernel and agent,
/// the memory and vCPUs `config` asks for, the console into `console.log`,
/// the agent's vsock socket and `shares`.
pub fn vm_config(
    pod: &PodDir,
    config: &PodConfig,
    guest: &GuestArtifacts,
    shares: Vec<ShareSpec>,
) -> VmConfig {
    let vsock = DeviceSpec::Vsock(VsockSpec {
        cid: DEFAULT_GUEST_CID,
        uds: pod.vsock_path(),
    });
    VmConfig {
        kernel: guest.kernel.clone(),
        initrd: Some(guest.initrd.clone()),
        cmdline_extra: "quiet".into(),
        default_cmdline: true,
        mem_bytes: config.vm_mem_mib() * MIB,
        vcpus: config.vcpus,
        console: ConsoleOutput::File(pod.console_path()),
        boot_trace: false,
        seccomp: !config.no_seccomp,
        devices: std::iter::once(vsock)
            .chain(shares.into_iter().map(DeviceSpec::Fs))
            .collect(),
    }
}

/// Checks `vm` against `host` and opens its files, with errors in the
/// pod's own terms (its memory and CPU settings, its volumes).
fn prepare(vm: VmConfig, host: &HostLimits) -> Result<PreparedVm, PodError> {
    let mem = vm.mem_bytes;
    vm.prepare(host).map_err(|e| pod_config_error(&e, mem))
}

/// `err` worded for a pod: guest memory is the apps' memory plus their
/// root file systems plus the guest's own share, so that is what it says.
fn pod_config_error(err: &ConfigError, mem_bytes: u64) -> PodError {
    let line = crate::report::error_line(err);
    let text = match err.field() {
        Field::Memory => format!(
            "the pod needs {} MiB of guest memory (the apps' --memory, their --rootfs-size and {} MiB for the guest): {line}",
            mem_bytes / MIB,
            super::spec::VM_OVERHEAD / MIB
        ),
        Field::Vcpus => format!("--cpus {line}"),
        Field::Share => format!("volume: {line}"),
        _ => line,
    };
    match err {
        ConfigError::Loader(_) | ConfigError::ConsoleOpen { .. } => PodError::Vmm(text),
        _ => PodError::Usage(text),
    }
}

/// Checks the pod's VM against `host` without opening anything: the
/// early refusal of `husk run -m 100g`, before any process starts for it.
pub fn check_fits_host(
    pod: &PodDir,
    config: &PodConfig,
    guest: &GuestArtifacts,
    host: &HostLimits,
) -> Result<(), PodError> {
    let vm = vm_config(pod, config, guest, Vec::new());
    vm.check(host)
        .map_err(|e| pod_config_error(&e, vm.mem_bytes))
}

/// Starts the pod's VMM (see [`VmmProcess`]) for `vm`, checked against
/// `host`: the guest console goes to `console.log`, the VMM's stderr (one
/// line if it fails) to `vmm.log`; jailed unless `jail` is off; in `cgroup`
/// if there is one. `before_fork` sees the VM with its files open, as the
/// VMM will get it (the pod's measured launch: [`crate::measure`]), and
/// may refuse it. Call only while this process has a single thread.
pub fn spawn_vmm(
    pod: &PodDir,
    vm: VmConfig,
    host: &HostLimits,
    jail: Jail,
    cgroup: Option<&PodCgroup>,
    before_fork: impl FnOnce(&PreparedVm) -> Result<(), PodError>,
) -> Result<VmmProcess, PodError> {
    let vmm_log = pod.path.join("vmm.log");
    let stderr = crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&vmm_log)
        .map_err(|e| PodError::io(&vmm_log, e))?;
    let _ = std::fs::remove_file(pod.vsock_path());
    let prepared = prepare(vm, host)?;
    before_fork(&prepared)?;
    VmmProcess::fork(prepared, &stderr, jail, cgroup.map(PodCgroup::procs))
        .map_err(|e| PodError::Vmm(format!("cannot start the VMM: {e}")))
}

/// Why a VMM that exited did: its status and the last line it printed;
/// for a VMM that its host cgroup (`cgroup`, its directory) OOM-killed, that.
pub fn vmm_exit_reason(pod: &PodDir, status: ExitStatus, cgroup: Option<&Path>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let oom = cgroup
        .filter(|_| status.signal() == Some(libc::SIGKILL))
        .and_then(super::cgroup::oom_reason);
    let how = match (oom, status.code(), status.signal()) {
        (Some(why), _, _) => format!("the VMM was killed by the host's OOM killer: {why}"),
        (None, Some(c), _) => format!("the VMM exited with status {c}"),
        (None, None, Some(s)) => format!("the VMM was killed by signal {s}"),
        _ => "the VMM ended".to_owned(),
    };
    let last = last_line(&pod.path.join("vmm.log"));
    match last {
        Some(line) => format!("{how}: {line}"),
        None => how,
    }
}

/// The last non-empty line of a small log file.
pub fn last_line(path: &Path) -> Option<String> {
    let f = File::open(path).ok()?;
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .last()
        .map(|l| l.trim().to_owned())
}

/// The agent's readiness line on the guest console.
const READY_LINE: &[u8] = b"husk-agent: ready";
/// How long to wait for the readiness line before trying vsock anyway (a
/// console that says nothing must not stop a pod that works).
const READY_LINE_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval while the guest boots.
const BOOT_POLL: Duration = Duration::from_millis(5);

/// Follows the console log for the readiness line: the file stays open
/// between polls and each poll reads only what the guest wrote since.
#[derive(Default)]
struct ConsoleWatch {
    file: Option<File>,
    /// The last bytes read, in case the line straddles two reads.
    tail: Vec<u8>,
}

impl ConsoleWatch {
    /// Whether the readiness line has appeared in `path` yet.
    fn ready(&mut self, path: &Path) -> bool {
        use std::io::Read;
        if self.file.is_none() {
            self.file = File::open(path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let mut chunk = [0u8; 16 << 10];
        // Bounded per poll: a guest flooding its console cannot keep the
        // supervisor reading forever.
        for _ in 0..64 {
            let n = match file.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            self.tail.extend_from_slice(&chunk[..n]);
            if self.tail.windows(READY_LINE.len()).any(|w| w == READY_LINE) {
                return true;
            }
            let keep = self.tail.len().min(READY_LINE.len() - 1);
            self.tail.drain(..self.tail.len() - keep);
        }
        false
    }
}

/// Connects to the agent of a pod whose VMM is `vmm`; fails at once if the
/// VMM exits first. It waits for the agent's readiness line on the console
/// log before knocking on vsock: every refused connection attempt costs
/// the booting guest an interrupt and a reset packet, which slows the boot
/// it is waiting for.
/// `cgroup`: the VMM's host cgroup, to tell an OOM kill by it.
pub fn connect_agent(
    pod: &PodDir,
    vmm: &mut VmmProcess,
    cgroup: Option<&Path>,
) -> Result<Session, PodError> {
    let endpoint = Endpoint::Vsock {
        uds: pod.vsock_path(),
        port: DEFAULT_VSOCK_PORT,
    };
    let start = Instant::now();
    let deadline = start + AGENT_TIMEOUT;
    let console = pod.console_path();
    let mut watch = ConsoleWatch::default();
    let mut ready = false;
    loop {
        if let Ok(Some(status)) = vmm.try_wait() {
            return Err(PodError::Vmm(vmm_exit_reason(pod, status, cgroup)));
        }
        if !ready {
            ready = watch.ready(&console) || start.elapsed() > READY_LINE_TIMEOUT;
            if !ready {
                std::thread::sleep(BOOT_POLL);
                continue;
            }
        }
        match husk_agent_client::connect(&endpoint, Duration::from_millis(20)) {
            Ok(session) => return Ok(session),
            Err(e @ AgentClientError::Session(_)) if Instant::now() >= deadline => {
                return Err(PodError::Agent(e.to_string()))
            }
            Err(_) if Instant::now() >= deadline => {
                return Err(PodError::Agent(format!(
                    "no answer on vsock within {}s (guest console: {})",
                    AGENT_TIMEOUT.as_secs(),
                    console.display()
                )))
            }
            Err(_) => std::thread::sleep(BOOT_POLL),
        }
    }
}

/// Connects to the agent of a running pod (for `husk exec`).
pub fn connect_running(pod: &PodDir) -> Result<Session, PodError> {
    let endpoint = Endpoint::Vsock {
        uds: pod.vsock_path(),
        port: DEFAULT_VSOCK_PORT,
    };
    husk_agent_client::connect(&endpoint, husk_agent_client::timeouts::CONNECT_RUNNING)
        .map_err(|e| PodError::Agent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// F12: a volume whose host directory ends in `:rw` reaches the VMM as
    /// that directory. At df579e2 the pod turned it into the string
    /// `vol0=/srv/x:rw:cache=auto`, which `husk vm`'s parser read as the
    /// directory `/srv/x`, read-write: the validated directory was not the
    /// shared one. End to end, through the VMM's own opening of the shares.
    #[test]
    fn volume_paths_reach_the_vmm_as_configured() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let d = dir.as_path();
        for sub in ["blobs", "srv/x", "srv/x:rw", "srv/y", "srv/y:ro", "srv/z"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let shares = pod_shares(
            "blobs",
            &d.join("blobs"),
            [
                (d.join("srv/x:rw"), false),
                (d.join("srv/y:ro"), false),
                (d.join("srv/z"), true),
            ],
        );
        let opened = crate::fs::ShareSpec::open_all(shares).unwrap();
        let got: Vec<_> = opened
            .iter()
            .map(|s| {
                (
                    s.spec.tag.as_str(),
                    s.root.path().to_path_buf(),
                    s.spec.read_only,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("blobs", d.join("blobs"), true),
                ("vol0", d.join("srv/x:rw"), false),
                ("vol1", d.join("srv/y:ro"), false),
                ("vol2", d.join("srv/z"), true),
            ]
        );
        assert_eq!(opened[0].spec.cache, CacheMode::Always);
        assert_eq!(opened[1].spec.cache, CacheMode::Auto);
    }

    /// The VM's errors in the pod's own terms: guest memory explained as
    /// the sum it is, vCPUs as `--cpus`; both usage errors.
    #[test]
    fn config_errors_are_worded_for_pods() {
        let e = ConfigError::MemTooLarge {
            requested: 2048 * MIB,
            host: 1024 * MIB,
        };
        let PodError::Usage(text) = pod_config_error(&e, 2048 * MIB) else {
            panic!("not a usage error");
        };
        assert_eq!(
            text,
            "the pod needs 2048 MiB of guest memory (the apps' --memory, their --rootfs-size \
             and 96 MiB for the guest): 2048 MiB is more than this host's 1024 MiB of memory"
        );
        let e = ConfigError::TooManyVcpus {
            requested: 9,
            max: 8,
            by: "KVM here",
        };
        let PodError::Usage(text) = pod_config_error(&e, 256 * MIB) else {
            panic!("not a usage error");
        };
        assert_eq!(text, "--cpus 9 is more than the 8 vCPUs KVM here allows");
    }

    #[test]
    fn console_watch_finds_the_line_across_writes() {
        let path = std::env::temp_dir().join(format!("husk-console-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut watch = ConsoleWatch::default();
        assert!(!watch.ready(&path), "no file yet");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![b'x'; 100 << 10]).unwrap();
        f.write_all(b"\nhusk-agent: rea").unwrap();
        assert!(!watch.ready(&path), "half a line");
        f.write_all(b"dy cpus=2 mem_mib=864\n").unwrap();
        assert!(watch.ready(&path), "the line straddles two reads");
        std::fs::remove_file(&path).unwrap();
    }
}
