//! Supervising a pod from boot to power-off.
//!
//! The supervisor starts the VMM, waits for the agent, mounts the shares,
//! has every app's image unpacked and its container created, then waits on
//! one channel for what can happen next: an app exits, a signal arrives,
//! the VMM dies. Each app's output is copied by a thread of its own to the
//! app's log (and, attached, to the terminal: [`super::output`]), the guest
//! console by another to `console.log` ([`super::logs::console`]). Only this
//! thread writes `status.json`.
//!
//! Signals: SIGTERM (`husk stop`) stops every app — SIGTERM, the grace
//! period, SIGKILL — and then the pod. Attached to a one-app `husk run`,
//! SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the app
//! (Docker's sig-proxy) and SIGWINCH resizes its terminal; detached or for
//! a multi-app pod, SIGINT and SIGHUP stop the pod like SIGTERM.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use husk_agent_client::{timeouts, ClientError, Process, Session};
use husk_proto::{
    ContainerSpec, ErrorKind, ExitStatus, MountSpec, ProcessSpec, Request, Resources, SpecialFiles,
    TtySize, UnpackSpec,
};
use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;

use super::attach::{self, Attach};
use super::cgroup::{CgroupRecord, Limits, PodCgroup};
use super::logs::console::PodConsole;
use super::logs::cri::AppLogWriter;
use super::logs::rotate::RotatingFile;
use super::output::Ended;
use super::spec::{App, PodConfig, UserNsChoice};
use super::state::{now_secs, AppStatus, PodDir, PodState, PodStatus};
use super::vm::{self, GuestArtifacts};
use super::vmm_process::VmmProcess;
use super::PodError;

mod measure;
mod network;
use crate::builder::Jail;
use crate::failure::Failure;
use crate::jail::vmm::UserNs;
use crate::net::guard::NetGuard;
use crate::vm_config::{ConsoleFd, ConsoleOutput, HostLimits};

/// Where the pod's image blobs are mounted in the guest.
const GUEST_BLOBS: &str = "/run/husk/blobs";
/// The virtio-fs tag of the blobs share.
const BLOBS_TAG: &str = "blobs";
/// How long the VMM may take to power off after the agent's shutdown.
const POWEROFF_TIMEOUT: Duration = timeouts::POWEROFF;
/// Grace the agent gives stray processes at shutdown (apps have ended).
const SHUTDOWN_GRACE_MS: u64 = 1_000;
/// Written by `husk stop -t N` before it signals the supervisor.
pub const STOP_REQUEST_FILE: &str = "stop-grace-ms";

fn guest_volume(name: &str) -> String {
    format!("/run/husk/volumes/{name}")
}

fn guest_rootfs(app: &str) -> String {
    format!("/run/husk/apps/{app}/rootfs")
}

/// What the supervisor's threads tell it.
enum Event {
    AppExited {
        index: usize,
        status: ExitStatus,
        oom_killed: bool,
    },
    AppLost {
        index: usize,
        why: String,
    },
    Signal(i32),
    VmmExited(std::process::ExitStatus),
}

/// A pod being supervised.
struct Running<'a> {
    pod: &'a PodDir,
    config: &'a PodConfig,
    status: PodStatus,
    attach: Option<Attach>,
    vmm_pid: Option<i32>,
    /// The VMM's host cgroup, until it is removed.
    cgroup: Option<PodCgroup>,
    /// The pod's passt (`--network user`): stopped and reaped when the
    /// supervisor is done with the pod (it quits on its own once the VMM's
    /// end of their socket closes).
    passt: Option<crate::net::passt::Passt>,
    /// passt's end of its socket pair with the VMM, from the VMM's fork
    /// until passt starts on it.
    passt_end: Option<std::os::fd::OwnedFd>,
    /// passt's host-side filter ([`crate::net::guard`]), until it is removed.
    net_guard: Option<NetGuard>,
    /// Says when the console's copier has written everything (the VMM's
    /// end of the pipe closed), so the last of it is on disk before the
    /// pod's state says it ended.
    console_done: Option<Receiver<()>>,
    /// The pod's TAP network (`--network tap`), until it is removed.
    tap: Option<crate::net::tap::TapNetwork>,
}

/// Runs the pod to its end; returns each app's status, in config order.
/// `populate` fills the pod directory while the VM boots (the guest needs
/// the blobs only once it is up). On failure the pod's status records why,
/// and the VMM is gone.
pub fn supervise(
    pod: &PodDir,
    config: &PodConfig,
    attach: Option<Attach>,
    populate: &dyn Fn() -> Result<(), PodError>,
) -> Result<Vec<AppStatus>, PodError> {
    let (tx, rx) = channel();
    // Registered before the VMM starts, so a `husk stop` during boot is seen.
    let signals = Signals::new(attach::FORWARDED_SIGNALS)
        .map_err(|e| PodError::io(std::path::Path::new("signals"), e))?;
    let handle = signals.handle();
    let mut run = Running {
        pod,
        config,
        status: PodStatus::created(),
        attach,
        vmm_pid: None,
        cgroup: None,
        passt: None,
        passt_end: None,
        net_guard: None,
        console_done: None,
        tap: None,
    };
    run.status.apps = config
        .apps
        .iter()
        .map(|a| AppStatus {
            name: a.name.clone(),
            ..AppStatus::default()
        })
        .collect();
    let result = run.go(tx, &rx, signals, populate);
    handle.close();
    match result {
        Ok(()) => Ok(run.status.apps.clone()),
        Err(e) => {
            run.fail(&e);
            Err(e)
        }
    }
}

fn spawn_signal_thread(mut signals: Signals, tx: Sender<Event>) {
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if tx.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    });
}

impl Running<'_> {
    /// Logs (HUSK_LOG=info) that `what` is done, with the time since husk started.
    fn phase(&self, what: &str) {
        phase(self.pod, what);
    }

    fn save(&self) -> Result<(), PodError> {
        self.pod.write_status(&self.status)
    }

    /// Records a failure and makes sure no VMM outlives it.
    fn fail(&mut self, e: &PodError) {
        if let Some(pid) = self.vmm_pid.take() {
            // SAFETY: kill() with a pid we started and have not reaped (the
            // watcher or this thread reaps it after); no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // The pod ends: its volumes' tmpfs and its cgroup go before anyone
        // can read so.
        self.console_written();
        super::volumes::release(&self.pod.path);
        self.remove_cgroup();
        self.status.state = PodState::Failed;
        self.status.reason = Some(e.to_string());
        self.status.error_code = Some(e.kind().exit_status());
        self.status.finished = Some(now_secs());
        let _ = self.save();
    }

    fn go(
        &mut self,
        tx: Sender<Event>,
        rx: &Receiver<Event>,
        signals: Signals,
        populate: &dyn Fn() -> Result<(), PodError>,
    ) -> Result<(), PodError> {
        self.status.state = PodState::Starting;
        self.status.started = Some(now_secs());
        self.save()?;
        let guest = vm::find_guest_artifacts()?;
        let host = HostLimits::with_kvm(&vm::check_kvm()?);
        // The VMM is forked: no thread may run yet (see VmmProcess). Signals
        // that came before are queued in signal-hook's pipe until then.
        let started = self.start_vmm(&guest, &host);
        spawn_signal_thread(signals, tx.clone());
        let mut vmm = started?;
        self.phase("VMM started");
        if let Err(e) = self.start_passt() {
            return Err(self.explain(&mut vmm, e, false));
        }
        self.phase("network started");
        if let Err(e) = populate() {
            return Err(self.explain(&mut vmm, e, false));
        }
        self.phase("pod directory populated");
        let session = match self.boot(&mut vmm) {
            Ok(s) => Arc::new(s),
            Err(e) => return Err(self.explain(&mut vmm, e, true)),
        };
        self.phase("shares mounted");
        let procs = match self.start_apps(&session) {
            Ok(p) => p,
            Err(e) => {
                let lost = session.lost().is_some();
                return Err(self.explain(&mut vmm, e, lost));
            }
        };
        self.phase("apps started");
        self.status.state = PodState::Running;
        self.save()?;
        spawn_vmm_watcher(vmm, tx.clone());
        let writers: Vec<_> = procs.iter().map(Process::stdin).collect();
        let proc_ids: Vec<u32> = procs.iter().map(|p| p.proc).collect();
        if let Some(attach) = &self.attach {
            if attach.stdin {
                attach::spawn_stdin_copier(writers[0].clone());
            }
        }
        for (index, process) in procs.into_iter().enumerate() {
            self.spawn_output_thread(index, process, tx.clone())?;
        }
        drop(tx);
        self.wait_apps(&session, &proc_ids, rx)?;
        self.phase("apps ended");
        self.power_off(&session, rx)?;
        self.phase("VM powered off");
        Ok(())
    }

    /// Removes the VMM's cgroup (killing what is left in it). A failure is
    /// logged: the record stays in `status.json`, so `husk rm`/`gc` retry.
    /// passt's filter goes with it (its cgroup's removal ends passt).
    fn remove_cgroup(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(e) = cgroup.remove() {
                log::warn!("{}", crate::report::error_line(&e));
            }
        }
        self.stop_network();
    }

    /// The directory of the VMM's cgroup, if it has one.
    fn cgroup_dir(&self) -> Option<&std::path::Path> {
        self.cgroup.as_ref().map(|c| c.record.path.as_path())
    }

    /// The pod's failure for a VMM that exited with `status`.
    fn vmm_died(&mut self, status: std::process::ExitStatus) -> PodError {
        self.vmm_pid = None;
        PodError::Vmm(vm::vmm_exit_reason(self.pod, status, self.cgroup_dir()))
    }

    /// Makes the VMM's host cgroup under the config's parent, recorded in
    /// `status.json` before it exists (so a supervisor killed at any point
    /// leaves something `husk gc` can find).
    fn make_cgroup(&mut self) -> Result<(), PodError> {
        let Some(parent) = &self.config.cgroup_parent else {
            return Ok(());
        };
        let path = PodCgroup::path_for(parent, &self.pod.id)?;
        let limits = Limits::for_pod(self.config);
        self.status.cgroup = Some(CgroupRecord {
            path: path.clone(),
            limits,
        });
        self.save()?;
        self.cgroup = Some(PodCgroup::create(&path, limits)?);
        Ok(())
    }

    /// The VMM with the pod's shares.
    fn start_vmm(
        &mut self,
        guest: &GuestArtifacts,
        host: &HostLimits,
    ) -> Result<VmmProcess, PodError> {
        let volumes = self.config.volumes.iter().map(|v| {
            let dir = v
                .host
                .clone()
                .unwrap_or_else(|| self.pod.volume_dir(&v.name));
            (dir, v.read_only)
        });
        let shares = vm::pod_shares(BLOBS_TAG, &self.pod.blobs_dir(), volumes);
        let mut config = vm::vm_config(self.pod, self.config, guest, shares);
        self.make_cgroup()?;
        self.start_network(&mut config)?;
        // The console goes through a pipe to a thread of ours (rotation and
        // rate limit), started once the VMM is forked.
        let console_path = self.pod.console_path();
        let (console, vmm_end) = PodConsole::open(&console_path, self.log_opts().console_limit())
            .map_err(|e| PodError::io(&console_path, e))?;
        config.console = ConsoleOutput::Fd(ConsoleFd(Arc::new(vmm_end)));
        let jail = match (&self.config.no_jail, &self.config.user_ns) {
            (true, _) => Jail::Off,
            (false, Some(UserNsChoice::Mapped(ids))) => Jail::On(Some(UserNs {
                ids: *ids,
                id_mapped: vm::host_volume_tags(&self.config.volumes),
            })),
            (false, _) => Jail::On(None),
        };
        let (pod, pod_config) = (self.pod, self.config);
        let child = vm::spawn_vmm(pod, config, host, jail, self.cgroup.as_ref(), |vm| {
            measure::measure_launch(pod, pod_config, vm)
        })?;
        self.console_done = Some(console.start());
        self.vmm_pid = Some(child.id() as i32);
        self.status.vmm_pid = self.vmm_pid;
        self.save()?;
        Ok(child)
    }

    /// Waits for the agent and mounts the shares.
    fn boot(&mut self, vmm: &mut VmmProcess) -> Result<Session, PodError> {
        let cgroup = self.cgroup_dir().map(std::path::Path::to_owned);
        let session = vm::connect_agent(self.pod, vmm, cgroup.as_deref())?;
        self.phase("agent answered");
        let mount = |tag: String, target: String, read_only: bool| {
            session
                .call(Request::MountShare {
                    tag,
                    target,
                    read_only,
                })
                .map_err(agent_error)
        };
        mount(BLOBS_TAG.into(), GUEST_BLOBS.into(), true)?;
        for (i, v) in self.config.volumes.iter().enumerate() {
            mount(format!("vol{i}"), guest_volume(&v.name), v.read_only)?;
        }
        session
            .call(Request::ConfigureNetwork(Box::new(crate::net::guest_spec(
                &self.config.network,
                &hostname(self.config),
                self.tap.as_ref(),
                self.passt.as_ref().is_some_and(|p| p.ipv6),
            ))))
            .map_err(|e| match agent_error(e) {
                PodError::Agent(m) => PodError::Agent(format!("network: {m}")),
                other => other,
            })?;
        Ok(session)
    }

    /// Unpacks every app's image, then creates the containers.
    fn start_apps(&mut self, session: &Session) -> Result<Vec<Process>, PodError> {
        for app in &self.config.apps {
            let spec = UnpackSpec {
                blob_dir: GUEST_BLOBS.into(),
                layers: app.image.layers.clone(),
                rootfs: guest_rootfs(&app.name),
                tmpfs_size: Some(app.rootfs_size),
                max_unpacked_bytes: Some(app.rootfs_size),
                // Set-id bits are dropped and device nodes skipped: many
                // real images carry them, and an app needs neither (the
                // agent's /dev is the container's).
                special_files: SpecialFiles::Strip,
            };
            session
                .call(Request::Unpack(Box::new(spec)))
                .map_err(|e| match e {
                    ClientError::Agent(r) if r.kind == ErrorKind::DigestMismatch => {
                        PodError::Integrity(format!(
                            "image {} of app {}: {}",
                            app.image.name, app.name, r.message
                        ))
                    }
                    ClientError::Agent(r) => PodError::Agent(format!(
                        "unpacking {} for app {}: {}",
                        app.image.name, app.name, r.message
                    )),
                    other => agent_error(other),
                })?;
            self.phase(&format!("unpacked {} for app {}", app.image.name, app.name));
        }
        let mut procs = Vec::new();
        for (index, app) in self.config.apps.iter().enumerate() {
            let tty_size = match &self.attach {
                Some(a) if a.tty && index == 0 => attach::terminal_size(),
                _ => None,
            };
            let spec = container_spec(self.config, app, tty_size)?;
            let process = session
                .start_process(Request::CreateContainer(Box::new(spec)))
                .map_err(|e| app_start_error(&app.name, e))?;
            self.status.apps[index].started = true;
            procs.push(process);
        }
        Ok(procs)
    }

    /// Replaces a start-up error by the VMM's own reason if it died.
    /// `vm_may_be_dying`: the error came from losing the guest (no agent
    /// yet, or its connection gone), not from an answer it gave.
    fn explain(&mut self, vmm: &mut VmmProcess, e: PodError, vm_may_be_dying: bool) -> PodError {
        // A killed VMM closes its vsock socket while its vCPU threads are
        // still being torn down: the agent's connection fails before the
        // VMM can be reaped. When the guest was lost, give it up to 2 s
        // (seen: > 50 ms in the testbed) so the pod reports the VMM's death,
        // not the lost connection; an agent that answered with an error
        // (a command not found, a bad layer) costs no wait.
        let patience = if vm_may_be_dying { 2000 } else { 0 };
        let deadline = std::time::Instant::now() + Duration::from_millis(patience);
        let mut exited = vmm.try_wait();
        while matches!(exited, Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            exited = vmm.try_wait();
        }
        match exited {
            Ok(Some(status)) => self.vmm_died(status),
            _ => {
                if let Some(pid) = self.vmm_pid.take() {
                    // SAFETY: kill() of our own unreaped child; no memory involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = vmm.wait();
                e
            }
        }
    }

    /// Waits (briefly: the VMM is gone, so the pipe is at its end) until
    /// the console's copier has written what the VMM sent last, with the
    /// drop marker if one is due.
    fn console_written(&mut self) {
        if let Some(done) = self.console_done.take() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }

    /// The pod's log settings (an older husk's pod: the defaults).
    fn log_opts(&self) -> super::logs::LogOpts {
        self.config.logs.unwrap_or_default()
    }

    fn spawn_output_thread(
        &self,
        index: usize,
        process: Process,
        tx: Sender<Event>,
    ) -> Result<(), PodError> {
        let app = &self.config.apps[index];
        let log_path = self.pod.log_path(&app.name);
        let opts = self.log_opts();
        let log = RotatingFile::open(&log_path, opts.max_size, opts.max_file)
            .map(AppLogWriter::new)
            .map_err(|e| PodError::io(&log_path, e))?;
        let sinks = attach::sinks(
            self.attach.as_ref(),
            &app.name,
            index,
            self.config.apps.len(),
        );
        std::thread::spawn(move || {
            let event = match super::output::copy(&process, log, sinks) {
                Ended::Exited { status, oom_killed } => Event::AppExited {
                    index,
                    status,
                    oom_killed,
                },
                Ended::Lost(why) => Event::AppLost { index, why },
            };
            let _ = tx.send(event);
        });
        Ok(())
    }

    /// Waits until every app has exited, handling signals and the exit policy.
    fn wait_apps(
        &mut self,
        session: &Arc<Session>,
        procs: &[u32],
        rx: &Receiver<Event>,
    ) -> Result<(), PodError> {
        let single_attached = self.attach.is_some() && self.config.apps.len() == 1;
        let tty = self.attach.is_some_and(|a| a.tty);
        // Once the apps were asked to stop: until when they may take.
        let mut stopping: Option<(std::time::Instant, Duration)> = None;
        while !self.status.apps.iter().all(AppStatus::ended) {
            let event = match stopping {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some((deadline, _)) => {
                    rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                }
            };
            let event = match event {
                Ok(event) => event,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(PodError::Agent("every app's connection closed".into()))
                }
                Err(RecvTimeoutError::Timeout) => {
                    let limit = stopping.map_or(Duration::ZERO, |(_, l)| l);
                    return Err(self.not_stopped(limit));
                }
            };
            match event {
                Event::AppExited {
                    index,
                    status,
                    oom_killed,
                } => {
                    let app = &mut self.status.apps[index];
                    match status {
                        ExitStatus::Code(c) => app.exit_code = Some(c),
                        ExitStatus::Signal(s) => app.signal = Some(s),
                    }
                    app.oom_killed = oom_killed;
                    self.save()?;
                    if self.config.exit_policy == super::spec::ExitPolicy::First
                        && stopping.is_none()
                    {
                        stopping = Some(self.stop_all(session, procs)?);
                    }
                }
                Event::AppLost { index, why } => {
                    // The connection usually drops because the VMM died:
                    // its exit, if it comes, is the reason to report.
                    if let Some(status) = wait_vmm_exit(rx, VMM_EXIT_GRACE) {
                        return Err(self.vmm_died(status));
                    }
                    return Err(PodError::Agent(format!(
                        "lost app {}: {why}",
                        self.config.apps[index].name
                    )));
                }
                Event::VmmExited(status) => return Err(self.vmm_died(status)),
                Event::Signal(sig) if single_attached && sig != SIGTERM => {
                    if let Some(request) = attach::forward_request(procs[0], sig, tty) {
                        let _ = session.call(request);
                    }
                }
                Event::Signal(SIGTERM | SIGINT | SIGHUP) if stopping.is_none() => {
                    stopping = Some(self.stop_all(session, procs)?);
                }
                Event::Signal(_) => {}
            }
        }
        Ok(())
    }

    /// The apps asked to stop did not end within `limit`.
    fn not_stopped(&self, limit: Duration) -> PodError {
        let running: Vec<&str> = self
            .status
            .apps
            .iter()
            .filter(|a| !a.ended())
            .map(|a| a.name.as_str())
            .collect();
        PodError::Agent(format!(
            "app {} did not stop within {limit:?} of the stop request: the VM was killed",
            running.join(", ")
        ))
    }

    /// Stops every app that still runs, each on a thread of its own (a
    /// stop answers only once its app has exited). Returns until when the
    /// apps may take to end (the grace period and
    /// [`timeouts::SUPERVISOR_STOP_SLACK`]) and that limit.
    fn stop_all(
        &mut self,
        session: &Arc<Session>,
        procs: &[u32],
    ) -> Result<(std::time::Instant, Duration), PodError> {
        self.status.state = PodState::Stopping;
        self.save()?;
        let grace_ms = std::fs::read_to_string(self.pod.path.join(STOP_REQUEST_FILE))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(self.config.stop_grace_ms);
        for (i, &proc) in procs.iter().enumerate() {
            if self.status.apps[i].ended() {
                continue;
            }
            let session = session.clone();
            std::thread::spawn(move || session.call(Request::Stop { proc, grace_ms }));
        }
        let limit = Duration::from_millis(grace_ms).saturating_add(timeouts::SUPERVISOR_STOP_SLACK);
        let now = std::time::Instant::now();
        let never = now + Duration::from_secs(u32::MAX.into());
        Ok((now.checked_add(limit).unwrap_or(never), limit))
    }

    /// Ends the VM and waits for the VMM to exit.
    ///
    /// Only a pod with a read-write volume needs the guest's clean shutdown
    /// (the agent syncs, so every write reaches the host directory).
    /// Otherwise nothing in the guest outlives the pod — root file systems
    /// are tmpfs in guest RAM, shares are read-only — and the VMM is simply
    /// killed, which spares the guest's shutdown (about a tenth of a
    /// `husk run`'s time for a short-lived app).
    fn power_off(&mut self, session: &Session, rx: &Receiver<Event>) -> Result<(), PodError> {
        let needs_sync = self.config.volumes.iter().any(|v| !v.read_only);
        let kill = |pid: Option<i32>| {
            if let Some(pid) = pid {
                // SAFETY: kill() of our own child, which the watcher reaps.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        };
        if !needs_sync {
            kill(self.vmm_pid);
        } else if let Err(e) = session.call(Request::Shutdown {
            grace_ms: SHUTDOWN_GRACE_MS,
        }) {
            // A guest that does not answer within its bound is not waited
            // for any longer (F10); the status says that writes it had not
            // synced may be lost.
            self.status.reason = Some(format!(
                "the guest did not shut down cleanly, read-write volumes may miss writes ({e}): the VMM was killed"
            ));
            kill(self.vmm_pid);
        }
        let deadline = std::time::Instant::now() + POWEROFF_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::VmmExited(_)) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.status.reason =
                        Some("the guest did not power off in time: the VMM was killed".into());
                    if let Some(pid) = self.vmm_pid {
                        // SAFETY: kill() of our own child, which the watcher reaps.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    break;
                }
            }
        }
        self.vmm_pid = None;
        self.console_written();
        super::volumes::release(&self.pod.path);
        self.remove_cgroup();
        self.status.state = PodState::Exited;
        self.status.finished = Some(now_secs());
        self.save()
    }
}

/// Logs (HUSK_LOG=info) that `what` is done for `pod`, with the time since
/// husk started: where a pod's start-up time goes (scripts/bench-run.sh).
pub fn phase(pod: &PodDir, what: &str) {
    log::info!(
        "pod {}: {what} at {} ms",
        pod.name,
        crate::trace::since_main_ms()
    );
}

/// How long a lost agent connection waits for news of the VMM's death.
const VMM_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Waits up to `limit` for the VMM watcher to report an exit, dropping
/// other events (the pod is failing anyway).
fn wait_vmm_exit(rx: &Receiver<Event>, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::VmmExited(status)) => return Some(status),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

fn spawn_vmm_watcher(mut vmm: VmmProcess, tx: Sender<Event>) {
    std::thread::spawn(move || {
        if let Ok(status) = vmm.wait() {
            let _ = tx.send(Event::VmmExited(status));
        }
    });
}

/// The pod's hostname: `--hostname`, else its name.
fn hostname(config: &PodConfig) -> String {
    config
        .network
        .hostname
        .clone()
        .unwrap_or_else(|| config.name.clone())
}

/// The agent's container spec for `app`. Fails only for a config whose
/// security settings no longer resolve (checked when the pod was made).
pub fn container_spec(
    config: &PodConfig,
    app: &App,
    tty_size: Option<TtySize>,
) -> Result<ContainerSpec, PodError> {
    let (cpu_quota_us, cpu_period_us) = match app.cpus {
        Some(c) => (
            Some((c * 100_000.0).round().max(1000.0) as u64),
            Some(100_000),
        ),
        None => (None, None),
    };
    let security = app
        .security
        .to_spec()
        .map_err(|e| PodError::Usage(format!("app {}: {e}", app.name)))?;
    Ok(ContainerSpec {
        id: app.name.clone(),
        rootfs: guest_rootfs(&app.name),
        hostname: Some(hostname(config)),
        image: app.image.config.clone(),
        process: ProcessSpec {
            entrypoint: app.entrypoint.clone(),
            args: app.command.clone(),
            env: app.env.clone(),
            cwd: app.workdir.clone(),
            user: app.user.clone(),
            tty: app.tty,
            tty_size,
            stdin: app.stdin,
            rlimits: Vec::new(),
        },
        resources: Resources {
            memory_max: app.memory,
            cpu_quota_us,
            cpu_period_us,
            pids_max: app.pids,
        },
        mounts: ["resolv.conf", "hosts"]
            .iter()
            .map(|f| MountSpec {
                source: format!("{}/{f}", crate::net::GUEST_NET_DIR),
                destination: format!("/etc/{f}"),
                read_only: true,
            })
            .chain(app.mounts.iter().map(|m| MountSpec {
                source: guest_volume(&m.volume),
                destination: m.path.clone(),
                read_only: m.read_only,
            }))
            .collect(),
        security,
    })
}

fn agent_error(e: ClientError) -> PodError {
    PodError::Agent(match e {
        ClientError::Agent(r) => r.message,
        other => other.to_string(),
    })
}

/// A failed container start, with the shell's 126/127 when the command
/// could not be executed or found.
pub fn app_start_error(app: &str, e: ClientError) -> PodError {
    match e {
        ClientError::Agent(r) if r.kind == ErrorKind::Spawn => {
            let kind = if r.message.contains("No such file or directory") {
                Failure::CommandNotFound
            } else if r.message.contains("Permission denied") {
                Failure::CannotInvoke
            } else {
                Failure::Runtime
            };
            PodError::AppStart {
                app: app.to_owned(),
                message: r.message,
                kind,
            }
        }
        other => agent_error(other),
    }
}
