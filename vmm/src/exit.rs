//! How a VM ends, and how whoever notices tells the VMM thread.
//!
//! vCPU threads (triple fault, KVM errors) and devices (i8042 reset, ACPI
//! poweroff) call [`ExitSignal::request`]; the event loop on the VMM thread
//! watches [`ExitSignal::event_fd`] and tears the VM down. The first reason
//! wins: a reset that triggers a triple fault on the way down is a reset.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::failure::Failure;

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// ACPI S5 (the guest's `poweroff`).
    PowerOff,
    /// The guest pulsed the reset line (i8042 0xFE, ACPI reset register):
    /// `reboot`, or a panic with `panic=-1`.
    Reset,
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted. With the faulting
    /// vCPU's state when it could be read (`vCPU 0 at 0010:ffffffff81000000,
    /// ...`), for whoever debugs the guest: a triple fault says nothing else.
    TripleFault(Option<String>),
    /// The VMM could not go on running the guest.
    Error(String),
}

impl ExitReason {
    /// `husk vm`'s exit status for this reason: the guest's outcome, or
    /// husk's runtime failure status ([`Failure::Runtime`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PowerOff => 0,
            ExitReason::Reset => 3,
            ExitReason::TripleFault(_) => 4,
            ExitReason::Error(_) => Failure::Runtime.exit_status(),
        }
    }

    /// The one-line message printed when the VMM ends.
    pub fn message(&self) -> String {
        match self {
            ExitReason::PowerOff => "guest powered off".into(),
            ExitReason::Reset => "guest requested a reset".into(),
            ExitReason::TripleFault(None) => "guest triple-faulted".into(),
            ExitReason::TripleFault(Some(state)) => format!("guest triple-faulted ({state})"),
            ExitReason::Error(e) => e.clone(),
        }
    }
}

/// A one-shot "the VM is over" flag with an EventFd to wake the VMM thread.
#[derive(Debug)]
pub struct ExitSignal {
    evt: EventFd,
    reason: Mutex<Option<ExitReason>>,
}

impl ExitSignal {
    /// A fresh, unsignalled exit.
    pub fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(ExitSignal {
            evt: EventFd::new(EFD_NONBLOCK)?,
            reason: Mutex::new(None),
        }))
    }

    /// Records `reason` unless one was recorded before, and wakes the VMM.
    pub fn request(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        // Only fails when the counter would overflow, i.e. it is already set.
        let _ = self.evt.write(1);
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Readable once an exit was requested.
    pub fn event_fd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_wakes() {
        let s = ExitSignal::new().unwrap();
        assert_eq!(s.reason(), None);
        assert!(
            s.event_fd().read().is_err(),
            "not readable before a request"
        );
        s.request(ExitReason::Reset);
        s.request(ExitReason::TripleFault(None));
        assert_eq!(s.reason(), Some(ExitReason::Reset));
        assert_eq!(s.event_fd().read().unwrap(), 2);
    }

    #[test]
    fn codes_are_distinct() {
        let codes = [
            ExitReason::PowerOff.exit_code(),
            ExitReason::Reset.exit_code(),
            ExitReason::TripleFault(None).exit_code(),
            ExitReason::Error("x".into()).exit_code(),
        ];
        assert_eq!(codes, [0, 3, 4, 125]);
    }
}
