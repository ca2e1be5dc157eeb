//! The guest kernel command line: husk's defaults, the user's additions and
//! the devices the builder declares, within the size the kernel accepts.

use linux_loader::cmdline::{Cmdline, Error as LoaderCmdlineError};

/// What every husk guest gets unless told otherwise: the console on the
/// first serial port, reboot through the i8042 (which the VMM turns into a
/// clean exit), a reboot — hence a VMM exit — right after a panic, and no
/// PCI probing: the VMM emulates no PCI bus, and the kernel's probe of the
/// configuration ports costs ~230 port exits and an error line on the
/// console at every boot (Firecracker passes `pci=off` too).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off";

/// x86 `COMMAND_LINE_SIZE`: the limit for a kernel without a setup header
/// to tell us otherwise (an ELF vmlinux), including the NUL.
pub const ELF_CMDLINE_CAPACITY: usize = 2048;

/// Errors from assembling the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// The command line would exceed what the kernel accepts.
    #[error("kernel command line too long: the kernel accepts at most {max} bytes")]
    TooLong {
        /// Longest accepted command line, without the NUL.
        max: usize,
    },
    /// The text is not something a kernel command line can hold.
    #[error("invalid kernel command line {text:?}: {reason}")]
    Invalid {
        /// The offending part.
        text: String,
        /// linux-loader's description.
        reason: String,
    },
}

fn map_err(err: LoaderCmdlineError, text: &str, capacity: usize) -> CmdlineError {
    match err {
        LoaderCmdlineError::TooLarge => CmdlineError::TooLong { max: capacity - 1 },
        other => CmdlineError::Invalid {
            text: text.to_string(),
            reason: other.to_string(),
        },
    }
}

/// Builds the command line: the defaults (unless `with_defaults` is false),
/// then `extra`. A ` -- ` in `extra` starts the arguments for init, which
/// stay last even when devices are appended later.
pub fn build(capacity: usize, with_defaults: bool, extra: &str) -> Result<Cmdline, CmdlineError> {
    let mut cmdline = Cmdline::new(capacity).map_err(|e| map_err(e, "", capacity.max(1)))?;
    if with_defaults {
        cmdline
            .insert_str(DEFAULT_CMDLINE)
            .map_err(|e| map_err(e, DEFAULT_CMDLINE, capacity))?;
    }
    let (boot, init) = match extra.split_once(" -- ") {
        Some((b, i)) => (b, Some(i)),
        None => (extra, None),
    };
    if !boot.trim().is_empty() {
        cmdline
            .insert_str(boot)
            .map_err(|e| map_err(e, boot, capacity))?;
    }
    if let Some(init) = init.filter(|i| !i.trim().is_empty()) {
        cmdline
            .insert_init_args(init)
            .map_err(|e| map_err(e, init, capacity))?;
    }
    Ok(cmdline)
}

/// Appends a virtio-mmio device declaration (`virtio_mmio.device=4K@0x...:IRQ`).
pub fn add_virtio_mmio(
    cmdline: &mut Cmdline,
    capacity: usize,
    base: u64,
    size: u64,
    irq: u32,
) -> Result<(), CmdlineError> {
    cmdline
        .add_virtio_mmio_device(size, vm_memory::GuestAddress(base), irq, None)
        .map_err(|e| map_err(e, "virtio_mmio.device", capacity))
}

/// The final text (without NUL).
pub fn to_string(cmdline: &Cmdline) -> String {
    cmdline
        .as_cstring()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_user_args() {
        let c = build(ELF_CMDLINE_CAPACITY, true, "quiet husk.poweroff").unwrap();
        assert_eq!(
            to_string(&c),
            "console=ttyS0 reboot=k panic=-1 pci=off quiet husk.poweroff"
        );
    }

    #[test]
    fn defaults_can_be_left_out() {
        let c = build(ELF_CMDLINE_CAPACITY, false, "console=hvc0").unwrap();
        assert_eq!(to_string(&c), "console=hvc0");
        assert_eq!(to_string(&build(100, false, "").unwrap()), "");
    }

    #[test]
    fn devices_go_before_init_args() {
        let mut c = build(ELF_CMDLINE_CAPACITY, true, "quiet -- --verbose").unwrap();
        add_virtio_mmio(&mut c, ELF_CMDLINE_CAPACITY, 0xd000_0000, 0x1000, 5).unwrap();
        assert_eq!(
            to_string(&c),
            "console=ttyS0 reboot=k panic=-1 pci=off quiet virtio_mmio.device=4K@0xd0000000:5 -- --verbose"
        );
    }

    #[test]
    fn over_long_is_refused_with_the_limit() {
        let long = "x".repeat(ELF_CMDLINE_CAPACITY);
        assert_eq!(
            build(ELF_CMDLINE_CAPACITY, true, &long).unwrap_err(),
            CmdlineError::TooLong { max: 2047 }
        );
        // Exactly at the limit is fine: 2047 characters plus the NUL.
        let fits = "x".repeat(2047 - DEFAULT_CMDLINE.len() - 1);
        let c = build(ELF_CMDLINE_CAPACITY, true, &fits).unwrap();
        assert_eq!(to_string(&c).len(), 2047);
        let mut c = build(ELF_CMDLINE_CAPACITY, true, &fits[1..]).unwrap();
        assert!(matches!(
            add_virtio_mmio(&mut c, ELF_CMDLINE_CAPACITY, 0xd000_0000, 0x1000, 5),
            Err(CmdlineError::TooLong { .. })
        ));
    }

    #[test]
    fn non_printable_is_refused() {
        assert!(matches!(
            build(ELF_CMDLINE_CAPACITY, true, "a\u{7}b"),
            Err(CmdlineError::Invalid { .. })
        ));
    }
}
