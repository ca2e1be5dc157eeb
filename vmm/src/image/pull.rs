//! `husk pull`, run in a helper process, `husk-pull`, installed beside
//! `husk`.
//!
//! Why a second binary: `husk` is also every pod's VMM process, whose
//! resident memory is a measured target (≤ 3 MiB). The registry client
//! (reqwest, hyper, tokio, rustls, ring) is ~6 MB of code and
//! relocated data; linked into `husk`, it took the VMM's own RSS from ~3.0
//! to ~5.0 MiB at first KVM_RUN (release build, same kernel) although the
//! VMM never runs any of it: the loader relocates its data and the kernel
//! faults its code in around what the VMM does run. So `husk` keeps only
//! this module, which starts the helper and reads its answer; the helper
//! (`src/bin/husk-pull.rs`) runs [`super::registry::pull_here`].
//!
//! Protocol: `husk-pull --root ROOT [--insecure] [--creds FILE]
//! [--policy FILE] [--progress] -- REF`, or `husk-pull --root ROOT
//! [--policy FILE] [--tag NAME] --aci FILE` to import an App Container
//! Image (parsed there too: [`super::aci`]); stderr is the caller's (progress bars); stdout is one
//! line: `ok <name> <manifest digest>`, or `error <exit status> <message>`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Image, ImageError, Store};
use crate::failure::Failure;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Allow plain HTTP and unverified TLS to any registry.
    pub insecure: bool,
    /// A docker/podman `auth.json` to take credentials from (only this one).
    pub credentials_file: Option<PathBuf>,
    /// Show progress bars (the CLI sets it when stderr is a terminal).
    pub progress: bool,
    /// Decide with this policy file instead of the one in force
    /// (`<root>/policy.json`, `/etc/containers/policy.json`, built-in).
    pub policy_file: Option<PathBuf>,
}

/// The helper: `$HUSK_PULL` if set, else `husk-pull` beside the running
/// executable, else from `PATH`.
fn helper() -> PathBuf {
    if let Some(p) = std::env::var_os("HUSK_PULL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let beside = exe.with_file_name("husk-pull");
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("husk-pull")
}

/// Pulls `reference` into `store` (through the helper); the image is named
/// `reference` normalised (`busybox` → `docker.io/library/busybox:latest`).
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<Image, ImageError> {
    // A malformed reference needs no helper to say so.
    super::reference::parse(reference)?;
    let mut args: Vec<OsString> = Vec::new();
    if opts.insecure {
        args.push("--insecure".into());
    }
    if let Some(c) = &opts.credentials_file {
        args.extend(["--creds".into(), c.into()]);
    }
    if let Some(p) = &opts.policy_file {
        args.extend(["--policy".into(), p.into()]);
    }
    if opts.progress {
        args.push("--progress".into());
    }
    args.extend(["--".into(), reference.into()]);
    run_helper(store, args)
}

/// Imports the App Container Image `path` (through the helper, which
/// parses it: see [`super::aci`]); `tag` is the name the caller expects.
pub fn import_aci(
    store: &Store,
    path: &Path,
    tag: Option<&str>,
    policy_file: Option<&Path>,
) -> Result<Image, ImageError> {
    if let Some(t) = tag {
        super::reference::parse(t)?;
    }
    let mut args: Vec<OsString> = Vec::new();
    if let Some(p) = policy_file {
        args.extend(["--policy".into(), p.into()]);
    }
    if let Some(t) = tag {
        args.extend(["--tag".into(), t.into()]);
    }
    // Absolute: the helper's working directory is ours, but say it plainly.
    let path = std::path::absolute(path)
        .map_err(ImageError::io(format!("cannot resolve {}", path.display())))?;
    args.extend(["--aci".into(), path.into()]);
    run_helper(store, args)
}

/// Runs the helper with `--root` and `args`; reads its answer.
///
/// The helper dies with its caller (`PR_SET_PDEATHSIG`): a `husk pull` or
/// `husk run` that is killed stops its pull too, as a pull stops with the
/// `docker pull` or `podman pull` that made it, instead of going on to
/// store an image nobody waits for any more. The store needs no more than
/// that: a pull killed at any point leaves only debris (`husk check`). The
/// signal follows the thread that forked, which waits here for the helper.
fn run_helper(store: &Store, args: Vec<OsString>) -> Result<Image, ImageError> {
    use std::os::unix::process::CommandExt;
    let root = store.dir().parent().unwrap_or(store.dir());
    let helper = helper();
    // SAFETY: getpid() has no preconditions.
    let caller = unsafe { libc::getpid() };
    let mut cmd = Command::new(&helper);
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: the hook runs in the child between fork and exec and calls
    // only prctl and getppid, which are async-signal-safe.
    unsafe { cmd.pre_exec(move || crate::process::die_with_parent(libc::SIGKILL, caller)) };
    let out = cmd.output().map_err(ImageError::io(format!(
        "cannot run the pull helper {}",
        helper.display()
    )))?;
    let text = String::from_utf8_lossy(&out.stdout);
    answer(store, text.lines().last().unwrap_or(""), &helper)
}

/// Interprets the helper's answer line.
fn answer(store: &Store, line: &str, helper: &Path) -> Result<Image, ImageError> {
    let mut f = line.splitn(3, ' ');
    match (f.next(), f.next(), f.next()) {
        (Some("ok"), Some(name), Some(digest)) => store.load(name, digest),
        (Some("error"), Some(code), Some(message)) => Err(ImageError::Helper {
            kind: answer_kind(code),
            message: message.to_string(),
        }),
        _ => Err(ImageError::Helper {
            kind: Failure::Runtime,
            message: format!("the pull helper {} failed", helper.display()),
        }),
    }
}

/// The helper's answer for `result` (see the module doc).
pub fn answer_line(result: &Result<Image, ImageError>) -> String {
    match result {
        Ok(img) => format!("ok {} {}", img.name, img.manifest_digest),
        Err(e) => format!(
            "error {} {}",
            answer_code(e.kind()),
            crate::report::error_line(e)
        ),
    }
}

/// The failure kind in an answer line: the helper names it by its exit
/// status, except bad usage, which shares 125 with a runtime failure and
/// travels as `usage`.
fn answer_code(kind: Failure) -> String {
    match kind {
        Failure::Usage => "usage".to_owned(),
        other => other.exit_status().to_string(),
    }
}

fn answer_kind(code: &str) -> Failure {
    match code {
        "usage" => Failure::Usage,
        n => n
            .parse()
            .ok()
            .and_then(Failure::from_exit_status)
            .unwrap_or(Failure::Runtime),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        let root = std::env::temp_dir().join(format!("husk-pull-answer-{}", std::process::id()));
        let store = Store::open(&root).unwrap();
        let err: Result<Image, ImageError> = Err(ImageError::NotInRegistry("x: not\nfound".into()));
        let line = answer_line(&err);
        assert_eq!(line, "error 120 x: not found");
        let back = answer(&store, &line, Path::new("h")).unwrap_err();
        assert_eq!(back.kind(), Failure::ImageNotFound);
        assert_eq!(back.to_string(), "x: not found");
        let usage: Result<Image, ImageError> = Err(ImageError::Usage("bad".into()));
        let back = answer(&store, &answer_line(&usage), Path::new("h")).unwrap_err();
        assert_eq!(back.kind(), Failure::Usage);
        let garbage = answer(&store, "", Path::new("h")).unwrap_err();
        assert_eq!(garbage.kind(), Failure::Runtime);
    }
}
