//! `husk import`, `husk images`, `husk rmi` through the real binary, on
//! images made by `tests/images/mkimage.py` (skipped, saying why, without
//! python3 or busybox): names, output, exit statuses, one-line errors,
//! nothing left behind, and concurrent imports into one store.

use std::path::Path;
use std::process::Command;

#[path = "common/husk_cli.rs"]
mod husk_cli;
use husk_cli::{husk, mkimage, one_line_error, scratch};

fn no_temp_files(root: &Path) {
    let n = std::fs::read_dir(root.join("images/tmp")).unwrap().count();
    assert_eq!(n, 0, "temp files left behind");
}

#[test]
fn import_layout_and_docker_archive_then_list_and_remove() {
    let dir = scratch("flow");
    let root = dir.join("root");
    let layout = dir.join("layout");
    let archive = dir.join("img.tar");
    let Some(digest) = mkimage(
        &layout,
        &[
            "--docker-archive",
            archive.to_str().unwrap(),
            "--name",
            "husk-test/bb:1",
        ],
    ) else {
        return;
    };
    // mkimage's ref.name is a bare tag (`latest`): the digest names the image.
    let (rc, out, err) = husk(&root, &["import", layout.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.lines().last(), Some(digest.as_str()));
    let (rc, out, _) = husk(
        &root,
        &["import", "--tag", "bb:local", layout.to_str().unwrap()],
    );
    assert_eq!(rc, 0);
    assert_eq!(out.lines().last(), Some("docker.io/library/bb:local"));
    let (rc, out, err) = husk(&root, &["import", archive.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.lines().last(), Some("docker.io/husk-test/bb:1"));

    let (rc, table, _) = husk(&root, &["images"]);
    assert_eq!(rc, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("ID") && lines[0].contains("CREATED")
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        table.contains("bb:local") && table.contains("husk-test/bb:1") && table.contains("<none>")
    );
    assert!(table.contains(&digest[7..19]));
    let (_, json, _) = husk(&root, &["images", "--json"]);
    let imgs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(imgs.len(), 3);
    assert!(imgs.iter().all(|i| i["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:")));

    // rmi by name; by id removes every name of that image.
    let (rc, out, _) = husk(&root, &["rmi", "bb:local"]);
    assert_eq!(
        (rc, out.trim()),
        (0, "Untagged: docker.io/library/bb:local")
    );
    let (rc, _, err) = husk(&root, &["rmi", "bb:local", "husk-test/bb:1"]);
    assert_eq!(rc, 120, "the first failure's status");
    one_line_error(&err);
    let (rc, _, _) = husk(&root, &["rmi", &digest[7..19]]);
    assert_eq!(rc, 0);
    let (_, table, _) = husk(&root, &["images"]);
    assert_eq!(table.lines().count(), 1, "{table}");
    no_temp_files(&root);
}

#[test]
fn errors_are_one_line_with_their_status() {
    let dir = scratch("errors");
    let root = dir.join("root");
    let junk = dir.join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive, not even close...").unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cases: [(&[&str], i32); 6] = [
        (&["import", "/nonexistent/image.tar"], 125),
        (&["import", junk.to_str().unwrap()], 122),
        (&["import", empty.to_str().unwrap()], 122),
        (
            &["import", "--tag", "Not A Name", empty.to_str().unwrap()],
            125,
        ),
        (&["rmi", "nothere:1"], 120),
        (&["rmi", "sha256:nothex"], 125),
    ];
    for (args, status) in cases {
        let (rc, out, err) = husk(&root, args);
        assert_eq!(rc, status, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        one_line_error(&err);
    }
    let (_, table, _) = husk(&root, &["images"]);
    assert_eq!(table.lines().count(), 1);
    no_temp_files(&root);
}

#[test]
fn concurrent_imports_into_one_store_all_land() {
    let dir = scratch("concurrent");
    let root = dir.join("root");
    let layout = dir.join("layout");
    if mkimage(&layout, &[]).is_none() {
        return;
    }
    let procs: Vec<_> = (0..6)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_husk"))
                .args([
                    "import",
                    "--tag",
                    &format!("p{i}:1"),
                    layout.to_str().unwrap(),
                ])
                .env("HUSK_ROOT", &root)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in procs {
        assert!(p.wait().unwrap().success());
    }
    let (_, json, _) = husk(&root, &["images", "--json"]);
    let imgs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(imgs.len(), 6);
    no_temp_files(&root);
}

#[test]
fn pull_without_its_helper_is_one_line() {
    let dir = scratch("nohelper");
    let out = Command::new(env!("CARGO_BIN_EXE_husk"))
        .args(["pull", "127.0.0.1:1/x:1"])
        .env("HUSK_ROOT", dir.join("root"))
        .env("HUSK_PULL", dir.join("no-such-helper"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    one_line_error(&String::from_utf8_lossy(&out.stderr));
    // A malformed reference is refused before any helper runs.
    let (rc, _, err) = husk(&dir.join("root"), &["pull", "Bad Ref"]);
    assert_eq!(rc, 125);
    one_line_error(&err);
}

/// F9: a directory whose files are a symlink out of it or a FIFO is refused
/// at once, with one line and status 122, and nothing lands in the store.
#[test]
fn import_refuses_symlinks_and_fifos_in_one_line() {
    let dir = scratch("f9");
    let root = dir.join("root");
    let outside = dir.join("outside.json");
    std::fs::write(&outside, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, layout.join("index.json")).unwrap();
    let (rc, _, err) = husk(&root, &["import", layout.to_str().unwrap()]);
    assert_eq!(rc, 122, "{err}");
    one_line_error(&err);
    assert!(err.contains("symbolic link"), "{err}");
    std::fs::remove_file(layout.join("index.json")).unwrap();
    let c = std::ffi::CString::new(
        layout
            .join("index.json")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo reads only it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let (rc, _, err) = husk(&root, &["import", layout.to_str().unwrap()]);
    assert_eq!(rc, 122, "{err}");
    one_line_error(&err);
    assert!(err.contains("not a regular file"), "{err}");
    let (rc, out, _) = husk(&root, &["images", "--json"]);
    assert_eq!((rc, out.trim()), (0, "[]"));
    no_temp_files(&root);
}

/// F7: the store is private to its user: directories 0700, files 0600
/// (blobs 0444 behind them), also for a store an older husk made 0755.
#[test]
fn image_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("modes");
    let Some(_) = mkimage(&dir.join("img"), &[]) else {
        return;
    };
    let root = dir.join("root");
    let old = root.join("images/tmp");
    std::fs::create_dir_all(&old).unwrap();
    for d in [&root, &root.join("images"), &old] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (rc, _, err) = husk(&root, &["import", dir.join("img").to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for d in [
        "images",
        "images/tmp",
        "images/blobs",
        "images/blobs/sha256",
    ] {
        assert_eq!(mode(d), 0o700, "{d}");
    }
    for f in [
        "images/index.json",
        "images/index.lock",
        "images/ingest.lock",
    ] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    for b in std::fs::read_dir(root.join("images/blobs/sha256")).unwrap() {
        let b = b.unwrap();
        assert_eq!(b.metadata().unwrap().permissions().mode() & 0o777, 0o444);
    }
    // A new root is made 0700 too.
    let fresh = dir.join("fresh");
    let (rc, _, err) = husk(&fresh, &["import", dir.join("img").to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let m = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(m, 0o700);
}

/// The pid of a child of `parent` (from /proc), waiting up to 10 s for one.
fn child_of(parent: u32) -> Option<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command name: state, ppid, ...
            let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            if rest.split(' ').nth(1) == Some(parent.to_string().as_str()) {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// Whether `pid` is gone (or a zombie nobody reaped yet), within 5 s.
fn ends(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s) if s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')) => return true,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    false
}

/// `husk pull` killed with SIGKILL takes its helper with it: the helper,
/// here waiting on a registry that accepts and never answers, does not go
/// on without anyone to answer to.
#[test]
fn the_pull_helper_dies_with_husk_pull() {
    let dir = scratch("helper-dies");
    // Connections queue in the backlog and are never answered.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stalled.local_addr().unwrap().port();
    let mut pull = Command::new(env!("CARGO_BIN_EXE_husk"))
        .args(["pull", &format!("127.0.0.1:{port}/stalled:1")])
        .env("HUSK_ROOT", dir.join("root"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let helper = child_of(pull.id()).expect("husk pull starts its helper");
    pull.kill().unwrap();
    pull.wait().unwrap();
    assert!(ends(helper), "the helper {helper} outlived husk pull");
    let _ = std::fs::remove_dir_all(&dir);
}
