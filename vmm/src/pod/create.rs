//! Making a pod: resolve (pulling if missing) and pin every app's image,
//! make the pod's directory (with a size-limited tmpfs per empty-dir
//! volume, [`super::volumes`]), link the layer blobs it needs, write its
//! config, and choose whether its VMM gets a user namespace
//! ([`crate::jail::userns`]). Nothing is left behind if any step fails.

use std::os::fd::AsFd;

use super::spec::{PinnedImage, PodConfig, PodRequest, UserNsChoice, Volume};
use super::state::{now_secs, PodDir, PodStore};
use super::PodError;
use crate::fs::{CacheMode, ShareRoot, ShareSpec};
use crate::image::{self, Image, ImageError, PullOptions, Store};
use crate::jail::userns::{self, IdRange};

/// When `husk run` pulls an image (Docker's and Podman's `--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull only if the image is not in the local store.
    #[default]
    Missing,
    /// Never pull: a missing image is an error.
    Never,
    /// Pull even if the image is stored (to pick up a moved tag).
    Always,
}

/// Finds `reference` in the store, pulling it as `policy` says.
pub fn resolve_or_pull(
    store: &Store,
    reference: &str,
    policy: PullPolicy,
    pull: &PullOptions,
) -> Result<Image, PodError> {
    if policy == PullPolicy::Always {
        return Ok(image::pull(store, reference, pull)?);
    }
    match store.resolve(reference) {
        Ok(image) => Ok(image),
        Err(ImageError::NotFound(_)) if policy == PullPolicy::Missing => {
            Ok(image::pull(store, reference, pull)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// A pod whose directory exists (with its empty `blobs/`, the VMM's share
/// root) but is not populated yet: see [`Made::populate`].
pub struct Made {
    pub pod: PodDir,
    pub config: PodConfig,
    images: Vec<(Image, String)>,
}

/// Makes the pod described by `request`: resolves (or pulls) its images,
/// makes its directory and its config (not yet written). The caller
/// populates it, possibly while the VM boots; on failure it removes it.
pub fn create(
    store: &Store,
    pods: &PodStore,
    request: PodRequest,
    policy: PullPolicy,
    pull: &PullOptions,
) -> Result<Made, PodError> {
    for v in &request.volumes {
        if let Some(host) = &v.host {
            // The same open the VMM does (a directory, no symlink on the way),
            // so that a volume it would refuse is bad input here; the error
            // names the volume as the share's tag.
            let spec = ShareSpec {
                tag: v.name.clone(),
                host_dir: host.clone(),
                read_only: v.read_only,
                cache: CacheMode::Auto,
            };
            if let Err(e) = spec.open() {
                return Err(PodError::Usage(e.to_string()));
            }
        }
    }
    // The trust policy in force now decides again on every image, from the
    // record its pull left (a policy tightened since then applies).
    let root = store.dir().parent().unwrap_or(store.dir());
    let trust = crate::trust::Policy::load(root).map_err(ImageError::from)?;
    let mut images = Vec::new();
    for app in &request.apps {
        let image = resolve_or_pull(store, &app.image, policy, pull)?;
        let decision = crate::trust::recheck(
            &trust,
            &image.name,
            &image.manifest_digest,
            image.admission.as_ref(),
        )
        .map_err(ImageError::from)?;
        images.push((image, decision));
    }
    let prefix = base_name(&request.apps[0].image);
    let pod = pods.create(request.name.as_deref(), &prefix)?;
    // Every directory the VMM shares must exist before it starts (it opens
    // them at once); filling them can overlap the boot.
    let mut dirs = vec![
        pod.blobs_dir(),
        pod.blobs_dir().join("sha256"),
        pod.path.join("logs"),
        pod.path.join("volumes"),
    ];
    dirs.extend(
        request
            .volumes
            .iter()
            .filter(|v| v.host.is_none())
            .map(|v| pod.volume_dir(&v.name)),
    );
    for dir in dirs {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            let _ = pods.remove(&pod);
            return Err(PodError::io(&dir, e));
        }
    }
    // The pod's own host ids own what its jailed VMM must write or list:
    // its socket directory, the directories of its blob links (the blobs
    // themselves stay the store's, 0444) and (below) its empty-dir volumes.
    let ids = pod.ids();
    if let Some(ids) = ids {
        let blobs = pod.blobs_dir();
        for dir in [pod.path.join("vsock"), blobs.join("sha256"), blobs] {
            if let Err(e) = std::os::unix::fs::chown(&dir, Some(ids.base), Some(ids.base)) {
                let _ = pods.remove(&pod);
                return Err(PodError::io(&dir, e));
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    let rootless = unsafe { libc::geteuid() } != 0;
    let user_ns = match (request.no_jail, ids) {
        (true, _) => None,
        (false, _) if rootless => Some(UserNsChoice::CallerOnly),
        (false, Some(ids)) => Some(choose_user_ns(ids, &request.volumes)),
        (false, None) => Some(UserNsChoice::HostRoot(
            "the pod has no host id range recorded".into(),
        )),
    };
    // Each empty-dir volume is a size-limited tmpfs (F6), mounted before
    // the VMM opens the directory; owned by the pod's range when its VMM
    // runs in it (else the guest would see that range's root as the owner).
    let owner = match &user_ns {
        Some(UserNsChoice::Mapped(ids)) => Some(*ids),
        _ => None,
    };
    if let Err(e) = super::volumes::mount_all(&pod, &request.volumes, owner) {
        let _ = pods.remove(&pod);
        return Err(e);
    }
    let mut config = config_of(&pod, request, &images);
    config.user_ns = user_ns;
    Ok(Made {
        pod,
        config,
        images,
    })
}

impl Made {
    /// Links the layer blobs and writes the config: everything the guest
    /// and the other commands need from the pod directory beyond the
    /// directories [`create`] made.
    pub fn populate(&self, store: &Store) -> Result<(), PodError> {
        let pod = &self.pod;
        for (image, _) in &self.images {
            store.link_layers(image, &pod.blobs_dir())?;
        }
        pod.write_config(&self.config)
    }
}

/// Whether the pod's VMM can run in a user namespace mapped to `ids`: it can if one can be
/// made here and every host volume can be id-mapped through it (the VMM does the same
/// later); otherwise it runs as host root in the rest of its jail, and the choice says why.
fn choose_user_ns(ids: IdRange, volumes: &[Volume]) -> UserNsChoice {
    let ns = match userns::create(ids) {
        Ok(ns) => ns,
        Err(e) => return UserNsChoice::HostRoot(crate::report::error_line(&e)),
    };
    for host in volumes.iter().filter_map(|v| v.host.as_deref()) {
        let checked =
            ShareRoot::open(host).and_then(|root| userns::can_id_map(root.as_fd(), ns.as_fd()));
        if let Err(e) = checked {
            return UserNsChoice::HostRoot(format!(
                "volume {} is on {}, which this kernel cannot id-map ({e})",
                host.display(),
                userns::fs_name(host)
            ));
        }
    }
    UserNsChoice::Mapped(ids)
}

fn config_of(pod: &PodDir, request: PodRequest, images: &[(Image, String)]) -> PodConfig {
    let apps = request
        .apps
        .into_iter()
        .zip(images)
        .map(|(app, (image, decision))| {
            let pin = PinnedImage {
                reference: app.image.clone(),
                name: image.name.clone(),
                manifest_digest: image.manifest_digest.clone(),
                admitted: Some(decision.clone()),
                config: image.config.clone(),
                layers: image.layers.clone(),
            };
            app.with_image(pin)
        })
        .collect();
    PodConfig {
        id: pod.id.clone(),
        name: pod.name.clone(),
        apps,
        volumes: request.volumes,
        memory: request.memory,
        vcpus: request.vcpus,
        exit_policy: request.exit_policy,
        stop_grace_ms: request.stop_grace_ms,
        auto_remove: request.auto_remove,
        no_jail: request.no_jail,
        no_seccomp: request.no_seccomp,
        user_ns: None,
        // Set by the caller once it has planned the cgroup (`cgroup::plan`).
        cgroup_parent: None,
        network: request.network,
        logs: Some(request.logs),
        require_tpm: request.require_tpm,
        created: now_secs(),
    }
}

/// `docker.io/library/busybox:1.36` → `busybox`: the default pod-name prefix.
pub fn base_name(reference: &str) -> String {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let name = last.split(':').next().unwrap_or(last);
    if name.is_empty() || name.starts_with("sha256") {
        "pod".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        assert_eq!(base_name("busybox"), "busybox");
        assert_eq!(base_name("127.0.0.1:5000/a/web:1.2"), "web");
        assert_eq!(base_name("x/y@sha256:abcd"), "y");
        assert_eq!(base_name("sha256:0123"), "pod");
    }
}
