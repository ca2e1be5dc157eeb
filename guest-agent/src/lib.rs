//! husk-agent: the in-guest agent (PID 1), its request server, image unpack
//! and process supervision. The binary's `main` only dispatches on its mode.

pub mod cgroup;
pub mod console;
pub mod init;
pub mod reaper;
pub mod server;
pub mod shutdown;
pub mod sys;
