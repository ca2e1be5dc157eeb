//! The `husk` command line. The only place that prints errors and picks
//! exit statuses; everything below returns typed errors.
//!
//! Exit statuses: husk's own failures are [`crate::failure::Failure`]'s, the
//! same on every command (bad usage or input is 125, as in Docker). Besides:
//! - `husk vm`: 0 the guest powered off (ACPI S5), 3 the guest requested a
//!   reset (reboot, or a panic with `panic=-1`), 4 the guest triple-faulted.
//! - `husk run`, `husk exec`: the app's own status.
//! - `husk doctor`: see [`doctor`].
//! - `husk check`: 0 nothing is left damaged, 122 damage is left (see [`check`]).
//!
//! Every error is one line on stderr, prefixed `husk: `.

pub mod attest;
pub mod check;
pub mod doctor;
mod doctor_jail;
pub mod escape;
pub mod image;
pub mod pods;
pub mod run;
pub mod trust;
pub mod vm;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// Exit status for bad usage or input.
const EXIT_USAGE: i32 = Failure::Usage.exit_status();

/// husk: run OCI images as pods, each in its own KVM microVM.
#[derive(Debug, Parser)]
#[command(name = "husk", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a raw VM from a kernel and an initramfs (kernel and agent development, tests).
    Vm(vm::VmArgs),
    /// Check whether this host can run husk VMs, and how fast.
    Doctor(doctor::DoctorArgs),
    #[command(flatten)]
    Image(image::ImageCommand),
    #[command(flatten)]
    Pods(pods::PodCommand),
    /// Edit or show the image trust policy (signatures required per registry or repository).
    Trust(trust::TrustArgs),
    /// Show pods' measured launches, or verify the measurement log against the TPM.
    Attest(attest::AttestArgs),
    /// Verify the image store and the pod directories (every blob against its digest); --repair fixes what it safely can.
    Check(check::CheckArgs),
}

/// `err` and its causes as one line ([`crate::report::error_line`]), with
/// control characters shown as visible escapes ([`escape`]): errors quote
/// what guests and registries said.
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    escape::escape(&crate::report::error_line(err)).into_owned()
}

/// Prints `err` and its causes as one line: `husk: what: why: root cause`.
pub fn print_error(err: &(dyn std::error::Error + 'static)) {
    eprintln!("husk: {}", error_line(err));
}

/// The one-line warning of `--no-jail` (and a manifest's `jail = false`).
pub fn warn_no_jail() {
    eprintln!(
        "husk: warning: --no-jail: the VMM runs without its jail, as root in the host's namespaces"
    );
}

/// A minimal logger: warnings and errors from library code to stderr when
/// `HUSK_LOG` asks for them (`error`, `warn`, `info`, `debug`).
struct StderrLogger;

/// Library crates that log what a guest did wrong at error level, once per bad
/// request or descriptor (fuse-backend-rs on a malformed FUSE request,
/// virtio-queue on a bad ring index): a hostile guest could flood stderr
/// through them, so they are shown only with `HUSK_LOG=debug`. Our devices
/// log such events themselves, rate-limited.
const GUEST_DRIVEN_TARGETS: [&str; 2] = ["fuse_backend_rs", "virtio_queue"];

fn shown(target: &str, level: log::Level, max: log::LevelFilter) -> bool {
    if max < log::LevelFilter::Debug && GUEST_DRIVEN_TARGETS.iter().any(|t| target.starts_with(t)) {
        return false;
    }
    level <= max
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        shown(m.target(), m.level(), log::max_level())
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let text = r.args().to_string();
            eprintln!(
                "husk: {}: {}",
                r.level().as_str().to_lowercase(),
                escape::escape(&text)
            );
        }
    }
    fn flush(&self) {}
}

fn init_logging() {
    static LOGGER: StderrLogger = StderrLogger;
    let level = match std::env::var("HUSK_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("info") => log::LevelFilter::Info,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Error,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Parses `args` and runs the command; returns the process exit status.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    init_logging();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return EXIT_USAGE;
            }
            // clap's message spans several lines (what, usage, hint): keep
            // what comes before the usage, on one line.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let what = what.join(" ");
            eprintln!(
                "husk: {} (see husk --help)",
                what.trim_start_matches("error: ")
            );
            return EXIT_USAGE;
        }
    };
    match cli.command {
        Command::Vm(args) => vm::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Image(c) => image::run(c),
        Command::Pods(c) => pods::run(c),
        Command::Trust(a) => trust::run(a),
        Command::Attest(a) => attest::run(a),
        Command::Check(a) => check::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{Level, LevelFilter};

    /// F8: an error that quotes a guest or a registry prints as one line
    /// with its control characters visible. At df579e2 only `\n` was
    /// replaced: `\r` could overwrite the line and escapes reached the
    /// terminal.
    #[test]
    fn error_lines_carry_no_control_characters() {
        #[derive(Debug, thiserror::Error)]
        #[error("the pod's agent failed: {0}")]
        struct Quoted(String);
        let e = Quoted("boom\rhusk: all good\x1b[2K\n\u{9b}0m".into());
        assert_eq!(
            error_line(&e),
            "the pod's agent failed: boom\\x0dhusk: all good\\x1b[2K \\u{9b}0m"
        );
    }

    #[test]
    fn guest_driven_library_errors_only_at_debug() {
        let t = "fuse_backend_rs::api::server::sync_io";
        assert!(!shown(t, Level::Error, LevelFilter::Error));
        assert!(!shown(
            "virtio_queue::queue",
            Level::Error,
            LevelFilter::Warn
        ));
        assert!(shown(t, Level::Error, LevelFilter::Debug));
        assert!(shown("husk_vmm::builder", Level::Error, LevelFilter::Error));
        assert!(!shown("husk_vmm::builder", Level::Warn, LevelFilter::Error));
    }
}
