//! The kinds of failure a husk command can end with, and the one exit status
//! each kind has on every command.
//!
//! A leaf module: every error type (`ImageError`, `PodError`, the VMM's
//! build errors) says which [`Failure`] it is, and only the command line
//! turns that into a process exit status. So `pod/` and `image/` never
//! reach up into `cli/`, and a status means the same thing whichever
//! command printed it.
//!
//! `husk run` and `husk exec` exit with the app's own status (0–255, 128+N
//! for death by signal N), and `husk vm` with the guest's outcome (0, 3, 4:
//! see [`crate::exit::ExitReason`]), so husk's own failures use the range
//! Docker and Podman reserve for the runtime: 125 when husk itself failed
//! **or was used wrongly** (Docker's `docker run --bad-flag` is 125 too),
//! 126 "cannot invoke", 127 "not found", and 119–124 for the failures a
//! script may want to tell apart without parsing the one-line message.

/// Success.
pub const SUCCESS: i32 = 0;

/// Why a husk command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Bad usage or input: a wrong flag or value, a malformed image
    /// reference or manifest, a kernel or volume path that does not exist,
    /// sizes beyond what the host has, a name in use.
    Usage,
    /// The image is not in the local store (and, when pulling, not in the
    /// registry).
    ImageNotFound,
    /// The registry could not be reached, or refused us (network, TLS,
    /// authentication).
    Registry,
    /// Content did not match its digest, or an image, archive or pod
    /// record is malformed.
    Integrity,
    /// The trust policy refused the image: a required signature is
    /// missing or invalid, or its scope rejects every image.
    Untrusted,
    /// The pod named does not exist, or is not in a state that allows the
    /// command.
    PodNotFound,
    /// This host cannot run VMs: no usable KVM (see `husk doctor`).
    NoKvm,
    /// husk itself failed: the VMM or the agent died, an I/O error in the
    /// store, a limit that cannot be enforced.
    Runtime,
    /// The app's command exists but cannot be invoked (permission, not
    /// executable).
    CannotInvoke,
    /// The app's command was not found in the container.
    CommandNotFound,
}

impl Failure {
    /// Every kind, for tables and tests.
    pub const ALL: [Failure; 10] = [
        Failure::Usage,
        Failure::ImageNotFound,
        Failure::Registry,
        Failure::Integrity,
        Failure::Untrusted,
        Failure::PodNotFound,
        Failure::NoKvm,
        Failure::Runtime,
        Failure::CannotInvoke,
        Failure::CommandNotFound,
    ];

    /// The process exit status of this kind of failure.
    pub const fn exit_status(self) -> i32 {
        match self {
            Failure::Untrusted => 119,
            Failure::ImageNotFound => 120,
            Failure::Registry => 121,
            Failure::Integrity => 122,
            Failure::PodNotFound => 123,
            Failure::NoKvm => 124,
            Failure::Usage | Failure::Runtime => 125,
            Failure::CannotInvoke => 126,
            Failure::CommandNotFound => 127,
        }
    }

    /// The kind an exit status stands for, when a status crossed a process
    /// boundary (the pull helper's answer, a detached pod's recorded
    /// failure). 125 reads as [`Failure::Runtime`]; statuses outside
    /// 119–127 are no failure kind.
    pub fn from_exit_status(status: i32) -> Option<Failure> {
        Failure::ALL
            .into_iter()
            .filter(|k| *k != Failure::Usage)
            .find(|k| k.exit_status() == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_dockers_runtime_range_and_round_trip() {
        for kind in Failure::ALL {
            let status = kind.exit_status();
            assert!((119..=127).contains(&status), "{kind:?}: {status}");
            let back = Failure::from_exit_status(status).unwrap();
            assert_eq!(back.exit_status(), status, "{kind:?}");
        }
        assert_eq!(Failure::Usage.exit_status(), 125);
        assert_eq!(Failure::from_exit_status(125), Some(Failure::Runtime));
        assert_eq!(Failure::from_exit_status(2), None);
        assert_eq!(Failure::from_exit_status(0), None);
    }
}
