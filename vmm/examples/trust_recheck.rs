//! The host-side cost of `husk run`'s trust re-check (used by
//! scripts/bench-trust.sh): what pod creation does before anything boots
//! (`pod::create`): read the policy in force, resolve the image in the
//! store (index, manifest, config, admission record) and decide again from
//! the record. The store resolution is timed apart, since `husk run` pays
//! it with or without a policy; the figure the target speaks of is the
//! policy load plus the decision.
//!
//! Usage: trust_recheck ROOT IMAGE [RUNS]   (prints medians in microseconds)

use std::path::PathBuf;
use std::time::Instant;

use husk_vmm::image::Store;
use husk_vmm::trust::{recheck, Policy};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(root), Some(image)) = (args.first(), args.get(1)) else {
        eprintln!("usage: trust_recheck ROOT IMAGE [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(200);
    let root = PathBuf::from(root);
    let store = Store::open(&root).expect("store");
    let (mut resolve, mut decide) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let img = store.resolve(image).expect("image");
        let t1 = Instant::now();
        let policy = Policy::load(&root).expect("policy");
        recheck(
            &policy,
            &img.name,
            &img.manifest_digest,
            img.admission.as_ref(),
        )
        .expect("admitted");
        let t2 = Instant::now();
        resolve.push((t1 - t0).as_secs_f64() * 1e6);
        decide.push((t2 - t1).as_secs_f64() * 1e6);
    }
    println!("resolve_us {:.0}", median(resolve));
    println!("recheck_us {:.0}", median(decide));
}
