//! husk host side: CLI, pod lifecycle and the microVM monitor.
pub mod boot;
pub mod builder;
pub mod check;
pub mod cli;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod failure;
pub mod fs;
pub mod image;
pub mod jail;
pub mod measure;
pub mod net;
pub mod pod;
pub mod private;
pub mod process;
pub mod report;
pub mod seccomp;
pub mod trace;
pub mod trust;
pub mod vm_config;
pub mod vstate;

pub use builder::run;
pub use vm_config::{DeviceSpec, VmConfig};
