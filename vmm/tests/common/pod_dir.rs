//! Pod directories made with the library, as `husk run` makes them but
//! without a VM (shared by the pod tests through `#[path]`).

use husk_vmm::pod::spec::PodConfig;
use husk_vmm::pod::state::{PodDir, PodState, PodStatus, PodStore};

/// A new pod of one app (image `x`, no layers) in `state`, supervised by
/// this test process: a `Running` one is live while the test runs.
pub fn make(root: &std::path::Path, name: Option<&str>, state: PodState) -> PodDir {
    let pods = PodStore::open(root).unwrap();
    let pod = pods.create(name, "hostile").unwrap();
    let config: PodConfig = serde_json::from_value(serde_json::json!({
        "id": pod.id, "name": pod.name, "memory": 1, "vcpus": 1,
        "stop_grace_ms": 0, "created": 0,
        "apps": [{
            "name": "app", "rootfs_size": 1,
            "image": {"reference": "x", "name": "x", "manifest_digest": "sha256:0",
                      "config": {}, "layers": []},
        }],
    }))
    .unwrap();
    pod.write_config(&config).unwrap();
    let mut status = PodStatus::created();
    status.state = state;
    pod.write_status(&status).unwrap();
    pod
}
