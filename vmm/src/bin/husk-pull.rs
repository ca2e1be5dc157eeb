//! `husk-pull`: the registry client `husk pull` (and `husk run` of an image
//! not yet stored) runs as a helper process, so that the HTTP/TLS stack
//! stays out of the `husk` binary, which is also every pod's VMM. See
//! `husk_vmm::image::pull` for why and for the protocol. It is also where
//! signatures are verified (`husk_vmm::trust`), and App Container Images
//! are read and converted (`husk_vmm::image::aci`), for the same reason.

use std::path::PathBuf;

use husk_vmm::image::{self, ImageError, PullOptions, Store};

fn main() {
    let result = run(std::env::args_os().skip(1).collect());
    println!("{}", image::pull_answer_line(&result));
}

fn run(args: Vec<std::ffi::OsString>) -> Result<image::Image, ImageError> {
    let usage = || {
        ImageError::Usage(
            "usage: husk-pull --root DIR [--insecure] [--creds FILE] [--policy FILE] [--progress] -- REF | husk-pull --root DIR [--policy FILE] [--tag NAME] --aci FILE".into(),
        )
    };
    let mut root = None;
    let mut opts = PullOptions::default();
    let mut args = args.into_iter();
    let mut reference = None;
    let mut aci = None;
    let mut tag = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--root") => root = Some(PathBuf::from(args.next().ok_or_else(usage)?)),
            Some("--creds") => {
                opts.credentials_file = Some(PathBuf::from(args.next().ok_or_else(usage)?))
            }
            Some("--policy") => {
                opts.policy_file = Some(PathBuf::from(args.next().ok_or_else(usage)?))
            }
            Some("--insecure") => opts.insecure = true,
            Some("--progress") => opts.progress = true,
            Some("--tag") => {
                tag = Some(
                    args.next()
                        .ok_or_else(usage)?
                        .into_string()
                        .map_err(|_| usage())?,
                )
            }
            Some("--aci") => {
                aci = Some(PathBuf::from(args.next().ok_or_else(usage)?));
                break;
            }
            Some("--") => {
                reference = args.next();
                break;
            }
            _ => return Err(usage()),
        }
    }
    let store = Store::open(&root.ok_or_else(usage)?)?;
    if let Some(path) = aci {
        return image::import_aci_here(&store, &path, tag.as_deref(), opts.policy_file.as_deref());
    }
    let reference = reference
        .ok_or_else(usage)?
        .into_string()
        .map_err(|_| usage())?;
    image::pull_here(&store, &reference, &opts)
}
