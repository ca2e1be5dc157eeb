//! Log lines on the console (the guest's serial port, or the test's stderr).
//!
//! Writes never fail loudly: PID 1 with a broken console must keep running,
//! and `println!` would panic (aborting PID 1 panics the kernel).

use std::fmt;
use std::io::Write;

/// Writes `husk-agent: <msg>` as one line on standard error.
pub fn line(msg: fmt::Arguments<'_>) {
    let text = format!("husk-agent: {msg}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes `husk-agent: <msg>` as one line on standard output (the readiness
/// line goes there: tests look for it on the console).
pub fn out(msg: fmt::Arguments<'_>) {
    let text = format!("husk-agent: {msg}\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// An error and its sources on one line: "a: b: c".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
