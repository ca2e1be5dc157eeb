//! Fixtures of the trust interoperability tests (`image_trust.rs`): P-256
//! key pairs by openssl (wrapped for skopeo as cosign wraps them), a
//! `docker-registry` on 127.0.0.1 with the few raw HTTP exchanges the tests
//! need to tamper with signatures, skopeo (pushing, signing, judging), and
//! signatures by `openssl dgst` where skopeo cannot sign (see `image_trust.rs`),
//! and `husk` itself. Shared by `image_trust.rs` and `image_trust_gpg.rs`,
//! each of which uses a part of it.

#![allow(dead_code)]

#[path = "../common/registry_process.rs"]
mod registry_process;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use base64::Engine as _;

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const PASSPHRASE: &str = "husk-test";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn have_tools() -> bool {
    for t in [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/openssl",
        "/bin/busybox",
    ] {
        if !Path::new(t).exists() {
            eprintln!("skipping: {t} is missing (scripts/deps.sh installs it)");
            return false;
        }
    }
    true
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-trust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Random bytes from the kernel.
pub fn random(n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

/// A P-256 key pair by openssl.
pub struct KeyPair {
    /// SPKI PEM, for policies.
    pub public: PathBuf,
    /// PKCS#8 PEM, for openssl.
    pub private: PathBuf,
    /// The private key as cosign wraps it, for skopeo.
    pub wrapped: PathBuf,
}

pub fn key_pair(dir: &Path, name: &str) -> KeyPair {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&private)
        .output()
        .unwrap();
    ok(&out, "openssl genpkey");
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    ok(&out, "openssl pkey -pubout");
    let pem = std::fs::read_to_string(&private).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let pkcs8 = B64.decode(body).unwrap();
    let wrapped = dir.join(format!("{name}.key"));
    std::fs::write(&wrapped, cosign_wrap(&pkcs8)).unwrap();
    KeyPair {
        public,
        private,
        wrapped,
    }
}

/// cosign's private key file: scrypt (N=2^15, r=8, p=1) and NaCl secretbox
/// (tag first), as go-securesystemslib's `encrypted` package writes it.
pub fn cosign_wrap(pkcs8: &[u8]) -> String {
    use crypto_secretbox::aead::{AeadInPlace, KeyInit};
    let salt = random(32);
    let nonce = random(24);
    let mut key = [0u8; 32];
    let params = scrypt::Params::new(15, 8, 1, 32).unwrap();
    scrypt::scrypt(PASSPHRASE.as_bytes(), &salt, &params, &mut key).unwrap();
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let mut buf = pkcs8.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(nonce.as_slice().into(), b"", &mut buf)
        .unwrap();
    let mut sealed = tag.to_vec();
    sealed.extend_from_slice(&buf);
    let doc = serde_json::json!({
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": B64.encode(&salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": B64.encode(&nonce)},
        "ciphertext": B64.encode(&sealed),
    });
    let b64 = B64.encode(doc.to_string());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// A registry on 127.0.0.1, killed (by its pid) on drop.
pub struct Registry {
    pub child: Child,
    pub port: u16,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        let config = dir.join("config.yml");
        std::fs::write(&config, cfg).unwrap();
        let child = registry_process::serve(&config, port);
        Registry { child, port }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.0 exchange; returns (status, head, body).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: {OCI_MANIFEST}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\n\r\n",
            self.host(),
            body.len()
        )
        .unwrap();
        c.write_all(body).unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head, answer[split + 4..].to_vec())
    }

    /// Uploads `blob` to `repo` (POST, then PUT with its digest); returns the digest.
    pub fn put_blob(&self, repo: &str, blob: &[u8]) -> String {
        let digest = sha256(blob);
        let (status, head, _) = self.http("POST", &format!("/v2/{repo}/blobs/uploads/"), b"");
        assert_eq!(status, 202, "{head}");
        let location = head
            .lines()
            .find_map(|l| l.strip_prefix("Location: "))
            .expect("an upload location")
            .trim()
            .to_string();
        let path = location
            .strip_prefix(&format!("http://{}", self.host()))
            .unwrap_or(&location);
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, head, _) = self.http("PUT", &format!("{path}{sep}digest={digest}"), blob);
        assert_eq!(status, 201, "{head}");
        digest
    }

    /// The manifest `reference` of `repo`.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Vec<u8> {
        let (status, _, body) = self.http("GET", &format!("/v2/{repo}/manifests/{reference}"), b"");
        assert_eq!(
            status,
            200,
            "GET {repo}:{reference}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) {
        let (status, _, answer) =
            self.http("PUT", &format!("/v2/{repo}/manifests/{reference}"), body);
        assert_eq!(
            status,
            201,
            "PUT {repo}:{reference}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Attaches a signature of `repo`'s manifest `digest`, naming `identity`,
/// made by `openssl dgst` with `key`, in the layout containers/image
/// writes for sigstore attachments.
pub fn attach_openssl_signature(
    reg: &Registry,
    repo: &str,
    digest: &str,
    identity: &str,
    key: &KeyPair,
    dir: &Path,
) {
    let payload = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": {"creator": "husk interop test (openssl dgst)"},
    })
    .to_string();
    let file = dir.join("payload.json");
    std::fs::write(&file, &payload).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key.private)
        .arg(&file)
        .output()
        .unwrap();
    ok(&out, "openssl dgst -sign");
    let payload_digest = reg.put_blob(repo, payload.as_bytes());
    let config = serde_json::json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
    })
    .to_string();
    let config_digest = reg.put_blob(repo, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": B64.encode(&out.stdout)},
        }],
    });
    let tag = format!("sha256-{}.sig", &digest[7..]);
    reg.put_manifest(repo, &tag, &serde_json::to_vec(&manifest).unwrap());
}

/// A busybox OCI layout (tests/images/mkimage.py); returns its manifest digest.
pub fn mkimage(dir: &Path, extra: &[&str]) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("python3")
        .arg(repo.join("tests/images/mkimage.py"))
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    ok(&out, "mkimage.py");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

/// skopeo with a registries.d that reads and writes sigstore attachments.
pub struct Skopeo {
    pub registries_d: PathBuf,
    pub passphrase: PathBuf,
}

impl Skopeo {
    /// skopeo with the registries.d directory `registries_d` as it is.
    pub fn with_registries_d(registries_d: PathBuf, dir: &Path) -> Skopeo {
        let passphrase = dir.join("passphrase");
        std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
        Skopeo {
            registries_d,
            passphrase,
        }
    }

    pub fn new(dir: &Path) -> Skopeo {
        let registries_d = dir.join("registries.d");
        std::fs::create_dir_all(&registries_d).unwrap();
        std::fs::write(
            registries_d.join("default.yaml"),
            "default-docker:\n  use-sigstore-attachments: true\n",
        )
        .unwrap();
        Skopeo::with_registries_d(registries_d, dir)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("skopeo");
        c.arg("--registries.d").arg(&self.registries_d);
        c
    }

    /// Pushes the layout `layout` as `repo:tag` on `reg`, signed by `key`
    /// as `identity` (default: the destination) when given; returns who
    /// signed (see the module doc).
    pub fn push(
        &self,
        reg: &Registry,
        layout: &Path,
        dest: &str,
        key: Option<&KeyPair>,
        identity: Option<&str>,
    ) -> &'static str {
        let full = format!("{}/{dest}", reg.host());
        let copy = |key: Option<&KeyPair>| {
            let mut c = self.cmd();
            c.args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]);
            if let Some(k) = key {
                c.arg("--sign-by-sigstore-private-key").arg(&k.wrapped);
                c.arg("--sign-passphrase-file").arg(&self.passphrase);
                if let Some(i) = identity {
                    c.args(["--sign-identity", i]);
                }
            }
            c.arg(format!("oci:{}:latest", layout.display()));
            c.arg(format!("docker://{full}"));
            c.output().unwrap()
        };
        let out = copy(key);
        let Some(key) = key else {
            ok(&out, &format!("skopeo copy to {full}"));
            return "";
        };
        if out.status.success() {
            return "skopeo";
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("sigstore disabled"),
            "skopeo copy to {full}: {err}"
        );
        ok(&copy(None), &format!("skopeo copy to {full}"));
        let (repo, tag) = dest.split_once(':').unwrap();
        let digest = sha256(&reg.get_manifest(repo, tag));
        attach_openssl_signature(reg, repo, &digest, identity.unwrap_or(&full), key, layout);
        "openssl"
    }

    /// skopeo's verdict on `image` under `policy`: Some(Ok), Some(its
    /// refusal), or None when this skopeo cannot judge sigstore signatures.
    pub fn verdict(
        &self,
        policy: &Path,
        image: &str,
        scratch: &Path,
    ) -> Option<Result<(), String>> {
        let dest = scratch.join("skopeo-out");
        let _ = std::fs::remove_dir_all(&dest);
        let out = self
            .cmd()
            .arg("--policy")
            .arg(policy)
            .args([
                "copy",
                "-q",
                "--src-tls-verify=false",
                "--remove-signatures",
            ])
            .arg(format!("docker://{image}"))
            .arg(format!("dir:{}", dest.display()))
            .output()
            .unwrap();
        if out.status.success() {
            return Some(Ok(()));
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if err.contains("sigstore disabled") {
            return None;
        }
        // A refusal by the policy, not a failure of the copy itself.
        assert!(
            err.contains("rejected") || err.contains("ignature"),
            "skopeo failed for another reason on {image}: {err}"
        );
        Some(Err(err.trim().to_string()))
    }
}

pub struct Husk {
    pub root: PathBuf,
}

impl Husk {
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_husk"))
            .args(args)
            .env("HUSK_ROOT", &self.root)
            .env("HOME", &self.root)
            .env("HUSK_KERNEL", "/nonexistent/husk-test-kernel")
            .env_remove("REGISTRY_AUTH_FILE")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// husk's verdict on `image` under `policy`: Ok, or its one-line refusal.
    pub fn verdict(&self, policy: &Path, image: &str) -> Result<(), String> {
        let (rc, _, err) = self.run(&["pull", "-q", "--policy", policy.to_str().unwrap(), image]);
        match rc {
            0 => Ok(()),
            119 => {
                assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
                assert!(err.starts_with("husk: "), "{err}");
                Err(err.trim().to_string())
            }
            other => panic!("husk pull {image}: status {other}: {err}"),
        }
    }

    /// `husk run IMAGE` is refused by the trust policy saying `refused`
    /// (or, with None, is not). `husk run` checks KVM before the image, so
    /// where KVM cannot run pods (this host's PVM) the same check is made
    /// through the library, on the same store record and the same policy.
    pub fn assert_run(&self, image: &str, refused: Option<&str>) {
        let (rc, _, err) = self.run(&["run", "--rm", image, "--", "true"]);
        if rc != 124 {
            match refused {
                Some(why) => {
                    assert_eq!(rc, 119, "{err}");
                    assert!(err.contains(why), "{why}: {err}");
                }
                None => assert_ne!(rc, 119, "{err}"),
            }
            return;
        }
        let record = self
            .images()
            .into_iter()
            .find(|i| i["name"] == image)
            .expect("the image is stored");
        let admission: Option<husk_vmm::trust::Admission> =
            serde_json::from_value(record["admission"].clone()).unwrap();
        let policy = husk_vmm::trust::Policy::load(&self.root).unwrap();
        let digest = record["manifest_digest"].as_str().unwrap();
        let verdict = husk_vmm::trust::recheck(&policy, image, digest, admission.as_ref());
        match refused {
            Some(why) => {
                let e = verdict.unwrap_err();
                assert_eq!(e.kind().exit_status(), 119);
                assert!(e.to_string().contains(why), "{why}: {e}");
            }
            None => {
                let decision = verdict.unwrap();
                assert!(decision.contains(" (scope "), "{decision}");
            }
        }
    }

    pub fn images(&self) -> Vec<serde_json::Value> {
        let (rc, out, err) = self.run(&["images", "--json"]);
        assert_eq!(rc, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Every file in the store's blobs and temp directories.
    pub fn stored_files(&self) -> usize {
        ["images/blobs/sha256", "images/tmp"]
            .iter()
            .map(|d| std::fs::read_dir(self.root.join(d)).map_or(0, |r| r.count()))
            .sum()
    }
}

/// The repositories of the interoperability cases, each signed one way
/// (see the two trust tests' case tables).
pub const CASE_REPOS: [&str; 6] = [
    "signed",
    "unsigned",
    "otherkey",
    "otherrepo",
    "otherdigest",
    "corrupt",
];

/// The policy of the interoperability cases, written to `path`: `signed`
/// (a requirement list) for every case repository on `host`, `open` accepting
/// anything, `rejected` rejecting, and the default rejecting the rest.
pub fn write_case_policy(path: &Path, host: &str, signed: serde_json::Value) {
    let mut scopes = serde_json::Map::new();
    for repo in CASE_REPOS {
        scopes.insert(format!("{host}/{repo}"), signed.clone());
    }
    scopes.insert(
        format!("{host}/open"),
        serde_json::json!([{"type": "insecureAcceptAnything"}]),
    );
    scopes.insert(
        format!("{host}/rejected"),
        serde_json::json!([{"type": "reject"}]),
    );
    write_policy(path, serde_json::Value::Object(scopes));
}

/// `{"default": reject, "transports": {"docker": scopes}}`.
pub fn write_policy(path: &Path, scopes: serde_json::Value) {
    let p = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": scopes},
    });
    std::fs::write(path, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
}

pub fn have_gpg() -> bool {
    if !Path::new("/usr/bin/gpg").exists() {
        eprintln!("skipping: /usr/bin/gpg is missing (scripts/deps.sh installs it)");
        return false;
    }
    have_tools()
}

/// A GnuPG home with two signing keys; returns (home, [(fingerprint, exported keyring)]).
pub fn gpg_keys(dir: &Path) -> (PathBuf, Vec<(String, PathBuf)>) {
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        ok(&out, &format!("gpg {args:?}"));
        out
    };
    let mut keys = Vec::new();
    for (n, algo) in [(1, "ed25519"), (2, "rsa2048")] {
        let uid = format!("husk test {n} <key{n}@husk.test>");
        gpg(&["--quick-gen-key", &uid, algo, "sign", "never"]);
        let listing =
            String::from_utf8(gpg(&["--with-colons", "--list-keys", &uid]).stdout).unwrap();
        let fpr = listing
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .unwrap();
        let ring = dir.join(format!("key{n}.gpg"));
        let out = gpg(&["--export", &fpr]);
        std::fs::write(&ring, out.stdout).unwrap();
        keys.push((fpr, ring));
    }
    (home, keys)
}
