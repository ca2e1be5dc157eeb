//! `husk pull` (in progress).
use super::{Image, ImageError, Store};
use std::path::PathBuf;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Allow plain HTTP (and unverified TLS) to any registry.
    pub insecure: bool,
    /// A docker/podman `auth.json` to take credentials from.
    pub credentials_file: Option<PathBuf>,
    /// Show progress bars (when stderr is a terminal).
    pub progress: bool,
}

/// Pulls `reference` into `store`.
pub fn pull(_store: &Store, reference: &str, _opts: &PullOptions) -> Result<Image, ImageError> {
    Err(ImageError::Usage(format!(
        "cannot pull {reference}: pull is not implemented yet"
    )))
}
