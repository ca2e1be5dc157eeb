//! The host-side costs of trust (used by scripts/bench-trust.sh), in
//! process, where a whole pull's noise (disk writeback, the registry) does
//! not hide them:
//! - `verify`: what a pull adds under a `signedBy` policy once the manifest
//!   is fetched (`image::registry`'s admission step): read the policy, find
//!   the lookaside storage in `registries.d`, read the signature files, parse
//!   the keyring, verify, and decide;
//! - `recheck`: what `husk run` does before anything boots (`pod::create`):
//!   read the policy in force and decide again from the store's record. The
//!   store lookup is timed apart, since `husk run` pays it with or without a
//!   policy.
//! - `measure` (with KERNEL and INITRD): the measured launch a pod's
//!   supervisor makes before the VMM's fork (`pod::supervisor`'s
//!   `measure_launch`): load the settings, the kernel's and initramfs'
//!   digests (cached), the config's and the texts', then under the log's
//!   lock extend the PCR five times and append five records, fdatasync.
//!   Timed with the TPM `ROOT/measure.json` names, and again with none
//!   (`measure_notpm`: the log alone); `measure_cold`: with the digest cache
//!   emptied first (the first launch after a kernel or initramfs changed).
//!
//! Usage: trust_bench ROOT IMAGE POLICY [RUNS [KERNEL INITRD]]   (prints medians in
//! microseconds; IMAGE must be stored in ROOT, pulled under POLICY)

use std::path::PathBuf;
use std::time::Instant;

use husk_vmm::image::{reference, Store};
use husk_vmm::measure::{self, Event, Launch, Settings};
use husk_vmm::trust::admission::{evaluate, AcceptedSignature, Subject};
use husk_vmm::trust::simple_signing::GpgVerifier;
use husk_vmm::trust::{recheck, registries_d, Policy, Requirement};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `signedBy` admission of the pull, from the lookaside files.
fn verify(root: &std::path::Path, policy: &std::path::Path, image: &str, digest: &str) {
    let policy = Policy::load_file(policy).expect("policy");
    let r = reference::parse(image).expect("reference");
    let (scope, reqs) = policy.requirements_for(&r);
    let base = registries_d::lookaside_for(&registries_d::dir(root), &r)
        .expect("registries.d")
        .expect("a lookaside storage");
    let dir = format!(
        "{}/{}@sha256={}",
        base.trim_start_matches("file://"),
        r.path,
        &digest[7..]
    );
    let mut sigs = Vec::new();
    for n in 1.. {
        match std::fs::read(format!("{dir}/signature-{n}")) {
            Ok(s) => sigs.push(s),
            Err(_) => break,
        }
    }
    let subject = Subject {
        name: &r.name,
        digest,
        intended: Some(&r),
    };
    evaluate(&subject, &scope, reqs, |req| match req {
        Requirement::SignedBy { keys, .. } => {
            let v = GpgVerifier::new(keys)?;
            let ok: Vec<AcceptedSignature> = sigs
                .iter()
                .filter_map(|s| v.verify(s).ok())
                .filter(|c| c.manifest_digest == digest)
                .map(|c| AcceptedSignature {
                    key: c.key,
                    identity: c.docker_reference,
                })
                .collect();
            Ok(Ok(ok))
        }
        _ => Ok(Ok(Vec::new())),
    })
    .expect("admitted");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, image, policy, rest @ ..] = args.as_slice() else {
        eprintln!("usage: trust_bench ROOT IMAGE POLICY [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = rest.first().and_then(|r| r.parse().ok()).unwrap_or(200);
    let (root, policy) = (PathBuf::from(root), PathBuf::from(policy));
    let store = Store::open(&root).expect("store");
    let digest = store.resolve(image).expect("image").manifest_digest;
    let (mut checks, mut resolve, mut decide) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        verify(&root, &policy, image, &digest);
        let t1 = Instant::now();
        let img = store.resolve(image).expect("image");
        let t2 = Instant::now();
        let p = Policy::load(&root).expect("policy");
        recheck(&p, &img.name, &img.manifest_digest, img.admission.as_ref()).expect("admitted");
        let t3 = Instant::now();
        checks.push((t1 - t0).as_secs_f64() * 1e6);
        resolve.push((t2 - t1).as_secs_f64() * 1e6);
        decide.push((t3 - t2).as_secs_f64() * 1e6);
    }
    println!("verify_us {:.0}", median(checks));
    println!("resolve_us {:.0}", median(resolve));
    println!("recheck_us {:.0}", median(decide));
    if let [_, kernel, initrd, ..] = rest {
        let (kernel, initrd) = (PathBuf::from(kernel), PathBuf::from(initrd));
        let time = |settings: &Settings, cold: bool| {
            if cold {
                let _ = std::fs::remove_file(root.join("measure-cache.json"));
            }
            let t0 = Instant::now();
            measure_once(settings, &kernel, &initrd, image, &digest);
            t0.elapsed().as_secs_f64() * 1e6
        };
        let settings = Settings::load(&root).expect("measure.json");
        let mut none = settings.clone();
        none.tpm = husk_vmm::measure::tpm::Address::None;
        let n = runs.min(100);
        let warm: Vec<f64> = (0..n).map(|_| time(&settings, false)).collect();
        let notpm: Vec<f64> = (0..n).map(|_| time(&none, false)).collect();
        let cold: Vec<f64> = (0..5).map(|_| time(&settings, true)).collect();
        println!("measure_us {:.0}", median(warm));
        println!("measure_notpm_us {:.0}", median(notpm));
        println!("measure_cold_us {:.0}", median(cold));
    }
}

/// One pod's measured launch, as the supervisor makes it.
fn measure_once(
    settings: &Settings,
    kernel: &std::path::Path,
    initrd: &std::path::Path,
    image: &str,
    digest: &str,
) {
    // Loaded on every launch, as the supervisor does; the TPM as the caller says.
    let root = settings.log.parent().expect("root");
    let mut loaded = Settings::load(root).expect("measure.json");
    loaded.tpm = settings.tpm.clone();
    let settings = loaded;
    let file = |kind, path: &std::path::Path| {
        let f = std::fs::File::open(path).expect("file");
        Event::file(&settings, kind, &f, path).expect("digest")
    };
    let config = vec![b'x'; 4096];
    let events = vec![
        Event {
            kind: "pod-config",
            app: None,
            data: "config.json".into(),
            digest: measure::sha256(&config),
        },
        file("kernel", kernel),
        file("initramfs", initrd),
        Event::text(
            "cmdline",
            None,
            "console=ttyS0 reboot=k panic=-1 quiet virtio_mmio.device=4K@0xd0000000:5".into(),
        ),
        Event::text(
            "image",
            Some("app".into()),
            format!("{image}@{digest} signed by keyring sha256:0 (scope bench)"),
        ),
    ];
    measure::measure(
        &settings,
        Launch {
            pod: "bench",
            pod_name: "bench",
            events,
            require_tpm: false,
        },
    )
    .expect("measured");
}
