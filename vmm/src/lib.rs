//! husk host side: CLI, pod lifecycle and the microVM monitor.
pub mod boot;
pub mod devices;
pub mod fs;
