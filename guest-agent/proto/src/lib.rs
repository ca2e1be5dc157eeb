//! Wire protocol between the husk host and the in-guest agent.
//!
//! # Transport
//! A byte stream: AF_VSOCK in the guest (the agent listens on port
//! [`DEFAULT_VSOCK_PORT`]), reached from the host through the VMM's vsock Unix
//! socket (`CONNECT <port>\n` → `OK <n>\n`, Firecracker's convention); or a
//! plain Unix socket when the agent runs on the host for tests.
//!
//! # Framing ([`frame`])
//! Every frame is `len: u32 LE | kind: u8 | body`, where `len` counts kind and
//! body and never exceeds [`MAX_FRAME`]. Kind 1 is a control frame whose body
//! is one JSON-encoded [`Message`]; kind 2 is a data frame carrying raw stdio
//! bytes for one process stream (`proc: u32 LE | stream: u8 | bytes`, at most
//! [`MAX_DATA`] bytes; an empty payload means end of stream). Raw data frames
//! keep bulk output out of JSON; JSON keeps control messages debuggable and
//! evolvable. Decoding is bounded by the frame size, serde_json's recursion
//! limit, and explicit checks on every length before allocation.
//!
//! # Session
//! The host sends [`Message::Hello`] with the version range it speaks; the
//! agent answers [`Message::Welcome`] with the version chosen, or
//! [`Message::Refused`] and closes. Then the host sends
//! [`Message::Request`]s with ids it picks; the agent answers each with one
//! [`Message::Response`] of the same id, in any order, and pushes
//! [`Message::Event`]s (a process exited). Stdio flows in data frames under
//! credit-based flow control ([`Message::Credit`]): each side may have at
//! most [`INITIAL_WINDOW`] unacknowledged bytes in flight per stream, so
//! neither side ever buffers without bound and a slow reader slows the
//! writer down (backpressure reaches the process's pipe).
//!
//! Neither side trusts the other to keep these rules. The host's half of
//! the enforcement (the window on what the agent sends, a bound on every
//! wait for the agent) lives with its session in the `husk-agent-client`
//! crate (vmm/agent-client).
//!
//! This crate is the contract only: wire types, framing and the constants
//! both sides must agree on. It is the one crate the VMM side and the guest
//! agent both depend on, so it stays free of either side's logic and of
//! every dependency beyond serde, serde_json and thiserror.

pub mod frame;
pub mod message;
pub mod security;

pub use frame::{Frame, FrameError, FrameReader, FrameWriter};
pub use message::*;
pub use security::*;

/// The protocol version this crate speaks (the only one so far).
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest protocol version this crate still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on by default (`husk.vsock_port=` on the
/// guest kernel command line overrides it).
pub const DEFAULT_VSOCK_PORT: u32 = 1024;

/// Largest frame (`kind` + body) either side accepts: 1 MiB.
pub const MAX_FRAME: usize = 1 << 20;

/// Largest stdio payload in one data frame: 64 KiB.
pub const MAX_DATA: usize = 64 << 10;

/// Bytes a sender may have in flight per stream before it needs credit.
pub const INITIAL_WINDOW: u32 = 256 << 10;
