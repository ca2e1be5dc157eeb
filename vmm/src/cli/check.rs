//! `husk check [--repair] [--quick]`: verifies the store under `$HUSK_ROOT`
//! ([`crate::check`]): one line per problem found (`damaged: …`) or
//! repaired (`repaired: …`), then a summary line.
//!
//! Exit status: 0 when nothing is left damaged (nothing found, or all of it
//! repaired by `--repair`); 122 (damage, as for a blob that does not match
//! its digest) when damage is left; 125 when the check itself could not run
//! (no store at `$HUSK_ROOT`, an I/O error, a bad flag).

use clap::Args;

use super::escape::escape;
use crate::check::{self, CheckError};
use crate::failure::Failure;
use crate::image::{ImageError, Store};
use crate::pod::state::PodStore;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Repair what can be repaired safely: remove corrupt blobs and leftover
    /// temp files, untag images whose blobs are missing or corrupt, remove
    /// or mark failed stopped pods whose state cannot be read.
    #[arg(short = 'r', long)]
    pub repair: bool,
    /// Do not re-hash blobs: check presence and sizes only.
    #[arg(short = 'q', long)]
    pub quick: bool,
}

/// Runs `husk check`; returns the exit status.
pub fn run(args: CheckArgs) -> i32 {
    match execute(&args) {
        Ok(status) => status,
        Err(e) => {
            super::print_error(&e);
            e.kind().exit_status()
        }
    }
}

fn execute(args: &CheckArgs) -> Result<i32, CheckError> {
    let root = Store::default_root();
    // Checking must not make a store where there was none.
    if !root.is_dir() {
        return Err(ImageError::Usage(format!(
            "no husk store at {}: nothing to check (set HUSK_ROOT to the store's directory)",
            root.display()
        ))
        .into());
    }
    let store = Store::open(&root)?;
    let pods = PodStore::open(&root)?;
    let mut say = |line: &str| println!("{}", escape(line));
    let (outcome, totals) = check::run(&store, &pods, args.quick, args.repair, &mut say)?;
    println!(
        "checked {} image(s), {} blob(s){}, {} pod(s): {} damaged, {} repaired{}",
        totals.images,
        totals.blobs,
        if args.quick {
            " (not re-hashed: --quick)"
        } else {
            ""
        },
        totals.pods,
        outcome.left + outcome.failed,
        outcome.repaired,
        if totals.unused_blobs > 0 {
            format!(
                "; {} unused blob(s) (husk gc removes them)",
                totals.unused_blobs
            )
        } else {
            String::new()
        }
    );
    Ok(if outcome.left + outcome.failed == 0 {
        crate::failure::SUCCESS
    } else {
        Failure::Integrity.exit_status()
    })
}
