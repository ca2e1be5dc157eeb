//! A pod's logs on the host: what its apps print (`logs/<app>.log`) and
//! what its guest prints on the serial console (`console.log`), each with
//! a size cap and rotation, so a pod cannot fill the host's disk however
//! much it prints.
//!
//! **Caps** (`--log-opt`, or `log_opts` in a manifest; docker's json-file
//! driver keeps everything by default, which its users regret):
//! - `max-size=SIZE` (default [`DEFAULT_MAX_SIZE`], 10 MiB; at least
//!   [`MIN_MAX_SIZE`], 64 KiB, so that the largest record fits well) and
//!   `max-file=N` (default [`DEFAULT_MAX_FILE`], 3; 1 to [`MAX_MAX_FILE`]):
//!   each app's log is at most N files of SIZE, its output of both streams
//!   together: 30 MiB per app by default ([`rotate`]).
//! - The console: `console.log` rotates at 1 MiB with one older file, 2 MiB
//!   in all, and takes at most `console-rate=SIZE` bytes per second
//!   (default 32 KiB, with 8 seconds' worth as burst); what is beyond is
//!   dropped and says so in the log ([`console`]).
//!
//! **Format** of an app's log: CRI records, `TIMESTAMP STREAM F|P CONTENT`
//! per line ([`cri`]), the format the kubelet reads from containerd and
//! CRI-O. Chosen over docker's json-file (`{"log":"...","stream":...,
//! "time":...}` per line) because it keeps the output's bytes as they are
//! (no JSON escaping, invalid UTF-8 included), costs a fixed ~40 bytes per
//! line, is what a containerd shim must write anyway, and can be read with
//! `tail`/`grep` directly. Each record carries the stream, which is how
//! `husk logs` sends stdout and stderr to separate streams, and the time
//! the host received the output, which `--since`, `--until` and
//! `--timestamps` use ([`read`]). The console log stays plain text: it is
//! the guest kernel's and agent's, read by people and by the supervisor
//! waiting for the agent's readiness line.
//!
//! Pods made by a husk from before this format (their `config.json` has no
//! `logs`) kept raw output, both streams mixed and without times: `husk
//! logs` still prints (and follows) those whole, and refuses `--since`,
//! `--until`, `--tail` and `--timestamps` for them with one line.

pub mod console;
pub mod cri;
pub mod read;
pub mod rotate;
pub mod time;

use serde::{Deserialize, Serialize};

use super::spec::{parse_size, MIB};

/// Default size of one log file (`max-size`).
pub const DEFAULT_MAX_SIZE: u64 = 10 * MIB;
/// Smallest `max-size`: a record is at most 16 KiB of content and its
/// header, and records are written in pieces of about 32 KiB.
pub const MIN_MAX_SIZE: u64 = 64 << 10;
/// Default number of files per app log, the live one included (`max-file`).
pub const DEFAULT_MAX_FILE: u32 = 3;
/// Largest `max-file`.
pub const MAX_MAX_FILE: u32 = 100;

/// A pod's log settings, as `--log-opt` and a manifest's `log_opts` give
/// them and `config.json` records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOpts {
    /// Bytes per file.
    pub max_size: u64,
    /// Files per app log, the live one included.
    pub max_file: u32,
    /// The console's sustained rate, bytes per second.
    pub console_rate: u64,
}

impl Default for LogOpts {
    fn default() -> Self {
        LogOpts {
            max_size: DEFAULT_MAX_SIZE,
            max_file: DEFAULT_MAX_FILE,
            console_rate: console::DEFAULT_CONSOLE_RATE,
        }
    }
}

/// The keys `--log-opt` knows.
const KEYS: &str = "max-size, max-file, console-rate";

impl LogOpts {
    /// Sets `key` to `value`; the error says why, without naming where the
    /// pair came from (the caller does).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "max-size" => {
                let size = parse_size(value)?;
                if size < MIN_MAX_SIZE {
                    return Err(format!("{value:?}: at least 64k"));
                }
                self.max_size = size;
            }
            "max-file" => {
                self.max_file = match value.trim().parse::<u32>() {
                    Ok(n) if (1..=MAX_MAX_FILE).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "{value:?}: expected a number of files from 1 to {MAX_MAX_FILE}"
                        ))
                    }
                }
            }
            "console-rate" => self.console_rate = parse_size(value)?,
            _ => return Err(format!("unknown option {key:?} (known: {KEYS})")),
        }
        Ok(())
    }

    /// Applies `--log-opt KEY=VALUE` flags, in order.
    pub fn apply_flags(&mut self, flags: &[String]) -> Result<(), String> {
        for flag in flags {
            let (key, value) = flag
                .split_once('=')
                .ok_or_else(|| format!("--log-opt {flag}: expected KEY=VALUE ({KEYS})"))?;
            self.set(key, value)
                .map_err(|e| format!("--log-opt {flag}: {e}"))?;
        }
        Ok(())
    }

    /// The console's token bucket.
    pub fn console_limit(&self) -> console::ConsoleLimit {
        console::ConsoleLimit {
            rate: self.console_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_options_and_bad_ones_name_the_flag() {
        let mut o = LogOpts::default();
        assert_eq!(o.max_size, 10 * MIB);
        assert_eq!(o.max_file, 3);
        o.apply_flags(&[
            "max-size=1m".into(),
            "max-file=5".into(),
            "console-rate=1k".into(),
        ])
        .unwrap();
        assert_eq!(
            o,
            LogOpts {
                max_size: MIB,
                max_file: 5,
                console_rate: 1024
            }
        );
        let bad = |flag: &str, want: &str| {
            let e = LogOpts::default().apply_flags(&[flag.into()]).unwrap_err();
            assert!(e.starts_with(&format!("--log-opt {flag}: ")), "{e}");
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        bad("max-size", "KEY=VALUE");
        bad("max-size=lots", "unknown unit");
        bad("max-size=1k", "at least 64k");
        bad("max-file=0", "from 1 to 100");
        bad("max-file=101", "from 1 to 100");
        bad("max-file=-1", "from 1 to 100");
        bad("console-rate=0", "out of range");
        bad("compress=true", "unknown option \"compress\"");
    }
}
