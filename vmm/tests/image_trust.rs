//! Signature policies against the real tools: `skopeo` signs (cosign-format
//! signatures with `--sign-by-sigstore-private-key`, attached to the
//! registry with `use-sigstore-attachments`) and pushes to Debian's
//! `docker-registry` on 127.0.0.1; for the same policy file, `husk pull`'s
//! verdict must equal `skopeo copy --policy`'s on every case, both ways
//! round (what one accepts the other accepts, what one refuses the other
//! refuses), and both must be the verdict containers-policy.json(5) gives.
//! Needs no KVM and no network beyond the loopback; skips (saying why) when
//! a tool is missing (`scripts/deps.sh` installs them).
//!
//! Debian's skopeo 1.9.3+ds1 is built with sigstore disabled ("Debian-local
//! change: sigstore disabled"): it can neither make nor verify sigstore
//! signatures, only reach the verdicts that need no signature check (no
//! signature at all, `reject`, `insecureAcceptAnything`). So:
//! - signing: skopeo when it can; otherwise skopeo pushes the image and the
//!   signature is made by `openssl dgst -sha256 -sign` (ECDSA P-256, ASN.1
//!   DER, what cosign and containers/image make) over a simple-signing
//!   payload, attached as the `sha256-<hex>.sig` OCI manifest in the
//!   layout containers/image writes;
//! - comparison: wherever skopeo answers "sigstore disabled", its verdict
//!   is shown as unavailable and husk is held to the expected verdict alone;
//!   with a skopeo built with sigstore, every case is compared.
//!
//! Keys: `openssl` makes the P-256 key pairs; for skopeo, each private key
//! is wrapped the way cosign does and skopeo reads it (PKCS#8 DER, sealed
//! with NaCl secretbox under an scrypt key, in an `ENCRYPTED COSIGN PRIVATE
//! KEY` PEM block), since skopeo 1.9 has no `generate-sigstore-key`.

mod trust_fixtures;

#[path = "common/peak_rss.rs"]
mod peak_rss;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use trust_fixtures::*;

/// The images of the comparison, pushed by skopeo, and the keys.
struct World {
    dir: PathBuf,
    reg: Registry,
    skopeo: Skopeo,
    pub1: PathBuf,
    pub2: PathBuf,
    digest_a: String,
    /// Who made the signatures: skopeo, or openssl (see the module doc).
    signer: &'static str,
}

fn world(name: &str) -> World {
    let dir = scratch(name);
    let digest_a = mkimage(&dir.join("a"), &[]);
    let digest_b = mkimage(&dir.join("b"), &["--layer-file", "/etc/b=other image"]);
    assert_ne!(digest_a, digest_b);
    let key1 = key_pair(&dir, "key1");
    let key2 = key_pair(&dir, "key2");
    let reg = Registry::start(&dir);
    let skopeo = Skopeo::new(&dir);
    let host = reg.host();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let signer = skopeo.push(&reg, &a, "signed:1", Some(&key1), None);
    skopeo.push(&reg, &a, "unsigned:1", None, None);
    skopeo.push(&reg, &a, "otherkey:1", Some(&key2), None);
    skopeo.push(&reg, &a, "open:1", None, None);
    skopeo.push(&reg, &a, "rejected:1", Some(&key1), None);
    skopeo.push(&reg, &a, "nowhere:1", Some(&key1), None);
    let elsewhere = format!("{host}/elsewhere:1");
    skopeo.push(&reg, &a, "otherrepo:1", Some(&key1), Some(&elsewhere));
    // A signature for another digest: image A signed in the repository,
    // its .sig copied onto image B's.
    skopeo.push(&reg, &b, "otherdigest:1", None, None);
    skopeo.push(&reg, &a, "otherdigest:a", Some(&key1), None);
    let sig_a = format!("sha256-{}.sig", &digest_a[7..]);
    let sig_b = format!("sha256-{}.sig", &digest_b[7..]);
    let sig = reg.get_manifest("otherdigest", &sig_a);
    reg.put_manifest("otherdigest", &sig_b, &sig);
    // A corrupted signature: one byte of the ECDSA signature flipped.
    skopeo.push(&reg, &a, "corrupt:1", Some(&key1), None);
    let mut m: serde_json::Value =
        serde_json::from_slice(&reg.get_manifest("corrupt", &sig_a)).unwrap();
    let ann = &mut m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"];
    let mut raw = B64.decode(ann.as_str().unwrap()).unwrap();
    let last = raw.len() - 5;
    raw[last] ^= 0x01;
    *ann = serde_json::Value::String(B64.encode(&raw));
    reg.put_manifest("corrupt", &sig_a, &serde_json::to_vec(&m).unwrap());
    World {
        dir,
        reg,
        skopeo,
        pub1: key1.public,
        pub2: key2.public,
        digest_a,
        signer,
    }
}

/// The policy trusting `key` for every test repository (but `open`,
/// `rejected` and, through the default, `nowhere`).
fn policy_for(w: &World, key: &Path, file: &str) -> PathBuf {
    let path = w.dir.join(file);
    let signed = serde_json::json!([{"type": "sigstoreSigned", "keyPath": key}]);
    write_case_policy(&path, &w.reg.host(), signed);
    path
}

#[test]
fn husk_and_skopeo_agree_on_every_case() {
    if !have_tools() {
        return;
    }
    let w = world("agree");
    let host = w.reg.host();
    let husk = Husk {
        root: w.dir.join("root"),
    };
    let trust1 = policy_for(&w, &w.pub1, "policy-key1.json");
    let trust2 = policy_for(&w, &w.pub2, "policy-key2.json");
    // (case, image, expected under key1's policy, under key2's, husk's
    // reason under key1's)
    let cases = [
        ("correctly signed", "signed:1", true, false, ""),
        (
            "unsigned",
            "unsigned:1",
            false,
            false,
            "none exists for this digest",
        ),
        (
            "signed by another key",
            "otherkey:1",
            false,
            true,
            "no signature verifies",
        ),
        (
            "signature for another digest",
            "otherdigest:1",
            false,
            false,
            "another digest",
        ),
        (
            "identity names another repository",
            "otherrepo:1",
            false,
            false,
            "elsewhere:1, which matchRepoDigestOrExact does not accept",
        ),
        (
            "corrupted signature",
            "corrupt:1",
            false,
            false,
            "no signature verifies",
        ),
        (
            "policy: reject",
            "rejected:1",
            false,
            false,
            "reject (scope",
        ),
        (
            "no scope: default reject",
            "nowhere:1",
            false,
            false,
            "reject (scope default)",
        ),
        ("policy: insecureAcceptAnything", "open:1", true, true, ""),
    ];
    let mut table = format!(
        "signatures made by {}\ncase | policy | husk | skopeo\n",
        w.signer
    );
    let mut compared = 0;
    for (policy, key_name, column) in [(&trust1, "key1", 0), (&trust2, "key2", 1)] {
        for (case, image, by1, by2, why) in cases {
            let expected = if column == 0 { by1 } else { by2 };
            let image = format!("{host}/{image}");
            let before = husk.stored_files();
            let h = husk.verdict(policy, &image);
            let s = w.skopeo.verdict(policy, &image, &w.dir);
            let word = |r: &Result<(), String>| if r.is_ok() { "accept" } else { "refuse" };
            table += &format!(
                "{case} | {key_name} | {} | {}\n",
                word(&h),
                s.as_ref().map_or("n/a (sigstore disabled)", word)
            );
            if let Some(s) = &s {
                assert_eq!(
                    h.is_ok(),
                    s.is_ok(),
                    "{case} ({key_name}): husk {h:?}, skopeo {s:?}"
                );
                compared += 1;
            }
            assert_eq!(h.is_ok(), expected, "{case} ({key_name}): husk {h:?}");
            match h {
                Ok(()) => {
                    let (rc, _, err) = husk.run(&["rmi", &image]);
                    assert_eq!(rc, 0, "{err}");
                }
                Err(line) => {
                    // One line naming the requirement and the digest; nothing stored.
                    assert!(line.contains("sha256:"), "{line}");
                    assert!(line.contains("scope"), "{line}");
                    assert!(column == 1 || line.contains(why), "{case}: {line}");
                    assert_eq!(
                        husk.stored_files(),
                        before,
                        "{case}: a refused pull stored files"
                    );
                    assert!(husk.images().iter().all(|i| i["name"] != image.as_str()));
                }
            }
        }
    }
    // skopeo judges at least the cases that need no signature check.
    assert!(compared >= 8, "{table}");
    eprintln!("{table}");
    // Pulled by digest, the signed image is admitted too (matchRepoDigestOrExact).
    let by_digest = format!("{host}/signed@{}", w.digest_a);
    assert_eq!(husk.verdict(&trust1, &by_digest), Ok(()));
    if let Some(s) = w.skopeo.verdict(&trust1, &by_digest, &w.dir) {
        assert_eq!(s, Ok(()));
    }
}

#[test]
fn records_and_husk_run_recheck() {
    if !have_tools() {
        return;
    }
    let w = world("record");
    let host = w.reg.host();
    let husk = Husk {
        root: w.dir.join("root"),
    };
    let trust1 = policy_for(&w, &w.pub1, "policy-key1.json");
    let signed = format!("{host}/signed:1");
    let open = format!("{host}/open:1");
    assert_eq!(husk.verdict(&trust1, &signed), Ok(()));
    assert_eq!(husk.verdict(&trust1, &open), Ok(()));
    let fingerprint = {
        let (rc, out, err) = husk.run(&[
            "trust",
            "add",
            "--sigstore-key",
            w.pub1.to_str().unwrap(),
            &format!("{host}/open"),
        ]);
        assert_eq!(rc, 0, "{err}");
        let fp = out
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap()
            .to_string();
        fp
    };
    let images = husk.images();
    let record =
        |name: &str| images.iter().find(|i| i["name"] == name).unwrap()["admission"].clone();
    assert_eq!(
        record(&signed)["signatures"][0]["key"],
        fingerprint.as_str()
    );
    assert_eq!(
        record(&signed)["signatures"][0]["identity"],
        signed.as_str()
    );
    assert_eq!(record(&open)["admitted_by"], "accepted unsigned");
    // <root>/policy.json now demands key1 for the open repository (husk
    // trust add wrote it, starting from the policy in force): the image
    // admitted unsigned is refused before anything boots.
    let (rc, out, _) = husk.run(&["trust", "list"]);
    assert_eq!(rc, 0);
    assert!(out.contains(&format!("{host}/open")), "{out}");
    husk.assert_run(&open, Some("without a verified signature"));
    // The signed one passes the check (and fails later: no kernel here).
    std::fs::copy(&trust1, husk.root.join("policy.json")).unwrap();
    husk.assert_run(&signed, None);
    // A policy that rejects everything refuses it too.
    let (rc, _, err) = husk.run(&["trust", "default", "reject"]);
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = husk.run(&["trust", "rm", &format!("{host}/signed")]);
    assert_eq!(rc, 0, "{err}");
    husk.assert_run(&signed, Some("reject (scope default)"));
    // With the built-in default (no policy file at all), an unsigned pull
    // warns once. The host's /etc/containers/policy.json would be read
    // instead, so only when there is none.
    if !Path::new("/etc/containers/policy.json").exists() {
        std::fs::remove_file(husk.root.join("policy.json")).unwrap();
        let (rc, _, err) = husk.run(&["pull", "-q", &format!("{host}/unsigned:1")]);
        assert_eq!(rc, 0, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("accepted unsigned"), "{err}");
    }
}

#[test]
fn bad_input_is_one_line_and_admits_nothing() {
    if !have_tools() {
        return;
    }
    let w = world("bad");
    let host = w.reg.host();
    let husk = Husk {
        root: w.dir.join("root"),
    };
    let signed = format!("{host}/signed:1");
    let one_line = |rc: i32, want: i32, err: &str, says: &str| {
        assert_eq!(rc, want, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{says}: {err}");
    };
    // A malformed policy and an unknown requirement type: status 125, the file named.
    let bad = w.dir.join("bad.json");
    std::fs::write(&bad, "{\"default\": [").unwrap();
    let (rc, _, err) = husk.run(&["pull", "--policy", bad.to_str().unwrap(), &signed]);
    one_line(rc, 125, &err, "bad.json");
    std::fs::write(&bad, r#"{"default":[{"type":"signedByAnyoneNice"}]}"#).unwrap();
    let (rc, _, err) = husk.run(&["pull", "--policy", bad.to_str().unwrap(), &signed]);
    one_line(rc, 125, &err, "unknown requirement type");
    // A key that is not a P-256 public key: in the policy, and to husk trust.
    let rsa = w.dir.join("rsa.pub");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 | openssl pkey -pubout -out {}",
            rsa.display()
        ))
        .output()
        .unwrap();
    ok(&out, "openssl rsa");
    let rsa_policy = w.dir.join("rsa.json");
    write_policy(
        &rsa_policy,
        serde_json::json!({format!("{host}/signed"): [{"type": "sigstoreSigned", "keyPath": rsa}]}),
    );
    let (rc, _, err) = husk.run(&["pull", "--policy", rsa_policy.to_str().unwrap(), &signed]);
    one_line(rc, 125, &err, "P-256");
    for not_a_key in [&rsa, &w.dir.join("key1.key"), &w.dir.join("config.yml")] {
        let (rc, _, err) = husk.run(&[
            "trust",
            "add",
            "--sigstore-key",
            not_a_key.to_str().unwrap(),
            &host,
        ]);
        one_line(rc, 125, &err, "key ");
    }
    assert!(!husk.root.join("policy.json").exists());
    let (rc, _, err) = husk.run(&[
        "trust",
        "add",
        "--sigstore-key",
        w.pub1.to_str().unwrap(),
        "busybox",
    ]);
    one_line(rc, 125, &err, "invalid scope");
    // A giant signature manifest (2 MiB of annotations on the real one).
    let trust1 = policy_for(&w, &w.pub1, "policy-key1.json");
    let sig_a = format!("sha256-{}.sig", &w.digest_a[7..]);
    let mut m: serde_json::Value =
        serde_json::from_slice(&w.reg.get_manifest("signed", &sig_a)).unwrap();
    m["annotations"] = serde_json::json!({"padding": "x".repeat(2 << 20)});
    w.reg
        .put_manifest("signed", &sig_a, &serde_json::to_vec(&m).unwrap());
    let (rc, _, err) = husk.run(&["pull", "--policy", trust1.to_str().unwrap(), &signed]);
    one_line(rc, 119, &err, "larger than the limit");
    // Too many signatures: 65 copies of the real one.
    let layer = m["layers"][0].clone();
    m["annotations"] = serde_json::json!({});
    m["layers"] = serde_json::Value::Array(vec![layer; 65]);
    w.reg
        .put_manifest("signed", &sig_a, &serde_json::to_vec(&m).unwrap());
    let (rc, _, err) = husk.run(&["pull", "--policy", trust1.to_str().unwrap(), &signed]);
    one_line(rc, 119, &err, "more than the 64");
    assert!(husk.images().is_empty());
    assert_eq!(husk.stored_files(), 0);
}

#[test]
fn unreadable_keys_huge_signatures_and_many_tags() {
    if !have_tools() {
        return;
    }
    let w = world("bounds");
    let host = w.reg.host();
    let signed = format!("{host}/signed:1");
    let husk = |name: &str| Husk {
        root: w.dir.join(name),
    };
    let refused = |husk: &Husk, policy: &Path, want: i32, says: &str| {
        let (rc, _, err) = husk.run(&["pull", "-q", "--policy", policy.to_str().unwrap(), &signed]);
        assert_eq!(rc, want, "{says}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(husk.images().is_empty());
        assert_eq!(husk.stored_files(), 0);
    };
    // Keys that cannot be read: missing, a directory; sigstore and GPG alike.
    let keys = husk("keys");
    for (ty, path) in [
        ("sigstoreSigned", w.dir.join("no-such.pub")),
        ("sigstoreSigned", w.dir.clone()),
        ("signedBy", w.dir.join("no-such.gpg")),
        ("signedBy", w.dir.clone()),
    ] {
        let policy = w.dir.join("unreadable.json");
        let mut req = serde_json::json!({"type": ty, "keyPath": path});
        if ty == "signedBy" {
            req["keyType"] = "GPGKeys".into();
        }
        write_case_policy(&policy, &host, serde_json::json!([req]));
        refused(&keys, &policy, 125, &format!("key {}", path.display()));
    }

    // 10^5 other signature tags in the repository (written straight into the
    // registry's storage, each pointing at the real signature manifest):
    // husk asks for its one tag only, so the pull is admitted as before,
    // with the same small memory.
    let trust1 = policy_for(&w, &w.pub1, "policy-key1.json");
    let sig_a = format!("sha256-{}.sig", &w.digest_a[7..]);
    let real = w.reg.get_manifest("signed", &sig_a);
    let link = sha256(&real);
    let tags = w
        .dir
        .join("data/docker/registry/v2/repositories/signed/_manifests/tags");
    for n in 0..100_000u32 {
        let d = tags.join(format!("sha256-{:064x}.sig", n)).join("current");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("link"), &link).unwrap();
    }
    let (status, _, list) = w.reg.http("GET", "/v2/signed/tags/list", b"");
    assert_eq!(status, 200);
    let sig_tags = list.windows(5).filter(|w| w == b".sig\"").count();
    assert!(
        sig_tags > 100_000,
        "the registry lists {sig_tags} signature tags"
    );
    drop(list);
    let many = husk("many");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_husk"));
    cmd.args(["pull", "-q", "--policy", trust1.to_str().unwrap(), &signed])
        .env("HUSK_ROOT", &many.root)
        .env("HOME", &many.root);
    let start = std::time::Instant::now();
    let (rc, err, rss) = peak_rss::run(&mut cmd, std::time::Duration::from_secs(120));
    eprintln!(
        "figure pull-with-100000-signature-tags {:?}, peak RSS {rss} KiB",
        start.elapsed()
    );
    assert_eq!(rc, 0, "{err}");
    assert!(rss < 64 << 10, "peak RSS {rss} KiB");

    // A signature payload larger than the limit, by its descriptor and by
    // a blob longer than its descriptor says.
    let big = vec![b'{'; 10 << 20];
    let big_digest = w.reg.put_blob("signed", &big);
    let mut m: serde_json::Value = serde_json::from_slice(&real).unwrap();
    m["layers"][0]["size"] = (10u64 << 20).into();
    m["layers"][0]["digest"] = big_digest.clone().into();
    w.reg
        .put_manifest("signed", &sig_a, &serde_json::to_vec(&m).unwrap());
    refused(
        &husk("huge"),
        &trust1,
        119,
        "larger than the limit of 65536",
    );
    m["layers"][0]["size"] = 300.into();
    w.reg
        .put_manifest("signed", &sig_a, &serde_json::to_vec(&m).unwrap());
    refused(
        &husk("lying"),
        &trust1,
        119,
        "larger than its descriptor says",
    );
}
