//! `husk check` through the real binary, on an image made by
//! `tests/images/mkimage.py` and imported with `husk import` (skipped,
//! saying why, without python3 or busybox), and on pod directories made
//! with the library (no VM needed): damage is reported with status 122
//! and nothing changed, `--repair` repairs it and says so, a running pod is
//! left alone, and afterwards `husk images`, `husk ps` and `husk gc` agree.
//! And `husk import` killed with SIGKILL at random points: the store checks
//! clean or is repaired, and a retried import completes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use husk_vmm::pod::state::{PodDir, PodState, PodStatus};

#[path = "common/husk_cli.rs"]
mod husk_cli;
#[path = "common/kill.rs"]
mod kill;
#[path = "common/pod_dir.rs"]
mod pod_dir;
use husk_cli::{husk, mkimage, one_line_error, scratch};

/// Every file under `dir` with its bytes (sockets and lock files included):
/// what "changes nothing" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            all.insert(e.path(), Vec::new());
            all.extend(snapshot(&e.path()));
        } else if t.is_file() {
            all.insert(e.path(), std::fs::read(e.path()).unwrap());
        }
    }
    all
}

/// A pod made as `husk run` makes one, without its VM: in `state` under
/// this process (so a `Running` one is live while the test runs).
fn pod(root: &Path, name: &str, state: PodState) -> PodDir {
    pod_dir::make(root, Some(name), state)
}

fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("images/blobs/sha256").join(&digest[7..])
}

/// Rewrites a 0444 blob.
fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn damaged<'a>(out: &'a str, what: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(what)).collect()
}

#[test]
fn damage_is_reported_then_repaired_and_the_commands_agree() {
    let dir = scratch("flow");
    let root = dir.join("root");
    let layout = dir.join("layout");
    let Some(manifest) = mkimage(&layout, &[]) else {
        return;
    };
    let (rc, _, err) = husk(
        &root,
        &["import", "--tag", "chk:1", layout.to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{err}");
    let (rc, out, err) = husk(&root, &["check"]);
    assert_eq!((rc, err.as_str()), (0, ""), "{out}");
    assert_eq!(
        out.trim(),
        "checked 1 image(s), 3 blob(s), 0 pod(s): 0 damaged, 0 repaired"
    );

    // The damage: a layer with one byte flipped, a truncated manifest, a
    // partial blob of an interrupted pull, a stopped pod whose config is
    // torn, one whose status is (which `husk ps` skips with a warning), and
    // a running pod whose config is torn.
    let (_, json, _) = husk(&root, &["images", "--json"]);
    let images: serde_json::Value = serde_json::from_str(&json).unwrap();
    let layer = images[0]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    rewrite(&blob(&root, &layer), |b| b[100] ^= 0x20);
    rewrite(&blob(&root, &manifest), |b| b.truncate(b.len() / 2));
    std::fs::write(root.join("images/tmp/4242.0"), b"half a layer").unwrap();
    let stopped = pod(&root, "stopped", PodState::Exited);
    std::fs::write(stopped.config_path(), b"{\"id\": \"trunc").unwrap();
    let lost = pod(&root, "lost", PodState::Exited);
    std::fs::write(lost.status_path(), b"").unwrap();
    let live = pod(&root, "live", PodState::Running);
    std::fs::write(live.config_path(), b"").unwrap();
    let (rc, out, err) = husk(&root, &["ps", "-a"]);
    assert_eq!(rc, 0, "husk ps lists the other pods: {err}");
    assert!(
        out.contains(" stopped ") && out.contains(" live ") && !out.contains(" lost "),
        "{out}"
    );
    assert!(
        err.starts_with("husk: warning: pod lost (") && err.lines().count() == 1,
        "one warning for the torn status: {err}"
    );
    let (rc, out, err) = husk(&root, &["images"]);
    assert_eq!(rc, 0, "husk images lists what it can: {err}");
    assert_eq!(out.lines().count(), 1, "the header alone: {out}");
    assert!(
        err.starts_with("husk: warning: image ") && err.lines().count() == 1,
        "one warning for the image whose manifest is torn: {err}"
    );

    // Reported, status 122, nothing changed.
    let before = snapshot(&root);
    let (rc, out, err) = husk(&root, &["check"]);
    assert_eq!((rc, err.as_str()), (122, ""), "{out}");
    let lines = damaged(&out, "damaged: ");
    assert_eq!(lines.len(), 7, "{out}");
    for want in [
        format!("damaged: blob {layer}: its content does not match its digest"),
        format!("damaged: blob {manifest}: its content does not match its digest"),
        "damaged: image docker.io/library/chk:1: its manifest".to_string(),
        format!("damaged: {}", root.join("images/tmp/4242.0").display()),
        format!("damaged: pod stopped ({})", stopped.id),
        format!("damaged: pod lost ({})", lost.id),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&want) && l.contains("(--repair will ")),
            "{want}\n{out}"
        );
    }
    assert!(
        lines.iter().any(
            |l| l.starts_with(&format!("damaged: pod live ({})", live.id))
                && l.ends_with("(not repairable: the pod is running: stop it first)")
        ),
        "{out}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "husk check without --repair changed the store"
    );
    // --quick sees all but the flipped byte.
    let (rc, out, _) = husk(&root, &["check", "--quick"]);
    assert_eq!(rc, 122);
    assert_eq!(damaged(&out, "damaged: ").len(), 5, "{out}");

    // Repaired, each in one line; the running pod is left alone.
    let (rc, out, err) = husk(&root, &["check", "--repair"]);
    assert_eq!((rc, err.as_str()), (122, ""), "{out}");
    assert_eq!(damaged(&out, "repaired: ").len(), 6, "{out}");
    assert_eq!(damaged(&out, "damaged: ").len(), 1, "{out}");
    assert!(out.contains(&format!("repaired: pod stopped ({})", stopped.id)));
    assert!(
        out.contains(&format!("repaired: pod lost ({})", lost.id))
            && out.contains("marked it failed")
    );
    assert!(live.path.exists() && !stopped.path.exists());
    assert!(!blob(&root, &layer).exists() && !blob(&root, &manifest).exists());

    // Once the live pod has ended, it goes too; then the store is clean.
    let mut status = PodStatus::created();
    status.state = PodState::Exited;
    live.write_status(&status).unwrap();
    let (rc, out, _) = husk(&root, &["check", "--repair"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains(&format!("repaired: pod live ({})", live.id)),
        "{out}"
    );
    let (rc, out, _) = husk(&root, &["check"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out.trim(),
        "checked 0 image(s), 1 blob(s), 1 pod(s): 0 damaged, 0 repaired; 1 unused blob(s) (husk gc removes them)"
    );

    // husk images, ps and gc agree with it: no image, one failed pod, one
    // unused blob (the intact config).
    let (rc, out, _) = husk(&root, &["images", "--json"]);
    assert_eq!((rc, out.trim()), (0, "[]"));
    let (rc, out, _) = husk(&root, &["ps", "-a", "--json"]);
    assert_eq!(rc, 0);
    let ps: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["state"], "failed");
    assert!(
        ps[0]["reason"].as_str().unwrap().contains("husk check"),
        "{out}"
    );
    let (rc, out, _) = husk(&root, &["gc"]);
    assert_eq!(rc, 0);
    assert!(
        out.contains("removed pod lost") && out.contains("removed 1 unused blob(s)"),
        "{out}"
    );

    // A retried import completes, and the store checks clean.
    let (rc, _, err) = husk(
        &root,
        &["import", "--tag", "chk:1", layout.to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{err}");
    let (rc, out, _) = husk(&root, &["check"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out.trim(),
        "checked 1 image(s), 3 blob(s), 0 pod(s): 0 damaged, 0 repaired"
    );
}

#[test]
fn bad_input_is_one_line_with_its_status() {
    let dir = scratch("bad");
    let (rc, out, err) = husk(&dir, &["check", "--bogus"]);
    assert_eq!(rc, 125);
    assert!(out.is_empty());
    one_line_error(&err);
    let missing = dir.join("no-such-root");
    let (rc, out, err) = husk(&missing, &["check"]);
    assert_eq!(rc, 125);
    assert!(out.is_empty());
    one_line_error(&err);
    assert!(err.contains("no husk store at"), "{err}");
    assert!(!missing.exists(), "husk check made a store");
    // An empty store is clean.
    let (rc, out, _) = husk(&dir, &["check", "--quick"]);
    assert_eq!(rc, 0, "{out}");
}

/// `husk import` killed with SIGKILL at random points, 50 times, into one
/// store, from an OCI layout and a docker archive in turn; after each, the
/// checks of [`kill::Killer::round`].
#[test]
fn import_killed_at_random_points_leaves_a_store_that_checks_clean() {
    let dir = scratch("kill");
    let root = dir.join("root");
    let layout = dir.join("layout");
    let archive = dir.join("img.tar");
    if mkimage(&layout, &["--docker-archive", archive.to_str().unwrap()]).is_none() {
        return;
    }
    let timing = kill::Killer::time(&dir.join("timing"), &["import", layout.to_str().unwrap()]);
    let mut killer = kill::Killer::new(timing);
    for i in 0..50 {
        let source = if i % 2 == 0 { &layout } else { &archive };
        let args = ["import", "--tag", "kill:1", source.to_str().unwrap()];
        killer.round(&root, "kill:1", &args, 3);
    }
    killer.finish(50, "imports");
}

/// `husk gc` with a pod whose status is torn: it cannot know whether that
/// pod runs, so it leaves it (one warning, status 122) and still collects
/// the others.
#[test]
fn gc_goes_on_past_a_pod_whose_status_is_torn() {
    let root = scratch("gc-torn");
    let done = pod(&root, "done", PodState::Exited);
    let torn = pod(&root, "torn", PodState::Exited);
    std::fs::write(torn.status_path(), b"{").unwrap();
    let (rc, out, err) = husk(&root, &["gc"]);
    assert_eq!(rc, 122, "{out}{err}");
    assert!(out.contains("removed pod done"), "{out}");
    assert!(
        err.starts_with("husk: warning: pod torn (") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!done.path.exists() && torn.path.exists());
    let _ = std::fs::remove_dir_all(&root);
}
