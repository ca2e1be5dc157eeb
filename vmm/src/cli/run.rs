//! `husk run` (one app), `husk pod run` (a manifest's apps) and the hidden
//! `husk pod supervise` that keeps a detached pod going.
//!
//! In the foreground the `husk` process is the pod's supervisor and exits
//! with the app's status (128+N for signal N; `pod run`: the first failing
//! app's, else 0). With `-d` it makes the pod, starts a detached supervisor
//! (a new session, so the terminal closing does not end it), waits until
//! the apps run, prints the pod's id and exits 0. A pod that fails before
//! its apps start leaves nothing behind.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use super::print_error;
use crate::failure::Failure;
use crate::image::{PullOptions, Store};
use crate::pod::attach::{self, Attach, RawTerminal};
use crate::pod::create::{base_name, create, PullPolicy};
use crate::pod::spec::*;
use crate::pod::state::{AppStatus, PodDir, PodState, PodStore};
use crate::pod::supervisor::{phase, supervise};
use crate::pod::{cgroup, manifest, vm, PodError};
use crate::vm_config::HostLimits;

/// The flags `husk run` and `husk pod run` share: where the pod runs and
/// whether it outlives its end.
#[derive(Debug, Args)]
pub struct LifetimeArgs {
    /// Remove the pod when it ends.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background; print the pod's id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Run the pod's VMM without its jail (as root in the host's
    /// namespaces, with every capability): for debugging only.
    #[arg(long)]
    pub no_jail: bool,
    /// Run the pod's VMM without its seccomp filters (debugging only; the
    /// host side's own filters: the app's are --security-opt seccomp=...).
    #[arg(long)]
    pub no_seccomp: bool,
    /// The host cgroup (below /sys/fs/cgroup, which must exist) under which
    /// the pod's VMM gets its own (default /husk, made if missing).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// A log setting (repeatable): max-size=SIZE (each log file; default
    /// 10m, at least 64k), max-file=N (files per app log, the live one
    /// included; default 3, at most 100), console-rate=SIZE (the guest
    /// console's bytes per second before output is dropped; default 32k).
    /// Each app's stdout and stderr are kept in at most max-file files of
    /// max-size (30 MiB by default); the console in 2 files of 1 MiB.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
    /// Refuse to run the pod (status 119) unless its launch is measured
    /// into a TPM ($HUSK_TPM, measure.json's tpm, else /dev/tpmrm0).
    #[arg(long)]
    pub require_tpm: bool,
}

impl LifetimeArgs {
    /// The log settings: `base` (the defaults, or a manifest's) with the
    /// `--log-opt` flags applied.
    fn logs(
        &self,
        mut base: crate::pod::logs::LogOpts,
    ) -> Result<crate::pod::logs::LogOpts, PodError> {
        base.apply_flags(&self.log_opt).map_err(PodError::Usage)?;
        Ok(base)
    }
}

/// The network flags of `husk run`.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// The pod's network: "user" (user-mode networking through passt:
    /// outbound TCP/UDP, DNS, published ports; the host's own addresses and
    /// link-local ones stay out of reach), "user:host-loopback" (user, and
    /// the host's loopback at 10.0.2.2), "tap" (root only: a TAP device on
    /// the host bridge husk0 with NAT, 10.89.0.0/16, kernel speed) or
    /// "none" (loopback only).
    #[arg(
        long,
        value_name = "user|user:host-loopback|tap|none",
        default_value = "user"
    )]
    pub network: String,
    /// Publish a pod port on the host (repeatable; needs --network user or tap).
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[HOSTIP:]HOSTPORT:PODPORT[/tcp|/udp]"
    )]
    pub publish: Vec<String>,
    /// A name server for the containers' /etc/resolv.conf (repeatable;
    /// default: the pod's DNS forwarder, 10.0.2.3; with tap the host's
    /// non-loopback name servers).
    #[arg(long, value_name = "IPV4")]
    pub dns: Vec<String>,
    /// An extra /etc/hosts line (repeatable).
    #[arg(long = "add-host", value_name = "NAME:IPV4")]
    pub add_host: Vec<String>,
    /// The pod's hostname (default: its name).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
}

impl NetArgs {
    /// The typed network these flags describe.
    pub fn to_config(&self) -> Result<crate::net::NetworkConfig, PodError> {
        crate::net::NetworkConfig::from_strings(
            Some(&self.network),
            &self.publish,
            &self.dns,
            &self.add_host,
            self.hostname.clone(),
        )
        .map_err(PodError::Usage)
    }
}

/// What the app runs with inside the guest (`crate::pod::security`).
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// Add a capability to the app's (repeatable; CAP_ prefix optional, ALL
    /// for every one). The default set is docker's 14: CHOWN, DAC_OVERRIDE,
    /// FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
    /// NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the app's (repeatable; ALL for every one).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// seccomp=PROFILE.json (an OCI/docker seccomp profile) or
    /// seccomp=unconfined (default: podman's default profile, in docker's
    /// format); no-new-privileges (setuid and file capabilities grant
    /// nothing). Repeatable. (--no-seccomp is about the VMM's own filters.)
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Give the app every capability and no seccomp filter: it may do
    /// whatever root in the pod's VM can (mount, trace, write /sys). It
    /// stays inside the pod's VM, which remains the boundary between it
    /// and the host.
    #[arg(long)]
    pub privileged: bool,
    /// Mount the app's root file system read-only (/tmp, /dev/shm, volumes
    /// and --tmpfs mounts stay writable).
    #[arg(long)]
    pub read_only: bool,
    /// Mount a tmpfs in the app (repeatable): PATH[:SIZE] (default 64m), or
    /// docker's PATH:size=SIZE,mode=OCTAL,ro,exec. Always nosuid,nodev;
    /// noexec unless exec; its pages count against the app's memory.
    #[arg(long, value_name = "PATH[:SIZE]")]
    pub tmpfs: Vec<String>,
}

/// Arguments of `husk run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub lifetime: LifetimeArgs,
    /// Boxed: the network flags would make `RunArgs` the one huge variant
    /// of the command enums.
    #[command(flatten)]
    pub net: Box<NetArgs>,
    /// Boxed, as the network flags.
    #[command(flatten)]
    pub security: Box<SecurityArgs>,
    /// Name the pod (default: <image>-<6 hex digits>).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this one's).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Share a host directory: HOSTDIR:GUESTDIR[:ro|:rw].
    #[arg(short = 'v', long = "volume", value_name = "HOSTDIR:GUESTDIR[:ro]")]
    pub volumes: Vec<String>,
    /// Memory limit of the app, e.g. 512m or 1g (default 256m).
    #[arg(short = 'm', long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPUs for the app, e.g. 2 or 0.5 (the VM gets the next whole number).
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: UID[:GID] or a name from the image.
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Keep stdin open and stream it to the app.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the app a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Replace the image's entrypoint.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Size limit of the app's root file system (default 512m).
    #[arg(long, value_name = "SIZE")]
    pub rootfs_size: Option<String>,
    /// Maximum number of processes in the app.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// When to pull the image: missing (if not stored), never, always.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// Pull over plain HTTP (always allowed for 127.0.0.0/8 and localhost).
    #[arg(long)]
    pub insecure: bool,
    /// The image, then the command and its arguments (replacing the image's Cmd).
    #[arg(value_name = "IMAGE [CMD [ARG...]]", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub image_and_command: Vec<String>,
}

/// Arguments of `husk pod run`.
#[derive(Debug, Args)]
pub struct PodRunArgs {
    #[command(flatten)]
    pub lifetime: LifetimeArgs,
    /// Name the pod (overrides the manifest's name).
    #[arg(long)]
    pub name: Option<String>,
    /// End the pod when the first app exits (the manifest's `exit = "first"`).
    #[arg(long)]
    pub exit_on_first: bool,
    /// When to pull the apps' images: missing (if not stored), never, always.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// Pull over plain HTTP (always allowed for 127.0.0.0/8 and localhost).
    #[arg(long)]
    pub insecure: bool,
    /// The pod manifest (TOML or JSON).
    #[arg(value_name = "FILE")]
    pub manifest: PathBuf,
}

fn usage(msg: impl Into<String>) -> PodError {
    PodError::Usage(msg.into())
}

/// Parses `-v HOSTDIR:GUESTDIR[:ro|:rw]`.
fn parse_volume(spec: &str) -> Result<(PathBuf, String, bool), PodError> {
    let mut parts: Vec<&str> = spec.split(':').collect();
    let read_only = match parts.last() {
        Some(&"ro") if parts.len() == 3 => true,
        Some(&"rw") if parts.len() == 3 => false,
        _ if parts.len() == 2 => false,
        _ => {
            return Err(usage(format!(
                "-v {spec}: expected HOSTDIR:GUESTDIR[:ro|:rw]"
            )))
        }
    };
    parts.truncate(2);
    let (host, guest) = (parts[0], parts[1]);
    if !guest.starts_with('/') {
        return Err(usage(format!(
            "-v {spec}: {guest:?} must be an absolute path"
        )));
    }
    // Absolute, but symlinks are not resolved: the VMM refuses a host path
    // with a symlink in it (another pod may control a directory on the way),
    // and the pod checks that when it is made.
    let host = std::path::absolute(host).map_err(|e| usage(format!("-v {spec}: {host}: {e}")))?;
    Ok((host, guest.to_owned(), read_only))
}

/// `-e KEY=VALUE`, or `-e KEY` for this process's value (skipped if unset).
fn parse_env(entries: &[String]) -> Result<Vec<String>, PodError> {
    let mut env = Vec::new();
    for e in entries {
        match e.split_once('=') {
            Some(("", _)) => return Err(usage(format!("-e {e}: empty variable name"))),
            Some(_) => env.push(e.clone()),
            None if e.is_empty() => return Err(usage("-e needs KEY or KEY=VALUE")),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok(env)
}

/// The pod request of `husk run`.
fn run_request(args: &RunArgs) -> Result<PodRequest, PodError> {
    let image = args.image_and_command[0].clone();
    let command = args.image_and_command[1..].to_vec();
    let memory = match &args.memory {
        Some(m) => parse_size(m).map_err(|e| usage(format!("--memory {e}")))?,
        None => DEFAULT_MEMORY,
    };
    let cpus = match &args.cpus {
        Some(c) => Some(parse_cpus(c).map_err(|e| usage(format!("--cpus {e}")))?),
        None => None,
    };
    let rootfs_size = match &args.rootfs_size {
        Some(s) => parse_size(s).map_err(|e| usage(format!("--rootfs-size {e}")))?,
        None => DEFAULT_ROOTFS_SIZE,
    };
    if let Some(w) = &args.workdir {
        if !w.starts_with('/') {
            return Err(usage(format!("-w {w}: must be an absolute path")));
        }
    }
    if args.tty && args.lifetime.detach {
        return Err(usage(
            "-t and -d cannot be combined (nothing would read the terminal)",
        ));
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, spec) in args.volumes.iter().enumerate() {
        let (host, path, read_only) = parse_volume(spec)?;
        let name = format!("v{i}");
        volumes.push(Volume {
            name: name.clone(),
            host: Some(host),
            read_only,
            size: None,
        });
        mounts.push(AppMount {
            volume: name,
            path,
            read_only,
        });
    }
    let sec = &args.security;
    let security = crate::pod::security::parse(&crate::pod::security::Request {
        cap_add: &sec.cap_add,
        cap_drop: &sec.cap_drop,
        privileged: sec.privileged,
        security_opt: &sec.security_opt,
        read_only: sec.read_only,
        tmpfs: &sec.tmpfs,
        mounts: &mounts,
        base: std::path::Path::new("."),
        names: crate::pod::security::Names::FLAGS,
    })
    .map_err(PodError::Usage)?;
    let app_name = {
        let b = base_name(&image);
        if valid_name(&b) {
            b
        } else {
            "app".to_owned()
        }
    };
    Ok(PodRequest {
        name: args.name.clone(),
        apps: vec![App {
            name: app_name,
            image,
            entrypoint: args.entrypoint.as_ref().map(|e| vec![e.clone()]),
            command: (!command.is_empty()).then_some(command),
            env: parse_env(&args.env)?,
            workdir: args.workdir.clone(),
            user: args.user.clone(),
            tty: args.tty,
            stdin: args.interactive,
            memory: Some(memory),
            cpus,
            pids: args.pids_limit,
            rootfs_size,
            mounts,
            security,
        }],
        volumes,
        memory,
        vcpus: vcpus_for(cpus.unwrap_or(1.0)),
        exit_policy: ExitPolicy::All,
        stop_grace_ms: DEFAULT_STOP_GRACE_MS,
        auto_remove: args.lifetime.rm,
        no_jail: args.lifetime.no_jail,
        no_seccomp: args.lifetime.no_seccomp,
        cgroup_parent: args.lifetime.cgroup_parent.clone(),
        network: args.net.to_config()?,
        logs: args.lifetime.logs(crate::pod::logs::LogOpts::default())?,
        require_tpm: args.lifetime.require_tpm,
    })
}

/// Runs `husk run`; returns the exit status.
pub fn run(args: RunArgs) -> i32 {
    let attach = Attach {
        stdin: args.interactive,
        tty: args.tty,
    };
    let how = How {
        detach: args.lifetime.detach,
        policy: args.pull,
        insecure: args.insecure,
        attach,
        report_each: false,
    };
    finish(run_request(&args).and_then(|r| start(r, &how)))
}

/// Runs `husk pod run`; returns the exit status.
pub fn pod_run(args: PodRunArgs) -> i32 {
    let request = manifest::load(&args.manifest)
        .map_err(PodError::Usage)
        .and_then(|mut r| {
            r.logs = args.lifetime.logs(r.logs)?;
            Ok(r)
        })
        .map(|mut r| {
            if args.name.is_some() {
                r.name = args.name.clone();
            }
            if args.exit_on_first {
                r.exit_policy = ExitPolicy::First;
            }
            r.auto_remove = args.lifetime.rm;
            r.no_jail |= args.lifetime.no_jail;
            r.no_seccomp = args.lifetime.no_seccomp;
            r.require_tpm = args.lifetime.require_tpm;
            if args.lifetime.cgroup_parent.is_some() {
                r.cgroup_parent = args.lifetime.cgroup_parent.clone();
            }
            r
        });
    let attach = Attach {
        stdin: false,
        tty: false,
    };
    let how = How {
        detach: args.lifetime.detach,
        policy: args.pull,
        insecure: args.insecure,
        attach,
        report_each: true,
    };
    finish(request.and_then(|r| start(r, &how)))
}

fn finish(result: Result<i32, PodError>) -> i32 {
    result.unwrap_or_else(|e| {
        print_error(&e);
        e.kind().exit_status()
    })
}

/// How `run` and `pod run` start a pod.
struct How {
    detach: bool,
    policy: PullPolicy,
    insecure: bool,
    attach: Attach,
    /// Print every app's exit status at the end (multi-app pods).
    report_each: bool,
}

/// Makes the pod and runs it in the foreground, or detached.
fn start(request: PodRequest, how: &How) -> Result<i32, PodError> {
    let (detach, attach, report_each) = (how.detach, how.attach, how.report_each);
    if request.no_jail {
        super::warn_no_jail();
    }
    if request.no_seccomp {
        eprintln!("husk: warning: the pod's VMM runs without its seccomp filters (--no-seccomp)");
    }
    // Fail before making anything if pods cannot run here at all.
    let host = HostLimits::with_kvm(&vm::check_kvm()?);
    // The network before anything exists: passt present, every published
    // host port free (one line; no pod directory, no passt, nothing left).
    match request.network.mode {
        crate::net::NetworkMode::User => {
            crate::net::passt::find_passt().map_err(|e| PodError::Vmm(e.to_string()))?;
        }
        crate::net::NetworkMode::Tap => {
            if let Some(why) = crate::net::tap::unavailable() {
                return Err(PodError::Usage(why));
            }
            if request.network.dns.is_empty()
                && crate::net::tap::default_dns(&crate::net::host_resolvers()).is_empty()
            {
                eprintln!("husk: warning: the pod has no name server: the host's resolv.conf names only loopback ones, which a TAP pod cannot reach (use --dns)");
            }
        }
        crate::net::NetworkMode::None => {}
    }
    request.network.check_ports_free()?;
    let guest = vm::find_guest_artifacts()?;
    // An explicit cgroup parent that cannot be used refuses the pod here;
    // the default one that cannot runs it without a host cgroup.
    let cgroup_parent = match cgroup::plan(request.cgroup_parent.as_deref())? {
        cgroup::Plan::Under(parent) => Some(parent),
        cgroup::Plan::Without(why) => {
            let line = format!(
                "warning: the pod's VMM runs without a host cgroup (no CPU, memory or task limit on the host): {why}"
            );
            eprintln!("husk: {}", super::escape::escape(&line));
            None
        }
    };
    if crate::net::guard::wanted(&request.network) {
        if let Some(why) = crate::net::guard::unavailable(cgroup_parent.is_some()) {
            let line = format!(
                "warning: the pod's network is not filtered on the host (it can reach the host's own addresses and link-local ones): {why}"
            );
            eprintln!("husk: {}", super::escape::escape(&line));
        }
    }
    let root = Store::default_root();
    let measure = crate::measure::Settings::load(&root)?;
    let store = Store::open(&root)?;
    let pods = PodStore::open(&root)?;
    let pull = PullOptions {
        insecure: how.insecure,
        credentials_file: None,
        progress: attach::stdin_is_terminal(),
        policy_file: None,
    };
    let mut made = create(&store, &pods, request, how.policy, &pull)?;
    made.config.cgroup_parent = cgroup_parent;
    if let Some(UserNsChoice::HostRoot(why)) = &made.config.user_ns {
        eprintln!(
            "husk: warning: the pod's VMM runs as host root in the rest of its jail (no user namespace): {}",
            super::escape::escape(why)
        );
    }
    // The VM against this host (memory, vCPUs) before any process starts
    // for the pod: `-m 100g` is refused here, not by a forked VMM.
    if let Err(e) = vm::check_fits_host(&made.pod, &made.config, &guest, &host) {
        let _ = pods.remove(&made.pod);
        return Err(e);
    }
    // Measured launch: a TPM that is required and cannot be reached
    // refuses the pod here, before any process starts for it; no TPM at
    // all is a warning (the supervisor still logs the launch). A foreground
    // pod's supervisor is this process: it opens the TPM itself, once.
    if let Err(e) = measure.precheck(&made.pod.name, made.config.require_tpm, !detach) {
        let _ = pods.remove(&made.pod);
        return Err(e.into());
    }
    phase(&made.pod, "pod made (image resolved)");
    if detach {
        // Until the detached supervisor records itself, this process stays
        // the pod's supervisor, as PodStore::create recorded it.
        if let Err(e) = made.populate(&store) {
            let _ = pods.remove(&made.pod);
            return Err(e);
        }
        return start_detached(&pods, &made.pod);
    }
    let (pod, config) = (&made.pod, &made.config);
    let raw = if attach.tty && attach::stdin_is_terminal() {
        RawTerminal::enable()
    } else {
        None
    };
    let result = supervise(pod, config, Some(attach), &|| made.populate(&store));
    drop(raw);
    match result {
        Ok(apps) => {
            if report_each {
                let line = format!("pod {}: {}", pod.name, describe_apps(&apps));
                eprintln!("husk: {}", super::escape::escape(&line));
            }
            if config.auto_remove {
                let _ = pods.remove(pod);
                phase(pod, "pod removed");
            }
            Ok(pod_exit_code(&apps))
        }
        Err(e) => {
            let started = pod
                .read_status()
                .is_ok_and(|s| s.apps.iter().any(|a| a.started));
            if !started || config.auto_remove {
                let _ = pods.remove(pod);
            }
            Err(e)
        }
    }
}

/// The pod's exit status: the first app that did not exit 0, else 0.
pub fn pod_exit_code(apps: &[AppStatus]) -> i32 {
    apps.iter()
        .filter_map(AppStatus::shell_code)
        .find(|&c| c != 0)
        .unwrap_or(0)
}

/// `app a exited 0, app b was killed by signal 15`.
pub fn describe_apps(apps: &[AppStatus]) -> String {
    apps.iter()
        .map(|a| match (a.exit_code, a.signal) {
            (Some(c), _) => format!("app {} exited {c}", a.name),
            (None, Some(s)) => format!(
                "app {} was killed by signal {s}{}",
                a.name,
                if a.oom_killed { " (out of memory)" } else { "" }
            ),
            _ => format!("app {} did not finish", a.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long `run -d` waits for the detached pod's apps to start.
const DETACH_START_TIMEOUT: Duration = Duration::from_secs(300);

fn start_detached(pods: &PodStore, pod: &PodDir) -> Result<i32, PodError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| PodError::io(&pod.path, e))?;
    let log_path = pod.supervisor_log_path();
    let log = crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)
        .map_err(|e| PodError::io(&log_path, e))?;
    let mut cmd = Command::new(exe);
    cmd.args(["pod", "supervise"])
        .arg(&pod.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let new_session = || {
        // SAFETY: setsid() takes no arguments and touches no memory of ours.
        if unsafe { libc::setsid() } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec and only
    // calls setsid(), which is async-signal-safe.
    unsafe { cmd.pre_exec(new_session) };
    let mut child = cmd.spawn().map_err(|e| {
        let _ = pods.remove(pod);
        PodError::Vmm(format!("cannot start the pod's supervisor: {e}"))
    })?;
    let deadline = Instant::now() + DETACH_START_TIMEOUT;
    loop {
        std::thread::sleep(Duration::from_millis(25));
        // Reap it if it already ended, so its status is read as final.
        let ended = child.try_wait().ok().flatten().is_some();
        let status = pod.read_status()?;
        match status.state {
            PodState::Running | PodState::Stopping | PodState::Exited => {
                println!("{}", super::escape::escape(&pod.id));
                return Ok(0);
            }
            PodState::Failed => {
                let _ = pods.remove(pod);
                let reason = status.reason.unwrap_or_else(|| "the pod failed".into());
                return Err(PodError::Detached {
                    reason,
                    kind: status
                        .error_code
                        .and_then(Failure::from_exit_status)
                        .unwrap_or(Failure::Runtime),
                });
            }
            _ if ended => {
                let _ = pods.remove(pod);
                return Err(PodError::Vmm(format!(
                    "the pod's supervisor ended before the pod started: {}",
                    vm::last_line(&log_path).unwrap_or_default()
                )));
            }
            _ if Instant::now() > deadline => {
                return Err(PodError::Agent(format!(
                    "pod {} did not start within {}s",
                    pod.name,
                    DETACH_START_TIMEOUT.as_secs()
                )))
            }
            _ => {}
        }
    }
}

/// `husk pod supervise DIR`: supervises a detached pod; exits with the pod's status.
pub fn supervise_detached(dir: PathBuf) -> i32 {
    let root = dir.parent().and_then(|p| p.parent()).map(PathBuf::from);
    let (Some(root), Some(id)) = (root, dir.file_name()) else {
        eprintln!("husk: {}: not a pod directory", dir.display());
        return Failure::Usage.exit_status();
    };
    let id = id.to_string_lossy().into_owned();
    let result = PodStore::open(&root).and_then(|pods| {
        let pod = pods.find(&id)?;
        let config = pod.read_config()?;
        let apps = supervise(&pod, &config, None, &|| Ok(()))?;
        if config.auto_remove {
            let _ = pods.remove(&pod);
        }
        Ok(pod_exit_code(&apps))
    });
    finish(result)
}
