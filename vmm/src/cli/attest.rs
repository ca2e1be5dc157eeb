//! `husk attest`: the measured launches ([`crate::measure`]).
//!
//! - `husk attest [POD]` prints the events measured for a pod (every
//!   event without POD), one per line: record number, PCR, the TPM epoch
//!   it was extended in (`-` when it was only logged), event, SHA-256,
//!   data; `--json` prints the log's records as they are.
//! - `husk attest --verify` replays the log's records of the TPM's current
//!   epoch and compares the result with the PCR: 0 when they match, 122
//!   (with one line saying how) when they do not or the log was altered,
//!   125 when there is no TPM to compare with.

use clap::Args;

use super::escape::escape;
use super::print_error;
use crate::failure::Failure;
use crate::measure::{self, log, MeasureError, Settings};
use crate::pod::state::PodStore;
use crate::pod::PodError;

/// Arguments of `husk attest`.
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// Replay the measurement log and compare it with the TPM's PCR.
    #[arg(long, conflicts_with_all = ["json", "pod"])]
    pub verify: bool,
    /// The log's records (JSON, one per line) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The pod (name, id or id prefix; a removed pod by its exact name or id).
    #[arg(value_name = "POD")]
    pub pod: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum AttestError {
    #[error(transparent)]
    Measure(#[from] MeasureError),
    #[error(transparent)]
    Pod(#[from] PodError),
}

impl AttestError {
    fn kind(&self) -> Failure {
        match self {
            AttestError::Measure(e) => e.kind(),
            AttestError::Pod(e) => e.kind(),
        }
    }
}

/// Runs `husk attest`; returns the exit status.
pub fn run(args: AttestArgs) -> i32 {
    let result = if args.verify { verify() } else { show(&args) };
    result.unwrap_or_else(|e| {
        print_error(&e);
        e.kind().exit_status()
    })
}

fn records(settings: &Settings) -> Result<Vec<log::Record>, MeasureError> {
    let (records, _bad) =
        log::read_all(&settings.log, measure::MAX_LOG).map_err(|source| MeasureError::Io {
            path: settings.log.clone(),
            source,
        })?;
    Ok(records)
}

fn show(args: &AttestArgs) -> Result<i32, AttestError> {
    let root = crate::image::Store::default_root();
    let settings = Settings::load(&root)?;
    let mut records = records(&settings)?;
    if let Some(want) = &args.pod {
        // A pod of the store by its usual names; else (removed) the log's own.
        let id = match PodStore::open(&root).and_then(|p| p.find(want)) {
            Ok(pod) => pod.id,
            Err(PodError::NoSuchPod(_)) => want.clone(),
            Err(e) => return Err(e.into()),
        };
        records.retain(|r| r.content.pod == id || r.content.pod_name == id);
        if records.is_empty() {
            return Err(PodError::NoSuchPod(format!(
                "{want} (no measured launch in {})",
                settings.log.display()
            ))
            .into());
        }
    }
    let mut out = String::new();
    if args.json {
        for r in &records {
            out.push_str(&serde_json::to_string(r).unwrap_or_default());
            out.push('\n');
        }
    } else {
        out.push_str("RECNUM  PCR  TPM     POD            EVENT       SHA256                                                            DATA\n");
        for r in &records {
            let epoch = r.tpm.as_ref().map_or("-".to_string(), |t| {
                format!("{}:{}", t.reset_count, t.restart_count)
            });
            let event = match &r.content.app {
                Some(app) => format!("{} {app}", r.content.event),
                None => r.content.event.clone(),
            };
            let digest = r.digests.first().map_or("", |d| d.digest.as_str());
            let line = format!(
                "{:<7} {:<4} {:<7} {:<14} {:<11} {:<65} {}",
                r.recnum, r.pcr, epoch, r.content.pod_name, event, digest, r.content.data
            );
            out.push_str(&escape(&line));
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(0)
}

fn verify() -> Result<i32, AttestError> {
    let root = crate::image::Store::default_root();
    let settings = Settings::load(&root)?;
    let records = records(&settings)?;
    let mut tpm = settings.open_tpm().map_err(MeasureError::NoTpm)?;
    let (epoch, pcr) = tpm
        .epoch()
        .and_then(|e| tpm.read_pcr(settings.pcr).map(|v| (e, v)))
        .map_err(MeasureError::from)?;
    let replay = log::replay(&records, settings.pcr, epoch).map_err(|e| {
        MeasureError::Mismatch(format!("measurement log {}: {e}", settings.log.display()))
    })?;
    let since = format!(
        "since the TPM's last reset (reset count {}, restart count {})",
        epoch.reset_count, epoch.restart_count
    );
    if replay.value != pcr {
        return Err(MeasureError::Mismatch(format!(
            "the measurement log {} does not account for PCR {} of the TPM at {}: the PCR is {}, the log's {} events {since} replay to {}",
            settings.log.display(),
            settings.pcr,
            tpm.address(),
            log::hex(&pcr),
            replay.events,
            log::hex(&replay.value),
        ))
        .into());
    }
    println!(
        "PCR {} (sha256) of the TPM at {} = {}: the {} events of {} {since} replay to it",
        settings.pcr,
        tpm.address(),
        log::hex(&pcr),
        replay.events,
        settings.log.display()
    );
    if replay.base != [0; 32] {
        println!(
            "note: the PCR was {} when husk first measured after that reset, not zero: software other than husk extended it before (explain that value with its log, e.g. systemd's /run/log/systemd/tpm2-measure.log)",
            log::hex(&replay.base)
        );
    }
    Ok(0)
}
