//! Control messages: the handshake, requests, responses, events and credit.
//!
//! Enums are internally tagged (`{"type": "...", ...}`) so that a field added
//! later is ignored by an older peer (serde ignores unknown fields), while an
//! unknown message type is a decode error the peer reports.

use serde::{Deserialize, Serialize};

/// One control frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First frame from the host: the protocol versions it speaks.
    Hello {
        min_version: u32,
        max_version: u32,
        software: String,
    },
    /// The agent's answer to `Hello`: the version both will use.
    Welcome { version: u32, software: String },
    /// The agent's answer when no version is shared; it then closes.
    Refused { reason: String },
    /// Host → agent: do something; answered by a `Response` with this id.
    Request { id: u64, body: Request },
    /// Agent → host: the outcome of request `id`.
    Response { id: u64, result: Outcome },
    /// Agent → host: something happened that nobody asked about just now.
    Event { event: Event },
    /// Either way: the receiver of `bytes` on (`proc`, `stream`) consumed
    /// them; the sender may send that many more.
    Credit {
        proc: u32,
        stream: Stream,
        bytes: u32,
    },
}

/// A stdio stream of a process. Its number is used in data frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdin = 0,
    /// Standard output; with a TTY, everything the terminal shows.
    Stdout = 1,
    Stderr = 2,
}

impl Stream {
    pub fn from_u8(n: u8) -> Option<Stream> {
        match n {
            0 => Some(Stream::Stdin),
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }

    /// Its name, as in messages: `stdin`, `stdout`, `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What the host asks of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answered with `Reply::Pong`.
    Ping,
    /// Unpack an image's layers into a root file system.
    Unpack(Box<UnpackSpec>),
    /// Create a container and start its first process; `Reply::Started`.
    CreateContainer(Box<ContainerSpec>),
    /// Start another process, in a running container or (no container) in
    /// the agent's own namespaces; `Reply::Started`.
    Exec {
        container: Option<String>,
        process: Box<ProcessSpec>,
    },
    /// Send `signal` to process `proc` (to its container init, which
    /// forwards it, for a container's first process).
    Signal { proc: u32, signal: i32 },
    /// Change the terminal size of a TTY process.
    ResizeTty { proc: u32, rows: u16, cols: u16 },
    /// SIGTERM process `proc`, SIGKILL (its process group; for a container's
    /// first process, the whole container) after `grace_ms`; answered with
    /// `Reply::Stopped` once it has exited.
    Stop { proc: u32, grace_ms: u64 },
    /// Remove a stopped container: its cgroup and its mounts.
    RemoveContainer { id: String },
    /// Mount the virtio-fs share `tag` (from the VMM's `--share TAG=DIR`)
    /// at `target` in the guest (created if missing).
    MountShare {
        tag: String,
        target: String,
        #[serde(default)]
        read_only: bool,
    },
    /// Stop every process (SIGTERM, `grace_ms`, SIGKILL), sync and power the
    /// guest off (on the host: stop serving). Answered before powering off.
    Shutdown { grace_ms: u64 },
    /// Configure the pod's network: bring `eth0` up with the given address
    /// and default route (if any), write the files containers get as
    /// `/etc/resolv.conf` and `/etc/hosts`, and set the guest's hostname.
    /// Answered with `Reply::Done`.
    ConfigureNetwork(Box<NetworkSpec>),
}

/// The pod's network, as the agent applies it (no DHCP in the guest).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The interface's settings; `None`: loopback only.
    #[serde(default)]
    pub interface: Option<InterfaceSpec>,
    /// The hostname (of the guest, and the default of its containers).
    pub hostname: String,
    /// Name servers for `resolv.conf` (dotted IPv4).
    #[serde(default)]
    pub dns: Vec<String>,
    /// Extra `hosts` entries: (name, dotted IPv4).
    #[serde(default)]
    pub hosts: Vec<(String, String)>,
}

/// One interface's settings: IPv4, and IPv6 when the pod has it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterfaceSpec {
    /// Interface name in the guest (`eth0`).
    pub name: String,
    /// Dotted IPv4 address.
    pub address: String,
    /// Prefix length (0 to 32).
    pub prefix_len: u8,
    /// Default gateway, dotted IPv4.
    #[serde(default)]
    pub gateway: Option<String>,
    /// MTU (0: leave the driver's).
    #[serde(default)]
    pub mtu: u32,
    /// The interface's IPv6 address and default route (`None`: no IPv6
    /// address beyond the kernel's link-local one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Spec>,
}

/// One interface's static IPv6 settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ipv6Spec {
    /// The address, in RFC 5952 text form.
    pub address: String,
    /// Prefix length (0 to 128).
    pub prefix_len: u8,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<String>,
}

impl Request {
    /// Its operation's name on the wire (`ping`, `unpack`, ...).
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Unpack(_) => "unpack",
            Request::CreateContainer(_) => "create_container",
            Request::Exec { .. } => "exec",
            Request::Signal { .. } => "signal",
            Request::ResizeTty { .. } => "resize_tty",
            Request::Stop { .. } => "stop",
            Request::RemoveContainer { .. } => "remove_container",
            Request::MountShare { .. } => "mount_share",
            Request::ConfigureNetwork(_) => "configure_network",
            Request::Shutdown { .. } => "shutdown",
        }
    }
}

/// Unpack `layers`, in order, from `blob_dir` into `rootfs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UnpackSpec {
    /// Directory of blobs: the layer `sha256:<hex>` is `<blob_dir>/sha256/<hex>`
    /// (an OCI image layout's `blobs/` directory).
    pub blob_dir: String,
    pub layers: Vec<LayerSpec>,
    /// Destination; created if missing; must be empty.
    pub rootfs: String,
    /// Mount a tmpfs of this many bytes at `rootfs` first (the pod's limit).
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
    /// Refuse when the layers unpack to more than this many bytes in total.
    #[serde(default)]
    pub max_unpacked_bytes: Option<u64>,
    /// What to do with setuid/setgid files and device nodes.
    #[serde(default)]
    pub special_files: SpecialFiles,
}

/// One layer descriptor from the image manifest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LayerSpec {
    /// `sha256:<64 hex digits>`; verified while streaming.
    pub digest: String,
    /// The OCI (or Docker) layer media type: tar, tar+gzip or tar+zstd.
    pub media_type: String,
    /// The blob's exact size in bytes.
    pub size: u64,
    /// If known, the uncompressed size: a layer that inflates to more is
    /// refused (a decompression bomb).
    #[serde(default)]
    pub unpacked_size: Option<u64>,
}

/// Policy for archive members that are legitimate in some images but
/// dangerous in untrusted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialFiles {
    /// Refuse the layer (the default: images are untrusted).
    #[default]
    Refuse,
    /// Drop setuid/setgid bits and skip device nodes.
    Strip,
    /// Keep setuid/setgid bits and create device nodes.
    Keep,
}

/// A container: its root file system, its image configuration and the
/// request's overrides, its limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique within the pod: `[A-Za-z0-9_.-]{1,64}`.
    pub id: String,
    /// An unpacked root file system inside the guest.
    pub rootfs: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// From the image's config.
    #[serde(default)]
    pub image: ImageConfig,
    /// The first process: overrides of the image config.
    pub process: ProcessSpec,
    #[serde(default)]
    pub resources: Resources,
    /// Directories or files of the guest bind-mounted into the container
    /// (volumes), in order, after its /proc, /dev, /tmp… (so they can
    /// cover those too).
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Capabilities, seccomp, `no_new_privs`, read-only root, tmpfs
    /// mounts: for the first process and every `exec`.
    #[serde(default)]
    pub security: crate::SecuritySpec,
}

/// One bind mount into a container. Always nosuid and nodev; submounts of
/// `source` come along (and are read-only too with `read_only`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute path in the guest, e.g. where `mount_share` mounted a
    /// virtio-fs share. No `..` components.
    pub source: String,
    /// Absolute path inside the container, created (as a directory, or an
    /// empty file when `source` is a file) if missing. Resolved inside the
    /// container's root: the image's symlinks cannot point it outside.
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The parts of an OCI image config the agent applies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    /// `user`, `uid`, `user:group`, `uid:gid`; empty = root.
    #[serde(default)]
    pub user: String,
}

/// A process to start. For a container's first process every field
/// overrides the image config; for `Exec`, `args` is required.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Replaces the image's Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd (for `Exec`: the whole command line).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// `KEY=VALUE` entries added to (and overriding) the image's.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Run on a pseudo terminal (stdout carries everything it shows).
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub tty_size: Option<TtySize>,
    /// Stream the host's stdin to it (otherwise stdin is /dev/null).
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// One resource limit: `resource` is the name without `RLIMIT_`, e.g. `nofile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: String,
    pub soft: u64,
    pub hard: u64,
}

/// cgroup v2 limits of a container; `None` = unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// memory.max in bytes.
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// cpu.max: quota per period, both in microseconds.
    #[serde(default)]
    pub cpu_quota_us: Option<u64>,
    #[serde(default)]
    pub cpu_period_us: Option<u64>,
    /// pids.max.
    #[serde(default)]
    pub pids_max: Option<u64>,
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Reply),
    Err(ErrorReply),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        version: u32,
        software: String,
    },
    Unpacked(UnpackReport),
    /// A process started; `proc` names it in later requests and frames.
    Started {
        proc: u32,
        pid: i32,
    },
    /// A container stopped; the status of its first process.
    Stopped {
        status: ExitStatus,
    },
    Done,
}

/// Figures from an unpack.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnpackReport {
    pub layers: u32,
    /// Blob bytes read (and hashed).
    pub compressed_bytes: u64,
    /// Tar stream bytes after decompression.
    pub unpacked_bytes: u64,
    /// Archive members applied (whiteouts included).
    pub entries: u64,
    /// Members dropped by the `strip` policy.
    pub stripped: u64,
}

/// A failed request: a machine-readable kind and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or inconsistent.
    BadRequest,
    /// A container or process it names does not exist.
    NotFound,
    /// It names something that already exists.
    AlreadyExists,
    /// A blob does not match its digest or size.
    DigestMismatch,
    /// An archive tried to escape the root or holds a refused member.
    HostileArchive,
    /// Unpacking failed otherwise (I/O, corrupt compression, limits).
    Unpack,
    /// A process or container could not be started.
    Spawn,
    /// The feature is not available in this agent or guest.
    Unsupported,
    /// Anything else inside the agent.
    Internal,
}

/// Something the agent reports unasked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Process `proc` ended. Sent after the last byte of its output.
    Exited {
        proc: u32,
        status: ExitStatus,
        /// Its container's cgroup recorded an OOM kill while it ran.
        oom_killed: bool,
    },
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_stable() {
        let msg = Message::Request {
            id: 1,
            body: Request::Ping,
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"request","id":1,"body":{"op":"ping"}}"#
        );
        let msg = Message::Response {
            id: 1,
            result: Outcome::Ok(Reply::Started { proc: 2, pid: 40 }),
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"response","id":1,"result":{"ok":{"reply":"started","proc":2,"pid":40}}}"#
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_defaults_apply() {
        let json = r#"{"type":"request","id":3,"later_field":1,"body":{"op":"exec",
            "container":null,"process":{"args":["true"],"new_knob":true}}}"#;
        let msg: Message = serde_json::from_str(json).unwrap();
        let Message::Request {
            body: Request::Exec { process, .. },
            ..
        } = msg
        else {
            panic!("wrong message");
        };
        assert_eq!(process.args, Some(vec!["true".to_string()]));
        assert!(!process.tty && !process.stdin);
    }

    #[test]
    fn op_names_are_the_wire_tags() {
        let requests = [
            Request::Ping,
            Request::Unpack(Box::default()),
            Request::CreateContainer(Box::default()),
            Request::Exec {
                container: None,
                process: Box::default(),
            },
            Request::Signal { proc: 1, signal: 2 },
            Request::ResizeTty {
                proc: 1,
                rows: 1,
                cols: 1,
            },
            Request::Stop {
                proc: 1,
                grace_ms: 0,
            },
            Request::RemoveContainer { id: "a".into() },
            Request::MountShare {
                tag: "t".into(),
                target: "/t".into(),
                read_only: true,
            },
            Request::Shutdown { grace_ms: 0 },
        ];
        for r in requests {
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["op"], r.op(), "{r:?}");
        }
    }

    #[test]
    fn shell_codes() {
        assert_eq!(ExitStatus::Code(42).shell_code(), 42);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
    }
}
