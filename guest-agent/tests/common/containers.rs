//! Containers for the host tests: a busybox root file system and helpers
//! to create, exec into, stop and probe containers through the agent.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::args;
use husk_agent_client::{ClientError, Process, Session};
use husk_proto::{ContainerSpec, ExitStatus, ImageConfig, ProcessSpec, Reply, Request};

pub const BUSYBOX: &str = "/usr/bin/busybox";

/// A busybox root file system with a passwd database, removed when dropped.
pub fn rootfs() -> Option<super::Scratch> {
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} (busybox-static) is not installed");
        return None;
    }
    let dir = super::Scratch::new("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "home/app"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "echo", "cat", "hostname", "id", "ls", "sleep", "ps", "pwd", "grep", "wc", "kill",
        "env", "true", "mount", "tty", "stty", "mknod", "chmod", "head", "touch", "stat", "tr",
        "chown", "mkdir",
    ] {
        symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    Some(dir)
}

pub fn spec(id: &str, rootfs: &Path, script: &str) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        rootfs: rootfs.display().to_string(),
        hostname: Some("box".into()),
        image: ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo default".into()],
            env: vec!["FROM_IMAGE=1".into(), "PATH=/bin".into()],
            working_dir: "/tmp".into(),
            user: String::new(),
        },
        process: ProcessSpec {
            args: args(&[script]),
            ..Default::default()
        },
        resources: Default::default(),
        mounts: Vec::new(),
        security: Default::default(),
    }
}

pub fn create(s: &Session, spec: ContainerSpec) -> Result<Process, ClientError> {
    s.start_process(Request::CreateContainer(Box::new(spec)))
}

pub fn output(p: &Process) -> (String, String, ExitStatus) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (status, _) = p.wait_with_output(&mut out, &mut err).unwrap();
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        status,
    )
}

/// Creates container `id` running `script` (which must print `ready` first)
/// and waits for that line.
pub fn start_ready(s: &Session, id: &str, root: &Path, script: &str) -> Process {
    let p = create(s, spec(id, root, script)).unwrap();
    assert_eq!(
        p.next_event().unwrap(),
        husk_agent_client::ProcEvent::Stdout(b"ready\n".to_vec())
    );
    p
}

/// The process's stdout up to and including a `ready` line (what a script
/// prints before it); anything but stdout before it fails the test.
pub fn stdout_until_ready(p: &Process) -> String {
    let mut first = String::new();
    while !first.contains("ready") {
        match p.next_event().unwrap() {
            husk_agent_client::ProcEvent::Stdout(b) => first.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("{other:?} after {first}"),
        }
    }
    first
}

/// Starts `argv` in running container `container`.
pub fn exec_in(s: &Session, container: &str, argv: &[&str]) -> Result<Process, ClientError> {
    exec_as(s, container, None, argv)
}

/// Starts `argv` in running container `container` as `user` (the image's
/// user without one).
pub fn exec_as(
    s: &Session,
    container: &str,
    user: Option<&str>,
    argv: &[&str],
) -> Result<Process, ClientError> {
    s.start_process(Request::Exec {
        container: Some(container.into()),
        process: Box::new(ProcessSpec {
            args: args(argv),
            user: user.map(str::to_owned),
            ..Default::default()
        }),
    })
}

/// Stops `p` (an app that does not ignore SIGTERM), expects SIGTERM to
/// end it, and removes container `id`.
pub fn stop_and_remove(s: &Session, p: &Process, id: &str) {
    let reply = s
        .call(Request::Stop {
            proc: p.proc,
            grace_ms: 5000,
        })
        .unwrap();
    assert_eq!(
        reply,
        Reply::Stopped {
            status: ExitStatus::Signal(libc::SIGTERM)
        }
    );
    s.call(Request::RemoveContainer { id: id.into() }).unwrap();
}

/// The agent's error for a request that must fail.
pub fn refused(r: Result<Process, ClientError>) -> husk_proto::ErrorReply {
    match r {
        Err(ClientError::Agent(e)) => e,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started"),
    }
}

pub fn bind(source: &Path, destination: &str, read_only: bool) -> husk_proto::MountSpec {
    husk_proto::MountSpec {
        source: source.display().to_string(),
        destination: destination.into(),
        read_only,
    }
}

pub fn mounted_at(path: &Path) -> bool {
    let p = path.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}
