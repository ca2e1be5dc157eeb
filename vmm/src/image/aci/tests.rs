//! ACIs built here, entry by entry (raw headers, so that hostile names
//! the tar crate's builder would refuse can be written), imported into a
//! scratch store under an explicit policy.

use std::io::{Read, Write};
use std::path::PathBuf;

use tar::{EntryType, Header};

use super::*;
use crate::failure::Failure;

const MANIFEST: &str = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app",
  "labels":[{"name":"version","value":"2.1"}],
  "app":{"exec":["/bin/app"],"user":"1000","group":"1000","workingDirectory":"/srv",
    "environment":[{"name":"MODE","value":"aci"}]}}"#;

/// One archive entry: name, kind, data, link target.
struct E(&'static str, EntryType, Vec<u8>, &'static str);

fn file(name: &'static str, data: &str) -> E {
    E(name, EntryType::Regular, data.as_bytes().to_vec(), "")
}

fn dir(name: &'static str) -> E {
    E(name, EntryType::Directory, Vec::new(), "")
}

fn link(name: &'static str, kind: EntryType, target: &'static str) -> E {
    E(name, kind, Vec::new(), target)
}

/// A tar of `entries`, names written into the header as they are.
fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for E(name, kind, data, target) in entries {
        let mut h = Header::new_gnu();
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if !target.is_empty() {
            h.set_link_name_literal(target).unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn good() -> Vec<E> {
    vec![
        file("manifest", MANIFEST),
        dir("rootfs/"),
        dir("rootfs/srv/"),
        file("rootfs/srv/data", "hello\n"),
        link("rootfs/srv/sym", EntryType::Symlink, "../srv/data"),
        link("rootfs/srv/abs", EntryType::Symlink, "/srv/data"),
        link("rootfs/srv/hard", EntryType::Link, "rootfs/srv/data"),
    ]
}

struct Env {
    dir: PathBuf,
    store: Store,
    policy: PathBuf,
}

fn env(name: &str, policy: &str) -> Env {
    let dir = std::env::temp_dir().join(format!("husk-aci-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy_path = dir.join("policy.json");
    std::fs::write(&policy_path, policy).unwrap();
    Env {
        store: Store::open(&dir.join("root")).unwrap(),
        dir,
        policy: policy_path,
    }
}

const ACCEPT: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

impl Env {
    fn import(&self, bytes: &[u8], tag: Option<&str>) -> Result<Image, ImageError> {
        let path = self.dir.join("app.aci");
        std::fs::write(&path, bytes).unwrap();
        import_here(&self.store, &path, tag, Some(&self.policy))
    }

    /// Nothing visible, nothing stored, nothing left in tmp/.
    fn assert_empty(&self) {
        assert!(self.store.list().unwrap().is_empty());
        for sub in ["blobs/sha256", "tmp"] {
            let n = std::fs::read_dir(self.store.dir().join(sub))
                .unwrap()
                .count();
            assert_eq!(n, 0, "{sub} is not empty");
        }
    }
}

fn compress(kind: &str, tar: &[u8]) -> Vec<u8> {
    match kind {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        _ => tar.to_vec(),
    }
}

#[test]
fn imports_each_compression_as_one_layer() {
    let e = env("good", ACCEPT);
    for kind in ["tar", "gzip", "bzip2", "xz"] {
        let img = e.import(&compress(kind, &tar_of(&good())), None).unwrap();
        assert_eq!(img.name, "example.com/app:2.1", "{kind}");
        assert_eq!(img.config.entrypoint, ["/bin/app"]);
        assert_eq!(img.config.env, ["MODE=aci"]);
        assert_eq!(img.config.working_dir, "/srv");
        assert_eq!(img.config.user, "1000:1000");
        assert_eq!(img.layers.len(), 1);
        assert_eq!(
            img.admission.as_ref().unwrap().admitted_by,
            "accepted unsigned"
        );
        // The layer is the rootfs, rootfs/ taken off; the same each time.
        let blob = e.store.blobs().path(&img.layers[0].digest).unwrap();
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(std::fs::File::open(blob).unwrap());
        for entry in ar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let target = entry.link_name().unwrap().map(|t| t.display().to_string());
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            names.push((name, target, data));
        }
        let want =
            |n: &str, t: Option<&str>, d: &str| (n.to_string(), t.map(String::from), d.to_string());
        assert_eq!(
            names,
            [
                want("srv", None, ""),
                want("srv/data", None, "hello\n"),
                want("srv/sym", Some("../srv/data"), ""),
                want("srv/abs", Some("/srv/data"), ""),
                want("srv/hard", Some("srv/data"), ""),
            ]
        );
    }
    assert_eq!(e.store.list().unwrap().len(), 1);
    // --tag states the name it must have.
    let bytes = tar_of(&good());
    assert!(e.import(&bytes, Some("example.com/app:2.1")).is_ok());
    let err = e.import(&bytes, Some("example.com/other:2.1")).unwrap_err();
    assert!(
        err.to_string()
            .contains("names itself example.com/app:2.1, not example.com/other:2.1"),
        "{err}"
    );
}

#[test]
fn hostile_archives_leave_nothing() {
    let e = env("hostile", ACCEPT);
    let m = || file("manifest", MANIFEST);
    let big_manifest = E(
        "manifest",
        EntryType::Regular,
        vec![b' '; manifest::MAX_MANIFEST as usize + 1],
        "",
    );
    let cases: Vec<(Vec<E>, &str)> = vec![
        (vec![m(), file("rootfs/../../etc/x", "x")], "climbs out"),
        (vec![m(), file("/rootfs/x", "x")], "absolute path"),
        (vec![m(), file("etc/passwd", "x")], "outside rootfs"),
        (vec![m(), file("extra", "x")], "outside rootfs"),
        (
            vec![
                m(),
                link("rootfs/a", EntryType::Symlink, "../../etc/shadow"),
            ],
            "points out of rootfs",
        ),
        (
            vec![m(), link("rootfs/d/a", EntryType::Symlink, "x/../../..")],
            "points out of rootfs",
        ),
        (
            vec![m(), link("rootfs/a", EntryType::Link, "manifest")],
            "points out of rootfs",
        ),
        (
            vec![m(), link("rootfs/a", EntryType::Link, "/etc/passwd")],
            "points out of rootfs",
        ),
        (
            vec![m(), link("rootfs/a", EntryType::Link, "rootfs/../../x")],
            "points out of rootfs",
        ),
        (
            vec![m(), E("rootfs/dev/sda", EntryType::Block, vec![], "")],
            "device node",
        ),
        (
            vec![m(), E("rootfs/dev/mem", EntryType::Char, vec![], "")],
            "device node",
        ),
        (vec![m(), file("rootfs", "x")], "not a directory"),
        (vec![m(), m()], "second manifest"),
        (vec![dir("manifest/")], "not a regular file"),
        (vec![big_manifest], "a manifest of"),
        (vec![dir("rootfs/")], "no manifest"),
        (
            vec![E("x", EntryType::GNULongName, vec![b'a'; 70_000], "")],
            "GNU long name",
        ),
        (
            vec![
                E(
                    "x",
                    EntryType::XHeader,
                    b"20 size=99999999999\n".to_vec(),
                    "",
                ),
                file("rootfs/x", ""),
            ],
            "pax size",
        ),
        (vec![file("manifest", "{not json")], "ACI manifest"),
        (
            vec![file(
                "manifest",
                &MANIFEST.replace("example.com/app", "app"),
            )],
            "registry-style",
        ),
    ];
    for (entries, why) in cases {
        let err = e.import(&tar_of(&entries), None).unwrap_err();
        let line = err.to_string();
        assert!(line.contains(why), "{why}: {line}");
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(err.kind(), Failure::Integrity, "{line}");
        e.assert_empty();
    }
    // An xz stream whose block header asks for a 1 GiB dictionary (made
    // small, then its LZMA2 dictionary byte set to 36 and the header's
    // CRC32 redone).
    let mut xz = compress("xz", &tar_of(&good()));
    assert_eq!(
        &xz[12..16],
        &[0x02, 0x00, 0x21, 0x01],
        "an unexpected block header"
    );
    xz[16] = 36;
    let mut crc = flate2::Crc::new();
    crc.update(&xz[12..20]);
    xz[20..24].copy_from_slice(&crc.sum().to_le_bytes());
    let err = e.import(&xz, None).unwrap_err();
    assert!(err.to_string().contains("memory limit reached"), "{err}");
    e.assert_empty();
    // Not a tar at all, and a truncated compressed stream.
    for bytes in [
        b"garbage that is no tar".to_vec(),
        compress("gzip", &tar_of(&good()))[..60].to_vec(),
    ] {
        assert!(e.import(&bytes, None).is_err());
        e.assert_empty();
    }
}

#[test]
fn pax_names_and_long_names_are_read() {
    let e = env("pax", ACCEPT);
    let long = "rootfs/".to_string() + &"d".repeat(120) + "/f";
    let pax = format!("{} path={long}\n", long.len() + 10);
    let mut entries = vec![file("manifest", MANIFEST)];
    entries.push(E("pax", EntryType::XHeader, pax.into_bytes(), ""));
    entries.push(file("short", "data"));
    let img = e.import(&tar_of(&entries), None).unwrap();
    let blob = e.store.blobs().path(&img.layers[0].digest).unwrap();
    let mut ar = tar::Archive::new(std::fs::File::open(blob).unwrap());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|x| x.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, [long.trim_start_matches("rootfs/")]);
}

#[test]
fn the_policy_decides_before_anything_is_stored() {
    let bytes = tar_of(&good());
    for (name, policy, why) in [
        (
            "reject",
            r#"{"default":[{"type":"reject"}]}"#,
            "rejects every image",
        ),
        (
            "sigstore",
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"example.com":[{"type":"sigstoreSigned","keyPath":"/nonexistent.pub"}]}}}"#,
            "no sigstore signature",
        ),
        (
            "gpg",
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"example.com/app":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/nonexistent.gpg"}]}}}"#,
            "no detached signature",
        ),
    ] {
        let e = env(name, policy);
        let err = e.import(&bytes, None).unwrap_err();
        assert_eq!(err.kind(), Failure::Untrusted, "{err}");
        assert!(err.to_string().contains(why), "{err}");
        e.assert_empty();
    }
    // A signature file too large to be one.
    let e = env("bigsig", ACCEPT);
    std::fs::write(
        e.dir.join("app.aci.asc"),
        vec![b'x'; MAX_SIGNATURE as usize + 1],
    )
    .unwrap();
    let err = e.import(&bytes, None).unwrap_err();
    assert!(err.to_string().contains("not a signature"), "{err}");
    e.assert_empty();
}
