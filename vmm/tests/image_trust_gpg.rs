//! GPG simple signing (`signedBy`) against the real tools: Debian's `gnupg`
//! makes the keys (one Ed25519, one RSA), Debian's `skopeo` signs with
//! `--sign-by` into a `file://` lookaside storage named by a `registries.d`
//! configuration and pushes to Debian's `docker-registry` on 127.0.0.1. For
//! the same policy file and the same `registries.d`, `husk pull`'s verdict
//! must equal `skopeo copy --policy`'s on every case, both ways round, and
//! both must be the verdict the policy gives. Needs no KVM and no network
//! beyond the loopback; skips when a tool is missing (`scripts/deps.sh`).

mod trust_fixtures;

use std::process::Command;

use std::path::Path;

use trust_fixtures::*;

#[test]
fn husk_and_skopeo_agree_on_gpg_signatures() {
    if !have_gpg() {
        return;
    }
    let dir = scratch("gpg");
    let digest_a = mkimage(&dir.join("a"), &[]);
    let digest_b = mkimage(&dir.join("b"), &["--layer-file", "/etc/b=other image"]);
    let (home, keys) = gpg_keys(&dir);
    let reg = Registry::start(&dir);
    let host = reg.host();
    let lookaside = dir.join("lookaside");
    std::fs::create_dir_all(&lookaside).unwrap();
    let registries_d = dir.join("root/registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("husk-test.yaml"),
        format!(
            "docker:\n  {host}:\n    lookaside: file://{0}\n    lookaside-staging: file://{0}\n",
            lookaside.display()
        ),
    )
    .unwrap();
    let push = |layout: &str, dest: &str, key: Option<&str>, identity: Option<&str>| {
        let mut c = Command::new("skopeo");
        c.env("GNUPGHOME", &home)
            .arg("--registries.d")
            .arg(&registries_d)
            .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]);
        if let Some(fpr) = key {
            c.args(["--sign-by", fpr]);
        }
        if let Some(i) = identity {
            c.args(["--sign-identity", i]);
        }
        c.arg(format!("oci:{}:latest", dir.join(layout).display()));
        c.arg(format!("docker://{host}/{dest}"));
        ok(&c.output().unwrap(), &format!("skopeo copy to {dest}"));
    };
    let (k1, k2) = (Some(keys[0].0.as_str()), Some(keys[1].0.as_str()));
    push("a", "signed:1", k1, None);
    push("a", "unsigned:1", None, None);
    push("a", "otherkey:1", k2, None);
    push("a", "open:1", None, None);
    push("a", "rejected:1", k1, None);
    push("a", "nowhere:1", k1, None);
    let elsewhere = format!("{host}/elsewhere:1");
    push("a", "otherrepo:1", k1, Some(&elsewhere));
    // A signature for another digest: A's signature filed under B's digest.
    push("b", "otherdigest:1", None, None);
    push("a", "otherdigest:a", k1, None);
    let sig_dir = |repo: &str, d: &str| lookaside.join(format!("{repo}@sha256={}", &d[7..]));
    std::fs::create_dir_all(sig_dir("otherdigest", &digest_b)).unwrap();
    std::fs::copy(
        sig_dir("otherdigest", &digest_a).join("signature-1"),
        sig_dir("otherdigest", &digest_b).join("signature-1"),
    )
    .unwrap();
    // A corrupted signature: one byte flipped near its end.
    push("a", "corrupt:1", k1, None);
    let file = sig_dir("corrupt", &digest_a).join("signature-1");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 8;
    bytes[at] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let policy = |ring: &Path, name: &str| {
        let signed =
            serde_json::json!([{"type": "signedBy", "keyType": "GPGKeys", "keyPath": ring}]);
        let path = dir.join(name);
        write_case_policy(&path, &host, signed);
        path
    };
    let p1 = policy(&keys[0].1, "policy-key1.json");
    let p2 = policy(&keys[1].1, "policy-key2.json");
    let husk = Husk {
        root: dir.join("root"),
    };
    let skopeo = Skopeo::with_registries_d(registries_d.clone(), &dir);
    let skopeo_verdict = |policy: &Path, image: &str| {
        skopeo
            .verdict(policy, image, &dir)
            .expect("GPG checks are not switched off in Debian's skopeo")
            .is_ok()
    };
    // (case, image, expected under key1's policy, under key2's)
    let cases = [
        ("correctly signed", "signed:1", true, false),
        ("unsigned", "unsigned:1", false, false),
        ("signed by another key", "otherkey:1", false, true),
        (
            "signature for another digest",
            "otherdigest:1",
            false,
            false,
        ),
        (
            "identity names another repository",
            "otherrepo:1",
            false,
            false,
        ),
        ("corrupted signature", "corrupt:1", false, false),
        ("policy: reject", "rejected:1", false, false),
        ("no scope: default reject", "nowhere:1", false, false),
        ("policy: insecureAcceptAnything", "open:1", true, true),
    ];
    let mut table = String::from("case | policy | husk | skopeo\n");
    let word = |ok: bool| if ok { "accept" } else { "refuse" };
    for (policy, name, column) in [(&p1, "key1 (ed25519)", 0), (&p2, "key2 (rsa2048)", 1)] {
        for (case, image, by1, by2) in cases {
            let expected = if column == 0 { by1 } else { by2 };
            let image = format!("{host}/{image}");
            let before = husk.stored_files();
            let h = husk.verdict(policy, &image);
            let s = skopeo_verdict(policy, &image);
            table += &format!("{case} | {name} | {} | {}\n", word(h.is_ok()), word(s));
            assert_eq!(h.is_ok(), s, "{case} ({name}): husk {h:?}");
            assert_eq!(s, expected, "{case} ({name})");
            if h.is_ok() {
                assert_eq!(husk.run(&["rmi", &image]).0, 0);
            } else {
                assert_eq!(
                    husk.stored_files(),
                    before,
                    "{case}: a refused pull stored files"
                );
            }
        }
    }
    eprintln!("{table}");
    // The record names the keyring, and husk run's check accepts it under
    // the same policy and refuses it once the scope demands the other key.
    assert_eq!(husk.verdict(&p1, &format!("{host}/signed:1")), Ok(()));
    std::fs::copy(&p1, husk.root.join("policy.json")).unwrap();
    husk.assert_run(&format!("{host}/signed:1"), None);
    std::fs::copy(&p2, husk.root.join("policy.json")).unwrap();
    husk.assert_run(
        &format!("{host}/signed:1"),
        Some("none of its verified signatures"),
    );
}
