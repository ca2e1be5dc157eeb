//! Running the host's network tools (`nft`, `ip`, `tc`) for the user
//! network's filter and the TAP network: one child per call, its stderr's
//! first line as the error, so a refusal reads as one line.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `program args`, feeding it `stdin` if given; a failure is one line:
/// the spawn error, or the exit status and the first line of its stderr.
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let written = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("{}: {first}", out.status));
    }
    written.map_err(|e| e.to_string())
}
