//! Measured launch against a real TPM 2.0 implementation, on the host (no
//! VM): Debian's `swtpm`, started by the test, and `tpm2-tools` to read it.
//! Launches are measured by husk's own code (`husk_vmm::measure`, the code
//! a pod's supervisor runs before the VMM's fork), several at once; the
//! PCR that `tpm2_pcrread` reads must equal what an independent replay of
//! the log computes — `tests/guest/measure-replay.py`, Python's hashlib,
//! not husk's code — and `husk attest --verify` must agree, then fail on a
//! tampered log and on a PCR extended behind the log's back. `$HUSK_TPM`
//! comes before measure.json; a TPM that refuses the extension leaves the
//! launch logged without it, or refused when a TPM is required. Skips
//! (saying why) when swtpm or tpm2-tools are missing (`scripts/deps.sh`
//! installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use husk_vmm::measure::{self, Event, Launch, MeasureError, Outcome, Settings};

fn have_tools() -> bool {
    for t in [
        "swtpm",
        "tpm2_pcrread",
        "tpm2_readclock",
        "tpm2_pcrextend",
        "python3",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("measure_tpm: skipped: {t} is not installed (scripts/deps.sh)");
            return false;
        }
    }
    true
}

/// A test's scratch directory and the store in it (`root/`), or `None`
/// when the tools are missing (the test is skipped).
fn scratch(name: &str) -> Option<(PathBuf, PathBuf)> {
    if !have_tools() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("husk-measure-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let root = dir.join("root");
    Some((dir, root))
}

/// Two free consecutive ports: tpm2-tss's swtpm TCTI expects the control
/// channel on the port after the server's.
fn free_ports() -> (u16, u16) {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return (p, p + 1);
        }
    }
}

/// A swtpm for one test, killed when dropped. Started without
/// `startup-clear`, so that husk's first command meets TPM_RC_INITIALIZE
/// and husk starts the TPM itself.
struct Swtpm {
    child: Child,
    /// Its address, as husk and tpm2-tools (`-T`) read it.
    tcti: String,
}

impl Swtpm {
    fn tcp(dir: &Path) -> Swtpm {
        let (p, c) = free_ports();
        let server = format!("type=tcp,port={p},bindaddr=127.0.0.1");
        let ctrl = format!("type=tcp,port={c},bindaddr=127.0.0.1");
        Swtpm::start(
            dir,
            &server,
            &ctrl,
            format!("swtpm:host=127.0.0.1,port={p}"),
        )
    }

    fn unix(dir: &Path) -> Swtpm {
        let sock = dir.join("swtpm.sock");
        let server = format!("type=unixio,path={}", sock.display());
        // tpm2-tss's TCTI looks for the control socket at PATH.ctrl.
        let ctrl = format!("type=unixio,path={}", dir.join("swtpm.sock.ctrl").display());
        Swtpm::start(
            dir,
            &server,
            &ctrl,
            format!("swtpm:path={}", sock.display()),
        )
    }

    fn start(dir: &Path, server: &str, ctrl: &str, tcti: String) -> Swtpm {
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init"])
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.join("state").display()))
            .args(["--server", server, "--ctrl", ctrl])
            .arg("--log")
            .arg(format!("file={}", dir.join("swtpm.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm starts");
        let swtpm = Swtpm { child, tcti };
        let address = husk_vmm::measure::tpm::Address::parse(&swtpm.tcti).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while husk_vmm::measure::tpm::Tpm::open(&address).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        swtpm
    }

    /// `tpm2_pcrread sha256:PCR`, as tpm2-tools reads it.
    fn pcrread(&self, pcr: u32) -> String {
        let out = Command::new("tpm2_pcrread")
            .args(["-T", &self.tcti, &format!("sha256:{pcr}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tpm2_pcrread: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let value = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{pcr}: 0x")))
            .unwrap_or_else(|| panic!("no PCR {pcr} in {text}"));
        value.to_ascii_lowercase()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The independent verifier (`tests/guest/measure-replay.py`): replays the
/// log with Python's hashlib, as the README describes it (the records of the
/// PCR extended in the TPM's current epoch, from the first one's base), and
/// returns the value.
fn python_replay(log: &Path, tcti: &str, pcr: u32) -> String {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guest/measure-replay.py"))
        .arg(log)
        .arg(tcti)
        .arg(pcr.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn husk(root: &Path, args: &[&str]) -> (i32, String, String) {
    husk_with_tpm(root, None, args)
}

/// `husk ARGS` with `$HUSK_TPM` set to `tpm` (unset with `None`).
fn husk_with_tpm(root: &Path, tpm: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_husk"));
    cmd.env("HUSK_ROOT", root).env_remove("HUSK_TPM");
    if let Some(tpm) = tpm {
        cmd.env("HUSK_TPM", tpm);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A launch like a pod's: its config, a "kernel" file, a command line, an image.
fn launch_events(settings: &Settings, kernel: &Path, n: usize) -> Vec<Event> {
    let file = std::fs::File::open(kernel).unwrap();
    vec![
        Event {
            kind: "pod-config",
            app: None,
            data: format!("/pods/{n}/config.json"),
            digest: measure::sha256(format!("{{\"pod\":{n}}}").as_bytes()),
        },
        Event::file(settings, "kernel", &file, kernel).unwrap(),
        Event::text("cmdline", None, format!("console=ttyS0 pod={n}")),
        Event::text(
            "image",
            Some("app".into()),
            format!(
                "reg.io/app:{n}@sha256:{} accepted unsigned (scope default)",
                "a".repeat(64)
            ),
        ),
    ]
}

/// Measures pod `p`'s launch (events as [`launch_events`]'s first pod).
fn launch_p(
    settings: &Settings,
    kernel: &Path,
    require_tpm: bool,
) -> Result<Outcome, MeasureError> {
    measure::measure(
        settings,
        Launch {
            pod: "p",
            pod_name: "p",
            events: launch_events(settings, kernel, 1),
            require_tpm,
        },
    )
}

fn write_settings(root: &Path, tcti: &str) {
    std::fs::write(
        root.join(measure::CONFIG_FILE),
        format!("{{\"tpm\":\"{tcti}\",\"pcr\":15}}"),
    )
    .unwrap();
}

#[test]
fn the_pcr_equals_an_independent_replay_of_the_log() {
    let Some((dir, root)) = scratch("replay") else {
        return;
    };
    let tpm = Swtpm::tcp(&dir);
    write_settings(&root, &tpm.tcti);
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, vec![0x7f; 3 << 20]).unwrap();
    // 12 launches from 4 threads at once: the lock keeps the log's order
    // the TPM's.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (root, kernel) = (root.clone(), kernel.clone());
            std::thread::spawn(move || {
                let settings = Settings::load(&root).unwrap();
                for i in 0..3 {
                    let n = t * 3 + i;
                    let id = format!("pod{n:02}");
                    let events = launch_events(&settings, &kernel, n);
                    let out = measure::measure(
                        &settings,
                        Launch {
                            pod: &id,
                            pod_name: &id,
                            events,
                            require_tpm: true,
                        },
                    )
                    .unwrap();
                    assert_eq!(out, Outcome::Extended { events: 4 });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log = root.join(measure::LOG_FILE);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 48);
    let pcr = tpm.pcrread(15);
    assert_ne!(pcr, "0".repeat(64));
    assert_eq!(
        python_replay(&log, &tpm.tcti, 15),
        pcr,
        "independent replay"
    );
    // husk agrees.
    let (rc, out, err) = husk(&root, &["attest", "--verify"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains(&pcr) && out.contains("the 48 events"), "{out}");
    // $HUSK_TPM comes before measure.json's tpm: `none` leaves no TPM to
    // verify against.
    let (rc, _, err) = husk_with_tpm(&root, Some("none"), &["attest", "--verify"]);
    assert_eq!((rc, err.lines().count()), (125, 1), "{err}");
    assert!(err.contains("no TPM to verify"), "{err}");
    // One pod's events, in a table.
    let (rc, out, err) = husk(&root, &["attest", "pod07"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.lines().count(), 5, "{out}");
    for kind in ["pod-config", "kernel", "cmdline", "image app"] {
        assert!(out.contains(kind), "{kind}: {out}");
    }
    let (rc, _, err) = husk(&root, &["attest", "nosuchpod"]);
    assert_eq!((rc, err.lines().count()), (123, 1), "{err}");

    // Tampering: a digest changed, then a text changed: --verify fails, one line, 122.
    let lines: Vec<&str> = text.lines().collect();
    let tamper = |i: usize, from: &str, to: &str| {
        let mut t = lines.clone();
        let changed = t[i].replacen(from, to, 1);
        assert_ne!(changed, t[i], "nothing to tamper with in {}", t[i]);
        t[i] = &changed;
        std::fs::write(&log, t.join("\n") + "\n").unwrap();
        let (rc, out, err) = husk(&root, &["attest", "--verify"]);
        std::fs::write(&log, &text).unwrap();
        assert_eq!((rc, err.lines().count()), (122, 1), "{out}{err}");
        err
    };
    let kernel_line = lines.iter().position(|l| l.contains("\"kernel\"")).unwrap();
    let digest = &lines[kernel_line][lines[kernel_line].find("\"digest\":\"").unwrap() + 10..][..4];
    let err = tamper(
        kernel_line,
        &format!("\"digest\":\"{digest}"),
        "\"digest\":\"0000",
    );
    assert!(err.contains("does not account for PCR 15"), "{err}");
    let image_line = lines.iter().rposition(|l| l.contains("\"image\"")).unwrap();
    let err = tamper(image_line, "accepted unsigned", "signed by sha256:0");
    assert!(err.contains("does not hash to its digest"), "{err}");
    // A record dropped.
    let err = {
        let mut t = lines.clone();
        t.remove(20);
        std::fs::write(&log, t.join("\n") + "\n").unwrap();
        let (rc, _, err) = husk(&root, &["attest", "--verify"]);
        std::fs::write(&log, &text).unwrap();
        assert_eq!(rc, 122, "{err}");
        err
    };
    assert!(err.contains("does not account"), "{err}");
    assert_eq!(
        husk(&root, &["attest", "--verify"]).0,
        0,
        "the log restored"
    );

    // The PCR extended behind the log's back.
    let ok = Command::new("tpm2_pcrextend")
        .args(["-T", &tpm.tcti, &format!("15:sha256={}", "ab".repeat(32))])
        .status()
        .unwrap();
    assert!(ok.success());
    let (rc, _, err) = husk(&root, &["attest", "--verify"]);
    assert_eq!(rc, 122, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn over_a_unix_socket_and_without_a_tpm() {
    let Some((dir, root)) = scratch("unix") else {
        return;
    };
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    // No TPM: the launch is logged, not extended; --verify has nothing to
    // compare with (125); --require-tpm refuses (119) and logs nothing.
    std::fs::write(root.join(measure::CONFIG_FILE), r#"{"tpm":"none"}"#).unwrap();
    let settings = Settings::load(&root).unwrap();
    let launch = |settings: &Settings, require_tpm| launch_p(settings, &kernel, require_tpm);
    assert!(matches!(
        launch(&settings, false).unwrap(),
        Outcome::Logged { .. }
    ));
    let e = launch(&settings, true).unwrap_err();
    assert_eq!(e.kind().exit_status(), 119, "{e}");
    let (rc, _, err) = husk(&root, &["attest", "--verify"]);
    assert_eq!((rc, err.lines().count()), (125, 1), "{err}");
    let (rc, out, _) = husk(&root, &["attest", "--json", "p"]);
    assert_eq!(rc, 0);
    assert_eq!(out.lines().count(), 4);
    assert!(out.lines().all(|l| !l.contains("\"tpm\"")), "{out}");

    // Then a TPM appears (a swtpm on a Unix socket): the first record
    // extended carries the PCR's base, and replay starts after the
    // records that were only logged.
    let tpm = Swtpm::unix(&dir);
    write_settings(&root, &tpm.tcti);
    let settings = Settings::load(&root).unwrap();
    assert_eq!(
        launch(&settings, true).unwrap(),
        Outcome::Extended { events: 4 }
    );
    let log = root.join(measure::LOG_FILE);
    let pcr = tpm.pcrread(15);
    assert_eq!(python_replay(&log, &tpm.tcti, 15), pcr);
    let (rc, out, err) = husk(&root, &["attest", "--verify"]);
    assert_eq!(rc, 0, "{out}{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().nth(4).unwrap();
    assert!(
        first.contains(&format!("\"base\":\"{}\"", "0".repeat(64))),
        "{first}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TPM that refuses the extension (PCR 17 is extended from locality 4
/// only, husk speaks at locality 0; swtpm answers TPM_RC_LOCALITY): the
/// launch is logged without the TPM, saying why, or, when a TPM is
/// required, refused with nothing logged.
#[test]
fn a_tpm_that_refuses_the_extension() {
    let Some((dir, root)) = scratch("locality") else {
        return;
    };
    let tpm = Swtpm::tcp(&dir);
    std::fs::write(
        root.join(measure::CONFIG_FILE),
        format!("{{\"tpm\":\"{}\",\"pcr\":17}}", tpm.tcti),
    )
    .unwrap();
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    let settings = Settings::load(&root).unwrap();
    let launch = |require_tpm| launch_p(&settings, &kernel, require_tpm);
    let log = root.join(measure::LOG_FILE);
    let e = launch(true).unwrap_err();
    assert_eq!(e.kind().exit_status(), 119, "{e}");
    assert!(e.to_string().contains("TPM_RC_LOCALITY"), "{e}");
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "");
    match launch(false).unwrap() {
        Outcome::Logged { why } => assert!(why.contains("TPM_RC_LOCALITY"), "{why}"),
        out => panic!("{out:?}"),
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(!text.contains("\"tpm\""), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
