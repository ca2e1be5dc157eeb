//! Image trust: which images husk admits, decided by a signature policy in
//! the `containers-policy.json(5)` format that podman, skopeo and CRI-O
//! read, so one policy file governs every engine on a host.
//!
//! - [`policy`]: the policy file (strict parsing, scope lookup), and where
//!   it is found: `<root>/policy.json`, else `/etc/containers/policy.json`,
//!   else the built-in default (accept, warning once per unsigned pull).
//! - [`identity`]: `signedIdentity`, which signed names satisfy a requirement.
//! - [`key`]: public keys as PEM, read without any cryptography (form and
//!   fingerprint), so that the `husk` binary can check records.
//! - [`sigstore`]: cosign-format signature verification (ECDSA P-256), and
//!   [`simple_signing`]: GPG "simple signing" (OpenPGP, rPGP), with
//!   [`registries_d`] saying where GPG signatures are stored. Only the
//!   `husk-pull` helper calls them: the `husk` binary is also every pod's
//!   VMM, and keeps no verification code (its memory is a target).
//! - [`admission`]: the decision, and the record of it kept with each stored
//!   image, which `husk run` checks again against the policy of the moment.
//! - [`edit`]: `husk trust`'s atomic edits of `<root>/policy.json`.

pub mod admission;
pub mod edit;
pub mod identity;
pub mod key;
pub mod policy;
pub mod registries_d;
pub mod sigstore;
pub mod simple_signing;

pub use admission::{recheck, AcceptedSignature, Admission};
pub use policy::{Policy, Requirement};

use crate::failure::Failure;

/// What went wrong deciding whether an image is trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The policy file is malformed or asks for what husk does not support.
    #[error("policy {path}: {message}")]
    Policy { path: String, message: String },
    /// A key named by the policy (or given to `husk trust`) is unusable.
    #[error("key {what}: {message}")]
    Key { what: String, message: String },
    /// The policy refused the image: which requirement, for which digest.
    #[error("{image} ({digest}) refused by the trust policy: {requirement}: {reason}")]
    Refused {
        image: String,
        digest: String,
        requirement: String,
        reason: String,
    },
    /// Bad usage of `husk trust`.
    #[error("{0}")]
    Usage(String),
    /// A policy or key file could not be read or written.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl TrustError {
    /// What kind of failure this is.
    pub fn kind(&self) -> Failure {
        match self {
            TrustError::Policy { .. } | TrustError::Key { .. } | TrustError::Usage(_) => {
                Failure::Usage
            }
            TrustError::Refused { .. } => Failure::Untrusted,
            TrustError::Io { .. } => Failure::Runtime,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TrustError {
        let what = what.into();
        move |source| TrustError::Io { what, source }
    }
}

/// Reads a small file (a policy or a key): at most `limit` bytes.
pub(crate) fn read_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(buf)
}
