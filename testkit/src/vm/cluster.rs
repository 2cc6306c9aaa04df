//! A libvirt cluster for the VM tests, created through the kprov CLI: the spec from
//! `kprov create cluster`, then the libvirt settings it has no flags for edited into the store.

use std::path::Path;
use std::process::Stdio;

use super::bare_image::{APT_SUITE, GUEST_APT_PORT};
use super::stand_ins::{GUEST_CALLBACK_PORT, GUEST_FILES_PORT, GUEST_REGISTRY_PORT};
use super::virsh::force_cleanup;
use crate::kprov_cmd::{Kprov, KprovBin};

/// On the way out of a VM test (also after a failed assertion): `kprov delete cluster CLUSTER
/// --yes --force-unlock` against `store` (its result ignored), then every domain of the cluster
/// that is still there destroyed and undefined.
pub fn delete_cluster_and_leftovers(bin: KprovBin, store: &str, cluster: &str) {
    let _ = bin
        .command()
        .args(["delete", "cluster", cluster, "--yes", "--force-unlock"])
        .env("KPROV_STATE_STORE", store)
        .stdin(Stdio::null())
        .output();
    force_cleanup(&format!("{cluster}-"));
}

impl Kprov {
    /// A kprov for VM clusters: a new store, and `KPROV_SKIP_ASSET_CHECK=1`, because the
    /// clusters' mirror addresses are the guests' view (`10.0.2.100:PORT`, forwarded to
    /// loopback by qemu), which the host must not contact; the tests check the mirrors
    /// themselves (every pull is in the registry's log).
    pub fn for_vms(bin: KprovBin) -> Kprov {
        let mut k = Kprov::new(bin);
        k.env.push(("KPROV_SKIP_ASSET_CHECK".into(), "1".into()));
        k
    }

    /// Create cluster `name` on libvirt (qemu:///system, TCG, restricted user networking with
    /// forwards to the given loopback ports) with 1 control plane of `cp_size` and `nodes`
    /// workers of `node_size` (`CPU:MEMORY`), booting the image directory `image`.
    #[allow(clippy::too_many_arguments)]
    pub fn create_cluster(
        &self,
        name: &str,
        arch: &str,
        nodes: u32,
        cp_size: &str,
        node_size: &str,
        image: &Path,
        callback: u16,
        files: u16,
        registry: u16,
    ) {
        let n = nodes.to_string();
        self.ok(&[
            "create",
            "cluster",
            name,
            "--provider",
            "libvirt",
            "--arch",
            arch,
            "--control-plane-count",
            "1",
            "--node-count",
            &n,
            "--control-plane-size",
            cp_size,
            "--node-size",
            node_size,
            "--registry-mirror",
            &format!("10.0.2.100:{GUEST_REGISTRY_PORT}"),
            "--file-repository",
            &format!("http://10.0.2.100:{GUEST_FILES_PORT}"),
        ]);
        // libvirt settings `create cluster` has no flags for: edit the stored spec
        let path = self.state.path().join(name).join("config.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let spec = doc.get_mut("spec").expect("spec");
        let lv: serde_yaml::Value = serde_yaml::from_str(&format!(
            "uri: qemu:///system\ndomainType: qemu\nnetwork:\n  user:\n    forwards: {{{GUEST_CALLBACK_PORT}: {callback}, {GUEST_FILES_PORT}: {files}, {GUEST_REGISTRY_PORT}: {registry}}}\nimages:\n  {arch}: {}\n",
            image.display()
        ))
        .unwrap();
        spec["provider"]["libvirt"] = lv;
        spec["assets"]["insecure"] = serde_yaml::Value::Bool(true);
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }

    /// Point cluster `name`'s nodes at an internal APT repository (`spec.assets.
    /// packageRepository`, suite [`APT_SUITE`], component `main`, unsigned) that the guests
    /// reach at `10.0.2.100:GUEST_APT_PORT`, forwarded to `port` on the host's loopback.
    pub fn use_apt_repository(&self, name: &str, port: u16) {
        let path = self.state.path().join(name).join("config.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let spec = doc.get_mut("spec").expect("spec");
        spec["provider"]["libvirt"]["network"]["user"]["forwards"]
            .as_mapping_mut()
            .expect("forwards written by create_cluster")
            .insert(GUEST_APT_PORT.into(), port.into());
        spec["assets"]["packageRepository"] = serde_yaml::from_str(&format!(
            "apt: {{url: 'http://10.0.2.100:{GUEST_APT_PORT}', suite: {APT_SUITE}, components: [main]}}"
        ))
        .unwrap();
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }
}
