//! husk-agent: the in-guest agent (PID 1), its request server, image unpack,
//! containers and process supervision. The binary's `main` only picks a mode.

pub mod cgroup;
pub mod console;
pub mod container;
pub mod init;
pub mod net;
pub mod outbox;
pub mod reaper;
pub mod rooted;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod supervise;
pub mod sys;
pub mod unpack;
pub mod users;
