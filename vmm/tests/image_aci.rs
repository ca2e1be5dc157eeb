//! `husk import FILE.aci` through the real binaries (`husk`, which hands
//! the archive to `husk-pull`): ACIs built here with the tar crate, signed
//! the way the App Container spec says (`gpg --armor --detach-sign`, by
//! Debian's gnupg), judged by a `containers-policy.json` `signedBy`
//! requirement; the record is then re-checked as `husk run` does, under
//! a policy tightened after the import. Needs no KVM; skips without gpg.

mod trust_fixtures;

use std::path::{Path, PathBuf};
use std::process::Command;

use trust_fixtures::*;

fn aci(path: &Path, name: &str, marker: &str) {
    let manifest = serde_json::json!({
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
        "labels": [{"name": "version", "value": "1.0"}, {"name": "os", "value": "linux"}],
        "app": {"exec": ["/bin/sh", "-c", "echo $MARKER"], "user": "0", "group": "0",
                "environment": [{"name": "MARKER", "value": marker}]},
    });
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    let add = |b: &mut tar::Builder<_>, name: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(
        &mut b,
        "manifest",
        manifest.to_string().as_bytes(),
        tar::EntryType::Regular,
    );
    add(&mut b, "rootfs", b"", tar::EntryType::Directory);
    add(
        &mut b,
        "rootfs/marker",
        marker.as_bytes(),
        tar::EntryType::Regular,
    );
    b.into_inner().unwrap().finish().unwrap();
}

fn sign(home: &Path, fpr: &str, file: &Path) -> PathBuf {
    let asc = PathBuf::from(format!("{}.asc", file.display()));
    let _ = std::fs::remove_file(&asc);
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(["--local-user", fpr, "--armor", "--detach-sign", "--output"])
        .arg(&asc)
        .arg(file)
        .output()
        .unwrap();
    ok(&out, "gpg --detach-sign");
    asc
}

fn policy(path: &Path, ring: &Path) {
    let p = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {"example.com/hello": [
            {"type": "signedBy", "keyType": "GPGKeys", "keyPath": ring}]}},
    });
    std::fs::write(path, p.to_string()).unwrap();
}

#[test]
fn signed_acis_by_policy() {
    if !Path::new("/usr/bin/gpg").exists() {
        eprintln!("skipping: /usr/bin/gpg is missing (scripts/deps.sh installs it)");
        return;
    }
    let dir = scratch("aci");
    let (home, keys) = gpg_keys(&dir);
    let husk = Husk {
        root: dir.join("root"),
    };
    let trust1 = dir.join("trust1.json");
    policy(&trust1, &keys[0].1);
    let p1 = trust1.to_str().unwrap();
    let image = "example.com/hello:1.0";
    let stored = |husk: &Husk| husk.images().iter().any(|i| i["name"] == image);
    let refused = |file: &Path, why: &str| {
        let (rc, _, err) = husk.run(&["import", "--policy", p1, file.to_str().unwrap()]);
        assert_eq!(rc, 119, "{why}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(why), "{why}: {err}");
        assert!(!stored(&husk), "{why}: stored anyway");
        assert_eq!(husk.stored_files(), 0, "{why}: blobs left behind");
    };

    let good = dir.join("hello.aci");
    aci(&good, "example.com/hello", "signed");
    // Unsigned, signed by the other key, a corrupted signature, the
    // signature of another ACI, an ACI changed after it was signed.
    refused(&good, "no detached signature");
    sign(&home, &keys[1].0, &good);
    refused(&good, "does not verify");
    let asc = sign(&home, &keys[0].0, &good);
    let text = std::fs::read_to_string(&asc).unwrap();
    let body = text.lines().nth(2).unwrap().to_string();
    let flipped: String = body.chars().rev().collect();
    std::fs::write(&asc, text.replacen(&body, &flipped, 1)).unwrap();
    refused(&good, "signature");
    let other = dir.join("other.aci");
    aci(&other, "example.com/hello", "other");
    let other_asc = sign(&home, &keys[0].0, &other);
    std::fs::copy(&other_asc, &asc).unwrap();
    refused(&good, "does not verify");
    sign(&home, &keys[0].0, &good);
    aci(&good, "example.com/hello", "changed after signing");
    refused(&good, "does not verify");

    // Correctly signed: admitted, with the keyring in the record.
    aci(&good, "example.com/hello", "signed");
    sign(&home, &keys[0].0, &good);
    let (rc, out, err) = husk.run(&["import", "--policy", p1, good.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), image);
    let record = husk
        .images()
        .into_iter()
        .find(|i| i["name"] == image)
        .unwrap();
    let by = record["admission"]["admitted_by"].as_str().unwrap();
    assert!(by.starts_with("signed by keyring sha256:"), "{by}");
    assert_eq!(record["config"]["entrypoint"][0], "/bin/sh");
    assert_eq!(record["config"]["env"][0], "MARKER=signed");

    // `husk run` re-checks the record under the policy in force.
    std::fs::copy(&trust1, husk.root.join("policy.json")).unwrap();
    husk.assert_run(image, None);
    policy(&husk.root.join("policy.json"), &keys[1].1);
    husk.assert_run(
        image,
        Some("none of its verified signatures is by these keys"),
    );

    // A manifest naming another image than the caller asked for.
    let (rc, _, err) = husk.run(&[
        "import",
        "--policy",
        p1,
        "--tag",
        "example.com/trusted:1.0",
        good.to_str().unwrap(),
    ]);
    assert_eq!(rc, 122, "{err}");
    assert!(err.contains("names itself example.com/hello:1.0"), "{err}");
}

#[test]
fn hostile_aci_is_one_line_and_stores_nothing() {
    let dir = scratch("aci-hostile");
    let husk = Husk {
        root: dir.join("root"),
    };
    let accept = dir.join("accept.json");
    std::fs::write(
        &accept,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    // Python's tarfile, a second independent writer, for the traversal.
    let evil = dir.join("evil.aci");
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import io,sys,tarfile\n\
             t=tarfile.open(sys.argv[1],'w:xz')\n\
             m=b'{\"acKind\":\"ImageManifest\",\"acVersion\":\"0.8.11\",\"name\":\"example.com/evil\"}'\n\
             for n,d in [('manifest',m),('rootfs/../../../etc/cron.d/x',b'* * * * * root id')]:\n\
             \x20   i=tarfile.TarInfo(n); i.size=len(d); t.addfile(i,io.BytesIO(d))\n\
             t.close()\n",
        )
        .arg(&evil)
        .output()
        .unwrap();
    ok(&out, "python3 tarfile");
    let (rc, _, err) = husk.run(&[
        "import",
        "--policy",
        accept.to_str().unwrap(),
        evil.to_str().unwrap(),
    ]);
    assert_eq!(rc, 122, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("climbs out"), "{err}");
    assert!(husk.images().is_empty());
    assert_eq!(husk.stored_files(), 0);
    // A missing file, a directory, and --policy for a non-ACI import.
    let (rc, _, err) = husk.run(&["import", "/nonexistent/x.aci"]);
    assert_eq!((rc, err.lines().count()), (125, 1), "{err}");
    let (rc, _, err) = husk.run(&["import", "--policy", "/p.json", dir.to_str().unwrap()]);
    assert_eq!((rc, err.lines().count()), (125, 1), "{err}");
}
