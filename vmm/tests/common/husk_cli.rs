//! Driving the real `husk` binary against a scratch `$HUSK_ROOT`, with
//! images made by `tests/images/mkimage.py` (shared by the image and
//! store-check tests through `#[path]`, as each test file is its own crate).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory for this test file's test `name`.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "husk-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `husk ARGS` with `$HUSK_ROOT` = `root`: (status, stdout, stderr).
pub fn husk(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_husk"))
        .args(args)
        .env("HUSK_ROOT", root)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// mkimage.py OUT [args]: returns the manifest digest it printed; `None`
/// (saying why) without busybox.
pub fn mkimage(out: &Path, args: &[&str]) -> Option<String> {
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: /bin/busybox is missing (scripts/deps.sh installs busybox-static)");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images/mkimage.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(out)
        .args(args)
        .output()
        .ok()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .last()?
            .trim()
            .to_string(),
    )
}

/// Asserts `err` is one `husk: ` line, no panic.
pub fn one_line_error(err: &str) {
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("husk: ") && !err.contains("panicked"),
        "{err:?}"
    );
}
