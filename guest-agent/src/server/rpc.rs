//! Request handlers: validate, do the work, map the error to a wire kind.

use std::sync::Arc;
use std::time::Duration;

use husk_proto::{
    ErrorKind, ErrorReply, Outcome, ProcessSpec, Reply, Request, TtySize, PROTOCOL_VERSION,
};

use super::conn::software;
use super::Agent;
use crate::console::chain;
use crate::container::{spec, ContainerError};
use crate::outbox::Outbox;
use crate::supervise::{ExitSource, Launch, Pending, StdioPlan, SuperviseError};
use crate::unpack::{self, UnpackError};
use crate::users;

pub fn internal(message: String) -> ErrorReply {
    ErrorReply {
        kind: ErrorKind::Internal,
        message,
    }
}

fn err(kind: ErrorKind, e: &dyn std::error::Error) -> ErrorReply {
    ErrorReply {
        kind,
        message: chain(e),
    }
}

fn supervise_kind(e: &SuperviseError) -> ErrorKind {
    match e {
        SuperviseError::Spawn(_) => ErrorKind::Spawn,
        SuperviseError::NotFound(_) => ErrorKind::NotFound,
        SuperviseError::NoTty(_) | SuperviseError::NotOwned(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

fn container_kind(e: &ContainerError) -> ErrorKind {
    match e {
        ContainerError::Spec(_)
        | ContainerError::User(_)
        | ContainerError::Rootfs { .. }
        | ContainerError::MountSource { .. }
        | ContainerError::Seccomp(_) => ErrorKind::BadRequest,
        ContainerError::Exists(_) => ErrorKind::AlreadyExists,
        ContainerError::NotFound(_) => ErrorKind::NotFound,
        ContainerError::Running(_) | ContainerError::NotRunning(_) => ErrorKind::BadRequest,
        ContainerError::Supervise(s) => supervise_kind(s),
        ContainerError::Init(_) => ErrorKind::Spawn,
        _ => ErrorKind::Internal,
    }
}

fn unpack_kind(e: &UnpackError) -> ErrorKind {
    match e {
        UnpackError::Spec(_) => ErrorKind::BadRequest,
        UnpackError::Digest { .. } | UnpackError::Size { .. } => ErrorKind::DigestMismatch,
        UnpackError::Hostile { .. } => ErrorKind::HostileArchive,
        _ => ErrorKind::Unpack,
    }
}

/// Handles one request. A started process comes back as `Pending`, to be
/// begun once the response has been sent.
pub fn handle(
    agent: &Arc<Agent>,
    conn: u64,
    outbox: &Arc<Outbox>,
    body: Request,
) -> (Outcome, Option<Pending>) {
    let sup = &agent.supervisor;
    let started = |p: Pending| {
        (
            Outcome::Ok(Reply::Started {
                proc: p.proc.id,
                pid: p.proc.pid,
            }),
            Some(p),
        )
    };
    let done = |r: Result<(), ErrorReply>| match r {
        Ok(()) => (Outcome::Ok(Reply::Done), None),
        Err(e) => (Outcome::Err(e), None),
    };
    match body {
        Request::Ping => (
            Outcome::Ok(Reply::Pong {
                version: PROTOCOL_VERSION,
                software: software(),
            }),
            None,
        ),
        Request::Unpack(spec) => match unpack::unpack(&spec) {
            Ok(report) => (Outcome::Ok(Reply::Unpacked(report)), None),
            Err(e) => (Outcome::Err(err(unpack_kind(&e), &e)), None),
        },
        Request::CreateContainer(spec) => {
            match agent.containers.create(sup, conn, outbox.clone(), *spec) {
                Ok(p) => started(p),
                Err(e) => (Outcome::Err(err(container_kind(&e), &e)), None),
            }
        }
        Request::Exec {
            container: Some(id),
            process,
        } => match agent
            .containers
            .exec(sup, conn, outbox.clone(), &id, &process)
        {
            Ok(p) => started(p),
            Err(e) => (Outcome::Err(err(container_kind(&e), &e)), None),
        },
        Request::Exec {
            container: None,
            process,
        } => match exec_plain(agent, conn, outbox, &process) {
            Ok(p) => started(p),
            Err(e) => (Outcome::Err(e), None),
        },
        Request::Signal { proc, signal } => done(
            sup.signal(proc, conn, signal)
                .map_err(|e| err(supervise_kind(&e), &e)),
        ),
        Request::ResizeTty { proc, rows, cols } => done(
            sup.resize(proc, conn, TtySize { rows, cols })
                .map_err(|e| err(supervise_kind(&e), &e)),
        ),
        Request::Stop { proc, grace_ms } => {
            match sup.stop(proc, conn, Duration::from_millis(grace_ms)) {
                Ok(status) => (Outcome::Ok(Reply::Stopped { status }), None),
                Err(e) => (Outcome::Err(err(supervise_kind(&e), &e)), None),
            }
        }
        Request::RemoveContainer { id } => done(
            agent
                .containers
                .remove(sup, &id)
                .map_err(|e| err(container_kind(&e), &e)),
        ),
        Request::MountShare {
            tag,
            target,
            read_only,
        } => done(mount_share(&tag, &target, read_only)),
        Request::ConfigureNetwork(spec) => done(crate::net::configure(&spec).map_err(|e| {
            let kind = match e {
                crate::net::NetError::Invalid { .. } => ErrorKind::BadRequest,
                crate::net::NetError::Io { .. } => ErrorKind::Internal,
            };
            err(kind, &e)
        })),
        // The caller powers off (or exits) after sending this reply.
        Request::Shutdown { .. } => (Outcome::Ok(Reply::Done), None),
    }
}

/// A process in the agent's own namespaces (the guest itself): for
/// diagnostics in the guest, and the supervision tests on the host.
fn exec_plain(
    agent: &Arc<Agent>,
    conn: u64,
    outbox: &Arc<Outbox>,
    process: &ProcessSpec,
) -> Result<Pending, ErrorReply> {
    let bad = |e: &dyn std::error::Error| err(ErrorKind::BadRequest, e);
    let args = process.args.clone().unwrap_or_default();
    if args.first().is_none_or(|a| a.is_empty()) {
        return Err(bad(&spec::SpecError::NoCommand));
    }
    let env = spec::merge_env(&[], &process.env).map_err(|e| bad(&e))?;
    let rlimits = spec::rlimits(&process.rlimits).map_err(|e| bad(&e))?;
    let root = crate::rooted::Root::open(std::path::Path::new("/")).ok();
    let ids = users::resolve(root.as_ref(), process.user.as_deref().unwrap_or(""))
        .map_err(|e| bad(&e))?;
    let launch = Launch {
        args,
        env,
        cwd: Some(process.cwd.clone().unwrap_or_else(|| "/".into())),
        ids,
        rlimits,
        ctty: process.tty,
        ..Launch::default()
    };
    let plan = StdioPlan {
        tty: process.tty,
        size: process.tty_size,
        stdin: process.stdin,
        ..StdioPlan::default()
    };
    agent
        .supervisor
        .start(
            launch,
            plan,
            conn,
            outbox.clone(),
            None,
            ExitSource::Reaped,
            None,
        )
        .map_err(|e| err(supervise_kind(&e), &e))
}

/// Mounts virtio-fs share `tag` at `target` (nosuid, nodev: a share's
/// content comes from the host, but set-id bits and devices in it must not
/// gain anything in the guest).
fn mount_share(tag: &str, target: &str, read_only: bool) -> Result<(), ErrorReply> {
    let bad = |m: String| ErrorReply {
        kind: ErrorKind::BadRequest,
        message: m,
    };
    let tag_ok = (1..=36).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !tag_ok {
        return Err(bad(format!(
            "share tag {tag:?} is not 1-36 of [A-Za-z0-9._-]"
        )));
    }
    if !target.starts_with('/') {
        return Err(bad(format!("mount target {target:?} is not absolute")));
    }
    let io = |what: &str, e: std::io::Error| ErrorReply {
        kind: ErrorKind::Internal,
        message: format!("{what}: {e}"),
    };
    std::fs::create_dir_all(target).map_err(|e| io(&format!("cannot create {target}"), e))?;
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    crate::sys::mount(
        tag,
        std::path::Path::new(target),
        Some("virtiofs"),
        flags,
        None,
    )
    .map_err(|e| io(&format!("cannot mount share {tag:?} on {target}"), e))
}
