//! `husk trust`: the trust policy for people who would rather not write
//! JSON (rkt's verb). Edits `<root>/policy.json` ([`crate::trust::edit`]);
//! `list` shows the policy in force, wherever it comes from.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::escape::escape;
use crate::image::Store;
use crate::trust::edit::{self, Change};
use crate::trust::{key, policy, Policy, TrustError};

#[derive(Debug, Args)]
pub struct TrustArgs {
    #[command(subcommand)]
    pub command: TrustCommand,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Require images in SCOPE to carry a sigstore (cosign) signature by a
    /// key, or a GPG simple signature by a key of a keyring.
    Add {
        /// The public key (PEM, ECDSA P-256, as cosign or skopeo generate it).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "gpg_key",
            conflicts_with = "gpg_key"
        )]
        sigstore_key: Option<PathBuf>,
        /// A GPG public keyring (`gpg --export`, armored or not); signatures
        /// are looked for in the lookaside storage registries.d names.
        #[arg(long, value_name = "FILE")]
        gpg_key: Option<PathBuf>,
        /// A registry (reg.io, 127.0.0.1:5000), namespace or repository
        /// (reg.io/ns/app), an image with its tag, or *.domain.
        scope: String,
    },
    /// Set what happens to images no scope names.
    Default {
        #[arg(value_enum)]
        action: DefaultAction,
    },
    /// Show the policy in force: where it comes from, its scopes and requirements.
    List,
    /// Remove a scope's requirements (its images fall back to wider scopes).
    Rm { scope: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DefaultAction {
    /// Refuse every image no scope names.
    Reject,
    /// Accept every image no scope names, signed or not.
    Accept,
}

/// Runs `husk trust`; returns the exit status.
pub fn run(args: TrustArgs) -> i32 {
    match execute(args.command) {
        Ok(text) => {
            // Scopes and paths come from a file: shown with controls escaped.
            for line in text.lines() {
                println!("{}", escape(line));
            }
            0
        }
        Err(e) => {
            super::print_error(&e);
            e.kind().exit_status()
        }
    }
}

fn execute(cmd: TrustCommand) -> Result<String, TrustError> {
    let root = Store::default_root();
    let change = match cmd {
        TrustCommand::List => return Ok(edit::list(&Policy::load(&root)?)),
        TrustCommand::Add {
            sigstore_key: None,
            gpg_key: Some(file),
            scope,
        } => {
            let keyring = crate::trust::read_bounded(&file, policy::MAX_KEYRING)
                .map_err(TrustError::io(format!("cannot read {}", file.display())))?;
            if !edit::looks_like_keyring(&keyring) {
                return Err(TrustError::Key {
                    what: file.display().to_string(),
                    message: "not an OpenPGP public keyring (gpg --export, armored or not)".into(),
                });
            }
            let path = edit::apply(
                &root,
                &Change::AddGpgKey {
                    scope: scope.clone(),
                    keyring,
                },
            )?;
            return Ok(format!(
                "{scope}: requires a GPG signature by a key of {} ({})\n",
                file.display(),
                path.display()
            ));
        }
        TrustCommand::Add {
            sigstore_key: Some(sigstore_key),
            scope,
            ..
        } => {
            // Read and checked here so that an error names the file.
            let k = key::read_file(&sigstore_key)?;
            let pem = crate::trust::read_bounded(&sigstore_key, key::MAX_KEY_FILE).map_err(
                TrustError::io(format!("cannot read {}", sigstore_key.display())),
            )?;
            let path = edit::apply(
                &root,
                &Change::AddSigstoreKey {
                    scope: scope.clone(),
                    pem,
                },
            )?;
            return Ok(format!(
                "{scope}: requires a sigstore signature by {} ({})\n",
                k.fingerprint(),
                path.display()
            ));
        }
        TrustCommand::Default { action } => Change::Default {
            accept: matches!(action, DefaultAction::Accept),
        },
        TrustCommand::Rm { scope } => Change::Remove { scope },
        TrustCommand::Add { .. } => {
            return Err(TrustError::Usage(
                "husk trust add takes --sigstore-key FILE or --gpg-key FILE".into(),
            ))
        }
    };
    let path = edit::apply(&root, &change)?;
    let policy = Policy::load_file(&path)?;
    let what = match &change {
        Change::Default { .. } => format!(
            "default: {}",
            policy
                .default
                .iter()
                .map(policy::Requirement::describe)
                .collect::<Vec<_>>()
                .join(" and ")
        ),
        Change::Remove { scope } => format!("{scope}: removed"),
        Change::AddSigstoreKey { scope, .. } | Change::AddGpgKey { scope, .. } => scope.clone(),
    };
    Ok(format!("{what} ({})\n", path.display()))
}
