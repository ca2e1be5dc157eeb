//! Unit tests of `husk import` on archives built here with the tar crate.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::image::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::image::GcReport;

const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-import-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A one-file layer tar.
fn layer(file: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, file, content).unwrap();
    b.into_inner().unwrap()
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/w"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn put(dir: &Path, bytes: &[u8]) -> serde_json::Value {
    let d = digest::of(bytes);
    let p = dir.join("blobs/sha256").join(digest::hex_of(&d).unwrap());
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
    json!({"digest": d, "size": bytes.len()})
}

fn with_type(mut v: serde_json::Value, t: &str) -> serde_json::Value {
    v["mediaType"] = json!(t);
    v
}

/// An OCI layout in `dir` with one image of `layers`; returns the manifest descriptor.
fn oci_image(dir: &Path, layers: &[Vec<u8>]) -> serde_json::Value {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest::of(l)).collect();
    let cfg = with_type(
        put(dir, &config(&diff_ids)),
        "application/vnd.oci.image.config.v1+json",
    );
    let ls: Vec<_> = layers
        .iter()
        .map(|l| with_type(put(dir, l), OCI_TAR))
        .collect();
    let m = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": ls}),
    )
    .unwrap();
    with_type(put(dir, &m), OCI_MANIFEST)
}

fn oci_layout(dir: &Path, entries: Vec<serde_json::Value>) {
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

fn named(mut desc: serde_json::Value, name: &str) -> serde_json::Value {
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    desc
}

/// A tar of the directory `dir`.
fn tar_of(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

fn store(name: &str) -> (Store, PathBuf) {
    let root = scratch(name);
    (Store::open(&root.join("root")).unwrap(), root)
}

fn leftovers(s: &Store) -> usize {
    fs::read_dir(s.dir().join("tmp")).unwrap().count()
}

#[test]
fn oci_layout_dir_resolve_and_link() {
    let (s, root) = store("oci-dir");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let l1 = layer("a", b"one");
    let l2 = layer("b", b"two");
    let m = oci_image(&src, &[l1.clone(), l2.clone()]);
    oci_layout(&src, vec![named(m.clone(), "example.com/app:v1")]);
    let imgs = import(&s, &src, None).unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].name, "example.com/app:v1");
    let img = s.resolve("example.com/app:v1").unwrap();
    assert_eq!(img.manifest_digest, m["digest"].as_str().unwrap());
    assert_eq!(img.config.cmd, ["/bin/sh"]);
    assert_eq!(img.config.working_dir, "/w");
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[0].digest, digest::of(&l1));
    assert_eq!(img.layers[0].media_type, OCI_TAR);
    assert_eq!(img.size, (l1.len() + l2.len()) as u64);
    assert_eq!(s.resolve(img.short_id()).unwrap().name, img.name);
    assert_eq!(s.resolve(&img.manifest_digest).unwrap().name, img.name);
    let dest = root.join("pod-blobs");
    s.link_layers(&img, &dest).unwrap();
    let mut linked: Vec<_> = fs::read_dir(dest.join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    linked.sort();
    assert_eq!(
        linked.len(),
        2,
        "only the layers, not the config or manifest"
    );
    assert_eq!(
        fs::read(
            dest.join("sha256")
                .join(digest::hex_of(&digest::of(&l2)).unwrap())
        )
        .unwrap(),
        l2
    );
    assert_eq!(leftovers(&s), 0);
}

#[test]
fn bare_ref_name_is_a_tag_so_the_digest_names_it() {
    let (s, root) = store("bare");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let m = oci_image(&src, &[layer("a", b"x")]);
    oci_layout(&src, vec![named(m.clone(), "latest")]);
    let imgs = import(&s, &src, None).unwrap();
    assert_eq!(imgs[0].name, m["digest"].as_str().unwrap());
    let imgs = import(&s, &src, Some("mine:1")).unwrap();
    assert_eq!(imgs[0].name, "docker.io/library/mine:1");
    assert!(s.resolve("mine:1").is_ok());
}

#[test]
fn oci_tar_and_gzip_tar() {
    let (s, root) = store("oci-tar");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let m = oci_image(&src, &[layer("a", b"x")]);
    oci_layout(&src, vec![named(m, "localhost:5000/t:1")]);
    let tarball = root.join("img.tar");
    tar_of(&src, &tarball);
    assert_eq!(
        import(&s, &tarball, None).unwrap()[0].name,
        "localhost:5000/t:1"
    );
    let gz = root.join("img.tar.gz");
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::copy(&mut fs::File::open(&tarball).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    assert_eq!(
        import(&s, &gz, Some("gz:1")).unwrap()[0].name,
        "docker.io/library/gz:1"
    );
    assert_eq!(leftovers(&s), 0, "the inflated copy is removed");
}

#[test]
fn nested_index_resolves_linux_amd64() {
    let (s, root) = store("nested");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let amd = oci_image(&src, &[layer("amd", b"64")]);
    let arm = oci_image(&src, &[layer("arm", b"64")]);
    let mut amd_e = amd.clone();
    amd_e["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut arm_e = arm;
    arm_e["platform"] = json!({"architecture": "arm64", "os": "linux"});
    let inner = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm_e, amd_e]}),
    )
    .unwrap();
    let idx = with_type(put(&src, &inner), OCI_INDEX);
    oci_layout(&src, vec![named(idx, "example.com/multi:1")]);
    let imgs = import(&s, &src, None).unwrap();
    assert_eq!(imgs[0].manifest_digest, amd["digest"].as_str().unwrap());
}

#[test]
fn tampered_blob_leaves_nothing() {
    let (s, root) = store("tamper");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let l = layer("a", b"good");
    let m = oci_image(&src, std::slice::from_ref(&l));
    oci_layout(&src, vec![named(m, "example.com/t:1")]);
    let p = src
        .join("blobs/sha256")
        .join(digest::hex_of(&digest::of(&l)).unwrap());
    let mut bad = l.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    fs::write(&p, &bad).unwrap();
    let err = import(&s, &src, None).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_eq!(err.kind(), crate::failure::Failure::Integrity);
    assert!(matches!(
        s.resolve("example.com/t:1"),
        Err(ImageError::NotFound(_))
    ));
    assert!(s.list().unwrap().is_empty());
    assert_eq!(leftovers(&s), 0);
    // A layer missing from the layout is malformed too.
    fs::remove_file(&p).unwrap();
    assert!(matches!(
        import(&s, &src, None),
        Err(ImageError::Malformed(_))
    ));
}

/// A docker save archive (old format: <hex>.json, <id>/layer.tar, a second
/// image's duplicate layer as a symlink).
fn docker_archive(out: &Path, layer_bytes: &[u8], tamper: bool) -> String {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    let diff = digest::of(layer_bytes);
    let cfg = config(&[diff.clone(), diff.clone()]);
    let cfg_hex = digest::hex_of(&digest::of(&cfg)).unwrap().to_string();
    let mut stored = layer_bytes.to_vec();
    if tamper {
        stored[0] ^= 1;
    }
    add("aaaa/layer.tar", &stored);
    add(&format!("{cfg_hex}.json"), &cfg);
    let manifest = json!([{"Config": format!("{cfg_hex}.json"), "RepoTags": ["busybox:latest", "me/bb:2"],
        "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"]}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_cksum();
    b.append_link(&mut h, "bbbb/layer.tar", "../aaaa/layer.tar")
        .unwrap();
    b.finish().unwrap();
    cfg_hex
}

#[test]
fn docker_save_archive() {
    let (s, root) = store("docker");
    let l = layer("bin/sh", b"#!");
    let cfg_hex = docker_archive(&root.join("d.tar"), &l, false);
    let imgs = import(&s, &root.join("d.tar"), None).unwrap();
    let names: Vec<_> = imgs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["docker.io/library/busybox:latest", "docker.io/me/bb:2"]
    );
    let img = s.resolve("busybox").unwrap();
    assert_eq!(img.config_digest, format!("sha256:{cfg_hex}"));
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[0].media_type, manifest::DOCKER_LAYER_TAR);
    assert_eq!(img.layers[1].digest, digest::of(&l));
    assert_eq!(leftovers(&s), 0);
}

#[test]
fn docker_save_tampered_layer() {
    let (s, root) = store("docker-bad");
    docker_archive(&root.join("d.tar"), &layer("x", b"y"), true);
    let err = import(&s, &root.join("d.tar"), None).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(s.list().unwrap().is_empty());
    assert_eq!(leftovers(&s), 0);
}

#[test]
fn bad_inputs() {
    let (s, root) = store("bad");
    let err = import(&s, &root.join("nope.tar"), None).unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Usage, "{err}");
    fs::write(root.join("junk.tar"), b"not a tar at all").unwrap();
    let err = import(&s, &root.join("junk.tar"), None).unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Integrity, "{err}");
    let empty = root.join("empty");
    fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        import(&s, &empty, None),
        Err(ImageError::Malformed(_))
    ));
    // Two images and one --tag.
    let src = root.join("two");
    fs::create_dir_all(&src).unwrap();
    let a = oci_image(&src, &[layer("a", b"1")]);
    let b = oci_image(&src, &[layer("b", b"2")]);
    oci_layout(&src, vec![a, b]);
    assert!(matches!(
        import(&s, &src, Some("x:1")),
        Err(ImageError::Usage(_))
    ));
    assert_eq!(import(&s, &src, None).unwrap().len(), 2);
    assert!(matches!(
        import(&s, &src, Some("Bad:Name")),
        Err(ImageError::BadReference { .. })
    ));
}

#[test]
fn rmi_then_gc_frees_only_unreferenced() {
    let (s, root) = store("gc");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let shared = layer("shared", b"s");
    let a = oci_image(&src, &[shared.clone(), layer("a", b"a")]);
    let b = oci_image(&src, std::slice::from_ref(&shared));
    oci_layout(&src, vec![named(a, "x.io/a:1"), named(b, "x.io/b:1")]);
    import(&s, &src, None).unwrap();
    let img_a = s.resolve("x.io/a:1").unwrap();
    assert_eq!(s.gc().unwrap(), GcReport::default());
    assert_eq!(s.remove("x.io/a:1").unwrap(), ["x.io/a:1"]);
    assert!(matches!(s.remove("x.io/a:1"), Err(ImageError::NotFound(_))));
    let r = s.gc().unwrap();
    // a's manifest, config and own layer go; the shared layer stays.
    assert_eq!(r.blobs, 3);
    assert!(s.blobs().contains(&digest::of(&shared)));
    assert!(!s.blobs().contains(&img_a.manifest_digest));
    assert!(s.resolve("x.io/b:1").is_ok());
}

#[test]
fn docker_25_archive_names_from_repo_tags() {
    // An OCI layout whose index.json names only a tag, with a docker
    // manifest.json beside it, as `docker save` writes since Docker 25.
    let (s, root) = store("docker25");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let l = layer("a", b"x");
    let m = oci_image(&src, std::slice::from_ref(&l));
    oci_layout(&src, vec![named(m.clone(), "latest")]);
    let mbytes = fs::read(
        src.join("blobs/sha256")
            .join(digest::hex_of(m["digest"].as_str().unwrap()).unwrap()),
    )
    .unwrap();
    let mj: serde_json::Value = serde_json::from_slice(&mbytes).unwrap();
    let cfg_hex = digest::hex_of(mj["config"]["digest"].as_str().unwrap())
        .unwrap()
        .to_string();
    let lhex = digest::hex_of(&digest::of(&l)).unwrap().to_string();
    let manifest = json!([{"Config": format!("blobs/sha256/{cfg_hex}"), "RepoTags": ["app:3"],
        "Layers": [format!("blobs/sha256/{lhex}")]}]);
    fs::write(
        src.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let imgs = import(&s, &src, None).unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].name, "docker.io/library/app:3");
    assert_eq!(imgs[0].manifest_digest, m["digest"].as_str().unwrap());
}

/// F9: a layout whose layer blob is a symlink to a host file outside it,
/// with the descriptor naming that file's digest (so only the symlink rule
/// stands between the host file and the store).
#[test]
fn symlinked_blob_to_a_host_file_is_refused() {
    let (s, root) = store("symlink");
    let secret = layer("etc/shadow", b"root:secret");
    let host_file = root.join("host-secret");
    fs::write(&host_file, &secret).unwrap();
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let m = oci_image(&src, std::slice::from_ref(&secret));
    let blob = src
        .join("blobs/sha256")
        .join(digest::hex_of(&digest::of(&secret)).unwrap());
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&host_file, &blob).unwrap();
    oci_layout(&src, vec![named(m, "x.io/leak:1")]);
    let err = import(&s, &src, None).unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Integrity, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(!s.blobs().contains(&digest::of(&secret)));
    assert!(s.list().unwrap().is_empty());
    assert_eq!(leftovers(&s), 0);
    // A symlinked directory on the way is refused the same way.
    let src2 = root.join("layout2");
    fs::create_dir_all(&src2).unwrap();
    std::os::unix::fs::symlink(src.join("blobs"), src2.join("blobs")).unwrap();
    fs::copy(src.join("index.json"), src2.join("index.json")).unwrap();
    fs::copy(src.join("oci-layout"), src2.join("oci-layout")).unwrap();
    let err = import(&s, &src2, None).unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Integrity, "{err}");
}

/// Runs `import` on another thread; fails the test instead of hanging if it
/// blocks.
fn import_within(s: Store, src: PathBuf, secs: u64) -> (Store, Result<Vec<Image>, ImageError>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = import(&s, &src, None);
        let _ = tx.send((s, r));
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("the import blocked")
}

/// F9: a FIFO in the layout (where a blob should be), and a FIFO given as
/// the archive itself, are refused at once instead of blocking the import
/// (and, through the ingest lock, `gc`) forever.
#[test]
fn fifo_is_refused_without_blocking() {
    let (s, root) = store("fifo");
    let src = root.join("layout");
    fs::create_dir_all(&src).unwrap();
    let l = layer("a", b"1");
    let m = oci_image(&src, std::slice::from_ref(&l));
    oci_layout(&src, vec![m]);
    let blob = src
        .join("blobs/sha256")
        .join(digest::hex_of(&digest::of(&l)).unwrap());
    fs::remove_file(&blob).unwrap();
    let mkfifo = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo reads only it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    };
    mkfifo(&blob);
    let (s, r) = import_within(s, src, 10);
    let err = r.unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Integrity, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(s.list().unwrap().is_empty());
    assert_eq!(leftovers(&s), 0);
    let pipe = root.join("archive.tar");
    mkfifo(&pipe);
    let (s, r) = import_within(s, pipe, 10);
    let err = r.unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Integrity, "{err}");
    assert!(s.list().unwrap().is_empty());
}

/// F9: a docker archive whose config is not named by its digest, or whose
/// compressed layer is not, has nothing that vouches for those bytes.
#[test]
fn docker_archive_blobs_without_a_digest_are_refused() {
    let (s, root) = store("nodigest");
    let l = layer("a", b"x");
    let cfg = config(&[digest::of(&l)]);
    let write_archive = |dir: &Path, cfg_name: &str, layer_name: &str, layer_bytes: &[u8]| {
        fs::create_dir_all(dir.join("l")).unwrap();
        fs::write(dir.join(cfg_name), &cfg).unwrap();
        fs::write(dir.join(layer_name), layer_bytes).unwrap();
        let manifest =
            json!([{"Config": cfg_name, "RepoTags": ["x.io/d:1"], "Layers": [layer_name]}]);
        fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    };
    let a = root.join("a");
    write_archive(&a, "config.json", "l/layer.tar", &l);
    let err = import(&s, &a, None).unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Integrity, "{err}");
    assert!(err.to_string().contains("not named by its digest"), "{err}");
    assert!(!s.blobs().contains(&digest::of(&cfg)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &l).unwrap();
    let gz = gz.finish().unwrap();
    let b = root.join("b");
    let cfg_name = format!("{}.json", digest::hex_of(&digest::of(&cfg)).unwrap());
    write_archive(&b, &cfg_name, "l/layer.tar.gz", &gz);
    let err = import(&s, &b, None).unwrap_err();
    assert_eq!(err.kind(), crate::failure::Failure::Integrity, "{err}");
    assert!(
        err.to_string().contains("must be named by its digest"),
        "{err}"
    );
    assert!(!s.blobs().contains(&digest::of(&gz)));
    assert!(s.list().unwrap().is_empty());
    assert_eq!(leftovers(&s), 0);
}
