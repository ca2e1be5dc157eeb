//! Pod commands: `run`, `pod run`, `ps`, `logs`, `exec`, `stop`, `rm`,
//! `inspect`, `gc`. They work on the pod directories under
//! `$HUSK_ROOT/pods` (see `pod::state`); `exec` talks to the pod's agent.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use husk_agent_client::Session;
use husk_proto::{ProcessSpec, Request};
use signal_hook::iterator::Signals;

use super::escape::escape;
use super::print_error;
use super::run::{self, PodRunArgs, RunArgs};
use crate::image::Store;
use crate::pod::attach::{self, RawTerminal};
use crate::pod::state::{now_secs, PodDir, PodState, PodStatus, PodStore};
use crate::pod::supervisor::{app_start_error, STOP_REQUEST_FILE};
use crate::pod::{vm, PodError};

/// The pod commands, flattened into `husk`'s own.
#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Run a command in a new pod (its own microVM).
    Run(RunArgs),
    /// List pods (running ones; -a for all).
    Ps(PsArgs),
    /// Print an app's output.
    Logs(LogsArgs),
    /// Run a command in a running pod's app.
    Exec(ExecArgs),
    /// Stop pods: SIGTERM to their apps, SIGKILL after the grace period.
    Stop(StopArgs),
    /// Remove pods that have ended.
    Rm(RmArgs),
    /// Print pods' configuration and state as JSON.
    Inspect(InspectArgs),
    /// Remove ended pods and image blobs no image uses.
    Gc,
    /// Multi-app pods.
    #[command(subcommand)]
    Pod(PodSub),
}

/// `husk pod ...`.
#[derive(Debug, Subcommand)]
pub enum PodSub {
    /// Run the apps of a pod manifest (TOML or JSON) in one microVM.
    Run(PodRunArgs),
    /// Internal: supervise a detached pod.
    #[command(hide = true)]
    Supervise { dir: PathBuf },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show pods that have ended too.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `husk logs`: the app's stdout records go to stdout, its stderr records
/// to stderr, as `docker logs` does.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing output as it comes (across log rotations), until the pod ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Put each line's time (RFC 3339, UTC, when the host received it) in front.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only lines from this time: RFC 3339 (2026-12-06T17:05:08Z), a date,
    /// Unix seconds, or a duration before now (10m, 1h30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only lines up to this time (as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only the last N lines ("all": every line).
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<String>,
    /// Which app (default: the first).
    #[arg(long)]
    pub app: Option<String>,
    pub pod: String,
}

impl LogsArgs {
    /// The query these flags ask for, times relative to `now`.
    fn query(&self, now: u64) -> Result<crate::pod::logs::read::Query, PodError> {
        use crate::pod::logs::time::parse_point;
        let point = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| parse_point(t, now).map_err(|e| PodError::Usage(format!("{flag} {e}"))))
                .transpose()
        };
        let tail = match self.tail.as_deref().map(str::trim) {
            None | Some("all") => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| {
                PodError::Usage(format!(
                    "--tail {n:?}: expected a number of lines or \"all\""
                ))
            })?),
        };
        Ok(crate::pod::logs::read::Query {
            since: point("--since", &self.since)?,
            until: point("--until", &self.until)?,
            tail,
            timestamps: self.timestamps,
        })
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Stream stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User: UID[:GID] or a name.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Which app (default: the first).
    #[arg(long)]
    pub app: Option<String>,
    pub pod: String,
    /// The command and its arguments.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds between SIGTERM and SIGKILL (default: the pod's, 10).
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop running pods first (SIGKILL at once).
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub pods: Vec<String>,
}

/// Runs a pod command; returns the exit status.
pub fn run(cmd: PodCommand) -> i32 {
    let result = match cmd {
        PodCommand::Run(a) => return run::run(a),
        PodCommand::Pod(PodSub::Run(a)) => return run::pod_run(a),
        PodCommand::Pod(PodSub::Supervise { dir }) => return run::supervise_detached(dir),
        PodCommand::Ps(a) => ps(a),
        PodCommand::Logs(a) => logs(a),
        PodCommand::Exec(a) => exec(a),
        PodCommand::Stop(a) => each(&a.pods, |pods, pod| stop(pods, pod, a.time)),
        PodCommand::Rm(a) => each(&a.pods, |pods, pod| rm(pods, pod, a.force)),
        PodCommand::Inspect(a) => inspect(a),
        PodCommand::Gc => gc(),
    };
    result.unwrap_or_else(|e| {
        print_error(&e);
        e.kind().exit_status()
    })
}

fn pod_store() -> Result<PodStore, PodError> {
    PodStore::open(&Store::default_root())
}

/// Applies `f` to each named pod; the first failure is the exit status,
/// but every pod is tried (as `docker stop a b` does).
fn each(
    names: &[String],
    f: impl Fn(&PodStore, &PodDir) -> Result<(), PodError>,
) -> Result<i32, PodError> {
    let pods = pod_store()?;
    let mut code = 0;
    for name in names {
        match pods.find(name).and_then(|p| f(&pods, &p).map(|()| p)) {
            Ok(_) => println!("{}", escape(name)),
            Err(e) => {
                print_error(&e);
                if code == 0 {
                    code = e.kind().exit_status();
                }
            }
        }
    }
    Ok(code)
}

fn ago(secs: Option<u64>) -> String {
    let Some(t) = secs else { return "-".into() };
    let d = now_secs().saturating_sub(t);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

fn describe(status: &PodStatus) -> String {
    match status.state {
        PodState::Exited => {
            let codes: Vec<String> = status
                .apps
                .iter()
                .filter_map(|a| a.shell_code().map(|c| c.to_string()))
                .collect();
            format!("Exited ({}) {}", codes.join(","), ago(status.finished))
        }
        PodState::Failed => format!(
            "Failed: {}",
            status.reason.as_deref().unwrap_or("unknown reason")
        ),
        PodState::Running => format!("Up since {}", ago(status.started)),
        other => format!("{other:?}"),
    }
}

fn ps(args: PsArgs) -> Result<i32, PodError> {
    let pods = pod_store()?;
    let mut rows = Vec::new();
    for pod in pods.list()? {
        let Some(status) = readable_status(&pod) else {
            continue;
        };
        if !args.all && !status.state.is_active() {
            continue;
        }
        let config = pod.read_config().ok();
        rows.push((pod, config, status));
    }
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(pod, config, status)| {
                serde_json::json!({
                    "id": pod.id,
                    "name": pod.name,
                    "images": config.as_ref().map(|c| c.apps.iter().map(|a| a.image.name.clone()).collect::<Vec<_>>()),
                    "created": config.as_ref().map(|c| c.created),
                    "state": status.state,
                    "reason": status.reason,
                    "apps": status.apps,
                    "network": config.as_ref().map(|c| c.network.mode),
                    "ports": config.as_ref().map(|c| c.network.ports.iter().map(ToString::to_string).collect::<Vec<_>>()),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(0);
    }
    println!(
        "{:<12}  {:<24}  {:<32}  {:<12}  {:<24}  PORTS",
        "POD ID", "NAME", "IMAGE", "CREATED", "STATUS"
    );
    for (pod, config, status) in rows {
        let image = config
            .as_ref()
            .map(|c| {
                c.apps
                    .iter()
                    .map(|a| a.image.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let ports = config
            .as_ref()
            .map(|c| {
                c.network
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let line = format!(
            "{:<12}  {:<24}  {:<32}  {:<12}  {:<24}  {}",
            escape(&pod.id),
            escape(&pod.name),
            escape(&image),
            ago(config.map(|c| c.created)),
            escape(&describe(&status)),
            escape(&ports)
        );
        println!("{}", line.trim_end());
    }
    Ok(0)
}

fn logs(args: LogsArgs) -> Result<i32, PodError> {
    use crate::pod::logs::read;
    // The flags first: a bad one is a usage error whatever the pod.
    let query = args.query(crate::pod::logs::time::now())?;
    let pods = pod_store()?;
    let pod = pods.find(&args.pod)?;
    let config = pod.read_config()?;
    let app = config
        .app(args.app.as_deref())
        .ok_or_else(|| PodError::Usage(format!("pod {} has no app {:?}", pod.name, args.app)))?;
    let path = pod.log_path(&app.name);
    let active = || pod.read_status().is_ok_and(|s| s.state.is_active());
    let follow: Option<&dyn Fn() -> bool> = if args.follow { Some(&active) } else { None };
    let result = if config.logs.is_some() || read::has_records(&path) {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut err = std::io::BufWriter::new(std::io::stderr().lock());
        read::print(&path, query, follow, &mut out, &mut err).and_then(|()| {
            out.flush()?;
            err.flush()
        })
    } else {
        if args.since.is_some() || args.until.is_some() || args.tail.is_some() || args.timestamps {
            return Err(PodError::Usage(format!(
                "pod {} was made by an older husk: its log has no times or streams, so --since, --until, --tail and --timestamps do not apply (husk logs without them prints it)",
                pod.name
            )));
        }
        read::print_raw(&path, follow, &mut std::io::stdout().lock())
    };
    match result {
        // The reader went away (`husk logs | head`): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(PodError::io(&path, e)),
        Ok(()) => Ok(0),
    }
}

fn exec(args: ExecArgs) -> Result<i32, PodError> {
    let pods = pod_store()?;
    let pod = pods.find(&args.pod)?;
    let status = pod.read_status()?;
    if status.state != PodState::Running {
        return Err(PodError::NotRunning(pod.name));
    }
    let config = pod.read_config()?;
    let app = config
        .app(args.app.as_deref())
        .ok_or_else(|| PodError::Usage(format!("pod {} has no app {:?}", pod.name, args.app)))?;
    // Handled from here on (F10): until the process runs, a signal ends
    // `husk exec` at once with 128+N (nothing in the guest to pass it to,
    // and a hung agent must not make it unkillable); then it is forwarded.
    let signals = Signals::new(attach::FORWARDED_SIGNALS)
        .map_err(|e| PodError::io(std::path::Path::new("signals"), e))?;
    let target = Arc::new(Mutex::new(None));
    handle_signals(signals, Arc::clone(&target), args.tty);
    let session = Arc::new(vm::connect_running(&pod)?);
    let tty_size = if args.tty {
        attach::terminal_size()
    } else {
        None
    };
    let process = session
        .start_process(Request::Exec {
            container: Some(app.name.clone()),
            process: Box::new(ProcessSpec {
                args: Some(args.command.clone()),
                env: args.env.clone(),
                cwd: args.workdir.clone(),
                user: args.user.clone(),
                tty: args.tty,
                tty_size,
                stdin: args.interactive,
                ..ProcessSpec::default()
            }),
        })
        .map_err(|e| app_start_error(&app.name, e))?;
    *target.lock().unwrap_or_else(|e| e.into_inner()) = Some((Arc::clone(&session), process.proc));
    let _raw = if args.tty && attach::stdin_is_terminal() {
        RawTerminal::enable()
    } else {
        None
    };
    let stdin: Option<Box<dyn Read + Send>> = if args.interactive {
        Some(Box::new(std::io::stdin()))
    } else {
        None
    };
    let (status, _) = husk_agent_client::run_attached(
        &process,
        stdin,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .map_err(|e| PodError::Agent(e.to_string()))?;
    Ok(status.shell_code())
}

/// Where `husk exec` forwards signals once its process runs.
type SignalTarget = Arc<Mutex<Option<(Arc<Session>, u32)>>>;

/// Handles `signals` ([`attach::FORWARDED_SIGNALS`]) on a thread of its own:
/// before `target` is set, any but SIGWINCH ends this process with 128+N;
/// then each is forwarded to the process, until the session ends. A
/// process that ignores the signal keeps running, as it would under a
/// local shell; `husk exec` ends when it does (SIGKILL to `husk exec` drops
/// the connection, which kills the process in the guest). A forward the
/// agent does not answer ends the session, and `husk exec` with it (125).
fn handle_signals(mut signals: Signals, target: SignalTarget, tty: bool) {
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let to = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some((session, proc)) = to else {
                if sig != libc::SIGWINCH {
                    std::process::exit(128 + sig);
                }
                continue;
            };
            let Some(request) = attach::forward_request(proc, sig, tty) else {
                continue;
            };
            if session.call(request).is_err() {
                break;
            }
        }
    });
}

/// Time `stop` allows a supervisor beyond the grace period to wind down.
const STOP_SLACK: Duration = husk_agent_client::timeouts::CLI_STOP_SLACK;

fn stop(pods: &PodStore, pod: &PodDir, grace_secs: Option<u64>) -> Result<(), PodError> {
    let _ = pods;
    let status = pod.read_status()?;
    if !status.state.is_active() {
        return Ok(());
    }
    let config = pod.read_config()?;
    let grace_ms = grace_secs.map_or(config.stop_grace_ms, |s| s.saturating_mul(1000));
    crate::pod::state::write_atomic(
        &pod.path.join(STOP_REQUEST_FILE),
        grace_ms.to_string().as_bytes(),
    )?;
    let Some(pid) = status.supervisor_pid else {
        return Ok(());
    };
    // SAFETY: kill() sends a signal; the pid is the live supervisor's (its
    // start time was checked by read_status just now).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_millis(grace_ms) + STOP_SLACK;
    while Instant::now() < deadline {
        if !pod.read_status()?.state.is_active() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The supervisor is stuck: kill it; its VMM dies with it (PDEATHSIG).
    let mut status = pod.read_status()?;
    if status.state.is_active() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        status.state = PodState::Failed;
        status.reason = Some("killed by husk stop: the pod did not stop in time".into());
        status.finished = Some(now_secs());
        pod.write_status(&status)?;
    }
    Ok(())
}

fn rm(pods: &PodStore, pod: &PodDir, force: bool) -> Result<(), PodError> {
    if pod.read_status()?.state.is_active() {
        if !force {
            return Err(PodError::StillRunning {
                pod: pod.name.clone(),
            });
        }
        stop(pods, pod, Some(0))?;
    }
    pods.remove(pod)
}

fn inspect(args: InspectArgs) -> Result<i32, PodError> {
    let pods = pod_store()?;
    let mut out = Vec::new();
    for name in &args.pods {
        let pod = pods.find(name)?;
        let config = pod.read_config().ok();
        // What each app runs with inside the guest, in a few lines (the
        // config has the same, custom seccomp profiles whole).
        let security: Vec<_> = config
            .iter()
            .flat_map(|c| &c.apps)
            .map(|a| {
                let mut s = a.security.summary();
                s["app"] = a.name.clone().into();
                s
            })
            .collect();
        out.push(serde_json::json!({
            "id": pod.id,
            "name": pod.name,
            "path": pod.path,
            "security": security,
            "config": config,
            "status": pod.read_status()?,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(0)
}

/// The pod's status, or None with a warning when it cannot be read (a torn
/// `status.json`): one damaged pod does not hide the others from `husk ps`
/// or keep `husk gc` from the rest; `husk check --repair` mends it.
fn readable_status(pod: &PodDir) -> Option<PodStatus> {
    match pod.read_status() {
        Ok(status) => Some(status),
        Err(e) => {
            eprintln!(
                "husk: warning: pod {} ({}) skipped: {} (husk check --repair mends it)",
                escape(&pod.name),
                escape(&pod.id),
                crate::report::error_line(&e)
            );
            None
        }
    }
}

fn gc() -> Result<i32, PodError> {
    let root = Store::default_root();
    let pods = PodStore::open(&root)?;
    let mut code = crate::failure::SUCCESS;
    for pod in pods.list()? {
        // Whether it runs is unknown: left alone, and gc says so.
        let Some(status) = readable_status(&pod) else {
            code = crate::failure::Failure::Integrity.exit_status();
            continue;
        };
        if status.state.is_active() {
            continue;
        }
        // A pod that cannot be removed (its host cgroup will not go) is
        // reported and kept for the next `gc`; the others still go.
        if let Err(e) = pods.remove(&pod) {
            print_error(&e);
            code = e.kind().exit_status();
            continue;
        }
        println!(
            "removed pod {} ({})",
            escape(&pod.name),
            escape(&describe(&status))
        );
    }
    let store = Store::open(&root)?;
    let report = store.gc()?;
    println!(
        "removed {} unused blob(s), {:.1} MiB",
        report.blobs,
        report.bytes as f64 / (1u64 << 20) as f64
    );
    Ok(code)
}
