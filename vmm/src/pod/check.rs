//! `husk check` on the pod directories: each against its config and its
//! state files.
//!
//! A pod is left alone while it may be running: when its `status.json`
//! says it is active and its supervisor is alive (the test `husk ps` and
//! `husk gc` apply), or, when that file cannot be read, when something
//! answers on its vsock socket (its VMM). Its findings are reported, never
//! repaired. For the others, checked and what `--repair` does:
//! - `status.json` that cannot be read (`husk ps` and `husk gc` skip the
//!   pod with a warning): replaced by a failed state that says so, so `husk ps -a` shows the
//!   pod and `husk rm`/`husk gc` can remove it (the host cgroup and
//!   network records the file held are lost with it: what a supervisor
//!   that died left there must then be removed by hand);
//! - `config.json` that cannot be read, or missing while `status.json` is
//!   missing too (a `husk run` killed while it made the directory; one
//!   younger than a minute may still be being made and is skipped): the pod
//!   is removed, as `husk rm` does, since nothing can be done with it. A
//!   missing config beside a status is normal (a pod that failed before it
//!   was populated) and not damage;
//! - `*.tmp<pid>` files of a writer that is gone: removed.
//!
//! Reported only: a config whose id is not its directory's, and a layer the
//! config names that is missing from the pod's `blobs/`, of another size,
//! or (unless `--quick`) not matching its digest. Those links are the pod's
//! own copies of image layers (hard links, so damage to a store blob shows
//! here too); a pod is never restarted, so `husk rm` is the remedy.

use std::fs;
use std::io;
use std::time::Duration;

use super::state::{PodDir, PodStore};
use super::PodError;
use crate::check::{Action, Finding};
use crate::image::digest;

/// How old a directory without config and status must be before it is
/// taken for an interrupted creation rather than one in progress.
const CREATION_GRACE: Duration = Duration::from_secs(60);

/// Checks every pod; returns the findings and how many pods were checked.
pub fn check(pods: &PodStore, quick: bool) -> Result<(Vec<Finding>, usize), PodError> {
    let list = pods.list()?;
    let mut findings = Vec::new();
    for pod in &list {
        check_pod(pod, quick, &mut findings);
    }
    Ok((findings, list.len()))
}

fn check_pod(pod: &PodDir, quick: bool, findings: &mut Vec<Finding>) {
    let subject = format!("pod {} ({})", pod.name, pod.id);
    let status = pod.read_status();
    let live = match &status {
        Ok(s) => s.state.is_active(),
        Err(_) => vmm_answers(pod),
    };
    let running = "the pod is running: stop it first";
    let config = pod.read_config();
    let status_missing = !pod.status_path().exists();
    let config_missing = matches!(&config, Err(PodError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound);
    // The directory as a whole first: removing it settles everything else.
    let unusable = match &config {
        Err(_) if config_missing && status_missing && !live => older_than(pod, CREATION_GRACE)
            .then(|| {
                "it has neither config.json nor status.json: its creation was interrupted".into()
            }),
        Err(_) if config_missing => None,
        Err(e) => Some(crate::report::error_line(e)),
        Ok(_) => None,
    };
    if let Some(problem) = unusable {
        findings.push(if live {
            Finding::keep(subject, problem, running)
        } else {
            Finding::fix(
                subject,
                problem,
                Action::RemovePod(pod.clone()),
                "remove the pod",
            )
        });
        return;
    }
    if let Err(e) = &status {
        let problem = crate::report::error_line(e);
        findings.push(if live {
            Finding::keep(&subject, problem, running)
        } else {
            let reason = format!("husk check found its status.json unreadable: {problem}");
            Finding::fix(
                &subject,
                problem,
                Action::MarkFailed(pod.clone(), reason),
                "mark it failed",
            )
        });
    }
    leftovers(pod, &subject, findings);
    if let Ok(config) = config {
        if config.id != pod.id {
            findings.push(Finding::keep(
                &subject,
                format!("its config.json is pod {}'s", config.id),
                "a config copied from another pod: remove the pod (husk rm)",
            ));
        }
        for layer in config.apps.iter().flat_map(|a| &a.image.layers) {
            if let Some(problem) = layer_problem(pod, &layer.digest, layer.size, quick) {
                findings.push(Finding::keep(
                    &subject,
                    problem,
                    "the pod's own copy of an image layer: remove the pod (husk rm)",
                ));
            }
        }
    }
}

/// What is wrong with the pod's link to layer `digest` of `size` bytes.
fn layer_problem(pod: &PodDir, layer: &str, size: u64, quick: bool) -> Option<String> {
    let hex = match digest::hex_of(layer) {
        Ok(h) => h,
        Err(e) => return Some(crate::report::error_line(&e)),
    };
    let path = pod.blobs_dir().join("sha256").join(hex);
    match fs::metadata(&path) {
        Err(_) => return Some(format!("its layer {layer} is missing")),
        Ok(md) if md.len() != size => {
            return Some(format!(
                "its layer {layer} has {} bytes, its config says {size}",
                md.len()
            ))
        }
        Ok(_) => {}
    }
    if quick {
        return None;
    }
    match digest::of_file(&path) {
        Ok(actual) if actual == layer => None,
        Ok(actual) => Some(format!(
            "its layer {layer} does not match its digest (it hashes to {actual})"
        )),
        Err(e) => Some(format!("its layer {layer} cannot be read: {e}")),
    }
}

/// `<file>.tmp<pid>` in the pod's directory (a [`super::state::write_atomic`]
/// that was killed) whose writer is gone.
fn leftovers(pod: &PodDir, subject: &str, findings: &mut Vec<Finding>) {
    let Ok(listing) = fs::read_dir(&pod.path) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .rsplit_once(".tmp")
            .and_then(|(_, pid)| pid.parse::<i32>().ok());
        if let Some(pid) = pid {
            if super::state::process_start_time(pid).is_none() {
                findings.push(Finding::fix(
                    subject,
                    format!("{name} was left by an interrupted write"),
                    Action::RemoveFile(entry.path()),
                    "remove it",
                ));
            }
        }
    }
}

/// Whether something accepts connections on the pod's vsock socket: its
/// VMM, when the status that would say so cannot be read.
fn vmm_answers(pod: &PodDir) -> bool {
    std::os::unix::net::UnixStream::connect(pod.vsock_path()).is_ok()
}

fn older_than(pod: &PodDir, age: Duration) -> bool {
    fs::metadata(&pod.path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Repair;
    use crate::pod::spec::PodConfig;
    use crate::pod::state::{PodState, PodStatus};
    use std::path::{Path, PathBuf};

    fn root(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("husk-podcheck-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    /// A pod with one app of one layer, linked (here: written) into its
    /// blobs, in `state` under this process.
    fn pod(pods: &PodStore, name: &str, state: PodState) -> PodDir {
        let pod = pods.create(Some(name), "x").unwrap();
        let layer = b"layer bytes";
        let d = digest::of(layer);
        let dir = pod.blobs_dir().join("sha256");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(digest::hex_of(&d).unwrap()), layer).unwrap();
        let config: PodConfig = serde_json::from_value(serde_json::json!({
            "id": pod.id, "name": pod.name, "memory": 1, "vcpus": 1,
            "stop_grace_ms": 0, "created": 0,
            "apps": [{
                "name": "app", "rootfs_size": 1,
                "image": {"reference": "x", "name": "x", "manifest_digest": d,
                          "config": {}, "layers": [
                              {"digest": d, "media_type": "application/vnd.oci.image.layer.v1.tar", "size": layer.len()}
                          ]},
            }],
        }))
        .unwrap();
        pod.write_config(&config).unwrap();
        let mut status = PodStatus::created();
        status.state = state;
        pod.write_status(&status).unwrap();
        pod
    }

    fn age(path: &Path) {
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        fs::File::open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn stopped_pods_are_repaired_running_ones_left_alone() {
        let r = root("mixed");
        let pods = PodStore::open(&r).unwrap();
        let fine = pod(&pods, "fine", PodState::Exited);
        assert!(check(&pods, false).unwrap().0.is_empty());
        let broken = pod(&pods, "broken", PodState::Exited);
        fs::write(broken.config_path(), b"{\"id\":").unwrap();
        let live = pod(&pods, "live", PodState::Running);
        fs::write(live.config_path(), b"{\"id\":").unwrap();
        let lost = pod(&pods, "lost", PodState::Exited);
        fs::write(lost.status_path(), b"not json").unwrap();
        fs::write(fine.path.join(format!("status.tmp{}", i32::MAX)), b"{").unwrap();
        let (found, n) = check(&pods, true).unwrap();
        assert_eq!(n, 4);
        let by = |name: &str| -> Vec<&Finding> {
            found
                .iter()
                .filter(|f| f.subject.starts_with(&format!("pod {name} ")))
                .collect()
        };
        assert!(matches!(
            by("broken")[..],
            [Finding {
                repair: Repair::Do {
                    action: Action::RemovePod(_),
                    ..
                },
                ..
            }]
        ));
        assert!(matches!(
            by("live")[..],
            [Finding {
                repair: Repair::Cannot(_),
                ..
            }]
        ));
        assert!(matches!(
            by("lost")[..],
            [Finding {
                repair: Repair::Do {
                    action: Action::MarkFailed(..),
                    ..
                },
                ..
            }]
        ));
        assert!(matches!(
            by("fine")[..],
            [Finding {
                repair: Repair::Do {
                    action: Action::RemoveFile(_),
                    ..
                },
                ..
            }]
        ));
        fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn damaged_layers_are_reported_only() {
        let r = root("layers");
        let pods = PodStore::open(&r).unwrap();
        let p = pod(&pods, "p", PodState::Exited);
        let dir = p.blobs_dir().join("sha256");
        let link = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        fs::write(&link, b"LAYER bytes").unwrap();
        assert!(
            check(&pods, true).unwrap().0.is_empty(),
            "same size: --quick cannot see it"
        );
        let found = check(&pods, false).unwrap().0;
        assert_eq!(found.len(), 1);
        assert!(found[0].problem.contains("does not match its digest"));
        assert!(matches!(found[0].repair, Repair::Cannot(_)));
        fs::remove_file(&link).unwrap();
        assert!(check(&pods, true).unwrap().0[0]
            .problem
            .contains("is missing"));
        fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn an_interrupted_creation_is_removed_once_old_and_a_failed_one_kept() {
        let r = root("created");
        let pods = PodStore::open(&r).unwrap();
        let made = pods.create(Some("half"), "x").unwrap();
        // A creator killed between the directory and its first status.
        fs::remove_file(made.status_path()).unwrap();
        assert!(
            check(&pods, false).unwrap().0.is_empty(),
            "may still be being made"
        );
        age(&made.path);
        let found = check(&pods, false).unwrap().0;
        assert!(matches!(
            found[..],
            [Finding {
                repair: Repair::Do {
                    action: Action::RemovePod(_),
                    ..
                },
                ..
            }]
        ));
        // A pod that failed before its config was written is no damage.
        let mut status = PodStatus::created();
        status.state = PodState::Failed;
        status.reason = Some("cannot run VMs here".into());
        made.write_status(&status).unwrap();
        assert!(check(&pods, false).unwrap().0.is_empty());
        fs::remove_dir_all(r).unwrap();
    }
}
