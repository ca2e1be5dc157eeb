//! Agent flags from the kernel command line.
//!
//! The kernel does not hand parameters containing a dot to init as arguments
//! or environment, so `husk.*` flags are read from /proc/cmdline. Host tests
//! that run the agent as PID 1 of a PID namespace cannot change the host's
//! command line; they set `HUSK_AGENT_CMDLINE` instead (whoever controls PID
//! 1's environment in a guest controls the kernel command line anyway).

use std::path::Path;

/// What the command line asks of the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `husk.poweroff`: print the readiness line, then power off cleanly.
    pub poweroff: bool,
    /// `husk.panic`: print the readiness line, then exit PID 1 (kernel panic).
    pub panic: bool,
    /// `husk.reboot`: print the readiness line, then reset the guest (boot
    /// benchmarks end every VMM's run the same way with it).
    pub reboot: bool,
    /// `husk.vsock_port=N`: the vsock port to listen on (default 1024).
    pub vsock_port: Option<u32>,
}

impl Flags {
    /// Parses a command line; unknown words are ignored, as the kernel does.
    pub fn parse(cmdline: &str) -> Flags {
        let mut flags = Flags::default();
        for word in cmdline.split_ascii_whitespace() {
            match word.split_once('=') {
                None if word == "husk.poweroff" => flags.poweroff = true,
                None if word == "husk.panic" => flags.panic = true,
                None if word == "husk.reboot" => flags.reboot = true,
                Some(("husk.vsock_port", port)) => flags.vsock_port = port.parse().ok(),
                _ => {}
            }
        }
        flags
    }

    /// Reads the flags of the running kernel (or the test override).
    pub fn from_system() -> std::io::Result<Flags> {
        if let Ok(cmdline) = std::env::var("HUSK_AGENT_CMDLINE") {
            return Ok(Flags::parse(&cmdline));
        }
        Ok(Flags::parse(&std::fs::read_to_string(Path::new(
            "/proc/cmdline",
        ))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_whole_words() {
        let f = Flags::parse("console=ttyS0 reboot=k panic=-1 husk.poweroff quiet");
        assert_eq!(
            f,
            Flags {
                poweroff: true,
                ..Flags::default()
            }
        );
        assert!(Flags::parse("husk.panic").panic);
        assert!(Flags::parse("quiet husk.reboot").reboot);
        assert!(!Flags::parse("xhusk.poweroff husk.poweroffx").poweroff);
        assert_eq!(Flags::parse("husk.vsock_port=5000").vsock_port, Some(5000));
        assert_eq!(Flags::parse("husk.vsock_port=nope").vsock_port, None);
        assert_eq!(Flags::parse(""), Flags::default());
    }
}
