//! Exit statuses of the image and pod commands.
//!
//! `husk run` and `husk exec` exit with the app's own status (0–255, 128+N
//! for death by signal N), so husk's own failures use the 120s, the range
//! Docker and Podman already reserve for the runtime (125 "the runtime
//! failed", 126 "cannot invoke", 127 "not found"). Each failure class gets
//! its own status so scripts can tell them apart without parsing the
//! one-line message on stderr. Bad usage (a wrong flag, a bad flag value, a
//! malformed reference, a volume path that does not exist) is 2, as for
//! every husk command.

/// Success.
pub const SUCCESS: i32 = 0;
/// Bad usage or input: a wrong flag or flag value, a malformed image
/// reference, a volume path that does not exist, a malformed manifest file.
pub const USAGE: i32 = super::EXIT_USAGE;
/// The image is not in the local store (and, when pulling, not in the registry).
pub const IMAGE_NOT_FOUND: i32 = 120;
/// The registry could not be reached, or refused us (network, TLS, auth).
pub const REGISTRY: i32 = 121;
/// Content did not match its digest, or an image/archive is malformed.
pub const INTEGRITY: i32 = 122;
/// The pod named does not exist, or is not in a state that allows the command.
pub const POD_NOT_FOUND: i32 = 123;
/// This host cannot run VMs: no usable KVM (see `husk doctor`).
pub const NO_KVM: i32 = 124;
/// husk itself failed: the VMM or the agent died, an I/O error in the store.
pub const RUNTIME: i32 = 125;
/// The app's command exists but cannot be invoked (permission, not executable).
pub const CANNOT_INVOKE: i32 = 126;
/// The app's command was not found in the container.
pub const COMMAND_NOT_FOUND: i32 = 127;
