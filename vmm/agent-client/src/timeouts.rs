//! How long the host waits for the guest, every bound in one place.
//!
//! The guest is not trusted to answer (security review F10): an agent that
//! accepts a connection and then says nothing would otherwise hang `husk
//! exec`, a pod's start, or a foreground pod's shutdown forever. Every wait
//! for the guest has a bound here; past it the session ends with a one-line
//! reason naming what did not come (the CLI exits 125). The values are far
//! above what a healthy guest needs even in the slowest place husk runs (a
//! nested testbed VM on a loaded two-core host, where a request takes
//! milliseconds and a boot a few seconds): they only catch a guest that
//! will never answer, and must never fire on a slow one.
//!
//! What the guest's *apps* do takes as long as it takes: a process's
//! output and exit are never waited for with a bound.

use std::time::Duration;

use husk_proto::Request;

/// The agent's `Welcome` after our `Hello` (and the VMM's `OK` to a vsock
/// `CONNECT`). The agent answers from its accept loop before it touches a
/// disk or a process, so this is milliseconds when it is alive.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// Replies the agent gives from memory: `ping`, `signal`, `resize_tty`.
pub const QUICK_REPLY: Duration = Duration::from_secs(10);

/// Every other reply without a duration of its own: mounting a share,
/// creating, exec'ing or removing a container. Bounded work in the guest
/// (mounts, cgroup files, a fork and an exec); seconds at the very worst.
pub const REPLY: Duration = Duration::from_secs(60);

/// `stop` and `shutdown` answer once their grace period has run out and
/// what was left got SIGKILL: this much beyond the grace, for the kill to
/// land and, at shutdown, the guest to sync read-write volumes.
pub const STOP_SLACK: Duration = Duration::from_secs(60);

/// `unpack`: this much, plus [`UNPACK_PER_MIB`] for each MiB of the layers.
pub const UNPACK_BASE: Duration = Duration::from_secs(60);

/// `unpack`, per MiB of layer (the larger of the blobs' size and their
/// declared unpacked size). Unpacking runs at tens of MiB/s even on one
/// nested vCPU; 1 s per MiB leaves a wide margin and still ends a guest
/// that stalls on a large image within minutes.
pub const UNPACK_PER_MIB: Duration = Duration::from_secs(1);

/// Writing one frame (at most 1 MiB) to the agent. The agent reads its
/// connection all the time (it never waits for a process before reading
/// the next frame), so a write blocked this long means it stopped reading.
pub const WRITE: Duration = Duration::from_secs(60);

/// A pod's guest booting until its agent answers. Boots take well under a
/// second on hardware KVM and a few seconds in the nested testbed.
pub const BOOT: Duration = Duration::from_secs(120);

/// Connecting to the agent of a pod that runs (`husk exec`): attempts are
/// retried this long (each handshake bounded by [`HANDSHAKE`]), for a
/// vsock device busy with another connection.
pub const CONNECT_RUNNING: Duration = Duration::from_secs(5);

/// The VMM exiting after the agent answered `shutdown` (or after the
/// supervisor killed it).
pub const POWEROFF: Duration = Duration::from_secs(30);

/// How long a pod's supervisor waits, beyond the stop grace period, for
/// its apps to end once it has asked them to stop (`husk stop`, SIGTERM,
/// the pod's exit policy); then it kills the VM and records why. Shorter
/// than [`CLI_STOP_SLACK`], so the supervisor's own reason is recorded
/// before `husk stop` gives up on it.
pub const SUPERVISOR_STOP_SLACK: Duration = Duration::from_secs(20);

/// How long `husk stop` waits, beyond the grace period, for a pod's
/// supervisor to finish before it kills the supervisor itself.
pub const CLI_STOP_SLACK: Duration = Duration::from_secs(30);

/// How long the host waits for the reply to `request`.
pub fn reply_timeout(request: &Request) -> Duration {
    match request {
        Request::Ping | Request::Signal { .. } | Request::ResizeTty { .. } => QUICK_REPLY,
        Request::Stop { grace_ms, .. } | Request::Shutdown { grace_ms } => {
            Duration::from_millis(*grace_ms).saturating_add(STOP_SLACK)
        }
        Request::Unpack(spec) => {
            let sum = |f: fn(&husk_proto::LayerSpec) -> u64| {
                spec.layers.iter().map(f).fold(0u64, u64::saturating_add)
            };
            let blobs = sum(|l| l.size);
            let unpacked = sum(|l| l.unpacked_size.unwrap_or(0));
            let mib = blobs.max(unpacked).div_ceil(1 << 20);
            let per_mib = UNPACK_PER_MIB.as_secs().saturating_mul(mib);
            UNPACK_BASE.saturating_add(Duration::from_secs(per_mib))
        }
        Request::CreateContainer(_)
        | Request::Exec { .. }
        | Request::RemoveContainer { .. }
        | Request::MountShare { .. }
        | Request::ConfigureNetwork(_) => REPLY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_proto::{LayerSpec, UnpackSpec};

    #[test]
    fn each_request_has_its_bound() {
        assert_eq!(reply_timeout(&Request::Ping), QUICK_REPLY);
        let stop = Request::Stop {
            proc: 1,
            grace_ms: 10_000,
        };
        assert_eq!(reply_timeout(&stop), Duration::from_secs(70));
        let shutdown = Request::Shutdown { grace_ms: u64::MAX };
        assert!(reply_timeout(&shutdown) > Duration::from_secs(1 << 50));
        let layer = |size, unpacked_size| LayerSpec {
            size,
            unpacked_size,
            ..LayerSpec::default()
        };
        let unpack = |layers| {
            Request::Unpack(Box::new(UnpackSpec {
                layers,
                ..UnpackSpec::default()
            }))
        };
        assert_eq!(reply_timeout(&unpack(vec![])), UNPACK_BASE);
        // 3 MiB + 1 byte of blobs: 4 MiB; a declared unpacked size wins if larger.
        let u = unpack(vec![layer(3 << 20, None), layer(1, None)]);
        assert_eq!(reply_timeout(&u), Duration::from_secs(64));
        let u = unpack(vec![layer(1 << 20, Some(10 << 20))]);
        assert_eq!(reply_timeout(&u), Duration::from_secs(70));
        let u = unpack(vec![layer(u64::MAX, None), layer(u64::MAX, None)]);
        assert!(reply_timeout(&u) > Duration::from_secs(1 << 40));
        // The supervisor gives up before `husk stop` does.
        assert!(SUPERVISOR_STOP_SLACK < CLI_STOP_SLACK);
    }
}
