//! `husk pull` against a real registry: Debian's `docker-registry` on
//! 127.0.0.1 (plain, with htpasswd basic auth, with bearer tokens from a
//! token server in the test, with TLS), images built by
//! `tests/images/mkimage.py` and pushed with `skopeo`. Needs no KVM and no
//! network beyond the loopback. Each test skips (printing why) when
//! docker-registry, skopeo, htpasswd, openssl or busybox are missing;
//! `scripts/deps.sh` installs them.

#[path = "common/registry_process.rs"]
mod registry_process;
// Only `husk` is used here, by `kill`.
#[allow(dead_code)]
#[path = "common/husk_cli.rs"]
mod husk_cli;
#[path = "common/kill.rs"]
mod kill;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn have_tools(extra: &[&str]) -> bool {
    let mut need = vec![
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/bin/busybox",
    ];
    need.extend_from_slice(extra);
    for t in need {
        if !Path::new(t).exists() {
            eprintln!("skipping: {t} is missing (scripts/deps.sh installs it)");
            return false;
        }
    }
    true
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-reg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A registry process on 127.0.0.1, killed (by its pid) on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    fn start(dir: &Path, htpasswd: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> Registry {
        Registry::start_with(dir, htpasswd, tls, "")
    }

    /// Like `start`, with `extra` appended to the registry's config.
    fn start_with(
        dir: &Path,
        htpasswd: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
        extra: &str,
    ) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((cert, key)) = tls {
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some((user, pass)) = htpasswd {
            let file = dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(&file)
                .args([user, pass])
                .output()
                .unwrap();
            ok(&out, "htpasswd");
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: husk-test\n    path: {}\n",
                file.display()
            );
        }
        cfg += extra;
        let config = dir.join("config.yml");
        std::fs::write(&config, cfg).unwrap();
        let child = registry_process::serve(&config, port);
        Registry {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Pushes the OCI layout `layout` (its `latest` entry) as `name`.
    fn push(&self, layout: &Path, name: &str, creds: Option<&str>, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        cmd.arg(format!("oci:{}:latest", layout.display()));
        cmd.arg(format!("docker://127.0.0.1:{}/{name}", self.port));
        ok(&cmd.output().unwrap(), "skopeo copy");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busybox OCI layout (mkimage.py); returns (layout, manifest digest).
fn mkimage(dir: &Path, extra: &[&str]) -> (PathBuf, String) {
    let out = Command::new("python3")
        .arg(repo().join("tests/images/mkimage.py"))
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    ok(&out, "mkimage.py");
    let text = String::from_utf8(out.stdout).unwrap();
    (
        dir.to_path_buf(),
        text.lines().last().unwrap().trim().to_string(),
    )
}

struct Husk {
    root: PathBuf,
    env: Vec<(String, String)>,
}

impl Husk {
    fn new(dir: &Path) -> Husk {
        Husk {
            root: dir.join("root"),
            env: Vec::new(),
        }
    }
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_husk"))
            .args(args)
            .env("HUSK_ROOT", &self.root)
            .env("HOME", &self.root)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("HUSK_REGISTRY_CA")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    }
    /// The stored images (`husk images --json`).
    fn images(&self) -> Vec<serde_json::Value> {
        let (rc, out, err) = self.run(&["images", "--json"]);
        assert_eq!(rc, 0, "{err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    }
    fn assert_clean(&self) {
        let tmp = self.root.join("images/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "temp files left in {}", tmp.display());
    }
}

/// A failed command's one line on stderr.
fn one_line(err: &str) {
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("husk: "), "{err:?}");
}

#[test]
fn pull_anonymous_by_tag_and_digest_and_missing() {
    if !have_tools(&[]) {
        return;
    }
    let dir = scratch("anon");
    let (layout, digest) = mkimage(&dir.join("img"), &["--layer-file", "/etc/hi=hello"]);
    let reg = Registry::start(&dir, None, None);
    reg.push(&layout, "bb:1", None, false);
    let husk = Husk::new(&dir);
    let name = format!("{}/bb:1", reg.host());
    let (rc, out, err) = husk.run(&["pull", &name]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.lines().last(), Some(name.as_str()));
    assert!(
        err.is_empty(),
        "no progress bars without a terminal: {err:?}"
    );
    let imgs = husk.images();
    assert_eq!(imgs[0]["manifest_digest"], digest.as_str());
    assert_eq!(imgs[0]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(imgs[0]["config"]["cmd"][0], "sh");
    // Again (every blob present), then by digest.
    assert_eq!(husk.run(&["pull", "-q", &name]).0, 0);
    let by_digest = format!("{}/bb@{digest}", reg.host());
    let (rc, out, err) = husk.run(&["pull", &by_digest]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), by_digest);
    // A tag the registry lacks: not found, nothing stored.
    let (rc, _, err) = husk.run(&["pull", &format!("{}/bb:nope", reg.host())]);
    assert_eq!(rc, 120, "{err}");
    one_line(&err);
    let (rc, _, err) = husk.run(&["pull", &format!("{}/nothere:1", reg.host())]);
    assert_eq!(rc, 120, "{err}");
    // A digest the registry lacks.
    let missing = format!("{}/bb@sha256:{}", reg.host(), "0".repeat(64));
    assert_eq!(husk.run(&["pull", &missing]).0, 120);
    assert_eq!(husk.images().len(), 2);
    husk.assert_clean();
}

#[test]
fn registry_serving_wrong_bytes_is_an_integrity_error() {
    if !have_tools(&[]) {
        return;
    }
    let dir = scratch("tamper");
    let (layout, _) = mkimage(&dir.join("img"), &[]);
    let reg = Registry::start(&dir, None, None);
    reg.push(&layout, "bb:1", None, false);
    // Flip one byte of the (largest) layer blob in the registry's storage.
    let blobs = reg.dir.join("data/docker/registry/v2/blobs/sha256");
    let mut biggest: Option<(u64, PathBuf)> = None;
    for a in std::fs::read_dir(&blobs).unwrap() {
        for b in std::fs::read_dir(a.unwrap().path()).unwrap() {
            let data = b.unwrap().path().join("data");
            let len = std::fs::metadata(&data).unwrap().len();
            if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                biggest = Some((len, data));
            }
        }
    }
    let data = biggest.unwrap().1;
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let husk = Husk::new(&dir);
    let (rc, _, err) = husk.run(&["pull", &format!("{}/bb:1", reg.host())]);
    assert_eq!(rc, 122, "{err}");
    one_line(&err);
    assert!(husk.images().is_empty());
    husk.assert_clean();
}

#[test]
fn unreachable_registry() {
    let dir = scratch("unreach");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let husk = Husk::new(&dir);
    let (rc, _, err) = husk.run(&["pull", &format!("127.0.0.1:{port}/bb:1")]);
    assert_eq!(rc, 121, "{err}");
    one_line(&err);
    let (rc, _, err) = husk.run(&["pull", "bad//ref"]);
    assert_eq!(rc, 125, "{err}");
    one_line(&err);
}

#[test]
fn basic_auth_from_credentials_files() {
    if !have_tools(&["/usr/bin/htpasswd"]) {
        return;
    }
    let dir = scratch("auth");
    let (layout, digest) = mkimage(&dir.join("img"), &[]);
    let reg = Registry::start(&dir, Some(("alice", "s3cret")), None);
    reg.push(&layout, "private/bb:1", Some("alice:s3cret"), false);
    let name = format!("{}/private/bb:1", reg.host());
    let auth_json = |user_pass: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(user_pass);
        format!(r#"{{"auths":{{"{}":{{"auth":"{b}"}}}}}}"#, reg.host())
    };
    let good = dir.join("good.json");
    let bad = dir.join("bad.json");
    std::fs::write(&good, auth_json("alice:s3cret")).unwrap();
    std::fs::write(&bad, auth_json("alice:wrong")).unwrap();
    let mut husk = Husk::new(&dir);
    // No credentials, then wrong ones: refused.
    let (rc, _, err) = husk.run(&["pull", &name]);
    assert_eq!(rc, 121, "{err}");
    one_line(&err);
    let (rc, _, err) = husk.run(&["pull", "--creds", bad.to_str().unwrap(), &name]);
    assert_eq!(rc, 121, "{err}");
    assert!(husk.images().is_empty());
    // A --creds file that does not exist is a usage error.
    assert_eq!(
        husk.run(&["pull", "--creds", "/nonexistent.json", &name]).0,
        125
    );
    // The right ones, from --creds and from $REGISTRY_AUTH_FILE.
    let (rc, out, err) = husk.run(&["pull", "--creds", good.to_str().unwrap(), &name]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), name);
    assert_eq!(husk.images()[0]["manifest_digest"], digest.as_str());
    assert_eq!(husk.run(&["rmi", &name]).0, 0);
    husk.env
        .push(("REGISTRY_AUTH_FILE".into(), good.display().to_string()));
    assert_eq!(husk.run(&["pull", &name]).0, 0);
    // And from the store root's auth.json.
    husk.env.clear();
    std::fs::copy(&good, husk.root.join("auth.json")).unwrap();
    assert_eq!(husk.run(&["rmi", &name]).0, 0);
    assert_eq!(husk.run(&["pull", &name]).0, 0);
}

/// An OCI layout whose `latest` is an index of an amd64 and an arm64 image.
fn multi_arch(dir: &Path) -> (PathBuf, String) {
    let (amd, amd_digest) = mkimage(&dir.join("amd"), &[]);
    let (arm, _) = mkimage(&dir.join("arm"), &["--layer-file", "/arch=arm64"]);
    // Put the arm image's blobs beside the amd one's.
    for e in std::fs::read_dir(arm.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let dest = amd.join("blobs/sha256").join(e.file_name());
        if !dest.exists() {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
    let entry = |layout: &Path, arch: &str| {
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let mut m = idx["manifests"][0].clone();
        m.as_object_mut().unwrap().remove("annotations");
        m["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        m
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(amd.join("blobs/sha256").join(&hex), &bytes).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(amd.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    (amd, amd_digest)
}

#[test]
fn pull_of_an_index_takes_linux_amd64() {
    if !have_tools(&[]) {
        return;
    }
    let dir = scratch("index");
    let (layout, amd_digest) = multi_arch(&dir);
    let reg = Registry::start(&dir, None, None);
    reg.push(&layout, "multi:1", None, true);
    let husk = Husk::new(&dir);
    let (rc, _, err) = husk.run(&["pull", &format!("{}/multi:1", reg.host())]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(husk.images()[0]["manifest_digest"], amd_digest.as_str());
    // The same layout imports to the same image.
    let (rc, out, err) = husk.run(&["import", "--tag", "multi:local", layout.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), "docker.io/library/multi:local");
    let (_, out, _) = husk.run(&["images", "--json"]);
    assert_eq!(out.matches(&amd_digest).count(), 2);
}

/// A CA and a certificate for 127.0.0.1 signed by it (webpki refuses a
/// self-signed CA certificate as a server's own).
fn make_certs(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=husk-test-ca",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    ];
    for s in steps {
        if !run(s) {
            return None;
        }
    }
    Some((dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key")))
}

#[test]
fn tls_registry_needs_its_ca_or_insecure() {
    if !have_tools(&["/usr/bin/openssl"]) {
        return;
    }
    let dir = scratch("tls");
    let Some((ca, cert, key)) = make_certs(&dir) else {
        eprintln!("skipping: openssl could not make test certificates");
        return;
    };
    let (layout, digest) = mkimage(&dir.join("img"), &[]);
    let reg = Registry::start(&dir, None, Some((&cert, &key)));
    reg.push(&layout, "bb:1", None, false);
    let name = format!("{}/bb:1", reg.host());
    let mut husk = Husk::new(&dir);
    // Untrusted certificate: the plain-HTTP fallback does not help either.
    let (rc, _, err) = husk.run(&["pull", &name]);
    assert_eq!(rc, 121, "{err}");
    one_line(&err);
    // --insecure accepts the unverified certificate.
    let (rc, _, err) = husk.run(&["pull", "--insecure", &name]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(husk.run(&["rmi", &name]).0, 0);
    // Trusting the CA verifies it.
    husk.env
        .push(("HUSK_REGISTRY_CA".into(), ca.display().to_string()));
    let (rc, _, err) = husk.run(&["pull", &name]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(husk.images()[0]["manifest_digest"], digest.as_str());
}

/// A name other than `localhost` that /etc/hosts maps to 127.x: a
/// "non-loopback" registry host by husk's rule (names are not resolved
/// for it), reachable here without leaving the machine.
fn loopback_alias() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let ip = f.next()?;
        if !ip.starts_with("127.") {
            return None;
        }
        f.find(|n| {
            !n.starts_with('#') && !n.eq_ignore_ascii_case("localhost") && !n.contains("localhost")
        })
        .map(str::to_string)
    })
}

#[test]
fn plain_http_only_for_loopback_or_insecure() {
    if !have_tools(&[]) {
        return;
    }
    let Some(alias) = loopback_alias() else {
        eprintln!("skipping: /etc/hosts has no loopback alias other than localhost");
        return;
    };
    let dir = scratch("insecure");
    let (layout, _) = mkimage(&dir.join("img"), &[]);
    let reg = Registry::start(&dir, None, None);
    reg.push(&layout, "bb:1", None, false);
    let name = format!("{alias}:{}/bb:1", reg.port);
    let husk = Husk::new(&dir);
    // Not loopback as written: HTTPS only, which a plain-HTTP registry fails.
    let (rc, _, err) = husk.run(&["pull", &name]);
    assert_eq!(rc, 121, "{err}");
    one_line(&err);
    assert!(husk.images().is_empty());
    let (rc, out, err) = husk.run(&["pull", "--insecure", &name]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), name);
}

#[test]
fn concurrent_pulls_share_one_store() {
    if !have_tools(&[]) {
        return;
    }
    let dir = scratch("concurrent");
    let (layout, digest) = mkimage(&dir.join("img"), &[]);
    let reg = Registry::start(&dir, None, None);
    reg.push(&layout, "bb:1", None, false);
    reg.push(&layout, "bb:2", None, false);
    let husk = Husk::new(&dir);
    let procs: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_husk"))
                .args(["pull", &format!("{}/bb:{}", reg.host(), 1 + i % 2)])
                .env("HUSK_ROOT", &husk.root)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in procs {
        assert!(p.wait().unwrap().success());
    }
    let imgs = husk.images();
    assert_eq!(imgs.len(), 2);
    assert!(imgs.iter().all(|i| i["manifest_digest"] == digest.as_str()));
    husk.assert_clean();
}

/// `husk pull` and its `husk-pull` helper killed with SIGKILL at 50 random
/// points (the helper often mid-blob); after each, the checks of
/// [`kill::Killer::round`].
#[test]
fn pull_killed_at_random_points_leaves_a_store_that_checks_clean() {
    if !have_tools(&[]) {
        return;
    }
    let dir = scratch("kill");
    let (layout, _) = mkimage(&dir.join("img"), &[]);
    let reg = Registry::start(&dir, None, None);
    reg.push(&layout, "kill:1", None, false);
    let name = format!("{}/kill:1", reg.host());
    let args = ["pull", "-q", name.as_str()];
    let root = dir.join("root");
    let mut killer = kill::Killer::new(kill::Killer::time(&dir.join("timing"), &args));
    for _ in 0..50 {
        killer.round(&root, &name, &args, 3);
    }
    killer.finish(50, "pulls");
}

/// A bearer-token server for the registry's `auth: token` mode: grants
/// every scope asked for, in an RS256 JWT signed (by `openssl dgst`) with a
/// self-signed certificate the registry trusts. Serves until the test
/// process ends.
fn token_server(dir: &Path) -> Option<(u16, PathBuf)> {
    use base64::Engine as _;
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tok.key",
        "-out",
        "tok.pem",
        "-days",
        "2",
        "-subj",
        "/CN=husk-token",
    ])?;
    let der = openssl(&["x509", "-in", "tok.pem", "-outform", "DER"])?.stdout;
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = url.encode(
        serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [b64.encode(&der)]}).to_string(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = listener.local_addr().ok()?.port();
    let cert = dir.join("tok.pem");
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                continue;
            }
            let query = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/");
            let access: Vec<serde_json::Value> = query
                .split(['?', '&'])
                .filter_map(|kv| kv.strip_prefix("scope="))
                .filter_map(|scope| {
                    let mut f = scope.split(':');
                    let (kind, name, actions) = (f.next()?, f.next()?, f.next()?);
                    Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = url.encode(
                serde_json::json!({"iss": "husk-test", "sub": "", "aud": "husk-test", "exp": now + 600,
                    "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", access.len()), "access": access})
                .to_string(),
            );
            let signing_input = format!("{header}.{claims}");
            let input_file = dir.join("tok.input");
            std::fs::write(&input_file, &signing_input).unwrap();
            let sig = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign", "tok.key", "tok.input"])
                .current_dir(&dir)
                .output()
                .unwrap()
                .stdout;
            let body = serde_json::json!({"token": format!("{signing_input}.{}", url.encode(sig))})
                .to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Some((port, cert))
}

#[test]
fn pull_with_a_bearer_token() {
    if !have_tools(&["/usr/bin/openssl"]) {
        return;
    }
    let dir = scratch("token");
    let Some((token_port, cert)) = token_server(&dir) else {
        eprintln!("skipping: openssl could not make the token signing key");
        return;
    };
    let (layout, digest) = mkimage(&dir.join("img"), &[]);
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: husk-test\n    issuer: husk-test\n    rootcertbundle: {}\n",
        cert.display()
    );
    let reg = Registry::start_with(&dir, None, None, &auth);
    reg.push(&layout, "tok/bb:1", None, false);
    // Without a token the registry refuses, with a Bearer challenge.
    {
        use std::io::{Read, Write};
        let mut c = TcpStream::connect(("127.0.0.1", reg.port)).unwrap();
        write!(c, "GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.0 401") || answer.starts_with("HTTP/1.1 401"),
            "{answer}"
        );
        assert!(answer.contains("Bearer realm"), "{answer}");
    }
    let husk = Husk::new(&dir);
    let name = format!("{}/tok/bb:1", reg.host());
    let (rc, out, err) = husk.run(&["pull", &name]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), name);
    assert_eq!(husk.images()[0]["manifest_digest"], digest.as_str());
}
