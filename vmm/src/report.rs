//! One-line error reports, the form every husk command and the VMM print
//! errors in: `what: why: root cause`.
//!
//! A leaf module, so that the VMM process (which reports why it could not
//! build a VM) and the commands share one formatter without the VMM code
//! depending on the CLI.

/// `err` and its causes as one line, `what: why: root cause` (a cause its
/// parent's text already holds is not repeated).
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line.replace('\n', " ")
}
