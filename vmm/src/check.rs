//! `husk check`: verifies the store under `$HUSK_ROOT` and, asked to,
//! repairs what can be repaired without losing anything of value.
//!
//! Every write in husk is made to survive a `kill -9` at any point: blobs
//! land by rename once verified, the image index and pod state files are
//! replaced atomically, an image becomes visible only when its last blob is
//! in place. What such a kill can still leave behind is debris (temp files,
//! a pod directory whose creation never finished), and what a failing disk
//! or a hand in the store can leave is damage (a blob whose bytes no longer
//! match its name, a truncated state file). `husk check` finds both; the
//! image side is checked by [`crate::image::Store::check`], the pods by
//! [`crate::pod::check`]; this module holds what they report and carries
//! out the repairs.
//!
//! Like `podman system check`, it reports by default and changes nothing;
//! `--repair` removes what is damaged (an image whose blobs are gone or
//! corrupt is untagged, since it could never run, but a running pod is
//! never touched); `--quick` skips re-hashing blobs (presence and sizes
//! only). What cannot be repaired safely is reported only, with the reason.

use std::path::PathBuf;

use crate::image::{ImageError, Store};
use crate::pod::state::{PodDir, PodStore};
use crate::pod::PodError;

/// One thing found wrong.
#[derive(Debug)]
pub struct Finding {
    /// What is damaged: `blob sha256:…`, `image NAME`, `pod NAME (ID)`, a
    /// leftover file's path.
    pub subject: String,
    /// What is wrong with it.
    pub problem: String,
    /// What `--repair` does about it.
    pub repair: Repair,
}

/// What `--repair` does about a [`Finding`].
#[derive(Debug)]
pub enum Repair {
    /// This, described in a few words (`remove it`).
    Do { action: Action, says: &'static str },
    /// Nothing: the reason.
    Cannot(String),
}

/// A repair.
#[derive(Debug)]
pub enum Action {
    /// Remove a file: a blob that is not what its name says, a temp file
    /// nobody writes any more.
    RemoveFile(PathBuf),
    /// Remove every name of the image with this manifest digest.
    Untag(String),
    /// Remove a pod's directory (as `husk rm` does).
    RemovePod(PodDir),
    /// Replace an unreadable `status.json` with a failed state and this reason.
    MarkFailed(PodDir, String),
}

impl Finding {
    /// A finding `--repair` handles with `action`.
    pub fn fix(
        subject: impl Into<String>,
        problem: impl Into<String>,
        action: Action,
        says: &'static str,
    ) -> Finding {
        Finding {
            subject: subject.into(),
            problem: problem.into(),
            repair: Repair::Do { action, says },
        }
    }

    /// A finding `--repair` leaves alone, for `why`.
    pub fn keep(
        subject: impl Into<String>,
        problem: impl Into<String>,
        why: impl Into<String>,
    ) -> Finding {
        Finding {
            subject: subject.into(),
            problem: problem.into(),
            repair: Repair::Cannot(why.into()),
        }
    }

    /// The line `husk check` prints for it, before any repair.
    pub fn line(&self) -> String {
        let what = match &self.repair {
            Repair::Do { says, .. } => format!("--repair will {says}"),
            Repair::Cannot(why) => format!("not repairable: {why}"),
        };
        format!("damaged: {}: {} ({what})", self.subject, self.problem)
    }
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Pod(#[from] PodError),
}

impl CheckError {
    /// Its exit status kind.
    pub fn kind(&self) -> crate::failure::Failure {
        match self {
            CheckError::Image(e) => e.kind(),
            CheckError::Pod(e) => e.kind(),
        }
    }
}

impl Action {
    /// Carries the repair out.
    pub fn apply(&self, store: &Store, pods: &PodStore) -> Result<(), CheckError> {
        match self {
            Action::RemoveFile(path) => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ImageError::io(format!("cannot remove {}", path.display()))(e).into())
                }
                _ => Ok(()),
            },
            Action::Untag(digest) => store.untag_digest(digest).map(drop).map_err(Into::into),
            Action::RemovePod(pod) => pods.remove(pod).map_err(Into::into),
            Action::MarkFailed(pod, reason) => {
                let mut status = crate::pod::state::PodStatus::created();
                status.state = crate::pod::state::PodState::Failed;
                status.supervisor_pid = None;
                status.supervisor_start = None;
                status.reason = Some(reason.clone());
                status.finished = Some(crate::pod::state::now_secs());
                pod.write_status(&status).map_err(Into::into)
            }
        }
    }
}

/// What a check found, after any repairs.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Damage found and left (not repairable, or no `--repair`).
    pub left: usize,
    /// Damage repaired.
    pub repaired: usize,
    /// Repairs that were tried and failed (already printed).
    pub failed: usize,
}

/// Checks the image store and the pods; with `repair`, repairs what it can.
/// Prints one line per finding and per repair through `say`.
pub fn run(
    store: &Store,
    pods: &PodStore,
    quick: bool,
    repair: bool,
    say: &mut dyn FnMut(&str),
) -> Result<(Outcome, Totals), CheckError> {
    // The image store first, checked and repaired under its exclusive
    // ingest lock, as gc is: no pull or import runs meanwhile, so every
    // temp file is debris and no blob is half written.
    let ingest = store.lock_ingest()?;
    let (image_findings, totals) = store.check(quick)?;
    let mut outcome = Outcome::default();
    settle(image_findings, store, pods, repair, &mut outcome, say);
    drop(ingest);
    let (pod_findings, checked_pods) = crate::pod::check::check(pods, quick)?;
    settle(pod_findings, store, pods, repair, &mut outcome, say);
    Ok((
        outcome,
        Totals {
            pods: checked_pods,
            ..totals
        },
    ))
}

/// How much was checked.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub images: usize,
    pub blobs: usize,
    /// Blobs no image uses (not damage: `husk gc` removes them).
    pub unused_blobs: usize,
    pub pods: usize,
}

fn settle(
    findings: Vec<Finding>,
    store: &Store,
    pods: &PodStore,
    repair: bool,
    outcome: &mut Outcome,
    say: &mut dyn FnMut(&str),
) {
    for f in findings {
        match (&f.repair, repair) {
            (Repair::Do { action, says }, true) => match action.apply(store, pods) {
                Ok(()) => {
                    outcome.repaired += 1;
                    say(&format!(
                        "repaired: {}: {}: {}",
                        f.subject,
                        f.problem,
                        past(says)
                    ));
                }
                Err(e) => {
                    outcome.failed += 1;
                    say(&format!(
                        "damaged: {}: {} (repair failed: {})",
                        f.subject,
                        f.problem,
                        crate::report::error_line(&e)
                    ));
                }
            },
            _ => {
                outcome.left += 1;
                say(&f.line());
            }
        }
    }
}

/// "remove it" → "removed it": the repair as done.
fn past(says: &str) -> String {
    let (verb, rest) = says.split_once(' ').unwrap_or((says, ""));
    let done = match verb {
        "remove" => "removed",
        "untag" => "untagged",
        "mark" => "marked",
        other => other,
    };
    format!("{done} {rest}").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_and_what_repair_does() {
        let f = Finding::fix(
            "blob sha256:ab",
            "content does not match its digest",
            Action::RemoveFile("/x".into()),
            "remove it",
        );
        assert_eq!(
            f.line(),
            "damaged: blob sha256:ab: content does not match its digest (--repair will remove it)"
        );
        let k = Finding::keep(
            "pod p (1)",
            "status.json is unreadable",
            "the pod is running",
        );
        assert!(k.line().ends_with("(not repairable: the pod is running)"));
        assert_eq!(past("remove it"), "removed it");
        assert_eq!(past("untag the image"), "untagged the image");
        assert_eq!(past("mark it failed"), "marked it failed");
    }
}
