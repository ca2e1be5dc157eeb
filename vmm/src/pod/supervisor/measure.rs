//! The supervisor's measurement of a pod's launch, just before the VMM's
//! fork ([`crate::measure`]).

use super::{phase, PodConfig, PodDir, PodError};

/// Measures what the pod's VM will run into the TPM and the log
/// ([`crate::measure`]): its config as `config.json` holds it, the kernel
/// and initramfs through the descriptors the VMM gets, the final kernel
/// command line, each app's image digest with the decision that admitted it.
pub(super) fn measure_launch(
    pod: &PodDir,
    config: &PodConfig,
    vm: &crate::vm_config::PreparedVm,
) -> Result<(), PodError> {
    use crate::measure::{self, Event, Launch, Outcome};
    let root = pod
        .path
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| PodError::Usage(format!("{}: not in a store", pod.path.display())))?;
    let settings = measure::Settings::load(root)?;
    let config_path = pod.config_path();
    let mut events = vec![Event {
        kind: "pod-config",
        app: None,
        data: config_path.display().to_string(),
        digest: measure::sha256(&crate::pod::state::config_json(config)),
    }];
    events.push(Event::file(
        &settings,
        "kernel",
        &vm.kernel.file,
        &vm.config.kernel,
    )?);
    if let (Some((file, _)), Some(path)) = (&vm.initrd, &vm.config.initrd) {
        events.push(Event::file(&settings, "initramfs", file, path)?);
    }
    let cmdline = vm
        .guest_cmdline()
        .map_err(|e| PodError::Vmm(e.to_string()))?;
    events.push(Event::text("cmdline", None, cmdline));
    for app in &config.apps {
        let decision = app.image.admitted.as_deref().unwrap_or("not recorded");
        events.push(Event::text(
            "image",
            Some(app.name.clone()),
            format!(
                "{}@{} {decision}",
                app.image.name, app.image.manifest_digest
            ),
        ));
    }
    let launch = Launch {
        pod: &pod.id,
        pod_name: &pod.name,
        events,
        require_tpm: config.require_tpm,
    };
    match measure::measure(&settings, launch)? {
        Outcome::Extended { .. } => {}
        Outcome::Logged { why } => settings.warn_no_tpm(&pod.name, &why),
    }
    phase(pod, "launch measured");
    Ok(())
}
