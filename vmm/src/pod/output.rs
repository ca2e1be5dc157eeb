//! An app's output on its way from the agent to the host: each chunk of
//! stdout and stderr goes to the app's log (CRI records, rotated:
//! [`super::logs`]) and, attached, to the terminal. The supervisor runs one
//! [`copy`] per app on a thread of its own; output credit goes back to the
//! agent only as these writes complete ([`husk_agent_client::Process`]), so
//! a slow disk or terminal slows the app instead of growing a buffer.

use husk_agent_client::{ProcEvent, Process};
use husk_proto::ExitStatus;

use super::attach::Sinks;
use super::logs::cri::{AppLogWriter, Stream};

/// How an app's output ended.
#[derive(Debug)]
pub enum Ended {
    /// The app exited; whether the guest's OOM killer ended it.
    Exited {
        status: ExitStatus,
        oom_killed: bool,
    },
    /// Its connection to the agent was lost, for this reason.
    Lost(String),
}

/// Copies one app's output to its log and sinks until it exits.
pub fn copy(process: &Process, mut log: AppLogWriter, mut sinks: Sinks) -> Ended {
    loop {
        let event = match process.next_event() {
            Ok(e) => e,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        match event {
            // A log that cannot be written (a full disk) loses output, never the app.
            ProcEvent::Stdout(b) => {
                let _ = log.write(Stream::Stdout, &b);
                sinks.stdout(&b);
            }
            ProcEvent::Stderr(b) => {
                let _ = log.write(Stream::Stderr, &b);
                sinks.stderr(&b);
            }
            ProcEvent::Eof(_) => {}
            ProcEvent::Exited { status, oom_killed } => {
                sinks.finish();
                return Ended::Exited { status, oom_killed };
            }
        }
    }
}
