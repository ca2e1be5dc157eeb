//! Host side of the agent end-to-end test (tests/tests/agent_e2e.rs).
//!
//! `agent_e2e image DIR` writes a one-layer busybox image (OCI blobs) to
//! DIR, plus a tampered blob whose name is not its digest.
//! `agent_e2e drive VSOCK DIR` talks to the real agent in a real guest
//! through the VMM's vsock socket with the real client, and runs the cases;
//! it prints `case NAME ok` or `case NAME FAILED: why` per case and exits 1
//! if any failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use husk_agent_client::{connect, run_attached, Endpoint, ProcEvent, Process, Session};
use husk_proto::{
    ContainerSpec, ErrorKind, ExitStatus, ImageConfig, LayerSpec, MountSpec, ProcessSpec, Reply,
    Request, Resources, UnpackSpec,
};
use sha2::{Digest, Sha256};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TOOLS: &[&str] = &[
    "sh", "echo", "cat", "hostname", "id", "ls", "sleep", "ps", "head", "tr", "wc", "grep", "mount",
];

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: &str,
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_path(name).unwrap();
    if !link.is_empty() {
        h.set_link_name(link).unwrap();
    }
    h.set_cksum();
    tar.append(&h, data).unwrap();
}

fn make_image(dir: &Path) {
    let busybox = std::fs::read("/usr/bin/busybox").expect("busybox-static at /usr/bin/busybox");
    let mut tar = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        let mode = if d == "tmp" { 0o1777 } else { 0o755 };
        append(&mut tar, d, tar::EntryType::Directory, mode, b"", "");
    }
    append(
        &mut tar,
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &busybox,
        "",
    );
    for t in TOOLS {
        append(
            &mut tar,
            &format!("bin/{t}"),
            tar::EntryType::Symlink,
            0o777,
            b"",
            "busybox",
        );
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n";
    append(
        &mut tar,
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        passwd,
        "",
    );
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    let blob = gz.finish().unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let digest = hex(&blob);
    std::fs::write(blobs.join(&digest), &blob).unwrap();
    // The same bytes under another digest: must be refused.
    let tampered = hex(b"tampered");
    std::fs::write(blobs.join(&tampered), &blob).unwrap();
    std::fs::write(
        dir.join("layer"),
        format!("{digest} {tampered} {}\n", blob.len()),
    )
    .unwrap();
}

struct Ctx {
    s: Session,
    endpoint: Endpoint,
    /// The long-running first process of container c2, between cases.
    c2: Option<Process>,
    layer: LayerSpec,
    tampered: LayerSpec,
    failed: bool,
}

fn v(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

impl Ctx {
    fn case(&mut self, name: &str, f: impl FnOnce(&mut Ctx) -> Result<(), String>) {
        let t0 = Instant::now();
        match f(self) {
            Ok(()) => println!("case {name} ok ({:.2} s)", t0.elapsed().as_secs_f64()),
            Err(why) => {
                println!("case {name} FAILED: {why}");
                self.failed = true;
            }
        }
    }

    fn unpack(
        &self,
        rootfs: &str,
        layer: &LayerSpec,
    ) -> Result<Reply, husk_agent_client::ClientError> {
        self.s.call(Request::Unpack(Box::new(UnpackSpec {
            blob_dir: "/mnt/img/blobs".into(),
            layers: vec![layer.clone()],
            rootfs: rootfs.into(),
            tmpfs_size: Some(64 << 20),
            ..Default::default()
        })))
    }

    fn remove(&self, id: &str) -> Result<(), String> {
        self.s
            .call(Request::RemoveContainer { id: id.into() })
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn container(
        &self,
        id: &str,
        rootfs: &str,
        script: &str,
        res: Resources,
        stdin: bool,
    ) -> Result<Process, String> {
        self.container_with(id, rootfs, script, res, stdin, Vec::new())
    }

    fn container_with(
        &self,
        id: &str,
        rootfs: &str,
        script: &str,
        res: Resources,
        stdin: bool,
        mounts: Vec<MountSpec>,
    ) -> Result<Process, String> {
        self.s
            .start_process(Request::CreateContainer(Box::new(ContainerSpec {
                id: id.into(),
                rootfs: rootfs.into(),
                hostname: Some("pod1".into()),
                image: ImageConfig {
                    entrypoint: v(&["/bin/sh", "-c"]),
                    env: v(&["PATH=/bin"]),
                    ..Default::default()
                },
                process: ProcessSpec {
                    args: Some(v(&[script])),
                    stdin,
                    ..Default::default()
                },
                resources: res,
                mounts,
                security: Default::default(),
            })))
            .map_err(|e| e.to_string())
    }
}

fn output(p: &Process) -> Result<(String, ExitStatus, bool), String> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (status, oom) = run_attached(p, None, &mut out, &mut err).map_err(|e| e.to_string())?;
    out.extend(err);
    Ok((String::from_utf8_lossy(&out).into_owned(), status, oom))
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.into())
    }
}

fn drive(vsock: &Path, dir: &Path) -> bool {
    let text = std::fs::read_to_string(dir.join("layer")).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    let size: u64 = f[2].parse().unwrap();
    let layer = |d: &str| LayerSpec {
        digest: format!("sha256:{d}"),
        media_type: GZIP.into(),
        size,
        unpacked_size: None,
    };
    let t0 = Instant::now();
    let endpoint = Endpoint::Vsock {
        uds: vsock.to_path_buf(),
        port: husk_agent_client::DEFAULT_VSOCK_PORT,
    };
    let s = match connect(&endpoint, Duration::from_secs(120)) {
        Ok(s) => s,
        Err(e) => {
            println!("case connect FAILED: {e}");
            return false;
        }
    };
    println!(
        "case connect ok ({:.2} s, agent {})",
        t0.elapsed().as_secs_f64(),
        s.agent
    );
    let mut cx = Ctx {
        s,
        endpoint,
        c2: None,
        layer: layer(f[0]),
        tampered: layer(f[1]),
        failed: false,
    };
    cx.case("mount-share", |cx| {
        cx.s.call(Request::MountShare {
            tag: "img".into(),
            target: "/mnt/img".into(),
            read_only: true,
        })
        .map(drop)
        .map_err(|e| e.to_string())
    });
    cx.case("unpack", |cx| match cx.unpack("/run/c1", &cx.layer) {
        Ok(Reply::Unpacked(r)) => check(r.layers == 1 && r.entries > 10, format!("{r:?}")),
        other => Err(format!("{other:?}")),
    });
    cx.case("digest-mismatch-refused", |cx| {
        match cx.unpack("/run/bad", &cx.tampered) {
            Err(husk_agent_client::ClientError::Agent(e)) => {
                check(e.kind == ErrorKind::DigestMismatch, format!("{e:?}"))
            }
            other => Err(format!("accepted: {other:?}")),
        }
    });
    cx.case("container-run", |cx| {
        let p = cx.container(
            "c1",
            "/run/c1",
            "echo $(hostname) $(id -u) $$; set -- /proc/[0-9]*; echo $#; exit 7",
            Resources::default(),
            false,
        )?;
        let (out, status, _) = output(&p)?;
        check(out == "pod1 0 2\n2\n", format!("output {out:?}"))?;
        check(status == ExitStatus::Code(7), format!("{status:?}"))
    });
    cx.case("remove", |cx| cx.remove("c1"));
    // A read-write share of the host (DIR/../vol) mounted in the guest and
    // bound into a container twice: read-write and read-only.
    let vol_host = dir.parent().unwrap_or(dir).join("vol");
    cx.case("volume-bind", |cx| {
        cx.unpack("/run/c5", &cx.layer).map_err(|e| e.to_string())?;
        cx.s.call(Request::MountShare {
            tag: "vol".into(),
            target: "/mnt/vol".into(),
            read_only: false,
        })
        .map_err(|e| e.to_string())?;
        let bind = |destination: &str, read_only| MountSpec {
            source: "/mnt/vol".into(),
            destination: destination.into(),
            read_only,
        };
        let p = cx.container_with(
            "vol",
            "/run/c5",
            "echo from-guest > /data/w && cat /data/w; echo x > /ro/y || echo ro-refused",
            Resources::default(),
            false,
            vec![bind("/data", false), bind("/ro", true)],
        )?;
        let (out, status, _) = output(&p)?;
        check(
            out.starts_with("from-guest\n") && out.contains("ro-refused"),
            format!("output {out:?}"),
        )?;
        check(status == ExitStatus::Code(0), format!("{status:?}"))?;
        let host = std::fs::read_to_string(vol_host.join("w")).map_err(|e| e.to_string())?;
        check(host == "from-guest\n", format!("host sees {host:?}"))?;
        check(!vol_host.join("y").exists(), "ro bind was writable")?;
        cx.remove("vol")
    });
    // Root in a container has Docker's default capabilities, no
    // no_new_privs by default (issue 13), and runs under the agent's
    // seccomp guard (F11) even without a profile.
    cx.case("capabilities-dropped", |cx| {
        cx.unpack("/run/c6", &cx.layer).map_err(|e| e.to_string())?;
        let p = cx.container(
            "caps",
            "/run/c6",
            "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; mount -t tmpfs none /tmp && echo MOUNTED",
            Resources::default(),
            false,
        )?;
        let (out, _, _) = output(&p)?;
        check(
            out.contains("00000000a80425fb")
                && out.contains("NoNewPrivs:\t0")
                && out.contains("Seccomp:\t2")
                && !out.contains("MOUNTED"),
            format!("output {out:?}"),
        )?;
        cx.remove("caps")
    });
    // A TTY container: the terminal is the container's /dev/pts/0 and
    // closing stdin gives the app end of file.
    cx.case("tty-container", |cx| {
        cx.unpack("/run/c7", &cx.layer).map_err(|e| e.to_string())?;
        let p =
            cx.s.start_process(Request::CreateContainer(Box::new(ContainerSpec {
                id: "tty".into(),
                rootfs: "/run/c7".into(),
                image: ImageConfig {
                    env: v(&["PATH=/bin"]),
                    ..Default::default()
                },
                process: ProcessSpec {
                    args: Some(v(&["/bin/sh", "-c", "tty; cat; echo END"])),
                    tty: true,
                    stdin: true,
                    ..Default::default()
                },
                ..Default::default()
            })))
            .map_err(|e| e.to_string())?;
        p.write_stdin(b"typed\n").map_err(|e| e.to_string())?;
        p.close_stdin().map_err(|e| e.to_string())?;
        let (out, status, _) = output(&p)?;
        check(
            out.contains("/dev/pts/0") && out.contains("END") && status == ExitStatus::Code(0),
            format!("{out:?} {status:?}"),
        )?;
        cx.remove("tty")
    });
    cx.case("stdin-and-exec", |cx| {
        cx.unpack("/run/c2", &cx.layer).map_err(|e| e.to_string())?;
        let p = cx.container(
            "c2",
            "/run/c2",
            "cat; echo marker > /tmp/m; exec sleep 600",
            Resources::default(),
            true,
        )?;
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        // Write from another thread: output credit is only returned as
        // output is read, so writing everything first would (rightly) stall.
        let stdin = p.stdin();
        let input = data.clone();
        let writer = std::thread::spawn(move || stdin.write(&input).and_then(|()| stdin.close()));
        let mut echoed = Vec::new();
        while echoed.len() < data.len() {
            match p.next_event().map_err(|e| e.to_string())? {
                ProcEvent::Stdout(b) => echoed.extend(b),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        writer
            .join()
            .map_err(|_| "stdin writer panicked".to_string())?
            .map_err(|e| e.to_string())?;
        check(echoed == data, "stdin round trip differs")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let e =
                cx.s.start_process(Request::Exec {
                    container: Some("c2".into()),
                    process: Box::new(ProcessSpec {
                        args: Some(v(&["/bin/sh", "-c", "cat /tmp/m; hostname"])),
                        ..Default::default()
                    }),
                })
                .map_err(|e| e.to_string())?;
            let (out, _, _) = output(&e)?;
            if out == "marker\npod1\n" {
                break;
            }
            check(Instant::now() < deadline, format!("exec saw {out:?}"))?;
            std::thread::sleep(Duration::from_millis(200));
        }
        cx.c2 = Some(p);
        Ok(())
    });
    // `husk exec` opens its own connection: exec works from there, the
    // first process stays with the connection that created the container.
    cx.case("exec-from-second-connection", |cx| {
        let p = cx.c2.as_ref().ok_or("no container c2")?;
        let s2 = connect(&cx.endpoint, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        let e = s2
            .start_process(Request::Exec {
                container: Some("c2".into()),
                process: Box::new(ProcessSpec {
                    args: Some(v(&["/bin/sh", "-c", "cat /tmp/m"])),
                    ..Default::default()
                }),
            })
            .map_err(|e| e.to_string())?;
        let (out, status, _) = output(&e)?;
        check(
            out == "marker\n" && status == ExitStatus::Code(0),
            format!("{out:?} {status:?}"),
        )?;
        match s2.call(Request::Stop {
            proc: p.proc,
            grace_ms: 0,
        }) {
            Err(husk_agent_client::ClientError::Agent(e)) => {
                check(e.kind == ErrorKind::BadRequest, format!("{e:?}"))
            }
            other => Err(format!("another connection stopped it: {other:?}")),
        }
    });
    cx.case("stop", |cx| {
        let p = cx.c2.take().ok_or("no container c2")?;
        let reply =
            cx.s.call(Request::Stop {
                proc: p.proc,
                grace_ms: 10_000,
            })
            .map_err(|e| e.to_string())?;
        check(
            reply
                == (Reply::Stopped {
                    status: ExitStatus::Signal(libc::SIGTERM),
                }),
            format!("{reply:?}"),
        )
    });
    cx.case("oom-reported", |cx| {
        cx.unpack("/run/c3", &cx.layer).map_err(|e| e.to_string())?;
        let p = cx.container(
            "oom",
            "/run/c3",
            "echo start; x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived",
            Resources {
                memory_max: Some(16 << 20),
                ..Default::default()
            },
            false,
        )?;
        let (out, status, oom) = output(&p)?;
        check(
            oom && !out.contains("survived"),
            format!("{out:?} {status:?} oom={oom}"),
        )
    });
    cx.case("pids-max-enforced", |cx| {
        cx.unpack("/run/c4", &cx.layer).map_err(|e| e.to_string())?;
        let p = cx.container(
            "pids",
            "/run/c4",
            "i=0; while [ $i -lt 30 ]; do sleep 1 & i=$((i+1)); done; wait",
            Resources {
                pids_max: Some(10),
                ..Default::default()
            },
            false,
        )?;
        output(&p)?;
        // Read the counter in the guest with the image's busybox.
        let e =
            cx.s.start_process(Request::Exec {
                container: None,
                process: Box::new(ProcessSpec {
                    args: Some(v(&[
                        "/run/c4/bin/busybox",
                        "cat",
                        "/sys/fs/cgroup/husk/pids/pids.events",
                    ])),
                    ..Default::default()
                }),
            })
            .map_err(|e| e.to_string())?;
        let (out, _, _) = output(&e)?;
        let refused: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        check(refused > 0, format!("pids.events: {out:?}"))
    });
    cx.case("shutdown", |cx| {
        cx.s.call(Request::Shutdown { grace_ms: 2000 })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    !cx.failed
}

/// Echoes growing amounts of stdin through `cat` (outside any container),
/// one connection per size: isolates the stdio path over vsock.
fn stdin_stress(vsock: &Path, dir: &Path) -> bool {
    let text = std::fs::read_to_string(dir.join("layer")).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    let endpoint = Endpoint::Vsock {
        uds: vsock.to_path_buf(),
        port: husk_agent_client::DEFAULT_VSOCK_PORT,
    };
    let s = connect(&endpoint, Duration::from_secs(120)).unwrap();
    s.call(Request::MountShare {
        tag: "img".into(),
        target: "/mnt/img".into(),
        read_only: true,
    })
    .unwrap();
    s.call(Request::Unpack(Box::new(UnpackSpec {
        blob_dir: "/mnt/img/blobs".into(),
        layers: vec![LayerSpec {
            digest: format!("sha256:{}", f[0]),
            media_type: GZIP.into(),
            size: f[2].parse().unwrap(),
            unpacked_size: None,
        }],
        rootfs: "/run/bb".into(),
        ..Default::default()
    })))
    .unwrap();
    drop(s);
    let mut ok = true;
    for size in [16usize << 10, 200 << 10, 1 << 20, 4 << 20] {
        let s = connect(&endpoint, Duration::from_secs(10)).unwrap();
        let p = s
            .start_process(Request::Exec {
                container: None,
                process: Box::new(ProcessSpec {
                    args: Some(v(&["/run/bb/bin/busybox", "cat"])),
                    stdin: true,
                    ..Default::default()
                }),
            })
            .unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let w = p.stdin();
        let input = data.clone();
        let writer = std::thread::spawn(move || {
            let r = w.write(&input);
            let _ = w.close();
            r
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let res = p.wait_with_output(&mut out, &mut err);
        let wr = writer.join().unwrap();
        let good = res.is_ok() && wr.is_ok() && out == data;
        println!(
            "stdin-stress {size}: {} (got {} bytes, wait {:?}, write {:?})",
            if good { "ok" } else { "FAILED" },
            out.len(),
            res.err().map(|e| e.to_string()),
            wr.err().map(|e| e.to_string())
        );
        ok &= good;
    }
    let s = connect(&endpoint, Duration::from_secs(10)).unwrap();
    let _ = s.call(Request::Shutdown { grace_ms: 1000 });
    ok
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["image", dir] => {
            make_image(Path::new(dir));
            true
        }
        ["drive", vsock, dir] => drive(&PathBuf::from(vsock), Path::new(dir)),
        ["stdin-stress", vsock, dir] => stdin_stress(&PathBuf::from(vsock), Path::new(dir)),
        _ => {
            eprintln!("usage: agent_e2e image DIR | agent_e2e drive VSOCK DIR");
            std::process::exit(2);
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}
